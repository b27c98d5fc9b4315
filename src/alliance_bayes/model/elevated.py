r"""Which clients a spec's ``sample = "elevated"`` keeps, in every model family.

The clients whose baseline lies beyond the cut-off of the outcome ``[data] elevated_by`` names,
on its worse side (:func:`~alliance_bayes.data.frame.elevated_at_baseline`): the built-in rules
``"who5"`` (WHO-5 baseline :math:`\le` ``who5_cutoff``), ``"phq9"`` (PHQ-9 baseline :math:`\ge`
``phq9_cutoff``) and ``"phq9_else_who5"`` (the PHQ-9 rule where a PHQ-9 baseline exists, else the
WHO-5 one), with the spec's own cut-offs; or an outcome the study declares (``elevated_by =
"gad7"``), with its declared ``cutoff``: :math:`\ge` where lower is better, :math:`\le` where
higher is. A client without the baseline score is not elevated.

A rule reading an outcome the study never measured would leave no client, or only those of the
fallback; it is refused instead, naming the outcomes the study measured and how to choose one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from alliance_bayes.data.frame import AnalysisFrame, elevated_at_baseline
from alliance_bayes.data.instruments import BUILT_IN
from alliance_bayes.errors import DesignError
from alliance_bayes.spec import ModelSpec

__all__ = ["elevated_sample"]

#: The outcomes each built-in rule reads at baseline; a rule needs one of them measured.
_RULE_READS = {"who5": ("who5",), "phq9": ("phq9",), "phq9_else_who5": ("phq9", "who5")}


def elevated_sample(
    spec: ModelSpec, frame: AnalysisFrame, clients: pd.DataFrame | None = None
) -> np.ndarray:
    """The clients of ``frame`` (or the rows ``clients`` of its clients table) elevated at
    baseline under the spec's ``[data]`` rule and cut-offs (not the frame's own flag, which the
    frame was built with): a boolean per client.

    Raises
    ------
    DesignError
        The rule reads no outcome the study measured at baseline (the default, WHO-5, on a study
        without it), names no built-in rule nor declared outcome, or names a declared outcome
        without a ``cutoff``; the message names the spec, the outcomes the study measured at
        baseline and how to choose one.
    """
    rule = spec.data.elevated_by
    reads = _RULE_READS.get(rule, (rule,))
    if not any(_measured_baseline(frame, name) for name in reads):
        raise DesignError(
            f"spec {spec.name!r}: sample = 'elevated' selects the clients elevated at baseline by "
            f"[data] elevated_by = {rule!r}, but this study did not measure "
            f"{' or '.join(_instrument_label(frame, n) for n in reads)} at baseline; "
            + _choices(spec, frame)
        )
    try:
        flag, _ = elevated_at_baseline(
            frame.clients if clients is None else clients,
            rule,
            who5_cutoff=spec.data.who5_cutoff,
            phq9_cutoff=spec.data.phq9_cutoff,
            outcomes=frame.outcomes,
        )
    except DesignError as e:
        where = frame.outcomes_declared_in or "the study"
        raise DesignError(f"spec {spec.name!r}: {e} (in {where})") from None
    return np.asarray(flag, dtype=bool)


def _measured_baseline(frame: AnalysisFrame, name: str) -> bool:
    """Whether some client has a baseline score on the outcome ``name``."""
    column = f"{name}_baseline"
    known = name in ("who5", "phq9") or name in frame.outcomes
    return known and column in frame.clients and bool(frame.clients[column].notna().any())


def _instrument_label(frame: AnalysisFrame, name: str) -> str:
    """``"WHO-5 ('who5')"``, ``"GAD-7 ('gad7')"``, or the name of an outcome the study does not
    declare."""
    found = frame.outcomes.get(name) or BUILT_IN.get(name)
    return f"{found.label} ({name!r})" if found else f"{name!r} (no such outcome)"


def _choices(spec: ModelSpec, frame: AnalysisFrame) -> str:
    """The outcomes the study measured at baseline, and how the spec may choose one of them."""
    declared = [n for n, i in frame.outcomes.items() if i.cutoff is not None]
    measured = [n for n in ("phq9", "who5", *declared) if _measured_baseline(frame, n)]
    if not measured:
        return f"it measured no outcome with a cut-off: set [data] sample = 'all' in {spec.name!r}"
    listed = ", ".join(_instrument_label(frame, n) for n in measured)
    return (
        f"it measured {listed}: choose one with [data] elevated_by = {measured[0]!r} in "
        f"{spec.name!r}, or set [data] sample = 'all'"
    )
