"""The data-mixing law (Ye et al. 2024) as a parametric model, and the baseline that optimizes it.

Law: utility(w) = a + s * exp(c + t . w), with w the (d,) mixture parameters, s = +1 or -1 (the sign of
the effect, chosen by fit), and (a, c, t) fitted by least squares on standardized utilities with a small
ridge penalty on t (exponents of order 10 at most; with fewer trials than parameters the ridge keeps the
fit defined). Ye et al. fit one law per validation domain and sum them; a study has one scalar target,
so one law is fitted to it (documented deviation).

The law serves two roles: the parametric prior mean of the GP surrogate (`mixatlas.search.surrogate`,
GP on the residuals) and the `mixing-law` method: a space-filling design of the whole budget, then the
feasible maximizer of the fitted law (the top predicted row on pool problems).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.baselines import best_observed
from mixatlas.search.design import history_rng, perturb, space_filling

RIDGE = 1e-2  # penalty on the exponents t (standardized utility units)
_EXP_CLIP = 30.0


@dataclass(frozen=True)
class MixingLaw:
    """A fitted law in utility units: utility = y_mean + y_sd * (a + sign * exp(c + params @ t))."""

    a: float
    c: float
    t: np.ndarray
    sign: float
    y_mean: float
    y_sd: float

    def predict(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) predicted utility at (n, d) parameters."""
        z = self.a + self.sign * np.exp(np.clip(self.c + np.atleast_2d(params_nd) @ self.t, None, _EXP_CLIP))
        return self.y_mean + self.y_sd * z


def fit_mixing_law(
    params_nd: np.ndarray, utility_n: np.ndarray, ridge: float = RIDGE, start: MixingLaw | None = None
) -> MixingLaw:
    """Least-squares fit of the law to (n, d) parameters and (n,) utilities (both signs tried, the
    better kept; `start` warm-starts both from a previous fit, e.g. for leave-one-out refits)."""
    from scipy.optimize import least_squares

    x = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
    y = np.asarray(utility_n, dtype=np.float64)
    if start is not None:  # same standardization, so the previous parameters are a valid start
        y_mean, y_sd = start.y_mean, start.y_sd
    else:
        y_mean, y_sd = float(y.mean()), float(y.std()) or 1.0
    z = (y - y_mean) / y_sd
    n, d = x.shape
    root = np.sqrt(ridge)

    def residuals(theta: np.ndarray, sign: float) -> np.ndarray:
        e = np.exp(np.clip(theta[1] + x @ theta[2:], None, _EXP_CLIP))
        return np.concatenate([theta[0] + sign * e - z, root * theta[2:]])

    def jacobian(theta: np.ndarray, sign: float) -> np.ndarray:
        e = np.exp(np.clip(theta[1] + x @ theta[2:], None, _EXP_CLIP))
        top = np.column_stack([np.ones(n), sign * e, sign * e[:, None] * x])
        bottom = np.column_stack([np.zeros((d, 2)), root * np.eye(d)])
        return np.vstack([top, bottom])

    if start is not None:
        starts = [(start.sign, np.concatenate([[start.a, start.c], start.t]))]
    else:
        # Linear start: exp(c + t.w) ~ 1 + t.w near (c, t) = 0, so z ~ (a + s) + s t.w.
        design = np.column_stack([np.ones(n), x])
        beta = np.linalg.solve(design.T @ design + ridge * np.diag([0.0] + [1.0] * d), design.T @ z)
        starts = [(sign, np.concatenate([[beta[0] - sign, 0.0], sign * beta[1:]])) for sign in (1.0, -1.0)]
    best: tuple[float, MixingLaw] | None = None
    for sign, theta0 in starts:
        fit = least_squares(residuals, theta0, jac=jacobian, args=(sign,), method="trf", max_nfev=200)
        law = MixingLaw(float(fit.x[0]), float(fit.x[1]), fit.x[2:].copy(), sign, y_mean, y_sd)
        if best is None or fit.cost < best[0]:
            best = (float(fit.cost), law)
    assert best is not None
    return best[1]


class MixingLawSearch(Optimizer):
    """Data-mixing-law baseline: space-filling design (random maximin rows on pools), then the feasible
    maximizer of the fitted law.

    Args:
        n_candidates: feasible draws (flat and sparse Dirichlet) scored by the law on continuous spaces;
            the best one is polished by shrinking random perturbations.
    """

    name = "mixing-law"

    def __init__(self, n_candidates: int = 20_000) -> None:
        self.n_candidates = n_candidates

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        return space_filling(history, n, history_rng(history, self.name))

    def recommend(self, history: History) -> Recommendation:
        if len(history.done_utility) < 3:
            return best_observed(history)
        space = history.space
        law = fit_mixing_law(history.done_params, history.done_utility)
        if space.candidates is not None:
            predicted = law.predict(space.candidates)
            best = int(np.argmax(predicted))
            return Recommendation(space.candidates[best].copy(), mean=float(predicted[best]), source="law")
        rng = np.random.default_rng([history.seed, len(history.done_utility), 11])
        draws = np.concatenate(
            [space.sample(self.n_candidates // 2, rng, alpha=a) for a in (1.0, 0.2)] + [history.done_params]
        )
        point = draws[int(np.argmax(law.predict(draws)))]
        for scale in (0.3, 0.1, 0.03, 0.01):
            trial = perturb(space, np.repeat(point[None], 256, axis=0), scale, rng)
            values = law.predict(trial)
            if values.max() > law.predict(point[None])[0]:
                point = trial[int(np.argmax(values))]
        return Recommendation(point.copy(), mean=float(law.predict(point[None])[0]), source="law")
