"""Every problem of a study folder in one report: declarations, cells and the checks across columns.

Each test plants several mistakes in the tiny study (:mod:`data_builders`) and checks that one
load reports each of them, where it is and what was expected, and nothing that is not a mistake.
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.data.alliance import parse_alliance
from alliance_bayes.data.covariates import parse_covariates
from alliance_bayes.data.instruments import parse_declarations
from alliance_bayes.data.load import Conversion
from data_builders import add_column, csv_text, set_cell, tiny_tables, write_csv_study

needs_pyreadstat = pytest.mark.skipif(
    importlib.util.find_spec("pyreadstat") is None, reason="SPSS files need pyreadstat"
)


def _problems(folder):
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(folder)
    return info.value.problems


def _in(problems, name):
    """The problems of one file (by name)."""
    return [p for p in problems if str(p.file).endswith(name)]


# ---- study.toml: an unknown key hides nothing ----------------------------------------------------
def test_an_unknown_key_is_named_with_a_suggestion_and_everything_else_is_checked(tmp_path):
    tables = tiny_tables()
    set_cell(tables["clients"], 2, "age", "15")  # a young client, fine under the range meant
    set_cell(tables["clients"], 3, "age", "old")  # no age under any range
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text(
        'age_range = [25, 12]\nignor = ["notes"]\n'
        '[outcomes.gad7x]\nlabel = "GAD"\nrange = [0, 21]\nbetter = "down"\n'
        '[covariates.site]\ntype = "categorical"\n',
        encoding="utf-8",
    )
    problems = _problems(folder)
    declared = [p.expected for p in _in(problems, "study.toml")]
    assert len(declared) == 4
    assert declared[0].startswith("only the key ignore") and declared[0].endswith(
        "got 'ignor' (did you mean 'ignore'?)"
    )
    assert "[outcomes.gad7x].better: 'lower' or 'higher', got 'down'" in declared
    assert any(d.startswith("[covariates.site].reference: required") for d in declared)
    assert any(d.startswith("age_range:") and "(low >= high)" in d for d in declared)
    # the tables are checked in the same pass: the declared covariate's column is absent, the
    # column the misspelled key meant to ignore is refused, the age that is no number is named;
    # the age of 15 waits for the age range (it is not refused against 18–100)
    clients = {p.column: p for p in _in(problems, "clients.csv")}
    assert set(clients) == {"site", "notes", "age"}
    assert "a column named 'site'" in clients["site"].expected
    assert clients["age"].rows == [3] and clients["age"].got == ["old"]
    assert len(problems) == 7


def test_a_wrong_alliance_declaration_leaves_the_session_columns_unjudged(tmp_path):
    tables = tiny_tables()
    set_cell(tables["sessions"], 4, "session_date", "2021-02-30")  # no such day
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text(
        'ignore = ["notes"]\n[alliance]\ninstrument = "wai_sx"\n', encoding="utf-8"
    )
    problems = _problems(folder)
    assert [(p.column, p.rows) for p in problems] == [(None, []), ("session_date", [4])]
    assert "got 'wai_sx' (did you mean 'wai_s'?)" in problems[0].expected


def test_an_age_range_below_a_heading_leaves_the_ages_waiting_for_it(tmp_path):
    tables = tiny_tables()
    set_cell(tables["clients"], 2, "age", "15")
    add_column(tables["clients"], "income", ["1", "2", "3", "4", "5"])
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text(
        'ignore = ["notes"]\n[covariates.income]\ntype = "numeric"\nage_range = [12, 25]\n',
        encoding="utf-8",
    )
    (problem,) = _problems(folder)  # not the age of 15 against 18–100 as well
    assert "age_range belongs at the top of the file" in problem.expected


def test_a_wrong_care_reference_leaves_the_provider_types_checked(tmp_path):
    tables = tiny_tables()
    set_cell(tables["providers"], 2, "provider_type", "Coach")
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text(
        'ignore = ["notes"]\nprovider_types = ["therapist", "coach"]\ncare_reference = "nurse"\n',
        encoding="utf-8",
    )
    reference, kind = _problems(folder)
    assert reference.expected.startswith("care_reference: one of the care types")
    assert (kind.column, kind.rows, kind.got) == ("provider_type", [2], ["Coach"])


# ---- cross-column checks beside cell problems ----------------------------------------------------
def _indexed_sessions(tables):
    """The tiny sessions with each session's index within its client (worked out by date)."""
    add_column(
        tables["sessions"],
        "session_index",
        ["4", "2", "1", "1", "1", "2", "2", "3", "3", "1", "2", "2", "1"],
    )


