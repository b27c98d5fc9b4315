r"""Held-out outcome densities of the latent-alliance model, for leave-provider-out K-fold.

A fold holds out the follow-up of its test clients (and of training clients who saw a test-fold
provider) but keeps every session rating: the score is the outcome of a client of a new provider
*given the ratings*, which is what the latent model is for. The model of
:func:`~alliance_bayes.model.latent.measurement.build_latent_model` with ``heldout=True`` weights
each client's outcome log density by a data container; a held-out client's weight is 0. The
parameters are the same with any weights (every client and provider is in the measurement part),
so one compiled model serves every fold, and each fold only swaps the weights.

For a held-out client :math:`i` with observed outcomes :math:`y_i` (the first outcome, e.g.
WHO-5, and the second, e.g. PHQ-9, where the joint model has it) and draws :math:`\theta_s` of
the fold's posterior,

.. math::
    \log p(y_i \mid y_{\text{train}}, r) \approx \log \frac1S \sum_s p(y_i \mid \theta_s),

with :math:`r` every rating. A test-fold provider's outcome intercept is informed by no training
outcome, so its draws are those of the population distribution given the rest of the posterior:
the new-provider integral of :mod:`alliance_bayes.model.regression.predict`, done by the sampler.
Its latent alliance is informed by its clients' ratings. The joint density of a client's two
outcomes is the first outcome's density times the second's given the first, both evaluated by the ordinary
model's own log-likelihood (so the two cannot drift apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import special

from alliance_bayes.model.latent.measurement import LatentData, build_latent_model
from alliance_bayes.spec import ModelSpec

__all__ = [
    "heldout",
    "heldout_steps",
    "outcome_location",
    "outcome_weights",
    "pointwise_client_density",
    "pointwise_log_step_probability",
]


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
    from alliance_bayes.model.family import HeldOut

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


# --------------------------------------------------------------------------------------------------
# Probability of the observed step (a measure shared with the averaged-score models)


def _flat(posterior: xr.Dataset, name: str, *dims: str) -> np.ndarray:
    da = posterior[name].transpose("chain", "draw", *dims)
    return da.values.reshape(-1, *da.shape[2:])


def outcome_location(
    spec: ModelSpec, data: LatentData, posterior: xr.Dataset, scores: np.ndarray, k: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and SD of outcome ``k`` for each of its clients and draw: two (S, n_k) arrays.

    .. math::
        \mu_{ki} = \alpha_k + \gamma_{k,c[i]} + \beta^0_k (y^0_{ki} - \bar y^0_k) + x_i^\top\beta_k
            + \sum_s \big(b_{k,c[i],s,W} (\tau_{is} - \pi_{is}) + b_{k,c[i],s,B}(\pi_{is} -
            \bar B_s)\big) + \sum_p w_{ip} u_{kp},\qquad
        \pi_{is} = \textstyle\sum_m w_m A_{p[m],s},

    the outcome part of :func:`~alliance_bayes.model.latent.measurement.build_latent_model`
    restated in NumPy from the stored variables (``alpha``, ``b_baseline``, ``b_covariate_z``,
    ``b``, ``b_care``, ``u_outcome_provider``, ``alliance_provider`` :math:`A`, ``sigma``) and the
    clients' true scores :math:`\tau` (``scores``: (S, client, subscale), the draws of
    ``posterior`` flattened chain-major). For the first outcome this is its marginal law; a
    second outcome's likelihood is conditional on the first and is not covered.
    """
    o = data.outcomes[k]
    idx = o.client_index
    n_draws = scores.shape[0]
    provider_level = _flat(posterior, "alliance_provider", "provider", "subscale")  # (S, P, sub)
    between = np.zeros((n_draws, data.n_clients, provider_level.shape[-1]))
    np.add.at(
        between,
        (slice(None), data.mem_client),
        data.mem_weight[None, :, None] * provider_level[:, data.mem_provider],
    )
    parts = np.stack([scores - between, between - data.between_mean], axis=-1)[:, idx]
    care = data.care_index[idx]
    b = _flat(posterior, "b", "outcome", "care_type", "subscale", "level")[:, k]
    mu = _flat(posterior, "alpha", "outcome")[:, k, None]
    mu = mu + _flat(posterior, "b_baseline", "outcome")[:, k, None] * (o.baseline - o.baseline_mean)
    mu = (
        mu
        + _flat(posterior, "b_covariate_z", "outcome", "covariate")[:, k] @ data.covariates[idx].T
    )
    mu = mu + np.einsum("snjl,snjl->sn", b[:, care], parts)
    if spec.hierarchy.care_type_intercepts and "b_care" in posterior:  # none for one care type
        b_care = _flat(posterior, "b_care", "outcome", "care_contrast")[:, k]
        full = np.insert(b_care, data.reference_index, 0.0, axis=1)  # 0 at the reference
        mu = mu + full[:, care]
    if spec.hierarchy.provider_intercepts:
        u = _flat(posterior, "u_outcome_provider", "outcome", "provider")[:, k]
        mu = mu + (data.membership_weight[idx][None] * u[:, data.membership_index[idx]]).sum(-1)
    sigma = np.broadcast_to(_flat(posterior, "sigma", "outcome")[:, k, None], mu.shape)
    return mu, sigma


def _one_outcome(data: LatentData) -> None:
    if len(data.outcomes) != 1:
        raise ValueError(
            "the probability of the observed step is implemented for a latent model with one "
            f"outcome; this one has {len(data.outcomes)} (a joint outcome needs the bivariate "
            "rectangle probability)"
        )


