"""What the loader says where a study's files or declarations are off in small ways.

A declared provider type without providers, a comma at the end of every CSV line, Excel serial
numbers in a date column and a list of ignored columns that misses: each is either read with a
recorded note (nothing dropped silently) or refused with the fix, together with every other
problem. Each case writes the tiny hand-made study (``tests/data_builders.py``) and loads it as a
user would.
"""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.data.care import CareTypes
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import Conversion
from alliance_bayes.data.write import write_study
from alliance_bayes.report.bundle import _clients_section
from conftest import SHIPPED
from data_builders import set_cell, tiny_tables, write_csv_study

HAS_OPENPYXL = importlib.util.find_spec("openpyxl") is not None
TABLES = ("providers", "clients", "sessions")
THREE_TYPES = 'provider_types = ["therapist", "coach", "psychiatrist"]\n'


def _study(tmp_path, name="s", toml=None, tables=None):
    folder = write_csv_study(tmp_path / name, tables or tiny_tables())
    if toml is not None:
        (folder / "study.toml").write_text(toml, encoding="utf-8")
    return folder


def _text_frames():
    return {
        t: pd.DataFrame(v["rows"], columns=v["columns"], dtype="str")
        for t, v in tiny_tables().items()
    }


def _same_tables(a: ab.RawStudy, b: ab.RawStudy) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))


def _problems(err: pytest.ExceptionInfo) -> list[str]:
    return [str(e) for e in err.value.problems]


# ---- a declared provider type without providers ------------------------------------------------
def test_a_declared_type_without_providers_keeps_the_declared_names_and_says_why(tmp_path):
    folder = _study(tmp_path, toml='ignore = ["notes"]\n' + THREE_TYPES)
    study = ab.load_study(folder)
    note = Conversion("providers.csv", "provider_type", "no providers", 0, "psychiatrist")
    assert study.conversions == (note,)
    assert "declared provider type 'psychiatrist' has no providers" in str(note)
    frame = build_frame(study)
    # the names the declaration gives: a1..a5 are therapist 1 (007), coach 2 (a2, a4) and two
    # clients seeing both (a3, a5), named from the declared types, never the contract's 'both'
    assert frame.care_types == ("therapist", "coach", "therapist_and_coach")
    counts = frame.clients["care_type"].value_counts()
    assert counts.to_dict() == {"coach": 2, "therapist_and_coach": 2, "therapist": 1}
    # the declared rule: the largest care type, the first in level order among equals
    assert frame.care_reference == "coach"
    assert frame.provider_types == ("therapist", "coach")
    assert f"read: {note}" in frame.summary()
    # and the report's Clients section, from run.json's conversions
    meta = {"exclusions": {"clients_in_study": 5}, "conversions": [note.to_dict()]}
    assert f"- {note}" in "\n".join(_clients_section(meta))


def test_the_note_names_every_type_without_providers_and_only_those(tmp_path):
    toml = 'ignore = ["notes"]\nprovider_types = ["therapist", "nurse", "coach", "peer"]\n'
    study = ab.load_study(_study(tmp_path, toml=toml))
    assert [(c.kind, c.codes) for c in study.conversions] == [
        ("no providers", "nurse"),
        ("no providers", "peer"),
    ]
    # every declared type staffed: no note; the contract's types: no note either
    assert ab.load_study(_study(tmp_path, "contract")).conversions == ()
    tables = tiny_tables()
    set_cell(tables["providers"], 5, "provider_type", "psychiatrist")  # T9, without sessions
    staffed = _study(tmp_path, "all", 'ignore = ["notes"]\n' + THREE_TYPES, tables)
    assert ab.load_study(staffed).conversions == ()


def test_an_in_memory_study_notes_a_declared_type_without_providers_too():
    frames = _text_frames()
    study = ab.RawStudy.from_frames(
        *frames.values(), ignore_columns=["notes"], provider_types=["therapist", "coach", "peer"]
    )
    assert study.conversions == (
        Conversion("providers table", "provider_type", "no providers", 0, "peer"),
    )


# ---- a comma at the end of every line ----------------------------------------------------------
def test_a_reference_care_type_no_provider_can_give_is_refused_on_loading(tmp_path):
    toml = 'ignore = ["notes"]\n' + THREE_TYPES + 'care_reference = "psychiatrist"\n'
    tables = tiny_tables()
    set_cell(tables["clients"], 1, "age", "12")  # a second problem, reported with it
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(_study(tmp_path, toml=toml, tables=tables))
    problems = " ".join(_problems(err))
    assert "got 'psychiatrist', but no provider of the providers table is a 'psychiatrist'" in (
        problems
    )
    assert "age" in problems
    frames = _text_frames()
    with pytest.raises(ab.DataContractError, match="no provider of the providers table"):
        ab.RawStudy.from_frames(
            *frames.values(),
            ignore_columns=["notes"],
            provider_types=["therapist", "coach", "peer"],
            care_reference="peer",
        )


