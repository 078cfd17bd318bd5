"""Mixtures over atlas cells.

A :class:`Mixture` is always the full k x T cell matrix (concepts x tasks), whatever search mode produced it.
`MixtureSpace` (search modes, constraints, params <-> mixture) lives in this module too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError

SUM_TOL = 1e-9


@dataclass(frozen=True)
class Mixture:
    """Non-negative cell weights summing to 1.

    Attributes:
        concepts: k concept (cluster) names, rows of `weights_kt`.
        tasks: T task names, columns of `weights_kt`.
        weights_kt: float64 array of shape (k, T).
    """

    concepts: tuple[str, ...]
    tasks: tuple[str, ...]
    weights_kt: np.ndarray

    def __post_init__(self) -> None:
        w = np.asarray(self.weights_kt, dtype=np.float64)
        if w.shape != (len(self.concepts), len(self.tasks)):
            raise MixAtlasError(
                f"mixture weights have shape {w.shape}, expected ({len(self.concepts)}, {len(self.tasks)})"
                " = (concepts, tasks)"
            )
        if not np.all(np.isfinite(w)) or np.any(w < -SUM_TOL):
            raise MixAtlasError("mixture weights must be finite and non-negative")
        if abs(w.sum() - 1.0) > 1e-6:
            raise MixAtlasError(f"mixture weights sum to {w.sum():.6g}, expected 1")
        object.__setattr__(self, "weights_kt", np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum())

    @property
    def concept_marginal(self) -> np.ndarray:
        """(k,) weight of each concept, summed over tasks."""
        return self.weights_kt.sum(axis=1)

    @property
    def task_marginal(self) -> np.ndarray:
        """(T,) weight of each task, summed over concepts."""
        return self.weights_kt.sum(axis=0)

    def to_dict(self) -> dict:
        """The mixture JSON contract: {"concepts": [...], "tasks": [...], "weights": [[k rows of T]]}."""
        return {
            "concepts": list(self.concepts),
            "tasks": list(self.tasks),
            "weights": self.weights_kt.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict, origin: str = "mixture") -> Mixture:
        """Inverse of :meth:`to_dict`; `origin` names the file in error messages."""
        try:
            return cls(tuple(data["concepts"]), tuple(data["tasks"]), np.asarray(data["weights"], float))
        except KeyError as exc:
            raise MixAtlasError(
                f"{origin}: missing key {exc}; a mixture needs 'concepts', 'tasks' and 'weights'"
            ) from None
        except (TypeError, ValueError) as exc:
            raise MixAtlasError(
                f"{origin}: not a mixture ({exc}); expected "
                '{"concepts": [...], "tasks": [...], "weights": [[k rows of T numbers]]}'
            ) from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Mixture:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MixAtlasError(f"{path}: cannot read mixture JSON ({exc})") from None
        return cls.from_dict(data, origin=str(path))


MODES = ("task", "concept", "factored", "joint")
WITHIN = ("natural", "uniform")
FEASIBLE_TOL = 1e-9
_POOL_MATCH_TOL = 1e-9


def project_box_simplex(y_nd: np.ndarray, lower_d: np.ndarray, upper_d: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of `y_nd` (n, d) onto {x : sum x = 1, lower <= x <= upper}.

    The projection is clip(y - tau, lower, upper) with the scalar tau found by bisection (the sum is
    monotone in tau), so bounds hold exactly and the sum is 1 to machine precision.
    Requires sum(lower) <= 1 <= sum(upper).
    """
    y = np.atleast_2d(np.asarray(y_nd, dtype=np.float64))
    lo_tau = (y - upper_d).min(axis=1) - 1.0
    hi_tau = (y - lower_d).max(axis=1) + 1.0
    for _ in range(64):  # halves a bracket of width <= 4: 2**-62 is below float64 resolution
        mid = 0.5 * (lo_tau + hi_tau)
        total = np.clip(y - mid[:, None], lower_d, upper_d).sum(axis=1)
        above = total > 1.0
        lo_tau = np.where(above, mid, lo_tau)
        hi_tau = np.where(above, hi_tau, mid)
    x = np.clip(y - 0.5 * (lo_tau + hi_tau)[:, None], lower_d, upper_d)
    # Put the last ~1e-16 of mass on the coordinate with the most room, keeping bounds exact.
    residual = 1.0 - x.sum(axis=1)
    room = np.where(residual[:, None] > 0, upper_d - x, x - lower_d)
    best = room.argmax(axis=1)
    rows = np.arange(len(x))
    x[rows, best] += np.clip(residual, -room[rows, best], room[rows, best])
    return x


