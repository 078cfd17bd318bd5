"""Initial designs and shared proposal helpers: space-filling points on the feasible set of a space.

Every method derives its randomness from (study seed, trials started so far, method salt), so a resumed
study proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import zlib

import numpy as np

from mixatlas.search.base import History
from mixatlas.space import MixtureSpace


def history_rng(history: History, salt: str) -> np.random.Generator:
    """A generator determined by the study seed, the number of trials started and the method name."""
    return np.random.default_rng([history.seed, history.n_started, zlib.crc32(salt.encode())])


def dirichlet_rows(alpha_nd: np.ndarray, space: MixtureSpace, rng: np.random.Generator) -> np.ndarray:
    """(n, d) draws, row i from Dirichlet(alpha_nd[i]) on each simplex block of `space` (not projected).

    Drawn through normalized Gamma variates so every row can have its own concentration.
    """
    alpha = np.maximum(np.asarray(alpha_nd, dtype=np.float64), 1e-4)
    gamma = rng.gamma(alpha)
    out = np.empty_like(gamma)
    for block in space.simplex_blocks:
        part = gamma[:, block]
        total = part.sum(axis=1, keepdims=True)
        # Tiny concentrations can underflow every coordinate to 0: give that row its largest alpha.
        fallback = np.eye(part.shape[1])[alpha[:, block].argmax(axis=1)]
        out[:, block] = np.where(total > 0, part / np.where(total > 0, total, 1.0), fallback)
    return out


def feasible(space: MixtureSpace, params_nd: np.ndarray) -> np.ndarray:
    """Rows of (n, d) made feasible: kept when they already are, projected otherwise."""
    params = np.atleast_2d(np.asarray(params_nd, dtype=np.float64)).copy()
    bad = ~space.feasible_mask(params)
    if bad.any():
        params[bad] = space.project_many(params[bad])
    return params


def sobol_simplex(space: MixtureSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) quasi-random points, uniform on each parameter simplex, then made feasible.

    A scrambled Sobol sequence on the unit cube is mapped to the simplex by normalized -log(u)
    (the exponential-spacings construction of a flat Dirichlet), so the design inherits its low
    discrepancy.
    """
    from scipy.stats import qmc

    u = qmc.Sobol(d=space.dim, scramble=True, seed=rng).random(n)
    expo = -np.log(np.clip(u, 1e-12, 1.0))
    points = np.empty_like(expo)
    for block in space.simplex_blocks:
        points[:, block] = expo[:, block] / expo[:, block].sum(axis=1, keepdims=True)
    return feasible(space, points)


def used_candidate_mask(space: MixtureSpace, history: History) -> np.ndarray:
    """(c,) bool over the pool: rows already evaluated or pending."""
    assert space.candidates is not None
    used = np.zeros(len(space.candidates), dtype=bool)
    for params in (history.done_params, history.pending_params):
        for row in np.atleast_2d(params):
            if row.size:
                index = space.candidate_index(row)
                if index is not None:
                    used[index] = True
    return used


def open_candidates(space: MixtureSpace, history: History) -> np.ndarray:
    """Indices of pool rows neither evaluated nor pending (all rows once every row has been used)."""
    unused = np.flatnonzero(~used_candidate_mask(space, history))
    return unused if len(unused) else np.arange(len(space.candidates))


def maximin_pick(
    pool_md: np.ndarray, existing_nd: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedily pick `n` rows of `pool_md` (m, d), each farthest from the existing and already picked
    points (first pick random when nothing exists). Returns indices (n,)."""
    existing = np.atleast_2d(existing_nd) if np.size(existing_nd) else np.empty((0, pool_md.shape[1]))
    min_dist = np.full(len(pool_md), np.inf)
    for point in existing:
        min_dist = np.minimum(min_dist, ((pool_md - point[None]) ** 2).sum(axis=1))
    picks: list[int] = []
    for _ in range(min(n, len(pool_md))):
        index = int(rng.integers(len(pool_md))) if not np.isfinite(min_dist).any() else int(min_dist.argmax())
        picks.append(index)
        min_dist = np.minimum(min_dist, ((pool_md - pool_md[index][None]) ** 2).sum(axis=1))
        min_dist[index] = -np.inf
    return np.asarray(picks, dtype=int)


def space_filling(history: History, n: int, rng: np.random.Generator, n_pool: int = 2048) -> list[np.ndarray]:
    """`n` space-filling feasible points away from the done and pending ones: greedy maximin over a
    Sobol-on-simplex pool (or over the unused rows of a finite pool)."""
    space = history.space
    existing = np.concatenate(
        [np.atleast_2d(a).reshape(-1, space.dim) for a in (history.done_params, history.pending_params)]
    )
    if space.candidates is not None:
        open_rows = open_candidates(space, history)
        picks = maximin_pick(space.candidates[open_rows], existing, n, rng)
        chosen = [space.candidates[open_rows[i]].copy() for i in picks]
        return chosen + [
            space.candidates[i].copy() for i in rng.integers(len(space.candidates), size=n - len(chosen))
        ]
    pool = sobol_simplex(space, max(n_pool, 4 * n), rng)
    return [pool[i] for i in maximin_pick(pool, existing, n, rng)]


def perturb(
    space: MixtureSpace, params_nd: np.ndarray, scale: float | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(n, d) feasible random neighbours of (n, d) points: multiplicative log-normal noise of size
    `scale` per row, a little mass moved to random cells (so zero cells can switch on), then projected."""
    scale_n = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(params_nd),))[:, None]
    noisy = params_nd * np.exp(scale_n * 3.0 * rng.standard_normal(params_nd.shape))
    spread = space.sample(len(params_nd), rng, alpha=1.0)
    mixed = np.empty_like(noisy)
    for block in space.simplex_blocks:
        part = noisy[:, block] / np.maximum(noisy[:, block].sum(axis=1, keepdims=True), 1e-300)
        mixed[:, block] = (1 - scale_n * 0.3) * part + scale_n * 0.3 * spread[:, block]
    return space.project_many(mixed)
