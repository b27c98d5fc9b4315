r"""Predictive densities of the :mod:`~alliance_bayes.model.regression.graph` models for held-out clients.

Used by leave-provider-out K-fold cross-validation (:mod:`alliance_bayes.checks.compare`). This module
restates the linear predictor of :func:`~alliance_bayes.model.regression.graph.build_model` in NumPy, draw by
draw, from the posterior's named variables; ``tests/test_compare.py`` checks it against the
sampler's own ``log_likelihood`` group, so the two cannot drift apart unnoticed.

Held-out density with new providers
-----------------------------------
For a held-out client :math:`i` and posterior draw :math:`s` from a fit to the training clients,

.. math::
    p(y_i \mid \theta_s) = \int p\big(y_i \mid \mu_{is} + \textstyle\sum_p w_{ip}
        (u_{p0} + \sum_k u_{pk} W_{ik}), \sigma_s\big)\, p(u \mid \theta_s)\, du,

where a provider seen in training keeps its posterior effect :math:`u_{ps}` and a provider absent
from training (a *new* provider) has its effects drawn from their population distribution
:math:`u_p = \operatorname{diag}(\sigma^u_{t[p],s}, \tau^u_s)\, L_s z`, :math:`z \sim \mathcal N(0, I)`
(intercept only: :math:`u_{p0} \sim \mathcal N(0, \sigma^u_{t[p],s})`). The integral is estimated by
Monte Carlo with ``n_mc`` draws of :math:`z` per posterior draw (``method="mc"``, any likelihood),
or exactly for the (censored) Normal likelihood (``method="analytic"``: the new-provider part is Gaussian, so
:math:`y_i \mid \theta_s \sim \mathcal N(\mu, \sqrt{\sigma^2 + \sum_p w_{ip}^2 a_i^\top \Sigma_{t[p]} a_i})`
with :math:`a_i = (1, W_{i1}, \dots)`). Then
:math:`\log p(y_i \mid y_{\text{train}}) = \log \frac1S \sum_s p(y_i \mid \theta_s)`.

Each held-out client's integral is taken separately (pointwise elpd, as in Vehtari, Gelman & Gabry
2017, doi:10.1007/s11222-016-9696-4), even when two held-out clients share a new provider.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xarray as xr
from scipy import special, stats

from alliance_bayes.data.instruments import instrument_of
from alliance_bayes.errors import DesignError
from alliance_bayes.model.regression.design import ModelData
from alliance_bayes.spec import ModelSpec

__all__ = [
    "STEP_HALF_WIDTH",
    "complete_cases",
    "heldout_log_density",
    "heldout_log_step_probability",
    "impute_designs",
    "linear_predictor",
    "log_step_probability",
    "pointwise_log_likelihood",
    "pointwise_log_step_probability",
    "step_half_width",
    "subset_data",
]


def subset_data(data: ModelData, mask: np.ndarray) -> ModelData:
    """The clients of ``data`` where ``mask`` is true, with providers and memberships re-pointed.

    Centring (``*_mean``) is kept from ``data``, so that a training subset and a test subset share one
    parametrisation and the intercept means the same thing in both.
    """
    keep = np.asarray(mask, dtype=bool)
    if keep.shape != (data.n_clients,):
        raise ValueError(f"mask must have shape ({data.n_clients},), got {keep.shape}")
    sub = data.frame.select(keep)
    idx, weight = sub.membership_arrays()
    ptype = (
        sub.providers["provider_type"]
        .astype(str)
        .map({k: i for i, k in enumerate(sub.provider_types)})
    )
    return replace(
        data,
        frame=sub,
        y=data.y[keep],
        baseline=data.baseline[keep],
        covariates=data.covariates[keep],
        care_index=data.care_index[keep],
        alliance=data.alliance[keep],
        composite=data.composite[keep],
        membership_index=np.asarray(idx, np.int64),
        membership_weight=np.asarray(weight, float),
        provider_type_index=ptype.to_numpy(np.int64),
        exclusions={**data.exclusions, "clients_in_model": int(keep.sum())},
    )


def _draws(posterior: xr.Dataset, name: str, max_draws: int | None, seed: int) -> np.ndarray:
    """(S, ...) array of variable ``name``, chains and draws flattened, optionally thinned."""
    da = posterior[name]
    arr = da.values.reshape(da.shape[0] * da.shape[1], *da.shape[2:])
    return arr[_keep_draws(arr.shape[0], max_draws, seed)]


def _n_draws(posterior: xr.Dataset) -> int:
    return int(posterior.sizes["chain"] * posterior.sizes["draw"])


def _keep_draws(n: int, max_draws: int | None, seed: int) -> np.ndarray:
    if max_draws is None or max_draws >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_draws, replace=False))


def linear_predictor(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    max_draws: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Draw-wise mean of ``y`` without provider effects: (S, client).

    Everything of :func:`~alliance_bayes.model.regression.graph.build_model`'s ``mu`` except the provider
    intercepts and slopes, on the centred design of ``data``.

    Raises
    ------
    DesignError
        For ``between = "latent_mean"``: its slopes multiply the latent parts, which these NumPy
        predictions (compare, K-fold, imputation) do not rebuild yet; the caseload parts in
        ``data.alliance`` would give silently wrong predictions.
    """
    if data.latent is not None:
        raise DesignError(
            "predictions from a between = 'latent_mean' model (compare, K-fold scoring, "
            "imputation) are not implemented: they would use the caseload-mean parts the model "
            "does not; compare or score its caseload_mean twin instead"
        )
    g = lambda n: _draws(posterior, n, max_draws, seed)  # noqa: E731
    mu = g("alpha")[:, None] + g("b_baseline")[:, None] * (data.baseline - data.baseline_mean)[None]
    mu = mu + g("b_covariate_z") @ data.covariates.T
    # a study of one care type has no b_care: its care-type term is 0
    if (
        spec.hierarchy.care_type_intercepts
        and spec.predictors.alliance != "composite"
        and "b_care" in posterior
    ):
        # (S, contrast): every care type but the reference, minus the reference; 0 at the reference
        care = np.insert(g("b_care"), data.reference_index, 0.0, axis=1)
        mu = mu + care[:, data.care_index]
    if spec.predictors.alliance == "composite":
        mu = mu + g("b_alliance")[:, None] * data.composite[None]
    else:
        b = g("b")  # (S, care_type, subscale, level)
        mu = mu + np.einsum("snkl,nkl->sn", b[:, data.care_index], data.alliance)
    return mu


