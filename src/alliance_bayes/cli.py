"""The ``alliance-bayes`` command: fit, study, report, compare, sbc, sensitivity, simulate, benchmark,
recovery.

Every subcommand parses its options and calls the library (the same functions as the Python API),
so the command and a script give the same results. Heavy imports wait until after parsing, so
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

DEFAULT_SPEC = "who5_change"
#: The shipped synthetic study (``data/synthetic/`` of the repository; installed as package data).
DEFAULT_DATA = Path(str(files("alliance_bayes.synthetic_study")))
DEFAULT_RESULTS = Path("results")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
EXIT_NOT_SAVED = 4
EXIT_INTERRUPTED = 130

_EXIT_CODES = {
    "fit": "0 converged and saved; 2 bad input (data contract, spec, design); 3 the convergence "
    "gate failed (nothing saved unless --allow-failed-diagnostics, then saved marked FAILED); "
    "4 a step after sampling failed (the message names it and where the draws were kept)",
    "study": "0 every fit passed its convergence gate; 1 a fit failed it (every bundle and the "
    "study's report still written, marked FAILED); 2 bad input (data contract, spec, design: "
    "checked before any sampling); 4 a bundle could not be written",
    "report": "0 re-rendered; 2 not a bundle, or --data differs from the data the bundle was "
    "fitted to; 4 re-rendering failed (the bundle is left as it was)",
    "compare": (
        "0 written; 2 bad input (or the models select different clients, or score different "
        "outcomes or likelihoods that share no measure)"
    ),
    "sbc": "0 every quantity passes its uniformity tests; 1 one fails; 2 bad input",
    "sensitivity": "0 written; 2 bad input",
    "robustness": "0 written; 2 bad input",
    "hypothesis": "0 printed; 2 bad input (no such bundle, unreadable statement, unknown estimand)",
    "simulate": "0 written (a warning on stderr when a hard target of the paper is missed)",
    "benchmark": "0 done; 2 bad input",
    "recovery": "0 printed; 2 a bundle is missing or the bundles disagree on the outcome",
    "engine-check": "0 every scalar agrees; 1 one does not; 2 bad input",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one (not ``(default: None)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def _parser_for(sub, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_,
        description=description,
        epilog=f"exit codes: {_EXIT_CODES[name]}; 130 interrupted (Ctrl-C)",
        formatter_class=_HelpFormatter,
    )


def _data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="study folder with providers, clients and sessions (.csv, .parquet, .xlsx, .dta or "
        ".sav); the default "
        "is the shipped synthetic study",
    )
    _metric_option(p)


def _metric_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--who5-metric",
        choices=("percentage", "raw"),
        default="percentage",
        help="metric of the WHO-5 columns: the 0–100 percentage score, or the raw 0–25 sum "
        "(multiplied by 4 on loading)",
    )


def _study(args):
    """The study of ``--data`` read with ``--who5-metric``."""
    from alliance_bayes.data.load import load_study

    return load_study(args.data, who5_metric=args.who5_metric)


def _out_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results root folder")


def _sampler_options(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--draws", type=int, help=f"posterior draws per chain{what} (default: spec)")
    p.add_argument("--tune", type=int, help="tuning (warm-up) iterations per chain (default: spec)")
    p.add_argument("--chains", type=int, help="number of chains (default: spec)")


def _cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache",
        type=Path,
        help="folder that keeps full fits and reuses them for the same spec, data and settings "
        "(shared by compare, sensitivity and engine-check)",
    )


def _sweep_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--workers", type=int, default=1, help="processes (each compiles once)")
    p.add_argument(
        "--dask", metavar="local|ADDRESS",
        help=f"run the {what} on dask.distributed: 'local' (a cluster of --workers processes) "
        "or a scheduler address such as tcp://host:8786 (needs the 'dask' extra)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alliance-bayes",
        description="Bayesian models of the therapeutic alliance and change in well-being "
        "(WHO-5) and depression (PHQ-9) in telehealth care.",
    )
    from alliance_bayes.version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _parser_for(
        sub,
        "fit",
        "fit one model and write its results bundle",
        "Fit one model (a shipped spec or a TOML file) to a study and write the bundle "
        "<out>/<spec>/<run-id>/ (posterior.nc, run.json, estimands.csv, tables, figures, "
        "diagnostics, report.md). Sampler settings default to the spec's [sampler] table.",
    )
    p.add_argument(
        "spec", nargs="?", default=DEFAULT_SPEC, help="a shipped spec name or a path to a .toml"
    )
    _data_option(p)
    _out_option(p)
    _sampler_options(p)
    p.add_argument("--seed", type=int, help="seed of every random step (default: spec)")
    p.add_argument(
        "--sampler", choices=("nutpie", "pymc"), help="NUTS implementation (default: spec, nutpie)"
    )
    p.add_argument(
        "--allow-failed-diagnostics",
        action="store_true",
        help="write the bundle even when the convergence gate fails; it is then marked FAILED "
        "at the top and the exit code is still 3",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress: without it a terminal shows the sampler's bar, and a pipe or log file "
        "gets a line every 10 s (draws done, time left) and one per phase",
    )
    p.set_defaults(run=_fit)

    from alliance_bayes.study import QUESTIONS

    p = _parser_for(
        sub,
        "study",
        "fit the study's three questions and write one report",
        "Fit the paper's three questions (ratings: alliance_ratings; change: wellbeing_change "
        "and depression_course; association: who5_change and depression_change), save each "
        "fit's bundle <out>/<spec>/<run-id>/ and write <out>/study/<run-id>/ (report.md, "
        "report.html, Table 1, one section per question with the published values beside the "
        "posterior, run.json). Sampler settings default to each spec's [sampler] table.",
    )
    _data_option(p)
    _out_option(p)
    _sampler_options(p, " of every fit")
    p.add_argument("--seed", type=int, help="seed of every fit (default: each spec's)")
    p.add_argument(
        "--sampler", choices=("nutpie", "pymc"), help="NUTS implementation (default: spec, nutpie)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(QUESTIONS),
        metavar="QUESTION",
        help=f"run only these questions, of {', '.join(QUESTIONS)} (default: all)",
    )
    _cache_option(p)
    p.add_argument("--quiet", action="store_true", help="no sampler progress")
    p.set_defaults(run=_reanalyse)

    p = _parser_for(
        sub,
        "report",
        "re-render a bundle's tables, figures and report without sampling",
        "Re-render tables, figures and report.md of a saved bundle from its draws (no sampling).",
    )
    p.add_argument("bundle", type=Path, help="a results bundle folder <results>/<spec>/<run-id>")
    p.add_argument(
        "--out",
        type=Path,
        help="write a complete new bundle under this results root instead of replacing BUNDLE",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="the study the bundle was fitted to: its hash is checked against the bundle's, and "
        "its raw identifiers are kept out of the re-rendered files",
    )
    _metric_option(p)
    p.set_defaults(run=_report)

    from alliance_bayes.checks.compare import DEFAULT_MODELS as COMPARE_MODELS
    from alliance_bayes.checks.sbc import SBCDesign, SBCSettings
    from alliance_bayes.checks.sensitivity import DEFAULT_MODELS as SENSITIVITY_MODELS

    p = _parser_for(
        sub,
        "compare",
        "compare models by PSIS-LOO and leave-provider-out K-fold",
        "Fit each model to the same clients and compare them by PSIS-LOO and leave-provider-out "
        "K-fold; writes <out>/comparison/<run-id>/ (comparison.md, .tex, .csv, pointwise.csv, "
        "run.json, figures/).",
    )
    p.add_argument("models", nargs="*", default=list(COMPARE_MODELS), help="specs to compare")
    _data_option(p)
    _out_option(p)
    p.add_argument("--k", type=int, default=5, help="leave-provider-out folds (0: no K-fold)")
    p.add_argument("--fold-seed", type=int, default=20221013, help="seed of the fold assignment")
    _sampler_options(p, " of the full fits")
    p.add_argument("--kfold-draws", type=int, default=500, help="draws per chain of fold refits")
    p.add_argument("--kfold-tune", type=int, default=500, help="tuning of fold refits")
    p.add_argument("--kfold-chains", type=int, default=2, help="chains of fold refits")
    p.add_argument("--n-mc", type=int, default=200, help="Monte Carlo draws per posterior draw")
    _sweep_options(p, "K-fold folds")
    _cache_option(p)
    p.set_defaults(run=_compare)

    d, s = SBCDesign(), SBCSettings(spec=DEFAULT_SPEC)
    p = _parser_for(
        sub,
        "sbc",
        "simulation-based calibration of a model",
        "Simulation-based calibration: draw parameters and outcomes from the model's prior on "
        "the design of a small simulated study, refit (nutpie, compiled once per worker), and "
        "rank the truth among the draws. One JSON per replicate under OUT/replicates as it "
        "finishes (a rerun skips finished ones); at the end ranks.csv, uniformity.csv, "
        "ecdf_difference.png and summary.md.",
    )
    p.add_argument("--spec", default=DEFAULT_SPEC, help="fitting model (name or TOML path)")
    p.add_argument(
        "--generate-spec",
        help="model whose prior generates the data (default: --spec; another one checks that a "
        "mis-specified prior is caught)",
    )
    p.add_argument("--replicates", type=int, default=s.replicates, help="replicates")
    _sweep_options(p, "replicates")
    p.add_argument("--out", type=Path, help="folder (default results/sbc/SPEC)")
    p.add_argument("--seed", type=int, default=s.seed, help="seed of the replicates")
    p.add_argument("--chains", type=int, default=s.chains, help="chains per refit")
    p.add_argument("--draws", type=int, default=s.draws, help="posterior draws per chain")
    p.add_argument("--tune", type=int, default=s.tune, help="tuning iterations per chain")
    p.add_argument(
        "--thin-to",
        type=int,
        default=s.thin_to,
        help="at most this many draws ranked (fewer at low ESS)",
    )
    p.add_argument("--target-accept", type=float, default=s.target_accept, help="NUTS target")
    for field in ("n_coach_clients", "n_therapist_clients", "n_both_clients"):
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(d, field),
                       help=f"design: {field.replace('_', ' ').removeprefix('n ')}")  # fmt: skip
    p.add_argument("--n-therapists", type=int, default=d.n_therapists, help="design: therapists")
    p.add_argument("--n-coaches", type=int, default=d.n_coaches, help="design: coaches")
    p.add_argument("--design-seed", type=int, default=d.seed, help="seed of the design study")
    p.add_argument("--summary-only", action="store_true", help="summarise finished replicates")
    p.set_defaults(run=_sbc)

    p = _parser_for(
        sub,
        "sensitivity",
        "prior sensitivity: power-scaling and refits under other prior sets",
        "Prior sensitivity: power-scaling (psense) of every model, and refits of a base model "
        "under the priors of other specs; writes <out>/sensitivity/<run-id>/.",
    )
    p.add_argument("models", nargs="*", default=list(SENSITIVITY_MODELS), help="specs")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="BASE=SPEC",
        help="refit BASE under the priors of SPEC (repeatable); default: who5_change under "
        "who5_change_priors_wide, who5_change_priors_narrow and who5_change_priors_halfnormal",
    )
    _data_option(p)
    _out_option(p)
    _sampler_options(p)
    _sweep_options(p, "prior-set refits")
    _cache_option(p)
    p.set_defaults(run=_sensitivity)

    p = _parser_for(
        sub,
        "simulate",
        "write a synthetic study matching the paper's margins",
        "Generate the synthetic study (providers.csv, clients.csv, sessions.csv, truth.json) and "
        "print the target-vs-achieved table.",
    )
    p.add_argument("--out", type=Path, default=Path("synthetic_study"), help="output folder")
    p.add_argument("--seed", type=int, help="random seed (default: the shipped study's)")
    p.add_argument(
        "--small", action="store_true", help="small design (300 clients, 30 providers), same truth"
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one SimulationConfig setting (repeatable), e.g. alliance_per_session=0.05, "
        "who5_reliability=0.8, alliance_care_shift.therapist=-0.4 (one entry of a table); the "
        "planted values are written to truth.json",
    )
    p.set_defaults(run=_simulate)

    p = _parser_for(
        sub,
        "robustness",
        "the reviewer's sensitivity analyses of one model, in one table",
        "Fit a base model and its reviewer variants (early alliance from the first 3 sessions; "
        "without days in care; missing follow-up imputed with shifts of 0, -5 and -10 points) and "
        "write <out>/robustness/<run-id>/ (robustness.md with row blocks per analysis and the "
        "conclusions in words, robustness.csv, run.json).",
    )
    p.add_argument("--base", default=DEFAULT_SPEC, help="base spec name or TOML path")
    _data_option(p)
    _out_option(p)
    _sampler_options(p)
    _cache_option(p)
    p.set_defaults(run=_robustness)

    p = _parser_for(
        sub,
        "hypothesis",
        "decide statements about the estimands of a saved bundle",
        'Evaluate statements such as "b_goal_within > b_bond_within" or '
        '"b_goal_within-between = 0" on a bundle\'s draws: posterior and prior probability, '
        "share inside the ROPE with a decision, and a Bayes factor (Savage-Dickey for '='). "
        "A difference needs a space before its minus ('a - b'; 'a-b' is one estimand name); "
        "other operators need none. Without statements the spec's [hypotheses] tests are "
        "decided.",
    )
    p.add_argument("bundle", type=Path, help="a results bundle folder")
    p.add_argument("statements", nargs="*", help="statements to decide")
    p.add_argument(
        "--rope",
        type=float,
        help="ROPE half-width in outcome points, for a slope per point of the 1-5 alliance "
        "scale (rescaled to a declared one); default: the spec's",
    )
    p.set_defaults(run=_hypothesis)

    p = _parser_for(
        sub,
        "benchmark",
        "compare samplers on one model (ratios against the first)",
        "Fit one model once per sampler in one process and print compile and sampling time, "
        "min ESS, ESS per second and ratios against the first sampler (the baseline).",
    )
    p.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help="spec name or TOML path")
    _data_option(p)
    _sampler_options(p)
    p.add_argument("--seed", type=int, help="seed (default: spec)")
    p.add_argument(
        "--samplers", nargs="+", default=["pymc", "nutpie"], choices=["nutpie", "pymc"],
        help="samplers; the first is the baseline (default: PyMC's NUTS)",
    )  # fmt: skip
    p.add_argument(
        "--scale", nargs="+", type=int, metavar="CLIENTS",
        help="instead: simulated platforms of these many clients (e.g. 10000 100000 1000000), "
        "who5_change_normal collapsed and, up to --per-client-max clients, per client",
    )  # fmt: skip
    p.add_argument("--providers", type=int, default=10_000, help="providers (with --scale)")
    p.add_argument(
        "--per-client-max", type=int, default=100_000,
        help="largest size also fitted per client (with --scale)",
    )  # fmt: skip
    p.set_defaults(run=_benchmark)

    p = _parser_for(
        sub,
        "recovery",
        "planted truth against posterior for bundles of a simulated study",
        "For every estimand the study's truth.json plants, print the truth and per bundle the "
        "posterior mean, 95% HDI, error in posterior SDs and coverage.",
    )
    p.add_argument("bundles", type=Path, nargs="+", help="results bundle folders")
    p.add_argument(
        "--truth", type=Path, default=DEFAULT_DATA / "truth.json", help="the study's truth.json"
    )
    p.add_argument("--outcome", choices=("who5", "phq9"), help="outcome (default: the bundles')")
    p.add_argument("--alliance-only", action="store_true", help="only the alliance slopes")
    p.set_defaults(run=_recovery)

    p = _parser_for(
        sub,
        "engine-check",
        "refit models in numpyro and check the posterior means agree",
        "Refit models in numpyro (needs the 'engines' extra) and check that every posterior "
        "mean agrees within 3 MCSE + 0.05 SD.",
    )
    p.add_argument(
        "models",
        nargs="*",
        default=["who5_change", "who5_intercepts", "paper_table2"],
        help="specs",
    )
    _data_option(p)
    p.add_argument("--draws", type=int, default=1000, help="draws per chain")
    p.add_argument("--tune", type=int, default=1000, help="tuning iterations per chain")
    p.add_argument("--chains", type=int, default=4, help="chains")
    _cache_option(p)
    p.add_argument("--csv", type=Path, help="write the agreement tables here")
    p.set_defaults(run=_engine_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``alliance-bayes``; returns the exit code (see each subcommand's ``--help``)."""
    args = build_parser().parse_args(argv)
    from alliance_bayes.data.contract import DataContractError
    from alliance_bayes.model.regression.design import DesignError
    from alliance_bayes.report.bundle import BundleError, ForbiddenIdentifierError
    from alliance_bayes.spec import SpecError

    try:
        return args.run(args)
    except (SpecError, DataContractError, DesignError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BundleError, ForbiddenIdentifierError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NOT_SAVED
    except KeyboardInterrupt:
        print("interrupted: nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED


def subcommand(name: str) -> Callable[[], int]:
    """An entry point for ``scripts/<name>.py``: ``alliance-bayes <name>`` with the script's args."""
    return lambda: main([name, *sys.argv[1:]])


# --- subcommands ----------------------------------------------------------------------------------


def _fit(args) -> int:
    from alliance_bayes.fitting import design_of, fit_design, settings_for
    from alliance_bayes.model.families import family_of
    from alliance_bayes.report.figures import figure_pool
    from alliance_bayes.spec import load_spec

    spec = load_spec(args.spec)
    # The figure workers start now: they import while the model compiles on one CPU.
    with figure_pool(None, family_of(spec).figures) as pool:
        study = _study(args)
        design = design_of(spec, study)
        print(design.frame.summary())
        print(
            f"model {spec.name}: {design.n_clients} clients in the likelihood; {design.exclusions}"
        )
        settings = settings_for(
            spec,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            seed=args.seed,
            sampler=args.sampler,
            progress=not args.quiet,
        )
        result = fit_design(
            spec, design, settings, forbidden_ids=study.clients["client_id"].astype(str)
        )
        print(result.gate.to_markdown())
        if result.passed or args.allow_failed_diagnostics:
            if not args.quiet:
                print("writing the results bundle (tables, figures, report)", file=sys.stderr)
            print(f"results written to {result.save(args.out, figure_workers=pool)}")
    t = result.timings
    print(
        f"timings (s): compile {t['compile']:.1f}, sampling {t['sampling']:.1f}, "
        f"total {t['wall_total']:.1f}; min bulk ESS/s {result.meta['min_ess_bulk_per_second']:.1f}"
    )
    if not result.passed:
        print(
            "CONVERGENCE CHECKS FAILED: these estimates must not be used"
            + ("" if args.allow_failed_diagnostics else " (nothing was saved; see above)"),
            file=sys.stderr,
        )
        return EXIT_NOT_CONVERGED
    return EXIT_OK


def _reanalyse(args) -> int:
    from alliance_bayes.fitting import resolve_spec
    from alliance_bayes.model.families import family_of
    from alliance_bayes.report.figures import figure_pool
    from alliance_bayes.study import QUESTIONS, reanalyse

    names = [n for q in args.only or QUESTIONS for n in QUESTIONS[q]]
    makers = tuple(dict.fromkeys(f for n in names for f in family_of(resolve_spec(n)).figures))
    try:
        with figure_pool(None, makers) as pool:
            run = reanalyse(
                _study(args),
                args.out,
                questions=args.only,
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                seed=args.seed,
                sampler=args.sampler,
                cache=args.cache,
                progress=not args.quiet,
                figure_workers=pool,
                log=lambda line: print(line, flush=True),
            )
    except KeyboardInterrupt:
        print(
            "interrupted: the study's report was not written; the bundles saved before the "
            "interrupt (listed above) are kept",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"study report written to {run.path}")
    if not run.passed:
        failed = ", ".join(n for n, o in run.fits.items() if not o.passed)
        print(
            f"CONVERGENCE CHECKS FAILED for {failed}: their estimates must not be used "
            "(their bundles and the study's report are marked FAILED)",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _report(args) -> int:
    from alliance_bayes.report.figures import figure_pool
    from alliance_bayes.result import Fit

    with figure_pool(None) as pool:
        return _report_with(args, Fit.load(args.bundle), pool)


def _report_with(args, result, pool) -> int:
    study = None
    if args.data is not None:
        study = _study(args)
        if study.sha256 != result.meta.get("data_sha256"):
            print(
                f"error: {args.data} is not the data {args.bundle} was fitted to (SHA-256 "
                f"{study.sha256[:12]}… against the bundle's {str(result.meta.get('data_sha256'))[:12]}…)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
    print(f"report written to {result.report(args.out, study=study, figure_workers=pool)}")
    return EXIT_OK


def _exit(result) -> int:
    """A check's exit code: :data:`EXIT_CHECK_FAILED` when it failed, else :data:`EXIT_OK` (a
    check without a verdict informs; it does not fail)."""
    return EXIT_CHECK_FAILED if result.passed is False else EXIT_OK


def _compare(args) -> int:
    from alliance_bayes.checks.compare import run_comparison

    result = run_comparison(
        args.models,
        _study(args),
        args.out,
        k=args.k,
        fold_seed=args.fold_seed,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        kfold_draws=args.kfold_draws,
        kfold_tune=args.kfold_tune,
        kfold_chains=args.kfold_chains,
        n_mc=args.n_mc,
        cache=args.cache,
        workers=args.workers,
        dask=args.dask,
        log=lambda line: print(line, flush=True),
    )
    print(f"comparison written to {result.path}")
    return _exit(result)


def _sbc(args) -> int:
    import time

    from alliance_bayes.checks.sbc import SBCDesign, SBCSettings, run_sbc, summarise

    settings = SBCSettings(
        spec=args.spec,
        generate_spec=args.generate_spec,
        design=SBCDesign(
            n_coach_clients=args.n_coach_clients,
            n_therapist_clients=args.n_therapist_clients,
            n_both_clients=args.n_both_clients,
            n_therapists=args.n_therapists,
            n_coaches=args.n_coaches,
            seed=args.design_seed,
        ),
        replicates=args.replicates,
        seed=args.seed,
        chains=args.chains,
        tune=args.tune,
        draws=args.draws,
        thin_to=args.thin_to,
        target_accept=args.target_accept,
    )
    out = args.out or DEFAULT_RESULTS / "sbc" / Path(args.spec).stem
    if not args.summary_only:
        start = time.perf_counter()
        from alliance_bayes.sweeps import SweepError

        try:
            result = run_sbc(settings, out, workers=args.workers, dask=args.dask, log=print)
        except SweepError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        ran = result.details["replicates_run"]
        print(f"ran {ran} replicate(s) in {time.perf_counter() - start:.0f} s")
    else:
        result = summarise(out)
    print(result.text)
    return _exit(result)


def _sensitivity(args) -> int:
    from alliance_bayes.checks.sensitivity import run_sensitivity

    variants: dict[str, list[str]] | None = None
    if args.variant:
        variants = {}
        for item in args.variant:
            base, sep, other = item.partition("=")
            if not sep or not base or not other:
                print(f"error: --variant {item!r}: expected BASE=SPEC", file=sys.stderr)
                return EXIT_BAD_INPUT
            variants.setdefault(base, []).append(other)
    result = run_sensitivity(
        args.models,
        _study(args),
        args.out,
        variants=variants,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cache=args.cache,
        workers=args.workers,
        dask=args.dask,
        log=lambda line: print(line, flush=True),
    )
    print(f"sensitivity written to {result.path}")
    return _exit(result)


def _robustness(args) -> int:
    from alliance_bayes.checks.robustness import run_robustness

    result = run_robustness(
        _study(args),
        args.out,
        base=args.base,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cache=args.cache,
        log=lambda line: print(line, flush=True),
    )
    print(f"robustness written to {result.path}")
    return _exit(result)


def _hypothesis(args) -> int:
    from alliance_bayes.report.hypotheses import hypotheses_markdown
    from alliance_bayes.result import Fit
    from alliance_bayes.spec import HypothesisError

    result = Fit.load(args.bundle)
    try:
        table = result.hypotheses(*args.statements, rope=args.rope)
    except HypothesisError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if table.empty:
        print("no statements given and the spec declares no [hypotheses] tests", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n".join(hypotheses_markdown(table, result.meta)))
    return EXIT_OK


def _simulate(args) -> int:
    from alliance_bayes.data.simulate import (
        DEFAULT_SEED,
        SimulationConfig,
        config_with,
        format_table,
        hard_targets_met,
        simulate_study,
        target_table,
        write_simulated_study,
    )

    seed = DEFAULT_SEED if args.seed is None else args.seed
    config = SimulationConfig.small() if args.small else SimulationConfig()
    try:
        config = config_with(config, args.settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    study = simulate_study(config, seed=seed)
    write_simulated_study(study, args.out)
    table = target_table(study.providers, study.clients, study.sessions)
    print(f"wrote {args.out} (seed {seed}, {len(study.clients)} clients)")
    print(format_table(table))
    if not args.small and not hard_targets_met(table):
        print("warning: some hard targets are not met for this seed", file=sys.stderr)
    return EXIT_OK


def _benchmark(args) -> int:
    from alliance_bayes.benchmark import run_benchmark

    if args.scale:
        from alliance_bayes.checks.scale import run_scale

        result = run_scale(
            args.scale,
            n_providers=args.providers,
            per_client_max=args.per_client_max,
            draws=args.draws or 1000,
            tune=args.tune or 500,
            seed=args.seed or 1,
        )
        return _exit(result)
    run_benchmark(
        args.spec,
        _study(args),
        samplers=args.samplers,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
    )
    return EXIT_OK


def _recovery(args) -> int:
    from alliance_bayes.checks.recovery import recovery_table

    try:
        result = recovery_table(
            args.bundles, args.truth, outcome=args.outcome, alliance_only=args.alliance_only
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.text)
    return _exit(result)


def _engine_check(args) -> int:
    from alliance_bayes.checks.engine_check import run_engine_check

    result = run_engine_check(
        args.models,
        _study(args),
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cache=args.cache,
        csv=args.csv,
    )
    return _exit(result)
