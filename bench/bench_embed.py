"""CLIP embedding throughput: decompose a corpus of JPEGs end to end, and the model alone.

    python bench/bench_embed.py --gpu [--images 8000] [--workers 14]   # ViT-L/14-336 (random init), bf16
    python bench/bench_embed.py --tiny [--images 200] [--workers 2]    # toy CLIP on CPU (dry run)

Generates `--images` LLaVA-size JPEGs (`--width` x `--height`, smooth random colour fields: decode cost of
real photos) into a LLaVA JSON corpus, saves a random-init CLIP with its image processor and a word-level
tokenizer (no download), then times `build_atlas` (read, decode + crop in workers, encode on the device,
shards, k-means, zero-shot names) on a fresh output folder `--repeats` times, and the model's encode of
one ready uint8 batch (the device ceiling). Prints a table and writes bench/out/embed_throughput_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
WORDS = "a an of the photo bar chart line plot table document page screenshot diagram scene outdoor"
VIT_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "image_size": 32, "patch_size": 8}


def save_random_clip(folder: Path, vision: dict, projection_dim: int) -> Path:
    """A random-init CLIPModel with `vision` tower sizes, its image processor and a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerFast

    if (folder / "config.json").exists():
        return folder
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    vocab.update({word: 3 + i for i, word in enumerate(WORDS.split())})
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    text = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 4,
            "vocab_size": len(vocab), "max_position_embeddings": 32, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    side = vision["image_size"]
    CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}
                          ).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]",
                            eos_token="[EOS]").save_pretrained(folder)
    return folder


def _write_jpeg(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    path, width, height, seed = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 13, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def make_corpus(folder: Path, n: int, width: int, height: int, workers: int) -> Path:
    """`n` JPEGs and a LLaVA JSON array naming them; built once per size."""
    corpus = folder / f"corpus-{n}-{width}x{height}"
    if (corpus / "data.json").exists():
        return corpus
    (corpus / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(corpus / "images" / f"{i:06d}.jpg", width, height, i) for i in range(n)]
    with get_context("fork").Pool(max(1, workers)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    records = [{"id": f"s{i}", "image": f"images/{i:06d}.jpg",
                "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                  {"from": "gpt", "value": "A photo."}]} for i in range(n)]
    (corpus / "data.tmp").write_text(json.dumps(records))
    (corpus / "data.tmp").rename(corpus / "data.json")
    return corpus


def model_rate(spec: str, side: int, batch: int, repeats: int) -> float:
    """Images/s of the embedder's encode on one ready uint8 batch (the device-side ceiling)."""
    from mixatlas.atlas.embed import make_embedder

    embedder = make_embedder(spec)
    crops = np.random.default_rng(0).integers(0, 256, (batch, 3, side, side), dtype=np.uint8)
    embedder.encode(crops)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        embedder.encode(crops)
    return batch * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--gpu", action="store_true", help="CLIP ViT-L/14-336 in bf16 on CUDA")
    size.add_argument("--tiny", action="store_true", help="a toy CLIP on CPU (dry run of the same code)")
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--workers", type=int, default=14, help="decoding workers")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end runs (fresh output each)")
    parser.add_argument("--work", default=str(OUT / "embed-work"))
    args = parser.parse_args()

    import torch

    from mixatlas.atlas import build_atlas

    if args.gpu and not torch.cuda.is_available():
        print("skipped: no CUDA device (use --tiny for a CPU dry run)")
        return
    work = Path(args.work)
    started = time.perf_counter()
    corpus = make_corpus(work, args.images, args.width, args.height, max(args.workers, 1))
    generate_s = time.perf_counter() - started
    vision = VIT_L_336 if args.gpu else TINY_VISION
    model = save_random_clip(work / ("clip-vit-l14-336" if args.gpu else "clip-tiny"), vision,
                             768 if args.gpu else 16)
    spec = f"clip:{model},bf16" if args.gpu else f"clip:{model},cpu"
    ceiling = model_rate(spec, vision["image_size"], args.batch_size, 5 if args.gpu else 1)
    walls = []
    for repeat in range(args.repeats):
        out = work / f"atlas-{repeat}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        started = time.perf_counter()
        atlas = build_atlas(corpus, out, embedder=spec, k=8, workers=args.workers,
                            batch_size=args.batch_size, progress=False)
        walls.append(time.perf_counter() - started)
        assert int(atlas.counts.sum()) == args.images, "every generated image must be embedded"
    rates = [args.images / w for w in walls]
    report = {"mode": "gpu" if args.gpu else "tiny",
              "device": torch.cuda.get_device_name() if args.gpu else "cpu", "embedder": spec,
              "images": args.images, "image_size": [args.width, args.height], "workers": args.workers,
              "batch_size": args.batch_size, "generate_s": round(generate_s, 1), "end_to_end_s": walls,
              "images_per_s": rates, "images_per_s_median": statistics.median(rates),
              "model_only_images_per_s": ceiling}
    print(f"\nCLIP {'ViT-L/14-336 bf16' if args.gpu else 'tiny'} on {report['device']}: {args.images} "
          f"{args.width}x{args.height} JPEGs, {args.workers} workers, batch {args.batch_size}")
    print(f"{'run':>5}{'wall s':>9}{'images/s':>10}")
    for i, (wall, rate) in enumerate(zip(walls, rates, strict=True)):
        print(f"{i:>5}{wall:>9.1f}{rate:>10.0f}")
    print(f"model alone (ready uint8 batch): {ceiling:.0f} images/s")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"embed_throughput_{report['mode']}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
