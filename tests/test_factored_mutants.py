"""Factored search mode checked against hand-computed answers (from the mutation bench's survivors in
`FactoredParametrization` and `_factor_box`): exact boxes, the repair order, projection quality under tight
caps, the anchor search on thin feasible sets and its error on truly infeasible ones."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.space import FactoredParametrization, MixtureSpace
from mixatlas.space.parametrization import _factor_box

INFEASIBLE = (
    "factored space constraints are infeasible (no outer product of concept and task weights meets"
    " the cell bounds/caps); use the joint mode or loosen the bounds"
)


def factored(counts: np.ndarray, **constraints: object) -> MixtureSpace:
    """A factored space with concepts c0.. and tasks t0.. over `counts` (k, T)."""
    k, t = counts.shape
    concepts, tasks = tuple(f"c{i}" for i in range(k)), tuple(f"t{j}" for j in range(t))
    return MixtureSpace(concepts, tasks, counts, mode="factored", **constraints)


def diagonal(alpha: list[float], eps: float, capped: bool = False) -> MixtureSpace:
    """k x k space whose diagonal cells need a_i * b_i >= ((1 - eps) * alpha_i)**2.

    By Cauchy-Schwarz sum_i sqrt(a_i b_i) <= 1, so the set is empty for eps < 0 and shrinks onto
    a = b = alpha as eps -> 0 (the counts keep the natural and uniform points away from it).
    `capped` also caps each off-diagonal cell at alpha_i * alpha_j, which a = b = alpha still meets.
    """
    a = np.asarray(alpha)
    counts = np.ones((len(a), len(a)))
    counts[0, 0], counts[-1, -1] = 5.0, 3.0
    upper = np.outer(a, a) if capped else np.ones_like(counts)
    np.fill_diagonal(upper, 1.0)
    return factored(counts, lower_kt=np.diag(((1 - eps) * a) ** 2), upper_kt=upper)


def box(other: list[list[float]], lower: list[list[float]], upper: list[list[float]]) -> tuple:
    """`_factor_box` on plain lists: (lo, up, nonempty)."""
    return _factor_box(np.asarray(other, float), np.asarray(lower, float), np.asarray(upper, float))


# ----- _factor_box: exact boxes -------------------------------------------------------------------------


def test_factor_box_is_the_exact_box_of_each_row() -> None:
    """lo = max_t lower/other, up = min(1, min_t upper/other): one row per weight vector of the other."""
    lower, upper = [[0.2, 0.0], [0.1, 0.0]], [[0.5, 1.0], [1.0, 1.0]]
    lo, up, nonempty = box([[0.5, 0.5], [0.25, 0.75], [0.1, 0.9]], lower, upper)
    np.testing.assert_allclose(lo[:2], [[0.4, 0.2], [0.8, 0.4]])
    np.testing.assert_allclose(up[:2], [[1.0, 1.0], [1.0, 1.0]])  # 1/0.5 = 2 is capped at a weight's 1
    # row 0 fits; row 1 needs 0.8 + 0.4 > 1 of a simplex; row 2 needs the first weight >= 2 > its cap 1
    assert nonempty.tolist() == [True, False, False]
    # caps that leave the factor less than 1 in all: empty, row by row
    lo, up, nonempty = box([[0.5, 0.5]] * 3, [[0.0, 0.0]] * 2, [[0.1, 0.1]] * 2)
    np.testing.assert_allclose(up, 0.2)
    np.testing.assert_allclose(lo, 0.0)
    assert nonempty.tolist() == [False, False, False]


def test_factor_box_boundaries_count_as_nonempty() -> None:
    """A box whose lower bounds sum to exactly 1, or whose upper bounds do, holds exactly one point."""
    lo, _, nonempty = box([[0.5, 0.5]], [[0.25, 0.0], [0.25, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(lo, [[0.5, 0.5]])
    assert nonempty.tolist() == [True]
    _, up, nonempty = box([[0.5, 0.5]], [[0.0, 0.0], [0.0, 0.0]], [[0.25, 1.0], [1.0, 0.25]])
    np.testing.assert_array_equal(up, [[0.5, 0.5]])
    assert nonempty.tolist() == [True]


def test_factor_box_with_zero_weights_in_the_other_factor() -> None:
    """A zero weight leaves its cells at 0: no bound there, but a lower bound > 0 there empties the box."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 and x/0 are expected inside and must stay silent
        lo, up, nonempty = box([[1.0, 0.0]], [[0.2, 0.0], [0.0, 0.0]], [[0.5, 0.3], [1.0, 0.0]])
        np.testing.assert_allclose(lo, [[0.2, 0.0]])
        np.testing.assert_allclose(up, [[0.5, 1.0]])
        assert nonempty.tolist() == [True]
        lo, up, nonempty = box([[1.0, 0.0], [0.5, 0.5]], [[0.0, 0.1], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    assert nonempty.tolist() == [False, True]  # cell (0, 1) needs 0.1 but its task has weight 0
    assert np.isfinite(lo).all() and lo.dtype == np.float64 and np.isfinite(up).all()
    np.testing.assert_allclose(lo[1], [0.2, 0.0])


# ----- implied parameter boxes and the map ---------------------------------------------------------------


def test_param_bounds_are_the_cell_bounds_summed_and_capped_at_one() -> None:
    """Unbounded cells imply [0, 1] per weight; caps imply their row/column sums."""
    lower, upper = factored(np.ones((2, 3))).param_bounds()
    np.testing.assert_array_equal(lower, np.zeros(5))
    np.testing.assert_array_equal(upper, np.ones(5))
    caps = np.array([[0.3, 0.3, 0.3], [0.3, 0.3, 0.4]])
    lower, upper = factored(np.ones((2, 3)), upper_kt=caps, lower_kt=caps / 10).param_bounds()
    np.testing.assert_allclose(upper, [0.9, 1.0, 0.6, 0.6, 0.7])
    np.testing.assert_allclose(lower, [0.09, 0.1, 0.06, 0.06, 0.07])


def test_the_map_computes_in_float64_whatever_the_input_dtype() -> None:
    """float32 and longdouble inputs give float64 results, the numbers of float64 inputs of those values."""
    space = factored(np.array([[42.0, 32.0, 26.0], [14.0, 16.0, 3.0]]), planned_samples=133.0, max_epochs=1.2)
    par = space.parametrization
    rng = np.random.default_rng(0)
    p32 = np.concatenate([rng.dirichlet(np.ones(2), 40), rng.dirichlet(np.ones(3), 40)], axis=1)
    p32 = p32.astype(np.float32)
    p64 = p32.astype(np.float64)
    cells = space.cell_weights(p32)
    assert cells.dtype == np.float64
    np.testing.assert_array_equal(cells, p64[:, :2, None] * p64[:, None, 2:])
    w32 = (np.outer([0.1, 0.9], [0.3, 0.3, 0.4]) + 1e-3).astype(np.float32)
    marginal = par.marginal_params(w32)
    w64 = w32.astype(np.float64)
    np.testing.assert_array_equal(marginal, np.concatenate([w64.sum(axis=1), w64.sum(axis=0)]))
    np.testing.assert_allclose(par.project_many(p32), par.project_many(p64), rtol=0, atol=1e-13)
    grad = np.random.default_rng(1).normal(size=(40, 2, 3))
    for p_in, g_in in ((p64.astype(np.longdouble), grad), (p64, grad.astype(np.longdouble))):
        chain = par.params_gradient(p_in, g_in)  # extended precision in, float64 out
        assert chain.dtype == np.float64
        np.testing.assert_array_equal(chain, par.params_gradient(p64, grad))


# ----- the repair step -----------------------------------------------------------------------------------


def test_repair_moves_the_concept_weights_first() -> None:
    """Cap 0.3 on c0/t0 at a = (0.8, 0.2), b = (0.5, 0.5): a0 <= 0.3 / 0.5 keeps b, a = (0.6, 0.4)."""
    space = factored(np.ones((2, 2)), upper_kt=np.array([[0.3, 1.0], [1.0, 1.0]]))
    projected = space.project(np.array([0.8, 0.2, 0.5, 0.5]))
    np.testing.assert_allclose(projected, [0.6, 0.4, 0.5, 0.5], atol=1e-12)


def test_repair_moves_the_task_weights_when_the_concept_box_is_empty() -> None:
    """Caps 0.1 on the diagonal at b = (0.5, 0.5) leave a <= (0.2, 0.2): b moves instead, b0 <= 0.1 / 0.9."""
    space = factored(np.ones((2, 2)), upper_kt=np.array([[0.1, 1.0], [1.0, 0.1]]))
    np.testing.assert_allclose(
        space.project(np.array([0.9, 0.1, 0.5, 0.5])), [0.9, 0.1, 1 / 9, 8 / 9], atol=1e-12
    )


def test_an_empty_task_gets_weight_zero_without_numpy_warnings() -> None:
    """A task with no samples: its weight is 0 in repairs and samples, and the divisions by it stay silent."""
    space = factored(np.array([[3.0, 0.0, 1.0], [1.0, 0.0, 2.0]]), upper_kt=0.5)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wild = np.concatenate([[[0.9, 0.1, 0.0, 0.0, 1.0]], rng.normal(size=(30, 5))])
        projected = space.project_many(wild)
        samples = space.sample(30, rng)
    for points in (projected, samples):
        assert space.feasible_mask(points).all() and np.all(points[:, 3] == 0.0)
    np.testing.assert_allclose(projected[0], [0.5, 0.5, 0.0, 0.0, 1.0], atol=1e-12)


# ----- projection ----------------------------------------------------------------------------------------


def test_projection_keeps_feasible_points_row_by_row() -> None:
    """Feasible rows come back unchanged, one output row per input row."""
    space = factored(np.array([[42.0, 32.0, 26.0], [14.0, 16.0, 3.0]]), upper_kt=0.45)
    inside = space.sample(20, np.random.default_rng(3))
    inside = inside[np.abs(inside - space.parametrization.anchor_d).max(axis=1) > 1e-3]
    assert len(inside) > 10 and space.feasible_mask(inside).all()
    projected = space.parametrization.project_many(inside)
    assert projected.shape == inside.shape
    np.testing.assert_allclose(projected, inside, atol=1e-12)


def test_projection_reads_negative_weights_as_zero() -> None:
    """a = (-0.5, 0.3, 0.3) is read as (0, 0.3, 0.3), whose simplex projection adds 0.4 / 3 to each."""
    space = factored(np.ones((3, 2)))
    expected = [2 / 15, 13 / 30, 13 / 30, 0.5, 0.5]
    np.testing.assert_allclose(space.project(np.array([-0.5, 0.3, 0.3, 0.5, 0.5])), expected, atol=1e-12)


def test_projection_under_tight_caps_keeps_each_point_its_own_direction() -> None:
    """Epoch caps 1.2x the counts leave a sliver around the anchor: repairs stay distinct, on their input's
    side of the anchor and no farther from the input than the anchor is."""
    counts = np.array([[42.0, 32.0, 26.0], [14.0, 16.0, 3.0]])
    space = factored(counts, planned_samples=counts.sum(), max_epochs=1.2)
    anchor = space.parametrization.anchor_d
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.dirichlet(np.ones(2), 200), rng.dirichlet(np.ones(3), 200)], axis=1)
    out = space.project_many(p)
    assert out.shape == p.shape and space.feasible_mask(out).all()
    towards, away = out - anchor, p - anchor
    cos = (towards * away).sum(axis=1) / (np.linalg.norm(towards, axis=1) * np.linalg.norm(away, axis=1))
    assert np.mean(cos > 0) >= 0.85
    assert len(np.unique(np.round(out, 7), axis=0)) >= 180
    assert np.all(np.linalg.norm(out - p, axis=1) <= 1.05 * np.linalg.norm(away, axis=1))


