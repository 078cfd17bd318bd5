"""Streaming corpus readers: LLaVA JSON arrays, JSONL, WebDataset tar shards and Parquet exports.

Every reader yields `Sample` records one at a time (a JSON array is scanned element by element, Parquet
in row batches), so a corpus never has to fit in memory. Malformed records go to a `Rejects` list with
their file and line / row / member key, or raise `MixAtlasError` when no list is given.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from mixatlas.corpus.images import REF_SEP, parquet_image_column
from mixatlas.corpus.rejects import Rejects
from mixatlas.corpus.sample import GPT, HUMAN, IMAGE_PLACEHOLDER, Sample
from mixatlas.errors import MixAtlasError

FORMATS = ("llava-json", "jsonl", "wds", "parquet")
# Longest suffix first: ".tar.gz" must win over ".gz".
EXTENSIONS = {
    ".tar.gz": "wds",
    ".tgz": "wds",
    ".tar": "wds",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "llava-json",
    ".parquet": "parquet",
}
SYNTH_MANIFEST = "synth.json"
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_ROLE_TO_SPEAKER = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT, "model": GPT, "bot": GPT}
_RECORD_FIELDS = {"id", "image", "conversations", "messages", "task", "meta"}
_BRACE = re.compile(r"\{([^{}]*)\}")
PathSpec = str | Path | Sequence[str | Path]


def read_corpus(
    path: PathSpec,
    fmt: str | None = None,
    *,
    source_field: str | None = None,
    image_root: Path | None = None,
    rejects: Rejects | None = None,
) -> Iterator[Sample]:
    """Stream the samples of a corpus.

    Args:
        path: a file, a folder (its files of one format, sorted; a `mixatlas synth` output folder reads
            as its `train.jsonl`), a brace pattern of shards (`shards/part-{000..009}.tar`), a glob, or a
            list of these.
        fmt: one of `FORMATS`; detected from the file extensions when None.
        source_field: record field (or Parquet column) holding the sample's source; default: the
            file/shard name without extension.
        image_root: folder that relative image paths are resolved against; default: each file's folder.
        rejects: where malformed records go; None raises `MixAtlasError` at the first one.
    """
    files = corpus_files(path, fmt)
    fmt = fmt or _common_format(files)
    read_file = _READERS[fmt]
    yielded = 0
    for file in files:
        parser = _RecordParser(file, source_field, image_root, rejects)
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
    return _common_format(corpus_files(path, None))


def corpus_files(path: PathSpec, fmt: str | None) -> list[Path]:
    """The files a corpus path names, in reading order (see `read_corpus` for the accepted forms)."""
    if fmt is not None and fmt not in FORMATS:
        raise MixAtlasError(f"unknown --format '{fmt}'; use one of: {', '.join(FORMATS)}")
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
                f"pass --format (one of: {', '.join(FORMATS)})"
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


def normalize_conversations(value: Any) -> list[dict]:
    """LLaVA turns from `[{"from", "value"}]`, `[{"role", "content"}]` (content may be a list of
    parts) or a JSON string of either; `ValueError` naming what is wrong."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of turns")
    turns = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {number} is not an object")
        role = str(turn.get("from", turn.get("role", ""))).lower()
        if role == "system":
            continue
        speaker = _ROLE_TO_SPEAKER.get(role)
        if speaker is None:
            raise ValueError(f"turn {number} has speaker '{role}', expected human/gpt (or user/assistant)")
        text = turn.get("value", turn.get("content"))
        if isinstance(text, list):  # OpenAI-style parts
            text = "".join(
                IMAGE_PLACEHOLDER if part.get("type") == "image" else str(part.get("text", ""))
                for part in text
                if isinstance(part, dict)
            )
        if not isinstance(text, str):
            raise ValueError(f"turn {number} has no text value")
        turns.append({"from": speaker, "value": text})
    speakers = {turn["from"] for turn in turns}
    if speakers != {HUMAN, GPT}:
        raise ValueError("needs at least one human and one gpt turn")
    return turns


