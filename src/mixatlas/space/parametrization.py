"""Search modes: how d parameters become the (k, T) cell matrix, one `Parametrization` class per mode.

  - `JointParametrization`: the (k*T)-simplex, the cell matrix flattened row-major (d = k*T).
  - `TaskParametrization`: the T-simplex; inside each task concepts keep a fixed split (`within`).
  - `ConceptParametrization`: the k-simplex; inside each concept tasks keep a fixed split.
  - `FactoredParametrization`: concat(concept weights on the k-simplex, task weights on the T-simplex); the
    cell matrix is their outer product (d = k + T).
The first three are linear in the parameters, so cell bounds become exact per-parameter boxes and the
projection is exact; the factored one is bilinear and repairs points instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.space.mixture import Mixture

FEASIBLE_TOL = 1e-9
WITHIN = ("natural", "uniform")


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


class Parametrization(ABC):
    """The parameters of one search mode under per-cell bounds.

    Built from the cell counts `counts_kt` (k, T), the effective cell bounds `lower_kt`/`upper_kt`
    (k, T) and the within-line split (one of WITHIN; used by the task and concept modes). Knows the
    dimension d, which slices of a parameter vector are simplices, the map params (n, d) -> cell matrices
    (n, k, T) and its chain rule, per-parameter boxes, feasibility, projection and sampling. Raises
    MixAtlasError at construction when no parameter vector meets the bounds.
    """

    name: ClassVar[str]  # the mode's name in configs, studies and recipes
    part: ClassVar[str]  # what one parameter weighs, for tables: "task", "concept" or "cell"
    free_cells: ClassVar[bool] = False  # every cell weight is a parameter of its own
    exact_projection: ClassVar[bool] = True  # `project_many` is the Euclidean projection

    def __init__(self, concepts: tuple[str, ...], tasks: tuple[str, ...], counts_kt: np.ndarray,
                 lower_kt: np.ndarray, upper_kt: np.ndarray, within: str = "natural") -> None:
        self.concepts, self.tasks, self.counts_kt = concepts, tasks, counts_kt
        self.lower_kt, self.upper_kt, self.within = lower_kt, upper_kt, within
        self.lower_d, self.upper_d = self._param_boxes()
        self.anchor_d = self._find_anchor()

    # ----- the map ---------------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return len(self.concepts)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of parameters d."""

    @property
    def simplex_blocks(self) -> list[slice]:
        """Slices of the parameter vector that each live on a simplex."""
        return [slice(0, self.dim)]

    @abstractmethod
    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        """(n, k, T) cell matrices of parameter rows `params_nd` (n, d)."""

    @abstractmethod
    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        """(n, d) chain rule through :meth:`cell_weights` of the cell gradients `grad_nkt` (n, k, T)."""

    @abstractmethod
    def marginal_params(self, weights_kt: np.ndarray) -> np.ndarray:
        """(d,) the parameters whose cell matrix is `weights_kt` (k, T) when this mode can represent it."""

    @abstractmethod
    def _param_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """(d,) lower and upper boxes on the parameters implied by the cell bounds."""

    # ----- feasibility and projection --------------------------------------------------------------------

    def feasible_mask(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) bool: which rows of `params_nd` (n, d) meet the simplex and cell-bound constraints."""
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        if p.shape[1] != self.dim:
            return np.zeros(len(p), dtype=bool)
        ok = np.all(np.isfinite(p), axis=1) & np.all(p >= -FEASIBLE_TOL, axis=1)
        for block in self.simplex_blocks:
            ok &= np.abs(p[:, block].sum(axis=1) - 1.0) <= FEASIBLE_TOL
        w = self.cell_weights(np.nan_to_num(p)).reshape(len(p), self.k * self.n_tasks)
        ok &= np.all(w >= self.lower_kt.ravel() - FEASIBLE_TOL, axis=1)
        ok &= np.all(w <= self.upper_kt.ravel() + FEASIBLE_TOL, axis=1)
        ok &= np.all(p >= self.lower_d - FEASIBLE_TOL, axis=1)
        ok &= np.all(p <= self.upper_d + FEASIBLE_TOL, axis=1)
        return ok

    @abstractmethod
    def project_many(self, params_nd: np.ndarray) -> np.ndarray:
        """(n, d) feasible parameters near each row of `params_nd` (n, d)."""

    @abstractmethod
    def _feasible_point(self) -> np.ndarray:
        """One feasible parameter vector (d,), once each block's boxes admit a sum of 1; or MixAtlasError."""

    def _find_anchor(self) -> np.ndarray:
        """One feasible parameter vector (the fallback of projection), or MixAtlasError."""
        for block in self.simplex_blocks:
            lo, up = self.lower_d[block].sum(), self.upper_d[block].sum()
            if lo > 1 + FEASIBLE_TOL or up < 1 - FEASIBLE_TOL:
                raise MixAtlasError(
                    f"{self.name} space constraints are infeasible: lower bounds sum to {lo:.4g} and upper"
                    f" bounds (epoch cap included) to {up:.4g}, but weights must sum to 1; loosen the bounds,"
                    " raise max_epochs or lower planned_samples"
                )
        return self._feasible_point()

    # ----- sampling and reference points -----------------------------------------------------------------

    def dirichlet(self, n: int, rng: np.random.Generator, alpha: float | np.ndarray) -> np.ndarray:
        """(n, d) Dirichlet(alpha) draws, one independent simplex per block (bounds ignored)."""
        alpha_d = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self.dim,))
        parts = []
        for block in self.simplex_blocks:
            draws = rng.dirichlet(np.maximum(alpha_d[block], 1e-3), size=n)
            parts.append(np.nan_to_num(draws, nan=1.0 / (block.stop - block.start)))
        return np.concatenate(parts, axis=1)

    @abstractmethod
    def _above_lower(self, draws_nd: np.ndarray) -> np.ndarray:
        """Dirichlet draws (n, d) moved into the region above the parameter lower bounds."""

    def sample(self, n: int, rng: np.random.Generator, alpha: float | np.ndarray = 1.0) -> np.ndarray:
        """(n, d) feasible parameters: Dirichlet(alpha) on the parameter simplex (after the lower
        bounds), rejection on the upper bounds, projection of what is left."""
        draws = self._above_lower(self.dirichlet(n, rng, alpha))
        ok = self.feasible_mask(draws)
        if not ok.all():
            draws[~ok] = self.project_many(draws[~ok])
        return draws

    def natural_raw(self) -> np.ndarray:
        """(d,) parameters of the cell counts' proportions (not yet made feasible)."""
        return self.marginal_params(self.counts_kt / self.counts_kt.sum())

    def uniform_raw(self) -> np.ndarray:
        """(d,) equal weight on every parameter of each simplex (not yet made feasible)."""
        sizes = [block.stop - block.start for block in self.simplex_blocks]
        return np.concatenate([np.full(size, 1.0 / size) for size in sizes])

    # ----- description -----------------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """What a recipe records about the mode: {"mode": name} (plus "within" where it applies)."""
        return {"mode": self.name}

    def parts(self, mixture: Mixture) -> tuple[list[str], np.ndarray]:
        """Names and weights of what this mode weighs, for tables (default: every cell, "concept/task")."""
        single = len(mixture.tasks) == 1
        names = [c if single else f"{c}/{t}" for c in mixture.concepts for t in mixture.tasks]
        return names, mixture.weights_kt.ravel()


