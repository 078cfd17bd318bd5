"""The Atlas: a folder that maps every corpus sample to a (concept, task) cell. Build, assign, load.

Layout of ATLAS/:
  atlas.json        embedder, k, task set, concept names, counts (k x T), fingerprints, rejects, parent
  samples.parquet   one row per accepted sample (id, source, image, concept, task, shard, offset,
                    conversations), written one row group per embedding shard
  centroids.npy     (k, d) float32, unit rows
  rejects.jsonl     every rejected input (file, where, reason)
  exemplars.png     thumbnails closest to each centroid, one row per concept
  embeddings/       the resumable cache: shard-NNNNN.npy (n_s, d) float32, shard-NNNNN.rows.parquet (the
                    rows, ids first), shard-NNNNN.rejects.jsonl, manifest.json
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.cluster import (
    DEFAULT_CONCEPT_PROMPTS,
    choose_k,
    kmeans,
    names_from_prompts,
    names_from_sources,
    normalize_rows,
)
from mixatlas.atlas.embed import Embedder, make_embedder
from mixatlas.errors import MixAtlasError

ATLAS_VERSION = 1
CACHE_VERSION = 1
SHARD_SIZE = 8192
KMEANS_MAX_TRAIN = 200_000
EXEMPLARS_PER_CONCEPT = 8
HEAD_TAIL_BYTES = 1 << 20
FULL_HASH_MAX_BYTES = 256 << 20
ROW_COLUMNS = ("id", "source", "image", "task", "shard", "offset", "conversations")


def _row_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source", pa.string()), ("image", pa.string()),
                      ("task", pa.string()), ("shard", pa.string()), ("offset", pa.int64()),
                      ("conversations", pa.string())])


def _table_schema() -> Any:
    import pyarrow as pa

    rows = _row_schema()
    return rows.insert(3, pa.field("concept", pa.int32()))


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# the Atlas handle


@dataclass(frozen=True)
class Atlas:
    """A built atlas folder; `info` is the whole atlas.json."""

    dir: Path
    info: dict

    @classmethod
    def load(cls, dir: Path | str) -> Atlas:
        """Open ATLAS/ (atlas.json must exist: it is written last, so a half-built folder is no atlas)."""
        folder = Path(dir)
        meta = folder / "atlas.json"
        if not meta.is_file():
            raise MixAtlasError(f"{folder}: not an atlas (no atlas.json); build one with "
                                f"`mixatlas decompose CORPUS --out {folder}`")
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise MixAtlasError(f"{meta}:{exc.lineno}: invalid JSON ({exc.msg}); rebuild the atlas") from None
        if info.get("version") != ATLAS_VERSION:
            raise MixAtlasError(f"{meta}: atlas version {info.get('version')!r}, this MixAtlas reads "
                                f"{ATLAS_VERSION}; rebuild with `mixatlas decompose`")
        return cls(folder.resolve(), info)

    @property
    def k(self) -> int:
        return int(self.info["k"])

    @property
    def concepts(self) -> list[str]:
        return list(self.info["concepts"])

    @property
    def tasks(self) -> list[str]:
        return list(self.info["tasks"])

    @property
    def counts(self) -> np.ndarray:
        """(k, T) int64 samples per cell."""
        return np.asarray(self.info["counts"], dtype=np.int64).reshape(self.k, len(self.tasks))

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    @property
    def centroids_fingerprint(self) -> str:
        return str(self.info["centroids_fingerprint"])

    @property
    def embedder(self) -> str:
        return str(self.info["embedder"])

    @property
    def corpus(self) -> Path:
        return Path(self.info["corpus"])

    def table(self, columns: Sequence[str] | None = None) -> Any:
        """samples.parquet as a pyarrow.Table (only `columns` if given)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.dir / "samples.parquet", columns=list(columns) if columns else None)

    def centroids(self) -> np.ndarray:
        """(k, d) float32 unit-norm concept centroids."""
        return np.load(self.dir / "centroids.npy")


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


# ----------------------------------------------------------------------------------------------------------
# embedding cache


