"""The embedding pass on Ray Data, across GPUs and machines: read -> decode -> embed on GPU actors -> shards.

The driver reads the corpus (the same reader, rejects and shard layout as the single-process pass) and
hands each unfinished sample's image ref to a Ray Data pipeline: `map_batches` decode tasks open and
crop images on any node's CPUs, then `map_batches` embedding actors (one per GPU, or CPU actors when
`gpus` is 0) run the model. Results come back in corpus order and are written shard by shard through
the single-process pass's own accept / reject / flush steps, so shards, rejects and resumption are the
same: a killed run keeps its finished shards and the next run embeds only the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.cache import EmbeddingCache
from mixatlas.atlas.embed import Embedder, make_embedder
from mixatlas.atlas.embedding_pass import _EmbeddingPass, _OrderedRejects, _prepare_images
from mixatlas.errors import MixAtlasError


def _decode_batch(batch: dict, prepare: Any, max_pixels: int, shape: tuple, dtype: str) -> dict:
    """Ray Data CPU step: open + preprocess each image ref; failed rows keep zeros and their reason."""
    refs = [str(ref) or None for ref in batch["image"]]
    ok, arrays, errors = _prepare_images(prepare, refs, max_pixels)
    prepared = np.zeros((len(refs), *shape), dtype=dtype)
    if ok:
        prepared[ok] = arrays
    reasons = np.array([""] * len(refs), dtype=object)
    for index, reason in errors:
        reasons[index] = reason
    return {"position": batch["position"], "prepared": prepared, "error": reasons}


class _EmbedActor:
    """Ray Data actor: loads the embedder once (on its GPU when it has one), embeds the decoded rows."""

    def __init__(self, spec: str) -> None:
        self.embedder = make_embedder(spec)

    def __call__(self, batch: dict) -> dict:
        ok = np.flatnonzero(batch["error"] == "")
        embeddings = np.zeros((len(batch["error"]), self.embedder.dim), np.float32)
        if len(ok):
            embeddings[ok] = self.embedder.encode(np.asarray(batch["prepared"])[ok])
        return {"position": batch["position"], "embedding": embeddings, "error": batch["error"]}


class _Embedded(Embedder):
    """Stands in for the real embedder in the driver's pass: rows arrive already embedded by the actors."""

    def __init__(self, spec: str, dim: int) -> None:
        self.spec, self.dim = spec, dim

    def preprocessor(self) -> Any:
        raise NotImplementedError("the Ray pass decodes in Ray Data tasks")

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        return np.asarray(prepared, dtype=np.float32)


class _RayPass(_EmbeddingPass):
    """The single-process pass with decoding and encoding moved onto a Ray Data pipeline."""

    def __init__(self, *args: Any, spec: str, prepare: Any, actors: int, gpus_per_actor: float) -> None:
        super().__init__(*args)
        self.spec, self.prepare = spec, prepare
        self.actors, self.gpus_per_actor = actors, gpus_per_actor

    def prepared(self, chunks: Iterator, pool: Any, window: int) -> Iterator[tuple]:
        """(chunk, ok positions, (n_ok, d) embeddings, errors) per chunk, in corpus order."""
        import ray
        from PIL import Image

        pending = list(chunks)
        rows = [{"position": chunk.first + i, "image": sample.image or ""}
                for chunk in pending for i, sample in enumerate(chunk.samples)]
        if not rows:
            return
        blank = np.asarray(self.prepare(Image.new("RGB", (8, 8))))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        dataset = ray.data.from_items(rows).map_batches(
            _decode_batch, batch_size=self.batch_size, num_cpus=0.5,
            fn_kwargs={"prepare": self.prepare, "max_pixels": self.max_pixels, "shape": blank.shape,
                       "dtype": str(blank.dtype)},
        ).map_batches(
            _EmbedActor, batch_size=self.batch_size, fn_constructor_kwargs={"spec": self.spec},
            compute=ray.data.ActorPoolStrategy(size=self.actors), num_gpus=self.gpus_per_actor,
            num_cpus=1 if self.gpus_per_actor else 0.5,
        )
        results = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
        embeddings: list[np.ndarray] = []
        reasons: list[str] = []
        for chunk in pending:
            while len(reasons) < len(chunk.samples):
                batch = next(results)
                embeddings.extend(batch["embedding"])
                reasons.extend(str(reason) for reason in batch["error"])
            n = len(chunk.samples)
            mine, embeddings = embeddings[:n], embeddings[n:]
            why, reasons = reasons[:n], reasons[n:]
            ok = [i for i in range(n) if not why[i]]
            errors = [(i, why[i]) for i in range(n) if why[i]]
            yield chunk, ok, (np.stack([mine[i] for i in ok]) if ok else None), errors


def embed_corpus_ray(corpus: Path, fmt: str, source_field: str | None, cache: EmbeddingCache,
                     embedder: Embedder, typer: Any, rejects: Any, batch_size: int, show: bool, *,
                     address: str | None = None, gpus: int = 0, cpus: int | None = None,
                     allow_outside_root: bool = False, max_pixels: int | None = None) -> int:
    """Fill `cache` like `embedding_pass.embed_corpus`, decoding and embedding on Ray (returns samples read).

    Connects to the cluster at `address`, else starts a local Ray of `cpus` CPUs (None = all) and stops it
    afterwards. `gpus` embedding actors of one GPU each; 0 = two CPU actors (tests, CPU clusters).
    """
    import ray

    from mixatlas.corpus import DEFAULT_MAX_PIXELS, read_corpus

    if gpus < 0:
        raise MixAtlasError(f"--gpus {gpus}: pass 0 (CPU actors) or the number of GPU actors")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                     configure_logging=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MixAtlasError(f"--ray-address {address}: cannot connect to Ray ({exc})") from None
    ordered = _OrderedRejects(rejects)
    ray_pass = _RayPass(corpus, cache, _Embedded(embedder.spec, embedder.dim), typer, ordered, batch_size,
                        show, max_pixels or DEFAULT_MAX_PIXELS, spec=embedder.spec,
                        prepare=embedder.preprocessor(), actors=gpus or 2, gpus_per_actor=1 if gpus else 0)
    samples = read_corpus(corpus, fmt, source_field=source_field, allow_outside_root=allow_outside_root,
                          rejects=ordered)
    cache.mark_complete(False)
    try:
        ray_pass.run(samples, None, 1)
    except MixAtlasError:
        if not rejects.strict:
            ordered.release()
        raise
    finally:
        if started_here:
            ray.shutdown()
    cache.mark_complete(True)
    return ray_pass.n_read
