"""Atomic write of a results folder ``results/<spec>/<run-id>/``.

Everything is written into a hidden temporary sibling (``results/<spec>/.<run-id>.partial-XXXX``)
and moved into place with a single :func:`os.replace` only when complete, so a reader never sees a
half-written run: on any exception (including ``KeyboardInterrupt``) the temporary folder is removed
and the final path does not appear. An existing run folder is never overwritten.

Contents: ``posterior.nc`` (the whole DataTree, h5netcdf), ``run.json``, ``estimands.csv`` (a plain
full-precision CSV, header first) with ``estimands.meta.json`` (what the run and each column are),
``tables.md``, ``tables.tex`` (a pdfLaTeX fragment; preamble
:data:`~alliance_bayes.report.tables.LATEX_PREAMBLE`), ``tables.docx`` (Word, where python-docx is
installed: :mod:`alliance_bayes.report.docx`), ``figures/*.png|pdf``,
``diagnostics.json``, ``diagnostics.md`` and ``report.md``.

Privacy guard: raw identifiers never pass the loader (the analysis frame carries pseudonyms only).
When ``forbidden_ids`` (the raw identifiers of the input data) is given, the id-bearing
coordinates of the DataTree (client, provider, membership) are checked against them, and every text
file of the bundle is scanned for the ids that are not plain numbers; the write is aborted
(:class:`ForbiddenIdentifierError`) on a match.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.care import care_words
from alliance_bayes.diagnostics import GateResult
from alliance_bayes.report import figures
from alliance_bayes.report.docx import docx_available, write_tables_docx
from alliance_bayes.report.estimands import HDI_PROB, estimand_table
from alliance_bayes.report.html import markdown_to_html
from alliance_bayes.report.hypotheses import hypotheses_markdown
from alliance_bayes.report.render import markdown_table
from alliance_bayes.report.tables import (
    declared_covariate_labels,
    estimand_label,
    tables_latex,
    tables_markdown,
)
from alliance_bayes.storage import atomic_folder, check_name, dump_json, write_datatree

__all__ = [
    "FAILED_MARKER",
    "BundleError",
    "ConvergenceFailedError",
    "ForbiddenIdentifierError",
    "ReportContent",
    "absent_level_sentences",
    "outcome_units_from_meta",
    "read_estimands_csv",
    "write_bundle",
]

#: First line of report.md when the gate failed.
FAILED_MARKER = "# FAILED convergence checks — do not use these estimates"

_TEXT_SUFFIXES = {".md", ".tex", ".csv", ".json", ".txt", ".html"}
_DATA_URI = re.compile(r"data:[a-z+/]+;base64,[A-Za-z0-9+/=]+")


class ForbiddenIdentifierError(RuntimeError):
    """A raw identifier would have been written into the bundle (the message never repeats it)."""


class BundleError(RuntimeError):
    """A step after sampling failed; the message names the step and where the draws were kept."""


class ConvergenceFailedError(RuntimeError):
    """The gate failed and the caller did not allow saving a failed run."""


def outcome_units_from_meta(meta: Mapping[str, Any]) -> str:
    """Outcome units from ``meta["outcome"]``: ``"WHO-5 points"``, ``"PHQ-9 points"`` or generic."""
    outcome = str(meta.get("outcome", ""))
    if outcome.startswith("who5"):
        return "WHO-5 points"
    if outcome.startswith("phq9"):
        return "PHQ-9 points"
    return "outcome points"


def _token_pattern(ids: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any id as a whole token (not inside a longer word or number)."""
    ids = sorted({str(i) for i in ids if str(i)}, key=len, reverse=True)
    if not ids:
        return None
    alt = "|".join(re.escape(i) for i in ids)
    return re.compile(rf"(?<![A-Za-z0-9_])(?:{alt})(?![A-Za-z0-9_])")


_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?")

#: Dimensions whose coordinate values name clients or providers (the only id-bearing fields).
_ID_DIMS = ("client", "provider", "membership")


def _is_id_dim(dim: str) -> bool:
    return dim in _ID_DIMS or dim.startswith("client_")


def _id_strings(dt: xr.DataTree) -> Iterable[tuple[str, str]]:
    """(where, value) for every label of an id-bearing coordinate in every group."""
    for node in dt.subtree:
        ds = node.to_dataset(inherit=False)
        for name, coord in ds.coords.items():
            if coord.ndim == 1 and _is_id_dim(str(coord.dims[0])):
                for x in np.ravel(coord.values):
                    yield f"{node.path}/{name}", str(x)


def _check_forbidden(pattern: re.Pattern[str] | None, where: str, text: str) -> None:
    if pattern is not None and pattern.search(text):
        # Do not echo the identifier: error messages end up in logs and CI output.
        raise ForbiddenIdentifierError(
            f"a raw identifier occurs in {where}; the bundle was not written"
        )


