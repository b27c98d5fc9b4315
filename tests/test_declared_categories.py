"""The graded-response families on a declared rating scale: one integer item per subscale, K = H - L + 1.

A 1–7 study is built from the shipped one (its 1–5 ratings spread onto 1–7 by a fixed rule that
uses every category; a 0–6 copy shifts it by one) and fitted by neither family here: the checks
are the arrays, the priors, the log density against an independent computation, the estimands on
a fake posterior against closed forms, and the refusals of what the families still cannot take.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr
from scipy import integrate, special, stats

from alliance_bayes.data.alliance import SHIPPED, AllianceInstrument, parse_alliance
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy
from alliance_bayes.errors import DesignError
from alliance_bayes.model.latent.describe import prior_rows as latent_prior_rows
from alliance_bayes.model.latent.estimands import compute_joint_estimands
from alliance_bayes.model.latent.instrument_check import (
    CONTRACT_SCALE,
    RatingScale,
    rating_scale,
    require_integer_ratings,
)
from alliance_bayes.model.latent.measurement import (
    build_latent_model,
    latent_scales,
    latent_scores,
    prepare_latent,
)
from alliance_bayes.model.ratings.describe import prior_rows as ratings_prior_rows
from alliance_bayes.model.ratings.design import COVARIATES, prepare_ratings, ratings_scales
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.model.ratings.graph import PRIORS, build_ratings_model
from alliance_bayes.model.regression.design import CARE_CONTRASTS
from alliance_bayes.spec import load_spec
from test_ratings import _evaluate, _latent_of_sessions

SHIPPED_STUDY = Path(__file__).resolve().parents[1] / "data" / "synthetic"
N_CLIENTS = 900  # the shipped study's first clients: every category, a quick build


def _seven(rating: pd.Series, session: pd.Series) -> pd.Series:
    """1–5 onto 1–7: 1 → 1, 3 → 4, 5 → 7; a 2 is a 2 or 3 and a 4 a 5 or 6 by session parity."""
    r = pd.to_numeric(rating, errors="coerce")
    odd = pd.to_numeric(session) % 2
    return (1 + 1.5 * (r - 1) + np.where(r.isin([2, 4]), odd - 0.5, 0.0)).astype("Int64")


def _declared(label: str, low: int, high: int) -> AllianceInstrument:
    raw = {
        "label": label,
        "range": [low, high],
        "subscales": {"goal": ["goal_item"], "bond": ["bond_item"]},
    }
    instrument, problems = parse_alliance(raw)
    assert not problems, problems
    return instrument


def _study(low: int) -> RawStudy:
    """The shipped study's first clients with goal and bond rated on ``low`` … ``low + 6``."""
    read = {
        name: pd.read_csv(SHIPPED_STUDY / f"{name}.csv", dtype=str, keep_default_na=False)
        for name in ("providers", "clients", "sessions")
    }
    clients = read["clients"].iloc[:N_CLIENTS]
    sessions = read["sessions"][read["sessions"]["client_id"].isin(clients["client_id"])].copy()
    providers = read["providers"][read["providers"]["provider_id"].isin(sessions["provider_id"])]
    for s in ("goal", "bond"):
        seven = _seven(sessions.pop(f"wai_{s}").replace("", np.nan), sessions["session_index"])
        sessions[f"{s}_item"] = (seven + (low - 1)).astype(str).replace("<NA>", "")
    return RawStudy.from_frames(
        providers, clients, sessions, alliance=_declared("Session alliance", low, low + 6)
    )


@pytest.fixture(scope="module")
def frame7():
    return build_frame(_study(1))


@pytest.fixture(scope="module")
def frame0():
    return build_frame(_study(0))


@pytest.fixture(autouse=True)
def quiet_blas():
    # compiling asks for a BLAS library once per process; where none is installed PyTensor says
    # so, which is about this machine, not about the model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        yield


