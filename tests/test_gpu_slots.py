"""`--executor local --gpus-per-trial g`: each running trial sees its own GPUs (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import os
import time

import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.executors import gpu_slots, make_executor


def visible_after(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def test_gpu_slots_are_disjoint_groups_of_the_visible_devices():
    assert gpu_slots(2, 1, ["0", "1", "2"]) == ["0", "1"]
    assert gpu_slots(2, 2, ["4", "5", "6", "7"]) == ["4,5", "6,7"]
    with pytest.raises(MixAtlasError, match="needs 4 GPUs but this machine shows 3"):
        gpu_slots(2, 2, ["0", "1", "2"])
    with pytest.raises(MixAtlasError, match="whole GPUs"):
        gpu_slots(2, 0.5, ["0", "1"])


def test_local_executor_pins_concurrent_trials_to_distinct_gpus_and_reuses_freed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with make_executor("local", parallel=2, folder=tmp_path, gpus_per_trial=1) as executor:
        first = [executor.submit(visible_after, 0.5), executor.submit(visible_after, 0.5)]
        assert sorted(executor.result(h) for h in first) == ["3", "5"]
        again = executor.submit(visible_after, 0.0)  # both slots free again
        assert executor.result(again) in {"3", "5"}
    with pytest.raises(MixAtlasError, match="needs 3 GPUs"):
        make_executor("local", parallel=3, folder=tmp_path, gpus_per_trial=1)
