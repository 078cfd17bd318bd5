"""Corpus readers: the behaviours a mutation run of readers.py / records.py found untested.

Each test reads tiny files through the public API (`read_corpus`, `detect_format`, `JsonArrayScanner`) and
asserts the exact samples and reject locations/reasons a user sees.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixatlas.corpus.readers import JsonArrayScanner, detect_format, read_corpus
from mixatlas.corpus.records import RecordParser
from mixatlas.corpus.rejects import Rejects
from mixatlas.errors import MixAtlasError

# A scanner or reader that loops forever is a failure, not a hang.
pytestmark = pytest.mark.timeout(20)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(56)  # never decoded here: readers only hand out refs


def conv(question: str = "q", answer: str = "a") -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def rec(i: int, **extra) -> dict:
    return {"id": f"r{i}", "conversations": conv(f"q{i}", f"a{i}"), **extra}


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), "utf-8")
    return path


def read(path, **kwargs) -> tuple[list, list[tuple]]:
    """(samples, [(where, reason)] from the rejects file) of a corpus; an empty corpus reads as no samples."""
    rejects_file = Path(tempfile.mkdtemp()) / "rejects.jsonl"
    with Rejects(rejects_file) as rejects:
        try:
            samples = list(read_corpus(path, rejects=rejects, **kwargs))
        except MixAtlasError as exc:
            if "empty corpus" not in str(exc):
                raise
            samples = []
    entries = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines()]
    paths = path if isinstance(path, list) else [path]
    assert {entry["file"] for entry in entries} <= {str(p) for p in paths}
    return samples, [(entry["where"], entry["reason"]) for entry in entries]


def tar_bytes(members: list[tuple[str, bytes]], dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """member name -> (header offset, data offset)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {info.name: (info.offset, info.offset_data) for info in tar}


def wds_record(i: int) -> bytes:
    return json.dumps(rec(i)).encode()


def two_samples() -> list[tuple[str, bytes]]:
    return [("000.json", wds_record(0)), ("000.png", PNG), ("001.json", wds_record(1)), ("001.png", PNG)]


# -- WebDataset -------------------------------------------------------------------------------------------


