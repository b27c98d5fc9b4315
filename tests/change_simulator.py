"""A study with a planted true change and a planted test–retest reliability (for the change family).

Independent of :mod:`alliance_bayes.data.simulate`: true WHO-5 baseline and follow-up are bivariate
normal per care type, each observed with independent normal error of variance
(1 − ρ)/ρ · τ₁² (so that ρ is the reliability of the observed baseline), follow-ups missing
completely at random, provider effects on the true follow-up. Scores stay continuous (no rounding)
and are clipped to 0–100, which the chosen means and SDs make rare.

With ``covariate_slopes`` the clients also have two declared covariates, ``income`` (numeric,
Normal(30, 10)) and ``diagnosis`` (categorical: depression, the reference, anxiety, ptsd with
probabilities 0.5, 0.3, 0.2), drawn from a generator of their own (the other draws stay those of
the same seed without them), and the true scores shift by planted slopes on the baseline and on
the change, about the covariates' population means (so that ``mean_baseline`` and
``true_change`` stay the means of the care type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alliance_bayes.data.covariates import Covariate
from alliance_bayes.data.load import RawStudy

CARE = ("therapist", "coach", "both")
#: The declared covariates of a study with ``covariate_slopes``, as a study.toml declares them.
DECLARED = {
    "income": Covariate("income", "numeric", "Income"),
    "diagnosis": Covariate("diagnosis", "categorical", "Primary diagnosis", "depression"),
}
DIAGNOSES = ("depression", "anxiety", "ptsd")
DIAGNOSIS_SHARE = (0.5, 0.3, 0.2)
INCOME_MEAN, INCOME_SD = 30.0, 10.0


@dataclass(frozen=True)
class ChangeTruth:
    reliability: float
    mean_baseline: dict[str, float]
    true_change: dict[str, float]  # mean T2 − T1 over every client of the care type
    sd_true: float
    corr_true: float
    sd_provider: float
    cutoff: float


def simulate_change_study(
    *,
    seed: int,
    n_per_care: tuple[int, int, int] = (200, 300, 150),
    reliability: float = 0.7,
    true_change: tuple[float, float, float] = (6.0, 3.0, 8.0),
    mean_baseline: tuple[float, float, float] = (48.0, 52.0, 46.0),
    sd_true: float = 16.0,
    corr_true: float = 0.8,
    sd_provider: float = 2.0,
    n_therapists: int = 12,
    n_coaches: int = 20,
    followup_share: float = 0.7,
    cutoff: float = 28.0,
    covariate_slopes: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[RawStudy, ChangeTruth, pd.DataFrame]:
    """The study, its truth, and the clients' true scores (``t1``, ``t2``, ``x1``, ``x2``, care).

    ``covariate_slopes`` maps the design columns ``income``, ``diagnosis[anxiety]`` and
    ``diagnosis[ptsd]`` to (slope of the true baseline, slope of the true change), per unit of
    income and per level against depression; a column it leaves out has slopes 0.
    """
    rng = np.random.default_rng(seed)
    providers = pd.DataFrame(
        {
            "provider_id": [f"p{i:03d}" for i in range(n_therapists + n_coaches)],
            "provider_type": ["therapist"] * n_therapists + ["coach"] * n_coaches,
        }
    )
    u = rng.normal(0.0, sd_provider, len(providers))
    care = np.repeat(np.arange(3), n_per_care)
    n = care.size
    therapist = rng.integers(0, n_therapists, n)
    coach = n_therapists + rng.integers(0, n_coaches, n)
    rows, v = [], np.zeros(n)
    for i in range(n):
        seen = {0: [therapist[i]], 1: [coach[i]], 2: [therapist[i], coach[i]]}[int(care[i])]
        v[i] = np.mean(u[seen])  # one session with each provider: equal membership weights
        for k, p in enumerate(seen, start=1):
            rows.append((f"c{i:05d}", providers["provider_id"][p], k, 4, 5))
    sessions = pd.DataFrame(
        rows, columns=["client_id", "provider_id", "session_index", "wai_goal", "wai_bond"]
    )
    m1 = np.asarray(mean_baseline)[care]
    z1, z2 = rng.standard_normal((2, n))
    covariates, shift1, shift_change = _covariates(seed, n, covariate_slopes)
    t1 = m1 + shift1 + sd_true * z1
    t2 = m1 + shift1 + shift_change + np.asarray(true_change)[care] + v
    t2 = t2 + sd_true * (corr_true * z1 + np.sqrt(1 - corr_true**2) * z2)
    sigma_e = sd_true * np.sqrt((1.0 - reliability) / reliability)
    x1 = np.clip(t1 + rng.normal(0.0, sigma_e, n), 0.0, 100.0)
    x2 = np.clip(t2 + rng.normal(0.0, sigma_e, n), 0.0, 100.0)
    observed = rng.random(n) < followup_share
    clients = pd.DataFrame(
        {
            "client_id": [f"c{i:05d}" for i in range(n)],
            "age": rng.integers(20, 60, n),
            "sex": rng.choice(["female", "male"], n),
            "who5_baseline": x1,
            "who5_followup": np.where(observed, x2, np.nan),
            "days_in_care": rng.integers(10, 200, n),
            **covariates,
        }
    )
    truth = ChangeTruth(
        reliability=reliability,
        mean_baseline=dict(zip(CARE, mean_baseline, strict=True)),
        true_change=dict(zip(CARE, true_change, strict=True)),
        sd_true=sd_true,
        corr_true=corr_true,
        sd_provider=sd_provider,
        cutoff=cutoff,
    )
    scores = pd.DataFrame(
        {
            "care": np.asarray(CARE)[care],
            "t1": t1,
            "t2": t2,
            "x1": x1,
            "x2": x2,
            "observed": observed,
        }
    )
    declared = DECLARED if covariate_slopes is not None else None
    return RawStudy.from_frames(providers, clients, sessions, covariates=declared), truth, scores


def _covariates(
    seed: int, n: int, slopes: Mapping[str, tuple[float, float]] | None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The declared covariates' columns and the shifts of the true baseline and true change."""
    if slopes is None:
        return {}, np.zeros(n), np.zeros(n)
    unknown = set(slopes) - {"income", *(f"diagnosis[{d}]" for d in DIAGNOSES[1:])}
    if unknown:
        raise ValueError(f"covariate_slopes: unknown column(s) {sorted(unknown)}")
    rng = np.random.default_rng([seed, 1])
    income = rng.normal(INCOME_MEAN, INCOME_SD, n)
    diagnosis = rng.choice(DIAGNOSES, n, p=DIAGNOSIS_SHARE)
    centred = {"income": income - INCOME_MEAN}
    for level, share in zip(DIAGNOSES[1:], DIAGNOSIS_SHARE[1:], strict=True):
        centred[f"diagnosis[{level}]"] = (diagnosis == level) - share
    shift1, shift_change = np.zeros(n), np.zeros(n)
    for column, (b1, delta) in slopes.items():
        shift1 += b1 * centred[column]
        shift_change += delta * centred[column]
    return {"income": income, "diagnosis": diagnosis}, shift1, shift_change
