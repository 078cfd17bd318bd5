"""Pool problems: a CSV of mixtures that were really trained, with their metrics.

A method may only choose rows of the pool (the space's `candidates`); evaluating a mixture looks its row
up. Rows are domains-only mixtures (T = 1): the weight columns are the domains.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, Target, TrialContext
from mixatlas.space import Mixture, MixtureSpace

ROW_SUM_TOL = 1e-3  # rows summing to 1 within this are renormalized (CSV rounding); others are errors
_MATCH_TOL = 1e-6


@dataclass
class PoolObjective:
    """Evaluates a mixture by looking up its pool row; picklable plain arrays.

    Attributes:
        domains: the n domain names (mixture concepts; the single task is "all").
        weights_cn: (c, n) pool mixtures.
        metric_names: the m metric names.
        metrics_cm: (c, m) metric values (NaN where the CSV cell was empty).
    """

    domains: tuple[str, ...]
    weights_cn: np.ndarray
    metric_names: tuple[str, ...]
    metrics_cm: np.ndarray

    def row_of(self, weights_n: np.ndarray) -> int:
        """Index of the pool row equal to `weights_n` (n,); MixAtlasError if it is not a pool row."""
        dist = np.abs(self.weights_cn - np.asarray(weights_n, float)[None]).max(axis=1)
        row = int(dist.argmin())
        if dist[row] > _MATCH_TOL:
            raise MixAtlasError(
                f"mixture is not a row of the pool (nearest row {row} differs by {dist[row]:.3g});"
                " pool problems can only evaluate mixtures that were trained"
            )
        return row

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        if mixture.concepts != self.domains:
            raise MixAtlasError(
                f"mixture domains {list(mixture.concepts)} differ from the pool's {list(self.domains)}"
            )
        row = self.row_of(mixture.weights_kt[:, 0])
        return Result(
            metrics={name: float(v) for name, v in zip(self.metric_names, self.metrics_cm[row], strict=True)}
        )


@dataclass
class PoolProblem:
    """A pool of trained mixtures: its space (candidates = the rows) and its lookup objective."""

    space: MixtureSpace
    objective: PoolObjective
    source: str = "pool"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.objective.metric_names

    def metric(self, name: str) -> np.ndarray:
        """(c,) one metric column, in the order of `space.candidates`."""
        if name not in self.objective.metric_names:
            raise MixAtlasError(
                f"{self.source}: no metric column {name!r};"
                f" metrics are {', '.join(self.objective.metric_names)}"
            )
        return self.objective.metrics_cm[:, self.objective.metric_names.index(name)]

    def target_values(self, target: Target) -> np.ndarray:
        """(c,) the target's value on every pool row (NaN where a metric is missing)."""
        values = np.zeros(len(self.space.candidates))
        for name, weight in target.weights:
            values = values + weight * self.metric(name)
        return values

    def with_target(self, target: str) -> PoolProblem:
        """The same pool without the rows where `target` (a Target spec) is missing."""
        o = self.objective
        return PoolProblem.from_arrays(
            list(o.domains), o.weights_cn, list(o.metric_names), o.metrics_cm, self.source, target=target
        )

    @classmethod
    def from_arrays(
        cls,
        domains: list[str],
        weights_cn: np.ndarray,
        metric_names: list[str],
        metrics_cm: np.ndarray,
        source: str = "pool",
        target: str | None = None,
    ) -> PoolProblem:
        """Build from arrays; duplicate mixtures are merged (metrics averaged), and with a `target`
        spec, rows where the target is missing are dropped."""
        weights = np.asarray(weights_cn, dtype=np.float64)
        metrics = np.asarray(metrics_cm, dtype=np.float64).reshape(len(weights), len(metric_names))
        unique, inverse = np.unique(np.round(weights, 12), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        merged = np.empty((len(unique), len(metric_names)))
        for i in range(len(unique)):
            group = metrics[inverse == i]
            n_finite = np.isfinite(group).sum(axis=0)
            merged[i] = np.where(n_finite > 0, np.nansum(group, axis=0) / np.maximum(n_finite, 1), np.nan)
        first = np.array([np.flatnonzero(inverse == i)[0] for i in range(len(unique))])
        order = np.argsort(first)  # keep the file's row order
        weights, merged = weights[first[order]], merged[order]
        objective = PoolObjective(tuple(domains), weights, tuple(metric_names), merged)
        problem = cls(MixtureSpace.from_domains(list(domains), candidates=weights), objective, source)
        if target is not None:
            values = problem.target_values(Target.parse(target))
            keep = np.isfinite(values)
            if not keep.any():
                raise MixAtlasError(f"{source}: target {target!r} is missing on every row")
            if not keep.all():
                return cls.from_arrays(domains, weights[keep], metric_names, merged[keep], source)
        return problem

    @classmethod
    def from_csv(
        cls,
        path: Path | str,
        weight_cols: str | list[str],
        metric_cols: list[str] | None = None,
        target: str | None = None,
    ) -> PoolProblem:
        """Read a pool CSV: `weight_cols` is a column-name prefix or a list of columns (the domains);
        `metric_cols` default to every other all-numeric column. Rows must be non-negative and sum to 1
        (within 1e-3; they are renormalized). `target` (a Target spec) drops rows where it is missing."""
        path = Path(path)
        try:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
        except OSError as exc:
            raise MixAtlasError(f"{path}: cannot read the pool CSV ({exc})") from None
        if len(rows) < 2:
            raise MixAtlasError(f"{path}: the pool CSV needs a header and at least one row")
        header = [name.strip() for name in rows[0]]
        body = [
            (line, row) for line, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)
        ]
        if not body:
            raise MixAtlasError(f"{path}: the pool CSV has a header but no non-empty rows")
        weight_names = _weight_columns(path, header, weight_cols)
        if metric_cols is None:
            candidates = [name for name in header if name not in weight_names]
            metric_names = [name for name in candidates if _all_numeric(body, header.index(name))]
        else:
            metric_names = list(metric_cols)
            missing = [name for name in metric_names if name not in header]
            if missing:
                raise MixAtlasError(
                    f"{path}: metric column {missing[0]!r} not in the header ({', '.join(header)})"
                )
        weights = np.array(
            [[_number(path, line, row, header, name) for name in weight_names] for line, row in body]
        )
        metrics = np.array(
            [
                [_number(path, line, row, header, name, allow_empty=True) for name in metric_names]
                for line, row in body
            ]
        ).reshape(len(body), len(metric_names))
        for (line, _), w in zip(body, weights, strict=True):
            if np.any(w < 0):
                raise MixAtlasError(f"{path}:{line}: negative weight; mixture weights must be >= 0")
            if abs(w.sum() - 1.0) > ROW_SUM_TOL:
                raise MixAtlasError(
                    f"{path}:{line}: weights sum to {w.sum():.6g}, not 1;"
                    " fix the row or the --weight-cols prefix"
                )
        weights = weights / weights.sum(axis=1, keepdims=True)
        domains = [
            name[len(weight_cols) :] if isinstance(weight_cols, str) else name for name in weight_names
        ]
        return cls.from_arrays(domains, weights, metric_names, metrics, source=str(path), target=target)

    def to_csv(self, path: Path | str, weight_prefix: str = "w_") -> None:
        """Write the pool as CSV: `weight_prefix`+domain columns, then the metric columns."""
        with Path(path).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([weight_prefix + d for d in self.objective.domains] + list(self.metric_names))
            for w, m in zip(self.objective.weights_cn, self.objective.metrics_cm, strict=True):
                writer.writerow([f"{x:.10g}" for x in w] + ["" if math.isnan(x) else f"{x:.10g}" for x in m])


