"""The data contract: what a study folder must hold, how it is checked, and what bad input raises.

A study is a folder with three tables, each stored as one file (CSV, Parquet, Excel ``.xlsx``, Stata
``.dta`` or SPSS ``.sav``; see :mod:`alliance_bayes.data.load`):

``providers``
    ``provider_id`` (text, unique), ``provider_type`` in {therapist, coach}, or in the study's
    declared ``provider_types`` (:mod:`alliance_bayes.data.care`).
``clients``
    ``client_id`` (text, unique), ``age`` (years, 18–100, or the study's declared age range:
    :func:`parse_age_range`), ``sex`` in {female, male, other} or empty, ``country`` (optional
    column, may be empty), ``who5_baseline`` (0–100, required when any WHO-5 score is given;
    a study that measured no WHO-5 leaves both columns out or empty) and ``who5_followup`` (0–100, may
    be empty), ``phq9_baseline`` and ``phq9_followup`` (0–27, optional columns, may be empty), and
    either ``first_session`` + ``last_session`` (ISO dates, YYYY-MM-DD) or ``days_in_care`` (whole
    days >= 0); when both are given they must agree (``days_in_care == last_session -
    first_session`` in calendar days).
``sessions``
    One row per session: ``client_id``, ``provider_id``, ``session_date`` or ``session_index``
    (integer >= 1, unique within a client), ``wai_goal``, ``wai_bond`` and optionally ``wai_task``
    (integer ratings 1–5; a missing item is an empty cell, never 0), unless the study declares
    its alliance instrument (:mod:`alliance_bayes.data.alliance`): its item columns then replace
    them, checked against the declared range.

Rules that are easy to get wrong, and what this module does:

* Identifiers are text, always: ``"007"`` stays ``"007"``.
* Only an empty cell (or a blank one) is missing; in a CSV file so is ``NA`` (what R's
  ``write.csv`` writes for a missing value). ``nan``, ``0`` or ``-`` are values, and are rejected
  where they are not valid; nothing is guessed or filled in.
* A column that the contract does not name for its table is refused, with the contract column it
  most resembles (``WAI_Task`` → ``wai_task``: names are matched exactly), unless it is declared
  ignored (``ignore`` below); ignored columns are dropped. Nothing is dropped silently.
* An optional column that is present but entirely empty counts as absent.
* Validation is pure: it reads the frames it is given and returns new, typed frames.

Every problem found is reported, not only the first: :class:`DataContractError` names the file, the
column, the rows and what was expected, and when there are several it lists them all, grouped by
file and column. Rows are counted as data rows from 1 (the header is not a row), so in a CSV file
row ``r`` is on line ``r + 1``; messages give both.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alliance_bayes.data.alliance import AllianceInstrument
from alliance_bayes.data.care import PROVIDER_TYPES, parse_provider_types
from alliance_bayes.data.covariates import DERIVED_CLIENT_COLUMNS, LEVEL, Covariate
from alliance_bayes.data.instruments import Instrument
from alliance_bayes.errors import _MAX_SHOWN, DataContractError, _Bare, _Text

__all__ = [
    "AGE_RANGE",
    "CLIENT_COLUMNS",
    "ITEM_COLUMNS",
    "KNOWN_COLUMNS",
    "PROVIDER_COLUMNS",
    "PROVIDER_TYPES",
    "SESSION_COLUMNS",
    "SEXES",
    "TABLES",
    "DataContractError",
    "Problems",
    "Undecided",
    "parse_age_range",
    "session_columns",
    "suggest_column",
    "validate_study",
]

TABLES: tuple[str, ...] = ("providers", "clients", "sessions")
SEXES: tuple[str, ...] = ("female", "male", "other")
ITEM_COLUMNS: tuple[str, ...] = ("wai_goal", "wai_bond", "wai_task")
#: The ages (years, inclusive) a client may have unless the study declares its own range.
AGE_RANGE: tuple[float, float] = (18.0, 100.0)

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

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T].*)?$")
_DATETIME = "datetime64[ns]"
#: What :func:`check_tables` calls the declarations when no ``study.toml`` holds them.
_IN_MEMORY = "covariates"


def declaration_error(problem: str) -> DataContractError:
    """A declaration's problem, ``"<key>: <what it must be>, got …"`` as the parsers word it for a
    ``study.toml``, raised for a study made in Python: named by the key, which is said once."""
    key, _, what = problem.partition(": ")
    return DataContractError(key, what, csv=False)


@dataclass(frozen=True)
class Undecided:
    """What a study's declarations leave undecided because they are wrong: the checks of the
    tables that depend on them wait until the declaration is put right (its problem is reported
    instead), so that a wrong declaration adds no problems of its own to the tables'.

    Attributes
    ----------
    columns : frozenset of str
        Columns named by a wrong ``[outcomes.<name>]`` or ``[covariates.<name>]`` declaration:
        neither refused as unknown nor checked.
    covariates : tuple of str
        Covariates whose declaration is wrong: their column must still be in the clients table.
    age_range, provider_types, alliance : bool
        Whether ``age_range``, ``provider_types`` or ``[alliance]`` is declared wrongly: the ages
        are then checked as numbers >= 0 only, the provider types as non-empty only, and the
        sessions table's alliance columns not at all.
    """

    columns: frozenset[str] = frozenset()
    covariates: tuple[str, ...] = ()
    age_range: bool = False
    provider_types: bool = False
    alliance: bool = False


def parse_age_range(raw: object) -> tuple[tuple[float, float] | None, list[str]]:
    """A declared ``age_range = [low, high]`` as ``(low, high)``, or the problems with it.

    The bounds are ages in years, both inclusive, with ``0 <= low < high``. A study of young
    people declares ``age_range = [12, 25]`` at the top of its ``study.toml``; without a
    declaration the contract's :data:`AGE_RANGE` holds.

    Returns
    -------
    tuple
        ``((low, high), [])``, or ``(None, problems)``: each problem a sentence naming
        ``age_range``, what it must be and the value given.
    """
    usage = "age_range: [low, high], two ages in years with 0 <= low < high (e.g. [12, 25])"
    bounds = list(raw) if isinstance(raw, list | tuple) else []
    # a bool is an int to Python, but never an age
    numeric = [
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bounds
    ]
    if len(bounds) != 2 or not all(numeric):
        return None, [f"{usage}, got {raw!r}"]
    low, high = float(bounds[0]), float(bounds[1])
    wrong = [
        *(["a negative age"] if min(low, high) < 0 else []),
        *(["low >= high"] if low >= high else []),
    ]
    if wrong:
        return None, [f"{usage}, got {bounds!r} ({' and '.join(wrong)})"]
    return (low, high), []


# --------------------------------------------------------------------------------------------------
# The error
# --------------------------------------------------------------------------------------------------
# DataContractError (and how it shows values) lives in alliance_bayes.errors; Problems collects them.


class Problems:
    """Problems found so far: checks add to it and go on, so that one pass reports them all."""

    def __init__(self) -> None:
        self.found: list[DataContractError] = []

    def __len__(self) -> int:
        return len(self.found)

    def add(self, error: DataContractError) -> None:
        self.found.extend(error.problems)

    def raise_any(self) -> None:
        """Raise every problem found so far as one :class:`DataContractError`."""
        if self.found:
            raise DataContractError.of(self.found)


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


#: Excel's day 0 for its serial dates (its 1900 date system counts 1900 as a leap year, so from
#: 1 March 1900 on, serial n is this date plus n days).
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
#: The serials of 1950-01-01 and 2100-12-31: the dates a study of clients in care can hold
#: (a year typed alone, 2023, or a month, 202301, is no date of that span, and gets no hint).
_EXCEL_FIRST, _EXCEL_LAST = 18264, 73415


def _excel_serial_hint(values: pd.Series) -> str:
    """The hint for date cells holding numbers such as ``44927``: Excel's serial dates, which
    a column left in the *General* or *Number* format stores (and a CSV export of it writes).

    A value is taken for a serial when it is a number from 18264 (1 January 1950) to 73415
    (31 December 2100); its date is ``1899-12-30 + n`` days, ``44927`` → 2023-01-01. '' when no
    value is one.
    """
    numbers = pd.to_numeric(_text(values.astype(object)), errors="coerce")
    serial = numbers[(numbers >= _EXCEL_FIRST) & (numbers <= _EXCEL_LAST)]
    if serial.empty:
        return ""
    n = float(serial.iloc[0])
    day = (_EXCEL_EPOCH + pd.Timedelta(days=math.floor(n))).date().isoformat()
    shown = int(n) if n.is_integer() else n
    return (
        f"; {shown} looks like an Excel serial date ({shown} = {day}): format the column as a "
        "date in Excel (Format Cells → Date, or the custom format yyyy-mm-dd) before saving, or "
        'convert it (R: as.Date(x, origin = "1899-12-30"); Python: '
        'pd.to_datetime(x, unit="D", origin="1899-12-30"))'
    )


def _date_problem(
    bad: pd.Series, raw: pd.Series, column: str, expected: str, src: Source
) -> DataContractError:
    """The problem of the date cells ``bad`` of ``raw``, with the Excel hint where they hold
    serial numbers."""
    return src.fail_where(bad, raw, column, expected + _excel_serial_hint(raw[bad]))


def _ids(df: pd.DataFrame, src: Source, column: str, p: Problems) -> pd.Series | None:
    """Identifiers as text, missing where empty (reported); ``None`` (with the problem added)
    when the column cannot hold them."""
    s = df[column]
    if pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s):
        p.add(
            src.fail(
                f"identifiers stored as text (a {s.dtype} column cannot keep ids such as '007')",
                column=column,
            )
        )
        return None
    ids = s.astype("str")
    missing = _text(ids).isna()
    if missing.any():
        p.add(src.fail_where(missing, s, column, "a non-empty identifier on every row"))
    return ids.where(~missing)


def _unique_ids(df: pd.DataFrame, src: Source, column: str, p: Problems) -> pd.Series | None:
    """Identifiers that must each appear once (a repeated one is reported, and still names a
    listed client or provider for the links); ``None`` when unusable."""
    ids = _ids(df, src, column, p)
    if ids is None:
        return None
    dup = ids.notna() & ids.duplicated(keep=False)
    if dup.any():
        p.add(
            src.fail_where(
                dup, ids, column, f"each {column} to appear once (duplicated id)", quote=True
            )
        )
    return ids


def _category(
    df: pd.DataFrame,
    src: Source,
    column: str,
    allowed: Sequence[str],
    p: Problems,
    *,
    required: bool,
    why: str = "",
) -> pd.Series:
    raw = df[column]
    txt = _text(raw)
    missing = txt.isna()
    bad = ~missing & ~txt.isin(allowed)
    expected = "one of " + ", ".join(allowed) + ("" if required else " (or empty)") + why
    if required:
        bad |= missing
    if bad.any():
        p.add(src.fail_where(bad, raw, column, expected))
    return txt


def _number_column(
    df: pd.DataFrame,
    src: Source,
    column: str,
    low: float,
    high: float,
    p: Problems,
    *,
    required: bool,
    what: str,
    why: str = "",
) -> pd.Series:
    """Numbers in ``[low, high]``; ``why`` follows the range in messages (where it comes from)."""
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    raw = df[column]
    values, missing, bad = _numbers(raw)
    bad = bad | (~missing & ((values < low) | (values > high)))
    if required:
        bad |= missing
    if bad.any():
        expected = f"{what} between {low:g} and {high:g}{why}" + ("" if required else " (or empty)")
        p.add(src.fail_where(bad, raw, column, expected))
    return values.mask(bad)


def _integer_column(
    df: pd.DataFrame,
    src: Source,
    column: str,
    p: Problems,
    *,
    low: int,
    high: int | None,
    expected: str,
    required: bool,
    skip: pd.Series | None = None,
) -> pd.Series:
    """Whole numbers in ``[low, high]``; rows flagged in ``skip`` were reported already."""
    raw = df[column]
    values, missing, bad = _numbers(raw)
    present = ~missing & ~bad
    bad = bad | (present & (values % 1 != 0)) | (present & (values < low))
    if high is not None:
        bad |= present & (values > high)
    if required:
        bad |= missing
    if skip is not None:
        bad &= ~skip
    if bad.any():
        p.add(src.fail_where(bad, raw, column, expected))
    usable = ~bad if skip is None else ~(bad | skip)
    return values.where(usable).round().astype("Int64")


def _has(df: pd.DataFrame, src: Source, column: str, p: Problems) -> bool:
    """Whether ``column`` is in the table; when it is not, the problem is added."""
    if column in df.columns:
        return True
    found = ", ".join(map(str, df.columns)) or "no columns"
    header = "the header (line 1)" if src.csv else "the table"
    p.add(src.fail(f"a column named {column!r} in {header}; columns found: {found}", column=column))
    return False


def _present(df: pd.DataFrame, column: str) -> bool:
    """An optional column counts as present when it exists and holds at least one value."""
    return column in df.columns and not _is_empty_column(df[column])


# --------------------------------------------------------------------------------------------------
# Columns the contract does not name
# --------------------------------------------------------------------------------------------------
#: The columns each table may hold (those of the canonical tables).
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "providers": PROVIDER_COLUMNS,
    "clients": CLIENT_COLUMNS,
    "sessions": SESSION_COLUMNS,
}


def _squash(name: str) -> str:
    """A column name without case, spaces, underscores, hyphens or dots (for suggestions)."""
    return re.sub(r"[\s_.\-]+", "", name).lower()


def suggest_column(name: str, table: str, columns: Sequence[str] | None = None) -> str:
    """A hint for a column that the contract does not name for ``table`` ('' when none fits).

    A name equal to a contract column up to case and separators (``WAI_Task``, ``who5 follow-up``)
    or close to one (:func:`difflib.get_close_matches`, similarity ratio >= 0.8 on the squashed
    names) is suggested; a column of another table is named as such. ``columns``: the table's
    columns this study takes, when not the contract's (a declared alliance instrument's items
    replace ``wai_goal``, ``wai_bond`` and ``wai_task``, which are then never suggested).
    """
    own = KNOWN_COLUMNS[table] if columns is None else tuple(columns)
    key = _squash(name)
    squashed = {_squash(c): c for c in own}
    if key in squashed:
        return (
            f"did you mean {squashed[key]!r}? (names are matched exactly: lower case, underscores)"
        )
    for other in TABLES:
        if other != table and name in KNOWN_COLUMNS[other]:
            return f"{name!r} is a column of the {other} table, not of the {table} table"
    close = difflib.get_close_matches(key, list(squashed), n=1, cutoff=0.8)
    if close:
        return f"did you mean {squashed[close[0]]!r}?"
    if name == "" or name.startswith("Unnamed: "):
        return (
            "a column without a name in the header; R's write.csv writes its row names there "
            "(write with row.names = FALSE)"
        )
    return ""


def unnamed_hint(df: pd.DataFrame, column: str) -> str:
    """What a column without a name in the header is, from where it stands and what it holds
    ('' for a named column).

    R's ``write.csv`` writes the row names as an unnamed *first* column, by default ``1..n``;
    any other unnamed column holding values is a header cell left empty. (An unnamed column
    that is empty on every row, such as a comma at the end of every line, never gets here: the
    loader skips and records it.)
    """
    name = str(column)
    if not (name == "" or re.fullmatch(r"Unnamed: \d+", name)):
        return ""
    position = list(df.columns).index(column)
    if position == 0:
        values = _text(df.iloc[:, 0]).dropna()
        counted = values.tolist() == [str(i) for i in range(1, len(values) + 1)]
        return (
            "a column without a name in the header, first"
            + (" and counting the rows 1, 2, 3, …" if counted and len(values) else "")
            + ": R's write.csv writes its row names there (write with row.names = FALSE)"
        )
    return (
        f"a column without a name in the header (column {position + 1} of {len(df.columns)}) "
        "holding values: name it in the header, or remove it"
    )


def declared_columns(
    outcomes: Mapping[str, Instrument], covariates: Mapping[str, Covariate] | None = None
) -> tuple[str, ...]:
    """The clients-table columns a study declares: outcome instruments (baseline, follow-up
    each), then covariates."""
    scores = tuple(c for i in outcomes.values() for c in (i.baseline, i.followup))
    return scores + tuple(covariates or {})


def session_columns(alliance: AllianceInstrument | None = None) -> tuple[str, ...]:
    """The sessions table's columns: the contract's, or with a declared alliance instrument its
    item columns in place of ``wai_goal``, ``wai_bond`` and ``wai_task``."""
    if alliance is None:
        return SESSION_COLUMNS
    return (*(c for c in SESSION_COLUMNS if c not in ITEM_COLUMNS), *alliance.columns)


def _alliance_hint(name: str, alliance: AllianceInstrument) -> str:
    """Why a column is not an alliance column of a study that declares its instrument."""
    if name in ITEM_COLUMNS:
        return (
            f"the study declares its alliance instrument ([alliance], {alliance.scale}) and "
            f"{name!r} is not one of its columns: add it to [alliance.subscales], or ignore it"
        )
    squashed = {_squash(c): c for c in alliance.columns}
    close = difflib.get_close_matches(_squash(name), list(squashed), n=1, cutoff=0.8)
    if close:
        return f"did you mean {squashed[close[0]]!r}? (an item of the declared [alliance])"
    return ""


def _unknown_columns(
    df: pd.DataFrame,
    src: Source,
    ignore: Collection[str],
    how: str,
    p: Problems,
    declared: tuple[str, ...] = (),
    alliance: AllianceInstrument | None = None,
    undecided: Undecided = Undecided(),
) -> pd.DataFrame:
    """The table without its ignored columns; each column neither known nor ignored is a problem.

    Columns of wrong declarations (``undecided``) are dropped unjudged, as are the sessions
    table's columns beyond the contract's when the ``[alliance]`` declaration is wrong (which of
    them are its items is undecided).
    """
    known = KNOWN_COLUMNS[src.table] + (declared if src.table == "clients" else ())
    if src.table == "sessions":
        known = session_columns(alliance)
    unjudged = set(undecided.columns)
    if src.table == "sessions" and undecided.alliance:
        unjudged |= {c for c in df.columns if c not in SESSION_COLUMNS}
    for column in df.columns:
        if column in known or column in ignore or column in unjudged:
            continue
        hint = unnamed_hint(df, column)
        if not hint and src.table == "sessions" and alliance is not None:
            hint = _alliance_hint(str(column), alliance)
        hint = hint or suggest_column(str(column), src.table, known)
        hint = "; ".join(h for h in (hint, ignored_near(str(column), ignore)) if h)
        p.add(
            src.fail(
                f"only the columns the data contract names for the {src.table} table"
                + (f"; {hint}" if hint else "")
                + f". A column the analysis does not use must be declared ignored ({how})",
                column=str(column),
            )
        )
    # a wrongly declared covariate's column stays: the clients' check looks for it (its values
    # wait for the declaration, the load fails on the declaration anyway)
    dropped = unjudged - set(undecided.covariates)
    return df.drop(
        columns=[c for c in df.columns if (c in ignore or c in dropped) and c not in known]
    )


def check_ignore_list(
    ignore: Collection[str],
    where: str,
    p: Problems,
    alliance: AllianceInstrument | None = None,
    *,
    declared: Collection[str] = (),
    held: Collection[str] | None = None,
) -> None:
    """The problems of a list of ignored columns: a contract column or a declared one in it (it
    is read and checked, never ignored), and an entry naming no column of the tables.

    With a declared alliance instrument its item columns are the contract's alliance columns
    (and ``wai_goal``, ``wai_bond``, ``wai_task`` columns like any other, which may be ignored).
    ``declared``: the clients-table columns the study declares (outcomes, covariates); an entry
    naming one would leave the column analysed while the study lists it as ignored. ``held``:
    every column name the tables (or the long export) hold, ``None`` when unknown; an entry
    naming none of them is refused with the name it most resembles, since a misspelled entry
    (``Notes`` for ``notes``) leaves the column it meant refused as undeclared.
    """
    contract = {c for cols in KNOWN_COLUMNS.values() for c in cols}
    if alliance is not None:
        contract = (contract - set(ITEM_COLUMNS)) | set(alliance.columns)
    named = sorted(c for c in ignore if c in contract)
    if named:
        p.add(
            DataContractError(
                where,
                "only columns the data contract does not name in the list of ignored columns; "
                "a contract column is read and checked, never ignored (remove it from the file "
                "or from the list)",
                got=[_Text(c) for c in named],
                csv=False,
            )
        )
    mine = sorted(c for c in ignore if c in set(declared) and c not in contract)
    if mine:
        p.add(
            DataContractError(
                where,
                "only columns the study does not declare in the list of ignored columns; a "
                "declared column ([outcomes.<name>], [covariates.<name>]) is read, checked and "
                "analysed, never ignored (remove it from the list, or remove its declaration)",
                got=[_Text(c) for c in mine],
                csv=False,
            )
        )
    if held is None:
        return
    for entry in sorted(c for c in ignore if c not in set(held) and c not in contract):
        if entry in set(declared):
            continue  # refused above
        hint = _ignored_hint(entry, held, contract | set(declared))
        p.add(
            DataContractError(
                where,
                "each entry of the list of ignored columns naming a column the tables hold "
                "(names are matched exactly); no table has this column"
                + (f": {hint}" if hint else " (remove it from the list)"),
                got=[_Text(entry)],
                csv=False,
            )
        )


def ignored_near(column: str, ignore: Collection[str]) -> str:
    """For a column refused as undeclared: the entry of the ignored columns that was most
    likely meant for it ('' when none), equal up to case and separators or close."""
    spare = sorted(c for c in ignore if c != column)
    squashed = {_squash(c): c for c in spare}
    entry = squashed.get(_squash(column))
    if entry is None:
        close = difflib.get_close_matches(column, spare, n=1, cutoff=0.8)
        entry = close[0] if close else None
    if entry is None:
        return ""
    return f"the ignored columns list {entry!r} (names are matched exactly)"


def _ignored_hint(entry: str, held: Collection[str], read: Collection[str]) -> str:
    """The column an ignored entry naming none most likely meant: first among the columns the
    tables hold that are not read (those it could ignore), equal up to case and separators or
    close (similarity >= 0.6), then among all."""
    spare = [c for c in sorted(held) if c not in set(read)]
    for pool in (spare, sorted(held)):
        squashed = {_squash(c): c for c in pool}
        if _squash(entry) in squashed:
            return f"did you mean {squashed[_squash(entry)]!r}?"
        close = difflib.get_close_matches(entry, pool, n=1, cutoff=0.6)
        if close:
            return f"did you mean {close[0]!r}?"
    return ""


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
@dataclass
class _Checked:
    """A table's typed columns, and its identifiers when they are usable (for the links)."""

    table: pd.DataFrame
    ids: dict[str, pd.Series | None]


