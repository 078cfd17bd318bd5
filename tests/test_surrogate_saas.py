"""The fully Bayesian ("saas") surrogate variant: NUTS hyperparameter samples, mixture predictions, LOO."""

import numpy as np
import pytest

from mixatlas.errors import MixAtlasError
from mixatlas.search.surrogate import fit_surrogate, loo_log_density


def _problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, callable]:
    """4 domains; the utility depends on the first two weights only (two dimensions are irrelevant)."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(4), n)

    def truth(w: np.ndarray) -> np.ndarray:
        return np.sin(3 * w[:, 0]) + w[:, 1]

    return w, truth(w) + 0.05 * rng.standard_normal(n), truth


@pytest.fixture(scope="module")
def saas():
    w, y, truth = _problem(20)
    return fit_surrogate(w, y, variants=("saas",)), w, y, truth


def test_saas_learns_the_function_and_averages_its_samples(saas):
    surrogate, _, _, truth = saas
    assert surrogate.variant == "saas" and surrogate.fully_bayesian
    test = np.random.default_rng(1).dirichlet(np.ones(4), 300)
    mean, sd = surrogate.predict(test)
    rmse = float(np.sqrt(np.mean((mean - truth(test)) ** 2)))
    assert rmse < 0.5 * float(np.std(truth(test)))  # much better than predicting the mean
    assert np.all(sd > 0)
    # the joint posterior is the mixture over samples: its diagonal is predict's variance
    joint_mean, cov = surrogate.joint(test[:5])
    np.testing.assert_allclose(joint_mean, mean[:5], rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), sd[:5], rtol=1e-6)
    # noise estimated near the true 0.05, not interpolated away
    assert 0.01 < float(surrogate.noise_sd(test[:1])[0]) < 0.2


def test_saas_believer_collapses_uncertainty_where_believed(saas):
    surrogate, *_ = saas
    far = np.array([[0.0, 0.0, 0.5, 0.5], [0.7, 0.1, 0.1, 0.1]])
    _, before = surrogate.predict(far)
    _, after = surrogate.believe(far).predict(far)
    assert np.all(after < before)


def test_saas_loo_density_is_a_proper_mixture_score(saas):
    """LOO of the fully Bayesian model averages densities over samples: finite, and better than the LOO
    of a model whose utilities were shuffled (no signal left to predict)."""
    surrogate, w, y, _ = saas
    folds = np.arange(len(y))
    good = loo_log_density(surrogate, w, y, folds)
    shuffled = np.random.default_rng(3).permutation(y)
    bad = loo_log_density(surrogate, w, shuffled, folds)
    assert np.isfinite(good) and good > bad


def test_unknown_variant_is_one_line_error():
    w, y, _ = _problem(8)
    with pytest.raises(MixAtlasError, match=r"unknown surrogate variant 'sass'.*known: gp"):
        fit_surrogate(w, y, variants=("gp", "sass"))
