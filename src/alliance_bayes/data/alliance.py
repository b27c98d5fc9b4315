"""A study's alliance instrument: which session columns hold the alliance, on what scale, how scored.

Without a declaration the contract's own columns hold: ``wai_goal``, ``wai_bond`` and optionally
``wai_task``, one integer rating 1–5 per subscale and session
(:mod:`alliance_bayes.data.contract`). A study that rates the alliance with another instrument
declares it in its ``study.toml``, by a shipped template's name (:data:`SHIPPED`)::

    [alliance]
    instrument = "wai_sr"      # the 12 WAI-SR items, wai_sr_1 … wai_sr_12, rated 1–5

or by hand::

    [alliance]
    label = "WAI-S"
    range = [1, 7]
    scored = "items"           # rows hold item ratings; "subscales": pre-scored subscale means
    # step = 1                 # the items' resolution (1: whole numbers; the SRS's 0.1)
    # reverse = ["item_7"]     # negatively worded items, scored low + high − rating
    source = "Tracey & Kokotovic 1989, doi:10.1037/1040-3590.1.3.207"
    [alliance.subscales]
    goal = ["item_4", "item_6", "item_10", "item_11"]
    bond = ["item_3", "item_5", "item_7", "item_9"]
    task = ["item_1", "item_2", "item_8", "item_12"]   # optional

A key given beside ``instrument`` replaces the template's value (``[alliance.subscales]`` replaces
the whole mapping: a study whose export numbers or names its items otherwise maps its own columns,
or declares ``scored = "subscales"`` with one pre-scored column per subscale, e.g.
``goal = ["wai_goal"]`` holding means such as 4.25).

The subscales are the models' own: ``goal`` and ``bond`` (required: the composite alliance is
their mean, as in the paper) and ``task`` (optional). An instrument whose parts have other names
is mapped onto them: the shipped SRS template maps *relationship* to bond, *goals and topics* to
goal and *approach or method* to task; its fourth, *overall* item is no subscale of the models
(declare it ignored, ``ignore = ["srs_overall"]``).

How the declaration is used:

* loading (:func:`alliance_bayes.data.contract.check_tables`) checks every item column (present,
  numbers within the range, on the step's grid when ``scored = "items"``), every problem at once;
  the declared columns are the sessions table's alliance columns (the contract's ``wai_*`` names
  are then columns like any other, refused unless declared as items or ignored);
* the frame (:func:`alliance_bayes.data.frame.build_frame`) scores each session's subscale as the
  mean of its rated items (reversed items turned first), counting the sessions where some but not
  all of a subscale's items were rated (:attr:`AllianceInstrument.items` of a subscale);
* the averaged-score (regression) models take any range: slopes are per point of the declared
  scale and the priors on alliance slopes are scaled by :attr:`AllianceInstrument.prior_factor`
  (:func:`alliance_bayes.spec.scale_alliance_priors`);
* the graded-response families (latent, ratings) model integer items on any whole-number range
  of at least three categories (1–5, 1–7, 0–6: one category per value), one per subscale
  (:attr:`AllianceInstrument.single_integer_ratings`) or several, each with its own cut-points
  and discrimination, a reversed one turned (:mod:`alliance_bayes.model.items`), and refuse a
  finer step and pre-scored means.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from alliance_bayes.data.instruments import declared_range, finite_number, unknown_keys

__all__ = [
    "CONTRACT_RANGE",
    "SCORED",
    "SHIPPED",
    "SUBSCALES",
    "AllianceInstrument",
    "RecordedScale",
    "parse_alliance",
]

#: The models' subscales, in order; ``goal`` and ``bond`` are required (the composite is their
#: mean), ``task`` is optional.
SUBSCALES: tuple[str, ...] = ("goal", "bond", "task")
REQUIRED_SUBSCALES: tuple[str, ...] = ("goal", "bond")
#: How the session rows hold the alliance: item ratings, or pre-scored subscale means.
SCORED: tuple[str, ...] = ("items", "subscales")
#: The contract's own alliance scale (one integer 1–5 rating per subscale): the scale the prior
#: scales of :class:`~alliance_bayes.spec.PriorSpec` are stated on.
CONTRACT_RANGE: tuple[float, float] = (1.0, 5.0)


@dataclass(frozen=True)
class AllianceInstrument:
    """A declared alliance instrument.

    Attributes
    ----------
    name : str
        The shipped template's name (``"wai_sr"``), or ``""`` for one declared by hand.
    label : str
        Its name as reported (``"WAI-SR"``).
    low, high : float
        The range of an item rating (``scored = "items"``) or of a subscale mean
        (``"subscales"``); a subscale score, the mean of its items, lies in it too.
    scored : {"items", "subscales"}
        Whether a session row holds item ratings (each on ``low + k * step``), or pre-scored
        subscale means (one column per subscale, any number within the range).
    subscales : tuple of (str, tuple of str)
        Each subscale of :data:`SUBSCALES` it measures, with its session columns, in that order.
    step : float
        The items' resolution (1: whole numbers); unused when ``scored = "subscales"``.
    reverse : tuple of str
        Negatively worded items, scored ``low + high - rating`` before averaging.
    source : str
        Where the items, their subscales and the range come from.
    """

    name: str
    label: str
    low: float
    high: float
    scored: str
    subscales: tuple[tuple[str, tuple[str, ...]], ...]
    step: float = 1.0
    reverse: tuple[str, ...] = ()
    source: str = ""

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def scale(self) -> str:
        """The scale in words, ``"WAI-S 1–7"``."""
        return f"{self.label} {self.low:g}–{self.high:g}"

    @property
    def measured(self) -> tuple[str, ...]:
        """The subscales it measures (goal and bond, and task when declared)."""
        return tuple(s for s, _ in self.subscales)

    def items(self, subscale: str) -> tuple[str, ...]:
        """The session columns of one subscale (empty when it is not measured)."""
        return dict(self.subscales).get(subscale, ())

    @property
    def columns(self) -> tuple[str, ...]:
        """Every session column it declares, subscale by subscale."""
        return tuple(c for _, items in self.subscales for c in items)

    @property
    def single_integer_ratings(self) -> bool:
        """Whether it is what the graded-response families model: one item rating per subscale
        on whole numbers from ``low`` to ``high`` (step 1, both ends integers), at least three
        categories, none reversed; each value is one category of the graded-response model."""
        return (
            self.scored == "items"
            and self.step == 1.0
            and float(self.low).is_integer()
            and float(self.high).is_integer()
            and self.high - self.low >= 2
            and not self.reverse
            and all(len(items) == 1 for _, items in self.subscales)
        )

    @property
    def single_ratings_1_to_5(self) -> bool:
        """Whether it is the contract's own kind of item: one integer 1–5 rating per subscale
        (as ``wai_goal``, ``wai_bond``, ``wai_task``), whose session scores stay integers."""
        return self.single_integer_ratings and self.range == CONTRACT_RANGE

    @property
    def prior_factor(self) -> float:
        """What the prior scales stated per point of the 1–5 scale are multiplied by: 4 over the
        width of the declared range (0.4 for a 0–10 scale, 2/3 for 1–7), so that a slope across
        the whole scale has the same prior on every instrument."""
        return (CONTRACT_RANGE[1] - CONTRACT_RANGE[0]) / (self.high - self.low)

    def describe(self) -> str:
        """One line: the instrument, its items and how a session's subscale is scored."""
        parts = "; ".join(f"{s}: {', '.join(items)}" for s, items in self.subscales)
        how = (
            "each session's subscale score is the mean of its rated items"
            if self.scored == "items"
            else "each session row holds pre-scored subscale means"
        )
        return f"{self.scale} ({parts}); {how}"

    def to_dict(self) -> dict[str, Any]:
        """The declaration as JSON-ready data (``run.json``: ``scales.alliance_instrument``)."""
        return {
            "instrument": self.name or None,
            "label": self.label,
            "range": [self.low, self.high],
            "scale": self.scale,
            "scored": self.scored,
            "step": self.step,
            "subscales": {s: list(items) for s, items in self.subscales},
            "reverse": list(self.reverse),
            "source": self.source,
            "prior_factor": self.prior_factor,
        }


