"""CLI commands of the search stage: `mixatlas search` (new or resumed) and `mixatlas study show`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mixatlas.console import console
from mixatlas.search.study import TrialState

if TYPE_CHECKING:
    from mixatlas.search.study import Study
    from mixatlas.space import Mixture, MixtureSpace

study_app = typer.Typer(
    help="Inspect a search study (trials and the current recommendation).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command("search")(search)
    app.add_typer(study_app, name="study")


def search(
    config: Path | None = typer.Option(
        None, "--config", help="search.yaml; flags below override its values."
    ),
    atlas: Path | None = typer.Option(None, "--atlas", help="Atlas folder: search its concept x task cells."),
    pool: Path | None = typer.Option(None, "--pool", help="CSV of trained mixtures (a pool problem)."),
    weight_cols: str | None = typer.Option(
        None, "--weight-cols", help="Prefix of the pool's weight columns."
    ),
    synthetic: str | None = typer.Option(
        None, "--synthetic", help="Synthetic family: task|concept|factored|joint."
    ),
    noise: float | None = typer.Option(None, "--noise", help="Observation noise of the synthetic problem."),
    space: str | None = typer.Option(None, "--space", help="Atlas search mode: task|concept|factored|joint."),
    within: str | None = typer.Option(None, "--within", help="Split inside the free axis: natural|uniform."),
    max_epochs: float | None = typer.Option(
        None, "--max-epochs", help="Epoch cap: epochs a cell may repeat."
    ),
    planned_samples: int | None = typer.Option(
        None, "--planned-samples", help="Epoch cap: planned samples N."
    ),
    objective: str | None = typer.Option(
        None, "--objective", help="proxy|command|lmms-eval|pool|synthetic|callable."
    ),
    command: str | None = typer.Option(
        None, "--command", help='Argv template, e.g. "python train.py {trial_dir}".'
    ),
    function: str | None = typer.Option(
        None, "--function", help="Callable objective: package.module:function."
    ),
    lmms_tasks: str | None = typer.Option(
        None, "--lmms-tasks", help="lmms-eval objective: tasks run after --command trains (chartqa,ai2d)."
    ),
    lmms_model: str | None = typer.Option(None, "--lmms-model", help="lmms-eval --model (llava_onevision)."),
    lmms_model_args: str | None = typer.Option(
        None, "--lmms-model-args", help="lmms-eval --model_args (pretrained={trial_dir}/checkpoint)."
    ),
    lmms_eval_command: str | None = typer.Option(
        None, "--lmms-eval-command", help='lmms-eval launcher ("python -m lmms_eval").'
    ),
    proxy_config: Path | None = typer.Option(
        None, "--proxy-config", help="proxy.yaml for the proxy objective."
    ),
    target: str | None = typer.Option(None, "--target", help='Metric or "0.5*a/nll + 0.5*b/nll".'),
    minimize: bool | None = typer.Option(None, "--minimize/--maximize", help="Direction of the target."),
    method: str | None = typer.Option(None, "--method", help="gp-ucb|regmix|random|uniform|natural."),
    budget: int | None = typer.Option(
        None, "--budget", help="Objective evaluations (initial design included)."
    ),
    seed: int | None = typer.Option(None, "--seed"),
    trial_seeds: str | None = typer.Option(
        None, "--trial-seeds", help="per-trial (seed + trial id) or shared (common random numbers)."
    ),
    study: Path | None = typer.Option(None, "--study", help="Study file; an existing one is resumed."),
    share_from: list[Path] | None = typer.Option(
        None, "--share-from",
        help="Take over the finished trials of this study (same atlas, space, objective; another target)"
        " when creating the new one. Repeatable.",
    ),
    runs_dir: Path | None = typer.Option(
        None, "--runs-dir", help="Trial folders (default: beside the study)."
    ),
    executor: str | None = typer.Option(None, "--executor", help="local|ray|slurm."),
    parallel: int | None = typer.Option(None, "--parallel", help="Trials in flight."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Existing Ray cluster (else local Ray)."
    ),
    gpus_per_trial: float | None = typer.Option(None, "--gpus-per-trial"),
    cpus_per_trial: float | None = typer.Option(None, "--cpus-per-trial"),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition"),
    slurm_cluster: str | None = typer.Option(None, "--slurm-cluster", help="slurm, or local (no cluster)."),
    slurm_timeout_min: int | None = typer.Option(
        None, "--slurm-timeout-min", help="Slurm job time limit (default: --timeout rounded up + 1, else 60)."
    ),
    retries: int | None = typer.Option(None, "--retries", help="Retries of a failed trial (same mixture)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Per-trial time limit in seconds."),
    track: str | None = typer.Option(None, "--track", help="Log every trial to mlflow|tensorboard|wandb."),
    track_uri: str | None = typer.Option(None, "--track-uri", help="Tracker URI or folder."),
) -> None:
    """Search mixtures for the best target value; rerun the same command to resume a stopped search."""
    flags = dict(locals())  # first statement: exactly the options above
    config_path = flags.pop("config")
    from mixatlas.executors import make_executor
    from mixatlas.search.config import SearchConfig, open_study
    from mixatlas.search.loop import default_runs_dir, open_tracker, run_search

    cfg = SearchConfig.load(config_path, flags)
    study_obj, objective_obj = open_study(cfg)
    runs = cfg.runs_dir or default_runs_dir(study_obj.path)
    done = study_obj.count(TrialState.DONE)
    console.print(
        f"study {study_obj.path}: {study_obj.method}, budget {study_obj.budget} ({done} done), "
        f"{study_obj.target.direction} {study_obj.target.spec}; "
        f"{study_obj.space.describe()}",
        highlight=False,
    )
    with make_executor(
        cfg.executor,
        parallel=cfg.parallel,
        folder=runs,
        ray_address=cfg.ray_address,
        gpus_per_trial=cfg.gpus_per_trial,
        cpus_per_trial=cfg.cpus_per_trial,
        slurm_partition=cfg.slurm_partition,
        slurm_cluster=cfg.slurm_cluster,
        timeout_min=cfg.slurm_job_minutes,
    ) as pool:
        run_search(
            study_obj,
            objective_obj,
            pool,
            parallel=cfg.parallel,
            retries=cfg.retries,
            timeout_s=cfg.timeout,
            runs_dir=runs,
            tracker=open_tracker(cfg.track, cfg.track_uri, study_obj),
        )
    print_recommendation(study_obj)


@study_app.command("show")
def show(
    study: Path = typer.Argument(..., help="Study file (study.db)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write the trial table to this CSV."),
) -> None:
    """Print the trial table and the current recommendation."""
    from mixatlas.search.study import Study

    study_obj = Study.open(study)
    print_trials(study_obj)
    if study_obj.count(TrialState.DONE):
        print_recommendation(study_obj)
    if csv_out is not None:
        write_csv(study_obj, csv_out)
        console.print(f"wrote {csv_out}", highlight=False)


def print_trials(study: Study) -> None:
    """One line per trial: state, attempts, target value, cost, the searched axis's heaviest parts, error."""
    from rich.table import Table

    table = Table(title=f"{study.path} — {study.method}, {study.count(TrialState.DONE)}/{study.budget} done")
    heaviest = f"heaviest {study.space.parametrization.part}s"
    for column in ("id", "state", "att", study.target.spec, "cost s", heaviest, "error"):
        table.add_column(column, overflow="fold", no_wrap=column != "error")
    for trial in study.trials():
        table.add_row(
            str(trial.id),
            trial.state,
            str(trial.attempts),
            "" if trial.value is None else f"{trial.value:.5g}",
            "" if trial.cost_s is None else f"{trial.cost_s:.1f}",
            _heaviest(study.space, trial.mixture),
            (trial.error or "")[:80],
        )
    console.print(table)


