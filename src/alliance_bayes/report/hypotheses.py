r"""Hypotheses about estimands: posterior probability, ROPE and Bayes factor, from saved draws.

A hypothesis (:func:`~alliance_bayes.spec.parse_hypothesis`) is a linear statement
:math:`\delta = \sum_j c_j\theta_j + c_0 \;\text{op}\; 0` about named estimands, evaluated draw by
draw, so its summary is that of :math:`\delta` itself. Reported per hypothesis:

- ``posterior_prob``: :math:`P(\delta > 0 \mid y)` for ``>``, :math:`P(\delta < 0 \mid y)` for
  ``<``, and for ``=`` the share of draws inside the ROPE;
- ``prior_prob``: the same under the prior (from the prior draws of the bundle);
- ``in_rope``: :math:`P(|\delta| < r \mid y)`, the share inside the region of practical
  equivalence of half-width :math:`r` (the spec's ``rope``, in outcome points; only where every
  term is in outcome units), and the decision of Kruschke (2018),
  doi:10.1177/2515245918771304: *equivalent* when the 95% HDI lies inside the ROPE, *different*
  when it lies wholly outside, else *undecided*. A statement about alliance slopes (every term
  in the fit's slope units) takes the ROPE of a slope: the spec's ``rope`` is per point of the
  1–5 alliance scale, and on a study's declared alliance instrument it is multiplied by 4 over
  the width of its range (:func:`~alliance_bayes.spec.scale_alliance_point`, as the priors per
  alliance point are); one mixing slopes and outcome points has no ROPE unless the two
  half-widths agree. ``rope`` and ``rope_units`` give the half-width used;
- ``bayes_factor``: for ``=``, the Savage–Dickey density ratio :math:`BF_{01} =
  p(\delta = 0 \mid y) / p(\delta = 0)` (Dickey 1971; Wagenmakers et al. 2010,
  doi:10.1016/j.cogpsych.2009.12.001), both densities estimated at 0 by a bias-reduced kernel
  density estimate from the posterior and the prior draws (:func:`_density_at_zero`); it is
  defined only where the prior draws resolve a density at 0 (not for a scale, whose Gamma prior
  vanishes there), else reported as undefined. For ``>`` or ``<`` it is the ratio of posterior
  to prior odds of the directional hypothesis against its complement (Morey & Wagenmakers 2014,
  doi:10.1016/j.spl.2014.05.020);
- ``bayes_factor_mcse``: its Monte Carlo standard error, from both sides' draws (the prior draws
  are few, the spec's ``prior_draws``, so the prior term often dominates it);
- ``bayes_factor_bound``: ``none`` for an estimate; ``upper`` (``lower``) when too few posterior
  draws reach the null to estimate the density or the odds there, and ``bayes_factor`` is then a
  95% upper (lower) bound set by the resolution of the draws, with no MCSE. A posterior far from
  0 thus reads ``BF01 < 0.03``, never ``BF01 = 0``.

The table says how many draws each side used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.report.estimands import HDI_PROB
from alliance_bayes.report.render import markdown_table
from alliance_bayes.spec import (
    Hypothesis,
    HypothesisError,
    parse_hypothesis,
    scale_alliance_point,
)

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "evaluate",
    "hypotheses_markdown",
    "hypothesis_table",
    "rope_settings",
    "rope_text",
]

HYPOTHESIS_COLUMNS = (
    "hypothesis", "mean", "hdi95_low", "hdi95_high", "posterior_prob", "prior_prob",
    "rope", "in_rope", "decision", "bayes_factor", "bayes_factor_kind", "draws", "prior_draws",
    "bayes_factor_mcse", "bayes_factor_bound", "rope_units",
)  # fmt: skip


@dataclass(frozen=True)
class _Draws:
    values: np.ndarray  # (chain, draw): the chains are kept for the effective sample sizes
    units: tuple[str, ...]  # of each term's estimand


def _chain_draw(da: xr.DataArray) -> np.ndarray:
    if {"chain", "draw"} <= set(da.dims):
        return np.asarray(da.transpose("chain", "draw", ...).values, float).reshape(
            da.sizes["chain"], -1
        )
    return np.asarray(da.values, float).reshape(1, -1)


#: A contrast estimand, ``<stem>[<a>-<b>]``.
_CONTRAST = re.compile(r"(?P<stem>[^\[\]]+)\[(?P<a>[a-z0-9_]+)-(?P<b>[a-z0-9_]+)\]")


def with_derived_contrasts(names: Iterable[str], est: xr.Dataset) -> xr.Dataset:
    """``est`` with each contrast of ``names`` it lacks derived draw by draw from two it has
    against one reference: ``b_care[therapist-coach]`` = ``b_care[therapist-r]`` −
    ``b_care[coach-r]`` (or the one of them whose other side is the reference itself), so that a
    spec's statements written against the contract's coach reference are decided on a study whose
    reference is another care type."""
    derived = {}
    for name in names:
        m = _CONTRAST.fullmatch(name)
        if name in est or m is None:
            continue
        stem, a, b = m["stem"], m["a"], m["b"]
        refs = {
            str(n).removeprefix(f"{stem}[{a}-").removesuffix("]")
            for n in est.data_vars
            if str(n).startswith(f"{stem}[{a}-")
        } | {
            str(n).removeprefix(f"{stem}[{b}-").removesuffix("]")
            for n in est.data_vars
            if str(n).startswith(f"{stem}[{b}-")
        }
        for r in sorted(refs):
            side_a = 0.0 if a == r else est.get(f"{stem}[{a}-{r}]")
            side_b = 0.0 if b == r else est.get(f"{stem}[{b}-{r}]")
            if side_a is not None and side_b is not None:
                value = side_a - side_b
                units = next(
                    (est[f"{stem}[{x}-{r}]"].attrs.get("units", "") for x in (a, b) if x != r), ""
                )
                derived[name] = value.assign_attrs(units=units)
                break
    return est.assign(derived) if derived else est


def _combine(h: Hypothesis, est: xr.Dataset) -> _Draws:
    est = with_derived_contrasts(h.names, est)
    missing = [n for n in h.names if n not in est]
    if missing:
        known = ", ".join(sorted(map(str, est.data_vars)))
        raise HypothesisError(f"{h.text!r}: unknown estimand(s) {missing}; known: {known}")
    total = np.full(_chain_draw(est[h.names[0]]).shape, h.constant, dtype=float)
    for coef, name in h.terms:
        total = total + coef * _chain_draw(est[name])
    return _Draws(total, tuple(str(est[n].attrs.get("units", "")) for n in h.names))


def _rope_of(
    units: tuple[str, ...],
    rope: float | None,
    outcome_units: str | None,
    slope_rope: float | None,
    slope_units: str | None,
) -> tuple[float | None, str]:
    """The ROPE half-width of a statement whose terms have ``units``, and its units; ``None``
    where no ROPE applies (no rope, or terms not in outcome points)."""
    if rope is None or not rope > 0 or outcome_units is None:
        return None, ""
    slope = [bool(slope_units) and u.startswith(str(slope_units)) for u in units]
    if not all(s or u.startswith(outcome_units) for s, u in zip(slope, units, strict=True)):
        return None, ""
    per_slope = rope if slope_rope is None else slope_rope
    if all(slope):
        return per_slope, str(slope_units)
    if not any(slope) or per_slope == rope:
        # a mix of slopes and outcome points shares a ROPE only on the 1-5 scale, where the
        # numbers agree (as before declared scales); on another scale neither half-width fits
        return rope, outcome_units
    return None, ""


def _ess(x: np.ndarray, method: str) -> float:
    """ESS of draws shaped (chain, draw); NaN for a constant or too short sequence."""
    if x.size < 8 or np.ptp(x) == 0:
        return float("nan")
    return float(azs.ess(x, method=method))


def _poisson_upper(count: float) -> float:
    """One-sided 95% upper limit of a Poisson mean given ``count`` events (3.0 for none)."""
    return 0.5 * float(stats.chi2.ppf(0.95, 2.0 * (count + 1.0)))


@dataclass(frozen=True)
class _Estimate:
    """A Monte Carlo estimate, or (``resolved`` False) only its 95% upper limit ``upper``."""

    value: float
    mcse: float
    upper: float
    resolved: bool


_UNRESOLVED = _Estimate(float("nan"), float("nan"), float("nan"), False)


def _density_at_zero(x: np.ndarray) -> _Estimate:
    r"""Kernel density of draws ``x`` (chain, draw) at 0, with its Monte Carlo error, or a bound.

    The estimate is :math:`\hat f(0) = \frac1n \sum_i g_i`, :math:`g_i = K(x_i / h) / h`, with
    Scott's bandwidth :math:`h = s\,n^{-1/5}` (that of :class:`scipy.stats.gaussian_kde`) and the
    fourth-order Gaussian kernel :math:`K(u) = \tfrac12 (3 - u^2)\,\phi(u)`, which is
    :math:`\phi - \tfrac12 \phi''`: the Gaussian estimate less its plug-in smoothing bias
    :math:`\tfrac12 h^2 \hat f''(0)` (higher-order kernels: Wand & Jones 1995, *Kernel
    Smoothing*, ch. 2).
    With the Gaussian kernel that bias is as large as the Monte Carlo error at these sample sizes
    (for 500 prior draws of a normal prior, :math:`-h^2/2\sigma^2 = -4\%` at its mode), so an error
    bar would not cover the truth; with this kernel it is :math:`O(h^4)`, under 1%, at the price of
    about 1.3 times the standard error.

    :math:`\hat f(0)` is a mean, so its MCSE is :math:`\operatorname{sd}(g) /
    \sqrt{\mathrm{ESS}(g)}`, with the autocorrelation-aware ESS of :math:`g` (Vehtari et al. 2021,
    doi:10.1214/20-BA1221), the bandwidth held fixed. Chosen over the bootstrap, which ignores the
    autocorrelation of MCMC draws, and over batch means, which needs long chains; the tests check
    it against the spread over replications, for independent and for AR(1) draws.

    The estimate is *resolved* only when the draws straddle 0, at least three effective draws lie
    within :math:`h` of it, and it is positive. Otherwise all the draws say is an upper limit: with
    :math:`k` effective draws within :math:`h` (counted in units of the bulk ESS), the density
    averaged over :math:`(-h, h)` is below :math:`\lambda_{95}(k) / (2 h\,\mathrm{ESS})`,
    :math:`\lambda_{95}` the one-sided 95% Poisson limit (3 for :math:`k = 0`, the rule of three;
    Hanley & Lippman-Hand 1983, doi:10.1001/jama.1983.03330370053031). That is the resolution of
    the estimate: about :math:`1.5 / (\mathrm{ESS}\,h)`.
    """
    if x.size < 10 or not np.all(np.isfinite(x)) or np.std(x) == 0:
        return _UNRESOLVED
    n = x.size
    h = float(np.std(x, ddof=1)) * n ** (-0.2)
    ess = _ess(x, "bulk")
    near = float(np.sum(np.abs(x) < h)) * ess / n
    if x.min() < 0 < x.max() and near >= _MIN_EFFECTIVE:
        u = x / h
        g = stats.norm.pdf(u) * (3 - u**2) / (2 * h)
        value = float(g.mean())
        if value > 0:
            mcse = float(g.std(ddof=1)) / np.sqrt(_ess(g, "mean"))
            return _Estimate(value, mcse, value, True)
    return _Estimate(float("nan"), float("nan"), _poisson_upper(near) / (2 * h * ess), False)


#: Effective draws below which a density or a probability is reported as a bound only.
_MIN_EFFECTIVE = 3.0


@dataclass(frozen=True)
class _BayesFactor:
    value: float
    mcse: float
    bound: str  # "none": an estimate; "upper"/"lower": the true value lies below/above ``value``
    kind: str


def _savage_dickey(d: np.ndarray, pri: np.ndarray | None) -> _BayesFactor:
    r""":math:`BF_{01} = \hat p(0 \mid y) / \hat p(0)`, its MCSE, or an upper bound.

    Posterior and prior draws are independent samples, so by the delta method the relative MCSE
    is :math:`\sqrt{(\mathrm{se}_1 / \hat p(0 \mid y))^2 + (\mathrm{se}_0 / \hat p(0))^2}`. Where
    the posterior draws do not resolve a density at 0 (:func:`_density_at_zero`), the ratio of
    its 95% upper limit to the prior density less two MCSEs is reported as an upper bound.
    """
    name = "BF01 (Savage–Dickey, point null)"
    if pri is None:
        return _BayesFactor(
            float("nan"), float("nan"), "none", f"{name}: undefined (no prior draws)"
        )
    prior = _density_at_zero(pri)
    if not prior.resolved:
        return _BayesFactor(
            float("nan"),
            float("nan"),
            "none",
            f"{name}: undefined (the prior draws do not resolve a density at 0)",
        )
    post = _density_at_zero(d)
    if post.resolved:
        bf = post.value / prior.value
        rel = np.hypot(post.mcse / post.value, prior.mcse / prior.value)
        return _BayesFactor(bf, bf * rel, "none", name)
    prior_low = prior.value - 2 * prior.mcse
    if not prior_low > 0:
        return _BayesFactor(float("nan"), float("nan"), "none", f"{name}: undefined")
    return _BayesFactor(
        post.upper / prior_low,
        float("nan"),
        "upper",
        f"{name}: upper bound (the posterior draws do not resolve a density at 0)",
    )


def _log_odds(hit: np.ndarray) -> _Estimate:
    r"""Log odds of a share of draws (chain, draw) with its MCSE, or the upper limit of the minority.

    :math:`\operatorname{se}(\log\frac{p}{1-p}) = 1 / \sqrt{\mathrm{ESS}\,p(1-p)}` (delta method,
    ESS of the indicator). With fewer than three effective draws on the rarer side, ``upper`` is the
    95% upper limit of the rarer side's probability, :math:`\lambda_{95}(k) / \mathrm{ESS}`, and
    ``value`` the sign of the log odds (+1: the rarer side is the complement).
    """
    n = hit.size
    p = float(hit.mean())
    rare = min(p, 1 - p) * n
    ess = _ess(hit.astype(float), "mean") if 0 < p < 1 else float("nan")
    ess = ess if np.isfinite(ess) else float(n)
    if rare * ess / n >= _MIN_EFFECTIVE:
        return _Estimate(
            float(np.log(p / (1 - p))), 1 / np.sqrt(ess * p * (1 - p)), float("nan"), True
        )
    upper = min(0.5, _poisson_upper(rare * ess / n) / ess)
    return _Estimate(1.0 if p > 0.5 else -1.0, float("nan"), upper, False)


def _directional(sign: float, d: np.ndarray, pri: np.ndarray | None) -> _BayesFactor:
    r""":math:`BF_{10}`: posterior over prior odds of :math:`\text{sign}\cdot\delta > 0`.

    The MCSE is the delta-method one of the two log odds (:func:`_log_odds`). Where the posterior
    draws fall (nearly) all on one side, a 95% bound: the posterior odds at the upper limit of the
    rarer side's probability, over the prior odds moved two MCSEs the conservative way.
    """
    name = "BF10 (directional vs complement)"
    undefined = _BayesFactor(float("nan"), float("nan"), "none", "BF10 directional: undefined")
    if pri is None:
        return undefined
    prior = _log_odds(sign * pri > 0)
    if not prior.resolved:
        return undefined
    post = _log_odds(sign * d > 0)
    if post.resolved:
        bf = float(np.exp(post.value - prior.value))
        return _BayesFactor(bf, bf * float(np.hypot(post.mcse, prior.mcse)), "none", name)
    rare = np.log(post.upper / (1 - post.upper))
    if post.value > 0:  # nearly every draw satisfies the statement: a lower bound
        bf, bound = np.exp(-rare - (prior.value + 2 * prior.mcse)), "lower"
    else:
        bf, bound = np.exp(rare - (prior.value - 2 * prior.mcse)), "upper"
    return _BayesFactor(
        float(bf), float("nan"), bound, f"{name}: {bound} bound (the draws lie on one side)"
    )


def evaluate(
    hypothesis: str | Hypothesis,
    estimands: xr.Dataset,
    prior: xr.Dataset | None = None,
    *,
    rope: float | None = None,
    outcome_units: str | None = None,
    slope_rope: float | None = None,
    slope_units: str | None = None,
) -> dict[str, Any]:
    """One row of :func:`hypothesis_table` (see the module docstring for each column).

    ``rope`` is the half-width in ``outcome_units``; a statement whose every term's units start
    with ``slope_units`` (the fit's ``effect_units``) is decided with ``slope_rope`` instead
    (default ``rope``): :func:`rope_settings` gives the three for a fit.

    Raises
    ------
    HypothesisError
        Unreadable text or an estimand this fit does not have (the message lists those it has).
    """
    h = hypothesis if isinstance(hypothesis, Hypothesis) else parse_hypothesis(hypothesis)
    post = _combine(h, estimands)
    chains = post.values
    d = chains.ravel()
    hdi = azs.hdi(d, prob=HDI_PROB)
    low, high = float(hdi[0]), float(hdi[1])
    pri_chains = _combine(h, prior).values if prior is not None else None
    pri = pri_chains.ravel() if pri_chains is not None else None
    half, rope_units = _rope_of(post.units, rope, outcome_units, slope_rope, slope_units)
    use_rope = half is not None
    rope = half  # from here on the half-width this statement is decided with
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
        bf = _savage_dickey(chains, pri_chains)
    else:
        sign = 1.0 if h.operator == ">" else -1.0
        p_post = float(np.mean(sign * d > 0))
        p_prior = float(np.mean(sign * pri > 0)) if pri is not None else float("nan")
        bf = _directional(sign, chains, pri_chains)
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
        "bayes_factor": bf.value,
        "bayes_factor_kind": bf.kind,
        "draws": int(d.size),
        "prior_draws": int(pri.size) if pri is not None else 0,
        "bayes_factor_mcse": bf.mcse,
        "bayes_factor_bound": bf.bound,
        "rope_units": rope_units,
    }


def hypothesis_table(
    hypotheses: Iterable[str | Hypothesis],
    estimands: xr.Dataset,
    prior: xr.Dataset | None = None,
    *,
    rope: float | None = None,
    outcome_units: str | None = None,
    slope_rope: float | None = None,
    slope_units: str | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Columns :data:`HYPOTHESIS_COLUMNS`, one row per hypothesis.

    ``rope``, ``outcome_units``, ``slope_rope`` and ``slope_units`` as :func:`evaluate` takes
    them (:func:`rope_settings` gives a fit's).

    With ``strict=False`` a statement about an estimand this model lacks (a spec's test inherited
    by a variant without, say, care-type intercepts) gives a row that says so instead of raising.
    """
    rows = []
    for h in hypotheses:
        try:
            rows.append(
                evaluate(
                    h,
                    estimands,
                    prior,
                    rope=rope,
                    outcome_units=outcome_units,
                    slope_rope=slope_rope,
                    slope_units=slope_units,
                )
            )
        except HypothesisError:
            if strict:
                raise
            text = h.text if isinstance(h, Hypothesis) else str(h)
            try:
                parsed = h if isinstance(h, Hypothesis) else parse_hypothesis(text)
            except HypothesisError:
                parsed = None
            absent = [n for n in (parsed.names if parsed else ()) if n not in estimands]
            why = f": this fit has no {', '.join(absent)}" if absent else ""
            decision = f"not estimable in this model{why}"
            rows.append({"hypothesis": text, "decision": decision, "draws": 0})
    return pd.DataFrame(rows, columns=list(HYPOTHESIS_COLUMNS))


def rope_settings(rope: float | None, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ROPE keywords of :func:`hypothesis_table` for a fit with run metadata ``meta``.

    ``rope`` is the spec's (:attr:`~alliance_bayes.spec.ModelSpec.rope`) or a caller's, in
    outcome points and, for a slope, per point of the 1–5 alliance scale; a slope's half-width is
    it on the fit's alliance scale: times ``scales.alliance_instrument.prior_factor`` where the
    study declares an instrument (:func:`~alliance_bayes.spec.scale_alliance_point`), and the
    slopes are those in the fit's ``effect_units``. For the ratings family (the alliance is the
    outcome) ``rope`` is in rating points of the 1–5 scale, and on a declared scale it is
    divided by that factor instead (0.1 on 1–5 is 0.15 on 1–7): the same share of the scale.
    """
    factor = RecordedScale.of(meta.get("scales")).prior_factor
    if meta.get("family") == "ratings":
        return {"rope": None if rope is None else rope / factor, "slope_rope": None}
    return {
        "rope": rope,
        "slope_rope": None if rope is None else scale_alliance_point(rope, factor),
        "slope_units": meta.get("effect_units") or None,
    }


def rope_text(table: pd.DataFrame, meta: Mapping[str, Any]) -> str | None:
    """The ROPE a table of hypotheses used, in words (None when no statement had one).

    On the 1–5 alliance scale one half-width serves outcome points and slopes alike; on a
    declared alliance instrument the slopes' half-width is given beside it, with the factor it
    was rescaled by, so that a reader sees the number each decision used.
    """
    used = table.dropna(subset=["rope"]) if "rope" in table else table.iloc[0:0]
    if used.empty:
        return None
    units = meta.get("outcome_label", "outcome")
    recorded = RecordedScale.of(meta.get("scales"))
    factor = recorded.prior_factor
    if meta.get("family") == "ratings" and factor != 1.0:
        half = float(used["rope"].iloc[0])
        return (
            f"±{half:.3g} rating points on the {recorded.name} scale (the "
            f"spec's ±{half * factor:.3g} per 1–5 point, times the width of the scale over 4)"
        )
    if factor == 1.0:
        return f"±{used['rope'].iloc[0]:g} points of {units} (per alliance point for slopes)"
    slope_units = str(meta.get("effect_units", ""))
    is_slope = (
        used["rope_units"].astype(str).eq(slope_units)
        if "rope_units" in used
        else pd.Series(False, index=used.index)
    )
    per_point = (
        float(used.loc[~is_slope, "rope"].iloc[0])
        if (~is_slope).any()
        else float(used.loc[is_slope, "rope"].iloc[0]) / factor
    )
    scale = recorded.name
    return (
        f"±{per_point:.3g} points of {units}; for a slope ±"
        f"{scale_alliance_point(per_point, factor):.3g} {slope_units} (the spec's ±"
        f"{per_point:.3g} per point of the 1–5 alliance scale × {factor:.3g}, 4 over the width "
        f"of the {scale} scale)"
    )


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _bf(x: float) -> str:
    if not np.isfinite(x):
        return "undefined"
    return f"{x:.3g}" if 1e-3 <= x < 1e4 else f"{x:.1e}"


def _bf_cell(r) -> str:
    """``0.81 ± 0.06 (BF01)``, ``< 2.3e-03 (BF01)`` (a bound), or ``undefined (BF01)``."""
    label = str(r.bayes_factor_kind).split(" ")[0]
    bound = getattr(r, "bayes_factor_bound", "none")
    mcse = getattr(r, "bayes_factor_mcse", float("nan"))
    if bound in _BOUND_SIGNS and np.isfinite(r.bayes_factor):
        return f"{_BOUND_SIGNS[bound]} {_bf(r.bayes_factor)} ({label})"
    if np.isfinite(r.bayes_factor) and np.isfinite(mcse):
        return f"{_bf(r.bayes_factor)} ± {mcse:.1g} ({label})"
    return f"{_bf(r.bayes_factor)} ({label})"


_BOUND_SIGNS = {"upper": "<", "lower": ">"}


def _prior_draws(table: pd.DataFrame) -> int:
    most = table["prior_draws"].max()  # NaN when no statement was estimable
    return int(most) if np.isfinite(most) else 0


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
            _bf_cell(r) if r.draws else "",
        ]
        for r in table.itertuples()
    ]
    used = rope_text(table, meta)
    rope_words = f"*ROPE*: {used}" if used else "*ROPE*: not applicable to these units"
    note = (
        "*P(H | y)*: posterior probability of the statement (for `=`, of |difference| < ROPE). "
        f"{rope_words}; *decision* (Kruschke 2018): equivalent if the 95% HDI lies inside the "
        "ROPE, different if wholly outside, else undecided. *BF01*: Savage–Dickey ratio for the "
        "point null (above 1 favours no difference); *BF10*: posterior over prior odds of a "
        "directional statement; ± its Monte Carlo standard error; < or >: a 95% bound, where too "
        "few posterior draws reach the null for the density (or the odds) there to be estimated. "
        f"Prior terms use {_prior_draws(table)} prior draws."
    )
    return [*markdown_table(header, rows), "", note, ""]
