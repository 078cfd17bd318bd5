"""Objective specs (plain dicts stored in a study) -> objectives; each kind's module is imported lazily.

Spec shapes (`kind` plus the kind's fields):
  command:   {"argv": ["python", "train.py", "{mixture_json}"], "timeout_s": 3600, "env": {...}}
  lmms-eval: {"train": [...argv...], "tasks": ["chartqa"], "model": "llava_onevision", "model_args": "...",
              "eval_command": ["python", "-m", "lmms_eval"], "batch_size": 1}  (a command objective)
  callable:  {"function": "package.module:function"}
  synthetic: {"space_mode": "joint", "seed": 0, "noise": 0.01}
  pool:      {"path": "runs.csv", "weight_cols": "weight_", "target": "loss"}
  proxy:     {"config": {...ProxyConfig...}, "atlas": "runs/atlas"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Objective

OBJECTIVE_KINDS = ("command", "lmms-eval", "callable", "synthetic", "pool", "proxy")


def build_objective(spec: dict, atlas: Any = None) -> Objective:
    """The objective described by `spec`; `atlas` (folder) is used by `proxy` specs that name none."""
    kind = spec.get("kind")
    if kind == "command":
        from mixatlas.objectives.command import CommandObjective

        return CommandObjective(_require(spec, "argv"), timeout_s=spec.get("timeout_s"), env=spec.get("env"))
    if kind == "lmms-eval":
        from mixatlas.objectives.lmms_eval import LmmsEvalTemplate

        template = LmmsEvalTemplate.from_spec(spec)
        return template.objective(timeout_s=spec.get("timeout_s"), env=spec.get("env"))
    if kind == "callable":
        from mixatlas.objectives.callable import CallableObjective

        return CallableObjective(str(_require(spec, "function")))
    if kind == "synthetic":
        from mixatlas.objectives.synthetic import make_synthetic

        _, objective = make_synthetic(
            _require(spec, "space_mode"), seed=int(spec.get("seed", 0)), noise=spec.get("noise")
        )
        return objective
    if kind == "pool":
        from mixatlas.objectives.pool import PoolProblem

        problem = PoolProblem.from_csv(
            Path(_require(spec, "path")), weight_cols=_require(spec, "weight_cols"), target=spec.get("target")
        )
        return problem.objective
    if kind == "proxy":
        from mixatlas.objectives.proxy import ProxyObjective

        atlas_dir = spec.get("atlas") or atlas
        if atlas_dir is None:
            raise MixAtlasError("proxy objective: needs an atlas folder (--atlas DIR)")
        return ProxyObjective(_require(spec, "config"), atlas_dir)
    raise MixAtlasError(f"objective kind {kind!r} is unknown; choose one of {', '.join(OBJECTIVE_KINDS)}")


def _require(spec: dict, key: str) -> Any:
    if spec.get(key) is None:
        raise MixAtlasError(f"{spec.get('kind')} objective spec misses {key!r}")
    return spec[key]
