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


# ---- planted answers to questions 1 (alliance ratings) and 2 (change among the elevated)
def _clustered_mean(values: np.ndarray, cluster: np.ndarray, count: np.ndarray | None = None):
    """Ratio mean sum(values) / sum(count) and its SE clustered by ``cluster``."""
    values = np.asarray(values, dtype=float)
    count = np.ones(len(values)) if count is None else np.asarray(count, dtype=float)
    m = values.sum() / count.sum()
    dev = pd.Series(values - m * count).groupby(np.asarray(cluster)).sum().to_numpy()
    return m, float(np.sqrt(dev @ dev) / count.sum())


def _client_ratings(st) -> pd.DataFrame:
    """Per client: the sum of the item-averaged session ratings, their number, covariates."""
    s = st.sessions.assign(r=(st.sessions["wai_goal"] + st.sessions["wai_bond"]) / 2.0)
    g = s.groupby("client_id")["r"].agg(["sum", "count"])
    return (
        st.latent.set_index("client_id")[["care_type", "first_provider"]]
        .join(g)
        .join(st.clients.set_index("client_id")["country"])
    )


def test_extras_use_their_own_random_streams() -> None:
    """An extra that is on changes only what it acts on: the main stream is untouched, so every
    extra off gives the shipped study's draws (the byte check is the shipped-files test)."""
    cfg = SimulationConfig.small()
    base = simulate_study(cfg, seed=2)
    countries = simulate_study(dataclasses.replace(cfg, alliance_country_sd=0.5), seed=2)
    # the alliance acts on the ratings and, through the true scores, on the follow-ups only
    drawn_before = ["client_id", "age", "sex", "country", "who5_baseline", "days_in_care"]
    pd.testing.assert_frame_equal(base.clients[drawn_before], countries.clients[drawn_before])
    pd.testing.assert_series_equal(
        base.clients["phq9_baseline"], countries.clients["phq9_baseline"]
    )
    assert not base.sessions.equals(countries.sessions)
    error = simulate_study(dataclasses.replace(cfg, who5_reliability=0.7), seed=2)
    pd.testing.assert_frame_equal(base.sessions, error.sessions)
    assert not base.clients["who5_baseline"].equals(error.clients["who5_baseline"])
    explicit_off = dataclasses.replace(
        cfg, alliance_care_shift=dict.fromkeys(CARE_TYPES, 0.0), who5_reliability=1.0
    )
    for x, y in zip(_frames(base), _frames(simulate_study(explicit_off, seed=2)), strict=True):
        pd.testing.assert_frame_equal(x, y)


def test_shipped_truth_states_no_planted_alliance_difference_and_no_rtm() -> None:
    truth = json.loads((SHIPPED / "truth.json").read_text())
    q1 = truth["alliance_ratings"]["estimands"]
    for name in (
        "alliance[therapist-coach]",
        "alliance[both-coach]",
        "alliance_per_decade_age",
        "alliance_per_10_who5_baseline",
        "alliance[male-not_male]",
        "sd_country_alliance",
        "alliance_per_session",
    ):
        assert q1[name] == 0.0, name
    assert 4.5 < q1["alliance[coach]"] < 4.7 and 0.6 < q1["share_at_ceiling"] < 0.8
    for outcome in ("who5", "phq9"):
        q2 = truth["change"][outcome]["estimands"]
        assert q2["reliability"] == 1.0 and q2["reliability_reported"] > 0.99
        assert all(q2[f"rtm[{g}]"] == 0.0 for g in (*CARE_TYPES, "all"))
    assert 8 < truth["change"]["who5"]["estimands"]["who5_change[all]"] < 12


def test_default_alliance_level_and_ceiling_match_a_large_sample() -> None:
    """The closed-form expected rating and share of 5s (client mixture, providers, session noise)
    against the ratings of ~93k clients."""
    st = simulate_study(SimulationConfig().scaled(30), seed=21)
    q1 = st.truth["alliance_ratings"]["estimands"]
    c = _client_ratings(st)
    m, se = _clustered_mean(c["sum"], c["first_provider"], c["count"])
    assert abs(m - q1["alliance[coach]"]) < 4 * se, (m, se, q1["alliance[coach]"])
    fives = st.sessions.assign(
        f=((st.sessions["wai_goal"] == 5).astype(float) + (st.sessions["wai_bond"] == 5)) / 2
    )
    f = fives.groupby("client_id")["f"].sum().loc[c.index]
    m5, se5 = _clustered_mean(f, c["first_provider"], c["count"])
    assert abs(m5 - q1["share_at_ceiling"]) < 4 * se5, (m5, se5, q1["share_at_ceiling"])


