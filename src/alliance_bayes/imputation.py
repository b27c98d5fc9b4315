r"""Missing follow-up by multiple imputation from the posterior, with a δ shift (pattern mixture).

A spec with ``[data] followup_imputations = M`` is fitted in three steps, all through
:func:`~alliance_bayes.fitting.fit_design`, which the pipeline hands to :func:`fit_imputed` with
the function that assembles its result (this module sits beside the pipeline and does not import
it):

1. the complete-case fit (the spec with ``followup_imputations = 0``: the clients with a follow-up,
   centred as the whole design is);
2. ``M`` completed datasets, each from one posterior draw of that fit, the missing follow-ups drawn
   from its predictive distribution and shifted by ``followup_delta`` points, plus
   ``followup_delta_alliance`` points per alliance point of the client's composite alliance above
   the mean (the family's ``impute``; for the regression family
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

``followup_delta_alliance`` is stated per point of the 1–5 alliance scale, as every number of a
spec per alliance point is; on a study's declared alliance instrument the shift is applied per
point of that scale, times 4 / (high − low) (:func:`alliance_shift`). Without it the shipped
``who5_change_delta_alliance`` (5 WHO-5 points per point) would, on the SRS's 0–10, shift two
clients at the ends of the scale 50 points apart instead of 20: another, far stronger departure
from missing at random than the one its spec describes. ``run.json`` records both values.

The refits keep their draws only. The pooled fit has the complete-case fit's prior groups and no
predictive or pointwise log-likelihood groups (each refit has its own data);
its gate passes only if the complete-case fit and every refit passed their own gates (R-hat across
imputations would flag the between-imputation spread, which is part of the posterior).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from alliance_bayes.diagnostics import GateResult
from alliance_bayes.errors import DesignError
from alliance_bayes.inference import SamplerSettings
from alliance_bayes.model.families import family_of
from alliance_bayes.spec import ModelSpec, scale_alliance_point

__all__ = [
    "alliance_shift",
    "barnard_rubin_df",
    "complete_data_df",
    "fit_imputed",
    "pool_datatrees",
    "rubin_summary",
]

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


#: Dimensions of unit-level parameters (random effects and latent parts), not counted in the
#: complete-data degrees of freedom.
_UNIT_DIMS = frozenset({"client", "provider", "membership", "session"})


def complete_data_df(posterior: xr.Dataset, n_clients: int) -> float:
    r"""Complete-data degrees of freedom :math:`\nu_{com} = n - k` for :func:`rubin_summary`.

    :math:`n` is the number of clients of a completed dataset and :math:`k` the number of scalars
    of the posterior that are not indexed by client, provider, membership or session: every
    population-level parameter, free or derived, as the regression's residual degrees of freedom
    count its coefficients (the convention of ``mice``'s ``dfcom`` and SAS MIANALYZE's ``EDF``:
    the complete-data model's residual degrees of freedom). Derived quantities make :math:`k` an
    overcount, which errs toward a smaller, more conservative :math:`\nu`; the partially pooled
    random effects cost less than a degree of freedom each and are not counted. At least 1. For
    the between-provider estimands the effective :math:`\nu_{com}` is nearer the number of
    providers, which one value per fit (as ``dfcom``) does not capture.
    """
    k = sum(
        int(np.prod([posterior.sizes[d] for d in da.dims if d not in ("chain", "draw")]))
        for da in posterior.data_vars.values()
        if not _UNIT_DIMS & set(da.dims)
    )
    return float(max(1, n_clients - k))


def barnard_rubin_df(m: int, lam: float, df_complete: float = np.inf) -> float:
    r"""Barnard & Rubin (1999, doi:10.1093/biomet/86.4.948) degrees of freedom.

    With :math:`\lambda = (1 + 1/M) B / T` the share of the total variance due to missingness,
    :math:`\nu_{old} = (M - 1) / \lambda^2` (Rubin 1987),
    :math:`\nu_{obs} = \frac{\nu_{com} + 1}{\nu_{com} + 3}\,\nu_{com}\,(1 - \lambda)`, and
    :math:`\nu = (1/\nu_{old} + 1/\nu_{obs})^{-1}`. Unlike :math:`\nu_{old}` it never exceeds
    :math:`\nu_{com}`; with :math:`\nu_{com} = \infty` it is Rubin's :math:`\nu_{old}`.
    """
    old = (m - 1) / lam**2 if lam > 0 else np.inf
    if not np.isfinite(df_complete):
        return float(old)
    obs = (df_complete + 1) / (df_complete + 3) * df_complete * (1 - lam)
    return float(1 / (1 / old + 1 / obs)) if obs > 0 else float(old)


def rubin_summary(estimands: list[xr.Dataset], df_complete: float = np.inf) -> pd.DataFrame:
    r"""Rubin's rules over the refits, per estimand (Rubin 1987; Barnard & Rubin 1999).

    With :math:`M` refits of posterior means :math:`\bar q_m` and variances :math:`u_m`:
    :math:`\bar q = \frac1M \sum_m \bar q_m`, within :math:`W = \frac1M \sum_m u_m`, between
    :math:`B = \frac{1}{M-1} \sum_m (\bar q_m - \bar q)^2`, total
    :math:`T = W + (1 + 1/M) B`, and a :math:`t_\nu` reference with the small-sample
    :math:`\nu` of Barnard & Rubin (:func:`barnard_rubin_df`), given the complete-data degrees of
    freedom ``df_complete`` (:func:`complete_data_df` for a fit; ``inf`` gives Rubin's 1987
    :math:`\nu = (M - 1)(1 + W / ((1 + 1/M) B))^2`). Mixing the refits' draws (the pooled
    posterior) represents :math:`B` by only :math:`M` points and on average by
    :math:`(M - 1)/M` of it, so with few imputations its intervals are too narrow (Zhou & Reiter
    2010); these intervals are the ones to quote. ``fmi`` is the fraction of missing
    information :math:`\lambda = (1 + 1/M) B / T`; ``df_complete`` is the :math:`\nu_{com}` used.
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
        lam = extra / total if total > 0 else 0.0
        df = barnard_rubin_df(m, lam, df_complete)
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
                "fmi": lam,
                "df_complete": float(df_complete),
            }
        )
    return pd.DataFrame(rows)


