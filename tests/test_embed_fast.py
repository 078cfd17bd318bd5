"""The uint8 CLIP path (crop in workers, normalize on the device, SDPA) equals the float processor path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixatlas.atlas.cluster import kmeans
from mixatlas.atlas.embed import ClipResize, make_embedder
from test_embed import document_image, save_tiny_clip, scene_image


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip-fast"))


def reference_embeddings(folder: Path, images: list[Image.Image]) -> np.ndarray:
    """The previous path: float32 pixel values from the processor, eager attention, fp32."""
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(folder, attn_implementation="eager").eval()
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model.get_image_features(pixel_values=pixels)
    return getattr(output, "pooler_output", output).numpy()


@pytest.mark.parametrize("size", [(640, 480), (333, 517), (97, 31), (32, 32)])
def test_pillow_crop_equals_the_clip_processor(tiny_clip: Path, size: tuple[int, int]) -> None:
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(tiny_clip)
    for side in (32, 336):
        processor.size, processor.crop_size = {"shortest_edge": side}, {"height": side, "width": side}
        pixels = np.random.default_rng(side).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        expected = processor(images=[image], do_rescale=False, do_normalize=False,
                             return_tensors="np")["pixel_values"][0]
        np.testing.assert_array_equal(ClipResize.of(processor)(image), expected)


def test_uint8_clip_path_equals_float_processor_path_and_gives_the_same_clusters(tiny_clip: Path) -> None:
    rng = np.random.default_rng(0)
    images = [document_image(rng) for _ in range(8)] + [scene_image(rng) for _ in range(8)]
    embedder = make_embedder(f"clip:{tiny_clip},cpu")
    prepare = pickle.loads(pickle.dumps(embedder.preprocessor()))  # what a worker process receives
    crops = np.stack([prepare(image) for image in images])
    assert crops.dtype == np.uint8 and crops.shape == (16, 3, 32, 32)
    fast = embedder.encode(crops)
    reference = reference_embeddings(tiny_clip, images)
    assert fast.dtype == np.float32
    assert np.abs(fast - reference).max() <= 1e-4 * np.abs(reference).max()
    labels_fast, _ = kmeans(fast, 2, seed=0)
    labels_ref, _ = kmeans(reference, 2, seed=0)
    assert (labels_fast == labels_ref).all()
