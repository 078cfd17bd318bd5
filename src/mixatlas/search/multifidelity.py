"""Multi-fidelity mixture search: trials at several costs (proxy size, proxy steps), one target fidelity.

Surrogate: a multi-task GP over fidelities (BoTorch `MultiTaskGP`: ICM kernel = RBF(ARD) on the
Hellinger features sqrt(w) times a `PositiveIndexKernel` over the fidelities, a constant mean per
fidelity, learned noise), fitted on every finished trial of every fidelity. The fidelity correlation is
learned from the data, so a cheap fidelity that ranks mixtures like the target one is used, and one that
does not is ignored.

Acquisition (MF-GP-UCB, after Kandasamy et al. 2016, with a cost-aware fidelity choice):
  1. the mixture: x* = argmax UCB_T(x) = mu_T(x) + sqrt(beta_t) sd_T(x) at the *target* fidelity T, over
     mixtures that still have an affordable open fidelity (beta_t: the Srinivas schedule of gp-ucb);
  2. the fidelity: among those open and affordable at x*, the one with the largest information about
     f_T(x*) per unit cost, IG_m / cost_m with IG_m = -1/2 log(1 - rho_m^2) and rho_m the posterior
     correlation of f_T(x*) and the noisy observation y_m(x*) (the Gaussian mutual information, as in
     cost-aware max-value entropy search, Takeno et al. 2020, restricted to x*).
Batches and running trials: kriging believer (pending pairs enter the GP at their posterior mean, so the
next pick goes elsewhere); pending pairs count against the budget. A cheap fidelity is chosen while it
still says much about the target at x*; once x* is known there (observed, or weakly correlated), the
target fidelity wins. The initial design is space-filling at the
cheapest fidelity. The recommendation is the mixture with the largest target-fidelity posterior mean
among the mixtures evaluated at any fidelity (and present at the target fidelity on pools).

Budgets are costs: a trial at fidelity m costs `costs[m]`; a study spends at most `budget_cost`, and a
trial is proposed only when its cost still fits (costs are charged exactly).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History, Recommendation
from mixatlas.search.design import maximin_pick, sobol_simplex
from mixatlas.search.gp_ucb import srinivas_beta
from mixatlas.search.surrogate import features, seeded_torch, single_thread
from mixatlas.space import MixtureSpace

_COST_ITEM = re.compile(r"^\s*([^=,\s]+)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
FIT_MAX_ITER = 50


@dataclass(frozen=True)
class Fidelities:
    """Named cost levels of a trial and the one the search recommends for.

    Attributes:
        names: the F fidelity names, e.g. ("0.5b", "3b", "7b") or ("steps=0.25", "steps=1").
        costs: (F,) positive cost of one trial at each fidelity (any unit: GPU-hours, relative).
        target: the name of the target fidelity.
    """

    names: tuple[str, ...]
    costs: tuple[float, ...]
    target: str

    def __post_init__(self) -> None:
        if len(self.names) != len(self.costs) or not self.names:
            raise MixAtlasError("fidelities: give one cost per fidelity name")
        if len(set(self.names)) != len(self.names):
            raise MixAtlasError(f"fidelities: duplicate names in {list(self.names)}")
        if any(not (c > 0 and math.isfinite(c)) for c in self.costs):
            raise MixAtlasError(f"fidelities: costs must be positive numbers, got {list(self.costs)}")
        if self.target not in self.names:
            raise MixAtlasError(
                f"--target-fidelity {self.target!r} is not one of the fidelities {', '.join(self.names)}"
            )

    @classmethod
    def parse(cls, costs: str, target: str | None = None, option: str = "--costs") -> Fidelities:
        """From "0.5b=1,3b=6,7b=14" and the target name ("7b"; None: the costliest fidelity).

        `option` names the flag the text came from in errors (`--costs` of `bench pool`, `--fidelities`
        of `search`).
        """
        names, values = [], []
        for item in costs.split(","):
            match = _COST_ITEM.match(item)
            if match is None:
                raise MixAtlasError(f"{option} {costs!r}: cannot read {item.strip()!r}; write NAME=COST,...")
            names.append(match.group(1))
            values.append(float(match.group(2)))
        if target is None:
            target = names[int(np.argmax(values))] if names else ""
        return cls(tuple(names), tuple(values), target)

    @classmethod
    def from_dict(cls, data: dict) -> Fidelities:
        """The inverse of `to_dict` (how a study stores its fidelities)."""
        return cls(tuple(data["names"]), tuple(float(c) for c in data["costs"]), data["target"])

    def cost(self, name: str) -> float:
        return self.costs[self.index(name)]

    def spec(self) -> str:
        """"0.5b=1,3b=6,7b=14": the text `parse` reads."""
        return ",".join(f"{n}={c:g}" for n, c in zip(self.names, self.costs, strict=True))

    @property
    def target_index(self) -> int:
        return self.names.index(self.target)

    @property
    def costs_f(self) -> np.ndarray:
        return np.asarray(self.costs, dtype=np.float64)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise MixAtlasError(f"fidelity {name!r} unknown; fidelities are {', '.join(self.names)}")
        return self.names.index(name)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "costs": list(self.costs), "target": self.target}


@dataclass(frozen=True)
class FidelityHistory:
    """What a multi-fidelity optimizer may know: a `History` plus each trial's fidelity and the cost budget.

    Attributes:
        history: finished (`done_params` (m, d), `done_utility` (m,)) and pending (p, d) trials; its
            `budget` is unused (the budget is `budget_cost`).
        done_fidelity: (m,) fidelity index of each finished trial.
        pending_fidelity: (p,) fidelity index of each pending trial.
        fidelities: names, costs and the target.
        budget_cost: total cost the study may spend (finished + pending + new trials).
        available_cf: (c, F) bool for pool spaces: pool row c exists at fidelity f (None: continuous).
    """

    history: History
    done_fidelity: np.ndarray
    pending_fidelity: np.ndarray
    fidelities: Fidelities
    budget_cost: float
    available_cf: np.ndarray | None = None

    @property
    def space(self) -> MixtureSpace:
        return self.history.space

    @property
    def spent(self) -> float:
        """Cost of the finished and pending trials."""
        costs = self.fidelities.costs_f
        used = np.concatenate([np.asarray(self.done_fidelity, int), np.asarray(self.pending_fidelity, int)])
        return float(costs[used].sum()) if len(used) else 0.0

    @property
    def remaining(self) -> float:
        return self.budget_cost - self.spent

    def open_pairs(self) -> np.ndarray:
        """(c, F) bool over pool rows: (row, fidelity) exists, is not evaluated or pending, and fits the
        remaining budget. Pool spaces only."""
        space = self.space
        if space.candidates is None or self.available_cf is None:
            raise MixAtlasError("open_pairs needs a pool space with fidelity availability")
        open_cf = self.available_cf.copy()
        h = self.history
        for params, fids in ((h.done_params, self.done_fidelity), (h.pending_params, self.pending_fidelity)):
            for row, f in zip(
                np.atleast_2d(params).reshape(-1, space.dim), np.asarray(fids, int), strict=True
            ):
                index = space.candidate_index(row)
                if index is not None:
                    open_cf[index, f] = False
        affordable = self.fidelities.costs_f <= self.remaining + 1e-9
        return open_cf & affordable[None, :]


class MultiFidelityOptimizer(ABC):
    """A method that proposes (mixture, fidelity) pairs and recommends for the target fidelity."""

    name: str = ""

    @abstractmethod
    def ask(self, history: FidelityHistory, n: int) -> list[tuple[np.ndarray, int]]:
        """Up to `n` new (params (d,), fidelity index) pairs whose total cost fits `history.remaining`;
        fewer (possibly none) when the budget or the pool is exhausted."""

    @abstractmethod
    def recommend(self, history: FidelityHistory) -> Recommendation:
        """The best mixture for the target fidelity given everything finished so far."""


@dataclass
class MultiFidelitySurrogate:
    """A fitted MultiTaskGP on standardized utilities (utility = y_mean + y_sd * f)."""

    model: object
    y_mean: float
    y_sd: float
    n_fidelities: int

    def joint(self, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior of f at every fidelity, per mixture: mean (n, F), covariance (n, F, F), standardized."""
        import torch

        x = torch.as_tensor(features(params_nd), dtype=torch.float64).unsqueeze(-2)  # (n, 1, d)
        with torch.no_grad(), single_thread():
            posterior = self.model.posterior(x)
            mean = posterior.mean.reshape(len(params_nd), self.n_fidelities).numpy()
            cov = posterior.mvn.covariance_matrix.reshape(len(params_nd), self.n_fidelities, -1).numpy()
        return mean, cov

    @property
    def noise_var(self) -> float:
        """Observation noise variance (standardized units)."""
        return float(self.model.likelihood.noise.detach().reshape(-1)[0])

    def believe(self, params_nd: np.ndarray, fidelity_n: np.ndarray) -> None:
        """Kriging believer: condition on observations equal to the posterior mean (same hyperparameters)."""
        import torch

        if not len(params_nd):
            return
        mean, _ = self.joint(params_nd)
        fidelity = np.asarray(fidelity_n, int)
        x_new = np.concatenate([features(params_nd), fidelity[:, None].astype(float)], axis=1)
        x = torch.cat([self.model.train_inputs[0], torch.as_tensor(x_new, dtype=torch.float64)])
        y_new = torch.as_tensor(mean[np.arange(len(fidelity)), fidelity], dtype=torch.float64)
        self.model.set_train_data(
            inputs=x, targets=torch.cat([self.model.train_targets, y_new]), strict=False
        )

    def predict(self, params_nd: np.ndarray, fidelity: int) -> tuple[np.ndarray, np.ndarray]:
        """Utility mean and sd (utility units) at one fidelity, (n,) each."""
        mean, cov = self.joint(np.atleast_2d(params_nd))
        sd = np.sqrt(np.clip(cov[:, fidelity, fidelity], 1e-12, None))
        return self.y_mean + self.y_sd * mean[:, fidelity], self.y_sd * sd


