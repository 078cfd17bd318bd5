"""`mixatlas decompose --sample S` on a large synthetic corpus: peak memory and assignment rate.

What is measured, honestly:
  corpus   N JSONL records (LLaVA turns, 5 task families of prompts) whose images are drawn from a pool of
           P small PNGs (default 256 of 64x64). Every record is read, every image ref is opened and decoded
           (the OS file cache keeps the small pool hot, so disk reads are nearly free), every image is
           embedded with the offline `pixels` embedder, typed and assigned. A real corpus with N distinct
           larger images decodes more slowly; the memory figure does not depend on that.
  run      `mixatlas decompose CORPUS --sample S --workers W` in its own process. A poller sums the RSS of
           that process and its workers every 0.2 s (peak reported; goal < 2 GB at N = 1M) and timestamps
           the three steps by the files they finish: OUT-sample/subset.jsonl (reservoir pass),
           OUT-sample/atlas/atlas.json (subset embedded + clustered), OUT/atlas.json (every sample assigned).
  rate     assignment rate = samples assigned / seconds of the assignment pass (read + decode + embed +
           nearest centroid + samples.parquet), and the whole command's samples / second. Wall rates depend
           on how busy the cores are; `cpu_ms_per_sample` (CPU time of the command and its workers per
           sample) does much less.

Prints a table and writes JSON (default bench/out/decompose_sample.json). Several --n give the memory
trend (flat in N is the claim). On 2 shared cores N = 1M takes tens of minutes; use --n 100000 for a check.

    .venv/bin/python bench/bench_decompose_sample.py --n 100000 [--n 1000000] [--sample 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = (
    ("captioning", "Describe this image in detail.", "A picture with several coloured shapes."),
    ("ocr", "What is written in the image?", "STOP 42"),
    ("grounding", "Where is the red square? Answer with a box.", "[0.12, 0.30, 0.55, 0.71]"),
    ("detection", "Detect all instances of circles.",
     "circle: [0.1, 0.1, 0.3, 0.3]; circle: [0.5, 0.5, 0.9, 0.9]"),
    ("vqa", "How many shapes are there?", "3"),
)


def write_corpus(folder: Path, n: int, pool: int, seed: int = 0) -> Path:
    """N records over a pool of `pool` generated PNGs; returns the JSONL path."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(pool):
        background = tuple(int(c) for c in rng.integers(0, 256, 3))
        image = Image.new("RGB", (64, 64), background)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 5))):
            x, y = (int(v) for v in rng.integers(0, 48, 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.rectangle([x, y, x + int(rng.integers(8, 16)), y + int(rng.integers(8, 16))], fill=colour)
        image.save(images / f"{i:04d}.png")
    path = folder / "train.jsonl"
    picks = rng.integers(0, pool, n)
    kinds = rng.integers(0, len(PROMPTS), n)
    with open(path, "w") as handle:
        for row in range(n):
            _, prompt, answer = PROMPTS[kinds[row]]
            handle.write(json.dumps({
                "id": f"s{row}", "image": f"images/{picks[row]:04d}.png", "source": f"src{row % 7}",
                "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                  {"from": "gpt", "value": answer}]}) + "\n")
    return path


class TreeWatcher:
    """Polls a process tree's summed RSS and the times at which marker files appear."""

    def __init__(self, pid: int, markers: dict[str, Path], period_s: float = 0.2) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.markers = markers
        self.period_s = period_s
        self.peak_rss = 0
        self.cpu_by_pid: dict[int, float] = {}  # last seen user+system seconds of each process of the tree
        self.times: dict[str, float] = {}
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                rss = 0
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                        self.cpu_by_pid[proc.pid] = times.user + times.system
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                pass
            now = time.perf_counter() - self.started
            for name, path in self.markers.items():
                if name not in self.times and path.exists():
                    self.times[name] = now
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_one(n: int, sample: int, workers: int, pool: int, k: int, scratch: Path) -> dict:
    corpus_dir = scratch / f"corpus-{n}"
    started = time.perf_counter()
    corpus = write_corpus(corpus_dir, n, pool)
    corpus_s = time.perf_counter() - started
    out = scratch / f"atlas-{n}"
    command = [sys.executable, "-c", "from mixatlas.cli import main; main()", "decompose", str(corpus),
               "--out", str(out), "--sample", str(sample), "--k", str(k), "--workers", str(workers),
               "--source-field", "source"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    subset = out.with_name(out.name + "-sample")
    watcher = TreeWatcher(proc.pid, {"reservoir": subset / "subset.jsonl",
                                     "subset_atlas": subset / "atlas" / "atlas.json",
                                     "atlas": out / "atlas.json"})
    _, stderr = proc.communicate()
    total_s = time.perf_counter() - watcher.started
    watcher.stop()
    cpu_s = sum(watcher.cpu_by_pid.values())  # the command and its workers, as last polled (0.2 s)
    if proc.returncode != 0:
        raise SystemExit(f"decompose failed (exit {proc.returncode}): {stderr.strip()[-2000:]}")
    info = json.loads((out / "atlas.json").read_text())
    assigned = int(info["n_samples"])
    times = watcher.times
    assign_s = total_s - times.get("subset_atlas", 0.0)
    row = {
        "n": n, "sample": sample, "workers": workers, "image_pool": pool, "k": k,
        "assigned": assigned, "rejects": int(info["rejects"]),
        "peak_rss_mb": round(watcher.peak_rss / 2**20, 1), "goal_mb": 2048,
        "reservoir_s": round(times.get("reservoir", float("nan")), 1),
        "subset_atlas_s": round(times.get("subset_atlas", float("nan")) - times.get("reservoir", 0.0), 1),
        "assign_s": round(assign_s, 1), "total_s": round(total_s, 1),
        "assign_rate_per_s": round(assigned / assign_s, 1),
        "overall_rate_per_s": round(assigned / total_s, 1),
        "cpu_s": round(cpu_s, 1), "cpu_ms_per_sample": round(1000 * cpu_s / assigned, 2),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        "corpus_write_s": round(corpus_s, 1),
        "corpus_jsonl_mb": round(corpus.stat().st_size / 2**20, 1),
    }
    shutil.rmtree(corpus_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(subset, ignore_errors=True)
    return row


RESERVOIR_ONLY = """
import sys
from mixatlas.atlas.subset import reservoir
from mixatlas.corpus import Rejects, read_corpus
with Rejects(None) as rejects:
    kept = reservoir(read_corpus(sys.argv[1], rejects=rejects), int(sys.argv[2]), 0)
print(len(kept))
"""


def run_reservoir_only(n: int, sample: int, pool: int, scratch: Path) -> dict:
    """Only step 1 (the read pass that keeps the reservoir) on N records: the O(N) part of the memory
    (the reader's id set), without the hours the embedding of N images takes on 2 cores."""
    corpus = write_corpus(scratch / f"corpus-{n}", n, pool)
    proc = subprocess.Popen([sys.executable, "-c", RESERVOIR_ONLY, str(corpus), str(sample)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = TreeWatcher(proc.pid, {})
    out, err = proc.communicate()
    seconds = time.perf_counter() - watcher.started
    watcher.stop()
    if proc.returncode != 0:
        raise SystemExit(f"reservoir pass failed: {err.strip()[-2000:]}")
    shutil.rmtree(scratch / f"corpus-{n}", ignore_errors=True)
    return {"n": n, "sample": sample, "step": "reservoir pass only", "kept": int(out.strip()),
            "peak_rss_mb": round(watcher.peak_rss / 2**20, 1), "seconds": round(seconds, 1),
            "records_per_s": round(n / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="corpus sizes (repeatable); default 100000")
    parser.add_argument("--sample", type=int, default=20_000, help="--sample S of decompose")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", type=int, default=256, help="distinct images the records point to")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reservoir-only", action="store_true",
                        help="measure only the read pass that keeps the reservoir (fast at N = 1M)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "decompose_sample.json")
    args = parser.parse_args()
    sizes = args.n or [100_000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decompose-sample-") as scratch:
        for n in sizes:
            if args.reservoir_only:
                rows.append(run_reservoir_only(n, min(args.sample, n), args.pool, Path(scratch)))
            else:
                rows.append(run_one(n, min(args.sample, n), args.workers, args.pool, args.k, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    columns = ("n", "sample", "assigned", "peak_rss_mb", "reservoir_s", "subset_atlas_s", "assign_s",
               "assign_rate_per_s", "overall_rate_per_s", "cpu_ms_per_sample")
    if args.reservoir_only:
        columns = ("n", "sample", "kept", "peak_rss_mb", "seconds", "records_per_s")
    print("\n" + " | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[column]) for column in columns))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "decompose --sample", "cpus": os.cpu_count(), "rows": rows},
                                    indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
