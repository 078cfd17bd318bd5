"""The single owners issue 8 names: `search/recommend.py` builds every optimizer that recommends (studies,
benchmark replays on plain histories, the report's posterior), `Target` decides directions, and the CLI's
choice lists come from the registries."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.cli.bench_cmds import METHODS_HELP, SPACE_HELP
from mixatlas.objectives.base import Target
from mixatlas.objectives.synthetic import make_synthetic
from mixatlas.search.base import History
from mixatlas.search.gp_ucb import GPUCB, RULES
from mixatlas.search.methods import METHODS, make_optimizer
from mixatlas.search.recommend import posterior_for, recommend_history, recommend_history_by_rule
from mixatlas.search.study import TrialState
from mixatlas.space.parametrization import MODES
from mixatlas.tracking import FAILED_STATE, TrackedRun


@pytest.fixture(scope="module")
def history() -> History:
    space, objective = make_synthetic("task", seed=0)
    params = space.sample(6, np.random.default_rng(0))
    return History(space, params, -objective.loss_of_params(params), np.empty((0, space.dim)), 12, 0)


@pytest.mark.parametrize("method", ["regmix", "mixing-law", "random", "natural", "gp-ucb"])
def test_recommend_history_is_the_method_recommendation(method: str, history: History) -> None:
    direct = make_optimizer(method).recommend(history)
    np.testing.assert_array_equal(recommend_history(method, None, history).params, direct.params)


def test_rules_come_from_one_gp_ucb_and_other_methods_have_none(history: History) -> None:
    by_rule = recommend_history_by_rule("gp-ucb", {"kappa": 2.0}, history)
    assert list(by_rule) == list(RULES)
    gp = GPUCB(kappa=2.0)
    for rule, rec in by_rule.items():
        np.testing.assert_array_equal(rec.params, gp.recommend_by(history, rule).params)
    assert recommend_history_by_rule("random", None, history) == {}


def test_posterior_only_for_methods_with_a_surrogate(history: History) -> None:
    assert posterior_for("random", None, history) is None
    assert posterior_for("regmix", None, history) is None
    posterior = posterior_for("gp-ucb", {"kappa": 2.0}, history)
    points = history.done_params[:3]
    mean, sd = posterior(points)
    expected_mean, expected_sd = GPUCB(kappa=2.0).posterior(history, points)
    np.testing.assert_allclose(mean, expected_mean)
    np.testing.assert_allclose(sd, expected_sd)


@pytest.mark.parametrize(("metric", "minimize"), [
    ("chart-vqa/nll", True), ("val_loss", True), ("PPL", True), ("word_error", True), ("accuracy", False),
    ("a+b*c", False),
])
def test_for_metric_infers_the_direction_from_the_name(metric: str, minimize: bool) -> None:
    target = Target.for_metric(metric)
    assert target.minimize is minimize and target.weights == ((metric, 1.0),)
    assert Target.for_metric(metric, not minimize).minimize is (not minimize)
    assert Target.for_metric("accuracy", True).better == "lower"


def test_tracking_failed_state_is_the_trial_state_text() -> None:
    assert FAILED_STATE == TrialState.FAILED
    assert TrackedRun("t", tags={"state": TrialState.FAILED}).failed
    assert not TrackedRun("t", tags={"state": TrialState.DONE}).failed
    assert not TrackedRun("t").failed


def test_bench_help_lists_the_registries() -> None:
    assert all(name in METHODS_HELP for name in METHODS)
    assert SPACE_HELP.split(" | ")[0] == "joint" and sorted(SPACE_HELP.split(" | ")) == sorted(MODES)
