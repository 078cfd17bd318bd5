"""RegMix (Liu et al. 2024) as published: a Dirichlet design, one LightGBM regression, top-k averaging.

Design: every trial draws Dirichlet(s * prior) with the natural (size) prior and a strength s log-uniform
in [0.1, 5]; cells are capped at 15 x prior where that cap leaves a feasible space. The whole budget goes
to the design (`ask` only ever returns design points). `recommend` fits LightGBM (1000 trees, learning
rate 0.01) on the finished trials, predicts many fresh design draws and returns the mean of the top-k
(projected onto the constraints), or the top predicted row on pool problems.

Pool mode (the pool is itself a RegMix-style design of trained mixtures): the design is uniformly random
unused rows of the pool and the choice the top predicted row, as published for a fixed set of trained
proxies. Deviations: LightGBM's `min_child_samples` / `num_leaves` are scaled down for studies of tens of
trials (LightGBM's defaults make no split below 20 samples); the top-k mean is not used on pools (a mean
of rows is not a trained mixture).
"""

from __future__ import annotations

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.baselines import best_observed
from mixatlas.search.design import dirichlet_rows, feasible, history_rng, open_candidates
from mixatlas.space import MixtureSpace


class RegMix(Optimizer):
    """RegMix: Dirichlet design around the natural prior, LightGBM regression, mean of the top-k.

    Args:
        n_candidates: design draws scored by the regression at recommendation time.
        top_k: predicted-best draws averaged into the recommendation.
        strength_range: (low, high) of the log-uniform Dirichlet strength s.
        prior_cap: cells are capped at prior_cap x prior weight during the design (where feasible).
        n_estimators, learning_rate: LightGBM settings of the paper.
    """

    name = "regmix"

    def __init__(
        self,
        n_candidates: int = 100_000,
        top_k: int = 128,
        strength_range: tuple[float, float] = (0.1, 5.0),
        prior_cap: float = 15.0,
        n_estimators: int = 1000,
        learning_rate: float = 0.01,
    ) -> None:
        self.n_candidates = n_candidates
        self.top_k = top_k
        self.strength_range = strength_range
        self.prior_cap = prior_cap
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        rng = history_rng(history, self.name)
        space = history.space
        if space.candidates is not None:
            open_rows = open_candidates(space, history)
            picks = rng.choice(open_rows, size=n, replace=n > len(open_rows))
            return [space.candidates[i].copy() for i in picks]
        return list(self.design(space, n, rng))

    def recommend(self, history: History) -> Recommendation:
        if len(history.done_utility) < 5:
            return best_observed(history)
        space = history.space
        model = self._fit(history)
        rng = np.random.default_rng([history.seed, len(history.done_utility), 7])
        if space.candidates is not None:
            predicted = model.predict(space.candidates)
            best = int(np.argmax(predicted))
            return Recommendation(
                space.candidates[best].copy(), mean=float(predicted[best]), source="regression"
            )
        draws = self.design(space, self.n_candidates, rng)
        predicted = model.predict(draws)
        top = draws[np.argsort(-predicted)[: self.top_k]].mean(axis=0)
        params = feasible(space, top[None])[0]
        return Recommendation(params, mean=float(model.predict(params[None])[0]), source="regression")

    def design(self, space: MixtureSpace, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, d) feasible design draws: Dirichlet(s * prior), capped at `prior_cap` x prior."""
        return feasible(self._capped(space), self._raw_draws(space, n, rng))

    def _raw_draws(self, space: MixtureSpace, n: int, rng: np.random.Generator) -> np.ndarray:
        low, high = self.strength_range
        strength = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        prior = space.natural_params()
        return dirichlet_rows(strength[:, None] * prior[None], space, rng)

    def _capped(self, space: MixtureSpace) -> MixtureSpace:
        """The space with cells capped at `prior_cap` x their natural weight, if that is feasible."""
        if space.candidates is not None:
            return space
        natural = space.cell_weights(space.natural_params())[0]
        data = space.to_dict()
        data["upper"] = np.minimum(space.user_upper_kt, self.prior_cap * natural).tolist()
        try:
            return MixtureSpace.from_dict(data)
        except MixAtlasError:
            return space

    def _fit(self, history: History) -> object:
        import lightgbm

        n_done = len(history.done_utility)
        model = lightgbm.LGBMRegressor(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            # Small studies (tens of trials): let leaves hold few samples, or no split is ever made.
            min_child_samples=max(2, min(20, n_done // 10)),
            num_leaves=min(31, max(4, n_done // 2)),
            n_jobs=1,
            verbose=-1,
            seed=history.seed,
        )
        model.fit(np.atleast_2d(history.done_params), np.asarray(history.done_utility, dtype=np.float64))
        return model
