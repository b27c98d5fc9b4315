r"""Agreement with an independent engine: the regression models written again in numpyro.

The models of :mod:`alliance_bayes.model.regression.graph` (``paper_table2``, ``who5_change``,
``who5_intercepts`` and their variants) are written here a second time, from their mathematical
definition, in JAX/numpyro. The two share only the design arrays (:class:`ModelData`, the output of
:func:`alliance_bayes.fitting.design_of`) and the spec's prior scales. For client :math:`i` with
centred baseline :math:`\tilde y^0_i`, standardised covariates :math:`x_i`, care type :math:`c[i]`,
within- and centred between-provider alliance parts :math:`a_{isl}` and membership weights
:math:`w_{ip}`:

.. math::
    \mu_i = \alpha + \gamma_{c[i]} + \beta_0 \tilde y^0_i + x_i^\top\beta_z
            + \sum_{s,l} b_{c[i],s,l}\, a_{isl}
            + \sum_p w_{ip}\big(u_{p0} + \sum_s u_{ps}\, a_{is,\text{within}}\big)

with :math:`\gamma_{\text{coach}} = 0`, :math:`b_{c,s,l} \sim \mathcal N(\mu^b_{s,l}, \tau)`
(:math:`\tau` = ``sd_b_sd`` fixed, or Half-Normal(``sd_b_sd``) when estimated),
:math:`u_p = \operatorname{diag}(\sigma^u_{t[p]}, \tau^u_1, \dots)\, L z_p`, :math:`z_p \sim
\mathcal N(0, I)`, :math:`LL^\top \sim \text{LKJ}(\eta)`, each provider SD Gamma(2, 2/scale) (or
Half-Normal(scale)), and a Normal, Student-t or Tobit (censored Normal at the bounds of the
outcome's metric; Tobin 1958, doi:10.2307/1907382) likelihood. The composite model
(``paper_table2``) replaces the care-type, subscale and provider terms by
:math:`b_{\text{alliance}}\,(a_i - \bar a)`. The parametrisation deliberately differs from the
PyMC one (care-type slopes centred, provider effects fully non-centred, no collapsing), so that
only the posterior, not the coordinates, can agree.

Only parametrisation-invariant quantities are compared (:data:`COMPARED`: population parameters
and the stable estimands, among them the pooled slopes :math:`\sum_c \pi_c b_c`), each scalar by

.. math::
    |\bar\theta_{\text{PyMC}} - \bar\theta_{\text{numpyro}}|
        \le 3\sqrt{\text{MCSE}_{\text{PyMC}}^2 + \text{MCSE}_{\text{numpyro}}^2}
            + 0.05\, \text{sd}_{\text{PyMC}},

MCSE of the mean as in Vehtari et al. (2021), doi:10.1214/20-BA1221. numpyro and jax are an
optional extra (``pip install -e .[engines]``); this module imports them only inside functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.checks.base import CheckResult

__all__ = [
    "COMPARED",
    "agreement_table",
    "comparable",
    "compared_names",
    "fit_numpyro",
    "pooled_slopes",
    "run_engine_check",
]

#: Parametrisation-invariant posterior variables compared, where the model has them.
COMPARED = (
    "alpha",
    "intercept",
    "b_baseline",
    "b_covariate",
    "b_alliance",
    "b_care",
    "mu_b",
    "sd_b",
    "b",
    "sd_provider",
    "sd_provider_slope",
    "corr_provider",
    "sigma",
    "nu",
)

#: Dimensions of the numpyro sites (the names of :meth:`ModelData.coords`).
_DIMS = {
    "b_covariate_z": ("covariate",),
    "b_covariate": ("covariate",),
    "b_care": ("care_contrast",),
    "mu_b": ("subscale", "level"),
    "sd_b": ("subscale", "level"),
    "b": ("care_type", "subscale", "level"),
    "sd_provider": ("provider_type",),
    "sd_provider_slope": ("subscale",),
    "corr_provider": ("effect_pair",),
    "z_provider": ("provider", "effect"),
    "u_provider": ("provider", "effect"),
}


def _supported(spec) -> None:
    if spec.predictors.alliance not in ("composite", "subscales"):
        raise NotImplementedError("the numpyro twin covers the regression models only")
    if spec.data.followup_imputations:
        raise NotImplementedError("the numpyro twin does not impute follow-ups")


def censored_normal_logpdf(y, mu, sigma, lower: float, upper: float):
    r"""Tobit log density: Normal inside :math:`(L, U)`, :math:`\log\Phi((L-\mu)/\sigma)` at or
    below :math:`L`, :math:`\log\Phi((\mu-U)/\sigma)` at or above :math:`U` (JAX)."""
    import jax.numpy as jnp
    from jax.scipy.special import log_ndtr
    from jax.scipy.stats import norm

    inside = norm.logpdf(y, mu, sigma)
    return jnp.where(
        y <= lower,
        log_ndtr((lower - mu) / sigma),
        jnp.where(y >= upper, log_ndtr((mu - upper) / sigma), inside),
    )


def _provider_sd(spec, name: str, scale: float, size: int):
    """Gamma(2, 2/scale) (mean ``scale``) or Half-Normal(scale) SDs of provider effects."""
    import numpyro
    import numpyro.distributions as dist

    if spec.hierarchy.sd_prior == "halfnormal":
        prior = dist.HalfNormal(scale)
    else:
        prior = dist.Gamma(2.0, 2.0 / scale)
    return numpyro.sample(name, prior.expand([size]))


def _care_slopes(spec, n_care: int, n_sub: int):
    """Care-type slopes (care, subscale, level): centred on ``mu_b`` with spread ``sd_b_sd``."""
    import numpyro
    import numpyro.distributions as dist

    pr, h = spec.priors, spec.hierarchy
    shape = [n_care, n_sub, 2]
    if not h.care_type_pooling:
        return numpyro.sample("b", dist.Normal(0.0, pr.mu_b_sd).expand(shape))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, pr.mu_b_sd).expand(shape[1:]))
    if h.care_slope_sd == "estimated":
        tau = numpyro.sample("sd_b", dist.HalfNormal(pr.sd_b_sd).expand(shape[1:]))
        z = numpyro.sample("z_b", dist.Normal(0.0, 1.0).expand(shape))
        return numpyro.deterministic("b", mu_b + tau * z)
    return numpyro.sample("b", dist.Normal(mu_b, pr.sd_b_sd).expand(shape))


def _provider_part(spec, data):
    r""":math:`\sum_p w_{ip}(u_{p0} + \sum_s u_{ps} W_{is})` per client, fully non-centred."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    pr, h = spec.priors, spec.hierarchy
    ptype = jnp.asarray(data.provider_type_index)
    n_prov, n_sub = len(data.provider_type_index), len(data.subscales)
    n_eff = 1 + n_sub if h.provider_slopes else 1
    sd_p = _provider_sd(spec, "sd_provider", pr.sd_provider_sd, len(data.frame.provider_types))
    scale = sd_p[ptype][:, None]
    chol = jnp.eye(n_eff)
    if h.provider_slopes:
        sd_s = _provider_sd(spec, "sd_provider_slope", pr.sd_provider_slope_sd, n_sub)
        scale = jnp.concatenate([scale, jnp.broadcast_to(sd_s, (n_prov, n_sub))], axis=1)
        if h.provider_correlation:
            chol = numpyro.sample("chol_provider", dist.LKJCholesky(n_eff, pr.lkj_eta))
            rows, cols = np.tril_indices(n_eff, k=-1)
            numpyro.deterministic("corr_provider", (chol @ chol.T)[rows, cols])
    z = numpyro.sample("z_provider", dist.Normal(0.0, 1.0).expand([n_prov, n_eff]))
    u = (z @ chol.T) * scale  # u_p = diag(scale_p) L z_p
    idx, w = jnp.asarray(data.membership_index), jnp.asarray(data.membership_weight)
    per_member = u[idx, 0]  # (client, K)
    if h.provider_slopes:
        within = jnp.asarray(data.alliance[:, :, 0])  # (client, subscale)
        per_member = per_member + jnp.einsum("iks,is->ik", u[idx, 1:], within)
    return jnp.sum(w * per_member, axis=1)


