"""Turn a recipe into a training manifest: exact per-cell counts, one global shuffle, streaming writes.

How the draw works (memory O(atlas rows + chunk), never O(N)):
1. per-cell targets: largest-remainder rounding of w * N, so the counts sum to N exactly;
2. inside a cell, rows come from a stream of fresh random permutations of the cell's rows (one per epoch),
   so a row repeats only after every row of its cell was used, and at most `max_epochs` times;
3. the output order is a uniformly random interleaving of all cells, generated chunk by chunk: each chunk's
   composition is drawn from the multivariate hypergeometric of the cells' remaining counts, then shuffled.
   This is exactly one global seeded shuffle across sources and cells, without holding N indices.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixatlas.console import console, progress_bar
from mixatlas.errors import MixAtlasError
from mixatlas.publish import check_replaceable, published
from mixatlas.recipe.recipe import Recipe, now_iso
from mixatlas.space import Mixture

FORMATS = ("llava", "wds", "parquet")
OUTPUT_NAMES = {"llava": "manifest.jsonl", "parquet": "mixture.parquet", "wds": "shard-{:06d}.tar"}
SUMMARY_NAME = "materialize.json"
SAMPLE_COLUMNS = ("id", "source", "image", "concept", "task", "conversations")
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_EMPTY = pa.scalar("", pa.large_string())


@dataclass(frozen=True)
class MaterializeSummary:
    """What a materialization wrote (also saved as `OUT/materialize.json`)."""

    format: str
    samples: int
    seed: int
    max_epochs: float
    files: list[str]
    cell_counts: list[list[int]]  # (k, T) samples written per cell
    cell_epochs_max: float  # largest samples/rows ratio over cells (1.0 = every row once)
    sources: dict[str, int]
    recipe: dict[str, Any]
    created: str

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))


def largest_remainder_counts(weights_kt: np.ndarray, n: int) -> np.ndarray:
    """(k, T) int64 counts summing to exactly `n`, each within 1 of `w * n`.

    Floors w * n, then gives the leftover units to the cells with the largest fractional parts (ties go to
    the earlier cell in row-major order, so the result is deterministic).
    """
    w = np.asarray(weights_kt, dtype=np.float64)
    raw = w.ravel() / w.sum() * n
    base = np.floor(raw).astype(np.int64)
    short = int(n - base.sum())
    if short > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:short]] += 1
    return base.reshape(w.shape)


def check_feasible(need_kt: np.ndarray, rows_kt: np.ndarray, max_epochs: float,
                   concepts: tuple[str, ...], tasks: tuple[str, ...]) -> None:
    """Refuse a draw that would repeat a cell's rows more than `max_epochs` times, listing the cells."""
    cap_kt = np.floor(rows_kt * max_epochs + 1e-9).astype(np.int64)
    bad = np.argwhere(need_kt > cap_kt)
    if not len(bad):
        return
    parts = [
        f"{concepts[i]}/{tasks[j]} needs {need_kt[i, j]}, has {rows_kt[i, j]} rows x {max_epochs:g} epochs "
        f"(short {need_kt[i, j] - cap_kt[i, j]})"
        for i, j in bad
    ]
    shown = "; ".join(parts[:8]) + (f"; ... and {len(parts) - 8} more cells" if len(parts) > 8 else "")
    present = (need_kt > 0) & (rows_kt > 0)
    epochs_needed = float(np.max(need_kt[present] / rows_kt[present])) if present.any() else 0.0
    empty = int(((need_kt > 0) & (rows_kt == 0)).sum())
    fix = f"raise --max-epochs to {np.ceil(epochs_needed * 100) / 100:g} or lower --samples"
    if empty:
        fix += f"; {empty} cells are empty in this atlas: move the recipe with `mixatlas recipe apply`"
    raise MixAtlasError(f"recipe infeasible for this atlas: {shown}; {fix}")


class _CellStreams:
    """Per-cell row streams: concatenated fresh permutations of each cell's rows (one per epoch)."""

    def __init__(self, rows_by_cell: list[np.ndarray], rng: np.random.Generator) -> None:
        self._rows = rows_by_cell
        self._rng = rng
        self._perm: list[np.ndarray] = [np.empty(0, np.int64) for _ in rows_by_cell]
        self._pos = [0] * len(rows_by_cell)

    def take(self, cell: int, n: int) -> np.ndarray:
        """The next `n` rows of cell `cell`'s stream."""
        out = []
        while n > 0:
            perm, pos = self._perm[cell], self._pos[cell]
            if pos == len(perm):
                perm, pos = self._rng.permutation(self._rows[cell]), 0
                self._perm[cell] = perm
            got = perm[pos:pos + n]
            out.append(got)
            self._pos[cell] = pos + len(got)
            n -= len(got)
        return np.concatenate(out) if len(out) != 1 else out[0]


