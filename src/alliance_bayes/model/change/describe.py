"""The change model in equations and its priors (the report's Model and Priors sections)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alliance_bayes.model.change.graph import beta_parameters
from alliance_bayes.model.regression.describe import PriorRow
from alliance_bayes.model.spec import ModelSpec

__all__ = ["data_variables", "equations", "prior_rows"]


def equations(spec: ModelSpec) -> list[str]:
    """The measurement model, the true scores, and what the estimands condition on."""
    return [
        r"y_i \equiv X_{2i} = T_{2i} + e_{2i}, \quad X_{1i} = T_{1i} + e_{1i}, "
        r"\quad e_{ti} \sim \mathcal{N}(0, \sigma_e^2), \quad \sigma_e^2 = (1 - \rho)\, s_{X_1}^2",
        r"(T_{1i}, T_{2i}) \sim \mathcal{N}_2, \quad \mathbb{E}\,T_{1i} = \mu_{1c(i)}, \quad "
        r"\mathbb{E}\,T_{2i} = \mu_{2c(i)} + v_i, \quad \mathrm{SD}(T_t) = \tau_t, \quad "
        r"\mathrm{corr}(T_1, T_2) = r",
        r"v_i = \sum_p w_{ip} u_p, \quad u_p \sim \mathcal{N}(0, \sigma_{u,\mathrm{type}(p)}^2)",
        r"\Delta = \mathbb{E}[X_2 - X_1 \mid X_1 \in E], \quad "
        r"\Delta_T = \mathbb{E}[T_2 - T_1 \mid X_1 \in E], \quad "
        r"RC = 1.96\sqrt{2}\, s_{X_1}\sqrt{1 - \rho}",
    ]


def data_variables(spec: ModelSpec) -> list[str]:
    """Symbols of :func:`equations`."""
    d = spec.data
    rule = (
        f"PHQ-9 baseline >= {d.phq9_cutoff:g}"
        if spec.outcome.startswith("phq9")
        else f"WHO-5 baseline <= {d.who5_cutoff:g}"
    )
    return [
        f"$X_{{1i}}$, $X_{{2i}}$: client $i$'s observed baseline and follow-up (in {spec.outcome_units}); "
        "$T$: the true scores; $c(i)$: care type; $w_{ip}$: the share of the client's sessions "
        "with provider $p$ (multiple membership). Every client enters with the baseline; the "
        "follow-up where observed (missing at random given baseline, care type and providers).",
        f"$E$: elevated at baseline, the observed {rule} (the paper's rule); $s_{{X_1}}$: the SD "
        "of the observed baseline over every client; $\\rho$: test–retest reliability.",
        "The estimands are closed forms of each draw given a client's observed baseline "
        "(conditional normal means and probabilities), averaged over the study's elevated "
        "clients' own baselines, those without a follow-up included; the standardised change "
        "divides by $s_{X_1}$.",
    ]


def prior_rows(spec: ModelSpec, scales: Mapping[str, Any]) -> list[PriorRow]:
    """One row per prior, on the outcome's own metric."""
    c = spec.change
    assert c is not None
    a, b = beta_parameters(c.reliability_mean, c.reliability_sd)
    units = spec.outcome_units
    return [
        PriorRow(
            "ρ (test–retest reliability)",
            f"Beta({a:.1f}, {b:.1f}): mean {c.reliability_mean:g}, SD {c.reliability_sd:g}",
            "0–1",
            c.reliability_source or "The instrument's published test–retest reliability.",
        ),
        PriorRow(
            "μ_1c (mean true baseline per care type)",
            f"Normal(sample mean, {c.true_mean_sd:g})",
            units,
            "Centred on the observed baseline mean; weak on the instrument's range.",
        ),
        PriorRow(
            "μ_2c − μ_1c (mean true change per care type)",
            f"Normal(0, {c.true_change_sd:g})",
            units,
            "Centred on no change; a change of a whole baseline SD is about one prior SD.",
        ),
        PriorRow(
            "τ_1, τ_2 (client SD of the true scores)",
            f"Half-Normal({c.true_sd_sd:g})",
            units,
            "Covers the observed SDs without forcing them.",
        ),
        PriorRow(
            "r (true baseline–follow-up correlation)",
            "2·Beta(2, 2) − 1",
            "correlation",
            "Symmetric about 0, no mass piled at ±1.",
        ),
        PriorRow(
            "σ_u (provider SD of the follow-up, per provider type)",
            f"Half-Normal({spec.priors.sd_provider_sd:g})",
            units,
            "Provider effects on outcomes are usually a few points (a few per cent of variance).",
        ),
    ]