def _random_point(model, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


# --------------------------------------------------------------------------------------------------
# The declared scale
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("low", "high", "k", "first", "last", "gap"),
    [(1, 5, 5, "1|2", "4|5", 1.0), (1, 7, 7, "1|2", "6|7", 0.6), (0, 6, 7, "0|1", "5|6", 0.6),
     (1, 4, 4, "1|2", "3|4", 1.5), (0, 10, 11, "0|1", "9|10", 1 / 3)],
)  # fmt: skip
def test_the_declared_range_sets_the_categories(low, high, k, first, last, gap):
    scale = RatingScale(low, high, f"{low}–{high}")
    assert scale.n_categories == k == len(scale.categories)
    assert len(scale.thresholds) == k - 1
    assert (scale.thresholds[0], scale.thresholds[-1]) == (first, last)
    assert scale.gap_prior_factor == pytest.approx(gap)
    # the prior mean of the span from the lowest to the highest cut-point is five categories'
    half_normal_mean = 3.0 * scale.gap_prior_factor * np.sqrt(2 / np.pi)
    assert (k - 2) * half_normal_mean == pytest.approx(3 * 3.0 * np.sqrt(2 / np.pi))
    ratings = np.arange(low, high + 1, dtype=float)
    np.testing.assert_array_equal(scale.category_index(ratings), np.arange(k))
    with pytest.raises(DesignError, match="whole numbers"):
        scale.category_index(np.array([high + 1.0]))
    with pytest.raises(DesignError, match="whole numbers"):
        scale.category_index(np.array([low + 0.5]))


def test_single_integer_items_on_any_whole_range_qualify_and_no_other(frame7):
    single = _declared("Session alliance", 1, 7)
    assert single.single_integer_ratings and not single.single_ratings_1_to_5
    assert _declared("Other", 0, 6).single_integer_ratings
    assert _declared("Five", 1, 5).single_ratings_1_to_5
    assert not _declared("Two", 1, 2).single_integer_ratings  # two categories: no middle one
    assert not any(i.single_integer_ratings for i in SHIPPED.values())
    assert not dataclasses.replace(single, reverse=("goal_item",)).single_integer_ratings
    assert rating_scale(frame7) == RatingScale(1, 7, "Session alliance 1–7")
    assert rating_scale(dataclasses.replace(frame7, alliance=None)) == CONTRACT_SCALE


BOTH = ("ratings", "latent")


@pytest.mark.parametrize(
    ("instrument", "why", "refused_by"),
    [
        (SHIPPED["srs"], "SRS 0–10 (rated in steps of 0.1, not whole numbers;", BOTH),
        (
            dataclasses.replace(SHIPPED["wai_s"], scored="subscales"),
            "(its sessions hold pre-scored subscale means, not item ratings;",
            BOTH,
        ),
        (_declared("Two", 1, 2), "Two 1–2 (only 2 categories (1–2);", BOTH),
    ],
)
def test_the_families_still_refuse_what_they_cannot_model_and_say_why(
    frame7, instrument, why, refused_by
):
    """Both graded-response families take several items per subscale and reverse-scored ones
    (tests/test_ratings_items.py, tests/test_latent_items.py), and both refuse pre-scored means,
    a finer step and fewer than three categories."""
    frame = dataclasses.replace(frame7, alliance=instrument)
    families = {
        "ratings": (prepare_ratings, load_spec("alliance_ratings")),
        "latent": (prepare_latent, load_spec("alliance_latent_who5")),
    }
    for family in refused_by:
        prepare, spec = families[family]
        with pytest.raises(DesignError) as err:
            prepare(spec, frame)
        text = str(err.value)
        assert f"({family} family)" in text and "who5_change" in text and why in text
        if family == "latent":
            assert "one integer alliance rating per subscale and session" in text
            assert "or 1–7, 0–6, 1–4" in text
    require_integer_ratings(load_spec("alliance_ratings"), frame7)  # passes


# --------------------------------------------------------------------------------------------------
# The ratings family
# --------------------------------------------------------------------------------------------------
def test_the_ratings_design_has_one_category_per_value_of_the_declared_range(frame7):
    data = prepare_ratings(load_spec("alliance_ratings"), frame7)
    assert data.counts.shape[::2] == (2, 7)
    assert (data.counts.sum(axis=-1) <= 1).all()
    # the totals are the sessions' own rating counts, rating r in category r - 1
    ses = data.frame.sessions
    for j, s in enumerate(("goal", "bond")):
        values = ses[f"wai_{s}"].dropna().astype(float).astype(int)
        expected = np.bincount(values - 1, minlength=7)
        np.testing.assert_array_equal(data.category_totals[j], expected)
        assert (expected > 0).all()  # every category is used
    coords = data.coords()
    assert coords["category"] == [str(k) for k in range(1, 8)]
    assert coords["cut"] == [f"{k}|{k + 1}" for k in range(1, 7)]
    assert coords["gap"] == coords["cut"][1:]
    assert ratings_scales(data)["alliance_instrument"]["scale"] == "Session alliance 1–7"


