"""Fault injection: SIGKILL / SIGINT / SIGTERM (and `kill -9 -PGID`) of the real CLI at random points of
`search`, `decompose` and `materialize`; then nothing is lost, duplicated, orphaned or half-published.

By default (CI) each test runs one or two fixed kinds of kill at random moments (about a minute in all).
The full randomized set: `MIXATLAS_FAULT_ROUNDS=10 pytest -m faults tests/faults` (random kinds, more
rounds); `MIXATLAS_FAULT_SEED=N` replays a run (the seed is printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from mixatlas.objectives.base import Result
from mixatlas.publish import staging_dir
from mixatlas.search.study import Study, TrialState

pytestmark = pytest.mark.faults

ROUNDS = int(os.environ.get("MIXATLAS_FAULT_ROUNDS", "0"))  # 0: the fixed CI subset
SEED = int(os.environ.get("MIXATLAS_FAULT_SEED", str(time.time_ns() % 10**9)))
CLI = [sys.executable, "-c", "from mixatlas.cli import main; main()"]
# "Ctrl-C" is what a terminal does: SIGINT to the whole foreground process group (workers included)
KINDS = ("SIGKILL", "SIGINT", "SIGTERM", "group SIGKILL", "Ctrl-C")
EXIT_CODES = {"SIGKILL": -9, "SIGINT": 130, "SIGTERM": 143, "group SIGKILL": -9, "Ctrl-C": 130}


def kinds(ci: tuple[str, ...], rng: random.Random) -> list[str]:
    """The kills one test injects: `ci` by default, else ROUNDS random kinds."""
    return list(ci) if ROUNDS == 0 else [rng.choice(KINDS) for _ in range(ROUNDS)]


class Run:
    """One CLI process in its own session, tagged with a marker in its environment (inherited by every
    descendant: workers, fork server, resource tracker, trainers and their children)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.err = cwd / f"stderr-{self.marker}.log"
        env = {**os.environ, "MIXATLAS_FAULT_RUN": self.marker}
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)

    def send(self, kind: str) -> None:
        if kind in ("group SIGKILL", "Ctrl-C"):
            os.killpg(self.proc.pid, signal.SIGKILL if kind == "group SIGKILL" else signal.SIGINT)
        else:
            self.proc.send_signal(getattr(signal, kind))

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def survivors(self, within: float = 10.0, besides: frozenset[int] = frozenset()) -> list[str]:
        """Processes of this run still alive `within` s after it ended (zombies do not count); returns as
        soon as none but `besides` (pids expected to outlive it for now) are left."""
        deadline = time.monotonic() + within
        while True:
            alive = []
            for proc in psutil.process_iter(["pid", "name", "cmdline"]):
                try:
                    if proc.status() != psutil.STATUS_ZOMBIE and \
                            proc.environ().get("MIXATLAS_FAULT_RUN") == self.marker:
                        alive.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
                except psutil.Error:
                    continue
            if {int(line.split()[0]) for line in alive} <= besides or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def descendants(self) -> int:
        """How many processes the run has started that still run (workers, fork server, resource tracker,
        trainers)."""
        try:
            return sum(p.status() != psutil.STATUS_ZOMBIE for p in self.ps.children(recursive=True))
        except psutil.Error:
            return 0

    def kill_leftovers(self) -> None:
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("MIXATLAS_FAULT_RUN") == self.marker:
                    proc.kill()
            except psutil.Error:
                continue


def interrupt(run: Run, kind: str, after_s: float, ready: Callable[[], object] | None = None,
              within: float = 10.0) -> int:
    """Send `kind` to `run` after `after_s` s (counted from when `ready()` holds, if given) unless it ended,
    wait for it; check the exit and that no process of the run is left `within` s later. Returns the exit
    code."""
    if ready is not None:
        wait_for(lambda: ready() or run.proc.poll() is not None, timeout=120)
    try:
        run.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        run.send(kind)
    code = run.wait()
    left = run.survivors(within)
    run.kill_leftovers()
    assert not left, f"seed {SEED}: {kind} left processes behind: {left}"
    assert code in (0, EXIT_CODES[kind]), f"seed {SEED}: {kind} -> exit {code}: {run.stderr()[-2000:]}"
    if code in (130, 143):
        lines = [line for line in run.stderr().splitlines() if line.strip()]
        name = "SIGINT" if kind == "Ctrl-C" else kind
        assert lines[-1].startswith(f"stopped by {name}"), f"seed {SEED}: {lines[-3:]}"
    return code


