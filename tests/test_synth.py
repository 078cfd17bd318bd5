"""The synthetic corpus: layout, truth of answers (boxes, OCR text, values), determinism, held-out sets."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from mixatlas.cli import app
from mixatlas.corpus.readers import read_corpus
from mixatlas.corpus.sample import TASKS
from mixatlas.corpus.synth import BENCHMARKS, DOMAINS, synthesize
from mixatlas.corpus.synth.canvas import word_gap

BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\]")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pixels(folder: Path, record: dict) -> np.ndarray:
    return np.asarray(Image.open(folder / record["image"]).convert("RGB"))


def all_records(corpus: Path) -> list[tuple[Path, dict]]:
    rows = [(corpus, r) for r in records(corpus / "train.jsonl")]
    for name in BENCHMARKS:
        rows += [(corpus / "eval", r) for r in records(corpus / "eval" / f"{name}.jsonl")]
    return rows


def test_manifest_layout_and_balanced_cells(synth_corpus: Path) -> None:
    manifest = json.loads((synth_corpus / "synth.json").read_text())
    assert len(manifest["domains"]) == 8 and manifest["tasks"] == list(TASKS)
    assert manifest["seed"] == 7 and manifest["samples"] == 600 and "0-1000" in manifest["box_format"]
    assert len(manifest["benchmarks"]) >= 6
    for name, bench in manifest["benchmarks"].items():
        assert (
            bench["domain"] in manifest["domains"]
            and bench["task"] in TASKS
            and "nll" in bench["metric_kinds"]
        )
        rows = records(synth_corpus / bench["file"])
        assert len(rows) == 20
        assert {(r["meta"]["domain"], r["meta"]["task"]) for r in rows} == {(bench["domain"], bench["task"])}
        assert all(r["id"].startswith(name) for r in rows)
    train = records(synth_corpus / "train.jsonl")
    cells = Counter((r["meta"]["domain"], r["meta"]["task"]) for r in train)
    assert len(cells) == 40 and set(cells.values()) == {15}
    assert all((synth_corpus / r["image"]).is_file() and r["image"].startswith("images/") for r in train)
    assert (
        max(len(r["conversations"][1]["value"].split()) for r in train if r["meta"]["task"] != "detection")
        < 40
    )


def test_reader_yields_the_training_set_of_a_synth_folder(synth_corpus: Path) -> None:
    samples = list(read_corpus(synth_corpus))
    assert len(samples) == 600 and samples[0].source == "train"
    assert Image.open(samples[-1].image).size == (128, 128)


def test_boxes_contain_their_objects(synth_corpus: Path) -> None:
    checked = 0
    for folder, record in all_records(synth_corpus):
        meta, answer = record["meta"], record["conversations"][1]["value"]
        if meta["task"] not in ("grounding", "detection"):
            continue
        boxes = [tuple(int(v) for v in m) for m in BOX.findall(answer)]
        if meta["task"] == "grounding":
            assert boxes == [tuple(meta["ref_box"])]
            targets = [
                o for o in meta["objects"] if o["box"] == meta["ref_box"] and o["label"] == meta["ref_label"]
            ]
        else:
            assert sorted(boxes) == sorted(tuple(o["box"]) for o in meta["objects"]) and len(boxes) >= 1
            assert [label.strip() for label in re.findall(r"(?:^|; )([^\[;]+) \[", answer)] == [
                o["label"] for o in sorted(meta["objects"], key=lambda o: (o["box"][0], o["box"][1]))
            ]
            targets = meta["objects"]
        image = pixels(folder, record)
        for obj in targets:
            x1, y1, x2, y2 = (round(v * 128 / 1000) for v in obj["box"])
            crop = image[y1:y2, x1:x2].reshape(-1, 3)
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            own_color = np.all(crop == obj["color"], axis=1).sum()
            assert own_color >= max(4, 0.01 * len(crop)), (record["id"], obj)
            if meta["background"] is not None:
                not_background = np.any(crop != meta["background"], axis=1).mean()
                assert not_background >= 0.1, (record["id"], obj)
            checked += 1
    assert checked > 500


def test_ocr_answers_are_exactly_the_rendered_text(synth_corpus: Path) -> None:
    glyphs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def word_pixels(word: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) of the pixels plain Pillow inks for `word` drawn at the origin, unantialiased."""
        if (word, size) not in glyphs:
            canvas = Image.new("L", (256, 64), 0)
            draw = ImageDraw.Draw(canvas)
            draw.fontmode = "1"
            draw.text((0, 0), word, fill=255, font=ImageFont.load_default(size))
            glyphs[word, size] = np.nonzero(np.asarray(canvas) == 255)
        return glyphs[word, size]

    for folder, record in all_records(synth_corpus):
        meta = record["meta"]
        words = [w for item in meta["texts"] for w in item[0].split()]
        assert meta["ocr_text"].split() == words
        if meta["task"] == "ocr":
            assert record["conversations"][1]["value"] == meta["ocr_text"]
        image = pixels(folder, record)
        for text, x, y, size, fill in meta["texts"]:
            for word in text.split():  # words follow each other `word_gap` px after the previous ink
                ys, xs = word_pixels(word, size)
                assert len(xs) > 0
                assert np.all(image[ys + y, xs + x] == fill), (record["id"], word)
                x += int(xs.max()) + 1 + word_gap(size)


