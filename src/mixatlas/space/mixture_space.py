"""The MixtureSpace: atlas cells, a search mode (a `Parametrization`) and constraints; params <-> mixtures."""

from __future__ import annotations

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.space.mixture import Mixture
from mixatlas.space.parametrization import FEASIBLE_TOL, MODES, PARAMETRIZATIONS, WITHIN

_POOL_MATCH_TOL = 1e-9


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

    `mode` (one of MODES: task, concept, factored, joint) picks the `Parametrization` that defines the
    parameters `params_d` (see `mixatlas.space.parametrization`); `within` (natural|uniform) is the fixed
    split inside each line of the task and concept modes. Constraints act on the resulting cell weights:
    per-cell `lower_kt`/`upper_kt`, `frozen` cells (fixed weight) and the epoch cap
    `w * planned_samples <= count * max_epochs`. Cells with zero count get weight 0. A finite
    `candidates` pool (c, d) makes the pool the feasible set.
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
        if mode not in PARAMETRIZATIONS:
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
        self.parametrization = PARAMETRIZATIONS[mode](self.concepts, self.tasks, counts, self.lower_kt,
                                                      self.upper_kt, within)
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

    # ----- shape and mapping: the parametrization's -----------------------------------------------------

    @property
    def mode(self) -> str:
        """The search mode's name (one of MODES)."""
        return self.parametrization.name

    @property
    def k(self) -> int:
        return len(self.concepts)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        return self.parametrization.dim

    @property
    def simplex_blocks(self) -> list[slice]:
        """Slices of the parameter vector that each live on a simplex (two for factored, else one)."""
        return self.parametrization.simplex_blocks

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(d,) lower and upper parameter boxes (exact constraints except in factored mode)."""
        return self.parametrization.lower_d.copy(), self.parametrization.upper_d.copy()

    def cell_weights(self, params_nd: np.ndarray) -> np.ndarray:
        """(n, k, T) cell matrices of parameter rows `params_nd` (n, d)."""
        return self.parametrization.cell_weights(params_nd)

    def params_gradient(self, params_nd: np.ndarray, grad_nkt: np.ndarray) -> np.ndarray:
        """(n, d) gradients w.r.t. the parameters of a function whose gradients w.r.t. the cell matrices
        at `params_nd` (n, d) are `grad_nkt` (n, k, T): the chain rule through :meth:`cell_weights`."""
        return self.parametrization.params_gradient(params_nd, grad_nkt)

    def to_mixture(self, params_d: np.ndarray) -> Mixture:
        """The k x T mixture of one parameter vector (d,)."""
        return Mixture(self.concepts, self.tasks, self.cell_weights(params_d)[0])

    def params_of(self, mixture: Mixture) -> np.ndarray:
        """Parameters (d,) of a mixture; MixAtlasError if this mode cannot represent it."""
        if mixture.concepts != self.concepts or mixture.tasks != self.tasks:
            raise MixAtlasError("mixture cells do not match the space (different concepts or tasks)")
        params = self.parametrization.marginal_params(mixture.weights_kt)
        if np.abs(self.cell_weights(params)[0] - mixture.weights_kt).max() > 1e-6:
            raise MixAtlasError(
                f"this mixture is not representable in the {self.mode} space (within={self.within})"
            )
        return params.copy()

    def parts(self, mixture: Mixture) -> tuple[list[str], np.ndarray]:
        """Names and weights of what the mode searches (tasks, concepts or cells), for tables."""
        return self.parametrization.parts(mixture)

    # ----- feasibility -----------------------------------------------------------------------------------

    def feasible_mask(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) bool: which rows of `params_nd` (n, d) meet the simplex and cell-bound constraints
        (ignoring the candidate pool)."""
        return self.parametrization.feasible_mask(params_nd)

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
        p = np.asarray(params_d, dtype=np.float64)
        return p.shape == (self.dim,) and bool(self.feasible_mask(p)[0])

    def project(self, params_d: np.ndarray) -> np.ndarray:
        """Nearest feasible parameters (d,); see :meth:`project_many`."""
        return self.project_many(np.asarray(params_d, dtype=np.float64)[None])[0]

    def project_many(self, params_nd: np.ndarray) -> np.ndarray:
        """Feasible parameters near each row of (n, d): the parametrization's projection (exact in the
        linear modes, a repair in factored mode); for pool spaces the nearest pool row."""
        p = np.nan_to_num(np.atleast_2d(np.asarray(params_nd, dtype=np.float64)), nan=0.0)
        if self.candidates is not None:
            dist = ((p[:, None, :] - self.candidates[None]) ** 2).sum(axis=2)
            return self.candidates[dist.argmin(axis=1)].copy()
        return self.parametrization.project_many(p)

    # ----- sampling and reference points -----------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator, alpha: float | np.ndarray = 1.0) -> np.ndarray:
        """(n, d) feasible parameters: Dirichlet(alpha) on the parameter simplex (after the lower
        bounds), rejection on the upper bounds, projection of what is left. Pool spaces: random rows."""
        if self.candidates is not None:
            replace = n > len(self.candidates)
            return self.candidates[rng.choice(len(self.candidates), size=n, replace=replace)].copy()
        return self.parametrization.sample(n, rng, alpha)

    def natural_params(self) -> np.ndarray:
        """Parameters proportional to cell counts (the corpus as is), made feasible."""
        return self.project(self.parametrization.natural_raw())

    def uniform_params(self) -> np.ndarray:
        """Equal weight on every parameter of each simplex, made feasible."""
        return self.project(self.parametrization.uniform_raw())

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

    def settings(self) -> dict[str, str]:
        """The mode and its options as a recipe records them: {"mode": ...} plus "within" where it applies."""
        return self.parametrization.settings()

    def describe(self) -> str:
        """One line: mode, cells, dimension and active constraints."""
        settings = self.settings()
        parts = [f"{self.mode} space: {self.k} concepts x {self.n_tasks} tasks, d={self.dim}"]
        parts += [f"{key}={value}" for key, value in settings.items() if key != "mode"]
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