# -- search ----------------------------------------------------------------------------------------------
def check_study(path: Path, budget: int, done_before: set[int], stopped_cleanly: bool = True) -> set[int]:
    """Done trials only grow; each done trial's folder holds exactly its stored metrics; after a clean stop
    (or a finished run) no row is left running (a SIGKILL leaves them for the resume to requeue)."""
    study = Study.open(path, read_only=True)
    try:
        if stopped_cleanly:
            assert study.count(TrialState.RUNNING) == 0, f"seed {SEED}: a trial stayed running"
        done = study.trials(TrialState.DONE)
        ids = {t.id for t in done}
        assert done_before <= ids, f"seed {SEED}: done trials lost: {done_before - ids}"
        assert len(done) <= budget and len({t.trial_dir for t in done}) == len(done)
        for trial in done:
            assert Result.load(Path(trial.trial_dir) / "metrics.json").metrics == trial.metrics
        return ids
    finally:
        study.close()


def done_count(path: Path) -> int:
    if not path.exists():
        return -1
    study = Study.open(path, read_only=True)
    try:
        return study.count(TrialState.DONE)
    finally:
        study.close()


def test_search_survives_random_kills_and_interrupts(tmp_path: Path) -> None:
    """The CI subset sends each kind once, mid-run (after the run finished a trial, its pool up: fork server
    and resource tracker at least), so each must land: `kill -9 PID` and `kill -TERM PID` (the run alone),
    Ctrl-C and `kill -9 -PGID`; no process of the run survives any of them. The full set: random kinds at
    random moments (startup included)."""
    rng = random.Random(SEED)
    budget = 200  # the four interrupted runs finish about 60 trials between them; each must still be mid-run
    path = tmp_path / "s.db"
    args = ["search", "--synthetic", "task", "--method", "random", "--budget", str(budget), "--parallel", "2",
            "--study", str(path)]
    done: set[int] = set()
    for kind in kinds(("SIGKILL", "SIGTERM", "Ctrl-C", "group SIGKILL"), rng):
        run = Run(args, tmp_path)
        if ROUNDS == 0:
            code = interrupt(run, kind, rng.uniform(0.0, 0.2), within=5,
                             ready=lambda n=len(done), r=run: done_count(path) > n and r.descendants() >= 2)
            assert code == EXIT_CODES[kind], f"seed {SEED}: {kind} did not land mid-run: exit {code}"
        else:
            code = interrupt(run, kind, rng.uniform(2.0, 6.0))
        if path.exists():
            done = check_study(path, budget, done, stopped_cleanly=code != -9)
    final = Run(args, tmp_path)
    assert final.wait() == 0, final.stderr()[-2000:]
    assert len(check_study(path, budget, done)) == budget
    assert not final.survivors()


TRAINER = textwrap.dedent("""
    import json, pathlib, subprocess, sys, time
    trial_dir, fast = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    if not fast.exists():
        # the trainer's own child, in the trainer's process group
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (trial_dir / "child.pid").write_text(str(child.pid))
        time.sleep(600)
    with open(trial_dir / "writers.log", "a") as log:
        log.write("wrote\\n")
    (trial_dir / "metrics.json").write_text(json.dumps({"metrics": {"val/loss": 1.0}}))
""")


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mixatlas.atlas import build_atlas
    from mixatlas.corpus.synth import synthesize

    root = tmp_path_factory.mktemp("tiny_atlas")
    synthesize(root / "C", 60, 2)
    return build_atlas(root / "C", root / "A", k=2, workers=0, progress=False).dir


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


# `kill -9 PID` alone (issue 12 row 4): Python's forkserver hands every child the write end of the server's
# "alive" pipe, so the server outlived a SIGKILLed run while a worker waited on its trainer, and the worker
# (PDEATHSIG on the server) outlived it too. Workers now close that fd (`processes.owned_worker`).