def _providers(
    df: pd.DataFrame,
    src: Source,
    p: Problems,
    types: Sequence[str] | None = PROVIDER_TYPES,
    declared_in: str = _IN_MEMORY,
) -> _Checked:
    """The providers table; ``types=None``: the declared provider types are wrong, so the values
    wait for them (only a missing type is refused)."""
    out = pd.DataFrame(index=df.index)
    ids = None
    if _has(df, src, "provider_id", p):
        ids = _unique_ids(df, src, "provider_id", p)
        out["provider_id"] = ids
    if types is None:
        if _has(df, src, "provider_type", p):
            kind = _text(df["provider_type"])
            if kind.isna().any():
                p.add(
                    src.fail_where(
                        kind.isna(),
                        df["provider_type"],
                        "provider_type",
                        "a provider type on every row (the values are checked once "
                        "provider_types is declared right)",
                    )
                )
            out["provider_type"] = kind
    elif _has(df, src, "provider_type", p):
        declared = tuple(types) != PROVIDER_TYPES
        where = "" if declared_in == _IN_MEMORY else f" in {declared_in}"
        out["provider_type"] = _category(
            df,
            src,
            "provider_type",
            types,
            p,
            required=True,
            why=f" (provider_types declared{where})"
            if declared
            else " (a study with other provider types declares them at the top of its "
            'study.toml: provider_types = ["therapist", "coach", "psychiatrist"])',
        )
    return _Checked(out, {"provider_id": ids})


