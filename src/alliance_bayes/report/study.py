r"""The whole study's report ``results/study/<run-id>/``: Table 1, one section per question.

The study (Sagui-Henson et al. 2022, doi:10.1007/s41347-022-00263-5) asked three questions; each
is answered by fits whose own results bundles (``results/<spec>/<run-id>/``) hold the draws,
diagnostics and the BARG report. This module writes the page that puts them together:

* **Table 1**, the sample by care type (therapist, coach, both) and over all clients, computed
  from the analysis frame (descriptive statistics of the data, no model): n; age mean (SD); % male
  among clients whose sex is recorded; sessions median [IQR]; the client alliance score (goal and
  bond averaged over sessions, the paper's score) median [IQR]; WHO-5 and PHQ-9 at baseline and
  follow-up, mean (SD) and n; missing follow-up n (%) (WHO-5: of the clients in the column; PHQ-9:
  of those with a PHQ-9 baseline); elevated at baseline n (%). SDs are sample SDs
  (:math:`n - 1`); quartiles interpolate linearly between order statistics (pandas' default).
* per question, the fits' key estimands (posterior mean [95% HDI], rounded by the Monte Carlo
  error as in :mod:`~alliance_bayes.report.tables`), the published value or claim beside the
  posterior where the paper reported one, the spec's hypotheses with their decisions, figures
  (the fits' own, copied so that ``report.html`` embeds them, and two drawn here from the
  summaries) and a link to each fit's bundle.

It never samples: it receives each fit as a :class:`FitOutcome` (its summary, hypotheses,
provenance and bundle path). The folder is written atomically (:func:`~alliance_bayes.storage.
atomic_folder`): an exception, an interrupt included, leaves no folder that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alliance_bayes.data.care import CARE_TYPES, care_words
from alliance_bayes.data.published import (
    COMPANION_WHO5_CHANGE,
    PUBLISHED,
    PUBLISHED_ALLIANCE_MEDIAN,
)
from alliance_bayes.model.latent.instrument_check import RatingScale
from alliance_bayes.report.html import markdown_to_html
from alliance_bayes.report.hypotheses import hypotheses_markdown
from alliance_bayes.report.render import markdown_table
from alliance_bayes.report.sample import (
    CARE_COLUMNS,
    care_phrase,
    care_title,
    sample_characteristics,
    sample_table_markdown,
)
from alliance_bayes.report.tables import (
    declared_covariate_labels,
    estimand_label,
    estimate_cell,
)
from alliance_bayes.storage import atomic_folder, dump_json

__all__ = [
    "CARE_COLUMNS",
    "FAILED_STUDY_MARKER",
    "QUESTION_TEXT",
    "FitOutcome",
    "sample_characteristics",
    "sample_table_markdown",
    "write_study_report",
]

#: First line of the study's report.md when a fit failed its convergence gate.
FAILED_STUDY_MARKER = "# FAILED: a fit failed its convergence gate — do not use its estimates"
PAPER = (
    "Sagui-Henson et al. (2022), J. Technol. Behav. Sci. 7(4), 439–450, "
    "doi:10.1007/s41347-022-00263-5"
)
#: The study's questions as the paper put them (its aims), keyed as :data:`alliance_bayes.study.
#: QUESTIONS`.
QUESTION_TEXT: dict[str, tuple[str, str]] = {
    "ratings": (
        "Question 1: how clients rated the alliance",
        "Participants' ratings of the components of the alliance with their providers, across "
        "demographics (age, country, baseline well-being) and care types (therapist, coach, both).",
    ),
    "change": (
        "Question 2: change among clients who began care elevated",
        "Changes in well-being (WHO-5) and depressive symptoms (PHQ-9) among clients who began "
        "care with elevated symptoms, the regression to the mean separated out.",
    ),
    "association": (
        "Question 3: alliance and change",
        "The association of the alliance with well-being (WHO-5) and depressive symptoms (PHQ-9) "
        "at follow-up, adjusted for baseline.",
    ),
}
_FIGURES_OF_FAMILY = {
    "ratings": ("item_characteristic_curves", "rating_ppc"),
    "change": ("ppc",),
    "regression": ("forest_subscales", "conditional_effects"),
}


# --- fits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOutcome:
    """What the study's report needs of one fit (the draws stay in its bundle).

    Attributes
    ----------
    spec, family, description : str
        The spec's name, its model family (``ratings``, ``change``, ``regression``) and its
        description.
    passed : bool
        The fit's convergence gate.
    headline : str
        :meth:`~alliance_bayes.diagnostics.GateResult.headline`.
    summary : pandas.DataFrame
        :meth:`~alliance_bayes.result.Fit.summary` (index: estimand).
    hypotheses : pandas.DataFrame or None
        The spec's hypotheses decided (:meth:`~alliance_bayes.result.Fit.hypotheses`).
    meta : mapping
        The fit's provenance (``run.json``).
    bundle : pathlib.Path or None
        The fit's results bundle.
    """

    spec: str
    family: str
    description: str
    passed: bool
    headline: str
    summary: pd.DataFrame
    hypotheses: pd.DataFrame | None
    meta: Mapping[str, Any]
    bundle: Path | None = None

    @classmethod
    def of(cls, fit) -> FitOutcome:
        """From a :class:`~alliance_bayes.result.Fit` (saved, so that its bundle is known)."""
        return cls(
            spec=fit.spec.name,
            family=str(fit.meta.get("family", "")),
            description=fit.spec.description,
            passed=bool(fit.passed),
            headline=fit.gate.headline(),
            summary=fit.summary(),
            hypotheses=fit.hypotheses() if fit.spec.hypotheses.tests else None,
            meta=dict(fit.meta),
            bundle=fit.path,
        )


def _cell(summary: pd.DataFrame, name: str) -> str:
    """``mean [low, high]`` rounded by the mean's Monte Carlo error, or ``—`` when absent."""
    return estimate_cell(summary.loc[name]) if name in summary.index else "—"


