"""Live multi-fidelity search: `mixatlas search --fidelities ... --method mf-gp-ucb` end to end (costs charged
exactly, the fidelity stored per trial and passed to the objective, recommendation at the target fidelity,
resume), the objectives' fidelity hooks, the v2 -> v3 study upgrade and `analyze fidelities --study`."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_mixatlas
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, Target, TrialContext
from mixatlas.objectives.command import CommandObjective
from mixatlas.objectives.synthetic import MultiFidelitySynthetic, make_synthetic
from mixatlas.search.config import SearchConfig
from mixatlas.search.multifidelity import Fidelities
from mixatlas.search.recommend import recommend
from mixatlas.search.setup import open_study
from mixatlas.search.study import SCHEMA_VERSION, Study, TrialState

COSTS = {"lo": 1.0, "hi": 4.0}
BUDGET_COST = 11.0
SEARCH = ("search", "--synthetic", "task", "--fidelities", "lo=1,hi=4", "--target-fidelity", "hi",
          "--budget-cost", str(BUDGET_COST), "--method", "mf-gp-ucb", "--seed", "3")


def _spent(study: Study) -> float:
    return sum(COSTS[t.fidelity] for t in study.trials(TrialState.DONE))


def test_a_live_search_charges_costs_exactly_and_recommends_at_the_target_fidelity(tmp_path: Path) -> None:
    path = tmp_path / "mf.db"
    run = run_mixatlas(*SEARCH, "--study", path)
    assert run.code == 0, run.err
    study = Study.open(path, read_only=True)
    done = study.trials(TrialState.DONE)
    assert {t.fidelity for t in done} == {"lo", "hi"}  # both fidelities used, each trial knows its own
    assert not study.trials(TrialState.PENDING) and not study.trials(TrialState.RUNNING)
    spent = _spent(study)
    assert spent == pytest.approx(study.cost_spent())
    assert spent <= BUDGET_COST and BUDGET_COST - spent < min(COSTS.values())  # no further trial fits
    assert study.fidelities == Fidelities(("lo", "hi"), (1.0, 4.0), "hi") and study.budget_cost == BUDGET_COST
    for trial in done:  # the objective ran at the trial's fidelity: only "hi" is the target problem itself
        at_target = trial.metrics["loss_noiseless"] == trial.metrics["target_loss_noiseless"]
        assert at_target == (trial.fidelity == "hi")
    rec = recommend(study)
    assert "fidelity hi" in rec.recommendation.source
    assert rec.trial is None or rec.trial.fidelity == "hi"
    assert "at fidelity hi" in run.err
    shown = run_mixatlas("study", "show", path)
    assert shown.code == 0, shown.err
    text = shown.err
    n_lo = sum(t.fidelity == "lo" for t in done)
    assert f"lo {n_lo} done (cost {n_lo:g})" in text and f"spent {spent:g} of {BUDGET_COST:g}" in text


def test_a_stopped_search_resumes_with_its_fidelities(tmp_path: Path) -> None:
    from mixatlas.search.methods import make_mf_optimizer

    path = tmp_path / "mf.db"
    config = SearchConfig.load(None, {
        "synthetic": "task", "fidelities": "lo=1,hi=4", "target_fidelity": "hi", "budget_cost": BUDGET_COST,
        "method": "mf-gp-ucb", "seed": 3, "study": str(path),
    })
    study, objective = open_study(config)
    assert isinstance(objective, MultiFidelitySynthetic)
    # what a search killed mid-trial leaves: one trial done, one running
    first, second = (study.add_trial(p, fidelity=study.fidelities.names[f])
                     for p, f in make_mf_optimizer("mf-gp-ucb").ask(study.fidelity_history(), 2))
    study.start_trial(first.id, trial_dir=tmp_path / "t1", worker="local")
    ctx = TrialContext(first.id, tmp_path / "t1", 3, first.fidelity)
    study.finish_trial(first.id, objective.evaluate(first.mixture, ctx))
    study.start_trial(second.id, trial_dir=tmp_path / "t2", worker="local")
    study.close()

    changed = run_mixatlas("search", "--study", path, "--fidelities", "lo=1,hi=5")
    assert changed.code == 2 and "fidelities.costs" in changed.err and "in the study" in changed.err
    run = run_mixatlas("search", "--study", path, "--fidelities", "lo=1,hi=4")  # the same: resumes
    assert run.code == 0, run.err
    study = Study.open(path, read_only=True)
    resumed = study.trial(second.id)
    assert resumed.state == TrialState.DONE and resumed.interruptions == 1
    assert resumed.fidelity == second.fidelity and study.trial(first.id).value is not None
    spent = _spent(study)
    assert spent <= BUDGET_COST and BUDGET_COST - spent < min(COSTS.values())


@pytest.mark.parametrize(("flags", "message"), [
    (("--method", "mf-gp-ucb"), "method 'mf-gp-ucb' needs fidelities (--fidelities"),
    (("--fidelities", "lo=1,hi=4"), "fidelities need a multi-fidelity method (--method mf-gp-ucb)"),
    (("--fidelities", "lo=1,hi", "--method", "mf-gp-ucb"), "--fidelities 'lo=1,hi': cannot read 'hi'"),
    (("--fidelities", "lo=1,hi=4", "--method", "mf-gp-ucb", "--target-fidelity", "mid"),
     "--target-fidelity 'mid' is not one of the fidelities lo, hi"),
    (("--fidelities", "lo=2,hi=4", "--method", "mf-gp-ucb", "--budget-cost", "1"), "raise --budget-cost"),
    (("--budget-cost", "5"), "--budget-cost needs --fidelities"),
])
def test_fidelity_options_are_checked_with_one_line_errors(tmp_path: Path, flags, message) -> None:
    run = run_mixatlas("search", "--synthetic", "task", "--study", tmp_path / "s.db", *flags)
    assert run.code == 2 and message in run.err
    assert not (tmp_path / "s.db").exists()


def test_the_fidelity_reaches_a_command_objectives_argv(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import json, sys\n"
        "trial_dir, fidelity = sys.argv[1], sys.argv[2]\n"
        "json.dump({'metrics': {'steps': {'steps0.25': 25.0, 'steps1': 100.0}[fidelity]}},"
        " open(trial_dir + '/metrics.json', 'w'))\n"
    )
    objective = CommandObjective([sys.executable, str(trainer), "{trial_dir}", "{fidelity}"])
    ctx = TrialContext(1, tmp_path / "t1", 0, "steps0.25")
    assert objective.command_for(ctx)[-1] == "steps0.25"
    assert objective.evaluate(_natural(), ctx).metrics == {"steps": 25.0}
    assert objective.command_for(TrialContext(2, tmp_path / "t2", 0))[-1] == ""  # single-fidelity: empty


def _natural(space=None):
    space = space or make_synthetic("task")[0]
    return space.to_mixture(space.natural_params())


def test_the_synthetic_family_is_correlated_biased_and_exact_at_the_target() -> None:
    space, problem = make_synthetic("joint", seed=1)
    family = MultiFidelitySynthetic(problem, {"low": 1.0, "high": 10.0}, "high")
    weights = space.cell_weights(space.sample(400, np.random.default_rng(0)))
    low, high = family.loss_at(weights, "low"), family.loss_at(weights, "high")
    np.testing.assert_array_equal(high, problem.loss(weights))
    assert 0.35 < np.corrcoef(low, high)[0, 1] < 0.9  # rho = (1 + 0.1) / 2 by construction
    assert low.mean() > high.mean()  # a cheap fidelity sits higher, like a smaller model's loss
    metrics = family.evaluate(_natural(space), TrialContext(4, Path("."), 0, None)).metrics
    assert metrics["loss_noiseless"] == metrics["target_loss_noiseless"]  # None: the target fidelity
    with pytest.raises(MixAtlasError, match="fidelity 'mid' unknown"):
        family.evaluate(_natural(space), TrialContext(4, Path("."), 0, "mid"))


def test_proxy_fidelity_names_map_to_steps_and_sizes() -> None:
    from mixatlas.objectives.proxy import ProxyConfig
    from mixatlas.objectives.proxy.fidelity import proxy_config_at

    config = ProxyConfig(steps=200, warmup_steps=20)
    quarter = proxy_config_at(config, "steps0.25")
    assert (quarter.steps, quarter.warmup_steps, quarter.tiny) == (50, 5, config.tiny)
    nano = proxy_config_at(config, "nano:0.5")
    assert nano.steps == 100 and nano.tiny.lm_hidden == config.tiny.lm_hidden // 2
    assert proxy_config_at(config, "tiny") == config and proxy_config_at(config, None) is config
    assert proxy_config_at(config, "small").tiny.lm_layers == 2 * config.tiny.lm_layers
    with pytest.raises(MixAtlasError, match=r"proxy fidelity 'huge': write steps<F>"):
        proxy_config_at(config, "huge")
    custom = ProxyConfig(preset="custom", vision="v", lm="l")
    with pytest.raises(MixAtlasError, match="sizes need preset tiny"):
        proxy_config_at(custom, "tiny:0.5")


def _mf_study(path: Path) -> Study:
    space, _ = make_synthetic("task")
    return Study.create(path, space=space, objective_spec={"kind": "synthetic", "space_mode": "task"},
                        target=Target.parse("loss", minimize=True), method="mf-gp-ucb", budget=4, seed=0,
                        fidelities=Fidelities(("lo", "hi"), (1.0, 4.0), "hi"), budget_cost=30.0)


def test_a_retry_keeps_its_fidelity(tmp_path: Path) -> None:
    study = _mf_study(tmp_path / "s.db")
    trial = study.add_trial(study.space.natural_params(), fidelity="lo")
    study.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
    assert study.fail_trial(trial.id, "boom", retry=True).fidelity == "lo"
    with pytest.raises(MixAtlasError, match="needs a fidelity"):
        study.add_trial(study.space.natural_params())


def test_analyze_fidelities_of_a_finished_study(tmp_path: Path) -> None:
    study = _mf_study(tmp_path / "s.db")
    rng = np.random.default_rng(0)
    for i, params in enumerate(study.space.sample(6, rng)):
        for fidelity, shift in (("lo", 0.5), ("hi", 0.0)):
            trial = study.add_trial(params, fidelity=fidelity)
            study.start_trial(trial.id, trial_dir=tmp_path / f"t{trial.id}", worker="local")
            study.finish_trial(trial.id, Result({"loss": float(i) + shift}))
    study.close()
    out = tmp_path / "agreement.json"
    run = run_mixatlas("analyze", "fidelities", "--study", tmp_path / "s.db", "--json", out)
    assert run.code == 0, run.err
    [row] = json.loads(out.read_text())["rows"]
    assert row["fidelity"] == "lo" and row["n"] == 6 and row["spearman"] == pytest.approx(1.0)
    assert row["best_rank_at_target"] == 1


def test_a_version_2_study_still_opens_and_is_upgraded(tmp_path: Path) -> None:
    space, _ = make_synthetic("task")
    path = tmp_path / "v2.db"
    study = Study.create(path, space=space, objective_spec={"kind": "synthetic", "space_mode": "task"},
                         target=Target.parse("loss", minimize=True), method="gp-ucb", budget=3, seed=0)
    trial = study.add_trial(space.natural_params())
    study.close()
    conn = sqlite3.connect(path)  # the file as MixAtlas wrote it before fidelities existed
    conn.execute("ALTER TABLE trials DROP COLUMN fidelity")
    conn.execute("UPDATE schema_version SET version = 2")
    conn.commit()
    conn.close()
    old = Study.open(path, read_only=True)
    assert old.trial(trial.id).fidelity is None and old.fidelities is None and old.budget_cost is None
    assert run_mixatlas("study", "show", path).code == 0
    upgraded = Study.open(path)
    (version,) = upgraded._conn.execute("SELECT version FROM schema_version").fetchone()
    assert version == SCHEMA_VERSION == 3
    np.testing.assert_array_equal(upgraded.trial(trial.id).params, trial.params)
    assert upgraded.add_trial(space.uniform_params()).fidelity is None


def test_a_multi_fidelity_method_has_no_single_fidelity_posterior_for_the_report(tmp_path: Path) -> None:
    from mixatlas.search.recommend import posterior_for

    study = _mf_study(tmp_path / "s.db")
    assert posterior_for(study.method, study.method_options, study.history()) is None


def test_a_sigkilled_search_resumes_and_still_charges_exactly(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    path = tmp_path / "mf.db"
    argv = [sys.executable, "-c", "from mixatlas.cli import main; main()", *SEARCH, "--study", str(path)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(argv, start_new_session=True, **quiet)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and Study.open(path, read_only=True).count(TrialState.DONE) >= 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.id: (t.fidelity, t.value) for t in Study.open(path, read_only=True).trials(TrialState.DONE)}
    assert len(before) >= 2
    run = run_mixatlas(*SEARCH, "--study", path)  # the same command resumes
    assert run.code == 0, run.err
    study = Study.open(path, read_only=True)
    after = {t.id: (t.fidelity, t.value) for t in study.trials(TrialState.DONE)}
    assert all(after[i] == v for i, v in before.items())  # nothing done was lost or changed
    spent = _spent(study)
    assert spent <= BUDGET_COST and BUDGET_COST - spent < min(COSTS.values())
