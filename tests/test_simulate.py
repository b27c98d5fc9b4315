"""The synthetic-study generator: determinism, small designs, recoverable planted truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.data import build_frame, load_study
from alliance_bayes.data.simulate import (
    CARE_TYPES,
    DEFAULT_SEED,
    LEVELS,
    SUBSCALES,
    SimulationConfig,
    format_table,
    ols,
    simulate_study,
    target_table,
    write_simulated_study,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "synthetic"
FILES = ("providers.csv", "clients.csv", "sessions.csv", "truth.json")


def _frames(study):
    return (study.providers, study.clients, study.sessions, study.latent)


# ---- determinism
def test_same_seed_identical_frames_and_bytes(tmp_path: Path) -> None:
    cfg = SimulationConfig.small()
    a, b = simulate_study(cfg, seed=11), simulate_study(cfg, seed=11)
    for x, y in zip(_frames(a), _frames(b), strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert a.truth == b.truth
    write_simulated_study(a, tmp_path / "one")
    write_simulated_study(b, tmp_path / "two")
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_different_seeds_differ() -> None:
    cfg = SimulationConfig.small()
    a, b = simulate_study(cfg, seed=1), simulate_study(cfg, seed=2)
    assert not a.sessions.equals(b.sessions)
    assert not a.clients.equals(b.clients)
    assert a.truth["seed"] != b.truth["seed"]

    # The truth is fixed; only the realisation changes. The exceptions: the care-type gaps are
    # stated at the realised study's mean between-provider alliance, and the pooled slopes at its
    # realised care mix.
    pooled = {f"b_{s}_{lev}" for s in SUBSCALES for lev in LEVELS}

    def fixed(truth):
        return {k: v for k, v in truth.items() if not k.startswith("b_care") and k not in pooled}

    assert fixed(a.truth["who5"]) == fixed(b.truth["who5"])


def test_shipped_files_are_reproducible(tmp_path: Path) -> None:
    """data/synthetic is exactly what the code and DEFAULT_SEED produce."""
    write_simulated_study(simulate_study(), tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name
    truth = json.loads((SHIPPED / "truth.json").read_text())
    assert truth["seed"] == DEFAULT_SEED


# ---- small designs and the contract
def test_small_design_loads_through_the_contract(tmp_path: Path) -> None:
    st = simulate_study(SimulationConfig.small(), seed=5)
    assert len(st.clients) == 300 and len(st.providers) == 30
    write_simulated_study(st, tmp_path)
    frame = build_frame(load_study(tmp_path))
    counts = frame.clients["care_type"].value_counts()
    assert (counts["coach"], counts["therapist"], counts["both"]) == (195, 54, 51)
    # ids, ranges and grids of the contract
    assert st.clients["client_id"].str.fullmatch(r"client-\d{5}").all()
    assert st.providers["provider_id"].str.fullmatch(r"prov-\d{4}").all()
    for col in ("wai_goal", "wai_bond"):
        assert st.sessions[col].between(1, 5).all()
    assert (st.clients["who5_baseline"] % 4 == 0).all()
    assert (st.clients["days_in_care"] >= 0).all()
    # the frame's within/between split matches the generator's definition (observed vs true scores)
    lat = st.latent.sort_values("client_id").reset_index(drop=True)
    obs = frame.clients["alliance_bond_between"].to_numpy()
    assert np.corrcoef(obs, lat["bond_between"])[0, 1] > 0.8


def test_arbitrary_design_counts() -> None:
    cfg = dataclasses.replace(
        SimulationConfig.small(),
        n_coach_clients=40,
        n_therapist_clients=0,
        n_both_clients=10,
        n_therapists=2,
        n_coaches=3,
        extra_sessions_mean={
            "coach": 1.0,
            "therapist": 1.0,
            "both_coach": 1.0,
            "both_therapist": 1.0,
        },
    )
    st = simulate_study(cfg, seed=3)
    assert st.truth["design"]["n_clients_by_care_type"] == {"therapist": 0, "coach": 40, "both": 10}
    assert st.sessions["client_id"].nunique() == 50


def test_truth_names_and_derived_values() -> None:
    study = simulate_study(SimulationConfig.small(), seed=0)
    truth = study.truth
    observed = study.clients["who5_followup"].notna()
    care = study.latent.loc[observed.to_numpy(), "care_type"].to_numpy()
    share = {c: np.mean(care == c) for c in CARE_TYPES}
    for outcome in ("who5", "phq9"):
        t = truth[outcome]
        for s in SUBSCALES:
            for lev in LEVELS:
                by_care = [t[f"b_{s}_{lev}[{c}]"] for c in CARE_TYPES]
                assert np.isclose(np.mean(by_care), t[f"mu_b_{s}_{lev}"])  # deviations sum to 0
                if outcome == "who5":
                    pooled = sum(share[c] * t[f"b_{s}_{lev}[{c}]"] for c in CARE_TYPES)
                    assert np.isclose(t[f"b_{s}_{lev}"], pooled)
            assert f"sd_provider_slope[{s}]" in t
        for p in ("therapist", "coach"):
            sd = t[f"sd_provider[{p}]"]
            assert np.isclose(t[f"icc_provider[{p}]"], sd**2 / (sd**2 + t["sigma"] ** 2))
        for name in ("b_baseline", "b_age", "b_male", "b_days_in_care", "intercept"):
            assert name in t
    w = truth["who5"]
    # planted differences: subscales, care types and levels differ
    assert w["b_bond_between"] > w["b_bond_within"] and w["b_goal_between"] > w["b_goal_within"]
    assert w["b_bond_within[therapist]"] > w["b_bond_within[coach]"]
    assert w["b_goal_within[coach]"] > w["b_bond_within[coach]"]
    assert all(truth["phq9"][f"b_{s}_{lev}"] < 0 for s in SUBSCALES for lev in LEVELS)


# ---- the planted structure is recoverable
def _design(st, outcome: str, reported: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Design on the TRUE alliance parts; ``reported``: the written (rounded, clipped)
    follow-up, else the hidden continuous follow-up before rounding and clipping."""
    lat = st.latent.merge(st.clients, on="client_id")
    fu = f"{outcome}_followup" if reported else f"{outcome}_followup_star"
    bl = f"{outcome}_baseline"
    lat = lat[lat[f"{outcome}_followup"].notna()]
    cols, names = [], []
    for c in CARE_TYPES:
        d = (lat["care_type"] == c).to_numpy(float)
        if c != "therapist":
            cols.append(d)
            names.append(f"care[{c}]")
        for s in SUBSCALES:
            for lev in LEVELS:
                cols.append(d * lat[f"{s}_{lev}"].to_numpy())
                names.append(f"b_{s}_{lev}[{c}]")
    for col, name in (
        (bl, "b_baseline"),
        ("age", "b_age"),
        ("male", "b_male"),
        ("days_in_care", "b_days_in_care"),
    ):
        cols.append(lat[col].to_numpy(float))
        names.append(name)
    # the provider intercepts are known in the hidden truth table: remove them (they are not
    # estimands here)
    y = lat[fu].to_numpy(float) - lat[f"{outcome}_provider_effect"].to_numpy()
    return y, np.column_stack(cols), names


