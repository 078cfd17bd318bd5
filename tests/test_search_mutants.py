"""Search details found by mutation testing: design helpers, the pool rules, recommendations' fields and
the resume check of every stored setting (each fails for a planted bug that the other tests let through)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.search.base import History
from mixatlas.search.config import SearchConfig
from mixatlas.search.design import dirichlet_rows, maximin_pick, open_candidates, perturb
from mixatlas.search.gp_ucb import GPUCB
from mixatlas.search.multifidelity import MFGPUCB, FidelityHistory
from mixatlas.search.recommend import recommend_history
from mixatlas.search.regmix import RegMix
from mixatlas.search.setup import open_study
from mixatlas.space import MixtureSpace
from test_multifidelity import two_fidelity_pool

NAMES = tuple(f"d{i}" for i in range(6))


def pool_space(n_rows: int = 6, seed: int = 0) -> MixtureSpace:
    """Six domains and a pool of `n_rows` random mixtures."""
    rows = np.random.default_rng(seed).dirichlet(np.ones(len(NAMES)), size=n_rows)
    return MixtureSpace.from_domains(NAMES, candidates=rows)


def linear_history(space: MixtureSpace, params_nd: np.ndarray, pending: int = 0) -> History:
    """Done trials whose utility is the weight of the first domain (best: the pool's richest row)."""
    params = np.atleast_2d(params_nd)
    return History(space, params, params[:, 0].copy(), np.empty((pending, space.dim)), 30, 0)


def test_tiny_dirichlet_concentrations_give_sparse_rows_and_underflow_to_a_vertex() -> None:
    space = MixtureSpace.from_domains(tuple(f"d{i}" for i in range(10)))
    rng = np.random.default_rng(0)
    sparse = dirichlet_rows(np.full((200, 10), 0.01), space, rng)
    assert sparse.sum(axis=1) == pytest.approx(np.ones(200))
    assert sparse.max(axis=1).mean() > 0.8  # a flat Dirichlet(1) would give ~0.29
    # At the floor concentration most gamma variates underflow to 0; a row with none left is a vertex.
    vertices = dirichlet_rows(np.full((500, 10), 1e-9), space, rng)
    assert np.all(np.isfinite(vertices)) and vertices.sum(axis=1) == pytest.approx(np.ones(500))
    assert vertices.max(axis=1).mean() > 0.99


def test_maximin_picks_the_farthest_rows_and_never_the_same_twice() -> None:
    pool = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    picks = maximin_pick(pool, np.array([[1.0, 0.0, 0.0]]), 3, np.random.default_rng(0))
    # Farthest from (1, 0, 0): the other two vertices (squared distance 2), then (0.5, 0.5, 0)
    assert sorted(picks[:2].tolist()) == [2, 4] and picks[2] == 3
    every = maximin_pick(pool, np.empty((0, 3)), 5, np.random.default_rng(1))
    assert sorted(every.tolist()) == [0, 1, 2, 3, 4]


def test_open_candidates_reopens_the_whole_pool_once_every_row_is_used() -> None:
    space = pool_space()
    assert open_candidates(space, linear_history(space, space.candidates[:2])).tolist() == [2, 3, 4, 5]
    assert open_candidates(space, linear_history(space, space.candidates)).tolist() == list(range(6))


def test_perturb_spreads_mass_to_empty_cells_and_stays_near_for_small_scales() -> None:
    space = MixtureSpace.from_domains(NAMES)
    vertex = np.tile(np.eye(len(NAMES))[0], (40, 1))
    rng = np.random.default_rng(0)
    wide = perturb(space, vertex, 0.5, rng)
    assert np.all(space.feasible_mask(wide))
    assert len(np.unique(np.round(wide, 9), axis=0)) == 40  # random spread, not one shared point
    assert wide[:, 1:].std(axis=0).min() > 1e-3
    near = perturb(space, vertex, 0.01, rng)
    assert np.abs(near - vertex).max() < 0.05


def test_regmix_asks_every_open_pool_row_once_when_it_asks_exactly_that_many() -> None:
    space = pool_space(8)
    history = linear_history(space, space.candidates[:2])
    for seed in range(5):
        asked = RegMix().ask(History(space, history.done_params, history.done_utility,
                                     history.pending_params, 30, seed), 6)
        rows = sorted(space.candidate_index(p) for p in asked)
        assert rows == [2, 3, 4, 5, 6, 7]


def test_regmix_recommendation_is_a_regression_prediction_and_honours_n_estimators() -> None:
    space = pool_space(40, seed=3)
    history = linear_history(space, space.candidates[:12])
    small, large = RegMix(n_estimators=2).recommend(history), RegMix(n_estimators=400).recommend(history)
    assert small.source == large.source == "regression"
    assert isinstance(large.mean, float) and isinstance(small.mean, float)
    assert abs(large.mean - small.mean) > 1e-3  # 2 trees barely move from the mean; 400 fit the trend
    free = MixtureSpace.from_domains(NAMES)
    rng = np.random.default_rng(4)
    continuous = RegMix(n_candidates=2000, n_estimators=50).recommend(
        linear_history(free, free.sample(12, rng)))
    assert continuous.source == "regression" and isinstance(continuous.mean, float)


def gp_history() -> tuple[MixtureSpace, History]:
    """Ten noisy observations of the linear utility on a 30-row pool (the posterior stays uncertain)."""
    space = pool_space(30, seed=5)
    done = space.candidates[:10]
    noisy = done[:, 0] + 0.05 * np.random.default_rng(0).standard_normal(10)
    return space, History(space, done, noisy, np.empty((0, space.dim)), 30, 0)


def test_gp_recommendation_reports_its_posterior_and_its_rule() -> None:
    _, history = gp_history()
    optimizer = GPUCB(n_init=3)
    recommendation = optimizer.recommend_by(history, "mean")
    assert recommendation.source.startswith("posterior-mean maximizer")
    mean, sd = optimizer.posterior(history, recommendation.params[None])
    assert recommendation.mean == pytest.approx(float(mean[0]))
    assert recommendation.sd == pytest.approx(float(sd[0]))


def test_probability_better_of_a_mixture_does_not_depend_on_the_others_asked_with_it() -> None:
    space, history = gp_history()
    optimizer = GPUCB(n_init=3)
    a, b, c, reference = space.candidates[[11, 14, 13, 3]]
    alone = optimizer.probability_better(history, a[None], reference)
    together = optimizer.probability_better(history, np.stack([a, b, c]), reference)
    assert 0.05 < alone[0] < 0.95  # an uncertain comparison (a saturated one hides the variance)
    assert together[0] == pytest.approx(alone[0], abs=1e-9)
    # P(a > b) = 1 - P(b > a)
    forward = optimizer.probability_better(history, np.stack([a, c]), b)[0]
    backward = optimizer.probability_better(history, np.stack([b, c]), a)[0]
    assert forward + backward == pytest.approx(1.0, abs=1e-9)


def synthetic_config(study: Path, **options: object) -> SearchConfig:
    """A search config on the analytic task-space problem."""
    return SearchConfig.load(None, {"synthetic": "task", "budget": 4, "target": "bench0/loss",
                                    "study": study, **options})


@pytest.mark.parametrize(
    ("created", "resumed", "named"),
    [
        ({"method": "gp-ucb", "method_options": {"n_init": 3}}, {"method_options": {"n_init": 4}},
         "method_options.n_init"),
        ({"guard": ["bench1/loss<=0.1"], "method_options": {"n_init": 3}}, {"guard": ["bench1/loss<=0.2"]},
         "guards"),
        ({"method": "random"}, {"target": "bench1/loss"}, "target"),
        ({"method": "random", "trial_seeds": "shared"}, {"trial_seeds": "per-trial"}, "trial_seeds"),
    ],
)
def test_resume_refuses_each_stored_setting_given_differently(
    tmp_path: Path, created: dict, resumed: dict, named: str
) -> None:
    study = tmp_path / "s.db"
    open_study(synthetic_config(study, **created))
    open_study(synthetic_config(study, **created))  # the same settings resume
    with pytest.raises(MixAtlasError, match=named):
        open_study(synthetic_config(study, **{**created, **resumed}))


def test_resume_refuses_a_budget_cost_for_a_single_fidelity_study(tmp_path: Path) -> None:
    study = tmp_path / "s.db"
    open_study(synthetic_config(study, method="random"))
    with pytest.raises(MixAtlasError, match="--budget-cost given, but the study searches one fidelity"):
        open_study(synthetic_config(study, method="random", budget_cost=10))


def test_gp_ucb_replicates_a_noisy_incumbent_only_below_max_replicates() -> None:
    space = MixtureSpace.from_domains(tuple(f"d{i}" for i in range(4)))
    rng = np.random.default_rng(0)
    points = space.sample(12, rng)
    incumbent = points[0]
    params = np.concatenate([np.tile(incumbent, (3, 1)), points[1:]])  # the best mixture, observed 3 times
    utility = np.concatenate([[1.5, 2.5, 0.5], rng.standard_normal(11)])  # pure noise elsewhere
    history = History(space, params, utility, np.empty((0, space.dim)), 60, 0)
    below = GPUCB(n_init=3, max_replicates=4, n_pool=500).ask(history, 1)[0]
    at_cap = GPUCB(n_init=3, max_replicates=3, n_pool=500).ask(history, 1)[0]
    assert np.abs(below - incumbent).max() == 0.0  # noise dominates: observe the incumbent once more
    assert np.abs(at_cap - incumbent).max() > 1e-3  # three observations already: look elsewhere


def test_recommend_history_gives_a_fidelity_history_to_the_multifidelity_method() -> None:
    """Benchmark replays recommend from a plain FidelityHistory through the same function as studies."""
    pool = two_fidelity_pool(n=20, cost_hi=8.0)
    utility = pool.utility(Target.parse("score"))
    fidelity = np.array([0, 0, 0, 1, 1, 0])
    done = utility[np.arange(6), fidelity]
    history = History(pool.space, pool.weights_cn[:6], done, np.empty((0, 4)), 6, 0)
    fh = FidelityHistory(history, fidelity, np.empty(0, int), pool.fidelities, 40.0, pool.available_cf)
    direct = MFGPUCB().recommend(fh).params
    np.testing.assert_array_equal(recommend_history("mf-gp-ucb", None, fh).params, direct)
    np.testing.assert_array_equal(recommend_history("mf-gp-ucb", {"n_pool": 50}, fh).params, direct)
    with pytest.raises(MixAtlasError, match="no_such_option"):  # options reach the constructor
        recommend_history("mf-gp-ucb", {"no_such_option": 1}, fh)