def _care_span(
    df: pd.DataFrame, src: Source, p: Problems, has_dates: bool
) -> tuple[pd.Series, pd.Series, pd.Series | None, pd.Series]:
    """First and last session dates, the span in days, and the rows whose dates were reported.

    The span is missing on the reported rows (a date that does not parse, one date without the
    other, the last before the first), so that its comparison with ``days_in_care`` runs on the
    other rows, in the same pass; it is ``None`` when a date column is absent.
    """
    first = pd.Series(pd.NaT, index=df.index, dtype=_DATETIME)
    last = first.copy()
    reported = pd.Series(False, index=df.index)
    if not has_dates:
        return first, last, (last - first).dt.days.astype("Int64"), reported
    if not all([_has(df, src, c, p) for c in ("first_session", "last_session")]):
        return first, last, None, reported
    parsed = {}
    for column in ("first_session", "last_session"):
        values, _, bad = _dates(df[column])
        if bad.any():
            p.add(
                _date_problem(bad, df[column], column, "a date written YYYY-MM-DD (or empty)", src)
            )
        parsed[column] = values
        reported |= bad
    first, last = parsed["first_session"], parsed["last_session"]
    one_only = ~reported & (first.isna() != last.isna())
    if one_only.any():
        column = "last_session" if last.isna()[one_only].any() else "first_session"
        p.add(
            src.fail_where(
                one_only,
                df[column],
                column,
                "both first_session and last_session, or neither (then days_in_care)",
            )
        )
    backwards = ~reported & (last < first)
    if backwards.any():
        p.add(
            src.fail_where(
                backwards, df["last_session"], "last_session", "a date on or after first_session"
            )
        )
    reported = reported | one_only | backwards
    span = (last.dt.normalize() - first.dt.normalize()).dt.days.astype("Int64")
    return first, last, span.mask(reported), reported


