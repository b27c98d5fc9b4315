"""Prior sensitivity: shifts under other priors, psense on estimands, verdicts, output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.checks import sensitivity as sens
from alliance_bayes.spec import load_spec


def _est(mean: float, sd: float, seed: int = 0) -> xr.Dataset:
    x = np.random.default_rng(seed).normal(mean, sd, size=(2, 500))
    return xr.Dataset(
        {"b_goal_within": (("chain", "draw"), x), "sigma": (("chain", "draw"), x + 10)}
    )


def test_shift_table_in_base_sd_units():
    base = _est(0.0, 1.0)
    wide = _est(0.0, 1.0, seed=1) + 0.8  # moves 0.8 SD
    table = sens.shift_table(base, {"wide": wide})
    assert table.loc["b_goal_within", "wide:shift"] == pytest.approx(0.8, abs=0.1)
    assert table.loc["b_goal_within", "max_abs_shift"] == pytest.approx(0.8, abs=0.1)


def _spread(base: xr.Dataset, factor: float) -> xr.Dataset:
    """``base`` with every estimand's draws spread ``factor`` times as wide about the same mean."""
    return base.map(lambda da: da.mean() + factor * (da - da.mean()))


@pytest.mark.parametrize(
    ("factor", "flagged"), [(1.3, True), (0.7, True), (1.1, False), (0.9, False), (1.0, False)]
)
def test_a_planted_change_of_posterior_sd_is_flagged_above_25_percent(factor, flagged):
    base = _est(0.0, 1.0)
    table = sens.shift_table(base, {"wide": base, "other": _spread(base, factor)})
    assert table.loc["b_goal_within", "other:sd_ratio"] == pytest.approx(factor)
    assert table.loc["b_goal_within", "extreme_sd_ratio"] == pytest.approx(factor)
    assert table.loc["b_goal_within", "max_abs_shift"] == pytest.approx(0.0, abs=1e-9)
    verdict = sens.verdicts(table, None)["b_goal_within"]
    if flagged:
        assert verdict == f"prior-sensitive (SD ×{factor:.2f})"
    else:
        assert verdict == "robust"


def test_the_sd_ratio_limits_are_symmetric_on_the_log_scale():
    table = pd.DataFrame(
        {"max_abs_shift": [0.0] * 4, "extreme_sd_ratio": [0.8, 1.25, 0.79, 1.26]},
        index=list("abcd"),
    )
    v = sens.verdicts(table, None)
    assert list(v) == [
        "robust",
        "robust",
        "prior-sensitive (SD ×0.79)",
        "prior-sensitive (SD ×1.26)",
    ]


def test_the_extreme_sd_ratio_is_the_one_farthest_from_one_in_log():
    base = _est(0.0, 1.0)
    table = sens.shift_table(base, {"a": _spread(base, 1.2), "b": _spread(base, 0.8)})
    # |log 0.8| = 0.223 > |log 1.2| = 0.182: the narrower set is the larger change.
    assert table.loc["sigma", "extreme_sd_ratio"] == pytest.approx(0.8)


def test_verdicts():
    shifts = pd.DataFrame({"max_abs_shift": [0.1, 0.9, 0.2]}, index=["a", "b", "c"])
    psense = pd.DataFrame(
        {"prior": [0.01, 0.01, 0.2], "likelihood": [0.1, 0.1, 0.01],
         "diagnosis": ["✓", "✓", "potential strong prior / weak likelihood"]},
        index=["a", "b", "c"],
    )  # fmt: skip
    v = sens.verdicts(shifts, psense)
    assert v["a"] == "robust"
    assert v["b"] == "prior-sensitive (mean moves 0.90 SD)"
    assert "psense" in v["c"] and "strong prior" in v["c"]
    both = pd.DataFrame({"max_abs_shift": [0.6], "extreme_sd_ratio": [1.5]}, index=["d"])
    assert sens.verdicts(both, None)["d"] == "prior-sensitive (mean moves 0.60 SD, SD ×1.50)"


