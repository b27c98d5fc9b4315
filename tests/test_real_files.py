"""The files researchers actually have: SPSS/Stata labels and missing codes, one long export.

Every case writes the tiny study of ``tests/data_builders.py`` (provider ``T9``, who has no
sessions and so cannot appear in a session-level export, left out) the way a statistics package
would, and checks that it loads to the same tables as the three CSV files, with each conversion
counted, or is refused naming the file, the rows and what to do.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import Conversion
from alliance_bayes.data.write import write_study
from alliance_bayes.report.bundle import _clients_section
from data_builders import tiny_tables, write_csv_study

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyreadstat") is None, reason="SPSS/Stata files need pyreadstat"
)

TABLES = ("providers", "clients", "sessions")
IDS = {"providers": "provider_id", "clients": "client_id", "sessions": None}


def tiny() -> dict[str, pd.DataFrame]:
    """The tiny study as text frames (empty cell = ''), without the session-less provider T9."""
    frames = {
        name: pd.DataFrame(t["rows"], columns=t["columns"]) for name, t in tiny_tables().items()
    }
    frames["providers"] = frames["providers"][frames["providers"].provider_id != "T9"]
    return frames


def reference(tmp_path) -> ab.RawStudy:
    tables = tiny_tables()
    tables["providers"]["rows"] = [r for r in tables["providers"]["rows"] if r[0] != "T9"]
    return ab.load_study(write_csv_study(tmp_path / "reference", tables))


def long_export(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per session (in the sessions' order), the client and provider columns repeated."""
    return (
        frames["sessions"]
        .merge(frames["clients"], on="client_id", how="left")
        .merge(frames["providers"], on="provider_id", how="left")
    )


