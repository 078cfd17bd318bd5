"""Issue 13's CLI features: concept names (`c0..c{k-1}` by default, set by hand with `mixatlas atlas name`,
carried into `atlas show`, a new study's recipe, the materialized manifest and the report) and `--version`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixatlas.atlas import build_atlas
from mixatlas.cli import app
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Result, Target
from mixatlas.objectives.callable import CallableObjective
from mixatlas.space import Mixture, MixtureSpace

NAMES = ["receipts & forms", "skylines $5", "charts"]


def ocr_heavy_loss(mixture: Mixture) -> Result:
    """Lowest when the OCR task weight is near 0.6."""
    return Result(metrics={"loss": float(1.0 + (mixture.weights_kt[:, 1].sum() - 0.6) ** 2)})


@pytest.fixture(scope="module")
def named_atlas(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-concept atlas of the synthetic corpus, renamed through the CLI."""
    root = tmp_path_factory.mktemp("named")
    atlas = build_atlas(synth_corpus, root / "A", k=3, workers=0, progress=False)
    assert atlas.concepts == ["c0", "c1", "c2"]
    grid_before = (atlas.dir / "exemplars.png").read_bytes()
    names = root / "names.yaml"
    names.write_text("c0: receipts & forms\n1: skylines $5\nc2: charts\n")
    result = CliRunner().invoke(app, ["atlas", "name", str(atlas.dir), "--names", str(names)])
    assert result.exit_code == 0, result.output
    assert (atlas.dir / "exemplars.png").read_bytes() != grid_before  # labels redrawn
    return atlas.dir


def test_atlas_show_lists_the_new_names(named_atlas: Path) -> None:
    result = CliRunner().invoke(app, ["atlas", "show", str(named_atlas), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["concepts"] == NAMES


def test_a_bad_names_file_is_one_line_and_changes_nothing(named_atlas: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.yaml"
    names.write_text("- only\n- two\n")
    result = CliRunner().invoke(app, ["atlas", "name", str(named_atlas), "--names", str(names)])
    assert result.exit_code != 0 and "2 names for 3 concepts" in str(result.exception)
    assert json.loads((named_atlas / "atlas.json").read_text())["concepts"] == NAMES


def test_renamed_concepts_reach_recipe_manifest_and_report(named_atlas: Path, tmp_path: Path) -> None:
    from mixatlas.atlas import Atlas
    from mixatlas.recipe import recipe_from_study
    from mixatlas.recipe.materialize import materialize
    from mixatlas.report import build_report
    from mixatlas.search.loop import run_search
    from mixatlas.search.study import Study

    atlas = Atlas.load(named_atlas)
    path = tmp_path / "task-random" / "study.db"
    study = Study.create(path, space=MixtureSpace.from_atlas(atlas, mode="task"),
                         objective_spec={"kind": "callable", "atlas_dir": str(atlas.dir)},
                         target=Target.parse("loss", minimize=True), method="random", budget=3, seed=0,
                         meta={"atlas_fingerprint": atlas.fingerprint,
                               "centroids_fingerprint": atlas.centroids_fingerprint})
    with make_executor("local", parallel=1, folder=tmp_path) as executor:
        run_search(study, CallableObjective(ocr_heavy_loss), executor, progress=False)
    study.close()

    recipe = recipe_from_study(path)
    assert list(recipe.concepts) == NAMES
    recipe.save(tmp_path / "recipe.yaml")
    assert "skylines $5" in (tmp_path / "recipe.yaml").read_text()

    materialize(atlas, recipe, 60, tmp_path / "manifest", max_epochs=10)
    rows = [json.loads(line) for line in (tmp_path / "manifest" / "manifest.jsonl").read_text().splitlines()]
    assert {row["concept"] for row in rows} <= set(NAMES) and len(rows) == 60

    index = build_report([path], tmp_path / "report", atlas=atlas.dir, recipe=tmp_path / "recipe.yaml")
    html = index.read_text()
    assert all(name.replace("&", "&amp;") in html for name in NAMES)


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mixatlas {version('mixatlas')}"
