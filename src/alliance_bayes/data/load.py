"""Read and write a study folder (three tables, one file each, or one long export) under the contract.

:func:`load_study` reads each file's bytes once, hashes them, parses them (ids always as text) and
validates the tables (:mod:`alliance_bayes.data.contract`). Every problem found is reported at once
in one :class:`~alliance_bayes.data.contract.DataContractError`; nothing is ever written while
loading. The problems of ``study.toml`` are reported with the tables', which are checked with the
declarations that are right (a check that depends on a wrong declaration waits for it:
:class:`~alliance_bayes.data.contract.Undecided`).

A table may be stored as CSV (UTF-8, comma-separated; an empty cell or ``NA`` is missing), Parquet,
Excel ``.xlsx`` (the sheet named like the table, or the workbook's only sheet; needs ``openpyxl``),
Stata ``.dta`` or SPSS ``.sav`` (needs ``pyreadstat``). In Stata and SPSS files the missing codes
are missing (Stata's ``.`` and ``.a``–``.z``; SPSS system-missing and the user-missing values and
ranges declared in the file, such as ``-99``), and the value labels of the category columns
(``provider_type``, ``sex``, ``country``) are read as their labels, so that a ``sex`` coded 1/2 and
labelled *female*/*male* reads as the words (a label *Female* of ``sex``, or *Therapist* of
``provider_type``, in lower case). Each such conversion, and each CSV cell holding ``NA``, is
counted per file and column (:attr:`RawStudy.conversions`); a code that is neither declared
missing nor labelled stays a value, and the contract refuses it where it is not valid, saying how
to declare it. Whole numbers stored as floating point (every SPSS number is) are read as integers.

Instead of the three tables a folder may hold one long export, ``sessions_long.<suffix>``: one row
per session with the client and provider columns repeated on every row. It is split into the three
tables (:mod:`alliance_bayes.data.long_export`, which refuses a client or provider whose repeated
columns disagree), which are then checked as three files would be.

A study folder may hold a ``study.toml`` that declares the columns the analysis does not use, and
the long export's file name when it is not ``sessions_long``::

    ignore = ["notes", "site"]
    long = "export.sav"

and the outcome instruments the clients table holds beyond WHO-5 and PHQ-9, as
``[outcomes.<name>]`` tables (:mod:`alliance_bayes.data.instruments`; ``<name>_baseline`` and
``<name>_followup`` are then columns of the clients table, checked against the declared range),
and client covariates as ``[covariates.<name>]`` tables (:mod:`alliance_bayes.data.covariates`;
``<name>`` is then a column of the clients table, checked against its declared type; the value
labels of a categorical or text-coded binary covariate in a Stata or SPSS file are read as its
levels). A study whose clients are not adults declares the ages it admits (years, inclusive;
18–100 when not declared), above the first table::

    age_range = [12, 25]

A study that rates the alliance with another instrument than the contract's one 1–5 item per
subscale declares it as an ``[alliance]`` table (:mod:`alliance_bayes.data.alliance`: a shipped
template such as ``instrument = "wai_sr"``, or label, range, scoring and the item columns of each
subscale); its item columns are then the sessions table's alliance columns, checked against the
declared range.

Any other column the contract does not name is refused (a misspelled ``WAI_Task`` would otherwise
lose its data). ``load_study(folder, ignore_columns=[...])`` declares more from Python.

:func:`~alliance_bayes.data.write.write_study` validates first and writes only when the tables
are valid, so bad input changes nothing on disk. It writes the canonical (validated) tables, so
the same data always give the same bytes in CSV, and the study's declarations as a
``study.toml`` that the parsers above read back to equal declarations, so a written study loads
back to equal frames and declarations.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import re
import tempfile
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.stata import StataMissingValue

from alliance_bayes.data.alliance import AllianceInstrument, parse_alliance
from alliance_bayes.data.care import JOIN, CareTypes, parse_care, parse_provider_types
from alliance_bayes.data.contract import (
    AGE_RANGE,
    ITEM_COLUMNS,
    KNOWN_COLUMNS,
    SEXES,
    TABLES,
    DataContractError,
    Problems,
    Source,
    Undecided,
    check_ignore_list,
    check_tables,
    declaration_error,
    declared_columns,
    parse_age_range,
    validate_study,
)
from alliance_bayes.data.covariates import Covariate, parse_covariates
from alliance_bayes.data.instruments import Instrument, declare, parse_declarations
from alliance_bayes.data.long_export import LONG_STEM, split_long
from alliance_bayes.errors import _Bare

__all__ = [
    "FORMATS",
    "READ_FORMATS",
    "STUDY_SETTINGS",
    "Conversion",
    "RawStudy",
    "load_study",
]

#: Formats :func:`~alliance_bayes.data.write.write_study` writes.
FORMATS: tuple[str, ...] = ("csv", "parquet")
#: Formats :func:`load_study` reads (file suffixes, one file per table).
READ_FORMATS: tuple[str, ...] = ("csv", "parquet", "xlsx", "dta", "sav")
#: The optional settings file of a study folder.
STUDY_SETTINGS = "study.toml"
#: Category columns whose Stata/SPSS value labels are read as the values.
_LABELLED = ("provider_type", "sex", "country")


@dataclass(frozen=True)
class Conversion:
    """Cells of one column of a file that were converted on reading.

    Attributes
    ----------
    file : str
        The file's name.
    column : str
        The column.
    kind : {"value labels", "lower case", "declared missing", "NA", "empty column", "no providers"}
        Codes of a Stata or SPSS file read as their value labels; value labels of ``sex`` or
        ``provider_type`` that are an allowed word in other case (``Female``) read in lower case;
        declared missing codes (SPSS user-missing values and ranges, Stata's extended missing
        values ``.a``–``.z``) read as missing; cells of a CSV file holding ``NA`` (what R's
        ``write.csv`` writes for a missing value) read as missing; a column without a name in the
        header that is empty on every row (a trailing comma on every line of a CSV file, a blank
        formatted column of a workbook) skipped; or, a note rather than a conversion, a declared
        provider type that no provider of the providers table has (``codes``: the type; the care
        types keep the names the declaration gives, :meth:`CareTypes.without_providers
        <alliance_bayes.data.care.CareTypes.without_providers>`).
    count : int
        How many cells were converted (skipped, for an empty column; 0 for a provider type).
    codes : str
        The codes seen, with their labels (``"1 → therapist, 2 → coach"``, ``"Female → female"``,
        ``"-99"``, ``".a, .b"``, ``"NA"``); where an empty column stood
        (``"the last of 12 columns"``); the provider type without providers (``"psychiatrist"``).
    cells : tuple of (int, str)
        Each converted cell's data row (1-based, as messages count rows) and code, for a declared
        missing code (so that a required value that is missing can say why); not compared, and
        not in :meth:`to_dict`.
    """

    file: str
    column: str
    kind: str
    count: int
    codes: str
    cells: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        cells = f"{self.count} cell{'s' if self.count != 1 else ''}"
        where = f"{self.file}, column {self.column!r}: {cells}"
        if self.kind == "value labels":
            return f"{where} read as value labels ({self.codes})"
        if self.kind == "lower case":
            return f"{where} of value labels read in lower case ({self.codes})"
        if self.kind == "NA":
            return f"{where} holding NA read as missing (R's write.csv writes NA for missing)"
        if self.kind == "empty column":
            trailing = (
                " (every line ends with a comma)" if self.codes.startswith("the last") else ""
            )
            return (
                f"{self.file}: a column without a name in the header ({self.codes}), empty on "
                f"all {self.count} row{'s' if self.count != 1 else ''}, skipped{trailing}"
            )
        if self.kind == "no providers":
            return (
                f"{self.file}, column {self.column!r}: declared provider type {self.codes!r} has "
                "no providers, so no client's care type includes it; the care types keep the "
                f"names the declared provider_types give (joined by {JOIN!r}, never the "
                "contract's 'both'); the reference is the declared care_reference, else the care "
                "type with the most clients"
            )
        return f"{where} with a declared missing code ({self.codes}) read as missing"

    def to_dict(self) -> dict[str, object]:
        """The conversion as a JSON-ready mapping (for ``run.json``)."""
        return {k: v for k, v in asdict(self).items() if k != "cells"}


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
        :func:`~alliance_bayes.data.write.write_study` would write, so it equals the hash of the
        study once written as CSV.
    ignored : dict of str to tuple of str
        The declared-ignored columns that each table held (and that were dropped); a long export's
        are listed under ``sessions``.
    conversions : tuple of Conversion
        The cells of Stata and SPSS files read as value labels (and those in lower case) or as
        declared missing, and of CSV files holding ``NA`` read as missing, counted per file and
        column; the unnamed empty columns of CSV and Excel files skipped; and a note for each
        declared provider type that no provider has (:class:`Conversion`).
    outcomes : dict of str to Instrument
        The outcome instruments declared in ``study.toml`` (``[outcomes.<name>]``), by name.
    covariates : dict of str to Covariate
        The client covariates declared in ``study.toml`` (``[covariates.<name>]``), by name.
    settings : pathlib.Path or None
        The ``study.toml`` read, if any.
    age_range : tuple of float
        The ages (years, inclusive) the clients were checked against: the ``age_range`` declared
        in ``study.toml``, else the contract's 18–100.
    alliance : AllianceInstrument or None
        The alliance instrument declared in ``study.toml`` (``[alliance]``), whose item columns
        the sessions table then holds (``float64``) instead of ``wai_goal``, ``wai_bond`` and
        ``wai_task``; ``None`` when the contract's own 1–5 items hold.
    care : CareTypes
        The provider types (``provider_types`` in ``study.toml``, else therapist and coach) and
        the declared reference care type (``care_reference``), from which the analysis frame
        derives each client's care type (:mod:`alliance_bayes.data.care`).
    """

    providers: pd.DataFrame
    clients: pd.DataFrame
    sessions: pd.DataFrame
    folder: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    sha256: str = ""
    ignored: dict[str, tuple[str, ...]] = field(default_factory=dict)
    conversions: tuple[Conversion, ...] = ()
    outcomes: dict[str, Instrument] = field(default_factory=dict)
    settings: Path | None = None
    covariates: dict[str, Covariate] = field(default_factory=dict)
    age_range: tuple[float, float] = AGE_RANGE
    alliance: AllianceInstrument | None = None
    care: CareTypes = field(default_factory=CareTypes)

    @classmethod
    def from_frames(
        cls,
        providers: pd.DataFrame,
        clients: pd.DataFrame,
        sessions: pd.DataFrame,
        *,
        ignore_columns: Iterable[str] = (),
        outcomes: dict[str, Instrument] | None = None,
        covariates: dict[str, Covariate] | None = None,
        age_range: Iterable[float] | None = None,
        alliance: AllianceInstrument | None = None,
        provider_types: Iterable[str] | None = None,
        care_reference: str | None = None,
    ) -> RawStudy:
        """Validate three in-memory tables (a user's own frames, or a simulation) into a study.

        Parameters
        ----------
        providers, clients, sessions : pandas.DataFrame
            The tables, with the contract's columns (text or already typed); rows are reported
            by position, counting from 1. Nothing is read from or written to disk.
        ignore_columns : iterable of str, optional
            Columns the contract does not name that the tables may hold; they are dropped.
        outcomes : dict of str to Instrument, optional
            Declared outcome instruments, as ``[outcomes.<name>]`` of a ``study.toml`` declares.
        covariates : dict of str to Covariate, optional
            Declared client covariates, as ``[covariates.<name>]`` of a ``study.toml`` declares
            (:func:`~alliance_bayes.data.covariates.parse_covariates` reads such tables).
        age_range : pair of numbers, optional
            The ages (years, inclusive) the clients may have, as ``age_range`` in a
            ``study.toml`` declares (``(12, 25)``); 18–100 when not given.
        alliance : AllianceInstrument, optional
            A declared alliance instrument, as ``[alliance]`` of a ``study.toml`` declares
            (:func:`~alliance_bayes.data.alliance.parse_alliance`; the templates are
            :data:`~alliance_bayes.data.alliance.SHIPPED`).
        provider_types : iterable of str, optional
            The study's provider types, as ``provider_types`` in a ``study.toml`` declares
            (``["therapist", "coach", "psychiatrist"]``); therapist and coach when not given.
        care_reference : str, optional
            The care type that care-type contrasts are against, as ``care_reference`` in a
            ``study.toml`` declares; else coach, or under declared provider types the care
            type with the most clients (:mod:`alliance_bayes.data.care`).

        Returns
        -------
        RawStudy
            With ``folder=None``, no files, and ``sha256`` the hash of the CSV files that
            :func:`~alliance_bayes.data.write.write_study` would write.

        Raises
        ------
        DataContractError
            Reporting every problem found.
        """
        ignore = frozenset(ignore_columns)
        frames = (providers, clients, sessions)
        outcomes = dict(outcomes or {})
        covariates = dict(covariates or {})
        ages = None if age_range is None else list(age_range)
        types = None if provider_types is None else list(provider_types)
        care, wrong = parse_care(types, care_reference)
        if wrong:  # the tables cannot be checked against types that are not declared right
            p = Problems()
            for problem in wrong:
                p.add(declaration_error(problem))
            p.raise_any()
        tables = dict(
            zip(
                TABLES,
                validate_study(
                    *frames,
                    ignore_columns=ignore,
                    outcomes=outcomes,
                    covariates=covariates,
                    age_range=ages,
                    alliance=alliance,
                    provider_types=types,
                ),
                strict=True,
            )
        )
        p = Problems()
        _check_reference_has_providers(p, care, tables["providers"], "care_reference")
        p.raise_any()
        digest = hashlib.sha256()
        for table in TABLES:
            digest.update(_serialise(tables[table], "csv"))
        held = {t: _held(df, ignore) for t, df in zip(TABLES, frames, strict=True)}
        declare(outcomes)
        return cls(
            folder=None,
            files={},
            sha256=digest.hexdigest(),
            ignored=held,
            conversions=_without_providers(care, tables["providers"], None),
            outcomes=outcomes,
            covariates=covariates,
            # validated above, so a declared range parses
            age_range=AGE_RANGE if ages is None else (float(ages[0]), float(ages[1])),
            alliance=alliance,
            care=care,
            **tables,
        )

    def __repr__(self) -> str:
        return (
            f"RawStudy(folder={self.folder!s}, providers={len(self.providers)}, "
            f"clients={len(self.clients)}, sessions={len(self.sessions)}, "
            f"sha256={self.sha256[:12]}…)"
        )


