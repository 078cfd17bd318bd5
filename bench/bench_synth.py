"""Synthetic-corpus throughput: `synthesize` samples/s on 1 worker (target >= 500/s on one core) into a
disk folder and into tmpfs, the render-only share (no PNG / JSON / files), 2 workers, and the JSONL
reader + rule task typing on the result. CPU seconds are reported beside wall seconds because the
machine may be shared.

Prints a table and writes JSON (default bench/out/synth.json).

    .venv/bin/python bench/bench_synth.py [--samples 2000] [--workers 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call; CPU time is the fair figure on a shared
    machine (it excludes waiting for the core), wall time includes that wait."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument(
        "--workers", type=int, default=2, help="worker count of the parallel run (0 skips it)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/out/synth.json"))
    parser.add_argument("--dir", type=Path, default=None, help="where the disk run writes (default: $TMPDIR)")
    args = parser.parse_args()

    from mixatlas.atlas.tasks import TaskTyper
    from mixatlas.corpus import read_corpus
    from mixatlas.corpus.synth import render_sample, synthesize

    n = args.samples
    rows = []
    root = Path(tempfile.mkdtemp(prefix="bench-synth-", dir=args.dir))
    # Creating a file costs ~1 ms of CPU on some VM disks; tmpfs shows the renderer without that.
    shm = Path(tempfile.mkdtemp(prefix="bench-synth-", dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    try:
        render_sample(0, "train", 0)  # warm the font and glyph caches once, as a long run would
        seconds = timed(lambda: [render_sample(1, "train", i) for i in range(n)])
        rows.append(("render only (no PNG, no JSON)", 1, n, *seconds))
        seconds = timed(lambda: synthesize(root / "w1", n, seed=1, eval_per_benchmark=0, workers=1))
        rows.append((f"synthesize -> {root.parent}", 1, n, *seconds))
        if shm is not None:
            seconds = timed(lambda: synthesize(shm / "w1", n, seed=1, eval_per_benchmark=0, workers=1))
            rows.append((f"synthesize -> {shm.parent} (tmpfs)", 1, n, *seconds))
        if args.workers > 1:
            seconds = timed(
                lambda: synthesize(root / "wn", n, seed=1, eval_per_benchmark=0, workers=args.workers)
            )
            rows.append(("synthesize (incl. process start)", args.workers, n, seconds[0], float("nan")))
        seconds = timed(lambda: sum(1 for _ in read_corpus(root / "w1")))
        rows.append(("read_corpus (JSONL)", 1, n, *seconds))
        samples = list(read_corpus(root / "w1"))
        typer = TaskTyper.from_spec("rules")
        seconds = timed(lambda: [typer.task_of(s) for s in samples])
        rows.append(("task typing (rules)", 1, n, *seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)

    print(
        f"{'step':40} {'workers':>7} {'samples':>7} {'wall s':>7} {'per s':>7} {'cpu s':>7} {'per cpu s':>9}"
    )
    results = []
    for step, workers, count, wall, cpu in rows:
        print(
            f"{step:40} {workers:>7} {count:>7} {wall:>7.2f} {count / wall:>7.0f}"
            f" {cpu:>7.2f} {count / cpu:>9.0f}"
        )
        results.append(
            {
                "step": step,
                "workers": workers,
                "samples": count,
                "wall_s": wall,
                "per_s": count / wall,
                "cpu_s": None if cpu != cpu else cpu,
                "per_cpu_s": None if cpu != cpu else count / cpu,
            }
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "synth", "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
