r"""Leave-provider-out K-fold for the averaged-score models: one compile, one refit per fold.

A fold's refit must be the model fitted to its training clients alone. Rebuilding that model for
every fold compiled it every time (about 30 s a fold on two cores). Here the model is built on
every client of the design and compiled once (:func:`~alliance_bayes.inference.compile_for_refit`);
a fold changes only data containers (:func:`training_data`):

- the per-client form (:func:`~alliance_bayes.model.regression.graph.build_model` with
  ``heldout=True``) weights client :math:`i`'s log density by :math:`v_i = 1` for the fold's
  training clients and 0 for the rest (``outcome_weight``);
- the collapsed form reads the sufficient statistics of the training clients
  (:func:`~alliance_bayes.model.regression.collapsed.sufficient_statistics` with the weights),
  with every provider and provider pair kept;
- the intercept prior's centre is the training clients' mean outcome, and the parametrisation
  weights (``provider_noncentring``, ``provider_sampled_noncentring``) are those of the
  training clients, so that a provider with no training client is non-centred.

With 0/1 weights the log density is exactly that of the training clients' model plus the prior of
the providers they did not see, which the likelihood does not touch: their effects are draws
from the population and the training posterior of everything else is unchanged. They are left out
of the posterior handed to :func:`~alliance_bayes.model.regression.predict.heldout_log_density`,
which integrates over them as new providers. What stays fixed from the full design is what only
chooses coordinates: which care-type slopes are centred, which providers the collapsed form
samples, and the centring of the predictors (as :func:`~alliance_bayes.model.regression.predict.
subset_data` keeps it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pytensor.graph.traversal import ancestors

from alliance_bayes.model.family import HeldOut
from alliance_bayes.model.regression.collapsed import (
    _with_effects,
    is_collapsed,
    n_effects,
    sampled_noncentring,
    sufficient_statistics,
)
from alliance_bayes.model.regression.design import INTERCEPT_PRIOR_MEAN, OUTCOME_WEIGHT, ModelData
from alliance_bayes.model.regression.predict import heldout_log_density, subset_data
from alliance_bayes.spec import ModelSpec

__all__ = ["heldout", "training_data"]


def training_data(spec: ModelSpec, data: ModelData, train: np.ndarray) -> dict[str, np.ndarray]:
    """The data containers of the ``heldout`` model for a fold with training clients ``train``."""
    return _fold(spec, data, train)[0]


def _fold(spec: ModelSpec, data: ModelData, train: np.ndarray):
    """:func:`training_data` and, for the collapsed form, the training clients' sufficient
    statistics (``None`` otherwise), which also draw the provider effects after the refit."""
    from alliance_bayes.model.regression.graph import provider_noncentring

    train = np.asarray(train, dtype=bool)
    out = {INTERCEPT_PRIOR_MEAN: np.asarray(float(np.mean(data.tuning_y[train])))}
    if is_collapsed(spec):
        stats = sufficient_statistics(spec, data, weight=train.astype(float))
        out |= {f"collapsed_{k}": v for k, v in stats.arrays.items()}
        if n_effects(spec, data) and stats.sampled.any():
            out["provider_sampled_noncentring"] = sampled_noncentring(stats)
        return out, stats
    out[OUTCOME_WEIGHT] = train.astype(float)
    if spec.hierarchy.provider_intercepts and spec.predictors.alliance != "composite":
        sub = subset_data(data, train)
        labels = pd.Index(data.frame.providers["provider"].astype(str))
        where = labels.get_indexer(sub.frame.providers["provider"].astype(str))
        weights = np.ones(len(labels))
        weights[where] = provider_noncentring(sub)
        out["provider_noncentring"] = weights
    return out, None


def providers_seen(data: ModelData, clients: np.ndarray) -> np.ndarray:
    """(provider,) bool: the providers with a positive membership weight among ``clients``."""
    idx, w = data.membership_index, data.membership_weight
    seen = np.zeros(len(data.provider_type_index), dtype=bool)
    rows = np.asarray(clients, dtype=bool)
    seen[idx[rows][w[rows] > 0]] = True
    return seen


def heldout(
    spec: ModelSpec,
    data: ModelData,
    settings,
    *,
    n_mc: int = 200,
    max_draws=1000,
    measure=heldout_log_density,
):
    """The K-fold scorer of the regression family (the module docstring; compiled at the first fold).

    Each fold integrates over the new providers' effects by Monte Carlo (``n_mc`` draws per
    posterior draw, at most ``max_draws`` posterior draws). ``measure`` scores the held-out
    clients: :func:`~alliance_bayes.model.regression.predict.heldout_log_density`, or
    :func:`~alliance_bayes.model.regression.predict.heldout_log_step_probability` (the measure
    ``compare`` puts every model on).
    """
    from alliance_bayes.inference import compile_for_refit, sample_compiled
    from alliance_bayes.model.regression.graph import build_model

    parts: dict[str, Any] = {}

    def score(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not parts:
            model = build_model(spec, data, heldout=True)
            parts["compiled"] = compile_for_refit(model, settings)
            # Statistics the log density does not read (e.g. of pairs a design does not have)
            # are not inputs of the compiled model.
            parts["read"] = {v.name for v in ancestors([model.logp()]) if v.name}
        swapped, stats = _fold(spec, data, train)
        dt, seconds = sample_compiled(
            parts["compiled"],
            settings,
            data={k: v for k, v in swapped.items() if k in parts["read"]},
            seed=seed,
        )
        posterior = dt["posterior"].to_dataset()
        if stats is not None:
            rng = np.random.default_rng([int(seed), 20221013])
            posterior = _with_effects(spec, data, stats, posterior, rng, from_prior=False)[0]
        posterior = _training_providers(posterior, providers_seen(data, train))
        elpd = measure(
            spec,
            subset_data(data, test),
            posterior,
            n_mc=n_mc,
            max_draws=max_draws,
            seed=seed,
        )
        diverging = int(dt["sample_stats"]["diverging"].sum())
        return elpd, {"divergences": diverging, "sample_s": round(seconds, 1)}

    return HeldOut(scored=np.ones(data.n_clients, dtype=bool), score=score)


def _training_providers(posterior: xr.Dataset, seen: np.ndarray) -> xr.Dataset:
    """The posterior without the providers no training client saw (new providers to the fold)."""
    if "provider" not in posterior.dims:
        return posterior
    return posterior.isel(provider=np.flatnonzero(seen))
