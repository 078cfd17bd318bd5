"""Ray through the real CLI, on a running cluster (`--ray-address`): `decompose --executor ray --gpus 0` (Ray
Data decode tasks + two CPU embedding actors) gives the single-process atlas and resumes from its finished
shards; `search --executor ray --ray-address auto` runs its trials on that cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import run_mixatlas
from mixatlas.atlas import Atlas
from mixatlas.corpus.synth import synthesize
from mixatlas.search.study import Study, TrialState

pytest.importorskip("ray")

# A Ray head as a cluster runs one: its own process, reached only through its address. It stops (ray.shutdown)
# when its stdin closes; every file it writes stays under the temp dir it is given.
HEAD = """
import sys, ray
context = ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _temp_dir=sys.argv[1])
print(context.address_info["gcs_address"], flush=True)
sys.stdin.read()
ray.shutdown()
"""
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # no token files in the home folder


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """The address of a two-CPU Ray head started for this module's tests (shut down after them)."""
    temp = Path(tempfile.mkdtemp(prefix="mxrh", dir="/tmp"))  # Ray's socket paths need a short root
    head = subprocess.Popen([sys.executable, "-c", HEAD, str(temp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **RAY_ENV})
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a driver of that cluster runs in (the CLI connects as such a driver)."""
    import ray

    assert not ray.is_initialized(), "a Ray left connected in this process would take the CLI's runs"
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
def test_ray_decomposition_equals_single_process_and_resumes(tmp_path: Path, ray_cluster: str,
                                                             ray_env: None) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 90, 7, eval_per_benchmark=2)
    lines = (corpus / "train.jsonl").read_text().splitlines()
    broken = Path(json.loads(lines[40])["image"])
    (broken if broken.is_absolute() else corpus / broken).write_bytes(b"garbage")  # one reject, mid-shard
    options = ["--k", "3", "--shard-size", "32", "--batch-size", "8"]
    single_run = run_mixatlas("decompose", corpus / "train.jsonl", "--out", tmp_path / "single", *options,
                              "--workers", "0")
    assert single_run.code == 0, single_run.err
    ray_dir = tmp_path / "ray"
    on_ray = ["decompose", corpus / "train.jsonl", "--out", ray_dir, *options, "--workers", "2",
              "--executor", "ray", "--ray-address", ray_cluster, "--gpus", "0"]
    run = run_mixatlas(*on_ray)
    assert run.code == 0, run.err
    assert "89 samples, 3 concepts" in run.err and "1 rejected inputs (not an image 1)" in run.err
    single, ray_atlas = Atlas.load(tmp_path / "single"), Atlas.load(ray_dir)
    assert ray_atlas.table().equals(single.table())
    np.testing.assert_array_equal(ray_atlas.counts, single.counts)
    np.testing.assert_allclose(ray_atlas.centroids(), single.centroids(), atol=1e-6)
    assert (ray_dir / "rejects.jsonl").read_text() == (tmp_path / "single" / "rejects.jsonl").read_text()
    assert ray_atlas.info.rejects == 1
    # resumable: a lost shard is embedded again, the others are reused as they are
    shards = ray_dir / "embeddings"
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npy")}
    assert len(kept) == 3
    (shards / "shard-00001.npy").unlink()
    again = run_mixatlas(*on_ray)
    assert again.code == 0, again.err
    changed = {p.name for p in shards.glob("shard-*.npy") if p.stat().st_mtime_ns != kept[p.name]}
    assert changed == {"shard-00001.npy"}
    assert Atlas.load(ray_dir).table().equals(single.table())


def test_search_runs_its_trials_on_a_running_cluster(tmp_path: Path, ray_cluster: str, ray_env: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)  # what `--ray-address auto` finds on a cluster's node
    run = run_mixatlas("search", "--synthetic", "task", "--noise", "0", "--method", "random", "--budget", "3",
                       "--executor", "ray", "--ray-address", "auto", "--parallel", "2",
                       "--study", tmp_path / "s.db", "--runs-dir", tmp_path / "runs")
    assert run.code == 0, run.err
    study = Study.open(tmp_path / "s.db", read_only=True)
    done = study.trials(TrialState.DONE)
    assert len(done) == 3 == len(study.trials())
    assert all(Path(t.trial_dir, "metrics.json").is_file() for t in done)
    assert all(t.worker.split(":")[1] != str(os.getpid()) for t in done)  # Ray workers, not this process
    assert not (tmp_path / "runs" / "ray").exists()  # connected: no local Ray of its own was started
    best = min(done, key=lambda t: t.value)
    assert f"observed {best.value:.5g} (trial {best.id})" in run.err


def test_unknown_decompose_executor_is_a_user_error(tmp_path: Path) -> None:
    run = run_mixatlas("decompose", tmp_path, "--out", tmp_path / "A", "--executor", "slurm")
    assert run.code == 2 and "--executor slurm" in run.err