class _RecordParser:
    """Turns one raw record of one file into a `Sample`, or a reject."""

    def __init__(
        self, file: Path, source_field: str | None, image_root: Path | None, rejects: Rejects | None
    ) -> None:
        self.file = file
        self.source_field = source_field
        self.image_root = os.path.abspath(image_root if image_root is not None else file.parent)
        self.rejects = rejects
        self.default_source = source_name(file)

    def reject(self, where: int | str, reason: str) -> None:
        if self.rejects is None:
            raise MixAtlasError(f"{self.file}:{where}: {reason}")
        self.rejects.add(self.file, where, reason)

    def image_path(self, value: Any) -> str | None:
        """Absolute path string for a record's `image` value (relative paths against the image root)."""
        if isinstance(value, list) and len(value) <= 1:
            value = value[0] if value else None
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"image must be a path string, got {type(value).__name__}")
        # String operations only: a `Path.resolve()` per record costs more than the rest of the parse.
        return os.path.normpath(os.path.join(self.image_root, value))

    def json_sample(self, record: Any, where: int | str, offset: int) -> Sample | None:
        """A sample from a JSON record whose `image` is a file path."""
        if not isinstance(record, dict):
            self.reject(where, f"not an object: the record is a {type(record).__name__}")
            return None
        try:
            image = self.image_path(record.get("image"))
        except ValueError as exc:
            self.reject(where, f"bad image field: {exc}")
            return None
        return self.sample(record, image, where, offset)

    def sample(self, record: dict, image: str | None, where: int | str, offset: int) -> Sample | None:
        """A sample from a record whose image ref is already resolved."""
        try:
            conversations = normalize_conversations(record.get("conversations", record.get("messages")))
        except ValueError as exc:
            self.reject(where, f"bad conversations: {exc}")
            return None
        meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
        for key, value in record.items():
            if key not in _RECORD_FIELDS:
                meta.setdefault(key, value)
        source = self.default_source
        if self.source_field is not None and record.get(self.source_field) not in (None, ""):
            source = str(record[self.source_field])
        task = record.get("task")
        return Sample(
            id=str(record.get("id") or f"{self.default_source}:{offset}"),
            source=source,
            image=image,
            conversations=conversations,
            task=str(task) if task not in (None, "") else None,
            meta=meta,
            shard=str(self.file),
            offset=offset,
        )


def _read_jsonl(file: Path, parser: _RecordParser) -> Iterator[Sample]:
    with file.open("rb") as fh:
        for line_number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                parser.reject(line_number, f"malformed JSON: {exc}")
                continue
            sample = parser.json_sample(record, line_number, line_number)
            if sample is not None:
                yield sample


def _read_json_array(file: Path, parser: _RecordParser) -> Iterator[Sample]:
    with file.open("r", encoding="utf-8", errors="replace") as fh:
        for line_number, record, error in JsonArrayScanner(fh).elements():
            if error is not None:
                parser.reject(line_number, error)
                continue
            sample = parser.json_sample(record, line_number, line_number)
            if sample is not None:
                yield sample


class JsonArrayScanner:
    """Yields the elements of a top-level JSON array one by one, holding one chunk plus one element.

    Each element is decoded with the C JSON decoder; a malformed one is reported with its 1-based start
    line and skipped up to the next top-level comma (an unbalanced one can take the rest of the file with
    it, reported once).
    """

    _DECODER = json.JSONDecoder()
    _WHITESPACE = re.compile(r"\s*")
    _SEPARATORS = re.compile(r"[\s,]*")
    _STRUCTURE = re.compile(r'["\[\]{},]')
    _STRING_END = re.compile(r'["\\]')

    def __init__(self, fh: IO[str], chunk_chars: int = 1 << 20) -> None:
        self.fh = fh
        self.chunk_chars = chunk_chars
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line number at self.counted
        self.counted = 0

    def _more(self) -> bool:
        """Append a chunk (dropping what was consumed); False at end of file."""
        if self.eof:
            return False
        self._line_at(self.pos)
        self.buf, self.counted, self.pos = self.buf[self.pos :], 0, 0
        chunk = self.fh.read(self.chunk_chars)
        self.eof = len(chunk) < self.chunk_chars
        self.buf += chunk
        return bool(chunk)

    def _line_at(self, index: int) -> int:
        self.line += self.buf.count("\n", self.counted, index)
        self.counted = index
        return self.line

    def _skip(self, pattern: re.Pattern[str]) -> bool:
        """Skip `pattern` at pos (refilling as needed); False when the input is exhausted."""
        while True:
            self.pos = pattern.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return True
            if not self._more():
                return False

    def elements(self) -> Iterator[tuple[int, Any, str | None]]:
        """(line, value, None) per element, or (line, None, reason) for a malformed one."""
        if not self._skip(self._WHITESPACE) or self.buf[self.pos] != "[":
            yield self._line_at(self.pos), None, "malformed JSON: a JSON-array corpus must start with '['"
            return
        self.pos += 1
        while self._skip(self._SEPARATORS):
            if self.buf[self.pos] == "]":
                return
            start_line = self._line_at(self.pos)
            try:
                value, end = self._DECODER.raw_decode(self.buf, self.pos)
                if end == len(self.buf) and self._more():
                    continue  # a scalar cut at the chunk edge: decode again with more text
                self.pos = end
                yield start_line, value, None
            except json.JSONDecodeError as exc:
                end = self._element_end()
                if end is None and self._more():
                    continue  # the element is only incomplete: decode again with more text
                yield start_line, None, f"malformed JSON: {exc.msg}"
                if end is None:
                    return
                self.pos = end
        yield self._line_at(self.pos), None, "malformed JSON: the array is not closed with ']'"

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


