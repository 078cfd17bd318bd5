"""Optimizer-quality and overhead benchmarks: every method, equal budget, several seeds, same problem.

The search loop is simulated with `History` objects (no storage): budget = objective evaluations,
initial design included; with `batch` > 1 that many trials stay in flight (pending) and finish oldest
first. Scores are those of each method's *recommended* mixture, measured without observation noise:
  - regret: best achievable utility - utility of the recommendation (synthetic: vs the SLSQP optimum;
    pool: vs the best pool row);
  - percentile: % of a reference set strictly better than the recommendation (pool: the pool itself;
    synthetic: a large flat-Dirichlet sample of the feasible set).
95% confidence intervals are Student-t intervals over seeds (mean +- t_{0.975, S-1} sd / sqrt(S)); the
percentile interval is clipped to [0, 100].
`best_so_far[i]`: mean regret of the truly best mixture evaluated after i + 1 evaluations;
`best_evaluated_regret_mean` its final value (the best recommendation any rule could make from the trials).
For gp-ucb, `rules` scores each recommendation rule ("lcb", "mean": the posterior-mean maximizer,
"observed": the best observed trial) on the same trials: regret and percentile, (mean, lo, hi) over seeds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Objective, Target, TrialContext
from mixatlas.search.base import History
from mixatlas.search.methods import make_optimizer
from mixatlas.search.recommend import recommend_history, recommend_history_by_rule
from mixatlas.space import MixtureSpace

ProgressCallback = Callable[[str, int, int], None]  # (method, seed, evaluations done)


@dataclass
class BenchmarkProblem:
    """A problem with a known answer key.

    Attributes:
        name: label for tables and JSON.
        space, objective, target: what the methods search, evaluate and optimize.
        true_utility: (n, d) params -> (n,) noiseless utility (larger is better).
        best_utility: the best achievable utility.
        reference_utility: (r,) utilities the percentile is computed against.
    """

    name: str
    space: MixtureSpace
    objective: Objective
    target: Target
    true_utility: Callable[[np.ndarray], np.ndarray]
    best_utility: float
    reference_utility: np.ndarray

    def regret(self, params_nd: np.ndarray) -> np.ndarray:
        return self.best_utility - self.true_utility(np.atleast_2d(params_nd))

    def percentile(self, params_d: np.ndarray) -> float:
        """% of the reference set strictly better than `params_d`."""
        utility = float(self.true_utility(np.atleast_2d(params_d))[0])
        return 100.0 * float(np.mean(self.reference_utility > utility + 1e-12))


def synthetic_problem(
    space_mode: str, seed: int = 0, noise: float | None = None, n_reference: int = 10_000, k: int = 10
) -> BenchmarkProblem:
    """BenchmarkProblem of a synthetic family member with k concepts (target: minimize "loss")."""
    from mixatlas.objectives.synthetic import make_synthetic

    space, objective = make_synthetic(space_mode, seed=seed, noise=noise, k=k)
    reference = space.sample(n_reference, np.random.default_rng([seed, 5]), alpha=1.0)
    target = Target.parse(objective.metric, minimize=True)
    return BenchmarkProblem(
        name=f"synthetic-{space_mode}",
        space=space,
        objective=objective,
        target=target,
        true_utility=lambda params: target.to_utility(objective.loss_of_params(params)),
        best_utility=target.to_utility(objective.optimum_value()),
        reference_utility=target.to_utility(objective.loss_of_params(reference)),
    )


def pool_problem(pool: object, target: str, minimize: bool, name: str = "pool") -> BenchmarkProblem:
    """BenchmarkProblem of a `PoolProblem` and a target spec (rows missing the target are dropped)."""
    pool = pool.with_target(target)
    parsed = Target.parse(target, minimize=minimize)
    utility = parsed.to_utility(pool.target_values(parsed))
    space = pool.space

    def true_utility(params_nd: np.ndarray) -> np.ndarray:
        rows = [space.candidate_index(p) for p in params_nd]
        if any(r is None for r in rows):
            raise MixAtlasError("a method returned a mixture that is not a pool row")
        return utility[np.asarray(rows)]

    return BenchmarkProblem(name, space, pool.objective, parsed, true_utility, float(utility.max()), utility)


def simulate(
    problem: BenchmarkProblem,
    method: str,
    budget: int,
    seed: int,
    batch: int = 1,
    options: dict | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """One method, one seed: run the loop for `budget` evaluations; returns regret, percentile, the
    best-so-far regret curve and the wall time."""
    optimizer = make_optimizer(method, **(options or {}))
    space, d = problem.space, problem.space.dim
    done_params, done_utility, pending = np.empty((0, d)), np.empty(0), []
    start = time.perf_counter()
    trial_dir = Path(tempfile.gettempdir())
    curve = []
    while len(done_utility) < budget:
        history = History(space, done_params, done_utility, np.array(pending).reshape(-1, d), budget, seed)
        want = min(batch - len(pending), budget - len(done_utility) - len(pending))
        if want > 0:
            for params in optimizer.ask(history, want):
                if not space.is_feasible(params):
                    raise RuntimeError(f"{method} proposed an infeasible mixture: {np.round(params, 4)}")
                pending.append(np.asarray(params, dtype=np.float64))
        params = pending.pop(0)
        ctx = TrialContext(trial_id=len(done_utility), trial_dir=trial_dir, seed=seed)
        result = problem.objective.evaluate(space.to_mixture(params), ctx)
        done_params = np.vstack([done_params, params])
        done_utility = np.append(done_utility, problem.target.utility(result.metrics))
        curve.append(float(problem.regret(done_params).min()))
        if on_progress is not None:
            on_progress(method, seed, len(done_utility))
    history = History(space, done_params, done_utility, np.empty((0, d)), budget, seed)
    recommendation = recommend_history(method, options, history)
    if not space.is_feasible(recommendation.params):
        raise RuntimeError(f"{method} recommended an infeasible mixture")
    out = {
        "regret": float(problem.regret(recommendation.params)[0]),
        "percentile": problem.percentile(recommendation.params),
        "best_so_far": curve,
        "seconds": time.perf_counter() - start,
        "best_evaluated_regret": curve[-1],
    }
    picks = {rule: rec.params for rule, rec in recommend_history_by_rule(method, options, history).items()}
    if picks:  # rules compared on the same trials (gp-ucb)
        out["rules"] = {
            rule: {"regret": float(problem.regret(p)[0]), "percentile": problem.percentile(p)}
            for rule, p in picks.items()
        }
    return out


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): 95% Student-t interval of the mean over seeds (degenerate for one seed)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def run_benchmark(
    problem_factory: Callable[[], BenchmarkProblem],
    methods: list[str],
    budget: int,
    seeds: int | list[int],
    batch: int = 1,
    method_options: dict[str, dict] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Run each method once per seed on the same problem with equal budget.

    Returns {"problem", "budget", "seeds", "batch", "ci", "methods": {NAME: {"regret_mean",
    "regret_ci95", "percentile_mean", "percentile_ci95", "best_so_far", "regret_per_seed",
    "seconds_per_run"}}}.
    """
    problem = problem_factory()
    if budget < 1:
        raise MixAtlasError("benchmark budget must be at least 1 evaluation")
    if batch < 1:
        raise MixAtlasError(f"--batch {batch}: trials in flight must be at least 1")
    if isinstance(seeds, int) and seeds < 1:
        raise MixAtlasError(f"--seeds {seeds}: give at least 1 seed")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    out: dict = {"problem": problem.name, "budget": budget, "seeds": len(seed_list), "batch": batch}
    out["ci"] = "95% Student-t interval over seeds"
    out["methods"] = {}
    for method in methods:
        runs = [
            simulate(problem, method, budget, seed, batch, (method_options or {}).get(method), on_progress)
            for seed in seed_list
        ]
        regret = t_interval([r["regret"] for r in runs])
        percentile = t_interval([r["percentile"] for r in runs])
        out["methods"][method] = {
            "regret_mean": regret[0],
            "regret_ci95": [regret[1], regret[2]],
            "percentile_mean": percentile[0],
            "percentile_ci95": [max(0.0, percentile[1]), min(100.0, percentile[2])],
            "best_so_far": np.mean([r["best_so_far"] for r in runs], axis=0).tolist(),
            "regret_per_seed": [r["regret"] for r in runs],
            "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
            "best_evaluated_regret_mean": float(np.mean([r["best_evaluated_regret"] for r in runs])),
        }
        if "rules" in runs[0]:
            out["methods"][method]["rules"] = {
                rule: {
                    key: list(t_interval([r["rules"][rule][key] for r in runs]))
                    for key in ("regret", "percentile")
                }
                for rule in runs[0]["rules"]
            }
    return out


