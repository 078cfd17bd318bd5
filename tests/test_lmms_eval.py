"""The lmms-eval objective template: results parsing, command expansion, and a search through user scripts."""

import json
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import TrialContext
from mixatlas.objectives.lmms_eval import LmmsEvalTemplate, eval_argv, parse_results
from mixatlas.objectives.registry import build_objective

# The shape lmms-eval's EvaluationTracker.save_results_aggregated writes to
# OUTPUT_PATH/<model_name_sanitized>/<date_id>_results.json (values made up; keys as lmms-eval writes them).
RESULTS = {
    "results": {
        "chartqa": {"alias": "chartqa", "relaxed_overall,none": 0.6124, "relaxed_overall_stderr,none": 0.0097,
                    "relaxed_human_split,none": 0.4392, "relaxed_human_split_stderr,none": 0.014},
        "docvqa_val": {"alias": "docvqa_val", "anls,none": 0.7321, "anls_stderr,none": 0.0055},
        "ai2d": {"alias": "ai2d", "exact_match,flexible-extract": 0.694,
                 "exact_match_stderr,flexible-extract": "N/A"},
        "mmbench_en_dev": {"alias": "mmbench_en_dev", "gpt_eval_score,none": 71.3, "submission,none": []},
    },
    "groups": {"mmbench": {"alias": "mmbench", " ": " "}},
    "group_subtasks": {"chartqa": [], "docvqa_val": [], "ai2d": [], "mmbench_en_dev": []},
    "configs": {"chartqa": {"task": "chartqa", "dataset_path": "lmms-lab/ChartQA", "test_split": "test"}},
    "versions": {"chartqa": 0.0, "docvqa_val": "Yaml", "ai2d": "Yaml"},
    "n-shot": {"chartqa": 0, "docvqa_val": 0, "ai2d": 0},
    "higher_is_better": {"chartqa": {"relaxed_overall": True}, "docvqa_val": {"anls": True}},
    "n-samples": {"chartqa": {"original": 2500, "effective": 2500}},
    "config": {"model": "llava_onevision", "model_args": "pretrained=ckpt,conv_template=qwen_1_5",
               "batch_size": "1", "limit": None},
    "git_hash": "a1b2c3d",
    "date": "20250101_120000",
    "task_hashes": {},
    "model_source": "llava_onevision",
    "model_name": "ckpt",
    "model_name_sanitized": "ckpt",
    "total_evaluation_time_seconds": "512.3",
}


def test_parse_results_keeps_scores_and_skips_stderr_alias_and_non_numbers():
    metrics = parse_results(RESULTS)
    assert metrics == {
        "chartqa/relaxed_overall": 0.6124,
        "chartqa/relaxed_human_split": 0.4392,
        "docvqa_val/anls": 0.7321,
        "ai2d/exact_match@flexible-extract": 0.694,
        "mmbench_en_dev/gpt_eval_score": 71.3,
    }
    with pytest.raises(MixAtlasError, match='no "results" mapping'):
        parse_results({"config": {}}, "x_results.json")
    with pytest.raises(MixAtlasError, match="no numeric metric"):
        parse_results({"results": {"chartqa": {"alias": "chartqa"}}}, "x_results.json")


def test_template_expands_to_the_documented_lmms_eval_command(tmp_path):
    template = LmmsEvalTemplate(["bash", "train.sh", "{mixture_json}", "{trial_dir}", "{seed}"],
                                ["chartqa", "docvqa_val"])
    spec = template.spec()
    assert LmmsEvalTemplate.from_spec(spec) == template
    objective = build_objective({**spec, "timeout_s": 60})
    argv = objective.command_for(TrialContext(trial_id=3, trial_dir=tmp_path / "t3", seed=9))
    split = argv.index("--")
    trial = tmp_path / "t3"
    assert argv[split + 1 :] == ["bash", "train.sh", str(trial / "mixture.json"), str(trial), "9"]
    assert argv[argv.index("--model-args") + 1] == f"pretrained={tmp_path / 't3'}/checkpoint"
    assert objective.timeout_s == 60
    command = ["python", "-m", "lmms_eval"]
    expanded = eval_argv(command, "llava_onevision", "pretrained=/c", "chartqa,docvqa_val", 1, Path("/t/out"))
    assert expanded == [
        "python", "-m", "lmms_eval", "--model", "llava_onevision", "--model_args", "pretrained=/c",
        "--tasks", "chartqa,docvqa_val", "--batch_size", "1", "--output_path", "/t/out"]
    with pytest.raises(MixAtlasError, match="--lmms-tasks"):
        LmmsEvalTemplate(["python", "train.py"], [])