class _LinearParametrization(Parametrization):
    """Cell weights linear in the parameters: bounds are exact boxes, projection is exact."""

    def project_many(self, params_nd: np.ndarray) -> np.ndarray:
        """The exact Euclidean projection of each row (n, d) onto the boxed simplex."""
        return project_box_simplex(params_nd, self.lower_d, self.upper_d)

    def _feasible_point(self) -> np.ndarray:
        return self.project_many(self.natural_raw()[None])[0]

    def _above_lower(self, draws_nd: np.ndarray) -> np.ndarray:
        return self.lower_d[None] + (1.0 - self.lower_d.sum()) * draws_nd


class JointParametrization(_LinearParametrization):
    """Every cell free: the (k*T)-simplex, the cell matrix flattened row-major."""

    name = "joint"
    part = "cell"
    free_cells = True

    @property
    def dim(self) -> int:
        return self.k * self.n_tasks

    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        return p.reshape(-1, self.k, self.n_tasks)

    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        n = len(np.atleast_2d(params_nd))
        return np.asarray(grad_nkt, dtype=np.float64).reshape(n, -1).copy()

    def marginal_params(self, weights_kt: np.ndarray) -> np.ndarray:
        return np.asarray(weights_kt, dtype=np.float64).ravel()

    def _param_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lower_kt.ravel(), self.upper_kt.ravel()


