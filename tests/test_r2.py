"""R² and observed-scale effect sizes against closed forms (no MCMC: the graph evaluated at a point)."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import integrate, stats

from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.regression.graph import (
    build_model,
    censored_normal_moments,
    marginal_r2,
    share_uncensored,
)
from alliance_bayes.spec import load_spec


@pytest.mark.parametrize(("m", "s"), [(50.0, 20.0), (-5.0, 12.0), (97.0, 8.0), (40.0, 0.5)])
def test_censored_normal_moments_match_numerical_integration(m, s):
    lower, upper = 0.0, 100.0
    inside_mean = integrate.quad(lambda z: z * stats.norm.pdf(z, m, s), lower, upper)[0]
    inside_square = integrate.quad(lambda z: z**2 * stats.norm.pdf(z, m, s), lower, upper)[0]
    p_low, p_high = stats.norm.cdf(lower, m, s), stats.norm.sf(upper, m, s)
    want_mean = lower * p_low + upper * p_high + inside_mean
    want_var = lower**2 * p_low + upper**2 * p_high + inside_square - want_mean**2
    mean, var = censored_normal_moments(pt.as_tensor(m), pt.as_tensor(s), (lower, upper))
    # quad's own relative error is about 1e-8 here
    assert float(mean.eval()) == pytest.approx(want_mean, rel=1e-6, abs=1e-9)
    assert float(var.eval()) == pytest.approx(want_var, rel=1e-6, abs=1e-9)


def _censored_moments_numpy(m: np.ndarray, s: float, lower: float, upper: float):
    mean = np.empty_like(m)
    var = np.empty_like(m)
    for i, mi in enumerate(m):
        p_low, p_high = stats.norm.cdf(lower, mi, s), stats.norm.sf(upper, mi, s)
        first = integrate.quad(lambda z, mi=mi: z * stats.norm.pdf(z, mi, s), lower, upper)[0]
        second = integrate.quad(lambda z, mi=mi: z**2 * stats.norm.pdf(z, mi, s), lower, upper)[0]
        mean[i] = lower * p_low + upper * p_high + first
        var[i] = lower**2 * p_low + upper**2 * p_high + second - mean[i] ** 2
    return mean, var


def test_marginal_and_observed_r2_match_their_formulas():
    rng = np.random.default_rng(5)
    fixed = rng.normal(45.0, 15.0, size=40)
    provider = rng.normal(0.0, 4.0, size=40)
    sigma = 17.0
    spec = load_spec("who5_change")
    with pm.Model() as model:
        marginal_r2(spec, pt.as_tensor(fixed), pt.as_tensor(provider), pt.as_tensor(sigma))
        share_uncensored(pt.as_tensor(fixed + provider), pt.as_tensor(sigma), (0.0, 100.0))
    v_f, v_u = fixed.var(), provider.var()
    assert float(model["r2_marginal"].eval()) == pytest.approx(v_f / (v_f + v_u + sigma**2))
    mean, var = _censored_moments_numpy(fixed, np.sqrt(v_u + sigma**2), 0.0, 100.0)
    want = mean.var() / (mean.var() + var.mean())
    assert float(model["r2_observed"].eval()) == pytest.approx(want, rel=1e-6)
    mu = fixed + provider
    inside = stats.norm.cdf(100.0, mu, sigma) - stats.norm.cdf(0.0, mu, sigma)
    assert float(model["share_uncensored"].eval()) == pytest.approx(inside.mean(), rel=1e-9)


def test_every_r2_is_in_the_default_model(small_study_dir):
    spec = load_spec("who5_change")
    model = build_model(spec, design_of(spec, build_frame(load_study(small_study_dir))))
    names = {v.name for v in model.deterministics}
    assert {"r2_bayes", "r2_marginal", "r2_observed", "share_uncensored"} <= names
    normal = load_spec("who5_change_normal")
    model = build_model(normal, design_of(normal, build_frame(load_study(small_study_dir))))
    assert "r2_observed" not in {v.name for v in model.deterministics}
