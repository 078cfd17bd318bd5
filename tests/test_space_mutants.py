"""Space behaviour outside the factored mode, from the mutation bench's survivors in space/: the exact
projection against a brute-force QP, tolerances at and just past FEASIBLE_TOL, split-mode boxes, frozen-cell
keys, pools, sampling and the messages that name the fix. Every expected value is computed by hand."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.space import (
    FEASIBLE_TOL,
    MODES,
    SUM_TOL,
    ConceptParametrization,
    JointParametrization,
    Mixture,
    MixtureSpace,
    TaskParametrization,
    project_box_simplex,
)

TOL = FEASIBLE_TOL
C2, T2 = ("cats", "charts"), ("ocr", "vqa")
COUNTS2 = np.array([[3.0, 1.0], [1.0, 0.0]])  # charts/vqa is empty
# Split-mode cells: task z is empty, task y has one sample (in concept a), task x splits 3:1.
SPLIT_C, SPLIT_T = ("a", "b"), ("x", "y", "z")
SPLIT_COUNTS = np.array([[3.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def brute_projection(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nearest point of {sum 1, lower <= x <= upper} to y: every active set (at lower, free, at upper)."""
    best, best_x = np.inf, None
    for state in itertools.product((0, 1, 2), repeat=len(y)):
        s = np.array(state)
        x = np.where(s == 0, lower, np.where(s == 2, upper, 0.0)).astype(float)
        free = s == 1
        if free.any():  # free coordinates share one shift: x_F = y_F - tau
            x[free] = y[free] - (y[free].sum() + x[~free].sum() - 1.0) / free.sum()
        if abs(x.sum() - 1) > 1e-12 or np.any(x < lower - 1e-12) or np.any(x > upper + 1e-12):
            continue
        if ((x - y) ** 2).sum() < best:
            best, best_x = ((x - y) ** 2).sum(), x
    assert best_x is not None
    return best_x


def domains(n: int = 3, **constraints: object) -> MixtureSpace:
    """Joint space over n plain domains a, b, c, ... (T = 1)."""
    return MixtureSpace.from_domains([chr(ord("a") + i) for i in range(n)], **constraints)


def column(*values: float) -> np.ndarray:
    """A (k, 1) bound matrix for a domain space."""
    return np.array(values, dtype=float)[:, None]


# ----- project_box_simplex ------------------------------------------------------------------------------

LOWER4, UPPER4 = np.array([0.0, 0.1, 0.0, 0.05]), np.array([0.5, 0.6, 0.2, 1.0])


@pytest.mark.parametrize(
    "y",
    [
        [0.3, -0.2, 0.9, 0.4],  # answer (0.3, 0.1, 0.2, 0.4): two coordinates pinned at a bound
        [0.25, 0.25, 0.25, 0.25],
        [5.0, -3.0, 40.0, -7.0],  # far outside the box and the simplex
        [-50.0, -50.0, -50.0, -50.0],
        [1e3, 2e3, -1e3, 0.0],
    ],
)
def test_projection_is_the_brute_force_qp_answer(y: list[float]) -> None:
    """project_box_simplex returns the exact Euclidean projection: bounds exact, sum 1."""
    y_d = np.array(y)
    x = project_box_simplex(y_d[None], LOWER4, UPPER4)[0]
    np.testing.assert_allclose(x, brute_projection(y_d, LOWER4, UPPER4), atol=1e-12, rtol=0)
    assert np.all(x >= LOWER4) and np.all(x <= UPPER4) and abs(x.sum() - 1.0) <= 1e-15


def test_projection_of_a_hand_computed_point_and_of_integer_input() -> None:
    """(0.3, -0.2, 0.9, 0.4) lands on (0.3, 0.1, 0.2, 0.4); integer rows project like float rows."""
    x = project_box_simplex(np.array([[0.3, -0.2, 0.9, 0.4]]), LOWER4, UPPER4)[0]
    np.testing.assert_allclose(x, [0.3, 0.1, 0.2, 0.4], atol=1e-15)
    ints = np.array([[3, -1, 0, 2], [0, 0, 0, 0]])
    out = project_box_simplex(ints, LOWER4, UPPER4)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, project_box_simplex(ints.astype(float), LOWER4, UPPER4), atol=0)
    np.testing.assert_allclose(out[0], brute_projection(ints[0].astype(float), LOWER4, UPPER4), atol=1e-12)


def test_projection_returns_float64_for_extended_precision_input() -> None:
    """A longdouble row still comes back as float64 (JSON-able, the dtype every caller stores)."""
    out = project_box_simplex(np.array([[0.3, -0.2, 0.9, 0.4]], dtype=np.longdouble), LOWER4, UPPER4)
    assert out.dtype == np.float64


