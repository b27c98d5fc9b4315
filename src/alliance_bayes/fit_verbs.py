r"""What a fitted model answers when asked: the verbs of :class:`~alliance_bayes.result.Fit`.

The names follow brms, where its users reach for them: :func:`ranef` (provider effects as a tidy
frame), :func:`prior_summary`, :func:`loo`, :func:`predict` (posterior predictive draws for new
clients), :func:`conditional_effects`, :func:`pp_check`, :func:`psense` and :func:`update`. Each
reads the draws and computes; only :func:`update` samples, and it does so through the one
pipeline, :func:`alliance_bayes.fitting.fit`.

Predictions reuse the averaged-score (``regression``) family's NumPy twin of its likelihood and
posterior predictive (:mod:`alliance_bayes.model.regression.predict`, checked against the
sampler's own log-likelihood); LOO and its provider-clustered SE reuse
:mod:`alliance_bayes.model.pointwise`. The other families (``latent``, ``ratings``, ``change``) have
no NumPy predictive, so :func:`predict` and :func:`conditional_effects` refuse them by name
(:class:`PredictionNotImplemented`).

Tail ESS
    Wherever the package shows a tail ESS it is that of Vehtari et al. (2021),
    doi:10.1214/20-BA1221: the smaller bulk-style ESS of the indicators :math:`\theta \le q_{0.05}`
    and :math:`\theta \le q_{0.95}` (:data:`TAIL_ESS_CONVENTION`). ArviZ's
    ``ess(method="tail")`` defaults to the 11% and 89% quantiles; its numbers are larger for the
    same draws, and only ``prob=(0.05, 0.95)`` reproduces the package's.

Bundle compatibility
    A bundle records the package version that wrote it (``run.json`` → ``packages`` →
    ``alliance-bayes``). :func:`check_bundle_version` accepts a bundle of the same major.minor
    version as the installed package (a patch release changes no file's meaning) and refuses any
    other with :class:`IncompatibleBundleError`, naming both versions. A bundle that records no
    version (written from a checkout that was not installed) is read: nothing says it differs.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.errors import DesignError, IncompatibleBundleError, PredictionNotImplemented
from alliance_bayes.rank_diagnostics import TAIL_PROBS

if TYPE_CHECKING:
    from alliance_bayes.result import Fit

__all__ = [
    "TAIL_ESS_CONVENTION",
    "IncompatibleBundleError",
    "LooResult",
    "PredictionNotImplemented",
    "ThinnedLikelihoodWarning",
    "check_bundle_version",
    "conditional_effects",
    "loo",
    "main_provider_of",
    "new_client_data",
    "pp_check",
    "predict",
    "prior_summary",
    "psense",
    "ranef",
    "update",
]

#: The tail-ESS convention, in the words every display of ESS uses.
TAIL_ESS_CONVENTION = (
    f"tail ESS at the {TAIL_PROBS[0]:.0%} and {TAIL_PROBS[1]:.0%} quantiles (Vehtari et al. "
    "2021, doi:10.1214/20-BA1221); ArviZ's ess(method='tail') defaults to 11% and 89%"
)
_SAMPLE_DIMS = ("chain", "draw")
_VERSION_KEY = "alliance-bayes"


class ThinnedLikelihoodWarning(UserWarning):
    """Power-scaling ran on the draws a saved bundle keeps, not on every draw of the run."""


# --------------------------------------------------------------------------------------------------
# Bundle compatibility


def _major_minor(version: str) -> tuple[int, int] | None:
    found = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(found[1]), int(found[2])) if found else None


def check_bundle_version(meta: Mapping[str, Any], where: str = "bundle") -> None:
    """Refuse a bundle whose ``run.json`` names another major.minor version of the package.

    Raises
    ------
    IncompatibleBundleError
        Naming the bundle's version and the installed one.
    """
    from alliance_bayes.version import __version__

    written = (meta.get("packages") or {}).get(_VERSION_KEY)
    theirs, ours = _major_minor(written or ""), _major_minor(__version__)
    if theirs is None or ours is None or theirs == ours:
        return
    raise IncompatibleBundleError(
        f"{where} was written by alliance-bayes {written}, this is {__version__}: bundles are "
        f"read by the same major.minor version only ({theirs[0]}.{theirs[1]}.x). Load it with "
        f"alliance-bayes {theirs[0]}.{theirs[1]}, or refit it with this version."
    )


# --------------------------------------------------------------------------------------------------
# Provider effects and priors


def _hdi(da: xr.DataArray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    import arviz_stats as azs

    hdi = azs.hdi(da, prob=prob, dim=list(_SAMPLE_DIMS))
    return hdi.sel(ci_bound="lower").values, hdi.sel(ci_bound="upper").values


def _term(name: str, extra: Mapping[str, Any]) -> str:
    base = {"u_provider": "intercept", "u_provider_slope": "slope"}.get(name, name)
    return f"{base}[{', '.join(str(v) for v in extra.values())}]" if extra else base


def ranef(dt: xr.DataTree, prob: float = 0.95) -> pd.DataFrame:
    """Provider effects as a tidy frame: one row per provider and term.

    Every posterior variable ``u_*`` over the ``provider`` dimension is a term: ``intercept``
    (``u_provider``, outcome points), ``slope[<subscale>]`` (``u_provider_slope``, the provider's
    deviation from the care-type within slope, points per alliance point) and any other family's
    provider effects under their own names. Columns: ``provider``, ``provider_type``, ``term``,
    ``mean``, ``sd``, ``hdi<P>_low``, ``hdi<P>_high`` (the ``prob`` highest density interval,
    ``P`` = 100·prob) and ``prob_positive``.

    Raises
    ------
    ValueError
        The model has no provider effects.
    """
    posterior = dt["posterior"].to_dataset()
    names = [
        str(n)
        for n, da in posterior.data_vars.items()
        if str(n).startswith("u_") and "provider" in da.dims
    ]
    if not names:
        raise ValueError("this model has no provider effects (no u_* variable over providers)")
    types: dict[str, str] = {}
    if "constant_data" in dt.children and "provider_type" in dt["constant_data"].data_vars:
        pt = dt["constant_data"]["provider_type"]
        types = dict(zip(map(str, pt["provider"].values), map(str, pt.values), strict=True))
    pct = f"{100 * prob:g}"
    frames = []
    for name in names:
        da = posterior[name]
        extra_dims = [d for d in da.dims if d not in (*_SAMPLE_DIMS, "provider")]
        for at in np.ndindex(*(da.sizes[d] for d in extra_dims)):
            one = da.isel(dict(zip(extra_dims, at, strict=True)))
            extra = {
                d: one[d].item() if d in one.coords else i
                for d, i in zip(extra_dims, at, strict=True)
            }
            low, high = _hdi(one, prob)
            labels = [str(p) for p in one["provider"].values]
            frames.append(
                pd.DataFrame(
                    {
                        "provider": labels,
                        "provider_type": [types.get(p, "") for p in labels],
                        "term": _term(name, extra),
                        "mean": one.mean(_SAMPLE_DIMS).values,
                        "sd": one.std(_SAMPLE_DIMS, ddof=1).values,
                        f"hdi{pct}_low": low,
                        f"hdi{pct}_high": high,
                        "prob_positive": (one > 0).mean(_SAMPLE_DIMS).values,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def prior_summary(spec, scales: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every prior of the spec's model: ``parameter``, ``distribution``, ``on_data_scale``,
    ``justification`` (the rows of the report's Priors section, on the data's units where
    ``scales``, the fitted clients' moments of ``run.json``, are given)."""
    from alliance_bayes.model.families import family_of

    rows = family_of(spec).prior_rows(spec, scales or {})
    return pd.DataFrame(
        [asdict(r) if is_dataclass(r) else dict(vars(r)) for r in rows],
        columns=["parameter", "distribution", "on_data_scale", "justification"],
    )