def _days_in_care(
    df: pd.DataFrame,
    src: Source,
    p: Problems,
    span: pd.Series | None,
    has_days: bool,
    reported: pd.Series,
) -> pd.Series:
    """Days in care, given or from the dates; where both are given they must agree.

    ``reported`` flags the rows whose dates were reported already; they are compared with
    nothing, and so are the rows whose ``days_in_care`` is not a valid number, while the other
    rows are.
    """
    if not has_days:
        days = span
    else:
        days = _integer_column(
            df,
            src,
            "days_in_care",
            p,
            low=0,
            high=None,
            required=False,
            expected="a whole number of days >= 0 (or empty when dates are given)",
        )
        _, missing, _ = _numbers(df["days_in_care"])
        reported = reported | (days.isna() & ~missing)  # an invalid number, reported just now
        if span is None:
            return days
        both = days.notna() & span.notna()
        disagree = both & (days != span).fillna(False).astype(bool)
        if disagree.any():
            index = disagree.index[disagree.to_numpy(dtype=bool)]
            p.add(
                src.fail(
                    "days_in_care to equal last_session - first_session in days",
                    column="days_in_care",
                    rows=[int(i) + 1 for i in index],
                    got=[_Bare(f"{days[i]} (dates give {span[i]})") for i in index[:_MAX_SHOWN]],
                )
            )
            return days
        days = days.fillna(span)
    if days is None:
        return pd.Series(pd.NA, index=df.index, dtype="Int64")
    undetermined = days.isna() & ~reported
    if undetermined.any():
        column = "days_in_care" if "days_in_care" in df.columns else "first_session"
        p.add(
            src.fail_where(
                undetermined,
                df[column],
                column,
                "days_in_care, or first_session and last_session dates, on every row",
            )
        )
    return days


