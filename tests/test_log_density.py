"""The vectorised log density agrees with one call per draw of the unbatched function."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from alliance_bayes.inference import (
    AUXILIARY_MODE,
    LOG_DENSITY_BLOCK,
    auxiliary_compilation,
    compile_log_density,
    initial_points_without_c,
    log_density,
)


def _toy_model(rng):
    coords = {"client": np.arange(7), "provider": np.arange(3), "term": ["a", "b"]}
    with pm.Model(coords=coords) as model:
        provider = pm.Data("provider_of", rng.integers(0, 3, 7), dims="client")
        sd = pm.HalfNormal("sd", 1.0)
        effect = pm.Normal("effect", 0.0, sd, dims="provider")
        beta = pm.Normal("beta", 0.0, 1.0, dims="term")
        x = pm.Data("x", rng.normal(size=7), dims="client")
        mu = beta[0] + beta[1] * x + effect[provider]
        pm.Normal("y", mu, 1.5, observed=rng.normal(size=7), dims="client")
    return model


def test_batched_log_density_matches_one_call_per_draw():
    rng = np.random.default_rng(20221013)
    model = _toy_model(rng)
    # More draws than one block, and not a multiple of it, so the block seams are exercised.
    n_chains, n_draws = 2, LOG_DENSITY_BLOCK // 2 + 37
    posterior = xr.Dataset(
        {
            "sd": (("chain", "draw"), rng.gamma(2.0, 0.5, (n_chains, n_draws))),
            "effect": (("chain", "draw", "provider"), rng.normal(size=(n_chains, n_draws, 3))),
            "beta": (("chain", "draw", "term"), rng.normal(size=(n_chains, n_draws, 2))),
        },
        coords={"chain": [0, 1], "draw": np.arange(n_draws), "provider": np.arange(3)},
    )
    rvs = [model["y"], *model.free_RVs]
    batched = log_density(model, posterior, rvs, "c")

    _, fn, free = compile_log_density(model, [rv.name for rv in rvs], "c")
    for c in range(n_chains):
        for d in range(0, n_draws, 17):
            values = fn(*(posterior[name].values[c, d] for name in free))
            for rv, value in zip(rvs, values, strict=True):
                np.testing.assert_allclose(
                    batched[rv.name].values[c, d], value, rtol=1e-12, atol=1e-12
                )
    assert batched["y"].dims == ("chain", "draw", "client")
    assert batched["effect"].dims == ("chain", "draw", "provider")


def test_auxiliary_compilation_gives_the_backends_draws_and_densities():
    """The post-sampling functions compiled with no C compiler and no numba give the same prior
    draws for the same seed as the sampler's backend, and the same log densities."""
    rng = np.random.default_rng(20221013)
    model = _toy_model(rng)
    names = [rv.name for rv in model.free_RVs]
    with model:
        compiled = pm.sample_prior_predictive(
            draws=50, var_names=names, random_seed=3, backend="numba"
        )
        with auxiliary_compilation():
            assert pytensor.config.cxx == ""
            plain = pm.sample_prior_predictive(draws=50, var_names=names, random_seed=3)
    for name in names:
        np.testing.assert_array_equal(plain["prior"][name].values, compiled["prior"][name].values)
    posterior = compiled["prior"].to_dataset()[names]
    rvs = [model["y"], *model.free_RVs]
    reference = log_density(model, posterior, rvs, "numba")
    with auxiliary_compilation():
        densities = log_density(model, posterior, rvs, AUXILIARY_MODE)
    for rv in rvs:
        np.testing.assert_allclose(densities[rv.name], reference[rv.name], rtol=1e-12, atol=1e-12)


def test_initial_points_built_without_c_are_the_same():
    """nutpie's initial points from the function built with no C compiler equal PyMC's own."""
    from pymc.initial_point import make_initial_point_fn

    model = _toy_model(np.random.default_rng(20221013))
    reference = make_initial_point_fn(model=model, jitter_rvs=set(model.free_RVs))(7)
    with initial_points_without_c():
        points = make_initial_point_fn(model=model, jitter_rvs=set(model.free_RVs))(7)
    assert points.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(points[name], value)
