r"""Arrays of the ratings model: one row per rated session, client covariates and countries.

Every client of the spec's sample with at least one rating and every covariate observed enters
(complete cases; the others are counted, ``missing_covariate``); each session contributes its goal
and bond (and task, where rated) ratings, each one of the :math:`K` categories of the items' scale
(the contract's 1–5, or a declared instrument's whole-number range:
:func:`~alliance_bayes.model.latent.instrument_check.rating_scale`; category index = rating minus
the lowest rating). A declared instrument with several items per subscale (the WAI-SR: four
items 1–5 each) contributes every item's rating instead, one row of the count table per item
(:attr:`RatingsData.items`, each with its subscale); a reverse-scored item's rating :math:`r` is
modelled as :math:`L + H - r`, so that a higher category always means a stronger alliance (as
the averaged scores turn it). The session order is the session's number within the client (1, 2, …),
centred at its mean over the rated sessions, so that the other terms describe a session of
average order.

**Covariates.** A spec that names no covariates takes the built-in ones,
:data:`~alliance_bayes.spec.RATINGS_COVARIATES` (age, male, baseline WHO-5); one that names
``[predictors] covariates`` takes those, built-in and declared by the study
(:mod:`alliance_bayes.data.covariates`), coded by the regression family's
:func:`~alliance_bayes.model.regression.design.covariate_columns`. Each column :math:`x_j` enters
as :math:`(x_{ij} - \bar x_j) / d_j`, centred at the sample mean and divided by the unit its
estimand reports (:data:`COVARIATES`' divisors for the built-ins):

* ``age_decade`` (:math:`d = 10` years), ``male`` (1 against 0, :math:`d = 1`),
  ``who5_baseline_10`` (:math:`d = 10` WHO-5 points): the built-ins, named so in the
  ``covariate`` coordinate;
* a declared numeric covariate ``<name>``: :math:`d = s_j`, its sample SD (:math:`n - 1`) over the
  clients in the model (1 if constant), so that its slope and its prior Normal(0, 1) are per SD
  whatever the column's units;
* a declared binary covariate ``<name>``: 1 at the level coded 1 (or the non-reference level),
  :math:`d = 1`, as ``male``;
* a declared categorical covariate: one indicator ``<name>[<level>]`` per level other than the
  reference present among the clients in the model, :math:`d = 1`, so that each slope is the
  difference from the reference level in client SDs (a per-SD prior would be widest for the
  rarest level).

A built-in covariate the study did not measure at all (every value missing, or no column) is left
out when the spec names no covariates, and recorded as ``covariates_not_measured`` in the
scales; a covariate the spec names must be measured. A covariate measured for some clients only
is a complete-case rule, as above. ``country`` is optional: without it (no column, or every value
missing) every client is in one country, :data:`NO_COUNTRY`, the model has no country effects (as
for a study of one country) and ``country`` is recorded in ``covariates_not_measured``.

Care and provider types are the study's (:attr:`~alliance_bayes.data.frame.AnalysisFrame.care_types`,
:attr:`~alliance_bayes.data.frame.AnalysisFrame.provider_types`): care-type contrasts are against
the frame's ``care_reference``, and provider-type shifts against a *reference provider type*
:math:`t_0` (:attr:`RatingsData.provider_reference`): the provider type of the reference care type
when that is a single type (coach under the contract's types, so the one shift is therapists
against coaches), else the first declared type. A study of one provider type has one care type,
and so neither care-type contrasts nor provider-type shifts (both dimensions empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from alliance_bayes.data.care import JOIN, PROVIDER_TYPES
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.model.elevated import elevated_sample
from alliance_bayes.model.items import ItemRows, item_ratings, items_record
from alliance_bayes.model.latent.instrument_check import (
    CONTRACT_SCALE,
    RatingScale,
    rating_scale,
    require_integer_ratings,
)
from alliance_bayes.model.regression.design import (
    alliance_record,
    check_covariates,
    covariate_columns,
)
from alliance_bayes.spec import ModelSpec, PredictorSpec

__all__ = [
    "COVARIATES",
    "RatingsData",
    "prepare_ratings",
    "provider_types_of",
    "ratings_scales",
]

#: Built-in client covariate → (column, divisor): each enters centred and divided, so that its
#: slope is per decade of age, male against not male, and per 10 WHO-5 points at baseline.
COVARIATES = {
    "age_decade": ("age", 10.0),
    "male": ("male", 1.0),
    "who5_baseline_10": ("who5_baseline", 10.0),
}
#: The one country of a study that recorded none.
NO_COUNTRY = "all"
#: The same by column (the name a spec gives): column → (coordinate label, divisor).
_BUILT_IN = {column: (label, divisor) for label, (column, divisor) in COVARIATES.items()}


@dataclass(frozen=True)
class RatingsData(ItemRows):
    """The ratings model's arrays (see the module docstring)."""

    frame: AnalysisFrame
    subscales: tuple[str, ...]
    countries: tuple[str, ...]
    care_index: np.ndarray  # (client,)
    country_index: np.ndarray  # (client,)
    covariates: np.ndarray  # (client, covariate) centred, in reporting units
    covariate_means: np.ndarray  # (covariate,) in the columns' own units
    provider_type_index: np.ndarray  # (provider,)
    session_client: np.ndarray  # (session,)
    session_provider: np.ndarray  # (session,)
    session_order: np.ndarray  # (session,) session number minus its mean
    session_order_mean: float
    # (row, session, category): one-hot, 0 where the item is not rated; a row per subscale, or
    # per item (``items``) when some subscale has several
    counts: np.ndarray
    exclusions: dict[str, int] = field(default_factory=dict)
    scale: RatingScale = CONTRACT_SCALE  # the rating categories (counts' last axis)
    # The ``covariate`` coordinate: the built-ins' labels, a declared covariate's name, or a
    # categorical one's ``<name>[<level>]`` per indicator.
    covariate_names: tuple[str, ...] = tuple(COVARIATES)
    # How each declared covariate is coded (covariate_columns, with ``sd`` for a numeric one).
    covariate_coding: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Built-in covariates left out because the study did not measure them (their labels).
    covariates_not_measured: tuple[str, ...] = ()
    # With several items per subscale: the declared item columns (``counts``' rows), and each
    # item's subscale (index into ``subscales``); empty with one item per subscale.
    items: tuple[str, ...] = ()
    item_subscale: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_clients(self) -> int:
        return len(self.frame.clients)

    @property
    def category_totals(self) -> np.ndarray:
        """(row, category) observed rating counts (:attr:`rows`)."""
        return self.counts.sum(axis=1)

    @property
    def care_types(self) -> tuple[str, ...]:
        """The study's care types (``care_index`` counts in this order)."""
        return self.frame.care_types

    @property
    def care_reference(self) -> str:
        """The care type the care-type contrasts are against."""
        return self.frame.care_reference

    @property
    def care_contrasts(self) -> tuple[str, ...]:
        """``"<care type>-<reference>"`` for every other care type, in care-type order."""
        return self.frame.care_contrasts

    @property
    def provider_types(self) -> tuple[str, ...]:
        """The study's provider types (``provider_type_index`` counts in this order)."""
        return self.frame.provider_types

    @property
    def provider_reference(self) -> str:
        """The reference provider type :math:`t_0` of the provider-type shifts
        (:attr:`~alliance_bayes.data.frame.AnalysisFrame.provider_reference`)."""
        return self.frame.provider_reference

    @property
    def provider_contrasts(self) -> tuple[str, ...]:
        """``"<type>-<reference type>"`` for every provider type but :attr:`provider_reference`."""
        return self.frame.provider_contrasts

    @property
    def provider_shift_is_scalar(self) -> bool:
        """Whether the one provider-type shift is the contract's therapists against coaches.

        Then ``provider_type_alliance`` is a scalar, as it has always been; otherwise it has the
        dimension ``provider_type_contrast`` (:attr:`provider_contrasts`).
        """
        return self.provider_contrasts == ("therapist-coach",)

    @property
    def provider_share(self) -> np.ndarray:
        r"""(provider type,) share :math:`\pi_t` of each provider type among the providers."""
        n_types = len(self.provider_types)
        counts = np.bincount(self.provider_type_index, minlength=n_types)
        return counts / len(self.provider_type_index)

    @property
    def provider_type_design(self) -> np.ndarray:
        """(provider, provider contrast) centred indicators of the non-reference provider types
        (:meth:`~alliance_bayes.data.frame.AnalysisFrame.provider_type_design`)."""
        return self.frame.provider_type_design()

    def coords(self) -> dict[str, list[str]]:
        coords = {
            "client": self.frame.clients["client"].tolist(),
            "provider": self.frame.providers["provider"].tolist(),
            "session": [str(k) for k in range(len(self.session_client))],
            "care_type": list(self.care_types),
            "care_contrast": list(self.care_contrasts),
            "provider_type": list(self.provider_types),
            "country": list(self.countries),
            "covariate": list(self.covariate_names),
            "subscale": list(self.subscales),
            "cut": list(self.scale.thresholds),
            "gap": list(self.scale.thresholds[1:]),
            "category": list(self.scale.categories),
        }
        if not self.provider_shift_is_scalar:
            coords["provider_type_contrast"] = list(self.provider_contrasts)
        if self.several_items:
            coords["item"] = list(self.items)
        return coords