def test_rows_far_apart_are_projected_as_if_alone() -> None:
    """A batch whose rows are 1e12 apart: each row's bisection bracket is its own."""
    y = np.array([0.3, -0.2, 0.9, 0.4])
    out = project_box_simplex(np.stack([y - 1e12, y, y + 1e12]), LOWER4, UPPER4)
    np.testing.assert_allclose(out[1], [0.3, 0.1, 0.2, 0.4], atol=1e-12, rtol=0)
    for row in out:
        assert np.all(row >= LOWER4) and np.all(row <= UPPER4) and abs(row.sum() - 1.0) <= 1e-15


@pytest.mark.parametrize("shift", [1e6, 1e8, 1e10, -1e8])
def test_a_far_shifted_row_still_sums_to_one(shift: float) -> None:
    """y + c projects like y (the shift is absorbed by tau); the residual fix makes the sum 1 exactly."""
    x = project_box_simplex((np.array([0.3, -0.2, 0.9, 0.4]) + shift)[None], LOWER4, UPPER4)[0]
    assert abs(x.sum() - 1.0) <= 1e-15 and np.all(x >= LOWER4) and np.all(x <= UPPER4)
    np.testing.assert_allclose(x, [0.3, 0.1, 0.2, 0.4], atol=1e-5)


def test_bounds_stay_exact_when_they_barely_admit_a_sum_of_one() -> None:
    """Uppers summing to 1 - 2e-10 (or lowers to 1 + 2e-10): the answer is the bound itself, not past it."""
    rows = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [5.0, -3.0, 1.0]])
    upper = np.array([0.3, 0.3, 0.4 - 2e-10])
    x = project_box_simplex(rows, np.zeros(3), upper)
    assert np.all(x <= upper) and np.all(x >= 0)
    np.testing.assert_array_equal(x, np.repeat(upper[None], 3, axis=0))
    lower = np.array([0.3, 0.3, 0.4 + 2e-10])
    x = project_box_simplex(rows, lower, np.ones(3))
    assert np.all(x >= lower) and np.all(x <= 1)
    np.testing.assert_array_equal(x, np.repeat(lower[None], 3, axis=0))


# ----- feasible_mask ------------------------------------------------------------------------------------


def test_feasible_mask_accepts_exactly_the_tolerance_and_rejects_just_past_it() -> None:
    """Each bound alone, broken by exactly FEASIBLE_TOL (feasible) and by 2e-9 (not)."""
    space = domains(lower_kt=column(0.2, 0.0, 0.0), upper_kt=column(1.0, 0.5, 1.0))
    at = {
        "lower bound": [0.2 - TOL, 0.3, 0.5 + TOL],
        "upper bound": [0.3, 0.5 + TOL, 0.2 - TOL],
        "non-negative": [0.5 + TOL, 0.5, -TOL],
    }
    past = {
        "lower bound": [0.2 - 2e-9, 0.3, 0.5 + 2e-9],
        "upper bound": [0.3, 0.5 + 2e-9, 0.2 - 2e-9],
        "non-negative": [0.5 + 2e-9, 0.5, -2e-9],
        "sum": [0.2, 0.3, 0.5 + 2e-9],
    }
    for name, row in at.items():
        assert space.feasible_mask(np.array([row])).tolist() == [True], name
        assert space.is_feasible(np.array(row)), name
    for name, row in past.items():
        assert space.feasible_mask(np.array([row])).tolist() == [False], name
    mask = space.feasible_mask(np.array([*at.values(), *past.values()]))
    assert mask.tolist() == [True] * 3 + [False] * 4


def test_feasible_mask_of_rows_of_the_wrong_width_is_all_false() -> None:
    """Rows of the wrong width: one False per row, as a bool array."""
    space = domains()
    for width in (2, 4):
        mask = space.feasible_mask(np.full((2, width), 1.0 / width))
        assert mask.dtype == np.bool_ and mask.shape == (2,) and not mask.any()
        assert not space.is_feasible(np.full(width, 1.0 / width))


def test_a_missing_value_makes_a_row_infeasible() -> None:
    """None (a JSON null) reads as NaN: that row is infeasible, the others are judged on their own."""
    mask = domains().feasible_mask([[None, 0.5, 0.5], [0.2, 0.3, 0.5]])
    assert mask.tolist() == [False, True]


