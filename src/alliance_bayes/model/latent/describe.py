r"""The latent-alliance model in equations and its priors (for the report's Model and Priors sections).

The outcome part is the ``who5_change`` structure on the true scores, so its lines come from
:mod:`alliance_bayes.model.regression.describe`; the measurement part is added here (see
:mod:`alliance_bayes.model.latent.measurement` for the maths).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from alliance_bayes.model.regression import describe as regression
from alliance_bayes.model.spec import ModelSpec

__all__ = ["data_variables", "equations", "prior_rows"]


def _outcome_view(spec: ModelSpec) -> ModelSpec:
    return replace(spec, predictors=replace(spec.predictors, alliance="subscales"))


def equations(spec: ModelSpec) -> list[str]:
    """Measurement lines, then the outcome lines on the true scores."""
    measurement = [
        r"P(r_{ijs} \geq k) = \mathrm{logit}^{-1}(\alpha_s(\theta_{ips} - \kappa_{s,k-1})), "
        r"\quad k = 2, \ldots, 5",
        r"\theta_{ips} = a_{ps} + e_{is}, \quad e_i \sim \mathcal{N}(0, \Omega_e), "
        r"\quad a_p \sim \mathcal{N}(0, D_a \Omega_a D_a)",
        r"\tau_{ips} = 1 + \sum_{k=1}^{4} \mathrm{logit}^{-1}(\alpha_s(\theta_{ips} - \kappa_{s,k})), "
        r"\quad \tau_{is} = \sum_p w_{ip} \tau_{ips}",
    ]
    joint = []
    if spec.measurement is not None and len(spec.measurement.outcomes) == 2:
        # Each outcome has its own copy of the outcome part; their residuals are correlated.
        joint = [
            r"(\varepsilon_{1i}, \varepsilon_{2i}) \sim \mathcal{N}(0, \Sigma), \quad "
            r"\rho = \mathrm{corr}(\varepsilon_1, \varepsilon_2)"
        ]
    return measurement + regression.equations(_outcome_view(spec)) + joint


def data_variables(spec: ModelSpec) -> list[str]:
    """Symbols of :func:`equations`."""
    return [
        "$r_{ijs}$: client $i$'s rating (1–5) of item $s$ at session $j$ with provider $p$; "
        "$\\theta_{ips}$: its latent alliance, a provider part $a_{ps}$ plus a client part $e_{is}$ "
        "(unit SD); $\\tau$: the expected rating (1–5), the true score the averaged score estimates.",
        "$W_{is}$, $B_{is}$: the within- and between-provider parts of the true score $\\tau_{is}$ "
        "(the frame's definitions applied to true scores).",
        # The outcome part's symbols, except the averaged-score split the true scores replace.
        *(v for v in regression.data_variables(_outcome_view(spec)) if not v.startswith("$W_")),
    ]


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[regression.PriorRow]:
    """The outcome part's priors (on the first outcome's metric) and the measurement priors."""
    m = spec.measurement
    rows = regression.prior_rows(_outcome_view(spec), scales)
    if m is None:
        return rows
    return [
        *rows,
        regression.PriorRow(
            "c_{s,4} (top cut-point), gaps below it",
            f"Normal(0, {m.threshold_sd:g}); Half-Normal({m.threshold_sd:g})",
            "logit units",
            "Anchored at the well-determined 4|5 cut-point; ±6 logits spans every category share "
            "from 0.25% to 99.75%.",
        ),
        regression.PriorRow(
            "α_s (discrimination)",
            f"LogNormal(0, {m.discrimination_sd:g})",
            "per client latent SD",
            "Median 1; a factor of e either way at 1 prior SD.",
        ),
        regression.PriorRow(
            "σ^a_s (provider part of the latent alliance)",
            f"Half-Normal({m.sd_provider_alliance_sd:g})",
            "client latent SDs",
            "Alliance ICCs of a few per cent (Baldwin et al. 2007) put the provider SD near a "
            "fifth of the client SD.",
        ),
        regression.PriorRow(
            "Ω_e, Ω_a (latent correlations)",
            f"LKJ({spec.priors.lkj_eta:g})",
            "correlations",
            "Favours small correlations without ruling out the large goal–bond correlation.",
        ),
    ]
