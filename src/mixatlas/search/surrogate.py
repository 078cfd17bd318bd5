"""GP surrogates of a mixture utility: composition-aware inputs, noise from replicates, a data-mixing-law
mean, and the choice among model variants by leave-one-out on the study's own trials.

Shared by GP-UCB and the multi-fidelity search: `fit_surrogate(params, utility)` -> `Surrogate`, whose
`predict` / `joint` / `noise_sd` / `believe` work in the utility's own units on raw (n, d) parameters.

Inputs. Each simplex block goes through w -> sqrt(w): a composition lands on the positive orthant of the
unit sphere, where Euclidean distance is the Hellinger distance between mixtures (moving a cell from 0 to
1% counts as much as moving a large cell by a few points, as data-mixing returns behave), finite at zero
weights unlike log-ratios.

Variants (BoTorch `SingleTaskGP`, ARD RBF kernel with BoTorch's dimension-scaled log-normal lengthscale
prior, MAP hyperparameters):
  - "gp": constant mean, the GP on standardized utilities (BoTorch's default noise prior LogNormal(-4, 1)).
  - "law+gp": the data-mixing law a + s exp(c + t.w) fitted first (`mixing_law`), the GP (with an output
    scale under a Gamma(2, 4) prior, so it can shrink to nothing) on the residuals.
  - "additive": constant mean, kernel = additive 1-d RBFs + a full ARD RBF interaction term (each scaled),
    tried when d <= 10 (it costs one kernel per dimension).
  - "saas" (opt in, needs the `bayes` extra: JAX + NumPyro): fully Bayesian hyperparameters, BoTorch's
    `SaasFullyBayesianSingleTaskGP` (sparse axis-aligned subspace priors on the lengthscales, Eriksson &
    Jankowiak 2021) sampled by NUTS; predictions average over the `SAAS_SAMPLES` hyperparameter samples,
    so with 10-30 trials the uncertainty about the kernel itself is in the posterior. Seconds per fit.
The variant with the best mean leave-one-out log predictive density of the observed utilities wins; the
LOO predictions use the fitted hyperparameters, and the law is refitted without the held-out trial
(warm-started), so the law's flexibility is paid for. At most `LOO_FOLDS` held-out trials are scored.

Noise. Without replicates the noise is homoskedastic and learned with the GP (its prior above). When some
mixture has been evaluated more than once (a replicate: identical parameters, a new seed), the within-
mixture sample variances are the noise data: log s^2 (bias-corrected by psi(nu/2) - log(nu/2), with
known variance psi'(nu/2), nu = replicates - 1) is modelled by a GP over the inputs, and the utility GP
gets that predicted noise variance per observation (heteroskedastic, `train_Yvar`), as in the
"most likely heteroscedastic GP" of Kersting et al. (2007) with the replicate variances as its data.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.search.mixing_law import MixingLaw, fit_mixing_law

FIT_MAX_ITER = 150
LOO_FOLDS = 20
ADDITIVE_MAX_DIM = 10
VARIANTS = ("gp", "gp-noisy", "law+gp", "additive", "saas")
DEFAULT_VARIANTS = ("gp", "gp-noisy", "law+gp")  # "additive", "saas" cost more per fit: opt in
SAAS_WARMUP, SAAS_DRAWS, SAAS_THINNING = 128, 128, 8  # NUTS: 16 hyperparameter samples kept
NOISE_PRIOR = (-3.0, 1.5)  # LogNormal(loc, scale) of the noise variance in standardized units
NOISY_PRIOR = (-1.0, 0.75)  # the "gp-noisy" variant: noise ~ 1/3 of the variance (noise dominates)
LENGTHSCALE_FLOOR = 0.5  # lengthscales >= this x the design resolution (no wiggles between trials)
HETERO_MIN_GROUPS = 3
HETERO_MIN_DOF = 6.0


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. The GP's matrices are small (hundreds of rows), so
    thread synchronization costs more than it saves; on a shared machine it costs ~10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded_torch(seed: int = 0) -> Iterator[None]:
    """Run the block on torch's global RNG seeded with `seed`, restored afterwards. Building and fitting
    a GP draws from it (MultiTaskGP's task-kernel factor, BoTorch's restarts after a failed fit), so
    without this a fit depends on whatever ran before in the process, not only on its data."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def features(params_nd: np.ndarray) -> np.ndarray:
    """GP inputs (n, d): the square root of the parameters (Hellinger embedding of each simplex)."""
    return np.sqrt(np.clip(np.atleast_2d(params_nd), 0.0, None))


