"""Proxy benchmarks: does the tiny proxy respond to the mixture, and how fast does it train?

    python bench/bench_proxy.py --response [--seeds 10] [--steps 150]    # matched vs mismatched mixtures
    python bench/bench_proxy.py --throughput                              # tiny preset on CPU
    python bench/bench_proxy.py --throughput --gpu [--peak-tflops 989]    # 0.5B-class config in bf16, MFU

Each mode prints a table and writes bench/out/proxy_<mode>.json. The response bench builds a synthetic
corpus and atlas under --work; it reads the samples' meta.domain to map each benchmark's domain to the
atlas concept holding most of that domain (the bench may read meta; the library never does).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
CONCENTRATION = 0.8  # weight on the concentrated cell; the rest spread uniformly so all formats are seen


def prepare_atlas(work: Path, samples: int, k: int, seed: int = 0) -> tuple[Path, Path]:
    """(corpus folder, atlas folder) under `work`, built once and reused."""
    from mixatlas.atlas import build_atlas
    from mixatlas.corpus.synth import synthesize

    corpus, atlas = work / "corpus", work / "atlas"
    if not (corpus / "synth.json").exists():
        synthesize(corpus, samples, seed)
    if not (atlas / "atlas.json").exists():
        build_atlas(corpus, atlas, embedder="pixels", k=k, progress=False)
    return corpus, atlas


def domain_concepts(corpus: Path, atlas_dir: Path) -> dict[str, int]:
    """Each meta.domain -> the atlas concept holding most of its training samples."""
    from mixatlas.atlas import Atlas
    from mixatlas.corpus.readers import read_corpus

    table = Atlas.load(atlas_dir).table(["id", "concept"])
    concept_of = dict(zip(table.column("id").to_pylist(), table.column("concept").to_pylist(), strict=True))
    votes: dict[str, Counter] = {}
    for sample in read_corpus(corpus):
        if sample.id in concept_of:
            votes.setdefault(str(sample.meta.get("domain")), Counter())[concept_of[sample.id]] += 1
    return {domain: counter.most_common(1)[0][0] for domain, counter in votes.items()}


def concentrated(atlas_dir: Path, concept: int, task: str):
    """A mixture with CONCENTRATION on cell (concept, task) and the rest uniform over all cells."""
    from mixatlas.atlas import Atlas
    from mixatlas.space import Mixture

    atlas = Atlas.load(atlas_dir)
    weights = np.full((len(atlas.concepts), len(atlas.tasks)), (1 - CONCENTRATION) / (atlas.counts.size))
    weights[concept, list(atlas.tasks).index(task)] += CONCENTRATION
    return Mixture(tuple(atlas.concepts), tuple(atlas.tasks), weights)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): a t-based 95% interval of the mean."""
    from scipy.stats import t

    arr = np.asarray(values, dtype=np.float64)
    half = t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else math.nan
    return float(arr.mean()), float(arr.mean() - half), float(arr.mean() + half)