def _check_ids(ids: set[str], dt: xr.DataTree) -> None:
    """Every client and provider label is a pseudonym, never a raw identifier.

    Raw ids cannot reach the bundle by construction (the analysis frame carries pseudonyms only);
    this checks the id-bearing coordinates themselves, by exact match and by token, rather than
    every digit string in the file (a numeric id such as ``7`` would match timestamps and
    counts, which are not identifiers).
    """
    pattern = _token_pattern(ids)
    for where, value in _id_strings(dt):
        _check_forbidden(pattern, f"posterior.nc ({where})", value)


#: What each column of ``estimands.csv`` holds (written to ``estimands.meta.json``).
ESTIMAND_COLUMNS = {
    "estimand": "stable estimand name (cite it; tables.md and tables.tex show it beside the label)",
    "label": "the estimand in words, as the paper tables' rows read",
    "mean": "posterior mean",
    "sd": "posterior standard deviation",
    "hdi95_low": f"lower bound of the {round(HDI_PROB * 100)}% highest density interval",
    "hdi95_high": f"upper bound of the {round(HDI_PROB * 100)}% highest density interval",
    "prob_positive": "posterior probability that the estimand is positive",
    "ess_bulk": "bulk effective sample size (Vehtari et al. 2021, doi:10.1214/20-BA1221)",
    "ess_tail": "tail effective sample size, the smaller of the ESS of the 5% and 95% quantiles "
    "(Vehtari et al. 2021; ArviZ's ess(method='tail') defaults to 11% and 89%)",
    "r_hat": "rank-normalised split R-hat (Vehtari et al. 2021)",
    "mcse_mean": "Monte Carlo standard error of the mean",
    "units": "units of the estimand (alliance slopes: outcome points per alliance point)",
}


