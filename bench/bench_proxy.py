"""Proxy benchmarks: does the tiny proxy respond to the mixture, and how fast does it train?

    python bench/bench_proxy.py --response [--seeds 10] [--steps 150]    # matched vs mismatched mixtures
    python bench/bench_proxy.py --throughput                              # tiny preset on CPU
    python bench/bench_proxy.py --throughput --gpu [--gpu-batch 16,64] [--compile] [--loss full]
                                                 # 0.5B-class training steps in bf16: tokens/s, MFU
    python bench/bench_proxy.py --throughput --gpu --data-path trainer [--workers 14]
                                                 # the same steps through the trainer's own step runner
                                                 # and streamed batches (JPEG decode in workers, packing)
    python bench/bench_proxy.py --throughput --gpu --tiny --steps 3     # the same code on CPU, toy sizes

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


# Qwen2-0.5B-sized LM and CLIP ViT-L/14-336-sized vision tower; `--tiny` shrinks both for a CPU dry run.
GPU_SIZES = {
    "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14),
    "lm": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768),
}
TINY_SIZES = {
    "vision": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   image_size=64, patch_size=16),
    "lm": dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
}
IMAGE_ID = 5  # any id below the text ids drawn by synthetic_items


def random_llava(sizes: dict, attn: str, device, image_id: int = IMAGE_ID):
    """A random-init LlavaForConditionalGeneration of `sizes`, built on `device` (fp32 master weights)."""
    import torch
    from transformers import CLIPVisionConfig, Qwen2Config

    from mixatlas.objectives.proxy.model import llava_from_configs

    vision = CLIPVisionConfig(**sizes["vision"])
    text = Qwen2Config(**sizes["lm"], tie_word_embeddings=True)
    for config in (vision, text):
        config._attn_implementation = attn
    with torch.device(device):
        model = llava_from_configs(vision, text, image_id)
    model.config._attn_implementation = attn
    return model


def synthetic_items(n: int, sizes: dict, max_len: int, rng: np.random.Generator) -> list[dict]:
    """Encoded LLaVA-like samples: one image's tokens, a prompt of 16-64 tokens (unsupervised), an answer
    of 8-64 tokens (supervised), cut at `max_len`; random uint8 images."""
    vision, vocab = sizes["vision"], sizes["lm"]["vocab_size"]
    side = vision["image_size"]
    patches = (side // vision["patch_size"]) ** 2
    items = []
    for _ in range(n):
        prompt = rng.integers(10, vocab, int(rng.integers(16, 65))).tolist()
        answer = rng.integers(10, vocab, int(rng.integers(8, 65))).tolist()
        ids = ([6] + [IMAGE_ID] * patches + prompt + [7] + answer)[:max_len]
        labels = ([-100] * (1 + patches + len(prompt) + 1) + answer)[:max_len]
        items.append({"input_ids": ids, "labels": labels,
                      "image": rng.integers(0, 256, (3, side, side), dtype=np.uint8)})
    return items


def time_steps(args: argparse.Namespace, sizes: dict, batch: int, device) -> dict:
    """Steady-state optimizer steps of one batch size: packed rows, chunked CE (or the full-logits loss),
    bf16 autocast over fp32 master weights, fused AdamW; batches wait ready in pinned memory."""
    import torch

    from mixatlas.objectives.proxy.cost import ProxyFlops, mfu
    from mixatlas.objectives.proxy.loss import proxy_loss
    from mixatlas.objectives.proxy.model import compile_blocks
    from mixatlas.objectives.proxy.packing import device_batch, pack, padded

    torch.manual_seed(0)
    model = random_llava(sizes, args.attn, device)
    model.train()
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    flops_model = ProxyFlops.of(model)
    if args.compile:
        compile_blocks(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01,
                                  fused=device.type == "cuda")
    rng = np.random.default_rng(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    host = []
    for _ in range(args.distinct_batches):
        items = synthetic_items(batch, sizes, args.max_len, rng)
        layout = (padded(items, 0, args.max_len) if args.loss == "full"
                  else pack(items, 0, args.max_len, args.pack_len or args.max_len))
        if device.type == "cuda":
            layout = {k: v.pin_memory() for k, v in layout.items()}
        lengths = [min(len(it["input_ids"]), args.max_len) for it in items]
        supervised = sum(int((np.asarray(it["labels"][1:args.max_len]) != -100).sum()) for it in items)
        host.append((layout, flops_model.training_flops(lengths, supervised, len(items)), sum(lengths)))

    def step(i: int):
        layout = host[i % len(host)][0]
        inputs = device_batch(layout, device, dtype)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**inputs).loss if args.loss == "full" else proxy_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    sync()
    warm_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for i in range(args.steps):
        last_loss = step(args.warmup + i)
    sync()
    seconds = time.perf_counter() - started
    used = [host[(args.warmup + i) % len(host)] for i in range(args.steps)]
    flops, tokens = sum(u[1] for u in used), sum(u[2] for u in used)
    row = {"data_path": "synthetic", "batch_size": batch, "max_len": args.max_len,
           "pack_len": args.pack_len or args.max_len,
           "loss": args.loss, "attn": args.attn, "compile": args.compile, "checkpointing": args.checkpointing,
           "steps": args.steps, "warmup_steps": args.warmup, "warmup_s": round(warm_s, 2),
           "last_loss": float(last_loss),
           "step_s": seconds / args.steps, "samples_per_s": batch * args.steps / seconds,
           "tokens_per_s": tokens / seconds, "model_tflops": flops / seconds / 1e12,
           "peak_tflops": args.peak_tflops, "mfu": mfu(flops, seconds, args.peak_tflops),
           "flops_model": flops_model.to_dict()}
    if device.type == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


WORDS = ("chart", "axis", "value", "the", "of", "total", "revenue", "label", "shows", "what", "is", "in",
         "document", "invoice", "date", "page", "button", "screen", "left", "right", "top", "bar", "line")


def trainer_corpus(work: Path, n: int, workers: int) -> tuple[list[str], list[str]]:
    """(image paths, conversation JSON strings) of `n` LLaVA-like samples: 640x480 JPEGs (decoded and
    resized in the loader's workers, as a real corpus is), a prompt of 16-64 words and an answer of 8-64."""
    from multiprocessing import get_context

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_embed import _write_jpeg

    folder = work / f"trainer-corpus-{n}"
    images = [folder / f"{i:06d}.jpg" for i in range(n)]
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with get_context("fork").Pool(max(1, workers)) as pool:
            pool.map(_write_jpeg, [(path, 640, 480, i) for i, path in enumerate(images)], chunksize=16)
        (folder / "done").write_text("")
    rng = np.random.default_rng(0)
    conversations = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS, int(rng.integers(16, 65))))
        answer = " ".join(rng.choice(WORDS, int(rng.integers(8, 65))))
        conversations.append(json.dumps([{"from": "human", "value": f"<image>\n{prompt}"},
                                         {"from": "gpt", "value": answer}]))
    return [str(path) for path in images], conversations


