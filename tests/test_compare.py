"""Model comparison: per-client log-likelihood, LOO table, provider folds, held-out density."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.checks import compare as cmp
from alliance_bayes.model.regression import predict
from alliance_bayes.spec import load_spec


def _tree(loglik: dict[str, xr.DataArray]) -> xr.DataTree:
    return xr.DataTree.from_dict({"log_likelihood": xr.Dataset(loglik)})


def _fake_fit(seed: int, n: int = 30, shift: float = 0.0, chains: int = 2, draws: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    mu = rng.normal(shift, 0.1, size=(chains, draws, 1))
    ll = stats.norm.logpdf(y[None, None], loc=mu, scale=1.0)
    clients = [f"C{i:05d}" for i in range(n)]
    da = xr.DataArray(ll, dims=("chain", "draw", "client"), coords={"client": clients})
    post = xr.Dataset({"mu": xr.DataArray(mu[..., 0], dims=("chain", "draw"))})
    return xr.DataTree.from_dict({"posterior": post, "log_likelihood": xr.Dataset({"y": da})})


def test_client_log_likelihood_sums_outcomes_per_client():
    who5 = xr.DataArray(
        np.ones((1, 2, 3)), dims=("chain", "draw", "client"), coords={"client": ["a", "b", "c"]}
    )
    phq9 = xr.DataArray(
        np.full((1, 2, 2), 2.0),
        dims=("chain", "draw", "client_phq9"),
        coords={"client_phq9": ["c", "a"]},
    )
    # the latent model's rating summary has no client dimension: conditioned on, not scored
    ratings = xr.DataArray(
        np.full((1, 2, 2, 5), -7.0), dims=("chain", "draw", "subscale", "category")
    )
    out = cmp.client_log_likelihood(_tree({"y_who5": who5, "y_phq9": phq9, "ratings": ratings}))
    total = out["log_likelihood"][cmp.CLIENT_VAR].sel(client=["a", "b", "c"])
    np.testing.assert_allclose(total.isel(chain=0, draw=0).values, [3.0, 1.0, 3.0])
    assert list(out["log_likelihood"].data_vars) == [cmp.CLIENT_VAR]
    assert out["log_likelihood"].attrs["conditioned_on"] == "ratings"


def test_loo_table_formats_and_ranks():
    fits = {"good": _fake_fit(1), "bad": _fake_fit(1, shift=1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cmp.ParetoKWarning)
        loo = cmp.loo_models(fits)
    table = cmp.comparison_table(loo)
    assert table.index[0] == "good" and table.loc["good", "elpd_diff"] == 0.0
    assert table.loc["bad", "elpd_diff"] < 0
    assert table["weight"].sum() == pytest.approx(1.0)
    assert {"k_good", "k_high", "k_very_high"} <= set(table.columns)
    md = cmp.table_markdown(table)
    assert "| `good` |" in md and "Δelpd" in md
    tex = cmp.table_latex(table, caption="A_b")
    assert r"\texttt{good}" in tex and r"\toprule" in tex and r"A\_b" in tex


def test_loo_refuses_different_clients():
    with pytest.raises(ValueError, match="same clients"):
        cmp.loo_models({"a": _fake_fit(1, n=30), "b": _fake_fit(1, n=31)})


def test_pareto_k_warning():
    fit = _fake_fit(2)
    ll = fit["log_likelihood"]["y"].values.copy()
    # One wild client: importance ratios exp(-log_lik) with a very heavy right tail.
    ll[..., 0] = -np.exp(2 * np.random.default_rng(0).normal(size=ll.shape[:2]))
    fit["log_likelihood"] = xr.Dataset({"y": fit["log_likelihood"]["y"].copy(data=ll)})
    with pytest.warns(cmp.ParetoKWarning, match="Pareto k"):
        cmp.loo_models({"wild": fit})


def test_provider_folds_keep_main_provider_together():
    # 6 providers; client 3 saw providers 1 (30%) and 4 (70%): main provider 4.
    index = np.array([[0, 0], [1, 0], [2, 0], [1, 4], [3, 0], [5, 0], [4, 0], [2, 5]])
    weight = np.array(
        [[1, 0], [1, 0], [1, 0], [0.3, 0.7], [1, 0], [1, 0], [1, 0], [0.5, 0.5]], float
    )
    main = cmp.main_provider(index, weight)
    np.testing.assert_array_equal(main, [0, 1, 2, 4, 3, 5, 4, 2])  # tie → first slot
    client_fold, provider_fold = cmp.provider_folds(index, weight, 6, k=3, seed=1)
    np.testing.assert_array_equal(client_fold, provider_fold[main])
    assert set(client_fold) == {0, 1, 2}
    again, _ = cmp.provider_folds(index, weight, 6, k=3, seed=1)
    np.testing.assert_array_equal(client_fold, again)
    with pytest.raises(ValueError, match="fewer than k"):
        cmp.provider_folds(index, weight, 6, k=7)


class _Frame:
    """The parts of an analysis frame the NumPy predictor reads: the contract's care types."""

    care_types = ("therapist", "coach", "both")
    care_reference = "coach"

    def __init__(self, providers):
        import pandas as pd

        self.providers = pd.DataFrame({"provider": providers})


