"""The ratings model in equations and its priors (the report's Model and Priors sections).

See :mod:`alliance_bayes.model.ratings.graph` for the maths and the priors' reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alliance_bayes.model.latent.describe import cutpoint_row
from alliance_bayes.model.latent.instrument_check import RatingScale
from alliance_bayes.model.ratings.graph import PRIORS
from alliance_bayes.model.regression.describe import PriorRow
from alliance_bayes.spec import ModelSpec

__all__ = ["FittedTerms", "data_variables", "equations", "fitted_terms", "prior_rows"]


def equations(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    r"""The graded-response model, the latent alliance and the reported rating scale.

    With the fit's ``scales`` only the terms its model has: :math:`\gamma_c` with two or more care
    types, :math:`u_k` with two or more countries, :math:`\delta_t` with two or more provider
    types (:func:`fitted_terms`); without them every term.
    """
    terms = fitted_terms(scales)
    latent = r"\theta_n = x_i^\top\beta"
    if terms.care:
        latent += r" + \gamma_{c_i}"
    if terms.country:
        latent += r" + u_{k_i}"
    if terms.provider_type:
        latent += r" + \sum_{t \neq t_0} \delta_t([t(p_n) = t] - \pi_t)"
    effects = r"e_i \sim \mathcal{N}(0, 1), \quad a_p \sim \mathcal{N}(0, \sigma_a^2)"
    if terms.country:
        effects += r", \quad u_k \sim \mathcal{N}(0, \sigma_u^2)"
    return [
        r"P(r_{ns} \geq L + k) = \mathrm{logit}^{-1}(\alpha_s \theta_n - c_{s,k}), "
        r"\quad k = 1, \ldots, K - 1",
        latent + r" + a_{p_n} + e_i + \lambda o_n",
        effects,
        r"R(\mu) = \frac{1}{|S|}\sum_s \mathbb{E}_Z[L + \sum_{k=1}^{K-1} "
        r"\mathrm{logit}^{-1}(\alpha_s(\mu + \omega Z) - c_{s,k})], "
        r"\quad \omega = \sqrt{1 + \sigma_a^2}",
    ]


def data_variables(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """Symbols of :func:`equations` (those of the fit's terms with its ``scales``)."""
    terms = fitted_terms(scales)
    symbols = f"$x_i$: {_covariates_in_words(spec)}, each centred; "
    if terms.care:
        symbols += (
            "$\\gamma_c$: care type against the study's reference care type (coach-only care "
            "under the contract's defaults); "
        )
    if terms.country:
        symbols += "$u_k$: country $k$ (partially pooled); "
    if terms.provider_type:
        symbols += (
            "$\\delta_t$: provider type $t$'s mean against the reference type $t_0$ (therapists' "
            "against coaches' under the contract's types; $\\pi_t$: type $t$'s share of the "
            "providers); "
        )
    return [
        "$r_{ns}$: the rating of item $s$ (goal, bond; task where rated) at session $n$ of "
        "client $i$ with provider $p_n$, one of $K$ categories $L, \\ldots, H$ (the contract's "
        "1–5: $L = 1$, $K = 5$; a declared instrument's whole-number range otherwise); $o_n$: "
        "the session's order within the client, centred.",
        symbols + "$a_p$, $e_i$: provider and client effects; $\\theta$ in client SDs.",
        "$R$: the expected rating of a typical session (items goal and bond averaged, client and "
        "provider effects integrated out), the scale of every reported alliance estimand.",
    ]


@dataclass(frozen=True)
class FittedTerms:
    """Which of the optional terms of the latent alliance a fit's model has."""

    care: bool = True
    country: bool = True
    provider_type: bool = True


def fitted_terms(scales: Mapping[str, Any] | None) -> FittedTerms:
    """The terms the design of ``scales`` put in the model (:mod:`~alliance_bayes.model.ratings.graph`):
    care-type contrasts with two or more care types, country effects with two or more countries
    (none recorded is one), provider-type shifts with two or more provider types. Every term
    where the scales do not say (no ``scales``: the contract's study)."""
    sc = scales or {}

    def several(key: str) -> bool:
        return key not in sc or len(sc[key] or ()) > 1

    return FittedTerms(
        care=several("care_types"),
        country=several("country_share"),
        provider_type=several("provider_types"),
    )


def _type_terms(scales: Mapping[str, Any]) -> str:
    """The care-type and provider-type terms sharing the slopes' prior: those the model has (a
    study of one provider type has one care type, no contrast and no shift)."""
    terms = fitted_terms(scales)
    return (", γ (care type)" if terms.care else "") + (
        ", δ_t (provider type)" if terms.provider_type else ""
    )


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[PriorRow]:
    """The family's fixed priors (the cut-point gaps' on the fit's number of categories)."""
    p = PRIORS
    return [
        cutpoint_row(p["threshold_sd"], RatingScale.of_scales(scales)),
        PriorRow(
            "α_j (discrimination, per item)"
            if "alliance_items" in (scales or {})
            else "α_s (discrimination)",
            f"LogNormal(0, {p['discrimination_sd']:g})",
            "per client latent SD",
            "Median 1; a factor of e either way at 1 prior SD.",
        ),
        PriorRow(
            f"β ({_slopes_in_words(scales)}){_type_terms(scales)}",
            f"Normal(0, {p['b_covariate_sd']:g})",
            "client latent SDs",
            "A whole client SD per unit is one prior SD: wide against the small differences the "
            "alliance literature reports, still ruling out effects that would empty the scale."
            + _not_measured(scales),
        ),
        PriorRow(
            "λ (session order)",
            f"Normal(0, {p['b_session_sd']:g})",
            "client latent SDs per session",
            "Over 10 sessions one prior SD is 2.5 client SDs.",
        ),
        _sd_row(p, scales),
    ]


def _sd_row(p: Mapping[str, Any], scales: Mapping[str, Any]) -> PriorRow:
    """The provider SD's prior, and the country SD's where the study has two or more countries
    (one country, or none recorded, has no country effects)."""
    why = (
        "Alliance ICCs of a few per cent (Baldwin et al. 2007) put the provider SD near a "
        "fifth of the client SD"
    )
    countries = (scales or {}).get("country_share")
    if countries is not None and len(countries) < 2:
        return PriorRow(
            "σ_a (providers)",
            f"Half-Normal({p['sd_provider_sd']:g})",
            "client latent SDs",
            why + ".",
        )
    return PriorRow(
        "σ_a (providers), σ_u (countries)",
        f"Half-Normal({p['sd_provider_sd']:g}); Half-Normal({p['sd_country_sd']:g})",
        "client latent SDs",
        why + "; countries are given the same room.",
    )


#: The built-in covariates in words: by the column a spec names (the model's symbols) and by the
#: label of the ``covariate`` coordinate (the prior table's).
_BUILT_IN_WORDS = {
    "age": "age per decade",
    "male": "male (1) vs not",
    "who5_baseline": "baseline WHO-5 per 10 points",
}
_SLOPE_WORDS = {
    "age_decade": "age per decade",
    "male": "male",
    "who5_baseline_10": "baseline WHO-5 per 10",
}


def _covariates_in_words(spec: ModelSpec) -> str:
    """The spec's covariates as the model takes them (declared ones by name and coding)."""
    words = [
        _BUILT_IN_WORDS.get(c, f"{c} (declared: per SD if numeric, else against its reference)")
        for c in spec.model_covariates
    ]
    return ", ".join(words)


def _slopes_in_words(scales: Mapping[str, Any]) -> str:
    """The slopes of the fitted covariates (the design's ``covariate_means`` labels; the
    built-in three where the scales do not say), a categorical covariate's levels together."""
    labels = list((scales or {}).get("covariate_means") or _SLOPE_WORDS)
    coding = (scales or {}).get("covariate_coding") or {}
    words: list[str] = []
    for label in labels:
        stem = label.split("[", 1)[0]
        entry = coding.get(stem) or {}
        if label in _SLOPE_WORDS:
            word = _SLOPE_WORDS[label]
        elif entry.get("type") == "categorical":
            word = f"{stem} levels vs {entry.get('reference')}"
        elif entry.get("type") == "numeric":
            word = f"{label} per SD"
        else:
            word = label
        if word not in words:
            words.append(word)
    return ", ".join(words)


def _not_measured(scales: Mapping[str, Any]) -> str:
    """A sentence naming the built-in covariates the study did not measure, or ``""``."""
    words = {"age_decade": "age", "male": "sex", "who5_baseline_10": "baseline WHO-5"}
    left_out = [words.get(k, k) for k in (scales or {}).get("covariates_not_measured", [])]
    if not left_out:
        return ""
    return f" Not measured in this study, so left out of the model: {', '.join(left_out)}."