def _estimands_csv(
    table: pd.DataFrame, meta: Mapping[str, Any], gate: GateResult, path: Path
) -> None:
    """``estimands.csv`` (the :func:`estimand_table`), a plain CSV whose first line is its header
    (full precision), and beside it ``estimands.meta.json``: what the run and each column are
    (``run.json`` has the rest). Each row has its stable name (``estimand``) and the paper tables'
    label in words (``label``, :func:`~alliance_bayes.report.tables.estimand_label`)."""
    coding = (meta.get("scales") or {}).get("covariate_coding") or {}
    declared = declared_covariate_labels(coding)
    table = table.copy()
    table.insert(1, "label", [estimand_label(str(n), declared) for n in table["estimand"]])
    path.write_text(table.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
    sidecar = {
        "description": "alliance-bayes estimands (full precision; machine-readable)",
        "spec": meta.get("spec", ""),
        "outcome": meta.get("outcome_label", meta.get("outcome", "")),
        "effect_units": meta.get("effect_units", ""),
        "interval": f"{round(HDI_PROB * 100)}% highest density interval",
        "chains": gate.chains,
        "draws_per_chain": gate.draws,
        "convergence": "PASSED" if gate.passed else "FAILED",
        "columns": {c: ESTIMAND_COLUMNS.get(c, "") for c in table.columns},
    }
    dump_json(sidecar, path.with_name("estimands.meta.json"))


def read_estimands_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a bundle's ``estimands.csv``; the ``#`` lines that opened older bundles are skipped."""
    with open(path, encoding="utf-8") as f:
        skip = 0
        for line in f:
            if not line.startswith("#"):
                break
            skip += 1
    return pd.read_csv(path, skiprows=skip)


@dataclass
class ReportContent:
    """What the report says beyond the draws, supplied by the model family and the spec.

    ``equations`` (TeX lines) and ``data_variables`` (Markdown) for ``## Model``; ``prior_rows``
    (:class:`~alliance_bayes.model.regression.describe.PriorRow`) for ``## Priors``;
    ``prior_estimands`` (the estimands under the prior draws) for the prior-versus-posterior plot;
    ``hypotheses`` (:func:`~alliance_bayes.report.hypotheses.hypothesis_table`) for the decisions.
    """

    equations: list[str] = field(default_factory=list)
    data_variables: list[str] = field(default_factory=list)
    prior_rows: list[Any] = field(default_factory=list)
    prior_estimands: xr.Dataset | None = None
    hypotheses: pd.DataFrame | None = None
    description: str = ""


def _figure_lines(figs: list[figures.FigureResult], section: str) -> list[str]:
    """A section's figures: ``### Figure N. Title``, the image, and the caption (what the figure
    shows and how to read it, then what this run's numbers say), numbered through the report
    (:func:`~alliance_bayes.report.figures.figure_numbers`); a figure not drawn keeps its plain
    title and says why."""
    numbers = figures.figure_numbers(figs)
    lines: list[str] = []
    for f in figs:
        if f.section != section:
            continue
        if not f.paths:  # a figure that cannot be drawn for this run says why
            lines += [f"### {f.title}", "", f.interpretation, "", *f.table]
            continue
        label = f"Figure {numbers[f.name]}. {f.title}"
        png = next((p for p in f.paths if p.suffix == ".png"), f.paths[0])
        caption = " ".join(part for part in (f.caption, f.interpretation) if part)
        lines += [f"### {label}", "", f"![{f.title}](figures/{png.name})", ""]
        lines += [f"**Figure {numbers[f.name]}.** {caption}", "", *f.table]
    return lines


_FACTS = (
    "spec", "outcome", "outcome_label", "effect_units", "sampler", "backend", "seed", "chains",
    "draws", "tune", "likelihood_form", "sampled_providers", "pointwise_clients", "data_sha256",
    "git_commit",
)  # fmt: skip


def _model_section(content: ReportContent, meta: Mapping[str, Any]) -> list[str]:
    lines = ["## Model", ""]
    if content.description:
        lines += [content.description, ""]
    if content.data_variables:
        lines += [*(f"- {v}" for v in content.data_variables), ""]
    if content.equations:
        lines += [*(f"$${e}$$" for e in content.equations), ""]
        scale = RecordedScale.of(meta.get("scales")).name
        lines += [
            "Rendered from the spec as run (`run.json`: `spec_as_run`, `spec_toml`). Slopes are "
            "reported per raw unit of their predictor (alliance: per point of the "
            f"{scale} scale), the standardised β per SD of predictor and "
            "outcome.",
            "",
        ]
    return [*lines, *_clients_section(meta)]


def _alliance_lines(meta: Mapping[str, Any]) -> list[str]:
    """The study's declared alliance instrument (``scales.alliance_instrument``), if any: what
    was read, how a session was scored, the partly rated sessions and the prior scaling."""
    declared = RecordedScale.of(meta.get("scales")).record
    if not declared:
        return []
    items = "; ".join(f"{s}: {', '.join(c)}" for s, c in declared.get("subscales", {}).items())
    how = (
        "a session's subscale score is the mean of its rated items"
        if declared.get("scored") == "items"
        else "the sessions hold pre-scored subscale means"
    )
    lines = [
        f"Alliance instrument declared by the study: {declared.get('scale')} ({items}); {how}"
        + (f"; reversed items: {', '.join(declared['reverse'])}" if declared.get("reverse") else "")
        + (f". Source: {declared['source']}" if declared.get("source") else "")
        + ".",
        "",
    ]
    partial = {s: n for s, n in (declared.get("partially_rated_sessions") or {}).items() if n}
    if partial:
        counts = ", ".join(f"{s} {n}" for s, n in partial.items())
        lines += [
            "Sessions with some but not all of a subscale's items rated (scored as the mean of "
            f"the rated items), in the study: {counts}.",
            "",
        ]
    factor = declared.get("prior_factor", 1.0)
    if factor != 1.0:
        lines += [
            "Prior scales per alliance point (`b_alliance_sd`, `mu_b_sd`, `sd_b_sd`, "
            f"`sd_provider_slope_sd`) are the spec's, stated on the 1–5 scale, times {factor:.3g} "
            f"(4 over the width of the {declared.get('scale')} scale).",
            "",
        ]
    return lines


def _priors_section(content: ReportContent, figs: list[figures.FigureResult]) -> list[str]:
    lines = ["## Priors", ""]
    if content.prior_rows:
        lines += markdown_table(
            ["Parameter", "Prior", "On the data's scale", "Justification"],
            [
                [r.parameter, r.distribution, r.on_data_scale, r.justification]
                for r in content.prior_rows
            ],
        )
        lines.append("")
    return lines + _figure_lines(figs, "priors")


def _computation_section(
    meta: Mapping[str, Any], gate: GateResult, figs: list[figures.FigureResult]
) -> list[str]:
    lines = ["## Computation", "", "| Fact | Value |", "|---|---|"]
    lines += [f"| {k} | `{meta[k]}` |" for k in _FACTS if k in meta]
    for k in ("packages", "timings_s"):
        if isinstance(meta.get(k), Mapping):
            val = ", ".join(
                f"{a}={b:.1f}" if isinstance(b, float) else f"{a}={b}" for a, b in meta[k].items()
            )
            lines.append(f"| {k} | {val} |")
    if isinstance(meta.get("imputation"), Mapping):
        imp = meta["imputation"]
        per_point = ""
        if imp.get("delta_alliance"):
            applied, scale = imp.get("delta_alliance_applied"), imp.get("delta_alliance_scale")
            per_point = f" plus {applied:g} per point of the client's alliance above the mean"
            if scale and applied != imp["delta_alliance"]:
                per_point += (
                    f" on the {scale} scale (stated {imp['delta_alliance']:g} per 1–5 point)"
                )
        lines.append(
            f"| imputation | {imp.get('imputations')} completed datasets, δ = "
            f"{imp.get('delta')} points{per_point}, {imp.get('clients_imputed')} follow-ups "
            "imputed |"
        )
    lines += ["", f"**{gate.headline()}**", "", "| Check | Worst value | Threshold | Passed |"]
    lines.append("|---|---:|---:|---|")
    for c in gate.checks:
        value = "n/a" if c.value is None else f"{c.value:.4g}"
        lines.append(f"| {c.name} | {value} | {c.threshold:g} | {'yes' if c.passed else 'NO'} |")
    for w in gate.warnings:
        verdict = "none flagged" if w.passed else "FLAGGED"
        lines.append(f"\n*Warning, not part of the verdict* ({w.name}): {verdict}. {w.note}")
    lines += ["", "Every check and its worst offenders: `diagnostics.md`.", ""]
    return lines + _figure_lines(figs, "computation")


def _barg_checklist(trust: list[str], content: ReportContent, figs) -> list[str]:
    """Each BARG step (Kruschke 2021, Table 1) with where this report answers it."""
    names = {f.name for f in figs if f.paths}

    def status(line_start: str) -> str:
        line = next((ln for ln in trust if ln.startswith(line_start)), "")
        return (
            "not run yet (see ## Sensitivity)"
            if "not run yet" in line or not line
            else "## Sensitivity"
        )

    has_h = content.hypotheses is not None and not content.hypotheses.empty
    items = [
        ("1.A Data variables (predicted, predictors)", "## Model (symbols), ## Clients"),
        ("1.B Likelihood and its parameters", "## Model (equations)"),
        ("1.C Priors, with justification", "## Priors (table)"),
        ("1.D Formal specification", "## Model, ## Priors; the spec as run in `run.json`"),
        (
            "1.E Prior predictive check",
            "## Priors (prior_predictive)" if "prior_predictive" in names else "not drawn",
        ),
        ("2.A Software and versions", "## Computation (packages, sampler, backend, seed)"),
        ("2.B MCMC convergence (R-hat, divergences)", "## Computation; `diagnostics.md`"),
        ("2.C MCMC resolution (ESS, MCSE)", "## Computation; `estimands.csv` (ESS, MCSE)"),
        (
            "3.A Posterior predictive check",
            "## Posterior predictive checks" if "ppc" in names else "not drawn for this run",
        ),
        ("3.B Posterior summaries (central tendency, HDI)", "## Results (tables, figures)"),
        (
            "3.C Bayes factors and model probabilities",
            "## Results (Hypotheses: Savage–Dickey BF01)" if has_h else "none declared in the spec",
        ),
        (
            "4 Decisions and their criteria (ROPE, probability)",
            "## Results (Hypotheses: ROPE, decision rule)"
            if has_h
            else "none declared in the spec",
        ),
        ("5.A Sensitivity of the posterior to the prior", status("- Prior sensitivity")),
        (
            "5.B Sensitivity of Bayes factors to the prior",
            "refit the prior sets (## Sensitivity) and rerun `alliance-bayes hypothesis`"
            if has_h
            else "not applicable: no Bayes factor reported",
        ),
        ("6.A Code", "`run.json` (package versions, git commit, spec TOML)"),
        ("6.B Data", "`run.json` data_sha256 (the data themselves stay with their owner)"),
        ("6.C Posterior draws", "`posterior.nc` (every group)"),
    ]
    lines = [
        "## BARG checklist",
        "",
        "Bayesian Analysis Reporting Guidelines (Kruschke 2021, doi:10.1038/s41562-021-01177-7).",
        "",
    ]
    return lines + markdown_table(["Item", "Where it is answered"], [list(i) for i in items]) + [""]


def _rubin_lines(meta: Mapping[str, Any]) -> list[str]:
    """Rubin's rules over the refits of an imputed fit: the intervals to quote (see imputation)."""
    rubin = (
        (meta.get("imputation") or {}).get("rubin")
        if isinstance(meta.get("imputation"), Mapping)
        else None
    )
    if not rubin:
        return []
    table = pd.DataFrame(rubin)
    rows = [
        [
            f"`{r.estimand}`",
            f"{r.mean:.3g}",
            f"[{r.ci95_low:.3g}, {r.ci95_high:.3g}]",
            f"{r.fmi:.2f}",
        ]
        for r in table.itertuples()
    ]
    return [
        "### Multiple imputation: Rubin's rules (the intervals to quote)",
        "",
        "*The tables below summarise the mixed draws of the refits, whose intervals are too narrow "
        "with few imputations; these are Rubin's rules over the refits (t reference), with the "
        "fraction of missing information.*",
        "",
        *markdown_table(["Estimand", "Mean", "95% interval", "FMI"], rows),
        "",
    ]


def _report_md(
    spec_name: str,
    run_id: str,
    meta: Mapping[str, Any],
    gate: GateResult,
    tables_md: str,
    figs: list[figures.FigureResult],
    trust: list[str],
    content: ReportContent | None = None,
) -> str:
    content = content or ReportContent()
    lines = []
    if not gate.passed:
        lines += [FAILED_MARKER, "", f"**{gate.headline()}**", ""]
        lines += [f"# Results: `{spec_name}` / `{run_id}`", ""]
    else:
        lines += [f"# Results: `{spec_name}` / `{run_id}`", "", f"**{gate.headline()}**", ""]
    lines += _model_section(content, meta)
    lines += _priors_section(content, figs)
    lines += _computation_section(meta, gate, figs)
    lines += ["## Posterior predictive checks", ""]
    ppc = _figure_lines(figs, "ppc")
    lines += ppc or ["Not drawn for this run (no posterior predictive group).", ""]
    lines += ["## Results", "", *_rubin_lines(meta), tables_md]
    if content.hypotheses is not None and not content.hypotheses.empty:
        lines += ["### Hypotheses", "", *hypotheses_markdown(content.hypotheses, meta)]
    lines += _figure_lines(figs, "results")
    lines += ["## Sensitivity", "", *trust]
    lines += _barg_checklist(trust, content, figs)
    lines += [
        "## Files",
        "",
        "`report.html` (this report, self-contained), `posterior.nc` (all groups; "
        "`xarray.open_datatree(path, engine='h5netcdf')`), `run.json`, `estimands.csv` (and "
        "`estimands.meta.json`: what its columns hold), "
        "`hypotheses.csv`, `tables.md`, `tables.tex`, "
        + (
            "`tables.docx` (Word, APA layout), "
            if docx_available()
            else "(no `tables.docx`: `pip install 'alliance-bayes[word]'` adds it), "
        )
        + "`figures/`, `diagnostics.json`, `diagnostics.md`.",
        "",
    ]
    return "\n".join(lines)


def _exclusion_label(key: str) -> str:
    if key.startswith("imputed_"):
        return f"kept, {key.removeprefix('imputed_')} missing and imputed"
    if key == "clients_in_data":
        return "clients in the study"
    if key.startswith("clients_in_"):
        return "clients in the " + key.removeprefix("clients_in_").replace("_", " ")
    if key.startswith("missing_"):
        return f"left out: {key.removeprefix('missing_')} missing"
    return "left out: " + key.replace("_", " ")


def _care_mix_lines(meta: Mapping[str, Any]) -> list[str]:
    """The clients in the likelihood by care type, and the weights of the pooled slopes."""
    scales = meta.get("scales") or {}
    counts = {"": scales["care_count"]} if "care_count" in scales else {}
    counts.update({f"{o}: ": c for o, c in scales.get("care_count_by_outcome", {}).items()})
    rule = ((meta.get("spec_as_run") or {}).get("hierarchy") or {}).get("pooled_weights")
    lines = []
    for prefix, by_care in counts.items():
        total = sum(by_care.values())
        mix = ", ".join(f"{care_words(c)} {n} ({n / total:.1%})" for c, n in by_care.items())
        lines.append(f"| {prefix}in the likelihood, by care type | {mix} |")
    if lines and rule and meta.get("family") in ("regression", "latent"):
        how = (
            "each care type weighted by its share of these clients"
            if rule == "care_mix"
            else "the care types present weighted equally"
        )
        lines.append(
            f"| pooled slopes (`b_<subscale>_<level>`) | care-type slopes averaged, {how} |"
        )
    return lines


def absent_level_sentences(meta: Mapping[str, Any]) -> list[str]:
    """One sentence per declared categorical covariate with levels no client of the model has
    (``absent_levels`` of its ``covariate_coding`` in the run's scales): such a level has no
    indicator, so no estimand, and the report says so rather than leave it out silently.

    Example: "Covariate diagnosis (Primary diagnosis): level 'bipolar' had no client in the
    analysed sample and is not estimated."
    """
    coding = (meta.get("scales") or {}).get("covariate_coding") or {}
    out = []
    for name, entry in coding.items():
        absent = [str(v) for v in (entry.get("absent_levels") or ())]
        if not absent:
            continue
        shown = str(entry.get("label") or name)
        named = name if shown == name else f"{name} ({shown})"
        levels = " and ".join(f"'{v}'" for v in absent)
        verbs = ("level", "had", "is") if len(absent) == 1 else ("levels", "had", "are")
        out.append(
            f"Covariate {named}: {verbs[0]} {levels} {verbs[1]} no client in the analysed sample "
            f"and {verbs[2]} not estimated."
        )
    return out


def _clients_section(meta: Mapping[str, Any]) -> list[str]:
    """Who entered the model and who was left out, step by step (as the design applied them)."""
    exclusions = meta.get("exclusions")
    absent = absent_level_sentences(meta)
    if not isinstance(exclusions, Mapping) or not exclusions:
        return ["## Clients", "", *absent, ""] if absent else []
    lines = ["## Clients", "", "| Step | Clients |", "|---|---:|"]
    rule = meta.get("elevated_rule")
    lines += [
        f"| {_exclusion_label(str(k))}"
        + (f" [{rule}]" if rule and k == "not_elevated_at_baseline" else "")
        + f" | {v} |"
        for k, v in exclusions.items()
    ]
    lines += _care_mix_lines(meta)
    unmeasured = (meta.get("scales") or {}).get("covariates_not_measured") or []
    if unmeasured:
        lines.append(
            f"| covariates not measured in this study (left out of the model) | "
            f"{', '.join(map(str, unmeasured))} |"
        )
    lines += [
        "",
        *absent,
        *([""] if absent else []),
        "Steps apply in order; a client left out at one step is not counted again. "
        + (
            "Missing follow-ups are imputed (see ## Computation)."
            if any(str(k).startswith("imputed_") for k in exclusions)
            else "Missing follow-up is assumed missing at random given the covariates (complete "
            "cases); `## Sensitivity` links the delta-adjusted analyses."
        ),
        "",
    ]
    lines += _alliance_lines(meta)
    lines += level_without_clients_sentences(meta.get("levels_without_clients") or {})
    conversions = meta.get("conversions") or []
    if conversions:  # what loading converted or noted (data.load): labels, missing codes, …
        from alliance_bayes.data.load import Conversion

        lines += ["Read from the files:", ""]
        lines += [f"- {Conversion(**c)}" for c in conversions]
        lines.append("")
    return lines


def level_without_clients_sentences(dropped: Mapping[str, Sequence[str]]) -> list[str]:
    """What the model's sample left without clients (``run.json``'s ``levels_without_clients``,
    :meth:`AnalysisFrame.select <alliance_bayes.data.frame.AnalysisFrame.select>`): not levels of
    the model, so nothing is estimated for them."""

    def names(kinds: Sequence[str]) -> str:
        quoted = [f"'{k}'" for k in kinds]
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]

    lines = []
    for key, what, whom in (
        ("care_types", "care type", "client"),
        ("provider_types", "provider type", "provider"),
    ):
        kinds = list(dropped.get(key) or [])
        if kinds:
            plural = "s" if len(kinds) > 1 else ""
            lines.append(
                f"The {what}{plural} {names(kinds)} had no {whom} in the analysed sample: not "
                "levels of this model, nothing is estimated for them."
            )
    if dropped.get("care_reference"):
        lines.append(
            f"Care-type contrasts are against the largest care group in the sample, since the "
            f"study's reference {names(list(dropped['care_reference']))} had no client in it."
        )
    return [*lines, ""] if lines else []