def _trailing_commas(folder, table: str) -> None:
    path = folder / f"{table}.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(f"{line},\n" for line in lines), encoding="utf-8")


def test_a_trailing_comma_on_every_line_is_skipped_and_recorded(tmp_path):
    reference = ab.load_study(_study(tmp_path, "reference"))
    folder = _study(tmp_path)
    _trailing_commas(folder, "clients")
    study = ab.load_study(folder)
    _same_tables(study, reference)
    (skipped,) = study.conversions
    # the clients table has 11 columns; the comma makes a 12th, empty on all 5 data rows
    assert skipped == Conversion("clients.csv", "", "empty column", 5, "the last of 12 columns")
    assert str(skipped) == (
        "clients.csv: a column without a name in the header (the last of 12 columns), empty on "
        "all 5 rows, skipped (every line ends with a comma)"
    )
    assert f"read: {skipped}" in build_frame(study).summary()
    # ignore = [""] still loads it, as it did R's row names
    (folder / "study.toml").write_text('ignore = ["notes", ""]\n', encoding="utf-8")
    _same_tables(ab.load_study(folder), reference)


def test_two_commas_too_many_skip_both_empty_columns(tmp_path):
    folder = _study(tmp_path)
    path = folder / "sessions.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(f"{line},,\n" for line in lines), encoding="utf-8")
    study = ab.load_study(folder)
    assert [(c.column, c.count, c.codes) for c in study.conversions] == [
        ("", 13, "column 6 of 7"),
        ("", 13, "the last of 7 columns"),
    ]


def test_r_row_names_and_a_nameless_column_with_values_are_told_apart(tmp_path):
    tables = tiny_tables()
    clients = tables["clients"]
    clients["columns"].insert(0, "")
    for i, row in enumerate(clients["rows"], start=1):
        row.insert(0, str(i))  # R's write.csv: a nameless first column 1..n
    folder = _study(tmp_path, "r", tables=tables)
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(folder)
    (problem,) = _problems(err)
    assert "column '': " in problem and "first and counting the rows 1, 2, 3" in problem
    assert "row.names = FALSE" in problem
    (folder / "study.toml").write_text('ignore = ["notes", ""]\n', encoding="utf-8")
    ab.load_study(folder)

    tables = tiny_tables()
    sessions = tables["sessions"]
    sessions["columns"].append("")
    for row in sessions["rows"]:
        row.append("x")  # a header cell left empty above values: not R's row names
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(_study(tmp_path, "middle", tables=tables))
    (problem,) = _problems(err)
    assert "column 6 of 6) holding values: name it in the header, or remove it" in problem
    assert "row.names" not in problem


# ---- Excel serial dates ------------------------------------------------------------------------
def test_a_serial_number_in_a_session_date_is_named_as_an_excel_date(tmp_path):
    tables = tiny_tables()
    set_cell(tables["sessions"], 1, "session_date", "44927")
    set_cell(tables["sessions"], 2, "session_date", "01/18/2021")
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(_study(tmp_path, tables=tables))
    (problem,) = _problems(err)
    assert "column 'session_date', rows 1, 2" in problem
    assert "44927 looks like an Excel serial date (44927 = 2023-01-01)" in problem
    assert 'as.Date(x, origin = "1899-12-30")' in problem


def test_a_date_not_written_as_a_number_gets_no_excel_hint(tmp_path):
    tables = tiny_tables()
    set_cell(tables["clients"], 1, "first_session", "30/12/2020")
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(_study(tmp_path, tables=tables))
    assert "Excel" not in str(err.value)
    # a year or a month typed as a number is no date of a study's span: no serial-date hint
    for typed in ("2023", "202301"):
        set_cell(tables["clients"], 1, "first_session", typed)
        with pytest.raises(ab.DataContractError) as err:
            ab.load_study(_study(tmp_path, f"y{typed}", tables=tables))
        assert "Excel" not in str(err.value), typed


