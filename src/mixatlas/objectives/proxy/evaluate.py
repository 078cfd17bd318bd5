"""Benchmark evaluation of a proxy: teacher-forced answer NLL per token, and greedy decoding scored by
exact match, ANLS (OCR samples) and IoU>=0.5 (grounding samples).

Benchmarks are LLaVA JSONL files `<eval_dir>/<name>.jsonl`. Which extra metrics a benchmark gets follows
its samples' task, typed by the atlas's own task rules (a `task` field first, then the conversation):
ANLS over its "ocr" samples, IoU>=0.5 over its "grounding" samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.proxy import metrics as M
from mixatlas.objectives.proxy.config import ProxyConfig
from mixatlas.objectives.proxy.data import EncodedSamples, ImageLoader, collate, encode_all
from mixatlas.objectives.proxy.model import ProxyModel
from mixatlas.objectives.proxy.runtime import autocast_factory
from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX


@dataclass
class Benchmark:
    """The first samples of one held-out benchmark file: image refs, turn lists and task labels."""

    name: str
    image_refs: list[str | None]
    conversations: list[list[dict]]
    tasks: list[str | None]


def benchmark_files(eval_dir: Path, names: list[str] | None) -> list[Path]:
    """`<eval_dir>/<name>.jsonl` for each name, or every `*.jsonl` there (sorted) when `names` is None."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise MixAtlasError(f"{eval_dir}: no benchmark folder; set eval_dir in the proxy config")
    if names is None:
        files = sorted(eval_dir.glob("*.jsonl"))
        if not files:
            raise MixAtlasError(f"{eval_dir}: no *.jsonl benchmark files; set eval_dir in the proxy config")
        return files
    missing = [n for n in names if not (eval_dir / f"{n}.jsonl").exists()]
    if missing:
        raise MixAtlasError(f"{eval_dir}: no benchmark file for {missing}; fix eval_benchmarks in the config")
    return [eval_dir / f"{n}.jsonl" for n in names]


def read_benchmark(path: Path, max_samples: int, task_rules: str) -> Benchmark:
    """The first `max_samples` samples of a LLaVA JSONL benchmark (read with the corpus reader).

    `task_rules` is the atlas's task-typing spec (`atlas.json` "task_rules"), so benchmark samples get
    their task exactly as training samples did.
    """
    from mixatlas.atlas.tasks import TaskTyper
    from mixatlas.corpus.readers import read_corpus

    typer = TaskTyper.from_spec(task_rules)
    refs, turns, tasks = [], [], []
    for sample in read_corpus(path):
        refs.append(sample.image)
        turns.append(list(sample.conversations))
        tasks.append(typer.task_of(sample))
        if len(refs) >= max_samples:
            break
    if not refs:
        raise MixAtlasError(f"{path}: the benchmark has no readable samples")
    return Benchmark(Path(path).stem, refs, turns, tasks)


def eval_dir_of(config, atlas) -> Path:
    """`config.eval_dir`, else the `eval/` folder beside the atlas's corpus."""
    if config.eval_dir:
        return Path(config.eval_dir)
    corpus = Path(atlas.corpus)
    return (corpus if corpus.is_dir() else corpus.parent) / "eval"


def load_benchmarks(atlas, config) -> list[Benchmark]:
    """The benchmarks a proxy config names (all in the eval folder by default), typed by the atlas's rules."""
    rules = atlas.info.task_rules
    files = benchmark_files(eval_dir_of(config, atlas), config.eval_benchmarks)
    return [read_benchmark(path, config.eval_samples, rules) for path in files]