def _tiny_case(slopes: bool):
    """Two held-out clients, one new and one known provider; hand-made posterior of 3 draws."""
    spec = load_spec("who5_change" if slopes else "who5_intercepts")
    data = predict.ModelData(
        frame=_Frame(["Pnew", "Pold"]),
        y=np.array([50.0, 40.0]),
        baseline=np.array([30.0, 20.0]),
        baseline_mean=25.0,
        covariates=np.array([[1.0, 0.0, -2.0], [0.0, 1.0, 3.0]]),
        covariate_names=("age", "male", "days_in_care"),
        covariate_means=np.zeros(3),
        covariate_sds=np.ones(3),
        care_index=np.array([2, 1]),
        subscales=("goal", "bond"),
        alliance=np.array([[[0.5, 0.2], [-0.3, 0.1]], [[0.1, -0.2], [0.4, 0.3]]]),
        alliance_means=np.zeros((2, 2)),
        composite=np.zeros(2),
        composite_mean=0.0,
        membership_index=np.array([[0, 1], [0, 0]]),
        membership_weight=np.array([[0.6, 0.4], [1.0, 0.0]]),
        provider_type_index=np.array([1, 0]),
    )
    rng = np.random.default_rng(3)
    s = 3

    def v(*shape, dims=(), scale=1.0, pos=False):
        x = rng.normal(0, scale, size=(1, s, *shape))
        return (("chain", "draw", *dims), np.abs(x) + 0.5 if pos else x)

    post = {
        "alpha": v(scale=5) if False else (("chain", "draw"), 45 + rng.normal(size=(1, s))),
        "b_baseline": v(),
        "b_covariate_z": v(3, dims=("covariate",)),
        "b_care": v(2, dims=("care_contrast",), scale=3),
        "b": v(3, 2, 2, dims=("care_type", "subscale", "level"), scale=2),
        "sd_provider": v(2, dims=("provider_type",), scale=3, pos=True),
        "u_provider": v(1, dims=("provider",), scale=3),
        "sigma": (("chain", "draw"), 8 + rng.uniform(size=(1, s))),
    }
    if slopes:
        post["sd_provider_slope"] = v(2, dims=("subscale",), pos=True)
        post["corr_provider"] = (
            ("chain", "draw", "effect_pair"),
            rng.uniform(-0.4, 0.4, (1, s, 3)),
        )
        post["u_provider_slope"] = v(1, 2, dims=("provider", "subscale"))
    posterior = xr.Dataset(post, coords={"provider": ["Pold"]})
    return spec, data, posterior


