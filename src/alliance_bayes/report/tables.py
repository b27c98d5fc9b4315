"""Paper tables (Markdown and LaTeX/booktabs) laid out by level of the model.

Rounding rule (numbers that go into papers are rounded by their Monte Carlo error): a posterior mean
is shown to the decimal place of the leading digit of ``2 × MCSE(mean)``, and every number of a
table's column to the finest such place among its rows (:func:`column_decimals`: decimals never
mix within a column, and no row loses a digit its Monte Carlo error supports). For example MCSE 0.013
gives 2×MCSE = 0.026, whose leading digit is in the hundredths, so the mean is shown with 2
decimals; MCSE 0.4 gives 0.8, 1 decimal; MCSE 3 gives 6, 0 decimals; MCSE 30 gives 60, rounded to
tens. The posterior SD and HDI bounds are shown to the same decimal place as the mean: their own
Monte Carlo errors are larger than the mean's, so more digits would be noise. ``P(>0)`` is rounded
by the same rule using its binomial MCSE ``sqrt(p(1-p)/ESS_bulk)``, capped at 3 decimals; when no
draw (or every draw) is positive it is shown as ``<0.001``/``>0.999``. Machine-readable files
(``estimands.csv``) keep full precision.

Layout (what an author pastes): each row carries a readable label (:func:`estimand_label`) with its
stable estimand name beside it (Markdown: in code font; LaTeX: a ``% estimand:`` comment ending the
row); what all tables share (interval, draws, spec, outcome, rounding rule) is said once, in a note
before the first table (:func:`shared_note`), so captions stay short. In LaTeX the numbers of a
column are aligned on the decimal point by padding each to the column's widest integer part and
longest decimals with ``\\phantom``: the digits shown stay those the Monte Carlo error supports
(padding with zeros would print noise), and no package beyond booktabs is needed
(:data:`LATEX_PREAMBLE`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import xarray as xr

from alliance_bayes.data.care import CARE_REFERENCE, CARE_TYPES, care_words, split_contrast
from alliance_bayes.data.instruments import SHIPPED as SHIPPED_INSTRUMENTS
from alliance_bayes.data.instruments import instrument_of
from alliance_bayes.data.published import PUBLISHED
from alliance_bayes.report.estimands import HDI_PROB, estimand_table
from alliance_bayes.report.hypotheses import _bf_cell, rope_text
from alliance_bayes.report.render import (
    FIT_WIDTH_BOX,
    FIT_WIDTH_DECLARATION,
    latex_escape,
    latex_table,
    markdown_table,
)
from alliance_bayes.report.sample import care_phrase, care_title

__all__ = [
    "LATEX_PREAMBLE",
    "Table",
    "all_tables",
    "build_tables",
    "column_decimals",
    "decimals_for_mcse",
    "declared_covariate_labels",
    "estimand_label",
    "estimate_cell",
    "format_by_mcse",
    "hypotheses_table",
    "latex_escape",
    "numeric_columns",
    "shared_note",
    "tables_latex",
    "tables_markdown",
]

_MAX_DECIMALS = 6


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


def _prob_decimals(p: float, ess: float) -> int:
    """Decimals of ``P(>0)`` by its binomial MCSE ``sqrt(p(1-p)/ESS)``, at most 3."""
    if not math.isfinite(p) or p <= 0.0 or p >= 1.0:
        return 0
    mcse = math.sqrt(p * (1 - p) / max(ess, 1.0))
    return max(0, min(3, decimals_for_mcse(mcse)))


def _format_prob(p: float, ess: float, decimals: int | None = None) -> str:
    if not math.isfinite(p):
        return "n/a"
    if p <= 0.0:
        return "<0.001"
    if p >= 1.0:
        return ">0.999"
    return _round_str(p, _prob_decimals(p, ess) if decimals is None else decimals)


def column_decimals(summary: pd.DataFrame, names: Sequence[str]) -> tuple[int, int]:
    """One decimal place per column of a table: ``(estimates, P(>0))``.

    The estimates (mean, SD, HDI bounds) of every row named are shown to the finest decimal
    place any row's ``2 × MCSE(mean)`` supports (:func:`decimals_for_mcse`), and ``P(>0)`` to the
    finest its rows' binomial MCSEs support (at most 3), so that no row loses a digit its Monte
    Carlo error supports and a column's decimals do not mix; a row with a larger MCSE then shows
    a digit or two more than it alone would.
    """
    rows = [summary.loc[n] for n in names if n]
    # A constant row (MCSE 0 or undefined) would ask for every decimal; it takes the column's.
    varying = [r for r in rows if math.isfinite(r["mcse_mean"]) and r["mcse_mean"] > 0]
    return (
        max((decimals_for_mcse(r["mcse_mean"]) for r in varying), default=0),
        max((_prob_decimals(r["prob_positive"], r["ess_bulk"]) for r in rows), default=0),
    )


@dataclass
class Table:
    """A rendered-agnostic table: title, caption, header and string cells.

    ``names`` holds the stable estimand name of each row (``""`` where a row is not one
    estimand); the first cell of such a row is its readable label. ``label_columns`` is the number
    of leading text columns; the others hold numbers. ``code_columns`` are columns whose cells are
    estimand names or statements (set in code font).
    """

    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    names: list[str] = field(default_factory=list)
    label_columns: int = 1
    code_columns: tuple[int, ...] = ()


def estimate_cell(row: pd.Series, decimals: int | None = None) -> str:
    """``mean [low, high]`` rounded by the mean's MCSE, or to ``decimals`` (a column's)."""
    d = decimals_for_mcse(row["mcse_mean"]) if decimals is None else decimals
    return (
        f"{_round_str(row['mean'], d)} "
        f"[{_round_str(row['hdi95_low'], d)}, {_round_str(row['hdi95_high'], d)}]"
    )


def _stat_cells(row: pd.Series, decimals: tuple[int, int]) -> list[str]:
    """Mean, SD, HDI and P(>0) of a row, to its table's :func:`column_decimals`."""
    d, p = decimals
    return [
        _round_str(row["mean"], d),
        _round_str(row["sd"], d),
        f"[{_round_str(row['hdi95_low'], d)}, {_round_str(row['hdi95_high'], d)}]",
        _format_prob(row["prob_positive"], row["ess_bulk"], p),
    ]


