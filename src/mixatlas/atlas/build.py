"""Build an atlas from a corpus (embed, cluster, type tasks) or assign a new corpus to an existing one."""

from __future__ import annotations

import hashlib
import heapq
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.cache import SHARD_SIZE, EmbeddingCache
from mixatlas.atlas.cluster import (
    DEFAULT_CONCEPT_PROMPTS,
    choose_k,
    default_names,
    kmeans,
    names_from_prompts,
    normalize_rows,
)
from mixatlas.atlas.embed import Embedder, make_embedder
from mixatlas.atlas.embedding_pass import embed_corpus
from mixatlas.atlas.folder import Atlas, AtlasInfo, AtlasParent, table_schema
from mixatlas.console import progress_bar
from mixatlas.corpus.images import DEFAULT_MAX_PIXELS
from mixatlas.errors import MixAtlasError
from mixatlas.publish import check_replaceable, publish, staging_dir, target_of

KMEANS_MAX_TRAIN = 200_000
EXEMPLARS_PER_CONCEPT = 8
HEAD_TAIL_BYTES = 1 << 20
FULL_HASH_MAX_BYTES = 256 << 20


def corpus_fingerprint(files: Sequence[Path], root: Path) -> str:
    """Content identity of the corpus annotation files (names, sizes, bytes; head+tail for files > 256 MiB).

    Image files are not hashed (too many, too large); a changed annotation file changes the fingerprint.
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if size <= FULL_HASH_MAX_BYTES:
                for block in iter(lambda: handle.read(HEAD_TAIL_BYTES), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(HEAD_TAIL_BYTES))
                handle.seek(size - HEAD_TAIL_BYTES)
                digest.update(handle.read(HEAD_TAIL_BYTES))
    return digest.hexdigest()[:16]


def centroids_fingerprint(centroids_kd: np.ndarray, embedder_spec: str) -> str:
    """Identity of a concept space: the centroid bytes plus the embedder that defines the axes."""
    digest = hashlib.sha256(np.ascontiguousarray(centroids_kd, np.float32).tobytes())
    digest.update(embedder_spec.encode())
    return digest.hexdigest()[:16]


def training_sample(cache: EmbeddingCache, max_rows: int, seed: int) -> np.ndarray:
    """(m, d) float32 embeddings for k-means: all of them, or a seeded uniform subset of `max_rows`."""
    indices = cache.done_indices()
    sizes = np.array([cache.size(index) for index in indices], dtype=np.int64)
    total = int(sizes.sum())
    if total <= max_rows:
        return np.concatenate([np.asarray(cache.embeddings(index)) for index in indices])
    chosen = np.sort(np.random.default_rng(seed).choice(total, max_rows, replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for position, index in enumerate(indices):
        inside = chosen[(chosen >= starts[position]) & (chosen < starts[position + 1])] - starts[position]
        parts.append(np.asarray(cache.embeddings(index)[inside]))
    return np.concatenate(parts)


@dataclass
class TableSummary:
    """What writing samples.parquet learned: (k, T) counts, sources per concept, exemplar image refs."""

    counts_kt: np.ndarray
    sources: list[Counter]
    exemplars: list[list[str]]

    @property
    def n_samples(self) -> int:
        return int(self.counts_kt.sum())


def write_samples_table(cache: EmbeddingCache, centroids_kd: np.ndarray, tasks: Sequence[str], path: Path,
                        show: bool = False) -> TableSummary:
    """Stream the cache's shards into `path` (samples.parquet), one row group per shard, assigning each
    sample to its nearest centroid; memory stays at one shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    k = len(centroids_kd)
    task_index = {task: column for column, task in enumerate(tasks)}
    counts = np.zeros((k, len(tasks)), np.int64)
    sources: list[Counter] = [Counter() for _ in range(k)]
    best: list[list[tuple[float, int, str]]] = [[] for _ in range(k)]  # min-heaps of (similarity, -row, ref)
    centroids = normalize_rows(centroids_kd)
    tmp = path.with_name(path.name + ".tmp")
    writer = pq.ParquetWriter(tmp, table_schema())
    row_base = 0
    with progress_bar(show, "assigning concepts", total=len(cache.done_indices())) as advance:
        for index in cache.done_indices():
            rows = cache.rows(index)
            similarity = normalize_rows(np.asarray(cache.embeddings(index))) @ centroids.T
            labels = np.argmax(similarity, axis=1).astype(np.int32) if len(rows) else np.zeros(0, np.int32)
            writer.write_table(rows.add_column(3, "concept", pa.array(labels, pa.int32())))
            task_ids = np.fromiter((task_index[task] for task in rows.column("task").to_pylist()), np.int64,
                                   count=len(rows))
            np.add.at(counts, (labels, task_ids), 1)
            for concept, source in zip(labels.tolist(), rows.column("source").to_pylist(), strict=True):
                sources[concept][source] += 1
            _keep_exemplars(best, labels, similarity, rows.column("image").to_pylist(), row_base)
            row_base += len(rows)
            advance(1)
    writer.close()
    os.replace(tmp, path)
    exemplars = [[ref for _, _, ref in sorted(heap, reverse=True)] for heap in best]
    return TableSummary(counts, sources, exemplars)


