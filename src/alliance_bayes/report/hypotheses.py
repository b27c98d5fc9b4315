r"""Hypotheses about estimands: posterior probability, ROPE and Bayes factor, from saved draws.

A hypothesis (:func:`~alliance_bayes.model.spec.parse_hypothesis`) is a linear statement
:math:`\delta = \sum_j c_j\theta_j + c_0 \;\text{op}\; 0` about named estimands, evaluated draw by
draw, so its summary is that of :math:`\delta` itself. Reported per hypothesis:

- ``posterior_prob``: :math:`P(\delta > 0 \mid y)` for ``>``, :math:`P(\delta < 0 \mid y)` for
  ``<``, and for ``=`` the share of draws inside the ROPE;
- ``prior_prob``: the same under the prior (from the prior draws of the bundle);
- ``in_rope``: :math:`P(|\delta| < r \mid y)`, the share inside the region of practical
  equivalence of half-width :math:`r` (the spec's ``rope``, in outcome points; only where every
  term is in outcome units), and the decision of Kruschke (2018),
  doi:10.1177/2515245918771304: *equivalent* when the 95% HDI lies inside the ROPE, *different*
  when it lies wholly outside, else *undecided*;
- ``bayes_factor``: for ``=``, the Savage–Dickey density ratio :math:`BF_{01} =
  p(\delta = 0 \mid y) / p(\delta = 0)` (Dickey 1971; Wagenmakers et al. 2010,
  doi:10.1016/j.cogpsych.2009.12.001), both densities estimated by Gaussian kernel density from
  the posterior and the prior draws; it is defined only where the prior puts positive density at
  0 (not for a scale, whose Gamma prior vanishes there), else reported as undefined. For ``>`` or
  ``<`` it is the ratio of posterior to prior odds of the directional hypothesis against its
  complement (Morey & Wagenmakers 2014, doi:10.1016/j.spl.2014.05.020).

The prior draws are few (the spec's ``prior_draws``), so the prior terms carry Monte Carlo error of
a few per cent; the table says how many draws each side used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from alliance_bayes.model.spec import Hypothesis, HypothesisError, parse_hypothesis
from alliance_bayes.report.estimands import HDI_PROB
from alliance_bayes.report.render import markdown_table

__all__ = ["HYPOTHESIS_COLUMNS", "evaluate", "hypotheses_markdown", "hypothesis_table"]

HYPOTHESIS_COLUMNS = (
    "hypothesis", "mean", "hdi95_low", "hdi95_high", "posterior_prob", "prior_prob",
    "rope", "in_rope", "decision", "bayes_factor", "bayes_factor_kind", "draws", "prior_draws",
)  # fmt: skip


@dataclass(frozen=True)
class _Draws:
    values: np.ndarray
    units_ok: bool


def _combine(h: Hypothesis, est: xr.Dataset, outcome_units: str | None) -> _Draws:
    missing = [n for n in h.names if n not in est]
    if missing:
        known = ", ".join(sorted(map(str, est.data_vars)))
        raise HypothesisError(f"{h.text!r}: unknown estimand(s) {missing}; known: {known}")
    total = np.full(est[h.names[0]].values.size, h.constant, dtype=float)
    for coef, name in h.terms:
        total = total + coef * np.asarray(est[name].values, float).ravel()
    units_ok = outcome_units is not None and all(
        str(est[n].attrs.get("units", "")).startswith(outcome_units) for n in h.names
    )
    return _Draws(total, units_ok)


def _density_at_zero(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 10 or np.std(x) == 0 or not (x.min() < 0 < x.max()):
        return 0.0
    return float(stats.gaussian_kde(x)(0.0)[0])


def evaluate(
    hypothesis: str | Hypothesis,
    estimands: xr.Dataset,
    prior: xr.Dataset | None = None,
    *,
    rope: float | None = None,
    outcome_units: str | None = None,
) -> dict[str, Any]:
    """One row of :func:`hypothesis_table` (see the module docstring for each column).

    Raises
    ------
    HypothesisError
        Unreadable text or an estimand this fit does not have (the message lists those it has).
    """
    h = hypothesis if isinstance(hypothesis, Hypothesis) else parse_hypothesis(hypothesis)
    post = _combine(h, estimands, outcome_units)
    d = post.values
    hdi = azs.hdi(d, prob=HDI_PROB)
    low, high = float(hdi[0]), float(hdi[1])
    pri = _combine(h, prior, outcome_units).values if prior is not None else None
    use_rope = rope is not None and rope > 0 and post.units_ok
    in_rope = float(np.mean(np.abs(d) < rope)) if use_rope else float("nan")
    if use_rope:
        decision = (
            "equivalent"
            if -rope < low and high < rope
            else "different"
            if high <= -rope or low >= rope
            else "undecided"
        )
    else:
        decision = "n/a (no ROPE in these units)"
    if h.operator == "=":
        p_post = in_rope
        p_prior = (
            float(np.mean(np.abs(pri) < rope)) if (pri is not None and use_rope) else float("nan")
        )
        bf, kind = float("nan"), "BF01 Savage–Dickey: undefined (no prior draws)"
        if pri is not None:
            prior_density = _density_at_zero(pri)
            if prior_density > 0:
                bf, kind = _density_at_zero(d) / prior_density, "BF01 (Savage–Dickey, point null)"
            else:
                kind = "BF01 Savage–Dickey: undefined (the prior has no density at 0)"
    else:
        sign = 1.0 if h.operator == ">" else -1.0
        p_post = float(np.mean(sign * d > 0))
        p_prior = float(np.mean(sign * pri > 0)) if pri is not None else float("nan")
        bf, kind = float("nan"), "BF10 directional: undefined"
        if pri is not None and 0 < p_prior < 1:
            n = d.size
            # Odds with half a draw added on each side, so that P = 1 gives a finite bound.
            odds = (p_post * n + 0.5) / ((1 - p_post) * n + 0.5)
            bf, kind = odds / (p_prior / (1 - p_prior)), "BF10 (directional vs complement)"
    return {
        "hypothesis": h.text,
        "mean": float(d.mean()),
        "hdi95_low": low,
        "hdi95_high": high,
        "posterior_prob": p_post,
        "prior_prob": p_prior,
        "rope": float(rope) if use_rope else float("nan"),
        "in_rope": in_rope,
        "decision": decision,
        "bayes_factor": bf,
        "bayes_factor_kind": kind,
        "draws": int(d.size),
        "prior_draws": int(pri.size) if pri is not None else 0,
    }


def hypothesis_table(
    hypotheses: Iterable[str | Hypothesis],
    estimands: xr.Dataset,
    prior: xr.Dataset | None = None,
    *,
    rope: float | None = None,
    outcome_units: str | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Columns :data:`HYPOTHESIS_COLUMNS`, one row per hypothesis.

    With ``strict=False`` a statement about an estimand this model lacks (a spec's test inherited
    by a variant without, say, care-type intercepts) gives a row that says so instead of raising.
    """
    rows = []
    for h in hypotheses:
        try:
            rows.append(evaluate(h, estimands, prior, rope=rope, outcome_units=outcome_units))
        except HypothesisError:
            if strict:
                raise
            text = h.text if isinstance(h, Hypothesis) else str(h)
            rows.append({"hypothesis": text, "decision": "not estimable in this model", "draws": 0})
    return pd.DataFrame(rows, columns=list(HYPOTHESIS_COLUMNS))


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _bf(x: float) -> str:
    if not np.isfinite(x):
        return "undefined"
    return f"{x:.3g}" if 1e-3 <= x < 1e4 else f"{x:.1e}"


