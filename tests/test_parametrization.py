"""One Parametrization per search mode: params -> mixture -> params, feasibility, chain rule, names."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.space import (
    MODES,
    PARAMETRIZATIONS,
    ConceptParametrization,
    FactoredParametrization,
    JointParametrization,
    MixtureSpace,
    TaskParametrization,
)

TASKS = ("captioning", "ocr", "vqa")
CONCEPTS = ("charts", "photos", "docs", "maps")
COUNTS = np.array([[40.0, 10.0, 30.0], [20.0, 0.0, 15.0], [10.0, 50.0, 20.0], [5.0, 1.0, 12.0]])


def space(mode: str, within: str = "natural", **constraints: object) -> MixtureSpace:
    return MixtureSpace(CONCEPTS, TASKS, COUNTS, mode=mode, within=within, **constraints)


def test_registry_names_each_mode_once() -> None:
    assert tuple(PARAMETRIZATIONS) == MODES == ("task", "concept", "factored", "joint")
    assert all(cls.name == mode for mode, cls in PARAMETRIZATIONS.items())
    assert {type(space(mode).parametrization) for mode in MODES} == {
        TaskParametrization, ConceptParametrization, FactoredParametrization, JointParametrization}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("within", ["natural", "uniform"])
def test_params_to_mixture_to_params_is_the_identity_on_feasible_points(mode: str, within: str) -> None:
    s = space(mode, within, upper_kt=0.4)
    draws = s.sample(64, np.random.default_rng(0), alpha=0.7)
    assert draws.shape == (64, s.dim) and s.feasible_mask(draws).all()
    for params in draws:
        mixture = s.to_mixture(params)
        assert mixture.weights_kt.shape == (4, 3) and mixture.weights_kt[1, 1] == 0.0  # the empty cell
        np.testing.assert_allclose(s.params_of(mixture), params, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_projection_lands_inside_and_keeps_feasible_points(mode: str) -> None:
    s = space(mode, upper_kt=0.35, planned_samples=100.0, max_epochs=2.0)
    wild = np.random.default_rng(1).normal(size=(200, s.dim))
    projected = s.project_many(wild)
    assert s.feasible_mask(projected).all()
    cells = s.cell_weights(projected)
    assert np.all(cells <= 0.35 + 1e-9) and np.all(cells * 100.0 <= COUNTS * 2.0 + 1e-7)
    if s.parametrization.exact_projection:
        np.testing.assert_allclose(s.project_many(projected), projected, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_params_gradient_is_the_chain_rule_of_cell_weights(mode: str) -> None:
    s = space(mode)
    rng = np.random.default_rng(2)
    params = s.sample(3, rng)
    grad_nkt = rng.normal(size=(3, 4, 3))  # gradient of f(W) = sum(G * W) for each row
    analytic = s.params_gradient(params, grad_nkt)
    eps = 1e-6
    for i in range(s.dim):
        step = np.zeros(s.dim)
        step[i] = eps
        f_up = (grad_nkt * s.cell_weights(params + step)).sum(axis=(1, 2))
        f_down = (grad_nkt * s.cell_weights(params - step)).sum(axis=(1, 2))
        np.testing.assert_allclose(analytic[:, i], (f_up - f_down) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_each_mode_names_what_it_weighs_and_what_a_recipe_records() -> None:
    mixture = space("joint").to_mixture(space("joint").natural_params())
    names, weights = space("task").parts(mixture)
    assert names == list(TASKS) and np.allclose(weights, COUNTS.sum(axis=0) / COUNTS.sum())
    names, weights = space("concept").parts(mixture)
    assert names == list(CONCEPTS) and np.allclose(weights, COUNTS.sum(axis=1) / COUNTS.sum())
    for mode in ("joint", "factored"):
        names, weights = space(mode).parts(mixture)
        assert names[:2] == ["charts/captioning", "charts/ocr"] and weights.shape == (12,)
    assert [space(mode).parametrization.part for mode in MODES] == ["task", "concept", "cell", "cell"]
    assert space("task", "uniform").settings() == {"mode": "task", "within": "uniform"}
    assert space("joint", "uniform").settings() == {"mode": "joint"}
    assert [space(mode).parametrization.free_cells for mode in MODES] == [False, False, False, True]


def test_a_parametrization_stands_alone_on_cell_bounds() -> None:
    lower, upper = np.zeros_like(COUNTS), np.where(COUNTS > 0, 0.5, 0.0)
    task = TaskParametrization(CONCEPTS, TASKS, COUNTS, lower, upper, within="uniform")
    # uniform split: captioning's weight spreads over its 4 non-empty concepts, ocr's over 3
    cells = task.cell_weights(np.array([0.5, 0.3, 0.2]))[0]
    np.testing.assert_allclose(cells[:, 0], 0.125)
    np.testing.assert_allclose(cells[:, 1], [0.1, 0.0, 0.1, 0.1])
    factored = FactoredParametrization(CONCEPTS, TASKS, COUNTS, lower, upper)
    assert factored.dim == 7 and factored.simplex_blocks == [slice(0, 4), slice(4, 7)]
    assert factored.feasible_mask(factored.anchor_d[None])[0]
    np.testing.assert_allclose(factored.cell_weights(factored.anchor_d)[0].sum(), 1.0)
