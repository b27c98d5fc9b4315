r"""Prior sensitivity: power-scaling diagnostics and refits under other priors.

Power-scaling (Kallioinen, Paananen, Bürkner & Vehtari 2024, doi:10.1007/s11222-023-10366-5)
raises the prior (or the likelihood) to a power :math:`\alpha` near 1 by importance sampling and
reports, per quantity, the cumulative Jensen–Shannon distance per unit of :math:`\log\alpha`.
``arviz_stats.psense_summary`` flags a quantity when either value exceeds 0.05: prior sensitive
with likelihood sensitive is a "potential prior-data conflict", prior sensitive without it a
"potential strong prior / weak likelihood". We run it on the stable-named **estimands** (computed
per draw), with

* the prior: every ``log_prior`` term except the non-centred auxiliaries ``z_*`` (standard Normal
  by construction; they are part of the hierarchical model, and power-scaling them would rescale the
  provider or care-type effects rather than a prior anyone chose);
* the likelihood: the per-client log-likelihood (:func:`alliance_bayes.checks.compare.client_log_likelihood`);
  for the latent model that is the outcomes' likelihood given the session ratings, whose own
  likelihood is not scaled (it is the measurement model, conditioned on like a design).

Refits under a wider and a narrower prior set, declared as TOML specs
(``models/who5_change_priors_wide.toml``: every scale doubled, LKJ η = 1;
``..._narrow.toml``: halved, η = 4; the same for ``alliance_latent_who5``, measurement priors
included), show how far each posterior mean moves, in units of the base posterior SD.

Verdict per estimand
    ``robust``: every refit moves the mean by less than ``shift_limit`` (0.5) base posterior SD and
    psense flags nothing; ``prior-sensitive``: some refit moves it by ``shift_limit`` SD or more;
    ``flagged by psense (<diagnosis>)``: the refits agree but power-scaling flags it (read with
    the refits: the refits are the larger perturbation, power-scaling the local one).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.report.render import latex_escape, latex_table, markdown_table

__all__ = [
    "SHIFT_LIMIT",
    "prior_variables",
    "psense_estimands",
    "sensitivity_latex",
    "sensitivity_markdown",
    "shift_table",
    "verdicts",
    "write_sensitivity",
]

SHIFT_LIMIT = 0.5
PSENSE_THRESHOLD = 0.05
ROBUST = "robust"


def prior_variables(dt: xr.DataTree) -> list[str]:
    """The ``log_prior`` terms that power-scaling scales: all but the non-centred ``z_*``."""
    return [str(v) for v in dt["log_prior"].data_vars if not str(v).startswith("z_")]


def psense_estimands(
    dt: xr.DataTree,
    estimands: xr.Dataset,
    var_names: Sequence[str] | None = None,
    threshold: float = PSENSE_THRESHOLD,
) -> pd.DataFrame:
    """Power-scaling sensitivity of each estimand: columns ``prior``, ``likelihood``, ``diagnosis``.

    ``dt`` must hold ``log_prior`` and ``log_likelihood`` (as :func:`~alliance_bayes.inference.sample_model`
    writes them); ``estimands`` is :func:`~alliance_bayes.report.estimands.compute_estimands`' output.
    """
    import arviz_stats as azs

    from alliance_bayes.checks.compare import CLIENT_VAR, client_log_likelihood

    names = list(var_names) if var_names is not None else [str(v) for v in estimands.data_vars]
    ll = client_log_likelihood(dt)["log_likelihood"].to_dataset()
    tree = xr.DataTree.from_dict(
        {
            "posterior": estimands[names].reset_coords(drop=True),
            "log_prior": dt["log_prior"].to_dataset()[prior_variables(dt)],
            "log_likelihood": ll,
        }
    )
    # psense_summary prints a pointer to the docs when it flags anything; the table says it all.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = azs.psense_summary(
            tree,
            threshold=threshold,
            prior_var_names=prior_variables(dt),
            likelihood_var_names=[CLIENT_VAR],
            round_to=6,
        )
    out = pd.DataFrame(out)
    out.index = [str(i) for i in out.index]
    out["diagnosis"] = out["diagnosis"].astype(str)
    return out


def shift_table(
    base: xr.Dataset, variants: Mapping[str, xr.Dataset], names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Posterior mean and SD of each estimand under the base priors and each variant.

    Columns: ``mean``, ``sd`` (base), then per variant ``<v>:mean``, ``<v>:sd`` and ``<v>:shift`` =
    (variant mean − base mean) / base SD; and ``max_abs_shift``.
    """
    names = list(names) if names is not None else [str(v) for v in base.data_vars]
    rows = []
    for n in names:
        b = np.asarray(base[n].values, float).ravel()
        row: dict[str, Any] = {"estimand": n, "mean": b.mean(), "sd": b.std(ddof=1)}
        shifts = []
        for v, ds in variants.items():
            if n not in ds:
                row[f"{v}:mean"] = row[f"{v}:sd"] = row[f"{v}:shift"] = np.nan
                continue
            x = np.asarray(ds[n].values, float).ravel()
            row[f"{v}:mean"], row[f"{v}:sd"] = x.mean(), x.std(ddof=1)
            row[f"{v}:shift"] = (x.mean() - row["mean"]) / row["sd"] if row["sd"] > 0 else np.nan
            shifts.append(abs(row[f"{v}:shift"]))
        row["max_abs_shift"] = float(np.nanmax(shifts)) if shifts else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("estimand")


