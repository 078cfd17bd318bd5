"""CLI commands of the benchmark programs (`mixatlas bench ...`): optimizer quality and overhead."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mixatlas.console import console, progress
from mixatlas.errors import MixAtlasError
from mixatlas.search.methods import METHODS
from mixatlas.space.parametrization import MODES

bench_app = typer.Typer(help="Benchmark the search methods at equal budget (pool, synthetic, public runs).")

METHODS_HELP = f"comma-separated methods: {', '.join(METHODS)}"
DEFAULT_SPACE = "joint"
SPACE_HELP = " | ".join(dict.fromkeys((DEFAULT_SPACE, *MODES)))  # the default first, then registry order


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.add_typer(bench_app, name="bench")


def _methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise MixAtlasError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}")
    return names


def _run(problem_factory: object, methods: list[str], budget: int, seeds: int, batch: int) -> dict:
    """run_benchmark with a progress bar over all evaluations."""
    from mixatlas.search.benchmark import run_benchmark

    with progress() as bar:
        task = bar.add_task("benchmark", total=len(methods) * seeds * budget)

        def advance(method: str, seed: int, n_done: int) -> None:
            bar.update(task, advance=1, description=f"{method} seed {seed}")

        return run_benchmark(problem_factory, methods, budget, seeds, batch=batch, on_progress=advance)


def print_result_table(result: dict) -> None:
    """One benchmark's table: regret and percentile (mean, 95% CI) and seconds per run per method."""
    from rich.table import Table

    table = Table(title=f"{result['problem']}: budget {result['budget']}, {result['seeds']} seeds (95% t-CI)")
    for column in ("method", "regret (mean)", "regret 95% CI", "% pool/ref better", "95% CI", "s/run"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, row in result["methods"].items():
        table.add_row(
            name,
            f"{row['regret_mean']:.4g}",
            f"[{row['regret_ci95'][0]:.4g}, {row['regret_ci95'][1]:.4g}]",
            f"{row['percentile_mean']:.1f}",
            f"[{row['percentile_ci95'][0]:.1f}, {row['percentile_ci95'][1]:.1f}]",
            f"{row['seconds_per_run']:.1f}",
        )
    console.print(table)


def _write(result: dict, json_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1))
        console.print(f"wrote {json_path}")


@bench_app.command("pool")
def bench_pool(
    csv_path: Path = typer.Argument(..., help="pool CSV: one trained mixture per row"),
    weight_cols: str = typer.Option(..., "--weight-cols", help="prefix of the weight columns"),
    target: str = typer.Option(..., "--target", help="metric column (or 'w*a + w*b') to optimize"),
    minimize: bool = typer.Option(False, "--minimize", help="smaller target is better (losses)"),
    budget: int = typer.Option(10, "--budget", help="objective evaluations per run, initial design included"),
    seeds: int = typer.Option(10, "--seeds"),
    methods: str = typer.Option("gp-ucb,regmix,random", "--methods", help=METHODS_HELP),
    batch: int = typer.Option(1, "--batch", help="trials in flight"),
    json_path: Path | None = typer.Option(None, "--json", help="write the results JSON here"),
    fidelity_col: str | None = typer.Option(
        None, "--fidelity-col", help="column naming each row's fidelity (rows = mixture x fidelity)"
    ),
    costs: str | None = typer.Option(None, "--costs", help="cost per fidelity, e.g. 0.5b=1,3b=6,7b=14"),
    target_fidelity: str | None = typer.Option(None, "--target-fidelity", help="fidelity to recommend for"),
    budget_cost: float | None = typer.Option(None, "--budget-cost", help="total cost of the trials per run"),
) -> None:
    """Run each method S times on a pool of trained mixtures; score the recommended row.

    With --fidelity-col: mf-gp-ucb picks (mixture, fidelity); NAME runs at the target fidelity,
    NAME@FID at FID only; every recommendation is scored among the target-fidelity rows."""
    from mixatlas.objectives.pool import PoolProblem
    from mixatlas.search.benchmark import pool_problem

    if fidelity_col is not None:
        result = _run_fidelity(
            csv_path, weight_cols, target, minimize, fidelity_col, costs, target_fidelity, budget_cost,
            seeds, methods,
        )
        print_result_table(result)
        _write(result, json_path)
        return
    pool = PoolProblem.from_csv(csv_path, weight_cols=weight_cols)
    problem = pool_problem(pool, target, minimize, name=csv_path.stem)
    if budget > len(problem.space.candidates):
        raise MixAtlasError(f"--budget {budget} exceeds the pool size {len(problem.space.candidates)}")
    result = _run(lambda: problem, _methods(methods), budget, seeds, batch)
    print_result_table(result)
    _write(result, json_path)


def _run_fidelity(
    csv_path: Path, weight_cols: str, target: str, minimize: bool, fidelity_col: str, costs: str | None,
    target_fidelity: str | None, budget_cost: float | None, seeds: int, methods: str,
) -> dict:
    """The fidelity pool benchmark (`mixatlas.search.fidelity_benchmark`) with a progress bar."""
    from mixatlas.objectives.base import Target
    from mixatlas.search.fidelity_benchmark import FidelityPool, run_fidelity_benchmark
    from mixatlas.search.multifidelity import Fidelities

    if costs is None or target_fidelity is None or budget_cost is None:
        raise MixAtlasError(
            "--fidelity-col needs --costs NAME=COST,..., --target-fidelity NAME and --budget-cost"
        )
    fidelities = Fidelities.parse(costs, target_fidelity)
    pool = FidelityPool.from_csv(csv_path, weight_cols, fidelity_col, fidelities)
    names = [name.strip() for name in methods.split(",") if name.strip()]
    with progress() as bar:
        task = bar.add_task("benchmark", total=None)

        def advance(method: str, seed: int, n_done: int) -> None:
            bar.update(task, advance=1, description=f"{method} seed {seed}")

        return run_fidelity_benchmark(
            pool, Target.parse(target, minimize=minimize), names, budget_cost, seeds, csv_path.stem, advance
        )