def by_id(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """A table in id order: a long export lists clients and providers by first session."""
    key = IDS[table]
    return df if key is None else df.sort_values(key).reset_index(drop=True)


def assert_same_study(a: ab.RawStudy, b: ab.RawStudy) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(
            by_id(getattr(a, table), table), by_id(getattr(b, table), table)
        )
    fa, fb = build_frame(a), build_frame(b)  # pseudonyms follow sorted ids: order-free
    for part in ("clients", "providers", "memberships", "sessions"):
        pd.testing.assert_frame_equal(getattr(fa, part), getattr(fb, part))


def write_long_csv(folder, long: pd.DataFrame, name: str = "sessions_long.csv"):
    folder.mkdir(parents=True, exist_ok=True)
    long.to_csv(folder / name, index=False)
    (folder / "study.toml").write_text('ignore = ["notes"]\n')
    return folder


# ---- codes, labels and SPSS user-missing values ----------------------------------------------
SEX = {1.0: "female", 2.0: "male", 3.0: "other"}
COUNTRY = {1.0: "DE", 2.0: "FR", 3.0: "GB", 4.0: "US"}
TYPE = {1.0: "therapist", 2.0: "coach"}


def coded(values: pd.Series, labels: dict[float, str]) -> pd.Series:
    """Words as the codes that the value labels give them (empty stays system-missing)."""
    codes = {word: code for code, word in labels.items()}
    return values.map(lambda v: codes.get(v, np.nan)).astype("float64")


def numeric(values: pd.Series, missing: float | None = None) -> pd.Series:
    """Text numbers as float64, an empty cell as ``missing`` (a declared code) or NaN."""
    out = pd.to_numeric(values.replace("", np.nan))
    return out if missing is None else out.fillna(missing)


def spss_clients(frames) -> pd.DataFrame:
    clients = frames["clients"].drop(columns="notes")
    return clients.assign(
        sex=coded(clients.sex, SEX),
        country=coded(clients.country, COUNTRY),
        who5_followup=numeric(clients.who5_followup, missing=-99.0),
        phq9_followup=numeric(clients.phq9_followup, missing=-99.0),
    )


SPSS_LABELS = {"provider_type": TYPE, "sex": SEX, "country": COUNTRY}
SPSS_MISSING = {"who5_followup": [-99.0], "phq9_followup": [{"lo": -99.0, "hi": -90.0}]}


def test_spss_labels_and_declared_missing_are_read_and_counted(tmp_path):
    import pyreadstat

    frames, folder = tiny(), tmp_path / "sav"
    folder.mkdir()
    providers = frames["providers"].assign(
        provider_type=coded(frames["providers"].provider_type, TYPE)
    )
    pyreadstat.write_sav(
        providers, str(folder / "providers.sav"), variable_value_labels={"provider_type": TYPE}
    )
    pyreadstat.write_sav(
        spss_clients(frames),
        str(folder / "clients.sav"),
        variable_value_labels={"sex": SEX, "country": COUNTRY},
        missing_ranges=SPSS_MISSING,
    )
    sessions = frames["sessions"].assign(wai_bond=numeric(frames["sessions"].wai_bond))
    pyreadstat.write_sav(sessions, str(folder / "sessions.sav"))

    study = ab.load_study(folder)
    assert_same_study(study, reference(tmp_path))
    # clients: sex labelled for 4 of 5 (a4 empty), country for 4 (a2 empty); follow-ups:
    # who5 missing for a2 and a5, phq9 for a2, a5 and a4 (the second through a declared range)
    assert study.conversions == (
        Conversion("providers.sav", "provider_type", "value labels", 4, "1 → therapist, 2 → coach"),
        Conversion("clients.sav", "who5_followup", "declared missing", 2, "-99"),
        Conversion("clients.sav", "phq9_followup", "declared missing", 3, "-99"),
        Conversion("clients.sav", "sex", "value labels", 4, "1 → female, 2 → male, 3 → other"),
        Conversion("clients.sav", "country", "value labels", 4, "1 → DE, 2 → FR, 3 → GB, 4 → US"),
    )
    assert str(study.conversions[1]) == (
        "clients.sav, column 'who5_followup': 2 cells with a declared missing code (-99) read as "
        "missing"
    )


@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_an_undeclared_missing_code_is_refused_saying_how_codes_are_read(tmp_path, fmt):
    import pyreadstat

    frames, folder = tiny(), tmp_path / fmt
    write_csv_study(folder, {t: tiny_tables()[t] for t in ("providers", "sessions")})
    clients = spss_clients(frames).assign(
        sex=frames["clients"].sex, country=frames["clients"].country
    )
    write = pyreadstat.write_sav if fmt == "sav" else pyreadstat.write_dta
    write(clients, str(folder / f"clients.{fmt}"))
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(folder)
    (problem,) = [p for p in info.value.problems if p.column == "who5_followup"]
    assert problem.rows == [3, 4] and problem.got == [-99, -99]  # a2 and a5
    package = {"sav": "SPSS .sav files", "dta": "Stata .dta files"}[fmt]
    declare = {"sav": "Variable View, Missing", "dta": "mvdecode"}[fmt]
    assert f"{package} are read with" in str(problem) and "value labels" in str(problem)
    assert declare in str(problem)


def test_stata_extended_missing_and_value_labels_are_read_and_counted(tmp_path):
    import pyreadstat

    frames, folder = tiny(), tmp_path / "dta"
    folder.mkdir()
    providers = frames["providers"].assign(
        provider_type=coded(frames["providers"].provider_type, TYPE)
    )
    pyreadstat.write_dta(
        providers, str(folder / "providers.dta"), variable_value_labels={"provider_type": TYPE}
    )
    clients = frames["clients"].drop(columns="notes")
    # .a "not reached" for a2, .b "refused" for a5: Stata's extended missing values
    followup = numeric(clients.who5_followup).astype(object)
    followup[clients.client_id.eq("a2").to_numpy()] = "a"
    followup[clients.client_id.eq("a5").to_numpy()] = "b"
    clients = clients.assign(who5_followup=followup, phq9_followup=numeric(clients.phq9_followup))
    pyreadstat.write_dta(
        clients, str(folder / "clients.dta"), missing_user_values={"who5_followup": ["a", "b"]}
    )
    sessions = frames["sessions"].assign(wai_bond=numeric(frames["sessions"].wai_bond))
    pyreadstat.write_dta(sessions, str(folder / "sessions.dta"))

    study = ab.load_study(folder)
    assert_same_study(study, reference(tmp_path))
    assert study.conversions == (
        Conversion("providers.dta", "provider_type", "value labels", 4, "1 → therapist, 2 → coach"),
        Conversion("clients.dta", "who5_followup", "declared missing", 2, ".a, .b"),
    )


# ---- one long, session-level export ------------------------------------------------------------
def test_a_long_csv_export_loads_as_the_three_tables(tmp_path):
    folder = write_long_csv(tmp_path / "long", long_export(tiny()))
    study = ab.load_study(folder)
    assert_same_study(study, reference(tmp_path))
    assert set(study.files.values()) == {folder / "sessions_long.csv"}
    assert study.ignored["sessions"] == ("notes",) and study.conversions == ()


def test_a_long_spss_export_declared_by_name_loads_as_the_three_tables(tmp_path):
    import pyreadstat

    frames, folder = tiny(), tmp_path / "long"
    folder.mkdir()
    long = long_export({**frames, "clients": spss_clients(frames)})
    long = long.assign(
        provider_type=coded(long.provider_type, TYPE), wai_bond=numeric(long.wai_bond)
    )
    pyreadstat.write_sav(
        long,
        str(folder / "export.sav"),
        variable_value_labels=SPSS_LABELS,
        missing_ranges=SPSS_MISSING,
    )
    (folder / "study.toml").write_text('long = "export.sav"\n')
    study = ab.load_study(folder)
    assert_same_study(study, reference(tmp_path))
    # per session row: a2 has 3 sessions, a5 2, a4 2; a4 has no sex, a2 no country
    counts = {(c.column, c.kind): c.count for c in study.conversions}
    assert counts == {
        ("who5_followup", "declared missing"): 5,
        ("phq9_followup", "declared missing"): 7,
        ("provider_type", "value labels"): 13,
        ("sex", "value labels"): 11,
        ("country", "value labels"): 10,
    }
    assert {c.file for c in study.conversions} == {"export.sav"}


def test_conflicting_rows_of_a_client_or_provider_are_all_named(tmp_path):
    long = long_export(tiny())
    # rows (1-based) of a3: 1, 3, 7, 9; of a5: 12, 13; of K1: 1, 4, 6, 7, 8, 9
    long.loc[6, "who5_baseline"] = "61"  # a3's third row
    long.loc[12, "age"] = "101"  # a5's second row
    long.loc[8, "age"] = ""  # a3's fourth row: an empty cell is a conflict too
    long.loc[5, "provider_type"] = "therapist"  # K1 on row 6
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(write_long_csv(tmp_path / "long", long))
    found = {(p.column, tuple(p.rows)): p for p in info.value.problems}
    assert set(found) == {
        ("who5_baseline", (1, 7)),
        ("age", (1, 9, 12, 13)),
        ("provider_type", (1, 6)),
    }
    message = str(found[("who5_baseline", (1, 7))])
    assert "sessions_long.csv" in message
    assert "client 'a3' has '60' on row 1, line 2 and '61' on row 7, line 8" in message
    age = str(found[("age", (1, 9, 12, 13))])
    assert "client 'a3' has '52' on row 1, line 2 and <empty> on row 9, line 10" in age
    assert "client 'a5' has '100' on row 12, line 13 and '101' on row 13, line 14" in age
    assert "provider 'K1' has 'coach' on row 1, line 2 and 'therapist' on row 6" in str(info.value)


def test_the_split_tables_go_through_the_contract_at_the_long_files_rows(tmp_path):
    long = long_export(tiny())
    long.loc[long.client_id == "a2", "age"] = "17"  # a2's first session is row 4
    long.loc[2, "wai_goal"] = "0"
    long["WAI_Task"] = ""
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(write_long_csv(tmp_path / "long", long))
    found = {p.column: p for p in info.value.problems}
    assert found["age"].rows == [4] and found["wai_goal"].rows == [3]
    assert "did you mean 'wai_task'" in str(found["WAI_Task"])
    assert all(str(p.file).endswith("sessions_long.csv") for p in info.value.problems)


def test_a_long_export_without_provider_ids_says_what_it_needs(tmp_path):
    long = long_export(tiny()).drop(columns="provider_id")
    with pytest.raises(ab.DataContractError, match=r"sessions_long.csv: .*provider_id is missing"):
        ab.load_study(write_long_csv(tmp_path / "long", long))


def test_a_long_export_beside_the_tables_is_ambiguous(tmp_path):
    folder = write_csv_study(tmp_path / "s", tiny_tables())
    long_export(tiny()).to_csv(folder / "sessions_long.csv", index=False)
    with pytest.raises(ab.DataContractError, match=r"either the three tables or one long export"):
        ab.load_study(folder)


def test_writing_tables_beside_a_long_export_is_refused(tmp_path):
    folder = write_long_csv(tmp_path / "long", long_export(tiny()))
    study = ab.load_study(folder)
    with pytest.raises(FileExistsError, match=r"sessions_long.csv"):
        write_study(folder, study.providers, study.clients, study.sessions)
    assert sorted(p.name for p in folder.iterdir()) == ["sessions_long.csv", "study.toml"]


def test_writing_tables_beside_a_declared_long_export_is_refused(tmp_path):
    folder = write_long_csv(tmp_path / "long", long_export(tiny()), name="export.csv")
    (folder / "study.toml").write_text('ignore = ["notes"]\nlong = "export.csv"\n')
    study = ab.load_study(folder)
    with pytest.raises(FileExistsError, match=r"export.csv"):
        write_study(folder, study.providers, study.clients, study.sessions)
    assert sorted(p.name for p in folder.iterdir()) == ["export.csv", "study.toml"]


def test_a_declared_long_export_that_is_not_there_is_named(tmp_path):
    folder = write_long_csv(tmp_path / "long", long_export(tiny()))
    (folder / "study.toml").write_text('ignore = ["notes"]\nlong = "export.sav"\n')
    with pytest.raises(ab.DataContractError, match=r"long = 'export.sav'.*no such file"):
        ab.load_study(folder)


# ---- a file that cannot be read ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("clients.xls", "clients.xls exists but .xls cannot be read .*save it from Excel as .xlsx"),
        ("clients.sas7bdat", "export the table from SAS as CSV"),
        ("Clients.csv", "Clients.csv exists: rename it clients.csv"),
        ("clients.CSV", "clients.CSV exists: rename it clients.csv"),
    ],
)
def test_a_file_in_a_format_that_cannot_be_read_is_named_with_what_to_do(tmp_path, name, advice):
    folder = write_csv_study(tmp_path / "s", tiny_tables())
    (folder / "clients.csv").rename(folder / name)
    with pytest.raises(ab.DataContractError, match=advice):
        ab.load_study(folder)


def test_a_long_export_in_a_format_that_cannot_be_read_is_named(tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "sessions_long.por").write_bytes(b"SPSS portable file")
    with pytest.raises(ab.DataContractError) as info:
        ab.load_study(folder)
    (sessions,) = [p for p in info.value.problems if p.file.name == "sessions.csv"]
    assert "sessions_long.por exists but .por cannot be read" in str(sessions)
    assert "save it from SPSS as .sav" in str(sessions)


# ---- the report ------------------------------------------------------------------------------------
def test_the_clients_section_lists_the_conversions():
    conversion = Conversion("clients.sav", "who5_followup", "declared missing", 2, "-99")
    meta = {"exclusions": {"clients_in_study": 5}, "conversions": [conversion.to_dict()]}
    text = "\n".join(_clients_section(meta))
    assert f"- {conversion}" in text
    assert "statistics-package" not in "\n".join(_clients_section({"exclusions": {"n": 5}}))