def test_vqa_answers_match_the_drawn_values(synth_corpus: Path) -> None:
    checked = 0
    for _, record in all_records(synth_corpus):
        meta = record["meta"]
        if meta["task"] != "vqa":
            continue
        question, answer = meta["question"], meta["answer"]
        assert (
            record["conversations"][1]["value"] == answer and question in record["conversations"][0]["value"]
        )
        truth = meta["truth"]
        if match := re.fullmatch(r"What is the value of (\w+)\?", question):
            assert answer == str(truth["values"][match.group(1)])
            checked += 1
        elif match := re.fullmatch(r"Which node does (\w+) point to\?", question):
            assert [match.group(1), answer] in truth["edges"]
            checked += 1
        elif question == "How many nodes are in the diagram?":
            assert answer == str(len(truth["labels"]))
            checked += 1
    assert checked >= 5


def test_eval_sets_never_overlap_train(synth_corpus: Path) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha1(Image.open(path).convert("RGB").tobytes()).hexdigest()

    train = records(synth_corpus / "train.jsonl")
    train_ids = {r["id"] for r in train}
    train_images = {digest(synth_corpus / r["image"]) for r in train}
    for name in BENCHMARKS:
        rows = records(synth_corpus / "eval" / f"{name}.jsonl")
        assert not train_ids & {r["id"] for r in rows}
        assert not train_images & {digest(synth_corpus / "eval" / r["image"]) for r in rows}


def test_output_is_a_pure_function_of_the_seed(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", 48, seed=5, eval_per_benchmark=2)
    two = synthesize(tmp_path / "two", 48, seed=5, eval_per_benchmark=2, workers=2)
    other = synthesize(tmp_path / "other", 48, seed=6, eval_per_benchmark=2)
    assert one == two and one["seed"] == 5 and other["seed"] == 6

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = tree(tmp_path / "one")
    assert first == tree(tmp_path / "two")
    assert first["train.jsonl"] != tree(tmp_path / "other")["train.jsonl"]
    assert len([k for k in first if k.endswith(".png")]) == 48 + 2 * len(BENCHMARKS)


def test_domains_look_different(synth_corpus: Path) -> None:
    """Mean colour per domain differs clearly, the cue weight-free descriptors cluster on."""
    means: dict[str, list[np.ndarray]] = {d: [] for d in DOMAINS}
    for record in records(synth_corpus / "train.jsonl")[:240]:
        means[record["meta"]["domain"]].append(pixels(synth_corpus, record).reshape(-1, 3).mean(axis=0))
    centres = {d: np.mean(v, axis=0) for d, v in means.items()}
    names = list(centres)
    gaps = [np.linalg.norm(centres[a] - centres[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    assert min(gaps) > 10


def test_cli_synth_writes_the_corpus(tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = CliRunner().invoke(
        app, ["synth", str(out), "--samples", "12", "--seed", "3", "--eval-per-benchmark", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (
        len(records(out / "train.jsonl")) == 12 and json.loads((out / "synth.json").read_text())["seed"] == 3
    )
    failed = subprocess.run(
        [sys.executable, "-c", "from mixatlas.cli import main; main()", "synth", str(out), "--samples", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 2 and failed.stderr.strip().startswith("error: --samples")
    assert "Traceback" not in failed.stderr


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_domain_renders_every_task(domain: str, synth_corpus: Path) -> None:
    rows = [r for r in records(synth_corpus / "train.jsonl") if r["meta"]["domain"] == domain]
    assert {r["meta"]["task"] for r in rows} == set(TASKS)
    assert all(r["conversations"][1]["value"].strip() for r in rows)
