"""Client covariates in the change family: built-in and declared ones (numeric, categorical) shift
the means of the true baseline and follow-up, centred so that the care-type means stay those of a
client at the sample's covariate means."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pymc as pm
import pytensor
import pytest
from scipy import stats
from scipy.special import expit
from tests.change_simulator import DIAGNOSES, simulate_change_study

from alliance_bayes.data.frame import build_frame
from alliance_bayes.errors import DesignError
from alliance_bayes.model.change.design import covariate_prior_sd, prepare_change
from alliance_bayes.model.change.estimands import compute_change_estimands
from alliance_bayes.model.change.graph import build_change_model
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.design import check_covariates
from alliance_bayes.spec import ModelSpec, load_spec

#: Planted (true-baseline slope, true-change slope) per design column: per unit of income, per
#: level against depression.
PLANTED = {
    "income": (0.5, -0.3),
    "diagnosis[anxiety]": (-6.0, 4.0),
    "diagnosis[ptsd]": (-10.0, 0.0),
}


def _spec(covariates: list[str], **overrides) -> ModelSpec:
    """``wellbeing_change`` adjusting for ``covariates`` (declared ones included)."""
    spec = load_spec("wellbeing_change", **overrides)
    return dataclasses.replace(
        spec, predictors=dataclasses.replace(spec.predictors, covariates=tuple(covariates))
    )


@pytest.fixture(scope="module")
def small_study():
    study, _, _ = simulate_change_study(seed=11, covariate_slopes={})
    return study


def test_design_columns_are_centred_and_scaled_by_hand(small_study):
    design = prepare_change(_spec(["age", "income", "diagnosis"]), build_frame(small_study))
    c = design.frame.clients
    assert design.covariate_names == ("age", "income", "diagnosis[anxiety]", "diagnosis[ptsd]")
    assert design.covariates.shape == (design.n_clients, 4)
    for j, name in enumerate(("age", "income")):
        raw = c[name].to_numpy(float)
        assert design.covariate_means[j] == pytest.approx(raw.mean())
        assert design.covariate_sds[j] == pytest.approx(raw.std())
        np.testing.assert_allclose(design.covariates[:, j], (raw - raw.mean()) / raw.std())
    for j, level in enumerate(DIAGNOSES[1:], start=2):
        indicator = (c["diagnosis"].astype(str) == level).to_numpy(float)
        assert design.covariate_sds[j] == 1.0  # a level difference, not per SD
        np.testing.assert_allclose(design.covariates[:, j], indicator - indicator.mean())
    np.testing.assert_allclose(design.covariates.mean(axis=0), 0.0, atol=1e-12)

    scales = design.scales()
    age = c["age"].to_numpy(float)
    assert scales["covariate_sd"]["age"] == pytest.approx(age.std(ddof=1))
    assert scales["covariate_means"]["income"] == pytest.approx(c["income"].mean())
    coding = scales["covariate_coding"]
    assert set(coding) == {"income", "diagnosis"}  # the declared ones
    assert coding["diagnosis"]["reference"] == "depression"
    assert coding["diagnosis"]["columns"] == ["diagnosis[anxiety]", "diagnosis[ptsd]"]
    json.dumps(scales)  # run.json takes it as it is


def test_without_covariates_the_design_has_none(small_study):
    design = prepare_change(load_spec("wellbeing_change"), build_frame(small_study))
    assert design.covariates.shape == (design.n_clients, 0)
    assert not {"covariate_sd", "covariate_means", "covariate_coding"} & set(design.scales())
    assert not any(
        k.startswith("missing_") and k != "missing_who5_baseline" for k in design.exclusions
    )


def test_clients_missing_a_covariate_are_left_out_and_counted():
    study, _, _ = simulate_change_study(seed=11, covariate_slopes={})
    clients = study.clients.copy()
    clients.loc[clients.index[:7], "income"] = np.nan
    frame = build_frame(dataclasses.replace(study, clients=clients))
    design = prepare_change(_spec(["income"]), frame)
    assert design.exclusions["missing_income"] == 7
    assert design.n_clients == design.exclusions["clients_in_model"] == len(clients) - 7


def test_an_undeclared_covariate_is_refused_as_in_every_family(small_study):
    spec = _spec(["age", "incme"])
    frame = build_frame(small_study)
    with pytest.raises(DesignError) as err:
        prepare_change(spec, frame)
    with pytest.raises(DesignError) as regression:
        check_covariates(spec, frame)
    assert str(err.value) == str(regression.value)
    assert "'incme' (did you mean 'income'?)" in str(err.value)


def test_the_slope_prior_scales_with_the_outcome_range():
    assert covariate_prior_sd(load_spec("wellbeing_change")) == 5.0
    assert covariate_prior_sd(load_spec("depression_course")) == pytest.approx(5.0 * 27 / 100)
    stated = load_spec("depression_course", priors={"b_covariate_sd": 0.8})
    assert covariate_prior_sd(stated) == 0.8


def _point(model: pm.Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every free variable at a random value (on the transformed scale)."""
    start = model.initial_point()
    return {
        k: rng.normal(0.0, 0.5, np.shape(v)) + (50.0 if "mu_" in k else 0.0)
        for k, v in start.items()
    }