def _decision(outcome: FitOutcome, statement: str) -> str:
    h = outcome.hypotheses
    if h is None or h.empty or statement not in set(h["hypothesis"]):
        return "not among the spec's hypotheses"
    row = h[h["hypothesis"] == statement].iloc[0]
    return f"{row['decision']} (`{statement}`)"


def _estimand_rows(
    outcome: FitOutcome, names: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[list[str]]:
    labels = {**_LABELS, **(labels or {})}
    return [
        [
            f"{labels.get(n) or estimand_label(n)} (`{n}`)",
            _cell(outcome.summary, n),
            str(outcome.summary.loc[n, "units"]),
        ]
        for n in names
        if n in outcome.summary.index
    ]


def _groups(summary: pd.DataFrame, stem: str) -> list[str]:
    """The groups ``g`` of the estimands ``<stem>[g]``, in the summary's order, ``all`` last.

    The families name their per-care-type estimands after the care types their posterior carries
    (``who5_change[therapist]``, …, ``who5_change[all]``), so these are the study's own.
    """
    head = f"{stem}["
    found = [
        str(n)[len(head) : -1]
        for n in summary.index
        if str(n).startswith(head) and str(n).endswith("]")
    ]
    return [*(g for g in found if g != "all"), *(["all"] if "all" in found else [])]


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).absolute(), Path(start).absolute())).as_posix()


def _fit_heading(outcome: FitOutcome, final: Path) -> list[str]:
    lines = [f"### `{outcome.spec}`: {outcome.description}", ""]
    if not outcome.passed:
        lines += [
            f"**FAILED convergence gate — do not use these estimates.** {outcome.headline}",
            "",
        ]
    else:
        lines += [f"{outcome.headline}.", ""]
    if outcome.bundle is not None:
        rel = _relative(outcome.bundle, final)
        lines += [
            f"Results bundle (BARG report, draws, diagnostics): [{rel}/report.md]({rel}/report.md)"
            f" · [report.html]({rel}/report.html) · [folder]({rel}/)",
            "",
        ]
    n = outcome.meta.get("n_clients")
    if n is not None:
        lines += [f"{n:,} clients in the likelihood; the bundle's `## Clients` says who.", ""]
    return lines


