"""Rubin's rules with the Barnard–Rubin small-sample degrees of freedom, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.imputation import barnard_rubin_df, complete_data_df, rubin_summary
from fake_posterior import make_fake_datatree


def _refits(centres: tuple[float, ...], seed: int = 9) -> list[xr.Dataset]:
    """Refits whose draws of ``b`` have exactly the given means and variance 1."""
    rng = np.random.default_rng(seed)
    out = []
    for centre in centres:
        z = rng.standard_normal(20_000)
        z = (z - z.mean()) / z.std(ddof=1)
        out.append(xr.Dataset({"b": (("chain", "draw"), (centre + z).reshape(4, -1))}))
    return out


def test_barnard_rubin_degrees_of_freedom_by_hand():
    """M = 3 refits with means 1, 2, 3 and variance 1: W = 1, B = 1, T = 7/3, λ = 4/7.

    Rubin (1987): ν_old = (M - 1) / λ² = 49/8. Barnard & Rubin (1999) with ν_com = 20:
    ν_obs = (21/23) · 20 · (3/7) = 180/23, ν = 1 / (8/49 + 23/180) = 8820/2567 ≈ 3.436.
    """
    row = rubin_summary(_refits((1.0, 2.0, 3.0)), df_complete=20).set_index("estimand").loc["b"]
    assert row["fmi"] == pytest.approx(4 / 7)
    assert row["df"] == pytest.approx(8820 / 2567)
    assert row["df_complete"] == 20
    half = stats.t.ppf(0.975, 8820 / 2567) * np.sqrt(7 / 3)
    assert row["ci95_high"] - 2.0 == pytest.approx(half)
    assert row["ci95_low"] - 2.0 == pytest.approx(-half)
    # ν_com = ∞ is Rubin's 1987 value; a finite ν_com only ever lowers it
    assert barnard_rubin_df(3, 4 / 7) == pytest.approx(49 / 8)
    assert barnard_rubin_df(3, 4 / 7, 1e12) == pytest.approx(49 / 8)
    assert rubin_summary(_refits((1.0, 2.0, 3.0)))["df"].iloc[0] == pytest.approx(49 / 8)


def test_barnard_rubin_never_exceeds_the_complete_data_degrees_of_freedom():
    """Little missing information: Rubin's ν is huge (M = 5, λ = 0.01: 40,000), Barnard–Rubin's
    stays below ν_com; with no between-imputation variance it is ν_com (ν_com + 1)/(ν_com + 3)."""
    assert barnard_rubin_df(5, 0.01) == pytest.approx(40_000)
    for nu_com in (10.0, 50.0, 300.0):
        nu = barnard_rubin_df(5, 0.01, nu_com)
        assert nu < nu_com
        assert barnard_rubin_df(5, 0.0, nu_com) == pytest.approx(
            nu_com * (nu_com + 1) / (nu_com + 3)
        )


def test_complete_data_degrees_of_freedom_count_population_parameters():
    """Clients minus the posterior scalars not indexed by client or provider."""
    post = make_fake_datatree(n_providers=6)["posterior"].to_dataset()
    # intercept 1, b_baseline 1, b_covariate 3, sigma 1, mu_b 4, b 12, b_care 2, sd_provider 2,
    # sd_provider_slope 2, chol_corr 4; z_provider and u_provider are per provider
    assert complete_data_df(post, 300) == 300 - 32
    assert complete_data_df(post, 10) == 1
