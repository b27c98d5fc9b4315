"""nutpie's C entry points compiled by :mod:`alliance_bayes.compiled_wrappers` equal nutpie's own.

Both compiles of one small model (a shared matrix, a shared vector and a shared scalar, a
transformed parameter, a deterministic) are called at the same random points: the log density,
its gradient and the expanded draws must agree exactly, before and after new data are swapped in,
and the same seed must give the same draws.
"""

from __future__ import annotations

import ctypes
import warnings

import numpy as np
import pymc as pm
import pytensor
import pytest

from alliance_bayes.compiled_wrappers import NUTPIE_VERSION, cached_wrappers
from alliance_bayes.inference import REPRODUCIBLE_COMPILE

nutpie = pytest.importorskip("nutpie")
pytestmark = [
    pytest.mark.mcmc,
    pytest.mark.skipif(nutpie.__version__ != NUTPIE_VERSION, reason="wrappers mirror one nutpie"),
]

_DOUBLE = ctypes.POINTER(ctypes.c_double)


def _model(seed: int = 0) -> pm.Model:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + rng.normal(size=40)
    with pm.Model() as model:
        x_data = pm.Data("x", x)
        y_data = pm.Data("y", y)
        shift = pm.Data("shift", 0.25)
        beta = pm.Normal("beta", 0, 2, shape=3)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Deterministic("beta_sum", beta.sum())
        pm.Normal("y_obs", x_data @ beta + shift, sigma, observed=y_data)
    return model


def _compile(model: pm.Model, cached: bool):
    with (
        warnings.catch_warnings(),
        pytensor.config.change_flags(**REPRODUCIBLE_COMPILE),
    ):
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        if not cached:
            return nutpie.compile_pymc_model(model, freeze_model=False)
        with cached_wrappers():
            return nutpie.compile_pymc_model(model, freeze_model=False)


def _logp(compiled, x: np.ndarray) -> tuple[int, float, np.ndarray]:
    grad, value = np.zeros_like(x), np.zeros(())
    rc = compiled.compiled_logp_func.ctypes(
        x.size,
        x.ctypes.data_as(_DOUBLE),
        grad.ctypes.data_as(_DOUBLE),
        value.ctypes.data_as(_DOUBLE),
        compiled.user_data.ctypes.data_as(ctypes.c_void_p),
    )
    return rc, float(value), grad


def _expand(compiled, x: np.ndarray) -> tuple[int, np.ndarray]:
    out = np.zeros(compiled.n_expanded)
    rc = compiled.compiled_expand_func.ctypes(
        x.size,
        out.size,
        x.ctypes.data_as(_DOUBLE),
        out.ctypes.data_as(_DOUBLE),
        compiled.user_data.ctypes.data_as(ctypes.c_void_p),
    )
    return rc, out


@pytest.fixture(scope="module")
def both():
    model = _model()
    return _compile(model, cached=False), _compile(model, cached=True)


def test_cached_wrappers_are_used(both):
    plain, cached = both
    # nutpie names its data containers at random; the cached compile names them in order.
    assert set(cached.shared_data) == {"s0", "s1", "s2"}
    assert set(plain.shared_data) != set(cached.shared_data)


def test_same_log_density_gradient_and_expansion(both):
    plain, cached = both
    rng = np.random.default_rng(1)
    new = _model(seed=5)
    swapped = {name: new[name].get_value() for name in ("x", "y")}
    pairs = [(plain, cached), (plain.with_data(**swapped), cached.with_data(**swapped))]
    for p, c in pairs:
        for _ in range(5):
            point = rng.normal(size=p.n_dim)
            rc_p, value_p, grad_p = _logp(p, point)
            rc_c, value_c, grad_c = _logp(c, point)
            assert rc_p == rc_c == 0
            assert value_c == value_p
            np.testing.assert_array_equal(grad_c, grad_p)
            expanded_p, expanded_c = _expand(p, point), _expand(c, point)
            assert expanded_p[0] == expanded_c[0] == 0
            np.testing.assert_array_equal(expanded_c[1], expanded_p[1])
    # New data change the density (so the comparison above read the swapped containers).
    point = rng.normal(size=plain.n_dim)
    assert _logp(pairs[1][1], point)[1] != _logp(cached, point)[1]


def test_wrong_dimension_is_refused(both):
    _, cached = both
    point = np.zeros(cached.n_dim + 1)
    assert _logp(cached, point)[0] == -1


def test_same_draws(both):
    plain, cached = both
    kwargs = dict(draws=50, tune=50, chains=1, seed=3, progress_bar=False)
    a = nutpie.sample(plain, **kwargs)
    b = nutpie.sample(cached, **kwargs)
    for name in ("beta", "sigma", "beta_sum"):
        np.testing.assert_array_equal(b.posterior[name].values, a.posterior[name].values)


def test_many_data_containers():
    """More containers than CPython passes as plain arguments (30): packed into tuples."""
    rng = np.random.default_rng(5)
    with pm.Model() as model:
        parts = [pm.Data(f"d{i}", rng.normal(size=4)) for i in range(32)]
        beta = pm.Normal("beta", 0, 1, shape=4)
        pm.Normal("y_obs", sum(p * beta for p in parts), 1.0, observed=rng.normal(size=4))
    plain, cached = _compile(model, cached=False), _compile(model, cached=True)
    assert set(cached.shared_data) == {f"s{i}" for i in range(32)}  # the cached path ran
    x = rng.normal(size=4)
    rc_a, value_a, grad_a = _logp(plain, x)
    rc_b, value_b, grad_b = _logp(cached, x)
    assert rc_a == rc_b == 0
    assert value_a == value_b
    np.testing.assert_array_equal(grad_a, grad_b)
