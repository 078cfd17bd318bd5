"""The optimizer interface: a method only proposes (`ask`) and recommends; it never runs training.

Optimizers receive a :class:`History`, a plain-array snapshot of a study (see docs/decisions.md), so that
they are pure functions of the data and benchmarks can drive them without storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from mixatlas.space import MixtureSpace


@dataclass(frozen=True)
class History:
    """What an optimizer may know about a study.

    Attributes:
        space: the mixture space (its dimension d, constraints, and finite `candidates` for pool problems).
        done_params: (m, d) parameters of finished trials.
        done_utility: (m,) target utility of finished trials, oriented so that larger is better.
        pending_params: (p, d) parameters of trials proposed but not finished (running or pending).
        budget: total number of objective evaluations the study may spend (initial design included).
        seed: the study's seed; optimizers derive their RNG from (seed, number of trials so far).
        done_metrics: every metric of each finished trial (same order as `done_params`), for methods that
            model more than the target (gp-guarded's guard metrics); empty when the caller has none.
    """

    space: MixtureSpace
    done_params: np.ndarray
    done_utility: np.ndarray
    pending_params: np.ndarray
    budget: int
    seed: int
    done_metrics: tuple[dict[str, float], ...] = ()

    @property
    def n_started(self) -> int:
        return len(self.done_params) + len(self.pending_params)


@dataclass(frozen=True)
class Recommendation:
    """The method's final answer: parameters, the mixture they map to, and the predicted utility.

    `mean`/`sd` are the surrogate's prediction of the utility (None for methods without a surrogate);
    `trial_id`-free: the loop matches params to a finished trial if one exists.
    """

    params: np.ndarray
    mean: float | None = None
    sd: float | None = None
    source: str = "observed"  # "observed" (a finished trial), "posterior-mean maximizer", "regression"


class Optimizer(ABC):
    """A search method. Subclasses are registered by name in `mixatlas.search.methods.METHODS`."""

    name: str = ""

    @abstractmethod
    def ask(self, history: History, n: int) -> list[np.ndarray]:
        """Propose `n` new parameter vectors, each (d,), all feasible in `history.space`."""

    @abstractmethod
    def recommend(self, history: History) -> Recommendation:
        """The best mixture according to this method, given everything finished so far."""
