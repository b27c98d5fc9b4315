"""The vectorised R-hat, bulk ESS and tail ESS equal arviz-stats' element-by-element values."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from arviz_stats.base import array_stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from alliance_bayes.rank_diagnostics import (
    TAIL_PROBS,
    UNIFORMITY,
    dataset_diagnostics,
    rank_diagnostics,
    rank_uniformity,
)


def _reference(draws: np.ndarray) -> dict[str, np.ndarray]:
    """arviz-stats' array functions, one element at a time (chain, draw, k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "r_hat": array_stats.rhat(draws, chain_axis=0, draw_axis=1, method="rank"),
            "ess_bulk": array_stats.ess(draws, chain_axis=0, draw_axis=1, method="bulk"),
            "ess_tail": array_stats.ess(
                draws, chain_axis=0, draw_axis=1, method="tail", prob=TAIL_PROBS
            ),
        }


def _ar1(rng, chains: int, draws: int, phi: np.ndarray, df: float = 3.0) -> np.ndarray:
    """AR(1) chains with Student-t innovations, one autocorrelation per element."""
    shocks = rng.standard_t(df, size=(chains, draws, phi.size))
    x = np.empty_like(shocks)
    x[:, 0] = shocks[:, 0]
    for n in range(1, draws):
        x[:, n] = phi * x[:, n - 1] + shocks[:, n]
    return x


def _assert_match(got, ref) -> None:
    for key, expected in ref.items():
        value = getattr(got, key)
        np.testing.assert_array_equal(np.isnan(value), np.isnan(expected), err_msg=key)
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=0, err_msg=key)


def test_matches_arviz_on_hard_chains():
    rng = np.random.default_rng(20261202)
    phi = np.concatenate([np.linspace(-0.9, 0.99, 60), np.zeros(6)])
    x = _ar1(rng, 4, 1000, phi)
    x[..., :5] += np.array([-6.0, 0.0, 0.0, 6.0])[:, None, None]  # chains that disagree
    x[..., 60] = np.round(x[..., 60])  # ties
    x[..., 61] = 2.5  # constant
    x[..., 62] = rng.integers(0, 2, (4, 1000))  # binary
    x[1, 7, 63] = np.nan
    x[..., 64] = np.exp(3 * x[..., 64])  # very skewed
    got = rank_diagnostics(x)
    _assert_match(got, _reference(x))
    assert got.r_hat[:5].min() > 1.1  # and the gate would catch them
    assert np.isnan(got.r_hat[63]) and np.isnan(got.ess_bulk[63])