def _conjugate_tree(prior_sd: float, n: int = 50, seed: int = 0) -> tuple[xr.DataTree, xr.Dataset]:
    """Normal mean with known sd 1 and prior N(0, prior_sd): exact posterior draws."""
    rng = np.random.default_rng(seed)
    y = rng.normal(1.0, 1.0, size=n)
    prec = 1 / prior_sd**2 + n
    mu = rng.normal(y.sum() / prec, prec**-0.5, size=(2, 1000))
    ll = stats.norm.logpdf(y[None, None], mu[..., None], 1.0)
    lp = stats.norm.logpdf(mu, 0.0, prior_sd)
    z = rng.normal(size=(2, 1000))
    dt = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({"mu": (("chain", "draw"), mu)}),
            "log_likelihood": xr.Dataset({"y": (("chain", "draw", "client"), ll)}),
            "log_prior": xr.Dataset(
                {"alpha": (("chain", "draw"), lp), "z_b": (("chain", "draw"), stats.norm.logpdf(z))}
            ),
        }
    )
    return dt, xr.Dataset({"mu": (("chain", "draw"), mu)})


def test_psense_on_estimands_flags_an_informative_prior_only():
    dt, est = _conjugate_tree(prior_sd=100.0)
    assert sens.prior_variables(dt) == ["alpha"]  # the hierarchical layer z_b is not scaled
    weak = sens.psense_estimands(dt, est)
    assert weak.loc["mu", "diagnosis"] == "✓"
    dt, est = _conjugate_tree(prior_sd=0.05)
    strong = sens.psense_estimands(dt, est)
    assert strong.loc["mu", "prior"] > sens.PSENSE_THRESHOLD
    assert "potential" in strong.loc["mu", "diagnosis"]


def test_tables_and_folder(tmp_path):
    dt, est = _conjugate_tree(prior_sd=100.0)
    table = sens.combined_table(
        sens.shift_table(est, {"narrow": est}), sens.psense_estimands(dt, est)
    )
    md = sens.sensitivity_markdown(table, "cap")
    assert "| `mu` |" in md and "robust" in md
    assert "narrow:sd_ratio" in md and "| 1.00 |" in md
    tex = sens.sensitivity_latex(table, "cap")
    assert r"\texttt{mu}" in tex and "✓" not in tex
    path = sens.write_sensitivity(tmp_path, "r1", {"toy": table}, {"x": 1})
    assert {p.name for p in path.iterdir()} == {"toy.md", "toy.tex", "toy.csv", "run.json"}


def test_prior_sets_are_declared_and_differ_only_in_priors():
    base = load_spec("who5_change")
    for name, factor in (("who5_change_priors_wide", 2.0), ("who5_change_priors_narrow", 0.5)):
        other = load_spec(name)
        assert other.hierarchy == base.hierarchy and other.predictors == base.predictors
        assert other.data == base.data and other.likelihood == base.likelihood
        assert other.priors.sd_provider_sd == pytest.approx(factor * base.priors.sd_provider_sd)
        assert other.priors.mu_b_sd == pytest.approx(factor * base.priors.mu_b_sd)


def test_the_halfnormal_prior_set_changes_only_the_shape_of_the_provider_sds():
    import dataclasses

    base = load_spec("who5_change")
    other = load_spec("who5_change_priors_halfnormal")
    assert "who5_change_priors_halfnormal" in sens.DEFAULT_VARIANTS["who5_change"]
    assert other.hierarchy == dataclasses.replace(base.hierarchy, sd_prior="halfnormal")
    assert base.hierarchy.sd_prior == "gamma"
    assert other.predictors == base.predictors and other.data == base.data
    assert other.likelihood == base.likelihood and other.sampler == base.sampler
    changed = {"sd_provider_sd", "sd_provider_slope_sd"}
    mine, theirs = dataclasses.asdict(base.priors), dataclasses.asdict(other.priors)
    assert {k for k in mine if mine[k] != theirs[k]} == changed
    for key in changed:
        # Half-Normal(s') has mean s' sqrt(2 / pi); Gamma(2, 2 / s) has mean s.
        gamma = stats.gamma(2.0, scale=mine[key] / 2.0)
        half = stats.halfnorm(scale=theirs[key])
        assert half.mean() == pytest.approx(gamma.mean(), rel=0.01), key
        assert half.median() == pytest.approx(gamma.median(), rel=0.02), key
        assert half.cdf(mine[key] / 10) > 3 * gamma.cdf(mine[key] / 10)  # more mass near 0