def _held(df: pd.DataFrame, ignore: frozenset[str]) -> tuple[str, ...]:
    return tuple(str(c) for c in df.columns if c in ignore)


def _without_providers(
    care: CareTypes, providers: pd.DataFrame, file: Path | None
) -> tuple[Conversion, ...]:
    """A note for each declared provider type that no provider of the (validated) providers
    table has: the care types keep their declared names, and the report says why."""
    name = "providers table" if file is None else file.name
    return tuple(
        Conversion(name, "provider_type", "no providers", 0, kind)
        for kind in care.without_providers(providers["provider_type"].dropna())
    )


def _check_reference_has_providers(
    p: Problems, care: CareTypes, providers: pd.DataFrame, where: Path | str
) -> None:
    """A declared ``care_reference`` made of a provider type no provider has can have no client:
    refused on loading, beside the tables' problems, rather than when the frame is built."""
    absent = care.without_providers(providers["provider_type"].dropna())
    if care.reference is None or not absent:
        return
    missing = [t for t in care.reference.split(JOIN) if t in absent]
    if missing:
        p.add(
            DataContractError(
                where,
                f"a care_reference whose provider types some provider has; got "
                f"{care.reference!r}, but no provider of the providers table is a "
                f"{' or '.join(map(repr, missing))} (declare another care_reference, or leave it "
                "out for the care type with the most clients)",
                csv=False,
            )
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _suffixes() -> str:
    return ", ".join(f".{fmt}" for fmt in READ_FORMATS)


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise DataContractError(
            folder,
            f"a study folder holding providers, clients and sessions ({_suffixes()}), or one "
            f"long export {LONG_STEM}; {what}",
            csv=False,
        )


#: What to do with a file of a format that cannot be read, by suffix.
_RESAVE = {
    ".xls": "save it from Excel as .xlsx, or export the table as CSV (UTF-8)",
    ".xlsb": "save it from Excel as .xlsx, or export the table as CSV (UTF-8)",
    ".ods": "save it as .xlsx, or export the table as CSV (UTF-8)",
    ".tsv": "export the table as CSV (comma-separated, UTF-8)",
    ".txt": "export the table as CSV (comma-separated, UTF-8) named with .csv",
    ".sas7bdat": "export the table from SAS as CSV (UTF-8)",
    ".rds": "write it from R with write.csv(x, row.names = FALSE)",
    ".rdata": "write it from R with write.csv(x, row.names = FALSE)",
    ".por": "save it from SPSS as .sav",
    ".zsav": "save it from SPSS as an uncompressed .sav",
}


def _near_misses(folder: Path, stem: str) -> list[str]:
    """Files in ``folder`` that look meant as ``stem``'s file, each with what to do with it."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    hints = []
    for entry in entries:
        name = entry.name
        base, _, rest = name.partition(".")
        if base.lower() != stem.lower() or not entry.is_file():
            continue
        suffix = f".{rest.rsplit('.', 1)[-1].lower()}" if rest else ""
        if suffix.lstrip(".") in READ_FORMATS and name != f"{stem}{suffix}":
            hints.append(
                f"{name} exists: rename it {stem}{suffix} (file names are matched exactly, "
                "in lower case)"
            )
        elif suffix.lstrip(".") not in READ_FORMATS:
            remedy = _RESAVE.get(suffix, "export the table as CSV (UTF-8)")
            hints.append(
                f"{name} exists but {suffix or 'a file without a suffix'} cannot be read "
                f"(readable: {_suffixes()}): {remedy}"
            )
    return hints


def _find_files(
    folder: Path, declared_long: str | None = None
) -> tuple[dict[str, Path], Path | None]:
    """The file of each table, or the long export (then no table files); every problem at once."""
    found = {t: [folder / f"{t}.{fmt}" for fmt in READ_FORMATS] for t in TABLES}
    found = {t: [path for path in paths if path.is_file()] for t, paths in found.items()}
    if declared_long is not None:
        long = [folder / declared_long]
        if not long[0].is_file():
            raise DataContractError(
                folder / STUDY_SETTINGS,
                f"the long export that long = {declared_long!r} names in {folder}; no such file",
                csv=False,
            )
    else:
        long = [folder / f"{LONG_STEM}.{fmt}" for fmt in READ_FORMATS]
        long = [path for path in long if path.is_file()]
    tables = [path for paths in found.values() for path in paths]
    if long and tables:
        names = ", ".join(path.name for path in [*tables, *long])
        raise DataContractError(
            long[0],
            "either the three tables or one long export in a study folder; "
            f"{names} exist (ambiguous: remove the one not meant, or move it to another folder)",
            csv=False,
        )
    if len(long) > 1:
        names = " and ".join(path.name for path in long)
        raise DataContractError(
            long[0], f"one long export; {names} exist (ambiguous: remove one)", csv=False
        )
    if long:
        return {}, long[0]
    files, p = {}, Problems()
    # a long export in a format that cannot be read is named too when no table is there
    long_hints = [] if tables else _near_misses(folder, LONG_STEM)
    for table in TABLES:
        if not found[table]:
            hints = _near_misses(folder, table) + (long_hints if table == "sessions" else [])
            p.add(
                DataContractError(
                    folder / f"{table}.csv",
                    f"a file {table}.csv or {table}.parquet (or .xlsx, .dta, .sav) in {folder}, "
                    f"or one long export {LONG_STEM}.csv with a row per session; none exists"
                    + "".join(f"; {hint}" for hint in hints),
                    csv=False,
                )
            )
        elif len(found[table]) > 1:
            names = " and ".join(path.name for path in found[table])
            p.add(
                DataContractError(
                    found[table][0],
                    f"one file for the {table} table; {names} exist (ambiguous: remove one)",
                    csv=False,
                )
            )
        else:
            files[table] = found[table][0]
    p.raise_any()
    return files, None


@dataclass(frozen=True)
class _Settings:
    """What a folder's ``study.toml`` declares: ignored columns, the long export's name, the
    outcome instruments, the client covariates, the clients' age range, the alliance
    instrument (None: undeclared), and the provider types and reference care type."""

    ignore: frozenset[str] = frozenset()
    path: Path | None = None
    long: str | None = None
    outcomes: dict[str, Instrument] = field(default_factory=dict)
    covariates: dict[str, Covariate] = field(default_factory=dict)
    age_range: tuple[float, float] | None = None
    alliance: AllianceInstrument | None = None
    care: CareTypes = field(default_factory=CareTypes)

    @property
    def labelled(self) -> tuple[str, ...]:
        """Columns whose Stata/SPSS value labels are read as the values."""
        return _LABELLED + tuple(n for n, c in self.covariates.items() if c.coded)

    @property
    def words(self) -> dict[str, tuple[str, ...]]:
        """The words a labelled column takes, where the contract fixes them: a value label that
        is one of them in other case (``Female``) is read in lower case."""
        return {"sex": SEXES, "provider_type": self.care.provider_types}


def _settings(folder: Path) -> _Settings:
    """The settings that ``study.toml`` in ``folder`` declares (none without the file), or every
    problem with them."""
    settings, problems, _ = _read_settings(folder)
    _raise_declarations(settings.path, problems)
    return settings


def _read_settings(folder: Path) -> tuple[_Settings, list[str], Undecided]:
    """The settings of ``study.toml`` in ``folder``, every problem with its declarations, and
    what those problems leave undecided (:func:`_declarations`). A file that is not TOML, or
    a ``long`` that names no readable file, is raised at once: nothing else can be read."""
    path = folder / STUDY_SETTINGS
    if not path.is_file():
        return _Settings(), [], Undecided()
    example = 'ignore = ["notes"] and long = "export.sav"'
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise DataContractError(
            path, f"a TOML file such as {example}; it could not be read ({reason})"
        ) from exc
    return _declarations(raw, path)


def _raise_declarations(path: Path | None, problems: list[str]) -> None:
    if problems:
        p = Problems()
        for problem in problems:
            p.add(DataContractError(path or STUDY_SETTINGS, problem, csv=False))
        p.raise_any()


def _settings_from(raw: dict, path: Path) -> _Settings:
    """The settings that the parsed ``study.toml`` at ``path`` declares, or every problem."""
    settings, problems, _ = _declarations(raw, path)
    _raise_declarations(path, problems)
    return settings


#: What a ``study.toml`` may hold, in words, for the message about a key it may not.
_WHAT_IT_HOLDS = (
    'only the key ignore, a list of column names (ignore = ["notes", "site"]), the key long, the '
    f'name of a long export in the folder ({_suffixes()}; long = "export.sav"), the key '
    "age_range, the clients' ages (age_range = [12, 25]), the keys provider_types "
    '(provider_types = ["therapist", "coach", "psychiatrist"]) and care_reference, '
    "[outcomes.<name>] and [covariates.<name>] tables and an [alliance] table"
)


def _top_level(raw: dict) -> list[str]:
    """The problems with a ``study.toml``'s own keys: unknown ones (each with the key it most
    resembles), an ``ignore`` that is no list of names, a ``long`` that names no export."""
    problems = []
    for key in sorted(set(raw) - {*_TOP_LEVEL, *_TABLES}):
        close = difflib.get_close_matches(str(key).lower(), [*_TOP_LEVEL, *_TABLES], cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{_WHAT_IT_HOLDS}; got {key!r}{hint}")
    ignore = raw.get("ignore", [])
    if not (isinstance(ignore, list) and all(isinstance(c, str) for c in ignore)):
        problems.append(
            f'ignore: a list of column names (ignore = ["notes", "site"]), got {ignore!r}'
        )
    long = raw.get("long")
    if long is not None and not (
        isinstance(long, str)
        and Path(long).name == long
        and Path(long).suffix.lower().lstrip(".") in READ_FORMATS
    ):
        problems.append(
            f"long: the name of a long export in the folder ({_suffixes()}; long = "
            f'"export.sav"), got {long!r}'
        )
    return problems


def _declarations(raw: dict, path: Path) -> tuple[_Settings, list[str], Undecided]:
    """What the parsed ``study.toml`` at ``path`` declares, every problem with it (each key and
    table is checked whatever else is wrong), and what those problems leave undecided: the
    settings then hold the declarations that are right, and the checks of the tables that
    depend on a wrong one wait for it (:class:`~alliance_bayes.data.contract.Undecided`)."""
    problems = _top_level(raw)
    ignore = raw.get("ignore", [])
    ignore = ignore if isinstance(ignore, list) and all(isinstance(c, str) for c in ignore) else []
    long = raw.get("long")
    if any(problem.startswith("long: ") for problem in problems):
        _raise_declarations(path, problems)  # the files cannot be found without it
    reserved = frozenset(c for cols in KNOWN_COLUMNS.values() for c in cols)
    # a top-level key misplaced below a table's heading is reported by _misplaced, not as unknown
    outcomes, wrong = parse_declarations(_without_top_level(raw.get("outcomes", {})), reserved)
    problems += wrong
    covariates, wrong = parse_covariates(_without_top_level(raw.get("covariates", {})))
    problems += wrong
    problems += _misplaced(raw)
    age_range = None
    if "age_range" in raw:
        age_range, wrong = parse_age_range(raw["age_range"])
        problems += wrong
    alliance = None
    if "alliance" in raw:
        # a top-level key misplaced below [alliance] is reported by _misplaced, not as unknown
        table = raw["alliance"]
        if isinstance(table, dict):
            table = {k: v for k, v in table.items() if k not in _TOP_LEVEL}
        # the contract's columns but its alliance items, which a declaration may name as its own
        contract = frozenset(c for cols in KNOWN_COLUMNS.values() for c in cols)
        alliance, wrong = parse_alliance(table, contract - set(ITEM_COLUMNS))
        problems += wrong
    care = CareTypes()
    if "provider_types" in raw or "care_reference" in raw:
        care, wrong = parse_care(raw.get("provider_types"), raw.get("care_reference"))
        problems += wrong
    settings = _Settings(
        frozenset(ignore), path, long, outcomes, covariates, age_range, alliance, care
    )
    return settings, problems, _undecided(raw, settings)


def _undecided(raw: dict, settings: _Settings) -> Undecided:
    """What the wrong declarations of ``raw`` leave undecided (those missing from ``settings``)."""
    wrong_outcomes = _names(raw.get("outcomes")) - set(settings.outcomes)
    wrong_covariates = _names(raw.get("covariates")) - set(settings.covariates)
    moved = _keys_below_headings(raw)  # a key written below a heading is no declaration of it
    wrong_types = "provider_types" in raw and parse_provider_types(raw["provider_types"])[0] is None
    return Undecided(
        columns=frozenset(
            {f"{n}{part}" for n in wrong_outcomes for part in ("_baseline", "_followup")}
            | wrong_covariates
        ),
        covariates=tuple(sorted(wrong_covariates)),
        age_range=("age_range" in raw and settings.age_range is None) or "age_range" in moved,
        provider_types=wrong_types or "provider_types" in moved,
        alliance="alliance" in raw and settings.alliance is None,
    )


def _without_top_level(tables: object) -> object:
    """A group of ``[outcomes.<name>]`` (``[covariates.<name>]``) tables without the top-level
    keys written below their headings (reported by :func:`_misplaced`)."""
    if not isinstance(tables, dict):
        return tables
    return {
        name: {k: v for k, v in table.items() if k not in _TOP_LEVEL}
        if isinstance(table, dict)
        else table
        for name, table in tables.items()
    }


def _keys_below_headings(raw: dict) -> set[str]:
    """The top-level keys written below a table's heading (which TOML reads as that table's)."""
    tables = [raw.get("alliance")]
    for group in ("outcomes", "covariates"):
        if isinstance(raw.get(group), dict):
            tables += list(raw[group].values())
    return {k for table in tables if isinstance(table, dict) for k in table if k in _TOP_LEVEL}


def _names(tables: object) -> set[str]:
    """The names of the ``[outcomes.<name>]`` (``[covariates.<name>]``) tables of a group."""
    return {str(name) for name in tables} if isinstance(tables, dict) else set()


#: The keys of a ``study.toml`` outside its tables.
_TOP_LEVEL = ("ignore", "long", "age_range", "provider_types", "care_reference")
#: The tables of a ``study.toml``.
_TABLES = ("outcomes", "covariates", "alliance")


def _long_session_columns(
    rows: pd.DataFrame, settings: _Settings, undecided: Undecided
) -> list[str]:
    """The sessions-table columns a long export's study declares: its alliance items, or while
    the ``[alliance]`` declaration is wrong every column no table of the contract names (which
    of them are the items waits for the declaration)."""
    if settings.alliance is not None:
        return list(settings.alliance.columns)
    if not undecided.alliance:
        return []
    named = {c for cols in KNOWN_COLUMNS.values() for c in cols}
    named |= set(declared_columns(settings.outcomes, settings.covariates)) | undecided.columns
    return [str(c) for c in rows.columns if c not in named]


def _misplaced(raw: dict) -> list[str]:
    """A top-level key written below a ``[table]`` heading, which TOML reads as that table's."""
    found = []
    alliance = raw.get("alliance")
    for key in _TOP_LEVEL:
        if isinstance(alliance, dict) and key in alliance:
            found.append(
                f"[alliance]: {key} belongs at the top of the file, above the first [table] "
                "heading (a key below a heading is that table's)"
            )
    for group in ("outcomes", "covariates"):
        tables = raw.get(group)
        for name, table in tables.items() if isinstance(tables, dict) else ():
            for key in _TOP_LEVEL:
                if isinstance(table, dict) and key in table:
                    found.append(
                        f"[{group}.{name}]: {key} belongs at the top of the file, above the "
                        "first [table] heading (a key below a heading is that table's)"
                    )
    return found


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataContractError(
            path,
            f"a readable file; it could not be read ({exc.strerror or exc}): check that it is a "
            "file you may read (its permissions; a file still syncing from a cloud drive is not "
            "yet on disk), or copy it into the folder again",
            csv=False,
        ) from exc