def test_the_ratings_model_builds_with_six_thresholds_and_scaled_gap_priors(frame7):
    data = prepare_ratings(load_spec("alliance_ratings"), frame7)
    model = build_ratings_model(load_spec("alliance_ratings"), data)
    point = model.initial_point()
    assert point["cutpoint_gap_log__"].shape == (2, 5)
    assert point["cutpoint_top"].shape == (2,)
    assert np.isfinite(model.compile_logp()(point))
    threshold = _evaluate(model, point, ["threshold"])[0]
    assert threshold.shape == (2, 6) and (np.diff(threshold, axis=1) > 0).all()
    # the gaps' Half-Normal scale: 3 × 3/5 on seven categories
    got = float(pm.logp(model["cutpoint_gap"], np.ones((2, 5))).eval().sum())
    assert got == pytest.approx(10 * stats.halfnorm.logpdf(1.0, scale=PRIORS["threshold_sd"] * 0.6))
    rows = ratings_prior_rows(load_spec("alliance_ratings"), ratings_scales(data))
    assert rows[0].parameter.startswith("c_{s,6}") and "Half-Normal(1.8)" in rows[0].distribution


def test_the_ratings_log_density_is_the_ordered_logistic_over_seven_categories(frame7, frame0):
    spec = load_spec("alliance_ratings")
    data = prepare_ratings(spec, frame7)
    model = build_ratings_model(spec, data)
    point = _random_point(model, 4)
    logp = float(model.compile_logp(vars=model.observed_RVs, sum=True)(point))
    disc, kappa = _evaluate(model, point, ["discrimination", "threshold"])
    theta = _latent_of_sessions(model, data, point)
    ses = data.frame.sessions
    rated = ses[["wai_goal", "wai_bond"]].notna().any(axis=1).to_numpy()
    direct = 0.0
    for s, column in enumerate(("wai_goal", "wai_bond")):
        r = ses[column].to_numpy(dtype=float, na_value=np.nan)[rated]  # the model's sessions
        ok = ~np.isnan(r)
        # P(r >= k + 1) = logistic(alpha (theta - kappa_k)), k = 1..6; P(r = k) the differences
        above = special.expit(disc[s] * (theta[ok, None] - kappa[s][None, :]))
        p = np.column_stack([np.ones(ok.sum()), above]) - np.column_stack(
            [above, np.zeros(ok.sum())]
        )
        direct += float(np.log(p[np.arange(ok.sum()), r[ok].astype(int) - 1]).sum())
    assert logp == pytest.approx(direct, rel=1e-9)
    # the same ratings on 0–6 are the same categories: the same density at the same point
    shifted = build_ratings_model(spec, prepare_ratings(spec, frame0))
    same = float(shifted.compile_logp(vars=shifted.observed_RVs, sum=True)(point))
    assert same == pytest.approx(logp, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# The ratings family's estimands on the declared scale
# --------------------------------------------------------------------------------------------------
KAPPA = np.array([[-2.8, -2.2, -1.6, -1.0, -0.3, 0.4], [-3.0, -2.4, -1.7, -1.1, -0.5, 0.2]])
ALPHA = np.array([1.7, 2.3])
GAMMA = {"therapist-coach": 0.5, "both-coach": -0.4}


def _fake_posterior(cuts: list[str] | None) -> xr.Dataset:
    """Two draws at the same parameters: no provider or country spread, so that each level is a
    one-dimensional integral."""

    def rep(x, *dims):
        x = np.asarray(x, float)
        return (("chain", "draw", *dims), np.broadcast_to(x, (1, 2, *x.shape)).copy())

    coords = {
        "chain": [0],
        "draw": [0, 1],
        "subscale": ["goal", "bond"],
        "covariate": list(COVARIATES),
        "care_contrast": list(CARE_CONTRASTS),
        "country": ["GB", "US"],
    }
    if cuts is not None:
        coords["cut"] = cuts
    return xr.Dataset(
        {
            "discrimination": rep(ALPHA, "subscale"),
            "threshold": rep(KAPPA, "subscale", "cut"),
            "b_covariate": rep([0.0, 0.0, 0.0], "covariate"),
            "b_care": rep([GAMMA[c] for c in CARE_CONTRASTS], "care_contrast"),
            "provider_type_alliance": rep(0.0),
            "sd_provider_latent": rep(0.0),
            "sd_country_latent": rep(0.0),
            "z_country": rep([0.0, 0.0], "country"),
            "b_session": rep(0.0),
        },
        coords=coords,
    )


def _level_by_quad(mu: float, low: float, *, top: bool = False) -> float:
    """Goal and bond averaged: E_Z of the category-weighted rating (or P(top)) at theta = mu + Z."""

    def f(z, s):
        above = special.expit(ALPHA[s] * (mu + z - KAPPA[s]))  # P(r > L + k - 1), k = 1..6
        p = np.append(1.0, above) - np.append(above, 0.0)
        value = p[-1] if top else float(np.dot(p, low + np.arange(7)))
        return value * stats.norm.pdf(z)

    return float(np.mean([integrate.quad(f, -12, 12, args=(s,))[0] for s in (0, 1)]))


def test_ratings_estimands_are_expected_ratings_on_the_declared_scale(frame7, frame0):
    scales7 = ratings_scales(prepare_ratings(load_spec("alliance_ratings"), frame7))
    scales0 = ratings_scales(prepare_ratings(load_spec("alliance_ratings"), frame0))
    post = _fake_posterior([f"{k}|{k + 1}" for k in range(1, 7)])
    est = compute_ratings_estimands(post, scales7)
    share = scales7["care_share"]
    g = {"therapist": GAMMA["therapist-coach"], "coach": 0.0, "both": GAMMA["both-coach"]}
    centre = sum(share[c] * g[c] for c in g)
    for care in ("therapist", "coach", "both"):
        value = est[f"alliance[{care}]"].values
        assert ((value > 1) & (value < 7)).all()
        assert value[0, 0] == pytest.approx(_level_by_quad(g[care] - centre, 1.0), abs=1e-6)
        assert est[f"alliance[{care}]"].attrs["units"] == (
            "rating points (Session alliance 1–7 scale)"
        )
    assert est["share_at_ceiling"].attrs["units"] == "share of session ratings at 7"
    mix = sum(share[c] * _level_by_quad(g[c] - centre, 1.0, top=True) for c in g)
    assert est["share_at_ceiling"].values[0, 0] == pytest.approx(mix, abs=1e-6)
    # 0–6: the same latent model, every level one point lower, the ceiling share unchanged
    zero = compute_ratings_estimands(_fake_posterior([f"{k}|{k + 1}" for k in range(6)]), scales0)
    for care in ("therapist", "coach", "both"):
        np.testing.assert_allclose(
            zero[f"alliance[{care}]"].values, est[f"alliance[{care}]"].values - 1.0, atol=1e-12
        )
    np.testing.assert_allclose(zero["share_at_ceiling"], est["share_at_ceiling"], atol=1e-12)
    assert zero["share_at_ceiling"].attrs["units"] == "share of session ratings at 6"
    # without scales the labelled cuts give the scale; unlabelled six cuts count up from 1
    bare = compute_ratings_estimands(_fake_posterior([f"{k}|{k + 1}" for k in range(6)]))
    assert bare["alliance[coach]"].attrs["units"] == "rating points (0–6 scale)"
    undeclared = {k: v for k, v in scales7.items() if k != "alliance_instrument"}
    unlabelled = compute_ratings_estimands(_fake_posterior(None), undeclared)
    np.testing.assert_allclose(unlabelled["alliance[coach]"], est["alliance[coach]"], atol=1e-12)
    assert unlabelled["alliance[coach]"].attrs["units"] == "rating points (1–7 scale)"
    # a recorded scale whose categories are not the posterior's is refused
    five = scales7 | {"alliance_instrument": scales7["alliance_instrument"] | {"range": [1, 5]}}
    with pytest.raises(ValueError, match="categories"):
        compute_ratings_estimands(post, five)


# --------------------------------------------------------------------------------------------------
# The latent family
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def latent7(frame7):
    spec = load_spec("alliance_latent_who5")
    data = prepare_latent(spec, frame7)
    return spec, data, build_latent_model(spec, data, store_scores=True)


def test_the_latent_model_builds_on_seven_categories_with_scaled_slope_priors(latent7):
    spec, data, model = latent7
    assert data.counts.shape[::2] == (2, 7)
    assert model.coords["cut"] == tuple(f"{k}|{k + 1}" for k in range(1, 7))
    point = model.initial_point()
    assert point["cutpoint_gap_log__"].shape == (2, 5)
    assert np.isfinite(model.compile_logp()(point))
    gap_sd = spec.measurement.threshold_sd * 0.6
    got = float(pm.logp(model["cutpoint_gap"], np.ones((2, 5))).eval().sum())
    assert got == pytest.approx(10 * stats.halfnorm.logpdf(1.0, scale=gap_sd))
    # the outcome slopes are per point of 1–7: their prior scale is the spec's times 4/6
    mu_b = float(pm.logp(model["mu_b"], np.zeros((1, 2, 2))).eval().sum())
    assert mu_b == pytest.approx(4 * stats.norm.logpdf(0.0, 0.0, spec.priors.mu_b_sd * 4 / 6))
    scales = latent_scales(data)
    assert scales["alliance_instrument"]["prior_factor"] == pytest.approx(4 / 6)
    rows = {r.parameter: r for r in latent_prior_rows(spec, scales)}
    assert rows["μ^b (pooled subscale slopes)"].distribution == (
        f"Normal(0, {spec.priors.mu_b_sd * 4 / 6:g})"
    )
    assert f"Half-Normal({gap_sd:g})" in rows["c_{s,6} (top cut-point), gaps below it"].distribution


def _latent_theta(model, data, point) -> tuple[np.ndarray, np.ndarray]:
    """The provider parts a (provider, subscale) and client parts e (client, subscale) recomputed
    in numpy from the point, as the graph defines them (centred standard normals)."""
    names = [
        "z_client_alliance", "z_provider_alliance", "sd_provider_alliance",
        "chol_client_alliance", "chol_provider_alliance", "provider_type_alliance",
    ]  # fmt: skip
    z_c, z_p, sd_a, chol_e, chol_a, delta = _evaluate(model, point, names)

    def centred(z):
        return (z - z.mean(axis=0)) * np.sqrt(len(z) / (len(z) - 1.0))

    therapist = data.provider_type_index == 0  # PROVIDER_TYPES = (therapist, coach)
    z_p = z_p.copy()
    for group in (therapist, ~therapist):
        z_p[group] = centred(z_p[group])
    a = (z_p @ chol_a.T) * sd_a + (therapist - therapist.mean())[:, None] * delta
    return a, centred(z_c) @ chol_e.T


def test_the_latent_density_and_true_scores_are_on_seven_categories(latent7):
    _, data, model = latent7
    point = _random_point(model, 6)
    logp = float(model.compile_logp(vars=[model["ratings"]], sum=True)(point))
    kappa, disc, tau, provider = _evaluate(
        model, point, ["threshold", "discrimination", "alliance_true", "alliance_provider"]
    )
    a, e = _latent_theta(model, data, point)
    # independent: every session rating's ordered-logistic probability over the six cut-points
    ses = data.frame.sessions
    ci, pi = ses["client_index"].to_numpy(), ses["provider_index"].to_numpy()
    direct = 0.0
    for s, column in enumerate(("wai_goal", "wai_bond")):
        r = ses[column].to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(r)
        theta = a[pi[ok], s] + e[ci[ok], s]
        above = special.expit(disc[s] * (theta[:, None] - kappa[s][None, :]))
        p = np.column_stack([np.ones(ok.sum()), above]) - np.column_stack(
            [above, np.zeros(ok.sum())]
        )
        direct += float(np.log(p[np.arange(ok.sum()), r[ok].astype(int) - 1]).sum())
    assert logp == pytest.approx(direct, rel=1e-9)
    # the true scores: membership-weighted expected ratings 1 + sum of six logistic curves
    mc, mp, w = (model[k].get_value() for k in ("mem_client", "mem_provider", "mem_weight"))
    theta = a[mp] + e[mc]  # (membership, subscale)
    expected = 1 + special.expit(disc[:, None] * (theta[..., None] - kappa)).sum(axis=-1)
    want = np.zeros_like(tau)
    np.add.at(want, mc, w[:, None] * expected)
    np.testing.assert_allclose(tau, want, rtol=1e-9)
    assert ((tau > 1) & (tau < 7)).all() and ((provider > 1) & (provider < 7)).all()
    # a provider's level integrates the client part out: adaptive quadrature for a few providers
    for q in range(0, len(a), max(1, len(a) // 4)):
        for s in range(2):

            def f(x, q=q, s=s):
                value = 1 + special.expit(disc[s] * (a[q, s] + x - kappa[s])).sum()
                return value * stats.norm.pdf(x)

            assert provider[q, s] == pytest.approx(integrate.quad(f, -12, 12)[0], abs=1e-4)
    # the numpy recomputation of the bundle's true scores agrees with the graph's on 1–7
    prior = pm.sample_prior_predictive(draws=3, model=model, random_seed=2)["prior"].to_dataset()
    consts = xr.Dataset(
        {k: (("membership",), model[k].get_value()) for k in ("mem_client", "mem_provider")}
        | {"mem_weight": (("membership",), w)}
        | {"provider_therapist": (("provider",), model["provider_therapist"].get_value())}
    )
    scores = latent_scores(prior, consts)
    np.testing.assert_allclose(scores.values, prior["alliance_true"].values, rtol=1e-9)


def test_the_latent_true_scores_follow_the_lowest_rating(latent7, frame0):
    """The same ratings on 0–6: the same density, every true score and provider level one lower
    (in the graph and in the numpy recomputation of the bundle's scores)."""
    spec, _, model7 = latent7
    model0 = build_latent_model(spec, prepare_latent(spec, frame0), store_scores=True)
    assert model0.coords["cut"][0] == "0|1"
    point = _random_point(model7, 8)
    names = ["alliance_true", "alliance_provider"]
    tau7, provider7 = _evaluate(model7, point, names)
    tau0, provider0 = _evaluate(model0, point, names)
    np.testing.assert_allclose(tau0, tau7 - 1.0, atol=1e-9)
    np.testing.assert_allclose(provider0, provider7 - 1.0, atol=1e-9)
    assert model0.compile_logp()(point) == pytest.approx(model7.compile_logp()(point), rel=1e-12)
    prior = pm.sample_prior_predictive(draws=2, model=model0, random_seed=4)["prior"].to_dataset()
    consts = xr.Dataset(
        {k: (("membership",), model0[k].get_value()) for k in ("mem_client", "mem_provider")}
        | {"mem_weight": (("membership",), model0["mem_weight"].get_value())}
        | {"provider_therapist": (("provider",), model0["provider_therapist"].get_value())}
    )
    scores = latent_scores(prior, consts)
    np.testing.assert_allclose(scores.values, prior["alliance_true"].values, rtol=1e-9)
    assert ((scores > 0) & (scores < 6)).all()


def test_latent_slope_units_name_the_declared_scale(latent7):
    _, _, model = latent7
    post = pm.sample_prior_predictive(draws=2, model=model, random_seed=3)["prior"].to_dataset()
    est = compute_joint_estimands(post, outcome_units={"who5": "WHO-5 points"}, primary="who5")
    assert est["b_goal_within[coach]"].attrs["units"] == "WHO-5 points per 1 point of the 1–7 scale"
    assert "threshold[goal,6|7]" in est
    named = compute_joint_estimands(
        post,
        outcome_units={"who5": "WHO-5 points"},
        primary="who5",
        alliance_scale="Session alliance 1–7",
    )
    assert named["b_bond_between[therapist]"].attrs["units"] == (
        "WHO-5 points per 1 point of the Session alliance 1–7 scale"
    )
    assert (
        named["mu_b_goal_within"]
        .attrs["units"]
        .startswith("WHO-5 points per 1 point of the Session alliance 1–7 scale")
    )


def test_run_json_states_the_ratings_on_the_declared_scale(frame7):
    """The ratings are the ratings family's outcome: run.json's label, range and units are the
    declared scale's, not the contract's 1–5."""
    from alliance_bayes.fitting import _run_metadata, settings_for

    spec = load_spec("alliance_ratings")
    data = prepare_ratings(spec, frame7)
    meta = _run_metadata(spec, data, settings_for(spec), {})
    assert meta["outcome_range"] == [1.0, 7.0]
    assert meta["outcome_label"] == "Session alliance rating (Session alliance 1–7)"
    assert meta["effect_units"] == "rating points (Session alliance 1–7 scale)"
