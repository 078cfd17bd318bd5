"""Noise-aware search: the replicate noise model, replicate proposals, the robust recommendation rule,
the mixing-law fit, P(beats a reference), and RegMix's pool-mode design."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from mixatlas.search.base import History
from mixatlas.search.gp_ucb import GPUCB
from mixatlas.search.mixing_law import fit_mixing_law
from mixatlas.search.regmix import RegMix
from mixatlas.search.surrogate import fit_noise_model, fit_surrogate
from mixatlas.space import MixtureSpace

DOMAINS = ["a", "b", "c"]
OPTIMUM = np.array([0.5, 0.3, 0.2])


def bowl(params_nd: np.ndarray) -> np.ndarray:
    """(n,) a smooth utility on the 3-simplex with its maximum at OPTIMUM; range ~0.6."""
    return -((np.atleast_2d(params_nd) - OPTIMUM) ** 2).sum(axis=1)


def test_noise_model_recovers_heteroscedastic_noise_from_replicates() -> None:
    space = MixtureSpace.from_domains(DOMAINS)
    rng = np.random.default_rng(0)
    mixtures = space.sample(14, rng)
    true_sd = 0.01 + 0.2 * mixtures[:, 0]  # noise grows with the first domain's weight
    params = np.repeat(mixtures, 6, axis=0)
    utility = bowl(params) + np.repeat(true_sd, 6) * rng.standard_normal(len(params))
    model = fit_noise_model(params, utility)
    assert model is not None
    estimated = np.sqrt(model.variance(mixtures))
    ratio = estimated / true_sd
    assert spearmanr(estimated, true_sd).statistic > 0.7
    assert np.median(ratio) > 0.6 and np.median(ratio) < 1.6
    # the utility GP uses it: predicted noise is larger where the first domain is heavy
    surrogate = fit_surrogate(params, utility, variants=("gp",))
    sd = surrogate.noise_sd(np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]]))
    assert sd[0] > 2 * sd[1]
    # without replicates there is no noise model
    assert fit_noise_model(mixtures, bowl(mixtures)) is None


def _history(noise: float, seed: int, n: int = 14, budget: int = 30) -> History:
    space = MixtureSpace.from_domains(DOMAINS)
    rng = np.random.default_rng(seed)
    params = space.sample(n, rng)
    utility = bowl(params) + noise * rng.standard_normal(n)
    return History(space, params, utility, np.empty((0, 3)), budget, seed)


def _is_replicate(history: History, point: np.ndarray) -> bool:
    return bool(np.any(np.all(np.isclose(history.done_params, point[None], rtol=0, atol=1e-12), axis=1)))


def test_replicates_are_proposed_when_noise_dominates_and_not_otherwise() -> None:
    noisy = [_history(noise=0.3, seed=s) for s in range(3)]
    clean = [_history(noise=0.001, seed=s) for s in range(2)]
    opt = dict(n_pool=200, n_init=2, variants=("gp", "gp-noisy"))
    noisy_reps = [_is_replicate(h, GPUCB(**opt).ask(h, 2)[0]) for h in noisy]
    clean_reps = [_is_replicate(h, p) for h in clean for p in GPUCB(**opt).ask(h, 2)]
    assert sum(noisy_reps) >= 2
    assert not any(clean_reps)
    # a batch holds at most one replicate; pools never replicate (a row has one recorded result)
    batch = GPUCB(**opt).ask(noisy[0], 3)
    assert sum(_is_replicate(noisy[0], p) for p in batch) <= 1
    assert not any(_is_replicate(noisy[0], p) for p in GPUCB(**opt, replicates=False).ask(noisy[0], 2))


def test_lcb_rule_beats_best_observed_and_posterior_mean_on_a_noisy_problem() -> None:
    regret = {"lcb": [], "mean": [], "observed": []}
    for seed in range(6):
        history = _history(noise=0.05, seed=seed, n=16)
        optimizer = GPUCB()
        for rule in regret:
            regret[rule].append(float(-bowl(optimizer.recommend_by(history, rule).params)[0]))
    mean = {rule: float(np.mean(v)) for rule, v in regret.items()}
    assert mean["lcb"] < 0.8 * mean["observed"]
    assert mean["lcb"] < 0.8 * mean["mean"]
    rec = GPUCB().recommend(_history(noise=0.05, seed=0, n=16))
    assert rec.source.startswith("posterior LCB") and rec.sd is not None and rec.sd > 0


def test_probability_better_from_the_joint_posterior() -> None:
    history = _history(noise=0.01, seed=1, n=16)
    optimizer = GPUCB()
    good, bad = OPTIMUM, np.array([0.05, 0.05, 0.9])
    p = optimizer.probability_better(history, np.stack([good, bad]), bad)
    assert p[0] > 0.95 and abs(p[1] - 0.5) < 1e-6  # a mixture vs itself: exactly a coin flip


def test_mixing_law_fit_recovers_a_law() -> None:
    rng = np.random.default_rng(3)
    w = MixtureSpace.from_domains(["a", "b", "c", "d"]).sample(40, rng)
    t = np.array([-1.5, 0.5, -0.8, 0.2])
    utility = -(2.0 + 0.7 * np.exp(w @ t))
    law = fit_mixing_law(w, utility)
    fresh = MixtureSpace.from_domains(["a", "b", "c", "d"]).sample(20, rng)
    assert np.abs(law.predict(fresh) - -(2.0 + 0.7 * np.exp(fresh @ t))).max() < 0.02


def test_regmix_pool_mode_draws_its_design_from_the_pool_at_random() -> None:
    rng = np.random.default_rng(0)
    rows = MixtureSpace.from_domains(DOMAINS).sample(20, rng)
    space = MixtureSpace.from_domains(DOMAINS, candidates=rows)
    done = rows[:5]
    counts = np.zeros(len(rows), dtype=int)
    for seed in range(60):
        history = History(space, done, bowl(done), np.empty((0, 3)), 10, seed)
        for params in RegMix().ask(history, 3):
            index = space.candidate_index(params)
            assert index is not None and index >= 5  # a pool row, not one already evaluated
            counts[index] += 1
    # uniform over the 15 open rows: every one drawn (expected 12 each)
    assert counts[:5].sum() == 0 and counts[5:].min() >= 3


def test_a_replicate_trial_gets_a_new_seed_even_with_shared_seeds(tmp_path) -> None:
    from mixatlas.objectives.base import Target
    from mixatlas.search.loop import trial_seed
    from mixatlas.search.study import Study

    space = MixtureSpace.from_domains(DOMAINS)
    study = Study.create(
        tmp_path / "s.db",
        space=space,
        objective_spec={"kind": "callable", "function": "x:y"},
        target=Target.parse("loss", minimize=True),
        method="gp-ucb",
        budget=4,
        seed=11,
        meta={"trial_seeds": "shared"},
    )
    first, other, replicate = (study.add_trial(p) for p in (OPTIMUM, np.array([0.2, 0.2, 0.6]), OPTIMUM))
    assert trial_seed(study, first) == trial_seed(study, other) == 11
    assert trial_seed(study, replicate) == 12
