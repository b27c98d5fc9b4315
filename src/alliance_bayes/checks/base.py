"""The one result type of the package's checks.

Every check (model comparison, prior sensitivity, robustness, the engine check against NumPyro,
simulation-based calibration, the scale check, parameter recovery) returns a
:class:`CheckResult`: whether it passed (``None`` for a check that informs without a pass/fail
criterion, such as a model comparison), its main table, a short text in words, the folder or file
it wrote, and what else it found. The command line turns ``passed`` into the exit code
(:data:`~alliance_bayes.cli.EXIT_CHECK_FAILED` for ``False``), so every check is read the same
way by a person, a script and CI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["CheckResult"]


@dataclass(frozen=True, repr=False)
class CheckResult:
    """What a check found.

    Attributes
    ----------
    check : str
        The check's name: ``"compare"``, ``"sensitivity"``, ``"robustness"``, ``"engine"``,
        ``"sbc"``, ``"scale"`` or ``"recovery"``.
    passed : bool or None
        True when the check passed, False when it failed, None when it has no pass/fail
        criterion (it informs a judgement, as a model comparison does).
    table : pandas.DataFrame or None
        The check's main table (one row per model, estimand or quantity).
    text : str
        A short summary in words (Markdown), as the command line prints it.
    path : pathlib.Path or None
        The folder or file the check wrote, if any.
    details : mapping
        Whatever else the check found, by name (further tables, counts, settings).
    """

    check: str
    passed: bool | None = None
    table: pd.DataFrame | None = None
    text: str = ""
    path: Path | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"passed"``, ``"failed"`` or ``"informative"`` (no pass/fail criterion)."""
        return {True: "passed", False: "failed", None: "informative"}[self.passed]

    def __repr__(self) -> str:
        parts = [f"check={self.check!r}", f"verdict={self.verdict!r}"]
        if self.table is not None:
            parts.append(f"table={len(self.table)} rows × {self.table.shape[1]} columns")
        if self.path is not None:
            parts.append(f"path={str(self.path)!r}")
        if self.details:
            parts.append(f"details={sorted(self.details)}")
        return f"CheckResult({', '.join(parts)})"

    def __str__(self) -> str:
        where = f" (written to {self.path})" if self.path is not None else ""
        head = f"{self.check}: {self.verdict}{where}"
        return f"{head}\n{self.text}" if self.text else head
