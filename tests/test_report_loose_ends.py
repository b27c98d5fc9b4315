"""The report's loose ends: every ratings and latent estimand labelled in words, covariate levels
without clients named in report.md, and model descriptions listing only the fitted model's terms.
Fake posteriors, no MCMC."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.latent import describe as latent_describe
from alliance_bayes.model.latent.estimands import compute_joint_estimands
from alliance_bayes.model.ratings import describe as ratings_describe
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.model.regression import describe as regression_describe
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report.bundle import (
    ReportContent,
    _clients_section,
    _estimands_csv,
    write_bundle,
)
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.report.tables import declared_covariate_labels, estimand_label
from alliance_bayes.spec import load_spec
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta

THRESHOLDS = np.array([[-2.6, -1.9, -1.0, 0.1], [-2.9, -2.1, -1.3, -0.2]])  # goal, bond
DISCRIMINATION = np.array([1.8, 2.4])
#: A study with declared covariates of every type: numeric, text-coded binary, categorical.
CODING = {
    "income": {"type": "numeric", "label": "Income", "columns": ["income"], "sd": 12.0},
    "employed": {
        "type": "binary",
        "label": "Employed",
        "reference": "no",
        "level": "yes",
        "columns": ["employed"],
    },
    "diagnosis": {
        "type": "categorical",
        "label": "Primary diagnosis",
        "reference": "depression",
        "levels": ["anxiety"],
        "absent_levels": ["bipolar"],
        "clients": {"depression": 30, "anxiety": 10, "bipolar": 0},
        "columns": ["diagnosis[anxiety]"],
    },
}
RATINGS_COVARIATES = [
    "age_decade",
    "male",
    "who5_baseline_10",
    "income",
    "employed",
    "diagnosis[anxiety]",
]
RATINGS_SCALES = {
    "care_types": ["therapist", "coach", "psychiatrist", "therapist_and_coach"],
    "care_reference": "coach",
    "care_share": {"therapist": 0.3, "coach": 0.4, "psychiatrist": 0.1, "therapist_and_coach": 0.2},
    "country_share": {"GB": 0.25, "US": 0.75},
    "provider_types": ["therapist", "coach", "psychiatrist"],
    "provider_reference": "coach",
    "provider_share": {"therapist": 0.4, "coach": 0.4, "psychiatrist": 0.2},
    "provider_mix": {"therapist_and_coach": {"therapist": 0.5, "coach": 0.5}},
    "male_mean": 0.4,
    "covariate_means": {c: 0.0 for c in RATINGS_COVARIATES},
    "covariate_coding": CODING,
}


def _rep(x, *dims, draws: int = 2):
    x = np.asarray(x, float)
    return (("chain", "draw", *dims), np.broadcast_to(x, (1, draws, *x.shape)).copy())


def _ratings_estimands() -> xr.Dataset:
    """Every estimand the ratings family names: care levels and contrasts, the built-in and
    declared covariates, countries and several provider types."""
    posterior = xr.Dataset(
        {
            "discrimination": _rep(DISCRIMINATION, "subscale"),
            "threshold": _rep(THRESHOLDS, "subscale", "cut"),
            "b_covariate": _rep(np.linspace(-0.3, 0.3, len(RATINGS_COVARIATES)), "covariate"),
            "b_care": _rep([0.2, -0.1, 0.3], "care_contrast"),
            "provider_type_alliance": _rep([0.1, 0.2], "provider_type_contrast"),
            "sd_provider_latent": _rep(0.3),
            "sd_country_latent": _rep(0.2),
            "z_country": _rep([0.5, -0.5], "country"),
            "b_session": _rep(0.05),
        },
        coords={
            "chain": [0],
            "draw": np.arange(2),
            "subscale": ["goal", "bond"],
            "covariate": RATINGS_COVARIATES,
            "care_contrast": [
                "therapist-coach",
                "psychiatrist-coach",
                "therapist_and_coach-coach",
            ],
            "provider_type_contrast": ["therapist-coach", "psychiatrist-coach"],
            "country": ["GB", "US"],
        },
    )
    return compute_ratings_estimands(posterior, RATINGS_SCALES)


def _latent_estimands() -> xr.Dataset:
    """Every estimand the latent family names: two outcomes' regression estimands (care-type
    slopes, their spread, provider SDs, residual correlation, declared covariates) and the
    measurement's."""
    rng = np.random.default_rng(3)
    coords = {
        "chain": [0, 1],
        "draw": np.arange(20),
        "outcome": ["who5", "phq9"],
        "subscale": ["goal", "bond"],
        "level": ["within", "between"],
        "care_type": ["therapist", "coach", "both"],
        "care_contrast": ["therapist-coach", "both-coach"],
        "provider_type": ["therapist", "coach"],
        "covariate": ["age", "male", "days_in_care", "income", "diagnosis[anxiety]"],
        "cut": ["1|2", "2|3", "3|4", "4|5"],
        "subscale_pair": ["goal~bond"],
    }

    def v(*dims):
        return (("chain", "draw", *dims), rng.normal(size=(2, 20, *(len(coords[d]) for d in dims))))

    posterior = xr.Dataset(
        {
            "b_baseline": v("outcome"),
            "b_covariate": v("outcome", "covariate"),
            "b_care": v("outcome", "care_contrast"),
            "mu_b": v("outcome", "subscale", "level"),
            "b": v("outcome", "care_type", "subscale", "level"),
            "sd_b": v("outcome", "subscale", "level"),
            "sd_provider": v("outcome", "provider_type"),
            "sd_provider_slope": v("outcome", "subscale"),
            "sigma": v("outcome"),
            "nu": v("outcome"),
            "rho_outcomes": v(),
            "threshold": v("subscale", "cut"),
            "discrimination": v("subscale"),
            "sd_provider_alliance": v("subscale"),
            "corr_client_alliance": v("subscale_pair"),
        },
        coords=coords,
    )
    return compute_joint_estimands(
        posterior,
        outcome_units={"who5": "WHO-5 points", "phq9": "PHQ-9 points"},
        primary="who5",
        care_weights={"who5": {"coach": 0.7, "therapist": 0.3}},
        covariate_coding=CODING,
    )


