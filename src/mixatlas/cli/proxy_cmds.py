"""CLI commands of the proxy stage (`mixatlas proxy train|eval`) and of run analysis (`mixatlas analyze`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mixatlas.console import console
from mixatlas.errors import MixAtlasError
from mixatlas.tracking import TRACKERS

proxy_app = typer.Typer(help="Train and evaluate LLaVA-style proxy models.", no_args_is_help=True)
analyze_app = typer.Typer(help="Analyse finished runs: scale transfer, steps to loss.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.add_typer(proxy_app, name="proxy")
    app.add_typer(analyze_app, name="analyze")


def _load_config(config_path: Path | None, overrides: dict):
    """The YAML config (or defaults) with the command-line options that were given laid over it (None =
    not given; `--pack-len none` arrives as the word and the config turns it into null)."""
    from mixatlas.objectives.proxy import ProxyConfig

    base = ProxyConfig.from_yaml(config_path).model_dump() if config_path else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    if given.get("vision") or given.get("lm"):
        given["preset"] = "custom"
    return ProxyConfig.from_dict({**base, **given}, origin=str(config_path or "command line"))


def _print_metrics(metrics: dict[str, float], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)


@proxy_app.command("train")
def train_cmd(
    atlas: Path = typer.Option(..., "--atlas", help="atlas folder"),
    mixture: str = typer.Option(..., "--mixture", help="mixture JSON file, 'uniform' or 'natural'"),
    out: Path = typer.Option(..., "--out", help="run folder (metrics.json, train_log.jsonl, mixture.json)"),
    preset: str | None = typer.Option(None, "--preset", help="tiny | custom"),
    config: Path | None = typer.Option(None, "--config", help="proxy config YAML (see examples/proxy.yaml)"),
    vision: str | None = typer.Option(None, "--vision", help="CLIP vision hub id or local path"),
    lm: str | None = typer.Option(None, "--lm", help="causal LM hub id or local path"),
    steps: int | None = typer.Option(None, "--steps", min=1),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    seed: int | None = typer.Option(None, "--seed"),
    num_workers: int | None = typer.Option(None, "--num-workers", min=0, help="image-decoding workers"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (tiny: 1)"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (GPU)"),
    compile_model: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (GPU)"),
    pack_len: str | None = typer.Option(
        None, "--pack-len", help="packed row length: auto (CUDA: max_len, CPU: off) | none (padded) | N"
    ),
    checkpointing: bool | None = typer.Option(
        None, "--checkpointing/--no-checkpointing", help="activation checkpointing (less memory, more time)"
    ),
    save_model: bool = typer.Option(False, "--save-model", help="also write DIR/model/"),
    track: str | None = typer.Option(None, "--track", help=f"also log the run: {' | '.join(TRACKERS)}"),
    track_uri: str | None = typer.Option(None, "--track-uri", help="tracker URI or folder (see tracking)"),
) -> None:
    """Train one proxy on a mixture, evaluate it on the held-out benchmarks, write DIR/metrics.json."""
    from mixatlas.atlas import Atlas
    from mixatlas.objectives.base import TrialFolder
    from mixatlas.objectives.proxy import resolve_mixture, train_proxy
    from mixatlas.objectives.proxy.runtime import DistributedContext

    proxy_config = _load_config(config, {
        "preset": preset, "vision": vision, "lm": lm, "steps": steps, "batch_size": batch_size, "seed": seed,
        "num_workers": num_workers, "threads": threads, "bf16": bf16, "compile": compile_model,
        "pack_len": pack_len, "checkpointing": checkpointing,
    })
    mix = resolve_mixture(mixture, Atlas.load(atlas))
    folder, main_rank = TrialFolder(out), DistributedContext.from_env().is_main
    if main_rank:
        folder.start(mix)
    result = train_proxy(atlas, mix, proxy_config, out, proxy_config.seed, save_model=save_model)
    if not main_rank:
        return
    folder.finish(result)
    _print_metrics(result.metrics, f"proxy metrics ({result.cost_s:.1f} s) -> {out / 'metrics.json'}")
    if track:
        from mixatlas.tracking import log_proxy_run

        config_dict = proxy_config.model_dump(mode="json")
        where = log_proxy_run(track, track_uri, out, config_dict, mix, result.metrics, result.curve)
        console.print(f"logged the run to {track} ({where})", highlight=False)


@proxy_app.command("eval")
def eval_cmd(
    atlas: Path = typer.Option(..., "--atlas", help="atlas folder (its corpus's eval/ holds the benchmarks)"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="run folder trained with --save-model"),
    config: Path | None = typer.Option(None, "--config", help="proxy config YAML (default: the run's)"),
) -> None:
    """Evaluate a saved proxy on the held-out benchmarks; writes CHECKPOINT/eval.json."""
    from mixatlas.objectives.proxy.evaluate import evaluate_saved_proxy
    from mixatlas.objectives.proxy.model import load_saved_proxy

    run_config = config or (checkpoint / "proxy.yaml" if (checkpoint / "proxy.yaml").exists() else None)
    proxy_config = _load_config(run_config, {})
    model_dir = checkpoint / "model" if (checkpoint / "model").is_dir() else checkpoint
    result = evaluate_saved_proxy(load_saved_proxy(model_dir), atlas, proxy_config)
    result.save(checkpoint / "eval.json")
    _print_metrics(result.metrics, f"proxy metrics -> {checkpoint / 'eval.json'}")


@analyze_app.command("transfer")
def transfer_cmd(
    small_csv: Path = typer.Argument(..., help="proxy-scale results, one row per mixture"),
    large_csv: Path = typer.Argument(..., help="target-scale results on the same mixtures"),
    target: str = typer.Option(..., "--target", help="metric column compared across scales"),
    key: list[str] | None = typer.Option(None, "--key", help="column(s) naming the mixture"),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=0),
    seed: int = typer.Option(0, "--seed"),
    minimize: bool | None = typer.Option(None, "--minimize/--maximize", help="default: by the name"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Rank agreement (Spearman, Kendall, bootstrap CIs) between proxy-scale and target-scale results."""
    from mixatlas.analyze.transfer import rank_transfer
    from mixatlas.objectives.base import Target

    report = rank_transfer(small_csv, large_csv, target, key_cols=key or None, bootstrap=bootstrap, seed=seed,
                           minimize=minimize)
    better = Target.for_metric(target, report["minimize"]).better
    in_top = "yes" if report["small_best_in_large_top10"] else "no"
    lines = [f"[bold]{target}[/] on {report['n']} mixtures ({better} is better)"]
    for stat in ("spearman", "kendall"):
        low, high = report[f"{stat}_ci"]
        lines.append(f"  {stat:<9} {report[stat]:.3f}  95% CI [{low:.3f}, {high:.3f}]")
    lines.append(f"  small-scale best {report['small_best']!r} ranks {report['small_best_large_rank']} of "
                 f"{report['n']} at large scale (in the top {report['large_top_k']}: {in_top})")
    console.print("\n".join(lines), highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1))


