"""The independent numpyro engine: the agreement rule on fake posteriors, the numpyro model's
likelihood against a closed form, and (opt-in, slow) agreement with the package's fits."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.checks import engine_check as ec
from alliance_bayes.spec import load_spec

CARE = ["therapist", "coach", "both"]


def _draws(mean, shape=(), *, seed=0, chains=4, draws=1000, sd=1.0):
    rng = np.random.default_rng(seed)
    return mean + sd * rng.standard_normal((chains, draws, *shape))


def _posterior(shift: float = 0.0, *, seed: int = 0, care=CARE) -> xr.Dataset:
    b = _draws(np.arange(12.0).reshape(3, 2, 2), (3, 2, 2), seed=seed) + shift
    order = [CARE.index(c) for c in care]
    return xr.Dataset(
        {
            "alpha": (("chain", "draw"), _draws(40.0, seed=seed + 1) + shift),
            "z_b": (("chain", "draw", "cell"), _draws(0.0, (3,), seed=seed + 2)),
            "b": (("chain", "draw", "care_type", "subscale", "level"), b[:, :, order]),
        },
        coords={"care_type": care, "subscale": ["goal", "bond"], "level": ["within", "between"]},
    )


def test_agreement_holds_for_two_samples_of_one_posterior():
    table = ec.agreement_table(_posterior(seed=0), _posterior(seed=10), ["alpha", "b"])
    assert len(table) == 13 and table["agree"].all()
    # Independent draws: MCSE = sd / sqrt(4000), tolerance = 3 sqrt(2) MCSE + 0.05 sd.
    expected = 3 * np.sqrt(2) / np.sqrt(4000) + 0.05
    np.testing.assert_allclose(table["tolerance"], expected, rtol=0.1)


def test_agreement_fails_for_a_shift_of_a_third_of_a_posterior_sd():
    table = ec.agreement_table(_posterior(), _posterior(0.3, seed=10), ["alpha", "b"])
    assert not table["agree"].any()
    np.testing.assert_allclose(table["diff"], 0.3, atol=0.1)
    assert (table["tolerance"] < 0.13).all()  # 3√2 · 1/√4000 + 0.05


def test_agreement_matches_elements_by_label_not_position():
    shuffled = _posterior(seed=10, care=["both", "therapist", "coach"])
    table = ec.agreement_table(_posterior(), shuffled, ["b"])
    assert table["agree"].all()
    assert table.loc["b[both,goal,within]", "mean_pymc"] == pytest.approx(8.0, abs=0.1)
    assert table.loc["b[both,goal,within]", "mean_numpyro"] == pytest.approx(8.0, abs=0.1)


def test_comparable_keeps_only_parametrisation_invariant_variables():
    ds = ec.comparable(_posterior(), None)
    assert list(ds.data_vars) == ["alpha", "b"]  # z_b is a coordinate of the sampler, not compared


def test_pooled_slopes_are_the_care_mix_average():
    post = _posterior()
    weights = {"therapist": 0.2, "coach": 0.65, "both": 0.15}
    pooled = ec.pooled_slopes(post["b"], weights)
    b = post["b"].sel(subscale="bond", level="between")
    expected = sum(w * b.sel(care_type=c, drop=True) for c, w in weights.items())
    xr.testing.assert_allclose(pooled["b_bond_between"], expected.drop_vars(["subscale", "level"]))
    assert set(pooled) == {f"b_{s}_{lv}" for s in ("goal", "bond") for lv in ("within", "between")}


def test_care_weights_are_client_shares_or_equal():
    design = type(
        "D",
        (),
        {"care_index": np.array([0, 1, 1, 1]), "care_types": ("therapist", "coach", "both")},
    )()
    spec = load_spec("who5_change")
    assert ec.care_weights(spec, design) == {"therapist": 0.25, "coach": 0.75}
    equal = load_spec("who5_change", hierarchy={"pooled_weights": "equal"})
    assert ec.care_weights(equal, design) == {"therapist": 0.5, "coach": 0.5}


def test_censored_normal_logpdf_is_tobit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # as fit_numpyro runs it
    y = np.array([0.0, 0.0, 37.0, 100.0, 100.0, 64.0])
    mu = np.array([10.0, -30.0, 40.0, 90.0, 130.0, 60.0])
    sigma = 15.0
    expected = np.where(
        y <= 0,
        stats.norm.logcdf((0 - mu) / sigma),
        np.where(y >= 100, stats.norm.logcdf((mu - 100) / sigma), stats.norm.logpdf(y, mu, sigma)),
    )
    got = np.asarray(ec.censored_normal_logpdf(y, mu, sigma, 0.0, 100.0))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def _numpy_mean(trace, data) -> np.ndarray:
    """The expected outcome of who5_change from the trace's values, written out in numpy."""
    v = {k: np.asarray(s["value"]) for k, s in trace.items() if s["type"] == "sample"}
    care = data.care_index
    gamma = np.array([v["b_care"][0], 0.0, v["b_care"][1]])
    mu = (
        v["alpha"]
        + gamma[care]
        + v["b_baseline"] * (data.baseline - data.baseline_mean)
        + data.covariates @ v["b_covariate_z"]
        + np.einsum("isl,isl->i", v["b"][care], data.alliance)
    )
    ptype = data.provider_type_index
    scale = np.column_stack(
        [v["sd_provider"][ptype], np.tile(v["sd_provider_slope"], (len(ptype), 1))]
    )
    u = (v["z_provider"] @ v["chol_provider"].T) * scale
    for k in range(data.membership_index.shape[1]):
        p, w = data.membership_index[:, k], data.membership_weight[:, k]
        mu = mu + w * (u[p, 0] + np.einsum("is,is->i", u[p, 1:], data.alliance[:, :, 0]))
    return mu


