"""Analytic mixture problems with a known optimum, for testing and benchmarking the search methods.

Built on the data-mixing-law form (Ye et al. 2024), loss_j = c_j + k_j * exp(sum_i t_ij w_i) per target
benchmark j, extended for a concept x task atlas:
  - concept x task interactions: a cell's effect on target j is concept affinity x task affinity x a
    cell-specific factor, and some cells are harmful (negative effect);
  - diminishing returns: the exponent uses g(w) = log(1 + w/eps) / log(1 + 1/eps) instead of w, so the
    first samples of a cell matter most;
  - observation noise: Gaussian, seeded by (problem seed, trial seed, trial id) so reruns reproduce.
The reported target is the weighted average over J target benchmarks (a benchmark-targeted recipe).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, TrialContext
from mixatlas.space import MODES, Mixture, MixtureSpace

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
DEFAULT_NOISE = 0.01


@dataclass
class SyntheticProblem:
    """A synthetic objective over a space's cells; `evaluate` follows the Objective protocol.

    Attributes:
        space: the mixture space (mode and constraints) the problem is posed on.
        effect_jkt: (J, k, T) effect of each cell on each target benchmark (negative = harmful).
        floor_j, scale_j: (J,) the law's c and k per target.
        target_weights_j: (J,) weights of the reported average, summing to 1.
        eps: diminishing-returns scale of g(w).
        noise: standard deviation of the observation noise on "loss".
        seed: the problem seed (also seeds the noise).
    """

    space: MixtureSpace
    effect_jkt: np.ndarray
    floor_j: np.ndarray
    scale_j: np.ndarray
    target_weights_j: np.ndarray
    eps: float = 0.03
    noise: float = DEFAULT_NOISE
    seed: int = 0
    metric: str = "loss"
    minimize: bool = True
    _optimum: float | None = field(default=None, repr=False)

    def losses(self, weights_nkt: np.ndarray) -> np.ndarray:
        """(n, J) noiseless per-target losses of cell matrices (n, k, T)."""
        w = np.clip(np.asarray(weights_nkt, dtype=np.float64), 0.0, None)
        gain = np.log1p(w / self.eps) / np.log1p(1.0 / self.eps)
        exponent = -np.einsum("nkt,jkt->nj", gain, self.effect_jkt)
        return self.floor_j[None] + self.scale_j[None] * np.exp(exponent)

    def loss(self, weights_nkt: np.ndarray) -> np.ndarray:
        """(n,) noiseless target: the weighted average of the per-target losses."""
        return self.losses(weights_nkt) @ self.target_weights_j

    def loss_gradient(self, weights_nkt: np.ndarray) -> np.ndarray:
        """(n, k, T) gradients of the noiseless target w.r.t. the cell weights (n, k, T)."""
        w = np.clip(np.asarray(weights_nkt, dtype=np.float64), 0.0, None)
        gain = np.log1p(w / self.eps) / np.log1p(1.0 / self.eps)
        exponent = -np.einsum("nkt,jkt->nj", gain, self.effect_jkt)
        per_target = self.target_weights_j * self.scale_j * np.exp(exponent)  # (n, J)
        d_gain = 1.0 / ((self.eps + w) * np.log1p(1.0 / self.eps))
        return -np.einsum("nj,jkt->nkt", per_target, self.effect_jkt) * d_gain

    def loss_of_params(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) noiseless target at parameter rows of `space`."""
        return self.loss(self.space.cell_weights(params_nd))

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        """Metrics "loss" (noisy), "loss_noiseless" and "bench<j>/loss" per target."""
        start = time.perf_counter()
        if mixture.weights_kt.shape != self.effect_jkt.shape[1:]:
            raise MixAtlasError(
                f"synthetic problem has {self.effect_jkt.shape[1:]} cells,"
                f" the mixture {mixture.weights_kt.shape}"
            )
        per_target = self.losses(mixture.weights_kt[None])[0]
        clean = float(per_target @ self.target_weights_j)
        rng = np.random.default_rng([self.seed, int(ctx.seed), int(ctx.trial_id)])
        metrics = {self.metric: clean + self.noise * float(rng.standard_normal()), "loss_noiseless": clean}
        metrics.update({f"bench{j}/loss": float(v) for j, v in enumerate(per_target)})
        return Result(metrics=metrics, cost_s=time.perf_counter() - start)

    def optimum_value(self) -> float:
        """The smallest noiseless loss on the feasible set, by multi-start projected gradient (cached)."""
        if self._optimum is None:
            self._optimum = float(self.loss_of_params(self.optimum_params()[None])[0])
        return self._optimum

    def optimum_params(self, n_starts: int = 32, iterations: int = 400) -> np.ndarray:
        """(d,) the best parameters found by projected gradient descent from many feasible starts.

        All starts move together (one vectorized step per iteration, step size adapted per start by
        backtracking); projections are exact in the linear modes, the feasibility repair in factored.
        """
        space = self.space
        rng = np.random.default_rng([self.seed, 99])
        screen = np.concatenate([space.sample(1000, rng, alpha=a) for a in (1.0, 0.1)])
        x = np.concatenate(
            [
                screen[np.argsort(self.loss_of_params(screen))[: n_starts - 2]],
                space.natural_params()[None],
                space.uniform_params()[None],
            ]
        )
        f = self.loss_of_params(x)
        step = np.full(len(x), 0.1)
        for _ in range(iterations):
            grad = space.params_gradient(x, self.loss_gradient(space.cell_weights(x)))
            grad /= np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-300)
            trial = space.project_many(x - step[:, None] * grad)
            trial_f = self.loss_of_params(trial)
            better = trial_f < f
            x[better], f[better] = trial[better], trial_f[better]
            step = np.where(better, step * 1.5, step * 0.5)
            if step.max() < 1e-10:
                break
        if not space.parametrization.exact_projection:  # a repair, not a projection: finish with SLSQP
            x = np.stack([self._slsqp(start) for start in x[np.argsort(f)[:3]]])
            f = self.loss_of_params(x)
        return x[int(np.argmin(f))].copy()

    def _slsqp(self, start_d: np.ndarray) -> np.ndarray:
        """Local SLSQP from `start_d` under the simplex and cell-bound constraints, made feasible."""
        from scipy.optimize import minimize

        space = self.space
        lower, upper = space.param_bounds()
        cell_lo, cell_hi = space.lower_kt.ravel(), space.upper_kt.ravel()

        def cells(x: np.ndarray) -> np.ndarray:
            return space.cell_weights(x)[0].ravel()

        constraints = [{"type": "eq", "fun": (lambda x, b=b: x[b].sum() - 1.0)} for b in space.simplex_blocks]
        constraints += [
            {"type": "ineq", "fun": lambda x: cells(x) - cell_lo},
            {"type": "ineq", "fun": lambda x: cell_hi - cells(x)},
        ]
        result = minimize(
            lambda x: float(self.loss_of_params(x[None])[0]),
            start_d,
            jac=lambda x: space.params_gradient(x, self.loss_gradient(space.cell_weights(x)))[0],
            method="SLSQP",
            bounds=list(zip(lower, upper, strict=True)),
            constraints=constraints,
            options={"maxiter": 300, "ftol": 1e-12},
        )
        polished = space.project(result.x)
        better = self.loss_of_params(polished[None])[0] < self.loss_of_params(start_d[None])[0]
        return polished if better else start_d


