"""The synthetic study: an explicit, hierarchical generative truth that reproduces the paper.

Everything the generator does is governed by :class:`SimulationConfig` (a frozen dataclass; every
free choice is a documented field) and a seed. :func:`simulate_study` returns the three contract
tables (providers, clients, sessions), the planted truth (``truth``, the content of
``truth.json``) and a hidden per-client truth table (``latent``: true alliance scores, their
within/between-provider parts, provider effects and the unrounded outcomes) that tests use to
check that the planted structure is recoverable.

Generative story (client c, providers p, subscales s in {goal, bond})
---------------------------------------------------------------------
1. Care type is fixed by design (exact counts). Coach-only clients see one coach (a share see a
   second coach), therapist-only clients one therapist, "both" clients one coach and one
   therapist. Sessions per provider are ``1 + NegBin(mean, dispersion)``; membership weights
   ``w_cp`` are each provider's share of the client's sessions. Days in care are the sum of
   ``n_sessions - 1`` Gamma-distributed gaps between sessions.
2. Alliance. A latent score ``eta_cps = mu_s + a_ps + e_cs (+ r_cs)`` with provider offsets
   ``a_p`` (bivariate normal, SD ``provider_alliance_sd``), client parts ``e_c`` (bivariate
   normal, SD ``client_alliance_sd``, correlation ``client_alliance_corr``) and, for a small
   share of clients, a "rupture" shift ``r_c`` (the long left tail down to 1). Each session item
   rating is ``clip(round(eta_cps + eps), 1, 5)`` with ``eps ~ N(0, session_noise_sd)``: a
   strong ceiling. The TRUE subscale score is the expected rating on the 1–5 scale,
   ``tau_cps = g(eta_cps) = 1 + sum_{k=1..4} Phi((eta_cps - k - 1/2) / session_noise_sd)``, and
   a client's true score is ``tau_cs = sum_p w_cp tau_cps``. So the observed client mean over
   sessions is the true score plus zero-mean measurement error (classical test theory), which a
   latent model can undo. The provider's true mean is the mean of its clients' true scores with
   it, each client weighted equally, ``m_ps = mean_{c in C_p} tau_cps`` (as
   :mod:`alliance_bayes.data.frame` defines it for observed scores); between part
   ``between_cs = sum_p w_cp m_ps``; within part ``within_cs = tau_cs - between_cs``. With
   ``between_definition = "latent"`` the provider's true mean is instead its latent alliance,
   the expected rating over the population of clients (the client part integrated out), so the
   between effect is planted on the provider itself rather than on its caseload: the averaged
   caseload mean then estimates it with sampling error (reliability well below 1 for caseloads
   of 10-30 and an alliance ICC of a few per cent), and a model that uses it is biased toward
   the within effect (Ludtke et al. 2008, doi:10.1037/a0012869).
3. WHO-5 baseline: a two-component normal mixture (distressed / not distressed) on the 0–100
   metric, rounded to a multiple of 4 and clipped. Follow-up::

       y* = intercept + b_baseline*baseline + b_age*age + b_male*male + b_days_in_care*days
            + sum_s [(b[care,s,within] + v_s) * within_cs + b[care,s,between] * between_cs]
            + sum_p w_cp u_p + N(0, sigma)

   with ``b[care,s,l] = mu_b[s,l] + deviation[care][s,l]`` (deviations sum to zero over the
   three care types, so ``mu_b`` is their equal-weight mean; the pooled truth ``b_<s>_<l>`` weights
   them by the realised care mix), provider intercepts
   ``u_p ~ N(0, sd_provider[type])`` and provider deviations of the within slope
   ``v_ps ~ N(0, sd_provider_slope[s])`` (``v_s = sum_p w_cp v_ps``). The reported follow-up is
   ``y*`` rounded to a multiple of 4 and clipped to 0..100. All coefficients are on raw scales:
   the intercept is the expected follow-up at age 0, female, 0 days, baseline 0 and all alliance
   parts 0 (the paper's Table 2 parametrisation).
4. PHQ-9 (0–27) is measured for a share of clients that depends on care type (therapists use it,
   coaches rarely); its baseline is correlated negatively with the WHO-5 baseline; the follow-up
   has the WHO-5 structure with its own (negative) alliance slopes, provider SDs and sigma,
   rounded and clipped to 0..27.
5. Follow-up is missing at random given covariates (age, days in care, care type); one follow-up
   assessment covers both WHO-5 and PHQ-9.

Planted answers to the study's first two questions (all off by default: the shipped study)
------------------------------------------------------------------------------------------
Q1, alliance across care types, demographics and sessions: a client-level shift of the latent
alliance, ``alliance_care_shift[care] + alliance_per_decade_age * (age - mean) / 10 +
alliance_male * (male - mean) + alliance_per_10_who5_baseline * (baseline - mean) / 10 + u_k``
with country effects ``u_k ~ N(0, alliance_country_sd)``, and a session-level growth
``alliance_per_session * (session_index - mean)`` (then a client's true score is the mean of its
sessions' expected ratings). The truth (``truth["alliance_ratings"]``,
:func:`alliance_ratings_truth`) is in closed form on the 1–5 expected-rating scale of the ratings
model's estimands. With ``between_definition = "latent"`` a provider's latent alliance stays
that of the reference client (the client shifts are not integrated into it).

Q2, change among the elevated with the regression to the mean separated out: with
``who5_reliability`` (``phq9_reliability``) below 1 the continuous baseline ``T1`` (the mixture,
clipped to the scale) drives the follow-up, and both waves are reported as ``T + N(0, sigma_e)``
on the grid, ``sigma_e^2 = (1 - rho) / rho * Var(T1)`` (test-retest reliability ``rho``); with 1
the reported baseline itself drives the follow-up, as in the shipped study. The true change is set
by the follow-up's truth (``intercept``, ``care_intercept`` per care type, ``b_baseline``, ...).
The truth (``truth["change"]``, :func:`change_truth`) is a fixed-seed Monte Carlo of the config.

Extras draw from their own streams (``default_rng([seed, k])``), only when on: the main stream,
and so the shipped study, is the same with every extra off.

The truth is defined on TRUE alliance scores; the observed client means carry measurement error
(small for the default ``session_noise_sd``; make it large to stress a latent measurement model).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

__all__ = [
    "CARE_TYPES",
    "DEFAULT_SEED",
    "LEVELS",
    "SUBSCALES",
    "OutcomeTruth",
    "SimulatedStudy",
    "SimulationConfig",
    "config_with",
    "cronbach_alpha",
    "format_table",
    "hard_targets_met",
    "ols",
    "scan_seeds",
    "simulate_study",
    "target_table",
    "write_simulated_study",
]

#: Seed of the shipped study. Chosen by scanning seeds 0..199 with the truth fixed (see scan_seeds):
#: the first
#: seed whose realised study meets every hard target with a margin (see data/synthetic/README.md).
DEFAULT_SEED = 3

CARE_TYPES = ("therapist", "coach", "both")
SUBSCALES = ("goal", "bond")
LEVELS = ("within", "between")
PROVIDER_TYPES = ("therapist", "coach")


def _slopes(gw: float, bw: float, gb: float, bb: float) -> dict[str, float]:
    return {"goal_within": gw, "bond_within": bw, "goal_between": gb, "bond_between": bb}


@dataclass(frozen=True)
class OutcomeTruth:
    """Planted regression truth for one follow-up outcome (units: outcome points).

    Alliance slopes are outcome points per one point of the 1–5 alliance scale, keyed
    ``"<subscale>_<level>"``.
    ``deviation[care]`` is added to ``mu_b`` to give the care-type slope; deviations sum to zero
    over care types (so ``mu_b`` is the care types' equal-weight mean, not the care-mix pooled
    slope; see :meth:`estimands`).
    """

    intercept: float
    b_baseline: float
    b_age: float  # per year
    b_male: float  # male vs female
    b_days_in_care: float  # per day
    mu_b: dict[str, float]
    deviation: dict[str, dict[str, float]]
    sd_provider: dict[str, float]  # provider intercept SD per provider type
    sd_provider_slope: dict[
        str, float
    ]  # SD of provider deviations of the within slope, per subscale
    sigma: float  # client residual SD
    lower: float  # reporting range
    upper: float
    step: float  # reporting grid (4 for the WHO-5 percentage metric, 1 for PHQ-9)
    # added to the intercept per care type; 0 in the shipped truth, whose care-type gaps at equal
    # alliance come from its care-type slopes alone (see estimands(between_mean=...))
    care_intercept: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CARE_TYPES, 0.0))

    def slope(self, care: str, subscale: str, level: str) -> float:
        key = f"{subscale}_{level}"
        return self.mu_b[key] + self.deviation[care][key]

    def care_gap(self, care: str, between_mean: dict[str, float]) -> float:
        """Expected-outcome difference of ``care`` vs coach at equal alliance and covariates.

        The models centre the between-provider parts at their sample mean and leave the within
        parts uncentred, so their care-type intercepts compare care types at between parts equal
        to ``between_mean`` (per subscale) and equal within parts: the planted intercept
        difference plus each between slope's difference times the mean between part.
        """
        gap = self.care_intercept[care] - self.care_intercept["coach"]
        for s in SUBSCALES:
            diff = self.slope(care, s, "between") - self.slope("coach", s, "between")
            gap += diff * between_mean[s]
        return gap

    def estimands(
        self,
        between_mean: dict[str, float] | None = None,
        care_share: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Named estimands as in design.md (values of the generative truth).

        With ``between_mean`` (the study's mean true between-provider part per subscale) the
        care-type intercepts ``b_care[therapist-coach]`` and ``b_care[both-coach]`` are included.
        The pooled slopes ``b_<s>_<level>`` are the care-type slopes averaged with
        ``care_share`` (the share of each care type among the clients whose outcome is observed,
        the weights the package reports them with); without it, equally (where the deviations
        sum to zero, that is ``mu_b``). ``mu_b_<s>_<level>`` is the planted hyper-mean.
        """
        if care_share is None:
            care_share = dict.fromkeys(CARE_TYPES, 1.0 / len(CARE_TYPES))
        out: dict[str, float] = {
            "intercept": self.intercept,
            "b_baseline": self.b_baseline,
            "b_age": self.b_age,
            "b_male": self.b_male,
            "b_days_in_care": self.b_days_in_care,
            "sigma": self.sigma,
        }
        for s in SUBSCALES:
            for lev in LEVELS:
                out[f"mu_b_{s}_{lev}"] = self.mu_b[f"{s}_{lev}"]
                out[f"b_{s}_{lev}"] = sum(
                    w * self.slope(care, s, lev) for care, w in care_share.items()
                )
                for care in CARE_TYPES:
                    out[f"b_{s}_{lev}[{care}]"] = self.slope(care, s, lev)
            out[f"sd_provider_slope[{s}]"] = self.sd_provider_slope[s]
        for t in PROVIDER_TYPES:
            sd = self.sd_provider[t]
            out[f"sd_provider[{t}]"] = sd
            out[f"icc_provider[{t}]"] = sd**2 / (sd**2 + self.sigma**2)
        if between_mean is not None:
            for care in ("therapist", "both"):
                out[f"b_care[{care}-coach]"] = self.care_gap(care, between_mean)
        return dict(sorted(out.items()))


