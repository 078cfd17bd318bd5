"""Experiment tracking: a proxy run logged to MLflow / TensorBoard, read back with each tool's own reader."""

import json
import sys

import pytest
from typer.testing import CliRunner

from mixatlas.atlas import build_atlas
from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.proxy import ProxyConfig
from mixatlas.space import Mixture
from mixatlas.tracking import TrackedRun, log_proxy_run, make_tracker

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


def test_wandb_offline_run(tmp_path):
    pytest.importorskip("wandb", reason="wandb is optional (pip install 'mixatlas[track]')")
    with make_tracker("wandb", "mixatlas-test", tmp_path) as tracker:
        tracker.log(TrackedRun("r", {"task/ocr": 0.5}, {"avg/nll": 1.0}, [[1, 2.0], [2, 1.5]]))
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb 0.31 reads these logs only in its Go core (`wandb sync`); the record keys are stored as bytes.
    data = log.read_bytes()
    assert b"train/loss" in data and b"avg/nll" in data and b"task/ocr" in data


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
