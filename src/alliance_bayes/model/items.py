r"""Alliance item ratings for the graded-response families (latent and ratings).

A declared alliance instrument with several integer items per subscale (the WAI-SR: four items
1–5 each) is modelled item by item: one row of graded-response parameters per item :math:`j` of
subscale :math:`s(j)`, each item's rating a category of the items' scale :math:`L, \dots, H`.
A reverse-scored item's recorded rating :math:`r` enters as :math:`L + H - r`, so that a higher
category always means a stronger alliance, as the averaged scores turn it. A subscale's expected
rating is the mean over its :math:`n_s` items of each item's expected rating,

.. math::
    \tau_s = \frac{1}{n_s} \sum_{j: s(j) = s} \mathbb E[r_j],

the session subscale score of the averaged-score models (:func:`subscale_means`). With one item
per subscale there are no item rows: each subscale is its own item, the session's ``wai_<s>``.
"""

from __future__ import annotations

import numpy as np

from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError

__all__ = ["ITEMS_SCORED", "ItemRows", "item_ratings", "items_record", "subscale_means"]

#: The scoring rule of the modelled items, in words (``run.json``'s ``alliance_items``).
ITEMS_SCORED = (
    "each item's rating is one category; a reverse-scored item's rating r is modelled as "
    "low + high - r"
)


class ItemRows:
    """What a graded-response family's data say about their rows: one per item where some
    subscale has several items (``items`` non-empty), else one per subscale."""

    items: tuple[str, ...]

    @property
    def several_items(self) -> bool:
        """Whether the rows are items (some subscale has several) rather than subscales."""
        return bool(self.items)

    @property
    def rows(self) -> str:
        """The dimension of the rows and of the item parameters: ``"item"`` with several items
        per subscale, else ``"subscale"``."""
        return "item" if self.several_items else "subscale"


def item_ratings(
    frame: AnalysisFrame, subscales: tuple[str, ...], low: int, high: int
) -> tuple[tuple[str, ...], np.ndarray, list[np.ndarray]]:
    """The rows of a graded-response count table and each row's ratings, one value per session.

    Parameters
    ----------
    frame : AnalysisFrame
        Its sessions hold ``wai_<s>`` and, with several items per subscale, every declared item
        column as recorded.
    subscales : tuple of str
        The modelled subscales, in order.
    low, high : int
        The items' lowest and highest rating, :math:`L` and :math:`H`.

    Returns
    -------
    items : tuple of str
        The declared item columns when some subscale has several, subscale by subscale; empty
        with one item per subscale (then the rows are the subscales).
    item_subscale : numpy.ndarray
        Each item's subscale, an index into ``subscales`` (empty with one item per subscale).
    ratings : list of numpy.ndarray
        Per row, the sessions' ratings (NaN where not rated): ``wai_<s>`` with one item per
        subscale (a declared reversed item is turned there already), else each item's recorded
        rating, a reversed one turned, :math:`L + H - r`.

    Raises
    ------
    DesignError
        A declared item column is missing from the frame's sessions.
    """
    alliance, ses = frame.alliance, frame.sessions
    if alliance is None or all(len(items) == 1 for _, items in alliance.subscales):
        ratings = [ses[f"wai_{s}"].to_numpy(dtype=float, na_value=np.nan) for s in subscales]
        return (), np.zeros(0, dtype=np.int64), ratings
    missing = [c for s in subscales for c in alliance.items(s) if c not in ses]
    if missing:
        raise DesignError(
            f"the alliance instrument {alliance.scale} declares the item column(s) {missing}, "
            "which the analysis frame's sessions do not hold (build the frame from the study)"
        )
    items, owner, ratings = [], [], []
    for k, s in enumerate(subscales):
        for c in alliance.items(s):
            r = ses[c].to_numpy(dtype=float, na_value=np.nan)
            items.append(c)
            owner.append(k)
            ratings.append(low + high - r if c in alliance.reverse else r)
    return tuple(items), np.array(owner, dtype=np.int64), ratings


def subscale_means(item_subscale: np.ndarray, n_subscales: int) -> np.ndarray:
    r"""The (subscale, item) matrix :math:`A` whose product with per-item values is their mean
    per subscale: :math:`A_{sj} = [s(j) = s] / n_s`, with :math:`n_s` the items of subscale
    :math:`s`.

    Raises
    ------
    ValueError
        A subscale without items (its mean would be undefined).
    """
    owner = np.asarray(item_subscale, dtype=np.int64)
    onehot = (owner[None, :] == np.arange(n_subscales)[:, None]).astype(float)
    n_items = onehot.sum(axis=1, keepdims=True)
    if (n_items == 0).any():
        raise ValueError(f"subscale(s) {np.flatnonzero(n_items[:, 0] == 0).tolist()} have no item")
    return onehot / n_items


def items_record(
    frame: AnalysisFrame,
    subscales: tuple[str, ...],
    items: tuple[str, ...],
    item_subscale: np.ndarray,
) -> dict[str, object]:
    """The ``alliance_items`` entry of a design's scales (``run.json``): each modelled item's
    subscale, the reverse-scored items and the scoring rule in words; empty with one item per
    subscale (no ``items``)."""
    if not items:
        return {}
    reverse = frame.alliance.reverse if frame.alliance is not None else ()
    return {
        "alliance_items": {
            "subscale": {c: subscales[k] for c, k in zip(items, item_subscale, strict=True)},
            "reversed": [c for c in items if c in reverse],
            "scored": ITEMS_SCORED,
        }
    }
