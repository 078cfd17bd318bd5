"""AtlasInfo: atlas.json typed, round-tripped, and read back from the format earlier releases wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixatlas.atlas import ATLAS_VERSION, Atlas, AtlasInfo, AtlasParent
from mixatlas.errors import MixAtlasError

# atlas.json exactly as `mixatlas decompose` wrote it before AtlasInfo existed (key order and all); an
# assigned atlas's `parent` is a plain object.
LEGACY_JSON = {
    "version": 1, "corpus": "/data/corpus", "format": "jsonl", "source_field": None,
    "embedder": "pixels", "k": 2, "tasks": ["captioning", "ocr", "grounding", "detection", "vqa"],
    "task_rules": "rules", "concepts": ["c0-charts", "c1-photos"], "rejects": 3,
    "rejects_by_reason": {"corrupt image": 2, "malformed JSON": 1}, "fingerprint": "0123456789abcdef",
    "centroids_fingerprint": "fedcba9876543210", "seed": 0,
    "parent": {"dir": "/atlases/A", "fingerprint": "aaaa", "centroids_fingerprint": "bbbb"},
    "counts": [[5, 0, 1, 2, 3], [0, 4, 0, 0, 7]], "n_samples": 22, "exemplars": "exemplars.png",
}


def write_info(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atlas.json").write_text(json.dumps(data))
    return folder


def test_an_atlas_json_written_by_earlier_code_opens_typed(tmp_path: Path) -> None:
    atlas = Atlas.load(write_info(tmp_path / "A", LEGACY_JSON))
    assert atlas.info.parent == AtlasParent("/atlases/A", "aaaa", "bbbb")
    assert atlas.info.rejects_by_reason == {"corrupt image": 2, "malformed JSON": 1}
    assert atlas.k == 2 and atlas.concepts == ["c0-charts", "c1-photos"] and atlas.tasks[1] == "ocr"
    np.testing.assert_array_equal(atlas.counts, [[5, 0, 1, 2, 3], [0, 4, 0, 0, 7]])
    assert atlas.counts.dtype == np.int64 and atlas.info.n_samples == 22
    # the same file comes back out, nothing lost; only fields added later appear, at their defaults
    assert atlas.info.to_dict() == {**LEGACY_JSON, "exemplar_refs": []}


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    info = AtlasInfo(corpus="c", format="parquet", source_field="dataset", embedder="clip:m", k=1,
                     tasks=("vqa",), task_rules="map:/rules.yaml", concepts=("charts",), counts=((4,),),
                     n_samples=4, rejects=0, rejects_by_reason={}, fingerprint="f", centroids_fingerprint="g",
                     seed=7)
    info.write(tmp_path / "atlas.json")
    assert not list(tmp_path.glob("*.tmp"))
    assert AtlasInfo.read(tmp_path / "atlas.json") == info
    assert json.loads((tmp_path / "atlas.json").read_text())["version"] == ATLAS_VERSION


@pytest.mark.parametrize("version", [0, 2, None, "1"])
def test_another_version_is_a_one_line_error_naming_it_and_the_fix(tmp_path: Path, version: object) -> None:
    data = {**LEGACY_JSON, "version": version}
    with pytest.raises(MixAtlasError) as raised:
        Atlas.load(write_info(tmp_path / "A", data))
    message = str(raised.value)
    assert f"atlas version {version!r}, this MixAtlas reads {ATLAS_VERSION}" in message
    assert "mixatlas decompose" in message and "\n" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"k": "drop"}, "field 'k' is missing"),
        ({"k": "two"}, "field 'k': Input should be a valid integer"),
        ({"counts": [[1, 2, 3, 4, 5]]}, "k=2 concepts x 5 tasks"),
        ({"rejects_by_reason": {"x": "many"}}, "field 'rejects_by_reason.x'"),
    ],
)
def test_a_damaged_atlas_json_names_the_field(tmp_path: Path, change: dict, expected: str) -> None:
    data = {key: value for key, value in {**LEGACY_JSON, **change}.items() if value != "drop"}
    with pytest.raises(MixAtlasError, match=expected) as raised:
        Atlas.load(write_info(tmp_path / "A", data))
    assert "\n" not in str(raised.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "atlas.json").write_text('{"version": 1,\n "k": }')
    with pytest.raises(MixAtlasError, match=r"atlas\.json:2: invalid JSON"):
        Atlas.load(tmp_path)