def _latest(paths: Iterable[Path]) -> Path | None:
    found = sorted(paths, key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _trust_section(results_root: Path, spec_name: str) -> list[str]:
    """Links to the latest SBC, comparison, prior sensitivity and robustness runs of this spec.

    Those checks are expensive and run on their own (``scripts/sbc.py``, ``compare.py``,
    ``sensitivity.py``) into sibling folders of the results root; the reviewer report points to them,
    or says how to produce them, so that one page answers "is this fit trustworthy?".
    """
    up = Path("..", "..")
    lines = []
    sbc = results_root / "sbc" / spec_name / "summary.md"
    if sbc.is_file():
        verdict = next((ln for ln in sbc.read_text().splitlines() if "verdict" in ln), "")
        rel = up / "sbc" / spec_name / "summary.md"
        lines.append(f"- SBC: [{rel}]({rel}) {verdict.lstrip('- ')}")
    else:
        lines.append(f"- SBC: not run yet (`python scripts/sbc.py --spec {spec_name}`).")
    comparison = _latest(
        p
        for p in results_root.glob("comparison/*/comparison.md")
        if f"`{spec_name}`" in p.read_text()
    )
    if comparison is not None:
        rel = up / comparison.relative_to(results_root)
        lines.append(f"- Model comparison (PSIS-LOO, leave-provider-out K-fold): [{rel}]({rel})")
    else:
        lines.append("- Model comparison: not run yet (`python scripts/compare.py`).")
    sensitivity = _latest(results_root.glob(f"sensitivity/*/{spec_name}.md"))
    if sensitivity is not None:
        text = sensitivity.read_text()
        robust, total = text.count("| robust |"), text.count("\n| `")
        rel = up / sensitivity.relative_to(results_root)
        lines.append(f"- Prior sensitivity: {robust} of {total} estimands robust: [{rel}]({rel})")
    else:
        lines.append(
            f"- Prior sensitivity: not run yet (`python scripts/sensitivity.py {spec_name}`)."
        )
    robustness = _latest(
        p
        for p in results_root.glob("robustness/*/robustness.md")
        if f"base `{spec_name}`" in p.read_text()
    )
    if robustness is not None:
        text = robustness.read_text()
        verdict = next((ln for ln in text.splitlines() if ln.startswith("**Conclusion")), "")
        rel = up / robustness.relative_to(results_root)
        lines.append(
            f"- Reviewer sensitivity analyses (early alliance, without days in care, missing "
            f"follow-up not at random): [{rel}]({rel}) {verdict}"
        )
    else:
        lines.append(
            "- Reviewer sensitivity analyses (early alliance, without days in care, delta-adjusted "
            f"missing follow-up): not run yet (`alliance-bayes robustness --base {spec_name}`)."
        )
    return [*lines, ""]


#: Suffix of the folder that keeps the draws of a bundle that could not be completed.
INCOMPLETE_SUFFIX = ".incomplete"


def _keep_draws(tmp: Path, parent: Path, run_id: str, step: str) -> Path:
    """Move the draws (and ``run.json``, unless the identifier guard failed) of a failed bundle into
    ``<run_id>.incomplete/``, with ``ERROR.txt`` naming the step; it has no report, so it never
    looks complete."""
    kept = parent / f"{run_id}{INCOMPLETE_SUFFIX}"
    kept.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "posterior.nc", kept / "posterior.nc")
    if step != "the identifier guard" and (tmp / "run.json").is_file():
        os.replace(tmp / "run.json", kept / "run.json")
    (kept / "ERROR.txt").write_text(
        f"The results bundle {run_id} could not be completed: {step} failed.\n"
        "posterior.nc holds every group of draws: xarray.open_datatree(path, engine='h5netcdf').\n",
        encoding="utf-8",
    )
    return kept