class _SplitParametrization(_LinearParametrization):
    """One axis searched on its simplex; along the other, each line keeps a fixed split (`within`)."""

    axis: ClassVar[int]  # the cell-matrix axis summed over by the fixed split: 0 in task mode, 1 in concept

    def __init__(self, concepts: tuple[str, ...], tasks: tuple[str, ...], counts_kt: np.ndarray,
                 lower_kt: np.ndarray, upper_kt: np.ndarray, within: str = "natural") -> None:
        base = counts_kt if within == "natural" else (counts_kt > 0).astype(float)
        sums = base.sum(axis=self.axis, keepdims=True)
        # (k, T): columns sum to 1 in task mode, rows in concept mode (0 for empty lines)
        self.split_kt = np.divide(base, sums, out=np.zeros_like(base), where=sums > 0)
        super().__init__(concepts, tasks, counts_kt, lower_kt, upper_kt, within)

    def _lines(self) -> list[str]:
        """Names of the searched lines (tasks in task mode, concepts in concept mode)."""
        return list(self.tasks if self.axis == 0 else self.concepts)

    def _line_cells(self, matrix_kt: np.ndarray, i: int) -> np.ndarray:
        return matrix_kt[:, i] if self.axis == 0 else matrix_kt[i, :]

    @property
    def dim(self) -> int:
        return len(self._lines())

    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        return np.expand_dims(p, 1 + self.axis) * self.split_kt[None]

    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        n = len(np.atleast_2d(params_nd))
        g = np.asarray(grad_nkt, dtype=np.float64).reshape(n, self.k, self.n_tasks)
        return (g * self.split_kt[None]).sum(axis=1 + self.axis)

    def marginal_params(self, weights_kt: np.ndarray) -> np.ndarray:
        return np.asarray(weights_kt, dtype=np.float64).sum(axis=self.axis)

    def _param_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact boxes: a line's weight times its split must meet each of its cells' bounds."""
        lines = self._lines()
        lower, upper = np.zeros(len(lines)), np.ones(len(lines))
        for i, line in enumerate(lines):
            s = self._line_cells(self.split_kt, i)
            lo, up = self._line_cells(self.lower_kt, i), self._line_cells(self.upper_kt, i)
            if np.any((s == 0) & (lo > 0)):
                raise MixAtlasError(
                    f"{self.name} mode: a cell with a lower bound has zero share inside {line!r};"
                    " use the joint mode or drop the bound"
                )
            pos = s > 0
            lower[i] = np.max(lo[pos] / s[pos]) if pos.any() else 0.0
            upper[i] = min(1.0, np.min(up[pos] / s[pos])) if pos.any() else 0.0
            if lower[i] > upper[i] + FEASIBLE_TOL:
                raise MixAtlasError(
                    f"{self.name} mode: the cell bounds inside {line!r} conflict (with the fixed"
                    f" {self.within} split they need its weight >= {lower[i]:.4g} and <= {upper[i]:.4g});"
                    " loosen the bounds, use within=uniform or the joint mode"
                )
        return lower, np.maximum(upper, lower)

    def settings(self) -> dict[str, str]:
        return {"mode": self.name, "within": self.within}

    def parts(self, mixture: Mixture) -> tuple[list[str], np.ndarray]:
        marginal = mixture.task_marginal if self.axis == 0 else mixture.concept_marginal
        return self._lines(), marginal


class TaskParametrization(_SplitParametrization):
    """The paper's task axis: a point on the T-simplex; concepts keep a fixed split inside each task."""

    name = "task"
    part = "task"
    axis = 0


class ConceptParametrization(_SplitParametrization):
    """The paper's concept axis: a point on the k-simplex; tasks keep a fixed split inside each concept."""

    name = "concept"
    part = "concept"
    axis = 1


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