def _mechanical(name: str, label: str) -> bool:
    """Whether ``label`` is ``name`` with its punctuation turned into text ("Sd provider
    alliance" of ``sd_provider_alliance``), or still carries code punctuation."""

    def letters(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    bare = name.rpartition(":")[2]
    return letters(label.rpartition(": ")[2]) == letters(bare) or bool(
        re.search(r"[_\[\]|~]", label)
    )


@pytest.mark.parametrize("declared", [False, True], ids=["without coding", "declared labels"])
@pytest.mark.parametrize("family", ["ratings", "latent"])
def test_every_ratings_and_latent_estimand_has_a_label_in_words(family, declared):
    est = _ratings_estimands() if family == "ratings" else _latent_estimands()
    labels = declared_covariate_labels(CODING) if declared else None
    mechanical = {
        n: estimand_label(n, labels)
        for n in map(str, est.data_vars)
        if _mechanical(n, estimand_label(n, labels))
    }
    assert not mechanical
    assert len(est.data_vars) == (22 if family == "ratings" else 110)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("alliance[therapist]", "Expected alliance rating: therapist-only care"),
        ("alliance[therapist-coach]", "Expected alliance rating, care type: therapist vs coach"),
        ("alliance[male-not_male]", "Expected alliance rating: male vs not male"),
        ("alliance_per_decade_age", "Expected alliance rating per decade of age"),
        ("alliance_country[GB]", "Expected alliance rating in country GB"),
        ("sd_country_alliance", "SD of the expected alliance rating across countries"),
        ("sd_provider_alliance", "Provider SD of the expected alliance rating"),
        ("sd_provider_latent", "Provider SD of the latent alliance (client SDs)"),
        ("icc_provider_alliance", "ICC of providers (latent alliance)"),
        ("alliance_per_sd_income", "Expected alliance rating per SD of income"),
        ("alliance_employed[yes-no]", "Expected alliance rating, employed: yes vs no"),
        ("sd_provider_alliance[goal]", "Provider SD of the latent alliance (goal)"),
        ("threshold[bond,4|5]", "Threshold between ratings 4 and 5 (bond)"),
        ("discrimination[goal]", "Item discrimination (goal)"),
        (
            "corr_client_alliance[goal~bond]",
            "Correlation of the clients' latent alliance (goal and bond)",
        ),
        ("rho_outcomes", "Residual correlation of the outcomes"),
        ("phq9:sd_b_goal_within", "phq9: SD of care-type slopes: goal, within providers"),
    ],
)
def test_ratings_and_latent_labels_read_as_the_regression_familys(name, label):
    assert estimand_label(name) == label


