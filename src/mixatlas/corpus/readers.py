"""Streaming corpus readers: LLaVA JSON arrays, JSONL, WebDataset tar shards and Parquet exports.

Every reader yields `Sample` records one at a time (a JSON array is scanned element by element, Parquet
in row batches), so a corpus never has to fit in memory. Malformed records go to a `Rejects` list with a
location that finds them: the JSONL line, the JSON array element (index, byte offset and line), the tar
member, the Parquet row (and its row group); without a list the first one raises `MixAtlasError`.

A format is one entry of `READERS` (a function `(file, RecordParser) -> Iterator[Sample]`) plus its file
extensions in `EXTENSIONS`; a new format is added there.
"""

from __future__ import annotations

import bisect
import glob
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from mixatlas.corpus.hf_datasets import HF_FORMAT, hf_dataset_files, is_hf_dataset, read_hf_file
from mixatlas.corpus.images import REF_SEP, parquet_image_column
from mixatlas.corpus.records import RecordParser
from mixatlas.corpus.rejects import Rejects
from mixatlas.corpus.sample import Sample
from mixatlas.errors import MixAtlasError

# Longest suffix first: ".tar.gz" must win over ".gz".
EXTENSIONS = {
    ".tar.gz": "wds",
    ".tgz": "wds",
    ".tar": "wds",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "llava-json",
    ".parquet": "parquet",
    ".arrow": HF_FORMAT,  # Hugging Face `datasets` shards (corpus/hf_datasets.py)
}
SYNTH_MANIFEST = "synth.json"
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_BRACE = re.compile(r"\{([^{}]*)\}")
PathSpec = str | Path | Sequence[str | Path]


def read_corpus(
    path: PathSpec,
    fmt: str | None = None,
    *,
    source_field: str | None = None,
    image_root: Path | None = None,
    allow_outside_root: bool = False,
    rejects: Rejects | None = None,
) -> Iterator[Sample]:
    """Stream the samples of a corpus.

    Args:
        path: a file, a folder (its files of one format, sorted; a `mixatlas synth` output folder reads
            as its `train.jsonl`), a brace pattern of shards (`shards/part-{000..009}.tar`), a glob, or a
            list of these.
        fmt: one of `READERS`; detected from the file extensions when None.
        source_field: record field (or Parquet column) holding the sample's source; default: the
            file/shard name without extension.
        image_root: the corpus root: the folder relative image paths are resolved against and image
            paths must stay in; default: each file's folder.
        allow_outside_root: accept image paths outside the root (`../x`, absolute paths elsewhere).
        rejects: where malformed records go; None raises `MixAtlasError` at the first one. A repeated
            sample id is a reject too (ids are held in memory: about 100 bytes per sample).
    """
    files = corpus_files(path, fmt)
    fmt = fmt or _detected_format(path, files)
    read_file = READERS[fmt]
    seen_ids: set[str] = set()
    yielded = 0
    for file in files:
        parser = RecordParser(file, source_name(file), source_field=source_field, image_root=image_root,
                              allow_outside_root=allow_outside_root, rejects=rejects, seen_ids=seen_ids)
        for sample in read_file(file, parser):
            yielded += 1
            yield sample
    if yielded == 0:
        rejected = rejects.count if rejects is not None else 0
        raise MixAtlasError(
            f"{_describe(path)}: empty corpus: no valid samples in {len(files)} file(s)"
            f" ({rejected} rejected); check the files, or the format with --format"
        )


def detect_format(path: PathSpec) -> str:
    """The corpus format of `path` from its file extensions (`MixAtlasError` when unknown or mixed)."""
    return _detected_format(path, corpus_files(path, None))


def _detected_format(path: PathSpec, files: list[Path]) -> str:
    """`hf` for a Hugging Face `datasets` folder (its Parquet shards too), else from the file extensions."""
    if isinstance(path, str | Path) and is_hf_dataset(Path(path)):
        return HF_FORMAT
    return _common_format(files)


