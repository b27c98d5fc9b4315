"""The change model in equations and its priors (the report's Model and Priors sections).

The outcome's facts (label, units, cut-off, direction, the reliability prior's origin) are read
from the design's ``scales`` where given (``run.json``), else from its instrument, built in or
declared by a study loaded; before any study declaring the outcome is loaded they are described
in general terms, so that a spec can be described without its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alliance_bayes.data.instruments import BUILT_IN, instrument_of
from alliance_bayes.errors import DesignError
from alliance_bayes.model.change.design import covariate_prior_sd, direction, short_name
from alliance_bayes.model.change.graph import beta_parameters
from alliance_bayes.model.regression.describe import PriorRow
from alliance_bayes.spec import (
    CHANGE_POINT_PRIORS,
    REFERENCE_RANGE,
    ChangeSpec,
    ModelSpec,
    PriorSpec,
    SpecError,
)

__all__ = ["data_variables", "equations", "prior_rows"]


def _label(spec: ModelSpec, scales: Mapping[str, Any]) -> str:
    name = short_name(spec)
    inst = BUILT_IN.get(name) or instrument_of(spec.outcome)
    return str((scales.get("instrument") or {}).get("label") or (inst.label if inst else name))


def _units(spec: ModelSpec, scales: Mapping[str, Any]) -> str:
    units = (scales.get("instrument") or {}).get("units")
    if units:
        return str(units)
    try:
        return spec.outcome_units
    except SpecError:  # a declared outcome before a study declaring it is loaded
        return f"{_label(spec, scales)} points"


def _rule(spec: ModelSpec) -> str:
    """Who is elevated at baseline, in words (``"WHO-5 baseline <= 28 (the paper's rule)"``)."""
    name = short_name(spec)
    try:
        sign, cutoff = direction(spec)
    except DesignError:  # declared by no study loaded yet, or declared without a cut-off
        return f"baseline at or beyond the cut-off declared in [outcomes.{name}] (worse side)"
    label = _label(spec, {})
    rule = f"{label} baseline {'<=' if sign > 0 else '>='} {cutoff:g}"
    if name in BUILT_IN:
        return f"{rule} (the paper's rule)"
    return f"{rule} (the cut-off declared in [outcomes.{name}])"


def equations(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """The measurement model, the true scores, and what the estimands condition on (``scales``:
    the fit's, taken for the families' common signature)."""
    covariates = bool(spec.predictors.covariates)
    x1, x2 = (r" + x_i^\top\beta_1", r" + x_i^\top(\beta_1 + \delta)") if covariates else ("", "")
    return [
        r"y_i \equiv X_{2i} = T_{2i} + e_{2i}, \quad X_{1i} = T_{1i} + e_{1i}, "
        r"\quad e_{ti} \sim \mathcal{N}(0, \sigma_e^2), \quad \sigma_e^2 = (1 - \rho)\, s_{X_1}^2",
        r"(T_{1i}, T_{2i}) \sim \mathcal{N}_2, \quad \mathbb{E}\,T_{1i} = \mu_{1c(i)}"
        + x1
        + r", \quad "
        r"\mathbb{E}\,T_{2i} = \mu_{2c(i)} + v_i"
        + x2
        + r", \quad \mathrm{SD}(T_t) = \tau_t, \quad "
        r"\mathrm{corr}(T_1, T_2) = r",
        r"v_i = \sum_p w_{ip} u_p, \quad u_p \sim \mathcal{N}(0, \sigma_{u,\mathrm{type}(p)}^2)",
        r"\Delta = \mathbb{E}[X_2 - X_1 \mid X_1 \in E], \quad "
        r"\Delta_T = \mathbb{E}[T_2 - T_1 \mid X_1 \in E], \quad "
        r"RC = 1.96\sqrt{2}\, s_{X_1}\sqrt{1 - \rho}",
    ]


def data_variables(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """Symbols of :func:`equations`."""
    return [
        f"$X_{{1i}}$, $X_{{2i}}$: client $i$'s observed baseline and follow-up (in {_units(spec, {})}); "
        "$T$: the true scores; $c(i)$: care type; $w_{ip}$: the share of the client's sessions "
        "with provider $p$ (multiple membership). Every client enters with the baseline; the "
        "follow-up where observed (missing at random given baseline, care type and providers).",
        f"$E$: elevated at baseline, the observed {_rule(spec)}; $s_{{X_1}}$: the SD "
        "of the observed baseline over every client; $\\rho$: test–retest reliability.",
        "The estimands are closed forms of each draw given a client's observed baseline "
        "(conditional normal means and probabilities), averaged over the study's elevated "
        "clients' own baselines, those without a follow-up included; the standardised change "
        "divides by $s_{X_1}$.",
        *_covariate_variables(spec),
    ]


def _covariate_variables(spec: ModelSpec) -> list[str]:
    """The covariates' line of :func:`data_variables` (none without covariates)."""
    names = spec.predictors.covariates
    if not names:
        return []
    levels = (
        "; a declared categorical covariate enters as one indicator per level other than its "
        "reference, centred but not scaled"
        if spec.declared_covariates
        else ""
    )
    return [
        f"$x_i$: the client covariates ({', '.join(names)}), each centred at its sample mean "
        f"and divided by its sample SD{levels}. $\\beta_1$: their slopes on the true baseline, "
        "$\\delta$: on the true change (reported per unit as `baseline:b_<covariate>`, "
        "`change:b_<covariate>` and, their sum, `followup:b_<covariate>`). The care-type means "
        "$\\mu_{tc}$ are those of clients at the sample's covariate means; the change "
        "estimands shift them by the elevated clients' own mean covariates."
    ]


