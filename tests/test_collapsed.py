"""The collapsed Gaussian likelihood against the per-client model integrated densely.

The collapsed form (:mod:`alliance_bayes.model.regression.collapsed`) must equal the per-client
Normal likelihood with the collapsed providers' effects integrated out, which for a small design
is one dense multivariate Normal density, computed here by SciPy from the raw arrays; the draws of
the collapsed effects must follow the Gaussian conditional computed the same dense way.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytensor.tensor as pt
import pytest
from scipy import stats

from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.regression import collapsed
from alliance_bayes.model.regression.collapsed import (
    collapsed_log_likelihood,
    draw_provider_effects,
    fixed_design,
    mean_moments,
    n_effects,
    provider_design,
    sampled_noncentring,
    split_providers,
    sufficient_statistics,
)
from alliance_bayes.spec import load_spec

SEED = 20261201


def _design(spec_name: str, tmp_path_factory, **overrides):
    from alliance_bayes.data.simulate import write_simulated_study

    config = SimulationConfig.small(
        n_coach_clients=36, n_therapist_clients=12, n_both_clients=14, n_therapists=3, n_coaches=5
    )
    folder = tmp_path_factory.mktemp("collapsed")
    write_simulated_study(simulate_study(config, seed=SEED), folder)
    spec = load_spec(spec_name, **overrides)
    return spec, design_of(spec, folder)


def _random_parameters(rng, spec, data, n_types=2):
    """θ, σ, Σ_t (type, E, E) and the providers' effects, at random values."""
    x = fixed_design(spec, data)
    n_eff = n_effects(spec, data)
    theta = rng.normal(0, 1, x.shape[1]) + np.r_[50.0, np.zeros(x.shape[1] - 1)]
    sigma = rng.uniform(5, 15)
    cov = np.empty((n_types, n_eff, n_eff))
    if n_eff == 0:
        return x, theta, sigma, cov, np.zeros((len(data.provider_type_index), 0))
    for t in range(n_types):
        a = rng.normal(0, 1, (n_eff, n_eff))
        cov[t] = a @ a.T + np.diag(rng.uniform(0.5, 4, n_eff))
    u = np.stack(
        [rng.multivariate_normal(np.zeros(n_eff), cov[t]) for t in data.provider_type_index]
    )
    return x, theta, sigma, cov, u


def _dense_marginal(data, x, theta, sigma, cov, u, sampled, n_eff, rows=None):
    """log N(y; Xθ + Z_S u_S, σ²I + Σ_c Z̃_c Σ_t Z̃_cᵀ), built client by client from the raw arrays
    (of the clients ``rows`` only: a Normal's marginal)."""
    n = data.n_clients
    z = provider_design(data, n_eff)
    mean = x @ theta
    var = sigma**2 * np.eye(n)
    loadings = np.zeros((n, len(sampled), n_eff))  # client i's row for provider p: w_ip z_i
    for i in range(n):
        for p, w in zip(data.membership_index[i], data.membership_weight[i], strict=True):
            if w > 0:
                loadings[i, p] += w * z[i]
    for p in range(len(sampled)):
        if sampled[p]:
            mean = mean + loadings[:, p] @ u[p]
        else:
            t = data.provider_type_index[p]
            var = var + loadings[:, p] @ cov[t] @ loadings[:, p].T
    rows = np.ones(n, dtype=bool) if rows is None else rows
    density = stats.multivariate_normal(mean[rows], var[np.ix_(rows, rows)]).logpdf(data.y[rows])
    return density, loadings


def _collapsed_value(stats_, theta, sigma, cov, u):
    n_eff = stats_.n_effects
    if n_eff == 0:
        value = collapsed_log_likelihood(
            stats_, pt.as_tensor(theta), None, pt.as_tensor(sigma), None, None
        )
        return float(value.eval())
    inv = np.linalg.inv(cov)
    logdet = np.linalg.slogdet(cov)[1]
    us = u[stats_.sampled] if stats_.sampled.any() else None
    value = collapsed_log_likelihood(
        stats_,
        pt.as_tensor(theta),
        None if us is None else pt.as_tensor(us),
        pt.as_tensor(sigma),
        pt.as_tensor(inv),
        pt.as_tensor(logdet),
    )
    return float(value.eval())


