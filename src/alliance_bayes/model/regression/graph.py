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

- between-provider parts :math:`B_{is}` that are either the membership-weighted caseload means
  of the client scores (``[hierarchy] between = "caseload_mean"``, the default: fixed predictors,
  centred at their sample mean :math:`\bar B_s`) or built on latent provider means with the
  client scores as their indicators (``"latent_mean"``, centred at the latent grand mean
  :math:`\mu^a_s`), which models the caseload means' sampling error (Lüdtke et al. 2008,
  doi:10.1037/a0012869; :func:`latent_alliance_parts`);
- care-type intercepts :math:`\gamma_c` with coach-only care as the reference
  (:math:`\gamma_{\text{coach}} = 0`; a study that declares its provider types has its own
  reference, :mod:`alliance_bayes.data.care`), reported as ``b_care[therapist-coach]`` and
  ``b_care[both-coach]``: the difference in expected follow-up at equal alliance (the sample mean
  of the between parts, the same within parts) and equal covariates. Provider effects are mean-zero
  within provider type, so without them a care type's mean outcome has nowhere to go but the slopes
  and the provider SDs; and care type is a confounder of every alliance slope (a study of one care
  type has no ``b_care``: the term is 0);

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

Effects are in outcome points per one point of the 1–5 alliance scale, or of the alliance
instrument the study declares (``[alliance]``, :mod:`alliance_bayes.data.alliance`). The prior
scales per alliance point are stated on the 1–5 scale and multiplied by 4 over the width of a
declared range (:func:`~alliance_bayes.spec.scale_alliance_priors`, through
:func:`~alliance_bayes.model.regression.design.model_priors`), so that a slope across the whole
scale has the same prior on every instrument; so are the priors of the latent provider means
(:func:`latent_mean_priors`). The intercept prior is
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
    INTERCEPT_PRIOR_MEAN,
    LEVELS,
    OBSERVED,
    OUTCOME,
    OUTCOME_WEIGHT,
    ModelData,
    model_priors,
)
from alliance_bayes.spec import ModelSpec


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
    pr = model_priors(spec, data)
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
                mu = mu + care_intercepts(pr.b_care_sd, data.reference_index)[data.care_index]
            parts = alliance_parts(data)
            mu = mu + _subscale_effects(spec, data, parts)
        mu_fixed = mu
        if spec.predictors.alliance != "composite" and spec.hierarchy.provider_intercepts:
            mu = mu + _provider_effects(spec, data, parts[:, :, 0])

        sigma, nu = _likelihood(spec, mu, data.y, heldout=heldout)
        if not heldout:
            bayes_r2(mu, sigma, nu)
            marginal_r2(spec, mu_fixed, mu - mu_fixed, sigma, nu)
            if spec.likelihood == "censored_normal":
                share_uncensored(mu, sigma, spec.outcome_range)
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
    pr = model_priors(spec, data)
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
                care_intercepts(pr.b_care_sd, data.reference_index)
                if has_care_contrasts(model):
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
    pr = model_priors(spec, data)
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
    return pm.Deterministic("r2_bayes", v_mu / (v_mu + _residual_variance(sigma, nu)))


def _residual_variance(sigma, nu):
    if nu is None:
        return sigma**2
    return pt.switch(nu > 2, sigma**2 * nu / pt.maximum(nu - 2, 1e-9), np.inf)


