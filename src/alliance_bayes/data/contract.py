"""The data contract: what a study folder must hold, how it is checked, and what bad input raises.

A study is a folder with three tables, each stored as CSV or Parquet:

``providers``
    ``provider_id`` (text, unique), ``provider_type`` in {therapist, coach}.
``clients``
    ``client_id`` (text, unique), ``age`` (years, 18–100), ``sex`` in {female, male, other} or
    empty, ``country`` (optional column, may be empty), ``who5_baseline`` (0–100, required) and
    ``who5_followup`` (0–100, may be empty), ``phq9_baseline`` and ``phq9_followup`` (0–27, optional
    columns, may be empty), and either ``first_session`` + ``last_session`` (ISO dates, YYYY-MM-DD)
    or ``days_in_care`` (whole days >= 0); when both are given they must agree
    (``days_in_care == last_session - first_session`` in calendar days).
``sessions``
    One row per session: ``client_id``, ``provider_id``, ``session_date`` or ``session_index``
    (integer >= 1, unique within a client), ``wai_goal``, ``wai_bond`` and optionally ``wai_task``
    (integer ratings 1–5; a missing item is an empty cell, never 0).

Rules that are easy to get wrong, and what this module does:

* Identifiers are text, always: ``"007"`` stays ``"007"``.
* Only an empty cell (or a blank one) is missing. ``NA``, ``nan``, ``0`` or ``-`` are values, and
  are rejected where they are not valid; nothing is guessed or filled in.
* Columns that the contract does not name are allowed and dropped, silently.
* An optional column that is present but entirely empty counts as absent.
* Validation is pure: it reads the frames it is given and returns new, typed frames.

Every problem raises :class:`DataContractError`, which names the file, the column, the rows and what
was expected. Rows are counted as data rows from 1 (the header is not a row), so in a CSV file row
``r`` is on line ``r + 1``; messages give both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CLIENT_COLUMNS",
    "ITEM_COLUMNS",
    "PROVIDER_COLUMNS",
    "PROVIDER_TYPES",
    "SESSION_COLUMNS",
    "SEXES",
    "TABLES",
    "DataContractError",
    "validate_study",
]

TABLES: tuple[str, ...] = ("providers", "clients", "sessions")
PROVIDER_TYPES: tuple[str, ...] = ("therapist", "coach")
SEXES: tuple[str, ...] = ("female", "male", "other")
ITEM_COLUMNS: tuple[str, ...] = ("wai_goal", "wai_bond", "wai_task")

#: Columns of the validated (canonical) tables, in order. Optional columns absent from the input are
#: present here, empty; ``days_in_care`` and ``session_index`` are derived when not given.
PROVIDER_COLUMNS: tuple[str, ...] = ("provider_id", "provider_type")
CLIENT_COLUMNS: tuple[str, ...] = (
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
    "days_in_care",
)
SESSION_COLUMNS: tuple[str, ...] = (
    "client_id",
    "provider_id",
    "session_date",
    "session_index",
    *ITEM_COLUMNS,
)

_MAX_SHOWN = 5
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T].*)?$")
_DATETIME = "datetime64[ns]"


# --------------------------------------------------------------------------------------------------
# The error
# --------------------------------------------------------------------------------------------------
class DataContractError(ValueError):
    """Input that breaks the data contract.

    Parameters
    ----------
    file : str or pathlib.Path
        The file (or table name, for in-memory tables) where the problem is.
    expected : str
        What the contract expects, in words.
    column : str, optional
        The offending column, or ``None`` for a problem with the whole file.
    rows : iterable of int, optional
        1-based data-row numbers as they appear in the file (the header is not counted; in a CSV
        file row ``r`` is on line ``r + 1``).
    got : iterable, optional
        The offending values, aligned with ``rows`` (or on their own for header problems).
    csv : bool, optional
        Whether line numbers make sense (CSV input); guessed from the file suffix when omitted.

    Attributes
    ----------
    file, column, rows, expected, got
        As above; ``rows`` is a list of int, ``got`` a list.
    """

    def __init__(
        self,
        file: str | Path,
        expected: str,
        *,
        column: str | None = None,
        rows: Iterable[int] = (),
        got: Iterable[object] = (),
        csv: bool | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.rows = [int(r) for r in rows]
        self.expected = expected
        self.got = list(got)
        self.csv = str(file).lower().endswith(".csv") if csv is None else csv
        super().__init__(self._message())

    def _message(self) -> str:
        where = [str(self.file)]
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.rows:
            shown = self.rows[:_MAX_SHOWN]
            more = len(self.rows) - len(shown)
            label = "row" if len(self.rows) == 1 else "rows"
            text = f"{label} {', '.join(map(str, shown))}"
            if more:
                text += f" and {more} more"
            if self.csv:
                lines = ", ".join(str(r + 1) for r in shown)
                text += f" ({'line' if len(shown) == 1 else 'lines'} {lines})"
            where.append(text)
        message = f"{', '.join(where)}: expected {self.expected}"
        if self.got:
            shown_got = ", ".join(_show(v) for v in self.got[:_MAX_SHOWN])
            if len(self.got) > _MAX_SHOWN:
                shown_got += ", ..."
            message += f"; got {shown_got}"
        return message

    def __reduce__(self):  # keep the exception picklable (multiprocessing, pytest-xdist)
        return (
            _rebuild_error,
            (self.file, self.expected, self.column, self.rows, self.got, self.csv),
        )


def _rebuild_error(file, expected, column, rows, got, csv) -> DataContractError:
    return DataContractError(file, expected, column=column, rows=rows, got=got, csv=csv)


class _Text(str):
    """A value shown quoted in messages even when it looks like a number (identifiers)."""

    __slots__ = ()


class _Bare(str):
    """A pre-formatted description shown as is in messages."""

    __slots__ = ()


def _show(value: object) -> str:
    """Format one offending value for a message: numbers bare, text quoted, missing as <empty>."""
    if isinstance(value, _Bare):
        return str(value)
    if isinstance(value, _Text):
        return repr(str(value))
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "<empty>"
    if isinstance(value, str):
        if value.strip() == "":
            return "<empty>"
        try:
            number = float(value)
        except ValueError:
            return repr(value)
        return value.strip() if np.isfinite(number) else repr(value)
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return str(value)


# --------------------------------------------------------------------------------------------------
# Where a table came from (for messages)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where a table came from: the label used in messages and whether it is a CSV file."""

    table: str
    file: str | Path
    csv: bool

    def fail(
        self,
        expected: str,
        *,
        column: str | None = None,
        rows: Iterable[int] = (),
        got: Iterable[object] = (),
    ) -> DataContractError:
        return DataContractError(
            self.file, expected, column=column, rows=rows, got=got, csv=self.csv
        )

    def fail_where(
        self, bad: pd.Series, raw: pd.Series, column: str, expected: str, *, quote: bool = False
    ) -> DataContractError:
        """Error for the rows of ``raw`` where ``bad`` is true (index = 0-based data rows)."""
        index = bad.index[bad.to_numpy(dtype=bool)]
        return self.fail(
            expected,
            column=column,
            rows=[int(i) + 1 for i in index],
            got=[
                _Text(raw.loc[i]) if quote and isinstance(raw.loc[i], str) else raw.loc[i]
                for i in index[:_MAX_SHOWN]
            ],
        )


