"""The ratings family on a declared instrument with several items per subscale (the WAI-SR kind):
one row of graded-response parameters per item, reversed items turned, estimands per subscale on
the averaged-score scale, and the one-item-per-subscale model unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytensor
import pytest
import xarray as xr
from scipy import integrate, special, stats

import alliance_bayes as ab
from alliance_bayes.data.load import load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.latent.measurement import expected_rating_np
from alliance_bayes.model.ratings.design import COVARIATES, RatingsData
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.model.regression.design import CARE_CONTRASTS
from alliance_bayes.spec import load_spec
from test_ratings import _evaluate, _latent_of_sessions

ROOT = Path(__file__).resolve().parents[1]
ITEMS = {"goal": ["g1", "g2", "g3"], "bond": ["b1", "b2", "b3"]}
REVERSED = ("g2",)
# planted per item, in client SDs: latent thresholds kappa_{j,k} and discriminations alpha_j
KAPPA = np.array(
    [
        [-2.4, -1.6, -0.7, 0.4],
        [-2.0, -1.2, -0.2, 0.9],
        [-2.8, -1.9, -1.1, 0.0],
        [-2.6, -1.7, -0.9, 0.2],
        [-2.2, -1.5, -0.5, 0.6],
        [-3.0, -2.0, -1.2, -0.1],
    ]
)
ALPHA = np.array([1.6, 2.2, 1.2, 2.0, 1.4, 2.6])
CARE = {"therapist-coach": 0.8, "both-coach": -0.6}
SD_PROVIDER = 0.3
ALLIANCE_TOML = """[alliance]
label = "Test alliance"
range = [1, 5]
scored = "items"
reverse = ["g2"]

