"""GP-UCB: a Gaussian-process surrogate of the target utility and upper-confidence-bound proposals.

Surrogate: BoTorch `SingleTaskGP` (RBF kernel with ARD and BoTorch's dimension-scaled log-normal
lengthscale prior; homoskedastic Gaussian noise learned under a LogNormal(-4, 1) prior, so noisy proxy
runs are smoothed rather than interpolated), fitted by maximum marginal likelihood on standardized
utilities.

Input representation: each simplex block is mapped through the square root, w -> sqrt(w). This puts a
composition on the positive orthant of the unit sphere, where Euclidean distance is the Hellinger
distance between mixtures: moving a cell from 0 to 1% counts as much as moving a large cell by a few
points, which matches data-mixing returns (the first samples of a domain matter most) and, unlike
log-ratio transforms, stays finite at zero weights.

Acquisition: UCB(x) = mu(x) + sqrt(beta_t) * sigma(x), with the schedule of Srinivas et al. (2010,
Theorem 1, finite decision set D):

    beta_t = beta_scale * 2 * log(|D| * t^2 * pi^2 / (6 * delta))

where t is the index of the proposal (trials started + 1), |D| the number of points the acquisition is
maximized over (the candidate pool) and delta the failure probability. The theorem's constant is known
to over-explore in practice; `beta_scale` (default 0.2, as in Kandasamy et al. 2015) shrinks it.

Maximization under the simplex/bounds/caps: a large feasible candidate pool (flat and sparse Dirichlet
draws on the feasible set plus perturbations of the best observed points) is scored, and the best few
are polished by shrinking random perturbation rounds, every point projected onto the feasible set, so
each proposal is feasible by construction (this avoids `optimize_acqf` with equality constraints, which
can take minutes for q = 4). Finite pools: the unused pool rows are scored.

Batches (n > 1) and running trials: kriging believer. Pending trials and the points already chosen in
this batch are added to the GP as fantasized observations at their posterior mean (hyperparameters kept),
which collapses the uncertainty around them so the next pick goes elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.baselines import best_observed
from mixatlas.search.design import history_rng, open_candidates, space_filling
from mixatlas.space import MixtureSpace

FIT_MAX_ITER = 150


def srinivas_beta(t: int, n_points: int, delta: float, scale: float) -> float:
    """beta_t = scale * 2 log(|D| t^2 pi^2 / (6 delta)) (Srinivas et al. 2010, Theorem 1)."""
    return scale * 2.0 * math.log(max(n_points, 1) * t**2 * math.pi**2 / (6.0 * delta))


@dataclass
class Surrogate:
    """A fitted GP in standardized units: utility = y_mean + y_sd * f."""

    model: object
    y_mean: float
    y_sd: float

    def predict(self, features_nf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the latent f (standardized units) at (n, f) features."""
        import torch

        with torch.no_grad(), single_thread():
            posterior = self.model.posterior(torch.as_tensor(features_nf, dtype=torch.float64))
            mean = posterior.mean.squeeze(-1).numpy()
            sd = posterior.variance.clamp_min(1e-12).sqrt().squeeze(-1).numpy()
        return mean, sd

    def believe(self, features_nf: np.ndarray) -> None:
        """Kriging believer: condition on observations equal to the posterior mean (same hyperparameters)."""
        import torch

        if not len(features_nf):
            return
        mean, _ = self.predict(features_nf)
        x_old = self.model.train_inputs[0]
        y_old = self.model.train_targets
        x_new = torch.cat([x_old, torch.as_tensor(features_nf, dtype=torch.float64)])
        y_new = torch.cat([y_old, torch.as_tensor(mean, dtype=torch.float64)])
        self.model.set_train_data(inputs=x_new, targets=y_new, strict=False)


