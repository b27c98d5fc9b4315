"""The estimands of the latent family: each outcome's regression estimands, then the measurement's.

The outcome parameters carry an ``outcome`` dimension; each outcome's slice is handed to the
regression family's :func:`~alliance_bayes.model.regression.estimands.compute_estimands`, so the
estimands keep the stable names of the single-outcome models.
"""

from __future__ import annotations

from collections.abc import Mapping

import xarray as xr

from alliance_bayes.data.instruments import instrument_of
from alliance_bayes.errors import SpecError
from alliance_bayes.model.latent.instrument_check import CONTRACT_SCALE
from alliance_bayes.model.latent.measurement import lowest_rating
from alliance_bayes.model.regression.estimands import (
    _covariate_units,
    compute_estimands,
    put_estimand,
)
from alliance_bayes.spec import OUTCOMES, ModelSpec

__all__ = ["compute_joint_estimands", "outcome_units"]


def outcome_units(spec: ModelSpec, scales: Mapping[str, object] | None = None) -> dict[str, str]:
    """Units of each ``[measurement]`` outcome by its short name (``{"who5": "WHO-5 points",
    "gad7": "GAD-7 points"}``): built in, else the fit's record of its declaration
    (``scales["declared_outcomes"]``, :func:`~alliance_bayes.model.latent.measurement.latent_scales`),
    else the declaration of a study loaded in this process.

    Raises
    ------
    SpecError
        A declared outcome that neither the scales nor a study loaded declare.
    """
    assert spec.measurement is not None
    declared = (scales or {}).get("declared_outcomes") or {}
    units = {}
    for outcome in spec.measurement.outcomes:
        short = outcome.removesuffix("_followup")
        if outcome in OUTCOMES:
            units[short] = OUTCOMES[outcome][3]
        elif short in declared:
            units[short] = str(declared[short]["units"])
        elif (instrument := instrument_of(outcome)) is not None:
            units[short] = instrument.units
        else:
            raise SpecError(
                f"{spec.source or spec.name}: outcome {outcome!r} is declared by no study loaded "
                f"and the fit records no declaration; load the study that declares "
                f"[outcomes.{short}] first"
            )
    return units


