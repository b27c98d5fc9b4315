"""The verbs of a fitted model (ranef, prior_summary, loo, predict, conditional_effects, pp_check,
psense, update), the gate's repr and the bundle version check, on hand-made posteriors.

Planted truths: provider effects summarised by hand; a posterior whose every parameter is fixed,
so that the predictive SD of a new client is σ at a known provider and √(σ² + σᵤ²) at a new one;
the provider-clustered SE of LOO from its formula.
"""

from __future__ import annotations

import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import alliance_bayes as ab
from alliance_bayes import fit_verbs
from alliance_bayes.data.simulate import SimulationConfig, simulate_study, write_simulated_study
from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.fitting import design_of, fit_design, settings_for
from alliance_bayes.result import Fit
from alliance_bayes.spec import load_spec
from alliance_bayes.storage import read_datatree, write_datatree
from fake_posterior import make_fake_datatree

SEED = 20261207


def _hdi_by_hand(x: np.ndarray, prob: float = 0.95) -> tuple[float, float]:
    """The shortest interval holding ⌊prob·n⌋ + 1 sorted draws."""
    x = np.sort(x)
    k = int(np.floor(prob * len(x)))
    widths = x[k:] - x[: len(x) - k]
    i = int(np.argmin(widths))
    return x[i], x[i + k]


def test_ranef_is_one_row_per_provider_with_the_posterior_summaries():
    dt = make_fake_datatree(draws=300, n_providers=7, seed=1)
    table = fit_verbs.ranef(dt)
    assert list(table.columns) == [
        "provider",
        "provider_type",
        "term",
        "mean",
        "sd",
        "hdi95_low",
        "hdi95_high",
        "prob_positive",
    ]
    u = dt["posterior"]["u_provider"]
    assert table["provider"].tolist() == [str(p) for p in u["provider"].values]
    assert (table["term"] == "intercept").all()
    assert table["provider_type"].tolist() == [("therapist", "coach")[i % 2] for i in range(7)]
    for row, p in zip(table.itertuples(), u["provider"].values, strict=True):
        x = u.sel(provider=p).values.ravel()
        assert row.mean == pytest.approx(x.mean(), rel=1e-12)
        assert row.sd == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert row.prob_positive == pytest.approx((x > 0).mean())
        assert (row.hdi95_low, row.hdi95_high) == pytest.approx(_hdi_by_hand(x), abs=1e-9)


def test_ranef_of_slopes_has_a_term_per_subscale_and_refuses_a_pooled_model():
    dt = make_fake_datatree(draws=50, n_providers=3)
    post = dt["posterior"].to_dataset()
    slope = xr.DataArray(
        np.random.default_rng(2).normal(size=(4, 50, 3, 2)),
        dims=("chain", "draw", "provider", "subscale"),
        coords={"provider": post["provider"].values, "subscale": ["goal", "bond"]},
    )
    tree = {n: node.to_dataset() for n, node in dt.children.items()}
    tree["posterior"] = post.assign(u_provider_slope=slope)
    table = fit_verbs.ranef(xr.DataTree.from_dict(tree))
    assert table.groupby("term").size().to_dict() == {
        "intercept": 3,
        "slope[goal]": 3,
        "slope[bond]": 3,
    }
    got = table.query("term == 'slope[bond]' and provider == 'p01'")["mean"].item()
    assert got == pytest.approx(slope.sel(provider="p01", subscale="bond").values.mean())
    with pytest.raises(ValueError, match="no provider effects"):
        fit_verbs.ranef(make_fake_datatree(draws=20, hierarchical=False))


def test_prior_summary_lists_every_prior_of_the_spec():
    values = {
        "intercept_sd": 17.3,
        "b_baseline_sd": 1.7,
        "b_covariate_sd": 5.3,
        "b_care_sd": 11.3,
        "mu_b_sd": 9.7,
        "sd_b_sd": 2.3,
        "sd_provider_sd": 4.3,
        "sd_provider_slope_sd": 1.3,
        "lkj_eta": 2.7,
        "sigma_sd": 21.7,
    }
    spec = load_spec("who5_change", priors=values)
    table = fit_verbs.prior_summary(spec, {"outcome_mean": 50.0})
    assert list(table.columns) == ["parameter", "distribution", "on_data_scale", "justification"]
    text = " ".join(table["distribution"])
    for name, v in values.items():
        assert f"{v:g}" in text, name
    # Student-t adds its degrees of freedom; the composite model its one slope.
    student = fit_verbs.prior_summary(load_spec("who5_change_student_t"))
    assert len(student) == len(fit_verbs.prior_summary(load_spec("who5_change"))) + 1
    composite = fit_verbs.prior_summary(load_spec("paper_table2", priors={"b_alliance_sd": 7.3}))
    assert "7.3" in " ".join(composite["distribution"])


