"""The search loop: exact budgets, failures recorded and retried, resume after SIGKILL at random points."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Target
from mixatlas.objectives.callable import CallableObjective
from mixatlas.search.loop import run_search
from mixatlas.search.recommend import recommend
from mixatlas.search.study import Study
from mixatlas.space import Mixture, MixtureSpace

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")


def quadratic_loss(mixture: Mixture) -> dict[str, float]:
    """A smooth test objective with its optimum at the uniform mixture."""
    w = mixture.weights_kt
    return {"val/loss": float(1.0 + ((w - 1.0 / w.size) ** 2).sum()), "aux": float(w[0, 0])}


def flaky_loss(mixture: Mixture) -> dict[str, float]:
    """Fails for ~20% of mixtures, chosen by a hash of the weights: raises, hangs, or returns NaN."""
    bucket = int(hashlib.sha256(mixture.weights_kt.tobytes()).hexdigest(), 16) % 15
    if bucket == 0:
        raise RuntimeError("proxy diverged")
    if bucket == 1:
        time.sleep(30)  # the loop's 1 s timeout stops it
    if bucket == 2:
        return {"val/loss": float("nan")}
    return quadratic_loss(mixture)


def always_fails(mixture: Mixture) -> dict[str, float]:
    raise ValueError("bad trainer config")


def _space(mode: str = "joint") -> MixtureSpace:
    counts = np.arange(1.0, 11.0).reshape(2, 5)
    return MixtureSpace(("photos", "charts"), TASKS, counts, mode=mode)


def _study(path: Path, budget: int, function: str, seed: int = 0) -> Study:
    return Study.create(
        path,
        space=_space(),
        objective_spec={"kind": "callable", "function": function},
        target=Target.parse("val/loss", minimize=True),
        method="random",
        budget=budget,
        seed=seed,
    )


def test_search_stops_at_exact_budget_with_trial_files(tmp_path):
    study = _study(tmp_path / "s.db", budget=5, function="test_loop:quadratic_loss")
    with make_executor("local", parallel=2, folder=tmp_path) as executor:
        run_search(study, CallableObjective(quadratic_loss), executor, parallel=2, runs_dir=tmp_path / "runs")
    trials = study.trials()
    assert [t.state for t in trials] == ["done"] * 5
    for trial in trials:
        folder = Path(trial.trial_dir)
        assert folder.name == f"trial-{trial.id:05d}"
        assert {"mixture.json", "metrics.json", "stdout.log", "stderr.log"} <= {
            p.name for p in folder.iterdir()
        }
        stored = json.loads((folder / "metrics.json").read_text())["metrics"]["val/loss"]
        assert stored == trial.value == quadratic_loss(trial.mixture)["val/loss"]
        assert trial.worker.split(":")[1] != str(os.getpid())  # ran in a worker process
    best = recommend(study).trial
    assert best.value == min(t.value for t in trials)


def test_flaky_objective_still_finishes_with_failures_recorded(tmp_path):
    budget = 12
    study = _study(tmp_path / "s.db", budget=budget, function="test_loop:flaky_loss", seed=0)
    with make_executor("local", parallel=2, folder=tmp_path) as executor:
        run_search(
            study,
            CallableObjective(flaky_loss),
            executor,
            parallel=2,
            retries=1,
            timeout_s=1.0,
            progress=False,
        )
    assert study.count("done") == budget
    failed = study.trials("failed")
    assert failed, "a 20% failure rate over this many proposals must produce failures"
    reasons = {t.error.split(":")[0] for t in failed}
    assert reasons == {"RuntimeError", "timed out after 1 s", "target metric 'val/loss' is nan"}
    for trial in failed:
        retries = [t for t in study.trials() if t.retry_of == (trial.retry_of or trial.id)]
        assert len(retries) == 1  # retried exactly once (retries=1), with the same params
        np.testing.assert_array_equal(retries[0].params, trial.params)
    assert not study.trials("pending") and not study.trials("running")


def test_objective_that_always_fails_stops_with_the_last_reason(tmp_path):
    study = _study(tmp_path / "s.db", budget=2, function="test_loop:always_fails")
    reason = r"trial attempts failed .*ValueError: bad trainer config"
    with (
        make_executor("local", parallel=1, folder=tmp_path) as executor,
        pytest.raises(MixAtlasError, match=reason),
    ):
        run_search(study, CallableObjective(always_fails), executor, retries=1, progress=False)
    assert study.count("failed") == 5 and study.count("done") == 0


DRIVER = """
import sys
from mixatlas.executors import make_executor
from mixatlas.objectives.callable import CallableObjective
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study

if __name__ == "__main__":  # spawned pool workers import this file too
    study = Study.open(sys.argv[1])
    with make_executor("local", parallel=2, folder=sys.argv[2]) as executor:
        run_search(study, CallableObjective("slow_objective:loss"), executor, parallel=2,
                   runs_dir=sys.argv[2], progress=False)
"""

SLOW_OBJECTIVE = """
import time

def loss(mixture):
    time.sleep(0.5)
    w = mixture.weights_kt
    return {"val/loss": float(((w - 0.1) ** 2).sum())}
"""


def test_resume_after_sigkill_at_random_points(tmp_path):
    budget = 16
    (tmp_path / "slow_objective.py").write_text(SLOW_OBJECTIVE)
    (tmp_path / "driver.py").write_text(DRIVER)
    study_path = tmp_path / "s.db"
    _study(study_path, budget=budget, function="slow_objective:loss").close()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, str(tmp_path / "driver.py"), str(study_path), str(tmp_path / "runs")]
    rng = random.Random(7)
    seen_done: dict[int, float] = {}
    for _ in range(4):
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.8, 2.5))
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its pool workers, mid-flight
        proc.wait()
        done = {t.id: t.value for t in Study.open(study_path).trials("done")}
        assert all(done.get(i) == v for i, v in seen_done.items()), "a done trial was lost or changed"
        seen_done = done
    assert len(seen_done) < budget, "the kills must interrupt the search before it is done"
    finish = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr[-2000:]
    study = Study.open(study_path)
    done = study.trials("done")
    assert len(done) == budget
    assert all(seen_done[i] == v for i, v in seen_done.items() if i in {t.id for t in done})
    assert set(seen_done) <= {t.id for t in done}
    params = {tuple(t.params) for t in done}
    assert len(params) == budget, "a mixture was evaluated into two done trials"
    assert not study.trials("running") and not study.trials("pending")
    for trial in done:
        metrics = json.loads((Path(trial.trial_dir) / "metrics.json").read_text())["metrics"]
        assert metrics["val/loss"] == trial.value


@pytest.mark.parametrize(("rule", "distinct"), [("shared", 1), ("per-trial", 3)])
def test_trial_seeds_rule(tmp_path: Path, rule: str, distinct: int) -> None:
    from mixatlas.search.loop import trial_seed

    study = Study.create(
        tmp_path / "s.db", space=_space(), objective_spec={"kind": "callable", "function": "x:y"},
        target=Target.parse("val/loss", minimize=True), method="random", budget=3, seed=11,
        meta={"trial_seeds": rule},
    )
    trials = [study.add_trial(_space().sample(1, np.random.default_rng(i))[0]) for i in range(3)]
    seeds = {trial_seed(study, t) for t in trials}
    assert len(seeds) == distinct
    assert (seeds == {11}) == (rule == "shared")
