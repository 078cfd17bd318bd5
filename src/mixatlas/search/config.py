"""`SearchConfig`: everything `mixatlas search` needs, from a YAML file with command-line flags on top."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Objective, Target
from mixatlas.space import MixtureSpace
from mixatlas.yaml_io import safe_load

if TYPE_CHECKING:
    from mixatlas.search.study import Study

# Fields holding paths; relative ones in a YAML file are taken relative to that file's folder.
_PATH_FIELDS = ("atlas", "pool", "proxy_config", "study", "runs_dir")


class SearchConfig(BaseModel):
    """One search, as written in `search.yaml` (keys = the long flag names with `_` for `-`).

    Exactly one problem source: `atlas` (a concept x task atlas folder), `pool` (a CSV of trained
    mixtures, weight columns starting with `weight_cols`) or `synthetic` (an analytic family, by space mode).
    """

    model_config = ConfigDict(extra="forbid")

    # the problem
    atlas: Path | None = None
    pool: Path | None = None
    weight_cols: str | None = None
    synthetic: Literal["task", "concept", "factored", "joint"] | None = None
    noise: float | None = Field(default=None, ge=0)
    space: Literal["task", "concept", "factored", "joint"] | None = None
    within: Literal["natural", "uniform"] = "natural"
    max_epochs: float | None = Field(default=None, gt=0)
    planned_samples: int | None = Field(default=None, gt=0)
    # the objective and target
    objective: Literal["proxy", "command", "lmms-eval", "pool", "synthetic", "callable"] | None = None
    command: list[str] | None = None
    # lmms-eval template: `command` trains, then lmms-eval runs these tasks (see objectives/lmms_eval.py)
    lmms_tasks: list[str] | None = None
    lmms_model: str | None = None
    lmms_model_args: str | None = None
    lmms_eval_command: list[str] | None = None
    function: str | None = None
    proxy_config: Path | None = None
    target: str | None = None
    minimize: bool | None = None
    # the method and budget
    method: str = "gp-ucb"
    method_options: dict[str, Any] = Field(default_factory=dict)
    budget: int = Field(default=48, gt=0)
    seed: int = 0
    # "per-trial": trial i trains with seed + i; "shared": every trial trains with the study seed (common
    # random numbers: differences between trials come from the mixture alone, not from the proxy's seed noise)
    trial_seeds: Literal["per-trial", "shared"] = "per-trial"
    # finished trials of other studies (same atlas, space and objective, another target) taken over when
    # this study is created: benchmark-targeted studies share the proxy runs already paid for
    share_from: list[Path] = Field(default_factory=list)
    # where and how trials run
    study: Path = Path("study.db")
    runs_dir: Path | None = None
    executor: Literal["local", "ray", "slurm"] = "local"
    parallel: int = Field(default=1, gt=0)
    ray_address: str | None = None
    gpus_per_trial: float = Field(default=0, ge=0)
    cpus_per_trial: float = Field(default=1, gt=0)
    slurm_partition: str | None = None
    slurm_cluster: Literal["slurm", "local"] = "slurm"
    slurm_timeout_min: int | None = Field(default=None, gt=0)
    retries: int = Field(default=1, ge=0)
    # seconds per trial; finite and at most 30 days (larger values overflow alarm/Slurm limits)
    timeout: float | None = Field(default=None, gt=0, le=30 * 24 * 3600, allow_inf_nan=False)
    # experiment tracking of every finished trial (mixatlas.tracking): tool and its URI / folder
    track: Literal["mlflow", "tensorboard", "wandb"] | None = None
    track_uri: str | None = None

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
        return config

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


@dataclass
class Problem:
    """What a config describes: the space to search, the objective spec, and the problem's own target."""

    space: MixtureSpace
    objective_spec: dict[str, Any]
    default_target: str | None = None
    default_minimize: bool = False


def build_problem(config: SearchConfig) -> Problem:
    """The space and objective spec of `config`'s problem source (atlas, pool or synthetic)."""
    config.check_sources()
    if config.synthetic is not None:
        return _synthetic_problem(config)
    if config.pool is not None:
        return _pool_problem(config)
    return _atlas_problem(config)


def _synthetic_problem(config: SearchConfig) -> Problem:
    from mixatlas.objectives.synthetic import make_synthetic

    space, objective = make_synthetic(config.synthetic, seed=config.seed, noise=config.noise)
    spec = {"kind": "synthetic", "space_mode": config.synthetic, "seed": config.seed, "noise": config.noise}
    return Problem(space, spec, default_target=objective.metric, default_minimize=objective.minimize)


def _pool_problem(config: SearchConfig) -> Problem:
    from mixatlas.objectives.pool import PoolProblem

    path = Path(config.pool).resolve()
    problem = PoolProblem.from_csv(path, weight_cols=config.weight_cols, target=config.target)
    spec = {"kind": "pool", "path": str(path), "weight_cols": config.weight_cols, "target": config.target}
    return Problem(problem.space, spec, default_target=config.target)


def _atlas_problem(config: SearchConfig) -> Problem:
    from mixatlas.atlas import Atlas

    atlas_dir = Path(config.atlas).resolve()
    atlas = Atlas.load(atlas_dir)
    space = MixtureSpace.from_atlas(
        atlas,
        config.space or "joint",
        within=config.within,
        planned_samples=config.planned_samples,
        max_epochs=config.max_epochs,
    )
    # The proxy reports losses/NLLs, so its targets are minimized unless told otherwise.
    return Problem(
        space, _atlas_objective_spec(config, atlas_dir), default_minimize=config.objective_kind == "proxy"
    )


