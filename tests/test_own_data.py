"""A user's own study: nothing dropped silently, every problem at once, the files researchers have.

Each case writes a small hand-made study (numeric ids, ``days_in_care``, ``session_index``, as a
statistics package exports it) in ``tmp_path`` and loads it as a user would.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.cli import EXIT_BAD_INPUT, main
from alliance_bayes.data.contract import suggest_column

HAS_OPENPYXL = importlib.util.find_spec("openpyxl") is not None
HAS_PYREADSTAT = importlib.util.find_spec("pyreadstat") is not None


def frames() -> dict[str, pd.DataFrame]:
    """Three providers, four clients (one follow-up and one sex missing), eight sessions."""
    providers = pd.DataFrame(
        {"provider_id": [1, 2, 3], "provider_type": ["therapist", "coach", "coach"]}
    )
    clients = pd.DataFrame(
        {
            "client_id": [1, 2, 3, 4],
            "age": [30, 45, 52, 18],
            "sex": ["female", "male", None, "other"],
            "who5_baseline": [20, 28, 60, 44],
            "who5_followup": [40.0, np.nan, 64.0, 52.0],
            "days_in_care": [14, 28, 3, 0],
        }
    )
    sessions = pd.DataFrame(
        {
            "client_id": [1, 1, 2, 2, 3, 3, 3, 4],
            "provider_id": [1, 1, 2, 2, 1, 2, 2, 3],
            "session_index": [1, 2, 1, 2, 1, 2, 3, 1],
            "wai_goal": [4, 5, 3, 4, 5, 2, 3, 5],
            "wai_bond": [5, 5, 4, 4, 4, 3, 3, 5],
        }
    )
    return {"providers": providers, "clients": clients, "sessions": sessions}


def write_csv(folder, tables) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(folder / f"{name}.csv", index=False)


def reference(tmp_path) -> ab.RawStudy:
    write_csv(tmp_path / "reference", frames())
    return ab.load_study(tmp_path / "reference")


def assert_same_tables(a: ab.RawStudy, b: ab.RawStudy) -> None:
    for table in ("providers", "clients", "sessions"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))


# ---- nothing dropped silently ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("table", "column", "meant"),
    [
        ("sessions", "WAI_Task", "wai_task"),
        ("clients", "PHQ9_Followup", "phq9_followup"),
        ("clients", "who5_follow_up", "who5_followup"),
        ("clients", "phq9 baseline", "phq9_baseline"),
        ("sessions", "wai_tsak", "wai_task"),
    ],
)
def test_misspelled_optional_column_is_refused_with_the_name_meant(tmp_path, table, column, meant):
    tables = frames()
    tables[table][column] = 3
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    err = info.value
    assert err.column == column and err.file.name == f"{table}.csv"
    assert f"did you mean {meant!r}?" in str(err)
    assert "study.toml" in str(err)


def test_misspelled_column_exits_2_from_the_command(tmp_path, capsys):
    tables = frames()
    tables["sessions"]["WAI_Task"] = 4
    write_csv(tmp_path / "s", tables)
    out = tmp_path / "results"
    code = main(["fit", "paper_table2", "--data", str(tmp_path / "s"), "--out", str(out)])
    assert code == EXIT_BAD_INPUT and not out.exists()
    assert "did you mean 'wai_task'" in capsys.readouterr().err


def test_case_of_a_required_column_is_not_guessed(tmp_path):
    tables = frames()
    tables["sessions"] = tables["sessions"].rename(columns={"wai_goal": "WAI_Goal"})
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    message = str(info.value)
    assert "column 'WAI_Goal'" in message and "did you mean 'wai_goal'?" in message
    assert "a column named 'wai_goal'" in message  # and the contract column is missing


def test_suggestions():
    assert "column of the providers table" in suggest_column("provider_type", "sessions")
    assert "row.names = FALSE" in suggest_column("", "clients")
    assert suggest_column("site", "clients") == ""


def test_declared_columns_are_ignored_and_recorded(tmp_path):
    tables = frames()
    tables["clients"]["site"] = "Leeds"
    tables["sessions"]["therapist_notes"] = "ok"
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError, match="site"):
        ab.load_study(tmp_path / "s")
    (tmp_path / "s" / "study.toml").write_text('ignore = ["site"]\n')
    with pytest.raises(ab.DataContractError, match="therapist_notes"):
        ab.load_study(tmp_path / "s")
    study = ab.load_study(tmp_path / "s", ignore_columns=["therapist_notes"])
    assert study.ignored == {
        "providers": (),
        "clients": ("site",),
        "sessions": ("therapist_notes",),
    }
    assert_same_tables(study, reference(tmp_path))
    memory = ab.RawStudy.from_frames(*tables.values(), ignore_columns=["site", "therapist_notes"])
    assert_same_tables(memory, study)


def test_a_contract_column_cannot_be_ignored(tmp_path):
    write_csv(tmp_path / "s", frames())
    (tmp_path / "s" / "study.toml").write_text('ignore = ["wai_bond"]\n')
    with pytest.raises(
        ab.DataContractError, match=r"study.toml: .*never ignored.*; got 'wai_bond'"
    ):
        ab.load_study(tmp_path / "s")
    (tmp_path / "s" / "study.toml").write_text('ignored = ["x"]\n')
    with pytest.raises(ab.DataContractError, match="only the key ignore"):
        ab.load_study(tmp_path / "s")


# ---- every problem at once ---------------------------------------------------------------------
def test_bad_values_in_two_columns_and_two_files_are_all_reported(tmp_path):
    tables = frames()
    tables["sessions"]["wai_goal"] = tables["sessions"]["wai_goal"].astype(object)
    tables["sessions"].loc[[1, 4], "wai_goal"] = [7, "x"]
    tables["sessions"].loc[2, "wai_bond"] = 0
    tables["clients"].loc[3, "age"] = 12
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    err = info.value
    assert [(p.file.name, p.column, p.rows) for p in err.problems] == [
        ("clients.csv", "age", [4]),
        ("sessions.csv", "wai_goal", [2, 5]),
        ("sessions.csv", "wai_bond", [3]),
    ]
    message = str(err)
    assert message.startswith("3 problems with the study data")
    assert "clients.csv:\n  column 'age', row 4 (line 5): expected an age in years" in message
    assert "column 'wai_goal', rows 2, 5 (lines 3, 6): expected an integer rating" in message
    assert "got 7, 'x'" in message
    assert (
        "column 'wai_bond', row 3 (line 4): expected an integer rating from 1 to 5 (0 is" in message
    )
    # the first problem stays on the error's attributes, as for a single problem
    assert (err.column, err.rows) == ("age", [4])
    assert str(pd.read_pickle(_pickled(err, tmp_path))) == message


def _pickled(err, tmp_path):
    path = tmp_path / "err.pkl"
    pd.to_pickle(err, path)
    return path


def test_a_zero_and_an_out_of_range_rating_in_one_column_are_both_named(tmp_path):
    tables = frames()
    tables["sessions"].loc[[0, 6], "wai_bond"] = [0, 6]
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    assert [(p.column, p.rows) for p in info.value.problems] == [
        ("wai_bond", [1]),
        ("wai_bond", [7]),
    ]


def test_missing_files_are_reported_together(tmp_path):
    write_csv(tmp_path / "s", frames())
    (tmp_path / "s" / "clients.csv").unlink()
    (tmp_path / "s" / "sessions.csv").unlink()
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    assert [p.file.name for p in info.value.problems] == ["clients.csv", "sessions.csv"]


def test_a_bad_id_is_not_reported_again_as_a_broken_link(tmp_path):
    tables = frames()
    tables["clients"]["client_id"] = tables["clients"]["client_id"].astype(object)
    tables["clients"].loc[1, "client_id"] = None
    write_csv(tmp_path / "s", tables)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(tmp_path / "s")
    assert [(p.column, p.rows) for p in info.value.problems] == [("client_id", [2])]


def test_a_spec_with_three_mistakes_reports_three():
    bad = {"sampler": {"chains": 0, "target_accept": 0.2}, "data": {"who5_cutoff": 150.0}}
    with pytest.raises(ab.SpecError) as info:
        ab.load_spec("who5_change", **bad)
    message = str(info.value)
    assert "3 problems, all listed" in message
    for words in ("who5_cutoff must lie in 0–100", "chains must be >= 1", "target_accept"):
        assert words in message


def test_a_spec_with_one_mistake_keeps_its_message():
    with pytest.raises(ab.SpecError) as info:
        ab.load_spec("who5_change", sampler={"chains": 0})
    assert str(info.value).endswith("[sampler]: chains must be >= 1")


# ---- the files researchers have ----------------------------------------------------------------
def test_r_write_csv_na_is_missing(tmp_path):
    """R's write.csv(x, row.names = FALSE): strings quoted, a missing value written NA."""
    folder = tmp_path / "r"
    write_csv(folder, frames())
    (folder / "clients.csv").write_text(
        '"client_id","age","sex","who5_baseline","who5_followup","days_in_care"\n'
        '"1",30,"female",20,40,14\n"2",45,"male",28,NA,28\n'
        '"3",52,NA,60,64,3\n"4",18,"other",44,52,0\n'
    )
    study = ab.load_study(folder)
    assert_same_tables(study, reference(tmp_path))
    assert study.clients["who5_followup"].isna().tolist() == [False, True, False, False]


