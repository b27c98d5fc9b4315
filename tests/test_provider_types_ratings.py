"""Declared provider types in the ratings family (and the latent family's design under them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.data.care import CARE_TYPES, PROVIDER_TYPES
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.latent.measurement import prepare_latent
from alliance_bayes.model.ratings.design import (
    COVARIATES,
    RatingsData,
    prepare_ratings,
    ratings_scales,
)
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.spec import load_spec
from test_ratings import DISCRIMINATION, THRESHOLDS, _latent_of_sessions, _marginal_by_quad

THREE = ("therapist", "coach", "psychiatrist")
#: The free variables of the ratings model on the shipped study, as the family has always built
#: them under the contract's two provider types: (name, shape).
DEFAULT_FREE = [
    ("cutpoint_top", (2,)),
    ("cutpoint_gap", (2, 3)),
    ("log_discrimination_mean", ()),
    ("log_discrimination_contrast", (1,)),
    ("b_covariate_logit", (3,)),
    ("b_care_logit", (2,)),
    ("sd_country_latent", ()),
    ("z_country", (7,)),
    ("client_alliance_logit", (3087,)),
    ("provider_type_alliance_logit", ()),
    ("sd_provider_latent", ()),
    ("v_provider", (145,)),
    ("b_session_logit", ()),
]


@pytest.fixture(scope="module")
def shipped() -> RawStudy:
    return load_study("data/synthetic")


def _with_types(study: RawStudy, **declared) -> RawStudy:
    """The shipped study with every fifth provider a psychiatrist (when declared) or as it is."""
    providers = study.providers.copy()
    if "psychiatrist" in declared.get("provider_types", ()):
        providers.loc[providers.index[::5], "provider_type"] = "psychiatrist"
    return RawStudy.from_frames(providers, study.clients, study.sessions, **declared)


@pytest.fixture(scope="module")
def three(shipped) -> RawStudy:
    return _with_types(shipped, provider_types=list(THREE))


@pytest.fixture(scope="module")
def spec():
    return load_spec("alliance_ratings")


@pytest.fixture(scope="module")
def data3(spec, three) -> RatingsData:
    return prepare_ratings(spec, build_frame(three))


@pytest.fixture(scope="module")
def model3(spec, data3):
    return family_of(spec).build(spec, data3)


def _shapes(model) -> list[tuple[str, tuple[int, ...]]]:
    point = model.initial_point()
    return [(rv.name, point[model.rvs_to_values[rv].name].shape) for rv in model.free_RVs]


def _evaluate(model, point, names):
    # the parameters as functions of the point's (transformed) values, not fresh random draws
    outs = model.replace_rvs_by_values([model[n] for n in names])
    return model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")(point)


def _jittered(model, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


# --- design and graph under three provider types ----------------------------------------------------
def test_three_types_give_the_frames_coords_and_one_shift_per_other_type(data3, model3):
    frame = data3.frame
    assert frame.provider_types == THREE
    assert model3.coords["care_type"] == frame.care_types
    assert model3.coords["care_contrast"] == frame.care_contrasts
    assert model3.coords["provider_type"] == THREE
    # the reference care type is coach-only care, so coach is the reference provider type
    assert frame.care_reference == "coach" and data3.provider_reference == "coach"
    assert model3.coords["provider_type_contrast"] == ("therapist-coach", "psychiatrist-coach")
    shapes = dict(_shapes(model3))
    assert shapes["b_care_logit"] == (len(frame.care_types) - 1,)
    assert shapes["provider_type_alliance_logit"] == (2,)
    assert model3.named_vars_to_dims["provider_type_alliance"] == ("provider_type_contrast",)
    assert np.isfinite(model3.compile_logp()(model3.initial_point()))


def test_three_type_rating_density_is_the_graded_response_by_hand(data3, model3):
    """The observed log density at a random point against theta recomputed in numpy, the care and
    provider-type terms read from the frame's type names rather than the design's indices."""
    point = _jittered(model3)
    logp = float(model3.compile_logp(vars=model3.observed_RVs, sum=True)(point))
    disc, kappa = _evaluate(model3, point, ["discrimination", "threshold"])
    theta = _latent_of_sessions(model3, data3, point)
    direct = 0.0
    for s in range(len(data3.subscales)):
        above = 1.0 / (1.0 + np.exp(-disc[s] * (theta[:, None] - kappa[s][None, :])))
        p = np.column_stack([np.ones(len(theta)), above]) - np.column_stack(
            [above, np.zeros(len(theta))]
        )
        direct += float((data3.counts[s] * np.log(p)).sum())
    assert logp == pytest.approx(direct, rel=1e-9)


def test_provider_mix_is_each_care_types_share_of_rated_sessions(data3):
    frame = data3.frame
    ses = frame.sessions
    rated = ses[[f"wai_{s}" for s in data3.subscales]].notna().any(axis=1)
    care = frame.clients["care_type"].astype(str).to_numpy()[ses["client_index"]]
    kind = frame.providers["provider_type"].astype(str).to_numpy()[ses["provider_index"]]
    table = pd.crosstab(care[rated], kind[rated], normalize="index")
    mix = ratings_scales(data3)["provider_mix"]
    assert set(mix) == set(frame.care_types)
    for c, shares in mix.items():
        assert sum(shares.values()) == pytest.approx(1.0)
        for t in THREE:
            assert shares.get(t, 0.0) == pytest.approx(table.loc[c].get(t, 0.0), abs=1e-12)
    scales = ratings_scales(data3)
    counts = frame.providers["provider_type"].astype(str).value_counts(normalize=True)
    assert scales["provider_share"] == pytest.approx(counts.reindex(list(THREE)).to_dict())


# --- the default study -----------------------------------------------------------------------------
def test_default_study_builds_the_same_graph(spec, shipped):
    data = design_of(spec, shipped)
    model = family_of(spec).build(spec, data)
    assert _shapes(model) == DEFAULT_FREE
    assert model.coords["care_type"] == CARE_TYPES
    assert model.coords["care_contrast"] == ("therapist-coach", "both-coach")
    assert "provider_type_contrast" not in model.coords
    assert model["provider_type_alliance"].ndim == 0
    # the contract's two types declared in the other order take the general route (care types
    # named from the data, reference chosen by size, reference provider type from it) to the
    # same model: the same variables and the same log density, up to rounding
    swapped = design_of(spec, _with_types(shipped, provider_types=["coach", "therapist"]))
    assert swapped.frame.care_types == ("coach", "therapist", "coach_and_therapist")
    assert swapped.provider_contrasts == ("therapist-coach",)
    other = family_of(spec).build(spec, swapped)
    assert _shapes(other) == DEFAULT_FREE
    for point in (model.initial_point(), _jittered(model)):
        a = float(model.compile_logp()(point))
        b = float(other.compile_logp()(point))
        assert np.isfinite(a) and a == pytest.approx(b, rel=1e-10)


# --- estimands -------------------------------------------------------------------------------------
def _posterior(care_contrasts, care, delta, *, sd_provider=0.6, draws=2) -> xr.Dataset:
    """Every draw at the same parameters: the estimands are then closed forms."""

    def rep(x, *dims):
        x = np.asarray(x, float)
        return (("chain", "draw", *dims), np.broadcast_to(x, (1, draws, *x.shape)).copy())

    scalar = not isinstance(delta, dict)
    variables = {
        "discrimination": rep(DISCRIMINATION, "subscale"),
        "threshold": rep(THRESHOLDS, "subscale", "cut"),
        "b_covariate": rep((0.0, 0.0, 0.0), "covariate"),
        "b_care": rep([care[c] for c in care_contrasts], "care_contrast"),
        "provider_type_alliance": rep(delta)
        if scalar
        else rep(list(delta.values()), "provider_type_contrast"),
        "sd_provider_latent": rep(sd_provider),
        "sd_country_latent": rep(0.0),
        "z_country": rep((0.0, 0.0), "country"),
        "b_session": rep(0.0),
    }
    coords = {
        "chain": [0],
        "draw": np.arange(draws),
        "subscale": ["goal", "bond"],
        "covariate": list(COVARIATES),
        "care_contrast": list(care_contrasts),
        "country": ["GB", "US"],
    }
    if not scalar:
        coords["provider_type_contrast"] = list(delta)
    return xr.Dataset(variables, coords=coords)


THREE_CARE = (
    "therapist",
    "coach",
    "psychiatrist",
    "therapist_and_coach",
    "therapist_and_psychiatrist",
    "coach_and_psychiatrist",
)
THREE_SCALES = {
    "care_types": list(THREE_CARE),
    "care_reference": "coach",
    "care_share": dict(zip(THREE_CARE, (0.15, 0.5, 0.15, 0.1, 0.05, 0.05), strict=True)),
    "country_share": {"GB": 0.25, "US": 0.75},
    "provider_types": list(THREE),
    "provider_reference": "coach",
    "provider_share": {"therapist": 0.25, "coach": 0.55, "psychiatrist": 0.2},
    "provider_mix": {
        "therapist": {"therapist": 1.0},
        "coach": {"coach": 1.0},
        "psychiatrist": {"psychiatrist": 1.0},
        "therapist_and_coach": {"therapist": 0.5, "coach": 0.5},
        "therapist_and_psychiatrist": {"therapist": 0.3, "psychiatrist": 0.7},
        "coach_and_psychiatrist": {"coach": 0.6, "psychiatrist": 0.4},
    },
    "male_mean": 0.45,
}


def test_three_type_estimands_are_named_by_care_type_and_mix_provider_types():
    contrasts = [f"{c}-coach" for c in THREE_CARE if c != "coach"]
    care = dict(zip(contrasts, (0.4, -0.3, 0.2, 0.5, -0.1), strict=True))
    delta = {"therapist-coach": 0.6, "psychiatrist-coach": -0.4}
    est = compute_ratings_estimands(_posterior(contrasts, care, delta), THREE_SCALES)
    assert {f"alliance[{c}]" for c in THREE_CARE} <= set(est.data_vars)
    assert {f"alliance[{c}]" for c in contrasts} <= set(est.data_vars)
    assert not any("both" in str(name) for name in est.data_vars)
    # closed form: care effects centred over the clients, provider-type shifts over the providers
    shares = THREE_SCALES["care_share"]
    g = {c: care.get(f"{c}-coach", 0.0) for c in THREE_CARE}
    centre = sum(shares[c] * g[c] for c in THREE_CARE)
    pi = THREE_SCALES["provider_share"]
    d = {"therapist": 0.6, "psychiatrist": -0.4}
    shift = {t: sum(d[o] * ((t == o) - pi[o]) for o in d) for t in THREE}
    omega = np.hypot(1.0, 0.6)
    level = {}
    for c in THREE_CARE:
        mix = THREE_SCALES["provider_mix"][c]
        level[c] = sum(
            q * _marginal_by_quad(g[c] - centre + shift[t], omega) for t, q in mix.items()
        )
        assert float(est[f"alliance[{c}]"].mean()) == pytest.approx(level[c], abs=1e-6), c
    for c in contrasts:
        first = c.removesuffix("-coach")
        expected = level[first] - level["coach"]
        assert float(est[f"alliance[{c}]"].mean()) == pytest.approx(expected, abs=1e-6), c


def test_scales_of_the_contracts_types_old_and_new_give_the_same_estimands():
    """Scales written before provider types could be declared (``therapist_share``,
    ``both_therapist_share``) and the general ones describe the same mix."""
    contrasts = ["therapist-coach", "both-coach"]
    post = _posterior(contrasts, {"therapist-coach": 0.8, "both-coach": -0.6}, 0.5)
    base = {
        "care_share": {"therapist": 0.2, "coach": 0.6, "both": 0.2},
        "country_share": {"GB": 0.25, "US": 0.75},
        "male_mean": 0.45,
    }
    old = compute_ratings_estimands(
        post, {**base, "therapist_share": 0.3, "both_therapist_share": 0.4}
    )
    new = compute_ratings_estimands(
        post,
        {
            **base,
            "care_types": list(CARE_TYPES),
            "care_reference": "coach",
            "provider_types": list(PROVIDER_TYPES),
            "provider_reference": "coach",
            "provider_share": {"therapist": 0.3, "coach": 0.7},
            "provider_mix": {
                "therapist": {"therapist": 1.0},
                "coach": {"coach": 1.0},
                "both": {"therapist": 0.4, "coach": 0.6},
            },
        },
    )
    assert set(old.data_vars) == set(new.data_vars)
    assert {"alliance[therapist-coach]", "alliance[both-coach]"} <= set(new.data_vars)
    for name in new.data_vars:
        assert np.allclose(old[name], new[name], rtol=1e-12, atol=1e-12), name
    # and the mix matters: another share of therapist sessions moves the "both" level
    moved = compute_ratings_estimands(
        post, {**base, "therapist_share": 0.3, "both_therapist_share": 0.9}
    )
    assert not np.allclose(moved["alliance[both]"], old["alliance[both]"])


# --- the latent family takes them too (tests/test_latent_provider_types.py builds its model) ------
def test_latent_family_takes_declared_provider_types(three):
    latent = load_spec("alliance_latent")
    data = design_of(latent, three)
    frame = data.frame
    assert frame.provider_types == THREE and data.provider_types == THREE
    assert data.provider_contrasts == ("therapist-coach", "psychiatrist-coach")
    coords = data.coords()
    assert coords["care_type"] == list(frame.care_types)
    assert coords["provider_type_contrast"] == ["therapist-coach", "psychiatrist-coach"]
    care = frame.clients["care_type"].astype(str).to_numpy()
    assert [frame.care_types[k] for k in data.care_index] == care.tolist()


def test_latent_family_takes_another_reference_and_keeps_the_contracts_shift(shipped):
    latent = load_spec("alliance_latent")
    data = prepare_latent(latent, build_frame(_with_types(shipped, care_reference="therapist")))
    assert data.provider_types == PROVIDER_TYPES and data.frame.care_reference == "therapist"
    assert data.coords()["care_contrast"] == ["coach-therapist", "both-therapist"]
    assert data.provider_contrasts == ("coach-therapist",) and not data.provider_shift_is_scalar
    default = prepare_latent(latent, build_frame(shipped))
    assert default.provider_shift_is_scalar and "provider_type_contrast" not in default.coords()