def test_estimands_csv_of_a_ratings_fit_labels_its_rows_in_words(tmp_path):
    dt = make_fake_datatree(chains=2, draws=50, seed=5)
    est = _ratings_estimands()
    gate = check_convergence(dt, compute_estimands(dt["posterior"].to_dataset()))
    meta = make_fake_meta(dt, spec="alliance_ratings") | {"scales": {"covariate_coding": CODING}}
    _estimands_csv(estimand_table(est), meta, gate, tmp_path / "estimands.csv")
    table = pd.read_csv(tmp_path / "estimands.csv").set_index("estimand")
    assert (
        table.loc["sd_provider_alliance", "label"] == "Provider SD of the expected alliance rating"
    )
    # the declared covariates' labels come first
    assert table.loc["alliance_diagnosis[anxiety-depression]", "label"] == (
        "Primary diagnosis: anxiety vs depression"
    )
    assert not [n for n, row in table.iterrows() if _mechanical(str(n), row["label"])]


# --- a covariate level without clients in report.md ---------------------------------------------


def test_report_names_a_covariate_level_no_client_had(tmp_path):
    dt = make_fake_datatree(chains=2, draws=100, seed=7)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS
    )
    meta = make_fake_meta(dt) | {
        "exclusions": {"n_clients": 40, "analysed": 40},
        "scales": {"covariate_coding": {"diagnosis": CODING["diagnosis"]}},
    }
    out = write_bundle(
        tmp_path, "who5_change", "r1", dt, meta, est, check_convergence(dt, est),
        content=ReportContent(),
    )  # fmt: skip
    report = (out / "report.md").read_text()
    clients = report.split("## Clients", 1)[1].split("\n## ", 1)[0]
    assert (
        "Covariate diagnosis (Primary diagnosis): level 'bipolar' had no client in the analysed "
        "sample and is not estimated." in clients
    )


def test_clients_section_says_nothing_of_absent_levels_when_every_level_has_clients():
    full = CODING["diagnosis"] | {"absent_levels": []}
    meta = {"exclusions": {"n_clients": 40}, "scales": {"covariate_coding": {"diagnosis": full}}}
    assert "no client in the analysed sample" not in "\n".join(_clients_section(meta))
    two = CODING["diagnosis"] | {"absent_levels": ["bipolar", "ocd"]}
    # without an exclusions record the section still names them
    lines = _clients_section({"scales": {"covariate_coding": {"diagnosis": two}}})
    assert lines[0] == "## Clients"
    assert (
        "Covariate diagnosis (Primary diagnosis): levels 'bipolar' and 'ocd' had no client in "
        "the analysed sample and are not estimated." in lines
    )


# --- descriptions list the fitted model's terms only --------------------------------------------

