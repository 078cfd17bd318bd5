"""MixtureSpace construction: every bad argument is one MixAtlasError naming the fix, good edge cases pass,
the stored description round-trips (from the mutation bench's survivors in space/mixture_space.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.space import MixtureSpace

C, T = ("cats", "charts"), ("ocr", "vqa", "grounding")
COUNTS = np.array([[30.0, 10.0, 5.0], [20.0, 20.0, 0.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "grid"}, "space mode 'grid' is unknown; choose one of task, concept, factored, joint"),
        ({"mode": "task", "within": "even"}, "within-split 'even' is unknown; choose natural or uniform"),
        ({"concepts": ("a", "a")}, "space: concept and task names must be non-empty and unique"),
        ({"tasks": ("ocr", "ocr", "vqa")}, "space: concept and task names must be non-empty and unique"),
        ({"concepts": (), "counts_kt": np.zeros((0, 3))}, "space: concept and task names must be non-empty"),
        ({"tasks": (), "counts_kt": np.zeros((2, 0))}, "space: concept and task names must be non-empty"),
        ({"counts_kt": COUNTS.T}, "space: counts must be a non-negative (2, 3) matrix, got shape (3, 2)"),
        ({"counts_kt": COUNTS - 10}, "space: counts must be a non-negative (2, 3) matrix, got shape (2, 3)"),
        ({"counts_kt": np.where(COUNTS == 0, np.nan, COUNTS)}, "space: counts must be a non-negative (2, 3)"),
        ({"counts_kt": np.zeros((2, 3))}, "space: all cell counts are zero; the atlas has no samples"),
        ({"planned_samples": 100}, "epoch cap: give both planned_samples and max_epochs (or neither)"),
        ({"max_epochs": 2}, "epoch cap: give both planned_samples and max_epochs (or neither)"),
        (
            {"planned_samples": 0, "max_epochs": 2},
            "epoch cap: planned_samples and max_epochs must be positive",
        ),
        (
            {"planned_samples": 100, "max_epochs": 0},
            "epoch cap: planned_samples and max_epochs must be positive",
        ),
        ({"lower_kt": -0.1}, "space bounds: need 0 <= lower <= upper <= 1 for every cell"),
        ({"upper_kt": 1.5}, "space bounds: need 0 <= lower <= upper <= 1 for every cell"),
        ({"lower_kt": 0.3, "upper_kt": 0.2}, "space bounds: need 0 <= lower <= upper <= 1 for every cell"),
        (
            {"lower_kt": np.where(COUNTS == 0, 0.05, 0.0)},
            "cell charts/grounding: lower bound 0.05 exceeds its cap 0 (epoch cap or empty cell); lower the"
            " bound",
        ),
        (
            {"frozen": {"cats/ocr": 0.6}, "upper_kt": 0.5},
            "frozen cell cats/ocr = 0.6 is outside its bounds [0, 0.5] (epoch cap or empty cell); lower the"
            " weight",
        ),
        ({"candidates": np.full((2, 5), 0.2)}, "candidates have 5 columns, the space has dimension 6"),
        (
            {"candidates": np.full((2, 6), 0.5)},
            "no candidate mixture satisfies the space constraints; loosen them",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict, message: str) -> None:
    args = {"concepts": C, "tasks": T, "counts_kt": COUNTS, **kwargs}
    with pytest.raises(MixAtlasError, match="^" + re.escape(message)):
        MixtureSpace(args.pop("concepts"), args.pop("tasks"), args.pop("counts_kt"), **args)


def test_edge_cases_that_are_fine() -> None:
    # one concept / one task, a single sample, bounds equal on a cell, a frozen cell exactly at its bounds
    assert MixtureSpace(("a",), ("ocr",), np.array([[1.0]])).dim == 1
    tight = MixtureSpace(
        C, T, COUNTS, lower_kt=np.where(COUNTS == 5, 0.1, 0.0), upper_kt=np.where(COUNTS == 5, 0.1, 1.0)
    )
    assert tight.lower_kt[0, 2] == tight.upper_kt[0, 2] == 0.1
    frozen = MixtureSpace(C, T, COUNTS, upper_kt=0.5, frozen={"cats/ocr": 0.5})
    assert frozen.frozen == {(0, 0): 0.5}
    capped = MixtureSpace(C, T, COUNTS, planned_samples=170, max_epochs=2)  # cap = count x 2 / 170
    np.testing.assert_allclose(capped.upper_kt, np.minimum(1.0, COUNTS * 2 / 170))
    # a pool keeps only its feasible rows
    rows = np.array([[0.2, 0.2, 0.2, 0.2, 0.2, 0.0], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
    pool = MixtureSpace(C, T, COUNTS, candidates=rows)
    np.testing.assert_array_equal(pool.candidates, rows[:1])


def test_from_domains_counts_and_defaults() -> None:
    plain = MixtureSpace.from_domains(["a", "b", "c"])
    assert (plain.mode, plain.tasks, plain.concepts) == ("joint", ("all",), ("a", "b", "c"))
    np.testing.assert_allclose(plain.natural_params(), [1 / 3] * 3)
    weighted = MixtureSpace.from_domains(["a", "b", "c"], counts=[6, 3, 1], upper_kt=0.5)
    np.testing.assert_allclose(weighted.counts_kt.ravel(), [6, 3, 1])
    np.testing.assert_allclose(weighted.upper_kt.ravel(), [0.5, 0.5, 0.5])
    assert weighted.natural_params()[0] <= 0.5 + 1e-9  # the natural prior respects the bound


def test_description_round_trip_and_missing_keys() -> None:
    space = MixtureSpace(
        C,
        T,
        COUNTS,
        mode="concept",
        within="uniform",
        lower_kt=np.where(COUNTS > 0, 0.01, 0),
        upper_kt=0.6,
        planned_samples=100,
        max_epochs=3,
    )
    again = MixtureSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict() and (again.mode, again.within) == ("concept", "uniform")
    np.testing.assert_array_equal(again.lower_kt, space.lower_kt)
    np.testing.assert_array_equal(again.upper_kt, space.upper_kt)
    minimal = MixtureSpace.from_dict({"concepts": list(C), "tasks": list(T), "counts": COUNTS.tolist()})
    assert (minimal.mode, minimal.within, minimal.planned_samples) == ("joint", "natural", None)
    np.testing.assert_array_equal(minimal.user_upper_kt, np.ones((2, 3)))
    with pytest.raises(MixAtlasError, match=r"^space description misses key 'counts'$"):
        MixtureSpace.from_dict({"concepts": list(C), "tasks": list(T)})