def provider_types_of(care: str, provider_types: tuple[str, ...]) -> tuple[str, ...]:
    """The provider types a client of care type ``care`` saw.

    The contract's ``both`` is therapist and coach; a declared combination joins its types' names
    with ``_and_`` (:mod:`alliance_bayes.data.care`).
    """
    if care == "both" and provider_types == PROVIDER_TYPES:
        return PROVIDER_TYPES
    return tuple(care.split(JOIN))


def prepare_ratings(spec: ModelSpec, frame: AnalysisFrame) -> RatingsData:
    """Select the spec's clients and build the session-level rating arrays.

    Raises
    ------
    DesignError
        A declared item column missing from the frame's sessions, or the study declares an
        alliance instrument other than integer item ratings on a
        whole-number range (:func:`~alliance_bayes.model.latent.instrument_check.require_integer_ratings`),
        the spec names a covariate the study does not declare or did not measure, no covariate
        was measured, the country column is absent, a categorical covariate's reference level has
        no client in the model, or fewer than 20 clients are left.
    """
    require_integer_ratings(spec, frame, family="ratings")
    check_covariates(spec, frame)
    clients = frame.clients
    keep = np.ones(len(clients), dtype=bool)
    exclusions: dict[str, int] = {"clients_in_data": len(clients)}
    if spec.data.sample == "elevated":
        elevated = elevated_sample(spec, frame)
        exclusions["not_elevated_at_baseline"] = int((~elevated).sum())
        keep &= elevated
    columns, not_measured = _measured_covariates(spec, clients)
    missing = clients[columns].isna().to_numpy()
    # country is optional: a study without it has no country effects (as one with one country)
    country_measured = "country" in clients and not clients["country"].isna().all()
    if country_measured:
        country = clients["country"].astype("string").str.strip()
        missing_country = (country.isna() | country.isin(["", "nan"])).to_numpy()
    else:
        missing_country = np.zeros(len(clients), dtype=bool)
    complete = ~missing.any(axis=1) & ~missing_country
    exclusions["missing_covariate"] = int((keep & ~complete).sum())
    keep &= complete
    rated = _rated_clients(frame)
    exclusions["no_rating"] = int((keep & ~rated).sum())
    keep &= rated
    if keep.sum() < 20:
        raise DesignError(f"spec {spec.name!r}: only {int(keep.sum())} client(s) in the sample")
    sub = frame.select(keep, narrow=True)
    c = sub.clients
    exclusions["clients_in_model"] = len(c)

    coded = covariate_columns(c, columns, frame, spec.name)
    x = coded.values
    means = x.mean(axis=0)
    labels, divisors, coding = _reporting_units(coded, x)
    if len(set(labels)) != len(labels):
        raise DesignError(
            f"spec {spec.name!r}: covariate names {labels} repeat a built-in one's "
            f"({list(COVARIATES)}); leave one of them out of [predictors] covariates"
        )
    country = (
        c["country"].astype(str).to_numpy()
        if country_measured
        else np.full(len(c), NO_COUNTRY, dtype=object)
    )
    countries = tuple(sorted(set(country)))
    ses = sub.sessions
    subscales = tuple(sub.subscales)
    scale = rating_scale(sub)
    items, item_subscale, ratings = item_ratings(sub, subscales, scale.low, scale.high)
    counts = np.zeros((len(ratings), len(ses), scale.n_categories), dtype=np.int64)
    for j, r in enumerate(ratings):
        ok = ~np.isnan(r)
        counts[j, np.flatnonzero(ok), scale.category_index(r[ok])] = 1
    used = counts.sum(axis=(0, 2)) > 0
    counts = counts[:, used]
    order = ses["session_index"].to_numpy(float)[used]
    ptype = sub.providers["provider_type"].astype(str).map(sub.provider_types.index)
    return RatingsData(
        frame=sub,
        subscales=subscales,
        countries=countries,
        care_index=c["care_type"].astype(str).map(sub.care_types.index).to_numpy(np.int64),
        country_index=np.searchsorted(np.array(countries), country).astype(np.int64),
        covariates=(x - means) / divisors,
        covariate_means=means,
        provider_type_index=ptype.to_numpy(np.int64),
        session_client=ses["client_index"].to_numpy(np.int64)[used],
        session_provider=ses["provider_index"].to_numpy(np.int64)[used],
        session_order=order - order.mean(),
        session_order_mean=float(order.mean()),
        counts=counts,
        exclusions=exclusions,
        scale=scale,
        covariate_names=tuple(labels),
        covariate_coding=coding,
        covariates_not_measured=tuple(_BUILT_IN[n][0] for n in not_measured)
        + (() if country_measured else ("country",)),
        items=items,
        item_subscale=item_subscale,
    )