@dataclass(frozen=True)
class RecordedScale:
    """The alliance scale a fit was on, as its design's scales record it (``run.json``:
    ``scales.alliance_instrument``, :meth:`AllianceInstrument.to_dict`): the declared
    instrument's, or the contract's 1–5 items where the study declares none.

    Attributes
    ----------
    name : str
        The scale in words: ``"1–5"``, ``"WAI-S 1–7"``.
    low, high : float
        Its range.
    prior_factor : float
        What the priors per alliance point were multiplied by (:attr:`AllianceInstrument.prior_factor`;
        1 on the contract's items).
    record : dict
        The declaration as recorded; empty for the contract's items.
    """

    name: str = "1–5"
    low: float = CONTRACT_RANGE[0]
    high: float = CONTRACT_RANGE[1]
    prior_factor: float = 1.0
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def declared(self) -> bool:
        """Whether the study declared its alliance instrument."""
        return bool(self.record)

    @classmethod
    def of(cls, scales: Mapping[str, Any] | None) -> RecordedScale:
        """The scale a design's ``scales`` (or ``run.json``'s) record."""
        record = dict((scales or {}).get("alliance_instrument") or {})
        if not record:
            return cls()
        low, high = (float(b) for b in record["range"])
        factor = float(record.get("prior_factor", 1.0))
        return cls(str(record["scale"]), low, high, factor, record)


