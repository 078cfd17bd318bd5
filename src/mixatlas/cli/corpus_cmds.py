"""CLI commands of the corpus stage: `mixatlas synth` writes the synthetic multimodal corpus."""

from __future__ import annotations

from pathlib import Path

import typer

from mixatlas.errors import MixAtlasError


def synth(
    out: Path = typer.Argument(..., help="Output folder (train.jsonl, images/, eval/, synth.json)."),
    samples: int = typer.Option(2000, "--samples", "-n", help="Number of training samples."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the output is a pure function of it."),
    eval_per_benchmark: int = typer.Option(
        40, "--eval-per-benchmark", help="Held-out samples per benchmark."
    ),
    workers: int = typer.Option(1, "--workers", "-w", help="Rendering processes."),
) -> None:
    """Write the synthetic corpus: 8 image domains x 5 tasks, LLaVA JSONL + PNGs, held-out benchmarks."""
    from mixatlas.console import console, progress
    from mixatlas.corpus.synth import BENCHMARKS, synthesize

    if samples < 1 or eval_per_benchmark < 0 or workers < 1:
        raise MixAtlasError("--samples and --workers must be >= 1 and --eval-per-benchmark >= 0")
    with progress() as bar:
        total = samples + eval_per_benchmark * len(BENCHMARKS)
        task = bar.add_task("synthesizing", total=total)
        manifest = synthesize(
            out, samples, seed, eval_per_benchmark, workers, progress=lambda n: bar.advance(task, n)
        )
    console.print(
        f"wrote {samples} training samples and {len(manifest['benchmarks'])} benchmarks"
        f" x {eval_per_benchmark} to {out}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command("synth")(synth)