def shuffled_row_chunks(rows_by_cell: list[np.ndarray], need: np.ndarray, seed: int,
                        chunk_size: int = 1 << 16) -> Iterator[np.ndarray]:
    """Yield int64 row-index chunks whose concatenation is a uniform shuffle of the whole draw.

    `rows_by_cell[c]` are the atlas rows of cell c; `need[c]` how many samples cell c contributes.
    """
    rng = np.random.default_rng(seed)
    streams = _CellStreams(rows_by_cell, rng)
    remaining = np.asarray(need, dtype=np.int64).copy()
    left = int(remaining.sum())
    while left > 0:
        size = min(chunk_size, left)
        take = rng.multivariate_hypergeometric(remaining, size, method="marginals")
        cells = np.flatnonzero(take)
        chunk = np.concatenate([streams.take(int(c), int(take[c])) for c in cells])
        remaining -= take
        left -= size
        yield chunk[rng.permutation(size)]


def cell_index(table: pa.Table, tasks: tuple[str, ...]) -> np.ndarray:
    """(n,) int64 cell id `concept * T + task_index` of every row of an atlas table."""
    task_idx = pc.index_in(table.column("task"), value_set=pa.array(list(tasks), pa.string()))
    if task_idx.null_count:
        unknown = pc.filter(table.column("task"), pc.is_null(task_idx))[0].as_py()
        raise MixAtlasError(
            f"atlas samples.parquet: task {unknown!r} is not one of {list(tasks)}; rebuild the atlas"
        )
    concept = table.column("concept").to_numpy().astype(np.int64)
    return concept * len(tasks) + task_idx.to_numpy().astype(np.int64)


def rows_by_cell(cell_ids: np.ndarray, n_cells: int) -> list[np.ndarray]:
    """Split row numbers by cell id: list of n_cells int64 arrays (ascending row order)."""
    order = np.argsort(cell_ids, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell_ids, minlength=n_cells))])
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_cells)]


def on_atlas(recipe: Recipe, atlas: Any) -> Recipe:
    """`recipe` with `atlas`'s cell names: itself when the names match; with the atlas's concept names
    (matched by index, said in one line) when the atlas is the recipe's own (same fingerprint or
    centroids) renamed by `mixatlas atlas name`. Raises MixAtlasError for the cells of another atlas."""
    concepts, tasks = tuple(atlas.concepts), tuple(atlas.tasks)
    if concepts == recipe.concepts and tasks == recipe.tasks:
        return recipe
    centroids = recipe.centroids_fingerprint
    same_atlas = recipe.atlas_fingerprint == atlas.fingerprint or (
        centroids is not None and centroids == atlas.centroids_fingerprint)
    if not same_atlas or tasks != recipe.tasks or len(concepts) != len(recipe.concepts):
        raise MixAtlasError(
            f"recipe cells ({len(recipe.concepts)} concepts x {', '.join(recipe.tasks)}) are not those of "
            f"this atlas ({len(concepts)} concepts x {', '.join(tasks)}, {str(atlas.fingerprint)[:12]}); "
            "move it with `mixatlas recipe apply RECIPE --atlas ATLAS --out NEW.yaml`")
    renamed = [f"{old} -> {new}" for old, new in zip(recipe.concepts, concepts, strict=True) if old != new]
    more = f" and {len(renamed) - 5} more" if len(renamed) > 5 else ""
    console.print(f"the atlas's concepts were renamed since the recipe was made; matched by index: "
                  f"{', '.join(renamed[:5])}{more}", soft_wrap=True, highlight=False, markup=False)
    return replace(recipe, mixture=Mixture(concepts, tasks, recipe.weights_kt))