def synthetic_counts(k: int, n_tasks: int, rng: np.random.Generator) -> np.ndarray:
    """(k, T) long-tailed sample counts, like a real atlas (a few big cells, many small ones)."""
    return np.round(2000.0 * np.exp(rng.normal(0.0, 1.0, size=(k, n_tasks)))) + 50.0


def make_synthetic(
    space_mode: str,
    seed: int = 0,
    noise: float | None = None,
    k: int = 10,
    n_targets: int = 4,
    max_epochs: float | None = 4.0,
) -> tuple[MixtureSpace, SyntheticProblem]:
    """A synthetic family member on a k x 5 atlas (joint = 50 cells by default), with an epoch cap of
    `max_epochs` passes over each cell for a planned run as long as the corpus (None: no cap).

    Returns (space, objective); the objective's target metric is "loss" (minimize).
    """
    if space_mode not in MODES:
        raise MixAtlasError(f"synthetic space {space_mode!r} is unknown; choose one of {', '.join(MODES)}")
    rng = np.random.default_rng([seed, 20240])
    concepts = tuple(f"concept{i:02d}" for i in range(k))
    counts = synthetic_counts(k, len(TASKS), rng)
    cap = {} if max_epochs is None else {"planned_samples": float(counts.sum()), "max_epochs": max_epochs}
    space = MixtureSpace(concepts, TASKS, counts, mode=space_mode, **cap)
    concept_aff = np.exp(rng.normal(0.0, 1.0, size=(n_targets, k, 1)))
    task_aff = np.exp(rng.normal(0.0, 1.0, size=(n_targets, 1, len(TASKS))))
    interaction = np.exp(rng.normal(0.0, 0.5, size=(n_targets, k, len(TASKS))))
    effect = concept_aff * task_aff * interaction
    effect *= 3.0 / effect.sum(axis=(1, 2), keepdims=True) * (k * len(TASKS)) / 10.0
    harmful = rng.random((1, k, len(TASKS))) < 0.15
    effect = np.where(harmful, -0.5 * effect, effect)
    problem = SyntheticProblem(
        space=space,
        effect_jkt=effect,
        floor_j=rng.uniform(1.5, 2.5, n_targets),
        scale_j=rng.uniform(0.5, 1.5, n_targets),
        target_weights_j=rng.dirichlet(np.full(n_targets, 2.0)),
        noise=DEFAULT_NOISE if noise is None else float(noise),
        seed=seed,
    )
    return space, problem


