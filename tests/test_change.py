"""The change family (question 2): closed forms, Jacobson–Truax, spec, and recovery of a planted change."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import truncnorm

from alliance_bayes.model.change.design import CARE_TYPES
from alliance_bayes.model.change.estimands import (
    change_given_baselines,
    compute_change_estimands,
    reliable_change,
    selected_change,
)
from alliance_bayes.model.families import family_of
from alliance_bayes.spec import SpecError, load_spec, parse_spec
from change_simulator import CARE, simulate_change_study

# A population near the shipped study's WHO-5: true SD 18, error SD from ρ = 0.75.
M1, M2, TAU1, TAU2, CORR, CUT = 45.0, 52.0, 18.0, 17.0, 0.7, 28.0
SIGMA_E = TAU1 * np.sqrt((1 - 0.75) / 0.75)


def _monte_carlo(n: int = 4_000_000, seed: int = 5, var_v: float = 0.0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    z1, z2, e1, e2, v = rng.standard_normal((5, n))
    t1 = M1 + TAU1 * z1
    t2 = M2 + TAU2 * (CORR * z1 + np.sqrt(1 - CORR**2) * z2) + np.sqrt(var_v) * v
    x1, x2 = t1 + SIGMA_E * e1, t2 + SIGMA_E * e2
    sel = x1 <= CUT
    d = x2[sel] - x1[sel]
    rc = 1.96 * np.sqrt(2.0) * SIGMA_E
    return {
        "p_selected": sel.mean(),
        "observed": d.mean(),
        "true": (t2[sel] - t1[sel]).mean(),
        "improved": np.mean(d >= rc),
        "recovered": np.mean((d >= rc) & (x2[sel] > CUT)),
        "deteriorated": np.mean(d <= -rc),
    }


def test_selected_change_matches_a_simulated_bivariate_normal():
    closed = selected_change(M1, M2, TAU1, TAU2, CORR, SIGMA_E, 9.0, CUT)
    mc = _monte_carlo(var_v=9.0)
    for key in ("observed", "true"):
        assert closed[key] == pytest.approx(mc[key], abs=0.05), key
    for key in ("p_selected", "improved", "recovered", "deteriorated"):
        assert closed[key] == pytest.approx(mc[key], abs=0.003), key
    assert closed["rtm"] == pytest.approx(closed["observed"] - closed["true"])
    assert closed["rtm"] > 3.0  # the selected's error part does not recur


def test_rtm_is_the_truncated_normal_mean_shortfall_times_the_error_share():
    # No true change and a perfectly stable true score: all of the observed change is regression to
    # the mean, (1 − ρ)(μ − E[X1 | X1 <= c]) (Barnett et al. 2005, doi:10.1093/ije/dyh299).
    rho = TAU1**2 / (TAU1**2 + SIGMA_E**2)
    sd1 = np.sqrt(TAU1**2 + SIGMA_E**2)
    mean_selected = truncnorm.mean(-np.inf, (CUT - M1) / sd1, loc=M1, scale=sd1)
    r = selected_change(M1, M1, TAU1, TAU1, 1.0, SIGMA_E, 0.0, CUT)
    assert r["true"] == pytest.approx(0.0, abs=1e-9)
    assert r["observed"] == pytest.approx((1 - rho) * (M1 - mean_selected), rel=1e-9)
    assert r["rtm"] == pytest.approx(r["observed"], rel=1e-9)


def test_reliable_change_criterion_is_jacobson_truax():
    # RC = 1.96 S_diff, S_diff = sqrt(2 SE^2), SE = SD sqrt(1 - r) (Jacobson & Truax 1991).
    sd, r = 22.0, 0.81
    se = sd * np.sqrt(1 - r)
    assert reliable_change(sd, r) == pytest.approx(1.96 * np.sqrt(2 * se**2))
    assert reliable_change(20.0, 0.8) == pytest.approx(24.79, abs=0.005)


def _fake_posterior(m1, m2, sign_change=1.0, draws=40):
    """A posterior of the change model whose every draw is the same population."""
    rng = np.random.default_rng(0)
    shape = (2, draws)

    def full(value, *extra):
        return np.broadcast_to(value, shape + extra).copy()

    dims, care = ("chain", "draw"), ("chain", "draw", "care_type")
    rho = np.clip(0.75 + 0.01 * rng.standard_normal(shape), 0.5, 0.95)
    return xr.Dataset(
        {
            "mu_true_baseline": (care, full(np.asarray(m1), 3)),
            "mu_true_followup": (care, full(np.asarray(m2), 3)),
            "mean_provider_care": (care, np.zeros((*shape, 3))),
            "var_provider_care": (care, np.zeros((*shape, 3))),
            "sd_true": (("chain", "draw", "time"), full(np.asarray([TAU1, TAU2]), 2)),
            "corr_true": (dims, full(CORR)),
            "reliability": (dims, rho),
            "sigma_error": (dims, np.sqrt(1 - rho) * 20.0),
            "sd_provider": (("chain", "draw", "provider_type"), full(np.asarray([1.0, 2.0]), 2)),
        },
        coords={
            "care_type": list(CARE_TYPES),
            "time": ["baseline", "followup"],
            "provider_type": ["therapist", "coach"],
        },
    )


BASELINES = {
    "therapist": {"values": [8.0, 16.0, 24.0, 28.0], "counts": [5.0, 10.0, 20.0, 5.0]},
    "coach": {"values": [12.0, 20.0, 28.0], "counts": [10.0, 30.0, 20.0]},
    "both": {"values": [4.0, 24.0], "counts": [3.0, 7.0]},
}


def _scales(sign=1.0, cutoff=28.0, baselines=BASELINES):
    return {"sign": sign, "cutoff": cutoff, "baseline_sd": 20.0, "elevated_baselines": baselines}


def test_estimands_average_over_the_elevated_clients_own_baselines():
    m1, m2 = [40.0, 50.0, 45.0], [50.0, 55.0, 52.0]
    post = _fake_posterior(m1, m2)
    est = compute_change_estimands(post, _scales(), prefix="who5", units="WHO-5 points")
    for g in (*CARE_TYPES, "all"):
        for name in ("who5_change", "who5_change_beyond_rtm", "rtm", "who5_change_d"):
            assert f"{name}[{g}]" in est
        for name in ("reliably_improved", "recovered", "reliably_deteriorated"):
            assert 0.0 <= float(est[f"{name}[{g}]"].min()) <= 1.0
    # Per client: RTM = (σ_e²/V1)(m1 − y); the coach group's mean baseline is 21.33.
    sigma_e = post["sigma_error"].values
    y_coach = np.average(BASELINES["coach"]["values"], weights=BASELINES["coach"]["counts"])
    expected = sigma_e**2 / (TAU1**2 + sigma_e**2) * (50.0 - y_coach)
    np.testing.assert_allclose(est["rtm[coach]"].values, expected)
    # Observed change: E[X2 | y] − y with slope C/V1, averaged over the baselines.
    v1 = TAU1**2 + sigma_e**2
    observed = 55.0 + CORR * TAU1 * TAU2 / v1 * (y_coach - 50.0) - y_coach
    np.testing.assert_allclose(est["who5_change[coach]"].values, observed)
    n = {c: sum(b["counts"]) for c, b in BASELINES.items()}
    mixed = sum(n[c] * est[f"who5_change[{c}]"] for c in CARE_TYPES) / sum(n.values())
    np.testing.assert_allclose(est["who5_change[all]"], mixed)
    np.testing.assert_allclose(est["who5_change_d[all]"], est["who5_change[all]"] / 20.0)
    np.testing.assert_allclose(
        est["reliable_change_criterion"], reliable_change(20.0, post["reliability"])
    )


def test_estimands_given_baselines_agree_with_the_truncated_normal_closed_form():
    # Baselines drawn from the model's own normal, selected: the empirical average converges to
    # the truncated-normal closed form.
    sigma_e = 10.0
    rng = np.random.default_rng(2)
    x1 = M1 + np.sqrt(TAU1**2 + sigma_e**2) * rng.standard_normal(2_000_000)
    values, counts = np.unique(np.round(x1[x1 <= CUT], 1), return_counts=True)
    given = change_given_baselines(values, counts, M1, M2, TAU1, TAU2, CORR, sigma_e, 4.0, CUT)
    closed = selected_change(M1, M2, TAU1, TAU2, CORR, sigma_e, 4.0, CUT)
    for key in ("observed", "true", "rtm"):
        assert given[key] == pytest.approx(closed[key], abs=0.02), key
    for key in ("improved", "recovered", "deteriorated"):
        assert given[key] == pytest.approx(closed[key], abs=0.002), key


def test_phq9_change_is_a_fall_and_its_rtm_negative():
    # The same populations mirrored onto PHQ-9's direction: X -> -X, selection X1 >= -28.
    mirrored = {
        c: {"values": [-v for v in b["values"]], "counts": b["counts"]}
        for c, b in BASELINES.items()
    }
    who5 = compute_change_estimands(
        _fake_posterior([40.0, 50.0, 45.0], [50.0, 55.0, 52.0]),
        _scales(),
        prefix="who5",
        units="WHO-5 points",
    )
    phq9 = compute_change_estimands(
        _fake_posterior([-40.0, -50.0, -45.0], [-50.0, -55.0, -52.0]),
        _scales(sign=-1.0, cutoff=-28.0, baselines=mirrored),
        prefix="phq9",
        units="PHQ-9 points",
    )
    np.testing.assert_allclose(phq9["phq9_change[all]"], -who5["who5_change[all]"])
    np.testing.assert_allclose(phq9["rtm[both]"], -who5["rtm[both]"])
    np.testing.assert_allclose(phq9["recovered[coach]"], who5["recovered[coach]"])
    assert float(phq9["rtm[all]"].mean()) < 0


def test_a_care_type_without_elevated_clients_is_left_out():
    baselines = {**BASELINES, "coach": {"values": [], "counts": []}}
    est = compute_change_estimands(
        _fake_posterior([40.0, 50.0, 45.0], [50.0, 55.0, 52.0]),
        _scales(baselines=baselines),
        prefix="who5",
        units="WHO-5 points",
    )
    assert "who5_change[coach]" not in est and "who5_change[all]" in est


def test_the_change_spec_selects_its_family_and_checks_the_reliability():
    spec = load_spec("wellbeing_change")
    assert family_of(spec).name == "change"
    assert spec.change is not None and spec.change.reliability_source.startswith("Schougaard")
    assert "change" not in load_spec("who5_change").to_dict()
    base = 'name = "x"\noutcome = "who5_followup"\n'
    with pytest.raises(SpecError, match="reliability_mean"):
        parse_spec(base + "[change]\nreliability_mean = 1.2\n")
    with pytest.raises(SpecError, match="every client"):
        parse_spec(base + '[data]\nsample = "elevated"\n[change]\n')


def test_the_simulator_plants_its_reliability():
    _, truth, scores = simulate_change_study(seed=3, n_per_care=(3000, 3000, 3000), sd_provider=0)
    for care in CARE:
        s = scores[scores.care == care]
        reliability = np.var(s.t1) / np.var(s.x1)
        assert reliability == pytest.approx(truth.reliability, abs=0.03)
        assert (s.t2 - s.t1).mean() == pytest.approx(truth.true_change[care], abs=0.6)


@pytest.mark.mcmc
def test_the_model_recovers_a_planted_change_that_the_naive_mean_change_overstates(tmp_path):
    from alliance_bayes.fitting import design_of, fit_design, settings_for

    study, truth, scores = simulate_change_study(seed=1)
    # Two waves cannot identify the reliability: the prior carries it, centred on the planted value.
    spec = load_spec(
        "wellbeing_change",
        change={"reliability_mean": truth.reliability, "reliability_sd": 0.03},
        sampler={"draws": 300, "tune": 300, "chains": 2},
    )
    design = design_of(spec, study)
    fit = fit_design(spec, design, settings_for(spec, seed=3, progress=False))
    est = fit.estimands

    # The planted true change of the elevated clients, given their observed baselines.
    sigma_e = truth.sd_true * np.sqrt((1 - truth.reliability) / truth.reliability)
    elevated = scores.x1 <= truth.cutoff
    parts = {
        c: change_given_baselines(
            scores.x1[elevated & (scores.care == c)].to_numpy(),
            np.ones(int((elevated & (scores.care == c)).sum())),
            truth.mean_baseline[c],
            truth.mean_baseline[c] + truth.true_change[c],
            truth.sd_true,
            truth.sd_true,
            truth.corr_true,
            sigma_e,
            0.0,
            truth.cutoff,
        )
        for c in CARE
    }
    n = scores.care[elevated].value_counts()
    planted = sum(n[c] * parts[c]["true"] for c in CARE) / n.sum()
    naive = float((scores.x2 - scores.x1)[elevated & scores.observed].mean())

    beyond = est["who5_change_beyond_rtm[all]"].values.ravel()
    lo, hi = np.quantile(beyond, [0.025, 0.975])
    assert lo < planted < hi
    assert not lo < naive < hi  # the paper's naive mean change carries the RTM
    assert naive - planted > 5.0
    rtm = est["rtm[all]"].values.ravel()
    assert np.quantile(rtm, 0.025) > 4.0
    observed = est["who5_change[all]"].values.ravel()
    assert np.quantile(observed, 0.025) < naive < np.quantile(observed, 0.975)
    assert float(np.median(est["reliability"])) == pytest.approx(truth.reliability, abs=0.03)

    path = fit.save(tmp_path, run="test", figure_formats=("png",))
    report = (path / "report.md").read_text(encoding="utf-8")
    assert "who5_change_beyond_rtm[all]" in report and "Schougaard" in report


def test_the_phq9_twin_selects_by_phq9_at_or_above_its_cutoff(shipped_study):
    from alliance_bayes.fitting import design_of

    spec = load_spec("depression_course")
    design = design_of(spec, shipped_study)
    scales = design.scales()
    phq9 = shipped_study.clients["phq9_baseline"].dropna().to_numpy(dtype=float)
    assert design.n_clients == phq9.size  # every client with a PHQ-9 baseline, followed up or not
    assert scales["sign"] == -1.0 and scales["n_elevated"] == int((phq9 >= 10).sum())
    counted = sum(sum(b["counts"]) for b in scales["elevated_baselines"].values())
    assert counted == scales["n_elevated"]
    assert min(min(b["values"], default=10) for b in scales["elevated_baselines"].values()) >= 10


def test_the_elevated_clients_own_covariates_shift_their_means():
    """With covariates, each care type's elevated clients are at their own mean covariate row
    x̄: the estimands are those of a model without covariates whose means are shifted by
    x̄'β₁ (baseline) and x̄'(β₁ + δ) (follow-up). A covariate that moves only the baseline
    (δ = 0) leaves the change of clients with these baselines as if their mean were shifted."""
    m1, m2 = [40.0, 50.0, 45.0], [50.0, 55.0, 52.0]
    b1, delta = np.array([3.0, -1.5]), np.array([0.0, 2.0])
    rows = {"therapist": [0.8, -0.2], "coach": [-0.5, 0.4], "both": [0.0, 0.0]}
    post = _fake_posterior(m1, m2)
    shape = post["corr_true"].shape
    with_x = post.assign(
        b_covariate_baseline_z=(("chain", "draw", "covariate"), np.broadcast_to(b1, (*shape, 2))),
        b_covariate_change_z=(("chain", "draw", "covariate"), np.broadcast_to(delta, (*shape, 2))),
    ).assign_coords(covariate=["age", "diagnosis[anxiety]"])
    est = compute_change_estimands(
        with_x, _scales() | {"elevated_covariates": rows}, prefix="who5", units="WHO-5 points"
    )
    shift1 = np.array([np.dot(rows[c], b1) for c in CARE_TYPES])
    shift2 = np.array([np.dot(rows[c], b1 + delta) for c in CARE_TYPES])
    shifted = _fake_posterior(np.add(m1, shift1), np.add(m2, shift2))
    expected = compute_change_estimands(shifted, _scales(), prefix="who5", units="WHO-5 points")
    for name in ("who5_change[coach]", "rtm[therapist]", "who5_change_beyond_rtm[all]"):
        np.testing.assert_allclose(est[name].values, expected[name].values, rtol=1e-12)
    # without the row (an older bundle) nothing is shifted
    plain = compute_change_estimands(with_x, _scales(), prefix="who5", units="WHO-5 points")
    unshifted = compute_change_estimands(post, _scales(), prefix="who5", units="WHO-5 points")
    np.testing.assert_allclose(plain["rtm[coach]"].values, unshifted["rtm[coach]"].values)
