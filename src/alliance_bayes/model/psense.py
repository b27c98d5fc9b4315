"""Which priors power-scaling scales, and the power-scaling sensitivity of a fit's estimands.

Power-scaling sensitivity (Kallioinen, Paananen, Bürkner & Vehtari 2024,
doi:10.1007/s11222-023-10366-5; ``arviz_stats.psense_summary``) scales the prior or the
likelihood by a power and measures how far each estimand's posterior moves. Only the priors
someone chose are scaled (:data:`TOP_LEVEL_PRIORS`, each with the spec setting of its scale); the
hierarchy's layers (:data:`HIERARCHICAL_LAYERS`) are part of the model, not a prior to doubt.
Every family's parameters are classified here, on the families' floor, so that a fit's verb
(``fit.psense()``) and the prior-sensitivity check (:mod:`alliance_bayes.checks.sensitivity`)
read one table.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Sequence

import pandas as pd
import xarray as xr

__all__ = [
    "HIERARCHICAL_LAYERS",
    "PSENSE_THRESHOLD",
    "TOP_LEVEL_PRIORS",
    "prior_variables",
    "psense_estimands",
    "top_level_priors",
]

#: The power-scaling sensitivity above which ``psense_summary`` flags an estimand.
PSENSE_THRESHOLD = 0.05

#: The priors that power-scaling scales: ``log_prior`` variable -> the spec setting of its scale.
#: Each is a prior someone chose, on a parameter that every parametrisation of the model samples
#: under this name. The order is the order of :func:`top_level_priors`' answer.
TOP_LEVEL_PRIORS: dict[str, str] = {
    "alpha": "priors.intercept_sd",
    "b_baseline": "priors.b_baseline_sd",
    "b_covariate_z": "priors.b_covariate_sd",
    "b_alliance": "priors.b_alliance_sd",
    "b_care": "priors.b_care_sd",
    "mu_b": "priors.mu_b_sd",
    # The care-type slopes themselves are free only when not pooled, with a Normal(0, mu_b_sd).
    "b": "priors.mu_b_sd",
    "sd_b": "priors.sd_b_sd",
    "sd_provider": "priors.sd_provider_sd",
    "sd_provider_slope": "priors.sd_provider_slope_sd",
    "chol_provider": "priors.lkj_eta",
    "sigma": "priors.sigma_sd",
    "nu_minus_one": "priors.nu_rate",
    "rho_outcomes_raw": "priors.lkj_eta",
    "cutpoint_top": "measurement.threshold_sd",
    "cutpoint_gap": "measurement.threshold_sd",
    "discrimination": "measurement.discrimination_sd",
    "sd_provider_alliance": "measurement.sd_provider_alliance_sd",
    "chol_client_alliance": "priors.lkj_eta",
    "chol_provider_alliance": "priors.lkj_eta",
    "provider_type_alliance": "measurement.provider_type_alliance_sd",
    # Latent provider means (between = "latent_mean"): fixed scales in the regression graph.
    "alliance_mu": "graph.ALLIANCE_MEAN_PRIOR",
    "alliance_sd_client": "graph.ALLIANCE_CLIENT_SD",
    "alliance_sd_provider": "graph.ALLIANCE_PROVIDER_SD",
    # The ratings family (alliance as the outcome): its own fixed prior scales, sampled on the
    # logit scale (a_0 x ~ N(0, a_0 sd), the prior x ~ N(0, sd) with the scale's Jacobian).
    "b_covariate_logit": "ratings.b_covariate_sd",
    "b_care_logit": "ratings.b_care_sd",
    "provider_type_alliance_logit": "ratings.provider_type_alliance_sd",
    "b_session_logit": "ratings.b_session_sd",
    "log_discrimination_mean": "ratings.discrimination_sd",
    "log_discrimination_contrast": "ratings.discrimination_sd",
    "sd_country_latent": "ratings.sd_country_sd",
    "sd_provider_latent": "ratings.sd_provider_sd",
    # The change family (baseline and follow-up with measurement error): its [change] table.
    "mu_true_baseline": "change.true_mean_sd",
    "true_change": "change.true_change_sd",
    "sd_true": "change.true_sd_sd",
    "corr_true_01": "change graph: Beta(2, 2)",
    "reliability": "change.reliability_mean",
    # its covariate slopes per SD (the regression family's b_covariate_sd, scaled to the outcome)
    "b_covariate_baseline_z": "priors.b_covariate_sd",
    "b_covariate_change_z": "priors.b_covariate_sd",
}

#: Layers of the hierarchy, never scaled: care-type slopes (centred ``b_centred_slope`` or
#: non-centred ``z_b``, per cell), provider intercepts (``v_provider``, partially non-centred per
#: provider; ``v_provider_sampled`` in the collapsed form) and slopes, and the latent alliance.
HIERARCHICAL_LAYERS = frozenset(
    {
        "b_centred_slope",
        "z_b",
        "v_provider",
        "v_provider_sampled",
        "z_provider_slope",
        "z_provider",
        "z_client_alliance",
        "z_provider_alliance",
        "v_alliance_provider",
        "z_client",
        "z_country",
        "client_alliance_logit",
    }
)


def top_level_priors(names: Iterable[str]) -> list[str]:
    """The top-level priors among a model's ``log_prior`` variables, in :data:`TOP_LEVEL_PRIORS` order.

    Two parametrisations of the same model (any centring of the care-type slopes or the provider
    effects, per-client or collapsed likelihood) give the same answer.

    Raises
    ------
    ValueError
        For a variable in neither :data:`TOP_LEVEL_PRIORS` nor :data:`HIERARCHICAL_LAYERS`: a new
        parameter must be classified before power-scaling can be read.
    """
    names = {str(n) for n in names}
    unknown = sorted(names - set(TOP_LEVEL_PRIORS) - HIERARCHICAL_LAYERS)
    if unknown:
        raise ValueError(
            f"log_prior variables {unknown} are neither top-level priors nor hierarchical layers; "
            "add each to TOP_LEVEL_PRIORS or HIERARCHICAL_LAYERS in model/psense.py"
        )
    return [n for n in TOP_LEVEL_PRIORS if n in names]


def prior_variables(dt: xr.DataTree) -> list[str]:
    """The ``log_prior`` terms of ``dt`` that power-scaling scales (:func:`top_level_priors`)."""
    return top_level_priors(dt["log_prior"].data_vars)


def psense_estimands(
    dt: xr.DataTree,
    estimands: xr.Dataset,
    var_names: Sequence[str] | None = None,
    threshold: float = PSENSE_THRESHOLD,
) -> pd.DataFrame:
    """Power-scaling sensitivity of each estimand: columns ``prior``, ``likelihood``, ``diagnosis``.

    ``dt`` must hold ``log_prior`` and ``log_likelihood`` (as :func:`~alliance_bayes.inference.sample_model`
    writes them); ``estimands`` is :func:`~alliance_bayes.model.regression.estimands.compute_estimands`' output.
    """
    import arviz_stats as azs

    from alliance_bayes.model.pointwise import CLIENT_VAR, client_log_likelihood

    names = list(var_names) if var_names is not None else [str(v) for v in estimands.data_vars]
    priors = prior_variables(dt)
    ll = client_log_likelihood(dt)["log_likelihood"].to_dataset()
    tree = xr.DataTree.from_dict(
        {
            "posterior": estimands[names].reset_coords(drop=True),
            "log_prior": dt["log_prior"].to_dataset()[priors],
            "log_likelihood": ll,
        }
    )
    # psense_summary prints a pointer to the docs when it flags anything; the table says it all.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = azs.psense_summary(
            tree,
            threshold=threshold,
            prior_var_names=priors,
            likelihood_var_names=[CLIENT_VAR],
            round_to=6,
        )
    out = pd.DataFrame(out)
    out.index = [str(i) for i in out.index]
    out["diagnosis"] = out["diagnosis"].astype(str)
    return out
