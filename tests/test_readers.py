"""Corpus readers (LLaVA JSON, JSONL, WebDataset, Parquet), image refs and rejects."""

from __future__ import annotations

import io
import json
import re
import tarfile
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mixatlas.corpus.images import ImageRejected, image_bytes, open_image, open_sample_image
from mixatlas.corpus.readers import JsonArrayScanner, corpus_files, detect_format, format_of, read_corpus
from mixatlas.corpus.rejects import Rejects
from mixatlas.errors import MixAtlasError


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def conv(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (folder / f"{i}.png").write_bytes(png_bytes(color))
    return folder


def test_jsonl_reader_resolves_images_and_keeps_fields(tmp_path: Path, image_dir: Path) -> None:
    corpus = write_jsonl(
        tmp_path / "web-caps.jsonl",
        [
            json.dumps({"id": "a", "image": "imgs/0.png", "conversations": conv("Describe it.", "red")}),
            "",
            json.dumps(
                {
                    "image": "imgs/1.png",
                    "conversations": conv("Color?", "green"),
                    "task": "vqa",
                    "origin": "x",
                }
            ),
            json.dumps(
                {
                    "id": "c",
                    "image": str(image_dir / "2.png"),
                    "messages": [
                        {"role": "user", "content": "<image>\nWhat?"},
                        {"role": "assistant", "content": "b"},
                    ],
                }
            ),
        ],
    )
    samples = list(read_corpus(corpus))
    assert [s.id for s in samples] == ["a", "web-caps:3", "c"]
    assert [s.offset for s in samples] == [1, 3, 4]
    assert {s.source for s in samples} == {"web-caps"} and samples[0].shard == str(corpus)
    assert samples[0].image == str(image_dir / "0.png")
    assert samples[0].prompt == "Describe it." and samples[0].answer == "red"
    assert samples[1].task == "vqa" and samples[1].meta == {"origin": "x"}
    assert samples[2].conversations[1] == {"from": "gpt", "value": "b"}
    assert open_image(samples[1].image).getpixel((0, 0)) == (0, 255, 0)


def test_image_root_and_source_field(tmp_path: Path, image_dir: Path) -> None:
    corpus = write_jsonl(
        tmp_path / "c.jsonl",
        [json.dumps({"image": "0.png", "conversations": conv("q", "a"), "dataset": "coco"})],
    )
    (sample,) = read_corpus(corpus, source_field="dataset", image_root=image_dir)
    assert sample.source == "coco"
    assert sample.image == str(image_dir / "0.png")


@pytest.mark.parametrize("indent", [None, 2])
def test_llava_json_array_streams_elements_with_index_byte_and_line(
    tmp_path: Path, image_dir: Path, indent
) -> None:
    records = [
        {"id": f"r{i}", "image": f"imgs/{i % 3}.png", "conversations": conv(f"q{i} [x] éé", "a, {b}")}
        for i in range(5)
    ]
    path = tmp_path / "llava.json"
    text = json.dumps(records, indent=indent, ensure_ascii=False)
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))  # multi-byte text and CRLF lines
    samples = list(read_corpus(path))
    assert [s.id for s in samples] == [r["id"] for r in records]
    assert [s.offset for s in samples] == list(range(5))
    raw = path.read_bytes()
    for sample in samples:
        index, byte, line = re.fullmatch(r"element (\d+) \(byte (\d+), line (\d+)\)", sample.where).groups()
        assert int(index) == sample.offset
        assert json.JSONDecoder().raw_decode(raw[int(byte) :].decode())[0]["id"] == sample.id
        assert int(line) == raw[: int(byte)].count(b"\n") + 1
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        values = [element.value for element in JsonArrayScanner(fh, chunk_chars=7).elements()]
    assert values == records  # tiny chunks force every refill path of the scanner


