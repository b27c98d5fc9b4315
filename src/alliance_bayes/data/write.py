"""Writing a study folder: the three tables, and the ``study.toml`` of what the study declares.

:func:`write_study` validates the tables (and the declarations) as :func:`~alliance_bayes.data.load.load_study`
would read them back, writes each table to a temporary name and moves it into place, and writes
``study.toml`` from the declarations (age range, provider types and reference care type, alliance
instrument, outcome instruments, covariates) so that the folder loads back to an equal study. No
TOML writer is a dependency: the file is small, and is read back through the loader's own parsers
before anything is written.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from alliance_bayes.data.alliance import SHIPPED as SHIPPED_ALLIANCE
from alliance_bayes.data.alliance import AllianceInstrument
from alliance_bayes.data.contract import AGE_RANGE, TABLES, DataContractError
from alliance_bayes.data.covariates import Covariate
from alliance_bayes.data.instruments import SHIPPED as SHIPPED_OUTCOMES
from alliance_bayes.data.instruments import Instrument
from alliance_bayes.data.load import (
    FORMATS,
    READ_FORMATS,
    STUDY_SETTINGS,
    RawStudy,
    _serialise,
    _Settings,
    _settings,
    _settings_from,
)
from alliance_bayes.data.long_export import LONG_STEM

__all__ = ["write_study"]


def write_study(
    folder: str | Path,
    providers: pd.DataFrame | RawStudy,
    clients: pd.DataFrame | None = None,
    sessions: pd.DataFrame | None = None,
    fmt: str = "csv",
    *,
    ignore_columns: Iterable[str] = (),
    outcomes: dict[str, Instrument] | None = None,
    covariates: dict[str, Covariate] | None = None,
    age_range: Iterable[float] | None = None,
    alliance: AllianceInstrument | None = None,
    provider_types: Iterable[str] | None = None,
    care_reference: str | None = None,
) -> dict[str, Path]:
    """Validate a study and write it as a study folder: its tables and its ``study.toml``.

    ``write_study(folder, study)`` writes a :class:`RawStudy` (loaded, or built with
    :meth:`RawStudy.from_frames`) with its declarations; ``write_study(folder, providers,
    clients, sessions, ...)`` writes three tables with the declarations given as keywords, which
    are those of :meth:`RawStudy.from_frames`.

    Parameters
    ----------
    folder : str or pathlib.Path
        Target folder; created if needed. Existing tables of the same format are replaced.
    providers : pandas.DataFrame or RawStudy
        The providers table, or a whole study (then give neither ``clients`` nor ``sessions``,
        nor any declaration: the study's own are written, and ``fmt`` goes by keyword).
    clients, sessions : pandas.DataFrame
        The other tables (raw or already validated, e.g. from a :class:`RawStudy`).
    fmt : {"csv", "parquet"}
        File format. CSV is written without the index, with ``"\\n"`` line ends and UTF-8, so the
        same data always give byte-identical files.
    ignore_columns : iterable of str, optional
        Columns the contract does not name that the tables may hold; they are not written.
    outcomes, covariates : dict, optional
        Declared outcome instruments and client covariates (:meth:`RawStudy.from_frames`).
    age_range : pair of numbers, optional
        The ages the clients may have; 18–100 when not given.
    alliance : AllianceInstrument, optional
        The study's declared alliance instrument, whose item columns the sessions table holds.
    provider_types : iterable of str, optional
        The study's provider types; therapist and coach when not given.
    care_reference : str, optional
        The care type that care-type contrasts are against.

    Returns
    -------
    dict of str to pathlib.Path
        The file written for each table, and under ``"settings"`` the ``study.toml`` when one
        was written.

    Raises
    ------
    ValueError
        For an unknown ``fmt``, or a declaration that no ``study.toml`` can state (one built by
        hand that the parsers would read back otherwise, e.g. a shipped outcome without its
        cut-off); nothing is written.
    TypeError
        For a study given with tables or declarations beside it, or tables missing.
    DataContractError
        When the tables break the contract under the declarations; nothing is written.
    FileExistsError
        When the folder holds a table in another format, or a long export (the study would be
        ambiguous), or a ``study.toml`` that declares otherwise than the study given, or that
        ignores columns, which the written tables do not hold (it is never overwritten: remove
        it, or write to another folder); nothing is written.

    Notes
    -----
    The canonical validated tables are written (every contract column, ignored columns dropped,
    ``days_in_care`` and ``session_index`` filled in when derived), which is what makes a written
    study load back to equal frames. The declarations that differ from the contract's (age
    range, provider types, care reference, the ``[alliance]``, ``[outcomes.<name>]`` and
    ``[covariates.<name>]`` tables) are written to ``study.toml``, which the loader's own parsers
    are checked to read back to equal declarations before anything is written; a study that
    declares nothing writes none. A ``study.toml`` already in the folder that declares the same
    is kept as it is (with its comments and ``long``; one that ignores columns is refused, since
    the written tables hold none of them and an ignored column no table holds is refused on
    loading). Each file is written to a temporary name and then moved into place.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if isinstance(providers, RawStudy):
        given = {
            "clients": clients,
            "sessions": sessions,
            "outcomes": outcomes,
            "covariates": covariates,
            "age_range": age_range,
            "alliance": alliance,
            "provider_types": provider_types,
            "care_reference": care_reference,
        }
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise TypeError(
                f"write_study(folder, study) writes the study's own tables and declarations; "
                f"got {extra} beside it (fmt goes by keyword: write_study(folder, study, "
                "fmt='parquet'))"
            )
        study = _revalidated(providers, ignore_columns)
    else:
        if clients is None or sessions is None:
            raise TypeError(
                "write_study(folder, providers, clients, sessions) needs the three tables, or "
                "write_study(folder, study) a RawStudy"
            )
        study = RawStudy.from_frames(
            providers,
            clients,
            sessions,
            ignore_columns=ignore_columns,
            outcomes=outcomes,
            covariates=covariates,
            age_range=age_range,
            alliance=alliance,
            provider_types=provider_types,
            care_reference=care_reference,
        )
    folder = Path(folder)
    target = folder / STUDY_SETTINGS
    settings_text = _study_toml(study, target)
    clashes = [
        folder / f"{t}.{other}"
        for t in TABLES
        for other in READ_FORMATS
        if other != fmt and (folder / f"{t}.{other}").exists()
    ]
    clashes += [folder / f"{LONG_STEM}.{f}" for f in READ_FORMATS]
    existing = _settings(folder) if folder.is_dir() else _Settings()
    if existing.long:
        clashes.append(folder / existing.long)
    clashes = [path for path in clashes if path.exists()]
    if clashes:
        names = ", ".join(p.name for p in clashes)
        raise FileExistsError(
            f"{folder} already holds {names}; writing {fmt} beside it would make the study "
            "ambiguous. Remove those files or write to another folder."
        )
    if existing.path is not None:
        differ = _differences(_declarations_of(existing), _declarations_of(study))
        if differ:
            raise FileExistsError(
                f"{existing.path} declares otherwise than the study given ({'; '.join(differ)}); "
                "it is not overwritten, and the tables would be read under it. Remove it, or "
                "write to another folder."
            )
        settings_text = None  # the same declarations: the user's file, comments and all, stays
        if existing.ignore:
            # the written tables hold none of the ignored columns, and an ignored column that no
            # table holds is refused on loading: the folder would not load back
            raise FileExistsError(
                f"{existing.path} declares ignore = {sorted(existing.ignore)!r}, columns the "
                "written tables do not hold (ignored columns are dropped), so the folder would "
                "not load; remove ignore from it, or write to another folder."
            )
    payloads = {table: _serialise(getattr(study, table), fmt) for table in TABLES}
    settings_bytes = None if settings_text is None else settings_text.encode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for table in TABLES:
        path = folder / f"{table}.{fmt}"
        _atomic_write(path, payloads[table])
        written[table] = path
    if settings_bytes is not None:
        _atomic_write(target, settings_bytes)
        written["settings"] = target
    return written


