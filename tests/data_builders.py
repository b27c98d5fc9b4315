"""Small hand-made study tables with known answers, shared by the data-layer tests.

The tiny study (values worked out by hand in ``tests/test_frame.py``):

* providers ``T1``, ``T2`` (therapists), ``K1``, ``K2`` (coaches) and ``T9`` (no sessions);
  pseudonyms in sorted-id order: P0001 = K1, P0002 = K2, P0003 = T1, P0004 = T2.
* clients ``007`` (T1 only), ``a2`` (K1 only), ``a3`` (T1 once, K1 three times),
  ``a4`` (K2 only, one bond item missing), ``a5`` (T2 once, K2 once).

Tables are lists of rows of text cells, written as CSV by hand (not with pandas), so the tests see
exactly the bytes a user's file would hold.
"""

from __future__ import annotations

import copy
from pathlib import Path

Table = dict[str, list]  # {"columns": [...], "rows": [[...], ...]}

PROVIDERS: Table = {
    "columns": ["provider_id", "provider_type"],
    "rows": [
        ["T1", "therapist"],
        ["K1", "coach"],
        ["T2", "therapist"],
        ["K2", "coach"],
        ["T9", "therapist"],
    ],
}

CLIENTS: Table = {
    "columns": [
        "client_id",
        "age",
        "sex",
        "country",
        "who5_baseline",
        "who5_followup",
        "phq9_baseline",
        "phq9_followup",
        "first_session",
        "last_session",
        "notes",
    ],
    "rows": [
        ["a3", "52", "other", "FR", "60", "64", "9", "5", "2020-12-30", "2021-01-02", "x"],
        ["007", "30", "female", "DE", "20", "40", "12", "6", "2021-01-04", "2021-01-18", ""],
        ["a2", "45", "male", "", "28", "", "", "", "2021-02-01", "2021-03-01", ""],
        ["a5", "100", "male", "US", "44", "", "15", "", "2020-02-28", "2020-03-01", ""],
        ["a4", "18", "", "GB", "12", "32", "", "", "2021-03-01", "2021-03-01", ""],
    ],
}

# Rows deliberately not in client/date order.
SESSIONS: Table = {
    "columns": ["client_id", "provider_id", "session_date", "wai_goal", "wai_bond"],
    "rows": [
        ["a3", "K1", "2021-01-02", "4", "3"],
        ["007", "T1", "2021-01-18", "5", "5"],
        ["a3", "T1", "2020-12-30", "5", "4"],
        ["a2", "K1", "2021-02-01", "3", "4"],
        ["007", "T1", "2021-01-04", "4", "5"],
        ["a2", "K1", "2021-02-15", "4", "4"],
        ["a3", "K1", "2020-12-31", "2", "3"],
        ["a2", "K1", "2021-03-01", "5", "4"],
        ["a3", "K1", "2021-01-01", "3", "3"],
        ["a4", "K2", "2021-03-01", "5", "5"],
        ["a4", "K2", "2021-03-01", "5", ""],
        ["a5", "T2", "2020-03-01", "1", "2"],
        ["a5", "K2", "2020-02-28", "3", "4"],
    ],
}


def tiny_tables() -> dict[str, Table]:
    """A fresh deep copy of the tiny study's tables (safe to mutate)."""
    return copy.deepcopy({"providers": PROVIDERS, "clients": CLIENTS, "sessions": SESSIONS})


def csv_text(table: Table) -> str:
    """The table as CSV text (header + rows, ``\\n`` line ends, no quoting needed)."""
    lines = [",".join(table["columns"])]
    lines += [",".join(row) for row in table["rows"]]
    return "\n".join(lines) + "\n"


def write_csv_study(folder: Path, tables: dict[str, Table]) -> Path:
    """Write the tables as ``<name>.csv`` in ``folder`` (created) and return the folder.

    The clients' free-text ``notes`` column, which the contract does not name, is declared
    ignored in ``study.toml`` whenever a table holds it (an undeclared column is refused).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        (folder / f"{name}.csv").write_text(csv_text(table), encoding="utf-8", newline="")
    if any("notes" in table["columns"] for table in tables.values()):
        (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    return folder


def set_cell(table: Table, row: int, column: str, value: str) -> None:
    """Set a cell by 1-based data-row number and column name."""
    table["rows"][row - 1][table["columns"].index(column)] = value


def drop_column(table: Table, column: str) -> None:
    """Remove a column from the table."""
    i = table["columns"].index(column)
    del table["columns"][i]
    for row in table["rows"]:
        del row[i]


def add_column(table: Table, column: str, values: list[str]) -> None:
    """Append a column."""
    table["columns"].append(column)
    for row, value in zip(table["rows"], values, strict=True):
        row.append(value)
