r"""Model comparison: PSIS-LOO and leave-provider-out K-fold over the model sequence.

The sequence is ``who5_pooled`` (no provider level) → ``who5_intercepts`` (provider intercepts) →
``who5_change`` (provider intercepts and alliance slopes) → the joint latent model when it exists.
Every model must be fitted on the **same clients**, because elpd is a sum over clients.

PSIS-LOO
    Pareto-smoothed importance-sampling leave-one-client-out (Vehtari, Gelman & Gabry 2017,
    doi:10.1007/s11222-016-9696-4) from ``arviz_stats.loo``. The unit is the client: where a model
    has several observed variables (the joint WHO-5 + PHQ-9 model), their pointwise log-likelihoods
    are summed per client first (:func:`client_log_likelihood`), so that one client's two outcomes
    are left out together. Pareto-k counts are reported; k above 0.7 (or the sample-size-dependent
    threshold ``good_k`` when lower) makes that client's estimate unreliable and raises a warning.

Leave-provider-out K-fold
    Clients of one provider share the provider's effect, so leaving one client out still lets the
    model learn that provider from the others: LOO then answers "a new client of a known provider",
    not "a client of a new provider". The grouped K-fold assigns **providers** to folds and each
    client to the fold of their **main provider** (most sessions; ties: the provider listed first,
    i.e. the lower pseudonym). A client who saw both a coach and a therapist thus follows their main
    provider. A client whose *other* provider is in the test fold is left out of that fold's training
    set (and tested only in their main provider's fold), so every test client's main provider is new
    to the refit; a test client's other provider may be in training, and then its posterior effect
    is used. Each model family scores a fold its own way
    (:attr:`~alliance_bayes.model.families.Family.heldout`): a regression model is refitted on
    the training clients (design centred on all clients) and the test clients are scored by
    :func:`~alliance_bayes.model.regression.predict.heldout_log_density`, drawing new providers'
    effects from their population distribution; the latent model keeps every session rating,
    holds out the outcomes only, and is compiled once for all folds
    (:mod:`alliance_bayes.model.latent.heldout`): its score is a new provider's client's
    outcome given the ratings. The folds are balanced on the first model's scored clients and
    shared by every model, by provider.

Measure
    elpd sums log predictive scores, which compare only on one measure: a density (Normal,
    Student-t, the latent model's Normal outcome) and a probability (a censored Normal's mass at 0
    or 100) differ by the width of a step, and each client at a bound would gain about 2 nats
    for free. Every model is therefore scored on the **probability of the observed step**
    (:func:`~alliance_bayes.model.regression.predict.log_step_probability`): WHO-5 on the
    percentage metric moves in steps of 4 (raw 0–25 × 4), so a client at y scores
    P(y − 2 < Y ≤ y + 2), at 0 P(Y ≤ 2) and at 100 P(Y > 98); PHQ-9 moves in steps of 1
    (half-width 0.5; bounds 0 and 27). It is computed per posterior draw from each model's
    predictive law (:func:`step_fit`; the latent model at the draws whose true scores its bundle
    keeps) and used for PSIS-LOO and for the K-fold scores alike (:func:`step_heldout`). Joint
    (two-outcome) latent models keep the log density, which is comparable among them (one
    family, the bivariate Normal); any other mix is refused (:func:`choose_measure`).

Standard errors
    Clients of one provider are not independent (shared effect, shared fold), so the K-fold SEs
    and the "(providers)" LOO SEs are cluster-robust over main providers (:func:`cluster_se`).
    arviz's LOO SEs, which treat clients as independent, are kept next to them.

The comparison table gives elpd, its SE, differences to the best model with the SE of the paired
difference, ``p_loo``, Pareto-k counts and stacking weights (Yao et al. 2018, arXiv:1704.02030) for
LOO, and the same (elpd, SE, difference, SE) for K-fold; it is written in Markdown and LaTeX with a
plot, into an atomic folder ``results/comparison/<run-id>/``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.checks.base import CheckResult
from alliance_bayes.errors import DesignError
from alliance_bayes.model.pointwise import (
    CLIENT_DIM,
    CLIENT_VAR,
    SAMPLE_DIMS,
    client_log_likelihood,
    cluster_se,
    main_provider,
    pareto_k_counts,
)
from alliance_bayes.report.render import latex_escape, latex_table, markdown_table

__all__ = [
    "KFoldResult",
    "MeasureError",
    "ParetoKWarning",
    "choose_measure",
    "client_log_likelihood",
    "comparison_table",
    "kfold_summary",
    "loo_models",
    "main_provider",
    "pareto_k_counts",
    "plot_comparison",
    "provider_folds",
    "run_kfold",
    "step_fit",
    "step_heldout",
    "table_latex",
    "table_markdown",
    "write_comparison",
]


class ParetoKWarning(UserWarning):
    """Some clients have Pareto k above 0.7: their PSIS-LOO contributions are unreliable."""


class MeasureError(DesignError):
    """The models cannot be scored on one measure (``alliance-bayes compare`` exits 2)."""


# --------------------------------------------------------------------------------------------------
# The measure every model is scored on

STEP, DENSITY = "step", "density"


def _outcomes_and_likelihood(spec) -> tuple[tuple[str, ...], str]:
    """The outcomes a spec scores and its likelihood family (the latent outcomes are Normal)."""
    if spec.predictors.alliance == "latent" and spec.measurement is not None:
        outcomes = tuple(spec.measurement.outcomes)
        return outcomes, "normal" if len(outcomes) == 1 else "bivariate normal"
    return (spec.outcome,), spec.likelihood


def choose_measure(specs: Sequence[Any]) -> str:
    """``"step"`` (probability of the observed step) or ``"density"``, or :class:`MeasureError`.

    Models of one outcome are all scored on the probability of its observed step, whatever their
    likelihoods. Models of two outcomes (the joint latent model) keep the log density, which
    compares only among models of the same likelihood family. Models that score different
    outcomes are refused: their elpds sum over different data.
    """
    facts = {spec.name: _outcomes_and_likelihood(spec) for spec in specs}
    described = "; ".join(
        f"{name}: {' + '.join(o)} ({lik} likelihood)" for name, (o, lik) in facts.items()
    )
    if len({o for o, _ in facts.values()}) > 1:
        raise MeasureError(
            f"the models score different outcomes ({described}): their elpds sum over different "
            "data and cannot be compared"
        )
    outcomes = next(iter(facts.values()))[0]
    if len(outcomes) == 1:
        return STEP
    if len({lik for _, lik in facts.values()}) > 1:
        raise MeasureError(
            f"no common measure for these likelihoods ({described}): a density and a probability "
            "are different measures, and the step probability is implemented for one outcome only"
        )
    return DENSITY


def measure_text(measure: str, specs: Sequence[Any]) -> str:
    """How the table's elpd is measured, in words."""
    from alliance_bayes.data.instruments import instrument_of
    from alliance_bayes.model.regression.predict import step_half_width

    if measure == DENSITY:
        families = sorted({_outcomes_and_likelihood(s)[1] for s in specs})
        return f"log predictive density ({', '.join(families)} likelihood, shared by every model)"
    outcome = _outcomes_and_likelihood(specs[0])[0][0]
    h = step_half_width(outcome)
    instrument = instrument_of(outcome)
    assert instrument is not None  # step_half_width refuses an outcome no study declares
    lo, hi = instrument.range
    # Plain words and brackets: the text also goes into a LaTeX caption.
    return (
        f"log probability of the observed step of {instrument.outcome_label}: the mass of "
        f"(y − {h:g}, y + {h:g}], at {lo:g} the mass up to {lo + h:g}, at {hi:g} the mass above "
        f"{hi - h:g}"
    )


