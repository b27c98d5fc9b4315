"""Figures of a results bundle (PNG always, PDF too by default for papers).

Each public function saves one figure and returns a :class:`FigureResult`: the saved paths and a
one-line interpretation computed from the numbers shown (``report.md`` prints it under the figure).
arviz-plots draws the energy plot; the rank plot draws the rank ECDF differences itself, so that its
p-values are those of the gate's thinned uniformity test; the forest, predictive-check and provider
figures use plain matplotlib because they combine quantities (estimands across care types, ceiling
shares, change scores) that are not single posterior variables. No client or provider identifier is drawn.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arviz_plots as azp
import arviz_stats as azs
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from scipy import stats

from alliance_bayes.diagnostics import (
    UNIFORMITY_ALPHA,
    UNIFORMITY_TEST,
    element_names,
    format_p,
    holm_adjust,
)
from alliance_bayes.rank_diagnostics import UNIFORMITY, dataset_diagnostics
from alliance_bayes.report.estimands import HDI_PROB, estimand_table

__all__ = [
    "FigureDrawing",
    "FigureMaker",
    "FigureResult",
    "bound_shares",
    "figure_pool",
    "figure_workers",
    "make_all_figures",
    "plot_energy",
    "plot_forest_subscales",
    "plot_ppc",
    "plot_prior_posterior",
    "plot_prior_predictive",
    "plot_provider_effects",
    "plot_provider_slopes",
    "plot_rank",
    "prior_predictive_bound_share",
]

DEFAULT_FORMATS = ("png", "pdf")
KEY_PARAMETERS = ("b_alliance", "b_baseline", "mu_b", "sd_provider", "sigma", "nu")
_CARE_ORDER = ("therapist", "coach", "both", "pooled")
_CARE_COLOURS = {"therapist": "C0", "coach": "C1", "both": "C2", "pooled": "black"}


@dataclass
class FigureResult:
    """Saved figure: ``name`` (file stem), ``paths``, one-line ``interpretation``, and the report
    ``section`` it belongs to (``priors``, ``computation``, ``ppc`` or ``results``)."""

    name: str
    paths: list[Path]
    interpretation: str
    section: str = "results"

    @property
    def title(self) -> str:
        """A readable title for the report (the ``name`` stays the file stem); a stem that
        extends a known one (``ppc_phq9``) gets that title with its suffix (``(phq9)``)."""
        if self.name in FIGURE_TITLES:
            return FIGURE_TITLES[self.name]
        stem = next((k for k in FIGURE_TITLES if self.name.startswith(f"{k}_")), None)
        if stem is not None:
            return f"{FIGURE_TITLES[stem]} ({self.name.removeprefix(stem + '_')})"
        return self.name.replace("_", " ").capitalize()


#: Readable titles of the figures, by file stem.
FIGURE_TITLES = {
    "rank": "Rank plots of the chains",
    "energy": "Energy and E-BFMI",
    "forest_subscales": "Alliance subscale effects by care type",
    "ppc": "Posterior predictive check",
    "prior_predictive": "Prior predictive check",
    "prior_posterior": "Prior and posterior densities",
    "provider_effects": "Provider intercepts",
    "provider_slopes": "Provider slopes",
    "conditional_effects": "Conditional effects",
    "rating_ppc": "Posterior predictive check of the ratings",
    "item_characteristic_curves": "Item characteristic curves",
    "latent_vs_averaged": "Latent versus averaged scores",
}


#: A figure a model family adds: ``make(dt, outdir, meta=..., formats=...)`` → FigureResult or None.
FigureMaker = Callable[..., "FigureResult | None"]


#: Resolution of the PNG figures: the 300 dpi journals ask of raster figures.
PNG_DPI = 300
#: Font settings while a figure is saved: TrueType (Type 42) fonts in PDF and PostScript, which
#: journals' checks accept and editors can edit, instead of matplotlib's default Type 3.
_SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}


def save_figure(fig: Any, outdir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """Save ``fig`` as ``outdir/name.<ext>`` for each format (PNG at :data:`PNG_DPI`, PDF with
    Type 42 fonts) and close it. The font setting holds only while saving (the caller's
    ``rcParams`` are left as they were)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        with plt.rc_context(_SAVE_RC):
            for ext in formats:
                p = outdir / f"{name}.{ext}"
                # Fixed metadata keeps PDFs byte-stable across runs (no creation date).
                meta = {"CreationDate": None} if ext == "pdf" else None
                fig.savefig(p, dpi=PNG_DPI, bbox_inches="tight", metadata=meta)
                paths.append(p)
    finally:
        plt.close(fig)
    return paths


def _pc_figure(pc: Any) -> Any:
    fig = pc.viz["figure"]
    return fig.item() if hasattr(fig, "item") else fig


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def percentile_of(value: float, reference: np.ndarray) -> int:
    """Mid-rank percentile of ``value`` among ``reference`` (ties count half)."""
    ref = np.asarray(reference, dtype=float).ravel()
    share = (np.sum(ref < value) + 0.5 * np.sum(ref == value)) / ref.size
    return round(100 * share)


