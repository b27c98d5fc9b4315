"""A study with three declared provider types, generated independently of the package.

Nothing here imports ``alliance_bayes``: the generator reads only the data contract (the three
tables, and ``provider_types`` at the top of ``study.toml``) and writes a folder the way another
platform's export might, in a design the package's own simulator never produces:

- three provider types, therapist, coach and psychiatrist, declared in ``study.toml`` with no
  ``care_reference``, so the reference care type is the one with the most clients (coach);
- five care types: each type alone, and a psychiatrist alongside a therapist or a coach
  (``therapist_and_psychiatrist``, ``coach_and_psychiatrist``: the declared order joined by
  ``_and_``), each with its own planted intercept at equal alliance and covariates;
- provider intercepts with their own SD per provider type, and a lower typical alliance with
  psychiatrists, so that care type and between-provider alliance are correlated;
- baseline distress that depends on care type (psychiatric care sees more distressed clients), so
  a care gap is only recovered after adjusting for baseline;
- text identifiers, session dates instead of indices, and first/last session dates instead of
  ``days_in_care``;
- a floor and a ceiling: follow-up WHO-5 is a latent Normal outcome rounded to the WHO-5 grid
  (multiples of 4) and clipped to 0–100.

The outcome is generated from the observed averaged alliance scores, split within and between
providers by the contract's published definitions (client mean over sessions; provider mean of
its clients' means with it, clients weighted equally; between = session-share-weighted provider
mean; within = client mean − between), so that an averaged-score model is correctly specified
and its slopes can be checked against the planted values. The slopes are the same in every care
type, so the care-mix-weighted pooled slopes the package reports equal them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: The declared provider types, in the order that names combined care types.
PROVIDER_TYPES: tuple[str, ...] = ("therapist", "coach", "psychiatrist")
JOIN = "_and_"
SUBSCALES: tuple[str, ...] = ("goal", "bond")
_FIRST_DAY = np.datetime64("2022-01-03")


@dataclass(frozen=True)
class ProviderTypesTruth:
    """Planted design and values, named as the package reports them (WHO-5 points).

    Attributes
    ----------
    n_clients : dict of str to int
        Clients per care type; coach is the largest group, hence the reference.
    n_providers : dict of str to int
        Providers per provider type.
    care_gap : dict of str to float
        Care-type intercepts (expected follow-up at equal alliance and covariates).
    slopes : dict of str to float
        Alliance slopes per point of the 1–5 scale, the same in every care type.
    sd_provider : dict of str to float
        SD of the provider intercepts, per provider type.
    alliance_shift : dict of str to float
        Mean offset of the typical alliance of each provider type's providers.
    distressed : dict of str to float
        Share of each provider type's clients who are distressed at baseline; a client seeing
        several types takes the largest.
    """

    n_clients: dict[str, int] = field(
        default_factory=lambda: {
            "therapist": 400,
            "coach": 900,
            "psychiatrist": 200,
            "therapist_and_psychiatrist": 260,
            "coach_and_psychiatrist": 240,
        }
    )
    n_providers: dict[str, int] = field(
        default_factory=lambda: {"therapist": 40, "coach": 80, "psychiatrist": 30}
    )
    care_gap: dict[str, float] = field(
        default_factory=lambda: {
            "therapist": 5.0,
            "coach": 0.0,
            "psychiatrist": -6.0,
            "therapist_and_psychiatrist": 3.0,
            "coach_and_psychiatrist": -3.0,
        }
    )
    slopes: dict[str, float] = field(
        default_factory=lambda: {
            "goal_within": 3.0,
            "bond_within": 2.0,
            "goal_between": 6.0,
            "bond_between": 1.0,
        }
    )
    sd_provider: dict[str, float] = field(
        default_factory=lambda: {"therapist": 4.0, "coach": 2.5, "psychiatrist": 6.0}
    )
    alliance_shift: dict[str, float] = field(
        default_factory=lambda: {"therapist": 0.1, "coach": 0.0, "psychiatrist": -0.3}
    )
    distressed: dict[str, float] = field(
        default_factory=lambda: {"therapist": 0.4, "coach": 0.35, "psychiatrist": 0.6}
    )
    b_baseline: float = 0.55
    b_age: float = 0.05
    b_male: float = -3.0
    b_days_in_care: float = 0.02
    sigma: float = 18.0
    intercept: float = -10.0  # at age 0, baseline 0, day 0 and every alliance part 0

    @property
    def reference(self) -> str:
        """The care type with the most clients: what the contract takes when none is declared."""
        return max(self.n_clients, key=lambda c: self.n_clients[c])

    @property
    def n_total(self) -> int:
        return sum(self.n_clients.values())

    def estimands(self) -> dict[str, float]:
        """The planted values, keyed by the estimand names the package reports."""
        ref = self.reference
        out = {f"b_{k}": v for k, v in self.slopes.items()}
        out.update(
            {
                f"b_care[{c}-{ref}]": gap - self.care_gap[ref]
                for c, gap in self.care_gap.items()
                if c != ref
            }
        )
        out.update({f"sd_provider[{t}]": sd for t, sd in self.sd_provider.items()})
        out.update(
            {
                "b_baseline": self.b_baseline,
                "b_age": self.b_age,
                "b_male": self.b_male,
                "b_days_in_care": self.b_days_in_care,
                "sigma": self.sigma,
            }
        )
        return out


def study_toml() -> str:
    """The study's ``study.toml``: the provider types and nothing else (no ``care_reference``)."""
    listed = ", ".join(f'"{t}"' for t in PROVIDER_TYPES)
    return f"provider_types = [{listed}]\n"


