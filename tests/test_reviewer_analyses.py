"""The reviewer's sensitivity analyses: early alliance, imputation with a δ shift, the robustness
table and conditional predictions (NumPy and hand-made posteriors; no MCMC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.checks.robustness import conclusions, robustness_markdown, variants
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.imputation import pool_datatrees
from alliance_bayes.model.regression.design import CARE_TYPES, LEVELS
from alliance_bayes.model.regression.figures import conditional_predictions, expected_observed
from alliance_bayes.model.regression.predict import (
    complete_cases,
    impute_designs,
    linear_predictor,
    subset_data,
)
from alliance_bayes.spec import load_spec
from fake_posterior import make_fake_datatree


def test_early_alliance_averages_the_first_sessions_and_keeps_every_session_in_the_memberships(
    shipped_study,
):
    every = build_frame(shipped_study)
    first = build_frame(shipped_study, alliance_sessions=1)
    ses = every.sessions
    session_one = ses[ses["session_index"] == 1].set_index("client_index")["wai_goal"].astype(float)
    np.testing.assert_allclose(
        first.clients["alliance_goal"].to_numpy(), session_one.sort_index().to_numpy()
    )
    pd.testing.assert_frame_equal(first.memberships, every.memberships)
    late = build_frame(shipped_study, alliance_sessions=10_000)
    pd.testing.assert_frame_equal(late.clients, every.clients)
    three = build_frame(shipped_study, alliance_sessions=3)
    # Averaged over fewer sessions, client scores spread more.
    assert three.clients["alliance_goal"].std() > every.clients["alliance_goal"].std()


def _posterior(data, *, sigma: float, drop_providers: int = 0, seed: int = 0) -> xr.Dataset:
    """One chain of 4 draws with the names the regression family's NumPy twin reads."""
    rng = np.random.default_rng(seed)
    n_s, n_p = len(data.subscales), len(data.provider_type_index)
    keep = slice(drop_providers, None)
    providers = data.frame.providers["provider"].tolist()[keep]
    d = ("chain", "draw")

    def draws(*shape):
        return rng.normal(0, 1, size=(1, 4, *shape))

    return xr.Dataset(
        {
            "alpha": (d, 40 + draws()),
            "b_baseline": (d, 0.6 + 0.01 * draws()),
            "b_covariate_z": ((*d, "covariate"), draws(data.covariates.shape[1])),
            "b_care": ((*d, "care_contrast"), 2 * draws(2)),
            "b": ((*d, "care_type", "subscale", "level"), 3 + draws(3, n_s, 2)),
            "u_provider": ((*d, "provider"), 2 * draws(n_p)[..., keep]),
            "u_provider_slope": ((*d, "provider", "subscale"), draws(n_p, n_s)[:, :, keep]),
            "sd_provider": ((*d, "provider_type"), np.full((1, 4, 2), 1e-9)),
            "sd_provider_slope": ((*d, "subscale"), np.full((1, 4, n_s), 1e-9)),
            "sigma": (d, np.full((1, 4), sigma)),
        },
        coords={"provider": providers},
    )


@pytest.fixture(scope="module")
def imputed_design(small_study_dir):
    spec = load_spec("who5_change", data={"followup_imputations": 2})
    return spec, design_of(spec, load_study(small_study_dir))


def test_imputed_follow_ups_are_predictions_shifted_by_delta(imputed_design):
    spec, data = imputed_design
    missing = ~np.isfinite(data.y)
    assert missing.sum() == data.exclusions["imputed_who5_followup"] > 0
    cc = complete_cases(data)
    assert cc.n_clients == (~missing).sum() and cc.baseline_mean == data.baseline_mean
    post = _posterior(cc, sigma=1e-6)
    plain = impute_designs(spec, data, post, n=2, delta=0.0, seed=1)
    shifted = impute_designs(spec, data, post, n=2, delta=-10.0, seed=1)
    assert len(plain) == 2
    sub = subset_data(data, missing)
    where = {str(p): i for i, p in enumerate(post["provider"].values)}
    labels = sub.frame.providers["provider"].astype(str).tolist()
    idx, w = sub.membership_index, sub.membership_weight
    within = sub.alliance[:, :, 0]
    for m, (a, b) in enumerate(zip(plain, shifted, strict=True)):
        np.testing.assert_array_equal(a.y[~missing], data.y[~missing])  # observed untouched
        assert np.isfinite(a.y).all() and ((a.y >= 0) & (a.y <= 100)).all()
        # Imputation m uses one draw, spread over the posterior: the first, then the last.
        draw = post.isel(draw=[0 if m == 0 else 3])
        u0 = np.array(
            [draw["u_provider"].values[0, 0, where[x]] if x in where else 0.0 for x in labels]
        )
        us = np.array(
            [
                draw["u_provider_slope"].values[0, 0, where[x]] if x in where else 0.0 * within[0]
                for x in labels
            ]
        )
        provider_part = (w * (u0[idx] + (us[idx] * within[:, None, :]).sum(-1))).sum(axis=1)
        expected = np.clip(linear_predictor(spec, sub, draw)[0] + provider_part, 0, 100)
        np.testing.assert_allclose(a.y[missing], expected, atol=1e-4)  # σ ≈ 0: the prediction
        room = a.y[missing] > 10  # not pushed to the floor by the shift
        np.testing.assert_allclose((b.y - a.y)[missing][room], -10.0, atol=1e-9)
        np.testing.assert_allclose(b.y[missing][~room], 0.0)


