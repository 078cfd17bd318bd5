"""The embedding pass: read the corpus, decode and preprocess images in workers, encode, store shards.

Rejects (malformed records, missing or corrupt images) reach the rejects list in corpus order
(`_OrderedRejects`), whether the reader or a decoding worker found them.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.cache import EmbeddingCache
from mixatlas.atlas.embed import Embedder
from mixatlas.atlas.folder import ROW_COLUMNS
from mixatlas.console import progress_bar
from mixatlas.errors import MixAtlasError
from mixatlas.processes import owned_worker


def _prepare_images(prepare: Callable, refs: Sequence[str | None],
                    max_pixels: int) -> tuple[list[int], Any, list[tuple]]:
    """Worker step: open and preprocess each image ref; returns (ok positions, stacked arrays, errors)."""
    from mixatlas.corpus import ImageRejected, open_image

    ok, arrays, errors = [], [], []
    for position, ref in enumerate(refs):
        if not ref:
            errors.append((position, "no image: the record has no image; MixAtlas clusters image samples"))
            continue
        try:
            image = open_image(ref, max_pixels)
        except ImageRejected as exc:
            errors.append((position, str(exc)))
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
                 rejects: _OrderedRejects, batch_size: int, show: bool, max_pixels: int) -> None:
        self.corpus, self.cache, self.embedder, self.typer = corpus, cache, embedder, typer
        self.rejects, self.batch_size, self.show = rejects, max(1, batch_size), show
        self.max_pixels = max_pixels

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
                yield chunk, *_prepare_images(prepare, [s.image for s in chunk.samples], self.max_pixels)
            return
        pending: deque = deque()
        for chunk in chunks:
            refs = [s.image for s in chunk.samples]
            pending.append((chunk, pool.submit(_prepare_images, prepare, refs, self.max_pixels)))
            if len(pending) >= window:
                done_chunk, future = pending.popleft()
                yield done_chunk, *future.result()
        while pending:
            done_chunk, future = pending.popleft()
            yield done_chunk, *future.result()

    def run(self, samples: Iterator, pool: Executor | None, window: int) -> None:
        """Encode each chunk on a helper thread while this one stores the previous chunk and collects the
        next decoded one: the device (which releases the GIL) never waits for the host's bookkeeping."""
        buffer: _ShardBuffer | None = None
        pending: tuple | None = None
        with progress_bar(self.show, "embedding images") as advance, ThreadPoolExecutor(1) as encoder:
            for chunk, ok, arrays, errors in self.prepared(self.chunks(samples, advance), pool, window):
                encoding = encoder.submit(self.embedder.encode, arrays) if ok else None
                if pending is not None:
                    buffer = self.store(buffer, *pending, advance)
                pending = (chunk, ok, errors, encoding)
            if pending is not None:
                buffer = self.store(buffer, *pending, advance)
        if buffer is not None:
            self.flush(buffer)
        self.rejects.release()

    def store(self, buffer: _ShardBuffer | None, chunk: _Chunk, ok: list[int], errors: list[tuple],
              encoding: Future | None, advance: Callable[[int], None]) -> _ShardBuffer:
        """File one chunk's rejects and embeddings into its shard's buffer (flushing a finished shard)."""
        if buffer is not None and buffer.index != chunk.shard:
            self.flush(buffer)
            buffer = None
        buffer = buffer or _ShardBuffer(chunk.shard)
        for index, reason in errors:
            self.reject(buffer, chunk, index, reason)
        if encoding is not None:
            self.accept(buffer, [chunk.samples[index] for index in ok], encoding.result())
        self.rejects.release(upto=chunk.first + len(chunk.samples) - 1)
        advance(len(chunk.samples))
        return buffer

    def reject(self, buffer: _ShardBuffer, chunk: _Chunk, index: int, reason: str) -> None:
        sample = chunk.samples[index]
        file, where = (sample.shard or str(self.corpus)), sample.where
        buffer.rejects.append({"position": chunk.first + index, "file": file, "where": where,
                               "reason": reason})
        self.rejects.queue(chunk.first + index, file, where, reason)

    def accept(self, buffer: _ShardBuffer, samples: list, emb_nd: np.ndarray) -> None:
        for sample in samples:
            typing = self.typer.type(sample)
            for column, value in (("id", sample.id), ("source", sample.source), ("image", sample.image),
                                  ("task", typing.task), ("shard", sample.shard),
                                  ("offset", int(sample.offset)),
                                  ("conversations", json.dumps(sample.conversations, ensure_ascii=False)),
                                  ("task_rule", typing.rule), ("task_mix", typing.mix)):
                buffer.rows[column].append(value)
        buffer.embeddings.append(emb_nd)

    def flush(self, buffer: _ShardBuffer) -> None:
        dim = int(self.cache.key["dim"])
        emb = np.concatenate(buffer.embeddings) if buffer.embeddings else np.zeros((0, dim), np.float32)
        self.cache.write(buffer.index, emb, buffer.rows, buffer.rejects)


def embed_corpus(corpus: Path, fmt: str, source_field: str | None, cache: EmbeddingCache, embedder: Embedder,
                  typer: Any, rejects: Any, batch_size: int, workers: int, show: bool, *,
                  allow_outside_root: bool = False, max_pixels: int | None = None) -> int:
    """Fill `cache` from the corpus (resuming finished shards); returns the number of samples read.

    Image paths must stay in the corpus root unless `allow_outside_root`; images over `max_pixels`
    (default `DEFAULT_MAX_PIXELS`) are rejected from their header, before decoding."""
    from mixatlas.corpus import DEFAULT_MAX_PIXELS, read_corpus

    ordered = _OrderedRejects(rejects)
    embedding_pass = _EmbeddingPass(corpus, cache, embedder, typer, ordered, batch_size, show,
                                    max_pixels or DEFAULT_MAX_PIXELS)
    samples = read_corpus(corpus, fmt, source_field=source_field, allow_outside_root=allow_outside_root,
                          rejects=ordered)
    cache.mark_complete(False)
    try:
        if workers <= 0:
            embedding_pass.run(samples, None, 1)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"),
                                       initializer=owned_worker)  # die with the run, Ctrl-C left to it
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
