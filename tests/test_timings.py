"""benchmarks/timings.py: its rows, ratios, table and options, on fake run.json files (no fit)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timings.py"


@pytest.fixture(scope="module")
def timings():
    spec = importlib.util.spec_from_file_location("timings_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _run_json(folder: Path, timings: dict, passed: bool = True, spec: str = "who5_change") -> Path:
    bundle = folder / spec / "20260101T000000Z-abc"
    bundle.mkdir(parents=True)
    meta = {
        "spec": spec,
        "sampler": "nutpie",
        "backend": "numba",
        "timings_s": timings,
        "convergence_passed": passed,
        "packages": {
            "alliance-bayes": "0.1.0",
            "pymc": "6.4.0",
            "nutpie": "0.16.11",
            "xarray": "x",
        },
    }
    (bundle / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    return bundle


FIT = {
    "prior_predictive": 1.0,
    "sample": 16.0,
    "sampling": 10.0,
    "compile": 6.0,
    "log_density": 2.0,
    "total": 20.0,
    "complete": 1.5,
    "wall_total": 21.5,
}


def test_row_from_one_run_json(timings, tmp_path):
    _run_json(tmp_path, FIT)
    runs = timings.read_runs(tmp_path)
    row = timings.build_row("fit-warm", "warm", "cmd", 36.0, 800_000_000, runs)
    assert row.fit_s == 21.5
    assert row.sampling_s == 10.0
    assert row.outside_sampling_s == pytest.approx(26.0)
    assert row.outside_fit_s == pytest.approx(14.5)
    assert row.whole_per_sampling == pytest.approx(3.6)
    assert row.outside_per_sampling == pytest.approx(2.6)
    assert row.gate == "passed"
    assert row.sampler == "nutpie/numba"
    # Only the versions the table names, in its order.
    assert row.versions == {"alliance-bayes": "0.1.0", "pymc": "6.4.0", "nutpie": "0.16.11"}
    assert row.as_dict()["outside_sampling_s"] == pytest.approx(26.0)


def test_several_fits_sum_their_phases_and_count_the_gate(timings, tmp_path):
    _run_json(tmp_path, FIT, spec="who5_change")
    _run_json(tmp_path, {**FIT, "sampling": 30.0}, passed=False, spec="alliance_ratings")
    # The study's own run.json records no phases and is not a fit.
    (tmp_path / "study" / "x").mkdir(parents=True)
    (tmp_path / "study" / "x" / "run.json").write_text('{"spec": "study"}', encoding="utf-8")
    runs = timings.read_runs(tmp_path)
    row = timings.build_row("study", "warm", "cmd", 100.0, None, runs)
    assert row.fits == 2
    assert row.sampling_s == 40.0
    assert row.fit_s == 43.0
    assert row.outside_sampling_s == 60.0
    assert row.gate == "1 of 2 passed"
    assert row.sampler == "nutpie/numba"


def test_row_without_a_bundle_has_the_whole_process_only(timings):
    row = timings.build_row("suite", "own", "./dev test", 300.0, 2_000_000_000, [])
    assert row.outside_sampling_s is None
    assert row.whole_per_sampling is None
    cells = timings.table_cells(row)
    assert cells[:3] == ["suite", "300.0 s", "—"]
    assert "2.00 GB" in cells


def test_zero_sampling_gives_no_ratio(timings, tmp_path):
    _run_json(tmp_path, {**FIT, "sampling": 0.0})
    row = timings.build_row("x", "cold", "cmd", 5.0, None, timings.read_runs(tmp_path))
    assert row.whole_per_sampling is None
    assert row.outside_sampling_s == 5.0


def test_failed_gate_is_shown(timings, tmp_path):
    _run_json(tmp_path, FIT, passed=False)
    row = timings.build_row("x", "cold", "cmd", 5.0, None, timings.read_runs(tmp_path))
    assert row.gate == "FAILED"


def test_markdown_table(timings, tmp_path):
    _run_json(tmp_path, FIT)
    row = timings.build_row(
        "fit-warm", "warm", "cmd", 36.0, 800_000_000, timings.read_runs(tmp_path)
    )
    lines = timings.markdown_table([row]).splitlines()
    assert len(lines) == 3
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == list(timings.COLUMNS)
    assert len(cells) == len(header)
    by = dict(zip(header, cells, strict=True))
    assert by["whole process"] == "36.0 s"
    assert by["fit (wall_total)"] == "21.5 s"
    assert by["outside fit"] == "14.5 s"
    assert by["sampling"] == "10.0 s"
    assert by["posterior_predictive"] == "—"
    assert by["outside sampling"] == "26.0 s"
    assert by["whole / sampling"] == "3.60"
    assert by["outside / sampling"] == "2.60"
    assert by["peak memory"] == "0.80 GB"
    assert by["versions"] == "alliance-bayes 0.1.0, pymc 6.4.0, nutpie 0.16.11"


def test_default_measurements_are_the_cheap_ones(timings):
    args = timings.parse_args([])
    assert args.names == ["fit-cold", "fit-warm", "paper_table2-cold", "paper_table2-warm"]
    assert timings.parse_args(["--all"]).names == list(timings.MEASUREMENTS)
    only = timings.parse_args(["--only", "latent", "fit-warm", "latent"])
    assert only.names == ["latent", "fit-warm"]


def test_unknown_name_is_refused_with_the_names(timings, capsys):
    with pytest.raises(SystemExit) as exc:
        timings.parse_args(["--only", "fit-warm", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nope" in err
    for name in timings.MEASUREMENTS:
        assert name in err


def test_only_and_all_exclude_each_other(timings):
    with pytest.raises(SystemExit):
        timings.parse_args(["--all", "--only", "fit-warm"])


def test_keep_refuses_a_used_folder(timings, tmp_path, capsys):
    (tmp_path / "fit-warm").mkdir()
    with pytest.raises(SystemExit):
        timings.parse_args(["--only", "fit-warm", "--keep", str(tmp_path)])
    assert "fit-warm" in capsys.readouterr().err
    assert timings.parse_args(["--only", "fit-cold", "--keep", str(tmp_path)]).names == ["fit-cold"]


def test_compile_folder_replaces_only_its_own_flag(timings, tmp_path):
    env = {"PYTENSOR_FLAGS": "base_compiledir=/old,floatX=float64", "HOME": "/h"}
    got = timings.with_compiledir(env, tmp_path)
    assert got["PYTENSOR_FLAGS"] == f"base_compiledir={tmp_path},floatX=float64"
    assert got["HOME"] == "/h"
    assert timings.with_compiledir({}, tmp_path)["PYTENSOR_FLAGS"] == f"base_compiledir={tmp_path}"


def test_commands(timings, tmp_path):
    fit = timings.command_of(timings.MEASUREMENTS["fit-cold"], "ab", tmp_path)
    assert fit == ["ab", "fit", "who5_change", "--out", str(tmp_path), "--quiet"]
    suite = timings.command_of(timings.MEASUREMENTS["suite"], "ab", tmp_path)
    assert suite[0].endswith("dev") and suite[1:] == ["test"]


def test_child_wall_time_peak_memory_and_failure(timings, tmp_path):
    # A child that holds about 200 MB: its own peak is measured, not this process's.
    grow = "b = bytearray(200_000_000); b[::4096] = b'x' * len(b[::4096])"
    done = timings.run_child([sys.executable, "-c", grow], {}, tmp_path / "a")
    assert done.returncode == 0
    assert done.peak_bytes > 150_000_000
    assert done.wall_s > 0
    failed = timings.run_child(
        [sys.executable, "-c", "import sys; sys.exit('boom')"], {}, tmp_path / "b"
    )
    assert failed.returncode == 1
    message = str(timings.CommandFailed("cmd", failed))
    assert "exited 1" in message and "boom" in message
