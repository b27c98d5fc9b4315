"""Arrays of the ratings model: one row per rated session, client covariates and countries.

Every client of the spec's sample with at least one rating and every covariate observed enters;
each session contributes its goal and bond (and task, where rated) ratings. The covariates are
centred at the sample mean and put on the units the estimands report: age per decade, male (1)
against not male (0), baseline WHO-5 per 10 points. The session order is the session's number
within the client (1, 2, …), centred at its mean over the rated sessions, so that the other
terms describe a session of average order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.model.latent.instrument_check import require_single_ratings
from alliance_bayes.model.latent.measurement import CATEGORIES, N_CATEGORIES, THRESHOLDS
from alliance_bayes.model.regression.design import (
    CARE_CONTRASTS,
    CARE_TYPES,
    PROVIDER_TYPES,
    _elevated,
    care_counts,
    care_shares,
)
from alliance_bayes.spec import ModelSpec

__all__ = ["COVARIATES", "RatingsData", "prepare_ratings", "ratings_scales"]

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

    @property
    def n_clients(self) -> int:
        return len(self.frame.clients)

    @property
    def category_totals(self) -> np.ndarray:
        """(subscale, category) observed rating counts."""
        return self.counts.sum(axis=1)

    @property
    def therapist_share(self) -> float:
        """Share of therapists among the providers (the centring of the provider-type term)."""
        return float(np.mean(self.provider_type_index == PROVIDER_TYPES.index("therapist")))

    def coords(self) -> dict[str, list[str]]:
        return {
            "client": self.frame.clients["client"].tolist(),
            "provider": self.frame.providers["provider"].tolist(),
            "session": [str(k) for k in range(len(self.session_client))],
            "care_type": list(CARE_TYPES),
            "care_contrast": list(CARE_CONTRASTS),
            "country": list(self.countries),
            "covariate": list(COVARIATES),
            "subscale": list(self.subscales),
            "cut": list(THRESHOLDS),
            "gap": list(THRESHOLDS[1:]),
            "category": list(CATEGORIES),
        }


def prepare_ratings(spec: ModelSpec, frame: AnalysisFrame) -> RatingsData:
    """Select the spec's clients and build the session-level rating arrays.

    Raises
    ------
    DesignError
        The study declares an alliance instrument other than one integer 1–5 item per subscale
        (:func:`~alliance_bayes.model.latent.instrument_check.require_single_ratings`), a
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
    counts = np.zeros((len(subscales), len(ses), N_CATEGORIES), dtype=np.int64)
    for j, s in enumerate(subscales):
        r = ses[f"wai_{s}"].to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(r)
        counts[j, np.flatnonzero(ok), r[ok].astype(np.int64) - 1] = 1
    used = counts.sum(axis=(0, 2)) > 0
    counts = counts[:, used]
    order = ses["session_index"].to_numpy(float)[used]
    ptype = (
        sub.providers["provider_type"].astype(str).map({k: i for i, k in enumerate(PROVIDER_TYPES)})
    )
    return RatingsData(
        frame=sub,
        subscales=subscales,
        countries=countries,
        care_index=c["care_type"].astype(str).map(CARE_TYPES.index).to_numpy(np.int64),
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
    )


def _rated_clients(frame: AnalysisFrame) -> np.ndarray:
    """Clients with at least one rating on any subscale."""
    ses = frame.sessions
    items = [f"wai_{s}" for s in frame.subscales]
    rated = ses[items].notna().any(axis=1).to_numpy()
    out = np.zeros(len(frame.clients), dtype=bool)
    out[ses["client_index"].to_numpy(np.int64)[rated]] = True
    return out


def ratings_scales(data: RatingsData) -> dict[str, object]:
    """The sample facts the estimands marginalise over (kept in ``run.json``).

    ``care_share``: clients per care type; ``country_share``: clients per country;
    ``both_therapist_share``: the share of the "both" clients' rated sessions held with a
    therapist; ``therapist_share``: therapists among the providers; ``male_mean``: the share of
    men (the centring of ``male``); ``covariate_means`` and ``session_order_mean`` in their own
    units.
    """
    is_ther = data.provider_type_index == PROVIDER_TYPES.index("therapist")
    both = data.care_index[data.session_client] == CARE_TYPES.index("both")
    with_therapist = is_ther[data.session_provider][both]
    share = np.bincount(data.country_index, minlength=len(data.countries)) / data.n_clients
    return {
        "care_share": care_shares(data.care_index),
        "care_count": care_counts(data.care_index),
        "country_share": {k: float(v) for k, v in zip(data.countries, share, strict=True)},
        "both_therapist_share": float(with_therapist.mean()) if with_therapist.size else 0.5,
        "therapist_share": data.therapist_share,
        "male_mean": float(data.covariate_means[list(COVARIATES).index("male")]),
        "covariate_means": {
            k: float(v) for k, v in zip(COVARIATES, data.covariate_means, strict=True)
        },
        "session_order_mean": data.session_order_mean,
    }