def step_fit(spec, design, dt: xr.DataTree) -> xr.DataTree:
    """A DataTree whose ``log_likelihood`` holds log P(observed step | θ_s) per client.

    Averaged-score models: every draw, the clients with an observed outcome
    (:func:`~alliance_bayes.model.regression.predict.pointwise_log_step_probability`). Latent
    model: the draws whose true scores its bundle keeps
    (:func:`~alliance_bayes.model.latent.heldout.pointwise_log_step_probability`). The posterior
    is kept at the same draws.
    """
    posterior = dt["posterior"].to_dataset()
    if spec.predictors.alliance == "latent":
        from alliance_bayes.model.latent import heldout as latent

        values = latent.pointwise_log_step_probability(spec, design, dt)
        posterior = posterior.sel(draw=values["draw"].values)
    else:
        from alliance_bayes.model.regression import predict

        data = predict.complete_cases(design)
        lp = predict.pointwise_log_step_probability(spec, data, posterior)
        values = xr.DataArray(
            lp.reshape(posterior.sizes["chain"], posterior.sizes["draw"], -1),
            dims=(*SAMPLE_DIMS, CLIENT_DIM),
            coords={
                "chain": posterior["chain"].values,
                "draw": posterior["draw"].values,
                CLIENT_DIM: data.frame.clients["client"].astype(str).to_numpy(),
            },
        )
    return xr.DataTree.from_dict(
        {"posterior": posterior, "log_likelihood": xr.Dataset({"y": values})}
    )