def memory_source(table: str) -> Source:
    """Source label for a table handed over in memory rather than read from a file."""
    return Source(table, f"{table} table", csv=False)


# --------------------------------------------------------------------------------------------------
# Column converters: each returns typed values and flags, never mutating the input
# --------------------------------------------------------------------------------------------------
def _text(s: pd.Series, *, strip: bool = True) -> pd.Series:
    """Text values (pandas ``str`` dtype) with empty or blank cells as missing."""
    out = s.astype("str")
    blank = out.str.strip().eq("").fillna(False).astype(bool)
    if strip:
        out = out.str.strip()
    return out.mask(blank)


def _is_empty_column(s: pd.Series) -> bool:
    return bool(_text(s).isna().all())


def _numbers(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Parse numbers. Returns (float64 values, missing flags, unparseable flags)."""
    if pd.api.types.is_bool_dtype(s):
        missing = s.isna()
        return pd.Series(np.nan, index=s.index), missing, ~missing
    if pd.api.types.is_numeric_dtype(s):
        values = pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index)
        missing = s.isna()
        return values, missing, ~missing & ~np.isfinite(values)
    txt = _text(s)
    missing = txt.isna()
    values = pd.to_numeric(txt, errors="coerce").astype("float64")
    bad = ~missing & (values.isna() | ~np.isfinite(values.fillna(0.0)))
    return values, missing, bad


def _dates(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Parse ISO dates. Returns (datetime64[ns] values, missing flags, unparseable flags)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        values = s
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        values = values.astype(_DATETIME)
        missing = values.isna()
        return values, missing, pd.Series(False, index=s.index)
    txt = _text(s)
    missing = txt.isna()
    shaped = txt.str.match(_ISO_DATE).fillna(False).astype(bool)
    values = pd.to_datetime(txt.where(shaped), format="ISO8601", errors="coerce")
    values = values.astype(_DATETIME)
    bad = ~missing & values.isna()
    return values, missing, bad


def _ids(df: pd.DataFrame, src: Source, column: str) -> pd.Series:
    s = df[column]
    if pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s):
        raise src.fail(
            f"identifiers stored as text (a {s.dtype} column cannot keep ids such as '007')",
            column=column,
        )
    ids = s.astype("str")
    missing = _text(ids).isna()
    if missing.any():
        raise src.fail_where(missing, s, column, "a non-empty identifier on every row")
    return ids


def _unique(ids: pd.Series, src: Source, column: str, what: str) -> None:
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise src.fail_where(
            dup, ids, column, f"each {what} to appear once (duplicated id)", quote=True
        )


def _category(
    df: pd.DataFrame, src: Source, column: str, allowed: Sequence[str], *, required: bool
) -> pd.Series:
    raw = df[column]
    txt = _text(raw)
    missing = txt.isna()
    bad = ~missing & ~txt.isin(allowed)
    expected = "one of " + ", ".join(allowed) + ("" if required else " (or empty)")
    if required:
        bad |= missing
    if bad.any():
        raise src.fail_where(bad, raw, column, expected)
    return txt


def _number_column(
    df: pd.DataFrame,
    src: Source,
    column: str,
    low: float,
    high: float,
    *,
    required: bool,
    what: str,
) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    raw = df[column]
    values, missing, bad = _numbers(raw)
    bad = bad | (~missing & ((values < low) | (values > high)))
    if required:
        bad |= missing
    if bad.any():
        expected = f"{what} between {low:g} and {high:g}" + ("" if required else " (or empty)")
        raise src.fail_where(bad, raw, column, expected)
    return values


def _integer_column(
    df: pd.DataFrame,
    src: Source,
    column: str,
    *,
    low: int,
    high: int | None,
    expected: str,
    required: bool,
) -> pd.Series:
    raw = df[column]
    values, missing, bad = _numbers(raw)
    present = ~missing & ~bad
    bad = bad | (present & (values % 1 != 0)) | (present & (values < low))
    if high is not None:
        bad |= present & (values > high)
    if required:
        bad |= missing
    if bad.any():
        raise src.fail_where(bad, raw, column, expected)
    return values.round().astype("Int64")


def _require(df: pd.DataFrame, src: Source, columns: Iterable[str]) -> None:
    for column in columns:
        if column not in df.columns:
            found = ", ".join(map(str, df.columns)) or "no columns"
            header = "the header (line 1)" if src.csv else "the table"
            raise src.fail(
                f"a column named {column!r} in {header}; columns found: {found}",
                column=column,
            )


def _present(df: pd.DataFrame, column: str) -> bool:
    """An optional column counts as present when it exists and holds at least one value."""
    return column in df.columns and not _is_empty_column(df[column])


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
def _providers(df: pd.DataFrame, src: Source) -> pd.DataFrame:
    _require(df, src, PROVIDER_COLUMNS)
    ids = _ids(df, src, "provider_id")
    _unique(ids, src, "provider_id", "provider_id")
    types = _category(df, src, "provider_type", PROVIDER_TYPES, required=True)
    return pd.DataFrame({"provider_id": ids, "provider_type": types})


def _clients(df: pd.DataFrame, src: Source) -> pd.DataFrame:
    _require(df, src, ("client_id", "age", "sex", "who5_baseline", "who5_followup"))
    has_dates = _present(df, "first_session") or _present(df, "last_session")
    has_days = _present(df, "days_in_care")
    if not has_days:
        if not has_dates:
            found = ", ".join(map(str, df.columns))
            raise src.fail(
                "a days_in_care column, or first_session and last_session columns, holding "
                f"values; columns found: {found}",
                column="days_in_care",
            )
        _require(df, src, ("first_session", "last_session"))

    ids = _ids(df, src, "client_id")
    _unique(ids, src, "client_id", "client_id")
    out = pd.DataFrame({"client_id": ids}, index=df.index)
    out["age"] = _number_column(df, src, "age", 18, 100, required=True, what="an age in years")
    out["sex"] = _category(df, src, "sex", SEXES, required=False)
    out["country"] = (
        _text(df["country"])
        if "country" in df.columns
        else pd.Series(np.nan, index=df.index, dtype="str")
    )
    who5 = "a WHO-5 score (0–100 percentage metric)"
    phq9 = "a PHQ-9 score"
    out["who5_baseline"] = _number_column(
        df, src, "who5_baseline", 0, 100, required=True, what=who5
    )
    out["who5_followup"] = _number_column(
        df, src, "who5_followup", 0, 100, required=False, what=who5
    )
    for column in ("phq9_baseline", "phq9_followup"):
        out[column] = _number_column(df, src, column, 0, 27, required=False, what=phq9)

    first = pd.Series(pd.NaT, index=df.index, dtype=_DATETIME)
    last = first.copy()
    if has_dates:
        parsed = {}
        for column in ("first_session", "last_session"):
            values, _, bad = _dates(df[column])
            if bad.any():
                raise src.fail_where(
                    bad, df[column], column, "a date written YYYY-MM-DD (or empty)"
                )
            parsed[column] = values
        first, last = parsed["first_session"], parsed["last_session"]
        one_only = first.isna() != last.isna()
        if one_only.any():
            column = "last_session" if last.isna()[one_only].any() else "first_session"
            raise src.fail_where(
                one_only,
                df[column],
                column,
                "both first_session and last_session, or neither (then days_in_care)",
            )
        backwards = last < first
        if backwards.any():
            raise src.fail_where(
                backwards, df["last_session"], "last_session", "a date on or after first_session"
            )
    span = (last.dt.normalize() - first.dt.normalize()).dt.days.astype("Int64")

    if has_days:
        days = _integer_column(
            df,
            src,
            "days_in_care",
            low=0,
            high=None,
            required=False,
            expected="a whole number of days >= 0 (or empty when dates are given)",
        )
        both = days.notna() & span.notna()
        disagree = both & (days != span).fillna(False).astype(bool)
        if disagree.any():
            index = disagree.index[disagree.to_numpy(dtype=bool)]
            raise src.fail(
                "days_in_care to equal last_session - first_session in days",
                column="days_in_care",
                rows=[int(i) + 1 for i in index],
                got=[_Bare(f"{days[i]} (dates give {span[i]})") for i in index[:_MAX_SHOWN]],
            )
        days = days.fillna(span)
    else:
        days = span
    undetermined = days.isna()
    if undetermined.any():
        column = "days_in_care" if "days_in_care" in df.columns else "first_session"
        raise src.fail_where(
            undetermined,
            df[column],
            column,
            "days_in_care, or first_session and last_session dates, on every row",
        )
    out["first_session"] = first
    out["last_session"] = last
    out["days_in_care"] = days.astype("Int64")
    return out


def _sessions(df: pd.DataFrame, src: Source) -> pd.DataFrame:
    _require(df, src, ("client_id", "provider_id", "wai_goal", "wai_bond"))
    has_index = _present(df, "session_index")
    has_date = _present(df, "session_date")
    if not (has_index or has_date):
        if "session_date" in df.columns or "session_index" in df.columns:
            column = "session_date" if "session_date" in df.columns else "session_index"
            raise src.fail(
                "session_date or session_index to be filled in (the column is empty)",
                column=column,
            )
        _require(df, src, ("session_date",))

    out = pd.DataFrame(
        {"client_id": _ids(df, src, "client_id"), "provider_id": _ids(df, src, "provider_id")},
        index=df.index,
    )
    date = pd.Series(pd.NaT, index=df.index, dtype=_DATETIME)
    if has_date:
        date, missing, bad = _dates(df["session_date"])
        if not has_index:
            bad = bad | missing
        if bad.any():
            raise src.fail_where(
                bad, df["session_date"], "session_date", "a date written YYYY-MM-DD"
            )
    if has_index:
        index = _integer_column(
            df,
            src,
            "session_index",
            low=1,
            high=None,
            required=True,
            expected="a whole number >= 1 on every row",
        )
        dup = pd.concat([out["client_id"], index.rename("i")], axis=1).duplicated(keep=False)
        if dup.any():
            raise src.fail_where(
                dup,
                df["session_index"],
                "session_index",
                "each session_index once within a client",
            )
    else:
        order = pd.DataFrame(
            {"client_id": out["client_id"], "date": date, "row": np.arange(len(df))},
            index=df.index,
        ).sort_values(["client_id", "date", "row"], kind="stable")
        index = (order.groupby("client_id", sort=False).cumcount() + 1).reindex(df.index)
        index = index.astype("Int64")
    out["session_date"] = date
    out["session_index"] = index
    for column in ITEM_COLUMNS:
        if column not in df.columns:
            out[column] = pd.Series(pd.NA, index=df.index, dtype="Int64")
            continue
        raw = df[column]
        values, missing, _ = _numbers(raw)
        zero = ~missing & (values == 0)
        if zero.any():
            raise src.fail_where(
                zero,
                raw,
                column,
                "an integer rating from 1 to 5 (0 is not a rating; leave missing items empty)",
            )
        out[column] = _integer_column(
            df,
            src,
            column,
            low=1,
            high=5,
            required=False,
            expected="an integer rating from 1 to 5 (or empty when missing)",
        )
    return out


def _links(
    providers: pd.DataFrame,
    clients: pd.DataFrame,
    sessions: pd.DataFrame,
    sources: Mapping[str, Source],
) -> None:
    src = sources["sessions"]
    unknown = ~sessions["client_id"].isin(clients["client_id"])
    if unknown.any():
        raise src.fail_where(
            unknown,
            sessions["client_id"],
            "client_id",
            f"a client_id listed in {sources['clients'].file} (unknown client)",
            quote=True,
        )
    unknown = ~sessions["provider_id"].isin(providers["provider_id"])
    if unknown.any():
        raise src.fail_where(
            unknown,
            sessions["provider_id"],
            "provider_id",
            f"a provider_id listed in {sources['providers'].file} (unknown provider)",
            quote=True,
        )
    idle = ~clients["client_id"].isin(sessions["client_id"])
    if idle.any():
        raise sources["clients"].fail_where(
            idle,
            clients["client_id"],
            "client_id",
            f"every client to have at least one session in {src.file} (client with no sessions)",
            quote=True,
        )


def validate_tables(
    frames: Mapping[str, pd.DataFrame], sources: Mapping[str, Source]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate three raw tables whose index holds 0-based data-row numbers.

    This is the worker behind :func:`validate_study` and
    :func:`~alliance_bayes.data.load.load_study`; it expects ``frames`` and ``sources`` keyed by
    ``providers``, ``clients`` and ``sessions``.
    """
    checks = {"providers": _providers, "clients": _clients, "sessions": _sessions}
    typed = {}
    for table in TABLES:
        df, src = frames[table], sources[table]
        if len(df) == 0:
            raise src.fail("at least one data row; the table has none")
        typed[table] = checks[table](df, src)
    _links(typed["providers"], typed["clients"], typed["sessions"], sources)
    columns = {
        "providers": PROVIDER_COLUMNS,
        "clients": CLIENT_COLUMNS,
        "sessions": SESSION_COLUMNS,
    }
    return tuple(  # type: ignore[return-value]
        typed[t].loc[:, list(columns[t])].reset_index(drop=True) for t in TABLES
    )


def validate_study(
    providers: pd.DataFrame, clients: pd.DataFrame, sessions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check three in-memory tables against the contract and return typed copies.

    Parameters
    ----------
    providers, clients, sessions : pandas.DataFrame
        The tables, with columns as in the contract (text or already typed). Rows are reported
        by position, counting from 1.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(providers, clients, sessions)`` with the canonical columns (:data:`PROVIDER_COLUMNS`,
        :data:`CLIENT_COLUMNS`, :data:`SESSION_COLUMNS`) and dtypes: ids and categories ``str``;
        ages and scores ``float64``; dates ``datetime64[ns]``; ``days_in_care``,
        ``session_index`` and the items ``Int64``. Missing values stay missing; extra columns are
        dropped. The inputs are not modified.

    Raises
    ------
    DataContractError
        On the first problem found.
    """
    frames = {
        t: df.reset_index(drop=True)
        for t, df in zip(TABLES, (providers, clients, sessions), strict=True)
    }
    return validate_tables(frames, {t: memory_source(t) for t in TABLES})
