r"""Latent alliance: a session-level graded-response measurement model feeding two outcomes jointly.

All PyMC code of the ``alliance = "latent"`` model family lives here;
:func:`alliance_bayes.model.regression.graph.build_model` dispatches to :func:`build_latent_model` and
:func:`alliance_bayes.model.regression.design.prepare` to :func:`prepare_latent`.

Why
---
The averaged client score :math:`\bar r_{is}` (mean of a few 1–5 ratings that pile up at 5) is the
true score plus measurement error, so a regression on it attenuates the alliance effects towards
zero (classical errors-in-variables). Here the ratings are modelled at the session level and the
outcome regressions use the latent true scores, so measurement error and the ceiling are absorbed
by the measurement model and the slopes are not attenuated.

Measurement part (Samejima 1969, graded response)
-------------------------------------------------
Client :math:`i` saw provider :math:`p` (membership :math:`m = (i, p)`, weight :math:`w_{ip}` =
the provider's share of the client's sessions, as in :mod:`alliance_bayes.data.frame`). For
subscale (item) :math:`s` in goal, bond (and task when measured), each session rating, one of
the :math:`K` categories :math:`r \in \{L, \dots, H\}` (:math:`K = H - L + 1`: the contract's
1–5, :math:`K = 5`, or a declared instrument's whole-number range such as 1–7,
:func:`~alliance_bayes.model.latent.instrument_check.rating_scale`), with :math:`p` follows

.. math::
    \Pr(r \ge L + k \mid \theta_{ips}) = \operatorname{logit}^{-1}\big(\alpha_s(\theta_{ips}
        - \kappa_{s,k})\big), \quad k = 1,\dots,K-1,\qquad
    \kappa_{s,1} < \kappa_{s,2} < \dots < \kappa_{s,K-1},

with item thresholds :math:`\kappa_s` and discrimination :math:`\alpha_s` (one item per
subscale; several items per subscale below). The sampler works with the logit-scale
cut-points :math:`c_{s,k} = \alpha_s \kappa_{s,k}` (so :math:`\alpha_s\theta - c_{s,k}` is
linear in each), anchored at the top: the highest :math:`c_{s,K-1} \sim \mathcal N(0,
s_\kappa)`, the :math:`K - 2` gaps below it
:math:`c_{s,k+1} - c_{s,k} \sim \text{Half-}\mathcal N(g_K s_\kappa)` with :math:`g_K = 3/(K-2)`
(1 on five categories; :attr:`~alliance_bayes.model.latent.instrument_check.RatingScale.gap_prior_factor`:
more categories cut the same stretch of the latent scale more finely, so the prior mean of the
span from the lowest to the highest cut-point stays that of five). On the 1–5 items the 4|5
cut-point is pinned by the many 5s and the 1|2 one only loosely by the few 1s; built upwards from
1|2, the well-determined 4|5 would be a sum of every parameter. On the shipped study this choice
took the gap ESS to about 140 per 400 draws, against 6–50 when built up from 1|2.
:math:`\kappa = c/\alpha` is stored as ``threshold``; the latent score is a provider part plus a client part,

.. math::
    \theta_{ips} = a_{ps} + e_{is}, \qquad
    e_i = L_e z_i,\; L_e L_e^\top \sim \text{LKJ}(\eta), \qquad
    a_p = \operatorname{diag}(\sigma^a) L_a z_p,\; L_a L_a^\top \sim \text{LKJ}(\eta),

with :math:`z` standard normal (the client part non-centred; the provider part partially
non-centred by the data's information on each provider, and its SD :math:`\sigma^a` Gamma(2) or Half-Normal by
``[hierarchy] sd_prior``: :mod:`~alliance_bayes.model.latent.provider_effects`) and then centred
over clients (and over providers) per subscale, rescaled by :math:`\sqrt{n/(n-1)}` to keep unit
variance: the thresholds alone carry the location. This removes the ridge "shift every latent score
and every threshold together", whose width is :math:`1/\sqrt n`, far narrower than any other
direction (it forces tiny steps).
The client part has unit SD per subscale (the usual IRT convention that fixes the latent scale),
so :math:`\alpha_s` and the provider SD :math:`\sigma^a_s` (relative to the client SD) are
identified; the latent mean is fixed at 0 and the thresholds carry the location. With one item
per subscale the discrimination is equivalent to the
latent SD on the logit scale; it is reported as a discrimination under this convention.

Several items per subscale
--------------------------
A declared instrument with several integer items per subscale (the WAI-SR: four items 1–5 each)
has one row of graded-response parameters per item :math:`j` of subscale :math:`s(j)`, on that
subscale's latent alliance (a unidimensional model per subscale: the items' session-to-session
disagreement is the logistic residual),

.. math::
    \Pr(r_j \ge L + k \mid \theta_{ips(j)}) = \operatorname{logit}^{-1}\big(\alpha_j
        (\theta_{ips(j)} - \kappa_{j,k})\big),

with item-specific cut-points and discriminations under the priors above (``threshold`` dims
``(item, cut)``, ``discrimination``, ``cutpoint_top`` dims ``item``, ``cutpoint_gap`` ``(item,
gap)``; the ``item`` coordinate lists the declared columns and the constant ``item_subscale``
each item's subscale). A reverse-scored item's rating :math:`r` enters as :math:`L + H - r`
(:func:`~alliance_bayes.model.items.item_ratings`). Expected ratings, true scores and provider
levels are a subscale's mean over its items of each item's (below), the session subscale score
of the averaged-score models, so the outcome slopes and the estimand names are unchanged. The
latent parts, their SDs and correlations stay per subscale. With one item per subscale the
model, its names, dimensions and coordinates are those of the subscales, as they have been.

From the latent scale to the rating scale
-----------------------------------------
Each membership's true score is the **expected rating**, on the items' own scale (1–5, or the
declared instrument's :math:`L`–:math:`H`, the scale of the averaged scores)

.. math::
    \tau_{ips} = \mathbb E[r \mid \theta_{ips}] = L + \sum_{k=1}^{K-1}
        \operatorname{logit}^{-1}\big(\alpha_s(\theta_{ips} - \kappa_{s,k})\big) \in (L, H),

the quantity that the client's observed mean rating estimates without bias (with several items
per subscale the mean over its items of this sum, each with its own :math:`\alpha_j,
\kappa_j`); the client's true score is :math:`\tau_{is} = \sum_p w_{ip}\tau_{ips}`.

The between-provider part is **doubly latent** (Marsh et al. 2009): a provider's alliance is
its latent part on the same scale with the client part integrated out,

.. math::
    m_{ps} = \mathbb E_{e \sim \mathcal N(0,1)}\big[\tau(a_{ps} + e)\big]
    \quad\text{(by quadrature, :func:`provider_expected_rating`)},

the expected rating of a typical client with that provider, not the mean of the scores of the
clients it happened to see. With an alliance ICC of a few per cent and 10–30 clients per provider
a caseload mean has a reliability of only about .35–.5, and a between slope on it is pulled
toward the within slope (Lüdtke et al. 2008); here the uncertainty of :math:`a_p` is part of the
posterior instead. :math:`B_{is} = \sum_p w_{ip} m_{ps}` (multiple membership weights the
providers' latent parts) and :math:`W_{is} = \tau_{is} - B_{is}`. The slopes are "outcome points
per one point of the alliance scale" (1–5, or the declared instrument's), as in ``who5_change``;
on a declared scale the ``[priors]`` scales per alliance point, stated per point of 1–5, are
multiplied by :math:`4 / (H - L)` as in the regression family
(:func:`~alliance_bayes.model.regression.design.model_priors`), while every measurement prior is
per client latent SD or in logits and needs no rescaling. (Parameterising the latent
location on the 1–5 scale directly was rejected: with the ceiling, a linear latent scale has no
natural unit there, while the expected rating is what the averaged score measures.) The
simulator of :mod:`alliance_bayes.data.simulate` plants the between effect this way with
``between_definition = "latent"``.

The provider part has a mean per provider type: :math:`a_{ps} = \sum_{t \ne t_0} \delta_{ts}
([t(p) = t] - \pi_t) + (\operatorname{diag}(\sigma^a) L_a z_p)_s`, with :math:`\delta_{ts} \sim
\mathcal N(0, s_\delta)` (``provider_type_alliance``, type :math:`t` against the reference provider
type :math:`t_0`, in client SDs; none in a study of one provider type) and :math:`\pi_t` type
:math:`t`'s share of the providers (centred,
so that :math:`\delta` leaves the location to the thresholds). The reference provider type is the
reference care type when that is a single type (coach under the contract's types), else the first
declared type, as in the ratings family
(:attr:`~alliance_bayes.model.latent.measurement.LatentData.provider_reference`). Under the
contract's therapist and coach, :math:`\delta_s` is therapists against coaches, ``dims="subscale"``,
and the centred indicator :math:`[t(p) = \text{therapist}] - \pi_T` is stored as
``constant_data/provider_therapist``; otherwise :math:`\delta` has dims ``(provider_type_contrast,
subscale)`` and the centred indicators ``constant_data/provider_type_design`` (provider,
provider_type_contrast). The standard normal :math:`z_p` are centred within each provider type (and
rescaled to unit variance), so that :math:`\delta` alone carries the type differences: otherwise the
mean of a type's :math:`z` and its :math:`\delta` trade off along a ridge. The care types of the
outcome part are the analysis frame's (the contract's therapist, coach and both, or the
combinations of declared types that clients saw), contrasted against its reference care type.

Rating log density on the non-empty cells
-----------------------------------------
Writing :math:`\ell = \alpha_s\theta` and :math:`G_t = e^{c_{s,t} - \ell}`, every category
probability is a ratio of :math:`1 + G_t` terms (:class:`RatingTerms`), so one ``exp`` per cell
and one ``log1p`` per threshold next to a rated category give the exact log density of every
rating, and the expected rating :math:`L + \sum_t (1 + G_t)^{-1}` reuses :math:`G`.

Outcome part (the ``who5_change`` structure, per outcome :math:`o`)
-------------------------------------------------------------------
.. math::
    \mu_{oi} = \alpha_o + \gamma_{o,c[i]} + \beta^0_o (y^0_{oi} - \bar y^0_o) + x_i^\top\beta_o
        + \sum_s \big(b_{o,c[i],s,W} W_{is} + b_{o,c[i],s,B}(B_{is} - \bar B_s)\big)
        + \sum_p w_{ip} u_{op},

with care-type intercepts :math:`\gamma_{o,c}` against the reference care type (``b_care``; coach-only
care under the contract's types), covariates
standardised (:math:`\beta_o` per SD; a declared categorical one as centred level indicators
against its reference, :func:`~alliance_bayes.model.regression.design.covariate_columns`),
care-type slopes partially pooled
(:math:`b_{o,c,s,l} = \mu^b_{o,s,l} + \tau_o z_{o,c,s,l}`, the spread fixed unless
``care_slope_sd = "estimated"``), provider intercepts :math:`u_{op} \sim \mathcal N(0, \sigma^u_{o,t[p]})`
(partially non-centred by each provider's data, the SDs Gamma(2) by default:
:mod:`~alliance_bayes.model.latent.provider_effects`; multiple membership, Browne, Goldstein &
Rasbash 2001) and residuals bivariate
normal with correlation :math:`\rho` (``rho_outcomes``): where both outcomes are observed the
likelihood is the bivariate normal, factorised as :math:`y_1 \sim \mathcal N(\mu_1, \sigma_1)`,
:math:`y_2 \mid y_1 \sim \mathcal N(\mu_2 + \rho\sigma_2 (y_1-\mu_1)/\sigma_1,
\sigma_2\sqrt{1-\rho^2})`; where only one is observed, its marginal normal. Predictive draws of
:math:`y_2` are conditional on the drawn :math:`y_1`, so that they come from the joint predictive
distribution. The within/between
split follows Baldwin, Wampold & Imel (2007), doi:10.1037/0022-006X.75.6.842; alliance as the
goal/bond/task agreement follows Bordin (1979), doi:10.1037/h0085885.

Sampling cost (shipped study, 2-core machine, nutpie + numba)
--------------------------------------------------------------
6,827 free parameters (6,174 client latent scores), 3,893 memberships, 35,160 ratings summarised
as counts. At the spec's ``target_accept`` 0.9 the step size adapts to about 0.09 and every draw
takes 63 leapfrog steps (tree depth 6, never saturated); 500 tuning iterations give the same step
size and path length as 1,000. The spec's run (4 chains × (500 + 1,500), default seed, the whole
``alliance-bayes fit alliance_latent`` process, PyTensor's compile cache warm), twice on the same
day with the quadrature of :func:`provider_expected_rating` as the only difference:

=================  ========  =======  ===========  ==============  =======  ========  =====
quadrature nodes   sampling  compile  prior draws  post. draws,    R-hat    min bulk  whole
                                                   log densities            ESS
=================  ========  =======  ===========  ==============  =======  ========  =====
61 (spacing 0.25)  283 s     66 s     16 s         28 s            ≤ 1.005  885       446 s
31 (0.4, shipped)  224 s     76 s     21 s         33 s            ≤ 1.007  711       407 s
=================  ========  =======  ===========  ==============  =======  ========  =====

The rest of the whole process is about 30 s for the gate, the summaries and the bundle and 20 s
for start-up, loading and building the model; peak memory 2.7 GB. A cold compile cache adds
about 100 s. One logp and gradient (nutpie's compiled numba function called directly, one thread,
median of 7 × 500 calls at one point) costs 0.72 ms with 61 nodes and 0.62 ms with 31.

Earlier runs on the same design: 500 + 1,000 put R-hat at the gate's limit of 1.01; a lower
``target_accept`` (0.8: step 0.13, 31 steps per draw) halves the cost of a draw but also its ESS
(0.07 per draw against 0.15), so it gains nothing per second and fails the gate. The rating log
density on the non-empty cells cut the time per gradient from 3.6 to 1.35 ms (nutpie's
``logp_func``, before the doubly latent part).

These runs predate the provider geometry of :mod:`~alliance_bayes.model.latent.provider_effects`
(Gamma(2) SDs, partially non-centred provider effects, provider parts as within-type contrasts).
With it, ``alliance_latent_who5`` on the shipped study (same settings and seed) passed the gate
with R-hat ≤ 1.004 and a min bulk ESS of 964 in 244 s of sampling on the shared machine;
docs/models.md lists its gate outcomes on studies of other designs.

The slow directions are the item discriminations (= the client latent SD on the logit scale),
the client-part correlation, the top cut-points and ``sd_provider_alliance``: non-centred client
scores move with the discrimination. Three other forms mixed worse: a centred client part
(discrimination ESS 12 vs 25 per 400 draws), the client part on the logit scale (min bulk ESS
98 against 240 in 4 × 400 draws, at a dearer gradient) and a partly centred one (scaled by the
discrimination for the clients with a rating below 5 on that subscale, 43–49% of them: min ESS
217, R-hat 1.028); so did nutpie's low-rank mass matrix (no gain in a 300-draw warm-up).

Outcomes
--------
Each outcome is WHO-5 or PHQ-9, or an instrument the study declares (``[outcomes.<name>]`` of its
``study.toml``, e.g. GAD-7, CORE-10, OQ-45): its baseline column, range, units and direction are
the declaration's (:func:`outcome_instrument`). The ``[priors]`` scales are on the first outcome's
metric (for a declared one, the unstated defaults times its range over WHO-5's 100, as in the
regression family, :attr:`~alliance_bayes.spec.ModelSpec.priors`); a second outcome's are
multiplied by the ratio of the ranges; the intercept's prior mean is the outcome's sample mean.
An outcome's estimands take its name: the first keeps the plain stable names, the second's are
prefixed ``"<name>:"`` (``phq9:b_goal_within``, ``gad7:b_goal_within``).

PHQ-9 sample
------------
With ``phq9_sample = "elevated"`` (the default) PHQ-9 follow-up enters for the clients elevated
at baseline under ``[data]``'s rule and cut-offs, the sample of ``depression_change``; with
``"all"``, for every client with both PHQ-9 scores. A declared second outcome is taken the same
way, elevated by its declared ``cutoff`` on its worse side (baseline at or above it where lower is
better, at or below where higher is); a declared instrument without a cut-off needs
``phq9_sample = "all"``. The report's data section says which.

Missing data
------------
Every client in the sample informs the measurement part, with or without follow-up. A client
enters an outcome's likelihood when that follow-up, its baseline and the covariates are observed.
**Assumption:** follow-up is missing at random given the model (the covariates, care type,
provider and the latent alliance); clients with one outcome missing contribute the other through
its marginal. No imputation draws are stored.

Stored variables
----------------
Outcome parameters reuse the names of ``who5_change`` with a leading ``outcome`` dimension
(``mu_b``, ``b``, ``sd_b``, ``sd_provider``, ``sigma``, ``b_baseline``, ``b_covariate``, ``alpha``);
plus ``rho_outcomes``, ``threshold`` (subscale, threshold; (item, threshold) with several items
per subscale), ``discrimination``,
``sd_provider_alliance``, ``corr_client_alliance``, ``corr_provider_alliance``, the provider
intercepts ``u_outcome_provider`` (outcome, provider) and the provider part's standard normal draws
``z_provider_alliance`` (sampled as ``v_provider`` and ``v_alliance_provider``). Observed variables:
``y`` (first outcome; dims ``client_<short>``, whose labels are clients), ``y_<short>`` (second
outcome) and ``ratings``: the rating counts per subscale and category. ``ratings`` is observed at
that summary level so that posterior predictive draws and pointwise log-likelihoods stay small; its
log density is nevertheless that of **every session rating** (the cell counts per membership and
subscale travel as constant data), and its predictive draws are sums of the per-membership
multinomial draws. The providers' latent alliance on the rating scale is stored as
``alliance_provider`` (provider, subscale). The client latent draws ``z_client_alliance`` (draws ×
clients × subscales, about 0.5 GB for the shipped study) are checked by the convergence gate and
then replaced in the saved bundle by :func:`store_latent_scores`: each client's true score on the
rating scale, every ``thin``-th draw, float32, in the group ``latent_alliance``.

References
----------
Samejima, F. (1969). Estimation of latent ability using a response pattern of graded scores.
Psychometrika Monograph Supplement 17.
Bordin, E. S. (1979). The generalizability of the psychoanalytic concept of the working alliance.
Psychotherapy: Theory, Research & Practice 16, 252–260. doi:10.1037/h0085885.
Baldwin, S. A., Wampold, B. E. & Imel, Z. E. (2007). Untangling the alliance-outcome correlation.
J Consult Clin Psychol 75, 842–852. doi:10.1037/0022-006X.75.6.842.
Lüdtke, O., Marsh, H. W., Robitzsch, A., Trautwein, U., Asparouhov, T. & Muthén, B. (2008). The
multilevel latent covariate model. Psychological Methods 13, 203–229. doi:10.1037/a0012869.
Marsh, H. W., Lüdtke, O., Robitzsch, A., Trautwein, U., Asparouhov, T., Muthén, B. & Nagengast, B.
(2009). Doubly-latent models of school contextual effects. Multivariate Behavioral Research 44,
764–802. doi:10.1080/00273170903333665.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from scipy import special

from alliance_bayes.data.frame import AnalysisFrame, elevated_at_baseline
from alliance_bayes.data.instruments import BUILT_IN, Instrument, declare
from alliance_bayes.model.elevated import elevated_sample
from alliance_bayes.model.items import ItemRows, item_ratings, items_record, subscale_means
from alliance_bayes.model.latent.instrument_check import (
    CONTRACT_SCALE,
    RatingScale,
    rating_scale,
    require_integer_ratings,
)
from alliance_bayes.model.latent.provider_effects import (
    outcome_provider_intercepts,
    provider_alliance_z,
)
from alliance_bayes.model.regression.design import (
    LEVELS,
    DesignError,
    alliance_record,
    care_counts,
    care_shares,
    check_covariates,
    covariate_columns,
    model_priors,
    other_outcomes,
    standardise,
)
from alliance_bayes.model.regression.graph import care_intercepts, covariate_slopes, group_sd
from alliance_bayes.spec import OUTCOMES, ModelSpec

#: The contract's 1–5 items; a declared instrument's categories are its own
#: (:func:`~alliance_bayes.model.latent.instrument_check.rating_scale`, ``LatentData.scale``).
N_CATEGORIES = CONTRACT_SCALE.n_categories
CATEGORIES = CONTRACT_SCALE.categories
THRESHOLDS = CONTRACT_SCALE.thresholds
RATINGS = "ratings"
#: The constant data of the provider-type shift: the contract's centred therapist indicator, or
#: the centred indicators of every non-reference provider type.
THERAPIST_INDICATOR = "provider_therapist"
TYPE_DESIGN = "provider_type_design"


def outcome_short(outcome: str) -> str:
    """``who5_followup`` → ``who5``."""
    return outcome.removesuffix("_followup")


def _prior_scale(spec: ModelSpec, instrument: Instrument) -> float:
    r"""Priors are on the first outcome's metric; another outcome scales them by the range ratio
    :math:`(H_o - L_o) / (H_1 - L_1)` (27/100 for PHQ-9 against WHO-5, 21/27 for a declared
    GAD-7 against PHQ-9). The first outcome's own scales are :attr:`ModelSpec.priors`: for a
    declared one the unstated defaults times its range over WHO-5's 100."""
    lo0, hi0 = spec.outcome_range
    lo, hi = instrument.range
    return (hi - lo) / (hi0 - lo0)


