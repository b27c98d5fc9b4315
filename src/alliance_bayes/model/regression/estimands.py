"""The stable-named estimands of the averaged-score regression family, computed draw by draw.

Authors cite estimands by name (``b_goal_within``, ``b_goal_within[therapist]``,
``b_goal_within[therapist-coach]``, ``sd_provider[coach]``, ``icc_provider[therapist]`` …), so the
names here are a public interface: see the design note, "Estimands have stable names".

Every derived quantity (contrasts, ICC) is computed per draw, so its posterior summary and its
convergence diagnostics are those of the derived quantity itself, not a combination of summaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from alliance_bayes.data.care import CARE_REFERENCE, care_words, split_contrast
from alliance_bayes.data.care import contrast as contrast_label

__all__ = ["KINDS", "care_weights_of", "compute_estimands", "put_estimand"]

#: Kinds of estimand (the ``kind`` attribute), in the order the report's tables lay them out.
KINDS = (
    "fixed effect",
    "subscale effect",
    "contrast",
    "variance component",
    "measurement",
    "care-type intercept",
    "hyperparameter",
    "standardised effect",
    "model fit",
)

_SAMPLE_DIMS = ("chain", "draw")

# Units of the covariate slopes; the outcome's own units are prefixed at run time.
_COVARIATE_UNITS = {
    "age": "per year of age",
    "male": "difference, male vs not male",
    "days_in_care": "per day in care",
}


def _covariate_units(column: str, coding: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Units of a covariate slope (after the outcome's units) and the attributes naming it.

    A declared covariate's coding (:meth:`~alliance_bayes.model.regression.design.ModelData.
    scales`, ``covariate_coding``) names its reference level: ``diagnosis[anxiety]`` is
    ``"anxiety vs depression (reference)"``. A level column of a bundle without the coding
    still says it is a contrast against the reference level.
    """
    if column in _COVARIATE_UNITS:
        return _COVARIATE_UNITS[column], {}
    name, _, level = column.partition("[")
    level = level.removesuffix("]")
    entry = coding.get(name, {})
    attrs = {"covariate": name}
    if level:
        reference = entry.get("reference")
        attrs |= {"covariate_level": level, **({"reference": reference} if reference else {})}
        versus = f"{reference} (reference)" if reference else "the reference level"
        return f"{level} vs {versus}", attrs
    if entry.get("type") == "binary":
        attrs["reference"] = str(entry["reference"])
        return f"difference, {entry['level']} vs {entry['reference']} (reference)", attrs
    return f"per unit of {entry.get('label', name)}", attrs


def put_estimand(
    out: dict[str, xr.DataArray],
    name: str,
    da: xr.DataArray,
    *,
    units: str,
    kind: str,
    **extra: str,
) -> None:
    """Store ``da`` as estimand ``name`` with only the sample dims left and tidy attrs."""
    # Drop scalar coordinates left by .sel so that variables with different origins merge cleanly.
    da = da.reset_coords(drop=True).transpose(*_SAMPLE_DIMS)
    out[name] = da.assign_attrs({"units": units, "kind": kind, **extra})


def care_weights_of(
    scales: Mapping[str, Any] | None, rule: str = "care_mix"
) -> dict[str, float] | None:
    """The weights of the pooled slopes: the care-mix shares of the fitted clients, or equal.

    ``scales["care_share"]`` holds the share of each care type present among the clients in the
    likelihood; ``rule = "equal"`` gives those care types equal weights instead. ``None`` when
    the shares are unknown (a bundle written before they were recorded).
    """
    share = (scales or {}).get("care_share")
    if not share:
        return None
    if rule == "equal":
        return dict.fromkeys(share, 1.0 / len(share))
    return {str(c): float(w) for c, w in share.items()}