def test_weights_stay_non_negative_even_under_a_negative_cell_lower_bound() -> None:
    """A parametrization built on its own with lower bounds below 0 still rejects negative weights."""
    names = ("a", "b", "c")
    joint = JointParametrization(names, ("all",), np.ones((3, 1)), np.full((3, 1), -0.5), np.ones((3, 1)))
    assert joint.feasible_mask(np.array([[0.6, -0.2, 0.6], [0.6, 0.2, 0.2]])).tolist() == [False, True]


def test_factored_mask_checks_the_sum_of_each_simplex_block() -> None:
    """Factored mode: concept weights summing to 0.6 are infeasible even when the task weights sum to 1."""
    space = MixtureSpace(C2, T2, np.ones((2, 2)), mode="factored")
    rows = np.array([[0.3, 0.3, 0.5, 0.5], [0.5, 0.5, 0.3, 0.3], [0.5, 0.5, 0.5, 0.5]])
    assert space.feasible_mask(rows).tolist() == [False, False, True]


# ----- the anchor and the infeasibility message -----------------------------------------------------------


def test_bounds_summing_to_exactly_one_pin_the_point() -> None:
    """Lower bounds summing to 1 leave exactly one point; uppers summing to 1 - FEASIBLE_TOL still pass."""
    pinned = domains(2, lower_kt=column(0.5, 0.5))
    np.testing.assert_allclose(pinned.natural_params(), [0.5, 0.5], atol=0)
    np.testing.assert_allclose(pinned.sample(3, np.random.default_rng(0)), np.full((3, 2), 0.5), atol=1e-15)
    capped = domains(2, upper_kt=column(0.5, (1 - TOL) - 0.5))
    assert capped.is_feasible(capped.natural_params())
    np.testing.assert_allclose(capped.natural_params(), [0.5, 0.5 - TOL], atol=1e-15)


