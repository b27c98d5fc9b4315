"""What a model family is: the parts the pipeline asks of it, and what its held-out scorer returns.

A family (:class:`Family`) owns the data preparation, the model graph, the estimands, the figures
and the finish of the specs that belong to it; its design (:class:`Design`) is whatever its model
needs, with the few attributes the pipeline reads. :class:`HeldOut` is what a family's
``heldout`` gives leave-provider-out K-fold. The registry that names a spec's family is
:mod:`alliance_bayes.model.families`; this module imports no family, so a family's own modules
can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pymc as pm
import xarray as xr

from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.spec import ModelSpec

__all__ = ["Design", "Family", "HeldOut"]


class Design(Protocol):
    """What every family's design offers the pipeline, whatever else it holds.

    Attributes
    ----------
    frame : AnalysisFrame
        The analysis frame the design was prepared from (its providers label the draws).
    exclusions : dict of str to int
        Clients in the data, those set aside by each rule, and those in the model (``run.json``).
    n_clients : int
        Clients in the likelihood.
    """

    frame: AnalysisFrame
    exclusions: dict[str, int]

    @property
    def n_clients(self) -> int: ...


@dataclass(frozen=True)
class HeldOut:
    """A family's scorer for leave-provider-out K-fold (:func:`alliance_bayes.checks.compare.run_kfold`).

    Attributes
    ----------
    scored : (client,) bool array
        The design's clients whose outcome K-fold scores (those with an observed outcome).
    score : callable
        ``score(train, test, seed)`` → ``(elpd, info)``: refits with the outcomes of the ``train``
        clients (bool over the design's clients) and returns log p(y_i | training data) for the
        clients ``test & scored``, in design order, with a dict of facts about the refit.
    """

    scored: np.ndarray
    score: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Family:
    """What a model family provides.

    Attributes
    ----------
    name : str
        Registry key.
    prepare : callable
        ``prepare(spec, frame)`` → the family's :class:`Design`; raises
        :class:`~alliance_bayes.errors.DesignError`.
    build : callable
        ``build(spec, design)`` → :class:`pymc.Model`.
    estimands : callable
        ``estimands(spec, posterior, scales)`` → the estimand Dataset (stable names, units
        attached); ``scales`` are the design's sample moments (``scales(design)``, kept in
        ``run.json``), from which standardised effects are computed.
    finish : callable
        ``finish(dt)`` → the DataTree to save, after the convergence gate has seen every draw
        (e.g. large latent draws summarised).
    figures : tuple
        Figures the family adds to the bundle's common ones, each a
        :data:`~alliance_bayes.report.figures.FigureMaker` (not imported: the report formats what a
        family computed, and this protocol stays below it).
    scales : callable
        ``scales(design)`` → sample moments of the fitted clients (plain data).
    equations, data_variables, prior_rows : callable
        ``f(spec, scales)``: the report's Model and Priors sections; ``scales`` (the fit's, from
        :attr:`scales`) say which terms the fitted model has, e.g. no care-type effects with one
        care type.
    complete : callable
        ``complete(spec, design, dt, seed, draws_only=)`` → ``dt`` with what sampling left out
        (for a collapsed likelihood: the provider effects, the pointwise log-likelihood and the
        predictive draws), before the estimands and the gate.
    build_refit : callable, optional
        ``build_refit(spec, design)`` → a :class:`pymc.Model` whose data are all data containers
        (its observed variables' values), which a compiled model can swap (simulation-based
        calibration); ``None``: :attr:`build` already is.
    heldout : callable, optional
        ``heldout(spec, design, settings, n_mc=, max_draws=)`` → :class:`HeldOut`, compiled
        once for every fold of a K-fold run.
    complete_cases, impute : callable, optional
        ``complete_cases(design)`` → the clients with an observed outcome;
        ``impute(spec, design, posterior, n=, delta=, delta_alliance=, seed=)`` → ``n`` completed designs
        (multiple imputation of missing follow-up, :mod:`alliance_bayes.imputation`). ``None``
        where the family cannot impute.
    """

    name: str
    prepare: Callable[[ModelSpec, AnalysisFrame], Design]
    build: Callable[[ModelSpec, Any], pm.Model]
    estimands: Callable[[ModelSpec, xr.Dataset, Mapping[str, Any]], xr.Dataset]
    finish: Callable[[xr.DataTree], xr.DataTree]
    figures: tuple[Callable[..., Any], ...] = ()
    scales: Callable[[Any], dict[str, Any]] = lambda design: {}
    equations: Callable[[ModelSpec, Mapping[str, Any]], list[str]] = lambda spec, scales=None: []
    data_variables: Callable[[ModelSpec, Mapping[str, Any]], list[str]] = lambda spec, scales=None: []
    prior_rows: Callable[[ModelSpec, Mapping[str, Any]], list[Any]] = field(
        default=lambda spec, scales: []
    )
    complete: Callable[..., xr.DataTree] = lambda spec, design, dt, seed, draws_only=False: dt
    build_refit: Callable[[ModelSpec, Any], pm.Model] | None = None
    heldout: Callable[..., HeldOut] | None = None
    complete_cases: Callable[[Any], Any] | None = None
    impute: Callable[..., Any] | None = None
