"""Outcome instruments: the facts a follow-up regression needs about a symptom or well-being score.

An instrument named ``<name>`` gives the clients table two columns, ``<name>_baseline`` and
``<name>_followup``, and a spec may model ``outcome = "<name>_followup"``. WHO-5 and PHQ-9 are
built in (:data:`BUILT_IN`); a study declares any other in its ``study.toml``::

    [outcomes.gad7]
    label = "GAD-7"
    range = [0, 21]
    better = "lower"   # which direction is improvement
    step = 1           # the score's resolution
    cutoff = 10        # elevated at baseline (>= for better = "lower", <= for "higher")
    reliability = 0.8  # test-retest, optional, with its source
    source = "..."

An instrument shipped here (:data:`SHIPPED`: GAD-7, CORE-10, OQ-45) may be declared by its name
alone (``[outcomes.core10]``); the keys given replace the shipped values (``range = [0, 4]``,
``step = 0.1`` and ``cutoff = 1.1`` for the CORE-10 as a mean item score, for instance). A
``source`` given without a ``reliability`` drops the shipped reliability, which belongs to the
shipped source.

The declarations of the studies loaded in this process are kept by name (:func:`declare`), so that
a spec, parsed without a study, finds its outcome's range, label and units once a study that
declares it has been loaded; the design step checks that its own study declares the outcome.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "BUILT_IN",
    "DECLARED_NAME",
    "SHIPPED",
    "Instrument",
    "declare",
    "declared",
    "declared_range",
    "finite_number",
    "instrument_of",
    "parse_declarations",
    "unknown_keys",
]

#: A declared instrument's name: lower case, starting with a letter.
DECLARED_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Instrument:
    """One outcome instrument.

    Attributes
    ----------
    name : str
        The column stem (``gad7`` → ``gad7_baseline``, ``gad7_followup``).
    label : str
        The instrument's name as reported (``"GAD-7"``); its units are ``"<label> points"``.
    low, high : float
        The score's range; a censored likelihood is censored at these bounds.
    better : {"lower", "higher"}
        Which direction is improvement.
    step : float
        The score's resolution (1 for a sum of integer items); every value lies on
        ``low + k * step``.
    cutoff : float or None
        Elevated at baseline: ``>= cutoff`` when lower is better, ``<= cutoff`` when higher is.
    reliability : float or None
        Test–retest reliability, where its ``source`` reports one.
    source : str
        Where the range, cut-off and reliability come from.
    """

    name: str
    label: str
    low: float
    high: float
    better: str
    step: float = 1.0
    cutoff: float | None = None
    reliability: float | None = None
    source: str = ""

    @property
    def baseline(self) -> str:
        return f"{self.name}_baseline"

    @property
    def followup(self) -> str:
        return f"{self.name}_followup"

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def units(self) -> str:
        return f"{self.label} points"

    @property
    def outcome_label(self) -> str:
        return f"{self.label} follow-up ({self.low:g}–{self.high:g})"


#: The instruments of the contract's own columns (:mod:`alliance_bayes.data.contract`).
BUILT_IN: dict[str, Instrument] = {
    "who5": Instrument(
        "who5", "WHO-5", 0.0, 100.0, "higher", step=4.0, cutoff=28.0,
        source="WHO-5 percentage score (raw 0–25 sum × 4); Topp et al. 2015, "
        "doi:10.1159/000376585",
    ),
    "phq9": Instrument(
        "phq9", "PHQ-9", 0.0, 27.0, "lower", step=1.0, cutoff=10.0,
        source="Kroenke, Spitzer & Williams 2001, doi:10.1046/j.1525-1497.2001.016009606.x",
    ),
}  # fmt: skip

#: Instruments a study may declare by name alone; each is the sum of its items, so its step is 1
#: and higher is worse. A reliability is shipped only where the cited source reports a test–retest
#: one; otherwise a study states its own, with its source.
#:
#: * GAD-7: seven items scored 0–3, a sum of 0–21; 10 is the cut-off for moderate anxiety
#:   (Spitzer, Kroenke, Williams & Löwe 2006, doi:10.1001/archinte.166.10.1092). No reliability.
#: * CORE-10: ten items scored 0–4, a sum of 0–40; scores of 11 and above are in the clinical
#:   range (Barkham et al. 2013, Counselling and Psychotherapy Research 13(1):3–13,
#:   doi:10.1080/14733145.2012.729069). No reliability: the paper reports internal consistency,
#:   not test–retest.
#: * OQ-45 (OQ-45.2): 45 items scored 0–4, a sum of 0–180; scores of 64 and above are in the
#:   clinical range (the 63/64 cut-off), and the test–retest reliability of the total over three
#:   weeks is .84 (Lambert et al. 1996, Clinical Psychology & Psychotherapy 3(4):249–258).
SHIPPED: dict[str, Instrument] = {
    "gad7": Instrument(
        "gad7", "GAD-7", 0.0, 21.0, "lower", step=1.0, cutoff=10.0,
        source="Spitzer, Kroenke, Williams & Löwe 2006, doi:10.1001/archinte.166.10.1092",
    ),
    "core10": Instrument(
        "core10", "CORE-10", 0.0, 40.0, "lower", step=1.0, cutoff=11.0,
        source="Barkham et al. 2013, Counselling and Psychotherapy Research 13(1):3–13, "
        "doi:10.1080/14733145.2012.729069",
    ),
    "oq45": Instrument(
        "oq45", "OQ-45", 0.0, 180.0, "lower", step=1.0, cutoff=64.0, reliability=0.84,
        source="Lambert et al. 1996, Clinical Psychology & Psychotherapy 3(4):249–258, "
        "doi:10.1002/(SICI)1099-0879(199612)3:4<249::AID-CPP106>3.0.CO;2-S "
        "(test–retest over three weeks)",
    ),
}  # fmt: skip

_KEYS = ("label", "range", "better", "step", "cutoff", "reliability", "source")
_EXAMPLE = (
    '[outcomes.gad7] with label = "GAD-7", range = [0, 21], better = "lower", step = 1, '
    'cutoff = 10 (optional: reliability = 0.8, source = "...")'
)


def finite_number(value: Any) -> bool:
    """A finite ``int`` or ``float`` (not a ``bool``): what a declared number must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def declared_range(bounds: Any, where: str, problems: list[str]) -> tuple[float, float] | None:
    """A declaration's ``range = [low, high]`` (finite numbers, low < high) as floats; ``None``,
    with the problem appended to ``problems``, for anything else."""
    if (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(finite_number(v) for v in bounds)
        and bounds[0] < bounds[1]
    ):
        return float(bounds[0]), float(bounds[1])
    problems.append(f"{where}.range: [low, high] with low < high, got {bounds!r}")
    return None


