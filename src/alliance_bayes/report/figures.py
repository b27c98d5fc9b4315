"""Figures of a results bundle (PNG always, PDF too by default for papers).

Each public function saves one figure and returns a :class:`FigureResult`: the saved paths and a
one-line interpretation computed from the numbers shown (``report.md`` prints it under the figure).
arviz-plots draws the energy plot, the traces and funnel of the provider SDs (divergences marked)
and the LOO-PIT; the rank plot draws the rank ECDF differences itself, so that its
p-values are those of the gate's thinned uniformity test; the forest, predictive-check and provider
figures use plain matplotlib because they combine quantities (estimands across care types, ceiling
shares, change scores) that are not single posterior variables. No client or provider identifier is
drawn (the LOO-PIT's Pareto k table names the worst clients by pseudonym). The report numbers the
figures and captions each with :data:`FIGURE_CAPTIONS` (what it shows, how to read it) followed by
its ``interpretation``.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz_plots as azp
import arviz_stats as azs
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from scipy import stats

from alliance_bayes.data.care import PROVIDER_TYPES
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
    "figure_numbers",
    "figure_pool",
    "figure_workers",
    "make_all_figures",
    "plot_energy",
    "plot_forest_subscales",
    "plot_funnel",
    "plot_loo_pit",
    "plot_ppc",
    "plot_prior_posterior",
    "plot_prior_predictive",
    "plot_provider_effects",
    "plot_provider_slopes",
    "plot_rank",
    "plot_trace_provider_sd",
    "pointwise_log_likelihood",
    "prior_predictive_bound_share",
]

DEFAULT_FORMATS = ("png", "pdf")
KEY_PARAMETERS = ("b_alliance", "b_baseline", "mu_b", "sd_provider", "sigma", "nu")
#: The pooled slopes' colour beside the care types' (:func:`cycle_colours`).
_POOLED_COLOUR = "black"


def cycle_colours(names: Sequence[str]) -> dict[str, str]:
    """Matplotlib's cycle colours C0, C1, … in the order of ``names`` (care or provider types).

    The care types and provider types come in the study's own order, so the contract's
    therapist, coach, both keep C0, C1, C2 and a provider type and its care type alone share one.
    """
    return {str(n): f"C{i % 10}" for i, n in enumerate(names)}


@dataclass
class FigureResult:
    """Saved figure: ``name`` (file stem), ``paths``, one-line ``interpretation``, the report
    ``section`` it belongs to (``priors``, ``computation``, ``ppc`` or ``results``), and ``table``:
    Markdown lines the report prints under the caption (empty for most figures)."""

    name: str
    paths: list[Path]
    interpretation: str
    section: str = "results"
    table: list[str] = field(default_factory=list)

    def _by_stem(self, table: Mapping[str, str]) -> tuple[str | None, str]:
        """The entry of ``table`` for this name, or for the known stem it extends, and the suffix."""
        if self.name in table:
            return table[self.name], ""
        stem = next((k for k in table if self.name.startswith(f"{k}_")), None)
        if stem is None:
            return None, ""
        return table[stem], self.name.removeprefix(stem + "_")

    @property
    def title(self) -> str:
        """A readable title for the report (the ``name`` stays the file stem); a stem that
        extends a known one (``ppc_phq9``) gets that title with its suffix (``(phq9)``)."""
        title, suffix = self._by_stem(FIGURE_TITLES)
        if title is None:
            return self.name.replace("_", " ").capitalize()
        return f"{title} ({suffix.replace('_', ' ')})" if suffix else title

    @property
    def caption(self) -> str:
        """What the figure shows and how to read it (the report prints it before the
        run's own ``interpretation``); empty for a figure no caption is written for."""
        caption, _ = self._by_stem(FIGURE_CAPTIONS)
        return caption or ""


#: Readable titles of the figures, by file stem.
FIGURE_TITLES = {
    "rank": "Rank plots of the chains",
    "energy": "Energy and E-BFMI",
    "trace_provider_sd": "Traces of the provider SDs and provider effects",
    "funnel": "Provider-SD funnel",
    "forest_subscales": "Alliance subscale effects by care type",
    "ppc": "Posterior predictive check",
    "loo_pit": "LOO-PIT calibration and Pareto k",
    "prior_predictive": "Prior predictive check",
    "prior_posterior": "Prior and posterior densities",
    "provider_effects": "Provider intercepts",
    "provider_slopes": "Provider slopes",
    "conditional_effects": "Conditional effects",
    "rating_ppc": "Posterior predictive check of the ratings",
    "item_characteristic_curves": "Item characteristic curves",
    "latent_vs_averaged": "Latent versus averaged scores",
}

#: What each figure shows and how to read it, by file stem (the caption's fixed part).
FIGURE_CAPTIONS = {
    "rank": "Each panel is one parameter; each line one chain's rank ECDF minus the uniform CDF. "
    "Chains that sample the same posterior stay near zero; a line that wanders far from zero, "
    "or panels marked red (p ≤ α), show a chain that differs from the others.",
    "energy": "Left: the marginal energy distribution and the distribution of energy changes "
    "between successive draws; right: E-BFMI per chain. Transitions narrower than the marginal, "
    "or E-BFMI below 0.3, mean the sampler explores the tails slowly (Betancourt 2016, "
    "arXiv:1604.00695).",
    "trace_provider_sd": "Left: posterior density per chain; right: the draws of each chain in "
    "order, for each provider type's SD and the effects of its providers with the fewest and "
    "the most data (widest and narrowest posterior). Divergent transitions, if any, are marked "
    "as ticks under the traces. Overlapping densities and traces without trends or stuck "
    "stretches show the chains agree.",
    "funnel": "Each panel plots a provider type's SD (vertical) against one provider effect "
    "(horizontal) for that type's providers with the fewest and the most data; divergent "
    "transitions, if any, in orange. A funnel (effects pinched as the SD nears zero) with "
    "divergences at its neck is the geometry that biases hierarchical models (Betancourt & "
    "Girolami 2013, arXiv:1312.0906); a cloud without a neck is what the "
    "parameterisation aims for.",
    "forest_subscales": "Posterior mean (dot) and 95% HDI (line) of each alliance subscale "
    "effect by care type and level, with the pooled effect; the dashed line is no effect.",
    "ppc": "Observed outcome (black) against replicated datasets (blue): the distribution, the "
    "shares at the floor and at the ceiling, and the change from baseline. An observed value "
    "far in the tail of the replicated ones is a feature the model does not reproduce.",
    "loo_pit": "ECDF of the leave-one-out probability integral transform of each client's "
    "observed outcome minus the uniform CDF, with the p-value of arviz-stats' uniformity test "
    "of dependent PIT values (Tesso & Vehtari 2026, arXiv:2603.02928); the clients that drive a "
    "significant deviation are highlighted. A calibrated model stays near zero; a curve above "
    "zero throughout means predictions too high, below zero too low; one that dips then rises "
    "means predictive distributions too wide, one that rises then dips too narrow. The table "
    "counts the Pareto k of the PSIS weights (Vehtari et al. 2024, "
    "JMLR 25(72), arXiv:1507.02646), above 0.7 of which a client's LOO value is unreliable.",
    "prior_predictive": "Outcomes simulated from the priors alone, the outcome's possible range "
    "dashed. Priors on the data's scale keep most of the mass inside the range.",
    "prior_posterior": "Posterior (histogram) and prior (grey line) of the key estimands, with "
    "the posterior-to-prior SD ratio; a ratio near 1 means the prior, not the data, sets the "
    "estimate.",
    "provider_effects": "Posterior mean and 95% HDI of each provider's intercept, sorted by "
    "mean (providers by rank, never by identifier), one panel per provider type.",
    "provider_slopes": "Posterior mean and 95% HDI of each provider's deviation from the "
    "within-provider slope, sorted by mean, one panel per subscale.",
    "conditional_effects": "Expected follow-up (top) and change (bottom) across the observed "
    "alliance range for a client of an average provider, per care type, median and 95% band.",
    "rating_ppc": "Share of session ratings in each category: observed (dots) against the "
    "posterior predictive mean and 95% interval (bars).",
    "item_characteristic_curves": "Probability of each rating category across the latent "
    "alliance at the posterior means; the dashed line (right axis) is the expected rating.",
    "latent_vs_averaged": "Each client's latent alliance score (posterior mean) against the "
    "average of their ratings; points below the diagonal at the top of the scale show the "
    "ceiling the latent model corrects.",
}

#: The report's sections that show figures, in the order they appear (figures are numbered in it).
REPORT_SECTIONS = ("priors", "computation", "ppc", "results")


def figure_numbers(figs: Sequence[FigureResult]) -> dict[str, int]:
    """Number of each drawn figure (``name`` → 1, 2, …) in the order the report shows them:
    by :data:`REPORT_SECTIONS`, then as listed. A figure not drawn (no paths) gets no number."""
    drawn = [f for s in REPORT_SECTIONS for f in figs if f.section == s and f.paths]
    return {f.name: i for i, f in enumerate(drawn, start=1)}


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


#: The provider-level SD whose joint posterior with the provider effects can form a funnel.
FUNNEL_SD = "sd_provider"
#: Provider effects drawn against it: the intercepts and, where sampled, their partially
#: non-centred parameter (the one the sampler moves).
FUNNEL_EFFECTS = ("u_provider", "v_provider")
#: How the two providers of each type that the funnel figures show are named (never by identifier).
FUNNEL_PROVIDERS = ("fewest data", "most data")


def funnel_draws(dt: xr.DataTree) -> xr.DataTree | None:
    """The provider SDs and, per provider type, the effects of its providers with the fewest and
    the most data, with ``sample_stats/diverging``; ``None`` where the fit has no such pair.

    A provider's data are measured by the posterior SD of its intercept ``u_provider``: the
    widest posterior belongs to the provider the data say least about, the one whose effect is
    most tied to the SD (the funnel's neck). The providers appear by that role, in a
    ``provider_data`` coordinate, never by identifier.
    """
    post = dt["posterior"]
    sample = ("chain", "draw")
    if FUNNEL_SD not in post.data_vars or post[FUNNEL_SD].dims != (*sample, "provider_type"):
        return None
    effects = [
        v for v in FUNNEL_EFFECTS if v in post.data_vars and post[v].dims == (*sample, "provider")
    ]
    if "u_provider" not in effects:
        return None
    types = _provider_types(dt, post.sizes["provider"])
    kinds = [str(t) for t in post[FUNNEL_SD]["provider_type"].values if np.any(types == str(t))]
    if not kinds:
        return None
    spread = np.asarray(post["u_provider"].std(sample).values, float)
    picks = []
    for kind in kinds:
        idx = np.flatnonzero(types == kind)
        order = idx[np.argsort(-spread[idx], kind="stable")]
        picks.append([order[0], order[-1]])
    ds = xr.Dataset({FUNNEL_SD: post[FUNNEL_SD].sel(provider_type=kinds).astype(float)})
    for v in effects:
        values = np.asarray(post[v].values, float)[:, :, np.asarray(picks)]
        ds[v] = ((*sample, "provider_type", "provider_data"), values)
    groups = {"posterior": ds.assign_coords(provider_data=list(FUNNEL_PROVIDERS))}
    if "sample_stats" in dt.children and "diverging" in dt["sample_stats"].data_vars:
        diverging = dt["sample_stats"]["diverging"].astype(bool)
        groups["sample_stats"] = xr.Dataset({"diverging": diverging})
    return xr.DataTree.from_dict(groups)


def _divergences(tree: xr.DataTree) -> int:
    if "sample_stats" not in tree.children:
        return 0
    return int(tree["sample_stats"]["diverging"].sum())


def plot_trace_provider_sd(
    dt: xr.DataTree, outdir: Path, *, formats: Sequence[str] = DEFAULT_FORMATS
) -> FigureResult | None:
    """Trace and per-chain density of each provider type's SD and of the sampled effects of its
    providers with the fewest and the most data (:func:`funnel_draws`), drawn by
    ``arviz_plots.plot_trace_dist``, which marks divergent transitions under the traces."""
    tree = funnel_draws(dt)
    if tree is None:
        return None
    post = tree["posterior"].to_dataset()
    # The parameter the sampler moves: v_provider where the intercepts are partially non-centred.
    effect = "v_provider" if "v_provider" in post.data_vars else "u_provider"
    names = [FUNNEL_SD, effect]
    rows = int(post.sizes["provider_type"]) * (1 + len(FUNNEL_PROVIDERS))
    pc = azp.plot_trace_dist(
        tree,
        var_names=names,
        compact=False,
        backend="matplotlib",
        figure_kwargs={"figsize": (9.0, 1.25 * rows + 0.6)},
    )
    fig = _pc_figure(pc)
    for ax in fig.axes:
        ax.tick_params(labelsize=7)
        ax.yaxis.label.set_fontsize(7)
        ax.xaxis.label.set_fontsize(8)
    fig.tight_layout()
    r_hat = dataset_diagnostics(post[names], statistics=("r_hat",))["r_hat"]
    worst_var, worst = max(((v, float(r_hat[v].max())) for v in names), key=lambda kv: kv[1])
    n_div = _divergences(tree)
    text = (
        f"Traces of {FUNNEL_SD} and {effect} for each provider type's providers with the fewest "
        f"and the most data; largest rank-normalised R-hat among them {worst:.3f} "
        f"({worst_var}); {n_div} divergent transitions"
        + (" (marked under the traces)." if n_div else ".")
    )
    paths = save_figure(fig, outdir, "trace_provider_sd", formats)
    return FigureResult("trace_provider_sd", paths, text, section="computation")


def plot_funnel(
    dt: xr.DataTree,
    outdir: Path,
    *,
    provider_type: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> FigureResult | None:
    """A provider type's SD against the effects of its providers with the fewest and the most
    data (:func:`funnel_draws`), drawn by ``arviz_plots.plot_pair_focus`` with the divergent
    transitions marked; saved as ``funnel_<provider_type>``.

    Hierarchical models put the group SD and the group effects in a funnel: with few data an
    effect's spread shrinks with the SD, which a sampler with one step size explores badly
    (Betancourt & Girolami 2013, arXiv:1312.0906). The caption gives, per panel, the rank
    correlation of the SD with the effect's absolute value, which is large in a funnel.
    """
    tree = funnel_draws(dt)
    if tree is None or provider_type not in tree["posterior"]["provider_type"].values:
        return None
    post = tree["posterior"].to_dataset().sel(provider_type=provider_type)
    effects = [v for v in FUNNEL_EFFECTS if v in post.data_vars]
    groups = {"posterior": post}
    if "sample_stats" in tree.children:
        groups["sample_stats"] = tree["sample_stats"].to_dataset()
    one = xr.DataTree.from_dict(groups)
    focus = post[FUNNEL_SD]
    pc = azp.plot_pair_focus(
        one,
        focus,
        var_names=effects,
        backend="matplotlib",
        visuals={"divergence": True},
        figure_kwargs={"figsize": (3.0 * len(effects) * len(FUNNEL_PROVIDERS), 3.0)},
    )
    fig = _pc_figure(pc)
    for ax in fig.axes:
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    fig.tight_layout()
    sd = np.asarray(focus.values, float).ravel()
    parts = []
    for v in effects:
        for role in FUNNEL_PROVIDERS:
            e = np.abs(np.asarray(post[v].sel(provider_data=role).values, float).ravel())
            rho = float(stats.spearmanr(sd, e).statistic)
            parts.append(f"{v} ({role}) {rho:+.2f}")
    n_div = _divergences(tree)
    name = f"funnel_{provider_type}"
    text = (
        f"{provider_type}: rank correlation of {FUNNEL_SD} with the effect's absolute value, "
        + "; ".join(parts)
        + f"; {n_div} divergent transitions in the run."
    )
    return FigureResult(name, save_figure(fig, outdir, name, formats), text, section="computation")


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
    # The care types in the order the estimands carry them, then the pooled slopes.
    cares = list(dict.fromkeys(str(estimands[n].attrs["care_type"]) for n in names))
    cares = [*(c for c in cares if c != "pooled"), "pooled"]
    colours = {**cycle_colours(cares[:-1]), "pooled": _POOLED_COLOUR}
    for s, lv in groups:
        for care in cares:
            for n in names:
                a = estimands[n].attrs
                if (a["subscale"], a["level"], a["care_type"]) == (s, lv, care):
                    rows.append((n, care))
    y = np.arange(len(rows))[::-1]
    for yi, (n, care) in zip(y, rows, strict=True):
        r = summary.loc[n]
        ax.plot([r["hdi95_low"], r["hdi95_high"]], [yi, yi], color=colours[care], lw=1.5)
        ax.plot(r["mean"], yi, "o", color=colours[care], ms=4 if care != "pooled" else 6)
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


#: Fewest draws, over all chains, that the LOO-PIT is computed from (its PSIS needs a tail).
LOO_PIT_MIN_DRAWS = 400
#: Clients with the largest Pareto k that the table names (by pseudonym).
WORST_CLIENTS = 5


def pointwise_log_likelihood(dt: xr.DataTree) -> xr.Dataset | None:
    """The fit's log-likelihood summed per client (``y_client``), as PSIS-LOO scores it
    (:func:`~alliance_bayes.model.pointwise.client_log_likelihood`); ``None`` where the bundle
    has no pointwise log-likelihood per client."""
    if "log_likelihood" not in dt.children:
        return None
    from alliance_bayes.model.pointwise import client_log_likelihood

    try:
        return client_log_likelihood(dt)["log_likelihood"].to_dataset()
    except ValueError:  # no observed variable with a client dimension
        return None


def pareto_k_table(elpd: Any, worst: int = WORST_CLIENTS) -> list[str]:
    """Markdown lines: clients by Pareto k band (:func:`~alliance_bayes.model.pointwise.pareto_k_counts`)
    and the ``worst`` largest k, by pseudonymous client id."""
    from alliance_bayes.model.pointwise import CLIENT_DIM, pareto_k_counts
    from alliance_bayes.report.render import markdown_table

    counts = pareto_k_counts(elpd)
    good = counts["good_k"]
    n = counts["k_good"] + counts["k_high"] + counts["k_very_high"]
    bands = (
        (f"k ≤ {good:.2f} (good)", counts["k_good"]),
        (f"{good:.2f} < k ≤ 1 (LOO value unreliable)", counts["k_high"]),
        ("k > 1 (importance sampling fails)", counts["k_very_high"]),
    )
    rows = [[band, str(c), f"{c / n:.1%}"] for band, c in bands]
    lines = markdown_table(["Pareto k", "Clients", "Share"], rows, numeric=[False, True, True])
    k = elpd.pareto_k
    order = np.argsort(-np.asarray(k.values, float), kind="stable")[:worst]
    labels = np.asarray(k[CLIENT_DIM].values).astype(str)[order]
    values = np.asarray(k.values, float)[order]
    listed = ", ".join(f"`{c}` {v:.2f}" for c, v in zip(labels, values, strict=True))
    return [*lines, "", f"Largest k (pseudonymous client ids): {listed}.", ""]


def _loo_pit_tree(dt: xr.DataTree, pointwise: xr.Dataset, var: str) -> xr.DataTree | str:
    """Observed ``var``, its replicates and the per-client log-likelihood on the clients and
    draws they share, or the reason there are too few."""
    from alliance_bayes.model.pointwise import CLIENT_DIM, CLIENT_VAR

    groups = set(dt.children)
    if not {"posterior_predictive", "observed_data"} <= groups or not all(
        var in dt[g].data_vars for g in ("posterior_predictive", "observed_data")
    ):
        return f"the bundle has no posterior predictive draws of {var}"
    obs = dt["observed_data"][var]
    rep = dt["posterior_predictive"][var]
    ll = pointwise[CLIENT_VAR]
    if obs.dims != (CLIENT_DIM,) or rep.dims != ("chain", "draw", CLIENT_DIM):
        return f"{var} is not one value per client"
    finite = np.isfinite(np.asarray(obs.values, float))
    seen = set(np.asarray(ll[CLIENT_DIM].values).tolist()) & set(
        np.asarray(rep[CLIENT_DIM].values).tolist()
    )
    clients = [c for c, ok in zip(obs[CLIENT_DIM].values.tolist(), finite, strict=True)
               if ok and c in seen]  # fmt: skip
    # The log-likelihood may be kept on every draw and the replicates on every k-th: the
    # LOO-PIT weights each replicate by its own draw's importance ratio.
    draws = np.intersect1d(rep["draw"].values, ll["draw"].values)
    if draws.size * rep.sizes["chain"] < LOO_PIT_MIN_DRAWS or len(clients) < 2:
        return (
            f"the replicates and the log-likelihood share {draws.size * rep.sizes['chain']} "
            f"draws of {len(clients)} clients (at least {LOO_PIT_MIN_DRAWS} draws are needed)"
        )
    pick = {CLIENT_DIM: clients, "draw": draws}
    return xr.DataTree.from_dict(
        {
            # The posterior only gives the relative efficiency of the draws.
            "posterior": dt["posterior"].to_dataset().sel(draw=draws),
            "posterior_predictive": xr.Dataset({var: rep.sel(pick).astype(float)}),
            "observed_data": xr.Dataset({var: obs.sel({CLIENT_DIM: clients}).astype(float)}),
            "log_likelihood": xr.Dataset({var: ll.sel(pick).astype(float)}),
        }
    )


def plot_loo_pit(
    dt: xr.DataTree,
    pointwise: xr.Dataset | None,
    outdir: Path,
    *,
    outcome_label: str = "outcome",
    formats: Sequence[str] = DEFAULT_FORMATS,
    var: str = "y",
) -> FigureResult:
    """LOO-PIT of the outcome (``arviz_plots.plot_loo_pit``: the Δ-ECDF of the leave-one-out
    probability integral transforms with its simultaneous envelope and uniformity test) and the
    Pareto k of PSIS-LOO per client (:func:`pareto_k_table`).

    The PIT of client :math:`i` is :math:`p(\\tilde y_i \\le y_i \\mid y_{-i})`, estimated from
    the replicates weighted by Pareto-smoothed importance ratios :math:`1 / p(y_i \\mid \\theta^s)`
    (Gelman et al. 2013, BDA3 §6.3; Vehtari, Gelman & Gabry 2017,
    doi:10.1007/s11222-016-9696-4); for a calibrated model the values are uniform. Drawn from
    the replicates' draws; the Pareto k are those of the full log-likelihood, as ``Fit.loo``
    and ``alliance-bayes compare`` report them. A bundle without a pointwise log-likelihood
    gets a result without paths that says so.
    """
    name = "loo_pit"
    if pointwise is None:
        return FigureResult(
            name,
            [],
            "Not drawn: this family's bundle keeps no pointwise log-likelihood per client, so "
            "there is no LOO-PIT and no Pareto k table.",
            section="ppc",
        )
    import warnings

    from alliance_bayes.model.pointwise import CLIENT_VAR

    # The posterior gives arviz-stats the relative efficiency of the draws (as in Fit.loo).
    tree = xr.DataTree.from_dict(
        {"posterior": dt["posterior"].to_dataset(), "log_likelihood": pointwise}
    )
    with warnings.catch_warnings():
        # arviz-stats warns about large k itself; the table counts them.
        warnings.simplefilter("ignore")
        elpd = azs.loo(tree, pointwise=True, var_name=CLIENT_VAR)
    table = pareto_k_table(elpd)
    k = np.asarray(elpd.pareto_k.values, float)
    good = min(float(getattr(elpd, "good_k", 0.7) or 0.7), 0.7)
    k_text = (
        f"Pareto k above {good:.2f} for {int(np.sum(k > good))} of {k.size} clients "
        f"(largest {np.max(k):.2f})"
    )
    shared = _loo_pit_tree(dt, pointwise, var)
    if isinstance(shared, str):
        return FigureResult(
            name, [], f"LOO-PIT not drawn: {shared}. {k_text}.", section="ppc", table=table
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pit = azs.loo_pit(shared, var_names=var)[var]
        pc = azp.plot_loo_pit(shared, var_names=var, backend="matplotlib")
    fig = _pc_figure(pc)
    for ax in fig.axes:
        ax.set_title(f"{outcome_label}: LOO-PIT", fontsize=9)
        ax.set_xlabel("LOO-PIT value")
        ax.set_ylabel("ECDF minus uniform CDF")
    fig.set_size_inches(5.5, 3.4)
    fig.tight_layout()
    values = np.asarray(pit.values, float).ravel()
    tails = float(np.mean((values < 0.05) | (values > 0.95)))
    text = (
        f"{tails:.1%} of {values.size} clients' LOO-PIT values fall in the outer 10% (a "
        f"calibrated model puts 10% there); {k_text}."
    )
    paths = save_figure(fig, outdir, name, formats)
    return FigureResult(name, paths, text, section="ppc", table=table)


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


def _provider_type_order(dt: xr.DataTree) -> list[str]:
    """The study's provider types: the posterior's ``provider_type`` coordinate (the provider SDs'),
    else the contract's therapist and coach."""
    post = dt["posterior"]
    if "provider_type" in post.coords and post["provider_type"].dims == ("provider_type",):
        return [str(t) for t in post["provider_type"].values]
    return list(PROVIDER_TYPES)


def _provider_types(dt: xr.DataTree, n: int) -> np.ndarray:
    """Type of each provider: a coordinate on ``u_provider``'s provider dim, else constant_data."""
    u = dt["posterior"]["u_provider"]
    known = set(_provider_type_order(dt))
    for name, coord in u.coords.items():
        if coord.dims == ("provider",) and name != "provider":
            vals = np.asarray(coord.values).astype(str)
            if set(vals) <= known:
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
    colours = cycle_colours(_provider_type_order(dt))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.4), squeeze=False)
    parts = []
    for ax, kind in zip(axes[0], kinds, strict=True):
        idx = np.flatnonzero(types == kind)
        colour = colours.get(kind, "C3")
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
    # a fixed place: "best" searches the data, and warns (an error under the suite) when slow
    axes[0, 0].legend(fontsize=7, frameon=False, loc="upper right")
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
#: Groups no figure reads whole, left out of what worker processes receive (the pointwise
#: log-likelihood is draws x clients, the largest group of a fit; the LOO-PIT figure receives it
#: summed per client instead).
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
    # Added after the older figures, so that their order in the list stays as it was; the
    # report places each by its section.
    sd = dt["posterior"].get(FUNNEL_SD)
    if sd is not None and "u_provider" in dt["posterior"].data_vars and "provider_type" in sd.dims:
        plan.append(_Task(plot_trace_provider_sd, ("dt",), common))
        for kind in sd["provider_type"].values:
            plan.append(_Task(plot_funnel, ("dt",), {"provider_type": str(kind), **common}))
    plan.append(_Task(plot_loo_pit, ("dt", "pointwise"), {"outcome_label": label, **common}))
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
        self._inputs = {
            "dt": drawn,
            "estimands": estimands,
            "prior_estimands": prior_estimands,
            # Per client, not per observed variable: the one log-likelihood a figure reads.
            "pointwise": pointwise_log_likelihood(dt),
        }
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
