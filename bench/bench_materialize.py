"""Materialize throughput and memory: a llava manifest of N samples from a synthetic 1M-row atlas.

Writes a 1M-row atlas (samples.parquet + atlas.json, 10 concepts x 5 tasks, 200 sources) with pyarrow, then
materializes N = 1M and N = 10M samples, each in a fresh process so its peak RSS is its own. Prints a table
and writes bench/out/materialize.json. The manifests are deleted afterwards (10M lines are ~2 GB).

    .venv/bin/python bench/bench_materialize.py [--rows 1000000] [--samples 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
K = 10
MAX_EPOCHS = 50.0


def write_atlas(folder: Path, rows: int, seed: int = 0) -> None:
    """A synthetic atlas folder of `rows` samples readable by `mixatlas.atlas.Atlas.load`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixatlas.atlas import AtlasInfo

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    concept = rng.integers(0, K, rows).astype(np.int32)
    task_idx = rng.integers(0, len(TASKS), rows)
    source_idx = rng.integers(0, 200, rows)
    ids = pa.array(np.char.add("s", np.arange(rows).astype(str)))
    sources = pa.array([f"source-{i:03d}" for i in range(200)]).take(pa.array(source_idx))
    images = pa.array(np.char.add(np.char.add("/data/images/", np.arange(rows).astype(str)), ".jpg"))
    conversation = json.dumps([{"from": "human", "value": "<image>\nWhat is shown?"},
                               {"from": "gpt", "value": "A photo of a chart with two bars."}])
    table = pa.table({
        "id": ids, "source": sources, "image": images, "concept": pa.array(concept),
        "task": pa.array(list(TASKS)).take(pa.array(task_idx)),
        "shard": pa.array(["shard-0"] * rows), "offset": pa.array(np.arange(rows)),
        "conversations": pa.array([conversation] * rows),
    })
    pq.write_table(table, folder / "samples.parquet")
    counts = np.zeros((K, len(TASKS)), np.int64)
    np.add.at(counts, (concept, task_idx), 1)
    info = AtlasInfo(corpus="synthetic", format="jsonl", source_field=None, embedder="none", k=K,
                     tasks=tuple(TASKS), task_rules="rules", concepts=tuple(f"c{i}" for i in range(K)),
                     counts=counts.tolist(), n_samples=rows, rejects=0, rejects_by_reason={},
                     fingerprint=f"bench-{rows}-{seed}", centroids_fingerprint="bench", seed=seed)
    info.write(folder / "atlas.json")


def run_one(atlas_dir: Path, samples: int, out: Path) -> dict:
    """Materialize in this process; returns timing and this process's peak RSS."""
    from mixatlas.atlas import Atlas
    from mixatlas.recipe import Recipe, materialize
    from mixatlas.space import Mixture

    atlas = Atlas.load(atlas_dir)
    weights = np.random.default_rng(1).dirichlet(np.full(K * len(TASKS), 20.0)).reshape(K, len(TASKS))
    recipe = Recipe(Mixture(tuple(atlas.concepts), tuple(atlas.tasks), weights), atlas.fingerprint,
                    atlas.centroids_fingerprint)
    start = time.perf_counter()
    materialize(atlas, recipe, samples, out, format="llava", max_epochs=MAX_EPOCHS, seed=0, overwrite=True)
    seconds = time.perf_counter() - start
    size = (out / "manifest.jsonl").stat().st_size
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, default=Path("bench/out/materialize-work"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one N, print JSON
    args = parser.parse_args()
    atlas_dir = args.work / "atlas"
    if args.one:
        print(json.dumps(run_one(atlas_dir, args.one, args.work / f"out-{args.one}")))
        return

    start = time.perf_counter()
    write_atlas(atlas_dir, args.rows)
    print(f"synthetic atlas: {args.rows} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    results = []
    for n in args.samples:
        child = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--one", str(n)],
                               check=True, capture_output=True, text=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        shutil.rmtree(args.work / f"out-{n}")
    print(f"{'samples':>12} {'seconds':>8} {'samples/s':>12} {'peak RSS MB':>12} {'GB written':>10}")
    for r in results:
        print(f"{r['samples']:>12,} {r['seconds']:>8.2f} {r['samples_per_s']:>12,.0f}"
              f" {r['peak_rss_mb']:>12.0f} {r['bytes'] / 1e9:>10.2f}")
    # the per-sample rate once the atlas is read and its lines built (the fixed cost cancels out)
    first, last = results[0], results[-1]
    marginal = None  # needs two sizes
    if last["samples"] != first["samples"] and last["seconds"] > first["seconds"]:
        marginal = (last["samples"] - first["samples"]) / (last["seconds"] - first["seconds"])
        print(f"marginal rate, N={first['samples']:,} -> {last['samples']:,}: {marginal:,.0f} samples/s")
    report = {"bench": "materialize", "atlas_rows": args.rows, "format": "llava", "results": results,
              "marginal_samples_per_s": marginal}
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/materialize.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(atlas_dir)


if __name__ == "__main__":
    main()