def test_llava_json_malformed_element_is_rejected_and_reading_continues(tmp_path: Path) -> None:
    good = json.dumps({"id": "ok1", "conversations": conv("q", "a")})
    bad = '{"id": "bad", "conversations": [ {"from": "human" "value": "x"} ]}'
    path = tmp_path / "arr.json"
    path.write_text(f"[\n{good},\n{bad},\n{good.replace('ok1', 'ok2')}\n]\n", encoding="utf-8")
    rejects = Rejects(tmp_path / "rejects.jsonl")
    assert [s.id for s in read_corpus(path, rejects=rejects)] == ["ok1", "ok2"]
    rejects.close()
    (entry,) = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    byte = len(f"[\n{good},\n")
    assert entry["file"] == str(path) and entry["where"] == f"element 1 (byte {byte}, line 3)"
    assert entry["reason"].startswith("malformed JSON")


def write_wds(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_reader_groups_members_by_key(tmp_path: Path) -> None:
    def record(answer: str) -> bytes:
        return json.dumps({"conversations": conv("What color?", answer)}).encode()

    shard = write_wds(
        tmp_path / "shard-000.tar",
        [
            ("s/000.png", png_bytes((255, 0, 0))),
            ("s/000.json", record("red")),
            ("s/001.jpg", png_bytes((0, 0, 255), (5, 5))),
            ("s/001.json", record("blue")),
            ("s/002.png", png_bytes((0, 0, 0))),
            ("s/003.json", b"{broken"),
            ("s/003.png", png_bytes((0, 0, 0))),
        ],
    )
    rejects = Rejects(None)
    samples = list(read_corpus(shard, rejects=rejects))
    assert [(s.id, s.source, s.offset) for s in samples] == [
        ("s/000", "shard-000", 0),
        ("s/001", "shard-000", 2),
    ]
    assert samples[0].image == f"{shard}::s/000.png"
    assert open_image(samples[0].image).getpixel((0, 0)) == (255, 0, 0)
    assert open_image(samples[1].image).size == (5, 5)
    assert rejects.count == 2 and rejects.by_reason() == {"no .json member": 1, "malformed JSON": 1}


def test_parquet_reader_with_image_bytes_and_with_path_column(tmp_path: Path, image_dir: Path) -> None:
    conversations = [conv("Describe.", "red"), conv("Describe.", "green")]
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": png_bytes((255, 0, 0)), "path": None}, {"bytes": None, "path": "imgs/1.png"}],
                type=hf_image,
            ),
            "conversations": conversations,
            "subset": ["a", "b"],
        }
    )
    with_bytes = tmp_path / "train-00000.parquet"
    pq.write_table(table, with_bytes, row_group_size=1)
    samples = list(read_corpus(with_bytes, source_field="subset"))
    assert samples[0].image == f"{with_bytes}::0" and samples[0].source == "a"
    assert samples[1].image == str(image_dir / "1.png") and samples[1].offset == 1
    assert open_image(samples[0].image).getpixel((0, 0)) == (255, 0, 0)

    paths_dir = tmp_path / "paths"
    paths_dir.mkdir()
    with_paths = paths_dir / "p.parquet"
    pq.write_table(
        pa.table({"image_path": [str(image_dir / "2.png")], "conversations": [json.dumps(conversations[0])]}),
        with_paths,
    )
    with pytest.raises(MixAtlasError, match=r"p\.parquet, row 0 \(row group 0, index 0\): image outside the "
                       r"corpus root: .*--allow-outside-root"):
        list(read_corpus(with_paths))
    (sample,) = read_corpus(with_paths, allow_outside_root=True)
    assert open_image(sample.image).getpixel((0, 0)) == (0, 0, 255) and sample.answer == "red"


def test_shard_patterns_folders_and_format_detection(tmp_path: Path) -> None:
    for i in range(3):
        write_jsonl(
            tmp_path / f"part-{i:03d}.jsonl", [json.dumps({"id": f"p{i}", "conversations": conv("q", "a")})]
        )
    assert [s.id for s in read_corpus(str(tmp_path / "part-{000..001}.jsonl"))] == ["p0", "p1"]
    assert [p.name for p in corpus_files(tmp_path, None)] == [
        "part-000.jsonl",
        "part-001.jsonl",
        "part-002.jsonl",
    ]
    assert detect_format(tmp_path) == "jsonl" and format_of(Path("x.parquet")) == "parquet"
    assert format_of(Path("shard.tar.gz")) == "wds" and format_of(Path("a.json")) == "llava-json"
    assert [s.id for s in read_corpus([tmp_path / "part-002.jsonl", tmp_path / "part-000.jsonl"])] == [
        "p2",
        "p0",
    ]


