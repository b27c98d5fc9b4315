"""Reference-value tests of the estimands and their summary table (no MCMC: hand-made draws)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.report.estimands import KINDS, TABLE_COLUMNS, compute_estimands, estimand_table
from fake_posterior import make_fake_datatree


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
    return post, compute_estimands(post, outcome_units="WHO-5 points")


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
        est["b_goal_within"].values, post["mu_b"].sel(subscale="goal", level="within").values
    )


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
