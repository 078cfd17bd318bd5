"""Executors behind one interface: local process pool, Ray (local cluster), submitit (its local cluster);
the last two through the real CLI (`mixatlas search --executor ray|slurm`)."""

from __future__ import annotations

import math
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import CliRun, run_mixatlas
from mixatlas.errors import MixAtlasError
from mixatlas.executors import make_executor
from mixatlas.search.study import Study, TrialState


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


PROBE = textwrap.dedent("""
    import os
    import sys


    class Heavy:
        worker_imports = ("wave", "mailbox")  # stdlib modules nothing else here imports


    def loaded(_heavy, _objective):
        preloaded = sorted(m for m in ("wave", "mailbox", "tarfile") if m in sys.modules)
        # the callable's module was imported by the fork server (another pid), not by this worker
        return preloaded, sys.modules["probe_fns"].IMPORTED_IN != os.getpid()


    if __name__ == "__main__":
        from mixatlas.executors import make_executor
        from mixatlas.objectives.callable import CallableObjective
        from mixatlas.processes import preload_in_workers

        preload_in_workers(["tarfile"])  # asked for before the first worker, as the demo does
        with make_executor("local", parallel=1, folder=".") as executor:
            first = executor.submit(loaded, Heavy(), CallableObjective("probe_fns:loss"))
            executor.wait([first], timeout=60)
            print(executor.result(first))
""")
PROBE_FNS = textwrap.dedent("""
    import os

    IMPORTED_IN = os.getpid()


    def loss(mixture):
        return {"loss": 1.0}
""")


def test_fork_server_preloads_what_the_objective_names(tmp_path: Path) -> None:
    """An objective's `worker_imports` (a callable objective: its function's module) and the modules asked
    for earlier are imported once in the fork server, so each fresh worker starts with them: a proxy
    trial does not import torch again."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probe_fns.py").write_text(PROBE_FNS)
    run = subprocess.run([sys.executable, "probe.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(['mailbox', 'tarfile', 'wave'], True)"


def test_unknown_executor_is_a_user_error(tmp_path):
    with pytest.raises(MixAtlasError, match="--executor 'dask'"):
        make_executor("dask", parallel=1, folder=tmp_path)


SIX_TRIALS = ("search", "--synthetic", "task", "--noise", "0", "--seed", "0", "--method", "random",
              "--budget", "6", "--parallel", "2")


def _check_six_done(study_path: Path, run: CliRun) -> None:
    """The CLI run ended well with six done trials, each with its metrics file and the worker that ran it."""
    assert run.code == 0, run.err
    study = Study.open(study_path, read_only=True)
    done = study.trials(TrialState.DONE)
    assert len(done) == 6 and len(study.trials()) == 6
    assert all(Path(t.trial_dir, "metrics.json").is_file() for t in done)
    assert len({t.worker for t in done}) >= 1 and all(":" in t.worker for t in done)
    best = min(done, key=lambda t: t.value)
    assert f"observed {best.value:.5g} (trial {best.id})" in run.err
    study.close()


@pytest.mark.slow
def test_ray_local_search_six_trials_two_in_flight() -> None:
    """`mixatlas search --executor ray`: a local Ray the run starts, keeps in its runs folder and stops."""
    pytest.importorskip("ray")
    home_ray, tmp_ray = Path.home() / ".ray", Path("/tmp/ray")
    existed = {home_ray: home_ray.exists(), tmp_ray: tmp_ray.exists()}
    run_dir = Path(tempfile.mkdtemp(prefix="mxray", dir="/tmp"))  # Ray's socket paths need a short root
    saved_env = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    try:
        run = run_mixatlas(*SIX_TRIALS, "--executor", "ray", "--cpus-per-trial", "1",
                           "--study", run_dir / "s.db", "--runs-dir", run_dir / "runs")
        _check_six_done(run_dir / "s.db", run)
        assert (run_dir / "runs" / "ray").is_dir()
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
def test_submitit_local_search_six_trials_two_in_flight(tmp_path: Path) -> None:
    """`mixatlas search --executor slurm` on submitit's local cluster (`--slurm-cluster local`: the same
    submitit code path, jobs as local processes; the partition only reaches a real Slurm)."""
    run = run_mixatlas(*SIX_TRIALS, "--executor", "slurm", "--slurm-cluster", "local", "--slurm-partition",
                       "gpu", "--slurm-timeout-min", "5", "--study", tmp_path / "s.db",
                       "--runs-dir", tmp_path / "runs")
    _check_six_done(tmp_path / "s.db", run)
    jobs = [p for p in (tmp_path / "runs" / "submitit").iterdir() if p.name.isdigit()]  # a folder per job
    assert len(jobs) == 6 and all(any(job.glob("*_result.pkl")) for job in jobs)