def test_unknown_format_and_missing_path_name_the_fix(tmp_path: Path) -> None:
    csv = tmp_path / "corpus.csv"
    csv.write_text("a,b\n")
    with pytest.raises(MixAtlasError, match=r"corpus\.csv: unknown corpus format '\.csv'; pass --format"):
        list(read_corpus(csv))
    with pytest.raises(MixAtlasError, match="unknown --format 'tsv'"):
        list(read_corpus(csv, "tsv"))
    with pytest.raises(MixAtlasError, match="no such file or folder"):
        list(read_corpus(tmp_path / "nope.jsonl"))


def test_malformed_lines_go_to_rejects_with_file_and_line(tmp_path: Path) -> None:
    corpus = write_jsonl(
        tmp_path / "c.jsonl",
        [
            json.dumps({"id": "ok", "conversations": conv("q", "a")}),
            '{"id": "cut", "conversations": [',
            json.dumps(["not", "an", "object"]),
            json.dumps({"id": "noanswer", "conversations": [{"from": "human", "value": "q"}]}),
            json.dumps({"id": "ok2", "conversations": conv("q", "a")}),
        ],
    )
    with Rejects(tmp_path / "out" / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(corpus, rejects=rejects)] == ["ok", "ok2"]
    entries = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(e["file"], e["where"]) for e in entries] == [
        (str(corpus), 2),
        (str(corpus), 3),
        (str(corpus), 4),
    ]
    assert rejects.by_reason() == {"malformed JSON": 1, "not an object": 1, "bad conversations": 1}


def test_strict_mode_and_no_rejects_list_stop_at_the_first_with_one_line(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"conversations": conv("q", "a")}), "{oops"])
    with pytest.raises(MixAtlasError) as strict:
        list(read_corpus(corpus, rejects=Rejects(tmp_path / "r.jsonl", strict=True)))
    message = str(strict.value)
    assert message.startswith(f"{corpus}:2: malformed JSON") and "\n" not in message
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 1
    with pytest.raises(MixAtlasError, match=r"c\.jsonl:2: malformed JSON"):
        list(read_corpus(corpus))


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["{bad"])
    with pytest.raises(MixAtlasError, match=r"empty corpus: no valid samples in 1 file\(s\) \(1 rejected\)"):
        list(read_corpus(corpus, rejects=Rejects(None)))


def test_missing_corrupt_and_truncated_images_are_rejected_with_their_line(tmp_path: Path) -> None:
    full = png_bytes((9, 9, 9), (64, 64))
    (tmp_path / "ok.png").write_bytes(full)
    (tmp_path / "corrupt.png").write_bytes(b"definitely not an image")
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    names = ["ok.png", "missing.png", "corrupt.png", "truncated.png", "empty.png"]
    corpus = write_jsonl(
        tmp_path / "c.jsonl", [json.dumps({"image": n, "conversations": conv("q", "a")}) for n in names]
    )
    rejects = Rejects(tmp_path / "rejects.jsonl")
    opened = [open_sample_image(s, rejects) for s in read_corpus(corpus)]
    rejects.close()
    assert [img is not None for img in opened] == [True, False, False, False, False]
    entries = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(e["file"], e["where"]) for e in entries] == [(str(corpus), line) for line in (2, 3, 4, 5)]
    kinds = {"missing image": 1, "not an image": 1, "truncated image": 1, "empty image": 1}
    assert rejects.by_reason() == kinds
    reasons = [e["reason"] for e in entries]
    assert reasons[0].startswith(f"missing image: {tmp_path / 'missing.png'}: no such file; fix the path")
    assert reasons[1] == (f"not an image: {tmp_path / 'corrupt.png'}: the file starts with text "
                          '("definitely not an image"), not an image signature; replace the file or drop '
                          "the record")
    assert reasons[3] == (f"empty image: {tmp_path / 'empty.png'}: the file is empty (0 bytes); "
                          "replace the file or drop the record")
    for reason in reasons:  # plain words: no Python reprs, no options that do not exist
        assert "object at 0x" not in reason and "--image-root" not in reason and "\n" not in reason
    with pytest.raises(MixAtlasError, match=r"truncated image: .*truncated\.png: "):
        open_image(str(tmp_path / "truncated.png"))
    with pytest.raises(MixAtlasError, match="missing image"):
        image_bytes(f"{tmp_path / 'none.tar'}::a.png")


