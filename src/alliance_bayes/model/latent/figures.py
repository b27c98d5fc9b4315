"""Figures of the latent-alliance family: item curves, latent vs averaged scores, rating and
second-outcome (PHQ-9, or a declared instrument) posterior predictive checks.

Each is a :data:`~alliance_bayes.report.figures.FigureMaker`; it returns ``None`` when the run lacks
what it draws (so a bundle reloaded without its latent groups still renders).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from alliance_bayes.data.instruments import instrument_of
from alliance_bayes.model.latent.measurement import (
    LATENT_GROUP,
    THERAPIST_INDICATOR,
    TYPE_DESIGN,
    latent_scores,
    lowest_rating,
)
from alliance_bayes.report.figures import (
    DEFAULT_FORMATS,
    FigureResult,
    flat_draws,
    ordinal,
    percentile_of,
    plot_ppc,
    save_figure,
)
from alliance_bayes.spec import OUTCOMES


def plot_item_characteristic_curves(
    dt: xr.DataTree, outdir: Path, *, meta=None, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult | None:
    """Graded-response category curves P(r = k | theta) per item at the posterior means, with the
    expected rating E[r | theta] (right axis, the rating scale the outcome slopes use: 1–5, or
    the declared instrument's, read from the thresholds' cut labels)."""
    from scipy.special import expit

    post = dt["posterior"]
    if not {"threshold", "discrimination"} <= set(post.data_vars):
        return None
    kappa = post["threshold"].mean(("chain", "draw"))
    disc = post["discrimination"].mean(("chain", "draw"))
    rows = "item" if "item" in kappa.dims else "subscale"  # several items per subscale: per item
    subs = [str(s) for s in kappa[rows].values]
    low = lowest_rating(post["threshold"])
    high = low + kappa.sizes["cut"]
    k_all = np.asarray(kappa.values, dtype=float)
    theta = np.linspace(min(-4.0, k_all.min() - 1.5), max(3.0, k_all.max() + 1.5), 301)
    fig, panels = _panels(len(subs), 4.6, 3.4)
    parts = []
    for ax, s in zip(panels, subs, strict=True):
        k, d = kappa.sel({rows: s}).values, float(disc.sel({rows: s}))
        cum = expit(d * (theta[:, None] - k[None, :]))  # P(r > k)
        upper = np.column_stack([np.ones_like(theta), cum])
        lower = np.column_stack([cum, np.zeros_like(theta)])
        probs = upper - lower
        for j in range(probs.shape[1]):
            ax.plot(theta, probs[:, j], lw=1.2, label=f"r = {low + j}")
        ax.set_xlabel("latent alliance θ (client SD units)")
        ax.set_ylabel("P(rating = k | θ)")
        ax.set_title(f"{s}: discrimination {d:.2f}", fontsize=9)
        twin = ax.twinx()
        twin.plot(theta, low + cum.sum(axis=1), color="black", ls="--", lw=1)
        twin.set_ylim(low, high)
        twin.set_ylabel(f"E[rating | θ] ({low}–{high})", fontsize=8)
        parts.append(f"{s}: P({high}) exceeds 1/2 above θ = {k[-1]:.2f}")
    panels[0].legend(fontsize=7, loc="center left")
    fig.tight_layout()
    text = (
        "Item characteristic curves at posterior means (θ = 0 is the average client); "
        + "; ".join(parts)
        + "."
    )
    return FigureResult(
        "item_characteristic_curves",
        save_figure(fig, outdir, "item_characteristic_curves", formats),
        text,
    )


def _panels(n: int, width: float, height: float, per_row: int = 4):
    """A figure of ``n`` panels, at most ``per_row`` to a row (an instrument's twelve items would
    otherwise make one panel row five feet wide), and its first ``n`` axes; the rest hidden."""
    ncols = min(n, per_row)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_latent_vs_averaged(
    dt: xr.DataTree, outdir: Path, *, meta=None, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult | None:
    """Each client's latent true score (posterior mean, on the rating scale) against the averaged
    rating."""
    if "constant_data" not in dt.children:
        return None
    consts = dt["constant_data"].to_dataset()
    stored = LATENT_GROUP in dt.children or "z_client_alliance" in dt["posterior"].data_vars
    needed = {"mem_client", "mem_provider", "mem_weight", "alliance_observed"}
    # the provider-type indicators: the contract's therapist one, or one per non-reference type;
    # none in a study of one provider type, whose fit has no provider-type shift
    typed = {THERAPIST_INDICATOR, TYPE_DESIGN} & set(consts.data_vars)
    shifted = "provider_type_alliance" in dt["posterior"].data_vars
    if not stored or not needed <= set(consts.data_vars) or (shifted and not typed):
        return None
    if LATENT_GROUP in dt.children:
        scores = dt[LATENT_GROUP]["alliance_true"]
    else:
        scores = latent_scores(dt["posterior"].to_dataset(), consts)
    latent = scores.mean(("chain", "draw"))
    observed = consts["alliance_observed"]
    subs = [str(s) for s in latent["subscale"].values]
    low, high = 1, 5  # the contract's items, or the declared range the thresholds cut
    if "threshold" in dt["posterior"].data_vars:
        low = lowest_rating(dt["posterior"]["threshold"])
        high = low + dt["posterior"]["threshold"].sizes["cut"]
    fig, axes = plt.subplots(1, len(subs), figsize=(4.2 * len(subs), 3.8), squeeze=False)
    parts = []
    for ax, s in zip(axes[0], subs, strict=True):
        x = np.asarray(observed.sel(subscale=s).values, dtype=float)
        y = np.asarray(latent.sel(subscale=s).values, dtype=float)
        ok = np.isfinite(x)
        ax.scatter(x[ok], y[ok], s=4, alpha=0.3, color="C0")
        ax.plot([low, high], [low, high], color="grey", ls="--", lw=0.8)
        ax.set_xlim(low - 0.1, high + 0.1)
        ax.set_ylim(low - 0.1, high + 0.1)
        ax.set_xlabel(f"averaged {s} rating (observed mean)")
        ax.set_ylabel(f"latent {s} score (posterior mean)")
        at5 = ok & (x == high)
        sd_ratio = float(np.std(y[ok]) / np.std(x[ok]))
        parts.append(
            f"{s}: {int(at5.sum())} clients average exactly {high}, their latent scores "
            f"{np.quantile(y[at5], 0.05) if at5.any() else float('nan'):.2f}–"
            f"{np.quantile(y[at5], 0.95) if at5.any() else float('nan'):.2f} (5–95%); "
            f"SD ratio latent/averaged {sd_ratio:.2f}"
        )
    fig.tight_layout()
    text = "Latent vs averaged scores (shrinkage towards the mean) — " + "; ".join(parts) + "."
    return FigureResult(
        "latent_vs_averaged", save_figure(fig, outdir, "latent_vs_averaged", formats), text
    )


def plot_rating_ppc(
    dt: xr.DataTree, outdir: Path, *, meta=None, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult | None:
    """Posterior predictive distribution of the item ratings (share of each category per item,
    the share at the top category included) against the observed shares."""
    groups = set(dt.children)
    if not {"posterior_predictive", "observed_data"} <= groups or not all(
        "ratings" in dt[g].data_vars for g in ("posterior_predictive", "observed_data")
    ):
        return None
    obs = dt["observed_data"]["ratings"]
    rep = dt["posterior_predictive"]["ratings"]
    rows = "item" if "item" in obs.dims else "subscale"  # several items per subscale: per item
    subs = [str(s) for s in obs[rows].values]
    cats = [str(c) for c in obs["category"].values]
    fig, panels = _panels(len(subs), 4.2, 3.4)
    parts = []
    for ax, s in zip(panels, subs, strict=True):
        o = np.asarray(obs.sel({rows: s}).values, dtype=float)
        r = flat_draws(rep.sel({rows: s})).astype(float)
        o_share, r_share = o / o.sum(), r / r.sum(axis=1, keepdims=True)
        x = np.arange(len(cats))
        lo, hi = np.quantile(r_share, [0.025, 0.975], axis=0)
        ax.bar(x, r_share.mean(axis=0), color="C0", alpha=0.5, label="replicated (mean, 95%)")
        ax.vlines(x, lo, hi, color="C0")
        ax.plot(x, o_share, "o", color="black", label="observed")
        ax.set_xticks(x, cats)
        ax.set_xlabel(f"{s} rating")
        ax.set_ylabel("share of session ratings")
        pct = percentile_of(o_share[-1], r_share[:, -1])
        parts.append(
            f"{s}: observed share at {cats[-1]} {o_share[-1]:.1%} vs replicated "
            f"{r_share[:, -1].mean():.1%} ({ordinal(pct)} percentile)"
        )
    panels[0].legend(fontsize=7)
    fig.tight_layout()
    text = "Item rating distribution, observed vs posterior predictive — " + "; ".join(parts) + "."
    paths = save_figure(fig, outdir, "rating_ppc", formats)
    return FigureResult("rating_ppc", paths, text, section="ppc")


def plot_phq9_ppc(
    dt: xr.DataTree, outdir: Path, *, meta=None, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult | None:
    """The outcome PPC panels (distribution, floor and ceiling shares, change) for the joint
    model's second outcome (``y_<name>`` against ``baseline_<name>``): PHQ-9 follow-up
    (``ppc_phq9``), WHO-5, or an instrument the study declares (``ppc_gad7``), whose range and label
    are the fit's record of its declaration (``meta["scales"]["declared_outcomes"]``) or, without
    it, that of a study loaded in this process."""
    second = _second_outcome(dt)
    if second is None:
        return None
    facts = _outcome_facts(second, meta)
    if facts is None:
        return None
    (lo, hi), label = facts
    return plot_ppc(
        dt,
        outdir,
        outcome_range=(lo, hi),
        outcome_label=label,
        formats=formats,
        var=f"y_{second}",
        baseline_var=f"baseline_{second}",
        name=f"ppc_{second}",
    )


def _second_outcome(dt: xr.DataTree) -> str | None:
    """The short name of the second outcome whose observed, replicated and baseline values the
    run holds (``phq9``), or None."""
    if "observed_data" not in dt.children:
        return None
    for var in dt["observed_data"].data_vars:
        short = str(var).removeprefix("y_")
        if str(var).startswith("y_") and all(
            g in dt.children and v in dt[g].data_vars
            for g, v in (
                ("posterior_predictive", var),
                ("constant_data", f"baseline_{short}"),
            )
        ):
            return short
    return None


def _outcome_facts(short: str, meta) -> tuple[tuple[float, float], str] | None:
    """``((low, high), label)`` of an outcome by its short name: built in, recorded in the fit's
    scales, or declared by a study loaded; None where none of them knows it."""
    if f"{short}_followup" in OUTCOMES:
        _, bounds, label, _ = OUTCOMES[f"{short}_followup"]
        return bounds, label
    recorded = (((meta or {}).get("scales") or {}).get("declared_outcomes") or {}).get(short)
    if recorded:
        lo, hi = (float(v) for v in recorded["range"])
        return (lo, hi), f"{recorded['label']} follow-up ({lo:g}–{hi:g})"
    instrument = instrument_of(f"{short}_followup")
    return None if instrument is None else (instrument.range, instrument.outcome_label)


#: The figures this family adds to a bundle, in report order.
FIGURES = (
    plot_item_characteristic_curves,
    plot_latent_vs_averaged,
    plot_rating_ppc,
    plot_phq9_ppc,
)
