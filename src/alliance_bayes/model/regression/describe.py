r"""The model of a spec in words and equations, and its priors on the data's units (for the report).

:func:`equations` renders the likelihood and the linear predictor term by term from the spec (the
same switches :func:`~alliance_bayes.model.regression.graph.build_model` reads), so the report's
``## Model`` section cannot describe a model other than the one that was fitted.
:func:`prior_rows` lists every prior with its scale translated to the data's units (using the
sample SDs of the fitted clients) and one line of justification, the items the BARG (Kruschke
2021, doi:10.1038/s41562-021-01177-7) and the WAMBS checklist (Depaoli & van de Schoot 2017,
doi:10.1037/met0000065) ask of a prior. Equations are TeX that matplotlib's mathtext can draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.care import CARE_TYPES
from alliance_bayes.spec import ModelSpec, PriorSpec, scale_alliance_priors

__all__ = ["PriorRow", "care_type_count", "data_variables", "equations", "prior_rows"]


@dataclass(frozen=True)
class PriorRow:
    """One prior: the parameter, its distribution, its scale on the data's units, why."""

    parameter: str
    distribution: str
    on_data_scale: str
    justification: str


def _likelihood_lines(spec: ModelSpec, mu: str = r"\mu_i") -> list[str]:
    lo, hi = (f"{b:g}" for b in spec.outcome_range)
    if spec.likelihood == "student_t":
        return [
            rf"y_i \sim t_\nu({mu},\ \sigma), \quad \nu - 1 \sim \mathrm{{Exp}}({spec.priors.nu_rate:.3g})"
        ]
    if spec.likelihood == "censored_normal":
        return [
            rf"y_i = \min({hi},\ \max({lo},\ y^*_i)), \quad y^*_i \sim \mathcal{{N}}({mu},\ \sigma)"
        ]
    return [rf"y_i \sim \mathcal{{N}}({mu},\ \sigma)"]


def _alliance_term(
    spec: ModelSpec, within: str = "W_{is}", between: str = r"(B_{is} - \bar{B}_s)"
) -> str:
    if spec.predictors.alliance == "composite":
        return r"b_a\,(a_i - \bar{a})"
    b = "b_{c[i],"
    return rf"\sum_s \left({b}sW}} {within} + {b}sB}} {between}\right)"


def care_type_count(scales: Mapping[str, Any] | None) -> int | None:
    """How many care types the fit's clients have, as its ``scales`` record them (``care_types``,
    or the care types of every outcome's clients in the latent family); ``None`` where they do
    not say. With one there is no care-type contrast, so no :math:`\\gamma_c` in the model."""
    sc = scales or {}
    if sc.get("care_types"):
        return len(sc["care_types"])
    by_outcome = sc.get("care_count_by_outcome") or sc.get("care_share_by_outcome")
    if by_outcome:
        return len({str(c) for counts in by_outcome.values() for c in counts})
    return None


_NUMBER_WORDS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


def _care_types_in_words(scales: Mapping[str, Any] | None) -> str:
    """``"Three care types"``: the fit's care types counted (:func:`care_type_count`), the
    contract's three where its ``scales`` do not say."""
    count = care_type_count(scales) or len(CARE_TYPES)
    number = _NUMBER_WORDS[count - 1] if count <= len(_NUMBER_WORDS) else str(count)
    return f"{number} care type{'s' if count > 1 else ''}"


def _care_intercepts(spec: ModelSpec, scales: Mapping[str, Any] | None) -> bool:
    """Whether the model has care-type intercepts: switched on, with subscale slopes, and more
    than one care type among the fit's clients (where its ``scales`` say)."""
    h = spec.hierarchy
    count = care_type_count(scales)
    return (
        spec.predictors.alliance != "composite"
        and h.care_type_intercepts
        and (count is None or count > 1)
    )


