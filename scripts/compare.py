"""Model comparison over the WHO-5 model sequence: PSIS-LOO and leave-provider-out K-fold.

Run ``python scripts/compare.py --help``. Writes ``results/comparison/<run-id>/`` (comparison.md,
.tex, .csv, pointwise.csv, run.json, figures/comparison.png|pdf) atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from alliance_bayes.cli import DEFAULT_DATA, DEFAULT_RESULTS, git_commit, package_versions

DEFAULT_MODELS = ["who5_pooled", "who5_intercepts", "who5_change"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "models", nargs="*", default=DEFAULT_MODELS, help="specs, all on the same clients"
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--k", type=int, default=5, help="leave-provider-out folds (0: no K-fold)")
    p.add_argument("--fold-seed", type=int, default=20221013)
    p.add_argument("--draws", type=int, help="draws per chain of the full fits (default: spec)")
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--kfold-draws", type=int, default=500, help="draws per chain of fold refits")
    p.add_argument("--kfold-tune", type=int, default=500)
    p.add_argument("--kfold-chains", type=int, default=2)
    p.add_argument("--n-mc", type=int, default=200, help="Monte Carlo draws per posterior draw")
    p.add_argument(
        "--cache", type=Path, help="folder to keep the full fits (shared with sensitivity.py)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import numpy as np

    from alliance_bayes import compare as cmp
    from alliance_bayes.inference import SamplerSettings
    from alliance_bayes.model.spec import load_spec

    started = time.perf_counter()
    fits, kfold, meta_models = {}, {}, {}
    folds = None
    for name in args.models:
        spec = load_spec(name)
        _study, data = cmp.load_design(spec, args.data)
        settings = SamplerSettings.from_spec(
            spec.sampler, draws=args.draws, tune=args.tune, chains=args.chains, progressbar=False
        )
        t = time.perf_counter()
        fits[name] = cmp.fit_model(
            spec, data, settings, args.cache, cmp.settings_key(name, settings)
        )
        meta_models[name] = {
            "n_clients": data.n_clients,
            "settings": settings.to_dict(),
            "fit_s": time.perf_counter() - t,
        }
        print(
            f"{name}: fitted on {data.n_clients} clients ({meta_models[name]['fit_s']:.0f} s)",
            flush=True,
        )
        if args.k:
            if folds is None:
                folds, pfolds = cmp.provider_folds(
                    data.membership_index,
                    data.membership_weight,
                    len(data.frame.providers),
                    args.k,
                    args.fold_seed,
                )
                fold_clients = data.frame.clients["client"].tolist()
            elif data.frame.clients["client"].tolist() != fold_clients:
                raise SystemExit(f"{name} is not on the same clients as {args.models[0]}")
            ksettings = SamplerSettings.from_spec(
                spec.sampler,
                draws=args.kfold_draws,
                tune=args.kfold_tune,
                chains=args.kfold_chains,
                progressbar=False,
            )

            def refit(s, d, ks=ksettings):
                return cmp.fit_model(s, d, ks)

            t = time.perf_counter()
            kfold[name] = cmp.run_kfold(
                spec,
                data,
                folds,
                refit,
                provider_fold=pfolds,
                n_mc=args.n_mc,
                seed=args.fold_seed,
                on_fold=lambda f, info, n=name: print(f"  {n} fold {f}: {info}", flush=True),
            )
            meta_models[name]["kfold_s"] = time.perf_counter() - t
            meta_models[name]["kfold"] = kfold[name].details

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cmp.ParetoKWarning)
        loo = cmp.loo_models(fits)
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr)
    table = cmp.comparison_table(loo, kfold or None)
    print(cmp.table_markdown(table))
    meta = {
        "models": meta_models,
        "k": args.k,
        "fold_seed": args.fold_seed,
        "n_mc": args.n_mc,
        "fold_rule": "providers shuffled and balanced into k folds; client -> main provider's fold",
        "warnings": [str(w.message) for w in caught],
        "packages": package_versions(),
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - started,
        "clients_per_fold": np.bincount(folds).tolist() if folds is not None else None,
    }
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path = cmp.write_comparison(
        args.out,
        run_id,
        table,
        meta,
        pointwise=cmp.pointwise_frame(loo, kfold or None),
        caption=f"Model comparison on {meta_models[args.models[0]]['n_clients']} clients",
    )
    print(f"comparison written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