def _declared_scores(
    df: pd.DataFrame, src: Source, outcomes: Mapping[str, Instrument], p: Problems
) -> dict[str, pd.Series]:
    """The columns of declared instruments: optional, within the range, on the step's grid."""
    out = {}
    for i in outcomes.values():
        what = f"a {i.label} score (declared [outcomes.{i.name}])"
        for column in (i.baseline, i.followup):
            values = _number_column(df, src, column, i.low, i.high, p, required=False, what=what)
            steps = (values - i.low) / i.step
            # a tolerance for scores stored as decimals (e.g. a mean of items times a count)
            off = values.notna() & ((steps - steps.round()).abs() > 1e-6)
            if off.any():
                p.add(
                    src.fail_where(
                        off, df[column], column, f"{what} in steps of {i.step:g} from {i.low:g}"
                    )
                )
            out[column] = values.mask(off)
    return out


def _level_text(s: pd.Series) -> pd.Series:
    """A level column as text; whole numbers (codes read from a statistics file) as ``"2"``."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        whole = np.isnan(values) | (values % 1 == 0)
        if whole.all():
            return _text(s.astype("Int64").astype("str").where(s.notna()))
    return _text(s)


def _absent_covariate(
    df: pd.DataFrame, src: Source, name: str, declared_in: str
) -> DataContractError:
    """A declared covariate's column is not in the clients table, or holds no value."""
    found = ", ".join(map(str, df.columns))
    header = "the header (line 1)" if src.csv else "the table"
    return src.fail(
        f"a column named {name!r} holding values in {header} (declared [covariates.{name}] in "
        f"{declared_in}); columns found: {found}",
        column=name,
    )


#: Values that statistics packages' users write for a missing number; in a numeric covariate,
#: which has no declared range to refuse them, they are refused by name.
MISSING_CODES = (-99.0, -999.0, -9999.0)


def _declared_covariate(
    df: pd.DataFrame, src: Source, c: Covariate, declared_in: str, p: Problems
) -> pd.Series | None:
    """A declared covariate's column, typed (float, or text levels), or None when absent."""
    where = f"declared [covariates.{c.name}] in {declared_in}"
    if not _present(df, c.name):
        p.add(_absent_covariate(df, src, c.name, declared_in))
        return None
    raw = df[c.name]
    if not c.coded:
        values, missing, bad = _numbers(raw)
        expected = f"a number ({where}), or empty"
        coded = pd.Series(False, index=values.index)
        if c.type == "binary":
            bad = bad | (~missing & ~values.isin([0.0, 1.0]))
            expected = (
                f"0 or 1 ({where}; for two text levels declare reference = '<level>'), or empty"
            )
        else:
            # a covariate has no declared range to catch them: the usual missing-value codes
            coded = ~missing & ~bad & values.isin(MISSING_CODES)
            if coded.any():
                p.add(
                    src.fail_where(
                        coded,
                        raw,
                        c.name,
                        f"a number ({where}), or empty; {values[coded].iloc[0]:g} looks like a "
                        "missing-value code: declare it missing in the file (SPSS: Variable View "
                        "→ Missing; Stata: mvdecode) or leave the cell empty",
                    )
                )
        if bad.any():
            p.add(src.fail_where(bad, raw, c.name, expected))
        return values.mask(bad | coded)
    levels = _level_text(raw)
    present = levels.notna()
    if c.levels:
        bad = present & ~levels.isin(c.levels)
        expected = f"one of {', '.join(c.levels)} ({where}), or empty"
    else:
        bad = present & ~levels.str.fullmatch(LEVEL.pattern).fillna(False).astype(bool)
        expected = (
            f"a level made of letters, digits, _ . and - ({where}; it names the estimand "
            f"b_{c.name}[<level>]), or empty"
        )
    if bad.any():
        p.add(src.fail_where(bad, raw, c.name, expected, quote=True))
        return levels.mask(bad)
    seen = sorted(set(levels.dropna()))
    if c.reference not in seen:
        p.add(
            src.fail(
                f"the reference level {c.reference!r} among the values of column {c.name!r} "
                f"({where}; a contrast needs clients at its reference); levels found: "
                + (", ".join(seen) or "none"),
                column=c.name,
            )
        )
    if c.type == "binary" and len(seen) > 2:
        p.add(
            src.fail(
                f"at most two levels in a binary covariate ({where}); levels found: "
                + ", ".join(seen)
                + " (declare it categorical)",
                column=c.name,
            )
        )
    return levels


