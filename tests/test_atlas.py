"""The Atlas end to end on synthetic corpora: domain recovery, task typing, assign, rejects, resume, CLI."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from mixatlas.atlas import Atlas, assign_atlas, build_atlas
from mixatlas.corpus.synth import synthesize
from mixatlas.errors import MixAtlasError
from mixatlas.publish import staging_dir

sys.path.insert(0, str(Path(__file__).parent))
from test_embed import save_tiny_clip

TABLE_COLUMNS = ["id", "source", "image", "concept", "task", "shard", "offset", "conversations", "task_rule",
                 "task_mix"]


def truth(corpus: Path) -> dict[str, dict]:
    """id -> meta (the ground truth decomposition never reads) from a synthetic corpus's train.jsonl."""
    records = (json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines() if line)
    return {record["id"]: record["meta"] for record in records}


def majority_concepts(atlas: Atlas, meta: dict[str, dict]) -> dict[str, Counter]:
    """domain -> Counter of the concepts its samples got."""
    table = atlas.table(["id", "concept"]).to_pydict()
    by_domain: dict[str, Counter] = {}
    for sample_id, concept in zip(table["id"], table["concept"], strict=True):
        by_domain.setdefault(meta[sample_id]["domain"], Counter())[concept] += 1
    return by_domain


