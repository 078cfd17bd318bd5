"""Image refs: resolve a `Sample.image` string to its bytes or a decoded RGB image.

A ref is an absolute file path, `"TAR_PATH::MEMBER"` (a WebDataset shard member) or
`"PARQUET_PATH::ROW"` (image bytes stored in a Parquet row). Open tar indexes and decoded Parquet row
groups are cached per process, so reading a shard's images in order stays linear.
"""

from __future__ import annotations

import bisect
import io
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from mixatlas.errors import MixAtlasError

if TYPE_CHECKING:
    from PIL import Image

    from mixatlas.corpus.rejects import Rejects
    from mixatlas.corpus.sample import Sample

REF_SEP = "::"
# Column names an HF `datasets` export (or a hand-made table) uses for the image, in order of preference.
PARQUET_IMAGE_COLUMNS = ("image", "images", "img", "image_bytes", "jpg", "png", "image_path")
_FIX = "fix the path or the image root (--image-root), or drop the record"


def parquet_image_column(names: list[str]) -> str | None:
    """The image column among a Parquet schema's column `names`, or None."""
    return next((name for name in PARQUET_IMAGE_COLUMNS if name in names), None)


def split_ref(ref: str) -> tuple[str, str | None]:
    """(container path, member) for tar/Parquet refs; (path, None) for plain files."""
    if REF_SEP in ref:
        container, member = ref.rsplit(REF_SEP, 1)
        return container, member
    return ref, None


def image_bytes(ref: str) -> bytes:
    """The encoded bytes behind an image ref; `MixAtlasError` naming the ref when it is missing."""
    container, member = split_ref(ref)
    try:
        if member is None:
            return Path(container).read_bytes()
        if container.endswith(".parquet"):
            return _parquet_image_bytes(container, int(member))
        return _tar_member_bytes(container, member)
    except (OSError, KeyError, IndexError, ValueError, tarfile.TarError) as exc:
        raise MixAtlasError(f"{ref}: missing image ({type(exc).__name__}: {exc}); {_FIX}") from exc


def open_image(ref: str) -> Image.Image:
    """Decode an image ref fully into an RGB `PIL.Image` (truncated or corrupt files raise
    `MixAtlasError` here, not later in a worker)."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MixAtlasError(f"{ref}: corrupt image ({exc}); {_FIX}") from exc


def open_sample_image(sample: Sample, rejects: Rejects) -> Image.Image | None:
    """The sample's decoded image, or None after counting it into `rejects` as `shard:offset`
    (strict rejects raise instead). Text-only samples (image None) are rejected as "no image"."""
    if sample.image is None:
        rejects.add(sample.shard, sample.offset, f"no image: record {sample.id} has no image")
        return None
    try:
        return open_image(sample.image)
    except MixAtlasError as exc:
        kind = "corrupt image" if ": corrupt image" in str(exc) else "missing image"
        rejects.add(sample.shard, sample.offset, f"{kind}: {exc}")
        return None


@lru_cache(maxsize=8)
def _tar_index(path: str) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    archive = tarfile.open(path, "r:*")  # noqa: SIM115 - kept open in this per-process cache
    return archive, {info.name: info for info in archive.getmembers() if info.isfile()}


def _tar_member_bytes(path: str, member: str) -> bytes:
    archive, index = _tar_index(path)
    handle = archive.extractfile(index[member])
    if handle is None:
        raise KeyError(member)
    return handle.read()


@lru_cache(maxsize=4)
def _parquet_row_group(path: str, group: int) -> list:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    column = parquet_image_column(parquet.schema_arrow.names)
    if column is None:
        raise KeyError(f"no image column (one of {', '.join(PARQUET_IMAGE_COLUMNS)})")
    return parquet.read_row_group(group, columns=[column]).column(0).to_pylist()


@lru_cache(maxsize=32)
def _parquet_group_starts(path: str) -> list[int]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    starts, total = [], 0
    for group in range(meta.num_row_groups):
        starts.append(total)
        total += meta.row_group(group).num_rows
    return [*starts, total]


def _parquet_image_bytes(path: str, row: int) -> bytes:
    starts = _parquet_group_starts(path)
    if not 0 <= row < starts[-1]:
        raise IndexError(f"row {row} outside 0..{starts[-1] - 1}")
    group = bisect.bisect_right(starts, row) - 1
    value = _parquet_row_group(path, group)[row - starts[group]]
    if isinstance(value, dict):  # HF `Image` feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            image_path = Path(value["path"])
            return (image_path if image_path.is_absolute() else Path(path).parent / image_path).read_bytes()
        raise KeyError("image cell is empty")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise KeyError(f"image cell holds {type(value).__name__}, expected bytes")
