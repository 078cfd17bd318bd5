"""The embedding cache, ATLAS/embeddings/: image embeddings stored per shard so re-clustering never re-embeds.

Files: shard-NNNNN.npy (n_s, d) float32, shard-NNNNN.rows.parquet (the rows, ids first),
shard-NNNNN.rejects.jsonl and manifest.json (key, shards, complete).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.atlas.folder import row_schema, write_json_atomic

CACHE_VERSION = 1
SHARD_SIZE = 8192


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
        pq.write_table(pa.table(rows, schema=row_schema()), tmp)
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
        write_json_atomic(self.manifest_path, {"version": CACHE_VERSION, "key": self.key,
                                                "complete": self.complete, "shards": self.shards})
