"""Write the worked example of a study of one's own: a WAI-SR study saved as SPSS (data/example_wai_sr/).

    python scripts/make_example_study.py                  # rewrites data/example_wai_sr/
    python scripts/make_example_study.py --out DIR        # the same study elsewhere

A small clinic's study in another design than the shipped synthetic one: 600 clients and 40
providers of three declared types (20 therapists, 12 coaches, 8 psychiatrists), most clients in
therapy, some seeing a psychiatrist for medication alongside their therapist or coach. The
package's simulator (:func:`alliance_bayes.data.simulate.simulate_study`), which knows therapists
and coaches only, draws the core: therapists, coaches, their clients and sessions, ages, sex, WHO-5
and PHQ-9 and the session goal and bond ratings. This script adds, from its own random stream:

* the psychiatrists: some of the therapy clients see a psychiatrist instead of their therapist,
  and some therapy and coaching clients see one besides, for a few sessions of their own; a
  psychiatrist's session ratings are the client's mean simulated rating moved by the
  psychiatrist's offset and session noise;
* the 12 WAI-SR items of every session (``wai_sr_1`` … ``wai_sr_12``, 1–5), four per subscale,
  each the session's subscale rating moved by item noise and rounded (the task items from the
  mean of goal and bond plus a client offset); a few items left unrated;
* a primary diagnosis (depression, anxiety, adjustment);
* GAD-7 at baseline and follow-up, with planted effects of the observed WAI-SR subscale scores,
  the diagnosis, the care type and the providers (``truth.json``).

It saves the three tables as SPSS ``.sav`` files the way a clinic's export would hold them:
numeric ids, ``provider_type``, ``sex`` and ``diagnosis`` coded 1, 2, 3 with value labels, and a
follow-up not returned coded ``-99`` and declared user-missing. It writes the ``study.toml`` that
declares the provider types (therapy the reference), the WAI-SR, the GAD-7 and the diagnosis, and
``truth.json``; the data card (``README.md``) is written by hand. The same seed gives the same
tables (each ``.sav`` header's creation time is set to a fixed one, so the files are
byte-identical with the same pyreadstat).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat

from alliance_bayes.data.alliance import SHIPPED as ALLIANCE_TEMPLATES
from alliance_bayes.data.simulate import SimulatedStudy, SimulationConfig, simulate_study

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "example_wai_sr"
SEED = 1

#: The simulator's design: therapy and coaching clients (the psychiatrists' among them), their
#: providers, and PHQ-9 asked of most clients at intake. The simulator's "both" care is not used.
DESIGN = {
    "n_therapist_clients": 390,
    "n_coach_clients": 210,
    "n_both_clients": 0,
    "n_therapists": 20,
    "n_coaches": 12,
    "p_phq9": {"therapist": 0.9, "both": 0.9, "coach": 0.8},
}
#: The declared provider types, in the order that names combined care types, and the reference.
PROVIDER_TYPES = ("therapist", "coach", "psychiatrist")
JOIN = "_and_"
CARE_REFERENCE = "therapist"
#: The psychiatrists. Of the simulator's therapy clients, ``n_instead`` see a psychiatrist instead
#: of their therapist (all their sessions) and ``n_besides["therapist"]`` see one besides; of its
#: coaching clients, ``n_besides["coach"]``. A psychiatrist alongside has 1 + NegBin(mean
#: ``extra_sessions_mean``, size ``sessions_dispersion``) sessions, each adding a Gamma(2, 7) gap
#: (days) to the days in care. Ratings with a psychiatrist: the client's mean simulated rating of
#: the subscale + the psychiatrist's offset N(``alliance_shift``, ``alliance_sd``), common to goal
#: and bond, + N(0, ``session_noise_sd``), rounded and clipped to 1-5.
PSYCHIATRY = {
    "n_psychiatrists": 8,
    "n_instead": 40,
    "n_besides": {"therapist": 90, "coach": 50},
    "extra_sessions_mean": 2.0,
    "sessions_dispersion": 2.0,
    "gap_days_shape": 2.0,
    "gap_days_scale": 7.0,
    "alliance_shift": -0.3,
    "alliance_sd": 0.3,
    "session_noise_sd": 0.5,
}
WAI_SR = ALLIANCE_TEMPLATES["wai_sr"]
SUBSCALES = ("goal", "bond", "task")
#: The item ratings: subscale rating + N(0, ITEM_NOISE_SD), rounded and clipped to 1–5; task from
#: the mean of goal and bond plus a client offset N(0, TASK_CLIENT_SD); an item unrated with
#: probability P_UNRATED.
ITEM_NOISE_SD = 0.5
TASK_CLIENT_SD = 0.4
P_UNRATED = 0.02
#: Primary diagnosis: shares, SPSS codes, and the shift of the GAD-7 baseline.
DIAGNOSES = ("depression", "anxiety", "adjustment")
DIAGNOSIS_SHARE = (0.45, 0.35, 0.20)
GAD7_BASELINE = {
    "intercept": 17.0,
    "per_who5_point": -0.12,
    "diagnosis": {"depression": 0.0, "anxiety": 3.0, "adjustment": -2.0},
    "sd": 3.0,
}
#: The planted GAD-7 follow-up (GAD-7 points; slopes per point of the WAI-SR 1–5 scale, on the
#: client's observed subscale score, centred at its sample mean, the same within and between
#: providers and in every care type; care-type intercepts against therapy alone, so that they are
#: the care gaps at equal alliance and covariates). Reported: rounded and clipped to 0–21.
GAD7_FOLLOWUP = {
    "intercept": 2.0,
    "b_baseline": 0.5,
    "b_alliance": {"goal": -1.0, "bond": -0.6, "task": -0.3},
    "b_diagnosis": {"anxiety": 1.5, "adjustment": -1.0},
    "care_intercept": {
        "therapist": 0.0,
        "coach": 0.5,
        "psychiatrist": 1.0,
        "therapist_and_psychiatrist": -1.0,
        "coach_and_psychiatrist": 0.0,
    },
    "sd_provider": {"therapist": 0.8, "coach": 0.5, "psychiatrist": 0.6},
    "sigma": 3.0,
}
#: SPSS codes: value labels, and the user-missing code of a follow-up not returned.
PROVIDER_TYPE_LABELS = {float(i + 1): t for i, t in enumerate(PROVIDER_TYPES)}
SEX_LABELS = {1.0: "female", 2.0: "male", 3.0: "other"}
DIAGNOSIS_LABELS = {float(i + 1): d for i, d in enumerate(DIAGNOSES)}
NOT_RETURNED = -99.0
#: The creation date and time written into each .sav header (SPSS's "dd Mmm yy" and "hh:mm:ss").
CREATED = b"01 Jan 25" + b"00:00:00"
FOLLOWUPS = ("who5_followup", "phq9_followup", "gad7_followup")

STUDY_TOML = """\
# The worked example's declarations (docs/data.md, "A worked example").
provider_types = ["therapist", "coach", "psychiatrist"]
# Most clients are in therapy: every care-type gap is read against therapy alone.
care_reference = "therapist"

