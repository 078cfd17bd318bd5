"""Search benchmarks: optimizer quality at equal budget (noisy analytic problems, synthetic families, every
public pool) and `ask` overhead.

Runs each benchmark once, prints the tables and writes one JSON (default bench/out/search.json):
  - noisy: analytic problems with known truth and noise sd 0.05 (task axis, 24 runs; joint 50 cells, 48
    runs); regret of each method's recommendation, and for gp-ucb the recommendation rules on the same
    trials (posterior LCB, posterior-mean argmax, best observed) against the best mixture it evaluated;
  - synthetic: the joint 50-cell family at its default noise, budget 48;
  - public: every public table with >= 10 trained mixtures, budget 30% of the pool, target valid_avg;
    % of the pool better than the recommendation, and for gp-ucb the same rule comparison;
  - overhead: seconds per `ask` (n = 1, 4) in the joint 50-cell space after 200 trials.

    .venv/bin/python bench/bench_search.py [--seeds 10] [--heavy-seeds 3] [--quick]
        [--skip noisy,synthetic,public,overhead]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

QUALITY_METHODS = ["gp-ucb", "regmix", "random", "mixing-law", "uniform", "natural"]
NOISY = [("task", 24, 0.05), ("joint", 48, 0.05)]  # (space mode, budget, noise sd)
RULE_LABELS = {"lcb": "posterior LCB", "mean": "posterior-mean argmax", "observed": "best observed"}


def print_rule_table(title: str, results: dict, key: str) -> None:
    """gp-ucb's recommendation rules on the same trials: `key` ("regret" or "percentile") mean and 95%
    CI per problem, with the best mixture the search evaluated (regret) for reference."""
    from rich.table import Table

    from mixatlas.console import console

    table = Table(title=title)
    table.add_column("problem")
    for label in RULE_LABELS.values():
        table.add_column(label, justify="right")
    if key == "regret":
        table.add_column("best evaluated", justify="right")
    for name, result in results.items():
        gp = result["methods"].get("gp-ucb")
        if gp is None or "rules" not in gp:
            continue
        cells = []
        for rule in RULE_LABELS:
            mean, lo, hi = gp["rules"][rule][key]
            cells.append(f"{mean:.4g} [{lo:.3g}, {hi:.3g}]")
        if key == "regret":
            cells.append(f"{gp['best_evaluated_regret_mean']:.4g}")
        table.add_row(name, *cells)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--heavy-seeds", type=int, default=3, help="seeds for the 50-cell problems (0: skip them)"
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds, task axis and 3 pools only")
    parser.add_argument("--skip", default="", help="comma list of noisy, synthetic, public, overhead")
    parser.add_argument("--json", type=Path, default=Path("bench/out/search.json"))
    args = parser.parse_args()

    from mixatlas.cli.bench_cmds import print_overhead_table, print_public_summary, print_result_table
    from mixatlas.console import console, progress
    from mixatlas.objectives.public_runs import AVERAGE_METRIC, MIN_POOL_ROWS, public_pool, public_problems
    from mixatlas.search.benchmark import measure_overhead, pool_problem, run_benchmark, synthetic_problem

    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    seeds = 2 if args.quick else args.seeds
    heavy = 2 if args.quick else args.heavy_seeds
    out: dict = {"seeds": seeds, "heavy_seeds": heavy, "noisy": {}, "synthetic": {}, "public": {}}
    start = time.perf_counter()

    def run(problem, budget: int, methods: list[str], n_seeds: int) -> dict:
        with progress() as bar:
            task = bar.add_task(problem.name, total=len(methods) * n_seeds * budget)
            return run_benchmark(
                lambda: problem,
                methods,
                budget,
                n_seeds,
                on_progress=lambda m, s, n: bar.update(
                    task, advance=1, description=f"{problem.name} {m} {s}"
                ),
            )

    def save() -> None:
        out["wall_s"] = time.perf_counter() - start
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))

    if "noisy" not in skip:
        for mode, budget, noise in NOISY[:1] if args.quick else NOISY:
            problem = synthetic_problem(mode, noise=noise)
            problem.name = f"{mode} noise {noise:g}"
            n_seeds = heavy if mode == "joint" else seeds
            if n_seeds < 1:
                continue
            out["noisy"][problem.name] = run(problem, budget, QUALITY_METHODS[:4], n_seeds)
            print_result_table(out["noisy"][problem.name])
            save()
        print_rule_table("noisy analytic: regret of gp-ucb's rules on its own trials", out["noisy"], "regret")
    if "synthetic" not in skip and not args.quick and heavy > 0:
        problem = synthetic_problem("joint")
        out["synthetic"]["joint"] = run(problem, 48, QUALITY_METHODS, heavy)
        print_result_table(out["synthetic"]["joint"])
        save()
    if "public" not in skip:
        tables = public_problems()
        names = list(tables)
        out["public_skipped"] = {}
        for name in names:
            problem = pool_problem(public_pool(name), AVERAGE_METRIC, minimize=True, name=name)
            size = len(problem.space.candidates)
            if size < MIN_POOL_ROWS:
                out["public_skipped"][name] = f"{size} trained mixtures (< {MIN_POOL_ROWS})"
                continue
            if args.quick and len(out["public"]) >= 3:
                break
            budget = max(3, round(0.3 * size))
            out["public"][name] = run(problem, budget, QUALITY_METHODS, seeds)
            out["public"][name]["pool_size"] = size
            print_result_table(out["public"][name])
            save()
        print_public_summary(out["public"], QUALITY_METHODS)
        print_rule_table("public pools: % of the pool better, gp-ucb's rules", out["public"], "percentile")
        console.print(f"skipped (too small): {out['public_skipped']}")
    if "overhead" not in skip:
        out["overhead"] = measure_overhead(["gp-ucb", "regmix", "random"], n_done=200)
        print_overhead_table(out["overhead"])
    save()
    console.print(f"wrote {args.json} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
