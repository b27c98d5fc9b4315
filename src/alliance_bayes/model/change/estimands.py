r"""Change among the clients elevated at baseline, with the regression to the mean separated out.

Every estimand is a function of one posterior draw under the bivariate normal of
:mod:`alliance_bayes.model.change.graph` (no Monte Carlo noise). On the oriented scale
:math:`Y = sX` (:math:`s = +1` where the instrument declares higher scores better, as the WHO-5;
:math:`-1` where lower ones are, as the PHQ-9 or GAD-7; see
:func:`~alliance_bayes.model.change.design.direction`), improvement is an increase and "elevated"
is :math:`Y_1 \le c`, :math:`c = s \cdot \mathrm{cutoff}` (the instrument's cut-off). For a care
type with true means :math:`m_1, m_2` (:math:`m_2` including the mean provider effect of its
clients), true SDs :math:`\tau_1, \tau_2`, true correlation :math:`r`, error SD :math:`\sigma_e`,
:math:`V_1 = \tau_1^2 + \sigma_e^2` and :math:`C = r\tau_1\tau_2`, a client with observed baseline
:math:`y` has

.. math::

    \mathbb{E}[Y_2 - Y_1 \mid y] = m_2 - m_1 + \frac{C - V_1}{V_1}(y - m_1), \qquad
    \mathbb{E}[T_2 - T_1 \mid y] = m_2 - m_1 + \frac{C - \tau_1^2}{V_1}(y - m_1),

and their difference, the regression to the mean, is :math:`(\sigma_e^2/V_1)(m_1 - y)`, i.e.
:math:`(1 - \rho)(m_1 - y)` (Barnett et al. 2005, doi:10.1093/ije/dyh299): the error part of a low
baseline does not recur. The estimands average these over the **study's elevated clients' own
observed baselines** (:func:`change_given_baselines`; clients without a follow-up included, missing
at random), per care type and over all (``[all]``: every elevated client, so care types weigh by
their elevated clients). Only the conditional means given :math:`y` rest on normality, not the
shape of the baseline distribution: the shipped study's baseline is a mixture, and a normal
marginal put the selected mean 3 points too low. :func:`selected_change` gives the same
quantities for a normal baseline (the truncated-normal mean
:math:`\mathbb{E}[Y_1 \mid Y_1 \le c] = m_1 - \sqrt{V_1}\,\varphi(a)/\Phi(a)`,
:math:`a = (c - m_1)/\sqrt{V_1}`), the closed form the tests and simulators check against.

The Jacobson–Truax classification (doi:10.1037/0022-006X.59.1.12) uses the reliable-change
criterion :math:`RC = 1.96\sqrt{2}\, s_{X_1}\sqrt{1-\rho} = 1.96\sqrt{2}\,\sigma_e` in outcome
points (:math:`s_{X_1}` the SD of the observed baseline over every client, :math:`\rho` the
posterior test–retest reliability, whose prior a reliability the study declares for the
instrument centres): reliably improved :math:`Y_2 - Y_1 \ge RC` (a move of at least RC in the
instrument's better direction), recovered also :math:`Y_2 > c` (past the cut-off at follow-up),
reliably deteriorated :math:`Y_2 - Y_1 \le -RC`. Given :math:`y`, each is a normal probability
(:math:`Y_2 \mid y` is normal, its variance including the provider spread of the care type), then
averaged as the means are. These are the expected shares of the elevated clients, not counts of
the observed ones.

With client covariates (:mod:`alliance_bayes.model.change.graph`), centred at the sample's
means, :math:`m_1, m_2` are the care type's means shifted by the elevated clients' own mean
covariates (:math:`\bar x_E^\top\beta_1`, :math:`\bar x_E^\top(\beta_1 + \delta)`), so that
a covariate that predicts a low baseline but not the change leaves the change estimands where
they are without it; the shares reliably improved or recovered take that mean shift for every
elevated client.
Each covariate column (``age``, ``diagnosis[anxiety]``) also has its slopes, in outcome points
per unit of the column (a level against the reference): ``baseline:b_<column>`` on the true
baseline, ``followup:b_<column>`` on the true follow-up and ``change:b_<column>`` on the true
change, their difference (the expected observed change too, the errors having mean 0). The
``b_<column>`` part is the regression family's name for a covariate slope, so that the report
labels a declared covariate's slopes by its declared label and reference level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import ndtr, ndtri

from alliance_bayes.model.regression.estimands import _covariate_units

__all__ = [
    "QUADRATURE_NODES",
    "change_given_baselines",
    "compute_change_estimands",
    "covariate_estimands",
    "reliable_change",
    "selected_change",
]

#: Quantile nodes of the truncated normal baseline in :func:`selected_change`'s shares.
QUADRATURE_NODES = 400
_SAMPLE_DIMS = ("chain", "draw")
_TINY = 1e-300


def reliable_change(baseline_sd: float | np.ndarray, reliability: float | np.ndarray):
    r"""The Jacobson–Truax reliable-change criterion :math:`1.96\sqrt{2}\,SD\sqrt{1-\rho}`."""
    return 1.96 * np.sqrt(2.0) * np.asarray(baseline_sd) * np.sqrt(1.0 - np.asarray(reliability))


def selected_change(
    m1: np.ndarray,
    m2: np.ndarray,
    tau1: np.ndarray,
    tau2: np.ndarray,
    corr: np.ndarray,
    sigma_e: np.ndarray,
    var_v: np.ndarray | float,
    cutoff: float,
) -> dict[str, np.ndarray]:
    """Change among those with an observed baseline at or below ``cutoff`` (oriented scale).

    Every argument broadcasts (e.g. one value per posterior draw). Returns ``p_selected``,
    ``observed`` (expected observed change), ``true`` (expected true change), ``rtm`` (their
    difference), ``improved``, ``recovered``, ``deteriorated`` (Jacobson–Truax shares); see the
    module docstring.
    """
    m1, m2, tau1, tau2, corr, sigma_e, var_v = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (m1, m2, tau1, tau2, corr, sigma_e, var_v))
    )
    v1 = tau1**2 + sigma_e**2
    sd1 = np.sqrt(v1)
    cov = corr * tau1 * tau2
    a = (cutoff - m1) / sd1
    p = ndtr(a)
    lam = np.exp(-0.5 * a**2) / np.sqrt(2.0 * np.pi) / np.maximum(p, _TINY)
    shift = -sd1 * lam  # E[Y1 | Y1 <= c] - m1
    observed = m2 - m1 + (cov - v1) / v1 * shift
    true = m2 - m1 + (cov - tau1**2) / v1 * shift

    u = (np.arange(QUADRATURE_NODES) + 0.5) / QUADRATURE_NODES
    y1 = m1[..., None] + sd1[..., None] * ndtri(np.maximum(u * p[..., None], _TINY))
    shares = _shares(
        y1,
        np.full(QUADRATURE_NODES, 1.0 / QUADRATURE_NODES),
        m1,
        m2,
        tau2,
        cov,
        v1,
        sigma_e,
        var_v,
        cutoff,
    )
    return {"p_selected": p, "observed": observed, "true": true, "rtm": observed - true, **shares}


def _shares(y1, weight, m1, m2, tau2, cov, v1, sigma_e, var_v, cutoff) -> dict[str, np.ndarray]:
    """Jacobson–Truax shares averaged over baselines ``y1`` (last axis) with ``weight``."""
    mean2 = m2[..., None] + (cov / v1)[..., None] * (y1 - m1[..., None])
    sd2 = np.sqrt(np.maximum(tau2**2 + sigma_e**2 + var_v - cov**2 / v1, _TINY))[..., None]
    rc = (1.96 * np.sqrt(2.0) * sigma_e)[..., None]
    return {
        "improved": ndtr((mean2 - y1 - rc) / sd2) @ weight,
        "recovered": ndtr((mean2 - np.maximum(y1 + rc, cutoff)) / sd2) @ weight,
        "deteriorated": ndtr((y1 - rc - mean2) / sd2) @ weight,
    }


def change_given_baselines(
    baselines: np.ndarray,
    counts: np.ndarray,
    m1: np.ndarray,
    m2: np.ndarray,
    tau1: np.ndarray,
    tau2: np.ndarray,
    corr: np.ndarray,
    sigma_e: np.ndarray,
    var_v: np.ndarray | float,
    cutoff: float,
) -> dict[str, np.ndarray]:
    r"""Change of clients with the given observed baselines (oriented scale), averaged over them.

    Given :math:`Y_1 = y`, :math:`\mathbb{E}[Y_2 \mid y] = m_2 + (C/V_1)(y - m_1)` and
    :math:`\mathbb{E}[T_1 \mid y] = m_1 + (\tau_1^2/V_1)(y - m_1)`, so the regression to the mean
    of a client is :math:`(\sigma_e^2/V_1)(m_1 - y)`, i.e. :math:`(1-\rho)(m_1 - y)` (Barnett et
    al. 2005). ``baselines`` (distinct values) and ``counts`` are the elevated clients' observed
    baselines; the keys are those of :func:`selected_change` but ``p_selected``.
    """
    m1, m2, tau1, tau2, corr, sigma_e, var_v = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (m1, m2, tau1, tau2, corr, sigma_e, var_v))
    )
    weight = np.asarray(counts, dtype=float) / np.sum(counts)
    y = np.asarray(baselines, dtype=float)
    v1 = tau1**2 + sigma_e**2
    cov = corr * tau1 * tau2
    shift = float(y @ weight) - m1  # mean observed baseline of the selected, about m1
    observed = m2 - m1 + (cov - v1) / v1 * shift
    true = m2 - m1 + (cov - tau1**2) / v1 * shift
    y1 = np.broadcast_to(y, (*m1.shape, y.size))
    shares = _shares(y1, weight, m1, m2, tau2, cov, v1, sigma_e, var_v, cutoff)
    return {"observed": observed, "true": true, "rtm": observed - true, **shares}


def _draws(posterior: xr.Dataset, name: str, **sel: str) -> np.ndarray:
    da = posterior[name].sel(sel) if sel else posterior[name]
    return np.asarray(da.transpose(*_SAMPLE_DIMS).values, dtype=float)


def _covariate_shifts(
    posterior: xr.Dataset, covariates: Mapping[str, Any] | None, care: str
) -> tuple[np.ndarray | float, np.ndarray | float]:
    r"""How far the covariates move the true baseline and follow-up means of a care type's
    elevated clients: :math:`\bar x_E^\top\beta_1` and :math:`\bar x_E^\top(\beta_1 + \delta)`,
    with :math:`\bar x_E` their mean row of the model's centred, scaled covariates
    (``elevated_covariates`` of the scales) and the slopes per covariate SD; 0 without covariates.

    The observed and true changes are linear in each client's means, so their averages over the
    elevated need only :math:`\bar x_E`; the shares reliably improved or recovered take every
    elevated client at that mean shift."""
    row = (covariates or {}).get(care)
    if not row or "b_covariate_baseline_z" not in posterior:
        return 0.0, 0.0
    x = np.asarray(row, dtype=float)
    b1 = np.asarray(
        posterior["b_covariate_baseline_z"].transpose(*_SAMPLE_DIMS, "covariate").values,
        dtype=float,
    )
    delta = np.asarray(
        posterior["b_covariate_change_z"].transpose(*_SAMPLE_DIMS, "covariate").values,
        dtype=float,
    )
    return b1 @ x, (b1 + delta) @ x


def _by_care(
    posterior: xr.Dataset,
    sign: float,
    cutoff: float,
    selected: Mapping[str, Any],
    covariates: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    tau1 = _draws(posterior, "sd_true", time="baseline")
    tau2 = _draws(posterior, "sd_true", time="followup")
    corr, sigma_e = _draws(posterior, "corr_true"), _draws(posterior, "sigma_error")
    out = {}
    for care, base in selected.items():
        mean_v = _draws(posterior, "mean_provider_care", care_type=care)
        shift1, shift2 = _covariate_shifts(posterior, covariates, care)
        out[care] = change_given_baselines(
            sign * np.asarray(base["values"], dtype=float),
            np.asarray(base["counts"], dtype=float),
            sign * (_draws(posterior, "mu_true_baseline", care_type=care) + shift1),
            sign * (_draws(posterior, "mu_true_followup", care_type=care) + mean_v + shift2),
            tau1,
            tau2,
            corr,
            sigma_e,
            _draws(posterior, "var_provider_care", care_type=care),
            sign * cutoff,
        )
    return out


def _mixed(parts: Mapping[str, Mapping[str, np.ndarray]], n: Mapping[str, float]):
    """The elevated of every care type together, each care type weighted by its elevated clients."""
    total = sum(n.values())
    keys = next(iter(parts.values())).keys()
    return {key: sum(n[k] * parts[k][key] for k in parts) / total for key in keys}


def compute_change_estimands(
    posterior: xr.Dataset, scales: Mapping[str, Any], *, prefix: str, units: str
) -> xr.Dataset:
    """The change estimands per care type and ``[all]`` (see the module docstring).

    Parameters
    ----------
    posterior : xarray.Dataset
        Draws of the change model (or its prior).
    scales : mapping
        :meth:`ChangeDesign.scales`: ``sign``, ``cutoff``, ``baseline_sd`` and
        ``elevated_baselines`` (per care type, the elevated clients' distinct observed baselines
        and their counts).
    prefix : str
        The instrument's name (``"who5"``, ``"phq9"``, ``"gad7"``): ``<prefix>_change[<group>]`` …
    units : str
        Units of one outcome point, ``"<label> points"`` (e.g. ``"WHO-5 points"``).
    """
    sign, cutoff = float(scales["sign"]), float(scales["cutoff"])
    sd_x = float(scales["baseline_sd"])
    # A care type without elevated clients in the model (PHQ-9 is seldom given in coach-only
    # care) would report its prior: it is left out.
    selected = {c: b for c, b in scales["elevated_baselines"].items() if sum(b["counts"]) > 0}
    parts = _by_care(posterior, sign, cutoff, selected, scales.get("elevated_covariates"))
    n = {c: float(sum(b["counts"])) for c, b in selected.items()}
    groups = {**parts, "all": _mixed(parts, n)}
    template = posterior["reliability"].transpose(*_SAMPLE_DIMS)
    out: dict[str, xr.DataArray] = {}

    def put(name: str, values: np.ndarray, unit: str, kind: str) -> None:
        # The report's tables are chosen by kind: change estimands and shares are listed with the
        # fixed effects (units per row), the reliability with the hyperparameters; ``group``
        # names what they are.
        shown = {"change": "fixed effect", "share": "fixed effect", "measurement": "hyperparameter"}
        out[name] = template.copy(data=values).assign_attrs(
            units=unit, kind=shown.get(kind, kind), group=kind
        )

    rule = f"{'<=' if sign > 0 else '>='} {cutoff:g}"
    for g, r in groups.items():
        put(f"{prefix}_change[{g}]", sign * r["observed"], f"{units}, observed", "change")
        put(f"{prefix}_change_beyond_rtm[{g}]", sign * r["true"], f"{units}, true", "change")
        put(f"rtm[{g}]", sign * r["rtm"], units, "change")
        put(
            f"{prefix}_change_d[{g}]",
            sign * r["observed"] / sd_x,
            f"SDs of the observed baseline over every client ({sd_x:.1f} {units})",
            "change",
        )
        for key, name in (
            ("improved", "reliably_improved"),
            ("recovered", "recovered"),
            ("deteriorated", "reliably_deteriorated"),
        ):
            put(f"{name}[{g}]", r[key], f"share of the elevated (baseline {rule})", "share")
    rho = template.values
    put("reliability", rho, "test–retest reliability (0–1)", "measurement")
    put("reliable_change_criterion", reliable_change(sd_x, rho), units, "measurement")
    put("sigma_error", _draws(posterior, "sigma_error"), units, "measurement")
    put("corr_true", _draws(posterior, "corr_true"), "correlation (-1 to 1)", "variance component")
    for t in ("baseline", "followup"):
        put(f"sd_true[{t}]", _draws(posterior, "sd_true", time=t), units, "variance component")
    for p in (str(x) for x in posterior["sd_provider"]["provider_type"].values):
        sd = _draws(posterior, "sd_provider", provider_type=p)
        put(f"sd_provider[{p}]", sd, units, "variance component")
    out |= covariate_estimands(posterior, scales, units=units)
    return xr.Dataset(out)


#: The covariate slopes of the change model: the estimand's prefix, its variable, what it is of.
COVARIATE_SLOPES = (
    ("baseline", "b_covariate_baseline", "true baseline"),
    ("followup", "b_covariate_followup", "true follow-up"),
    ("change", "b_covariate_change", "true change"),
)


def covariate_estimands(
    posterior: xr.Dataset, scales: Mapping[str, Any], *, units: str
) -> dict[str, xr.DataArray]:
    """``<part>:b_<column>`` per covariate column and part of :data:`COVARIATE_SLOPES` (none
    without covariates), per unit of the column as the regression family's ``b_<column>``.

    ``scales``' ``covariate_coding`` names a declared covariate's reference level in the units
    and attributes (``covariate``, ``covariate_level``, ``reference``).
    """
    if "b_covariate_baseline" not in posterior:
        return {}
    coding = scales.get("covariate_coding") or {}
    out: dict[str, xr.DataArray] = {}
    for column in (str(c) for c in posterior["b_covariate_baseline"]["covariate"].values):
        unit, named = _covariate_units(column, coding)
        unit = f"{units} {unit}" if unit.startswith("per") else f"{units}, {unit}"
        for part, variable, of in COVARIATE_SLOPES:
            draws = posterior[variable].sel(covariate=column, drop=True)
            out[f"{part}:b_{column}"] = draws.transpose(*_SAMPLE_DIMS).assign_attrs(
                units=f"{unit}, {of}", kind="fixed effect", group="covariate", **named
            )
    return out
