"""Search methods: feasibility of every proposal in every mode, pool rules, GP-UCB quality, registry."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History
from mixatlas.search.benchmark import run_benchmark, synthetic_problem
from mixatlas.search.gp_ucb import GPUCB, srinivas_beta
from mixatlas.search.methods import METHODS, make_optimizer
from mixatlas.search.regmix import RegMix
from mixatlas.space import MODES, MixtureSpace

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
CONCEPTS = tuple(f"c{i}" for i in range(4))
COUNTS = np.array(
    [
        [400.0, 100.0, 50.0, 30.0, 300.0],
        [200.0, 600.0, 20.0, 10.0, 150.0],
        [100.0, 50.0, 200.0, 250.0, 80.0],
        [50.0, 10.0, 120.0, 90.0, 40.0],
    ]
)
# Small settings keep each proposal well under a second on a shared CPU.
FAST = {"gp-ucb": {"n_pool": 600, "n_init": 3}, "regmix": {"n_candidates": 3000, "n_estimators": 200}}


def constrained_space(mode: str) -> MixtureSpace:
    """Active lower/upper bounds and epoch cap; a frozen cell in joint mode."""
    upper = np.full(COUNTS.shape, 0.4)
    upper[1, 1] = 0.15
    frozen = {"c0/vqa": 0.06} if mode == "joint" else None
    return MixtureSpace(
        CONCEPTS,
        TASKS,
        COUNTS,
        mode=mode,
        lower_kt=0.002,
        upper_kt=upper,
        frozen=frozen,
        planned_samples=COUNTS.sum(),
        max_epochs=2.0,
    )


def quadratic_utility(space: MixtureSpace, params_nd: np.ndarray) -> np.ndarray:
    """A smooth utility with an interior optimum, for driving the methods."""
    w = space.cell_weights(params_nd).reshape(len(params_nd), space.k * space.n_tasks)
    target = np.linspace(1.0, 2.0, w.shape[1])
    target /= target.sum()
    return -((w - target) ** 2).sum(axis=1)


def history_with(
    space: MixtureSpace, n_done: int, n_pending: int, seed: int = 0, budget: int = 20
) -> History:
    rng = np.random.default_rng(seed)
    params = space.sample(n_done + n_pending, rng)
    done = params[:n_done]
    return History(space, done, quadratic_utility(space, done), params[n_done:], budget, seed)


def assert_feasible(space: MixtureSpace, params_nd: list[np.ndarray] | np.ndarray) -> None:
    for params in np.atleast_2d(np.asarray(params_nd)):
        assert space.is_feasible(params)
        w = space.cell_weights(params)[0]
        assert abs(w.sum() - 1.0) <= 1e-9
        assert np.all(w >= space.lower_kt - 1e-9) and np.all(w <= space.upper_kt + 1e-9)
        assert np.all(w * space.planned_samples <= space.counts_kt * space.max_epochs + 1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_every_method_proposes_and_recommends_feasible_mixtures(mode: str) -> None:
    space = constrained_space(mode)
    for name in METHODS:
        optimizer = make_optimizer(name, **FAST.get(name, {}))
        first = optimizer.ask(history_with(space, 0, 0), 2)  # initial design, empty study
        history = history_with(space, 8, 1)
        later = optimizer.ask(history, 3)  # model-based phase, with a pending trial
        assert len(first) == 2 and len(later) == 3
        assert_feasible(space, [*first, *later])
        assert_feasible(space, optimizer.recommend(history).params)


def test_pool_methods_only_return_pool_rows_and_gp_skips_used_rows() -> None:
    rng = np.random.default_rng(4)
    rows = rng.dirichlet(np.ones(4), size=25)
    space = MixtureSpace.from_domains(["a", "b", "c", "d"], candidates=rows)
    done = rows[:6]
    history = History(space, done, quadratic_utility(space, done), rows[6:8], budget=12, seed=1)
    for name in METHODS:
        optimizer = make_optimizer(name, **FAST.get(name, {}))
        proposals = optimizer.ask(history, 3)
        assert all(space.candidate_index(p) is not None for p in proposals)
        assert space.candidate_index(optimizer.recommend(history).params) is not None
        if name in ("gp-ucb", "random", "regmix"):
            used = {space.candidate_index(p) for p in rows[:8]}
            picked = [space.candidate_index(p) for p in proposals]
            assert not used & set(picked) and len(set(picked)) == 3


def test_gp_ucb_batch_is_diverse_deterministic_and_reports_uncertainty() -> None:
    space = MixtureSpace(CONCEPTS, TASKS, COUNTS, mode="task")
    history = history_with(space, 10, 0, budget=30)
    optimizer = GPUCB(n_pool=800)
    batch = optimizer.ask(history, 4)
    assert min(np.abs(a - b).sum() for i, a in enumerate(batch) for b in batch[i + 1 :]) > 1e-3
    again = GPUCB(n_pool=800).ask(history, 4)  # a resumed study proposes the same points
    assert all(np.allclose(a, b) for a, b in zip(batch, again, strict=True))
    rec = optimizer.recommend(history)
    assert rec.source.startswith("posterior LCB") and rec.sd is not None and rec.sd > 0
    mean, sd = optimizer.posterior(history, history.done_params)
    assert mean.shape == sd.shape == (10,)
    # the posterior tracks the observations it was fitted on
    assert np.corrcoef(mean, history.done_utility)[0, 1] > 0.8


def test_gp_ucb_beats_random_search_on_a_small_synthetic_problem() -> None:
    # concept mode, 6 concepts, little noise: fixed problem and seeds, margin ~4x in practice
    problem = synthetic_problem("concept", seed=0, noise=0.002, n_reference=2000, k=6)
    options = {"gp-ucb": {"n_pool": 1000}}
    result = run_benchmark(
        lambda: problem, ["gp-ucb", "random"], budget=8, seeds=[0, 1], method_options=options
    )
    gp, rnd = result["methods"]["gp-ucb"], result["methods"]["random"]
    assert gp["regret_mean"] < 0.6 * rnd["regret_mean"]
    assert len(gp["best_so_far"]) == 8 and gp["best_so_far"][-1] <= gp["best_so_far"][0]


def test_srinivas_beta_follows_the_theorem_formula() -> None:
    # Srinivas et al. 2010, Theorem 1: beta_t = 2 log(|D| t^2 pi^2 / (6 delta)); values worked out by hand:
    # |D| = 1000, t = 5, delta = 0.1 -> 2 ln(411233.5) = 25.8538;
    # default scale 0.2, |D| = 6000, t = 10 -> 0.2 x 2 ln(9869604.4) = 6.4420.
    assert srinivas_beta(t=5, n_points=1000, delta=0.1, scale=1.0) == pytest.approx(25.853833, abs=1e-5)
    assert srinivas_beta(t=10, n_points=6000, delta=0.1, scale=0.2) == pytest.approx(6.441988, abs=1e-5)
    assert GPUCB()._beta(10, 6000) == pytest.approx(6.441988, abs=1e-5)  # the optimizer uses the schedule
    ts = [srinivas_beta(t, 1000, 0.1, 0.2) for t in range(1, 50)]
    sizes = [srinivas_beta(10, n, 0.1, 0.2) for n in (10, 100, 1000, 10_000)]
    assert np.all(np.diff(ts) > 0) and np.all(np.diff(sizes) > 0)  # grows with t and with |D|
    # log growth: squaring t adds 2 * 2 log t (scale 1), and a smaller delta explores more
    squared = srinivas_beta(100, 1000, 0.1, 1.0) - srinivas_beta(10, 1000, 0.1, 1.0)
    assert squared == pytest.approx(4 * np.log(10))
    assert srinivas_beta(10, 1000, 0.01, 1.0) > srinivas_beta(10, 1000, 0.1, 1.0)
    assert GPUCB(beta_schedule="constant", beta=3.0)._beta(10, 6000) == 3.0


def test_registry_rejects_unknown_methods_and_options() -> None:
    with pytest.raises(MixAtlasError, match=r"gp-ucb, regmix, random, uniform, natural"):
        make_optimizer("bayes")
    with pytest.raises(MixAtlasError, match="bad options"):
        make_optimizer("random", temperature=3)
    assert make_optimizer("gp-ucb", beta_scale=0.5).beta_scale == 0.5


def _linear_problem(rows: np.ndarray) -> np.ndarray:
    """Utility w_a - w_d of (n, 4) plain-domain mixtures: the best mixture is all of domain a."""
    return rows[:, 0] - rows[:, 3]


def test_regmix_recommends_from_the_best_predictions_not_the_worst() -> None:
    # Continuous space: the mean of the top-k *predicted* draws must land near the known optimum (w_a -> 1);
    # averaging the worst-predicted draws would land near w_d -> 1.
    space = MixtureSpace.from_domains(["a", "b", "c", "d"], counts=np.array([4.0, 3.0, 2.0, 1.0]))
    optimizer = RegMix(n_candidates=2000, n_estimators=200, top_k=16)
    done = optimizer.design(space, 30, np.random.default_rng(0))
    utility = _linear_problem(space.cell_weights(done).reshape(30, -1))
    history = History(space, done, utility, np.empty((0, space.dim)), budget=40, seed=0)
    rec = optimizer.recommend(history)
    w = space.cell_weights(rec.params).ravel()
    assert w[0] - w[3] > np.quantile(utility, 0.9) and w[0] > 0.8
    assert rec.mean > np.median(utility)  # its predicted utility is among the high predictions
    # Pool mode: the top predicted row (a trained mixture), which is among the best rows of the pool.
    rows = np.random.default_rng(1).dirichlet(np.ones(4), size=60)
    pool = MixtureSpace.from_domains(["a", "b", "c", "d"], candidates=rows)
    truth = _linear_problem(rows)
    history = History(pool, rows[:20], truth[:20], np.empty((0, 4)), budget=30, seed=0)
    picked = pool.candidate_index(optimizer.recommend(history).params)
    assert picked is not None and (truth > truth[picked]).sum() <= 3  # top 4 of 60 rows


@pytest.mark.parametrize("beta", [0.0, 4.0, 1e6])
def test_ucb_prefers_higher_mean_and_higher_sd(beta: float) -> None:
    # UCB = mean + sqrt(beta) * sd over the open pool rows, from the real fitted GP: beta = 0 takes the
    # highest posterior mean, a huge beta the highest posterior sd, beta = 4 the largest mean + 2 sd.
    rows = np.random.default_rng(0).dirichlet(np.ones(4), size=60)
    pool = MixtureSpace.from_domains(["a", "b", "c", "d"], candidates=rows)
    history = History(pool, rows[:12], _linear_problem(rows[:12]), np.empty((0, 4)), budget=30, seed=0)
    optimizer = GPUCB(beta_schedule="constant", beta=beta, n_init=2, variants=("gp",))
    (picked,) = optimizer.ask(history, 1)
    open_rows = np.arange(12, 60)
    mean, sd = optimizer.posterior(history, rows[open_rows])
    expected = {0.0: np.argmax(mean), 4.0: np.argmax(mean + 2.0 * sd), 1e6: np.argmax(sd)}[beta]
    assert pool.candidate_index(picked) == open_rows[expected]
    if beta == 0.0:
        assert np.argmax(mean) != np.argmax(sd)  # the two limits really pick different rows


@pytest.mark.parametrize("rule", ["mean", "lcb"])
def test_gp_ucb_recommendation_maximizes_the_posterior_utility(rule: str) -> None:
    rows = np.random.default_rng(2).dirichlet(np.ones(4), size=40)
    pool = MixtureSpace.from_domains(["a", "b", "c", "d"], candidates=rows)
    truth = _linear_problem(rows)
    history = History(pool, rows[:15], truth[:15], np.empty((0, 4)), budget=30, seed=0)
    optimizer = GPUCB(rule=rule, variants=("gp",))
    rec = optimizer.recommend(history)
    mean, sd = optimizer.posterior(history, rows)
    score = mean - sd if rule == "lcb" else mean
    assert pool.candidate_index(rec.params) == int(np.argmax(score))
    assert (truth > truth[pool.candidate_index(rec.params)]).sum() <= 4  # among the truly best rows