def test_infeasible_bound_sums_name_the_sums_and_the_fix() -> None:
    """Lowers summing past 1, or uppers short of 1 by more than the tolerance: one message with the fix."""
    fix = ", but weights must sum to 1; loosen the bounds, raise max_epochs or lower planned_samples"
    with pytest.raises(MixAtlasError) as lows:
        domains(lower_kt=column(0.5, 0.5, 0.5))
    assert str(lows.value) == (
        "joint space constraints are infeasible: lower bounds sum to 1.5 and upper bounds (epoch cap"
        " included) to 3" + fix
    )
    with pytest.raises(MixAtlasError) as ups:
        domains(2, upper_kt=column(0.5, (1 - 2e-9) - 0.5))
    assert str(ups.value) == (
        "joint space constraints are infeasible: lower bounds sum to 0 and upper bounds (epoch cap"
        " included) to 1" + fix
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_a_feasible_anchor(mode: str) -> None:
    """The anchor (the fallback point of projection) is feasible; in linear modes it is the natural point."""
    space = MixtureSpace(C2, ("ocr", "vqa", "pt"), np.array([[3.0, 1.0, 2.0], [1.0, 4.0, 2.0]]), mode=mode,
                         upper_kt=0.3)
    anchor = space.parametrization.anchor_d
    assert anchor.shape == (space.dim,) and space.is_feasible(anchor)
    if mode != "factored":
        np.testing.assert_allclose(anchor, space.natural_params(), atol=1e-15)


# ----- Dirichlet draws and sampling -----------------------------------------------------------------------


def test_dirichlet_with_infinite_alpha_is_each_blocks_centre() -> None:
    """alpha -> inf concentrates Dirichlet draws on the centre: inf gives 1/size on every block."""
    joint = domains(4).parametrization
    np.testing.assert_allclose(joint.dirichlet(2, np.random.default_rng(0), np.inf), np.full((2, 4), 0.25))
    factored = MixtureSpace(C2, ("ocr", "vqa", "pt"), np.ones((2, 3)), mode="factored").parametrization
    draws = factored.dirichlet(2, np.random.default_rng(0), np.inf)
    np.testing.assert_allclose(draws, np.tile([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], (2, 1)))


def test_sample_defaults_to_alpha_one_and_honours_alpha() -> None:
    """Default alpha 1 is uniform (P(x_a > 1/2) = 1/4); small alpha hits vertices; alpha (d,) sets means."""
    space = domains()
    np.testing.assert_array_equal(
        space.sample(5, np.random.default_rng(0)), space.sample(5, np.random.default_rng(0), 1.0)
    )
    par = space.parametrization
    np.testing.assert_array_equal(
        par.sample(5, np.random.default_rng(0)), par.sample(5, np.random.default_rng(0), 1.0)
    )
    flat = space.sample(4000, np.random.default_rng(1))
    assert abs((flat[:, 0] > 0.5).mean() - 0.25) < 0.03
    assert len(np.unique(flat[:, 0])) == 4000
    spiky = space.sample(2000, np.random.default_rng(2), alpha=0.05)
    assert (spiky.max(axis=1) > 0.95).mean() > 0.7
    skewed = space.sample(2000, np.random.default_rng(3), alpha=np.array([20.0, 1.0, 1.0]))
    np.testing.assert_allclose(skewed.mean(axis=0), [20 / 22, 1 / 22, 1 / 22], atol=0.01)
    assert space.feasible_mask(np.concatenate([flat, spiky, skewed])).all()


def test_sample_above_lower_bounds_needs_no_projection() -> None:
    """Lower bounds (0.2, 0.3, 0): draws are lower + 0.5 * Dirichlet(1), strictly inside, mean lower + 1/6."""
    lower = np.array([0.2, 0.3, 0.0])
    space = domains(lower_kt=column(*lower))
    draws = space.sample(3000, np.random.default_rng(0))
    assert np.all(draws > lower) and space.feasible_mask(draws).all()
    np.testing.assert_allclose(draws.mean(axis=0), lower + 0.5 / 3, atol=0.015)


def test_uniform_raw_is_one_over_the_block_size() -> None:
    """Equal weight per simplex before projection: 1/3 each over 3 domains; 1/2, then 1/3 in factored."""
    np.testing.assert_array_equal(domains().parametrization.uniform_raw(), np.full(3, 1 / 3))
    factored = MixtureSpace(C2, ("ocr", "vqa", "pt"), np.ones((2, 3)), mode="factored").parametrization
    np.testing.assert_allclose(factored.uniform_raw(), [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(domains(4).uniform_params(), np.full(4, 0.25))


# ----- names and dtypes -------------------------------------------------------------------------------------


def test_parts_names_cells_by_concept_alone_only_when_there_is_one_task() -> None:
    """One task: the concept names; two tasks: "concept/task" (joint and factored modes)."""
    plain = domains()
    names, weights = plain.parts(plain.to_mixture(np.array([0.2, 0.3, 0.5])))
    assert names == ["a", "b", "c"] and weights.tolist() == [0.2, 0.3, 0.5]
    for mode in ("joint", "factored"):
        space = MixtureSpace(C2, T2, np.ones((2, 2)), mode=mode)
        names, _ = space.parts(Mixture(C2, T2, np.full((2, 2), 0.25)))
        assert names == ["cats/ocr", "cats/vqa", "charts/ocr", "charts/vqa"], mode


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.int64, np.longdouble])
def test_the_maps_return_float64_for_integer_or_extended_input(mode: str, dtype: type) -> None:
    """cell_weights, params_gradient and marginal_params give float64 whatever numeric dtype comes in."""
    par = MixtureSpace(C2, T2, np.ones((2, 2)), mode=mode).parametrization
    params = np.zeros((1, par.dim), dtype=dtype)
    params[0, 0] = 1
    assert par.cell_weights(params).dtype == np.float64
    assert par.params_gradient(params, np.ones((1, 2, 2), dtype=dtype)).dtype == np.float64
    weights = np.array([[1, 0], [0, 0]], dtype=dtype)
    marginal = par.marginal_params(weights)
    assert marginal.dtype == np.float64 and marginal[0] == 1


# ----- split modes: boxes, splits and their errors ---------------------------------------------------------


def split_space(mode: str, within: str = "natural", **bounds: np.ndarray) -> MixtureSpace:
    """The split-mode cells, transposed for concept mode so that the searched lines are x, y, z."""
    if mode == "task":
        return MixtureSpace(SPLIT_C, SPLIT_T, SPLIT_COUNTS, mode="task", within=within, **bounds)
    bounds = {key: value.T for key, value in bounds.items()}
    return MixtureSpace(SPLIT_T, SPLIT_C, SPLIT_COUNTS.T, mode="concept", within=within, **bounds)


@pytest.mark.parametrize("mode", ["task", "concept"])
def test_split_mode_boxes_by_hand(mode: str) -> None:
    """Boxes max(lower / share), min(1, upper / share): x splits 3:1, y is one sample, empty z is (0, 0)."""
    free = split_space(mode)
    np.testing.assert_allclose(free.param_bounds(), [[0, 0, 0], [1, 1, 0]], atol=0)
    lower = np.zeros((2, 3))
    lower[0, 0], lower[0, 1] = 0.15, 0.05
    bounded = split_space(mode, lower_kt=lower, upper_kt=np.full((2, 3), 0.6))
    # x: max(0.15 / 0.75, 0) = 0.2 and min(1, 0.6 / 0.75, 0.6 / 0.25) = 0.8; y: its one cell, 0.05 and 0.6
    np.testing.assert_allclose(bounded.param_bounds(), [[0.2, 0.05, 0], [0.8, 0.6, 0]], atol=1e-15)
    uniform = split_space(mode, "uniform", lower_kt=lower, upper_kt=np.full((2, 3), 0.6))
    # uniform split: x is 1:1 -> 0.15 / 0.5 = 0.3 and min(1, 1.2, 1.2) = 1
    np.testing.assert_allclose(uniform.param_bounds(), [[0.3, 0.05, 0], [1, 0.6, 0]], atol=1e-15)
    for space in (free, bounded, uniform):
        points = np.concatenate([space.sample(50, np.random.default_rng(0)), space.natural_params()[None]])
        assert space.feasible_mask(points).all() and np.all(points[:, 2] == 0)


@pytest.mark.parametrize("mode", ["task", "concept"])
def test_split_cells_of_empty_and_one_sample_lines(mode: str) -> None:
    """Natural split: x -> (0.75, 0.25), y -> all on a, the empty z gets no cell weight."""
    space = split_space(mode)
    cells = space.cell_weights(np.array([0.5, 0.5, 0.0]))[0]
    expected = np.array([[0.375, 0.5, 0.0], [0.125, 0.0, 0.0]])
    np.testing.assert_allclose(cells, expected if mode == "task" else expected.T, atol=0)
    # weight put on the empty line reaches no cell, and no cell gradient flows back to it
    np.testing.assert_array_equal(space.cell_weights(np.array([0.0, 0.0, 1.0]))[0], np.zeros(cells.shape))
    grad = space.params_gradient(np.array([[0.5, 0.5, 0.0]]), np.ones((1, *cells.shape)))
    np.testing.assert_allclose(grad, [[1.0, 1.0, 0.0]], atol=0)
    assert space.is_feasible(space.natural_params())
    np.testing.assert_allclose(space.natural_params(), [0.8, 0.2, 0.0], atol=1e-15)


def test_split_parametrizations_default_to_the_natural_split() -> None:
    """Built on their own without `within`, the task and concept modes split by the counts."""
    upper = (SPLIT_COUNTS > 0).astype(float)
    task = TaskParametrization(SPLIT_C, SPLIT_T, SPLIT_COUNTS, np.zeros((2, 3)), upper)
    assert task.settings() == {"mode": "task", "within": "natural"}
    np.testing.assert_allclose(task.cell_weights(np.array([1.0, 0, 0]))[0][:, 0], [0.75, 0.25])
    concept = ConceptParametrization(SPLIT_T, SPLIT_C, SPLIT_COUNTS.T, np.zeros((3, 2)), upper.T)
    assert concept.settings() == {"mode": "concept", "within": "natural"}
    np.testing.assert_allclose(concept.cell_weights(np.array([1.0, 0, 0]))[0][0], [0.75, 0.25])


@pytest.mark.parametrize(
    ("cls", "mode"), [(TaskParametrization, "task"), (ConceptParametrization, "concept")]
)
def test_a_lower_bound_on_a_zero_share_cell_names_the_fix(cls: type, mode: str) -> None:
    """A lower bound on a cell its line never weighs (count 0) cannot be met: the message says so."""
    lower, upper = np.zeros((2, 3)), (SPLIT_COUNTS > 0).astype(float)
    lower[1, 1] = 0.1  # b/y: count 0
    args = (SPLIT_C, SPLIT_T, SPLIT_COUNTS, lower, upper)
    if mode == "concept":
        args = (SPLIT_T, SPLIT_C, SPLIT_COUNTS.T, lower.T, upper.T)
    with pytest.raises(MixAtlasError) as error:
        cls(*args)
    assert str(error.value) == (
        f"{mode} mode: a cell with a lower bound has zero share inside 'y'; use the joint mode or drop the"
        " bound"
    )


def test_conflicting_bounds_inside_a_line_at_and_past_the_tolerance() -> None:
    """A line's bounds FEASIBLE_TOL apart close its box to a point; 2e-9 apart raise, naming the fix."""
    # ocr splits 1:1: cats/ocr >= lower needs w_ocr >= 2 * lower; charts/ocr <= 0.125 caps w_ocr at 0.25
    counts = np.ones((2, 2))
    lower, upper = np.zeros((2, 2)), np.ones((2, 2))
    upper[1, 0] = 0.125
    lower[0, 0] = (0.25 + TOL) / 2
    space = MixtureSpace(C2, T2, counts, mode="task", lower_kt=lower, upper_kt=upper)
    low, up = space.param_bounds()
    assert low[0] == up[0] == 0.25 + TOL
    lower[0, 0] = 0.125 + 1e-9
    with pytest.raises(MixAtlasError) as error:
        MixtureSpace(C2, T2, counts, mode="task", lower_kt=lower, upper_kt=upper)
    assert str(error.value) == (
        "task mode: the cell bounds inside 'ocr' conflict (with the fixed natural split they need its weight"
        " >= 0.25 and <= 0.25); loosen the bounds, use within=uniform or the joint mode"
    )


# ----- MixtureSpace construction: keys, bounds, counts ------------------------------------------------------


def test_frozen_cell_keys_in_every_accepted_form() -> None:
    """(concept, task), "concept/task", and the bare concept name when there is one task."""
    space = MixtureSpace(C2, T2, COUNTS2, frozen={"cats/ocr": 0.1, ("cats", "vqa"): 0.2})
    assert space.frozen == {(0, 0): 0.1, (0, 1): 0.2}
    for key in ("b", "b/all", ("b", "all")):
        assert domains(frozen={key: 0.3}).frozen == {(1, 0): 0.3}, key
    one_task = MixtureSpace(("a", "b"), ("ocr",), np.ones((2, 1)), frozen={"b": 0.4})
    assert one_task.frozen == {(1, 0): 0.4}
    np.testing.assert_allclose(one_task.natural_params(), [0.6, 0.4])


@pytest.mark.parametrize(
    ("tasks", "key", "message"),
    [
        (T2, "cats", "frozen cell 'cats': write it as 'concept/task' or (concept, task)"),
        (("ocr", "vqa", "pt"), "cats", "frozen cell 'cats': write it as 'concept/task' or (concept, task)"),
        (T2, "cats/ocr/x", "frozen cell 'cats/ocr/x': write it as 'concept/task' or (concept, task)"),
        (T2, ("cats",), "frozen cell ('cats',): write it as 'concept/task' or (concept, task)"),
        (
            T2,
            "dogs/ocr",
            "frozen cell 'dogs/ocr': unknown concept or task; concepts are ['cats', 'charts'], tasks"
            " ['ocr', 'vqa']",
        ),
        (
            ("ocr",),
            "dogs",
            "frozen cell 'dogs': unknown concept or task; concepts are ['cats', 'charts'], tasks ['ocr']",
        ),
    ],
)
def test_bad_frozen_keys_say_how_to_write_them(tasks: tuple[str, ...], key: object, message: str) -> None:
    """A bare concept with several tasks, a wrong shape or an unknown name: the message shows the forms."""
    with pytest.raises(MixAtlasError) as error:
        MixtureSpace(C2, tasks, np.ones((2, len(tasks))), frozen={key: 0.1})
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["lower", "upper"])
def test_a_bound_matrix_of_the_wrong_shape_names_which_bound(name: str) -> None:
    """lower_kt / upper_kt of shape (3, 2) on a (2, 2) space."""
    with pytest.raises(MixAtlasError) as error:
        MixtureSpace(C2, T2, COUNTS2, **{f"{name}_kt": np.full((3, 2), 0.1)})
    assert str(error.value) == f"space {name} bounds: expected a number or a (2, 2) matrix"


