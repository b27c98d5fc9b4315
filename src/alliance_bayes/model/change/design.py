"""The change family's data: every client's baseline, the follow-ups observed, care types, providers.

Selection into the elevated group is on the *observed* baseline, so the model needs every client,
elevated or not: the unselected clients tell it where the population's true baseline lies, and
therefore how far the selected ones will regress towards it.

What the model needs to know about the outcome comes from its instrument
(:mod:`alliance_bayes.data.instruments`): the built-in WHO-5 or PHQ-9, or one the study declares
as ``[outcomes.<name>]`` in its ``study.toml``. Its ``better`` direction orients the scale (the
elevated are at or beyond the cut-off on the worse side, improvement is a move to the better one),
its ``cutoff`` selects the elevated (for the built-in ones, the spec's ``[data]`` cut-offs, so that
a variant may move them), and a declared test–retest ``reliability`` centres the prior of the
measurement error (:func:`reliability_prior`).

Client covariates (``[predictors] covariates``: the built-in age, male and days in care, and any
the study declares, :mod:`alliance_bayes.data.covariates`) are coded as the regression family
codes them (:func:`~alliance_bayes.model.regression.design.covariate_columns`): a numeric or
binary column centred at its sample mean over the clients in the model and divided by its sample
SD, a categorical one as one indicator per level other than its reference, centred but not
scaled. At a client with every covariate at the sample mean the centred columns are all 0, so
the care-type means of the true scores, and every estimand built on them, are those of a client
at the sample's covariate means. A client missing a covariate is left out and counted
(``missing_<column>``); a spec naming a covariate the study does not declare is refused
(:func:`~alliance_bayes.model.regression.design.check_covariates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The contract's care and provider types, for importers; a design's own are its frame's.
from alliance_bayes.data.care import CARE_TYPES, PROVIDER_TYPES
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.data.instruments import BUILT_IN, Instrument, declare, instrument_of
from alliance_bayes.errors import DesignError
from alliance_bayes.model.regression.design import (
    CovariateColumns,
    check_covariates,
    covariate_columns,
    standardise,
)
from alliance_bayes.spec import REFERENCE_RANGE, ChangeSpec, ModelSpec, PriorSpec

__all__ = [
    "CARE_TYPES",
    "PROVIDER_TYPES",
    "ChangeDesign",
    "ReliabilityPrior",
    "covariate_prior_sd",
    "direction",
    "instrument",
    "prepare_change",
    "reliability_prior",
    "short_name",
]

#: The built-in instruments' cut-offs are the spec's ``[data]`` values (the paper's rules by
#: default), so that a variant may move them; a declared instrument's is its declaration's.
SPEC_CUTOFFS = {"who5": "who5_cutoff", "phq9": "phq9_cutoff"}


def short_name(spec: ModelSpec) -> str:
    """The instrument's name, the prefix of the estimand names (``who5``, ``phq9``, ``gad7``)."""
    return spec.outcome.removesuffix("_followup")


def instrument(spec: ModelSpec) -> Instrument:
    """The outcome's instrument: built in, or as the study loaded last declares it.

    :func:`prepare_change` first makes its own study's declaration the one in use.

    Raises
    ------
    DesignError
        The outcome is declared by no study loaded.
    """
    name = short_name(spec)
    found = BUILT_IN.get(name) or instrument_of(spec.outcome)
    if found is None:
        raise DesignError(
            f"spec {spec.name!r}: outcome {spec.outcome!r} is declared by no study loaded; "
            f"declare [outcomes.{name}] in the study's study.toml"
        )
    return found


