"""GP-UCB: a Gaussian-process surrogate of the target utility and upper-confidence-bound proposals.

Surrogate: `mixatlas.search.surrogate` (sqrt-composition inputs; constant-mean, data-mixing-law-mean and
additive+interaction GP variants chosen by leave-one-out on the study's own trials; noise learned, or per
point from replicate variances when replicates exist).

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

Replicates (continuous spaces only): a replicate is a proposal whose parameters equal a finished trial's;
the loop runs it as a new trial with a new seed. `ask` proposes one (at most one per call) when the
noise dominates: the estimated noise variance at the incumbent (the current recommendation) is at least
`replicate_noise_share` of the variance of the observed utilities, the incumbent has fewer than
`max_replicates` observations, and replicates so far are fewer than a quarter of the budget. Pool
problems never replicate (a pool row has one recorded result).

Recommendation (`rule`): "lcb" (default) maximizes the posterior lower confidence bound mean - kappa * sd
of the noiseless utility over the evaluated mixtures, the pool rows (pool problems) and small
perturbations of the best evaluated mixtures (continuous spaces). A lucky single draw is discounted by
the noise model, and an unevaluated mixture wins only where the posterior is sure it is better, so the
answer is never a far extrapolation; `source` says when it is unevaluated and its Hellinger distance
to the nearest trial. "mean": the posterior-mean maximizer over the evaluated mixtures and pool rows (the
former rule); "observed": the best observed trial.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.baselines import best_observed
from mixatlas.search.design import history_rng, open_candidates, perturb, space_filling
from mixatlas.search.surrogate import Surrogate, features, fit_surrogate, replicate_groups
from mixatlas.space import MixtureSpace

RULES = ("lcb", "mean", "observed")


def srinivas_beta(t: int, n_points: int, delta: float, scale: float) -> float:
    """beta_t = scale * 2 log(|D| t^2 pi^2 / (6 delta)) (Srinivas et al. 2010, Theorem 1)."""
    return scale * 2.0 * math.log(max(n_points, 1) * t**2 * math.pi**2 / (6.0 * delta))


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
        rule: recommendation rule, one of `RULES`.
        kappa: the lower confidence bound's multiple of the posterior sd.
        replicates: allow replicate proposals (continuous spaces).
        replicate_noise_share: noise variance / observed utility variance above which noise dominates.
        max_replicates: observations of one mixture beyond which it is not replicated again.
        variants: surrogate variants to choose among by leave-one-out (default: every applicable one of
            `mixatlas.search.surrogate.DEFAULT_VARIANTS`).

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
        rule: str = "lcb",
        kappa: float = 1.0,
        replicates: bool = True,
        replicate_noise_share: float = 0.25,
        max_replicates: int = 3,
        variants: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        if beta_schedule not in ("srinivas", "constant"):
            raise MixAtlasError(f"gp-ucb beta_schedule {beta_schedule!r}: choose srinivas or constant")
        if rule not in RULES:
            raise MixAtlasError(f"gp-ucb rule {rule!r}: choose one of {', '.join(RULES)}")
        self.beta_schedule = beta_schedule
        self.delta = delta
        self.beta_scale = beta_scale
        self.beta = beta
        self.n_init = n_init
        self.n_pool = n_pool
        self.n_polish = n_polish
        self.rule = rule
        self.kappa = kappa
        self.replicates = replicates
        self.replicate_noise_share = replicate_noise_share
        self.max_replicates = max_replicates
        self.variants = tuple(variants) if variants is not None else None
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
        surrogate = self.surrogate(history)
        replicate = self._replicate(history, surrogate) if not chosen else None
        if replicate is not None:
            chosen.append(replicate)
        pending = [np.atleast_2d(history.pending_params).reshape(-1, space.dim), *chosen]
        surrogate = surrogate.believe(np.concatenate([np.atleast_2d(p) for p in pending]))
        open_rows = open_candidates(space, history) if space.candidates is not None else None
        while len(chosen) < n:
            t = history.n_started + len(chosen) + 1
            point = self._maximize(history, surrogate, t, rng, open_rows)
            chosen.append(point)
            surrogate = surrogate.believe(point[None])
            if open_rows is not None:
                open_rows = _drop_row(space, open_rows, point)
        return chosen

    def recommend(self, history: History) -> Recommendation:
        """The recommendation by this optimizer's `rule` (see the module docstring)."""
        return self.recommend_by(history, self.rule)

    def recommend_by(self, history: History, rule: str) -> Recommendation:
        """The recommendation by one of `RULES` from the same fitted posterior (for comparing rules)."""
        if rule == "observed" or len(history.done_utility) < 3:
            return best_observed(history)
        observed = np.unique(np.atleast_2d(history.done_params), axis=0)
        points = [observed]
        if history.space.candidates is not None:
            points.append(history.space.candidates)
        elif rule == "lcb":
            points.append(self._neighbours(history))
        points = np.concatenate(points)
        mean, sd = self.posterior(history, points)
        score = mean - self.kappa * sd if rule == "lcb" else mean
        best = int(np.argmax(score))
        gap = float(np.sqrt(((features(points[best]) - features(observed)) ** 2).sum(axis=1)).min())
        label = "posterior LCB" if rule == "lcb" else "posterior-mean maximizer"
        if gap > 1e-9:
            label += f", not evaluated (Hellinger distance {gap / math.sqrt(2):.3f} from the nearest trial)"
        return Recommendation(
            params=points[best].copy(), mean=float(mean[best]), sd=float(sd[best]), source=label
        )

    def posterior(self, history: History, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the noiseless utility (its own units) at (n, d) parameters, each (n,);
        the surrogate is fitted on the finished trials only."""
        return self.surrogate(history).predict(np.atleast_2d(params_nd))

    def probability_better(
        self, history: History, params_nd: np.ndarray, reference_d: np.ndarray
    ) -> np.ndarray:
        """(n,) posterior probability that each of (n, d) mixtures has a larger noiseless utility than the
        (d,) reference (e.g. the natural mixture or a baseline's recommendation), from the joint
        posterior (their correlation counts: two nearby mixtures are compared precisely)."""
        params = np.atleast_2d(params_nd)
        mean, cov = self.surrogate(history).joint(np.concatenate([params, np.atleast_2d(reference_d)]))
        diff = mean[:-1] - mean[-1]
        var = np.diag(cov)[:-1] + cov[-1, -1] - 2 * cov[:-1, -1]
        return norm.cdf(diff / np.sqrt(np.maximum(var, 1e-18)))

    def surrogate(self, history: History) -> Surrogate:
        """The surrogate fitted on the finished trials, refitted only when they changed since the last
        call."""
        x = np.atleast_2d(history.done_params).reshape(-1, history.space.dim)
        y = np.asarray(history.done_utility, dtype=np.float64)
        key = x.tobytes() + y.tobytes()
        if self._fit_cache is None or self._fit_cache[0] != key:
            self._fit_cache = (key, fit_surrogate(x, y, variants=self.variants, seed=history.seed))
        return self._fit_cache[1]

    # ----- internals -------------------------------------------------------------------------------------

    def _n_init(self, history: History) -> int:
        if self.n_init is not None:
            return self.n_init
        return int(np.clip(round(history.budget / 5), 2, 10))

    def _beta(self, t: int, n_points: int) -> float:
        if self.beta_schedule == "constant":
            return self.beta
        return srinivas_beta(t, n_points, self.delta, self.beta_scale)

    def _replicate(self, history: History, surrogate: Surrogate) -> np.ndarray | None:
        """The incumbent's parameters when the noise dominates and replicating is allowed, else None."""
        if not self.replicates or history.space.candidates is not None or len(history.done_utility) < 3:
            return None
        done = np.atleast_2d(history.done_params)
        started = np.concatenate([done, np.atleast_2d(history.pending_params).reshape(-1, done.shape[1])])
        unique, inverse = replicate_groups(started)
        if len(inverse) - len(unique) >= history.budget // 4:
            return None
        observed = np.unique(done, axis=0)
        mean, sd = surrogate.predict(observed)
        incumbent = observed[int(np.argmax(mean - self.kappa * sd))]
        if (
            np.sum(np.all(np.round(started, 12) == np.round(incumbent, 12)[None], axis=1))
            >= self.max_replicates
        ):
            return None
        noise_var = float(surrogate.noise_sd(incumbent[None])[0] ** 2)
        if noise_var < self.replicate_noise_share * float(np.var(history.done_utility)):
            return None
        return incumbent.copy()

    def _neighbours(self, history: History, n_each: int = 64) -> np.ndarray:
        """Small feasible perturbations of the best evaluated mixtures (by posterior mean)."""
        space = history.space
        done = np.unique(np.atleast_2d(history.done_params), axis=0)
        mean, _ = self.posterior(history, done)
        elite = done[np.argsort(-mean)[: min(4, len(done))]]
        rng = np.random.default_rng([history.seed, len(history.done_utility), 13])
        starts = np.repeat(elite, n_each, axis=0)
        return perturb(space, starts, rng.choice([0.01, 0.03, 0.1], len(starts)), rng)

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
            ucb = self._ucb(surrogate, rows, self._beta(t, len(rows)))
            return rows[int(np.argmax(ucb))].copy()
        beta = self._beta(t, self.n_pool)
        pool = self._candidate_pool(history, surrogate, rng)
        scores = self._ucb(surrogate, pool, beta)
        starts = pool[np.argsort(-scores)[: self.n_polish]]
        best_x, best_s = starts.copy(), np.sort(scores)[::-1][: self.n_polish].copy()
        for scale in (0.3, 0.15, 0.07, 0.03, 0.01):
            trial = perturb(space, np.repeat(best_x, 64, axis=0), scale, rng)
            trial_s = self._ucb(surrogate, trial, beta).reshape(len(best_x), 64)
            top = trial_s.argmax(axis=1)
            better = trial_s[np.arange(len(best_x)), top] > best_s
            best_x[better] = trial.reshape(len(best_x), 64, -1)[np.flatnonzero(better), top[better]]
            best_s[better] = trial_s[np.arange(len(best_x)), top][better]
        return best_x[int(np.argmax(best_s))].copy()

    @staticmethod
    def _ucb(surrogate: Surrogate, params_nd: np.ndarray, beta: float) -> np.ndarray:
        mean, sd = surrogate.predict(params_nd)
        return mean + math.sqrt(beta) * sd

    def _candidate_pool(self, history: History, surrogate: Surrogate, rng: np.random.Generator) -> np.ndarray:
        """(n_pool, d) feasible points: flat and sparse Dirichlet draws and perturbations of the
        best observed points (ranked by posterior mean)."""
        space = history.space
        n_each = self.n_pool // 3
        done = np.atleast_2d(history.done_params).reshape(-1, space.dim)
        mean, _ = surrogate.predict(done)
        elite = done[np.argsort(-mean)[: min(8, len(done))]]
        scales = rng.choice([0.03, 0.1, 0.3], n_each)
        local = perturb(space, elite[rng.integers(len(elite), size=n_each)], scales, rng)
        flat = space.sample(n_each, rng, alpha=1.0)
        sparse = space.sample(self.n_pool - 2 * n_each, rng, alpha=0.2)
        return np.concatenate([flat, sparse, local])


def _drop_row(space: MixtureSpace, rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Pool rows minus the one equal to `point` (all rows again once none would be left)."""
    index = space.candidate_index(point)
    remaining = rows[rows != index]
    return remaining if len(remaining) else np.arange(len(space.candidates))
