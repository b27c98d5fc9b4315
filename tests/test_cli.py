"""``alliance-bayes fit`` (and scripts/fit.py) end to end: exit codes, the FAILED bundle, bad input,
no raw identifiers; the other subcommands' help."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.cli import EXIT_BAD_INPUT, EXIT_NOT_CONVERGED, build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = (
    "fit", "study", "report", "compare", "sbc", "sensitivity", "simulate", "benchmark",
    "recovery", "engine-check",
)  # fmt: skip


def run_fit(argv: list[str]) -> int:
    return main(["fit", *argv])


# Far too few draws for 400 effective draws: the convergence gate must fail.
STARVED = ["--draws", "40", "--tune", "40", "--chains", "2", "--seed", "3", "--quiet"]


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "fit.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--data", "--out", "--draws", "--tune", "--chains", "--seed", "--sampler"):
        assert option in out
    assert "--allow-failed-diagnostics" in out


@pytest.mark.mcmc
def test_failed_gate_exits_3_and_saves_nothing(small_study_dir, tmp_path, capsys):
    code = run_fit(
        ["paper_table2", "--data", str(small_study_dir), "--out", str(tmp_path), *STARVED]
    )
    captured = capsys.readouterr()
    assert code == EXIT_NOT_CONVERGED
    assert "CONVERGENCE CHECKS FAILED" in captured.err
    assert "# Convergence: FAILED" in captured.out
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def failed_bundle(small_study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    code = run_fit(
        [
            "paper_table2",
            "--data",
            str(small_study_dir),
            "--out",
            str(out),
            "--allow-failed-diagnostics",
            *STARVED,
        ]
    )
    (bundle,) = (out / "paper_table2").iterdir()
    return code, bundle


@pytest.mark.mcmc
def test_allowed_failure_writes_a_bundle_marked_failed(failed_bundle):
    code, bundle = failed_bundle
    assert code == EXIT_NOT_CONVERGED
    first_line = (bundle / "report.md").read_text().splitlines()[0]
    assert first_line.startswith("# FAILED")
    assert json.loads((bundle / "diagnostics.json").read_text())["passed"] is False


@pytest.mark.mcmc
def test_bundle_is_complete_and_reloadable(failed_bundle, small_study_dir):
    _, bundle = failed_bundle
    for name in ("posterior.nc", "run.json", "estimands.csv", "tables.md", "tables.tex"):
        assert (bundle / name).is_file(), name
    dt = xr.open_datatree(bundle / "posterior.nc", engine="h5netcdf")
    assert {"posterior", "log_likelihood", "posterior_predictive", "prior"} <= set(dt.children)
    run = json.loads((bundle / "run.json").read_text())
    for key in (
        "seed",
        "sampler",
        "backend",
        "packages",
        "data_sha256",
        "spec_as_run",
        "timings_s",
    ):
        assert key in run, key
    assert run["seed"] == 3 and run["sampler"] == "nutpie" and run["chains"] == 2
    assert run["packages"]["pymc"].startswith("6.")
    est = pd.read_csv(bundle / "estimands.csv", comment="#")
    assert "b_alliance" in set(est["estimand"])
    # No raw client id anywhere in the bundle's text files.
    raw_ids = set(pd.read_csv(small_study_dir / "clients.csv", dtype=str)["client_id"])
    for path in bundle.rglob("*"):
        if path.suffix in {".md", ".json", ".csv", ".tex"}:
            text = path.read_text()
            assert not any(cid in text for cid in raw_ids), path


def test_bad_data_exits_2_naming_file_column_and_row(small_study_dir, tmp_path, capsys):
    broken = tmp_path / "study"
    shutil.copytree(small_study_dir, broken)
    clients = pd.read_csv(broken / "clients.csv", dtype=str, keep_default_na=False)
    clients.loc[4, "age"] = "forty"
    clients.to_csv(broken / "clients.csv", index=False)
    out = tmp_path / "results"
    code = run_fit(["who5_change", "--data", str(broken), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "clients.csv" in err and "'age'" in err and "5" in err and "forty" in err
    assert not out.exists()


def test_unknown_spec_exits_2(tmp_path, capsys):
    assert run_fit(["no_such_model", "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "known specs" in capsys.readouterr().err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_documents_its_options_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "exit codes: 0" in flat and "130 interrupted" in flat
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        for option in action.option_strings:
            assert option in out


def test_console_command_is_declared():
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"alliance-bayes": "alliance_bayes.cli:main"}


def test_default_spec_and_data_are_the_shipped_ones():
    from alliance_bayes.cli import DEFAULT_DATA, DEFAULT_SPEC

    args = build_parser().parse_args(["fit"])
    assert args.spec == DEFAULT_SPEC == "who5_change"
    assert Path(args.data) == DEFAULT_DATA and (DEFAULT_DATA / "clients.csv").is_file()


@pytest.mark.mcmc
def test_readme_main_command_exits_0_with_a_complete_bundle(tmp_path):
    """``./dev fit``: the default spec on the shipped study with the spec's own sampler settings.

    Also the default spec's own promises: its posterior predictive reproduces the observed shares
    at the floor and at the ceiling, and under 10% of its prior predictive datasets put more than
    half of the clients at a bound.
    """
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "fit.py"), "--out", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (bundle,) = (tmp_path / "who5_change").iterdir()
    for name in (
        "posterior.nc",
        "run.json",
        "estimands.csv",
        "tables.md",
        "tables.tex",
        "diagnostics.json",
        "diagnostics.md",
        "report.md",
        "figures/ppc.png",
        "figures/prior_predictive.png",
        "figures/rank.png",
    ):
        assert (bundle / name).is_file(), name
    assert not list(tmp_path.glob("who5_change/.*")), "a temporary folder was left behind"
    report = (bundle / "report.md").read_text()
    assert not report.startswith("# FAILED")
    assert json.loads((bundle / "diagnostics.json").read_text())["passed"] is True
    assert report.count("(central 95% ") >= 2 and "OUTSIDE" not in report
    share = float(report.split("% of prior predictive datasets put more than half")[0].split()[-1])
    assert share < 10.0
    est = pd.read_csv(bundle / "estimands.csv", comment="#").set_index("estimand")
    assert {"b_care[therapist-coach]", "b_care[both-coach]"} <= set(est.index)


@pytest.mark.mcmc
def test_numeric_ids_and_one_chain_give_a_bundle(small_study_dir, tmp_path):
    """The most common export: ids 1, 2, … (clients and providers sharing values); one chain."""
    study = tmp_path / "numeric"
    study.mkdir()
    providers = pd.read_csv(small_study_dir / "providers.csv", dtype=str)
    clients = pd.read_csv(small_study_dir / "clients.csv", dtype=str, keep_default_na=False)
    sessions = pd.read_csv(small_study_dir / "sessions.csv", dtype=str, keep_default_na=False)
    pid = {p: str(i + 1) for i, p in enumerate(providers["provider_id"])}
    cid = {c: str(i + 1) for i, c in enumerate(clients["client_id"])}
    providers["provider_id"] = providers["provider_id"].map(pid)
    clients["client_id"] = clients["client_id"].map(cid)
    sessions["client_id"] = sessions["client_id"].map(cid)
    sessions["provider_id"] = sessions["provider_id"].map(pid)
    for name, df in (("providers", providers), ("clients", clients), ("sessions", sessions)):
        df.to_csv(study / f"{name}.csv", index=False)
    out = tmp_path / "results"
    settings = ["--chains", "1", "--draws", "300", "--tune", "300", "--allow-failed-diagnostics"]
    code = run_fit(["paper_table2", "--data", str(study), "--out", str(out), *settings, "--quiet"])
    assert code in (0, EXIT_NOT_CONVERGED)
    (bundle,) = (out / "paper_table2").iterdir()
    report = (bundle / "report.md").read_text()
    assert "### Rank plots of the chains" in report
    assert "rank plots compare chains and this run has one" in report
    assert (bundle / "posterior.nc").is_file() and (bundle / "figures" / "ppc.png").is_file()


@pytest.mark.mcmc
def test_progress_lines_through_a_pipe_and_ctrl_c_stops_sampling(small_study_dir, tmp_path):
    """Not a terminal: progress comes as log lines (draws done, time left). SIGINT sent after the
    first of them, i.e. during sampling, stops the run with exit 130 and leaves no results folder.

    A million tuning steps keep the sampler busy for a minute or more.
    """
    import signal

    out = tmp_path / "results"
    args = ["paper_table2", "--data", str(small_study_dir), "--out", str(out)]
    long_run = ["--tune", "1000000", "--draws", "100", "--chains", "2"]
    with subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "fit.py"), *args, *long_run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if line.startswith("sampling: ") and " draws (tuning included)" in line:
                    break
            assert proc.poll() is None, "".join(seen)[-2000:]
            assert " s left" in line or "starting" in line
            assert any(s.startswith("prior predictive draws:") for s in seen)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))