def marginal_r2(
    spec: ModelSpec,
    mu_fixed: pt.TensorVariable,
    provider_part: pt.TensorVariable,
    sigma: pt.TensorVariable,
    nu: pt.TensorVariable | None = None,
) -> None:
    r"""R² without the provider effects, on the model's scale and, when censored, the observed one.

    ``r2_marginal`` (Nakagawa & Schielzeth 2013, doi:10.1111/j.2041-210x.2012.00261.x, as brms's
    ``bayes_R2(re_formula = NA)`` asks): per draw, :math:`V_f / (V_f + V_u + \sigma^2_{res})`
    with :math:`V_f` the variance over clients of the fixed part of :math:`\mu_i` (covariates,
    care type, alliance) and :math:`V_u` that of the provider part; the share of the outcome's
    model-scale variance that the predictors explain, as an OLS R² without provider terms does.

    ``r2_observed`` (censored outcomes only): the same share on the observed, bounded scale.
    With the provider part and the residual folded into one Normal of variance
    :math:`s^2 = V_u + \sigma^2`, each client's observed outcome :math:`Y_i =
    \min(\max(Z_i, L), U)`, :math:`Z_i \sim N(f_i, s^2)`, has the censored-Normal mean
    :math:`E_i` and variance :math:`W_i` in closed form, and :math:`R^2 = \operatorname{var}_i
    E_i / (\operatorname{var}_i E_i + \overline{W})`. The paper's OLS R² (fitted to the bounded
    scores, no provider terms) estimates this quantity; ``r2_bayes`` does not.
    """
    if not spec.hierarchy.provider_intercepts and spec.likelihood != "censored_normal":
        return  # no provider part and no censoring: both equal r2_bayes
    v_f, v_u = pt.var(mu_fixed), pt.var(provider_part)
    pm.Deterministic("r2_marginal", v_f / (v_f + v_u + _residual_variance(sigma, nu)))
    if spec.likelihood == "censored_normal":
        mean, var = censored_normal_moments(mu_fixed, pt.sqrt(v_u + sigma**2), spec.outcome_range)
        v_e = pt.var(mean)
        pm.Deterministic("r2_observed", v_e / (v_e + pt.mean(var)))


def share_uncensored(mu, sigma, bounds: tuple[float, float]) -> pt.TensorVariable:
    r"""``share_uncensored``: :math:`\bar P = n^{-1} \sum_i P(L < Z_i < U)`, :math:`Z_i \sim
    N(\mu_i, \sigma^2)`.

    A slope :math:`b` on the latent (uncensored) scale moves the expected observed score by
    :math:`b \bar P` on average (McDonald & Moffitt 1980, doi:10.2307/1924766): the observed-scale
    slope that an OLS fit of the bounded scores estimates.
    """
    lower, upper = (float(v) for v in bounds)
    cdf = lambda z: 0.5 * pt.erfc(-z / np.sqrt(2.0))  # noqa: E731
    return pm.Deterministic(
        "share_uncensored", pt.mean(cdf((upper - mu) / sigma) - cdf((lower - mu) / sigma))
    )


def censored_normal_moments(m, s, bounds: tuple[float, float]):
    r"""Mean and variance of :math:`\min(\max(Z, L), U)` for :math:`Z \sim N(m, s^2)`.

    With :math:`a = (L - m)/s`, :math:`b = (U - m)/s`, :math:`P = \Phi(b) - \Phi(a)`:
    :math:`E = L\Phi(a) + U(1 - \Phi(b)) + mP + s(\phi(a) - \phi(b))` and
    :math:`E[Y^2] = L^2\Phi(a) + U^2(1 - \Phi(b)) + (m^2 + s^2)P + 2ms(\phi(a) - \phi(b))
    + s^2(a\phi(a) - b\phi(b))` (Tobin 1958; Greene, *Econometric Analysis*, §19.3).
    """
    lower, upper = (float(v) for v in bounds)
    a, b = (lower - m) / s, (upper - m) / s
    cdf = lambda z: 0.5 * pt.erfc(-z / np.sqrt(2.0))  # noqa: E731
    pdf = lambda z: pt.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)  # noqa: E731
    ca, cb, pa, pb = cdf(a), cdf(b), pdf(a), pdf(b)
    inside = cb - ca
    mean = lower * ca + upper * (1 - cb) + m * inside + s * (pa - pb)
    square = (
        lower**2 * ca
        + upper**2 * (1 - cb)
        + (m**2 + s**2) * inside
        + 2 * m * s * (pa - pb)
        + s**2 * (a * pa - b * pb)
    )
    return mean, square - mean**2