def _to_device(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def answer_nll(
    proxy: ProxyModel, items: list[dict], batch_size: int, max_len: int, device, autocast
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced NLL summed over each encoded sample's answer tokens, and their counts: two (n,)."""
    import torch
    import torch.nn.functional as F

    sums, counts = [], []
    for start in range(0, len(items), batch_size):
        batch = _to_device(collate(items[start : start + batch_size], proxy.chat.pad_id, max_len), device)
        with torch.no_grad(), autocast():
            logits = proxy.model(
                input_ids=batch["input_ids"],
                pixel_values=batch["pixel_values"],
                attention_mask=batch["attention_mask"],
            ).logits
        labels = batch["labels"][:, 1:]
        token_nll = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        sums.append(token_nll.sum(dim=1).cpu().numpy())
        counts.append((labels != IGNORE_INDEX).sum(dim=1).cpu().numpy())
    return np.concatenate(sums), np.concatenate(counts)


def greedy_answers(
    proxy: ProxyModel, bench: Benchmark, items: list[dict], batch_size: int, max_new_tokens: int, device,
    autocast,
) -> tuple[list[str], list[str]]:
    """(predictions, references): greedy decoding of each sample's last answer from its left-padded prompt.

    `items` are the benchmark's encoded samples (their decoded images are reused).
    """
    import torch

    chat = proxy.chat
    predictions, references = [], []
    for start in range(0, len(bench.conversations), batch_size):
        prompts, refs = zip(
            *(chat.encode_prompt(t) for t in bench.conversations[start : start + batch_size]), strict=True
        )
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), chat.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for b, prompt in enumerate(prompts):
            input_ids[b, width - len(prompt) :] = torch.as_tensor(prompt)
            attention[b, width - len(prompt) :] = 1
        pixels = collate(items[start : start + batch_size], chat.pad_id, 1)["pixel_values"]
        with torch.no_grad(), autocast():
            out = proxy.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                pixel_values=pixels.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=chat.end_id,
                pad_token_id=chat.pad_id,
            )
        predictions += [chat.decode_answer(row[width:].tolist()) for row in out]
        references += list(refs)
    return predictions, references


def score_answers(bench: Benchmark, predictions: list[str], references: list[str]) -> dict[str, float]:
    """`em` over all samples, `anls` over "ocr" samples, `iou50` over "grounding" samples (when present)."""
    pairs = list(zip(predictions, references, strict=True))
    scores = {"em": float(np.mean([M.exact_match(p, r) for p, r in pairs]))}
    ocr = [M.anls(p, r) for p, r, t in zip(predictions, references, bench.tasks, strict=True) if t == "ocr"]
    if ocr:
        scores["anls"] = float(np.mean(ocr))
    hits = [
        M.iou_hit(p, r)
        for p, r, t in zip(predictions, references, bench.tasks, strict=True)
        if t == "grounding"
    ]
    hits = [h for h in hits if h is not None]
    if hits:
        scores["iou50"] = float(np.mean(hits))
    return scores


def evaluate_benchmarks(
    proxy: ProxyModel, benchmarks: list[Benchmark], config: ProxyConfig, device: Any
) -> dict[str, float]:
    """Metrics `"<benchmark>/nll"` (+ em/anls/iou50 with `config.eval_generate`) and `"avg/nll"`.

    Batches of `config.eval_batch_size` cut at `config.max_len`; greedy answers of at most
    `config.eval_max_new_tokens` tokens; bf16 autocast on `device` when `config.bf16`.
    """
    autocast = autocast_factory(config, device)
    batch_size, max_len = config.eval_batch_size, config.max_len
    proxy.model.eval()
    results: dict[str, float] = {}
    for bench in benchmarks:
        images = ImageLoader(proxy.image_size)
        # Each image decoded once, for both the NLL and the generation pass.
        items = encode_all(EncodedSamples(bench.image_refs, bench.conversations, proxy.chat, images), 0)
        sums, counts = answer_nll(proxy, items, batch_size, max_len, device, autocast)
        results[f"{bench.name}/nll"] = M.nll_per_token(sums.tolist(), counts.tolist())
        if config.eval_generate:
            preds, refs = greedy_answers(
                proxy, bench, items, batch_size, config.eval_max_new_tokens, device, autocast
            )
            results.update({f"{bench.name}/{k}": v for k, v in score_answers(bench, preds, refs).items()})
    finite = [results[f"{b.name}/nll"] for b in benchmarks if math.isfinite(results[f"{b.name}/nll"])]
    results["avg/nll"] = float(np.mean(finite)) if finite else math.nan
    return results


def evaluate_saved_proxy(proxy: ProxyModel, atlas_dir: Path, config: ProxyConfig) -> Result:
    """Metrics of a saved proxy on the benchmarks its config names (CPU, or the first GPU)."""
    import torch

    from mixatlas.atlas import Atlas

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    atlas = Atlas.load(atlas_dir)
    benchmarks = load_benchmarks(atlas, config)
    proxy.model.to(device)
    metrics = evaluate_benchmarks(proxy, benchmarks, config, device)
    return Result(metrics=metrics, cost_s=round(time.perf_counter() - started, 3))
