"""Hugging Face `datasets` folders as corpora, read with pyarrow (the `datasets` library is not needed).

Layouts recognized (`is_hf_dataset`), read as the `hf` format:
  save_to_disk, one split:  DIR/dataset_info.json + DIR/state.json + DIR/data-0000i-of-0000N.arrow
                            (Arrow IPC stream files, in the order state.json lists them)
  save_to_disk, DatasetDict: DIR/dataset_dict.json ({"splits": [...]}) + DIR/<split>/ as above
  hub cache repository:     DIR = .../hub/datasets--ORG--NAME/ (refs/main names the snapshot to read)
  hub snapshot:             .../snapshots/<rev>/ holding **/*.parquet or **/*.arrow (one folder per subset,
                            as LLaVA-OneVision ships)
  processed cache:          DIR/dataset_info.json + DIR/NAME-<split>-0000i-of-0000N.arrow
Of a folder with several splits only the `train` split is read (files named or filed under `train`);
without any, every file is.

Rows: a `conversations` (or `messages`) column of LLaVA turns, an image column (the HF `Image` struct
`{bytes, path}`, raw bytes or a path string), other columns go to `Sample.meta`. An image stored as bytes
becomes the ref `SHARD::ROW`, read back by `corpus.images` from the memory-mapped shard.
A sample's default source is its subset folder (hub) or the dataset folder (save_to_disk), not the shard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixatlas.corpus.images import REF_SEP, open_arrow, parquet_image_column
from mixatlas.errors import MixAtlasError

if TYPE_CHECKING:
    from mixatlas.corpus.records import RecordParser
    from mixatlas.corpus.sample import Sample

HF_FORMAT = "hf"
SPLIT = "train"
BATCH_ROWS = 1024
_SHARD_NAME = re.compile(r"^(?:.*-)?(?:data|train|test|validation|val|dev)(?:-\d+-of-\d+|-\d+)?$|^\d+$")
_SHARD_SUFFIXES = (".arrow", ".parquet")


def is_hf_dataset(folder: Path) -> bool:
    """Whether `folder` is one of the Hugging Face layouts in the module docstring."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return True
    if (folder / "snapshots").is_dir() or folder.parent.name == "snapshots":
        return True
    return (folder / "dataset_info.json").is_file() and any(folder.glob("*.arrow"))


def hf_dataset_files(folder: Path) -> list[Path]:
    """The Arrow/Parquet shards of an HF dataset folder, in reading order (train split; see module doc)."""
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits") or []
        chosen = [SPLIT] if SPLIT in splits else list(splits)
        files = [file for split in chosen for file in hf_dataset_files(folder / split)]
    elif (folder / "state.json").is_file():
        state = _json(folder / "state.json")
        names = [entry.get("filename") for entry in state.get("_data_files") or []]
        files = [folder / name for name in names if name] or sorted(folder.glob("*.arrow"))
    elif (folder / "snapshots").is_dir():
        files = hf_dataset_files(_snapshot(folder))
    else:
        found = sorted(p for p in folder.rglob("*") if p.suffix in _SHARD_SUFFIXES and p.is_file())
        in_split = [path for path in found if _in_split(path.relative_to(folder))]
        files = in_split or found
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise MixAtlasError(f"{missing[0]}: listed in the dataset's state.json but missing; re-save it")
    if not files:
        raise MixAtlasError(f"{folder}: a Hugging Face dataset folder without .arrow or .parquet shards")
    return files


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MixAtlasError(f"{path}: unreadable ({exc}); re-save the dataset") from None
    if not isinstance(data, dict):
        raise MixAtlasError(f"{path}: expected a JSON object; re-save the dataset")
    return data


def _snapshot(repo: Path) -> Path:
    """The snapshot `refs/main` points to, else the newest one."""
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted((p for p in (repo / "snapshots").iterdir() if p.is_dir()),
                       key=lambda p: p.stat().st_mtime)
    if not snapshots:
        raise MixAtlasError(f"{repo}/snapshots: empty; download the dataset again (huggingface-cli download)")
    return snapshots[-1]