def corpus_files(path: PathSpec, fmt: str | None) -> list[Path]:
    """The files a corpus path names, in reading order (see `read_corpus` for the accepted forms)."""
    if fmt is not None and fmt not in READERS:
        raise MixAtlasError(f"unknown --format '{fmt}'; use one of: {', '.join(READERS)}")
    entries = [path] if isinstance(path, str | Path) else list(path)
    files: list[Path] = []
    for entry in entries:
        for expanded in _expand_braces(str(entry)):
            files.extend(_entry_files(Path(expanded), fmt))
    if not files:
        raise MixAtlasError(f"{_describe(path)}: no corpus files found; check the path")
    return files


def format_of(file: Path) -> str | None:
    """The corpus format of one file from its extension, or None."""
    name = file.name.lower()
    return next((fmt for ext, fmt in EXTENSIONS.items() if name.endswith(ext)), None)


def _entry_files(entry: Path, fmt: str | None) -> list[Path]:
    if entry.is_dir():
        return _folder_files(entry, fmt)
    if entry.is_file():
        return [entry]
    if any(char in str(entry) for char in "*?["):
        return [Path(p) for p in sorted(glob.glob(str(entry))) if Path(p).is_file()]
    raise MixAtlasError(f"{entry}: no such file or folder; check the corpus path")


def _folder_files(folder: Path, fmt: str | None) -> list[Path]:
    if is_hf_dataset(folder) and fmt in (None, HF_FORMAT):
        return hf_dataset_files(folder)
    if (folder / SYNTH_MANIFEST).is_file() and (folder / "train.jsonl").is_file():
        return [folder / "train.jsonl"]
    files = sorted(p for p in folder.iterdir() if p.is_file() and format_of(p) is not None)
    if fmt is not None:
        return [p for p in files if format_of(p) == fmt]
    kinds = sorted({format_of(p) for p in files} - {None})
    if len(kinds) > 1:
        raise MixAtlasError(
            f"{folder}: holds several corpus formats ({', '.join(kinds)}); choose one with --format"
        )
    return files


def _common_format(files: list[Path]) -> str:
    kinds = []
    for file in files:
        kind = format_of(file)
        if kind is None:
            raise MixAtlasError(
                f"{file}: unknown corpus format '{''.join(file.suffixes) or file.name}'; "
                f"pass --format (one of: {', '.join(READERS)})"
            )
        kinds.append(kind)
    if len(set(kinds)) > 1:
        mixed = ", ".join(sorted(set(kinds)))
        raise MixAtlasError(f"corpus mixes formats ({mixed}); choose one with --format")
    return kinds[0]


def _expand_braces(pattern: str) -> list[str]:
    """WebDataset-style brace expansion: `a-{000..002}.tar` and `{x,y}.jsonl`."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    low, sep, high = body.partition("..")
    if sep and low.isdigit() and high.isdigit():
        options = [str(i).zfill(len(low)) for i in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [expanded for option in options for expanded in _expand_braces(head + option + tail)]


def _describe(path: PathSpec) -> str:
    return str(path) if isinstance(path, str | Path) else ", ".join(map(str, path))


def source_name(file: Path) -> str:
    """A shard's default source: its file name without the corpus extension."""
    name = file.name
    ext = next((e for e in EXTENSIONS if name.lower().endswith(e)), "")
    return name[: len(name) - len(ext)] if ext else file.stem


# ----------------------------------------------------------------------------------------------------------
# JSONL


def _read_jsonl(file: Path, parser: RecordParser) -> Iterator[Sample]:
    """One record per line; a reject's location is the 1-based line number."""
    with file.open("rb") as fh:
        for line_number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError as exc:
                parser.reject(line_number, _utf8_reason(exc.object[exc.start], exc.start, "of the line"))
                continue
            except ValueError as exc:
                parser.reject(line_number, f"malformed JSON: {exc}")
                continue
            sample = parser.json_sample(record, line_number, line_number)
            if sample is not None:
                yield sample


def _utf8_reason(byte: int, position: int, unit: str) -> str:
    return f"invalid UTF-8: byte 0x{byte:02x} at byte {position} {unit}; re-save the file as UTF-8"


# ----------------------------------------------------------------------------------------------------------
# JSON array