def _covariate_names(
    covariates: Mapping[str, Covariate],
    outcomes: Mapping[str, Instrument],
    declared_in: str,
    p: Problems,
) -> dict[str, Covariate]:
    """The declared covariates whose names are free; a name the study already uses is a problem."""
    taken = {c for cols in KNOWN_COLUMNS.values() for c in cols} | set(DERIVED_CLIENT_COLUMNS)
    taken |= {f"{i.name}{part}" for i in outcomes.values() for part in ("_baseline", "_followup")}
    taken |= {f"{i.name}_change" for i in outcomes.values()}
    clash = sorted(name for name in covariates if name in taken)
    if clash:
        p.add(
            DataContractError(
                declared_in,
                "[covariates.<name>] with a name that no contract, derived or declared outcome "
                "column has (a contract column is read and checked as the contract says; rename "
                "the column and its declaration)",
                got=[_Text(name) for name in clash],
                csv=False,
            )
        )
    return {name: c for name, c in covariates.items() if name not in taken}


def _clients(
    df: pd.DataFrame,
    src: Source,
    p: Problems,
    outcomes: Mapping[str, Instrument] | None = None,
    covariates: Mapping[str, Covariate] | None = None,
    declared_in: str = _IN_MEMORY,
    age_range: tuple[float, float] | None = None,
    undecided: Undecided = Undecided(),
) -> _Checked:
    out = pd.DataFrame(index=df.index)
    ids = _unique_ids(df, src, "client_id", p) if _has(df, src, "client_id", p) else None
    out["client_id"] = ids
    if _has(df, src, "age", p):
        low, high = age_range or AGE_RANGE
        why = ""
        if undecided.age_range:
            # the declared range is wrong: the ages wait for it, but an age is still a number
            low, high = 0.0, math.inf
            why = " (checked against the age range once age_range is declared right)"
        elif age_range is not None:
            where = "" if declared_in == _IN_MEMORY else f" in {declared_in}"
            why = f" (age_range = [{low:g}, {high:g}] declared{where})"
        out["age"] = _number_column(
            df, src, "age", low, high, p, required=True, what="an age in years", why=why
        )
    if _has(df, src, "sex", p):
        out["sex"] = _category(df, src, "sex", SEXES, p, required=False)
    out["country"] = (
        _text(df["country"])
        if "country" in df.columns
        else pd.Series(np.nan, index=df.index, dtype="str")
    )
    who5 = "a WHO-5 score (0–100 percentage metric)"
    if any(_present(df, c) for c in ("who5_baseline", "who5_followup")):
        for column, required in (("who5_baseline", True), ("who5_followup", False)):
            if _has(df, src, column, p):
                out[column] = _number_column(
                    df, src, column, 0, 100, p, required=required, what=who5
                )
    else:
        # a study that measured no WHO-5 (its outcomes declared instead) leaves both columns out,
        # or empty (as the canonical tables of such a study hold them)
        for column in ("who5_baseline", "who5_followup"):
            out[column] = pd.Series(np.nan, index=df.index, dtype="float64")
    for column in ("phq9_baseline", "phq9_followup"):
        out[column] = _number_column(
            df, src, column, 0, 27, p, required=False, what="a PHQ-9 score"
        )
    for column, values in _declared_scores(df, src, outcomes or {}, p).items():
        out[column] = values
    for c in (covariates or {}).values():
        values = _declared_covariate(df, src, c, declared_in, p)
        if values is not None:
            out[c.name] = values
    for name in undecided.covariates:  # its values wait for the declaration; its column does not
        if not _present(df, name):
            p.add(_absent_covariate(df, src, name, declared_in))

    has_dates = _present(df, "first_session") or _present(df, "last_session")
    has_days = _present(df, "days_in_care")
    if not (has_days or has_dates):
        found = ", ".join(map(str, df.columns))
        p.add(
            src.fail(
                "a days_in_care column, or first_session and last_session columns, holding "
                f"values; columns found: {found}",
                column="days_in_care",
            )
        )
        return _Checked(out, {"client_id": ids})
    first, last, span, reported = _care_span(df, src, p, has_dates)
    days = _days_in_care(df, src, p, span, has_days, reported)
    out["first_session"] = first
    out["last_session"] = last
    out["days_in_care"] = days.astype("Int64")
    return _Checked(out, {"client_id": ids})


def _session_order(
    df: pd.DataFrame, src: Source, p: Problems, client: pd.Series | None
) -> tuple[pd.Series, pd.Series]:
    """Session dates and 1-based indices within a client (given, or derived from the dates)."""
    date = pd.Series(pd.NaT, index=df.index, dtype=_DATETIME)
    has_index = _present(df, "session_index")
    has_date = _present(df, "session_date")
    if not (has_index or has_date):
        if "session_date" in df.columns or "session_index" in df.columns:
            column = "session_date" if "session_date" in df.columns else "session_index"
            p.add(
                src.fail(
                    "session_date or session_index to be filled in (the column is empty)",
                    column=column,
                )
            )
        else:
            _has(df, src, "session_date", p)
        return date, pd.Series(pd.NA, index=df.index, dtype="Int64")
    if has_date:
        date, missing, bad = _dates(df["session_date"])
        if not has_index:
            bad = bad | missing
        if bad.any():
            p.add(
                _date_problem(
                    bad, df["session_date"], "session_date", "a date written YYYY-MM-DD", src
                )
            )
    if has_index:
        index = _integer_column(
            df,
            src,
            "session_index",
            p,
            low=1,
            high=None,
            required=True,
            expected="a whole number >= 1 on every row",
        )
        if client is not None:
            # among the rows whose client and index are valid (the others were reported)
            valid = client.notna() & index.notna()
            pairs = pd.concat([client, index.rename("i")], axis=1)[valid.to_numpy(dtype=bool)]
            dup = pairs.duplicated(keep=False).reindex(df.index, fill_value=False)
            if dup.any():
                p.add(
                    src.fail_where(
                        dup,
                        df["session_index"],
                        "session_index",
                        "each session_index once within a client",
                    )
                )
        return date, index
    key = client.fillna("") if client is not None else pd.Series("", index=df.index)
    order = pd.DataFrame(
        {"client_id": key, "date": date, "row": np.arange(len(df))}, index=df.index
    ).sort_values(["client_id", "date", "row"], kind="stable")
    index = (order.groupby("client_id", sort=False).cumcount() + 1).reindex(df.index)
    return date, index.astype("Int64")


def _item(df: pd.DataFrame, src: Source, column: str, p: Problems) -> pd.Series:
    """An item's integer ratings 1–5; a 0 (a common code for 'not rated') is named as such."""
    if column not in df.columns:
        return pd.Series(pd.NA, index=df.index, dtype="Int64")
    raw = df[column]
    values, missing, _ = _numbers(raw)
    zero = ~missing & (values == 0)
    if zero.any():
        p.add(
            src.fail_where(
                zero,
                raw,
                column,
                "an integer rating from 1 to 5 (0 is not a rating; leave missing items empty)",
            )
        )
    return _integer_column(
        df,
        src,
        column,
        p,
        low=1,
        high=5,
        required=False,
        expected="an integer rating from 1 to 5 (or empty when missing)",
        skip=zero,
    )