[alliance]
instrument = "wai_sr"     # the sessions hold wai_sr_1 ... wai_sr_12, rated 1-5

[outcomes.gad7]           # the shipped GAD-7 template: 0-21, lower is better, cut-off 10

[covariates.diagnosis]
type = "categorical"
reference = "depression"
label = "Primary diagnosis"
levels = ["depression", "anxiety", "adjustment"]
"""


def make_tables(seed: int = SEED) -> tuple[dict[str, pd.DataFrame], dict]:
    """The three tables (words and NaN, before SPSS coding) and the planted truth."""
    sim = simulate_study(SimulationConfig(**DESIGN), seed=seed)
    rng = np.random.default_rng([seed, 1])  # this script's own stream
    providers, clients, sessions = _add_psychiatrists(sim, rng)

    client_ids = {c: 10001 + i for i, c in enumerate(sorted(clients["client_id"]))}
    # numbered in an order of their own, so that an id does not give away the provider's type
    shuffled = providers["provider_id"].to_numpy()[rng.permutation(len(providers))]
    provider_ids = {p: 101 + i for i, p in enumerate(shuffled)}
    providers = providers.assign(
        provider_id=providers["provider_id"].map(provider_ids).astype("int64")
    ).sort_values("provider_id", ignore_index=True)
    sessions = sessions.assign(
        client_id=sessions["client_id"].map(client_ids).astype("int64"),
        provider_id=sessions["provider_id"].map(provider_ids).astype("int64"),
    ).sort_values(["client_id", "session_index"], ignore_index=True)
    clients = clients.assign(
        client_id=clients["client_id"].map(client_ids).astype("int64")
    ).sort_values("client_id", ignore_index=True)
    n_clients, n_sessions = len(clients), len(sessions)
    care = _care_types(providers, sessions).reindex(clients["client_id"]).to_numpy()

    # ---- WAI-SR items
    client_row = clients.reset_index().set_index("client_id")["index"]
    at = client_row.loc[sessions["client_id"]].to_numpy()
    task_offset = rng.normal(0.0, TASK_CLIENT_SD, n_clients)
    goal = sessions["wai_goal"].to_numpy(float)
    bond = sessions["wai_bond"].to_numpy(float)
    base = {"goal": goal, "bond": bond, "task": (goal + bond) / 2 + task_offset[at]}
    items = {}
    for s in SUBSCALES:
        for column in WAI_SR.items(s):
            rating = np.clip(np.round(base[s] + rng.normal(0, ITEM_NOISE_SD, n_sessions)), 1, 5)
            rating[rng.random(n_sessions) < P_UNRATED] = np.nan
            items[column] = rating
    order = sorted(items, key=lambda c: int(c.rsplit("_", 1)[1]))
    sessions = pd.concat(
        [sessions[["client_id", "provider_id", "session_index"]], pd.DataFrame(items)[order]],
        axis=1,
    )

    # ---- the clients' observed subscale scores: the mean of the rated items of a session,
    # averaged over the client's sessions where the subscale was rated (as the package scores them)
    scores = {}
    for s in SUBSCALES:
        per_session = sessions[list(WAI_SR.items(s))].mean(axis=1, skipna=True)
        by_client = per_session.groupby(sessions["client_id"]).mean()
        scores[s] = by_client.reindex(clients["client_id"]).to_numpy(float)

    # ---- diagnosis and GAD-7
    diagnosis = rng.choice(DIAGNOSES, size=n_clients, p=DIAGNOSIS_SHARE)
    b0 = GAD7_BASELINE
    baseline_star = (
        b0["intercept"]
        + b0["per_who5_point"] * clients["who5_baseline"].to_numpy(float)
        + pd.Series(diagnosis).map(b0["diagnosis"]).to_numpy(float)
        + rng.normal(0, b0["sd"], n_clients)
    )
    gad7_baseline = np.clip(np.round(baseline_star), 0, 21)
    f = GAD7_FOLLOWUP
    ptype = providers.set_index("provider_id")["provider_type"]
    effect = {
        p: rng.normal(0, f["sd_provider"][ptype[p]]) for p in providers["provider_id"].tolist()
    }
    per_session_effect = sessions["provider_id"].map(effect)
    provider_part = (
        per_session_effect.groupby(sessions["client_id"])
        .mean()  # each provider weighted by its share of the client's sessions
        .reindex(clients["client_id"])
        .to_numpy(float)
    )
    alliance_part = sum(f["b_alliance"][s] * (scores[s] - np.nanmean(scores[s])) for s in SUBSCALES)
    followup_star = (
        f["intercept"]
        + f["b_baseline"] * gad7_baseline
        + pd.Series(diagnosis).map(f["b_diagnosis"]).fillna(0.0).to_numpy(float)
        + pd.Series(care).map(f["care_intercept"]).to_numpy(float)
        + alliance_part
        + provider_part
        + rng.normal(0, f["sigma"], n_clients)
    )
    returned = clients["who5_followup"].notna().to_numpy()  # one follow-up covers every outcome
    gad7_followup = np.where(returned, np.clip(np.round(followup_star), 0, 21), np.nan)

    clients = pd.DataFrame(
        {
            "client_id": clients["client_id"],
            "age": clients["age"].astype(float),
            "sex": clients["sex"].astype(str),
            "country": clients["country"].astype(str),
            "diagnosis": diagnosis,
            "days_in_care": clients["days_in_care"].astype(float),
            "who5_baseline": clients["who5_baseline"].astype(float),
            "who5_followup": _floats(clients["who5_followup"]),
            "phq9_baseline": _floats(clients["phq9_baseline"]),
            "phq9_followup": _floats(clients["phq9_followup"]),
            "gad7_baseline": gad7_baseline,
            "gad7_followup": gad7_followup,
        }
    )
    truth = _truth(seed, providers, clients, sessions, care, returned)
    return {"providers": providers, "clients": clients, "sessions": sessions}, truth


def _add_psychiatrists(
    sim: SimulatedStudy, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The simulator's providers, clients and sessions with the psychiatrists of :data:`PSYCHIATRY`.

    Ids stay the simulator's text ids (the psychiatrists' ``psy-0001`` …); session indices are
    renumbered within each client after the psychiatrists' sessions are interleaved at random.
    """
    cfg = PSYCHIATRY
    psychiatrists = np.array([f"psy-{i + 1:04d}" for i in range(cfg["n_psychiatrists"])])
    offset = rng.normal(cfg["alliance_shift"], cfg["alliance_sd"], len(psychiatrists))
    providers = pd.concat(
        [
            sim.providers[["provider_id", "provider_type"]].astype(str),
            pd.DataFrame({"provider_id": psychiatrists, "provider_type": "psychiatrist"}),
        ],
        ignore_index=True,
    )
    sessions = sim.sessions[["client_id", "provider_id", "session_index", "wai_goal", "wai_bond"]]
    sessions = sessions.sort_values(["client_id", "session_index"], ignore_index=True)
    simulated = _care_types(sim.providers, sessions)
    # the client's typical rating, the base of its ratings with a psychiatrist
    base = sessions.groupby("client_id")[["wai_goal", "wai_bond"]].mean()

    therapy = rng.permutation(simulated.index[simulated == "therapist"].to_numpy())
    coaching = rng.permutation(simulated.index[simulated == "coach"].to_numpy())
    n_instead, n_besides = cfg["n_instead"], cfg["n_besides"]
    instead = therapy[:n_instead]
    besides = np.concatenate(
        [therapy[n_instead : n_instead + n_besides["therapist"]], coaching[: n_besides["coach"]]]
    )
    chosen = np.concatenate([instead, besides])
    seen = dict(zip(chosen, rng.integers(0, len(psychiatrists), len(chosen)), strict=True))

    def ratings(clients: np.ndarray, at: np.ndarray) -> dict[str, np.ndarray]:
        shift = offset[at]
        return {
            column: np.clip(
                np.round(
                    base.loc[clients, column].to_numpy()
                    + shift
                    + rng.normal(0.0, cfg["session_noise_sd"], len(clients))
                ),
                1,
                5,
            ).astype(np.int64)
            for column in ("wai_goal", "wai_bond")
        }

    # instead of the therapist: every session, now with the psychiatrist
    rows = sessions["client_id"].isin(instead).to_numpy()
    who = sessions.loc[rows, "client_id"].to_numpy()
    at = np.array([seen[c] for c in who], dtype=np.int64)
    sessions = sessions.copy()
    sessions.loc[rows, "provider_id"] = psychiatrists[at]
    for column, values in ratings(who, at).items():
        sessions.loc[rows, column] = values

    # besides the therapist or coach: sessions of their own, and the days between them
    p = cfg["sessions_dispersion"] / (cfg["sessions_dispersion"] + cfg["extra_sessions_mean"])
    extra = 1 + rng.negative_binomial(cfg["sessions_dispersion"], p, len(besides))
    who = np.repeat(besides, extra)
    at = np.array([seen[c] for c in who], dtype=np.int64)
    added = pd.DataFrame(
        {"client_id": who, "provider_id": psychiatrists[at], "session_index": 0, **ratings(who, at)}
    )
    gaps = rng.gamma(extra * cfg["gap_days_shape"], cfg["gap_days_scale"])
    more_days = pd.Series(np.round(gaps).astype(np.int64), index=besides)
    clients = sim.clients.copy()
    clients["days_in_care"] = clients["days_in_care"] + clients["client_id"].map(more_days).fillna(
        0
    ).astype(np.int64)

    sessions = pd.concat([sessions, added], ignore_index=True)
    order = np.lexsort((rng.random(len(sessions)), sessions["client_id"].to_numpy()))
    sessions = sessions.iloc[order].reset_index(drop=True)
    sessions["session_index"] = sessions.groupby("client_id").cumcount() + 1
    return providers, clients, sessions


