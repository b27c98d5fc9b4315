r"""PyMC models of alliance and outcome change, built from a :class:`ModelSpec`. All PyMC model code lives here.

The family (one TOML in ``models/`` per variant)
------------------------------------------------
For client :math:`i` with follow-up :math:`y_i`, baseline :math:`y^0_i`, centred covariates
:math:`x_i` (age, male, days in care) and care type :math:`c[i] \in` {therapist, coach, both}:

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
    \mu_i = \alpha + \beta_0 (y^0_i - \bar y^0) + x_i^\top\beta
            + \sum_s \big(b_{c[i],s,W} W_{is} + b_{c[i],s,B} (B_{is} - \bar B_s)\big)
            + \sum_p w_{ip} \big(u_{p0} + \sum_s u_{ps} W_{is}\big)

- care-type slopes partially pooled, non-centred:
  :math:`b_{c,s,l} = \mu^b_{s,l} + \tau_{s,l} z_{c,s,l}`, :math:`\tau_{s,l} \sim \text{Half-}\mathcal N`
  with an informative scale, since three care types cannot estimate a variance alone
  (Gelman 2006, doi:10.1214/06-BA117A);
- provider effects with multiple membership (Browne, Goldstein & Rasbash 2001,
  doi:10.1177/1471082X0100100202): weights :math:`w_{ip}` are the provider's share of the client's
  sessions; :math:`u_p = \operatorname{diag}(\sigma^u_{t[p]}, \tau^u_1, \dots) L z_p` with the
  intercept SD :math:`\sigma^u_t` per provider type, within-slope SDs :math:`\tau^u_s`, and
  :math:`L L^\top \sim \text{LKJ}(\eta)` (non-centred; Betancourt & Girolami 2015, arXiv:1312.0906);
- residuals :math:`y_i \sim \mathcal N(\mu_i, \sigma)` or Student-t with :math:`\nu - 1 \sim
  \text{Exp}`.

Effects are in outcome points per one point of the 1–5 alliance scale. The intercept prior is
centred at the sample mean of the outcome (as brms does), which is weakly data-dependent and recorded.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from alliance_bayes.model.design import ModelData
from alliance_bayes.model.spec import ModelSpec

OUTCOME = "y"  # name of the observed variable in every model (dims: client)
OBSERVED = "y_observed"  # its data container


def build_model(spec: ModelSpec, data: ModelData) -> pm.Model:
    """Build the PyMC model that ``spec`` describes on ``data``.

    Returns
    -------
    pymc.Model
        Observed variable ``y`` (dims ``client``); ``baseline`` in the constant data. With
        ``alliance = "latent"`` the model of :mod:`alliance_bayes.model.measurement` (``data`` is
        then its :class:`~alliance_bayes.model.measurement.LatentData`).
    """
    if spec.predictors.alliance == "latent":
        from alliance_bayes.model.measurement import build_latent_model

        return build_latent_model(spec, data)
    pr = spec.priors
    coords = data.coords()
    with pm.Model(coords=coords) as model:
        baseline = pm.Data("baseline", data.baseline, dims="client")
        x = pm.Data("x_covariate", data.covariates, dims=("client", "covariate"))

        alpha = pm.Normal("alpha", float(np.mean(data.y)), pr.intercept_sd)
        b_baseline = pm.Normal("b_baseline", 0.0, pr.b_baseline_sd)
        b_cov = pm.Normal("b_covariate", 0.0, pr.b_covariate_sd, dims="covariate")
        mu = alpha + b_baseline * (baseline - data.baseline_mean) + pt.dot(x, b_cov)

        if spec.predictors.alliance == "composite":
            b_alliance = pm.Normal("b_alliance", 0.0, pr.b_alliance_sd)
            mu = mu + b_alliance * pm.Data("alliance_c", data.composite, dims="client")
            # The uncentred intercept (all predictors at zero) is what OLS reports.
            pm.Deterministic(
                "intercept",
                alpha
                - b_baseline * data.baseline_mean
                - pt.dot(data.covariate_means, b_cov)
                - b_alliance * data.composite_mean,
            )
        else:
            mu = mu + _subscale_effects(spec, data)
            if spec.hierarchy.provider_intercepts:
                mu = mu + _provider_effects(spec, data)

        _likelihood(spec, mu, data.y)
    return model


def _subscale_effects(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Care-type-specific subscale slopes at both levels, partially pooled (non-centred)."""
    pr = spec.priors
    dims = ("care_type", "subscale", "level")
    if spec.hierarchy.care_type_pooling:
        mu_b = pm.Normal("mu_b", 0.0, pr.mu_b_sd, dims=dims[1:])
        sd_b = pm.HalfNormal("sd_b", pr.sd_b_sd, dims=dims[1:])
        z_b = pm.Normal("z_b", 0.0, 1.0, dims=dims)
        b = pm.Deterministic("b", mu_b + sd_b * z_b, dims=dims)
    else:
        b = pm.Normal("b", 0.0, pr.mu_b_sd, dims=dims)
    alliance = pm.Data("alliance_parts", data.alliance, dims=("client", "subscale", "level"))
    return (b[data.care_index] * alliance).sum(axis=(1, 2))


