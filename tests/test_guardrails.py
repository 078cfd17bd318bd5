"""Guarded search: guardrails parse, and hold at the recommendation on an analytic problem."""

from __future__ import annotations

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.search.base import History
from mixatlas.search.guardrails import Guard, GuardedGPUCB, GuardedHistory
from mixatlas.space import MixtureSpace

A = np.array([0.85, 0.05, 0.05, 0.05])  # the target's peak
B = np.array([0.05, 0.05, 0.45, 0.45])  # the guard metric's peak


def target(w: np.ndarray) -> np.ndarray:
    return -((np.atleast_2d(w) - A) ** 2).sum(axis=1)


def guard_metric(w: np.ndarray) -> np.ndarray:
    return -((np.atleast_2d(w) - B) ** 2).sum(axis=1)


def run_guarded(seed: int, budget: int = 10) -> tuple[np.ndarray, object]:
    """The guarded search on a pool of 150 mixtures; returns the recommended params and recommendation."""
    pool = np.random.default_rng(3).dirichlet(np.ones(4), size=150)
    space = MixtureSpace.from_domains(["a", "b", "c", "d"], candidates=pool)
    guards = (Guard.parse("g>=-0.05"),)
    optimizer = GuardedGPUCB(p_feasible=0.9)
    done = np.empty((0, 4))
    while len(done) < budget:
        gh = _history(space, done, guards, budget, seed)
        done = np.vstack([done, optimizer.ask(gh, 1)])
    result = optimizer.recommend(_history(space, done, guards, budget, seed))
    return result.recommendation.params, result


def _history(space: MixtureSpace, done: np.ndarray, guards: tuple, budget: int, seed: int) -> GuardedHistory:
    history = History(space, done, target(done) if len(done) else np.empty(0), np.empty((0, 4)), budget, seed)
    values = guard_metric(done)[:, None] if len(done) else np.empty((0, 1))
    return GuardedHistory(history, guards, values)


def test_guardrail_holds_at_the_recommendation_and_binds() -> None:
    reference = np.full(4, 0.25)  # the natural mixture of equal counts
    unguarded_best = A
    assert guard_metric(unguarded_best)[0] - guard_metric(reference)[0] < -0.05  # the guard is binding
    held, gains = [], []
    for seed in range(2):
        params, result = run_guarded(seed)
        held.append(Guard.parse("g>=-0.05").holds(guard_metric(params)[0], guard_metric(reference)[0]))
        gains.append(target(params)[0] - target(reference)[0])
        assert result.p_all >= 0.9
        assert set(result.guard_probability) == {"g>=-0.05"}
    assert all(held)
    assert np.mean(gains) > 0.05  # it still improves the target over the natural mixture


def test_guard_specs() -> None:
    guard = Guard.parse("ocr/anls>=-0.01")
    assert (guard.metric, guard.op, guard.delta) == ("ocr/anls", ">=", -0.01)
    assert guard.holds(0.495, 0.5) and not guard.holds(0.48, 0.5)
    loss = Guard.parse("val/loss <= 0.02")
    assert loss.holds(1.01, 1.0) and not loss.holds(1.05, 1.0)
    assert loss.probability(np.array([0.02]), np.array([0.1]))[0] == pytest.approx(0.5)
    with pytest.raises(MixAtlasError, match="METRIC>=DELTA"):
        Guard.parse("ocr/anls > 0.1")