def test_r_row_names_column_is_named_for_what_it_is(tmp_path):
    folder = tmp_path / "r"
    write_csv(folder, frames())
    clients = frames()["clients"]
    clients.index = clients.index + 1
    clients.to_csv(folder / "clients.csv", index=True)  # header starts with an empty name
    with pytest.raises(ab.DataContractError, match=r"column '': .*row.names = FALSE"):
        ab.load_study(folder)
    (folder / "study.toml").write_text('ignore = [""]\n')
    assert_same_tables(ab.load_study(folder), reference(tmp_path))


def _as(fmt: str, folder, tables) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        path = folder / f"{name}.{fmt}"
        if fmt == "dta":
            df.to_stata(path, write_index=False)
        elif fmt == "xlsx":
            df.to_excel(path, index=False, sheet_name=name)
        else:
            import pyreadstat

            pyreadstat.write_sav(df, str(path))


@pytest.mark.parametrize(
    "fmt",
    [
        "dta",
        pytest.param("xlsx", marks=pytest.mark.skipif(not HAS_OPENPYXL, reason="no openpyxl")),
        pytest.param("sav", marks=pytest.mark.skipif(not HAS_PYREADSTAT, reason="no pyreadstat")),
    ],
)
def test_statistics_package_files_load_as_the_csv(tmp_path, fmt):
    tables = frames()
    tables["clients"]["sex"] = tables["clients"]["sex"].fillna("")  # text columns: empty = missing
    _as(fmt, tmp_path / fmt, tables)
    study = ab.load_study(tmp_path / fmt)
    assert_same_tables(study, reference(tmp_path))
    assert study.files["clients"].suffix == f".{fmt}"


