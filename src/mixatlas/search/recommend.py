"""The one place that builds an optimizer to recommend (or to read its posterior).

The study's method (its registered optimizer, with the study's options) recommends from the study's
history, for the study's own target or for another one scored on the finished trials' metrics. Storage
(`study.py`) only stores; search, recipe, report, demo and the CLI all come here. Benchmarks that replay
a search on plain `History` objects (no study) recommend through `recommend_history` and
`recommend_history_by_rule`; the report draws posterior slices through `posterior_for`, and recipes and
the report read probabilities (P(beats a reference), P(guard holds)) through `probability_better` and
`assess_guards`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.search.base import History, Recommendation
from mixatlas.search.methods import is_multifidelity, make_mf_optimizer, make_optimizer, optimizer_class
from mixatlas.search.study import Study, Trial, TrialState
from mixatlas.space import Mixture

if TYPE_CHECKING:
    from mixatlas.search.guardrails import GuardAssessment
    from mixatlas.search.multifidelity import FidelityHistory

Posterior = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(n, d) parameters -> (mean (n,), sd (n,)) of the surrogate's utility (larger is better)."""


@dataclass(frozen=True)
class StudyRecommendation:
    """A study method's recommendation for `target`: the optimizer's answer (params (d,), mean / sd in
    utility units, how it was chosen), its k x T mixture, and the finished trial with those params."""

    target: Target
    recommendation: Recommendation
    mixture: Mixture
    trial: Trial | None

    @property
    def predicted(self) -> tuple[float, float | None] | None:
        """(mean, sd) of the surrogate's prediction in target units, or None for methods without one."""
        rec = self.recommendation
        return None if rec.mean is None else (float(self.target.from_utility(rec.mean)), rec.sd)

    @property
    def observed(self) -> float | None:
        """The target value the matching finished trial measured, or None when no trial ran these params."""
        if self.trial is None or not self.trial.metrics:
            return None
        return self.target.value(self.trial.metrics)

    @property
    def chosen(self) -> str:
        """How the mixture was chosen: "trial N" for an observed best, else the optimizer's source."""
        if self.trial is not None and self.recommendation.source == "observed":
            return f"trial {self.trial.id}"
        return self.recommendation.source


def recommend(study: Study, target: Target | None = None) -> StudyRecommendation:
    """The study method's recommendation from its finished trials, for `target` (default: the study's);
    in a multi-fidelity study, for its target fidelity, from the trials of every fidelity.

    Raises MixAtlasError when no trial has finished yet, or when a trial lacks a metric of `target`.
    """
    if study.count(TrialState.DONE) == 0:
        raise MixAtlasError(
            f"{study.path}: no finished trials yet; run `mixatlas search --study {study.path}`"
        )
    chosen_target = study.target if target is None else target
    fidelities = study.fidelities
    done = study.trials(TrialState.DONE)
    if fidelities is None:
        history = study.history(target)
    else:
        # multi-fidelity: the method recommends for the target fidelity from every fidelity's trials;
        # only a trial run at the target fidelity observed it (a cheap fidelity measures another quantity)
        history = study.fidelity_history(target)
        done = [t for t in done if t.fidelity == fidelities.target]
    recommendation = recommend_history(study.method, study.method_options, history)
    match = next(
        (t for t in done if np.allclose(t.params, recommendation.params, rtol=0, atol=1e-12)),
        None,
    )
    mixture = study.space.to_mixture(recommendation.params)
    return StudyRecommendation(chosen_target, recommendation, mixture, match)


def recommend_history(
    method: str, options: dict | None, history: History | FidelityHistory
) -> Recommendation:
    """The registered method's recommendation (built with `options`) from a plain history, for
    benchmarks that replay a search without a study and for `recommend`. A `FidelityHistory` takes a
    multi-fidelity method (`methods.MF_METHODS`)."""
    if isinstance(history, History):
        return make_optimizer(method, **(options or {})).recommend(history)
    return make_mf_optimizer(method, **(options or {})).recommend(history)


def recommend_history_by_rule(
    method: str, options: dict | None, history: History
) -> dict[str, Recommendation]:
    """{rule: recommendation} for every recommendation rule of a method that has several (gp-ucb's
    `RULES`: "lcb", "mean", "observed"), all from one fitted surrogate; {} for the other methods."""
    optimizer = make_optimizer(method, **(options or {}))
    recommend_by = getattr(optimizer, "recommend_by", None)
    if recommend_by is None:
        return {}
    from mixatlas.search.gp_ucb import RULES

    return {rule: recommend_by(history, rule) for rule in RULES}


def posterior_for(method: str, options: dict | None, history: History) -> Posterior | None:
    """The posterior of the method's surrogate fitted on `history` (a function of (n, d) params), or None
    when the registered method's class has no `posterior` (today gp-ucb and gp-guarded have one) or is
    multi-fidelity (its posterior is over (mixture, fidelity) pairs, not a `History`)."""
    if is_multifidelity(method) or not callable(getattr(optimizer_class(method), "posterior", None)):
        return None
    optimizer = make_optimizer(method, **(options or {}))

    def posterior(params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return optimizer.posterior(history, params_nd)

    return posterior


def probability_better(
    method: str, options: dict | None, history: History, params_nd: np.ndarray, reference_d: np.ndarray
) -> np.ndarray:
    """(n,) posterior P(the utility at each of the (n, d) mixtures beats the (d,) reference), from the
    joint posterior of the method's surrogate fitted on `history`; methods without a surrogate (regmix,
    random, ...) are judged by a default GP-UCB surrogate on the same trials."""
    from mixatlas.search.gp_ucb import GPUCB

    if is_multifidelity(method) or not callable(getattr(optimizer_class(method), "probability_better", None)):
        model = GPUCB()
    else:
        model = make_optimizer(method, **(options or {}))
    return model.probability_better(history, np.atleast_2d(params_nd), np.asarray(reference_d, float))


def assess_guards(
    method: str, options: dict | None, history: History, params_nd: np.ndarray
) -> GuardAssessment | None:
    """A guarded method's posterior view of (n, d) mixtures against the natural mixture (target gain,
    each guard's change and P(holds)); None for a method without guards (or a multi-fidelity one)."""
    if is_multifidelity(method) or not callable(getattr(optimizer_class(method), "assess", None)):
        return None
    points = np.atleast_2d(np.asarray(params_nd, float))
    return make_optimizer(method, **(options or {})).assess(history, points)
