"""The latent family models outcomes a study declares (GAD-7 and the like), as the regression and
change families do: the declaration's columns, range, direction and cut-off, priors scaled by its
range, estimands named after it, and clear refusals where the study does not declare it."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytensor
import pytest
import xarray as xr
from scipy import stats

from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.instruments import SHIPPED, Instrument
from alliance_bayes.data.load import RawStudy
from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.errors import DesignError, SpecError
from alliance_bayes.model.families import family_of
from alliance_bayes.model.latent.describe import data_variables
from alliance_bayes.model.latent.estimands import outcome_units
from alliance_bayes.model.latent.figures import plot_phq9_ppc
from alliance_bayes.model.latent.heldout import _step
from alliance_bayes.model.latent.measurement import (
    build_latent_model,
    latent_scales,
    prepare_latent,
)
from alliance_bayes.spec import PriorSpec, load_spec, parse_spec

#: GAD-7's range over WHO-5's 0–100: the factor of the unstated outcome-point prior scales.
GAD7_FACTOR = 21.0 / 100.0
#: The planted GAD-7 follow-up: 8 + 0.6 (baseline - 13) + N(0, 2), rounded to whole points; the
#: rounding adds a uniform error of variance 1/12, so the residual SD is sqrt(4 + 1/12).
PLANTED_SLOPE = 0.6
PLANTED_SIGMA = float(np.sqrt(2.0**2 + 1.0 / 12.0))
#: A declared instrument on which higher is better, with its own cut-off.
VITALITY = Instrument("vitality", "Vitality", 0.0, 50.0, "higher", step=1.0, cutoff=20.0)


@pytest.fixture(autouse=True)
def numba_mode():
    """Compile with numba, as the package does; PyMC's initial-point functions still use the C
    linker, which warns that pip installs no BLAS (noise: no linear algebra there)."""
    with pytensor.config.change_flags(mode="NUMBA"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        yield


def _tables(seed: int = 5):
    """The small simulated study (one integer 1–5 item per subscale) with GAD-7 and vitality
    scores: GAD-7 follow-up planted as :data:`PLANTED_SLOPE` times the baseline, no alliance
    effect; every 10th follow-up missing."""
    sim = simulate_study(SimulationConfig.small(), seed=seed)
    rng = np.random.default_rng(seed)
    clients = sim.clients.copy()
    n = len(clients)
    base = rng.integers(8, 19, n).astype(float)
    follow = np.clip(np.round(8 + PLANTED_SLOPE * (base - 13) + rng.normal(0, 2, n)), 0, 21)
    follow[np.arange(n) % 10 == 0] = np.nan
    clients["gad7_baseline"] = base
    clients["gad7_followup"] = follow
    clients["vitality_baseline"] = rng.integers(5, 45, n).astype(float)
    clients["vitality_followup"] = rng.integers(5, 45, n).astype(float)
    return sim, clients


def _frame(outcomes: dict[str, Instrument] | None, seed: int = 5):
    sim, clients = _tables(seed)
    declared = outcomes or {}
    undeclared = [
        f"{name}_{when}"
        for name in ("gad7", "vitality")
        if name not in declared
        for when in ("baseline", "followup")
    ]
    study = RawStudy.from_frames(
        sim.providers,
        clients,
        sim.sessions,
        outcomes=declared,
        ignore_columns=undeclared,
    )
    return build_frame(study)


@pytest.fixture(scope="module")
def frame():
    return _frame({"gad7": SHIPPED["gad7"], "vitality": VITALITY})


def _spec(*outcomes: str, **measurement):
    return load_spec(
        "alliance_latent_who5",
        name="anxiety_latent",
        outcome=outcomes[0],
        measurement={"outcomes": list(outcomes), **measurement},
    )


def _normal_params(model, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The (location, scale) inputs of a Normal or Half-Normal prior in the model graph."""
    *_, loc, scale = model[name].owner.inputs
    return np.asarray(loc.eval()), np.asarray(scale.eval())


# --- design and graph -----------------------------------------------------------------------------
def test_declared_outcome_design_follows_the_declaration(frame):
    spec = _spec("gad7_followup")
    data = prepare_latent(spec, frame)
    (o,) = data.outcomes
    assert (o.short, o.dim, o.instrument) == ("gad7", "client_gad7", SHIPPED["gad7"])
    c = data.frame.clients
    ok = c[["gad7_followup", "gad7_baseline", "age", "male", "days_in_care"]].notna().all(axis=1)
    assert data.exclusions["clients_in_gad7_likelihood"] == int(ok.sum()) == len(o.y)
    np.testing.assert_array_equal(o.y, c.loc[ok, "gad7_followup"].to_numpy())
    np.testing.assert_array_equal(o.baseline, c.loc[ok, "gad7_baseline"].to_numpy())
    assert o.prior_scale == 1.0  # the first outcome: the spec's own (scaled) priors
    assert latent_scales(data)["declared_outcomes"] == {
        "gad7": {
            "label": "GAD-7",
            "units": "GAD-7 points",
            "range": [0.0, 21.0],
            "better": "lower",
            "step": 1.0,
            "cutoff": 10.0,
        }
    }