def _who5_truth() -> OutcomeTruth:
    return OutcomeTruth(
        intercept=-8.0,
        b_baseline=0.66,
        b_age=0.03,
        b_male=0.0,
        b_days_in_care=-0.01,
        mu_b=_slopes(gw=0.8, bw=1.3, gb=2.1, bb=3.1),
        deviation={
            "therapist": _slopes(gw=-0.4, bw=0.8, gb=-0.5, bb=1.0),
            "coach": _slopes(gw=0.5, bw=-0.5, gb=0.6, bb=-0.8),
            "both": _slopes(gw=-0.1, bw=-0.3, gb=-0.1, bb=-0.2),
        },
        sd_provider={"therapist": 4.0, "coach": 2.5},
        sd_provider_slope={"goal": 0.4, "bond": 0.5},
        sigma=17.0,
        lower=0.0,
        upper=100.0,
        step=4.0,
    )


def _phq9_truth() -> OutcomeTruth:
    return OutcomeTruth(
        intercept=9.0,
        b_baseline=0.5,
        b_age=-0.01,
        b_male=-0.2,
        b_days_in_care=0.002,
        mu_b=_slopes(gw=-0.2, bw=-0.35, gb=-0.5, bb=-0.8),
        deviation={
            "therapist": _slopes(gw=-0.1, bw=-0.2, gb=-0.2, bb=-0.3),
            "coach": _slopes(gw=0.1, bw=0.15, gb=0.15, bb=0.25),
            "both": _slopes(gw=0.0, bw=0.05, gb=0.05, bb=0.05),
        },
        sd_provider={"therapist": 1.0, "coach": 0.6},
        sd_provider_slope={"goal": 0.1, "bond": 0.15},
        sigma=3.5,
        lower=0.0,
        upper=27.0,
        step=1.0,
    )