class FactoredParametrization(Parametrization):
    """Concept weights (x) task weights on simplex_k x simplex_T; the cell matrix is their outer product.

    Cell bounds are bilinear here: the parameter boxes are only implied (cell bounds summed over the other
    axis) and points are repaired, not projected.
    """

    name = "factored"
    part = "cell"
    exact_projection = False

    @property
    def dim(self) -> int:
        return self.k + self.n_tasks

    @property
    def simplex_blocks(self) -> list[slice]:
        return [slice(0, self.k), slice(self.k, self.k + self.n_tasks)]

    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        return p[:, : self.k, None] * p[:, None, self.k :]

    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        g = np.asarray(grad_nkt, dtype=np.float64).reshape(len(p), self.k, self.n_tasks)
        return np.concatenate(
            [np.einsum("nkt,nt->nk", g, p[:, self.k :]), np.einsum("nkt,nk->nt", g, p[:, : self.k])], axis=1
        )

    def marginal_params(self, weights_kt: np.ndarray) -> np.ndarray:
        w = np.asarray(weights_kt, dtype=np.float64)
        return np.concatenate([w.sum(axis=1), w.sum(axis=0)])

    def _param_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([self.lower_kt.sum(axis=1), self.lower_kt.sum(axis=0)]),
            np.minimum(1.0, np.concatenate([self.upper_kt.sum(axis=1), self.upper_kt.sum(axis=0)])),
        )

    def _above_lower(self, draws_nd: np.ndarray) -> np.ndarray:
        return draws_nd  # the implied boxes are loose; infeasible draws are repaired in `sample`

    def _factor_step(self, p_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One repair step per row: put both factors on their simplex boxes, then project the concept
        weights onto the box the cell bounds imply given the task weights (or the other way round when
        that box is empty). Returns (params (n, d), ok (n,))."""
        k, lower, upper = self.k, self.lower_d, self.upper_d
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

    def project_many(self, params_nd: np.ndarray) -> np.ndarray:
        """A repair step (:meth:`_factor_step`) per row, retried on points moved towards the anchor."""
        p = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
        out, done = np.repeat(self.anchor_d[None], len(p), axis=0), np.zeros(len(p), dtype=bool)
        # Under tight caps the factored feasible set is a thin sliver: move towards the known feasible
        # point until the repair succeeds (finely near it, so points keep their own direction).
        for lam in (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995):
            todo = np.flatnonzero(~done)
            if not len(todo):
                break
            moved, ok = self._factor_step((1 - lam) * np.clip(p[todo], 0, None) + lam * self.anchor_d)
            out[todo[ok]], done[todo[ok]] = moved[ok], True
        return out

    def _feasible_point(self) -> np.ndarray:
        draws = self.dirichlet(256, np.random.default_rng(0), 1.0)
        starts = np.concatenate([self.natural_raw()[None], self.uniform_raw()[None], draws])
        repaired, ok = self._factor_step(starts)
        if ok.any():
            return repaired[int(np.argmax(ok))]
        found = self._feasibility_search()
        if found is not None:
            return found
        raise MixAtlasError(
            "factored space constraints are infeasible (no outer product of concept and task weights meets"
            " the cell bounds/caps); use the joint mode or loosen the bounds"
        )

    def _feasibility_search(self) -> np.ndarray | None:
        """A feasible point found by SLSQP minimizing the squared cell-bound violation of the outer
        product (from the natural, uniform, then a random start), then repaired; or None."""
        from scipy.optimize import minimize

        k, lower, upper = self.k, self.lower_kt.ravel(), self.upper_kt.ravel()

        def violation(x: np.ndarray) -> float:
            cells = np.outer(x[:k], x[k:]).ravel()
            return float(
                1e4 * (np.clip(lower - cells, 0, None) ** 2 + np.clip(cells - upper, 0, None) ** 2).sum()
            )

        random_start = self.dirichlet(1, np.random.default_rng(0), 1.0)[0]
        for start in (self.natural_raw(), self.uniform_raw(), random_start):
            result = minimize(
                violation,
                start,
                method="SLSQP",
                bounds=list(zip(self.lower_d, self.upper_d, strict=True)),
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


PARAMETRIZATIONS: dict[str, type[Parametrization]] = {
    cls.name: cls
    for cls in (TaskParametrization, ConceptParametrization, FactoredParametrization, JointParametrization)
}
MODES = tuple(PARAMETRIZATIONS)