def _likelihood(spec, mean, y):
    import numpyro
    import numpyro.distributions as dist

    pr = spec.priors
    sigma = numpyro.sample("sigma", dist.HalfNormal(pr.sigma_sd))
    if spec.likelihood == "student_t":
        nu = numpyro.deterministic(
            "nu", 1.0 + numpyro.sample("nu_m1", dist.Exponential(pr.nu_rate))
        )
        numpyro.sample("y", dist.StudentT(nu, mean, sigma), obs=y)
    elif spec.likelihood == "censored_normal":
        lower, upper = spec.outcome_range
        numpyro.factor("y", censored_normal_logpdf(y, mean, sigma, lower, upper).sum())
    else:
        numpyro.sample("y", dist.Normal(mean, sigma), obs=y)


def _model_fn(spec, data):
    """The numpyro model of ``spec`` on ``data`` (module docstring)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    _supported(spec)
    pr, h = spec.priors, spec.hierarchy
    y = jnp.asarray(data.y)
    base_c = jnp.asarray(data.baseline - data.baseline_mean)
    x = jnp.asarray(data.covariates)
    composite = spec.predictors.alliance == "composite"
    care = jnp.asarray(data.care_index)
    n_care = len(data.care_types)
    alliance = jnp.asarray(data.alliance)  # (client, subscale, level)
    alpha_centre = float(np.mean(data.tuning_y))

    def model():
        alpha = numpyro.sample("alpha", dist.Normal(alpha_centre, pr.intercept_sd))
        b_base = numpyro.sample("b_baseline", dist.Normal(0.0, pr.b_baseline_sd))
        b_z = numpyro.sample(
            "b_covariate_z", dist.Normal(0.0, pr.b_covariate_sd).expand([x.shape[1]])
        )
        b_cov = numpyro.deterministic("b_covariate", b_z / jnp.asarray(data.covariate_sds))
        mean = alpha + b_base * base_c + x @ b_z
        if composite:
            b_all = numpyro.sample("b_alliance", dist.Normal(0.0, pr.b_alliance_sd))
            mean = mean + b_all * jnp.asarray(data.composite)
            numpyro.deterministic(
                "intercept",
                alpha
                - b_base * data.baseline_mean
                - jnp.dot(jnp.asarray(data.covariate_means), b_cov)
                - b_all * data.composite_mean,
            )
        else:
            if h.care_type_intercepts:
                gamma = numpyro.sample(
                    "b_care", dist.Normal(0.0, pr.b_care_sd).expand([n_care - 1])
                )
                ref = data.reference_index
                mean = mean + jnp.concatenate([gamma[:ref], jnp.zeros(1), gamma[ref:]])[care]
            b = _care_slopes(spec, n_care, alliance.shape[1])
            mean = mean + jnp.sum(b[care] * alliance, axis=(1, 2))
            if h.provider_intercepts:
                mean = mean + _provider_part(spec, data)
        _likelihood(spec, mean, y)

    return model


def fit_numpyro(
    spec, data, *, chains: int = 4, draws: int = 1000, tune: int = 1000, seed: int = 1
) -> xr.Dataset:
    """Sample the numpyro twin of ``spec`` with NUTS; a posterior Dataset (chain, draw, ...)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)
    mcmc = MCMC(
        NUTS(_model_fn(spec, data), target_accept_prob=spec.sampler.target_accept),
        num_warmup=tune,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed))
    coords = data.coords()
    out = {}
    for name, arr in mcmc.get_samples(group_by_chain=True).items():
        arr = np.asarray(arr)
        dims = _DIMS.get(name, ())
        if len(dims) != arr.ndim - 2:
            dims = tuple(f"{name}_dim_{i}" for i in range(arr.ndim - 2))
        out[name] = (("chain", "draw", *dims), arr)
    ds = xr.Dataset(out)
    known = {d: coords[d] for d in ds.dims if d in coords and len(coords[d]) == ds.sizes[d]}
    if "corr_provider" in ds:
        effects = ["intercept", *data.subscales]
        known["effect_pair"] = [
            f"{effects[i]}~{effects[j]}" for i in range(len(effects)) for j in range(i)
        ]
    return ds.assign_coords(known)