def _in_split(relative: Path) -> bool:
    """Whether a shard belongs to the train split: a `train` folder or a name like `train-00000-of-00002`."""
    stem = relative.name.split(".")[0]
    return SPLIT in relative.parts[:-1] or stem == SPLIT or bool(re.search(rf"(^|[-_]){SPLIT}([-_]|$)", stem))


def hf_source(file: Path) -> str:
    """A shard's default source: its folder for generic shard names (`train-00000-of-00002`,
    `data-00000-of-00001`), skipping split folders; else its name without extension."""
    stem = Path(file).name.split(".")[0]
    if not _SHARD_NAME.match(stem):
        return stem
    for folder in Path(file).parents:
        if folder.parent.name == "snapshots":  # the snapshot: name the repository (datasets--ORG--NAME)
            return folder.parent.parent.name.split("--")[-1] or stem
        if folder.name not in {"", "data", SPLIT, "test", "validation"}:
            return folder.name
    return stem


def read_hf_file(file: Path, parser: RecordParser) -> Iterator[Sample]:
    """The samples of one `.arrow` (IPC stream or file) or `.parquet` shard, a batch of rows at a time."""
    import pyarrow as pa

    parser.default_source = hf_source(file)
    row = 0
    try:
        for batch in _batches(file):
            yield from _batch_samples(file, batch, row, parser)
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        parser.reject(row, f"corrupt shard: {exc}; re-save or re-download the dataset")


def _batches(file: Path) -> Iterator[Any]:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS)
        return
    reader = open_arrow(str(file))
    if hasattr(reader, "num_record_batches"):  # IPC file format
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
    else:
        yield from reader


def _batch_samples(file: Path, batch: Any, first_row: int, parser: RecordParser) -> Iterator[Sample]:
    names = batch.schema.names
    if "conversations" not in names and "messages" not in names:
        raise MixAtlasError(f"{file}: no 'conversations' (or 'messages') column; columns are: "
                            f"{', '.join(names)}")
    image_column = parquet_image_column(names)
    kinds, values = (["none"] * batch.num_rows, [None] * batch.num_rows)
    if image_column is not None:
        kinds, values = _image_cells(batch.column(image_column))
        batch = batch.drop_columns([image_column])
    for offset, record in enumerate(batch.to_pylist()):
        row = first_row + offset
        record.setdefault("id", None)
        if record["id"] in (None, ""):
            record["id"] = f"{parser.default_source}/{file.stem}:{row}"
        kind = kinds[offset]
        try:
            image = f"{file}{REF_SEP}{row}" if kind == "bytes" else parser.image_path(values[offset])
        except ValueError as exc:
            parser.reject(row, str(exc))
            continue
        sample = parser.sample(record, image, row, row)
        if sample is not None:
            yield sample


def _image_cells(column: Any) -> tuple[list[str], list[Any]]:
    """Per row: ("bytes", None) when the cell holds image bytes, ("path", path-or-None) otherwise.

    Works on the Arrow column without copying the image bytes into Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):  # several images per row: the first one
        firsts = [cell[0] if cell else None for cell in column.to_pylist()]
        has = [bool(v.get("bytes") if isinstance(v, dict) else isinstance(v, bytes) and v) for v in firsts]
        paths = [v.get("path") if isinstance(v, dict) else v if isinstance(v, str) else None for v in firsts]
        return ["bytes" if flag else "path" for flag in has], paths
    paths: list[Any] = [None] * len(column)
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        data = column.field("bytes") if "bytes" in names else None
        if "path" in names:
            paths = column.field("path").to_pylist()
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        data = column
    else:
        return ["path"] * len(column), column.to_pylist()
    has_bytes = [False] * len(column)
    if data is not None:
        has_bytes = pc.fill_null(pc.greater(pc.binary_length(data), 0), False).to_pylist()
    return ["bytes" if flag else "path" for flag in has_bytes], paths