def test_the_alliance_dependent_shift_follows_the_clients_alliance(imputed_design):
    spec, data = imputed_design
    missing = ~np.isfinite(data.y)
    post = _posterior(complete_cases(data), sigma=1e-6)
    plain = impute_designs(spec, data, post, n=1, delta=0.0, seed=1)[0]
    tilted = impute_designs(spec, data, post, n=1, delta=-5.0, delta_alliance=4.0, seed=1)[0]
    # δ_i = δ₀ + δ₁ (a_i − ā), with ā the mean composite alliance of the model's clients.
    a = data.frame.clients["alliance"].to_numpy(float)  # the design's clients, in its order
    assert len(a) == len(data.y)
    want = -5.0 + 4.0 * (a - a.mean())
    room = (plain.y[missing] + want[missing] > 0) & (plain.y[missing] + want[missing] < 100)
    assert room.mean() > 0.8
    np.testing.assert_allclose((tilted.y - plain.y)[missing][room], want[missing][room], atol=1e-6)
    assert np.ptp(want[missing]) > 1.0  # the shift really varies across clients


def test_providers_unseen_by_the_complete_case_fit_get_population_draws(imputed_design):
    spec, data = imputed_design
    post = _posterior(complete_cases(data), sigma=1e-6, drop_providers=3)
    out = impute_designs(spec, data, post, n=1, seed=2)[0]
    assert np.isfinite(out.y).all()
    with pytest.raises(ValueError, match="no missing outcome"):
        impute_designs(spec, complete_cases(data), post, n=1)


def test_pooled_draws_concatenate_chains_and_keep_the_prior():
    trees = [make_fake_datatree(chains=2, draws=50, seed=s) for s in (1, 2)]
    pooled = pool_datatrees(trees)
    assert pooled["posterior"].sizes["chain"] == 4
    assert pooled["posterior"]["chain"].values.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(
        pooled["posterior"]["sigma"].values[2:], trees[1]["posterior"]["sigma"].values
    )
    assert "prior" in pooled.children and "log_likelihood" not in pooled.children


def test_the_shipped_reviewer_specs_are_the_variants_the_check_fits():
    for _, spec in variants("who5_change")[1:]:
        shipped = load_spec(spec.name).to_dict()
        derived = spec.to_dict()
        for key in ("description",):
            shipped.pop(key), derived.pop(key)
        assert shipped == derived, spec.name