def _weight_columns(path: Path, header: list[str], weight_cols: str | list[str]) -> list[str]:
    if isinstance(weight_cols, str):
        names = [name for name in header if name.startswith(weight_cols)]
        if not names:
            raise MixAtlasError(
                f"{path}: no column starts with {weight_cols!r} (columns: {', '.join(header)})"
            )
        return names
    missing = [name for name in weight_cols if name not in header]
    if missing:
        raise MixAtlasError(f"{path}: weight column {missing[0]!r} not in the header ({', '.join(header)})")
    return list(weight_cols)


def _all_numeric(body: list[tuple[int, list[str]]], index: int) -> bool:
    for _, row in body:
        cell = row[index].strip() if index < len(row) else ""
        if cell:
            try:
                float(cell)
            except ValueError:
                return False
    return True


def _number(
    path: Path, line: int, row: list[str], header: list[str], name: str, allow_empty: bool = False
) -> float:
    index = header.index(name)
    cell = row[index].strip() if index < len(row) else ""
    if not cell and allow_empty:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise MixAtlasError(f"{path}:{line}: column {name!r} has {cell!r}, not a number") from None
    if not math.isfinite(value) and not allow_empty:
        raise MixAtlasError(f"{path}:{line}: column {name!r} is {cell!r}; weights must be finite numbers")
    return value