def _wds_split(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the base name; extension = the rest."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


_WdsGroup = dict[str, tuple[int, tarfile.TarInfo, bytes | None]]  # extension -> (index, member, json)


def _read_wds(file: Path, parser: _RecordParser) -> Iterator[Sample]:
    try:
        archive = tarfile.open(file, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        parser.reject(0, f"corrupt tar: {exc}")
        return
    with archive:
        key: str | None = None
        group: _WdsGroup = {}
        index = 0
        try:
            for index, info in enumerate(archive):
                if not info.isfile():
                    continue
                member_key, ext = _wds_split(info.name)
                if member_key != key:
                    if group:
                        yield from _wds_sample(file, key, group, parser)
                    key, group = member_key, {}
                handle = archive.extractfile(info) if ext == "json" else None
                group[ext] = (index, info, handle.read() if handle is not None else None)
        except (tarfile.TarError, OSError, EOFError) as exc:
            parser.reject(f"member {index}", f"corrupt tar: {exc}")
        if group:
            yield from _wds_sample(file, key, group, parser)


def _wds_sample(file: Path, key: str | None, group: _WdsGroup, parser: _RecordParser) -> Iterator[Sample]:
    where = str(key)
    if "json" not in group:
        parser.reject(where, f"no .json member: key has only {', '.join(sorted(group))}")
        return
    payload = group["json"][2]
    try:
        record = json.loads(payload or b"")
    except ValueError as exc:
        parser.reject(where, f"malformed JSON: {exc}")
        return
    if not isinstance(record, dict):
        parser.reject(where, f"not an object: the record is a {type(record).__name__}")
        return
    image_ext = next((ext for ext in WDS_IMAGE_EXTENSIONS if ext in group), None)
    image = f"{file}{REF_SEP}{group[image_ext][1].name}" if image_ext else None
    record.setdefault("id", key)
    offset = min(member_index for member_index, _, _ in group.values())
    sample = parser.sample(record, image, where, offset)
    if sample is not None:
        yield sample


def _read_parquet(file: Path, parser: _RecordParser) -> Iterator[Sample]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as exc:
        parser.reject(0, f"corrupt parquet: {exc}")
        return
    names = table.schema_arrow.names
    if "conversations" not in names and "messages" not in names:
        raise MixAtlasError(
            f"{file}: no 'conversations' (or 'messages') column; columns are: {', '.join(names)}"
        )
    image_column = parquet_image_column(names)
    row = 0
    try:
        for batch in table.iter_batches(batch_size=256):
            columns = batch.to_pydict()
            for i in range(batch.num_rows):
                record = {name: columns[name][i] for name in names}
                try:
                    image = _parquet_image_ref(file, row, record.pop(image_column, None), parser)
                except ValueError as exc:
                    parser.reject(row, f"bad image field: {exc}")
                else:
                    sample = parser.sample(record, image, row, row)
                    if sample is not None:
                        yield sample
                row += 1
    except (pa.ArrowException, OSError) as exc:
        parser.reject(row, f"corrupt parquet: {exc}")


def _parquet_image_ref(file: Path, row: int, cell: Any, parser: _RecordParser) -> str | None:
    """`PARQUET::ROW` when the cell holds bytes; a resolved path when it holds only a path."""
    if isinstance(cell, dict):  # HF `Image` feature struct
        if cell.get("bytes"):
            return f"{file}{REF_SEP}{row}"
        return parser.image_path(cell.get("path"))
    if isinstance(cell, bytes | bytearray):
        return f"{file}{REF_SEP}{row}" if cell else None
    return parser.image_path(cell)


_READERS: dict[str, Callable[[Path, _RecordParser], Iterator[Sample]]] = {
    "llava-json": _read_json_array,
    "jsonl": _read_jsonl,
    "wds": _read_wds,
    "parquet": _read_parquet,
}