class EmbeddingCache:
    """ATLAS/embeddings/: one (n_s, d) float32 .npy, one rows table and one rejects list per shard.

    Shard s holds the samples the reader yielded at positions [s * shard_size, (s + 1) * shard_size),
    minus those rejected there (no image, a missing or corrupt one); those rejects are kept with the shard so
    a resumed pass can list them again without decoding. `key` (corpus fingerprint, embedder, task rules,
    shard size...) must match the manifest's for finished shards to be reused; otherwise the cache starts
    empty.
    """

    def __init__(self, root: Path, key: dict) -> None:
        self.root = Path(root)
        self.key = key
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
        manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
        self.shards: dict[str, dict] = manifest.get("shards", {}) if manifest.get("key") == key else {}
        self.complete = bool(manifest.get("complete")) and manifest.get("key") == key
        if manifest.get("key") not in (None, key):
            for stale in self.root.glob("shard-*"):
                stale.unlink()
        self._save_manifest()

    @property
    def shard_size(self) -> int:
        return int(self.key["shard_size"])

    def _path(self, index: int, suffix: str) -> Path:
        return self.root / f"shard-{index:05d}{suffix}"

    def is_done(self, index: int) -> bool:
        return str(index) in self.shards and all(
            self._path(index, suffix).is_file() for suffix in (".npy", ".rows.parquet", ".rejects.jsonl"))

    def done_indices(self) -> list[int]:
        return sorted(int(index) for index in self.shards if self.is_done(int(index)))

    def size(self, index: int) -> int:
        return int(self.shards[str(index)]["n"])

    def write(self, index: int, emb_nd: np.ndarray, rows: dict[str, list], rejects: list[dict]) -> None:
        """Store one finished shard atomically (files first, manifest last)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        emb = np.ascontiguousarray(emb_nd, dtype=np.float32).reshape(-1, int(self.key["dim"]))
        if len(emb) != len(rows["id"]):
            raise ValueError("one embedding per row expected")
        tmp = self._path(index, ".tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, self._path(index, ".npy"))
        tmp = self._path(index, ".rows.tmp")
        pq.write_table(pa.table(rows, schema=_row_schema()), tmp)
        os.replace(tmp, self._path(index, ".rows.parquet"))
        tmp = self._path(index, ".rejects.tmp")
        tmp.write_text("".join(json.dumps(reject) + "\n" for reject in rejects))
        os.replace(tmp, self._path(index, ".rejects.jsonl"))
        self.shards[str(index)] = {"n": len(emb), "rejects": len(rejects)}
        self._save_manifest()

    def embeddings(self, index: int) -> np.ndarray:
        """(n_s, d) float32 embeddings of shard `index` (memory-mapped)."""
        return np.load(self._path(index, ".npy"), mmap_mode="r")

    def rows(self, index: int) -> Any:
        """The shard's rows (pyarrow.Table with ROW_COLUMNS)."""
        import pyarrow.parquet as pq

        return pq.read_table(self._path(index, ".rows.parquet"))

    def rejects(self, index: int) -> list[dict]:
        """The shard's rejects: {"position" (read position), "file", "where", "reason"}."""
        lines = self._path(index, ".rejects.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def mark_complete(self, complete: bool) -> None:
        self.complete = complete
        self._save_manifest()

    def _save_manifest(self) -> None:
        _write_json_atomic(self.manifest_path, {"version": CACHE_VERSION, "key": self.key,
                                                "complete": self.complete, "shards": self.shards})


# ----------------------------------------------------------------------------------------------------------
# embedding pass: read -> decode + preprocess in workers -> encode -> shards


def _prepare_images(prepare: Callable, refs: Sequence[str | None]) -> tuple[list[int], Any, list[tuple]]:
    """Worker step: open and preprocess each image ref; returns (ok positions, stacked arrays, errors)."""
    from mixatlas.corpus import open_image

    ok, arrays, errors = [], [], []
    for position, ref in enumerate(refs):
        if not ref:
            errors.append((position, "no image: the record has no image; MixAtlas clusters image samples"))
            continue
        try:
            image = open_image(ref)
        except MixAtlasError as exc:
            kind = "corrupt image" if ": corrupt image" in str(exc) else "missing image"
            errors.append((position, f"{kind}: {exc}"))
            continue
        arrays.append(prepare(image))
        ok.append(position)
    return ok, (np.stack(arrays) if arrays else None), errors


@dataclass
class _Chunk:
    """Consecutive samples of one shard; `first` is the read position of `samples[0]`."""

    shard: int
    first: int
    samples: list = field(default_factory=list)


@dataclass
class _ShardBuffer:
    index: int
    embeddings: list = field(default_factory=list)
    rows: dict = field(default_factory=lambda: {column: [] for column in ROW_COLUMNS})
    rejects: list = field(default_factory=list)


@contextmanager
def _bar(show: bool, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (from cli.console) when `show`; yields `advance(n)`."""
    if not show:
        yield lambda n: None
        return
    from mixatlas.cli.console import progress

    with progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class _OrderedRejects:
    """Hands rejects to a `Rejects` list in corpus order.

    The reader reports a malformed record as it reads ahead, while an image failure is known only after
    its batch is decoded; each is queued under its read position (samples read before it) and released
    once the pass has reached it, so rejects.jsonl and `--strict`'s first error follow the corpus order.
    Passed to the reader as its `rejects`.
    """

    def __init__(self, rejects: Any) -> None:
        self.rejects = rejects
        self.position = 0  # samples the reader has yielded so far
        self._pending: list[tuple[int, int, str, Any, str]] = []
        self._sequence = 0

    @property
    def count(self) -> int:
        return int(self.rejects.count) + len(self._pending)

    def add(self, file: str | Path, where: Any, reason: str) -> None:
        """The reader's call: a reject just before the sample at the current read position."""
        self.queue(self.position, str(file), where, reason)

    def queue(self, position: int, file: str, where: Any, reason: str) -> None:
        heapq.heappush(self._pending, (position, self._sequence, file, where, reason))
        self._sequence += 1

    def release(self, upto: int | None = None) -> None:
        """Write every queued reject at read position <= `upto` (all when None); strict lists raise here."""
        while self._pending and (upto is None or self._pending[0][0] <= upto):
            _, _, file, where, reason = heapq.heappop(self._pending)
            self.rejects.add(file, where, reason)


class _EmbeddingPass:
    """One streaming pass over the corpus that fills an EmbeddingCache and the rejects list."""

    def __init__(self, corpus: Path, cache: EmbeddingCache, embedder: Embedder, typer: Any,
                 rejects: _OrderedRejects, batch_size: int, show: bool) -> None:
        self.corpus, self.cache, self.embedder, self.typer = corpus, cache, embedder, typer
        self.rejects, self.batch_size, self.show = rejects, max(1, batch_size), show

    @property
    def n_read(self) -> int:
        return self.rejects.position

    def chunks(self, samples: Iterator, advance: Callable[[int], None]) -> Iterator[_Chunk]:
        """Group samples into per-shard chunks; samples of finished shards are skipped (their stored
        rejects are queued again)."""
        chunk: _Chunk | None = None
        finished = set(self.cache.done_indices())
        replayed: set[int] = set()
        for sample in samples:
            position = self.rejects.position
            self.rejects.position += 1
            shard = position // self.cache.shard_size
            if shard in finished:
                if shard not in replayed:
                    replayed.add(shard)
                    for reject in self.cache.rejects(shard):
                        self.rejects.queue(reject["position"], reject["file"], reject["where"],
                                           reject["reason"])
                advance(1)
                continue
            if chunk is not None and (chunk.shard != shard or len(chunk.samples) >= self.batch_size):
                yield chunk
                chunk = None
            chunk = chunk or _Chunk(shard, position)
            chunk.samples.append(sample)
        if chunk is not None:
            yield chunk

    def prepared(self, chunks: Iterator[_Chunk], pool: Executor | None, window: int) -> Iterator[tuple]:
        """(chunk, ok positions, stacked preprocessed arrays, errors) in order, at most `window` in flight."""
        prepare = self.embedder.preprocessor()
        if pool is None:
            for chunk in chunks:
                yield chunk, *_prepare_images(prepare, [s.image for s in chunk.samples])
            return
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_prepare_images, prepare, [s.image for s in chunk.samples])))
            if len(pending) >= window:
                done_chunk, future = pending.popleft()
                yield done_chunk, *future.result()
        while pending:
            done_chunk, future = pending.popleft()
            yield done_chunk, *future.result()

    def run(self, samples: Iterator, pool: Executor | None, window: int) -> None:
        buffer: _ShardBuffer | None = None
        with _bar(self.show, "embedding images") as advance:
            for chunk, ok, arrays, errors in self.prepared(self.chunks(samples, advance), pool, window):
                if buffer is not None and buffer.index != chunk.shard:
                    self.flush(buffer)
                    buffer = None
                buffer = buffer or _ShardBuffer(chunk.shard)
                for index, reason in errors:
                    self.reject(buffer, chunk, index, reason)
                if ok:
                    self.accept(buffer, [chunk.samples[index] for index in ok], self.embedder.encode(arrays))
                self.rejects.release(upto=chunk.first + len(chunk.samples) - 1)
                advance(len(chunk.samples))
        if buffer is not None:
            self.flush(buffer)
        self.rejects.release()

    def reject(self, buffer: _ShardBuffer, chunk: _Chunk, index: int, reason: str) -> None:
        sample = chunk.samples[index]
        file, where = (sample.shard or str(self.corpus)), sample.offset
        buffer.rejects.append({"position": chunk.first + index, "file": file, "where": where,
                               "reason": reason})
        self.rejects.queue(chunk.first + index, file, where, reason)

    def accept(self, buffer: _ShardBuffer, samples: list, emb_nd: np.ndarray) -> None:
        for sample in samples:
            for column, value in (("id", sample.id), ("source", sample.source), ("image", sample.image),
                                  ("task", self.typer.task_of(sample)), ("shard", sample.shard),
                                  ("offset", int(sample.offset)),
                                  ("conversations", json.dumps(sample.conversations, ensure_ascii=False))):
                buffer.rows[column].append(value)
        buffer.embeddings.append(emb_nd)

    def flush(self, buffer: _ShardBuffer) -> None:
        dim = int(self.cache.key["dim"])
        emb = np.concatenate(buffer.embeddings) if buffer.embeddings else np.zeros((0, dim), np.float32)
        self.cache.write(buffer.index, emb, buffer.rows, buffer.rejects)


