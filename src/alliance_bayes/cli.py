"""Command-line entry points used by ``scripts/``: load → build → sample → diagnose → report.

Exit codes: 0 success; 2 bad input (data contract or model spec); 3 the fit failed its convergence
checks (with ``--allow-failed-diagnostics`` the bundle is still written, marked FAILED).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT / "data" / "synthetic"
DEFAULT_RESULTS = REPO_ROOT / "results"
DEFAULT_SPEC = "who5_change"
EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
PACKAGES = (
    "alliance-bayes", "pymc", "pytensor", "nutpie", "arviz", "arviz-base", "arviz-stats",
    "arviz-plots", "numpy", "pandas", "xarray", "matplotlib", "h5netcdf", "numba",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    """Versions of Python and of every package a result depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The repository's commit, with ``+dirty`` when the work tree has changes; ``None`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fit.py",
        description=(
            "Fit one alliance model (a TOML spec in models/) to a study folder and write a results "
            "bundle results/<spec>/<run-id>/ (posterior.nc, run.json, estimands.csv, tables, "
            "figures, diagnostics, report.md). Sampler settings default to the spec's [sampler]."
        ),
    )
    p.add_argument(
        "spec",
        nargs="?",
        default=DEFAULT_SPEC,
        help=f"model spec: a name in models/ or a path to a .toml file (default {DEFAULT_SPEC})",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="study folder with providers, clients and sessions (.csv or .parquet) "
        "(default: the shipped synthetic study)",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_RESULTS, help="results root (default results/)"
    )
    p.add_argument("--draws", type=int, help="posterior draws per chain (default: spec)")
    p.add_argument("--tune", type=int, help="tuning (warm-up) iterations per chain (default: spec)")
    p.add_argument("--chains", type=int, help="number of chains (default: spec, 4)")
    p.add_argument("--seed", type=int, help="random seed for every random step (default: spec)")
    p.add_argument(
        "--sampler",
        choices=("nutpie", "pymc"),
        help="NUTS implementation: nutpie (default, compiled with numba) or PyMC's own",
    )
    p.add_argument(
        "--allow-failed-diagnostics",
        action="store_true",
        help="write the bundle even when the convergence gate fails; it is then marked FAILED "
        "at the top and the exit code is still 3",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def run_fit(argv: list[str] | None = None) -> int:
    """``scripts/fit.py``: returns the process exit code."""
    args = fit_parser().parse_args(argv)
    # Imports are deferred so that --help answers at once.
    from alliance_bayes.data.contract import DataContractError
    from alliance_bayes.data.frame import build_frame
    from alliance_bayes.data.load import load_study
    from alliance_bayes.model.design import DesignError, prepare
    from alliance_bayes.model.spec import SpecError, load_spec

    started = time.perf_counter()
    try:
        spec = load_spec(args.spec)
        study = load_study(args.data)
        frame = build_frame(
            study,
            elevated_by=spec.data.elevated_by,
            who5_cutoff=spec.data.who5_cutoff,
            phq9_cutoff=spec.data.phq9_cutoff,
        )
        data = prepare(spec, frame)
    except (SpecError, DataContractError, DesignError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(frame.summary())
    print(f"model {spec.name}: {data.n_clients} clients in the likelihood; {data.exclusions}")

    from alliance_bayes.diagnostics import check_convergence
    from alliance_bayes.inference import SamplerSettings, min_ess_per_second, sample_model
    from alliance_bayes.model.build import build_model
    from alliance_bayes.report.bundle import write_bundle
    from alliance_bayes.report.estimands import compute_estimands

    settings = SamplerSettings.from_spec(
        spec.sampler,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        progressbar=not args.quiet and sys.stderr.isatty(),
    )
    model = build_model(spec, data)
    dt, timings = sample_model(model, settings)
    # Provider types travel with the draws so that figures can group provider effects.
    dt["constant_data"] = (
        dt["constant_data"]
        .to_dataset()
        .assign(
            provider_type=("provider", data.frame.providers["provider_type"].astype(str).to_numpy())
        )
    )
    if spec.measurement is not None:  # latent alliance: two outcomes in one model
        from alliance_bayes.model.measurement import outcome_short
        from alliance_bayes.model.spec import OUTCOMES
        from alliance_bayes.report.estimands import compute_joint_estimands

        estimands = compute_joint_estimands(
            dt["posterior"].to_dataset(),
            outcome_units={outcome_short(o): OUTCOMES[o][3] for o in spec.measurement.outcomes},
            primary=outcome_short(spec.outcome),
        )
    else:
        estimands = compute_estimands(
            dt["posterior"].to_dataset(),
            outcome_units=spec.outcome_units,
            effect_units=spec.effect_units,
        )
    gate = check_convergence(dt, estimands)
    if spec.measurement is not None:
        from alliance_bayes.inference import PREDICTIVE_DRAWS_PER_CHAIN
        from alliance_bayes.model.measurement import store_latent_scores

        dt = store_latent_scores(dt, PREDICTIVE_DRAWS_PER_CHAIN)
    timings["wall_total"] = time.perf_counter() - started

    meta = run_metadata(spec, data, settings, timings, study.sha256)
    meta["min_ess_bulk_per_second"] = min_ess_per_second(dt, timings["sampling"])
    meta["convergence_passed"] = bool(gate.passed)
    print(gate.to_markdown())
    if gate.passed or args.allow_failed_diagnostics:
        run_id = make_run_id(meta)
        path = write_bundle(
            args.out,
            spec.name,
            run_id,
            dt,
            meta,
            estimands,
            gate,
            forbidden_ids=set(study.clients["client_id"].astype(str)),
        )
        print(f"results written to {path}")
    print(
        f"timings (s): compile {timings['compile']:.1f}, sampling {timings['sampling']:.1f}, "
        f"total {timings['wall_total']:.1f}; min bulk ESS/s {meta['min_ess_bulk_per_second']:.1f}"
    )
    if not gate.passed:
        print(
            "CONVERGENCE CHECKS FAILED: these estimates must not be used"
            + ("" if args.allow_failed_diagnostics else " (nothing was saved; see above)"),
            file=sys.stderr,
        )
        return EXIT_NOT_CONVERGED
    return 0


def run_metadata(spec, data, settings, timings, data_sha256: str) -> dict:
    """Everything needed to reproduce and audit a run (written as ``run.json``)."""
    return {
        "spec": spec.name,
        "spec_as_run": spec.to_dict(),
        "spec_toml": Path(spec.source).read_text(encoding="utf-8")
        if Path(spec.source).is_file()
        else "",
        "outcome": spec.outcome,
        "outcome_label": spec.outcome_label,
        "outcome_range": list(spec.outcome_range),
        "effect_units": spec.effect_units,
        "seed": settings.seed,
        "sampler": settings.sampler,
        "backend": settings.backend,
        "chains": settings.chains,
        "draws": settings.draws,
        "tune": settings.tune,
        "sampler_settings": settings.to_dict(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "data_sha256": data_sha256,
        "exclusions": data.exclusions,
        "n_clients": data.n_clients,
        "n_providers": len(data.frame.providers),
        "timings_s": timings,
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def make_run_id(meta: dict) -> str:
    """Sortable and unique: UTC time plus a digest of what determines the draws."""
    key = json.dumps(
        [meta["spec_as_run"], meta["data_sha256"], meta["sampler_settings"]], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{digest}"