@pytest.mark.parametrize(
    "spec_name, overrides",
    [
        ("who5_change_normal", {}),
        ("who5_change_normal", {"hierarchy": {"provider_slopes": False}}),
        ("paper_table2", {"data": {"sample": "all"}}),
    ],
    ids=["slopes", "intercepts", "no-providers"],
)
def test_collapsed_equals_dense_marginal(spec_name, overrides, tmp_path_factory):
    spec, data = _design(spec_name, tmp_path_factory, **overrides)
    st = sufficient_statistics(spec, data)
    if n_effects(spec, data):
        assert st.sampled.any() and not st.sampled.all()
        # no client has two collapsed providers
        active = data.membership_weight > 0
        collapsed_slots = (~st.sampled[data.membership_index]) & active
        assert collapsed_slots.sum(axis=1).max() == 1
    rng = np.random.default_rng(SEED)
    for _ in range(5):
        x, theta, sigma, cov, u = _random_parameters(rng, spec, data)
        dense, _ = _dense_marginal(data, x, theta, sigma, cov, u, st.sampled, st.n_effects)
        value = _collapsed_value(st, theta, sigma, cov, u)
        assert value == pytest.approx(dense, rel=1e-8)


def test_weighted_statistics_give_the_training_clients_marginal(tmp_path_factory):
    """0/1 client weights (a K-fold training set; a whole provider left out, missing outcomes
    among the weight-0 clients) give the exact marginal density of the weighted clients alone,
    with every provider and pair of the full design kept."""
    spec, data = _design("who5_change_normal", tmp_path_factory)
    full = sufficient_statistics(spec, data)
    rng = np.random.default_rng(SEED + 1)
    train = rng.uniform(size=data.n_clients) < 0.7
    out = (data.membership_index == data.membership_index[0, 0]) & (data.membership_weight > 0)
    train[out.any(axis=1)] = False  # one provider left out
    y = np.where(train, data.y, np.nan)
    weighted = sufficient_statistics(spec, replace(data, y=y), weight=train.astype(float))
    assert weighted.zz.shape == full.zz.shape and len(weighted.pair) == len(full.pair)
    assert np.array_equal(weighted.sampled, full.sampled)
    for _ in range(3):
        x, theta, sigma, cov, u = _random_parameters(rng, spec, data)
        dense, _ = _dense_marginal(
            data, x, theta, sigma, cov, u, full.sampled, full.n_effects, rows=train
        )
        assert _collapsed_value(weighted, theta, sigma, cov, u) == pytest.approx(dense, rel=1e-8)


def test_split_leaves_one_collapsed_provider_per_client(tmp_path_factory):
    _, data = _design("who5_change_normal", tmp_path_factory)
    sampled = split_providers(data)
    active = data.membership_weight > 0
    multi = active.sum(axis=1) > 1
    assert multi.any()
    assert ((~sampled[data.membership_index]) & active).sum(axis=1).max() == 1
    # A provider none of whose clients sees another provider is never sampled.
    shared = np.unique(data.membership_index[multi][active[multi]])
    assert not sampled[np.setdiff1d(np.arange(len(sampled)), shared)].any()


def test_drawn_effects_follow_the_dense_conditional(tmp_path_factory):
    spec, data = _design("who5_change_normal", tmp_path_factory)
    st = sufficient_statistics(spec, data)
    rng = np.random.default_rng(SEED + 1)
    x, theta, sigma, cov, u = _random_parameters(rng, spec, data)
    _, loadings = _dense_marginal(data, x, theta, sigma, cov, u, st.sampled, st.n_effects)
    # Dense conditional of the collapsed effects given y: prior precision + loadingsᵀ loadings / σ².
    c_idx = st.collapsed_index
    n_eff = st.n_effects
    big = loadings[:, c_idx].reshape(data.n_clients, -1)
    prior_prec = np.zeros((big.shape[1], big.shape[1]))
    for k, p in enumerate(c_idx):
        sl = slice(k * n_eff, (k + 1) * n_eff)
        prior_prec[sl, sl] = np.linalg.inv(cov[data.provider_type_index[p]])
    resid = data.y - x @ theta - sum(loadings[:, p] @ u[p] for p in st.sampled_index)
    post_cov = np.linalg.inv(prior_prec + big.T @ big / sigma**2)
    post_mean = post_cov @ big.T @ resid / sigma**2
    n_draws = 20000
    draws = draw_provider_effects(
        st,
        np.broadcast_to(theta, (n_draws, len(theta))),
        np.broadcast_to(u[st.sampled], (n_draws, st.sampled.sum(), n_eff)),
        np.full(n_draws, sigma),
        np.broadcast_to(cov, (n_draws, *cov.shape)),
        np.random.default_rng(SEED + 2),
    )
    np.testing.assert_array_equal(
        draws[:, st.sampled], np.broadcast_to(u[st.sampled], draws[:, st.sampled].shape)
    )
    flat = draws[:, c_idx].reshape(n_draws, -1)
    sd = np.sqrt(np.diag(post_cov))
    # Monte Carlo: the mean within 4 standard errors, the SDs within 4% (20,000 draws: SE 0.5%).
    assert np.all(np.abs(flat.mean(axis=0) - post_mean) < 4 * sd / np.sqrt(n_draws))
    np.testing.assert_allclose(flat.std(axis=0), sd, rtol=0.04)