# --------------------------------------------------------------------------------------------------
# PSIS-LOO with the provider-clustered SE


@dataclass
class LooResult:
    r"""PSIS-LOO of one fit, per client (Vehtari, Gelman & Gabry 2017, doi:10.1007/s11222-016-9696-4).

    Attributes
    ----------
    elpd, se : float
        :math:`\widehat{\mathrm{elpd}}_\mathrm{loo} = \sum_i \log p(y_i \mid y_{-i})` and arviz's
        SE, which treats clients as independent.
    se_provider : float
        The SE over provider clusters (each client's main provider;
        :func:`~alliance_bayes.model.pointwise.cluster_se`): clients of one provider share its
        effect. NaN where the clusters are unknown (a loaded fit without ``study``).
    p_loo : float
        Effective number of parameters.
    pareto_k : dict
        :func:`~alliance_bayes.model.pointwise.pareto_k_counts`.
    n_clients, n_providers : int
        Clients scored and provider clusters (0 when unknown).
    elpd_data : ELPDData
        ``arviz_stats.loo``'s result, pointwise values included (``elpd_i``, ``pareto_k``).
    note : str
        What the reader must know (a thinned or subset log-likelihood, missing clusters).
    """

    elpd: float
    se: float
    se_provider: float
    p_loo: float
    pareto_k: dict[str, Any]
    n_clients: int
    n_providers: int
    elpd_data: Any
    note: str = ""

    def __repr__(self) -> str:
        k = self.pareto_k
        clustered = (
            f"; SE over {self.n_providers} provider clusters {self.se_provider:.1f}"
            if self.n_providers
            else ""
        )
        lines = [
            f"PSIS-LOO over {self.n_clients} clients: elpd_loo {self.elpd:.1f} "
            f"(SE {self.se:.1f}{clustered}), p_loo {self.p_loo:.1f}",
            f"Pareto k: {k['k_good']} good (≤ {k['good_k']:.2f}), {k['k_high']} high (≤ 1), "
            f"{k['k_very_high']} very high (> 1); max {k['k_max']:.2f}",
        ]
        return "\n".join(lines + ([self.note] if self.note else []))