def _by_hand(spec, data, posterior, slopes):
    """scipy: for each draw, y_i ~ N(mu + known part, sqrt(sigma² + w² a'Σa)), then log-mean-exp."""
    p = {k: posterior[k].values[0] for k in posterior.data_vars}
    out = []
    for i in range(2):
        dens = []
        for s in range(3):
            mu = p["alpha"][s] + p["b_baseline"][s] * (data.baseline[i] - 25.0)
            mu += data.covariates[i] @ p["b_covariate_z"][s]
            mu += [p["b_care"][s][0], 0.0, p["b_care"][s][1]][data.care_index[i]]
            mu += (p["b"][s][data.care_index[i]] * data.alliance[i]).sum()
            within = data.alliance[i, :, 0]
            var = p["sigma"][s] ** 2
            for k in range(2):
                prov, w = data.membership_index[i, k], data.membership_weight[i, k]
                if w == 0:
                    continue
                if prov == 1:  # Pold: known, posterior effect
                    mu += w * p["u_provider"][s][0]
                    if slopes:
                        mu += w * p["u_provider_slope"][s][0] @ within
                else:  # Pnew: integrate over the population distribution
                    sd0 = p["sd_provider"][s][data.provider_type_index[prov]]
                    if slopes:
                        r = p["corr_provider"][s]
                        corr = np.array([[1, r[0], r[1]], [r[0], 1, r[2]], [r[1], r[2], 1]])
                        sc = np.array([sd0, *p["sd_provider_slope"][s]])
                        a = np.array([1.0, *within])
                        var += w**2 * a @ (corr * np.outer(sc, sc)) @ a
                    else:
                        var += w**2 * sd0**2
            dens.append(stats.norm.pdf(data.y[i], mu, np.sqrt(var)))
        out.append(np.log(np.mean(dens)))
    return np.array(out)


@pytest.mark.parametrize("slopes", [False, True])
def test_heldout_density_matches_hand_computation(slopes):
    spec, data, posterior = _tiny_case(slopes)
    expected = _by_hand(spec, data, posterior, slopes)
    exact = predict.heldout_log_density(spec, data, posterior, method="analytic")
    np.testing.assert_allclose(exact, expected, rtol=1e-10)
    mc = predict.heldout_log_density(spec, data, posterior, method="mc", n_mc=20000, seed=5)
    np.testing.assert_allclose(mc, expected, atol=0.02)