def _parse(
    table: str,
    path: Path,
    data: bytes,
    labelled: tuple[str, ...] = _LABELLED,
    words: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[pd.DataFrame, list[Conversion]]:
    """Parse one file's bytes into a frame of raw values; index = 0-based data-row number.

    Also returns the conversions of a Stata or SPSS file's cells (value labels of the
    ``labelled`` columns, missing codes).
    """
    fmt = path.suffix.lower().lstrip(".")
    src = Source(table, path, csv=fmt == "csv")
    if not data:
        raise src.fail("a header row and at least one data row; the file is empty (0 bytes)")
    readers = {"csv": _parse_csv, "parquet": _parse_parquet, "xlsx": _parse_xlsx}
    if fmt in ("dta", "sav"):
        reader = _parse_dta if fmt == "dta" else _parse_sav
        df, conversions = reader(src, data, labelled, words or {})
    else:
        df, conversions = readers[fmt](src, data)
    df.columns = [str(c) for c in df.columns]
    if fmt in ("xlsx", "dta", "sav"):
        df = _whole_numbers(df)
    df = df.loc[~df.isna().all(axis=1)]  # blank lines; the index keeps the row numbers
    if len(df) == 0:
        raise src.fail("at least one data row; the file has a header but no data")
    if fmt in ("csv", "xlsx"):
        df, skipped = _skip_empty_unnamed(src, df)
        conversions += skipped
    return df, conversions


def _unnamed(name: str) -> bool:
    """A header cell left empty: ``""`` in a CSV file, pandas' ``Unnamed: <k>`` in a workbook."""
    return name == "" or re.fullmatch(r"Unnamed: \d+", name) is not None


def _skip_empty_unnamed(src: Source, df: pd.DataFrame) -> tuple[pd.DataFrame, list[Conversion]]:
    """The table without its columns that have no name and no value, each recorded.

    A comma at the end of every line of a CSV file (the header's too) makes a last column with
    neither a name nor a value, as does a blank but formatted column of a workbook: it holds
    nothing, so it is skipped, and recorded (:class:`Conversion`, kind ``"empty column"``). An
    unnamed column holding values (R's ``write.csv`` row names, a nameless first column of
    1..n) is kept, to be refused or declared ignored.
    """
    n = len(df.columns)
    empty = [
        k for k, name in enumerate(df.columns) if _unnamed(name) and df.iloc[:, k].isna().all()
    ]
    name = Path(str(src.file)).name
    conversions = [
        Conversion(
            name,
            str(df.columns[k]),
            "empty column",
            len(df),
            f"the last of {n} columns" if k == n - 1 else f"column {k + 1} of {n}",
        )
        for k in empty
    ]
    df = df.iloc[:, [k for k in range(n) if k not in set(empty)]]
    names = [str(c) for c in df.columns]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:  # two nameless columns holding values: neither can be told from the other
        raise src.fail("each column name once in the header (line 1)", column=twice[0], got=twice)
    return df, conversions


def _parse_csv(src: Source, data: bytes) -> tuple[pd.DataFrame, list[Conversion]]:
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
        # nameless columns may repeat where all but one are empty (a comma too many at each
        # line's end): checked once the empty ones are skipped (_skip_empty_unnamed)
        if name in seen and name != "":
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
                na_values=[""],
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
    return _r_missing(src, df)


def _r_missing(src: Source, df: pd.DataFrame) -> tuple[pd.DataFrame, list[Conversion]]:
    """A CSV table's ``NA`` cells as missing (R's ``write.csv`` writes ``NA`` for a missing
    value), counted per column: a text column may hold ``NA`` meaning itself (Namibia), which
    the count then shows."""
    na = df.eq("NA")
    name = Path(str(src.file)).name
    # by position: nameless columns share the name '' until the empty ones are skipped
    counts = na.sum(axis=0).to_numpy()
    conversions = [
        Conversion(name, str(column), "NA", int(n), "NA")
        for column, n in zip(df.columns, counts, strict=True)
        if n
    ]
    return df.mask(na), conversions


def _unreadable(src: Source, kind: str, exc: Exception, remedy: str) -> DataContractError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return src.fail(f"a readable {kind}; it could not be read ({message}). {remedy}")


def _parse_parquet(src: Source, data: bytes) -> tuple[pd.DataFrame, list[Conversion]]:
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types for corrupt input
        raise _unreadable(src, "Parquet file", exc, "Write it again, or export it as CSV") from exc
    return df.reset_index(drop=True), []


def _missing_package(src: Source, package: str, kind: str) -> DataContractError:
    return src.fail(
        f"a {kind} that can be read; reading it needs the Python package {package}, which is not "
        f"installed: pip install {package} (or pip install 'alliance-bayes[files]'), or export "
        "the table as CSV (UTF-8)"
    )


def _parse_xlsx(src: Source, data: bytes) -> tuple[pd.DataFrame, list[Conversion]]:
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
            return pd.read_excel(book, sheet_name=sheet), []
    except DataContractError:
        raise
    except Exception as exc:  # zip, XML and openpyxl errors for a corrupt or encrypted file
        raise _unreadable(src, "Excel .xlsx workbook", exc, remedy) from exc


def _code(value: object) -> str:
    """A code as written in the statistics package (``-99``, not ``-99.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _relabelled(
    src: Source,
    codes: pd.Series,
    words: pd.Series,
    column: str,
    allowed: tuple[str, ...] | None = None,
) -> tuple[pd.Series, list[Conversion]]:
    """``codes`` with the cells that have a value label (in ``words``) replaced by it.

    A label that is one of the ``allowed`` words in other case (``Female`` for ``female``) is
    read in lower case, counted as a conversion of its own: a label is the statistics package's
    display text, often capitalised, and the word it spells is not in doubt.
    """
    labelled = codes.notna() & words.map(lambda w: isinstance(w, str)).astype(bool)
    if not labelled.any():
        return codes, []
    pairs = pd.DataFrame({"code": codes[labelled], "label": words[labelled]}).drop_duplicates()
    seen = ", ".join(
        f"{_code(c)} → {w}" for c, w in sorted(zip(pairs.code, pairs.label, strict=True))
    )
    name = Path(str(src.file)).name
    conversions = [Conversion(name, column, "value labels", int(labelled.sum()), seen)]
    lower = {
        w: w.strip().lower()
        for w in set(pairs.label)
        if allowed and w.strip().lower() in allowed and w != w.strip().lower()
    }
    if lower:
        recased = labelled & words.isin(list(lower))
        words = words.where(~recased, words.map(lower))
        shown = ", ".join(f"{w} → {lower[w]}" for w in sorted(lower))
        conversions.append(Conversion(name, column, "lower case", int(recased.sum()), shown))
    return codes.astype(object).where(~labelled, words), conversions


def _declared_missing(src: Source, column: str, codes: pd.Series) -> Conversion:
    """The cells of ``column`` holding a declared missing code (``codes``, indexed by the 0-based
    data row), read as missing."""
    name = Path(str(src.file)).name
    seen = ", ".join(sorted({_code(c) for c in codes}, key=lambda c: (len(c), c)))
    cells = tuple((int(i) + 1, _code(c)) for i, c in codes.items())
    return Conversion(name, column, "declared missing", len(codes), seen, cells)


def _extended_missing(value: object) -> str | None:
    """Stata's extended missing code (``.a``–``.z``) of a cell; ``None`` for any other cell."""
    if isinstance(value, StataMissingValue) and value.string != ".":
        return value.string
    return None


def _parse_dta(
    src: Source,
    data: bytes,
    category_columns: tuple[str, ...] = _LABELLED,
    allowed: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[pd.DataFrame, list[Conversion]]:
    remedy = "Save it again from Stata (save or saveold), or export the table as CSV"
    try:
        # Stata's missing codes (., .a-.z) are NaN; value labels are applied below, to the
        # category columns only (a labelled score keeps its numbers).
        df = pd.read_stata(io.BytesIO(data), convert_categoricals=False)
        # the codes themselves (StataMissingValue), to count the extended ones .a-.z
        codes = pd.read_stata(
            io.BytesIO(data), convert_categoricals=False, convert_dates=False, convert_missing=True
        )
    except Exception as exc:  # pandas raises ValueError and struct errors for corrupt input
        raise _unreadable(src, "Stata .dta file", exc, remedy) from exc
    conversions = []
    for column in codes.columns:
        if codes[column].dtype == object:
            extended = codes[column].map(_extended_missing).dropna()
            if len(extended):
                conversions.append(_declared_missing(src, str(column), extended))
    labelled = [c for c in category_columns if c in df.columns]
    if labelled:
        try:
            words = pd.read_stata(io.BytesIO(data), columns=labelled)
        except ValueError:  # labels that do not convert (e.g. repeated): keep the codes
            return df, conversions
        for column in labelled:
            if isinstance(words[column].dtype, pd.CategoricalDtype):
                df[column], done = _relabelled(
                    src,
                    df[column],
                    words[column].astype(object),
                    column,
                    (allowed or {}).get(column),
                )
                conversions += done
    return df, conversions


def _parse_sav(
    src: Source,
    data: bytes,
    category_columns: tuple[str, ...] = _LABELLED,
    allowed: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[pd.DataFrame, list[Conversion]]:
    try:
        import pyreadstat
    except ImportError as exc:
        raise _missing_package(src, "pyreadstat", "SPSS .sav file") from exc
    remedy = "Save it again from SPSS as .sav, or export the table as CSV"
    with tempfile.TemporaryDirectory() as tmp:  # pyreadstat reads a path: these very bytes
        path = Path(tmp) / "table.sav"
        path.write_bytes(data)
        try:
            # the codes as stored, with the user-missing values and ranges the file declares
            codes, meta = pyreadstat.read_sav(
                str(path), user_missing=True, dates_as_pandas_datetime=True
            )
            # user_missing=False: those declared codes (e.g. -99 "not answered") are read as
            # missing, as SPSS itself treats them
            df = (
                pyreadstat.read_sav(str(path), user_missing=False, dates_as_pandas_datetime=True)[0]
                if meta.missing_ranges or meta.missing_user_values
                else codes
            )
        except Exception as exc:  # pyreadstat.ReadstatError and others for corrupt input
            raise _unreadable(src, "SPSS .sav file", exc, remedy) from exc
    conversions = []
    for column in df.columns:
        turned = df[column].isna() & codes[column].notna()
        if turned.any():
            conversions.append(_declared_missing(src, str(column), codes[column][turned]))
    for column in category_columns:
        labels = meta.variable_value_labels.get(column)
        if column in df.columns and labels:
            words = df[column].map(lambda v, lab=labels: lab.get(v))
            df[column], done = _relabelled(
                src, df[column], words, column, (allowed or {}).get(column)
            )
            conversions += done
    return df, conversions


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
        ``.parquet``, ``.xlsx``, ``.dta`` or ``.sav`` (exactly one file per table), or instead one
        long export ``sessions_long.<suffix>`` (one row per session, the client and provider
        columns repeated on every row), and optionally ``study.toml`` with ``ignore = [...]``, the
        columns the analysis does not use, ``long = "<file name>"``, the long export's name
        when it is not ``sessions_long``, and ``age_range = [low, high]``, the ages the clients
        may have when not 18–100.
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
        The validated, typed tables, the files read (the long export for all three tables when
        the study is one), the SHA-256 of their bytes, the ignored columns each table held and
        the cells converted on reading (:class:`Conversion`).

    Raises
    ------
    DataContractError
        For a missing folder or file, two files for one table (or tables beside a long export),
        an empty, unreadable or corrupt file, a column neither in the contract nor ignored, a
        client or provider whose repeated columns disagree across the rows of a long export, or
        any breach of the contract; every
        problem found is listed (:attr:`DataContractError.problems`). Nothing is written.

    Notes
    -----
    CSV files are read as UTF-8 with every column as text (so ``"007"`` stays ``"007"``); empty
    cells and ``NA`` are missing. Wholly blank lines are skipped but still counted for row numbers.
    The file problems of all three tables (missing, unreadable) are reported together; the
    contents are checked once every file can be read. A long export is split into the three tables
    (:func:`~alliance_bayes.data.long_export.split_long`), which are checked as three files would
    be; their problems name the long file and its rows (a client's row is its first session row).
    """
    folder = Path(folder)
    _check_folder(folder)
    settings, declared_wrong, undecided = _read_settings(folder)
    p = Problems()
    # the declarations' problems come first; the tables are then checked with the declarations
    # that are right, the checks that depend on a wrong one waiting for it
    for problem in declared_wrong:
        p.add(DataContractError(settings.path or STUDY_SETTINGS, problem, csv=False))
    try:
        files, long = _find_files(folder, settings.long)
    except DataContractError as err:  # reported with the declarations' problems
        p.add(err)
        p.raise_any()
        raise
    ignore = settings.ignore | frozenset(ignore_columns)
    how = (
        f'ignore = ["name"] in {folder / STUDY_SETTINGS}; Python: '
        'load_study(folder, ignore_columns=["name"])'
    )
    digest = hashlib.sha256()
    if long is None:
        raw = {table: _read_bytes(path) for table, path in files.items()}
        for table in TABLES:
            digest.update(raw[table])
        frames, conversions = {}, []
        for table in TABLES:
            try:
                frames[table], done = _parse(
                    table, files[table], raw[table], settings.labelled, settings.words
                )
                conversions += done
            except DataContractError as err:
                p.add(err)
        if len(frames) < len(TABLES):  # the contents are checked once every file can be read
            p.raise_any()
        sources = {
            table: Source(table, files[table], csv=files[table].suffix.lower() == ".csv")
            for table in TABLES
        }
        ignored = {t: _held(frames[t], ignore) for t in TABLES}
        held = {str(c) for t in TABLES for c in frames[t].columns}
    else:
        data = _read_bytes(long)
        digest.update(data)
        rows, conversions = _parse("sessions", long, data, settings.labelled, settings.words)
        sources = {t: Source(t, long, csv=long.suffix.lower() == ".csv") for t in TABLES}
        split = split_long(
            rows,
            sources["sessions"],
            p,
            ignore=ignore,
            how_to_ignore=how,
            client_columns=[
                *declared_columns(settings.outcomes, settings.covariates),
                *sorted(undecided.columns),
            ],
            session_columns=_long_session_columns(rows, settings, undecided),
        )
        if split is None:  # no ids: the rows cannot be split, so the tables cannot be checked
            p.raise_any()
        frames, files = split.frames, dict.fromkeys(TABLES, long)
        ignored = {"providers": (), "clients": (), "sessions": split.ignored}
        held = {str(c) for c in rows.columns}
    held |= {c.column for c in conversions if c.kind == "empty column"}
    declared = (
        *declared_columns(settings.outcomes, settings.covariates),
        *sorted(undecided.columns),
    )
    for entries, where in (
        (settings.ignore, str(settings.path or STUDY_SETTINGS)),
        (frozenset(ignore_columns) - settings.ignore, "ignore_columns"),
    ):
        check_ignore_list(entries, where, p, settings.alliance, declared=declared, held=held)
    contract_from = len(p)
    typed = check_tables(
        frames,
        sources,
        p,
        ignore=ignore,
        how_to_ignore=how,
        outcomes=settings.outcomes,
        covariates=settings.covariates,
        declared_in=str(settings.path or "covariates"),
        age_range=settings.age_range,
        alliance=settings.alliance,
        provider_types=settings.care.provider_types,
        undecided=undecided,
    )
    if "clients" in typed:
        before = len(p)
        clients = _who5_percentage(typed["clients"], sources["clients"], who5_metric, p)
        if len(p) == before:
            typed["clients"] = clients
    _say_how_codes_are_read(p, contract_from, conversions)
    if "providers" in typed:
        where = settings.path or STUDY_SETTINGS
        _check_reference_has_providers(p, settings.care, typed["providers"], where)
    p.raise_any()
    conversions += _without_providers(settings.care, typed["providers"], files.get("providers"))
    if who5_metric != "percentage":  # the same files read another way are another dataset
        digest.update(f"who5_metric={who5_metric}".encode())
    declare(settings.outcomes)
    return RawStudy(
        providers=typed["providers"],
        clients=typed["clients"],
        sessions=typed["sessions"],
        folder=folder,
        files=dict(files),
        sha256=digest.hexdigest(),
        ignored=ignored,
        conversions=tuple(conversions),
        outcomes=dict(settings.outcomes),
        settings=settings.path,
        covariates=dict(settings.covariates),
        age_range=settings.age_range or AGE_RANGE,
        alliance=settings.alliance,
        care=settings.care,
    )


#: How each statistics package's codes are read, and how to declare one missing.
_CODES_READ = {
    ".sav": "SPSS .sav files are read with the user-missing values the file declares and the "
    "value labels of provider_type, sex and country: declare a code such as -99 missing in SPSS "
    "(Variable View, Missing) or leave the cell empty; a category code needs its value label",
    ".dta": "Stata .dta files are read with Stata's missing values (. and .a–.z) and the value "
    "labels of provider_type, sex and country: recode a code such as -99 to missing "
    "(mvdecode varname, mv(-99=.a)) or leave the cell empty; a category code needs its value "
    "label",
}


def _say_how_codes_are_read(p: Problems, start: int, conversions: list[Conversion]) -> None:
    """Value problems in a Stata or SPSS file say how its missing codes and labels were read.

    A code such as ``-99`` that the file does not declare missing is a value, and is refused where
    it is not valid; the message then tells the user how to declare it. A required value that is
    missing because the file declares its code missing says so, with the codes, rather than
    showing empty cells and that advice; a value read from the file's value labels says that
    it is a label.
    """
    found = p.found[start:]
    del p.found[start:]
    for e in found:
        how = _CODES_READ.get(Path(str(e.file)).suffix.lower())
        if not (how and e.rows and e.got and e.column and not e.column.endswith("_id")):
            p.found.append(e)
            continue
        mine = [c for c in conversions if c.file == Path(str(e.file)).name and c.column == e.column]
        coded = {r: code for c in mine if c.kind == "declared missing" for r, code in c.cells}
        declared = [r for r in e.rows if r in coded]
        if declared:
            p.found.append(_missing_code(e, declared, coded))
        rest = [r for r in e.rows if r not in coded]
        if not rest:
            continue
        # the values known are the first rows' (a message shows no more)
        shown = dict(zip(e.rows, e.got, strict=False))
        got = [shown[r] for r in rest if r in shown]
        labels = [c.codes for c in mine if c.kind == "value labels"]
        # a text value of a labelled column is a label (its codes are numbers)
        said = (
            f"the text values are the file's value labels ({'; '.join(labels)}): a label must "
            f"spell one of the words expected; {how}"
            if labels and any(isinstance(v, str) for v in got)
            else how
        )
        p.found.append(
            DataContractError(
                e.file, f"{e.expected} ({said})", column=e.column, rows=rest, got=got, csv=e.csv
            )
        )


def _missing_code(
    e: DataContractError, rows: list[int], codes: dict[int, str]
) -> DataContractError:
    """A required value missing on ``rows`` because the file declares its code missing."""
    seen = sorted(set(codes[r] for r in rows), key=lambda c: (len(c), c))
    n = len(rows)
    return DataContractError(
        e.file,
        f"{e.expected}; {e.column} is required: {n} row{'s' if n != 1 else ''} "
        f"hold{'' if n != 1 else 's'} the declared missing code{'s' if len(seen) > 1 else ''} "
        f"{', '.join(seen)}, which the file declares missing and so is read as missing (give the "
        "value, or leave the client out of the study)",
        column=e.column,
        rows=rows,
        got=[_Bare(codes[r]) for r in rows[:5]],
        csv=e.csv,
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