class GPUCB(Optimizer):
    """GP-UCB mixture search (see the module docstring for the model, beta schedule and maximizer).

    Args:
        beta_schedule: "srinivas" (beta_t above) or "constant" (beta_t = `beta`).
        delta: Srinivas failure probability.
        beta_scale: multiplier on the Srinivas beta_t.
        beta: the constant beta when `beta_schedule="constant"`.
        n_init: space-filling points before the GP is used (counted in the budget); default
            clip(budget / 5, 2, 10).
        n_pool: candidate points scored per proposal on continuous spaces.
        n_polish: best candidates refined by perturbation rounds.

    Example:
        >>> opt = GPUCB()
        >>> params = opt.ask(history, 4)          # 4 feasible (d,) vectors
        >>> rec = opt.recommend(history)          # rec.mean, rec.sd in utility units
    """

    name = "gp-ucb"

    def __init__(
        self,
        beta_schedule: str = "srinivas",
        delta: float = 0.1,
        beta_scale: float = 0.2,
        beta: float = 4.0,
        n_init: int | None = None,
        n_pool: int = 6000,
        n_polish: int = 4,
    ) -> None:
        if beta_schedule not in ("srinivas", "constant"):
            raise MixAtlasError(f"gp-ucb beta_schedule {beta_schedule!r}: choose srinivas or constant")
        self.beta_schedule = beta_schedule
        self.delta = delta
        self.beta_scale = beta_scale
        self.beta = beta
        self.n_init = n_init
        self.n_pool = n_pool
        self.n_polish = n_polish
        self._fit_cache: tuple[bytes, Surrogate] | None = None

    # ----- public interface ------------------------------------------------------------------------------

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        rng = history_rng(history, self.name)
        n_design = max(0, self._n_init(history) - history.n_started)
        if len(history.done_utility) < 2:
            n_design = n
        chosen = space_filling(history, min(n, n_design), rng)
        if len(chosen) == n:
            return chosen
        space = history.space
        done = np.atleast_2d(history.done_params).reshape(-1, space.dim)
        surrogate = fit_surrogate(features(done), np.asarray(history.done_utility, dtype=np.float64))
        pending = [np.atleast_2d(history.pending_params).reshape(-1, space.dim), *chosen]
        surrogate.believe(features(np.concatenate([np.atleast_2d(p) for p in pending])))
        open_rows = open_candidates(space, history) if space.candidates is not None else None
        while len(chosen) < n:
            t = history.n_started + len(chosen) + 1
            point = self._maximize(history, surrogate, t, rng, open_rows)
            chosen.append(point)
            surrogate.believe(features(point[None]))
            if open_rows is not None:
                open_rows = _drop_row(space, open_rows, point)
        return chosen

    def recommend(self, history: History) -> Recommendation:
        """Maximizer of the posterior mean among evaluated mixtures (and pool rows), with mean and sd."""
        if len(history.done_utility) < 3:
            return best_observed(history)
        space = history.space
        points = np.atleast_2d(history.done_params)
        if space.candidates is not None:
            points = np.concatenate([points, space.candidates])
        mean, sd = self.posterior(history, points)
        best = int(np.argmax(mean))
        return Recommendation(
            params=points[best].copy(),
            mean=float(mean[best]),
            sd=float(sd[best]),
            source="posterior-mean maximizer",
        )

    def posterior(self, history: History, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the utility (its own units) at (n, d) parameters, GP fitted on the
        finished trials only."""
        surrogate = self._fitted(history)
        mean, sd = surrogate.predict(features(np.atleast_2d(params_nd)))
        return surrogate.y_mean + surrogate.y_sd * mean, surrogate.y_sd * sd

    # ----- internals -------------------------------------------------------------------------------------

    def _n_init(self, history: History) -> int:
        if self.n_init is not None:
            return self.n_init
        return int(np.clip(round(history.budget / 5), 2, 10))

    def _fitted(self, history: History) -> Surrogate:
        """The GP on the finished trials, refitted only when they changed since the last call."""
        x = np.atleast_2d(history.done_params).reshape(-1, history.space.dim)
        y = np.asarray(history.done_utility, dtype=np.float64)
        key = x.tobytes() + y.tobytes()
        if self._fit_cache is None or self._fit_cache[0] != key:
            self._fit_cache = (key, fit_surrogate(features(x), y))
        return self._fit_cache[1]

    def _beta(self, t: int, n_points: int) -> float:
        if self.beta_schedule == "constant":
            return self.beta
        return srinivas_beta(t, n_points, self.delta, self.beta_scale)

    def _maximize(
        self,
        history: History,
        surrogate: Surrogate,
        t: int,
        rng: np.random.Generator,
        open_rows: np.ndarray | None,
    ) -> np.ndarray:
        """The feasible point with the largest UCB (pool rows when the space is a finite pool)."""
        space = history.space
        if open_rows is not None:
            rows = space.candidates[open_rows]
            ucb = self._ucb(space, surrogate, rows, self._beta(t, len(rows)))
            return rows[int(np.argmax(ucb))].copy()
        beta = self._beta(t, self.n_pool)
        pool = self._candidate_pool(history, surrogate, rng)
        scores = self._ucb(space, surrogate, pool, beta)
        starts = pool[np.argsort(-scores)[: self.n_polish]]
        best_x, best_s = starts.copy(), np.sort(scores)[::-1][: self.n_polish].copy()
        for scale in (0.3, 0.15, 0.07, 0.03, 0.01):
            trial = _perturb(space, np.repeat(best_x, 64, axis=0), scale, rng)
            trial_s = self._ucb(space, surrogate, trial, beta).reshape(len(best_x), 64)
            top = trial_s.argmax(axis=1)
            better = trial_s[np.arange(len(best_x)), top] > best_s
            best_x[better] = trial.reshape(len(best_x), 64, -1)[np.flatnonzero(better), top[better]]
            best_s[better] = trial_s[np.arange(len(best_x)), top][better]
        return best_x[int(np.argmax(best_s))].copy()

    @staticmethod
    def _ucb(space: MixtureSpace, surrogate: Surrogate, params_nd: np.ndarray, beta: float) -> np.ndarray:
        mean, sd = surrogate.predict(features(params_nd))
        return mean + math.sqrt(beta) * sd

    def _candidate_pool(self, history: History, surrogate: Surrogate, rng: np.random.Generator) -> np.ndarray:
        """(n_pool, d) feasible points: flat and sparse Dirichlet draws and perturbations of the
        best observed points (ranked by posterior mean)."""
        space = history.space
        n_each = self.n_pool // 3
        done = np.atleast_2d(history.done_params).reshape(-1, space.dim)
        mean, _ = surrogate.predict(features(done))
        elite = done[np.argsort(-mean)[: min(8, len(done))]]
        scales = rng.choice([0.03, 0.1, 0.3], n_each)
        local = _perturb(space, elite[rng.integers(len(elite), size=n_each)], scales, rng)
        flat = space.sample(n_each, rng, alpha=1.0)
        sparse = space.sample(self.n_pool - 2 * n_each, rng, alpha=0.2)
        return np.concatenate([flat, sparse, local])


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. The GP's matrices are small (hundreds of rows), so
    thread synchronization costs more than it saves; on a shared machine it costs ~10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def features(params_nd: np.ndarray) -> np.ndarray:
    """GP inputs (n, d): the square root of the parameters (Hellinger embedding of each simplex)."""
    return np.sqrt(np.clip(np.atleast_2d(params_nd), 0.0, None))


def fit_surrogate(features_nf: np.ndarray, utility_n: np.ndarray) -> Surrogate:
    """Fit a SingleTaskGP (learned noise, dimension-scaled priors) to standardized utilities."""
    import torch
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    y_mean = float(np.mean(utility_n))
    y_sd = float(np.std(utility_n, ddof=1)) if len(utility_n) > 1 else 1.0
    y_sd = y_sd or 1.0
    x = torch.as_tensor(features_nf, dtype=torch.float64)
    y = torch.as_tensor((utility_n - y_mean) / y_sd, dtype=torch.float64).unsqueeze(-1)
    model = SingleTaskGP(x, y, outcome_transform=None)
    # On a fitting failure the prior-mode hyperparameters stay: a usable (if vague) surrogate.
    # L-BFGS is capped: the marginal likelihood is flat near its optimum and full convergence costs
    # several times more iterations for the same lengthscales.
    with warnings.catch_warnings(), contextlib.suppress(ModelFittingError), single_thread():
        warnings.simplefilter("ignore")
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": FIT_MAX_ITER}})
    model.eval()
    return Surrogate(model=model, y_mean=y_mean, y_sd=y_sd)


def _perturb(
    space: MixtureSpace, params_nd: np.ndarray, scale: float | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Feasible random neighbours: multiplicative log-normal noise of size `scale` per row, a little
    mass moved to random cells (so zero cells can switch on), then projected."""
    scale_n = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(params_nd),))[:, None]
    noisy = params_nd * np.exp(scale_n * 3.0 * rng.standard_normal(params_nd.shape))
    spread = space.sample(len(params_nd), rng, alpha=1.0)
    mixed = np.empty_like(noisy)
    for block in space.simplex_blocks:
        part = noisy[:, block] / np.maximum(noisy[:, block].sum(axis=1, keepdims=True), 1e-300)
        mixed[:, block] = (1 - scale_n * 0.3) * part + scale_n * 0.3 * spread[:, block]
    return space.project_many(mixed)


def _drop_row(space: MixtureSpace, rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Pool rows minus the one equal to `point` (all rows again once none would be left)."""
    index = space.candidate_index(point)
    remaining = rows[rows != index]
    return remaining if len(remaining) else np.arange(len(space.candidates))
