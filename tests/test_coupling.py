"""The fused rank-one product of provider pairs: factors, values and gradients in both backends."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from alliance_bayes.model.regression.coupling import (
    RankOneScatter,
    rank_one_factors,
    rank_one_scatter,
)


def _blocks(rng, k, n_eff):
    """Symmetric PSD blocks as a pair's would be: sums of one to four clients' w z zᵀ."""
    out = np.zeros((k, n_eff, n_eff))
    for b in out:
        for _ in range(rng.integers(1, 5)):
            z = np.r_[1.0, rng.normal(size=n_eff - 1)]
            b += rng.uniform(0.04, 0.25) * np.outer(z, z)
    return out


def _dense(blocks, rows, cols, n_out, n_in):
    """The same product as one dense (n_out·E, n_in·E) matrix, built block by block."""
    n_eff = blocks.shape[1]
    dense = np.zeros((n_out * n_eff, n_in * n_eff))
    for b, r, c in zip(blocks, rows, cols, strict=True):
        dense[r * n_eff : (r + 1) * n_eff, c * n_eff : (c + 1) * n_eff] += b
    return dense


@pytest.mark.parametrize("n_eff", [1, 2, 3])
def test_rank_one_factors_rebuild_the_blocks_with_no_more_terms_than_their_rank(n_eff):
    rng = np.random.default_rng(n_eff)
    blocks = _blocks(rng, 50, n_eff)
    factors, block = rank_one_factors(blocks)
    rebuilt = np.zeros_like(blocks)
    np.add.at(rebuilt, block, factors[:, :, None] * factors[:, None, :])
    np.testing.assert_allclose(rebuilt, blocks, rtol=1e-12, atol=1e-14)
    ranks = np.linalg.matrix_rank(blocks)
    np.testing.assert_array_equal(np.bincount(block, minlength=len(blocks)), ranks)


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "NUMBA"])
@pytest.mark.parametrize("n_eff", [1, 3])
def test_scatter_equals_the_dense_product_and_its_gradient_the_transpose(mode, n_eff):
    rng = np.random.default_rng(0)
    n_in, n_out, k = 7, 5, 40
    blocks = _blocks(rng, k, n_eff)
    rows, cols = rng.integers(0, n_out, k), rng.integers(0, n_in, k)
    factors, block = rank_one_factors(blocks)
    dense = _dense(blocks, rows, cols, n_out, n_in)
    x = rng.normal(size=(n_in, n_eff))
    weights = rng.normal(size=(n_out, n_eff))
    xv = pt.matrix("x")
    out = rank_one_scatter(xv, factors, rows[block], cols[block], n_out)
    fn = pytensor.function([xv], [out, pytensor.grad((out * weights).sum(), xv)], mode=mode)
    value, gradient = fn(x)
    np.testing.assert_allclose(value.ravel(), dense @ x.ravel(), rtol=1e-10)
    # The gradient of w·(Dx) is Dᵀw.
    np.testing.assert_allclose(gradient.ravel(), dense.T @ weights.ravel(), rtol=1e-10)


def test_scatter_gradient_by_finite_differences():
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(30, 3))
    rows, cols = rng.integers(0, 4, 30), rng.integers(0, 6, 30)
    verify_grad(
        lambda xv: RankOneScatter()(xv, factors, rows, cols, 4),
        [rng.normal(size=(6, 3))],
        rng=np.random.default_rng(3),
    )


def test_scatter_refuses_positions_that_are_not_integers():
    with pytest.raises(TypeError, match="integer"):
        rank_one_scatter(np.ones((3, 2)), np.ones((1, 2)), np.zeros(1), np.zeros(1), 4)


def test_scatter_with_no_pairs_is_zero():
    x = pt.as_tensor_variable(np.ones((3, 2)))
    empty = np.zeros(0, dtype=np.int32)
    out = rank_one_scatter(x, np.zeros((0, 2)), empty, empty, 4).eval()
    np.testing.assert_array_equal(out, np.zeros((4, 2)))
