"""Executors behind one interface: local process pool, Ray (local cluster), submitit (its local cluster)."""

from __future__ import annotations

import math
import operator
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.objectives.base import Target
from mixatlas.objectives.registry import build_objective
from mixatlas.objectives.synthetic import make_synthetic
from mixatlas.search.loop import run_search
from mixatlas.search.study import Study


def test_local_executor_runs_calls_and_raises_worker_errors(tmp_path):
    with make_executor("local", parallel=2, folder=tmp_path) as executor:
        ok = executor.submit(math.sqrt, 16.0)
        bad = executor.submit(operator.truediv, 1.0, 0.0)
        pending = [ok, bad]
        finished = []
        while pending:
            for handle in executor.wait(pending, timeout=10):
                pending.remove(handle)
                finished.append(handle)
        assert executor.result(ok) == 4.0
        with pytest.raises(ZeroDivisionError):
            executor.result(bad)


def test_local_cancel_kills_a_hung_call_and_the_next_call_runs(tmp_path):
    with make_executor("local", parallel=1, folder=tmp_path) as executor:
        hung = executor.submit(time.sleep, 60)
        assert executor.wait([hung], timeout=1.0) == []
        started = time.monotonic()
        executor.cancel(hung)
        assert executor.wait([hung], timeout=10) == [hung]  # the killed worker's call ends as lost
        assert time.monotonic() - started < 10
        with pytest.raises(Exception, match="killed"):
            executor.result(hung)
        again = executor.submit(math.sqrt, 9.0)
        assert executor.wait([again], timeout=30) == [again]
        assert executor.result(again) == 3.0


def test_unknown_executor_is_a_user_error(tmp_path):
    with pytest.raises(MixAtlasError, match="--executor 'dask'"):
        make_executor("dask", parallel=1, folder=tmp_path)


def _six_trial_study(path: Path) -> tuple[Study, object]:
    spec = {"kind": "synthetic", "space_mode": "task", "seed": 0, "noise": 0.0}
    space, problem = make_synthetic("task", seed=0, noise=0.0)
    study = Study.create(
        path,
        space=space,
        objective_spec=spec,
        target=Target.parse(problem.metric, minimize=True),
        method="random",
        budget=6,
        seed=0,
    )
    return study, build_objective(spec)


def _check_six_done(study: Study) -> None:
    done = study.trials("done")
    assert len(done) == 6 and len(study.trials()) == 6
    assert all(Path(t.trial_dir, "metrics.json").is_file() for t in done)
    assert len({t.worker for t in done}) >= 1 and all(":" in t.worker for t in done)


@pytest.mark.slow
def test_ray_local_search_six_trials_two_in_flight():
    pytest.importorskip("ray")
    home_ray, tmp_ray = Path.home() / ".ray", Path("/tmp/ray")
    existed = {home_ray: home_ray.exists(), tmp_ray: tmp_ray.exists()}
    run_dir = Path(tempfile.mkdtemp(prefix="mxray", dir="/tmp"))  # Ray's socket paths need a short root
    saved_env = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    try:
        study, objective = _six_trial_study(run_dir / "s.db")
        with make_executor("ray", parallel=2, folder=run_dir, cpus_per_trial=1) as executor:
            run_search(study, objective, executor, parallel=2, runs_dir=run_dir / "runs", progress=False)
        _check_six_done(study)
        assert (run_dir / "ray").is_dir()
        for path, was_there in existed.items():
            assert was_there or not path.exists(), f"Ray wrote {path} outside the run folder"
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
def test_submitit_local_search_six_trials_two_in_flight(tmp_path):
    study, objective = _six_trial_study(tmp_path / "s.db")
    with make_executor("slurm", parallel=2, folder=tmp_path / "runs", slurm_cluster="local") as executor:
        run_search(study, objective, executor, parallel=2, runs_dir=tmp_path / "runs", progress=False)
    _check_six_done(study)
    assert any((tmp_path / "runs" / "submitit").iterdir())