def pooled_slopes(b: xr.DataArray, weights: dict[str, float]) -> dict[str, xr.DataArray]:
    r"""The pooled slopes ``b_<subscale>_<level>`` = :math:`\sum_c \pi_c b_{c,s,l}`."""
    w = xr.DataArray(
        [float(weights.get(str(c), 0.0)) for c in b["care_type"].values],
        dims="care_type",
        coords={"care_type": b["care_type"].values},
    )
    pooled = (b * w).sum("care_type")
    return {
        f"b_{s}_{lv}": pooled.sel(subscale=s, level=lv, drop=True)
        for s in pooled["subscale"].values
        for lv in pooled["level"].values
    }


def care_weights(spec, data) -> dict[str, float]:
    """The weights of the pooled slopes: each care type's share of the clients, or equal."""
    counts = np.bincount(data.care_index, minlength=len(data.care_types))
    present = {c: int(n) for c, n in zip(data.care_types, counts, strict=True) if n}
    if spec.hierarchy.pooled_weights == "equal":
        return dict.fromkeys(present, 1.0 / len(present))
    total = sum(present.values())
    return {c: n / total for c, n in present.items()}


def compared_names(posterior: xr.Dataset) -> list[str]:
    """The variables of :data:`COMPARED` that ``posterior`` has, in that order."""
    return [n for n in COMPARED if n in posterior]


