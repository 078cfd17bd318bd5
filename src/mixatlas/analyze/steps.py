"""Sample efficiency: how many steps each run needs to reach the baseline's final training loss.

Curves are noisy per step, so both the threshold and the crossing use a smoothed curve: an exponential
moving average with weight `smoothing` on the past, debiased like TensorBoard's (divide by 1 - s^t),
so the first points are not pulled toward zero. The threshold is the baseline's final smoothed loss; a
run "reaches" it at the first step whose smoothed loss is <= it. Speed-up = baseline steps / run steps,
where the baseline's own steps are measured the same way (its first crossing of its final value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result

DEFAULT_SMOOTHING = 0.9


def smooth_curve(losses: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average of a (n,) loss curve; `smoothing` in [0, 1), 0 = raw curve."""
    if not 0.0 <= smoothing < 1.0:
        raise MixAtlasError(f"--smoothing {smoothing}: must be in [0, 1)")
    out = np.empty(len(losses), dtype=np.float64)
    average = 0.0
    for t, loss in enumerate(losses, start=1):
        average = smoothing * average + (1.0 - smoothing) * float(loss)
        out[t - 1] = average / (1.0 - smoothing**t)
    return out


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps (n,), losses (n,)) from a run's `metrics.json` curve."""
    result = Result.load(Path(run_dir) / "metrics.json")
    if not result.curve:
        raise MixAtlasError(f"{run_dir}/metrics.json: the run logged no loss curve")
    curve = np.asarray(result.curve, dtype=np.float64)
    return curve[:, 0], curve[:, 1]


def first_step_at_or_below(steps: np.ndarray, smoothed: np.ndarray, threshold: float) -> float | None:
    """The first step whose smoothed loss is <= threshold, or None if the run never gets there."""
    hits = np.flatnonzero(smoothed <= threshold + 1e-12)
    return float(steps[hits[0]]) if len(hits) else None


def steps_to_loss(
    run_dirs: list[Path], baseline_dir: Path, smoothing: float = DEFAULT_SMOOTHING
) -> list[dict]:
    """One row per run: steps to reach the baseline's final smoothed loss, and the speed-up over it.

    Row keys: run, target_loss, final_loss (smoothed), steps_to_loss (None if never reached), total_steps,
    baseline_steps, speedup (baseline_steps / steps_to_loss, None if never reached).
    """
    base_steps, base_losses = read_curve(baseline_dir)
    base_smoothed = smooth_curve(base_losses, smoothing)
    target = float(base_smoothed[-1])
    baseline_steps = first_step_at_or_below(base_steps, base_smoothed, target)
    rows = []
    for run_dir in run_dirs:
        steps, losses = read_curve(run_dir)
        smoothed = smooth_curve(losses, smoothing)
        reached = first_step_at_or_below(steps, smoothed, target)
        rows.append({
            "run": str(run_dir),
            "target_loss": target,
            "final_loss": float(smoothed[-1]),
            "steps_to_loss": reached,
            "total_steps": float(steps[-1]),
            "baseline_steps": baseline_steps,
            "speedup": baseline_steps / reached if reached else None,
        })
    return rows