def _numbered(stem: str, numbers: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"{stem}{n}" for n in numbers)


#: Instruments a study may declare by name alone (``instrument = "<name>"``).
#:
#: * ``wai_sr`` — Working Alliance Inventory, Short Revised: 12 items rated 1 (seldom) to 5
#:   (always), none reverse-keyed; goal items 4, 6, 8, 11, bond 3, 5, 7, 9, task 1, 2, 10, 12
#:   (Hatcher & Gillaspy 2006, Psychotherapy Research 16(1):12–25,
#:   doi:10.1080/10503300500352500). Columns ``wai_sr_1`` … ``wai_sr_12`` in the published order.
#: * ``wai_s`` — Working Alliance Inventory, short form: 12 of the 36 WAI items, four per
#:   subscale, rated 1 (never) to 7 (always) (Tracey & Kokotovic 1989, Psychological Assessment
#:   1(3):207–210, doi:10.1037/1040-3590.1.3.207). The template names its columns by subscale
#:   (``wai_s_goal_1`` … ``wai_s_task_4``), not by item number: a study maps a numbered export
#:   with ``[alliance.subscales]`` by its form's scoring key, and declares its negatively worded
#:   items in ``reverse`` unless the export holds them reverse-scored already.
#: * ``srs`` — Session Rating Scale: four 10-cm visual analogue lines scored 0–10 (to the
#:   millimetre, so in steps of 0.1): relationship, goals and topics, approach or method, and
#:   overall (Duncan et al. 2003, Journal of Brief Therapy 3(1):3–12). Mapped onto the models'
#:   subscales as relationship → bond (``srs_relationship``), goals and topics → goal
#:   (``srs_goals``) and approach or method → task (``srs_approach``); the overall item is no
#:   subscale of the models and is not read (declare ``srs_overall`` ignored).
SHIPPED: dict[str, AllianceInstrument] = {
    "wai_sr": AllianceInstrument(
        "wai_sr", "WAI-SR", 1.0, 5.0, "items",
        (
            ("goal", _numbered("wai_sr_", (4, 6, 8, 11))),
            ("bond", _numbered("wai_sr_", (3, 5, 7, 9))),
            ("task", _numbered("wai_sr_", (1, 2, 10, 12))),
        ),
        source="Hatcher & Gillaspy 2006, Psychotherapy Research 16(1):12–25, "
        "doi:10.1080/10503300500352500 (12 items rated 1–5; goal 4, 6, 8, 11; bond 3, 5, 7, 9; "
        "task 1, 2, 10, 12)",
    ),
    "wai_s": AllianceInstrument(
        "wai_s", "WAI-S", 1.0, 7.0, "items",
        tuple((s, _numbered(f"wai_s_{s}_", (1, 2, 3, 4))) for s in SUBSCALES),
        source="Tracey & Kokotovic 1989, Psychological Assessment 1(3):207–210, "
        "doi:10.1037/1040-3590.1.3.207 (12 items, four per subscale, rated 1–7)",
    ),
    "srs": AllianceInstrument(
        "srs", "SRS", 0.0, 10.0, "items",
        (("goal", ("srs_goals",)), ("bond", ("srs_relationship",)), ("task", ("srs_approach",))),
        step=0.1,
        source="Duncan et al. 2003, Journal of Brief Therapy 3(1):3–12 (four 0–10 visual "
        "analogue items; relationship → bond, goals and topics → goal, approach or method → "
        "task; the overall item is not a subscale here)",
    ),
}  # fmt: skip

