"""The SQLite study: stored definition, trial state machine, history for optimizers, resume semantics."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, Target
from mixatlas.search.recommend import recommend
from mixatlas.search.study import Study, TrialState
from mixatlas.space import MixtureSpace


@pytest.fixture
def space() -> MixtureSpace:
    counts = np.array([[30.0, 10.0], [20.0, 20.0], [5.0, 15.0]])
    return MixtureSpace(("cats", "charts", "docs"), ("captioning", "ocr"), counts, mode="joint")


@pytest.fixture
def study(tmp_path, space) -> Study:
    return Study.create(
        tmp_path / "s.db",
        space=space,
        objective_spec={"kind": "callable", "function": "pkg.mod:fn"},
        target=Target.parse("val/loss", minimize=True),
        method="random",
        budget=5,
        seed=11,
        method_options={"alpha": 1.0},
        meta={"note": "unit test"},
    )


def test_definition_survives_reopen(study, space):
    reopened = Study.open(study.path)
    assert reopened.space.to_dict() == space.to_dict()
    assert reopened.target == Target.parse("val/loss", minimize=True)
    assert (reopened.method, reopened.budget, reopened.seed) == ("random", 5, 11)
    assert reopened.method_options == {"alpha": 1.0}
    assert reopened.objective_spec == {"kind": "callable", "function": "pkg.mod:fn"}
    assert reopened.meta == {"note": "unit test"}
    mode = sqlite3.connect(study.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_trial_state_machine_and_history(study, space, tmp_path):
    params = [space.uniform_params(), space.natural_params(), space.uniform_params()]
    a, b, c = (study.add_trial(p) for p in params)
    assert [t.state for t in study.trials()] == ["pending"] * 3
    np.testing.assert_allclose(b.mixture.weights_kt, space.to_mixture(params[1]).weights_kt)

    study.start_trial(a.id, trial_dir=tmp_path / "trial-00001", worker="local")
    study.start_trial(b.id, trial_dir=tmp_path / "trial-00002", worker="local")
    done = study.finish_trial(a.id, Result({"val/loss": 2.5, "other": 1.0}, [[0, 3.0]], 4.0), worker="h:1")
    assert (done.state, done.value, done.cost_s, done.worker) == ("done", 2.5, 4.0, "h:1")
    assert done.finished_at >= done.started_at >= done.created_at

    history = study.history()
    assert history.done_params.shape == (1, space.dim)
    assert history.done_utility.tolist() == [-2.5]  # minimized target: utility = -value
    assert history.pending_params.shape == (2, space.dim)  # b running + c pending
    assert (history.budget, history.seed) == (5, 11)

    retry = study.fail_trial(b.id, "RuntimeError: boom", retry=True)
    assert study.trial(b.id).error == "RuntimeError: boom"
    assert (retry.state, retry.attempts, retry.retry_of) == ("pending", 2, b.id)
    np.testing.assert_array_equal(retry.params, b.params)
    with pytest.raises(RuntimeError, match="not running"):
        study.finish_trial(c.id, Result({"val/loss": 1.0}))


def test_missing_target_metric_refuses_done(study, space, tmp_path):
    trial = study.add_trial(space.uniform_params())
    study.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
    with pytest.raises(MixAtlasError, match="'val/loss' not in the result"):
        study.finish_trial(trial.id, Result({"loss": 1.0}))
    with pytest.raises(MixAtlasError, match="is nan"):
        study.finish_trial(trial.id, Result({"val/loss": float("nan")}))
    assert study.trial(trial.id).state == "running"


def test_interrupted_trials_requeue_with_same_params(study, space, tmp_path):
    trial = study.add_trial(space.natural_params())
    study.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
    (requeued,) = Study.open(study.path).requeue_interrupted()
    assert (requeued.id, requeued.state) == (trial.id, "pending")
    assert (requeued.attempts, requeued.interruptions) == (1, 1)  # an interruption is not an attempt
    np.testing.assert_array_equal(requeued.params, trial.params)


def test_recommend_and_rows(study, space, tmp_path):
    values = {}
    for i, params in enumerate([space.uniform_params(), space.natural_params()]):
        trial = study.add_trial(params)
        study.start_trial(trial.id, trial_dir=tmp_path / f"t{i}", worker="local")
        values[trial.id] = 3.0 - i
        study.finish_trial(trial.id, Result({"val/loss": values[trial.id]}))
    rec = recommend(study)
    mixture, trial = rec.mixture, rec.trial
    assert trial is not None and trial.value == min(values.values())  # random recommends the best observed
    np.testing.assert_allclose(mixture.weights_kt, trial.mixture.weights_kt)
    rows = study.to_rows()
    assert [r["value"] for r in rows] == [3.0, 2.0]
    assert rows[0]["w:cats/captioning"] == pytest.approx(1 / 6)
    assert rows[1]["metric:val/loss"] == 2.0


def test_recommend_without_trials_is_a_user_error(study):
    with pytest.raises(MixAtlasError, match="no finished trials"):
        recommend(study)


def test_open_missing_or_corrupt_study(tmp_path, study, space):
    with pytest.raises(MixAtlasError, match="no study file"):
        Study.open(tmp_path / "nope.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MixAtlasError, match="not a readable MixAtlas study"):
        Study.open(junk)
    with pytest.raises(MixAtlasError, match="already exists"):
        Study.create(
            study.path,
            space=space,
            objective_spec={},
            target=Target.parse("x"),
            method="random",
            budget=1,
            seed=0,
        )


def test_one_search_at_a_time(study):
    second = Study.open(study.path)
    with study.exclusive(), pytest.raises(MixAtlasError, match="being searched by pid"), second.exclusive():
        pass
    with study.exclusive():  # released on exit
        pass


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "from mixatlas.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_search_then_study_show_and_csv(tmp_path):
    (tmp_path / "search.yaml").write_text("synthetic: task\nmethod: random\nbudget: 3\nstudy: s.db\n")
    run = _cli("search", "--config", "search.yaml", "--seed", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "recommendation (observed) for loss" in run.stderr
    assert Study.open(tmp_path / "s.db").seed == 2  # the flag overrode the YAML default

    show = _cli("study", "show", "s.db", "--csv", "trials.csv", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "3/3 done" in show.stderr and "task marginal" in show.stderr
    with open(tmp_path / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == ["done"] * 3
    assert float(rows[0]["metric:loss"]) == float(rows[0]["value"])

    again = _cli("search", "--config", "search.yaml", "--seed", "2", "--budget", "5", cwd=tmp_path)
    assert again.returncode == 2
    assert "budget is 5 here but 3 in the study" in again.stderr


def test_cli_bad_config_is_one_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("synthetic: task\nbudget: [3\n")
    run = _cli("search", "--config", "broken.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "broken.yaml:3" in run.stderr
    assert "Traceback" not in run.stderr
    (tmp_path / "typo.yaml").write_text("synthetic: task\nbudgte: 3\n")
    run = _cli("search", "--config", "typo.yaml", cwd=tmp_path)
    assert run.returncode == 2 and "unknown option 'budgte'" in run.stderr


def test_share_from_takes_over_finished_trials_of_another_target(tmp_path: Path) -> None:
    from mixatlas.executors import make_executor
    from mixatlas.search.config import SearchConfig
    from mixatlas.search.loop import run_search
    from mixatlas.search.setup import open_study

    first_cfg = SearchConfig.load(None, {"synthetic": "task", "method": "random", "budget": 4,
                                         "target": "bench0/loss", "study": tmp_path / "a.db"})
    first, objective = open_study(first_cfg)
    with make_executor("local", parallel=1, folder=tmp_path) as executor:
        run_search(first, objective, executor, progress=False)
    second_cfg = SearchConfig.load(None, {"synthetic": "task", "method": "random", "budget": 6,
                                          "target": "bench1/loss", "study": tmp_path / "b.db",
                                          "share_from": [tmp_path / "a.db"]})
    second, _ = open_study(second_cfg)
    shared = second.trials("done")
    assert len(shared) == 4 and all(t.worker.startswith("shared:") for t in shared)
    by_params = {tuple(np.round(t.params, 12)): t for t in first.trials("done")}
    for trial in shared:
        source = by_params[tuple(np.round(trial.params, 12))]
        assert trial.value == pytest.approx(source.metrics["bench1/loss"])  # re-scored on the new target
    other_space = SearchConfig.load(None, {"synthetic": "joint", "method": "random", "budget": 3,
                                           "target": "bench1/loss", "study": tmp_path / "c.db",
                                           "share_from": [tmp_path / "a.db"]})
    with pytest.raises(MixAtlasError, match="cannot share its trials"):
        open_study(other_space)
    assert not (tmp_path / "c.db").exists()  # refused before any file is written


def test_trial_states_are_an_enum_stored_as_text(study, space, tmp_path):
    trial = study.add_trial(space.uniform_params())
    assert trial.state is TrialState.PENDING and not trial.state.is_finished()
    study.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
    assert study.trial(trial.id).state is TrialState.RUNNING
    study.fail_trial(trial.id, "boom", retry=False)
    assert study.trial(trial.id).state.is_finished() and TrialState.DONE.is_finished()
    assert study.count(TrialState.FAILED) == 1 and study.trials(TrialState.PENDING) == []
    # The file keeps the plain text, so studies written before the enum still open.
    with sqlite3.connect(study.path) as conn:
        assert conn.execute("SELECT state FROM trials").fetchone()[0] == "failed"
    with pytest.raises(ValueError):
        study.trials("finished")


def test_target_owns_the_direction():
    loss, accuracy = Target.parse("loss", minimize=True), Target.parse("acc")
    assert loss.best([3.0, 1.0, 2.0]) == 1.0 and accuracy.best([3.0, 1.0, 2.0]) == 3.0
    assert loss.best([("a", 2.0), ("b", 2.0)], key=lambda pair: pair[1]) == ("a", 2.0)  # first on ties
    assert loss.gain(1.0, reference=3.0) == 2.0 and accuracy.gain(1.0, reference=3.0) == -2.0
    assert loss.from_utility(loss.to_utility(0.7)) == 0.7 and loss.to_utility(0.7) == -0.7
    assert loss.utility({"loss": 2.0}) == -2.0 and accuracy.utility({"acc": 2.0}) == 2.0
    np.testing.assert_array_equal(loss.running_best(np.array([3.0, 4.0, 1.0])), [3.0, 3.0, 1.0])
    np.testing.assert_array_equal(accuracy.running_best(np.array([3.0, 4.0, 1.0])), [3.0, 4.0, 4.0])
    assert loss.retarget("other").minimize and (loss.direction, accuracy.better) == ("minimize", "higher")
    with pytest.raises(ValueError):
        loss.best([])


def test_recommend_for_another_target_rescores_the_finished_trials(study, space, tmp_path):
    # Trial 1 is best on the study's target, trial 2 on "val/other"; both minimized.
    for i, (loss, other) in enumerate([(1.0, 9.0), (2.0, 0.5)]):
        trial = study.add_trial(space.uniform_params() if i == 0 else space.natural_params())
        study.start_trial(trial.id, trial_dir=tmp_path / f"t{i}", worker="local")
        study.finish_trial(trial.id, Result({"val/loss": loss, "val/other": other}))
    own = recommend(study)
    other = recommend(study, study.target.retarget("val/other"))
    assert (own.trial.id, own.observed, own.chosen) == (1, 1.0, "trial 1")
    assert (other.trial.id, other.observed, other.target.spec) == (2, 0.5, "val/other")
    with pytest.raises(MixAtlasError, match="missing"):
        recommend(study, Target.parse("missing"))


def test_resume_refuses_a_different_space_or_objective(tmp_path: Path) -> None:
    from mixatlas.search.config import SearchConfig
    from mixatlas.search.setup import open_study

    def config(**options) -> SearchConfig:
        fields = {"method": "random", "budget": 3, "study": tmp_path / "s.db", **options}
        return SearchConfig.load(None, fields)

    study, _ = open_study(config(synthetic="task"))
    study.close()
    with pytest.raises(MixAtlasError, match=r'space\.mode is "joint" here but "task" in the study'):
        open_study(config(synthetic="joint"))
    with pytest.raises(MixAtlasError, match=r"objective_spec\.noise is 0\.5 here but null in the study"):
        open_study(config(synthetic="task", noise=0.5))
    again, _ = open_study(config(synthetic="task"))  # the same problem resumes
    assert again.space.mode == "task"
    again.close()


@pytest.mark.parametrize("method", ["random", "gp-ucb"])
def test_recommendation_follows_the_target_direction(
    tmp_path: Path, space: MixtureSpace, method: str
) -> None:
    # the same six trials, value = weight of cell cats/captioning: a minimized study recommends the lowest,
    # a maximized one the highest (gp-ucb's posterior-mean rule picks among the evaluated mixtures)
    params = space.sample(6, np.random.default_rng(5))
    values = space.cell_weights(params)[:, 0, 0]
    picked = {}
    for minimize in (True, False):
        study = Study.create(
            tmp_path / f"{minimize}.db", space=space, objective_spec={"kind": "callable", "function": "m:f"},
            target=Target.parse("w", minimize=minimize), method=method, budget=6, seed=0,
            method_options={"rule": "mean", "variants": ["gp"]} if method == "gp-ucb" else {},
        )
        for i, p in enumerate(params):
            trial = study.add_trial(p)
            study.start_trial(trial.id, trial_dir=tmp_path / f"{minimize}{i}", worker="local")
            study.finish_trial(trial.id, Result({"w": float(values[i])}))
        rec = recommend(study)
        picked[minimize] = rec.mixture.weights_kt[0, 0]
        if rec.predicted is not None:  # the prediction comes back in target units, near the chosen value
            assert rec.predicted[0] == pytest.approx(picked[minimize], abs=0.1)
        study.close()
    assert picked[True] == pytest.approx(values.min()) and picked[False] == pytest.approx(values.max())
