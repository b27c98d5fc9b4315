r"""The change model: baseline and follow-up as true scores plus measurement error.

For client :math:`i` of care type :math:`c(i)` with providers :math:`p` (session-share weights
:math:`w_{ip}`),

.. math::

    X_{1i} = T_{1i} + e_{1i}, \quad X_{2i} = T_{2i} + e_{2i}, \quad
    e_{ti} \sim \mathcal{N}(0, \sigma_e^2), \quad \sigma_e^2 = (1 - \rho)\,s_{X_1}^2,

    (T_{1i}, T_{2i}) \sim \mathcal{N}\!\left((\mu_{1c}, \mu_{2c} + v_i),\
    \begin{pmatrix} \tau_1^2 & r\tau_1\tau_2 \\ r\tau_1\tau_2 & \tau_2^2 \end{pmatrix}\right),
    \quad v_i = \sum_p w_{ip} u_p, \quad u_p \sim \mathcal{N}(0, \sigma_{u,\mathrm{type}(p)}^2),

with :math:`\rho` the instrument's test–retest reliability (a Beta prior centred on the value a
study declares for the instrument, else on the spec's published value:
:func:`~alliance_bayes.model.change.design.reliability_prior`) and :math:`s_{X_1}` the SD of the
observed baseline over every client. The prior scales in outcome points are the spec's
(:attr:`~alliance_bayes.spec.ModelSpec.change_priors`: for a declared outcome, scaled to its
declared range where the spec states none for it); the mean true baseline is centred on the
observed one. Every score is taken on its own metric; the scale's direction only matters to the
estimands. The provider effects
act on the follow-up only: the baseline is measured before care.

With client covariates :math:`x_i` (``[predictors] covariates``, centred, a numeric or binary one
divided by its SD: :mod:`alliance_bayes.model.change.design`) the true means are
:math:`\mu_{1c} + x_i^\top\beta_1` and :math:`\mu_{2c} + v_i + x_i^\top(\beta_1 + \delta)`:
:math:`\beta_1` the slopes of the true baseline, :math:`\delta` those of the true change, each
:math:`\mathcal{N}(0, s_\beta^2)` per SD of the covariate (per level difference for a level
indicator), :math:`s_\beta` from :func:`~alliance_bayes.model.change.design.covariate_prior_sd`.
The covariates being centred, :math:`\mu_{1c}` and :math:`\mu_{2c}` are the means of a client
of care type :math:`c` at the sample's covariate means, and the formulas below hold with the
covariate parts added to them. Without covariates the model has none of these terms.

The true scores are integrated out. :math:`X_1 \sim \mathcal{N}(\mu_{1c}, V_1)`,
:math:`V_1 = \tau_1^2 + \sigma_e^2`, for every client, and for those with a follow-up

.. math::

    X_2 \mid X_1 \sim \mathcal{N}\!\left(\mu_{2c} + v_i + \frac{C}{V_1}(X_1 - \mu_{1c}),\
    \tau_2^2 + \sigma_e^2 - \frac{C^2}{V_1}\right), \quad C = r\tau_1\tau_2,

so that a missing follow-up is missing at random given the baseline, the care type and the
providers, and its client still informs :math:`\mu_{1c}`, :math:`\tau_1` and so how far the
elevated regress to the mean. The errors are independent of each other and of the true scores
(the classical test-theory model behind the reliable change index, Jacobson & Truax 1991,
doi:10.1037/0022-006X.59.1.12). Two waves cannot separate the true-score correlation from the
error variance, so :math:`\rho` is learnt almost only from its prior (the data bound it only
through the true-score covariance staying positive definite); the data inform the rest.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from alliance_bayes.model.change.design import ChangeDesign, covariate_prior_sd
from alliance_bayes.spec import ModelSpec

__all__ = ["beta_parameters", "build_change_model", "covariate_shifts"]


def beta_parameters(mean: float, sd: float) -> tuple[float, float]:
    r"""Beta(α, β) with the given mean :math:`m` and SD :math:`s`.

    :math:`\kappa = m(1-m)/s^2 - 1`, :math:`\alpha = m\kappa`, :math:`\beta = (1-m)\kappa`.
    """
    kappa = mean * (1.0 - mean) / sd**2 - 1.0
    return mean * kappa, (1.0 - mean) * kappa


def build_change_model(spec: ModelSpec, design: ChangeDesign) -> pm.Model:
    """The PyMC model of the module docstring (see :class:`~alliance_bayes.spec.ChangeSpec`)."""
    c = spec.change_priors
    assert c is not None
    scales = design.scales()
    coords = {
        "care_type": list(design.care_types),
        "time": ["baseline", "followup"],
        "provider_type": list(design.provider_types),
        "provider": design.frame.providers["provider"].tolist(),
        "client": np.arange(design.n_clients),
        "client_followed": np.arange(design.x2.size),
    } | ({"covariate": list(design.covariate_names)} if design.covariate_names else {})
    with pm.Model(coords=coords) as model:
        care = pm.Data("care", design.care, dims="client")
        x1_data = pm.Data("x1_data", design.x1, dims="client")
        followed = pm.Data("followed", design.followed, dims="client_followed")
        pm.Data("baseline", design.x1[design.followed], dims="client_followed")
        index = pm.Data("member_index", design.member_index)
        weight = pm.Data("member_weight", design.member_weight)

        mu1 = pm.Normal(
            "mu_true_baseline", scales["baseline_mean"], c.true_mean_sd, dims="care_type"
        )
        change = pm.Normal("true_change", 0.0, c.true_change_sd, dims="care_type")
        mu2 = pm.Deterministic("mu_true_followup", mu1 + change, dims="care_type")
        tau = pm.HalfNormal("sd_true", c.true_sd_sd, dims="time")
        # corr = 2B − 1 with B ~ Beta(2, 2): symmetric about 0, no mass piled at ±1.
        corr = pm.Deterministic("corr_true", 2.0 * pm.Beta("corr_true_01", 2.0, 2.0) - 1.0)
        a, b = beta_parameters(design.reliability.mean, design.reliability.sd)
        rho = pm.Beta("reliability", a, b)
        sigma_e = pm.Deterministic("sigma_error", pt.sqrt(1.0 - rho) * scales["baseline_sd"])

        sd_u = pm.HalfNormal("sd_provider", spec.priors.sd_provider_sd, dims="provider_type")
        z_u = pm.Normal("z_provider", 0.0, 1.0, dims="provider")
        u = pm.Deterministic("u_provider", z_u * sd_u[design.provider_type], dims="provider")
        v = (weight * u[index]).sum(axis=1)
        # The mean and spread of the provider part among each care type's clients: the estimands
        # are marginal over the study's own providers.
        n_care = len(design.care_types)
        counts = np.maximum(np.bincount(design.care, minlength=n_care), 1).astype(float)
        one_hot = (design.care[:, None] == np.arange(n_care)).astype(float)
        mean_v = (one_hot * v[:, None]).sum(axis=0) / counts
        pm.Deterministic("mean_provider_care", mean_v, dims="care_type")
        pm.Deterministic(
            "var_provider_care",
            (one_hot * (v**2)[:, None]).sum(axis=0) / counts - mean_v**2,
            dims="care_type",
        )

        m1, m2 = mu1[care], mu2[care] + v
        if design.covariate_names:
            shift1, shift2 = covariate_shifts(spec, design)
            m1, m2 = m1 + shift1, m2 + shift2

        v1 = tau[0] ** 2 + sigma_e**2
        cov = corr * tau[0] * tau[1]
        pm.Normal("x1", m1, pt.sqrt(v1), observed=x1_data, dims="client")
        resid = x1_data[followed] - m1[followed]
        mean2 = m2[followed] + cov / v1 * resid
        sd2 = pt.sqrt(tau[1] ** 2 + sigma_e**2 - cov**2 / v1)
        pm.Normal("y", mean2, sd2, observed=design.x2, dims="client_followed")
    return model


def covariate_shifts(
    spec: ModelSpec, design: ChangeDesign
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    r"""The covariate parts of every client's true baseline and follow-up means.

    Sampled per SD of the covariate (``b_covariate_baseline_z``, ``b_covariate_change_z``,
    :math:`\mathcal{N}(0, s_\beta^2)`), reported per unit of it (``b_covariate_baseline``,
    ``b_covariate_change``; the same for a level indicator, which is not scaled):
    :math:`x_i^\top\beta_1` and :math:`x_i^\top(\beta_1 + \delta)`. Must be called inside
    the model, whose coordinates have ``covariate``.
    """
    sd = covariate_prior_sd(spec)
    x = pm.Data("x_covariate", design.covariates, dims=("client", "covariate"))
    b1_z = pm.Normal("b_covariate_baseline_z", 0.0, sd, dims="covariate")
    delta_z = pm.Normal("b_covariate_change_z", 0.0, sd, dims="covariate")
    pm.Deterministic("b_covariate_baseline", b1_z / design.covariate_sds, dims="covariate")
    pm.Deterministic("b_covariate_change", delta_z / design.covariate_sds, dims="covariate")
    pm.Deterministic(
        "b_covariate_followup", (b1_z + delta_z) / design.covariate_sds, dims="covariate"
    )
    return pt.dot(x, b1_z), pt.dot(x, b1_z + delta_z)