def test_loo_gives_elpd_its_se_and_the_se_over_provider_clusters():
    import arviz_stats as azs

    dt = make_fake_datatree(draws=200, n_clients=30, seed=3)
    clients = [str(c) for c in dt["log_likelihood"]["client"].values]
    provider_of = {c: f"P{i % 4}" for i, c in enumerate(clients)}
    res = fit_verbs.loo(dt, provider_of)
    ref = azs.loo(dt, var_name="y", pointwise=True)
    assert res.elpd == pytest.approx(float(ref.elpd)) and res.se == pytest.approx(float(ref.se))
    x = np.asarray(res.elpd_data.elpd_i.values, float)
    totals = np.array([(x - x.mean())[np.arange(30) % 4 == g].sum() for g in range(4)])
    assert res.se_provider == pytest.approx(np.sqrt(4 / 3 * np.sum(totals**2)), rel=1e-12)
    assert (res.n_clients, res.n_providers) == (30, 4)
    assert "elpd_loo" in repr(res) and "4 provider clusters" in repr(res)
    unclustered = fit_verbs.loo(dt)
    assert np.isnan(unclustered.se_provider) and "study=" in unclustered.note
    assert "provider clusters" not in repr(unclustered).splitlines()[0]


def test_gate_repr_is_readable_and_states_the_tail_ess_convention():
    gate = check_convergence(make_fake_datatree(draws=400, seed=4))
    text = repr(gate)
    assert text.splitlines()[0].startswith(gate.headline())
    for name in ("r_hat", "ess_bulk", "ess_tail", "divergences", "e_bfmi", "treedepth"):
        assert f"  {name} " in text
    assert "5% and 95%" in text and "11% and 89%" in text and str(gate) == text
    assert "GateResult(" not in text


