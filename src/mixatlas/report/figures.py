"""Report figures as PNG files, drawn with matplotlib's object API (`Figure`, Agg canvas, no pyplot state).

Every function takes plain arrays/records and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text

from mixatlas.objectives.base import Target

DPI = 110


@dataclass(frozen=True)
class Series:
    """One method's best-so-far curves across its studies (seeds): `values_sn` (s, n) in target units."""

    label: str
    values_sn: np.ndarray


@dataclass(frozen=True)
class AxisSlice:
    """The GP posterior along one marginal: weight grid (g,), mean (g,) and sd (g,) in target units."""

    axis: str  # "task" | "concept"
    name: str
    grid_g: np.ndarray
    mean_g: np.ndarray
    sd_g: np.ndarray
    at: float  # the recommendation's weight on this marginal


def _save(fig: Figure, path: Path) -> Path:
    for text in fig.findobj(Text):  # names are data: a '$' in a study or concept name is not mathtext
        text.set_parse_math(False)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def recipe_heatmap(weights_kt: np.ndarray, concepts: Sequence[str], tasks: Sequence[str], path: Path,
                   title: str = "recipe") -> Path:
    """Concept x task heatmap of `weights_kt` (k, T) in percent, with both marginals as bar charts."""
    k, n_tasks = weights_kt.shape
    fig = Figure(figsize=(2.2 + 1.1 * n_tasks + 2.0, 1.6 + 0.42 * k))
    grid = fig.add_gridspec(2, 2, width_ratios=(n_tasks, 2.2), height_ratios=(1.4, k),
                            wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    image = ax.imshow(100 * weights_kt, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n_tasks), tasks, rotation=30, ha="right")
    ax.set_yticks(range(k), concepts)
    top = 100 * weights_kt.max() if weights_kt.size else 1.0
    for i in range(k):
        for j in range(n_tasks):
            value = 100 * weights_kt[i, j]
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 * top else "black")
    ax_top = fig.add_subplot(grid[0, 0], sharex=ax)
    ax_top.bar(range(n_tasks), 100 * weights_kt.sum(axis=0), color="tab:blue")
    ax_top.set_ylabel("task %")
    ax_top.tick_params(labelbottom=False)
    ax_top.set_title(title, loc="left")
    ax_side = fig.add_subplot(grid[1, 1], sharey=ax)
    ax_side.barh(range(k), 100 * weights_kt.sum(axis=1), color="tab:orange")
    ax_side.set_xlabel("concept %")
    ax_side.tick_params(labelleft=False)
    fig.colorbar(image, ax=ax_side, fraction=0.1, pad=0.05, label="cell %")
    return _save(fig, path)


def best_so_far(panels: dict[str, list[Series]], path: Path, target: Target) -> Path:
    """Best-so-far target value vs. trials, one panel per search axis, one line per method.

    The line is the mean over a method's studies (seeds); the band spans mean ± one standard deviation
    across them (drawn only with two or more studies).
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items(), strict=True):
        for s in series:
            trials = np.arange(1, s.values_sn.shape[1] + 1)
            mean = s.values_sn.mean(axis=0)
            (line,) = ax.plot(trials, mean, label=f"{s.label} (n={len(s.values_sn)})", lw=1.8)
            if len(s.values_sn) > 1:
                sd = s.values_sn.std(axis=0, ddof=1)
                ax.fill_between(trials, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"{panel} axis")
        ax.set_xlabel("finished trials")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"best {target.spec} so far ({target.better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def best_so_far_matrix(values_by_study: Sequence[Sequence[float]], target: Target) -> np.ndarray:
    """(s, n) running best of each study's values in trial order, shorter studies padded with their last."""
    length = max(len(v) for v in values_by_study)
    out = np.empty((len(values_by_study), length))
    for row, values in enumerate(values_by_study):
        running = target.running_best(np.asarray(values, dtype=np.float64))
        out[row, : len(running)] = running
        out[row, len(running):] = running[-1]
    return out


def posterior_slices(slices: list[AxisSlice], path: Path, title: str, ylabel: str) -> Path:
    """GP posterior mean ± 2 sd of the target as each marginal weight varies, the others held in ratio."""
    cols = min(5, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig = Figure(figsize=(2.7 * cols, 2.3 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, s in zip(axes, slices, strict=False):
        ax.plot(s.grid_g, s.mean_g, color="tab:blue", lw=1.5)
        ax.fill_between(s.grid_g, s.mean_g - 2 * s.sd_g, s.mean_g + 2 * s.sd_g,
                        color="tab:blue", alpha=0.2, lw=0)
        ax.axvline(s.at, color="tab:red", lw=1, ls="--")
        ax.set_title(f"{s.axis}: {s.name}", fontsize=9)
        ax.set_xlabel("weight", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(slices):]:
        ax.set_visible(False)
    axes[0].set_ylabel(ylabel, fontsize=8)
    fig.suptitle(f"{title}: GP posterior mean ± 2 sd (dashed: recommendation)", fontsize=10)
    return _save(fig, path)


def loss_curves(panels: dict[str, list[tuple[np.ndarray, bool]]], path: Path) -> Path:
    """Proxy training-loss curves, one panel per study; each curve (n, 2) [step, loss], bold if chosen."""
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, curves) in zip(axes, panels.items(), strict=False):
        for curve, chosen in curves:
            if chosen:
                ax.plot(curve[:, 0], curve[:, 1], color="tab:red", lw=2.0, zorder=3, label="best trial")
            else:
                ax.plot(curve[:, 0], curve[:, 1], color="0.6", lw=0.7, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("train loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if any(chosen for _, chosen in curves):
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)


def guard_front(gain_n: np.ndarray, guard_change_n: np.ndarray, delta: float, path: Path,
                chosen: int | None = None, xlabel: str = "guard metric change vs natural",
                ylabel: str = "target gain vs natural", op: str = ">=") -> Path:
    """Target gain against a guard metric's change (both vs the natural mixture) for n evaluated mixtures:
    the non-dominated ones joined as the front, the guard's limit `delta` as a line, `chosen` ringed.
    `op` ">=": a larger change is safer (a score); "<=": a smaller one is (a loss)."""
    gain, change = np.asarray(gain_n, float), np.asarray(guard_change_n, float)
    order = np.argsort(-change if op == ">=" else change)
    front = order[np.maximum.accumulate(gain[order]) == gain[order]]  # best gain for at least this change
    fig = Figure(figsize=(4.6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(change, gain, s=14, color="0.55", label="evaluated")
    ax.plot(change[front], gain[front], "-o", color="tab:blue", ms=4, lw=1.2, label="front")
    ax.axvline(delta, color="tab:red", ls="--", lw=1.0, label=f"guard limit {delta:g}")
    if chosen is not None:
        ax.scatter([change[chosen]], [gain[chosen]], s=90, facecolors="none", edgecolors="tab:red", lw=1.8,
                   label="recommendation", zorder=3)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