def _copied_figures(outcome: FitOutcome, tmp: Path) -> list[str]:
    """The fit's key figures, copied under ``figures/<spec>/`` so that report.html embeds them."""
    if outcome.bundle is None:
        return []
    lines = []
    for name in _FIGURES_OF_FAMILY.get(outcome.family, ()):
        source = Path(outcome.bundle) / "figures" / f"{name}.png"
        if not source.is_file():
            continue
        (tmp / "figures" / outcome.spec).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp / "figures" / outcome.spec / source.name)
        lines += [f"![{outcome.spec}: {name}](figures/{outcome.spec}/{source.name})", ""]
    if lines:
        lines.insert(
            0, f"Figures of `{outcome.spec}` (every figure is in its bundle's `figures/`):"
        )
        lines.insert(1, "")
    return lines


def _hypotheses(outcome: FitOutcome) -> list[str]:
    if outcome.hypotheses is None or outcome.hypotheses.empty:
        return ["The spec declares no hypotheses.", ""]
    return [
        f"Hypotheses of `{outcome.spec}`:",
        "",
        *hypotheses_markdown(outcome.hypotheses, outcome.meta),
    ]


# --- question 1 ----------------------------------------------------------------------------------

#: The rows of question 1 after the care types' levels and contrasts (:func:`_alliance_cares`).
_RATINGS_ROWS = (
    "alliance_per_decade_age", "alliance_per_10_who5_baseline", "alliance[male-not_male]",
    "sd_country_alliance", "alliance_per_session", "share_at_ceiling", "sd_provider_alliance",
    "icc_provider_alliance",
)  # fmt: skip
_LABELS = {
    "alliance_per_decade_age": "Per decade of age",
    "alliance_per_10_who5_baseline": "Per 10 WHO-5 points at baseline",
    "alliance[male-not_male]": "Male vs not male",
    "sd_country_alliance": "SD across countries",
    "alliance_per_session": "Per session (session order)",
    "share_at_ceiling": "Share of ratings at 5",
    "sd_provider_alliance": "SD across providers",
    "icc_provider_alliance": "Provider ICC (latent scale)",
}
#: The abstract's claims about the alliance, the statements that test them (ROPE equivalence) and
#: the ratings model's covariate behind each (``country``: the country effects), which a study may
#: not have measured (``covariates_not_measured`` in the fit's scales).
_RATINGS_CLAIMS = (
    (
        "did not differ by age",
        "alliance_per_decade_age",
        "alliance_per_decade_age = 0",
        "age_decade",
    ),
    ("did not differ by country", "sd_country_alliance", "sd_country_alliance = 0", "country"),
    (
        "did not differ by baseline well-being",
        "alliance_per_10_who5_baseline",
        "alliance_per_10_who5_baseline = 0",
        "who5_baseline_10",
    ),
)
#: A built-in covariate of the ratings model as the report names it where it was not measured.
_NOT_MEASURED = {
    "age_decade": "age (`age`)",
    "male": "sex (`sex`)",
    "who5_baseline_10": "baseline WHO-5 (`who5_baseline`)",
    "country": "country (`country`)",
}


_NAME = r"[a-z][a-z0-9_]*"
_ALLIANCE = re.compile(rf"alliance\[(?P<care>{_NAME})(?:-(?P<reference>{_NAME}))?\]")


def _alliance_cares(summary: pd.DataFrame) -> tuple[list[str], list[tuple[str, str]]]:
    """The care types of the ratings family's levels ``alliance[<care type>]`` and its care-type
    contrasts ``alliance[<care type>-<reference>]``, in the summary's order.

    A contrast is one between two of the levels, which leaves out other contrasts in the same
    form (``alliance[male-not_male]``).
    """
    found = [m for n in summary.index if (m := _ALLIANCE.fullmatch(str(n)))]
    levels = [m["care"] for m in found if m["reference"] is None]
    contrasts = [
        (m["care"], m["reference"])
        for m in found
        if m["reference"] is not None and m["care"] in levels and m["reference"] in levels
    ]
    return levels, contrasts


def _rating_scale(outcome: FitOutcome) -> RatingScale:
    """The ratings' scale: the contract's 1–5 items, or the study's declared instrument."""
    return RatingScale.of_scales((outcome.meta or {}).get("scales") or {})


