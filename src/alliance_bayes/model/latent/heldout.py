r"""Held-out outcome densities of the latent-alliance model, for leave-provider-out K-fold.

A fold holds out the follow-up of its test clients (and of training clients who saw a test-fold
provider) but keeps every session rating: the score is the outcome of a client of a new provider
*given the ratings*, which is what the latent model is for. The model of
:func:`~alliance_bayes.model.latent.measurement.build_latent_model` with ``heldout=True`` weights
each client's outcome log density by a data container; a held-out client's weight is 0. The
parameters are the same with any weights (every client and provider is in the measurement part),
so one compiled model serves every fold, and each fold only swaps the weights.

For a held-out client :math:`i` with observed outcomes :math:`y_i` (WHO-5, and PHQ-9 where the
joint model has it) and draws :math:`\theta_s` of the fold's posterior,

.. math::
    \log p(y_i \mid y_{\text{train}}, r) \approx \log \frac1S \sum_s p(y_i \mid \theta_s),

with :math:`r` every rating. A test-fold provider's outcome intercept is informed by no training
outcome, so its draws are those of the population distribution given the rest of the posterior:
the new-provider integral of :mod:`alliance_bayes.model.regression.predict`, done by the sampler.
Its latent alliance is informed by its clients' ratings. The joint density of a client's two
outcomes is the WHO-5 density times the PHQ-9 density given WHO-5, both evaluated by the ordinary
model's own log-likelihood (so the two cannot drift apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from alliance_bayes.model.latent.measurement import LatentData, build_latent_model
from alliance_bayes.model.spec import ModelSpec

__all__ = ["heldout", "outcome_weights", "pointwise_client_density"]


def outcome_weights(data: LatentData, train: np.ndarray) -> dict[str, np.ndarray]:
    """The ``outcome_weight_<short>`` containers: 1 for a training client, else 0."""
    train = np.asarray(train, dtype=bool)
    return {f"outcome_weight_{o.short}": train[o.client_index].astype(float) for o in data.outcomes}


def pointwise_client_density(data: LatentData, loglik) -> np.ndarray:
    """log (1/S) Σ_s p(y_i | θ_s) per client; NaN for a client with no observed outcome.

    ``loglik`` is the ordinary model's log-likelihood Dataset (chain, draw, client_<short>) per
    outcome variable; a client's outcomes are summed per draw first.
    """
    per_outcome = [
        np.asarray(loglik[name].values, float).reshape(-1, len(o.client_index))
        for o, name in zip(data.outcomes, _names(data), strict=True)
    ]
    total = np.zeros((per_outcome[0].shape[0], data.n_clients))
    seen = np.zeros(data.n_clients, dtype=bool)
    for o, values in zip(data.outcomes, per_outcome, strict=True):
        total[:, o.client_index] += values
        seen[o.client_index] = True
    out = special.logsumexp(total, axis=0) - np.log(total.shape[0])
    return np.where(seen, out, np.nan)


def _names(data: LatentData) -> list[str]:
    return ["y" if k == 0 else f"y_{o.short}" for k, o in enumerate(data.outcomes)]


def heldout(spec: ModelSpec, data: LatentData, settings, *, n_mc: int = 0, max_draws=None):
    """The K-fold scorer of the latent family (see the module docstring).

    Compiles the weighted model (nutpie) and the ordinary model's log-likelihood once, at the
    first fold.
    ``n_mc`` and ``max_draws`` are unused: the sampler integrates over new providers.
    """
    from alliance_bayes.inference import compile_for_refit, log_density_function, sample_compiled
    from alliance_bayes.model.families import HeldOut

    scored = np.zeros(data.n_clients, dtype=bool)
    for o in data.outcomes:
        scored[o.client_index] = True
    parts: dict[str, Any] = {}  # compiled on the first fold, so that the folds can be set up first

    def score(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not parts:
            parts["compiled"] = compile_for_refit(
                build_latent_model(spec, data, heldout=True), settings
            )
            model = build_latent_model(spec, data)
            outcomes = [model[name] for name in _names(data)]
            parts["loglik"] = log_density_function(model, outcomes, settings.backend)
        dt, seconds = sample_compiled(
            parts["compiled"], settings, data=outcome_weights(data, train), seed=seed
        )
        lppd = pointwise_client_density(data, parts["loglik"](dt["posterior"].to_dataset()))
        stats = dt["sample_stats"]
        return lppd[np.asarray(test) & scored], {
            "divergences": int(stats["diverging"].sum()),
            "sample_s": round(seconds, 1),
        }

    return HeldOut(scored=scored, score=score)
