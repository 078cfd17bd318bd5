"""Opening a search: the problem a `SearchConfig` describes (space + objective spec), and the study it
creates or resumes (every option given must agree with what the study stored).

The atlas is read once and the objective built once per `open_study`; a bad objective or method fails
before any study file is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Objective, Target
from mixatlas.objectives.registry import (
    CallableSpec,
    CommandSpec,
    LmmsEvalSpec,
    ObjectiveSpec,
    PoolSpec,
    ProxySpec,
    SyntheticSpec,
    spec_dict,
)
from mixatlas.search.config import SearchConfig
from mixatlas.search.study import Study, TrialState
from mixatlas.space import MixtureSpace


@dataclass
class Problem:
    """What a config describes: the space to search, the objective spec, and the problem's own target.

    `atlas` is the loaded Atlas of an atlas problem (None for pool and synthetic problems).
    """

    space: MixtureSpace
    objective_spec: ObjectiveSpec
    default_target: str | None = None
    default_minimize: bool = False
    atlas: Any = None

    @property
    def spec_dict(self) -> dict[str, Any]:
        """The objective spec as the study stores it."""
        return spec_dict(self.objective_spec)


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
    spec = SyntheticSpec(space_mode=config.synthetic, seed=config.seed, noise=config.noise)
    return Problem(space, spec, default_target=objective.metric, default_minimize=objective.minimize)


def _pool_problem(config: SearchConfig) -> Problem:
    from mixatlas.objectives.pool import PoolProblem

    path = Path(config.pool).resolve()
    problem = PoolProblem.from_csv(path, weight_cols=config.weight_cols, target=config.target)
    spec = PoolSpec(path=str(path), weight_cols=config.weight_cols, target=config.target)
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
        space,
        _atlas_objective_spec(config, atlas_dir),
        default_minimize=config.objective_kind == "proxy",
        atlas=atlas,
    )


def _atlas_objective_spec(config: SearchConfig, atlas_dir: Path) -> ObjectiveSpec:
    kind = config.objective_kind
    if kind == "proxy":
        from mixatlas.objectives.proxy import ProxyConfig

        # The config's content (not its path) is stored, so a later edit of the YAML cannot silently
        # change what a resumed study evaluates.
        proxy_config = ProxyConfig.from_yaml(config.proxy_config)
        return ProxySpec(config=proxy_config.model_dump(mode="json"), atlas=str(atlas_dir))
    if kind == "command":
        return CommandSpec(argv=config.command)
    if kind == "lmms-eval":
        from mixatlas.objectives.lmms_eval import LmmsEvalTemplate

        return LmmsEvalSpec(**LmmsEvalTemplate.from_spec({
            "train": config.command, "tasks": config.lmms_tasks, "model": config.lmms_model,
            "model_args": config.lmms_model_args, "eval_command": config.lmms_eval_command,
        }).spec())
    if kind == "callable":
        return CallableSpec(function=config.function)
    raise MixAtlasError(f"objective {kind!r} does not run on an atlas; use proxy, command or callable")


def open_study(config: SearchConfig) -> tuple[Study, Objective]:
    """Create the study `config` describes, or reopen it to resume; returns it with its objective.

    On an existing study, every option the user gave (YAML or flag) must agree with what is stored;
    with no problem source given the stored definition is used as it is.
    """
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.methods import make_mf_optimizer, make_optimizer

    path = Path(config.study)
    atlas_dir = None if config.atlas is None else str(config.atlas)
    if path.exists():
        study = Study.open(path)
        problem = build_problem(config) if config.sources else None
        _check_resume(study, config, problem)
        return study, at_fidelities(build_objective(study.objective_spec, atlas=atlas_dir), study)
    if not config.sources:
        raise MixAtlasError(f"{path}: no study here; give a problem (--atlas, --pool or --synthetic)")
    config.check_fidelities()
    fidelities = config.fidelity_levels
    if fidelities is None:
        make_optimizer(config.method, **config.optimizer_options)  # a bad method name fails before any file
    else:
        make_mf_optimizer(config.method, **config.optimizer_options)
    problem = build_problem(config)
    _check_objective_fidelities(config, problem)
    target_spec = config.target or problem.default_target
    if not target_spec:
        raise MixAtlasError(f"{config.origin}: give the target metric (--target METRIC)")
    minimize = problem.default_minimize if config.minimize is None else config.minimize
    shared = [Study.open(other) for other in config.share_from]
    for other in shared:
        other.check_shareable(problem.space, problem.spec_dict)
    # a bad objective (e.g. a typo in --function) fails before the study file exists
    objective = build_objective(problem.objective_spec, atlas=atlas_dir)
    study = Study.create(
        path,
        space=problem.space,
        objective_spec=problem.spec_dict,
        target=Target.parse(target_spec, minimize=minimize),
        method=config.method,
        budget=config.budget,
        seed=config.seed,
        method_options=config.optimizer_options,  # with the guards of a guarded search
        meta=_study_meta(config, problem),
        fidelities=fidelities,
        budget_cost=config.total_cost,
    )
    for other in shared:
        study.import_trials(other, limit=study.budget - study.count(TrialState.DONE))
        other.close()
    return study, at_fidelities(objective, study)


def at_fidelities(objective: Objective, study: Study) -> Objective:
    """The objective a multi-fidelity study evaluates: the synthetic one becomes its multi-fidelity family
    (`MultiFidelitySynthetic`); command and proxy objectives read `ctx.fidelity` themselves."""
    from mixatlas.objectives.synthetic import MultiFidelitySynthetic, SyntheticProblem

    fidelities = study.fidelities
    if fidelities is None or not isinstance(objective, SyntheticProblem):
        return objective
    costs = dict(zip(fidelities.names, fidelities.costs, strict=True))
    return MultiFidelitySynthetic(objective, costs, fidelities.target)


# objectives that run a trial at a fidelity (they read `TrialContext.fidelity`)
_FIDELITY_OBJECTIVES = ("synthetic", "proxy", "command", "lmms-eval")


def _check_objective_fidelities(config: SearchConfig, problem: Problem) -> None:
    """The objective can run at the fidelities (and a command uses `{fidelity}` exactly when given)."""
    spec = problem.objective_spec
    kind = spec.kind
    argv = {"command": getattr(spec, "argv", None), "lmms-eval": getattr(spec, "train", None)}.get(kind)
    uses_placeholder = argv is not None and any("{fidelity}" in arg for arg in argv)
    fidelities = config.fidelity_levels
    if fidelities is None:
        if uses_placeholder:
            raise MixAtlasError(
                f"{config.origin}: the command uses {{fidelity}} but the search has no fidelities; "
                "give --fidelities NAME=COST,... and --method mf-gp-ucb, or drop {fidelity}"
            )
        return
    if config.share_from:
        raise MixAtlasError(f"{config.origin}: share_from does not work with fidelities; drop --share-from")
    if kind not in _FIDELITY_OBJECTIVES:
        raise MixAtlasError(
            f"{config.origin}: objective {kind!r} cannot run at fidelities (use one of "
            f"{', '.join(_FIDELITY_OBJECTIVES)}; a pool at several fidelities is `bench pool --fidelity-col`)"
        )
    if argv is not None and not uses_placeholder:
        raise MixAtlasError(
            f"{config.origin}: with fidelities the command must take {{fidelity}} (e.g. "
            '--command "python train.py {mixture_json} {trial_dir} {fidelity}")'
        )
    if kind == "proxy":
        from mixatlas.objectives.proxy import ProxyConfig
        from mixatlas.objectives.proxy.fidelity import check_fidelities

        check_fidelities(ProxyConfig.from_dict(spec.config), fidelities.names)


def _study_meta(config: SearchConfig, problem: Problem) -> dict[str, Any]:
    """What a study keeps beside its definition: the config, the trial-seed rule, the atlas identity."""
    meta: dict[str, Any] = {"config": config.model_dump(mode="json"), "trial_seeds": config.trial_seeds}
    if problem.atlas is not None:
        atlas = problem.atlas
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
    if "method_options" in given:
        wanted["method_options"] = config.optimizer_options
    if "guard" in given:
        wanted["guards"] = list(config.guard)
    if "target" in given:
        wanted["target"] = Target.parse(config.target, minimize=bool(config.minimize)).spec
    if problem is not None:
        wanted["space"] = problem.space.to_dict()
        wanted["objective_spec"] = problem.spec_dict
    stored = {**stored, "trial_seeds": study.meta.get("trial_seeds", "per-trial"),
              "guards": study.method_options.get("guards", [])}
    if "trial_seeds" in given:
        wanted["trial_seeds"] = config.trial_seeds
    if given & {"fidelities", "target_fidelity", "budget_cost"}:
        wanted |= _wanted_fidelities(study, config)
    for name, value in wanted.items():
        difference = _first_difference(_plain(value), stored.get(name), name)
        if difference:
            raise MixAtlasError(
                f"{study.path}: {difference} — the study was created with other settings; "
                "drop the option to resume as stored, or use a new --study path"
            )


_RESUME_FIELDS = ("method", "method_options", "budget", "seed", "minimize")


def _wanted_fidelities(study: Study, config: SearchConfig) -> dict[str, Any]:
    """The stored settings the fidelity options given on a resume must match: `fidelities` (names, costs,
    target) and `budget_cost`; an option not given takes the stored value."""
    given = config.model_fields_set
    stored = study.fidelities
    if stored is None:
        option = next(f"--{n.replace('_', '-')}" for n in ("fidelities", "target_fidelity", "budget_cost")
                      if n in given)
        raise MixAtlasError(
            f"{study.path}: {option} given, but the study searches one fidelity; drop it to resume as "
            "stored, or use a new --study path"
        )
    from mixatlas.search.multifidelity import Fidelities

    costs = config.fidelities if "fidelities" in given else stored.spec()
    target = config.target_fidelity if "target_fidelity" in given else stored.target
    wanted: dict[str, Any] = {"fidelities": Fidelities.parse(costs, target, option="--fidelities").to_dict()}
    if "budget_cost" in given:
        wanted["budget_cost"] = float(config.budget_cost)
    return wanted


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