@pytest.fixture(scope="module")
def big_study():
    # 30x the paper's design (~93k clients, ~1 s) with small session noise
    cfg = dataclasses.replace(SimulationConfig().scaled(30), session_noise_sd=0.35)
    return simulate_study(cfg, seed=123)


def test_who5_truth_recovered_and_wrong_truth_rejected(big_study) -> None:
    y, x, names = _design(big_study, "who5", reported=False)
    fit = ols(y, x, names)
    truth = big_study.truth["who5"]
    slopes = [n for n in names if n.startswith("b_")]
    z = np.array([(fit.loc[n, "coef"] - truth[n]) / fit.loc[n, "se"] for n in slopes])
    assert np.all(np.abs(z) < 4), dict(zip(slopes, np.round(z, 2), strict=True))
    # the check has power: swapping goal and bond (a plausible bug) is detected
    swapped = [n.replace("goal", "@").replace("bond", "goal").replace("@", "bond") for n in slopes]
    z_bad = np.array(
        [
            (fit.loc[n, "coef"] - truth[m]) / fit.loc[n, "se"]
            for n, m in zip(slopes, swapped, strict=True)
        ]
    )
    assert np.sum(z_bad**2) > 3 * np.sum(z**2) and np.max(np.abs(z_bad)) > 4
    # the hyper-mean (equal-weight mean over care types) and the pooled slope (care-mix
    # weights: the shares of clients with a follow-up) are recovered too
    observed = big_study.clients["who5_followup"].notna()
    care = big_study.latent.loc[observed.to_numpy(), "care_type"].to_numpy()
    share = {c: float(np.mean(care == c)) for c in CARE_TYPES}
    for s in SUBSCALES:
        for weights, name in ((dict.fromkeys(CARE_TYPES, 1 / 3), "mu_b"), (share, "b")):
            w = np.array([weights[c] for c in CARE_TYPES])
            coef = np.array([fit.loc[f"b_{s}_within[{c}]", "coef"] for c in CARE_TYPES])
            se = np.array([fit.loc[f"b_{s}_within[{c}]", "se"] for c in CARE_TYPES])
            est, se_pooled = w @ coef, np.sqrt(np.sum((w * se) ** 2))
            assert abs(est - truth[f"{name}_{s}_within"]) < 4 * se_pooled