@bench_app.command("synthetic")
def bench_synthetic(
    space: str = typer.Option(DEFAULT_SPACE, "--space", help=SPACE_HELP),
    budget: int = typer.Option(48, "--budget"),
    seeds: int = typer.Option(10, "--seeds"),
    methods: str = typer.Option("gp-ucb,regmix,random", "--methods", help=METHODS_HELP),
    batch: int = typer.Option(1, "--batch", help="trials in flight"),
    noise: float | None = typer.Option(None, "--noise", help="observation noise sd (default 0.01)"),
    problem_seed: int = typer.Option(0, "--problem-seed", help="which member of the synthetic family"),
    json_path: Path | None = typer.Option(None, "--json"),
) -> None:
    """Run each method S times on a synthetic family member; regret vs the known optimum."""
    from mixatlas.search.benchmark import synthetic_problem

    chosen = _methods(methods)
    with console.status("building the synthetic problem (optimum by multi-start SLSQP)"):
        problem = synthetic_problem(space, seed=problem_seed, noise=noise)
    result = _run(lambda: problem, chosen, budget, seeds, batch)
    print_result_table(result)
    _write(result, json_path)


@bench_app.command("public")
def bench_public(
    problem_names: list[str] = typer.Option(
        None, "--problem", help="e.g. 5mix-70M (repeatable; default all)"
    ),
    budget_fraction: float = typer.Option(0.3, "--budget-fraction", help="budget = this x pool size"),
    seeds: int = typer.Option(10, "--seeds"),
    methods: str = typer.Option("gp-ucb,regmix,random", "--methods", help=METHODS_HELP),
    data: Path | None = typer.Option(None, "--data", help="public-mixture-runs folder"),
    json_path: Path | None = typer.Option(None, "--json"),
) -> None:
    """The published mixture runs (mixinglaws, AutoScale) as pool problems; target valid_avg (minimize)."""
    from mixatlas.objectives.public_runs import (
        AVERAGE_METRIC,
        MIN_POOL_ROWS,
        public_pool,
        public_problems,
    )
    from mixatlas.search.benchmark import pool_problem

    chosen = _methods(methods)
    names = problem_names or list(public_problems(data))
    results, skipped = {}, {}
    for name in names:
        problem = pool_problem(public_pool(name, root=data), AVERAGE_METRIC, minimize=True, name=name)
        if len(problem.space.candidates) < MIN_POOL_ROWS and not problem_names:
            rows = len(problem.space.candidates)
            skipped[name] = f"{rows} trained mixtures (< {MIN_POOL_ROWS}): too few to search"
            console.print(f"{name}: skipped, {skipped[name]}")
            continue
        budget = max(3, round(budget_fraction * len(problem.space.candidates)))
        results[name] = _run(lambda problem=problem: problem, chosen, budget, seeds, 1)
        results[name]["pool_size"] = len(problem.space.candidates)
        print_result_table(results[name])
    print_public_summary(results, chosen)
    _write({"problems": results, "skipped": skipped}, json_path)


def print_public_summary(results: dict, methods: list[str]) -> None:
    """One row per public pool: mean % of the pool better than each method's recommendation."""
    import numpy as np
    from rich.table import Table

    table = Table(title="public pools: mean % of the pool better than the recommendation (lower is better)")
    table.add_column("problem")
    table.add_column("pool / budget", justify="right")
    for method in methods:
        table.add_column(method, justify="right")
    for name, result in results.items():
        cells = [f"{result['methods'][m]['percentile_mean']:.1f}" for m in methods]
        table.add_row(name, f"{result['pool_size']}/{result['budget']}", *cells)
    means = [np.mean([r["methods"][m]["percentile_mean"] for r in results.values()]) for m in methods]
    table.add_row("mean", "", *[f"{v:.1f}" for v in means])
    console.print(table)


@bench_app.command("overhead")
def bench_overhead(
    n_done: int = typer.Option(200, "--trials", help="finished trials in the study"),
    methods: str = typer.Option("gp-ucb,regmix,random", "--methods", help=METHODS_HELP),
    json_path: Path | None = typer.Option(None, "--json"),
) -> None:
    """Seconds per `ask` (n=1 and n=4) in the joint 50-cell space with N finished trials."""

    from mixatlas.search.benchmark import measure_overhead

    with console.status(f"timing ask() with {n_done} finished trials"):
        result = measure_overhead(_methods(methods), n_done=n_done)
    print_overhead_table(result)
    _write(result, json_path)


def print_overhead_table(result: dict) -> None:
    """Seconds per ask (wall and this process's CPU, which excludes waiting for a shared core)."""
    from rich.table import Table

    table = Table(title=f"seconds per ask: joint space d={result['dim']}, {result['n_done']} finished trials")
    table.add_column("method")
    for n in (1, 4):
        table.add_column(f"ask n={n} wall (s)", justify="right")
        table.add_column(f"ask n={n} CPU (s)", justify="right")
    for name, row in result["methods"].items():
        table.add_row(name, *[f"{row[f'ask_n{n}_{kind}']:.2f}" for n in (1, 4) for kind in ("s", "cpu_s")])
    console.print(table)
