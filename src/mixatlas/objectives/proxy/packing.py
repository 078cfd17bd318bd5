"""Sequence packing: a micro-batch's samples laid end to end in fixed-length rows, attention kept per sample.

Each row holds whole samples (first-fit decreasing by length); `position_ids` restart at 0 at every sample
start, which is how `transformers` recognises packed rows when no `attention_mask` is passed: its mask
builder turns the restarts into a block-diagonal causal mask (a FlexAttention block mask under
`attn_implementation="flex_attention"`, a boolean mask under SDPA / eager). Images stay uint8 until they
are on the device (`device_batch`), so workers and host-to-device copies move a quarter of the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy.model import CLIP_MEAN, CLIP_STD
from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX


def first_fit_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Item indices per row: first-fit decreasing of `lengths` into rows of `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return [sorted(row) for row in rows]


def pack(items: Sequence[dict], pad_id: int, max_len: int, pack_len: int) -> dict:
    """Pack encoded items ({"input_ids", "labels", "image" uint8 (3, S, S)}) into rows of `pack_len` tokens.

    Each item is cut to `max_len` tokens first (as the padded collate does). Returns torch tensors:
    input_ids / labels / position_ids (R, pack_len) and images uint8 (n_items, 3, S, S) in the order
    their image tokens appear (row by row), and lengths (n_items,) of the real tokens. Pad tokens
    (ignored labels) follow the row's last sample.
    """
    import torch

    if pack_len < max_len:
        raise MixAtlasError(f"pack_len {pack_len} < max_len {max_len}: a packed row must hold a sample")
    lengths = [min(len(it["input_ids"]), max_len) for it in items]
    rows = first_fit_rows(lengths, pack_len)
    input_ids = torch.full((len(rows), pack_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), pack_len), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), pack_len), dtype=torch.long)
    order: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            input_ids[r, at : at + n] = torch.as_tensor(items[i]["input_ids"][:n])
            labels[r, at : at + n] = torch.as_tensor(items[i]["labels"][:n])
            labels[r, at] = IGNORE_INDEX  # a sample's first token is never predicted from the previous one
            positions[r, at : at + n] = torch.arange(n)
            at += n
            order.append(i)
        # Pads continue the last sample's positions: a row holding one sample stays one sequence, so
        # `transformers` needs no mask beyond causal (SDPA's flash path); pads are never supervised.
        last = lengths[row[-1]]
        positions[r, at:] = torch.arange(last, last + pack_len - at)
    images = torch.as_tensor(np.stack([items[i]["image"] for i in order]))
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions, "images": images,
            "lengths": torch.tensor(lengths)}


def padded(items: Sequence[dict], pad_id: int, max_len: int) -> dict:
    """Right-pad items into (B, L) rows, L = min(longest, max_len): input_ids / labels / attention_mask,
    images uint8 (B, 3, S, S) and lengths (B,); the unpacked layout."""
    import torch

    length = min(max(len(it["input_ids"]) for it in items), max_len)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(items), length), dtype=torch.long)
    for b, item in enumerate(items):
        n = min(len(item["input_ids"]), length)
        input_ids[b, :n] = torch.as_tensor(item["input_ids"][:n])
        labels[b, :n] = torch.as_tensor(item["labels"][:n])
        attention[b, :n] = 1
    images = torch.as_tensor(np.stack([it["image"] for it in items]))
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "images": images,
            "lengths": attention.sum(dim=1)}


def normalize_images(images_u8, dtype):
    """uint8 (n, 3, S, S) -> CLIP-normalized `dtype` pixel values, on the images' device."""
    import torch

    mean = torch.tensor(CLIP_MEAN, device=images_u8.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images_u8.device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((images_u8.float() / 255.0 - mean) / std).to(dtype)


def device_batch(batch: dict, device, dtype) -> dict:
    """Copy a `pack` / `padded` batch to `device` (non-blocking from pinned memory) with normalized
    `pixel_values` of `dtype` in place of the uint8 images: the keyword arguments of the model."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "lengths"}
    moved["pixel_values"] = normalize_images(moved.pop("images"), dtype)
    return moved


def layout(items: Sequence[dict], pad_id: int, max_len: int, pack_len: int | None) -> dict:
    """`pack` into rows of `pack_len` tokens, or `padded` rows when `pack_len` is None."""
    return padded(items, pad_id, max_len) if pack_len is None else pack(items, pad_id, max_len, pack_len)


def batch_counts(batch: dict) -> tuple[list[int], int, int]:
    """(real tokens of each sample, supervised tokens, images) of a `pack` / `padded` batch: what the FLOP
    count of `cost.ProxyFlops` needs."""
    supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return batch["lengths"].tolist(), supervised, int(batch["images"].shape[0])
