r"""Missing follow-up by multiple imputation from the posterior, with a δ shift (pattern mixture).

A spec with ``[data] followup_imputations = M`` is fitted in three steps, all through
:func:`~alliance_bayes.fitting.fit_design`:

1. the complete-case fit (the spec with ``followup_imputations = 0``: the clients with a follow-up,
   centred as the whole design is);
2. ``M`` completed datasets, each from one posterior draw of that fit, the missing follow-ups drawn
   from its predictive distribution and shifted by ``followup_delta`` points (the family's
   ``impute``; for the regression family
   :func:`~alliance_bayes.model.regression.predict.impute_designs`);
3. the model refitted to each completed dataset, and the refits' draws pooled (concatenated over
   chains): the Bayesian combination of multiple imputations, whose mixture approximates the
   posterior given the observed data under the imputation model (Zhou & Reiter 2010,
   doi:10.1198/tast.2010.09109; Gelman et al., *Bayesian Data Analysis*, 3rd ed., §18.2).

The summary to quote is Rubin's rules over the refits (:func:`rubin_summary`, in ``run.json``
under ``imputation``): the mixture of few refits understates the between-imputation variance.
δ = 0 is missing at random given the predictors (it should reproduce the complete-case estimates
within Monte Carlo error); δ < 0 says the clients who did not return were doing worse than their
predictors imply (missing not at random). Reporting the key estimands over a range of δ is the
delta-adjusted tipping-point analysis (Cro et al. 2020, doi:10.1002/sim.8569).

The refits keep their draws only. The pooled fit has the complete-case fit's prior groups and no
predictive or pointwise log-likelihood groups (each refit has its own data);
its gate passes only if the complete-case fit and every refit passed their own gates (R-hat across
imputations would flag the between-imputation spread, which is part of the posterior).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from alliance_bayes.diagnostics import GateResult
from alliance_bayes.fitting import Fit, _assemble, fit_design
from alliance_bayes.inference import SamplerSettings
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.design import DesignError
from alliance_bayes.model.spec import ModelSpec

__all__ = ["fit_imputed", "pool_datatrees", "rubin_summary"]

#: Groups kept from the complete-case fit in the pooled DataTree (the others depend on one dataset).
_KEPT = ("prior", "prior_predictive", "constant_data")


def pool_datatrees(trees: list[xr.DataTree], keep_from: xr.DataTree | None = None) -> xr.DataTree:
    """Posterior and sample stats of several fits concatenated over chains (renumbered 0..), with
    the prior groups and constant data of ``keep_from`` (default: the first tree)."""

    def pooled(group: str) -> xr.Dataset:
        parts = [t[group].to_dataset() for t in trees]
        out = xr.concat(parts, dim="chain", coords="minimal", compat="override", join="override")
        return out.assign_coords(chain=np.arange(out.sizes["chain"]))

    groups = {"posterior": pooled("posterior"), "sample_stats": pooled("sample_stats")}
    keep_from = trees[0] if keep_from is None else keep_from
    for g in _KEPT:
        if g in keep_from.children:
            groups[g] = keep_from[g].to_dataset()
    return xr.DataTree.from_dict(groups)


def rubin_summary(estimands: list[xr.Dataset]) -> pd.DataFrame:
    r"""Rubin's rules over the refits, per estimand (Rubin 1987; Barnard & Rubin 1999).

    With :math:`M` refits of posterior means :math:`\bar q_m` and variances :math:`u_m`:
    :math:`\bar q = \frac1M \sum_m \bar q_m`, within :math:`W = \frac1M \sum_m u_m`, between
    :math:`B = \frac{1}{M-1} \sum_m (\bar q_m - \bar q)^2`, total
    :math:`T = W + (1 + 1/M) B`, and a :math:`t_\nu` reference with
    :math:`\nu = (M - 1)(1 + W / ((1 + 1/M) B))^2`. Mixing the refits' draws (the pooled
    posterior) represents :math:`B` by only :math:`M` points and on average by
    :math:`(M - 1)/M` of it, so with few imputations its intervals are too narrow (Zhou & Reiter
    2010); these intervals are the ones to quote. ``fmi`` is the fraction of missing
    information :math:`(1 + 1/M) B / T`.
    """
    m = len(estimands)
    rows = []
    for name in estimands[0].data_vars:
        draws = [np.asarray(e[name].values, float).ravel() for e in estimands]
        means = np.array([d.mean() for d in draws])
        within = float(np.mean([d.var(ddof=1) for d in draws]))
        between = float(means.var(ddof=1)) if m > 1 else 0.0
        total = within + (1 + 1 / m) * between
        extra = (1 + 1 / m) * between
        df = (m - 1) * (1 + within / extra) ** 2 if extra > 0 else np.inf
        half = stats.t.ppf(0.975, df) * np.sqrt(total)
        centre = float(means.mean())
        rows.append(
            {
                "estimand": str(name),
                "mean": centre,
                "sd": float(np.sqrt(total)),
                "ci95_low": centre - half,
                "ci95_high": centre + half,
                "prob_positive": float(stats.t.sf(-centre / np.sqrt(total), df))
                if total > 0
                else float(centre > 0),
                "df": float(df),
                "fmi": extra / total if total > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows)


def _combined_gate(gates: list[GateResult], chains: int) -> GateResult:
    failed = [g for g in gates if not g.passed]
    worst = failed[0] if failed else gates[0]
    return GateResult(not failed, worst.checks, chains, worst.draws)


def fit_imputed(
    spec: ModelSpec,
    design,
    settings: SamplerSettings,
    *,
    forbidden_ids=(),
    cache=None,
    started: float | None = None,
) -> Fit:
    """Fit ``spec`` by multiple imputation of its missing follow-ups (see the module docstring)."""
    started = time.perf_counter() if started is None else started
    family = family_of(spec)
    if family.impute is None or family.complete_cases is None:
        raise DesignError(f"spec {spec.name!r}: the {family.name} family cannot impute outcomes")
    m, delta = spec.data.followup_imputations, spec.data.followup_delta
    base = replace(spec, data=replace(spec.data, followup_imputations=0, followup_delta=0.0))
    observed = family.complete_cases(design)
    first = fit_design(base, observed, settings, forbidden_ids=forbidden_ids, cache=cache)
    completed = family.impute(
        spec, design, first.datatree["posterior"].to_dataset(), n=m, delta=delta, seed=settings.seed
    )
    refits = [
        fit_design(
            base,
            d,
            replace(settings, seed=settings.seed + k + 1),
            forbidden_ids=forbidden_ids,
            cache=cache,
            draws_only=True,
        )
        for k, d in enumerate(completed)
    ]
    dt = pool_datatrees([f.datatree for f in refits], keep_from=first.datatree)
    gate = _combined_gate(
        [first.gate, *(f.gate for f in refits)], int(dt["posterior"].sizes["chain"])
    )
    meta = {
        **refits[0].meta,
        "spec": spec.name,
        "spec_as_run": spec.to_dict(),
        "spec_toml": first.meta.get("spec_toml", ""),
        "exclusions": design.exclusions,
        "n_clients": design.n_clients,
        "scales": first.meta.get("scales", {}),
        "convergence_passed": bool(gate.passed),
        "imputation": {
            "imputations": m,
            "delta": delta,
            "clients_imputed": int(design.n_clients - observed.n_clients),
            "complete_case_gate": first.gate.headline(),
            "refit_gates": [f.gate.headline() for f in refits],
            "refit_seeds": [settings.seed + k + 1 for k in range(m)],
            "rubin": rubin_summary([f.estimands for f in refits]).to_dict(orient="list"),
        },
    }
    meta["timings_s"] = {
        "complete_case_fit": first.timings.get("wall_total", float("nan")),
        "refits": float(sum(f.timings.get("wall_total", 0.0) for f in refits)),
        "wall_total": time.perf_counter() - started,
    }
    return _assemble(spec, dt, meta, design=design, forbidden_ids=forbidden_ids, gate=gate)