def comparable(posterior: xr.Dataset, pooled: dict[str, xr.DataArray] | None) -> xr.Dataset:
    """The compared variables of one engine's posterior, with the pooled slopes added."""
    ds = posterior[compared_names(posterior)]
    return ds.assign(pooled or {})


def _flat(ds: xr.Dataset, name: str) -> tuple[np.ndarray, list[str]]:
    """(chain, draw, k) values and k labels of ``name``'s scalars (row-major)."""
    arr = np.asarray(ds[name].values)
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    dims = ds[name].dims[2:]

    def label(ix: tuple[int, ...]) -> str:
        if not ix:
            return name
        parts = [
            str(ds[d].values[i]) if d in ds.coords else str(i)
            for d, i in zip(dims, ix, strict=True)
        ]
        return f"{name}[{','.join(parts)}]"

    return flat, [label(ix) for ix in np.ndindex(*arr.shape[2:])]


def agreement_table(pymc: xr.Dataset, other: xr.Dataset, names: list[str]) -> pd.DataFrame:
    r"""Per scalar: both means, MCSEs, the PyMC SD, the tolerance and whether it holds.

    Scalars are matched by their labels (coordinate values), so a variable laid out differently
    by the two engines is compared element by element, not by position; a label that one side
    lacks raises ``ValueError``.
    """
    from arviz_stats import mcse

    rows = []
    for name in names:
        a, labels = _flat(pymc, name)
        b, other_labels = _flat(other, name)
        if sorted(labels) != sorted(other_labels):
            raise ValueError(f"{name}: the engines' elements differ: {labels} vs {other_labels}")
        position = {lab: k for k, lab in enumerate(other_labels)}
        for k, label in enumerate(labels):
            xa = xr.DataArray(a[:, :, k], dims=("chain", "draw"))
            xb = xr.DataArray(b[:, :, position[label]], dims=("chain", "draw"))
            ma, mb = float(xa.mean()), float(xb.mean())
            sa, sb = float(mcse(xa, method="mean")), float(mcse(xb, method="mean"))
            sd = float(np.std(a[:, :, k], ddof=1))
            tol = 3 * np.hypot(sa, sb) + 0.05 * sd
            rows.append(
                {
                    "parameter": label,
                    "mean_pymc": ma,
                    "mean_numpyro": mb,
                    "diff": mb - ma,
                    "mcse_pymc": sa,
                    "mcse_numpyro": sb,
                    "sd_pymc": sd,
                    "tolerance": tol,
                    "agree": bool(abs(mb - ma) <= tol),
                }
            )
    return pd.DataFrame(rows).set_index("parameter")


