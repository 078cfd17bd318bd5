"""Shared fixtures: a small synthetic corpus that every stage's tests can read."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

SYNTH_SAMPLES = 600
SYNTH_SEED = 7
SYNTH_EVAL_PER_BENCHMARK = 20


@pytest.fixture(scope="session", autouse=True)
def _fork_server_preloads_the_proxy() -> None:
    """As `mixatlas demo` does: this test process's one fork server (started by whichever test first runs
    a local worker) imports the proxy's torch + transformers once, not in every proxy trial. The server
    also preloads the test modules whose functions trials run (callable objectives); on Python 3.11 it
    finds them only through PYTHONPATH (it ignores the sys.path entry pytest adds for tests/)."""
    from mixatlas.objectives.proxy import ProxyObjective
    from mixatlas.processes import preload_in_workers

    tests = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    preload_in_workers(["mixatlas.search.loop", *ProxyObjective.worker_imports])


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder written by `synthesize(out, 600, seed=7, eval_per_benchmark=20)`: `train.jsonl` (15 samples
    per domain x task cell), `images/`, `eval/<benchmark>.jsonl` and `synth.json`. Read-only: copy it
    before changing anything."""
    from mixatlas.corpus.synth import synthesize

    out = tmp_path_factory.mktemp("synth_corpus")
    synthesize(out, SYNTH_SAMPLES, SYNTH_SEED, eval_per_benchmark=SYNTH_EVAL_PER_BENCHMARK)
    return out


@dataclass(frozen=True)
class CliRun:
    """One `mixatlas ...` run in-process: exit code and what it printed (stdout, stderr with
    whitespace collapsed, so rich's line wrapping does not split the words a test looks for)."""

    code: int
    out: str
    err: str


def run_mixatlas(*args: str | Path, cwd: Path | None = None) -> CliRun:
    """Run the real console entry point (`mixatlas.cli.main`: usage errors, one-line user errors, exit
    codes) in this process and capture its output; `cwd` for commands given relative paths."""
    from mixatlas.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        os.chdir(previous)
    return CliRun(code, out.getvalue(), " ".join(err.getvalue().split()))


@pytest.fixture(scope="session")
def pixels_atlas(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Atlas folder of `synth_corpus` made by the CLI as the README shows it (`mixatlas decompose CORPUS
    --out ATLAS --embedder pixels --k 4`, in-process, 1 worker). Read-only: copy it before changing it."""
    out = tmp_path_factory.mktemp("pixels_atlas") / "atlas"
    run = run_mixatlas("decompose", synth_corpus / "train.jsonl", "--out", out, "--embedder", "pixels",
                       "--k", "4", "--workers", "0")
    assert run.code == 0, run.err
    return out