def test_the_checks_across_columns_run_on_the_valid_rows_beside_the_bad_cells(tmp_path):
    tables = tiny_tables()
    # days by the dates: a3 3, 007 14, a2 28, a5 2 (2020 is a leap year), a4 0
    add_column(tables["clients"], "days_in_care", ["99", "14", "30", "2", "0"])
    set_cell(tables["clients"], 1, "first_session", "12/30/2020")  # a3: no date, not compared
    _indexed_sessions(tables)
    set_cell(tables["sessions"], 6, "session_index", "2.5")  # a2
    set_cell(tables["sessions"], 11, "session_index", "1")  # a4's second session numbered 1
    set_cell(tables["sessions"], 3, "wai_goal", "3.5")
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    problems = _problems(folder)
    found = [(p.column, p.rows, p.expected.split(" (")[0]) for p in problems]
    assert found == [
        ("first_session", [1], "a date written YYYY-MM-DD"),
        ("days_in_care", [3], "days_in_care to equal last_session - first_session in days"),
        ("session_index", [6], "a whole number >= 1 on every row"),
        ("session_index", [10, 11], "each session_index once within a client"),
        ("wai_goal", [3], "an integer rating from 1 to 5"),
    ]
    assert [str(g) for g in problems[1].got] == ["30 (dates give 28)"]


def test_an_empty_id_does_not_stop_the_other_links_being_checked(tmp_path):
    tables = tiny_tables()
    set_cell(tables["sessions"], 2, "provider_id", "")
    set_cell(tables["sessions"], 5, "provider_id", "T7")  # no such provider
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    problems = _problems(folder)
    assert [(p.column, p.rows) for p in problems] == [("provider_id", [2]), ("provider_id", [5])]
    assert "unknown provider" in problems[1].expected and problems[1].got == ["T7"]


# ---- inside one declaration table ----------------------------------------------------------------
def test_every_problem_of_an_outcome_table_is_listed_and_a_misspelled_key_suggested():
    found, problems = parse_declarations(
        {"gad7x": {"label": "GAD", "ragne": [0, 21], "better": "down"}}
    )
    assert found == {}
    assert len(problems) == 3
    assert "unknown key(s) ['ragne']" in problems[0]
    assert "'ragne': did you mean 'range'?" in problems[0]
    assert problems[1].startswith("[outcomes.gad7x]: ['range'] required")
    assert problems[2] == "[outcomes.gad7x].better: 'lower' or 'higher', got 'down'"


def test_every_problem_of_an_alliance_table_is_listed():
    instrument, problems = parse_alliance(
        {"instrument": "wai_sx", "subscales": {"goal": ["g1", "g1"]}}
    )
    assert instrument is None
    assert len(problems) == 3
    assert "got 'wai_sx' (did you mean 'wai_s'?)" in problems[0]
    assert any("['bond'] required" in p for p in problems)
    assert any("goal: each column once, got ['g1'] more than once" in p for p in problems)


def test_a_misspelled_covariate_key_is_suggested():
    _, problems = parse_covariates({"site": {"type": "categorical", "refrence": "north"}})
    assert "'refrence': did you mean 'reference'?" in problems[0]
    assert problems[1].startswith("[covariates.site].reference: required")


# ---- statistics files: value labels and declared missing codes -----------------------------------
def _frames():
    return {
        t: pd.read_csv(io.StringIO(csv_text(table)), dtype=str, keep_default_na=False)
        for t, table in tiny_tables().items()
    }


def _write_sav(folder, clients, **clients_meta):
    import pyreadstat

    frames = _frames()
    folder.mkdir()
    for table in ("providers", "sessions"):
        frames[table].to_csv(folder / f"{table}.csv", index=False, lineterminator="\n")
    pyreadstat.write_sav(clients, str(folder / "clients.sav"), **clients_meta)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    return folder


