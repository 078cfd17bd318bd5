"""Materialize on a real atlas: exact counts, epoch cap, infeasible recipes, global shuffle, determinism."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixatlas.atlas import Atlas, build_atlas
from mixatlas.errors import MixAtlasError
from mixatlas.recipe import Recipe, largest_remainder_counts, materialize, source_probabilities
from mixatlas.space import Mixture


def split_by_domain(corpus: Path, out: Path) -> Path:
    """The synthetic corpus as one JSONL file per image domain, so each domain is its own source."""
    out.mkdir()
    shutil.copytree(corpus / "images", out / "images")  # links out of the root would be rejects
    by_domain: dict[str, list[str]] = {}
    for line in (corpus / "train.jsonl").read_text().splitlines():
        by_domain.setdefault(json.loads(line)["meta"]["domain"], []).append(line)
    for domain, lines in by_domain.items():
        (out / f"{domain}.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def atlas(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    root = tmp_path_factory.mktemp("materialize")
    corpus = split_by_domain(synth_corpus, root / "corpus")
    return build_atlas(corpus, root / "atlas", embedder="pixels", k=4, workers=1, progress=False)


def recipe_for(atlas: Atlas, weights_kt: np.ndarray) -> Recipe:
    w = np.asarray(weights_kt, float)
    return Recipe(
        Mixture(tuple(atlas.concepts), tuple(atlas.tasks), w / w.sum()),
        atlas.fingerprint,
        atlas.centroids_fingerprint,
    )


def natural_recipe(atlas: Atlas) -> Recipe:
    return recipe_for(atlas, atlas.counts.astype(float))


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_largest_remainder_is_exact_and_within_one() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 12_345):
        w = rng.dirichlet(np.full(20, 0.3)).reshape(4, 5)
        counts = largest_remainder_counts(w, n)
        assert counts.sum() == n and counts.dtype == np.int64
        assert np.all(np.abs(counts - w * n) < 1.0)
    np.testing.assert_array_equal(largest_remainder_counts(np.array([[1, 1, 1]]) / 3, 10), [[4, 3, 3]])


def test_counts_exact_without_replacement(atlas: Atlas, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weights = rng.dirichlet(np.full(atlas.counts.size, 5.0)).reshape(atlas.counts.shape) * (atlas.counts > 0)
    recipe = recipe_for(atlas, weights)
    used = recipe.weights_kt > 0
    n = int(0.9 * np.min(atlas.counts[used] / recipe.weights_kt[used]))  # one epoch suffices everywhere
    assert n > 100
    need = largest_remainder_counts(recipe.weights_kt, n)
    summary = materialize(atlas, recipe, n, tmp_path, format="llava", max_epochs=1, seed=3)
    rows = read_manifest(tmp_path / "manifest.jsonl")
    assert len(rows) == n == summary.samples
    got = Counter((r["concept"], r["task"]) for r in rows)
    for i, concept in enumerate(atlas.concepts):
        for j, task in enumerate(atlas.tasks):
            assert got[(concept, task)] == need[i, j]
    assert len({r["id"] for r in rows}) == n  # no repeats within one epoch
    table = atlas.table(columns=["id", "image", "source", "conversations"]).to_pylist()
    by_id = {r["id"]: r for r in table}
    for row in rows[:50]:  # manifest rows are the atlas's rows, images referenced in place
        original = by_id[row["id"]]
        assert row["image"] == original["image"] and Path(row["image"]).is_file()
        assert row["source"] == original["source"]
        assert row["conversations"] == json.loads(original["conversations"])
    assert summary.cell_counts == need.tolist()


def test_epoch_cap_respected_and_repeats_balanced(atlas: Atlas, tmp_path: Path) -> None:
    recipe = natural_recipe(atlas)
    n = int(atlas.counts.sum() * 1.5)
    materialize(atlas, recipe, n, tmp_path, format="llava", max_epochs=2, seed=0)
    rows = read_manifest(tmp_path / "manifest.jsonl")
    uses = Counter(r["id"] for r in rows)
    assert max(uses.values()) <= 2
    by_cell: dict[tuple, list[int]] = {}
    for r in rows:
        by_cell.setdefault((r["concept"], r["task"]), []).append(uses[r["id"]])
    for cell_uses in by_cell.values():  # a row repeats only once every row of its cell was used
        assert max(cell_uses) - min(cell_uses) <= 1


def test_infeasible_recipe_refused_with_the_cells(atlas: Atlas, tmp_path: Path) -> None:
    weights = np.zeros(atlas.counts.shape)
    weights[0, 0], weights[1, 1] = 0.9, 0.1
    recipe = recipe_for(atlas, weights)
    n = int(atlas.counts[0, 0]) * 2
    with pytest.raises(MixAtlasError) as info:
        materialize(atlas, recipe, n, tmp_path, max_epochs=1.5)
    message = str(info.value)
    assert "\n" not in message
    assert f"{atlas.concepts[0]}/{atlas.tasks[0]} needs {round(0.9 * n)}" in message
    assert "raise --max-epochs to" in message
    assert not (tmp_path / "manifest.jsonl").exists()


def test_one_global_shuffle_mixes_sources(atlas: Atlas, tmp_path: Path) -> None:
    materialize(atlas, natural_recipe(atlas), int(atlas.counts.sum()), tmp_path, seed=5)
    sources = [r["source"] for r in read_manifest(tmp_path / "manifest.jsonl")]
    n = len(sources)
    sizes = np.array(list(Counter(sources).values()), dtype=float)
    assert len(sizes) == 8
    # expected adjacent source changes under a uniform random permutation of this multiset
    expected = (n - 1) * (1.0 - (sizes * (sizes - 1)).sum() / (n * (n - 1)))
    changes = sum(a != b for a, b in itertools.pairwise(sources))
    assert abs(changes - expected) < 4 * np.sqrt(expected)  # grouped output would have ~7 changes


def test_same_seed_same_bytes(atlas: Atlas, tmp_path: Path) -> None:
    recipe = natural_recipe(atlas)
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        materialize(atlas, recipe, 400, tmp_path / name, seed=seed)
    a, b, c = ((tmp_path / x / "manifest.jsonl").read_bytes() for x in "abc")
    assert a == b and a != c
    with pytest.raises(MixAtlasError, match="already holds"):
        materialize(atlas, recipe, 400, tmp_path / "a", seed=11)


def test_parquet_and_webdataset_outputs(atlas: Atlas, tmp_path: Path) -> None:
    recipe = natural_recipe(atlas)
    materialize(atlas, recipe, 120, tmp_path / "pq", format="parquet", seed=2)
    materialize(atlas, recipe, 120, tmp_path / "llava", format="llava", seed=2)
    summary = materialize(atlas, recipe, 120, tmp_path / "wds", format="wds", seed=2, shard_size=50)
    table = pq.read_table(tmp_path / "pq" / "mixture.parquet")
    manifest = read_manifest(tmp_path / "llava" / "manifest.jsonl")
    assert table.column("id").to_pylist() == [r["id"] for r in manifest]  # same draw, same order
    assert summary.files == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    keys, metas = [], []
    for shard in summary.files:
        with tarfile.open(tmp_path / "wds" / shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if ext == "json":
                    metas.append(json.loads(tar.extractfile(member).read()))
                else:
                    assert ext == "png"
                    image = tar.extractfile(member).read()
                    assert image == Path(manifest[int(key)]["image"]).read_bytes()
                keys.append(key)
    assert [m["id"] for m in metas] == [r["id"] for r in manifest]
    assert len(set(keys)) == 120


def test_source_probabilities(atlas: Atlas) -> None:
    probs = source_probabilities(atlas, natural_recipe(atlas))
    sources = Counter(atlas.table(columns=["source"]).column("source").to_pylist())
    total = sum(sources.values())
    assert sum(probs.values()) == pytest.approx(1.0)
    for name, count in sources.items():  # the natural recipe reproduces the corpus's source mix
        assert probs[name] == pytest.approx(count / total)


def test_cli_materialize_and_hf_probabilities(atlas: Atlas, tmp_path: Path) -> None:
    recipe_path = tmp_path / "r.yaml"
    natural_recipe(atlas).save(recipe_path)
    cli = [
        sys.executable,
        "-c",
        "from mixatlas.cli import main; main()",
        "materialize",
        "--atlas",
        str(atlas.dir),
        "--recipe",
        str(recipe_path),
    ]
    done = subprocess.run(
        [*cli, "--samples", "300", "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "m" / "manifest.jsonl").read_text().splitlines()) == 300
    probs = subprocess.run(
        [*cli, "--hf-probabilities", "--out", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probs.returncode == 0, probs.stderr
    written = json.loads((tmp_path / "p" / "hf_probabilities.json").read_text())
    assert sum(written.values()) == pytest.approx(1.0)
    refused = subprocess.run(
        [*cli, "--samples", str(10 * int(atlas.counts.sum())), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "recipe infeasible for this atlas" in refused.stderr


def test_largest_remainder_gives_the_leftovers_to_the_largest_remainders() -> None:
    # 10 x (0.14, 0.38, 0.48) = (1.4, 3.8, 4.8): floors sum to 8, the 2 leftovers go to the .8 remainders.
    np.testing.assert_array_equal(largest_remainder_counts(np.array([[0.14, 0.38, 0.48]]), 10), [[1, 4, 5]])
    # 7 x (0.05, 0.3, 0.65) = (0.35, 2.1, 4.55): 1 leftover, to the .55 remainder (not .35 or .1).
    counts = largest_remainder_counts(np.array([[0.05], [0.3], [0.65]]), 7)
    np.testing.assert_array_equal(counts, [[0], [2], [5]])
    rng = np.random.default_rng(3)
    for n in (3, 17, 101):
        w = rng.dirichlet(np.ones(12)).reshape(3, 4)
        counts = largest_remainder_counts(w, n).ravel()
        raw = w.ravel() * n
        remainder = raw - np.floor(raw)
        bumped = counts > np.floor(raw)
        # every cell that got a leftover unit has a remainder at least as large as every cell that did not
        assert bumped.sum() == n - np.floor(raw).sum()
        if bumped.any() and (~bumped).any():
            assert remainder[bumped].min() >= remainder[~bumped].max()