def plot_rank(
    dt: xr.DataTree,
    outdir: Path,
    *,
    var_names: Sequence[str] | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult:
    """Rank (ECDF-difference) plots of the key parameters, one panel per element.

    Each line is one chain's ECDF of the fractional ranks (ranks over all chains, divided by the
    number of draws) minus the uniform CDF (Säilynoja, Bürkner & Vehtari 2022,
    doi:10.1007/s11222-022-10090-6). Each panel prints, and the caption states, the p-value of
    :func:`~alliance_bayes.rank_diagnostics.rank_uniformity`: the test arviz-plots' ``plot_rank``
    prints, on draws thinned to about independent ones, computed by the same function as the
    gate's ``rank_uniformity`` warning (arviz-plots' own figure would test the unthinned draws,
    which flags autocorrelated chains that mix, and would spend about 2 s doing it).
    """
    post = dt["posterior"]
    names = [v for v in (var_names or KEY_PARAMETERS) if v in post.data_vars]
    if not names:
        names = list(post.data_vars)[:4]
    ds = post.to_dataset()[names].astype(float)
    diag = dataset_diagnostics(ds, statistics=("r_hat", UNIFORMITY))
    worst_var, worst = max(
        ((v, float(diag["r_hat"][v].max())) for v in names), key=lambda kv: kv[1]
    )
    labels, draws, pvals = [], [], []
    for v in names:
        da = ds[v].transpose("chain", "draw", ...)
        labels += element_names(da, v)
        draws.append(da.values.reshape(da.shape[0], da.shape[1], -1))
        pvals.append(np.asarray(diag[UNIFORMITY][v].values, float).ravel())
    p = np.concatenate(pvals)
    fig = _rank_figure(labels, np.concatenate(draws, axis=2), p)
    text = (
        f"Rank plots of {', '.join(names)}: one line per chain, its rank ECDF minus the uniform; "
        f"largest rank-normalised R-hat among them {worst:.3f} ({worst_var}). "
        + _uniformity_caption(labels, p)
    )
    paths = save_figure(fig, outdir, "rank", formats)
    return FigureResult("rank", paths, text, section="computation")


def _uniformity_caption(labels: Sequence[str], p: np.ndarray) -> str:
    """The caption's account of the uniformity test: every p-value, then the verdict."""
    alpha = UNIFORMITY_ALPHA
    holm = holm_adjust(p)
    listed = "; ".join(f"{n} {format_p(v, False)}" for n, v in zip(labels, p, strict=True))
    flagged = [n for n, v in zip(labels, holm, strict=True) if v <= alpha]
    raw = int(np.sum(p <= alpha))
    if flagged:
        verdict = (
            f"After Holm adjustment over the {p.size} shown, {', '.join(flagged)} "
            f"{'has' if len(flagged) == 1 else 'have'} p ≤ {alpha:g}: some chain's ranks are not "
            "uniform, so the chains have not all found the same posterior there."
        )
    else:
        verdict = (
            f"{raw} of {p.size} with p ≤ {alpha:g}, none after Holm adjustment over the {p.size} "
            "shown: no evidence against mixing."
        )
    return (
        f"p-values of the {UNIFORMITY_TEST}, α = {alpha:g}: {listed}. {verdict} "
        "diagnostics.md tests every posterior element and estimand."
    )


def _rank_figure(labels: Sequence[str], draws: np.ndarray, p: np.ndarray) -> Any:
    """Panels of rank-ECDF differences, ``draws`` (chain, draw, element), p-value in each."""
    chains, n, k = draws.shape
    cols = min(4, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.1 * rows), squeeze=False)
    grid = np.linspace(0.0, 1.0, min(n, 200) + 1)
    # Dvoretzky-Kiefer-Wolfowitz half-width at the test's level (arviz-plots' y-range, padded).
    bound = 1.3 * np.sqrt(np.log(2 / UNIFORMITY_ALPHA) / (2 * n))
    for j, ax in enumerate(axes.ravel()):
        if j >= k:
            ax.set_axis_off()
            continue
        u = stats.rankdata(draws[:, :, j].ravel(), method="average").reshape(chains, n) / (
            chains * n
        )
        diff = (u[:, :, None] <= grid).mean(axis=1) - grid  # (chain, grid)
        for c in range(chains):
            ax.step(grid, diff[c], where="post", lw=1.0, color=f"C{c % 10}")
        ax.axhline(0.0, color="0.6", lw=0.6)
        lim = max(bound, float(np.abs(diff).max()) * 1.1)
        ax.set_ylim(-lim, lim)
        flagged = p[j] <= UNIFORMITY_ALPHA
        ax.set_title(labels[j], fontsize=8, color="C3" if flagged else "black")
        ax.text(
            0.02,
            0.92,
            format_p(p[j]),
            transform=ax.transAxes,
            fontsize=7,
            va="top",
            color="C3" if flagged else "black",
        )
        ax.tick_params(labelsize=6)
        if j // cols == rows - 1 or j + cols >= k:
            ax.set_xlabel("fractional rank", fontsize=7)
    fig.tight_layout()
    return fig


