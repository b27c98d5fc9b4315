"""Model comparison on one measure: the probability of the observed step, for every likelihood."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr
from scipy import special, stats

from alliance_bayes.checks import compare as cmp
from alliance_bayes.cli import EXIT_BAD_INPUT, main
from alliance_bayes.model.regression import predict
from alliance_bayes.spec import load_spec


def _closed(a, b, cdf):
    """log(F(b) - F(a)) in the plain way (fine away from the far tails)."""
    return np.log(cdf(b) - cdf(a))


@pytest.mark.parametrize("nu", [None, 4.0])
def test_step_probability_matches_cdf_differences_and_bounds(nu):
    y = np.array([0.0, 4.0, 48.0, 96.0, 100.0])
    mu, sigma = np.array([10.0, 10.0, 40.0, 90.0, 90.0]), 15.0
    got = predict.log_step_probability(y, mu, sigma, bounds=(0.0, 100.0), half_width=2.0, nu=nu)
    law = stats.norm if nu is None else stats.t(df=nu)
    z = lambda v, m: (v - m) / sigma  # noqa: E731
    want = [
        np.log(law.cdf(z(2.0, 10.0))),  # at the floor: P(Y <= 2)
        _closed(z(2.0, 10.0), z(6.0, 10.0), law.cdf),
        _closed(z(46.0, 40.0), z(50.0, 40.0), law.cdf),
        _closed(z(94.0, 90.0), z(98.0, 90.0), law.cdf),
        np.log(law.sf(z(98.0, 90.0))),  # at the ceiling: P(Y > 98)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_step_probability_phq9_half_width_and_far_tail():
    # PHQ-9: integer steps, bounds 0 and 27 as masses
    y = np.array([0.0, 13.0, 27.0])
    got = predict.log_step_probability(y, 12.0, 5.0, bounds=(0.0, 27.0), half_width=0.5)
    want = [
        stats.norm.logcdf(0.5, 12.0, 5.0),
        np.log(stats.norm.cdf(13.5, 12, 5) - stats.norm.cdf(12.5, 12, 5)),
        stats.norm.logsf(26.5, 12.0, 5.0),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # 12 SDs above the mean the plain difference of CDFs is 1 - 1 = 0; the mirrored one is not
    far = predict.log_step_probability(60.0, 0.0, 5.0, bounds=(0.0, 100.0), half_width=2.0)
    logsf = stats.norm.logsf([58.0 / 5, 62.0 / 5])
    np.testing.assert_allclose(far, logsf[0] + np.log1p(-np.exp(logsf[1] - logsf[0])), rtol=1e-10)
    assert np.isfinite(far) and far < -60


def test_step_half_widths_follow_the_outcome_metric():
    # WHO-5 is modelled on the percentage metric: raw 0–25 steps of 1, times 4
    assert predict.STEP_HALF_WIDTH == {"who5_followup": 2.0, "phq9_followup": 0.5}


class _Frame:
    """The parts of an analysis frame the NumPy predictor reads: the contract's care types."""

    care_types = ("therapist", "coach", "both")
    care_reference = "coach"

    def __init__(self, providers):
        import pandas as pd

        self.providers = pd.DataFrame({"provider": providers})


def _floor_study(n: int = 60, seed: int = 7):
    """``n`` clients of one known provider, about a quarter at the WHO-5 floor; 200 fake draws."""
    rng = np.random.default_rng(seed)
    baseline = rng.uniform(0, 40, n)
    y = np.clip(np.round((15 + 0.5 * (baseline - 20) + rng.normal(0, 18, n)) / 4) * 4, 0, 100)
    data = predict.ModelData(
        frame=_Frame(["P1"]),
        y=y,
        baseline=baseline,
        baseline_mean=20.0,
        covariates=np.zeros((n, 3)),
        covariate_names=("age", "male", "days_in_care"),
        covariate_means=np.zeros(3),
        covariate_sds=np.ones(3),
        care_index=np.zeros(n, dtype=np.int64),
        subscales=("goal", "bond"),
        alliance=np.zeros((n, 2, 2)),
        alliance_means=np.zeros((2, 2)),
        composite=np.zeros(n),
        composite_mean=0.0,
        membership_index=np.zeros((n, 1), dtype=np.int64),
        membership_weight=np.ones((n, 1)),
        provider_type_index=np.array([0]),
    )
    s = 200

    def v(loc, scale, *shape, dims=()):
        return (("chain", "draw", *dims), rng.normal(loc, scale, size=(1, s, *shape)))

    posterior = xr.Dataset(
        {
            "alpha": v(15.0, 1.0),
            "b_baseline": v(0.5, 0.05),
            "b_covariate_z": v(0.0, 0.1, 3, dims=("covariate",)),
            "b_care": v(0.0, 0.1, 2, dims=("care_contrast",)),
            "b": v(0.0, 0.1, 3, 2, 2, dims=("care_type", "subscale", "level")),
            "sd_provider": (("chain", "draw", "provider_type"), np.full((1, s, 2), 3.0)),
            "u_provider": v(0.0, 1.0, 1, dims=("provider",)),
            "sigma": (("chain", "draw"), 18.0 + rng.uniform(0, 1, (1, s))),
        },
        coords={"provider": ["P1"]},
    )
    return data, posterior