def test_the_halfnormal_prior_set_builds_with_halfnormal_sds(small_study_dir):
    from pytensor.tensor.basic import get_underlying_scalar_constant_value as constant

    from alliance_bayes.fitting import design_of
    from alliance_bayes.model.families import family_of

    for name, kind, scales in (
        ("who5_change", "GammaRV", None),
        ("who5_change_priors_halfnormal", "HalfNormalRV", (6.27, 1.25)),
    ):
        spec = load_spec(name)
        model = family_of(spec).build(spec, design_of(spec, small_study_dir))
        sds = [model["sd_provider"], model["sd_provider_slope"]]
        assert [type(rv.owner.op).__name__ for rv in sds] == [kind, kind], name
        if scales is not None:  # HalfNormal(loc, scale): the last two inputs
            assert [float(constant(rv.owner.inputs[-1])) for rv in sds] == list(scales)
            assert [float(constant(rv.owner.inputs[-2])) for rv in sds] == [0.0, 0.0]


def test_latent_prior_sets_scale_every_prior_and_nothing_else():
    import dataclasses

    from alliance_bayes.checks.sensitivity import DEFAULT_VARIANTS

    base = load_spec("alliance_latent_who5")
    wide, narrow, halfnormal = DEFAULT_VARIANTS["alliance_latent_who5"]
    shape = load_spec(halfnormal)
    assert shape.hierarchy.sd_prior == "halfnormal" and base.hierarchy.sd_prior == "gamma"
    assert dataclasses.replace(shape.hierarchy, sd_prior="gamma") == base.hierarchy
    for name, factor, eta in ((wide, 2.0, 1.0), (narrow, 0.5, 4.0)):
        other = load_spec(name)
        assert other.hierarchy == base.hierarchy and other.predictors == base.predictors
        assert other.data == base.data and other.sampler == base.sampler
        for part in ("priors", "measurement"):
            mine, theirs = (
                dataclasses.asdict(getattr(base, part)),
                dataclasses.asdict(getattr(other, part)),
            )
            for key, value in mine.items():
                if key in UNUSED_BY_LATENT:
                    continue
                if key == "lkj_eta":
                    assert theirs[key] == eta
                elif key.endswith("_sd"):
                    assert theirs[key] == pytest.approx(factor * value), (name, key)
                else:
                    assert theirs[key] == value, (name, key)


#: No composite alliance, no provider slopes, Normal residuals: priors the latent model never reads.
UNUSED_BY_LATENT = {"b_alliance_sd", "sd_provider_slope_sd", "nu_rate"}


# --------------------------------------------------------------------------------------------------
# Which priors power-scaling scales: the top-level ones, whatever the parametrisation


def test_the_top_level_priors_are_an_explicit_list():
    names = ["sigma", "z_b", "b_centred_slope", "v_provider", "alpha", "chol_provider", "mu_b"]
    assert sens.top_level_priors(names) == ["alpha", "mu_b", "chol_provider", "sigma"]
    assert set(sens.TOP_LEVEL_PRIORS).isdisjoint(sens.HIERARCHICAL_LAYERS)
    with pytest.raises(ValueError, match=r"\['theta_new'\] are neither"):
        sens.top_level_priors(["alpha", "theta_new"])


def _free_rvs(spec, study_dir) -> list[str]:
    from alliance_bayes.fitting import design_of
    from alliance_bayes.model.families import family_of

    model = family_of(spec).build(spec, design_of(spec, study_dir))
    return [rv.name for rv in model.free_RVs]


@pytest.mark.parametrize("centred", [True, False])
def test_prior_selection_ignores_which_care_slopes_are_centred(
    small_study_dir, monkeypatch, centred
):
    from alliance_bayes.model.regression import graph

    spec = load_spec("who5_change")
    real = graph.centred_care_slopes
    monkeypatch.setattr(
        graph, "centred_care_slopes", lambda s, d: np.full_like(real(s, d), centred)
    )
    free = _free_rvs(spec, small_study_dir)
    assert ("b_centred_slope" in free, "z_b" in free) == (centred, not centred)
    assert sens.top_level_priors(free) == [
        "alpha", "b_baseline", "b_covariate_z", "b_care", "mu_b",
        "sd_provider", "sd_provider_slope", "chol_provider", "sigma",
    ]  # fmt: skip