def unknown_keys(where: str, raw: dict, keys: tuple[str, ...]) -> list[str]:
    """The problem with the keys of a declaration table that are not among ``keys`` (none when all
    are known), each unknown key with the known key it most resembles.

    A key is suggested as the column names are (:func:`difflib.get_close_matches` on the key in
    lower case, similarity ratio >= 0.6), so that a misspelled ``ragne`` reads as ``range``.
    """
    unknown = sorted(str(k) for k in set(raw) - set(keys))
    if not unknown:
        return []
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key.lower(), list(keys), n=1, cutoff=0.6)
        if close:
            hints.append(f"{key!r}: did you mean {close[0]!r}?")
    return [
        f"{where}: unknown key(s) {unknown}; known {list(keys)}"
        + (f" ({'; '.join(hints)})" if hints else "")
    ]


def _one(name: str, raw: Any, reserved: frozenset[str]) -> tuple[Instrument | None, list[str]]:
    """One ``[outcomes.<name>]`` table as an instrument, or every problem with it.

    Each key given is checked even when another is missing or unknown, so that one reading
    reports them all.
    """
    where = f"[outcomes.{name}]"
    if not isinstance(raw, dict):
        return None, [f"{where}: a table of {list(_KEYS)}, got {raw!r}"]
    problems = []
    if not DECLARED_NAME.fullmatch(name):
        problems.append(f"{where}: a name in lower case letters, digits and _, starting a letter")
    if name in BUILT_IN:
        problems.append(f"{where}: {name} is built in and cannot be declared again")
    for column in (f"{name}_baseline", f"{name}_followup"):
        if column in reserved and name not in BUILT_IN:
            problems.append(f"{where}: the column {column} is already a contract column")
    problems += unknown_keys(where, raw, _KEYS)
    base = SHIPPED.get(name)
    missing = [k for k in ("label", "range", "better") if k not in raw and base is None]
    if missing:
        problems.append(f"{where}: {missing} required (e.g. {_EXAMPLE})")
    values: dict[str, Any] = {}
    label = raw.get("label", base.label if base else "GAD-7")  # missing: reported above
    if not (isinstance(label, str) and label.strip()):
        problems.append(f"{where}.label: a non-empty text such as 'GAD-7', got {label!r}")
    values["label"] = label
    bounds = raw.get("range", list(base.range) if base else None)
    ranged = bounds is not None and declared_range(bounds, where, problems) is not None
    values["low"], values["high"] = (float(bounds[0]), float(bounds[1])) if ranged else (0.0, 1.0)
    better = raw.get("better", base.better if base else "lower")
    if better not in ("lower", "higher"):
        problems.append(f"{where}.better: 'lower' or 'higher', got {better!r}")
    values["better"] = better
    step = raw.get("step", base.step if base else 1.0)
    if not (finite_number(step) and step > 0):
        problems.append(f"{where}.step: a number > 0, got {step!r}")
    values["step"] = float(step) if finite_number(step) else 1.0
    cutoff = raw.get("cutoff", base.cutoff if base else None)
    if cutoff is not None:
        # checked against the range only when there is a valid range to check it with
        inside = finite_number(cutoff) and (not ranged or values["low"] <= cutoff <= values["high"])
        if not inside:
            problems.append(f"{where}.cutoff: a number within the range, got {cutoff!r}")
    values["cutoff"] = float(cutoff) if finite_number(cutoff) else None
    # a shipped reliability is its shipped source's: another source given without a reliability
    # would otherwise be cited for a number it never reported
    shipped = base.reliability if base and "source" not in raw else None
    reliability = raw.get("reliability", shipped)
    if reliability is not None and not (finite_number(reliability) and 0 < reliability < 1):
        problems.append(f"{where}.reliability: a number in (0, 1), got {reliability!r}")
    values["reliability"] = float(reliability) if finite_number(reliability) else None
    source = raw.get("source", base.source if base else "")
    if not isinstance(source, str):
        problems.append(f"{where}.source: a text, got {source!r}")
    values["source"] = source
    if values["reliability"] is not None and not str(source).strip():
        problems.append(f"{where}: a reliability needs its source (source = '...')")
    elif (
        "reliability" in raw
        and "source" not in raw
        and base is not None
        and raw["reliability"] != base.reliability
    ):
        # the template's source reports another reliability, or none: citing it would be wrong
        reported = (
            f"reports {base.reliability:g}" if base.reliability is not None else "reports none"
        )
        problems.append(
            f"{where}: a reliability of your own needs its source (source = '...'); the shipped "
            f"{base.label}'s source {reported}"
        )
    if problems:
        return None, problems
    if base is not None:
        return replace(base, **values), []
    return Instrument(name=name, **values), []


