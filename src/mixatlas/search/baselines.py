"""Reference methods: random search (Dirichlet on the feasible set) and the uniform / natural mixtures."""

from __future__ import annotations

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.design import history_rng, open_candidates


def best_observed(history: History) -> Recommendation:
    """The finished trial with the largest utility."""
    if len(history.done_utility) == 0:
        raise MixAtlasError("no finished trials yet: run the search before asking for a recommendation")
    best = int(np.argmax(history.done_utility))
    return Recommendation(params=np.asarray(history.done_params[best], float).copy(), source="observed")


class RandomSearch(Optimizer):
    """Flat Dirichlet draws on the feasible set (random unused rows on pools); recommends the best seen."""

    name = "random"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        rng = history_rng(history, self.name)
        space = history.space
        if space.candidates is not None:
            open_rows = open_candidates(space, history)
            picks = rng.choice(open_rows, size=n, replace=n > len(open_rows))
            return [space.candidates[i].copy() for i in picks]
        return list(space.sample(n, rng, alpha=self.alpha))

    def recommend(self, history: History) -> Recommendation:
        return best_observed(history)


class UniformMixture(Optimizer):
    """Single-point reference: equal weight on every parameter (nearest pool row on pools)."""

    name = "uniform"

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        return [self.reference(history) for _ in range(n)]

    def recommend(self, history: History) -> Recommendation:
        return Recommendation(params=self.reference(history), source="reference")

    def reference(self, history: History) -> np.ndarray:
        """The single point this method evaluates, (d,)."""
        return history.space.uniform_params()


class NaturalMixture(UniformMixture):
    """Single-point reference: weights proportional to cell counts (the corpus as it is)."""

    name = "natural"

    def reference(self, history: History) -> np.ndarray:
        return history.space.natural_params()
