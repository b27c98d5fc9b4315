"""A study stored as one long export: one row per session, client and provider columns repeated.

Statistics packages and survey platforms often export a study as a single session-level file:
each row is one session (``client_id``, ``provider_id``, ``session_date`` or ``session_index``,
the WAI items) and carries its client's columns (``age``, ``sex``, ``who5_baseline``, …) and its
provider's columns (``provider_type``) repeated. :func:`split_long` splits such a table into the
three tables of the data contract, which are then checked exactly as three files would be.

A repeated column must repeat: every row of a client holds the same value of each client column
(two rows of one client with ``who5_baseline`` 40 and 44 are two different answers to one
question, and choosing either would be a guess), and likewise for providers. A missing cell on one
row and a value on another is such a conflict too. Every conflict is reported, with the first few
clients (providers) of each column, naming the two rows and their values.

The split tables keep the long file's row numbers: a client's row is its first session row, so a
problem in a client column is reported at the first row of that client in the long file.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd

from alliance_bayes.data.contract import (
    KNOWN_COLUMNS,
    TABLES,
    Problems,
    Source,
    ignored_near,
    suggest_column,
    unnamed_hint,
)

__all__ = ["LONG_STEM", "SplitExport", "split_long"]

#: The file name (without suffix) of a long export found in a study folder.
LONG_STEM = "sessions_long"
#: Conflicting clients (providers) named per column; the rest are counted.
_SHOWN = 3

#: The columns each table contributes to a long export (the ids are the sessions' own columns).
_ENTITY = {"clients": "client_id", "providers": "provider_id"}


@dataclass(frozen=True)
class SplitExport:
    """The three raw tables split from a long export, indexed by the long file's data rows.

    Attributes
    ----------
    frames : dict of str to pandas.DataFrame
        ``providers``, ``clients`` and ``sessions``; the index holds 0-based data-row numbers of
        the long file (a client's or provider's row is its first session row).
    ignored : tuple of str
        The declared-ignored columns the long file held (dropped).
    """

    frames: dict[str, pd.DataFrame]
    ignored: tuple[str, ...]


def _ids(s: pd.Series) -> pd.Series:
    """Identifiers as stripped text, empty as missing (the contract's reading of an id)."""
    text = s.astype("string").str.strip()
    return text.mask(text.eq(""))


def _cells(s: pd.Series) -> pd.Series:
    """Cells as comparable text, with every missing cell the same marker."""
    text = s.astype("string").str.strip()
    return text.mask(text.eq("")).fillna("\x00missing")


def _show(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "<empty>"
    text = str(value)
    return repr(text) if text.strip() else "<empty>"


def _unknown(
    df: pd.DataFrame,
    src: Source,
    ignore: Collection[str],
    how: str,
    p: Problems,
    declared: Collection[str] = (),
) -> None:
    """Each column of the long file that no table names, the study does not declare and that is
    not ignored is a problem."""
    known = {c for table in TABLES for c in KNOWN_COLUMNS[table]} | set(declared)
    for column in df.columns:
        if column in known or column in ignore:
            continue
        hints = [suggest_column(str(column), table) for table in TABLES]
        hint = unnamed_hint(df, column)
        hint = hint or next((h for h in hints if h.startswith("did you mean")), "")
        hint = hint or next((h for h in hints if h and "is a column of" not in h), "")
        hint = "; ".join(h for h in (hint, ignored_near(str(column), ignore)) if h)
        p.add(
            src.fail(
                "only the columns the data contract names for the providers, clients and sessions "
                "tables (a long export holds them all)"
                + (f"; {hint}" if hint else "")
                + f". A column the analysis does not use must be declared ignored ({how})",
                column=str(column),
            )
        )


def _conflicts(
    df: pd.DataFrame, keys: pd.Series, column: str, table: str, src: Source, p: Problems
) -> None:
    """Rows of one client (provider) that disagree on ``column``: the first few, by key."""
    known = keys[keys.notna()]
    cells = _cells(df[column])[keys.notna()]
    varying = cells.groupby(known, sort=False).nunique()
    varying = varying[varying > 1]
    if varying.empty:
        return
    who = table.removesuffix("s")
    rows, got, pairs = [], [], []
    for key in varying.index[:_SHOWN]:
        group = cells[known.eq(key).to_numpy(dtype=bool)]
        first = group.index[0]
        other = group.index[group.ne(group.iloc[0]).to_numpy()][0]
        where = []
        for i in (first, other):
            rows.append(int(i) + 1)
            got.append(df.at[i, column])
            line = f", line {int(i) + 2}" if src.csv else ""
            where.append(f"{_show(df.at[i, column])} on row {int(i) + 1}{line}")
        pairs.append(f"{who} {key!r} has {' and '.join(where)}")
    more = len(varying) - _SHOWN
    p.add(
        src.fail(
            f"one value per {who} in a {table} column (a long export repeats each {who}'s "
            f"columns on every session row, so they must be identical): "
            + "; ".join(pairs)
            + (f"; {more} more {table} disagree too" if more > 0 else ""),
            column=column,
            rows=rows,
            got=got,
        )
    )


def split_long(
    df: pd.DataFrame,
    src: Source,
    p: Problems,
    *,
    ignore: Collection[str] = (),
    how_to_ignore: str = "ignore_columns=[...]",
    client_columns: Collection[str] = (),
    session_columns: Collection[str] = (),
) -> SplitExport | None:
    """Split a long (session-level) export into the contract's three raw tables.

    Parameters
    ----------
    df : pandas.DataFrame
        The long file's raw cells, one row per session; the index holds 0-based data-row numbers.
    src : Source
        The long file, for messages.
    p : Problems
        Problems found are added here (columns no table names, a missing id column, clients or
        providers whose repeated columns disagree); checking goes on after each.
    ignore : collection of str
        Columns declared ignored; they are dropped.
    how_to_ignore : str
        How to declare a column ignored, for the message about an unknown column.
    client_columns : collection of str
        Clients-table columns the study declares (``study.toml``: outcome instruments,
        covariates), split out with the contract's client columns.
    session_columns : collection of str
        Sessions-table columns the study declares (the items of its ``[alliance]`` instrument),
        kept with the contract's session columns.

    Returns
    -------
    SplitExport or None
        The three raw tables (to be checked by the contract), or ``None`` when the file lacks
        ``client_id`` or ``provider_id``, without which rows cannot be assigned to clients and
        providers.
    """
    _unknown(df, src, ignore, how_to_ignore, p, [*client_columns, *session_columns])
    held = tuple(str(c) for c in df.columns if c in ignore)
    absent = [c for c in _ENTITY.values() if c not in df.columns]
    if absent:
        p.add(
            src.fail(
                "a long export with one row per session and the columns client_id and "
                "provider_id (each row's client and provider); "
                + " and ".join(absent)
                + (" is" if len(absent) == 1 else " are")
                + " missing"
            )
        )
        return None
    own = dict.fromkeys([*KNOWN_COLUMNS["sessions"], *session_columns])
    frames = {"sessions": df[[c for c in own if c in df.columns]]}
    for table, id_column in _ENTITY.items():
        keys = _ids(df[id_column])
        columns = [*KNOWN_COLUMNS[table], *(client_columns if table == "clients" else ())]
        own = [c for c in dict.fromkeys(columns) if c != id_column and c in df.columns]
        for column in own:
            _conflicts(df, keys, column, table, src, p)
        first = keys.notna() & ~keys.duplicated()
        frames[table] = df.loc[first.to_numpy(), [id_column, *own]]
    return SplitExport(frames={t: frames[t] for t in TABLES}, ignored=held)
