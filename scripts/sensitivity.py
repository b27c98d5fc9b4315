"""Prior sensitivity: power-scaling (psense) for every model, and refits under wider/narrower priors.

Run ``python scripts/sensitivity.py --help``. Writes ``results/sensitivity/<run-id>/`` atomically:
``<model>.md|.tex|.csv`` per model (estimand means under each prior set, shifts in base posterior SDs,
psense and a verdict per estimand) and ``run.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from alliance_bayes.cli import DEFAULT_DATA, DEFAULT_RESULTS, git_commit, package_versions

DEFAULT_MODELS = ["paper_table2", "who5_pooled", "who5_intercepts", "who5_change"]
# base model -> prior sets declared as TOML specs (same model, other [priors])
DEFAULT_VARIANTS = {"who5_change": ["who5_change_priors_wide", "who5_change_priors_narrow"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sensitivity.py", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="BASE=SPEC",
        help="refit BASE under the priors of SPEC (a TOML spec); default: who5_change wide/narrow",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--cache", type=Path, help="folder of fits shared with scripts/compare.py")
    args = p.parse_args(argv)

    from alliance_bayes import compare as cmp
    from alliance_bayes import sensitivity as sens
    from alliance_bayes.inference import SamplerSettings
    from alliance_bayes.model.spec import load_spec
    from alliance_bayes.report.estimands import compute_estimands

    variants: dict[str, list[str]] = {}
    for item in args.variant:
        base, _, other = item.partition("=")
        variants.setdefault(base, []).append(other)
    if not args.variant:
        variants = DEFAULT_VARIANTS

    started = time.perf_counter()

    def fit(name: str):
        spec = load_spec(name)
        _study, data = cmp.load_design(spec, args.data)
        settings = SamplerSettings.from_spec(
            spec.sampler, draws=args.draws, tune=args.tune, chains=args.chains, progressbar=False
        )
        dt = cmp.fit_model(spec, data, settings, args.cache, cmp.settings_key(name, settings))
        est = compute_estimands(
            dt["posterior"].to_dataset(),
            outcome_units=spec.outcome_units,
            effect_units=spec.effect_units,
        )
        return spec, data, dt, est

    tables, meta_models = {}, {}
    for name in args.models:
        _spec, data, dt, est = fit(name)
        psense = sens.psense_estimands(dt, est)
        shifts = None
        if variants.get(name):
            others = {v: fit(v)[3] for v in variants[name]}
            shifts = sens.shift_table(est, others)
        table = sens.combined_table(shifts, psense)
        tables[name] = table
        meta_models[name] = {
            "n_clients": data.n_clients,
            "variants": variants.get(name, []),
            "verdicts": table["verdict"].value_counts().to_dict(),
        }
        print(sens.sensitivity_markdown(table, f"## {name}"), flush=True)
    meta = {
        "models": meta_models,
        "shift_limit_sd": sens.SHIFT_LIMIT,
        "psense_threshold": sens.PSENSE_THRESHOLD,
        "psense_prior_terms": "log_prior minus the non-centred z_* auxiliaries",
        "packages": package_versions(),
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - started,
    }
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path = sens.write_sensitivity(args.out, run_id, tables, meta)
    print(f"sensitivity written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