def fit_multifidelity(
    params_nd: np.ndarray, fidelity_n: np.ndarray, utility_n: np.ndarray, n_fidelities: int
) -> MultiFidelitySurrogate:
    """Fit a MultiTaskGP (tasks = fidelities, every fidelity known to the model) to standardized utilities."""
    import torch
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import MultiTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    utility = np.asarray(utility_n, dtype=np.float64)
    y_mean = float(utility.mean())
    y_sd = float(utility.std(ddof=1)) if len(utility) > 1 else 1.0
    y_sd = y_sd or 1.0
    x = np.concatenate([features(params_nd), np.asarray(fidelity_n, float)[:, None]], axis=1)
    with warnings.catch_warnings(), single_thread(), seeded_torch():  # the task factor starts random
        warnings.simplefilter("ignore")
        model = MultiTaskGP(
            torch.as_tensor(x, dtype=torch.float64),
            torch.as_tensor((utility - y_mean) / y_sd, dtype=torch.float64).unsqueeze(-1),
            task_feature=-1,
            all_tasks=list(range(n_fidelities)),
            outcome_transform=None,
        )
        # On a fitting failure the prior-mode hyperparameters stay (a vague but usable surrogate).
        with contextlib.suppress(ModelFittingError):
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": FIT_MAX_ITER}})
    model.eval()
    return MultiFidelitySurrogate(model, y_mean, y_sd, n_fidelities)


