"""Experiment tracking: a proxy run logged to MLflow / TensorBoard, search trials to MLflow and W&B (offline),
each read back with the tool's own reader (W&B: its record schema)."""

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import run_mixatlas
from mixatlas.atlas import build_atlas
from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.proxy import ProxyConfig
from mixatlas.space import Mixture
from mixatlas.tracking import log_proxy_run, make_tracker

FAST = {"batch_size": 8, "eval_samples": 3, "eval_batch_size": 8, "warmup_steps": 2, "eval_generate": False}


@pytest.fixture(scope="module")
def proxy_run(synth_corpus, tmp_path_factory):
    """One `mixatlas proxy train --track mlflow` run: (run folder, MLflow folder)."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("tracked")
    build_atlas(synth_corpus, root / "atlas", embedder="pixels", k=3, progress=False)
    config = root / "proxy.yaml"
    ProxyConfig(**FAST).to_yaml(config)
    out, store = root / "run-a", root / "mlruns"
    result = CliRunner().invoke(app, [
        "proxy", "train", "--atlas", str(root / "atlas"), "--mixture", "natural", "--out", str(out),
        "--config", str(config), "--steps", "4", "--track", "mlflow", "--track-uri", str(store),
    ])
    assert result.exit_code == 0, result.output
    return out, store


def test_proxy_run_reads_back_from_mlflow(proxy_run):
    from mlflow.tracking import MlflowClient

    out, store = proxy_run
    saved = Result.load(out / "metrics.json")
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mixatlas-proxy")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == [int(step) for step, _ in saved.curve]
    assert [m.value for m in history] == pytest.approx([loss for _, loss in saved.curve])
    assert run.data.metrics["avg/nll"] == pytest.approx(saved.metrics["avg/nll"])
    mixture = Mixture.load(out / "mixture.json")
    first_task = float(run.data.params[f"task/{mixture.tasks[0]}"])
    assert first_task == pytest.approx(mixture.task_marginal[0], abs=1e-6)
    assert run.data.params["proxy.steps"] == "4"


def test_proxy_run_reads_back_from_tensorboard(proxy_run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = proxy_run
    saved = Result.load(out / "metrics.json")
    config = json.loads(json.dumps(ProxyConfig.from_yaml(out / "proxy.yaml").model_dump(mode="json")))
    where = log_proxy_run("tensorboard", tmp_path / "tb", out, config, Mixture.load(out / "mixture.json"),
                          saved.metrics, saved.curve)
    events = EventAccumulator(str(tmp_path / "tb" / "mixatlas-proxy" / "run-a"))
    events.Reload()
    assert where == str(tmp_path / "tb" / "mixatlas-proxy")
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [int(step) for step, _ in saved.curve]
    assert [e.value for e in scalars] == pytest.approx([loss for _, loss in saved.curve], rel=1e-6)
    assert events.Scalars("avg/nll")[-1].value == pytest.approx(saved.metrics["avg/nll"], rel=1e-6)


# The W&B test's trainer (command objective): a loss curve per trial; trial 1 fails, retried as trial 2.
WANDB_TRAINER = """
import json, sys
from pathlib import Path
mixture_json, trial_dir, trial_id = sys.argv[1:]
if trial_id == "1":
    sys.exit("diverged")
loss = 1.0 + int(trial_id) / 10
curve = [[1, 3.0], [2, 2.0 + int(trial_id) / 10], [4, loss]]
Path(trial_dir, "metrics.json").write_text(json.dumps({"metrics": {"loss": loss}, "curve": curve}))
"""


def read_wandb_log(path: Path) -> list:
    """The records of one offline `run-*.wandb` log, decoded with W&B's own protobuf schema.

    The log is a LevelDB-style record log after a 7-byte `:W&B` header: 32 KiB blocks of chunks, each
    `crc32 (u32) | length (u16) | type (u8)` then the bytes; types full=1, first=2, middle=3, last=4
    (wandb 0.31 reads it only in its Go core, `wandb sync`, so the test reads it here)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"{path}: bad chunk at {pos}"
        pos += 7 + length
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_key(item: object) -> str:
    """A history / summary item's key: `key`, or its `nested_key` parts (wandb 0.31's history uses those)."""
    return item.key or "/".join(item.nested_key)