def direction(spec: ModelSpec) -> tuple[float, float]:
    """``(sign, cutoff)``: +1 where higher is better (WHO-5), −1 where lower is (PHQ-9, GAD-7).

    The sign is the instrument's ``better``; on the oriented scale sign·X, "elevated at baseline"
    is always sign·X₁ <= sign·cutoff and improvement is always an increase.

    Raises
    ------
    DesignError
        A declared instrument without a ``cutoff``: no one is elevated or not.
    """
    inst = instrument(spec)
    sign = 1.0 if inst.better == "higher" else -1.0
    if inst.name in SPEC_CUTOFFS:
        return sign, float(getattr(spec.data, SPEC_CUTOFFS[inst.name]))
    if inst.cutoff is None:
        raise DesignError(
            f"spec {spec.name!r}: the change model selects the clients elevated at baseline by the "
            f"instrument's cut-off, and [outcomes.{inst.name}] ({inst.label}) declares none; "
            f"add cutoff = <score> to it in the study's study.toml (elevated at "
            f"{'>=' if sign < 0 else '<='} the cut-off, since {inst.better} is better)"
        )
    return sign, float(inst.cutoff)


def covariate_prior_sd(spec: ModelSpec) -> float:
    r"""The prior SD of a covariate slope, in outcome points per SD of the covariate.

    ``[priors] b_covariate_sd`` where the spec states it for its own outcome, else the
    :class:`~alliance_bayes.spec.PriorSpec` default (on WHO-5's 0–100) times the outcome's range
    over :data:`~alliance_bayes.spec.REFERENCE_RANGE`: :math:`5 \cdot 27/100 = 1.35` PHQ-9
    points, the declared range's share for a declared outcome (as
    :attr:`~alliance_bayes.spec.ModelSpec.priors` scales it), 5 WHO-5 points unchanged.

    Raises
    ------
    SpecError
        A declared outcome before a study declaring it is loaded, where the spec states no scale.
    """
    if "b_covariate_sd" in spec.priors_stated:
        return float(spec.stated_priors.b_covariate_sd)
    low, high = spec.outcome_range
    return PriorSpec().b_covariate_sd * (high - low) / REFERENCE_RANGE


@dataclass(frozen=True)
class ReliabilityPrior:
    """The Beta prior of the test–retest reliability ρ, its mean and SD, and where they come from.

    ``declared``: centred on the reliability the study declares for the instrument (``source``
    its declared source); otherwise the spec's ``[change]`` values (``source`` the spec's
    ``reliability_source``).
    """

    mean: float
    sd: float
    source: str
    declared: bool

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "sd": self.sd, "source": self.source, "declared": self.declared}


def reliability_prior(spec: ModelSpec, inst: Instrument) -> ReliabilityPrior:
    """The reliability prior of ``spec`` for the outcome's instrument ``inst``.

    A declared test–retest reliability centres the prior, with the spec's ``reliability_sd`` where
    it states one for this outcome and the :class:`~alliance_bayes.spec.ChangeSpec` default
    otherwise. An instrument without one (the built-in WHO-5 and PHQ-9 among them) takes the
    spec's ``[change]`` values; for a declared instrument the spec must state them for this
    outcome, with their source: a reliability written for another instrument (inherited through
    ``extends``) would otherwise pass for this one's.

    Raises
    ------
    DesignError
        Neither the declaration nor the spec gives a reliability for a declared instrument, or the
        declared mean and the SD make no Beta distribution.
    """
    c = spec.change
    assert c is not None
    if inst.reliability is None:
        if inst.name not in BUILT_IN and not (
            {"reliability_mean", "reliability_source"} <= spec.change_stated
            and c.reliability_source.strip()
        ):
            raise DesignError(
                f"spec {spec.name!r}: the change model needs a test–retest reliability of the "
                f"{inst.label} for its measurement error, and neither [outcomes.{inst.name}] of the "
                "study nor the spec's [change] table gives one for it. Declare reliability = <ICC> "
                "with source = '<where it was measured>' in the study's study.toml, or state "
                "reliability_mean, reliability_sd and reliability_source in the spec's [change]"
            )
        return ReliabilityPrior(c.reliability_mean, c.reliability_sd, c.reliability_source, False)
    sd = c.reliability_sd if "reliability_sd" in spec.change_stated else ChangeSpec().reliability_sd
    mean = inst.reliability
    if not sd**2 < mean * (1.0 - mean):
        raise DesignError(
            f"spec {spec.name!r}: a Beta prior of mean {mean:g} (the reliability declared in "
            f"[outcomes.{inst.name}]) needs an SD below {np.sqrt(mean * (1.0 - mean)):.3g}, got "
            f"{sd:g}; state a smaller reliability_sd in the spec's [change]"
        )
    return ReliabilityPrior(mean, sd, inst.source, True)


