"""A study declares its own client covariates in study.toml, and a regression spec adjusts for them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from tests.data_builders import add_column, tiny_tables, write_csv_study

from alliance_bayes.data.contract import CLIENT_COLUMNS, DataContractError
from alliance_bayes.data.covariates import DERIVED_CLIENT_COLUMNS, Covariate, parse_covariates
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.errors import DesignError, SpecError
from alliance_bayes.model.regression.design import prepare
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.spec import load_spec, parse_spec

DECLARED = """
ignore = ["notes"]

[covariates.diagnosis]
type = "categorical"
reference = "depression"
label = "Primary diagnosis"

[covariates.employed]
type = "binary"

[covariates.income]
type = "numeric"
"""

SPEC = """
name = "adjusted"
outcome = "who5_followup"

[predictors]
covariates = {covariates}
alliance = "composite"

[hierarchy]
care_type_pooling = false
care_type_intercepts = false
provider_intercepts = false
provider_slopes = false
"""


def _study(tmp_path, settings=DECLARED, **columns):
    tables = tiny_tables()
    for name, values in columns.items():
        add_column(tables["clients"], name, values)
    folder = write_csv_study(tmp_path, tables)
    (folder / "study.toml").write_text(settings, encoding="utf-8")
    return folder


GOOD = {
    "diagnosis": ["depression", "anxiety", "", "ptsd", "depression"],
    "employed": ["1", "0", "1", "", "0"],
    "income": ["10.5", "20", "", "30", "40"],
}


def test_declarations_parse():
    found, problems = parse_covariates(
        {
            "diagnosis": {"type": "categorical", "reference": "depression", "label": "Dx"},
            "employed": {"type": "binary", "levels": ["no", "yes"], "reference": "no"},
            "stage": {"type": "categorical", "reference": 1},
            "income": {"type": "numeric"},
        }
    )
    assert problems == []
    assert found["diagnosis"] == Covariate("diagnosis", "categorical", "Dx", "depression")
    assert found["employed"].coded and found["employed"].levels == ("no", "yes")
    assert found["stage"].reference == "1"  # levels coded by numbers are text, as read
    assert not found["income"].coded and found["income"].shown == "income"


def test_every_declaration_problem_at_once(tmp_path):
    folder = _study(
        tmp_path,
        '[covariates.a]\ntype = "ordinal"\n'
        '[covariates.b]\ntype = "categorical"\n'
        '[covariates.c]\ntype = "numeric"\nreference = "x"\nunit = "EUR"\n'
        '[covariates.d]\ntype = "binary"\nlevels = ["no", "yes", "maybe"]\nreference = "no"\n'
        '[covariates.Bad]\ntype = "numeric"\n',
        **GOOD,
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert "[covariates.a].type: one of ['numeric', 'binary', 'categorical'], got 'ordinal'" in text
    assert "[covariates.b].reference: required for a categorical covariate" in text
    assert "[covariates.c]: unknown key(s) ['unit']" in text
    assert "[covariates.c].reference: only a categorical or binary covariate has one" in text
    assert "[covariates.d].levels: two levels for a binary covariate" in text
    assert "[covariates.Bad]: a name in lower case" in text
    declared = [e for e in err.value.problems if str(e.file).endswith("study.toml")]
    assert len(declared) == 6
    # the clients table is checked in the same pass: each wrongly declared covariate's column
    # is still required (absent here), and the columns nothing declares are refused
    others = {e.column: e for e in err.value.problems if e not in declared}
    assert {"a", "b", "c", "d", "Bad"} <= set(others)
    assert set(others) - {"a", "b", "c", "d", "Bad"} == {"notes", *GOOD}
    assert all("a column named" in others[c].expected for c in ("a", "b", "c", "d", "Bad"))


def test_every_data_problem_at_once(tmp_path):
    folder = _study(
        tmp_path,
        DECLARED
        + '[covariates.stage]\ntype = "categorical"\nreference = "z"\n'
        + '[covariates.absent]\ntype = "numeric"\n'
        + '[covariates.country]\ntype = "categorical"\nreference = "FR"\n'
        + '[covariates.site]\ntype = "categorical"\nreference = "north"\n',
        diagnosis=["depression", "anxiety", "", "major depression", "depression"],
        employed=["1", "2", "1", "", "yes"],
        income=["10.5", "abc", "", "30", "40"],
        stage=["a", "b", "c", "a", "b"],
        site=["north", "south", "east", "", "north"],
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    by_column = {e.column: e for e in err.value.problems}
    # a name the contract already uses: the contract column is checked as the contract says
    assert "'country'" in str(err.value) and "no contract, derived" in str(err.value)
    assert by_column["diagnosis"].rows == [4]
    assert "letters, digits" in by_column["diagnosis"].expected
    assert by_column["employed"].rows == [2, 5] and "0 or 1" in by_column["employed"].expected
    assert by_column["income"].rows == [2] and "a number" in by_column["income"].expected
    assert "reference level 'z'" in by_column["stage"].expected
    assert "levels found: a, b, c" in by_column["stage"].expected
    assert "a column named 'absent'" in by_column["absent"].expected
    assert "site" not in by_column  # a valid declared column is neither refused nor unknown
    assert len(err.value.problems) == 6
    assert all(str(e.file).endswith(("clients.csv", "study.toml")) for e in err.value.problems)


def test_undeclared_column_still_refused(tmp_path):
    folder = _study(tmp_path, 'ignore = ["notes"]\n', diagnosis=GOOD["diagnosis"])
    with pytest.raises(DataContractError, match="diagnosis"):
        load_study(folder)


def test_declared_columns_reach_the_frame(tmp_path):
    study = load_study(_study(tmp_path, **GOOD))
    assert set(study.covariates) == {"diagnosis", "employed", "income"}
    frame = build_frame(study)
    by_id = dict(zip(frame.clients["client"], frame.clients["diagnosis"], strict=True))
    # pseudonyms in sorted-id order: C00001 = 007, C00002 = a2, C00003 = a3, C00004 = a4 …
    assert by_id["C00001"] == "anxiety" and by_id["C00003"] == "depression"
    assert pd.isna(by_id["C00002"])
    assert frame.clients["income"].dtype == np.float64
    assert frame.covariates["diagnosis"].reference == "depression"


def test_no_declared_name_shadows_a_frame_column(shipped_study):
    """The reserved names are exactly the frame's own client columns (kept in step)."""
    frame = build_frame(shipped_study)
    own = set(frame.clients.columns) - set(CLIENT_COLUMNS)
    assert own <= set(DERIVED_CLIENT_COLUMNS)