def _sentence(text: str) -> str:
    text = str(text).strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _reliability_row(spec: ModelSpec, scales: Mapping[str, Any]) -> PriorRow:
    """The reliability prior as the design chose it (``scales``), else the spec's own."""
    c = spec.change
    assert c is not None
    name, label = short_name(spec), _label(spec, scales)
    chosen = scales.get("reliability_prior")
    if name in BUILT_IN or not chosen:
        mean, sd = c.reliability_mean, c.reliability_sd
        why = c.reliability_source or "The instrument's published test–retest reliability."
        if name not in BUILT_IN:
            why = (
                f"Centred on the test–retest reliability the study declares in [outcomes.{name}] "
                f"where it declares one, else on the spec's [change] values shown here. {why}"
            )
    else:
        mean, sd = float(chosen["mean"]), float(chosen["sd"])
        if chosen["declared"]:
            why = (
                f"Centred on the test–retest reliability the study declares for the {label} "
                f"([outcomes.{name}]): {_sentence(chosen['source'])} The SD is the spec's "
                "reliability_sd, or the default where it states none for this outcome."
            )
        else:
            why = (
                f"The {label} declares no test–retest reliability ([outcomes.{name}]), so the "
                f"spec's [change] prior is used: {chosen['source']}"
            )
    a, b = beta_parameters(mean, sd)
    return PriorRow(
        "ρ (test–retest reliability)",
        f"Beta({a:.1f}, {b:.1f}): mean {mean:g}, SD {sd:g}",
        "0–1",
        why,
    )


def _scaled(spec: ModelSpec, name: str, label: str) -> str:
    """For a declared outcome's scale the spec does not state for it, how it was scaled."""
    if not spec.declared_outcome:
        return ""
    if name == "sd_provider_sd":
        if name in spec.priors_stated:
            return ""
        default = getattr(PriorSpec(), name)
    elif name in spec.change_stated:
        return ""
    else:
        default = getattr(ChangeSpec(), name)
    return (
        f" Scaled to the {label}'s declared range (the spec states none for it): the default "
        f"{default:g} on WHO-5's 0–{REFERENCE_RANGE:g} times range/{REFERENCE_RANGE:g}."
    )