def test_declared_outcome_priors_are_scaled_by_its_range(frame):
    spec = _spec("gad7_followup")
    data = prepare_latent(spec, frame)
    model = build_latent_model(spec, data)
    default = PriorSpec()
    mean, sd = _normal_params(model, "alpha")
    # intercept around the outcome's sample mean, 15 WHO-5 points times 21/100
    np.testing.assert_allclose(mean, [data.outcomes[0].y.mean()])
    np.testing.assert_allclose(sd, [default.intercept_sd * GAD7_FACTOR])
    np.testing.assert_allclose(_normal_params(model, "sigma")[1], [20.0 * 0.21])
    np.testing.assert_allclose(_normal_params(model, "mu_b")[1], np.full((1, 1, 1), 10.0 * 0.21))
    np.testing.assert_allclose(_normal_params(model, "b_baseline")[1], [1.0])  # per point
    assert model.coords["outcome"] == ("gad7",)
    assert len(model.coords["client_gad7"]) == len(data.outcomes[0].y)
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_declared_second_outcome_scales_by_the_range_ratio_and_its_cutoff(frame):
    spec = _spec("who5_followup", "gad7_followup")
    data = prepare_latent(spec, frame)
    who5, gad7 = data.outcomes
    assert who5.prior_scale == 1.0 and gad7.prior_scale == pytest.approx(21.0 / 100.0)
    c = data.frame.clients
    complete = c[["age", "male", "days_in_care"]].notna().all(axis=1)
    both = complete & c["gad7_followup"].notna() & c["gad7_baseline"].notna()
    elevated = c["gad7_baseline"] >= 10  # lower is better: elevated at or above the cut-off
    assert data.exclusions["gad7_not_elevated_at_baseline"] == int((both & ~elevated).sum()) > 0
    assert len(gad7.y) == int((both & elevated).sum())
    assert gad7.baseline.min() >= 10
    # the first outcome takes every client with its scores
    who5_ok = complete & c["who5_followup"].notna() & c["who5_baseline"].notna()
    assert len(who5.y) == int(who5_ok.sum())
    model = build_latent_model(spec, data)
    np.testing.assert_allclose(_normal_params(model, "sigma")[1], [20.0, 20.0 * 0.21])
    assert model.coords["outcome"] == ("who5", "gad7")

    every = prepare_latent(_spec("who5_followup", "gad7_followup", phq9_sample="all"), frame)
    assert "gad7_not_elevated_at_baseline" not in every.exclusions
    assert len(every.outcomes[1].y) == int(both.sum())


def test_declared_first_outcome_scales_phq9_by_the_range_ratio(frame):
    data = prepare_latent(_spec("gad7_followup", "phq9_followup"), frame)
    assert data.outcomes[1].prior_scale == pytest.approx(27.0 / 21.0)
    assert "phq9_not_elevated_at_baseline" in data.exclusions  # PHQ-9's sample as before


def test_higher_is_better_declaration_is_elevated_at_or_below_its_cutoff(frame):
    data = prepare_latent(_spec("who5_followup", "vitality_followup"), frame)
    vit = data.outcomes[1]
    assert vit.prior_scale == pytest.approx(50.0 / 100.0)
    c = data.frame.clients
    ok = c[["age", "male", "days_in_care", "vitality_followup", "vitality_baseline"]].notna()
    ok = ok.all(axis=1)
    assert len(vit.y) == int((ok & (c["vitality_baseline"] <= 20)).sum())
    assert vit.baseline.max() <= 20
    assert data.exclusions["vitality_not_elevated_at_baseline"] == int(
        (ok & (c["vitality_baseline"] > 20)).sum()
    )


def test_describe_names_the_declared_sample(frame):
    prepare_latent(_spec("who5_followup", "gad7_followup"), frame)  # declares GAD-7
    lines = data_variables(_spec("who5_followup", "gad7_followup"))
    assert any(
        "GAD-7 follow-up enters for clients elevated at baseline (GAD-7 baseline >= 10" in v
        and "measurement part and WHO-5" in v
        for v in lines
    )