def run_response(args: argparse.Namespace) -> dict:
    """Matched vs mismatched concentration per benchmark over seeds; wins and mean NLL gap."""
    from mixatlas.objectives.proxy import ProxyConfig, train_proxy

    corpus, atlas_dir = prepare_atlas(Path(args.work), args.samples, args.k)
    benchmarks = json.loads((corpus / "synth.json").read_text())["benchmarks"]
    concept_of = domain_concepts(corpus, atlas_dir)
    cells = {name: (concept_of[b["domain"]], b["task"]) for name, b in benchmarks.items()}
    names = sorted(cells)
    # Mismatch: the next benchmark (cyclically) whose cell differs in both concept and task, else any cell.
    mismatch = {}
    for i, name in enumerate(names):
        others = names[i + 1 :] + names[:i]
        both = [o for o in others if cells[o][0] != cells[name][0] and cells[o][1] != cells[name][1]]
        mismatch[name] = (both or [o for o in others if cells[o] != cells[name]])[0]
    # max_epochs is lifted: the bench measures the response to the mixture, not the epoch cap.
    config = ProxyConfig(steps=args.steps, eval_generate=False, eval_samples=args.eval_samples,
                         max_epochs=1e6)
    nll: dict[tuple[str, int], dict[str, float]] = {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for name in names:
            mixture = concentrated(atlas_dir, *cells[name])
            run_dir = Path(args.work) / "runs" / f"{name}-s{seed}"
            nll[(name, seed)] = train_proxy(atlas_dir, mixture, config, run_dir, seed, progress=False).metrics
            elapsed = time.perf_counter() - started
            print(f"  seed {seed} concentrated on {name}: {elapsed:.0f} s", file=sys.stderr)
    rows = []
    for name in names:
        metric = f"{name}/nll"
        gaps = [nll[(mismatch[name], s)][metric] - nll[(name, s)][metric] for s in range(args.seeds)]
        mean, low, high = mean_ci(gaps)
        rows.append({"benchmark": name, "cell": list(cells[name]), "mismatch": mismatch[name],
                     "wins": int(sum(g > 0 for g in gaps)), "seeds": args.seeds,
                     "gap_mean": mean, "gap_ci": [low, high]})
    print(f"\nresponse to the mixture: {args.steps} steps, {args.samples}-sample atlas (k={args.k}), "
          f"{args.seeds} seeds; gap = NLL(mismatched) - NLL(matched), > 0 means matched wins")
    print(f"{'benchmark':<24}{'cell':>18}{'mismatch':>24}{'wins':>8}{'gap':>9}{'95% CI':>20}")
    for r in rows:
        cell = f"({r['cell'][0]}, {r['cell'][1]})"
        print(f"{r['benchmark']:<24}{cell:>18}{r['mismatch']:>24}{r['wins']:>5}/{r['seeds']:<2}"
              f"{r['gap_mean']:>9.4f}   [{r['gap_ci'][0]:.4f}, {r['gap_ci'][1]:.4f}]")
    return {"mode": "response", "steps": args.steps, "samples": args.samples, "k": args.k,
            "seeds": args.seeds, "wall_s": round(time.perf_counter() - started, 1), "rows": rows}


def steady_rates(run_dir: Path, samples_per_step: int, skip: int) -> tuple[float, float]:
    """(samples/s, tokens/s) from a run's train_log.jsonl, after `skip` warm-up steps."""
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    timed = log[skip:]
    seconds = timed[-1]["elapsed_s"] - log[skip - 1]["elapsed_s"]
    return len(timed) * samples_per_step / seconds, sum(r["tokens"] for r in timed) / seconds


def run_throughput_cpu(args: argparse.Namespace) -> dict:
    """Tiny preset on CPU: steady-state samples/s and tokens/s of the training loop."""
    import torch

    from mixatlas.atlas import Atlas
    from mixatlas.objectives.proxy import ProxyConfig, resolve_mixture, train_proxy

    _, atlas_dir = prepare_atlas(Path(args.work), args.samples, args.k)
    config = ProxyConfig(steps=args.steps, eval_generate=False, eval_samples=8)
    run_dir = Path(args.work) / "runs" / "throughput-cpu"
    result = train_proxy(atlas_dir, resolve_mixture("uniform", Atlas.load(atlas_dir)), config, run_dir, 0,
                         progress=False)
    samples_s, tokens_s = steady_rates(run_dir, config.samples_per_step, skip=5)
    row = {"mode": "throughput-cpu", "threads": torch.get_num_threads(), "batch_size": config.batch_size,
           "steps": args.steps, "samples_per_s": samples_s, "tokens_per_s": tokens_s, "run_s": result.cost_s}
    print(f"tiny preset on CPU ({row['threads']} threads, batch {config.batch_size}): "
          f"{samples_s:.1f} samples/s, {tokens_s:.0f} tokens/s (whole run {result.cost_s:.1f} s)")
    return row


def write_random_towers(folder: Path, atlas_dir: Path) -> tuple[Path, Path]:
    """Random-init Qwen2-0.5B-sized LM and CLIP ViT-L/14-336-sized vision tower saved as local paths.

    The LM folder gets the atlas's BPE tokenizer (its ids fit in the 151936-row embedding); no download.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

    from mixatlas.atlas import Atlas
    from mixatlas.objectives.proxy import ProxyConfig
    from mixatlas.objectives.proxy.tokenizer import cached_bpe_tokenizer

    vision_dir, lm_dir = folder / "vision", folder / "lm"
    torch.manual_seed(0)
    if not (vision_dir / "config.json").exists():
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14)
        CLIPVisionModel(vision).save_pretrained(vision_dir)
    if not (lm_dir / "config.json").exists():
        lm = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         tie_word_embeddings=True)
        Qwen2ForCausalLM(lm).save_pretrained(lm_dir)
        conversations = Atlas.load(atlas_dir).table(["conversations"]).column("conversations").to_pylist()
        cached_bpe_tokenizer(atlas_dir, conversations, ProxyConfig().tiny.vocab_size).save_pretrained(lm_dir)
    return vision_dir, lm_dir


def run_throughput_gpu(args: argparse.Namespace) -> dict:
    """0.5B-class LLaVA (Qwen2-0.5B-sized LM + ViT-L/14-336 tower) in bf16 on one GPU: tokens/s and MFU.

    MFU = model FLOPs per second / peak, with training FLOPs = 6 x (LM params x sequence tokens + vision
    params x image patches) per sample, the standard 6ND estimate split by what each tower processes.
    """
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device (run --throughput --gpu on a GPU machine)")
        return {"mode": "throughput-gpu", "skipped": "no CUDA device"}
    from mixatlas.atlas import Atlas
    from mixatlas.objectives.proxy import ProxyConfig, resolve_mixture, train_proxy
    from mixatlas.objectives.proxy.model import load_pretrained_proxy

    _, atlas_dir = prepare_atlas(Path(args.work), args.samples, args.k)
    vision, lm = write_random_towers(Path(args.work) / "towers", atlas_dir)
    proxy = load_pretrained_proxy(str(vision), str(lm))
    lm_params = sum(p.numel() for p in proxy.model.model.language_model.parameters())
    vision_params = sum(p.numel() for p in proxy.model.model.vision_tower.parameters())
    vision_params += sum(p.numel() for p in proxy.model.model.multi_modal_projector.parameters())
    patches = proxy.chat.image_seq_length + 1
    del proxy
    config = ProxyConfig(preset="custom", vision=str(vision), lm=str(lm), steps=args.steps,
                         batch_size=args.gpu_batch, lr=1e-4, warmup_steps=5, bf16=True, compile=args.compile,
                         max_len=704, eval_generate=False, eval_samples=8, eval_batch_size=8,
                         num_workers=args.workers)
    run_dir = Path(args.work) / "runs" / "throughput-gpu"
    uniform = resolve_mixture("uniform", Atlas.load(atlas_dir))
    train_proxy(atlas_dir, uniform, config, run_dir, 0, progress=False)
    samples_s, tokens_s = steady_rates(run_dir, config.samples_per_step, skip=min(10, args.steps // 2))
    flops_s = 6 * (lm_params * tokens_s + vision_params * patches * samples_s)
    mfu = flops_s / (args.peak_tflops * 1e12)
    row = {"mode": "throughput-gpu", "device": torch.cuda.get_device_name(), "lm_params": lm_params,
           "vision_params": vision_params, "batch_size": config.batch_size, "steps": args.steps,
           "samples_per_s": samples_s, "tokens_per_s": tokens_s, "model_tflops": flops_s / 1e12,
           "peak_tflops": args.peak_tflops, "mfu": mfu}
    print(f"0.5B-class bf16 on {row['device']}: LM {lm_params / 1e6:.0f}M + vision "
          f"{vision_params / 1e6:.0f}M params, batch {config.batch_size}: {samples_s:.1f} samples/s, "
          f"{tokens_s:.0f} tokens/s, "
          f"{flops_s / 1e12:.1f} TFLOP/s, MFU {100 * mfu:.1f}% of {args.peak_tflops:g}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--response", action="store_true", help="matched vs mismatched mixture per benchmark")
    mode.add_argument("--throughput", action="store_true", help="samples/s and tokens/s")
    parser.add_argument("--gpu", action="store_true", help="with --throughput: the 0.5B-class GPU config")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 TFLOP/s (H100/H200)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--samples", type=int, default=2000, help="synthetic corpus size")
    parser.add_argument("--k", type=int, default=8, help="atlas concepts")
    parser.add_argument("--eval-samples", type=int, default=48, help="samples per benchmark")
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8, help="GPU path: image-decoding workers")
    parser.add_argument("--compile", action="store_true", help="GPU path: torch.compile")
    parser.add_argument("--work", default=str(OUT / "proxy-work"), help="corpus, atlas and runs go here")
    args = parser.parse_args()
    if args.response:
        report, name = run_response(args), "proxy_response"
    elif args.gpu:
        report, name = run_throughput_gpu(args), "proxy_throughput_gpu"
    else:
        report, name = run_throughput_cpu(args), "proxy_throughput_cpu"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {OUT / f'{name}.json'}")


if __name__ == "__main__":
    main()