def _atlas_objective_spec(config: SearchConfig, atlas_dir: Path) -> dict[str, Any]:
    kind = config.objective_kind
    if kind == "proxy":
        from mixatlas.objectives.proxy import ProxyConfig

        # The config's content (not its path) is stored, so a later edit of the YAML cannot silently
        # change what a resumed study evaluates.
        proxy_config = ProxyConfig.from_yaml(config.proxy_config)
        return {"kind": "proxy", "config": proxy_config.model_dump(mode="json"), "atlas": str(atlas_dir)}
    if kind == "command":
        return {"kind": "command", "argv": config.command}
    if kind == "lmms-eval":
        from mixatlas.objectives.lmms_eval import LmmsEvalTemplate

        return LmmsEvalTemplate.from_spec({
            "train": config.command, "tasks": config.lmms_tasks, "model": config.lmms_model,
            "model_args": config.lmms_model_args, "eval_command": config.lmms_eval_command,
        }).spec()
    if kind == "callable":
        return {"kind": "callable", "function": config.function}
    raise MixAtlasError(f"objective {kind!r} does not run on an atlas; use proxy, command or callable")


def open_study(config: SearchConfig) -> tuple[Study, Objective]:
    """Create the study `config` describes, or reopen it to resume; returns it with its objective.

    On an existing study, every option the user gave (YAML or flag) must agree with what is stored;
    with no problem source given the stored definition is used as it is.
    """
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.study import Study, TrialState

    path = Path(config.study)
    if path.exists():
        study = Study.open(path)
        problem = build_problem(config) if config.sources else None
        _check_resume(study, config, problem)
    else:
        if not config.sources:
            raise MixAtlasError(f"{path}: no study here; give a problem (--atlas, --pool or --synthetic)")
        from mixatlas.search.methods import make_optimizer

        make_optimizer(config.method, **config.method_options)  # a bad method name fails before any file
        problem = build_problem(config)
        target_spec = config.target or problem.default_target
        if not target_spec:
            raise MixAtlasError(f"{config._origin}: give the target metric (--target METRIC)")
        minimize = problem.default_minimize if config.minimize is None else config.minimize
        shared = [Study.open(other) for other in config.share_from]
        for other in shared:
            other.check_shareable(problem.space, problem.objective_spec)
        # a bad objective (e.g. a typo in --function) fails before the study file exists
        build_objective(problem.objective_spec, atlas=None if config.atlas is None else str(config.atlas))
        study = Study.create(
            path,
            space=problem.space,
            objective_spec=problem.objective_spec,
            target=Target.parse(target_spec, minimize=minimize),
            method=config.method,
            budget=config.budget,
            seed=config.seed,
            method_options=config.method_options,
            meta=_study_meta(config),
        )
        for other in shared:
            study.import_trials(other, limit=study.budget - study.count(TrialState.DONE))
            other.close()
    atlas = None if config.atlas is None else str(config.atlas)
    return study, build_objective(study.objective_spec, atlas=atlas)


def _study_meta(config: SearchConfig) -> dict[str, Any]:
    """What a study keeps beside its definition: the config, the trial-seed rule, the atlas identity."""
    meta: dict[str, Any] = {"config": config.model_dump(mode="json"), "trial_seeds": config.trial_seeds}
    if config.atlas is not None:
        from mixatlas.atlas import Atlas

        atlas = Atlas.load(Path(config.atlas))
        meta |= {
            "atlas": str(atlas.dir.resolve()),
            "atlas_fingerprint": atlas.fingerprint,
            "centroids_fingerprint": atlas.centroids_fingerprint,
        }
    return meta


def _check_resume(study: Study, config: SearchConfig, problem: Problem | None) -> None:
    given = config.model_fields_set
    stored = study.settings()
    wanted: dict[str, Any] = {name: getattr(config, name) for name in _RESUME_FIELDS if name in given}
    if "target" in given:
        wanted["target"] = Target.parse(config.target, minimize=bool(config.minimize)).spec
    if problem is not None:
        wanted["space"] = problem.space.to_dict()
        wanted["objective_spec"] = problem.objective_spec
    stored = {**stored, "trial_seeds": study.meta.get("trial_seeds", "per-trial")}
    if "trial_seeds" in given:
        wanted["trial_seeds"] = config.trial_seeds
    for name, value in wanted.items():
        difference = _first_difference(_plain(value), stored[name], name)
        if difference:
            raise MixAtlasError(
                f"{study.path}: {difference} — the study was created with other settings; "
                "drop the option to resume as stored, or use a new --study path"
            )


_RESUME_FIELDS = ("method", "method_options", "budget", "seed", "minimize")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _first_difference(given: Any, stored: Any, where: str) -> str | None:
    """'space.mode is "task" here but "joint" in the study', or None when equal."""
    if isinstance(given, dict) and isinstance(stored, dict):
        for key in sorted(set(given) | set(stored)):
            difference = _first_difference(given.get(key), stored.get(key), f"{where}.{key}")
            if difference:
                return difference
        return None
    if given != stored:
        return f"{where} is {_short(given)} here but {_short(stored)} in the study"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