def hypotheses_markdown(table: pd.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The hypotheses as a Markdown table with the decision rule stated under it."""
    if table.empty:
        return []
    header = ["Hypothesis", "Mean [95% HDI]", "P(H | y)", "P(H)", "In ROPE", "Decision", "BF"]
    rows = [
        [
            f"`{r.hypothesis}`",
            f"{_num(r.mean)} [{_num(r.hdi95_low)}, {_num(r.hdi95_high)}]",
            _num(r.posterior_prob, 3),
            _num(r.prior_prob, 3),
            _num(r.in_rope, 3),
            r.decision,
            f"{_bf(r.bayes_factor)} ({str(r.bayes_factor_kind).split(' ')[0]})" if r.draws else "",
        ]
        for r in table.itertuples()
    ]
    rope = table["rope"].dropna()
    units = meta.get("outcome_label", "outcome")
    rope_text = (
        f"*ROPE*: ±{rope.iloc[0]:g} points of {units} (per alliance point for slopes)"
        if len(rope)
        else "*ROPE*: not applicable to these units"
    )
    note = (
        "*P(H | y)*: posterior probability of the statement (for `=`, of |difference| < ROPE). "
        f"{rope_text}; *decision* (Kruschke 2018): equivalent if the 95% HDI lies inside the "
        "ROPE, different if wholly outside, else undecided. *BF01*: Savage–Dickey ratio for the "
        "point null (above 1 favours no difference); *BF10*: posterior over prior odds of a "
        f"directional statement. Prior terms use {int(table['prior_draws'].max())} prior draws."
    )
    return [*markdown_table(header, rows), "", note, ""]
