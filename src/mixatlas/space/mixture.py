"""The Mixture: non-negative weights over the k x T atlas cells (concepts x tasks) summing to 1."""

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
