"""Experiment tracking: send proxy runs and study trials to MLflow, TensorBoard or Weights & Biases.

None of the three is needed to run MixAtlas; each is imported only when asked for (`pip install
'mixatlas[track]'`). A run is logged whole once it is finished (params, final metrics, the loss curve
by step), so a tracker never holds half a run, and a killed search loses nothing it had logged.

Where runs go (`uri`):
  mlflow       an MLflow tracking URI, or a folder (runs go to FOLDER/mlflow.db, a local SQLite store:
               no server); default: $MLFLOW_TRACKING_URI, else ./mlflow.db (MLflow's own default).
  tensorboard  a log folder (default ./tensorboard); one sub-folder per experiment/run.
  wandb        a folder for offline runs (default .; W&B writes ./wandb/offline-run-*); `wandb sync` uploads.
"""

from __future__ import annotations

import json
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.space import Mixture

TRACKERS = ("mlflow", "tensorboard", "wandb")
LOSS_KEY = "train/loss"
# The run tag that carries a trial's state, and the state of a failed attempt: `TrialState.FAILED`'s
# stored text (the search stage sits above tracking, so the enum cannot be imported here).
STATE_TAG = "state"
FAILED_STATE = "failed"
_PIP = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}
# MLflow log_batch limits: 1000 metrics and 100 params per call.
_MLFLOW_METRICS_PER_CALL = 1000
_MLFLOW_PARAMS_PER_CALL = 100