def test_wds_not_a_tar_is_one_reject_for_the_whole_file(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    shard.write_bytes(b"this is not a tar archive at all" * 40)
    samples, entries = read(shard)
    assert samples == []
    ((where, reason),) = entries
    assert where == "the whole file"
    assert reason.startswith("corrupt tar: not a readable tar archive (")
    assert reason.endswith("); re-create it")


def test_wds_member_data_cut_off_keeps_the_samples_before_and_is_reported_once(tmp_path: Path) -> None:
    data = tar_bytes(two_samples())
    _, png_data = member_offsets(data)["001.png"]
    shard = tmp_path / "s.tar"
    shard.write_bytes(data[: png_data + 10])  # ends inside the image bytes of the second sample
    samples, entries = read(shard)
    assert [(s.id, s.image) for s in samples] == [("r0", f"{shard}::000.png")]
    assert entries == [("member 001.png", "truncated tar: member 001.png is cut off (the shard ends inside "
                                          "it); the samples before it were kept")]


def test_wds_shard_ending_exactly_after_a_member_is_not_cut(tmp_path: Path) -> None:
    image = bytes(512)  # a whole block: the member's data ends on a block edge, no padding follows
    data = tar_bytes([("000.json", wds_record(0)), ("000.png", image)])
    _, png_data = member_offsets(data)["000.png"]
    shard = tmp_path / "s.tar"
    shard.write_bytes(data[: png_data + 512])  # no end-of-archive blocks, nothing missing
    samples, entries = read(shard)
    assert [(s.id, s.image) for s in samples] == [("r0", f"{shard}::000.png")] and entries == []


def gzip_cut(data: bytes, cut: int) -> bytes:
    """A gzip stream that stops (no end marker) after the first `cut` bytes of `data`."""
    compressor = zlib.compressobj(wbits=31)
    return compressor.compress(data[:cut]) + compressor.flush(zlib.Z_SYNC_FLUSH)


def test_wds_plain_shard_ending_inside_a_header_is_reported(tmp_path: Path) -> None:
    """A plain tar cut inside a header block ends tarfile's iteration like a clean end of archive; the
    bytes after the last member's data tell them apart (a real end is zero blocks or nothing)."""
    data = tar_bytes(two_samples())
    header, _ = member_offsets(data)["001.json"]
    shard = tmp_path / "s.tar"
    shard.write_bytes(data[: header + 100])
    samples, entries = read(shard)
    assert [(s.id, s.image) for s in samples] == [("r0", f"{shard}::000.png")]
    assert entries == [("member 2", "truncated tar: the shard ends inside the header of the member after "
                                    "the last one read; the samples before it were kept")]
    whole = tmp_path / "whole.tar"
    whole.write_bytes(data)  # ends with its zero blocks: no reject
    assert [s.id for s in read(whole)[0]] == ["r0", "r1"] and read(whole)[1] == []


def test_wds_gzip_shard_ending_inside_a_header_names_the_member_after_the_last_read(tmp_path: Path) -> None:
    data = tar_bytes(two_samples())
    header, _ = member_offsets(data)["001.json"]
    shard = tmp_path / "s.tgz"
    shard.write_bytes(gzip_cut(data, header + 100))
    samples, entries = read(shard)
    assert [(s.id, s.image, s.offset) for s in samples] == [("r0", f"{shard}::000.png", 0)]
    assert entries == [("member 2", "truncated tar: the shard ends inside the header of the member after "
                                    "the last one read; the samples before it were kept")]


def test_wds_gzip_shard_cut_inside_a_json_member(tmp_path: Path) -> None:
    data = tar_bytes([*two_samples(), ("002.json", json.dumps(rec(2, pad="x" * 2000)).encode())])
    _, json_data = member_offsets(data)["002.json"]
    shard = tmp_path / "s.tar.gz"
    shard.write_bytes(gzip_cut(data, json_data + 1000))
    samples, entries = read(shard)
    assert [(s.id, s.source, s.image) for s in samples] == [("r0", "s", f"{shard}::000.png"),
                                                            ("r1", "s", f"{shard}::001.png")]
    assert entries == [("member 002.json", "truncated tar: member 002.json is cut off (the shard ends inside "
                                           "it); the samples before it were kept")]


def test_wds_gzip_shard_smaller_than_its_content_is_whole(tmp_path: Path) -> None:
    padded = json.dumps(rec(0, pad="x" * 20000)).encode()  # compresses far below its size
    shard = tmp_path / "Shard.TAR.GZ"
    shard.write_bytes(gzip.compress(tar_bytes([("000.json", padded), ("000.png", bytes(20000))])))
    assert shard.stat().st_size < 20000
    samples, entries = read(shard, fmt="wds")
    assert [(s.id, s.source, s.image) for s in samples] == [("r0", "Shard", f"{shard}::000.png")]
    assert entries == []


def test_wds_duplicate_member_rejects_the_later_sample(tmp_path: Path) -> None:
    members = [*two_samples(), ("001.json", wds_record(1))]
    shard = tmp_path / "s.tar"
    shard.write_bytes(tar_bytes(members))
    samples, entries = read(shard)
    assert [s.id for s in samples] == ["r0"]
    assert entries == [("member 001.json", "duplicate tar member: 001.json is member 2 and member 4; keep "
                                           "one copy in the shard")]


def test_wds_folders_keys_and_the_last_sample(tmp_path: Path) -> None:
    members = [
        ("v1.0/000.json", json.dumps({"conversations": conv()}).encode()),  # no id: the key is the id
        ("v1.0/000.png", PNG),
        ("001.json", json.dumps({"conversations": conv()}).encode()),
        ("001.mask.png", PNG),  # extension "mask.png": same key, not the image
        ("001.jpg", PNG),
        ("002.json", wds_record(2)),  # text only: no image member
    ]
    shard = tmp_path / "shard-3.tar"
    shard.write_bytes(tar_bytes(members, dirs=("v1.0",)))
    samples, entries = read(shard)
    assert entries == []
    assert [(s.id, s.image, s.where, s.offset) for s in samples] == [
        ("v1.0/000", f"{shard}::v1.0/000.png", "member v1.0/000.png", 1),
        ("001", f"{shard}::001.jpg", "member 001.jpg", 3),
        ("r2", None, "member 002.json", 6),
    ]


def test_wds_group_rejects_name_the_member_and_the_problem(tmp_path: Path) -> None:
    members = [
        ("000.png", PNG),
        ("000.txt", b"caption"),
        ("001.json", b'{"id": "x\xff", "conversations": []}'),
        ("002.json", b"[1, 2]"),
        ("003.json", b""),
        ("004.json", wds_record(4)),
    ]
    shard = tmp_path / "s.tar"
    shard.write_bytes(tar_bytes(members))
    samples, entries = read(shard)
    assert [s.id for s in samples] == ["r4"]
    assert entries == [
        ("member 000.png, 000.txt", "no .json member: key 000 has only 000.png, 000.txt"),
        ("member 001.json", "invalid UTF-8: byte 0xff at byte 9 of the member; re-save the file as UTF-8"),
        ("member 002.json", "not an object: the record is a JSON list"),
        ("member 003.json", "malformed JSON: Expecting value: line 1 column 1 (char 0)"),
    ]


# -- JSON array -------------------------------------------------------------------------------------------


def scan(text: str, chunk_chars: int = 1 << 20) -> list[tuple]:
    fh = io.StringIO(text, newline="")
    return [(e.index, e.byte, e.line, e.value, e.error) for e in JsonArrayScanner(fh, chunk_chars).elements()]


def test_json_array_not_starting_with_a_bracket(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    reason = "malformed JSON: a JSON-array corpus must start with '['"
    cases = [('{"id": "x"}', "byte 0, line 1"), ("", "byte 0, line 1"), (" \n ", "byte 3, line 2")]
    for text, where in cases:
        path.write_text(text, encoding="utf-8")
        assert read(path)[1] == [(f"element 0 ({where})", reason)]


def test_json_array_not_closed_keeps_the_elements_read(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    text = "[" + json.dumps(rec(0)) + ",\n"
    path.write_text(text, encoding="utf-8")
    samples, entries = read(path)
    assert [s.id for s in samples] == ["r0"]
    reason = "malformed JSON: the array is not closed with ']'"
    assert entries == [(f"element 1 (byte {len(text)}, line 2)", reason)]


def test_json_array_bom_after_leading_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(("\n\ufeff[" + json.dumps(rec(0)) + "]").encode())
    (sample,) = read_corpus(path)
    assert sample.where == "element 0 (byte 5, line 2)"  # "\n", 3 BOM bytes, "["


def test_json_array_positions_are_the_same_in_any_chunk_size() -> None:
    text = "[\n" + ",\n".join(json.dumps(rec(i, note="é" * i)) for i in range(4)) + "\n]"
    whole = scan(text)
    assert [(i, line) for i, _, line, _, _ in whole] == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert whole[1][1] == len(("[\n" + json.dumps(rec(0, note="")) + ",\n").encode())
    assert scan(text, chunk_chars=5) == whole


def test_json_array_scalars_cut_at_a_chunk_edge_are_decoded_whole() -> None:
    assert [v for _, _, _, v, _ in scan("[12345, 678901, true]", chunk_chars=4)] == [12345, 678901, True]


def test_json_array_scanner_streams_a_chunk_at_a_time() -> None:
    text = "[" + ", ".join(json.dumps(rec(i)) for i in range(50)) + "]"
    fh = io.StringIO(text, newline="")
    first = next(JsonArrayScanner(fh, chunk_chars=64).elements())
    assert first.value == rec(0) and fh.tell() < 200 < len(text)


NO_NAME = "Expecting property name enclosed in double quotes"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "b,}]", oops}', NO_NAME),  # brackets and commas inside a string
        ('{"id": "a\\"}\\\\", oops}', NO_NAME),  # an escaped quote, then an escaped backslash
        ('{"id": "a" "x"}', "Expecting ',' delimiter"),
    ],
)
def test_json_array_malformed_element_is_skipped_to_its_end(tmp_path: Path, bad: str, message: str) -> None:
    head = "[" + json.dumps(rec(0)) + ", "
    path = tmp_path / "a.json"
    path.write_text(head + bad + ", " + json.dumps(rec(2)) + "]", encoding="utf-8")
    samples, entries = read(path)
    assert [(s.id, s.offset) for s in samples] == [("r0", 0), ("r2", 2)]
    assert entries == [(f"element 1 (byte {len(head)}, line 1)", f"malformed JSON: {message}")]


