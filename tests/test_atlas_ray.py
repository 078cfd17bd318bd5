"""`decompose --executor ray`: Ray Data decode tasks + two embedding actors give the single-process atlas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixatlas.atlas import build_atlas
from mixatlas.corpus.synth import synthesize
from mixatlas.errors import MixAtlasError

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    """One small local Ray for the test's two runs (the pass reuses a running Ray and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_decomposition_equals_single_process_and_resumes(tmp_path: Path, local_ray: None) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 90, 7, eval_per_benchmark=2)
    lines = (corpus / "train.jsonl").read_text().splitlines()
    broken = Path(json.loads(lines[40])["image"])
    (broken if broken.is_absolute() else corpus / broken).write_bytes(b"garbage")  # one reject, mid-shard
    options = {"k": 3, "progress": False, "shard_size": 32, "batch_size": 8}
    single = build_atlas(corpus, tmp_path / "single", workers=0, **options)
    ray_dir = tmp_path / "ray"
    on_ray = build_atlas(corpus, ray_dir, workers=2, executor="ray", **options)
    assert on_ray.table().equals(single.table())
    np.testing.assert_array_equal(on_ray.counts, single.counts)
    np.testing.assert_allclose(on_ray.centroids(), single.centroids(), atol=1e-6)
    assert (ray_dir / "rejects.jsonl").read_text() == (tmp_path / "single" / "rejects.jsonl").read_text()
    assert on_ray.info.rejects == 1
    # resumable: a lost shard is embedded again, the others are reused as they are
    shards = ray_dir / "embeddings"
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npy")}
    (shards / "shard-00001.npy").unlink()
    again = build_atlas(corpus, ray_dir, workers=2, executor="ray", **options)
    changed = {p.name for p in shards.glob("shard-*.npy") if p.stat().st_mtime_ns != kept[p.name]}
    assert changed == {"shard-00001.npy"}
    assert again.table().equals(single.table())


def test_unknown_decompose_executor_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MixAtlasError, match="--executor slurm"):
        build_atlas(tmp_path, tmp_path / "A", executor="slurm", progress=False)
