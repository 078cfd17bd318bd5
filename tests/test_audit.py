"""`atlas audit`: rules per task, mixed and low-confidence samples, JSON output, the export round trip
(export -> `--tasks map:` reproduces the fixed typing, by source and by image folder) and the HTML
report's task-typing table, on small atlases built from hand-made records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mixatlas.atlas import Atlas, build_atlas
from mixatlas.atlas.audit import audit_atlas, export_map, summary
from mixatlas.atlas.tasks import TaskTyper
from mixatlas.cli import app
from mixatlas.corpus.readers import read_corpus
from mixatlas.corpus.sample import TASKS
from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Result, Target
from mixatlas.objectives.callable import CallableObjective
from mixatlas.report import build_report
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study
from mixatlas.space import Mixture, MixtureSpace


def turns(*pairs: str) -> list[dict]:
    out = []
    for i, text in enumerate(pairs):
        speaker = "human" if i % 2 == 0 else "gpt"
        out.append({"from": speaker, "value": ("<image>\n" if i == 0 else "") + text})
    return out


# file stem (the sample's source) -> records' conversations
RECORDS = {
    # a known corpus: typed by the shipped map, whatever the prompt says
    "textcaps": [turns("Provide a one-sentence caption for the provided image.", "A red sign.")] * 4,
    # a web scrape that is OCR but for one prompt with no cue: the export maps it to OCR
    "webscrape": [turns("What is written on the sign?", "stop")] * 4
    + [turns("Read all the text in the image.", "OPEN")] * 3 + [turns("The sign", "stop")],
    # mixed data: a multi-turn sample (VQA then grounding turns) and plain questions
    "mixed": [turns("What color is the car?", "red", "Where is the car? Give its bounding box.",
                    "[0.1, 0.2, 0.5, 0.6]", "How many wheels?", "4")]
    + [turns("Is it raining?", "no")] * 3 + [turns("Describe this image.", "A street.")] * 2,
}


@pytest.fixture(scope="module")
def corpus(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit_corpus")
    (root / "images").mkdir()
    index = 0
    for stem, conversations in RECORDS.items():
        with (root / f"{stem}.jsonl").open("w") as fh:
            for conversation in conversations:
                name = f"{index:07d}.png"
                shutil.copy(synth_corpus / "images" / name, root / "images" / name)
                fh.write(json.dumps({"id": f"{stem}-{index}", "image": f"images/{name}",
                                     "conversations": conversation}) + "\n")
                index += 1
    return root


@pytest.fixture(scope="module")
def atlas(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    out = tmp_path_factory.mktemp("audit_atlas") / "A"
    return build_atlas(corpus, out, embedder="pixels", k=2, workers=0, progress=False)


def test_audit_counts_rules_mixed_and_low_confidence(atlas: Atlas) -> None:
    report = audit_atlas(atlas.dir, n=5)
    assert report.n_samples == 18 and not report.retyped
    assert report.tasks["captioning"].rules == {"known:source:textcaps": 4, "caption-intent": 2}
    assert report.tasks["ocr"].rules == {"ocr-intent": 7}
    assert report.tasks["vqa"].rules == {"question": 4, "default": 1}
    # the 3-turn sample: 2 VQA turns beat 1 grounding turn; its mix is kept and it is listed as mixed
    assert report.tasks["vqa"].mixed == 1
    assert [item["mix"] for item in report.mixed] == ["vqa:2 grounding:1"]
    assert [item["prompt"] for item in report.low_confidence] == ["The sign"]
    assert report.tasks["vqa"].low_confidence == 1
    assert set(report.tasks["vqa"].examples["question"]) <= {"Is it raining?", "What color is the car?"}
    assert len(report.tasks["vqa"].examples["question"]) == 3  # at most min(n, 3) per rule
    assert dict(report.sources["webscrape"]) == {"ocr": 7, "vqa": 1}
    rows = {row["task"]: row for row in summary(report)}  # the HTML report's table
    assert rows["vqa"] == {"task": "vqa", "samples": 5, "share": 5 / 18, "rules": "question 4, default 1",
                           "mixed": 1, "low_confidence": 1}


def test_audit_cli_json_and_table(atlas: Atlas) -> None:
    run = CliRunner().invoke(app, ["atlas", "audit", str(atlas.dir), "--json", "--task", "vqa", "--n", "2"])
    assert run.exit_code == 0, run.output
    data = json.loads(run.stdout)
    assert set(data["tasks"]) == {"vqa"} and data["tasks"]["vqa"]["n"] == 5
    assert data["source_map"]["webscrape"] == {"task": "ocr", "share": 0.875, "n": 8, "mapped": False}
    run = CliRunner().invoke(app, ["atlas", "audit", str(atlas.dir)])
    assert run.exit_code == 0, run.output
    shown = ("captioning: 6 samples", "known:source:textcaps", "low-confidence samples", "vqa:2 grounding:1",
             "no samples: grounding, detection")
    for text in shown:
        assert text in run.stdout
    assert "grounding: 0 samples" not in run.stdout and "detection: 0 samples" not in run.stdout
    one = CliRunner().invoke(app, ["atlas", "audit", str(atlas.dir), "--task", "detection"])
    assert one.exit_code == 0 and "no samples: detection" in one.stdout and "rule" not in one.stdout
    bad = CliRunner().invoke(app, ["atlas", "audit", str(atlas.dir), "--task", "segmentation"])
    assert isinstance(bad.exception, MixAtlasError)  # main() prints it as one line, exit 2
    assert str(bad.exception).startswith("--task segmentation: unknown task; use one of captioning")


def test_export_round_trip_reproduces_the_fixed_typing(atlas: Atlas, corpus: Path, tmp_path: Path) -> None:
    report = audit_atlas(atlas.dir)
    exported = tmp_path / "fix.yaml"
    mapped = export_map(report, exported, min_share=0.8)
    # mixed (vqa 67%) stays with rules; the one image folder holds every task: left to rules
    assert mapped == {"sources": {"textcaps": "captioning", "webscrape": "ocr"}, "images": {}}
    assert "# mixed: vqa" in exported.read_text() and "left to rules" in exported.read_text()
    # the fix: every webscrape sample becomes OCR, everything else keeps its atlas typing
    before = dict(zip(atlas.table()["id"].to_pylist(), atlas.table()["task"].to_pylist(), strict=True))
    expected = {key: "ocr" if key.startswith("webscrape") else task for key, task in before.items()}
    typer = TaskTyper.from_spec(f"map:{exported}")
    assert {s.id: typer.task_of(s) for s in read_corpus(corpus)} == expected
    rebuilt = build_atlas(corpus, tmp_path / "B", embedder="pixels", k=2, workers=0, progress=False,
                          tasks=f"map:{exported}")
    table = rebuilt.table()
    assert dict(zip(table["id"].to_pylist(), table["task"].to_pylist(), strict=True)) == expected
    assert set(audit_atlas(rebuilt.dir).tasks["ocr"].rules) == {"map:source:webscrape"}


def test_an_atlas_without_rule_columns_is_retyped(atlas: Atlas, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(atlas.dir, old)
    table = pq.read_table(old / "samples.parquet").drop_columns(["task_rule", "task_mix"])
    pq.write_table(table, old / "samples.parquet")
    report = audit_atlas(old)
    assert report.retyped
    assert report.tasks["ocr"].rules == audit_atlas(atlas.dir).tasks["ocr"].rules


@pytest.fixture(scope="module")
def one_file_corpus(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The records above in one file (`mix.jsonl`: one source, as LLaVA-1.5's mix is), each former source's
    images in its own folder under `data/`."""
    root = tmp_path_factory.mktemp("one_file_corpus")
    folders = {"textcaps": "captions/imgs", "webscrape": "scans/pages", "mixed": "photos/train"}
    index = 0
    with (root / "mix.jsonl").open("w") as fh:
        for stem, conversations in RECORDS.items():
            (root / "data" / folders[stem]).mkdir(parents=True)
            for conversation in conversations:
                name = f"{folders[stem]}/{index:07d}.png"
                shutil.copy(synth_corpus / "images" / f"{index:07d}.png", root / "data" / name)
                fh.write(json.dumps({"id": f"{stem}-{index}", "image": f"data/{name}",
                                     "conversations": conversation}) + "\n")
                index += 1
    return root