def plot_energy(
    dt: xr.DataTree, outdir: Path, *, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult:
    """Marginal vs transition energy with per-chain E-BFMI, via ``arviz_plots.plot_energy``."""
    pc = azp.plot_energy(dt, backend="matplotlib")
    bfmi = np.asarray(azs.bfmi(dt["sample_stats"].to_dataset()[["energy"]])["energy"].values)
    text = (
        f"E-BFMI per chain ranges {bfmi.min():.2f}–{bfmi.max():.2f} (threshold 0.3); "
        f"{int(np.sum(bfmi < 0.3))} of {bfmi.size} chains below it."
    )
    fig = _pc_figure(pc)
    for ax in fig.axes:
        if ax.get_title() == "BFMI":
            ax.set_xlabel("E-BFMI per chain (dashed: threshold 0.3)")
        else:
            ax.set_xlabel("energy minus its mean (marginal); change in energy between draws")
            ax.set_title("Marginal and transition energy", fontsize=9)
    paths = save_figure(fig, outdir, "energy", formats)
    return FigureResult("energy", paths, text, section="computation")


def plot_forest_subscales(
    estimands: xr.Dataset,
    outdir: Path,
    *,
    effect_units: str = "outcome points per 1 point of alliance",
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult:
    """Forest plot of subscale effects by care type and level, with the pooled effect."""
    names = [n for n, v in estimands.data_vars.items() if v.attrs.get("kind") == "subscale effect"]
    summary = estimand_table(estimands[names]).set_index("estimand") if names else None
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * max(len(names), 4) + 1.0))
    if summary is None:
        ax.text(0.5, 0.5, "No subscale effects in this model", ha="center", va="center")
        ax.set_axis_off()
        return FigureResult(
            "forest_subscales",
            save_figure(fig, outdir, "forest_subscales", formats),
            "No subscale effects in this model.",
        )
    rows = []
    groups = dict.fromkeys(
        (estimands[n].attrs["subscale"], estimands[n].attrs["level"]) for n in names
    )
    for s, lv in groups:
        for care in _CARE_ORDER:
            for n in names:
                a = estimands[n].attrs
                if (a["subscale"], a["level"], a["care_type"]) == (s, lv, care):
                    rows.append((n, care))
    y = np.arange(len(rows))[::-1]
    for yi, (n, care) in zip(y, rows, strict=True):
        r = summary.loc[n]
        ax.plot([r["hdi95_low"], r["hdi95_high"]], [yi, yi], color=_CARE_COLOURS[care], lw=1.5)
        ax.plot(r["mean"], yi, "o", color=_CARE_COLOURS[care], ms=4 if care != "pooled" else 6)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, [n for n, _ in rows], fontsize=7)
    ax.set_xlabel(f"{effect_units}\n(posterior mean, {round(HDI_PROB * 100)}% HDI)", fontsize=8)
    fig.tight_layout()
    pooled = [n for n, c in rows if c == "pooled"]
    care_rows = [n for n, c in rows if c != "pooled"]
    excl = sum(
        1 for n in care_rows if summary.loc[n, "hdi95_low"] > 0 or summary.loc[n, "hdi95_high"] < 0
    )
    text = f"{excl} of {len(care_rows)} care-type-specific 95% HDIs exclude zero"
    if pooled:
        best = max(pooled, key=lambda n: abs(summary.loc[n, "mean"]))
        r = summary.loc[best]
        text += (
            f"; largest pooled effect {best} = {r['mean']:.2f} "
            f"[{r['hdi95_low']:.2f}, {r['hdi95_high']:.2f}]"
        )
    return FigureResult(
        "forest_subscales", save_figure(fig, outdir, "forest_subscales", formats), text + "."
    )


def flat_draws(da: xr.DataArray) -> np.ndarray:
    """(sample, client) array of replicated outcomes."""
    return da.stack(sample=("chain", "draw")).transpose("sample", ...).values


#: A replicated value within this share of the range from a bound counts as at that bound
#: (below 2 or above 98 on WHO-5's 0–100), since a Normal replicate is never exactly 0 or 100.
BOUND_TOLERANCE = 0.02