# --------------------------------------------------------------------------------------------------
# Per-client log-likelihood and PSIS-LOO


def _check_same_clients(fits: Mapping[str, xr.DataTree]) -> list[str]:
    labels = None
    for name, dt in fits.items():
        these = [str(c) for c in dt["log_likelihood"][CLIENT_VAR][CLIENT_DIM].values]
        if labels is None:
            labels, first = these, name
        elif sorted(these) != sorted(labels):
            raise ValueError(
                f"models {first!r} and {name!r} were not fitted on the same clients "
                f"({len(labels)} vs {len(these)}): elpd sums over clients and cannot be compared"
            )
    return labels or []


def loo_models(fits: Mapping[str, xr.DataTree]) -> dict[str, Any]:
    """PSIS-LOO (pointwise) of each fit, per client; warns when any Pareto k > 0.7.

    Raises
    ------
    ValueError
        When the fits are not on the same clients.
    """
    import arviz_stats as azs

    combined = {name: client_log_likelihood(dt) for name, dt in fits.items()}
    _check_same_clients(combined)
    out = {}
    for name, dt in combined.items():
        with warnings.catch_warnings():
            # arviz-stats warns about high k itself; we count and warn once, by name, below.
            warnings.simplefilter("ignore")
            elpd = azs.loo(dt, pointwise=True, var_name=CLIENT_VAR)
        counts = pareto_k_counts(elpd)
        if counts["k_high"] + counts["k_very_high"]:
            warnings.warn(
                f"{name}: {counts['k_high'] + counts['k_very_high']} client(s) with Pareto k > "
                f"{counts['good_k']:.2f} (max {counts['k_max']:.2f}): PSIS-LOO is unreliable for "
                "them; trust the K-fold column or refit those clients out (reloo)",
                ParetoKWarning,
                stacklevel=2,
            )
        out[name] = elpd
    return out


# --------------------------------------------------------------------------------------------------
# Leave-provider-out folds