def _keep_exemplars(best: list[list[tuple[float, int, str]]], labels_n: np.ndarray, similarity_nk: np.ndarray,
                    refs: list[str], row_base: int) -> None:
    """Keep, per concept, the EXEMPLARS_PER_CONCEPT rows most similar to its centroid."""
    for concept, heap in enumerate(best):
        members = np.flatnonzero(labels_n == concept)
        if not len(members):
            continue
        scores = similarity_nk[members, concept]
        top = members[np.argsort(-scores, kind="stable")[:EXEMPLARS_PER_CONCEPT]]
        for row in top.tolist():
            item = (float(similarity_nk[row, concept]), -(row_base + row), refs[row])
            if len(heap) < EXEMPLARS_PER_CONCEPT:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)


@dataclass(frozen=True)
class _Inputs:
    corpus: Path
    fmt: str
    source_field: str | None
    files: list[Path]
    fingerprint: str


def _resolve_inputs(corpus: Path | str, fmt: str | None, source_field: str | None) -> _Inputs:
    """The corpus path (absolute when it exists; globs and brace patterns pass through), format, files."""
    from mixatlas.corpus import corpus_files, detect_format

    path = Path(corpus).expanduser()
    path = path.resolve() if path.exists() else path
    fmt = fmt or detect_format(path)
    files = [Path(file).resolve() for file in corpus_files(path, fmt)]
    root = Path(os.path.commonpath([file.parent for file in files]))
    return _Inputs(path, fmt, source_field, files, corpus_fingerprint(files, root))


def _task_rules(spec: str) -> str:
    """The task spec with a map file made absolute, so `atlas assign` applies the same rules from anywhere."""
    from mixatlas.atlas.tasks import resolve_spec

    return resolve_spec(spec)


def _embed_into(out: Path, inputs: _Inputs, embedder: Embedder, task_rules: str, strict: bool,
                batch_size: int, workers: int, show: bool, shard_size: int, allow_outside_root: bool,
                max_pixels: int, ray: dict | None = None) -> tuple[EmbeddingCache, dict]:
    """Run (or resume) the embedding pass into OUT/embeddings; returns (cache, reject counts by reason).

    `ray` (keyword arguments of `distributed.embed_corpus_ray`) runs the pass on Ray Data instead."""
    from mixatlas.atlas.tasks import TYPING_VERSION, TaskTyper
    from mixatlas.corpus import Rejects

    typer = TaskTyper.from_spec(task_rules)
    key = {"fingerprint": inputs.fingerprint, "format": inputs.fmt, "source_field": inputs.source_field,
           "embedder": embedder.spec, "dim": embedder.dim, "tasks": task_rules, "typing": TYPING_VERSION,
           "shard_size": shard_size,
           "allow_outside_root": allow_outside_root, "max_pixels": max_pixels}
    cache = EmbeddingCache(out / "embeddings", key)
    with Rejects(out / "rejects.jsonl", strict) as rejects:
        if ray is None:
            n_read = embed_corpus(inputs.corpus, inputs.fmt, inputs.source_field, cache, embedder, typer,
                                  rejects, batch_size, workers, show, allow_outside_root=allow_outside_root,
                                  max_pixels=max_pixels)
        else:
            from mixatlas.atlas.distributed import embed_corpus_ray

            n_read = embed_corpus_ray(inputs.corpus, inputs.fmt, inputs.source_field, cache, embedder, typer,
                                      rejects, batch_size, show, allow_outside_root=allow_outside_root,
                                      max_pixels=max_pixels, **ray)
    if not cache.done_indices() or sum(cache.size(index) for index in cache.done_indices()) == 0:
        raise MixAtlasError(f"{inputs.corpus}: no usable samples ({n_read} read, {rejects.count} rejected, "
                            f"see {out / 'rejects.jsonl'}); check --format and the image paths")
    return cache, rejects.by_reason()