def _embed_corpus(corpus: Path, fmt: str, source_field: str | None, cache: EmbeddingCache, embedder: Embedder,
                  typer: Any, rejects: Any, batch_size: int, workers: int, show: bool) -> int:
    """Fill `cache` from the corpus (resuming finished shards); returns the number of samples read."""
    from mixatlas.corpus import read_corpus

    ordered = _OrderedRejects(rejects)
    embedding_pass = _EmbeddingPass(corpus, cache, embedder, typer, ordered, batch_size, show)
    samples = read_corpus(corpus, fmt, source_field=source_field, rejects=ordered)
    cache.mark_complete(False)
    try:
        if workers <= 0:
            embedding_pass.run(samples, None, 1)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"))
            try:
                embedding_pass.run(samples, pool, window=2 * workers + 1)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    except MixAtlasError:
        if not rejects.strict:  # an empty corpus, say: still list the rejects that explain it
            ordered.release()
        raise
    cache.mark_complete(True)
    return embedding_pass.n_read


# ----------------------------------------------------------------------------------------------------------
# clustering and the samples table


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
    writer = pq.ParquetWriter(tmp, _table_schema())
    row_base = 0
    with _bar(show, "assigning concepts", total=len(cache.done_indices())) as advance:
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


# ----------------------------------------------------------------------------------------------------------
# build / assign


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
    if spec.startswith("map:"):
        return "map:" + str(Path(spec[4:]).expanduser().resolve())
    return spec


