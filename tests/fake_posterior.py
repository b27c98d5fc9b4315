"""Hand-made fake posteriors shaped like the sampler's output (no MCMC).

The builder returns an ``xarray.DataTree`` with the groups and variable names of the sampler
contract (posterior, sample_stats, prior, prior_predictive, posterior_predictive, log_likelihood,
log_prior, observed_data, constant_data). Draws are independent normal (or log-normal for scales),
so by default every convergence check passes; tests inject pathologies with
:func:`replace_group`.

Other test modules may import it: ``from fake_posterior import make_fake_datatree, make_fake_meta``
(pytest puts ``tests/`` on ``sys.path`` because the test files are rootdir-relative modules).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

CARE_TYPES = ("therapist", "coach", "both")
LEVELS = ("within", "between")
PROVIDER_TYPES = ("therapist", "coach")
COVARIATES = ("age", "male", "days_in_care")
#: Care-type shares of a fake study's clients: the weights of its pooled slopes.
CARE_WEIGHTS = {"therapist": 0.2, "coach": 0.65, "both": 0.15}


def _dims(chains: int, draws: int) -> dict[str, np.ndarray]:
    return {"chain": np.arange(chains), "draw": np.arange(draws)}


def make_fake_datatree(
    *,
    chains: int = 4,
    draws: int = 500,
    seed: int = 0,
    n_clients: int = 40,
    n_providers: int = 6,
    subscales: tuple[str, ...] = ("goal", "bond"),
    hierarchical: bool = True,
    paper_table2: bool = False,
    include_nu: bool = False,
    outcome_range: tuple[float, float] = (0.0, 100.0),
) -> xr.DataTree:
    """Build a well-mixed fake sampler output.

    Parameters
    ----------
    chains, draws : int
        Posterior shape. Draws are iid, so bulk and tail ESS are close to ``chains * draws``.
    seed : int
        Seed of the ``numpy`` generator; the same seed gives the same tree.
    n_clients, n_providers : int
        Sizes of the ``client`` and ``provider`` dimensions.
    subscales : tuple of str
        Alliance subscale coordinates (e.g. ``("goal", "bond", "task")``).
    hierarchical : bool
        Include the ``who5_change``-style variables (``mu_b``, ``b``, ``sd_*``, ``u_provider``).
    paper_table2 : bool
        Include ``b_alliance`` (the composite slope of the paper's Table 2).
    include_nu : bool
        Include a Student-t ``nu``.
    outcome_range : tuple of float
        Bounds of the outcome; fake ``y`` is clipped to them so that a ceiling share exists.

    Returns
    -------
    xarray.DataTree
    """
    rng = np.random.default_rng(seed)
    c, d = chains, draws
    base = _dims(c, d)
    lo, hi = outcome_range

    def normal(loc, scale, *shape):
        return rng.normal(loc, scale, size=(c, d, *shape))

    def positive(loc, scale, *shape):
        return np.exp(rng.normal(np.log(loc), scale, size=(c, d, *shape)))

    post: dict[str, tuple] = {
        "intercept": (("chain", "draw"), normal(50.0, 2.0)),
        "b_baseline": (("chain", "draw"), normal(0.5, 0.05)),
        "b_covariate": (("chain", "draw", "covariate"), normal(0.0, 0.3, len(COVARIATES))),
        "sigma": (("chain", "draw"), positive(15.0, 0.05)),
    }
    coords: dict[str, object] = {**base, "covariate": list(COVARIATES)}
    if paper_table2:
        post["b_alliance"] = (("chain", "draw"), normal(4.0, 1.0))
    if hierarchical:
        ns, nl, nc = len(subscales), len(LEVELS), len(CARE_TYPES)
        mu_b = normal(2.0, 1.0, ns, nl)
        post["mu_b"] = (("chain", "draw", "subscale", "level"), mu_b)
        post["b"] = (
            ("chain", "draw", "care_type", "subscale", "level"),
            mu_b[:, :, None] + normal(0.0, 0.8, nc, ns, nl),
        )
        post["b_care"] = (("chain", "draw", "care_contrast"), normal(-2.0, 1.5, 2))
        post["sd_provider"] = (("chain", "draw", "provider_type"), positive(4.0, 0.2, 2))
        post["sd_provider_slope"] = (("chain", "draw", "subscale"), positive(0.5, 0.3, ns))
        post["z_provider"] = (("chain", "draw", "provider"), normal(0.0, 1.0, n_providers))
        post["u_provider"] = (
            ("chain", "draw", "provider"),
            normal(0.0, 1.0, n_providers) * 4.0 + rng.normal(0, 3, n_providers),
        )
        # An LKJ-style Cholesky factor has constant elements (diagonal 1, upper triangle 0); the
        # gate must skip them rather than fail on their undefined R-hat.
        chol = np.zeros((c, d, 2, 2))
        chol[..., 0, 0] = 1.0
        rho = np.tanh(normal(0.2, 0.2))
        chol[..., 1, 0] = rho
        chol[..., 1, 1] = np.sqrt(1.0 - rho**2)
        post["chol_corr"] = (("chain", "draw", "corr_row", "corr_col"), chol)
        coords.update(
            subscale=list(subscales),
            level=list(LEVELS),
            care_type=list(CARE_TYPES),
            care_contrast=["therapist-coach", "both-coach"],
            provider_type=list(PROVIDER_TYPES),
            provider=[f"p{i:02d}" for i in range(n_providers)],
            corr_row=[0, 1],
            corr_col=[0, 1],
        )
    if include_nu:
        post["nu"] = (("chain", "draw"), positive(10.0, 0.2))
    posterior = xr.Dataset(post, coords={k: v for k, v in coords.items()})
    ptype = np.array([PROVIDER_TYPES[i % 2] for i in range(n_providers)])

    # Observed outcome on the 0–100 scale with a ceiling pile-up.
    clients = [f"client_{i:03d}" for i in range(n_clients)]
    baseline = np.clip(rng.normal(30, 10, n_clients), lo, hi).round()
    y_obs = np.clip(baseline + rng.normal(15, 25, n_clients), lo, hi).round()

    def rep(scale_extra: float) -> np.ndarray:
        y = baseline + rng.normal(15, 25 + scale_extra, size=(c, d, n_clients))
        return np.clip(y, lo, hi).round()

    cdims = ("chain", "draw", "client")
    ccoords = {**base, "client": clients}
    stats = {
        "diverging": (("chain", "draw"), np.zeros((c, d), dtype=bool)),
        # iid energy gives E-BFMI near 2; a random walk would give a small one.
        "energy": (("chain", "draw"), normal(100.0, 5.0)),
        "depth": (("chain", "draw"), rng.integers(2, 5, size=(c, d)).astype(np.uint64)),
        "maxdepth_reached": (("chain", "draw"), np.zeros((c, d), dtype=bool)),
        "step_size": (("chain", "draw"), np.full((c, d), 0.3)),
        "n_steps": (("chain", "draw"), rng.integers(3, 31, size=(c, d)).astype(np.uint64)),
        "mean_tree_accept": (("chain", "draw"), rng.uniform(0.7, 1.0, size=(c, d))),
        "divergence_message": (("chain", "draw"), np.full((c, d), None, dtype=object)),
    }
    prior_vars = {
        k: v for k, v in post.items() if k in ("intercept", "b_baseline", "sigma", "mu_b", "b")
    }
    prior = xr.Dataset(
        {k: (dims, vals * 3.0 if k != "sigma" else vals) for k, (dims, vals) in prior_vars.items()},
        coords={
            k: v
            for k, v in coords.items()
            if k in ("chain", "draw", "care_type", "subscale", "level")
        },
    )
    constant = {"baseline": (("client",), baseline)}
    const_coords: dict[str, object] = {"client": clients}
    if hierarchical:
        # xarray cannot hold the index coordinate `provider_type` (dim of sd_provider) and a
        # non-index coordinate of the same name on dim `provider` in one Dataset: assigning the
        # latter silently replaces the former. So each provider's type lives in constant_data.
        constant["provider_type"] = (("provider",), ptype)
        const_coords["provider"] = coords["provider"]
    tree = {
        "posterior": posterior,
        "sample_stats": xr.Dataset(stats, coords=base),
        "prior": prior,
        "prior_predictive": xr.Dataset({"y": (cdims, rep(40.0))}, coords=ccoords),
        "posterior_predictive": xr.Dataset({"y": (cdims, rep(0.0))}, coords=ccoords),
        "log_likelihood": xr.Dataset(
            {"y": (cdims, -np.abs(normal(4.0, 0.5, n_clients)))}, coords=ccoords
        ),
        "log_prior": xr.Dataset({"sigma": (("chain", "draw"), normal(-3.0, 0.1))}, coords=base),
        "observed_data": xr.Dataset({"y": (("client",), y_obs)}, coords={"client": clients}),
        "constant_data": xr.Dataset(constant, coords=const_coords),
    }
    return xr.DataTree.from_dict(tree)


def make_fake_meta(dt: xr.DataTree, *, spec: str = "who5_change") -> dict:
    """Run metadata matching the contract, sized to ``dt``."""
    post = dt["posterior"]
    return {
        "spec": spec,
        "spec_toml": f'name = "{spec}"\noutcome = "who5_followup"\n',
        "outcome": "who5_followup",
        "outcome_label": "WHO-5 follow-up (0–100)",
        "outcome_range": [0, 100],
        "effect_units": "WHO-5 points per 1 point of alliance (1–5 scale)",
        "seed": 1234,
        "sampler": "nutpie",
        "backend": "numba",
        "chains": int(post.sizes["chain"]),
        "draws": int(post.sizes["draw"]),
        "tune": 1000,
        "versions": {"pymc": "6.4.0", "arviz": "1.3.0"},
        "data_sha256": "0" * 64,
        "timings": {"sampling_s": 12.5},
        "git_commit": "deadbeef",
    }


def replace_group(dt: xr.DataTree, group: str, ds: xr.Dataset) -> xr.DataTree:
    """Copy of ``dt`` with ``group`` replaced by ``ds`` (for injecting pathologies)."""
    groups = {node.name: node.to_dataset() for node in dt.children.values()}
    groups[group] = ds
    return xr.DataTree.from_dict(groups)
