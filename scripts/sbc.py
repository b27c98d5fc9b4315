"""Simulation-based calibration: ``python scripts/sbc.py [--spec NAME] [--replicates N] [--workers K]``.

Thin wrapper over :mod:`alliance_bayes.sbc`. Draws each replicate's parameters and outcomes from the
model's prior on the design of a study simulated by the package's simulator (reduced counts: the
``--n-*`` flags), refits the model with nutpie (compiled once per worker), and writes one JSON per
replicate under ``OUT/replicates`` as it finishes; a rerun with the same settings skips the finished
ones (and ``--replicates`` may grow). At the end it writes ``ranks.csv``, ``uniformity.csv``,
``ecdf_difference.png`` and ``summary.md`` (``--summary-only`` writes them from what is finished).
Exit status 0 when every quantity passes its uniformity tests, 1 when one fails.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from alliance_bayes.sbc import SBCDesign, SBCSettings, run_sbc, summarise


def main(argv: list[str] | None = None) -> int:
    d, s = SBCDesign(), SBCSettings(spec="who5_change")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="who5_change", help="fitting model (name or TOML path)")
    parser.add_argument(
        "--generate-spec",
        default=None,
        help="model whose prior generates the data (default: --spec; another one checks that a "
        "mis-specified prior is caught)",
    )
    parser.add_argument("--replicates", type=int, default=s.replicates)
    parser.add_argument("--workers", type=int, default=1, help="processes (each compiles once)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default results/sbc/SPEC)")
    parser.add_argument("--seed", type=int, default=s.seed)
    parser.add_argument("--chains", type=int, default=s.chains)
    parser.add_argument("--draws", type=int, default=s.draws, help="posterior draws per chain")
    parser.add_argument("--tune", type=int, default=s.tune)
    parser.add_argument("--thin-to", type=int, default=s.thin_to, help="draws kept for ranking")
    parser.add_argument("--target-accept", type=float, default=s.target_accept)
    parser.add_argument("--n-coach-clients", type=int, default=d.n_coach_clients)
    parser.add_argument("--n-therapist-clients", type=int, default=d.n_therapist_clients)
    parser.add_argument("--n-both-clients", type=int, default=d.n_both_clients)
    parser.add_argument("--n-therapists", type=int, default=d.n_therapists)
    parser.add_argument("--n-coaches", type=int, default=d.n_coaches)
    parser.add_argument("--design-seed", type=int, default=d.seed, help="seed of the design study")
    parser.add_argument("--summary-only", action="store_true", help="summarise finished replicates")
    args = parser.parse_args(argv)

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
    out = args.out or Path("results") / "sbc" / Path(args.spec).stem
    if not args.summary_only:
        start = time.perf_counter()
        ran = run_sbc(settings, out, workers=args.workers, log=print)
        print(f"ran {ran} replicate(s) in {time.perf_counter() - start:.0f} s")
    result = summarise(out)
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if result["calibrated"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