def _embed_into(out: Path, inputs: _Inputs, embedder: Embedder, task_rules: str, strict: bool,
                batch_size: int, workers: int, show: bool, shard_size: int) -> tuple[EmbeddingCache, dict]:
    """Run (or resume) the embedding pass into OUT/embeddings; returns (cache, reject counts by reason)."""
    from mixatlas.atlas.tasks import TaskTyper
    from mixatlas.corpus import Rejects

    typer = TaskTyper.from_spec(task_rules)
    key = {"fingerprint": inputs.fingerprint, "format": inputs.fmt, "source_field": inputs.source_field,
           "embedder": embedder.spec, "dim": embedder.dim, "tasks": task_rules, "shard_size": shard_size}
    cache = EmbeddingCache(out / "embeddings", key)
    with Rejects(out / "rejects.jsonl", strict) as rejects:
        n_read = _embed_corpus(inputs.corpus, inputs.fmt, inputs.source_field, cache, embedder, typer,
                               rejects, batch_size, workers, show)
    if not cache.done_indices() or sum(cache.size(index) for index in cache.done_indices()) == 0:
        raise MixAtlasError(f"{inputs.corpus}: no usable samples ({n_read} read, {rejects.count} rejected, "
                            f"see {out / 'rejects.jsonl'}); check --format and the image paths")
    return cache, rejects.by_reason()


def _finish_atlas(out: Path, info: dict, centroids_kd: np.ndarray, summary: TableSummary) -> Atlas:
    """Write centroids, exemplars and (last) atlas.json."""
    from mixatlas.atlas.exemplars import write_exemplar_grid

    tmp = out / "centroids.tmp.npy"
    np.save(tmp, np.ascontiguousarray(centroids_kd, np.float32))
    os.replace(tmp, out / "centroids.npy")
    write_exemplar_grid(out / "exemplars.png", summary.exemplars, info["concepts"])
    info = {**info, "counts": summary.counts_kt.tolist(), "n_samples": summary.n_samples,
            "exemplars": "exemplars.png"}
    _write_json_atomic(out / "atlas.json", info)
    return Atlas.load(out)


