"""The latent family on a declared instrument with several items per subscale (the WAI-SR kind):
one row of graded-response parameters per item on its subscale's latent alliance, reversed items
turned, true scores the mean of the items' expected ratings, and the one-item model unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytest
import xarray as xr
from scipy import special

import alliance_bayes as ab
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.items import ITEMS_SCORED, subscale_means
from alliance_bayes.model.latent.estimands import compute_joint_estimands
from alliance_bayes.model.latent.measurement import (
    LatentData,
    build_latent_model,
    expected_rating_np,
    latent_scales,
    latent_scores,
)
from alliance_bayes.spec import load_spec
from test_ratings import _evaluate
from test_ratings_items import ITEMS as ITEMS_THREE
from test_ratings_items import _item_columns, _simulate_items_study, default_graph_on_subscales

ROOT = Path(__file__).resolve().parents[1]
SPEC = "alliance_latent_who5"
# Two items per subscale, the second goal item recorded reverse-scored; planted per item in client
# latent SDs: thresholds kappa_{j,k} and discriminations alpha_j.
ITEMS = {"goal": ["g1", "g2"], "bond": ["b1", "b2"]}
REVERSED = ("g2",)
KAPPA = np.array(
    [
        [-2.4, -1.5, -0.6, 0.5],
        [-2.0, -1.1, -0.1, 0.9],
        [-2.7, -1.8, -1.0, 0.1],
        [-2.2, -1.4, -0.4, 0.7],
    ]
)
ALPHA = np.array([1.6, 2.4, 1.3, 2.1])
OWNER = np.array([0, 0, 1, 1])  # each item's subscale
CORR_CLIENT = 0.5
SD_PROVIDER = 0.3
ALLIANCE_TOML = """[alliance]
label = "Two-item alliance"
range = [1, 5]
scored = "items"
reverse = ["g2"]

[alliance.subscales]
goal = ["g1", "g2"]
bond = ["b1", "b2"]
"""


def _columns() -> list[str]:
    return [c for items in ITEMS.values() for c in items]


def _simulate_two_item_study(folder: Path, seed: int, n: int, sessions: int = 4) -> Path:
    """Four items 1–5 (goal g1, g2; bond b1, b2; g2 recorded reverse-scored) from the latent
    family's measurement model: a client part per subscale (unit SD, goal–bond correlation
    :data:`CORR_CLIENT`, centred and standardised in the sample, as the graph centres it) plus a
    provider part (SD :data:`SD_PROVIDER`, centred within provider type), no provider-type shift.
    Each client sees one provider, caseloads equal, so the planted thresholds are those the
    centred graph estimates. WHO-5 follow-up is baseline plus noise."""
    rng = np.random.default_rng(seed)
    n_t, n_k = 4, 8
    types = ["therapist"] * n_t + ["coach"] * n_k
    providers = pd.DataFrame(
        {"provider_id": [f"T{i}" for i in range(n_t)] + [f"K{i}" for i in range(n_k)]}
    ).assign(provider_type=types)
    a = rng.normal(0.0, SD_PROVIDER, (n_t + n_k, 2))
    a[:n_t] -= a[:n_t].mean(axis=0)
    a[n_t:] -= a[n_t:].mean(axis=0)
    chol = np.linalg.cholesky(np.array([[1.0, CORR_CLIENT], [CORR_CLIENT, 1.0]]))
    e = rng.normal(size=(n, 2)) @ chol.T
    e = (e - e.mean(axis=0)) / e.std(axis=0, ddof=1)
    provider_of = np.arange(n) % (n_t + n_k)
    base = 4 * rng.integers(3, 20, n)
    clients = pd.DataFrame(
        {
            "client_id": [f"c{i:04d}" for i in range(n)],
            "age": rng.normal(36, 9, n).round().clip(18, 80).astype(int),
            "sex": rng.choice(["female", "male"], n),
            "country": "US",
            "who5_baseline": base,
            "who5_followup": np.clip(base + 4 * rng.integers(-3, 4, n), 0, 100),
            "days_in_care": rng.integers(20, 90, n),
        }
    )
    rows = []
    for i in range(n):
        p = provider_of[i]
        theta = (a[p] + e[i])[OWNER]  # (item,)
        for order in range(1, sessions + 1):
            above = special.expit(ALPHA[:, None] * (theta[:, None] - KAPPA))
            r = 1 + (rng.uniform(size=(len(ALPHA), 1)) < above).sum(axis=1)
            recorded = [6 - v if c in REVERSED else v for c, v in zip(_columns(), r, strict=True)]
            rows.append([clients.client_id[i], providers.provider_id[p], order, *recorded])
    table = pd.DataFrame(rows, columns=["client_id", "provider_id", "session_index", *_columns()])
    folder.mkdir(parents=True, exist_ok=True)
    providers.to_csv(folder / "providers.csv", index=False)
    clients.to_csv(folder / "clients.csv", index=False)
    table.to_csv(folder / "sessions.csv", index=False)
    (folder / "study.toml").write_text(ALLIANCE_TOML, encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def no_blas_warning():
    """PyMC compiles initial points with PyTensor's C linker, which warns (once per process)
    that a pip install has no BLAS: noise here, whichever test compiles first."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        yield


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    return _simulate_two_item_study(tmp_path_factory.mktemp("tiny") / "study", seed=3, n=24)