def alliance_shift(spec: ModelSpec, design) -> tuple[float, str]:
    """The alliance-dependent shift of imputed follow-ups as applied, and the scale it is per
    point of.

    ``[data] followup_delta_alliance`` is stated in outcome points per point of the 1–5 alliance
    scale; on a declared alliance instrument (``design.frame.alliance``) it is multiplied by its
    :attr:`~alliance_bayes.data.alliance.AllianceInstrument.prior_factor`
    (:func:`~alliance_bayes.spec.scale_alliance_point`) and applied per point of its scale, on
    which the design's composite alliance lies.

    Returns
    -------
    tuple
        ``(δ₁ per point of the design's alliance scale, that scale in words)``: ``(5.0, "1–5")``,
        or ``(2.0, "SRS 0–10")`` for a stated 5 on the Session Rating Scale.
    """
    stated = float(spec.data.followup_delta_alliance)
    instrument = getattr(getattr(design, "frame", None), "alliance", None)
    if instrument is None:
        return stated, "1–5"
    return scale_alliance_point(stated, instrument.prior_factor), str(instrument.scale)


def _combined_gate(gates: list[GateResult], chains: int) -> GateResult:
    failed = [g for g in gates if not g.passed]
    worst = failed[0] if failed else gates[0]
    return GateResult(not failed, worst.checks, chains, worst.draws)


def fit_imputed[FitT](
    spec: ModelSpec,
    design,
    settings: SamplerSettings,
    *,
    fit_design: Callable[..., FitT],
    assemble: Callable[..., FitT],
    forbidden_ids=(),
    cache=None,
    started: float | None = None,
) -> FitT:
    """Fit ``spec`` by multiple imputation of its missing follow-ups (see the module docstring).

    ``fit_design(spec, design, settings, forbidden_ids=, cache=, draws_only=)`` fits one dataset
    (the pipeline's :func:`~alliance_bayes.fitting.fit_design`, with ``followup_imputations = 0``);
    ``assemble(spec, dt, meta, design=, forbidden_ids=, gate=)`` makes the pooled result from its
    DataTree, run metadata and gate, as the pipeline makes every fit's. ``FitT`` is the
    pipeline's result, :class:`~alliance_bayes.result.Fit`.
    """
    started = time.perf_counter() if started is None else started
    family = family_of(spec)
    if family.impute is None or family.complete_cases is None:
        raise DesignError(f"spec {spec.name!r}: the {family.name} family cannot impute outcomes")
    m, delta = spec.data.followup_imputations, spec.data.followup_delta
    delta_alliance = spec.data.followup_delta_alliance
    applied, scale = alliance_shift(spec, design)
    base = replace(
        spec,
        data=replace(
            spec.data, followup_imputations=0, followup_delta=0.0, followup_delta_alliance=0.0
        ),
    )
    observed = family.complete_cases(design)
    first = fit_design(base, observed, settings, forbidden_ids=forbidden_ids, cache=cache)
    completed = family.impute(
        spec,
        design,
        first.datatree["posterior"].to_dataset(),
        n=m,
        delta=delta,
        delta_alliance=applied,
        seed=settings.seed,
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
            # as the spec states it (per point of the 1-5 scale), and as applied per point of
            # the study's alliance scale
            "delta_alliance": delta_alliance,
            "delta_alliance_applied": applied,
            "delta_alliance_scale": scale,
            "clients_imputed": int(design.n_clients - observed.n_clients),
            "complete_case_gate": first.gate.headline(),
            "refit_gates": [f.gate.headline() for f in refits],
            "refit_seeds": [settings.seed + k + 1 for k in range(m)],
            "rubin": rubin_summary(
                [f.estimands for f in refits],
                df_complete=complete_data_df(
                    refits[0].datatree["posterior"].to_dataset(), design.n_clients
                ),
            ).to_dict(orient="list"),
        },
    }
    meta["timings_s"] = {
        "complete_case_fit": first.timings.get("wall_total", float("nan")),
        "refits": float(sum(f.timings.get("wall_total", 0.0) for f in refits)),
        "wall_total": time.perf_counter() - started,
    }
    return assemble(spec, dt, meta, design=design, forbidden_ids=forbidden_ids, gate=gate)
