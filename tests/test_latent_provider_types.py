"""Declared provider types in the latent family: the frame's care and provider types throughout.

A three-type study is the shipped study's first clients with every fifth provider a psychiatrist.
The measurement's provider-type shifts and the outcome part's care terms are checked against
computations from the frame's type *names*, not the design's indices; the contract's two types
declared in the other order must give the default model back.
"""

from __future__ import annotations

import warnings

import numpy as np
import pymc as pm
import pytensor
import pytest
import xarray as xr
from scipy import special

from alliance_bayes.data.care import CARE_TYPES, PROVIDER_TYPES
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.inference import log_density_function
from alliance_bayes.model.families import family_of
from alliance_bayes.model.latent.estimands import compute_joint_estimands
from alliance_bayes.model.latent.figures import plot_latent_vs_averaged
from alliance_bayes.model.latent.heldout import _constant, outcome_location
from alliance_bayes.model.latent.measurement import (
    LatentData,
    build_latent_model,
    latent_scales,
    latent_scores,
)
from alliance_bayes.spec import load_spec

THREE = ("therapist", "coach", "psychiatrist")
N_CLIENTS = 800  # the shipped study's first clients: every care type, a quick model


@pytest.fixture(autouse=True)
def numba_mode():
    """Compile with numba, as the package does (see tests/test_latent.py)."""
    with pytensor.config.change_flags(mode="NUMBA"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        yield


def _study(**declared) -> RawStudy:
    """The shipped study's first clients, every fifth provider a psychiatrist when declared."""
    st = load_study("data/synthetic")
    clients = st.clients.iloc[:N_CLIENTS]
    sessions = st.sessions[st.sessions["client_id"].isin(clients["client_id"])]
    providers = st.providers[st.providers["provider_id"].isin(sessions["provider_id"])].copy()
    if "psychiatrist" in declared.get("provider_types", ()):
        providers.loc[providers.index[::5], "provider_type"] = "psychiatrist"
    return RawStudy.from_frames(providers, clients, sessions, **declared)


@pytest.fixture(scope="module")
def spec():
    return load_spec("alliance_latent_who5")


@pytest.fixture(scope="module")
def data3(spec) -> LatentData:
    with pytensor.config.change_flags(mode="NUMBA"):
        return design_of(spec, _study(provider_types=list(THREE)))


@pytest.fixture(scope="module")
def model3(spec, data3):
    with pytensor.config.change_flags(mode="NUMBA"):
        return family_of(spec).build(spec, data3)


def _shapes(model) -> list[tuple[str, tuple[int, ...]]]:
    point = model.initial_point()
    return [(rv.name, point[model.rvs_to_values[rv].name].shape) for rv in model.free_RVs]


def _jittered(model, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


def _evaluate(model, point, names):
    outs = model.replace_rvs_by_values([model[n] for n in names])
    return model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")(point)


# --- the graph under three provider types -----------------------------------------------------------
def test_three_types_build_with_the_frames_coords(data3, model3):
    frame = data3.frame
    assert frame.provider_types == THREE and frame.care_reference == "coach"
    assert len(frame.care_types) > 3  # combinations with psychiatrists among them
    assert model3.coords["care_type"] == frame.care_types
    assert model3.coords["care_contrast"] == frame.care_contrasts
    assert model3.coords["provider_type"] == THREE
    # coach-only care is the reference care type, so coach is the reference provider type
    assert model3.coords["provider_type_contrast"] == ("therapist-coach", "psychiatrist-coach")
    n_sub = len(data3.subscales)
    shapes = dict(_shapes(model3))
    assert shapes["b_care"] == (1, len(frame.care_types) - 1)
    assert shapes["sd_provider"] == (1, 3)
    assert shapes["provider_type_alliance"] == (2, n_sub)
    assert shapes["z_b"] == (1, len(frame.care_types), n_sub, 2)
    assert "provider_therapist" not in model3.named_vars
    # the indicators from the providers' type names, centred by each type's share
    kind = frame.providers["provider_type"].astype(str).to_numpy()
    design = model3["provider_type_design"].get_value()
    for k, t in enumerate(("therapist", "psychiatrist")):
        is_t = (kind == t).astype(float)
        np.testing.assert_allclose(design[:, k], is_t - is_t.mean(), atol=1e-15)
    labels = model3.coords["provider_contrast"]
    assert {lab.split(":")[0] for lab in labels} == set(THREE)
    logp = model3.compile_logp()
    assert np.isfinite(logp(model3.initial_point())) and np.isfinite(logp(_jittered(model3)))


def test_three_type_rating_density_is_the_graded_response_by_hand(data3, model3):
    """The ratings' log density at a random point against the latent scores recomputed in numpy:
    provider parts centred within each named type, one shift per non-reference type."""
    point = _jittered(model3)
    got = float(model3.compile_logp(vars=[model3["ratings"]], sum=True)(point))
    names = [
        "threshold", "discrimination", "z_client_alliance", "z_provider_alliance",
        "sd_provider_alliance", "chol_client_alliance", "chol_provider_alliance",
        "provider_type_alliance",
    ]  # fmt: skip
    vals = dict(zip(names, _evaluate(model3, point, names), strict=True))

    def centred(z):
        return (z - z.mean(axis=0)) * np.sqrt(len(z) / (len(z) - 1.0))

    kind = data3.frame.providers["provider_type"].astype(str).to_numpy()
    z_p = vals["z_provider_alliance"].copy()
    for t in THREE:
        z_p[kind == t] = centred(z_p[kind == t])
    e = centred(vals["z_client_alliance"]) @ vals["chol_client_alliance"].T
    a = (z_p @ vals["chol_provider_alliance"].T) * vals["sd_provider_alliance"]
    for contrast, delta in zip(
        model3.coords["provider_type_contrast"], vals["provider_type_alliance"], strict=True
    ):
        first, ref = contrast.split("-")
        assert ref == "coach"
        is_t = (kind == first).astype(float)
        a = a + (is_t - is_t.mean())[:, None] * delta
    ses = data3.frame.sessions
    ci, pi = ses["client_index"].to_numpy(), ses["provider_index"].to_numpy()
    want = 0.0
    for j, s in enumerate(data3.subscales):
        r = ses[f"wai_{s}"].to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(r)
        theta = a[pi[ok], j] + e[ci[ok], j]
        d, kappa = vals["discrimination"][j], vals["threshold"][j]
        above = special.expit(d * (theta[:, None] - kappa[None, :]))  # P(r > k)
        upper = np.column_stack([np.ones(len(theta)), above])
        lower = np.column_stack([above, np.zeros(len(theta))])
        p = (upper - lower)[np.arange(len(theta)), r[ok].astype(int) - 1]
        want += float(np.log(p).sum())
    assert got == pytest.approx(want, rel=1e-9)


def test_three_type_scores_outcome_mean_and_figure_from_the_draws(spec, data3, tmp_path):
    """The numpy recomputations the bundle, the held-out scorer and the figures use: the true
    scores from the stored constant data (the held-out scorer's copy of it), and the outcome
    mean rebuilt from the draws against the model's own log density of WHO-5."""
    model = build_latent_model(spec, data3, store_scores=True)
    prior = pm.sample_prior_predictive(draws=4, model=model, random_seed=5)
    post = prior["prior"].to_dataset()
    consts = _constant(data3)
    np.testing.assert_array_equal(
        consts["provider_type_design"].values, model["provider_type_design"].get_value()
    )
    got = latent_scores(post, consts)
    want = post["alliance_true"].transpose("chain", "draw", "client", "subscale")
    np.testing.assert_allclose(got.values, want.values, rtol=1e-10)

    tau = want.values.reshape(-1, *want.shape[2:])
    mu, sigma = outcome_location(spec, data3, post, tau)
    loglik = log_density_function(model, [model["y"]], "numba")(post)["y"]
    y = data3.outcomes[0].y
    by_hand = -0.5 * ((y[None] - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(by_hand, loglik.values.reshape(mu.shape), rtol=1e-9, atol=1e-9)

    observed = xr.DataArray(
        data3.observed_scores,
        dims=("client", "subscale"),
        coords={"client": post["client"].values, "subscale": list(data3.subscales)},
    )
    dt = xr.DataTree.from_dict(
        {"posterior": post, "constant_data": consts.assign(alliance_observed=observed)}
    )
    assert plot_latent_vs_averaged(dt, tmp_path, formats=("png",)) is not None


def test_scales_count_the_frames_care_types(data3):
    scales = latent_scales(data3)
    care = data3.frame.clients["care_type"].astype(str).to_numpy()
    idx = data3.outcomes[0].client_index
    counts = scales["care_count_by_outcome"]["who5"]
    assert set(counts) <= set(data3.frame.care_types)
    for c in data3.frame.care_types:
        assert counts.get(c, 0) == int((care[idx] == c).sum())


# --- the default model through the general route ----------------------------------------------------
def test_contract_types_in_the_other_order_give_the_default_model(spec):
    """The contract's types declared as coach, therapist take the general route (care types named
    from the data, the reference chosen by size) to the same model: the same variables, and the
    same log density at a point whose care-type and provider-type entries are reordered."""
    default = design_of(spec, _study())
    swapped = design_of(spec, _study(provider_types=["coach", "therapist"]))
    assert default.frame.care_types == CARE_TYPES
    assert swapped.frame.care_types == ("coach", "therapist", "coach_and_therapist")
    assert swapped.frame.care_reference == "coach" and swapped.provider_shift_is_scalar
    m0, m1 = (family_of(spec).build(spec, d) for d in (default, swapped))
    assert _shapes(m0) == _shapes(m1)
    assert m0.coords["provider_type"] == PROVIDER_TYPES
    assert "provider_type_contrast" not in m0.coords and "provider_type_contrast" not in m1.coords
    np.testing.assert_array_equal(
        m0["provider_therapist"].get_value(), m1["provider_therapist"].get_value()
    )
    rename = {"both": "coach_and_therapist", "both-coach": "coach_and_therapist-coach"}
    f0, f1 = m0.compile_logp(), m1.compile_logp()
    for point in (m0.initial_point(), _jittered(m0)):
        moved = _reordered(point, m0, m1, rename)
        a, b = float(f0(point)), float(f1(moved))
        assert np.isfinite(a) and a == pytest.approx(b, rel=1e-10)


def _reordered(point, m0, m1, rename) -> dict[str, np.ndarray]:
    """``point`` of ``m0`` as a point of ``m1``: every labelled axis put in ``m1``'s order."""
    out = {}
    for rv in m0.free_RVs:
        name = m0.rvs_to_values[rv].name
        value = point[name]
        for axis, dim in enumerate(m0.named_vars_to_dims.get(rv.name, ())):
            old = [rename.get(str(x), str(x)) for x in m0.coords[dim]]
            new = [str(x) for x in m1.coords[dim]]
            if old != new:
                assert sorted(old) == sorted(new), dim
                value = np.take(value, [old.index(x) for x in new], axis=axis)
        out[name] = value
    return out


# --- estimands -------------------------------------------------------------------------------------
def test_three_type_estimands_are_named_by_the_care_and_provider_types():
    rng = np.random.default_rng(1)
    care_types = (
        "therapist", "coach", "psychiatrist", "therapist_and_coach", "coach_and_psychiatrist",
    )  # fmt: skip
    contrasts = [f"{c}-coach" for c in care_types if c != "coach"]
    c = {
        "outcome": ["who5"],
        "subscale": ["goal", "bond"],
        "level": ["within", "between"],
        "care_type": list(care_types),
        "care_contrast": contrasts,
        "provider_type": list(THREE),
        "provider_type_contrast": ["therapist-coach", "psychiatrist-coach"],
        "cut": ["1|2", "2|3", "3|4", "4|5"],
    }

    def v(*dims, positive=False):
        x = rng.normal(size=(1, 20, *(len(c[d]) for d in dims)))
        return (("chain", "draw", *dims), np.abs(x) if positive else x)

    post = xr.Dataset(
        {
            "mu_b": v("outcome", "subscale", "level"),
            "b": v("outcome", "care_type", "subscale", "level"),
            "b_care": v("outcome", "care_contrast"),
            "sigma": v("outcome", positive=True),
            "sd_provider": v("outcome", "provider_type", positive=True),
            "threshold": v("subscale", "cut"),
            "discrimination": v("subscale", positive=True),
            "sd_provider_alliance": v("subscale", positive=True),
            "provider_type_alliance": v("provider_type_contrast", "subscale"),
        },
        coords=c,
    )
    shares = dict(zip(care_types, (0.2, 0.4, 0.2, 0.1, 0.1), strict=True))
    est = compute_joint_estimands(
        post,
        outcome_units={"who5": "WHO-5 points"},
        primary="who5",
        care_weights={"who5": shares},
    )
    names = set(est.data_vars)
    assert {f"b_care[{k}]" for k in contrasts} <= names
    assert {f"sd_provider[{t}]" for t in THREE} | {f"icc_provider[{t}]" for t in THREE} <= names
    assert {f"b_goal_within[{k}]" for k in care_types} <= names
    assert {f"b_bond_between[{k}]" for k in contrasts} <= names
    assert not any("both" in str(n) for n in names)
    b = post["b"].sel(outcome="who5", subscale="goal", level="within")
    pooled = sum(w * b.sel(care_type=k) for k, w in shares.items())
    np.testing.assert_allclose(est["b_goal_within"].values, pooled.values, rtol=1e-12)
    gap = b.sel(care_type="psychiatrist") - b.sel(care_type="coach")
    np.testing.assert_allclose(est["b_goal_within[psychiatrist-coach]"].values, gap.values)
    np.testing.assert_array_equal(
        est["sd_provider[psychiatrist]"].values,
        post["sd_provider"].sel(outcome="who5", provider_type="psychiatrist").values,
    )
