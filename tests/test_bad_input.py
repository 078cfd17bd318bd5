"""Bad user input across stages ends in one MixAtlasError line that names the file, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.pool import PoolProblem
from mixatlas.space import Mixture


@pytest.mark.parametrize(
    "payload",
    [[0.5, 0.5], {"concepts": ["a"], "tasks": ["x", "y"], "weights": [[0.5, "lots"]]},
     {"concepts": ["a", "b"], "tasks": ["x"], "weights": [[1.0], [0.0, 2.0]]}],
)
def test_malformed_mixture_json_names_the_file(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(MixAtlasError, match=r"m\.json"):
        Mixture.load(path)


def test_metrics_json_with_a_bad_curve_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"metrics": {"a": 1.0}, "curve": [{"step": 1, "loss": 2.0}]}))
    with pytest.raises(MixAtlasError, match=r"metrics\.json.*curve"):
        Result.load(path)


def test_pool_csv_with_only_blank_rows(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_text("w_a,w_b,loss\n,,\n\n")
    with pytest.raises(MixAtlasError, match="no non-empty rows"):
        PoolProblem.from_csv(path, "w_")


def test_new_study_with_a_bad_function_leaves_no_study_file(tmp_path: Path, synth_corpus: Path) -> None:
    from mixatlas.atlas import build_atlas
    from mixatlas.search.config import SearchConfig
    from mixatlas.search.setup import open_study

    atlas = build_atlas(synth_corpus, tmp_path / "A", k=4, workers=0, progress=False)
    config = SearchConfig.load(None, {"atlas": atlas.dir, "space": "task", "objective": "callable",
                                      "function": "nope_missing_module:fn", "target": "loss",
                                      "study": tmp_path / "s.db", "budget": 2})
    with pytest.raises(MixAtlasError, match="nope_missing_module"):
        open_study(config)
    assert not (tmp_path / "s.db").exists()
