"""Benchmark the samplers on one model, in one process, and print ratios against the baseline.

    python scripts/benchmark.py [SPEC] [--data DIR] [--draws N] [--tune N] [--samplers nutpie pymc]

The first sampler named is the baseline (nutpie by default). For each sampler it reports compile
time, sampling time, the smallest bulk and tail ESS over every posterior element, min ESS per second
of sampling and per second of wall time (compile included), divergences, and ratios to the baseline.
Wall times are noisy on a shared machine: read the ratios, and rerun before trusting a small gap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from arviz_stats import ess

from alliance_bayes.cli import DEFAULT_DATA, DEFAULT_SPEC, package_versions
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.inference import SamplerSettings, sample_model
from alliance_bayes.model.build import build_model
from alliance_bayes.model.design import prepare
from alliance_bayes.model.spec import load_spec


def min_ess(dt, method: str) -> float:
    values = ess(dt, group="posterior", method=method)
    return min(float(np.nanmin(values[v].values)) for v in values.data_vars)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("spec", nargs="?", default=DEFAULT_SPEC)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--samplers", nargs="+", default=["nutpie", "pymc"], choices=["nutpie", "pymc"])
    args = p.parse_args()

    spec = load_spec(args.spec)
    data = prepare(spec, build_frame(load_study(args.data)))
    versions = package_versions()
    print(f"spec {spec.name}: {data.n_clients} clients, {len(data.frame.providers)} providers")
    print(", ".join(f"{k} {versions[k]}" for k in ("python", "pymc", "nutpie", "pytensor")))
    rows = []
    for sampler in args.samplers:
        settings = SamplerSettings.from_spec(
            spec.sampler,
            sampler=sampler,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            seed=args.seed,
            progressbar=False,
        )
        start = time.perf_counter()
        dt, timings = sample_model(build_model(spec, data), settings)
        wall = time.perf_counter() - start
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
        print(f"  {sampler}: done in {wall:.1f} s")
    base = rows[0]
    print(f"\nbaseline: {base['sampler']} (ratios are sampler / baseline)\n")
    header = f"{'sampler':8} {'compile s':>9} {'sample s':>9} {'wall s':>8} {'minESS':>7} "
    header += f"{'ESS/s':>7} {'ESS/s wall':>10} {'div':>4} {'wall x':>7} {'ESS/s x':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['sampler']:8} {r['compile_s']:9.1f} {r['sampling_s']:9.1f} {r['wall_s']:8.1f} "
            f"{r['min_ess_bulk']:7.0f} {r['ess_per_s_sampling']:7.1f} {r['ess_per_s_wall']:10.1f} "
            f"{r['divergences']:4d} {r['wall_s'] / base['wall_s']:7.2f} "
            f"{r['ess_per_s_sampling'] / base['ess_per_s_sampling']:8.3f}"
        )


if __name__ == "__main__":
    main()