def outcome_instrument(spec: ModelSpec, frame: AnalysisFrame, outcome: str) -> Instrument:
    """The instrument of a ``[measurement]`` outcome: WHO-5 or PHQ-9, or as ``frame``'s own study
    declares it (``[outcomes.<name>]`` of its ``study.toml``).

    Raises
    ------
    DesignError
        The study declares no such outcome: names the spec, the outcome, where the study's
        declarations are, and the outcomes it has.
    """
    name = outcome_short(outcome)
    if name in BUILT_IN:
        return BUILT_IN[name]
    if name in frame.outcomes:
        return frame.outcomes[name]
    where = frame.outcomes_declared_in or "the study (it has no study.toml)"
    known = sorted({*OUTCOMES, *(i.followup for i in frame.outcomes.values())})
    raise DesignError(
        f"spec {spec.name!r}: [measurement] outcome {outcome!r} is not declared in {where}; "
        f"this study's outcomes are {known}. Declare it there as [outcomes.{name}] with label, "
        'range = [low, high] and better = "lower" or "higher"'
    )


def _check_outcomes(spec: ModelSpec, frame: AnalysisFrame) -> tuple[Instrument, ...]:
    """Every ``[measurement]`` outcome is built in or declared by this study; the study's
    declarations become the ones in use (another study loaded since may declare the same name
    otherwise, and :attr:`ModelSpec.priors` reads the declaration in use)."""
    assert spec.measurement is not None
    found = tuple(outcome_instrument(spec, frame, o) for o in spec.measurement.outcomes)
    declare({i.name: i for i in found if i.name not in BUILT_IN})
    return found