def loo(dt: xr.DataTree, provider_of: Mapping[str, str] | None = None) -> LooResult:
    """PSIS-LOO of the fit's pointwise log-likelihood, summed per client, with the SE over
    provider clusters where ``provider_of`` (client label → main provider) is given.

    The measure is the fit's own (a density, or a probability at a censored bound); to compare
    models of different likelihoods use ``alliance-bayes compare``, which scores every model on
    the probability of the observed step.
    """
    import arviz_stats as azs

    from alliance_bayes.model.pointwise import (
        CLIENT_DIM,
        CLIENT_VAR,
        client_log_likelihood,
        cluster_se,
        pareto_k_counts,
    )

    if "log_likelihood" not in dt.children:
        raise ValueError("this fit has no log_likelihood group (a draws-only refit)")
    attrs = dict(dt["log_likelihood"].attrs)
    combined = client_log_likelihood(dt)
    with warnings.catch_warnings():
        # arviz-stats warns about high k; the counts are in the result.
        warnings.simplefilter("ignore")
        elpd = azs.loo(combined, pointwise=True, var_name=CLIENT_VAR)
    clients = [str(c) for c in elpd.elpd_i[CLIENT_DIM].values]
    notes = []
    if attrs.get("thinned_every", 1) > 1:
        notes.append(
            f"Log-likelihood as the bundle keeps it (one draw in {attrs['thinned_every']})."
        )
    if attrs.get("clients_kept", 0) < attrs.get("clients_of", 0):
        notes.append(
            f"{attrs['clients_kept']} of {attrs['clients_of']} clients (random subset) in the "
            "pointwise log-likelihood."
        )
    se_provider, n_providers = float("nan"), 0
    if provider_of is not None:
        cluster = np.array([provider_of[c] for c in clients])
        se_provider = cluster_se(np.asarray(elpd.elpd_i.values, float), cluster)
        n_providers = len(set(cluster.tolist()))
    else:
        notes.append("Provider clusters unknown (give study=): SE over providers not computed.")
    return LooResult(
        elpd=float(elpd.elpd),
        se=float(elpd.se),
        se_provider=se_provider,
        p_loo=float(elpd.p),
        pareto_k=pareto_k_counts(elpd),
        n_clients=len(clients),
        n_providers=n_providers,
        elpd_data=elpd,
        note=" ".join(notes),
    )


def main_provider_of(design) -> dict[str, str]:
    """Client label → main provider label (most sessions;
    :func:`~alliance_bayes.model.pointwise.main_provider`)."""
    from alliance_bayes.model.pointwise import main_provider

    labels = design.frame.providers["provider"].astype(str).to_numpy()
    main = main_provider(design.membership_index, design.membership_weight)
    clients = design.frame.clients["client"].astype(str).to_numpy()
    return dict(zip(clients, labels[main], strict=True))


# --------------------------------------------------------------------------------------------------
# Posterior predictive for new clients


def _regression_only(spec, verb: str) -> None:
    from alliance_bayes.model.families import family_of

    name = family_of(spec).name
    if name != "regression":
        raise PredictionNotImplemented(
            f"{verb} is implemented for the averaged-score (regression) models only; "
            f"{spec.name!r} is a {name} model, which has no NumPy posterior predictive"
        )


@dataclass(frozen=True)
class _NewProviders:
    """The part of an analysis frame the NumPy predictive reads: the providers' labels, and the
    fitted study's provider and care types."""

    providers: pd.DataFrame
    provider_types: tuple[str, ...]
    care_types: tuple[str, ...]
    care_reference: str