def parse_declarations(
    raw: Any, reserved: frozenset[str] = frozenset()
) -> tuple[dict[str, Instrument], list[str]]:
    """The ``[outcomes]`` table of a ``study.toml``: the instruments and every problem found.

    ``reserved`` are the contract's own column names, which a declared column may not take.
    """
    if not isinstance(raw, dict):
        return {}, [f"[outcomes]: a table of [outcomes.<name>] tables ({_EXAMPLE}), got {raw!r}"]
    found: dict[str, Instrument] = {}
    problems: list[str] = []
    for name, table in raw.items():
        instrument, wrong = _one(str(name), table, reserved)
        problems += wrong
        if instrument is not None:
            found[instrument.name] = instrument
    return found, problems


#: Instruments declared by the studies loaded in this process, by name (the latest wins).
_DECLARED: dict[str, Instrument] = {}


def declare(instruments: Mapping[str, Instrument]) -> None:
    """Make declared instruments known to specs (a study's declarations, on loading or design)."""
    _DECLARED.update(instruments)


def declared() -> dict[str, Instrument]:
    """The instruments declared so far in this process (built-in ones excluded)."""
    return dict(_DECLARED)


def instrument_of(outcome: str) -> Instrument | None:
    """The instrument of a follow-up column (``"gad7_followup"``), built in or declared; or None."""
    if not outcome.endswith("_followup"):
        return None
    name = outcome.removesuffix("_followup")
    return BUILT_IN.get(name) or _DECLARED.get(name)