def _floats(values: pd.Series) -> np.ndarray:
    """A nullable integer column as floats, missing as NaN (SPSS system-missing)."""
    return values.astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _truth(seed, providers, clients, sessions, care, returned) -> dict:
    f = GAD7_FOLLOWUP
    estimands = {"b_baseline": f["b_baseline"], "b_age": 0.0, "b_male": 0.0, "sigma": f["sigma"]}
    for s in SUBSCALES:
        for level in ("within", "between"):
            estimands[f"b_{s}_{level}"] = f["b_alliance"][s]
        estimands[f"b_{s}_within-between"] = 0.0
    for level, shift in f["b_diagnosis"].items():
        estimands[f"b_diagnosis[{level}]"] = shift
    for kind, gap in f["care_intercept"].items():
        if kind != CARE_REFERENCE:
            estimands[f"b_care[{kind}-{CARE_REFERENCE}]"] = (
                gap - f["care_intercept"][CARE_REFERENCE]
            )
    for kind, sd in f["sd_provider"].items():
        estimands[f"sd_provider[{kind}]"] = sd
    return {
        "seed": seed,
        "simulator": {
            "function": "alliance_bayes.data.simulate.simulate_study",
            "config": DESIGN,
            "seed": seed,
        },
        "psychiatry": PSYCHIATRY,
        "provider_types": list(PROVIDER_TYPES),
        "care_reference": CARE_REFERENCE,
        "design": {
            "providers": providers["provider_type"].value_counts().sort_index().to_dict(),
            "clients": len(clients),
            "clients_by_care_type": pd.Series(care).value_counts().sort_index().to_dict(),
            "sessions": len(sessions),
            "followup_returned": int(returned.sum()),
            "diagnosis": pd.Series(clients["diagnosis"]).value_counts().sort_index().to_dict(),
        },
        "wai_sr_items": {
            "item_noise_sd": ITEM_NOISE_SD,
            "task_client_sd": TASK_CLIENT_SD,
            "p_unrated": P_UNRATED,
        },
        "gad7_baseline": GAD7_BASELINE,
        "gad7_followup": {
            "model": (
                "intercept + b_baseline * gad7_baseline + b_diagnosis[level] + "
                "care_intercept[care type] + sum over goal, bond, task of b_alliance[s] * "
                "(observed client score - its sample mean) + "
                "membership-weighted provider effect N(0, sd_provider[type]) + N(0, sigma); "
                "rounded and clipped to 0-21"
            ),
            **f,
        },
        "estimands": dict(sorted(estimands.items())),
        "spss": {
            "value_labels": {
                "provider_type": PROVIDER_TYPE_LABELS,
                "sex": SEX_LABELS,
                "diagnosis": DIAGNOSIS_LABELS,
            },
            "user_missing": {c: NOT_RETURNED for c in FOLLOWUPS},
        },
    }


