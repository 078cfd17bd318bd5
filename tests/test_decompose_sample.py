"""`decompose --sample N`: concepts from a seeded uniform subset, every sample assigned."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from mixatlas.atlas import Atlas
from mixatlas.atlas.subset import reservoir
from mixatlas.cli import app
from mixatlas.errors import MixAtlasError


def test_reservoir_is_uniform_ordered_and_seeded():
    n_items, n, seeds = 400, 40, 300
    hits = np.zeros(n_items)
    for seed in range(seeds):
        chosen = reservoir(range(n_items), n, seed)
        assert len(chosen) == n and len(set(chosen)) == n and chosen == sorted(chosen)
        hits[chosen] += 1
    # Each item is kept with probability n / n_items = 0.1: 30 expected hits in 300 draws (sd ~5.2).
    assert abs(hits[: n_items // 2].mean() - hits[n_items // 2 :].mean()) < 2.0  # early vs late items
    assert hits.min() > 8 and hits.max() < 55
    chi2 = ((hits - seeds * n / n_items) ** 2 / (seeds * n / n_items)).sum()
    assert chi2 < 1.3 * n_items  # chi-square with 399 d.o.f.: mean 399, sd ~28
    assert reservoir(range(n_items), n, 5) == reservoir(range(n_items), n, 5)
    assert reservoir(range(10), 20, 0) == list(range(10))  # fewer items than asked: all of them
    with pytest.raises(MixAtlasError, match="--sample 0"):
        reservoir(range(3), 0, 0)


def test_decompose_sample_clusters_a_subset_and_assigns_every_sample(synth_corpus, tmp_path, monkeypatch):
    out = tmp_path / "atlas"
    monkeypatch.chdir(tmp_path)  # a relative corpus path: the subset must still point at its images
    run = CliRunner().invoke(app, ["decompose", os.path.relpath(synth_corpus, tmp_path), "--out", "atlas",
                                   "--k", "3", "--sample", "150", "--seed", "4", "--workers", "0"])
    assert run.exit_code == 0, run.output
    atlas = Atlas.load(out)
    subset = (tmp_path / "atlas-sample" / "subset.jsonl").read_text().splitlines()
    n_corpus = sum(1 for line in (synth_corpus / "train.jsonl").read_text().splitlines() if line.strip())
    assert len(subset) == 150
    assert atlas.info.n_samples + atlas.info.rejects == n_corpus  # every sample assigned (or rejected)
    parent = Atlas.load(tmp_path / "atlas-sample" / "atlas")
    assert atlas.info.parent.dir == str(parent.dir)
    assert parent.info.n_samples + parent.info.rejects == 150
    np.testing.assert_array_equal(atlas.centroids(), parent.centroids())
    # The subset's samples got the concept of their nearest centroid in the full table too.
    ids = [json.loads(line)["id"] for line in subset]
    table = atlas.table(["id", "concept"]).to_pydict()
    concept_of = dict(zip(table["id"], table["concept"], strict=True))
    sub_table = parent.table(["id", "concept"]).to_pydict()
    assert all(concept_of[i] == c for i, c in zip(sub_table["id"], sub_table["concept"], strict=True))
    assert set(ids) >= set(sub_table["id"])