def time_trainer_steps(args: argparse.Namespace, sizes: dict, batch: int, device) -> dict:
    """Steady-state optimizer steps through the trainer's own path: `train._StepRunner` (uint8 -> device,
    the proxy loss, clipping, fused AdamW, the scheduler, its token and FLOP counts) fed by
    `data.streamed_batches` (JPEGs decoded, resized, encoded and packed by `--workers` DataLoader workers
    into pinned memory), as `train_proxy` runs a custom-preset proxy."""
    import torch

    from mixatlas.objectives.proxy import ProxyConfig
    from mixatlas.objectives.proxy.cost import ProxyFlops, mfu
    from mixatlas.objectives.proxy.data import EncodedSamples, ImageLoader, streamed_batches
    from mixatlas.objectives.proxy.runtime import DistributedContext, autocast_factory
    from mixatlas.objectives.proxy.tokenizer import ChatFormat, train_bpe
    from mixatlas.objectives.proxy.train import _optimizer, _parallel_model, _StepRunner, enable_checkpointing

    total = (args.warmup + args.steps) * batch
    refs, conversations = trainer_corpus(Path(args.work), min(total, 1024), args.workers)
    side = sizes["vision"]["image_size"]
    tokenizer = train_bpe([" ".join(WORDS)] * 50, min(1024, sizes["lm"]["vocab_size"]))
    chat = ChatFormat(tokenizer, (side // sizes["vision"]["patch_size"]) ** 2)
    config = ProxyConfig(max_len=args.max_len, batch_size=batch, steps=args.warmup + args.steps, lr=1e-4,
                         warmup_steps=0, bf16=device.type == "cuda", compile=args.compile,
                         checkpointing=args.checkpointing, num_workers=args.workers,
                         pack_len=args.pack_len if args.pack_len else "auto")
    pack_len = config.packing_length(device.type)
    torch.manual_seed(0)
    model = random_llava(sizes, args.attn, device, image_id=chat.image_id)
    if config.checkpointing:
        enable_checkpointing(model)
    dist = DistributedContext()
    step_fn = _StepRunner(_parallel_model(model, config, dist), *_optimizer(model, config), config, device,
                          autocast_factory(config, device), dist, ProxyFlops.of(model))
    step_fn.model.train()
    order = np.random.default_rng(0).integers(0, len(refs), total)
    batches = streamed_batches(EncodedSamples(refs, conversations, chat, ImageLoader(side)), order, batch,
                               chat.pad_id, args.max_len, args.workers, pack_len,
                               pin_memory=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = time.perf_counter()
    for _ in range(args.warmup):  # the first batches also wait for the workers to start
        step_fn(batches)
    sync()
    warm_s = time.perf_counter() - started
    step_fn.tokens, step_fn.flops = 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        last_loss, _ = step_fn(batches)
    sync()
    seconds = time.perf_counter() - started
    row = {"data_path": "trainer", "workers": args.workers, "batch_size": batch, "max_len": args.max_len,
           "pack_len": pack_len, "loss": "chunked", "attn": args.attn, "compile": args.compile,
           "checkpointing": args.checkpointing, "steps": args.steps, "warmup_steps": args.warmup,
           "warmup_s": round(warm_s, 2), "last_loss": float(last_loss), "step_s": seconds / args.steps,
           "samples_per_s": batch * args.steps / seconds, "tokens_per_s": step_fn.tokens / seconds,
           "model_tflops": step_fn.flops / seconds / 1e12, "peak_tflops": args.peak_tflops,
           "mfu": mfu(step_fn.flops, seconds, args.peak_tflops), "flops_model": step_fn.flops_model.to_dict()}
    if device.type == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def run_step_throughput(args: argparse.Namespace) -> dict:
    """0.5B-class LLaVA (Qwen2-0.5B-sized LM + ViT-L/14-336 tower) training steps: tokens/s and MFU per batch
    size (an OOM is recorded, not fatal). `--tiny` runs the same code on toy sizes (CPU dry run)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not args.tiny:
        print("skipped: no CUDA device (pass --tiny for a CPU dry run)")
        return {"mode": "throughput-gpu", "skipped": "no CUDA device"}
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    timer = time_trainer_steps if args.data_path == "trainer" else time_steps
    rows = []
    for batch in (int(b) for b in args.gpu_batch.split(",")):
        for checkpointing in dict.fromkeys((args.checkpointing, True)):  # on OOM, again with checkpointing
            try:
                rows.append(timer(argparse.Namespace(**{**vars(args), "checkpointing": checkpointing}),
                                  sizes, batch, device))
                break
            except torch.OutOfMemoryError as exc:
                rows.append({"batch_size": batch, "loss": args.loss, "compile": args.compile,
                             "checkpointing": checkpointing, "oom": str(exc).splitlines()[0]})
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    data = ("trainer step runner + streamed batches" if args.data_path == "trainer"
            else "pre-pinned synthetic batches")
    print(f"\nproxy training steps on {name} ({'tiny sizes' if args.tiny else '0.5B-class'}, {data}, "
          f"loss {args.loss}, attn {args.attn}, compile {args.compile}); MFU of {args.peak_tflops:g} TFLOP/s")
    print(f"{'batch':>6}{'step s':>9}{'samples/s':>11}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>8}{'GiB':>7}"
          f"{'ckpt':>6}{'loss':>8}")
    for r in rows:
        if "oom" in r:
            print(f"{r['batch_size']:>6}  out of memory (checkpointing {r['checkpointing']})")
            continue
        print(f"{r['batch_size']:>6}{r['step_s']:>9.3f}{r['samples_per_s']:>11.1f}{r['tokens_per_s']:>11.0f}"
              f"{r['model_tflops']:>9.1f}{100 * r['mfu']:>7.1f}%{r.get('max_memory_gib', 0):>7.1f}"
              f"{'yes' if r['checkpointing'] else 'no':>6}{r['last_loss']:>8.3f}")
    return {"mode": "throughput-gpu", "device": name, "tiny": args.tiny, "data_path": args.data_path,
            "rows": rows}


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
    parser.add_argument("--gpu-batch", default="16,64", help="GPU path: batch sizes, comma-separated")
    parser.add_argument("--max-len", type=int, default=704, help="GPU path: tokens per sample")
    parser.add_argument("--pack-len", type=int, default=None, help="GPU path: packed row length (max-len)")
    parser.add_argument("--loss", choices=("chunked", "full"), default="chunked",
                        help="GPU path: chunked CE on packed rows, or the full-logits loss on padded rows")
    parser.add_argument("--attn", choices=("sdpa", "flex_attention", "eager"), default="sdpa")
    parser.add_argument("--compile", action="store_true", help="GPU path: compile each block")
    parser.add_argument("--checkpointing", action="store_true", help="GPU path: activation checkpointing")
    parser.add_argument("--warmup", type=int, default=3, help="GPU path: untimed steps")
    parser.add_argument("--distinct-batches", type=int, default=4, help="GPU path: batches cycled")
    parser.add_argument("--data-path", choices=("synthetic", "trainer"), default="synthetic",
                        help="GPU path: pre-pinned synthetic batches and a bench-local step (synthetic), or "
                        "the trainer's step runner fed by its streamed, worker-decoded batches (trainer)")
    parser.add_argument("--workers", type=int, default=8, help="--data-path trainer: decoding workers")
    parser.add_argument("--tiny", action="store_true", help="GPU path on toy sizes on CPU (dry run)")
    parser.add_argument("--tag", default="", help="suffix of the JSON name")
    parser.add_argument("--work", default=str(OUT / "proxy-work"), help="corpus, atlas and runs go here")
    args = parser.parse_args()
    if args.data_path == "trainer" and args.loss == "full":
        parser.error("--data-path trainer runs the trainer's own loss (chunked); drop --loss full")
    if args.response:
        report, name = run_response(args), "proxy_response"
    elif args.gpu:
        report, name = run_step_throughput(args), f"proxy_throughput_gpu{args.tag}"
    else:
        report, name = run_throughput_cpu(args), "proxy_throughput_cpu"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {OUT / f'{name}.json'}")


if __name__ == "__main__":
    main()