def _provider_effects(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Provider intercepts (SD per provider type) and, optionally, within-slopes, by membership."""
    pr = spec.priors
    idx, weight = data.membership_index, data.membership_weight
    ptype = data.provider_type_index
    sd_provider = pm.HalfNormal("sd_provider", pr.sd_provider_sd, dims="provider_type")
    if not spec.hierarchy.provider_slopes:
        z = pm.Normal("z_provider", 0.0, 1.0, dims="provider")
        u0 = pm.Deterministic("u_provider", z * sd_provider[ptype], dims="provider")
        return (weight * u0[idx]).sum(axis=1)

    subscales = list(data.subscales)
    effects = ["intercept", *subscales]
    model = pm.modelcontext(None)
    model.add_coord("effect", effects)
    pairs = [f"{effects[i]}~{effects[j]}" for i in range(len(effects)) for j in range(i)]
    model.add_coord("effect_pair", pairs)

    sd_slope = pm.HalfNormal("sd_provider_slope", pr.sd_provider_slope_sd, dims="subscale")
    chol = pm.LKJCorr("chol_provider", n=len(effects), eta=pr.lkj_eta)
    corr = chol @ chol.T
    rows, cols = np.tril_indices(len(effects), k=-1)
    # Only the off-diagonal correlations: the diagonal is 1 by construction and has no R-hat.
    pm.Deterministic("corr_provider", corr[rows, cols], dims="effect_pair")
    z = pm.Normal("z_provider", 0.0, 1.0, dims=("provider", "effect"))
    n_providers = len(ptype)
    scale = pt.concatenate(
        [sd_provider[ptype][:, None], pt.broadcast_to(sd_slope, (n_providers, len(subscales)))],
        axis=1,
    )
    u = pt.dot(z, chol.T) * scale
    u0 = pm.Deterministic("u_provider", u[:, 0], dims="provider")
    u_slope = pm.Deterministic("u_provider_slope", u[:, 1:], dims=("provider", "subscale"))
    within = data.alliance[:, :, 0]  # (client, subscale)
    slope_part = (u_slope[idx] * within[:, None, :]).sum(axis=-1)  # (client, K)
    return (weight * (u0[idx] + slope_part)).sum(axis=1)


def _likelihood(spec: ModelSpec, mu: pt.TensorVariable, y: np.ndarray) -> None:
    """The per-client likelihood: the one seam a sufficient-statistics version will replace."""
    sigma = pm.HalfNormal("sigma", spec.priors.sigma_sd)
    # A data container, so that a compiled model can be refitted to new outcomes (SBC, K-fold).
    observed = pm.Data(OBSERVED, y, dims="client")
    if spec.likelihood == "student_t":
        nu = pm.Deterministic("nu", 1.0 + pm.Exponential("nu_minus_one", spec.priors.nu_rate))
        pm.StudentT(OUTCOME, nu=nu, mu=mu, sigma=sigma, observed=observed, dims="client")
    else:
        pm.Normal(OUTCOME, mu=mu, sigma=sigma, observed=observed, dims="client")