def bound_shares(
    y_obs: np.ndarray, y_rep: np.ndarray, outcome_range: Sequence[float]
) -> dict[str, tuple[float, np.ndarray]]:
    """Observed and replicated shares of clients at the floor and at the ceiling.

    Parameters
    ----------
    y_obs : array (client,)
        Observed outcomes (non-finite entries are ignored).
    y_rep : array (replicate, client)
        Replicated outcomes.
    outcome_range : (lower, upper)
        Bounds of the outcome's metric.

    Returns
    -------
    dict
        ``{"floor": (observed share, replicated shares), "ceiling": (...)}``. A value counts as at
        the floor below ``lower + BOUND_TOLERANCE·(upper − lower)``, at the ceiling above
        ``upper − BOUND_TOLERANCE·(upper − lower)``.
    """
    lo, hi = float(outcome_range[0]), float(outcome_range[1])
    tol = BOUND_TOLERANCE * (hi - lo)
    ok = np.isfinite(y_obs)
    obs, rep = np.asarray(y_obs, float)[ok], np.asarray(y_rep, float)[:, ok]
    return {
        "floor": (float(np.mean(obs < lo + tol)), np.mean(rep < lo + tol, axis=1)),
        "ceiling": (float(np.mean(obs > hi - tol)), np.mean(rep > hi - tol, axis=1)),
    }


def plot_ppc(
    dt: xr.DataTree,
    outdir: Path,
    *,
    outcome_range: Sequence[float] = (0.0, 100.0),
    outcome_label: str = "outcome",
    n_replicates: int = 50,
    seed: int = 0,
    formats: Sequence[str] = DEFAULT_FORMATS,
    var: str = "y",
    baseline_var: str = "baseline",
    name: str = "ppc",
) -> FigureResult:
    """Posterior predictive checks on the outcome scale.

    Four panels: histogram of observed ``var`` over ``n_replicates`` replicated histograms; the
    share at the floor and the share at the ceiling, observed vs the distribution of replicated
    shares (all draws; see :func:`bound_shares`); the change score ``var − baseline_var``
    observed vs replicated. ``name`` is the figure's file name.
    """
    y_obs = np.asarray(dt["observed_data"][var].values, dtype=float)
    y_rep = flat_draws(dt["posterior_predictive"][var]).astype(float)
    baseline = np.asarray(dt["constant_data"][baseline_var].values, dtype=float)
    lo, hi = float(outcome_range[0]), float(outcome_range[1])
    rng = np.random.default_rng(seed)
    pick = rng.choice(y_rep.shape[0], size=min(n_replicates, y_rep.shape[0]), replace=False)
    bins = np.linspace(lo, hi, 26)
    ok = np.isfinite(y_obs)

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for i in pick:
        axes[0].hist(y_rep[i], bins=bins, density=True, histtype="step", color="C0", alpha=0.15)
    axes[0].hist(y_obs[ok], bins=bins, density=True, histtype="step", color="black", lw=2)
    axes[0].set_xlabel(outcome_label)
    axes[0].set_title(f"{outcome_label}: observed (black) vs replicated", fontsize=9)

    shares = bound_shares(y_obs, y_rep, outcome_range)
    lines = []
    for ax, (where, bound) in zip(axes[1:3], (("floor", lo), ("ceiling", hi)), strict=True):
        share_obs, share_rep = shares[where]
        ax.hist(share_rep * 100, bins=30, color="C0", alpha=0.6)
        ax.axvline(share_obs * 100, color="black", lw=2)
        ax.set_xlabel(f"% of clients at the {where} (y = {bound:g})")
        ax.set_title(f"{where.capitalize()} share: observed (line) vs replicated", fontsize=9)
        q = np.quantile(share_rep, [0.025, 0.975])
        inside = "inside" if q[0] <= share_obs <= q[1] else "OUTSIDE"
        lines.append(
            f"observed share at the {where} {share_obs:.1%} lies at the "
            f"{ordinal(percentile_of(share_obs, share_rep))} percentile of replicated shares "
            f"(central 95% {q[0]:.1%} to {q[1]:.1%}: {inside})"
        )

    change_obs = y_obs[ok] - baseline[ok]
    change_rep = y_rep[:, ok] - baseline[ok]
    cbins = np.linspace(lo - hi, hi - lo, 41)
    for i in pick:
        axes[3].hist(
            change_rep[i], bins=cbins, density=True, histtype="step", color="C0", alpha=0.15
        )
    axes[3].hist(change_obs, bins=cbins, density=True, histtype="step", color="black", lw=2)
    axes[3].set_xlabel("change score y − baseline")
    axes[3].set_title("Change: observed vs replicated", fontsize=9)
    fig.tight_layout()

    mean_rep = change_rep.mean(axis=1)
    q_lo, q_hi = np.quantile(mean_rep, [0.025, 0.975])
    text = (
        f"{lines[0][0].upper()}{lines[0][1:]}; {lines[1]}; observed mean change "
        f"{change_obs.mean():.1f} points vs replicated {mean_rep.mean():.1f} "
        f"(95% interval {q_lo:.1f} to {q_hi:.1f})."
    )
    return FigureResult(name, save_figure(fig, outdir, name, formats), text, section="ppc")


