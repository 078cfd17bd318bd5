"""Synthetic problems, pool CSVs (good and bad), the public-run loaders, the benchmark and its CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import TrialContext
from mixatlas.objectives.pool import PoolProblem
from mixatlas.objectives.public_runs import default_root, mixinglaws_pool, public_pool
from mixatlas.objectives.synthetic import make_synthetic
from mixatlas.search.benchmark import pool_problem, run_benchmark
from mixatlas.space import MODES, Mixture

CTX = TrialContext(trial_id=3, trial_dir=Path("."), seed=7)


@pytest.mark.parametrize("mode", MODES)
def test_synthetic_family_optimum_beats_every_sampled_mixture(mode: str) -> None:
    space, problem = make_synthetic(mode, seed=1, k=4)
    optimum = problem.optimum_value()
    samples = space.sample(3000, np.random.default_rng(0), alpha=0.3)
    assert optimum <= problem.loss_of_params(samples).min() + 1e-9
    assert problem.loss_of_params(space.uniform_params()[None])[0] > optimum + 1e-3


def test_synthetic_evaluate_is_noisy_reproducible_and_picklable() -> None:
    space, problem = make_synthetic("joint", seed=2, noise=0.05, k=4)
    mixture = space.to_mixture(space.natural_params())
    result = problem.evaluate(mixture, CTX)
    assert set(result.metrics) >= {"loss", "loss_noiseless", "bench0/loss"}
    assert result.metrics["loss"] != result.metrics["loss_noiseless"]
    copy = pickle.loads(pickle.dumps(problem))
    assert copy.evaluate(mixture, CTX).metrics == result.metrics  # same trial -> same noise
    other = problem.evaluate(mixture, TrialContext(4, Path("."), 7)).metrics["loss"]
    assert other != result.metrics["loss"]
    assert problem.metric == "loss" and problem.minimize


def write_pool(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def test_pool_csv_reads_weights_metrics_and_looks_up_rows(tmp_path: Path) -> None:
    csv_path = write_pool(
        tmp_path / "pool.csv",
        [
            ["run", "w_web", "w_code", "w_books", "loss", "acc"],
            ["a", "0.5", "0.25", "0.25", "2.0", "0.3"],
            ["b", "0.2", "0.2", "0.6", "2.5", ""],
            ["c", "0.5", "0.25", "0.25", "2.2", "0.5"],  # repeat of run a: averaged
            ["d", "0.0001", "0.6", "0.4", "1.8", "0.4"],  # sums to 1.0001: renormalized
        ],
    )
    pool = PoolProblem.from_csv(csv_path, weight_cols="w_")
    assert pool.space.concepts == ("web", "code", "books") and pool.metric_names == ("loss", "acc")
    assert len(pool.space.candidates) == 3
    assert np.allclose(pool.space.candidates.sum(axis=1), 1.0, atol=1e-12)
    first = pool.objective.evaluate(pool.space.to_mixture(pool.space.candidates[0]), CTX)
    assert first.metrics["loss"] == pytest.approx(2.1) and first.metrics["acc"] == pytest.approx(0.4)
    with pytest.raises(MixAtlasError, match="not a row of the pool"):
        pool.objective.evaluate(Mixture(("web", "code", "books"), ("all",), np.full((3, 1), 1 / 3)), CTX)
    assert len(PoolProblem.from_csv(csv_path, weight_cols="w_", target="acc").space.candidates) == 2
    again = tmp_path / "again.csv"
    pool.to_csv(again)
    assert np.allclose(PoolProblem.from_csv(again, "w_").space.candidates, pool.space.candidates)


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ([["x_a", "loss"], ["1", "2"]], {}, "no column starts with 'w_'"),
        ([["w_a", "w_b", "loss"], ["0.5", "abc", "2"]], {}, r"pool.csv:2: column 'w_b' has 'abc'"),
        (
            [["w_a", "w_b", "loss"], ["0.5", "0.5", "2"], ["0.5", "0.4", "2"]],
            {},
            r"pool.csv:3: weights sum to 0.9",
        ),
        ([["w_a", "w_b", "loss"], ["1.5", "-0.5", "2"]], {}, r"pool.csv:2: negative weight"),
        ([["w_a", "w_b", "loss"], ["0.5", "0.5", "oops"]], {"metric_cols": ["loss"]}, "'loss' has 'oops'"),
        ([["w_a", "w_b", "loss"], ["0.5", "0.5", "2"]], {"metric_cols": ["acc"]}, "metric column 'acc'"),
        ([["w_a", "w_b", "loss"]], {}, "at least one row"),
    ],
)
def test_bad_pool_csv_names_the_row_and_the_fix(
    tmp_path: Path, rows: list, kwargs: dict, message: str
) -> None:
    csv_path = write_pool(tmp_path / "pool.csv", rows)
    with pytest.raises(MixAtlasError, match=message):
        PoolProblem.from_csv(csv_path, weight_cols="w_", **kwargs)


needs_data = pytest.mark.skipif(
    not (default_root() / "mixinglaws").exists(), reason="public runs not present"
)


@needs_data
def test_public_mixinglaws_pools_take_the_final_step_and_drop_predicted_runs() -> None:
    pool = mixinglaws_pool("RedPajama", "70M")
    assert pool.source.endswith("@30000")
    assert len(pool.space.candidates) == 40  # 42 runs minus the authors' runs 998 and 999
    assert pool.space.dim == 7 and "Github" in pool.metric_names
    weights = json.loads((default_root() / "mixinglaws" / "valid_weight.json").read_text())
    domains = [m for m in pool.metric_names if m != "valid_avg"]
    w = np.array([weights[d] for d in domains])
    expected = np.stack([pool.metric(d) for d in domains], axis=1) @ (w / w.sum())
    assert np.allclose(pool.metric("valid_avg"), expected)
    assert len(public_pool("5mix-70M").space.candidates) == 26
    autoscale = public_pool("autoscale")
    assert np.allclose(autoscale.space.candidates[0], 1 / 7)
    assert autoscale.metric("valid_avg")[0] == pytest.approx(28.113736)


def test_pool_benchmark_reports_regret_percentile_and_confidence_intervals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), size=30)
    loss = ((weights - np.array([0.6, 0.3, 0.1])) ** 2).sum(axis=1)
    pool = PoolProblem.from_arrays(["a", "b", "c"], weights, ["loss"], loss[:, None])
    problem = pool_problem(pool, "loss", minimize=True)
    # Known answers: with the whole pool as budget, random search sees every row, so its best observed row
    # is the optimum (regret 0, nothing better); uniform evaluates the pool row nearest to (1/3, 1/3, 1/3).
    full = run_benchmark(lambda: problem, ["random", "uniform"], budget=30, seeds=2, batch=2)
    rnd, uni = full["methods"]["random"], full["methods"]["uniform"]
    assert rnd["regret_per_seed"] == [0.0, 0.0] and rnd["percentile_mean"] == 0.0
    assert rnd["best_so_far"][0] > 0.0 and rnd["best_so_far"][-1] == 0.0
    assert np.all(np.diff(rnd["best_so_far"]) <= 0)  # the best so far only improves
    nearest = int(np.argmin(((weights - 1 / 3) ** 2).sum(axis=1)))
    assert uni["regret_mean"] == pytest.approx(loss[nearest] - loss.min())
    assert uni["percentile_mean"] == pytest.approx(100 * np.mean(loss < loss[nearest]))
    assert uni["regret_ci95"] == [pytest.approx(uni["regret_mean"])] * 2  # one point, no spread
    # At budget 8 of 30 rows random misses the optimum on some seed; the interval brackets the seed mean.
    small = run_benchmark(lambda: problem, ["random"], budget=8, seeds=3, batch=2)["methods"]["random"]
    assert small["regret_mean"] == pytest.approx(np.mean(small["regret_per_seed"]))
    assert small["regret_mean"] > 0
    assert small["regret_ci95"][0] < small["regret_mean"] < small["regret_ci95"][1]
    assert len(small["best_so_far"]) == 8
    best = int(np.argmin(loss))
    assert problem.regret(weights[best][None])[0] == 0.0 and problem.percentile(weights[best]) == 0.0


def test_bench_pool_cli_writes_json_and_reports_bad_input(tmp_path: Path) -> None:
    from mixatlas.cli import app

    rng = np.random.default_rng(1)
    weights = rng.dirichlet(np.ones(3), size=12)
    rows = [["w_a", "w_b", "w_c", "loss"]] + [[*map(str, w), str(float(w[0]))] for w in weights]
    csv_path = write_pool(tmp_path / "pool.csv", rows)
    out = tmp_path / "out.json"
    args = ["bench", "pool", str(csv_path), "--weight-cols", "w_", "--target", "loss", "--minimize"]
    result = CliRunner().invoke(
        app, [*args, "--budget", "12", "--seeds", "2", "--methods", "random,uniform", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"random", "uniform"} and data["budget"] == 12
    # loss = w_a, minimized: the whole pool as budget finds the smallest w_a; uniform takes the row
    # nearest to (1/3, 1/3, 1/3)
    assert data["methods"]["random"]["regret_mean"] == 0.0
    nearest = int(np.argmin(((weights - 1 / 3) ** 2).sum(axis=1)))
    expected = weights[nearest, 0] - weights[:, 0].min()
    assert data["methods"]["uniform"]["regret_mean"] == pytest.approx(expected)
    assert "random" in result.output and "uniform" in result.output
    bad = CliRunner().invoke(app, [*args[:-1], "--target", "acc", "--budget", "4", "--seeds", "1"])
    assert isinstance(bad.exception, MixAtlasError) and "no metric column 'acc'" in str(bad.exception)
