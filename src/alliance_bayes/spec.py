"""Model specifications: ``models/*.toml`` → a validated, immutable :class:`ModelSpec`.

A model variant is data, not code: every choice the model builder makes (which clients, which outcome,
which predictors, which levels of the hierarchy, which priors and likelihood, which sampler) is read
from a TOML file and checked here, so that a typo or an impossible value fails before anything is
compiled. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from functools import wraps
from importlib.resources import files
from pathlib import Path
from typing import Any

from alliance_bayes.data.instruments import BUILT_IN, DECLARED_NAME, declared, instrument_of
from alliance_bayes.data.published import PUBLISHED
from alliance_bayes.errors import HypothesisError, SpecError

#: The shipped specs (``models/`` of the repository, installed as the package ``alliance_bayes.specs``).
MODELS_DIR = Path(str(files("alliance_bayes.specs")))

#: The built-in outcomes: outcome column → (baseline column, range on its own metric, label, units
#: of one point), from the built-in instruments (:data:`alliance_bayes.data.instruments.BUILT_IN`).
#: A study declares others in its ``study.toml`` (``[outcomes.<name>]``); a spec names one as
#: ``outcome = "<name>_followup"`` and fits it with the regression or the change family.
OUTCOMES = {i.followup: (i.baseline, i.range, i.outcome_label, i.units) for i in BUILT_IN.values()}
#: The range whose points the default prior scales of :class:`PriorSpec` are in (WHO-5's 0–100):
#: for a declared outcome the outcome-point scales a spec does not set are multiplied by its range
#: over this one (for PHQ-9 that is 0.27, close to the scales ``depression_change`` states).
REFERENCE_RANGE = 100.0
#: The :class:`ChangeSpec` scales in outcome points, treated as :data:`OUTCOME_POINT_PRIORS` are.
CHANGE_POINT_PRIORS = ("true_mean_sd", "true_change_sd", "true_sd_sd")
#: The :class:`PriorSpec` scales in outcome points (the others are per baseline point or shapes).
OUTCOME_POINT_PRIORS = (
    "intercept_sd", "b_covariate_sd", "b_care_sd", "b_alliance_sd", "mu_b_sd", "sd_b_sd",
    "sd_provider_sd", "sd_provider_slope_sd", "sigma_sd",
)  # fmt: skip
#: The :class:`PriorSpec` scales per point of alliance (outcome points per alliance point), stated
#: on the contract's 1–5 alliance scale; on a study's declared alliance instrument they are scaled
#: to its range (:func:`scale_alliance_priors`).
ALLIANCE_POINT_PRIORS = ("b_alliance_sd", "mu_b_sd", "sd_b_sd", "sd_provider_slope_sd")
#: Outcomes modelled by a family of their own instead of a follow-up regression, with the same
#: facts as :data:`OUTCOMES` (no baseline column): ``alliance_ratings`` is every session rating
#: through a graded-response model (:mod:`alliance_bayes.model.ratings`). Such a spec takes only
#: ``[data]``, ``[sampler]``, ``[hypotheses]`` and ``[predictors] covariates``; its priors are the
#: family's own.
RATING_OUTCOMES = {
    "alliance_ratings": ("", (1.0, 5.0), "Session alliance rating (1–5)", "rating points"),
}
_OUTCOME_FACTS = {**OUTCOMES, **RATING_OUTCOMES}
#: The built-in client covariates. A study declares others in its ``study.toml``
#: (``[covariates.<name>]``, :mod:`alliance_bayes.data.covariates`); a regression spec may name
#: them too, and its design checks that the study declares them.
COVARIATES = ("age", "male", "days_in_care")
#: The ratings family's built-in client covariates (:mod:`alliance_bayes.model.ratings.design`),
#: used when a ratings spec names none: days in care is not among them, since it is counted to the
#: end of care, after most of the ratings it would explain.
RATINGS_COVARIATES = ("age", "male", "who5_baseline")
SAMPLERS = ("nutpie", "pymc")
LIKELIHOODS = ("normal", "student_t", "censored_normal")
#: How a Normal likelihood with provider effects is computed: ``"auto"`` (collapsed for a Normal
#: likelihood, per client otherwise), ``"collapsed"`` (provider effects integrated out from
#: sufficient statistics, :mod:`alliance_bayes.model.regression.collapsed`) or ``"per_client"``.
LIKELIHOOD_FORMS = ("auto", "collapsed", "per_client")


@dataclass(frozen=True)
class DataSpec:
    """Which clients enter the model.

    ``sample = "elevated"`` keeps clients flagged as elevated at baseline by ``elevated_by``
    (``who5``: WHO-5 <= ``who5_cutoff``; ``phq9``: PHQ-9 >= ``phq9_cutoff``; ``phq9_else_who5``:
    the PHQ-9 rule where a PHQ-9 baseline exists, else the WHO-5 screen; or an outcome the study
    declares with a ``cutoff``, e.g. ``gad7``: baseline at or beyond it on the worse side;
    :mod:`alliance_bayes.model.elevated`).

    Missing follow-up: with ``followup_imputations = 0`` (the default) only clients with an observed
    follow-up enter the model (complete cases, missing at random given the predictors). With
    ``followup_imputations = M > 0`` the missing follow-ups are imputed from the complete-case
    posterior, shifted by ``followup_delta`` outcome points plus ``followup_delta_alliance``
    outcome points per alliance point of the client's composite alliance above the mean
    (δ_i = δ₀ + δ₁ (alliance_i − mean); a delta-adjusted pattern-mixture
    model: missing not at random when δ ≠ 0), and the model is refitted to each of the ``M``
    completed datasets; the draws of the refits are pooled (see :mod:`alliance_bayes.imputation`).

    ``followup_delta_alliance`` is stated per point of the contract's 1–5 alliance scale, as the
    prior scales per alliance point are: on a study's declared alliance instrument the shift
    applied per point of its scale is δ₁ times 4 / (high − low) (:func:`scale_alliance_point`),
    so that a stated δ₁ moves a client at one end of the scale against one at the other by the
    same outcome points whatever the instrument. ``run.json`` records both (``imputation``).
    """

    sample: str = "all"
    elevated_by: str = "who5"
    who5_cutoff: float = 28.0
    phq9_cutoff: float = 10.0
    followup_imputations: int = 0
    followup_delta: float = 0.0
    followup_delta_alliance: float = 0.0


@dataclass(frozen=True)
class PredictorSpec:
    """Predictors: covariates and how alliance enters.

    ``alliance = "composite"`` uses the client's mean of goal and bond (the paper's score);
    ``alliance = "subscales"`` uses each subscale split into its within- and between-provider parts.
    ``alliance = "latent"`` replaces the averaged scores by latent ones from a session-level
    graded-response measurement model (see :mod:`alliance_bayes.model.latent.measurement` and
    :class:`MeasurementSpec`).
    ``alliance_sessions = k > 0`` averages each client's ratings over their first ``k`` sessions
    only (early alliance, rated before most of the symptom change); 0 (the default) uses every
    session. The within/between split uses the same sessions as the score (its weights and the
    providers' caseload means alike); the provider-effect membership weights count every session.
    ``covariates`` are built in (:data:`COVARIATES`) or declared by the study (regression,
    ratings and latent families); a declared name is checked against the study when the design is
    built. A ratings spec that leaves them at this default takes its family's built-in ones,
    :data:`RATINGS_COVARIATES`; one that names them takes those (``age``, ``male``,
    ``who5_baseline`` and declared names).
    """

    covariates: tuple[str, ...] = COVARIATES
    alliance: str = "subscales"
    alliance_sessions: int = 0


@dataclass(frozen=True)
class HierarchySpec:
    """Levels of the hierarchy.

    ``care_type_pooling``: subscale slopes partially pooled across therapist / coach / both.
    ``care_type_intercepts``: the expected outcome at equal alliance and covariates may differ
    between care types (contrasts against coach-only care). Care type is a confounder of every
    alliance slope, so every hierarchical model has them unless this is switched off.
    ``provider_intercepts``: provider intercepts with one SD per provider type (multiple membership).
    ``provider_slopes``: within-provider subscale slopes vary across providers, correlated with the
    intercepts (LKJ prior unless ``provider_correlation = false``, then independent); requires
    ``provider_intercepts``.
    ``care_slope_sd``: the spread of the care-type slopes around their hyper-mean ``mu_b`` is
    ``"fixed"`` at ``sd_b_sd`` (default) or ``"estimated"`` with a Half-Normal(``sd_b_sd``)
    prior (see :mod:`alliance_bayes.model.regression.graph` for why fixed is the default).
    ``sd_prior``: prior of the provider-effect SDs, ``"gamma"`` (Gamma(2, 2/scale), mean
    ``scale``; default) or ``"halfnormal"`` (Half-Normal(scale)); the scales are
    ``sd_provider_sd`` and ``sd_provider_slope_sd``.
    ``pooled_weights``: how the reported pooled slopes (``b_goal_within`` …) average the care-type
    slopes: ``"care_mix"`` (default) weights each care type by its share of the clients in the
    likelihood, the slope of the study's own client mix; ``"equal"`` weights the care types present
    equally. Either is a function of the care-type slopes and so learns from the data; the
    hyper-mean ``mu_b`` of a fixed-spread hierarchy does not (its posterior SD cannot fall below
    (3/τ² + 1/mu_b_sd²)^(-1/2) at any sample size) and is reported apart, as
    ``mu_b_<subscale>_<level>``.
    ``between``: what the between-provider part of each subscale is: ``"caseload_mean"``
    (default) the membership-weighted caseload mean of the client scores, a fixed predictor; or
    ``"latent_mean"`` each provider's mean alliance as a parameter with its clients' scores as
    indicators, so that the caseload mean's sampling error is modelled (Lüdtke et al. 2008,
    doi:10.1037/a0012869; see :mod:`alliance_bayes.model.regression.graph`). Subscale models only.
    """

    care_type_pooling: bool = True
    care_type_intercepts: bool = True
    provider_intercepts: bool = True
    provider_slopes: bool = True
    provider_correlation: bool = True
    care_slope_sd: str = "fixed"
    sd_prior: str = "gamma"
    pooled_weights: str = "care_mix"
    between: str = "caseload_mean"


@dataclass(frozen=True)
class PriorSpec:
    """Prior scales, all on the outcome's own metric (points) and the 1–5 alliance scale.

    On a study that declares another alliance instrument (``[alliance]`` in its ``study.toml``,
    :mod:`alliance_bayes.data.alliance`) the scales per alliance point are those stated here
    multiplied by 4 over the width of its range (:func:`scale_alliance_priors`).

    Every coefficient has a Normal(0, sd) prior and every SD a Half-Normal(sd) prior, except
    ``lkj_eta`` (LKJ shape) and ``nu_rate`` (Exponential rate of ``nu - 1`` for Student-t).
    ``intercept_sd`` is around the sample mean of the outcome (the expected follow-up of an
    average client); ``b_baseline_sd`` is per baseline point; ``b_covariate_sd`` is per SD of the
    covariate (covariates enter standardised); ``b_care_sd`` is a care-type contrast in outcome
    points; ``mu_b_sd``, ``b_alliance_sd`` and ``sd_provider_slope_sd`` are per alliance point.
    ``sd_b_sd`` is the spread of the care-type slopes around ``mu_b`` (fixed, or the scale
    of its prior): three care types cannot estimate a variance alone (Gelman 2006,
    doi:10.1214/06-BA117A).
    """

    intercept_sd: float = 15.0
    b_baseline_sd: float = 1.0
    b_covariate_sd: float = 5.0
    b_care_sd: float = 10.0
    b_alliance_sd: float = 10.0
    mu_b_sd: float = 10.0
    sd_b_sd: float = 2.0
    sd_provider_sd: float = 5.0
    sd_provider_slope_sd: float = 3.0
    lkj_eta: float = 2.0
    sigma_sd: float = 20.0
    nu_rate: float = 1.0 / 29.0


def scale_alliance_point(value: float, factor: float) -> float:
    """A number a spec states per point of the 1–5 alliance scale, on a declared scale.

    Besides the prior scales (:func:`scale_alliance_priors`) a spec states two numbers in
    outcome points per alliance point: the ROPE half-width of a slope (``[hypotheses] rope``,
    :attr:`ModelSpec.rope`) and the alliance-dependent shift of imputed follow-ups
    (``[data] followup_delta_alliance``). Both are read as the priors are, per point of the
    contract's 1–5 scale, four points wide, whether stated or default: a spec is written before
    any study is chosen, and one number in it has one meaning. On a declared scale from ``low``
    to ``high`` the same outcome change across the whole scale is ``value * factor`` per point
    of it (``factor`` = 4 / (high − low),
    :attr:`~alliance_bayes.data.alliance.AllianceInstrument.prior_factor`): a ROPE of ±2 WHO-5
    points per point of the 1–5 scale is ±0.8 per point of the SRS's 0–10, a negligible change
    of 8 WHO-5 points from one end of either scale to the other.
    """
    return float(value) * float(factor)


def scale_alliance_priors(priors: PriorSpec, factor: float) -> PriorSpec:
    """The prior scales on a declared alliance scale: those per alliance point times ``factor``.

    The scales per alliance point (:data:`ALLIANCE_POINT_PRIORS`: ``b_alliance_sd``,
    ``mu_b_sd``, ``sd_b_sd``, ``sd_provider_slope_sd``), stated or default, are stated per point
    of the contract's 1–5 scale, four points wide. On a declared alliance scale from ``low`` to
    ``high`` a slope is per point of that scale, and the same outcome change across the whole
    scale is a slope 4 / (high − low) times as large per point: ``factor``
    is that ratio (:attr:`~alliance_bayes.data.alliance.AllianceInstrument.prior_factor`), 0.4 for
    the SRS's 0–10, 2/3 for the WAI-S's 1–7, 1 for the WAI-SR's 1–5. The prior then puts the same
    mass on an outcome change between the two ends of the scale whatever the instrument; every
    other scale (intercept, covariates, care types, provider intercepts, residual) is untouched.
    """
    if factor == 1.0:
        return priors
    return replace(
        priors, **{name: getattr(priors, name) * factor for name in ALLIANCE_POINT_PRIORS}
    )


@dataclass(frozen=True)
class SamplerSpec:
    """Sampler settings recorded with every run; the CLI may override them."""

    name: str = "nutpie"
    backend: str = "numba"
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 20221013
    target_accept: float = 0.9
    prior_draws: int = 500


@dataclass(frozen=True)
class MeasurementSpec:
    """The ``[measurement]`` table of a latent-alliance model (``alliance = "latent"`` only).

    ``outcomes``: follow-up outcomes modelled jointly (the first must be the spec's ``outcome``;
    at most two, with correlated residuals): ``who5_followup``, ``phq9_followup``, or
    ``<name>_followup`` for an instrument the study declares (checked when the design is built).
    Prior scales in ``[priors]`` are on the first outcome's metric; for another outcome they are
    multiplied by the ratio of the outcome ranges (27/100 for PHQ-9 against WHO-5).
    ``threshold_sd``: prior scale of the ordered item cut-points on the logit scale (the highest
    is Normal, the gaps below it Half-Normal).
    ``discrimination_sd``: log-normal SD of the item discriminations (median 1).
    ``sd_provider_alliance_sd``: prior mean (Gamma(2), the default ``[hierarchy] sd_prior``) or
    Half-Normal scale of the SD of the provider part of the latent
    alliance, relative to the client part (whose SD is 1). ``provider_type_alliance_sd``: Normal
    scale of the therapist-minus-coach difference in mean latent alliance (client SDs).
    ``phq9_sample``: which clients enter the PHQ-9 outcome's likelihood: ``"elevated"`` (the
    default) those elevated at baseline under ``[data]``'s rule and cut-offs, the sample of
    ``depression_change``; ``"all"`` every client with both PHQ-9 scores. A declared second
    outcome is taken the same way, elevated by its declared cut-off. Every client still informs
    the measurement part and the first outcome.
    """

    outcomes: tuple[str, ...] = ("who5_followup", "phq9_followup")
    threshold_sd: float = 3.0
    discrimination_sd: float = 1.0
    sd_provider_alliance_sd: float = 0.5
    provider_type_alliance_sd: float = 1.0
    phq9_sample: str = "elevated"


@dataclass(frozen=True)
class ChangeSpec:
    """The ``[change]`` table: a joint model of baseline and follow-up with measurement error.

    Its presence selects the change family (:mod:`alliance_bayes.model.change`): every client's
    observed baseline and follow-up are a true score plus error, X_t = T_t + e_t, with error
    variance (1 − ρ)·Var(X₁); ``reliability_mean`` and ``reliability_sd`` set the Beta prior of the
    test–retest reliability ρ (``reliability_source`` cites where they come from). Clients are
    elevated at baseline by the outcome's own rule: WHO-5 <= ``[data] who5_cutoff``, PHQ-9 >=
    ``[data] phq9_cutoff``. Prior scales, in outcome points: ``true_mean_sd`` of each care type's
    mean true baseline around the sample mean, ``true_change_sd`` of its mean true change,
    ``true_sd_sd`` (Half-Normal) of the client SD of the true scores; the provider-effect SDs take
    ``[priors] sd_provider_sd`` (Half-Normal).

    For an outcome a study declares (``[outcomes.<name>]``) the instrument decides instead: the
    elevated are those at or past its ``cutoff`` (``>=`` where lower is better, ``<=`` where
    higher is), improvement is its ``better`` direction, and a declared ``reliability`` centres
    the Beta prior (its SD ``reliability_sd``, the default where the spec states none for this
    outcome); without one the spec's ``reliability_mean``, ``reliability_sd`` and
    ``reliability_source``, which it must then state for this outcome. The scales in outcome
    points that the spec does not state for this outcome are the defaults times the declared
    range over :data:`REFERENCE_RANGE` (:attr:`ModelSpec.change_priors`).
    """

    reliability_mean: float = 0.81
    reliability_sd: float = 0.05
    reliability_source: str = ""
    true_mean_sd: float = 20.0
    true_change_sd: float = 15.0
    true_sd_sd: float = 25.0


_OPERATORS = (">", "<", "=")
#: Comparison operators as written, and the one each decides: for continuous draws P(δ ≥ 0) and
#: P(δ > 0) are the same number, and ``==`` is ``=``.
_COMPARISONS = {">=": ">", "<=": "<", "==": "=", ">": ">", "<": "<", "=": "="}
_COMPARISON = re.compile(r"(>=|<=|==|>|<|=)")
#: A side's tokens: a number, an estimand name (a letter, then letters, digits, ``_ . : [ ] -``), or
#: ``+ - *``. A ``-`` right after a name character is part of the name, so a binary minus needs a
#: space before it.
_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z][A-Za-z0-9_.:\[\]-]*)|(?P<op>[-+*]))"
)


@dataclass(frozen=True)
class Hypothesis:
    r"""A parsed hypothesis :math:`\sum_j c_j \theta_j + c_0 \;\text{op}\; 0`.

    ``terms`` are (coefficient, estimand name) pairs, ``constant`` the number :math:`c_0`, both
    after moving the right-hand side to the left; ``operator`` is ``>``, ``<`` or ``=``.
    """

    text: str
    terms: tuple[tuple[float, str], ...]
    constant: float
    operator: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.terms)


def _tokens(side: str, text: str) -> list[str]:
    """Split one side of a comparison into numbers, names and ``+ - *`` (see :data:`_TOKEN`)."""
    tokens, at = [], 0
    side = side.rstrip()
    while at < len(side):
        m = _TOKEN.match(side, at)
        if m is None or m.end() == at:
            raise HypothesisError(f"{text!r}: cannot read {side[at:].strip()!r}")
        token = m["number"] or m["name"] or m["op"]
        if m["name"] and token.endswith("-"):
            raise HypothesisError(
                f"{text!r}: {token!r} ends in '-'; write a difference with a space before the "
                f"minus ('a - b'); 'a-b' is one estimand name"
            )
        tokens.append(token)
        at = m.end()
    return tokens


def _side(tokens: list[str], text: str, sign: float) -> tuple[list[tuple[float, str]], float]:
    terms: list[tuple[float, str]] = []
    constant = 0.0
    expect_term, next_sign = True, 1.0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not expect_term:
            if tok not in ("+", "-"):
                raise HypothesisError(f"{text!r}: expected + or - before {tok!r}")
            next_sign = 1.0 if tok == "+" else -1.0
            expect_term, i = True, i + 1
            continue
        if tok == "-" and i + 1 < len(tokens) and tokens[i + 1] not in ("+", "-", "*"):
            next_sign, i = -next_sign, i + 1  # a leading minus: "-b_x > 0", "b_x > -2"
            continue
        coef = 1.0
        try:
            number = float(tok)
        except ValueError:
            number = None
        if number is not None and tokens[i + 1 : i + 2] == ["*"]:
            if i + 2 >= len(tokens):
                raise HypothesisError(f"{text!r}: an estimand name must follow '*'")
            coef, tok, i = number, tokens[i + 2], i + 2
            number = None
        if number is not None:
            constant += sign * next_sign * number
        else:
            if tok in ("+", "-", "*", *_OPERATORS) or not tok[:1].isalpha():
                raise HypothesisError(
                    f"{text!r}: expected an estimand name or a number, got {tok!r}"
                )
            terms.append((sign * next_sign * coef, tok))
        expect_term, i = False, i + 1
    if expect_term:
        raise HypothesisError(f"{text!r}: a side of the comparison is empty or ends in + or -")
    return terms, constant


def parse_hypothesis(text: str) -> Hypothesis:
    """Read ``"b_goal_within > b_bond_within"``: sums and differences of estimand names and
    numbers (``2 * b_x``), compared by one of ``>``, ``<``, ``=`` (also ``>=``, ``<=``, ``==``).

    Comparison operators, ``+`` and ``*`` need no spaces (``b_goal_within>0``,
    ``b_goal_within>=b_bond_within``). Estimand names contain ``-`` and brackets
    (``b_goal_within-between``, ``b_care[therapist-coach]``), so a ``-`` right after a name
    character belongs to the name: a difference needs a space before its minus
    (``b_goal_within - b_bond_within``). ``>=`` decides the same probability as ``>``
    (continuous draws), ``==`` is ``=``. The hypothesis text is normalised to single spaces
    around every operator, with the operator as written.

    Raises
    ------
    HypothesisError
        No single comparison operator, an empty side, or a misplaced token.
    """
    parts = _COMPARISON.split(str(text))
    if len(parts) != 3:
        raise HypothesisError(
            f"{text!r}: expected one comparison ({', '.join(_COMPARISONS)}), "
            f"e.g. 'b_goal_within > b_bond_within'"
        )
    left_text, written, right_text = parts
    left_tokens, right_tokens = _tokens(left_text, text), _tokens(right_text, text)
    left, c_left = _side(left_tokens, text, 1.0)
    right, c_right = _side(right_tokens, text, -1.0)
    terms: dict[str, float] = {}
    for coef, name in (*left, *right):
        terms[name] = terms.get(name, 0.0) + coef
    kept = tuple((c, n) for n, c in terms.items() if c != 0.0)
    if not kept:
        raise HypothesisError(f"{text!r}: no estimand is left once both sides are compared")
    normal = " ".join([*left_tokens, written, *right_tokens])
    return Hypothesis(normal, kept, c_left + c_right, _COMPARISONS[written])


#: Default half-width of the region of practical equivalence, per outcome: a tenth of the typical
#: follow-up SD (WHO-5 about 20 points, PHQ-9 about 5), the "negligible" standardised effect of
#: Kruschke (2018), doi:10.1177/2515245918771304. For a slope the same number is per point of the
#: 1–5 alliance scale, put on a declared one by :func:`scale_alliance_point`.
ROPE_DEFAULTS = {"who5_followup": 2.0, "phq9_followup": 0.5, "alliance_ratings": 0.1}
#: A declared outcome's default ROPE half-width as a share of its range: WHO-5's 2 points of 100.
ROPE_SHARE_OF_RANGE = 0.02


@dataclass(frozen=True)
class HypothesesSpec:
    """The ``[hypotheses]`` table: statements about estimands that the report decides.

    ``tests``: expressions such as ``"b_goal_within > b_bond_within"``,
    ``"b_goal_within-between = 0"`` or ``"b_care[both-coach] < -2"``: sums and differences of
    estimand names and numbers (an optional ``number *`` before a name), separated by spaces,
    compared with ``>``, ``<`` or ``=`` (see :mod:`alliance_bayes.report.hypotheses`).
    ``rope``: half-width of the region of practical equivalence in outcome points (for a slope,
    outcome points per alliance point); 0 takes :data:`ROPE_DEFAULTS` of the outcome. For a
    slope it is stated per point of the contract's 1–5 alliance scale, as the prior scales are:
    on a study's declared alliance instrument a slope's ROPE is ``rope`` times 4 / (high − low)
    (:func:`scale_alliance_point`), stated or default alike; the hypotheses table gives the
    half-width each statement used (``rope``) and its units (``rope_units``).
    """

    rope: float = 0.0
    tests: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A validated model specification (one TOML file in ``models/``).

    ``outcome`` is a built-in outcome (:data:`OUTCOMES`, :data:`RATING_OUTCOMES`) or one a study
    declares (``<name>_followup``): its range, label and units are then the declaration's, known
    once a study declaring it is loaded (:mod:`alliance_bayes.data.instruments`). ``priors`` are
    the scales as the model uses them: for a declared outcome the outcome-point scales that the
    spec does not state (``stated_priors`` holds what it states, ``priors_stated`` which) are the
    defaults times its range over :data:`REFERENCE_RANGE`; :attr:`change_priors` does the same for
    the ``[change]`` table (``change_stated``). A value in outcome points counts as stated only
    where the spec, or one it extends, states it for the spec's own outcome: a variant that
    extends a WHO-5 spec to model another outcome does not inherit scales in WHO-5 points.
    """

    name: str
    description: str
    outcome: str
    data: DataSpec = field(default_factory=DataSpec)
    predictors: PredictorSpec = field(default_factory=PredictorSpec)
    hierarchy: HierarchySpec = field(default_factory=HierarchySpec)
    likelihood: str = "normal"
    likelihood_form: str = "auto"
    stated_priors: PriorSpec = field(default_factory=PriorSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    measurement: MeasurementSpec | None = None  # only for alliance = "latent"
    change: ChangeSpec | None = None  # selects the change family
    hypotheses: HypothesesSpec = field(default_factory=HypothesesSpec)
    published_table: str = ""
    source: str = ""
    priors_stated: frozenset[str] = frozenset()
    change_stated: frozenset[str] = frozenset()

    @property
    def built_in_covariates(self) -> tuple[str, ...]:
        """The covariates built into this spec's family: :data:`RATINGS_COVARIATES` for a ratings
        spec, else :data:`COVARIATES`."""
        return RATINGS_COVARIATES if self.outcome in RATING_OUTCOMES else COVARIATES

    @property
    def model_covariates(self) -> tuple[str, ...]:
        """The client covariates the model takes: ``[predictors] covariates``, except for a ratings
        spec that leaves them at :class:`PredictorSpec`'s default (the regression family's), which
        takes :data:`RATINGS_COVARIATES`."""
        named = self.predictors.covariates
        if self.outcome in RATING_OUTCOMES and named == PredictorSpec().covariates:
            return RATINGS_COVARIATES
        return named

    @property
    def declared_covariates(self) -> tuple[str, ...]:
        """The covariates a study declares (not built in), checked when the design is built."""
        built_in = self.built_in_covariates
        return tuple(c for c in self.model_covariates if c not in built_in)

    @property
    def declared_outcome(self) -> bool:
        """Whether the outcome is one a study declares (not built in)."""
        return self.outcome not in _OUTCOME_FACTS

    def _facts(self) -> tuple[str, tuple[float, float], str, str]:
        if self.outcome in _OUTCOME_FACTS:
            return _OUTCOME_FACTS[self.outcome]
        instrument = instrument_of(self.outcome)
        if instrument is None:
            name = self.outcome.removesuffix("_followup")
            raise SpecError(
                f"{self.source or self.name}: outcome {self.outcome!r} is declared by no study "
                f"loaded; declare [outcomes.{name}] in the study's study.toml (known outcomes: "
                f"{known_outcomes()})"
            )
        return (instrument.baseline, instrument.range, instrument.outcome_label, instrument.units)

    @property
    def priors(self) -> PriorSpec:
        """The prior scales as the model uses them (see the class docstring)."""
        if not self.declared_outcome:
            return self.stated_priors
        low, high = self.outcome_range
        factor = (high - low) / REFERENCE_RANGE
        default = PriorSpec()
        scaled = {
            name: getattr(default, name) * factor
            for name in OUTCOME_POINT_PRIORS
            if name not in self.priors_stated
        }
        return replace(self.stated_priors, **scaled)

    @property
    def change_priors(self) -> ChangeSpec | None:
        """The ``[change]`` table as the model uses it (see the class docstring).

        For a declared outcome the scales of :data:`CHANGE_POINT_PRIORS` that the spec does not
        state for it are the :class:`ChangeSpec` defaults (on WHO-5's 0–100) times the declared
        range over :data:`REFERENCE_RANGE`; for a built-in outcome the table as stated.
        """
        c = self.change
        if c is None or not self.declared_outcome:
            return c
        unstated = [name for name in CHANGE_POINT_PRIORS if name not in self.change_stated]
        if not unstated:  # as run.json records them: no need of the declaration's range
            return c
        low, high = self.outcome_range
        factor = (high - low) / REFERENCE_RANGE
        default = ChangeSpec()
        return replace(c, **{name: getattr(default, name) * factor for name in unstated})

    @property
    def rope(self) -> float:
        """Half-width of the region of practical equivalence, in outcome points (for a slope, per
        point of the 1–5 alliance scale; :func:`scale_alliance_point` puts it on a declared
        one)."""
        if self.hypotheses.rope:
            return self.hypotheses.rope
        if self.declared_outcome:
            low, high = self.outcome_range
            return ROPE_SHARE_OF_RANGE * (high - low)
        return ROPE_DEFAULTS[self.outcome]

    @property
    def baseline(self) -> str:
        return self._facts()[0]

    @property
    def outcome_range(self) -> tuple[float, float]:
        return self._facts()[1]

    @property
    def outcome_label(self) -> str:
        return self._facts()[2]

    @property
    def outcome_units(self) -> str:
        return self._facts()[3]

    @property
    def effect_units(self) -> str:
        if self.outcome in RATING_OUTCOMES:
            return f"{RATING_OUTCOMES[self.outcome][3]} (1–5 scale)"
        return f"{self.outcome_units} per 1 point of alliance (1–5 scale)"

    def effect_units_on(self, alliance_scale: str | None) -> str:
        """:attr:`effect_units` on a study's declared alliance scale (``"WAI-S 1–7"``): the
        slopes' units, ``"WHO-5 points per 1 point of the WAI-S 1–7 scale"``; with ``None`` (the
        contract's 1–5 items) :attr:`effect_units` as it is. For the ratings family (alliance the
        outcome) the units of the ratings themselves, on the declared scale."""
        if alliance_scale is None:
            return self.effect_units
        if self.outcome in RATING_OUTCOMES:
            return f"{RATING_OUTCOMES[self.outcome][3]} ({alliance_scale} scale)"
        return f"{self.outcome_units} per 1 point of the {alliance_scale} scale"

    @property
    def hierarchical(self) -> bool:
        h = self.hierarchy
        return (
            h.care_type_pooling
            or h.care_type_intercepts
            or h.provider_intercepts
            or h.provider_slopes
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as run (plain data, for ``run.json``)."""
        d = asdict(self)
        d.pop("source")
        d.pop("priors_stated")
        d.pop("change_stated")
        d.pop("stated_priors")
        try:
            d["priors"] = asdict(self.priors)  # as run: a declared outcome's scaled scales
        except SpecError:  # a declared outcome before its study is loaded: as stated
            d["priors"] = asdict(self.stated_priors)
        if d["measurement"] is None:  # keeps run.json of the other models as it was
            d.pop("measurement")
        if d["change"] is None:
            d.pop("change")
        else:
            try:
                d["change"] = asdict(self.change_priors)  # as run: a declared outcome's scales
            except SpecError:  # a declared outcome before its study is loaded: as stated
                pass
            if self.declared_outcome:
                # A reliability not stated for this outcome was not used (the declaration's, or
                # none): left out, so that a spec rebuilt from run.json chooses as this one did.
                for key in ("reliability_mean", "reliability_sd", "reliability_source"):
                    if key not in self.change_stated:
                        d["change"].pop(key)
        if not d["published_table"]:
            d.pop("published_table")
        return d


_SECTIONS = {
    "data": DataSpec,
    "predictors": PredictorSpec,
    "hierarchy": HierarchySpec,
    "priors": PriorSpec,
    "sampler": SamplerSpec,
    "hypotheses": HypothesesSpec,
}
_TOP_KEYS = {
    "name", "description", "outcome", "likelihood", "likelihood_form", "measurement", "extends",
    "published_table", "change", *_SECTIONS,
}  # fmt: skip


def _section(where: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a table, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    values = {}
    defaults = cls()
    for key, value in raw.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise SpecError(
                f"{where}.{key}: expected {type(default).__name__} like {default!r}, got {value!r}"
            )
        values[key] = value
    return cls(**values)


#: The problems found so far while :func:`_validate` runs (``None`` outside it: raise at once).
_PROBLEMS: ContextVar[list[str] | None] = ContextVar("spec_problems", default=None)


def _check(where: str, ok: bool, message: str) -> None:
    if ok:
        return
    found = _PROBLEMS.get()
    if found is None:
        raise SpecError(f"{where}: {message}")
    found.append(f"{where}: {message}")


def _collected(validate: Callable[[ModelSpec, str], None]) -> Callable[[ModelSpec, str], None]:
    """Run every check of ``validate`` and raise one :class:`SpecError` listing all that fail."""

    @wraps(validate)
    def run(spec: ModelSpec, src: str) -> None:
        found: list[str] = []
        token = _PROBLEMS.set(found)
        try:
            validate(spec, src)
        except SpecError as err:  # a check that cannot go on: reported with those before it
            found.append(str(err))
        finally:
            _PROBLEMS.reset(token)
        if len(found) == 1:
            raise SpecError(found[0])
        if found:
            listed = "\n".join(f"  {problem}" for problem in found)
            raise SpecError(f"{src}: {len(found)} problems, all listed:\n{listed}")

    return run


def parse_spec(text: str, source: str = "<string>") -> ModelSpec:
    """Parse and validate a TOML model specification.

    Parameters
    ----------
    text : str
        TOML text.
    source : str
        Where the text came from, used in error messages.

    Raises
    ------
    SpecError
        On a TOML syntax error, an unknown key, a value of the wrong type, or an impossible value.

    Notes
    -----
    ``extends = "<spec name or path>"`` starts from another spec: its tables are merged key by key
    and top-level values replaced, so that a variant states only what differs.
    """
    raw, stated = _combine(_read_layers(text, source, ()))
    _check_ratings_covariates(raw, source)
    return _from_raw(raw, source, stated)


def _from_raw(
    raw: dict[str, Any], source: str, stated: dict[str, frozenset[str]] | None = None
) -> ModelSpec:
    """A validated spec from its merged tables; ``stated`` (:func:`_combine`) names the keys of
    ``[priors]`` and ``[change]`` stated for the spec's own outcome (default: every key given)."""
    unknown = sorted(set(raw) - _TOP_KEYS)
    _check(source, not unknown, f"unknown key(s) {unknown}; expected some of {sorted(_TOP_KEYS)}")
    for key in ("name", "outcome"):
        _check(source, isinstance(raw.get(key), str), f"'{key}' is required and must be a string")
    sections = {k: _section(f"{source} [{k}]", cls, raw.get(k, {})) for k, cls in _SECTIONS.items()}
    latent = sections["predictors"].alliance == "latent"
    _check(
        source,
        latent or "measurement" not in raw,
        "a [measurement] table needs alliance = 'latent' in [predictors]",
    )
    if latent:
        sections["measurement"] = _section(
            f"{source} [measurement]", MeasurementSpec, raw.get("measurement", {})
        )
    if "change" in raw:
        sections["change"] = _section(f"{source} [change]", ChangeSpec, raw["change"])
    sections["stated_priors"] = sections.pop("priors")
    if "change" in raw and "covariates" not in (raw.get("predictors") or {}):
        # The change family adjusts for none unless named: the regression family's default
        # names days_in_care, which is measured after the baseline it would shift.
        sections["predictors"] = replace(sections["predictors"], covariates=())
    given = {t: frozenset(raw.get(t, {})) for t in _OUTCOME_POINT_TABLES}
    stated = {t: given[t] & (stated or given)[t] for t in _OUTCOME_POINT_TABLES}
    if "rope" in given["hypotheses"] and "rope" not in stated["hypotheses"]:
        # A ROPE inherited from a spec of another outcome is in that outcome's points (2 WHO-5
        # points would be a tenth of GAD-7's range): the spec's own outcome's default instead.
        sections["hypotheses"] = replace(sections["hypotheses"], rope=HypothesesSpec().rope)
    spec = ModelSpec(
        name=raw["name"],
        description=str(raw.get("description", "")),
        outcome=raw["outcome"],
        likelihood=str(raw.get("likelihood", "normal")),
        likelihood_form=str(raw.get("likelihood_form", "auto")),
        published_table=str(raw.get("published_table", "")),
        source=source,
        priors_stated=stated["priors"],
        change_stated=stated["change"],
        **sections,
    )
    _validate(spec, source)
    return spec


#: The tables whose values are partly in outcome points: what a spec states in them is tracked
#: per outcome (:func:`_combine`); ``[hypotheses]`` for its ``rope``.
_OUTCOME_POINT_TABLES = ("priors", "change", "hypotheses")


def _read_layers(text: str, source: str, chain: tuple[str, ...]) -> list[dict[str, Any]]:
    """TOML text and the specs it ``extends`` (recursively, cycles refused), the furthest base
    first, each as its own dict without ``extends``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{source}: not valid TOML: {err}") from err
    base_name = raw.pop("extends", None)
    if base_name is None:
        return [raw]
    _check(source, isinstance(base_name, str), "'extends' must be a spec name or path")
    path = _spec_path(base_name)
    if path.suffix == ".toml" and not path.is_absolute() and Path(source).is_file():
        path = Path(source).parent / path  # a relative path is relative to the extending file
    _check(source, path.is_file(), f"extends {base_name!r}: no such spec ({path})")
    _check(source, str(path) not in chain, f"extends {base_name!r}: a cycle of extends")
    base = _read_layers(path.read_text(encoding="utf-8"), str(path), (*chain, str(path)))
    return [*base, raw]


def _combine(layers: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
    """The layers merged in order (:func:`_merge`), and per table of :data:`_OUTCOME_POINT_TABLES`
    the keys that a layer states while the spec, as far as it is merged, models the outcome of
    the whole: values in outcome points inherited from a spec of another outcome are in that
    outcome's points, so they do not count as stated for this one."""
    raw: dict[str, Any] = {}
    outcomes = []
    for layer in layers:
        raw = _merge(raw, layer)
        outcomes.append(raw.get("outcome"))
    stated = {
        table: frozenset(
            key
            for layer, outcome in zip(layers, outcomes, strict=True)
            if outcome == raw.get("outcome") and isinstance(layer.get(table), dict)
            for key in layer[table]
        )
        for table in _OUTCOME_POINT_TABLES
    }
    return raw, stated


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes``: tables merged key by key, other values replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _spec_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    return path if path.suffix == ".toml" else MODELS_DIR / f"{name_or_path}.toml"


def _declared_form(outcome: str) -> bool:
    """Whether ``outcome`` is written as a declared instrument's follow-up, ``<name>_followup``."""
    return outcome.endswith("_followup") and bool(
        DECLARED_NAME.fullmatch(outcome.removesuffix("_followup"))
    )


@_collected
def _validate(spec: ModelSpec, src: str) -> None:
    _check(src, spec.name.isidentifier(), f"name {spec.name!r} must be a plain identifier")
    declared_form = _declared_form(spec.outcome)
    _check(
        src,
        spec.outcome in _OUTCOME_FACTS or declared_form,
        f"outcome {spec.outcome!r}: one of {sorted(_OUTCOME_FACTS)}, or '<name>_followup' "
        "for an instrument a study declares as [outcomes.<name>] in its study.toml",
    )
    if spec.outcome in RATING_OUTCOMES:
        _validate_ratings(spec, src)
    _check(src, spec.likelihood in LIKELIHOODS, f"likelihood: one of {list(LIKELIHOODS)}")
    _check(
        src,
        spec.likelihood_form in LIKELIHOOD_FORMS,
        f"likelihood_form: one of {list(LIKELIHOOD_FORMS)}",
    )
    _check(
        src,
        spec.likelihood_form != "collapsed" or spec.likelihood == "normal",
        "likelihood_form = 'collapsed' needs likelihood = 'normal' (the integral over provider "
        "effects is closed-form only for Gaussian residuals)",
    )
    d, p, h, s = spec.data, spec.predictors, spec.hierarchy, spec.sampler
    _check(f"{src} [data]", d.sample in ("all", "elevated"), "sample: 'all' or 'elevated'")
    _check(
        f"{src} [data]",
        d.elevated_by in ("who5", "phq9", "phq9_else_who5")
        or re.fullmatch(r"[a-z][a-z0-9_]*", d.elevated_by) is not None,
        "elevated_by: 'who5', 'phq9', 'phq9_else_who5', or the name of an outcome the study "
        "declares with a cutoff ('gad7'), checked when the design is built",
    )
    _check(
        f"{src} [data]",
        not (
            d.sample == "elevated"
            and d.elevated_by == "phq9_else_who5"
            and spec.outcome.startswith("phq9")
            and spec.predictors.alliance != "latent"
        ),
        "elevated_by = 'phq9_else_who5' adds clients elevated on the WHO-5 screen only, who have "
        "no PHQ-9 baseline and so no PHQ-9 outcome to model: use elevated_by = 'phq9' for a "
        "PHQ-9 outcome (the latent joint model uses the fallback for its WHO-5 outcome)",
    )
    _check(f"{src} [data]", 0 <= d.who5_cutoff <= 100, "who5_cutoff must lie in 0–100")
    _check(f"{src} [data]", 0 <= d.phq9_cutoff <= 27, "phq9_cutoff must lie in 0–27")
    _check(f"{src} [data]", d.followup_imputations >= 0, "followup_imputations must be >= 0")
    _check(
        f"{src} [data]",
        d.followup_imputations > 0 or d.followup_delta == 0,
        "followup_delta needs followup_imputations > 0 (the shift applies to imputed follow-ups)",
    )
    _check(
        f"{src} [data]",
        d.followup_imputations > 0 or d.followup_delta_alliance == 0,
        "followup_delta_alliance needs followup_imputations > 0 (it shifts imputed follow-ups)",
    )
    _check(
        f"{src} [data]",
        d.followup_imputations == 0 or p.alliance != "latent",
        "followup_imputations is not available with alliance = 'latent'",
    )
    _check(f"{src} [predictors]", p.alliance_sessions >= 0, "alliance_sessions must be >= 0")
    built_in = spec.built_in_covariates
    bad = sorted(c for c in set(p.covariates) - set(built_in) if not DECLARED_NAME.fullmatch(c))
    _check(
        f"{src} [predictors]",
        not bad,
        f"unknown covariate(s) {bad}; known {list(built_in)}, or a name in lower case letters, "
        "digits and _ that the study declares as [covariates.<name>] in its study.toml",
    )
    _check(
        f"{src} [predictors]",
        len(set(p.covariates)) == len(p.covariates),
        f"covariates: each name once, got {list(p.covariates)}",
    )
    _check(
        f"{src} [predictors]",
        p.alliance in ("composite", "subscales", "latent"),
        "alliance: 'composite', 'subscales' or 'latent'",
    )
    _check(
        f"{src} [hierarchy]",
        h.care_slope_sd in ("fixed", "estimated"),
        "care_slope_sd: 'fixed' or 'estimated'",
    )
    _check(
        f"{src} [hierarchy]",
        h.sd_prior in ("gamma", "halfnormal"),
        "sd_prior: 'gamma' or 'halfnormal'",
    )
    _check(
        f"{src} [hierarchy]",
        h.pooled_weights in ("care_mix", "equal"),
        "pooled_weights: 'care_mix' or 'equal'",
    )
    _check(
        f"{src} [hierarchy]",
        h.between == "caseload_mean" or (h.between == "latent_mean" and p.alliance == "subscales"),
        "between: 'caseload_mean', or 'latent_mean' with alliance = 'subscales'",
    )
    _check(
        src,
        h.between == "caseload_mean" or spec.likelihood_form != "collapsed",
        "between = 'latent_mean' has no collapsed form (its alliance parts are parameters)",
    )
    _check(
        f"{src} [hierarchy]",
        h.between == "caseload_mean" or d.followup_imputations == 0,
        "between = 'latent_mean' cannot impute follow-ups (imputation predicts from the "
        "caseload-mean parts)",
    )
    _check(
        f"{src} [hierarchy]",
        not h.provider_slopes or h.provider_intercepts,
        "provider_slopes needs provider_intercepts",
    )
    _check(
        f"{src} [hierarchy]",
        p.alliance in ("subscales", "latent") or not spec.hierarchical,
        "a hierarchy (care-type intercepts included) needs alliance = 'subscales' or 'latent'",
    )
    if spec.measurement is not None:
        m, where = spec.measurement, f"{src} [measurement]"
        # A declared instrument's name is checked against the study's declarations when the
        # design is built (the spec is parsed without a study).
        bad = sorted(o for o in set(m.outcomes) - set(OUTCOMES) if not _declared_form(o))
        _check(
            where,
            not bad,
            f"unknown outcome(s) {bad}; known {sorted(OUTCOMES)}, or '<name>_followup' for an "
            "instrument the study declares as [outcomes.<name>] in its study.toml",
        )
        _check(where, 1 <= len(m.outcomes) <= 2, "outcomes: one or two follow-up outcomes")
        _check(where, len(set(m.outcomes)) == len(m.outcomes), "outcomes must be distinct")
        _check(
            where,
            not m.outcomes or m.outcomes[0] == spec.outcome,
            f"the first of outcomes must be the spec's outcome {spec.outcome!r}",
        )
        for name in (
            "threshold_sd",
            "discrimination_sd",
            "sd_provider_alliance_sd",
            "provider_type_alliance_sd",
        ):
            _check(where, getattr(m, name) > 0, f"{name} must be > 0")
        _check(
            where,
            m.phq9_sample in ("elevated", "all"),
            f"phq9_sample: 'elevated' or 'all', got {m.phq9_sample!r}",
        )
        _check(
            f"{src} [hierarchy]",
            not h.provider_slopes,
            "provider_slopes is not available with alliance = 'latent'",
        )
        _check(src, spec.likelihood == "normal", "alliance = 'latent' needs likelihood = 'normal'")
    if spec.change is not None:
        _validate_change(spec, src)
    for f in fields(spec.stated_priors):
        _check(f"{src} [priors]", getattr(spec.stated_priors, f.name) > 0, f"{f.name} must be > 0")
    _check(f"{src} [hypotheses]", spec.hypotheses.rope >= 0, "rope must be >= 0")
    for text in spec.hypotheses.tests:
        try:
            parse_hypothesis(text)
        except HypothesisError as err:
            _check(f"{src} [hypotheses] tests", False, str(err))
    if spec.published_table:
        _check(
            src,
            spec.published_table in PUBLISHED,
            f"published_table {spec.published_table!r}: one of {sorted(PUBLISHED)}",
        )
    _check(f"{src} [sampler]", s.name in SAMPLERS, f"name: one of {list(SAMPLERS)}")
    _check(f"{src} [sampler]", s.backend in ("numba", "jax"), "backend: 'numba' or 'jax'")
    _check(f"{src} [sampler]", s.chains >= 1, "chains must be >= 1")
    _check(f"{src} [sampler]", s.draws >= 1 and s.tune >= 0, "draws >= 1 and tune >= 0")
    _check(f"{src} [sampler]", 0.5 <= s.target_accept < 1, "target_accept must lie in [0.5, 1)")
    _check(f"{src} [sampler]", s.seed >= 0, "seed must be >= 0")


def _validate_ratings(spec: ModelSpec, src: str) -> None:
    """A ratings spec: the follow-up regression's choices do not apply, so none may be set but
    ``[predictors] covariates``, the client covariates of the ratings model."""
    predictors = replace(spec.predictors, covariates=PredictorSpec().covariates)
    unused = [
        name
        for name, value, default in (
            ("[predictors]", predictors, PredictorSpec()),
            ("[hierarchy]", spec.hierarchy, HierarchySpec()),
            ("[priors]", spec.priors, PriorSpec()),
        )
        if value != default
    ]
    unused += [
        key
        for key, default in (("likelihood", "normal"), ("likelihood_form", "auto"))
        if getattr(spec, key) != default
    ]
    _check(
        src,
        not unused and spec.measurement is None and spec.change is None,
        f"outcome {spec.outcome!r} takes only [data], [sampler] and [hypotheses] "
        f"(its priors are the family's own); remove {unused or ['[measurement]', '[change]']}",
    )
    _check(
        f"{src} [data]",
        spec.data.followup_imputations == 0,
        f"followup_imputations does not apply to outcome {spec.outcome!r}",
    )
    named = spec.predictors.covariates
    _check(
        f"{src} [predictors]",
        bool(named),
        f"covariates: outcome {spec.outcome!r} needs at least one (its built-in ones are "
        f"{list(RATINGS_COVARIATES)}, taken when the spec names none)",
    )
    _check(
        f"{src} [predictors]",
        named == PredictorSpec().covariates or "days_in_care" not in named,
        f"covariates: 'days_in_care' is not a covariate of outcome {spec.outcome!r} (its "
        f"built-in ones are {list(RATINGS_COVARIATES)}, and the study's declared covariates)",
    )


def _check_ratings_covariates(raw: dict[str, Any], source: str) -> None:
    """A ratings spec written in TOML (or given as overrides) that names ``days_in_care``.

    :func:`_validate_ratings` tells a ratings spec that names its covariates by their differing
    from :class:`PredictorSpec`'s default, which names ``days_in_care``; a spec that writes out
    exactly that default would otherwise get the ratings family's built-in covariates instead.
    A ``run.json`` writes every table out, the default included, so it is not checked here.
    """
    if raw.get("outcome") not in RATING_OUTCOMES:
        return
    predictors = raw.get("predictors")
    named = predictors.get("covariates") if isinstance(predictors, dict) else None
    _check(
        f"{source} [predictors]",
        not isinstance(named, list) or "days_in_care" not in named,
        f"covariates: 'days_in_care' is not a covariate of outcome {raw['outcome']!r} (its "
        f"built-in ones are {list(RATINGS_COVARIATES)}, and the study's declared covariates)",
    )


def _validate_change(spec: ModelSpec, src: str) -> None:
    c, where = spec.change, f"{src} [change]"
    assert c is not None
    _check(where, 0 < c.reliability_mean < 1, "reliability_mean must lie in (0, 1)")
    _check(
        where,
        0 < c.reliability_sd**2 < c.reliability_mean * (1 - c.reliability_mean),
        "reliability_sd must be > 0 and below sqrt(m (1 - m)) for a Beta prior of mean m",
    )
    for name in ("true_mean_sd", "true_change_sd", "true_sd_sd"):
        _check(where, getattr(c, name) > 0, f"{name} must be > 0")
    _check(
        src,
        spec.predictors.alliance != "latent" and spec.data.sample == "all",
        "a [change] model needs every client ([data] sample = 'all') and no latent alliance",
    )
    _check(
        f"{src} [data]",
        spec.data.followup_imputations == 0,
        "the change model needs no "
        "imputation: clients without a follow-up enter through their baseline",
    )


def load_spec(name_or_path: str | Path, **overrides: Any) -> ModelSpec:
    """Load a spec by name (a shipped spec, see :func:`spec_names`) or by path to a TOML file.

    Parameters
    ----------
    name_or_path : str or path
        ``"who5_change"`` or ``"my_models/variant.toml"``.
    **overrides
        Top-level values and tables merged into the spec as ``extends`` merges them, and validated
        exactly as the TOML is: ``load_spec("who5_change", likelihood="normal",
        sampler={"draws": 500}, priors={"sigma_sd": 10.0})``. An override renames nothing: pass
        ``name=`` to give the variant its own results folder.

    Raises
    ------
    SpecError
        No such spec, or an invalid spec or override (unknown key, wrong type, impossible value).
    """
    path = _spec_path(name_or_path)
    if not path.is_file():
        raise SpecError(f"{path}: no such model spec; known specs: {spec_names()}")
    source = str(path)
    layers = _read_layers(path.read_text(encoding="utf-8"), source, ())
    if overrides:
        _check(source, "extends" not in overrides, "'extends' cannot be an override")
        layers.append(overrides)
        source = f"{source} (with overrides {sorted(overrides)})"
    raw, stated = _combine(layers)
    _check_ratings_covariates(raw, source)
    return _from_raw(raw, source, stated)


def spec_from_dict(values: dict[str, Any], source: str) -> ModelSpec:
    """A spec from :meth:`ModelSpec.to_dict` output (e.g. a bundle's ``run.json``), validated."""
    return _from_raw(dict(values), source)


def known_outcomes() -> list[str]:
    """The follow-up outcomes a spec may name now: built in, and declared by a study loaded."""
    return sorted({*OUTCOMES, *(i.followup for i in declared().values())})


def spec_names() -> list[str]:
    """Names of the shipped specs."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))