def test_search_logs_every_trial_to_wandb_offline(pixels_atlas, tmp_path, monkeypatch):
    """`mixatlas search ... --track wandb --track-uri runs`: one offline W&B run per attempt, read back."""
    pytest.importorskip("wandb", reason="wandb is optional (pip install 'mixatlas[track]')")
    from mixatlas.search.study import Study, TrialState

    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing in the home folder
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    shutil.copytree(pixels_atlas, tmp_path / "atlas")
    (tmp_path / "train.py").write_text(WANDB_TRAINER)
    run = run_mixatlas("search", "--atlas", "atlas", "--space", "task", "--objective", "command", "--command",
                       f"{sys.executable} train.py {{mixture_json}} {{trial_dir}} {{trial_id}}", "--target",
                       "loss", "--minimize", "--method", "random", "--budget", "1", "--study", "s.db",
                       "--track", "wandb", "--track-uri", "runs", cwd=tmp_path)
    assert run.code == 0, run.err
    study = Study.open(tmp_path / "s.db", read_only=True)
    trials = {f"trial-{t.id:05d}": t for t in study.trials()}
    study.close()
    assert [t.state for t in trials.values()] == [TrialState.FAILED, TrialState.DONE]
    logged = {}
    for log in (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"):
        records = read_wandb_log(log)
        (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        logged[info.display_name] = (info, records)
    assert sorted(logged) == sorted(trials)
    for name, trial in trials.items():
        info, records = logged[name]
        kinds = {kind: [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]
                 for kind in ("history", "summary", "exit")}
        config = {item.key: json.loads(item.value_json) for item in info.config.update}
        weights = [config[f"task/{task}"] for task in trial.mixture.tasks]
        assert info.project == "s" and f"state={trial.state}" in info.tags
        assert weights == pytest.approx(list(trial.mixture.task_marginal), abs=1e-6)
        (exit_record,) = kinds["exit"]
        if trial.state == TrialState.FAILED:
            assert exit_record.exit_code == 1 and not kinds["history"]
            assert any(tag.startswith("error=") and "diverged" in tag for tag in info.tags), info.tags
            continue
        assert exit_record.exit_code == 0
        curve = [(h.step.num, json.loads(item.value_json)) for h in kinds["history"] for item in h.item
                 if _wandb_key(item) == "train/loss"]
        assert curve == [(1, 3.0), (2, pytest.approx(2.0 + trial.id / 10)), (4, pytest.approx(trial.value))]
        summary = {_wandb_key(item): json.loads(item.value_json) for record in kinds["summary"]
                   for item in record.update}
        assert summary["target"] == pytest.approx(trial.value) == pytest.approx(1.0 + trial.id / 10)


def test_missing_tracker_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` does when it is not installed
    with pytest.raises(MixAtlasError, match=r"pip install wandb"):
        make_tracker("wandb", "x")
    with pytest.raises(MixAtlasError, match=r"--track comet: unknown tracker"):
        make_tracker("comet", "x")


def test_search_logs_every_trial_to_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from mixatlas.search.study import Study

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["search", "--synthetic", "task", "--method", "random", "--budget", "3",
                                      "--study", "s.db", "--track", "mlflow", "--track-uri", "mlruns"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    study = Study.open(tmp_path / "s.db")
    logged = {run.info.run_name: run for run in runs}
    assert sorted(logged) == [f"trial-{trial.id:05d}" for trial in study.trials()]
    for trial in study.trials("done"):
        run = logged[f"trial-{trial.id:05d}"]
        assert run.data.metrics["target"] == pytest.approx(trial.value)
        assert run.data.tags["state"] == "done"
        weights = [float(v) for k, v in run.data.params.items() if k.startswith("task/")]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