def test_json_array_malformed_element_without_a_comma_before_the_next(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[{"id": "a" "x"}\n' + json.dumps(rec(1)) + "]", encoding="utf-8")
    samples, entries = read(path)
    assert [(s.id, s.offset) for s in samples] == [("r1", 1)]
    assert entries == [("element 0 (byte 1, line 1)", "malformed JSON: Expecting ',' delimiter")]


def test_json_array_malformed_last_scalar(tmp_path: Path) -> None:
    head = "[" + json.dumps(rec(0)) + ", "
    path = tmp_path / "a.json"
    path.write_text(head + "tru]", encoding="utf-8")
    samples, entries = read(path)
    assert [s.id for s in samples] == ["r0"]
    assert entries == [(f"element 1 (byte {len(head)}, line 1)", "malformed JSON: Expecting value")]


# -- JSONL ------------------------------------------------------------------------------------------------


def test_jsonl_invalid_utf8_line_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = [json.dumps(rec(i)).encode() for i in (0, 2)]
    path.write_bytes(good[0] + b'\n{"id": "\xfe"}\n' + good[1] + b"\n")
    samples, entries = read(path)
    assert [s.id for s in samples] == ["r0", "r2"]
    assert entries == [(2, "invalid UTF-8: byte 0xfe at byte 8 of the line; re-save the file as UTF-8")]


# -- records: conversations, images, ids, fields ----------------------------------------------------------


def test_conversation_formats_are_normalized(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}, "junk",
                                     {"type": "text"}]},
        {"role": "Assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]
    path = jsonl(tmp_path / "c.jsonl", [{"id": "m", "messages": messages},
                                         {"id": "j", "conversations": json.dumps(conv("x", "y"))}])
    samples, entries = read(path)
    assert entries == []
    assert samples[0].conversations == [{"from": "human", "value": "<image>What?"},
                                        {"from": "gpt", "value": "A cat."}]
    assert samples[1].conversations == conv("x", "y")


def test_bad_conversations_name_what_is_wrong(tmp_path: Path) -> None:
    bad = [
        [],
        {"from": "human"},
        ["hi", "there"],
        [{"value": "x"}, {"from": "gpt", "value": "y"}],
        [{"from": "human", "value": "x"}, {"from": "gpt", "value": 3}],
        [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}],
    ]
    records = [rec(0)] + [{"id": f"b{i}", "conversations": c} for i, c in enumerate(bad)]
    path = jsonl(tmp_path / "c.jsonl", records)
    _, entries = read(path)
    assert entries == [
        (2, "bad conversations: expected a non-empty list of turns"),
        (3, "bad conversations: expected a non-empty list of turns"),
        (4, "bad conversations: turn 1 is not an object"),
        (5, "bad conversations: turn 1 has speaker '', expected human/gpt (or user/assistant)"),
        (6, "bad conversations: turn 2 has no text value"),
        (7, "bad conversations: needs at least one human and one gpt turn"),
    ]