def _declared_items(
    df: pd.DataFrame, src: Source, a: AllianceInstrument, declared_in: str, p: Problems
) -> dict[str, pd.Series]:
    """The item columns of a declared alliance instrument: present, within its range, and with
    ``scored = "items"`` on its step's grid (``float64``, missing stays missing)."""
    where = f"declared [alliance], {a.scale}" + (
        "" if declared_in == _IN_MEMORY else f", in {declared_in}"
    )
    absent = [c for c in a.columns if c not in df.columns]
    if absent:
        found = ", ".join(map(str, df.columns))
        header = "the header (line 1)" if src.csv else "the table"
        p.add(
            src.fail(
                f"every item column of the {where} in {header}; missing: {', '.join(absent)}; "
                f"columns found: {found}",
                column=absent[0],
            )
        )
    out = {}
    for s in a.measured:
        for column in a.items(s):
            if column not in df.columns:
                out[column] = pd.Series(np.nan, index=df.index, dtype="float64")
                continue
            raw = df[column]
            values, missing, bad = _numbers(raw)
            present = ~missing & ~bad
            bad = bad | (present & ((values < a.low) | (values > a.high)))
            if a.scored == "items":
                steps = (values - a.low) / a.step
                bad = bad | (present & ((steps - steps.round()).abs() > 1e-6))
                grid = "a whole number" if a.step == 1 else f"in steps of {a.step:g}"
                expected = (
                    f"a {s} item rating from {a.low:g} to {a.high:g}, {grid} ({where}), or empty "
                    "when not rated"
                )
                zero = present & (values == 0)
                if a.low > 0 and (bad & zero).any():
                    expected += " (0 is not a rating; leave unrated items empty)"
            else:
                expected = (
                    f"a pre-scored {s} subscale score (the mean of its items) between "
                    f"{a.low:g} and {a.high:g} ({where}), or empty when not rated"
                )
            if bad.any():
                p.add(src.fail_where(bad, raw, column, expected))
            out[column] = values.mask(bad)
    return out


def _sessions(
    df: pd.DataFrame,
    src: Source,
    p: Problems,
    alliance: AllianceInstrument | None = None,
    declared_in: str = _IN_MEMORY,
    undecided: Undecided = Undecided(),
) -> _Checked:
    out = pd.DataFrame(index=df.index)
    ids: dict[str, pd.Series | None] = {}
    for column in ("client_id", "provider_id"):
        ids[column] = _ids(df, src, column, p) if _has(df, src, column, p) else None
        out[column] = ids[column]
    if undecided.alliance:  # which columns hold the alliance waits for the declaration
        out["session_date"], out["session_index"] = _session_order(df, src, p, ids["client_id"])
        return _Checked(out, ids)
    if alliance is None:
        for column in ("wai_goal", "wai_bond"):
            _has(df, src, column, p)
    out["session_date"], out["session_index"] = _session_order(df, src, p, ids["client_id"])
    if alliance is not None:
        for column, values in _declared_items(df, src, alliance, declared_in, p).items():
            out[column] = values
        return _Checked(out, ids)
    for column in ITEM_COLUMNS:
        out[column] = _item(df, src, column, p)
    return _Checked(out, ids)


def _links(checked: Mapping[str, _Checked], sources: Mapping[str, Source], p: Problems) -> None:
    """Sessions name listed clients and providers; every client has a session.

    A check runs on the identifiers that are given (an empty one was reported already), so that
    one bad id is reported once, not again as a broken link, and the others are still checked.
    A session of an unlisted client is not refused while some client's id is empty (it may be
    that client's), nor a client without sessions while some session's client is empty.
    """
    src = sources["sessions"]
    clients = checked["clients"].ids["client_id"]
    providers = checked["providers"].ids["provider_id"]
    session_clients = checked["sessions"].ids["client_id"]
    session_providers = checked["sessions"].ids["provider_id"]
    if clients is not None and session_clients is not None:
        unknown = session_clients.notna() & ~session_clients.isin(clients.dropna())
        unknown &= clients.notna().all()
        if unknown.any():
            p.add(
                src.fail_where(
                    unknown,
                    session_clients,
                    "client_id",
                    f"a client_id listed in {sources['clients'].file} (unknown client)",
                    quote=True,
                )
            )
        idle = clients.notna() & ~clients.isin(session_clients.dropna())
        idle &= session_clients.notna().all()
        if idle.any():
            p.add(
                sources["clients"].fail_where(
                    idle,
                    clients,
                    "client_id",
                    f"every client to have at least one session in {src.file} "
                    "(client with no sessions)",
                    quote=True,
                )
            )
    if providers is not None and session_providers is not None:
        unknown = session_providers.notna() & ~session_providers.isin(providers.dropna())
        unknown &= providers.notna().all()
        if unknown.any():
            p.add(
                src.fail_where(
                    unknown,
                    session_providers,
                    "provider_id",
                    f"a provider_id listed in {sources['providers'].file} (unknown provider)",
                    quote=True,
                )
            )