def _measured_covariates(spec: ModelSpec, clients: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The spec's covariate columns the study measured, and the built-in ones it did not.

    Not measured: no column, or every value missing in the whole study (not only in the spec's
    sample), so that whether a covariate enters does not depend on the sample. Only a built-in
    covariate of a spec that names none is left out; a covariate the spec names is required.
    """
    named = spec.model_covariates
    missing = [n for n in named if n not in clients or clients[n].isna().all()]
    if missing and spec.predictors.covariates != PredictorSpec().covariates:
        raise DesignError(
            f"spec {spec.name!r} names covariate(s) {missing}, not measured in this study "
            "(every value missing): leave them out of [predictors] covariates"
        )
    if len(missing) == len(named):
        raise DesignError(
            f"spec {spec.name!r}: none of the covariates {list(named)} was measured in this study "
            "(every value missing)"
        )
    return [n for n in named if n not in missing], missing


def _reporting_units(
    coded, x: np.ndarray
) -> tuple[list[str], np.ndarray, dict[str, dict[str, Any]]]:
    """Per column of ``coded`` (:class:`~alliance_bayes.model.regression.design.CovariateColumns`,
    values ``x``) its coordinate label and divisor (see the module docstring), and the declared
    covariates' coding with ``sd``, the divisor of a numeric one."""
    coding = {name: dict(entry) for name, entry in coded.coding.items()}
    labels, divisors = [], []
    for j, name in enumerate(coded.names):
        if name in _BUILT_IN:
            label, divisor = _BUILT_IN[name]
        elif name in coding and coding[name]["type"] == "numeric":
            label, sd = name, float(np.std(x[:, j], ddof=1)) if len(x) > 1 else 0.0
            divisor = sd if sd > 0 else 1.0
            coding[name]["sd"] = divisor
        else:  # a binary covariate or a level indicator: a contrast, per unit
            label, divisor = name, 1.0
        labels.append(label)
        divisors.append(divisor)
    return labels, np.array(divisors, dtype=float), coding


def _rated_clients(frame: AnalysisFrame) -> np.ndarray:
    """Clients with at least one rating on any subscale."""
    ses = frame.sessions
    items = [f"wai_{s}" for s in frame.subscales]
    rated = ses[items].notna().any(axis=1).to_numpy()
    out = np.zeros(len(frame.clients), dtype=bool)
    out[ses["client_index"].to_numpy(np.int64)[rated]] = True
    return out


def provider_mix(data: RatingsData) -> dict[str, dict[str, float]]:
    r"""Per care type :math:`c`, the share :math:`q_{ct}` of its rated sessions held with type :math:`t`.

    Over the sessions of the care type's clients in the model; a care type without rated
    sessions here splits evenly over the provider types it names. A single type's care is that
    type alone; the contract's ``both`` is its clients' therapist and coach sessions.
    """
    n_types = len(data.provider_types)
    session_type = data.provider_type_index[data.session_provider]
    session_care = data.care_index[data.session_client]
    mix = {}
    for k, care in enumerate(data.care_types):
        held = np.bincount(session_type[session_care == k], minlength=n_types)
        names = provider_types_of(care, data.provider_types)
        if held.sum() == 0:
            mix[care] = {t: 1.0 / len(names) for t in names}
        else:
            mix[care] = {
                t: float(held[j] / held.sum())
                for j, t in enumerate(data.provider_types)
                if t in names
            }
    return mix


def _care_counts(data: RatingsData) -> dict[str, int]:
    """Clients of each care type present among the model's clients."""
    counts = np.bincount(data.care_index, minlength=len(data.care_types))
    return {c: int(n) for c, n in zip(data.care_types, counts, strict=True) if n}


def ratings_scales(data: RatingsData) -> dict[str, object]:
    r"""The sample facts the estimands marginalise over (kept in ``run.json``).

    ``care_types``, ``care_reference``, ``provider_types``, ``provider_reference``: the study's
    levels and references (the contract's therapist, coach, both against coach, and therapist,
    coach against coach, by default); ``care_share``, ``care_count``: clients per care type (those
    present); ``country_share``: clients per country; ``provider_share``: :math:`\pi_t`, each
    provider type's share of the providers (the centring of the provider-type shifts);
    ``provider_mix``: :math:`q_{ct}` of :func:`provider_mix`; ``male_mean``: the share of men (the
    centring of ``male``; only with ``male`` in the model); ``covariate_means`` (by the
    ``covariate`` coordinate's labels; a level indicator's mean is the level's share) and
    ``session_order_mean`` in their own units; ``covariate_coding``, only with declared
    covariates, how each is coded (type, label, reference, levels, clients per level and a numeric
    one's ``sd``, the unit of its estimand); ``covariates_not_measured``, only where a built-in
    covariate was left out, their labels; ``alliance_instrument``, only with a declared alliance
    instrument, its declaration
    (:func:`~alliance_bayes.model.regression.design.alliance_record`: the rating scale the
    estimands are on and whose categories the model has); ``alliance_items``, only with several
    items per subscale, each modelled item's subscale (``subscale``), the reverse-scored items
    (``reversed``, modelled as ``low + high - rating``) and that rule in words (``scored``).
    """
    counts = _care_counts(data)
    total = sum(counts.values())
    share = np.bincount(data.country_index, minlength=len(data.countries)) / data.n_clients
    return (
        {
            "care_types": list(data.care_types),
            "care_reference": data.care_reference,
            "care_share": {c: n / total for c, n in counts.items()},
            "care_count": counts,
            "country_share": {k: float(v) for k, v in zip(data.countries, share, strict=True)},
            "provider_types": list(data.provider_types),
            "provider_reference": data.provider_reference,
            "provider_share": {
                t: float(v) for t, v in zip(data.provider_types, data.provider_share, strict=True)
            },
            "provider_mix": provider_mix(data),
        }
        | _covariate_scales(data)
        | ({"alliance_instrument": record} if (record := alliance_record(data.frame)) else {})
        | items_record(data.frame, data.subscales, data.items, data.item_subscale)
    )


def _covariate_scales(data: RatingsData) -> dict[str, object]:
    """The covariates' entries of :func:`ratings_scales`, in the order ``run.json`` has had them."""
    names = data.covariate_names
    out: dict[str, object] = {}
    if "male" in names:
        out["male_mean"] = float(data.covariate_means[names.index("male")])
    out["covariate_means"] = {k: float(v) for k, v in zip(names, data.covariate_means, strict=True)}
    out["session_order_mean"] = data.session_order_mean
    if data.covariate_coding:
        out["covariate_coding"] = data.covariate_coding
    if data.covariates_not_measured:
        out["covariates_not_measured"] = list(data.covariates_not_measured)
    return out