def _on_published_scale(outcome: FitOutcome) -> bool:
    """Whether the ratings are on the 1–5 items of the paper, whose published median is 4.8."""
    scale = _rating_scale(outcome)
    return (scale.low, scale.high) == (1, 5)


def _declared_covariate_labels(outcome: FitOutcome) -> dict[str, str]:
    """Row labels of the ratings estimands of the study's declared covariates, by estimand name,
    as the paper tables write them (:func:`~alliance_bayes.report.tables.declared_covariate_labels`,
    from the fit's ``covariate_coding``)."""
    coding = ((outcome.meta or {}).get("scales") or {}).get("covariate_coding") or {}
    return {
        name: label
        for name, label in declared_covariate_labels(coding).items()
        if name.startswith("alliance_")
    }


#: What the ratings family's intervals of the care-type and covariate rows are (docs/models.md).
RESTRICTED_INTERVALS = (
    "The care-type contrasts' and covariates' intervals are in-sample: the ratings model draws "
    "its client effects orthogonal to these terms and its provider effects centred within their "
    "type (a restricted regression), which leaves the clients' and providers' own variation out "
    "of them; read them as descriptions of these clients, narrower than population intervals "
    "(see docs/models.md, known limitation of `alliance_ratings`)."
)


def _ratings_section(outcome: FitOutcome, observed_median: float | None) -> list[str]:
    s = outcome.summary
    scale = _rating_scale(outcome)
    top = str(scale.high)
    levels, contrasts = _alliance_cares(s)
    labels = {f"alliance[{c}]": care_title(care_phrase(c)) for c in levels}
    labels["share_at_ceiling"] = f"Share of ratings at {top}"
    labels |= {
        f"alliance[{c}-{ref}]": f"{care_title(c)} vs {care_words(ref)}" for c, ref in contrasts
    }
    declared = _declared_covariate_labels(outcome)
    # the declared covariates' rows follow the built-in covariates'
    names = [*labels, *_RATINGS_ROWS[:3], *declared, *_RATINGS_ROWS[3:]]
    scales = (outcome.meta or {}).get("scales") or {}
    not_measured = list(scales.get("covariates_not_measured") or [])
    lines = [
        f"Expected rating of a typical session on the {scale.name} scale (goal and bond averaged):",
        "",
    ]
    lines += markdown_table(
        ["Estimand", "Mean [95% HDI]", "Units"],
        _estimand_rows(outcome, names, labels | declared),
    )
    lines += ["", RESTRICTED_INTERVALS]
    if not_measured:
        lines += [
            "",
            "Not measured in this study, so left out of the ratings model: "
            + ", ".join(_NOT_MEASURED.get(k, f"`{k}`") for k in not_measured)
            + ".",
        ]
    observed = "—" if observed_median is None else f"{observed_median:.2f} (Table 1, all)"
    model = ", ".join(f"{care_words(c)} {_cell(s, f'alliance[{c}]')}" for c in levels or CARE_TYPES)
    rows = (
        [
            [
                "Median client alliance score",
                f"{PUBLISHED_ALLIANCE_MEDIAN}",
                f"observed in these data: {observed}; model (expected session rating): {model}",
                "a data summary, no decision",
            ]
        ]
        if _on_published_scale(outcome)  # the paper's median is of 1–5 items
        else []
    )
    rows += [
        [
            f"Alliance {claim}",
            "no difference (abstract)",
            f"not measured: the study has no {_NOT_MEASURED.get(str(covariate), covariate)} "
            f"values, so the model has no `{name}`",
            "not measured",
        ]
        if covariate in not_measured
        else [
            f"Alliance {claim}",
            "no difference (abstract)",
            "not estimable: the study has one country, so the model has no country effects",
            "not estimable",
        ]
        if covariate == "country" and name not in s.index
        else [
            f"Alliance {claim}",
            "no difference (abstract)",
            f"`{name}` {_cell(s, name)}",
            _decision(outcome, statement),
        ]
        for claim, name, statement, covariate in _RATINGS_CLAIMS
    ]
    lines += [
        "",
        f"Published beside this posterior ({PAPER}, abstract):",
        "",
        *markdown_table(["Published", "Value", "This reanalysis", "Decision"], rows),
        "",
        f"The published {PUBLISHED_ALLIANCE_MEDIAN} is the median of the clients' mean scores; "
        "the model's levels are "
        "expected ratings of a typical session (client and provider effects integrated out): a "
        "mean, which in ratings piled at the ceiling lies below their median. The abstract's "
        "no-difference claims are decided as equivalence within the spec's ROPE.",
        "",
    ]
    return lines