def test_export_maps_image_folders_of_a_one_file_corpus(one_file_corpus: Path, tmp_path: Path) -> None:
    atlas = build_atlas(one_file_corpus, tmp_path / "A", embedder="pixels", k=2, workers=0, progress=False)
    report = audit_atlas(atlas.dir)
    assert dict(report.sources["mix"]) == {"ocr": 7, "captioning": 6, "vqa": 5}
    exported = tmp_path / "fix.yaml"
    mapped = export_map(report, exported, min_share=0.8)
    # the one source is mixed; two of its three folders are one task (>= 80%), the photos are not (67%)
    assert mapped == {"sources": {}, "images": {"captions/imgs": "captioning", "scans/pages": "ocr"}}
    text = exported.read_text()
    assert "\nimages:\n" in text and "# photos/train: vqa  # 67% of 6, mixed: left to rules" in text
    # --json shows the folders at the default share (90%)
    assert report.to_json()["folder_map"]["scans/pages"] == {"task": "ocr", "share": 0.875, "n": 8,
                                                              "mapped": False}
    # the round trip: the scans' one untyped prompt becomes OCR, every other sample keeps its typing
    table = atlas.table()
    before = dict(zip(table["id"].to_pylist(), table["task"].to_pylist(), strict=True))
    expected = {key: "ocr" if key.startswith("webscrape") else task for key, task in before.items()}
    assert expected != before
    typer = TaskTyper.from_spec(f"map:{exported}")
    assert {s.id: typer.task_of(s) for s in read_corpus(one_file_corpus)} == expected
    rebuilt = build_atlas(one_file_corpus, tmp_path / "B", embedder="pixels", k=2, workers=0, progress=False,
                          tasks=f"map:{exported}")
    table = rebuilt.table()
    assert dict(zip(table["id"].to_pylist(), table["task"].to_pylist(), strict=True)) == expected
    audit = audit_atlas(rebuilt.dir)
    assert audit.tasks["ocr"].rules == {"map:image:scans/pages": 8}
    assert audit.tasks["captioning"].rules == {"map:image:captions/imgs": 4, "caption-intent": 2}