def test_phq9_truth_recovered(big_study) -> None:
    y, x, names = _design(big_study, "phq9", reported=False)
    fit = ols(y, x, names)
    truth = big_study.truth["phq9"]
    for n in names:
        if n.startswith("b_") and "[coach]" not in n:  # coach-only PHQ-9 is rare by design
            z = (fit.loc[n, "coef"] - truth[n]) / fit.loc[n, "se"]
            assert abs(z) < 4, (n, fit.loc[n, "coef"], truth[n])


@pytest.mark.parametrize("outcome", ["who5", "phq9"])
def test_reported_outcome_keeps_the_truth(big_study, outcome: str) -> None:
    """Rounding and the rare clipping at the scale ends leave the alliance slopes intact (within
    4 SE at ~93k clients); the baseline slope is attenuated slightly by the floor (data card)."""
    y, x, names = _design(big_study, outcome, reported=True)
    fit = ols(y, x, names)
    truth = big_study.truth[outcome]
    for n in names:
        if n.startswith(("b_goal", "b_bond")) and not (outcome == "phq9" and "[coach]" in n):
            z = (fit.loc[n, "coef"] - truth[n]) / fit.loc[n, "se"]
            assert abs(z) < 4, (n, fit.loc[n, "coef"], truth[n])
    assert 0.9 < fit.loc["b_baseline", "coef"] / truth["b_baseline"] <= 1.0


def test_observed_mean_is_true_score_plus_unbiased_error(big_study) -> None:
    """Truth is on TRUE alliance; observed client mean = true score + zero-mean error."""
    obs = big_study.sessions.groupby("client_id")[["wai_goal", "wai_bond"]].mean()
    lat = big_study.latent.set_index("client_id")
    for item, s in (("wai_goal", "goal"), ("wai_bond", "bond")):
        err = obs[item] - lat[f"true_{s}"]
        assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err))


def test_session_noise_controls_measurement_error() -> None:
    cfg = SimulationConfig.small()
    rel = {}
    for noise in (0.3, 1.5):
        st = simulate_study(dataclasses.replace(cfg.scaled(3), session_noise_sd=noise), seed=4)
        obs = st.sessions.groupby("client_id")["wai_bond"].mean()
        true = st.latent.set_index("client_id")["true_bond"]
        rel[noise] = np.corrcoef(obs, true.loc[obs.index])[0, 1] ** 2
    assert rel[0.3] > 0.9 > 0.8 > rel[1.5]


# ---- the script and the target table
def test_simulate_command_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alliance_bayes.cli import main

    assert main(["simulate", "--out", str(tmp_path), "--seed", "9", "--small"]) == 0
    assert all((tmp_path / name).exists() for name in FILES)
    assert "| hard | N clients |" in capsys.readouterr().out


def test_target_table_on_default_study_meets_hard_targets() -> None:
    st = simulate_study()
    table = target_table(st.providers, st.clients, st.sessions)
    hard = table[(table["kind"] == "hard") & table["ok"].notna()]
    assert hard["ok"].all(), hard[~hard["ok"].astype(bool)]


def test_data_card_shows_the_current_table() -> None:
    st = simulate_study()
    table = format_table(target_table(st.providers, st.clients, st.sessions))
    assert table in (SHIPPED / "README.md").read_text(encoding="utf-8")


def test_latent_between_is_the_limit_of_caseload_means() -> None:
    """``between_definition = "latent"`` plants the provider's expected rating over the population
    of clients (closed form); with caseloads of about a thousand, the caseload mean of true scores
    (the default definition, same seed, same draws) must agree within its sampling error."""
    cfg = SimulationConfig.small(
        n_coach_clients=3000,
        n_therapist_clients=2000,
        n_both_clients=0,
        n_therapists=2,
        n_coaches=3,
        p_second_coach=0.0,
    )
    caseload = simulate_study(cfg, seed=8).latent
    latent = simulate_study(dataclasses.replace(cfg, between_definition="latent"), seed=8).latent
    assert latent["who5_followup_star"].ne(caseload["who5_followup_star"]).any()
    for s in SUBSCALES:
        pair = pd.DataFrame(
            {
                "provider": caseload[f"{s}_between"].round(12),  # one value per provider
                "caseload": caseload[f"{s}_between"],
                "latent": latent[f"{s}_between"],
                "true": caseload[f"true_{s}"],
            }
        )
        by = pair.groupby("provider")
        assert by.ngroups == 5
        gap = by["latent"].first() - by["caseload"].first()
        se = by["true"].std() / np.sqrt(by.size())
        assert (gap.abs() < 4 * se).all(), pd.DataFrame({"gap": gap, "se": se})
        # the latent values are not the caseload means themselves
        assert (gap.abs() > 0).all()
    with pytest.raises(ValueError, match="between_definition"):
        simulate_study(dataclasses.replace(cfg, between_definition="mean"), seed=8)
