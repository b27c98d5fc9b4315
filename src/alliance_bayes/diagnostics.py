"""The convergence gate: no estimate leaves the package unless every sampler check passes.

Checks (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, doi:10.1214/20-BA1221; Betancourt 2016
for E-BFMI):

- ``r_hat``: rank-normalised split R-hat <= ``rhat_max`` (1.01) for every element of every posterior
  variable (internal ``z_*``/``chol_*`` included: a stuck auxiliary variable means a stuck model)
  and for every estimand (derived quantities such as contrasts can mix worse than their parts);
- ``ess_bulk`` and ``ess_tail``: bulk and tail ESS >= ``ess_min`` (400, i.e. 100 per chain for 4);
- ``divergences``: number of divergent transitions <= ``max_divergences`` (0): any divergence means
  the sampler met geometry it could not integrate, and the estimates may be biased;
- ``e_bfmi``: E-BFMI >= ``ebfmi_min`` (0.3) in *every* chain (one bad chain is enough);
- ``treedepth``: share of draws that hit the maximum tree depth <= ``max_treedepth_share``
  (default 0.0: any saturation fails). Saturation is an efficiency warning rather than a bias
  warning, but in this project it usually signals a badly parameterised hierarchy, so we fail
  loudly and let the analyst raise the threshold deliberately.

A warning, reported but not part of the verdict:

- ``rank_uniformity``: the multi-chain rank-uniformity test that arviz-plots' rank plot prints
  (Tesso & Vehtari 2026, arXiv:2603.02928; see :func:`alliance_bayes.rank_diagnostics.rank_uniformity`),
  of every posterior element and estimand, each chain thinned by its own ESS. With some hundreds of
  quantities tested, about :math:`m\\alpha` would fall below :math:`\\alpha` by chance alone, so
  the flag is Holm's step-down adjustment (Holm 1979, *Scand. J. Statist.* 6:65-70): sort the
  p-values :math:`p_{(1)} \\le \\dots \\le p_{(m)}`, adjust :math:`\\tilde p_{(i)} =
  \\max_{j \\le i} \\min(1, (m - j + 1) p_{(j)})`, flag :math:`\\tilde p \\le \\alpha`. Under
  any dependence between the tests, the chance of flagging anything when every chain targets one
  distribution is then at most :math:`\\alpha` (0.01, arviz-plots' level); the unadjusted count is
  reported beside it.

Posterior elements whose draws are all identical (e.g. the fixed diagonal of an LKJ Cholesky factor)
have no defined R-hat or ESS; they are skipped and counted in the check's note, not failed.
Non-finite diagnostics of non-constant elements fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import arviz_stats as azs
import numpy as np
import xarray as xr

from alliance_bayes.rank_diagnostics import STATISTICS, UNIFORMITY, dataset_diagnostics

__all__ = [
    "UNIFORMITY_ALPHA",
    "UNIFORMITY_TEST",
    "CheckResult",
    "GateResult",
    "check_convergence",
    "element_names",
    "format_p",
    "holm_adjust",
]

_SAMPLE_DIMS = ("chain", "draw")
_N_WORST = 10
#: Level of the rank-uniformity warning: arviz-plots' (1 - its ``stats.envelope_prob`` of 0.99).
UNIFORMITY_ALPHA = 0.01
#: The test, as captions and ``diagnostics.md`` name it.
UNIFORMITY_TEST = (
    "multi-chain rank-uniformity test (arviz-stats' mchain_uniformity_test; Tesso & Vehtari "
    "2026, arXiv:2603.02928), each chain thinned to about independent draws"
)


@dataclass
class CheckResult:
    """One check of the gate.

    Attributes
    ----------
    name : str
        ``r_hat``, ``ess_bulk``, ``ess_tail``, ``divergences``, ``e_bfmi`` or ``treedepth``.
    description : str
        What was computed, in words.
    value : float or None
        The worst value over everything checked (max R-hat, min ESS, divergence count, min E-BFMI,
        saturated share); ``None`` when nothing could be computed.
    threshold : float
        The limit.
    comparison : str
        ``"<="`` or ``">="``: how ``value`` must relate to ``threshold`` to pass.
    passed : bool
    n_checked, n_failed : int
        Elements (or chains) checked and failing.
    worst : list of dict
        Up to 10 worst offenders (failing ones first, by badness) as ``{"name", "value"}``, e.g.
        ``{"name": "b[therapist, goal, within]", "value": 1.05}``.
    note : str
        Anything the reader must know (skipped constant elements, missing sample stats).
    """

    name: str
    description: str
    value: float | None
    threshold: float
    comparison: str
    passed: bool
    n_checked: int
    n_failed: int
    worst: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass
class GateResult:
    """Outcome of :func:`check_convergence`.

    Attributes
    ----------
    passed : bool
        True only if every check passed.
    checks : list of CheckResult
    chains, draws : int
        Posterior size the gate saw.
    warnings : list of CheckResult
        Checks reported beside the verdict and not part of it (``rank_uniformity``); their
        ``passed`` is False when they flag something.
    """

    passed: bool
    checks: list[CheckResult]
    chains: int
    draws: int
    warnings: list[CheckResult] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed."""
        return [c.name for c in self.checks if not c.passed]

    def headline(self) -> str:
        """``Convergence: PASSED`` or ``Convergence: FAILED — <checks and worst offenders>``."""
        if self.passed:
            return "Convergence: PASSED"
        parts = []
        for c in self.checks:
            if not c.passed:
                who = ", ".join(w["name"] for w in c.worst[:3] if w.get("failed", True))
                parts.append(f"{c.name} ({who})" if who else c.name)
        return "Convergence: FAILED — " + "; ".join(parts)

    def __repr__(self) -> str:
        """The verdict, then one line per check (worst value, threshold, counts, worst offender),
        the warnings, and the tail-ESS convention."""
        lines = [f"{self.headline()} ({self.chains} chains × {self.draws} draws)"]
        for c in [*self.checks, *self.warnings]:
            verdict = "pass" if c.passed else ("FAIL" if c in self.checks else "warn")
            who = next((w["name"] for w in c.worst if w.get("failed")), None)
            lines.append(
                f"  {c.name:<15} {_fmt(c.value):>9} {c.comparison} {_fmt(c.threshold):<6} "
                f"{verdict:<4}  {c.n_failed} of {c.n_checked} failing"
                + (f"; worst {who}" if who else "")
                + (" (warning, not in the verdict)" if c in self.warnings else "")
            )
        lines.append(
            "  R-hat rank-normalised split; tail ESS at the 5% and 95% quantiles (Vehtari et al. "
            "2021, doi:10.1214/20-BA1221), not ArviZ's default 11% and 89%."
        )
        return "\n".join(lines)

    __str__ = __repr__

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict for ``diagnostics.json``."""
        return {
            "passed": self.passed,
            "headline": self.headline(),
            "chains": self.chains,
            "draws": self.draws,
            "reference": "Vehtari et al. (2021) doi:10.1214/20-BA1221",
            "checks": [_jsonable(asdict(c)) for c in self.checks],
            "warnings": [_jsonable(asdict(c)) for c in self.warnings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateResult:
        """The inverse of :meth:`to_json` (reads a bundle's ``diagnostics.json``)."""
        keys = {f.name for f in fields(CheckResult)}
        checks, warnings = (
            [CheckResult(**{k: v for k, v in c.items() if k in keys}) for c in data.get(group, [])]
            for group in ("checks", "warnings")
        )
        return cls(bool(data["passed"]), checks, int(data["chains"]), int(data["draws"]), warnings)

    def to_markdown(self) -> str:
        """Readable ``diagnostics.md``: a loud first line, a summary, then a table per check."""
        lines = [f"# {self.headline()}", ""]
        for w in self.warnings:
            if not w.passed:
                lines += [f"**Warning (not part of the verdict):** {w.name}: {w.note}", ""]
        lines.append(
            f"{self.chains} chains × {self.draws} draws. Rank-normalised split R-hat, bulk and "
            "tail ESS as in Vehtari et al. (2021), doi:10.1214/20-BA1221; tail ESS at the 5% "
            "and 95% quantiles (ArviZ's ess(method='tail') defaults to 11% and 89%)."
        )
        lines += ["", "| Check | Worst value | Threshold | Checked | Failing | Verdict |"]
        lines.append("|---|---|---|---|---|---|")
        for c in self.checks:
            lines.append(
                f"| {c.name} | {_fmt(c.value)} | {c.comparison} {_fmt(c.threshold)} | "
                f"{c.n_checked} | {c.n_failed} | {'pass' if c.passed else '**FAIL**'} |"
            )
        for c in self.checks:
            lines += ["", f"## {c.name}: {'passed' if c.passed else 'FAILED'}", "", c.description]
            if c.note:
                lines += ["", f"Note: {c.note}"]
            if c.worst:
                lines += ["", "| Worst offenders | Value | Verdict |", "|---|---|---|"]
                for w in c.worst:
                    verdict = "**FAIL**" if w.get("failed") else "ok"
                    lines.append(f"| `{w['name']}` | {_fmt(w['value'])} | {verdict} |")
        for c in self.warnings:
            lines += _warning_markdown(c)
        return "\n".join(lines) + "\n"


def _warning_markdown(c: CheckResult) -> list[str]:
    """A warning's section: what was tested, the counts, and the smallest p-values."""
    lines = [
        "",
        f"## Warning {c.name}: {'none' if c.passed else 'FLAGGED'} (not part of the verdict)",
    ]
    lines += ["", c.description, "", c.note]
    if c.worst:
        lines += [
            "",
            f"| Smallest p-values | p | Holm-adjusted p | p ≤ {c.threshold:g} | Flagged |",
        ]
        lines.append("|---|---|---|---|---|")
        for w in c.worst:
            raw = "yes" if w["value"] is not None and w["value"] <= c.threshold else "no"
            lines.append(
                f"| `{w['name']}` | {format_p(w['value'], False)} | "
                f"{format_p(w.get('p_holm'), False)} | {raw} | "
                f"{'**warn**' if w.get('failed') else 'no'} |"
            )
    return lines


def format_p(p: float | None, prefix: bool = True) -> str:
    """A p-value to two significant digits, ``< 0.001`` below that: ``p = 0.034``, ``p < 0.001``."""
    if p is None or not math.isfinite(p):
        text = "n/a"
    elif p < 0.001:
        text = "< 0.001"
    else:
        text = f"{p:.2g}" if p < 0.1 else f"{p:.2f}"
    if not prefix or text == "n/a":
        return text
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, *Scand. J. Statist.* 6:65-70).

    With :math:`p_{(1)} \\le \\dots \\le p_{(m)}`, :math:`\\tilde p_{(i)} = \\max_{j \\le i}
    \\min(1, (m - j + 1)\\, p_{(j)})`; rejecting every :math:`\\tilde p \\le \\alpha` keeps the
    family-wise error rate at most :math:`\\alpha` under any dependence. NaN stays NaN and does not
    count in :math:`m`.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if float(x).is_integer() and abs(x) < 1e12:
        return str(int(x))
    return f"{x:.4g}"