def _log_density(spec: ModelSpec, y, mu, sigma, nu) -> np.ndarray:
    if spec.likelihood == "student_t":
        return stats.t.logpdf(y, df=nu, loc=mu, scale=sigma)
    if spec.likelihood == "censored_normal":
        lower, upper = spec.outcome_range
        y, mu, sigma = np.broadcast_arrays(y, mu, sigma)
        out = stats.norm.logpdf(y, loc=mu, scale=sigma)
        low, high = y <= lower, y >= upper
        out[low] = stats.norm.logcdf(lower, loc=mu[low], scale=sigma[low])
        out[high] = stats.norm.logsf(upper, loc=mu[high], scale=sigma[high])
        return out
    return stats.norm.logpdf(y, loc=mu, scale=sigma)


def _known_provider_part(
    spec: ModelSpec, data: ModelData, posterior: xr.Dataset, positions: np.ndarray, max_draws, seed
) -> np.ndarray:
    """(S, client): sum over the client's providers known to ``posterior`` (``positions >= 0``)."""
    idx, w = data.membership_index, data.membership_weight
    known = positions[idx] >= 0  # (client, K)
    if not known.any():
        return np.zeros((len(_keep_draws(_n_draws(posterior), max_draws, seed)), data.n_clients))
    pos = np.where(known, positions[idx], 0)
    weight = np.where(known, w, 0.0)
    u0 = _draws(posterior, "u_provider", max_draws, seed)  # (S, provider)
    part = (u0[:, pos] * weight[None]).sum(axis=-1)
    if spec.hierarchy.provider_slopes:
        us = _draws(posterior, "u_provider_slope", max_draws, seed)  # (S, provider, subscale)
        within = data.alliance[:, :, 0]  # (client, subscale)
        slope = np.einsum("snkj,nj->snk", us[:, pos], within)
        part = part + (slope * weight[None]).sum(axis=-1)
    return part


