"""Search benchmarks: optimizer quality at equal budget (synthetic families, public pools) and overhead.

Runs every benchmark of `mixatlas bench` once, prints the tables and writes one JSON
(default bench/out/search.json). The acceptance figures: joint 50-cell synthetic, budget 48, 10 seeds
(gp-ucb regret below regmix and random); public pools at budget = 30% of the pool (gp-ucb percentile no
worse than regmix); `ask` n=4 with 200 finished trials <= 10 s.

    .venv/bin/python bench/bench_search.py [--seeds 10] [--quick] [--skip synthetic,public,overhead]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

QUALITY_METHODS = ["gp-ucb", "regmix", "random", "uniform", "natural"]
# (space mode, budget): joint is the acceptance problem; the per-axis spaces get the paper's scale.
SYNTHETIC = [("joint", 48), ("task", 20), ("concept", 30), ("factored", 30)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="joint synthetic only at 3 seeds, 3 pools")
    parser.add_argument("--skip", default="", help="comma list of synthetic, public, overhead")
    parser.add_argument("--json", type=Path, default=Path("bench/out/search.json"))
    args = parser.parse_args()

    from mixatlas.cli.bench_cmds import (
        print_overhead_table,
        print_public_summary,
        print_result_table,
    )
    from mixatlas.console import console, progress
    from mixatlas.objectives.public_runs import AVERAGE_METRIC, PUBLIC_PROBLEMS, public_pool
    from mixatlas.search.benchmark import measure_overhead, pool_problem, run_benchmark, synthetic_problem

    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    seeds = 3 if args.quick else args.seeds
    out: dict = {"seeds": seeds, "synthetic": {}, "public": {}}
    start = time.perf_counter()

    def run(problem, budget: int, methods: list[str]) -> dict:
        with progress() as bar:
            task = bar.add_task(problem.name, total=len(methods) * seeds * budget)
            return run_benchmark(
                lambda: problem,
                methods,
                budget,
                seeds,
                on_progress=lambda m, s, n: bar.update(
                    task, advance=1, description=f"{problem.name} {m} {s}"
                ),
            )

    if "synthetic" not in skip:
        for mode, budget in SYNTHETIC[:1] if args.quick else SYNTHETIC:
            problem = synthetic_problem(mode)
            out["synthetic"][mode] = run(problem, budget, QUALITY_METHODS)
            print_result_table(out["synthetic"][mode])
    if "public" not in skip:
        names = list(PUBLIC_PROBLEMS)[:3] if args.quick else list(PUBLIC_PROBLEMS)
        for name in names:
            problem = pool_problem(public_pool(name), AVERAGE_METRIC, minimize=True, name=name)
            budget = max(3, round(0.3 * len(problem.space.candidates)))
            out["public"][name] = run(problem, budget, QUALITY_METHODS)
            out["public"][name]["pool_size"] = len(problem.space.candidates)
            print_result_table(out["public"][name])
        print_public_summary(out["public"], QUALITY_METHODS)
    if "overhead" not in skip:
        out["overhead"] = measure_overhead(["gp-ucb", "regmix", "random"], n_done=200)
        print_overhead_table(out["overhead"])
    out["wall_s"] = time.perf_counter() - start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    console.print(f"wrote {args.json} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