# The user's side: a trainer that writes a checkpoint and a loss log, and an evaluator standing in for
# lmms-eval (same flags, same results layout); scores depend on the mixture so the search has a signal.
TRAINER = """
import json, sys, pathlib
mixture, trial = json.load(open(sys.argv[1])), pathlib.Path(sys.argv[2])
(trial / "checkpoint").mkdir(parents=True, exist_ok=True)
ocr = sum(row[mixture["tasks"].index("ocr")] for row in mixture["weights"])
(trial / "checkpoint" / "weights.json").write_text(json.dumps({"ocr": ocr}))
with open(trial / "train_log.jsonl", "w") as log:
    for step in range(1, 4):
        log.write(json.dumps({"step": step, "loss": 3.0 / step}) + "\\n")
"""
EVALUATOR = """
import argparse, json, pathlib
parser = argparse.ArgumentParser()
for flag in ("--model", "--model_args", "--tasks", "--batch_size", "--output_path"):
    parser.add_argument(flag, required=True)
args = parser.parse_args()
checkpoint = pathlib.Path(args.model_args.split("pretrained=")[1].split(",")[0])
ocr = json.loads((checkpoint / "weights.json").read_text())["ocr"]
results = {t: {"alias": t, "anls,none": ocr, "anls_stderr,none": 0.01} for t in args.tasks.split(",")}
out = pathlib.Path(args.output_path) / "checkpoint"
out.mkdir(parents=True, exist_ok=True)
(out / "20250101_120000_results.json").write_text(json.dumps({"results": results, "config": {}}))
"""


def test_search_with_the_lmms_eval_objective_runs_train_then_eval(tmp_path, monkeypatch):
    from mixatlas.atlas import Atlas, build_atlas
    from mixatlas.search.study import Study

    (tmp_path / "train.py").write_text(TRAINER)
    (tmp_path / "fake_lmms_eval.py").write_text(EVALUATOR)
    monkeypatch.chdir(tmp_path)
    corpus = _tiny_corpus(tmp_path)
    build_atlas(corpus, tmp_path / "atlas", embedder="pixels", k=2, tasks="field:task", progress=False,
                workers=0)
    assert "ocr" in Atlas.load(tmp_path / "atlas").tasks
    result = CliRunner().invoke(app, [
        "search", "--atlas", "atlas", "--space", "task", "--objective", "lmms-eval",
        "--command", f"{shlex.quote(sys.executable)} train.py {{mixture_json}} {{trial_dir}}",
        "--lmms-tasks", "docvqa_val,infovqa_val",
        "--lmms-eval-command", f"{shlex.quote(sys.executable)} fake_lmms_eval.py",
        "--target", "docvqa_val/anls", "--maximize", "--method", "random", "--budget", "2", "--study", "s.db",
    ])
    assert result.exit_code == 0, result.output
    study = Study.open(tmp_path / "s.db")
    assert study.objective_spec["kind"] == "lmms-eval"
    for trial in study.trials("done"):
        ocr = trial.mixture.task_marginal[list(trial.mixture.tasks).index("ocr")]
        assert trial.value == pytest.approx(ocr)
        assert trial.metrics["infovqa_val/anls"] == pytest.approx(ocr)
        assert trial.curve == [[1.0, 3.0], [2.0, 1.5], [3.0, 1.0]]
    assert study.count("done") == 2


def _tiny_corpus(root: Path) -> Path:
    """12 JSONL samples with a few solid-colour images, OCR and captioning prompts."""
    from PIL import Image

    folder = root / "corpus"
    folder.mkdir()
    lines = []
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 255 - 20 * i, 90)).save(folder / f"{i}.png")
        task = "ocr" if i % 2 else "captioning"
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png", "task": task, "conversations": [
            {"from": "human", "value": "<image>\nWhat does it say?"}, {"from": "gpt", "value": "STOP"}]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder
