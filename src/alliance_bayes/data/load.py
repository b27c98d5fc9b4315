"""Read and write a study folder (three tables, CSV or Parquet) under the data contract.

:func:`load_study` reads each file's bytes once, hashes them, parses them (ids always as text) and
validates the tables (:mod:`alliance_bayes.data.contract`). Any problem raises
:class:`~alliance_bayes.data.contract.DataContractError`; nothing is ever written while loading.

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alliance_bayes.data.contract import (
    TABLES,
    DataContractError,
    Source,
    validate_study,
    validate_tables,
)

__all__ = ["FORMATS", "RawStudy", "load_study", "write_study"]

FORMATS: tuple[str, ...] = ("csv", "parquet")


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
    """

    providers: pd.DataFrame
    clients: pd.DataFrame
    sessions: pd.DataFrame
    folder: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    sha256: str = ""

    @classmethod
    def from_frames(
        cls, providers: pd.DataFrame, clients: pd.DataFrame, sessions: pd.DataFrame
    ) -> RawStudy:
        """Validate in-memory tables (e.g. a simulation) into a study without touching the disk."""
        tables = dict(zip(TABLES, validate_study(providers, clients, sessions), strict=True))
        digest = hashlib.sha256()
        for table in TABLES:
            digest.update(_serialise(tables[table], "csv"))
        return cls(folder=None, files={}, sha256=digest.hexdigest(), **tables)

    def __repr__(self) -> str:
        return (
            f"RawStudy(folder={self.folder!s}, providers={len(self.providers)}, "
            f"clients={len(self.clients)}, sessions={len(self.sessions)}, "
            f"sha256={self.sha256[:12]}…)"
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _find_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise DataContractError(
            folder,
            f"a study folder holding providers, clients and sessions (.csv or .parquet); {what}",
            csv=False,
        )
    files = {}
    for table in TABLES:
        candidates = [folder / f"{table}.{fmt}" for fmt in FORMATS]
        found = [path for path in candidates if path.exists()]
        if not found:
            raise DataContractError(
                folder / f"{table}.csv",
                f"a file {table}.csv or {table}.parquet in {folder}; neither exists",
                csv=False,
            )
        if len(found) > 1:
            raise DataContractError(
                found[0],
                f"one file for the {table} table; both {found[0].name} and {found[1].name} exist "
                "(ambiguous: remove one)",
                csv=False,
            )
        files[table] = found[0]
    return files


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataContractError(
            path, f"a readable file; it could not be read ({exc.strerror or exc})", csv=False
        ) from exc


def _parse(table: str, path: Path, data: bytes) -> pd.DataFrame:
    """Parse one file's bytes into a frame of raw values; index = 0-based data-row number."""
    is_csv = path.suffix.lower() == ".csv"
    src = Source(table, path, csv=is_csv)
    if not data:
        raise src.fail("a header row and at least one data row; the file is empty (0 bytes)")
    if is_csv:
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
                raise src.fail(
                    "each column name once in the header (line 1)", column=name, got=[name]
                )
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
    else:
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises many types for corrupt input
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise src.fail(f"a readable Parquet file; it could not be read ({message})") from exc
        df = df.reset_index(drop=True)
        df.columns = [str(c) for c in df.columns]
    df = df.loc[~df.isna().all(axis=1)]  # blank lines; the index keeps the row numbers
    if len(df) == 0:
        raise src.fail("at least one data row; the file has a header but no data")
    return df


WHO5_METRICS = ("percentage", "raw")


def load_study(folder: str | Path, *, who5_metric: str = "percentage") -> RawStudy:
    """Load and validate a study folder.

    Parameters
    ----------
    folder : str or pathlib.Path
        A folder holding ``providers``, ``clients`` and ``sessions``, each as ``.csv`` or
        ``.parquet`` (exactly one file per table).
    who5_metric : {"percentage", "raw"}
        The metric of ``who5_baseline`` and ``who5_followup``: the 0–100 percentage score (the
        default, as the paper reports it), or the raw 0–25 sum of the five items, which is
        multiplied by 4 on loading (the WHO-5 manual's conversion). With ``"percentage"`` a study
        whose every WHO-5 value is at most 25 is refused: that is the raw metric, and read as a
        percentage it would break the scale and the <= 28 cut-off.

    Returns
    -------
    RawStudy
        The validated, typed tables, the files read and the SHA-256 of their bytes.

    Raises
    ------
    DataContractError
        For a missing folder or file, two files for one table, an empty, unreadable or corrupt
        file, or any breach of the contract. Nothing is written.

    Notes
    -----
    CSV files are read as UTF-8 with every column as text (so ``"007"`` stays ``"007"``); only
    empty cells are missing. Wholly blank lines are skipped but still counted for row numbers.
    """
    folder = Path(folder)
    files = _find_files(folder)
    raw = {table: _read_bytes(path) for table, path in files.items()}
    digest = hashlib.sha256()
    for table in TABLES:
        digest.update(raw[table])
    frames = {table: _parse(table, files[table], raw[table]) for table in TABLES}
    sources = {
        table: Source(table, files[table], csv=files[table].suffix.lower() == ".csv")
        for table in TABLES
    }
    providers, clients, sessions = validate_tables(frames, sources)
    clients = _who5_percentage(clients, sources["clients"], who5_metric)
    if who5_metric != "percentage":  # the same files read another way are another dataset
        digest.update(f"who5_metric={who5_metric}".encode())
    return RawStudy(
        providers=providers,
        clients=clients,
        sessions=sessions,
        folder=folder,
        files=dict(files),
        sha256=digest.hexdigest(),
    )


def _who5_percentage(clients: pd.DataFrame, src: Source, metric: str) -> pd.DataFrame:
    """WHO-5 on the percentage metric: checked, or converted from the raw metric (× 4)."""
    if metric not in WHO5_METRICS:
        raise ValueError(f"who5_metric must be one of {WHO5_METRICS}, not {metric!r}")
    columns = ["who5_baseline", "who5_followup"]
    values = clients[columns]
    if metric == "raw":
        for column in columns:
            above = values[column] > 25
            if above.any():
                raise src.fail_where(
                    above, values[column], column, "a raw WHO-5 sum score (0–25; who5_metric raw)"
                )
        return clients.assign(**{c: values[c] * 4.0 for c in columns})
    observed = values.to_numpy(dtype=float).ravel()
    observed = observed[~np.isnan(observed)]
    if len(observed) >= 10 and bool((observed <= 25).all()):
        raise src.fail(
            "WHO-5 on the 0–100 percentage metric; every value in who5_baseline and "
            "who5_followup is at most 25, which is the raw 0–25 sum score. Declare it with "
            "--who5-metric raw (Python: load_study(folder, who5_metric='raw')), which multiplies "
            "the scores by 4",
            column="who5_baseline",
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
        When the folder holds a table in the other format (the study would be ambiguous);
        nothing is written.

    Notes
    -----
    The canonical validated tables are written (every contract column, extra columns dropped,
    ``days_in_care`` and ``session_index`` filled in when derived), which is what makes a written
    study load back to equal frames. Each file is written to a temporary name and then moved into
    place.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    tables = dict(zip(TABLES, validate_study(providers, clients, sessions), strict=True))
    folder = Path(folder)
    other = FORMATS[1 - FORMATS.index(fmt)]
    clashes = [folder / f"{t}.{other}" for t in TABLES if (folder / f"{t}.{other}").exists()]
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