class MFGPUCB(MultiFidelityOptimizer):
    """MF-GP-UCB over (mixture, fidelity) with a multi-task GP (see the module docstring).

    Args:
        delta, beta_scale: the Srinivas beta_t schedule, as in gp-ucb.
        init_fraction: share of the cost budget spent on the space-filling design at the cheapest fidelity
            (at least 2 trials, at most 10).
        n_pool: candidate mixtures scored per proposal on continuous spaces.

    Example:
        >>> opt = MFGPUCB()
        >>> [(params, fidelity)] = opt.ask(fidelity_history, 1)
        >>> opt.recommend(fidelity_history).params      # for the target fidelity
    """

    name = "mf-gp-ucb"

    def __init__(
        self, delta: float = 0.1, beta_scale: float = 0.2, init_fraction: float = 0.4, n_pool: int = 3000
    ) -> None:
        self.delta = delta
        self.beta_scale = beta_scale
        self.init_fraction = init_fraction
        self.n_pool = n_pool

    def ask(self, history: FidelityHistory, n: int) -> list[tuple[np.ndarray, int]]:
        rng = _rng(history, self.name)
        chosen: list[tuple[np.ndarray, int]] = []
        for _ in range(n):
            state = _with_pending(history, chosen)
            proposal = self._design(state, rng) or self._acquire(state, rng)
            if proposal is None:
                break
            chosen.append(proposal)
        return chosen

    def recommend(self, history: FidelityHistory) -> Recommendation:
        h = history.history
        if len(h.done_utility) == 0:
            raise MixAtlasError("no finished trials yet: run the search before asking for a recommendation")
        target = history.fidelities.target_index
        points = np.atleast_2d(h.done_params)
        if history.available_cf is not None:
            rows = [history.space.candidate_index(p) for p in points]
            points = points[[r is not None and history.available_cf[r, target] for r in rows]]
            if not len(points):  # nothing evaluated exists at the target: every target row
                points = history.space.candidates[history.available_cf[:, target]]
        points = np.unique(points, axis=0)
        surrogate = self._fit(history)
        mean, sd = surrogate.predict(points, target)
        best = int(np.argmax(mean))
        return Recommendation(
            params=points[best].copy(),
            mean=float(mean[best]),
            sd=float(sd[best]),
            source=f"posterior-mean maximizer at fidelity {history.fidelities.target}",
        )

    # ----- internals -------------------------------------------------------------------------------------

    def _fit(self, history: FidelityHistory) -> MultiFidelitySurrogate:
        h = history.history
        return fit_multifidelity(
            np.atleast_2d(h.done_params),
            np.asarray(history.done_fidelity, int),
            np.asarray(h.done_utility, float),
            len(history.fidelities.names),
        )

    def _design(self, history: FidelityHistory, rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
        """A space-filling point at the cheapest affordable fidelity while the design is not complete."""
        fids = history.fidelities
        cheapest = int(np.argmin(fids.costs_f))
        n_design = int(np.clip(round(self.init_fraction * history.budget_cost / fids.costs[cheapest]), 2, 10))
        started = np.concatenate([history.done_fidelity, history.pending_fidelity]).astype(int)
        n_done = len(history.history.done_utility)
        if np.sum(started == cheapest) >= n_design and n_done >= 2:
            return None
        if fids.costs[cheapest] > history.remaining + 1e-9:
            return None
        existing = np.concatenate(
            [
                np.atleast_2d(history.history.done_params).reshape(-1, history.space.dim),
                np.atleast_2d(history.history.pending_params).reshape(-1, history.space.dim),
            ]
        )
        if history.space.candidates is not None:
            rows = np.flatnonzero(history.open_pairs()[:, cheapest])
            if not len(rows):
                return None
            pick = maximin_pick(history.space.candidates[rows], existing, 1, rng)[0]
            return history.space.candidates[rows[pick]].copy(), cheapest
        pool = sobol_simplex(history.space, 1024, rng)
        return pool[maximin_pick(pool, existing, 1, rng)[0]].copy(), cheapest

    def _acquire(self, history: FidelityHistory, rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
        """UCB at the target fidelity picks the mixture; information per cost picks its fidelity."""
        space, fids = history.space, history.fidelities
        affordable = fids.costs_f <= history.remaining + 1e-9
        if not affordable.any():
            return None
        if space.candidates is not None:
            open_cf = history.open_pairs()
            rows = np.flatnonzero(open_cf.any(axis=1))
            if not len(rows):
                return None
            points, allowed = space.candidates[rows], open_cf[rows]
        else:
            points = np.concatenate(
                [
                    space.sample(self.n_pool // 2, rng, alpha=1.0),
                    space.sample(self.n_pool - self.n_pool // 2, rng, alpha=0.2),
                ]
            )
            allowed = np.broadcast_to(affordable, (len(points), len(affordable)))
        surrogate = self._fit(history)
        pending = np.atleast_2d(history.history.pending_params).reshape(-1, space.dim)
        surrogate.believe(pending, np.asarray(history.pending_fidelity, int))
        target = fids.target_index
        mean, cov = surrogate.joint(points)
        beta = srinivas_beta(history.history.n_started + 1, len(points), self.delta, self.beta_scale)
        ucb = mean[:, target] + math.sqrt(beta) * np.sqrt(np.clip(cov[:, target, target], 1e-12, None))
        best = int(np.argmax(ucb))
        gain = information_per_cost(cov[best], surrogate.noise_var, target, fids.costs_f)
        gain = np.where(allowed[best], gain, -np.inf)
        return points[best].copy(), int(np.argmax(gain))


def information_per_cost(
    cov_ff: np.ndarray, noise_var: float, target: int, costs_f: np.ndarray
) -> np.ndarray:
    """(F,) mutual information (nats) between f_T(x) and a noisy observation at each fidelity, per unit cost.

    cov_ff: (F, F) posterior covariance of f(x) across fidelities. IG_m = -1/2 log(1 - rho_m^2), where
    rho_m^2 = cov[T, m]^2 / (cov[T, T] (cov[m, m] + noise)).
    """
    var_t = max(float(cov_ff[target, target]), 1e-12)
    rho2 = cov_ff[target] ** 2 / (var_t * (np.diag(cov_ff) + noise_var))
    return -0.5 * np.log(np.clip(1.0 - rho2, 1e-12, 1.0)) / costs_f


def _with_pending(history: FidelityHistory, chosen: list[tuple[np.ndarray, int]]) -> FidelityHistory:
    """`history` with the pairs already chosen in this batch added as pending."""
    if not chosen:
        return history
    h = history.history
    pending = np.vstack([np.atleast_2d(h.pending_params).reshape(-1, h.space.dim), [p for p, _ in chosen]])
    fids = np.concatenate([np.asarray(history.pending_fidelity, int), [f for _, f in chosen]])
    return dataclasses.replace(
        history, history=dataclasses.replace(h, pending_params=pending), pending_fidelity=fids
    )


def _rng(history: FidelityHistory, salt: str) -> np.random.Generator:
    return np.random.default_rng([history.history.seed, history.history.n_started, zlib.crc32(salt.encode())])


MF_METHODS: dict[str, type[MultiFidelityOptimizer]] = {"mf-gp-ucb": MFGPUCB}


def make_mf_optimizer(name: str, **options: object) -> MultiFidelityOptimizer:
    """A multi-fidelity optimizer by registry name."""
    if name not in MF_METHODS:
        raise MixAtlasError(f"unknown multi-fidelity method {name!r}; choose one of {', '.join(MF_METHODS)}")
    try:
        return MF_METHODS[name](**options)
    except TypeError as exc:
        raise MixAtlasError(f"method {name!r}: bad options {sorted(options)} ({exc})") from None