# -- issue 13: a bad record in the middle of each format is found by its reported location ------------------


def good_record(i: int) -> dict:
    return {"id": f"r{i}", "conversations": conv(f"q{i}", f"a{i}")}


def read_rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_bad_record_in_the_middle_is_found_by_its_line(tmp_path: Path) -> None:
    lines = [json.dumps(good_record(i)) for i in range(5)]
    lines[2] = '{"id": "r2", "conversations": '
    corpus = write_jsonl(tmp_path / "c.jsonl", lines)
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(corpus, rejects=rejects)] == ["r0", "r1", "r3", "r4"]
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    assert entry["where"] == 3 and corpus.read_text().splitlines()[entry["where"] - 1] == lines[2]


def test_json_array_bad_record_in_the_middle_is_found_by_element_and_byte(tmp_path: Path) -> None:
    records = [good_record(i) for i in range(5)]
    records[3]["conversations"] = [{"from": "robot", "value": "x"}]  # valid JSON, bad record
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records), encoding="utf-8")  # one line: a line number finds nothing
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(path, rejects=rejects)] == ["r0", "r1", "r2", "r4"]
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    index, byte = map(int, re.fullmatch(r"element (\d+) \(byte (\d+), line 1\)", entry["where"]).groups())
    assert index == 3 and entry["reason"].startswith("bad conversations: turn 1 has speaker 'robot'")
    found, _ = json.JSONDecoder().raw_decode(path.read_bytes()[byte:].decode())
    assert found == records[3]


def test_json_array_with_a_byte_order_mark_counts_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes("\ufeff[{\"id\": \"\u00e9\", \"conversations\": []}, 1]".encode())
    rejects = Rejects(None)
    with pytest.raises(MixAtlasError, match="empty corpus"):
        list(read_corpus(path, rejects=rejects))
    assert rejects.count == 2
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        elements = list(JsonArrayScanner(fh).elements())
    raw = path.read_bytes()  # BOM (3 bytes), "[" then the first element; "\u00e9" takes 2 bytes
    assert [(e.index, e.byte) for e in elements] == [(0, 4), (1, raw.index(b"1]"))]


def test_json_array_invalid_utf8_element_is_rejected_alone(tmp_path: Path) -> None:
    parts = [json.dumps(good_record(i)).encode() for i in range(3)]
    parts[1] = parts[1].replace(b'"a1"', b'"a\xff1"')
    assert b"\xff" in parts[1]
    path = tmp_path / "train.json"
    path.write_bytes(b"[" + b",\n".join(parts) + b"]")
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(path, rejects=rejects)] == ["r0", "r2"]
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    bad_byte = path.read_bytes().index(b"\xff")
    assert entry["where"].startswith("element 1 (byte ")
    expected = f"invalid UTF-8: byte 0xff at byte {bad_byte} of the file; re-save the file as UTF-8"
    assert entry["reason"] == expected
    with pytest.raises(MixAtlasError, match=r"train\.json, element 1 \(byte \d+, line 2\): invalid UTF-8"):
        list(read_corpus(path, rejects=Rejects(None, strict=True)))


def test_webdataset_bad_record_in_the_middle_is_found_by_its_member(tmp_path: Path) -> None:
    members = []
    for i in range(4):
        payload = b"{cut" if i == 2 else json.dumps(good_record(i)).encode()
        members += [(f"{i:03d}.json", payload), (f"{i:03d}.png", png_bytes((i, i, i)))]
    shard = write_wds(tmp_path / "shard-0.tar", members)
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        samples = list(read_corpus(shard, rejects=rejects))
    assert [s.id for s in samples] == ["r0", "r1", "r3"]
    assert samples[2].where == "member 003.png"  # where an image problem of this sample will be reported
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    assert entry["where"] == "member 002.json" and entry["reason"].startswith("malformed JSON")
    with tarfile.open(shard) as tar:
        assert tar.extractfile(entry["where"].removeprefix("member ")).read() == b"{cut"