def _finish_atlas(out: Path, fields: dict[str, Any], centroids_kd: np.ndarray,
                  summary: TableSummary) -> Atlas:
    """Write centroids, exemplars and (last) atlas.json: `fields` (AtlasInfo less counts) plus `summary`,
    into the staging folder `out`, then publish it (see `_start_output`)."""
    from mixatlas.atlas.exemplars import write_exemplar_grid

    tmp = out / "centroids.tmp.npy"
    np.save(tmp, np.ascontiguousarray(centroids_kd, np.float32))
    os.replace(tmp, out / "centroids.npy")
    write_exemplar_grid(out / "exemplars.png", summary.exemplars, fields["concepts"])
    info = AtlasInfo(**fields, counts=summary.counts_kt.tolist(), n_samples=summary.n_samples,
                     exemplars="exemplars.png", exemplar_refs=tuple(map(tuple, summary.exemplars)))
    info.write(out / "atlas.json")
    final = target_of(out)
    publish(out, final)
    return Atlas.load(final)


def _start_output(out: Path | str) -> Path:
    """The staging folder the atlas is built in (`publish.staging_dir`; `_finish_atlas` swaps it into place,
    so OUT always holds the old complete atlas or the new one). It survives a kill: its embedding cache is
    what a rerun resumes from; a first run over an existing atlas starts from hard links to its cache."""
    folder = Path(out).expanduser().resolve()
    check_replaceable(folder, ("atlas.json", "embeddings"))
    staging = staging_dir(folder)
    staging.mkdir(parents=True, exist_ok=True)
    if not (staging / "embeddings").exists() and (folder / "embeddings").is_dir():
        # cache files are only ever replaced (new inode), never rewritten, so sharing them is safe
        shutil.copytree(folder / "embeddings", staging / "embeddings", copy_function=os.link)
    (staging / "atlas.json").unlink(missing_ok=True)
    return staging


def _concept_names(embedder: Embedder, centroids_kd: np.ndarray, summary: TableSummary,
                   concept_prompts: Sequence[str] | None) -> list[str]:
    """Zero-shot names when the embedder has a text tower, else `c0..c{k-1}` (`mixatlas atlas name` sets
    names by hand)."""
    text_embed = getattr(embedder, "text_embed", None)
    if text_embed is not None:
        prompts = list(concept_prompts or DEFAULT_CONCEPT_PROMPTS)
        return names_from_prompts(centroids_kd, text_embed(prompts), prompts)
    return default_names(len(centroids_kd))