def prior_predictive_bound_share(y_prior: np.ndarray, outcome_range: Sequence[float]) -> float:
    """Share of prior predictive datasets that put more than half of the clients at or beyond a
    bound of the outcome's metric.

    ``y_prior`` is (dataset, client). A prior on the data's scale keeps this small: a dataset with
    most clients at 0 or 100 (or beyond) is not a study anyone could observe.
    """
    lo, hi = float(outcome_range[0]), float(outcome_range[1])
    y = np.asarray(y_prior, dtype=float)
    at_bounds = np.mean((y <= lo) | (y >= hi), axis=1)
    return float(np.mean(at_bounds > 0.5))


def plot_prior_predictive(
    dt: xr.DataTree,
    outdir: Path,
    *,
    outcome_range: Sequence[float] = (0.0, 100.0),
    outcome_label: str = "outcome",
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult:
    """Histogram of prior predictive ``y`` with the outcome's possible range marked."""
    per_dataset = flat_draws(dt["prior_predictive"]["y"]).astype(float)
    extreme = prior_predictive_bound_share(per_dataset, outcome_range)
    y_pri = per_dataset.ravel()
    y_pri = y_pri[np.isfinite(y_pri)]
    lo, hi = float(outcome_range[0]), float(outcome_range[1])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(y_pri, bins=60, color="C2", alpha=0.7, density=True)
    for b in (lo, hi):
        ax.axvline(b, color="black", ls="--", lw=1)
    ax.set_xlabel(outcome_label)
    ax.set_title("Prior predictive distribution of y", fontsize=9)
    fig.tight_layout()
    outside = float(np.mean((y_pri < lo) | (y_pri > hi)))
    q = np.quantile(y_pri, [0.025, 0.975])
    text = (
        f"{extreme:.1%} of prior predictive datasets put more than half of the clients at or "
        f"beyond the bounds [{lo:g}, {hi:g}]; {outside:.1%} of all prior predictive values fall "
        f"outside the range; the central 95% spans {q[0]:.1f} to {q[1]:.1f}."
    )
    paths = save_figure(fig, outdir, "prior_predictive", formats)
    return FigureResult("prior_predictive", paths, text, section="priors")


def _provider_types(dt: xr.DataTree, n: int) -> np.ndarray:
    """Type of each provider: a coordinate on ``u_provider``'s provider dim, else constant_data."""
    u = dt["posterior"]["u_provider"]
    for name, coord in u.coords.items():
        if coord.dims == ("provider",) and name != "provider":
            vals = np.asarray(coord.values).astype(str)
            if set(vals) <= {"therapist", "coach"}:
                return vals
    if "constant_data" in dt.children and "provider_type" in dt["constant_data"].data_vars:
        vals = dt["constant_data"]["provider_type"]
        if vals.dims == ("provider",):
            return np.asarray(vals.values).astype(str)
    return np.full(n, "all providers")


def _mean_and_hdi(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean and 95% HDI bounds of ``da`` over chains and draws."""
    hdi = azs.hdi(da, prob=HDI_PROB, dim=["chain", "draw"])
    mean = da.mean(("chain", "draw")).values
    return mean, hdi.sel(ci_bound="lower").values, hdi.sel(ci_bound="upper").values


def _caterpillar(ax: Any, mean, low, high, colour: str, ms: float, lw: float) -> int:
    """Intervals sorted by posterior mean (by rank, never by identifier), a zero line; returns
    how many of the 95% HDIs exclude zero."""
    order = np.argsort(mean)
    x = np.arange(order.size)
    ax.vlines(x, low[order], high[order], color=colour, lw=lw)
    ax.plot(x, mean[order], "o", color=colour, ms=ms)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("provider rank")
    return int(np.sum((low > 0) | (high < 0)))


def plot_provider_effects(
    dt: xr.DataTree,
    outdir: Path,
    *,
    outcome_units: str = "outcome points",
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult:
    """Provider intercepts ``u_provider`` by provider type, sorted, with 95% HDIs.

    Providers are shown by rank, not by identifier.
    """
    if "u_provider" not in dt["posterior"].data_vars:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "No provider effects in this model", ha="center", va="center")
        ax.set_axis_off()
        paths = save_figure(fig, outdir, "provider_effects", formats)
        return FigureResult("provider_effects", paths, "No provider effects in this model.")
    mean, low, high = _mean_and_hdi(dt["posterior"]["u_provider"])
    types = _provider_types(dt, mean.size)
    kinds = list(dict.fromkeys(types))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.4), squeeze=False)
    parts = []
    for ax, kind in zip(axes[0], kinds, strict=True):
        idx = np.flatnonzero(types == kind)
        colour = _CARE_COLOURS.get(kind, "C3")
        excl = _caterpillar(ax, mean[idx], low[idx], high[idx], colour, ms=3, lw=1.0)
        ax.set_title(f"{kind} (n = {idx.size})", fontsize=9)
        ax.set_ylabel(f"u_provider ({outcome_units})")
        spread = float(np.std(mean[idx], ddof=1)) if idx.size > 1 else 0.0
        parts.append(
            f"{kind}: SD of posterior means {spread:.1f}, "
            f"{excl} of {idx.size} 95% HDIs exclude zero"
        )
    fig.tight_layout()
    text = "Provider effects — " + "; ".join(parts) + "."
    return FigureResult(
        "provider_effects", save_figure(fig, outdir, "provider_effects", formats), text
    )


def plot_provider_slopes(
    dt: xr.DataTree, outdir: Path, *, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult:
    """Caterpillar plot of the providers' within-provider slope deviations ``u_provider_slope``.

    One panel per subscale, providers sorted by posterior mean (by rank, never by identifier),
    95% HDIs; zero is the client's care-type slope.
    """
    u = dt["posterior"]["u_provider_slope"]
    subs = [str(s) for s in u["subscale"].values]
    fig, axes = plt.subplots(1, len(subs), figsize=(4.5 * len(subs), 3.4), squeeze=False)
    parts = []
    for ax, s in zip(axes[0], subs, strict=True):
        mean, low, high = _mean_and_hdi(u.sel(subscale=s))
        excl = _caterpillar(ax, mean, low, high, "C4", ms=2.5, lw=0.8)
        ax.set_title(f"{s}: provider deviation from the care-type within slope", fontsize=9)
        parts.append(f"{s}: {excl} of {mean.size} providers' 95% HDIs exclude zero")
    axes[0, 0].set_ylabel("u_provider_slope (points per alliance point)")
    fig.tight_layout()
    text = "Provider slopes — " + "; ".join(parts) + "."
    return FigureResult(
        "provider_slopes", save_figure(fig, outdir, "provider_slopes", formats), text
    )


#: Kinds of estimand whose prior and posterior densities are compared (the key parameters).
_PRIOR_POSTERIOR_KINDS = ("fixed effect", "care-type intercept", "variance component")


def prior_posterior_names(estimands: xr.Dataset, prior: xr.Dataset, limit: int = 12) -> list[str]:
    """Key estimands present under both prior and posterior: pooled slopes first, then the rest."""
    names = []
    for n, v in estimands.data_vars.items():
        a = v.attrs
        pooled_slope = a.get("kind") == "subscale effect" and a.get("care_type") == "pooled"
        if n in prior and (pooled_slope or a.get("kind") in _PRIOR_POSTERIOR_KINDS):
            if not str(n).startswith("icc_") and not str(n).startswith("intercept"):
                names.append(str(n))
    pooled = [n for n in names if estimands[n].attrs.get("kind") == "subscale effect"]
    return (pooled + [n for n in names if n not in pooled])[:limit]


def plot_prior_posterior(
    estimands: xr.Dataset,
    prior: xr.Dataset,
    outdir: Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult | None:
    """Posterior (blue) and prior (grey line) densities of the key estimands, with the SD ratio.

    The posterior-to-prior SD ratio says how much the data taught: near 1, the estimand is the
    prior's (WAMBS item 8, Depaoli & van de Schoot 2017, doi:10.1037/met0000065).
    """
    names = prior_posterior_names(estimands, prior)
    if not names:
        return None
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), squeeze=False)
    ratios = {}
    for ax, n in zip(axes.ravel(), names, strict=False):
        post = np.asarray(estimands[n].values, float).ravel()
        pri = np.asarray(prior[n].values, float).ravel()
        pri = pri[np.isfinite(pri)]
        # The window of the posterior, widened to 8 posterior SDs: a prior far wider than the
        # posterior then shows as a nearly flat line, which is what it is here.
        lo, hi = np.quantile(post, [0.001, 0.999])
        centre, half = 0.5 * (lo + hi), max(0.5 * (hi - lo), 4 * float(np.std(post)))
        grid = np.linspace(centre - half, centre + half, 200)
        ax.hist(post, bins=np.linspace(lo, hi, 40), density=True, color="C0", alpha=0.7,
                label="posterior")  # fmt: skip
        if pri.size > 1 and np.std(pri) > 0:
            ax.plot(grid, stats.gaussian_kde(pri)(grid), color="grey", lw=1.5, label="prior")
        ax.set_xlim(grid[0], grid[-1])
        ratios[n] = float(np.std(post) / np.std(pri)) if np.std(pri) > 0 else float("nan")
        ax.set_title(f"{n}\nSD ratio {ratios[n]:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes.ravel()[len(names) :]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    weak = [n for n, r in ratios.items() if r > 0.5]
    text = (
        f"Posterior/prior SD ratios from {min(ratios.values()):.2f} to "
        f"{max(ratios.values()):.2f}; "
        + (
            "the data dominate every one shown."
            if not weak
            else f"the prior still shapes {', '.join(weak)} (ratio above 0.5)."
        )
    )
    paths = save_figure(fig, outdir, "prior_posterior", formats)
    return FigureResult("prior_posterior", paths, text, section="priors")


#: Most processes that draw a bundle's figures when their number is chosen automatically.
MAX_FIGURE_WORKERS = 4
#: Environment variable that sets that number (``1`` draws in the calling process).
FIGURE_WORKERS_ENV = "ALLIANCE_BAYES_FIGURE_WORKERS"
#: Groups no figure reads, left out of what worker processes receive (the pointwise
#: log-likelihood is draws x clients, the largest group of a fit).
_UNDRAWN_GROUPS = ("log_likelihood", "log_prior")


@dataclass(frozen=True)
class _Task:
    """One figure to draw: ``make(*(inputs[name] for name in uses), **kwargs)``."""

    make: FigureMaker
    uses: tuple[str, ...]
    kwargs: dict[str, Any]

    def run(self, inputs: Mapping[str, Any]) -> FigureResult | None:
        return self.make(*(inputs[name] for name in self.uses), **self.kwargs)


#: In a worker process: the inputs file it has read, and what it held.
_WORKER_INPUTS: dict[str, Any] = {}


def _start_worker(makers: Sequence[FigureMaker]) -> None:
    """Initialise a figure worker: unpickling ``makers`` has imported their modules."""
    # Ctrl-C reaches the whole process group; the calling process alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> None:
    """A no-op task: submitting one per worker starts them all now."""


def _run_task(task: _Task, inputs_file: str) -> FigureResult | None:
    """Draw ``task`` in a worker, reading the shared inputs once per worker."""
    if _WORKER_INPUTS.get("file") != inputs_file:
        with open(inputs_file, "rb") as f:
            _WORKER_INPUTS.update(file=inputs_file, inputs=pickle.load(f))
    return task.run(_WORKER_INPUTS["inputs"])


def figure_workers(requested: int | None = 1) -> int:
    """How many processes draw a bundle's figures.

    An explicit number is used as given. ``None`` chooses: :data:`FIGURE_WORKERS_ENV` if set, else
    one per available CPU, at most :data:`MAX_FIGURE_WORKERS`. Workers are spawned, and a spawned
    process imports the caller's main script again, so a script that asks for more than one must
    keep its work under ``if __name__ == "__main__":``; the command line asks for ``None``.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"figure workers: expected a whole number >= 1, got {requested}")
        return requested
    value = os.environ.get(FIGURE_WORKERS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{FIGURE_WORKERS_ENV}={value!r}: expected a whole number >= 1")
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_FIGURE_WORKERS, cpus or 1))