def test_integer_bounds_and_counts_behave_like_floats() -> None:
    """lower_kt=0 / upper_kt=1 as ints keep a frozen 0.3; integer counts split cells in task mode."""
    space = MixtureSpace(C2, T2, COUNTS2, lower_kt=0, upper_kt=1, frozen={"cats/ocr": 0.3})
    assert space.lower_kt[0, 0] == space.upper_kt[0, 0] == 0.3
    assert space.cell_weights(space.natural_params())[0, 0, 0] == pytest.approx(0.3, abs=1e-12)
    assert space.to_dict()["lower"] == [[0.0, 0.0], [0.0, 0.0]]
    task = MixtureSpace(C2, T2, np.array([[3, 1], [1, 3]]), mode="task")
    np.testing.assert_allclose(task.cell_weights(np.array([0.5, 0.5]))[0], [[0.375, 0.125], [0.125, 0.375]])
    assert task.to_dict()["counts"] == [[3.0, 1.0], [1.0, 3.0]]


def test_frozen_weights_and_caps_at_the_tolerance() -> None:
    """Frozen at 0, lower - FEASIBLE_TOL or upper + FEASIBLE_TOL pass; 2e-9 outside raises; empty cells."""
    off = MixtureSpace(C2, T2, COUNTS2, frozen={"cats/ocr": 0.0})
    assert off.lower_kt[0, 0] == off.upper_kt[0, 0] == 0.0 and off.natural_params()[0] == 0.0
    lower = np.zeros((2, 2))
    lower[0, 0] = 0.2
    assert MixtureSpace(C2, T2, COUNTS2, lower_kt=lower, frozen={"cats/ocr": 0.2 - TOL}).frozen == {
        (0, 0): 0.2 - TOL
    }
    with pytest.raises(MixAtlasError) as below:
        MixtureSpace(C2, T2, COUNTS2, lower_kt=lower, frozen={"cats/ocr": 0.2 - 2e-9})
    assert str(below.value).startswith("frozen cell cats/ocr = 0.2 is outside its bounds [0.2, 1]")
    assert MixtureSpace(C2, T2, COUNTS2, upper_kt=0.5, frozen={"cats/ocr": 0.5 + TOL}).frozen == {
        (0, 0): 0.5 + TOL
    }
    above = r"^frozen cell cats/ocr = 0\.5 is outside its bounds \[0, 0\.5\]"
    with pytest.raises(MixAtlasError, match=above):
        MixtureSpace(C2, T2, COUNTS2, upper_kt=0.5, frozen={"cats/ocr": 0.5 + 2e-9})
    empty = np.zeros((2, 2))
    empty[1, 1] = TOL  # charts/vqa has count 0: its cap is 0
    assert MixtureSpace(C2, T2, COUNTS2, lower_kt=empty).lower_kt[1, 1] == TOL
    empty[1, 1] = 2e-9
    with pytest.raises(MixAtlasError) as error:
        MixtureSpace(C2, T2, COUNTS2, lower_kt=empty)
    assert str(error.value) == (
        "cell charts/vqa: lower bound 2e-09 exceeds its cap 0 (epoch cap or empty cell); lower the bound or"
        " raise max_epochs"
    )