def test_conclusions_say_which_analyses_change_a_verdict():
    rows = []
    for analysis, goal, bond in (("main", (1.0, 0.2, 1.8), (0.5, -0.3, 1.3)),
                                 ("early", (0.8, 0.1, 1.5), (0.9, 0.1, 1.7)),
                                 ("δ = -10", (0.6, 0.05, 1.2), (0.2, -0.5, 0.9))):  # fmt: skip
        for name, (m, lo, hi) in (("b_goal_within", goal), ("b_bond_within", bond)):
            rows.append(
                {"analysis": analysis, "estimand": name, "mean": m, "hdi95_low": lo,
                 "hdi95_high": hi, "prob_positive": 0.9, "n_clients": 100, "gate": "passed"}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    said = conclusions(table)
    assert said[0].startswith("`b_goal_within`: robust") and "all 3 analyses" in said[0]
    assert said[1].startswith("`b_bond_within`: not robust") and "early" in said[1]
    text = robustness_markdown(table, "who5_change")
    assert "base `who5_change`" in text and "**Conclusion: 1 of 2 key estimands" in text


def test_expected_observed_is_the_mean_of_the_clipped_normal():
    rng = np.random.default_rng(0)
    for mu, sigma in ((-5.0, 10.0), (50.0, 20.0), (97.0, 8.0)):
        clipped = np.clip(rng.normal(mu, sigma, 400_000), 0, 100)
        got = expected_observed(np.array(mu), np.array(sigma), (0, 100))
        assert got == pytest.approx(clipped.mean(), abs=4 * clipped.std() / np.sqrt(clipped.size))
    assert expected_observed(np.array(3.0), np.array(1.0), None) == 3.0


def test_conditional_predictions_are_the_model_at_the_sample_means():
    post = make_fake_datatree(draws=50, seed=5)["posterior"].to_dataset()
    post["alpha"] = post["intercept"]
    scales = {
        "outcome_sd": 20.0, "baseline_mean": 40.0, "between_mean": {"goal": 4.0, "bond": 4.5},
        "alliance_range": {"goal": [1.0, 5.0], "bond": [2.0, 5.0]}, "care_types": list(CARE_TYPES),
    }  # fmt: skip
    meta = {"scales": scales, "spec_as_run": {"likelihood": "normal"}}
    preds = conditional_predictions(post, meta, n_grid=5)
    assert set(preds) == {"goal", "bond"}
    grid = preds["goal"]["grid"]
    assert grid.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    alpha = post["alpha"].values.ravel()
    therapist_gap = post["b_care"].sel(care_contrast="therapist-coach").values.ravel()
    slope = post["b"].sel(care_type="therapist", subscale="goal", level=LEVELS[0]).values.ravel()
    # At a score equal to the mean provider mean, the within part is 0: the intercepts remain.
    np.testing.assert_allclose(preds["goal"]["curves"]["coach"][:, 3], alpha)
    np.testing.assert_allclose(preds["goal"]["curves"]["therapist"][:, 3], alpha + therapist_gap)
    np.testing.assert_allclose(
        preds["goal"]["curves"]["therapist"][:, 4] - preds["goal"]["curves"]["therapist"][:, 3],
        slope,
    )
    assert conditional_predictions(post, {}) == {}


def test_rubins_rules_combine_within_and_between_imputation_variance():
    from alliance_bayes.imputation import rubin_summary

    rng = np.random.default_rng(9)
    refits = []
    for centre in (1.0, 2.0, 3.0):
        z = rng.standard_normal(200_000)
        z = (z - z.mean()) / z.std(ddof=1)  # exactly mean 0, variance 1
        refits.append(xr.Dataset({"b": (("chain", "draw"), (centre + z).reshape(4, -1))}))
    row = rubin_summary(refits).set_index("estimand").loc["b"]
    within, between, m = 1.0, 1.0, 3
    total = within + (1 + 1 / m) * between
    df = (m - 1) * (1 + within / ((1 + 1 / m) * between)) ** 2
    assert row["mean"] == pytest.approx(2.0)
    assert row["sd"] == pytest.approx(np.sqrt(total)) and row["df"] == pytest.approx(df)
    assert row["ci95_high"] - 2.0 == pytest.approx(stats.t.ppf(0.975, df) * np.sqrt(total))
    assert row["fmi"] == pytest.approx((4 / 3) / total)


def test_a_fit_is_reused_only_for_the_same_design_arrays(imputed_design):
    """The complete cases of an imputed design are the main design's clients, centred otherwise:
    they must not share its cached fit; a renamed copy of the same model must."""
    from alliance_bayes.fitting import _cache_path, settings_for

    spec, data = imputed_design
    base = load_spec("who5_change")
    main = design_of(base, data.frame)
    settings = settings_for(base)
    cc = complete_cases(data)
    assert cc.n_clients == main.n_clients and (cc.y == main.y).all()
    assert _cache_path("c", base, cc, settings) != _cache_path("c", base, main, settings)
    renamed = load_spec("who5_change", name="renamed", description="another name")
    assert _cache_path("c", renamed, main, settings) == _cache_path("c", base, main, settings)
    imputed = impute_designs(spec, data, _posterior(cc, sigma=1.0), n=2, seed=3)
    assert _cache_path("c", base, imputed[0], settings) != _cache_path(
        "c", base, imputed[1], settings
    )
