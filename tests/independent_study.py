"""A study generated independently of the package's simulator, from the data contract alone.

Nothing here imports ``alliance_bayes``: the generator writes the three contract files the way an
export from another platform would (numeric identifiers, clients and providers sharing id values,
``days_in_care`` instead of dates) and plants what the package's own simulator does not:

- care-type intercepts (therapist and both vs coach) at equal alliance and covariates;
- a floor and a ceiling: follow-up WHO-5 is a latent Normal outcome rounded to the WHO-5 grid
  (multiples of 4) and clipped to 0–100, with many clients distressed at baseline, so a few per cent
  of follow-ups are exactly 0;
- multiple membership: "both" clients see a coach and a therapist, some coach clients two coaches;
- provider intercepts with their own SD per provider type.

The outcome is generated from the observed averaged alliance scores, split within and between
providers by the contract's published definitions (client mean over sessions; provider mean of
its clients' means with it, clients weighted equally; between = session-share-weighted provider
mean; within = client mean − between), so that an averaged-score model is correctly specified
and its slopes can be checked against the planted values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class IndependentTruth:
    """Planted values, named as the package reports them (WHO-5 points)."""

    n_therapist_only: int = 360
    n_coach_only: int = 1300
    n_both: int = 340
    n_therapists: int = 40
    n_coaches: int = 100
    care_gap: dict[str, float] = field(
        default_factory=lambda: {"therapist": 6.0, "coach": 0.0, "both": 3.0}
    )
    slopes: dict[str, float] = field(
        default_factory=lambda: {
            "goal_within": 3.0,
            "bond_within": 2.0,
            "goal_between": 6.0,
            "bond_between": 1.0,
        }
    )
    b_baseline: float = 0.55
    b_age: float = 0.05
    sd_provider: dict[str, float] = field(default_factory=lambda: {"therapist": 4.0, "coach": 3.0})
    sigma: float = 18.0
    intercept: float = -10.0  # at age 0, baseline 0 and every alliance part 0

    def estimands(self) -> dict[str, float]:
        out = {f"b_{k}": v for k, v in self.slopes.items()}
        out.update(
            {
                "b_care[therapist-coach]": self.care_gap["therapist"] - self.care_gap["coach"],
                "b_care[both-coach]": self.care_gap["both"] - self.care_gap["coach"],
                "b_baseline": self.b_baseline,
                "b_age": self.b_age,
                "sd_provider[therapist]": self.sd_provider["therapist"],
                "sd_provider[coach]": self.sd_provider["coach"],
                "sigma": self.sigma,
            }
        )
        return out


def write_independent_study(folder: Path, truth: IndependentTruth, seed: int) -> pd.DataFrame:
    """Write providers.csv, clients.csv and sessions.csv to ``folder``; return the clients."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_t, n_c = truth.n_therapists, truth.n_coaches
    ptype = np.array(["therapist"] * n_t + ["coach"] * n_c)
    prov_alliance = rng.normal(0.0, 0.25, (n_t + n_c, 2))  # provider offsets (goal, bond)
    prov_effect = np.where(
        ptype == "therapist",
        rng.normal(0.0, truth.sd_provider["therapist"], n_t + n_c),
        rng.normal(0.0, truth.sd_provider["coach"], n_t + n_c),
    )
    care = np.array(
        ["therapist"] * truth.n_therapist_only
        + ["coach"] * truth.n_coach_only
        + ["both"] * truth.n_both
    )
    care = care[rng.permutation(care.size)]
    n = care.size
    therapists, coaches = np.arange(n_t), np.arange(n_t, n_t + n_c)

    rows = []  # (client, provider, goal, bond)
    for i in range(n):
        if care[i] == "therapist":
            provs = [rng.choice(therapists)]
        elif care[i] == "coach":
            provs = (
                list(rng.choice(coaches, 2, replace=False))
                if rng.random() < 0.1
                else [rng.choice(coaches)]
            )
        else:
            provs = [rng.choice(coaches), rng.choice(therapists)]
        client_part = rng.multivariate_normal([0.0, 0.0], [[0.36, 0.2], [0.2, 0.36]])
        for p in provs:
            for _ in range(1 + rng.poisson(3.0)):
                latent = 4.1 + prov_alliance[p] + client_part + rng.normal(0.0, 0.6, 2)
                goal, bond = np.clip(np.rint(latent), 1, 5).astype(int)
                rows.append((i, p, goal, bond))
    ses = pd.DataFrame(rows, columns=["client", "provider", "goal", "bond"])

    # The contract's within/between split, computed here from its definitions.
    per_cp = ses.groupby(["client", "provider"])[["goal", "bond"]].agg(["mean", "size"])
    cp = pd.DataFrame(
        {
            "goal": per_cp[("goal", "mean")],
            "bond": per_cp[("bond", "mean")],
            "n": per_cp[("goal", "size")],
        }
    ).reset_index()
    cp["w"] = cp["n"] / cp.groupby("client")["n"].transform("sum")
    prov_mean = cp.groupby("provider")[["goal", "bond"]].mean()
    client_mean = ses.groupby("client")[["goal", "bond"]].mean()
    parts = {}
    for s in ("goal", "bond"):
        between = (
            (cp["w"] * prov_mean[s].reindex(cp["provider"]).to_numpy()).groupby(cp["client"]).sum()
        )
        parts[f"{s}_between"] = between.to_numpy()
        parts[f"{s}_within"] = client_mean[s].to_numpy() - between.to_numpy()
    effect = (cp["w"] * prov_effect[cp["provider"]]).groupby(cp["client"]).sum().to_numpy()

    distressed = rng.random(n) < 0.45
    baseline = np.where(distressed, rng.normal(16, 10, n), rng.normal(52, 16, n))
    baseline = np.clip(4 * np.rint(baseline / 4), 0, 100)
    age = np.clip(np.rint(rng.normal(38, 11, n)), 18, 80)
    days = rng.integers(7, 200, n)
    sex = np.where(rng.random(n) < 0.35, "male", "female")
    ystar = (
        truth.intercept
        + np.array([truth.care_gap[c] for c in care])
        + truth.b_baseline * baseline
        + truth.b_age * age
        + sum(truth.slopes[k] * parts[k] for k in truth.slopes)
        + effect
        + rng.normal(0.0, truth.sigma, n)
    )
    followup = np.clip(4 * np.rint(ystar / 4), 0, 100)
    observed = rng.random(n) < 0.65

    # Numeric ids; clients and providers share values (both start at 1).
    pd.DataFrame({"provider_id": np.arange(1, n_t + n_c + 1), "provider_type": ptype}).to_csv(
        folder / "providers.csv", index=False
    )
    clients = pd.DataFrame(
        {
            "client_id": np.arange(1, n + 1),
            "age": age.astype(int),
            "sex": sex,
            "who5_baseline": baseline.astype(int),
            "who5_followup": pd.array(np.where(observed, followup, np.nan), dtype="Int64"),
            "days_in_care": days,
        }
    )
    clients.to_csv(folder / "clients.csv", index=False)
    ses = ses.assign(
        client_id=ses["client"] + 1,
        provider_id=ses["provider"] + 1,
        session_index=ses.groupby("client").cumcount() + 1,
    )
    ses.rename(columns={"goal": "wai_goal", "bond": "wai_bond"})[
        ["client_id", "provider_id", "session_index", "wai_goal", "wai_bond"]
    ].to_csv(folder / "sessions.csv", index=False)
    return clients