def test_prior_selection_is_the_same_for_the_collapsed_and_per_client_forms(small_study_dir):
    collapsed = _free_rvs(load_spec("who5_change_normal"), small_study_dir)
    per_client = _free_rvs(
        load_spec("who5_change_normal", likelihood_form="per_client"), small_study_dir
    )
    assert "v_provider_sampled" in collapsed and "v_provider" in per_client
    assert set(collapsed) != set(per_client)
    assert sens.top_level_priors(collapsed) == sens.top_level_priors(per_client)
    assert "sd_provider" in sens.top_level_priors(collapsed)


def test_every_shipped_model_parameter_is_classified(small_study_dir):
    from alliance_bayes.spec import MODELS_DIR

    for path in sorted(MODELS_DIR.glob("*.toml")):
        spec = load_spec(path.stem)
        if spec.data.followup_imputations:  # who5_change's model, refitted per imputation
            continue
        priors = sens.top_level_priors(_free_rvs(spec, small_study_dir))
        if spec.outcome == "alliance_ratings":  # alliance as the outcome: no intercept or sigma
            assert {"b_care_logit", "log_discrimination_mean", "sd_provider_latent"} <= set(
                priors
            ), path.stem
        elif spec.change is not None:  # baseline and follow-up with measurement error
            assert {"true_change", "reliability", "sd_true"} <= set(priors), path.stem
        else:
            assert "alpha" in priors and "sigma" in priors, path.stem


def test_a_change_model_with_covariates_has_its_slopes_classified(small_study_dir):
    spec = load_spec("wellbeing_change", predictors={"covariates": ["age", "male"]})
    priors = sens.top_level_priors(_free_rvs(spec, small_study_dir))
    assert {"b_covariate_baseline_z", "b_covariate_change_z"} <= set(priors)


def _hierarchical_tree(centred: bool, seed: int = 1) -> tuple[xr.DataTree, xr.Dataset]:
    """Three group means b_c ~ N(mu_b, 1), mu_b ~ N(0, 0.5), five observations each: the same
    draws stored as a centred (``b_centred_slope``) or non-centred (``z_b``) log prior."""
    rng = np.random.default_rng(seed)
    y = rng.normal(1.0, 1.0, size=(3, 5))
    # Exact posterior: precision of (mu, b) from the prior layers and the likelihood.
    prec = np.zeros((4, 4))
    prec[0, 0] = 1 / 0.5**2 + 3
    prec[0, 1:] = prec[1:, 0] = -1
    prec[1:, 1:] = np.eye(3) * (1 + 5)
    cov = np.linalg.inv(prec)
    mean = cov @ np.r_[0.0, y.sum(axis=1)]
    draws = rng.multivariate_normal(mean, cov, size=(2, 1000))
    mu, b = draws[..., 0], draws[..., 1:]
    layer = (
        {"b_centred_slope": stats.norm.logpdf(b, mu[..., None], 1.0).sum(-1)}
        if centred
        else {"z_b": stats.norm.logpdf(b - mu[..., None]).sum(-1)}
    )
    ll = stats.norm.logpdf(y.ravel()[None, None], np.repeat(b, 5, axis=-1), 1.0)
    sample = ("chain", "draw")
    dt = xr.DataTree.from_dict(
        {
            "log_likelihood": xr.Dataset({"y": ((*sample, "client"), ll)}),
            "log_prior": xr.Dataset(
                {"mu_b": (sample, stats.norm.logpdf(mu, 0.0, 0.5))}
                | {k: (sample, v) for k, v in layer.items()}
            ),
        }
    )
    est = xr.Dataset({"mu_b": (sample, mu), "b_therapist": (sample, b[..., 0])})
    return dt, est


def test_psense_is_the_same_for_a_centred_and_a_non_centred_hierarchy(monkeypatch):
    centred = sens.psense_estimands(*_hierarchical_tree(centred=True))
    noncentred = sens.psense_estimands(*_hierarchical_tree(centred=False))
    pd.testing.assert_frame_equal(centred, noncentred)
    assert (centred["prior"] > 0).all()
    # Scaling the centred layer too (as every log_prior term but z_* once was) changes the answer:
    # the fake would catch a selection that followed the parametrisation.
    monkeypatch.setitem(sens.TOP_LEVEL_PRIORS, "b_centred_slope", "layer")
    layered = sens.psense_estimands(*_hierarchical_tree(centred=True))
    assert not np.allclose(layered["prior"], noncentred["prior"], rtol=0.05)
