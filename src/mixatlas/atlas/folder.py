"""The atlas folder: its layout, the typed atlas.json (`AtlasInfo`) and the `Atlas` handle that opens it.

Layout of ATLAS/:
  atlas.json        `AtlasInfo`: embedder, k, task set, concept names, counts (k x T), fingerprints,
                    rejects, parent; written last, so a folder without it is no atlas
  samples.parquet   one row per accepted sample (id, source, image, concept, task, shard, offset,
                    conversations), written one row group per embedding shard
  centroids.npy     (k, d) float32, unit rows
  rejects.jsonl     every rejected input (file, where, reason)
  exemplars.png     thumbnails closest to each centroid, one row per concept
  embeddings/       the resumable cache (`mixatlas.atlas.cache.EmbeddingCache`)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from mixatlas.errors import MixAtlasError

ATLAS_VERSION = 1
ROW_COLUMNS = ("id", "source", "image", "task", "shard", "offset", "conversations", "task_rule", "task_mix")


def row_schema() -> Any:
    """pyarrow schema of a sample row as the embedding pass stores it (ROW_COLUMNS, no concept yet)."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source", pa.string()), ("image", pa.string()),
                      ("task", pa.string()), ("shard", pa.string()), ("offset", pa.int64()),
                      ("conversations", pa.string()), ("task_rule", pa.string()), ("task_mix", pa.string())])


def table_schema() -> Any:
    """pyarrow schema of samples.parquet: the row schema with an int32 `concept` column after `image`."""
    import pyarrow as pa

    return row_schema().insert(3, pa.field("concept", pa.int32()))


def write_json_atomic(path: Path, data: object) -> None:
    """Write `data` as JSON to `path` through a temporary file, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@pydantic.dataclasses.dataclass(frozen=True)
class AtlasParent:
    """The atlas an assigned atlas took its concepts from."""

    dir: str
    fingerprint: str
    centroids_fingerprint: str


@pydantic.dataclasses.dataclass(frozen=True)
class AtlasInfo:
    """atlas.json, typed. `counts` is the (k, T) samples-per-cell matrix as nested tuples.

    Loading validates every field (pydantic), so a hand-edited or foreign atlas.json fails with the field's
    name instead of a KeyError deep inside a search.
    """

    corpus: str
    format: str
    source_field: str | None
    embedder: str
    k: int
    tasks: tuple[str, ...]
    task_rules: str
    concepts: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    n_samples: int
    rejects: int
    rejects_by_reason: dict[str, int]
    fingerprint: str
    centroids_fingerprint: str
    seed: int
    parent: AtlasParent | None = None
    exemplars: str | None = None
    exemplar_refs: tuple[tuple[str, ...], ...] = ()  # per concept, the image refs drawn in `exemplars`
    version: int = ATLAS_VERSION

    def __post_init__(self) -> None:
        if len(self.concepts) != self.k or any(len(row) != len(self.tasks) for row in self.counts) \
                or len(self.counts) != self.k:
            raise ValueError(f"k={self.k} concepts x {len(self.tasks)} tasks expected in `concepts` and "
                             f"`counts`, got {len(self.concepts)} names and {len(self.counts)} count rows")

    @property
    def counts_kt(self) -> np.ndarray:
        """(k, T) int64 samples per cell."""
        return np.asarray(self.counts, dtype=np.int64).reshape(self.k, len(self.tasks))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written to atlas.json (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def write(self, path: Path) -> None:
        """Write atlas.json atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> AtlasInfo:
        """Read and validate atlas.json; any problem is a one-line MixAtlasError naming the fix."""
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise MixAtlasError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); rebuild the atlas") from None
        version = data.get("version") if isinstance(data, dict) else None
        if version != ATLAS_VERSION:
            raise MixAtlasError(f"{path}: atlas version {version!r}, this MixAtlas reads {ATLAS_VERSION}; "
                                f"rebuild with `mixatlas decompose CORPUS --out {path.parent}`")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except (pydantic.ValidationError, TypeError, ValueError) as exc:
            raise MixAtlasError(f"{path}: {_first_problem(exc)}; rebuild with "
                                f"`mixatlas decompose CORPUS --out {path.parent}`") from None


def _first_problem(exc: Exception) -> str:
    """One line out of a validation error: the first failing field and why."""
    if isinstance(exc, pydantic.ValidationError):
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "atlas.json"
        if error["type"] == "missing":
            return f"field {field!r} is missing"
        return f"field {field!r}: {error['msg']}"
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class Atlas:
    """A built atlas folder; `info` is its typed atlas.json."""

    dir: Path
    info: AtlasInfo

    @classmethod
    def load(cls, dir: Path | str) -> Atlas:
        """Open ATLAS/ (atlas.json must exist: it is written last, so a half-built folder is no atlas)."""
        folder = Path(dir)
        meta = folder / "atlas.json"
        if not meta.is_file():
            raise MixAtlasError(f"{folder}: not an atlas (no atlas.json); build one with "
                                f"`mixatlas decompose CORPUS --out {folder}`")
        return cls(folder.resolve(), AtlasInfo.read(meta))

    @property
    def k(self) -> int:
        return self.info.k

    @property
    def concepts(self) -> list[str]:
        return list(self.info.concepts)

    @property
    def tasks(self) -> list[str]:
        return list(self.info.tasks)

    @property
    def counts(self) -> np.ndarray:
        """(k, T) int64 samples per cell."""
        return self.info.counts_kt

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def centroids_fingerprint(self) -> str:
        return self.info.centroids_fingerprint

    @property
    def embedder(self) -> str:
        return self.info.embedder

    @property
    def corpus(self) -> Path:
        return Path(self.info.corpus)

    def table(self, columns: Sequence[str] | None = None) -> Any:
        """samples.parquet as a pyarrow.Table (only `columns` if given)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.dir / "samples.parquet", columns=list(columns) if columns else None)

    def centroids(self) -> np.ndarray:
        """(k, d) float32 unit-norm concept centroids."""
        return np.load(self.dir / "centroids.npy")

    def renamed(self, names: Sequence[str]) -> Atlas:
        """Write `names` (k of them) as the concept names in atlas.json (and exemplars.png's labels);
        samples and centroids stay."""
        info = dataclasses.replace(self.info, concepts=tuple(names))
        if info.exemplars and info.exemplar_refs:  # redraw the grid with the new labels
            from mixatlas.atlas.exemplars import write_exemplar_grid

            write_exemplar_grid(self.dir / info.exemplars, info.exemplar_refs, info.concepts)
        info.write(self.dir / "atlas.json")
        return Atlas(self.dir, info)