def _jsonable(obj: Any) -> Any:
    """Replace NaN/inf by None (strict JSON has neither) and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def element_names(da: xr.DataArray, name: str | None = None) -> list[str]:
    """Names of the elements of ``da`` in C order: ``b[therapist, goal, within]``, ``sigma``.

    Dimensions without coordinates use the integer position; ``chain`` and ``draw`` are ignored.
    """
    name = str(da.name if name is None else name)
    dims = [d for d in da.dims if d not in _SAMPLE_DIMS]
    if not dims:
        return [name]
    labels = []
    for dim in dims:
        if dim in da.coords:
            labels.append([str(v) for v in da.coords[dim].values])
        else:
            labels.append([str(i) for i in range(da.sizes[dim])])
    idx = np.indices([len(x) for x in labels]).reshape(len(labels), -1).T
    return [f"{name}[{', '.join(labels[k][i] for k, i in enumerate(row))}]" for row in idx]


def _flatten(
    stat: xr.Dataset, constant: dict[str, np.ndarray], prefix: str = ""
) -> tuple[list[tuple[str, float]], int]:
    """(name, value) for each non-constant element of each variable; count of skipped ones."""
    items: list[tuple[str, float]] = []
    skipped = 0
    for var, da in stat.data_vars.items():
        names = element_names(da, f"{prefix}{var}")
        vals = np.asarray(da.values, dtype=float).ravel()
        const = constant[str(var)].ravel()
        for n, v, c in zip(names, vals, const, strict=True):
            if c:
                skipped += 1
            else:
                items.append((n, float(v)))
    return items, skipped


def _is_constant(ds: xr.Dataset) -> dict[str, np.ndarray]:
    out = {}
    for var, da in ds.data_vars.items():
        v = da.transpose(*_SAMPLE_DIMS, ...).values
        flat = v.reshape(v.shape[0] * v.shape[1], -1)
        out[str(var)] = np.all(flat == flat[:1], axis=0).reshape(v.shape[2:])
    return out


def _threshold_check(
    name: str,
    description: str,
    items: list[tuple[str, float]],
    threshold: float,
    comparison: str,
    note: str = "",
) -> CheckResult:
    """Compare each (name, value) with ``threshold``; NaN counts as a failure."""

    def ok(v: float) -> bool:
        if not math.isfinite(v):
            return False
        return v <= threshold if comparison == "<=" else v >= threshold

    # Badness key: NaN worst, then distance beyond the threshold in the failing direction.
    def badness(item: tuple[str, float]) -> float:
        v = item[1]
        if not math.isfinite(v):
            return math.inf
        return v if comparison == "<=" else -v

    ranked = sorted(items, key=badness, reverse=True)
    failed = [it for it in ranked if not ok(it[1])]
    worst = [{"name": n, "value": v, "failed": not ok(v)} for n, v in ranked[:_N_WORST]]
    if ranked:
        value = ranked[0][1]
    else:
        value = None
    return CheckResult(
        name=name,
        description=description,
        value=value,
        threshold=threshold,
        comparison=comparison,
        passed=not failed and bool(items),
        n_checked=len(items),
        n_failed=len(failed) if items else 1,
        worst=worst,
        note=note if items else (note + " Nothing to check.").strip(),
    )


def _numeric(ds: xr.Dataset) -> xr.Dataset:
    """Numeric variables that carry both sample dims (the only ones with MCMC diagnostics)."""
    keep = [
        v
        for v, da in ds.data_vars.items()
        if all(d in da.dims for d in _SAMPLE_DIMS) and np.issubdtype(da.dtype, np.number)
    ]
    return ds[keep].astype(float, copy=False)  # float64 draws are not copied


def check_convergence(
    dt: xr.DataTree,
    estimands: xr.Dataset | None = None,
    *,
    rhat_max: float = 1.01,
    ess_min: float = 400.0,
    ebfmi_min: float = 0.3,
    max_divergences: int = 0,
    max_treedepth_share: float = 0.0,
) -> GateResult:
    """Run every convergence check on ``dt`` (and the estimands derived from it).

    Parameters
    ----------
    dt : xarray.DataTree
        Sampler output with ``posterior`` and ``sample_stats`` groups.
    estimands : xarray.Dataset, optional
        Output of :func:`alliance_bayes.model.regression.estimands.compute_estimands`; checked for R-hat and
        ESS alongside the posterior (names prefixed ``estimand:`` in the offender lists).
    rhat_max : float
        Largest acceptable rank-normalised R-hat (1.01, Vehtari et al. 2021).
    ess_min : float
        Smallest acceptable bulk and tail ESS (400).
    ebfmi_min : float
        Smallest acceptable E-BFMI in any chain (0.3).
    max_divergences : int
        Largest acceptable number of divergent transitions (0).
    max_treedepth_share : float
        Largest acceptable share of draws with ``maxdepth_reached`` (0.0: any saturation fails).

    Returns
    -------
    GateResult
        ``passed`` is True only if all six checks pass. A missing ``diverging`` or ``energy``
        sample stat fails its check (the gate cannot vouch for what it cannot see); a missing
        ``maxdepth_reached`` passes with a note, because not every sampler reports it.
    """
    posterior = _numeric(dt["posterior"].to_dataset())
    chains, draws = int(posterior.sizes["chain"]), int(posterior.sizes["draw"])
    sources = [("", posterior)]
    if estimands is not None and estimands.data_vars:
        sources.append(("estimand:", _numeric(estimands)))

    per_stat: dict[str, list[tuple[str, float]]] = {k: [] for k in (*STATISTICS, UNIFORMITY)}
    skipped = 0
    for prefix, ds in sources:
        const = _is_constant(ds)
        for key, stat in dataset_diagnostics(ds, statistics=(*STATISTICS, UNIFORMITY)).items():
            items, n_skip = _flatten(stat, const, prefix)
            per_stat[key] += items
        skipped += n_skip
    note = f"{skipped} constant element(s) skipped (no defined R-hat/ESS)." if skipped else ""

    checks = [
        _threshold_check(
            "r_hat",
            "Rank-normalised split R-hat of every posterior element and estimand.",
            per_stat["r_hat"],
            rhat_max,
            "<=",
            note,
        ),
        _threshold_check(
            "ess_bulk",
            "Bulk effective sample size of every posterior element and estimand.",
            per_stat["ess_bulk"],
            ess_min,
            ">=",
            note,
        ),
        _threshold_check(
            "ess_tail",
            "Tail effective sample size (5% and 95% quantiles) of every element and estimand.",
            per_stat["ess_tail"],
            ess_min,
            ">=",
            note,
        ),
    ]
    stats_ds = dt["sample_stats"].to_dataset() if "sample_stats" in dt.children else xr.Dataset()
    checks.append(_divergence_check(stats_ds, max_divergences))
    checks.append(_ebfmi_check(stats_ds, ebfmi_min))
    checks.append(_treedepth_check(stats_ds, max_treedepth_share))
    return GateResult(
        passed=all(c.passed for c in checks),
        checks=checks,
        chains=chains,
        draws=draws,
        warnings=[_uniformity_warning(per_stat[UNIFORMITY], UNIFORMITY_ALPHA)]
        if chains > 1
        else [],
    )


def _uniformity_warning(items: list[tuple[str, float]], alpha: float) -> CheckResult:
    """The ``rank_uniformity`` warning: Holm-adjusted flags over every tested quantity."""
    names = [n for n, _ in items]
    p = np.array([v for _, v in items], dtype=float)
    adjusted = holm_adjust(p)
    tested = np.isfinite(p)
    m = int(tested.sum())
    raw = int(np.sum(p[tested] <= alpha))
    flagged = np.flatnonzero(adjusted <= alpha)
    order = np.flatnonzero(tested)[np.argsort(p[tested], kind="stable")][:_N_WORST]
    worst = [
        {
            "name": names[i],
            "value": float(p[i]),
            "p_holm": float(adjusted[i]),
            "failed": bool(adjusted[i] <= alpha),
        }
        for i in order
    ]
    who = ", ".join(f"{names[i]} ({format_p(p[i])})" for i in flagged[np.argsort(p[flagged])][:5])
    note = (
        f"{flagged.size} of {m} quantities flagged after Holm adjustment at α = {alpha:g}"
        + (f": {who}" if flagged.size else "")
        + f"; {raw} with unadjusted p ≤ {alpha:g} (about {m * alpha:.1f} expected by chance if "
        "every chain targets one distribution)."
    )
    if m < len(items):
        note += f" {len(items) - m} not tested (non-finite draws)."
    return CheckResult(
        name="rank_uniformity",
        description=(
            f"The {UNIFORMITY_TEST}, of every posterior element and estimand; Holm-adjusted over "
            "all of them (Holm 1979). Chains of one distribution give uniform ranks; a flag says "
            "some chain's ranks are not, i.e. the chains have not all found the same posterior."
        ),
        value=float(np.nanmin(p)) if m else None,
        threshold=alpha,
        comparison=">=",
        passed=not flagged.size,
        n_checked=m,
        n_failed=int(flagged.size),
        worst=worst,
        note=note,
    )


def _per_chain(da: xr.DataArray) -> Iterable[tuple[str, xr.DataArray]]:
    for i, ch in enumerate(
        da["chain"].values if "chain" in da.coords else range(da.sizes["chain"])
    ):
        yield f"chain {ch}", da.isel(chain=i)


def _divergence_check(stats: xr.Dataset, max_divergences: int) -> CheckResult:
    desc = "Divergent transitions after warm-up, per chain."
    if "diverging" not in stats:
        return CheckResult(
            "divergences",
            desc,
            None,
            max_divergences,
            "<=",
            False,
            0,
            1,
            note="sample_stats has no `diverging`; cannot verify.",
        )
    per = [
        (n, int(np.asarray(d.values, dtype=bool).sum())) for n, d in _per_chain(stats["diverging"])
    ]
    total = sum(v for _, v in per)
    worst = [
        {"name": n, "value": v, "failed": v > 0}
        for n, v in sorted(per, key=lambda x: x[1], reverse=True)
    ]
    return CheckResult(
        name="divergences",
        description=desc + " The value is the total over chains.",
        value=float(total),
        threshold=float(max_divergences),
        comparison="<=",
        passed=total <= max_divergences,
        n_checked=len(per),
        n_failed=sum(1 for _, v in per if v > 0),
        worst=worst,
    )


def _ebfmi_check(stats: xr.Dataset, ebfmi_min: float) -> CheckResult:
    desc = "Energy Bayesian fraction of missing information (E-BFMI) of each chain."
    if "energy" not in stats:
        return CheckResult(
            "e_bfmi",
            desc,
            None,
            ebfmi_min,
            ">=",
            False,
            0,
            1,
            note="sample_stats has no `energy`; cannot verify.",
        )
    bfmi = azs.bfmi(stats[["energy"]].astype(float))["energy"]
    items = []
    chain_labels = stats["chain"].values if "chain" in stats.coords else range(bfmi.size)
    for label, v in zip(chain_labels, np.asarray(bfmi.values, dtype=float).ravel(), strict=True):
        items.append((f"chain {label}", float(v)))
    return _threshold_check("e_bfmi", desc, items, ebfmi_min, ">=")


def _treedepth_check(stats: xr.Dataset, max_share: float) -> CheckResult:
    desc = "Share of draws whose trajectory hit the maximum tree depth, per chain."
    if "maxdepth_reached" not in stats:
        return CheckResult(
            "treedepth",
            desc,
            None,
            max_share,
            "<=",
            True,
            0,
            0,
            note="sample_stats has no `maxdepth_reached`; not checked.",
        )
    items = [
        (n, float(np.asarray(d.values, dtype=bool).mean()))
        for n, d in _per_chain(stats["maxdepth_reached"])
    ]
    overall = float(np.asarray(stats["maxdepth_reached"].values, dtype=bool).mean())
    res = _threshold_check(
        "treedepth", desc + " The value is the worst chain's share.", items, max_share, "<="
    )
    res.note = f"Overall share {overall:.4g}."
    return res
