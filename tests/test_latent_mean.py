"""Latent provider means (``[hierarchy] between = "latent_mean"``): spec, design, graph, closed form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import optimize

from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study, write_simulated_study
from alliance_bayes.model.regression.collapsed import is_collapsed
from alliance_bayes.model.regression.design import prepare
from alliance_bayes.model.regression.estimands import care_weights_of, compute_estimands
from alliance_bayes.model.regression.graph import build_model
from alliance_bayes.spec import SpecError, load_spec, parse_spec

LATENT = "who5_change_latent_mean"
# Log densities compiled by PyTensor's C linker, which a pip install leaves without BLAS (noise).
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")


def _frame(config: SimulationConfig, folder, seed: int = 5):
    write_simulated_study(simulate_study(config, seed=seed), folder)
    return build_frame(load_study(folder))


@pytest.fixture(scope="module")
def small_frame(tmp_path_factory):
    return _frame(SimulationConfig.small(), tmp_path_factory.mktemp("latent_small"))


@pytest.fixture(scope="module")
def single_membership_frame(tmp_path_factory):
    """Two therapists and four coaches with about 100 clients each, each client with one provider."""
    config = SimulationConfig.small(
        n_coach_clients=400,
        n_therapist_clients=200,
        n_both_clients=0,
        n_therapists=2,
        n_coaches=4,
        p_second_coach=0.0,
    )
    return _frame(config, tmp_path_factory.mktemp("latent_single"))


def test_spec_option_and_its_limits():
    assert load_spec("who5_change").hierarchy.between == "caseload_mean"
    spec = load_spec(LATENT)
    assert spec.hierarchy.between == "latent_mean"
    # Gaussian residuals would otherwise be collapsed; latent parts leave no fixed design.
    assert not is_collapsed(dataclasses.replace(spec, likelihood="normal"))
    base = 'name = "x"\noutcome = "who5_followup"\n'
    with pytest.raises(SpecError, match="between"):
        parse_spec(
            base + '[predictors]\nalliance = "composite"\n[hierarchy]\nbetween = "latent_mean"'
        )
    with pytest.raises(SpecError, match="collapsed"):
        parse_spec(
            base + 'likelihood = "normal"\nlikelihood_form = "collapsed"\n'
            '[predictors]\nalliance = "subscales"\n[hierarchy]\nbetween = "latent_mean"'
        )
    with pytest.raises(SpecError, match="between"):
        parse_spec(base + '[predictors]\nalliance = "subscales"\n[hierarchy]\nbetween = "latent"')
    with pytest.raises(SpecError, match="impute"):
        parse_spec(
            base + "[data]\nfollowup_imputations = 5\n"
            '[predictors]\nalliance = "subscales"\n[hierarchy]\nbetween = "latent_mean"'
        )


def test_indicators_are_every_scored_client(small_frame):
    data = prepare(load_spec(LATENT), small_frame)
    lat = data.latent
    n_scored = int(small_frame.clients["alliance_goal"].notna().sum())
    # Clients without a follow-up are indicators too, as they are in the caseload mean.
    assert data.n_clients < n_scored == len(lat.score[0])
    score = data.alliance[:, :, 0] + data.alliance[:, :, 1] + data.alliance_means[:, 1]
    for k in range(len(data.subscales)):
        np.testing.assert_allclose(lat.score[k][lat.client_row[k]], score[:, k])
        np.testing.assert_allclose(lat.weight[k].sum(axis=1), 1.0)
    assert lat.provider_labels[: len(data.provider_type_index)] == tuple(
        small_frame.providers["provider"].astype(str)
    )
    assert prepare(load_spec("who5_change"), small_frame).latent is None


def test_numpy_predictions_refuse_the_latent_option(small_frame):
    """compare and K-fold predict from the caseload parts: refused, not silently wrong."""
    from alliance_bayes.model.regression.design import DesignError
    from alliance_bayes.model.regression.predict import linear_predictor

    spec = load_spec(LATENT)
    with pytest.raises(DesignError, match="latent_mean"):
        linear_predictor(spec, prepare(spec, small_frame), None)


def test_graph_builds_for_both_options(small_frame):
    manifest = build_model(load_spec("who5_change"), prepare(load_spec("who5_change"), small_frame))
    latent = build_model(load_spec(LATENT), prepare(load_spec(LATENT), small_frame))
    assert "alliance_parts" in manifest.named_vars
    assert "alliance_provider_mean" not in manifest.named_vars
    for name in ("alliance_provider_mean", "alliance_sd_provider", "alliance_indicators"):
        assert name in latent.named_vars
    # The indicators are a Potential: the outcome stays the only observed variable.
    assert [rv.name for rv in latent.observed_RVs] == ["y"]
    logps = latent.point_logps()
    assert all(np.isfinite(v) for v in logps.values())
    assert set(manifest.point_logps()) < set(logps)


def _conditional_between(frame, tau: float, sigma: float, mu: float) -> tuple[np.ndarray, ...]:
    r"""The latent between part at the mode of :math:`m \mid a` with :math:`\mu, \sigma, \tau` fixed.

    At the initial point every alliance slope is 0, so the outcome does not depend on the
    provider means and the mode is that of the indicator model alone.
    """
    spec = load_spec(LATENT)
    data = prepare(spec, frame)
    model = build_model(spec, data)
    point = model.initial_point()
    point["alliance_mu"] = np.full(2, mu)
    point["alliance_sd_client_log__"] = np.full(2, np.log(sigma))
    point["alliance_sd_provider_log__"] = np.full(2, np.log(tau))
    v_rv = model["v_alliance_provider"]
    logp = model.compile_logp()
    dlogp = model.compile_dlogp(vars=[v_rv])
    shape = point["v_alliance_provider"].shape

    def neg(v):
        p = {**point, "v_alliance_provider": v.reshape(shape)}
        return -float(logp(p)), -np.asarray(dlogp(p))

    fit = optimize.minimize(neg, np.zeros(np.prod(shape)), jac=True, method="L-BFGS-B", tol=1e-12)
    assert fit.success
    # m = mu + tau^w v (partially non-centred; graph.latent_alliance_parts)
    w = model["alliance_noncentring"].get_value()
    return data, mu + tau**w * fit.x.reshape(shape)


def test_large_tau_reproduces_the_caseload_between_part(single_membership_frame):
    data, m = _conditional_between(single_membership_frame, tau=50.0, sigma=0.8, mu=4.0)
    lat = data.latent
    caseload = data.alliance[:, :, 1] + data.alliance_means[:, 1]
    for k in range(2):
        between = m[lat.index[k][lat.client_row[k], 0], k]
        np.testing.assert_allclose(between, caseload[:, k], atol=1e-4)


def test_finite_tau_shrinks_each_caseload_mean_by_its_reliability(single_membership_frame):
    r"""Single membership: :math:`m_p = \mu + r_p(\bar a_p - \mu)`, with the reliability
    :math:`r_p = n_p\tau^2/(n_p\tau^2 + \sigma^2)`."""
    tau, sigma, mu = 0.1, 0.8, 4.0
    data, m = _conditional_between(single_membership_frame, tau=tau, sigma=sigma, mu=mu)
    lat = data.latent
    for k in range(2):
        idx = lat.index[k][:, 0]
        n = np.bincount(idx, minlength=m.shape[0])
        mean = np.bincount(idx, weights=lat.score[k], minlength=m.shape[0]) / n
        r = n * tau**2 / (n * tau**2 + sigma**2)
        assert 0.5 < r.min() and r.max() < 0.7  # far from 1: the check has teeth
        np.testing.assert_allclose(m[:, k], mu + r * (mean - mu), atol=1e-5)


WITHIN, BETWEEN = 2.0, 20.0


def _latent_truth_study() -> SimulationConfig:
    """Between slopes 20, within slopes 2, planted on the providers' latent alliance; 600 clients
    with about ten per provider (caseload-mean reliability well below 1). The intercept moves with
    the slopes so that the follow-up stays inside 0–100."""
    base = SimulationConfig.small()
    zero = {k: 0.0 for k in base.who5.mu_b}
    shift = sum(BETWEEN - base.who5.mu_b[f"{s}_between"] for s in ("goal", "bond")) * 4.55
    who5 = dataclasses.replace(
        base.who5,
        intercept=base.who5.intercept - shift,
        mu_b={
            "goal_within": WITHIN,
            "bond_within": WITHIN,
            "goal_between": BETWEEN,
            "bond_between": BETWEEN,
        },
        deviation={care: dict(zero) for care in base.who5.deviation},
        sd_provider={"therapist": 1.0, "coach": 1.0},
        sigma=8.0,
    )
    return SimulationConfig.small(
        n_coach_clients=390,
        n_therapist_clients=108,
        n_both_clients=102,
        n_therapists=20,
        n_coaches=40,
        provider_alliance_sd=0.5,
        between_definition="latent",
        who5=who5,
    )


@pytest.mark.mcmc
def test_latent_means_recover_a_between_slope_planted_on_the_latent_alliance(tmp_path, fitted):
    """The caseload-mean model's between slopes are pulled toward the within slope; with latent
    provider means the 95% intervals hold the planted slope. Measured (seed 11, 2 x 500 draws),
    the mean of the two between slopes: caseload 9.5 ± 1.7, latent 15.6 ± 3.6 (truth 20)."""
    frame = _frame(_latent_truth_study(), tmp_path, seed=11)
    settings = {"chains": 2, "draws": 500, "tune": 500, "draws_only": True}
    est = {}
    for key, name in (("caseload", "who5_change"), ("latent_mean", LATENT)):
        data, dt = fitted(f"latent_mean_recovery_{key}", load_spec(name), frame, **settings)
        est[key] = compute_estimands(
            dt["posterior"].to_dataset(), care_weights=care_weights_of(data.scales())
        )
    lat, cas = est["latent_mean"], est["caseload"]
    for name in ("b_goal_between", "b_bond_between"):
        x = lat[name].values.ravel()
        lo, hi = np.quantile(x, [0.025, 0.975])
        print(
            f"{name}: latent {x.mean():.2f} ± {x.std():.2f} [{lo:.2f}, {hi:.2f}], "
            f"caseload {cas[name].values.mean():.2f} ± {cas[name].values.std():.2f}"
        )
        assert lo < BETWEEN < hi, (name, x.mean(), lo, hi)
    a = ((cas["b_goal_between"] + cas["b_bond_between"]) / 2).values.ravel()
    la = ((lat["b_goal_between"] + lat["b_bond_between"]) / 2).values.ravel()
    print(
        f"mean between: caseload {a.mean():.2f} ± {a.std():.2f}, latent {la.mean():.2f} ± {la.std():.2f}"
    )
    # The caseload model's interval lies below the truth, the latent one's holds it, and the
    # latent mean sits above the caseload one by more than 2 of the latter's posterior SDs.
    assert np.quantile(a, 0.975) < BETWEEN < np.quantile(la, 0.975)
    assert np.quantile(la, 0.025) < BETWEEN
    assert la.mean() - a.mean() > 2.0 * a.std()
