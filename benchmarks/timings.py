"""Re-measure the timings that docs/benchmarks.md quotes, each by running the user's own command.

Every measurement runs a real command in a child process (``alliance-bayes fit SPEC --out TMP
--quiet``, ``alliance-bayes study``, ``./dev test``) and records:

* the whole process's wall time (``time.perf_counter`` around the child) and peak memory (the
  child's own ``ru_maxrss`` from ``os.wait4``: the largest resident set of the command's processes;
  figure workers are processes of their own and are not added to it);
* where the time went, from the bundle's ``run.json`` → ``timings_s`` (the phases the fit records:
  compile, sampling, prior and posterior predictive, log densities, ``wall_total`` for the fit);
* the gate's verdict, the sampler and backend and the package versions, from the same ``run.json``.

A *cold* run compiles into a fresh, empty compile folder (``PYTENSOR_FLAGS=base_compiledir=…``);
a *warm* run first runs the same command once into a fresh folder to fill it (not timed), then
times a second run that loads the compiled model from it.

Usage (from the repository root)::

    .venv/bin/python benchmarks/timings.py                      # the cheap ones
    .venv/bin/python benchmarks/timings.py --only fit-warm latent --json timings.json
    .venv/bin/python benchmarks/timings.py --all

Exit codes: 0 every command succeeded; 1 a measured command failed (its stderr tail is shown);
2 bad arguments.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Measurement:
    """One named measurement: a command and the state of the compile cache it runs with.

    Attributes
    ----------
    name : str
        What ``--only`` calls it.
    args : tuple of str
        The command after ``alliance-bayes`` (or, with ``dev``, after ``./dev``); ``--out`` and
        ``--quiet`` are added for every ``alliance-bayes`` command.
    cache : {"cold", "warm", "own"}
        ``own`` leaves the compile folder to the command (the test suite keeps its own).
    expensive : bool
        Run only when named or with ``--all``.
    what : str
        One line for ``--list``.
    dev : bool
        Run through ``./dev`` instead of ``alliance-bayes``.
    """

    name: str
    args: tuple[str, ...]
    cache: str
    expensive: bool
    what: str
    dev: bool = False


MEASUREMENTS: dict[str, Measurement] = {
    m.name: m
    for m in (
        Measurement(
            "fit-cold",
            ("fit", "who5_change"),
            "cold",
            False,
            "`./dev fit`: who5_change on the shipped study, empty compile cache",
        ),
        Measurement(
            "fit-warm",
            ("fit", "who5_change"),
            "warm",
            False,
            "`./dev fit`: who5_change on the shipped study, warm compile cache",
        ),
        Measurement(
            "paper_table2-cold",
            ("fit", "paper_table2"),
            "cold",
            False,
            "`./dev fit paper_table2`, empty compile cache",
        ),
        Measurement(
            "paper_table2-warm",
            ("fit", "paper_table2"),
            "warm",
            False,
            "`./dev fit paper_table2`, warm compile cache",
        ),
        Measurement(
            "latent",
            ("fit", "alliance_latent_who5"),
            "warm",
            True,
            "`./dev fit alliance_latent_who5` (its default spec), warm compile cache",
        ),
        Measurement(
            "study",
            ("study",),
            "warm",
            True,
            "`./dev study`: the paper's three questions, every spec's own settings, warm cache",
        ),
        Measurement(
            "suite",
            ("test",),
            "own",
            True,
            "`./dev test`: lint and the test suite CI runs (wall time only)",
            dev=True,
        ),
    )
}

#: The measurements run when none is named.
DEFAULT = tuple(name for name, m in MEASUREMENTS.items() if not m.expensive)

#: Phases of ``run.json`` → ``timings_s`` shown as columns, in the order a fit runs them.
PHASES = (
    "compile",
    "sampling",
    "prior_predictive",
    "posterior_predictive",
    "log_density",
    "complete",
)

#: Package versions shown per row.
VERSIONS = ("alliance-bayes", "pymc", "pytensor", "nutpie", "numba")

#: Lines of a failed command's stderr shown.
STDERR_TAIL = 40


@dataclass
class ChildResult:
    """A finished child process: exit code, wall seconds, peak resident set in bytes, stderr."""

    returncode: int
    wall_s: float
    peak_bytes: int
    stderr: str


@dataclass
class Row:
    """One measurement's results; :meth:`as_dict` is what ``--json`` writes."""

    name: str
    cache: str
    command: str
    whole_s: float
    peak_bytes: int | None
    timings: dict[str, float] = field(default_factory=dict)
    fits: int = 0
    gate: str = "—"
    sampler: str = "—"
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def fit_s(self) -> float | None:
        """The fit's own time (``wall_total``): from start of fitting to the estimands."""
        return self.timings.get("wall_total")

    @property
    def sampling_s(self) -> float | None:
        return self.timings.get("sampling")

    @property
    def outside_sampling_s(self) -> float | None:
        """Everything but drawing: start-up, loading, compiling, the other phases, the bundle."""
        return None if self.sampling_s is None else self.whole_s - self.sampling_s

    @property
    def outside_fit_s(self) -> float | None:
        """Start-up, imports, reading the study, and writing the bundle."""
        return None if self.fit_s is None else self.whole_s - self.fit_s

    @property
    def whole_per_sampling(self) -> float | None:
        return _ratio(self.whole_s, self.sampling_s)

    @property
    def outside_per_sampling(self) -> float | None:
        return _ratio(self.outside_sampling_s, self.sampling_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cache": self.cache,
            "command": self.command,
            "whole_s": self.whole_s,
            "peak_bytes": self.peak_bytes,
            "fit_s": self.fit_s,
            "outside_fit_s": self.outside_fit_s,
            "outside_sampling_s": self.outside_sampling_s,
            "whole_per_sampling": self.whole_per_sampling,
            "outside_per_sampling": self.outside_per_sampling,
            "timings_s": self.timings,
            "fits": self.fits,
            "gate": self.gate,
            "sampler": self.sampler,
            "versions": self.versions,
        }


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