def _hand_frame():
    """The small simulated study with diagnoses in turn and income = row number: a design in
    closed form."""
    sim = simulate_study(SimulationConfig.small(), seed=2)
    clients = sim.clients.copy()
    n = len(clients)
    levels = np.array(["depression", "anxiety", "ptsd"])[np.arange(n) % 3]
    clients["diagnosis"] = levels
    clients["income"] = np.arange(n, dtype=float)
    declared, _ = parse_covariates(
        {
            "diagnosis": {"type": "categorical", "reference": "depression"},
            "income": {"type": "numeric"},
        }
    )
    study = RawStudy.from_frames(sim.providers, clients, sim.sessions, covariates=declared)
    return build_frame(study)


def test_dummy_coding_in_closed_form():
    frame = _hand_frame()
    spec = parse_spec(SPEC.format(covariates='["age", "diagnosis", "income"]'), "adjusted.toml")
    data = prepare(spec, frame)
    assert data.covariate_names == ("age", "diagnosis[anxiety]", "diagnosis[ptsd]", "income")
    c = data.frame.clients
    for j, level in ((1, "anxiety"), (2, "ptsd")):
        d = (c["diagnosis"] == level).to_numpy(float)
        # centred at the level's share, not scaled: a one-unit step is the level-vs-reference gap
        assert data.covariate_means[j] == pytest.approx(d.mean())
        assert data.covariate_sds[j] == 1.0
        np.testing.assert_allclose(data.covariates[:, j], d - d.mean())
    for j, name in ((0, "age"), (3, "income")):
        x = c[name].to_numpy(float)
        np.testing.assert_allclose(data.covariates[:, j], (x - x.mean()) / x.std())
    coding = data.scales()["covariate_coding"]
    assert set(coding) == {"diagnosis", "income"}  # built-in covariates are not recorded
    assert coding["diagnosis"]["reference"] == "depression"
    assert coding["diagnosis"]["levels"] == ["anxiety", "ptsd"]
    counts = coding["diagnosis"]["clients"]
    assert counts == {
        v: int((c["diagnosis"] == v).sum()) for v in ("depression", "anxiety", "ptsd")
    }
    assert coding["income"]["type"] == "numeric"


def test_missing_covariate_values_are_counted_exclusions():
    frame = _hand_frame()
    clients = frame.clients.copy()
    clients.loc[[0, 1, 2], "diagnosis"] = np.nan
    clients.loc[[3], "income"] = np.nan
    clients.loc[[0], "income"] = np.nan  # already left out for its diagnosis
    frame = dataclasses.replace(frame, clients=clients)
    spec = parse_spec(SPEC.format(covariates='["diagnosis", "income"]'), "adjusted.toml")
    data = prepare(spec, frame)
    followup = frame.clients["who5_followup"].notna()
    assert data.exclusions["missing_diagnosis"] == int(followup[[0, 1, 2]].sum())
    assert data.exclusions["missing_income"] == int(followup[[3]].sum())