def check_tables(
    frames: Mapping[str, pd.DataFrame],
    sources: Mapping[str, Source],
    p: Problems,
    *,
    ignore: Collection[str] = (),
    how_to_ignore: str = "ignore_columns=[...]",
    outcomes: Mapping[str, Instrument] | None = None,
    covariates: Mapping[str, Covariate] | None = None,
    declared_in: str = _IN_MEMORY,
    age_range: tuple[float, float] | None = None,
    alliance: AllianceInstrument | None = None,
    provider_types: Sequence[str] | None = None,
    undecided: Undecided = Undecided(),
) -> dict[str, pd.DataFrame]:
    """Check the tables that are given, adding every problem to ``p``; the typed tables.

    ``frames`` may lack a table (one that could not be read); the links between tables are then
    not checked. The typed tables are meaningful only when ``p`` stays empty. ``outcomes`` are the
    study's declared instruments (:mod:`alliance_bayes.data.instruments`): their baseline and
    follow-up columns may be in the clients table, checked against the declared range and step.
    ``covariates`` are its declared covariates (:mod:`alliance_bayes.data.covariates`), each a
    column of the clients table checked against its type; ``declared_in`` names where they are
    declared (the ``study.toml``), for messages. ``age_range`` is the study's declared
    ``(low, high)`` (:func:`parse_age_range`), checked instead of :data:`AGE_RANGE`.
    ``alliance`` is its declared alliance instrument (:mod:`alliance_bayes.data.alliance`): its
    item columns replace ``wai_goal``, ``wai_bond`` and ``wai_task`` in the sessions table
    (:func:`session_columns`), checked against its range (and step, for item ratings).
    ``provider_types`` are its declared provider types (:mod:`alliance_bayes.data.care`),
    checked instead of :data:`PROVIDER_TYPES`. ``undecided`` is what the study declares wrongly
    (:class:`Undecided`; its problems are reported by the caller): the checks that depend on it
    wait, and the others run.
    """
    outcomes = outcomes or {}
    # a declared column is never an unknown one, even when its name is refused below
    declared = declared_columns(outcomes, covariates)
    usable = _covariate_names(covariates or {}, outcomes, declared_in, p)
    checks = {
        "providers": lambda df, src, p: _providers(
            df,
            src,
            p,
            None if undecided.provider_types else provider_types or PROVIDER_TYPES,
            declared_in,
        ),
        "clients": lambda df, src, p: _clients(
            df, src, p, outcomes, usable, declared_in, age_range, undecided
        ),
        "sessions": lambda df, src, p: _sessions(df, src, p, alliance, declared_in, undecided),
    }
    checked = {}
    for table in TABLES:
        if table not in frames:
            continue
        src = sources[table]
        df = _unknown_columns(
            frames[table], src, ignore, how_to_ignore, p, declared, alliance, undecided
        )
        if len(df) == 0:
            p.add(src.fail("at least one data row; the table has none"))
            continue
        checked[table] = checks[table](df, src, p)
    if len(checked) == len(TABLES):
        _links(checked, sources, p)
    columns = {t: list(KNOWN_COLUMNS[t]) for t in TABLES}
    columns["clients"] += [c for c in declared if c not in columns["clients"]]
    columns["sessions"] = list(session_columns(alliance))
    return {
        t: c.table.reindex(columns=columns[t]).reset_index(drop=True) for t, c in checked.items()
    }


def validate_tables(
    frames: Mapping[str, pd.DataFrame],
    sources: Mapping[str, Source],
    *,
    ignore: Collection[str] = (),
    outcomes: Mapping[str, Instrument] | None = None,
    covariates: Mapping[str, Covariate] | None = None,
    age_range: Sequence[float] | None = None,
    alliance: AllianceInstrument | None = None,
    provider_types: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate three raw tables whose index holds 0-based data-row numbers.

    This is the worker behind :func:`validate_study`; it expects ``frames`` and ``sources`` keyed
    by ``providers``, ``clients`` and ``sessions``, and raises every problem at once.
    """
    p = Problems()
    check_ignore_list(
        ignore,
        "ignore_columns",
        p,
        alliance,
        declared=declared_columns(outcomes or {}, covariates),
        held={str(c) for df in frames.values() for c in df.columns},
    )
    ages = None
    if age_range is not None:
        ages, wrong = parse_age_range(age_range)
        for problem in wrong:
            p.add(declaration_error(problem))
    types = None
    if provider_types is not None:
        types, wrong = parse_provider_types(list(provider_types))
        for problem in wrong:
            p.add(declaration_error(problem))
    typed = check_tables(
        frames,
        sources,
        p,
        ignore=ignore,
        outcomes=outcomes,
        covariates=covariates,
        age_range=ages,
        alliance=alliance,
        provider_types=types,
    )
    p.raise_any()
    return tuple(typed[t] for t in TABLES)  # type: ignore[return-value]


def validate_study(
    providers: pd.DataFrame,
    clients: pd.DataFrame,
    sessions: pd.DataFrame,
    *,
    ignore_columns: Iterable[str] = (),
    outcomes: Mapping[str, Instrument] | None = None,
    covariates: Mapping[str, Covariate] | None = None,
    age_range: Sequence[float] | None = None,
    alliance: AllianceInstrument | None = None,
    provider_types: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check three in-memory tables against the contract and return typed copies.

    Parameters
    ----------
    providers, clients, sessions : pandas.DataFrame
        The tables, with columns as in the contract (text or already typed). Rows are reported
        by position, counting from 1.
    ignore_columns : iterable of str, optional
        Columns the contract does not name that the tables may hold (in any of them); they are
        dropped. Any other column the contract does not name is an error.
    outcomes : mapping of str to Instrument, optional
        Declared outcome instruments (:mod:`alliance_bayes.data.instruments`): the clients table
        may hold their ``<name>_baseline`` and ``<name>_followup`` columns (kept, checked against
        the declared range and step).
    covariates : mapping of str to Covariate, optional
        Declared client covariates (:mod:`alliance_bayes.data.covariates`): each is a column of
        the clients table, kept and checked against its declared type.
    age_range : sequence of two numbers, optional
        The ages (years, inclusive) the study's clients may have, ``[low, high]`` with
        ``0 <= low < high``, as ``age_range`` in a ``study.toml`` declares; :data:`AGE_RANGE`
        (18–100) when not given. A malformed range is reported with the tables' problems.
    alliance : AllianceInstrument, optional
        A declared alliance instrument (:func:`~alliance_bayes.data.alliance.parse_alliance`
        reads an ``[alliance]`` table; :data:`~alliance_bayes.data.alliance.SHIPPED` holds the
        templates): the sessions table then holds its item columns (``float64``) instead of
        ``wai_goal``, ``wai_bond`` and ``wai_task``.
    provider_types : sequence of str, optional
        The study's provider types (one or more lower-case names,
        :func:`~alliance_bayes.data.care.parse_provider_types`), as ``provider_types`` in a
        ``study.toml`` declares; :data:`PROVIDER_TYPES` (therapist, coach) when not given.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(providers, clients, sessions)`` with the canonical columns (:data:`PROVIDER_COLUMNS`,
        :data:`CLIENT_COLUMNS`, :data:`SESSION_COLUMNS`) and dtypes: ids and categories ``str``;
        ages and scores ``float64``; dates ``datetime64[ns]``; ``days_in_care``,
        ``session_index`` and the items ``Int64``. Missing values stay missing. The inputs are not
        modified.

    Raises
    ------
    DataContractError
        Reporting every problem found (see :attr:`DataContractError.problems`).
    """
    frames = {
        t: df.reset_index(drop=True)
        for t, df in zip(TABLES, (providers, clients, sessions), strict=True)
    }
    sources = {t: memory_source(t) for t in TABLES}
    return validate_tables(
        frames,
        sources,
        ignore=frozenset(ignore_columns),
        outcomes=outcomes,
        covariates=covariates,
        age_range=age_range,
        alliance=alliance,
        provider_types=provider_types,
    )
