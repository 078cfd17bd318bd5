"""Task typing: recall per task on the labelled set (tests/data/typing_prompts.jsonl) by split (dev: rows
looked at while writing the rules; heldout: rows kept out until the end), with 95% Wilson intervals, and
typing throughput (samples per CPU second, median of 5 repeats) with the decision cache cold and warm.

Prints two tables and writes JSON (default bench/out/typing.json).

    .venv/bin/python bench/bench_typing.py [--samples 600] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "typing_prompts.jsonl"


def recall_table(rows: list[dict]) -> list[dict]:
    """Per (split, task): n, hits, recall and its 95% Wilson interval; plus an `overall` row per split."""
    from scipy.stats import binomtest

    from mixatlas.atlas.task_rules import classify_turn
    from mixatlas.corpus.sample import TASKS

    out = []
    for split in ("dev", "heldout", "all"):
        chosen = [row for row in rows if split == "all" or row["split"] == split]
        hits, totals = Counter(), Counter()
        for row in chosen:
            totals[row["task"]] += 1
            hits[row["task"]] += classify_turn(row["prompt"], row["answer"])[0] == row["task"]
        for task in (*TASKS, "overall"):
            n = len(chosen) if task == "overall" else totals[task]
            k = sum(hits.values()) if task == "overall" else hits[task]
            interval = binomtest(k, n).proportion_ci(0.95, method="wilson")
            out.append({"split": split, "task": task, "n": n, "hits": k, "recall": k / n,
                        "ci_low": interval.low, "ci_high": interval.high})
    return out


def throughput(samples: list, label: str) -> list[dict]:
    """Samples per CPU second of `TaskTyper('auto').type` with the decision cache cold, then warm."""
    from mixatlas.atlas import task_rules
    from mixatlas.atlas.tasks import TaskTyper

    typer = TaskTyper.from_spec("auto")
    results = []
    for cache in ("cold", "warm"):
        rates = []
        for _ in range(5):
            if cache == "cold":
                task_rules._classify.cache_clear()
            start = time.process_time()
            for sample in samples:
                typer.type(sample)
            rates.append(len(samples) / max(time.process_time() - start, 1e-9))
        results.append({"data": label, "cache": cache, "samples": len(samples), "median_per_cpu_s":
                        statistics.median(rates), "min": min(rates), "max": max(rates)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600, help="synthetic corpus size for throughput")
    parser.add_argument("--json", type=Path, default=Path("bench/out/typing.json"))
    args = parser.parse_args()

    from mixatlas.corpus.readers import read_corpus
    from mixatlas.corpus.sample import Sample
    from mixatlas.corpus.synth import synthesize

    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    recalls = recall_table(rows)
    print(f"{'split':8} {'task':11} {'n':>4} {'hits':>4} {'recall':>7} {'95% CI':>15}")
    for r in recalls:
        print(f"{r['split']:8} {r['task']:11} {r['n']:>4} {r['hits']:>4} {r['recall']:>7.3f} "
              f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")

    labelled = [Sample(id=str(i), source="web", image=f"/data/web/{i}.jpg",
                       conversations=[{"from": "human", "value": "<image>\n" + row["prompt"]},
                                      {"from": "gpt", "value": row["answer"]}]) for i, row in enumerate(rows)]
    with tempfile.TemporaryDirectory(prefix="bench-typing-") as tmp:
        synthesize(Path(tmp), args.samples, seed=0, eval_per_benchmark=0, workers=1)
        synthetic = list(read_corpus(Path(tmp) / "train.jsonl"))
    speeds = throughput(labelled, "labelled prompts") + throughput(synthetic, "synthetic corpus")
    print(f"\n{'data':18} {'cache':5} {'samples':>7} {'per CPU s (median)':>19} {'min':>8} {'max':>8}")
    for s in speeds:
        print(f"{s['data']:18} {s['cache']:5} {s['samples']:>7} {s['median_per_cpu_s']:>19.0f} "
              f"{s['min']:>8.0f} {s['max']:>8.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "typing", "recall": recalls, "throughput": speeds}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