def print_recommendation(study: Study) -> None:
    """The method's recommended mixture: prediction (mean ± sd), observation, and both marginals."""
    from rich.table import Table

    from mixatlas.search.recommend import recommend

    rec = recommend(study)
    mixture = rec.mixture
    lines = [f"recommendation ({rec.recommendation.source}) for {study.target.spec}:"]
    if rec.predicted is not None:
        mean, sd = rec.predicted
        lines.append(f"  predicted {mean:.5g}" + ("" if sd is None else f" ± {sd:.3g}"))
    if rec.trial is not None:
        lines.append(f"  observed {rec.trial.value:.5g} (trial {rec.trial.id})")
    console.print("\n".join(lines), highlight=False)
    for axis, names, weights in (
        ("concept", mixture.concepts, mixture.concept_marginal),
        ("task", mixture.tasks, mixture.task_marginal),
    ):
        if len(names) == 1:
            continue
        table = Table(title=f"{axis} marginal", show_header=False)
        for name, weight in zip(names, weights, strict=True):
            table.add_row(name, f"{weight:.4f}")
        console.print(table)


def write_csv(study: Study, path: Path) -> None:
    """The trial table (`Study.to_rows`) as CSV; the header is the union of all rows' keys."""
    rows = study.to_rows()
    header: list[str] = []
    for row in rows:
        header.extend(key for key in row if key not in header)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _heaviest(space: MixtureSpace, mixture: Mixture, n: int = 3) -> str:
    """The `n` heaviest parts of what the study's space searches: tasks, concepts or cells (concept/task)."""
    import numpy as np

    names, weights = space.parts(mixture)
    order = np.argsort(weights)[::-1][:n]
    return " ".join(f"{names[i]} {weights[i]:.2f}" for i in order)
