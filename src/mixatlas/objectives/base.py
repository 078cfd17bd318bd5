"""The objective protocol, its result, and the target a study optimizes.

Everything here is plain data so it can cross process/machine boundaries (Ray, Slurm, subprocess).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.space import Mixture


@dataclass
class TrialContext:
    """Where and as what a trial runs: its id, its own folder (created by the loop) and its seed; in a
    multi-fidelity search also the fidelity name to run at (None: a single-fidelity search)."""

    trial_id: int
    trial_dir: Path
    seed: int
    fidelity: str | None = None


@dataclass
class Result:
    """What an objective returns: the `metrics.json` contract.

    `metrics` maps names such as "chart-vqa/nll" to floats; `curve` is [[step, loss], ...];
    `cost_s` the wall time the evaluation took; `cost` optional throughput figures (the proxy's tokens/s,
    model TFLOP/s, MFU: see `objectives.proxy.cost`).
    """

    metrics: dict[str, float]
    curve: list[list[float]] = field(default_factory=list)
    cost_s: float | None = None
    cost: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {"metrics": self.metrics, "curve": self.curve, "cost_s": self.cost_s}
        return data | ({"cost": self.cost} if self.cost else {})

    @classmethod
    def from_dict(cls, data: dict, origin: str = "metrics.json") -> Result:
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise MixAtlasError(f'{origin}: expected {{"metrics": {{name: value}}, "curve": [[step, loss]]}}')
        metrics = {}
        for name, value in data["metrics"].items():
            try:
                metrics[str(name)] = float(value)
            except (TypeError, ValueError):
                raise MixAtlasError(f"{origin}: metric {name!r} is not a number: {value!r}") from None
        try:
            curve = [[float(s), float(v)] for s, v in data.get("curve") or []]
            cost = data.get("cost_s")
            cost_s = None if cost is None else float(cost)
            figures = {str(k): float(v) for k, v in (data.get("cost") or {}).items()}
        except (TypeError, ValueError, AttributeError):
            raise MixAtlasError(
                f'{origin}: "curve" must be [[step, loss], ...], "cost_s" a number of seconds and "cost" a '
                "mapping of numbers"
            ) from None
        return cls(metrics=metrics, curve=curve, cost_s=cost_s, cost=figures)

    def save(self, path: Path) -> None:
        """Write atomically (a scratch file renamed into place), so a killed writer leaves no half file."""
        path = Path(path)
        scratch = path.with_name(f".{path.name}.tmp")
        scratch.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(scratch, path)

    @classmethod
    def load(cls, path: Path) -> Result:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MixAtlasError(f"{path}: the run wrote no metrics.json") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise MixAtlasError(f"{path}: unreadable metrics JSON ({exc})") from None
        return cls.from_dict(data, origin=str(path))


@dataclass(frozen=True)
class TrialFolder:
    """One trial's folder and its contract files; the one place that names and writes them.

    Owner: whoever runs the objective (the search loop's `run_trial`; `mixatlas proxy train` outside a
    search) calls `start` before `objective.evaluate` and `finish` after it. Objectives return a Result and
    add only their own files (a trainer's log, a model); the command objective calls `start` itself
    because the command reads `mixture.json`.
    """

    path: Path

    @property
    def mixture_json(self) -> Path:
        return Path(self.path) / "mixture.json"

    @property
    def metrics_json(self) -> Path:
        return Path(self.path) / "metrics.json"

    def start(self, mixture: Mixture) -> None:
        """Create the folder, write `mixture.json`, drop a stale `metrics.json` of an earlier attempt."""
        Path(self.path).mkdir(parents=True, exist_ok=True)
        mixture.save(self.mixture_json)
        self.metrics_json.unlink(missing_ok=True)

    def finish(self, result: Result) -> None:
        """Write `metrics.json` (atomically: it marks the trial complete)."""
        result.save(self.metrics_json)


@runtime_checkable
class Objective(Protocol):
    """Evaluates one mixture. Must be picklable (it is shipped to worker processes / Ray / Slurm).

    An objective may also name, in a `worker_imports` tuple, the heavy modules its `evaluate` imports: the
    local executor imports them once in its fork server instead of in every trial's fresh process.
    """

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result: ...


T = TypeVar("T")
ArrayOrFloat = TypeVar("ArrayOrFloat", float, np.ndarray)

_TERM = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?([^\s*+]+)\s*$")
# Metric names that are minimized when no direction is given (`Target.for_metric`): losses and errors.
MINIMIZED_SUFFIXES = ("nll", "loss", "ppl", "perplexity", "error")


@dataclass(frozen=True)
class Target:
    """Which metric (or weighted average of metrics) a study optimizes, and in which direction.

    Parsed from "chart-vqa/nll" or "0.5*chart-vqa/nll + 0.5*doc-ocr/nll". Weights are normalized to sum 1.
    """

    weights: tuple[tuple[str, float], ...]
    minimize: bool = False

    @classmethod
    def parse(cls, spec: str, minimize: bool = False) -> Target:
        terms = []
        for part in spec.split("+"):
            match = _TERM.match(part)
            if not match:
                raise MixAtlasError(
                    f"target {spec!r}: cannot parse {part.strip()!r}; write METRIC or W*METRIC joined by '+'"
                )
            terms.append((match.group(2), float(match.group(1) or 1.0)))
        total = sum(w for _, w in terms)
        if not math.isfinite(total):  # 1e308*a + 1e308*b: every weight would normalize to 0
            raise MixAtlasError(f"target {spec!r}: the weights overflow (their sum is {total}); use "
                                "relative weights such as 0.5*a + 0.5*b")
        if total <= 0:
            raise MixAtlasError(f"target {spec!r}: weights must sum to a positive number")
        return cls(tuple((name, w / total) for name, w in terms), minimize)

    @classmethod
    def for_metric(cls, metric: str, minimize: bool | None = None) -> Target:
        """One metric (the name taken whole, e.g. a CSV column) in the given direction; `minimize` None
        infers it from the name: ending in nll, loss, ppl, perplexity or error -> minimize."""
        if minimize is None:
            minimize = metric.lower().endswith(MINIMIZED_SUFFIXES)
        return cls(((metric, 1.0),), minimize=bool(minimize))

    def retarget(self, spec: str) -> Target:
        """Another metric (or average) optimized in this target's direction."""
        return Target.parse(spec, minimize=self.minimize)

    @property
    def spec(self) -> str:
        if len(self.weights) == 1:
            return self.weights[0][0]
        return " + ".join(f"{w:.6g}*{name}" for name, w in self.weights)

    def value(self, metrics: dict[str, float]) -> float:
        """The target's value on a result's metrics; raises MixAtlasError if a metric is missing/NaN."""
        total = 0.0
        for name, weight in self.weights:
            if name not in metrics:
                known = ", ".join(sorted(metrics)) or "none"
                raise MixAtlasError(f"target metric {name!r} not in the result (metrics: {known})")
            value = float(metrics[name])
            if not math.isfinite(value):
                raise MixAtlasError(f"target metric {name!r} is {value}")
            total += weight * value
        return total

    # -- direction: the only code that reads `minimize` to orient values --------------------------------
    @property
    def direction(self) -> str:
        """"minimize" or "maximize" (for display)."""
        return "minimize" if self.minimize else "maximize"

    @property
    def better(self) -> str:
        """"lower" or "higher": which values are better (for display)."""
        return "lower" if self.minimize else "higher"

    def utility(self, metrics: dict[str, float]) -> float:
        """The value oriented so that larger is better (what optimizers maximize)."""
        return float(self.to_utility(self.value(metrics)))

    def to_utility(self, value: ArrayOrFloat) -> ArrayOrFloat:
        """Target value(s) (float or array) -> utility, larger is better."""
        return -value if self.minimize else value

    def from_utility(self, utility: ArrayOrFloat) -> ArrayOrFloat:
        """Utility (float or array, e.g. a surrogate's posterior mean) -> target value(s)."""
        return -utility if self.minimize else utility

    def gain(self, value: float, reference: float) -> float:
        """How much better `value` is than `reference` in target units (positive = better)."""
        return float(self.to_utility(value) - self.to_utility(reference))

    def best(self, items: Iterable[T], key: Callable[[T], float] | None = None) -> T:
        """The item with the best target value (`key(item)`, default the item itself); the first on ties.

        Raises ValueError on an empty iterable.
        """
        values = list(items)
        if not values:
            raise ValueError("Target.best of nothing")
        return max(values, key=lambda item: self.to_utility(item if key is None else key(item)))

    def running_best(self, values_n: np.ndarray) -> np.ndarray:
        """(n,) best value so far after each of (n,) values (in trial order)."""
        values = np.asarray(values_n, dtype=np.float64)
        return (np.minimum if self.minimize else np.maximum).accumulate(values)
