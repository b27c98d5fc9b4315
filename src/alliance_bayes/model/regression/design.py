r"""From the analysis frame to the arrays one model needs (its design), with every exclusion counted.

The model layer consumes an :class:`~alliance_bayes.data.frame.AnalysisFrame`. This module applies the
spec's data filter (all clients, or those elevated at baseline), keeps the clients with an observed
outcome, baseline and covariates (complete cases: missing follow-up is assumed missing at random given
the covariates), and centres the predictors so that the intercept is the expected follow-up of an
average client, which decorrelates it from the slopes and helps the sampler. Covariates are also
scaled to unit SD, so that their priors are per SD of the covariate, on the outcome's own scale
whatever the covariate's units (a day in care and a year of age are not comparable units).

A covariate the study declares (:mod:`alliance_bayes.data.covariates`) enters as a numeric or
binary one does, except a categorical one: with reference level :math:`r`, one indicator column
:math:`d_{ik} = [\text{level}_i = k]` per other level :math:`k` present among the clients in the
model, named ``<name>[<k>]``, centred at its sample mean but not scaled, so that its slope is the
expected difference between level :math:`k` and the reference and its prior is the one of
``b_covariate_sd`` on that difference (see :func:`covariate_columns`).

Alliance enters on its own scale, unscaled: the contract's 1–5, or the range of the alliance
instrument the study declares (:mod:`alliance_bayes.data.alliance`; the client scores are then
means of the declared items, :mod:`alliance_bayes.data.frame`). Its slopes are outcome points per
one point of that scale, and the prior scales per alliance point, stated on the 1–5 scale, are
multiplied by 4 over the declared range's width (:func:`model_priors`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# the contract's (a study's own are the analysis frame's care_types, care_contrasts, provider_types)
from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.care import CARE_CONTRASTS, CARE_TYPES, PROVIDER_TYPES  # noqa: F401
from alliance_bayes.data.covariates import Covariate
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.data.instruments import declare
from alliance_bayes.errors import DesignError
from alliance_bayes.model.elevated import elevated_sample
from alliance_bayes.spec import (
    COVARIATES,
    OUTCOMES,
    ModelSpec,
    PriorSpec,
    scale_alliance_priors,
)

LEVELS = ("within", "between")
OUTCOME = "y"  # name of the observed variable in every model (dims: client)
OBSERVED = "y_observed"  # its data container
OUTCOME_WEIGHT = (
    "outcome_weight"  # per-client log-density weights of a K-fold refit (data container)
)
INTERCEPT_PRIOR_MEAN = "alpha_prior_mean"  # the intercept prior's centre (data container)


def alliance_record(frame: AnalysisFrame) -> dict[str, Any]:
    """The declared alliance instrument as ``run.json`` records it (``scales.alliance_instrument``):
    the declaration (:meth:`~alliance_bayes.data.alliance.AllianceInstrument.to_dict`) and, per
    subscale, the study's sessions where some but not all of its items were rated; empty when the
    study declares none (the contract's 1–5 items)."""
    if frame.alliance is None:
        return {}
    return frame.alliance.to_dict() | {"partially_rated_sessions": dict(frame.partially_rated)}


def alliance_scale(scales: Mapping[str, Any] | None) -> str | None:
    """The declared alliance scale that a design's ``scales`` record (``"WAI-S 1–7"``), or None
    for the contract's 1–5 items (for :meth:`~alliance_bayes.spec.ModelSpec.effect_units_on`)."""
    recorded = RecordedScale.of(scales)
    return recorded.name if recorded.declared else None


def model_priors(spec: ModelSpec, data: Any) -> PriorSpec:
    """The prior scales the model of ``spec`` uses on ``data``: :attr:`ModelSpec.priors`, with the
    scales per alliance point on the study's declared alliance scale.

    The rule (:func:`~alliance_bayes.spec.scale_alliance_priors`): the scales per alliance
    point (``b_alliance_sd``, ``mu_b_sd``, ``sd_b_sd``, ``sd_provider_slope_sd``) are stated per
    point of the contract's 1–5 scale; on a declared range from ``low`` to ``high`` they are
    multiplied by ``4 / (high - low)`` (a 0–10 SRS: ×0.4, so ``mu_b_sd = 10`` becomes 4 WHO-5
    points per SRS point; a 1–7 WAI-S: ×2/3), which keeps the prior of the outcome change between
    the two ends of the scale. Without a declared instrument the spec's scales as they are.
    """
    alliance = getattr(getattr(data, "frame", None), "alliance", None)
    if alliance is None:
        return spec.priors
    return scale_alliance_priors(spec.priors, alliance.prior_factor)


def care_counts(care_index: np.ndarray, care_types: tuple[str, ...] = CARE_TYPES) -> dict[str, int]:
    """Clients of each care type present among the clients in the likelihood (``care_index``
    counts positions in ``care_types``)."""
    counts = np.bincount(np.asarray(care_index, dtype=np.int64), minlength=len(care_types))
    return {care_types[c]: int(counts[c]) for c in range(len(care_types)) if counts[c]}


def care_shares(
    care_index: np.ndarray, care_types: tuple[str, ...] = CARE_TYPES
) -> dict[str, float]:
    """Share of each care type among the clients in the likelihood (care types present only).

    These are the weights π_c of the pooled slopes Σ_c π_c b_c (see
    :func:`alliance_bayes.model.regression.estimands.compute_estimands`).
    """
    counts = care_counts(care_index, care_types)
    total = sum(counts.values())
    return {c: n / total for c, n in counts.items()}


@dataclass(frozen=True)
class LatentAlliance:
    r"""What a latent-mean between part (``between = "latent_mean"``) needs, per subscale.

    The indicators of the providers' mean alliance :math:`m_{ps}` are the scores :math:`a_{js}`
    of every client :math:`j` of the study with a session behind subscale :math:`s` (those
    without a follow-up too, as the caseload mean uses them), through the part weights
    :math:`w_{jps}` of :meth:`~alliance_bayes.data.frame.AnalysisFrame.alliance_weights`.
    Providers are the model's (``provider`` coordinate) followed by those seen only by clients
    outside the model (``alliance_provider`` coordinate, ``provider_labels``).

    Each list has one entry per subscale of the model: ``score[k]`` (indicator,), ``index[k]``
    and ``weight[k]`` (indicator, K) provider positions and part weights (0-padded), and
    ``client_row[k]`` (client,) the indicator row of each client in the likelihood.
    """

    provider_labels: tuple[str, ...]
    score: tuple[np.ndarray, ...]
    index: tuple[np.ndarray, ...]
    weight: tuple[np.ndarray, ...]
    client_row: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class ModelData:
    """Arrays for one model, aligned on the clients that enter the likelihood.

    Predictors are centred at their sample means (``*_mean`` keep the means, so that effects stay
    in natural units and the uncentred intercept can be recovered); covariates are also divided by
    their sample SDs (``covariate_sds``).
    """

    frame: AnalysisFrame
    y: np.ndarray
    baseline: np.ndarray
    baseline_mean: float
    covariates: np.ndarray  # (client, covariate), standardised
    covariate_names: tuple[str, ...]
    covariate_means: np.ndarray
    covariate_sds: np.ndarray
    care_index: np.ndarray  # index into frame.care_types
    subscales: tuple[str, ...]
    alliance: np.ndarray  # (client, subscale, level): within part, centred between part
    alliance_means: np.ndarray  # (subscale, level)
    composite: np.ndarray  # centred composite alliance
    composite_mean: float
    membership_index: np.ndarray  # (client, K) provider positions, 0-padded
    membership_weight: np.ndarray  # (client, K) session shares, 0 where padded
    provider_type_index: np.ndarray  # (provider,) index into frame.provider_types
    exclusions: dict[str, int] = field(default_factory=dict)
    # Outcomes the data-dependent sampler choices are computed from (None: y). Refits to imputed
    # outcomes share one set, so that their model graphs are identical and compile once.
    y_tuning: np.ndarray | None = None
    # The indicators of latent provider means (between = "latent_mean"), else None.
    latent: LatentAlliance | None = None
    # How each declared covariate is coded (covariate_columns); empty without declared ones.
    covariate_coding: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_clients(self) -> int:
        return len(self.y)

    @property
    def care_types(self) -> tuple[str, ...]:
        """The study's care types (:attr:`AnalysisFrame.care_types`), what ``care_index`` counts."""
        return self.frame.care_types

    @property
    def reference_index(self) -> int:
        """The position of the reference care type in :attr:`care_types`."""
        return self.frame.care_types.index(self.frame.care_reference)

    def care_dummies(self) -> np.ndarray:
        """(client, care type but the reference): 1 where the client has that care type."""
        care = np.eye(len(self.care_types))[self.care_index]
        return care[:, [c for c in range(len(self.care_types)) if c != self.reference_index]]

    @property
    def tuning_y(self) -> np.ndarray:
        """The outcomes behind the intercept prior's centre and the parametrisation choices."""
        return self.y if self.y_tuning is None else self.y_tuning

    def scales(self) -> dict[str, object]:
        """Sample moments of the clients in the model, for standardised effects and predictions.

        ``outcome_sd``, ``baseline_sd``, ``covariate_sd``, ``alliance_sd`` (per subscale and level)
        and ``composite_sd`` are sample SDs (ddof = 1) over the clients, as a paper's β uses them;
        ``outcome_mean``, ``baseline_mean``, ``between_mean`` (mean between-provider part per
        subscale) and ``alliance_range`` / ``composite_range`` (observed minimum and maximum of
        the client scores) place conditional predictions on the data's scale.
        ``covariate_coding``, only with declared covariates, says how each is coded (its type,
        label, columns, and for a text-coded one its reference level and clients per level).
        ``alliance_instrument``, only with a declared alliance instrument, is its declaration,
        the factor its prior scales per alliance point were multiplied by and the partly rated
        sessions (:func:`alliance_record`).
        """
        sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
        score = self.alliance[:, :, 0] + self.alliance[:, :, 1] + self.alliance_means[:, 1]
        composite = self.composite + self.composite_mean
        return {
            "outcome_mean": float(np.mean(self.y)),
            "outcome_sd": sd(self.y),
            "baseline_mean": self.baseline_mean,
            "baseline_sd": sd(self.baseline),
            "covariate_sd": {
                n: sd(self.covariates[:, j] * self.covariate_sds[j])
                for j, n in enumerate(self.covariate_names)
            },
            "alliance_sd": {
                s: {lv: sd(self.alliance[:, k, v]) for v, lv in enumerate(LEVELS)}
                for k, s in enumerate(self.subscales)
            },
            "between_mean": {
                s: float(self.alliance_means[k, 1]) for k, s in enumerate(self.subscales)
            },
            "alliance_range": {
                s: [float(score[:, k].min()), float(score[:, k].max())]
                for k, s in enumerate(self.subscales)
            },
            "composite_mean": self.composite_mean,
            "composite_sd": sd(composite),
            "composite_range": [float(composite.min()), float(composite.max())],
            "care_types": [self.care_types[i] for i in sorted(set(self.care_index.tolist()))],
            "care_share": care_shares(self.care_index, self.care_types),
            "care_count": care_counts(self.care_index, self.care_types),
            "care_reference": self.frame.care_reference,
        } | (
            ({"covariate_coding": self.covariate_coding} if self.covariate_coding else {})
            | ({"alliance_instrument": record} if (record := alliance_record(self.frame)) else {})
        )

    def coords(self) -> dict[str, list[str]]:
        """Named dimensions of the model (pseudonymised labels only)."""
        return {
            "client": self.frame.clients["client"].tolist(),
            "provider": self.frame.providers["provider"].tolist(),
            "care_type": list(self.frame.care_types),
            "care_contrast": list(self.frame.care_contrasts),
            "provider_type": list(self.frame.provider_types),
            "subscale": list(self.subscales),
            "level": list(LEVELS),
            "covariate": list(self.covariate_names),
        } | (
            {"alliance_provider": list(self.latent.provider_labels)}
            if self.latent is not None
            else {}
        )


def prepare(spec: ModelSpec, frame: AnalysisFrame) -> ModelData:
    """Select the clients of ``spec`` from ``frame`` and build the centred design arrays.

    A declared outcome (``<name>_followup``, see :mod:`alliance_bayes.data.instruments`) must be
    declared by the frame's own study; its declaration is then the one the spec's range, label,
    units and prior scales follow.

    Raises
    ------
    DesignError
        When the spec's outcome is declared by no ``study.toml`` of this study, or when no client
        (or too few to estimate anything) remains after filtering.
    """
    _check_declared(spec, frame)
    clients = frame.clients
    keep = pd.Series(True, index=clients.index)
    exclusions: dict[str, int] = {"clients_in_data": len(clients)}
    if spec.data.sample == "elevated":
        elevated = pd.Series(elevated_sample(spec, frame), index=clients.index)
        exclusions["not_elevated_at_baseline"] = int((~elevated).sum())
        keep &= elevated
    needed = [spec.outcome, spec.baseline, *spec.predictors.covariates]
    imputed = spec.data.followup_imputations > 0
    for column in needed:
        if column not in clients or clients[column].isna().all():
            raise DesignError(
                f"spec {spec.name!r} needs column {column!r}, absent from the data"
                + other_outcomes(frame, column)
            )
        missing = keep & clients[column].isna()
        if imputed and column == spec.outcome:
            # Kept, and imputed from the complete-case posterior (multiple imputation).
            exclusions[f"imputed_{column}"] = int(missing.sum())
            continue
        exclusions[f"missing_{column}"] = int(missing.sum())
        keep &= ~missing
    if spec.predictors.alliance == "subscales":
        # A subscale rated at some sessions only (often the task item) enters through the sessions
        # where it was rated; a client with no rating of it at all has no score and is left out.
        for sub_name in frame.subscales:
            parts = clients[[f"alliance_{sub_name}_within", f"alliance_{sub_name}_between"]]
            missing = keep & parts.isna().any(axis=1)
            exclusions[f"missing_alliance_{sub_name}"] = int(missing.sum())
            keep &= ~missing
    n = int(keep.sum())
    exclusions["clients_in_model"] = n
    minimum = 10 + 3 * len(needed)
    if n < minimum:
        raise DesignError(
            f"spec {spec.name!r}: only {n} client(s) left after filtering "
            f"({exclusions}); at least {minimum} are needed"
        )
    sub = frame.select(keep.to_numpy(), narrow=True)
    c = sub.clients
    subscales = tuple(sub.subscales)
    if spec.predictors.alliance != "subscales":
        # Only the composite (goal and bond, rated at every session) enters the model; a subscale
        # rated at some sessions only is not needed and must not exclude anyone.
        subscales = tuple(
            s
            for s in subscales
            if c[[f"alliance_{s}_within", f"alliance_{s}_between"]].notna().all(axis=None)
        )

    baseline = c[spec.baseline].to_numpy(float)
    columns = covariate_columns(c, spec.predictors.covariates, frame, spec.name)
    cov_names = columns.names
    x, x_mean, x_sd = standardise(columns.values)
    if columns.indicator.any():
        # Level indicators are centred only: their slopes stay differences from the reference.
        x_sd = np.where(columns.indicator, 1.0, x_sd)
        x = np.where(columns.indicator, columns.values - x_mean, x)

    alliance = np.stack(
        [
            np.stack([c[f"alliance_{s}_within"], c[f"alliance_{s}_between"]], axis=-1)
            for s in subscales
        ],
        axis=1,
    ).astype(float)
    if np.isnan(alliance).any():
        raise DesignError(f"spec {spec.name!r}: alliance subscale scores missing for some clients")
    alliance_means = alliance.mean(axis=0)
    # Only the between part is centred: the within part is already a deviation from the provider mean.
    alliance_means[:, 0] = 0.0
    composite = c["alliance"].to_numpy(float)

    idx, weight = sub.membership_arrays()
    care = c["care_type"].astype(str).map({k: i for i, k in enumerate(sub.care_types)})
    ptype = (
        sub.providers["provider_type"]
        .astype(str)
        .map({k: i for i, k in enumerate(sub.provider_types)})
    )
    return ModelData(
        frame=sub,
        y=c[spec.outcome].to_numpy(float),
        baseline=baseline,
        baseline_mean=float(baseline.mean()),
        covariates=x,
        covariate_names=cov_names,
        covariate_means=x_mean,
        covariate_sds=x_sd,
        care_index=care.to_numpy(np.int64),
        subscales=subscales,
        alliance=alliance - alliance_means,
        alliance_means=alliance_means,
        composite=composite - composite.mean(),
        composite_mean=float(composite.mean()),
        membership_index=np.asarray(idx, np.int64),
        membership_weight=np.asarray(weight, float),
        provider_type_index=ptype.to_numpy(np.int64),
        exclusions=exclusions,
        covariate_coding=columns.coding,
        latent=(
            latent_alliance(frame, sub, np.flatnonzero(keep.to_numpy()), subscales)
            if spec.hierarchy.between == "latent_mean"
            else None
        ),
    )


@dataclass(frozen=True)
class CovariateColumns:
    """The covariate columns of a design, before centring.

    ``values`` (client, column) are the raw values (a level indicator is 0/1), ``names`` the
    column names (``age``, ``diagnosis[anxiety]``), ``indicator`` which columns are level
    indicators of a categorical covariate, ``coding`` how each declared covariate is coded
    (JSON-ready, recorded in ``run.json`` through :meth:`ModelData.scales`).
    """

    values: np.ndarray
    names: tuple[str, ...]
    indicator: np.ndarray
    coding: dict[str, dict[str, Any]]


def _study_levels(frame: AnalysisFrame, covariate: Covariate) -> list[str]:
    """The levels of a text-coded covariate: as declared, else those in the study; reference
    first."""
    levels = list(covariate.levels) or sorted(set(frame.clients[covariate.name].dropna()))
    return [str(covariate.reference), *(v for v in levels if v != covariate.reference)]


def covariate_columns(
    clients: pd.DataFrame, names: Sequence[str], frame: AnalysisFrame, spec_name: str = ""
) -> CovariateColumns:
    r"""The covariate columns of the clients in a model, in the order of ``names``.

    A built-in, numeric or 0/1 binary covariate is its own column. A binary covariate coded by two
    text levels is 1 at the level that is not its reference. A categorical covariate with
    reference :math:`r` gives one indicator :math:`d_{ik} = [\text{level}_i = k]` for each other
    level :math:`k` that some client of ``clients`` has, named ``<name>[<k>]`` (a level with no
    client in the model cannot be estimated: it is left out and listed as ``absent_levels``).

    The indicators are centred and not scaled (:func:`prepare`), unlike a binary covariate,
    which is standardised as ``male`` is. Why: the slope of an indicator is the difference
    between a level and the reference, and a prior per SD of the indicator would put
    :math:`\mathcal N(0, \sigma_\beta / \mathrm{sd}(d_k))` on that difference, widest for the
    rarest level, where the data say least; unscaled, every difference gets
    Normal(0, ``b_covariate_sd``) in outcome points, as a care-type contrast gets
    Normal(0, ``b_care_sd``).

    Raises
    ------
    DesignError
        When no client in the model is at a categorical covariate's reference level (every
        contrast would then be confounded with the intercept).
    """
    n = len(clients)
    values, columns, indicator = [], [], []
    coding: dict[str, dict[str, Any]] = {}
    for name in names:
        covariate = frame.covariates.get(name) if name not in COVARIATES else None
        if covariate is None or not covariate.coded:
            values.append(clients[name].to_numpy(float))
            columns.append(name)
            indicator.append(False)
            if covariate is not None:
                coding[name] = {"type": covariate.type, "label": covariate.shown, "columns": [name]}
                if covariate.type == "binary":
                    coding[name] |= {"level": "1", "reference": "0"}
            continue
        observed = clients[name].astype(str).to_numpy()
        levels = _study_levels(frame, covariate)
        reference = levels[0]
        counts = {v: int((observed == v).sum()) for v in levels}
        entry: dict[str, Any] = {
            "type": covariate.type,
            "label": covariate.shown,
            "reference": reference,
            "clients": counts,
        }
        if covariate.type == "binary":
            other = next((v for v in levels if v != reference), "")
            values.append((observed == other).astype(float))
            columns.append(name)
            indicator.append(False)
            coding[name] = entry | {"level": other, "columns": [name]}
            continue
        if counts[reference] == 0:
            raise DesignError(
                f"spec {spec_name!r}: no client in the model is at the reference level "
                f"{reference!r} of covariate {name!r} (clients per level: {counts}); declare "
                f"another reference in [covariates.{name}], or leave {name!r} out of the spec"
            )
        present = [v for v in levels[1:] if counts[v]]
        for level in present:
            values.append((observed == level).astype(float))
            columns.append(f"{name}[{level}]")
            indicator.append(True)
        coding[name] = entry | {
            "levels": present,
            "absent_levels": [v for v in levels[1:] if not counts[v]],
            "columns": [f"{name}[{v}]" for v in present],
        }
    # Through a frame, as the columns were always taken: the same memory layout gives the same
    # sums in standardise, to the last bit, and so the same draws as before declared covariates.
    table = pd.DataFrame(dict(zip(columns, values, strict=True)), index=clients.index)
    return CovariateColumns(
        values=table.to_numpy(float).reshape(n, len(columns)),
        names=tuple(columns),
        indicator=np.array(indicator, dtype=bool),
        coding=coding,
    )


def check_covariates(spec: ModelSpec, frame: AnalysisFrame) -> None:
    """Every covariate of the spec that is not built in must be declared by this study."""
    unknown = [c for c in spec.declared_covariates if c not in frame.covariates]
    if not unknown:
        return
    where = frame.outcomes_declared_in or "the study (it has no study.toml)"
    built_in = spec.built_in_covariates  # the ratings family's differ
    known = [*built_in, *frame.covariates]
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise DesignError(
        f"spec {spec.name!r}: covariate(s) {', '.join(hints)} not declared in {where}; this "
        f"study's covariates are {list(built_in)} (built in) and "
        f"{sorted(frame.covariates)} (declared). Declare one there as [covariates.<name>] with "
        'type = "numeric", "binary" or "categorical" (and reference = "<level>" for a '
        "categorical one)"
    )


def other_outcomes(frame: AnalysisFrame, column: str) -> str:
    """For an outcome column the study lacks: the outcomes it has, and how to fit one."""
    if not column.endswith(("_followup", "_baseline")):
        return ""
    have = [
        c
        for c in (*OUTCOMES, *(i.followup for i in frame.outcomes.values()))
        if c in frame.clients and frame.clients[c].notna().any()
    ]
    if not have:
        return " (the study has no outcome scores)"
    return (
        f" (this study's outcomes are {have}: fit a spec with one of them as its outcome, e.g. "
        f'a TOML with extends = "who5_change" and outcome = "{have[0]}")'
    )


def _check_declared(spec: ModelSpec, frame: AnalysisFrame) -> None:
    """A declared outcome must be declared by this study; its declaration becomes the one in use.
    Every covariate that is not built in must be declared by this study too."""
    check_covariates(spec, frame)
    if not spec.declared_outcome:
        return
    name = spec.outcome.removesuffix("_followup")
    if name not in frame.outcomes:
        where = frame.outcomes_declared_in or "the study (it has no study.toml)"
        known = sorted({*OUTCOMES, *(i.followup for i in frame.outcomes.values())})
        raise DesignError(
            f"spec {spec.name!r}: outcome {spec.outcome!r} is not declared in {where}; "
            f"this study's outcomes are {known}. Declare it there as [outcomes.{name}] with "
            'label, range = [low, high] and better = "lower" or "higher"'
        )
    # Another study loaded since may declare the same name otherwise: this study's facts hold.
    declare({name: frame.outcomes[name]})


def latent_alliance(
    frame: AnalysisFrame, sub: AnalysisFrame, kept: np.ndarray, subscales: tuple[str, ...]
) -> LatentAlliance:
    """The indicator arrays of a latent-mean between part (:class:`LatentAlliance`).

    ``frame`` is the whole study, ``sub`` its selection and ``kept`` the positions in ``frame`` of
    the clients of ``sub``. Providers are ordered as ``sub.providers``, then the others of
    ``frame`` that some indicator saw.
    """
    labels = frame.providers["provider"].astype(str).to_numpy()
    in_model = sub.providers["provider"].astype(str).tolist()
    position = {p: i for i, p in enumerate(in_model)}
    extra: list[str] = []
    per_subscale = []
    for s in subscales:
        pairs = frame.alliance_weights(s)
        names = labels[pairs["provider_index"].to_numpy()]
        for p in names:
            if p not in position:
                position[p] = len(position)
                extra.append(p)
        pos = np.array([position[p] for p in names], dtype=np.int64)
        indicators, row = np.unique(pairs["client_index"].to_numpy(), return_inverse=True)
        slot = pairs.groupby("client_index").cumcount().to_numpy()
        k = int(slot.max()) + 1 if len(slot) else 1
        index = np.zeros((len(indicators), k), dtype=np.int64)
        weight = np.zeros((len(indicators), k))
        index[row, slot] = pos
        weight[row, slot] = pairs["weight"].to_numpy(dtype=float)
        score = frame.clients[f"alliance_{s}"].to_numpy(dtype=float)[indicators]
        client_row = np.searchsorted(indicators, kept)
        if not np.array_equal(indicators[np.minimum(client_row, len(indicators) - 1)], kept):
            raise DesignError(f"some clients in the model have no {s} score to split")
        per_subscale.append((score, index, weight, client_row))
    score, index, weight, client_row = (tuple(x) for x in zip(*per_subscale, strict=True))
    return LatentAlliance(
        provider_labels=(*in_model, *extra),
        score=score,
        index=index,
        weight=weight,
        client_row=client_row,
    )


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of ``x`` centred and scaled to unit SD over their non-missing rows.

    Returns ``(z, mean, sd)``; missing cells stay missing. A constant column (SD 0, e.g. a study
    without men) is centred only (its SD is taken as 1), so its slope is left to its prior.
    """
    x = np.asarray(x, dtype=float)
    if x.shape[0] == 0 or np.isnan(x).all(axis=0).any():
        mean = np.zeros(x.shape[1])
        sd = np.ones(x.shape[1])
    else:
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x - mean) / sd, mean, sd
