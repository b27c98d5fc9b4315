"""Refit paper_table2 and who5_intercepts in numpyro and check posterior means against PyMC.

Needs the optional extra: ``pip install -e .[engines]`` (jax, numpyro). Prints one table per model
and exits 1 if any scalar misses the tolerance 3·MCSE + 0.05·SD (see alliance_bayes.engine_check).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from alliance_bayes.cli import DEFAULT_DATA


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="engine_check.py", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["paper_table2", "who5_intercepts"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--cache", type=Path, help="reuse PyMC fits kept by scripts/compare.py")
    p.add_argument(
        "--csv", type=Path, help="write the agreement table(s) here (one file per model)"
    )
    args = p.parse_args(argv)

    import pandas as pd

    from alliance_bayes import compare as cmp
    from alliance_bayes import engine_check as ec
    from alliance_bayes.inference import SamplerSettings
    from alliance_bayes.model.spec import load_spec

    ok = True
    for name in args.models:
        spec = load_spec(name)
        _study, data = cmp.load_design(spec, args.data)
        settings = SamplerSettings.from_spec(
            spec.sampler, draws=args.draws, tune=args.tune, chains=args.chains, progressbar=False
        )
        t = time.perf_counter()
        dt = cmp.fit_model(spec, data, settings, args.cache, cmp.settings_key(name, settings))
        t_pymc = time.perf_counter() - t
        t = time.perf_counter()
        other = ec.fit_numpyro(spec, data, chains=args.chains, draws=args.draws, tune=args.tune)
        t_np = time.perf_counter() - t
        kind = "composite" if spec.predictors.alliance == "composite" else "intercepts"
        table = ec.agreement_table(dt["posterior"].to_dataset(), other, ec.COMPARED[kind])
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            print(f"\n{name}: {data.n_clients} clients; PyMC {t_pymc:.0f} s, numpyro {t_np:.0f} s")
            print(table.round(3).to_string())
        worst = (table["diff"].abs() / table["tolerance"]).max()
        print(
            f"{name}: {int(table['agree'].sum())}/{len(table)} agree; max |diff|/tolerance {worst:.2f}"
        )
        ok &= bool(table["agree"].all())
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv / f"engine_{name}.csv")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
