"""The ratings family's client covariates: a spec's own list, the study's declared covariates, a
built-in covariate the study did not measure, and the default kept as it was (no MCMC)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.data.covariates import parse_covariates
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.errors import DesignError, SpecError
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.ratings.describe import prior_rows
from alliance_bayes.model.ratings.design import COVARIATES, prepare_ratings, ratings_scales
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.report.study import FitOutcome, _ratings_section
from alliance_bayes.result import SUMMARY_COLUMNS
from alliance_bayes.spec import RATINGS_COVARIATES, load_spec, spec_from_dict
from test_ratings import DISCRIMINATION, THRESHOLDS, _marginal_by_quad

LEVELS = ["depression", "anxiety", "adjustment"]
DECLARED = {
    "diagnosis": {
        "type": "categorical",
        "reference": "depression",
        "label": "Primary diagnosis",
        "levels": LEVELS,
    },
    "income": {"type": "numeric", "label": "Income"},
    "employed": {"type": "binary", "reference": "no", "levels": ["no", "yes"]},
}
PRIOR_VARS = [
    "b_covariate", "b_care", "provider_type_alliance", "b_session", "discrimination", "threshold",
    "sd_provider_latent", "sd_country_latent", "z_country",
]  # fmt: skip


@pytest.fixture(scope="module")
def shipped() -> RawStudy:
    return load_study("data/synthetic")


@pytest.fixture(scope="module")
def spec():
    return load_spec("alliance_ratings")


@pytest.fixture(scope="module")
def no_who5(shipped) -> RawStudy:
    clients = shipped.clients.drop(columns=["who5_baseline", "who5_followup"])
    return RawStudy.from_frames(shipped.providers, clients, shipped.sessions)


@pytest.fixture(scope="module")
def declared(shipped) -> RawStudy:
    """The shipped study with three declared covariates: diagnosis in turn by row, income and
    employment drawn at random."""
    clients = shipped.clients.copy()
    rng = np.random.default_rng(5)
    n = len(clients)
    clients["diagnosis"] = np.array(LEVELS)[np.arange(n) % 3]
    clients["income"] = rng.normal(30_000.0, 8_000.0, n)
    clients["employed"] = rng.choice(["no", "yes"], n)
    covariates, problems = parse_covariates(DECLARED)
    assert problems == []
    return RawStudy.from_frames(shipped.providers, clients, shipped.sessions, covariates=covariates)


def _jittered(model, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


def _shapes(model) -> dict[str, tuple[int, ...]]:
    point = model.initial_point()
    return {rv.name: point[model.rvs_to_values[rv].name].shape for rv in model.free_RVs}


def _prior_estimands(spec, design):
    family = family_of(spec)
    model = family.build(spec, design)
    import pymc as pm

    names = [v for v in PRIOR_VARS if v in model.named_vars]
    with model:
        prior = pm.sample_prior_predictive(draws=4, random_seed=1, var_names=names)
    return family.estimands(spec, prior["prior"].to_dataset(), family.scales(design))


# --- the spec ---------------------------------------------------------------------------------------
def test_a_ratings_spec_names_its_covariates_or_takes_the_built_in_ones():
    default = load_spec("alliance_ratings")
    assert default.model_covariates == RATINGS_COVARIATES == ("age", "male", "who5_baseline")
    assert default.declared_covariates == ()
    named = load_spec("alliance_ratings", predictors={"covariates": ["age", "diagnosis"]})
    assert named.model_covariates == ("age", "diagnosis")
    assert named.declared_covariates == ("diagnosis",)
    # run.json writes the list out and reads it back
    again = spec_from_dict(json.loads(json.dumps(named.to_dict())), "run.json")
    assert again.model_covariates == ("age", "diagnosis")
    for covariates, message in (
        (["age", "male", "days_in_care"], "days_in_care"),  # the regression default, written
        (["age", "days_in_care"], "days_in_care"),
        ([], "at least one"),
    ):
        with pytest.raises(SpecError, match=message):
            load_spec("alliance_ratings", predictors={"covariates": covariates})
    with pytest.raises(SpecError, match="takes only"):
        load_spec("alliance_ratings", predictors={"alliance": "composite"})


def test_a_covariate_the_study_does_not_declare_is_refused(spec, shipped):
    named = load_spec("alliance_ratings", predictors={"covariates": ["age", "diagnosis"]})
    with pytest.raises(DesignError, match=r"'diagnosis' not declared.*\['age', 'male', 'who5"):
        design_of(named, shipped)


# --- the default, unchanged -------------------------------------------------------------------------
def test_the_default_design_and_graph_are_the_built_in_covariates(spec, shipped):
    """The default design by hand from the frame, and the same model as a spec that names the
    three built-in covariates itself."""
    data = design_of(spec, shipped)
    assert data.covariate_names == tuple(COVARIATES)
    assert data.covariate_coding == {} and data.covariates_not_measured == ()
    c = data.frame.clients
    x = c[["age", "male", "who5_baseline"]].to_numpy(float)
    np.testing.assert_array_equal(data.covariate_means, x.mean(axis=0))
    np.testing.assert_array_equal(data.covariates, (x - x.mean(axis=0)) / [10.0, 1.0, 10.0])
    scales = ratings_scales(data)
    assert scales["male_mean"] == pytest.approx(c["male"].mean())
    assert list(scales["covariate_means"]) == list(COVARIATES)
    assert not {"covariate_coding", "covariates_not_measured"} & set(scales)

    stated = load_spec("alliance_ratings", predictors={"covariates": list(RATINGS_COVARIATES)})
    same = design_of(stated, shipped)
    family = family_of(spec)
    model, model_stated = family.build(spec, data), family.build(stated, same)
    assert model.coords["covariate"] == tuple(COVARIATES)
    assert _shapes(model) == _shapes(model_stated)
    assert _shapes(model)["b_covariate_logit"] == (3,)
    point = _jittered(model)
    assert float(model.compile_logp()(point)) == float(model_stated.compile_logp()(point))


# --- a built-in covariate the study did not measure -------------------------------------------------
def test_a_study_without_who5_leaves_the_baseline_out_and_says_so(spec, shipped, no_who5):
    full = design_of(spec, shipped)
    data = design_of(spec, no_who5)
    assert data.covariate_names == ("age_decade", "male")
    assert data.covariates_not_measured == ("who5_baseline_10",)
    assert ratings_scales(data)["covariates_not_measured"] == ["who5_baseline_10"]
    # nobody is left out for it: the same clients as with WHO-5, the other two columns as there
    assert data.exclusions == full.exclusions
    np.testing.assert_array_equal(data.covariates, full.covariates[:, :2])
    est = _prior_estimands(spec, data)
    assert "alliance_per_10_who5_baseline" not in est
    assert {"alliance_per_decade_age", "alliance[male-not_male]"} <= set(est.data_vars)
    row = prior_rows(spec, ratings_scales(data))[2]
    assert row.parameter.startswith("β (age per decade, male)")
    assert "Not measured in this study, so left out of the model: baseline WHO-5" in (
        row.justification
    )
    # a spec that names the covariate needs it
    named = load_spec("alliance_ratings", predictors={"covariates": ["age", "who5_baseline"]})
    with pytest.raises(DesignError, match=r"\['who5_baseline'\], not measured"):
        design_of(named, no_who5)


def test_a_covariate_missing_for_some_clients_keeps_complete_cases(spec, shipped):
    clients = shipped.clients.copy()
    clients.loc[clients.index[:7], "sex"] = None  # male is then missing for them
    data = design_of(spec, RawStudy.from_frames(shipped.providers, clients, shipped.sessions))
    full = design_of(spec, shipped)
    assert data.covariate_names == tuple(COVARIATES) and data.covariates_not_measured == ()
    assert data.exclusions["missing_covariate"] == full.exclusions["missing_covariate"] + 7
    assert data.n_clients == full.n_clients - 7


# --- declared covariates ----------------------------------------------------------------------------
def test_declared_covariates_are_coded_as_the_regression_family_codes_them(declared):
    spec = load_spec(
        "alliance_ratings",
        predictors={"covariates": ["age", "diagnosis", "income", "employed", "who5_baseline"]},
    )
    data = prepare_ratings(spec, build_frame(declared))
    labels = (
        "age_decade", "diagnosis[anxiety]", "diagnosis[adjustment]", "income", "employed",
        "who5_baseline_10",
    )  # fmt: skip
    assert data.covariate_names == labels
    model = family_of(spec).build(spec, data)
    assert model.coords["covariate"] == labels
    assert np.isfinite(model.compile_logp()(_jittered(model)))
    c = data.frame.clients
    for j, level in ((1, "anxiety"), (2, "adjustment")):
        d = (c["diagnosis"] == level).to_numpy(float)
        # centred at the level's share, not scaled: one unit is the level against the reference
        np.testing.assert_allclose(data.covariates[:, j], d - d.mean())
    income = c["income"].to_numpy(float)
    np.testing.assert_allclose(data.covariates[:, 3], (income - income.mean()) / income.std(ddof=1))
    yes = (c["employed"] == "yes").to_numpy(float)
    np.testing.assert_allclose(data.covariates[:, 4], yes - yes.mean())
    coding = ratings_scales(data)["covariate_coding"]
    assert coding["diagnosis"]["reference"] == "depression"
    assert coding["diagnosis"]["levels"] == ["anxiety", "adjustment"]
    assert coding["income"]["sd"] == pytest.approx(income.std(ddof=1))
    assert (coding["employed"]["level"], coding["employed"]["reference"]) == ("yes", "no")


def _posterior(labels, beta, draws: int = 2) -> xr.Dataset:
    """Every draw at the same parameters, no care, country or provider effects: the care-mix
    level is then the item-averaged marginal rating of the shift alone."""

    def rep(x, *dims):
        x = np.asarray(x, float)
        return (("chain", "draw", *dims), np.broadcast_to(x, (1, draws, *x.shape)).copy())

    return xr.Dataset(
        {
            "discrimination": rep(DISCRIMINATION, "subscale"),
            "threshold": rep(THRESHOLDS, "subscale", "cut"),
            "b_covariate": rep(beta, "covariate"),
            "b_care": rep([0.0, 0.0], "care_contrast"),
            "provider_type_alliance": rep(0.0),
            "sd_provider_latent": rep(0.0),
            "sd_country_latent": rep(0.0),
            "z_country": rep([0.0, 0.0], "country"),
            "b_session": rep(0.0),
        },
        coords={
            "chain": [0],
            "draw": np.arange(draws),
            "subscale": ["goal", "bond"],
            "covariate": list(labels),
            "care_contrast": ["therapist-coach", "both-coach"],
            "country": ["GB", "US"],
        },
    )


def test_declared_covariate_estimands_are_named_contrasts_in_closed_form(declared):
    spec = load_spec(
        "alliance_ratings", predictors={"covariates": ["age", "diagnosis", "income", "employed"]}
    )
    scales = ratings_scales(prepare_ratings(spec, build_frame(declared)))
    means = scales["covariate_means"]
    labels = list(means)
    beta = dict(zip(labels, (0.3, 0.5, -0.4, 0.2, -0.6), strict=True))
    est = compute_ratings_estimands(_posterior(labels, list(beta.values())), scales)
    names = {n for n in est.data_vars if "diagnosis" in n or "income" in n or "employed" in n}
    assert names == {
        "alliance_diagnosis[anxiety-depression]",
        "alliance_diagnosis[adjustment-depression]",
        "alliance_per_sd_income",
        "alliance_employed[yes-no]",
    }
    assert "alliance_per_10_who5_baseline" not in est and "alliance[male-not_male]" not in est

    def level(shift: float) -> float:
        return _marginal_by_quad(shift, 1.0)

    base = -sum(beta[c] * means[c] for c in ("diagnosis[anxiety]", "diagnosis[adjustment]"))
    for lv in ("anxiety", "adjustment"):
        want = level(base + beta[f"diagnosis[{lv}]"]) - level(base)
        got = est[f"alliance_diagnosis[{lv}-depression]"]
        assert float(got.mean()) == pytest.approx(want, abs=1e-6)
        assert got.attrs["units"].endswith(f"Primary diagnosis {lv} minus depression (reference)")
    assert float(est["alliance_per_sd_income"].mean()) == pytest.approx(
        level(0.1) - level(-0.1), abs=1e-6
    )
    assert "per SD of Income" in est["alliance_per_sd_income"].attrs["units"]
    p = means["employed"]
    assert float(est["alliance_employed[yes-no]"].mean()) == pytest.approx(
        level(-0.6 * (1 - p)) - level(0.6 * p), abs=1e-6
    )
    assert float(est["alliance_per_decade_age"].mean()) == pytest.approx(
        level(0.15) - level(-0.15), abs=1e-6
    )
    # a declared column the scales do not describe cannot be named or computed
    with pytest.raises(ValueError, match=r"covariate_coding does not describe"):
        compute_ratings_estimands(_posterior(labels, list(beta.values())), {})


# --- the study report -------------------------------------------------------------------------------
def _outcome(spec, design) -> FitOutcome:
    est = _prior_estimands(spec, design)
    summary = estimand_table(est).set_index("estimand")[list(SUMMARY_COLUMNS)]
    scales = json.loads(json.dumps(family_of(spec).scales(design)))
    return FitOutcome(
        spec=spec.name,
        family="ratings",
        description="",
        passed=True,
        headline="",
        summary=summary,
        hypotheses=None,
        meta={"scales": scales},
    )


def test_the_study_report_says_what_was_not_measured_and_shows_declared_covariates(
    spec, shipped, no_who5, declared
):
    md = "\n".join(_ratings_section(_outcome(spec, design_of(spec, no_who5)), None))
    claim = next(line for line in md.splitlines() if "by baseline well-being" in line)
    assert "not measured" in claim and "alliance_per_10_who5_baseline" in claim
    assert "left out of the ratings model: baseline WHO-5 (`who5_baseline`)" in md
    age = next(line for line in md.splitlines() if "did not differ by age" in line)
    assert "not measured" not in age
    full = "\n".join(_ratings_section(_outcome(spec, design_of(spec, shipped)), None))
    assert "not measured" not in full and "left out" not in full

    named = load_spec("alliance_ratings", predictors={"covariates": ["age", "diagnosis"]})
    md = "\n".join(_ratings_section(_outcome(named, design_of(named, declared)), None))
    for row in (
        "| Primary diagnosis: anxiety vs depression (`alliance_diagnosis[anxiety-depression]`) |",
        "| Primary diagnosis: adjustment vs depression (`alliance_diagnosis[adjustment-",
    ):
        assert row in md
    assert pd.Series(md.splitlines()).str.contains("not measured").sum() == 0


@pytest.mark.parametrize("country", ["absent", "one"])
def test_a_study_without_country_or_of_one_country_has_no_country_effects(spec, shipped, country):
    """``country`` is optional: a study without it (or with one country) has no country effects
    in the graph, no country estimands, no country prior row, and says why in the study report;
    every other part is the same design as the shipped study's."""
    clients = shipped.clients.copy()
    if country == "absent":
        clients = clients.drop(columns=["country"])
    else:
        clients["country"] = "NZ"
    study = RawStudy.from_frames(shipped.providers, clients, shipped.sessions)
    full, data = design_of(spec, shipped), design_of(spec, study)
    assert data.countries == (("all",) if country == "absent" else ("NZ",))
    assert data.covariates_not_measured == (("country",) if country == "absent" else ())
    # nobody is lost for a missing country, and the rest of the design is the shipped one's
    assert data.n_clients == full.n_clients and (data.counts == full.counts).all()
    np.testing.assert_array_equal(data.covariates, full.covariates)
    model = family_of(spec).build(spec, data)
    assert not {"sd_country_latent", "z_country"} & {rv.name for rv in model.free_RVs}
    assert np.isfinite(model.compile_logp()(model.initial_point()))
    est = _prior_estimands(spec, data)
    assert not [v for v in est.data_vars if "country" in v]
    rows = prior_rows(spec, ratings_scales(data))
    assert rows[-1].parameter == "σ_a (providers)" and "countries" not in rows[-1].justification
    md = "\n".join(_ratings_section(_outcome(spec, data), None))
    claim = next(line for line in md.splitlines() if "did not differ by country" in line)
    if country == "absent":
        assert "not measured: the study has no country (`country`) values" in claim
    else:
        assert "not estimable: the study has one country" in claim


def test_a_one_country_posterior_of_an_older_bundle_still_has_its_estimands(spec, shipped):
    """Bundles written before one-country fits dropped the country effects hold a one-level
    ``z_country``: their estimands are computed as a country-free fit's (no division by n - 1)."""
    clients = shipped.clients.assign(country="NZ")
    data = design_of(spec, RawStudy.from_frames(shipped.providers, clients, shipped.sessions))
    family = family_of(spec)
    model = family.build(spec, data)
    import pymc as pm

    with model:
        prior = pm.sample_prior_predictive(draws=4, random_seed=1)["prior"].to_dataset()
    scales = family.scales(data)
    new = family.estimands(spec, prior, scales)
    old = prior.assign(
        z_country=(("chain", "draw", "country"), np.zeros((1, 4, 1))),
        sd_country_latent=(("chain", "draw"), np.ones((1, 4))),
    ).assign_coords(country=["NZ"])
    again = family.estimands(spec, old, scales)
    assert set(again.data_vars) == set(new.data_vars)
    xr.testing.assert_allclose(again, new)
