"""Guarded search live (`mixatlas search --guard`), and the recipe's posterior probabilities (guards hold,
the recommendation beats the natural mixture and the best baseline).

One small synthetic study (task axis, budget 6, two guards on the synthetic objective's per-benchmark
losses) and a uniform-mixture baseline beside it are searched once for the module; the rest reads them.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from conftest import run_mixatlas
from mixatlas.errors import MixAtlasError
from mixatlas.recipe import Recipe
from mixatlas.recipe.from_study import beat_probabilities
from mixatlas.search.base import History
from mixatlas.search.config import SearchConfig
from mixatlas.search.gp_ucb import GPUCB
from mixatlas.search.study import Study
from mixatlas.space import MixtureSpace

GUARDS = ("bench1/loss<=0.01", "bench2/loss<=0.05")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(guarded study, baseline study) in one folder (the baseline is in the guarded one's family)."""
    root = tmp_path_factory.mktemp("guarded")
    baseline = run_mixatlas("search", "--synthetic", "task", "--method", "uniform", "--budget", "2",
                            "--study", root / "uni.db")
    assert baseline.code == 0, baseline.err
    guarded = root / "guarded.db"
    run = run_mixatlas("search", "--synthetic", "task", "--budget", "6", "--guard", GUARDS[0],
                       "--guard", GUARDS[1], "--study", guarded)
    assert run.code == 0, run.err
    assert "gp-guarded" in run.err
    for spec in GUARDS:
        assert f"guard {spec}: holds with P" in run.err
    assert "P(beats) natural" in run.err and "uniform (uni)" in run.err
    return guarded, root / "uni.db"


def test_study_stores_guards_and_resume_checks_them(studies: tuple[Path, Path]) -> None:
    guarded, _ = studies
    study = Study.open(guarded, read_only=True)
    assert study.method == "gp-guarded"
    assert study.method_options["guards"] == list(GUARDS)
    history = study.history()
    assert len(history.done_metrics) == 6 and "bench1/loss" in history.done_metrics[0]
    study.close()
    same = run_mixatlas("search", "--study", guarded, "--guard", GUARDS[0], "--guard", GUARDS[1])
    assert same.code == 0, same.err
    assert run_mixatlas("search", "--study", guarded).code == 0  # no guard given: resumed as stored
    other = run_mixatlas("search", "--study", guarded, "--guard", "bench1/loss<=0.02")
    assert other.code == 2
    assert "guards is" in other.err and "in the study" in other.err
    assert other.err.count("error:") == 1


def test_recipe_has_guard_and_beat_probabilities(studies: tuple[Path, Path], tmp_path: Path) -> None:
    guarded, _ = studies
    out = tmp_path / "recipe.yaml"
    assert run_mixatlas("recipe", "make", guarded, "--out", out).code == 0
    recipe = Recipe.load(out)
    assert set(recipe.guards) == set(GUARDS)
    assert all(0.0 <= p <= 1.0 for p in recipe.guards.values())
    assert set(recipe.p_beats) == {"natural", "uniform (uni)"}
    assert Recipe.from_dict(recipe.to_dict()).guards == recipe.guards
    shown = run_mixatlas("recipe", "show", out)
    assert shown.code == 0
    assert f"guard {GUARDS[0]}" in shown.err and "P(beats natural)" in shown.err
    assert "all guards" in shown.err
    study_show = run_mixatlas("study", "show", guarded)
    assert study_show.code == 0 and f"guard {GUARDS[1]}: holds with P" in study_show.err


def test_report_draws_the_guard_front(studies: tuple[Path, Path], tmp_path: Path) -> None:
    guarded, _ = studies
    run = run_mixatlas("report", guarded, "--out", tmp_path / "report")
    assert run.code == 0, run.err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Guardrails</h2>" in page
    for i in range(len(GUARDS)):
        assert f"guard_front_{i}.png" in page
        assert (tmp_path / "report" / f"guard_front_{i}.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--guard", "ocr/anls>0.1"], "--guard 'ocr/anls>0.1': write METRIC>=DELTA"),
        (["--guard", "bench1/loss<=0.01", "--method", "random"], "--guard needs --method gp-guarded"),
        (["--method", "gp-guarded"], "needs at least one guardrail"),
    ],
)
def test_bad_guard_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_mixatlas("search", "--synthetic", "task", "--budget", "3", "--study", tmp_path / "s.db", *args)
    assert run.code == 2
    assert message in run.err and run.err.count("error:") == 1
    assert not (tmp_path / "s.db").exists()


def test_a_guard_metric_the_objective_does_not_report_stops_with_one_line(tmp_path: Path) -> None:
    run = run_mixatlas("search", "--synthetic", "task", "--budget", "3", "--guard", "nosuch>=0",
                       "--study", tmp_path / "s.db")
    assert run.code == 2
    assert "guard nosuch>=0: a finished trial reports no finite 'nosuch'" in run.err
    assert run.err.count("error:") == 1


def test_guards_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "search.yaml").write_text("synthetic: task\nguard: [ocr/anls >= -0.01, val/loss<=0.02]\n")
    config = SearchConfig.load(tmp_path / "search.yaml")
    assert config.method == "gp-guarded"
    assert config.optimizer_options == {"guards": ["ocr/anls>=-0.01", "val/loss<=0.02"]}
    (tmp_path / "one.yaml").write_text("synthetic: task\nguard: ocr/anls>=-0.01\n")
    assert SearchConfig.load(tmp_path / "one.yaml").guard == ["ocr/anls>=-0.01"]
    (tmp_path / "bad.yaml").write_text("synthetic: task\nguard: [ocr/anls = 1]\n")
    with pytest.raises(MixAtlasError, match=r"bad.yaml: --guard 'ocr/anls = 1'"):
        SearchConfig.load(tmp_path / "bad.yaml")


def test_probability_of_beating_natural_on_an_analytic_problem() -> None:
    """The optimum sits in a corner far from the natural mixture (equal counts): the recommendation beats
    natural with high posterior probability, a mixture far from the optimum very probably does not, and
    the natural mixture against itself is a coin flip."""
    space = MixtureSpace.from_domains(["a", "b", "c", "d"])
    peak = np.array([0.85, 0.05, 0.05, 0.05])
    rng = np.random.default_rng(0)
    params = space.sample(14, rng, alpha=1.0)
    utility = -((params - peak) ** 2).sum(axis=1) + 0.003 * rng.standard_normal(len(params))
    history = History(space, params, utility, np.empty((0, 4)), 14, 0)
    study = types.SimpleNamespace(method="gp-ucb", method_options={"variants": ["gp"]}, space=space)
    from mixatlas.objectives.base import Target

    target = Target.parse("u", minimize=False)
    rec = GPUCB(variants=("gp",)).recommend(history).params
    assert beat_probabilities(study, history, rec, target)["natural"] > 0.95
    far = np.array([0.02, 0.02, 0.48, 0.48])
    assert beat_probabilities(study, history, far, target)["natural"] < 0.05
    assert beat_probabilities(study, history, space.natural_params(), target)["natural"] == pytest.approx(0.5)
    assert beat_probabilities(study, History(space, params[:2], utility[:2], np.empty((0, 4)), 14, 0),
                              rec, target) == {}  # too few trials for a posterior


def test_recipe_rejects_a_probability_outside_0_1() -> None:
    data = {"concepts": ["a"], "tasks": ["all"], "weights": [[1.0]], "p_beats": {"natural": 1.5}}
    with pytest.raises(MixAtlasError, match=r"p_beats.natural is 1.5"):
        Recipe.from_dict(data)