[alliance.subscales]
goal = ["g1", "g2", "g3"]
bond = ["b1", "b2", "b3"]
"""


def _item_columns() -> list[str]:
    return [c for items in ITEMS.values() for c in items]


def _simulate_items_study(folder: Path, seed: int = 23, n: int = 210) -> Path:
    """Six items 1–5 (goal g1–g3, bond b1–b3; g2 recorded reverse-scored) drawn from the family's
    graded-response model with planted care-type effects and no covariate, country, session or
    provider-type effect. Client effects are standardised within the sample (unit SD, centred
    within care type) and provider effects centred within type, so the planted values hold in
    this sample."""
    rng = np.random.default_rng(seed)
    n_t, n_k = 4, 8
    providers = pd.DataFrame(
        {
            "provider_id": [f"T{i}" for i in range(n_t)] + [f"K{i}" for i in range(n_k)],
            "provider_type": ["therapist"] * n_t + ["coach"] * n_k,
        }
    )
    a = rng.normal(0.0, SD_PROVIDER, n_t + n_k)
    a[:n_t] -= a[:n_t].mean()
    a[n_t:] -= a[n_t:].mean()
    care = np.array(["therapist"] * (n // 4) + ["coach"] * (n // 2) + ["both"] * (n - 3 * n // 4))
    shift = np.select(
        [care == "therapist", care == "both"], [CARE["therapist-coach"], CARE["both-coach"]], 0.0
    )
    clients = pd.DataFrame(
        {
            "client_id": [f"c{i:04d}" for i in range(n)],
            "age": rng.normal(36, 9, n).round().clip(18, 80).astype(int),
            "sex": rng.choice(["female", "male"], n),
            "country": rng.choice(["US", "GB", "IN"], n, p=[0.6, 0.25, 0.15]),
            "who5_baseline": 4 * rng.integers(2, 25, n),
            "who5_followup": 4 * rng.integers(2, 25, n),
            "days_in_care": rng.integers(20, 90, n),
        }
    )
    e = rng.normal(0.0, 1.0, n)
    for c in ("therapist", "coach", "both"):
        e[care == c] -= e[care == c].mean()
    e /= e.std()
    rows = []
    for i in range(n):
        ther, coach = rng.integers(0, n_t), n_t + rng.integers(0, n_k)
        seen = {"therapist": [ther], "coach": [coach], "both": [ther, coach]}[care[i]]
        for order in range(1, 5):
            p = seen[(order - 1) % len(seen)]
            theta = shift[i] + a[p] + e[i]
            above = special.expit(ALPHA[:, None] * (theta - KAPPA))  # (item, K - 1)
            # one uniform per item: r - 1 is the number of thresholds it falls below
            r = 1 + (rng.uniform(size=(len(ALPHA), 1)) < above).sum(axis=1)
            recorded = [
                6 - v if c in REVERSED else v for c, v in zip(_item_columns(), r, strict=True)
            ]
            rows.append([clients.client_id[i], providers.provider_id[p], order, *recorded])
    sessions = pd.DataFrame(
        rows, columns=["client_id", "provider_id", "session_index", *_item_columns()]
    )
    folder.mkdir(parents=True, exist_ok=True)
    providers.to_csv(folder / "providers.csv", index=False)
    clients.to_csv(folder / "clients.csv", index=False)
    sessions.to_csv(folder / "sessions.csv", index=False)
    (folder / "study.toml").write_text(ALLIANCE_TOML, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def items_study(tmp_path_factory) -> Path:
    return _simulate_items_study(tmp_path_factory.mktemp("items") / "study")


# --- (1) one item per subscale: the model as it has been -------------------------------------------
def default_graph_on_subscales(name: str, logp: float):
    """The shipped spec ``name``'s design and graph on the shipped study (one item per subscale),
    checked to be the model as it has been: its initial log density ``logp`` (FAST_COMPILE) and
    every item parameter on the ``subscale`` dimension, no ``item`` one."""
    spec = load_spec(name)
    study = load_study(ROOT / "data" / "synthetic")
    with pytensor.config.change_flags(mode="FAST_COMPILE"), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        data = design_of(spec, study)
        model = family_of(spec).build(spec, data)
        found = float(model.compile_logp()(model.initial_point()))
    assert found == pytest.approx(logp, rel=1e-12, abs=0)
    assert not data.several_items and data.counts.shape[0] == 2
    dims = model.named_vars_to_dims
    assert dims["discrimination"] == ("subscale",)
    assert dims["threshold"] == ("subscale", "cut")
    assert dims["cutpoint_gap"] == ("subscale", "gap")
    assert dims["ratings"] == ("subscale", "category")
    assert "item" not in model.coords and "item_subscale" not in model.named_vars
    return data


def test_the_default_ratings_graph_is_unchanged():
    default_graph_on_subscales("alliance_ratings", -41237.83443087701)


# --- (2) the design: one row per item, reversed items turned --------------------------------------
def test_design_counts_every_item_and_turns_the_reversed_one(items_study):
    spec = load_spec("alliance_ratings")
    data = design_of(spec, items_study)
    assert isinstance(data, RatingsData) and data.several_items
    assert data.items == tuple(_item_columns())
    assert data.item_subscale.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.subscales == ("goal", "bond")
    sessions = pd.read_csv(items_study / "sessions.csv")
    assert data.counts.shape == (6, len(sessions), 5)
    assert (data.counts.sum(axis=-1) == 1).all()
    for j, c in enumerate(_item_columns()):
        r = sessions[c].to_numpy()
        modelled = 6 - r if c in REVERSED else r
        hand = np.bincount(modelled - 1, minlength=5)
        assert data.counts[j].sum(axis=0).tolist() == hand.tolist(), c
    # the reversed item as recorded is skewed the other way: turning it matters
    g2 = sessions["g2"].to_numpy()
    assert data.counts[1].sum(axis=0)[-1] == (g2 == 1).sum() != (g2 == 5).sum()


def test_the_latent_family_takes_the_same_items(items_study):
    """The latent family models the same item rows (tests/test_latent_items.py)."""
    latent = design_of(load_spec("alliance_latent_who5"), items_study)
    ratings = design_of(load_spec("alliance_ratings"), items_study)
    assert latent.items == ratings.items == tuple(_item_columns())
    assert latent.item_subscale.tolist() == ratings.item_subscale.tolist()
    np.testing.assert_array_equal(latent.category_totals, ratings.category_totals)


# --- (3) the log density is the graded-response likelihood of every item rating -------------------
def test_log_density_is_the_item_graded_response_likelihood(items_study):
    spec = load_spec("alliance_ratings")
    data = design_of(spec, items_study)
    model = family_of(spec).build(spec, data)
    dims = model.named_vars_to_dims
    assert dims["threshold"] == ("item", "cut") and dims["discrimination"] == ("item",)
    assert dims["ratings"] == ("item", "category")
    assert list(model.coords["item"]) == _item_columns()
    assert model["item_subscale"].get_value().tolist() == [0, 0, 0, 1, 1, 1]
    rng = np.random.default_rng(5)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}
    logp = float(model.compile_logp(vars=model.observed_RVs, sum=True)(point))
    disc, kappa = _evaluate(model, point, ["discrimination", "threshold"])
    assert disc.shape == (6,) and kappa.shape == (6, 4)
    theta = _latent_of_sessions(model, data, point)
    direct = 0.0
    for j in range(6):
        above = special.expit(disc[j] * (theta[:, None] - kappa[j][None, :]))
        p = np.column_stack([np.ones(len(theta)), above]) - np.column_stack(
            [above, np.zeros(len(theta))]
        )
        direct += float((data.counts[j] * np.log(p)).sum())
    assert logp == pytest.approx(direct, rel=1e-9)


# --- (4) the estimands average each subscale's items ----------------------------------------------
# goal two items, bond three, task one (modelled, not averaged in)
FAKE_ITEMS = {"i1": "goal", "i2": "goal", "i3": "bond", "i4": "bond", "i5": "bond", "i6": "task"}


def _fake_posterior(sd_provider: float) -> xr.Dataset:
    def rep(x, *dims):
        x = np.asarray(x, float)
        return (("chain", "draw", *dims), np.broadcast_to(x, (1, 2, *x.shape)).copy())

    return xr.Dataset(
        {
            "discrimination": rep(ALPHA, "item"),
            "threshold": rep(KAPPA, "item", "cut"),
            "b_covariate": rep([0.0, 0.0, 0.0], "covariate"),
            "b_care": rep([CARE[c] for c in CARE_CONTRASTS], "care_contrast"),
            "provider_type_alliance": rep(0.0),
            "sd_provider_latent": rep(sd_provider),
            "b_session": rep(0.0),
        },
        coords={
            "chain": [0],
            "draw": [0, 1],
            "item": list(FAKE_ITEMS),
            "covariate": list(COVARIATES),
            "care_contrast": list(CARE_CONTRASTS),
        },
    )


def _item_marginal(j: int, mu: float, omega: float, *, top: bool = False) -> float:
    """E_Z of item j's expected rating (or P(r = 5)) at mu + omega Z, adaptive quadrature."""

    def f(z):
        theta = np.array(mu + omega * z)
        if top:
            value = special.expit(ALPHA[j] * (theta - KAPPA[j][-1]))
        else:
            value = expected_rating_np(theta, ALPHA[j], KAPPA[j])
        return float(value) * stats.norm.pdf(z)

    return integrate.quad(f, -12, 12)[0]