def verdicts(
    shifts: pd.DataFrame | None,
    psense: pd.DataFrame | None,
    shift_limit: float = SHIFT_LIMIT,
) -> pd.Series:
    """One verdict per estimand (see the module docstring)."""
    index = list(shifts.index if shifts is not None else psense.index)
    out = {}
    for n in index:
        reasons = []
        if shifts is not None and n in shifts.index:
            s = shifts.loc[n, "max_abs_shift"]
            if np.isfinite(s) and s >= shift_limit:
                reasons.append(f"prior-sensitive (mean moves {s:.2f} SD)")
        if psense is not None and n in psense.index:
            d = str(psense.loc[n, "diagnosis"])
            if d.strip() not in ("✓", "", "nan"):
                reasons.append(f"flagged by psense ({d})")
        out[n] = "; ".join(reasons) if reasons else ROBUST
    return pd.Series(out, name="verdict")


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
    keep = ["mean", "sd"]
    keep += [c for c in table.columns if c.endswith(":mean") or c.endswith(":shift")]
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
        f"`<set>:shift` = (mean under that prior set − base mean) / base posterior SD. psense: "
        f"power-scaling sensitivity (Kallioinen et al. 2024; flagged above {PSENSE_THRESHOLD}). "
        f"Verdict `robust`: every shift below {SHIFT_LIMIT} SD and no psense flag.",
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
    "who5_change": ("who5_change_priors_wide", "who5_change_priors_narrow"),
    "alliance_latent_who5": (
        "alliance_latent_who5_priors_wide",
        "alliance_latent_who5_priors_narrow",
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
) -> Path:
    """Power-scaling sensitivity of every model and refits of each base model under the prior
    sets in ``variants``; writes ``<results>/sensitivity/<run-id>/`` and returns the folder.

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
            "verdicts": table["verdict"].value_counts().to_dict(),
        }
        log(sensitivity_markdown(table, f"## {name}"))
    meta = {
        "models": meta_models,
        "shift_limit_sd": SHIFT_LIMIT,
        "psense_threshold": PSENSE_THRESHOLD,
        "psense_prior_terms": "log_prior minus the non-centred z_* auxiliaries",
        "data_sha256": study.sha256,
        "wall_s": time.perf_counter() - started,
        **environment(),
    }
    return write_sensitivity(results, time_id(), tables, meta)


def _refit_estimands(spec: str, study, options: dict):
    """One prior-set refit's estimands (a task: runs in whichever process the executor picks)."""
    from alliance_bayes.fitting import fit

    return fit(spec, study, **options).estimands
