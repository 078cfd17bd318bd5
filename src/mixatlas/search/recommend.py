"""The one place that turns a study into a recommendation.

The study's method (its registered optimizer, with the study's options) recommends from the study's
history, for the study's own target or for another one scored on the finished trials' metrics. Storage
(`study.py`) only stores; search, recipe, report, demo and the CLI all come here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.search.base import Recommendation
from mixatlas.search.methods import make_mf_optimizer, make_optimizer
from mixatlas.search.study import Study, Trial, TrialState
from mixatlas.space import Mixture


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
        recommendation = make_optimizer(study.method, **study.method_options).recommend(history)
    else:
        # multi-fidelity: the method recommends for the target fidelity from every fidelity's trials;
        # only a trial run at the target fidelity observed it (a cheap fidelity measures another quantity)
        history = study.fidelity_history(target)
        recommendation = make_mf_optimizer(study.method, **study.method_options).recommend(history)
        done = [t for t in done if t.fidelity == fidelities.target]
    match = next(
        (t for t in done if np.allclose(t.params, recommendation.params, rtol=0, atol=1e-12)),
        None,
    )
    mixture = study.space.to_mixture(recommendation.params)
    return StudyRecommendation(chosen_target, recommendation, mixture, match)