def care_reference(posterior: xr.Dataset, scales: Mapping[str, Any] | None = None) -> str:
    """The care type that the contrasts are against: the design's (``scales["care_reference"]``),
    else the one every ``b_care`` contrast (``"<care type>-<reference>"``) names last, else the
    contract's coach."""
    if (scales or {}).get("care_reference"):
        return str(scales["care_reference"])
    if "b_care" in posterior:
        ends = {split_contrast(str(c))[1] for c in posterior["b_care"]["care_contrast"].values}
        if len(ends) == 1:
            return ends.pop()
    return CARE_REFERENCE


def _pooled_slopes(
    posterior: xr.Dataset, care_weights: Mapping[str, float] | None
) -> xr.DataArray | None:
    r"""Care-type slopes averaged with fixed weights: :math:`\bar b = \sum_c \pi_c b_c`.

    The weights must sum to 1 over care types present in ``b``; care types absent from the
    weights get weight 0 (no client of that type is in the likelihood).
    """
    if "b" not in posterior or not care_weights:
        return None
    b = posterior["b"]
    cares = [str(c) for c in b["care_type"].values]
    unknown = sorted(set(care_weights) - set(cares))
    if unknown:
        raise ValueError(f"care weights name care types {unknown} that the slopes lack")
    w = np.array([float(care_weights.get(c, 0.0)) for c in cares])
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"care weights must be >= 0 and sum to 1; got {dict(care_weights)}")
    weights = xr.DataArray(w, dims="care_type", coords={"care_type": b["care_type"].values})
    pooled = (b * weights).sum("care_type")
    label = ", ".join(f"{care_words(c)} {care_weights[c]:.3f}" for c in cares if c in care_weights)
    return pooled.assign_attrs(care_weights=label)