def test_reference_level_must_be_in_the_model():
    frame = _hand_frame()
    clients = frame.clients.assign(
        diagnosis=frame.clients["diagnosis"].replace("depression", "anxiety")
    )
    frame = dataclasses.replace(frame, clients=clients)
    spec = parse_spec(SPEC.format(covariates='["diagnosis"]'), "adjusted.toml")
    with pytest.raises(DesignError, match="reference level 'depression' of covariate"):
        prepare(spec, frame)


def test_undeclared_covariate_refused_at_design_time(shipped_study):
    spec = parse_spec(SPEC.format(covariates='["age", "diagnoses"]'), "adjusted.toml")
    with pytest.raises(DesignError) as err:
        prepare(spec, _hand_frame())
    text = str(err.value)
    assert "'adjusted'" in text and "'diagnoses' (did you mean 'diagnosis'?)" in text
    assert "['diagnosis', 'income'] (declared)" in text and "'days_in_care'" in text
    with pytest.raises(DesignError, match=r"no study\.toml"):
        prepare(spec, build_frame(shipped_study))


def test_spec_accepts_declared_names_in_every_family():
    spec = load_spec("who5_change", predictors={"covariates": ["age", "diagnosis"]})
    assert spec.declared_covariates == ("diagnosis",)
    assert load_spec("who5_change").declared_covariates == ()
    with pytest.raises(SpecError, match="unknown covariate"):
        load_spec("who5_change", predictors={"covariates": ["Diagnosis"]})
    with pytest.raises(SpecError, match="each name once"):
        load_spec("who5_change", predictors={"covariates": ["age", "age"]})
    latent = load_spec("alliance_latent_who5", predictors={"covariates": ["age", "diagnosis"]})
    assert latent.declared_covariates == ("diagnosis",)
    change = load_spec("wellbeing_change", predictors={"covariates": ["age", "diagnosis"]})
    assert change.declared_covariates == ("diagnosis",)


def test_estimand_names_and_units():
    draws = np.arange(6.0).reshape(2, 3)
    columns = ["age", "diagnosis[anxiety]", "employed", "income"]
    b = xr.DataArray(
        np.stack([draws] * len(columns), axis=-1),
        dims=("chain", "draw", "covariate"),
        coords={"covariate": columns},
    )
    coding = {
        "diagnosis": {
            "type": "categorical",
            "label": "Primary diagnosis",
            "reference": "depression",
        },
        "employed": {"type": "binary", "label": "employed", "level": "1", "reference": "0"},
        "income": {"type": "numeric", "label": "Household income"},
    }
    out = compute_estimands(
        xr.Dataset({"b_covariate": b}),
        outcome_units="WHO-5 points",
        scales={"covariate_coding": coding, "outcome_sd": 20.0},
    )
    assert out["b_age"].attrs["units"] == "WHO-5 points per year of age"
    anxiety = out["b_diagnosis[anxiety]"].attrs
    assert anxiety["units"] == "WHO-5 points, anxiety vs depression (reference)"
    assert anxiety["reference"] == "depression" and anxiety["covariate"] == "diagnosis"
    assert out["b_employed"].attrs["units"] == "WHO-5 points, difference, 1 vs 0 (reference)"
    assert out["b_income"].attrs["units"] == "WHO-5 points per unit of Household income"
    bare = compute_estimands(xr.Dataset({"b_covariate": b}), outcome_units="WHO-5 points")
    assert bare["b_diagnosis[anxiety]"].attrs["units"].endswith("anxiety vs the reference level")


def _tiny_frames() -> dict[str, pd.DataFrame]:
    frames = {n: pd.DataFrame(t["rows"], columns=t["columns"]) for n, t in tiny_tables().items()}
    frames["providers"] = frames["providers"][frames["providers"].provider_id != "T9"]
    return frames


def test_a_long_export_carries_declared_covariates(tmp_path):
    frames = _tiny_frames()
    frames["clients"] = frames["clients"].assign(diagnosis=GOOD["diagnosis"])
    long = (
        frames["sessions"]
        .merge(frames["clients"], on="client_id")
        .merge(frames["providers"], on="provider_id")
    )
    long.loc[long.client_id == "a3", "diagnosis"] = ["anxiety", "", "", ""]  # a3 has 4 sessions
    folder = tmp_path / "long"
    folder.mkdir()
    long.to_csv(folder / "sessions_long.csv", index=False)
    settings = 'ignore = ["notes"]\n[covariates.diagnosis]\ntype = "categorical"\n'
    (folder / "study.toml").write_text(settings + 'reference = "depression"\n')
    with pytest.raises(DataContractError, match="one value per client") as err:
        load_study(folder)  # a client's repeated covariate must agree on every row
    assert err.value.problems[0].column == "diagnosis"
    long.loc[long.client_id == "a3", "diagnosis"] = "depression"
    long.to_csv(folder / "sessions_long.csv", index=False)
    study = load_study(folder)
    by_id = dict(zip(study.clients["client_id"], study.clients["diagnosis"], strict=True))
    assert by_id["a3"] == "depression" and by_id["007"] == "anxiety"