def test_censored_density_puts_probability_mass_at_the_bounds():
    spec, *_ = _tiny_case(False)
    assert spec.likelihood == "censored_normal" and spec.outcome_range == (0.0, 100.0)
    y = np.array([0.0, 37.0, 100.0])
    mu, sigma = np.array([10.0, 40.0, 90.0]), np.array([15.0, 15.0, 15.0])
    got = predict._log_density(spec, y[None], mu[None], sigma[None], None)[0]
    want = [
        stats.norm.logcdf(0.0, 10.0, 15.0),
        stats.norm.logpdf(37.0, 40.0, 15.0),
        stats.norm.logsf(100.0, 90.0, 15.0),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_heldout_density_pooled_model_and_student_t_guard():
    spec, data, posterior = _tiny_case(False)
    pooled = replace(spec, hierarchy=replace(spec.hierarchy, provider_intercepts=False))
    got = predict.heldout_log_density(pooled, data, posterior)
    p = {k: posterior[k].values[0] for k in posterior.data_vars}
    mu = predict.linear_predictor(pooled, data, posterior)
    dens = stats.norm.pdf(data.y[None], mu, p["sigma"][:, None])
    np.testing.assert_allclose(got, np.log(dens.mean(0)))
    student = replace(spec, likelihood="student_t")
    with pytest.raises(ValueError, match="Normal"):
        predict.heldout_log_density(student, data, posterior, method="analytic")


def test_write_comparison_is_atomic_folder(tmp_path):
    fits = {"m1": _fake_fit(1), "m2": _fake_fit(1, shift=0.5)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cmp.ParetoKWarning)
        loo = cmp.loo_models(fits)
    table = cmp.comparison_table(loo)
    path = cmp.write_comparison(
        tmp_path, "run1", table, {"k": 0}, pointwise=cmp.pointwise_frame(loo, None)
    )
    names = {p.name for p in path.rglob("*") if p.is_file()}
    assert {
        "comparison.md",
        "comparison.tex",
        "comparison.csv",
        "pointwise.csv",
        "run.json",
    } <= names
    assert "comparison.png" in names
    assert not [p for p in (tmp_path / "comparison").iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError):
        cmp.write_comparison(tmp_path, "run1", table, {})


@pytest.mark.mcmc
def test_small_fit_kfold_and_numpy_twin(small_study_dir, fitted):
    """One small real fit: the NumPy predictor reproduces the sampler's log-likelihood, and a
    2-fold leave-provider-out run gives finite held-out densities for every client."""
    from alliance_bayes.data.frame import build_frame
    from alliance_bayes.data.load import load_study
    from alliance_bayes.fitting import settings_for

    spec = load_spec("who5_intercepts")
    frame = build_frame(load_study(small_study_dir))
    settings = {"draws": 150, "tune": 150, "chains": 2}
    data, dt = fitted("who5_intercepts_small", spec, frame, **settings)
    post = dt["posterior"].to_dataset()
    twin = predict.pointwise_log_likelihood(spec, data, post)
    ref = dt["log_likelihood"]["y"].values.reshape(twin.shape)
    np.testing.assert_allclose(twin, ref, atol=1e-4)

    _, provider_fold = cmp.provider_folds(
        data.membership_index, data.membership_weight, len(data.frame.providers), k=2, seed=0
    )
    result = cmp.run_kfold(
        spec,
        data,
        provider_fold,
        settings_for(spec, progress=False, **settings),
        n_mc=50,
        max_draws=100,
    )
    assert np.isfinite(result.elpd_i).all() and len(result.elpd_i) == data.n_clients
    assert all(f["n_new_providers"] > 0 for f in result.details["folds"])
    assert np.isfinite(result.se) and result.se > 0


def test_cluster_se_matches_the_spread_of_totals_over_replicates():
    """Totals of cluster-correlated values over clusters of unequal sizes (a nonzero mean, as
    elpd has): the cluster-robust SE estimates their sampling SD, the independent-clients SE
    does not; with one client per cluster the two agree."""
    rng = np.random.default_rng(8)
    sizes = rng.integers(1, 16, size=60)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    reps = 4000
    x = (
        -3.0
        + rng.normal(size=(reps, len(sizes)))[:, cluster]
        + rng.normal(size=(reps, sizes.sum()))
    )
    truth = np.sqrt(np.sum(sizes**2 + sizes))  # SD of the total: 70.4 here
    assert x.sum(axis=1).std() == pytest.approx(truth, rel=0.03)
    robust = np.array([cmp.cluster_se(row, cluster) for row in x[:400]])
    naive = np.sqrt(x.shape[1] * x[:400].var(axis=1))
    assert robust.mean() == pytest.approx(truth, rel=0.06)
    assert naive.mean() < 0.5 * truth  # sqrt(n * 2) = 30.2
    one = np.arange(x.shape[1])
    assert cmp.cluster_se(x[0], one) == pytest.approx(
        np.sqrt(x.shape[1] / (x.shape[1] - 1)) * naive[0], rel=1e-12
    )


class _Design:
    """Membership arrays and labels: what run_kfold reads from a family's design."""

    def __init__(self, index, weight):
        import pandas as pd

        self.membership_index, self.membership_weight = np.asarray(index), np.asarray(weight)
        n, n_prov = len(index), int(np.max(index)) + 1
        self.frame = type("F", (), {})()
        self.frame.clients = pd.DataFrame({"client": [f"C{i}" for i in range(n)]})
        self.frame.providers = pd.DataFrame({"provider": [f"P{j}" for j in range(n_prov)]})


def test_run_kfold_holds_out_providers_and_scores_only_scored_clients():
    """The fold rules with a fake scorer: each client is tested in their main provider's fold;
    no training client saw a test-fold provider; only scored clients enter the result."""
    from alliance_bayes.model.families import HeldOut

    index = np.array([[0, 0], [1, 0], [2, 0], [1, 3], [3, 0], [0, 2], [3, 0], [1, 0]])
    weight = np.array([[1, 0], [1, 0], [1, 0], [0.3, 0.7], [1, 0], [0.5, 0.5], [1, 0], [1, 0]])
    scored = np.array([True, True, True, True, True, True, True, False])
    provider_fold = np.array([0, 1, 0, 1])
    calls = []

    def score(train, test, seed):
        calls.append((train.copy(), test.copy(), seed))
        return np.full(int((test & scored).sum()), -float(seed)), {"divergences": 0}

    design = _Design(index, weight)
    spec = load_spec("who5_change")
    result = cmp.run_kfold(spec, design, provider_fold, None, held=HeldOut(scored, score), seed=10)
    main = cmp.main_provider(index, weight)
    np.testing.assert_array_equal(result.fold, provider_fold[main][scored])
    assert result.clients == [f"C{i}" for i in range(7)]
    np.testing.assert_array_equal(result.cluster, [f"P{j}" for j in main[scored]])
    for train, test, seed in calls:
        f = seed - 10
        np.testing.assert_array_equal(test, provider_fold[main] == f)
        saw = ((provider_fold[index] == f) & (weight > 0)).any(axis=1)
        assert not (train & saw).any() and not (train & test).any()
        np.testing.assert_array_equal(result.elpd_i[result.fold == f], -float(seed))
    # fold 0 tests clients 0, 2 and 5 (main P0 or P2); every other client saw fold-1 providers only
    assert calls[0][0].tolist() == [False, True, False, True, True, False, True, True]


def test_latent_pointwise_density_sums_outcomes_per_client():
    from alliance_bayes.model.latent.heldout import pointwise_client_density

    outcomes = [
        type("O", (), {"short": "who5", "client_index": np.array([0, 1, 2])})(),
        type("O", (), {"short": "phq9", "client_index": np.array([2, 0])})(),
    ]
    data = type("D", (), {"outcomes": outcomes, "n_clients": 4})()
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 2))
    loglik = xr.Dataset(
        {
            "y": (("chain", "draw", "client_who5"), a),
            "y_phq9": (("chain", "draw", "client_phq9"), b),
        }
    )
    got = pointwise_client_density(data, loglik)
    flat_a, flat_b = a.reshape(10, 3), b.reshape(10, 2)
    want0 = np.log(np.mean(np.exp(flat_a[:, 0] + flat_b[:, 1])))
    want1 = np.log(np.mean(np.exp(flat_a[:, 1])))
    want2 = np.log(np.mean(np.exp(flat_a[:, 2] + flat_b[:, 0])))
    np.testing.assert_allclose(got[:3], [want0, want1, want2], rtol=1e-12)
    assert np.isnan(got[3])


def test_loo_table_gains_provider_cluster_ses():
    fits = {"good": _fake_fit(1), "bad": _fake_fit(1, shift=1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cmp.ParetoKWarning)
        loo = cmp.loo_models(fits)
    provider_of = {f"C{i:05d}": f"P{i // 5}" for i in range(30)}
    table = cmp.comparison_table(loo, provider_of=provider_of)
    e = np.asarray(loo["good"].elpd_i.values)
    cluster = [provider_of[str(c)] for c in loo["good"].elpd_i["client"].values]
    assert table.loc["good", "se_provider"] == pytest.approx(cmp.cluster_se(e, cluster))
    assert table.loc["good", "dse_provider"] == 0.0 and table.loc["bad", "dse_provider"] > 0
    assert "SE (providers)" in cmp.table_markdown(table)