def _numeric_clients(sex_codes, ages):
    clients = _frames()["clients"]
    numbers = ["who5_baseline", "who5_followup", "phq9_baseline", "phq9_followup"]
    clients[numbers] = clients[numbers].replace("", np.nan).astype(float)
    return clients.assign(sex=sex_codes, age=ages)


# the tiny study's sex (other, female, male, male, empty) as codes
SEX_CODES = [3.0, 1.0, 2.0, 2.0, np.nan]
AGES = [52.0, 30.0, 45.0, 100.0, 18.0]


@needs_pyreadstat
def test_capitalised_sex_labels_are_read_in_lower_case_and_counted(tmp_path):
    labels = {"sex": {1.0: "Female", 2.0: "Male", 3.0: "Other"}}
    folder = _write_sav(
        tmp_path / "s", _numeric_clients(SEX_CODES, AGES), variable_value_labels=labels
    )
    study = ab.load_study(folder)
    assert study.clients.sex.tolist()[:4] == ["other", "female", "male", "male"]
    assert pd.isna(study.clients.sex[4])
    sex = [c for c in study.conversions if c.column == "sex"]
    assert sex == [
        Conversion("clients.sav", "sex", "value labels", 4, "1 → Female, 2 → Male, 3 → Other"),
        Conversion(
            "clients.sav", "sex", "lower case", 4, "Female → female, Male → male, Other → other"
        ),
    ]
    assert str(sex[1]) == (
        "clients.sav, column 'sex': 4 cells of value labels read in lower case "
        "(Female → female, Male → male, Other → other)"
    )


@needs_pyreadstat
def test_a_label_that_is_no_allowed_word_is_named_as_a_value_label(tmp_path):
    labels = {"sex": {1.0: "Frau", 2.0: "Mann", 3.0: "Divers"}}
    folder = _write_sav(
        tmp_path / "s", _numeric_clients(SEX_CODES, AGES), variable_value_labels=labels
    )
    (problem,) = _problems(folder)
    assert problem.column == "sex" and problem.rows == [1, 2, 3, 4]
    assert problem.got == ["Divers", "Frau", "Mann", "Mann"]
    assert "the text values are the file's value labels (1 → Frau, 2 → Mann, 3 → Divers)" in (
        problem.expected
    )
    assert problem.expected.startswith("one of female, male, other (or empty)")


@needs_pyreadstat
def test_a_required_value_missing_by_a_declared_code_says_so(tmp_path):
    ages = [52.0, -99.0, 45.0, -99.0, 12.0]  # 007 and a5 not answered; a4 too young
    folder = _write_sav(
        tmp_path / "s",
        _numeric_clients([3.0, 1.0, 2.0, 2.0, np.nan], ages),
        variable_value_labels={"sex": {1.0: "female", 2.0: "male", 3.0: "other"}},
        missing_ranges={"age": [-99.0]},
    )
    coded, young = _problems(folder)
    assert (coded.column, coded.rows, [str(g) for g in coded.got]) == ("age", [2, 4], ["-99"] * 2)
    assert "age is required: 2 rows hold the declared missing code -99" in coded.expected
    assert "Variable View" not in coded.expected  # it is declared: no advice to declare it
    assert (young.column, young.rows, young.got) == ("age", [5], [12])
    assert "declare a code such as -99 missing in SPSS" in young.expected


# ---- CSV: R's NA ---------------------------------------------------------------------------------
def test_na_cells_of_a_csv_file_are_counted_per_column(tmp_path):
    tables = tiny_tables()
    set_cell(tables["clients"], 1, "country", "NA")  # Namibia, or R's missing: counted either way
    set_cell(tables["clients"], 4, "country", "NA")
    set_cell(tables["clients"], 2, "who5_followup", "NA")
    folder = write_csv_study(tmp_path / "s", tables)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    study = ab.load_study(folder)
    assert study.conversions == (
        Conversion("clients.csv", "country", "NA", 2, "NA"),
        Conversion("clients.csv", "who5_followup", "NA", 1, "NA"),
    )
    assert study.clients.country.isna().tolist() == [True, False, True, True, False]
    assert str(study.conversions[0]) == (
        "clients.csv, column 'country': 2 cells holding NA read as missing (R's write.csv "
        "writes NA for missing)"
    )
    assert study.conversions[0].to_dict() == {
        "file": "clients.csv",
        "column": "country",
        "kind": "NA",
        "count": 2,
        "codes": "NA",
    }
