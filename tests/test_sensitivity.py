"""Prior sensitivity: shifts under other priors, psense on estimands, verdicts, output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.checks import sensitivity as sens
from alliance_bayes.model.spec import load_spec


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


def test_verdicts():
    shifts = pd.DataFrame({"max_abs_shift": [0.1, 0.9, 0.2]}, index=["a", "b", "c"])
    psense = pd.DataFrame(
        {"prior": [0.01, 0.01, 0.2], "likelihood": [0.1, 0.1, 0.01],
         "diagnosis": ["✓", "✓", "potential strong prior / weak likelihood"]},
        index=["a", "b", "c"],
    )  # fmt: skip
    v = sens.verdicts(shifts, psense)
    assert v["a"] == "robust"
    assert v["b"].startswith("prior-sensitive")
    assert "psense" in v["c"] and "strong prior" in v["c"]


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
                {"mu": (("chain", "draw"), lp), "z_b": (("chain", "draw"), stats.norm.logpdf(z))}
            ),
        }
    )
    return dt, xr.Dataset({"mu": (("chain", "draw"), mu)})


def test_psense_on_estimands_flags_an_informative_prior_only():
    dt, est = _conjugate_tree(prior_sd=100.0)
    assert sens.prior_variables(dt) == ["mu"]  # non-centred z_* are not scaled
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


def test_latent_prior_sets_scale_every_prior_and_nothing_else():
    import dataclasses

    from alliance_bayes.checks.sensitivity import DEFAULT_VARIANTS

    base = load_spec("alliance_latent_who5")
    wide, narrow = DEFAULT_VARIANTS["alliance_latent_who5"]
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


@pytest.mark.slow
def test_numpyro_engine_agrees_on_small_study(small_study_dir):
    pytest.importorskip("numpyro")
    from alliance_bayes.checks import engine_check as ec
    from alliance_bayes.fitting import design_of, fit_design, settings_for

    for name, kind in (("paper_table2", "composite"), ("who5_intercepts", "intercepts")):
        spec = load_spec(name)
        data = design_of(spec, small_study_dir)
        dt = fit_design(
            spec, data, settings_for(spec, draws=500, tune=500, progress=False)
        ).datatree
        other = ec.fit_numpyro(spec, data, draws=500, tune=500)
        table = ec.agreement_table(dt["posterior"].to_dataset(), other, ec.COMPARED[kind])
        assert table["agree"].all(), table[~table["agree"]]