def test_image_field_forms(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    records = [
        rec(0, image=["imgs/0.png"]),
        rec(1, image=[]),
        rec(2, image=["imgs/0.png", "imgs/1.png"]),
        rec(3, image=""),
        rec(4, image=5),
        rec(5),
        [1],
    ]
    samples, entries = read(jsonl(tmp_path / "c.jsonl", records))
    assert [(s.id, s.image) for s in samples] == [("r0", str(tmp_path / "imgs" / "0.png")), ("r1", None),
                                                   ("r5", None)]
    assert entries == [
        (3, "bad image field: expected a path string, got list"),
        (4, "bad image field: expected a path string, got str"),
        (5, "bad image field: expected a path string, got int"),
        (7, "not an object: the record is a JSON list"),
    ]


def test_images_outside_the_root_and_links(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "imgs2").mkdir()
    (tmp_path / "imgs2" / "x.png").write_bytes(PNG)
    (root / "sub" / "real.png").write_bytes(PNG)
    (root / "inside.png").symlink_to(root / "sub" / "real.png")
    (root / "outside.png").symlink_to(tmp_path / "imgs2" / "x.png")
    records = [rec(0, image="../imgs2/x.png"), rec(1, image="inside.png"), rec(2, image="outside.png")]
    samples, entries = read(jsonl(tmp_path / "c.jsonl", records), image_root=root)
    assert [(s.id, s.image) for s in samples] == [("r1", str(root / "inside.png"))]
    fix = "move the image into that folder, or pass --allow-outside-root if the corpus is trusted"
    real = os.path.realpath(tmp_path / "imgs2" / "x.png")
    assert entries == [
        (1, f"image outside the corpus root: '../imgs2/x.png' is not under {root}; {fix}"),
        (3, f"image outside the corpus root: 'outside.png' is a link to {real}, not under "
            f"{os.path.realpath(root)}; {fix}"),
    ]


def test_filesystem_root_as_image_root(tmp_path: Path) -> None:
    image = tmp_path / "0.png"
    image.write_bytes(PNG)
    (sample,) = read_corpus(jsonl(tmp_path / "c.jsonl", [rec(0, image=str(image))]), image_root=Path("/"))
    assert sample.image == str(image)


def test_duplicate_ids_across_the_files_of_a_corpus(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", [rec(0), rec(1)])
    b = jsonl(tmp_path / "b.jsonl", [rec(2), rec(1), rec(0, id=None)])
    samples, entries = read([a, b])
    assert [s.id for s in samples] == ["r0", "r1", "r2", "b:3"]
    assert entries == [(2, "duplicate id: 'r1' is already the id of an earlier record; give every record a "
                           "unique id")]


def test_record_parser_defaults_confine_images_and_track_ids(tmp_path: Path) -> None:
    rejects = Rejects(None)
    parser = RecordParser(tmp_path / "c.jsonl", "c", rejects=rejects)
    with pytest.raises(ValueError, match=r"^image outside the corpus root: '\.\./x\.png' is not under "):
        parser.image_path("../x.png")
    first = parser.json_sample(rec(0), 1, 1)
    assert first is not None and first.id == "r0" and first.source == "c"
    assert parser.json_sample(rec(0), 2, 2) is None
    assert rejects.by_reason() == {"duplicate id": 1}


def test_meta_source_and_task_fields(tmp_path: Path) -> None:
    records = [
        rec(0, meta={"k": 1, "origin": "meta"}, origin="top", extra=2, task="ocr", ds="coco"),
        rec(1, task="", ds=""),
        rec(2),
    ]
    samples, _ = read(jsonl(tmp_path / "corpus.data", records), fmt="jsonl", source_field="ds")
    assert [(s.source, s.task, s.meta) for s in samples] == [
        ("coco", "ocr", {"k": 1, "origin": "meta", "extra": 2, "ds": "coco"}),
        ("corpus", None, {"ds": ""}),
        ("corpus", None, {}),
    ]


# -- Parquet ----------------------------------------------------------------------------------------------


def test_parquet_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1 but not really" * 10)
    samples, entries = read(path)
    ((where, reason),) = entries
    assert samples == [] and where == "the whole file"
    assert reason.startswith("corrupt parquet: not a readable Parquet file (") and reason.endswith(")")


def test_parquet_messages_column_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    pq.write_table(pa.table({"id": ["m0"], "messages": [json.dumps(messages)]}), path)
    (sample,) = read_corpus(path)
    assert sample.id == "m0" and sample.conversations[1] == {"from": "gpt", "value": "yo"}
    bad = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": ["x"], "text": ["t"]}), bad)
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus(bad))
    assert str(info.value) == f"{bad}: no 'conversations' (or 'messages') column; columns are: id, text"


def test_parquet_raw_image_bytes(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    table = pa.table({"image": pa.array([PNG, b""], type=pa.binary()),
                      "conversations": [json.dumps(conv())] * 2, "id": ["b0", "b1"]})
    pq.write_table(table, path)
    assert [(s.id, s.image) for s in read_corpus(path)] == [("b0", f"{path}::0"), ("b1", None)]


def test_parquet_unreadable_from_a_row_on(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    ids = [f"id{i:04d}" for i in range(512)]  # a row group per batch of 256 rows
    table = pa.table({"id": ids, "conversations": [json.dumps(conv(f"q{i}", "a" * 50)) for i in range(512)]})
    pq.write_table(table, path, row_group_size=256, compression="snappy", use_dictionary=False)
    meta = pq.ParquetFile(path).metadata.row_group(1)
    start = min(meta.column(c).data_page_offset for c in range(meta.num_columns))
    data = bytearray(path.read_bytes())
    data[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    samples, entries = read(path)
    assert [s.id for s in samples] == ids[:256]
    ((where, reason),) = entries
    assert where == "row 256"
    assert reason.startswith("corrupt parquet: the file cannot be read from this row on (")


# -- corpus paths, folders and formats --------------------------------------------------------------------


def test_globs_brace_ranges_and_lists(tmp_path: Path) -> None:
    for i in range(4):
        jsonl(tmp_path / f"part-{i:03d}.jsonl", [rec(i)])
    (tmp_path / "part-dir.jsonl").mkdir()

    def ids(spec) -> list[str]:
        return [s.id for s in read_corpus(spec)]

    assert ids(str(tmp_path / "part-*.jsonl")) == ["r0", "r1", "r2", "r3"]
    assert ids(str(tmp_path / "part-00[13].jsonl")) == ["r1", "r3"]
    assert ids(str(tmp_path / "part-{001..002}.jsonl")) == ["r1", "r2"]
    assert ids(str(tmp_path / "part-{003,000}.jsonl")) == ["r3", "r0"]
    missing = str(tmp_path / "none-*.jsonl")
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus(missing))
    assert str(info.value) == f"{missing}: no corpus files found; check the path"


@pytest.mark.parametrize("name", ["Missing-X.jsonl", "part-{a..c}.jsonl", "part-{x..3}.jsonl"])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus(str(tmp_path / name)))
    assert str(info.value).endswith(": no such file or folder; check the corpus path")


def test_folders_pick_their_corpus_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    jsonl(plain / "train.jsonl", [rec(0)])
    jsonl(plain / "val.jsonl", [rec(1)])
    (plain / "README.md").write_text("notes")
    (plain / "sub.jsonl").mkdir()
    assert [s.id for s in read_corpus(plain)] == ["r0", "r1"]

    synth = tmp_path / "synth"
    synth.mkdir()
    jsonl(synth / "train.jsonl", [rec(0)])
    jsonl(synth / "extra.jsonl", [rec(1)])
    (synth / "synth.json").write_text("{}")
    assert [s.id for s in read_corpus(synth)] == ["r0"]

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    jsonl(mixed / "a.jsonl", [rec(0)])
    (mixed / "b.json").write_text(json.dumps([rec(1)]))
    assert [s.id for s in read_corpus(mixed, "jsonl")] == ["r0"]
    assert [s.id for s in read_corpus(mixed, "llava-json")] == ["r1"]
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus(mixed))
    message = f"{mixed}: holds several corpus formats (jsonl, llava-json); choose one with --format"
    assert str(info.value) == message


def test_format_errors_name_the_choices(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", [rec(0)])
    b = tmp_path / "b.json"
    b.write_text(json.dumps([rec(1)]))
    odd = jsonl(tmp_path / "c.foo.bar", [rec(2)])
    choices = "llava-json, jsonl, wds, parquet, hf"
    cases = [
        ((a, "tsv"), f"unknown --format 'tsv'; use one of: {choices}"),
        (([a, b], None), "corpus mixes formats (jsonl, llava-json); choose one with --format"),
        ((odd, None), f"{odd}: unknown corpus format '.foo.bar'; pass --format (one of: {choices})"),
    ]
    for (path, fmt), message in cases:
        with pytest.raises(MixAtlasError) as info:
            list(read_corpus(path, fmt))
        assert str(info.value) == message


def test_empty_corpus_messages_name_the_paths(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text("[]")
    tail = "check the files, or the format with --format"
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus(a))
    assert str(info.value) == f"{a}: empty corpus: no valid samples in 1 file(s) (0 rejected); {tail}"
    c = tmp_path / "c.json"
    c.write_text(json.dumps([{"conversations": []}]))
    with pytest.raises(MixAtlasError) as info:
        list(read_corpus([a, c], rejects=Rejects(None)))
    assert str(info.value) == f"{a}, {c}: empty corpus: no valid samples in 2 file(s) (1 rejected); {tail}"


def test_hf_dataset_folder_is_read_as_hf(tmp_path: Path) -> None:
    folder = tmp_path / "myset"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["h0"], "conversations": [json.dumps(conv())]}),
                   folder / "data-00000-of-00001.parquet")
    state = {"_data_files": [{"filename": "data-00000-of-00001.parquet"}]}
    (folder / "state.json").write_text(json.dumps(state))
    assert detect_format(folder) == "hf"
    assert [(s.id, s.source) for s in read_corpus(folder)] == [("h0", "myset")]
