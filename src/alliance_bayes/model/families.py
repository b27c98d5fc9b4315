"""The registry of model families: which family a spec belongs to, and each family's parts.

A spec belongs to one family, named by :func:`family_of`; everything downstream (the pipeline, the
bundle, the checks) asks the family for its parts instead of asking which family it is. What a
family provides (:class:`Family`, its :class:`Design` and :class:`HeldOut` scorer) is defined in
:mod:`alliance_bayes.model.family` and re-exported here.

``regression``
    Averaged-score models (:mod:`alliance_bayes.model.regression`): the client's mean rating per
    subscale, split into its within- and between-provider parts, as a predictor of one outcome.
``latent``
    The measurement model (:mod:`alliance_bayes.model.latent`): session ratings through a
    graded-response model, latent client and provider alliance, one or two outcomes jointly.
``change``
    Baseline and follow-up of every client with measurement error (:mod:`alliance_bayes.model.change`):
    change among the clients elevated at baseline, the regression to the mean separated out.
``ratings``
    Alliance as the outcome (:mod:`alliance_bayes.model.ratings`): every session rating through a
    graded-response model with client covariates, country, provider and client effects.
"""

from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from alliance_bayes.model.family import Design, Family, HeldOut
from alliance_bayes.spec import RATING_OUTCOMES, ModelSpec

__all__ = ["Design", "Family", "HeldOut", "family_of"]


def _regression() -> Family:
    from alliance_bayes.inference import PREDICTIVE_DRAWS_PER_CHAIN
    from alliance_bayes.model.regression import collapsed, describe
    from alliance_bayes.model.regression.design import alliance_scale, prepare
    from alliance_bayes.model.regression.estimands import care_weights_of, compute_estimands
    from alliance_bayes.model.regression.figures import FIGURES
    from alliance_bayes.model.regression.graph import build_model
    from alliance_bayes.model.regression.heldout import heldout
    from alliance_bayes.model.regression.predict import complete_cases, impute_designs

    def estimands(spec: ModelSpec, posterior: xr.Dataset, scales=None) -> xr.Dataset:
        return compute_estimands(
            posterior,
            outcome_units=spec.outcome_units,
            effect_units=spec.effect_units_on(alliance_scale(scales)),
            scales=scales,
            care_weights=care_weights_of(scales, spec.hierarchy.pooled_weights),
        )

    def complete(spec, design, dt, seed, draws_only=False):
        return collapsed.complete(
            spec,
            design,
            dt,
            seed,
            draws_only=draws_only,
            predictive_draws_per_chain=PREDICTIVE_DRAWS_PER_CHAIN,
        )

    return Family(
        "regression",
        prepare,
        build_model,
        estimands,
        finish=lambda dt: dt,
        figures=FIGURES,
        scales=lambda design: design.scales(),
        equations=describe.equations,
        data_variables=describe.data_variables,
        prior_rows=describe.prior_rows,
        complete=complete,
        heldout=heldout,
        complete_cases=complete_cases,
        impute=impute_designs,
    )


def _latent() -> Family:
    from alliance_bayes.inference import PREDICTIVE_DRAWS_PER_CHAIN
    from alliance_bayes.model.latent import describe
    from alliance_bayes.model.latent.estimands import compute_joint_estimands, outcome_units
    from alliance_bayes.model.latent.figures import FIGURES
    from alliance_bayes.model.latent.heldout import heldout
    from alliance_bayes.model.latent.measurement import (
        build_latent_model,
        latent_scales,
        outcome_short,
        prepare_latent,
        store_latent_scores,
    )
    from alliance_bayes.model.regression.design import alliance_scale
    from alliance_bayes.model.regression.estimands import care_weights_of

    def estimands(spec: ModelSpec, posterior: xr.Dataset, scales=None) -> xr.Dataset:
        assert spec.measurement is not None
        shares = (scales or {}).get("care_share_by_outcome", {})
        return compute_joint_estimands(
            posterior,
            outcome_units=outcome_units(spec, scales),
            primary=outcome_short(spec.outcome),
            care_weights={
                o: care_weights_of({"care_share": s}, spec.hierarchy.pooled_weights)
                for o, s in shares.items()
            },
            alliance_scale=alliance_scale(scales),
            covariate_coding=(scales or {}).get("covariate_coding"),
        )

    def finish(dt: xr.DataTree) -> xr.DataTree:
        return store_latent_scores(dt, PREDICTIVE_DRAWS_PER_CHAIN)

    return Family(
        "latent",
        prepare_latent,
        build_latent_model,
        estimands,
        finish,
        FIGURES,
        scales=latent_scales,
        equations=describe.equations,
        data_variables=describe.data_variables,
        prior_rows=describe.prior_rows,
        build_refit=lambda spec, design: build_latent_model(spec, design, refit=True),
        heldout=heldout,
    )


def _change() -> Family:
    from alliance_bayes.model.change import describe
    from alliance_bayes.model.change.design import prepare_change, short_name
    from alliance_bayes.model.change.estimands import compute_change_estimands
    from alliance_bayes.model.change.graph import build_change_model

    def estimands(spec: ModelSpec, posterior: xr.Dataset, scales=None) -> xr.Dataset:
        return compute_change_estimands(
            posterior, scales or {}, prefix=short_name(spec), units=spec.outcome_units
        )

    return Family(
        "change",
        prepare_change,
        build_change_model,
        estimands,
        finish=lambda dt: dt,
        scales=lambda design: design.scales(),
        equations=describe.equations,
        data_variables=describe.data_variables,
        prior_rows=describe.prior_rows,
    )


def _ratings() -> Family:
    from alliance_bayes.model.latent.figures import (
        plot_item_characteristic_curves,
        plot_rating_ppc,
    )
    from alliance_bayes.model.ratings import describe
    from alliance_bayes.model.ratings.design import prepare_ratings, ratings_scales
    from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
    from alliance_bayes.model.ratings.graph import build_ratings_model

    return Family(
        "ratings",
        prepare_ratings,
        build_ratings_model,
        lambda spec, posterior, scales=None: compute_ratings_estimands(posterior, scales),
        finish=lambda dt: dt,
        figures=(plot_item_characteristic_curves, plot_rating_ppc),
        scales=ratings_scales,
        equations=describe.equations,
        data_variables=describe.data_variables,
        prior_rows=describe.prior_rows,
    )


_FACTORIES: dict[str, Callable[[], Family]] = {
    "regression": _regression,
    "latent": _latent,
    "change": _change,
    "ratings": _ratings,
}
_BUILT: dict[str, Family] = {}


def family_of(spec: ModelSpec) -> Family:
    """The family of ``spec``: ``ratings`` when alliance is its outcome, ``change`` with a
    ``[change]`` table, ``latent`` when its alliance
    is latent, else ``regression``."""
    if spec.outcome in RATING_OUTCOMES:
        name = "ratings"
    elif spec.change is not None:
        name = "change"
    else:
        name = "latent" if spec.predictors.alliance == "latent" else "regression"
    if name not in _BUILT:
        _BUILT[name] = _FACTORIES[name]()
    return _BUILT[name]
