"""Issue 12's reliability rows, one deterministic test each (the random kill tests are in test_kills.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.executors import WorkerLost, make_executor
from mixatlas.objectives.base import Target, TrialContext
from mixatlas.objectives.command import CommandObjective
from mixatlas.objectives.synthetic import make_synthetic
from mixatlas.publish import published, staging_dir
from mixatlas.search.study import Study

pytestmark = pytest.mark.faults

CLI = [sys.executable, "-c", "from mixatlas.cli import main; main()"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def new_study(path: Path, budget: int = 4) -> Study:
    space, problem = make_synthetic("task", seed=0, noise=0.0)
    spec = {"kind": "synthetic", "space_mode": "task", "seed": 0, "noise": 0.0}
    target = Target.parse(problem.metric, minimize=True)
    return Study.create(path, space=space, objective_spec=spec, target=target, method="random", budget=budget,
                        seed=0)


# -- row 2: --overwrite with fewer samples or another format leaves no stale file -------------------------
def test_overwrite_with_fewer_shards_or_another_format_leaves_nothing_stale(tmp_path: Path) -> None:
    from mixatlas.atlas import build_atlas
    from mixatlas.corpus.synth import synthesize
    from mixatlas.recipe.materialize import SUMMARY_NAME, materialize
    from mixatlas.recipe.recipe import Recipe
    from mixatlas.space import Mixture

    synthesize(tmp_path / "C", 60, 1)
    atlas = build_atlas(tmp_path / "C", tmp_path / "A", k=2, workers=0, progress=False)
    recipe = Recipe(Mixture(tuple(atlas.concepts), tuple(atlas.tasks), atlas.counts / atlas.counts.sum()),
                    atlas.fingerprint, atlas.centroids_fingerprint)
    out = tmp_path / "M"
    first = materialize(atlas, recipe, 60, out, format="wds", shard_size=20)
    assert sorted(p.name for p in out.iterdir()) == sorted([*first.files, SUMMARY_NAME])
    assert len(first.files) == 3
    fewer = materialize(atlas, recipe, 25, out, format="wds", shard_size=20, seed=1, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([*fewer.files, SUMMARY_NAME])
    assert len(fewer.files) == 2
    with tarfile.open(out / fewer.files[1]) as tar:
        assert len(tar.getnames()) == 2 * 5  # 25 samples: 20 + 5, image + json each
    other = materialize(atlas, recipe, 25, out, format="llava", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([*other.files, SUMMARY_NAME])
    assert not staging_dir(out).exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MixAtlasError, match="holds other files"):
        materialize(atlas, recipe, 10, tmp_path / "mine", format="llava")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_published_keeps_the_old_folder_when_the_writer_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with published(out) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), published(out) as staging:
        (staging / "a.txt").write_text("new, half")
        raise RuntimeError("writer died")
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "old"
    assert not staging_dir(out).exists()


# -- row 3: the study lock holds through a symlink --------------------------------------------------------
@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_study_lock_is_on_the_real_path(tmp_path: Path, link: str) -> None:
    study = new_study(tmp_path / "s.db")
    (tmp_path / "sub").mkdir()
    if link == "symlink":
        (tmp_path / "sub" / "link.db").symlink_to(tmp_path / "s.db")
    else:  # another real path, the same inode: the lock on the database file itself holds
        (tmp_path / "sub" / "link.db").hardlink_to(tmp_path / "s.db")
    other = Study.open(tmp_path / "sub" / "link.db")
    with study.exclusive(), pytest.raises(MixAtlasError, match=f"being searched by pid {os.getpid()};"), \
            other.exclusive():
        pass
    busy = pytest.raises(MixAtlasError, match=f"being searched by pid {os.getpid()};")
    with other.exclusive(), busy, study.exclusive():  # released: the second one may run now, and holds it
        pass
    with study.exclusive():  # SQLite's own (POSIX) locks are unaffected by the flock on the same file
        study.add_trial(study.space.natural_params())
        reader = Study.open(tmp_path / "s.db", read_only=True)
        assert len(reader.trials()) == 1
        reader.close()


def test_a_second_cli_search_through_a_symlink_or_a_hard_link_stops_with_one_line(tmp_path: Path) -> None:
    """Two `mixatlas search` processes on one study, the second through a symlink, then a hard link (another
    real path, the same inode): it stops with one line naming the first run's pid, exit 2; the first run goes
    on untouched and the study stays consistent."""
    from mixatlas.objectives.base import Result
    from mixatlas.search.study import TrialState

    study_path = tmp_path / "s.db"
    args = ["search", "--synthetic", "task", "--method", "random", "--budget", "100000", "--parallel", "2"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen([*CLI, *args, "--study", str(study_path)], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (study_path.exists() and count_done(study_path) >= 2):  # the first run is searching
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        (tmp_path / "link.db").symlink_to(study_path)
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "hard.db").hardlink_to(study_path)
        others = [tmp_path / "link.db", tmp_path / "sub" / "hard.db"]
        seconds = [subprocess.Popen([*CLI, *args, "--study", str(other)], cwd=tmp_path, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for other in others]
        for other, second in zip(others, seconds, strict=True):
            stderr = second.communicate(timeout=120)[1]
            lines = [line for line in stderr.splitlines() if line.strip()]  # the study's header, the error
            assert second.returncode == 2 and "Traceback" not in stderr, stderr
            assert sum(line.startswith("error:") for line in lines) == 1
            assert lines[-1] == (f"error: {other}: the study is being searched by pid {first.pid}; wait for "
                                "it or stop it first")
        assert first.poll() is None  # the first run was not disturbed
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    study = Study.open(study_path, read_only=True)
    done = study.trials(TrialState.DONE)
    assert study.count(TrialState.RUNNING) == 0 and len(done) >= 2
    assert len({t.trial_dir for t in done}) == len(done)
    for trial in done:  # each done trial's folder holds exactly its stored metrics
        assert Result.load(Path(trial.trial_dir) / "metrics.json").metrics == trial.metrics
    study.close()


def count_done(path: Path) -> int:
    from mixatlas.search.study import TrialState

    study = Study.open(path, read_only=True)
    try:
        return study.count(TrialState.DONE)
    finally:
        study.close()


# -- row 7: usage errors are one line, exit 2 --------------------------------------------------------------
@pytest.mark.parametrize(("args", "named"), [
    (["search", "--bogus"], "--bogus"),
    (["frobnicate"], "frobnicate"),
    (["search", "--budget", "abc"], "--budget"),
])
def test_usage_errors_are_one_line_with_exit_2(
    args: list[str], named: str, capsys: pytest.CaptureFixture
) -> None:
    from mixatlas.cli import main

    for extra, traceback in (([], False), (["--debug"], True)):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exit_info.value.code == 2, err
        assert named in lines[-1] and "--help" in lines[-1], err
        assert ("Traceback" in err) is traceback and (len(lines) == 1) is not traceback, err


# -- row 8: a stuck worker is killed alone; the next call runs for real ---------------------------------
def stuck_with_alarm_blocked(seconds: float) -> str:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return "finished"


def test_killing_a_stuck_worker_spares_the_healthy_call_beside_it(tmp_path: Path) -> None:
    with make_executor("local", parallel=2, folder=tmp_path) as executor:
        stuck = executor.submit(stuck_with_alarm_blocked, 60)
        healthy = executor.submit(stuck_with_alarm_blocked, 1.5)
        time.sleep(0.5)
        executor.cancel(stuck)
        with pytest.raises(WorkerLost, match="killed"):
            executor.result(stuck)
        assert executor.result(healthy) == "finished"
        started = time.monotonic()
        retry = executor.submit(stuck_with_alarm_blocked, 0.5)
        assert executor.result(retry) == "finished" and time.monotonic() - started >= 0.5


# -- row 16: a kill during creation never leaves an empty study -------------------------------------------
def test_killed_creations_leave_no_unreadable_study(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reliability_rows import new_study
        from pathlib import Path
        i = 0
        while True:
            new_study(Path({str(tmp_path)!r}) / f"{{sys.argv[1]}}-s{{i}}.db").close()
            i += 1
    """)
    for round_, delay in enumerate((0.05, 0.2, 0.35)):  # each round its own names: r0-s0.db, ...
        proc = subprocess.Popen([sys.executable, "-c", script, f"r{round_}"])
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f"r{round_}-s*.db")):
            assert proc.poll() is None, f"round {round_}: the creating process exited ({proc.returncode})"
            assert time.monotonic() < deadline, f"round {round_}: no study created within 60 s"
            time.sleep(0.02)  # creations are running now
        time.sleep(delay)
        assert proc.poll() is None, f"round {round_}: the creating process exited before the kill"
        proc.kill()
        proc.wait()
    studies = sorted(tmp_path.glob("r*-s*.db"))
    assert {p.name.split("-")[0] for p in studies} == {"r0", "r1", "r2"}
    for path in studies:
        Study.open(path, read_only=True).close()  # each one complete and readable
    for leftover in tmp_path.glob(".r*-s*.db.creating-*"):  # a killed creation's temp file ...
        path = tmp_path / leftover.name.split(".creating-")[0][1:]
        if not path.exists():
            new_study(path).close()  # ... is removed by the next creation of that study
            assert not leftover.exists()


