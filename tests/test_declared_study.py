"""A study describes its own instruments: shipped outcome templates and a declared age range."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from tests.data_builders import add_column, csv_text, set_cell, tiny_tables, write_csv_study

from alliance_bayes.data.contract import AGE_RANGE, DataContractError, parse_age_range
from alliance_bayes.data.instruments import BUILT_IN, SHIPPED
from alliance_bayes.data.load import RawStudy, load_study

# Scores valid for every shipped template (each runs from 0 to at least 21).
SCORES = (["12", "0", "3", "21", ""], ["8", "", "0", "20", "4"])
# Ages of the tiny study's five clients inside [12, 25], both bounds included.
YOUNG = ["12", "25", "17", "20", "13"]


def _study(tmp_path, toml, columns=None, ages=None):
    tables = tiny_tables()
    for column, values in (columns or {}).items():
        add_column(tables["clients"], column, values)
    for row, age in enumerate(ages or [], start=1):
        set_cell(tables["clients"], row, "age", age)
    folder = write_csv_study(tmp_path / "study", tables)
    (folder / "study.toml").write_text('ignore = ["notes"]\n' + toml, encoding="utf-8")
    return folder


def _scores(name, baseline=SCORES[0], followup=SCORES[1]):
    return {f"{name}_baseline": baseline, f"{name}_followup": followup}


def _frames():
    """The tiny study as three pandas DataFrames of text cells (as a user would hand them over)."""
    return [
        pd.read_csv(io.StringIO(csv_text(t)), dtype=str, keep_default_na=False)
        for t in tiny_tables().values()
    ]


# --------------------------------------------------------------------------------------------------
# Shipped outcome templates
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gad7", "core10", "oq45"])
def test_a_shipped_template_loads_by_its_name_alone(tmp_path, name):
    folder = _study(tmp_path, f"[outcomes.{name}]\n", _scores(name))
    study = load_study(folder)
    assert study.outcomes == {name: SHIPPED[name]}
    assert study.clients[f"{name}_baseline"].tolist()[:4] == [12.0, 0.0, 3.0, 21.0]


def test_the_shipped_values_are_the_published_ones():
    core10, oq45, gad7 = SHIPPED["core10"], SHIPPED["oq45"], SHIPPED["gad7"]
    assert (core10.label, core10.range, core10.better, core10.step) == (
        "CORE-10",
        (0.0, 40.0),
        "lower",
        1.0,
    )
    assert core10.cutoff == 11.0 and core10.reliability is None
    assert "doi:10.1080/14733145.2012.729069" in core10.source
    assert (oq45.label, oq45.range, oq45.better, oq45.step) == ("OQ-45", (0.0, 180.0), "lower", 1.0)
    assert oq45.cutoff == 64.0 and oq45.reliability == 0.84
    assert "doi:10.1002/(SICI)1099-0879(199612)3:4<249::AID-CPP106>3.0.CO;2-S" in oq45.source
    assert (gad7.range, gad7.cutoff, gad7.reliability) == ((0.0, 21.0), 10.0, None)
    assert "doi:10.1001/archinte.166.10.1092" in gad7.source
    # every template and built-in instrument cites where its facts come from
    for instrument in [*SHIPPED.values(), *BUILT_IN.values()]:
        assert "doi:10." in instrument.source, instrument.name
    assert oq45.units == "OQ-45 points"


def test_a_declared_key_replaces_the_shipped_one(tmp_path):
    toml = '[outcomes.core10]\ncutoff = 10\nlabel = "CORE-10 (clinic)"\n'
    study = load_study(_study(tmp_path, toml, _scores("core10")))
    core10 = study.outcomes["core10"]
    assert (core10.cutoff, core10.label) == (10.0, "CORE-10 (clinic)")
    assert (core10.range, core10.better, core10.source) == (
        (0.0, 40.0),
        "lower",
        SHIPPED["core10"].source,
    )


def test_another_source_drops_the_shipped_reliability(tmp_path):
    toml = '[outcomes.oq45]\nsource = "our clinic\'s manual"\n'
    study = load_study(_study(tmp_path, toml, _scores("oq45")))
    assert study.outcomes["oq45"].reliability is None
    assert study.outcomes["oq45"].cutoff == 64.0
    toml = '[outcomes.oq45]\nreliability = 0.9\nsource = "our clinic\'s manual"\n'
    study = load_study(_study(tmp_path, toml, _scores("oq45")))
    assert study.outcomes["oq45"].reliability == 0.9


def test_a_core10_followup_outside_0_to_40_is_refused_with_column_and_rows(tmp_path):
    followup = ["8", "41", "0", "-1", "40"]
    folder = _study(tmp_path, "[outcomes.core10]\n", _scores("core10", followup=followup))
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert "clients.csv, column 'core10_followup', rows 2, 4 (lines 3, 5)" in text
    assert "a CORE-10 score (declared [outcomes.core10]) between 0 and 40" in text
    assert "got 41, -1" in text


# --------------------------------------------------------------------------------------------------
# A declared age range
# --------------------------------------------------------------------------------------------------
def test_without_a_declaration_ages_are_18_to_100(tmp_path):
    study = load_study(_study(tmp_path, ""))
    assert study.age_range == AGE_RANGE == (18.0, 100.0)
    with pytest.raises(DataContractError, match=r"an age in years between 18 and 100; got 17"):
        load_study(_study(tmp_path, "", ages=["17"]))


def test_a_declared_age_range_admits_its_ages(tmp_path):
    study = load_study(_study(tmp_path, "age_range = [12, 25]\n", ages=YOUNG))
    assert study.age_range == (12.0, 25.0)
    assert study.clients["age"].tolist() == [12.0, 25.0, 17.0, 20.0, 13.0]


def test_ages_outside_the_declared_range_are_refused_with_every_other_problem(tmp_path):
    ages = ["11", "25", "26", "20", "13"]
    folder = _study(tmp_path, "age_range = [12, 25]\n", ages=ages)
    clients = folder / "clients.csv"
    # a second, unrelated problem in the same file: both are reported at once
    clients.write_text(
        clients.read_text(encoding="utf-8").replace(",60,64,", ",60,104,"), encoding="utf-8"
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert len(err.value.problems) == 2
    assert "column 'age', rows 1, 3 (lines 2, 4)" in text
    assert "an age in years between 12 and 25" in text
    assert f"age_range = [12, 25] declared in {folder / 'study.toml'}" in text
    assert "got 11, 26" in text
    assert "who5_followup" in text


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("[12]", "got [12]"),
        ("[12, 25, 30]", "got [12, 25, 30]"),
        ('["12", "25"]', "got ['12', '25']"),
        ("[true, 25]", "got [True, 25]"),
        ("12", "got 12"),
        ('"12-25"', "got '12-25'"),
        ("[25, 12]", "(low >= high)"),
        ("[12, 12]", "(low >= high)"),
        ("[-1, 25]", "(a negative age)"),
    ],
)
def test_a_malformed_age_range_is_refused(tmp_path, value, why):
    folder = _study(tmp_path, f"age_range = {value}\n")
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert str(folder / "study.toml") in text
    assert "age_range: [low, high], two ages in years with 0 <= low < high" in text
    assert why in text


def test_a_malformed_age_range_is_listed_with_the_other_declaration_problems(tmp_path):
    toml = 'age_range = [25, 12]\n[outcomes.gad7]\nbetter = "down"\n[covariates.x]\ntype = "y"\n'
    with pytest.raises(DataContractError) as err:
        load_study(_study(tmp_path, toml))
    text = str(err.value)
    declared = [e for e in err.value.problems if str(e.file).endswith("study.toml")]
    assert len(declared) == 3
    # checked with the tables, which lack the wrongly declared covariate's column
    assert [e.column for e in err.value.problems if e not in declared] == ["x"]
    assert "age_range: [low, high]" in text
    assert "[outcomes.gad7].better" in text and "[covariates.x].type" in text


def test_an_age_range_below_a_table_heading_is_named_as_misplaced(tmp_path):
    # TOML reads a key below a heading as that table's: the study would silently keep 18–100
    with pytest.raises(DataContractError, match=r"age_range belongs at the top of the file"):
        load_study(_study(tmp_path, "[outcomes.gad7]\nage_range = [12, 25]\n", _scores("gad7")))


def test_parse_age_range_takes_floats_and_pairs():
    assert parse_age_range([12, 25.5]) == ((12.0, 25.5), [])
    assert parse_age_range((0, 18)) == ((0.0, 18.0), [])
    assert parse_age_range([float("nan"), 25])[0] is None


def test_from_frames_checks_the_declared_age_range():
    providers, clients, sessions = _frames()
    clients["age"] = YOUNG
    study = RawStudy.from_frames(
        providers, clients, sessions, ignore_columns=["notes"], age_range=(12, 25)
    )
    assert study.age_range == (12.0, 25.0)
    with pytest.raises(DataContractError, match="between 18 and 100"):
        RawStudy.from_frames(providers, clients, sessions, ignore_columns=["notes"])
    clients.loc[2, "age"] = "30"
    with pytest.raises(DataContractError) as err:
        RawStudy.from_frames(
            providers, clients, sessions, ignore_columns=["notes"], age_range=(12, 25)
        )
    assert "row 3: expected an age in years between 12 and 25 (age_range = [12, 25] declared)" in (
        str(err.value)
    )
    with pytest.raises(
        DataContractError, match=r"age_range:\s+expected \[low, high\].*\(low >= high\)"
    ):
        RawStudy.from_frames(
            providers, clients, sessions, ignore_columns=["notes"], age_range=(25, 12)
        )
