"""`SearchConfig`: everything `mixatlas search` needs, from a YAML file with command-line flags on top.

The one place a search option is declared: its type, default, check and help text. The CLI derives its
flags from these fields (`ONE_STRING` fields take one shell-split string; `NO_FLAG` fields are YAML only);
choices come from the method, objective, executor and space-mode registries. Building the problem and
opening or resuming the study is `search/setup.py`.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mixatlas.errors import MixAtlasError
from mixatlas.executors import EXECUTOR_KINDS
from mixatlas.objectives.registry import OBJECTIVE_KINDS
from mixatlas.search.methods import METHODS, MF_METHODS
from mixatlas.space.parametrization import MODES
from mixatlas.yaml_io import safe_load

SpaceMode = Literal[*MODES]
ObjectiveKind = Literal[*OBJECTIVE_KINDS]
ExecutorKind = Literal[*EXECUTOR_KINDS]
ONE_STRING = {"one_string": True}  # a list given as one shell-split / comma-separated string
NO_FLAG = {"flag": None}  # YAML only

# Fields holding paths; relative ones in a YAML file are taken relative to that file's folder.
_PATH_FIELDS = ("atlas", "pool", "proxy_config", "study", "runs_dir")


class SearchConfig(BaseModel):
    """One search, as written in `search.yaml` (keys = the long flag names with `_` for `-`).

    Exactly one problem source: `atlas` (a concept x task atlas folder), `pool` (a CSV of trained
    mixtures, weight columns starting with `weight_cols`) or `synthetic` (an analytic family, by space mode).
    """

    model_config = ConfigDict(extra="forbid")

    # the problem
    atlas: Path | None = Field(None, description="Atlas folder: search its concept x task cells.")
    pool: Path | None = Field(None, description="CSV of trained mixtures (a pool problem).")
    weight_cols: str | None = Field(None, description="Prefix of the pool's weight columns.")
    synthetic: SpaceMode | None = Field(None, description="Synthetic family (a space mode).")
    noise: float | None = Field(None, ge=0, description="Observation noise of the synthetic problem.")
    space: SpaceMode | None = Field(None, description="Atlas search mode (default joint).")
    within: Literal["natural", "uniform"] = Field("natural", description="Split inside the free axis.")
    max_epochs: float | None = Field(None, gt=0, description="Epoch cap: epochs a cell may repeat.")
    planned_samples: int | None = Field(None, gt=0, description="Epoch cap: planned samples N.")
    # the objective and target
    objective: ObjectiveKind | None = Field(None, description="Objective (default: implied by the problem).")
    command: list[str] | None = Field(
        None, description='Argv template, e.g. "python train.py {trial_dir}".', json_schema_extra=ONE_STRING
    )
    # lmms-eval template: `command` trains, then lmms-eval runs these tasks (see objectives/lmms_eval.py)
    lmms_tasks: list[str] | None = Field(
        None, description="lmms-eval objective: tasks run after --command trains (chartqa,ai2d).",
        json_schema_extra=ONE_STRING,
    )
    lmms_model: str | None = Field(None, description="lmms-eval --model (llava_onevision).")
    lmms_model_args: str | None = Field(
        None, description="lmms-eval --model_args (pretrained={trial_dir}/checkpoint)."
    )
    lmms_eval_command: list[str] | None = Field(
        None, description='lmms-eval launcher ("python -m lmms_eval").', json_schema_extra=ONE_STRING
    )
    function: str | None = Field(None, description="Callable objective: package.module:function.")
    proxy_config: Path | None = Field(None, description="proxy.yaml for the proxy objective.")
    target: str | None = Field(None, description='Metric or "0.5*a/nll + 0.5*b/nll".')
    minimize: bool | None = Field(
        None, description="Direction of the target.", json_schema_extra={"flag": "--minimize/--maximize"}
    )
    # the method and budget
    method: str = Field("gp-ucb", description=f"Search method: {'|'.join((*METHODS, *MF_METHODS))}.")
    method_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the method.", json_schema_extra=NO_FLAG
    )
    # guarded search (method gp-guarded, see search/guardrails.py): the target improves while each guard
    # metric stays within DELTA of the natural mixture's prediction
    guard: list[str] = Field(
        default_factory=list,
        description='Guardrail METRIC>=DELTA or METRIC<=DELTA vs the natural mixture, e.g. "ocr/anls>=-0.01" '
        "(repeatable; implies --method gp-guarded).",
    )
    budget: int = Field(48, gt=0, description="Objective evaluations (initial design included).")
    seed: int = Field(0, description="Seed of the design, the method and the trials.")
    # multi-fidelity search (method mf-gp-ucb): trials at named cost levels, a cost budget, one target level
    fidelities: str | None = Field(
        None,
        description='Multi-fidelity: NAME=COST,... e.g. "0.5b=1,3b=6,7b=14" (YAML: a name: cost mapping); '
        "the trainer gets {fidelity}; proxy names: steps0.25 (a fraction of steps), tiny / nano / small "
        "(model size) or SIZE:FRACTION, e.g. tiny:0.25. Needs --method mf-gp-ucb.",
    )
    target_fidelity: str | None = Field(
        None, description="Fidelity to recommend for (default: the costliest)."
    )
    budget_cost: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Multi-fidelity: total cost to spend (default: budget x the target fidelity's cost).",
    )
    # "per-trial": trial i trains with seed + i; "shared": every trial trains with the study seed (common
    # random numbers: differences between trials come from the mixture alone, not from the proxy's seed noise)
    trial_seeds: Literal["per-trial", "shared"] = Field(
        "per-trial", description="per-trial (seed + trial id) or shared (common random numbers)."
    )
    # finished trials of other studies (same atlas, space and objective, another target) taken over when
    # this study is created: benchmark-targeted studies share the proxy runs already paid for
    share_from: list[Path] = Field(
        default_factory=list,
        description="Take over the finished trials of this study (same atlas, space, objective; another "
        "target) when creating the new one. Repeatable.",
    )
    # where and how trials run
    study: Path = Field(Path("study.db"), description="Study file; an existing one is resumed.")
    runs_dir: Path | None = Field(None, description="Trial folders (default: beside the study).")
    executor: ExecutorKind = Field("local", description="Where trials run.")
    parallel: int = Field(1, gt=0, description="Trials in flight.")
    ray_address: str | None = Field(None, description="Existing Ray cluster (else local Ray).")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs each trial gets (local pins them).")
    cpus_per_trial: float = Field(1, gt=0, description="CPUs each trial reserves (Ray, Slurm).")
    slurm_partition: str | None = Field(None, description="Slurm partition.")
    slurm_cluster: Literal["slurm", "local"] = Field("slurm", description="slurm, or local (no cluster).")
    slurm_timeout_min: int | None = Field(
        None, gt=0, description="Slurm job time limit (default: --timeout rounded up + 1, else 60)."
    )
    retries: int = Field(1, ge=0, description="Retries of a failed trial (same mixture).")
    # seconds per trial; finite and at most 30 days (larger values overflow alarm/Slurm limits)
    timeout: float | None = Field(
        None, gt=0, le=30 * 24 * 3600, allow_inf_nan=False, description="Per-trial time limit in seconds."
    )
    # experiment tracking of every finished trial (mixatlas.tracking): tool and its URI / folder
    track: Literal["mlflow", "tensorboard", "wandb"] | None = Field(
        None, description="Log every finished trial to this tracker."
    )
    track_uri: str | None = Field(None, description="Tracker URI or folder.")

    _origin: str = PrivateAttr(default="command-line options")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        """A command given as one string is split like a shell would (but never run through one)."""
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("lmms_eval_command", mode="before")
    @classmethod
    def _split_eval_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("lmms_tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: Any) -> Any:
        """`chartqa,docvqa_val` (a flag) or a YAML list."""
        if isinstance(value, str):
            return [task.strip() for task in value.split(",") if task.strip()]
        return value

    @field_validator("guard", mode="before")
    @classmethod
    def _one_guard(cls, value: Any) -> Any:
        """A single guard written as a YAML string is a list of one."""
        return [value] if isinstance(value, str) else value

    def check_guards(self) -> None:
        """Parse every guard (its one-line error naming --guard); guards imply the method gp-guarded
        (the default when no method is given; another explicit method is an error)."""
        from mixatlas.search.guardrails import Guard

        if not self.guard:
            if self.method == "gp-guarded" and not self.method_options.get("guards"):
                raise MixAtlasError(
                    f"{self._origin}: method 'gp-guarded' needs at least one guardrail: give --guard "
                    "METRIC>=DELTA (or <=)"
                )
            return
        try:
            self.guard = [Guard.parse(spec).spec for spec in self.guard]
        except MixAtlasError as exc:
            raise MixAtlasError(f"{self._origin}: {exc}") from None
        if "method" not in self.model_fields_set:
            self.method = "gp-guarded"
        elif self.method != "gp-guarded":
            raise MixAtlasError(
                f"{self._origin}: --guard needs --method gp-guarded (or no --method); {self.method!r} "
                "ignores guardrails"
            )

    @property
    def optimizer_options(self) -> dict[str, Any]:
        """The method's options as the study stores them: `method_options` plus the guards, if any."""
        options = dict(self.method_options)
        return {**options, "guards": list(self.guard)} if self.guard else options

    @field_validator("fidelities", mode="before")
    @classmethod
    def _fidelity_mapping(cls, value: Any) -> Any:
        """A YAML mapping `{0.5b: 1, 7b: 14}` is the same as the flag's "0.5b=1,7b=14"."""
        if isinstance(value, dict):
            return ",".join(f"{name}={cost}" for name, cost in value.items())
        return value

    @property
    def fidelity_levels(self):  # -> Fidelities | None (search.multifidelity)
        """The parsed `fidelities` with the target (None for a single-fidelity search)."""
        if self.fidelities is None:
            return None
        from mixatlas.search.multifidelity import Fidelities

        return Fidelities.parse(self.fidelities, self.target_fidelity, option="--fidelities")

    @property
    def total_cost(self) -> float | None:
        """The cost budget: `budget_cost`, else budget x the target fidelity's cost (None: one fidelity)."""
        levels = self.fidelity_levels
        if levels is None:
            return None
        if self.budget_cost is not None:
            return float(self.budget_cost)
        return float(self.budget * levels.cost(levels.target))

    def check_fidelities(self) -> None:
        """A multi-fidelity method exactly when fidelities are given; one-line errors naming the fix."""
        origin = self._origin
        if self.method in MF_METHODS and self.fidelities is None:
            raise MixAtlasError(
                f"{origin}: method {self.method!r} needs fidelities (--fidelities NAME=COST,..., e.g. "
                '"0.5b=1,7b=14"); or use a single-fidelity --method'
            )
        if self.fidelities is not None and self.method not in MF_METHODS:
            raise MixAtlasError(
                f"{origin}: fidelities need a multi-fidelity method (--method {' or '.join(MF_METHODS)}); "
                f"{self.method!r} searches one fidelity"
            )
        if self.fidelities is None and (self.target_fidelity is not None or self.budget_cost is not None):
            option = "--target-fidelity" if self.target_fidelity is not None else "--budget-cost"
            raise MixAtlasError(f"{origin}: {option} needs --fidelities NAME=COST,...")
        levels = self.fidelity_levels  # parses: a bad item or target is its one-line error
        if levels is not None and self.total_cost < min(levels.costs):
            raise MixAtlasError(
                f"{origin}: budget_cost {self.total_cost:g} buys no trial (cheapest fidelity costs "
                f"{min(levels.costs):g}); raise --budget-cost"
            )

    @classmethod
    def load(cls, path: Path | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
        """Read `path` (YAML mapping; may be None) and apply `overrides` (flags; None values ignored)."""
        values: dict[str, Any] = {}
        origin = "command-line options"
        if path is not None:
            origin = str(path)
            values = _read_yaml(Path(path))
            for name in _PATH_FIELDS:
                if isinstance(values.get(name), str) and not Path(values[name]).is_absolute():
                    values[name] = str(Path(path).parent / values[name])
            if isinstance(values.get("share_from"), list):
                values["share_from"] = [str(Path(path).parent / p) for p in values["share_from"]]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise MixAtlasError(f"{origin}: {_first_error(exc)}") from None
        config._origin = origin
        config.check_guards()
        return config

    @property
    def origin(self) -> str:
        """Where the values came from (the YAML path, or the command line), for error messages."""
        return self._origin

    @property
    def slurm_job_minutes(self) -> int:
        """The Slurm job limit: as given, else the per-trial timeout rounded up plus a minute, else 60."""
        if self.slurm_timeout_min is not None:
            return self.slurm_timeout_min
        return 60 if self.timeout is None else math.ceil(self.timeout / 60) + 1

    @property
    def sources(self) -> list[str]:
        """The problem sources given (a valid new search has exactly one; a resume may have none)."""
        return [name for name in ("atlas", "pool", "synthetic") if getattr(self, name) is not None]

    def check_sources(self) -> None:
        """Exactly one problem source, and the objective's own inputs present."""
        origin, sources = self._origin, self.sources
        if len(sources) != 1:
            given = ", ".join(sources) or "none"
            raise MixAtlasError(f"{origin}: give exactly one of atlas, pool, synthetic (given: {given})")
        if self.pool is not None and not self.weight_cols:
            raise MixAtlasError(f"{origin}: a pool problem needs weight_cols (the weight columns' prefix)")
        kind = self.objective_kind
        needs = {"command": "command", "callable": "function", "proxy": "proxy_config",
                 "lmms-eval": "command"}
        if kind == "lmms-eval" and not self.lmms_tasks:
            raise MixAtlasError(f"{origin}: objective 'lmms-eval' needs lmms_tasks (--lmms-tasks A,B)")
        if kind in needs and getattr(self, needs[kind]) is None:
            raise MixAtlasError(
                f"{origin}: objective {kind!r} needs {needs[kind]} (--{needs[kind].replace('_', '-')})"
            )
        own_objective = {"pool": self.pool is not None, "synthetic": self.synthetic is not None}
        if any((kind == name) != given for name, given in own_objective.items()):
            raise MixAtlasError(
                f"{origin}: objective {kind!r} does not fit a {sources[0]} problem; pool and synthetic"
                " problems are their own objective, an atlas takes proxy, command or callable"
            )

    @property
    def objective_kind(self) -> str:
        """The objective, explicit or implied by the problem source (pool -> pool, synthetic -> synthetic)."""
        if self.objective is not None:
            return self.objective
        if self.pool is not None:
            return "pool"
        if self.synthetic is not None:
            return "synthetic"
        if self.lmms_tasks is not None:
            return "lmms-eval"
        if self.command is not None:
            return "command"
        if self.function is not None:
            return "callable"
        return "proxy"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = safe_load(path.read_text())
    except OSError as exc:
        raise MixAtlasError(
            f"{path}: cannot read the config ({exc.strerror}); check the --config path"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise MixAtlasError(f"{path}{where}: {problem}; fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MixAtlasError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        known = ", ".join(SearchConfig.model_fields)
        return f"unknown option {field!r}; known options: {known}"
    return f"{field}: {error['msg']} (got {error.get('input')!r})"