def _figure_plan(
    dt: xr.DataTree,
    meta: Mapping[str, Any],
    outdir: Path,
    *,
    formats: Sequence[str],
    family_figures: Sequence[FigureMaker],
    with_prior_estimands: bool,
) -> list[FigureResult | _Task]:
    """The bundle's figures in report order: each a task, or a result that needs no drawing."""
    outcome_range = meta.get("outcome_range", (0.0, 100.0))
    label = meta.get("outcome_label", meta.get("outcome", "outcome"))
    groups = set(dt.children)
    common = {"outdir": outdir, "formats": tuple(formats)}
    outcome = {"outcome_range": outcome_range, "outcome_label": label, **common}
    plan: list[FigureResult | _Task] = []
    if int(dt["posterior"].sizes.get("chain", 1)) >= 2:
        plan.append(_Task(plot_rank, ("dt",), common))
    else:
        # Rank plots compare chains; with one there is nothing to compare (and no R-hat).
        plan.append(
            FigureResult(
                "rank",
                [],
                "Not drawn: rank plots compare chains and this run has one; rerun with "
                "--chains 4 before using the estimates.",
                section="computation",
            )
        )
    if "sample_stats" in groups and "energy" in dt["sample_stats"].data_vars:
        plan.append(_Task(plot_energy, ("dt",), common))
    units = meta.get("effect_units", "outcome points per 1 point of alliance")
    plan.append(_Task(plot_forest_subscales, ("estimands",), {"effect_units": units, **common}))
    # A family whose observed variable is not one outcome per client (the rating counts of the
    # ratings family) draws its own predictive checks.
    has_y = {"posterior_predictive", "observed_data", "constant_data"} <= groups and (
        "y" in dt["observed_data"].data_vars
    )
    if has_y:
        plan.append(_Task(plot_ppc, ("dt",), outcome))
    if "prior_predictive" in groups and "y" in dt["prior_predictive"].data_vars:
        plan.append(_Task(plot_prior_predictive, ("dt",), outcome))
    if with_prior_estimands:
        plan.append(_Task(plot_prior_posterior, ("estimands", "prior_estimands"), common))
    if "u_provider" in dt["posterior"].data_vars:
        plan.append(_Task(plot_provider_effects, ("dt",), common))
    if "u_provider_slope" in dt["posterior"].data_vars:
        plan.append(_Task(plot_provider_slopes, ("dt",), common))
    for make in family_figures:
        plan.append(_Task(make, ("dt",), {"meta": dict(meta), **common}))
    return plan


