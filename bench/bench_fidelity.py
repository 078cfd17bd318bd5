"""Multi-fidelity vs single-fidelity search on the public multi-size runs (mixinglaws, Ye et al. 2024).

The same 26 (5Mix) / 20 (RedPajama) mixtures were trained at 70M, 160M, 305M and 410M parameters and
checkpointed along the way, so model size and training steps are both fidelities. The target fidelity
is the largest model at its final step; a trial's cost is proportional to parameters x steps. Every
method gets the same total cost; recommendations are scored among the target-fidelity mixtures.

    .venv/bin/python bench/bench_fidelity.py --seeds 10        # table + bench/out/fidelity.json

Writes the fidelity pools as CSVs under bench/out/ (so `mixatlas bench pool ... --fidelity-col` can
replay any of them) and prints one table per problem: % of target mixtures better than the
recommendation and regret, mean and 95% t-CI over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mixatlas.objectives.base import Target
from mixatlas.objectives.public_runs import mixinglaws_pool
from mixatlas.search.fidelity_benchmark import FidelityPool, run_fidelity_benchmark
from mixatlas.search.multifidelity import Fidelities

OUT = Path(__file__).resolve().parent / "out"
SIZES_M = {"70M": 70, "160M": 160, "305M": 305, "410M": 410}


def fidelity_pool(family: str, levels: list[tuple[str, str]], target: str) -> FidelityPool:
    """Pool of `family` at (size, step) levels; cost = params x steps relative to the cheapest level."""
    names, costs, weights, fidelity, metrics, metric_names, domains = [], [], [], [], [], None, None
    raw_costs = [SIZES_M[size] * int(step) for size, step in levels]
    for (size, step), raw in zip(levels, raw_costs, strict=True):
        pool = mixinglaws_pool(family, size, step=step)
        name = _level_name(size, step)
        names.append(name)
        costs.append(round(raw / min(raw_costs), 2))
        metric_names = metric_names or list(pool.metric_names)
        domains = domains or list(pool.objective.domains)
        common = [pool.metric_names.index(m) for m in metric_names]
        weights.append(pool.objective.weights_cn)
        metrics.append(pool.objective.metrics_cm[:, common])
        fidelity += [name] * len(pool.objective.weights_cn)
    fids = Fidelities(tuple(names), tuple(costs), target)
    return FidelityPool.from_rows(
        domains,
        fids,
        np.concatenate(weights),
        fidelity,
        metric_names,
        np.concatenate(metrics),
        source=f"mixinglaws/{family}",
    )


def _level_name(size: str, step: str) -> str:
    """ "410M" at the final step (30k), "410M-10k" for a partial run."""
    return size if step == "30000" else f"{size}-{int(step) // 1000}k"


# name -> (family, (size, step) levels, target fidelity, targets). Targets: the weighted average and the
# validation domains where the smallest model ranks mixtures least like the largest one.
PROBLEMS = {
    # sizes at the final step: the largest model is the target
    "5mix-sizes": (
        "5Mix",
        [("70M", "30000"), ("160M", "30000"), ("305M", "30000"), ("410M", "30000")],
        "410M",
        ["valid_avg", "Pile-CC", "Wikipedia_en", "PhilPapers"],
    ),
    # steps of the largest model plus the smallest model: partial runs as fidelities
    "5mix-steps": (
        "5Mix",
        [("70M", "30000"), ("410M", "10000"), ("410M", "20000"), ("410M", "30000")],
        "410M",
        ["valid_avg", "Pile-CC", "Wikipedia_en", "PhilPapers"],
    ),
    "redpajama-sizes": (
        "RedPajama",
        [("70M", "30000"), ("160M", "30000"), ("305M", "30000"), ("410M", "30000")],
        "410M",
        ["valid_avg", "Ubuntu_IRC", "YoutubeSubtitles", "OpenSubtitles"],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--budget-targets", type=float, default=3.0, help="total cost = this many target-fidelity trials"
    )
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--json", default="fidelity.json", help="file name under bench/out/")
    parser.add_argument("--targets", default=None, help="comma-separated metrics (default: per problem)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.problems.split(","):
        family, levels, target_fid, targets = PROBLEMS[name]
        pool = fidelity_pool(family, levels, target_fid)
        pool.to_csv(OUT / f"fidelity-{name}.csv", fidelity_col="fidelity")
        budget = args.budget_targets * pool.fidelities.costs[pool.fidelities.target_index]
        cheapest = pool.fidelities.names[int(np.argmin(pool.fidelities.costs))]
        methods = ["mf-gp-ucb", "gp-ucb", f"gp-ucb@{cheapest}", f"random@{cheapest}"]
        for metric in args.targets.split(",") if args.targets else targets:
            target = Target.parse(metric, minimize=True)
            key = f"{name}:{metric}"
            results[key] = run_fidelity_benchmark(pool, target, methods, budget, args.seeds, name=key)
            print_table(results[key])
    out = OUT / args.json
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def print_table(result: dict) -> None:
    fids = result["fidelities"]
    print(
        f"\n{result['problem']}: budget cost {result['budget']:g} ({result['seeds']} seeds, 95% t-CI); "
        f"costs {dict(zip(fids['names'], fids['costs'], strict=True))}, target {fids['target']}"
    )
    print(
        f"{'method':<18}{'% better':>10}{'95% CI':>16}{'regret':>10}{'95% CI':>20}{'cost':>7}"
        "  trials/fidelity"
    )
    for method, row in result["methods"].items():
        lo, hi = row["percentile_ci95"]
        rlo, rhi = row["regret_ci95"]
        trials = " ".join(f"{v:.1f}" for v in row["trials_per_fidelity"].values())
        print(
            f"{method:<18}{row['percentile_mean']:>10.1f}{f'[{lo:.1f}, {hi:.1f}]':>16}"
            f"{row['regret_mean']:>10.4f}{f'[{rlo:.4f}, {rhi:.4f}]':>20}"
            f"{row['cost_spent_mean']:>7.1f}  {trials}"
        )


if __name__ == "__main__":
    main()
