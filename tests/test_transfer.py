"""Moving a recipe to a second synthetic corpus through `atlas assign`, and the redistribution rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mixatlas.atlas import Atlas, assign_atlas, build_atlas
from mixatlas.corpus.synth import synthesize
from mixatlas.errors import MixAtlasError
from mixatlas.recipe import Recipe, apply_recipe, redistribute
from mixatlas.space import Mixture

DROPPED_TASK = "ocr"


@pytest.fixture(scope="module")
def atlases(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Atlas, Atlas]:
    """(atlas of the shared synthetic corpus, a second corpus without OCR samples assigned onto it)."""
    root = tmp_path_factory.mktemp("transfer")
    first = build_atlas(synth_corpus, root / "atlas-a", embedder="pixels", k=4, workers=1, progress=False)
    synthesize(root / "raw-b", 240, seed=11, eval_per_benchmark=1)
    corpus_b = root / "corpus-b"
    corpus_b.mkdir()
    shutil.copytree(root / "raw-b" / "images", corpus_b / "images")  # links out of the root would be rejects
    kept = [
        line
        for line in (root / "raw-b" / "train.jsonl").read_text().splitlines()
        if json.loads(line)["meta"]["task"] != DROPPED_TASK
    ]
    (corpus_b / "train.jsonl").write_text("\n".join(kept) + "\n")
    second = assign_atlas(first.dir, corpus_b, root / "atlas-b", workers=1, progress=False)
    return first, second


@pytest.fixture(scope="module")
def recipe(atlases: tuple[Atlas, Atlas]) -> Recipe:
    first, _ = atlases
    weights = np.random.default_rng(4).dirichlet(np.ones(first.counts.size)).reshape(first.counts.shape)
    return Recipe(
        Mixture(tuple(first.concepts), tuple(first.tasks), weights),
        first.fingerprint,
        first.centroids_fingerprint,
        provenance={"study": "s.db", "method": "gp-ucb"},
    )


def test_redistribute_task_then_concept_then_all() -> None:
    w = np.array([[0.2, 0.1, 0.1], [0.3, 0.2, 0.1]])
    # one cell of task 0 empty: its weight goes to the rest of task 0
    new, moves = redistribute(w, np.array([[0, 5, 5], [5, 5, 5]]))
    np.testing.assert_allclose(new, [[0.0, 0.1, 0.1], [0.5, 0.2, 0.1]])
    assert moves == [{"concept": 0, "task": 0, "weight": 0.2, "to": "task"}]
    # a whole task empty: each cell's weight goes to its own concept, in proportion to the recipe
    new, moves = redistribute(w, np.array([[5, 0, 5], [5, 0, 5]]))
    np.testing.assert_allclose(new, [[0.2 + 0.1 * 2 / 3, 0.0, 0.1 + 0.1 / 3], [0.3 + 0.2 * 0.75, 0.0, 0.15]])
    assert [m["to"] for m in moves] == ["concept", "concept"]
    # cell (0, 0) has neither its task nor its concept left: it spreads over all remaining cells
    new, moves = redistribute(w, np.array([[0, 0, 0], [0, 5, 5]]))
    assert [m["to"] for m in moves] == ["all", "task", "task", "concept"]
    np.testing.assert_allclose(new, [[0, 0, 0], [0, 19 / 30, 11 / 30]])  # by hand: .2+.2*2/3+.1+.3*2/3
    # receivers with zero recipe weight share in proportion to their sample counts
    new, _ = redistribute(np.array([[1.0, 0.0, 0.0]]), np.array([[0, 1, 3]]))
    np.testing.assert_allclose(new, [[0.0, 0.25, 0.75]])
    with pytest.raises(MixAtlasError, match="no samples"):
        redistribute(w, np.zeros((2, 3)))


def test_apply_on_an_assigned_atlas(atlases: tuple[Atlas, Atlas], recipe: Recipe) -> None:
    first, second = atlases
    assert second.centroids_fingerprint == first.centroids_fingerprint != second.fingerprint
    ocr = second.tasks.index(DROPPED_TASK)
    assert second.counts[:, ocr].sum() == 0 and (second.counts > 0).sum() > 10
    moved = apply_recipe(recipe, second)
    assert moved.atlas_fingerprint == second.fingerprint
    assert moved.weights_kt.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(moved.weights_kt[second.counts == 0], 0.0)
    empty = (second.counts == 0) & (recipe.weights_kt > 0)
    note = moved.provenance["transfers"][-1]
    assert note["matched_by"] == "centroids" and note["to_atlas"] == second.fingerprint
    assert {c["cell"] for c in note["missing_cells"]} == {
        f"{second.concepts[i]}/{second.tasks[j]}" for i, j in np.argwhere(empty)
    }
    assert note["moved_weight"] == pytest.approx(recipe.weights_kt[empty].sum())
    assert moved.provenance["study"] == "s.db"  # the original provenance stays
    # cells present in both keep their weight plus only what the rule moved onto them
    present = second.counts > 0
    assert np.all(moved.weights_kt[present] >= recipe.weights_kt[present] - 1e-12)


def test_other_centroids_refused_unless_forced(atlases: tuple[Atlas, Atlas], recipe: Recipe) -> None:
    _, second = atlases
    foreign = Recipe(recipe.mixture, "fp-other", "centroids-other")
    with pytest.raises(MixAtlasError, match="atlas assign"):
        apply_recipe(foreign, second)
    by_name = apply_recipe(foreign, second, force=True)
    assert by_name.provenance["transfers"][-1]["matched_by"] == "names"
    np.testing.assert_allclose(by_name.weights_kt, apply_recipe(recipe, second).weights_kt)


def test_load_refuses_another_atlas(atlases: tuple[Atlas, Atlas], recipe: Recipe, tmp_path: Path) -> None:
    first, second = atlases
    path = tmp_path / "r.yaml"
    recipe.save(path)
    assert Recipe.load(path, atlas=first).weights_kt.shape == first.counts.shape
    with pytest.raises(MixAtlasError, match="recipe apply` or pass --transfer") as info:
        Recipe.load(path, atlas=second)
    assert "\n" not in str(info.value)
    assert Recipe.load(path, atlas=second, transfer=True).atlas_fingerprint == first.fingerprint


def test_cli_apply_and_materialize_with_transfer(
    atlases: tuple[Atlas, Atlas], recipe: Recipe, tmp_path: Path
) -> None:
    _, second = atlases
    recipe.save(tmp_path / "r.yaml")
    cli = [sys.executable, "-c", "from mixatlas.cli import main; main()"]
    apply = [*cli, "recipe", "apply", str(tmp_path / "r.yaml"), "--atlas", str(second.dir)]
    applied = subprocess.run(
        [*apply, "--out", str(tmp_path / "r2.yaml")], capture_output=True, text=True, timeout=120
    )
    assert applied.returncode == 0, applied.stderr
    assert f"/{DROPPED_TASK} (" in applied.stderr  # each empty cell is reported
    Recipe.load(tmp_path / "r2.yaml", atlas=second)  # now belongs to the new atlas
    materialize = [
        *cli,
        "materialize",
        "--atlas",
        str(second.dir),
        "--recipe",
        str(tmp_path / "r.yaml"),
        "--samples",
        "60",
        "--max-epochs",
        "5",
    ]
    refused = subprocess.run(
        [*materialize, "--out", str(tmp_path / "m1")], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "--transfer" in refused.stderr
    forced = subprocess.run(
        [*materialize, "--transfer", "--out", str(tmp_path / "m2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert forced.returncode == 0, forced.stderr
    rows = [json.loads(line) for line in (tmp_path / "m2" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and all(r["task"] != DROPPED_TASK for r in rows)
