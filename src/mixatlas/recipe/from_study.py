"""Building a recipe from a study: its method's recommendation, provenance, constraints, the scores of
the baseline studies of the same family (same atlas, other methods), the posterior probability that the
recommendation beats the natural mixture and the best baseline, and a guarded study's guard probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.recipe.recipe import BaselineScore, Observation, Prediction, Recipe, now_iso
from mixatlas.search.recommend import assess_guards, probability_better


def resolve_study_path(path: Path) -> Path:
    """A study is its SQLite file; a folder stands for `FOLDER/study.db`."""
    path = Path(path)
    return path / "study.db" if path.is_dir() else path


def study_family(study_path: Path) -> list[Path]:
    """Candidate sibling studies of `study_path`: `*.db` next to it and `*/study.db` one folder up.

    A study stored as `ROOT/NAME/study.db` (the layout `mixatlas demo` and `mixatlas search` write) has
    its family in `ROOT/*/study.db`; one stored as `ROOT/NAME.db` in `ROOT/*.db`. Both patterns are read in
    both cases so mixed layouts work.
    """
    study_path = resolve_study_path(study_path).resolve()
    root = study_path.parent.parent if study_path.name == "study.db" else study_path.parent
    found = sorted({*root.glob("*/study.db"), *root.glob("*.db")})
    return [p for p in found if p.resolve() != study_path]


def atlas_fingerprints(study: Any) -> tuple[str | None, str | None]:
    """(fingerprint, centroids_fingerprint) of the atlas a study searched over.

    Read from the study's meta (`atlas_fingerprint`, `centroids_fingerprint`), else by loading the atlas
    folder named in its meta or objective spec (`atlas` / `atlas_dir`); (None, None) if neither is there.
    """
    meta, spec = study.meta, study.objective_spec
    if meta.get("atlas_fingerprint"):
        return meta["atlas_fingerprint"], meta.get("centroids_fingerprint")
    atlas_dir = meta.get("atlas") or meta.get("atlas_dir") or spec.get("atlas_dir") or spec.get("atlas")
    if atlas_dir and Path(atlas_dir).is_dir():
        from mixatlas.atlas import Atlas

        atlas = Atlas.load(Path(atlas_dir))
        return atlas.fingerprint, atlas.centroids_fingerprint
    return None, None


def _space_constraints(space: Any) -> dict[str, Any]:
    """The constraints a recipe records: mode, within-split, epoch cap, non-trivial bounds, frozen cells."""
    out: dict[str, Any] = dict(space.settings())
    if space.max_epochs is not None:
        out["max_epochs"] = space.max_epochs
        out["planned_samples"] = space.planned_samples
    cells = [(c, t) for c in space.concepts for t in space.tasks]
    lower, upper = space.user_lower_kt.ravel(), space.user_upper_kt.ravel()
    bounds = {f"{c}/{t}": [float(lo), float(up)] for (c, t), lo, up in zip(cells, lower, upper, strict=True)
              if lo > 0 or up < 1}
    if bounds:
        out["bounds"] = bounds
    if space.frozen:
        out["frozen"] = {f"{space.concepts[c]}/{space.tasks[t]}": w for (c, t), w in space.frozen.items()}
    return out


def _best_done(study: Any, target: Target) -> tuple[float, int, int] | None:
    """(best value, its trial id, number of finished trials) under `target`, or None without any."""
    from mixatlas.search.study import TrialState

    scored = [(target.value(t.metrics), t.id) for t in study.trials(TrialState.DONE) if t.metrics]
    if not scored:
        return None
    value, trial_id = target.best(scored, key=lambda pair: pair[0])
    return value, trial_id, len(scored)


def family_baselines(study: Any, target: Target, candidates: list[Path],
                     explicit: bool = False) -> list[BaselineScore]:
    """Scores of the studies in `candidates` that count as baselines of `study`.

    A family candidate counts when it searched the same cells (same concepts, tasks and counts, i.e. the
    same atlas) with another method and its finished trials report every metric of `target`. Explicit
    candidates (`--baseline`) must search the same cells (else MixAtlasError) and count whatever their
    method. A baseline's score is its best finished trial's target value at its own budget.
    """
    from mixatlas.search.study import Study

    own = study.space
    scores = []
    for path in candidates:
        try:
            other = Study.open(resolve_study_path(path), read_only=True)  # a baseline is only read
        except MixAtlasError:
            if explicit:
                raise
            continue  # a family candidate that is not a readable study (any other *.db) is not a baseline
        try:
            space = other.space
            same_atlas = (space.concepts == own.concepts and space.tasks == own.tasks
                          and np.array_equal(space.counts_kt, own.counts_kt))
            if explicit and not same_atlas:
                raise MixAtlasError(f"--baseline {path}: searched another atlas's cells than {study.path}; "
                                    "compare studies on the same atlas")
            if not explicit and (not same_atlas or other.method == study.method):
                continue
            try:
                best = _best_done(other, target)
            except MixAtlasError:
                if explicit:
                    raise
                continue  # a family member whose trials do not report the target's metrics
            if best is not None:
                scores.append(BaselineScore(str(path), other.method, space.mode, best[0], best[1], best[2]))
        finally:
            other.close()
    return scores


def study_name(path: Path | str) -> str:
    """A study's short name: its folder for `NAME/study.db`, else the file's stem."""
    path = Path(path)
    return path.parent.name if path.name == "study.db" else path.stem


def guard_probabilities(study: Any, history: Any, params_d: np.ndarray) -> dict[str, float]:
    """A guarded study's guardrails -> posterior P(guard holds) at `params_d` (d,) vs the natural mixture
    ({} for a study without guards)."""
    assessed = assess_guards(study.method, study.method_options, history, np.asarray(params_d, float)[None])
    if assessed is None:
        return {}
    return {spec: float(p[0]) for spec, p in assessed.guard_probability.items()}


def beat_probabilities(study: Any, history: Any, params_d: np.ndarray, target: Target,
                       baselines: list[BaselineScore] | tuple[BaselineScore, ...] = ()) -> dict[str, float]:
    """Posterior P(the mixture `params_d` has a better target than a reference) for the natural mixture
    ("natural") and the best baseline's best trial ("METHOD (STUDY)"), from the joint posterior of the
    study method's surrogate (a default GP-UCB surrogate on the study's trials for methods without one).

    {} with fewer than 3 finished trials; a baseline mixture the study's space cannot represent (another
    search mode) is left out.
    """
    from mixatlas.search.study import Study

    if len(history.done_utility) < 3 or getattr(study, "fidelities", None) is not None:
        return {}  # too few trials; a multi-fidelity study's posterior is over (mixture, fidelity)
    references = {"natural": study.space.natural_params()}
    if baselines:
        best = target.best(baselines, key=lambda b: b.value)
        other = Study.open(Path(best.study), read_only=True)
        try:
            references[f"{best.method} ({study_name(best.study)})"] = study.space.params_of(
                other.trial(best.trial_id).mixture)
        except (MixAtlasError, KeyError):
            pass  # not representable in this study's space, or the trial is gone
        finally:
            other.close()
    params = np.asarray(params_d, float)[None]
    return {name: float(probability_better(study.method, study.method_options, history, params, reference)[0])
            for name, reference in references.items()}


def recommendation_odds(study: Any, params_d: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """(P(beats ...), guard probabilities) of the study's own-target recommendation `params_d`, against
    its family's baselines (`study show` and `search` print them; a recipe stores them)."""
    history = study.history()
    baselines = family_baselines(study, study.target, study_family(study.path))
    return (beat_probabilities(study, history, params_d, study.target, baselines),
            guard_probabilities(study, history, params_d))