def provider_folds(
    index: np.ndarray, weight: np.ndarray, n_providers: int, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Assign providers to ``k`` folds and each client to their main provider's fold.

    Providers are shuffled (``seed``) and then placed, largest first, into the fold with the fewest
    clients so far, so that folds have similar numbers of clients.

    Returns
    -------
    client_fold : (client,) int array in 0..k-1
    provider_fold : (provider,) int array in 0..k-1 (providers that are nobody's main provider
        still get a fold; it only matters for reporting)
    """
    main = main_provider(index, weight)
    if k < 2:
        raise ValueError("k must be at least 2")
    counts = np.bincount(main, minlength=n_providers)
    if (counts > 0).sum() < k:
        raise ValueError(
            f"only {(counts > 0).sum()} providers are a main provider: fewer than k={k}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_providers)
    order = order[np.argsort(-counts[order], kind="stable")]
    provider_fold = np.empty(n_providers, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for p in order:
        f = int(np.argmin(load))
        provider_fold[p] = f
        load[f] += counts[p]
    return provider_fold[main], provider_fold


@dataclass
class KFoldResult:
    """Pointwise held-out log predictive densities of one model.

    ``cluster`` is each client's main provider: the SEs treat providers, not clients, as the
    independent units (:func:`cluster_se`).
    """

    name: str
    elpd_i: np.ndarray  # (client,)
    fold: np.ndarray  # (client,)
    clients: list[str]
    cluster: np.ndarray  # (client,) main provider
    details: dict[str, Any]

    @property
    def elpd(self) -> float:
        return float(self.elpd_i.sum())

    @property
    def se(self) -> float:
        return cluster_se(self.elpd_i, self.cluster)


def run_kfold(
    spec,
    design,
    provider_fold: np.ndarray,
    settings,
    *,
    held=None,
    n_mc: int = 200,
    max_draws: int | None = 1000,
    seed: int = 0,
    on_fold: Callable[[int, dict], None] | None = None,
    workers: int = 1,
    dask: str | None = None,
    measure: str = DENSITY,
) -> KFoldResult:
    """Leave-provider-out K-fold for one model.

    Parameters
    ----------
    spec, design : ModelSpec and its family's design
        The model and all clients (prepared once, so every fold shares its centring).
    provider_fold : (provider,) int array
        The fold of each of the design's providers (from :func:`provider_folds`); each client is
        tested in their main provider's fold. A client who saw any provider of the test fold is
        left out of that fold's training set, so every test client's main provider is new to the
        refit.
    settings : SamplerSettings
        Sampler settings of every refit.
    held : HeldOut, optional
        The family's scorer (:attr:`~alliance_bayes.model.families.Family.heldout`); built here
        when not given. Regression models refit the training clients; the latent model keeps
        every rating and holds out the test clients' outcomes.
    n_mc, max_draws, seed
        Monte Carlo draws over new providers, posterior draws used, and the seed (plus the fold).
    workers, dask
        With ``workers > 1`` or ``dask`` the folds are tasks of an executor
        (:func:`alliance_bayes.sweeps.run_tasks`); each worker process builds the scorer once and
        keeps it for its later folds. A fold's seed depends on the fold only, so every executor
        gives the same draws.
    measure : {"density", "step"}
        What a test client scores: the log density of the family's scorer, or the log
        probability of the observed step (:func:`step_heldout`).
    """
    from alliance_bayes.sweeps import run_tasks

    if held is None:
        held = _heldout(spec, design, settings, n_mc, max_draws, measure)
    index, weight = np.asarray(design.membership_index), np.asarray(design.membership_weight)
    seen = weight > 0
    main = main_provider(index, weight)
    client_fold = np.asarray(provider_fold)[main]
    scored = np.asarray(held.scored, dtype=bool)
    folds = [int(f) for f in np.unique(client_fold[scored])]
    splits = []
    for f in folds:
        test = client_fold == f
        in_fold = ((np.asarray(provider_fold)[index] == f) & seen).any(axis=1)
        splits.append((~test & ~in_fold, test, seed + f))
    if workers <= 1 and dask is None:
        task, args = held.score, splits
    else:
        from uuid import uuid4

        from alliance_bayes.inference import available_cores

        if dask in (None, "local"):  # the chains of each worker's refits share this machine
            settings = replace(settings, cores=max(1, available_cores() // workers))
        key = f"kfold:{spec.name}:{uuid4().hex}"
        task = _score_fold
        args = [(key, spec, design, settings, n_mc, max_draws, measure, *split) for split in splits]
    elpd_i = np.full(len(main), np.nan)
    details: dict[str, Any] = {"folds": [None] * len(folds)}

    def record(k: int, result: tuple[np.ndarray, dict]) -> None:
        values, facts = result
        train, test, _ = splits[k]
        elpd_i[test & scored] = values
        train_providers = set(index[(train & scored)[:, None] & seen].tolist())
        test_providers = set(index[(test & scored)[:, None] & seen].tolist())
        info = {
            "fold": folds[k],
            "n_train": int((train & scored).sum()),
            "n_excluded": int((~train & ~test & scored).sum()),
            "n_test": int((test & scored).sum()),
            "n_new_providers": len(test_providers - train_providers),
            "n_test_providers_seen_in_training": len(test_providers & train_providers),
            "elpd": float(values.sum()),
            **facts,
        }
        details["folds"][k] = info
        if on_fold is not None:
            on_fold(folds[k], info)

    run_tasks(task, args, workers=workers, dask=dask, on_result=record)
    providers = design.frame.providers["provider"].astype(str).to_numpy()
    return KFoldResult(
        name=spec.name,
        elpd_i=elpd_i[scored],
        fold=client_fold[scored],
        clients=design.frame.clients["client"].astype(str).to_numpy()[scored].tolist(),
        cluster=providers[main[scored]],
        details=details,
    )


def _heldout(spec, design, settings, n_mc, max_draws, measure=DENSITY):
    from alliance_bayes.model.families import family_of

    if measure == STEP:
        return step_heldout(spec, design, settings, n_mc=n_mc, max_draws=max_draws)
    family = family_of(spec)
    if family.heldout is None:
        raise ValueError(f"model {spec.name!r} has no held-out density for K-fold")
    return family.heldout(spec, design, settings, n_mc=n_mc, max_draws=max_draws)


def _score_fold(key, spec, design, settings, n_mc, max_draws, measure, train, test, seed):
    """One fold (a task: runs in whichever worker process the executor picks); the scorer, and
    what it compiles, is built on the worker's first fold of this run and kept for the others."""
    from alliance_bayes.sweeps import worker_cache

    held = worker_cache(key, lambda: _heldout(spec, design, settings, n_mc, max_draws, measure))
    return held.score(train, test, seed)


def step_heldout(spec, design, settings, *, n_mc: int = 200, max_draws: int | None = 1000):
    """The family's K-fold scorer on the probability of the observed step.

    The same refits as the family's own scorer (:attr:`~alliance_bayes.model.families.Family.
    heldout`); a test client scores log (1/S) Σ_s P(step_i | θ_s), new providers integrated out
    (:func:`~alliance_bayes.model.regression.predict.heldout_log_step_probability`; the latent
    model: :func:`~alliance_bayes.model.latent.heldout.heldout_steps`).
    """
    if spec.predictors.alliance == "latent":
        from alliance_bayes.model.latent.heldout import heldout_steps

        return heldout_steps(spec, design, settings, max_draws=min(max_draws or 500, 500))
    from alliance_bayes.model.regression.heldout import heldout
    from alliance_bayes.model.regression.predict import heldout_log_step_probability

    return heldout(
        spec,
        design,
        settings,
        n_mc=n_mc,
        max_draws=max_draws,
        measure=heldout_log_step_probability,
    )


def kfold_summary(results: Mapping[str, KFoldResult]) -> pd.DataFrame:
    """elpd_kfold, SE, difference to the best model and the SE of the paired difference (SEs
    over provider clusters: :func:`cluster_se`)."""
    names = list(results)
    first = results[names[0]].clients
    for n in names[1:]:
        if results[n].clients != first:
            raise ValueError(f"K-fold of {n!r} is not on the same clients as {names[0]!r}")
    best = max(names, key=lambda n: results[n].elpd)
    rows = []
    for n in names:
        diff_i = results[n].elpd_i - results[best].elpd_i
        rows.append(
            {
                "model": n,
                "elpd_kfold": results[n].elpd,
                "se_kfold": results[n].se,
                "kfold_diff": float(diff_i.sum()),
                "kfold_dse": cluster_se(diff_i, results[best].cluster),
            }
        )
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------------------------------
# Table, plot and folder


def comparison_table(
    loo: Mapping[str, Any],
    kfold: Mapping[str, KFoldResult] | None = None,
    method: str = "stacking",
    provider_of: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per model, best LOO first.

    Columns: ``rank``, ``elpd_loo``, ``se``, ``elpd_diff``, ``dse`` (SE of the paired difference to
    the best model), ``p_loo``, ``weight`` (``method`` weights of :func:`arviz_stats.compare`),
    ``k_good``, ``k_high``, ``k_very_high``, ``k_max``; with ``provider_of`` (client label → main
    provider), ``se_provider`` and ``dse_provider``, the same SEs over provider clusters
    (:func:`cluster_se`); and with ``kfold``, ``elpd_kfold``, ``se_kfold``, ``kfold_diff``,
    ``kfold_dse`` (over provider clusters).
    """
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = azs.compare(dict(loo), method=method, round_to="none")
    table = pd.DataFrame(
        {
            "rank": cmp["rank"].astype(int) + 1,
            "elpd_loo": cmp["elpd"].astype(float),
            "se": cmp["se"].astype(float),
            "elpd_diff": 0.0 - cmp["elpd_diff"].astype(float).abs(),
            "dse": cmp["dse"].astype(float),
            "p_loo": cmp["p"].astype(float),
            "weight": cmp["weight"].astype(float),
        },
        index=cmp.index,
    )
    counts = pd.DataFrame({n: pareto_k_counts(e) for n, e in loo.items()}).T
    table = table.join(counts[["k_good", "k_high", "k_very_high", "k_max"]])
    for c in ("k_good", "k_high", "k_very_high"):
        table[c] = table[c].astype(int)
    if provider_of is not None:
        pointwise = {
            n: pd.Series(
                np.asarray(e.elpd_i.values, float),
                index=[str(c) for c in e.elpd_i[CLIENT_DIM].values],
            )
            for n, e in loo.items()
        }
        best = pointwise[table.index[0]]
        cluster = pd.Series(provider_of).reindex(best.index).to_numpy()
        table["se_provider"] = [cluster_se(pointwise[n][best.index], cluster) for n in table.index]
        table["dse_provider"] = [
            cluster_se(pointwise[n][best.index] - best, cluster) for n in table.index
        ]
    if kfold:
        table = table.join(kfold_summary(kfold))
    table.index.name = "model"
    return table


_LABELS = {
    "rank": "rank",
    "elpd_loo": "elpd LOO",
    "se": "SE",
    "elpd_diff": "Δelpd",
    "dse": "SE Δ",
    "p_loo": "p_loo",
    "weight": "weight",
    "k_good": "k ≤ 0.7",
    "k_high": "0.7 < k ≤ 1",
    "k_very_high": "k > 1",
    "k_max": "max k",
    "se_provider": "SE (providers)",
    "dse_provider": "SE Δ (providers)",
    "elpd_kfold": "elpd K-fold",
    "se_kfold": "SE",
    "kfold_diff": "Δelpd K-fold",
    "kfold_dse": "SE Δ",
}


def _fmt(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if col in ("rank", "k_good", "k_high", "k_very_high"):
        return str(int(v))
    if col in ("weight", "k_max"):
        return f"{v:.2f}"
    return f"{v:.1f}"


def table_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """The comparison table in Markdown (one decimal for elpd; weights and k to 0.01)."""
    cols = list(table.columns)
    rows = [[f"`{name}`", *(_fmt(c, row[c]) for c in cols)] for name, row in table.iterrows()]
    header = ["model", *(_LABELS.get(c, c) for c in cols)]
    body = markdown_table(header, rows, numeric=[False] + [True] * len(cols))
    lines = ([caption, ""] if caption else []) + [*body, ""]
    notes = (
        "Δelpd: difference to the best model by LOO (K-fold: to the best by K-fold); SE Δ: SE of the "
        'paired per-client difference; "(providers)" and every K-fold SE treat the clients of one '
        "main provider as one unit. Weights: stacking. Pareto k above 0.7 marks a client whose "
        "PSIS-LOO term is unreliable. K-fold leaves out providers (clients by main provider), "
        "with new providers' effects drawn from their population distribution; the latent "
        "model keeps every rating and holds out only the outcomes."
    )
    if table.attrs.get("measure"):
        notes += f" Measure (LOO and K-fold): {table.attrs['measure']}."
    return "\n".join([*lines, notes, ""])


_TEX_LABELS = {
    **_LABELS,
    "elpd_diff": r"$\Delta$elpd",
    "dse": r"SE $\Delta$",
    "k_good": r"$k \le 0.7$",
    "k_high": r"$0.7 < k \le 1$",
    "k_very_high": r"$k > 1$",
    "k_max": r"max $k$",
    "p_loo": r"$p_{\mathrm{loo}}$",
    "kfold_diff": r"$\Delta$elpd K-fold",
    "kfold_dse": r"SE $\Delta$",
    "dse_provider": r"SE $\Delta$ (providers)",
}


def table_latex(table: pd.DataFrame, caption: str = "", label: str = "tab:comparison") -> str:
    """The comparison table as a LaTeX ``table`` (booktabs)."""
    cols = list(table.columns)
    header = ["Model", *(_TEX_LABELS.get(c, latex_escape(c)) for c in cols)]
    rows = [
        [rf"\texttt{{{latex_escape(str(name))}}}", *(latex_escape(_fmt(c, row[c])) for c in cols)]
        for name, row in table.iterrows()
    ]
    lines = latex_table(
        header, rows, align="l" + "r" * len(cols), caption=caption, label=label, size=r"\small",
        escaped=True,
    )  # fmt: skip
    return "\n".join(lines)


def plot_comparison(table: pd.DataFrame, path_stem: Path, formats=("png", "pdf")) -> list[Path]:
    """elpd ± 2 SE of the difference to the best model, LOO and (when present) K-fold, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("elpd_diff", "dse", "PSIS-LOO")]
    if "kfold_diff" in table:
        panels.append(("kfold_diff", "kfold_dse", "leave-provider-out K-fold"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 0.6 * len(table) + 1.6))
    axes = np.atleast_1d(axes)
    names = list(table.index)
    ypos = np.arange(len(names))[::-1]
    for ax, (col, se, title) in zip(axes, panels, strict=True):
        ax.errorbar(table[col], ypos, xerr=2 * table[se], fmt="o", color="C0", capsize=3)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(ypos, names)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("elpd difference to the best model (± 2 SE)")
    fig.tight_layout()
    paths = []
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        p = path_stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=150)
        paths.append(p)
    plt.close(fig)
    return paths


