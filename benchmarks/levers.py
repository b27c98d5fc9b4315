"""Where a cold default fit's compile time goes, and what each speed lever measured buys.

Each measurement runs in its own child process with an empty compile folder, so that every one is
a first compile (what a fresh clone pays), on the shipped study's ``who5_change`` model:

``post-numba``, ``post-fast``
    The post-sampling functions (500 prior draws of every parameter and the outcome, and the log
    density of the likelihood and every prior at 6,000 posterior draws) compiled with the
    sampler's backend (numba, as before) or as the package now does
    (:func:`alliance_bayes.inference.auxiliary_compilation`: FAST_COMPILE, no C compiler).
``nutpie-gcc``, ``nutpie``
    nutpie's compile of the sampler's log density and gradient with PyMC's initial-point function
    built by gcc (as before) or with no C compiler
    (:func:`alliance_bayes.inference.initial_points_without_c`).
``nutpie-jax``
    nutpie's JAX backend, compile and 4 × (500 + 1,500) draws (needs the ``engines`` extra).

Prints one markdown table: CPU seconds of the process and of its children (gcc), wall seconds.
Usage: ``.venv/bin/python benchmarks/levers.py [NAME ...] [--lock FILE]``; the posterior draws
come from a short fit of the same model made first (in its own compile folder).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timings import held, with_compiledir  # this folder's script

NAMES = ("post-numba", "post-fast", "nutpie-gcc", "nutpie", "nutpie-jax")

_CHILD = r"""
import os, sys, time, warnings
from contextlib import nullcontext
warnings.simplefilter("ignore")
import pymc as pm, pytensor, xarray as xr
from alliance_bayes.fitting import design_of, resolve_spec
from alliance_bayes.inference import (
    COMPILE_FLAGS, auxiliary_compilation, initial_points_without_c, log_density,
)
from alliance_bayes.model.families import family_of
name, draws_file = sys.argv[1], sys.argv[2]
spec = resolve_spec("who5_change")
model = family_of(spec).build(spec, design_of(spec, "data/synthetic"))
c0, w0 = time.process_time(), time.perf_counter()
if name.startswith("post"):
    posterior = xr.open_datatree(draws_file)["posterior"].to_dataset()
    fast = name == "post-fast"
    context = (
        auxiliary_compilation() if fast
        else pytensor.config.change_flags(mode="NUMBA", **COMPILE_FLAGS)
    )
    with model, context:
        names = [*(v.name for v in model.free_RVs), *(v.name for v in model.deterministics), "y"]
        kw = {} if fast else {"backend": "numba"}
        pm.sample_prior_predictive(draws=500, var_names=names, random_seed=1, **kw)
        rvs = [*model.observed_RVs, *model.free_RVs]
        log_density(model, posterior, rvs, "FAST_COMPILE" if fast else "numba")
else:
    import nutpie
    from alliance_bayes.compiled_wrappers import cached_wrappers
    backend = "jax" if name == "nutpie-jax" else "numba"
    initial = initial_points_without_c() if name != "nutpie-gcc" else nullcontext()
    with pytensor.config.change_flags(**COMPILE_FLAGS), cached_wrappers(), initial:
        kw = {"gradient_backend": "jax"} if backend == "jax" else {}
        compiled = nutpie.compile_pymc_model(model, backend=backend, **kw)
        if backend == "jax":
            t = time.perf_counter()
            nutpie.sample(compiled, draws=1500, tune=500, chains=4, cores=2, seed=1,
                          progress_bar=False)
            print("sampling", time.perf_counter() - t)
t = os.times()
print("result", time.process_time() - c0, t.children_user + t.children_system,
      time.perf_counter() - w0)
"""


def _run(name: str, draws_file: str, python: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = with_compiledir(os.environ, Path(cache))
        out = subprocess.run(
            [python, "-c", _CHILD, name, draws_file], env=env, capture_output=True, text=True
        )
    if out.returncode != 0:
        sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    row: dict[str, float] = {}
    for line in out.stdout.splitlines():
        key, *values = line.split()
        if key == "result":
            row.update(cpu=float(values[0]), gcc=float(values[1]), wall=float(values[2]))
        elif key == "sampling":
            row["sampling"] = float(values[0])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)}")
    parser.add_argument("--lock", help="hold this lock file while measuring (shared machines)")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(NAMES)):
        parser.error(f"unknown {unknown}; choose from {', '.join(NAMES)}")
    args.names = args.names or list(NAMES[:4])  # every lever but JAX's
    python = sys.executable
    with held(Path(args.lock) if args.lock else None), tempfile.TemporaryDirectory() as tmp:
        # Posterior draws to evaluate the log densities at: a short fit of the same model.
        subprocess.run(
            [str(Path(python).with_name("alliance-bayes")), "fit", "--out", tmp, "--quiet",
             "--draws", "1500", "--allow-failed-diagnostics"],
            env=with_compiledir(os.environ, Path(tmp) / "cache"),
            check=True, capture_output=True,
        )  # fmt: skip
        draws_file = str(next(Path(tmp).glob("who5_change/*/posterior.nc")))
        rows = {name: _run(name, draws_file, python) for name in args.names}
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; empty compile folder each")
    print("| measurement | CPU s | gcc CPU s | wall s | sampling s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        sampling = f"{r['sampling']:.1f}" if "sampling" in r else ""
        print(f"| {name} | {r['cpu']:.1f} | {r['gcc']:.1f} | {r['wall']:.1f} | {sampling} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
