r"""How far the Gaussian model scales: simulated platforms of 10⁴–10⁶ clients, collapsed against per client.

Each size is a design simulated directly as model arrays (not through the session-level study
simulator, which would spend minutes building a million clients' sessions): ``n_providers``
providers (30% therapists), clients in therapist-only (18%), coach-only (67%) and both (15%) care,
a client in both care splitting its sessions between one therapist and one coach (therapist share
uniform on 0.2–0.8). Per subscale (goal, bond) a provider has a mean alliance and a client a
deviation from its providers' weighted mean (the within part); the follow-up is the hierarchical
model's Normal outcome with the planted values of :data:`TRUTH`, provider intercepts and
within-slopes correlated. Per size the benchmark fits ``who5_change_normal`` in collapsed form
and, where it fits in memory and time (``per_client_max``), in per-client form, in this process,
and reports per-gradient time, wall time, peak memory, min ESS per second and the planted values'
coverage. The per-gradient time is the sampling time per leapfrog step of the kept draws, times
the chains run at once: tuning's steps are not counted, so it is an upper bound.
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from alliance_bayes.checks.base import CheckResult
from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.model.regression.design import CARE_TYPES, PROVIDER_TYPES, ModelData

#: The planted values (who5_change_normal's parameters; slopes per alliance point).
TRUTH = {
    "alpha": 52.0,
    "b_baseline": 0.45,
    "b_covariate_z": [-0.8, 0.5, 1.5],
    "b_care": [2.5, 1.0],  # therapist−coach, both−coach
    "b_within": 1.5,
    "b_between": 6.0,
    "sd_provider": [3.0, 2.0],  # therapist, coach
    "sd_provider_slope": 1.0,
    "corr_provider": 0.3,
    "sigma": 18.0,
}


def scale_design(n_clients: int, n_providers: int = 10_000, seed: int = 0) -> ModelData:
    """A simulated design of ``n_clients`` clients and ``n_providers`` providers (module docstring)."""
    rng = np.random.default_rng(seed)
    n_ther = max(1, round(0.3 * n_providers))
    ptype = np.r_[np.zeros(n_ther, int), np.ones(n_providers - n_ther, int)]
    care = rng.choice(3, size=n_clients, p=[0.18, 0.67, 0.15])
    therapist = rng.integers(0, n_ther, n_clients)
    coach = rng.integers(n_ther, n_providers, n_clients)
    share = rng.uniform(0.2, 0.8, n_clients)
    # Slot 0: the therapist (coach for coach-only care); slot 1: the coach of a client in both.
    idx = np.column_stack([np.where(care == 1, coach, therapist), np.where(care == 2, coach, 0)])
    weight = np.column_stack(
        [np.where(care == 2, share, 1.0), np.where(care == 2, 1.0 - share, 0.0)]
    )
    # Alliance: provider means per subscale, client deviations; between = weighted provider mean.
    prov_mean = rng.normal(4.3, 0.2, (n_providers, 2))
    between = (weight[:, :, None] * prov_mean[idx]).sum(axis=1)
    within = rng.normal(0.0, 0.45, (n_clients, 2))
    baseline = rng.normal(45.0, 20.0, n_clients)
    cov_raw = np.column_stack(
        [
            rng.normal(36, 9, n_clients),
            rng.binomial(1, 0.46, n_clients),
            rng.gamma(2, 30, n_clients),
        ]
    )
    x = (cov_raw - cov_raw.mean(0)) / cov_raw.std(0)
    between_c = between - between.mean(0)
    t = TRUTH
    care_gap = np.array([t["b_care"][0], 0.0, t["b_care"][1]])[care]
    mu = (
        t["alpha"]
        + t["b_baseline"] * (baseline - baseline.mean())
        + x @ np.array(t["b_covariate_z"])
        + care_gap
        + t["b_within"] * within.sum(1)
        + t["b_between"] * between_c.sum(1)
    )
    corr = np.full((3, 3), t["corr_provider"])
    np.fill_diagonal(corr, 1.0)
    u = np.empty((n_providers, 3))
    for k in range(2):
        sd = np.array([t["sd_provider"][k], t["sd_provider_slope"], t["sd_provider_slope"]])
        cov = corr * np.outer(sd, sd)
        u[ptype == k] = rng.multivariate_normal(np.zeros(3), cov, (ptype == k).sum())
    z = np.column_stack([np.ones(n_clients), within])
    mu += sum(weight[:, k] * (u[idx[:, k]] * z).sum(1) for k in range(2))
    y = mu + t["sigma"] * rng.standard_normal(n_clients)
    clients = pd.DataFrame(
        {
            "client": [f"c{i:07d}" for i in range(n_clients)],
            "care_type": pd.Categorical.from_codes(care, CARE_TYPES),
        }
    )
    providers = pd.DataFrame(
        {
            "provider": [f"p{i:05d}" for i in range(n_providers)],
            "provider_type": pd.Categorical.from_codes(ptype, PROVIDER_TYPES),
        }
    )
    frame = AnalysisFrame(
        clients=clients,
        providers=providers,
        memberships=pd.DataFrame(),
        sessions=pd.DataFrame(),
        subscales=("goal", "bond"),
        data_sha256=f"scale-{n_clients}-{n_providers}-{seed}",
    )
    alliance = np.stack([within, between_c], axis=-1)  # (client, subscale, level)
    return ModelData(
        frame=frame,
        y=y,
        baseline=baseline,
        baseline_mean=float(baseline.mean()),
        covariates=x,
        covariate_names=("age", "male", "days_in_care"),
        covariate_means=cov_raw.mean(0),
        covariate_sds=cov_raw.std(0),
        care_index=care,
        subscales=("goal", "bond"),
        alliance=alliance,
        alliance_means=np.column_stack([np.zeros(2), between.mean(0)]),
        composite=alliance.sum(axis=(1, 2)) / 2,
        composite_mean=float(between.mean()),
        membership_index=idx,
        membership_weight=weight,
        provider_type_index=ptype,
        exclusions={"clients_in_data": n_clients, "clients_in_model": n_clients},
    )


def _planted(fit) -> dict[str, tuple[float, float, float]]:
    """Planted value and 95% interval of the population parameters: name → (truth, low, high)."""
    post = fit.datatree["posterior"]
    t = TRUTH
    checks = {
        "alpha": (post["alpha"], t["alpha"]),
        "b_baseline": (post["b_baseline"], t["b_baseline"]),
        "sigma": (post["sigma"], t["sigma"]),
        "sd_provider[therapist]": (post["sd_provider"][..., 0], t["sd_provider"][0]),
        "sd_provider[coach]": (post["sd_provider"][..., 1], t["sd_provider"][1]),
        "b_care[therapist-coach]": (post["b_care"][..., 0], t["b_care"][0]),
        "mu_b[goal,within]": (post["mu_b"][..., 0, 0], t["b_within"]),
        "mu_b[bond,between]": (post["mu_b"][..., 1, 1], t["b_between"]),
    }
    out = {}
    for name, (da, value) in checks.items():
        low, high = np.quantile(da.values, [0.025, 0.975])
        out[name] = (float(value), float(low), float(high))
    return out


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_scale(
    sizes=(10_000, 100_000, 1_000_000),
    *,
    n_providers: int = 10_000,
    per_client_max: int = 100_000,
    draws: int = 1000,
    tune: int = 500,
    seed: int = 1,
    log=print,
) -> CheckResult:
    """Fit each size collapsed (and per client up to ``per_client_max`` clients); log each fit.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` that passed when every fit passed
    its convergence gate, with one table row per fit (``details["rows"]`` as dicts); whether the
    planted values lie in their intervals is a column (``covered``), not the verdict, as a
    95% interval misses one value in twenty by design.

    Peak memory is the process's high-water mark so far (``ru_maxrss``): run one size per process
    for a clean figure at each size.
    """
    from alliance_bayes.fitting import fit_design, settings_for
    from alliance_bayes.spec import load_spec

    rows, lines = [], []

    def say(line: str) -> None:
        lines.append(line)
        log(line)

    for n in sizes:
        start = time.perf_counter()
        data = scale_design(n, n_providers, seed=seed)
        made = time.perf_counter() - start
        forms = ["collapsed"] + (["per_client"] if n <= per_client_max else [])
        for form in forms:
            spec = load_spec("who5_change_normal", likelihood_form=form)
            settings = settings_for(spec, draws=draws, tune=tune, seed=seed, progress=False)
            t0 = time.perf_counter()
            result = fit_design(spec, replace(data), settings)
            wall = time.perf_counter() - t0 + made
            stats = result.datatree["sample_stats"]
            steps = float(stats["n_steps"].sum())
            timings = result.timings
            planted = _planted(result)
            covered = sum(lo <= v <= hi for v, lo, hi in planted.values())
            row = {
                "clients": n,
                "form": form,
                "gate": "passed" if result.passed else "FAILED",
                "compile_s": timings["compile"],
                "sampling_s": timings["sampling"],
                "wall_s": wall,
                "grad_ms": 1000 * timings["sampling"] * settings.chain_cores / max(steps, 1),
                "min_ess_per_s": result.meta["min_ess_bulk_per_second"],
                "min_ess_per_s_wall": result.meta["min_ess_bulk_per_second"]
                * timings["sampling"]
                / wall,
                "peak_gb": _peak_rss_gb(),
                "covered": f"{covered}/{len(planted)}",
                "divergences": int(stats["diverging"].sum()),
            }
            rows.append(row)
            say(
                f"{n:>9} {form:10} gate {row['gate']:6} wall {wall:7.1f} s (compile "
                f"{row['compile_s']:.0f}, sampling {row['sampling_s']:.0f}), "
                f"{row['grad_ms']:.3f} ms/gradient, min ESS/s {row['min_ess_per_s']:.1f} "
                f"(wall {row['min_ess_per_s_wall']:.1f}), peak {row['peak_gb']:.1f} GB, "
                f"truth in 95% interval {row['covered']}, divergences {row['divergences']}"
            )
            steps = ", ".join(
                f"{k} {v:.0f}" for k, v in timings.items() if k not in ("total", "wall_total")
            )
            say(f"    seconds: {steps}")
            if not result.passed:
                say(f"    {result.gate.headline()}")
            for name, (v, lo, hi) in planted.items():
                say(f"    {name:26} truth {v:7.2f}  95% [{lo:7.2f}, {hi:7.2f}]")
        same = [r for r in rows if r["clients"] == n]
        if len(same) == 2:
            a, b = same
            say(
                f"{n:>9} per-client / collapsed: wall {b['wall_s'] / a['wall_s']:.1f}x, "
                f"gradient {b['grad_ms'] / a['grad_ms']:.1f}x, min ESS/s "
                f"{a['min_ess_per_s'] / max(b['min_ess_per_s'], 1e-9):.1f}x in favour of collapsed"
            )
    passed = bool(rows) and all(r["gate"] == "passed" for r in rows)
    return CheckResult("scale", passed, pd.DataFrame(rows), "\n".join(lines), None, {"rows": rows})