def _outcome_sample(
    spec: ModelSpec, frame: AnalysisFrame, instrument: Instrument, position: int
) -> tuple[str, np.ndarray] | None:
    r"""The clients whose baseline lets them enter an outcome's likelihood, with the exclusion
    count's name; None where every client may.

    Under ``phq9_sample = "elevated"``: PHQ-9, those elevated under ``[data]``'s rule and
    cut-offs (the sample of ``depression_change``); a declared second outcome, those at or past
    its declared ``cutoff`` on the worse side (:math:`y^0 \ge` cutoff where lower is better,
    :math:`\le` where higher is, as in the change family). The first outcome, WHO-5 in any
    place, and every outcome under ``"all"`` take every client.

    Raises
    ------
    DesignError
        A declared second outcome without a ``cutoff`` under ``phq9_sample = "elevated"``.
    """
    assert spec.measurement is not None
    if spec.measurement.phq9_sample != "elevated":
        return None
    if instrument.name == "phq9":
        return "phq9_not_elevated_at_baseline", elevated_sample(spec, frame)
    if instrument.name in BUILT_IN or position == 0:
        return None
    if instrument.cutoff is None:
        worse = ">=" if instrument.better == "lower" else "<="
        raise DesignError(
            f"spec {spec.name!r}: [measurement] phq9_sample = 'elevated' takes the second outcome "
            f"{instrument.followup!r} among the clients elevated at baseline by its cut-off, and "
            f"[outcomes.{instrument.name}] ({instrument.label}) declares none; add cutoff = "
            f"<score> to it in the study's study.toml (elevated at {worse} the cut-off, since "
            f"{instrument.better} is better), or set phq9_sample = 'all'"
        )
    # a missing baseline is not elevated (nor modelled)
    elevated, _ = elevated_at_baseline(
        frame.clients, instrument.name, outcomes={instrument.name: instrument}
    )
    return f"{instrument.name}_not_elevated_at_baseline", elevated


@dataclass(frozen=True)
class OutcomeData:
    """One follow-up outcome: the clients with it observed (positions in the model's clients)."""

    outcome: str
    short: str
    client_index: np.ndarray  # (n_o,) positions in LatentData clients
    y: np.ndarray
    baseline: np.ndarray
    baseline_mean: float
    prior_scale: float
    instrument: Instrument  # range, step, label and direction (built in, or declared)

    @property
    def dim(self) -> str:
        return f"client_{self.short}"


