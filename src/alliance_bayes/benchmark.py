"""Samplers compared on one model, in one process, as ratios against the first (the baseline).

For each sampler: compile time, sampling time, whole fit wall time, the smallest bulk and tail ESS
over every posterior element, min ESS per second of sampling and of wall time, divergences, and
ratios to the baseline (by default PyMC's own NUTS, so that the ratios say what nutpie buys per
second of sampling and per second of the whole fit). Wall times are noisy on a shared machine:
read the ratios, and rerun before trusting a small gap.
"""

from __future__ import annotations

import time

import numpy as np
from arviz_stats import ess

from alliance_bayes.fitting import design_of, fit_design, resolve_spec, settings_for
from alliance_bayes.provenance import package_versions


def min_ess(dt, method: str) -> float:
    """Smallest ESS (``bulk`` or ``tail``) over every posterior element."""
    values = ess(dt, group="posterior", method=method)
    return min(float(np.nanmin(values[v].values)) for v in values.data_vars)


def run_benchmark(
    spec, study, *, samplers=("pymc", "nutpie"), log=print, **overrides
) -> list[dict]:
    """Fit ``spec`` to ``study`` once per sampler; log the table and return its rows."""
    spec = resolve_spec(spec)
    design = design_of(spec, study)
    versions = package_versions()
    log(f"spec {spec.name}: {design.n_clients} clients, {len(design.frame.providers)} providers")
    log(", ".join(f"{k} {versions[k]}" for k in ("python", "pymc", "nutpie", "pytensor")))
    rows = []
    for sampler in samplers:
        settings = settings_for(spec, sampler=sampler, progress=False, **overrides)
        start = time.perf_counter()
        result = fit_design(spec, design, settings)
        wall = time.perf_counter() - start
        dt, timings = result.datatree, result.timings
        bulk, tail = min_ess(dt, "bulk"), min_ess(dt, "tail")
        rows.append(
            {
                "sampler": sampler,
                "compile_s": timings["compile"],
                "sampling_s": timings["sampling"],
                "wall_s": wall,
                "min_ess_bulk": bulk,
                "min_ess_tail": tail,
                "ess_per_s_sampling": bulk / timings["sampling"],
                "ess_per_s_wall": bulk / wall,
                "divergences": int(dt["sample_stats"]["diverging"].sum()),
            }
        )
        log(f"  {sampler}: done in {wall:.1f} s")
    base = rows[0]
    log(f"\nbaseline: {base['sampler']} (ratios are sampler / baseline)\n")
    header = f"{'sampler':8} {'compile s':>9} {'sample s':>9} {'wall s':>8} {'minESS':>7} "
    header += f"{'ESS/s':>7} {'ESS/s wall':>10} {'div':>4} {'wall x':>7} {'ESS/s x':>8} {'ESS/s wall x':>12}"
    log(header)
    for r in rows:
        log(
            f"{r['sampler']:8} {r['compile_s']:9.1f} {r['sampling_s']:9.1f} {r['wall_s']:8.1f} "
            f"{r['min_ess_bulk']:7.0f} {r['ess_per_s_sampling']:7.1f} {r['ess_per_s_wall']:10.1f} "
            f"{r['divergences']:4d} {r['wall_s'] / base['wall_s']:7.2f} "
            f"{r['ess_per_s_sampling'] / base['ess_per_s_sampling']:8.3f} "
            f"{r['ess_per_s_wall'] / base['ess_per_s_wall']:12.3f}"
        )
    return rows