@dataclass(frozen=True)
class SimulationConfig:
    """Every free choice of the synthetic study. Defaults give the shipped study (N = 3,087).

    Counts: the care mix is exact (paper: coach 2,003 / therapist 555 / both 529). Provider counts
    are not reported; 45 therapists and 100 coaches give caseloads of about 24 (therapists: 1,084
    clients) and 25 (coaches: 2,532 clients plus second coaches).
    """

    # --- design
    n_coach_clients: int = 2003
    n_therapist_clients: int = 555
    n_both_clients: int = 529
    n_therapists: int = 45
    n_coaches: int = 100
    p_second_coach: float = (
        0.15  # coach-only clients who also saw a second coach (multiple membership)
    )
    # sessions with a provider = 1 + NegBin(mean, dispersion); by care type / provider type
    extra_sessions_mean: dict[str, float] = field(
        default_factory=lambda: {
            "coach": 4.0,
            "therapist": 5.0,
            "both_coach": 3.0,
            "both_therapist": 3.0,
        }
    )
    sessions_dispersion: float = 2.0  # NegBin size; variance = mean + mean^2 / size
    max_sessions: int = 24  # cap per client
    gap_days_shape: float = 2.0  # Gamma gaps between consecutive sessions (mean 14 days)
    gap_days_scale: float = 7.0
    # --- demographics
    age_mean: float = 36.0
    age_sd: float = 9.0
    age_min: int = 18
    age_max: int = 100
    p_female: float = 0.54
    countries: dict[str, float] = field(
        default_factory=lambda: {
            "US": 0.55,
            "GB": 0.10,
            "IN": 0.10,
            "CA": 0.08,
            "DE": 0.07,
            "BR": 0.05,
            "SG": 0.05,
        }
    )
    # --- alliance (latent scale = 1–5 rating scale before the ceiling)
    alliance_mean: dict[str, float] = field(default_factory=lambda: {"goal": 5.15, "bond": 5.3})
    provider_alliance_sd: float = 0.3
    provider_alliance_corr: float = 0.6
    client_alliance_sd: float = 0.75
    client_alliance_corr: float = 0.1
    p_rupture: float = 0.09  # share of clients with a common downward shift (long left tail to 1)
    rupture_shift_mean: float = -2.5
    rupture_shift_sd: float = 0.5  # SD of the common (both subscales) rupture shift
    rupture_subscale_sd: float = 1.0  # SD of the subscale-specific part of the rupture shift
    session_noise_sd: float = (
        0.5  # SD of session-level item noise before rounding (measurement error)
    )
    # where the between-provider truth lives: "caseload" (the mean of the provider's clients' true
    # scores) or "latent" (the provider's latent alliance: its expected rating over the population
    # of clients, so free of which clients it happened to see; Marsh et al. 2009)
    between_definition: str = "caseload"
    # --- WHO-5 baseline: mixture on the 0–100 metric, rounded to multiples of 4
    who5_low_share: float = 0.33
    who5_low_mean: float = 19.0
    who5_low_sd: float = 8.0
    who5_high_mean: float = 54.0
    who5_high_sd: float = 16.0
    # --- follow-up missingness: logit P(observed), MAR given covariates
    followup_logit_intercept: float = 0.48
    followup_logit_age: float = 0.15  # per SD of age (older respond more)
    followup_logit_days: float = 0.25  # per 60 days in care
    followup_logit_care: dict[str, float] = field(
        default_factory=lambda: {"coach": 0.0, "therapist": 0.1, "both": 0.2}
    )
    # --- PHQ-9
    p_phq9: dict[str, float] = field(
        default_factory=lambda: {"therapist": 0.9, "both": 0.85, "coach": 0.05}
    )
    phq9_baseline_intercept: float = 19.0
    phq9_baseline_slope_who5: float = -0.2  # PHQ-9 points per WHO-5 point
    phq9_baseline_sd: float = 4.5
    # --- planted alliance differences (question 1), on the latent alliance scale (rating points
    # before the ceiling and the rounding; the client part has SD ``client_alliance_sd``). All 0 in
    # the shipped study: alliance "did not differ by age, country, or baseline well-being".
    # Covariates enter centred at the study's own means, session order at its mean over sessions.
    alliance_care_shift: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(CARE_TYPES, 0.0)
    )
    alliance_per_decade_age: float = 0.0
    alliance_male: float = 0.0  # male minus female
    alliance_per_10_who5_baseline: float = 0.0  # per 10 points of the REPORTED baseline WHO-5
    alliance_country_sd: float = 0.0  # SD of country effects, drawn once per study (own stream)
    alliance_per_session: float = 0.0  # growth per session (session order within the client)
    # --- true-score layer of the outcomes (question 2): test-retest reliability of the reported
    # scores. 1 = off (the shipped study: the reported baseline drives the follow-up). Below 1, the
    # continuous score drives the follow-up and both waves are reported with independent normal
    # error of variance (1 - rho) / rho * Var(true baseline) (own random stream).
    who5_reliability: float = 1.0
    phq9_reliability: float = 1.0
    # --- outcome truths
    who5: OutcomeTruth = field(default_factory=_who5_truth)
    phq9: OutcomeTruth = field(default_factory=_phq9_truth)

    @property
    def n_clients(self) -> int:
        return self.n_coach_clients + self.n_therapist_clients + self.n_both_clients

    @classmethod
    def small(cls, **overrides: Any) -> SimulationConfig:
        """A small design (300 clients, 10 therapists, 20 coaches), same truth, for fast tests."""
        base = {
            "n_coach_clients": 195,
            "n_therapist_clients": 54,
            "n_both_clients": 51,
            "n_therapists": 10,
            "n_coaches": 20,
        }
        base.update(overrides)
        return cls(**base)

    def scaled(self, factor: float) -> SimulationConfig:
        """The same truth with all client and provider counts multiplied by ``factor`` (rounded)."""

        def r(x: int) -> int:
            return max(1, round(x * factor))

        return dataclasses.replace(
            self,
            n_coach_clients=r(self.n_coach_clients),
            n_therapist_clients=r(self.n_therapist_clients),
            n_both_clients=r(self.n_both_clients),
            n_therapists=r(self.n_therapists),
            n_coaches=r(self.n_coaches),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SimulatedStudy:
    """The three contract tables, the planted truth (truth.json), a hidden per-client table."""

    providers: pd.DataFrame
    clients: pd.DataFrame
    sessions: pd.DataFrame
    truth: dict[str, Any]
    latent: pd.DataFrame  # hidden: never written to the contract files


#
# generator
#


def config_with(config: SimulationConfig, settings: list[str]) -> SimulationConfig:
    """``config`` with ``KEY=VALUE`` settings applied (``KEY.ENTRY=VALUE`` for one table entry).

    Raises
    ------
    ValueError
        Naming every unknown setting or unreadable value at once.
    """
    known = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    problems = []
    for item in settings:
        key, sep, text = item.partition("=")
        name, _, entry = key.strip().partition(".")
        current = changes.get(name, getattr(config, name, None))
        if not sep or name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{item!r}: not a setting KEY=VALUE of SimulationConfig{hint}")
            continue
        try:
            value = float(text)
        except ValueError:
            problems.append(f"{item!r}: {text!r} is not a number")
            continue
        if entry:
            if not isinstance(current, dict) or entry not in current:
                keys = sorted(current) if isinstance(current, dict) else []
                problems.append(f"{item!r}: {name} has no entry {entry!r} (entries: {keys})")
                continue
            changes[name] = {**current, entry: value}
        elif isinstance(current, (dict, OutcomeTruth)):
            problems.append(f"{item!r}: {name} is a table; set one entry as {name}.ENTRY=VALUE")
        elif isinstance(current, bool) and value not in (0.0, 1.0):
            problems.append(f"{item!r}: {name} is a switch; give 0 or 1")
        elif isinstance(current, int) and not (value.is_integer() and value >= 0):
            problems.append(f"{item!r}: {name} is a count; give a whole number >= 0")
        elif not np.isfinite(value):
            problems.append(f"{item!r}: {text!r} is not a finite number")
        else:
            changes[name] = type(current)(value) if isinstance(current, int) else value
    if problems:
        raise ValueError("; ".join(problems))
    return dataclasses.replace(config, **changes)


def _expected_rating(eta: np.ndarray, noise_sd: float) -> np.ndarray:
    """E[clip(round(eta + eps), 1, 5)], eps ~ N(0, noise_sd): the true score on the 1–5 scale."""
    out = np.ones_like(eta, dtype=float)
    for k in range(1, 5):
        out += special.ndtr((eta - k - 0.5) / noise_sd)
    return out


def _population_expected_rating(
    location: np.ndarray, cfg: SimulationConfig, extra_var: float = 0.0
) -> np.ndarray:
    r"""A provider's expected rating over the population of clients, per subscale.

    The client part is, per subscale, the mixture :math:`(1-\pi) \mathcal N(0, s_e^2) + \pi
    \mathcal N(\mu_r, s_e^2 + s_r^2 + s_{rs}^2)` (ruptures with probability :math:`\pi`), so with
    session noise SD :math:`s` each term of :func:`_expected_rating` integrates in closed form:
    :math:`\mathbb E\,\Phi((\ell + X - k - 1/2)/s) = \Phi((\ell + m_X - k - 1/2) /
    \sqrt{s^2 + v_X})` for :math:`X \sim \mathcal N(m_X, v_X)`. ``extra_var`` is the variance of
    a further independent normal part of the location (a provider's offset).
    """
    v_client = cfg.client_alliance_sd**2 + extra_var
    v_rupture = v_client + cfg.rupture_shift_sd**2 + cfg.rupture_subscale_sd**2
    out = np.ones_like(location, dtype=float)
    for k in range(1, 5):
        cut = location - k - 0.5
        out += (1.0 - cfg.p_rupture) * special.ndtr(
            cut / np.sqrt(cfg.session_noise_sd**2 + v_client)
        ) + cfg.p_rupture * special.ndtr(
            (cut + cfg.rupture_shift_mean) / np.sqrt(cfg.session_noise_sd**2 + v_rupture)
        )
    return out


def _negbin(rng: np.random.Generator, mean: float, size: float, n: int) -> np.ndarray:
    if mean <= 0:
        return np.zeros(n, dtype=np.int64)
    p = size / (size + mean)
    return rng.negative_binomial(size, p, size=n).astype(np.int64)


def _reported_baseline(
    continuous: np.ndarray, sd_e: float, seed: int, stream: int, step: float, top: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(reported baseline, the true baseline that drives the follow-up, errors or None).

    With an error SD above 0 the true score is the continuous score clipped to ``[0, top]`` and
    both waves get an error from the side stream ``stream`` (rows: baseline, follow-up); the
    baseline is reported on the instrument's grid. Without one the reported (rounded) baseline
    itself is the true score, as in the shipped study.
    """
    if sd_e > 0:
        true = np.clip(continuous, 0.0, top)
        err = _side_rng(seed, stream).normal(0.0, sd_e, (2, continuous.size))
        return _round_to(true + err[0], step, 0.0, top), true, err
    reported = _round_to(continuous, step, 0.0, top)
    return reported, reported, None


def _round_to(x: np.ndarray, step: float, lower: float, upper: float) -> np.ndarray:
    return np.clip(np.round(x / step) * step, lower, upper)


def _mvn2(rng: np.random.Generator, n: int, sd: float, corr: float) -> np.ndarray:
    cov = sd**2 * np.array([[1.0, corr], [corr, 1.0]])
    return rng.multivariate_normal(np.zeros(2), cov, size=n, method="cholesky")


def simulate_study(
    config: SimulationConfig | None = None, seed: int = DEFAULT_SEED
) -> SimulatedStudy:
    """Simulate one synthetic study. Same config and seed give identical tables.

    The truth's ``change`` block (question 2) is a population value of the config, computed once
    per config by a fixed-seed Monte Carlo (:func:`change_truth`); everything else is closed form.
    """
    cfg = config if config is not None else SimulationConfig()
    study = _generate(cfg, seed)
    study.truth["change"] = change_truth(cfg)
    return study


def _generate(cfg: SimulationConfig, seed: int) -> SimulatedStudy:
    """The generator of the module docstring (every truth block but ``change``)."""
    rng = np.random.default_rng(seed)

    # ---- providers
    n_prov = cfg.n_therapists + cfg.n_coaches
    ptype = np.array(["therapist"] * cfg.n_therapists + ["coach"] * cfg.n_coaches)
    ptype = ptype[rng.permutation(n_prov)]
    provider_ids = np.array([f"prov-{i + 1:04d}" for i in range(n_prov)])
    is_ther = ptype == "therapist"
    ther_idx = np.flatnonzero(is_ther)
    coach_idx = np.flatnonzero(~is_ther)
    a_prov = _mvn2(rng, n_prov, cfg.provider_alliance_sd, cfg.provider_alliance_corr)  # (P, 2)
    prov_effects = {}
    for name, tr in (("who5", cfg.who5), ("phq9", cfg.phq9)):
        sd_u = np.where(is_ther, tr.sd_provider["therapist"], tr.sd_provider["coach"])
        u = rng.normal(0.0, 1.0, n_prov) * sd_u
        v = np.column_stack([rng.normal(0.0, tr.sd_provider_slope[s], n_prov) for s in SUBSCALES])
        prov_effects[name] = (u, v)

    # ---- clients and memberships
    n = cfg.n_clients
    care = np.array(
        ["coach"] * cfg.n_coach_clients
        + ["therapist"] * cfg.n_therapist_clients
        + ["both"] * cfg.n_both_clients
    )
    care = care[rng.permutation(n)]
    client_ids = np.array([f"client-{i + 1:05d}" for i in range(n)])
    em = cfg.extra_sessions_mean
    disp = cfg.sessions_dispersion
    # first provider and its session count, second provider (coach 2 or therapist) and its count
    first = np.where(care == "therapist", rng.choice(ther_idx, n), rng.choice(coach_idx, n)).astype(
        np.int64
    )
    mean1 = np.select(
        [care == "coach", care == "therapist"], [em["coach"], em["therapist"]], em["both_coach"]
    )
    n1 = 1 + np.array([_negbin(rng, m, disp, 1)[0] for m in mean1])
    second = np.full(n, -1, dtype=np.int64)
    n2 = np.zeros(n, dtype=np.int64)
    both = care == "both"
    second[both] = rng.choice(ther_idx, both.sum())
    n2[both] = 1 + _negbin(rng, em["both_therapist"], disp, int(both.sum()))
    two_coach = (care == "coach") & (rng.random(n) < cfg.p_second_coach) & (n1 >= 2)
    if cfg.n_coaches >= 2:
        # a different coach: shift by a random non-zero offset within the coach list
        pos = np.searchsorted(coach_idx, first[two_coach])
        off = rng.integers(1, cfg.n_coaches, two_coach.sum())
        second[two_coach] = coach_idx[(pos + off) % cfg.n_coaches]
        k2 = 1 + rng.binomial(n1[two_coach] - 2, 0.4)
        n2[two_coach] = k2
        n1[two_coach] -= k2
    else:
        two_coach[:] = False
    # cap total sessions, keeping at least one with each provider
    total = n1 + n2
    over = total > cfg.max_sessions
    if over.any():
        scale = cfg.max_sessions / total[over]
        has2 = n2[over] > 0
        new1 = np.maximum(1, np.floor(n1[over] * scale).astype(np.int64))
        new2 = np.where(has2, cfg.max_sessions - new1, 0)
        new1 = np.where(has2, new1, cfg.max_sessions)
        n1[over], n2[over] = new1, new2
    total = n1 + n2
    w1 = n1 / total
    w2 = n2 / total
    has_second = second >= 0

    # ---- sessions (order interleaved at random within client)
    s_client = np.concatenate([np.repeat(np.arange(n), n1), np.repeat(np.arange(n), n2)])
    s_prov = np.concatenate([np.repeat(first, n1), np.repeat(second, n2)])
    order = np.lexsort((rng.random(s_client.size), s_client))
    s_client, s_prov = s_client[order], s_prov[order]
    starts = np.concatenate([[0], np.cumsum(total)[:-1]])
    s_index = np.arange(s_client.size) - np.repeat(starts, total) + 1

    # ---- alliance: the draws, in the order of the shipped study's stream; the arithmetic follows
    # once the covariates that may shift the alliance are drawn
    mu = np.array([cfg.alliance_mean[s] for s in SUBSCALES])
    e_client = _mvn2(rng, n, cfg.client_alliance_sd, cfg.client_alliance_corr)
    rupture = rng.random(n) < cfg.p_rupture
    shift = rng.normal(cfg.rupture_shift_mean, cfg.rupture_shift_sd, n)[:, None] + rng.normal(
        0.0, cfg.rupture_subscale_sd, (n, 2)
    )
    session_eps = rng.normal(0.0, cfg.session_noise_sd, (s_client.size, 2))

    # ---- covariates
    age = np.clip(np.round(rng.normal(cfg.age_mean, cfg.age_sd, n)), cfg.age_min, cfg.age_max)
    male = (rng.random(n) >= cfg.p_female).astype(np.int64)
    cnames = list(cfg.countries)
    cprob = np.array([cfg.countries[c] for c in cnames], dtype=float)
    country = np.array(cnames)[rng.choice(len(cnames), n, p=cprob / cprob.sum())]
    gaps = total - 1
    days = np.where(
        gaps > 0,
        rng.gamma(np.maximum(gaps, 1) * cfg.gap_days_shape, cfg.gap_days_scale),
        0.0,
    )
    days = np.round(days).astype(np.int64)

    # ---- WHO-5 baseline
    low = rng.random(n) < cfg.who5_low_share
    who5_bl_latent = np.where(
        low,
        rng.normal(cfg.who5_low_mean, cfg.who5_low_sd, n),
        rng.normal(cfg.who5_high_mean, cfg.who5_high_sd, n),
    )
    who5_sd_e = _error_sd(cfg, "who5")
    who5_bl, who5_true, who5_err = _reported_baseline(
        who5_bl_latent, who5_sd_e, seed, _STREAM_WHO5_ERROR, 4.0, 100.0
    )

    # ---- alliance: latent scores, true scores, within/between parts, session ratings
    client_part = e_client + np.where(rupture[:, None], shift, 0.0)
    countries = sorted(set(cnames))
    country_effect = dict.fromkeys(countries, 0.0)
    if cfg.alliance_country_sd > 0:
        drawn = _side_rng(seed, _STREAM_COUNTRY).normal(
            0.0, cfg.alliance_country_sd, len(countries)
        )
        country_effect = dict(zip(countries, drawn.tolist(), strict=True))
    centring = {
        "age": float(age.mean()),
        "male": float(male.mean()),
        "who5_baseline": float(who5_bl.mean()),
        "session_index": float(s_index.mean()),
    }
    client_shift = _alliance_client_shift(cfg, care, age, male, who5_bl, country, country_effect)
    if client_shift is not None:
        client_part = client_part + client_shift[:, None]
    eta1 = mu + a_prov[first] + client_part  # (n, 2) latent score with the first provider
    eta2 = mu + a_prov[np.maximum(second, 0)] + client_part
    with_first = s_prov == first[s_client]
    if cfg.alliance_per_session != 0:
        # growth over sessions: a client's true score is the mean of its sessions' expected ratings
        growth = cfg.alliance_per_session * (s_index - centring["session_index"])
        eta_sess = np.where(with_first[:, None], eta1[s_client], eta2[s_client]) + growth[:, None]
        g_sess = _expected_rating(eta_sess, cfg.session_noise_sd)
        tau1 = _slot_mean(g_sess, s_client, with_first, n)
        tau2 = np.where(has_second[:, None], _slot_mean(g_sess, s_client, ~with_first, n), 0.0)
    else:
        tau1 = _expected_rating(eta1, cfg.session_noise_sd)
        tau2 = np.where(has_second[:, None], _expected_rating(eta2, cfg.session_noise_sd), 0.0)
        eta_sess = np.where(with_first[:, None], eta1[s_client], eta2[s_client])
    tau = w1[:, None] * tau1 + w2[:, None] * tau2  # client true score per subscale
    # provider true mean: mean of its clients' true scores with it, each client weighted equally
    # (the same definition as alliance_bayes.data.frame uses for the observed scores)
    num = np.zeros((n_prov, 2))
    den = np.zeros(n_prov)
    np.add.at(num, first, tau1)
    np.add.at(den, first, 1.0)
    np.add.at(num, second[has_second], tau2[has_second])
    np.add.at(den, second[has_second], 1.0)
    prov_mean = np.divide(num, den[:, None], out=np.full_like(num, np.nan), where=den[:, None] > 0)
    if cfg.between_definition == "latent":
        prov_mean = _population_expected_rating(mu + a_prov, cfg)
    elif cfg.between_definition != "caseload":
        raise ValueError(
            f"between_definition: 'caseload' or 'latent', got {cfg.between_definition!r}"
        )
    between = w1[:, None] * prov_mean[first] + np.where(
        has_second[:, None], w2[:, None] * prov_mean[np.maximum(second, 0)], 0.0
    )
    within = tau - between
    ratings = np.clip(np.round(eta_sess + session_eps), 1, 5).astype(np.int64)

    def outcome(
        tr: OutcomeTruth, name: str, baseline: np.ndarray, error: np.ndarray | None
    ) -> tuple[np.ndarray, ...]:
        u, v = prov_effects[name]
        prov_u = w1 * u[first] + np.where(has_second, w2 * u[np.maximum(second, 0)], 0.0)
        prov_v = w1[:, None] * v[first] + np.where(
            has_second[:, None], w2[:, None] * v[np.maximum(second, 0)], 0.0
        )
        alliance_part = np.zeros(n)
        ci = pd.Categorical(care, categories=CARE_TYPES).codes
        for j, s in enumerate(SUBSCALES):
            bw = np.array([tr.slope(c, s, "within") for c in CARE_TYPES])
            bb = np.array([tr.slope(c, s, "between") for c in CARE_TYPES])
            alliance_part += (bw[ci] + prov_v[:, j]) * within[:, j] + bb[ci] * between[:, j]
        mean = (
            tr.intercept
            + np.array([tr.care_intercept[c] for c in CARE_TYPES])[ci]
            + tr.b_baseline * baseline
            + tr.b_age * age
            + tr.b_male * male
            + tr.b_days_in_care * days
            + alliance_part
            + prov_u
        )
        ystar = mean + rng.normal(0.0, tr.sigma, n)
        reported = ystar if error is None else ystar + error
        return _round_to(reported, tr.step, tr.lower, tr.upper), ystar, mean, prov_u

    def _provider_var(tr: OutcomeTruth) -> np.ndarray:
        """Variance of a client's provider part sum_p w_cp u_p over the draws of the u_p."""
        var = np.where(is_ther, tr.sd_provider["therapist"], tr.sd_provider["coach"]) ** 2
        return w1**2 * var[first] + np.where(has_second, w2**2 * var[np.maximum(second, 0)], 0.0)

    who5_fu, who5_star, who5_mean, who5_u = outcome(
        cfg.who5, "who5", who5_true, None if who5_err is None else who5_err[1]
    )
    between_mean = {s: float(between[:, j].mean()) for j, s in enumerate(SUBSCALES)}

    # ---- PHQ-9
    p_phq = np.array([cfg.p_phq9[c] for c in care])
    phq_measured = rng.random(n) < p_phq
    phq_continuous = (
        cfg.phq9_baseline_intercept
        + cfg.phq9_baseline_slope_who5 * who5_true
        + rng.normal(0.0, cfg.phq9_baseline_sd, n)
    )
    phq_sd_e = _error_sd(cfg, "phq9")
    phq_bl, phq_true, phq_err = _reported_baseline(
        phq_continuous, phq_sd_e, seed, _STREAM_PHQ9_ERROR, 1.0, 27.0
    )
    phq_fu, phq_star, phq_mean, phq_u = outcome(
        cfg.phq9, "phq9", phq_true, None if phq_err is None else phq_err[1]
    )

    # ---- follow-up missingness (MAR)
    logit = (
        cfg.followup_logit_intercept
        + cfg.followup_logit_age * (age - cfg.age_mean) / cfg.age_sd
        + cfg.followup_logit_days * (days - 60.0) / 60.0
        + np.array([cfg.followup_logit_care[c] for c in care])
    )
    observed = rng.random(n) < special.expit(logit)

    # ---- tables
    providers = pd.DataFrame({"provider_id": provider_ids, "provider_type": ptype})
    clients = pd.DataFrame(
        {
            "client_id": client_ids,
            "age": age.astype(np.int64),
            "sex": np.where(male == 1, "male", "female"),
            "country": country,
            "who5_baseline": who5_bl.astype(np.int64),
            "who5_followup": pd.array(np.where(observed, who5_fu, np.nan), dtype="Int64"),
            "phq9_baseline": pd.array(np.where(phq_measured, phq_bl, np.nan), dtype="Int64"),
            "phq9_followup": pd.array(
                np.where(phq_measured & observed, phq_fu, np.nan), dtype="Int64"
            ),
            "days_in_care": days,
        }
    )
    sessions = pd.DataFrame(
        {
            "client_id": client_ids[s_client],
            "provider_id": provider_ids[s_prov],
            "session_index": s_index.astype(np.int64),
            "wai_goal": ratings[:, 0],
            "wai_bond": ratings[:, 1],
        }
    )
    latent = pd.DataFrame(
        {
            "client_id": client_ids,
            "care_type": care,
            "male": male,
            "n_sessions": total,
            "rupture": rupture,
            "true_goal": tau[:, 0],
            "true_bond": tau[:, 1],
            "true_alliance": tau.mean(axis=1),
            "goal_within": within[:, 0],
            "goal_between": between[:, 0],
            "bond_within": within[:, 1],
            "bond_between": between[:, 1],
            "who5_baseline_full": who5_bl,
            "who5_baseline_true": who5_true,
            "who5_baseline_continuous": np.clip(who5_bl_latent, 0.0, 100.0),
            "phq9_baseline_true": phq_true,
            "phq9_baseline_continuous": np.clip(phq_continuous, 0.0, 27.0),
            "first_provider": first,
            "who5_provider_effect": who5_u,
            "who5_provider_var": _provider_var(cfg.who5),
            "who5_mean": who5_mean,
            "who5_followup_star": who5_star,
            "who5_followup_full": who5_fu,
            "phq9_baseline_full": phq_bl,
            "phq9_provider_effect": phq_u,
            "phq9_provider_var": _provider_var(cfg.phq9),
            "phq9_mean": phq_mean,
            "phq9_followup_star": phq_star,
            "phq9_followup_full": phq_fu,
            "phq9_measured": phq_measured,
            "followup_observed": observed,
        }
    )
    truth = {
        "seed": int(seed),
        "config": _jsonable(cfg.to_dict()),
        "who5": cfg.who5.estimands(between_mean, _care_share(care[observed])),
        "phq9": cfg.phq9.estimands(between_mean, _care_share(care[observed & phq_measured])),
        "alliance_ratings": alliance_ratings_truth(
            cfg, country_effect, _care_share(care), _share(country, countries), centring
        ),
        "design": {
            "n_clients": int(n),
            "n_clients_by_care_type": {c: int((care == c).sum()) for c in CARE_TYPES},
            "n_providers": int(n_prov),
            "n_providers_by_type": {t: int((ptype == t).sum()) for t in PROVIDER_TYPES},
            "n_sessions": int(s_client.size),
            "n_followup_observed": int(observed.sum()),
            "n_phq9_measured": int(phq_measured.sum()),
            "n_clients_two_providers": int(has_second.sum()),
            "alliance_truth_scale": (
                "effects are per point of the TRUE alliance score on the 1-5 scale "
                "(expected item rating); "
                "observed client means = true score + measurement error"
            ),
            "intercept_scale": (
                "intercept is the expected follow-up at all predictors 0 on raw scales "
                "(age 0, female, 0 days, baseline 0, alliance parts 0)"
            ),
            "baseline_measurement": (
                "follow-ups driven by the reported baselines (no measurement error planted beyond "
                "the reporting grid)"
                if who5_sd_e == 0 and phq_sd_e == 0
                else "follow-ups driven by the continuous true baselines; reported baseline and "
                "follow-up = true + N(0, sigma_e) on the reporting grid (sigma_e in "
                "change.<outcome>.estimands.sigma_error_planted; 0 = that outcome has no error)"
            ),
            "within_between_definition": (
                (
                    "provider true mean = mean of its clients' true scores with it (clients "
                    "weighted equally, as in data.frame); "
                    if cfg.between_definition == "caseload"
                    else "provider true mean = its latent alliance: the expected rating over the "
                    "population of clients (doubly latent); "
                )
                + "between = sum_p w_cp * provider mean; within = client true score - between"
            ),
        },
    }
    return SimulatedStudy(providers, clients, sessions, truth, latent)


#: Independent random streams for the planted extras, spawned from the seed
#: (``default_rng([seed, stream])``): an extra that is off draws nothing, so the main stream and
#: the shipped study stay as they are.
_STREAM_COUNTRY = 1
_STREAM_WHO5_ERROR = 2
_STREAM_PHQ9_ERROR = 3


def _side_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _true_baseline_var(cfg: SimulationConfig, outcome: str) -> float:
    """Variance of the continuous baseline (before clipping): WHO-5's two-component mixture, and
    for PHQ-9 its regression on the WHO-5 baseline plus noise."""
    p = cfg.who5_low_share
    who5 = (
        p * cfg.who5_low_sd**2
        + (1.0 - p) * cfg.who5_high_sd**2
        + p * (1.0 - p) * (cfg.who5_low_mean - cfg.who5_high_mean) ** 2
    )
    if outcome == "who5":
        return who5
    return cfg.phq9_baseline_slope_who5**2 * who5 + cfg.phq9_baseline_sd**2


def _error_sd(cfg: SimulationConfig, outcome: str) -> float:
    r"""SD of the measurement error that gives reliability :math:`\rho` to the continuous score:
    :math:`\sigma_e^2 = (1 - \rho)/\rho \cdot \operatorname{Var}(T)`, so that
    :math:`\operatorname{Var}(T) / (\operatorname{Var}(T) + \sigma_e^2) = \rho`; 0 when off."""
    rho = float(getattr(cfg, f"{outcome}_reliability"))
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"{outcome}_reliability must lie in (0, 1], got {rho}")
    return float(np.sqrt((1.0 - rho) / rho * _true_baseline_var(cfg, outcome)))


def _alliance_client_shift(
    cfg: SimulationConfig,
    care: np.ndarray,
    age: np.ndarray,
    male: np.ndarray,
    who5_bl: np.ndarray,
    country: np.ndarray,
    country_effect: dict[str, float],
) -> np.ndarray | None:
    """The planted client-level alliance shift (latent scale), or None when every knob is off.

    Covariates enter centred at the study's means, as the ratings model centres them, so the
    reference client (shift 0 but for care and country) is the one at the mean covariates.
    """
    terms = []
    if any(cfg.alliance_care_shift.get(c, 0.0) != 0 for c in CARE_TYPES):
        terms.append(np.array([cfg.alliance_care_shift.get(c, 0.0) for c in care]))
    for slope, x, unit in (
        (cfg.alliance_per_decade_age, age, 10.0),
        (cfg.alliance_male, male, 1.0),
        (cfg.alliance_per_10_who5_baseline, who5_bl, 10.0),
    ):
        if slope != 0:
            x = np.asarray(x, dtype=float)
            terms.append(slope * (x - x.mean()) / unit)
    if cfg.alliance_country_sd > 0:
        terms.append(np.array([country_effect[k] for k in country]))
    return np.sum(terms, axis=0) if terms else None


def _slot_mean(values: np.ndarray, client: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) mean of the session ``values`` of each client over the sessions in ``mask``."""
    num = np.zeros((n, values.shape[1]))
    den = np.zeros(n)
    np.add.at(num, client[mask], values[mask])
    np.add.at(den, client[mask], 1.0)
    return num / np.maximum(den, 1.0)[:, None]


def _share(labels: np.ndarray, levels: list[str]) -> dict[str, float]:
    return {k: float(np.mean(labels == k)) for k in levels}


def _marginal_rating(location: np.ndarray, cfg: SimulationConfig, *, ceiling: bool = False):
    r"""Item rating expected over clients, providers and sessions at a latent ``location``.

    The provider offset (SD ``provider_alliance_sd``) adds its variance to that of
    :func:`_population_expected_rating`; with ``ceiling`` the probability of a 5 instead,
    :math:`(1-\pi)\Phi((\ell - 4.5)/s_0) + \pi\Phi((\ell + \mu_r - 4.5)/s_r)`.
    """
    var_p = cfg.provider_alliance_sd**2
    if not ceiling:
        return _population_expected_rating(location, cfg, var_p)
    v_client = cfg.client_alliance_sd**2
    v_rupture = v_client + cfg.rupture_shift_sd**2 + cfg.rupture_subscale_sd**2
    s2 = cfg.session_noise_sd**2 + var_p
    cut = np.asarray(location, dtype=float) - 4.5
    return (1.0 - cfg.p_rupture) * special.ndtr(cut / np.sqrt(s2 + v_client)) + (
        cfg.p_rupture * special.ndtr((cut + cfg.rupture_shift_mean) / np.sqrt(s2 + v_rupture))
    )


def alliance_ratings_truth(
    cfg: SimulationConfig,
    country_effect: dict[str, float],
    care_share: dict[str, float],
    country_share: dict[str, float],
    centring: dict[str, float],
) -> dict[str, Any]:
    r"""Planted truth of question 1 on the 1–5 rating scale, in closed form.

    As the ratings model defines its estimands (:mod:`alliance_bayes.model.ratings.estimands`):
    the expected rating of a session, averaged over goal and bond, over clients (the normal client
    part and the rupture mixture), providers and session noise, at the study's mean covariates and
    mean session order, with countries weighted by the study's clients:

    .. math::
        \text{alliance}[c] = \sum_k w_k \tfrac12 \sum_s R_s(\mu_s + \gamma_c + u_k),

    :math:`R_s` the closed form of :func:`_marginal_rating`. A covariate's effect is the change of
    the care-mix level :math:`\bar A(x) = \sum_c \pi_c \text{alliance}[c](x)` across one unit
    centred at the mean, :math:`\bar A(\beta/2) - \bar A(-\beta/2)` (male:
    :math:`\bar A(\beta(1-\bar m)) - \bar A(-\beta \bar m)`); ``sd_country_alliance`` the
    SD (ddof 1) of :math:`\bar A` across the study's countries with the drawn country effects;
    ``share_at_ceiling`` :math:`\bar A` with the probability of a 5 in place of the rating.
    """
    mu = np.array([cfg.alliance_mean[s] for s in SUBSCALES])
    countries = [k for k, w in country_share.items() if w > 0]
    u = np.array([country_effect[k] for k in countries])
    w = np.array([country_share[k] for k in countries])
    w = w / w.sum()

    def level(care: str, x: float, *, ceiling: bool = False) -> np.ndarray:
        """(country,) item-averaged rating of ``care`` with ``x`` added to the latent location."""
        loc = mu[None, :] + cfg.alliance_care_shift.get(care, 0.0) + u[:, None] + x
        return _marginal_rating(loc, cfg, ceiling=ceiling).mean(axis=1)

    def mix(x: float, *, ceiling: bool = False) -> np.ndarray:
        return sum(p * level(c, x, ceiling=ceiling) for c, p in care_share.items())

    def effect(high: float, low: float) -> float:
        return float((mix(high) - mix(low)) @ w)

    out: dict[str, Any] = {}
    by_care = {c: float(level(c, 0.0) @ w) for c in CARE_TYPES}
    for c in CARE_TYPES:
        out[f"alliance[{c}]"] = by_care[c]
    for c in ("therapist", "both"):
        out[f"alliance[{c}-coach]"] = by_care[c] - by_care["coach"]
    m_bar = centring["male"]
    out["alliance_per_decade_age"] = effect(
        cfg.alliance_per_decade_age / 2, -cfg.alliance_per_decade_age / 2
    )
    out["alliance_per_10_who5_baseline"] = effect(
        cfg.alliance_per_10_who5_baseline / 2, -cfg.alliance_per_10_who5_baseline / 2
    )
    out["alliance[male-not_male]"] = effect(
        cfg.alliance_male * (1 - m_bar), -cfg.alliance_male * m_bar
    )
    out["alliance_per_session"] = effect(
        cfg.alliance_per_session / 2, -cfg.alliance_per_session / 2
    )
    by_country = mix(0.0)
    for k, value in zip(countries, by_country, strict=True):
        out[f"alliance_country[{k}]"] = float(value)
    out["sd_country_alliance"] = float(by_country.std(ddof=1)) if len(countries) > 1 else 0.0
    out["share_at_ceiling"] = float(mix(0.0, ceiling=True) @ w)
    latent = {
        **{f"care_shift[{c}]": float(cfg.alliance_care_shift.get(c, 0.0)) for c in CARE_TYPES},
        "per_decade_age": cfg.alliance_per_decade_age,
        "male": cfg.alliance_male,
        "per_10_who5_baseline": cfg.alliance_per_10_who5_baseline,
        "per_session": cfg.alliance_per_session,
        "sd_country": cfg.alliance_country_sd,
        **{f"country_effect[{k}]": float(v) for k, v in sorted(country_effect.items())},
    }
    return {
        "estimands": dict(sorted(out.items())),
        "latent_planted": latent,
        "reference": {
            "care_share": care_share,
            "country_share": {k: country_share[k] for k in countries},
            "centring": centring,
        },
        "definition": (
            "expected session rating on the 1-5 scale, averaged over goal and bond, over clients "
            "(client part and ruptures), providers and session noise, in closed form; at the "
            "study's mean covariates and mean session order (the centring under 'reference'), "
            "countries weighted by the study's clients, care types by its care mix; effects are "
            "changes of the care-mix level across one unit centred at the mean; latent_planted "
            "are the knobs on the latent alliance scale (rating points before the ceiling)"
        ),
    }


def _expected_reported(
    mean: np.ndarray, sd: float | np.ndarray, step: float, lower: float, upper: float
) -> np.ndarray:
    r"""Expected reported score :math:`\mathbb E[\operatorname{clip}(\operatorname{round}(X /
    h) h, a, b)]` for :math:`X \sim \mathcal N(m, s^2)` (``lower`` and ``upper`` on the grid):
    :math:`a + h \sum_{j \ge 1} \Pr(X \ge a + jh - h/2)`. With ``sd`` 0, the rounding itself.
    """
    mean = np.asarray(mean, dtype=float)
    sd = np.broadcast_to(np.asarray(sd, dtype=float), mean.shape)
    if np.all(sd == 0):
        return _round_to(mean, step, lower, upper)
    out = np.full(mean.shape, float(lower))
    for g in np.arange(lower + step, upper + step / 2, step):
        out += step * special.ndtr((mean - (g - step / 2)) / sd)
    return out


#: Clients of the Monte Carlo of :func:`change_truth` (at least; the design is multiplied by an
#: integer so that caseloads stay as designed) and its seed.
CHANGE_TRUTH_MC_CLIENTS = 200_000
CHANGE_TRUTH_MC_SEED = 20_221_001
#: Elevated at baseline, as the change family's default spec: WHO-5 <= 28, PHQ-9 >= 10.
ELEVATED_CUTOFF = {"who5": 28.0, "phq9": 10.0}
_CHANGE_TRUTH_CACHE: dict[str, dict[str, Any]] = {}


def change_truth(cfg: SimulationConfig) -> dict[str, Any]:
    r"""Planted truth of question 2: change among the clients elevated at baseline.

    Per care type and ``all`` (the elevated of every care type together; for PHQ-9 the measured
    ones), with the change family's names
    (:mod:`alliance_bayes.model.change.estimands`): ``<o>_change`` the expected observed change
    :math:`\mathbb E[X_2 - X_1 \mid X_1 \text{ elevated}]` (reported scores, follow-up missing or
    not), ``<o>_change_beyond_rtm`` the expected true change :math:`\mathbb E[T_2 - T_1 \mid
    X_1 \text{ elevated}]` and ``rtm`` their difference :math:`\mathbb E[T_1 - X_1 \mid X_1
    \text{ elevated}]` (the error part of a selected baseline, which a retest does not repeat;
    Barnett et al. 2005, doi:10.1093/ije/dyh299). True scores are those of classical test theory,
    the expected reported score given the client's state, :math:`T = \mathbb E[X \mid \cdot]`,
    so that :math:`X = T + E` with :math:`\mathbb E[E \mid T] = 0` on the reported (rounded,
    clipped) scale.

    A population value of the config, by Monte Carlo: the generator's design multiplied by an
    integer to at least :data:`CHANGE_TRUTH_MC_CLIENTS` clients, seed
    :data:`CHANGE_TRUTH_MC_SEED`. The follow-up's residual, error and provider intercepts are
    integrated in closed form (:func:`_expected_reported`); ``mc_se`` are the remaining standard
    errors, clustered by the client's first provider. Cached per config.
    """
    key = json.dumps(_jsonable(cfg.to_dict()), sort_keys=True)
    if key not in _CHANGE_TRUTH_CACHE:
        _CHANGE_TRUTH_CACHE[key] = _change_truth(cfg)
    return json.loads(json.dumps(_CHANGE_TRUTH_CACHE[key]))


def _change_truth(cfg: SimulationConfig) -> dict[str, Any]:
    k = max(1, int(np.ceil(CHANGE_TRUTH_MC_CLIENTS / max(cfg.n_clients, 1))))
    big = dataclasses.replace(
        cfg,
        n_coach_clients=k * cfg.n_coach_clients,
        n_therapist_clients=k * cfg.n_therapist_clients,
        n_both_clients=k * cfg.n_both_clients,
        n_therapists=k * cfg.n_therapists,
        n_coaches=k * cfg.n_coaches,
    )
    lat = _generate(big, CHANGE_TRUTH_MC_SEED).latent
    care = lat["care_type"].to_numpy()
    cluster = lat["first_provider"].to_numpy(np.int64)
    out: dict[str, Any] = {
        "monte_carlo": {"n_clients": int(big.n_clients), "seed": CHANGE_TRUTH_MC_SEED},
        "definition": (
            "population values among the clients elevated at baseline by the reported score "
            "(WHO-5 <= 28, PHQ-9 >= 10), missing follow-ups included: <o>_change = E[X2 - X1], "
            "<o>_change_beyond_rtm = E[T2 - T1], rtm = E[T1 - X1] (their difference), with true "
            "scores T = expected reported score given the client's state (classical test "
            "theory); reliability = the planted test-retest reliability of the continuous score, "
            "reliability_reported = squared correlation of the continuous true baseline with the "
            "reported one (rounding and clipping included); Monte Carlo with the follow-up "
            "residual, error and provider intercepts integrated in closed form, mc_se its standard errors "
            "(clustered by the first provider)"
        ),
    }
    for o in ("who5", "phq9"):
        tr: OutcomeTruth = getattr(cfg, o)
        sd_e = _error_sd(cfg, o)
        x1 = lat[f"{o}_baseline_full"].to_numpy(float)
        t1 = lat[f"{o}_baseline_true"].to_numpy(float)
        grid = (tr.step, tr.lower, tr.upper)
        # the residual, the follow-up's error and the provider intercepts (normal, independent of
        # the rest) integrated in closed form: the provider intercepts would otherwise dominate
        # the Monte Carlo error
        ex2 = _expected_reported(
            (lat[f"{o}_mean"] - lat[f"{o}_provider_effect"]).to_numpy(float),
            np.sqrt(tr.sigma**2 + sd_e**2 + lat[f"{o}_provider_var"].to_numpy(float)),
            *grid,
        )
        et1 = _expected_reported(t1, sd_e, *grid)
        if o == "who5":
            elevated = x1 <= ELEVATED_CUTOFF[o]
            weight = np.ones(len(x1))
        else:  # measured with a probability that depends on the care type only
            elevated = x1 >= ELEVATED_CUTOFF[o]
            weight = np.array([cfg.p_phq9[c] for c in care])
        parts = {
            f"{o}_change": ex2 - x1,
            f"{o}_change_beyond_rtm": ex2 - et1,
            "rtm": et1 - x1,
        }
        est: dict[str, float] = {}
        se: dict[str, float] = {}
        groups = {c: care == c for c in CARE_TYPES}
        groups["all"] = np.ones(len(care), dtype=bool)
        for g, in_group in groups.items():
            sel = elevated & in_group & (weight > 0)
            if not sel.any():
                continue
            wg = weight[sel] / weight[sel].sum()
            est[f"p_elevated[{g}]"] = float(
                np.average(elevated[in_group], weights=weight[in_group])
            )
            for name, values in parts.items():
                m = float(wg @ values[sel])
                est[f"{name}[{g}]"] = m
                # clustered by the first provider (its slope deviation and caseload are shared)
                dev = np.bincount(cluster[sel], weights=wg * (values[sel] - m))
                se[f"{name}[{g}]"] = float(np.sqrt(dev @ dev))
        continuous = lat[f"{o}_baseline_continuous"].to_numpy(float)
        est["reliability"] = float(getattr(cfg, f"{o}_reliability"))
        est["reliability_reported"] = float(np.corrcoef(continuous, x1)[0, 1] ** 2)
        est["sigma_error_planted"] = sd_e
        out[o] = {"estimands": dict(sorted(est.items())), "mc_se": dict(sorted(se.items()))}
    return out


def _care_share(care: np.ndarray) -> dict[str, float]:
    """Share of each care type present among ``care`` (labels), the pooled slopes' weights."""
    n = len(care)
    return {c: float(np.sum(care == c) / n) for c in CARE_TYPES if np.any(care == c)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


#
# writing
#


def _write_csv(df: pd.DataFrame, path: Path, sort_by: list[str]) -> None:
    df = df.sort_values(sort_by, kind="mergesort").reset_index(drop=True)
    df.to_csv(path, index=False, lineterminator="\n", float_format="%.6f", na_rep="")


def write_simulated_study(study: SimulatedStudy, folder: str | Path) -> Path:
    """Write providers.csv, clients.csv, sessions.csv and truth.json (validated by the contract;
    the same seed gives byte-identical files)."""
    from alliance_bayes.data.contract import (
        validate_study,
    )  # local: keeps this module importable alone

    validate_study(study.providers, study.clients, study.sessions)  # raises on any contract breach
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(study.providers, out / "providers.csv", ["provider_id"])
    _write_csv(study.clients, out / "clients.csv", ["client_id"])
    _write_csv(study.sessions, out / "sessions.csv", ["client_id", "session_index"])
    text = json.dumps(study.truth, sort_keys=True, indent=2, allow_nan=False) + "\n"
    (out / "truth.json").write_text(text, encoding="utf-8", newline="\n")
    return out


#
# checks against the paper (self-contained: numpy/scipy only)
#


def cronbach_alpha(items: np.ndarray) -> float:
    """Cronbach's alpha of the columns of ``items`` (rows = persons)."""
    x = np.asarray(items, dtype=float)
    k = x.shape[1]
    item_var = x.var(axis=0, ddof=1).sum()
    total_var = x.sum(axis=1).var(ddof=1)
    return float(k / (k - 1) * (1.0 - item_var / total_var))


def ols(y: np.ndarray, x: np.ndarray, names: list[str]) -> pd.DataFrame:
    """OLS with an intercept: coefficient, SE, t, two-sided p, 95% CI; ``attrs['r2']``,
    ``attrs['n']``."""
    y = np.asarray(y, dtype=float)
    xm = np.column_stack([np.ones(len(y)), np.asarray(x, dtype=float)])
    beta, *_ = np.linalg.lstsq(xm, y, rcond=None)
    resid = y - xm @ beta
    n_obs, k = xm.shape
    df = n_obs - k
    s2 = resid @ resid / df
    se = np.sqrt(np.diag(s2 * np.linalg.inv(xm.T @ xm)))
    t = beta / se
    p = 2.0 * special.stdtr(df, -np.abs(t))
    q = -special.stdtrit(df, 0.025)
    out = pd.DataFrame(
        {"coef": beta, "se": se, "t": t, "p": p, "lo": beta - q * se, "hi": beta + q * se},
        index=["intercept", *names],
    )
    out.attrs["r2"] = float(1.0 - resid @ resid / ((y - y.mean()) @ (y - y.mean())))
    out.attrs["n"] = int(n_obs)
    return out


#: Paper Table 2: (coefficient, CI low, CI high)
PAPER_TABLE2 = {
    "intercept": (12.60, 1.15, 24.06),
    "age": (0.03, -0.13, 0.19),
    "male": (0.04, -2.91, 2.99),
    "days_in_care": (-0.01, -0.03, 0.01),
    "who5_baseline": (0.66, 0.45, 0.86),
    "alliance": (2.04, 0.09, 3.99),
}


def client_alliance(sessions: pd.DataFrame) -> pd.DataFrame:
    """Client means of the goal and bond items and their mean (composite), by client_id."""
    g = sessions.groupby("client_id")[["wai_goal", "wai_bond"]].mean()
    g = g.rename(columns={"wai_goal": "alliance_goal", "wai_bond": "alliance_bond"})
    g["alliance"] = (g["alliance_goal"] + g["alliance_bond"]) / 2.0
    return g


def paper_frame(
    clients: pd.DataFrame, sessions: pd.DataFrame, who5_cutoff: float = 28
) -> pd.DataFrame:
    """Elevated subgroup with observed follow-up, columns as used by the paper's Table 2."""
    al = client_alliance(sessions)
    df = clients.set_index("client_id").join(al)
    df["male"] = (df["sex"] == "male").astype(float)
    df = df[(df["who5_baseline"] <= who5_cutoff) & df["who5_followup"].notna()]
    return df


def target_table(
    providers: pd.DataFrame,
    clients: pd.DataFrame,
    sessions: pd.DataFrame,
    who5_cutoff: float = 28,
) -> pd.DataFrame:
    """Target-vs-achieved table (hard and soft targets of study_facts.md), contract-form input."""
    rows: list[dict[str, Any]] = []

    def add(kind: str, name: str, target: str, achieved: float | str, ok: bool | None) -> None:
        rows.append(
            {"kind": kind, "target": name, "wanted": target, "achieved": achieved, "ok": ok}
        )

    care = _care_types(providers, sessions)
    counts = care.value_counts()
    age = clients["age"].astype(float)
    female = float((clients["sex"] == "female").mean())
    add("hard", "N clients", "3087", len(clients), len(clients) == 3087)
    for c, want in (("coach", 2003), ("therapist", 555), ("both", 529)):
        got = int(counts.get(c, 0))
        add("hard", f"care type {c}", str(want), got, got == want)
    add("hard", "age mean", "36 ± 1", round(age.mean(), 2), abs(age.mean() - 36) <= 1)
    add("hard", "age SD", "9 ± 1", round(age.std(), 2), abs(age.std() - 9) <= 1)
    add("hard", "female %", "54 ± 2", round(100 * female, 2), abs(100 * female - 54) <= 2)
    al = client_alliance(sessions)
    med = float(al["alliance"].median())
    add("hard", "alliance median", "4.8 ± 0.1", round(med, 3), abs(med - 4.8) <= 0.1 + 1e-9)
    amin, amax = float(al["alliance"].min()), float(al["alliance"].max())
    add("hard", "alliance min", "1", amin, amin == 1.0)
    add("hard", "alliance max", "5", amax, amax == 5.0)
    alpha = cronbach_alpha(al[["alliance_goal", "alliance_bond"]].to_numpy())
    add(
        "hard",
        "Cronbach alpha (goal, bond)",
        "0.72 ± 0.05",
        round(alpha, 3),
        abs(alpha - 0.72) <= 0.05,
    )
    sub = paper_frame(clients, sessions, who5_cutoff)
    add("hard", "elevated with follow-up n", "675 ± 30", len(sub), abs(len(sub) - 675) <= 30)
    names = ["age", "male", "days_in_care", "who5_baseline", "alliance"]
    fit = ols(sub["who5_followup"].to_numpy(float), sub[names].to_numpy(float), names)
    for term, (b, lo, hi) in PAPER_TABLE2.items():
        got = float(fit.loc[term, "coef"])
        add("hard", f"OLS {term}", f"{b} in [{lo}, {hi}]", round(got, 3), lo <= got <= hi)
    b_all = float(fit.loc["alliance", "coef"])
    p_all = float(fit.loc["alliance", "p"])
    add(
        "hard",
        "OLS alliance within 1 of 2.04",
        "abs(b - 2.04) <= 1",
        round(b_all, 3),
        abs(b_all - 2.04) <= 1,
    )
    add("hard", "OLS alliance p", "< .10", round(p_all, 4), p_all < 0.10)
    add("hard", "OLS alliance SE", "(0.99)", round(float(fit.loc["alliance", "se"]), 3), None)
    r2 = fit.attrs["r2"]
    add("hard", "OLS R²", "[.03, .10] (paper .06)", round(r2, 4), 0.03 <= r2 <= 0.10)
    # ---- soft targets
    w = pd.concat([clients["who5_baseline"], clients["who5_followup"].dropna()]).astype(float)
    add(
        "soft",
        "WHO-5 multiples of 4 in 0–100",
        "all",
        bool((w % 4 == 0).all() & w.between(0, 100).all()),
        bool((w % 4 == 0).all() & w.between(0, 100).all()),
    )
    gain = float((sub["who5_followup"] - sub["who5_baseline"]).mean())
    add("soft", "mean gain, elevated (WHO-5 points)", "≈ +10", round(gain, 2), abs(gain - 10) <= 3)
    at5 = float((al["alliance"] == 5).mean())
    add("soft", "share of clients with alliance exactly 5", "large", round(at5, 3), at5 >= 0.2)
    sd_sub = float(sub["alliance"].std())
    add(
        "soft",
        "alliance SD in elevated subgroup",
        "≈ 0.8 (0.6–0.9)",
        round(sd_sub, 3),
        0.6 <= sd_sub <= 0.9,
    )
    add(
        "soft",
        "baseline WHO-5 SD in subgroup",
        "≈ 7",
        round(float(sub["who5_baseline"].std()), 2),
        abs(float(sub["who5_baseline"].std()) - 7) <= 1.5,
    )
    add(
        "soft",
        "days in care SD in subgroup",
        "≈ 60",
        round(float(sub["days_in_care"].std()), 1),
        abs(float(sub["days_in_care"].std()) - 60) <= 15,
    )
    elevated = float((clients["who5_baseline"] <= who5_cutoff).mean())
    add("soft", "share elevated at baseline", "≈ 35%", round(100 * elevated, 1), None)
    miss = float(clients["who5_followup"].isna().mean())
    add("soft", "missing follow-up share", "≈ 35–40%", round(100 * miss, 1), 0.3 <= miss <= 0.45)
    # provider-level variation: SD of provider mean composite alliance and of mean WHO-5 gain
    s = sessions.merge(al["alliance"], left_on="client_id", right_index=True)
    prov_al = s.groupby("provider_id")["alliance"].mean()
    add(
        "soft",
        "SD of provider mean alliance",
        "> 0",
        round(float(prov_al.std()), 3),
        prov_al.std() > 0,
    )
    phq_any = clients["phq9_baseline"].notna()
    by_care = pd.Series(phq_any.to_numpy(), index=clients["client_id"]).groupby(care).mean()
    add(
        "soft",
        "PHQ-9 measured share (therapist/both/coach)",
        "mostly therapist",
        " / ".join(f"{100 * by_care.get(c, 0):.0f}%" for c in ("therapist", "both", "coach")),
        None,
    )
    return pd.DataFrame(rows)


def _care_types(providers: pd.DataFrame, sessions: pd.DataFrame) -> pd.Series:
    t = sessions[["client_id", "provider_id"]].merge(providers, on="provider_id")
    kinds = t.groupby("client_id")["provider_type"].agg(lambda x: frozenset(x))
    return kinds.map(
        lambda k: "both" if len(k) == 2 else ("therapist" if "therapist" in k else "coach")
    ).rename("care_type")


def format_table(table: pd.DataFrame) -> str:
    """Markdown rendering of :func:`target_table`."""
    lines = ["| kind | target | wanted | achieved | ok |", "|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        ok = "" if r.ok is None else ("yes" if r.ok else "**no**")
        lines.append(f"| {r.kind} | {r.target} | {r.wanted} | {r.achieved} | {ok} |")
    return "\n".join(lines)


def hard_targets_met(table: pd.DataFrame) -> bool:
    """True when every checked hard target of :func:`target_table` holds."""
    hard = table[(table["kind"] == "hard") & table["ok"].notna()]
    return bool(hard["ok"].astype(bool).all())


def scan_seeds(
    config: SimulationConfig | None = None, seeds: range = range(200), *, strict: bool = True
) -> list[int]:
    """Seeds (in order) whose realised study meets every hard target, with the truth fixed.

    ``strict`` also asks for a margin inside the tolerances, so the shipped study is not a
    borderline case: alliance coefficient within 0.5 of 2.04, R² in [.04, .09], elevated n
    within 20 of 675.
    This is how :data:`DEFAULT_SEED` was chosen (the first strict pass among ``range(200)``): the
    planted truth makes the targets hold in expectation; the scan only selects a realisation whose
    sampling noise (alliance SE about 1 WHO-5 point) lands inside the paper's tolerances.
    """
    ok = []
    for seed in seeds:
        st = simulate_study(config, seed=seed)
        table = target_table(st.providers, st.clients, st.sessions)
        if not hard_targets_met(table):
            continue
        if strict:
            got = table.set_index("target")["achieved"]
            if not (
                abs(float(got["OLS alliance"]) - 2.04) <= 0.5
                and 0.04 <= float(got["OLS R²"]) <= 0.09
                and abs(float(got["elevated with follow-up n"]) - 675) <= 20
            ):
                continue
        ok.append(seed)
    return ok