@pytest.fixture(scope="module")
def three_item_study(tmp_path_factory) -> Path:
    """The ratings family's study: three items per subscale, g2 reversed, some clients with
    two providers."""
    return _simulate_items_study(tmp_path_factory.mktemp("three") / "study")


# --- (1) one item per subscale: the model as it has been -------------------------------------------
def test_the_default_latent_graph_is_unchanged():
    data = default_graph_on_subscales(SPEC, -53154.235998050324)
    assert "alliance_items" not in latent_scales(data)


# --- (2) the design: one row per item, reversed items turned --------------------------------------
def test_design_counts_every_item_and_turns_the_reversed_one(three_item_study):
    data = design_of(load_spec(SPEC), three_item_study)
    assert isinstance(data, LatentData) and data.several_items and data.rows == "item"
    assert data.items == tuple(_item_columns())
    assert data.item_subscale.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.subscales == ("goal", "bond")
    sessions = pd.read_csv(three_item_study / "sessions.csv")
    n_members = len(sessions.groupby(["client_id", "provider_id"]))
    assert data.counts.shape == (6, n_members, 5)
    # every session rates every item once: per membership, its sessions
    per_member = sessions.groupby(["client_id", "provider_id"]).size().to_numpy()
    assert sorted(data.counts[0].sum(axis=-1).tolist()) == sorted(per_member.tolist())
    for j, c in enumerate(_item_columns()):
        r = sessions[c].to_numpy()
        hand = np.bincount((6 - r if c in REVERSED else r) - 1, minlength=5)
        assert data.category_totals[j].tolist() == hand.tolist(), c
    g2 = sessions["g2"].to_numpy()  # as recorded, skewed the other way: turning it matters
    assert data.category_totals[1][-1] == (g2 == 1).sum() != (g2 == 5).sum()
    record = latent_scales(data)["alliance_items"]
    assert record["subscale"] == {c: s for s, cs in ITEMS_THREE.items() for c in cs}
    assert record["reversed"] == ["g2"] and record["scored"] == ITEMS_SCORED


def test_subscale_means_average_each_subscales_items():
    a = subscale_means(np.array([0, 0, 1, 1, 1, 2]), 3)
    np.testing.assert_allclose(a @ np.arange(6.0), [0.5, 3.0, 5.0])
    with pytest.raises(ValueError, match=r"subscale\(s\) \[1\] have no item"):
        subscale_means(np.array([0, 0, 2]), 3)


# --- (3) the log density is the graded-response likelihood of every item rating -------------------
def _centred(z: np.ndarray) -> np.ndarray:
    return (z - z.mean(axis=0)) * np.sqrt(len(z) / (len(z) - 1.0))


NAMES = [
    "threshold",
    "discrimination",
    "z_client_alliance",
    "z_provider_alliance",
    "sd_provider_alliance",
    "chol_client_alliance",
    "chol_provider_alliance",
    "provider_type_alliance",
]