def captioning_weight(mixture: Mixture) -> Result:
    return Result(metrics={"loss": float(mixture.weights_kt[:, 0].sum())})


def test_the_html_report_shows_the_task_typing_table(atlas: Atlas, tmp_path: Path) -> None:
    path = tmp_path / "task-random" / "study.db"
    space = MixtureSpace(("a", "b"), TASKS, np.arange(10.0, 20.0).reshape(2, 5), mode="task")
    study = Study.create(path, space=space, objective_spec={"kind": "callable"},
                         target=Target.parse("loss", minimize=True), method="random", budget=2, seed=0)
    with make_executor("local", parallel=1, folder=tmp_path) as executor:
        run_search(study, CallableObjective(captioning_weight), executor, progress=False)
    study.close()
    page = build_report([path], tmp_path / "report", atlas=atlas.dir).read_text()
    section = page[page.index("<h2>Task typing</h2>"):]
    table = section[:section.index("</table>")]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    rows = [row for row in rows if row]  # the header row has <th> cells
    assert rows == [
        ["captioning", "6", "33.3%", "known:source:textcaps 4, caption-intent 2", "0", "0"],
        ["ocr", "7", "38.9%", "ocr-intent 7", "0", "0"],
        ["grounding", "0", "0.0%", "", "0", "0"],
        ["detection", "0", "0.0%", "", "0", "0"],
        ["vqa", "5", "27.8%", "question 4, default 1", "1", "1"],
    ]