def _covariate_rows(spec: ModelSpec, scales: Mapping[str, Any], units: str) -> list[PriorRow]:
    """The covariate slopes' prior (none without covariates), as :func:`covariate_prior_sd`
    scales it; its values per unit of each column where ``scales`` has their SDs."""
    names = spec.predictors.covariates
    if not names:
        return []
    try:
        sd = covariate_prior_sd(spec)
    except SpecError:  # a declared outcome before a study declaring it is loaded
        return [
            PriorRow(
                "β_1, δ (covariate slopes: true baseline, true change)",
                "Normal(0, b_covariate_sd) per covariate SD",
                "outcome points per covariate SD",
                "The spec's [priors] b_covariate_sd, else 5 on WHO-5's 0–100 scaled to the "
                "outcome's declared range.",
            )
        ]
    coding = scales.get("covariate_coding") or {}
    levels = [c for c in names if coding.get(c, {}).get("type") == "categorical"]
    sds = scales.get("covariate_sd") or {}
    raw = "; ".join(
        f"{c}: ±{2 * sd / float(sds[c]):.3g} per unit"
        for c in names
        if c not in levels and sds.get(c)
    )
    per = f"{units} per covariate SD" + (f"; at 2 prior SDs {raw}" if raw else "")
    if levels:
        per += "; a categorical covariate's levels: per level difference from " + ", ".join(
            f"{coding[c].get('label', c)}'s {coding[c]['reference']}" for c in levels
        )
    if "b_covariate_sd" in spec.priors_stated:
        why = "The spec's [priors] b_covariate_sd."
    else:
        why = (
            f"The default {PriorSpec().b_covariate_sd:g} on WHO-5's 0–{REFERENCE_RANGE:g} times "
            f"the outcome's range/{REFERENCE_RANGE:g} (the spec states no b_covariate_sd)."
        )
    return [
        PriorRow(
            "β_1, δ (covariate slopes: true baseline, true change)",
            f"Normal(0, {sd:.3g})",
            per,
            "Covariates enter centred and standardised, so one scale fits them all and the "
            f"care-type means stay at the sample's covariate means. {why}",
        )
    ]


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[PriorRow]:
    """One row per prior, on the outcome's own metric."""
    try:
        c, sd_provider = spec.change_priors, spec.priors.sd_provider_sd
    except SpecError:  # a declared outcome before a study declaring it is loaded: as stated
        c, sd_provider = spec.change, spec.stated_priors.sd_provider_sd
    assert c is not None
    units, label = _units(spec, scales), _label(spec, scales)
    scaled = {n: _scaled(spec, n, label) for n in (*CHANGE_POINT_PRIORS, "sd_provider_sd")}
    return [
        _reliability_row(spec, scales),
        PriorRow(
            "μ_1c (mean true baseline per care type)",
            f"Normal(sample mean, {c.true_mean_sd:g})",
            units,
            "Centred on the observed baseline mean; weak on the instrument's range."
            + scaled["true_mean_sd"],
        ),
        PriorRow(
            "μ_2c − μ_1c (mean true change per care type)",
            f"Normal(0, {c.true_change_sd:g})",
            units,
            "Centred on no change; a change of a whole baseline SD is about one prior SD."
            + scaled["true_change_sd"],
        ),
        PriorRow(
            "τ_1, τ_2 (client SD of the true scores)",
            f"Half-Normal({c.true_sd_sd:g})",
            units,
            "Covers the observed SDs without forcing them." + scaled["true_sd_sd"],
        ),
        PriorRow(
            "r (true baseline–follow-up correlation)",
            "2·Beta(2, 2) − 1",
            "correlation",
            "Symmetric about 0, no mass piled at ±1.",
        ),
        PriorRow(
            "σ_u (provider SD of the follow-up, per provider type)",
            f"Half-Normal({sd_provider:g})",
            units,
            "Provider effects on outcomes are usually a few points (a few per cent of variance)."
            + scaled["sd_provider_sd"],
        ),
        *_covariate_rows(spec, scales, units),
    ]
