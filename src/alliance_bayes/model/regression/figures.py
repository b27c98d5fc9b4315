r"""Figures of the averaged-score models: predicted outcomes across the alliance range (conditional effects).

In the style of brms' ``conditional_effects``: for each subscale (or the composite score), the
expected follow-up of a client of an average provider (provider effects 0, the provider's caseload
mean at the sample mean, so the client's score moves the within-provider part only), with the
baseline and covariates at their sample means, per care type, across the observed range of client
scores, with 95% bands over the posterior draws. For a censored outcome the expected *observed*
follow-up is shown,

.. math::
    \mathbb E[\min(U, \max(L, y^*))] = L\Phi(a) + U(1 - \Phi(b)) + \mu(\Phi(b) - \Phi(a))
        + \sigma(\varphi(a) - \varphi(b)), \quad a = \tfrac{L - \mu}{\sigma},\ b = \tfrac{U - \mu}{\sigma},

and the lower row shows the change from the mean baseline. NumPy only: the figure is drawn from a
saved bundle without the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from scipy import stats

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.care import split_contrast
from alliance_bayes.report.figures import DEFAULT_FORMATS, FigureResult, cycle_colours, save_figure

__all__ = ["FIGURES", "conditional_predictions", "expected_observed", "plot_conditional_effects"]


def expected_observed(
    mu: np.ndarray, sigma: np.ndarray, bounds: Sequence[float] | None
) -> np.ndarray:
    """E[y] of a Normal censored at ``bounds`` (the module's formula); ``mu`` if ``bounds`` is None."""
    if bounds is None:
        return mu
    lo, hi = (float(b) for b in bounds)
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    pa, pb = stats.norm.cdf(a), stats.norm.cdf(b)
    return (
        lo * pa + hi * (1 - pb) + mu * (pb - pa) + sigma * (stats.norm.pdf(a) - stats.norm.pdf(b))
    )


def _flat(posterior: xr.Dataset, name: str) -> np.ndarray:
    da = posterior[name]
    return da.values.reshape(da.shape[0] * da.shape[1], *da.shape[2:])


def conditional_predictions(
    posterior: xr.Dataset, meta: Mapping[str, Any], *, n_grid: int = 41
) -> dict[str, dict[str, Any]]:
    """Expected follow-up per draw over each predictor's observed range, per care type.

    Returns ``{predictor: {"grid": (G,), "curves": {care_type: (S, G)}}}`` (``predictor`` is a
    subscale name or ``"alliance"``); empty when the bundle lacks what it needs.
    """
    scales = meta.get("scales") or {}
    if "alpha" not in posterior or "outcome_sd" not in scales:
        return {}
    censored = (meta.get("spec_as_run") or {}).get("likelihood") == "censored_normal"
    bounds = meta.get("outcome_range") if censored else None
    alpha, sigma = _flat(posterior, "alpha"), _flat(posterior, "sigma")
    out: dict[str, dict[str, Any]] = {}
    if "b_alliance" in posterior:
        lo, hi = scales["composite_range"]
        grid = np.linspace(lo, hi, n_grid)
        mu = alpha[:, None] + _flat(posterior, "b_alliance")[:, None] * (
            grid - scales["composite_mean"]
        )
        out["alliance"] = {
            "grid": grid,
            "curves": {"all clients": expected_observed(mu, sigma[:, None], bounds)},
        }
        return out
    if "b" not in posterior:
        return {}
    b = posterior["b"]
    cares = [str(c) for c in b["care_type"].values]
    care_present = [c for c in scales.get("care_types", cares) if c in cares]
    gamma = {c: np.zeros_like(alpha) for c in cares}
    if "b_care" in posterior:
        contrast = _flat(posterior, "b_care")
        for j, label in enumerate(str(c) for c in posterior["b_care"]["care_contrast"].values):
            gamma[split_contrast(label)[0]] = contrast[:, j]
    for s in (str(x) for x in b["subscale"].values):
        lo, hi = scales["alliance_range"][s]
        grid = np.linspace(lo, hi, n_grid)
        within = grid - scales["between_mean"][s]
        curves = {}
        for c in care_present:
            slope = b.sel(care_type=c, subscale=s, level="within").values.ravel()
            mu = (alpha + gamma[c])[:, None] + slope[:, None] * within[None]
            curves[c] = expected_observed(mu, sigma[:, None], bounds)
        out[s] = {"grid": grid, "curves": curves}
    return out


def plot_conditional_effects(
    dt: xr.DataTree,
    outdir: Path,
    *,
    meta: Mapping[str, Any] | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult | None:
    """Predicted follow-up and change across the observed alliance range by care type (95% bands)."""
    meta = meta or {}
    preds = conditional_predictions(dt["posterior"].to_dataset(), meta)
    if not preds:
        return None
    base = float(meta["scales"]["baseline_mean"])
    label = meta.get("outcome_label", "outcome")
    scale = RecordedScale.of(meta.get("scales")).name  # a declared instrument's, else 1–5
    order = (
        [str(c) for c in dt["posterior"]["b"]["care_type"].values] if "b" in dt["posterior"] else []
    )
    colours = cycle_colours(order) | {"all clients": "black"}
    fig, axes = plt.subplots(2, len(preds), figsize=(4.2 * len(preds), 6.2), squeeze=False)
    notes = []
    for j, (name, pred) in enumerate(preds.items()):
        grid = pred["grid"]
        for care, draws in pred["curves"].items():
            for row, shift in ((0, 0.0), (1, base)):
                values = draws - shift
                lo, mid, hi = np.quantile(values, [0.025, 0.5, 0.975], axis=0)
                ax = axes[row, j]
                colour = colours[care]
                ax.fill_between(grid, lo, hi, color=colour, alpha=0.18, lw=0)
                ax.plot(grid, mid, color=colour, lw=1.6, label=care)
            span = draws[:, -1] - draws[:, 0]
            q = np.quantile(span, [0.025, 0.975])
            notes.append(
                f"{name}, {care}: {span.mean():+.1f} points from the lowest to the highest score "
                f"(95% interval {q[0]:+.1f} to {q[1]:+.1f})"
            )
        what = "composite alliance" if name == "alliance" else f"{name} rating"
        axes[0, j].set_title(f"{what} (client mean, {scale})", fontsize=9)
        axes[1, j].set_xlabel(f"client's {what}")
    axes[0, 0].set_ylabel(f"expected {label}")
    axes[1, 0].set_ylabel(f"expected change from baseline {base:.1f}")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle(
        "Conditional effects: a client of an average provider, baseline and covariates at their "
        "means (median, 95% band)",
        fontsize=9,
    )
    fig.tight_layout()
    how = "" if "alliance" in preds else " (within-provider slope, a client of an average provider)"
    text = f"Predicted follow-up across the observed alliance range{how}: " + "; ".join(notes) + "."
    paths = save_figure(fig, outdir, "conditional_effects", formats)
    return FigureResult("conditional_effects", paths, text, section="results")


FIGURES = (plot_conditional_effects,)