class JsonElement(NamedTuple):
    """One top-level element of a JSON array: its 0-based index, byte offset and 1-based line in the
    file, and the decoded value or the reason it could not be decoded."""

    index: int
    byte: int
    line: int
    value: Any
    error: str | None

    @property
    def where(self) -> str:
        return f"element {self.index} (byte {self.byte}, line {self.line})"


def _read_json_array(file: Path, parser: RecordParser) -> Iterator[Sample]:
    # surrogateescape keeps invalid UTF-8 bytes as lone surrogates, so they are found per element (and
    # byte offsets stay exact); newline="" keeps "\r\n" as two characters for the same reason.
    with file.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for element in JsonArrayScanner(fh).elements():
            if element.error is not None:
                parser.reject(element.where, element.error)
                continue
            sample = parser.json_sample(element.value, element.where, element.index)
            if sample is not None:
                yield sample


class JsonArrayScanner:
    """Yields the elements of a top-level JSON array one by one, holding one chunk plus one element.

    Each element is decoded with the C JSON decoder; a malformed one is reported with its location and
    skipped up to the next top-level comma (an unbalanced one can take the rest of the file with it,
    reported once). Text must be decoded with `errors="surrogateescape"` and `newline=""`: an element
    holding bytes that are not UTF-8 is reported as such, and byte offsets are exact.
    """

    _DECODER = json.JSONDecoder()
    _WHITESPACE = re.compile(r"\s*")
    _SEPARATORS = re.compile(r"[\s,]*")
    _STRUCTURE = re.compile(r'["\[\]{},]')
    _STRING_END = re.compile(r'["\\]')
    _NOT_UTF8 = re.compile("[\udc80-\udcff]")

    def __init__(self, fh: IO[str], chunk_chars: int = 1 << 20) -> None:
        self.fh = fh
        self.chunk_chars = chunk_chars
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line number at self.counted
        self.byte = 0  # byte offset at self.counted
        self.counted = 0

    def _more(self) -> bool:
        """Append a chunk (dropping what was consumed); False at end of file."""
        if self.eof:
            return False
        self._count_to(self.pos)
        self.buf, self.counted, self.pos = self.buf[self.pos :], 0, 0
        chunk = self.fh.read(self.chunk_chars)
        self.eof = len(chunk) < self.chunk_chars
        self.buf += chunk
        return bool(chunk)

    def _count_to(self, index: int) -> tuple[int, int]:
        """(line, byte offset) of buffer position `index` (>= the last position counted)."""
        self.line += self.buf.count("\n", self.counted, index)
        self.byte += _utf8_len(self.buf[self.counted : index])
        self.counted = index
        return self.line, self.byte

    def _skip(self, pattern: re.Pattern[str]) -> bool:
        """Skip `pattern` at pos (refilling as needed); False when the input is exhausted."""
        while True:
            self.pos = pattern.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return True
            if not self._more():
                return False

    def _element(self, index: int, value: Any, error: str | None) -> JsonElement:
        line, byte = self._count_to(self.pos)
        return JsonElement(index, byte, line, value, error)

    def elements(self) -> Iterator[JsonElement]:
        """Every element in order, decoded or with the reason it is not."""
        if self._skip(self._WHITESPACE) and self.buf.startswith("\ufeff", self.pos):
            self.pos += 1  # a UTF-8 byte-order mark, as Windows tools write it
        if not self._skip(self._WHITESPACE) or self.buf[self.pos] != "[":
            yield self._element(0, None, "malformed JSON: a JSON-array corpus must start with '['")
            return
        self.pos += 1
        index = 0
        while self._skip(self._SEPARATORS):
            if self.buf[self.pos] == "]":
                return
            try:
                value, end = self._DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                end = self._element_end()
                if end is None and self._more():
                    continue  # the element is only incomplete: decode again with more text
                yield self._element(index, None, f"malformed JSON: {exc.msg}")
                if end is None:
                    return
            else:
                if end == len(self.buf) and self._more():
                    continue  # a scalar cut at the chunk edge: decode again with more text
                yield self._decoded(index, value, end)
            index += 1
            self.pos = end
        yield self._element(index, None, "malformed JSON: the array is not closed with ']'")

    def _decoded(self, index: int, value: Any, end: int) -> JsonElement:
        """The element at pos decoded as `value`, or its UTF-8 error when its text holds undecodable bytes."""
        bad = self._NOT_UTF8.search(self.buf, self.pos, end)
        if bad is None:
            return self._element(index, value, None)
        element = self._element(index, None, None)
        position = element.byte + _utf8_len(self.buf[self.pos : bad.start()])
        reason = _utf8_reason(ord(bad.group()) - 0xDC00, position, "of the file")
        return element._replace(error=reason)

    def _element_end(self) -> int | None:
        """Index just past the element starting at pos, by bracket depth (strings skipped), or None."""
        depth, index = 0, self.pos
        while True:
            match = self._STRUCTURE.search(self.buf, index)
            if match is None:
                return None
            char, index = match.group(), match.end()
            if char == '"':
                while True:
                    close = self._STRING_END.search(self.buf, index)
                    if close is None:
                        return None
                    index = close.end() + (1 if close.group() == "\\" else 0)
                    if close.group() == '"':
                        break
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth <= 0:
                    return index if depth == 0 else match.start()
            elif depth == 0:  # a top-level comma ends a scalar element
                return match.start()