_STAT_HEADER = ["Mean", "SD", "95% HDI", "P(>0)"]


_COVARIATE_LABELS = {
    "intercept": "Intercept",
    "b_baseline": "Baseline score",
    "b_age": "Age (years)",
    "b_male": "Male",
    "b_days_in_care": "Days in care",
    "b_alliance": "Alliance (composite)",
    "sigma": "Residual SD",
    "nu": "Degrees of freedom (Student-t)",
    "r2_bayes": "Bayesian R² (conditional)",
    "r2_marginal": "Marginal R²",
    "r2_observed": "Marginal R², observed scores",
    "share_uncensored": "Share of clients inside the bounds",
}
#: The rating the ratings family's alliance estimands are on: the expected rating of a typical
#: session, goal and bond averaged (:mod:`~alliance_bayes.model.ratings.estimands`).
_RATING = "Expected alliance rating"
#: Estimand names of the ratings and latent families without brackets, in words.
_FAMILY_LABELS = {
    "alliance_per_decade_age": f"{_RATING} per decade of age",
    "alliance_per_10_who5_baseline": f"{_RATING} per 10 WHO-5 points at baseline",
    "alliance_per_session": f"{_RATING} per session (session order)",
    "alliance[male-not_male]": f"{_RATING}: male vs not male",
    "sd_country_alliance": f"SD of the {_RATING.lower()} across countries",
    "share_at_ceiling": "Share of session ratings at the top of the scale",
    "sd_provider_alliance": f"Provider SD of the {_RATING.lower()}",
    "sd_provider_latent": "Provider SD of the latent alliance (client SDs)",
    "sd_country_latent": "Country SD of the latent alliance (client SDs)",
    "icc_provider_alliance": "ICC of providers (latent alliance)",
    "rho_outcomes": "Residual correlation of the outcomes",
}
_LEVEL_LABELS = {"within": "within providers", "between": "between providers"}
_BRACKET = re.compile(r"^(?P<stem>[^\[]+)(?:\[(?P<arg>[^\]]*)\])?$")


def _versus(arg: str) -> str:
    """``therapist-coach`` → ``therapist vs coach``; a single word is kept.

    A care type of several provider types reads as they do: ``therapist_and_psychiatrist-coach``
    → ``therapist and psychiatrist vs coach``.
    """
    return " vs ".join(care_words(part) for part in arg.split("-"))