def test_subscale_rating_is_the_mean_of_its_items_expected_ratings():
    sd_p = 0.4
    scales = {
        "care_share": {"therapist": 0.25, "coach": 0.5, "both": 0.25},
        "country_share": {"all": 1.0},
        "both_therapist_share": 0.5,
        "therapist_share": 0.5,
        "male_mean": 0.5,
        "alliance_items": {"subscale": FAKE_ITEMS, "reversed": []},
    }
    est = compute_ratings_estimands(_fake_posterior(sd_p), scales)
    omega = np.hypot(1.0, sd_p)
    g_t, g_b = (CARE[c] for c in CARE_CONTRASTS)
    mu_coach = -(0.25 * g_t + 0.25 * g_b)

    def averaged(mu, top=False):
        goal = np.mean([_item_marginal(j, mu, omega, top=top) for j in (0, 1)])
        bond = np.mean([_item_marginal(j, mu, omega, top=top) for j in (2, 3, 4)])
        return (goal + bond) / 2

    coach, therapist = averaged(mu_coach), averaged(mu_coach + g_t)
    assert float(est["alliance[coach]"].mean()) == pytest.approx(coach, abs=1e-6)
    assert float(est["alliance[therapist-coach]"].mean()) == pytest.approx(
        therapist - coach, abs=1e-6
    )
    ceiling = 0.25 * averaged(mu_coach + g_t, True) + 0.5 * averaged(mu_coach, True)
    ceiling += 0.25 * averaged(mu_coach + g_b, True)
    assert float(est["share_at_ceiling"].mean()) == pytest.approx(ceiling, abs=1e-6)
    # without the items' subscales the average cannot be formed: said, not guessed
    with pytest.raises(ValueError, match="alliance_items"):
        compute_ratings_estimands(_fake_posterior(sd_p), {k: scales[k] for k in ("care_share",)})


# --- (5) recovery by MCMC -------------------------------------------------------------------------
@pytest.mark.mcmc
@pytest.mark.slow
def test_fit_recovers_planted_item_parameters_and_care_difference(items_study):
    fit = ab.fit("alliance_ratings", items_study, draws=300, tune=300, chains=2, progress=False)
    post = fit.datatree["posterior"].to_dataset()
    # the graph centres the care effects over the clients: its thresholds are the planted ones
    # less the clients' mean care shift
    n = len(pd.read_csv(items_study / "clients.csv"))
    shares = np.array([n // 4, n // 2, n - 3 * n // 4]) / n  # therapist, coach, both
    centre = shares[0] * CARE["therapist-coach"] + shares[2] * CARE["both-coach"]
    for name, truth in (
        ("discrimination", ALPHA),
        ("threshold", KAPPA - centre),
        ("b_care", np.array([CARE[c] for c in CARE_CONTRASTS])),
    ):
        draws = post[name]
        mean = draws.mean(("chain", "draw")).values
        sd = draws.std(("chain", "draw")).values
        z = np.abs(mean - truth) / sd
        assert (z < 3.5).all(), (name, mean, truth, z)
