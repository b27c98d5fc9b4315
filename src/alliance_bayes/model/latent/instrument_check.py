r"""The graded-response families need integer item ratings; other instruments are refused.

The latent family (:mod:`alliance_bayes.model.latent.measurement`) and the ratings family
(:mod:`alliance_bayes.model.ratings`) model every session rating of every subscale as one ordered
category of :math:`K` (a graded-response model with :math:`K - 1` thresholds). The categories are
the whole numbers of the item's range, :math:`L, L + 1, \dots, H` with :math:`K = H - L + 1`: the
contract's ``wai_goal``, ``wai_bond``, ``wai_task`` (1–5, :math:`K = 5`) when the study declares
no alliance instrument, else the declared instrument's (1–7: :math:`K = 7`; 0–6: 7; 1–4: 4), read
by :func:`rating_scale`. A declared instrument qualifies when its items are rated in whole
numbers over a range of at least three categories: one item per subscale
(:attr:`~alliance_bayes.data.alliance.AllianceInstrument.single_integer_ratings`), or several
items per subscale and reverse-scored items (the WAI-SR), each item then modelled with its own
cut-points and discrimination (:mod:`alliance_bayes.model.items`). A finer step, fewer than
three categories or pre-scored means are refused by :func:`require_integer_ratings`, before any
array is built, naming the instrument, why, and the averaged-score models that take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.spec import ModelSpec

__all__ = [
    "CONTRACT_SCALE",
    "RatingScale",
    "rating_scale",
    "require_integer_ratings",
]


@dataclass(frozen=True)
class RatingScale:
    r"""The categories of a graded-response item: the whole numbers ``low`` to ``high``.

    Attributes
    ----------
    low, high : int
        The lowest and highest rating, :math:`L` and :math:`H`.
    name : str
        The scale in words, as :attr:`~alliance_bayes.data.frame.AnalysisFrame.alliance_scale`
        writes it: ``"1–5"`` for the contract's items, ``"WAI-S 1–7"`` for a declared one.
    """

    low: int = 1
    high: int = 5
    name: str = "1–5"

    @property
    def n_categories(self) -> int:
        """:math:`K = H - L + 1`."""
        return self.high - self.low + 1

    @property
    def categories(self) -> tuple[str, ...]:
        """The category labels, ``("1", …, "5")``."""
        return tuple(str(k) for k in range(self.low, self.high + 1))

    @property
    def thresholds(self) -> tuple[str, ...]:
        """The :math:`K - 1` threshold labels, ``("1|2", …, "4|5")``."""
        return tuple(f"{k}|{k + 1}" for k in range(self.low, self.high))

    @property
    def gap_prior_factor(self) -> float:
        r"""What the scale of the cut-point gaps' Half-Normal prior is multiplied by:
        :math:`3 / (K - 2)`, 1 on the contract's five categories.

        The :math:`K - 2` gaps add up to the span from the lowest to the highest cut-point, the
        stretch of the latent scale the item's middle categories cover. More categories cut the
        same stretch more finely rather than cover more of it, so the prior mean of that span
        (:math:`(K - 2)\,s\sqrt{2/\pi}` for gaps Half-Normal(:math:`s`)) is kept at the
        five-category one: 7.2 logits at :math:`s = 3`. Unscaled, eleven categories (0–10) would
        put the lowest cut-point 22 logits below the highest a priori, asserting that the
        bottom categories are all but never used; the rarely used low categories are where the
        prior matters.
        """
        return (CONTRACT_SCALE.n_categories - 2) / (self.n_categories - 2)

    @classmethod
    def of_scales(cls, scales: Mapping[str, Any]) -> RatingScale:
        """The categories of a fit from its design's scales (``run.json``): the declared
        instrument's (``alliance_instrument``, checked to be whole numbers when the design was
        built), or the contract's 1–5 without one."""
        recorded = RecordedScale.of(scales)
        if not recorded.declared:
            return CONTRACT_SCALE
        return cls(int(recorded.low), int(recorded.high), recorded.name)

    def category_index(self, ratings: np.ndarray) -> np.ndarray:
        """Each rating's category, ``rating - low`` (0 … K − 1), from integer-valued ratings.

        Raises
        ------
        DesignError
            A rating is not a whole number within ``low`` to ``high`` (a frame built from a
            checked study holds none).
        """
        r = np.asarray(ratings, dtype=float)
        k = np.rint(r - self.low)
        bad = (np.abs(r - self.low - k) > 1e-9) | (k < 0) | (k >= self.n_categories)
        if bad.any():
            raise DesignError(
                f"alliance ratings must be whole numbers {self.low}–{self.high} ({self.name}); "
                f"got {sorted(set(r[bad].tolist()))[:5]}"
            )
        return k.astype(np.int64)