def _revalidated(study: RawStudy, ignore_columns: Iterable[str]) -> RawStudy:
    """A study's tables checked again under its own declarations (its frames are mutable)."""
    return RawStudy.from_frames(
        study.providers,
        study.clients,
        study.sessions,
        ignore_columns=ignore_columns,
        outcomes=study.outcomes,
        covariates=study.covariates,
        age_range=study.age_range,
        alliance=study.alliance,
        provider_types=study.care.provider_types if study.care.declared else None,
        care_reference=study.care.reference,
    )


def _declarations_of(study: RawStudy | _Settings) -> dict[str, object]:
    """What a study (or a ``study.toml``) declares, with the contract's defaults filled in, so
    that an undeclared age range equals a declared 18–100."""
    ages = study.age_range or AGE_RANGE
    return {
        "age_range": tuple(float(a) for a in ages),
        "provider_types": tuple(study.care.provider_types),
        "care_reference": study.care.reference,
        "alliance": study.alliance,
        "outcomes": dict(study.outcomes),
        "covariates": dict(study.covariates),
    }


def _differences(found: dict[str, object], given: dict[str, object]) -> list[str]:
    """In words, each declaration that ``found`` (a file) and ``given`` (the study) differ in."""
    out = []
    for key, theirs in found.items():
        ours = given[key]
        if theirs == ours:
            continue
        if isinstance(theirs, dict) and isinstance(ours, dict):
            names = sorted(n for n in {*theirs, *ours} if theirs.get(n) != ours.get(n))
            out.append(f"{key} {', '.join(names)}")
        else:
            out.append(f"{key}: the file {_shown(theirs)}, the study {_shown(ours)}")
    return out


