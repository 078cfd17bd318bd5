"""Objective specs: the plain data a study stores to rebuild its objective, one typed model per kind.

`ObjectiveSpec` is a pydantic union discriminated by `kind`; the search config, the demo and the registry
all build and read specs through it. A study stores `spec_dict(spec)` (plain JSON), so studies written
before these models existed open unchanged. Each kind's module is imported only when its objective is built.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Objective


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandSpec(_Spec):
    """A team's trainer run per trial: `argv` with `{mixture_json}`, `{trial_dir}`, `{trial_id}`, `{seed}`."""

    kind: Literal["command"] = "command"
    argv: list[str] = Field(min_length=1)
    timeout_s: float | None = None
    env: dict[str, str] | None = None

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.command import CommandObjective

        return CommandObjective(self.argv, timeout_s=self.timeout_s, env=self.env)


class LmmsEvalSpec(_Spec):
    """Train with `train` (a command objective), then score with lmms-eval `tasks`."""

    kind: Literal["lmms-eval"] = "lmms-eval"
    train: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    model: str | None = None
    model_args: str | None = None
    eval_command: list[str] | None = None
    batch_size: int | None = None
    timeout_s: float | None = None
    env: dict[str, str] | None = None

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.lmms_eval import LmmsEvalTemplate

        template = LmmsEvalTemplate.from_spec(self.model_dump())
        return template.objective(timeout_s=self.timeout_s, env=self.env)


class CallableSpec(_Spec):
    """A Python function `Mixture -> metrics`, named "package.module:function"."""

    kind: Literal["callable"] = "callable"
    function: str

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.callable import CallableObjective

        return CallableObjective(self.function)


class SyntheticSpec(_Spec):
    """An analytic family member (benchmarks, tests) for a space mode."""

    kind: Literal["synthetic"] = "synthetic"
    space_mode: str
    seed: int = 0
    noise: float | None = None

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.synthetic import make_synthetic

        return make_synthetic(self.space_mode, seed=self.seed, noise=self.noise)[1]


class PoolSpec(_Spec):
    """Look-ups in a CSV of trained mixtures (weight columns starting with `weight_cols`)."""

    kind: Literal["pool"] = "pool"
    path: str
    weight_cols: str
    target: str | None = None

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.pool import PoolProblem

        pool = PoolProblem.from_csv(Path(self.path), weight_cols=self.weight_cols, target=self.target)
        return pool.objective


class ProxySpec(_Spec):
    """The built-in proxy: `config` is a ProxyConfig's content, `atlas` the atlas folder it trains on."""

    kind: Literal["proxy"] = "proxy"
    config: dict[str, Any]
    atlas: str | None = None

    def build(self, atlas: str | Path | None = None) -> Objective:
        from mixatlas.objectives.proxy import ProxyObjective

        atlas_dir = self.atlas or atlas
        if atlas_dir is None:
            raise MixAtlasError("proxy objective: needs an atlas folder (--atlas DIR)")
        return ProxyObjective(self.config, atlas_dir)


ObjectiveSpec = Annotated[
    CommandSpec | LmmsEvalSpec | CallableSpec | SyntheticSpec | PoolSpec | ProxySpec,
    Field(discriminator="kind"),
]
_SPECS: tuple[type[_Spec], ...] = typing.get_args(typing.get_args(ObjectiveSpec)[0])
OBJECTIVE_KINDS: tuple[str, ...] = tuple(spec.model_fields["kind"].default for spec in _SPECS)
_ADAPTER: TypeAdapter = TypeAdapter(ObjectiveSpec)


def parse_objective_spec(data: ObjectiveSpec | dict, origin: str = "objective spec") -> ObjectiveSpec:
    """A stored or written spec (dict) as its typed model; one-line MixAtlasError naming the bad field."""
    if isinstance(data, _Spec):
        return data
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in OBJECTIVE_KINDS:
        raise MixAtlasError(f"objective kind {kind!r} is unknown; choose one of {', '.join(OBJECTIVE_KINDS)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"][1:]) or "spec"
        if error["type"] == "missing":
            raise MixAtlasError(f"{origin}: {kind} objective spec misses {field!r}") from None
        raise MixAtlasError(f"{origin}: {kind} objective spec, {field}: {error['msg']}") from None


def spec_dict(spec: ObjectiveSpec) -> dict[str, Any]:
    """The plain JSON a study stores: the fields that were given (so specs stored before stay equal)."""
    return {"kind": spec.kind} | spec.model_dump(mode="json", exclude_unset=True)


def build_objective(spec: ObjectiveSpec | dict, atlas: str | Path | None = None) -> Objective:
    """The objective a spec describes; `atlas` (folder) is used by proxy specs that name none."""
    return parse_objective_spec(spec).build(atlas)