@pytest.mark.parametrize("kind", [
    "group SIGKILL", "SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_killed_search_leaves_no_trainer_and_a_resume_ends_what_survived(
    tmp_path: Path, tiny_atlas: Path, kind: str
) -> None:
    if ROUNDS == 0 and kind == "Ctrl-C":  # the CI subset: Ctrl-C is covered by the search test
        pytest.skip("full fault set only (MIXATLAS_FAULT_ROUNDS)")
    (tmp_path / "trainer.py").write_text(TRAINER)
    fast = tmp_path / "fast"
    args = ["search", "--atlas", str(tiny_atlas), "--objective", "command", "--method", "random",
            "--command", f"{sys.executable} trainer.py {{trial_dir}} {fast}", "--target", "val/loss",
            "--minimize", "--budget", "1", "--study", str(tmp_path / "s.db")]
    runs = [Run(args, tmp_path)]
    try:
        run = runs[0]
        child_pid = tmp_path / "s-runs" / "trial-00001" / "child.pid"
        wait_for(child_pid.is_file)
        run.send(kind)
        code = run.wait()
        grandchild = psutil.Process(int(child_pid.read_text()))
        if code == -9:  # no code of ours ran: workers and the trainer died with the run (PDEATHSIG), only the
            # trainer's own child can outlive it (`kill -9 PID` or `-PGID` alike), until the resume ends it
            left = run.survivors(within=3, besides=frozenset({grandchild.pid}))  # PDEATHSIG: at once
            assert [int(line.split()[0]) for line in left] in ([], [grandchild.pid]), left
        else:  # a clean stop: the whole trainer group ended, the trial is pending again, one line said
            assert code == EXIT_CODES[kind], run.stderr()
            assert not run.survivors()
            study = Study.open(tmp_path / "s.db", read_only=True)
            assert [t.state for t in study.trials()] == ["pending"] and study.trials()[0].interruptions == 1
            name = "SIGINT" if kind == "Ctrl-C" else kind
            assert run.stderr().strip().splitlines()[-1].startswith(f"stopped by {name}")
        fast.touch()
        resume = Run(args, tmp_path)
        runs.append(resume)
        assert resume.wait() == 0, resume.stderr()[-2000:]
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
        writers = tmp_path / "s-runs" / "trial-00001" / "writers.log"
        assert writers.read_text() == "wrote\n"  # one trainer wrote
        assert not resume.survivors()
        (trial,) = Study.open(tmp_path / "s.db", read_only=True).trials()
        assert (trial.state, trial.attempts, trial.interruptions) == ("done", 1, 1)
    finally:  # whatever failed, nothing of these runs outlives the test
        for run in runs:
            run.kill_leftovers()


# -- decompose -------------------------------------------------------------------------------------------
def test_decompose_killed_or_interrupted_keeps_the_old_atlas_and_resumes(tmp_path: Path) -> None:
    from mixatlas.atlas import Atlas, build_atlas
    from mixatlas.corpus.synth import synthesize

    rng = random.Random(SEED + 1)
    synthesize(tmp_path / "C", 80, 3)
    out = tmp_path / "A"
    build_atlas(tmp_path / "C", out, k=2, workers=0, progress=False)
    rebuild = ["decompose", str(tmp_path / "C"), "--out", str(out), "--k", "3", "--workers", "1"]
    cached: dict[str, int] = {}
    for kind in kinds(("Ctrl-C",), rng):
        run = Run(rebuild, tmp_path)
        if ROUNDS == 0:  # the CI subset: once the new atlas is being written (the run takes only seconds)
            code = interrupt(run, kind, rng.uniform(0.0, 0.3), ready=staging_dir(out).exists)
            assert code == EXIT_CODES[kind], f"seed {SEED}: {kind} did not land mid-run: exit {code}"
        else:
            code = interrupt(run, kind, rng.uniform(2.0, 12.0))
        k = Atlas.load(out).k  # always a complete atlas: the old one, or the new one if it got published
        assert k in (2, 3) and (code != 0 or k == 3), f"seed {SEED}: k {k} after exit {code}"
        cached = {p.name: p.stat().st_mtime_ns for p in staging_dir(out).glob("embeddings/shard-*.npy")}
    final = Run(rebuild, tmp_path)
    assert final.wait() == 0, final.stderr()[-2000:]
    atlas = Atlas.load(out)
    assert atlas.k == 3 and atlas.info.n_samples == 80 and not staging_dir(out).exists()
    for name, mtime in cached.items():  # shards embedded before the interruption were reused, not redone
        assert (out / "embeddings" / name).stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def old_atlas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a corpus, an atlas of another corpus): a decompose of the first over a copy of the second must embed
    everything (nothing of the old atlas can be reused), so its decoding pool starts."""
    from mixatlas.atlas import build_atlas
    from mixatlas.corpus.synth import synthesize

    root = tmp_path_factory.mktemp("old_atlas")
    synthesize(root / "C", 80, 3)
    synthesize(root / "old-C", 30, 4)
    return root / "C", build_atlas(root / "old-C", root / "old", k=2, workers=0, progress=False).dir


# `kill -9 PID` alone: the pool's workers close their copy of the fork server's "alive" pipe, so the
# server, and with it the workers and the resource tracker, end with the run.


@pytest.mark.parametrize("kind", ["SIGKILL", "SIGTERM"])
def test_plain_kill_of_decompose_with_its_pool_up_leaves_no_process(
    tmp_path: Path, old_atlas: tuple[Path, Path], kind: str
) -> None:
    """`kill -9 PID` / `kill -TERM PID` (the run alone) of decompose while its decoding pool is up: the
    pool's worker, its fork server and the resource tracker end with it; TERM exits 143 with its line; the old
    atlas stays."""
    import shutil

    from mixatlas.atlas import Atlas

    corpus, old = old_atlas
    out = shutil.copytree(old, tmp_path / "A")
    run = Run(["decompose", str(corpus), "--k", "3", "--workers", "1", "--out", str(out)], tmp_path)
    # kill once the pool's worker, its fork server and the resource tracker all run
    code = interrupt(run, kind, 0.0, ready=lambda: run.descendants() >= 3, within=3)
    assert code == EXIT_CODES[kind], f"{kind} did not land while the pool was up: exit {code}"
    assert (Atlas.load(out).k, Atlas.load(out).info.n_samples) == (2, 30)


# -- materialize -----------------------------------------------------------------------------------------
MATERIALIZE = textwrap.dedent("""
    import sys
    from mixatlas.atlas import Atlas
    from mixatlas.recipe.materialize import materialize
    from mixatlas.recipe.recipe import Recipe
    from mixatlas.space import Mixture
    atlas = Atlas.load(sys.argv[1])
    recipe = Recipe(Mixture(tuple(atlas.concepts), tuple(atlas.tasks), atlas.counts / atlas.counts.sum()),
                    atlas.fingerprint, atlas.centroids_fingerprint)
    materialize(atlas, recipe, int(sys.argv[3]), sys.argv[2], format="wds", max_epochs=20.0,
                seed=int(sys.argv[4]), shard_size=50, overwrite=True)