def test_stata_value_labels_and_missing_codes(tmp_path):
    tables = frames()
    # sex stored as labelled codes (a Categorical is written as a Stata value label)
    tables["clients"]["sex"] = pd.Categorical(tables["clients"]["sex"], ["female", "male", "other"])
    _as("dta", tmp_path / "dta", tables)
    assert_same_tables(ab.load_study(tmp_path / "dta"), reference(tmp_path))


@pytest.mark.skipif(not HAS_PYREADSTAT, reason="no pyreadstat")
def test_spss_user_missing_and_value_labels(tmp_path):
    import pyreadstat

    tables = frames()
    _as("sav", tmp_path / "sav", tables)
    clients = tables["clients"].assign(
        sex=[1.0, 2.0, np.nan, 3.0], who5_followup=[40.0, -99.0, 64.0, 52.0]
    )
    pyreadstat.write_sav(
        clients,
        str(tmp_path / "sav" / "clients.sav"),
        variable_value_labels={"sex": {1.0: "female", 2.0: "male", 3.0: "other"}},
        missing_ranges={"who5_followup": [-99.0]},
    )
    assert_same_tables(ab.load_study(tmp_path / "sav"), reference(tmp_path))
    # without the declaration -99 is a value, and is refused
    clients_plain = clients.assign(sex=tables["clients"]["sex"].fillna(""))
    pyreadstat.write_sav(clients_plain, str(tmp_path / "sav" / "clients.sav"))
    with pytest.raises(ab.DataContractError, match=r"who5_followup', row 2: .*got -99"):
        ab.load_study(tmp_path / "sav")


@pytest.mark.skipif(not HAS_OPENPYXL, reason="no openpyxl")
def test_workbook_with_several_sheets_needs_one_named_for_the_table(tmp_path):
    folder = tmp_path / "x"
    _as("xlsx", folder, frames())
    with pd.ExcelWriter(folder / "clients.xlsx") as book:
        frames()["clients"].to_excel(book, sheet_name="data", index=False)
        pd.DataFrame({"note": ["codebook"]}).to_excel(book, sheet_name="readme", index=False)
    with pytest.raises(
        ab.DataContractError, match=r"clients.xlsx: expected a sheet named 'clients'"
    ):
        ab.load_study(folder)


@pytest.mark.parametrize(
    ("suffix", "words"),
    [
        ("dta", "a readable Stata .dta file; it could not be read"),
        ("xlsx", "Excel"),
        ("sav", "SPSS .sav file"),
    ],
)
def test_an_unreadable_file_is_named_with_what_to_do(tmp_path, suffix, words):
    folder = tmp_path / "s"
    write_csv(folder, frames())
    (folder / "sessions.csv").unlink()
    (folder / f"sessions.{suffix}").write_bytes(b"this is not a data file at all" * 20)
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(folder)
    message = str(info.value)
    assert message.startswith(str(folder / f"sessions.{suffix}")) and words in message
    assert "export the table as CSV" in message


def test_two_formats_for_one_table_are_ambiguous(tmp_path):
    folder = tmp_path / "s"
    write_csv(folder, frames())
    frames()["providers"].to_stata(folder / "providers.dta", write_index=False)
    with pytest.raises(ab.DataContractError, match=r"providers\.csv and providers\.dta exist"):
        ab.load_study(folder)


def test_three_data_frames_make_a_study():
    study = ab.RawStudy.from_frames(*frames().values())
    assert study.folder is None and len(study.sessions) == 8
    assert study.clients["client_id"].tolist() == ["1", "2", "3", "4"]