def test_log_density_matches_a_hand_computation():
    study, _, _ = simulate_change_study(
        seed=5,
        n_per_care=(15, 15, 12),
        n_therapists=3,
        n_coaches=4,
        covariate_slopes={},
    )
    spec = _spec(["income", "diagnosis"])
    design = prepare_change(spec, build_frame(study))
    c = design.frame.clients
    assert set(c["diagnosis"]) == set(DIAGNOSES)
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        model = build_change_model(spec, design)
        point = _point(model, np.random.default_rng(2))
        observed = model.compile_fn(
            model.logp(vars=model.observed_RVs), inputs=model.value_vars, on_unused_input="ignore"
        )
        slopes = [model["b_covariate_baseline_z"], model["b_covariate_change_z"]]
        prior = model.compile_fn(
            model.logp(vars=slopes), inputs=model.value_vars, on_unused_input="ignore"
        )
        got_observed, got_prior = float(observed(point)), float(prior(point))

    # The covariates by hand: income standardised (SD with n), diagnosis indicators centred.
    income = c["income"].to_numpy(float)
    dx = c["diagnosis"].astype(str).to_numpy()
    x = np.column_stack(
        [
            (income - income.mean()) / income.std(),
            *((dx == lv) - np.mean(dx == lv) for lv in DIAGNOSES[1:]),
        ]
    )
    b1, delta = point["b_covariate_baseline_z"], point["b_covariate_change_z"]
    tau = np.exp(point["sd_true_log__"])
    corr = 2.0 * expit(point["corr_true_01_logodds__"]) - 1.0
    rho = expit(point["reliability_logodds__"])
    sigma_e = np.sqrt(1.0 - rho) * np.std(design.x1, ddof=1)
    u = point["z_provider"] * np.exp(point["sd_provider_log__"])[design.provider_type]
    v = (design.member_weight * u[design.member_index]).sum(axis=1)
    mu1 = point["mu_true_baseline"]
    mu2 = mu1 + point["true_change"]

    m1 = mu1[design.care] + x @ b1
    m2 = mu2[design.care] + v + x @ (b1 + delta)
    v1 = tau[0] ** 2 + sigma_e**2
    cov = corr * tau[0] * tau[1]
    f = design.followed
    expected = stats.norm.logpdf(design.x1, m1, np.sqrt(v1)).sum()
    expected += stats.norm.logpdf(
        design.x2,
        m2[f] + cov / v1 * (design.x1[f] - m1[f]),
        np.sqrt(tau[1] ** 2 + sigma_e**2 - cov**2 / v1),
    ).sum()
    assert got_observed == pytest.approx(expected, rel=1e-10)
    # PyMC's Normal log density takes log(2π) to about 3e-8 per term.
    hand_prior = stats.norm.logpdf(np.r_[b1, delta], 0.0, covariate_prior_sd(spec)).sum()
    assert got_prior == pytest.approx(hand_prior, abs=1e-6)


def test_slope_estimands_are_named_as_the_regression_family_names_them(small_study):
    spec = _spec(["age", "diagnosis"])
    design = prepare_change(spec, build_frame(small_study))
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        model = build_change_model(spec, design)
        with model:
            prior = pm.sample_prior_predictive(20, random_seed=4).prior
    est = compute_change_estimands(prior, design.scales(), prefix="who5", units="WHO-5 points")
    for part in ("baseline", "followup", "change"):
        for column in ("age", "diagnosis[anxiety]", "diagnosis[ptsd]"):
            assert f"{part}:b_{column}" in est
    np.testing.assert_allclose(
        est["followup:b_age"].values, est["baseline:b_age"].values + est["change:b_age"].values
    )
    # per unit: the sampled per-SD slope over the column's SD
    age_sd = design.covariate_sds[0]
    np.testing.assert_allclose(
        est["baseline:b_age"].values,
        prior["b_covariate_baseline_z"].sel(covariate="age").values / age_sd,
    )
    anxiety = est["change:b_diagnosis[anxiety]"].attrs
    assert anxiety["reference"] == "depression" and "anxiety vs depression" in anxiety["units"]
    assert est["baseline:b_age"].attrs["units"] == "WHO-5 points per year of age, true baseline"
    rows = family_of(spec).prior_rows(spec, design.scales())
    assert rows[-1].distribution == "Normal(0, 5)"


@pytest.mark.mcmc
@pytest.mark.slow
def test_planted_covariate_slopes_are_recovered(tmp_path):
    from alliance_bayes.fitting import design_of, fit_design, settings_for

    study, truth, _ = simulate_change_study(seed=21, covariate_slopes=PLANTED)
    spec = _spec(
        ["age", "income", "diagnosis"],
        change={"reliability_mean": truth.reliability, "reliability_sd": 0.03},
        sampler={"draws": 300, "tune": 300, "chains": 2},
    )
    design = design_of(spec, study)
    fit = fit_design(spec, design, settings_for(spec, seed=5, progress=False))
    est = fit.estimands
    planted = {**PLANTED, "age": (0.0, 0.0)}
    for column, (b1, delta) in planted.items():
        for part, value in (("baseline", b1), ("change", delta), ("followup", b1 + delta)):
            draws = est[f"{part}:b_{column}"].values.ravel()
            z = (draws.mean() - value) / draws.std()
            assert abs(z) < 3.5, (part, column, draws.mean(), draws.std(), value)

    path = fit.save(tmp_path, run="test", figure_formats=("png",))
    run = json.loads((path / "run.json").read_text(encoding="utf-8"))
    assert run["scales"]["covariate_coding"]["diagnosis"]["reference"] == "depression"
    report = (path / "report.md").read_text(encoding="utf-8")
    assert "change:b_diagnosis[anxiety]" in report or "anxiety vs depression" in report


def test_a_change_spec_adjusts_for_no_covariate_unless_it_names_some():
    from pathlib import Path

    from alliance_bayes.spec import MODELS_DIR, parse_spec

    text = Path(MODELS_DIR / "wellbeing_change.toml").read_text(encoding="utf-8")
    unstated = text.replace("covariates = []\n", "")
    assert parse_spec(unstated, "unstated.toml").predictors.covariates == ()
    named = text.replace("covariates = []", 'covariates = ["age"]')
    assert parse_spec(named, "named.toml").predictors.covariates == ("age",)
