"""Image embedders: one interface, chosen by a spec string (`pixels`, `clip:<hub-id-or-path>[,bf16]`).

An embedder splits its work in two so the CPU part can run in a worker pool:
`preprocessor()` returns a picklable callable `PIL image -> np.ndarray` (decoding-side work, run in
workers) and `encode(stack)` turns a stack of those arrays into (n, d) float32 embeddings (model-side
work, run in the main process). `embed(images)` does both in-process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mixatlas.errors import MixAtlasError

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
# Weights of the descriptor blocks (each block is L2-normalized first).
BLOCK_WEIGHTS = {"colour": 1.0, "frame": 1.0, "edges": 1.0, "layout": 1.0, "global": 0.5}
FRAME_PX = 4
CLIP_OPTIONS = ("bf16", "cpu")


class Embedder(ABC):
    """Maps images to fixed-size float32 vectors; `spec` is the string that recreates it."""

    spec: str
    dim: int

    @abstractmethod
    def preprocessor(self) -> Callable[[Image.Image], np.ndarray]:
        """A picklable per-image CPU step (runs in decoding workers)."""

    @abstractmethod
    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """(n, ...) stacked preprocessor outputs -> (n, dim) float32 embeddings."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) PIL images -> (n, dim) float32 embeddings, in-process."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        prepare = self.preprocessor()
        return self.encode(np.stack([prepare(image) for image in images]))


# ----------------------------------------------------------------------------------------------------------
# pixels: the weight-free offline fallback


# Soft-histogram bin centres of the opponent colour axes: dense near grey so pale tints (the backgrounds
# of charts, forms, slides) land in different bins than white, while saturated colours share coarse ones.
LIGHTNESS_CENTRES = np.linspace(0.0, 1.0, 5)
CHROMA_CENTRES = np.array([-0.5, -0.2, -0.07, 0.0, 0.07, 0.2, 0.5])