def _loo(values: np.ndarray) -> float:
    da = xr.DataArray(
        values[None],
        dims=("chain", "draw", "client"),
        coords={"client": [f"C{i:03d}" for i in range(values.shape[1])]},
    )
    post = xr.Dataset({"mu": (("chain", "draw"), np.zeros(values.shape[:1])[None])})
    dt = xr.DataTree.from_dict({"posterior": post, "log_likelihood": xr.Dataset({"y": da})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cmp.ParetoKWarning)
        return float(cmp.loo_models({"m": dt})["m"].elpd)


def test_censored_and_normal_models_agree_on_the_step_measure_not_on_density():
    """Same data and parameters, censored vs uncensored Normal: the densities' elpd differ by the
    floor clients' mass (the old comparison); the step probabilities' elpd agree."""
    data, posterior = _floor_study()
    floor = data.y == 0
    assert floor.sum() >= 10
    censored = load_spec("who5_intercepts")
    normal = replace(censored, likelihood="normal")
    assert censored.likelihood == "censored_normal"

    density = {
        sp.likelihood: _loo(predict.pointwise_log_likelihood(sp, data, posterior))
        for sp in (censored, normal)
    }
    step = {
        sp.likelihood: _loo(predict.pointwise_log_step_probability(sp, data, posterior))
        for sp in (censored, normal)
    }
    gap = density["censored_normal"] - density["normal"]
    assert gap > 1.5 * floor.sum()  # each floor client gains ~2 nats as a mass
    assert abs(step["censored_normal"] - step["normal"]) < 1e-8
    # a step of 4 points holds about 4 x the density in the interior
    lp_step = predict.pointwise_log_step_probability(normal, data, posterior)
    lp_dens = predict.pointwise_log_likelihood(normal, data, posterior)
    inner = ~floor & (data.y < 100)
    np.testing.assert_allclose(lp_step[:, inner], lp_dens[:, inner] + np.log(4.0), atol=0.02)


def test_heldout_step_probability_integrates_new_providers():
    data, posterior = _floor_study(n=12)
    spec = load_spec("who5_intercepts")
    unseen = posterior.isel(provider=[])  # P1 is new to this posterior
    exact = predict.heldout_log_step_probability(spec, data, unseen, method="analytic")
    mc = predict.heldout_log_step_probability(spec, data, unseen, method="mc", n_mc=4000, seed=2)
    np.testing.assert_allclose(mc, exact, atol=0.02)
    # the exact integral: y ~ N(mu, sqrt(sigma² + sd_provider²)) per draw
    mu = predict.linear_predictor(spec, data, posterior)
    sd = np.sqrt(posterior["sigma"].values.reshape(-1, 1) ** 2 + 3.0**2)
    lp = predict.log_step_probability(data.y[None], mu, sd, bounds=(0.0, 100.0), half_width=2.0)
    np.testing.assert_allclose(exact, special.logsumexp(lp, axis=0) - np.log(len(lp)), rtol=1e-12)
    pooled = replace(spec, hierarchy=replace(spec.hierarchy, provider_intercepts=False))
    got = predict.heldout_log_step_probability(pooled, data, posterior)
    lp = predict.log_step_probability(
        data.y[None], mu, posterior["sigma"].values.reshape(-1, 1), bounds=(0, 100), half_width=2
    )
    np.testing.assert_allclose(got, special.logsumexp(lp, axis=0) - np.log(len(lp)), rtol=1e-12)


def test_choose_measure():
    spec = load_spec
    assert cmp.choose_measure([spec("who5_change"), spec("alliance_latent_who5")]) == cmp.STEP
    assert cmp.choose_measure([spec("who5_change"), spec("who5_change_student_t")]) == cmp.STEP
    assert cmp.choose_measure([spec("alliance_latent"), spec("alliance_latent")]) == cmp.DENSITY
    with pytest.raises(cmp.MeasureError, match=r"censored_normal.*bivariate normal"):
        cmp.choose_measure([spec("who5_change"), spec("alliance_latent")])
    with pytest.raises(cmp.MeasureError, match="different outcomes"):
        cmp.choose_measure([spec("who5_change"), spec("depression_change")])
    text = cmp.measure_text(cmp.STEP, [spec("who5_change")])
    assert "(y − 2, y + 2]" in text and "up to 2" in text and "above 98" in text


def test_cli_refuses_a_mix_without_a_common_measure(tmp_path, capsys):
    code = main(["compare", "who5_change", "alliance_latent", "--k", "0", "--out", str(tmp_path)])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr()
    assert "censored_normal" in err.err + err.out and "bivariate normal" in err.err + err.out
    assert not (tmp_path / "comparison").exists()


def test_markdown_names_the_measure():
    rng = np.random.default_rng(0)
    fits = {}
    for name, shift in (("a", 0.0), ("b", 0.5)):
        ll = stats.norm.logpdf(rng.normal(size=20)[None, None], rng.normal(shift, 0.1, (2, 100, 1)))
        da = xr.DataArray(
            ll, dims=("chain", "draw", "client"), coords={"client": list("abcdefghijklmnopqrst")}
        )
        post = xr.Dataset({"mu": (("chain", "draw"), np.zeros((2, 100)))})
        fits[name] = xr.DataTree.from_dict(
            {"posterior": post, "log_likelihood": xr.Dataset({"y": da})}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cmp.ParetoKWarning)
        table = cmp.comparison_table(cmp.loo_models(fits))
    table.attrs["measure"] = cmp.measure_text(cmp.STEP, [load_spec("who5_change")])
    assert "Measure (LOO and K-fold): log probability of the observed step" in cmp.table_markdown(
        table
    )