def _factor_box(other_nm: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple:
    """Factored mode: per-row box on one factor given the other factor's weights `other_nm` (n, m).

    `lower`/`upper` are the cell bounds with the free factor on rows. Returns (lo (n, r), up (n, r),
    nonempty (n,)): the cell bounds hold iff the free factor lies in the box.
    """
    pos = other_nm > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_ratio = np.where(
            pos[:, None, :], lower[None] / other_nm[:, None, :], np.where(lower[None] > 0, np.inf, 0)
        )
        up_ratio = np.where(pos[:, None, :], upper[None] / other_nm[:, None, :], np.inf)
    lo = lo_ratio.max(axis=2)
    up = np.minimum(1.0, up_ratio.min(axis=2))
    nonempty = np.all(lo <= up, axis=1) & (lo.sum(axis=1) <= 1.0) & (up.sum(axis=1) >= 1.0)
    return np.where(np.isfinite(lo), lo, 0.0), np.maximum(up, 0.0), nonempty


def _key_to_cell(key: object, concepts: tuple[str, ...], tasks: tuple[str, ...]) -> tuple[int, int]:
    """Resolve a frozen-cell key ((concept, task), "concept/task", or "concept" when T = 1) to indices."""
    if isinstance(key, str):
        parts = key.split("/") if "/" in key else ([key, tasks[0]] if len(tasks) == 1 else [key])
    else:
        parts = list(key)  # type: ignore[call-overload]
    if len(parts) != 2:
        raise MixAtlasError(f"frozen cell {key!r}: write it as 'concept/task' or (concept, task)")
    concept, task = str(parts[0]), str(parts[1])
    if concept not in concepts or task not in tasks:
        raise MixAtlasError(
            f"frozen cell {key!r}: unknown concept or task;"
            f" concepts are {list(concepts)}, tasks {list(tasks)}"
        )
    return concepts.index(concept), tasks.index(task)


def _cell_matrix(value: object, default: float, shape: tuple[int, int], name: str) -> np.ndarray:
    """A (k, T) float matrix from a scalar, a matrix or None (= `default`)."""
    try:
        return np.broadcast_to(np.asarray(default if value is None else value, float), shape).copy()
    except ValueError:
        raise MixAtlasError(f"space {name} bounds: expected a number or a {shape} matrix") from None


class MixtureSpace:
    """The cells (k concepts x T tasks), a search mode and constraints; maps parameters <-> mixtures.

    Modes and their parameters `params_d`:
      - `joint`: the (k*T)-simplex, the cell matrix flattened row-major (d = k*T).
      - `task`: the T-simplex; inside each task concepts keep a fixed split (`within` natural|uniform).
      - `concept`: the k-simplex; inside each concept tasks keep a fixed split.
      - `factored`: concat(concept weights on the k-simplex, task weights on the T-simplex); the cell
        matrix is their outer product (d = k + T).
    Constraints act on the resulting cell weights: per-cell `lower_kt`/`upper_kt`, `frozen` cells (fixed
    weight) and the epoch cap `w * planned_samples <= count * max_epochs`. Cells with zero count get
    weight 0. A finite `candidates` pool (c, d) makes the pool the feasible set.
    """

    def __init__(
        self,
        concepts: tuple[str, ...] | list[str],
        tasks: tuple[str, ...] | list[str],
        counts_kt: np.ndarray,
        mode: str = "joint",
        within: str = "natural",
        lower_kt: np.ndarray | float | None = None,
        upper_kt: np.ndarray | float | None = None,
        frozen: dict | None = None,
        planned_samples: float | None = None,
        max_epochs: float | None = None,
        candidates: np.ndarray | None = None,
    ) -> None:
        self.concepts = tuple(str(c) for c in concepts)
        self.tasks = tuple(str(t) for t in tasks)
        k, t = len(self.concepts), len(self.tasks)
        if mode not in MODES:
            raise MixAtlasError(f"space mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
        if within not in WITHIN:
            raise MixAtlasError(f"within-split {within!r} is unknown; choose natural or uniform")
        if len(set(self.concepts)) != k or len(set(self.tasks)) != t or k == 0 or t == 0:
            raise MixAtlasError("space: concept and task names must be non-empty and unique")
        counts = np.asarray(counts_kt, dtype=np.float64)
        if counts.shape != (k, t) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise MixAtlasError(
                f"space: counts must be a non-negative ({k}, {t}) matrix, got shape {counts.shape}"
            )
        if counts.sum() <= 0:
            raise MixAtlasError("space: all cell counts are zero; the atlas has no samples")
        if (planned_samples is None) != (max_epochs is None):
            raise MixAtlasError("epoch cap: give both planned_samples and max_epochs (or neither)")
        self.counts_kt = counts
        self.mode = mode
        self.within = within
        self.planned_samples = None if planned_samples is None else float(planned_samples)
        self.max_epochs = None if max_epochs is None else float(max_epochs)
        self.user_lower_kt = _cell_matrix(lower_kt, 0.0, (k, t), "lower")
        self.user_upper_kt = _cell_matrix(upper_kt, 1.0, (k, t), "upper")
        self.frozen = {
            _key_to_cell(key, self.concepts, self.tasks): float(value)
            for key, value in (frozen or {}).items()
        }
        self.lower_kt, self.upper_kt = self._cell_bounds()
        self._param_lower, self._param_upper = self._param_boxes()
        self._anchor = self._find_anchor()
        self.candidates = None if candidates is None else self._check_candidates(candidates)

    # ----- construction helpers -------------------------------------------------------------------------

    @classmethod
    def from_atlas(cls, atlas: object, mode: str = "joint", **constraints: object) -> MixtureSpace:
        """Space over an atlas's cells (`atlas.concepts`, `atlas.tasks`, `atlas.counts` (k, T))."""
        return cls(atlas.concepts, atlas.tasks, np.asarray(atlas.counts, float), mode=mode, **constraints)

    @classmethod
    def from_domains(
        cls,
        names: list[str] | tuple[str, ...],
        counts: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
        **constraints: object,
    ) -> MixtureSpace:
        """Space over plain domains (T = 1, tasks = ("all",)); `candidates` (c, n) makes it a pool."""
        counts_k1 = np.ones((len(names), 1)) if counts is None else np.asarray(counts, float).reshape(-1, 1)
        return cls(tuple(names), ("all",), counts_k1, mode="joint", candidates=candidates, **constraints)

    def _cell_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Effective (k, T) cell bounds: user bounds, frozen cells, epoch cap and empty cells combined."""
        lower, upper = self.user_lower_kt.copy(), self.user_upper_kt.copy()
        if np.any(lower < 0) or np.any(upper > 1) or np.any(lower > upper):
            raise MixAtlasError("space bounds: need 0 <= lower <= upper <= 1 for every cell")
        upper[self.counts_kt == 0] = 0.0
        if self.planned_samples is not None:
            if self.planned_samples <= 0 or self.max_epochs <= 0:
                raise MixAtlasError("epoch cap: planned_samples and max_epochs must be positive")
            upper = np.minimum(upper, self.counts_kt * self.max_epochs / self.planned_samples)
        for (c, t), weight in self.frozen.items():
            if not lower[c, t] - FEASIBLE_TOL <= weight <= upper[c, t] + FEASIBLE_TOL:
                raise MixAtlasError(
                    f"frozen cell {self.concepts[c]}/{self.tasks[t]} = {weight:g} is outside its bounds"
                    f" [{lower[c, t]:g}, {upper[c, t]:g}] (epoch cap or empty cell); lower the weight"
                )
            lower[c, t] = upper[c, t] = weight
        bad = np.argwhere(lower > upper + FEASIBLE_TOL)
        if len(bad):
            c, t = bad[0]
            raise MixAtlasError(
                f"cell {self.concepts[c]}/{self.tasks[t]}: lower bound {lower[c, t]:g} exceeds its cap"
                f" {upper[c, t]:g} (epoch cap or empty cell); lower the bound or raise max_epochs"
            )
        return lower, np.maximum(upper, lower)

    def _within_split(self) -> np.ndarray:
        """(k, T) fixed split: columns sum to 1 in task mode, rows in concept mode (0 for empty lines)."""
        axis = 0 if self.mode == "task" else 1
        base = self.counts_kt if self.within == "natural" else (self.counts_kt > 0).astype(float)
        sums = base.sum(axis=axis, keepdims=True)
        return np.divide(base, sums, out=np.zeros_like(base), where=sums > 0)

    def _param_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-parameter boxes: exact for joint/task/concept (cell bounds are linear in params), the
        implied boxes (cell bounds summed over the other axis) for factored."""
        if self.mode == "joint":
            return self.lower_kt.ravel(), self.upper_kt.ravel()
        if self.mode == "factored":
            return (
                np.concatenate([self.lower_kt.sum(axis=1), self.lower_kt.sum(axis=0)]),
                np.minimum(1.0, np.concatenate([self.upper_kt.sum(axis=1), self.upper_kt.sum(axis=0)])),
            )
        split = self._within_split()
        axis = 0 if self.mode == "task" else 1
        lines = split.shape[1 - axis]
        lower, upper = np.zeros(lines), np.ones(lines)
        for i in range(lines):
            s = split[:, i] if axis == 0 else split[i, :]
            lo = self.lower_kt[:, i] if axis == 0 else self.lower_kt[i, :]
            up = self.upper_kt[:, i] if axis == 0 else self.upper_kt[i, :]
            if np.any((s == 0) & (lo > 0)):
                line = self.tasks[i] if axis == 0 else self.concepts[i]
                raise MixAtlasError(
                    f"{self.mode} mode: a cell with a lower bound has zero share inside {line!r};"
                    " use the joint mode or drop the bound"
                )
            pos = s > 0
            lower[i] = np.max(lo[pos] / s[pos]) if pos.any() else 0.0
            upper[i] = min(1.0, np.min(up[pos] / s[pos])) if pos.any() else 0.0
            if lower[i] > upper[i] + FEASIBLE_TOL:
                line = self.tasks[i] if axis == 0 else self.concepts[i]
                raise MixAtlasError(
                    f"{self.mode} mode: the cell bounds inside {line!r} conflict (with the fixed"
                    f" {self.within} split they need its weight >= {lower[i]:.4g} and <= {upper[i]:.4g});"
                    " loosen the bounds, use within=uniform or the joint mode"
                )
        return lower, np.maximum(upper, lower)

    def _find_anchor(self) -> np.ndarray:
        """One feasible parameter vector (used as fallback for projection), or MixAtlasError."""
        blocks = self.simplex_blocks
        for block in blocks:
            lo, up = self._param_lower[block].sum(), self._param_upper[block].sum()
            if lo > 1 + FEASIBLE_TOL or up < 1 - FEASIBLE_TOL:
                raise MixAtlasError(
                    f"{self.mode} space constraints are infeasible: lower bounds sum to {lo:.4g} and upper"
                    f" bounds (epoch cap included) to {up:.4g}, but weights must sum to 1; loosen the bounds,"
                    " raise max_epochs or lower planned_samples"
                )
        if self.mode != "factored":
            return self._project_linear(self._natural_raw()[None])[0]
        draws = self._dirichlet(256, np.random.default_rng(0), 1.0)
        starts = np.concatenate([self._natural_raw()[None], self._uniform_raw()[None], draws])
        repaired, ok = self._factor_step(starts)
        if ok.any():
            return repaired[int(np.argmax(ok))]
        found = self._factored_feasibility_search()
        if found is not None:
            return found
        raise MixAtlasError(
            "factored space constraints are infeasible (no outer product of concept and task weights meets"
            " the cell bounds/caps); use the joint mode or loosen the bounds"
        )

    def _factored_feasibility_search(self) -> np.ndarray | None:
        """A feasible factored point found by SLSQP minimizing the squared cell-bound violation of the
        outer product (from the natural, uniform, then a random start), then repaired; or None."""
        from scipy.optimize import minimize

        k, lower, upper = self.k, self.lower_kt.ravel(), self.upper_kt.ravel()

        def violation(x: np.ndarray) -> float:
            cells = np.outer(x[:k], x[k:]).ravel()
            return float(
                1e4 * (np.clip(lower - cells, 0, None) ** 2 + np.clip(cells - upper, 0, None) ** 2).sum()
            )

        random_start = self._dirichlet(1, np.random.default_rng(0), 1.0)[0]
        for start in (self._natural_raw(), self._uniform_raw(), random_start):
            result = minimize(
                violation,
                start,
                method="SLSQP",
                bounds=list(zip(self._param_lower, self._param_upper, strict=True)),
                constraints=[
                    {"type": "eq", "fun": lambda x: x[:k].sum() - 1.0},
                    {"type": "eq", "fun": lambda x: x[k:].sum() - 1.0},
                ],
                options={"maxiter": 500, "ftol": 1e-16},
            )
            repaired, ok = self._factor_step(np.clip(result.x, 0.0, 1.0)[None])
            if ok[0]:
                return repaired[0]
        return None

    def _check_candidates(self, candidates: np.ndarray) -> np.ndarray:
        pool = np.atleast_2d(np.asarray(candidates, dtype=np.float64))
        if pool.shape[1] != self.dim:
            raise MixAtlasError(
                f"candidates have {pool.shape[1]} columns, the space has dimension {self.dim}"
            )
        keep = self.feasible_mask(pool)
        if not keep.any():
            raise MixAtlasError("no candidate mixture satisfies the space constraints; loosen them")
        return pool[keep]

    # ----- shape and mapping -----------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return len(self.concepts)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        return {
            "joint": self.k * self.n_tasks,
            "task": self.n_tasks,
            "concept": self.k,
            "factored": self.k + self.n_tasks,
        }[self.mode]

    @property
    def simplex_blocks(self) -> list[slice]:
        """Slices of the parameter vector that each live on a simplex (two for factored, else one)."""
        if self.mode == "factored":
            return [slice(0, self.k), slice(self.k, self.k + self.n_tasks)]
        return [slice(0, self.dim)]

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(d,) lower and upper parameter boxes (exact constraints except in factored mode)."""
        return self._param_lower.copy(), self._param_upper.copy()

    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        """(n, k, T) cell matrices of parameter rows `params_nd` (n, d)."""
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        k, t = self.k, self.n_tasks
        if self.mode == "joint":
            return p.reshape(-1, k, t)
        if self.mode == "task":
            return p[:, None, :] * self._within_split()[None]
        if self.mode == "concept":
            return p[:, :, None] * self._within_split()[None]
        return p[:, :k, None] * p[:, None, k:]

    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        """(n, d) gradients w.r.t. the parameters of a function whose gradients w.r.t. the cell matrices
        at `params_nd` (n, d) are `grad_nkt` (n, k, T): the chain rule through :meth:`cell_weights`."""
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        g = np.asarray(grad_nkt, dtype=np.float64).reshape(len(p), self.k, self.n_tasks)
        if self.mode == "joint":
            return g.reshape(len(p), -1).copy()
        if self.mode == "task":
            return (g * self._within_split()[None]).sum(axis=1)
        if self.mode == "concept":
            return (g * self._within_split()[None]).sum(axis=2)
        return np.concatenate(
            [np.einsum("nkt,nt->nk", g, p[:, self.k :]), np.einsum("nkt,nk->nt", g, p[:, : self.k])], axis=1
        )

    def to_mixture(self, params_d: np.ndarray) -> Mixture:
        """The k x T mixture of one parameter vector (d,)."""
        return Mixture(self.concepts, self.tasks, self.cell_weights(params_d)[0])

    def params_of(self, mixture: Mixture) -> np.ndarray:
        """Parameters (d,) of a mixture; MixAtlasError if this mode cannot represent it."""
        if mixture.concepts != self.concepts or mixture.tasks != self.tasks:
            raise MixAtlasError("mixture cells do not match the space (different concepts or tasks)")
        w = mixture.weights_kt
        params = {
            "joint": w.ravel(),
            "task": w.sum(axis=0),
            "concept": w.sum(axis=1),
            "factored": np.concatenate([w.sum(axis=1), w.sum(axis=0)]),
        }[self.mode]
        if np.abs(self.cell_weights(params)[0] - w).max() > 1e-6:
            raise MixAtlasError(
                f"this mixture is not representable in the {self.mode} space (within={self.within})"
            )
        return params.copy()

    # ----- feasibility -----------------------------------------------------------------------------------

    def feasible_mask(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) bool: which rows of `params_nd` (n, d) meet the simplex and cell-bound constraints
        (ignoring the candidate pool)."""
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        if p.shape[1] != self.dim:
            return np.zeros(len(p), dtype=bool)
        ok = np.all(np.isfinite(p), axis=1) & np.all(p >= -FEASIBLE_TOL, axis=1)
        for block in self.simplex_blocks:
            ok &= np.abs(p[:, block].sum(axis=1) - 1.0) <= FEASIBLE_TOL
        w = self.cell_weights(np.nan_to_num(p)).reshape(len(p), self.k * self.n_tasks)
        ok &= np.all(w >= self.lower_kt.ravel() - FEASIBLE_TOL, axis=1)
        ok &= np.all(w <= self.upper_kt.ravel() + FEASIBLE_TOL, axis=1)
        ok &= np.all(p >= self._param_lower - FEASIBLE_TOL, axis=1)
        ok &= np.all(p <= self._param_upper + FEASIBLE_TOL, axis=1)
        return ok

    def _satisfies(self, params_d: np.ndarray) -> bool:
        p = np.asarray(params_d, dtype=np.float64)
        return p.shape == (self.dim,) and bool(self.feasible_mask(p)[0])

    def candidate_index(self, params_d: np.ndarray) -> int | None:
        """Row of `candidates` equal to `params_d` (within 1e-9), or None."""
        if self.candidates is None:
            return None
        dist = np.abs(self.candidates - np.asarray(params_d, float)[None]).max(axis=1)
        i = int(dist.argmin())
        return i if dist[i] <= _POOL_MATCH_TOL else None

    def is_feasible(self, params_d: np.ndarray) -> bool:
        """True when `params_d` (d,) meets every constraint (and is a pool row for pool spaces)."""
        if self.candidates is not None:
            return self.candidate_index(params_d) is not None
        return self._satisfies(params_d)

    def _project_linear(self, y_nd: np.ndarray) -> np.ndarray:
        return project_box_simplex(y_nd, self._param_lower, self._param_upper)

    def _factor_step(self, p_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Factored mode, one repair step per row: put both factors on their simplex boxes, then
        project the concept weights onto the box the cell bounds imply given the task weights (or the
        other way round when that box is empty). Returns (params (n, d), ok (n,))."""
        k, lower, upper = self.k, self._param_lower, self._param_upper
        a = project_box_simplex(p_nd[:, :k], lower[:k], upper[:k])
        b = project_box_simplex(p_nd[:, k:], lower[k:], upper[k:])
        out = np.concatenate([a, b], axis=1)
        ok = self.feasible_mask(out)
        for first in ("concept", "task"):
            todo = ~ok
            if not todo.any():
                break
            if first == "concept":
                lo, up, good = _factor_box(b[todo], self.lower_kt, self.upper_kt)
                fixed, free = b[todo][good], slice(0, k)
            else:
                lo, up, good = _factor_box(a[todo], self.lower_kt.T, self.upper_kt.T)
                fixed, free = a[todo][good], slice(k, None)
            rows = np.flatnonzero(todo)[good]
            if len(rows):
                moved = project_box_simplex(out[rows, free], lo[good], up[good])
                out[rows] = np.concatenate([moved, fixed] if first == "concept" else [fixed, moved], axis=1)
                ok[rows] = self.feasible_mask(out[rows])
        return out, ok

    def project(self, params_d: np.ndarray) -> np.ndarray:
        """Nearest feasible parameters (d,); see :meth:`project_many`."""
        return self.project_many(np.asarray(params_d, dtype=np.float64)[None])[0]

    def project_many(self, params_nd: np.ndarray) -> np.ndarray:
        """Feasible parameters near each row of (n, d): the exact Euclidean projection in the linear
        modes; in factored mode a repair step (:meth:`_factor_step`), retried on points moved towards a
        known feasible point; for pool spaces the nearest pool row."""
        p = np.nan_to_num(np.atleast_2d(np.asarray(params_nd, dtype=np.float64)), nan=0.0)
        if self.candidates is not None:
            dist = ((p[:, None, :] - self.candidates[None]) ** 2).sum(axis=2)
            return self.candidates[dist.argmin(axis=1)].copy()
        if self.mode != "factored":
            return self._project_linear(p)
        out, done = np.repeat(self._anchor[None], len(p), axis=0), np.zeros(len(p), dtype=bool)
        # Under tight caps the factored feasible set is a thin sliver: move towards the known feasible
        # point until the repair succeeds (finely near it, so points keep their own direction).
        for lam in (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995):
            todo = np.flatnonzero(~done)
            if not len(todo):
                break
            moved, ok = self._factor_step((1 - lam) * np.clip(p[todo], 0, None) + lam * self._anchor)
            out[todo[ok]], done[todo[ok]] = moved[ok], True
        return out

    # ----- sampling and reference points -----------------------------------------------------------------

    def _dirichlet(self, n: int, rng: np.random.Generator, alpha: float | np.ndarray) -> np.ndarray:
        alpha_d = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self.dim,))
        parts = []
        for block in self.simplex_blocks:
            draws = rng.dirichlet(np.maximum(alpha_d[block], 1e-3), size=n)
            parts.append(np.nan_to_num(draws, nan=1.0 / (block.stop - block.start)))
        return np.concatenate(parts, axis=1)

    def sample(self, n: int, rng: np.random.Generator, alpha: float | np.ndarray = 1.0) -> np.ndarray:
        """(n, d) feasible parameters: Dirichlet(alpha) on the parameter simplex (after the lower
        bounds), rejection on the upper bounds, projection of what is left. Pool spaces: random rows."""
        if self.candidates is not None:
            replace = n > len(self.candidates)
            return self.candidates[rng.choice(len(self.candidates), size=n, replace=replace)].copy()
        draws = self._dirichlet(n, rng, alpha)
        if self.mode != "factored":
            slack = 1.0 - self._param_lower.sum()
            draws = self._param_lower[None] + slack * draws
        ok = self.feasible_mask(draws)
        if not ok.all():
            draws[~ok] = self.project_many(draws[~ok])
        return draws

    def _natural_raw(self) -> np.ndarray:
        counts = self.counts_kt / self.counts_kt.sum()
        return {
            "joint": counts.ravel(),
            "task": counts.sum(axis=0),
            "concept": counts.sum(axis=1),
            "factored": np.concatenate([counts.sum(axis=1), counts.sum(axis=0)]),
        }[self.mode]

    def _uniform_raw(self) -> np.ndarray:
        sizes = [block.stop - block.start for block in self.simplex_blocks]
        return np.concatenate([np.full(size, 1.0 / size) for size in sizes])

    def natural_params(self) -> np.ndarray:
        """Parameters proportional to cell counts (the corpus as is), made feasible."""
        return self.project(self._natural_raw())

    def uniform_params(self) -> np.ndarray:
        """Equal weight on every parameter of each simplex, made feasible."""
        return self.project(self._uniform_raw())

    # ----- persistence -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-able description (stored in the study); inverse of :meth:`from_dict`."""
        return {
            "concepts": list(self.concepts),
            "tasks": list(self.tasks),
            "counts": self.counts_kt.tolist(),
            "mode": self.mode,
            "within": self.within,
            "lower": self.user_lower_kt.tolist(),
            "upper": self.user_upper_kt.tolist(),
            "frozen": [[self.concepts[c], self.tasks[t], w] for (c, t), w in self.frozen.items()],
            "planned_samples": self.planned_samples,
            "max_epochs": self.max_epochs,
            "candidates": None if self.candidates is None else self.candidates.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MixtureSpace:
        try:
            return cls(
                data["concepts"],
                data["tasks"],
                np.asarray(data["counts"], float),
                mode=data.get("mode", "joint"),
                within=data.get("within", "natural"),
                lower_kt=np.asarray(data["lower"], float) if data.get("lower") is not None else None,
                upper_kt=np.asarray(data["upper"], float) if data.get("upper") is not None else None,
                frozen={(c, t): w for c, t, w in data.get("frozen") or []},
                planned_samples=data.get("planned_samples"),
                max_epochs=data.get("max_epochs"),
                candidates=None if data.get("candidates") is None else np.asarray(data["candidates"], float),
            )
        except KeyError as exc:
            raise MixAtlasError(f"space description misses key {exc}") from None

    def describe(self) -> str:
        """One line: mode, cells, dimension and active constraints."""
        parts = [f"{self.mode} space: {self.k} concepts x {self.n_tasks} tasks, d={self.dim}"]
        if self.mode in ("task", "concept"):
            parts.append(f"within={self.within}")
        n_bounded = int(np.sum((self.user_lower_kt > 0) | (self.user_upper_kt < 1)))
        if n_bounded:
            parts.append(f"bounds on {n_bounded} cells")
        if self.frozen:
            parts.append(f"{len(self.frozen)} frozen cells")
        if self.planned_samples is not None:
            parts.append(f"epoch cap {self.max_epochs:g} epochs of {self.planned_samples:.4g} samples")
        if self.candidates is not None:
            parts.append(f"pool of {len(self.candidates)} candidates")
        return ", ".join(parts)