@dataclass(frozen=True)
class LatentData(ItemRows):
    """Arrays for the latent-alliance model: every client of the sample, memberships and ratings."""

    frame: AnalysisFrame
    subscales: tuple[str, ...]
    covariates: np.ndarray  # (client, covariate), standardised; 0 where missing (then not in y)
    covariate_names: tuple[str, ...]
    covariate_means: np.ndarray
    covariate_sds: np.ndarray
    care_index: np.ndarray  # (client,)
    mem_client: np.ndarray  # (membership,)
    mem_provider: np.ndarray  # (membership,)
    mem_weight: np.ndarray  # (membership,)
    membership_index: np.ndarray  # (client, K) padded, as AnalysisFrame.membership_arrays
    membership_weight: np.ndarray  # (client, K)
    provider_type_index: np.ndarray  # (provider,)
    counts: np.ndarray  # (subscale, membership, category) number of ratings
    observed_scores: np.ndarray  # (client, subscale) observed mean rating
    between_mean: np.ndarray  # (subscale,) centring constant of the between part (observed)
    outcomes: tuple[OutcomeData, ...]
    exclusions: dict[str, int] = field(default_factory=dict)
    scale: RatingScale = CONTRACT_SCALE  # the rating categories (counts' last axis)
    # How each declared covariate is coded (covariate_columns); empty without declared ones.
    covariate_coding: dict[str, dict[str, object]] = field(default_factory=dict)
    # With several items per subscale: the declared item columns (``counts``' rows, a reversed
    # one turned) and each item's subscale (index into ``subscales``); empty with one item per
    # subscale, whose rows are the subscales.
    items: tuple[str, ...] = ()
    item_subscale: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def item_means(self) -> np.ndarray:
        """(subscale, item) the mean over each subscale's items
        (:func:`~alliance_bayes.model.items.subscale_means`); several items only."""
        return subscale_means(self.item_subscale, len(self.subscales))

    @property
    def n_clients(self) -> int:
        return len(self.frame.clients)

    @property
    def category_totals(self) -> np.ndarray:
        """(row, category) observed rating counts (:attr:`rows`)."""
        return self.counts.sum(axis=1)

    @property
    def care_types(self) -> tuple[str, ...]:
        """The study's care types (:attr:`AnalysisFrame.care_types`), what ``care_index`` counts."""
        return self.frame.care_types

    @property
    def reference_index(self) -> int:
        """The position of the reference care type in :attr:`care_types` (where ``b_care`` is 0)."""
        return self.frame.care_types.index(self.frame.care_reference)

    @property
    def provider_types(self) -> tuple[str, ...]:
        """The study's provider types (``provider_type_index`` counts in this order)."""
        return self.frame.provider_types

    @property
    def provider_reference(self) -> str:
        """The reference provider type :math:`t_0` of the measurement's provider-type shifts
        (:attr:`~alliance_bayes.data.frame.AnalysisFrame.provider_reference`)."""
        return self.frame.provider_reference

    @property
    def provider_contrasts(self) -> tuple[str, ...]:
        """``"<type>-<reference type>"`` for every provider type but :attr:`provider_reference`."""
        return self.frame.provider_contrasts

    @property
    def provider_shift_is_scalar(self) -> bool:
        """Whether the one provider-type shift is the contract's therapists against coaches.

        Then ``provider_type_alliance`` has dims ``subscale`` and its indicator is
        ``provider_therapist``, as they have always been; otherwise the shift has dims
        ``(provider_type_contrast, subscale)`` and the indicators are ``provider_type_design``.
        """
        return self.provider_contrasts == ("therapist-coach",)

    @property
    def provider_type_design(self) -> np.ndarray:
        """(provider, provider contrast) centred indicators of the non-reference provider types
        (:meth:`~alliance_bayes.data.frame.AnalysisFrame.provider_type_design`)."""
        return self.frame.provider_type_design()

    def provider_type_constant(self) -> tuple[str, tuple[str, ...], np.ndarray]:
        """The centred provider-type indicators as the model stores them: ``(name, dims, values)``.

        ``provider_therapist`` (provider,) under the contract's shift, else
        ``provider_type_design`` (provider, provider_type_contrast); :func:`latent_scores` reads
        either.
        """
        design = self.provider_type_design
        if self.provider_shift_is_scalar:
            return THERAPIST_INDICATOR, ("provider",), design[:, 0]
        return TYPE_DESIGN, ("provider", "provider_type_contrast"), design

    def coords(self) -> dict[str, list[str]]:
        c = self.frame.clients["client"].to_numpy()
        p = self.frame.providers["provider"].to_numpy()
        subs = list(self.subscales)
        coords = {
            "client": c.tolist(),
            "provider": p.tolist(),
            "membership": [
                f"{c[i]}:{p[j]}" for i, j in zip(self.mem_client, self.mem_provider, strict=True)
            ],
            "care_type": list(self.frame.care_types),
            "care_contrast": list(self.frame.care_contrasts),
            "provider_type": list(self.frame.provider_types),
            "subscale": subs,
            "subscale_pair": [
                f"{subs[i]}~{subs[j]}" for i, j in zip(*_pairs(len(subs)), strict=True)
            ],
            "level": list(LEVELS),
            "covariate": list(self.covariate_names),
            "cut": list(self.scale.thresholds),
            "gap": list(self.scale.thresholds[1:]),
            "category": list(self.scale.categories),
            "outcome": [o.short for o in self.outcomes],
        }
        if not self.provider_shift_is_scalar:
            coords["provider_type_contrast"] = list(self.provider_contrasts)
        if self.several_items:
            coords["item"] = list(self.items)
        for o in self.outcomes:
            coords[o.dim] = c[o.client_index].tolist()
        return coords


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.tril_indices(n, k=-1)
    return cols, rows  # (j, i) with j < i: "goal~bond"


def latent_scales(data: LatentData) -> dict[str, object]:
    """Per outcome, the care types of the clients with it observed (counts and shares: the weights
    of the pooled slopes); with declared covariates their ``covariate_coding`` (as the regression
    family's :meth:`~alliance_bayes.model.regression.design.ModelData.scales`); on a declared
    alliance instrument also its record
    (``alliance_instrument``, :func:`~alliance_bayes.model.regression.design.alliance_record`: the
    scale the true scores and slopes are on, and the factor the slope priors were scaled by); with
    outcomes the study declares, their facts (``declared_outcomes``, :func:`declared_outcomes`)."""
    record = alliance_record(data.frame)
    declared = declared_outcomes(data)
    return {
        "care_share_by_outcome": {
            o.short: care_shares(data.care_index[o.client_index], data.care_types)
            for o in data.outcomes
        },
        "care_count_by_outcome": {
            o.short: care_counts(data.care_index[o.client_index], data.care_types)
            for o in data.outcomes
        },
    } | (
        ({"covariate_coding": data.covariate_coding} if data.covariate_coding else {})
        | ({"alliance_instrument": record} if record else {})
        | ({"declared_outcomes": declared} if declared else {})
        | items_record(data.frame, data.subscales, data.items, data.item_subscale)
    )


def declared_outcomes(data: LatentData) -> dict[str, dict[str, object]]:
    """Per declared outcome (by its short name, ``gad7``) what a reader of the fit needs without
    the study: label, units, range, better direction, step and cut-off. Empty for WHO-5 and
    PHQ-9, whose facts are built in."""
    return {
        o.short: {
            "label": i.label,
            "units": i.units,
            "range": [i.low, i.high],
            "better": i.better,
            "step": i.step,
            "cutoff": i.cutoff,
        }
        for o in data.outcomes
        if (i := o.instrument).name not in BUILT_IN
    }


