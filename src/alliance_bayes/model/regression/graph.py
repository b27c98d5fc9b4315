r"""PyMC models of alliance and outcome change, built from a :class:`ModelSpec`. All PyMC model code lives here.

The family (one TOML in ``models/`` per variant)
------------------------------------------------
For client :math:`i` with follow-up :math:`y_i`, baseline :math:`y^0_i`, standardised covariates
:math:`x_i` (age, male, days in care; each centred and divided by its sample SD, so that
:math:`\beta` and its prior are per SD of the covariate; the reported ``b_age`` … are per raw
unit, :math:`\beta_j / \text{sd}(x_j)`) and care type :math:`c[i] \in` {therapist, coach, both}:

**Paper regression** (``alliance = "composite"``, no hierarchy; Sagui-Henson et al. 2022, Table 2,
doi:10.1007/s41347-022-00263-5):

.. math::
    y_i \sim \mathcal N(\alpha + \beta_0 (y^0_i - \bar y^0) + x_i^\top\beta
                        + b_{\text{alliance}} (a_i - \bar a), \sigma)

**Hierarchical subscale model** (``alliance = "subscales"``): each subscale
:math:`s` (goal, bond, task) is split into its within-provider part :math:`W_{is}` (client minus the
client's provider mean) and between-provider part :math:`B_{is}` (membership-weighted provider mean),
because provider-level and client-level alliance carry different information (Baldwin, Wampold & Imel
2007, doi:10.1037/0022-006X.75.6.842; Falkenström et al. 2017, doi:10.1037/ccp0000203):

.. math::
    \mu_i = \alpha + \gamma_{c[i]} + \beta_0 (y^0_i - \bar y^0) + x_i^\top\beta
            + \sum_s \big(b_{c[i],s,W} W_{is} + b_{c[i],s,B} (B_{is} - \bar B_s)\big)
            + \sum_p w_{ip} \big(u_{p0} + \sum_s u_{ps} W_{is}\big)

- care-type intercepts :math:`\gamma_c` with coach-only care as the reference
  (:math:`\gamma_{\text{coach}} = 0`), reported as ``b_care[therapist-coach]`` and
  ``b_care[both-coach]``: the difference in expected follow-up at equal alliance (the sample mean
  of the between parts, the same within parts) and equal covariates. Provider effects are mean-zero
  within provider type, so without them a care type's mean outcome has nowhere to go but the slopes
  and the provider SDs; and care type is a confounder of every alliance slope;

- care-type slopes partially pooled: :math:`b_{c,s,l} = \mu^b_{s,l} + \tau z_{c,s,l}`,
  :math:`z \sim \mathcal N(0, 1)`, with the spread :math:`\tau` across care types fixed at
  ``sd_b_sd`` (``care_slope_sd = "fixed"``, the default). Three care types cannot estimate a
  variance (Gelman 2006, doi:10.1214/06-BA117A): with :math:`\tau \sim \text{Half-}\mathcal N`
  (``care_slope_sd = "estimated"``) its posterior is close to its prior, and the funnel between
  :math:`\tau` and the slopes caused divergent transitions on some sampler seeds of the shipped
  study whichever way it was parametrised (non-centred: at large :math:`\tau`, where the data pin
  the coach slopes down; centred: at small :math:`\tau`). With :math:`\tau` fixed the prior is
  Gaussian, the posterior has no funnel, and the care-type slopes are shrunk towards
  :math:`\mu^b` by the same ridge in every study. Each cell is sampled centred or non-centred by
  how much data it has (:func:`centred_care_slopes`);
- provider effects with multiple membership (Browne, Goldstein & Rasbash 2001,
  doi:10.1177/1471082X0100100202): weights :math:`w_{ip}` are the provider's share of the client's
  sessions; :math:`u_p = \operatorname{diag}(\sigma^u_{t[p]}, \tau^u_1, \dots) L z_p` with the
  intercept SD :math:`\sigma^u_t` per provider type, within-slope SDs :math:`\tau^u_s`, and
  :math:`L L^\top \sim \text{LKJ}(\eta)` (non-centred; Betancourt & Girolami 2015, arXiv:1312.0906),
  the intercept partially non-centred per provider by how much data it has
  (:func:`provider_noncentring`); each SD of provider effects has a Gamma(2, 2/scale) prior with
  mean ``scale`` (:func:`group_sd`);
- residuals :math:`y_i \sim \mathcal N(\mu_i, \sigma)`, Student-t with :math:`\nu - 1 \sim
  \text{Exp}`, or (``likelihood = "censored_normal"``) a Normal censored at the bounds of the
  outcome's metric :math:`[L, U]` (WHO-5 0–100, PHQ-9 0–27; Tobin 1958, doi:10.2307/1907382):
  a follow-up at :math:`L` contributes :math:`\Phi((L - \mu_i)/\sigma)`, one at :math:`U`
  contributes :math:`1 - \Phi((U - \mu_i)/\sigma)`, and replicated outcomes are
  :math:`\min(U, \max(L, y^*))`. The floor is real: 3.5% of WHO-5 follow-ups in the study and
  8.8% of those of the elevated group are 0, a spike that no Normal reproduces.

Effects are in outcome points per one point of the 1–5 alliance scale. The intercept prior is
centred at the sample mean of the outcome (as brms does), which is weakly data-dependent and recorded.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from alliance_bayes.model.regression.collapsed import (
    SufficientStatistics,
    collapsed_log_likelihood,
    correlation_inverse,
    is_collapsed,
    n_effects,
    sampled_noncentring,
    sufficient_statistics,
)
from alliance_bayes.model.regression.design import (
    CARE_TYPES,
    INTERCEPT_PRIOR_MEAN,
    LEVELS,
    OBSERVED,
    OUTCOME,
    OUTCOME_WEIGHT,
    ModelData,
)
from alliance_bayes.model.spec import ModelSpec


def build_model(spec: ModelSpec, data: ModelData, *, heldout: bool = False) -> pm.Model:
    """Build the PyMC model that ``spec`` describes on ``data``.

    ``heldout=True`` builds the model a K-fold refit compiles once and refits fold by fold
    (:mod:`~alliance_bayes.model.regression.heldout`): every client stays in it, and the
    per-client form weights each client's log density by the data container
    ``outcome_weight`` (1 for the fold's training clients, 0 for the rest) in a ``Potential``
    (``y_weighted``), with no observed variable. The collapsed form needs no such switch: its
    statistics are data already.

    Returns
    -------
    pymc.Model
        Observed variable ``y`` (dims ``client``); ``baseline`` in the constant data.
    """
    if is_collapsed(spec):
        return _build_collapsed(spec, data)
    pr = spec.priors
    coords = data.coords()
    with pm.Model(coords=coords) as model:
        baseline = pm.Data("baseline", data.baseline, dims="client")
        x = pm.Data("x_covariate", data.covariates, dims=("client", "covariate"))

        alpha = pm.Normal("alpha", intercept_prior_mean(data), pr.intercept_sd)
        b_baseline = pm.Normal("b_baseline", 0.0, pr.b_baseline_sd)
        b_cov_z, b_cov = covariate_slopes(pr.b_covariate_sd, data.covariate_sds)
        mu = alpha + b_baseline * (baseline - data.baseline_mean) + pt.dot(x, b_cov_z)

        if spec.predictors.alliance == "composite":
            b_alliance = pm.Normal("b_alliance", 0.0, pr.b_alliance_sd)
            mu = mu + b_alliance * pm.Data("alliance_c", data.composite, dims="client")
            uncentred_intercept(alpha, b_baseline, b_cov, b_alliance, data)
        else:
            if spec.hierarchy.care_type_intercepts:
                mu = mu + care_intercepts(pr.b_care_sd)[data.care_index]
            mu = mu + _subscale_effects(spec, data)
            if spec.hierarchy.provider_intercepts:
                mu = mu + _provider_effects(spec, data)

        sigma, nu = _likelihood(spec, mu, data.y, heldout=heldout)
        if not heldout:
            bayes_r2(mu, sigma, nu)
    return model


def intercept_prior_mean(data: ModelData) -> pt.TensorVariable:
    """The centre of the intercept's prior, the mean outcome: a data container
    (``alpha_prior_mean``), so that a K-fold refit centres it on its training clients alone."""
    return pm.Data(INTERCEPT_PRIOR_MEAN, float(np.mean(data.tuning_y)))


def uncentred_intercept(alpha, b_baseline, b_cov, b_alliance, data: ModelData) -> pt.TensorVariable:
    """``intercept``: the expected outcome with every predictor at zero, which OLS reports."""
    return pm.Deterministic(
        "intercept",
        alpha
        - b_baseline * data.baseline_mean
        - pt.dot(data.covariate_means, b_cov)
        - b_alliance * data.composite_mean,
    )


def _build_collapsed(spec: ModelSpec, data: ModelData) -> pm.Model:
    r"""The same model with the collapsed providers' effects integrated out (Gaussian only).

    The priors and parameters are those of the per-client form, but for the effects of the
    collapsed providers (absent: drawn after sampling) and those of the sampled ones
    (:func:`~alliance_bayes.model.regression.collapsed.split_providers`), which are
    :math:`u_p = \operatorname{diag}(\sigma^u_{t[p]}, \tau^u) L z_p` with each :math:`z_{pe}`
    partially non-centred by how much data the provider has on that effect
    (:func:`~alliance_bayes.model.regression.collapsed.sampled_noncentring`). The likelihood is one
    ``Potential`` (``y_collapsed``) from the data's sufficient statistics; there is no observed
    variable, and the predictive draws and pointwise log-likelihood are computed after sampling
    (:func:`~alliance_bayes.model.regression.collapsed.complete`).
    """
    pr = spec.priors
    stats = sufficient_statistics(spec, data)
    with pm.Model(coords=data.coords()) as model:
        alpha = pm.Normal("alpha", intercept_prior_mean(data), pr.intercept_sd)
        b_baseline = pm.Normal("b_baseline", 0.0, pr.b_baseline_sd)
        b_cov_z, b_cov = covariate_slopes(pr.b_covariate_sd, data.covariate_sds)
        terms = [alpha[None], b_baseline[None], b_cov_z]
        if spec.predictors.alliance == "composite":
            b_alliance = pm.Normal("b_alliance", 0.0, pr.b_alliance_sd)
            terms.append(b_alliance[None])
            uncentred_intercept(alpha, b_baseline, b_cov, b_alliance, data)
        else:
            if spec.hierarchy.care_type_intercepts:
                care_intercepts(pr.b_care_sd)
                terms.append(model["b_care"])
            terms.append(subscale_slopes(spec, data).flatten())
        theta = pt.concatenate(terms)
        u_sampled = sigma_inv = logdet = None
        if n_effects(spec, data):
            u_sampled, sigma_inv, logdet = _collapsed_provider_prior(spec, data, stats)
        sigma = pm.HalfNormal("sigma", pr.sigma_sd)
        pm.Potential(
            "y_collapsed",
            collapsed_log_likelihood(stats, theta, u_sampled, sigma, sigma_inv, logdet),
        )
    return model


def _collapsed_provider_prior(spec: ModelSpec, data: ModelData, stats: SufficientStatistics):
    r"""Provider-effect SDs and correlations; :math:`\Sigma_t^{-1}`, :math:`\log|\Sigma_t|`; sampled effects."""
    pr = spec.priors
    model = pm.modelcontext(None)
    sd_provider = group_sd(spec, "sd_provider", pr.sd_provider_sd, dims="provider_type")
    effects = ["intercept"]
    n_types = len(data.coords()["provider_type"])
    if spec.hierarchy.provider_slopes:
        effects += list(data.subscales)
    model.add_coord("effect", effects)
    scale = sd_provider[:, None]
    chol = pt.eye(len(effects))
    if spec.hierarchy.provider_slopes:
        pairs = [f"{effects[i]}~{effects[j]}" for i in range(len(effects)) for j in range(i)]
        model.add_coord("effect_pair", pairs)
        sd_slope = group_sd(spec, "sd_provider_slope", pr.sd_provider_slope_sd, dims="subscale")
        if spec.hierarchy.provider_correlation:
            chol = pm.LKJCorr("chol_provider", n=len(effects), eta=pr.lkj_eta)
            rows, cols = np.tril_indices(len(effects), k=-1)
            pm.Deterministic("corr_provider", (chol @ chol.T)[rows, cols], dims="effect_pair")
        scale = pt.concatenate(
            [scale, pt.broadcast_to(sd_slope, (n_types, len(data.subscales)))], axis=1
        )
    corr_inv = correlation_inverse(chol, len(effects))
    sigma_inv = corr_inv[None] / (scale[:, :, None] * scale[:, None, :])
    logdet = 2.0 * pt.log(scale).sum(axis=1) + 2.0 * pt.log(pt.diag(chol)).sum()
    u_sampled = None
    if stats.sampled.any():
        dims = ("provider_sampled", "effect")
        labels = np.asarray(data.coords()["provider"])[stats.sampled]
        model.add_coord("provider_sampled", labels.tolist())
        types = stats.arrays["sampled_type"]
        # Partially non-centred innovations (sampled_noncentring): z = v / c^(1-w).
        power = 1.0 - pm.Data("provider_sampled_noncentring", sampled_noncentring(stats), dims=dims)
        v_sd = (scale * pt.diag(chol)[None, :])[types] ** power
        v = pm.Normal("v_provider_sampled", 0.0, v_sd, dims=dims)
        u_sampled = pm.Deterministic(
            "u_provider_sampled", pt.dot(v / v_sd, chol.T) * scale[types], dims=dims
        )
    return u_sampled, sigma_inv, logdet


def bayes_r2(
    mu: pt.TensorVariable, sigma: pt.TensorVariable, nu: pt.TensorVariable | None = None
) -> pt.TensorVariable:
    r"""Bayesian R² (Gelman, Goodrich, Gabry & Vehtari 2019, doi:10.1080/00031305.2018.1549100).

    Per draw, :math:`R^2 = V_{\mu} / (V_{\mu} + \sigma^2_{\text{res}})` with :math:`V_{\mu}` the
    variance over clients of the expected outcome :math:`\mu_i` (every term, provider effects
    included) and :math:`\sigma^2_{\text{res}}` the model's residual variance: :math:`\sigma^2`
    (for a censored outcome, on the uncensored scale), :math:`\sigma^2 \nu / (\nu - 2)` for
    Student-t residuals (infinite, so :math:`R^2 = 0`, when :math:`\nu \le 2`). A Deterministic:
    it is computed from the draws after sampling and costs the gradient nothing.
    """
    v_mu = pt.var(mu)
    v_res = sigma**2
    if nu is not None:
        v_res = pt.switch(nu > 2, v_res * nu / pt.maximum(nu - 2, 1e-9), np.inf)
    return pm.Deterministic("r2_bayes", v_mu / (v_mu + v_res))


def covariate_slopes(
    prior_sd: float | np.ndarray, sds: np.ndarray, dims: tuple[str, ...] = ("covariate",)
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Covariate slopes per SD (``b_covariate_z``, sampled) and per raw unit (``b_covariate``)."""
    b_z = pm.Normal("b_covariate_z", 0.0, prior_sd, dims=dims)
    return b_z, pm.Deterministic("b_covariate", b_z / sds, dims=dims)


def care_intercepts(prior_sd: float | np.ndarray, dims: tuple[str, ...] = ()) -> pt.TensorVariable:
    """Care-type intercepts against coach-only care: a (..., care_type) tensor, 0 for coach.

    ``b_care`` has dims ``(*dims, "care_contrast")`` = therapist−coach, both−coach.
    """
    b_care = pm.Normal("b_care", 0.0, prior_sd, dims=(*dims, "care_contrast"))
    zero = pt.zeros_like(b_care[..., :1])
    return pt.concatenate([b_care[..., :1], zero, b_care[..., 1:]], axis=-1)


def _subscale_effects(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Care-type-specific subscale slopes at both levels times the client's parts: (client,)."""
    alliance = pm.Data("alliance_parts", data.alliance, dims=("client", "subscale", "level"))
    b = subscale_slopes(spec, data)
    return (b[data.care_index] * alliance).sum(axis=(1, 2))


def subscale_slopes(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Care-type-specific subscale slopes ``b`` (care_type, subscale, level), partially pooled."""
    pr = spec.priors
    dims = ("care_type", "subscale", "level")
    if not spec.hierarchy.care_type_pooling:
        return pm.Normal("b", 0.0, pr.mu_b_sd, dims=dims)
    mu_b = pm.Normal("mu_b", 0.0, pr.mu_b_sd, dims=dims[1:])
    if spec.hierarchy.care_slope_sd == "estimated":
        sd_b = pm.HalfNormal("sd_b", pr.sd_b_sd, dims=dims[1:])
        z_b = pm.Normal("z_b", 0.0, 1.0, dims=dims)
        return pm.Deterministic("b", mu_b + sd_b * z_b, dims=dims)
    centred = centred_care_slopes(spec, data)
    pm.Data("b_centred", centred.astype(np.int8), dims=dims)
    mean = pt.broadcast_to(mu_b, centred.shape).flatten()
    flat = centred.ravel()
    on, off = np.flatnonzero(flat), np.flatnonzero(~flat)
    cells = [
        f"{CARE_TYPES[c]},{data.subscales[k]},{LEVELS[v]}" for c, k, v in np.ndindex(*centred.shape)
    ]
    model = pm.modelcontext(None)
    b_flat = pt.zeros(flat.size)
    if on.size:
        model.add_coord("care_slope_centred", [cells[i] for i in on])
        b_on = pm.Normal("b_centred_slope", mean[on], pr.sd_b_sd, dims="care_slope_centred")
        b_flat = pt.set_subtensor(b_flat[on], b_on)
    if off.size:
        model.add_coord("care_slope_noncentred", [cells[i] for i in off])
        z_b = pm.Normal("z_b", 0.0, 1.0, dims="care_slope_noncentred")
        b_flat = pt.set_subtensor(b_flat[off], mean[off] + pr.sd_b_sd * z_b)
    return pm.Deterministic("b", b_flat.reshape(centred.shape), dims=dims)


def centred_care_slopes(spec: ModelSpec, data: ModelData) -> np.ndarray:
    r"""Which care-type slopes are sampled centred: a boolean (care_type, subscale, level) array.

    With the spread :math:`\tau` fixed, :math:`b_c = \mu + \tau z_c` (non-centred) and
    :math:`b_c \sim \mathcal N(\mu, \tau)` (centred) are the same Gaussian prior in two linear
    coordinate systems, and the better one is the one in which the posterior is least correlated
    (Papaspiliopoulos, Roberts & Sköld 2007, doi:10.1214/088342307000000014): centred when the data
    pin :math:`b_c` down more tightly than :math:`\tau` (then :math:`\mu` and :math:`b_c` are
    nearly independent, while :math:`\mu` and :math:`z_c` lie on a ridge), non-centred when they
    do not. NUTS adapts a diagonal mass matrix, so a ridge costs it. Both regimes occur here: the
    coach within-provider slopes rest on thousands of clients, the therapist between-provider
    slopes on a few dozen providers, and a study ten times larger moves every cell towards the
    data. A cell is centred when its approximate standard error,
    :math:`\hat\sigma / \sqrt{\sum_{i \in c} (x_{isl} - \bar x_{csl})^2}`, is below
    :math:`\tau` (``sd_b_sd``), with :math:`\hat\sigma` the residual SD of a least-squares fit of
    the outcome on its baseline and the covariates. The choice is stored with the draws
    (``constant_data/b_centred``).
    """
    shape = (len(CARE_TYPES), len(data.subscales), len(LEVELS))
    design = np.column_stack([np.ones(data.n_clients), data.baseline, data.covariates])
    coef, *_ = np.linalg.lstsq(design, data.tuning_y, rcond=None)
    sigma_hat = float(np.std(data.tuning_y - design @ coef))
    centred = np.zeros(shape, dtype=bool)
    for c in range(shape[0]):
        x = data.alliance[data.care_index == c]
        if len(x) < 2:
            continue
        ss = ((x - x.mean(axis=0)) ** 2).sum(axis=0)  # (subscale, level)
        centred[c] = sigma_hat / np.sqrt(np.maximum(ss, 1e-12)) < spec.priors.sd_b_sd
    return centred


def _provider_effects(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Provider intercepts (SD per provider type) and, optionally, within-slopes, by membership."""
    pr = spec.priors
    idx, weight = data.membership_index, data.membership_weight
    ptype = data.provider_type_index
    sd_provider = group_sd(spec, "sd_provider", pr.sd_provider_sd, dims="provider_type")
    # Partially non-centred intercepts: u = sd^w * v with v ~ N(0, sd^(1 - w)), per provider.
    w = pm.Data("provider_noncentring", provider_noncentring(data), dims="provider")
    sd_p = sd_provider[ptype]
    v = pm.Normal("v_provider", 0.0, sd_p ** (1.0 - w), dims="provider")
    z0 = v * sd_p ** (w - 1.0)  # the standardised intercept u / sd
    if not spec.hierarchy.provider_slopes:
        u0 = pm.Deterministic("u_provider", z0 * sd_p, dims="provider")
        return (weight * u0[idx]).sum(axis=1)

    subscales = list(data.subscales)
    effects = ["intercept", *subscales]
    model = pm.modelcontext(None)
    model.add_coord("effect", effects)
    pairs = [f"{effects[i]}~{effects[j]}" for i in range(len(effects)) for j in range(i)]
    model.add_coord("effect_pair", pairs)

    sd_slope = group_sd(spec, "sd_provider_slope", pr.sd_provider_slope_sd, dims="subscale")
    z_slope = pm.Normal("z_provider_slope", 0.0, 1.0, dims=("provider", "subscale"))
    z = pt.concatenate([z0[:, None], z_slope], axis=1)
    if spec.hierarchy.provider_correlation:
        chol = pm.LKJCorr("chol_provider", n=len(effects), eta=pr.lkj_eta)
        corr = chol @ chol.T
        rows, cols = np.tril_indices(len(effects), k=-1)
        # Only the off-diagonal correlations: the diagonal is 1 by construction and has no R-hat.
        pm.Deterministic("corr_provider", corr[rows, cols], dims="effect_pair")
        z = pt.dot(z, chol.T)
    n_providers = len(ptype)
    scale = pt.concatenate(
        [sd_provider[ptype][:, None], pt.broadcast_to(sd_slope, (n_providers, len(subscales)))],
        axis=1,
    )
    u = z * scale
    u0 = pm.Deterministic("u_provider", u[:, 0], dims="provider")
    u_slope = pm.Deterministic("u_provider_slope", u[:, 1:], dims=("provider", "subscale"))
    within = data.alliance[:, :, 0]  # (client, subscale)
    slope_part = (u_slope[idx] * within[:, None, :]).sum(axis=-1)  # (client, K)
    return (weight * (u0[idx] + slope_part)).sum(axis=1)


def group_sd(spec: ModelSpec, name: str, scale: float, dims: str) -> pt.TensorVariable:
    r"""The SD of a set of provider effects: Gamma(2, 2/scale) (mean ``scale``) or Half-Normal.

    The Gamma(2) prior (``sd_prior = "gamma"``, the default) has zero density at 0 (Chung et al.
    2013, doi:10.1007/s11336-013-9328-2). The sampler works on :math:`\log\sigma`; with a
    Half-Normal prior and a weakly informative likelihood, the posterior of :math:`\log\sigma`
    has a long left tail towards :math:`-\infty` that NUTS explores slowly: the tail ESS of
    ``sd_provider[coach]`` fell below 400 on some sampler seeds of the shipped study and of a
    third of it. Under Gamma(2) that tail decays like :math:`\sigma^2`. The price is a prior
    that rules out an SD of exactly zero between providers.
    """
    if spec.hierarchy.sd_prior == "halfnormal":
        return pm.HalfNormal(name, scale, dims=dims)
    return pm.Gamma(name, alpha=2.0, beta=2.0 / scale, dims=dims)


def provider_noncentring(data: ModelData) -> np.ndarray:
    r"""How far each provider's intercept is non-centred: :math:`w_p \in [0, 1]` (1 = fully).

    The intercept is sampled as :math:`u_p = \sigma_t^{w_p} v_p` with
    :math:`v_p \sim \mathcal N(0, \sigma_t^{1 - w_p})`: :math:`w_p = 1` is the non-centred
    :math:`u_p = \sigma_t z_p`, :math:`w_p = 0` the centred :math:`u_p \sim \mathcal N(0,
    \sigma_t)`. For a Gaussian random intercept the choice that makes :math:`v_p` and
    :math:`\sigma_t` a posteriori uncorrelated is :math:`w_p = \sigma^2 / (\sigma^2 + I_p
    \sigma_t^2)`, one minus the reliability of provider :math:`p`'s data, with
    :math:`I_p = \sum_i w_{ip}^2` its membership information (Papaspiliopoulos, Roberts & Sköld
    2003, "Non-centered parameterisations for hierarchical models and data augmentation",
    Bayesian Statistics 7; Gelfand, Sahu & Carlin 1995, doi:10.1093/biomet/82.3.479). Providers
    here sit in between (reliability about 0.1–0.4 on the shipped study), where neither extreme
    is efficient: with fully non-centred intercepts ``sd_provider[coach]`` reached a tail ESS below
    400 on one of ten sampler seeds of the shipped study. This and the Gamma(2) SD prior of
    :func:`group_sd` were adopted together; with both, the smallest tail ESS over those ten seeds
    was 836.

    :math:`\sigma^2` and :math:`\sigma_t^2` are moment estimates from the data alone: the
    residual variance of a least-squares fit of the outcome on its baseline, the covariates, care
    type and the alliance parts, and per provider type the variance of the providers'
    membership-weighted mean residuals minus its sampling part. Where that is not positive the
    type's intercepts stay fully non-centred. The weights are stored with the draws
    (``constant_data/provider_noncentring``).
    """
    n = data.n_clients
    care = np.eye(3)[data.care_index][:, [0, 2]]
    design = np.column_stack(
        [np.ones(n), data.baseline, data.covariates, care, data.alliance.reshape(n, -1)]
    )
    coef, *_ = np.linalg.lstsq(design, data.tuning_y, rcond=None)
    resid = data.tuning_y - design @ coef
    sigma2 = float(np.var(resid))
    n_prov = len(data.provider_type_index)
    idx, wt = data.membership_index.ravel(), data.membership_weight.ravel()
    total, info, weighted = (np.zeros(n_prov) for _ in range(3))
    np.add.at(total, idx, wt)
    np.add.at(info, idx, wt**2)
    np.add.at(weighted, idx, wt * np.repeat(resid, data.membership_index.shape[1]))
    w = np.ones(n_prov)
    seen = total > 0
    for t in np.unique(data.provider_type_index):
        of_type = seen & (data.provider_type_index == t)
        if of_type.sum() < 3:
            continue
        means = weighted[of_type] / total[of_type]
        noise = sigma2 * info[of_type] / total[of_type] ** 2
        sd2 = float(np.mean(means**2) - np.mean(noise))
        if sd2 > 0:
            w[of_type] = sigma2 / (sigma2 + info[of_type] * sd2)
    return w


def _likelihood(spec: ModelSpec, mu: pt.TensorVariable, y: np.ndarray, *, heldout: bool = False):
    """The per-client likelihood (:func:`build_model`; the collapsed form replaces it).

    Returns the residual scale ``sigma`` and, for Student-t residuals, ``nu`` (else ``None``).
    """
    sigma = pm.HalfNormal("sigma", spec.priors.sigma_sd)
    nu = None
    if spec.likelihood == "student_t":
        nu = pm.Deterministic("nu", 1.0 + pm.Exponential("nu_minus_one", spec.priors.nu_rate))
    if heldout:
        # A client without a training outcome has weight 0; its placeholder value keeps 0 · logp finite.
        observed = pm.Data(OBSERVED, np.where(np.isfinite(y), y, np.nanmean(y)), dims="client")
        weight = pm.Data(OUTCOME_WEIGHT, np.ones(len(y)), dims="client")
        pm.Potential(
            "y_weighted", (weight * pm.logp(_outcome(spec, mu, sigma, nu), observed)).sum()
        )
        return sigma, nu
    # A data container, so that a compiled model can be refitted to new outcomes (SBC).
    observed = pm.Data(OBSERVED, y, dims="client")
    _outcome(spec, mu, sigma, nu, name=OUTCOME, observed=observed, dims="client")
    return sigma, nu


def _outcome(spec: ModelSpec, mu, sigma, nu, name: str | None = None, **kwargs):
    """The outcome's distribution: a model variable ``name``, or (``name=None``) unregistered."""
    if spec.likelihood == "student_t":
        args = {"nu": nu, "mu": mu, "sigma": sigma}
        return pm.StudentT(name, **args, **kwargs) if name else pm.StudentT.dist(**args)
    if spec.likelihood == "censored_normal":
        return censored_normal(name, mu, sigma, spec.outcome_range, **kwargs)
    return pm.Normal(name, mu=mu, sigma=sigma, **kwargs) if name else pm.Normal.dist(mu, sigma)


_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def log_normal_cdf(z: pt.TensorVariable) -> pt.TensorVariable:
    r""":math:`\log \Phi(z)`, accurate in the far left tail.

    ``log(erfc(-z/√2)/2)`` above :math:`z = -20` (where ``erfc`` is still far from underflow);
    below it the asymptotic series
    :math:`-z^2/2 - \log(-z) - \log\sqrt{2\pi} + \log(1 - z^{-2} + 3 z^{-4} - 15 z^{-6})`
    (Abramowitz & Stegun 26.2.12), relative error below 1e-9 there, and far cheaper than the
    scaled complementary error function PyMC uses.
    """
    safe = pt.minimum(z, -20.0)
    z2 = safe**2
    tail = -0.5 * z2 - pt.log(-safe) - _LOG_SQRT_2PI + pt.log1p(-1 / z2 + 3 / z2**2 - 15 / z2**3)
    return pt.switch(z < -20.0, tail, pt.log(0.5 * pt.erfc(-pt.maximum(z, -20.0) / np.sqrt(2.0))))


def censored_normal(
    name: str | None,
    mu: pt.TensorVariable,
    sigma: pt.TensorVariable,
    bounds: tuple[float, float],
    **kwargs,
) -> pt.TensorVariable:
    r"""A Normal outcome censored at ``bounds`` (Tobit), as an observed variable.

    The log density is the Normal one for a value strictly inside the bounds,
    :math:`\log\Phi((L - \mu)/\sigma)` at the lower bound and
    :math:`\log\Phi((\mu - U)/\sigma)` at the upper; replicates are clipped Normal draws. The
    cumulative terms are computed only for the values at a bound (found from the value itself, so
    that refitting to new outcomes through the data container stays correct): computing both for
    every client, as :class:`pymc.Censored` does, made each gradient about five times as costly.
    """
    lower, upper = (float(b) for b in bounds)

    def logp(value, mu, sigma):
        mu = pt.broadcast_to(mu, value.shape)
        sigma = pt.broadcast_to(sigma, value.shape)
        z = (value - mu) / sigma
        out = -0.5 * z**2 - pt.log(sigma) - _LOG_SQRT_2PI
        low = pt.nonzero(pt.le(value, lower))[0]
        high = pt.nonzero(pt.ge(value, upper))[0]
        out = pt.set_subtensor(out[low], log_normal_cdf((lower - mu[low]) / sigma[low]))
        return pt.set_subtensor(out[high], log_normal_cdf((mu[high] - upper) / sigma[high]))

    def dist(mu, sigma, size):
        # A symbolic graph rather than a Python ``random``, so that every backend compiles it.
        return pt.clip(pm.Normal.dist(mu, sigma, size=size), lower, upper)

    if name is None:  # unregistered, for a weighted log density
        return pm.CustomDist.dist(mu, sigma, dist=dist, logp=logp)
    return pm.CustomDist(name, mu, sigma, dist=dist, logp=logp, **kwargs)