def write_comparison(
    results_root: str | os.PathLike[str],
    run_id: str,
    table: pd.DataFrame,
    meta: Mapping[str, Any],
    *,
    pointwise: pd.DataFrame | None = None,
    folder: str = "comparison",
    caption: str = "",
) -> Path:
    """Write ``results_root/<folder>/<run_id>/`` atomically (temporary sibling, then one rename).

    Contents: ``comparison.md``, ``comparison.tex``, ``comparison.csv``, ``pointwise.csv`` (per
    client and model: elpd_loo_i, pareto_k, elpd_kfold_i, fold; pseudonymised labels only),
    ``run.json`` and ``figures/comparison.png|pdf``.
    """
    from alliance_bayes.storage import atomic_folder, check_name, dump_json

    check_name("run_id", run_id)
    check_name("folder", folder)
    with atomic_folder(Path(results_root) / folder, run_id) as tmp:
        (tmp / "comparison.md").write_text(table_markdown(table, caption), encoding="utf-8")
        (tmp / "comparison.tex").write_text(table_latex(table, caption), encoding="utf-8")
        table.to_csv(tmp / "comparison.csv", lineterminator="\n")
        if pointwise is not None:
            pointwise.to_csv(tmp / "pointwise.csv", lineterminator="\n")
        dump_json(dict(meta), tmp / "run.json")
        plot_comparison(table, tmp / "figures" / "comparison")
    return Path(results_root) / folder / run_id


