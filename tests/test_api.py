"""The Python API: ``ab.load_study``, ``ab.load_spec``, ``ab.fit`` → ``Fit`` (summary, tables, save,
load, re-report), used from outside the checkout as a notebook would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.cli import EXIT_BAD_INPUT, main
from alliance_bayes.report.bundle import FAILED_MARKER
from alliance_bayes.result import SUMMARY_COLUMNS, Fit

# Far too few draws for the gate: the API must still return a Fit (and save it marked FAILED).
STARVED = {"draws": 40, "tune": 40, "chains": 2, "seed": 3, "progress": False}


def test_public_names():
    for name in ("load_study", "load_spec", "fit", "Fit", "spec_names", "DataContractError"):
        assert name in ab.__all__ and getattr(ab, name) is not None
    assert {"who5_change", "paper_table2", "alliance_latent"} <= set(ab.spec_names())


def test_load_spec_overrides_are_validated_like_toml(tmp_path):
    spec = ab.load_spec("who5_change", likelihood="normal", sampler={"draws": 500})
    assert spec.likelihood == "normal" and spec.sampler.draws == 500
    assert spec.sampler.tune == ab.load_spec("who5_change").sampler.tune  # tables are merged
    for bad, message in (
        ({"sampler": {"draws": "ten"}}, "expected int"),
        ({"priors": {"sigma_sd": -1.0}}, "must be > 0"),
        ({"priorz": {}}, "unknown key"),
        ({"hierarchy": {"sd_prior": "cauchy"}}, "sd_prior"),
        ({"extends": "paper_table2"}, "cannot be an override"),
    ):
        with pytest.raises(ab.SpecError, match=message):
            ab.load_spec("who5_change", **bad)


def test_load_study_refuses_a_broken_study(small_study_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_study_dir, broken)
    (broken / "sessions.csv").unlink()
    with pytest.raises(ab.DataContractError, match="sessions"):
        ab.load_study(broken)


def test_no_plotting_backend_is_forced_at_import():
    code = "import alliance_bayes.report.figures, matplotlib; print(matplotlib.get_backend())"
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().lower() == "svg"


@pytest.fixture(scope="module")
def starved(small_study_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("fits")
    study = ab.load_study(small_study_dir)
    return ab.fit("paper_table2", study, cache=cache, **STARVED), study, cache


@pytest.mark.mcmc
def test_failed_gate_returns_a_fit(starved):
    fit, _, _ = starved
    assert fit.passed is False and fit.gate.failed_checks
    summary = fit.summary()
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert summary.index.name == "estimand" and "b_alliance" in summary.index
    row = summary.loc["b_alliance"]
    draws = fit.estimands["b_alliance"].values
    assert row["mean"] == pytest.approx(draws.mean()) and row["sd"] == pytest.approx(
        draws.std(ddof=1)
    )
    assert fit.tables("markdown").startswith("### ") and "\\begin{table}" in fit.tables("latex")
    with pytest.raises(ValueError, match="markdown"):
        fit.tables("html")
    assert "paper_table2" in repr(fit) and "FAILED" in repr(fit)
    assert "<table" in fit._repr_html_()


@pytest.mark.mcmc
def test_spec_by_name_path_or_object_share_one_cached_fit(starved, small_study_dir):
    fit, _, cache = starved
    path = Path(ab.load_spec("paper_table2").source)
    for spec in (path, ab.load_spec("paper_table2")):
        again = ab.fit(spec, small_study_dir, cache=cache, **STARVED)
        np.testing.assert_array_equal(
            again.datatree["posterior"]["b_alliance"].values,
            fit.datatree["posterior"]["b_alliance"].values,
        )
        assert again.gate.to_json() == fit.gate.to_json()
    assert len(list(Path(cache).glob("*.nc"))) == 1


@pytest.mark.mcmc
def test_save_load_roundtrip(starved, tmp_path):
    fit, _, _ = starved
    path = fit.save(tmp_path / "results")
    assert path.parent == tmp_path / "results" / "paper_table2" and fit.path == path
    assert (path / "report.md").read_text().startswith(FAILED_MARKER)
    again = Fit.load(path)
    assert again.spec.to_dict() == fit.spec.to_dict()
    assert again.gate.to_json() == fit.gate.to_json()
    assert again.meta == json.loads((path / "run.json").read_text())
    assert again.meta["data_sha256"] == fit.meta["data_sha256"]
    pd.testing.assert_frame_equal(again.summary(), fit.summary())
    saved = pd.read_csv(path / "estimands.csv", comment="#").set_index("estimand")
    np.testing.assert_allclose(saved["mean"], again.summary()["mean"], rtol=1e-12)
    with pytest.raises(FileNotFoundError, match="not a results bundle"):
        Fit.load(tmp_path)


@pytest.mark.mcmc
def test_report_rerenders_without_sampling_and_checks_the_data(starved, small_study_dir, tmp_path):
    fit, _, _ = starved
    bundle = fit.save(tmp_path / "results")
    (bundle / "tables.md").write_text("stale")
    assert main(["report", str(bundle), "--data", str(small_study_dir)]) == 0
    assert (bundle / "tables.md").read_text() == fit.tables("markdown")
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]  # nothing left over
    assert not list(bundle.parent.parent.glob(".*"))

    assert main(["report", str(bundle), "--out", str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "paper_table2" / bundle.name / "report.md").is_file()

    other = tmp_path / "other"
    shutil.copytree(small_study_dir, other)
    clients = pd.read_csv(other / "clients.csv", dtype=str, keep_default_na=False)
    row = clients.index[clients["age"].astype(float) < 90][0]
    clients.loc[row, "age"] = str(int(float(clients.loc[row, "age"])) + 1)
    clients.to_csv(other / "clients.csv", index=False)
    assert main(["report", str(bundle), "--data", str(other)]) == EXIT_BAD_INPUT
    assert main(["report", str(tmp_path / "nothing")]) == EXIT_BAD_INPUT


@pytest.mark.mcmc
def test_hypotheses_are_decided_on_a_saved_bundle(starved, tmp_path, capsys):
    fit, _, _ = starved
    bundle = fit.save(tmp_path / "results")
    table = fit.hypotheses()  # the spec's [hypotheses] tests
    assert table["hypothesis"].tolist() == list(fit.spec.hypotheses.tests)
    saved = pd.read_csv(bundle / "hypotheses.csv")
    np.testing.assert_allclose(saved["posterior_prob"], table["posterior_prob"])
    again = Fit.load(bundle)
    assert again.prior_estimands is not None and "b_alliance" in again.prior_estimands
    row = again.hypotheses("b_alliance > 1").iloc[0]
    assert row["posterior_prob"] == pytest.approx(np.mean(fit.estimands["b_alliance"].values > 1))
    assert main(["hypothesis", str(bundle), "b_alliance > 1", "--rope", "1"]) == 0
    assert "`b_alliance > 1`" in capsys.readouterr().out
    assert main(["hypothesis", str(bundle), "b_nope > 0"]) == 2
    assert "unknown estimand" in capsys.readouterr().err
    html = (bundle / "report.html").read_text()
    assert "<h2>BARG checklist</h2>" in html and "data:image/png;base64," in html
