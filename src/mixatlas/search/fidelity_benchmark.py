"""Pool benchmarks with fidelities: the same mixtures trained at several costs (model sizes, steps).

A fidelity pool is a CSV with one row per (mixture, fidelity): weight columns, a fidelity column and
metric columns. Methods, at an equal total cost `budget_cost` (the sum of the costs of the trials run):
  - a multi-fidelity method (`mf-gp-ucb`) chooses (mixture, fidelity) pairs among the rows;
  - a single-fidelity method `NAME` runs at the target fidelity only, `NAME@FID` at fidelity FID only on
    the mixtures that also exist at the target fidelity, with floor(budget_cost / cost) trials (at most
    the rows there: then less than the budget is spent, and `cost_spent` says so).
Every recommendation is scored at the target fidelity among the target-fidelity rows: regret = best
target utility - the recommendation's, percentile = % of target rows strictly better. `best_so_far[k]`:
mean regret (at the target fidelity) of the truly best mixture evaluated at any fidelity once at most
k + 1 cost units were spent. 95% CIs are Student-t intervals over seeds.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.search.base import History
from mixatlas.search.benchmark import ProgressCallback, t_interval
from mixatlas.search.methods import METHODS, make_optimizer
from mixatlas.search.multifidelity import MF_METHODS, Fidelities, FidelityHistory, make_mf_optimizer
from mixatlas.search.recommend import recommend_history
from mixatlas.space import MixtureSpace

_ROUND = 9  # decimals that identify a mixture across fidelities


@dataclass
class FidelityPool:
    """Mixtures trained at several fidelities.

    Attributes:
        domains: the n domain names.
        fidelities: names, costs, target.
        weights_cn: (c, n) the distinct mixtures (union over fidelities).
        available_cf: (c, F) bool, mixture c was trained at fidelity f.
        metric_names: the m metric names.
        metrics_cfm: (c, F, m) metric values (NaN where absent).
    """

    domains: tuple[str, ...]
    fidelities: Fidelities
    weights_cn: np.ndarray
    available_cf: np.ndarray
    metric_names: tuple[str, ...]
    metrics_cfm: np.ndarray
    source: str = "pool"

    @property
    def space(self) -> MixtureSpace:
        return MixtureSpace.from_domains(list(self.domains), candidates=self.weights_cn)

    def utility(self, target: Target) -> np.ndarray:
        """(c, F) the target's utility (larger is better); NaN where absent or a metric is missing."""
        values = np.zeros(self.available_cf.shape)
        for name, weight in target.weights:
            if name not in self.metric_names:
                raise MixAtlasError(
                    f"{self.source}: no metric column {name!r}; metrics are {', '.join(self.metric_names)}"
                )
            values = values + weight * self.metrics_cfm[:, :, self.metric_names.index(name)]
        values = np.where(self.available_cf, values, np.nan)
        return target.to_utility(values)

    @classmethod
    def from_rows(
        cls,
        domains: list[str],
        fidelities: Fidelities,
        weights_rn: np.ndarray,
        fidelity_r: list[str],
        metric_names: list[str],
        metrics_rm: np.ndarray,
        source: str = "pool",
    ) -> FidelityPool:
        """From one row per (mixture, fidelity); repeated (mixture, fidelity) rows are averaged."""
        weights = np.asarray(weights_rn, dtype=np.float64)
        keys = np.round(weights / weights.sum(axis=1, keepdims=True), _ROUND)
        unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first)  # keep the file's order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        mixture_r = rank[inverse.ravel()]
        n_fid = len(fidelities.names)
        total = np.zeros((len(unique), n_fid, len(metric_names)))
        count = np.zeros_like(total)
        metrics = np.asarray(metrics_rm, dtype=np.float64).reshape(len(weights), len(metric_names))
        for r, name in enumerate(fidelity_r):
            finite = np.isfinite(metrics[r])
            total[mixture_r[r], fidelities.index(name)] += np.where(finite, metrics[r], 0.0)
            count[mixture_r[r], fidelities.index(name)] += finite
        available = np.zeros((len(unique), n_fid), dtype=bool)
        for r, name in enumerate(fidelity_r):
            available[mixture_r[r], fidelities.index(name)] = True
        merged = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        for f, name in enumerate(fidelities.names):
            if not available[:, f].any():
                raise MixAtlasError(f"{source}: no rows at fidelity {name!r}; drop it from --costs")
        return cls(
            tuple(domains),
            fidelities,
            weights[first[order]] / weights[first[order]].sum(1, keepdims=True),
            available,
            tuple(metric_names),
            merged,
            source,
        )

    @classmethod
    def from_csv(
        cls, path: Path | str, weight_cols: str, fidelity_col: str, fidelities: Fidelities
    ) -> FidelityPool:
        """Read a CSV with one row per (mixture, fidelity): columns starting with `weight_cols` (the
        domains), `fidelity_col` (a fidelity name of `fidelities`), every other numeric column a metric."""
        path = Path(path)
        try:
            with path.open(newline="") as handle:
                rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
        except OSError as exc:
            raise MixAtlasError(f"{path}: cannot read the pool CSV ({exc})") from None
        if len(rows) < 2:
            raise MixAtlasError(f"{path}: the pool CSV needs a header and at least one row")
        header = [name.strip() for name in rows[0]]
        if fidelity_col not in header:
            raise MixAtlasError(f"{path}: no fidelity column {fidelity_col!r} (columns: {', '.join(header)})")
        weight_names = [name for name in header if name.startswith(weight_cols)]
        if not weight_names:
            raise MixAtlasError(
                f"{path}: no column starts with {weight_cols!r} (columns: {', '.join(header)})"
            )
        body = [(line, row + [""] * (len(header) - len(row))) for line, row in enumerate(rows[1:], start=2)]
        fid_index = header.index(fidelity_col)
        fidelity_r = []
        for line, row in body:
            name = row[fid_index].strip()
            if name not in fidelities.names:
                raise MixAtlasError(
                    f"{path}:{line}: fidelity {name!r} has no cost;"
                    f" add it to --costs ({', '.join(fidelities.names)})"
                )
            fidelity_r.append(name)
        others = [n for n in header if n not in weight_names and n != fidelity_col]
        metric_names = [n for n in others if all(_is_number(row[header.index(n)]) for _, row in body)]
        weights = np.array(
            [[_cell(path, line, row[header.index(n)], n) for n in weight_names] for line, row in body]
        )
        for (line, _), w in zip(body, weights, strict=True):
            if np.any(w < 0) or abs(w.sum() - 1.0) > 1e-3:
                raise MixAtlasError(
                    f"{path}:{line}: weights must be >= 0 and sum to 1 (sum {w.sum():.6g}); fix the row"
                    " or the --weight-cols prefix"
                )
        metrics = np.array(
            [
                [
                    float(row[header.index(n)]) if row[header.index(n)].strip() else math.nan
                    for n in metric_names
                ]
                for _, row in body
            ]
        ).reshape(len(body), len(metric_names))
        domains = [name[len(weight_cols) :] for name in weight_names]
        return cls.from_rows(
            domains, fidelities, weights, fidelity_r, metric_names, metrics, source=str(path)
        )

    def to_csv(self, path: Path | str, fidelity_col: str = "fidelity", weight_prefix: str = "w_") -> None:
        """Write one row per available (mixture, fidelity)."""
        with Path(path).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([weight_prefix + d for d in self.domains] + [fidelity_col, *self.metric_names])
            for c, w in enumerate(self.weights_cn):
                for f, name in enumerate(self.fidelities.names):
                    if self.available_cf[c, f]:
                        m = self.metrics_cfm[c, f]
                        writer.writerow(
                            [f"{x:.10g}" for x in w]
                            + [name]
                            + ["" if math.isnan(x) else f"{x:.10g}" for x in m]
                        )


