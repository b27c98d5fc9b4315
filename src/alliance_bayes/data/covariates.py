r"""Declared client covariates: columns of the clients table that a regression or ratings spec may adjust for.

Age, male and days in care are built in (:data:`alliance_bayes.spec.COVARIATES`). A study
declares any other client covariate in its ``study.toml``; the clients table then holds a column
of that name::

    [covariates.diagnosis]
    type = "categorical"      # "numeric" | "binary" | "categorical"
    reference = "depression"  # the level the others are compared with (required)
    label = "Primary diagnosis"
    [covariates.employed]
    type = "binary"           # 0/1 values; or two text levels with reference = "<level>"
    [covariates.income]
    type = "numeric"

A categorical covariate may also list its levels (``levels = ["depression", "anxiety", "ptsd"]``):
a value outside them is then refused (a misspelled level never becomes a level of its own), and
the listed order is the order of its contrasts.

How each type enters a regression (:mod:`alliance_bayes.model.regression.design`):

* ``numeric`` and ``binary`` — one column, centred and divided by its sample SD, as ``age`` and
  ``male`` are; the slope ``b_<name>`` is reported per unit (for a binary covariate: the
  difference of the level coded 1, or the non-reference level, against the other).
* ``categorical`` with :math:`K` levels — :math:`K - 1` indicator columns
  :math:`d_{ik} = [\text{level}_i = k]` against the reference level, named ``<name>[<level>]``;
  the slope ``b_<name>[<level>]`` is the expected difference between that level and the reference
  at equal other predictors.

Levels name estimands (``b_diagnosis[anxiety]``), which hypotheses cite by name, so a level is
made of letters, digits, ``_``, ``.`` and ``-`` (a level such as ``major depression`` is refused,
with the rows, rather than renamed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alliance_bayes.data.instruments import unknown_keys

__all__ = [
    "COVARIATE_TYPES",
    "DERIVED_CLIENT_COLUMNS",
    "LEVEL",
    "Covariate",
    "parse_covariates",
]

#: The types a covariate may be declared with.
COVARIATE_TYPES: tuple[str, ...] = ("numeric", "binary", "categorical")
#: A covariate's name: lower case, starting with a letter (it names the estimand ``b_<name>``).
NAME = re.compile(r"[a-z][a-z0-9_]*")
#: A level of a categorical (or text-coded binary) covariate: it names ``b_<name>[<level>]``.
LEVEL = re.compile(r"[A-Za-z0-9_.\-]+")

#: Client columns of the analysis frame that are derived, not read
#: (:func:`alliance_bayes.data.frame.build_frame`), and the built-in covariates: a declared
#: covariate may not take these names, which the frame already uses.
DERIVED_CLIENT_COLUMNS: tuple[str, ...] = (
    "client", "care_type", "n_sessions", "n_providers", "male", "elevated",
    "who5_change", "phq9_change",
    "alliance", "alliance_between", "alliance_within", "alliance_n_sessions",
    *(
        f"alliance_{s}{part}"
        for s in ("goal", "bond", "task")
        for part in ("", "_between", "_within", "_n_sessions")
    ),
)  # fmt: skip

_KEYS = ("type", "label", "reference", "levels")
_EXAMPLE = '[covariates.diagnosis] with type = "categorical" and reference = "depression"'


@dataclass(frozen=True)
class Covariate:
    """One declared client covariate.

    Attributes
    ----------
    name : str
        The clients-table column, and the stem of its estimands (``b_<name>``).
    type : {"numeric", "binary", "categorical"}
        How it is read and coded (see the module docstring).
    label : str
        Its name as reported (defaults to ``name``).
    reference : str or None
        The reference level of a categorical covariate, or of a binary one coded by two text
        levels; ``None`` for a numeric covariate and a 0/1 binary one.
    levels : tuple of str
        The levels a categorical (or text-coded binary) covariate may take, when declared; empty
        when the levels are those found in the data.
    """

    name: str
    type: str
    label: str = ""
    reference: str | None = None
    levels: tuple[str, ...] = ()

    @property
    def coded(self) -> bool:
        """Whether its values are text levels (categorical, or binary with a reference)."""
        return self.type == "categorical" or (self.type == "binary" and self.reference is not None)

    @property
    def shown(self) -> str:
        """The name to report it by: its label, else its name."""
        return self.label or self.name


def _level(value: Any) -> str | None:
    """A TOML level as text (``reference = 2`` for a study coding levels by numbers), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _one(name: str, raw: Any) -> tuple[Covariate | None, list[str]]:
    """One ``[covariates.<name>]`` table as a covariate, or the problems with it."""
    where = f"[covariates.{name}]"
    if not isinstance(raw, dict):
        return None, [f"{where}: a table of {list(_KEYS)} ({_EXAMPLE}), got {raw!r}"]
    problems = []
    if not NAME.fullmatch(name):
        problems.append(f"{where}: a name in lower case letters, digits and _, starting a letter")
    problems += unknown_keys(where, raw, _KEYS)
    kind = raw.get("type")
    if kind not in COVARIATE_TYPES:
        problems.append(f"{where}.type: one of {list(COVARIATE_TYPES)}, got {kind!r}")
    label = raw.get("label", "")
    if not isinstance(label, str):
        problems.append(f"{where}.label: a text such as 'Primary diagnosis', got {label!r}")
    reference = None
    if "reference" in raw:
        reference = _level(raw["reference"])
        if kind == "numeric":
            problems.append(f"{where}.reference: only a categorical or binary covariate has one")
        elif reference is None or not LEVEL.fullmatch(reference):
            problems.append(
                f"{where}.reference: a level (letters, digits, _ . -), got {raw['reference']!r}"
            )
    elif kind == "categorical":
        problems.append(
            f"{where}.reference: required for a categorical covariate (the level the others are "
            'compared with, e.g. reference = "depression")'
        )
    levels: tuple[str, ...] = ()
    if "levels" in raw:
        given = raw["levels"]
        texts = [_level(v) for v in given] if isinstance(given, list) else [None]
        if kind not in ("categorical", "binary"):
            problems.append(f"{where}.levels: only a categorical or binary covariate has levels")
        elif not all(t is not None and LEVEL.fullmatch(t) for t in texts) or len(set(texts)) != len(
            texts
        ):
            problems.append(
                f"{where}.levels: a list of distinct levels (letters, digits, _ . -), got {given!r}"
            )
        elif kind == "binary" and len(texts) != 2:
            problems.append(f"{where}.levels: two levels for a binary covariate, got {given!r}")
        elif reference is not None and reference not in texts:
            problems.append(f"{where}.reference: one of levels {given!r}, got {reference!r}")
        else:
            levels = tuple(t for t in texts if t is not None)
            if kind == "binary" and reference is None:
                problems.append(
                    f"{where}.reference: required with levels (which of the two is the reference)"
                )
    if problems:
        return None, problems
    return Covariate(name, str(kind), label, reference, levels), []


def parse_covariates(raw: Any) -> tuple[dict[str, Covariate], list[str]]:
    """The ``[covariates]`` table of a ``study.toml``: the covariates and every problem found.

    Only the declarations are checked here; whether the name is free and the column's values fit
    the type is checked against the clients table
    (:func:`alliance_bayes.data.contract.check_tables`).
    """
    if not isinstance(raw, dict):
        return {}, [f"[covariates]: a table of [covariates.<name>] tables ({_EXAMPLE})"]
    found: dict[str, Covariate] = {}
    problems: list[str] = []
    for name, table in raw.items():
        covariate, wrong = _one(str(name), table)
        problems += wrong
        if covariate is not None:
            found[covariate.name] = covariate
    return found, problems