#
# rows from run.json
#


def read_runs(out: Path) -> list[dict[str, Any]]:
    """The ``run.json`` of every fit bundle under ``out`` (those that record ``timings_s``).

    ``alliance-bayes study`` also writes a run.json for the study as a whole; it records no phase
    times and is left out.
    """
    runs = []
    for path in sorted(out.rglob("run.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(meta.get("timings_s"), Mapping):
            runs.append(meta)
    return runs


def build_row(
    name: str,
    cache: str,
    command: str,
    whole_s: float,
    peak_bytes: int | None,
    runs: Sequence[Mapping[str, Any]],
) -> Row:
    """One row from the child's wall time and peak memory and its bundles' ``run.json``.

    With several fits (the study) every phase is the sum over the fits, so that outside-sampling
    is still the whole process less the time spent drawing.
    """
    row = Row(name, cache, command, whole_s, peak_bytes, fits=len(runs))
    if not runs:
        return row
    for meta in runs:
        for key, value in meta["timings_s"].items():
            row.timings[key] = row.timings.get(key, 0.0) + float(value)
    passed = sum(bool(meta.get("convergence_passed")) for meta in runs)
    row.gate = (
        ("passed" if passed else "FAILED") if len(runs) == 1 else f"{passed} of {len(runs)} passed"
    )
    row.sampler = ", ".join(
        dict.fromkeys(f"{m.get('sampler', '?')}/{m.get('backend', '?')}" for m in runs)
    )
    packages = runs[0].get("packages") or {}
    row.versions = {k: str(packages[k]) for k in VERSIONS if k in packages}
    return row


#
# the table
#


COLUMNS = (
    "measurement",
    "whole process",
    "fit (wall_total)",
    "outside fit",
    *PHASES,
    "outside sampling",
    "whole / sampling",
    "outside / sampling",
    "peak memory",
    "gate",
    "sampler",
    "versions",
)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _gigabytes(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def table_cells(row: Row) -> list[str]:
    """The row's cells, in the order of :data:`COLUMNS`."""
    label = row.name if row.fits <= 1 else f"{row.name} ({row.fits} fits, phases summed)"
    return [
        label,
        _seconds(row.whole_s),
        _seconds(row.fit_s),
        _seconds(row.outside_fit_s),
        *(_seconds(row.timings.get(p)) for p in PHASES),
        _seconds(row.outside_sampling_s),
        _times(row.whole_per_sampling),
        _times(row.outside_per_sampling),
        _gigabytes(row.peak_bytes),
        row.gate,
        row.sampler,
        ", ".join(f"{k} {v}" for k, v in row.versions.items()) or "—",
    ]


def markdown_table(rows: Iterable[Row]) -> str:
    """The rows as one markdown table under :data:`COLUMNS`."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def facts_lines(facts: Mapping[str, Any]) -> list[str]:
    """The machine facts as markdown list lines."""
    return [f"- {key}: {value}" for key, value in facts.items()]


#
# running children
#


@contextmanager
def held(lock: Path | None) -> Iterator[None]:
    """Hold ``lock`` (as ``flock(1)`` would) around one child.

    Taken here rather than by wrapping the child in ``flock``, so that time spent waiting for the
    lock is not counted as the command's.
    """
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_child(argv: Sequence[str], env: Mapping[str, str], scratch: Path) -> ChildResult:
    """Run ``argv`` to completion; its own wall time, peak memory and stderr.

    ``os.wait4`` gives this child's rusage alone (its own and its reaped descendants' high-water
    mark), which ``getrusage(RUSAGE_CHILDREN)`` cannot once several children have run.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = scratch / "stdout.txt", scratch / "stderr.txt"
    # Files, not pipes: a full pipe would block the child while this process sits in wait4.
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=dict(env), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    return ChildResult(proc.returncode, wall, peak, stderr)


def with_compiledir(env: Mapping[str, str], compiledir: Path) -> dict[str, str]:
    """``env`` with PyTensor's compile folder set to ``compiledir``, its other flags kept."""
    kept = [
        flag
        for flag in env.get("PYTENSOR_FLAGS", "").split(",")
        if flag.strip() and not flag.strip().startswith("base_compiledir")
    ]
    return {**env, "PYTENSOR_FLAGS": ",".join([f"base_compiledir={compiledir}", *kept])}


class CommandFailed(RuntimeError):
    """A measured command exited non-zero."""

    def __init__(self, command: str, result: ChildResult):
        tail = "\n".join(result.stderr.splitlines()[-STDERR_TAIL:])
        super().__init__(f"`{command}` exited {result.returncode}; its stderr ends:\n{tail}")


def command_of(m: Measurement, cli: str, out: Path) -> list[str]:
    """The argv of measurement ``m`` writing its results under ``out``."""
    if m.dev:
        return [str(ROOT / "dev"), *m.args]
    return [cli, *m.args, "--out", str(out), "--quiet"]


def measure(m: Measurement, cli: str, lock: Path | None, work: Path) -> Row:
    """Run measurement ``m`` in folder ``work`` (compile folders, bundles, logs) and build its row."""
    env = dict(os.environ)
    if m.cache != "own":
        env = with_compiledir(env, work / "compiledir")
    if m.cache == "warm":
        fill = command_of(m, cli, work / "fill")
        with held(lock):
            result = run_child(fill, env, work / "fill-logs")
        if result.returncode != 0:
            raise CommandFailed(" ".join(fill), result)
    argv = command_of(m, cli, work / "out")
    with held(lock):
        result = run_child(argv, env, work / "logs")
    command = " ".join(argv)
    if result.returncode != 0:
        raise CommandFailed(command, result)
    runs = [] if m.dev else read_runs(work / "out")
    return build_row(m.name, m.cache, command, result.wall_s, result.peak_bytes, runs)


#
# machine facts
#


def _output(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, cwd=ROOT, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_facts(cli: str, lock: Path | None) -> dict[str, Any]:
    """CPU count, platform, Python, the package's version, the git commit and the time."""
    commit = _output(["git", "rev-parse", "HEAD"])
    if commit and _output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return {
        "date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "CPUs": cpus if usable == cpus else f"{usable} usable of {cpus}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "package": _output([cli, "--version"]) or "unknown",
        "git commit": commit or "unknown",
        "lock": str(lock) if lock else "none",
    }


#
# command line
#


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; ``--only`` refuses an unknown name, listing the known ones."""
    parser = argparse.ArgumentParser(
        description=(
            "Re-measure the timings docs/benchmarks.md quotes: whole-process wall time and peak "
            "memory of the real command, and where the time goes (run.json). Prints one markdown "
            "table."
        ),
        epilog="measurements: "
        + "; ".join(
            f"{name}{'' if m.expensive else ' (default)'}: {m.what}"
            for name, m in MEASUREMENTS.items()
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=list(MEASUREMENTS),
        help=f"these measurements, in this order, of: {', '.join(MEASUREMENTS)} "
        f"(default: {' '.join(DEFAULT)})",
    )
    which.add_argument("--all", action="store_true", help="every measurement")
    parser.add_argument(
        "--lock",
        type=Path,
        help="hold this lock file (flock) while each command runs, to keep other MCMC jobs off "
        "the CPUs; waiting for it is not timed",
    )
    parser.add_argument("--json", type=Path, help="also write the facts and rows to this file")
    parser.add_argument(
        "--cli",
        default=str(ROOT / ".venv" / "bin" / "alliance-bayes"),
        help="the alliance-bayes executable (default: the repository's .venv)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep compile folders, bundles and logs under this folder (default: a temporary "
        "folder, removed)",
    )
    args = parser.parse_args(argv)
    args.names = list(MEASUREMENTS) if args.all else list(dict.fromkeys(args.only or DEFAULT))
    if args.keep is not None:
        # A folder left by an earlier run would mix its bundles into this run's rows.
        taken = [name for name in args.names if (args.keep / name).exists()]
        if taken:
            parser.error(f"--keep {args.keep}: already holds {', '.join(taken)}; choose another")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts(args.cli, args.lock)
    print("\n".join(facts_lines(facts)), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="alliance-timings-"))
    rows: list[Row] = []
    failure = None
    try:
        for name in args.names:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            try:
                rows.append(measure(MEASUREMENTS[name], args.cli, args.lock, root / name))
            except CommandFailed as err:
                failure = f"{name}: {err}"
                break
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(markdown_table(rows))
    if args.json:
        payload = {"facts": facts, "rows": [row.as_dict() for row in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if failure:
        print(f"\nerror: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