def build_atlas(corpus: Path | str, out: Path | str, *, embedder: str = "pixels", k: int | str = 10,
                tasks: str = "auto", fmt: str | None = None, source_field: str | None = None,
                strict: bool = False, seed: int = 0, batch_size: int = 256, workers: int = 2,
                progress: bool = True, concept_prompts: Sequence[str] | None = None,
                shard_size: int = SHARD_SIZE, allow_outside_root: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS, executor: str = "local", ray_address: str | None = None,
                gpus: int = 0) -> Atlas:
    """Decompose `corpus` into an atlas at `out`: embed (resumable), cluster into k concepts, type tasks.

    `k` is an int or "auto" (silhouette over 2..16); `concept_prompts` overrides the zero-shot concept
    list of CLIP embedders. Rejected inputs go to OUT/rejects.jsonl (`strict` stops at the first).
    Embeddings are cached in OUT/embeddings in shards of `shard_size` samples; a re-run reuses them.
    Image paths must stay in the corpus root unless `allow_outside_root`; images of more than
    `max_pixels` pixels are rejected from their header, before decoding. `executor="ray"` embeds on Ray
    Data (`ray_address` or a local Ray of `workers` CPUs; `gpus` GPU actors, 0 = two CPU actors).
    """
    from mixatlas.corpus.sample import TASKS

    if k != "auto" and (not isinstance(k, int) or k < 1):
        raise MixAtlasError(f"--k {k}: pass a positive integer or 'auto'")
    if executor not in ("local", "ray"):
        raise MixAtlasError(f"--executor {executor}: choose local or ray")
    ray = {"address": ray_address, "gpus": gpus, "cpus": max(2, workers)} if executor == "ray" else None
    inputs = _resolve_inputs(corpus, fmt, source_field)
    model = make_embedder(embedder)
    folder = _start_output(out)
    task_rules = _task_rules(tasks)
    cache, rejects = _embed_into(folder, inputs, model, task_rules, strict, batch_size, workers, progress,
                                 shard_size, allow_outside_root, max_pixels, ray=ray)
    with progress_bar(progress, "clustering", total=2) as advance:
        sample_nd = training_sample(cache, KMEANS_MAX_TRAIN, seed)
        advance(1)
        chosen_k = choose_k(sample_nd, seed=seed) if k == "auto" else int(k)
        _, centroids = kmeans(sample_nd, chosen_k, seed)
        advance(1)
    summary = write_samples_table(cache, centroids, TASKS, folder / "samples.parquet", progress)
    fields = {
        "corpus": str(inputs.corpus), "format": inputs.fmt, "source_field": source_field,
        "embedder": model.spec, "k": chosen_k, "tasks": list(TASKS), "task_rules": task_rules,
        "concepts": _concept_names(model, centroids, summary, concept_prompts),
        "rejects": sum(rejects.values()), "rejects_by_reason": rejects, "fingerprint": inputs.fingerprint,
        "centroids_fingerprint": centroids_fingerprint(centroids, model.spec), "seed": seed, "parent": None,
    }
    return _finish_atlas(folder, fields, centroids, summary)


def assign_atlas(atlas_dir: Path | str, corpus: Path | str, out: Path | str, *, fmt: str | None = None,
                 source_field: str | None = None, strict: bool = False, batch_size: int = 256,
                 workers: int = 2, progress: bool = True, shard_size: int = SHARD_SIZE,
                 allow_outside_root: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Atlas:
    """Map a new corpus onto an existing atlas: same embedder, nearest parent centroid, same task rules.

    No re-clustering: the new atlas shares its parent's concepts and `centroids_fingerprint`.
    """
    parent = Atlas.load(atlas_dir)
    folder = Path(out).expanduser().resolve()
    if folder == parent.dir:
        raise MixAtlasError(f"--out {out}: is the parent atlas itself; write the assigned atlas elsewhere")
    inputs = _resolve_inputs(corpus, fmt, source_field)
    model = make_embedder(parent.embedder)
    folder = _start_output(folder)
    task_rules = parent.info.task_rules
    cache, rejects = _embed_into(folder, inputs, model, task_rules, strict, batch_size, workers, progress,
                                 shard_size, allow_outside_root, max_pixels)
    centroids = parent.centroids()
    summary = write_samples_table(cache, centroids, parent.tasks, folder / "samples.parquet", progress)
    fields = {
        "corpus": str(inputs.corpus), "format": inputs.fmt, "source_field": source_field,
        "embedder": parent.embedder, "k": parent.k, "tasks": parent.tasks, "task_rules": task_rules,
        "concepts": parent.concepts, "rejects": sum(rejects.values()), "rejects_by_reason": rejects,
        "fingerprint": inputs.fingerprint, "centroids_fingerprint": parent.centroids_fingerprint,
        "seed": parent.info.seed,
        "parent": AtlasParent(str(parent.dir), parent.fingerprint, parent.centroids_fingerprint),
    }
    return _finish_atlas(folder, fields, centroids, summary)