def _care_contrasts(names: Sequence[str], attrs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The care-type contrasts (``therapist-coach``, …) among the estimands, in their order."""
    found = (str(attrs[n].get("care_type", "")) for n in names)
    return list(dict.fromkeys(c for c in found if "-" in c))


def _study_care_types(meta: Mapping[str, Any]) -> list[str]:
    """The care types of the fit's clients as its design's scales record them (``care_types``,
    else the care shares' keys, per outcome in the latent family); empty when not recorded."""
    scales = meta.get("scales") or {}
    if scales.get("care_types"):
        return [str(c) for c in scales["care_types"]]
    shares = [scales.get("care_share") or {}, *(scales.get("care_share_by_outcome") or {}).values()]
    return list(dict.fromkeys(str(c) for share in shares for c in share))


def _reference_care(contrasts: Sequence[str]) -> str:
    """The care type the contrasts are against (coach unless the estimands say otherwise)."""
    references = list(dict.fromkeys(split_contrast(c)[1] for c in contrasts))
    return references[0] if len(references) == 1 else CARE_REFERENCE


def _reference_phrase(care: str) -> str:
    """``coach`` → ``coach-only care``; ``therapist_and_coach`` → ``therapist and coach care``."""
    if care == "both":
        return "care with both provider types"
    phrase = care_phrase(care)
    return (
        f"{phrase.removesuffix(' only')}-only care"
        if phrase.endswith(" only")
        else f"{phrase} care"
    )


def _slope_label(stem: str) -> str | None:
    """``goal_within`` → ``Goal, within providers``; contrasts of levels or subscales too."""
    sub, _, level = stem.rpartition("_")
    if not sub:
        return None
    if level == "within-between":
        return f"{sub.replace('-', ' − ').capitalize()}, within − between providers"
    if level in _LEVEL_LABELS:
        return f"{sub.replace('-', ' − ').capitalize()}, {_LEVEL_LABELS[level]}"
    return None


def estimand_label(name: str, declared: Mapping[str, str] | None = None) -> str:
    """A readable row label for a stable estimand name.

    Examples: ``b_days_in_care`` → "Days in care", ``sd_provider_slope[goal]`` → "SD of provider
    goal slopes", ``b_goal_within[therapist-coach]`` → "Goal, within providers: therapist vs
    coach", ``beta_obs_baseline`` → "β (observed scale): Baseline score". A multi-outcome prefix
    (``phq9:``) is kept in front; the change family's part of a covariate slope is read in words
    (``change:b_age`` → "Slope on the true change: Age (years)"). ``declared`` holds the labels
    of the study's declared covariates' estimands (:func:`declared_covariate_labels`), which take
    precedence. Names without a rule are shown with spaces for underscores.
    """
    prefix, _, bare = name.rpartition(":")
    label = (declared or {}).get(bare) or _bare_label(bare)
    if prefix in _CHANGE_SLOPES and bare.startswith("b_"):
        return f"{_CHANGE_SLOPES[prefix]}: {label}"
    return f"{prefix}: {label}" if prefix else label


def declared_covariate_labels(coding: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Row labels of the estimands of a study's declared covariates, by estimand name.

    ``coding`` is a fit's ``covariate_coding`` (``run.json``'s scales; type, label, reference and
    levels of each declared covariate), so that a row reads by the covariate's declared
    ``label``, a level against its reference in words:

    * categorical, a level :math:`k` against the reference :math:`r`: ``b_<name>[k]`` (regression,
      latent) and ``alliance_<name>[k-r]`` (ratings) → "Primary diagnosis: anxiety vs
      depression";
    * binary: ``b_<name>`` and ``alliance_<name>[1-0]`` → "Employed: 1 vs 0";
    * numeric: ``b_<name>`` → "Income (per unit)", the regression's slope per unit of the column,
      and ``alliance_per_sd_<name>`` → "Income (per SD)", the ratings' per SD of the column.

    A standardised slope ``beta_<name>`` (``beta_obs_<name>``) reads "β: Income" ("β (observed
    scale): …"), β being per SD of the predictor whatever the slope's unit.
    """
    labels: dict[str, str] = {}
    for name, entry in coding.items():
        shown = str(entry.get("label") or name)
        kind, reference = entry.get("type"), entry.get("reference")
        if kind == "numeric":
            labels |= {
                f"b_{name}": f"{shown} (per unit)",
                f"alliance_per_sd_{name}": f"{shown} (per SD)",
            }
            labels |= _beta_labels(name, shown)
            continue
        if kind == "binary":
            level = entry.get("level")
            versus = f"{shown}: {level} vs {reference}"
            labels |= {f"b_{name}": versus, f"alliance_{name}[{level}-{reference}]": versus}
            labels |= _beta_labels(name, versus)
            continue
        for level in entry.get("levels") or ():
            versus = f"{shown}: {level} vs {reference}"
            labels |= {
                f"b_{name}[{level}]": versus,
                f"alliance_{name}[{level}-{reference}]": versus,
            }
            labels |= _beta_labels(f"{name}[{level}]", versus)
    return labels


def _beta_labels(column: str, shown: str) -> dict[str, str]:
    return {f"beta_{column}": f"β: {shown}", f"beta_obs_{column}": f"β (observed scale): {shown}"}


def _declared_labels(meta: Mapping[str, Any]) -> dict[str, str]:
    """:func:`declared_covariate_labels` of a run's metadata (none without declared covariates)."""
    coding = (meta.get("scales") or {}).get("covariate_coding") or {}
    return declared_covariate_labels(coding)


def _bare_label(name: str) -> str:
    if name in _COVARIATE_LABELS:
        return _COVARIATE_LABELS[name]
    if name in _FAMILY_LABELS:
        return _FAMILY_LABELS[name]
    if (label := _measurement_label(name)) is not None:
        return label
    if (label := _change_label(name)) is not None:
        return label
    for head, kind in (("beta_obs_", "β (observed scale)"), ("beta_", "β")):
        if name.startswith(head):
            return f"{kind}: {_bare_label('b_' + name.removeprefix(head))}"
    m = _BRACKET.match(name)
    stem, arg = (m["stem"], m["arg"]) if m else (name, None)
    if stem == "b_care" and arg:
        return f"Care type: {_versus(arg)}"
    if stem == "sd_provider" and arg:
        return f"SD of provider intercepts ({arg})"
    if stem == "sd_provider_slope" and arg:
        return f"SD of provider {arg} slopes"
    if stem == "icc_provider" and arg:
        return f"ICC of providers ({arg})"
    if stem.startswith("sd_b_") and (slope := _slope_label(stem.removeprefix("sd_b_"))):
        return f"SD of care-type slopes: {slope[0].lower()}{slope[1:]}"
    if stem.startswith("mu_b_") and (slope := _slope_label(stem.removeprefix("mu_b_"))):
        return f"Hyper-mean of care-type slopes: {slope[0].lower()}{slope[1:]}"
    if stem.startswith("b_") and (slope := _slope_label(stem.removeprefix("b_"))):
        return f"{slope}: {_versus(arg)}" if arg else slope
    if stem.startswith("b_") and arg:
        # A level of a declared categorical covariate; its reference is in the Units column.
        text = stem.removeprefix("b_").replace("_", " ")
        return f"{text[:1].upper()}{text[1:]}: {arg}"
    text = name.removeprefix("b_").replace("_", " ")
    return text[:1].upper() + text[1:]


def _measurement_label(name: str) -> str | None:
    """The label of a ratings- or latent-family estimand with an argument, or ``None``.

    Ratings family: ``alliance[therapist]`` → "Expected alliance rating: therapist-only care",
    ``alliance[therapist-coach]`` → "Expected alliance rating, care type: therapist vs coach",
    ``alliance_country[GB]`` → "Expected alliance rating in country GB"; a declared covariate's
    (without its declared label) ``alliance_per_sd_income`` → "Expected alliance rating per SD of
    income", ``alliance_employed[yes-no]`` → "Expected alliance rating, employed: yes vs no".
    Latent family's measurement part: ``threshold[goal,1|2]`` → "Threshold between ratings 1 and
    2 (goal)", ``discrimination[goal]`` → "Item discrimination (goal)",
    ``sd_provider_alliance[goal]`` → "Provider SD of the latent alliance (goal)",
    ``corr_client_alliance[goal~bond]`` → "Correlation of the clients' latent alliance (goal and
    bond)".
    """
    m = _BRACKET.match(name)
    stem, arg = (m["stem"], m["arg"]) if m else (name, None)
    if stem.startswith("alliance_per_sd_"):
        return f"{_RATING} per SD of {_words(stem.removeprefix('alliance_per_sd_'))}"
    if arg is None:
        return None
    if stem == "alliance":
        if "-" not in arg:
            return f"{_RATING}: {_reference_phrase(arg)}"
        return f"{_RATING}, care type: {_versus(arg)}"
    if stem == "alliance_country":
        return f"{_RATING} in country {arg}"
    if stem.startswith("alliance_"):
        covariate = _words(stem.removeprefix("alliance_"))
        return f"{_RATING}, {covariate}: {' vs '.join(arg.split('-', 1))}"
    if stem == "threshold":
        subscale, _, cut = arg.partition(",")
        low, _, high = cut.partition("|")
        return f"Threshold between ratings {low} and {high} ({subscale})"
    if stem == "discrimination":
        return f"Item discrimination ({arg})"
    if stem == "sd_provider_alliance":
        return f"Provider SD of the latent alliance ({arg})"
    if stem == "corr_client_alliance":
        return f"Correlation of the clients' latent alliance ({arg.replace('~', ' and ')})"
    return None


#: The change family's covariate slopes, ``<part>:b_<column>``, by part: what the slope is on.
_CHANGE_SLOPES = {
    "baseline": "Slope on the true baseline",
    "followup": "Slope on the true follow-up",
    "change": "Slope on the true change",
}
#: The change family's estimands without an instrument's name, in words.
_CHANGE_LABELS = {
    "reliability": "Test–retest reliability",
    "reliable_change_criterion": "Reliable-change criterion (Jacobson–Truax)",
    "sigma_error": "SD of the measurement error",
    "corr_true": "Correlation of true baseline and follow-up",
}
#: Change-family stems that end in a group: what is estimated among the group's elevated clients.
_CHANGE_GROUP_STEMS = {
    "rtm": "Regression to the mean",
    "reliably_improved": "Share of the elevated reliably improved",
    "recovered": "Share of the elevated recovered",
    "reliably_deteriorated": "Share of the elevated reliably deteriorated",
}
#: ``<instrument>_change…[<group>]``: the instrument's change, per kind of change.
_INSTRUMENT_CHANGE = re.compile(
    r"^(?P<instrument>[a-z][a-z0-9_]*?)_change(?P<kind>_beyond_rtm|_d)?$"
)
_CHANGE_KINDS = {
    None: "change among the elevated",
    "_beyond_rtm": "change beyond regression to the mean",
    "_d": "change among the elevated (in baseline SDs)",
}
_TIMES = {"baseline": "baseline", "followup": "follow-up"}


def _instrument_label(name: str) -> str:
    """An outcome instrument's label by its name (``gad7`` → "GAD-7"): built in, declared by a
    study loaded in this process, or shipped; else the name itself upper-cased."""
    found = instrument_of(f"{name}_followup") or SHIPPED_INSTRUMENTS.get(name)
    return found.label if found is not None else name.upper()


def _group_phrase(group: str) -> str:
    """``all`` → "all"; a care type as the paper's reference phrase ("therapist-only care")."""
    return group if group == "all" else _reference_phrase(group)


def _change_label(name: str) -> str | None:
    """The label of a change-family estimand (:mod:`alliance_bayes.model.change.estimands`), or
    ``None``.

    ``who5_change[therapist]`` → "WHO-5 change among the elevated: therapist-only care",
    ``gad7_change_beyond_rtm[all]`` → "GAD-7 change beyond regression to the mean: all",
    ``who5_change_d[all]`` → "WHO-5 change among the elevated (in baseline SDs): all",
    ``rtm[both]`` → "Regression to the mean: care with both provider types",
    ``reliably_improved[all]`` → "Share of the elevated reliably improved: all",
    ``sd_true[followup]`` → "SD of the true scores: follow-up", ``sigma_error`` → "SD of the
    measurement error". The instrument's name in front (``who5``, ``phq9``, a declared one's) is
    read as its label (:func:`_instrument_label`); the units (its points) are in the Units column.
    """
    if name in _CHANGE_LABELS:
        return _CHANGE_LABELS[name]
    m = _BRACKET.match(name)
    if m is None or m["arg"] is None:
        return None
    stem, arg = m["stem"], m["arg"]
    if stem == "sd_true" and arg in _TIMES:
        return f"SD of the true scores: {_TIMES[arg]}"
    if stem in _CHANGE_GROUP_STEMS:
        return f"{_CHANGE_GROUP_STEMS[stem]}: {_group_phrase(arg)}"
    if (change := _INSTRUMENT_CHANGE.match(stem)) and "-" not in arg and not stem.startswith("b_"):
        what = _CHANGE_KINDS[change["kind"]]
        return f"{_instrument_label(change['instrument'])} {what}: {_group_phrase(arg)}"
    return None


def _words(name: str) -> str:
    return name.replace("_", " ")


def shared_note(estimands: xr.Dataset, meta: Mapping[str, Any]) -> str:
    """What every table shares, said once: interval, draws, spec, outcome and the rounding rule."""
    chains = int(estimands.sizes.get("chain", 0))
    draws = int(estimands.sizes.get("draw", 0))
    spec = meta.get("spec", "unknown")
    outcome = meta.get("outcome_label", meta.get("outcome", "outcome"))
    return (
        f"Posterior means with {round(HDI_PROB * 100)}% HDI (highest density interval); "
        f"{chains} chains × {draws} draws; model spec `{spec}`; outcome {outcome}. "
        "Means, SDs and interval bounds are rounded, one decimal place per column, to the finest "
        "place 2×MCSE of a row's mean supports; P(>0) is the posterior probability that the "
        "estimand is positive. Each row's stable estimand name (as in estimands.csv) is given beside its label."
    )


def build_tables(
    estimands: xr.Dataset, meta: Mapping[str, Any], summary: pd.DataFrame | None = None
) -> list[Table]:
    """Lay the estimands out as paper tables; only tables with rows are returned.

    Parameters
    ----------
    estimands : xarray.Dataset
        Output of :func:`~alliance_bayes.model.regression.estimands.compute_estimands`.
    meta : mapping
        Run metadata; ``effect_units`` and ``outcome_label`` are used in captions (what the
        tables share is in :func:`shared_note`).

    Returns
    -------
    list of Table
        In order: fixed effects, care-type intercepts, subscale effects by care type, within vs
        between provider, variance components and ICC, standardised effects, the published
        table (where the spec names one), contrasts.
    """
    summary = (estimand_table(estimands) if summary is None else summary).set_index("estimand")
    effect_units = meta.get("effect_units", "outcome points per 1 point of alliance")
    outcome = meta.get("outcome_label", meta.get("outcome", "outcome"))
    attrs = {str(k): v.attrs for k, v in estimands.data_vars.items()}
    declared = _declared_labels(meta)

    def of_kind(kind: str) -> list[str]:
        return [n for n, a in attrs.items() if a.get("kind") == kind]

    def unit_table(key: str, title: str, caption: str, names: list[str], units: bool = True):
        decimals = column_decimals(summary, names)
        rows = [
            [
                estimand_label(n, declared),
                *_stat_cells(summary.loc[n], decimals),
                *([summary.loc[n, "units"]] if units else []),
            ]
            for n in names
        ]
        header = ["Estimand", *_STAT_HEADER, *(["Units"] if units else [])]
        return Table(key, title, caption, header, rows, names=list(names))

    tables: list[Table] = []

    fixed = of_kind("fixed effect")
    if fixed:
        tables.append(unit_table("fixed", "Fixed effects", "Units per row.", fixed))

    care = of_kind("care-type intercept")
    if care:
        reference = _reference_care(_care_contrasts(care, attrs))
        tables.append(
            unit_table(
                "care",
                f"Care-type intercepts (against {_reference_phrase(reference)})",
                f"{outcome} difference at equal alliance (sample-mean between-provider parts, "
                "equal within parts) and equal covariates.",
                care,
            )
        )

    subscale = of_kind("subscale effect")
    # Rows: within-provider first (the paper's order), subscales in estimand order (goal, bond, …).
    cells: dict[tuple[str, str], dict[str, str]] = {}
    subscale_decimals = column_decimals(summary, subscale)[0]
    for n in subscale:
        a = attrs[n]
        cells.setdefault((a["subscale"], a["level"]), {})[a["care_type"]] = estimate_cell(
            summary.loc[n], subscale_decimals
        )
    if cells:
        # The care types in the order the estimands carry them, the pooled slopes last.
        cares = dict.fromkeys(c for v in cells.values() for c in v if c != "pooled")
        present = [*cares, *(["pooled"] if any("pooled" in v for v in cells.values()) else [])]
        keys = sorted(cells, key=lambda k: (k[1] != "within", list(cells).index(k)))
        rows = [[s.capitalize(), lv, *(cells[s, lv].get(c, "") for c in present)] for s, lv in keys]
        tables.append(
            Table(
                "subscale",
                "Alliance subscale effects by care type",
                f"{effect_units}; mean [95% HDI]. Row estimands: b_<subscale>_<level>[<care type>]"
                f", pooled: b_<subscale>_<level>. {_pooled_note(subscale, attrs)}".rstrip(),
                ["Subscale", "Level", *(care_title(c) for c in present)],
                rows,
                names=["" for _ in rows],
                label_columns=2,
            )
        )

    pooled = {
        (attrs[n]["subscale"], attrs[n]["level"]): n
        for n in subscale
        if attrs[n].get("care_type") == "pooled"
    }
    if pooled:
        subs = list(dict.fromkeys(s for s, _ in pooled))
        level_decimals = column_decimals(summary, list(pooled.values()))[0]
        rows = []
        for s in subs:
            row = [s.capitalize()]
            for lv in ("within", "between"):
                n = pooled.get((s, lv))
                row += [n or "", estimate_cell(summary.loc[n], level_decimals) if n else ""]
            rows.append(row)
        tables.append(
            Table(
                "levels",
                "Within- vs between-provider alliance (pooled over care types)",
                f"{effect_units}; mean [95% HDI]. Within = client minus provider mean; between = "
                f"provider mean (Baldwin, Wampold & Imel 2007). "
                f"{_pooled_note(subscale, attrs)}".rstrip(),
                ["Subscale", "Within estimand", "Within", "Between estimand", "Between"],
                [[r[0], r[1], r[2], r[3], r[4]] for r in rows],
                names=["" for _ in rows],
                label_columns=1,
                code_columns=(1, 3),
            )
        )

    var = of_kind("variance component") + of_kind("hyperparameter")
    if var:
        tables.append(
            unit_table(
                "variance",
                "Variance components, hyperparameters and intraclass correlation",
                "SDs in outcome units; ICC = sd_provider² / (sd_provider² + sigma²). "
                "mu_b_* is the hyper-mean of the care-type slopes (the centre of their prior), "
                "not the pooled slope of this study's clients. P(>0) is trivially 1 for scales.",
                var,
            )
        )

    standardised = of_kind("standardised effect") + of_kind("model fit")
    if standardised:
        tables.append(
            unit_table(
                "standardised",
                "Standardised effects (β) and Bayesian R²",
                "β = b · sd(predictor) / sd(outcome), sample SDs of the fitted clients; for the "
                "subscales, per SD of the within- or between-provider part. For a censored "
                "outcome b is a latent-scale slope: beta_obs_* = β × the share of clients inside "
                "the bounds is the observed-scale β that an OLS fit of the scores estimates. "
                "r2_bayes: var(expected outcome) / (var + residual variance) per draw, provider "
                "effects included (Gelman et al. 2019); r2_marginal: without them (Nakagawa & "
                "Schielzeth 2013); r2_observed: marginal, on the bounded scores (the published "
                "OLS R²).",
                standardised,
            )
        )
    published_key = (meta.get("spec_as_run") or {}).get("published_table")
    if published_key:
        tables.append(_published_table(summary, PUBLISHED[published_key]))

    contrasts = of_kind("contrast")
    if contrasts:
        # Without care-type contrasts among them, the contract's are named, as they always were,
        # unless the fit's study has one care type, which has none to name.
        one_care = len(_study_care_types(meta) or CARE_TYPES) < 2
        versus = _care_contrasts(contrasts, attrs) or [
            f"{c}-{CARE_REFERENCE}" for c in CARE_TYPES if c != CARE_REFERENCE and not one_care
        ]
        listed = ", ".join(_versus(c).replace(" vs ", " − ") for c in versus)
        cares = f"care types ({listed}), " if versus else ""
        tables.append(
            unit_table(
                "contrasts",
                f"Contrasts: {cares}subscales (goal − bond)",
                f"{effect_units}; differences computed draw by draw.",
                contrasts,
                units=False,
            )
        )
    return tables


def _pooled_note(names: list[str], attrs: Mapping[str, Mapping[str, Any]]) -> str:
    """How the pooled column averages the care types, from the estimands' own attributes."""
    weights = next((attrs[n]["care_weights"] for n in names if attrs[n].get("care_weights")), None)
    if weights is None:
        return ""
    return f"Pooled = the care-type slopes averaged with weights {weights}. "


def _published_table(summary: pd.DataFrame, published: Mapping[str, Any]) -> Table:
    """The published coefficients beside this posterior's, row by row (b, β, interval)."""

    def ours(name: str) -> str:
        return estimate_cell(summary.loc[name]) if name in summary.index else "—"

    def first(*names: str) -> str:
        return next((n for n in names if n in summary.index), names[-1])

    rows, names = [], []
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
        names.append(estimand)
    # OLS R² is marginal (no provider terms) and on the observed scores: the matching estimand.
    r2 = first("r2_observed", "r2_marginal", "r2_bayes")
    beta_kind = "beta_obs_*" if summary.index.str.startswith("beta_obs_").any() else "beta_*"
    rows.append(["R²", f"{published['r2']:g}", ours(r2), "", ""])
    names.append(r2)
    return Table(
        "published",
        "Published table and this posterior, side by side",
        f"Published: {published['citation']}: b [95% CI], β. This posterior: mean [95% HDI] "
        f"on the synthetic or supplied study; posterior β is `{beta_kind}` "
        f"and R² is `{r2}` (the observed-scale, marginal ones where the model has them).",
        [
            "Predictor",
            "Published b [95% CI]",
            "Posterior b [95% HDI]",
            "Published β",
            "Posterior β",
        ],
        rows,
        names=names,
    )


def hypotheses_table(table: pd.DataFrame, meta: Mapping[str, Any]) -> Table | None:
    """The decided hypotheses (:func:`~alliance_bayes.report.hypotheses.hypothesis_table`) as a
    paper table, or None when there are none. The decision rule is stated in the caption."""
    if table is None or table.empty:
        return None

    def num(x: float, digits: int) -> str:
        return "n/a" if not math.isfinite(float(x)) else f"{float(x):.{digits}f}"

    rows = [
        [
            str(r.hypothesis),
            num(r.mean, 2),
            f"[{num(r.hdi95_low, 2)}, {num(r.hdi95_high, 2)}]",
            num(r.posterior_prob, 3),
            num(r.prior_prob, 3),
            num(r.in_rope, 3),
            str(r.decision),
            _bf_cell(r) if r.draws else "",
        ]
        for r in table.itertuples()
    ]
    used = rope_text(table, meta)
    rope_words = f"ROPE {used}" if used else "no ROPE in these units"
    return Table(
        "hypotheses",
        "Hypotheses",
        f"P(H | y), P(H): posterior and prior probability of the statement (for =, of "
        f"|difference| < ROPE); {rope_words}. Decision (Kruschke 2018): equivalent if the 95% HDI "
        "lies inside the ROPE, different if wholly outside, else undecided. BF01: Savage–Dickey "
        "ratio for the point null; BF10: posterior over prior odds of a directional statement; "
        "± its Monte Carlo SE; < or >: a 95% bound.",
        ["Hypothesis", "Mean", "95% HDI", "P(H | y)", "P(H)", "In ROPE", "Decision", "BF"],
        rows,
        names=["" for _ in rows],
        code_columns=(0,),
    )


def all_tables(
    estimands: xr.Dataset,
    meta: Mapping[str, Any],
    hypotheses: pd.DataFrame | None,
    summary: pd.DataFrame | None,
) -> list[Table]:
    """Every table of a fit, the decided hypotheses last (when given): what ``tables.md``,
    ``tables.tex`` and ``tables.docx`` lay out, each in its own format."""
    tables = build_tables(estimands, meta, summary)
    h = hypotheses_table(hypotheses, meta) if hypotheses is not None else None
    return [*tables, h] if h is not None else tables


#: Columns of words among the number columns.
_WORD_COLUMNS = ("Units", "Decision", "BF")


def numeric_columns(t: Table) -> list[bool]:
    """Which columns hold numbers (right-aligned, decimal points aligned in LaTeX)."""
    return [
        j >= t.label_columns and j not in t.code_columns and h not in _WORD_COLUMNS
        for j, h in enumerate(t.header)
    ]


def _markdown_first_cell(t: Table, i: int, cell: str) -> str:
    name = t.names[i] if i < len(t.names) else ""
    return f"{cell} (`{name}`)" if name and name != cell else cell


def _markdown_cell(t: Table, j: int, cell: str) -> str:
    return f"`{cell}`" if j in t.code_columns and cell else cell


def tables_markdown(
    estimands: xr.Dataset,
    meta: Mapping[str, Any],
    hypotheses: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
) -> str:
    """All tables as GitHub-flavoured Markdown: a shared note, then each table with a heading and
    a short italic caption; ``hypotheses`` (a decided hypothesis table) adds a last table.
    ``summary`` is :func:`~alliance_bayes.report.estimands.estimand_table` of ``estimands`` where
    the caller has it already."""
    out = ["### About these tables", "", f"*{shared_note(estimands, meta)}*", ""]
    for t in all_tables(estimands, meta, hypotheses, summary):
        rows = [
            [
                _markdown_first_cell(t, i, _markdown_cell(t, j, c))
                if j == 0
                else _markdown_cell(t, j, c)
                for j, c in enumerate(r)
            ]
            for i, r in enumerate(t.rows)
        ]
        numeric = numeric_columns(t)
        out += [f"### {t.title}", "", f"*{t.caption}*", ""]
        out += [*markdown_table(t.header, rows, numeric=numeric), ""]
    return "\n".join(out)


#: The preamble ``tables.tex`` needs under pdfLaTeX (any document class).
LATEX_PREAMBLE = "\\usepackage{booktabs}\n\\usepackage{graphicx}"

# A number as the tables print it: an optional bound sign, a sign, digits and decimals.
_NUMBER = re.compile(r"(?P<cmp>[<>]?)(?P<sign>-?)(?P<int>\d+)(?:\.(?P<dec>\d+))?")


@dataclass
class _Widths:
    """Widest parts, over a column, of the k-th number of its cells."""

    cmp: bool = False
    sign: bool = False
    int_digits: int = 0
    decimals: int = 0


def _column_widths(cells: Sequence[str]) -> list[_Widths]:
    widths: list[_Widths] = []
    for cell in cells:
        for k, m in enumerate(_NUMBER.finditer(cell)):
            if k == len(widths):
                widths.append(_Widths())
            w = widths[k]
            w.cmp |= bool(m["cmp"])
            w.sign |= bool(m["sign"])
            w.int_digits = max(w.int_digits, len(m["int"]))
            w.decimals = max(w.decimals, len(m["dec"] or ""))
    return widths


def _phantom(text: str) -> str:
    return rf"\phantom{{{text}}}" if text else ""


def _aligned_number(m: re.Match[str], w: _Widths) -> str:
    r"""The number of ``m`` padded with ``\phantom`` to the column's widths ``w``."""
    lead = ("$<$" if w.cmp and not m["cmp"] else "") + ("$-$" if w.sign and not m["sign"] else "")
    lead += "0" * (w.int_digits - len(m["int"]))
    dec = m["dec"] or ""
    trail = ("." if w.decimals and not dec else "") + "0" * (w.decimals - len(dec))
    shown = {"<": "$<$", ">": "$>$", "": ""}[m["cmp"]] + ("$-$" if m["sign"] else "")
    shown += m["int"] + (f".{dec}" if dec else "")
    return _phantom(lead) + shown + _phantom(trail)


def _aligned_cell(cell: str, widths: list[_Widths]) -> str:
    """Escape a numeric cell and align each of its numbers on the decimal point."""
    out, at = [], 0
    for k, m in enumerate(_NUMBER.finditer(cell)):
        out += [latex_escape(cell[at : m.start()]), _aligned_number(m, widths[k])]
        at = m.end()
    return "".join([*out, latex_escape(cell[at:])])


#: Width of a wrapped text column (units, statements), so that a table fits a page.
_WRAP_WIDTH = "3.4cm"


def _texttt(text: str) -> str:
    # The typewriter font has ASCII glyphs for < > |, unlike the text font's OT1 encoding.
    escaped = latex_escape(text)
    for macro, ch in ((r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"\textbar{}", "|")):
        escaped = escaped.replace(macro, ch)
    # A long statement may break after a bracket, hyphen or underscore in a wrapped cell: the
    # typewriter font has no hyphenation, so it would otherwise run into the next column.
    for ch in ("[", "-", r"\_"):
        escaped = escaped.replace(ch, ch + r"\allowbreak{}")
    return rf"\texttt{{{escaped}}}"


def _latex_text(t: Table, j: int, cell: str) -> str:
    """A text cell; labels, units and statements wrap in a ragged-right box of :data:`_WRAP_WIDTH`."""
    text = _texttt(cell) if j in t.code_columns and cell else latex_escape(cell)
    if (t.header[j] in ("Units", "Hypothesis") or (j == 0 and any(t.names))) and cell:
        return rf"\parbox[t]{{{_WRAP_WIDTH}}}{{\raggedright {text}}}"
    return text


def _latex_rows(t: Table) -> list[list[str]]:
    numeric = numeric_columns(t)
    widths = [
        _column_widths([r[j] for r in t.rows]) if numeric[j] else [] for j in range(len(numeric))
    ]
    return [
        [
            _aligned_cell(c, widths[j]) if numeric[j] else _latex_text(t, j, c)
            for j, c in enumerate(r)
        ]
        for r in t.rows
    ]


def _latex_align(t: Table) -> str:
    """Labels left, numbers right (aligned by padding), units and decisions left."""
    return "".join("r" if n else "l" for n in numeric_columns(t))


def tables_latex(
    estimands: xr.Dataset,
    meta: Mapping[str, Any],
    hypotheses: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
) -> str:
    r"""All tables as a LaTeX fragment for ``\input``: a shared note, then ``table`` floats.

    The fragment is ASCII and compiles under pdfLaTeX and LuaLaTeX with :data:`LATEX_PREAMBLE`
    (``\usepackage{booktabs}`` and ``\usepackage{graphicx}``) in any document class; a table wider
    than the text is scaled to its width (:func:`~alliance_bayes.report.render.latex_table`'s
    ``fit_width``); each row ends in a ``% estimand:`` comment naming its stable estimand.
    ``hypotheses`` (a decided hypothesis table) adds a last table; ``summary`` as in
    :func:`tables_markdown`.
    """
    out = [
        "% alliance-bayes paper tables: a fragment for \\input{tables.tex} under pdfLaTeX or "
        "LuaLaTeX.",
        f"% Preamble: {' '.join(LATEX_PREAMBLE.splitlines())} (nothing else; numbers are aligned "
        "with \\phantom, a table wider than the text is scaled to its width).",
        "% Each row ends with a comment naming its stable estimand (estimands.csv).",
        FIT_WIDTH_DECLARATION,
        "",
        rf"\par\noindent\textit{{Note to the tables.}} {latex_escape(shared_note(estimands, meta))}"
        r"\par",
        "",
    ]
    for t in all_tables(estimands, meta, hypotheses, summary):
        lines = latex_table(
            [latex_escape(h) for h in t.header],
            _latex_rows(t),
            align=_latex_align(t),
            caption=f"{t.title}. {t.caption}",
            label=f"tab:{t.key}",
            size=r"\small",
            escaped=True,
            row_comments=[f"estimand: {n}" if n else "" for n in t.names],
            fit_width=FIT_WIDTH_BOX,
        )
        out += lines
    return "\n".join(out)
