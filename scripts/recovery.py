"""Planted truth vs posterior, for one or more fits of the synthetic study, side by side.

    python scripts/recovery.py results/who5_change/<run-id> [results/alliance_latent/<run-id> ...]
        [--outcome who5|phq9] [--truth data/synthetic/truth.json] [--alliance-only]

Reads each bundle's estimands.csv and prints, for every estimand that truth.json plants for the
outcome, the truth and per bundle the posterior mean, 95% HDI, the error in posterior SDs and
whether the HDI covers the truth. A joint (latent-alliance) bundle carries the non-primary outcome
under an ``<outcome>:`` prefix (``phq9:b_goal_within``); ``--outcome`` picks which outcome to read.
With the averaged-score bundle first and the latent one second this is the attenuation table of
issue 4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

OUTCOME_OF = {"who5_followup": "who5", "phq9_followup": "phq9"}


def bundle_estimates(bundle: Path, outcome: str | None) -> tuple[str, str, pd.DataFrame]:
    """(label, outcome, estimands indexed by the stable, unprefixed name) of one bundle."""
    run = json.loads((bundle / "run.json").read_text())
    primary = OUTCOME_OF[run["outcome"]]
    outcome = outcome or primary
    est = pd.read_csv(bundle / "estimands.csv", comment="#")
    prefix = "" if outcome == primary else f"{outcome}:"
    est = est[est["estimand"].str.startswith(prefix)] if prefix else est
    est = est.assign(estimand=est["estimand"].str.removeprefix(prefix)).set_index("estimand")
    return run["spec"], outcome, est


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--truth", type=Path, default=Path("data/synthetic/truth.json"))
    p.add_argument("--outcome", choices=sorted(OUTCOME_OF.values()), default=None)
    p.add_argument("--alliance-only", action="store_true", help="only the alliance slopes")
    args = p.parse_args()
    fits = [bundle_estimates(b, args.outcome) for b in args.bundles]
    outcomes = {o for _, o, _ in fits}
    if len(outcomes) != 1:
        raise SystemExit(f"bundles disagree on the outcome ({sorted(outcomes)}); pass --outcome")
    outcome = outcomes.pop()
    truth = json.loads(args.truth.read_text())[outcome]
    names = [n for n in truth if any(n in est.index for _, _, est in fits)]
    if args.alliance_only:
        names = [n for n in names if n.startswith(("b_goal", "b_bond", "b_task"))]
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
    print(f"outcome: {outcome}\n")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    for label, _, _ in fits:
        col = table[f"{label} covered"].dropna()
        print(f"\n{label}: {int(col.sum())} of {len(col)} planted values inside their 95% HDI")


if __name__ == "__main__":
    main()
