"""Guarded search: improve a target without letting other benchmarks fall below the natural mixture.

A guardrail "ocr/anls>=-0.01" says: at the chosen mixture, ocr/anls may be at most 0.01 below its value
at the reference mixture (the natural one); "val/loss<=0.02": the loss at most 0.02 above it.

Model: one GP per metric (`surrogate.fit_surrogate`, the plain "gp" variant for guard metrics), fitted on
the finished trials. For a guard g at mixture x the posterior of the difference D = g(x) - g(ref) is
Gaussian (joint posterior of x and the reference, so their shared uncertainty cancels), and
P(guard holds) = Phi((E[D] - delta) / sd[D]) for ">=" (Phi((delta - E[D]) / sd[D]) for "<=").
The probability of feasibility is the product over guards (independent GPs).

Acquisition: constrained expected improvement, EI(x) * PoF(x) (Gardner et al. 2014; Gelbart et al.
2014), EI over the best observed target among trials that are feasible with probability >= `p_feasible`;
before any such trial exists, the point of largest PoF. Recommendation: the evaluated mixture with the
largest target posterior mean among those with P(all guards hold) >= `p_feasible` (else the most
probably feasible one), reported with each guard's probability.

Live search: `GuardedSearch` is the registered method "gp-guarded" (`mixatlas search --guard SPEC`). It
takes the guard specs as its option `guards` (so the study stores them with its method options and a
resume checks them) and builds the `GuardedHistory` from `History.done_metrics`, the reference being the
space's natural mixture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Optimizer, Recommendation
from mixatlas.search.design import history_rng, open_candidates, space_filling
from mixatlas.search.surrogate import Surrogate, fit_surrogate

_GUARD = re.compile(r"^\s*([^<>=\s]+)\s*(>=|<=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Guard:
    """A metric that may not move the wrong way by more than `delta` relative to the reference mixture.

    `op` ">=": g(x) - g(ref) >= delta (delta usually <= 0, a score that may drop a little);
    `op` "<=": g(x) - g(ref) <= delta (delta usually >= 0, a loss that may rise a little).
    """

    metric: str
    op: str
    delta: float

    @classmethod
    def parse(cls, spec: str) -> Guard:
        """From "ocr/anls>=-0.01" or "val/loss<=0.02"."""
        match = _GUARD.match(spec)
        if match is None:
            raise MixAtlasError(
                f"--guard {spec!r}: write METRIC>=DELTA or METRIC<=DELTA (change vs the natural mixture),"
                " e.g. ocr/anls>=-0.01"
            )
        return cls(match.group(1), match.group(2), float(match.group(3)))

    @property
    def spec(self) -> str:
        return f"{self.metric}{self.op}{self.delta:g}"

    def probability(self, diff_mean: np.ndarray, diff_sd: np.ndarray) -> np.ndarray:
        """P(guard holds) given the Gaussian posterior of g(x) - g(ref), (n,) each."""
        z = (diff_mean - self.delta) / np.maximum(diff_sd, 1e-12)
        return norm.cdf(z if self.op == ">=" else -z)

    def holds(self, value: float, reference: float) -> bool:
        diff = value - reference
        return diff >= self.delta if self.op == ">=" else diff <= self.delta


@dataclass(frozen=True)
class GuardedHistory:
    """A `History` plus the guard metrics of every finished trial.

    Attributes:
        history: target utilities (larger is better) and parameters.
        guards: the guardrails.
        done_guard_values: (m, g) each guard metric's value (its own units) at each finished trial.
        reference_params: (d,) the reference mixture (default: the space's natural mixture).
    """

    history: History
    guards: tuple[Guard, ...]
    done_guard_values: np.ndarray
    reference_params: np.ndarray | None = None

    @property
    def reference(self) -> np.ndarray:
        if self.reference_params is not None:
            return np.asarray(self.reference_params, float)
        return self.history.space.natural_params()


@dataclass
class GuardedRecommendation:
    """The recommendation with each guard's posterior probability of holding there."""

    recommendation: Recommendation
    guard_probability: dict[str, float] = field(default_factory=dict)
    p_all: float = 1.0


class GuardedGPUCB:
    """Constrained-EI search of the target under guardrails (see the module docstring).

    Args:
        p_feasible: the probability all guards must hold with for a mixture to count as feasible.
        n_init: space-filling trials first (default clip(budget / 5, 2, 10)).
        n_pool: candidates scored per proposal on continuous spaces.
    """

    name = "gp-guarded"

    def __init__(self, p_feasible: float = 0.9, n_init: int | None = None, n_pool: int = 3000) -> None:
        if not 0.0 < p_feasible < 1.0:
            raise MixAtlasError(f"p_feasible {p_feasible}: give a probability in (0, 1)")
        self.p_feasible = p_feasible
        self.n_init = n_init
        self.n_pool = n_pool

    def ask(self, gh: GuardedHistory, n: int) -> list[np.ndarray]:
        history = gh.history
        rng = history_rng(history, self.name)
        n_init = self.n_init if self.n_init is not None else int(np.clip(round(history.budget / 5), 2, 10))
        n_design = n if len(history.done_utility) < 2 else max(0, n_init - history.n_started)
        chosen = space_filling(history, min(n, n_design), rng)
        if len(chosen) == n:
            return chosen
        space = history.space
        target, guards = self._fit(gh)
        pending = np.concatenate(
            [
                np.atleast_2d(history.pending_params).reshape(-1, space.dim),
                np.asarray(chosen).reshape(-1, space.dim),
            ]
        )
        target = target.believe(pending)
        if space.candidates is not None:
            rows = open_candidates(space, history)
            points = space.candidates[rows]
        else:
            points = np.concatenate(
                [
                    space.sample(self.n_pool // 2, rng, alpha=1.0),
                    space.sample(self.n_pool - self.n_pool // 2, rng, alpha=0.2),
                ]
            )
        p_ok, _ = self._feasibility(gh, guards, points)
        mean, sd = target.predict(points)
        observed = np.atleast_2d(history.done_params)
        p_obs, _ = self._feasibility(gh, guards, observed)
        feasible = p_obs >= self.p_feasible
        while len(chosen) < n:
            if feasible.any():
                best = float(np.max(np.asarray(history.done_utility)[feasible]))
                z = (mean - best) / np.maximum(sd, 1e-12)
                score = np.log(np.maximum(sd * (z * norm.cdf(z) + norm.pdf(z)), 1e-300)) + np.log(
                    np.maximum(p_ok, 1e-300)
                )
            else:
                score = p_ok
            pick = int(np.argmax(score))
            chosen.append(points[pick].copy())
            score_mask = np.ones(len(points), bool)
            score_mask[pick] = False
            points, p_ok, mean, sd = points[score_mask], p_ok[score_mask], mean[score_mask], sd[score_mask]
            if not len(points):
                break
        return chosen

    def recommend(self, gh: GuardedHistory) -> GuardedRecommendation:
        history = gh.history
        if len(history.done_utility) == 0:
            raise MixAtlasError("no finished trials yet: run the search before asking for a recommendation")
        points = np.unique(np.atleast_2d(history.done_params), axis=0)
        target, guards = self._fit(gh)
        p_all, per_guard = self._feasibility(gh, guards, points)
        mean, sd = target.predict(points)
        ok = p_all >= self.p_feasible
        best = int(np.argmax(np.where(ok, mean, -np.inf))) if ok.any() else int(np.argmax(p_all))
        source = "posterior-mean maximizer under guardrails" if ok.any() else "most probably feasible"
        return GuardedRecommendation(
            Recommendation(points[best].copy(), float(mean[best]), float(sd[best]), source),
            {g.spec: float(p[best]) for g, p in zip(gh.guards, per_guard, strict=True)},
            float(p_all[best]),
        )

    def _fit(self, gh: GuardedHistory) -> tuple[Surrogate, list[Surrogate]]:
        history = gh.history
        params = np.atleast_2d(history.done_params)
        target = fit_surrogate(params, np.asarray(history.done_utility, float), variants=("gp",))
        values = np.asarray(gh.done_guard_values, float).reshape(len(params), len(gh.guards))
        return target, [fit_surrogate(params, values[:, i], variants=("gp",)) for i in range(len(gh.guards))]

    @staticmethod
    def _feasibility(
        gh: GuardedHistory, guards: list[Surrogate], points: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """P(all guards hold) (n,) and per guard [(n,)] at (n, d) points, vs the reference mixture."""
        per_guard = []
        for guard, model in zip(gh.guards, guards, strict=True):
            both = np.concatenate([points, gh.reference[None]])
            mean, cov = model.joint(both)
            diff = mean[:-1] - mean[-1]
            var = np.diag(cov)[:-1] + cov[-1, -1] - 2.0 * cov[:-1, -1]
            per_guard.append(guard.probability(diff, np.sqrt(np.clip(var, 1e-18, None))))
        p_all = np.prod(per_guard, axis=0) if per_guard else np.ones(len(points))
        return p_all, per_guard


@dataclass(frozen=True)
class GuardAssessment:
    """The posterior view of n mixtures against the reference mixture, one value per mixture (n,).

    `target_gain`: posterior mean of utility(x) - utility(ref) (target units, positive = better);
    `guard_change[spec]`: posterior mean of g(x) - g(ref) in the metric's units; `guard_probability[spec]`:
    P(guard holds); `p_all`: P(all guards hold) (their product).
    """

    target_gain: np.ndarray
    guard_change: dict[str, np.ndarray]
    guard_probability: dict[str, np.ndarray]
    p_all: np.ndarray


class GuardedSearch(Optimizer):
    """The method "gp-guarded": `GuardedGPUCB` driven by a plain `History` (see the module docstring).

    Args:
        guards: guard specs ("ocr/anls>=-0.01") or `Guard`s. Without any it is plain expected improvement
            (the search config refuses gp-guarded without a guard; the method registry tests build it bare).
        p_feasible, n_init, n_pool: as for `GuardedGPUCB`.
    """

    name = "gp-guarded"

    def __init__(self, guards: list[str] | tuple[str | Guard, ...] = (), p_feasible: float = 0.9,
                 n_init: int | None = None, n_pool: int = 3000) -> None:
        if isinstance(guards, str):
            guards = [guards]
        self.guards = tuple(g if isinstance(g, Guard) else Guard.parse(str(g)) for g in guards)
        self.inner = GuardedGPUCB(p_feasible=p_feasible, n_init=n_init, n_pool=n_pool)

    @property
    def specs(self) -> list[str]:
        return [g.spec for g in self.guards]

    def guarded_history(self, history: History) -> GuardedHistory:
        """`history` with each guard metric's value at every finished trial (from `done_metrics`)."""
        m = len(history.done_utility)
        if not self.guards:
            return GuardedHistory(history, (), np.empty((m, 0)))
        if len(history.done_metrics) != m:
            raise MixAtlasError(
                "gp-guarded needs every finished trial's metrics; the history has "
                f"{len(history.done_metrics)} metric records for {m} trials"
            )
        values = np.empty((m, len(self.guards)))
        for i, metrics in enumerate(history.done_metrics):
            for j, guard in enumerate(self.guards):
                value = metrics.get(guard.metric)
                if value is None or not np.isfinite(float(value)):
                    known = ", ".join(sorted(metrics)) or "none"
                    raise MixAtlasError(
                        f"guard {guard.spec}: a finished trial reports no finite {guard.metric!r} (its "
                        f"metrics: {known}); guard a metric the objective reports"
                    )
                values[i, j] = float(value)
        return GuardedHistory(history, self.guards, values)

    def ask(self, history: History, n: int) -> list[np.ndarray]:
        return self.inner.ask(self.guarded_history(history), n)

    def recommend(self, history: History) -> Recommendation:
        return self.recommend_guarded(history).recommendation

    def recommend_guarded(self, history: History) -> GuardedRecommendation:
        """The recommendation with each guard's probability of holding there."""
        return self.inner.recommend(self.guarded_history(history))

    def surrogate(self, history: History) -> Surrogate:
        """The target's GP (the "gp" variant, as the acquisition uses), refitted only when the data change."""
        x = np.atleast_2d(history.done_params).reshape(-1, history.space.dim)
        y = np.asarray(history.done_utility, dtype=np.float64)
        key = x.tobytes() + y.tobytes()
        cached = getattr(self, "_fit_cache", None)
        if cached is None or cached[0] != key:
            self._fit_cache = (key, fit_surrogate(x, y, variants=("gp",)))
        return self._fit_cache[1]

    def posterior(self, history: History, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the target utility at (n, d) parameters (as `GPUCB.posterior`)."""
        return self.surrogate(history).predict(np.atleast_2d(params_nd))

    def probability_better(
        self, history: History, params_nd: np.ndarray, reference_d: np.ndarray
    ) -> np.ndarray:
        """(n,) P(target utility at each mixture > at the (d,) reference), joint posterior (as GPUCB's)."""
        params = np.atleast_2d(params_nd)
        mean, cov = self.surrogate(history).joint(np.concatenate([params, np.atleast_2d(reference_d)]))
        var = np.diag(cov)[:-1] + cov[-1, -1] - 2 * cov[:-1, -1]
        return norm.cdf((mean[:-1] - mean[-1]) / np.sqrt(np.maximum(var, 1e-18)))

    def assess(self, history: History, params_nd: np.ndarray) -> GuardAssessment:
        """Target gain, guard changes and guard probabilities at (n, d) mixtures vs the natural mixture."""
        gh = self.guarded_history(history)
        points = np.atleast_2d(np.asarray(params_nd, float))
        target, models = self.inner._fit(gh)
        mean, _ = target.predict(np.concatenate([points, gh.reference[None]]))
        p_all, per_guard = self.inner._feasibility(gh, models, points)
        changes = {}
        for guard, model in zip(self.guards, models, strict=True):
            guard_mean, _ = model.predict(np.concatenate([points, gh.reference[None]]))
            changes[guard.spec] = guard_mean[:-1] - guard_mean[-1]
        return GuardAssessment(
            target_gain=mean[:-1] - mean[-1],
            guard_change=changes,
            guard_probability={g.spec: p for g, p in zip(self.guards, per_guard, strict=True)},
            p_all=p_all,
        )
