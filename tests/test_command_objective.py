"""The command objective runs a real subprocess per trial; every way it can fail names its reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, TrialContext
from mixatlas.objectives.command import CommandFailed, CommandObjective
from mixatlas.objectives.registry import build_objective
from mixatlas.space import Mixture

TRAINER = """
import json, sys, time
mixture_path, trial_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
weights = json.load(open(mixture_path))["weights"]
print("training on", len(weights), "concepts")
print("warming up", file=sys.stderr)
if mode == "crash":
    print("CUDA out of memory", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
if mode != "silent":
    loss = 1.0 + sum((w - 0.25) ** 2 for row in weights for w in row)
    result = {"metrics": {"val/loss": loss}, "curve": [[0, 2.0], [10, loss]]}
    json.dump(result, open(trial_dir + "/metrics.json", "w"))
"""


@pytest.fixture
def trainer(tmp_path: Path) -> Path:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    return script


@pytest.fixture
def mixture() -> Mixture:
    return Mixture(("a", "b"), ("captioning", "ocr"), np.array([[0.4, 0.1], [0.3, 0.2]]))


def _objective(trainer: Path, mode: str, timeout_s: float | None = None) -> CommandObjective:
    return CommandObjective(
        [sys.executable, str(trainer), "{mixture_json}", "{trial_dir}", mode], timeout_s=timeout_s
    )


def test_command_writes_mixture_and_reads_metrics(tmp_path, trainer, mixture):
    ctx = TrialContext(7, tmp_path / "trial-00007", seed=3)
    result = _objective(trainer, "ok").evaluate(mixture, ctx)
    expected = 1.0 + (0.15**2 + 0.15**2 + 0.05**2 + 0.05**2)
    assert result.metrics["val/loss"] == pytest.approx(expected)
    assert result.curve[-1] == [10.0, pytest.approx(expected)]
    assert result.cost_s is not None and result.cost_s > 0
    assert Mixture.load(ctx.trial_dir / "mixture.json").weights_kt.tolist() == mixture.weights_kt.tolist()
    assert "training on 2 concepts" in (ctx.trial_dir / "stdout.log").read_text()
    assert "warming up" in (ctx.trial_dir / "stderr.log").read_text()


def test_placeholders_are_filled_in_every_argument(tmp_path):
    objective = CommandObjective(["train", "--out={trial_dir}/x", "--id", "{trial_id}", "--seed={seed}"])
    argv = objective.command_for(TrialContext(12, tmp_path / "t", seed=99))
    assert argv == ["train", f"--out={tmp_path / 't'}/x", "--id", "12", "--seed=99"]


def test_nonzero_exit_reports_code_and_last_stderr_line(tmp_path, trainer, mixture):
    with pytest.raises(CommandFailed, match=r"exited with code 3: CUDA out of memory"):
        _objective(trainer, "crash").evaluate(mixture, TrialContext(1, tmp_path / "t1", 0))


def test_timeout_kills_the_command(tmp_path, trainer, mixture):
    with pytest.raises(CommandFailed, match=r"timed out after 1 s"):
        _objective(trainer, "hang", timeout_s=1).evaluate(mixture, TrialContext(2, tmp_path / "t2", 0))


def test_missing_metrics_json_is_a_failure(tmp_path, trainer, mixture):
    with pytest.raises(CommandFailed, match=r"wrote no .*metrics\.json"):
        _objective(trainer, "silent").evaluate(mixture, TrialContext(3, tmp_path / "t3", 0))


def test_stale_metrics_from_an_earlier_attempt_do_not_count(tmp_path, trainer, mixture):
    trial_dir = tmp_path / "t4"
    trial_dir.mkdir()
    Result({"val/loss": 0.0}).save(trial_dir / "metrics.json")
    with pytest.raises(CommandFailed, match="wrote no"):
        _objective(trainer, "silent").evaluate(mixture, TrialContext(4, trial_dir, 0))


def test_bad_metrics_json_names_the_file(tmp_path, mixture):
    script = tmp_path / "bad.py"
    script.write_text(
        "import sys, json; json.dump({'metrics': {'loss': 'high'}}, open(sys.argv[1] + '/metrics.json', 'w'))"
    )
    objective = CommandObjective([sys.executable, str(script), "{trial_dir}"])
    with pytest.raises(MixAtlasError, match=r"metrics\.json: metric 'loss' is not a number"):
        objective.evaluate(mixture, TrialContext(5, tmp_path / "t5", 0))


def test_unknown_program_is_a_failure(tmp_path, mixture):
    objective = CommandObjective(["/nonexistent/trainer-binary"])
    with pytest.raises(CommandFailed, match="cannot start"):
        objective.evaluate(mixture, TrialContext(6, tmp_path / "t6", 0))


def test_registry_builds_command_objective_from_spec(tmp_path, trainer, mixture):
    spec = {"kind": "command", "argv": [sys.executable, str(trainer), "{mixture_json}", "{trial_dir}", "ok"]}
    objective = build_objective(json.loads(json.dumps(spec)))
    result = objective.evaluate(mixture, TrialContext(8, tmp_path / "t8", 0))
    assert "val/loss" in result.metrics
    with pytest.raises(MixAtlasError, match="unknown"):
        build_objective({"kind": "notebook"})
