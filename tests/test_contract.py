"""Bad input gets a clear error (file, column, rows, expectation) and changes nothing.

Each case starts from the valid tiny study of ``tests/data_builders.py`` and breaks one thing.
Rows of the tiny tables (1-based data rows; CSV line = row + 1):
providers 1 T1, 2 K1, 3 T2, 4 K2, 5 T9; clients 1 a3, 2 007, 3 a2, 4 a5, 5 a4; sessions 1..13.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.data import DataContractError, load_study, validate_study, write_study
from data_builders import (
    add_column,
    drop_column,
    set_cell,
    tiny_tables,
    write_csv_study,
)

DAYS = ["3", "14", "28", "2", "0"]  # consistent with the tiny study's dates


def cell(table: str, row: int, column: str, value: str) -> Callable:
    return lambda t: set_cell(t[table], row, column, value)


def drop(table: str, *columns: str) -> Callable:
    def mutate(t):
        for column in columns:
            drop_column(t[table], column)

    return mutate


def with_days(row: int | None = None, value: str = "", *, drop_dates: bool = False) -> Callable:
    def mutate(t):
        days = list(DAYS)
        if row is not None:
            days[row - 1] = value
        add_column(t["clients"], "days_in_care", days)
        if drop_dates:
            drop_column(t["clients"], "first_session")
            drop_column(t["clients"], "last_session")

    return mutate


def with_task(row: int, value: str) -> Callable:
    def mutate(t):
        task = [""] * len(t["sessions"]["rows"])
        task[row - 1] = value
        add_column(t["sessions"], "wai_task", task)

    return mutate


def add_client(t) -> None:
    t["clients"]["rows"].append(
        ["a6", "40", "female", "", "36", "", "", "", "2021-01-01", "2021-01-01", ""]
    )


def session_index(values: list[str]) -> Callable:
    def mutate(t):
        drop_column(t["sessions"], "session_date")
        add_column(t["sessions"], "session_index", values)

    return mutate


# (id, mutate tables, file, column, rows, words the message must contain)
CASES = [
    (
        "missing column age",
        drop("clients", "age"),
        "clients.csv",
        "age",
        [],
        "a column named 'age' in the header (line 1)",
    ),
    (
        "missing column wai_bond",
        drop("sessions", "wai_bond"),
        "sessions.csv",
        "wai_bond",
        [],
        "a column named 'wai_bond'",
    ),
    (
        "missing column provider_type",
        drop("providers", "provider_type"),
        "providers.csv",
        "provider_type",
        [],
        "a column named 'provider_type'",
    ),
    (
        "no session order",
        drop("sessions", "session_date"),
        "sessions.csv",
        "session_date",
        [],
        "a column named 'session_date'",
    ),
    (
        "no dates nor days",
        drop("clients", "first_session", "last_session"),
        "clients.csv",
        "days_in_care",
        [],
        "first_session and last_session",
    ),
    (
        "unknown provider type",
        cell("providers", 3, "provider_type", "psychiatrist"),
        "providers.csv",
        "provider_type",
        [3],
        "one of therapist, coach (a study with other provider types declares them at the top of "
        'its study.toml: provider_types = ["therapist", "coach", "psychiatrist"]); got '
        "'psychiatrist'",
    ),
    (
        "provider type case",
        cell("providers", 2, "provider_type", "Coach"),
        "providers.csv",
        "provider_type",
        [2],
        "one of therapist, coach",
    ),
    (
        "rating above 5",
        cell("sessions", 4, "wai_goal", "6"),
        "sessions.csv",
        "wai_goal",
        [4],
        "an integer rating from 1 to 5 (or empty when missing); got 6",
    ),
    (
        "rating negative",
        cell("sessions", 9, "wai_bond", "-1"),
        "sessions.csv",
        "wai_bond",
        [9],
        "an integer rating from 1 to 5",
    ),
    (
        "rating 3.5",
        cell("sessions", 2, "wai_bond", "3.5"),
        "sessions.csv",
        "wai_bond",
        [2],
        "an integer rating from 1 to 5 (or empty when missing); got 3.5",
    ),
    (
        "rating x",
        cell("sessions", 5, "wai_goal", "x"),
        "sessions.csv",
        "wai_goal",
        [5],
        "an integer rating from 1 to 5 (or empty when missing); got 'x'",
    ),
    (
        "rating n/a text",
        cell("sessions", 5, "wai_goal", "n/a"),
        "sessions.csv",
        "wai_goal",
        [5],
        "got 'n/a'",
    ),
    (
        "rating 0",
        cell("sessions", 6, "wai_goal", "0"),
        "sessions.csv",
        "wai_goal",
        [6],
        "0 is not a rating; leave missing items empty",
    ),
    (
        "task rating 0",
        with_task(3, "0"),
        "sessions.csv",
        "wai_task",
        [3],
        "0 is not a rating; leave missing items empty",
    ),
    (
        "task rating 7",
        with_task(3, "7"),
        "sessions.csv",
        "wai_task",
        [3],
        "an integer rating from 1 to 5",
    ),
    (
        "WHO-5 baseline 104",
        cell("clients", 2, "who5_baseline", "104"),
        "clients.csv",
        "who5_baseline",
        [2],
        "a WHO-5 score (0–100 percentage metric) between 0 and 100; got 104",
    ),
    (
        "WHO-5 follow-up -4",
        cell("clients", 3, "who5_followup", "-4"),
        "clients.csv",
        "who5_followup",
        [3],
        "between 0 and 100 (or empty); got -4",
    ),
    (
        "WHO-5 baseline missing",
        cell("clients", 1, "who5_baseline", ""),
        "clients.csv",
        "who5_baseline",
        [1],
        "between 0 and 100; got <empty>",
    ),
    (
        "PHQ-9 28",
        cell("clients", 1, "phq9_baseline", "28"),
        "clients.csv",
        "phq9_baseline",
        [1],
        "a PHQ-9 score between 0 and 27 (or empty); got 28",
    ),
    (
        "PHQ-9 follow-up text",
        cell("clients", 2, "phq9_followup", "six"),
        "clients.csv",
        "phq9_followup",
        [2],
        "between 0 and 27 (or empty); got 'six'",
    ),
    (
        "duplicated client",
        cell("clients", 4, "client_id", "007"),
        "clients.csv",
        "client_id",
        [2, 4],
        "each client_id to appear once (duplicated id); got '007', '007'",
    ),
    (
        "duplicated provider",
        cell("providers", 5, "provider_id", "T1"),
        "providers.csv",
        "provider_id",
        [1, 5],
        "each provider_id to appear once",
    ),
    (
        "missing client id",
        cell("clients", 3, "client_id", ""),
        "clients.csv",
        "client_id",
        [3],
        "a non-empty identifier",
    ),
    (
        "session of unknown client",
        cell("sessions", 7, "client_id", "a9"),
        "sessions.csv",
        "client_id",
        [7],
        "a client_id listed in",
    ),
    (
        "session of unknown provider",
        cell("sessions", 8, "provider_id", "K7"),
        "sessions.csv",
        "provider_id",
        [8],
        "a provider_id listed in",
    ),
    (
        "id with a space is a different id",
        cell("sessions", 8, "client_id", "a2 "),
        "sessions.csv",
        "client_id",
        [8],
        "unknown client",
    ),
    (
        "client without sessions",
        add_client,
        "clients.csv",
        "client_id",
        [6],
        "every client to have at least one session",
    ),
    (
        "age abc and 12",
        lambda t: (cell("clients", 2, "age", "abc")(t), cell("clients", 3, "age", "12")(t)),
        "clients.csv",
        "age",
        [2, 3],
        "an age in years between 18 and 100; got 'abc', 12",
    ),
    (
        "age 101",
        cell("clients", 5, "age", "101"),
        "clients.csv",
        "age",
        [5],
        "between 18 and 100; got 101",
    ),
    (
        "age missing",
        cell("clients", 4, "age", ""),
        "clients.csv",
        "age",
        [4],
        "between 18 and 100; got <empty>",
    ),
    (
        "sex F",
        cell("clients", 1, "sex", "F"),
        "clients.csv",
        "sex",
        [1],
        "one of female, male, other (or empty); got 'F'",
    ),
    (
        "negative days",
        with_days(2, "-3", drop_dates=True),
        "clients.csv",
        "days_in_care",
        [2],
        "a whole number of days >= 0",
    ),
    (
        "fractional days",
        with_days(1, "3.5", drop_dates=True),
        "clients.csv",
        "days_in_care",
        [1],
        "a whole number of days >= 0",
    ),
    (
        "days disagree with dates",
        with_days(3, "27"),
        "clients.csv",
        "days_in_care",
        [3],
        "days_in_care to equal last_session - first_session in days; got 27 (dates give 28)",
    ),
    (
        "days missing, no dates",
        with_days(4, "", drop_dates=True),
        "clients.csv",
        "days_in_care",
        [4],
        "on every row",
    ),
    (
        "last before first",
        cell("clients", 4, "last_session", "2020-02-01"),
        "clients.csv",
        "last_session",
        [4],
        "a date on or after first_session; got '2020-02-01'",
    ),
    (
        "impossible date",
        cell("clients", 1, "first_session", "2021-13-01"),
        "clients.csv",
        "first_session",
        [1],
        "a date written YYYY-MM-DD (or empty); got '2021-13-01'",
    ),
    (
        "non-ISO date",
        cell("clients", 5, "last_session", "01/03/2021"),
        "clients.csv",
        "last_session",
        [5],
        "a date written YYYY-MM-DD",
    ),
    (
        "one date missing",
        cell("clients", 2, "last_session", ""),
        "clients.csv",
        "last_session",
        [2],
        "both first_session and last_session, or neither",
    ),
    (
        "bad session date",
        cell("sessions", 2, "session_date", "yesterday"),
        "sessions.csv",
        "session_date",
        [2],
        "a date written YYYY-MM-DD; got 'yesterday'",
    ),
    (
        "missing session date",
        cell("sessions", 12, "session_date", ""),
        "sessions.csv",
        "session_date",
        [12],
        "a date written YYYY-MM-DD; got <empty>",
    ),
    (
        "session index repeated",
        session_index(["1", "1", "3", "1", "2", "2", "2", "3", "2", "1", "2", "1", "2"]),
        "sessions.csv",
        "session_index",
        [7, 9],
        "each session_index once within a client; got 2, 2",
    ),
    (
        "session index 0",
        session_index(["0", "1", "1", "1", "2", "2", "2", "3", "3", "1", "2", "1", "2"]),
        "sessions.csv",
        "session_index",
        [1],
        "a whole number >= 1 on every row; got 0",
    ),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` with its size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def check(err: DataContractError, file: str, column: str | None, rows: list[int], words: str):
    message = str(err)
    assert isinstance(err, ValueError)
    assert Path(err.file).name == file
    assert file in message
    assert err.column == column
    if column is not None:
        assert f"column {column!r}" in message
    assert err.rows == rows
    if rows:
        label = "row" if len(rows) == 1 else "rows"
        shown = rows[:5]
        assert f"{label} {', '.join(map(str, shown))}" in message
        if file.endswith(".csv"):
            lines = ", ".join(str(r + 1) for r in shown)
            assert f"({'line' if len(shown) == 1 else 'lines'} {lines})" in message
    assert words in message, message
    assert err.expected in message


@pytest.mark.parametrize(
    ("mutate", "file", "column", "rows", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_table_is_rejected_and_nothing_written(tmp_path, mutate, file, column, rows, words):
    tables = tiny_tables()
    mutate(tables)
    folder = write_csv_study(tmp_path / "study", tables)
    before = snapshot(tmp_path)
    with pytest.raises(DataContractError) as info:
        load_study(folder)
    check(info.value, file, column, rows, words)
    assert snapshot(tmp_path) == before


def test_session_index_repeated_rows_are_all_listed(tmp_path):
    tables = tiny_tables()
    session_index(["1"] * 13)(tables)
    with pytest.raises(DataContractError) as info:
        load_study(write_csv_study(tmp_path / "s", tables))
    # every client has a repeated index: all 13 rows are named, 5 shown
    assert info.value.rows == list(range(1, 14))
    assert "rows 1, 2, 3, 4, 5 and 8 more (lines 2, 3, 4, 5, 6)" in str(info.value)


# ---- files that cannot be read at all ---------------------------------------------------------
def _write_bytes(name: str, data: bytes) -> Callable:
    return lambda folder: (folder / name).write_bytes(data)


def _remove(name: str) -> Callable:
    return lambda folder: (folder / name).unlink()


def _to_parquet(name: str, data: bytes) -> Callable:
    def post(folder):
        (folder / f"{name}.csv").unlink()
        (folder / f"{name}.parquet").write_bytes(data)

    return post


def _both_formats(folder: Path) -> None:
    df = pd.read_csv(folder / "clients.csv", dtype=str)
    df.to_parquet(folder / "clients.parquet", index=False)


rng = np.random.default_rng(20240611)
GARBAGE = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()

FILE_CASES = [
    ("zero bytes", _write_bytes("clients.csv", b""), "clients.csv", "the file is empty (0 bytes)"),
    (
        "blank file",
        _write_bytes("providers.csv", b"\n\n  \n"),
        "providers.csv",
        "the file is blank",
    ),
    (
        "header only",
        _write_bytes("providers.csv", b"provider_id,provider_type\n"),
        "providers.csv",
        "the file has a header but no data",
    ),
    (
        "binary garbage",
        _write_bytes("sessions.csv", GARBAGE + b"\x00"),
        "sessions.csv",
        "a UTF-8 text CSV file; it holds binary data",
    ),
    (
        "not UTF-8",
        _write_bytes("clients.csv", "client_id,âge\n1,2\n".encode("latin-1")),
        "clients.csv",
        "a UTF-8 text CSV file; byte",
    ),
    (
        "ragged CSV",
        _write_bytes("providers.csv", b"provider_id,provider_type\nT1,coach,x,y\n"),
        "providers.csv",
        "a well-formed CSV file",
    ),
    (
        "corrupt parquet",
        _to_parquet("clients", b"PAR1 this is not parquet PAR1"),
        "clients.parquet",
        "a readable Parquet file",
    ),
    (
        "garbage parquet",
        _to_parquet("sessions", GARBAGE),
        "sessions.parquet",
        "a readable Parquet file",
    ),
    (
        "missing sessions file",
        _remove("sessions.csv"),
        "sessions.csv",
        "a file sessions.csv or sessions.parquet",
    ),
    ("csv and parquet", _both_formats, "clients.csv", "(ambiguous: remove one)"),
]


@pytest.mark.parametrize(
    ("post", "file", "words"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_unreadable_files(tmp_path, post, file, words):
    folder = write_csv_study(tmp_path / "study", tiny_tables())
    post(folder)
    before = snapshot(tmp_path)
    with pytest.raises(DataContractError) as info:
        load_study(folder)
    check(info.value, file, None, [], words)
    assert snapshot(tmp_path) == before


def test_duplicate_header_column(tmp_path):
    tables = tiny_tables()
    add_column(tables["clients"], "age", ["1"] * 5)
    with pytest.raises(DataContractError) as info:
        load_study(write_csv_study(tmp_path / "s", tables))
    check(info.value, "clients.csv", "age", [], "each column name once in the header (line 1)")


@pytest.mark.parametrize("target", ["missing", "file"])
def test_not_a_folder(tmp_path, target):
    path = tmp_path / "nope"
    if target == "file":
        path.write_text("x")
    with pytest.raises(DataContractError, match="a study folder holding providers"):
        load_study(path)


# ---- what valid input keeps ---------------------------------------------------------------------
def test_missing_values_stay_missing_and_ids_stay_text(tmp_path):
    tables = tiny_tables()
    add_column(tables["sessions"], "wai_task", [""] * 13)
    study = load_study(write_csv_study(tmp_path / "s", tables))
    c = study.clients.set_index("client_id")
    assert "007" in c.index  # never 7
    assert study.clients["client_id"].dtype == "str"
    assert pd.isna(c.loc["a2", "who5_followup"]) and pd.isna(c.loc["a2", "phq9_baseline"])
    assert pd.isna(c.loc["a2", "country"]) and pd.isna(c.loc["a4", "sex"])
    assert study.sessions["wai_task"].isna().all()
    assert study.sessions["wai_bond"].isna().sum() == 1
    assert "notes" not in study.clients  # declared ignored (study.toml), so dropped
    assert study.ignored == {"providers": (), "clients": ("notes",), "sessions": ()}
    assert c.loc["a5", "days_in_care"] == 2


def test_optional_columns_may_be_absent(tmp_path):
    tables = tiny_tables()
    for column in ("country", "phq9_baseline", "phq9_followup"):
        drop_column(tables["clients"], column)
    study = load_study(write_csv_study(tmp_path / "s", tables))
    for column in ("country", "phq9_baseline", "phq9_followup"):
        assert study.clients[column].isna().all()


def test_days_in_care_only(tmp_path):
    tables = tiny_tables()
    with_days(drop_dates=True)(tables)
    study = load_study(write_csv_study(tmp_path / "s", tables))
    assert study.clients["days_in_care"].tolist() == [3, 14, 28, 2, 0]
    assert study.clients["first_session"].isna().all()


def test_parquet_rows_have_no_line_numbers(tmp_path):
    study = load_study(write_csv_study(tmp_path / "s", tiny_tables()))
    sessions = study.sessions.copy()
    sessions.loc[2, "wai_goal"] = 0
    folder = tmp_path / "p"
    folder.mkdir()
    study.providers.to_parquet(folder / "providers.parquet")
    study.clients.to_parquet(folder / "clients.parquet")
    sessions.to_parquet(folder / "sessions.parquet")
    with pytest.raises(DataContractError) as info:
        load_study(folder)
    assert info.value.rows == [3]
    assert "sessions.parquet, column 'wai_goal', row 3: expected" in str(info.value)
    assert "(line" not in str(info.value)


def test_parquet_float_ids_rejected(tmp_path):
    study = load_study(write_csv_study(tmp_path / "s", tiny_tables()))
    folder = tmp_path / "p"
    write_study(folder, study.providers, study.clients, study.sessions, fmt="parquet")
    providers = study.providers.copy()
    providers["provider_id"] = np.arange(5, dtype=float)
    providers.to_parquet(folder / "providers.parquet")
    with pytest.raises(DataContractError, match="identifiers stored as text"):
        load_study(folder)


def test_in_memory_validation_and_write_changes_nothing(tmp_path):
    study = load_study(write_csv_study(tmp_path / "s", tiny_tables()))
    clients = study.clients.copy()
    clients.loc[1, "age"] = 12.0
    with pytest.raises(DataContractError) as info:
        validate_study(study.providers, clients, study.sessions)
    assert "clients table, column 'age', row 2: expected an age" in str(info.value)
    target = tmp_path / "out"
    with pytest.raises(DataContractError):
        write_study(target, study.providers, clients, study.sessions)
    assert not target.exists()
    assert clients.loc[1, "age"] == 12.0  # input untouched


def test_many_rows_are_summarised():
    err = DataContractError(
        "clients.csv", "a number", column="age", rows=range(1, 9), got=list("abcdefgh")
    )
    assert str(err) == (
        "clients.csv, column 'age', rows 1, 2, 3, 4, 5 and 3 more (lines 2, 3, 4, 5, 6): "
        "expected a number; got 'a', 'b', 'c', 'd', 'e', ..."
    )
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.rows == err.rows
