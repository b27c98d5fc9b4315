"""Peak memory and time of the convergence gate on draws the size of the latent model's.

The latent model's gate checks every per-client latent draw (chains × draws × clients × subscales,
float64). This script builds standard normal draws of that shape (the shipped study: 3,087 clients,
2 subscales) and runs :func:`alliance_bayes.diagnostics.check_convergence` on them alone, in this
process, printing the draws' size, the peak resident memory before and after the gate
(``ru_maxrss``) and its wall time::

    .venv/bin/python benchmarks/gate_memory.py                 # 4 chains x 2,500 draws
    .venv/bin/python benchmarks/gate_memory.py --draws 3500 --clients 1200

Run it in its own process (peak memory is per process). The numbers in docs/benchmarks.md came
from it on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import xarray as xr

from alliance_bayes.diagnostics import check_convergence


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=2500)
    parser.add_argument("--clients", type=int, default=3087)
    parser.add_argument("--subscales", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (args.chains, args.draws)
    post = xr.Dataset(
        {
            "z_client_alliance": (
                ("chain", "draw", "client", "subscale"),
                rng.standard_normal((*shape, args.clients, args.subscales)),
            ),
            "b": (("chain", "draw", "k"), rng.standard_normal((*shape, 40))),
        }
    )
    stats = xr.Dataset(
        {
            "diverging": (("chain", "draw"), np.zeros(shape, bool)),
            "energy": (("chain", "draw"), rng.standard_normal(shape)),
        }
    )
    dt = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    before = _peak_gb()
    start = time.perf_counter()
    check_convergence(dt)
    print(
        f"{args.chains} x {args.draws} draws x {args.clients} clients x {args.subscales}: "
        f"draws {post.nbytes / 1e9:.2f} GB; peak RSS {before:.2f} GB before the gate, "
        f"{_peak_gb():.2f} GB after; gate {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