_KEYS = ("instrument", "label", "range", "scored", "step", "reverse", "subscales", "source")
_EXAMPLE = (
    '[alliance] with instrument = "wai_sr" (shipped: ' + ", ".join(SHIPPED) + "), or label, "
    'range = [low, high], scored = "items" or "subscales" and [alliance.subscales] mapping goal, '
    'bond (and task) to their columns, e.g. goal = ["item_4", "item_6"]'
)


def _subscales(
    raw: Any, scored: str, reserved: frozenset[str]
) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], list[str]]:
    """The ``[alliance.subscales]`` table in the models' order, and every problem with it."""
    where = "[alliance.subscales]"
    if not isinstance(raw, dict):
        return (), [
            f"{where}: a table mapping goal, bond (and task) to lists of columns, got {raw!r}"
        ]
    problems = []
    unknown = [s for s in raw if s not in SUBSCALES]
    if unknown:
        problems.append(
            f"{where}: unknown subscale(s) {unknown}; the models' subscales are "
            f"{list(SUBSCALES)} (map an instrument's own parts onto them)"
        )
    missing = [s for s in REQUIRED_SUBSCALES if s not in raw]
    if missing:
        problems.append(
            f"{where}: {missing} required (the composite alliance is the mean of goal and bond)"
        )
    found: list[tuple[str, tuple[str, ...]]] = []
    owner: dict[str, str] = {}
    for s in SUBSCALES:
        if s not in raw:
            continue
        items = raw[s]
        if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
            problems.append(f"{where}.{s}: a list of column names, got {items!r}")
            continue
        if not items:
            problems.append(f"{where}.{s}: a subscale with no items (list its columns)")
            continue
        blank = [c for c in items if not c.strip()]
        if blank:
            problems.append(f"{where}.{s}: column names that are not blank, got {items!r}")
        repeated = sorted({c for c in items if items.count(c) > 1})
        if repeated:
            problems.append(f"{where}.{s}: each column once, got {repeated} more than once")
        taken = [c for c in dict.fromkeys(items) if c in reserved]
        if taken:
            problems.append(
                f"{where}.{s}: {taken} already a contract column (an item is a sessions-table "
                "column of its own)"
            )
        for c in dict.fromkeys(items):
            if c in owner:
                problems.append(
                    f"{where}: the item {c!r} is in two subscales ({owner[c]} and {s}); each "
                    "item belongs to one"
                )
            owner.setdefault(c, s)
        if scored == "subscales" and len(items) != 1:
            problems.append(
                f"{where}.{s}: one column (its pre-scored mean) with scored = 'subscales', "
                f"got {len(items)}"
            )
        found.append((s, tuple(dict.fromkeys(items))))
    return tuple(found), problems


