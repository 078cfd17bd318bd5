"""MixtureSpace: modes, constraints (bounds, frozen cells, epoch cap), projection, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.space import MODES, Mixture, MixtureSpace, project_box_simplex

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
CONCEPTS = tuple(f"c{i}" for i in range(4))
COUNTS = np.array(
    [
        [400.0, 100.0, 50.0, 30.0, 300.0],
        [200.0, 600.0, 20.0, 10.0, 150.0],
        [100.0, 50.0, 200.0, 250.0, 80.0],
        [50.0, 10.0, 120.0, 90.0, 40.0],
    ]
)


def constrained(mode: str) -> MixtureSpace:
    """A space with active lower bounds, an upper bound, a frozen cell (where representable) and a cap."""
    upper = np.full(COUNTS.shape, 0.5)
    upper[1, 1] = 0.12
    options = {"lower_kt": 0.002, "upper_kt": upper, "planned_samples": COUNTS.sum(), "max_epochs": 2.0}
    if mode == "joint":
        options["frozen"] = {("c0", "vqa"): 0.06}
    if mode == "factored":  # freeze a value an outer product can reach under these bounds
        free = MixtureSpace(CONCEPTS, TASKS, COUNTS, mode=mode, **options)
        options["frozen"] = {"c0/vqa": float(free.cell_weights(free.natural_params())[0, 0, 4])}
    return MixtureSpace(CONCEPTS, TASKS, COUNTS, mode=mode, **options)


def assert_exactly_feasible(space: MixtureSpace, params_nd: np.ndarray) -> None:
    """Sum to 1 within 1e-9, cell bounds, frozen cells and the epoch cap, checked from first principles."""
    for params in np.atleast_2d(params_nd):
        w = space.to_mixture(params).weights_kt
        raw = space.cell_weights(params)[0]
        assert abs(raw.sum() - 1.0) <= 1e-9
        assert np.all(raw >= space.user_lower_kt - 1e-9)
        assert np.all(raw <= space.user_upper_kt + 1e-9)
        assert np.all(raw * space.planned_samples <= space.counts_kt * space.max_epochs * (1 + 1e-9) + 1e-9)
        for (c, t), weight in space.frozen.items():
            assert abs(raw[c, t] - weight) <= 1e-9
        assert np.allclose(w, raw, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_sample_project_and_references_are_exactly_feasible(mode: str) -> None:
    space = constrained(mode)
    rng = np.random.default_rng(0)
    for alpha in (1.0, 0.1):
        samples = space.sample(300, rng, alpha=alpha)
        assert samples.shape == (300, space.dim)
        assert_exactly_feasible(space, samples)
    projected = space.project_many(rng.normal(size=(50, space.dim)))
    assert_exactly_feasible(space, projected)
    assert_exactly_feasible(space, np.stack([space.natural_params(), space.uniform_params()]))
    # a feasible point is its own projection
    assert np.allclose(space.project(samples[0]), samples[0], atol=1e-9)


def test_dimensions_and_mappings_of_each_mode() -> None:
    spaces = {mode: MixtureSpace(CONCEPTS, TASKS, COUNTS, mode=mode) for mode in MODES}
    assert {m: s.dim for m, s in spaces.items()} == {"task": 5, "concept": 4, "factored": 9, "joint": 20}
    task = spaces["task"]
    w = task.to_mixture(np.array([0.5, 0.5, 0, 0, 0])).weights_kt
    # inside a task, concepts keep the natural split of the counts
    assert np.allclose(w[:, 0], 0.5 * COUNTS[:, 0] / COUNTS[:, 0].sum())
    uniform_within = MixtureSpace(CONCEPTS, TASKS, COUNTS, mode="concept", within="uniform")
    assert np.allclose(uniform_within.to_mixture(np.array([1.0, 0, 0, 0])).weights_kt[0], 0.2)
    factored = spaces["factored"]
    a, b = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    assert np.allclose(factored.to_mixture(np.concatenate([a, b])).weights_kt, np.outer(a, b))
    for space in spaces.values():
        params = space.sample(1, np.random.default_rng(1))[0]
        assert np.allclose(space.params_of(space.to_mixture(params)), params, atol=1e-9)


def test_params_of_rejects_unrepresentable_mixture() -> None:
    task = MixtureSpace(CONCEPTS, TASKS, COUNTS, mode="task")
    weights = np.zeros((4, 5))
    weights[3, 0] = 1.0  # all weight on one concept inside a task: not the natural split
    with pytest.raises(MixAtlasError, match="not representable"):
        task.params_of(Mixture(CONCEPTS, TASKS, weights))


def test_epoch_cap_and_empty_cells_bound_the_weights() -> None:
    counts = COUNTS.copy()
    counts[2, 2] = 0.0
    space = MixtureSpace(CONCEPTS, TASKS, counts, planned_samples=counts.sum(), max_epochs=1.5)
    assert space.upper_kt[2, 2] == 0.0
    assert np.allclose(space.upper_kt, np.minimum(1.0, 1.5 * counts / counts.sum()))
    samples = space.sample(200, np.random.default_rng(2), alpha=0.05)
    assert np.all(space.cell_weights(samples)[:, 2, 2] == 0.0)


def test_infeasible_constraints_raise_one_line_errors() -> None:
    with pytest.raises(MixAtlasError, match="infeasible"):
        MixtureSpace(CONCEPTS, TASKS, COUNTS, upper_kt=0.01)  # 20 cells x 0.01 < 1
    with pytest.raises(MixAtlasError, match="exceeds its cap"):
        MixtureSpace(CONCEPTS, TASKS, COUNTS, lower_kt=0.01, planned_samples=1e6, max_epochs=1.0)
    with pytest.raises(MixAtlasError, match="planned_samples and max_epochs"):
        MixtureSpace(CONCEPTS, TASKS, COUNTS, max_epochs=2.0)
    with pytest.raises(MixAtlasError, match="unknown concept or task"):
        MixtureSpace(CONCEPTS, TASKS, COUNTS, frozen={"c9/ocr": 0.1})
    with pytest.raises(MixAtlasError, match="mode"):
        MixtureSpace(CONCEPTS, TASKS, COUNTS, mode="diagonal")


def test_dict_round_trip_keeps_constraints_and_candidates() -> None:
    space = constrained("factored")
    again = MixtureSpace.from_dict(space.to_dict())
    assert again.describe() == space.describe()
    assert np.array_equal(again.lower_kt, space.lower_kt) and np.array_equal(again.upper_kt, space.upper_kt)
    pool = MixtureSpace.from_domains(["a", "b", "c"], candidates=np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]))
    again = MixtureSpace.from_dict(pool.to_dict())
    assert np.array_equal(again.candidates, pool.candidates)
    assert "pool of 2 candidates" in again.describe()


def test_pool_space_feasible_set_is_the_pool() -> None:
    rows = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    space = MixtureSpace.from_domains(["a", "b", "c"], candidates=rows)
    assert space.tasks == ("all",) and space.dim == 3
    assert space.is_feasible(rows[2]) and not space.is_feasible(np.array([0.3, 0.3, 0.4]))
    assert np.array_equal(space.project(np.array([0.9, 0.05, 0.05])), rows[1])
    assert all(space.candidate_index(p) is not None for p in space.sample(5, np.random.default_rng(0)))


def test_box_simplex_projection_is_the_euclidean_projection() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    lower, upper = np.array([0.0, 0.1, 0.0, 0.05]), np.array([0.5, 0.6, 0.2, 1.0])
    y = rng.normal(size=4)
    x = project_box_simplex(y[None], lower, upper)[0]
    reference = minimize(
        lambda z: ((z - y) ** 2).sum(),
        np.full(4, 0.25),
        method="SLSQP",
        bounds=list(zip(lower, upper, strict=True)),
        constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}],
        options={"ftol": 1e-14},
    ).x
    assert abs(x.sum() - 1) < 1e-12 and np.allclose(x, reference, atol=1e-6)
