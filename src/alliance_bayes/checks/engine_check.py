r"""Agreement with an independent engine: the same models written again in numpyro.

``paper_table2`` (Bayesian regression on the composite alliance) and ``who5_intercepts`` (the
varying-intercept version of ``who5_change``: care-type-pooled within/between subscale slopes,
provider intercepts with one SD per provider type, multiple membership) are written here from their
mathematical definition in JAX/numpyro, sharing only the design arrays (:class:`ModelData`) and the
spec's prior scales with the PyMC models, and sampled with numpyro's NUTS. Posterior means must agree:

.. math::
    |\bar\theta_{\text{PyMC}} - \bar\theta_{\text{numpyro}}|
        \le 3\sqrt{\text{MCSE}_{\text{PyMC}}^2 + \text{MCSE}_{\text{numpyro}}^2} + 0.05\, \text{sd}_{\text{PyMC}}

for every scalar of the compared variables. numpyro and jax are an optional extra
(``pip install -e .[engines]``); this module imports them only inside functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["COMPARED", "agreement_table", "fit_numpyro"]

#: Variables compared, per structure.
COMPARED = {
    "composite": ["alpha", "b_baseline", "b_covariate", "b_alliance", "sigma"],
    "intercepts": [
        "alpha",
        "b_baseline",
        "b_covariate",
        "mu_b",
        "sd_b",
        "b",
        "sd_provider",
        "sigma",
    ],
}


def _model_fn(spec, data):
    """The numpyro model of ``spec`` on ``data`` (composite regression or varying intercepts)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    pr = spec.priors
    y = jnp.asarray(data.y)
    base_c = jnp.asarray(data.baseline - data.baseline_mean)
    x = jnp.asarray(data.covariates)
    n_cov = x.shape[1]
    composite = spec.predictors.alliance == "composite"
    if not composite:
        if spec.hierarchy.provider_slopes or not spec.hierarchy.care_type_pooling:
            raise NotImplementedError("numpyro twin covers paper_table2 and who5_intercepts only")
        alliance = jnp.asarray(data.alliance)  # (n, subscale, level)
        care = jnp.asarray(data.care_index)
        n_sub, n_lvl = alliance.shape[1], alliance.shape[2]
        idx = jnp.asarray(data.membership_index)
        w = jnp.asarray(data.membership_weight)
        ptype = jnp.asarray(data.provider_type_index)
        n_prov = int(ptype.shape[0])

    def model():
        alpha = numpyro.sample("alpha", dist.Normal(float(np.mean(data.y)), pr.intercept_sd))
        b_base = numpyro.sample("b_baseline", dist.Normal(0.0, pr.b_baseline_sd))
        b_cov = numpyro.sample("b_covariate", dist.Normal(0.0, pr.b_covariate_sd).expand([n_cov]))
        mean = alpha + b_base * base_c + x @ b_cov
        if composite:
            b_all = numpyro.sample("b_alliance", dist.Normal(0.0, pr.b_alliance_sd))
            mean = mean + b_all * jnp.asarray(data.composite)
        else:
            mu_b = numpyro.sample("mu_b", dist.Normal(0.0, pr.mu_b_sd).expand([n_sub, n_lvl]))
            sd_b = numpyro.sample("sd_b", dist.HalfNormal(pr.sd_b_sd).expand([n_sub, n_lvl]))
            z_b = numpyro.sample("z_b", dist.Normal(0.0, 1.0).expand([3, n_sub, n_lvl]))
            b = numpyro.deterministic("b", mu_b[None] + sd_b[None] * z_b)  # (care, sub, lvl)
            mean = mean + jnp.sum(b[care] * alliance, axis=(1, 2))
            sd_p = numpyro.sample("sd_provider", dist.HalfNormal(pr.sd_provider_sd).expand([2]))
            z_p = numpyro.sample("z_provider", dist.Normal(0.0, 1.0).expand([n_prov]))
            u = z_p * sd_p[ptype]
            mean = mean + jnp.sum(w * u[idx], axis=1)
        sigma = numpyro.sample("sigma", dist.HalfNormal(pr.sigma_sd))
        numpyro.sample("y", dist.Normal(mean, sigma), obs=y)

    return model