def equations(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """TeX lines: likelihood, linear predictor, then each hierarchical layer the spec switches on
    (care-type intercepts only with two or more care types where the fit's ``scales`` say)."""
    h, p = spec.hierarchy, spec.predictors
    terms = [r"\alpha"]
    hier = p.alliance != "composite"
    care = _care_intercepts(spec, scales)
    if care:
        terms.append(r"\gamma_{c[i]}")
    terms.append(r"\beta_0\,(y^0_i - \bar{y}^0)")
    if p.covariates:
        terms.append(r"\sum_j \beta_j z_{ij}")
    latent = hier and h.between == "latent_mean"
    terms.append(
        _alliance_term(spec, between=r"(B_{is} - \mu^a_s)") if latent else _alliance_term(spec)
    )
    if hier and h.provider_intercepts:
        slope = r" + \sum_s u_{ps} W_{is}" if h.provider_slopes else ""
        terms.append(rf"\sum_p w_{{ip}} (u_{{p0}}{slope})")
    lines = [*_likelihood_lines(spec), r"\mu_i = " + " + ".join(terms)]
    if care:
        lines.append(r"\gamma_{r} = 0, \quad \gamma_c \sim \mathcal{N}(0,\ s_\gamma)")
    if hier:
        if h.care_type_pooling:
            tau = (
                r"\tau\ \mathrm{fixed}"
                if h.care_slope_sd == "fixed"
                else r"\tau_{sl} \sim \mathrm{Half}\mathcal{N}(s_\tau)"
            )
            lines.append(rf"b_{{c,s,l}} \sim \mathcal{{N}}(\mu^b_{{s,l}},\ \tau), \quad {tau}")
        else:
            lines.append(r"b_{c,s,l} \sim \mathcal{N}(0,\ s_b)")
    if latent:
        lines += [
            r"B_{is} = \sum_p w_{ips} m_{ps}, \quad W_{is} = a_{is} - B_{is}, \quad "
            r"a_{js} \sim \mathcal{N}(\sum_p w_{jps} m_{ps},\ \sigma^a_s)",
            r"m_{ps} \sim \mathcal{N}(\mu^a_s,\ \tau^a_s)",
        ]
    if hier and h.provider_intercepts:
        if h.provider_slopes:
            corr = r"\Omega \sim \mathrm{LKJ}(\eta)" if h.provider_correlation else r"\Omega = I"
            lines.append(
                r"(u_{p0}, u_{p1}, \ldots) \sim \mathcal{N}(0,\ D_p \Omega D_p), \quad "
                r"D_p = \mathrm{diag}(\sigma^u_{t[p]}, \tau^u_1, \ldots), \quad " + corr
            )
        else:
            lines.append(r"u_{p0} \sim \mathcal{N}(0,\ \sigma^u_{t[p]})")
    return lines


def data_variables(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """What each symbol of :func:`equations` is, in the data's words (Markdown bullets); the
    reference care type :math:`r` only where the model has care-type intercepts (with the fit's
    ``scales``: two or more care types)."""
    lo, hi = (f"{b:g}" for b in spec.outcome_range)
    out = [
        f"$y_i$: {spec.outcome_label} of client $i$; $y^0_i$: its baseline, centred at the mean "
        f"$\\bar y^0$; the outcome is bounded by {lo} and {hi}.",
    ]
    if spec.predictors.covariates:
        out.append(
            f"$z_{{ij}}$: the covariates ({', '.join(spec.predictors.covariates)}), each centred "
            "and divided by its sample SD"
            + (
                "; a declared categorical covariate enters as one indicator per level other than "
                "its reference, centred but not scaled."
                if spec.declared_covariates
                else "."
            )
        )
    sessions = (
        f"their first {spec.predictors.alliance_sessions} sessions"
        if spec.predictors.alliance_sessions
        else "all their sessions"
    )
    if spec.predictors.alliance == "composite":
        out.append(
            f"$a_i$: the client's mean goal and bond rating over {sessions}, on the alliance "
            "scale (1–5, or the scale of the alliance instrument the study declares)."
        )
    elif spec.hierarchy.between == "latent_mean":
        out += [
            f"$a_{{is}}$: client $i$'s mean rating of subscale $s$ over {sessions}; $m_{{ps}}$: "
            "provider $p$'s latent mean alliance, with every client score of the study as an "
            "indicator (Lüdtke et al. 2008, doi:10.1037/a0012869); $w_{ips}$: $p$'s share of the "
            "sessions behind $a_{is}$; $B_{is}$, $W_{is}$: the between- and within-provider parts "
            "around the latent means, so the caseload means' sampling error is modelled.",
            *_membership_lines(_care_intercepts(spec, scales)),
        ]
    else:
        out += [
            f"$W_{{is}}$, $B_{{is}}$: client $i$'s mean rating of subscale $s$ over {sessions}, split "
            "into its within-provider part (client minus provider mean) and its between-provider part "
            "(the membership-weighted mean of its providers' caseload means).",
            *_membership_lines(_care_intercepts(spec, scales)),
        ]
    return out


def _membership_lines(care_intercepts: bool = True) -> list[str]:
    reference = (
        "$r$: the reference care type (coach-only care unless declared); "
        if care_intercepts
        else ""
    )
    return [
        "$c[i]$: care type, the provider types the client saw (therapist, coach or both unless "
        f"the study declares its own); {reference}$t[p]$: provider type; $w_{{ip}}$: provider "
        "$p$'s share of client $i$'s sessions (multiple membership).",
    ]


def _alliance(scales: Mapping[str, Any]) -> tuple[str, tuple[float, float], float]:
    """The alliance scale of a fit (``"1–5"`` or ``"WAI-S 1–7"``), its range, and the factor its
    prior scales per alliance point were multiplied by (``scales.alliance_instrument``)."""
    recorded = RecordedScale.of(scales)
    return recorded.name, (recorded.low, recorded.high), recorded.prior_factor


def _latent_mean_rows(scales: Mapping[str, Any]) -> list[PriorRow]:
    """The priors of the latent provider means (``between = "latent_mean"``), on the alliance
    scale (the 1–5 scale, or the declared instrument's: :func:`~alliance_bayes.model.regression.
    graph.latent_mean_priors`)."""
    from alliance_bayes.model.regression.graph import latent_mean_priors

    scale, bounds, _ = _alliance(scales)
    centre, spread, client_sd, provider_sd = latent_mean_priors(bounds)
    return [
        PriorRow(
            "μ^a_s (mean alliance per subscale)",
            f"Normal({centre:g}, {spread:g})",
            f"alliance points ({scale} scale)",
            "Spans the rating scale at 2 prior SDs; the thousands of client scores dominate.",
        ),
        PriorRow(
            "σ^a_s (client SD of alliance around the provider mean)",
            f"Half-Normal({client_sd:g})",
            "alliance points",
            f"Allows any spread of scores the {scale} scale can hold.",
        ),
        PriorRow(
            "τ^a_s (SD of providers' latent mean alliance)",
            f"Gamma(2, 2/{provider_sd:g}) (mean {provider_sd:g})",
            "alliance points",
            "Provider means a point apart are possible but unusual; zero density at 0 keeps the "
            "sampler out of the funnel (Chung et al. 2013, doi:10.1007/s11336-013-9328-2).",
        ),
    ]


def _per_sd(scale: float, sd: Any, unit: str) -> str:
    try:
        return f"±{2 * scale * float(sd):.3g} {unit} per predictor SD at 2 prior SDs"
    except (TypeError, ValueError):
        return ""


#: Prior scales that are not in outcome points (the others are compared on the outcome's metric).
_UNITLESS = {"b_baseline_sd", "lkj_eta", "nu_rate"}


def _why(spec: ModelSpec, name: str, reason: str) -> str:
    """``reason``, unless the scale is far wider than the package default on this metric."""
    default = getattr(PriorSpec(), name)
    if name not in _UNITLESS:  # the defaults are on WHO-5's 0–100 metric
        lo, hi = spec.outcome_range
        default *= (hi - lo) / 100.0
    ratio = getattr(spec.priors, name) / default
    if ratio >= 4:
        return f"Deliberately weak ({ratio:.3g}× the package default): the likelihood dominates."
    return reason


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[PriorRow]:
    """Every prior of the spec's model, with its scale on the data's units and a justification.

    The justifications are those of the package defaults (:class:`~alliance_bayes.spec.
    PriorSpec`, scaled to the outcome's metric); a spec whose scale is far from the default is
    labelled so rather than given a reason written for another scale. On a declared alliance
    instrument the scales per alliance point are those the model used (the spec's times the
    factor ``scales.alliance_instrument.prior_factor``, :func:`~alliance_bayes.model.regression.
    design.model_priors`), per point of its scale.
    """
    h, p = spec.hierarchy, spec.predictors
    scale, _, factor = _alliance(scales)
    pr = scale_alliance_priors(spec.priors, factor)
    per_point = "per alliance point" if scale == "1–5" else f"per {scale} point"
    units = spec.outcome_units
    hier = p.alliance != "composite"
    mean = scales.get("outcome_mean")
    rows = [
        PriorRow(
            "α (intercept, average client)",
            f"Normal(ȳ, {pr.intercept_sd:g})",
            (f"ȳ = {mean:.1f}; " if mean is not None else "")
            + f"95% of prior mass within ±{1.96 * pr.intercept_sd:.0f} {units}",
            _why(
                spec,
                "intercept_sd",
                "The expected follow-up of an average client, centred at the sample mean as brms "
                "does (weakly data-dependent, recorded).",
            ),
        ),
        PriorRow(
            "β₀ (baseline)",
            f"Normal(0, {pr.b_baseline_sd:g})",
            f"{units} per baseline point; "
            + _per_sd(pr.b_baseline_sd, scales.get("baseline_sd"), units),
            _why(
                spec,
                "b_baseline_sd",
                "A follow-up is rarely more than proportional to its baseline.",
            ),
        ),
    ]
    coding = scales.get("covariate_coding", {})
    levels = [c for c in p.covariates if coding.get(c, {}).get("type") == "categorical"]
    if [c for c in p.covariates if c not in levels]:
        sds = scales.get("covariate_sd", {})
        raw = "; ".join(
            f"{c}: ±{2 * pr.b_covariate_sd / float(sds[c]):.3g} per unit"
            for c in p.covariates
            if sds.get(c)
        )
        rows.append(
            PriorRow(
                "β_j (covariates, per SD)",
                f"Normal(0, {pr.b_covariate_sd:g})",
                f"{units} per covariate SD; at 2 prior SDs {raw}"
                if raw
                else f"{units} per covariate SD",
                _why(
                    spec,
                    "b_covariate_sd",
                    "Covariates enter standardised, so one scale fits age, sex and days in care alike; "
                    "a covariate that moved the outcome by more than a quarter of its SD per SD would be "
                    "unusual.",
                ),
            )
        )
    if levels:
        contrasts = "; ".join(
            f"{coding[c]['label']}: each level vs {coding[c]['reference']}" for c in levels
        )
        rows.append(
            PriorRow(
                "β_k (categorical covariates, per level)",
                f"Normal(0, {pr.b_covariate_sd:g})",
                f"{units} difference from the reference level ({contrasts}); indicators "
                f"centred, not scaled, so ±{2 * pr.b_covariate_sd:.3g} {units} at 2 prior SDs",
                _why(
                    spec,
                    "b_covariate_sd",
                    "The scale of the standardised covariates, put on each level's difference "
                    "itself, so that a rare level's prior is no wider than a common one's.",
                ),
            )
        )
    if p.alliance == "composite":
        rows.append(
            PriorRow(
                "b_a (composite alliance)",
                f"Normal(0, {pr.b_alliance_sd:g})",
                f"{units} {per_point}; "
                + _per_sd(pr.b_alliance_sd, scales.get("composite_sd"), units),
                "Weak: the likelihood dominates, so the posterior matches OLS on the same data.",
            )
        )
    if _care_intercepts(spec, scales):
        rows.append(
            PriorRow(
                "γ_c (care type vs the reference)",
                f"Normal(0, {pr.b_care_sd:g})",
                f"±{2 * pr.b_care_sd:g} {units} at 2 prior SDs",
                _why(
                    spec,
                    "b_care_sd",
                    "A gap between care types at equal alliance of more than a fifth of the outcome's "
                    "range is implausible.",
                ),
            )
        )
    if hier:
        within_sd = {s: v.get("within") for s, v in scales.get("alliance_sd", {}).items()}
        sd_text = ", ".join(f"{s} {v:.2f}" for s, v in within_sd.items() if v is not None)
        rows.append(
            PriorRow(
                "μ^b (pooled subscale slopes)" if h.care_type_pooling else "b (subscale slopes)",
                f"Normal(0, {pr.mu_b_sd:g})",
                f"{units} {per_point}"
                + (f"; within-part SDs {sd_text} alliance points" if sd_text else ""),
                _why(
                    spec,
                    "mu_b_sd",
                    (
                        "A one-point alliance difference is about two SDs of the within-provider "
                        "part; "
                        if factor == 1.0
                        else f"The 1–5 scale's prior times {factor:.3g} (4 over the width of the "
                        f"{scale} scale), so a slope across the whole scale has the same prior; "
                    )
                    + f"a slope beyond ±{2 * pr.mu_b_sd:g} {units} "
                    + ("per point" if scale == "1–5" else per_point)
                    + " (2 prior SDs) would exceed any published alliance effect.",
                ),
            )
        )
        if h.care_type_pooling:
            rows.append(
                PriorRow(
                    "τ (care-type spread of slopes)",
                    f"fixed at {pr.sd_b_sd:g}"
                    if h.care_slope_sd == "fixed"
                    else f"Half-Normal({pr.sd_b_sd:g})",
                    f"{units} {per_point}",
                    f"{_care_types_in_words(scales)} cannot estimate a variance (Gelman 2006, "
                    "doi:10.1214/06-BA117A); fixed, it is a ridge that shrinks each care type's "
                    "slope towards the pooled one by the same amount in every study.",
                )
            )
    if hier and h.between == "latent_mean":
        rows += _latent_mean_rows(scales)
    if hier and h.provider_intercepts:
        dist = (
            (lambda s: f"Gamma(2, 2/{s:g}) (mean {s:g})")
            if h.sd_prior == "gamma"
            else (lambda s: f"Half-Normal({s:g})")
        )
        rows.append(
            PriorRow(
                "σ^u_t (provider intercept SD, per provider type)",
                dist(pr.sd_provider_sd),
                f"{units}",
                _why(
                    spec,
                    "sd_provider_sd",
                    "Zero density at 0 keeps the sampler out of the funnel (Chung et al. 2013, "
                    "doi:10.1007/s11336-013-9328-2); providers rarely differ by more than a quarter "
                    "of the outcome's SD.",
                ),
            )
        )
        if h.provider_slopes:
            rows.append(
                PriorRow(
                    "τ^u_s (provider slope SDs)",
                    dist(pr.sd_provider_slope_sd),
                    f"{units} {per_point}",
                    _why(
                        spec,
                        "sd_provider_slope_sd",
                        "Providers' within-provider slopes are expected to vary around the pooled "
                        "slope by about the slope's own size.",
                    ),
                )
            )
            if h.provider_correlation:
                rows.append(
                    PriorRow(
                        "Ω (provider effect correlations)",
                        f"LKJ({pr.lkj_eta:g})",
                        "correlations (−1 to 1)",
                        "η > 1 favours small correlations without ruling out large ones "
                        "(Lewandowski, Kurowicka & Joe 2009, doi:10.1016/j.jmva.2009.04.008).",
                    )
                )
    rows.append(
        PriorRow(
            "σ (residual SD)",
            f"Half-Normal({pr.sigma_sd:g})",
            f"{units}",
            _why(
                spec,
                "sigma_sd",
                "About the outcome's SD: the median of this prior is "
                f"{0.674 * pr.sigma_sd:.1f} {units}.",
            ),
        )
    )
    if spec.likelihood == "student_t":
        rows.append(
            PriorRow(
                "ν − 1 (Student-t degrees of freedom)",
                f"Exponential({pr.nu_rate:.3g})",
                f"prior mean ν = {1 + 1 / pr.nu_rate:.0f}",
                "Juárez & Steel (2010), doi:10.1198/jbes.2009.07113: light and heavy tails both "
                "plausible a priori.",
            )
        )
    return rows