@dataclass
class ChangeDesign:
    """Arrays of the change model.

    Attributes
    ----------
    x1 : (n,) float
        Observed baseline of every client in the model.
    x2 : (m,) float
        Observed follow-ups; ``followed`` (m,) int are their clients' positions.
    care : (n,) int
        Care type, positions in :attr:`care_types` (the frame's).
    member_index, member_weight : (n, K)
        Multiple membership (:meth:`AnalysisFrame.membership_arrays`): provider positions and
        session-share weights, rows summing to 1.
    provider_type : (P,) int
        Positions in :attr:`provider_types` (the frame's).
    sign, cutoff : float
        :func:`direction`: elevated where sign·x1 <= sign·cutoff.
    instrument : Instrument
        The outcome's instrument (label, range, direction).
    reliability : ReliabilityPrior
        The prior of the test–retest reliability (:func:`reliability_prior`).
    covariates : (n, k) float
        The client covariates, centred; a numeric or binary column also divided by its sample SD,
        a level indicator not (see the module docstring). ``(n, 0)`` without covariates.
    covariate_names : (k,) str
        Their columns (``age``, ``diagnosis[anxiety]``), the ``covariate`` coordinate.
    covariate_means, covariate_sds : (k,) float
        What was subtracted and divided by (1 for a level indicator), in the columns' own units.
    covariate_coding : dict
        How each declared covariate is coded
        (:func:`~alliance_bayes.model.regression.design.covariate_columns`); empty without one.
    """

    frame: AnalysisFrame
    x1: np.ndarray
    x2: np.ndarray
    followed: np.ndarray
    care: np.ndarray
    member_index: np.ndarray
    member_weight: np.ndarray
    provider_type: np.ndarray
    sign: float
    cutoff: float
    instrument: Instrument
    reliability: ReliabilityPrior
    exclusions: dict[str, int] = field(default_factory=dict)
    covariates: np.ndarray | None = None
    covariate_names: tuple[str, ...] = ()
    covariate_means: np.ndarray = field(default_factory=lambda: np.zeros(0))
    covariate_sds: np.ndarray = field(default_factory=lambda: np.ones(0))
    covariate_coding: dict[str, dict[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.covariates is None:
            self.covariates = np.zeros((self.x1.size, 0))

    @property
    def n_clients(self) -> int:
        return int(self.x1.size)

    @property
    def care_types(self) -> tuple[str, ...]:
        """The study's care types (:attr:`AnalysisFrame.care_types`), the levels of ``care``."""
        return self.frame.care_types

    @property
    def provider_types(self) -> tuple[str, ...]:
        """The study's provider types, the levels of ``provider_type``."""
        return self.frame.provider_types

    def elevated(self) -> np.ndarray:
        """Clients elevated at baseline by the observed score (the paper's rule)."""
        return self.sign * self.x1 <= self.sign * self.cutoff

    def scales(self) -> dict[str, object]:
        """Sample facts the estimands need (kept in ``run.json``).

        ``baseline_sd`` is the SD of the observed baseline over every client in the model, the
        Var(X) of σ_e² = (1 − ρ)·Var(X) and the SD of the reliable-change criterion.
        ``instrument`` (its name, label, units, range and better direction) and
        ``reliability_prior`` (:class:`ReliabilityPrior`) are what the report states.
        """
        cares = self.care_types
        counts = np.bincount(self.care, minlength=len(cares))
        elevated = self.elevated()
        both = elevated[self.followed]
        naive = self.x2[both] - self.x1[self.followed][both]
        return {
            "baseline_mean": float(self.x1.mean()),
            "baseline_sd": float(self.x1.std(ddof=1)),
            "care_share": {c: float(k / counts.sum()) for c, k in zip(cares, counts, strict=True)},
            "cutoff": self.cutoff,
            "sign": self.sign,
            "n_elevated": int(elevated.sum()),
            "elevated_baselines": {
                c: _distribution(self.x1[elevated & (self.care == k)]) for k, c in enumerate(cares)
            },
            "n_elevated_followed": int(both.sum()),
            # The paper's quantity: the mean observed change of the elevated with a follow-up.
            "naive_change_elevated": float(naive.mean()) if naive.size else float("nan"),
            "instrument": {
                "name": self.instrument.name,
                "label": self.instrument.label,
                "units": self.instrument.units,
                "range": list(self.instrument.range),
                "better": self.instrument.better,
                "declared": self.instrument.name not in BUILT_IN,
            },
            "reliability_prior": self.reliability.as_dict(),
        } | self._covariate_scales(elevated)

    def _covariate_scales(self, elevated: np.ndarray) -> dict[str, object]:
        """With covariates, as the regression family records them: ``covariate_sd`` (each
        column's sample SD in its own units, ddof = 1), ``covariate_means`` (the centring; a
        level indicator's is the level's share) and, with declared ones, ``covariate_coding``."""
        if not self.covariate_names:
            return {}
        assert self.covariates is not None
        raw = self.covariates * self.covariate_sds + self.covariate_means
        names = self.covariate_names
        out: dict[str, object] = {
            "covariate_sd": {
                n: float(np.std(raw[:, j], ddof=1)) if self.n_clients > 1 else float("nan")
                for j, n in enumerate(names)
            },
            "covariate_means": {
                n: float(m) for n, m in zip(names, self.covariate_means, strict=True)
            },
            # Per care type, the elevated clients' mean row of the model's (centred, scaled)
            # covariates: their true means are shifted by it times the slopes per SD.
            "elevated_covariates": {
                c: self.covariates[elevated & (self.care == k)].mean(axis=0).tolist()
                if (elevated & (self.care == k)).any()
                else [0.0] * len(names)
                for k, c in enumerate(self.care_types)
            },
        }
        if self.covariate_coding:
            out["covariate_coding"] = self.covariate_coding
        return out


#: At most this many support points per care type in ``elevated_baselines`` (``run.json``).
MAX_SUPPORT = 400


def _distribution(x: np.ndarray) -> dict[str, list[float]]:
    """Distinct values and counts; more than :data:`MAX_SUPPORT` become as many quantiles."""
    values, counts = np.unique(x, return_counts=True)
    if values.size > MAX_SUPPORT:
        u = (np.arange(MAX_SUPPORT) + 0.5) / MAX_SUPPORT
        values = np.quantile(x, u)
        counts = np.full(MAX_SUPPORT, x.size / MAX_SUPPORT)
    return {"values": values.tolist(), "counts": counts.astype(float).tolist()}


def prepare_change(spec: ModelSpec, frame: AnalysisFrame) -> ChangeDesign:
    """Every client with an observed baseline; follow-ups where observed (missing at random).

    A declared outcome must be declared by the frame's own study, whose declaration then becomes
    the one in use (another study loaded since may declare the same name otherwise).

    Raises
    ------
    DesignError
        The outcome is not declared by this study, its instrument has no cut-off or no
        reliability to use (:func:`direction`, :func:`reliability_prior`); a covariate of the
        spec is not declared by this study or not measured; fewer than 20 clients with a
        baseline (and every covariate), fewer than 10 with a follow-up, or none elevated.
    """
    inst = _own_instrument(spec, frame)
    check_covariates(spec, frame)
    baseline, outcome = inst.baseline, spec.outcome
    # A declaration lacking both a cut-off and a reliability is told of both at once.
    problems = []
    try:
        sign, cutoff = direction(spec)
    except DesignError as err:
        problems.append(str(err))
    try:
        reliability = reliability_prior(spec, inst)
    except DesignError as err:
        problems.append(str(err))
    if problems:
        raise DesignError("\n".join(problems))
    clients = frame.clients
    missing = [col for col in (baseline, outcome) if col not in clients]
    if missing:
        raise DesignError(
            f"spec {spec.name!r}: the study declares [outcomes.{inst.name}] but its clients table "
            f"has no column(s) {missing}"
        )
    has_baseline = clients[baseline].notna().to_numpy()
    exclusions = {
        "clients_in_data": len(clients),
        f"missing_{baseline}": int((~has_baseline).sum()),
    }
    keep = _with_covariates(spec, clients, has_baseline, exclusions)
    sub = frame.select(keep, narrow=True)
    c = sub.clients
    x1 = c[baseline].to_numpy(dtype=np.float64)
    y = c[outcome].to_numpy(dtype=np.float64)
    followed = np.flatnonzero(np.isfinite(y))
    exclusions["clients_in_model"] = int(x1.size)
    exclusions[f"without_{outcome}_baseline_only"] = int(x1.size - followed.size)
    if x1.size < 20 or followed.size < 10:
        raise DesignError(
            f"{spec.source}: {x1.size} clients with a baseline and {followed.size} with a "
            f"follow-up ({exclusions}); at least 20 and 10 are needed"
        )
    index, weight = sub.membership_arrays()
    ptype = sub.providers["provider_type"].astype(str).map(sub.provider_types.index).to_numpy()
    columns = covariate_columns(c, spec.predictors.covariates, frame, spec.name)
    x, x_mean, x_sd = _centred(columns)
    if not np.any(sign * x1 <= sign * cutoff):
        raise DesignError(
            f"{spec.source}: no client is elevated at baseline ({inst.label} "
            f"{'<=' if sign > 0 else '>='} {cutoff:g}), so there is no change among the elevated "
            "to estimate"
        )
    return ChangeDesign(
        frame=sub,
        x1=x1,
        x2=y[followed],
        followed=followed.astype(np.int64),
        care=c["care_type"].astype(str).map(sub.care_types.index).to_numpy(dtype=np.int64),
        member_index=index,
        member_weight=weight,
        provider_type=ptype.astype(np.int64),
        sign=sign,
        cutoff=cutoff,
        instrument=inst,
        reliability=reliability,
        exclusions=exclusions,
        covariates=x,
        covariate_names=columns.names,
        covariate_means=x_mean,
        covariate_sds=x_sd,
        covariate_coding=columns.coding,
    )


def _with_covariates(
    spec: ModelSpec, clients: pd.DataFrame, keep: np.ndarray, exclusions: dict[str, int]
) -> np.ndarray:
    """``keep`` less the clients missing a covariate of the spec, each count in ``exclusions``.

    Raises
    ------
    DesignError
        A covariate the study does not declare (the regression family's message), or one it did
        not measure at all.
    """
    keep = keep.copy()
    for column in spec.predictors.covariates:
        if column not in clients or clients[column].isna().all():
            raise DesignError(f"spec {spec.name!r} needs column {column!r}, absent from the data")
        missing = keep & clients[column].isna().to_numpy()
        exclusions[f"missing_{column}"] = int(missing.sum())
        keep &= ~missing
    return keep


def _centred(columns: CovariateColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The covariate columns centred, a numeric or binary one also scaled to unit SD.

    A level indicator is centred only, so that its slope stays the difference between its level
    and the reference, with a prior on that difference whatever the level's share
    (:func:`~alliance_bayes.model.regression.design.covariate_columns`).
    """
    x, mean, sd = standardise(columns.values)
    sd = np.where(columns.indicator, 1.0, sd)
    x = np.where(columns.indicator, columns.values - mean, x)
    return x, mean, sd


def _own_instrument(spec: ModelSpec, frame: AnalysisFrame) -> Instrument:
    """The outcome's instrument as this study has it; a declared one becomes the one in use."""
    name = short_name(spec)
    if name in BUILT_IN:
        return BUILT_IN[name]
    if name not in frame.outcomes:
        where = frame.outcomes_declared_in or "the study (it has no study.toml)"
        known = sorted(
            {
                *(i.followup for i in BUILT_IN.values()),
                *(i.followup for i in frame.outcomes.values()),
            }
        )
        raise DesignError(
            f"spec {spec.name!r}: outcome {spec.outcome!r} is not declared in {where}; this "
            f"study's outcomes are {known}. Declare it there as [outcomes.{name}] with label, "
            'range = [low, high], better = "lower" or "higher", cutoff (who is elevated at '
            "baseline) and, for the measurement error, reliability with its source"
        )
    declare({name: frame.outcomes[name]})
    return frame.outcomes[name]