#: The shipped study's design records: three care types, two provider types, several countries.
DEFAULT_RATINGS = {
    "care_types": ["therapist", "coach", "both"],
    "country_share": {"GB": 0.5, "US": 0.5},
    "provider_types": ["therapist", "coach"],
}
ONE_TYPE_NO_COUNTRY = {
    "care_types": ["therapist"],
    "country_share": {"all": 1.0},
    "provider_types": ["therapist"],
}


def _text(lines) -> str:
    return "\n".join(map(str, lines))


def test_ratings_description_lists_country_and_type_terms_only_when_fitted():
    spec = load_spec("alliance_ratings")
    default = _text(
        ratings_describe.equations(spec, DEFAULT_RATINGS)
        + ratings_describe.data_variables(spec, DEFAULT_RATINGS)
    )
    # the shipped study's text is the one without scales, every term listed
    assert default == _text(
        ratings_describe.equations(spec) + ratings_describe.data_variables(spec)
    )
    for symbol in ("u_{k_i}", "u_k", r"\gamma_{c_i}", r"\delta_t"):
        assert symbol in default
    bare = _text(
        ratings_describe.equations(spec, ONE_TYPE_NO_COUNTRY)
        + ratings_describe.data_variables(spec, ONE_TYPE_NO_COUNTRY)
        + ratings_describe.prior_rows(spec, ONE_TYPE_NO_COUNTRY)
    )
    for symbol in ("u_k", "u_{k_i}", "sigma_u", "σ_u", "gamma", "γ", "delta", "δ"):
        assert symbol not in bare, symbol
    # one care type (every client saw both types) still has the provider-type shift
    both = {**DEFAULT_RATINGS, "care_types": ["both"]}
    rows = _text(ratings_describe.prior_rows(spec, both))
    assert "δ_t (provider type)" in rows and "γ" not in rows
    assert r"\delta_t" in _text(ratings_describe.equations(spec, both))


def test_latent_description_lists_the_provider_type_shift_only_with_two_types():
    spec = load_spec("alliance_latent_who5")
    two = {"care_count_by_outcome": {"who5": {"therapist": 5, "coach": 9, "both": 3}}}
    one = {"care_count_by_outcome": {"who5": {"therapist": 14}}}

    def described(scales) -> str:
        return _text(
            latent_describe.equations(spec, scales)
            + latent_describe.data_variables(spec, scales)
            + latent_describe.prior_rows(spec, scales)
        )

    assert r"\delta_t" in described(two) and "δ_t" in described(two) and "γ_c" in described(two)
    assert _text(latent_describe.equations(spec, two)) == _text(latent_describe.equations(spec))
    assert latent_describe.provider_type_count(two) == 2
    assert latent_describe.provider_type_count(one) == 1
    text = described(one)
    for symbol in (r"\delta_t", "δ_t", r"\gamma_{c[i]}", "γ_c"):
        assert symbol not in text, symbol
    # a declared combination of provider types counts its parts
    declared = {"care_count_by_outcome": {"who5": {"therapist_and_psychiatrist": 4}}}
    assert latent_describe.provider_type_count(declared) == 2


def test_latent_description_gives_items_their_own_parameters_only_with_several_items():
    spec = load_spec("alliance_latent_who5")
    items = {"alliance_items": {"subscale": {"g1": "goal", "g2": "goal", "b1": "bond"}}}
    one = latent_describe.equations(spec) + latent_describe.data_variables(spec)
    several = latent_describe.equations(spec, items) + latent_describe.data_variables(spec, items)
    assert r"\alpha_s(" in _text(one) and r"\alpha_q" not in _text(one)
    assert r"\alpha_q(\theta_{ip\,s(q)}" in _text(several) and "$Q_s$" in _text(several)
    assert r"\alpha_s(" not in _text(several)