def _start_output(out: Path | str) -> Path:
    folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise MixAtlasError(f"--out {out}: exists and is not a folder; choose another path")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atlas.json").unlink(missing_ok=True)  # until rebuilt, the folder is not a valid atlas
    return folder


def _concept_names(embedder: Embedder, centroids_kd: np.ndarray, summary: TableSummary,
                   concept_prompts: Sequence[str] | None) -> list[str]:
    """Zero-shot names when the embedder has a text tower, else `c<j>-<dominant source>`."""
    text_embed = getattr(embedder, "text_embed", None)
    if text_embed is not None:
        prompts = list(concept_prompts or DEFAULT_CONCEPT_PROMPTS)
        return names_from_prompts(centroids_kd, text_embed(prompts), prompts)
    return names_from_sources([sources.most_common(1)[0][0] if sources else "empty"
                               for sources in summary.sources])


def build_atlas(corpus: Path | str, out: Path | str, *, embedder: str = "pixels", k: int | str = 10,
                tasks: str = "rules", fmt: str | None = None, source_field: str | None = None,
                strict: bool = False, seed: int = 0, batch_size: int = 256, workers: int = 2,
                progress: bool = True, concept_prompts: Sequence[str] | None = None,
                shard_size: int = SHARD_SIZE) -> Atlas:
    """Decompose `corpus` into an atlas at `out`: embed (resumable), cluster into k concepts, type tasks.

    `k` is an int or "auto" (silhouette over 2..16); `concept_prompts` overrides the zero-shot concept
    list of CLIP embedders. Rejected inputs go to OUT/rejects.jsonl (`strict` stops at the first).
    Embeddings are cached in OUT/embeddings in shards of `shard_size` samples; a re-run reuses them.
    """
    from mixatlas.corpus.sample import TASKS

    if k != "auto" and (not isinstance(k, int) or k < 1):
        raise MixAtlasError(f"--k {k}: pass a positive integer or 'auto'")
    inputs = _resolve_inputs(corpus, fmt, source_field)
    model = make_embedder(embedder)
    folder = _start_output(out)
    task_rules = _task_rules(tasks)
    cache, rejects = _embed_into(folder, inputs, model, task_rules, strict, batch_size, workers, progress,
                                 shard_size)
    with _bar(progress, "clustering", total=2) as advance:
        sample_nd = training_sample(cache, KMEANS_MAX_TRAIN, seed)
        advance(1)
        chosen_k = choose_k(sample_nd, seed=seed) if k == "auto" else int(k)
        _, centroids = kmeans(sample_nd, chosen_k, seed)
        advance(1)
    summary = write_samples_table(cache, centroids, TASKS, folder / "samples.parquet", progress)
    info = {
        "version": ATLAS_VERSION, "corpus": str(inputs.corpus), "format": inputs.fmt,
        "source_field": source_field, "embedder": model.spec, "k": chosen_k, "tasks": list(TASKS),
        "task_rules": task_rules, "concepts": _concept_names(model, centroids, summary, concept_prompts),
        "rejects": sum(rejects.values()), "rejects_by_reason": rejects, "fingerprint": inputs.fingerprint,
        "centroids_fingerprint": centroids_fingerprint(centroids, model.spec), "seed": seed, "parent": None,
    }
    return _finish_atlas(folder, info, centroids, summary)


def assign_atlas(atlas_dir: Path | str, corpus: Path | str, out: Path | str, *, fmt: str | None = None,
                 source_field: str | None = None, strict: bool = False, batch_size: int = 256,
                 workers: int = 2, progress: bool = True, shard_size: int = SHARD_SIZE) -> Atlas:
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
    task_rules = parent.info["task_rules"]
    cache, rejects = _embed_into(folder, inputs, model, task_rules, strict, batch_size, workers, progress,
                                 shard_size)
    centroids = parent.centroids()
    summary = write_samples_table(cache, centroids, parent.tasks, folder / "samples.parquet", progress)
    info = {
        "version": ATLAS_VERSION, "corpus": str(inputs.corpus), "format": inputs.fmt,
        "source_field": source_field, "embedder": parent.embedder, "k": parent.k, "tasks": parent.tasks,
        "task_rules": task_rules, "concepts": parent.concepts, "rejects": sum(rejects.values()),
        "rejects_by_reason": rejects,
        "fingerprint": inputs.fingerprint, "centroids_fingerprint": parent.centroids_fingerprint,
        "seed": parent.info["seed"],
        "parent": {"dir": str(parent.dir), "fingerprint": parent.fingerprint,
                   "centroids_fingerprint": parent.centroids_fingerprint},
    }
    return _finish_atlas(folder, info, centroids, summary)
