"""Multi-fidelity search: the cost budget, the (mixture, fidelity) choice, and the fidelity pool benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Target
from mixatlas.search.base import History
from mixatlas.search.fidelity_benchmark import FidelityPool, run_fidelity_benchmark, simulate_fidelity
from mixatlas.search.multifidelity import MFGPUCB, Fidelities, FidelityHistory

RHO = 0.9  # correlation of the cheap fidelity with the target one, by construction


def two_fidelity_pool(n: int = 40, cost_hi: float = 10.0) -> FidelityPool:
    """A pool of n mixtures of 4 domains at a cheap fidelity `lo` and the target `hi`.

    hi = g (one smooth peak); lo = RHO * g + sqrt(1 - RHO^2) * h + 3, with h an independent peak
    elsewhere (g and h standardized over the pool): lo ranks mixtures like hi with correlation ~RHO, but
    its best mixture is not hi's best.
    """
    rng = np.random.default_rng(7)
    weights = rng.dirichlet(np.ones(4), size=n)
    g = -(((weights - np.array([0.55, 0.25, 0.15, 0.05])) ** 2).sum(axis=1))
    h = -(((weights - np.array([0.05, 0.15, 0.25, 0.55])) ** 2).sum(axis=1))
    g, h = (g - g.mean()) / g.std(), (h - h.mean()) / h.std()
    lo = RHO * g + np.sqrt(1 - RHO**2) * h + 3.0
    fids = Fidelities(("lo", "hi"), (1.0, cost_hi), "hi")
    rows = np.concatenate([weights, weights])
    return FidelityPool.from_rows(
        ["a", "b", "c", "d"], fids, rows, ["lo"] * n + ["hi"] * n, ["score"], np.concatenate([lo, g])[:, None]
    )


def test_multifidelity_beats_single_fidelity_on_a_correlated_two_fidelity_problem() -> None:
    pool = two_fidelity_pool()
    truth = pool.utility(Target.parse("score"))
    assert np.corrcoef(truth[:, 0], truth[:, 1])[0, 1] == pytest.approx(RHO, abs=0.15)
    # 30 cost units: 3 target trials, or 30 cheap ones (3/4 of the pool), or a mix
    result = run_fidelity_benchmark(
        pool, Target.parse("score"), ["mf-gp-ucb", "gp-ucb", "gp-ucb@lo"], 30.0, [0, 1]
    )
    regret = {name: row["regret_mean"] for name, row in result["methods"].items()}
    assert regret["mf-gp-ucb"] < regret["gp-ucb"]
    assert regret["mf-gp-ucb"] < regret["gp-ucb@lo"]
    mf_trials = result["methods"]["mf-gp-ucb"]["trials_per_fidelity"]
    assert mf_trials["lo"] > 0 and mf_trials["hi"] > 0  # it used both fidelities


def test_costs_are_charged_exactly_and_never_exceed_the_budget() -> None:
    pool = two_fidelity_pool(n=30, cost_hi=8.0)
    runs = {
        m: simulate_fidelity(pool, Target.parse("score"), m, 21.0, seed=0)
        for m in ("mf-gp-ucb", "random", "random@lo")
    }
    for run in runs.values():
        lo, hi = run["trials_per_fidelity"]
        assert run["cost_spent"] == pytest.approx(lo * 1.0 + hi * 8.0)
        assert run["cost_spent"] <= 21.0
    assert runs["mf-gp-ucb"]["cost_spent"] > 21.0 - 8.0  # it stops only when no trial fits any more
    assert runs["random"]["trials_per_fidelity"] == [0, 2]  # floor(21 / 8) target trials
    assert runs["random@lo"]["trials_per_fidelity"] == [21, 0]


def test_ask_only_proposes_what_the_remaining_budget_buys() -> None:
    pool = two_fidelity_pool(n=30, cost_hi=8.0)
    space, fids = pool.space, pool.fidelities
    done = pool.weights_cn[:4]
    utility = pool.utility(Target.parse("score"))
    fidelity = np.array([0, 0, 0, 1])
    history = History(space, done, utility[np.arange(4), fidelity], np.empty((0, 4)), 4, 0)

    def ask(budget: float) -> list:
        fh = FidelityHistory(history, fidelity, np.empty(0, int), fids, budget, pool.available_cf)
        return MFGPUCB().ask(fh, 3)

    assert ask(11.5) == []  # 3 + 8 spent, 0.5 left: nothing fits
    cheap = ask(13.0)  # 2 left: two cheap trials, no target trial
    assert [f for _, f in cheap] == [0, 0]
    assert len({space.candidate_index(p) for p, _ in cheap}) == 2


def test_bench_pool_with_fidelities_writes_the_benchmark_json(tmp_path) -> None:
    pool = two_fidelity_pool(n=16, cost_hi=6.0)
    # rename the fidelities to the CLI's example names
    text_path = tmp_path / "pool.csv"
    pool.to_csv(text_path, fidelity_col="size")
    text_path.write_text(text_path.read_text().replace(",lo,", ",0.5b,").replace(",hi,", ",7b,"))
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "pool",
            str(text_path),
            "--weight-cols",
            "w_",
            "--target",
            "score",
            "--fidelity-col",
            "size",
            "--costs",
            "0.5b=1,7b=6",
            "--target-fidelity",
            "7b",
            "--budget-cost",
            "12",
            "--seeds",
            "2",
            "--methods",
            "mf-gp-ucb,gp-ucb,gp-ucb@0.5b",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"problem", "budget", "seeds", "batch", "ci", "methods"} <= set(data)
    assert data["budget"] == 12 and data["seeds"] == 2
    assert list(data["methods"]) == ["mf-gp-ucb", "gp-ucb", "gp-ucb@0.5b"]
    for row in data["methods"].values():
        assert {
            "regret_mean",
            "regret_ci95",
            "percentile_mean",
            "percentile_ci95",
            "best_so_far",
            "regret_per_seed",
            "seconds_per_run",
        } <= set(row)
        assert len(row["regret_per_seed"]) == 2 and len(row["best_so_far"]) == 12
        assert 0.0 <= row["percentile_mean"] <= 100.0
    assert data["methods"]["gp-ucb"]["trials_per_fidelity"] == {"0.5b": 0.0, "7b": 2.0}
    assert data["methods"]["gp-ucb@0.5b"]["trials_per_fidelity"] == {"0.5b": 12.0, "7b": 0.0}


def test_bad_fidelity_options_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(MixAtlasError, match="target-fidelity"):
        Fidelities.parse("0.5b=1,7b=14", "3b")
    with pytest.raises(MixAtlasError, match="NAME=COST"):
        Fidelities.parse("0.5b:1", "0.5b")
    path = tmp_path / "p.csv"
    path.write_text("w_a,w_b,size,score\n0.5,0.5,1b,1.0\n")
    with pytest.raises(MixAtlasError, match=r"p.csv:2: fidelity '1b' has no cost"):
        FidelityPool.from_csv(path, "w_", "size", Fidelities.parse("0.5b=1,7b=14", "7b"))
