"""Paper tables (Markdown and LaTeX/booktabs) laid out by level of the model.

Rounding rule (numbers that go into papers are rounded by their Monte Carlo error): a posterior mean
is shown to the decimal place of the leading digit of ``2 × MCSE(mean)``. For example MCSE 0.013
gives 2×MCSE = 0.026, whose leading digit is in the hundredths, so the mean is shown with 2
decimals; MCSE 0.4 gives 0.8, 1 decimal; MCSE 3 gives 6, 0 decimals; MCSE 30 gives 60, rounded to
tens. The posterior SD and HDI bounds are shown to the same decimal place as the mean: their own
Monte Carlo errors are larger than the mean's, so more digits would be noise. ``P(>0)`` is rounded
by the same rule using its binomial MCSE ``sqrt(p(1-p)/ESS_bulk)``, capped at 3 decimals; when no
draw (or every draw) is positive it is shown as ``<0.001``/``>0.999``. Machine-readable files
(``estimands.csv``) keep full precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import xarray as xr

from alliance_bayes.data.published import PUBLISHED
from alliance_bayes.report.estimands import HDI_PROB, estimand_table
from alliance_bayes.report.render import latex_escape, latex_table, markdown_table

__all__ = [
    "Table",
    "build_tables",
    "decimals_for_mcse",
    "format_by_mcse",
    "latex_escape",
    "tables_latex",
    "tables_markdown",
]

_MAX_DECIMALS = 6
_CARE_COLUMNS = ("therapist", "coach", "both", "pooled")


def decimals_for_mcse(mcse: float) -> int:
    """Decimal places implied by ``2 × mcse``: position of its leading digit.

    Returns a negative number for coarse errors (``-1`` rounds to tens). Zero or non-finite
    MCSE (a constant quantity) gives :data:`_MAX_DECIMALS`.
    """
    if not math.isfinite(mcse) or mcse <= 0:
        return _MAX_DECIMALS
    return min(_MAX_DECIMALS, -math.floor(math.log10(2.0 * mcse)))


def _round_str(x: float, decimals: int) -> str:
    if not math.isfinite(x):
        return "n/a"
    if decimals <= 0:
        value = round(x, decimals)
        text = f"{value:.0f}"
    else:
        text = f"{x:.{decimals}f}"
    # Avoid "-0.00": a rounded zero carries no sign.
    if text.lstrip("-").strip("0.") == "":
        text = text.lstrip("-")
    return text


def format_by_mcse(x: float, mcse: float) -> str:
    """Format ``x`` to the decimal place of ``2 × mcse`` (see module docstring)."""
    return _round_str(x, decimals_for_mcse(mcse))


def _format_prob(p: float, ess: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    if p <= 0.0:
        return "<0.001"
    if p >= 1.0:
        return ">0.999"
    mcse = math.sqrt(p * (1 - p) / max(ess, 1.0))
    return _round_str(p, max(0, min(3, decimals_for_mcse(mcse))))


@dataclass
class Table:
    """A rendered-agnostic table: title, caption, header and string cells."""

    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def _cell(row: pd.Series) -> str:
    """``mean [low, high]`` rounded by the mean's MCSE."""
    d = decimals_for_mcse(row["mcse_mean"])
    return (
        f"{_round_str(row['mean'], d)} "
        f"[{_round_str(row['hdi95_low'], d)}, {_round_str(row['hdi95_high'], d)}]"
    )


def _stat_cells(row: pd.Series) -> list[str]:
    d = decimals_for_mcse(row["mcse_mean"])
    return [
        _round_str(row["mean"], d),
        _round_str(row["sd"], d),
        f"[{_round_str(row['hdi95_low'], d)}, {_round_str(row['hdi95_high'], d)}]",
        _format_prob(row["prob_positive"], row["ess_bulk"]),
    ]


_STAT_HEADER = ["Mean", "SD", "95% HDI", "P(>0)"]