def materialize(atlas: Any, recipe: Recipe, samples: int, out: Path, format: str = "llava",
                max_epochs: float | None = None, seed: int = 0, chunk_size: int = 1 << 16,
                shard_size: int = 10_000, overwrite: bool = False) -> MaterializeSummary:
    """Write `samples` training samples drawn from `atlas` in the recipe's proportions to folder `out`.

    Args:
        atlas: a :class:`mixatlas.atlas.Atlas` whose cells the recipe's weights refer to.
        recipe: the recipe (already checked against / transferred to this atlas).
        samples: N, the manifest length; per-cell counts are largest-remainder rounded w * N.
        format: "llava" (JSONL referencing the original images), "wds" (tar shards, images copied),
            "parquet" (one file, a row group per chunk).
        max_epochs: how often a row may repeat; default: the recipe's epoch cap, else 1 (no repeats).
        seed: seeds both the within-cell draws and the global shuffle (same seed -> same bytes).
    """
    if format not in FORMATS:
        raise MixAtlasError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if samples <= 0:
        raise MixAtlasError(f"--samples {samples}: must be a positive number of samples")
    recipe = on_atlas(recipe, atlas)
    epochs = float(max_epochs if max_epochs is not None else (recipe.max_epochs or 1.0))
    if epochs <= 0:
        raise MixAtlasError(f"--max-epochs {epochs:g}: must be positive")
    out = Path(out)
    if (out / SUMMARY_NAME).exists() and not overwrite:
        raise MixAtlasError(f"{out}: already holds a materialized mixture; pass --overwrite or another --out")
    check_replaceable(out, (SUMMARY_NAME,))

    table = atlas.table(columns=list(SAMPLE_COLUMNS))
    k, n_tasks = len(recipe.concepts), len(recipe.tasks)
    cells = cell_index(table, recipe.tasks)
    rows_kt = np.bincount(cells, minlength=k * n_tasks).reshape(k, n_tasks)
    need_kt = largest_remainder_counts(recipe.weights_kt, samples)
    check_feasible(need_kt, rows_kt, epochs, recipe.concepts, recipe.tasks)

    source_names, source_of_row = _source_codes(table)
    source_counts = np.zeros(len(source_names), np.int64)
    # Build what the writer gathers from, then drop the atlas table: only one copy of the rows stays.
    build_rows = manifest_lines if format == "llava" else _output_table
    rows = build_rows(table, recipe.concepts)
    del table
    chunks = shuffled_row_chunks(rows_by_cell(cells, k * n_tasks), need_kt.ravel(), seed, chunk_size)
    counted = _count_sources(chunks, source_of_row, source_counts)
    writer = {"llava": _write_llava, "parquet": _write_parquet, "wds": _write_wds}[format]
    # Written into a staging sibling and swapped in whole: a reader (or a kill) never sees new shards
    # beside old ones, and an --overwrite with fewer shards or another format leaves none of the old.
    with published(out) as staging:
        files = writer(rows, _progress_chunks(counted, samples, f"writing {format}"), staging, shard_size)
        used = rows_kt > 0
        summary = MaterializeSummary(
            format=format, samples=samples, seed=seed, max_epochs=epochs, files=files,
            cell_counts=need_kt.tolist(),
            cell_epochs_max=float(np.max(need_kt[used] / rows_kt[used])) if used.any() else 0.0,
            sources=dict(zip(source_names, source_counts.tolist(), strict=True)),
            recipe={"atlas_fingerprint": recipe.atlas_fingerprint, "provenance": recipe.provenance},
            created=now_iso(),
        )
        summary.save(staging / SUMMARY_NAME)
    return summary


def _count_sources(chunks: Iterator[np.ndarray], source_of_row: np.ndarray,
                   counts: np.ndarray) -> Iterator[np.ndarray]:
    """Pass chunks through, adding their per-source sample counts into `counts` (in place)."""
    for chunk in chunks:
        counts += np.bincount(source_of_row[chunk], minlength=len(counts))
        yield chunk


def _progress_chunks(chunks: Iterator[np.ndarray], total: int, label: str) -> Iterator[np.ndarray]:
    """Pass chunks through under a progress bar."""
    with progress_bar(True, label, total=total, transient=True) as bar:
        for chunk in chunks:
            yield chunk
            bar(len(chunk))


def _source_codes(table: pa.Table) -> tuple[list[str], np.ndarray]:
    """Source names and the (n,) int64 source code of every row."""
    encoded = pc.dictionary_encode(table.column("source")).combine_chunks()
    names = [str(s) for s in encoded.dictionary.to_pylist()]
    return names, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _json_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """JSON-encode a string column vectorized (quotes added; rare rows with `"`, `\\`, controls via json)."""
    column = pc.cast(column, pa.large_string())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    quote = pa.scalar('"', pa.large_string())
    quoted = pc.binary_join_element_wise(quote, column, quote, _EMPTY)
    needs = pc.fill_null(pc.match_substring_regex(column, _NEEDS_ESCAPE), False)
    if pc.any(needs).as_py():
        escaped = [json.dumps(v, ensure_ascii=False) for v in pc.filter(column, needs).to_pylist()]
        quoted = pc.replace_with_mask(quoted, needs, pa.array(escaped, pa.large_string()))
    return pc.fill_null(quoted, "null")


def manifest_lines(table: pa.Table, concepts: tuple[str, ...]) -> pa.Array:
    """(n,) large_string: the llava JSONL line (with newline) of every atlas row, built vectorized."""
    concept_json = pa.array([json.dumps(c, ensure_ascii=False) for c in concepts], pa.large_string())
    conversations = pc.fill_null(pc.cast(table.column("conversations"), pa.large_string()), "[]")

    def text(s: str) -> pa.Scalar:
        return pa.scalar(s, pa.large_string())

    return pc.binary_join_element_wise(
        text('{"id": '), _json_strings(table.column("id")),
        text(', "image": '), _json_strings(table.column("image")),
        text(', "conversations": '), conversations.combine_chunks(),
        text(', "source": '), _json_strings(table.column("source")),
        text(', "concept": '), concept_json.take(table.column("concept").combine_chunks()),
        text(', "task": '), _json_strings(table.column("task")),
        text("}\n"), _EMPTY,
    )


