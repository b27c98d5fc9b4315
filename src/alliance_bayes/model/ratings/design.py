"""Arrays of the ratings model: one row per rated session, client covariates and countries.

Every client of the spec's sample with at least one rating and every covariate observed enters;
each session contributes its goal and bond (and task, where rated) ratings, each one of the
:math:`K` categories of the items' scale (the contract's 1–5, or a declared instrument's
whole-number range: :func:`~alliance_bayes.model.latent.instrument_check.rating_scale`; category
index = rating minus the lowest rating). The covariates are
centred at the sample mean and put on the units the estimands report: age per decade, male (1)
against not male (0), baseline WHO-5 per 10 points. The session order is the session's number
within the client (1, 2, …), centred at its mean over the rated sessions, so that the other
terms describe a session of average order.

Care and provider types are the study's (:attr:`~alliance_bayes.data.frame.AnalysisFrame.care_types`,
:attr:`~alliance_bayes.data.frame.AnalysisFrame.provider_types`): care-type contrasts are against
the frame's ``care_reference``, and provider-type shifts against a *reference provider type*
:math:`t_0` (:attr:`RatingsData.provider_reference`): the provider type of the reference care type
when that is a single type (coach under the contract's types, so the one shift is therapists
against coaches), else the first declared type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alliance_bayes.data.care import JOIN, PROVIDER_TYPES
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.model.latent.instrument_check import (
    CONTRACT_SCALE,
    RatingScale,
    rating_scale,
    require_single_ratings,
)
from alliance_bayes.model.regression.design import _elevated, alliance_record
from alliance_bayes.spec import ModelSpec

__all__ = [
    "COVARIATES",
    "RatingsData",
    "prepare_ratings",
    "provider_types_of",
    "ratings_scales",
]

#: Client covariate → (column, divisor): each enters centred and divided, so that its slope is per
#: decade of age, male against not male, and per 10 WHO-5 points at baseline.
COVARIATES = {
    "age_decade": ("age", 10.0),
    "male": ("male", 1.0),
    "who5_baseline_10": ("who5_baseline", 10.0),
}


@dataclass(frozen=True)
class RatingsData:
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
    counts: np.ndarray  # (subscale, session, category): one-hot, 0 where the item is not rated
    exclusions: dict[str, int] = field(default_factory=dict)
    scale: RatingScale = CONTRACT_SCALE  # the rating categories (counts' last axis)

    @property
    def n_clients(self) -> int:
        return len(self.frame.clients)

    @property
    def category_totals(self) -> np.ndarray:
        """(subscale, category) observed rating counts."""
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
        """The reference provider type :math:`t_0` of the provider-type shifts.

        The reference care type's provider type when that care type is a single type (coach under
        the contract's types), so that the reference care group's providers carry no shift; else
        the first declared provider type.
        """
        ref = self.care_reference
        return ref if ref in self.provider_types else self.provider_types[0]

    @property
    def provider_contrasts(self) -> tuple[str, ...]:
        """``"<type>-<reference type>"`` for every provider type but :attr:`provider_reference`."""
        ref = self.provider_reference
        return tuple(f"{t}-{ref}" for t in self.provider_types if t != ref)

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
        r"""(provider, provider contrast) indicators of the non-reference types, centred.

        Column :math:`t` is :math:`[t(p) = t] - \pi_t`: each provider-type shift leaves the
        location to the cut-points, and the shifts of a provider of type :math:`t` add up to
        :math:`\delta_t - \sum_{t'} \pi_{t'}\delta_{t'}` (with :math:`\delta_{t_0} = 0`).
        """
        ref = self.provider_types.index(self.provider_reference)
        other = [k for k in range(len(self.provider_types)) if k != ref]
        onehot = self.provider_type_index[:, None] == np.array(other)[None, :]
        return onehot - np.mean(onehot, axis=0)

    def coords(self) -> dict[str, list[str]]:
        coords = {
            "client": self.frame.clients["client"].tolist(),
            "provider": self.frame.providers["provider"].tolist(),
            "session": [str(k) for k in range(len(self.session_client))],
            "care_type": list(self.care_types),
            "care_contrast": list(self.care_contrasts),
            "provider_type": list(self.provider_types),
            "country": list(self.countries),
            "covariate": list(COVARIATES),
            "subscale": list(self.subscales),
            "cut": list(self.scale.thresholds),
            "gap": list(self.scale.thresholds[1:]),
            "category": list(self.scale.categories),
        }
        if not self.provider_shift_is_scalar:
            coords["provider_type_contrast"] = list(self.provider_contrasts)
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
        The study declares an alliance instrument other than one integer item per subscale on a
        whole-number range (:func:`~alliance_bayes.model.latent.instrument_check.require_single_ratings`), a
        covariate column is absent, or fewer than 20 clients are left.
    """
    require_single_ratings(spec, frame, family="ratings")
    clients = frame.clients
    keep = np.ones(len(clients), dtype=bool)
    exclusions: dict[str, int] = {"clients_in_data": len(clients)}
    if spec.data.sample == "elevated":
        elevated = _elevated(clients, spec).to_numpy()
        exclusions["not_elevated_at_baseline"] = int((~elevated).sum())
        keep &= elevated
    columns = [column for column, _ in COVARIATES.values()]
    for column in ("country", *columns):
        if column not in clients or clients[column].isna().all():
            raise DesignError(f"spec {spec.name!r} needs column {column!r}, absent from the data")
    x = clients[columns].to_numpy(float)
    country = clients["country"].astype("string").str.strip()
    complete = ~np.isnan(x).any(axis=1) & ~(country.isna() | country.isin(["", "nan"])).to_numpy()
    exclusions["missing_covariate"] = int((keep & ~complete).sum())
    keep &= complete
    rated = _rated_clients(frame)
    exclusions["no_rating"] = int((keep & ~rated).sum())
    keep &= rated
    if keep.sum() < 20:
        raise DesignError(f"spec {spec.name!r}: only {int(keep.sum())} client(s) in the sample")
    sub = frame.select(keep)
    c = sub.clients
    exclusions["clients_in_model"] = len(c)

    x = c[columns].to_numpy(float)
    means = x.mean(axis=0)
    divisors = np.array([d for _, d in COVARIATES.values()])
    country = c["country"].astype(str).to_numpy()
    countries = tuple(sorted(set(country)))
    ses = sub.sessions
    subscales = tuple(sub.subscales)
    scale = rating_scale(sub)
    counts = np.zeros((len(subscales), len(ses), scale.n_categories), dtype=np.int64)
    for j, s in enumerate(subscales):
        r = ses[f"wai_{s}"].to_numpy(dtype=float, na_value=np.nan)
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
    )


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
    centring of ``male``); ``covariate_means`` and ``session_order_mean`` in their own units;
    ``alliance_instrument``, only with a declared alliance instrument, its declaration
    (:func:`~alliance_bayes.model.regression.design.alliance_record`: the rating scale the
    estimands are on and whose categories the model has).
    """
    counts = _care_counts(data)
    total = sum(counts.values())
    share = np.bincount(data.country_index, minlength=len(data.countries)) / data.n_clients
    return {
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
        "male_mean": float(data.covariate_means[list(COVARIATES).index("male")]),
        "covariate_means": {
            k: float(v) for k, v in zip(COVARIATES, data.covariate_means, strict=True)
        },
        "session_order_mean": data.session_order_mean,
    } | ({"alliance_instrument": record} if (record := alliance_record(data.frame)) else {})