@contextmanager
def figure_pool(
    workers: int | None = None, family_figures: Sequence[FigureMaker] = ()
) -> Iterator[Executor | None]:
    """Worker processes for :class:`FigureDrawing`, started now (``None`` where there is one).

    A worker spends about 3 s importing matplotlib, arviz-plots and the figure modules; started
    before a fit, they do that while the model compiles on one CPU, and wait idle while it samples.
    """
    n = figure_workers(workers)
    if n <= 1:
        yield None
        return
    with ProcessPoolExecutor(
        n,
        mp_context=mp.get_context("spawn"),
        initializer=_start_worker,
        initargs=(tuple(family_figures),),
    ) as pool:
        for _ in range(n):
            pool.submit(_ready)
        yield pool


class FigureDrawing:
    """A bundle's figures being drawn, in worker processes where there are several CPUs.

    Entering starts the drawing; :meth:`results` waits for it and returns the figures in report
    order (figures whose inputs are absent are left out); leaving cancels what has not started.
    Drawing is CPU-bound matplotlib work, about 9 s for the default model on one CPU, so on two
    the figures take about half that while the calling process writes the draws and tables.
    ``workers`` is a number (see :func:`figure_workers`; more than one starts a
    :func:`figure_pool` for these figures) or a pool already started. Workers are spawned (nothing
    compiled is forked) and read the groups figures use from one temporary file; with one worker
    everything is drawn in this process when :meth:`results` is called. A figure that fails
    raises its exception from :meth:`results`.
    """

    def __init__(
        self,
        dt: xr.DataTree,
        estimands: xr.Dataset,
        meta: Mapping[str, Any],
        outdir: Path,
        *,
        formats: Sequence[str] = DEFAULT_FORMATS,
        family_figures: Sequence[FigureMaker] = (),
        prior_estimands: xr.Dataset | None = None,
        workers: int | Executor | None = 1,
    ) -> None:
        drawn = dt.copy()
        for group in _UNDRAWN_GROUPS:
            if group in drawn.children:
                del drawn[group]
        self._inputs = {"dt": drawn, "estimands": estimands, "prior_estimands": prior_estimands}
        self._plan = _figure_plan(
            drawn,
            meta,
            Path(outdir),
            formats=formats,
            family_figures=family_figures,
            with_prior_estimands=prior_estimands is not None,
        )
        self._family_figures = tuple(family_figures)
        self._workers = workers
        self._stack = ExitStack()
        self._futures: dict[int, Future] = {}

    def __enter__(self) -> FigureDrawing:
        with ExitStack() as stack:
            pool = self._workers
            if not isinstance(pool, Executor):
                tasks = sum(isinstance(t, _Task) for t in self._plan)
                n = max(1, min(figure_workers(pool), tasks))
                pool = stack.enter_context(figure_pool(n, self._family_figures))
            if pool is not None:
                # One file for every task: sent with each, the inputs were pickled and piped
                # once per figure, competing with this process's own work.
                scratch = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="alliance-bayes-figures-")
                )
                inputs_file = os.path.join(scratch, "inputs.pickle")
                with open(inputs_file, "wb") as f:
                    pickle.dump(self._inputs, f, protocol=pickle.HIGHEST_PROTOCOL)
                for i, task in enumerate(self._plan):
                    if isinstance(task, _Task):
                        self._futures[i] = pool.submit(_run_task, task, inputs_file)
                # Leaving cancels what has not started, then waits for what has (callbacks run
                # last-in first), before the inputs file goes.
                stack.callback(lambda: wait(list(self._futures.values())))
                stack.callback(lambda: [f.cancel() for f in self._futures.values()])
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def results(self) -> list[FigureResult]:
        made = []
        for i, item in enumerate(self._plan):
            if isinstance(item, FigureResult):
                made.append(item)
                continue
            figure = self._futures[i].result() if i in self._futures else item.run(self._inputs)
            if figure is not None:
                made.append(figure)
        return made


def make_all_figures(
    dt: xr.DataTree,
    estimands: xr.Dataset,
    meta: Mapping[str, Any],
    outdir: Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    family_figures: Sequence[FigureMaker] = (),
    prior_estimands: xr.Dataset | None = None,
    workers: int | Executor | None = 1,
) -> list[FigureResult]:
    """Draw every figure of a bundle into ``outdir`` (groups that are absent are skipped).

    ``family_figures`` are the figures a model family adds (see
    :mod:`alliance_bayes.model.families`); each may return ``None`` when its inputs are absent.
    ``workers`` processes draw them (:func:`figure_workers`; see :class:`FigureDrawing`).
    """
    with FigureDrawing(
        dt,
        estimands,
        meta,
        outdir,
        formats=formats,
        family_figures=family_figures,
        prior_estimands=prior_estimands,
        workers=workers,
    ) as drawing:
        return drawing.results()