def write_bundle(
    results_root: str | os.PathLike[str],
    spec_name: str,
    run_id: str,
    dt: xr.DataTree,
    meta: Mapping[str, Any],
    estimands: xr.Dataset,
    gate: GateResult,
    *,
    forbidden_ids: Iterable[str] | None = None,
    save_failed: bool = True,
    figure_formats: tuple[str, ...] = figures.DEFAULT_FORMATS,
    figure_workers: int | Executor | None = 1,
    family_figures: tuple[figures.FigureMaker, ...] = (),
    links_root: Path | None = None,
    draws_file: Path | None = None,
    content: ReportContent | None = None,
) -> Path:
    """Write ``results_root/spec_name/run_id/`` atomically and return its path.

    Parameters
    ----------
    results_root : path
        Usually ``results/``.
    spec_name, run_id : str
        Folder names; letters, digits, ``_``, ``.`` and ``-`` only (no path separators).
    dt : xarray.DataTree
        Sampler output; written whole to ``posterior.nc``.
    meta : mapping
        Run metadata, written as ``run.json`` and used in captions and ``report.md``.
    estimands : xarray.Dataset
        Output of :func:`~alliance_bayes.model.regression.estimands.compute_estimands`.
    gate : GateResult
        Output of :func:`~alliance_bayes.diagnostics.check_convergence`.
    forbidden_ids : iterable of str, optional
        Raw identifiers that must not appear in the bundle (see the module docstring).
    save_failed : bool
        Save a run whose gate failed (marked FAILED in ``report.md`` and ``diagnostics.md``). If
        False, a failed gate raises :class:`ConvergenceFailedError` and nothing is written.
    figure_formats : tuple of str
        Figure file formats.
    figure_workers : int, None or concurrent.futures.Executor
        Processes that draw the figures while this one writes the draws and tables (``None``:
        one per CPU; see :func:`~alliance_bayes.report.figures.figure_workers`), or a
        :func:`~alliance_bayes.report.figures.figure_pool` already started.
    family_figures : tuple of callables
        Figures the model family adds (:attr:`~alliance_bayes.model.families.Family.figures`).
    links_root : path, optional
        The results root whose SBC, comparison and sensitivity runs the report links to
        (default ``results_root``).
    draws_file : path, optional
        A ``posterior.nc`` already written from ``dt`` (re-rendering a saved bundle): copied
        instead of encoded again.
    content : ReportContent, optional
        The model's equations, priors, prior estimands and hypotheses for the report.

    Returns
    -------
    pathlib.Path
        The final run folder.

    Raises
    ------
    FileExistsError
        The run folder already exists.
    ForbiddenIdentifierError
        A forbidden identifier would have been written (checked in the draws before anything is
        written).
    BundleError
        A step after the draws were written failed (a table, a figure, the identifier guard on a
        text file); the draws are kept in ``<results_root>/<spec_name>/<run_id>.incomplete/``.
    ConvergenceFailedError
        The gate failed and ``save_failed`` is False.
    """
    check_name("spec_name", spec_name)
    check_name("run_id", run_id)
    if not gate.passed and not save_failed:
        raise ConvergenceFailedError(gate.headline())
    forbidden = {str(i) for i in forbidden_ids or () if str(i)}
    _check_ids(forbidden, dt)
    # Text files are scanned for the ids that cannot be confused with a number; a purely numeric
    # id is checked through the id-bearing coordinates above, where it would have to appear.
    pattern = _token_pattern(i for i in forbidden if not _NUMBER.fullmatch(i))

    parent = Path(results_root) / spec_name
    content = content or ReportContent()
    with (
        atomic_folder(parent, run_id) as tmp,
        figures.FigureDrawing(
            dt,
            estimands,
            meta,
            tmp / "figures",
            formats=figure_formats,
            family_figures=family_figures,
            prior_estimands=content.prior_estimands,
            workers=figure_workers,
        ) as drawing,
    ):
        # The draws first: whatever fails after this point, they are kept (see _keep_draws).
        if draws_file is not None:
            shutil.copyfile(draws_file, tmp / "posterior.nc")
        else:
            write_datatree(dt, tmp / "posterior.nc", compact=True)
        step = "run.json"
        try:
            dump_json(dict(meta), tmp / "run.json")
            step = "estimands and tables"
            # One summary of every estimand (HDIs, ESS, R-hat) for the CSV and every table.
            summary = estimand_table(estimands)
            _estimands_csv(summary, meta, gate, tmp / "estimands.csv")
            # report.md states the hypotheses with their decision rule in its own section.
            tables_md = tables_markdown(estimands, meta, summary=summary)
            hyp = content.hypotheses
            (tmp / "tables.md").write_text(
                tables_markdown(estimands, meta, hypotheses=hyp, summary=summary), encoding="utf-8"
            )
            (tmp / "tables.tex").write_text(
                tables_latex(estimands, meta, hypotheses=hyp, summary=summary), encoding="utf-8"
            )
            if docx_available():
                write_tables_docx(tmp / "tables.docx", estimands, meta, hyp, summary)
            if content.hypotheses is not None:
                content.hypotheses.to_csv(tmp / "hypotheses.csv", index=False, lineterminator="\n")
            step = "figures"
            figs = drawing.results()
            step = "diagnostics and report"
            dump_json(gate.to_json(), tmp / "diagnostics.json")
            (tmp / "diagnostics.md").write_text(gate.to_markdown(), encoding="utf-8")
            report = _report_md(
                spec_name,
                run_id,
                meta,
                gate,
                tables_md,
                figs,
                _trust_section(Path(links_root or results_root), spec_name),
                content,
            )
            (tmp / "report.md").write_text(report, encoding="utf-8")
            step = "report.html"
            page = markdown_to_html(report, tmp, f"{spec_name} / {run_id}")
            (tmp / "report.html").write_text(page, encoding="utf-8")
            step = "the identifier guard"
            for path in sorted(tmp.rglob("*")):
                if path.is_file() and path.suffix in _TEXT_SUFFIXES:
                    text = path.read_text(encoding="utf-8")
                    # Embedded images are base64, where any short id occurs by chance.
                    text = _DATA_URI.sub("", text) if path.suffix == ".html" else text
                    _check_forbidden(pattern, str(path.relative_to(tmp)), text)
        except Exception as err:
            kept = _keep_draws(tmp, parent, run_id, step)
            if isinstance(err, ForbiddenIdentifierError):
                raise ForbiddenIdentifierError(f"{err}; the draws are kept in {kept}") from err
            raise BundleError(
                f"writing the bundle failed at {step} ({type(err).__name__}: {err}); the draws "
                f"are kept in {kept}"
            ) from err
    return Path(results_root) / spec_name / run_id