def _array_bytes(arr: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a large_string array, without copying."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    return memoryview(arr.buffers()[2])[offsets[0]:offsets[-1]]


def _write_llava(lines: pa.Array, chunks: Iterator[np.ndarray], out: Path, shard_size: int) -> list[str]:
    path = out / OUTPUT_NAMES["llava"]
    with open(path, "wb", buffering=1 << 22) as fh:
        for chunk in chunks:
            fh.write(_array_bytes(lines.take(pa.array(chunk))))
    return [path.name]


def _output_table(table: pa.Table, concepts: tuple[str, ...]) -> pa.Table:
    names = pa.array(list(concepts), pa.string())
    return pa.table({
        "id": table.column("id"), "image": table.column("image"),
        "conversations": table.column("conversations"), "source": table.column("source"),
        "concept": names.take(table.column("concept").combine_chunks()),
        "concept_id": table.column("concept"), "task": table.column("task"),
    })


def _write_parquet(rows: pa.Table, chunks: Iterator[np.ndarray], out: Path, shard_size: int) -> list[str]:
    import pyarrow.parquet as pq

    path = out / OUTPUT_NAMES["parquet"]
    with pq.ParquetWriter(path, rows.schema) as writer:
        for chunk in chunks:
            writer.write_table(rows.take(pa.array(chunk)))
    return [path.name]


_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str:
    """File extension WebDataset decoders expect for encoded image bytes ("png", "jpg", ...)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "img"


def _write_wds(rows: pa.Table, chunks: Iterator[np.ndarray], out: Path, shard_size: int) -> list[str]:
    from mixatlas.corpus.images import image_bytes

    files: list[str] = []
    tar: tarfile.TarFile | None = None
    written = 0

    def add(name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    for chunk in chunks:
        for row in rows.take(pa.array(chunk)).to_pylist():
            if written % shard_size == 0:
                if tar is not None:
                    tar.close()
                files.append(OUTPUT_NAMES["wds"].format(len(files)))
                tar = tarfile.open(out / files[-1], "w")  # noqa: SIM115 (closed per shard)
            key = f"{written:09d}"
            try:
                data = image_bytes(row["image"])
            except OSError as exc:
                raise MixAtlasError(f"sample {row['id']}: cannot read image {row['image']} ({exc}); "
                                    "fix the corpus and rebuild the atlas") from None
            add(f"{key}.{image_extension(data)}", data)
            meta = {"id": row["id"], "source": row["source"], "concept": row["concept"], "task": row["task"],
                    "image_ref": row["image"], "conversations": json.loads(row["conversations"] or "[]")}
            add(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
            written += 1
    if tar is not None:
        tar.close()
    return files


def source_probabilities(atlas: Any, recipe: Recipe) -> dict[str, float]:
    """Per-source sampling probabilities reproducing the recipe's source mix for `interleave_datasets`.

    p(source) = sum over cells of w_cell * (rows of source in cell / rows in cell): the share of samples
    each source contributes when cells are sampled uniformly inside. Interleaving whole sources matches the
    recipe's cell weights only as far as sources align with cells; materialize is exact.
    """
    table = atlas.table(columns=["source", "concept", "task"])
    k, n_tasks = len(recipe.concepts), len(recipe.tasks)
    cells = cell_index(table, recipe.tasks)
    names, source_of_row = _source_codes(table)
    joint = np.bincount(source_of_row * (k * n_tasks) + cells, minlength=len(names) * k * n_tasks)
    joint = joint.reshape(len(names), k * n_tasks).astype(np.float64)
    rows_c = joint.sum(axis=0)
    w = recipe.weights_kt.ravel()
    empty = (w > 0) & (rows_c == 0)
    if empty.any():
        cells_txt = ", ".join(f"{recipe.concepts[c // n_tasks]}/{recipe.tasks[c % n_tasks]}"
                              for c in np.flatnonzero(empty)[:8])
        raise MixAtlasError(f"recipe puts weight on cells empty in this atlas ({cells_txt}); "
                            "move it with `mixatlas recipe apply`")
    share = joint / np.where(rows_c > 0, rows_c, 1.0)
    probs = share @ w
    probs = probs / probs.sum()
    return {name: float(p) for name, p in sorted(zip(names, probs, strict=True), key=lambda x: -x[1])}