# --- question 2 ----------------------------------------------------------------------------------

_CHANGE_MEASURES = (
    ("{p}_change", "Observed change"),
    ("{p}_change_beyond_rtm", "Change beyond the regression to the mean"),
    ("rtm", "Regression to the mean"),
    ("{p}_change_d", "Observed change (SD units)"),
    ("reliably_improved", "Reliably improved (share)"),
    ("recovered", "Recovered (share)"),
    ("reliably_deteriorated", "Reliably deteriorated (share)"),
)
_COMPANION = COMPANION_WHO5_CHANGE


_SCALE = {"who5": "WHO-5", "phq9": "PHQ-9"}


def _prefix(outcome: FitOutcome) -> str:
    return "phq9" if str(outcome.meta.get("outcome", "")).startswith("phq9") else "who5"


def _change_section(outcome: FitOutcome) -> list[str]:
    p, s = _prefix(outcome), outcome.summary
    groups = _groups(s, f"{p}_change")
    rows = []
    for stem, label in _CHANGE_MEASURES:
        name = stem.format(p=p)
        rows.append([f"{label} (`{name}[·]`)", *(_cell(s, f"{name}[{g}]") for g in groups)])
    lines = [
        f"Among the clients elevated at baseline; change in {_SCALE[p]} points "
        "(follow-up minus baseline"
        + ("; improvement is a fall in PHQ-9" if p == "phq9" else "")
        + "), by care type; `all` weighs care types by their elevated clients:",
        "",
        *markdown_table(
            ["Estimand", *(care_title(g) for g in groups)],
            rows,
            numeric=[False] + [True] * len(groups),
        ),
        "",
    ]
    if p == "who5":
        lines += [
            f"Published: the paper's numbers for this question could not be retrieved. Context, "
            f"not this study: {_COMPANION}; this reanalysis: `who5_change[all]` "
            f"{_cell(s, 'who5_change[all]')}, `who5_change_d[all]` {_cell(s, 'who5_change_d[all]')}.",
            "",
        ]
    else:
        lines += ["Published: the paper's PHQ-9 numbers could not be retrieved.", ""]
    return lines


# --- question 3 ----------------------------------------------------------------------------------