def test_bundle_of_another_major_minor_version_is_refused(tmp_path):
    for name in ("posterior.nc", "diagnostics.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "run.json").write_text(json.dumps({"packages": {"alliance-bayes": "9.3.0"}}))
    with pytest.raises(fit_verbs.IncompatibleBundleError, match=r"9\.3\.0.*" + ab.__version__):
        Fit.load(tmp_path)
    major, minor = ab.__version__.split(".")[:2]
    fit_verbs.check_bundle_version({"packages": {"alliance-bayes": f"{major}.{minor}.99"}})
    fit_verbs.check_bundle_version({"packages": {"alliance-bayes": "not installed"}})
    fit_verbs.check_bundle_version({})
    with pytest.raises(fit_verbs.IncompatibleBundleError, match=r"same major\.minor"):
        fit_verbs.check_bundle_version(
            {"packages": {"alliance-bayes": f"{major}.{int(minor) + 1}.0"}}
        )


def test_psense_uses_every_draw_in_memory_and_says_so_on_a_thinned_bundle(tmp_path):
    dt = make_fake_datatree(draws=500, seed=5)
    estimands = dt["posterior"].to_dataset()[["sigma", "b_baseline"]]
    full = fit_verbs.psense(dt, estimands)
    assert full.attrs["note"] == "" and set(full.index) == {"sigma", "b_baseline"}
    write_datatree(dt, tmp_path / "posterior.nc", compact=True)
    assert dt["log_likelihood"].sizes["draw"] == 500  # thinning only in the saved file
    saved = read_datatree(tmp_path / "posterior.nc")
    assert saved["log_likelihood"].sizes["draw"] == 250
    with pytest.warns(fit_verbs.ThinnedLikelihoodWarning, match="one draw in 2"):
        thinned = fit_verbs.psense(saved, saved["posterior"].to_dataset()[["sigma"]])
    assert "250 per chain" in thinned.attrs["note"]
    subset = {n: node.to_dataset() for n, node in dt.children.items()}
    subset["log_likelihood"] = subset["log_likelihood"].assign_attrs(clients_of=90, clients_kept=40)
    with pytest.raises(ValueError, match="40 of 90 clients"):
        fit_verbs.psense(xr.DataTree.from_dict(subset), estimands)


@pytest.mark.parametrize("kind", ["kde", "ecdf", "pit", "tstat", "loo_pit"])
def test_pp_check_draws_each_kind_with_arviz_plots(kind):
    dt = make_fake_datatree(chains=2, draws=100, n_clients=25, seed=6)
    pc = fit_verbs.pp_check(dt, kind)
    assert pc is not None
    plt.close("all")
    with pytest.raises(ValueError, match="kind must be one of"):
        fit_verbs.pp_check(dt, "violin")


# --------------------------------------------------------------------------------------------------
# Posterior predictive for new clients


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    config = SimulationConfig.small(
        n_coach_clients=40, n_therapist_clients=14, n_both_clients=12, n_therapists=3, n_coaches=6
    )
    folder = tmp_path_factory.mktemp("verbs")
    write_simulated_study(simulate_study(config, seed=SEED), folder)
    spec = replace(load_spec("who5_intercepts"), likelihood="normal")
    return spec, design_of(spec, folder)


SIGMA, SD_COACH, SD_THERAPIST, ALPHA = 5.0, 4.0, 2.0, 50.0


def _fixed_posterior(data, draws: int = 8000) -> xr.Dataset:
    """Every parameter fixed: alliance, baseline, covariates and care type do nothing."""
    providers = data.frame.providers["provider"].astype(str).tolist()
    const = lambda value, *shape: np.full((1, draws, *shape), value, float)  # noqa: E731
    u = np.arange(len(providers), dtype=float) - 3.0
    return xr.Dataset(
        {
            "alpha": (("chain", "draw"), const(ALPHA)),
            "b_baseline": (("chain", "draw"), const(0.0)),
            "b_covariate_z": (("chain", "draw", "covariate"), const(0.0, 3)),
            "b_care": (("chain", "draw", "care_contrast"), const(0.0, 2)),
            "b": (
                ("chain", "draw", "care_type", "subscale", "level"),
                const(0.0, 3, len(data.subscales), 2),
            ),
            "sd_provider": (
                ("chain", "draw", "provider_type"),
                np.broadcast_to([SD_THERAPIST, SD_COACH], (1, draws, 2)).copy(),
            ),
            "u_provider": (("chain", "draw", "provider"), np.broadcast_to(u, (1, draws, len(u)))),
            "sigma": (("chain", "draw"), const(SIGMA)),
        },
        coords={
            "provider": providers,
            "provider_type": ["therapist", "coach"],
            "care_type": ["therapist", "coach", "both"],
            "subscale": list(data.subscales),
            "level": ["within", "between"],
        },
    )


def _new_clients(data, providers, types):
    row = {"who5_baseline": 32.0, "age": 40.0, "male": 0.0, "days_in_care": 90.0}
    row |= {f"alliance_{s}": 4.0 for s in data.subscales}
    rows = [
        {**row, "provider": p, "provider_type": t} for p, t in zip(providers, types, strict=True)
    ]
    return pd.DataFrame(rows)


def test_predict_new_provider_adds_its_types_sd_to_the_predictive(design):
    spec, data = design
    posterior = _fixed_posterior(data)
    frame = data.frame.providers
    coach = str(frame.loc[frame["provider_type"].astype(str) == "coach", "provider"].iloc[0])
    u_coach = float(posterior["u_provider"].sel(provider=coach)[0, 0])
    new = _new_clients(data, [coach, "NEW1", "NEW2"], ["coach", "coach", "therapist"])
    out = fit_verbs.predict(spec, posterior, data, new, seed=1)
    assert out.loc[0, "mean"] == pytest.approx(ALPHA + u_coach, abs=0.2)
    assert out.loc[0, "sd"] == pytest.approx(SIGMA, rel=0.04)
    assert out.loc[1, "mean"] == pytest.approx(ALPHA, abs=0.25)
    assert out.loc[1, "sd"] == pytest.approx(np.hypot(SIGMA, SD_COACH), rel=0.04)
    assert out.loc[2, "sd"] == pytest.approx(np.hypot(SIGMA, SD_THERAPIST), rel=0.04)
    assert out.loc[1, "sd"] > out.loc[0, "sd"]
    draws = fit_verbs.predict(spec, posterior, data, new, summary=False, ndraws=500)
    assert draws.shape == (500, 3)


def test_predict_shares_a_new_providers_effect_between_its_clients(design):
    spec, data = design
    new = _new_clients(data, ["NEW", "NEW"], ["coach", "coach"])
    draws = fit_verbs.predict(spec, _fixed_posterior(data), data, new, summary=False).values
    # Cov(y1, y2) = σᵤ² for two clients of one new provider.
    assert np.cov(draws.T)[0, 1] == pytest.approx(SD_COACH**2, rel=0.12)


def test_predict_refuses_a_new_provider_without_type_and_other_families(design):
    spec, data = design
    new = _new_clients(data, ["NEW"], ["coach"]).drop(columns="provider_type")
    with pytest.raises(ab.DesignError, match="provider_type"):
        fit_verbs.predict(spec, _fixed_posterior(data), data, new)
    with pytest.raises(ab.DesignError, match="lacks column"):
        fit_verbs.predict(spec, _fixed_posterior(data), data, new.drop(columns="age"))
    latent = load_spec("alliance_latent")
    with pytest.raises(fit_verbs.PredictionNotImplemented, match="latent"):
        fit_verbs.predict(latent, _fixed_posterior(data), data, new)
    with pytest.raises(fit_verbs.PredictionNotImplemented, match="latent"):
        fit_verbs.conditional_effects(latent, _fixed_posterior(data), {})


def test_conditional_effects_is_tidy_and_flat_when_nothing_moves(design):
    spec, data = design
    meta = {"scales": data.scales(), "spec_as_run": spec.to_dict()}
    ce = fit_verbs.conditional_effects(spec, _fixed_posterior(data, draws=200), meta, n_grid=5)
    assert list(ce.columns) == ["predictor", "care_type", "value", "estimate", "lower", "upper"]
    assert set(ce["predictor"]) == set(data.subscales)
    np.testing.assert_allclose(ce["estimate"], ALPHA)
    goal = fit_verbs.conditional_effects(
        spec, _fixed_posterior(data, draws=200), meta, "goal", n_grid=5
    )
    assert goal.equals(ce[ce["predictor"] == "goal"].reset_index(drop=True))
    named = fit_verbs.conditional_effects(
        spec, _fixed_posterior(data, draws=200), meta, ["alliance_goal", "goal"], n_grid=5
    )
    assert named.equals(goal)
    with pytest.raises(ValueError, match=r"no conditional effect for 'alliance_gaol'.*'goal'"):
        fit_verbs.conditional_effects(spec, _fixed_posterior(data), meta, "alliance_gaol")
    with pytest.raises(TypeError, match=r"give a probability by name, prob=0.9"):
        fit_verbs.conditional_effects(spec, _fixed_posterior(data), meta, 0.9)
    with pytest.raises(ValueError, match="prob must be a probability"):
        fit_verbs.conditional_effects(spec, _fixed_posterior(data), meta, prob=95)


@pytest.mark.mcmc
def test_update_refits_through_the_pipeline_with_new_settings(design):
    spec, data = design
    settings = {"draws": 100, "tune": 100, "chains": 1}
    pooled = replace(spec, hierarchy=replace(spec.hierarchy, provider_intercepts=False))
    fit = fit_design(pooled, data, settings_for(pooled, progress=False, seed=1, **settings))
    again = fit.update(seed=2, draws=60)
    assert (again.meta["seed"], again.meta["draws"], again.meta["chains"]) == (2, 60, 1)
    assert again.datatree["posterior"].sizes["draw"] == 60
    assert again.spec.to_dict() == fit.spec.to_dict()
    wider = fit.update(priors={"sigma_sd": 7.0})
    assert wider.spec.priors.sigma_sd == 7.0
    with pytest.raises(ValueError, match="give study="):
        fit.update(data={"sample": "elevated"})


def test_fit_methods_delegate_to_the_verbs(design):
    spec, data = design
    posterior = _fixed_posterior(data, draws=400)
    dt = xr.DataTree.from_dict({"posterior": posterior})
    meta = {"scales": data.scales(), "spec_as_run": spec.to_dict(), "data_sha256": "x"}
    fit = Fit(spec, dt, xr.Dataset(), check_convergence(dt), meta, design=data)
    new = _new_clients(data, ["NEW"], ["coach"])
    assert fit.predict(new, seed=3).equals(fit_verbs.predict(spec, posterior, data, new, seed=3))
    assert fit.ranef().equals(fit_verbs.ranef(dt))
    assert fit.prior_summary().equals(fit_verbs.prior_summary(spec, meta["scales"]))
    assert len(fit.conditional_effects(n_grid=3)) == 3 * len(data.subscales) * len(
        data.scales()["care_types"]
    )
    assert set(fit.conditional_effects("bond", n_grid=3)["predictor"]) == {"bond"}
    loaded = replace(fit, design=None)
    with pytest.raises(ValueError, match="give study="):
        loaded.predict(new)