def prepare_latent(spec: ModelSpec, frame: AnalysisFrame) -> LatentData:
    """Select the spec's clients and build the measurement and outcome arrays.

    Every client of the sample with at least one rating enters the measurement part; each outcome
    uses the clients with that follow-up, its baseline and every covariate observed. Covariates
    are built in or declared by the study, coded as in the regression family
    (:func:`~alliance_bayes.model.regression.design.covariate_columns`). The count table has a
    row per subscale, or per item where a declared instrument has several items per subscale
    (:func:`~alliance_bayes.model.items.item_ratings`: a reversed item's rating :math:`r`
    counted as :math:`L + H - r`).

    Raises
    ------
    DesignError
        The study declares an alliance instrument other than integer item ratings on a
        whole-number range of at least three
        (:func:`~alliance_bayes.model.latent.instrument_check.require_integer_ratings`), a declared
        item column is missing, a column is absent, a covariate is neither built in nor declared
        by the study, or too few clients are left.
    """
    assert spec.measurement is not None
    require_integer_ratings(spec, frame, family="latent")
    check_covariates(spec, frame)
    instruments = _check_outcomes(spec, frame)
    clients = frame.clients
    keep = np.ones(len(clients), dtype=bool)
    exclusions: dict[str, int] = {"clients_in_data": len(clients)}
    if spec.data.sample == "elevated":
        elevated = elevated_sample(spec, frame)
        exclusions["not_elevated_at_baseline"] = int((~elevated).sum())
        keep &= elevated
    if keep.sum() < 20:
        raise DesignError(f"spec {spec.name!r}: only {int(keep.sum())} client(s) in the sample")
    sub = frame.select(keep, narrow=True)
    c = sub.clients
    n = len(c)
    subscales = tuple(sub.subscales)
    exclusions["clients_in_measurement_model"] = n

    named = tuple(spec.predictors.covariates)
    for column in named:
        if column not in c or c[column].isna().all():
            raise DesignError(f"spec {spec.name!r} needs column {column!r}, absent from the data")
    complete_x = c[list(named)].notna().all(axis=1).to_numpy()
    exclusions["missing_covariate"] = int((~complete_x).sum())
    # The regression family's columns and coding, taken over the clients with every covariate
    # observed: only they enter an outcome's likelihood, so only they define the reference
    # level's presence, the levels estimated and the centring.
    columns = covariate_columns(c[complete_x], named, frame, spec.name)
    cov_names = columns.names
    # Column-major, as the clients table's columns always were: the same memory layout gives
    # the same sums in standardise, to the last bit, and so the same draws as before.
    x = np.full((n, len(cov_names)), np.nan, order="F")
    x[complete_x] = columns.values
    z, x_mean, x_sd = standardise(x)
    # Level indicators are centred only: their slopes stay differences from the reference.
    x_sd = np.where(columns.indicator, 1.0, x_sd)
    z = np.where(columns.indicator, x - x_mean, z)
    x = np.where(np.isnan(z), 0.0, z)

    outcomes = []
    for position, (outcome, instrument) in enumerate(
        zip(spec.measurement.outcomes, instruments, strict=True)
    ):
        for column in (outcome, instrument.baseline):
            if column not in c or c[column].isna().all():
                raise DesignError(
                    f"spec {spec.name!r} needs column {column!r}, absent from the data"
                    + other_outcomes(sub, column)
                )
        y = c[outcome].to_numpy(float)
        y0 = c[instrument.baseline].to_numpy(float)
        ok = ~np.isnan(y) & ~np.isnan(y0) & complete_x
        exclusions[f"missing_{outcome}"] = int(np.isnan(y).sum())
        sample = _outcome_sample(spec, sub, instrument, position)
        if sample is not None:
            key, elevated = sample
            exclusions[key] = int((ok & ~elevated).sum())
            ok &= elevated
        exclusions[f"clients_in_{outcome_short(outcome)}_likelihood"] = int(ok.sum())
        if ok.sum() < 10:
            raise DesignError(f"spec {spec.name!r}: fewer than 10 clients with {outcome!r}")
        idx = np.flatnonzero(ok)
        outcomes.append(
            OutcomeData(
                outcome=outcome,
                short=outcome_short(outcome),
                client_index=idx,
                y=y[idx],
                baseline=y0[idx],
                baseline_mean=float(y0[idx].mean()),
                prior_scale=_prior_scale(spec, instrument),
                instrument=instrument,
            )
        )

    mem = sub.memberships
    mem_client = mem["client_index"].to_numpy(np.int64)
    mem_provider = mem["provider_index"].to_numpy(np.int64)
    slot = pd.Series(
        np.arange(len(mem)), index=pd.MultiIndex.from_arrays([mem_client, mem_provider])
    )
    ses = sub.sessions
    ses_mem = slot.reindex(
        pd.MultiIndex.from_arrays(
            [ses["client_index"].to_numpy(np.int64), ses["provider_index"].to_numpy(np.int64)]
        )
    ).to_numpy()
    scale = rating_scale(sub)
    # a row per subscale, or per item (a reversed one turned) with several items per subscale
    items, item_subscale, ratings = item_ratings(sub, subscales, scale.low, scale.high)
    counts = np.zeros((len(ratings), len(mem), scale.n_categories), dtype=np.int64)
    for j, r in enumerate(ratings):
        ok = ~np.isnan(r)
        np.add.at(counts[j], (ses_mem[ok], scale.category_index(r[ok])), 1)
    observed = np.column_stack([c[f"alliance_{s}"].to_numpy(float) for s in subscales])
    between = np.column_stack([c[f"alliance_{s}_between"].to_numpy(float) for s in subscales])
    idx, weight = sub.membership_arrays()
    care = c["care_type"].astype(str).map({k: i for i, k in enumerate(sub.care_types)})
    ptype = (
        sub.providers["provider_type"]
        .astype(str)
        .map({k: i for i, k in enumerate(sub.provider_types)})
    )
    return LatentData(
        frame=sub,
        subscales=subscales,
        covariates=x,
        covariate_names=cov_names,
        covariate_means=x_mean,
        covariate_sds=x_sd,
        care_index=care.to_numpy(np.int64),
        mem_client=mem_client,
        mem_provider=mem_provider,
        mem_weight=mem["weight"].to_numpy(float),
        membership_index=np.asarray(idx, np.int64),
        membership_weight=np.asarray(weight, float),
        provider_type_index=ptype.to_numpy(np.int64),
        counts=counts,
        observed_scores=observed,
        between_mean=np.nanmean(between, axis=0),
        outcomes=tuple(outcomes),
        exclusions=exclusions,
        scale=scale,
        covariate_coding=columns.coding,
        items=items,
        item_subscale=item_subscale,
    )


# --------------------------------------------------------------------------------------------------
# the graded-response pieces (shared by the PyMC graph and the numpy recomputation)


@dataclass(frozen=True)
class RatingTerms:
    r"""Index arrays of the graded-response log density written on the non-empty cells only.

    With :math:`\ell_m = \alpha_s\theta_{ms}` (the linear predictor of membership :math:`m` on
    subscale :math:`s`), :math:`\eta_t = \ell_m - c_{s,t}` (:math:`t = 1..K-1`) and
    :math:`G_t = e^{-\eta_t} = e^{-\ell_m} e^{c_{s,t}}`, the probabilities of the categories
    :math:`k = 1..K` (the :math:`k`-th lowest rating) are, exactly,

    .. math::
        \log p_1 = c_{s,1} - \ell_m - P_1, \quad
        \log p_k = c_{s,k} - \ell_m + \log(1 - e^{-(c_{s,k} - c_{s,k-1})}) - P_{k-1} - P_k
        \;(1 < k < K), \quad
        \log p_K = -P_{K-1},

    with :math:`P_t = \log(1 + G_t)`, from
    :math:`p_k = \sigma(\eta_{k-1}) - \sigma(\eta_k) = e^{\ell}(e^{-c_{k-1}} - e^{-c_k}) /
    ((1 + e^{\ell - c_{k-1}})(1 + e^{\ell - c_k}))`, which has no cancellation at the ceiling.
    A cell (membership, subscale) therefore costs one ``exp``, and one ``log1p`` per threshold
    :math:`t` whose neighbouring categories :math:`t` or :math:`t+1` were rated there; the
    expected rating :math:`1 + \sum_t 1/(1 + G_t)` reuses the same :math:`G`.

    ``needed``: flat indices into the (subscale, membership, threshold) array of :math:`G` whose
    :math:`P_t` some rating uses. Per non-empty (subscale, membership, category) entry: ``cell``
    (flat (subscale, membership)), ``category`` (0..K-1), ``subscale_category`` (flat (subscale,
    category)), ``count``, and ``lower`` / ``upper``, the positions in ``needed`` of
    :math:`P_{k-1}` and :math:`P_k` (``len(needed)`` where the term is absent; that slot holds 0).
    ``n_categories`` is :math:`K`, the length of the counts' last axis.
    """

    needed: np.ndarray
    cell: np.ndarray
    category: np.ndarray
    subscale_category: np.ndarray
    count: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_categories: int = N_CATEGORIES

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> RatingTerms:
        """From the (subscale, membership, category) rating counts."""
        _, n_mem, n_cat = counts.shape
        n_thr = n_cat - 1
        uses = (counts[..., :-1] + counts[..., 1:]) > 0  # (S, M, threshold)
        needed = np.flatnonzero(uses)
        absent = uses.size
        slot = np.full(absent + 1, len(needed), dtype=np.int64)
        slot[needed] = np.arange(len(needed))
        s, m, k = np.nonzero(counts)
        base = (s * n_mem + m) * n_thr
        return cls(
            needed=needed,
            cell=s * n_mem + m,
            category=k,
            subscale_category=s * n_cat + k,
            count=counts[s, m, k].astype(float),
            lower=slot[np.where(k >= 1, base + k - 1, absent)],
            upper=slot[np.where(k < n_thr, base + np.minimum(k, n_thr - 1), absent)],
            n_categories=n_cat,
        )


def rating_loglik(terms: RatingTerms, linear, g, cut, gaps):
    r"""Log density of every session rating, per (subscale, category) rated.

    ``linear`` (subscale, membership) is :math:`\ell`, ``g`` (subscale, membership, threshold)
    :math:`G`, ``cut`` (subscale, threshold) the cut-points :math:`c` and ``gaps`` (subscale, gap)
    their differences (see :class:`RatingTerms`). PyTensor graph.
    """
    n_sub, n_cat = cut.shape[0], terms.n_categories
    entry = rating_entries(terms, linear, g, cut, gaps)
    total = pt.zeros((n_sub * n_cat,))[terms.subscale_category].inc(terms.count * entry)
    return total.reshape((n_sub, n_cat))


def rating_entries(terms: RatingTerms, linear, g, cut, gaps):
    """log P(r = k) of each (subscale, membership, category) entry of ``terms`` (PyTensor graph);
    :func:`rating_loglik` weights them by their counts."""
    n_sub = cut.shape[0]
    p_needed = pt.log1p(g.reshape((-1,))[terms.needed])
    p_pad = pt.concatenate([p_needed, pt.zeros((1,))])
    zero = pt.zeros((n_sub, 1))
    # c_k for k = 1..K-1 (0 for the top category) plus log(1 - e^{-gap}) for the middle ones
    const = pt.concatenate([cut, zero], axis=-1) + pt.concatenate(
        [zero, pt.log(-pt.expm1(-gaps)), zero], axis=-1
    )
    has_linear = (terms.category < terms.n_categories - 1).astype(float)
    return (
        const.reshape((-1,))[terms.subscale_category]
        - has_linear * linear.reshape((-1,))[terms.cell]
        - p_pad[terms.lower]
        - p_pad[terms.upper]
    )