def test_regression_description_lists_care_type_intercepts_only_with_two_care_types():
    spec = load_spec("who5_change")
    three = {"care_types": ["therapist", "coach", "both"]}
    one = {"care_types": ["coach"]}
    rows3 = _text(regression_describe.prior_rows(spec, three))
    assert "γ_c (care type vs the reference)" in rows3
    assert r"\gamma_{c[i]}" in _text(regression_describe.equations(spec, three))
    assert regression_describe.equations(spec, three) == regression_describe.equations(spec)
    assert "γ_c" not in _text(regression_describe.prior_rows(spec, one))
    assert "gamma" not in _text(regression_describe.equations(spec, one))
    assert "$r$" in _text(regression_describe.data_variables(spec, three))
    assert "$r$" not in _text(regression_describe.data_variables(spec, one))


# --- the change family's estimands labelled in words --------------------------------------------

#: The change family's client covariates: built in (age, male, days in care) and declared.
CHANGE_COVARIATES = ["age", "male", "days_in_care", "income", "employed", "diagnosis[anxiety]"]


def _change_posterior(draws: int = 4) -> xr.Dataset:
    """A change-model posterior whose every draw is one population, with covariate slopes."""
    care = ["therapist", "coach", "both"]
    k = len(CHANGE_COVARIATES)
    return xr.Dataset(
        {
            "mu_true_baseline": _rep([40.0, 42.0, 38.0], "care_type", draws=draws),
            "mu_true_followup": _rep([52.0, 50.0, 53.0], "care_type", draws=draws),
            "mean_provider_care": _rep(np.zeros(3), "care_type", draws=draws),
            "var_provider_care": _rep(np.full(3, 4.0), "care_type", draws=draws),
            "sd_true": _rep([20.0, 21.0], "time", draws=draws),
            "corr_true": _rep(0.5, draws=draws),
            "reliability": _rep(0.81, draws=draws),
            "sigma_error": _rep(9.0, draws=draws),
            "sd_provider": _rep([2.0, 1.5], "provider_type", draws=draws),
            **{
                variable: _rep(np.linspace(-1.0, 1.0, k), "covariate", draws=draws)
                for variable in ("b_covariate_baseline", "b_covariate_followup")
            },
            "b_covariate_change": _rep(np.zeros(k), "covariate", draws=draws),
        },
        coords={
            "care_type": care,
            "time": ["baseline", "followup"],
            "provider_type": ["therapist", "coach"],
            "covariate": CHANGE_COVARIATES,
        },
    )


def _change_estimands(prefix: str, units: str, sign: float, cutoff: float) -> xr.Dataset:
    from alliance_bayes.model.change.estimands import compute_change_estimands

    elevated = {"values": [cutoff - sign * 4.0, cutoff], "counts": [3, 2]}
    scales = {
        "sign": sign,
        "cutoff": cutoff,
        "baseline_sd": 20.0,
        "elevated_baselines": {c: elevated for c in ("therapist", "coach", "both")},
        "covariate_coding": CODING,
    }
    return compute_change_estimands(_change_posterior(), scales, prefix=prefix, units=units)