def test_parquet_bad_record_in_the_middle_is_found_by_row_group_and_row(tmp_path: Path) -> None:
    conversations = [json.dumps(conv(f"q{i}", f"a{i}")) for i in range(6)]
    conversations[4] = "[]"
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(6)], "conversations": conversations}), path,
                   row_group_size=3)
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(path, rejects=rejects)] == ["r0", "r1", "r2", "r3", "r5"]
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    assert entry["where"] == "row 4 (row group 1, index 1)"
    group = pq.ParquetFile(path).read_row_group(1)
    assert group.column("conversations")[1].as_py() == "[]"


def half_float_tiff() -> bytes:
    """A real TIFF Pillow cannot decode: 16-bit floating-point samples (SampleFormat 3)."""
    return encoded(Image.new("I;16", (4, 4)), "TIFF", tiffinfo={339: 3})


NOT_AN_IMAGE = bytes(range(40))  # binary, no image signature


def rejected_images(corpus: Path, rejects_path: Path) -> tuple[list[str], list[dict]]:
    """Read `corpus` and decode every image as `decompose` does: (ids kept, reject entries)."""
    with Rejects(rejects_path) as rejects:
        kept = [s.id for s in read_corpus(corpus, rejects=rejects)
                if open_sample_image(s, rejects) is not None]
    return kept, read_rejects(rejects_path)


def test_json_array_bad_images_in_the_middle_are_found_by_element_and_byte(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    payloads = [png_bytes((i, i, i)) for i in range(5)]
    payloads[2], payloads[3] = b"garbage, not a picture", b""
    records = []
    for i, data in enumerate(payloads):
        (tmp_path / "images" / f"{i}.png").write_bytes(data)
        records.append({**good_record(i), "image": f"images/{i}.png"})
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records), encoding="utf-8")  # one line
    kept, entries = rejected_images(path, tmp_path / "rejects.jsonl")
    assert kept == ["r0", "r1", "r4"] and [e["file"] for e in entries] == [str(path)] * 2
    for entry, index in zip(entries, (2, 3), strict=True):
        found = re.fullmatch(r"element (\d+) \(byte (\d+), line 1\)", entry["where"])
        assert int(found[1]) == index
        record, _ = json.JSONDecoder().raw_decode(path.read_bytes()[int(found[2]):].decode())
        assert record == records[index]
    assert entries[0]["reason"] == (f"not an image: {tmp_path / 'images' / '2.png'}: the file starts with "
                                    'text ("garbage, not a picture"), not an image signature; replace the '
                                    "file or drop the record")
    assert entries[1]["reason"].startswith(f"empty image: {tmp_path / 'images' / '3.png'}: the file is empty")


def test_parquet_bad_images_in_the_middle_are_found_by_row_group_and_row(tmp_path: Path) -> None:
    images = [png_bytes((i, i, i)) for i in range(6)]
    images[1], images[4] = half_float_tiff(), NOT_AN_IMAGE
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(6)], "image": images,
                             "conversations": [json.dumps(conv(f"q{i}", f"a{i}")) for i in range(6)]}),
                   path, row_group_size=3)
    kept, entries = rejected_images(path, tmp_path / "rejects.jsonl")
    assert kept == ["r0", "r2", "r3", "r5"]
    assert [e["where"] for e in entries] == ["row 1 (row group 0, index 1)", "row 4 (row group 1, index 1)"]
    assert pq.ParquetFile(path).read_row_group(1).column("image")[1].as_py() == NOT_AN_IMAGE
    assert entries[0]["reason"] == (f"unsupported image: {path}::1: Pillow cannot open this TIFF file (its "
                                    "header is damaged, or it uses a mode, bit depth or compression Pillow "
                                    "does not support); convert it to an 8-bit RGB PNG or JPEG or drop the "
                                    "record")
    assert entries[1]["reason"] == (f"not an image: {path}::4: no image signature: its 40 bytes begin "
                                    "00 01 02 03 04 05 06 07 (hex); replace the file or drop the record")