def test_planted_care_and_country_differences_recovered() -> None:
    """Mean ratings by care type and by country of a large sample against the closed-form truth on
    the rating scale, which is not the latent shift (the ceiling compresses it)."""
    shift = {"therapist": -0.4, "coach": 0.0, "both": 0.3}
    cfg = dataclasses.replace(
        SimulationConfig().scaled(30), alliance_care_shift=shift, alliance_country_sd=0.3
    )
    st = simulate_study(cfg, seed=22)
    q1 = st.truth["alliance_ratings"]["estimands"]
    c = _client_ratings(st)
    level = {}
    for care in CARE_TYPES:
        sub = c[c["care_type"] == care]
        level[care] = _clustered_mean(sub["sum"], sub["first_provider"], sub["count"])
        assert abs(level[care][0] - q1[f"alliance[{care}]"]) < 4 * level[care][1], (care, level)
    for care in ("therapist", "both"):
        diff = level[care][0] - level["coach"][0]
        se = np.hypot(level[care][1], level["coach"][1])
        assert abs(diff - q1[f"alliance[{care}-coach]"]) < 4 * se
        assert abs(diff - shift[care]) > 10 * se  # the latent shift is not the rating-scale truth
    by_country = {}
    for k, sub in c.groupby("country"):
        # the care mix within a country is the study's up to sampling: reweight to it
        parts = [
            (share, *_clustered_mean(s["sum"], s["first_provider"], s["count"]))
            for care, share in st.truth["alliance_ratings"]["reference"]["care_share"].items()
            for s in [sub[sub["care_type"] == care]]
        ]
        m = sum(w * x for w, x, _ in parts)
        se = np.sqrt(sum((w * e) ** 2 for w, _, e in parts))
        by_country[k] = m
        assert abs(m - q1[f"alliance_country[{k}]"]) < 4 * se, (k, m, se)
    sd = np.std(list(by_country.values()), ddof=1)
    assert q1["sd_country_alliance"] > 0.1
    assert abs(sd - q1["sd_country_alliance"]) < 0.2 * q1["sd_country_alliance"]


def test_expected_reported_score_matches_brute_force() -> None:
    from alliance_bayes.data.simulate import _expected_reported, _round_to

    rng = np.random.default_rng(0)
    mean = np.array([-5.0, 2.0, 30.0, 97.0])
    x = mean[:, None] + 9.0 * rng.standard_normal((4, 400_000))
    brute = _round_to(x, 4.0, 0.0, 100.0).mean(axis=1)
    np.testing.assert_allclose(_expected_reported(mean, 9.0, 4.0, 0.0, 100.0), brute, atol=0.05)


@pytest.mark.parametrize("reliability", [1.0, 0.7])
def test_planted_reliability_and_regression_to_the_mean_recovered(reliability: float) -> None:
    """Among the clients elevated by their reported baseline: the observed change matches the
    truth; an independent retest of the baseline shows the stated RTM, and the change from the
    retest (the true change) is the observed change less that RTM. The squared correlation of
    the true and the reported baseline is the reliability."""
    cfg = dataclasses.replace(SimulationConfig().scaled(30), who5_reliability=reliability)
    st = simulate_study(cfg, seed=23)
    q2 = st.truth["change"]["who5"]["estimands"]
    lat = st.latent
    x1 = lat["who5_baseline_full"].to_numpy(float)
    t1 = lat["who5_baseline_continuous"].to_numpy(float)
    x2 = lat["who5_followup_full"].to_numpy(float)
    rel = np.corrcoef(t1, x1)[0, 1] ** 2
    assert abs(rel - q2["reliability_reported"]) < 0.01
    assert abs(rel - reliability) < 0.02
    sd_e = q2["sigma_error_planted"]
    assert sd_e == pytest.approx(0.0 if reliability == 1 else 14.09, abs=0.01)
    true = lat["who5_baseline_true"].to_numpy(float)
    retest = np.clip(
        np.round((true + np.random.default_rng(1).normal(0.0, sd_e, len(true))) / 4) * 4, 0, 100
    )
    sel = x1 <= 28
    cl = lat["first_provider"].to_numpy()[sel]
    checks = {
        "who5_change[all]": x2 - x1,
        "rtm[all]": retest - x1,
        "who5_change_beyond_rtm[all]": x2 - retest,
    }
    for name, values in checks.items():
        m, se = _clustered_mean(values[sel], cl)
        assert abs(m - q2[name]) < 4 * se + 0.01, (name, m, se, q2[name])
    assert q2["who5_change[all]"] - q2["who5_change_beyond_rtm[all]"] == pytest.approx(
        q2["rtm[all]"]
    )
    if reliability < 1:
        assert q2["rtm[all]"] > 5  # (1 - rho) times the distance of the elevated from the mean
    else:
        assert q2["rtm[all]"] == 0.0


def test_config_settings_apply_and_every_mistake_is_named_at_once():
    from alliance_bayes.data.simulate import config_with

    base = SimulationConfig()
    cfg = config_with(
        base, ["alliance_per_session=0.05", "alliance_care_shift.therapist=-0.4", "n_coaches=80"]
    )
    assert cfg.alliance_per_session == 0.05 and cfg.n_coaches == 80
    assert cfg.alliance_care_shift == {**base.alliance_care_shift, "therapist": -0.4}
    with pytest.raises(ValueError) as err:
        config_with(
            base,
            [
                "aliance_per_session=1",
                "who5_reliability=high",
                "countries.XX=1",
                "n_coaches=80.5",
                "n_therapists=-3",
                "who5_reliability=nan",
            ],
        )
    message = str(err.value)
    assert "'n_coaches=80.5': n_coaches is a count" in message
    assert "'n_therapists=-3': n_therapists is a count" in message
    assert "'who5_reliability=nan'" in message
    assert "did you mean 'alliance_per_session'" in message
    assert "'high' is not a number" in message
    assert "no entry 'XX'" in message