def _slope_names(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(subscale, level) pairs of the pooled slopes ``b_<s>_<level>``, in table order."""
    pairs = []
    for s in ("goal", "bond", "task"):
        for lv in ("within", "between"):
            if f"b_{s}_{lv}" in summary.index or _slope_cares(summary, [(s, lv)]):
                pairs.append((s, lv))
    return pairs


def _slope_cares(summary: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The care types of the slopes ``b_<s>_<level>[<care type>]`` (contrasts left out)."""
    found = (g for s, lv in pairs for g in _groups(summary, f"b_{s}_{lv}"))
    return list(dict.fromkeys(g for g in found if "-" not in g))


def _association_section(outcome: FitOutcome) -> list[str]:
    s = outcome.summary
    pairs = _slope_names(s)
    # A model without per-care-type slopes keeps the contract's columns, each "—".
    cares = _slope_cares(s, pairs) or list(CARE_TYPES)
    rows = [
        [
            f"{sub}, {lv} providers (`b_{sub}_{lv}`)",
            *(_cell(s, f"b_{sub}_{lv}[{c}]") for c in cares),
            _cell(s, f"b_{sub}_{lv}"),
        ]
        for sub, lv in pairs
    ]
    units = str(outcome.meta.get("effect_units", "outcome points per alliance point"))
    lines = [f"Alliance slopes ({units}), by care type and pooled over the study's care mix:", ""]
    if rows:
        lines += markdown_table(
            ["Slope", *(care_title(c) for c in cares), "Pooled"],
            rows,
            numeric=[False] + [True] * (len(cares) + 1),
        )
    if "b_alliance" in s.index:
        lines += [
            "",
            *markdown_table(
                ["Estimand", "Mean [95% HDI]", "Units"], _estimand_rows(outcome, ["b_alliance"])
            ),
        ]
    contrasts = [
        n for n in s.index if n.endswith("_within-between") or n.startswith("b_goal-bond_")
    ]
    if contrasts:
        lines += [
            "",
            *markdown_table(
                ["Contrast", "Mean [95% HDI]", "Units"], _estimand_rows(outcome, contrasts)
            ),
        ]
    lines.append("")
    if _prefix(outcome) == "who5":
        lines += _table2(outcome)
    else:
        lines += ["Published: the paper reported no PHQ-9 association.", ""]
    return lines


def _table2(outcome: FitOutcome) -> list[str]:
    """The paper's Table 2 beside this fit's matching estimands."""
    published = PUBLISHED["sagui_henson_2022_table2"]
    s = outcome.summary
    rows = []
    for name, label, b, _beta, low, high in published["rows"]:
        if name == "intercept":  # centred differently in every model: not comparable
            continue
        if name == "b_alliance" and name not in s.index:
            ours = "; ".join(
                f"`b_{sub}_{lv}` {_cell(s, f'b_{sub}_{lv}')}" for sub, lv in _slope_names(s)
            )
        else:
            ours = f"`{name}` {_cell(s, name)}"
        rows.append([label, f"{b:g} [{low:g}, {high:g}]", ours or "—"])
    n = outcome.meta.get("n_clients", "?")
    return [
        f"Published beside this posterior: {published['citation']}.",
        "",
        *markdown_table(
            ["Predictor", "Published b [95% CI]", "This reanalysis: mean [95% HDI]"], rows
        ),
        "",
        f"Not the same analysis: the paper's OLS used one composite alliance score in the 675 "
        f"clients elevated at baseline; `{outcome.spec}` ({n} clients) splits goal and bond into "
        "within- and between-provider parts, with provider effects. The paper's own model on "
        "these data is `alliance-bayes fit paper_table2`, whose report sets Table 2 beside it "
        "row by row.",
        "",
    ]


# --- figures drawn from the summaries ---------------------------------------------------------------


def _figure_alliance(outcome: FitOutcome, table1: pd.DataFrame, folder: Path) -> str | None:
    import matplotlib.pyplot as plt

    s = outcome.summary
    cares = _alliance_cares(s)[0]
    if not cares:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 2.9))
    y = np.arange(len(cares))[::-1]
    for yi, c in zip(y, cares, strict=True):
        r = s.loc[f"alliance[{c}]"]
        ax.plot([r["hdi95_low"], r["hdi95_high"]], [yi, yi], color="C0", lw=2)
        ax.plot(
            r["mean"],
            yi,
            "o",
            color="C0",
            label="model: expected session rating" if yi == y[0] else None,
        )
        known = "alliance_median" in table1.index and c in table1.columns
        median = table1.loc["alliance_median", c] if known else np.nan
        if np.isfinite(median):
            ax.plot(
                median, yi, "x", color="C1", label="observed client median" if yi == y[0] else None
            )
    if _on_published_scale(outcome):
        ax.axvline(
            PUBLISHED_ALLIANCE_MEDIAN,
            color="grey",
            ls="--",
            lw=1,
            label=f"published median {PUBLISHED_ALLIANCE_MEDIAN}",
        )
    ax.set_yticks(y, [care_words(c) for c in cares])
    ax.set_ylim(-0.6, len(cares) - 0.4)
    ax.set_xlabel(f"alliance ({_rating_scale(outcome).name}), posterior mean and 95% HDI")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    fig.tight_layout()
    name = "alliance_by_care.png"
    fig.savefig(folder / name, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return name


def _figure_change(outcomes: Sequence[FitOutcome], folder: Path) -> str | None:
    import matplotlib.pyplot as plt

    panels = [o for o in outcomes if o.family == "change"]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.2), squeeze=False)
    for ax, o in zip(axes[0], panels, strict=True):
        p, s = _prefix(o), o.summary
        groups = _groups(s, f"{p}_change")
        y = np.arange(len(groups))[::-1]
        beyond = np.array([s.loc[f"{p}_change_beyond_rtm[{g}]", "mean"] for g in groups])
        rtm = np.array([s.loc[f"rtm[{g}]", "mean"] for g in groups])
        ax.barh(y, beyond, color="C0", label="beyond the RTM")
        ax.barh(y, rtm, left=beyond, color="C7", label="regression to the mean")
        for yi, g in zip(y, groups, strict=True):
            r = s.loc[f"{p}_change[{g}]"]
            ax.plot([r["hdi95_low"], r["hdi95_high"]], [yi, yi], color="k", lw=1)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_yticks(y, [care_words(g) for g in groups])
        ax.set_title(f"{o.spec}: {_SCALE[p]} change", fontsize=9)
        ax.set_xlabel("points (bar: mean; line: 95% HDI of the observed change)", fontsize=8)
    axes[0, 0].legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False
    )
    fig.tight_layout()
    name = "change_by_care.png"
    fig.savefig(folder / name, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return name


# --- the report ----------------------------------------------------------------------------------


def _metadata(
    run_id: str, meta: Mapping[str, Any], outcomes: Sequence[FitOutcome], final: Path
) -> list[str]:
    lines = ["## Run", "", "| Fact | Value |", "|---|---|"]
    for key in (
        "run_id",
        "created_utc",
        "questions",
        "data_sha256",
        "n_clients",
        "overrides",
        "git_commit",
        "platform",
    ):
        if key in meta:
            value = meta[key]
            if isinstance(value, Mapping):
                value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
            elif isinstance(value, list | tuple):
                value = ", ".join(map(str, value))
            lines.append(f"| {key} | `{value}` |")
    packages = meta.get("packages")
    if isinstance(packages, Mapping):
        lines.append("| packages | " + ", ".join(f"{k}={v}" for k, v in packages.items()) + " |")
    lines += [
        "",
        "Fits (each has its own bundle, with the model, priors, diagnostics and BARG checklist):",
        "",
    ]
    rows = []
    for o in outcomes:
        m = o.meta
        link = "—"
        if o.bundle is not None:
            rel = _relative(o.bundle, final)
            link = f"[{Path(rel).name}]({rel}/report.md)"
        wall = (m.get("timings_s") or {}).get("wall_total")
        rows.append(
            [
                f"`{o.spec}`",
                str(m.get("n_clients", "—")),
                f"{m.get('sampler', '?')}, {m.get('chains', '?')} × {m.get('draws', '?')} "
                f"(tune {m.get('tune', '?')})",
                str(m.get("seed", "—")),
                "PASSED" if o.passed else "FAILED",
                "—" if wall is None else f"{wall:.0f}",
                link,
            ]
        )
    lines += markdown_table(
        ["Spec", "Clients", "Sampler, chains × draws", "Seed", "Gate", "Wall s", "Bundle"], rows
    )
    return [*lines, ""]


def _report_md(
    run_id: str,
    meta: Mapping[str, Any],
    table1: pd.DataFrame,
    sections: Mapping[str, Sequence[FitOutcome]],
    tmp: Path,
    final: Path,
) -> str:
    outcomes = [o for fits in sections.values() for o in fits]
    failed = [o.spec for o in outcomes if not o.passed]
    lines = []
    if failed:
        lines += [FAILED_STUDY_MARKER, "", f"Failed: {', '.join(f'`{s}`' for s in failed)}.", ""]
    lines += [f"# The study: `{run_id}`", ""]
    lines += [
        f"**Study: {'FAILED' if failed else 'PASSED'}** — {len(outcomes) - len(failed)} of "
        f"{len(outcomes)} fits passed their convergence gate"
        + ("" if failed else "; every estimate below may be used")
        + ".",
        "",
        f"A reanalysis of {PAPER}: its three questions, each answered by the fits below.",
        "",
    ]
    missing = [k for k in QUESTION_TEXT if k not in sections]
    if missing:
        lines += [
            "Not run this time: " + "; ".join(QUESTION_TEXT[k][0] for k in missing) + ".",
            "",
        ]
    lines += _metadata(run_id, meta, outcomes, final)
    lines += ["## Table 1: the sample", "", *sample_table_markdown(table1)]
    figures = tmp / "figures"
    figures.mkdir(exist_ok=True)
    median = table1.loc["alliance_median", "all"] if "alliance_median" in table1.index else None
    for key, fits in sections.items():
        title, aim = QUESTION_TEXT[key]
        lines += [f"## {title}", "", aim, ""]
        if key == "change" and (name := _figure_change(fits, figures)):
            lines += [
                f"![Change by care type](figures/{name})",
                "",
                "The bar is the expected observed change of the elevated, split into the change "
                "beyond the regression to the mean and the regression to the mean (RTM); the line "
                "is the 95% HDI of the observed change.",
                "",
            ]
        for o in fits:
            lines += _fit_heading(o, final)
            if o.family == "ratings":
                lines += _ratings_section(o, None if median is None else float(median))
                if name := _figure_alliance(o, table1, figures):
                    lines += [
                        f"![Alliance by care type](figures/{name})",
                        "",
                        "Posterior mean and 95% HDI of the expected session rating per care "
                        "type, the observed median of the clients' scores (Table 1) and the "
                        "published median.",
                        "",
                    ]
            elif o.family == "change":
                lines += _change_section(o)
            else:
                lines += _association_section(o)
            lines += _hypotheses(o)
            lines += _copied_figures(o, tmp)
    lines += [
        "## Files",
        "",
        "`report.html` (this report, self-contained), `run.json` (provenance), `table1.csv` "
        "(Table 1's numbers), `estimands.csv` (every fit's summary, full precision, with a `spec` "
        "column), `hypotheses.csv`, `figures/`. The draws, diagnostics and the BARG report of "
        "each fit are in its own bundle, linked above.",
        "",
    ]
    return "\n".join(lines)


def write_study_report(
    results_root: str | os.PathLike[str],
    run_id: str,
    *,
    table1: pd.DataFrame,
    sections: Mapping[str, Sequence[FitOutcome]],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``<results_root>/study/<run_id>/`` atomically and return it.

    Parameters
    ----------
    results_root : path
        The results root holding the fits' bundles (``results/``).
    run_id : str
        The folder's name.
    table1 : pandas.DataFrame
        :func:`sample_characteristics` of the study.
    sections : mapping
        Question key (:data:`QUESTION_TEXT`) to its fits, in report order.
    meta : mapping
        The study run's provenance (written as ``run.json``, with each fit's verdict and bundle).

    Raises
    ------
    FileExistsError
        The folder exists already.
    """
    unknown = [k for k in sections if k not in QUESTION_TEXT]
    if unknown:
        raise ValueError(f"unknown questions {unknown}; known: {sorted(QUESTION_TEXT)}")
    parent = Path(results_root) / "study"
    final = parent / run_id
    outcomes = [o for fits in sections.values() for o in fits]
    with atomic_folder(parent, run_id) as tmp:
        report = _report_md(run_id, meta, table1, sections, tmp, final)
        (tmp / "report.md").write_text(report, encoding="utf-8")
        page = markdown_to_html(report, tmp, f"study / {run_id}")
        (tmp / "report.html").write_text(page, encoding="utf-8")
        table1.rename_axis("quantity").to_csv(tmp / "table1.csv", lineterminator="\n")
        summaries = [
            o.summary.rename_axis("estimand").reset_index().assign(spec=o.spec) for o in outcomes
        ]
        if summaries:
            both = pd.concat(summaries, ignore_index=True)
            both[["spec", *both.columns[:-1]]].to_csv(
                tmp / "estimands.csv", index=False, lineterminator="\n"
            )
        decided = [o.hypotheses.assign(spec=o.spec) for o in outcomes if o.hypotheses is not None]
        if decided:
            pd.concat(decided, ignore_index=True).to_csv(
                tmp / "hypotheses.csv", index=False, lineterminator="\n"
            )
        fits = {
            o.spec: {
                "passed": o.passed,
                "headline": o.headline,
                "bundle": None if o.bundle is None else _relative(o.bundle, final),
                "seed": o.meta.get("seed"),
                "data_sha256": o.meta.get("data_sha256"),
            }
            for o in outcomes
        }
        dump_json(
            {**meta, "passed": all(o.passed for o in outcomes), "fits": fits}, tmp / "run.json"
        )
    return final