def test_a_one_sample_plan_is_a_valid_epoch_cap() -> None:
    """planned_samples=1, max_epochs=1: the cap count * 1 / 1 binds nothing but the empty cell."""
    space = MixtureSpace(C2, T2, COUNTS2, planned_samples=1, max_epochs=1)
    np.testing.assert_array_equal(space.upper_kt, [[1.0, 1.0], [1.0, 0.0]])
    capped = MixtureSpace(C2, T2, COUNTS2, planned_samples=4, max_epochs=1)
    np.testing.assert_allclose(capped.upper_kt, [[0.75, 0.25], [0.25, 0.0]])


# ----- mixtures in and out of the space --------------------------------------------------------------------


def test_params_of_a_mixture_over_other_cells_is_refused() -> None:
    """Renamed concepts or tasks (same shape) do not match the space."""
    space = MixtureSpace(C2, T2, COUNTS2)
    for concepts, tasks in ((("cats", "dogs"), T2), (C2, ("ocr", "pt"))):
        with pytest.raises(MixAtlasError) as error:
            space.params_of(Mixture(concepts, tasks, np.full((2, 2), 0.25)))
        assert str(error.value) == "mixture cells do not match the space (different concepts or tasks)"


def test_params_of_accepts_a_mixture_exactly_1e6_off_the_split() -> None:
    """Uniform 1:1 split in ocr: cells (2e-6, 0) are exactly 1e-6 from (1e-6, 1e-6); (2.2e-6, 0) are not."""
    space = MixtureSpace(C2, T2, np.array([[1.0, 1.0], [1.0, 0.0]]), mode="task", within="uniform")
    ok = Mixture(C2, T2, np.array([[2e-6, 1 - 2e-6], [0.0, 0.0]]))
    np.testing.assert_allclose(space.params_of(ok), [2e-6, 1 - 2e-6], atol=0)
    with pytest.raises(MixAtlasError, match=r"^this mixture is not representable in the task space \(within"):
        space.params_of(Mixture(C2, T2, np.array([[2.2e-6, 1 - 2.2e-6], [0.0, 0.0]])))