def category_probs(g):
    r"""P(r = k) for the K categories, from :math:`G` (..., threshold): differences of
    :math:`\sigma(\eta_t) = 1/(1 + G_t)`, for predictive draws (clipped at 0 and renormalised
    against rounding at the ceiling)."""
    above = 1.0 / (1.0 + g)  # P(r > t)
    ones = pt.ones_like(above[..., :1])
    upper = pt.concatenate([ones, above], axis=-1)
    lower = pt.concatenate([above, pt.zeros_like(ones)], axis=-1)
    p = pt.maximum(upper - lower, 0.0)
    return p / p.sum(axis=-1, keepdims=True)


#: Trapezoid rule for expectations over a client's latent part, e ~ N(0, 1): nodes every 0.4 on
#: [-6, 6], weights proportional to the normal density. For an analytic integrand the rule
#: converges geometrically in 1/spacing: on a logistic item curve of discrimination alpha its
#: error grows like exp(-2 pi^2 / (0.4 alpha)), the curve's poles sitting at Im x = pi / alpha.
#: Against adaptive quadrature the largest error of one threshold's term is 2e-7 at alpha = 3,
#: 7e-6 at 4, 6e-5 at 5 and 6e-4 at 7 (Gauss-Hermite with as many nodes is far worse for steep
#: curves). The shipped study's posterior discriminations are 4.1-4.8, so a provider's alliance
#: on the 1-5 scale (four terms) is off by at most about 2e-4, 0.15% of the providers' SD (0.14)
#: there. The spacing trades this against speed: at 0.25 on [-7.5, 7.5] (61 nodes, 2e-9 at 4,
#: 2e-7 at 5) sampling the shipped study took a quarter longer. A mixture of six probits in
#: closed form (error 1.4e-7 for every alpha) was as dear as 61 nodes: its erfc calls cost more
#: than the rule's divisions.
QUADRATURE_NODES = np.arange(-15, 16) * 0.4
_WEIGHTS = np.exp(-0.5 * QUADRATURE_NODES**2)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def provider_expected_rating(a, disc, cut, low: float = 1.0):
    r"""Each provider's latent alliance on the rating scale: the expected rating of its clients.

    .. math::
        m_{ps} = \mathbb E_{e \sim \mathcal N(0,1)}\Big[L + \sum_{t=1}^{K-1}
            \operatorname{logit}^{-1}\big(\alpha_s(a_{ps} + e) - c_{s,t}\big)\Big]
        \approx L + \sum_q w_q \sum_t \frac{1}{1 + e^{-\alpha_s a_{ps}}
            e^{-\alpha_s x_q} e^{c_{s,t}}},

    with the nodes :math:`x_q` of :data:`QUADRATURE_NODES` and weights :math:`w_q \propto
    \phi(x_q)`.
    The client part is integrated out, so :math:`m_{ps}` is a function of the provider's latent
    part alone (the "doubly latent" between part of Marsh et al. 2009): unlike the caseload mean
    of its clients' scores it carries no sampling error from which clients it happened to see.
    ``a`` (provider, subscale), ``disc`` (subscale), ``cut`` (subscale, threshold), ``low`` the
    lowest rating :math:`L` (1 on the contract's items); PyTensor graph.
    """
    fa = pt.exp(-disc[None, :] * a)  # (P, S)
    fx = pt.exp(-disc[:, None] * QUADRATURE_NODES[None, :])  # (S, Q)
    g = fa[:, :, None, None] * fx[None, :, :, None] * pt.exp(cut)[None, :, None, :]
    return low + ((1.0 / (1.0 + g)).sum(axis=-1) * _WEIGHTS).sum(axis=-1)


def expected_rating_np(
    theta: np.ndarray, discrimination: np.ndarray, thresholds: np.ndarray, low: float = 1.0
):
    """E[r | theta] on the ratings ``low`` … ``low + K - 1`` (numpy; 1–5 by default, the K - 1
    thresholds on the last axis); ``theta[..., s]``, ``discrimination[..., s]``,
    ``thresholds[..., s, k]`` broadcast on their leading axes."""
    eta = discrimination[..., None] * (theta[..., None] - thresholds)
    return low + special.expit(eta).sum(axis=-1)


def lowest_rating(threshold: xr.DataArray) -> int:
    """The lowest rating :math:`L` of a stored ``threshold`` (subscale, cut): from its first cut's
    label (``"1|2"``: 1, ``"0|1"``: 0), or the contract's 1 where the cuts are not labelled."""
    if "cut" in threshold.coords:
        low, sep, _ = str(threshold["cut"].values[0]).partition("|")
        if sep and low.lstrip("-").isdigit():
            return int(low)
    return CONTRACT_SCALE.low


def _centred(z, axis: int = 0):
    """Centre ``z`` over ``axis``, rescaled so that each element keeps unit variance (PyTensor
    graph or numpy draws alike)."""
    n = z.shape[axis]
    return (z - z.mean(axis=axis, keepdims=True)) * np.sqrt(n / (n - 1.0))


def _centred_within(z, groups: np.ndarray, axis: int = 0):
    """Centre ``z`` over ``axis`` within each group (provider type), rescaled so that each element
    keeps unit variance; a group of one is left as it is. PyTensor graph (``axis=0``) or numpy
    draws (``axis=1``, the draw first)."""
    groups = np.asarray(groups)
    onehot = (groups[:, None] == np.unique(groups)[None, :]).astype(float)  # (P, T)
    size = onehot.sum(axis=0)
    onehot[:, size < 2] = 0.0
    share = onehot / np.maximum(size, 1.0)
    scale = np.sqrt(np.where(size > 1, size / np.maximum(size - 1.0, 1.0), 1.0))
    row_scale = onehot @ scale + (onehot.sum(axis=1) == 0)  # (P,)
    if axis == 0:
        return (z - pt.dot(onehot, pt.dot(share.T, z))) * row_scale[:, None]
    means = np.einsum("pt,dps->dts", share, z)
    return (z - np.einsum("pt,dts->dps", onehot, means)) * row_scale[None, :, None]


def observe_rating_table(
    n, counts: np.ndarray, totals: np.ndarray, linear, g, cut, gaps, rows: str = "subscale"
):
    """The observed variable ``ratings``: the (item, category) count table of the cells' ratings.

    ``n`` (item, cell) ratings per cell (an array or a data container), ``counts`` the (item,
    cell, category) ratings whose non-empty cells the log density visits, ``totals`` their
    (item, category) sums; ``linear``, ``g``, ``cut`` and ``gaps`` as in :func:`rating_loglik`.
    The log density is that of every rating; predictive draws are per-cell multinomials summed
    over the cells. ``rows`` names the first dimension: ``subscale`` (one item each), or ``item``
    where an instrument has several per subscale (the ratings family).
    """
    return pm.CustomDist(
        RATINGS,
        n,
        category_probs(g),
        rating_loglik(RatingTerms.from_counts(counts), linear, g, cut, gaps),
        dist=_ratings_dist,
        logp=_ratings_logp,
        signature="(m),(m,k),(k)->(k)",
        observed=totals,
        dims=(rows, "category"),
    )


def _ratings_dist(n, p, loglik, size):
    # Prior/posterior predictive: per-membership multinomials, summed over memberships.
    return pm.Multinomial.dist(n=n, p=p).sum(axis=-2)


def _ratings_logp(value, n, p, loglik):
    # The value is the observed (subscale, category) summary; the log density is that of every
    # session rating, computed in the graph from the cell counts (see RatingTerms).
    return loglik


def _cell_ratings_dist(n, p, logp, size):
    # Refittable form: the value is every (subscale, membership) cell's category counts.
    return pm.Multinomial.dist(n=n, p=p, size=size)


def _cell_ratings_logp(value, n, p, logp):
    # The multinomial coefficient is a constant of the data: left out, as in the summary form.
    return (value * logp).sum(axis=-1)