def pointwise_frame(
    loo: Mapping[str, Any], kfold: Mapping[str, KFoldResult] | None
) -> pd.DataFrame:
    """Per client (rows) and model: ``<model>:elpd_loo``, ``<model>:pareto_k``, K-fold columns."""
    cols = {}
    index = None
    for name, e in loo.items():
        da = e.elpd_i
        index = [str(c) for c in da[CLIENT_DIM].values]
        cols[f"{name}:elpd_loo"] = np.asarray(da.values, float)
        cols[f"{name}:pareto_k"] = np.asarray(e.pareto_k.values, float)
    frame = pd.DataFrame(cols, index=pd.Index(index, name=CLIENT_DIM))
    for name, r in (kfold or {}).items():
        k = pd.DataFrame(
            {f"{name}:elpd_kfold": r.elpd_i, f"{name}:fold": r.fold},
            index=pd.Index(r.clients, name=CLIENT_DIM),
        )
        frame = frame.join(k, how="outer")
    return frame


# --------------------------------------------------------------------------------------------------
# The whole comparison, as ``alliance-bayes compare`` runs it

DEFAULT_MODELS = ("who5_pooled", "who5_intercepts", "who5_change")
FOLD_RULE = "providers shuffled and balanced into k folds; client -> main provider's fold"