# -- row 17: interruptions do not use up retries ----------------------------------------------------------
def always_fails(mixture: object) -> dict:
    raise ValueError("broken trainer")


def test_interrupted_then_failing_trial_still_gets_its_retry(tmp_path: Path) -> None:
    from mixatlas.objectives.callable import CallableObjective
    from mixatlas.search.loop import run_search

    study = new_study(tmp_path / "s.db", budget=1)
    trial = study.add_trial(study.space.natural_params())
    for _ in range(2):  # two kills under the running trial
        study.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
        study.requeue_interrupted()
    with make_executor("local", parallel=1, folder=tmp_path) as executor, pytest.raises(MixAtlasError):
        run_search(study, CallableObjective(always_fails), executor, retries=1, progress=False)
    chain = [t for t in study.trials() if t.id == trial.id or t.retry_of == trial.id]
    assert [(t.state, t.attempts) for t in chain] == [("failed", 1), ("failed", 2)]
    assert chain[0].interruptions == 2


# -- row 19: placeholders inside substituted paths stay as they are --------------------------------------
def test_placeholders_in_the_runs_dir_are_not_substituted_twice(tmp_path: Path) -> None:
    objective = CommandObjective(["train", "--out", "{trial_dir}", "--seed", "{seed}", "{trial_id}"])
    trial_dir = tmp_path / "runs-{seed}-{trial_id}" / "trial-00003"
    argv = objective.command_for(TrialContext(3, trial_dir, 42))
    assert argv == ["train", "--out", str(trial_dir), "--seed", "42", "3"]


