r"""The ratings model: every session rating through a graded-response model with client covariates.

Session :math:`n` of client :math:`i` (care type :math:`c_i`, country :math:`k_i`, covariates
:math:`x_i`) with provider :math:`p_n` (type :math:`t(p)`), its order :math:`o_n` within the client
(centred), and item :math:`s` (goal, bond, and task where rated), rated in one of :math:`K`
categories :math:`L, \dots, H` (the contract's 1–5, :math:`K = 5`, or a declared instrument's
whole-number range, :math:`K = H - L + 1`;
:func:`~alliance_bayes.model.latent.instrument_check.rating_scale`):

.. math::
    \Pr(r_{ns} \ge L + k) = \operatorname{logit}^{-1}\big(\alpha_s\theta_n - c_{s,k}\big),
        \quad k = 1,\dots,K-1,

    \theta_n = x_i^\top\beta + \gamma_{c_i} + u_{k_i} + \sum_{t \ne t_0} \delta_t\,([t(p_n) = t]
        - \pi_t) + a_{p_n} + e_i + \lambda o_n,

with :math:`\gamma_c = g_c - \sum_{c'} \pi_{c'} g_{c'}`, :math:`g_{c_0} = 0` for the reference
care type :math:`c_0` (``b_care``, one contrast per other care type: therapist-only and both
against coach-only care under the contract's types; :math:`\pi_c` the care types' shares of the
clients), country effects :math:`u_k = \sigma_u \tilde z_k` partially pooled (small countries borrow
strength from the others; none in a study of one country or none recorded), provider effects
:math:`a_p = \sigma_a \tilde z_p` around their type mean,
a shift :math:`\delta_t` per provider type against the reference type :math:`t_0`
(``provider_type_alliance``; :attr:`~alliance_bayes.model.ratings.design.RatingsData.provider_reference`,
coach under the contract's types, where the one shift is the scalar therapists against coaches;
otherwise one per ``provider_type_contrast``; neither ``b_care`` nor ``provider_type_alliance`` in a
study of one care type or one provider type) centred by :math:`\pi_t`, the type's share of the
providers, so that the shifts leave the location to the cut-points, a client effect :math:`e_i = \tilde z_i` of
unit SD (the scale convention of item response theory: :math:`\theta` is in client SDs, so the
discrimination :math:`\alpha_s` and every SD are identified) and a session-order slope
:math:`\lambda` (``b_session``: does alliance grow over sessions?). The tildes are standard
normals centred over their level (countries; providers within each provider type; clients
also orthogonal to the client terms, see :func:`_residualised`) and rescaled to unit variance, as
in the latent model, so that the cut-points alone carry the
location and :math:`\delta` alone the provider-type differences.

**Several items per subscale.** A declared instrument with several integer items per subscale
(the WAI-SR: four items 1–5 each) has one row per item :math:`j` instead of one per subscale:
:math:`\Pr(r_{nj} \ge L + k) = \operatorname{logit}^{-1}(\alpha_j\theta_n - c_{j,k})`, with
item-specific cut-points and discriminations under the priors below (``threshold`` dims ``(item,
cut)``, ``discrimination``, ``cutpoint_top`` dims ``item``; the ``item`` coordinate lists the
declared columns and the constant ``item_subscale`` each item's subscale), :math:`\theta_n` as
above. A reverse-scored item's rating :math:`r` enters as :math:`L + H - r`
(:func:`~alliance_bayes.model.ratings.design.prepare_ratings`). With one item per subscale the
model, its names, dimensions and coordinates are those of the subscales, as they have been.

The graded-response pieces (ordered cut-points anchored at the top, the log density on the
non-empty cells, category probabilities, predictive draws) are those of
:mod:`alliance_bayes.model.latent.measurement`, with one cell per (item, session): each cell holds
one rating. The client effect is one latent alliance shared by the items (a unidimensional
model): the items' own session-to-session disagreement is the logistic residual.

Priors (fixed; in client SDs unless stated): the top cut-point :math:`c_{s,K-1} \sim \mathcal N(0,
3)`, the :math:`K - 2` gaps below it Half-Normal(:math:`3 g_K`) (logit units), :math:`g_K = 3 / (K -
2)`: 1 on five categories, 0.6 on seven (:attr:`~alliance_bayes.model.latent.instrument_check.
RatingScale.gap_prior_factor`: more categories cut the same stretch of the latent scale more
finely, so the prior mean of the span from the lowest to the highest cut-point stays that of five,
7.2 logits); :math:`\alpha_s \sim \text{LogNormal}(0, 1)`; :math:`\beta, \gamma,
\delta \sim \mathcal N(0, 1)`; :math:`\lambda \sim \mathcal N(0, 0.25)` per session;
:math:`\sigma_a, \sigma_u \sim \text{Half-Normal}(0.5)`.

The observed variable ``ratings`` is the (item, category) count table, as in the latent model; its
log density is that of every session rating, and its predictive draws are sums of per-session
draws, so the predictive check compares the category shares (the ceiling included).

Sampling on the shipped study
-----------------------------
3,087 clients, 17,580 sessions, 35,160 ratings; nutpie + numba on a shared 2-core machine.
Uncentred care effects and client effects only centred over clients mixed slowly along two ridges
(R-hat 1.05 for ``b_care[both-coach]``, then 1.03 for the age slope); the centring and the
projection above removed both. Sampled in client SDs, two more stayed slow (smallest bulk ESS
155 of 2,000 draws, R-hat up to 1.027 for provider and client effects): the discriminations
against the spread of all 3,087 client effects (scaling :math:`\alpha` up and every
:math:`\tilde z_i` down together), and the provider effects, fully non-centred although about 20
clients inform each. The model is therefore sampled on the logit scale of the client effects,
:math:`a_0 = (\prod_s \alpha_s)^{1/S}`: every term of :math:`\theta` is drawn as :math:`a_0`
times itself (``*_logit``; :math:`a_0 x \sim \mathcal N(0, a_0 s)` is :math:`x \sim \mathcal
N(0, s)`, the same prior), the client effects :math:`\varepsilon_i \sim \mathcal N(0, a_0)` and the
provider effects partially non-centred by their information (:func:`client_noncentring`,
:func:`provider_noncentring`; mostly close to centred), the items through :math:`\alpha_s / a_0`
with their log-ratios on an orthonormal zero-sum basis (:func:`zero_sum_basis`). The model and
its priors are unchanged; the names in client SDs (``b_covariate``, ``b_care``,
``provider_type_alliance``, ``b_session``, ``discrimination``) are kept as deterministics.

References
----------
Samejima, F. (1969). Estimation of latent ability using a response pattern of graded scores.
Psychometrika Monograph Supplement 17.
Bürkner, P.-C. & Vuorre, M. (2019). Ordinal regression models in psychology: a tutorial. Advances
in Methods and Practices in Psychological Science 2, 77–101. doi:10.1177/2515245918823199.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from alliance_bayes.model.latent.measurement import (
    _centred,
    _centred_within,
    observe_rating_table,
)
from alliance_bayes.model.ratings.design import RatingsData
from alliance_bayes.spec import ModelSpec

__all__ = ["PRIORS", "build_ratings_model", "client_noncentring", "provider_noncentring"]

#: The family's prior scales (see the module docstring).
PRIORS = {
    "threshold_sd": 3.0,
    "discrimination_sd": 1.0,
    "b_covariate_sd": 1.0,
    "b_care_sd": 1.0,
    "provider_type_alliance_sd": 1.0,
    "b_session_sd": 0.25,
    "sd_provider_sd": 0.5,
    "sd_country_sd": 0.5,
}


def client_basis(data: RatingsData) -> np.ndarray:
    """Orthonormal basis (client, r) of the columns the client terms already span: care-type and
    country indicators and the covariates."""
    n = data.n_clients
    columns = [
        np.eye(len(data.care_types))[data.care_index],
        np.eye(len(data.countries))[data.country_index],
        data.covariates,
    ]
    u, sv, _ = np.linalg.svd(np.column_stack(columns).reshape(n, -1), full_matrices=False)
    return u[:, sv > 1e-9 * sv[0]]


def _residualised(z, data: RatingsData):
    r"""Client effects orthogonal to the client terms, rescaled to unit variance.

    :math:`\tilde z = (I - QQ^\top) z \sqrt{n / (n - r)}` with :math:`Q` from
    :func:`client_basis`: the generalisation of centring (which projects out the intercept
    only). Without it, moving a slope (or a country or care effect) and every client effect along
    that column together leaves :math:`\theta` unchanged and is held only by the prior of
    :math:`z`, a ridge through thousands of dimensions that a diagonal mass matrix cannot follow
    (R-hat 1.03 for the age slope on the shipped study). Projected, each term alone carries its
    direction, but the model is not the same: it is a restricted regression (Hodges & Reich 2010,
    doi:10.1198/tast.2010.10052), whose client terms' intervals leave out the clients' own
    variation along their columns — in-sample intervals, too narrow for the population
    (docs/models.md, the known limitation of ``alliance_ratings``).
    """
    q = client_basis(data)
    n, r = q.shape
    return (z - pt.dot(q, pt.dot(q.T, z))) * np.sqrt(n / (n - r))


def build_ratings_model(spec: ModelSpec, data: RatingsData) -> pm.Model:
    """The PyMC model of the module docstring, sampled on the logit scale (see "Sampling")."""
    pr = PRIORS
    rows = data.rows  # "subscale", or "item" with several items per subscale
    n_items = data.counts.shape[0]
    with pm.Model(coords=data.coords()) as model:
        if data.several_items:
            pm.Data("item_subscale", data.item_subscale, dims="item")
        cut_top = pm.Normal("cutpoint_top", 0.0, pr["threshold_sd"], dims=rows)
        gap_sd = pr["threshold_sd"] * data.scale.gap_prior_factor
        gaps = pm.HalfNormal("cutpoint_gap", gap_sd, dims=(rows, "gap"))
        below = pt.cumsum(gaps[:, ::-1], axis=-1)[:, ::-1]  # c_{K-1} - c_k, k = 1..K-2
        cut = pt.concatenate([cut_top[:, None] - below, cut_top[:, None]], axis=-1)
        # log alpha_s iid N(0, s^2) is log alpha_0 ~ N(0, s^2 / S) plus independent zero-sum
        # deviations, s H y with y ~ N(0, I_{S-1}) and H an orthonormal basis of the zero-sum
        # contrasts: the same prior, split into the scale of the client effects and the items'
        # ratios, each direction identified (S free deviations held together only by their mean
        # mixed at R-hat 1.15)
        log_a0 = pm.Normal(
            "log_discrimination_mean", 0.0, pr["discrimination_sd"] / np.sqrt(n_items)
        )
        if n_items > 1:
            basis = zero_sum_basis(n_items)
            model.add_coord("item_contrast", [f"contrast{k + 1}" for k in range(n_items - 1)])
            y = pm.Normal(
                "log_discrimination_contrast", 0.0, pr["discrimination_sd"], dims="item_contrast"
            )
            ratio = pt.dot(basis, y)
        else:
            ratio = pt.zeros(1)
        a0 = pt.exp(log_a0)
        disc = pm.Deterministic("discrimination", pt.exp(log_a0 + ratio), dims=rows)
        pm.Deterministic("threshold", cut / disc[:, None], dims=(rows, "cut"))

        def in_client_sds(name: str, sd: float, dims: str | None = None):
            # a_0 x ~ N(0, a_0 sd) is x ~ N(0, sd) on the logit scale of the client effects
            scaled = pm.Normal(f"{name}_logit", 0.0, a0 * sd, dims=dims)
            pm.Deterministic(name, scaled / a0, dims=dims)
            return scaled

        beta = in_client_sds("b_covariate", pr["b_covariate_sd"], "covariate")
        care_shift = _care_shift(data, in_client_sds, pr["b_care_sd"])
        # One country (or none recorded) has no country effect to estimate: its SD would be
        # the prior alone.
        country = 0.0
        if len(data.countries) > 1:
            sd_country = pm.HalfNormal("sd_country_latent", pr["sd_country_sd"])
            z_country = pm.Normal("z_country", 0.0, 1.0, dims="country")
            country = a0 * (_centred(z_country) * sd_country)[data.country_index]
        client = (
            pt.dot(data.covariates, beta)
            + care_shift[data.care_index]
            + country
            + _residualised(_client_effects(data, a0), data)
        )
        type_shift = _provider_type_shift(data, in_client_sds, pr["provider_type_alliance_sd"])
        sd_prov = pm.HalfNormal("sd_provider_latent", pr["sd_provider_sd"])
        sd_logit = a0 * sd_prov
        w = pm.Data("provider_noncentring", provider_noncentring(data), dims="provider")
        v = pm.Normal("v_provider", 0.0, sd_logit ** (1.0 - w), dims="provider")
        z_prov = _centred_within((v * sd_logit ** (w - 1.0))[:, None], data.provider_type_index)
        provider = type_shift + sd_logit * z_prov[:, 0]
        lam = in_client_sds("b_session", pr["b_session_sd"])
        eta = (
            client[data.session_client] + provider[data.session_provider] + lam * data.session_order
        )
        linear = (
            pt.exp(ratio)[:, None] * eta[None, :]
        )  # alpha_s theta = (alpha_s / a_0) eta, (S, N)
        g = pt.exp(-linear)[:, :, None] * pt.exp(cut)[:, None, :]  # (S, N, K - 1)
        observe_rating_table(
            data.counts.sum(axis=-1), data.counts, data.category_totals, linear, g, cut, gaps, rows
        )
    return model


def _care_shift(data: RatingsData, in_client_sds, prior_sd: float):
    r"""Each care type's shift of the client effects, :math:`\gamma_c - \sum_k w_k \gamma_k`
    with :math:`\gamma` 0 at the reference (``b_care`` the others) and :math:`w` the clients'
    care-type shares: a (care_type,) tensor, 0 for a study of one care type (no ``b_care``: a
    zero-length variable breaks the prior predictive)."""
    n_care = len(data.care_types)
    if not data.care_contrasts:
        return pt.zeros(n_care)
    b_care = in_client_sds("b_care", prior_sd, "care_contrast")
    contrasted = [k for k, c in enumerate(data.care_types) if c != data.care_reference]
    care_shift = pt.zeros(n_care)[contrasted].set(b_care)
    # centred over the clients, like every other term: otherwise shifting the care effects
    # and every cut-point together is a ridge the sampler crawls along (R-hat 1.05 on the
    # shipped study)
    share = np.bincount(data.care_index, minlength=n_care) / data.n_clients
    return care_shift - pt.dot(share, care_shift)


def _provider_type_shift(data: RatingsData, in_client_sds, prior_sd: float):
    r"""Each provider's provider-type shift, :math:`x_p^\top \delta` with :math:`x_p` its centred
    provider-type contrasts: a (provider,) tensor; 0 for a study of one provider type (no
    ``provider_type_alliance``)."""
    x_type = data.provider_type_design  # (provider, provider contrast), centred
    if not data.provider_contrasts:
        return pt.zeros(x_type.shape[0])
    if data.provider_shift_is_scalar:
        delta = in_client_sds("provider_type_alliance", prior_sd)
        return delta * x_type[:, 0]
    delta = in_client_sds("provider_type_alliance", prior_sd, "provider_type_contrast")
    return pt.dot(x_type, delta)


def _client_effects(data: RatingsData, a0) -> pt.TensorVariable:
    """Client effects on the logit scale, :math:`\\varepsilon_i \\sim \\mathcal N(0, a_0)`,
    partially non-centred by their information (:func:`client_noncentring`): most clients are
    rated often enough to be sampled centred, the few rated once or twice not."""
    w = pm.Data("client_noncentring", client_noncentring(data), dims="client")
    v = pm.Normal("client_alliance_logit", 0.0, a0 ** (1.0 - w), dims="client")
    return v * a0**w


def client_noncentring(data: RatingsData) -> np.ndarray:
    r"""How far each client's effect is non-centred: :math:`w_i = 1 / (1 + m_i \hat r)`.

    One minus the reliability of the client's mean rating, with :math:`m_i` its ratings and
    :math:`\hat r` the one-way ANOVA moment estimate of the between-client to within-client
    variance ratio of the ratings (as :func:`provider_noncentring` for providers).
    """
    rated = data.counts.sum(axis=-1).astype(bool)  # (S, N)
    values = (data.counts * np.arange(1, data.counts.shape[-1] + 1)).sum(axis=-1)
    client = np.broadcast_to(data.session_client, rated.shape)[rated]
    r = pd.Series(values[rated].astype(float)).groupby(client)
    m = r.size()
    within = float((r.var(ddof=1).fillna(0.0) * (m - 1)).sum() / max((m - 1).sum(), 1))
    between = float(r.mean().var(ddof=1) - within * np.mean(1.0 / m))
    w = np.ones(data.n_clients)
    if within > 0 and between > 0:
        w[m.index.to_numpy()] = 1.0 / (1.0 + m.to_numpy() * between / within)
    return w


def zero_sum_basis(n: int) -> np.ndarray:
    """(n, n - 1) orthonormal columns orthogonal to the ones vector: :math:`HH^\\top = I - J/n`."""
    u, _, _ = np.linalg.svd(np.eye(n) - 1.0 / n)
    return u[:, : n - 1]


def provider_noncentring(data: RatingsData) -> np.ndarray:
    r"""How far each provider's effect is non-centred: :math:`w_p \in [0, 1]` (1 = fully).

    As :func:`alliance_bayes.model.regression.graph.provider_noncentring` for the outcome models:
    :math:`w_p = 1 / (1 + n_p \hat r)`, one minus the reliability of provider :math:`p`'s caseload
    mean, with :math:`n_p` its clients and :math:`\hat r = \hat\sigma_a^2 / \hat\sigma_e^2` a
    moment estimate of the provider-to-client variance ratio from the clients' mean ratings with
    the provider (one-way ANOVA: the variance of the caseload means minus its sampling part,
    against the variance within caseloads). The ratio is estimated on the rating scale and used on
    the latent one; a rough value costs only efficiency, never the model (Papaspiliopoulos,
    Roberts & Sköld 2003). Providers are well informed here (about 20 clients of an alliance ICC
    near .15: reliability about .75), where fully non-centred effects mix slowly.
    """
    rated = data.counts.sum(axis=-1)  # (S, N) 1 where rated
    values = (data.counts * np.arange(1, data.counts.shape[-1] + 1)).sum(axis=-1)
    session_mean = values.sum(axis=0) / np.maximum(rated.sum(axis=0), 1)
    pair = pd.DataFrame(
        {"client": data.session_client, "provider": data.session_provider, "r": session_mean}
    )
    caseload = pair.groupby(["provider", "client"])["r"].mean().groupby(level="provider")
    n_p = caseload.size()
    means = caseload.mean()
    within = float((caseload.var(ddof=1).fillna(0.0) * (n_p - 1)).sum() / max((n_p - 1).sum(), 1))
    between = float(means.var(ddof=1) - within * np.mean(1.0 / n_p)) if len(n_p) > 2 else 0.0
    w = np.ones(len(data.provider_type_index))
    if within > 0 and between > 0:
        w[n_p.index.to_numpy()] = 1.0 / (1.0 + n_p.to_numpy() * between / within)
    return w