# --- refusals ------------------------------------------------------------------------------------
def test_undeclared_outcome_is_refused_naming_spec_outcome_and_the_known_ones():
    plain = _frame(None)
    for outcomes in (("gad7_followup",), ("who5_followup", "gad7_followup")):
        with pytest.raises(DesignError) as err:
            prepare_latent(_spec(*outcomes), plain)
        text = str(err.value)
        assert "spec 'anxiety_latent'" in text
        assert "[measurement] outcome 'gad7_followup' is not declared" in text
        assert "no study.toml" in text and "[outcomes.gad7]" in text
        assert "'who5_followup'" in text and "'phq9_followup'" in text


def test_declared_second_outcome_without_cutoff_needs_every_client():
    frame = _frame({"vitality": Instrument("vitality", "Vitality", 0.0, 50.0, "higher")})
    with pytest.raises(DesignError) as err:
        prepare_latent(_spec("who5_followup", "vitality_followup"), frame)
    text = str(err.value)
    assert "spec 'anxiety_latent'" in text and "'vitality_followup'" in text
    assert "[outcomes.vitality] (Vitality) declares none" in text
    assert "elevated at <= the cut-off" in text and "phq9_sample = 'all'" in text
    data = prepare_latent(_spec("who5_followup", "vitality_followup", phq9_sample="all"), frame)
    assert data.outcomes[1].short == "vitality"


@pytest.mark.parametrize("outcomes", [["gad7_followup"], ["who5_followup", "gad7_followup"]])
def test_spec_takes_a_declared_outcome_name(outcomes):
    spec = parse_spec(
        f'extends = "alliance_latent_who5"\nname = "x"\noutcome = "{outcomes[0]}"\n'
        f"[measurement]\noutcomes = {outcomes!r}\n".replace("'", '"')
    )
    assert spec.measurement.outcomes == tuple(outcomes)


def test_spec_refuses_an_outcome_name_no_study_can_declare():
    with pytest.raises(SpecError) as err:
        _spec("who5_followup", "GAD-7")
    text = str(err.value)
    assert "[measurement]" in text and "unknown outcome(s) ['GAD-7']" in text
    assert "'<name>_followup'" in text and "[outcomes.<name>]" in text


# --- estimands, held-out measure, figure -----------------------------------------------------------
def _fake_posterior(outcomes: list[str]) -> xr.Dataset:
    rng = np.random.default_rng(0)
    c = {
        "outcome": outcomes,
        "subscale": ["goal", "bond"],
        "level": ["within", "between"],
        "care_type": ["therapist", "coach", "both"],
        "provider_type": ["therapist", "coach"],
    }

    def v(*dims):
        return (("chain", "draw", *dims), rng.normal(size=(2, 20, *(len(c[d]) for d in dims))))

    return xr.Dataset(
        {
            "mu_b": v("outcome", "subscale", "level"),
            "b": v("outcome", "care_type", "subscale", "level"),
            "sigma": v("outcome"),
        },
        coords=c,
    )


def test_estimands_take_the_instrument_name(frame):
    data = prepare_latent(_spec("who5_followup", "gad7_followup"), frame)
    spec = _spec("who5_followup", "gad7_followup")
    est = family_of(spec).estimands(spec, _fake_posterior(["who5", "gad7"]), latent_scales(data))
    assert {"b_goal_within", "gad7:b_goal_within", "gad7:sigma"} <= set(est.data_vars)
    assert est["gad7:b_goal_within"].attrs["units"].startswith("GAD-7 points")
    assert est["b_goal_within"].attrs["units"].startswith("WHO-5 points")

    spec = _spec("gad7_followup")
    scales = latent_scales(prepare_latent(spec, frame))
    est = family_of(spec).estimands(spec, _fake_posterior(["gad7"]), scales)
    assert "b_goal_within" in est and not any(":" in str(n) for n in est.data_vars)
    assert est["b_goal_within"].attrs["units"].startswith("GAD-7 points")


@pytest.fixture
def undeclared_anx(monkeypatch):
    """No study in this process declares ``anx`` (another test file may have loaded one)."""
    from alliance_bayes.data import instruments

    monkeypatch.delitem(instruments._DECLARED, "anx", raising=False)


def test_outcome_units_read_the_fit_record_without_the_study(undeclared_anx):
    spec = _spec("who5_followup", "anx_followup", phq9_sample="all")
    recorded = {"declared_outcomes": {"anx": {"units": "ANX points"}}}
    assert outcome_units(spec, recorded) == {"who5": "WHO-5 points", "anx": "ANX points"}
    with pytest.raises(SpecError, match=r"'anx_followup' is declared by no study loaded"):
        outcome_units(spec, {})