@pytest.mark.skipif(not HAS_OPENPYXL, reason="Excel files need openpyxl")
def test_serial_numbers_in_a_workbook_date_column_are_named_with_their_dates(tmp_path):
    frames = _text_frames()
    folder = tmp_path / "xlsx"
    folder.mkdir()
    clients = frames["clients"].drop(columns="notes")
    # a column left in Excel's Number format: 45000 is 15 March 2023 (44927 + 31 + 28 + 14)
    clients["last_session"] = [45000, 45000, 45001, 45002, 45003]
    clients["first_session"] = [44927, 44927, 44927, 44927, 44927]
    frames["clients"] = clients
    for table, df in frames.items():
        df.to_excel(folder / f"{table}.xlsx", index=False, sheet_name=table)
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(folder)
    text = str(err.value)
    assert "column 'first_session'" in text and "(44927 = 2023-01-01)" in text
    assert "column 'last_session'" in text and "(45000 = 2023-03-15)" in text


# ---- the list of ignored columns ---------------------------------------------------------------
def test_a_misspelled_ignore_entry_is_refused_with_the_column_meant_beside_every_problem(tmp_path):
    tables = tiny_tables()
    set_cell(tables["clients"], 1, "age", "abc")
    folder = _study(tmp_path, toml='ignore = ["Notes"]\n', tables=tables)
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(folder)
    problems = _problems(err)
    assert len(problems) == 3, problems
    entry = next(p for p in problems if "got 'Notes'" in p)
    assert entry.startswith(str(folder / "study.toml"))
    assert "no table has this column: did you mean 'notes'?" in entry
    column = next(p for p in problems if "column 'notes'" in p)
    assert "the ignored columns list 'Notes' (names are matched exactly)" in column
    assert any("column 'age'" in p for p in problems)


def test_an_ignore_entry_naming_nothing_like_a_column_says_to_remove_it(tmp_path):
    folder = _study(tmp_path, toml='ignore = ["notes", "zzz"]\n')
    with pytest.raises(ab.DataContractError, match=r"no table has this column \(remove it"):
        ab.load_study(folder)
    # from Python, the argument is named
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(_study(tmp_path, "py"), ignore_columns=["notes", "note_s"])
    (problem,) = _problems(err)
    assert problem.startswith("ignore_columns: ") and "did you mean 'notes'?" in problem
    with pytest.raises(ab.DataContractError, match="did you mean 'notes'"):
        ab.RawStudy.from_frames(*_text_frames().values(), ignore_columns=["Notes", "notes"])


def test_a_misspelled_ignore_entry_of_a_long_export_is_refused(tmp_path):
    frames = _text_frames()
    long = (
        frames["sessions"]
        .merge(frames["clients"], on="client_id")
        .merge(frames["providers"], on="provider_id")
    )
    folder = tmp_path / "long"
    folder.mkdir()
    long.to_csv(folder / "sessions_long.csv", index=False)
    (folder / "study.toml").write_text('ignore = ["note"]\n', encoding="utf-8")
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(folder)
    problems = _problems(err)
    assert any("did you mean 'notes'?" in p and "got 'note'" in p for p in problems)
    assert any("column 'notes'" in p and "list 'note'" in p for p in problems)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    assert ab.load_study(folder).ignored["sessions"] == ("notes",)


def test_a_declared_column_in_the_ignore_list_is_refused_not_analysed_as_ignored(tmp_path):
    tables = tiny_tables()
    tables["clients"]["columns"].append("diagnosis")
    for i, row in enumerate(tables["clients"]["rows"]):
        row.append(("anxiety", "depression")[i % 2])
    toml = (
        'ignore = ["notes", "diagnosis"]\n[covariates.diagnosis]\ntype = "categorical"\n'
        'reference = "depression"\n'
    )
    folder = _study(tmp_path, toml=toml, tables=tables)
    # before: loaded, listing 'diagnosis' as ignored while its column was kept and analysed
    with pytest.raises(ab.DataContractError) as err:
        ab.load_study(folder)
    (problem,) = _problems(err)
    assert "a declared column" in problem and "never ignored" in problem
    assert problem.endswith("got 'diagnosis'")
    (folder / "study.toml").write_text(toml.replace(', "diagnosis"', ""), encoding="utf-8")
    study = ab.load_study(folder)
    assert study.ignored["clients"] == ("notes",) and "diagnosis" in study.clients


def test_writing_over_a_study_whose_study_toml_ignores_columns_is_refused(tmp_path):
    folder = _study(tmp_path)  # study.toml: ignore = ["notes"]
    study = ab.load_study(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # the written tables would hold no 'notes', which the kept study.toml still ignores
    with pytest.raises(FileExistsError, match=r"ignore = \['notes'\].*would not load"):
        write_study(folder, study)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    write_study(tmp_path / "elsewhere", study)
    _same_tables(ab.load_study(tmp_path / "elsewhere"), study)


def test_the_shipped_study_loads_with_nothing_noted():
    study = ab.load_study(SHIPPED)
    assert study.conversions == () and all(v == () for v in study.ignored.values())
    assert study.care == CareTypes()
