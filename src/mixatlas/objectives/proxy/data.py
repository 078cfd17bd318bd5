"""The mixture-driven training stream: cell sampler with an epoch cap, encoding, image decoding, batching.

A run draws `steps x batch x grad_accum` samples: first a cell (concept, task) by the capped mixture
weights, then a sample inside the cell, uniformly (each cell walks through fresh random permutations of
its rows, so a sample repeats only after its whole cell has been seen). Everything is seeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy.packing import device_batch, layout, padded
from mixatlas.objectives.proxy.tokenizer import ChatFormat
from mixatlas.space import Mixture


def cap_weights(
    weights_kt: np.ndarray, counts_kt: np.ndarray, total_draws: int, max_epochs: float
) -> np.ndarray:
    """Mixture weights (k, T) after the epoch cap: w * total_draws <= count * max_epochs per cell.

    A cell over its cap keeps exactly the cap; its excess is redistributed over the mixture's other
    non-empty cells in proportion to their weights (water-filling, repeated until no cell is over).
    If every such cell is capped, the draws are spread in proportion to the caps, i.e. all cells of the
    mixture repeat the same number of epochs (more than `max_epochs`: the corpus is too small for the run).
    Returns float64 (k, T) summing to 1.
    """
    counts = np.asarray(counts_kt, dtype=np.float64)
    weights = np.where(counts > 0, np.asarray(weights_kt, dtype=np.float64), 0.0)
    support = weights > 0
    if not support.any():
        raise MixAtlasError("the mixture puts all its weight on empty cells of the atlas; choose another")
    cap = counts * max_epochs / total_draws
    weights = weights / weights.sum()
    capped = np.zeros_like(support)
    while True:
        over = support & ~capped & (weights > cap)
        if not over.any():
            return weights
        excess = float((weights[over] - cap[over]).sum())
        weights[over] = cap[over]
        capped |= over
        room = support & ~capped
        if not room.any():
            return np.where(support, cap, 0.0) / cap[support].sum()
        weights[room] += excess * weights[room] / weights[room].sum()


class CellSampler:
    """Seeded stream of row indices: cell by `weights_kt` (k, T), then uniform inside the cell."""

    def __init__(self, cell_of_row: np.ndarray, weights_kt: np.ndarray, seed: int) -> None:
        self.weights_kt = np.asarray(weights_kt, dtype=np.float64)
        n_cells = self.weights_kt.size
        order = np.argsort(cell_of_row, kind="stable")
        bounds = np.searchsorted(cell_of_row[order], np.arange(n_cells + 1))
        self.rows_of_cell = [order[bounds[c] : bounds[c + 1]] for c in range(n_cells)]
        empty = [c for c in range(n_cells) if self.weights_kt.flat[c] > 0 and not len(self.rows_of_cell[c])]
        if empty:
            raise MixAtlasError(f"cells {empty} have weight but no samples; apply cap_weights first")
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n,), cells (n,)): flat cell index = concept * T + task."""
        probs = self.weights_kt.ravel()
        cells = self.rng.choice(probs.size, size=n, p=probs / probs.sum())
        rows = np.empty(n, dtype=np.int64)
        for cell in np.unique(cells):
            members = self.rows_of_cell[cell]
            where = np.flatnonzero(cells == cell)
            laps = -(-len(where) // len(members))
            walk = np.concatenate([self.rng.permutation(members) for _ in range(laps)])
            rows[where] = walk[: len(where)]
        return rows, cells


def align_mixture(mixture: Mixture, concepts: Sequence[str], tasks: Sequence[str]) -> np.ndarray:
    """The mixture's weights reordered to the atlas's (concepts, tasks) axes, (k, T); names must match."""
    if set(mixture.concepts) != set(concepts) or set(mixture.tasks) != set(tasks):
        raise MixAtlasError(
            f"mixture cells {list(mixture.concepts)} x {list(mixture.tasks)} do not match the atlas's "
            f"{list(concepts)} x {list(tasks)}; write the mixture for this atlas (or use uniform/natural)"
        )
    row = [mixture.concepts.index(c) for c in concepts]
    col = [mixture.tasks.index(t) for t in tasks]
    return mixture.weights_kt[np.ix_(row, col)]


@dataclass(frozen=True)
class ImageLoader:
    """Opens an image ref and resizes it once to `size` x `size`: uint8 array (3, size, size).

    A sample without an image gets a black one, so every sequence carries the same image tokens.
    """

    size: int

    def __call__(self, ref: str | None) -> np.ndarray:
        from PIL import Image

        from mixatlas.corpus.images import open_image

        if not ref:
            return np.zeros((3, self.size, self.size), dtype=np.uint8)
        image = open_image(ref).resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


class EncodedSamples:
    """Map-style torch dataset: item i = {"input_ids", "labels", "image"} of sample i, encoded on access.

    `conversations` items are LLaVA turn lists or their JSON strings; `image_refs` items may be None.
    Runs inside DataLoader workers, so it holds only picklable plain state.
    """

    def __init__(
        self, image_refs: Sequence[str | None], conversations: Sequence, chat: ChatFormat, images: ImageLoader
    ) -> None:
        self.image_refs = image_refs
        self.conversations = conversations
        self.chat = chat
        self.images = images

    def __len__(self) -> int:
        return len(self.image_refs)

    def __getitem__(self, i: int) -> dict:
        turns = self.conversations[i]
        encoded = self.chat.encode(json.loads(turns) if isinstance(turns, str) else turns)
        return {
            "input_ids": encoded.input_ids,
            "labels": encoded.labels,
            "image": self.images(self.image_refs[i]),
        }


def _keep_item(item: dict) -> dict:
    return item


def encode_all(dataset: EncodedSamples, num_workers: int) -> list[dict]:
    """Encode every item once, decoding images in a DataLoader worker pool (`num_workers` 0 = inline)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_keep_item)
    return list(loader)


def collate(items: list[dict], pad_id: int, max_len: int) -> dict:
    """Right-padded model inputs on the CPU (evaluation): input_ids / labels / attention_mask (B, L) with
    L = min(longest, max_len) and pixel_values (B, 3, S, S) float32, CLIP-normalized. Truncation keeps the
    sequence start, so the image tokens (which open the first turn) survive when max_len exceeds them.
    """
    import torch

    return device_batch(padded(items, pad_id, max_len), "cpu", torch.float32)


def cached_batches(encoded: Sequence[dict], order: np.ndarray, batch_size: int, pad_id: int, max_len: int,
                   pack_len: int | None = None) -> Iterator[dict]:
    """Host batches (`packing.layout`: uint8 images) of pre-encoded items in stream `order` (tiny preset:
    every image decoded once, kept small)."""
    for start in range(0, len(order), batch_size):
        yield layout([encoded[i] for i in order[start : start + batch_size]], pad_id, max_len, pack_len)


class _Layout:
    """Picklable collate for DataLoader workers: `packing.layout` of the worker's items."""

    def __init__(self, pad_id: int, max_len: int, pack_len: int | None) -> None:
        self.pad_id, self.max_len, self.pack_len = pad_id, max_len, pack_len

    def __call__(self, items: list[dict]) -> dict:
        return layout(items, self.pad_id, self.max_len, self.pack_len)


def streamed_batches(dataset: EncodedSamples, order: np.ndarray, batch_size: int, pad_id: int, max_len: int,
                     num_workers: int, pack_len: int | None = None,
                     pin_memory: bool = False) -> Iterator[dict]:
    """Host batches decoded, encoded and packed by a worker pool in stream `order` (images too big to
    cache). Workers keep 4 batches each ready ahead; with `pin_memory` (CUDA) batches land in pinned
    memory, so the trainer's non-blocking copies overlap the previous step's compute."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(dataset, order.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_Layout(pad_id, max_len, pack_len),
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    yield from loader