def compute_joint_estimands(
    posterior: xr.Dataset,
    *,
    outcome_units: dict[str, str],
    primary: str,
    care_weights: Mapping[str, Mapping[str, float] | None] | None = None,
    alliance_scale: str | None = None,
    covariate_coding: Mapping[str, Mapping[str, object]] | None = None,
) -> xr.Dataset:
    """Estimands of a model with an ``outcome`` dimension (the latent-alliance model).

    Parameters
    ----------
    posterior : xarray.Dataset
        Posterior whose outcome parameters (``mu_b``, ``b``, ``sd_b``, ``sd_provider``, ``sigma``,
        ``b_baseline``, ``b_covariate``) carry a leading ``outcome`` dimension (e.g. ``who5``,
        ``phq9``).
    outcome_units : dict
        Units of each outcome coordinate, e.g. ``{"who5": "WHO-5 points", "phq9": "PHQ-9 points"}``
        (:func:`outcome_units`).
    primary : str
        The outcome coordinate whose estimands keep the plain stable names (``b_goal_within`` …),
        so that they line up with the single-outcome models; every other outcome's estimands are
        prefixed ``"<outcome>:"`` (``phq9:b_goal_within``) and their ``subscale`` attribute too,
        so that tables keep the outcomes in separate rows.
    care_weights : mapping, optional
        Per outcome coordinate, the weights of its pooled slopes (the care mix of the clients
        whose outcome is observed); see
        :func:`~alliance_bayes.model.regression.estimands.compute_estimands`.
    alliance_scale : str, optional
        The declared alliance scale the true scores are on (``"WAI-S 1–7"``,
        :func:`~alliance_bayes.model.regression.design.alliance_scale` of the design's scales):
        the slopes are per point of it. Without it, the scale of the ``threshold`` cuts' labels:
        the contract's 1–5 keeps the regression family's units, another range (``"1|2"`` …
        ``"6|7"``) names itself.
    covariate_coding : mapping, optional
        How each declared covariate is coded (``covariate_coding`` of
        :func:`~alliance_bayes.model.latent.measurement.latent_scales`): with it a level's or a
        text-coded binary covariate's units name the reference level, as the regression family's
        do (``"WHO-5 points, anxiety vs depression (reference)"``).

    Returns
    -------
    xarray.Dataset
        The :func:`compute_estimands` of each outcome, then ``rho_outcomes`` (residual correlation
        of the outcomes, where both are observed) and the measurement estimands (kind
        ``"measurement"``): ``threshold[<subscale>,<k>|<k+1>]`` (logit units, client latent SD 1),
        ``discrimination[<subscale>]``, ``sd_provider_alliance[<subscale>]`` (SD of the provider
        part of the latent alliance, in client-SD units) and ``corr_client_alliance[<pair>]``;
        with several items per subscale the thresholds and discriminations are per item,
        ``threshold[<item>,<k>|<k+1>]`` and ``discrimination[<item>]`` (attribute ``item``).
    """
    out: dict[str, xr.DataArray] = {}
    outcomes = [str(o) for o in posterior["outcome"].values]
    scale = alliance_scale or _threshold_scale(posterior)
    with_dim = [v for v in posterior.data_vars if "outcome" in posterior[v].dims]
    for o in [primary, *(o for o in outcomes if o != primary)]:
        part = compute_estimands(
            posterior[with_dim].sel(outcome=o),
            outcome_units=outcome_units[o],
            effect_units=f"{outcome_units[o]} per 1 point of the {scale} scale" if scale else None,
            care_weights=(care_weights or {}).get(o),
        )
        prefix = "" if o == primary else f"{o}:"
        for name, da in part.data_vars.items():
            attrs = dict(da.attrs)
            if covariate_coding and "covariate" in attrs:
                # compute_estimands reads the coding from a design's full scales only, which
                # would also add standardised slopes on a metric the latent design lacks.
                unit, named = _covariate_units(str(name).removeprefix("b_"), covariate_coding)
                sep = " " if unit.startswith("per") else ", "
                attrs |= named | {"units": f"{outcome_units[o]}{sep}{unit}"}
            if prefix and "subscale" in attrs:
                attrs["subscale"] = prefix + attrs["subscale"]
            out[prefix + str(name)] = da.assign_attrs(attrs)
    if "rho_outcomes" in posterior:
        put_estimand(
            out,
            "rho_outcomes",
            posterior["rho_outcomes"],
            units=f"correlation of the {' and '.join(outcomes)} residuals (-1 to 1)",
            kind="variance component",
        )
    if "threshold" in posterior:
        th = posterior["threshold"]
        rows = _rows(th)
        for s in (str(x) for x in th[rows].values):
            for k in (str(x) for x in th["cut"].values):
                put_estimand(
                    out,
                    f"threshold[{s},{k}]",
                    th.sel({rows: s, "cut": k}),
                    units="logit units (client latent SD = 1)",
                    kind="measurement",
                    **{rows: s},
                )
    for var, units in (
        ("discrimination", "per client latent SD (logit scale)"),
        ("sd_provider_alliance", "client latent SDs"),
    ):
        if var in posterior:
            rows = _rows(posterior[var])
            for s in (str(x) for x in posterior[var][rows].values):
                put_estimand(
                    out,
                    f"{var}[{s}]",
                    posterior[var].sel({rows: s}),
                    units=units,
                    kind="measurement",
                    **{rows: s},
                )
    if "corr_client_alliance" in posterior:
        corr = posterior["corr_client_alliance"]
        for pair in (str(x) for x in corr["subscale_pair"].values):
            put_estimand(
                out,
                f"corr_client_alliance[{pair}]",
                corr.sel(subscale_pair=pair),
                units="correlation of client latent subscale scores (-1 to 1)",
                kind="measurement",
            )
    return xr.Dataset(out)


def _rows(da: xr.DataArray) -> str:
    """The dimension of a measurement parameter's rows: ``item`` where the instrument has several
    items per subscale (each item its own cut-points and discrimination), else ``subscale``."""
    return "item" if "item" in da.dims else "subscale"


def _threshold_scale(posterior: xr.Dataset) -> str | None:
    """The rating scale ``"L–H"`` of the posterior's ``threshold`` cuts, or None for the
    contract's 1–5 (or without thresholds)."""
    if "threshold" not in posterior:
        return None
    th = posterior["threshold"]
    low, n_cuts = lowest_rating(th), th.sizes["cut"]
    if (low, n_cuts) == (CONTRACT_SCALE.low, CONTRACT_SCALE.n_categories - 1):
        return None
    return f"{low}–{low + n_cuts}"