def test_spss_value_labels_of_a_categorical_covariate_are_its_levels(tmp_path):
    pyreadstat = pytest.importorskip("pyreadstat")
    frames = _tiny_frames()
    folder = tmp_path / "spss"
    folder.mkdir()
    for name in ("providers", "sessions"):
        frames[name].to_csv(folder / f"{name}.csv", index=False)
    clients = frames["clients"].drop(columns="notes")
    numeric = ["age", "who5_baseline", "who5_followup", "phq9_baseline", "phq9_followup"]
    clients[numeric] = clients[numeric].replace("", np.nan).astype(float)
    clients["diagnosis"] = [1.0, 2.0, np.nan, 3.0, 1.0]
    labels = {"diagnosis": {1.0: "depression", 2.0: "anxiety", 3.0: "ptsd"}}
    pyreadstat.write_sav(clients, str(folder / "clients.sav"), variable_value_labels=labels)
    (folder / "study.toml").write_text(
        '[covariates.diagnosis]\ntype = "categorical"\nreference = "depression"\n'
    )
    study = load_study(folder)
    assert study.clients["diagnosis"].tolist()[:2] == ["depression", "anxiety"]
    assert any(c.column == "diagnosis" and c.kind == "value labels" for c in study.conversions)


SHIFT = {"anxiety": 6.0, "ptsd": -4.0}  # planted WHO-5 follow-up differences vs depression
INCOME = 0.2  # planted WHO-5 points per unit of income


@pytest.mark.slow
def test_planted_level_shifts_are_recovered(medium_study):
    import alliance_bayes as ab

    seed = 3
    sim, _ = medium_study
    rng = np.random.default_rng(seed)
    clients = sim.clients.copy()
    n = len(clients)
    diagnosis = rng.choice(["depression", "anxiety", "ptsd"], size=n, p=[0.4, 0.35, 0.25])
    income = rng.normal(50, 15, n).round(1)
    shift = pd.Series(diagnosis).map(SHIFT).fillna(0.0).to_numpy() + INCOME * (income - 50)
    clients["who5_followup"] = np.clip(clients["who5_followup"] + shift, 0, 100)
    clients["diagnosis"] = diagnosis
    clients["income"] = income
    declared, _ = parse_covariates(
        {
            "diagnosis": {"type": "categorical", "reference": "depression"},
            "income": {"type": "numeric"},
        }
    )
    study = RawStudy.from_frames(sim.providers, clients, sim.sessions, covariates=declared)
    covariates = ["age", "male", "days_in_care", "diagnosis", "income"]
    # The censored default: the shifted follow-ups were clipped to 0-100 as WHO-5 is.
    spec = load_spec("who5_change", predictors={"covariates": covariates})
    fit = ab.fit(spec, study, draws=1000, tune=500, chains=4, seed=1, progress=False)
    assert fit.passed, fit.gate
    summary = fit.summary()
    planted = {f"b_diagnosis[{k}]": v for k, v in SHIFT.items()} | {"b_income": INCOME}
    print(summary.loc[list(planted), ["mean", "sd", "hdi95_low", "hdi95_high"]])
    for name, truth in planted.items():
        assert summary.loc[name, "hdi95_low"] < truth < summary.loc[name, "hdi95_high"], name
    assert summary.loc["b_diagnosis[anxiety]", "units"].endswith("vs depression (reference)")
    assert fit.meta["scales"]["covariate_coding"]["diagnosis"]["reference"] == "depression"


def test_a_wrongly_declared_covariate_whose_column_is_there_adds_no_problem_of_its_own(tmp_path):
    folder = _study(tmp_path, '[covariates.diagnosis]\ntype = "categorical"\n', **GOOD)
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    problems = [str(e) for e in err.value.problems]
    assert any("[covariates.diagnosis].reference: required" in p for p in problems)
    # the column is in the file: no problem says it is missing, none is about it at all
    assert not [e for e in err.value.problems if e.column == "diagnosis"], problems


def test_a_missing_value_code_in_a_numeric_covariate_is_refused_by_name(tmp_path):
    income = ["10.5", "-99", "", "30", "-999"]
    folder = _study(tmp_path, '[covariates.income]\ntype = "numeric"\n', income=income)
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    (problem,) = [e for e in err.value.problems if e.column == "income"]
    assert "-99 looks like a missing-value code" in str(problem)
    assert "rows 2, 5" in str(problem) or ("2" in str(problem) and "5" in str(problem))