def parse_alliance(
    raw: Any, reserved: frozenset[str] = frozenset()
) -> tuple[AllianceInstrument | None, list[str]]:
    """The ``[alliance]`` table of a ``study.toml``: the instrument, or every problem found.

    ``reserved`` are column names an item may not take (the contract's columns but its alliance
    items ``wai_goal``, ``wai_bond``, ``wai_task``, which a declaration may name as its own).
    """
    where = "[alliance]"
    if not isinstance(raw, dict):
        return None, [f"{where}: a table ({_EXAMPLE}), got {raw!r}"]
    problems = unknown_keys(where, raw, _KEYS)
    base = None
    if "instrument" in raw:
        name = raw["instrument"]
        base = SHIPPED.get(name) if isinstance(name, str) else None
        if base is None:
            close = difflib.get_close_matches(str(name).lower(), list(SHIPPED), n=1, cutoff=0.6)
            problems.append(
                f"{where}.instrument: one of {list(SHIPPED)}, or none with the instrument "
                f"declared by hand (label, range, [alliance.subscales]); got {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    else:
        missing = [k for k in ("label", "range", "subscales") if k not in raw]
        if missing:
            problems.append(f"{where}: {missing} required without instrument = '...' ({_EXAMPLE})")
    # every key given is checked, whatever else is wrong, so that one reading reports them all;
    # a key neither given nor in a valid template was reported above
    label = raw.get("label", base.label if base else "WAI-S")
    if not (isinstance(label, str) and label.strip()):
        problems.append(f"{where}.label: a non-empty text such as 'WAI-S', got {label!r}")
    bounds = raw.get("range", list(base.range) if base else None)
    low, high = CONTRACT_RANGE
    if bounds is not None:
        low, high = declared_range(bounds, where, problems) or CONTRACT_RANGE
    scored = raw.get("scored", base.scored if base else "items")
    if scored not in SCORED:
        problems.append(f"{where}.scored: one of {list(SCORED)}, got {scored!r}")
        scored = "items"
    step = raw.get("step", base.step if base else 1.0)
    if not (finite_number(step) and step > 0):
        problems.append(f"{where}.step: a number > 0, got {step!r}")
        step = 1.0
    elif "step" in raw and scored == "subscales":
        problems.append(
            f"{where}.step: only item ratings have a step (scored = 'subscales' holds means)"
        )
    elif scored == "items" and bounds is not None:
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-6:
            problems.append(
                f"{where}.step: the range {low:g}–{high:g} must be a whole number of steps, "
                f"got step = {step!r}"
            )
    subscale_problems: list[str] = []
    subscales: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if "subscales" in raw:
        subscales, subscale_problems = _subscales(raw["subscales"], scored, reserved)
        problems += subscale_problems
    elif base is not None:
        subscales = base.subscales
        if scored == "subscales" and any(len(items) != 1 for _, items in subscales):
            problems.append(
                f"{where}.scored: 'subscales' needs [alliance.subscales] naming one pre-scored "
                f"column per subscale (the {base.label} template lists its items)"
            )
    reverse = raw.get("reverse", list(base.reverse) if base else [])
    items = {c for _, cs in subscales for c in cs}
    if not (isinstance(reverse, list) and all(isinstance(c, str) for c in reverse)):
        problems.append(f"{where}.reverse: a list of item columns, got {reverse!r}")
        reverse = []
    elif reverse and scored == "subscales":
        problems.append(f"{where}.reverse: only item ratings are reversed, not subscale means")
    elif subscales and not subscale_problems and [c for c in reverse if c not in items]:
        problems.append(
            f"{where}.reverse: items of [alliance.subscales], got "
            f"{[c for c in reverse if c not in items]}"
        )
    source = raw.get("source", base.source if base else "")
    if not isinstance(source, str):
        problems.append(f"{where}.source: a text, got {source!r}")
    if problems:
        return None, problems
    values = {
        "label": label.strip(),
        "low": low,
        "high": high,
        "scored": scored,
        "subscales": subscales,
        "step": float(step),
        "reverse": tuple(dict.fromkeys(reverse)),
        "source": source,
    }
    if base is not None:
        return replace(base, **values), []
    return AllianceInstrument(name="", **values), []