def test_numpyro_who5_change_likelihood_matches_a_closed_form(small_study_dir):
    pytest.importorskip("numpyro")
    import jax
    from numpyro import handlers

    from alliance_bayes.fitting import design_of

    jax.config.update("jax_enable_x64", True)
    spec = load_spec("who5_change")
    data = design_of(spec, small_study_dir)
    model = ec._model_fn(spec, data)
    trace = handlers.trace(handlers.seed(model, jax.random.PRNGKey(3))).get_trace()
    assert {"b_care", "mu_b", "b", "sd_provider", "sd_provider_slope", "corr_provider"} <= set(
        trace
    )
    assert "sd_b" not in trace  # the care-type spread is fixed at sd_b_sd
    assert (data.membership_weight > 0).sum(axis=1).max() == 2  # someone saw two providers
    mu = _numpy_mean(trace, data)
    sigma = float(trace["sigma"]["value"])
    y = data.y
    expected = np.where(
        y <= 0,
        stats.norm.logcdf(-mu / sigma),
        np.where(y >= 100, stats.norm.logcdf((mu - 100) / sigma), stats.norm.logpdf(y, mu, sigma)),
    ).sum()
    assert float(trace["y"]["fn"].log_factor) == pytest.approx(expected, rel=1e-9)


def test_numpyro_intercepts_model_has_no_provider_slopes(small_study_dir):
    pytest.importorskip("numpyro")
    import jax
    from numpyro import handlers

    from alliance_bayes.fitting import design_of

    spec = load_spec("who5_intercepts")
    data = design_of(spec, small_study_dir)
    trace = handlers.trace(
        handlers.seed(ec._model_fn(spec, data), jax.random.PRNGKey(0))
    ).get_trace()
    assert "sd_provider_slope" not in trace and "chol_provider" not in trace
    assert trace["z_provider"]["value"].shape == (len(data.provider_type_index), 1)


@pytest.mark.slow
@pytest.mark.mcmc
@pytest.mark.parametrize("name", ["who5_change", "who5_intercepts", "paper_table2"])
def test_numpyro_engine_agrees_on_small_study(small_study_dir, name):
    pytest.importorskip("numpyro")
    from alliance_bayes.fitting import design_of, fit

    spec = load_spec(name)
    pymc_fit = fit(spec, small_study_dir, draws=500, tune=500, progress=False)
    data = design_of(spec, small_study_dir)
    other = ec.fit_numpyro(spec, data, draws=500, tune=500)
    table = ec.compare_fits(pymc_fit, other, spec, data)
    assert table["agree"].all(), table[~table["agree"]]
    if name != "paper_table2":
        assert {"b_care[therapist-coach]", "sd_provider[coach]", "b_goal_within"} <= set(
            table.index
        )