@dataclass
class TrackedRun:
    """One finished run as plain data.

    Attributes:
        name: run name shown by the tracker ("trial-00003", a proxy run folder's name).
        params: inputs (config fields, mixture weights), values are str or numbers.
        metrics: final metrics, e.g. {"chart-vqa/nll": 1.2}.
        curve: training loss by step, [[step, loss], ...].
        tags: free-form labels (study path, trial state, method).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        return int(self.curve[-1][0]) if self.curve else 0

    @property
    def failed(self) -> bool:
        """Whether the run is a failed attempt (its state tag says so)."""
        return self.tags.get(STATE_TAG) == FAILED_STATE


def mixture_params(mixture: Mixture) -> dict[str, float]:
    """A mixture as flat params: `task/<t>` and `concept/<c>` marginals plus `cell/<c>/<t>` weights."""
    params: dict[str, float] = {}
    for name, weight in zip(mixture.tasks, mixture.task_marginal, strict=True):
        params[f"task/{name}"] = round(float(weight), 6)
    for name, weight in zip(mixture.concepts, mixture.concept_marginal, strict=True):
        params[f"concept/{name}"] = round(float(weight), 6)
    for i, concept in enumerate(mixture.concepts):
        for j, task in enumerate(mixture.tasks):
            params[f"cell/{concept}/{task}"] = round(float(mixture.weights_kt[i, j]), 6)
    return params


def flatten_params(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config dicts -> `a.b` keys; lists and None become strings (what trackers accept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def log_proxy_run(kind: str, uri: str | Path | None, run_dir: Path, config: dict, mixture: Mixture,
                  metrics: dict[str, float], curve: list[list[float]]) -> str:
    """Log one finished `proxy train` run (experiment "mixatlas-proxy", run named after its folder);
    returns where it went."""
    params = {**flatten_params(config, "proxy."), **mixture_params(mixture)}
    run = TrackedRun(name=Path(run_dir).name, params=params, metrics=dict(metrics),
                     curve=[list(point) for point in curve],
                     tags={"run_dir": str(Path(run_dir).resolve()), "source": "mixatlas proxy train"})
    with make_tracker(kind, "mixatlas-proxy", uri) as tracker:
        tracker.log(run)
        return tracker.location


class Tracker(ABC):
    """Logs finished runs into one experiment of one tracking tool."""

    kind: str
    location: str  # where runs go: a URI or a folder

    @abstractmethod
    def log(self, run: TrackedRun) -> None:
        """Write one finished run (params, metrics, curve, tags)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most trackers hold nothing open
        """Flush and release what the tracker holds."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_tracker(kind: str, experiment: str, uri: str | Path | None = None) -> Tracker:
    """The tracker of `kind` (one of TRACKERS) logging into `experiment`; see the module doc for `uri`."""
    if kind not in TRACKERS:
        raise MixAtlasError(f"--track {kind}: unknown tracker; use one of {', '.join(TRACKERS)}")
    experiment = experiment or "mixatlas"
    if kind == "mlflow":
        return MlflowTracker(experiment, uri)
    if kind == "tensorboard":
        return TensorBoardTracker(experiment, uri)
    return WandbTracker(experiment, uri)


def _require(kind: str, module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MixAtlasError(
            f"--track {kind}: the {kind} package is not installed; pip install {_PIP[kind]} "
            "(or pip install 'mixatlas[track]')"
        ) from None


def mlflow_uri(uri: str | Path | None) -> str:
    """An MLflow tracking URI: as given when it has a scheme, a folder -> FOLDER/mlflow.db (SQLite)."""
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or Path("mlflow.db").resolve()
        if isinstance(uri, str):
            return uri
        return f"sqlite:///{uri}"
    text = str(uri)
    if re.match(r"^[a-z][a-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:\\", text):
        return text
    path = Path(text).expanduser().resolve()
    if path.suffix != ".db":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "mlflow.db"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class MlflowTracker(Tracker):
    """MLflow through `MlflowClient` (no global active run): one MLflow run per `TrackedRun`."""

    kind = "mlflow"

    def __init__(self, experiment: str, uri: str | Path | None = None) -> None:
        _require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self.location = mlflow_uri(uri)
        self.client = MlflowClient(tracking_uri=self.location)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    def log(self, run: TrackedRun) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        created = self.client.create_run(self.experiment_id, run_name=run.name, tags=dict(run.tags))
        run_id = created.info.run_id
        metrics = [Metric(LOSS_KEY, float(loss), now, int(step)) for step, loss in run.curve]
        step = run.last_step
        metrics += [Metric(_mlflow_key(name), float(v), now, step) for name, v in run.metrics.items()]
        params = [Param(_mlflow_key(name), str(value)[:6000]) for name, value in run.params.items()]
        for start in range(0, max(len(metrics), 1), _MLFLOW_METRICS_PER_CALL):
            self.client.log_batch(run_id, metrics=metrics[start : start + _MLFLOW_METRICS_PER_CALL])
        for start in range(0, len(params), _MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(run_id, params=params[start : start + _MLFLOW_PARAMS_PER_CALL])
        status = "FAILED" if run.failed else "FINISHED"
        self.client.set_terminated(run_id, status=status)


def _mlflow_key(name: str) -> str:
    """MLflow keys allow alphanumerics, `_ - . space / :`; anything else becomes `_`."""
    return re.sub(r"[^\w\-. /:]", "_", name)


class TensorBoardTracker(Tracker):
    """TensorBoard event files via `torch.utils.tensorboard.SummaryWriter`: LOG_DIR/EXPERIMENT/RUN/.

    The curve is the `train/loss` scalar by step; final metrics are scalars at the last step and, with
    the params, one row of the HParams dashboard (so trials compare side by side).
    """

    kind = "tensorboard"

    def __init__(self, experiment: str, uri: str | Path | None = None) -> None:
        _require("tensorboard", "tensorboard")
        self.root = Path(uri or "tensorboard").expanduser().resolve() / _safe_name(experiment)
        self.location = str(self.root)

    def log(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.root / _safe_name(run.name)))
        try:
            for step, loss in run.curve:
                writer.add_scalar(LOSS_KEY, float(loss), int(step))
            for name, value in run.metrics.items():
                writer.add_scalar(name, float(value), run.last_step)
            if run.tags:
                writer.add_text("tags", json.dumps(run.tags), run.last_step)
            hparams = {k: v for k, v in run.params.items() if isinstance(v, int | float | str)}
            if hparams:
                writer.add_hparams(hparams, {f"hparam/{k}": float(v) for k, v in run.metrics.items()},
                                   run_name=".")
        finally:
            writer.close()


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"


class WandbTracker(Tracker):
    """Weights & Biases in offline mode: nothing leaves the machine until `wandb sync DIR/wandb/...`."""

    kind = "wandb"

    def __init__(self, experiment: str, uri: str | Path | None = None) -> None:
        self.wandb = _require("wandb", "wandb")
        self.project = _safe_name(experiment)
        self.dir = Path(uri or ".").expanduser().resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.location = str(self.dir / "wandb")

    def log(self, run: TrackedRun) -> None:
        handle = self.wandb.init(project=self.project, name=run.name, dir=str(self.dir), mode="offline",
                                 config=dict(run.params), tags=[f"{k}={v}"[:64] for k, v in run.tags.items()],
                                 reinit="create_new")
        try:
            for step, loss in run.curve:
                handle.log({LOSS_KEY: float(loss)}, step=int(step))
            handle.summary.update({name: float(value) for name, value in run.metrics.items()})
        finally:
            handle.finish(exit_code=1 if run.failed else 0)

    def close(self) -> None:
        """Wait until W&B's service has written every run (it writes the offline logs asynchronously)."""
        self.wandb.teardown()