# ----- the anchor: first-pass repair, SLSQP search, error ------------------------------------------------


def test_anchor_is_feasible_when_the_natural_point_cannot_be_repaired() -> None:
    """Near-uniform diagonal lower bounds: only points near uniform x uniform are feasible."""
    space = diagonal([1 / 3] * 3, 0.01)
    anchor = space.parametrization.anchor_d
    assert space.is_feasible(anchor)
    np.testing.assert_allclose(anchor, 1 / 3, atol=0.05)


def test_anchor_from_random_starts_is_reproducible() -> None:
    """The same space built twice has the same anchor and the same projections."""
    first, second = diagonal([0.5, 0.3, 0.2], 0.01), diagonal([0.5, 0.3, 0.2], 0.01)
    assert first.is_feasible(first.parametrization.anchor_d)
    np.testing.assert_array_equal(first.parametrization.anchor_d, second.parametrization.anchor_d)
    wild = np.random.default_rng(1).normal(size=(5, 6))
    np.testing.assert_array_equal(first.project_many(wild), second.project_many(wild))


@pytest.mark.parametrize(
    ("alpha", "eps", "capped"),
    [
        ([0.5, 0.3, 0.2], 1e-4, False),
        ([0.7, 0.2, 0.1], 3e-5, False),
        ([0.83, 0.167, 0.003], 3e-5, False),
        ([0.5, 0.3, 0.2], 1e-4, True),
    ],
)
def test_search_finds_the_thin_feasible_set_that_repairs_miss(alpha: list[float], eps: float,
                                                              capped: bool) -> None:
    """The feasible set is a speck around a = b = alpha; the search finds it, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = diagonal(alpha, eps, capped)
    anchor = space.parametrization.anchor_d
    assert space.is_feasible(anchor)
    np.testing.assert_allclose(anchor, alpha + alpha, atol=0.01)
    cells = space.cell_weights(anchor)[0]
    assert np.all(np.diag(cells) >= ((1 - eps) * np.asarray(alpha)) ** 2 - 1e-9)


@pytest.mark.parametrize("alpha", [[0.5, 0.3, 0.2], [0.6, 0.25, 0.15]])
def test_truly_infeasible_space_raises_the_documented_error(alpha: list[float]) -> None:
    """eps < 0 needs sum sqrt(a_i b_i) > 1: no outer product fits, though each block's boxes do."""
    lower = np.diag((1.001 * np.asarray(alpha)) ** 2)
    assert lower.sum() < 1  # the implied boxes pass the per-block sum check
    with pytest.raises(MixAtlasError) as error:
        diagonal(alpha, -1e-3)
    assert str(error.value) == INFEASIBLE
    with pytest.raises(MixAtlasError, match=f"^{re.escape(INFEASIBLE)}$"):
        FactoredParametrization(("a", "b"), ("x", "y"), np.ones((2, 2)), np.diag([0.26] * 2), np.ones((2, 2)))
