"""Planted truth against posterior: for fits of a simulated study, side by side.

Reads each bundle's ``estimands.csv`` and, for every estimand that the study's ``truth.json``
plants for the outcome, gives the truth and per bundle the posterior mean, 95% HDI, the error in
posterior SDs and whether the HDI covers the truth. A joint (latent-alliance) bundle carries its
non-primary outcome under an ``<outcome>:`` prefix (``phq9:b_goal_within``); ``outcome`` picks
which outcome to read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from alliance_bayes.checks.base import CheckResult

OUTCOME_OF = {"who5_followup": "who5", "phq9_followup": "phq9"}
ALLIANCE_PREFIXES = ("b_goal", "b_bond", "b_task")


def bundle_estimates(bundle: Path, outcome: str | None) -> tuple[str, str, pd.DataFrame]:
    """(label, outcome, estimands indexed by the stable, unprefixed name) of one bundle."""
    run = json.loads((Path(bundle) / "run.json").read_text(encoding="utf-8"))
    primary = OUTCOME_OF[run["outcome"]]
    outcome = outcome or primary
    from alliance_bayes.report.bundle import read_estimands_csv

    est = read_estimands_csv(Path(bundle) / "estimands.csv")
    prefix = "" if outcome == primary else f"{outcome}:"
    est = est[est["estimand"].str.startswith(prefix)] if prefix else est
    est = est.assign(estimand=est["estimand"].str.removeprefix(prefix)).set_index("estimand")
    return run["spec"], outcome, est


def recovery_table(
    bundles: Sequence[Path],
    truth_file: Path,
    *,
    outcome: str | None = None,
    alliance_only: bool = False,
) -> CheckResult:
    """One row per planted estimand; per bundle mean [HDI], error (SD), covered.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` without a verdict (a 95% interval
    misses one planted value in twenty by design, so coverage is read over many, not passed or
    failed by one): the table, its text (:func:`format_recovery`) and ``details["outcome"]``.

    Raises
    ------
    ValueError
        The bundles are of different outcomes (pass ``outcome``).
    """
    fits = [bundle_estimates(Path(b), outcome) for b in bundles]
    outcomes = {o for _, o, _ in fits}
    if len(outcomes) != 1:
        raise ValueError(f"bundles disagree on the outcome ({sorted(outcomes)}); pass an outcome")
    outcome = outcomes.pop()
    truth = json.loads(Path(truth_file).read_text(encoding="utf-8"))[outcome]
    names = [n for n in truth if any(n in est.index for _, _, est in fits)]
    if alliance_only:
        names = [n for n in names if n.startswith(ALLIANCE_PREFIXES)]
    table = pd.DataFrame({"estimand": names, "truth": [truth[n] for n in names]})
    for label, _, est in fits:
        sub = est.reindex(names)
        table[f"{label} mean [95% HDI]"] = [
            "—" if pd.isna(m) else f"{m:.3g} [{lo:.3g}, {hi:.3g}]"
            for m, lo, hi in zip(sub["mean"], sub["hdi95_low"], sub["hdi95_high"], strict=True)
        ]
        table[f"{label} error (SD)"] = (sub["mean"].to_numpy() - table["truth"]) / sub[
            "sd"
        ].to_numpy()
        covered = (sub["hdi95_low"].to_numpy() <= table["truth"]) & (
            table["truth"] <= sub["hdi95_high"].to_numpy()
        )
        table[f"{label} covered"] = covered.where(sub["mean"].notna().to_numpy())
    text = format_recovery(outcome, table)
    return CheckResult("recovery", None, table, text, None, {"outcome": outcome})


def format_recovery(outcome: str, table: pd.DataFrame) -> str:
    """The table as text, with a coverage line per bundle."""
    lines = [
        f"outcome: {outcome}",
        "",
        table.to_string(index=False, float_format=lambda x: f"{x:.2f}"),
    ]
    for col in [c for c in table.columns if c.endswith(" covered")]:
        covered = table[col].dropna()
        label = col.removesuffix(" covered")
        lines.append(
            f"\n{label}: {int(covered.sum())} of {len(covered)} planted values inside their 95% HDI"
        )
    return "\n".join(lines)
