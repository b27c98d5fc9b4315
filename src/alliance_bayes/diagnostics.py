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

from alliance_bayes.rank_diagnostics import dataset_diagnostics

__all__ = ["CheckResult", "GateResult", "check_convergence", "element_names"]

_SAMPLE_DIMS = ("chain", "draw")
_N_WORST = 10


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
    """

    passed: bool
    checks: list[CheckResult]
    chains: int
    draws: int

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

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict for ``diagnostics.json``."""
        return {
            "passed": self.passed,
            "headline": self.headline(),
            "chains": self.chains,
            "draws": self.draws,
            "reference": "Vehtari et al. (2021) doi:10.1214/20-BA1221",
            "checks": [_jsonable(asdict(c)) for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateResult:
        """The inverse of :meth:`to_json` (reads a bundle's ``diagnostics.json``)."""
        keys = {f.name for f in fields(CheckResult)}
        checks = [CheckResult(**{k: v for k, v in c.items() if k in keys}) for c in data["checks"]]
        return cls(bool(data["passed"]), checks, int(data["chains"]), int(data["draws"]))

    def to_markdown(self) -> str:
        """Readable ``diagnostics.md``: a loud first line, a summary, then a table per check."""
        lines = [f"# {self.headline()}", ""]
        lines.append(
            f"{self.chains} chains × {self.draws} draws. Rank-normalised split R-hat, bulk and "
            "tail ESS as in Vehtari et al. (2021), doi:10.1214/20-BA1221."
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
        return "\n".join(lines) + "\n"


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
    return ds[keep].astype(float)


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
        Output of :func:`alliance_bayes.report.estimands.compute_estimands`; checked for R-hat and
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

    per_stat: dict[str, list[tuple[str, float]]] = {"r_hat": [], "ess_bulk": [], "ess_tail": []}
    skipped = 0
    for prefix, ds in sources:
        const = _is_constant(ds)
        for key, stat in dataset_diagnostics(ds).items():
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
        passed=all(c.passed for c in checks), checks=checks, chains=chains, draws=draws
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