def _step(spec: ModelSpec, data: LatentData, mu: np.ndarray, sigma: np.ndarray, half_width):
    from alliance_bayes.model.regression.predict import log_step_probability, step_half_width

    o = data.outcomes[0]
    if half_width is None:
        # a declared instrument moves in steps of its declared resolution
        half_width = step_half_width(o.outcome)
    return log_step_probability(
        o.y[None], mu, sigma, bounds=o.instrument.range, half_width=half_width
    )


def _check_location(mu, sigma, y, loglik: np.ndarray, atol: float = 1e-3) -> None:
    """The rebuilt location must give the sampler's own Normal log density (float32-stored)."""
    from scipy import stats

    worst = float(np.max(np.abs(stats.norm.logpdf(y[None], mu, sigma) - loglik)))
    if not worst <= atol:
        raise ValueError(
            "the outcome mean rebuilt from the posterior does not reproduce the fit's "
            f"log-likelihood (largest difference {worst:.3g}): the step probability would be wrong"
        )


def pointwise_log_step_probability(
    spec: ModelSpec, data: LatentData, dt, half_width: float | None = None
) -> xr.DataArray:
    """log P(observed step of y_i | θ_s) from a finished latent fit: (chain, draw, client).

    Uses the draws whose true scores the bundle keeps (``latent_alliance``, every ``thin``-th
    draw, :func:`~alliance_bayes.model.latent.measurement.store_latent_scores`), and checks the
    rebuilt mean against the stored ``log_likelihood`` at those draws before scoring.
    """
    from alliance_bayes.model.latent.measurement import LATENT_GROUP

    _one_outcome(data)
    o = data.outcomes[0]
    scores = dt[LATENT_GROUP]["alliance_true"].transpose("chain", "draw", "client", "subscale")
    posterior = dt["posterior"].to_dataset().sel(draw=scores["draw"].values)
    tau = scores.values.astype(float).reshape(-1, *scores.shape[2:])
    mu, sigma = outcome_location(spec, data, posterior, tau)
    ll = dt["log_likelihood"]["y"].sel(draw=scores["draw"].values).transpose("chain", "draw", ...)
    _check_location(mu, sigma, o.y, ll.values.astype(float).reshape(mu.shape))
    values = _step(spec, data, mu, sigma, half_width).reshape(*scores.shape[:2], -1)
    labels = data.frame.clients["client"].to_numpy()[o.client_index]
    return xr.DataArray(
        values,
        dims=("chain", "draw", "client"),
        coords={"chain": scores["chain"].values, "draw": scores["draw"].values, "client": labels},
    )


def _constant(data: LatentData) -> xr.Dataset:
    """What :func:`latent_scores` reads of the model's constant data."""
    name, dims, indicators = data.provider_type_constant()
    return xr.Dataset(
        {
            "mem_client": ("membership", data.mem_client),
            "mem_provider": ("membership", data.mem_provider),
            "mem_weight": ("membership", data.mem_weight),
            name: (dims, indicators),
        }
    )


def heldout_steps(
    spec: ModelSpec,
    data: LatentData,
    settings,
    *,
    n_mc: int = 0,
    max_draws: int | None = 500,
    half_width: float | None = None,
):
    """The K-fold scorer of :func:`heldout` on the probability of the observed step.

    Same refits; each test client scores :math:`\\log \\frac1S \\sum_s P(\\text{step}_i \\mid
    \\theta_s)` over at most ``max_draws`` evenly spaced draws of the fold's posterior, with the
    mean rebuilt by :func:`outcome_location` and checked against the model's own log density.
    """
    from alliance_bayes.inference import compile_for_refit, log_density_function, sample_compiled
    from alliance_bayes.model.family import HeldOut
    from alliance_bayes.model.latent.measurement import latent_scores

    _one_outcome(data)
    scored = np.zeros(data.n_clients, dtype=bool)
    scored[data.outcomes[0].client_index] = True
    parts: dict[str, Any] = {}
    constant = _constant(data)

    def score(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not parts:
            parts["compiled"] = compile_for_refit(
                build_latent_model(spec, data, heldout=True), settings
            )
            model = build_latent_model(spec, data)
            parts["loglik"] = log_density_function(model, [model["y"]], settings.backend)
        dt, seconds = sample_compiled(
            parts["compiled"], settings, data=outcome_weights(data, train), seed=seed
        )
        post = dt["posterior"].to_dataset()
        chains, n = post.sizes["chain"], post.sizes["draw"]
        per_chain = max(1, (max_draws or chains * n) // chains)
        keep = max(1, n // per_chain)
        post = post.isel(draw=slice(None, None, keep))
        tau = latent_scores(post, constant).values
        tau = tau.reshape(-1, *tau.shape[2:])
        mu, sigma = outcome_location(spec, data, post, tau)
        ll = parts["loglik"](post)["y"].transpose("chain", "draw", ...).values
        _check_location(mu, sigma, data.outcomes[0].y, ll.reshape(mu.shape))
        lp = _step(spec, data, mu, sigma, half_width)
        values = np.full(data.n_clients, np.nan)
        values[data.outcomes[0].client_index] = special.logsumexp(lp, axis=0) - np.log(len(lp))
        return values[np.asarray(test) & scored], {
            "divergences": int(dt["sample_stats"]["diverging"].sum()),
            "sample_s": round(seconds, 1),
        }

    return HeldOut(scored=scored, score=score)