def test_candidate_index_tolerance_is_1e9_inclusive() -> None:
    """A query 1e-9 from a pool row is that row; 2e-9 is no row; a space without a pool answers None."""
    pool = domains(candidates=np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    assert pool.candidate_index(np.array([0.5, 0.5, 1e-9])) == 0
    assert pool.candidate_index(np.array([0.5, 0.5, 2e-9])) is None
    assert pool.candidate_index(np.array([0.0, 0.0, 1.0])) == 1
    assert pool.is_feasible(np.array([0.5, 0.5, 1e-9])) and not pool.is_feasible(np.array([0.5, 0.5, 2e-9]))
    assert domains().candidate_index(np.array([0.5, 0.5, 0.0])) is None


def test_pool_sampling_with_and_without_replacement() -> None:
    """Up to the pool size every row once; more draws repeat rows; integer pools come back as float64."""
    pool = domains(candidates=np.eye(3, dtype=int))
    assert pool.candidates.dtype == np.float64
    draws = pool.sample(3, np.random.default_rng(0))
    assert draws.dtype == np.float64
    np.testing.assert_array_equal(np.sort(draws, axis=0), np.sort(np.eye(3), axis=0))
    assert sorted(int(d.argmax()) for d in draws) == [0, 1, 2]
    two = pool.sample(2, np.random.default_rng(1))
    assert len({int(d.argmax()) for d in two}) == 2
    many = pool.sample(12, np.random.default_rng(2))
    assert many.shape == (12, 3) and {int(d.argmax()) for d in many} == {0, 1, 2}
    assert all(pool.candidate_index(d) is not None for d in many)
    assert pool.project(np.array([0.1, 0.8, 0.1])).dtype == np.float64


def test_project_many_reads_missing_values_as_zero() -> None:
    """NaN or None (a JSON null) count as 0 before projecting."""
    space = domains(upper_kt=0.6)
    expected = space.project(np.array([0.0, 0.5, 0.5]))
    for row in ([None, 0.5, 0.5], [np.nan, 0.5, 0.5]):
        np.testing.assert_allclose(space.project_many([row])[0], expected, atol=0)


def test_description_round_trip_with_every_field() -> None:
    """to_dict -> from_dict keeps frozen cells, caps, bounds, within and the pool, and reads as JSON lists."""
    lower = np.array([[0.05, 0.0, 0.0], [0.0, 0.01, 0.0]])
    space = MixtureSpace(
        C2, ("ocr", "vqa", "pt"), np.array([[30.0, 10.0, 5.0], [20.0, 20.0, 10.0]]), mode="task",
        within="uniform", lower_kt=lower, upper_kt=0.7, frozen={"charts/pt": 0.1}, planned_samples=100,
        max_epochs=3,
    )
    data = space.to_dict()
    assert data["frozen"] == [["charts", "pt", 0.1]] and data["lower"] == lower.tolist()
    assert data["upper"] == np.full((2, 3), 0.7).tolist() and data["counts"][0] == [30.0, 10.0, 5.0]
    assert (data["planned_samples"], data["max_epochs"], data["candidates"]) == (100.0, 3.0, None)
    again = MixtureSpace.from_dict(data)
    assert again.to_dict() == data and again.describe() == space.describe()
    assert again.frozen == {(1, 2): 0.1}
    np.testing.assert_array_equal(again.upper_kt, space.upper_kt)
    np.testing.assert_array_equal(again.param_bounds(), space.param_bounds())
    pool = domains(candidates=np.array([[0.2, 0.3, 0.5], [1, 0, 0]]), upper_kt=column(1.0, 0.9, 0.8))
    data = pool.to_dict()
    assert data["candidates"] == [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]
    back = MixtureSpace.from_dict(data)
    assert back.to_dict() == data and back.candidates.dtype == np.float64
    np.testing.assert_array_equal(back.candidates, pool.candidates)


# ----- Mixture --------------------------------------------------------------------------------------------


def test_mixture_weights_are_float64_and_tolerate_minus_sum_tol() -> None:
    """Extended-precision weights come back float64; -SUM_TOL is clipped to 0, -2e-9 is refused."""
    wide = Mixture(("a", "b"), ("x",), np.array([[0.25], [0.75]], dtype=np.longdouble))
    assert wide.weights_kt.dtype == np.float64
    np.testing.assert_array_equal(wide.weights_kt, [[0.25], [0.75]])
    tiny = Mixture(("a", "b"), ("x",), np.array([[1.0], [-SUM_TOL]]))
    np.testing.assert_array_equal(tiny.weights_kt, [[1.0], [0.0]])
    with pytest.raises(MixAtlasError, match=r"^mixture weights must be finite and non-negative$"):
        Mixture(("a", "b"), ("x",), np.array([[1.0], [-2e-9]]))


def test_not_a_mixture_message_shows_the_contract() -> None:
    """Unreadable weights: the message ends with the JSON contract, k rows of T numbers."""
    with pytest.raises(MixAtlasError) as error:
        Mixture.from_dict({"concepts": ["a"], "tasks": ["x"], "weights": "abc"}, origin="m.json")
    assert re.fullmatch(
        r"m\.json: not a mixture \(.+\); expected "
        + re.escape('{"concepts": [...], "tasks": [...], "weights": [[k rows of T numbers]]}'),
        str(error.value),
    )