def _shown(value: object) -> str:
    if isinstance(value, AllianceInstrument):
        return value.scale
    return "none" if value is None else repr(value)


# --------------------------------------------------------------------------------------------------
# The study's declarations as TOML
#
# No TOML writer is a dependency, and the file is small: a few keys and tables of strings,
# numbers and lists, written here and read back by the loader's own parsers before it is kept.

#: The escapes of a TOML basic string (other control characters as \uXXXX).
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    """A string, a finite number or a list of them as TOML (whole numbers without a point)."""
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):
        raise ValueError(f"no declaration takes a boolean, got {value!r}")
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if not np.isfinite(number):
            raise ValueError(f"a declared number must be finite, got {value!r}")
        # repr is the shortest text that reads back to the same float, and valid TOML
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} in a study.toml")


def _toml_table(header: str, values: dict[str, object]) -> list[str]:
    lines = ["", f"[{header}]"]
    return lines + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]


def _alliance_toml(instrument: AllianceInstrument) -> list[str]:
    if instrument.name and SHIPPED_ALLIANCE.get(instrument.name) == instrument:
        return _toml_table("alliance", {"instrument": instrument.name})
    # every key, beside a template's name too: each then replaces the template's value
    values: dict[str, object] = {"instrument": instrument.name} if instrument.name else {}
    values |= {
        "label": instrument.label,
        "range": [instrument.low, instrument.high],
        "scored": instrument.scored,
    }
    if instrument.scored == "items":
        values |= {"step": instrument.step, "reverse": list(instrument.reverse)}
    values["source"] = instrument.source
    subscales = {s: list(items) for s, items in instrument.subscales}
    return _toml_table("alliance", values) + _toml_table("alliance.subscales", subscales)[1:]


def _outcome_toml(key: str, instrument: Instrument) -> list[str]:
    header = f"outcomes.{_toml_key(key)}"
    if SHIPPED_OUTCOMES.get(key) == instrument:
        return _toml_table(header, {})  # declared by its name alone
    values: dict[str, object] = {
        "label": instrument.label,
        "range": [instrument.low, instrument.high],
        "better": instrument.better,
        "step": instrument.step,
    }
    if instrument.cutoff is not None:
        values["cutoff"] = instrument.cutoff
    if instrument.reliability is not None:
        values["reliability"] = instrument.reliability
    values["source"] = instrument.source
    return _toml_table(header, values)


def _covariate_toml(key: str, covariate: Covariate) -> list[str]:
    values: dict[str, object] = {"type": covariate.type}
    if covariate.label:
        values["label"] = covariate.label
    if covariate.reference is not None:
        values["reference"] = covariate.reference
    if covariate.levels:
        values["levels"] = list(covariate.levels)
    return _toml_table(f"covariates.{_toml_key(key)}", values)


def _study_toml(study: RawStudy, path: Path) -> str | None:
    """The ``study.toml`` that declares what ``study`` declares beyond the contract, checked to
    read back to equal declarations; None when it declares nothing.

    Raises
    ------
    ValueError
        A declaration the file cannot state so that the parsers read it back equal.
    """
    declared = _declarations_of(study)
    if declared == _declarations_of(_Settings()):
        return None
    top: list[str] = []
    if declared["age_range"] != AGE_RANGE:
        top.append(f"age_range = {_toml_value(list(declared['age_range']))}")
    if study.care.declared:
        top.append(f"provider_types = {_toml_value(list(study.care.provider_types))}")
    if study.care.reference is not None:
        top.append(f"care_reference = {_toml_value(study.care.reference)}")
    lines = [
        "# The study's declarations (docs/data.md), written with its tables by write_study.",
        *top,
    ]
    if study.alliance is not None:
        lines += _alliance_toml(study.alliance)
    for key, instrument in study.outcomes.items():
        lines += _outcome_toml(key, instrument)
    for key, covariate in study.covariates.items():
        lines += _covariate_toml(key, covariate)
    text = "\n".join(lines) + "\n"
    try:
        text.encode("utf-8")
        back = _declarations_of(_settings_from(tomllib.loads(text), path))
    except (UnicodeEncodeError, tomllib.TOMLDecodeError, DataContractError) as exc:
        raise ValueError(
            f"the study's declarations cannot be written as a study.toml: {exc}"
        ) from exc
    differ = _differences(back, declared)
    if differ:
        raise ValueError(
            "the study's declarations cannot be written as a study.toml that reads back the "
            f"same ({'; '.join(differ)}): declare them as study.toml states them "
            "(docs/data.md)"
        )
    return text


def _atomic_write(target: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