@analyze_app.command("fidelities")
def fidelities_cmd(
    csv_path: Path | None = typer.Argument(
        None, help="results at several fidelities: a row per mixture x fidelity (or --study)"
    ),
    study: Path | None = typer.Option(
        None, "--study", help="a multi-fidelity study instead of a CSV (mixtures run at several fidelities)"
    ),
    weight_cols: str | None = typer.Option(None, "--weight-cols", help="CSV: prefix of the weight columns"),
    fidelity_col: str | None = typer.Option(None, "--fidelity-col", help="CSV: column naming the fidelity"),
    target: str | None = typer.Option(
        None, "--target", help="metric compared across fidelities (study: default its target)"
    ),
    target_fidelity: str | None = typer.Option(
        None, "--target-fidelity", help="CSV: the fidelity others are compared to"
    ),
    minimize: bool = typer.Option(False, "--minimize", help="CSV: smaller target is better (losses)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Rank agreement of every fidelity with the target fidelity (Spearman, Kendall, bootstrap CIs), from
    a CSV of runs or from a finished multi-fidelity study (`--study S.db`)."""
    from rich.table import Table

    from mixatlas.analyze.fidelity import study_agreement, table_agreement

    if (csv_path is None) == (study is None):
        raise MixAtlasError("analyze fidelities: give a CSV of runs or --study S.db (one of them)")
    if study is not None:
        report = study_agreement(study, target)
        target, target_fidelity = report["target"], report["target_fidelity"]
    else:
        needed = {"--weight-cols": weight_cols, "--fidelity-col": fidelity_col, "--target": target,
                  "--target-fidelity": target_fidelity}
        missing = [flag for flag, value in needed.items() if value is None]
        if missing:
            raise MixAtlasError(f"analyze fidelities {csv_path}: give {', '.join(missing)}")
        report = table_agreement(csv_path, weight_cols, fidelity_col, target, target_fidelity, minimize)
    table = Table(title=f"{target}: rank agreement with fidelity {target_fidelity} (95% bootstrap CI)")
    for column in ("fidelity", "mixtures", "Spearman", "95% CI", "Kendall", "95% CI", "its best's rank"):
        table.add_column(column, justify="left" if column == "fidelity" else "right")
    for row in report["rows"]:
        if row["spearman"] is None:
            table.add_row(row["fidelity"], str(row["n"]), "-", "", "-", "", "-")
            continue
        table.add_row(
            row["fidelity"], str(row["n"]),
            f"{row['spearman']:.3f}", "[{:.3f}, {:.3f}]".format(*row["spearman_ci"]),
            f"{row['kendall']:.3f}", "[{:.3f}, {:.3f}]".format(*row["kendall_ci"]),
            f"{row['best_rank_at_target']} of {row['n']}",
        )
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1))


@analyze_app.command("steps-to-loss")
def steps_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="run folders with metrics.json curves"),
    baseline: Path = typer.Option(..., "--baseline", help="the baseline run folder"),
    smoothing: float = typer.Option(0.9, "--smoothing", help="EMA weight on the past, in [0, 1)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the rows here"),
) -> None:
    """Steps each run needs to reach the baseline's final (smoothed) training loss, and the speed-up."""
    from rich.table import Table

    from mixatlas.analyze.steps import steps_to_loss

    if not run_dirs:
        raise MixAtlasError("analyze steps-to-loss: give at least one run folder")
    rows = steps_to_loss(run_dirs, baseline, smoothing)
    table = Table(title=f"steps to the baseline's final loss {rows[0]['target_loss']:.4f}")
    for column in ("run", "steps to loss", "total steps", "speed-up"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for row in rows:
        reached = "never" if row["steps_to_loss"] is None else f"{row['steps_to_loss']:.0f}"
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        table.add_row(row["run"], reached, f"{row['total_steps']:.0f}", speedup)
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(rows, indent=1))