def _covariate_inputs(design, coding: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """Each covariate of the design: the column new clients give it in, and the design columns
    it becomes (``("diagnosis", ("diagnosis[anxiety]", "diagnosis[ptsd]"))``), in design order."""
    owner = {col: name for name, entry in coding.items() for col in entry.get("columns", [name])}
    grouped: dict[str, list[str]] = {}
    for column in design.covariate_names:
        grouped.setdefault(owner.get(column, column), []).append(column)
    return [(name, tuple(columns)) for name, columns in grouped.items()]


def _level_strings(values: pd.Series) -> pd.Series:
    """Levels as the study's text: whole numbers as ``"2"`` (levels coded by numbers), missing
    (None, NaN, an empty text) as NaN."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        if np.all(np.isnan(numbers) | (numbers % 1 == 0)):
            return pd.Series(
                [np.nan if np.isnan(v) else str(int(v)) for v in numbers],
                index=values.index,
                dtype=object,
            )
    text = values.astype(object).map(lambda v: np.nan if pd.isna(v) else str(v).strip())
    return text.where(text != "", np.nan)


def _new_covariate_values(
    new: pd.DataFrame,
    design,
    coding: Mapping[str, Any],
    covariates: list[tuple[str, tuple[str, ...]]],
) -> np.ndarray:
    """The raw (uncentred) covariate columns of ``new``, coded as the fitted design coded its
    clients (:func:`~alliance_bayes.model.regression.design.covariate_columns`): a text-coded
    binary covariate 1 at its non-reference level, a categorical one an indicator per level the
    fit estimated, named ``<name>[<level>]``.

    Raises
    ------
    DesignError
        A missing value, a number that is not one, or a level the fit did not estimate (naming
        the levels it did).
    """
    n = len(new)
    declared = getattr(design.frame, "covariates", None) or {}
    parts = []
    for name, columns in covariates:
        entry = coding.get(name, {})
        coded = name in declared and declared[name].coded
        if name not in new:  # the design's own indicator columns, given as they are
            parts.append(new[list(columns)].to_numpy(float).reshape(n, len(columns)))
            continue
        if not coded:
            try:
                values = pd.to_numeric(new[name], errors="raise").to_numpy(float)
            except (ValueError, TypeError) as err:
                raise DesignError(f"new_clients: covariate {name!r} holds numbers ({err})") from err
            if np.isnan(values).any():
                rows = np.flatnonzero(np.isnan(values)).tolist()
                raise DesignError(
                    f"new_clients: covariate {name!r} is missing in row(s) {rows}; a prediction "
                    "needs every predictor"
                )
            parts.append(values[:, None])
            continue
        levels = _level_strings(new[name])
        reference = str(entry["reference"])
        estimated = [entry["level"]] if entry["type"] == "binary" else list(entry["levels"])
        estimated = [str(v) for v in estimated if v]
        known = [reference, *estimated]
        absent = [str(v) for v in entry.get("absent_levels", [])]
        for row, value in enumerate(levels):
            if isinstance(value, str) and value in known:
                continue
            if isinstance(value, str) and value in absent:
                raise DesignError(
                    f"new_clients row {row}: level {value!r} of covariate {name!r} had no client "
                    f"in the fitted model, so its effect was not estimated; the fit knows "
                    f"{known} (reference {reference!r})"
                )
            got = "a missing value" if not isinstance(value, str) else f"level {value!r}"
            raise DesignError(
                f"new_clients row {row}: {got} of covariate {name!r}; the fit knows the levels "
                f"{known} (reference {reference!r})"
            )
        if entry["type"] == "binary":
            parts.append((levels == entry["level"]).to_numpy(float)[:, None])
        else:
            parts.append(
                np.column_stack([(levels == v).to_numpy(float) for v in estimated])
                if estimated
                else np.zeros((n, 0))
            )
    if not parts:
        return np.zeros((n, 0))
    return np.concatenate(parts, axis=1)


def new_client_data(spec, design, new_clients: pd.DataFrame):
    """The design arrays of ``new_clients``, centred and scaled as the fitted clients were.

    See :func:`predict` for the columns. A covariate the study declares is given in its own
    column and coded as the fitted design coded it (``design.covariate_coding``): a categorical
    one by its text levels (``diagnosis = "anxiety"``) into the design's indicator columns
    (``diagnosis[anxiety]``, which may also be given themselves), a binary one by its two text
    levels or 0/1.

    Raises
    ------
    DesignError
        A column missing, a covariate value missing or not a number, a level the fit did not
        estimate (the message names those it did), or a new provider without its type.
    """
    if design.latent is not None:
        raise PredictionNotImplemented(
            "predictions from a between = 'latent_mean' model are not implemented (its slopes "
            "multiply latent provider means); predict with its caseload_mean twin"
        )
    new = pd.DataFrame(new_clients).reset_index(drop=True)
    n = len(new)
    coding = dict(getattr(design, "covariate_coding", None) or {})
    covariates = _covariate_inputs(design, coding)
    needed = ["provider", spec.baseline, *(c for c, _ in covariates)]
    if spec.predictors.alliance == "composite":
        needed.append("alliance")
    else:
        needed += [f"alliance_{s}" for s in design.subscales]
    # a categorical covariate may come as its own column or as the design's indicator columns
    indicators = {c: cols for c, cols in covariates if cols != (c,)}
    missing = [
        c
        for c in needed
        if c not in new and not (c in indicators and all(d in new for d in indicators[c]))
    ]
    if missing:
        raise DesignError(f"new_clients lacks column(s) {missing} (needs {needed})")
    known = design.frame.providers.assign(provider=lambda d: d["provider"].astype(str))
    known_type = dict(zip(known["provider"], known["provider_type"].astype(str), strict=True))
    labels = list(dict.fromkeys(new["provider"].astype(str)))
    given = (
        new.assign(provider=new["provider"].astype(str))
        .groupby("provider")["provider_type"]
        .first()
        if "provider_type" in new
        else pd.Series(dtype=object)
    )
    provider_types, care_types = design.frame.provider_types, design.frame.care_types
    types = []
    for p in labels:
        t = known_type.get(p, given.get(p))
        if t not in provider_types:
            raise DesignError(
                f"provider {p!r} is new to the fit: give its provider_type "
                f"({' or '.join(provider_types)})"
            )
        types.append(t)
    ptype = dict(zip(labels, types, strict=True))
    care = (
        new["care_type"].astype(str)
        if "care_type" in new
        else new["provider"].astype(str).map(ptype)
    )
    if not care.isin(care_types).all():
        raise DesignError(f"care_type must be one of {care_types}")
    x = _new_covariate_values(new, design, coding, covariates)
    k = len(design.subscales)
    alliance = np.zeros((n, k, 2))
    for j, s in enumerate(design.subscales):
        if spec.predictors.alliance == "composite":
            break
        between_mean = design.alliance_means[j, 1]
        between = new.get(f"alliance_{s}_between", pd.Series(between_mean, index=new.index))
        between = between.to_numpy(float)
        alliance[:, j, 0] = new[f"alliance_{s}"].to_numpy(float) - between
        alliance[:, j, 1] = between - between_mean
    composite = (
        new["alliance"].to_numpy(float) - design.composite_mean
        if "alliance" in new
        else np.zeros(n)
    )
    position = {p: i for i, p in enumerate(labels)}
    return replace(
        design,
        frame=_NewProviders(
            pd.DataFrame({"provider": labels, "provider_type": types}),
            provider_types,
            care_types,
            design.frame.care_reference,
        ),
        y=np.full(n, np.nan),
        baseline=new[spec.baseline].to_numpy(float),
        covariates=(x - design.covariate_means) / design.covariate_sds,
        care_index=care.map({c: i for i, c in enumerate(care_types)}).to_numpy(np.int64),
        alliance=alliance,
        composite=composite,
        membership_index=new["provider"].astype(str).map(position).to_numpy(np.int64)[:, None],
        membership_weight=np.ones((n, 1)),
        provider_type_index=np.array([provider_types.index(t) for t in types], np.int64),
        exclusions={},
        y_tuning=None,
    )


def predict(
    spec,
    posterior: xr.Dataset,
    design,
    new_clients: pd.DataFrame,
    *,
    summary: bool = True,
    ndraws: int | None = None,
    seed: int = 0,
    prob: float = 0.95,
) -> pd.DataFrame | xr.DataArray:
    r"""Posterior predictive follow-up of new clients, of providers in the fit or new ones.

    Per posterior draw :math:`s`,
    :math:`\tilde y_i = \mu_{is} + \textstyle\sum_p w_{ip}(u_{p0} + \sum_k u_{pk} W_{ik}) +
    \varepsilon_{is}` with the fit's residual law (Normal, Student-t, or Normal censored to the
    outcome's range). A provider of the fit keeps its posterior effects :math:`u_{ps}`; a new
    provider's effects are drawn from their population,
    :math:`u_p = \operatorname{diag}(\sigma^u_{t[p],s}, \tau^u_s) L_s z`, one draw per provider
    and posterior draw (:func:`~alliance_bayes.model.regression.predict.impute_designs` does
    the same), so a new provider's clients have the wider predictive by
    :math:`\sigma^u_{t[p]}`.

    ``new_clients`` has one row per client: ``provider`` (a provider label of the fit, e.g.
    ``P0003``, or any new label), ``provider_type`` (one of the fit's provider types, ``therapist``/``coach``
    unless the study declares its own; needed for a new provider), ``care_type`` (one of the
    fit's care types; default: the provider's type), the spec's baseline column (e.g.
    ``who5_baseline``), its covariates in raw units (``age``, ``male``, ``days_in_care``; a
    covariate the study declares in its own column, a categorical one by its level,
    ``diagnosis = "anxiety"``, coded as the fit coded it), and the client's mean rating
    ``alliance_<subscale>`` per subscale of the model (``alliance`` for the composite).
    ``alliance_<subscale>_between``, the provider's caseload mean, defaults
    to the fitted clients' mean (an average caseload), so that the client's score moves the
    within-provider part, as in :func:`conditional_effects`.

    Returns a frame indexed like ``new_clients`` with ``mean``, ``sd`` and the central ``prob``
    interval ``q_low``, ``q_high``; with ``summary=False`` the draws, a DataArray
    ``(sample, client)``. ``ndraws`` thins the posterior evenly.
    """
    from alliance_bayes.model.regression import predict as twin

    _regression_only(spec, "predict")
    data = new_client_data(spec, design, new_clients)
    total = int(posterior.sizes["chain"] * posterior.sizes["draw"])
    flat = posterior.stack(sample=_SAMPLE_DIMS).transpose("sample", ...)
    if ndraws is not None and ndraws < total:
        flat = flat.isel(sample=np.linspace(0, total - 1, ndraws).round().astype(int))
    # One chain of S draws: the NumPy twin flattens (chain, draw) itself.
    one = flat.drop_vars(["sample", "chain", "draw"]).rename(sample="draw").expand_dims("chain")
    one = one.transpose("chain", "draw", ...)
    rng = np.random.default_rng(seed)
    mu = twin.linear_predictor(spec, data, one)
    n_draws = mu.shape[0]
    if spec.hierarchy.provider_intercepts:
        positions = twin._provider_positions(data, one)
        mu = mu + twin._known_provider_part(spec, data, one, positions, None, 0)
        if (positions < 0).any():
            scale = one[
                [v for v in ("sd_provider", "sd_provider_slope", "corr_provider") if v in one]
            ]
            for s in range(n_draws):
                draw = scale.isel(draw=[s])
                mu[s] += twin._new_provider_part(spec, data, draw, positions, rng)
    sigma = twin._draws(one, "sigma", None, 0)[:, None]
    if spec.likelihood == "student_t":
        nu = twin._draws(one, "nu", None, 0)[:, None]
        y = mu + sigma * rng.standard_t(nu, size=mu.shape)
    else:
        y = mu + sigma * rng.standard_normal(mu.shape)
    if spec.likelihood == "censored_normal":
        y = np.clip(y, *spec.outcome_range)
    index = pd.DataFrame(new_clients).index
    if not summary:
        return xr.DataArray(y, dims=("sample", "client"), coords={"client": np.asarray(index)})
    tail = (1 - prob) / 2
    low, high = np.quantile(y, [tail, 1 - tail], axis=0)
    return pd.DataFrame(
        {"mean": y.mean(0), "sd": y.std(0, ddof=1), "q_low": low, "q_high": high}, index=index
    )


def conditional_effects(
    spec,
    posterior: xr.Dataset,
    meta: Mapping[str, Any],
    effects: str | Sequence[str] | None = None,
    *,
    prob: float = 0.95,
    n_grid: int = 41,
) -> pd.DataFrame:
    """Expected follow-up across each alliance predictor's observed range, per care type.

    ``effects`` names the predictors to keep (as brms's ``effects``): one name or several, each
    a predictor of the fit (``"goal"``) or with the ``alliance_`` prefix of the study's columns
    (``"alliance_goal"``); all of them without it.

    A client of an average provider (provider effects 0, caseload mean at the sample mean),
    baseline and covariates at their means; for a censored outcome the expected *observed*
    score (:func:`~alliance_bayes.model.regression.figures.conditional_predictions`, the
    bundle's ``conditional_effects`` figure). Tidy: ``predictor``, ``care_type``, ``value``,
    ``estimate`` (posterior median), ``lower``, ``upper`` (central ``prob`` interval).
    """
    from alliance_bayes.model.regression.figures import conditional_predictions

    _regression_only(spec, "conditional_effects")
    if isinstance(effects, int | float):
        raise TypeError(
            f"conditional_effects(effects, *, prob=...): effects names predictors ('goal'), got "
            f"{effects!r}; give a probability by name, prob={effects!r}"
        )
    if not 0 < float(prob) < 1:
        raise ValueError(f"prob must be a probability between 0 and 1, not {prob!r}")
    preds = conditional_predictions(posterior, meta, n_grid=n_grid)
    if not preds:
        raise ValueError("the fit lacks what conditional effects need (alpha, scales)")
    if effects is not None:
        wanted = [effects] if isinstance(effects, str) else list(effects)
        names = [e.removeprefix("alliance_") for e in wanted]
        unknown = [w for w, n in zip(wanted, names, strict=True) if n not in preds]
        if unknown:
            raise ValueError(
                f"no conditional effect for {', '.join(map(repr, unknown))}; this fit's "
                f"predictors are {', '.join(map(repr, preds))}"
            )
        preds = {n: preds[n] for n in dict.fromkeys(names)}
    tail = (1 - prob) / 2
    rows = []
    for predictor, pred in preds.items():
        for care, draws in pred["curves"].items():
            lo, mid, hi = np.quantile(draws, [tail, 0.5, 1 - tail], axis=0)
            rows.append(
                pd.DataFrame(
                    {
                        "predictor": predictor,
                        "care_type": care,
                        "value": pred["grid"],
                        "estimate": mid,
                        "lower": lo,
                        "upper": hi,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Posterior predictive checks (arviz-plots)

_PPC_KINDS = ("kde", "hist", "ecdf", "pit", "tstat", "loo_pit")


def pp_check(dt: xr.DataTree, kind: str = "kde", *, var: str = "y", **kwargs) -> Any:
    """A posterior predictive check of ``var`` drawn by arviz-plots; returns its PlotCollection.

    ``kind``: ``"kde"``, ``"hist"`` or ``"ecdf"`` (observed over replicated distributions,
    ``plot_ppc_dist``; ``"ecdf"`` shows a censored outcome's pile at a bound without smoothing it
    away), ``"pit"`` (``plot_ppc_pit``), ``"tstat"`` (``plot_ppc_tstat``, e.g. ``t_stat="mean"``)
    or ``"loo_pit"`` (``plot_loo_pit``, on the draws the predictive group keeps). ``kwargs`` go to
    the arviz-plots function.
    """
    import arviz_plots as azp

    if kind not in _PPC_KINDS:
        raise ValueError(f"kind must be one of {_PPC_KINDS}, not {kind!r}")
    if "posterior_predictive" not in dt.children:
        raise ValueError("this fit has no posterior_predictive group")
    kwargs.setdefault("backend", "matplotlib")
    if kind in ("kde", "hist", "ecdf"):
        return azp.plot_ppc_dist(dt, var_names=[var], kind=kind, **kwargs)
    if kind == "pit":
        return azp.plot_ppc_pit(dt, var_names=[var], **kwargs)
    if kind == "tstat":
        return azp.plot_ppc_tstat(dt, var_names=[var], **kwargs)
    # The predictive draws are thinned; LOO weights must come from the same draws.
    pp = dt["posterior_predictive"].to_dataset()
    at = {"draw": pp["draw"].values}
    groups = {
        "posterior_predictive": pp,
        "observed_data": dt["observed_data"].to_dataset(),
        "log_likelihood": dt["log_likelihood"].to_dataset().sel(at),
        "posterior": dt["posterior"].to_dataset().sel(at),
    }
    return azp.plot_loo_pit(xr.DataTree.from_dict(groups), var_names=[var], **kwargs)


# --------------------------------------------------------------------------------------------------
# Power-scaling sensitivity


def psense(dt: xr.DataTree, estimands: xr.Dataset, var_names: Sequence[str] | None = None):
    """Power-scaling sensitivity of each estimand (:func:`~alliance_bayes.model.psense.psense_estimands`).

    A fit in memory holds every draw's log-likelihood. A saved bundle keeps every
    ``thinned_every``-th draw of it: then the estimands and the log prior are taken at those
    draws, a :class:`ThinnedLikelihoodWarning` says so, and the table's ``attrs["note"]``
    repeats it (the importance weights come from fewer draws, so the sensitivities carry more
    Monte Carlo error). What cannot be done is refused: no ``log_prior`` or ``log_likelihood``
    group (a draws-only refit), or a log-likelihood of a subset of clients (a collapsed
    likelihood too large to store pointwise), whose power-scaling would not scale the whole
    likelihood.
    """
    from alliance_bayes.model.psense import psense_estimands

    absent = [g for g in ("log_prior", "log_likelihood") if g not in dt.children]
    if absent:
        raise ValueError(f"psense needs the {' and '.join(absent)} group(s), which this fit lacks")
    attrs = dict(dt["log_likelihood"].attrs)
    if attrs.get("clients_kept", 0) < attrs.get("clients_of", 0):
        raise ValueError(
            f"the pointwise log-likelihood holds {attrs['clients_kept']} of "
            f"{attrs['clients_of']} clients: power-scaling it would not scale the likelihood"
        )
    note = ""
    thin = int(attrs.get("thinned_every", 1))
    if thin > 1:
        at = {"draw": dt["log_likelihood"]["draw"].values}
        estimands = estimands.sel(at)
        tree = {name: node.to_dataset() for name, node in dt.children.items()}
        tree["log_prior"] = tree["log_prior"].sel(at)
        dt = xr.DataTree.from_dict(tree)
        note = (
            f"computed on one draw in {thin} ({estimands.sizes['draw']} per chain), the draws "
            "whose log-likelihood the saved bundle keeps; the fit in memory had them all"
        )
        warnings.warn(f"psense {note}", ThinnedLikelihoodWarning, stacklevel=3)
    table = psense_estimands(dt, estimands, var_names)
    table.attrs["note"] = note
    return table


# --------------------------------------------------------------------------------------------------
# Refit


_SAMPLER_KEYS = ("draws", "tune", "chains", "seed", "sampler")
# Spec tables that leave the design (the arrays the model is fitted to) as it is.
_DESIGN_FREE = {"name", "description", "priors", "hierarchy", "likelihood", "hypotheses"}


def update(fit: Fit, *, study=None, progress: bool = False, cache=None, **overrides) -> Fit:
    """Refit with ``overrides``, through :func:`alliance_bayes.fitting.fit` (the one pipeline).

    ``draws``, ``tune``, ``chains``, ``seed``, ``sampler`` change the sampler settings (the rest
    are the fit's as run); ``study`` the data; any other keyword is a spec table or value merged
    into the spec as run, as :func:`~alliance_bayes.spec.load_spec` merges overrides
    (e.g. ``priors={"sigma_sd": 10}``). Without ``study`` the fit's own design is refitted
    (:func:`~alliance_bayes.fitting.fit_design`, the pipeline's sampling step), which allows
    overrides of ``priors``, ``hierarchy`` (but its ``between``), ``likelihood``,
    ``hypotheses``, ``name`` and ``description`` only: the others change the design.

    Nothing is recompiled where only data values or sampler settings change: the model graph is
    rebuilt, but its compiled code is found in PyTensor's cache and the package's cache of
    nutpie's wrappers (:mod:`alliance_bayes.compiled_wrappers`), which data values do not key.
    """
    from alliance_bayes import fitting
    from alliance_bayes.spec import _merge, spec_from_dict

    sampler = {k: overrides.pop(k) for k in _SAMPLER_KEYS if k in overrides}
    settings = {k: sampler.get(k, fit.meta.get(k)) for k in _SAMPLER_KEYS}
    spec = fit.spec
    if overrides:
        spec = spec_from_dict(
            # Through JSON, as run.json holds it: tables as lists, as a TOML file gives them.
            _merge(json.loads(json.dumps(spec.to_dict())), overrides),
            source=f"{spec.source} (updated: {sorted(overrides)})",
        )
    if study is not None:
        return fitting.fit(spec, study, progress=progress, cache=cache, **settings)
    if fit.design is None:
        raise ValueError("a fit loaded from a bundle has no data: give study= to update it")
    changed = set(overrides) - _DESIGN_FREE
    if changed or spec.hierarchy.between != fit.spec.hierarchy.between:
        raise ValueError(
            f"overrides of {sorted(changed) or ['hierarchy.between']} change the design: give "
            "study= (the data) to update with them"
        )
    return fitting.fit_design(
        spec,
        fit.design,
        fitting.settings_for(spec, progress=progress, **settings),
        forbidden_ids=fit.forbidden_ids,
        cache=cache,
    )