def test_mean_moments_match_the_client_means(tmp_path_factory):
    spec, data = _design("who5_change_normal", tmp_path_factory)
    st = sufficient_statistics(spec, data)
    rng = np.random.default_rng(SEED + 3)
    x, theta, sigma, cov, u = _random_parameters(rng, spec, data)
    _, loadings = _dense_marginal(data, x, theta, sigma, cov, u, st.sampled, st.n_effects)
    mu = x @ theta + np.einsum("ipe,pe->i", loadings, u)
    mean, var = mean_moments(st, theta[None], u[None])
    assert mean[0] == pytest.approx(mu.mean(), rel=1e-10)
    assert var[0] == pytest.approx(mu.var(), rel=1e-8)


def test_draws_processed_in_chunks_give_the_same_moments(tmp_path_factory, monkeypatch):
    """A million clients' draws are processed a few draws at a time; the results must not change."""
    spec, data = _design("who5_change_normal", tmp_path_factory)
    st = sufficient_statistics(spec, data)
    rng = np.random.default_rng(SEED + 4)
    draws = [_random_parameters(rng, spec, data) for _ in range(7)]
    theta = np.stack([d[1] for d in draws])
    u = np.stack([d[4] for d in draws])
    whole = mean_moments(st, theta, u)
    monkeypatch.setattr(collapsed, "CHUNK_CELLS", 1)  # one draw per chunk
    assert len(collapsed._draw_chunks(7, 10)) == 7
    np.testing.assert_allclose(mean_moments(st, theta, u), whole, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.mcmc
def test_same_posterior_as_the_per_client_form(shipped_study):
    """On the shipped study both forms give the same posterior: means within 3 MC standard errors."""
    from alliance_bayes.fitting import fit

    fits = {
        form: fit(
            load_spec("who5_change_normal", likelihood_form=form), shipped_study, progress=False
        )
        for form in ("collapsed", "per_client")
    }
    assert all(f.passed for f in fits.values())
    a, b = (fits[k].summary() for k in ("collapsed", "per_client"))
    key = [e for e in a.index if e in b.index and not e.startswith("u_")]
    assert len(key) > 20
    z = (a.loc[key, "mean"] - b.loc[key, "mean"]) / np.hypot(
        a.loc[key, "mcse_mean"], b.loc[key, "mcse_mean"]
    )
    print(z.abs().sort_values().tail(8).to_string())
    assert (z.abs() < 3).all(), z[z.abs() >= 3]
    # The provider effects drawn after sampling match the sampled ones of the per-client form.
    u = {k: f.datatree["posterior"]["u_provider"].mean(("chain", "draw")) for k, f in fits.items()}
    sd = fits["per_client"].datatree["posterior"]["u_provider"].std(("chain", "draw"))
    assert float((abs(u["collapsed"] - u["per_client"]) / sd).max()) < 0.25


def test_complete_adds_effects_pointwise_and_predictive_groups(tmp_path_factory, monkeypatch):
    """``complete`` on prior draws standing in for a posterior: every group the bundle needs, the
    pointwise log-likelihood equal to the NumPy twin's given the drawn effects, and a stated subset
    of clients above the cell limit."""
    import pymc as pm
    import xarray as xr

    from alliance_bayes.model.regression import collapsed, predict
    from alliance_bayes.model.regression.graph import build_model

    spec, data = _design("who5_change_normal", tmp_path_factory)
    # The Potential is the collapsed likelihood, which prior draws must ignore.
    with build_model(spec, data), pytest.warns(UserWarning, match="effect of Potentials"):
        draws = pm.sample_prior_predictive(draws=40, random_seed=SEED)["prior"]
    dt = xr.DataTree.from_dict({"posterior": draws.to_dataset()})
    full = collapsed.complete(spec, data, dt.copy(), SEED)
    post = full["posterior"].to_dataset()
    assert post["u_provider"].shape == (1, 40, len(data.provider_type_index))
    assert post["u_provider_slope"].shape == (1, 40, len(data.provider_type_index), 2)
    assert ((post["r2_bayes"] >= 0) & (post["r2_bayes"] <= 1)).all()
    np.testing.assert_array_equal(
        post["u_provider_sampled"].values[..., 0],
        post["u_provider"].values[..., np.flatnonzero(split_providers(data))],
    )
    twin = predict.pointwise_log_likelihood(spec, data, post)
    np.testing.assert_allclose(
        full["log_likelihood"]["y"].values.reshape(twin.shape), twin, rtol=1e-5
    )
    assert full["posterior_predictive"]["y"].shape[-1] == data.n_clients
    np.testing.assert_array_equal(full["observed_data"]["y"].values, data.y)

    monkeypatch.setattr(collapsed, "MAX_POINTWISE_CELLS", 40 * 20)
    part = collapsed.complete(spec, data, dt.copy(), SEED)
    ll = part["log_likelihood"]
    assert ll["y"].shape == (1, 40, 20)
    assert ll.attrs["clients_kept"] == 20 and ll.attrs["clients_of"] == data.n_clients
    kept = [list(data.coords()["client"]).index(c) for c in ll["client"].values]
    np.testing.assert_array_equal(part["observed_data"]["y"].values, data.y[kept])
    np.testing.assert_array_equal(part["constant_data"]["baseline"].values, data.baseline[kept])


def test_sampled_noncentring_matches_the_planted_reliabilities():
    """On a platform simulated with known σ and provider SDs, the non-centring weights are close to
    σ² / (σ² + I_pe s_te²) computed from the planted values: within 0.1 (moment estimates from the
    120 sampled therapists; the largest gap seen was 0.065 for intercepts, 0.08 for slopes), and
    every weight lies in [0, 1]."""
    from alliance_bayes.checks.scale import TRUTH, scale_design

    spec = load_spec("who5_change_normal", likelihood_form="collapsed")
    st = sufficient_statistics(spec, scale_design(40_000, 400, seed=3))
    w = sampled_noncentring(st)
    assert w.shape == (int(st.sampled.sum()), 3)
    assert ((w >= 0) & (w <= 1)).all()
    sigma2 = TRUTH["sigma"] ** 2
    types = st.provider_type[st.sampled_index]
    s2 = np.asarray(TRUTH["sd_provider"])[types] ** 2
    info = st.zz[st.sampled_index, 0, 0]
    planted = sigma2 / (sigma2 + info * s2)
    assert planted.min() < 0.5  # the design makes some intercepts data-dominated
    assert np.abs(w[:, 0] - planted).max() < 0.1
    slope_planted = sigma2 / (
        sigma2 + st.zz[st.sampled_index, 1, 1] * TRUTH["sd_provider_slope"] ** 2
    )
    assert np.abs(w[:, 1] - slope_planted).max() < 0.1


@pytest.mark.mcmc
def test_scale_benchmark_reports_each_measure():
    """The scale benchmark end to end on a tiny platform, collapsed form only (the per-client
    form's fit is tested elsewhere; compiling it here too doubled this test's time)."""
    from alliance_bayes.checks.scale import run_scale

    lines: list[str] = []
    result = run_scale(
        [1500], n_providers=60, per_client_max=0, draws=100, tune=100, log=lines.append
    )
    (row,) = result.details["rows"]
    assert result.check == "scale" and result.passed == (row["gate"] == "passed")
    assert result.table.to_dict("records") == [row] and result.text == "\n".join(lines)
    assert row["clients"] == 1500 and row["form"] == "collapsed"
    assert row["grad_ms"] > 0 and row["sampling_s"] > 0 and row["peak_gb"] > 0
    assert 0 < row["min_ess_per_s_wall"] <= row["min_ess_per_s"]
    assert row["covered"].endswith("/8")
    assert any("truth" in line and "95%" in line for line in lines)
