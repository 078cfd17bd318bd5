"""Image refs: resolve a `Sample.image` string to its bytes or a decoded RGB image.

A ref is an absolute file path, `"TAR_PATH::MEMBER"` (a WebDataset shard member), `"ARROW_PATH::ROW"` (a
Hugging Face `datasets` Arrow shard row) or
`"PARQUET_PATH::ROW"` (image bytes stored in a Parquet row). Open tar indexes and decoded Parquet row
groups are cached per process, so reading a shard's images in order stays linear.

Decoding is bounded and quiet: the pixel count is checked from the header before any pixel is decoded
(`max_pixels`), Pillow's warnings are caught (a decompression-bomb warning is a reject), and every image
mode becomes RGB the way it looks (transparency on white, 16-bit scaled, CMYK converted). Every failure is
an `ImageRejected` whose message is the reject reason: `"<kind>: <ref>: <cause>; <fix>"`.
"""

from __future__ import annotations

import bisect
import io
import tarfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixatlas.errors import MixAtlasError

if TYPE_CHECKING:
    from PIL import Image

    from mixatlas.corpus.rejects import Rejects
    from mixatlas.corpus.sample import Sample

REF_SEP = "::"
# Column names an HF `datasets` export (or a hand-made table) uses for the image, in order of preference.
PARQUET_IMAGE_COLUMNS = ("image", "images", "img", "image_bytes", "jpg", "png", "image_path")
DEFAULT_MAX_PIXELS = 50_000_000
_DROP = "or drop the record"
# Modes whose alpha channel is composited on white; the rest convert to RGB directly.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageRejected(MixAtlasError):
    """An image that cannot be used; `str(exc)` is the reject reason, `kind` its first part."""

    def __init__(self, kind: str, ref: str, cause: str, fix: str) -> None:
        super().__init__(f"{kind}: {ref}: {cause}; {fix}")
        self.kind = kind


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
    """The encoded bytes behind an image ref; `ImageRejected` ("missing image", "truncated image",
    "duplicate tar member") naming the ref when they cannot be read."""
    container, member = split_ref(ref)
    try:
        if member is None:
            return Path(container).read_bytes()
        if container.endswith(".parquet"):
            return _parquet_image_bytes(container, int(member))
        if container.endswith(".arrow"):
            return _arrow_image_bytes(container, int(member))
        return _tar_member_bytes(container, member)
    except ImageRejected:
        raise
    except FileNotFoundError:
        raise ImageRejected("missing image", ref, "no such file",
                            f"fix the path in the record (relative paths start at the corpus file's folder) "
                            f"{_DROP}") from None
    except (tarfile.ReadError, EOFError) as exc:
        raise ImageRejected("truncated image", ref, f"the shard ends inside this member ({exc})",
                            f"re-create the shard {_DROP}") from None
    except (OSError, KeyError, IndexError, ValueError, tarfile.TarError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip("'\"")
        raise ImageRejected("missing image", ref, f"cannot be read ({cause})",
                            f"fix the image reference {_DROP}") from None


def open_image(ref: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image ref fully into an RGB `PIL.Image`, or raise `ImageRejected`.

    Kinds: missing image, empty image, not an image, image too large (more than `max_pixels` pixels,
    checked from the header before decoding), truncated image, unsupported image (an image file
    Pillow cannot open, or a mode it cannot turn into RGB). No Pillow warning escapes.
    """
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(ref)
    if not data:
        raise ImageRejected("empty image", ref, "the file is empty (0 bytes)", f"replace the file {_DROP}")
    # Warnings are recorded, never printed; Pillow's bomb warning (its own pixel limit) is a reject.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected("image too large", ref, f"{width} x {height} = {width * height:,} "
                                        f"pixels is over the limit of {max_pixels:,}",
                                        f"raise --max-pixels if it is genuine, {_DROP}")
                bombs = [w.message for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
                if bombs:
                    raise Image.DecompressionBombError(str(bombs[0]))
                img.load()
                return to_rgb(img)
        except UnidentifiedImageError:
            kind, cause = _unidentified(data)
            fix = f"convert it to an 8-bit RGB PNG or JPEG {_DROP}" if kind == "unsupported image" else \
                f"replace the file {_DROP}"
            raise ImageRejected(kind, ref, cause, fix) from None
        except Image.DecompressionBombError as exc:
            raise ImageRejected("image too large", ref, f"over Pillow's own pixel limit ({exc})",
                                f"shrink the image {_DROP}") from None
        except (OSError, SyntaxError, EOFError) as exc:
            truncated = isinstance(exc, EOFError) or "truncat" in str(exc).lower()
            kind = "truncated image" if truncated else "corrupt image"
            raise ImageRejected(kind, ref, f"the data cannot be decoded ({exc})",
                                f"re-encode or replace the file {_DROP}") from None
        except ValueError as exc:
            raise ImageRejected("unsupported image", ref, f"cannot be converted to RGB ({exc})",
                                f"convert it to an 8-bit RGB PNG or JPEG {_DROP}") from None


def _unidentified(data: bytes) -> tuple[str, str]:
    """(kind, cause) for bytes Pillow cannot open, in plain words: an image format it cannot decode
    ("unsupported image"), text, or bytes with no image signature (their first bytes in hex)."""
    fmt = next((name for name, test in _SIGNATURES if test(data)), None)
    if fmt is not None:
        return "unsupported image", (f"Pillow cannot open this {fmt} file (its header is damaged, or it uses "
                                     "a mode, bit depth or compression Pillow does not support)")
    head = data[:64]
    text = head.decode("utf-8", errors="ignore")
    if text and len(text.encode()) >= len(head) - 3 and all(c.isprintable() or c in "\t\r\n" for c in text):
        words = " ".join(text.split())
        words = words if len(words) <= 40 else words[:39] + "…"
        return "not an image", f'the file starts with text ("{words}"), not an image signature'
    return "not an image", (f"no image signature: its {len(data):,} bytes begin {data[:8].hex(' ')} "
                            "(hex)")


# Image formats by their first bytes, to tell an undecodable image from a file that is no image at all.
_SIGNATURES = (
    ("PNG", lambda d: d.startswith(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", lambda d: d.startswith(b"\xff\xd8\xff")),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*")),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    ("JPEG 2000", lambda d: d.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"))),
    ("JPEG XL", lambda d: d.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL "))),
    ("HEIF/AVIF", lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis")),
    ("PSD", lambda d: d.startswith(b"8BPS")),
    ("BMP", lambda d: d.startswith(b"BM") and b"\x00" in d[2:14]),  # its reserved header bytes are 0
)


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of a loaded image as it looks: palette transparency and alpha composited on white,
    16-bit grey scaled to 8 bits, CMYK / YCbCr / 1-bit converted."""
    import numpy as np
    from PIL import Image

    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in _SIXTEEN_BIT_MODES:  # Pillow's own conversion clips 16-bit values at 255 (white)
        values = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def open_sample_image(sample: Sample, rejects: Rejects, max_pixels: int = DEFAULT_MAX_PIXELS
                      ) -> Image.Image | None:
    """The sample's decoded image, or None after counting it into `rejects` at the sample's location
    (strict rejects raise instead). Text-only samples (image None) are rejected as "no image"."""
    if sample.image is None:
        rejects.add(sample.shard, sample.where, f"no image: record {sample.id} has no image; MixAtlas "
                                                "clusters image samples")
        return None
    try:
        return open_image(sample.image, max_pixels)
    except ImageRejected as exc:
        rejects.add(sample.shard, sample.where, str(exc))
        return None


@lru_cache(maxsize=8)
def _tar_index(path: str) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo | None]]:
    """The open shard and its regular members by name (None for a name that appears twice). A shard
    cut short is indexed up to the cut, so the samples before it stay readable."""
    archive = tarfile.open(path, "r:*")  # noqa: SIM115 - kept open in this per-process cache
    index: dict[str, tarfile.TarInfo | None] = {}
    try:
        for info in archive:
            if info.isfile():
                index[info.name] = None if info.name in index else info
    except (tarfile.TarError, OSError, EOFError):
        pass  # truncated: keep the members read before the cut
    return archive, index