def _utf8_len(text: str) -> int:
    """Bytes `text` took in the file (undecodable bytes count one each, as surrogateescape kept them)."""
    return len(text.encode("utf-8", "surrogateescape"))


# ----------------------------------------------------------------------------------------------------------
# WebDataset


def _wds_split(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the base name; extension = the rest."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


@dataclass
class _WdsGroup:
    """The members of one sample key: extension -> (member index, member name, JSON bytes or None)."""

    key: str | None
    members: dict[str, tuple[int, str, bytes | None]] = field(default_factory=dict)
    problem: tuple[str, str] | None = None  # (where, reason) of the first problem found

    def fail(self, where: str, reason: str) -> None:
        if self.problem is None:
            self.problem = (where, reason)

    def finish(self, file: Path, parser: RecordParser) -> Iterator[Sample]:
        """The group's sample, or its reject."""
        if self.key is None:
            return
        if self.problem is not None:
            parser.reject(*self.problem)
            return
        if "json" not in self.members:
            names = ", ".join(name for _, name, _ in self.members.values())
            parser.reject(f"member {names}", f"no .json member: key {self.key} has only {names}")
            return
        _, json_name, payload = self.members["json"]
        where = f"member {json_name}"
        try:
            record = json.loads(payload or b"")
        except UnicodeDecodeError as exc:
            parser.reject(where, _utf8_reason(exc.object[exc.start], exc.start, "of the member"))
            return
        except ValueError as exc:
            parser.reject(where, f"malformed JSON: {exc}")
            return
        if not isinstance(record, dict):
            parser.reject(where, f"not an object: the record is a JSON {type(record).__name__}")
            return
        image_ext = next((ext for ext in WDS_IMAGE_EXTENSIONS if ext in self.members), None)
        image = None
        if image_ext is not None:
            image_name = self.members[image_ext][1]
            image, where = f"{file}{REF_SEP}{image_name}", f"member {image_name}"
        record.setdefault("id", self.key)
        offset = min(member_index for member_index, _, _ in self.members.values())
        sample = parser.sample(record, image, where, offset)
        if sample is not None:
            yield sample


def _read_wds(file: Path, parser: RecordParser) -> Iterator[Sample]:
    """Members grouped by key; a reject's location is the member name. A shard cut short keeps every
    sample whose members were read whole; duplicate member names reject the later sample."""
    try:
        archive = tarfile.open(file, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        parser.reject("the whole file", f"corrupt tar: not a readable tar archive ({exc}); re-create it")
        return
    # In a plain (uncompressed) tar a member whose data runs past the end of the file is known cut.
    size = os.path.getsize(file) if isinstance(archive.fileobj, io.BufferedReader) else None
    with archive:
        group = _WdsGroup(None)
        first_index: dict[str, int] = {}
        members = iter(archive)
        index, cut, data_end = -1, False, 0
        while True:
            try:
                info = next(members)
            except StopIteration:
                if size is not None and not cut and _nonzero_after(file, data_end):
                    # a plain tar cut inside a header block ends the iteration like a clean end does
                    parser.reject(f"member {index + 1}", "truncated tar: the shard ends inside the header of "
                                                         "the member after the last one read; the samples "
                                                         "before it were kept")
                break
            except (tarfile.TarError, OSError, EOFError):
                if not cut:  # a member cut short is reported once, with its name
                    parser.reject(f"member {index + 1}", "truncated tar: the shard ends inside the header of "
                                                         "the member after the last one read; the samples "
                                                         "before it were kept")
                break
            index += 1
            data_end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if not info.isfile():
                continue
            key, ext = _wds_split(info.name)
            if key != group.key:
                yield from group.finish(file, parser)
                group = _WdsGroup(key)
            where = f"member {info.name}"
            if info.name in first_index:
                group.fail(where, f"duplicate tar member: {info.name} is member {first_index[info.name]} "
                                  f"and member {index}; keep one copy in the shard")
            first_index.setdefault(info.name, index)
            if size is not None and info.offset_data + info.size > size:
                cut = True
                group.fail(where, f"truncated tar: member {info.name} is cut off (the shard ends inside "
                                  "it); the samples before it were kept")
                continue
            payload = None
            if ext == "json":
                try:
                    payload = archive.extractfile(info).read()  # type: ignore[union-attr]
                except (tarfile.TarError, OSError, EOFError):
                    cut = True
                    group.fail(where, f"truncated tar: member {info.name} is cut off (the shard ends "
                                      "inside it); the samples before it were kept")
                    continue
            group.members[ext] = (index, info.name, payload)
        yield from group.finish(file, parser)


def _nonzero_after(file: Path, offset: int) -> bool:
    """Whether `file` holds a non-zero byte at or after `offset` (a tar's end is zero blocks, or nothing)."""
    with open(file, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(1 << 16):
            if chunk.strip(b"\0"):
                return True
    return False


# ----------------------------------------------------------------------------------------------------------
# Parquet


def _read_parquet(file: Path, parser: RecordParser) -> Iterator[Sample]:
    """Rows in batches; a reject's location is the file row with its row group and index in that group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as exc:
        parser.reject("the whole file", f"corrupt parquet: not a readable Parquet file ({exc})")
        return
    names = table.schema_arrow.names
    if "conversations" not in names and "messages" not in names:
        raise MixAtlasError(
            f"{file}: no 'conversations' (or 'messages') column; columns are: {', '.join(names)}"
        )
    image_column = parquet_image_column(names)
    starts = [0]
    for group in range(table.metadata.num_row_groups):
        starts.append(starts[-1] + table.metadata.row_group(group).num_rows)
    row = 0
    try:
        for batch in table.iter_batches(batch_size=256):
            columns = batch.to_pydict()
            for i in range(batch.num_rows):
                group = bisect.bisect_right(starts, row) - 1
                where = f"row {row} (row group {group}, index {row - starts[group]})"
                record = {name: columns[name][i] for name in names}
                try:
                    image = _parquet_image_ref(file, row, record.pop(image_column, None), parser)
                except ValueError as exc:
                    parser.reject(where, str(exc))
                else:
                    sample = parser.sample(record, image, where, row)
                    if sample is not None:
                        yield sample
                row += 1
    except (pa.ArrowException, OSError) as exc:
        parser.reject(f"row {row}", f"corrupt parquet: the file cannot be read from this row on ({exc})")


def _parquet_image_ref(file: Path, row: int, cell: Any, parser: RecordParser) -> str | None:
    """`PARQUET::ROW` when the cell holds bytes; a resolved path when it holds only a path."""
    if isinstance(cell, dict):  # HF `Image` feature struct
        if cell.get("bytes"):
            return f"{file}{REF_SEP}{row}"
        return parser.image_path(cell.get("path"))
    if isinstance(cell, bytes | bytearray):
        return f"{file}{REF_SEP}{row}" if cell else None
    return parser.image_path(cell)


READERS: dict[str, Callable[[Path, RecordParser], Iterator[Sample]]] = {
    "llava-json": _read_json_array,
    "jsonl": _read_jsonl,
    "wds": _read_wds,
    "parquet": _read_parquet,
    HF_FORMAT: read_hf_file,
}