""")


def read_wds(out: Path) -> tuple[dict, list[str]]:
    """materialize.json and the sample ids of every shard it lists, in order; only those files exist."""
    summary = json.loads((out / "materialize.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*summary["files"], "materialize.json"])
    ids = []
    for name in summary["files"]:
        with tarfile.open(out / name) as tar:
            ids += [json.load(tar.extractfile(m))["id"] for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(ids) == summary["samples"]
    return summary, ids


def test_materialize_overwrite_killed_anywhere_leaves_the_old_or_the_new_output(
    tmp_path: Path, tiny_atlas: Path
) -> None:
    rng = random.Random(SEED + 2)
    out = tmp_path / "M"
    (tmp_path / "m.py").write_text(MATERIALIZE)

    def run(samples: int, seed: int) -> subprocess.Popen:
        argv = [sys.executable, str(tmp_path / "m.py"), str(tiny_atlas), str(out), str(samples), str(seed)]
        return subprocess.Popen(argv, start_new_session=True)

    assert run(300, 0).wait(timeout=120) == 0
    old = read_wds(out)
    for _ in range(max(1, ROUNDS)):
        proc = run(200, 1)  # fewer shards, another draw
        wait_for(lambda p=proc: list(staging_dir(out).glob("shard-*.tar")) or p.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        now = read_wds(out)
        new = now[0]["samples"] == 200 and now[0]["seed"] == 1  # complete (read_wds checked every file)
        assert now == old or new, f"seed {SEED}: exit {code} left a mixed output"


def write_recipe(atlas_dir: Path, path: Path) -> Path:
    from mixatlas.atlas import Atlas
    from mixatlas.recipe.recipe import Recipe
    from mixatlas.space import Mixture

    atlas = Atlas.load(atlas_dir)
    Recipe(Mixture(tuple(atlas.concepts), tuple(atlas.tasks), atlas.counts / atlas.counts.sum()),
           atlas.fingerprint, atlas.centroids_fingerprint).save(path)
    return path


@pytest.mark.parametrize("kind", ["Ctrl-C", "SIGTERM"])
def test_materialize_interrupted_exits_130_or_143_and_keeps_the_old_output(
    tmp_path: Path, tiny_atlas: Path, kind: str
) -> None:
    """Ctrl-C / `kill -TERM` of `mixatlas materialize --overwrite` while it writes the new output: exit 130 /
    143 with its one line; the old output is exactly as it was and the half-written new one is gone."""
    from mixatlas.atlas import Atlas
    from mixatlas.recipe.materialize import materialize
    from mixatlas.recipe.recipe import Recipe

    recipe = write_recipe(tiny_atlas, tmp_path / "recipe.yaml")
    out = tmp_path / "M"
    atlas = Atlas.load(tiny_atlas)
    materialize(atlas, Recipe.load(recipe, atlas=atlas), 300, out, format="wds", max_epochs=20.0,
                shard_size=50)
    old = read_wds(out)
    run = Run(["materialize", "--atlas", str(tiny_atlas), "--recipe", str(recipe), "--out", str(out),
               "--samples", "6000", "--format", "wds", "--max-epochs", "200", "--seed", "1", "--overwrite"],
              tmp_path)
    code = interrupt(run, kind, 0.0, ready=staging_dir(out).exists)  # the new output is being written
    assert code == EXIT_CODES[kind], f"{kind} did not land while it wrote: exit {code}"
    assert read_wds(out) == old and not staging_dir(out).exists()


# -- report ----------------------------------------------------------------------------------------------
def add_done_trials(study: Study, n: int, trial_root: Path) -> None:
    import numpy as np

    for params in study.space.sample(n, np.random.default_rng(len(study.trials()))):
        trial = study.add_trial(params)
        study.start_trial(trial.id, trial_dir=trial_root / f"t{trial.id}", worker="local")
        curve = [[step, 3.0 - 0.05 * trial.id - step / 100] for step in (0.0, 10.0, 20.0)]
        study.finish_trial(trial.id, Result(metrics={"avg/nll": curve[-1][1]}, curve=curve))


REPORT = "import sys; from mixatlas.report import build_report; build_report([sys.argv[1]], sys.argv[2])"


def test_report_killed_mid_write_keeps_the_previous_report(tmp_path: Path) -> None:
    """A report run SIGKILLed after it drew the first figure of the new report: the previous report folder
    is byte for byte as it was (the half report sits in the staging folder); the next run publishes a whole
    new one."""
    import numpy as np

    from mixatlas.objectives.base import Target
    from mixatlas.report import build_report
    from mixatlas.space import MixtureSpace

    space = MixtureSpace(("photos", "charts"), ("captioning", "ocr", "grounding", "detection", "vqa"),
                         np.arange(10.0, 20.0).reshape(2, 5), mode="joint")
    path = tmp_path / "s.db"
    study = Study.create(path, space=space, objective_spec={"kind": "callable"},
                         target=Target.parse("avg/nll", True), method="random", budget=12, seed=0)
    add_done_trials(study, 3, tmp_path)
    out = tmp_path / "R"
    build_report([path], out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    add_done_trials(study, 3, tmp_path)  # the next report differs in every figure and the table
    study.close()
    proc = subprocess.Popen([sys.executable, "-c", REPORT, str(path), str(out)], start_new_session=True)
    first = staging_dir(out) / "recipe_heatmap.png"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    assert proc.wait(timeout=60) == -9, "the report finished before the kill"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    assert not (staging_dir(out) / "index.html").exists()  # killed mid-write, before its page
    index = build_report([path], out)
    images = re.findall(r"<img src='([^']+)'", index.read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted({"index.html", *images})
    assert all((out / name).read_bytes() != old[name] for name in ("index.html", "best_so_far.png"))
    assert not staging_dir(out).exists()
