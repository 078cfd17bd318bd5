"""Write the synthetic corpus: `train.jsonl` + PNGs, held-out benchmark sets and `synth.json`.

Every sample is a pure function of (seed, stream, index): its RNG is seeded from that triple, so any
number of worker processes produce byte-identical output. Train sample i covers cell i mod 40
(domain-major), giving every (domain, task) cell the same count.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mixatlas.corpus.sample import TASKS
from mixatlas.corpus.synth import (
    bar_chart,
    diagram,
    document,
    line_plot,
    scene,
    shapes,
    table,
    ui,
)
from mixatlas.corpus.synth.canvas import BOX_FORMAT, SIZE, Rendered
from mixatlas.corpus.synth.prompts import build_sample

DOMAINS: dict[str, Callable[[random.Random], Rendered]] = {
    module.NAME: module.render
    for module in (bar_chart, line_plot, document, table, shapes, scene, ui, diagram)
}
# One held-out benchmark per target: name -> (domain, task).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "chart-vqa": ("bar_chart", "vqa"),
    "plot-captioning": ("line_plot", "captioning"),
    "document-ocr": ("document", "ocr"),
    "table-captioning": ("table", "captioning"),
    "shapes-detection": ("shapes", "detection"),
    "scene-grounding": ("scene", "grounding"),
    "ui-vqa": ("ui", "vqa"),
    "diagram-vqa": ("diagram", "vqa"),
}
# Metrics an evaluator can compute for a benchmark of each task (answer NLL always).
METRIC_KINDS: dict[str, list[str]] = {
    "captioning": ["nll"],
    "ocr": ["nll", "exact_match", "cer"],
    "grounding": ["nll", "iou"],
    "detection": ["nll", "box_f1"],
    "vqa": ["nll", "exact_match"],
}
TRAIN_STREAM = "train"
CHUNK = 128


@dataclass(frozen=True)
class _Job:
    """A contiguous range of samples of one stream (`train` or a benchmark name)."""

    stream: str
    start: int
    stop: int


def cell_of(index: int) -> tuple[str, str]:
    """(domain, task) of train sample `index`: cells cycle domain-major, so counts stay balanced."""
    cell = index % (len(DOMAINS) * len(TASKS))
    return list(DOMAINS)[cell // len(TASKS)], TASKS[cell % len(TASKS)]


def render_sample(seed: int, stream: str, index: int, attempt: int = 0) -> tuple[Rendered, dict]:
    """The image and LLaVA record (without `image`) of one sample, a pure function of its arguments."""
    domain, task = cell_of(index) if stream == TRAIN_STREAM else BENCHMARKS[stream]
    rng = random.Random(f"mixatlas-synth:{seed}:{stream}:{index}:{attempt}")
    rendered = DOMAINS[domain](rng)
    conversations, task_truth = build_sample(task, rendered, rng)
    meta = {
        "domain": domain,
        "task": task,
        "objects": [obj.to_json() for obj in rendered.objects],
        "texts": [item.to_json() for item in rendered.texts],
        "ocr_text": rendered.ocr,
        "background": list(rendered.background) if rendered.background else None,
        **task_truth,
        "truth": rendered.truth,
    }
    sample_id = f"train-{index:07d}" if stream == TRAIN_STREAM else f"{stream}-{index:05d}"
    return rendered, {"id": sample_id, "conversations": conversations, "meta": meta}


def _write_sample(out: Path, seed: int, stream: str, index: int, attempt: int) -> tuple[int, str, bytes]:
    """Render, save the PNG and return (index, JSONL line, image digest)."""
    rendered, record = render_sample(seed, stream, index, attempt)
    if stream == TRAIN_STREAM:
        relative, folder = f"images/{index:07d}.png", out
    else:
        relative, folder = f"images/{record['id']}.png", out / "eval"
    # Fixed Huffman codes halve the encode time on these flat images for ~20% more bytes. Encoding in
    # memory and writing with three raw syscalls matters: creating a file costs ~1 ms on some VM disks.
    png = io.BytesIO()
    rendered.image.save(png, format="PNG", compress_level=1, compress_type=zlib.Z_FIXED)
    fd = os.open(folder / relative, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, png.getvalue())
    finally:
        os.close(fd)
    record = {"id": record["id"], "image": relative, **{k: v for k, v in record.items() if k != "id"}}
    digest = hashlib.blake2b(png.getvalue(), digest_size=16).digest()  # same pixels -> same PNG bytes
    return index, json.dumps(record, separators=(",", ":")), digest


def _run_job(out: Path, seed: int, job: _Job) -> list[tuple[int, str, bytes]]:
    return [_write_sample(out, seed, job.stream, index, 0) for index in range(job.start, job.stop)]


def _jobs(stream: str, total: int) -> list[_Job]:
    return [_Job(stream, start, min(start + CHUNK, total)) for start in range(0, total, CHUNK)]


def synthesize(
    out: Path,
    samples: int,
    seed: int,
    eval_per_benchmark: int = 40,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write the synthetic corpus to `out` and return its manifest (also saved as `out/synth.json`).

    Layout: `train.jsonl` (+ `images/`), `eval/<benchmark>.jsonl` (+ `eval/images/`), `synth.json`.
    Eval images never repeat a train image (a colliding one is re-drawn). `progress(n)` is called with
    the number of samples just finished. `train.jsonl` and `synth.json` appear only once complete.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "images").mkdir(parents=True, exist_ok=True)
    run = partial(_run_job, out, seed)
    train_jobs = _jobs(TRAIN_STREAM, samples)
    eval_jobs = [job for name in BENCHMARKS for job in _jobs(name, eval_per_benchmark)]
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(run, train_jobs + eval_jobs)
    else:
        pool, results = None, map(run, train_jobs + eval_jobs)
    try:
        train_digests: set[bytes] = set()
        tmp = out / "train.jsonl.partial"
        with tmp.open("w", encoding="utf-8") as fh:
            for _ in train_jobs:
                chunk = next(results)
                for _, line, digest in chunk:
                    fh.write(line + "\n")
                    train_digests.add(digest)
                if progress is not None:
                    progress(len(chunk))
        os.replace(tmp, out / "train.jsonl")
        eval_lines: dict[str, list[str]] = {name: [] for name in BENCHMARKS}
        for job in eval_jobs:
            chunk = next(results)
            for index, line, digest in chunk:
                attempt = 0
                while digest in train_digests:
                    attempt += 1
                    _, line, digest = _write_sample(out, seed, job.stream, index, attempt)
                eval_lines[job.stream].append(line)
            if progress is not None:
                progress(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()
    for name, lines in eval_lines.items():
        (out / "eval" / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    manifest = {
        "seed": seed,
        "samples": samples,
        "eval_per_benchmark": eval_per_benchmark,
        "image_size": SIZE,
        "domains": list(DOMAINS),
        "tasks": list(TASKS),
        "benchmarks": {
            name: {
                "domain": domain,
                "task": task,
                "file": f"eval/{name}.jsonl",
                "metric_kinds": METRIC_KINDS[task],
            }
            for name, (domain, task) in BENCHMARKS.items()
        },
        "box_format": BOX_FORMAT,
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