def compute_estimands(
    posterior: xr.Dataset,
    *,
    outcome_units: str = "outcome points",
    effect_units: str | None = None,
    scales: Mapping[str, Any] | None = None,
    care_weights: Mapping[str, float] | None = None,
) -> xr.Dataset:
    r"""Compute the stable-named estimands present in ``posterior``.

    Parameters
    ----------
    posterior : xarray.Dataset
        The ``posterior`` group (dims ``chain``, ``draw`` first). Variables that are absent are
        simply skipped, so the same function serves ``paper_table2`` and the hierarchical models.
    outcome_units : str
        Units of the outcome, e.g. ``"WHO-5 points"``; used for intercepts, SDs and covariates.
    effect_units : str, optional
        Units of the alliance slopes, e.g. ``"WHO-5 points per 1 point of alliance (1–5 scale)"``.
        Defaults to ``f"{outcome_units} per 1 point of alliance (1–5 scale)"``.
    scales : mapping, optional
        Sample SDs of the outcome and the predictors in the fitted clients
        (:meth:`~alliance_bayes.model.regression.design.ModelData.scales`); with them the
        standardised slopes ``beta_*`` are added.
    care_weights : mapping, optional
        Weight of each care type in the pooled slopes (:func:`care_weights_of`); without them no
        pooled slope is reported.

    Returns
    -------
    xarray.Dataset
        One variable per estimand, each with dims ``(chain, draw)`` and attrs ``units``, ``kind``
        (one of :data:`KINDS`) and, where meaningful, ``subscale``, ``level``, ``care_type``,
        ``provider_type`` (used by the tables to lay rows out).

    Notes
    -----
    The pooled slope ``b_<s>_<level>`` is :math:`\sum_c \pi_c b_c`, the care-type slopes
    averaged with the weights ``care_weights`` (by default each care type's share of the clients
    in the likelihood): the slope of the study's own client mix. Being a fixed combination of
    quantities the likelihood informs, its posterior SD shrinks as about :math:`1/\sqrt n`. The
    hyper-mean ``mu_b`` of the care-type slopes is reported apart, as ``mu_b_<s>_<level>`` (kind
    ``"hyperparameter"``): with their spread τ fixed, :math:`C` care types (three in the
    contract) inform it no better than
    :math:`\mathrm{Var}(\mu \mid b) = (C/\tau^2 + 1/\sigma_\mu^2)^{-1}` at any sample size,
    so it describes the prior's population of care types, not this study's clients.

    A covariate's slope is ``b_<covariate>``, per unit of the covariate (``b_age``: per year) or,
    for a binary one, the difference of its two values (``b_male``); a declared categorical
    covariate has one per level, ``b_<covariate>[<level>]``, the expected difference between
    that level and the reference level at equal other predictors (units such as ``"WHO-5
    points, anxiety vs depression (reference)"``; attributes ``covariate``, ``covariate_level``,
    ``reference``).

    ``b_care[therapist-coach]`` and ``b_care[both-coach]`` are the care-type intercepts: the
    difference in expected follow-up between care types at equal alliance and covariates.
    Contrasts are ``[therapist-coach]`` and ``[both-coach]`` per subscale and level (coach is the
    reference: the newer, less-studied provider type; a study that declares its provider types
    has its own care types and reference, :func:`care_reference`), and ``b_goal-bond_{level}`` for the pooled
    subscale difference, and ``b_<s>_within-between`` for the difference between a subscale's
    within- and between-provider slopes (the contrast of Baldwin, Wampold & Imel 2007,
    doi:10.1037/0022-006X.75.6.842: does a client's alliance relative to the provider's other
    clients matter as much as the provider's typical alliance?). The provider ICC per provider type is
    ``sd_provider[t]² / (sd_provider[t]² + sigma²)``: the share of residual outcome variance (on the
    model's scale, conditional on the predictors) that lies between providers of that type. With
    Student-t residuals ``sigma`` is a scale, not an SD, and the ICC is then an approximation.

    Standardised slopes (kind ``"standardised effect"``) are the paper's β,
    :math:`\beta = b \cdot \text{sd}(x) / \text{sd}(y)` with sample SDs of the fitted clients:
    ``beta_<s>_<level>`` for the pooled subscale slopes (per SD of that within- or between-provider
    part), ``beta_alliance``, ``beta_baseline`` and ``beta_<covariate>``. ``r2_bayes`` (kind
    ``"model fit"``) is the Bayesian R² of Gelman, Goodrich, Gabry & Vehtari (2019),
    doi:10.1080/00031305.2018.1549100, computed in the model draw by draw.
    """
    if effect_units is None:
        effect_units = f"{outcome_units} per 1 point of alliance (1–5 scale)"
    sd_units = f"{outcome_units} (SD)"
    out: dict[str, xr.DataArray] = {}
    fixed, sub, con, var = KINDS[:4]

    if "intercept" in posterior:
        put_estimand(out, "intercept", posterior["intercept"], units=outcome_units, kind=fixed)
    if "b_baseline" in posterior:
        put_estimand(
            out,
            "b_baseline",
            posterior["b_baseline"],
            units=f"{outcome_units} per baseline point",
            kind=fixed,
        )
    if "b_covariate" in posterior:
        coding = (scales or {}).get("covariate_coding", {})
        for cov in posterior["b_covariate"]["covariate"].values.tolist():
            unit, named = _covariate_units(str(cov), coding)
            put_estimand(
                out,
                f"b_{cov}",
                posterior["b_covariate"].sel(covariate=cov),
                units=f"{outcome_units} {unit}"
                if unit.startswith("per")
                else f"{outcome_units}, {unit}",
                kind=fixed,
                **named,
            )
    if "b_alliance" in posterior:
        put_estimand(out, "b_alliance", posterior["b_alliance"], units=effect_units, kind=fixed)
    if "b_care" in posterior:
        for contrast in (str(c) for c in posterior["b_care"]["care_contrast"].values):
            put_estimand(
                out,
                f"b_care[{contrast}]",
                posterior["b_care"].sel(care_contrast=contrast),
                units=f"{outcome_units} at equal alliance and covariates",
                kind=KINDS[5],
                care_type=contrast,
            )

    pooled = _pooled_slopes(posterior, care_weights)
    if pooled is not None:
        subscales = [str(s) for s in pooled["subscale"].values]
        levels = [str(v) for v in pooled["level"].values]
        weights = pooled.attrs["care_weights"]
        for s in subscales:
            for lv in levels:
                put_estimand(
                    out,
                    f"b_{s}_{lv}",
                    pooled.sel(subscale=s, level=lv),
                    units=effect_units,
                    kind=sub,
                    subscale=s,
                    level=lv,
                    care_type="pooled",
                    care_weights=weights,
                )
        if "within" in levels and "between" in levels:
            for s in subscales:
                put_estimand(
                    out,
                    f"b_{s}_within-between",
                    pooled.sel(subscale=s, level="within")
                    - pooled.sel(subscale=s, level="between"),
                    units=effect_units,
                    kind=con,
                    subscale=s,
                    level="within-between",
                    care_type="pooled",
                    care_weights=weights,
                )
        if "goal" in subscales and "bond" in subscales:
            for lv in levels:
                diff = pooled.sel(subscale="goal", level=lv) - pooled.sel(subscale="bond", level=lv)
                put_estimand(
                    out,
                    f"b_goal-bond_{lv}",
                    diff,
                    units=effect_units,
                    kind=con,
                    subscale="goal-bond",
                    level=lv,
                    care_type="pooled",
                    care_weights=weights,
                )
    if "mu_b" in posterior:
        mu_b = posterior["mu_b"]
        for s in (str(x) for x in mu_b["subscale"].values):
            for lv in (str(x) for x in mu_b["level"].values):
                put_estimand(
                    out,
                    f"mu_b_{s}_{lv}",
                    mu_b.sel(subscale=s, level=lv),
                    units=f"{effect_units} (hyper-mean of the care-type slopes)",
                    kind="hyperparameter",
                    subscale=s,
                    level=lv,
                )

    if "b" in posterior:
        b = posterior["b"]
        cares = [str(c) for c in b["care_type"].values]
        for s in (str(x) for x in b["subscale"].values):
            for lv in (str(x) for x in b["level"].values):
                cell = b.sel(subscale=s, level=lv)
                for care in cares:
                    put_estimand(
                        out,
                        f"b_{s}_{lv}[{care}]",
                        cell.sel(care_type=care),
                        units=effect_units,
                        kind=sub,
                        subscale=s,
                        level=lv,
                        care_type=care,
                    )
                reference = care_reference(posterior, scales)
                for care in cares if reference in cares else ():
                    if care != reference:
                        put_estimand(
                            out,
                            f"b_{s}_{lv}[{contrast_label(care, reference)}]",
                            cell.sel(care_type=care) - cell.sel(care_type=reference),
                            units=effect_units,
                            kind=con,
                            subscale=s,
                            level=lv,
                            care_type=contrast_label(care, reference),
                        )

    if "sd_b" in posterior:
        sd_b = posterior["sd_b"]
        for s in (str(x) for x in sd_b["subscale"].values):
            for lv in (str(x) for x in sd_b["level"].values):
                put_estimand(
                    out,
                    f"sd_b_{s}_{lv}",
                    sd_b.sel(subscale=s, level=lv),
                    units=f"{effect_units} (SD across care types)",
                    kind=var,
                    subscale=s,
                    level=lv,
                )
    if "sd_provider" in posterior:
        for t in (str(x) for x in posterior["sd_provider"]["provider_type"].values):
            put_estimand(
                out,
                f"sd_provider[{t}]",
                posterior["sd_provider"].sel(provider_type=t),
                units=sd_units,
                kind=var,
                provider_type=t,
            )
    if "sd_provider_slope" in posterior:
        for s in (str(x) for x in posterior["sd_provider_slope"]["subscale"].values):
            put_estimand(
                out,
                f"sd_provider_slope[{s}]",
                posterior["sd_provider_slope"].sel(subscale=s),
                units=f"{effect_units} (SD across providers)",
                kind=var,
                subscale=s,
            )
    if "sigma" in posterior:
        put_estimand(
            out, "sigma", posterior["sigma"], units=f"{outcome_units} (residual SD)", kind=var
        )
    if "sd_provider" in posterior and "sigma" in posterior:
        for t in (str(x) for x in posterior["sd_provider"]["provider_type"].values):
            v_p = posterior["sd_provider"].sel(provider_type=t) ** 2
            icc = v_p / (v_p + posterior["sigma"] ** 2)
            put_estimand(
                out,
                f"icc_provider[{t}]",
                icc,
                units="proportion of residual variance between providers (0–1)",
                kind=var,
                provider_type=t,
            )
    if "nu" in posterior:
        put_estimand(out, "nu", posterior["nu"], units="degrees of freedom (Student-t)", kind=var)
    if scales:
        _standardised(out, posterior, scales, pooled)
    for name, units in _R2_UNITS.items():
        if name in posterior:
            put_estimand(out, name, posterior[name], units=units, kind="model fit")
    return xr.Dataset(out)