def build_tables(estimands: xr.Dataset, meta: Mapping[str, Any]) -> list[Table]:
    """Lay the estimands out as paper tables; only tables with rows are returned.

    Parameters
    ----------
    estimands : xarray.Dataset
        Output of :func:`~alliance_bayes.report.estimands.compute_estimands`.
    meta : mapping
        Run metadata; ``spec``, ``effect_units`` and ``outcome_label`` are used in captions.

    Returns
    -------
    list of Table
        In order: fixed effects, care-type intercepts, subscale effects by care type, within vs between provider,
        variance components and ICC, contrasts.
    """
    summary = estimand_table(estimands).set_index("estimand")
    chains = int(estimands.sizes.get("chain", 0))
    draws = int(estimands.sizes.get("draw", 0))
    spec = meta.get("spec", "unknown")
    effect_units = meta.get("effect_units", "outcome points per 1 point of alliance")
    outcome = meta.get("outcome_label", meta.get("outcome", "outcome"))
    common = (
        f"Posterior means with {round(HDI_PROB * 100)}% HDI (highest density interval); "
        f"{chains} chains × {draws} draws; model spec `{spec}`; outcome {outcome}. "
        "Means, SDs and interval bounds are rounded to the decimal place of 2×MCSE of the mean."
    )
    attrs = {str(k): v.attrs for k, v in estimands.data_vars.items()}

    def of_kind(kind: str) -> list[str]:
        return [n for n, a in attrs.items() if a.get("kind") == kind]

    def unit_rows(names: list[str]) -> list[list[str]]:
        return [[n, *_stat_cells(summary.loc[n]), summary.loc[n, "units"]] for n in names]

    tables: list[Table] = []

    fixed = of_kind("fixed effect")
    if fixed:
        rows = unit_rows(fixed)
        tables.append(
            Table(
                "fixed",
                "Fixed effects",
                f"Units per row. {common}",
                ["Estimand", *_STAT_HEADER, "Units"],
                rows,
            )
        )

    care = of_kind("care-type intercept")
    if care:
        rows = unit_rows(care)
        tables.append(
            Table(
                "care",
                "Care-type intercepts (against coach-only care)",
                f"{outcome} difference at equal alliance (sample-mean between-provider parts, "
                f"equal within parts) and equal covariates. {common}",
                ["Estimand", *_STAT_HEADER, "Units"],
                rows,
            )
        )

    subscale = of_kind("subscale effect")
    # Rows: within-provider first (the paper's order), subscales in estimand order (goal, bond, …).
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for n in subscale:
        a = attrs[n]
        cells.setdefault((a["subscale"], a["level"]), {})[a["care_type"]] = _cell(summary.loc[n])
    if cells:
        present = [c for c in _CARE_COLUMNS if any(c in v for v in cells.values())]
        rows = [
            [s, lv, *(v.get(c, "") for c in present)]
            for (s, lv), v in sorted(
                cells.items(), key=lambda kv: (kv[0][1] != "within", list(cells).index(kv[0]))
            )
        ]
        tables.append(
            Table(
                "subscale",
                "Alliance subscale effects by care type",
                f"{effect_units}. {_pooled_note(subscale, attrs)}{common}",
                ["Subscale", "Level", *(c.capitalize() for c in present)],
                rows,
            )
        )

    pooled = {
        (attrs[n]["subscale"], attrs[n]["level"]): n
        for n in subscale
        if attrs[n].get("care_type") == "pooled"
    }
    if pooled:
        subs = list(dict.fromkeys(s for s, _ in pooled))
        rows = []
        for s in subs:
            row = [s]
            for lv in ("within", "between"):
                n = pooled.get((s, lv))
                row += [n or "", _cell(summary.loc[n]) if n else ""]
            rows.append(row)
        tables.append(
            Table(
                "levels",
                "Within- vs between-provider alliance (pooled over care types)",
                f"{effect_units}. Within = client minus provider mean; between = provider mean "
                f"(Baldwin, Wampold & Imel 2007). {_pooled_note(subscale, attrs)}{common}",
                ["Subscale", "Within estimand", "Within", "Between estimand", "Between"],
                rows,
            )
        )

    var = of_kind("variance component") + of_kind("hyperparameter")
    if var:
        rows = unit_rows(var)
        tables.append(
            Table(
                "variance",
                "Variance components, hyperparameters and intraclass correlation",
                "SDs in outcome units; ICC = sd_provider² / (sd_provider² + sigma²). "
                "mu_b_* is the hyper-mean of the care-type slopes (the centre of their prior), "
                "not the pooled slope of this study's clients. "
                f"P(>0) is trivially 1 for scales. {common}",
                ["Estimand", *_STAT_HEADER, "Units"],
                rows,
            )
        )

    standardised = of_kind("standardised effect") + of_kind("model fit")
    if standardised:
        tables.append(
            Table(
                "standardised",
                "Standardised effects (β) and Bayesian R²",
                "β = b · sd(predictor) / sd(outcome), sample SDs of the fitted clients; for the "
                "subscales, per SD of the within- or between-provider part. For a censored "
                "outcome b is a latent-scale slope: beta_obs_* = β × the share of clients inside "
                "the bounds is the observed-scale β that an OLS fit of the scores estimates. "
                "r2_bayes: var(expected outcome) / (var + residual variance) per draw, provider "
                "effects included (Gelman et al. 2019); r2_marginal: without them (Nakagawa & "
                "Schielzeth 2013); r2_observed: marginal, on the bounded scores (the published "
                f"OLS R²). {common}",
                ["Estimand", *_STAT_HEADER, "Units"],
                unit_rows(standardised),
            )
        )
    published_key = (meta.get("spec_as_run") or {}).get("published_table")
    if published_key:
        tables.append(_published_table(summary, PUBLISHED[published_key], common))

    contrasts = of_kind("contrast")
    if contrasts:
        rows = [[n, *_stat_cells(summary.loc[n])] for n in contrasts]
        tables.append(
            Table(
                "contrasts",
                "Contrasts: care types (therapist − coach, both − coach), subscales (goal − bond)",
                f"{effect_units}; differences computed draw by draw. {common}",
                ["Estimand", *_STAT_HEADER],
                rows,
            )
        )
    return tables


