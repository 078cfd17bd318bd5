"""MixtureSpace feasibility, projection and description checked against hand-made points (from the
mutation bench's survivors in space/: each check fails for a planted bug that the suite let through)."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.space import MixtureSpace

COUNTS = np.array([[30.0, 10.0, 5.0], [20.0, 20.0, 0.0]])


def joint(**constraints: object) -> MixtureSpace:
    return MixtureSpace(("cats", "charts"), ("ocr", "vqa", "grounding"), COUNTS, mode="joint", **constraints)


def test_is_feasible_rejects_each_broken_constraint_alone() -> None:
    lower = np.full((2, 3), 0.01)
    lower[1, 2] = 0.0  # the empty cell charts/grounding (count 0) has no room above 0
    space = joint(upper_kt=np.full((2, 3), 0.5), lower_kt=lower)
    good = np.array([0.3, 0.2, 0.1, 0.2, 0.2, 0.0])  # the empty cell (charts/grounding) must stay 0
    good = good / good.sum()
    assert space.is_feasible(good) and space.feasible_mask(good[None]).tolist() == [True]
    bad = {
        "negative": good + np.array([-0.4, 0.4, 0, 0, 0, 0]),
        "sum": good * 1.01,
        "above upper": np.array([0.55, 0.05, 0.1, 0.1, 0.2, 0.0]),
        "below lower": np.array([0.3, 0.005, 0.195, 0.3, 0.2, 0.0]),
        "empty cell": np.array([0.3, 0.2, 0.1, 0.15, 0.2, 0.05]),
        "not finite": np.where(np.arange(6) == 1, np.nan, good),
    }
    for name, params in bad.items():
        assert not space.is_feasible(params), name
    mask = space.feasible_mask(np.stack([good, *bad.values(), good]))
    assert mask.tolist() == [True] + [False] * len(bad) + [True]  # row by row, not all-or-nothing
    assert not space.is_feasible(good[:5]) and not space.is_feasible(np.concatenate([good, [0.0]]))
    # tolerances: 1e-10 outside a bound or the simplex is still feasible, 1e-6 is not
    assert space.is_feasible(good + np.array([1e-10, 0, 0, 0, 0, 0]))
    assert not space.is_feasible(good + np.array([1e-6, 0, 0, 0, 0, 0]))


def test_projection_lands_on_the_nearest_feasible_point() -> None:
    space = joint(upper_kt=np.full((2, 3), 0.5))
    # already feasible: unchanged; outside: the Euclidean projection onto {sum 1, 0 <= w <= 0.5, empty = 0}
    inside = np.array([0.3, 0.2, 0.1, 0.2, 0.2, 0.0])
    np.testing.assert_allclose(space.project(inside), inside, atol=1e-12)
    # (0.9, 0.1, 0, 0, 0, 0): w = clip(y - tau, 0, 0.5) on the free cells with the shift tau making the sum 1
    y = np.array([0.9, 0.1, 0.0, 0.0, 0.0, 0.0])
    projected = space.project(y)
    free = np.array([1, 1, 1, 1, 1, 0], bool)
    tau = (0.5 + 0.1 + 0 + 0 + 0 - 1.0) / 4  # cell 0 capped at 0.5, the 4 others share the rest: -0.1
    expected = np.where(free, np.clip(y - tau, 0, 0.5), 0.0)
    np.testing.assert_allclose(expected.sum(), 1.0)
    np.testing.assert_allclose(projected, expected, atol=1e-9)
    # NaN is read as 0 before projecting; many rows at once agree with one at a time
    many = space.project_many(np.stack([y, inside, np.where(np.arange(6) == 0, np.nan, inside)]))
    np.testing.assert_allclose(many[0], projected, atol=1e-12)
    np.testing.assert_allclose(many[2], space.project(np.where(np.arange(6) == 0, 0.0, inside)), atol=1e-12)


def test_pool_lookup_and_projection() -> None:
    rows = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    pool = MixtureSpace.from_domains(["a", "b", "c"], candidates=rows)
    assert pool.candidate_index(rows[1] + 1e-12) == 1 and pool.candidate_index(rows[1] + 1e-6) is None
    assert pool.is_feasible(rows[2]) and not pool.is_feasible(np.array([1 / 3, 1 / 3, 1 / 3]))
    # nearest row in Euclidean distance: (0.3, 0.3, 0.4) is nearer row 1 (0.0200) than row 0 (0.2200)
    np.testing.assert_array_equal(pool.project(np.array([0.3, 0.3, 0.4])), rows[1])
    np.testing.assert_array_equal(
        pool.project_many(np.array([[0.0, 0.0, 1.0], [0.6, 0.4, 0.0]])), rows[[2, 0]]
    )
    draws = pool.sample(3, np.random.default_rng(0))  # as many draws as rows: each row once
    assert sorted(pool.candidate_index(d) for d in draws) == [0, 1, 2]


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        ({}, "joint space: 2 concepts x 3 tasks, d=6"),
        ({"upper_kt": np.full((2, 3), 0.5)}, "joint space: 2 concepts x 3 tasks, d=6, bounds on 6 cells"),
        (
            {"lower_kt": np.where(np.eye(2, 3) > 0, 0.01, 0.0)},
            "joint space: 2 concepts x 3 tasks, d=6, bounds on 2 cells",
        ),
    ],
)
def test_describe_names_the_active_constraints(constraints: dict, expected: str) -> None:
    assert joint(**constraints).describe() == expected


def test_describe_lists_the_mode_settings() -> None:
    space = MixtureSpace(
        ("cats", "charts"), ("ocr", "vqa", "grounding"), COUNTS, mode="task", within="uniform"
    )
    assert space.describe() == "task space: 2 concepts x 3 tasks, d=3, within=uniform"
    assert (
        space.to_dict()["within"] == "uniform" and MixtureSpace.from_dict(space.to_dict()).within == "uniform"
    )
