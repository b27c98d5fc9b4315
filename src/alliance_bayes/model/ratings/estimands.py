r"""The ratings model's estimands on the items' rating scale (stable names, draw by draw).

The scale is the contract's 1–5, or a declared instrument's whole-number range :math:`L`–:math:`H`
(``alliance_instrument`` in the design's scales, e.g. WAI-S 1–7: an expected rating between 1 and
7, the units naming the scale). Every level is the **expected rating of a typical session**:
averaged over the items goal and bond
(the paper's score; task is modelled but not averaged in), marginal over the client and provider
effects, at the sample's mean covariates and mean session order. With :math:`\mu` the fixed part of
:math:`\theta` and the client and provider effects independent normals,

.. math::
    R(\mu) = \frac{1}{|S|}\sum_{s} \mathbb E_{Z \sim \mathcal N(0,1)}\Big[
        \tau_s\big(\mu + \omega Z\big)\Big], \qquad \omega = \sqrt{1 + \sigma_a^2},
    \qquad \tau_s(\theta) = L + \sum_{k=1}^{K-1}\operatorname{logit}^{-1}\big(\alpha_s(\theta
        - \kappa_{s,k})\big),

by the trapezoid rule on :data:`NODES`. With several items per subscale (a declared instrument
such as the WAI-SR; the scales' ``alliance_items`` give each item's subscale) :math:`\tau_s` is
the mean over the subscale's items of each item's expected rating, the session subscale score
of the averaged-score models, so that every level keeps its name and meaning; the ceiling share
is likewise the mean over the items of :math:`P(r = H)` (:math:`\tau` is
:func:`~alliance_bayes.model.latent.measurement.expected_rating_np`). A care type's level
averages :math:`R` over the study's countries (weighted by their clients) and, for clients who saw
several provider types, over the provider types of their sessions:

.. math::
    \text{alliance}[c] = \sum_k w_k \sum_t q_{ct}\,
        R\big(\gamma_c + u_k + \Delta_t\big), \qquad
    \Delta_t = \sum_{t' \ne t_0} \delta_{t'}([t = t'] - \pi_{t'}),

with :math:`q_{ct}` the share of care type :math:`c`'s rated sessions held with provider type
:math:`t` (``provider_mix``; 1 for the type itself under single-type care), :math:`\pi_t` the
type's share of the providers and :math:`\delta_{t'}` the provider-type shifts against the
reference type :math:`t_0` (the scalar therapists-against-coaches ``provider_type_alliance`` under
the contract's types). There is one level per care type of the study and one contrast
``alliance[<care type>-<reference>]`` per other care type (``alliance[therapist-coach]``,
``alliance[both-coach]`` under the contract's types).

A covariate's effect is the change of the care-mix level :math:`\bar A(\cdot) = \sum_c \pi_c
\text{alliance}[c](\cdot)` across one unit centred at the mean, e.g. ``alliance_per_decade_age``
:math:`= \bar A(\beta_\text{age}/2) - \bar A(-\beta_\text{age}/2)`; ``alliance[male-not_male]``
:math:`= \bar A(\beta_m(1 - \bar m)) - \bar A(-\beta_m\bar m)`; ``alliance_per_session`` the same
with :math:`\lambda`. Each exists only with its covariate in the model
(:mod:`~alliance_bayes.model.ratings.design`: a spec may name its covariates, and a built-in one
the study did not measure is left out). A covariate the study declares (``covariate_coding`` in
the scales) has, with :math:`\beta` per the unit its column enters in:

* numeric ``<name>``: ``alliance_per_sd_<name>`` :math:`= \bar A(\beta/2) - \bar A(-\beta/2)`,
  per sample SD of the column (the scales' ``sd``, named in the units);
* binary ``<name>``: ``alliance_<name>[<level>-<reference>]`` :math:`= \bar A(\beta(1 - \bar
  x)) - \bar A(-\beta\bar x)`, as ``male``, with :math:`\bar x` the share at ``<level>`` (the
  level coded 1, or the non-reference level; ``alliance_employed[1-0]``);
* categorical ``<name>`` with indicator slopes :math:`\beta_j` and shares :math:`\bar d_j` of the
  levels :math:`j` other than the reference: ``alliance_<name>[<level>-<reference>]``
  :math:`= \bar A(\beta_\ell + b) - \bar A(b)`, :math:`b = -\sum_j \beta_j \bar d_j`, the
  level :math:`\ell` against the reference at the mean of the other covariates
  (``alliance_diagnosis[anxiety-depression]``).

A contrast reads ``<level>-<reference>`` inside the brackets as the care-type contrasts do (not
``=``, which hypotheses read as their comparison).

``alliance_country[k]`` is :math:`\bar A` in country :math:`k`; ``sd_country_alliance`` the SD
of those levels across the study's countries (a finite-population SD; Gelman 2005,
doi:10.1214/009053604000001048); a study of one country, or none recorded, has neither (nor
``sd_country_latent``): its model has no country effects. ``share_at_ceiling`` is
:math:`\bar A` with :math:`\tau` replaced by :math:`P(r = H)`, the top category.
``sd_provider_alliance`` is the SD of the providers' expected ratings (a client of average
country seen by a provider of the reference type :math:`t_0`, coach under the contract's types,
the client effect integrated out) over
:math:`a \sim \mathcal N(\Delta_{t_0}, \sigma_a)`; ``icc_provider_alliance`` the latent-response ICC
:math:`\sigma_a^2 / (\sigma_a^2 + 1 + \pi^2/(3\alpha_s^2))`, averaged over the items (Snijders &
Bosker 2012, section 17.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from scipy import special

from alliance_bayes.data.alliance import RecordedScale
from alliance_bayes.data.care import CARE_REFERENCE, CARE_TYPES, PROVIDER_TYPES
from alliance_bayes.model.latent.measurement import expected_rating_np, lowest_rating
from alliance_bayes.model.ratings.design import COVARIATES, provider_types_of

__all__ = ["NODES", "compute_ratings_estimands", "marginal_rating"]

#: Trapezoid rule for E over Z ~ N(0, 1): nodes every 0.25 on [-7, 7]. The integrand is analytic
#: with poles at Im z = pi / (alpha omega), so the rule's error falls like
#: exp(-2 pi^2 / (0.25 alpha omega)): below 1e-6 for alpha omega up to about 6.
NODES = np.arange(-28, 29) * 0.25
_WEIGHTS = np.exp(-0.5 * NODES**2) / np.exp(-0.5 * NODES**2).sum()
RATING_UNITS = "rating points"
_CHUNK = 500


def marginal_rating(
    mu: np.ndarray,
    omega: np.ndarray,
    discrimination: np.ndarray,
    thresholds: np.ndarray,
    *,
    ceiling: bool = False,
    low: float = 1.0,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    r"""Item-averaged :math:`\mathbb E_Z[\tau_s(\mu + \omega Z)]` (or :math:`P(r = H)`).

    Parameters
    ----------
    mu : (draw, ...) array
        Fixed part of the latent alliance, in client SDs.
    omega : (draw,) array
        SD of the random part (client and provider effects).
    discrimination : (draw, item) array
    thresholds : (draw, item, K - 1) array
        Latent-scale thresholds :math:`\kappa = c / \alpha`.
    ceiling : bool
        Return the probability of the top category instead of the expected rating.
    low : float
        The lowest rating :math:`L` (1 on the contract's items).
    weights : (item,) array, optional
        Each item's weight in the average (summing to 1); the plain mean without.

    Returns
    -------
    (draw, ...) array
    """
    mu = np.asarray(mu, float)
    out = np.empty(mu.shape)
    extra = (None,) * (mu.ndim - 1)
    for lo in range(0, mu.shape[0], _CHUNK):
        d = slice(lo, lo + _CHUNK)
        theta = mu[d][..., None] + omega[d][(slice(None), *extra, None)] * NODES  # (d, ..., Q)
        disc = discrimination[d][(slice(None), *extra, None, slice(None))]  # (d, ..., 1, S)
        kappa = thresholds[d][(slice(None), *extra, None, slice(None), slice(None))]
        if ceiling:
            value = special.expit(disc * (theta[..., None] - kappa[..., -1]))
        else:
            value = expected_rating_np(theta[..., None], disc, kappa, low)  # (d, ..., Q, S)
        averaged = value.mean(axis=-1) if weights is None else value @ weights
        out[d] = (averaged * _WEIGHTS).sum(axis=-1)
    return out


def _draws(posterior: xr.Dataset, name: str, *dims: str) -> np.ndarray:
    """(sample, *dims) draws, chain by chain; reshaped, not stacked, since xarray cannot stack an
    empty dimension (no care contrast in a study of one provider type)."""
    values = posterior[name].transpose("chain", "draw", *dims).values
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def compute_ratings_estimands(
    posterior: xr.Dataset, scales: Mapping[str, Any] | None = None
) -> xr.Dataset:
    """The estimands of the module docstring from the ``posterior`` (or ``prior``) draws.

    ``scales`` are :func:`~alliance_bayes.model.ratings.design.ratings_scales` of the design (the
    care and provider types, the care mix, the country mix, the provider mix, the centring
    constants and a declared alliance instrument); without them the contract's types, equal
    shares, and the rating scale of the ``threshold`` cuts' labels (1–5 unlabelled).
    """
    sc = scales or {}
    stacked = posterior[["discrimination"]].stack(sample=("chain", "draw"))
    rows = "item" if "item" in posterior["discrimination"].dims else "subscale"
    disc = _draws(posterior, "discrimination", rows)
    kappa = _draws(posterior, "threshold", rows, "cut")
    low, high, scale = _rating_scale(posterior, sc)
    averaged, weights = _averaged_items(posterior, sc, rows)
    disc, kappa = disc[:, averaged], kappa[:, averaged]
    labels = [str(k) for k in posterior["covariate"].values]
    beta = dict(zip(labels, _draws(posterior, "b_covariate", "covariate").T, strict=True))
    care_types = tuple(sc.get("care_types") or CARE_TYPES)
    reference = str(sc.get("care_reference") or CARE_REFERENCE)
    # a study of one care type has no b_care (and no contrasts)
    contrasts = [str(c) for c in posterior["care_contrast"].values] if "b_care" in posterior else []
    gamma = {c: np.zeros(len(disc)) for c in care_types}
    if contrasts:
        b_care = _draws(posterior, "b_care", "care_contrast")
        for j, contrast in enumerate(contrasts):
            gamma[contrast.removesuffix(f"-{reference}")] = b_care[:, j]
    care_share = sc.get("care_share") or {c: 1.0 / len(care_types) for c in care_types}
    centre = sum(p * gamma[c] for c, p in care_share.items() if c in gamma)
    gamma = {c: g - centre for c, g in gamma.items()}  # centred over the clients, as the graph
    type_shift, q_mix = _provider_types(posterior, sc, care_types)
    sd_prov = _draws(posterior, "sd_provider_latent")
    lam = _draws(posterior, "b_session")
    # A study of one country (or none recorded) has no country effects in the graph.
    # (A bundle written before one-country fits dropped them has a one-level z_country.)
    with_countries = "z_country" in posterior and posterior["z_country"].sizes["country"] > 1
    if with_countries:
        sd_country = _draws(posterior, "sd_country_latent")
        countries = [str(k) for k in posterior["country"].values]
        z = _draws(posterior, "z_country", "country")
        n_k = z.shape[1]
        u = (z - z.mean(axis=1, keepdims=True)) * np.sqrt(n_k / (n_k - 1.0)) * sd_country[:, None]
    else:
        countries = list(sc.get("country_share") or ["all"])[:1]
        n_k = 1
        u = np.zeros((len(lam), 1))
    share = sc.get("country_share") or {k: 1.0 / n_k for k in countries}
    w_country = np.array([share.get(k, 0.0) for k in countries])
    w_country = w_country / w_country.sum()
    omega = np.sqrt(1.0 + sd_prov**2)

    def level(care: str, shift: np.ndarray, *, ceiling: bool = False) -> np.ndarray:
        """(draw, country) rating of care type ``care`` with ``shift`` added to the latent mean."""
        total = 0.0
        for t, q in q_mix[care].items():
            mu = (gamma[care] + shift + type_shift[t])[:, None] + u
            total = total + q * marginal_rating(
                mu, omega, disc, kappa, ceiling=ceiling, low=low, weights=weights
            )
        return total

    def mix(shift: np.ndarray, *, ceiling: bool = False) -> np.ndarray:
        """(draw, country): the care-mix level."""
        return sum(
            p * level(c, shift, ceiling=ceiling) for c, p in care_share.items() if c in care_types
        )

    zero = np.zeros(len(disc))
    out: dict[str, tuple[np.ndarray, str, str]] = {}
    units = f"{RATING_UNITS} ({scale} scale)"
    by_care = {c: level(c, zero) @ w_country for c in care_types}
    for c in care_types:
        out[f"alliance[{c}]"] = (by_care[c], units, "fixed effect")
    for contrast in contrasts:
        a, b = contrast.removesuffix(f"-{reference}"), reference
        out[f"alliance[{contrast}]"] = (
            by_care[a] - by_care[b],
            f"{RATING_UNITS}, {a} minus {b}",
            "contrast",
        )

    def effect(slope: np.ndarray, high: float, low: float) -> np.ndarray:
        return (mix(slope * high) - mix(slope * low)) @ w_country

    if "age_decade" in beta:
        out["alliance_per_decade_age"] = (
            effect(beta["age_decade"], 0.5, -0.5),
            f"{RATING_UNITS} per decade of age",
            "fixed effect",
        )
    if "who5_baseline_10" in beta:
        out["alliance_per_10_who5_baseline"] = (
            effect(beta["who5_baseline_10"], 0.5, -0.5),
            f"{RATING_UNITS} per 10 WHO-5 points at baseline",
            "fixed effect",
        )
    if "male" in beta:
        m_bar = float(sc.get("male_mean", 0.5))
        out["alliance[male-not_male]"] = (
            effect(beta["male"], 1.0 - m_bar, -m_bar),
            f"{RATING_UNITS}, male minus not male",
            "contrast",
        )
    for name, (values, unit, kind) in _declared_effects(beta, sc, effect, mix, w_country).items():
        out[name] = (values, unit, kind)
    out["alliance_per_session"] = (
        effect(lam, 0.5, -0.5),
        f"{RATING_UNITS} per session (session order)",
        "fixed effect",
    )
    if with_countries:
        by_country = mix(zero)
        for j, k in enumerate(countries):
            out[f"alliance_country[{k}]"] = (by_country[:, j], units, "fixed effect")
        out["sd_country_alliance"] = (
            by_country.std(axis=1, ddof=1),
            f"{RATING_UNITS} (SD across the study's countries)",
            "variance component",
        )
    out["share_at_ceiling"] = (
        mix(zero, ceiling=True) @ w_country,
        f"share of session ratings at {high:g}",
        "measurement",
    )
    out["sd_provider_alliance"] = (
        _provider_sd(type_shift[_provider_reference(sc)], sd_prov, disc, kappa, low, weights),
        f"{RATING_UNITS} (SD of the providers' expected ratings)",
        "variance component",
    )
    out["sd_provider_latent"] = (sd_prov, "client latent SDs", "variance component")
    if with_countries:
        out["sd_country_latent"] = (sd_country, "client latent SDs", "variance component")
    logistic = np.pi**2 / (3.0 * disc**2)
    icc = sd_prov[:, None] ** 2 / (sd_prov[:, None] ** 2 + 1.0 + logistic)
    out["icc_provider_alliance"] = (
        icc.mean(axis=1) if weights is None else icc @ weights,
        "share of the latent session variance",
        "variance component",
    )
    return _dataset(out, stacked)


def _declared_effects(
    beta: Mapping[str, np.ndarray],
    sc: Mapping[str, Any],
    effect: Callable[[np.ndarray, float, float], np.ndarray],
    mix: Callable[[np.ndarray], np.ndarray],
    w_country: np.ndarray,
) -> dict[str, tuple[np.ndarray, str, str]]:
    """The estimands of the declared covariates (module docstring), in the posterior's order.

    ``effect(slope, high, low)`` and ``mix(shift)`` are those of
    :func:`compute_ratings_estimands`.

    Raises
    ------
    ValueError
        A covariate of the posterior is neither built in nor described by the scales'
        ``covariate_coding`` (its type, levels and reference are needed to name and compute it).
    """
    coding = sc.get("covariate_coding") or {}
    means = sc.get("covariate_means") or {}
    column_of = {c: name for name, entry in coding.items() for c in entry.get("columns", [name])}
    unknown = [k for k in beta if k not in COVARIATES and k not in column_of]
    if unknown:
        raise ValueError(
            f"covariate(s) {unknown} of the posterior are not built in ({list(COVARIATES)}) and "
            "the scales' covariate_coding does not describe them"
        )
    out: dict[str, tuple[np.ndarray, str, str]] = {}
    for name in dict.fromkeys(column_of[k] for k in beta if k in column_of):
        entry = coding[name]
        label = str(entry.get("label") or name)
        if entry["type"] == "numeric":
            out[f"alliance_per_sd_{name}"] = (
                effect(beta[name], 0.5, -0.5),
                f"{RATING_UNITS} per SD of {label} (SD {float(entry['sd']):.4g})",
                "fixed effect",
            )
        elif entry["type"] == "binary":
            share = float(means.get(name, 0.5))
            level, reference = entry["level"], entry["reference"]
            out[f"alliance_{name}[{level}-{reference}]"] = (
                effect(beta[name], 1.0 - share, -share),
                f"{RATING_UNITS}, {label} {level} minus {reference}",
                "contrast",
            )
        else:
            reference = entry["reference"]
            columns = [f"{name}[{level}]" for level in entry["levels"]]
            # the reference level's shift: every indicator at 0, centred at its share
            base = -sum(beta[c] * float(means.get(c, 0.0)) for c in columns)
            at_reference = mix(base) @ w_country
            for level, column in zip(entry["levels"], columns, strict=True):
                out[f"alliance_{name}[{level}-{reference}]"] = (
                    mix(base + beta[column]) @ w_country - at_reference,
                    f"{RATING_UNITS}, {label} {level} minus {reference} (reference)",
                    "contrast",
                )
    return out


def _averaged_items(
    posterior: xr.Dataset, sc: Mapping[str, Any], rows: str
) -> tuple[list[int], np.ndarray | None]:
    """The rows (of ``rows``) that enter the reported rating, and their weights.

    One item per subscale: goal and bond (every subscale when neither is there), a plain mean
    (weights ``None``). Several: the items of goal and bond, each weighted
    :math:`1 / (|S| n_s)` with :math:`n_s` its subscale's items, the mean over the subscales of
    the mean of each one's items (the session subscale score of the averaged-score models).

    Raises
    ------
    ValueError
        Items whose subscale the scales' ``alliance_items`` does not give.
    """
    names = [str(k) for k in posterior[rows].values]
    if rows == "subscale":
        averaged = [j for j, s in enumerate(names) if s in ("goal", "bond")]
        return averaged or list(range(len(names))), None
    owner = dict((sc.get("alliance_items") or {}).get("subscale") or {})
    unknown = [c for c in names if c not in owner]
    if unknown:
        raise ValueError(
            f"item(s) {unknown} of the posterior have no subscale in the scales' "
            "alliance_items (needed to average each subscale's items)"
        )
    subscales = [owner[c] for c in names]
    kept = [s for s in dict.fromkeys(subscales) if s in ("goal", "bond")] or list(
        dict.fromkeys(subscales)
    )
    averaged = [j for j, s in enumerate(subscales) if s in kept]
    weights = np.array([1.0 / (len(kept) * subscales.count(subscales[j])) for j in averaged])
    return averaged, weights


def _rating_scale(posterior: xr.Dataset, sc: Mapping[str, Any]) -> tuple[float, float, str]:
    """The lowest and highest rating and the scale in words (``"1–5"``, ``"WAI-S 1–7"``): the
    declared instrument's (``alliance_instrument`` in the scales), else from the ``threshold``
    cuts (their labels, or 1 and one category per cut above it).

    Raises
    ------
    ValueError
        The declared range has another number of categories than the posterior's thresholds.
    """
    n_cuts = posterior["threshold"].sizes["cut"]
    recorded = RecordedScale.of(sc)
    if recorded.declared:
        low, high, scale = recorded.low, recorded.high, recorded.name
    else:
        low = float(lowest_rating(posterior["threshold"]))
        high = low + n_cuts
        scale = f"{low:g}–{high:g}"
    if high - low != n_cuts:
        raise ValueError(
            f"the alliance scale {scale} has {high - low + 1:g} categories, the posterior's "
            f"thresholds {n_cuts + 1}"
        )
    return low, high, scale


def _provider_reference(sc: Mapping[str, Any]) -> str:
    """The reference provider type of the design (the contract's coach without ``scales``)."""
    return str(sc.get("provider_reference") or "coach")


def _provider_types(
    posterior: xr.Dataset, sc: Mapping[str, Any], care_types: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    r"""Per provider type :math:`t` the draws of :math:`\Delta_t`, and the care types' mixes.

    :math:`\Delta_t = \sum_{t' \ne t_0} \delta_{t'}([t = t'] - \pi_{t'})`, the centred
    provider-type term of a provider of type :math:`t` (as the graph), and
    :math:`q_{ct}` per care type (``provider_mix``). Scales written before provider types could
    be declared carry the contract's two as ``therapist_share`` (:math:`\pi_T`) and
    ``both_therapist_share`` (:math:`q_{\text{both},T}`); without scales every share is even.
    """
    types = tuple(sc.get("provider_types") or PROVIDER_TYPES)
    ref = _provider_reference(sc)
    delta_da = posterior.get("provider_type_alliance")  # none in a study of one provider type
    if delta_da is None:
        delta = {}
    elif "provider_type_contrast" in delta_da.dims:
        labels = [str(k).removesuffix(f"-{ref}") for k in delta_da["provider_type_contrast"].values]
        draws = _draws(posterior, "provider_type_alliance", "provider_type_contrast")
        delta = dict(zip(labels, draws.T, strict=True))
    else:
        delta = {"therapist": _draws(posterior, "provider_type_alliance")}
    share = sc.get("provider_share")
    if share is None and "therapist_share" in sc:
        share = {"therapist": sc["therapist_share"], "coach": 1.0 - sc["therapist_share"]}
    share = share or {}
    pi = {t: float(share.get(t, 1.0 / len(types))) for t in types}
    # a study of one provider type has no shift: zero in every draw
    none = np.zeros(posterior.sizes["chain"] * posterior.sizes["draw"])
    shift = {
        t: sum((d * (float(t == other) - pi[other]) for other, d in delta.items()), none)
        for t in types
    }
    mix = sc.get("provider_mix")
    if mix is None:
        q = float(sc.get("both_therapist_share", 0.5))
        mix = {"both": {"therapist": q, "coach": 1.0 - q}} if types == PROVIDER_TYPES else {}
    q_mix = {}
    for c in care_types:
        kinds = provider_types_of(c, types)
        q_mix[c] = dict(mix.get(c) or {t: 1.0 / len(kinds) for t in kinds})
    return shift, q_mix


def _provider_sd(mean, sd_prov, disc, kappa, low: float = 1.0, weights=None) -> np.ndarray:
    """SD over a ~ N(mean, sd_prov) of the expected rating with the client effect integrated."""
    a = mean[:, None] + sd_prov[:, None] * NODES[None, :]  # (draw, Q)
    m = marginal_rating(a, np.ones(len(a)), disc, kappa, low=low, weights=weights)
    centre = (m * _WEIGHTS).sum(axis=1, keepdims=True)
    return np.sqrt(((m - centre) ** 2 * _WEIGHTS).sum(axis=1))


def _dataset(out: Mapping[str, tuple[np.ndarray, str, str]], stacked: xr.Dataset) -> xr.Dataset:
    sample = stacked["sample"]
    data = {}
    for name, (values, units, kind) in out.items():
        da = xr.DataArray(np.asarray(values, float), dims=("sample",), coords={"sample": sample})
        data[name] = (
            da.unstack("sample").transpose("chain", "draw").assign_attrs(units=units, kind=kind)
        )
    return xr.Dataset(data)
