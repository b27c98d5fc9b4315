"""The package's errors: every public exception, in one module at the ground floor.

Each is raised where its rule lives (the data contract by :mod:`alliance_bayes.data.contract`, a
spec by :mod:`alliance_bayes.spec`, a design by the families' ``prepare``) and caught where
it is reported (:mod:`alliance_bayes.cli`); defining them here lets every layer raise and catch
them without importing the layer that first needed them. The old homes re-export them, so
``from alliance_bayes.data.contract import DataContractError`` keeps working.

All but :class:`PredictionNotImplemented` are :class:`ValueError`: the input (data, spec,
hypothesis, bundle) is what is wrong, and ``except ValueError`` catches them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DataContractError",
    "DesignError",
    "HypothesisError",
    "IncompatibleBundleError",
    "PredictionNotImplemented",
    "SpecError",
]

#: Offending rows and values a message shows before it says how many more there are.
_MAX_SHOWN = 5


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
class DataContractError(ValueError):
    """Input that breaks the data contract: one problem, or several found together.

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
    problems : sequence of DataContractError, optional
        Every problem found, when there are several (see :meth:`of`); the other arguments then
        describe the first of them.

    Attributes
    ----------
    file, column, rows, expected, got
        As above, for the (first) problem; ``rows`` is a list of int, ``got`` a list.
    problems : list of DataContractError
        Every problem found, in the order found; ``[self]`` for a single problem.
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
        problems: Sequence[DataContractError] = (),
    ) -> None:
        self.file = file
        self.column = column
        self.rows = [int(r) for r in rows]
        self.expected = expected
        self.got = list(got)
        self.csv = str(file).lower().endswith(".csv") if csv is None else csv
        self.problems = list(problems) if len(problems) > 1 else [self]
        super().__init__(self._message() if len(self.problems) == 1 else self._grouped())

    @classmethod
    def of(cls, problems: Sequence[DataContractError]) -> DataContractError:
        """One error reporting every problem in ``problems`` (the error itself when only one)."""
        flat = [q for p in problems for q in p.problems]
        if len(flat) == 1:
            return flat[0]
        first = flat[0]
        return cls(
            first.file,
            first.expected,
            column=first.column,
            rows=first.rows,
            got=first.got,
            csv=first.csv,
            problems=flat,
        )

    def _where(self) -> list[str]:
        """Column and rows (with CSV lines) of this problem, as message parts."""
        where = []
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
        return where

    def _what(self) -> str:
        message = f"expected {self.expected}"
        if self.got:
            shown_got = ", ".join(_show(v) for v in self.got[:_MAX_SHOWN])
            if len(self.got) > _MAX_SHOWN:
                shown_got += ", ..."
            message += f"; got {shown_got}"
        return message

    def _message(self) -> str:
        return f"{', '.join([str(self.file), *self._where()])}: {self._what()}"

    def _grouped(self) -> str:
        """Every problem, grouped by file (in the order found) and by column within a file."""
        by_file: dict[str, list[DataContractError]] = {}
        for problem in self.problems:
            by_file.setdefault(str(problem.file), []).append(problem)
        lines = [
            f"{len(self.problems)} problems with the study data, all listed (fix them all, then "
            "load again):"
        ]
        for file, found in by_file.items():
            order = list(dict.fromkeys(p.column for p in found))
            lines.append(f"{file}:")
            for problem in sorted(found, key=lambda p: order.index(p.column)):
                where = ", ".join(problem._where())
                lines.append(f"  {where}: {problem._what()}" if where else f"  {problem._what()}")
        return "\n".join(lines)

    def __reduce__(self):  # keep the exception picklable (multiprocessing, pytest-xdist)
        return (
            _rebuild_error,
            (
                self.file,
                self.expected,
                self.column,
                self.rows,
                self.got,
                self.csv,
                self.problems if len(self.problems) > 1 else [],
            ),
        )


def _rebuild_error(file, expected, column, rows, got, csv, problems=()) -> DataContractError:
    return DataContractError(
        file, expected, column=column, rows=rows, got=got, csv=csv, problems=problems
    )


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
# Specification, design and results
# --------------------------------------------------------------------------------------------------
class SpecError(ValueError):
    """A model specification is invalid; the message names the file, the key and what was expected."""


class HypothesisError(ValueError):
    """A hypothesis expression cannot be read; the message says where and what was expected."""


class DesignError(ValueError):
    """The data cannot support the model as specified (e.g. no client left after filtering)."""


class IncompatibleBundleError(ValueError):
    """A results bundle written by a package version this one cannot read faithfully."""


class PredictionNotImplemented(NotImplementedError):
    """The model's family has no NumPy posterior predictive (``latent``, ``ratings``, ``change``)."""
