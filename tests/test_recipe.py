"""Recipes from real synthetic-objective studies: provenance, prediction, baselines, YAML round trip, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Target
from mixatlas.objectives.synthetic import make_synthetic
from mixatlas.recipe import Recipe, recipe_from_study, study_family
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study

BUDGET = 5
METHODS = ("gp-ucb", "random", "uniform")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three finished task-axis studies of one synthetic problem, side by side in one folder."""
    root = tmp_path_factory.mktemp("family")
    space, problem = make_synthetic("task", seed=3, k=4)
    paths = {}
    with make_executor("local", parallel=1, folder=root) as executor:
        for method in METHODS:
            path = root / f"task-{method}" / "study.db"
            study = Study.create(
                path,
                space=space,
                objective_spec={"kind": "synthetic", "space_mode": "task"},
                target=Target.parse("loss", minimize=True),
                method=method,
                budget=BUDGET,
                seed=0,
                method_options={"n_pool": 500, "n_polish": 1} if method == "gp-ucb" else None,
                meta={"atlas_fingerprint": "atlas-a", "centroids_fingerprint": "cent-a"},
            )
            run_search(study, problem, executor, progress=False)
            study.close()
            paths[method] = path
    return paths


@pytest.fixture(scope="module")
def gp_recipe(family: dict[str, Path]) -> Recipe:
    return recipe_from_study(family["gp-ucb"])


def _values(path: Path) -> list[float]:
    study = Study.open(path)
    try:
        return [t.value for t in study.trials("done")]
    finally:
        study.close()


def test_recipe_of_gp_ucb_study(family: dict[str, Path], gp_recipe: Recipe) -> None:
    recipe = gp_recipe
    values = _values(family["gp-ucb"])
    assert recipe.weights_kt.shape == (4, 5)
    assert recipe.weights_kt.sum() == pytest.approx(1.0)
    assert recipe.target.spec == "loss" and recipe.target.minimize
    assert recipe.atlas_fingerprint == "atlas-a" and recipe.centroids_fingerprint == "cent-a"
    prov = recipe.provenance
    assert prov["method"] == "gp-ucb" and prov["mode"] == "task" and prov["budget"] == BUDGET
    assert prov["chosen"].startswith("posterior LCB") and prov["n_finished"] == BUDGET
    # the prediction is in loss units (not the negated utility) and near what was observed
    assert recipe.prediction is not None and recipe.prediction.sd > 0
    assert min(values) - 0.2 < recipe.prediction.mean < max(values) + 0.2
    # an evaluated trial carries its observation; an unevaluated LCB winner says so in `chosen`
    if prov["chosen"] == "posterior LCB":
        assert recipe.observation is not None
        assert recipe.observation.value == pytest.approx(values[recipe.observation.trial_id - 1])
    else:
        assert "not evaluated" in prov["chosen"] and recipe.observation is None
    assert recipe.constraints["mode"] == "task" and recipe.constraints["max_epochs"] == 4.0


def test_family_baselines_follow_the_documented_rule(family: dict[str, Path], gp_recipe: Recipe) -> None:
    assert set(study_family(family["gp-ucb"])) == {family["random"], family["uniform"]}
    recipe = gp_recipe
    by_method = {b.method: b for b in recipe.baselines}
    assert set(by_method) == {"random", "uniform"}  # the study's own method is not a baseline
    for method, score in by_method.items():
        assert score.value == pytest.approx(min(_values(family[method])))
        assert score.n_trials == BUDGET
    best = recipe.best_baseline()
    assert best.value == min(b.value for b in recipe.baselines)
    gain, sd, against = recipe.gain_over_best_baseline()
    assert gain == pytest.approx(best.value - recipe.score()[0]) and sd == recipe.prediction.sd
    assert against is best
    # explicit baselines replace the family, whatever their method
    explicit = recipe_from_study(family["random"], baselines=[family["gp-ucb"]])
    assert [b.method for b in explicit.baselines] == ["gp-ucb"]


def test_recipe_for_another_target(family: dict[str, Path]) -> None:
    recipe = recipe_from_study(family["random"], target="bench1/loss")
    study = Study.open(family["random"])
    try:
        per_trial = {t.id: t.metrics["bench1/loss"] for t in study.trials("done")}
    finally:
        study.close()
    assert recipe.target.spec == "bench1/loss" and recipe.target.minimize
    best_id = min(per_trial, key=per_trial.get)  # random search recommends the best observed trial
    assert recipe.observation.trial_id == best_id
    assert recipe.observation.value == pytest.approx(per_trial[best_id])
    assert recipe.provenance["chosen"] == f"trial {best_id}"


def test_yaml_round_trip(gp_recipe: Recipe, tmp_path: Path) -> None:
    recipe = gp_recipe
    path = tmp_path / "r.yaml"
    recipe.save(path)
    data = yaml.safe_load(path.read_text())
    assert set(data["task_marginal"]) == set(recipe.tasks)
    assert sum(data["concept_marginal"].values()) == pytest.approx(1.0)
    loaded = Recipe.load(path)
    np.testing.assert_allclose(loaded.weights_kt, recipe.weights_kt, rtol=0, atol=1e-15)
    assert loaded.to_dict() == recipe.to_dict()


def test_bad_recipe_files_are_one_line_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("weights: [[0.5, 0.5\n")
    with pytest.raises(MixAtlasError, match=r"broken\.yaml: invalid YAML"):
        Recipe.load(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("concepts: [a]\ntasks: [x, y]\nweights: [[0.2, 0.2]]\n")
    with pytest.raises(MixAtlasError, match=r"sum to 0\.4"):
        Recipe.load(wrong)
    with pytest.raises(MixAtlasError, match="no 'weights'"):
        (tmp_path / "other.yaml").write_text("hello: 1\n")
        Recipe.load(tmp_path / "other.yaml")


def _mixatlas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mixatlas.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_recipe_and_show(family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.yaml"
    made = _mixatlas("recipe", str(family["gp-ucb"].parent), "--out", str(out))
    assert made.returncode == 0, made.stderr
    shown = _mixatlas("recipe", "show", str(out))
    assert shown.returncode == 0, shown.stderr
    text = shown.stderr + shown.stdout
    recipe = Recipe.load(out)
    for name in (*recipe.concepts, *recipe.tasks, "total", "posterior LCB", "best baseline"):
        assert name in text
    missing = _mixatlas("recipe", "show", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope.yaml: cannot read recipe" in missing.stderr
