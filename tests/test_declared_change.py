"""The change family on an outcome instrument a study declares (GAD-7, and one where higher is
better): who is elevated, the reliability prior, units, prior scales and the improvement direction
all come from the declaration (no MCMC)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.data.load import load_study
from alliance_bayes.errors import DesignError
from alliance_bayes.fitting import design_of
from alliance_bayes.model.change.design import CARE_TYPES
from alliance_bayes.model.change.estimands import compute_change_estimands
from alliance_bayes.model.change.graph import beta_parameters
from alliance_bayes.model.families import family_of
from alliance_bayes.spec import (
    CHANGE_POINT_PRIORS,
    ChangeSpec,
    PriorSpec,
    SpecError,
    load_spec,
    parse_spec,
    spec_from_dict,
)

#: The shipped synthetic study, to which the tests add GAD-7 columns.
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "synthetic"
#: A GAD-7 study's own test–retest reliability, as a study would declare it.
RELIABILITY = 0.79
SOURCE = "This service's retest study: 120 clients, two weeks apart (ICC 0.79)"

#: A change variant by TOML alone: the WHO-5 spec with the GAD-7 as its outcome.
GAD7_CHANGE = """
extends = "wellbeing_change"
name = "gad7_change"
description = "GAD-7 change among the elevated at baseline, regression to the mean separated out"
outcome = "gad7_followup"

