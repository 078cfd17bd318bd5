"""`--executor local --gpus-per-trial g`: each running trial sees its own GPUs (CUDA_VISIBLE_DEVICES).

No GPU is needed: pinning only sets the variable, from the list CUDA_VISIBLE_DEVICES itself gives."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import run_mixatlas
from mixatlas.errors import MixAtlasError
from mixatlas.executors import gpu_slots
from mixatlas.search.study import Study, TrialState
from mixatlas.space import Mixture


def pinned_gpu(mixture: Mixture) -> dict[str, float]:
    """The CLI test's objective: the GPU the trial was pinned to, and when it ran (it runs 0.5 s)."""
    start = time.time()
    time.sleep(0.5)
    gpu = float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))  # "3,5" (unpinned) fails the trial
    return {"loss": float(mixture.task_marginal[0]), "gpu": gpu, "start": start, "end": time.time()}


def test_gpu_slots_are_disjoint_groups_of_the_visible_devices():
    assert gpu_slots(2, 1, ["0", "1", "2"]) == ["0", "1"]
    assert gpu_slots(2, 2, ["4", "5", "6", "7"]) == ["4,5", "6,7"]
    with pytest.raises(MixAtlasError, match="needs 4 GPUs but this machine shows 3"):
        gpu_slots(2, 2, ["0", "1", "2"])
    with pytest.raises(MixAtlasError, match="whole GPUs"):
        gpu_slots(2, 0.5, ["0", "1"])


def test_search_pins_concurrent_trials_to_distinct_gpus_and_reuses_freed_ones(
    pixels_atlas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mixatlas search --executor local --parallel 2 --gpus-per-trial 1` where GPUs 3 and 5 are visible."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    shutil.copytree(pixels_atlas, tmp_path / "atlas")
    search = ["search", "--atlas", "atlas", "--space", "task", "--objective", "callable", "--function",
              "test_gpu_slots:pinned_gpu", "--target", "loss", "--minimize", "--method", "random",
              "--budget", "4", "--executor", "local", "--gpus-per-trial", "1"]
    run = run_mixatlas(*search, "--parallel", "2", "--study", "s.db", cwd=tmp_path)
    assert run.code == 0, run.err
    study = Study.open(tmp_path / "s.db", read_only=True)
    trials = study.trials(TrialState.DONE)
    study.close()
    assert len(trials) == 4
    assert {t.metrics["gpu"] for t in trials} == {3.0, 5.0}  # 4 trials on 2 slots: freed ones are reused
    overlapping = [(a, b) for a, b in itertools.combinations(trials, 2)
                   if a.metrics["start"] < b.metrics["end"] and b.metrics["start"] < a.metrics["end"]]
    assert overlapping, "no two trials ran at once"
    assert all(a.metrics["gpu"] != b.metrics["gpu"] for a, b in overlapping)
    too_many = run_mixatlas(*search, "--parallel", "3", "--study", "s3.db", cwd=tmp_path)
    assert too_many.code == 2 and "needs 3 GPUs" in too_many.err
