"""CLI commands of the search stage: `mixatlas search` (new or resumed) and `mixatlas study show`."""

from __future__ import annotations

import csv
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    app.command("search")(search_command())
    app.add_typer(study_app, name="study")


def search_command() -> Callable[..., None]:
    """`mixatlas search`: `--config` plus one flag per `SearchConfig` field (name, type, help and choices
    come from the field), so a new search option is declared once, in the config."""
    from mixatlas.search.config import SearchConfig

    parameters = [_parameter("config", Path | None, typer.Option(
        None, "--config", help="search.yaml; flags below override its values."
    ))]
    for name, field in SearchConfig.model_fields.items():
        extra = field.json_schema_extra or {}
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        if flag is None:
            continue
        kind, choices = _flag_type(field.annotation, bool(extra.get("one_string")))
        help_text = field.description or ""
        if choices:
            help_text = f"{help_text.rstrip('.')}: {'|'.join(choices)}."
        parameters.append(_parameter(name, kind, typer.Option(None, flag, help=help_text)))

    def search(**flags: Any) -> None:
        _search(**flags)

    search.__doc__ = _search.__doc__
    search.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    search.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return search


def _parameter(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _flag_type(annotation: Any, one_string: bool) -> tuple[Any, tuple[str, ...]]:
    """The flag's type (always optional: an unset flag leaves the YAML / default value) and its choices."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)  # list[Path] is not a union
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    base = args[0] if len(args) == 1 else annotation
    if typing.get_origin(base) is Literal:
        return str | None, tuple(typing.get_args(base))
    if typing.get_origin(base) is list:
        return (str | None, ()) if one_string else (list[typing.get_args(base)[0]] | None, ())
    return base | None, ()


def _search(config: Path | None = None, **flags: Any) -> None:
    """Search mixtures for the best target value; rerun the same command to resume a stopped search."""
    from mixatlas.search.config import SearchConfig
    from mixatlas.search.loop import default_runs_dir, open_executor, open_tracker, run_search
    from mixatlas.search.setup import open_study

    cfg = SearchConfig.load(config, flags)
    study_obj, objective_obj = open_study(cfg)
    runs = cfg.runs_dir or default_runs_dir(study_obj.path)
    done = study_obj.count(TrialState.DONE)
    budget = f"budget {study_obj.budget} ({done} done)"
    if study_obj.fidelities is not None:
        budget = (f"fidelities {study_obj.fidelities.spec()} (target {study_obj.fidelities.target}), "
                  f"cost {study_obj.cost_spent():g} of {study_obj.budget_cost:g} spent ({done} done)")
    console.print(
        f"study {study_obj.path}: {study_obj.method}, {budget}, "
        f"{study_obj.target.direction} {study_obj.target.spec}; "
        f"{study_obj.space.describe()}",
        highlight=False,
    )
    with open_executor(cfg, runs) as pool, open_tracker(cfg.track, cfg.track_uri, study_obj) as tracker:
        run_search(
            study_obj,
            objective_obj,
            pool,
            parallel=cfg.parallel,
            retries=cfg.retries,
            timeout_s=cfg.timeout,
            runs_dir=runs,
            tracker=tracker,
        )
    print_recommendation(study_obj)


@study_app.command("show")
def show(
    study: Path = typer.Argument(..., help="Study file (study.db)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write the trial table to this CSV."),
) -> None:
    """Print the trial table and the current recommendation."""
    from mixatlas.search.study import Study

    study_obj = Study.open(study, read_only=True)
    print_trials(study_obj)
    if study_obj.count(TrialState.DONE):
        print_recommendation(study_obj)
    if csv_out is not None:
        write_csv(study_obj, csv_out)
        console.print(f"wrote {csv_out}", highlight=False)


def print_trials(study: Study) -> None:
    """One line per trial: state, attempts, target value, cost, the searched axis's heaviest parts, error."""
    from rich.table import Table

    fidelities = study.fidelities
    done = study.count(TrialState.DONE)
    title = f"{study.path} — {study.method}, {done}/{study.budget} done"
    if fidelities is not None:
        spent = f"cost {study.cost_spent():g}/{study.budget_cost:g}"
        title = f"{study.path} — {study.method}, {done} done, {spent}"
    table = Table(title=title)
    heaviest = f"heaviest {study.space.parametrization.part}s"
    fidelity_column = ("fidelity",) if fidelities is not None else ()
    for column in ("id", "state", "att", *fidelity_column, study.target.spec, "cost s", heaviest, "error"):
        table.add_column(column, overflow="fold", no_wrap=column != "error")
    for trial in study.trials():
        table.add_row(
            str(trial.id),
            trial.state,
            str(trial.attempts),
            *([trial.fidelity or ""] if fidelities is not None else []),
            "" if trial.value is None else f"{trial.value:.5g}",
            "" if trial.cost_s is None else f"{trial.cost_s:.1f}",
            _heaviest(study.space, trial.mixture),
            (trial.error or "")[:80],
        )
    console.print(table)
    if fidelities is not None:
        console.print(fidelity_summary(study), highlight=False)


def fidelity_summary(study: Study) -> str:
    """"per fidelity: 0.5b 12 done (cost 12), 7b 2 done (cost 28); spent 40 of 84"."""
    fidelities = study.fidelities
    done = study.trials(TrialState.DONE)
    parts = []
    for name, cost in zip(fidelities.names, fidelities.costs, strict=True):
        n = sum(t.fidelity == name for t in done)
        target = " (target)" if name == fidelities.target else ""
        parts.append(f"{name}{target} {n} done (cost {n * cost:g})")
    return f"per fidelity: {', '.join(parts)}; spent {study.cost_spent():g} of {study.budget_cost:g}"


def print_recommendation(study: Study) -> None:
    """The method's recommended mixture: prediction (mean ± sd), observation, and both marginals."""
    from rich.table import Table

    from mixatlas.search.recommend import recommend

    rec = recommend(study)
    mixture = rec.mixture
    at = "" if study.fidelities is None else f" at fidelity {study.fidelities.target}"
    lines = [f"recommendation ({rec.recommendation.source}) for {study.target.spec}{at}:"]
    if rec.predicted is not None:
        mean, sd = rec.predicted
        lines.append(f"  predicted {mean:.5g}" + ("" if sd is None else f" ± {sd:.3g}"))
    if rec.trial is not None:
        lines.append(f"  observed {rec.trial.value:.5g} (trial {rec.trial.id})")
    from mixatlas.recipe.from_study import recommendation_odds

    p_beats, guards = recommendation_odds(study, rec.recommendation.params)
    if p_beats:
        lines.append("  P(beats) " + ", ".join(f"{name} {p:.3f}" for name, p in p_beats.items()))
    lines.extend(f"  guard {spec}: holds with P {p:.3f} (vs natural)" for spec, p in guards.items())
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
