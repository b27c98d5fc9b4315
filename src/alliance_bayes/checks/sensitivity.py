r"""Prior sensitivity: power-scaling diagnostics and refits under other priors.

Power-scaling (Kallioinen, Paananen, Bürkner & Vehtari 2024, doi:10.1007/s11222-023-10366-5)
raises the prior (or the likelihood) to a power :math:`\alpha` near 1 by importance sampling and
reports, per quantity, the cumulative Jensen–Shannon distance per unit of :math:`\log\alpha`.
``arviz_stats.psense_summary`` flags a quantity when either value exceeds 0.05: prior sensitive
with likelihood sensitive is a "potential prior-data conflict", prior sensitive without it a
"potential strong prior / weak likelihood". We run it on the stable-named **estimands** (computed
per draw), with

* the prior: the **top-level** priors only, an explicit list (:data:`TOP_LEVEL_PRIORS`: the
  intercept, baseline, covariate, care-type and alliance coefficients, the hyper-mean ``mu_b``
  of the care-type slopes, ``sd_b`` when it is estimated, the provider SDs, the LKJ correlations, ``sigma``,
  ``nu`` and the measurement priors of the latent model). For a hierarchy
  :math:`p(\theta \mid \phi)\, p(\phi)` the power-scaled posterior is
  :math:`p(y \mid \theta)\, p(\theta \mid \phi)\, p(\phi)^{\alpha}`, as brms's ``lprior`` (what
  priorsense scales by default) holds the priors of the population-level parameters and
  hyperparameters and not the group-level effects: the importance weights
  :math:`p(\phi)^{\alpha - 1}` are densities of the hyperparameters on their own scale, the same
  whichever coordinates the sampler used for :math:`\theta`. The layers
  :math:`p(\theta \mid \phi)` (:data:`HIERARCHICAL_LAYERS`) are not scaled: which of them the log
  prior holds depends on data-dependent centring choices (a care-type slope is
  ``b_centred_slope`` or ``z_b`` cell by cell, a provider intercept ``v_provider`` with a
  per-provider degree of non-centring, or ``v_provider_sampled`` in the collapsed form), and
  :math:`\log \mathcal N(b; \mu, \tau)` and :math:`\log \mathcal N(z; 0, 1)` differ by
  :math:`\log \tau`, which varies with an estimated :math:`\tau`. With the spread of the care-type
  slopes fixed (the default), its scale ``sd_b_sd`` is varied by the refits instead;
* the likelihood: the per-client log-likelihood (:func:`alliance_bayes.model.pointwise.client_log_likelihood`);
  for the latent model that is the outcomes' likelihood given the session ratings, whose own
  likelihood is not scaled (it is the measurement model, conditioned on like a design).

Refits under other prior sets, declared as TOML specs, show how far each posterior moves:
``models/who5_change_priors_wide.toml`` (every scale doubled, LKJ η = 1), ``..._narrow.toml``
(halved, η = 4), ``..._halfnormal.toml`` (the provider SDs Half-Normal instead of Gamma(2), at the
same prior mean; Gamma(2) has zero density at 0, which rescaling never changes); the same wide and
narrow sets for ``alliance_latent_who5``, measurement priors included. Per estimand and prior set,
the table gives the mean shift in base posterior SDs and the ratio of posterior SDs.

Verdict per estimand
    ``robust``: under every prior set the mean moves by less than ``shift_limit`` (0.5) base
    posterior SD, the posterior SD ratio (variant / base) lies within
    [1 / ``sd_ratio_limit``, ``sd_ratio_limit``] = [0.8, 1.25], and psense flags nothing.
    The SD interval is symmetric on the log scale, so that a prior set that narrows the posterior
    by a factor counts as much as one that widens it by that factor; a change of more than 25%
    either way is one a reader of the interval would notice (the Monte Carlo error of a ratio of
    two SDs of Normal draws, each with an ESS of 1,000, is about 3%).
    ``prior-sensitive (...)``: some prior set moves the mean by ``shift_limit`` SD or more, or
    moves the SD ratio outside those limits (the reason says which, with the value);
    ``flagged by psense (<diagnosis>)``: the refits agree but power-scaling flags it (read with
    the refits: the refits are the larger perturbation, power-scaling the local one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.checks.base import CheckResult
from alliance_bayes.model.psense import (
    HIERARCHICAL_LAYERS,
    PSENSE_THRESHOLD,
    TOP_LEVEL_PRIORS,
    prior_variables,
    psense_estimands,
    top_level_priors,
)
from alliance_bayes.report.render import latex_escape, latex_table, markdown_table

__all__ = [
    "HIERARCHICAL_LAYERS",
    "SD_RATIO_LIMIT",
    "SHIFT_LIMIT",
    "TOP_LEVEL_PRIORS",
    "prior_variables",
    "psense_estimands",
    "sensitivity_latex",
    "sensitivity_markdown",
    "shift_table",
    "top_level_priors",
    "verdicts",
    "write_sensitivity",
]

SHIFT_LIMIT = 0.5
SD_RATIO_LIMIT = 1.25
ROBUST = "robust"


def shift_table(
    base: xr.Dataset, variants: Mapping[str, xr.Dataset], names: Sequence[str] | None = None
) -> pd.DataFrame:
    r"""Posterior mean and SD of each estimand under the base priors and each variant.

    Columns: ``mean``, ``sd`` (base), then per variant ``<v>:mean``, ``<v>:sd``,
    ``<v>:shift`` = (variant mean − base mean) / base SD and ``<v>:sd_ratio`` = variant SD / base
    SD; ``max_abs_shift`` (the largest :math:`|\text{shift}|`) and ``extreme_sd_ratio`` (the ratio
    farthest from 1 on the log scale, :math:`\max |\log r|`).
    """
    names = list(names) if names is not None else [str(v) for v in base.data_vars]
    rows = []
    for n in names:
        b = np.asarray(base[n].values, float).ravel()
        row: dict[str, Any] = {"estimand": n, "mean": b.mean(), "sd": b.std(ddof=1)}
        shifts, ratios = [], []
        for v, ds in variants.items():
            if n not in ds:
                for col in ("mean", "sd", "shift", "sd_ratio"):
                    row[f"{v}:{col}"] = np.nan
                continue
            x = np.asarray(ds[n].values, float).ravel()
            row[f"{v}:mean"], row[f"{v}:sd"] = x.mean(), x.std(ddof=1)
            positive = row["sd"] > 0
            row[f"{v}:shift"] = (x.mean() - row["mean"]) / row["sd"] if positive else np.nan
            row[f"{v}:sd_ratio"] = row[f"{v}:sd"] / row["sd"] if positive else np.nan
            shifts.append(abs(row[f"{v}:shift"]))
            ratios.append(row[f"{v}:sd_ratio"])
        row["max_abs_shift"] = _nanmax(shifts)
        row["extreme_sd_ratio"] = _extreme_ratio(ratios)
        rows.append(row)
    return pd.DataFrame(rows).set_index("estimand")


def _nanmax(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(max(finite)) if finite else np.nan


def _extreme_ratio(ratios: Sequence[float]) -> float:
    """The ratio farthest from 1 on the log scale (NaN when none is finite and positive)."""
    usable = [r for r in ratios if np.isfinite(r) and r > 0]
    return float(max(usable, key=lambda r: abs(np.log(r)))) if usable else np.nan


def verdicts(
    shifts: pd.DataFrame | None,
    psense: pd.DataFrame | None,
    shift_limit: float = SHIFT_LIMIT,
    sd_ratio_limit: float = SD_RATIO_LIMIT,
) -> pd.Series:
    """One verdict per estimand (see the module docstring).

    ``shifts`` needs ``max_abs_shift`` and, to check the spread, ``extreme_sd_ratio``
    (:func:`shift_table`); ``psense`` needs ``diagnosis`` (:func:`psense_estimands`).
    """
    index = list(shifts.index if shifts is not None else psense.index)
    out = {}
    for n in index:
        reasons = []
        if shifts is not None and n in shifts.index:
            reasons += _shift_reasons(shifts.loc[n], shift_limit, sd_ratio_limit)
        if psense is not None and n in psense.index:
            d = str(psense.loc[n, "diagnosis"])
            if d.strip() not in ("✓", "", "nan"):
                reasons.append(f"flagged by psense ({d})")
        out[n] = "; ".join(reasons) if reasons else ROBUST
    return pd.Series(out, name="verdict")


def _shift_reasons(row: pd.Series, shift_limit: float, sd_ratio_limit: float) -> list[str]:
    """Why the prior sets move one estimand: its mean, its SD, both or neither."""
    moved = []
    s = row.get("max_abs_shift", np.nan)
    if np.isfinite(s) and s >= shift_limit:
        moved.append(f"mean moves {s:.2f} SD")
    r = row.get("extreme_sd_ratio", np.nan)
    if np.isfinite(r) and not 1.0 / sd_ratio_limit <= r <= sd_ratio_limit:
        moved.append(f"SD ×{r:.2f}")
    return [f"prior-sensitive ({', '.join(moved)})"] if moved else []


def _combined(shifts: pd.DataFrame | None, psense: pd.DataFrame | None) -> pd.DataFrame:
    parts = []
    if shifts is not None:
        parts.append(shifts)
    if psense is not None:
        parts.append(psense.rename(columns={"prior": "psense_prior", "likelihood": "psense_lik"}))
    table = pd.concat(parts, axis=1, join="outer") if len(parts) > 1 else parts[0].copy()
    table["verdict"] = verdicts(shifts, psense)
    table.index.name = "estimand"
    return table


def _cell(v: Any, digits: int = 2) -> str:
    if isinstance(v, str):
        return v
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f}"


def _display_columns(table: pd.DataFrame) -> list[str]:
    # The variants' means and SDs stay in the CSV: shift and SD ratio say how they differ.
    keep = ["mean", "sd"]
    keep += [c for c in table.columns if c.endswith(":shift") or c.endswith(":sd_ratio")]
    keep += [c for c in ("psense_prior", "psense_lik", "diagnosis", "verdict") if c in table]
    return [c for c in keep if c in table]


def sensitivity_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """Markdown: estimand means under each prior set, shifts in base SDs, psense and the verdict."""
    cols = _display_columns(table)
    rows = [
        [f"`{name}`", *(_cell(row[c], 3 if c.startswith("psense") else 2) for c in cols)]
        for name, row in table.iterrows()
    ]
    numeric = [False, *(c not in ("diagnosis", "verdict") for c in cols)]
    lines = ([caption, ""] if caption else []) + markdown_table(
        ["estimand", *cols], rows, numeric=numeric
    )
    lines += [
        "",
        f"`<set>:shift` = (mean under that prior set − base mean) / base posterior SD; "
        f"`<set>:sd_ratio` = posterior SD under that prior set / base posterior SD. psense: "
        f"power-scaling sensitivity of the top-level priors (Kallioinen et al. 2024; flagged "
        f"above {PSENSE_THRESHOLD}). Verdict `robust`: every shift below {SHIFT_LIMIT} SD, "
        f"every SD ratio within [{1 / SD_RATIO_LIMIT:.2f}, {SD_RATIO_LIMIT:.2f}] and no "
        f"psense flag.",
        "",
    ]
    return "\n".join(lines)


def sensitivity_latex(
    table: pd.DataFrame, caption: str = "", label: str = "tab:sensitivity"
) -> str:
    """LaTeX version of :func:`sensitivity_markdown` (booktabs)."""
    cols = _display_columns(table)
    rows = [
        [rf"\texttt{{{latex_escape(name)}}}"]
        + [latex_escape(_cell(row[c], 3 if c.startswith("psense") else 2)) for c in cols]
        for name, row in table.iterrows()
    ]
    align = "l" + "".join("l" if c in ("diagnosis", "verdict") else "r" for c in cols)
    header = ["Estimand", *(latex_escape(c) for c in cols)]
    lines = latex_table(
        header, rows, align=align, caption=caption, label=label, size=r"\scriptsize", escaped=True
    )
    return "\n".join(lines)


def combined_table(shifts: pd.DataFrame | None, psense: pd.DataFrame | None) -> pd.DataFrame:
    """Shifts, psense and verdict side by side (index: estimand)."""
    return _combined(shifts, psense)


def write_sensitivity(
    results_root: str | os.PathLike[str],
    run_id: str,
    tables: Mapping[str, pd.DataFrame],
    meta: Mapping[str, Any],
    *,
    folder: str = "sensitivity",
) -> Path:
    """Write ``results_root/<folder>/<run_id>/`` atomically: per table ``<key>.md|.tex|.csv``, and
    ``run.json``. ``tables`` maps a key (e.g. ``who5_change`` or ``psense_who5_pooled``) to a table
    from :func:`combined_table`."""
    from alliance_bayes.storage import atomic_folder, check_name, dump_json

    for name in (run_id, folder, *tables):
        check_name("name", name)
    with atomic_folder(Path(results_root) / folder, run_id) as tmp:
        for key, table in tables.items():
            caption = f"Prior sensitivity: {key}"
            (tmp / f"{key}.md").write_text(sensitivity_markdown(table, caption), encoding="utf-8")
            (tmp / f"{key}.tex").write_text(
                sensitivity_latex(table, caption, label=f"tab:sens-{key}"), encoding="utf-8"
            )
            table.to_csv(tmp / f"{key}.csv", lineterminator="\n")
        dump_json(dict(meta), tmp / "run.json")
    return Path(results_root) / folder / run_id


# --------------------------------------------------------------------------------------------------
# The whole check, as ``alliance-bayes sensitivity`` runs it

DEFAULT_MODELS = ("paper_table2", "who5_pooled", "who5_intercepts", "who5_change")
#: base model -> prior sets declared as TOML specs (the same model, other [priors])
DEFAULT_VARIANTS = {
    "who5_change": (
        "who5_change_priors_wide",
        "who5_change_priors_narrow",
        "who5_change_priors_halfnormal",
    ),
    "alliance_latent_who5": (
        "alliance_latent_who5_priors_wide",
        "alliance_latent_who5_priors_narrow",
        "alliance_latent_who5_priors_halfnormal",
    ),
}


def run_sensitivity(
    models: Sequence[str],
    study,
    results: Path,
    *,
    variants: Mapping[str, Sequence[str]] | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cache: Path | None = None,
    workers: int = 1,
    dask: str | None = None,
    log=print,
) -> CheckResult:
    """Power-scaling sensitivity of every model and refits of each base model under the prior
    sets in ``variants``; writes ``<results>/sensitivity/<run-id>/``.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` without a verdict (prior
    sensitivity is a finding to report, not a failure): every model's table stacked, with a
    ``model`` column (each alone in ``details["tables"]``), per model how many estimands are
    robust as text, and the folder.

    The prior-set refits are tasks of :func:`alliance_bayes.sweeps.run_tasks`: in this process
    (``workers=1``), or on local processes or dask.distributed (``dask``).
    """
    import time

    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.fitting import fit
    from alliance_bayes.provenance import environment, time_id
    from alliance_bayes.sweeps import run_tasks

    started = time.perf_counter()
    study = study if isinstance(study, RawStudy) else load_study(study)
    variants = DEFAULT_VARIANTS if variants is None else variants
    options = {"draws": draws, "tune": tune, "chains": chains, "progress": False, "cache": cache}
    tables, meta_models = {}, {}
    for name in models:
        base = fit(name, study, **options)
        psense = psense_estimands(base.datatree, base.estimands)
        shifts = None
        if variants.get(name):
            refits = run_tasks(
                _refit_estimands,
                [(v, study, options) for v in variants[name]],
                workers=workers,
                dask=dask,
            )
            shifts = shift_table(base.estimands, dict(zip(variants[name], refits, strict=True)))
        table = combined_table(shifts, psense)
        tables[name] = table
        meta_models[name] = {
            "n_clients": base.meta["n_clients"],
            "variants": list(variants.get(name, ())),
            "psense_prior_terms": prior_variables(base.datatree),
            "verdicts": table["verdict"].value_counts().to_dict(),
        }
        log(sensitivity_markdown(table, f"## {name}"))
    meta = {
        "models": meta_models,
        "shift_limit_sd": SHIFT_LIMIT,
        "sd_ratio_limits": [1.0 / SD_RATIO_LIMIT, SD_RATIO_LIMIT],
        "psense_threshold": PSENSE_THRESHOLD,
        "data_sha256": study.sha256,
        "wall_s": time.perf_counter() - started,
        **environment(),
    }
    path = write_sensitivity(results, time_id(), tables, meta)
    text = "\n".join(
        f"- {name}: {int((t['verdict'] == ROBUST).sum())} of {len(t)} estimands robust"
        for name, t in tables.items()
    )
    stacked = pd.concat([t.assign(model=name) for name, t in tables.items()]) if tables else None
    return CheckResult("sensitivity", None, stacked, text, path, {"tables": tables, "meta": meta})


def _refit_estimands(spec: str, study, options: dict):
    """One prior-set refit's estimands (a task: runs in whichever process the executor picks)."""
    from alliance_bayes.fitting import fit

    return fit(spec, study, **options).estimands
