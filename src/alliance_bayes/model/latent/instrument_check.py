"""The graded-response families need one integer 1–5 rating per subscale; other instruments are refused.

The latent family (:mod:`alliance_bayes.model.latent.measurement`) and the ratings family
(:mod:`alliance_bayes.model.ratings`) model every session rating of every subscale as one ordered
category of five (a graded-response model with four thresholds). A study that declares its
alliance instrument (:mod:`alliance_bayes.data.alliance`) gives them that only when the
instrument is one integer item rated 1–5 per subscale (as the contract's ``wai_goal``,
``wai_bond``, ``wai_task``); several items per subscale, another range, a finer step, reversed
items or pre-scored means are refused by :func:`require_single_ratings`, before any array is
built, naming the instrument and the averaged-score models that take it.
"""

from __future__ import annotations

from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.spec import ModelSpec

__all__ = ["require_single_ratings"]


def _why(frame: AnalysisFrame) -> str:
    """What about the declared instrument a graded-response model cannot take, in words."""
    a = frame.alliance
    assert a is not None
    if a.scored == "subscales":
        return "its sessions hold pre-scored subscale means, not item ratings"
    reasons = []
    counts = sorted({len(items) for _, items in a.subscales})
    if counts != [1]:
        reasons.append(f"{'/'.join(map(str, counts))} items per subscale")
    if a.range != (1.0, 5.0):
        reasons.append(f"items rated {a.low:g}–{a.high:g}")
    if a.step != 1.0:
        reasons.append(f"in steps of {a.step:g}")
    if a.reverse:
        reasons.append("reverse-scored items")
    return ", ".join(reasons)


def require_single_ratings(spec: ModelSpec, frame: AnalysisFrame, family: str = "latent") -> None:
    """Refuse a study whose declared alliance instrument is not one integer 1–5 item per subscale.

    A study without an ``[alliance]`` declaration (the contract's items), or whose declaration is
    one integer 1–5 item per subscale, passes.

    Raises
    ------
    DesignError
        Naming the spec, the family, the instrument and why it does not fit, and suggesting an
        averaged-score (regression) model, which takes any declared instrument.
    """
    alliance = frame.alliance
    if alliance is None or alliance.single_ratings_1_to_5:
        return
    where = frame.outcomes_declared_in or "the study"
    raise DesignError(
        f"spec {spec.name!r} ({family} family): its graded-response model takes one integer "
        f"alliance rating 1–5 per subscale and session; the study declares the alliance "
        f"instrument {alliance.scale} ({_why(frame)}; [alliance] in {where}). Fit an "
        "averaged-score model instead, which takes any declared instrument: a regression spec "
        "(alliance = 'subscales' or 'composite', no [measurement] table), such as who5_change, "
        f"whose slopes are then per point of the {alliance.scale} scale"
    )
