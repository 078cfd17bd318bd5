"""Atlas benchmarks: k-means time, peak memory of the atlas table build, pixels-embedder throughput.

  kmeans   `mixatlas.atlas.cluster.kmeans` on N x 512 float32 embeddings (10 noisy blobs), k=10
           (target for N = 1M on 2 cores: <= 60 s).
  table    from an embedding cache of N samples x 512 (written first, like `decompose` leaves it), the
           post-embedding build in a fresh process: k-means training sample, k-means, and the streaming
           samples.parquet + counts pass. Reports its time and peak RSS (target for 1M: <= 4 GB).
  pixels   the `pixels` embedder on synthetic corpus images: descriptor only, and decode + descriptor.

Prints a table and writes JSON (default bench/out/atlas.json).

    .venv/bin/python bench/bench_atlas.py [--n 1000000] [--images 400] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512
K = 10
TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")


def blob_embeddings(rng: np.random.Generator, n: int, centres_kd: np.ndarray) -> np.ndarray:
    """(n, d) float32 points around random centres (unit-norm centres plus noise of similar scale)."""
    labels = rng.integers(0, len(centres_kd), n)
    points = rng.standard_normal((n, centres_kd.shape[1]), dtype=np.float32) * np.float32(0.04)
    points += centres_kd[labels]
    return points


def bench_kmeans(n: int, seed: int = 0) -> dict:
    from mixatlas.atlas.cluster import kmeans

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = blob_embeddings(rng, n, centres)
    start = time.perf_counter()
    labels, _ = kmeans(x, K, seed)
    seconds = time.perf_counter() - start
    return {"n": n, "dim": DIM, "k": K, "seconds": round(seconds, 2), "target_s": 60,
            "cluster_sizes_min_max": [int(np.bincount(labels).min()), int(np.bincount(labels).max())]}


def write_cache(folder: Path, n: int, seed: int = 0) -> None:
    """An EmbeddingCache of n samples (shards of SHARD_SIZE), as the embedding pass would leave it."""
    from mixatlas.atlas.cache import SHARD_SIZE, EmbeddingCache

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    key = {"fingerprint": f"bench-{n}", "format": "jsonl", "source_field": None, "embedder": "bench",
           "dim": DIM, "tasks": "rules", "shard_size": SHARD_SIZE}
    cache = EmbeddingCache(folder, key)
    conversation = json.dumps([{"from": "human", "value": "<image>\nWhat is the value of the tallest bar?"},
                               {"from": "gpt", "value": "The tallest bar, labelled March, shows 42."}])
    for index, start in enumerate(range(0, n, SHARD_SIZE)):
        size = min(SHARD_SIZE, n - start)
        positions = np.arange(start, start + size)
        rows = {
            "id": [f"s{i}" for i in positions], "source": [f"source-{i % 50:02d}" for i in positions],
            "image": [f"/data/images/{i:08d}.png" for i in positions],
            "task": [TASKS[i % len(TASKS)] for i in positions], "shard": ["train.jsonl"] * size,
            "offset": positions.tolist(), "conversations": [conversation] * size,
            "task_rule": ["given"] * size, "task_mix": [f"{TASKS[i % len(TASKS)]}:1" for i in positions],
        }
        cache.write(index, blob_embeddings(rng, size, centres), rows, [])
    cache.mark_complete(True)


def build_table_child(cache_dir: str, out_dir: str, queue: multiprocessing.Queue) -> None:
    """Fresh process: clustering + samples.parquet from the cache; reports seconds and peak RSS."""
    from mixatlas.atlas.build import KMEANS_MAX_TRAIN, training_sample, write_samples_table
    from mixatlas.atlas.cache import EmbeddingCache
    from mixatlas.atlas.cluster import kmeans

    manifest = json.loads((Path(cache_dir) / "manifest.json").read_text())
    baseline_mb = peak_rss_mb()
    start = time.perf_counter()
    cache = EmbeddingCache(Path(cache_dir), manifest["key"])
    _, centroids = kmeans(training_sample(cache, KMEANS_MAX_TRAIN, 0), K, 0)
    summary = write_samples_table(cache, centroids, TASKS, Path(out_dir) / "samples.parquet")
    queue.put({"seconds": round(time.perf_counter() - start, 2), "n_samples": summary.n_samples,
               "baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_rss_mb()})


def peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent across fork + exec, so a spawned child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_table(n: int, workdir: Path) -> dict:
    cache_dir, out_dir = workdir / "embeddings", workdir / "atlas"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_cache(cache_dir, n)
    cache_seconds = time.perf_counter() - start
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=build_table_child, args=(str(cache_dir), str(out_dir), queue))
    child.start()
    result = queue.get()
    child.join()
    size_mb = (out_dir / "samples.parquet").stat().st_size / 2**20
    return {"n": n, "dim": DIM, "write_cache_s": round(cache_seconds, 1), **result,
            "samples_parquet_mb": round(size_mb), "target_rss_mb": 4096}


def bench_pixels(images: int, workdir: Path) -> dict:
    from mixatlas.atlas.embed import PixelEmbedder
    from mixatlas.corpus import open_image, read_corpus
    from mixatlas.corpus.synth import synthesize

    corpus = workdir / "synth"
    synthesize(corpus, images, 0)
    refs = [sample.image for sample in read_corpus(corpus)]
    prepare = PixelEmbedder().preprocessor()
    start = time.perf_counter()
    decoded = [open_image(ref) for ref in refs]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    for image in decoded:
        prepare(image)
    describe_s = time.perf_counter() - start
    size = decoded[0].size
    return {"images": len(refs), "image_size": list(size),
            "descriptor_images_per_s": round(len(refs) / describe_s),
            "decode_and_descriptor_images_per_s": round(len(refs) / (decode_s + describe_s)),
            "note": "one core, in-process; decompose spreads this over --workers processes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="embeddings for kmeans and table (1M)")
    parser.add_argument("--images", type=int, default=400, help="synthetic images for pixels throughput")
    parser.add_argument("--only", choices=("kmeans", "table", "pixels"), nargs="*", default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "atlas.json")
    args = parser.parse_args()
    selected = args.only or ["kmeans", "table", "pixels"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-atlas-"))
    results: dict = {"cpus": os.cpu_count()}
    try:
        if "kmeans" in selected:
            results["kmeans"] = bench_kmeans(args.n)
            print("kmeans:", results["kmeans"], file=sys.stderr, flush=True)
        if "table" in selected:
            results["table"] = bench_table(args.n, workdir)
            print("table:", results["table"], file=sys.stderr, flush=True)
        if "pixels" in selected:
            results["pixels"] = bench_pixels(args.images, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"atlas benchmarks ({results['cpus']} CPUs)")
    for column in ("benchmark", "measure", "value", "target"):
        table.add_column(column)
    if "kmeans" in results:
        r = results["kmeans"]
        table.add_row("kmeans", f"{r['n']:,} x {r['dim']}, k={r['k']}", f"{r['seconds']} s", "<= 60 s")
    if "table" in results:
        r = results["table"]
        table.add_row("atlas table", f"{r['n']:,} samples: peak RSS", f"{r['peak_rss_mb']} MB", "<= 4096 MB")
        table.add_row("", "time (k-means + samples.parquet)", f"{r['seconds']} s", "")
    if "pixels" in results:
        r = results["pixels"]
        table.add_row("pixels embedder", "descriptor", f"{r['descriptor_images_per_s']} img/s", "")
        table.add_row("", "decode + descriptor", f"{r['decode_and_descriptor_images_per_s']} img/s", "")
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
