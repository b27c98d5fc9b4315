"""The summary table of a family's estimands: one row per stable name, at full precision.

Each model family computes its own estimands draw by draw (``model/<family>/estimands.py``); the
report summarises whichever it is handed, so the table's columns and interval are the same for
every family.
"""

from __future__ import annotations

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.rank_diagnostics import dataset_diagnostics

__all__ = ["HDI_PROB", "TABLE_COLUMNS", "estimand_table"]

#: Interval reported everywhere: 95% highest density interval.
HDI_PROB = 0.95

#: Columns of :func:`estimand_table` (``units`` follows them).
TABLE_COLUMNS = (
    "estimand",
    "mean",
    "sd",
    "hdi95_low",
    "hdi95_high",
    "prob_positive",
    "ess_bulk",
    "ess_tail",
    "r_hat",
    "mcse_mean",
)

_SAMPLE_DIMS = ("chain", "draw")


def estimand_table(estimands: xr.Dataset) -> pd.DataFrame:
    """Summarise every estimand at full precision.

    Parameters
    ----------
    estimands : xarray.Dataset
        A family's estimands (scalar variables over ``chain``, ``draw``), e.g. the output of
        :func:`~alliance_bayes.model.regression.estimands.compute_estimands`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` then ``units``, one row per estimand in dataset order.
        ``hdi95_*`` is the 95% highest density interval (``arviz_stats.hdi``, method "nearest");
        ``prob_positive`` is the share of draws above zero; ``r_hat`` is the rank-normalised split
        R-hat and ``ess_bulk``/``ess_tail`` the bulk and tail ESS of Vehtari et al. (2021),
        doi:10.1214/20-BA1221; ``mcse_mean`` is the Monte Carlo standard error of the mean.
    """
    if not estimands.data_vars:
        return pd.DataFrame(columns=[*TABLE_COLUMNS, "units"])
    hdi = azs.hdi(estimands, prob=HDI_PROB, dim=list(_SAMPLE_DIMS))
    diagnosed = dataset_diagnostics(estimands)
    ess_bulk, ess_tail, rhat = (diagnosed[k] for k in ("ess_bulk", "ess_tail", "r_hat"))
    mcse = azs.mcse(estimands, sample_dims=list(_SAMPLE_DIMS), method="mean")
    rows = []
    for name, da in estimands.data_vars.items():
        values = da.values
        rows.append(
            {
                "estimand": str(name),
                "mean": float(values.mean()),
                # ddof=1: the sample SD of the draws, as ArviZ reports it.
                "sd": float(values.std(ddof=1)),
                "hdi95_low": float(hdi[name].sel(ci_bound="lower")),
                "hdi95_high": float(hdi[name].sel(ci_bound="upper")),
                "prob_positive": float(np.mean(values > 0)),
                "ess_bulk": float(ess_bulk[name]),
                "ess_tail": float(ess_tail[name]),
                "r_hat": float(rhat[name]),
                "mcse_mean": float(mcse[name]),
                "units": str(da.attrs.get("units", "")),
            }
        )
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "units"])
