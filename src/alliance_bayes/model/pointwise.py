"""What a fit scores per client: the per-client log-likelihood, Pareto k, the main provider and a
provider-clustered standard error.

The pieces of leave-one-out scoring that both a fit's own ``loo`` (:mod:`alliance_bayes.fit_verbs`),
the report's LOO-PIT and Pareto-k figures (:mod:`alliance_bayes.report.figures`) and the model
comparison (:mod:`alliance_bayes.checks.compare`) need, on the families' floor so that none of
them reaches up to the checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "CLIENT_DIM",
    "CLIENT_VAR",
    "K_HIGH",
    "SAMPLE_DIMS",
    "client_log_likelihood",
    "cluster_se",
    "main_provider",
    "pareto_k_counts",
]

CLIENT_DIM = "client"
CLIENT_VAR = "y_client"  # name of the combined per-client log-likelihood variable
SAMPLE_DIMS = ("chain", "draw")
K_HIGH = 0.7


def _client_dim(da: xr.DataArray, client_dim: str) -> str:
    """The dimension of ``da`` that indexes clients: ``client`` or one starting with ``client``."""
    if client_dim in da.dims:
        return client_dim
    candidates = [d for d in da.dims if str(d).startswith(client_dim)]
    if len(candidates) != 1:
        raise ValueError(
            f"log-likelihood variable {da.name!r} has dims {da.dims}: expected one client dimension"
        )
    return str(candidates[0])


def client_log_likelihood(dt: xr.DataTree, client_dim: str = CLIENT_DIM) -> xr.DataTree:
    """A copy of ``dt`` whose ``log_likelihood`` group holds one variable, summed per client.

    Every variable of ``log_likelihood`` is summed over its dimensions other than chain, draw and the
    client dimension (``client``, or a dimension whose name starts with it, e.g. ``client_phq9``,
    whose coordinate values are client labels); variables are aligned on the client label and summed,
    a client absent from a variable (an outcome not observed) contributing 0 to it. For a joint model
    this is log p(y_who5,i, y_phq9,i | θ), the density of everything observed on client i.

    Variables with no client dimension (the latent model's session ratings, observed as one
    summary per subscale and category) are conditioned on, not scored: the elpd is then that of
    each client's outcomes given every rating, which is what makes it comparable with a model of
    averaged ratings. Their names are kept in the group's ``conditioned_on`` attribute.
    """
    ll = dt["log_likelihood"].to_dataset()
    parts, conditioned = [], []
    for name, da in ll.data_vars.items():
        if not any(str(d).startswith(client_dim) for d in da.dims):
            conditioned.append(str(name))
            continue
        cdim = _client_dim(da, client_dim)
        other = [d for d in da.dims if d not in (*SAMPLE_DIMS, cdim)]
        summed = da.astype("float64").sum(other) if other else da.astype("float64")
        parts.append(summed.rename({cdim: client_dim}).rename(str(name)))
    if not parts:
        raise ValueError("the log_likelihood group is empty")
    aligned = xr.align(*parts, join="outer", fill_value=0.0)
    total = sum(aligned[1:], aligned[0]).rename(CLIENT_VAR)
    total = total.transpose(*SAMPLE_DIMS, client_dim)
    out = dt.copy()
    out["log_likelihood"] = xr.Dataset({CLIENT_VAR: total})
    out["log_likelihood"].attrs["conditioned_on"] = ", ".join(conditioned)
    return out


def pareto_k_counts(elpd: Any, threshold: float = K_HIGH) -> dict[str, int]:
    """Counts of Pareto k: ``good`` (k ≤ min(good_k, 0.7)), ``ok_high`` (≤ 1) and ``very_high`` (> 1)."""
    k = np.asarray(elpd.pareto_k).ravel()
    good_k = min(float(getattr(elpd, "good_k", threshold) or threshold), threshold)
    return {
        "k_good": int((k <= good_k).sum()),
        "k_high": int(((k > good_k) & (k <= 1.0)).sum()),
        "k_very_high": int((k > 1.0).sum()),
        "k_max": float(np.max(k)) if k.size else float("nan"),
        "good_k": good_k,
    }


def main_provider(index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each client's main provider (largest membership weight; ties → the first slot).

    ``index`` and ``weight`` are :meth:`AnalysisFrame.membership_arrays`, whose slots are in
    provider order, so a tie goes to the provider listed first (the lower pseudonym).
    """
    slot = np.argmax(np.asarray(weight), axis=1)  # argmax returns the first maximum
    return np.asarray(index)[np.arange(len(slot)), slot]


def cluster_se(values: np.ndarray, cluster: np.ndarray) -> float:
    r"""Standard error of :math:`\sum_i x_i` when the :math:`x_i` are independent only between
    clusters (clients of one provider share its effect and its fold).

    .. math::
        \widehat{\operatorname{se}} = \sqrt{\tfrac{G}{G-1} \textstyle\sum_g \big(\sum_{i \in g}
        (x_i - \bar x)\big)^2},

    the cluster-robust (sandwich) variance over :math:`G` clusters of :math:`n \bar x` (Cameron &
    Miller 2015, doi:10.3368/jhr.50.2.317), for the clients at hand: like the
    independent-clients SE :math:`\sqrt{n \operatorname{var}(x)}` that arviz reports, it does not
    count the variation of cluster sizes, and with one client per cluster it is that SE times
    :math:`\sqrt{n/(n-1)}`.
    """
    values = np.asarray(values, float)
    _, group = np.unique(np.asarray(cluster), return_inverse=True)
    totals = np.bincount(group, weights=values - values.mean())
    g = len(totals)
    if g < 2:
        return float("nan")
    return float(np.sqrt(g / (g - 1) * np.sum(totals**2)))
