"""The alliance_ratings family: spec, design, estimands against closed forms, recovery by MCMC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate, special, stats

import alliance_bayes as ab
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.latent.measurement import expected_rating_np
from alliance_bayes.model.ratings.design import COVARIATES, RatingsData
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands, marginal_rating
from alliance_bayes.model.regression.design import CARE_CONTRASTS
from alliance_bayes.spec import SpecError, load_spec, parse_spec, spec_from_dict

THRESHOLDS = np.array([[-2.6, -1.9, -1.0, 0.1], [-2.9, -2.1, -1.3, -0.2]])  # goal, bond
DISCRIMINATION = np.array([1.8, 2.4])
CARE = {"therapist-coach": 0.8, "both-coach": -0.6}  # planted, in client SDs
SD_PROVIDER = 0.3


# --- spec -------------------------------------------------------------------------------------------
def test_shipped_ratings_spec_selects_the_ratings_family():
    spec = load_spec("alliance_ratings")
    assert family_of(spec).name == "ratings"
    assert spec.rope == 0.1
    assert spec.outcome_units == "rating points"
    assert "alliance_per_decade_age = 0" in spec.hypotheses.tests
    # the run.json round trip (every table written out with its defaults) stays valid
    again = spec_from_dict(json.loads(json.dumps(spec.to_dict())), "run.json")
    assert family_of(again).name == "ratings" and again.hypotheses == spec.hypotheses


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[priors]\nsigma_sd = 3.0\n", "takes only"),
        ('[predictors]\nalliance = "composite"\n', "takes only"),
        ('likelihood = "student_t"\n', "takes only"),
        ("[data]\nfollowup_imputations = 2\n", "followup_imputations"),
        ("[hypotheses]\nrope = -1.0\n", "rope"),
    ],
)
def test_ratings_spec_stays_strict(extra, message):
    with pytest.raises(SpecError, match=message):
        parse_spec('name = "r"\noutcome = "alliance_ratings"\n' + extra)


# --- estimands against closed forms ---------------------------------------------------------------
def _rating_by_categories(theta: float, item: int) -> float:
    """E[r | theta] as the direct sum over categories of k P(r = k)."""
    above = special.expit(DISCRIMINATION[item] * (theta - THRESHOLDS[item]))  # P(r > k)
    p = np.concatenate([[1.0], above]) - np.concatenate([above, [0.0]])
    return float(np.sum(np.arange(1, 6) * p))


def test_expected_rating_is_the_sum_over_categories():
    for theta in (-3.0, -0.5, 0.0, 1.7):
        for item in (0, 1):
            got = expected_rating_np(np.array(theta), DISCRIMINATION[item], THRESHOLDS[item])
            assert got == pytest.approx(_rating_by_categories(theta, item), abs=1e-12)


def _marginal_by_quad(mu: float, omega: float, *, top: bool = False) -> float:
    """Item-averaged E_Z over the category sum (or P(r = 5)), adaptive quadrature."""

    def f(z, item):
        theta = mu + omega * z
        if top:
            value = special.expit(DISCRIMINATION[item] * (theta - THRESHOLDS[item][-1]))
        else:
            value = _rating_by_categories(theta, item)
        return value * stats.norm.pdf(z)

    return float(np.mean([integrate.quad(f, -12, 12, args=(i,))[0] for i in (0, 1)]))


def test_marginal_rating_matches_adaptive_quadrature():
    d = np.tile(DISCRIMINATION, (2, 1))
    k = np.tile(THRESHOLDS, (2, 1, 1))
    mu = np.array([[-0.4, 0.9], [0.0, 2.0]])
    omega = np.array([1.0, 1.3])
    got = marginal_rating(mu, omega, d, k)
    top = marginal_rating(mu, omega, d, k, ceiling=True)
    for i in range(2):
        for j in range(2):
            assert got[i, j] == pytest.approx(_marginal_by_quad(mu[i, j], omega[i]), abs=1e-7)
            assert top[i, j] == pytest.approx(
                _marginal_by_quad(mu[i, j], omega[i], top=True), abs=1e-7
            )


def _posterior(
    draws: int = 2,
    *,
    care=CARE,
    beta=(0.0, 0.0, 0.0),
    delta: float = 0.0,
    sd_provider: float = 0.0,
    sd_country: float = 0.0,
    z_country=(0.0, 0.0),
    session: float = 0.0,
) -> xr.Dataset:
    """Every draw at the same parameters (chain 1): the estimands are then closed forms."""

    def rep(x, *dims):
        x = np.asarray(x, float)
        return (("chain", "draw", *dims), np.broadcast_to(x, (1, draws, *x.shape)).copy())

    return xr.Dataset(
        {
            "discrimination": rep(DISCRIMINATION, "subscale"),
            "threshold": rep(THRESHOLDS, "subscale", "cut"),
            "b_covariate": rep(beta, "covariate"),
            "b_care": rep([care[c] for c in CARE_CONTRASTS], "care_contrast"),
            "provider_type_alliance": rep(delta),
            "sd_provider_latent": rep(sd_provider),
            "sd_country_latent": rep(sd_country),
            "z_country": rep(z_country, "country"),
            "b_session": rep(session),
        },
        coords={
            "chain": [0],
            "draw": np.arange(draws),
            "subscale": ["goal", "bond"],
            "covariate": list(COVARIATES),
            "care_contrast": list(CARE_CONTRASTS),
            "country": ["GB", "US"],
        },
    )


SCALES = {
    "care_share": {"therapist": 0.2, "coach": 0.6, "both": 0.2},
    "country_share": {"GB": 0.25, "US": 0.75},
    "both_therapist_share": 0.4,
    "therapist_share": 0.3,
    "male_mean": 0.45,
}


def test_care_type_levels_are_closed_form_expected_ratings():
    delta, sd_p = 0.5, 0.6
    est = compute_ratings_estimands(_posterior(delta=delta, sd_provider=sd_p), SCALES)
    omega = np.hypot(1.0, sd_p)
    # care effects centred over the clients (shares .2, .6, .2)
    g_t, g_b = (CARE[c] for c in CARE_CONTRASTS)
    centre = 0.2 * g_t + 0.2 * g_b
    coach = _marginal_by_quad(-centre - 0.3 * delta, omega)
    therapist = _marginal_by_quad(g_t - centre + 0.7 * delta, omega)
    both = 0.4 * _marginal_by_quad(g_b - centre + 0.7 * delta, omega) + 0.6 * (
        _marginal_by_quad(g_b - centre - 0.3 * delta, omega)
    )
    for name, value in (
        ("alliance[coach]", coach),
        ("alliance[therapist]", therapist),
        ("alliance[both]", both),
        ("alliance[therapist-coach]", therapist - coach),
        ("alliance[both-coach]", both - coach),
    ):
        assert float(est[name].mean()) == pytest.approx(value, abs=1e-6), name
        assert est[name].attrs["units"].startswith("rating points")
    assert set(est.data_vars) >= {
        "alliance_per_decade_age",
        "alliance_per_10_who5_baseline",
        "alliance[male-not_male]",
        "sd_country_alliance",
        "alliance_country[GB]",
        "alliance_country[US]",
        "alliance_per_session",
        "share_at_ceiling",
        "sd_provider_alliance",
        "icc_provider_alliance",
    }


def test_covariate_country_and_ceiling_estimands_are_closed_forms():
    beta = (0.4, -0.3, 0.2)  # per decade, male, per 10 WHO-5 points
    care = {"therapist-coach": 0.0, "both-coach": 0.0}
    z = (1.0, -1.0)  # centred and rescaled by sqrt(2): u = ±sqrt(2) sd_country
    sd_c = 0.3
    est = compute_ratings_estimands(
        _posterior(care=care, beta=beta, sd_country=sd_c, z_country=z, session=0.1), SCALES
    )
    u = np.array([1.0, -1.0]) * np.sqrt(2.0) * sd_c
    w = np.array([0.25, 0.75])

    def level(shift):
        return float(w @ [_marginal_by_quad(shift + uk, 1.0) for uk in u])

    assert float(est["alliance_per_decade_age"].mean()) == pytest.approx(
        level(0.2) - level(-0.2), abs=1e-6
    )
    assert float(est["alliance[male-not_male]"].mean()) == pytest.approx(
        level(-0.3 * 0.55) - level(0.3 * 0.45), abs=1e-6
    )
    assert float(est["alliance_per_10_who5_baseline"].mean()) == pytest.approx(
        level(0.1) - level(-0.1), abs=1e-6
    )
    assert float(est["alliance_per_session"].mean()) == pytest.approx(
        level(0.05) - level(-0.05), abs=1e-6
    )
    gb, us = (_marginal_by_quad(uk, 1.0) for uk in u)
    assert float(est["alliance_country[GB]"].mean()) == pytest.approx(gb, abs=1e-6)
    assert float(est["sd_country_alliance"].mean()) == pytest.approx(abs(gb - us) / np.sqrt(2))
    top = float(w @ [_marginal_by_quad(uk, 1.0, top=True) for uk in u])
    assert float(est["share_at_ceiling"].mean()) == pytest.approx(top, abs=1e-6)
    # the latent-response ICC: sigma_a^2 / (sigma_a^2 + 1 + pi^2 / (3 alpha^2)), item-averaged
    est = compute_ratings_estimands(_posterior(sd_provider=0.5), SCALES)
    icc = np.mean(0.25 / (0.25 + 1.0 + np.pi**2 / (3.0 * DISCRIMINATION**2)))
    assert float(est["icc_provider_alliance"].mean()) == pytest.approx(icc)


# --- a small study with planted care-type differences -----------------------------------------------
def _simulate_ratings_study(folder: Path, seed: int = 11) -> Path:
    """Ratings drawn from the family's own graded-response model with planted care-type effects,
    no effect of age, baseline WHO-5, sex, country or session order, and no provider-type mean."""
    rng = np.random.default_rng(seed)
    n_t, n_k = 4, 8
    providers = pd.DataFrame(
        {
            "provider_id": [f"T{i}" for i in range(n_t)] + [f"K{i}" for i in range(n_k)],
            "provider_type": ["therapist"] * n_t + ["coach"] * n_k,
        }
    )
    # provider effects centred within provider type and client effects within care type: the
    # planted differences then hold exactly in this sample, not only in expectation
    a = rng.normal(0.0, SD_PROVIDER, n_t + n_k)
    a[:n_t] -= a[:n_t].mean()
    a[n_t:] -= a[n_t:].mean()
    care = np.array(["therapist"] * 70 + ["coach"] * 130 + ["both"] * 70)
    n = len(care)
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
    rows = []
    e = rng.normal(0.0, 1.0, n)
    for c in ("therapist", "coach", "both"):
        e[care == c] -= e[care == c].mean()
    for i in range(n):
        ther = rng.integers(0, n_t)
        coach = n_t + rng.integers(0, n_k)
        seen = {"therapist": [ther], "coach": [coach], "both": [ther, coach]}[care[i]]
        for order in range(1, 7):
            p = seen[(order - 1) % len(seen)]
            theta = shift[i] + a[p] + e[i]
            ratings = []
            for item in (0, 1):
                above = special.expit(DISCRIMINATION[item] * (theta - THRESHOLDS[item]))
                ratings.append(1 + int((rng.uniform() < above).sum()))
            rows.append([clients.client_id[i], providers.provider_id[p], order, *ratings])
    sessions = pd.DataFrame(
        rows, columns=["client_id", "provider_id", "session_index", "wai_goal", "wai_bond"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    providers.to_csv(folder / "providers.csv", index=False)
    clients.to_csv(folder / "clients.csv", index=False)
    sessions.to_csv(folder / "sessions.csv", index=False)
    return folder


def test_design_reads_every_rated_session(tmp_path):
    study = _simulate_ratings_study(tmp_path / "study")
    spec = load_spec("alliance_ratings")
    data = design_of(spec, study)
    assert isinstance(data, RatingsData)
    assert data.counts.shape == (2, 270 * 6, 5)
    assert (data.counts.sum(axis=-1) == 1).all()
    assert data.countries == ("GB", "IN", "US")
    assert np.allclose(data.covariates.mean(axis=0), 0.0)
    model = family_of(spec).build(spec, data)
    assert {"b_care_logit", "b_session_logit", "sd_country_latent", "sd_provider_latent"} <= {
        rv.name for rv in model.free_RVs
    }
    # the log density is the session-level ordered logistic summed over every rating
    rng = np.random.default_rng(3)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}
    logp = float(model.compile_logp(vars=model.observed_RVs, sum=True)(point))
    disc, kappa = _evaluate(model, point, ["discrimination", "threshold"])
    theta = _latent_of_sessions(model, data, point)
    direct = 0.0
    for s in range(2):
        above = special.expit(disc[s] * (theta[:, None] - kappa[s][None, :]))
        p = np.column_stack([np.ones(len(theta)), above]) - np.column_stack(
            [above, np.zeros(len(theta))]
        )
        direct += float((data.counts[s] * np.log(p)).sum())
    assert logp == pytest.approx(direct, rel=1e-9)


def _evaluate(model, point, names):
    # the parameters as functions of the point's (transformed) values, not fresh random draws
    outs = model.replace_rvs_by_values([model[n] for n in names])
    return model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")(point)


def _latent_of_sessions(model, data, point) -> np.ndarray:
    """theta_n recomputed in numpy from the point (centred standard normals, as the graph), for
    any care types and provider types the frame holds.

    The graph samples on the logit scale of the client effects (a_0, the geometric mean of the
    discriminations); theta is in client SDs: the logit-scale effects divided by a_0. Care
    intercepts are zero at the reference and centred over clients; provider-type shifts are
    centred over providers; provider effects are centred within each provider type.
    """
    names = [
        "b_covariate", "b_care", "sd_country_latent", "z_country", "client_alliance_logit",
        "provider_type_alliance", "sd_provider_latent", "v_provider", "b_session", "discrimination",
    ]  # fmt: skip
    beta, b_care, sd_c, z_c, e_i, delta, sd_p, v_p, lam, disc = _evaluate(model, point, names)
    a0 = np.exp(np.log(disc).mean())
    z_i = e_i * a0 ** (model["client_noncentring"].get_value() - 1.0)
    z_p = v_p * (a0 * sd_p) ** (model["provider_noncentring"].get_value() - 1.0)

    def centred(z):
        return (z - z.mean()) * np.sqrt(len(z) / (len(z) - 1.0))

    frame = data.frame
    care_of_client = frame.clients["care_type"].astype(str).to_numpy()
    care = pd.Series(0.0, index=list(frame.care_types))
    for contrast, b in zip(model.coords["care_contrast"], b_care, strict=True):
        first, ref = contrast.rsplit("-", 1)
        assert ref == frame.care_reference
        care[first] = b
    gamma = care[care_of_client].to_numpy()
    client = data.covariates @ beta + gamma - gamma.mean()
    client = client + (centred(z_c) * sd_c)[data.country_index]
    d = np.column_stack(
        [
            (care_of_client[:, None] == np.array(frame.care_types)[None, :]).astype(float),
            np.eye(len(data.countries))[data.country_index],
            data.covariates,
        ]
    )
    fitted = d @ np.linalg.lstsq(d, z_i, rcond=None)[0]
    client = client + (z_i - fitted) * np.sqrt(len(z_i) / (len(z_i) - np.linalg.matrix_rank(d)))
    kind = frame.providers["provider_type"].astype(str).to_numpy()
    contrasts = model.coords.get("provider_type_contrast", ("therapist-coach",))
    provider = np.zeros(len(kind))
    for contrast, dt in zip(contrasts, np.atleast_1d(delta), strict=True):
        is_t = (kind == contrast.split("-")[0]).astype(float)
        provider += dt * (is_t - is_t.mean())
    zp = z_p.copy()
    for t in set(kind):
        zp[kind == t] = centred(z_p[kind == t]) if (kind == t).sum() > 1 else z_p[kind == t]
    provider = provider + sd_p * zp
    return client[data.session_client] + provider[data.session_provider] + lam * data.session_order


@pytest.mark.mcmc
def test_fit_recovers_planted_care_type_differences(tmp_path):
    study = _simulate_ratings_study(tmp_path / "study")
    fit = ab.fit("alliance_ratings", study, draws=300, tune=300, chains=2, progress=False)
    truth = compute_ratings_estimands(_posterior(sd_provider=SD_PROVIDER), fit.meta["scales"])
    summary = fit.summary()
    for name in ("alliance[therapist-coach]", "alliance[both-coach]"):
        true = float(truth[name].mean())
        low, high = summary.loc[name, ["hdi95_low", "hdi95_high"]]
        assert low < true < high, (name, true, low, high)
    assert summary.loc["alliance[therapist-coach]", "hdi95_low"] > 0
    assert summary.loc["alliance[both-coach]", "hdi95_high"] < 0
    table = fit.hypotheses()
    assert set(table["hypothesis"]) == set(fit.spec.hypotheses.tests)
    decided = table.set_index("hypothesis")["decision"]
    assert decided["alliance[therapist-coach] = 0"] == "different"
    bundle = fit.save(tmp_path / "results", figure_formats=("png",))
    estimands = pd.read_csv(bundle / "estimands.csv")
    assert "alliance[coach]" in set(estimands["estimand"])
    assert (bundle / "report.md").is_file()


def test_split_discrimination_prior_is_the_iid_lognormal(tmp_path):
    """The graph's prior of log alpha (scale plus zero-sum ratios) is iid N(0, s^2) per item."""
    from alliance_bayes.model.ratings.graph import PRIORS, zero_sum_basis

    for n in (2, 3, 4):
        h = zero_sum_basis(n)
        assert np.allclose(h.T @ h, np.eye(n - 1)) and np.allclose(h.sum(axis=0), 0.0)
    study = _simulate_ratings_study(tmp_path / "study")
    model = family_of(load_spec("alliance_ratings")).build(
        load_spec("alliance_ratings"), design_of(load_spec("alliance_ratings"), study)
    )
    import pymc as pm

    draws = np.log(pm.draw(model["discrimination"], draws=20_000, random_seed=5))
    s = PRIORS["discrimination_sd"]
    cov = np.cov(draws.T)
    # each entry's Monte Carlo SE is about s^2 sqrt(2 / n) (variances) or s^2 / sqrt(n)
    assert np.allclose(cov, s**2 * np.eye(draws.shape[1]), atol=5 * s**2 * np.sqrt(2 / 20_000))
    assert np.allclose(draws.mean(axis=0), 0.0, atol=5 * s / np.sqrt(20_000))


def test_noncentring_weights_follow_the_one_way_anova_by_hand():
    """Three clients rated (5, 4), (3, 2), (4, 4): within variance 1/3, caseload-mean variance
    13/12 minus its sampling part 1/6, so r = 11/4 and w = 1 / (1 + 2 r) = 2/13 for each."""
    from types import SimpleNamespace

    from alliance_bayes.model.ratings.graph import client_noncentring

    ratings = np.array([5, 4, 3, 2, 4, 4])
    data = SimpleNamespace(
        counts=np.eye(5, dtype=np.int64)[ratings - 1][None],  # (item, session, category)
        session_client=np.array([0, 0, 1, 1, 2, 2]),
        n_clients=3,
    )
    assert np.allclose(client_noncentring(data), 2.0 / 13.0)
    # no between-client variance beyond sampling: fully non-centred
    data.counts = np.eye(5, dtype=np.int64)[np.array([5, 4, 4, 5, 5, 4]) - 1][None]
    assert np.allclose(client_noncentring(data), 1.0)
