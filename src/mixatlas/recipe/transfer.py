"""Move a recipe to a new corpus: the same cell weights on the new atlas's cells.

The new atlas must share the old one's concept centroids (made with `mixatlas atlas assign`), so concept i
means the same visual cluster in both. With `force`, concepts and tasks are matched by name instead.
Cells the new corpus lacks (0 samples) lose their weight by the rule in :func:`redistribute`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.recipe.recipe import Recipe, now_iso
from mixatlas.space import Mixture

REDISTRIBUTION_RULE = (
    "weight of an empty cell goes to the non-empty cells of the same task, in proportion to their recipe "
    "weights (or to their sample counts if those weights are all 0); if the task has no non-empty cell, to "
    "the same concept's cells likewise; else to all non-empty cells"
)


def redistribute(weights_kt: np.ndarray, counts_kt: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Move the weight of empty cells (count 0) onto non-empty ones; see `REDISTRIBUTION_RULE`.

    Args:
        weights_kt: (k, T) recipe weights summing to 1.
        counts_kt: (k, T) sample counts of the new corpus per cell.
    Returns:
        (k, T) new weights summing to 1 with zero weight on every empty cell, and one record per emptied
        cell with positive weight: {"concept": i, "task": j, "weight": w, "to": "task"|"concept"|"all"}.
        Every move is computed from the original weights, so the result does not depend on cell order.
    """
    w = np.asarray(weights_kt, dtype=np.float64)
    present = np.asarray(counts_kt) > 0
    if not present.any():
        raise MixAtlasError("the new atlas has no samples in any cell; check the atlas")
    new = np.where(present, w, 0.0)
    moves = []
    for i, j in np.argwhere(~present & (w > 0)):
        scopes = (("task", _column(present, j)), ("concept", _row(present, i)), ("all", present))
        scope, mask = next((name, m) for name, m in scopes if m.any())
        share = np.where(mask, w, 0.0)
        if share.sum() <= 0:
            share = np.where(mask, counts_kt, 0).astype(np.float64)
        new += w[i, j] * share / share.sum()
        moves.append({"concept": int(i), "task": int(j), "weight": float(w[i, j]), "to": scope})
    return new / new.sum(), moves


def _column(present: np.ndarray, j: int) -> np.ndarray:
    mask = np.zeros_like(present)
    mask[:, j] = present[:, j]
    return mask


def _row(present: np.ndarray, i: int) -> np.ndarray:
    mask = np.zeros_like(present)
    mask[i, :] = present[i, :]
    return mask


def apply_recipe(recipe: Recipe, new_atlas: Any, force: bool = False) -> Recipe:
    """The recipe's cell weights on `new_atlas`'s cells, empty cells redistributed, transfer recorded.

    Args:
        recipe: a recipe made on some atlas.
        new_atlas: a :class:`mixatlas.atlas.Atlas` (`concepts`, `tasks`, `counts` (k, T), fingerprints).
        force: match concepts/tasks by name when the centroids differ (`--transfer` on the CLI).
    Raises:
        MixAtlasError: different centroids without `force`, or no shared concept/task names.
    """
    same_centroids = (recipe.centroids_fingerprint is not None
                      and recipe.centroids_fingerprint == new_atlas.centroids_fingerprint)
    if not same_centroids and not force:
        raise MixAtlasError(
            f"atlas {str(new_atlas.fingerprint)[:12]} has other concept centroids than the recipe's atlas; "
            "make it with `mixatlas atlas assign` from the recipe's atlas or pass --transfer to match by name"
        )
    new_concepts, new_tasks = tuple(new_atlas.concepts), tuple(new_atlas.tasks)
    if same_centroids and len(new_concepts) != len(recipe.concepts):
        raise MixAtlasError(f"atlas has {len(new_concepts)} concepts, the recipe {len(recipe.concepts)}; "
                            "the atlases do not share centroids")
    # Concept identity is the centroid index when centroids are shared, the name otherwise.
    concept_map = (list(range(len(new_concepts))) if same_centroids
                   else [new_concepts.index(c) if c in new_concepts else -1 for c in recipe.concepts])
    task_map = [new_tasks.index(t) if t in new_tasks else -1 for t in recipe.tasks]
    if max(concept_map) < 0 or max(task_map) < 0:
        raise MixAtlasError("the recipe and the atlas share no concept or no task names; nothing to transfer")

    counts = np.asarray(new_atlas.counts, dtype=np.int64)
    counts_on_recipe_grid = np.zeros(recipe.weights_kt.shape, dtype=np.int64)
    for i, ni in enumerate(concept_map):
        for j, nj in enumerate(task_map):
            if ni >= 0 and nj >= 0:
                counts_on_recipe_grid[i, j] = counts[ni, nj]
    moved_kt, moves = redistribute(recipe.weights_kt, counts_on_recipe_grid)
    new_w = np.zeros((len(new_concepts), len(new_tasks)))
    for i, ni in enumerate(concept_map):
        for j, nj in enumerate(task_map):
            if ni >= 0 and nj >= 0:
                new_w[ni, nj] += moved_kt[i, j]

    missing = [{"cell": f"{recipe.concepts[m['concept']]}/{recipe.tasks[m['task']]}",
                "weight": m["weight"], "moved_to": m["to"]} for m in moves]
    moved = sum(m["weight"] for m in moves)
    note = {
        "from_atlas": recipe.atlas_fingerprint,
        "to_atlas": new_atlas.fingerprint,
        "matched_by": "centroids" if same_centroids else "names",
        "missing_cells": missing,
        "moved_weight": moved,
        "rule": REDISTRIBUTION_RULE,
        "created": now_iso(),
        "summary": (f"applied to atlas {str(new_atlas.fingerprint)[:12]} (matched by "
                    f"{'centroids' if same_centroids else 'names'}); {len(missing)} empty cells, "
                    f"{100 * moved:.1f}% of the weight redistributed"),
    }
    return recipe.with_transfer(Mixture(new_concepts, new_tasks, new_w), new_atlas.fingerprint,
                                new_atlas.centroids_fingerprint, note)