def covariate_slopes(
    prior_sd: float | np.ndarray, sds: np.ndarray, dims: tuple[str, ...] = ("covariate",)
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Covariate slopes per SD (``b_covariate_z``, sampled) and per raw unit (``b_covariate``)."""
    b_z = pm.Normal("b_covariate_z", 0.0, prior_sd, dims=dims)
    return b_z, pm.Deterministic("b_covariate", b_z / sds, dims=dims)


def care_intercepts(
    prior_sd: float | np.ndarray, reference: int = 1, dims: tuple[str, ...] = ()
) -> pt.TensorVariable:
    """Care-type intercepts against the reference care type: a (..., care_type) tensor, 0 at
    position ``reference`` (the contract's coach, position 1).

    ``b_care`` has dims ``(*dims, "care_contrast")``: every other care type minus the reference,
    in care-type order (therapist−coach, both−coach). A study of one care type has no contrasts
    and no ``b_care`` (a zero-length variable breaks the prior predictive): the term is 0.
    """
    model = pm.modelcontext(None)
    if not has_care_contrasts(model):
        return pt.zeros((*(len(model.coords[d]) for d in dims), 1))
    b_care = pm.Normal("b_care", 0.0, prior_sd, dims=(*dims, "care_contrast"))
    zero = pt.zeros_like(b_care[..., :1])
    return pt.concatenate([b_care[..., :reference], zero, b_care[..., reference:]], axis=-1)


def has_care_contrasts(model: pm.Model) -> bool:
    """Whether the model's study has more than one care type (a ``care_contrast`` to estimate)."""
    return len(model.coords.get("care_contrast") or ()) > 0


def _subscale_effects(spec: ModelSpec, data: ModelData, parts) -> pt.TensorVariable:
    """Care-type-specific subscale slopes at both levels times the client's parts: (client,)."""
    b = subscale_slopes(spec, data)
    return (b[data.care_index] * parts).sum(axis=(1, 2))


def alliance_parts(data: ModelData) -> pt.TensorVariable:
    """The within and between parts of each subscale (client, subscale, level).

    Manifest caseload means (``between = "caseload_mean"``): the data container
    ``alliance_parts``. Latent provider means (``"latent_mean"``): :func:`latent_alliance_parts`.
    """
    if data.latent is not None:
        return latent_alliance_parts(data)
    return pm.Data("alliance_parts", data.alliance, dims=("client", "subscale", "level"))


#: Priors of the latent provider means, on the 1–5 alliance scale: the subscale mean
#: N(3, 1) spans the scale at 2 SD; the client SD (Half-Normal 1) allows every score on the
#: scale; the provider SD is Gamma(2, 2/0.25) (mean 0.25, 95% within 0.03–0.70), which allows
#: provider means a point apart and has zero density at 0: with a Half-Normal(0.5) the tail ESS
#: of ``alliance_sd_provider[bond]`` fell to 331 on one of three simulated shipped-size studies
#: (the long left tail of its log that :func:`group_sd` describes).
ALLIANCE_MEAN_PRIOR = (3.0, 1.0)
ALLIANCE_CLIENT_SD = 1.0
ALLIANCE_PROVIDER_SD = 0.25


def latent_mean_priors(alliance_range: tuple[float, float] = (1.0, 5.0)) -> tuple[float, ...]:
    """The latent provider means' priors on an alliance scale: ``(centre, spread, client SD,
    provider SD)``, those above on the 1–5 scale, on another range centred at its middle and
    multiplied by its width over 4 (a 0–10 scale: N(5, 2.5), Half-Normal(2.5), mean 0.625)."""
    low, high = alliance_range
    k = (high - low) / 4.0
    # the 1–5 scale's centre, 3, is its middle too
    return (
        (low + high) / 2.0,
        ALLIANCE_MEAN_PRIOR[1] * k,
        ALLIANCE_CLIENT_SD * k,
        ALLIANCE_PROVIDER_SD * k,
    )


def latent_alliance_parts(data: ModelData) -> pt.TensorVariable:
    r"""Within and between parts around latent provider means (Lüdtke et al. 2008).

    A caseload mean of :math:`n` clients estimates the provider's mean alliance with reliability
    :math:`\tau^2 / (\tau^2 + \sigma^2 / n)`, about .35–.5 here; used as a predictor it biases
    the between slope toward the within slope (Lüdtke, Marsh, Robitzsch, Trautwein, Asparouhov &
    Muthén 2008, doi:10.1037/a0012869; the Mplus default for a level-2 covariate). Here each
    provider's mean alliance :math:`m_{ps}` is a parameter, and every client score of the study
    (:class:`~alliance_bayes.model.regression.design.LatentAlliance`) is an indicator of it, by
    multiple membership through the part weights:

    .. math::
        a_{js} \sim \mathcal N\Big(\sum_p w_{jps} m_{ps}, \sigma^a_s\Big), \qquad
        m_{ps} \sim \mathcal N(\mu^a_s, \tau^a_s),

    and the parts that enter the outcome are :math:`B_{is} = \sum_p w_{ips}(m_{ps} - \mu^a_s)`
    and :math:`W_{is} = a_{is} - \sum_p w_{ips} m_{ps}`. As :math:`\tau^a_s \to \infty` the
    posterior mean of :math:`m_{ps}` given the indicators is the least-squares fit of the
    scores on the weights, the caseload mean when every client saw one provider; a finite
    :math:`\tau^a_s` shrinks each caseload mean toward :math:`\mu^a_s` by its reliability, and
    the draws carry its uncertainty into the slopes. The indicator likelihood is a
    ``Potential`` (``alliance_indicators``), so that the pointwise log-likelihood and the
    predictive draws stay those of the outcome. Each :math:`m_{ps}` is partially non-centred by
    its reliability (:func:`alliance_noncentring`); ``alliance_provider_mean`` keeps the draws.
    """
    lat = data.latent
    dims = ("alliance_provider", "subscale")
    alliance = data.frame.alliance
    centre, spread, client_sd, provider_sd = latent_mean_priors(
        (1.0, 5.0) if alliance is None else alliance.range
    )
    mu_a = pm.Normal("alliance_mu", centre, spread, dims="subscale")
    sd_client = pm.HalfNormal("alliance_sd_client", client_sd, dims="subscale")
    sd_prov = pm.Gamma("alliance_sd_provider", alpha=2.0, beta=2.0 / provider_sd, dims="subscale")
    w = pm.Data("alliance_noncentring", alliance_noncentring(data), dims=dims)
    v = pm.Normal("v_alliance_provider", 0.0, sd_prov ** (1.0 - w), dims=dims)
    m = pm.Deterministic("alliance_provider_mean", mu_a + v * sd_prov**w, dims=dims)
    logp, within, between = [], [], []
    for k in range(len(data.subscales)):
        fitted = (lat.weight[k] * m[lat.index[k], k]).sum(axis=1)  # (indicator,)
        logp.append(pm.logp(pm.Normal.dist(fitted, sd_client[k]), lat.score[k]).sum())
        rows = lat.client_row[k]
        within.append(lat.score[k][rows] - fitted[rows])
        between.append(fitted[rows] - mu_a[k])
    pm.Potential("alliance_indicators", pt.sum(pt.stack(logp)))
    return pt.stack([pt.stack(within, axis=1), pt.stack(between, axis=1)], axis=-1)


def alliance_noncentring(data: ModelData) -> np.ndarray:
    r"""How far each latent provider mean is non-centred (alliance_provider, subscale), in [0, 1].

    As for the provider intercepts (:func:`provider_noncentring`):
    :math:`w_{ps} = \sigma^2_s / (\sigma^2_s + I_{ps} \tau^2_s)`, one minus the reliability of
    provider :math:`p`'s caseload, with :math:`I_{ps} = \sum_j w_{jps}^2` and moment estimates:
    :math:`\sigma^2_s` the mean squared deviation of the scores from their weighted caseload
    means, :math:`\tau^2_s` the variance of the caseload means minus its sampling part. A provider
    without indicators, or a subscale where that difference is not positive, is fully non-centred.
    """
    lat = data.latent
    n_prov = len(lat.provider_labels)
    out = np.ones((n_prov, len(data.subscales)))
    for k in range(len(data.subscales)):
        idx, wt, score = lat.index[k].ravel(), lat.weight[k].ravel(), lat.score[k]
        total, info, weighted = (np.zeros(n_prov) for _ in range(3))
        np.add.at(total, idx, wt)
        np.add.at(info, idx, wt**2)
        np.add.at(weighted, idx, wt * np.repeat(score, lat.index[k].shape[1]))
        seen = total > 0
        means = np.where(seen, weighted / np.where(seen, total, 1.0), 0.0)
        fitted = (lat.weight[k] * means[lat.index[k]]).sum(axis=1)
        sigma2 = float(np.mean((score - fitted) ** 2))
        noise = sigma2 * info[seen] / total[seen] ** 2
        tau2 = float(np.var(means[seen]) - np.mean(noise))
        if tau2 > 0:
            out[seen, k] = sigma2 / (sigma2 + info[seen] * tau2)
    return out


def subscale_slopes(spec: ModelSpec, data: ModelData) -> pt.TensorVariable:
    """Care-type-specific subscale slopes ``b`` (care_type, subscale, level), partially pooled."""
    pr = model_priors(spec, data)
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
        f"{data.care_types[c]},{data.subscales[k]},{LEVELS[v]}"
        for c, k, v in np.ndindex(*centred.shape)
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
    shape = (len(data.care_types), len(data.subscales), len(LEVELS))
    design = np.column_stack([np.ones(data.n_clients), data.baseline, data.covariates])
    coef, *_ = np.linalg.lstsq(design, data.tuning_y, rcond=None)
    sigma_hat = float(np.std(data.tuning_y - design @ coef))
    centred = np.zeros(shape, dtype=bool)
    tau = model_priors(spec, data).sd_b_sd
    for c in range(shape[0]):
        x = data.alliance[data.care_index == c]
        if len(x) < 2:
            continue
        ss = ((x - x.mean(axis=0)) ** 2).sum(axis=0)  # (subscale, level)
        centred[c] = sigma_hat / np.sqrt(np.maximum(ss, 1e-12)) < tau
    return centred


def _provider_effects(spec: ModelSpec, data: ModelData, within) -> pt.TensorVariable:
    """Provider intercepts (SD per provider type) and, optionally, within-slopes, by membership."""
    pr = model_priors(spec, data)
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
    slope_part = (u_slope[idx] * within[:, None, :]).sum(axis=-1)  # (client, K)
    return (weight * (u0[idx] + slope_part)).sum(axis=1)


def group_sd(
    spec: ModelSpec, name: str, scale: float | np.ndarray, dims: str | tuple[str, ...]
) -> pt.TensorVariable:
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


def provider_noncentring(data: ModelData, excess: np.ndarray | None = None) -> np.ndarray:
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
    (``constant_data/provider_noncentring``). ``excess`` (provider,), for a model with other
    provider-level terms that the least-squares fit lacks, is the variance of each provider's mean
    residual that those terms explain: its mean over a type's providers is subtracted from the
    type's moment estimate (none by default).
    """
    n = data.n_clients
    care = data.care_dummies()
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
        if excess is not None:
            sd2 -= float(np.mean(excess[of_type]))
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