#: The contract's items: one integer rating 1–5 per subscale, five categories.
CONTRACT_SCALE = RatingScale()


def rating_scale(frame: AnalysisFrame) -> RatingScale:
    """The rating categories of the frame's alliance items: its declared instrument's range, or
    the contract's 1–5 (:data:`CONTRACT_SCALE`) without a declaration. Call after
    :func:`require_integer_ratings` (a declared range is then whole numbers)."""
    alliance = frame.alliance
    if alliance is None:
        return CONTRACT_SCALE
    return RatingScale(int(alliance.low), int(alliance.high), frame.alliance_scale)


def _why(frame: AnalysisFrame) -> str:
    """What about the declared instrument a graded-response model cannot take, in words (empty
    where it can: integer items, any number per subscale, reversed ones too)."""
    a = frame.alliance
    assert a is not None
    if a.scored == "subscales":
        return "its sessions hold pre-scored subscale means, not item ratings"
    if a.step != 1.0:
        return f"rated in steps of {a.step:g}, not whole numbers"
    if not (float(a.low).is_integer() and float(a.high).is_integer()):
        return f"a range {a.low:g}–{a.high:g} whose ends are not whole numbers"
    if a.high - a.low < 2:
        return f"only {int(a.high - a.low) + 1} categories ({a.low:g}–{a.high:g})"
    return ""


def require_integer_ratings(spec: ModelSpec, frame: AnalysisFrame, family: str = "ratings") -> None:
    """Refuse a study whose declared alliance instrument is not integer item ratings.

    A study without an ``[alliance]`` declaration (the contract's 1–5 items) passes, and so does
    one whose items are rated in whole numbers over a range of at least three (``range = [1,
    7]``, ``step = 1``): each value is a category (:func:`rating_scale`). Any number of items per
    subscale passes, reversed items too (each is turned, ``low + high - rating``, before it is
    modelled): both graded-response families model every item. Pre-scored subscale means, a
    finer step than whole numbers and fewer than three categories are refused.

    Raises
    ------
    DesignError
        Naming the spec, the family, what it takes, the instrument and why it does not fit, and
        suggesting an averaged-score (regression) model, which takes any declared instrument.
    """
    a = frame.alliance
    if a is None or a.single_integer_ratings or not _why(frame):
        return
    where = frame.outcomes_declared_in or "the study"
    raise DesignError(
        f"spec {spec.name!r} ({family} family): its graded-response model takes integer "
        "alliance item ratings, one integer alliance rating per subscale and session or several "
        "items per subscale (reverse-scored items are turned), each whole number of the "
        "declared range a category and at least three of them (one integer alliance rating "
        "1–5 per subscale, as the contract's items, or 1–7, 0–6, 1–4; the WAI-SR's four items "
        "1–5 per subscale); the study declares the "
        f"alliance instrument {a.scale} ({_why(frame)}; [alliance] in "
        f"{where}). Fit an averaged-score model instead, which takes any declared instrument: a "
        "regression spec (alliance = 'subscales' or 'composite', no [measurement] table), such "
        f"as who5_change, whose slopes are then per point of the {a.scale} scale"
    )
