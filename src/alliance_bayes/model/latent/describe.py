r"""The latent-alliance model in equations and its priors (for the report's Model and Priors sections).

The outcome part is the ``who5_change`` structure on the true scores, so its lines come from
:mod:`alliance_bayes.model.regression.describe`; the measurement part is added here (see
:mod:`alliance_bayes.model.latent.measurement` for the maths).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from alliance_bayes.data.care import JOIN, PROVIDER_TYPES
from alliance_bayes.data.instruments import instrument_of
from alliance_bayes.model.latent.instrument_check import CONTRACT_SCALE, RatingScale
from alliance_bayes.model.regression import describe as regression
from alliance_bayes.spec import OUTCOMES, ModelSpec

__all__ = ["cutpoint_row", "data_variables", "equations", "prior_rows", "provider_type_count"]


def _outcome_view(spec: ModelSpec) -> ModelSpec:
    return replace(spec, predictors=replace(spec.predictors, alliance="subscales"))


def provider_type_count(scales: Mapping[str, Any] | None) -> int | None:
    """How many provider types the fit's clients saw, from the care types of every outcome's
    clients in its ``scales`` (a care type is the set of provider types a client saw: the
    contract's ``both`` is therapist and coach, a declared combination joins its types with
    ``_and_``, :mod:`alliance_bayes.data.care`); ``None`` where the scales do not say. With one
    there is no provider-type shift :math:`\\delta_t` in the model."""
    by_outcome = (scales or {}).get("care_count_by_outcome") or (scales or {}).get(
        "care_share_by_outcome"
    )
    if not by_outcome:
        return None
    cares = {str(c) for counts in by_outcome.values() for c in counts}
    types = {t for c in cares for t in (PROVIDER_TYPES if c == "both" else c.split(JOIN))}
    return len(types)


def _several_items(scales: Mapping[str, Any] | None) -> bool:
    """Whether the fit's instrument has several items per subscale (its scales'
    ``alliance_items``, :func:`~alliance_bayes.model.items.items_record`)."""
    return "alliance_items" in (scales or {})


def _provider_shift(scales: Mapping[str, Any] | None) -> bool:
    """Whether the model has provider-type shifts (every term where the scales do not say)."""
    count = provider_type_count(scales)
    return count is None or count > 1


def equations(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """Measurement lines, then the outcome lines on the true scores (with the fit's ``scales``,
    only the terms its model has: no provider-type shift with one provider type, no care-type
    intercepts with one care type)."""
    mean = r"\sum_{t \neq t_0} \delta_t\,([t(p) = t] - \pi_t)" if _provider_shift(scales) else "0"
    if _several_items(scales):
        # Each item q of subscale s(q) has its own cut-points and discrimination; the subscale's
        # expected rating is the mean of its items' (the averaged-score scale).
        rating = (
            r"P(r_{ijq} \geq L + k) = \mathrm{logit}^{-1}(\alpha_q(\theta_{ip\,s(q)} - "
            r"\kappa_{q,k})), \quad k = 1, \ldots, K - 1"
        )
        expected = (
            r"\tau_s(\theta) = L + \frac{1}{|Q_s|}\sum_{q \in Q_s}\sum_{k=1}^{K-1} "
            r"\mathrm{logit}^{-1}(\alpha_q(\theta - \kappa_{q,k})), "
            r"\quad \tau_{is} = \sum_p w_{ip} \tau_s(\theta_{ips})"
        )
    else:
        rating = (
            r"P(r_{ijs} \geq L + k) = \mathrm{logit}^{-1}(\alpha_s(\theta_{ips} - \kappa_{s,k})), "
            r"\quad k = 1, \ldots, K - 1"
        )
        expected = (
            r"\tau(\theta) = L + \sum_{k=1}^{K-1} \mathrm{logit}^{-1}(\alpha_s(\theta - "
            r"\kappa_{s,k})), \quad \tau_{is} = \sum_p w_{ip} \tau(\theta_{ips})"
        )
    measurement = [
        rating,
        r"\theta_{ips} = a_{ps} + e_{is}, \quad e_i \sim \mathcal{N}(0, \Omega_e), "
        rf"\quad a_p \sim \mathcal{{N}}({mean}, "
        r"D_a \Omega_a D_a)",
        expected,
        r"m_{ps} = \mathbb{E}_{e \sim \mathcal{N}(0,1)}[\tau(a_{ps} + e)], \quad "
        r"B_{is} = \sum_p w_{ip} m_{ps}, \quad W_{is} = \tau_{is} - B_{is}",
    ]
    joint = []
    if spec.measurement is not None and len(spec.measurement.outcomes) == 2:
        # Each outcome has its own copy of the outcome part; their residuals are correlated.
        joint = [
            r"(\varepsilon_{1i}, \varepsilon_{2i}) \sim \mathcal{N}(0, \Sigma), \quad "
            r"\rho = \mathrm{corr}(\varepsilon_1, \varepsilon_2)"
        ]
    return measurement + regression.equations(_outcome_view(spec), scales) + joint


def data_variables(spec: ModelSpec, scales: Mapping[str, Any] | None = None) -> list[str]:
    """Symbols of :func:`equations` (those of the fit's terms with its ``scales``)."""
    shift = (
        "; $\\delta_t$: provider type $t$'s mean latent alliance per subscale against the "
        "reference type $t_0$ (therapists' against coaches' under the contract's types; "
        "$\\pi_t$: type $t$'s share of the providers)"
        if _provider_shift(scales)
        else ""
    )
    items = (
        [
            "$q$: an item of the instrument, $Q_s$ the items of subscale $s$ ($s(q)$ the "
            "subscale of item $q$; a reversed item's rating $r$ enters as $L + H - r$)."
        ]
        if _several_items(scales)
        else []
    )
    return [
        "$r_{ijs}$: client $i$'s rating of item $s$ at session $j$ with provider $p$, one of $K$ "
        "categories $L, \\ldots, H$ (the contract's 1–5: $L = 1$, $K = 5$; a declared "
        "instrument's whole-number range otherwise); "
        "$\\theta_{ips}$: its latent alliance, a provider part $a_{ps}$ plus a client part $e_{is}$ "
        "(unit SD); $\\tau$: the expected rating ($L$ to $H$), the true score the averaged score "
        "estimates.",
        "$m_{ps}$: provider $p$'s latent alliance on the rating scale, the expected rating of a "
        "typical client with it (doubly latent: the client part integrated out, not a caseload "
        "mean); $B_{is}$, $W_{is}$: the between- and within-provider parts of the true score "
        "$\\tau_{is}$" + shift + ".",
        *items,
        *_phq9_sample(spec),
        # The outcome part's symbols, except the averaged-score split the true scores replace.
        *(
            v
            for v in regression.data_variables(_outcome_view(spec), scales)
            if not v.startswith("$W_")
        ),
    ]


def _phq9_sample(spec: ModelSpec) -> list[str]:
    """Which clients each outcome's likelihood takes, as
    :func:`~alliance_bayes.model.latent.measurement.prepare_latent` selects them: under
    ``phq9_sample = "elevated"`` PHQ-9 (in any place) those elevated by the ``[data]`` rule, a
    declared second outcome those at or past its declared cut-off; every other outcome, and every
    outcome under ``"all"``, every client with both its scores."""
    m = spec.measurement
    if m is None:
        return []
    if m.phq9_sample == "all":
        return [
            f"{label} follow-up enters for every client with both {label} scores."
            for label in map(_label, m.outcomes[1:])
        ]
    cut, whole = [], []
    for position, outcome in enumerate(m.outcomes):
        label, instrument = _label(outcome), instrument_of(outcome)
        if outcome == "phq9_followup":
            cut.append(
                f"PHQ-9 follow-up enters for clients elevated at baseline ({_data_rule(spec)}), "
                "the sample of depression_change"
            )
        elif position > 0 and outcome not in OUTCOMES and instrument and instrument.cutoff:
            worse = ">=" if instrument.better == "lower" else "<="
            cut.append(
                f"{label} follow-up enters for clients elevated at baseline ({label} baseline "
                f"{worse} {instrument.cutoff:g}, the declared cut-off)"
            )
        else:
            whole.append(label)
    if not cut:
        return []
    rest = f" and {', '.join(whole)}" if whole else ""
    return [f"{'; '.join(cut)}; every client informs the measurement part{rest}."]


def _label(outcome: str) -> str:
    """An outcome's instrument label (``"GAD-7"``), or its column name where no study loaded
    declares it."""
    instrument = instrument_of(outcome)
    return outcome if instrument is None else instrument.label


def _data_rule(spec: ModelSpec) -> str:
    """The ``[data]`` elevated rule in words: a built-in one with the spec's cut-offs, or a
    declared outcome's cut-off (:mod:`alliance_bayes.model.elevated`)."""
    d = spec.data
    built_in = {
        "who5": f"WHO-5 baseline <= {d.who5_cutoff:g}",
        "phq9": f"PHQ-9 baseline >= {d.phq9_cutoff:g}",
        "phq9_else_who5": (
            f"PHQ-9 baseline >= {d.phq9_cutoff:g}, or WHO-5 baseline <= {d.who5_cutoff:g} "
            "where PHQ-9 was not measured"
        ),
    }
    if d.elevated_by in built_in:
        return built_in[d.elevated_by]
    instrument = instrument_of(f"{d.elevated_by}_followup")
    if instrument is None or instrument.cutoff is None:
        return f"by [data] elevated_by = {d.elevated_by!r}"
    worse = ">=" if instrument.better == "lower" else "<="
    return f"{instrument.label} baseline {worse} {instrument.cutoff:g}"


def cutpoint_row(threshold_sd: float, scale: RatingScale) -> regression.PriorRow:
    """The cut-points' prior row of a graded-response family on ``scale``'s categories: the top
    one Normal(0, ``threshold_sd``), the gaps below it Half-Normal(``threshold_sd`` times
    :attr:`~alliance_bayes.model.latent.instrument_check.RatingScale.gap_prior_factor`)."""
    top, n_gaps = scale.thresholds[-1], scale.n_categories - 2
    why = (
        f"Anchored at the well-determined {top} cut-point; ±6 logits spans every category share "
        "from 0.25% to 99.75%."
    )
    if scale.n_categories != CONTRACT_SCALE.n_categories:
        why += (
            f" The {n_gaps} gaps' scale is {threshold_sd:g} × 3/{n_gaps}: the span from the "
            "lowest to the highest cut-point keeps the prior mean it has on five categories."
        )
    return regression.PriorRow(
        f"c_{{s,{n_gaps + 1}}} (top cut-point), gaps below it",
        f"Normal(0, {threshold_sd:g}); Half-Normal({threshold_sd * scale.gap_prior_factor:g})",
        "logit units",
        why,
    )


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[regression.PriorRow]:
    """The outcome part's priors (on the first outcome's metric; per point of a declared alliance
    scale, ``scales.alliance_instrument``) and the measurement priors (the cut-point gaps' on the
    fit's number of categories; the provider-type shifts' only with two or more provider types)."""
    m = spec.measurement
    rows = regression.prior_rows(_outcome_view(spec), scales)
    if m is None:
        return rows
    return [
        *rows,
        cutpoint_row(m.threshold_sd, RatingScale.of_scales(scales)),
        regression.PriorRow(
            "α_s (discrimination)",
            f"LogNormal(0, {m.discrimination_sd:g})",
            "per client latent SD",
            "Median 1; a factor of e either way at 1 prior SD.",
        ),
        regression.PriorRow(
            "σ^a_s (provider part of the latent alliance)",
            f"Gamma(2, 2/{m.sd_provider_alliance_sd:g}) (mean {m.sd_provider_alliance_sd:g})"
            if spec.hierarchy.sd_prior == "gamma"
            else f"Half-Normal({m.sd_provider_alliance_sd:g})",
            "client latent SDs",
            "Alliance ICCs of a few per cent (Baldwin et al. 2007) put the provider SD near a "
            "fifth of the client SD; [hierarchy] sd_prior chooses the shape, as for σ^u_t.",
        ),
        *(
            [
                regression.PriorRow(
                    "δ_t (a provider type's mean latent alliance against the reference type's)",
                    f"Normal(0, {m.provider_type_alliance_sd:g})",
                    "client latent SDs",
                    "Lets the provider types differ in mean alliance without forcing it; a "
                    "difference of a whole client SD is one prior SD.",
                )
            ]
            if _provider_shift(scales)
            else []
        ),
        regression.PriorRow(
            "Ω_e, Ω_a (latent correlations)",
            f"LKJ({spec.priors.lkj_eta:g})",
            "correlations",
            "Favours small correlations without ruling out the large goal–bond correlation.",
        ),
    ]