def _tar_member_bytes(path: str, member: str) -> bytes:
    archive, index = _tar_index(path)
    info = index[member]
    if info is None:
        raise ImageRejected("duplicate tar member", f"{path}{REF_SEP}{member}",
                            "the shard holds two members of this name, so which image is meant is unknown",
                            "keep one copy in the shard")
    handle = archive.extractfile(info)
    if handle is None:
        raise KeyError(member)
    data = handle.read()
    if len(data) < info.size:
        raise tarfile.ReadError(f"{len(data)} of {info.size} bytes")
    return data


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
    return _cell_bytes(_parquet_row_group(path, group)[row - starts[group]], path)


def _cell_bytes(value: Any, path: str) -> bytes:
    """The image bytes of a table cell: HF `Image` struct `{bytes, path}` (a list of them: the first), or
    raw bytes; a relative path is read from the table file's folder."""
    if isinstance(value, list):
        value = value[0] if value else None
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


def open_arrow(path: str) -> Any:
    """A reader over a memory-mapped Arrow shard: an IPC stream (what Hugging Face `datasets` writes) or an
    IPC file."""
    import pyarrow as pa

    source = pa.memory_map(path)
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source)


@lru_cache(maxsize=4)
def _arrow_image_column(path: str) -> Any:
    """The image column of an Arrow shard, memory-mapped (the image bytes are not copied)."""
    table = open_arrow(path).read_all()
    column = parquet_image_column(table.schema.names)
    if column is None:
        raise KeyError(f"no image column (one of {', '.join(PARQUET_IMAGE_COLUMNS)})")
    return table.column(column)


def _arrow_image_bytes(path: str, row: int) -> bytes:
    column = _arrow_image_column(path)
    if not 0 <= row < len(column):
        raise IndexError(f"row {row} outside 0..{len(column) - 1}")
    return _cell_bytes(column[row].as_py(), path)
