"""Planted truth vs posterior, for a fit of the synthetic study.

    python scripts/recovery.py results/who5_change/<run-id> [--truth data/synthetic/truth.json]

Reads the bundle's estimands.csv and prints, for every estimand that truth.json plants, the truth,
the posterior mean and 95% HDI, the error in posterior SDs, and whether the HDI covers the truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

OUTCOME_OF = {"who5_followup": "who5", "phq9_followup": "phq9"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--truth", type=Path, default=Path("data/synthetic/truth.json"))
    args = p.parse_args()
    run = json.loads((args.bundle / "run.json").read_text())
    truth = json.loads(args.truth.read_text())[OUTCOME_OF[run["outcome"]]]
    est = pd.read_csv(args.bundle / "estimands.csv", comment="#").set_index("estimand")
    rows = [
        {
            "estimand": name,
            "truth": value,
            "mean": est.at[name, "mean"],
            "hdi95": f"[{est.at[name, 'hdi95_low']:.3g}, {est.at[name, 'hdi95_high']:.3g}]",
            "error_in_sd": (est.at[name, "mean"] - value) / est.at[name, "sd"],
            "covered": est.at[name, "hdi95_low"] <= value <= est.at[name, "hdi95_high"],
        }
        for name, value in truth.items()
        if name in est.index
    ]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"\n{int(table['covered'].sum())} of {len(table)} planted values inside their 95% HDI")


if __name__ == "__main__":
    main()
