"""A recipe made before `mixatlas atlas name` still materializes on the renamed atlas (cells matched by
index, said in one line, the manifest in the new names); a recipe of another atlas is still refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_mixatlas
from mixatlas.atlas import Atlas
from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Result, Target
from mixatlas.objectives.callable import CallableObjective
from mixatlas.recipe import Recipe, recipe_from_study
from mixatlas.recipe.materialize import materialize
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study
from mixatlas.space import Mixture, MixtureSpace

NEW_NAMES = ["forms", "skylines", "charts", "faces"]


def ocr_heavy_loss(mixture: Mixture) -> Result:
    return Result(metrics={"loss": float(1.0 + (mixture.weights_kt[:, 1].sum() - 0.6) ** 2)})


@pytest.fixture(scope="module")
def renamed(pixels_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(atlas folder renamed after the recipe was made, the recipe YAML made on it before the rename)."""
    root = tmp_path_factory.mktemp("rename")
    atlas_dir = root / "atlas"
    shutil.copytree(pixels_atlas, atlas_dir)
    atlas = Atlas.load(atlas_dir)
    assert atlas.concepts == ["c0", "c1", "c2", "c3"]
    path = root / "task-random" / "study.db"
    study = Study.create(path, space=MixtureSpace.from_atlas(atlas, mode="task"),
                         objective_spec={"kind": "callable", "atlas_dir": str(atlas_dir)},
                         target=Target.parse("loss", minimize=True), method="random", budget=3, seed=0,
                         meta={"atlas_fingerprint": atlas.fingerprint,
                               "centroids_fingerprint": atlas.centroids_fingerprint})
    with make_executor("local", parallel=1, folder=root) as executor:
        run_search(study, CallableObjective(ocr_heavy_loss), executor, progress=False)
    study.close()
    recipe_from_study(path).save(root / "recipe.yaml")
    (root / "names.yaml").write_text("".join(f"- {name}\n" for name in NEW_NAMES))
    run = run_mixatlas("atlas", "name", atlas_dir, "--names", root / "names.yaml")
    assert run.code == 0, run.err
    return atlas_dir, root / "recipe.yaml"


def test_materialize_matches_renamed_concepts_by_index(renamed: tuple[Path, Path], tmp_path: Path) -> None:
    atlas_dir, recipe_path = renamed
    assert list(Recipe.load(recipe_path).concepts) == ["c0", "c1", "c2", "c3"]
    run = run_mixatlas("materialize", "--atlas", atlas_dir, "--recipe", recipe_path,
                       "--out", tmp_path / "m", "--samples", "80", "--max-epochs", "10")
    assert run.code == 0, run.err
    assert ("the atlas's concepts were renamed since the recipe was made; matched by index: c0 -> forms, "
            "c1 -> skylines, c2 -> charts, c3 -> faces") in run.err
    rows = [json.loads(line) for line in (tmp_path / "m" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and {row["concept"] for row in rows} <= set(NEW_NAMES)
    # the same cells as before the rename: each concept's rows are those the atlas gives that index
    atlas = Atlas.load(atlas_dir)
    table = atlas.table(columns=["id", "concept"])
    concept_of = dict(zip(table["id"].to_pylist(), table["concept"].to_pylist(), strict=True))
    assert all(NEW_NAMES[concept_of[row["id"]]] == row["concept"] for row in rows)
    counts = json.loads((tmp_path / "m" / "materialize.json").read_text())["cell_counts"]
    assert [sum(per_task) for per_task in counts] == [sum(row["concept"] == name for row in rows)
                                                      for name in NEW_NAMES]


def test_a_recipe_of_another_atlas_is_still_refused(renamed: tuple[Path, Path], tmp_path: Path) -> None:
    atlas_dir, recipe_path = renamed
    other = dataclasses.replace(Recipe.load(recipe_path), atlas_fingerprint="f" * 64,
                                centroids_fingerprint="e" * 64)
    expected = (r"recipe cells \(4 concepts x captioning, ocr, grounding, detection, vqa\) are not those of "
                r"this atlas .*; move it with `mixatlas recipe apply RECIPE --atlas ATLAS --out NEW.yaml`")
    with pytest.raises(MixAtlasError, match=expected):
        materialize(Atlas.load(atlas_dir), other, 20, tmp_path / "m", max_epochs=10)
    assert not (tmp_path / "m").exists()