def _latent_parts(data: LatentData, v: dict) -> tuple[np.ndarray, np.ndarray]:
    """The client and provider parts (client, subscale), (provider, subscale) from the sampled
    values, centred as the graph centres them (clients; providers within provider type)."""
    therapist = data.provider_type_index == data.provider_types.index("therapist")
    z_p = v["z_provider_alliance"].copy()
    for group in (therapist, ~therapist):
        z_p[group] = _centred(z_p[group])
    e = _centred(v["z_client_alliance"]) @ v["chol_client_alliance"].T
    a = (z_p @ v["chol_provider_alliance"].T) * v["sd_provider_alliance"]
    return e, a + (therapist - therapist.mean())[:, None] * v["provider_type_alliance"]


def _random_point(model, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


def test_log_density_is_the_item_graded_response_likelihood(tiny_study):
    """By hand, session by session: P(r = k) = expit(alpha_j (theta - kappa_{j,k-1})) -
    expit(alpha_j (theta - kappa_{j,k})) with theta the latent alliance on the item's subscale of
    the client with that session's provider, the reversed item's recorded r taken as 6 - r."""
    spec = load_spec(SPEC)
    data = design_of(spec, tiny_study)
    assert data.counts.shape[0] == 4 and data.n_clients == 24
    model = family_of(spec).build(spec, data)
    dims = model.named_vars_to_dims
    assert dims["threshold"] == ("item", "cut") and dims["discrimination"] == ("item",)
    assert dims["cutpoint_top"] == ("item",) and dims["cutpoint_gap"] == ("item", "gap")
    assert dims["ratings"] == ("item", "category")
    assert dims["rating_counts"] == ("item", "membership", "category")
    assert dims["sd_provider_alliance"] == ("subscale",)  # the latent part stays per subscale
    assert list(model.coords["item"]) == _columns()
    assert model["item_subscale"].get_value().tolist() == OWNER.tolist()

    point = _random_point(model, 7)
    got = float(model.compile_logp(vars=[model["ratings"]], sum=True)(point))
    v = dict(zip(NAMES, _evaluate(model, point, NAMES), strict=True))
    assert v["discrimination"].shape == (4,) and v["threshold"].shape == (4, 4)
    e, a = _latent_parts(data, v)
    ses = data.frame.sessions  # the items as recorded, not turned
    ci, pi = ses["client_index"].to_numpy(), ses["provider_index"].to_numpy()
    assert len(ses) == 24 * 4
    want = 0.0
    for j, c in enumerate(_columns()):
        r = ses[c].to_numpy().astype(int)
        r = 6 - r if c in REVERSED else r
        theta = a[pi, OWNER[j]] + e[ci, OWNER[j]]
        above = special.expit(v["discrimination"][j] * (theta[:, None] - v["threshold"][j]))
        p = np.column_stack([np.ones(len(r)), above]) - np.column_stack([above, np.zeros(len(r))])
        want += float(np.log(p[np.arange(len(r)), r - 1]).sum())
    assert got == pytest.approx(want, rel=1e-9)


# --- (4) true scores: each subscale's the mean of its items' expected ratings ---------------------
def test_true_scores_are_the_mean_of_the_items_expected_ratings(tiny_study):
    spec = load_spec(SPEC)
    data = design_of(spec, tiny_study)
    model = build_latent_model(spec, data, store_scores=True)
    point = _random_point(model, 13)
    names = [*NAMES, "alliance_true"]
    v = dict(zip(names, _evaluate(model, point, names), strict=True))
    e, a = _latent_parts(data, v)
    # one provider per client: a client's true score is its one membership's
    assert np.all(data.membership_weight[:, 0] == 1.0)
    theta = a[data.membership_index[:, 0]] + e  # (client, subscale)
    per_item = expected_rating_np(theta[:, OWNER], v["discrimination"], v["threshold"])
    hand = np.column_stack([per_item[:, OWNER == s].mean(axis=1) for s in range(2)])
    np.testing.assert_allclose(v["alliance_true"], hand, rtol=1e-10)

    # the numpy recomputation from stored draws is the graph's
    prior = pm.sample_prior_predictive(draws=4, model=model, random_seed=11)
    post = prior["prior"].to_dataset()
    consts = xr.Dataset(
        {
            k: (("membership",), model[k].get_value())
            for k in ("mem_client", "mem_provider", "mem_weight")
        }
        | {
            "provider_therapist": (("provider",), model["provider_therapist"].get_value()),
            "item_subscale": (("item",), model["item_subscale"].get_value()),
        }
    )
    got = latent_scores(post, consts)
    want = post["alliance_true"].transpose("chain", "draw", "client", "subscale")
    np.testing.assert_allclose(got.values, want.values, rtol=1e-10)
    assert post["alliance_provider"].dims[-1] == "subscale"


def test_the_refittable_form_has_the_ordinary_log_density(tiny_study):
    """The simulation-based-calibration form (every (item, membership) cell, data in containers)
    has the ordinary model's log density with several items per subscale too."""
    spec = load_spec(SPEC)
    data = design_of(spec, tiny_study)
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        full = build_latent_model(spec, data)
        refit = build_latent_model(spec, data, refit=True)
        assert refit.named_vars_to_dims["ratings"] == ("item", "membership", "category")
        point = _random_point(full, 17)
        want = full.compile_logp()(point)
        got = refit.compile_logp()(point)
    assert got == pytest.approx(want, rel=1e-10)


def test_item_estimands_are_named_by_item():
    """The measurement estimands take the item's name where the parameters are per item; the
    outcome estimands keep their stable names."""
    rng = np.random.default_rng(0)
    c = {
        "outcome": ["who5"],
        "subscale": ["goal", "bond"],
        "level": ["within", "between"],
        "care_type": ["therapist", "coach", "both"],
        "provider_type": ["therapist", "coach"],
        "item": _columns(),
        "cut": ["1|2", "2|3", "3|4", "4|5"],
    }

    def v(*dims):
        return (("chain", "draw", *dims), rng.normal(size=(1, 5, *(len(c[d]) for d in dims))))

    post = xr.Dataset(
        {
            "mu_b": v("outcome", "subscale", "level"),
            "b": v("outcome", "care_type", "subscale", "level"),
            "sigma": v("outcome"),
            "sd_provider": v("outcome", "provider_type"),
            "threshold": v("item", "cut"),
            "discrimination": v("item"),
            "sd_provider_alliance": v("subscale"),
        },
        coords=c,
    )
    est = compute_joint_estimands(post, primary="who5", outcome_units={"who5": "WHO-5 points"})
    assert {"b_bond_between[therapist]", "mu_b_goal_within", "sigma"} <= set(est.data_vars)
    np.testing.assert_array_equal(est["discrimination[g2]"], post["discrimination"].sel(item="g2"))
    np.testing.assert_array_equal(
        est["threshold[b1,3|4]"], post["threshold"].sel(item="b1", cut="3|4")
    )
    assert est["threshold[b1,3|4]"].attrs["item"] == "b1"
    assert est["sd_provider_alliance[goal]"].attrs["subscale"] == "goal"
    assert "discrimination[goal]" not in est


# --- (5) recovery by MCMC -------------------------------------------------------------------------
@pytest.mark.mcmc
@pytest.mark.slow
def test_fit_recovers_planted_item_parameters(tmp_path):
    study = _simulate_two_item_study(tmp_path / "study", seed=29, n=300)
    fit = ab.fit(SPEC, study, draws=300, tune=300, chains=2, progress=False)
    post = fit.datatree["posterior"].to_dataset()
    assert post["discrimination"].dims[-1] == "item"
    for name, truth in (("discrimination", ALPHA), ("threshold", KAPPA)):
        draws = post[name]
        mean = draws.mean(("chain", "draw")).values
        sd = draws.std(("chain", "draw")).values
        z = np.abs(mean - truth) / sd
        assert (z < 3.5).all(), (name, mean, truth, z)
    corr = post["corr_client_alliance"].values.ravel()
    assert abs(corr.mean() - CORR_CLIENT) < 3.5 * corr.std()