@dataclass
class MultiFidelitySynthetic:
    """A synthetic problem at several fidelities: the target fidelity is `problem` itself, a cheaper one a
    correlated, biased and noisier version of it (any names; only the costs matter).

    At a fidelity m with cost ratio r = min(1, cost_m / cost_target), in units standardized over the
    space (mean and sd of 512 feasible points):
        loss_m = mean + sd * (rho * z_target + sqrt(1 - rho^2) * z_other) + (1 - r) * sd,
        rho = (1 + r) / 2,   noise_m = noise * (2 - r),
    with z_other an independent member of the family on the same cells (the construction of the
    analytic two-fidelity test problem): a cheap fidelity ranks mixtures like the target one with
    correlation about rho, sits higher (a smaller model's loss), is noisier, and its best mixture is not
    the target's best. The target fidelity (and a costlier one) is exactly `problem`. Metrics as
    `SyntheticProblem.evaluate` ("loss", "loss_noiseless", "bench<j>/loss" shifted alike) plus
    "target_loss_noiseless", the target fidelity's noiseless loss.
    """

    problem: SyntheticProblem
    costs: dict[str, float]
    target: str
    _stats: tuple[float, float, float, float] = field(default=(0.0, 1.0, 0.0, 1.0), repr=False)
    _other: SyntheticProblem | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.target not in self.costs:
            raise MixAtlasError(f"target fidelity {self.target!r} is not one of {', '.join(self.costs)}")
        k = self.problem.effect_jkt.shape[1]
        self._other = make_synthetic("joint", seed=self.problem.seed + 7919, noise=0.0, k=k)[1]
        if self._other.effect_jkt.shape != self.problem.effect_jkt.shape:  # pragma: no cover (k x 5 both)
            raise MixAtlasError("multi-fidelity synthetic: the companion problem has other cells")
        space = self.problem.space
        weights = space.cell_weights(space.sample(512, np.random.default_rng([self.problem.seed, 4242])))
        target, other = self.problem.loss(weights), self._other.loss(weights)
        self._stats = (float(target.mean()), float(target.std()) or 1.0,
                       float(other.mean()), float(other.std()) or 1.0)

    @property
    def metric(self) -> str:
        return self.problem.metric

    @property
    def minimize(self) -> bool:
        return self.problem.minimize

    def ratio(self, fidelity: str | None) -> float:
        """r = min(1, cost / target cost) of `fidelity` (None: the target)."""
        if fidelity is None:
            return 1.0
        if fidelity not in self.costs:
            raise MixAtlasError(f"fidelity {fidelity!r} unknown; fidelities are {', '.join(self.costs)}")
        return min(1.0, self.costs[fidelity] / self.costs[self.target])

    def loss_at(self, weights_nkt: np.ndarray, fidelity: str | None) -> np.ndarray:
        """(n,) noiseless loss of cell matrices (n, k, T) at `fidelity`."""
        target = self.problem.loss(weights_nkt)
        r = self.ratio(fidelity)
        if r >= 1.0:
            return target
        mean_t, sd_t, mean_o, sd_o = self._stats
        rho = (1.0 + r) / 2.0
        z_target = (target - mean_t) / sd_t
        z_other = (self._other.loss(weights_nkt) - mean_o) / sd_o
        return mean_t + sd_t * (rho * z_target + np.sqrt(1.0 - rho**2) * z_other) + (1.0 - r) * sd_t

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        result = self.problem.evaluate(mixture, ctx)
        r = self.ratio(ctx.fidelity)
        target_clean = result.metrics["loss_noiseless"]
        clean = float(self.loss_at(mixture.weights_kt[None], ctx.fidelity)[0])
        rng = np.random.default_rng([self.problem.seed, int(ctx.seed), int(ctx.trial_id), 1])
        noisy = clean + self.problem.noise * (2.0 - r) * float(rng.standard_normal())
        shift = clean - target_clean
        metrics = {name: value + shift for name, value in result.metrics.items() if name.startswith("bench")}
        metrics |= {self.metric: float(noisy), "loss_noiseless": clean, "target_loss_noiseless": target_clean}
        return Result(metrics=metrics, cost_s=result.cost_s)
