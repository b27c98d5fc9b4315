"""Reference-value tests of the estimands and their summary table (no MCMC: hand-made draws)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.model.regression.estimands import KINDS, care_weights_of, compute_estimands
from alliance_bayes.report.estimands import TABLE_COLUMNS, estimand_table
from fake_posterior import CARE_WEIGHTS, make_fake_datatree


def _posterior(**vars_):
    coords = {"chain": np.arange(4), "draw": np.arange(25_000)}
    return xr.Dataset({k: (("chain", "draw"), v) for k, v in vars_.items()}, coords=coords)


def test_table_matches_analytic_normal():
    # 100,000 iid N(1, 2²) draws. MC tolerances: SE(mean) = 2/sqrt(1e5) ≈ 0.0063, so 0.03 is ~5 SE;
    # SE(sd) ≈ 2/sqrt(2e5) ≈ 0.0045 → 0.02; HDI ends (±1.96·2 for a normal) have SE ≈ 0.03 → 0.1;
    # P(>0) = Φ(0.5) with SE ≈ 0.0015 → 0.008.
    rng = np.random.default_rng(20260101)
    post = _posterior(intercept=rng.normal(1.0, 2.0, size=(4, 25_000)))
    table = estimand_table(compute_estimands(post))
    assert list(table.columns) == [*TABLE_COLUMNS, "units"]
    row = table.set_index("estimand").loc["intercept"]
    assert row["mean"] == pytest.approx(1.0, abs=0.03)
    assert row["sd"] == pytest.approx(2.0, abs=0.02)
    z = stats.norm.ppf(0.975)
    assert row["hdi95_low"] == pytest.approx(1.0 - z * 2.0, abs=0.1)
    assert row["hdi95_high"] == pytest.approx(1.0 + z * 2.0, abs=0.1)
    assert row["prob_positive"] == pytest.approx(stats.norm.cdf(0.5), abs=0.008)
    assert row["r_hat"] < 1.01
    assert row["ess_bulk"] > 0.8 * 100_000 and row["ess_tail"] > 0.8 * 100_000
    assert row["mcse_mean"] == pytest.approx(2.0 / np.sqrt(100_000), rel=0.15)


def test_hdi_is_shortest_interval_for_skewed_draws():
    # For an exponential(1) the 95% HDI is [0, -log(0.05)] ≈ [0, 3.00], unlike the ETI.
    rng = np.random.default_rng(1)
    post = _posterior(sigma=rng.exponential(1.0, size=(4, 25_000)))
    row = estimand_table(compute_estimands(post)).set_index("estimand").loc["sigma"]
    assert row["hdi95_low"] == pytest.approx(0.0, abs=0.01)
    assert row["hdi95_high"] == pytest.approx(-np.log(0.05), abs=0.08)


@pytest.fixture(scope="module")
def fake_estimands():
    dt = make_fake_datatree(draws=200, include_nu=True)
    post = dt["posterior"].to_dataset()
    return post, compute_estimands(post, outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS)


def test_stable_names_present(fake_estimands):
    _, est = fake_estimands
    expected = {
        "intercept",
        "b_baseline",
        "b_age",
        "b_male",
        "b_days_in_care",
        "b_goal_within",
        "b_bond_between",
        "b_goal_within[therapist]",
        "b_bond_between[both]",
        "b_goal_within[therapist-coach]",
        "b_bond_between[both-coach]",
        "b_goal-bond_within",
        "b_goal-bond_between",
        "b_care[therapist-coach]",
        "b_care[both-coach]",
        "sd_provider[therapist]",
        "sd_provider[coach]",
        "sd_provider_slope[bond]",
        "sigma",
        "icc_provider[therapist]",
        "icc_provider[coach]",
        "nu",
    }
    assert expected <= set(est.data_vars)
    for name, da in est.data_vars.items():
        assert da.dims == ("chain", "draw"), name
        assert da.attrs["units"], name
        assert da.attrs["kind"] in KINDS, name
    assert "WHO-5 points per 1 point of alliance" in est["b_goal_within"].attrs["units"]


def test_contrasts_are_drawwise_differences(fake_estimands):
    post, est = fake_estimands
    for s in ("goal", "bond"):
        for lv in ("within", "between"):
            for care in ("therapist", "both"):
                want = post["b"].sel(care_type=care, subscale=s, level=lv) - post["b"].sel(
                    care_type="coach", subscale=s, level=lv
                )
                got = est[f"b_{s}_{lv}[{care}-coach]"]
                np.testing.assert_array_equal(got.values, want.values)
                np.testing.assert_array_equal(
                    got.values,
                    est[f"b_{s}_{lv}[{care}]"].values - est[f"b_{s}_{lv}[coach]"].values,
                )
        np.testing.assert_array_equal(
            est[f"b_goal-bond_{lv}"].values,
            est[f"b_goal_{lv}"].values - est[f"b_bond_{lv}"].values,
        )
    np.testing.assert_array_equal(
        est["mu_b_goal_within"].values, post["mu_b"].sel(subscale="goal", level="within").values
    )


def test_pooled_slope_is_the_care_mix_average_of_the_care_type_slopes(fake_estimands):
    post, est = fake_estimands
    for s in ("goal", "bond"):
        for lv in ("within", "between"):
            want = sum(
                w * post["b"].sel(care_type=c, subscale=s, level=lv).values
                for c, w in CARE_WEIGHTS.items()
            )
            np.testing.assert_allclose(est[f"b_{s}_{lv}"].values, want, rtol=1e-12)
    assert "coach 0.650" in est["b_goal_within"].attrs["care_weights"]
    assert est["mu_b_goal_within"].attrs["kind"] == "hyperparameter"


def test_equal_weights_and_absent_care_types():
    post = make_fake_datatree(draws=50, seed=2)["posterior"].to_dataset()
    equal = care_weights_of({"care_share": {"therapist": 0.3, "coach": 0.7}}, "equal")
    assert equal == {"therapist": 0.5, "coach": 0.5}
    est = compute_estimands(post, care_weights=equal)
    b = post["b"].sel(subscale="bond", level="within")
    np.testing.assert_allclose(
        est["b_bond_within"].values,
        0.5 * (b.sel(care_type="therapist") + b.sel(care_type="coach")).values,
    )
    assert "b_goal_within" not in compute_estimands(post)  # no weights, no pooled slope
    with pytest.raises(ValueError, match="sum to 1"):
        compute_estimands(post, care_weights={"coach": 0.5})


def test_pooled_slope_learns_from_data_while_the_hyper_mean_cannot():
    """Conjugate check of why the hyper-mean is not reported as the pooled slope.

    With care-type slopes b_c | mu ~ N(mu, tau) and independent Normal likelihoods of SE s per
    care type, Var(mu | y) = 1/(3/(tau² + s²) + 1/sigma_mu²) stays above 1/(3/tau² + 1/sigma_mu²)
    as s → 0, while the care-mix average's posterior SD goes to 0. Drawn exactly from the
    conjugate posterior, the estimand reproduces both.
    """
    rng = np.random.default_rng(7)
    tau, sigma_mu, n_draws = 2.0, 10.0, 40_000
    floor = (3 / tau**2 + 1 / sigma_mu**2) ** -0.5
    for s in (1.0, 0.1, 0.01):
        y = np.array([1.0, 2.0, 3.0])
        # mu | y, then b | mu, y: the exact conjugate posterior.
        prec_mu = 3 / (tau**2 + s**2) + 1 / sigma_mu**2
        mean_mu = (y.sum() / (tau**2 + s**2)) / prec_mu
        mu = rng.normal(mean_mu, prec_mu**-0.5, size=n_draws)
        prec_b = 1 / tau**2 + 1 / s**2
        b = rng.normal((mu[:, None] / tau**2 + y / s**2) / prec_b, prec_b**-0.5)
        post = xr.Dataset(
            {
                "mu_b": (("chain", "draw", "subscale", "level"), mu.reshape(4, -1, 1, 1)),
                "b": (
                    ("chain", "draw", "care_type", "subscale", "level"),
                    b.reshape(4, -1, 3, 1, 1),
                ),
            },
            coords={
                "care_type": ["therapist", "coach", "both"],
                "subscale": ["goal"],
                "level": ["within"],
            },
        )
        est = compute_estimands(post, care_weights=CARE_WEIGHTS)
        sd_mu = float(est["mu_b_goal_within"].std())
        assert sd_mu == pytest.approx(prec_mu**-0.5, rel=0.03) and prec_mu**-0.5 >= floor
        w = np.array(list(CARE_WEIGHTS.values()))
        shrink = (1 / tau**2) / prec_b  # weight of mu in E(b_c | mu, y)
        exact = np.sqrt(np.sum(w**2) / prec_b + shrink**2 / prec_mu)
        sd_pooled = float(est["b_goal_within"].std())
        assert sd_pooled == pytest.approx(exact, rel=0.03)
    assert sd_pooled < 0.01 < floor


def test_icc_formula(fake_estimands):
    post, est = fake_estimands
    for t in ("therapist", "coach"):
        sp = post["sd_provider"].sel(provider_type=t).values
        sig = post["sigma"].values
        np.testing.assert_allclose(est[f"icc_provider[{t}]"].values, sp**2 / (sp**2 + sig**2))
        assert np.all((est[f"icc_provider[{t}]"].values > 0) & (est[f"icc_provider[{t}]"] < 1))


def test_paper_table2_has_only_fixed_effects_and_sigma():
    dt = make_fake_datatree(draws=100, hierarchical=False, paper_table2=True)
    est = compute_estimands(dt["posterior"].to_dataset())
    assert set(est.data_vars) == {
        "intercept",
        "b_baseline",
        "b_age",
        "b_male",
        "b_days_in_care",
        "b_alliance",
        "sigma",
    }
    table = estimand_table(est)
    assert len(table) == 7 and table["r_hat"].notna().all()


def test_observed_scale_beta_of_a_censored_model():
    post = make_fake_datatree(draws=100, seed=5)["posterior"].to_dataset()
    scales = {
        "outcome_sd": 20.0,
        "baseline_sd": 19.0,
        "covariate_sd": {"age": 9.0},
        "alliance_sd": {"goal": {"within": 0.8}},
    }
    plain = compute_estimands(post, scales=scales, care_weights=CARE_WEIGHTS)
    assert "beta_obs_baseline" not in plain
    share = post["sigma"] * 0 + 0.9
    censored = compute_estimands(
        post.assign(share_uncensored=share), scales=scales, care_weights=CARE_WEIGHTS
    )
    for name in ("baseline", "age", "goal_within"):
        np.testing.assert_allclose(
            censored[f"beta_obs_{name}"].values, 0.9 * censored[f"beta_{name}"].values
        )
    assert "latent-scale" in censored["beta_baseline"].attrs["units"]
    assert "observed-scale" in censored["beta_obs_baseline"].attrs["units"]