def test_heldout_step_uses_the_declared_range_and_resolution(frame):
    spec = _spec("gad7_followup")
    data = prepare_latent(spec, frame)
    y = data.outcomes[0].y
    mu, sigma = np.full((1, len(y)), 7.3), np.full((1, len(y)), 2.2)
    got = _step(spec, data, mu, sigma, None)[0]
    # half-width 0.5 (GAD-7 moves in whole points); the floor 0 holds the mass below 0.5
    want = np.where(
        y <= 0,
        stats.norm.logcdf((0.5 - 7.3) / 2.2),
        np.log(stats.norm.cdf((y + 0.5 - 7.3) / 2.2) - stats.norm.cdf((y - 0.5 - 7.3) / 2.2)),
    )
    want = np.where(y >= 21, stats.norm.logsf((20.5 - 7.3) / 2.2), want)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_second_outcome_ppc_reads_the_recorded_declaration(tmp_path, undeclared_anx):
    rng = np.random.default_rng(3)
    clients = [f"C{i}" for i in range(30)]
    base = rng.integers(10, 21, 30).astype(float)
    obs = np.clip(base - 4 + rng.normal(0, 3, 30).round(), 0, 21)
    rep = np.clip(base - 4 + rng.normal(0, 3, (2, 40, 30)), 0, 21)
    dims = ("client_anx",)
    dt = xr.DataTree.from_dict(
        {
            "observed_data": xr.Dataset({"y_anx": (dims, obs)}, coords={dims[0]: clients}),
            "posterior_predictive": xr.Dataset(
                {"y_anx": (("chain", "draw", *dims), rep)}, coords={dims[0]: clients}
            ),
            "constant_data": xr.Dataset({"baseline_anx": (dims, base)}, coords={dims[0]: clients}),
        }
    )
    # no study declares "anx" in this process: without the fit's record there is no range
    assert plot_phq9_ppc(dt, tmp_path, formats=("png",)) is None
    meta = {"scales": {"declared_outcomes": {"anx": {"label": "ANX", "range": [0, 21]}}}}
    made = plot_phq9_ppc(dt, tmp_path, meta=meta, formats=("png",))
    assert made is not None and made.name == "ppc_anx"
    assert (tmp_path / "ppc_anx.png").is_file()


# --- recovery --------------------------------------------------------------------------------------
@pytest.mark.mcmc
@pytest.mark.slow
def test_declared_outcome_recovers_the_planted_values(frame, fitted):
    """GAD-7 follow-up planted with baseline slope 0.6, residual SD sqrt(4 + 1/12) and no alliance
    effect: each within 3.5 posterior SDs (2 chains x 400 draws)."""
    spec = _spec("gad7_followup")
    _, dt = fitted(
        "latent_gad7", spec, frame, draws_only=True, draws=400, tune=400, chains=2, seed=3
    )
    post = dt["posterior"].to_dataset()
    for name, truth in (("b_baseline", PLANTED_SLOPE), ("sigma", PLANTED_SIGMA)):
        draws = post[name].sel(outcome="gad7")
        z = (float(draws.mean()) - truth) / float(draws.std())
        assert abs(z) < 3.5, (name, float(draws.mean()), truth)
    mu_b = post["mu_b"].sel(outcome="gad7")
    z = mu_b.mean(("chain", "draw")) / mu_b.std(("chain", "draw"))
    assert (np.abs(z.values) < 3.5).all(), z.values


def test_describe_names_every_cut_outcome_and_a_declared_data_rule(frame):
    """PHQ-9 first and GAD-7 second: both samples are cut and the text says so; a ``[data]`` rule
    naming a declared outcome is written with its declared cut-off (it raised a KeyError)."""
    prepare_latent(_spec("who5_followup", "gad7_followup"), frame)  # declares GAD-7
    both = data_variables(_spec("phq9_followup", "gad7_followup"))
    line = next(v for v in both if "follow-up enters" in v)
    assert "PHQ-9 follow-up enters for clients elevated at baseline (" in line
    assert "GAD-7 follow-up enters for clients elevated at baseline (GAD-7 baseline >= 10" in line
    assert line.endswith("every client informs the measurement part.")
    spec = _spec("who5_followup", "phq9_followup")
    spec = replace(spec, data=replace(spec.data, elevated_by="gad7"))
    line = next(v for v in data_variables(spec) if "follow-up enters" in v)
    assert "PHQ-9 follow-up enters for clients elevated at baseline (GAD-7 baseline >= 10)" in line
