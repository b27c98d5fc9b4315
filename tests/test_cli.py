"""scripts/fit.py end to end: exit codes, the FAILED bundle, bad input, and no raw identifiers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.cli import EXIT_BAD_INPUT, EXIT_NOT_CONVERGED, REPO_ROOT, run_fit

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


def test_default_spec_and_data_are_the_shipped_ones():
    from alliance_bayes.cli import DEFAULT_DATA, DEFAULT_SPEC, fit_parser

    args = fit_parser().parse_args([])
    assert args.spec == DEFAULT_SPEC == "who5_change"
    assert Path(args.data) == DEFAULT_DATA and (DEFAULT_DATA / "clients.csv").is_file()