def measure_overhead(
    methods: list[str], n_done: int = 200, batch_sizes: tuple[int, ...] = (1, 4), seed: int = 0
) -> dict:
    """Seconds per `ask` in the joint 50-cell synthetic space with `n_done` finished trials.

    Returns {"n_done", "dim", "methods": {NAME: {"ask_n1_s", "ask_n1_cpu_s", "ask_n4_s", ...}}}: wall
    seconds and this process's CPU seconds (the fair figure on a shared machine).
    """
    from mixatlas.objectives.synthetic import make_synthetic

    space, objective = make_synthetic("joint", seed=seed)
    rng = np.random.default_rng(seed)
    params = space.sample(n_done, rng)
    utility = -objective.loss_of_params(params) + objective.noise * rng.standard_normal(n_done)
    history = History(space, params, utility, np.empty((0, space.dim)), n_done + 50, seed)
    out: dict = {"n_done": n_done, "dim": space.dim, "methods": {}}
    for method in methods:
        timings = {}
        for n in batch_sizes:
            optimizer = make_optimizer(method)  # fresh: every timing includes fitting the surrogate
            start, cpu = time.perf_counter(), time.process_time()
            proposals = optimizer.ask(history, n)
            timings[f"ask_n{n}_s"] = time.perf_counter() - start
            timings[f"ask_n{n}_cpu_s"] = time.process_time() - cpu
            if len(proposals) != n or not all(space.is_feasible(p) for p in proposals):
                raise RuntimeError(f"{method} returned {len(proposals)} proposals or an infeasible one")
        out["methods"][method] = timings
    return out