def _kinds(care: str) -> list[str]:
    return care.split(JOIN)


def write_provider_types_study(folder: Path, truth: ProviderTypesTruth, seed: int) -> pd.DataFrame:
    """Write providers.csv, clients.csv, sessions.csv and study.toml to ``folder``.

    Parameters
    ----------
    folder : pathlib.Path
        Where to write; created if needed.
    truth : ProviderTypesTruth
        The planted design and values.
    seed : int
        Seed of the one random generator every draw comes from: the same seed writes
        byte-identical files.

    Returns
    -------
    pandas.DataFrame
        The clients as written, in the order written, plus what the generator planted or
        derived and did not write: ``care_type``, ``days_in_care`` and the alliance parts the
        outcome was generated from (``goal_within``, ``goal_between``, ``bond_within``,
        ``bond_between``).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    ptype = np.array([t for t in PROVIDER_TYPES for _ in range(truth.n_providers[t])])
    pid = np.array(
        [f"{t}-{k + 1:02d}" for t in PROVIDER_TYPES for k in range(truth.n_providers[t])]
    )
    n_prov = ptype.size
    shift = np.array([truth.alliance_shift[t] for t in ptype])
    prov_alliance = shift[:, None] + rng.normal(0.0, 0.25, (n_prov, len(SUBSCALES)))
    prov_effect = rng.normal(0.0, 1.0, n_prov) * np.array([truth.sd_provider[t] for t in ptype])
    pool = {t: np.flatnonzero(ptype == t) for t in PROVIDER_TYPES}

    care = np.array([c for c, k in truth.n_clients.items() for _ in range(k)])
    care = care[rng.permutation(care.size)]
    n = care.size

    rows = []  # (client, provider, goal, bond)
    for i in range(n):
        provs = []
        for t in _kinds(care[i]):
            # a few clients of a single-type care change provider within the type
            two = len(_kinds(care[i])) == 1 and t != "psychiatrist" and rng.random() < 0.1
            provs += list(rng.choice(pool[t], 2 if two else 1, replace=False))
        client_part = rng.multivariate_normal([0.0, 0.0], [[0.36, 0.2], [0.2, 0.36]])
        for p in provs:
            # medication reviews: fewer sessions with a psychiatrist
            n_sessions = 1 + rng.poisson(1.5 if ptype[p] == "psychiatrist" else 3.0)
            for _ in range(n_sessions):
                latent = 4.1 + prov_alliance[p] + client_part + rng.normal(0.0, 0.6, 2)
                goal, bond = np.clip(np.rint(latent), 1, 5).astype(int)
                rows.append((i, p, goal, bond))
    ses = pd.DataFrame(rows, columns=["client", "provider", "goal", "bond"])
    # interleave a client's providers, as sessions with two providers would be in time
    ses = ses.iloc[rng.permutation(len(ses))].sort_values("client", kind="stable")
    ses = ses.reset_index(drop=True)
    gaps = rng.integers(1, 22, len(ses))
    gaps[~ses["client"].duplicated().to_numpy()] = 0  # a client's first session is day 0
    first = _FIRST_DAY + rng.integers(0, 540, n).astype("timedelta64[D]")
    offset = pd.Series(gaps).groupby(ses["client"]).cumsum().to_numpy()
    ses["date"] = first[ses["client"].to_numpy()] + offset.astype("timedelta64[D]")
    days = (ses.groupby("client")["date"].max() - ses.groupby("client")["date"].min()).dt.days

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
    for s in SUBSCALES:
        between = (
            (cp["w"] * prov_mean[s].reindex(cp["provider"]).to_numpy()).groupby(cp["client"]).sum()
        )
        parts[f"{s}_between"] = between.to_numpy()
        parts[f"{s}_within"] = client_mean[s].to_numpy() - between.to_numpy()
    effect = (cp["w"] * prov_effect[cp["provider"]]).groupby(cp["client"]).sum().to_numpy()

    p_distressed = np.array([max(truth.distressed[t] for t in _kinds(c)) for c in care])
    distressed = rng.random(n) < p_distressed
    baseline = np.where(distressed, rng.normal(16, 10, n), rng.normal(52, 16, n))
    baseline = np.clip(4 * np.rint(baseline / 4), 0, 100)
    age = np.clip(np.rint(rng.normal(40, 12, n)), 18, 85)
    male = rng.random(n) < 0.35
    sex = np.where(male, "male", np.where(rng.random(n) < 0.03, "other", "female"))
    ystar = (
        truth.intercept
        + np.array([truth.care_gap[c] for c in care])
        + truth.b_baseline * baseline
        + truth.b_age * age
        + truth.b_male * male
        + truth.b_days_in_care * days.to_numpy()
        + sum(truth.slopes[k] * parts[k] for k in truth.slopes)
        + effect
        + rng.normal(0.0, truth.sigma, n)
    )
    followup = np.clip(4 * np.rint(ystar / 4), 0, 100)
    observed = rng.random(n) < 0.7

    # Text ids, not zero-padded: their text order differs from the numeric one.
    cid = np.array([f"c{i + 1}" for i in range(n)])
    pd.DataFrame({"provider_id": pid, "provider_type": ptype}).to_csv(
        folder / "providers.csv", index=False
    )
    span = ses.groupby("client")["date"].agg(["min", "max"])
    clients = pd.DataFrame(
        {
            "client_id": cid,
            "age": age.astype(int),
            "sex": sex,
            "who5_baseline": baseline.astype(int),
            "who5_followup": pd.array(np.where(observed, followup, np.nan), dtype="Int64"),
            "first_session": span["min"].dt.strftime("%Y-%m-%d").to_numpy(),
            "last_session": span["max"].dt.strftime("%Y-%m-%d").to_numpy(),
        }
    )
    clients.to_csv(folder / "clients.csv", index=False)
    pd.DataFrame(
        {
            "client_id": cid[ses["client"].to_numpy()],
            "provider_id": pid[ses["provider"].to_numpy()],
            "session_date": ses["date"].dt.strftime("%Y-%m-%d"),
            "wai_goal": ses["goal"],
            "wai_bond": ses["bond"],
        }
    ).to_csv(folder / "sessions.csv", index=False)
    (folder / "study.toml").write_text(study_toml(), encoding="utf-8")
    return clients.assign(care_type=care, days_in_care=days.to_numpy(), **parts)