def fit_numpyro(
    spec, data, *, chains: int = 4, draws: int = 1000, tune: int = 1000, seed: int = 1
) -> xr.Dataset:
    """Sample the numpyro twin of ``spec``; returns a posterior Dataset (chain, draw, ...)."""
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
    samples = mcmc.get_samples(group_by_chain=True)
    out = {}
    for name, arr in samples.items():
        arr = np.asarray(arr)
        dims = ["chain", "draw", *[f"{name}_dim_{i}" for i in range(arr.ndim - 2)]]
        out[name] = (dims, arr)
    return xr.Dataset(out)


def _flat(ds: xr.Dataset, name: str) -> tuple[np.ndarray, list[str]]:
    """(chain, draw, k) values and k labels of ``name``'s scalars (positional, row-major)."""
    arr = np.asarray(ds[name].values)
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    shape = arr.shape[2:]
    dims = ds[name].dims[2:]

    def label(ix: tuple[int, ...]) -> str:
        if not ix:
            return name
        parts = [
            str(ds[d].values[i]) if d in ds.coords else str(i)
            for d, i in zip(dims, ix, strict=True)
        ]
        return f"{name}[{','.join(parts)}]"

    labels = [label(ix) for ix in np.ndindex(*shape)]
    return flat, labels


def agreement_table(
    pymc_posterior: xr.Dataset, other: xr.Dataset, names: list[str]
) -> pd.DataFrame:
    """Per scalar: both means, MCSEs, the PyMC SD, the tolerance and whether it holds."""
    from arviz_stats import mcse

    rows = []
    for name in names:
        a, labels = _flat(pymc_posterior, name)
        b, _ = _flat(other, name)
        for k, label in enumerate(labels):
            xa = xr.DataArray(a[:, :, k], dims=("chain", "draw"))
            xb = xr.DataArray(b[:, :, k], dims=("chain", "draw"))
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


def run_engine_check(
    models, study, *, draws=1000, tune=1000, chains=4, cache=None, csv=None, log=print
) -> bool:
    """Fit each model with PyMC (through the pipeline) and numpyro; True when every scalar agrees.

    With ``csv`` the agreement table of each model is written there as ``engine_<model>.csv``.
    """
    import time
    from pathlib import Path

    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.fitting import design_of, fit_design, resolve_spec, settings_for

    study = study if isinstance(study, RawStudy) else load_study(study)
    ok = True
    for name in models:
        spec = resolve_spec(name)
        design = design_of(spec, study)
        settings = settings_for(spec, draws=draws, tune=tune, chains=chains, progress=False)
        t = time.perf_counter()
        pymc_fit = fit_design(spec, design, settings, cache=cache)
        t_pymc = time.perf_counter() - t
        t = time.perf_counter()
        other = fit_numpyro(spec, design, chains=chains, draws=draws, tune=tune)
        t_np = time.perf_counter() - t
        kind = "composite" if spec.predictors.alliance == "composite" else "intercepts"
        table = agreement_table(pymc_fit.datatree["posterior"].to_dataset(), other, COMPARED[kind])
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            log(f"\n{name}: {design.n_clients} clients; PyMC {t_pymc:.0f} s, numpyro {t_np:.0f} s")
            log(table.round(3).to_string())
        worst = (table["diff"].abs() / table["tolerance"]).max()
        log(
            f"{name}: {int(table['agree'].sum())}/{len(table)} agree; max |diff|/tolerance {worst:.2f}"
        )
        ok &= bool(table["agree"].all())
        if csv is not None:
            Path(csv).mkdir(parents=True, exist_ok=True)
            table.to_csv(Path(csv) / f"engine_{name}.csv")
    return ok
