"""Read and write a study folder (three tables, one file each) under the data contract.

:func:`load_study` reads each file's bytes once, hashes them, parses them (ids always as text) and
validates the tables (:mod:`alliance_bayes.data.contract`). Every problem found is reported at once
in one :class:`~alliance_bayes.data.contract.DataContractError`; nothing is ever written while
loading.

A table may be stored as CSV (UTF-8, comma-separated; an empty cell or ``NA`` is missing), Parquet,
Excel ``.xlsx`` (the sheet named like the table, or the workbook's only sheet; needs ``openpyxl``),
Stata ``.dta`` or SPSS ``.sav`` (needs ``pyreadstat``). In Stata and SPSS files the missing codes
are missing (Stata's ``.`` and ``.a``–``.z``; SPSS system-missing and the user-missing values and
ranges declared in the file, such as ``-99``), and the value labels of the category columns
(``provider_type``, ``sex``, ``country``) are read as their labels, so that a ``sex`` coded 1/2 and
labelled *female*/*male* reads as the words. Whole numbers stored as floating point (every SPSS
number is) are read as integers.

A study folder may hold a ``study.toml`` that declares the columns the analysis does not use::

    ignore = ["notes", "site"]

Any other column the contract does not name is refused (a misspelled ``WAI_Task`` would otherwise
lose its data). ``load_study(folder, ignore_columns=[...])`` declares more from Python.

:func:`write_study` validates first and writes only when the tables are valid, so bad input changes
nothing on disk. It writes the canonical (validated) tables, so the same data always give the same
bytes in CSV, and a written study loads back to equal frames.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alliance_bayes.data.contract import (
    TABLES,
    DataContractError,
    Problems,
    Source,
    check_ignore_list,
    check_tables,
    validate_study,
)

__all__ = ["FORMATS", "READ_FORMATS", "STUDY_SETTINGS", "RawStudy", "load_study", "write_study"]

#: Formats :func:`write_study` writes.
FORMATS: tuple[str, ...] = ("csv", "parquet")
#: Formats :func:`load_study` reads (file suffixes, one file per table).
READ_FORMATS: tuple[str, ...] = ("csv", "parquet", "xlsx", "dta", "sav")
#: The optional settings file of a study folder.
STUDY_SETTINGS = "study.toml"
#: Category columns whose Stata/SPSS value labels are read as the values.
_LABELLED = ("provider_type", "sex", "country")


@dataclass(frozen=True, eq=False, repr=False)
class RawStudy:
    """A validated study: the three contract tables, typed, with where they came from.

    Attributes
    ----------
    providers, clients, sessions : pandas.DataFrame
        Validated tables with the canonical columns and dtypes of
        :func:`~alliance_bayes.data.contract.validate_study` (RangeIndex, file order).
    folder : pathlib.Path or None
        The study folder (``None`` for a study built in memory with :meth:`from_frames`).
    files : dict of str to pathlib.Path
        The file read for each table (empty for an in-memory study).
    sha256 : str
        SHA-256 (hex) over the three files' bytes, concatenated in the fixed order providers,
        clients, sessions. For :meth:`from_frames` it is the hash of the CSV files that
        :func:`write_study` would write, so it equals the hash of the study once written as CSV.
    ignored : dict of str to tuple of str
        The declared-ignored columns that each table held (and that were dropped).
    """

    providers: pd.DataFrame
    clients: pd.DataFrame
    sessions: pd.DataFrame
    folder: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    sha256: str = ""
    ignored: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_frames(
        cls,
        providers: pd.DataFrame,
        clients: pd.DataFrame,
        sessions: pd.DataFrame,
        *,
        ignore_columns: Iterable[str] = (),
    ) -> RawStudy:
        """Validate three in-memory tables (a user's own frames, or a simulation) into a study.

        Parameters
        ----------
        providers, clients, sessions : pandas.DataFrame
            The tables, with the contract's columns (text or already typed); rows are reported
            by position, counting from 1. Nothing is read from or written to disk.
        ignore_columns : iterable of str, optional
            Columns the contract does not name that the tables may hold; they are dropped.

        Returns
        -------
        RawStudy
            With ``folder=None``, no files, and ``sha256`` the hash of the CSV files that
            :func:`write_study` would write.

        Raises
        ------
        DataContractError
            Reporting every problem found.
        """
        ignore = frozenset(ignore_columns)
        frames = (providers, clients, sessions)
        tables = dict(zip(TABLES, validate_study(*frames, ignore_columns=ignore), strict=True))
        digest = hashlib.sha256()
        for table in TABLES:
            digest.update(_serialise(tables[table], "csv"))
        held = {t: _held(df, ignore) for t, df in zip(TABLES, frames, strict=True)}
        return cls(folder=None, files={}, sha256=digest.hexdigest(), ignored=held, **tables)

    def __repr__(self) -> str:
        return (
            f"RawStudy(folder={self.folder!s}, providers={len(self.providers)}, "
            f"clients={len(self.clients)}, sessions={len(self.sessions)}, "
            f"sha256={self.sha256[:12]}…)"
        )


def _held(df: pd.DataFrame, ignore: frozenset[str]) -> tuple[str, ...]:
    return tuple(str(c) for c in df.columns if c in ignore)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _suffixes() -> str:
    return ", ".join(f".{fmt}" for fmt in READ_FORMATS)


def _find_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise DataContractError(
            folder,
            f"a study folder holding providers, clients and sessions ({_suffixes()}); {what}",
            csv=False,
        )
    files, p = {}, Problems()
    for table in TABLES:
        candidates = [folder / f"{table}.{fmt}" for fmt in READ_FORMATS]
        found = [path for path in candidates if path.exists()]
        if not found:
            p.add(
                DataContractError(
                    folder / f"{table}.csv",
                    f"a file {table}.csv or {table}.parquet (or .xlsx, .dta, .sav) in {folder}; "
                    "none exists",
                    csv=False,
                )
            )
        elif len(found) > 1:
            names = " and ".join(path.name for path in found)
            p.add(
                DataContractError(
                    found[0],
                    f"one file for the {table} table; {names} exist (ambiguous: remove one)",
                    csv=False,
                )
            )
        else:
            files[table] = found[0]
    p.raise_any()
    return files


def _settings(folder: Path) -> tuple[frozenset[str], Path | None]:
    """The columns that ``study.toml`` in ``folder`` declares ignored (none without the file)."""
    path = folder / STUDY_SETTINGS
    if not path.is_file():
        return frozenset(), None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise DataContractError(
            path, f'a TOML file such as ignore = ["notes"]; it could not be read ({reason})'
        ) from exc
    unknown = sorted(set(raw) - {"ignore"})
    ignore = raw.get("ignore", [])
    if unknown or not (isinstance(ignore, list) and all(isinstance(c, str) for c in ignore)):
        raise DataContractError(
            path,
            'only the key ignore, a list of column names (ignore = ["notes", "site"])',
            got=[*unknown, *([] if isinstance(ignore, list) else [ignore])],
            csv=False,
        )
    return frozenset(ignore), path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataContractError(
            path, f"a readable file; it could not be read ({exc.strerror or exc})", csv=False
        ) from exc


def _parse(table: str, path: Path, data: bytes) -> pd.DataFrame:
    """Parse one file's bytes into a frame of raw values; index = 0-based data-row number."""
    fmt = path.suffix.lower().lstrip(".")
    src = Source(table, path, csv=fmt == "csv")
    if not data:
        raise src.fail("a header row and at least one data row; the file is empty (0 bytes)")
    readers = {"csv": _parse_csv, "parquet": _parse_parquet, "xlsx": _parse_xlsx}
    readers |= {"dta": _parse_dta, "sav": _parse_sav}
    df = readers[fmt](src, data)
    df.columns = [str(c) for c in df.columns]
    if fmt in ("xlsx", "dta", "sav"):
        df = _whole_numbers(df)
    df = df.loc[~df.isna().all(axis=1)]  # blank lines; the index keeps the row numbers
    if len(df) == 0:
        raise src.fail("at least one data row; the file has a header but no data")
    return df


def _parse_csv(src: Source, data: bytes) -> pd.DataFrame:
    if b"\x00" in data:
        raise src.fail("a UTF-8 text CSV file; it holds binary data (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise src.fail(
            f"a UTF-8 text CSV file; byte {exc.start} (line {line}) cannot be decoded as "
            "UTF-8 (save the file as UTF-8, e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from exc
    if not text.strip():
        raise src.fail("a header row and at least one data row; the file is blank")
    header = next(csv.reader(io.StringIO(text)), [])
    if len(header) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header[0]:
                raise src.fail(
                    f"a comma-separated file; the header (line 1) is {name}-separated "
                    "(save it as CSV with commas)",
                    got=[header[0]],
                )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise src.fail("each column name once in the header (line 1)", column=name, got=[name])
        seen.add(name)
    try:
        with warnings.catch_warnings():
            # a row with more fields than the header must fail, not shift or drop data
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                na_values=["", "NA"],  # NA: R's write.csv writes it for a missing value
                skip_blank_lines=False,
                index_col=False,
            )
    except (
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        pd.errors.EmptyDataError,
        ValueError,
    ) as exc:
        reason = " ".join(str(exc).split())
        raise src.fail(f"a well-formed CSV file; it could not be parsed ({reason})") from exc
    if len(header) == len(df.columns):
        df.columns = header  # a nameless column keeps its empty name (pandas: 'Unnamed: 0')
    return df


def _unreadable(src: Source, kind: str, exc: Exception, remedy: str) -> DataContractError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return src.fail(f"a readable {kind}; it could not be read ({message}). {remedy}")


def _parse_parquet(src: Source, data: bytes) -> pd.DataFrame:
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types for corrupt input
        raise _unreadable(src, "Parquet file", exc, "Write it again, or export it as CSV") from exc
    return df.reset_index(drop=True)


def _missing_package(src: Source, package: str, kind: str) -> DataContractError:
    return src.fail(
        f"a {kind} that can be read; reading it needs the Python package {package}, which is not "
        f"installed: pip install {package} (or pip install 'alliance-bayes[files]'), or export "
        "the table as CSV (UTF-8)"
    )


def _parse_xlsx(src: Source, data: bytes) -> pd.DataFrame:
    try:
        import openpyxl  # noqa: F401  (pandas' reader for .xlsx)
    except ImportError as exc:
        raise _missing_package(src, "openpyxl", "Excel workbook") from exc
    remedy = "Save it again from Excel as .xlsx (not .xls or .xlsb), or export the table as CSV"
    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it does not keep; the values are read
            warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
            book = pd.ExcelFile(io.BytesIO(data), engine="openpyxl")
            sheets = book.sheet_names
            if src.table not in sheets and len(sheets) != 1:
                raise src.fail(
                    f"a sheet named {src.table!r}, or a workbook with one sheet; its sheets "
                    f"are {', '.join(map(repr, sheets))}"
                )
            sheet = src.table if src.table in sheets else sheets[0]
            return pd.read_excel(book, sheet_name=sheet)
    except DataContractError:
        raise
    except Exception as exc:  # zip, XML and openpyxl errors for a corrupt or encrypted file
        raise _unreadable(src, "Excel .xlsx workbook", exc, remedy) from exc


def _parse_dta(src: Source, data: bytes) -> pd.DataFrame:
    remedy = "Save it again from Stata (save or saveold), or export the table as CSV"
    try:
        # Stata's missing codes (., .a-.z) are NaN; value labels are applied below, to the
        # category columns only (a labelled score keeps its numbers).
        df = pd.read_stata(io.BytesIO(data), convert_categoricals=False)
    except Exception as exc:  # pandas raises ValueError and struct errors for corrupt input
        raise _unreadable(src, "Stata .dta file", exc, remedy) from exc
    labelled = [c for c in _LABELLED if c in df.columns]
    if labelled:
        try:
            words = pd.read_stata(io.BytesIO(data), columns=labelled)
        except ValueError:  # labels that do not convert (e.g. repeated): keep the codes
            return df
        for column in labelled:
            if isinstance(words[column].dtype, pd.CategoricalDtype):
                df[column] = words[column].astype(object)
    return df


def _parse_sav(src: Source, data: bytes) -> pd.DataFrame:
    try:
        import pyreadstat
    except ImportError as exc:
        raise _missing_package(src, "pyreadstat", "SPSS .sav file") from exc
    remedy = "Save it again from SPSS as .sav, or export the table as CSV"
    with tempfile.TemporaryDirectory() as tmp:  # pyreadstat reads a path: these very bytes
        path = Path(tmp) / "table.sav"
        path.write_bytes(data)
        try:
            # user_missing=False: the user-missing values and ranges declared in the file
            # (e.g. -99 "not answered") are read as missing, as SPSS itself treats them
            df, meta = pyreadstat.read_sav(
                str(path), user_missing=False, dates_as_pandas_datetime=True
            )
        except Exception as exc:  # pyreadstat.ReadstatError and others for corrupt input
            raise _unreadable(src, "SPSS .sav file", exc, remedy) from exc
    for column in _LABELLED:
        labels = meta.variable_value_labels.get(column)
        if column in df.columns and labels:
            df[column] = df[column].map(lambda v, lab=labels: lab.get(v, v))
    return df


def _whole_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Floating-point columns holding only whole numbers as integers (so ids read as '7')."""
    out = df.copy()
    for column in df.columns:
        s = df[column]
        if pd.api.types.is_float_dtype(s):
            values = s.to_numpy(dtype="float64", na_value=np.nan)
            finite = values[~np.isnan(values)]
            exact = np.isfinite(finite) & (np.abs(finite) < 2**53)  # exactly representable
            if exact.all() and (finite % 1 == 0).all():
                out[column] = s.astype("Int64")
    return out


WHO5_METRICS = ("percentage", "raw")


def load_study(
    folder: str | Path,
    *,
    who5_metric: str = "percentage",
    ignore_columns: Iterable[str] = (),
) -> RawStudy:
    """Load and validate a study folder, reporting every problem at once.

    Parameters
    ----------
    folder : str or pathlib.Path
        A folder holding ``providers``, ``clients`` and ``sessions``, each as ``.csv``,
        ``.parquet``, ``.xlsx``, ``.dta`` or ``.sav`` (exactly one file per table), and optionally
        ``study.toml`` with ``ignore = [...]``, the columns the analysis does not use.
    who5_metric : {"percentage", "raw"}
        The metric of ``who5_baseline`` and ``who5_followup``: the 0–100 percentage score (the
        default, as the paper reports it), or the raw 0–25 sum of the five items, which is
        multiplied by 4 on loading (the WHO-5 manual's conversion). With ``"percentage"`` a study
        whose every WHO-5 value is at most 25 is refused: that is the raw metric, and read as a
        percentage it would break the scale and the <= 28 cut-off.
    ignore_columns : iterable of str, optional
        More columns to ignore, in addition to those of ``study.toml``.

    Returns
    -------
    RawStudy
        The validated, typed tables, the files read, the SHA-256 of their bytes and the ignored
        columns each table held.

    Raises
    ------
    DataContractError
        For a missing folder or file, two files for one table, an empty, unreadable or corrupt
        file, a column neither in the contract nor ignored, or any breach of the contract; every
        problem found is listed (:attr:`DataContractError.problems`). Nothing is written.

    Notes
    -----
    CSV files are read as UTF-8 with every column as text (so ``"007"`` stays ``"007"``); empty
    cells and ``NA`` are missing. Wholly blank lines are skipped but still counted for row numbers.
    The file problems of all three tables (missing, unreadable) are reported together; the
    contents are checked once every file can be read.
    """
    folder = Path(folder)
    files = _find_files(folder)
    declared, settings = _settings(folder)
    ignore = declared | frozenset(ignore_columns)
    raw = {table: _read_bytes(path) for table, path in files.items()}
    digest = hashlib.sha256()
    for table in TABLES:
        digest.update(raw[table])
    p = Problems()
    frames = {}
    for table in TABLES:
        try:
            frames[table] = _parse(table, files[table], raw[table])
        except DataContractError as err:
            p.add(err)
    p.raise_any()
    sources = {
        table: Source(table, files[table], csv=files[table].suffix.lower() == ".csv")
        for table in TABLES
    }
    check_ignore_list(ignore, str(settings or "ignore_columns"), p)
    how = (
        f'ignore = ["name"] in {folder / STUDY_SETTINGS}; Python: '
        'load_study(folder, ignore_columns=["name"])'
    )
    typed = check_tables(frames, sources, p, ignore=ignore, how_to_ignore=how)
    if "clients" in typed:
        before = len(p)
        clients = _who5_percentage(typed["clients"], sources["clients"], who5_metric, p)
        if len(p) == before:
            typed["clients"] = clients
    p.raise_any()
    if who5_metric != "percentage":  # the same files read another way are another dataset
        digest.update(f"who5_metric={who5_metric}".encode())
    return RawStudy(
        providers=typed["providers"],
        clients=typed["clients"],
        sessions=typed["sessions"],
        folder=folder,
        files=dict(files),
        sha256=digest.hexdigest(),
        ignored={t: _held(frames[t], ignore) for t in TABLES},
    )


def _who5_percentage(clients: pd.DataFrame, src: Source, metric: str, p: Problems) -> pd.DataFrame:
    """WHO-5 on the percentage metric: checked, or converted from the raw metric (× 4)."""
    if metric not in WHO5_METRICS:
        raise ValueError(f"who5_metric must be one of {WHO5_METRICS}, not {metric!r}")
    columns = ["who5_baseline", "who5_followup"]
    values = clients[columns]
    if metric == "raw":
        for column in columns:
            above = values[column] > 25
            if above.any():
                p.add(
                    src.fail_where(
                        above,
                        values[column],
                        column,
                        "a raw WHO-5 sum score (0–25; who5_metric raw)",
                    )
                )
        return clients.assign(**{c: values[c] * 4.0 for c in columns})
    observed = values.to_numpy(dtype=float).ravel()
    observed = observed[~np.isnan(observed)]
    if len(observed) >= 10 and bool((observed <= 25).all()):
        p.add(
            src.fail(
                "WHO-5 on the 0–100 percentage metric; every value in who5_baseline and "
                "who5_followup is at most 25, which is the raw 0–25 sum score. Declare it with "
                "--who5-metric raw (Python: load_study(folder, who5_metric='raw')), which "
                "multiplies the scores by 4",
                column="who5_baseline",
            )
        )
    return clients


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _serialise(df: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_study(
    folder: str | Path,
    providers: pd.DataFrame,
    clients: pd.DataFrame,
    sessions: pd.DataFrame,
    fmt: str = "csv",
    *,
    ignore_columns: Iterable[str] = (),
) -> dict[str, Path]:
    """Validate three tables and write them as a study folder.

    Parameters
    ----------
    folder : str or pathlib.Path
        Target folder; created if needed. Existing files of the same format are replaced.
    providers, clients, sessions : pandas.DataFrame
        The tables (raw or already validated, e.g. from a :class:`RawStudy`).
    fmt : {"csv", "parquet"}
        File format. CSV is written without the index, with ``"\\n"`` line ends and UTF-8, so the
        same data always give byte-identical files.
    ignore_columns : iterable of str, optional
        Columns the contract does not name that the tables may hold; they are not written.

    Returns
    -------
    dict of str to pathlib.Path
        The file written for each table.

    Raises
    ------
    ValueError
        For an unknown ``fmt``.
    DataContractError
        When the tables break the contract; nothing is written.
    FileExistsError
        When the folder holds a table in another format (the study would be ambiguous);
        nothing is written.

    Notes
    -----
    The canonical validated tables are written (every contract column, ignored columns dropped,
    ``days_in_care`` and ``session_index`` filled in when derived), which is what makes a written
    study load back to equal frames. Each file is written to a temporary name and then moved into
    place.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    tables = dict(
        zip(
            TABLES,
            validate_study(providers, clients, sessions, ignore_columns=ignore_columns),
            strict=True,
        )
    )
    folder = Path(folder)
    clashes = [
        folder / f"{t}.{other}"
        for t in TABLES
        for other in READ_FORMATS
        if other != fmt and (folder / f"{t}.{other}").exists()
    ]
    if clashes:
        names = ", ".join(p.name for p in clashes)
        raise FileExistsError(
            f"{folder} already holds {names}; writing {fmt} beside it would make the study "
            "ambiguous. Remove those files or write to another folder."
        )
    payloads = {table: _serialise(tables[table], fmt) for table in TABLES}
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for table in TABLES:
        target = folder / f"{table}.{fmt}"
        _atomic_write(target, payloads[table])
        written[table] = target
    return written


def _atomic_write(target: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