def _pooled_note(names: list[str], attrs: Mapping[str, Mapping[str, Any]]) -> str:
    """How the pooled column averages the care types, from the estimands' own attributes."""
    weights = next((attrs[n]["care_weights"] for n in names if attrs[n].get("care_weights")), None)
    if weights is None:
        return ""
    return f"Pooled = the care-type slopes averaged with weights {weights}. "


def _published_table(summary: pd.DataFrame, published: Mapping[str, Any], common: str) -> Table:
    """The published coefficients beside this posterior's, row by row (b, β, interval)."""

    def ours(name: str) -> str:
        return _cell(summary.loc[name]) if name in summary.index else "—"

    def first(*names: str) -> str:
        return next((n for n in names if n in summary.index), names[-1])

    rows = []
    for estimand, label, b, beta, low, high in published["rows"]:
        stem = estimand.removeprefix("b_")
        # The observed-scale β of a censored model is the one an OLS fit of the scores estimates.
        beta_name = first(f"beta_obs_{stem}", f"beta_{stem}") if estimand.startswith("b_") else ""
        rows.append(
            [
                label,
                f"{b:g} [{low:g}, {high:g}]",
                ours(estimand),
                "—" if beta is None else f"{beta:g}",
                ours(beta_name) if beta_name else "—",
            ]
        )
    # OLS R² is marginal (no provider terms) and on the observed scores: the matching estimand.
    r2 = first("r2_observed", "r2_marginal", "r2_bayes")
    beta_kind = "beta_obs_*" if summary.index.str.startswith("beta_obs_").any() else "beta_*"
    rows.append(["R²", f"{published['r2']:g}", ours(r2), "", ""])
    return Table(
        "published",
        "Published table and this posterior, side by side",
        f"Published: {published['citation']}: b [95% CI], β. This posterior: mean [95% HDI] "
        f"on the synthetic or supplied study; posterior β is `{beta_kind}` "
        f"and R² is `{r2}` (the observed-scale, marginal ones where the model has them). {common}",
        [
            "Predictor",
            "Published b [95% CI]",
            "Posterior b [95% HDI]",
            "Published β",
            "Posterior β",
        ],
        rows,
    )


def tables_markdown(estimands: xr.Dataset, meta: Mapping[str, Any]) -> str:
    """All tables as GitHub-flavoured Markdown, each with a heading and an italic caption."""
    out = []
    for t in build_tables(estimands, meta):
        out += [f"### {t.title}", "", f"*{t.caption}*", ""]
        out += [*markdown_table(t.header, t.rows), ""]
    return "\n".join(out)


def _latex_cell(cell: str) -> str:
    """Escape a cell; in numeric cells typeset ASCII hyphens as minus signs and < > in maths."""
    text = latex_escape(cell)
    if cell[:1] in "-0123456789<>[":
        text = "$-$".join(text.split("-")) if not cell[:1].isalpha() else text
        text = text.replace("<", "$<$").replace(">", "$>$")
    return text


def tables_latex(estimands: xr.Dataset, meta: Mapping[str, Any]) -> str:
    """All tables as LaTeX ``table`` floats using booktabs rules (``\\usepackage{booktabs}``)."""
    out = [
        "% Generated by alliance_bayes.report.tables; requires \\usepackage{booktabs}.",
        "",
    ]
    for t in build_tables(estimands, meta):
        align = "l" * _n_text_cols(t) + "r" * (len(t.header) - _n_text_cols(t))
        out += latex_table(
            [latex_escape(h) for h in t.header],
            [[_latex_cell(c) for c in r] for r in t.rows],
            align=align,
            caption=f"{t.title}. {t.caption}",
            label=f"tab:{t.key}",
            escaped=True,
        )
    return "\n".join(out)


def _n_text_cols(t: Table) -> int:
    """Leading columns holding labels rather than numbers (left-aligned)."""
    first: Sequence[str] = t.rows[0] if t.rows else []
    n = 0
    for c in first:
        if c and (c[0].isdigit() or c[0] in "-<>"):
            break
        n += 1
    return max(1, min(n, len(t.header) - 1))