def replicate_groups(params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique (g, d), inverse (n,)): the distinct mixtures and which one each row is."""
    unique, inverse = np.unique(np.round(np.atleast_2d(params_nd), 12), axis=0, return_inverse=True)
    return unique, inverse.ravel()


@dataclass
class NoiseModel:
    """Observation-noise variance (utility units^2) as a function of the parameters, from replicates."""

    model: object  # a SingleTaskGP on bias-corrected log sample variances

    def variance(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) predicted noise variance at (n, d) parameters."""
        import torch

        with torch.no_grad(), single_thread():
            mean = self.model.posterior(torch.as_tensor(features(params_nd))).mean.squeeze(-1).numpy()
        return np.exp(mean)


def replicate_log_variances(
    params_nd: np.ndarray, utility_n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Replicated mixtures (g, d), their bias-corrected log sample variances (g,) and the known variances
    of those (g,); None when no mixture was evaluated twice."""
    from scipy.special import digamma, polygamma

    unique, inverse = replicate_groups(params_nd)
    counts = np.bincount(inverse)
    groups = np.flatnonzero(counts >= 2)
    if not len(groups):
        return None
    nu = counts[groups] - 1.0
    var = np.array([np.var(utility_n[inverse == g], ddof=1) for g in groups])
    floor = 1e-6 * max(float(np.var(utility_n)), 1e-12)
    z = np.log(np.maximum(var, floor)) - (digamma(nu / 2) - np.log(nu / 2))
    return unique[groups], z, polygamma(1, nu / 2)


def fit_noise_model(params_nd: np.ndarray, utility_n: np.ndarray) -> NoiseModel | None:
    """The heteroskedastic replicate-variance noise model, or None with fewer than `HETERO_MIN_GROUPS`
    replicated mixtures or `HETERO_MIN_DOF` replicate degrees of freedom (too little to learn a shape)."""
    import torch
    from botorch.models import SingleTaskGP

    replicates = replicate_log_variances(params_nd, utility_n)
    if replicates is None:
        return None
    x_g, z, z_var = replicates
    dof = float(np.sum(2.0 / np.maximum(z_var, 1e-12)))  # psi'(nu/2) ~ 2/nu
    if len(z) < HETERO_MIN_GROUPS or dof < HETERO_MIN_DOF:
        return None
    x = torch.as_tensor(features(x_g))
    model = SingleTaskGP(x, torch.as_tensor(z).unsqueeze(-1), train_Yvar=torch.as_tensor(z_var).unsqueeze(-1))
    _fit(model)
    model.eval()
    return NoiseModel(model)


def pooled_log_variance(params_nd: np.ndarray, utility_n: np.ndarray) -> tuple[float, float] | None:
    """(mean, sd) of the log noise variance (utility units) pooled over the replicates, or None."""
    replicates = replicate_log_variances(params_nd, utility_n)
    if replicates is None:
        return None
    _, z, z_var = replicates
    precision = float(np.sum(1.0 / z_var))
    return float(np.sum(z / z_var) / precision), float(np.sqrt(1.0 / precision))


@dataclass
class Surrogate:
    """A fitted GP: utility(w) = prior(w) + y_mean + y_sd * f(sqrt(w)), prior = the law or 0.

    Attributes:
        model: the BoTorch GP of f (standardized residual units).
        y_mean, y_sd: the residual standardization.
        law: the data-mixing-law prior mean, or None.
        noise: the replicate noise model, or None (homoskedastic noise learned with the GP).
        variant: which of `VARIANTS` this is.
        loo: {variant: mean leave-one-out log predictive density} of every variant tried.
    """

    model: object
    y_mean: float
    y_sd: float
    law: MixingLaw | None = None
    noise: NoiseModel | None = None
    variant: str = "gp"
    loo: dict[str, float] = field(default_factory=dict)

    def _prior(self, params_nd: np.ndarray) -> np.ndarray:
        if self.law is None:
            return np.zeros(len(params_nd))
        return self.law.predict(params_nd)

    def predict(self, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the noiseless utility at (n, d) parameters, each (n,)."""
        import torch

        params = np.atleast_2d(params_nd)
        with torch.no_grad(), single_thread():
            posterior = self.model.posterior(torch.as_tensor(features(params)))
            if self.fully_bayesian:  # the mixture over hyperparameter samples
                mean_t, var_t = posterior.mixture_mean, posterior.mixture_variance
            else:
                mean_t, var_t = posterior.mean, posterior.variance
            mean = mean_t.squeeze(-1).numpy()
            sd = var_t.clamp_min(1e-12).sqrt().squeeze(-1).numpy()
        return self._prior(params) + self.y_mean + self.y_sd * mean, self.y_sd * sd

    def joint(self, params_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint posterior of the noiseless utility: mean (n,) and covariance (n, n)."""
        import torch

        params = np.atleast_2d(params_nd)
        with torch.no_grad(), single_thread():
            posterior = self.model.posterior(torch.as_tensor(features(params)))
            mean = posterior.mean.squeeze(-1).numpy()
            cov = posterior.distribution.covariance_matrix.numpy()
        if self.fully_bayesian:  # moments of the mixture over samples: (s, n) means, (s, n, n) covariances
            mixture_mean = mean.mean(axis=0)
            centred = mean - mixture_mean
            cov = cov.mean(axis=0) + np.einsum("si,sj->ij", centred, centred) / len(mean)
            mean = mixture_mean
        return self._prior(params) + self.y_mean + self.y_sd * mean, self.y_sd**2 * cov

    def noise_sd(self, params_nd: np.ndarray) -> np.ndarray:
        """(n,) observation-noise sd (utility units) at (n, d) parameters."""
        params = np.atleast_2d(params_nd)
        if self.noise is not None:
            return np.sqrt(self.noise.variance(params))
        noise = float(self.model.likelihood.noise.detach().mean())
        return np.full(len(params), self.y_sd * np.sqrt(noise))

    @property
    def fully_bayesian(self) -> bool:
        """Whether the model is a batch of hyperparameter samples (the "saas" variant)."""
        return bool(getattr(self.model, "_is_fully_bayesian", False))

    def signal_sd(self) -> float:
        """Prior sd of the GP part (utility units): the scale the data can move the function by."""
        covar = self.model.covar_module
        scale = float(covar.outputscale.detach().mean()) if hasattr(covar, "outputscale") else 1.0
        return self.y_sd * np.sqrt(scale)

    def believe(self, params_nd: np.ndarray) -> Surrogate:
        """Kriging believer: a copy conditioned on observations equal to the posterior mean at
        `params_nd` (n, d) (same hyperparameters), which collapses the uncertainty there."""
        import torch

        params = np.atleast_2d(params_nd)
        if not params.size:
            return self
        x = torch.as_tensor(features(params))
        with torch.no_grad(), single_thread():
            mean = self.model.posterior(x).mean
            kwargs = {}
            if self.noise is not None:
                noise = torch.as_tensor(self.noise.variance(params) / self.y_sd**2).unsqueeze(-1)
                kwargs["noise"] = noise.expand_as(mean)  # (s, n, 1) for a fully Bayesian model
            model = self.model.condition_on_observations(x, mean, **kwargs)
        return replace(self, model=model)


def fit_surrogate(
    params_nd: np.ndarray,
    utility_n: np.ndarray,
    variants: tuple[str, ...] | None = None,
    seed: int = 0,
) -> Surrogate:
    """Fit every applicable variant to (n, d) parameters and (n,) utilities; keep the best by LOO.

    `variants` None: those of `DEFAULT_VARIANTS` that apply ("law+gp" needs >= 6 trials; "additive"
    applies when d <= 10). Noise: with enough replicates the heteroskedastic `fit_noise_model`; with a
    few, their pooled log variance is the prior of the learned homoskedastic noise; with none, the
    "gp" (NOISE_PRIOR) and "gp-noisy" (NOISY_PRIOR) noise hypotheses compete by LOO.
    """
    params = np.atleast_2d(np.asarray(params_nd, dtype=np.float64))
    y = np.asarray(utility_n, dtype=np.float64)
    n, d = params.shape
    if variants is None:
        variants = DEFAULT_VARIANTS
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise MixAtlasError(
            f"unknown surrogate variant {unknown[0]!r} in method_options.variants; "
            f"known: {', '.join(VARIANTS)}"
        )
    variants = tuple(
        v for v in variants if (v != "law+gp" or n >= 6) and (v != "additive" or d <= ADDITIVE_MAX_DIM)
    )
    noise = fit_noise_model(params, y) if n >= 3 else None
    pooled = pooled_log_variance(params, y) if noise is None else None
    if pooled is not None:  # the replicates inform the noise level: one noise hypothesis suffices
        variants = tuple(v for v in variants if v != "gp-noisy") or ("gp",)
    fitted = [_fit_variant(v, params, y, noise, pooled) for v in variants]
    if len(fitted) == 1:
        return fitted[0]
    folds = np.random.default_rng([seed, n]).permutation(n)[:LOO_FOLDS]
    for s in fitted:
        s.loo = {}
    scores = {s.variant: loo_log_density(s, params, y, folds) for s in fitted}
    best = max(fitted, key=lambda s: scores[s.variant])
    best.loo = scores
    return best


def loo_log_density(
    surrogate: Surrogate, params_nd: np.ndarray, utility_n: np.ndarray, folds: np.ndarray
) -> float:
    """Mean log density of each held-out utility under the surrogate refitted without it (GP
    hyperparameters kept, the law refitted warm), over the trial indices `folds`."""
    import torch
    from scipy.special import logsumexp

    x = torch.as_tensor(features(params_nd))
    model = surrogate.model
    n = len(params_nd)
    with torch.no_grad(), single_thread():  # a fully Bayesian model gives one matrix per sample
        k_prior = model.covar_module(x).to_dense().numpy().reshape(-1, n, n)
        mean_const = np.broadcast_to(model.mean_module(x).numpy().reshape(-1, n), (len(k_prior), n))
    if surrogate.noise is not None:
        noise = np.broadcast_to(surrogate.noise.variance(params_nd) / surrogate.y_sd**2, (len(k_prior), n))
    else:
        noise = model.likelihood.noise.detach().numpy().reshape(len(k_prior), -1)
        noise = np.broadcast_to(noise.mean(axis=1, keepdims=True), (len(k_prior), n))
    scores = []
    for i in folds:
        keep = np.arange(n) != i
        if surrogate.law is not None:
            law = fit_mixing_law(params_nd[keep], utility_n[keep], start=surrogate.law)
            prior = law.predict(params_nd)
        else:
            prior = np.zeros(n)
        per_sample = []
        for k_s, m_s, noise_s in zip(k_prior, mean_const, noise, strict=True):
            k_full = k_s + np.diag(noise_s)
            r = (utility_n - prior - surrogate.y_mean) / surrogate.y_sd - m_s
            k_cross = k_s[i, keep]
            try:
                solve = np.linalg.solve(k_full[np.ix_(keep, keep)], np.column_stack([r[keep], k_cross]))
            except np.linalg.LinAlgError:
                return -np.inf
            mu = prior[i] + surrogate.y_mean + surrogate.y_sd * (m_s[i] + k_cross @ solve[:, 0])
            var = surrogate.y_sd**2 * max(k_full[i, i] - k_cross @ solve[:, 1], 1e-12)
            per_sample.append(-0.5 * (np.log(2 * np.pi * var) + (utility_n[i] - mu) ** 2 / var))
        scores.append(logsumexp(per_sample) - np.log(len(per_sample)))  # the samples' mixture density
    return float(np.mean(scores))


def _fit_variant(
    variant: str,
    params_nd: np.ndarray,
    utility_n: np.ndarray,
    noise: NoiseModel | None,
    pooled: tuple[float, float] | None = None,
) -> Surrogate:
    """One variant; `pooled` (mean, sd) of the replicates' log noise variance sets the noise prior."""
    import torch
    from botorch.models import SingleTaskGP
    from gpytorch.constraints import GreaterThan
    from gpytorch.kernels import AdditiveKernel, RBFKernel, ScaleKernel
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.priors import GammaPrior, LogNormalPrior

    d = params_nd.shape[1]
    if variant == "saas":
        return _fit_saas(params_nd, utility_n, noise)
    law = fit_mixing_law(params_nd, utility_n) if variant == "law+gp" else None
    resid = utility_n - (law.predict(params_nd) if law is not None else 0.0)
    y_mean = float(np.mean(resid))
    y_sd = float(np.std(resid, ddof=1)) if len(resid) > 1 else 1.0
    y_sd = y_sd or 1.0
    x = torch.as_tensor(features(params_nd))
    y = torch.as_tensor((resid - y_mean) / y_sd).unsqueeze(-1)
    floor = LENGTHSCALE_FLOOR * design_resolution(params_nd)
    covar = _rbf(d, floor)
    if variant == "law+gp":
        covar = ScaleKernel(covar, outputscale_prior=GammaPrior(2.0, 4.0))
    elif variant == "additive":
        parts = [RBFKernel(active_dims=[i]) for i in range(d)]
        covar = ScaleKernel(AdditiveKernel(*parts)) + ScaleKernel(covar)
    kwargs = {}
    if noise is not None:
        kwargs["train_Yvar"] = torch.as_tensor(noise.variance(params_nd) / y_sd**2).unsqueeze(-1)
    else:
        prior = NOISY_PRIOR if variant == "gp-noisy" else NOISE_PRIOR
        if pooled is not None:
            prior = (pooled[0] - 2.0 * np.log(y_sd), pooled[1])
        kwargs["likelihood"] = GaussianLikelihood(
            noise_prior=LogNormalPrior(*prior), noise_constraint=GreaterThan(1e-6)
        )
    model = SingleTaskGP(x, y, covar_module=covar, outcome_transform=None, **kwargs)
    _fit(model)
    model.eval()
    return Surrogate(model=model, y_mean=y_mean, y_sd=y_sd, law=law, noise=noise, variant=variant)


def _fit_saas(params_nd: np.ndarray, utility_n: np.ndarray, noise: NoiseModel | None) -> Surrogate:
    """The fully Bayesian variant: SAAS priors, hyperparameters sampled by NUTS (seeded, repeatable)."""
    import torch
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    y_mean = float(np.mean(utility_n))
    y_sd = float(np.std(utility_n, ddof=1)) if len(utility_n) > 1 else 1.0
    y_sd = y_sd or 1.0
    x = torch.as_tensor(features(params_nd))
    y = torch.as_tensor((utility_n - y_mean) / y_sd).unsqueeze(-1)
    yvar = None
    if noise is not None:
        yvar = torch.as_tensor(noise.variance(params_nd) / y_sd**2).unsqueeze(-1)
    try:
        model = SaasFullyBayesianSingleTaskGP(x, y, train_Yvar=yvar)
    except ImportError as exc:
        raise MixAtlasError(
            "surrogate variant 'saas' needs JAX and NumPyro: pip install 'mixatlas[bayes]' "
            f"(or drop 'saas' from method_options.variants) ({exc.__class__.__name__})"
        ) from None
    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        fit_fully_bayesian_model_nuts(
            model, warmup_steps=SAAS_WARMUP, num_samples=SAAS_DRAWS, thinning=SAAS_THINNING,
            disable_progbar=True, seed=0,
        )
    model.eval()
    return Surrogate(model=model, y_mean=y_mean, y_sd=y_sd, noise=noise, variant="saas")


def design_resolution(params_nd: np.ndarray) -> float:
    """Median distance (GP input space) from each distinct evaluated mixture to its nearest other one:
    the finest scale the trials can resolve."""
    x = features(np.unique(np.round(np.atleast_2d(params_nd), 12), axis=0))
    if len(x) < 2:
        return 0.0
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return float(np.median(dist.min(axis=1)))


def _rbf(d: int, floor: float) -> object:
    """BoTorch's dimension-scaled ARD RBF kernel (Hvarfner et al. 2024 lengthscale prior), with the
    lengthscales bounded below by `floor` (at least BoTorch's 0.025)."""
    from gpytorch.constraints import GreaterThan
    from gpytorch.kernels import RBFKernel
    from gpytorch.priors import LogNormalPrior

    prior = LogNormalPrior(loc=np.sqrt(2) + 0.5 * np.log(d), scale=np.sqrt(3))
    return RBFKernel(
        ard_num_dims=d,
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(max(floor, 0.025), transform=None, initial_value=prior.mode),
    )


def _fit(model: object) -> None:
    """MAP hyperparameters by L-BFGS (capped: the marginal likelihood is flat near its optimum); on a
    fitting failure the prior-mode hyperparameters stay, a usable if vague surrogate."""
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    with warnings.catch_warnings(), contextlib.suppress(ModelFittingError), single_thread(), seeded_torch():
        warnings.simplefilter("ignore")
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": FIT_MAX_ITER}})