[hypotheses]
rope = 0.5
tests = ["gad7_change_beyond_rtm[all] < 0", "rtm[all] < 0"]
"""


def _gad7_scores(n: int, followed: np.ndarray, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """GAD-7 sums 0–21 with a true score of SD 4.5, reliability 0.8 and a mean fall of 3."""
    rng = np.random.default_rng(seed)
    t1 = rng.normal(9.5, 4.5, n)
    t2 = 9.5 + 0.6 * (t1 - 9.5) - 3.0 + rng.normal(0.0, 3.6, n)
    sigma_e = 4.5 / 2.0  # ρ = τ² / (τ² + σ_e²) = 0.8

    def observed(t: np.ndarray) -> np.ndarray:
        return np.clip(np.round(t + rng.normal(0.0, sigma_e, n)), 0, 21)

    x1, x2 = observed(t1), observed(t2)
    return x1, np.where(followed, x2, np.nan)


def _cells(x: np.ndarray) -> list[str]:
    return ["" if np.isnan(v) else str(int(v)) for v in x]


@pytest.fixture(scope="module")
def gad7_scores(tmp_path_factory):
    """The shipped study with GAD-7 columns (a follow-up where the WHO-5 has one), as a folder
    without a ``study.toml``, and the GAD-7 baselines by client."""
    folder = tmp_path_factory.mktemp("gad7_study")
    for table in ("providers", "sessions"):
        shutil.copy(SHIPPED / f"{table}.csv", folder / f"{table}.csv")
    clients = pd.read_csv(SHIPPED / "clients.csv", dtype=str, keep_default_na=False)
    x1, x2 = _gad7_scores(len(clients), (clients["who5_followup"] != "").to_numpy())
    clients["gad7_baseline"], clients["gad7_followup"] = _cells(x1), _cells(x2)
    # The same scores on a scale where higher is better: "calm" = 21 − GAD-7.
    clients["calm_baseline"], clients["calm_followup"] = _cells(21 - x1), _cells(21 - x2)
    clients.to_csv(folder / "clients.csv", index=False)
    return folder, pd.Series(x1, index=clients["client_id"])


def _study(gad7_scores, tmp_path, gad7: str, calm: str = "") -> object:
    """The GAD-7 study with ``gad7`` as its ``[outcomes.gad7]`` table (and ``calm`` as
    ``[outcomes.calm]``'s, empty for none): a copy in ``tmp_path``."""
    source, _ = gad7_scores
    folder = tmp_path / "study"
    shutil.copytree(source, folder)
    text = f"[outcomes.gad7]\n{gad7}\n"
    text += f"[outcomes.calm]\n{calm}\n" if calm else ""
    if not calm:  # undeclared columns are refused: drop the calm ones
        clients = pd.read_csv(folder / "clients.csv", dtype=str, keep_default_na=False)
        clients.drop(columns=["calm_baseline", "calm_followup"]).to_csv(
            folder / "clients.csv", index=False
        )
    (folder / "study.toml").write_text(text, encoding="utf-8")
    return load_study(folder)


DECLARED = f'reliability = {RELIABILITY}\nsource = "{SOURCE}"\n'
CALM = (
    'label = "Calm"\nrange = [0, 21]\nbetter = "higher"\ncutoff = 11\n'
    f'reliability = {RELIABILITY}\nsource = "{SOURCE}"\n'
)


def _spec(tmp_path, text: str = GAD7_CHANGE, **overrides):
    path = tmp_path / "gad7_change.toml"
    path.write_text(text, encoding="utf-8")
    return load_spec(path, **overrides)


# --------------------------------------------------------------------------------------------------
# The GAD-7: elevated by its cut-off, reliability from its declaration, units and scales its own
# --------------------------------------------------------------------------------------------------
def test_the_elevated_sample_follows_the_declared_gad7_cutoff(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    assert family_of(spec).name == "change"
    design = design_of(spec, study)
    _, baseline = gad7_scores
    x1 = baseline.dropna().to_numpy()
    assert design.n_clients == x1.size
    np.testing.assert_array_equal(design.x1, x1)
    assert (design.sign, design.cutoff) == (-1.0, 10.0)  # lower is better: elevated at >= 10
    np.testing.assert_array_equal(design.elevated(), x1 >= 10)
    scales = design.scales()
    assert scales["n_elevated"] == int((x1 >= 10).sum()) > 100
    assert min(min(b["values"]) for b in scales["elevated_baselines"].values()) == 10.0
    assert scales["instrument"]["units"] == "GAD-7 points"
    assert spec.outcome_units == "GAD-7 points"
    variables = " ".join(family_of(spec).data_variables(spec))
    assert "GAD-7 baseline >= 10" in variables and "[outcomes.gad7]" in variables
    assert "GAD-7 points" in variables and "WHO-5" not in variables


def test_the_reliability_prior_is_centred_on_the_declared_one(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    design = design_of(spec, study)
    prior = design.reliability
    # the WHO-5's 0.81 and its source, inherited from wellbeing_change, are not the GAD-7's
    assert (prior.mean, prior.sd, prior.source, prior.declared) == (
        RELIABILITY,
        ChangeSpec().reliability_sd,
        SOURCE,
        True,
    )
    model = family_of(spec).build(spec, design)
    a, b = beta_parameters(RELIABILITY, prior.sd)
    for rho in (0.6, 0.79, 0.9):
        logp = pm.logp(model["reliability"], rho).eval()
        assert logp == pytest.approx(stats.beta(a, b).logpdf(rho), rel=1e-9)
    row = family_of(spec).prior_rows(spec, design.scales())[0]
    assert row.distribution.startswith(f"Beta({a:.1f}, {b:.1f}): mean 0.79, SD 0.05")
    assert SOURCE in row.justification and "[outcomes.gad7]" in row.justification
    assert "Schougaard" not in row.justification
    # an SD the spec states for this outcome widens or narrows the declared centre
    narrow = design_of(_spec(tmp_path, change={"reliability_sd": 0.03}), study).reliability
    assert (narrow.mean, narrow.sd) == (RELIABILITY, 0.03)


def test_priors_scale_from_the_declared_range_not_from_who5_points(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    design = design_of(spec, study)
    used, default = spec.change_priors, ChangeSpec()
    # every scale inherited from the WHO-5 spec is the default times 21/100
    for name in ("true_mean_sd", "true_change_sd", "true_sd_sd"):
        assert getattr(used, name) == pytest.approx(getattr(default, name) * 0.21), name
    assert spec.priors.sd_provider_sd == pytest.approx(PriorSpec().sd_provider_sd * 0.21)
    assert spec.rope == 0.5
    rows = family_of(spec).prior_rows(spec, design.scales())
    assert {r.on_data_scale for r in rows[1:4]} == {"GAD-7 points"}
    assert rows[1].distribution == "Normal(sample mean, 4.2)"
    assert "Scaled to the GAD-7's declared range" in rows[1].justification
    # a scale stated for the GAD-7 is taken as written
    stated = _spec(tmp_path, change={"true_change_sd": 3.0})
    assert stated.change_priors.true_change_sd == 3.0
    assert stated.change_priors.true_sd_sd == pytest.approx(25.0 * 0.21)
    # the mean true baseline is centred on the GAD-7 data
    model = family_of(spec).build(spec, design)
    mu = model["mu_true_baseline"].owner.inputs[-2].eval()
    assert float(np.ravel(mu)[0]) == pytest.approx(design.x1.mean())


def test_the_gad7_change_model_builds_with_a_finite_initial_logp(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    model = family_of(spec).build(spec, design_of(spec, study))
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert all(np.isfinite(v) for v in model.point_logps(point).values())
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_the_estimands_keep_their_names_with_the_instruments_prefix_and_units(
    gad7_scores, tmp_path
):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    design = design_of(spec, study)
    post = _posterior(m1=[12.0, 11.5, 12.5], m2=[9.0, 10.0, 8.5])
    est = family_of(spec).estimands(spec, post, design.scales())
    for g in (*CARE_TYPES, "all"):
        for name in ("gad7_change", "gad7_change_beyond_rtm", "rtm", "gad7_change_d"):
            assert f"{name}[{g}]" in est, name
    assert est["gad7_change[all]"].attrs["units"] == "GAD-7 points, observed"
    assert est["reliable_change_criterion"].attrs["units"] == "GAD-7 points"
    assert "baseline >= 10" in est["reliably_improved[all]"].attrs["units"]
    # improvement on the GAD-7 is a fall: the elevated regress downwards
    assert float(est["gad7_change[all]"].mean()) < 0 and float(est["rtm[all]"].mean()) < 0


# --------------------------------------------------------------------------------------------------
# No declared reliability; missing cut-off; undeclared outcome
# --------------------------------------------------------------------------------------------------
def test_without_a_declared_reliability_the_spec_must_state_one_for_this_outcome(
    gad7_scores, tmp_path
):
    study = _study(gad7_scores, tmp_path, "")  # the shipped template: no reliability
    with pytest.raises(DesignError) as err:
        design_of(_spec(tmp_path), study)  # wellbeing_change's 0.81 is the WHO-5's
    text = str(err.value)
    assert "test–retest reliability of the GAD-7" in text
    assert "[outcomes.gad7]" in text and "reliability_mean" in text
    own = {"reliability_mean": 0.8, "reliability_sd": 0.06, "reliability_source": "Our own"}
    spec = _spec(tmp_path, change=own)
    design = design_of(spec, study)
    assert (design.reliability.mean, design.reliability.sd, design.reliability.declared) == (
        0.8,
        0.06,
        False,
    )
    row = family_of(spec).prior_rows(spec, design.scales())[0]
    assert "declares no test–retest reliability" in row.justification
    assert "spec's [change] prior is used: Our own" in row.justification


def test_a_declaration_without_cutoff_or_reliability_is_told_both(gad7_scores, tmp_path):
    source, _ = gad7_scores
    folder = tmp_path / "anx"
    shutil.copytree(source, folder)
    clients = pd.read_csv(folder / "clients.csv", dtype=str, keep_default_na=False)
    clients = clients.drop(columns=["calm_baseline", "calm_followup"]).rename(
        columns={"gad7_baseline": "anx_baseline", "gad7_followup": "anx_followup"}
    )
    clients.to_csv(folder / "clients.csv", index=False)
    (folder / "study.toml").write_text(
        '[outcomes.anx]\nlabel = "ANX"\nrange = [0, 21]\nbetter = "lower"\n', encoding="utf-8"
    )
    spec = _spec(tmp_path, GAD7_CHANGE.replace("gad7", "anx"))
    with pytest.raises(DesignError) as err:
        design_of(spec, load_study(folder))
    text = str(err.value)
    assert "[outcomes.anx] (ANX) declares none; add cutoff" in text
    assert "test–retest reliability of the ANX" in text


def test_an_outcome_the_study_does_not_declare_is_refused_at_design_time(tmp_path):
    spec = _spec(tmp_path)
    with pytest.raises(DesignError) as err:
        design_of(spec, load_study(SHIPPED))
    text = str(err.value)
    assert "'gad7_followup' is not declared" in text and "[outcomes.gad7]" in text
    assert "who5_followup" in text and "cutoff" in text


# --------------------------------------------------------------------------------------------------
# Higher is better: the elevated rule and the improvement direction flip
# --------------------------------------------------------------------------------------------------
def _posterior(m1, m2, draws: int = 30) -> xr.Dataset:
    """A posterior of the change model whose every draw is the same population."""
    shape = (2, draws)

    def full(value, *extra):
        return np.broadcast_to(np.asarray(value, dtype=float), shape + extra).copy()

    care, dims = ("chain", "draw", "care_type"), ("chain", "draw")
    return xr.Dataset(
        {
            "mu_true_baseline": (care, full(m1, 3)),
            "mu_true_followup": (care, full(m2, 3)),
            "mean_provider_care": (care, np.zeros((*shape, 3))),
            "var_provider_care": (care, np.zeros((*shape, 3))),
            "sd_true": (("chain", "draw", "time"), full([4.5, 4.0], 2)),
            "corr_true": (dims, full(0.6)),
            "reliability": (dims, full(0.8)),
            "sigma_error": (dims, full(np.sqrt(0.2) * 5.0)),
            "sd_provider": (("chain", "draw", "provider_type"), full([0.5, 0.5], 2)),
        },
        coords={
            "care_type": list(CARE_TYPES),
            "time": ["baseline", "followup"],
            "provider_type": ["therapist", "coach"],
        },
    )


def test_higher_is_better_flips_the_elevated_rule_and_the_improvement(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED, calm=CALM)
    gad7 = design_of(_spec(tmp_path), study)
    spec = _spec(tmp_path, GAD7_CHANGE.replace("gad7", "calm"))
    calm = design_of(spec, study)
    assert (calm.sign, calm.cutoff) == (1.0, 11.0)
    # Calm = 21 − GAD-7: baseline <= 11 is GAD-7 >= 10, the same clients
    np.testing.assert_array_equal(calm.elevated(), calm.x1 <= 11)
    np.testing.assert_array_equal(calm.elevated(), gad7.elevated())
    variables = " ".join(family_of(spec).data_variables(spec))
    assert "Calm baseline <= 11" in variables
    # The same populations on the mirrored scale: every change has the opposite sign, every
    # Jacobson–Truax share is the same.
    m1, m2 = np.array([12.0, 11.5, 12.5]), np.array([9.0, 10.0, 8.5])
    down = compute_change_estimands(
        _posterior(m1, m2), gad7.scales(), prefix="gad7", units="GAD-7 points"
    )
    up = family_of(spec).estimands(spec, _posterior(21 - m1, 21 - m2), calm.scales())
    for name in ("change", "change_beyond_rtm", "change_d"):
        np.testing.assert_allclose(up[f"calm_{name}[all]"], -down[f"gad7_{name}[all]"])
    np.testing.assert_allclose(up["rtm[both]"], -down["rtm[both]"])
    for name in ("reliably_improved", "recovered", "reliably_deteriorated"):
        np.testing.assert_allclose(up[f"{name}[all]"], down[f"{name}[all]"], atol=1e-12)
    assert float(up["calm_change[all]"].mean()) > 0 and float(up["rtm[all]"].mean()) > 0
    assert up["calm_change[all]"].attrs["units"] == "Calm points, observed"


# --------------------------------------------------------------------------------------------------
# The spec: declared outcomes accepted; what counts as stated for an outcome
# --------------------------------------------------------------------------------------------------
def test_a_change_spec_may_name_a_declared_outcome_but_not_with_latent_alliance():
    spec = parse_spec('name = "x"\noutcome = "gad7_followup"\n[change]\n')
    assert spec.change is not None and spec.change_stated == frozenset()
    with pytest.raises(SpecError, match="no latent alliance"):
        parse_spec(
            'name = "x"\noutcome = "gad7_followup"\n[predictors]\nalliance = "latent"\n[change]\n'
        )


def test_values_inherited_from_a_spec_of_another_outcome_are_not_stated_for_this_one(tmp_path):
    who5 = load_spec("wellbeing_change")
    assert who5.change_priors is who5.change  # a built-in outcome: as stated
    assert who5.change_stated >= {"reliability_mean", "true_mean_sd"}
    assert "sd_provider_sd" in who5.priors_stated
    gad7 = _spec(tmp_path)
    assert gad7.change_stated == frozenset() and gad7.priors_stated == frozenset()
    # a variant of the GAD-7 spec that keeps its outcome inherits what it states
    (tmp_path / "narrow.toml").write_text(
        'extends = "gad7_change.toml"\nname = "narrow"\n[change]\ntrue_sd_sd = 4.0\n',
        encoding="utf-8",
    )
    (tmp_path / "gad7_change.toml").write_text(
        GAD7_CHANGE + "[change]\ntrue_change_sd = 3.0\n", encoding="utf-8"
    )
    narrow = load_spec(tmp_path / "narrow.toml")
    assert narrow.change_stated == {"true_sd_sd", "true_change_sd"}
    # an override states what it gives
    assert (
        "true_mean_sd"
        in load_spec(tmp_path / "narrow.toml", change={"true_mean_sd": 5.0}).change_stated
    )


def test_run_json_keeps_the_scales_as_used(gad7_scores, tmp_path):
    study = _study(gad7_scores, tmp_path, DECLARED)
    spec = _spec(tmp_path)
    design_of(spec, study)
    as_run = spec.to_dict()
    assert as_run["change"]["true_mean_sd"] == pytest.approx(4.2)
    again = spec_from_dict(json.loads(json.dumps(as_run)), "run.json")  # as run.json holds it
    for name in CHANGE_POINT_PRIORS:
        assert getattr(again.change_priors, name) == getattr(spec.change_priors, name), name
    assert again.priors.sd_provider_sd == pytest.approx(spec.priors.sd_provider_sd)
    assert "change_stated" not in as_run
    # wellbeing_change's WHO-5 reliability was not used: run.json does not claim it
    assert not {"reliability_mean", "reliability_source"} & set(as_run["change"])
    assert design_of(again, study).reliability.mean == RELIABILITY