@pytest.mark.parametrize("declared", [False, True], ids=["without coding", "declared labels"])
@pytest.mark.parametrize(
    ("prefix", "instrument", "sign", "cutoff"),
    [("who5", "WHO-5", 1.0, 28.0), ("gad7", "GAD-7", -1.0, 10.0)],
    ids=["wellbeing_change", "declared gad7"],
)
def test_every_change_estimand_has_a_label_in_words(prefix, instrument, sign, cutoff, declared):
    est = _change_estimands(prefix, f"{instrument} points", sign, cutoff)
    labels = declared_covariate_labels(CODING) if declared else None
    names = list(map(str, est.data_vars))
    # 4 groups × 7 per group, 4 measurement terms, 2 true-score SDs, 2 provider SDs, 3 slopes each
    assert len(names) == 4 * 7 + 4 + 2 + 2 + 3 * len(CHANGE_COVARIATES)
    shown = {n: estimand_label(n, labels) for n in names}
    assert not {n: s for n, s in shown.items() if _mechanical(n, s)}
    # the shape of a label "Change: x" is not enough: the prefix of a slope is in words too
    assert not {n: s for n, s in shown.items() if re.match(r"(baseline|followup|change): ", s)}
    assert all(shown[f"{prefix}_change[{g}]"].startswith(f"{instrument} change") for g in ("all",))
    assert len(set(shown.values())) == len(names)  # no two estimands read alike


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("who5_change[therapist]", "WHO-5 change among the elevated: therapist-only care"),
        ("who5_change_beyond_rtm[all]", "WHO-5 change beyond regression to the mean: all"),
        ("phq9_change[both]", "PHQ-9 change among the elevated: care with both provider types"),
        (
            "gad7_change_beyond_rtm[coach]",
            "GAD-7 change beyond regression to the mean: coach-only care",
        ),
        ("gad7_change_d[all]", "GAD-7 change among the elevated (in baseline SDs): all"),
        ("rtm[all]", "Regression to the mean: all"),
        (
            "reliably_improved[therapist]",
            "Share of the elevated reliably improved: therapist-only care",
        ),
        ("recovered[all]", "Share of the elevated recovered: all"),
        ("reliably_deteriorated[all]", "Share of the elevated reliably deteriorated: all"),
        ("corr_true", "Correlation of true baseline and follow-up"),
        ("sigma_error", "SD of the measurement error"),
        ("sd_true[baseline]", "SD of the true scores: baseline"),
        ("sd_true[followup]", "SD of the true scores: follow-up"),
        ("reliability", "Test–retest reliability"),
        ("reliable_change_criterion", "Reliable-change criterion (Jacobson–Truax)"),
        ("baseline:b_age", "Slope on the true baseline: Age (years)"),
        ("followup:b_male", "Slope on the true follow-up: Male"),
        ("change:b_diagnosis[anxiety]", "Slope on the true change: Diagnosis: anxiety"),
        # an outcome instrument no study in this process declared keeps its name, upper case
        ("wsas_change[all]", "WSAS change among the elevated: all"),
    ],
)
def test_change_labels_name_the_instrument_and_the_group(name, label):
    assert estimand_label(name) == label


def test_a_change_slope_of_a_declared_covariate_reads_by_its_declared_label():
    labels = declared_covariate_labels(CODING)
    assert (
        estimand_label("change:b_diagnosis[anxiety]", labels)
        == "Slope on the true change: Primary diagnosis: anxiety vs depression"
    )
    assert (
        estimand_label("baseline:b_income", labels)
        == "Slope on the true baseline: Income (per unit)"
    )
    # a multi-outcome prefix is still kept as it is
    assert estimand_label("phq9:b_income", labels) == "phq9: Income (per unit)"


def test_the_care_slope_prior_counts_the_fits_care_types():
    spec = load_spec("who5_change")  # care-type pooling: the τ row

    def sentence(scales) -> str:
        rows = regression_describe.prior_rows(spec, scales)
        return next(r.justification for r in rows if r.parameter.startswith("τ (care-type"))

    four = {"care_types": ["therapist", "coach", "psychiatrist", "therapist_and_coach"]}
    assert sentence(four).startswith("Four care types cannot estimate a variance")
    assert sentence({"care_types": ["therapist", "coach"]}).startswith("Two care types cannot")
    # the shipped study's three, and a fit that does not say, read as before
    three = sentence({"care_types": ["therapist", "coach", "both"]})
    assert three.startswith("Three care types cannot") and three == sentence({})
    # the latent family's prior table reuses it, counting each outcome's clients' care types
    latent = load_spec("alliance_latent_who5")
    counts = {"care_count_by_outcome": {"who5": {"therapist": 5, "coach": 9, "both": 3, "x": 2}}}
    text = _text(latent_describe.prior_rows(latent, counts))
    assert "Four care types cannot estimate a variance" in text
    assert "Three care types cannot" in _text(latent_describe.prior_rows(latent, {}))