def _soft_positions(values: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional bin positions -> (lower bin index, weight of the upper bin), for linear soft binning."""
    position = np.interp(values, centres, np.arange(len(centres), dtype=np.float64))
    lower = np.minimum(np.floor(position).astype(np.int64), len(centres) - 2)
    return lower, position - lower


def opponent(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) lightness (mean), red-green and yellow-blue opponent channels."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([(r + g + b) / 3.0, r - g, (r + g) / 2.0 - b], axis=-1)


def soft_colour_histogram(lab_n3: np.ndarray) -> np.ndarray:
    """(n, 3) opponent colours -> (5 * 7 * 7,) soft joint histogram summing to 1 (trilinear binning)."""
    axes = [_soft_positions(lab_n3[:, 0], LIGHTNESS_CENTRES), _soft_positions(lab_n3[:, 1], CHROMA_CENTRES),
            _soft_positions(lab_n3[:, 2], CHROMA_CENTRES)]
    sizes = (len(LIGHTNESS_CENTRES), len(CHROMA_CENTRES), len(CHROMA_CENTRES))
    histogram = np.zeros(int(np.prod(sizes)))
    for corner in np.ndindex(2, 2, 2):
        index = np.zeros(len(lab_n3), np.int64)
        weight = np.ones(len(lab_n3))
        for (lower, upper_weight), size, up in zip(axes, sizes, corner, strict=True):
            index = index * size + lower + up
            weight = weight * (upper_weight if up else 1.0 - upper_weight)
        histogram += np.bincount(index, weights=weight, minlength=len(histogram))
    return histogram / len(lab_n3)


@dataclass(frozen=True)
class PixelDescriptor:
    """Weight-free image descriptor: colour, edge and layout statistics of a `side` x `side` thumbnail.

    Blocks (each L2-normalized, then weighted, then the whole vector L2-normalized):
      colour   soft joint histogram over lightness x red-green x yellow-blue (5 x 7 x 7 = 245);
      frame    the same histogram of the outer frame only: the background / framing colour (245);
      edges    gradient-orientation histogram (8), edge density, mean magnitude, long horizontal and
               vertical line fractions (4);
      layout   a `grid` x `grid` grid of mean opponent colour, grey std and edge density per cell
               (5 * grid^2);
      global   near-white / near-black / saturated pixel fractions, distinct-colour count (4).
    """

    side: int = 64
    grid: int = 4

    @property
    def dim(self) -> int:
        colour = len(LIGHTNESS_CENTRES) * len(CHROMA_CENTRES) ** 2
        return 2 * colour + 8 + 4 + 5 * self.grid * self.grid + 4

    def __call__(self, image: Image.Image) -> np.ndarray:
        from PIL import Image as PILImage

        thumb = image.convert("RGB").resize((self.side, self.side), PILImage.Resampling.BILINEAR)
        rgb = np.asarray(thumb, dtype=np.float64) / 255.0  # (side, side, 3)
        lab = opponent(rgb)
        grey = lab[..., 0]
        colour = soft_colour_histogram(lab.reshape(-1, 3))
        frame = np.ones(grey.shape, bool)
        frame[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = False
        background = soft_colour_histogram(lab[frame])
        edge_stats, edge = self._edges(grey)
        layout = self._layout(lab, grey, edge)
        chroma = np.hypot(lab[..., 1], lab[..., 2])
        distinct = len(np.unique(np.round(rgb * 7).reshape(-1, 3) @ np.array([64, 8, 1])))
        global_stats = np.array([(grey > 0.92).mean(), (grey < 0.08).mean(), (chroma > 0.3).mean(),
                                 np.log1p(distinct) / np.log1p(512)])
        parts = {"colour": colour, "frame": background, "edges": edge_stats, "layout": layout,
                 "global": global_stats}
        vector = np.concatenate([BLOCK_WEIGHTS[name] * part / max(float(np.linalg.norm(part)), 1e-9)
                                 for name, part in parts.items()])
        return (vector / max(float(np.linalg.norm(vector)), 1e-9)).astype(np.float32)

    @staticmethod
    def _edges(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Orientation histogram and edge statistics of the (side, side) grey image, and its edge mask."""
        gx = np.zeros_like(grey)
        gy = np.zeros_like(grey)
        gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
        gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
        magnitude = np.hypot(gx, gy)
        orientation = np.mod(np.arctan2(gy, gx), np.pi)  # edges are undirected
        orient_hist = np.histogram(orientation, bins=8, range=(0.0, np.pi), weights=magnitude)[0]
        edge = magnitude > 0.1
        horizontal = edge & (np.abs(gy) > 2 * np.abs(gx))
        vertical = edge & (np.abs(gx) > 2 * np.abs(gy))
        stats = np.concatenate([
            orient_hist / max(float(magnitude.sum()), 1e-9),
            [edge.mean(), magnitude.mean(),
             (horizontal.mean(axis=1) > 0.5).mean(), (vertical.mean(axis=0) > 0.5).mean()],
        ])
        return stats, edge

    def _layout(self, lab: np.ndarray, grey: np.ndarray, edge: np.ndarray) -> np.ndarray:
        """Per grid cell: mean opponent colour (chroma x3, so tints count), grey std, edge density."""
        cell = self.side // self.grid
        crop = self.grid * cell

        def per_cell(values_hw: np.ndarray) -> np.ndarray:
            blocks = values_hw[:crop, :crop].reshape(self.grid, cell, self.grid, cell, -1)
            return blocks.mean(axis=(1, 3)).reshape(self.grid * self.grid, -1)

        grey_std = np.sqrt(np.maximum(per_cell(grey[..., None] ** 2) - per_cell(grey[..., None]) ** 2, 0.0))
        colour = per_cell(lab) * np.array([1.0, 3.0, 3.0])
        edge_density = per_cell(edge[..., None].astype(np.float64))
        return np.concatenate([colour, grey_std, edge_density], axis=1).T.ravel()


class PixelEmbedder(Embedder):
    """`pixels`: the offline fallback for machines without model weights (see :class:`PixelDescriptor`)."""

    def __init__(self) -> None:
        self.spec = "pixels"
        self._descriptor = PixelDescriptor()
        self.dim = self._descriptor.dim

    def preprocessor(self) -> PixelDescriptor:
        return self._descriptor

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        return np.asarray(prepared, dtype=np.float32).reshape(len(prepared), self.dim)


# ----------------------------------------------------------------------------------------------------------
# clip: transformers.CLIPModel (no torchvision)


@dataclass(frozen=True)
class ClipResize:
    """Picklable worker step: PIL image -> (3, crop_h, crop_w) uint8, the CLIP image processor's resize
    (shortest edge, or a fixed height x width) and centre crop done with Pillow alone, so decoding workers
    never import transformers; rescaling and normalization run on the device (`ClipEmbedder.encode`).
    uint8 is a quarter of float32's bytes through the worker pipes and the host-to-device copy."""

    short: int | None  # resize the shortest edge to this (None: resize to height x width)
    height: int
    width: int
    crop_h: int
    crop_w: int
    resample: int

    @classmethod
    def of(cls, processor: object) -> ClipResize:
        size, crop = dict(processor.size), dict(processor.crop_size or {})
        short = size.get("shortest_edge")
        height, width = size.get("height", short), size.get("width", short)
        do_crop = getattr(processor, "do_center_crop", True) and crop
        return cls(short, height, width, crop["height"] if do_crop else height,
                   crop["width"] if do_crop else width, int(processor.resample))

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        width, height = image.size
        if self.short is None:
            new_w, new_h = self.width, self.height
        elif width <= height:
            new_w, new_h = self.short, int(self.short * height / width)
        else:
            new_w, new_h = int(self.short * width / height), self.short
        image = image.resize((new_w, new_h), resample=self.resample)
        top, left = (new_h - self.crop_h) // 2, (new_w - self.crop_w) // 2
        image = image.crop((left, top, left + self.crop_w, top + self.crop_h))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def _features(output: object) -> object:
    """transformers 5 returns a model output with the projected features as `pooler_output`; 4.x a tensor."""
    return getattr(output, "pooler_output", output)


class ClipEmbedder(Embedder):
    """`clip:<hub-id-or-local-path>[,bf16][,cpu]`: CLIP image (and text) towers via transformers.

    Runs on CUDA when present (bf16 there if asked; CPU always computes in float32) with SDPA attention.
    Workers hand over uint8 crops (`ClipResize`); `encode` copies them from pinned memory without blocking
    and rescales + normalizes on the device. Embeddings are the projected image features, float32, not
    normalized (clustering normalizes).
    """

    def __init__(self, source: str, *, bf16: bool = False, force_cpu: bool = False) -> None:
        import torch
        from transformers import CLIPImageProcessorPil, CLIPModel

        self.source = source
        options = [name for name, on in (("bf16", bf16), ("cpu", force_cpu)) if on]
        self.spec = ",".join([f"clip:{source}", *options])
        self.device = torch.device("cuda" if torch.cuda.is_available() and not force_cpu else "cpu")
        self.dtype = torch.bfloat16 if bf16 and self.device.type == "cuda" else torch.float32
        local = Path(source).expanduser()
        location = str(local.resolve()) if local.exists() else source
        try:
            self.model = CLIPModel.from_pretrained(location, dtype=self.dtype, attn_implementation="sdpa")
            self.model = self.model.to(self.device).eval()
            self.processor = CLIPImageProcessorPil.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise MixAtlasError(
                f"--embedder clip:{source}: cannot load a CLIP model and image processor there "
                f"({str(exc).splitlines()[0]}); pass a local folder saved with save_pretrained, "
                "or use --embedder pixels offline"
            ) from None
        self._location = location
        self._tokenizer = None
        self.dim = int(self.model.config.projection_dim)

    def preprocessor(self) -> ClipResize:
        return ClipResize.of(self.processor)

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """(n, 3, S, S) uint8 crops -> (n, dim) float32 projected image features."""
        import torch

        processor = self.processor
        with torch.inference_mode():
            crops = torch.from_numpy(np.ascontiguousarray(prepared))
            if self.device.type == "cuda":
                crops = crops.pin_memory().to(self.device, non_blocking=True)
            mean = torch.tensor(processor.image_mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(processor.image_std, device=self.device).view(1, 3, 1, 1)
            pixels = ((crops.float() * processor.rescale_factor - mean) / std).to(self.dtype)
            features = _features(self.model.get_image_features(pixel_values=pixels))
        return features.float().cpu().numpy()

    def text_embed(self, prompts: Sequence[str]) -> np.ndarray:
        """(p,) text prompts -> (p, dim) float32 text features, for zero-shot cluster naming."""
        import torch
        from transformers import AutoTokenizer

        if self._tokenizer is None:
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self._location)
            except (OSError, ValueError) as exc:
                raise MixAtlasError(
                    f"--embedder {self.spec}: no tokenizer for zero-shot concept names "
                    f"({str(exc).splitlines()[0]}); save one beside the model"
                ) from None
        tokens = self._tokenizer(list(prompts), padding=True, truncation=True,
                                 max_length=self.model.config.text_config.max_position_embeddings,
                                 return_tensors="pt").to(self.device)
        with torch.inference_mode():
            features = _features(self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return features.float().cpu().numpy().astype(np.float32)


def make_embedder(spec: str) -> Embedder:
    """The embedder named by `spec`: `pixels`, `clip`, `clip:<hub-id-or-path>`; options `,bf16` `,cpu`."""
    name, _, rest = spec.strip().partition(":")
    if name == "pixels" and not rest:
        return PixelEmbedder()
    if name == "clip":
        source, *options = (rest or DEFAULT_CLIP).split(",")
        unknown = [option for option in options if option not in CLIP_OPTIONS]
        if unknown:
            raise MixAtlasError(
                f"--embedder {spec}: unknown option {unknown[0]!r}; options are {', '.join(CLIP_OPTIONS)}"
            )
        return ClipEmbedder(source or DEFAULT_CLIP, bf16="bf16" in options, force_cpu="cpu" in options)
    raise MixAtlasError(f"--embedder {spec}: unknown embedder; use 'pixels' or 'clip:<hub-id-or-path>'")