def _care_types(providers: pd.DataFrame, sessions: pd.DataFrame) -> pd.Series:
    """Each client's care type: the provider types seen, in declared order, joined by ``_and_``."""
    kinds = sessions["provider_id"].map(providers.set_index("provider_id")["provider_type"])
    seen = kinds.groupby(sessions["client_id"]).agg(lambda k: frozenset(k))
    return seen.map(lambda k: JOIN.join(t for t in PROVIDER_TYPES if t in k))


def _coded(values: pd.Series, labels: dict[float, str]) -> pd.Series:
    codes = {word: code for code, word in labels.items()}
    return values.map(codes).astype("float64")


def _write_sav(df: pd.DataFrame, path: Path, **options) -> None:
    """``pyreadstat.write_sav`` with the header's creation time fixed (:data:`CREATED`)."""
    pyreadstat.write_sav(df, str(path), row_compress=True, **options)
    data = bytearray(path.read_bytes())
    # the file header: "$FL2", product name (60 bytes), 5 four-byte fields, the bias (8 bytes),
    # then the creation date (9 bytes) and time (8 bytes)
    at = 4 + 60 + 5 * 4 + 8
    stamp = bytes(data[at : at + len(CREATED)])
    if data[:4] != b"$FL2" or not re.fullmatch(rb"\d\d \w{3} \d\d\d\d:\d\d:\d\d", stamp):
        raise RuntimeError(f"{path}: not the SPSS header expected; got {stamp!r}")
    data[at : at + len(CREATED)] = CREATED
    path.write_bytes(bytes(data))


