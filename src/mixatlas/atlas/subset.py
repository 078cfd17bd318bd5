"""`decompose --sample N`: concepts from a seeded uniform subset of a huge corpus, every sample assigned.

Three streaming steps, memory flat in the corpus size:
1. one read pass keeps a seeded uniform reservoir of N records (Li's Algorithm L: O(N) memory, one pass,
   no image decoded) and writes them to OUT-sample/subset.jsonl (a sibling of OUT: OUT itself is replaced
   whole when the atlas is published);
2. `build_atlas` on the subset -> OUT-sample/atlas: embeds N images, clusters them (k or `auto`);
3. `assign_atlas` streams the whole corpus onto those centroids -> OUT: the atlas of every sample, whose
   `parent` is the subset atlas (the N sampled records are embedded twice: N/total extra work).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.build import assign_atlas, build_atlas
from mixatlas.atlas.folder import Atlas
from mixatlas.errors import MixAtlasError

SUBSET_SUFFIX = "-sample"


def reservoir(items: Iterable[Any], n: int, seed: int) -> list[Any]:
    """A uniform random subset of `n` items of a stream of unknown length, in stream order (Algorithm L).

    Deterministic for a seed and a stream; holds n items.
    """
    if n < 1:
        raise MixAtlasError(f"--sample {n}: pass a positive number of samples")
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, Any]] = []
    weight = 0.0
    next_index = n
    for index, item in enumerate(items):
        if index < n:
            kept.append((index, item))
            if index == n - 1:
                weight = math.exp(math.log(rng.random()) / n)
                next_index = n + _skip(rng, weight)
            continue
        if index == next_index:
            kept[int(rng.integers(n))] = (index, item)
            weight *= math.exp(math.log(rng.random()) / n)
            next_index = index + 1 + _skip(rng, weight)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])]


def _skip(rng: np.random.Generator, weight: float) -> int:
    """Items to pass over before the next replacement (geometric with success probability `weight`)."""
    if weight >= 1.0:
        return 0
    return math.floor(math.log(rng.random()) / math.log1p(-weight))


def write_subset(samples: Sequence[Any], path: Path) -> None:
    """The sampled records as JSONL with their resolved image refs (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        for sample in samples:
            record = {"id": sample.id, "source": sample.source, "image": sample.image,
                      "conversations": sample.conversations, "meta": sample.meta}
            if sample.task is not None:
                record["task"] = sample.task
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def subset_dir_of(out: Path) -> Path:
    """Where `--sample` keeps its subset and the subset's atlas: OUT-sample/, beside OUT."""
    return out.with_name(out.name + SUBSET_SUFFIX)


def build_atlas_sampled(corpus: Path | str, out: Path | str, sample: int, *, embedder: str = "pixels",
                        k: int | str = 10, tasks: str = "rules", fmt: str | None = None,
                        source_field: str | None = None, strict: bool = False, seed: int = 0,
                        batch_size: int = 256, workers: int = 2, progress: bool = True,
                        concept_prompts: Sequence[str] | None = None, allow_outside_root: bool = False,
                        **limits: Any) -> Atlas:
    """`build_atlas` with concepts learned on a seeded uniform subset of `sample` records (see module doc).

    `limits` (shard_size, max_pixels) go to both the subset build and the assignment.
    """
    from mixatlas.corpus import Rejects, read_corpus

    path = Path(corpus).expanduser()
    corpus = path.resolve() if path.exists() else corpus  # absolute refs in the subset (globs pass through)
    folder = Path(out).expanduser().resolve()
    subset_dir = subset_dir_of(folder)
    subset_dir.mkdir(parents=True, exist_ok=True)
    subset = subset_dir / "subset.jsonl"
    # Malformed records are only counted here; the assignment pass lists them in OUT/rejects.jsonl.
    with Rejects(subset_dir / "read_rejects.jsonl", strict) as rejects:
        chosen = reservoir(read_corpus(corpus, fmt, source_field=source_field, rejects=rejects,
                                       allow_outside_root=allow_outside_root), sample, seed)
    write_subset(chosen, subset)
    del chosen
    # The subset's refs are the corpus's resolved refs (already checked against its root when read).
    build_atlas(subset, subset_dir / "atlas", embedder=embedder, k=k, tasks=tasks, fmt="jsonl",
                source_field="source", strict=strict, seed=seed, batch_size=batch_size, workers=workers,
                progress=progress, concept_prompts=concept_prompts, allow_outside_root=True, **limits)
    return assign_atlas(subset_dir / "atlas", corpus, folder, fmt=fmt, source_field=source_field,
                        strict=strict, batch_size=batch_size, workers=workers, progress=progress,
                        allow_outside_root=allow_outside_root, **limits)