_BETA_UNITS = "outcome SDs per SD of the predictor"
_BETA_LATENT_UNITS = (
    "latent-scale slope × SD of the predictor / observed outcome SD (censored model: not the "
    "OLS β of the bounded scores; see beta_obs_*)"
)
_BETA_OBSERVED_UNITS = (
    "observed-scale β: average effect on the bounded scores (slope × share uncensored) × SD of "
    "the predictor / outcome SD, as the published OLS β"
)

#: The R² estimands and what each is a share of (see ``model.regression.graph.marginal_r2``).
_R2_UNITS = {
    "r2_bayes": "conditional R² (0–1): share of the model-scale outcome variance explained with "
    "the provider effects; for a censored model, the latent scale",
    "r2_marginal": "marginal R² (0–1): share of the model-scale outcome variance explained by "
    "the predictors without the provider effects",
    "r2_observed": "observed-scale marginal R² (0–1): the share on the bounded scores, without "
    "the provider effects: what the published OLS R² estimates",
}


def _standardised(
    out: dict[str, xr.DataArray],
    posterior: xr.Dataset,
    scales: Mapping[str, Any],
    pooled: xr.DataArray | None,
) -> None:
    """The paper's β for every slope that has the SDs it needs (see :func:`compute_estimands`).

    For a censored model (one with ``share_uncensored``) ``beta_*`` divides a latent-scale slope
    by the observed outcome SD, which no OLS fit estimates; ``beta_obs_*`` multiplies it by the
    share of clients inside the bounds first (the average effect on the observed scores,
    McDonald & Moffitt 1980, doi:10.2307/1924766) and is the one to set beside a published β.
    """
    sd_y = float(scales["outcome_sd"])
    kind = "standardised effect"
    share = posterior.get("share_uncensored")
    slopes: list[tuple[str, xr.DataArray, float, dict[str, str]]] = []
    if "b_baseline" in posterior:
        slopes.append(("baseline", posterior["b_baseline"], float(scales["baseline_sd"]), {}))
    if "b_covariate" in posterior:
        for cov in (str(c) for c in posterior["b_covariate"]["covariate"].values):
            if cov in scales.get("covariate_sd", {}):
                b = posterior["b_covariate"].sel(covariate=cov)
                slopes.append((cov, b, float(scales["covariate_sd"][cov]), {}))
    if "b_alliance" in posterior and "composite_sd" in scales:
        slopes.append(("alliance", posterior["b_alliance"], float(scales["composite_sd"]), {}))
    if pooled is not None:
        for s in (str(x) for x in pooled["subscale"].values):
            for lv in (str(x) for x in pooled["level"].values):
                sd_x = scales.get("alliance_sd", {}).get(s, {}).get(lv)
                if sd_x is not None:
                    b = pooled.sel(subscale=s, level=lv)
                    slopes.append((f"{s}_{lv}", b, float(sd_x), {"subscale": s, "level": lv}))
    for name, b, sd_x, extra in slopes:
        beta = b * sd_x / sd_y
        units = _BETA_UNITS if share is None else _BETA_LATENT_UNITS
        put_estimand(out, f"beta_{name}", beta, units=units, kind=kind, **extra)
        if share is not None:
            put_estimand(
                out,
                f"beta_obs_{name}",
                beta * share,
                units=_BETA_OBSERVED_UNITS,
                kind=kind,
                **extra,
            )