@pytest.fixture(scope="module")
def synth_atlas(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    return build_atlas(
        synth_corpus,
        tmp_path_factory.mktemp("atlas") / "A",
        embedder="pixels",
        k=8,
        workers=0,
        progress=False,
    )


def test_pixels_atlas_recovers_domains_and_tasks(synth_atlas: Atlas, synth_corpus: Path) -> None:
    meta = truth(synth_corpus)
    table = synth_atlas.table().to_pydict()
    assert len(table["id"]) == len(meta) == synth_atlas.info.n_samples
    domains = [meta[sample_id]["domain"] for sample_id in table["id"]]
    assert adjusted_rand_score(domains, table["concept"]) >= 0.8
    typed = zip(table["id"], table["task"], strict=True)
    task_agreement = np.mean([meta[sample_id]["task"] == task for sample_id, task in typed])
    assert task_agreement >= 0.98


def test_atlas_folder_follows_the_contract(synth_atlas: Atlas, synth_corpus: Path) -> None:
    atlas = Atlas.load(synth_atlas.dir)
    table = atlas.table()
    assert table.column_names == TABLE_COLUMNS
    assert str(table.schema.field("concept").type) == "int32"
    assert str(table.schema.field("offset").type) == "int64"
    assert json.loads(table.column("conversations")[0].as_py())[0]["from"] == "human"
    assert atlas.k == 8 and len(atlas.concepts) == 8 and len(set(atlas.concepts)) == 8
    assert atlas.tasks == ["captioning", "ocr", "grounding", "detection", "vqa"]
    assert atlas.counts.shape == (8, 5) and atlas.counts.dtype == np.int64
    crosstab = np.zeros((8, 5), np.int64)
    cells = zip(table.column("concept").to_pylist(), table.column("task").to_pylist(), strict=True)
    for concept, task in cells:
        crosstab[concept, atlas.tasks.index(task)] += 1
    np.testing.assert_array_equal(atlas.counts, crosstab)
    assert atlas.centroids().shape[0] == 8 and atlas.centroids().dtype == np.float32
    assert atlas.corpus == synth_corpus.resolve() and atlas.embedder == "pixels"
    assert atlas.info.parent is None and atlas.info.rejects == 0
    assert len(atlas.fingerprint) == 16 and len(atlas.centroids_fingerprint) == 16
    assert atlas.concepts == [f"c{j}" for j in range(atlas.k)]
    with Image.open(atlas.dir / "exemplars.png") as grid:
        assert grid.height == 8 * 72
    manifest = json.loads((atlas.dir / "embeddings" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["key"]["embedder"] == "pixels"


def test_assign_maps_another_seed_onto_the_same_concepts(
    synth_atlas: Atlas, synth_corpus: Path, tmp_path: Path
) -> None:
    original = majority_concepts(synth_atlas, truth(synth_corpus))
    home = {domain: concepts.most_common(1)[0][0] for domain, concepts in original.items()}
    other = tmp_path / "other"
    synthesize(other, 320, 12345)
    assigned = assign_atlas(synth_atlas.dir, other, tmp_path / "B", workers=0, progress=False)
    assert assigned.centroids_fingerprint == synth_atlas.centroids_fingerprint
    assert assigned.concepts == synth_atlas.concepts and assigned.fingerprint != synth_atlas.fingerprint
    assert assigned.info.parent.dir == str(synth_atlas.dir)
    np.testing.assert_array_equal(assigned.centroids(), synth_atlas.centroids())
    for domain, concepts in majority_concepts(assigned, truth(other)).items():
        assert concepts[home[domain]] / sum(concepts.values()) >= 0.95, domain


def damage(corpus: Path, every: int = 100) -> tuple[set[int], set[int]]:
    """Break 1% of the images (truncate / overwrite) and 1% of the JSONL lines; returns their line numbers."""
    path = corpus / "train.jsonl"
    lines = path.read_text().splitlines()
    bad_images = set(range(7, len(lines) + 1, every))
    bad_lines = set(range(40, len(lines) + 1, every))
    for count, number in enumerate(sorted(bad_images)):
        image = Path(json.loads(lines[number - 1])["image"])
        image = image if image.is_absolute() else corpus / image
        data = image.read_bytes()
        image.write_bytes(b"not a png at all" if count % 2 else data[: len(data) // 3])
    for number in bad_lines:
        lines[number - 1] = lines[number - 1][:25]  # a cut-off JSON object
    path.write_text("\n".join(lines) + "\n")
    return bad_images, bad_lines


def test_rejects_list_exactly_the_corrupt_images_and_malformed_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 300, 3)
    bad_images, bad_lines = damage(corpus)
    atlas = build_atlas(corpus, tmp_path / "A", k=4, workers=0, progress=False)
    rejects = [json.loads(line) for line in (atlas.dir / "rejects.jsonl").read_text().splitlines()]
    assert {reject["where"] for reject in rejects} == bad_images | bad_lines
    assert len(rejects) == atlas.info.rejects == 6
    assert atlas.info.rejects_by_reason == {"truncated image": 2, "not an image": 1, "malformed JSON": 3}
    assert all(Path(reject["file"]).name == "train.jsonl" for reject in rejects)
    assert atlas.info.n_samples == 300 - 6
    assert set(atlas.table(["offset"]).column("offset").to_pylist()).isdisjoint(bad_images | bad_lines)

    with pytest.raises(MixAtlasError, match=r"train\.jsonl:7: truncated image"):
        build_atlas(corpus, tmp_path / "strict", k=4, strict=True, workers=0, progress=False)


def shard_times(atlas_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in (atlas_dir / "embeddings").glob("shard-*.npy")}


def test_rerun_recomputes_only_missing_shards(tmp_path: Path) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 200, 4)
    first = build_atlas(corpus, tmp_path / "A", k=4, workers=0, progress=False, shard_size=64)
    before = shard_times(first.dir)
    assert sorted(before) == [f"shard-{i:05d}.npy" for i in range(4)]
    original = np.load(first.dir / "embeddings" / "shard-00002.npy")
    (first.dir / "embeddings" / "shard-00002.npy").unlink()
    second = build_atlas(corpus, tmp_path / "A", k=4, workers=0, progress=False, shard_size=64)
    after = shard_times(second.dir)
    assert {name for name in before if before[name] != after[name]} == {"shard-00002.npy"}
    np.testing.assert_array_equal(np.load(second.dir / "embeddings" / "shard-00002.npy"), original)
    assert second.table().equals(first.table())
    np.testing.assert_array_equal(second.counts, first.counts)


def test_interrupted_decomposition_resumes_from_finished_shards(tmp_path: Path) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 200, 5)
    lines = (corpus / "train.jsonl").read_text().splitlines()
    broken = Path(json.loads(lines[150])["image"])  # line 151: in shard 2 (lines 129..192)
    broken = broken if broken.is_absolute() else corpus / broken
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"garbage")
    with pytest.raises(MixAtlasError, match=r"train\.jsonl:151"):
        build_atlas(corpus, tmp_path / "A", k=4, strict=True, workers=0, progress=False, shard_size=64)
    assert not (tmp_path / "A").exists()  # nothing published; the finished shards wait in the staging folder
    finished = shard_times(staging_dir(tmp_path / "A"))
    assert sorted(finished) == ["shard-00000.npy", "shard-00001.npy"]
    broken.write_bytes(good_bytes)
    atlas = build_atlas(corpus, tmp_path / "A", k=4, workers=0, progress=False, shard_size=64)
    assert atlas.info.n_samples == 200 and atlas.info.rejects == 0
    resumed = shard_times(atlas.dir)
    assert all(resumed[name] == finished[name] for name in finished) and len(resumed) == 4


def test_worker_pool_gives_the_in_process_embeddings(tmp_path: Path) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 48, 6)
    serial = build_atlas(corpus, tmp_path / "serial", k=3, workers=0, progress=False, batch_size=8)
    pooled = build_atlas(corpus, tmp_path / "pooled", k=3, workers=2, progress=False, batch_size=8)
    np.testing.assert_array_equal(
        np.load(pooled.dir / "embeddings" / "shard-00000.npy"),
        np.load(serial.dir / "embeddings" / "shard-00000.npy"),
    )
    assert pooled.table().equals(serial.table())