def test_webdataset_bad_images_in_the_middle_are_found_by_their_member(tmp_path: Path) -> None:
    members = []
    for i in range(4):
        image = {1: b"", 2: b"<html>404 Not Found</html>"}.get(i, png_bytes((i, i, i)))
        members += [(f"{i:03d}.json", json.dumps(good_record(i)).encode()), (f"{i:03d}.png", image)]
    shard = write_wds(tmp_path / "shard-0.tar", members)
    kept, entries = rejected_images(shard, tmp_path / "rejects.jsonl")
    assert kept == ["r0", "r3"]
    assert [(e["file"], e["where"]) for e in entries] == [(str(shard), "member 001.png"),
                                                          (str(shard), "member 002.png")]
    assert entries[0]["reason"].startswith(f"empty image: {shard}::001.png: the file is empty")
    assert entries[1]["reason"].startswith(f'not an image: {shard}::002.png: the file starts with text '
                                           '("<html>404 Not Found</html>"), not an image signature')
    with tarfile.open(shard) as tar:
        assert tar.extractfile("002.png").read() == b"<html>404 Not Found</html>"


def test_an_image_format_pillow_cannot_decode_is_unsupported_not_garbage(tmp_path: Path) -> None:
    (tmp_path / "half.tif").write_bytes(half_float_tiff())
    (tmp_path / "random.bin").write_bytes(b"\x00\xff" * 30)
    with pytest.raises(ImageRejected) as unsupported:
        open_image(str(tmp_path / "half.tif"))
    assert unsupported.value.kind == "unsupported image"
    with pytest.raises(ImageRejected, match=r"no image signature: its 60 bytes begin 00 ff 00 ff 00 ff "):
        open_image(str(tmp_path / "random.bin"))


# -- issue 13: every image mode decodes to what it looks like, without a warning ---------------------------


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def palette_with_byte_transparency() -> bytes:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    return encoded(img, "PNG", transparency=b"\x00\xff")  # red fully transparent, blue opaque


@pytest.mark.parametrize(
    ("name", "data", "corner", "inside"),
    [
        ("palette-transparency.png", palette_with_byte_transparency(), (255, 255, 255), (0, 0, 255)),
        ("la.png", encoded(Image.new("LA", (4, 4), (0, 0)), "PNG"), (255, 255, 255), (255, 255, 255)),
        ("rgba-half.png", encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG"), (127, 127, 127), None),
        ("cmyk.jpg", encoded(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"), (255, 0, 0), None),
        ("grey16.png", encoded(Image.new("I;16", (4, 4), 40000), "PNG"), (156, 156, 156), None),
        ("animated.gif", encoded(Image.new("P", (4, 4), 3), "GIF", save_all=True,
                                 append_images=[Image.new("P", (4, 4), 5)]), None, None),
    ],
)
def test_image_modes_become_rgb_as_they_look_without_warnings(
    tmp_path: Path, name: str, data: bytes, corner, inside
) -> None:
    from mixatlas.atlas.embed import PixelEmbedder

    path = tmp_path / name
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any library warning fails the test
        image = open_image(str(path))
        embedding = PixelEmbedder().embed([image])
    assert image.mode == "RGB" and embedding.shape == (1, PixelEmbedder().dim)
    if corner is not None:
        assert all(abs(a - b) <= 2 for a, b in zip(image.getpixel((0, 0)), corner, strict=True))
    if inside is not None:
        assert image.getpixel((1, 1)) == inside


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_webdataset_non_object_json_member_is_a_reject_not_a_crash(tmp_path: Path, payload: bytes) -> None:
    members = []
    for i in range(3):
        record = payload if i == 1 else json.dumps(good_record(i)).encode()
        members += [(f"{i:03d}.json", record), (f"{i:03d}.png", png_bytes((i, i, i)))]
    shard = write_wds(tmp_path / "shard-0.tar", members)
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        samples = list(read_corpus(shard, rejects=rejects))
    assert [s.id for s in samples] == ["r0", "r2"]
    (entry,) = read_rejects(tmp_path / "rejects.jsonl")
    assert entry["where"] == "member 001.json" and entry["reason"].startswith("not an object")