def _provider_positions(data: ModelData, posterior: xr.Dataset) -> np.ndarray:
    """Position of each of ``data``'s providers in the posterior's ``provider`` coordinate, or -1."""
    labels = data.frame.providers["provider"].astype(str).tolist()
    if "provider" not in posterior.coords:
        return np.full(len(labels), -1, dtype=np.int64)
    where = {str(p): i for i, p in enumerate(posterior["provider"].values.tolist())}
    return np.array([where.get(p, -1) for p in labels], dtype=np.int64)


def pointwise_log_likelihood(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    max_draws: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """log p(y_i | θ_s) for clients whose providers are all in ``posterior``: (S, client).

    The NumPy twin of the sampler's ``log_likelihood`` group, used to check this module.
    """
    mu = linear_predictor(spec, data, posterior, max_draws=max_draws, seed=seed)
    if spec.hierarchy.provider_intercepts:
        positions = _provider_positions(data, posterior)
        if (positions < 0).any():
            raise ValueError("some providers are not in the posterior; use heldout_log_density")
        mu = mu + _known_provider_part(spec, data, posterior, positions, max_draws, seed)
    sigma = _draws(posterior, "sigma", max_draws, seed)[:, None]
    nu = (
        _draws(posterior, "nu", max_draws, seed)[:, None]
        if spec.likelihood == "student_t"
        else None
    )
    return _log_density(spec, data.y[None], mu, sigma, nu)


def _population_cov(spec: ModelSpec, posterior: xr.Dataset, max_draws, seed) -> np.ndarray:
    """(S, provider_type, E, E) covariance of a new provider's effects (intercept, subscale slopes)."""
    sd0 = _draws(posterior, "sd_provider", max_draws, seed)  # (S, provider_type)
    if not spec.hierarchy.provider_slopes:
        return (sd0**2)[:, :, None, None]
    sds = _draws(posterior, "sd_provider_slope", max_draws, seed)  # (S, subscale)
    n_eff = 1 + sds.shape[1]
    corr = np.broadcast_to(np.eye(n_eff), (sd0.shape[0], n_eff, n_eff)).copy()
    if "corr_provider" in posterior:  # else independent effects
        pairs = _draws(posterior, "corr_provider", max_draws, seed)  # (S, pair)
        rows, cols = np.tril_indices(n_eff, k=-1)
        corr[:, rows, cols] = pairs
        corr[:, cols, rows] = pairs
    scale = np.concatenate(
        [
            sd0[:, :, None],
            np.broadcast_to(sds[:, None, :], (sd0.shape[0], sd0.shape[1], sds.shape[1])),
        ],
        axis=-1,
    )  # (S, type, E)
    return corr[:, None] * scale[..., :, None] * scale[..., None, :]


def heldout_log_density(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    method: str = "mc",
    n_mc: int = 200,
    max_draws: int | None = None,
    seed: int = 0,
    chunk: int | None = None,
) -> np.ndarray:
    """log p(y_i | training data) for each client of ``data`` (the held-out clients): (client,).

    Parameters
    ----------
    spec : ModelSpec
        The model that ``posterior`` was fitted with.
    data : ModelData
        The held-out clients, centred like the training data (see :func:`subset_data`).
    posterior : xarray.Dataset
        Posterior of the fit to the training clients.
    method : {"mc", "analytic"}
        Monte Carlo integral over new providers' effects (any likelihood), or the exact Gaussian
        integral (Normal likelihood only).
    n_mc : int
        Monte Carlo draws of each new provider's effects per posterior draw.
    max_draws : int, optional
        Use at most this many posterior draws (a random subset).
    seed : int
        Seed for the draw subset and the Monte Carlo draws.
    chunk : int, optional
        Clients per block; by default about 2·10⁷ Monte Carlo numbers per block.
    """
    if method not in ("mc", "analytic"):
        raise ValueError("method must be 'mc' or 'analytic'")
    if method == "analytic" and spec.likelihood == "student_t":
        # Censoring applies to the latent Normal outcome, whose new-provider part stays Gaussian.
        raise ValueError("method='analytic' needs the (censored) Normal likelihood")
    mu = linear_predictor(spec, data, posterior, max_draws=max_draws, seed=seed)
    sigma = _draws(posterior, "sigma", max_draws, seed)
    nu = _draws(posterior, "nu", max_draws, seed) if spec.likelihood == "student_t" else None
    n_draws = mu.shape[0]
    if not spec.hierarchy.provider_intercepts:
        lp = _log_density(
            spec, data.y[None], mu, sigma[:, None], None if nu is None else nu[:, None]
        )
        return special.logsumexp(lp, axis=0) - np.log(n_draws)

    positions = _provider_positions(data, posterior)
    mu = mu + _known_provider_part(spec, data, posterior, positions, max_draws, seed)
    idx, w = data.membership_index, data.membership_weight
    new_w = np.where(positions[idx] < 0, w, 0.0)  # (client, K) weights of new providers
    new_type = data.provider_type_index[idx]  # (client, K)
    cov = _population_cov(spec, posterior, max_draws, seed)  # (S, type, E, E)
    n_eff = cov.shape[-1]
    a = np.concatenate([np.ones((data.n_clients, 1)), data.alliance[:, :, 0]], axis=1)[:, :n_eff]

    out = np.empty(data.n_clients)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(n_eff))  # (S, type, E, E)
    if chunk is None:
        chunk = max(1, int(2e7 // (n_draws * n_mc * idx.shape[1] * n_eff)))
    for start in range(0, data.n_clients, chunk):
        sl = slice(start, min(start + chunk, data.n_clients))
        y, m = data.y[sl], mu[:, sl]  # (n,), (S, n)
        nw, nt, ai = new_w[sl], new_type[sl], a[sl]
        if method == "analytic":
            # Var of sum_k w_k a' u_k with independent u_k ~ N(0, Σ_t): sum_k w_k² a' Σ_t a.
            quad = np.einsum("ne,stef,nf->stn", ai, cov, ai)  # (S, type, n)
            quad = quad[:, nt, np.arange(len(y))[:, None]]  # (S, n, K): each slot's provider type
            var_u = (nw[None] ** 2 * quad).sum(-1)
            sd = np.sqrt(sigma[:, None] ** 2 + var_u)
            lp = _log_density(spec, y[None], m, sd, None)
        else:
            z = rng.standard_normal((n_draws, n_mc, len(y), nw.shape[1], n_eff))
            # u = L_t z for each slot's provider type; effect on y is a' u.
            lt = chol[:, nt]  # (S, n, K, E, E)
            eff = np.einsum("snkef,smnkf,ne->smnk", lt, z, ai)
            shift = (eff * nw[None, None]).sum(-1)  # (S, M, n)
            sc = sigma[:, None, None]
            df = None if nu is None else nu[:, None, None]
            lpm = _log_density(spec, y[None, None], m[:, None] + shift, sc, df)
            lp = special.logsumexp(lpm, axis=1) - np.log(n_mc)  # (S, n)
        out[sl] = special.logsumexp(lp, axis=0) - np.log(n_draws)
    return out


def complete_cases(data: ModelData) -> ModelData:
    """The clients of ``data`` with an observed outcome (centring kept, see :func:`subset_data`)."""
    return subset_data(data, np.isfinite(data.y))


def impute_designs(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    n: int,
    delta: float = 0.0,
    delta_alliance: float = 0.0,
    seed: int = 0,
) -> list[ModelData]:
    r"""``n`` completed copies of ``data``: missing outcomes drawn from the posterior predictive, + δ.

    Multiple imputation from the posterior of the complete-case fit (Rubin 1987; the Bayesian
    version mixes the refits' draws, Zhou & Reiter 2010, doi:10.1198/tast.2010.09109). Imputation
    :math:`m` uses one posterior draw :math:`\theta_m` (spread evenly over the draws) and, for each
    client :math:`i` without a follow-up,

    .. math::
        \tilde y_i = y^*_i + \delta_i, \qquad y^*_i \sim p(y \mid \mu_i(\theta_m), \sigma_m),
        \qquad \delta_i = \delta + \delta_a (a_i - \bar a),

    clipped to the outcome's range for a censored outcome (so that a completed dataset holds
    possible scores). :math:`\delta = 0` is missing at random given the predictors; :math:`\delta
    < 0` says clients who did not return were doing worse than their predictors imply, the
    delta-adjusted pattern-mixture model of missing not at random (Carpenter & Kenward 2013,
    *Multiple imputation and its application*, ch. 10; Cro et al. 2020,
    doi:10.1002/sim.8569). A uniform δ shifts every missing follow-up alike and so barely moves
    an alliance slope; :math:`\delta_a` (outcome points per point of the client's composite
    alliance :math:`a_i` above the mean :math:`\bar a` of the model's clients) says that the
    clients who did not return differ from their predictions the more, the lower (δ_a > 0) or
    higher their alliance: the departure from missing at random that would bias the slopes.
    A provider with no client in the complete-case fit gets effects drawn
    from their population distribution.
    """
    missing = ~np.isfinite(data.y)
    if not missing.any():
        raise ValueError("no missing outcome to impute")
    rng = np.random.default_rng(seed)
    total = _n_draws(posterior)
    picks = np.linspace(0, total - 1, n).round().astype(int)
    gone = subset_data(data, missing)
    shift = delta + delta_alliance * data.composite[missing]
    lower, upper = spec.outcome_range
    designs, tuning = [], None
    for s in picks:
        per_chain = posterior.sizes["draw"]
        one = posterior.isel(chain=[int(s) // per_chain], draw=[int(s) % per_chain])
        mu = linear_predictor(spec, gone, one)[0]
        if spec.hierarchy.provider_intercepts:
            positions = _provider_positions(gone, one)
            mu = mu + _known_provider_part(spec, gone, one, positions, None, 0)[0]
            mu = mu + _new_provider_part(spec, gone, one, positions, rng)
        sigma = float(one["sigma"].values.ravel()[0])
        if spec.likelihood == "student_t":
            noise = sigma * rng.standard_t(float(one["nu"].values.ravel()[0]), size=mu.size)
        else:
            noise = sigma * rng.standard_normal(mu.size)
        clip = spec.likelihood == "censored_normal"
        y = data.y.copy()
        if tuning is None:
            # The first imputation without the shift sets the data-dependent sampler choices (and
            # the intercept prior's centre) of every refit, whatever δ: the refits' graphs then
            # differ only in the outcome data and compile once, and δ moves no prior.
            y[missing] = np.clip(mu + noise, lower, upper) if clip else mu + noise
            tuning = y.copy()
        y[missing] = np.clip(mu + noise + shift, lower, upper) if clip else mu + noise + shift
        designs.append(replace(data, y=y, y_tuning=tuning))
    return designs


def _new_provider_part(
    spec: ModelSpec, data: ModelData, posterior: xr.Dataset, positions: np.ndarray, rng
) -> np.ndarray:
    """(client,): effects of providers absent from ``posterior``, drawn from their population."""
    idx, w = data.membership_index, data.membership_weight
    new = (positions < 0)[idx] & (w > 0)
    if not new.any():
        return np.zeros(data.n_clients)
    cov = _population_cov(spec, posterior, None, 0)[0]  # (type, E, E)
    n_eff = cov.shape[-1]
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(n_eff))
    u = np.einsum(
        "pef,pf->pe", chol[data.provider_type_index], rng.standard_normal((len(positions), n_eff))
    )
    a = np.concatenate([np.ones((data.n_clients, 1)), data.alliance[:, :, 0]], axis=1)[:, :n_eff]
    eff = np.einsum("nke,ne->nk", u[idx], a)  # (client, K)
    return (np.where(new, w, 0.0) * eff).sum(axis=1)


# --------------------------------------------------------------------------------------------------
# Probability of the observed step: a measure shared by every likelihood

#: Half-width of one observable step of each outcome, on the metric the models see. WHO-5 is
#: modelled on the 0–100 percentage metric: the raw 0–25 sum moves in steps of 1 and is
#: multiplied by 4 on loading (:func:`alliance_bayes.data.load.load_study`), so a percentage
#: score moves in steps of 4 (half-width 2 = 0.5 raw points). PHQ-9 is an integer sum (0–27).
STEP_HALF_WIDTH = {"who5_followup": 2.0, "phq9_followup": 0.5}


def step_half_width(outcome: str) -> float:
    """Half of one observable step of ``outcome``: :data:`STEP_HALF_WIDTH` for WHO-5 and PHQ-9,
    half the declared ``step`` for an outcome a loaded study declares (1 → 0.5 for a GAD-7 sum).

    Raises
    ------
    DesignError
        No study loaded declares the outcome.
    """
    if outcome in STEP_HALF_WIDTH:
        return STEP_HALF_WIDTH[outcome]
    found = instrument_of(outcome)
    if found is None:
        raise DesignError(f"outcome {outcome!r} is declared by no study loaded")
    return found.step / 2.0


def _log_cdf(z: np.ndarray, nu) -> np.ndarray:
    return special.log_ndtr(z) if nu is None else stats.t.logcdf(z, df=nu)


def log_step_probability(
    y, mu, sigma, *, bounds: tuple[float, float], half_width: float, nu=None
) -> np.ndarray:
    r"""log P(y − h < Y ≤ y + h) under a Normal or Student-t location-scale law, bounds as masses.

    .. math::
        \log\big(F((b - \mu)/\sigma) - F((a - \mu)/\sigma)\big),\quad
        a = \begin{cases} -\infty & y \le L \\ y - h & \text{else}\end{cases},\quad
        b = \begin{cases} +\infty & y \ge U \\ y + h & \text{else}\end{cases},

    with :math:`F` the standard Normal CDF (or Student-t with ``nu`` degrees of freedom),
    :math:`h` = ``half_width`` and :math:`(L, U)` = ``bounds``: a client at the floor scores
    P(Y ≤ L + h), at the ceiling P(Y > U − h). The measure is the same for a Normal and for a
    Normal censored at the bounds (censoring moves only mass beyond the bounds, which the end
    intervals already hold), so every likelihood is scored as the probability of the step that
    was observed, never as a density (Gelman et al. 2013, *Bayesian Data Analysis*, 3rd ed.,
    §7.1: predictive scores are comparable only on one measure). The difference of CDFs is
    taken on the side of the distribution where it is not a difference of numbers near 1.
    """
    y, mu, sigma = np.broadcast_arrays(*(np.asarray(x, float) for x in (y, mu, sigma)))
    nu = None if nu is None else np.broadcast_to(np.asarray(nu, float), y.shape)
    lower, upper = bounds
    a = np.where(y <= lower, -np.inf, (y - half_width - mu) / sigma)
    b = np.where(y >= upper, np.inf, (y + half_width - mu) / sigma)
    # Both laws are symmetric: F(b) - F(a) = F(-a) - F(-b), exact where a > 0 (right tail).
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    log_hi, log_lo = _log_cdf(hi, nu), _log_cdf(lo, nu)
    with np.errstate(divide="ignore"):
        return log_hi + np.log1p(-np.exp(log_lo - log_hi))


def _step_measure(spec: ModelSpec, half_width: float | None):
    """``f(y, mu, sigma, nu)`` → :func:`log_step_probability` for the outcome of ``spec``."""
    h = step_half_width(spec.outcome) if half_width is None else half_width

    def measure(y, mu, sigma, nu):
        return log_step_probability(y, mu, sigma, bounds=spec.outcome_range, half_width=h, nu=nu)

    return measure


def pointwise_log_step_probability(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    half_width: float | None = None,
    max_draws: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """log P(observed step of y_i | θ_s) for clients whose providers are all in ``posterior``:
    (S, client); the discrete twin of :func:`pointwise_log_likelihood` (same predictor, any of
    the three likelihoods), with :data:`STEP_HALF_WIDTH` of the outcome unless ``half_width``.
    """
    mu = linear_predictor(spec, data, posterior, max_draws=max_draws, seed=seed)
    if spec.hierarchy.provider_intercepts:
        positions = _provider_positions(data, posterior)
        if (positions < 0).any():
            raise ValueError("some providers are not in the posterior; use a held-out measure")
        mu = mu + _known_provider_part(spec, data, posterior, positions, max_draws, seed)
    sigma = _draws(posterior, "sigma", max_draws, seed)[:, None]
    nu = (
        _draws(posterior, "nu", max_draws, seed)[:, None]
        if spec.likelihood == "student_t"
        else None
    )
    return _step_measure(spec, half_width)(data.y[None], mu, sigma, nu)


def heldout_log_step_probability(
    spec: ModelSpec,
    data: ModelData,
    posterior: xr.Dataset,
    *,
    method: str | None = None,
    n_mc: int = 200,
    max_draws: int | None = None,
    seed: int = 0,
    half_width: float | None = None,
) -> np.ndarray:
    r"""log P(observed step of y_i | training data) for each held-out client: (client,).

    As :func:`heldout_log_density` with the probability of the observed step
    (:func:`log_step_probability`) in place of the density: per posterior draw, new providers'
    effects are integrated out exactly for the (censored) Normal likelihood (the latent outcome
    is :math:`\mathcal N(\mu, \sqrt{\sigma^2 + \sum_p w_{ip}^2 a_i^\top \Sigma_{t[p]} a_i})`, whose
    step probability is a difference of its CDF) and by Monte Carlo (``n_mc`` draws) for
    Student-t; then :math:`\log \frac1S \sum_s P(\text{step}_i \mid \theta_s)`. ``method``
    defaults to ``"analytic"`` where it is exact, else ``"mc"``.
    """
    measure = _step_measure(spec, half_width)
    if method is None:
        method = "mc" if spec.likelihood == "student_t" else "analytic"
    if method not in ("mc", "analytic"):
        raise ValueError("method must be 'mc' or 'analytic'")
    if method == "analytic" and spec.likelihood == "student_t":
        raise ValueError("method='analytic' needs the (censored) Normal likelihood")
    mu = linear_predictor(spec, data, posterior, max_draws=max_draws, seed=seed)
    sigma = _draws(posterior, "sigma", max_draws, seed)
    nu = _draws(posterior, "nu", max_draws, seed) if spec.likelihood == "student_t" else None
    n_draws = mu.shape[0]
    df = None if nu is None else nu[:, None]
    if not spec.hierarchy.provider_intercepts:
        lp = measure(data.y[None], mu, sigma[:, None], df)
        return special.logsumexp(lp, axis=0) - np.log(n_draws)
    positions = _provider_positions(data, posterior)
    mu = mu + _known_provider_part(spec, data, posterior, positions, max_draws, seed)
    idx, w = data.membership_index, data.membership_weight
    new_w = np.where(positions[idx] < 0, w, 0.0)
    new_type = data.provider_type_index[idx]
    cov = _population_cov(spec, posterior, max_draws, seed)  # (S, type, E, E)
    n_eff = cov.shape[-1]
    a = np.concatenate([np.ones((data.n_clients, 1)), data.alliance[:, :, 0]], axis=1)[:, :n_eff]
    if method == "analytic":
        quad = np.einsum("ne,stef,nf->stn", a, cov, a)  # (S, type, n)
        quad = quad[:, new_type, np.arange(data.n_clients)[:, None]]  # (S, n, K)
        sd = np.sqrt(sigma[:, None] ** 2 + (new_w[None] ** 2 * quad).sum(-1))
        lp = measure(data.y[None], mu, sd, None)
        return special.logsumexp(lp, axis=0) - np.log(n_draws)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(n_eff))
    out = np.empty(data.n_clients)
    for i in range(data.n_clients):  # one client at a time bounds memory to (S, n_mc, K, E)
        z = rng.standard_normal((n_draws, n_mc, idx.shape[1], n_eff))
        eff = np.einsum("skef,smkf,e->smk", chol[:, new_type[i]], z, a[i])
        shift = (eff * new_w[i][None, None]).sum(-1)  # (S, M)
        lpm = measure(data.y[i], mu[:, i, None] + shift, sigma[:, None], df)
        lp = special.logsumexp(lpm, axis=1) - np.log(n_mc)
        out[i] = special.logsumexp(lp) - np.log(n_draws)
    return out