# --------------------------------------------------------------------------------------------------
def build_latent_model(
    spec: ModelSpec,
    data: LatentData,
    *,
    store_scores: bool = False,
    heldout: bool = False,
    refit: bool = False,
) -> pm.Model:
    """Build the joint measurement + outcome model (see the module docstring for the maths).

    ``store_scores=True`` adds the per-client true scores as a deterministic ``alliance_true``
    (client, subscale); off by default because it stores draws × clients numbers
    (:func:`latent_scores` recomputes them from the posterior instead).

    ``heldout=True`` builds the same parameters with each outcome's log density weighted per
    client by a data container ``outcome_weight_<short>`` (ones), as a ``Potential``: a weight of
    0 holds that client's follow-up out while the ratings stay in, so that one compiled model
    serves every fold of a K-fold run (:mod:`alliance_bayes.model.latent.heldout`).

    ``refit=True`` makes every datum a data container that a compiled model can swap (simulation-
    based calibration): the ratings are the observed (subscale, membership, category) counts
    ``rating_counts``, with a log density over every cell (not only the non-empty ones, which
    depend on the data), and the outcomes are ``y_observed`` and ``y_observed_<short>``. The
    log density is the same as the ordinary model's.
    """
    # the slope priors per alliance point on the items' own scale (4 / (H - L) on a declared one)
    pr, ms, h = model_priors(spec, data), spec.measurement, spec.hierarchy
    assert ms is not None
    n_sub = len(data.subscales)
    rows_dim = data.rows  # "subscale", or "item" with several items per subscale
    outs = data.outcomes
    with pm.Model(coords=data.coords()) as model:
        # ---- measurement: graded response with provider + client latent parts (non-centred)
        mem_client = pm.Data("mem_client", data.mem_client, dims="membership")
        mem_provider = pm.Data("mem_provider", data.mem_provider, dims="membership")
        mem_weight = pm.Data("mem_weight", data.mem_weight, dims="membership")
        pm.Data("alliance_observed", data.observed_scores, dims=("client", "subscale"))
        counts = pm.Data("rating_counts", data.counts, dims=(rows_dim, "membership", "category"))
        if data.several_items:
            pm.Data("item_subscale", data.item_subscale, dims="item")

        # Ordered cut-points on the logit scale, without a custom initial value (PyMC's model graph
        # tools refuse those): the highest is Normal, the gaps below it Half-Normal. Two choices
        # here decide how well the sampler mixes on the ceiling-heavy ratings:
        # - anchored at the top: the 4|5 cut-point is pinned by the many 5s, the 1|2 cut-point
        #   only loosely by the few 1s; built upwards from 1|2, the well-determined 4|5 would be
        #   a sum of every parameter, a strong posterior correlation between all of them;
        # - on the logit scale, c = alpha * kappa: eta = alpha * theta - c keeps c nearly
        #   orthogonal to alpha, while latent-scale thresholds kappa = c / alpha move with alpha.
        # The K - 2 gaps share the span of five categories' three (RatingScale.gap_prior_factor).
        # One set per item: the subscale's with one item per subscale, else each declared item's.
        cut_top = pm.Normal("cutpoint_top", 0.0, ms.threshold_sd, dims=rows_dim)
        gap_sd = ms.threshold_sd * data.scale.gap_prior_factor
        gaps = pm.HalfNormal("cutpoint_gap", gap_sd, dims=(rows_dim, "gap"))
        below = pt.cumsum(gaps[:, ::-1], axis=-1)[:, ::-1]  # c_{K-1} - c_k for k = 1..K-2
        cut = pt.concatenate([cut_top[:, None] - below, cut_top[:, None]], axis=-1)
        disc = pm.LogNormal("discrimination", 0.0, ms.discrimination_sd, dims=rows_dim)
        pm.Deterministic("threshold", cut / disc[:, None], dims=(rows_dim, "cut"))
        rows, cols = np.tril_indices(n_sub, k=-1)
        # Centred over clients (and over providers within each provider type): the latent
        # location is carried by the thresholds alone, and the type difference by
        # provider_type_alliance alone. Otherwise shifting every z and every threshold together
        # is a narrow ridge (width 1/sqrt(n)) that a diagonal mass matrix cannot adapt to; after
        # centring, the means of z are free standard normal directions the likelihood ignores.
        z_client = _centred(pm.Normal("z_client_alliance", 0.0, 1.0, dims=("client", "subscale")))
        sd_a = group_sd(spec, "sd_provider_alliance", ms.sd_provider_alliance_sd, dims="subscale")
        if n_sub > 1:
            chol_e = pm.LKJCorr("chol_client_alliance", n=n_sub, eta=pr.lkj_eta)
            chol_a = pm.LKJCorr("chol_provider_alliance", n=n_sub, eta=pr.lkj_eta)
            pm.Deterministic(
                "corr_client_alliance", (chol_e @ chol_e.T)[rows, cols], dims="subscale_pair"
            )
            pm.Deterministic(
                "corr_provider_alliance", (chol_a @ chol_a.T)[rows, cols], dims="subscale_pair"
            )
            conditional_sd = sd_a * pt.diag(chol_a)
        else:
            conditional_sd = sd_a
        # Standard normal provider draws summing to 0 within each type, sampled as within-type
        # contrasts partially non-centred by the information on each provider (provider_effects):
        # with 10-25 clients a provider the data outweigh the prior. Rescaled to unit variance here.
        z_prov = _centred_within(
            pm.Deterministic(
                "z_provider_alliance",
                provider_alliance_z(data, conditional_sd),
                dims=("provider", "subscale"),
            ),
            data.provider_type_index,
        )
        if n_sub > 1:
            e = pt.dot(z_client, chol_e.T)
            a = pt.dot(z_prov, chol_a.T) * sd_a
        else:
            e, a = z_client, z_prov * sd_a
        # Provider-type means of the latent alliance: each type but the reference against it
        # (therapists against coaches under the contract's types). The indicators are centred
        # over providers, like z above, so that the differences do not move the overall location,
        # which the thresholds carry (uncentred, it was the slowest direction).
        # A study of one provider type has no shift (and no indicators): a zero-length variable
        # breaks the prior predictive.
        if data.provider_contrasts:
            a = a + _provider_type_shift(data, ms.provider_type_alliance_sd)
        theta = a[mem_provider] + e[mem_client]  # (membership, subscale)
        # (row, M): alpha_j theta of the item's subscale (the subscale itself with one item each)
        theta_rows = theta.T[data.item_subscale] if data.several_items else theta.T
        linear = disc[:, None] * theta_rows
        g = pt.exp(-linear)[:, :, None] * pt.exp(cut)[:, None, :]  # (S, M, K-1): exp(-eta)
        if refit:
            every = RatingTerms.from_counts(np.ones_like(data.counts))
            pm.CustomDist(
                RATINGS,
                data.counts.sum(axis=-1),
                category_probs(g),
                rating_entries(every, linear, g, cut, gaps).reshape(data.counts.shape),
                dist=_cell_ratings_dist,
                logp=_cell_ratings_logp,
                signature="(),(k),(k)->(k)",
                observed=counts,
                dims=(rows_dim, "membership", "category"),
            )
        else:
            observe_rating_table(
                counts.sum(axis=-1),
                data.counts,
                data.category_totals,
                linear,
                g,
                cut,
                gaps,
                rows_dim,
            )

        # ---- true scores on the rating scale and the doubly latent within/between split
        low = float(data.scale.low)
        expected = low + (1.0 / (1.0 + g)).sum(axis=-1)  # (row, M) expected rating
        if data.several_items:  # a subscale's is the mean of its items' (the averaged score)
            expected = pt.dot(data.item_means, expected)
        tau_m = expected.T  # (M, S)
        n_clients = data.n_clients
        tau = pt.zeros((n_clients, n_sub))[mem_client].inc(mem_weight[:, None] * tau_m)
        if data.several_items:
            prov_items = provider_expected_rating(a[:, data.item_subscale], disc, cut, low)
            prov_level = pt.dot(prov_items, data.item_means.T)  # (provider, S)
        else:
            prov_level = provider_expected_rating(a, disc, cut, low)  # (provider, S)
        between = pt.zeros((n_clients, n_sub))[mem_client].inc(
            mem_weight[:, None] * prov_level[mem_provider]
        )
        within = tau - between
        if store_scores:
            pm.Deterministic("alliance_true", tau, dims=("client", "subscale"))
        pm.Deterministic("alliance_provider", prov_level, dims=("provider", "subscale"))
        parts = pt.stack([within, between - data.between_mean], axis=-1)  # (client, S, level)

        # ---- outcomes (who5_change structure with an outcome dimension)
        scale = np.array([o.prior_scale for o in outs])
        n_out = len(outs)
        x = pm.Data("x_covariate", data.covariates, dims=("client", "covariate"))
        alpha = pm.Normal(
            "alpha", np.array([o.y.mean() for o in outs]), pr.intercept_sd * scale, dims="outcome"
        )
        b_baseline = pm.Normal("b_baseline", 0.0, pr.b_baseline_sd, dims="outcome")
        b_cov, _ = covariate_slopes(
            pr.b_covariate_sd * scale[:, None], data.covariate_sds, dims=("outcome", "covariate")
        )
        care = (
            care_intercepts(
                pr.b_care_sd * scale[:, None], reference=data.reference_index, dims=("outcome",)
            )
            if h.care_type_intercepts
            else None
        )
        dims_b = ("outcome", "care_type", "subscale", "level")
        if h.care_type_pooling:
            mu_b = pm.Normal(
                "mu_b",
                0.0,
                pr.mu_b_sd * scale[:, None, None],
                dims=("outcome", "subscale", "level"),
            )
            if h.care_slope_sd == "estimated":
                sd_b = pm.HalfNormal(
                    "sd_b",
                    pr.sd_b_sd * scale[:, None, None],
                    dims=("outcome", "subscale", "level"),
                )
            else:  # fixed spread across care types, as in who5_change
                sd_b = pr.sd_b_sd * scale[:, None, None]
            z_b = pm.Normal("z_b", 0.0, 1.0, dims=dims_b)
            b = pm.Deterministic("b", mu_b[:, None] + sd_b[:, None] * z_b, dims=dims_b)
        else:
            b = pm.Normal("b", 0.0, pr.mu_b_sd * scale[:, None, None, None], dims=dims_b)
        if h.provider_intercepts:
            # Gamma(2) or Half-Normal SDs, each intercept partially non-centred by its data
            u = outcome_provider_intercepts(spec, data, scale)
            # (outcome, client): multiple-membership provider intercepts
            u_client = (data.membership_weight[None] * u[:, data.membership_index]).sum(axis=-1)
        sigma = pm.HalfNormal("sigma", pr.sigma_sd * scale, dims="outcome")
        if n_out == 2:
            r01 = pm.Beta("rho_outcomes_raw", pr.lkj_eta, pr.lkj_eta)  # LKJ(eta) marginal for 2x2
            rho = pm.Deterministic("rho_outcomes", 2.0 * r01 - 1.0)

        mus = []
        for k, o in enumerate(outs):
            idx = o.client_index
            base = pm.Data("baseline" if k == 0 else f"baseline_{o.short}", o.baseline, dims=o.dim)
            mu = (
                alpha[k]
                + b_baseline[k] * (base - o.baseline_mean)
                + pt.dot(x[idx], b_cov[k])
                + (b[k][data.care_index[idx]] * parts[idx]).sum(axis=(1, 2))
            )
            if care is not None:
                mu = mu + care[k][data.care_index[idx]]
            if h.provider_intercepts:
                mu = mu + u_client[k][idx]
            mus.append(mu)

        def outcome(name, o, mu, sd):
            if heldout:
                w = pm.Data(f"outcome_weight_{o.short}", np.ones(len(o.y)), dims=o.dim)
                pm.Potential(f"{name}_weighted", (w * pm.logp(pm.Normal.dist(mu, sd), o.y)).sum())
                return o.y
            y = pm.Data(f"y_observed{name[1:]}", o.y, dims=o.dim) if refit else o.y
            return pm.Normal(name, mu=mu, sigma=sd, observed=y, dims=o.dim)

        first = outs[0]
        y1 = outcome("y", first, mus[0], sigma[0])
        if n_out == 2:
            second = outs[1]
            pos = pd.Series(np.arange(len(first.client_index)), index=first.client_index)
            where = pos.reindex(second.client_index).to_numpy()
            both = ~np.isnan(where)
            at = np.where(both, where, 0).astype(np.int64)
            # The observed variable itself, so that predictive draws of the second outcome are
            # conditional on drawn (not observed) first outcomes; its log density uses the data.
            resid1 = (y1 - mus[0])[at]
            mean2 = mus[1] + both * rho * sigma[1] / sigma[0] * resid1
            sd2 = sigma[1] * pt.sqrt(1.0 - both * rho**2)
            outcome(f"y_{second.short}", second, mean2, sd2)
    return model