# -- row 20 (timeout part): --timeout inf is one line and no study file ---------------------------------
@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_infinite_timeout_is_refused_before_the_study_exists(tmp_path: Path, value: str) -> None:
    done = cli("search", "--synthetic", "task", "--budget", "2", "--study", str(tmp_path / "s.db"),
               "--timeout", value)
    assert done.returncode == 2 and "timeout" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "s.db").exists()


# -- row 21: two simultaneous creations: one study, one clear message ------------------------------------
def test_simultaneous_creations_give_one_study_and_a_clear_loser(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reliability_rows import new_study
        from pathlib import Path
        from mixatlas.errors import MixAtlasError
        start = float(sys.argv[1])
        time.sleep(max(0.0, start - time.time()))
        try:
            new_study(Path({str(tmp_path)!r}) / "s.db")
            print("created")
        except MixAtlasError as exc:
            print("lost:", exc)
    """)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = sorted(proc.communicate(timeout=60)[0].strip() for proc in procs)
    assert outputs[0] == "created", outputs
    assert outputs[1].startswith("lost:") and ("same moment" in outputs[1] or "already exists" in outputs[1])
    assert Study.open(tmp_path / "s.db").budget == 4
    assert not list(tmp_path.glob(".s.db.creating-*"))


# -- row 23: `study show` never writes -------------------------------------------------------------------
def test_study_show_on_an_empty_file_is_an_error_and_leaves_it_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    done = cli("study", "show", str(empty))
    assert done.returncode == 2 and "not a readable MixAtlas study" in done.stderr
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_version_1_study_is_upgraded_when_opened_for_a_search(tmp_path: Path) -> None:
    study = new_study(tmp_path / "s.db")
    trial = study.add_trial(study.space.natural_params())
    study.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("ALTER TABLE trials DROP COLUMN interruptions")
    conn.execute("UPDATE schema_version SET version = 1")
    conn.commit()
    conn.close()
    assert Study.open(tmp_path / "s.db", read_only=True).trial(trial.id).interruptions == 0
    upgraded = Study.open(tmp_path / "s.db")
    upgraded.start_trial(trial.id, trial_dir=tmp_path / "t", worker="local")
    assert upgraded.requeue_interrupted()[0].interruptions == 1
    np.testing.assert_array_equal(upgraded.trial(trial.id).params, trial.params)