def test_clip_atlas_names_concepts_zero_shot_and_k_auto(tmp_path: Path) -> None:
    corpus = tmp_path / "C"
    synthesize(corpus, 60, 8)
    model = save_tiny_clip(tmp_path / "clip")
    prompts = ["a bar chart", "a photo of an outdoor scene", "a table", "a document page"]
    atlas = build_atlas(
        corpus,
        tmp_path / "A",
        embedder=f"clip:{model}",
        k="auto",
        workers=0,
        progress=False,
        concept_prompts=prompts,
    )
    assert 2 <= atlas.k <= 16 and atlas.centroids().shape == (atlas.k, 16)
    assert atlas.embedder == f"clip:{model}"
    labels = {"bar chart", "outdoor scene", "table", "document page"}
    assert all(name.split(" #")[0] in labels for name in atlas.concepts)
    assert len(set(atlas.concepts)) == atlas.k


def test_bad_arguments_are_one_line_user_errors(tmp_path: Path, synth_corpus: Path) -> None:
    with pytest.raises(MixAtlasError, match="no such file or folder"):
        build_atlas(tmp_path / "missing.jsonl", tmp_path / "A", progress=False)
    with pytest.raises(MixAtlasError, match="--k 0"):
        build_atlas(synth_corpus, tmp_path / "A", k=0, progress=False)
    with pytest.raises(MixAtlasError, match="not an atlas"):
        Atlas.load(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(MixAtlasError, match="empty corpus"):
        build_atlas(tmp_path / "empty.jsonl", tmp_path / "E", progress=False, workers=0)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, ...]:
    from mixatlas.cli import main

    monkeypatch.setattr(sys, "argv", ["mixatlas", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_cli_decompose_show_and_assign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    corpus, other = tmp_path / "C", tmp_path / "D"
    synthesize(corpus, 60, 9)
    synthesize(other, 30, 10)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "decompose",
        str(corpus),
        "--out",
        str(tmp_path / "A"),
        "--k",
        "3",
        "--workers",
        "0",
    )
    assert code == 0 and "60 samples, 3 concepts" in err
    code, out, _ = run_cli(monkeypatch, capsys, "atlas", "show", str(tmp_path / "A"))
    atlas = Atlas.load(tmp_path / "A")
    assert code == 0 and all(name in out for name in atlas.concepts) and "total" in out and "60" in out
    code, out, _ = run_cli(monkeypatch, capsys, "atlas", "show", str(tmp_path / "A"), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["counts"] == atlas.counts.tolist() and shown["concepts"] == atlas.concepts
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "atlas",
        "assign",
        str(tmp_path / "A"),
        str(other),
        "--out",
        str(tmp_path / "B"),
        "--workers",
        "0",
    )
    assert code == 0 and "30 samples, 3 concepts" in err
    assert Atlas.load(tmp_path / "B").centroids_fingerprint == atlas.centroids_fingerprint

    code, out, err = run_cli(
        monkeypatch, capsys, "decompose", str(tmp_path / "nope"), "--out", str(tmp_path / "X"), "--k", "many"
    )
    assert code == 2 and err.startswith("error: --k many") and "Traceback" not in err
