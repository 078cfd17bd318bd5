"""The Mixture artifact: validation with one-line errors, exact normalization, marginals, JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.space import Mixture

CONCEPTS, TASKS = ("cats", "charts"), ("ocr", "vqa", "grounding")


def test_weights_are_float64_clipped_and_renormalized() -> None:
    mixture = Mixture(CONCEPTS, TASKS, np.array([[1, 0, 0], [0, 0, 0]]))  # integers are accepted
    assert mixture.weights_kt.dtype == np.float64 and mixture.weights_kt[0, 0] == 1.0
    # a negative within the tolerance becomes exactly 0 and the rest is renormalized to sum to exactly 1
    w = np.array([[0.5, -5e-10, 0.2], [0.1, 0.1, 0.1 + 5e-10]])
    mixture = Mixture(CONCEPTS, TASKS, w)
    assert mixture.weights_kt[0, 1] == 0.0 and np.all(mixture.weights_kt >= 0)
    assert abs(mixture.weights_kt.sum() - 1.0) < 1e-15
    np.testing.assert_allclose(
        mixture.weights_kt, np.clip(w, 0, None) / np.clip(w, 0, None).sum(), rtol=1e-15
    )
    # a sum off by less than 1e-6 is renormalized, not refused
    scaled = Mixture(CONCEPTS, TASKS, np.full((2, 3), (1 + 5e-7) / 6))
    np.testing.assert_allclose(scaled.weights_kt, 1 / 6, rtol=1e-15)


def test_marginals() -> None:
    mixture = Mixture(CONCEPTS, TASKS, np.array([[0.1, 0.2, 0.3], [0.0, 0.25, 0.15]]))
    np.testing.assert_allclose(mixture.concept_marginal, [0.6, 0.4])
    np.testing.assert_allclose(mixture.task_marginal, [0.1, 0.45, 0.45])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            np.full((3, 2), 1 / 6),
            r"^mixture weights have shape \(3, 2\), expected \(2, 3\) = \(concepts, tasks\)$",
        ),
        (np.array([[0.5, 0.6, -0.1], [0, 0, 0]]), r"^mixture weights must be finite and non-negative$"),
        (np.array([[0.5, np.nan, 0.5], [0, 0, 0]]), r"^mixture weights must be finite and non-negative$"),
        (np.array([[0.5, np.inf, 0.5], [0, 0, 0]]), r"^mixture weights must be finite and non-negative$"),
        (np.full((2, 3), 0.2), r"^mixture weights sum to 1\.2, expected 1$"),
        (np.full((2, 3), (1 + 2e-6) / 6), r"^mixture weights sum to 1, expected 1$"),
    ],
)
def test_bad_weights_are_one_line_errors(weights: np.ndarray, message: str) -> None:
    with pytest.raises(MixAtlasError, match=message):
        Mixture(CONCEPTS, TASKS, weights)


def test_json_contract_round_trip(tmp_path: Path) -> None:
    mixture = Mixture(CONCEPTS, TASKS, np.array([[0.1, 0.2, 0.3], [0.0, 0.25, 0.15]]))
    assert mixture.to_dict() == {
        "concepts": ["cats", "charts"],
        "tasks": ["ocr", "vqa", "grounding"],
        "weights": [[0.1, 0.2, 0.3], [0.0, 0.25, 0.15]],
    }
    mixture.save(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == mixture.to_dict()
    assert (tmp_path / "m.json").read_text().startswith('{\n "concepts"')  # indented, one key a line
    loaded = Mixture.load(tmp_path / "m.json")
    assert (loaded.concepts, loaded.tasks) == (CONCEPTS, TASKS)
    np.testing.assert_array_equal(loaded.weights_kt, mixture.weights_kt)
    again = Mixture.from_dict({"concepts": ["a"], "tasks": ["b"], "weights": [[1]]})
    assert again.weights_kt.dtype == np.float64 and again.concepts == ("a",) and again.tasks == ("b",)


def test_bad_mixture_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"concepts": ["a"], "weights": [[1]]}')
    with pytest.raises(
        MixAtlasError, match=rf"^{path}: missing key 'tasks'; a mixture needs 'concepts', 'tasks' and"
    ):
        Mixture.load(path)
    path.write_text('{"concepts": ["a"], "tasks": ["b"], "weights": [["x"]]}')
    with pytest.raises(
        MixAtlasError, match=rf"^{path}: not a mixture \(.*\); expected " + r'\{"concepts": \[\.\.\.\]'
    ):
        Mixture.load(path)
    with pytest.raises(MixAtlasError, match=r"^mixture: missing key 'weights'"):
        Mixture.from_dict({"concepts": ["a"], "tasks": ["b"]})
    with pytest.raises(MixAtlasError, match=r"^other\.json: not a mixture"):
        Mixture.from_dict({"concepts": 3, "tasks": ["b"], "weights": [[1]]}, origin="other.json")
    path.write_text("{broken")
    with pytest.raises(MixAtlasError, match=rf"^{path}: cannot read mixture JSON \("):
        Mixture.load(path)
    with pytest.raises(MixAtlasError, match=rf"^{tmp_path / 'missing.json'}: cannot read mixture JSON"):
        Mixture.load(tmp_path / "missing.json")