@settings(max_examples=40, deadline=None)
@given(
    chains=st.integers(1, 4),
    draws=st.integers(2, 41),
    k=st.integers(1, 4),
    phi=st.floats(-0.95, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_arviz_on_any_shape(chains, draws, k, phi, seed):
    x = _ar1(np.random.default_rng(seed), chains, draws, np.full(k, phi))
    _assert_match(rank_diagnostics(x), _reference(x))


def test_dataset_keeps_dims_and_coords():
    rng = np.random.default_rng(3)
    ds = xr.Dataset(
        {
            "a": (("chain", "draw"), rng.normal(size=(2, 50))),
            "b": (("draw", "chain", "g"), rng.normal(size=(50, 2, 3))),
        },
        coords={"g": ["x", "y", "z"]},
    )
    out = dataset_diagnostics(ds)
    assert out["r_hat"]["a"].dims == ()
    assert out["ess_tail"]["b"].dims == ("g",)
    assert list(out["ess_bulk"]["b"].coords["g"].values) == ["x", "y", "z"]
    direct = rank_diagnostics(ds["b"].transpose("chain", "draw", "g").values)
    np.testing.assert_array_equal(out["ess_bulk"]["b"].values, direct.ess_bulk)


def test_statistics_can_be_chosen():
    x = _ar1(np.random.default_rng(4), 2, 100, np.array([0.3, 0.6]))
    only = rank_diagnostics(x, statistics=("ess_bulk",))
    np.testing.assert_array_equal(only.ess_bulk, rank_diagnostics(x).ess_bulk)
    assert np.isnan(only.r_hat).all() and np.isnan(only.ess_tail).all()
    with pytest.raises(ValueError, match="unknown statistics"):
        rank_diagnostics(x, statistics=("ess_mean",))


@pytest.mark.parametrize("probs", [(0.05, 0.95), (0.11, 0.89)])
def test_tail_probabilities_are_used(probs):
    x = _ar1(np.random.default_rng(9), 4, 400, np.array([0.5, 0.8]))
    ref = array_stats.ess(x, chain_axis=0, draw_axis=1, method="tail", prob=probs)
    np.testing.assert_allclose(rank_diagnostics(x, probs).ess_tail, ref, rtol=1e-10)


def _mtc_reference(x: np.ndarray, thin: int) -> np.ndarray:
    """arviz-stats' multi-chain uniformity p-value, one element at a time (chain, draw, k)."""
    out = []
    for e in np.moveaxis(x[:, ::thin], -1, 0):
        u = stats.rankdata(e.ravel(), method="average").reshape(e.shape) / e.size
        out.append(array_stats.mchain_uniformity_test(u)[0])
    return np.array(out)


@pytest.mark.parametrize("thin", [1, 3])
def test_uniformity_matches_arviz(thin):
    x = _ar1(np.random.default_rng(11), 4, 300, np.linspace(0.0, 0.6, 8))
    x[0, :, :3] += 1.0  # one chain off: tiny p-values
    got, ref = rank_uniformity(x, thin=thin), _mtc_reference(x, thin)
    assert got[:3].max() < 1e-4
    # arviz takes 1 - CDF, which loses digits below about 1e-6; ours sums each tail.
    big = ref > 1e-6
    np.testing.assert_allclose(got[big], ref[big], rtol=1e-8)
    np.testing.assert_allclose(got[~big], ref[~big], rtol=1e-3, atol=1e-14)


def test_uniformity_thinning_calibrates_autocorrelated_chains():
    # 100 elements of four AR(1) chains (autocorrelation 0.8) that all target one law. Read on
    # every draw the test rejects about 80% of them at 0.01; thinned, the measured rate is 2.5-3%,
    # so more than 8 of 100 has probability about 0.003 (binomial, p = 0.03).
    x = _ar1(np.random.default_rng(12), 4, 1000, np.full(100, 0.8), df=30.0)
    assert np.mean(rank_uniformity(x, thin=None) <= 0.01) > 0.5
    assert np.sum(rank_uniformity(x) <= 0.01) <= 8
    # The same through rank_diagnostics.
    np.testing.assert_array_equal(
        rank_diagnostics(x, statistics=(UNIFORMITY,)).uniformity_p, rank_uniformity(x)
    )


def test_uniformity_flags_a_shifted_chain():
    # One chain of 4 x 500 independent draws shifted by 1 SD: p far below 0.01.
    x = np.random.default_rng(13).normal(size=(4, 500, 3))
    x[2, :, 0] += 1.0
    p = rank_uniformity(x)
    assert p[0] < 1e-6 and (p[1:] > 0.01).all()
    assert np.isnan(rank_diagnostics(x, statistics=("r_hat",)).uniformity_p).all()


def test_blocked_thinning_factors_equal_those_of_all_elements_at_once(monkeypatch):
    """The uniformity test's thinning factors are computed a few elements at a time (bounded
    memory), with the same values as on every element at once, non-finite elements left NaN."""
    from alliance_bayes import rank_diagnostics as rd

    rng = np.random.default_rng(4)
    flat = rng.standard_normal((23, 4, 200)).cumsum(axis=2)
    flat[5, 1, 7] = np.nan
    columns = np.flatnonzero(np.isfinite(flat).all(axis=(1, 2)))
    monkeypatch.setattr(rd, "_UNIFORMITY_CELLS", 3 * 4 * 200)  # three elements a block
    got = rd._thin_factors_of(flat, columns)
    np.testing.assert_array_equal(got[columns], rd.thin_factors(flat[columns]))
    assert np.isnan(got[5]) and np.isfinite(got[columns]).all()
