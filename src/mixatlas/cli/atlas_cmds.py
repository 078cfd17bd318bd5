"""CLI commands of the atlas stage: `decompose`, `atlas show`, `atlas assign`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mixatlas.console import console
from mixatlas.corpus.images import DEFAULT_MAX_PIXELS
from mixatlas.errors import MixAtlasError

if TYPE_CHECKING:
    from mixatlas.atlas import Atlas
    from mixatlas.atlas.audit import AuditReport

FORMAT_HELP = "llava-json | jsonl | wds | parquet (default: from the file extensions)."
OUTSIDE_HELP = "Accept image paths outside the corpus file's folder (../x, absolute paths elsewhere)."
MAX_PIXELS_HELP = "Reject images with more pixels than this (read from the header, before decoding)."
atlas_app = typer.Typer(name="atlas", help="Inspect atlases and map new corpora onto them.",
                        no_args_is_help=True)


def _parse_k(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise MixAtlasError(f"--k {value}: pass a positive integer or 'auto'") from None


def _read_prompts(path: Path | None) -> list[str] | None:
    """Concept prompts: a YAML list or one prompt per line."""
    if path is None:
        return None
    import yaml

    from mixatlas.yaml_io import safe_load

    try:
        loaded = safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MixAtlasError(f"--concepts {path}: cannot read ({str(exc).splitlines()[0]}); give a YAML list "
                            "of prompts") from None
    prompts = loaded if isinstance(loaded, list) else path.read_text().splitlines()
    prompts = [str(prompt).strip() for prompt in prompts if str(prompt).strip()]
    if not prompts:
        raise MixAtlasError(f"--concepts {path}: no prompts; write one concept prompt per line")
    return prompts


def _summary(atlas: Atlas, verb: str) -> None:
    rejects = atlas.info.rejects
    console.print(f"{verb} [bold]{atlas.dir}[/]: {atlas.info.n_samples} samples, {atlas.k} concepts x "
                  f"{len(atlas.tasks)} tasks, embedder {atlas.embedder}", soft_wrap=True)
    if rejects:
        reasons = ", ".join(f"{reason} {count}" for reason, count in atlas.info.rejects_by_reason.items())
        console.print(f"[yellow]{rejects} rejected inputs[/] ({reasons}) listed in "
                      f"{atlas.dir / 'rejects.jsonl'}", soft_wrap=True)


def decompose(
    corpus: Annotated[Path, typer.Argument(help="LLaVA JSON/JSONL file, WebDataset tar folder or Parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Atlas folder to write (resumes if present).")],
    embedder: Annotated[str, typer.Option(help="pixels (offline) | clip:<hub-id-or-path>[,bf16]")] = "pixels",
    k: Annotated[str, typer.Option("--k", help="Number of concepts, or 'auto' (silhouette).")] = "10",
    tasks: Annotated[str, typer.Option(help="Task typing: auto (explicit field > known-corpus map > "
                                       "rules) | rules | field:NAME | map:FILE.yaml; comma-join to combine.")
                     ] = "auto",
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    source_field: Annotated[str | None, typer.Option(help="Record field naming the source.")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad record or image.")] = False,
    seed: Annotated[int, typer.Option(help="Clustering seed.")] = 0,
    concepts: Annotated[Path | None, typer.Option(help="Concept prompts for CLIP naming.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per embedding batch.")] = 256,
    shard_size: Annotated[int | None, typer.Option(min=1, help="Samples per cached embedding shard (a rerun "
                                                   "reuses the finished ones; default: 8192).")] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes (0: in-process).")] = 2,
    allow_outside_root: Annotated[bool, typer.Option(help=OUTSIDE_HELP)] = False,
    max_pixels: Annotated[int, typer.Option(help=MAX_PIXELS_HELP)] = DEFAULT_MAX_PIXELS,
    sample: Annotated[int | None, typer.Option(
        min=1, help="Cluster a seeded uniform subset of N samples, then assign every sample (huge corpora).",
    )] = None,
    executor: Annotated[str, typer.Option(help="local | ray: embed on Ray Data (GPU actors, many nodes).")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")]
    = None,
    gpus: Annotated[int, typer.Option(min=0, help="With --executor ray: GPU embedding actors (0: 2 CPU).")]
    = 0,
) -> None:
    """Decompose a corpus into an atlas of concept x task cells."""
    from mixatlas.atlas import build_atlas
    from mixatlas.atlas.subset import build_atlas_sampled

    options = dict(embedder=embedder, k=_parse_k(k), tasks=tasks, fmt=fmt, source_field=source_field,
                   strict=strict, seed=seed, batch_size=batch_size, workers=workers,
                   concept_prompts=_read_prompts(concepts), allow_outside_root=allow_outside_root,
                   max_pixels=max_pixels)
    if shard_size is not None:
        options["shard_size"] = shard_size
    if sample is None:
        atlas = build_atlas(corpus, out, executor=executor, ray_address=ray_address, gpus=gpus, **options)
    elif executor != "local":
        raise MixAtlasError("--sample runs on the local executor only; drop --executor ray or --sample")
    else:
        atlas = build_atlas_sampled(corpus, out, sample, **options)
        console.print(f"concepts from a seeded subset of {sample} samples ({atlas.info.parent.dir})",
                      highlight=False, soft_wrap=True)
    _summary(atlas, "wrote")


@atlas_app.command("show")
def show(
    atlas_dir: Annotated[Path, typer.Argument(metavar="ATLAS", help="Atlas folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print atlas.json's summary as JSON.")] = False,
) -> None:
    """Print the concepts x tasks counts table with names and totals."""
    from rich.console import Console
    from rich.table import Table

    from mixatlas.atlas import Atlas

    atlas = Atlas.load(atlas_dir)
    counts = atlas.counts
    if as_json:
        keys = ("corpus", "embedder", "k", "tasks", "concepts", "counts", "n_samples", "rejects",
                "rejects_by_reason", "fingerprint", "centroids_fingerprint", "parent")
        info = atlas.info.to_dict()
        summary = {key: info[key] for key in keys}
        typer.echo(json.dumps(summary, indent=1))
        return
    table = Table(title=f"{atlas.dir.name}: {atlas.info.n_samples} samples, embedder {atlas.embedder}")
    table.add_column("#", justify="right")
    table.add_column("concept")
    for task in atlas.tasks:
        table.add_column(task, justify="right")
    table.add_column("total", justify="right", style="bold")
    for j, name in enumerate(atlas.concepts):
        table.add_row(str(j), name, *(str(c) for c in counts[j]), str(counts[j].sum()))
    table.add_section()
    table.add_row("", "total", *(str(c) for c in counts.sum(axis=0)), str(counts.sum()), style="bold")
    Console().print(table)  # the table is the command's output: stdout, unlike progress and notes
    if atlas.info.rejects:
        console.print(f"{atlas.info.rejects} rejected inputs listed in {atlas.dir / 'rejects.jsonl'}")


@atlas_app.command("assign")
def assign(
    atlas_dir: Annotated[Path, typer.Argument(metavar="ATLAS", help="Existing atlas (concepts are kept).")],
    corpus: Annotated[Path, typer.Argument(help="New corpus to map onto the atlas.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the new atlas.")],
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    source_field: Annotated[str | None, typer.Option(help="Record field naming the source.")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad record or image.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per embedding batch.")] = 256,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes (0: in-process).")] = 2,
    allow_outside_root: Annotated[bool, typer.Option(help=OUTSIDE_HELP)] = False,
    max_pixels: Annotated[int, typer.Option(help=MAX_PIXELS_HELP)] = DEFAULT_MAX_PIXELS,
) -> None:
    """Map a new corpus onto an existing atlas (same embedder, nearest centroid, same task rules)."""
    from mixatlas.atlas import assign_atlas

    atlas = assign_atlas(atlas_dir, corpus, out, fmt=fmt, source_field=source_field, strict=strict,
                         batch_size=batch_size, workers=workers, allow_outside_root=allow_outside_root,
                         max_pixels=max_pixels)
    _summary(atlas, "assigned")


@atlas_app.command("name")
def name(
    atlas_dir: Annotated[Path, typer.Argument(metavar="ATLAS", help="Atlas folder.")],
    names: Annotated[Path, typer.Option(help="YAML: a list of k names, or a mapping `c3: receipts`.")],
) -> None:
    """Set the concept names (shown by `atlas show`; used by new studies, recipes, manifests, reports)."""
    from mixatlas.atlas import Atlas
    from mixatlas.atlas.cluster import read_names

    atlas = Atlas.load(atlas_dir)
    atlas = atlas.renamed(read_names(names, atlas.concepts))
    console.print(f"named the {atlas.k} concepts of {atlas.dir}: {', '.join(atlas.concepts)}", soft_wrap=True,
                  highlight=False, markup=False)


def _print_audit(report: AuditReport) -> None:
    """Rich view of an audit: one table of rules per task (tasks with no samples on one line), then the
    mixed and low-confidence samples."""
    from rich.console import Console
    from rich.table import Table

    out = Console()  # the audit is the command's output: stdout
    out.print(f"[bold]{report.atlas}[/]: {report.n_samples} samples typed with --tasks {report.task_rules}"
              + (" (re-typed: the atlas has no task_rule column)" if report.retyped else ""), soft_wrap=True)
    empty = [task for task, audit in report.tasks.items() if audit.n == 0]
    for task, audit in report.tasks.items():
        if audit.n == 0:
            continue
        table = Table(title=f"{task}: {audit.n} samples, {audit.mixed} mixed, {audit.low_confidence} low "
                            "confidence", title_justify="left")
        table.add_column("rule")
        table.add_column("samples", justify="right")
        table.add_column("example prompts", overflow="fold")
        for rule, count in audit.rules.most_common():
            table.add_row(rule, str(count), "\n".join(audit.examples.get(rule, [])))
        out.print(table)
    if empty:
        out.print(f"no samples: {', '.join(empty)}", highlight=False)
    for title, items in (("mixed samples (turns of several tasks)", report.mixed),
                         ("low-confidence samples", report.low_confidence)):
        if not items:
            continue
        table = Table(title=title, title_justify="left")
        for column in ("source", "task", "rule", "turns", "prompt"):
            table.add_column(column, overflow="fold")
        for item in items:
            table.add_row(item["source"], item["task"], item["rule"], item["mix"], item["prompt"])
        out.print(table)


@atlas_app.command("audit")
def audit(
    atlas_dir: Annotated[Path, typer.Argument(metavar="ATLAS", help="Atlas folder.")],
    task: Annotated[str | None, typer.Option(help="Audit one task only.")] = None,
    n: Annotated[int, typer.Option("--n", help="Examples per list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    export: Annotated[Path | None, typer.Option(
        help="Write a source / image-folder -> task map for --tasks map:.")] = None,
    min_share: Annotated[float, typer.Option(
        help="Export sources and image folders whose main task has this share.")] = 0.9,
) -> None:
    """How the atlas's tasks were decided: rules per task with counts and prompts, mixed and
    low-confidence samples, and an exportable source / image-folder -> task map."""
    from mixatlas.atlas.audit import audit_atlas, export_map

    report = audit_atlas(atlas_dir, task=task, n=n)
    mapped = export_map(report, export, min_share) if export is not None else None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1, ensure_ascii=False))
    else:
        _print_audit(report)
    if export is not None:
        console.print(f"wrote {export}: {len(mapped['sources'])} of {len(report.sources)} sources and "
                      f"{len(mapped['images'])} of {len(report.folders)} image folders mapped; rebuild with "
                      f"--tasks map:{export}", soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add `decompose` and the `atlas` sub-app (show, assign, name, audit) to the top-level app."""
    app.command("decompose")(decompose)
    app.add_typer(atlas_app, name="atlas")