def recipe_from_study(study_path: Path, target: str | None = None,
                      baselines: list[Path] | None = None) -> Recipe:
    """The recipe of a study's recommendation.

    Args:
        study_path: the study file (or its folder).
        target: another target spec to recommend for (e.g. one benchmark's metric), same direction as the
            study's; the method's recommendation is recomputed from the finished trials' metrics.
        baselines: baseline studies to score; None = the study's family (see :func:`study_family`).
    """
    from mixatlas.search.recommend import recommend
    from mixatlas.search.study import Study, TrialState

    path = resolve_study_path(study_path)
    study = Study.open(path)
    try:
        tgt = study.target if target is None else study.target.retarget(target)
        rec = recommend(study, None if target is None else tgt)
        trial = rec.trial
        predicted = rec.predicted
        source = rec.recommendation.source
        prediction = None if predicted is None else Prediction(predicted[0], predicted[1], source)
        observed = rec.observed
        observation = None if observed is None else Observation(trial.id, observed)
        fingerprint, centroids = atlas_fingerprints(study)
        provenance = {
            "study": str(path), "method": study.method, "mode": study.space.mode,
            "chosen": rec.chosen,
            "trial_id": None if trial is None else trial.id,
            "seed": study.seed, "budget": study.budget, "n_finished": study.count(TrialState.DONE),
            "created": now_iso(),
        }
        if baselines is None:
            scores = family_baselines(study, tgt, study_family(path))
        else:
            scores = family_baselines(study, tgt, [resolve_study_path(p) for p in baselines], explicit=True)
        history = study.history(None if target is None else tgt)
        params = rec.recommendation.params
        return Recipe(
            mixture=rec.mixture, atlas_fingerprint=fingerprint, centroids_fingerprint=centroids, target=tgt,
            prediction=prediction, observation=observation, provenance=provenance,
            constraints=_space_constraints(study.space),
            baselines=tuple(scores),
            guards=guard_probabilities(study, history, params),
            p_beats=beat_probabilities(study, history, params, tgt, scores),
        )
    finally:
        study.close()