def write_example(out: Path, seed: int = SEED) -> Path:
    """Write the study's three .sav files, study.toml and truth.json into ``out``."""
    tables, truth = make_tables(seed)
    out.mkdir(parents=True, exist_ok=True)
    providers = tables["providers"].assign(
        provider_type=_coded(tables["providers"]["provider_type"], PROVIDER_TYPE_LABELS)
    )
    _write_sav(
        providers,
        out / "providers.sav",
        column_labels={"provider_id": "Provider", "provider_type": "Provider type"},
        variable_value_labels={"provider_type": PROVIDER_TYPE_LABELS},
    )
    clients = tables["clients"].copy()
    clients["sex"] = _coded(clients["sex"], SEX_LABELS)
    clients["diagnosis"] = _coded(clients["diagnosis"], DIAGNOSIS_LABELS)
    returned = clients["who5_followup"].notna()
    for column in FOLLOWUPS:
        # a follow-up not returned: -99; PHQ-9 not asked at intake stays system-missing
        asked = clients["phq9_baseline"].notna() if column == "phq9_followup" else True
        clients.loc[asked & ~returned, column] = NOT_RETURNED
    _write_sav(
        clients,
        out / "clients.sav",
        column_labels=_client_labels(),
        variable_value_labels={"sex": SEX_LABELS, "diagnosis": DIAGNOSIS_LABELS},
        missing_ranges={c: [NOT_RETURNED] for c in FOLLOWUPS},
    )
    _write_sav(
        tables["sessions"],
        out / "sessions.sav",
        column_labels={"session_index": "Session number", **_item_labels()},
    )
    (out / "study.toml").write_text(STUDY_TOML, encoding="utf-8", newline="\n")
    text = json.dumps(truth, sort_keys=True, indent=2, allow_nan=False) + "\n"
    (out / "truth.json").write_text(text, encoding="utf-8", newline="\n")
    return out


def _client_labels() -> dict[str, str]:
    return {
        "client_id": "Client",
        "age": "Age (years)",
        "sex": "Sex",
        "country": "Country (ISO 3166 alpha-2)",
        "diagnosis": "Primary diagnosis at intake",
        "days_in_care": "Days from first to last session",
        "who5_baseline": "WHO-5 at intake (0-100)",
        "who5_followup": "WHO-5 at follow-up (0-100; -99 not returned)",
        "phq9_baseline": "PHQ-9 at intake (0-27)",
        "phq9_followup": "PHQ-9 at follow-up (0-27; -99 not returned)",
        "gad7_baseline": "GAD-7 at intake (0-21)",
        "gad7_followup": "GAD-7 at follow-up (0-21; -99 not returned)",
    }


def _item_labels() -> dict[str, str]:
    return {
        column: f"WAI-SR item {column.rsplit('_', 1)[1]} ({s})"
        for s in SUBSCALES
        for column in WAI_SR.items(s)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write")
    parser.add_argument("--seed", type=int, default=SEED, help="seed (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"written: {write_example(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