def run_comparison(
    models: Sequence[str],
    study,
    results: Path,
    *,
    k: int = 5,
    fold_seed: int = 20221013,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    kfold_draws: int = 500,
    kfold_tune: int = 500,
    kfold_chains: int = 2,
    n_mc: int = 200,
    cache: Path | None = None,
    workers: int = 1,
    dask: str | None = None,
    log: Callable[[str], None] = print,
) -> CheckResult:
    """Fit every model to ``study``, compare them by PSIS-LOO and leave-provider-out K-fold, and
    write ``<results>/comparison/<run-id>/`` (see :func:`write_comparison`).

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` without a verdict (a comparison
    informs a choice; it does not pass or fail): the comparison table, its caption as text, the
    folder written, and the run's metadata (``details["meta"]``).

    Every model must select the same clients (elpd is a sum over clients). ``workers`` and
    ``dask`` say where the K-fold refits run (:func:`run_kfold`).
    """
    import time

    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.fitting import design_of, fit_design, resolve_spec, settings_for
    from alliance_bayes.model.families import family_of
    from alliance_bayes.provenance import environment, time_id

    started = time.perf_counter()
    study = study if isinstance(study, RawStudy) else load_study(study)
    specs = [resolve_spec(name) for name in models]
    measure = choose_measure(specs)  # before any fit: a refusal costs nothing
    described = measure_text(measure, specs)
    log(f"measure: {described}")
    fits, kfold, meta_models = {}, {}, {}
    fold_of: dict[str, int] | None = None  # provider label -> fold, set by the first model
    provider_of: dict[str, str] = {}  # client label -> main provider
    for name, spec in zip(models, specs, strict=True):
        design = design_of(spec, study)
        settings = settings_for(spec, draws=draws, tune=tune, chains=chains, progress=False)
        t = time.perf_counter()
        fits[name] = fit_design(spec, design, settings, cache=cache).datatree
        if measure == STEP:
            fits[name] = step_fit(spec, design, fits[name])
        meta_models[name] = {
            "n_clients": design.n_clients,
            "settings": settings.to_dict(),
            "fit_s": time.perf_counter() - t,
        }
        log(f"{name}: fitted on {design.n_clients} clients ({meta_models[name]['fit_s']:.0f} s)")
        labels = design.frame.providers["provider"].astype(str).to_numpy()
        main = main_provider(design.membership_index, design.membership_weight)
        clients = design.frame.clients["client"].astype(str).to_numpy()
        provider_of.update(zip(clients, labels[main], strict=True))
        if not k:
            continue
        ksettings = settings_for(
            spec, draws=kfold_draws, tune=kfold_tune, chains=kfold_chains, progress=False
        )
        family = family_of(spec)
        if family.heldout is None:
            raise DesignError(f"{name} has no held-out density for K-fold")
        held = _heldout(spec, design, ksettings, n_mc, 1000, measure)
        if fold_of is None:
            # Folds are balanced on the first model's scored clients; every model uses them.
            scored = np.asarray(held.scored, dtype=bool)
            _, pfold = provider_folds(
                design.membership_index[scored],
                design.membership_weight[scored],
                len(labels),
                k,
                fold_seed,
            )
            fold_of = dict(zip(labels, pfold.tolist(), strict=True))
        missing = [p for p in labels if p not in fold_of]
        if missing:
            raise DesignError(f"{name} has providers the first model lacks, e.g. {missing[0]!r}")
        t = time.perf_counter()
        kfold[name] = run_kfold(
            spec,
            design,
            np.array([fold_of[p] for p in labels]),
            ksettings,
            held=held,
            n_mc=n_mc,
            seed=fold_seed,
            on_fold=lambda f, info, n=name: log(f"  {n} fold {f}: {info}"),
            workers=workers,
            dask=dask,
            measure=measure,
        )
        meta_models[name]["kfold_s"] = time.perf_counter() - t
        meta_models[name]["kfold"] = kfold[name].details
    if kfold and len({tuple(r.clients) for r in kfold.values()}) > 1:
        raise DesignError(f"the models' K-fold runs did not score the same clients: {list(kfold)}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ParetoKWarning)
        loo = loo_models(fits)
    for w in caught:
        log(f"WARNING: {w.message}")
    table = comparison_table(loo, kfold or None, provider_of=provider_of)
    table.attrs["measure"] = described
    log(table_markdown(table))
    meta = {
        "models": meta_models,
        "measure": measure,
        "measure_text": described,
        "k": k,
        "fold_seed": fold_seed,
        "n_mc": n_mc,
        "fold_rule": FOLD_RULE,
        "warnings": [str(w.message) for w in caught],
        "data_sha256": study.sha256,
        "wall_s": time.perf_counter() - started,
        "clients_per_fold": (
            np.bincount(next(iter(kfold.values())).fold).tolist() if kfold else None
        ),
        **environment(),
    }
    caption = (
        f"Model comparison on {meta_models[models[0]]['n_clients']} clients; elpd as {described}"
    )
    path = write_comparison(
        results,
        time_id(),
        table,
        meta,
        pointwise=pointwise_frame(loo, kfold or None),
        caption=caption,
    )
    return CheckResult("compare", None, table, caption, path, {"meta": meta})