def _provider_type_shift(data: LatentData, prior_sd: float) -> pt.TensorVariable:
    r"""Each provider's provider-type shift of the latent alliance, (provider, subscale):
    :math:`x_p^\top \delta_s` with :math:`x_p` its centred indicators of the non-reference types
    (stored as constant data) and :math:`\delta \sim \mathcal N(0, s_\delta)`
    (``provider_type_alliance``; a vector per subscale under the contract's therapists against
    coaches)."""
    name, dims, indicators = data.provider_type_constant()
    x_type = pm.Data(name, indicators, dims=dims)
    if data.provider_shift_is_scalar:
        type_shift = pm.Normal("provider_type_alliance", 0.0, prior_sd, dims="subscale")
        return x_type[:, None] * type_shift
    type_shift = pm.Normal(
        "provider_type_alliance", 0.0, prior_sd, dims=("provider_type_contrast", "subscale")
    )
    return pt.dot(x_type, type_shift)


# --------------------------------------------------------------------------------------------------
def latent_scores(posterior: xr.Dataset, constant: xr.Dataset) -> xr.DataArray:
    r"""Per-client true scores on the rating scale, recomputed from posterior draws.

    Parameters
    ----------
    posterior : xarray.Dataset
        The ``posterior`` group of a latent-alliance fit (or a thinned copy of it); needs the
        client latent draws ``z_client_alliance``.
    constant : xarray.Dataset
        Its ``constant_data`` (``mem_client``, ``mem_provider``, ``mem_weight``, and the centred
        provider-type indicators: ``provider_therapist`` under the contract's types, else
        ``provider_type_design``; with several items per subscale also ``item_subscale``).

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, client, subscale)``: :math:`\tau_{is} = \sum_p w_{ip} E[r \mid
        \theta_{ips}]`, the quantity the model's outcome regressions use.
    """
    s = posterior.stack(sample=("chain", "draw")).transpose("sample", ...)
    # axis 0 is the draw: centre over clients (providers), as the model graph does
    z_c = _centred(s["z_client_alliance"].transpose("sample", "client", "subscale").values, 1)
    n_providers = posterior.sizes["provider"]
    indicators = _type_indicators(constant, n_providers)  # (provider, provider contrast)
    # a provider type's providers share one row of centred indicators, and only they do; with
    # one provider type there are no indicators and every provider is of that type
    types = np.zeros(len(indicators), dtype=np.int64)
    if indicators.shape[1]:
        _, types = np.unique(indicators, axis=0, return_inverse=True)
    z_p = _centred_within(
        s["z_provider_alliance"].transpose("sample", "provider", "subscale").values,
        types.ravel(),
        axis=1,
    )
    sd_a = s["sd_provider_alliance"].transpose("sample", "subscale").values
    if "chol_client_alliance" in s:
        lc = s["chol_client_alliance"].values  # (sample, S, S): sample is first after transpose
        lp = s["chol_provider_alliance"].values
        e = np.einsum("dcs,dts->dct", z_c, lc)
        a = np.einsum("dps,dts->dpt", z_p, lp) * sd_a[:, None, :]
    else:
        e, a = z_c, z_p * sd_a[:, None, :]
    if "provider_type_alliance" in s:  # none in a study of one provider type
        shift = s["provider_type_alliance"]
        if THERAPIST_INDICATOR not in constant:
            shift = shift.transpose("sample", "provider_type_contrast", "subscale").values
        else:  # the contract's one shift, per subscale
            shift = shift.transpose("sample", "subscale").values[:, None, :]
        a = a + np.einsum("pc,dcs->dps", indicators, shift)
    mc = constant["mem_client"].values.astype(int)
    mp = constant["mem_provider"].values.astype(int)
    w = constant["mem_weight"].values
    theta = a[:, mp] + e[:, mc]  # (sample, M, S)
    rows = "item" if "item" in s["discrimination"].dims else "subscale"
    disc = s["discrimination"].transpose("sample", rows).values[:, None, :]
    kappa = s["threshold"].transpose("sample", rows, "cut").values[:, None]
    low = lowest_rating(posterior["threshold"])
    if rows == "item":  # each item on its subscale's theta; a subscale's the mean of its items'
        owner = constant["item_subscale"].values.astype(np.int64)
        tau_items = expected_rating_np(theta[..., owner], disc, kappa, low)
        tau_m = tau_items @ subscale_means(owner, theta.shape[-1]).T
    else:
        tau_m = expected_rating_np(theta, disc, kappa, low)
    out = np.zeros((s.sizes["sample"], posterior.sizes["client"], tau_m.shape[-1]))
    np.add.at(out, (slice(None), mc), w[None, :, None] * tau_m)
    scores = xr.DataArray(
        out,
        dims=("sample", "client", "subscale"),
        coords={
            "sample": s["sample"],
            "client": posterior["client"].values,
            "subscale": posterior["subscale"].values,
        },
        name="alliance_true",
    )
    return scores.unstack("sample").transpose("chain", "draw", "client", "subscale")


def _type_indicators(constant: xr.Dataset, n_providers: int) -> np.ndarray:
    """The centred provider-type indicators of a fit's constant data as (provider, contrast):
    no columns for a study of one provider type, which stores none."""
    if THERAPIST_INDICATOR in constant:
        return constant[THERAPIST_INDICATOR].values[:, None]
    if TYPE_DESIGN in constant:
        return constant[TYPE_DESIGN].transpose("provider", ...).values
    return np.zeros((n_providers, 0))


LATENT_GROUP = "latent_alliance"


def store_latent_scores(dt: xr.DataTree, draws_per_chain: int) -> xr.DataTree:
    """Replace the client latent draws by the clients' true scores, thinned, in their own group.

    The raw ``z_client_alliance`` draws are (draws × clients × subscales) float64, about 0.5 GB
    for the shipped study at the default settings, and only meaningful through the model's
    transformation. What a reader needs is each client's true score on the rating scale with its
    uncertainty: :func:`latent_scores` of every ``thin``-th draw, float32, as
    ``dt["latent_alliance"]["alliance_true"]`` (chain, draw, client, subscale), where ``draw``
    keeps the original draw numbers (the log prior is already summed per variable). Call it
    after the convergence gate, which checks every element of the posterior,
    ``z_client_alliance`` included.
    """
    post = dt["posterior"].to_dataset()
    thin = max(1, post.sizes["draw"] // draws_per_chain)
    scores = latent_scores(
        post.isel(draw=slice(None, None, thin)), dt["constant_data"].to_dataset()
    )
    out = dt.copy()
    out[LATENT_GROUP] = xr.Dataset({"alliance_true": scores.astype("float32")})
    out[LATENT_GROUP].attrs["thinned_every"] = thin
    out["posterior"] = post.drop_vars("z_client_alliance")
    return out
