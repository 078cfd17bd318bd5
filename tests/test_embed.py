"""Embedders: the weight-free pixels descriptor and a tiny CLIP built from a config (no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mixatlas.atlas.embed import PixelEmbedder, make_embedder
from mixatlas.errors import MixAtlasError

TINY_CLIP_WORDS = "a an of the photo bar chart line plot table document page screenshot diagram scene outdoor"


def save_tiny_clip(folder: Path) -> Path:
    """Save a randomly initialised 1-layer CLIP (projection dim 16), its image processor and a word-level
    tokenizer into `folder`, loadable as `clip:<folder>`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    vocab.update({word: 3 + i for i, word in enumerate(TINY_CLIP_WORDS.split())})
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(vocab),
            "max_position_embeddings": 16,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def document_image(rng: np.random.Generator) -> Image.Image:
    """White page with dark text-like bars."""
    image = Image.new("RGB", (int(rng.integers(120, 200)), 160), "white")
    draw = ImageDraw.Draw(image)
    for top in range(10, 150, int(rng.integers(9, 14))):
        draw.rectangle([8, top, int(rng.integers(60, 110)), top + 3], fill=(30, 30, 30))
    return image


def scene_image(rng: np.random.Generator) -> Image.Image:
    """Sky over grass with a coloured blob."""
    image = Image.new("RGB", (160, int(rng.integers(110, 170))), (90, 150, 230))
    draw = ImageDraw.Draw(image)
    horizon = int(rng.integers(50, 90))
    draw.rectangle([0, horizon, 160, image.height], fill=(60, int(rng.integers(120, 170)), 50))
    x, y = rng.integers(10, 120, size=2)
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    draw.ellipse([int(x), int(y), int(x) + 30, int(y) + 30], fill=colour)
    return image


def test_pixels_descriptor_is_unit_norm_deterministic_and_separates_image_kinds() -> None:
    rng = np.random.default_rng(0)
    images = [document_image(rng) for _ in range(6)] + [scene_image(rng) for _ in range(6)]
    embedder = make_embedder("pixels")
    emb = embedder.embed(images)
    assert emb.shape == (12, embedder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb, embedder.embed(images))
    similarity = emb @ emb.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    assert ((nearest < 6) == (np.arange(12) < 6)).all()  # every image's nearest neighbour is of its kind


def test_pixels_preprocessor_pickles_and_accepts_any_mode_and_size() -> None:
    embedder = PixelEmbedder()
    prepare = pickle.loads(pickle.dumps(embedder.preprocessor()))
    grey = Image.new("L", (7, 300), 128)
    rgba = Image.new("RGBA", (640, 20), (255, 0, 0, 10))
    for image in (grey, rgba):
        vector = prepare(image)
        assert vector.shape == (embedder.dim,) and np.isfinite(vector).all()
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_tiny_clip_loads_from_a_local_path_and_matches_the_model(tiny_clip: Path) -> None:
    import torch
    from transformers import CLIPImageProcessorPil, CLIPModel

    embedder = make_embedder(f"clip:{tiny_clip}")
    assert embedder.spec == f"clip:{tiny_clip}" and embedder.dim == 16
    rng = np.random.default_rng(1)
    images = [document_image(rng), scene_image(rng), scene_image(rng)]
    emb = embedder.embed(images)
    assert emb.shape == (3, 16) and emb.dtype == np.float32

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPImageProcessorPil.from_pretrained(tiny_clip)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        reference = model.get_image_features(pixel_values=pixels)
    reference = getattr(reference, "pooler_output", reference).numpy()
    np.testing.assert_allclose(emb, reference, rtol=1e-4, atol=1e-5)

    prepare = pickle.loads(pickle.dumps(embedder.preprocessor()))  # ships to decoding workers
    np.testing.assert_allclose(embedder.encode(np.stack([prepare(im) for im in images])), emb, atol=1e-6)


def test_tiny_clip_text_embeddings_for_zero_shot_naming(tiny_clip: Path) -> None:
    embedder = make_embedder(f"clip:{tiny_clip},cpu")
    text = embedder.text_embed(["a bar chart", "a photo of an outdoor scene", "a bar chart"])
    assert text.shape == (3, 16) and text.dtype == np.float32
    np.testing.assert_allclose(text[0], text[2], atol=1e-6)
    assert not np.allclose(text[0], text[1])


def test_clip_bf16_switch_keeps_float32_on_cpu(tiny_clip: Path) -> None:
    import torch

    embedder = make_embedder(f"clip:{tiny_clip},bf16,cpu")
    assert embedder.spec == f"clip:{tiny_clip},bf16,cpu"
    assert embedder.device.type == "cpu" and embedder.dtype == torch.float32  # bf16 applies on CUDA only


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_clip_bf16_on_cuda_is_close_to_float32(tiny_clip: Path) -> None:
    images = [scene_image(np.random.default_rng(seed)) for seed in range(4)]
    full = make_embedder(f"clip:{tiny_clip}").embed(images)
    half = make_embedder(f"clip:{tiny_clip},bf16")
    assert half.device.type == "cuda"
    np.testing.assert_allclose(half.embed(images), full, atol=0.05 * np.abs(full).max())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet", "unknown embedder"),
        ("pixels:big", "unknown embedder"),
        ("clip:/nonexistent/clip-model", "cannot load a CLIP model"),
    ],
)
def test_bad_embedder_specs_are_user_errors(spec: str, message: str) -> None:
    with pytest.raises(MixAtlasError, match=message):
        make_embedder(spec)


def test_unknown_clip_option_is_a_user_error(tiny_clip: Path) -> None:
    with pytest.raises(MixAtlasError, match="unknown option 'fp8'"):
        make_embedder(f"clip:{tiny_clip},fp8")