def compare_fits(pymc_fit, other: xr.Dataset, spec, data) -> pd.DataFrame:
    """The agreement table of a package fit and a numpyro posterior of the same spec and data.

    The PyMC side's pooled slopes are the package's own estimands; the numpyro side's are
    computed here (:func:`pooled_slopes`) from its care-type slopes and the client mix.
    """
    posterior = pymc_fit.datatree["posterior"].to_dataset()
    theirs = mine = None
    if "b" in other:
        mine = pooled_slopes(other["b"], care_weights(spec, data))
        theirs = {k: pymc_fit.estimands[k] for k in mine}
    left, right = comparable(posterior, theirs), comparable(other, mine)
    only = sorted(set(left.data_vars) ^ set(right.data_vars))
    if only:
        raise ValueError(f"compared variables present in one engine only: {only}")
    return agreement_table(left, right, list(left.data_vars))


def run_engine_check(
    models, study, *, draws=1000, tune=1000, chains=4, cache=None, csv=None, log=print
) -> CheckResult:
    """Fit each model with the package (:func:`alliance_bayes.fitting.fit`) and with numpyro.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` that passed when every compared
    scalar of every model agrees: the agreement tables (one per model, stacked, with a ``model``
    column), a line per model in words, and the folder ``csv`` when given, where each model's
    table is written as ``engine_<model>.csv``.
    """
    import time
    from pathlib import Path

    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.fitting import design_of, fit, resolve_spec

    study = study if isinstance(study, RawStudy) else load_study(study)
    ok, tables, lines = True, [], []
    for name in models:
        spec = resolve_spec(name)
        t = time.perf_counter()
        pymc_fit = fit(
            spec, study, draws=draws, tune=tune, chains=chains, progress=False, cache=cache
        )
        t_pymc = time.perf_counter() - t
        design = design_of(spec, study)
        t = time.perf_counter()
        other = fit_numpyro(spec, design, chains=chains, draws=draws, tune=tune)
        t_np = time.perf_counter() - t
        table = compare_fits(pymc_fit, other, spec, design)
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            log(
                f"\n{name}: {design.n_clients} clients; package fit {t_pymc:.0f} s "
                f"(gate {'passed' if pymc_fit.passed else 'FAILED'}), numpyro {t_np:.0f} s"
            )
            log(table.round(3).to_string())
        worst = (table["diff"].abs() / table["tolerance"]).max()
        lines.append(
            f"{name}: {int(table['agree'].sum())}/{len(table)} agree; max |diff|/tolerance {worst:.2f}"
        )
        log(lines[-1])
        ok &= bool(table["agree"].all())
        tables.append(table.assign(model=name))
        if csv is not None:
            Path(csv).mkdir(parents=True, exist_ok=True)
            table.to_csv(Path(csv) / f"engine_{name}.csv")
    stacked = pd.concat(tables) if tables else None
    return CheckResult("engine", ok, stacked, "\n".join(lines), None if csv is None else Path(csv))