def _is_number(text: str) -> bool:
    if not text.strip():
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(path: Path, line: int, text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MixAtlasError(f"{path}:{line}: column {name!r} has {text!r}, not a number") from None
    if not math.isfinite(value):
        raise MixAtlasError(f"{path}:{line}: column {name!r} is {text!r}; weights must be finite numbers")
    return value


def parse_method(name: str, fidelities: Fidelities) -> tuple[str, int | None]:
    """("mf-gp-ucb", None) for a multi-fidelity method; ("gp-ucb", f) for "gp-ucb" (f = target) or
    "gp-ucb@0.5b" (f = that fidelity)."""
    base, _, fid = name.partition("@")
    if base in MF_METHODS:
        if fid:
            raise MixAtlasError(f"--methods {name!r}: a multi-fidelity method chooses its own fidelities")
        return base, None
    if base not in METHODS:
        known = ", ".join([*MF_METHODS, *METHODS])
        raise MixAtlasError(
            f"--methods: unknown {base!r}; choose from {known} (single-fidelity ones take @FID)"
        )
    return base, fidelities.index(fid) if fid else fidelities.target_index


class _Scorer:
    """Target-fidelity truth: utility of every mixture present at the target, its best and percentiles."""

    def __init__(self, pool: FidelityPool, utility_cf: np.ndarray) -> None:
        target = pool.fidelities.target_index
        self.truth_c = utility_cf[:, target]
        self.reference = self.truth_c[np.isfinite(self.truth_c)]
        self.best = float(self.reference.max())
        self.worst_regret = float(self.best - self.reference.min())

    def regret(self, row: int) -> float:
        value = self.truth_c[row]
        return self.worst_regret if not np.isfinite(value) else float(self.best - value)

    def percentile(self, row: int) -> float:
        return 100.0 * float(np.mean(self.reference > self.truth_c[row] + 1e-12))


def simulate_fidelity(
    pool: FidelityPool,
    target: Target,
    method: str,
    budget_cost: float,
    seed: int,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """One method, one seed on a fidelity pool; returns regret, percentile, best_so_far (per cost unit),
    cost spent, trials per fidelity and seconds."""
    fids = pool.fidelities
    base, fidelity = parse_method(method, fids)
    utility_cf = pool.utility(target)
    available = pool.available_cf & np.isfinite(utility_cf)
    scorer = _Scorer(pool, utility_cf)
    space = pool.space
    start = time.perf_counter()
    trials: list[tuple[int, int]] = []  # (row, fidelity)
    if fidelity is None:
        optimizer = make_mf_optimizer(base)
        while True:
            fh = _fidelity_history(space, pool, trials, utility_cf, budget_cost, seed, available)
            proposal = optimizer.ask(fh, 1)
            if not proposal:
                break
            params, f = proposal[0]
            row = space.candidate_index(params)
            if row is None or not available[row, f] or (row, f) in trials:
                raise RuntimeError(f"{method} proposed a pair that is not an open pool row: fidelity {f}")
            trials.append((row, f))
            if on_progress is not None:
                on_progress(method, seed, len(trials))
        fh = _fidelity_history(space, pool, trials, utility_cf, budget_cost, seed, available)
        rec_row = space.candidate_index(recommend_history(base, None, fh).params)
    else:
        rows = np.flatnonzero(available[:, fidelity] & available[:, fids.target_index])
        sub = MixtureSpace.from_domains(list(pool.domains), candidates=pool.weights_cn[rows])
        n_trials = min(math.floor(budget_cost / fids.costs[fidelity] + 1e-9), len(rows))
        if n_trials < 1:
            raise MixAtlasError(
                f"--budget-cost {budget_cost:g} buys no trial at fidelity {fids.names[fidelity]}"
            )
        optimizer = make_optimizer(base)
        done: list[int] = []  # indices into rows
        while len(done) < n_trials:
            params = np.asarray([sub.candidates[i] for i in done]).reshape(-1, sub.dim)
            history = History(
                sub, params, utility_cf[rows[done], fidelity], np.empty((0, sub.dim)), n_trials, seed
            )
            local = sub.candidate_index(optimizer.ask(history, 1)[0])
            if local is None:
                raise RuntimeError(f"{method} proposed a mixture that is not a pool row")
            done.append(local)
            trials.append((int(rows[local]), fidelity))
            if on_progress is not None:
                on_progress(method, seed, len(trials))
        params = np.asarray([sub.candidates[i] for i in done])
        history = History(
            sub, params, utility_cf[rows[done], fidelity], np.empty((0, sub.dim)), n_trials, seed
        )
        local = sub.candidate_index(recommend_history(base, None, history).params)
        rec_row = None if local is None else int(rows[local])
    if rec_row is None:
        raise RuntimeError(f"{method} recommended a mixture that is not a pool row")
    spent = float(sum(fids.costs[f] for _, f in trials))
    if spent > budget_cost + 1e-9:
        raise RuntimeError(f"{method} spent {spent:g} > budget {budget_cost:g}")
    return {
        "regret": scorer.regret(rec_row),
        "percentile": scorer.percentile(rec_row),
        "best_so_far": _cost_curve(trials, fids, scorer, budget_cost),
        "cost_spent": spent,
        "trials_per_fidelity": [sum(1 for _, f in trials if f == i) for i in range(len(fids.names))],
        "seconds": time.perf_counter() - start,
    }


def _fidelity_history(
    space: MixtureSpace,
    pool: FidelityPool,
    trials: list[tuple[int, int]],
    utility_cf: np.ndarray,
    budget_cost: float,
    seed: int,
    available_cf: np.ndarray,
) -> FidelityHistory:
    rows = np.asarray([r for r, _ in trials], dtype=int)
    fids = np.asarray([f for _, f in trials], dtype=int)
    params = pool.weights_cn[rows].reshape(-1, space.dim)
    history = History(space, params, utility_cf[rows, fids], np.empty((0, space.dim)), len(trials), seed)
    return FidelityHistory(history, fids, np.empty(0, dtype=int), pool.fidelities, budget_cost, available_cf)


def _cost_curve(
    trials: list[tuple[int, int]], fids: Fidelities, scorer: _Scorer, budget_cost: float
) -> list[float]:
    """Regret at the target fidelity of the best mixture evaluated (any fidelity) within k + 1 cost units."""
    curve = np.full(math.ceil(budget_cost), scorer.worst_regret)
    spent, best = 0.0, scorer.worst_regret
    for row, f in trials:
        spent += fids.costs[f]
        best = min(best, scorer.regret(row))
        curve[max(0, math.ceil(spent - 1e-9) - 1) :] = best
    return curve.tolist()


def run_fidelity_benchmark(
    pool: FidelityPool,
    target: Target,
    methods: list[str],
    budget_cost: float,
    seeds: int | list[int],
    name: str = "pool",
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Each method once per seed at equal total cost; the JSON shape of `run_benchmark` plus fidelity keys.

    Returns {"problem", "budget", "budget_unit": "cost", "seeds", "batch", "ci", "fidelities",
    "methods": {NAME: {"regret_mean", "regret_ci95", "percentile_mean", "percentile_ci95", "best_so_far",
    "regret_per_seed", "seconds_per_run", "cost_spent_mean", "trials_per_fidelity"}}}.
    """
    if not budget_cost > 0:
        raise MixAtlasError(f"--budget-cost {budget_cost}: give a positive total cost")
    if isinstance(seeds, int) and seeds < 1:
        raise MixAtlasError(f"--seeds {seeds}: give at least 1 seed")
    for method in methods:
        parse_method(method, pool.fidelities)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    out: dict = {
        "problem": name,
        "budget": budget_cost,
        "budget_unit": "cost",
        "seeds": len(seed_list),
        "batch": 1,
        "ci": "95% Student-t interval over seeds",
        "target": target.spec,
        "fidelities": pool.fidelities.to_dict(),
        "methods": {},
    }
    for method in methods:
        runs = [simulate_fidelity(pool, target, method, budget_cost, seed, on_progress) for seed in seed_list]
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
            "cost_spent_mean": float(np.mean([r["cost_spent"] for r in runs])),
            "trials_per_fidelity": dict(
                zip(
                    pool.fidelities.names,
                    np.mean([r["trials_per_fidelity"] for r in runs], axis=0).tolist(),
                    strict=True,
                )
            ),
        }
    return out
