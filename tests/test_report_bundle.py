"""Tables, figures and the atomic results bundle, on hand-made posteriors (no MCMC)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report import bundle as bundle_mod
from alliance_bayes.report import figures
from alliance_bayes.report.bundle import (
    FAILED_MARKER,
    BundleError,
    ConvergenceFailedError,
    ForbiddenIdentifierError,
    write_bundle,
)
from alliance_bayes.report.tables import (
    decimals_for_mcse,
    format_by_mcse,
    tables_latex,
    tables_markdown,
)
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta, replace_group


@pytest.fixture(scope="module")
def run():
    dt = make_fake_datatree(draws=200, seed=11)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS
    )
    return dt, est, make_fake_meta(dt), check_convergence(dt, est)


# --- rounding rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "mcse", "text"),
    [
        (1.23456, 0.013, "1.23"),  # 2×MCSE = 0.026 → hundredths
        (1.23456, 0.004, "1.235"),  # 0.008 → thousandths
        (1.23456, 0.4, "1.2"),  # 0.8 → tenths
        (1.23456, 0.05, "1.2"),  # exactly 0.1 → tenths
        (123.456, 3.0, "123"),  # 6 → units
        (1234.5, 30.0, "1230"),  # 60 → tens
        (-0.0004, 0.01, "0.00"),  # no "-0.00"
    ],
)
def test_round_by_mcse(mean, mcse, text):
    assert format_by_mcse(mean, mcse) == text


def test_decimals_for_degenerate_mcse():
    assert decimals_for_mcse(0.0) == decimals_for_mcse(float("nan")) == 6


# --- tables --------------------------------------------------------------------------------------


def test_markdown_tables_content(run):
    _, est, meta, _ = run
    md = tables_markdown(est, meta)
    for title in (
        "Fixed effects",
        "Alliance subscale effects by care type",
        "Within- vs between-provider",
        "Variance components, hyperparameters and intraclass correlation",
        "Contrasts",
    ):
        assert f"### {title}" in md
    assert "| Subscale | Level | Therapist | Coach | Both | Pooled |" in md
    assert "95% HDI" in md and "4 chains × 200 draws" in md and "`who5_change`" in md
    assert "WHO-5 points per 1 point of alliance (1–5 scale)" in md
    assert "b_goal_within[therapist-coach]" in md and "b_goal-bond_between" in md
    assert "icc_provider[coach]" in md
    # The mean in the table is the full-precision mean rounded by its MCSE.
    from alliance_bayes.report.estimands import estimand_table

    row = estimand_table(est).set_index("estimand").loc["b_baseline"]
    mean = format_by_mcse(row["mean"], row["mcse_mean"])
    assert f"| Baseline score (`b_baseline`) | {mean} |" in md


def test_latex_tables_booktabs_and_escaped(run):
    _, est, meta, _ = run
    tex = tables_latex(est, meta)
    assert tex.count("\\begin{table}") == 6 == tex.count("\\bottomrule")
    assert "Care-type intercepts" in tex and "% estimand: b_care[therapist-coach]" in tex
    assert "\\toprule" in tex and "\\midrule" in tex
    assert "% estimand: b_goal_within[therapist-coach]" in tex
    assert "95\\% HDI" in tex and "who5\\_change" in tex
    # Cells escape underscores; the estimand comment ending a row keeps the stable name as is.
    body = [ln.split(" % estimand:")[0] for ln in tex.splitlines() if "% estimand:" in ln]
    assert body and not any("_" in ln.replace("\\_", "") for ln in body)


# --- figures -------------------------------------------------------------------------------------


def test_figures_saved_with_interpretations(run, tmp_path):
    dt, est, meta, _ = run
    results = figures.make_all_figures(dt, est, meta, tmp_path, formats=("png",))
    names = [r.name for r in results]
    assert names == [
        "rank",
        "energy",
        "forest_subscales",
        "ppc",
        "prior_predictive",
        "provider_effects",
        "trace_provider_sd",
        "funnel_therapist",
        "funnel_coach",
        "loo_pit",
    ]
    for r in results:
        assert r.paths and all(p.exists() and p.stat().st_size > 1000 for p in r.paths)
        assert isinstance(r.interpretation, str) and r.interpretation.endswith(".")
    ppc = results[3].interpretation
    assert "share at the ceiling" in ppc and "percentile of replicated shares" in ppc
    assert "E-BFMI" in results[1].interpretation
    assert plt.get_fignums() == []  # every figure closed


def _failing_figure(dt, outdir, *, meta=None, formats=()):
    raise RuntimeError("family figure failed")


def test_figures_drawn_in_worker_processes_match_this_process(run, tmp_path):
    dt, est, meta, _ = run
    here = figures.make_all_figures(dt, est, meta, tmp_path / "here", formats=("png",))
    there = figures.make_all_figures(dt, est, meta, tmp_path / "there", formats=("png",), workers=2)
    assert [(r.name, r.interpretation, r.section) for r in there] == [
        (r.name, r.interpretation, r.section) for r in here
    ]
    for a, b in zip(here, there, strict=True):
        assert [p.name for p in a.paths] == [p.name for p in b.paths]
        assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a.paths, b.paths, strict=True))


def test_a_figure_failing_in_a_worker_keeps_the_draws(run, tmp_path):
    dt, est, meta, gate = run
    with figures.figure_pool(2) as pool, pytest.raises(BundleError, match="family figure failed"):
        write_bundle(
            tmp_path,
            "who5_change",
            "run-w",
            dt,
            meta,
            est,
            gate,
            figure_formats=("png",),
            figure_workers=pool,
            family_figures=(_failing_figure,),
        )
    kept = tmp_path / "who5_change" / "run-w.incomplete"
    assert sorted(p.name for p in kept.iterdir()) == ["ERROR.txt", "posterior.nc", "run.json"]
    assert not (tmp_path / "who5_change" / "run-w").exists()


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_figure_workers_setting_is_checked(value, monkeypatch):
    monkeypatch.setenv(figures.FIGURE_WORKERS_ENV, value)
    with pytest.raises(ValueError, match=figures.FIGURE_WORKERS_ENV):
        figures.figure_workers(None)
    assert figures.figure_workers(3) == 3  # an explicit number wins


def test_ppc_ceiling_percentile_is_computed(run, tmp_path):
    dt, _, _, _ = run
    obs = dt["observed_data"].to_dataset()
    obs["y"] = obs["y"].copy(data=np.full(obs["y"].shape, 100.0))  # everyone at the ceiling
    res = figures.plot_ppc(replace_group(dt, "observed_data", obs), tmp_path, formats=("png",))
    assert "observed share at the ceiling 100.0% lies at the 100th" in res.interpretation
    assert (
        "ceiling 100.0% lies at the 100th percentile of replicated shares (central 95%"
        in (res.interpretation)
        and "OUTSIDE" in res.interpretation
    )


def test_bound_shares_count_replicates_near_the_bounds():
    y_obs = np.array([0.0, 0.0, 48.0, 100.0])
    y_rep = np.array([[1.9, 2.1, 50.0, 98.1], [-3.0, 0.0, 97.9, 99.0]])
    shares = figures.bound_shares(y_obs, y_rep, (0.0, 100.0))
    assert shares["floor"][0] == 0.5 and shares["ceiling"][0] == 0.25
    np.testing.assert_array_equal(shares["floor"][1], [0.25, 0.5])
    np.testing.assert_array_equal(shares["ceiling"][1], [0.25, 0.25])


def test_prior_predictive_bound_share_counts_datasets_mostly_at_the_bounds():
    y = np.array([[0.0, 0.0, 50.0], [120.0, 100.0, -5.0], [0.0, 50.0, 60.0], [10, 20, 30]])
    assert figures.prior_predictive_bound_share(y, (0.0, 100.0)) == 0.5


# --- bundle --------------------------------------------------------------------------------------


def _partials(root):
    return [p for p in root.rglob(".*") if "partial" in p.name]


def test_bundle_complete_and_reloadable(run, tmp_path):
    dt, est, meta, gate = run
    out = write_bundle(tmp_path, "who5_change", "run-1", dt, meta, est, gate)
    assert out == tmp_path / "who5_change" / "run-1"
    for name in (
        "posterior.nc",
        "run.json",
        "estimands.csv",
        "tables.md",
        "tables.tex",
        "diagnostics.json",
        "diagnostics.md",
        "report.md",
    ):
        assert (out / name).is_file(), name
    for stem in ("rank", "energy", "forest_subscales", "ppc", "prior_predictive"):
        assert (out / "figures" / f"{stem}.png").is_file()
        assert (out / "figures" / f"{stem}.pdf").is_file()
    assert not _partials(tmp_path)

    back = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    try:
        assert set(back.children) == set(dt.children)
        # population parameters keep float64; per-provider draws and replicates are float32
        np.testing.assert_array_equal(back["posterior"]["b"].values, dt["posterior"]["b"].values)
        assert back["posterior_predictive"]["y"].dtype == np.float32
        assert back["sample_stats"]["diverging"].dtype == bool
    finally:
        back.close()

    assert json.loads((out / "run.json").read_text())["spec"] == "who5_change"
    csv_text = (out / "estimands.csv").read_text()
    assert csv_text.startswith("estimand,label,mean,sd,") and "#" not in csv_text
    sidecar = json.loads((out / "estimands.meta.json").read_text())
    assert sidecar["interval"] == "95% highest density interval"
    assert sidecar["chains"] == 4 and sidecar["convergence"] == "PASSED"
    df = pd.read_csv(out / "estimands.csv")
    assert list(df.columns)[:5] == ["estimand", "label", "mean", "sd", "hdi95_low"]
    assert len(df) == len(est.data_vars)
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["passed"] is True
    assert (out / "diagnostics.md").read_text().startswith("# Convergence: PASSED")
    report = (out / "report.md").read_text()
    assert not report.startswith(FAILED_MARKER) and "Convergence: PASSED" in report
    assert (
        "![Posterior predictive check](figures/ppc.png)" in report
        and "percentile of replicated shares" in report
    )
    assert "### Fixed effects" in report


def test_a_failure_after_sampling_keeps_the_draws_and_no_complete_folder(
    run, tmp_path, monkeypatch
):
    dt, est, meta, gate = run

    def boom(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "plot_ppc", boom)
    with pytest.raises(BundleError, match="failed at figures") as err:
        write_bundle(tmp_path, "who5_change", "run-x", dt, meta, est, gate, figure_formats=("png",))
    kept = tmp_path / "who5_change" / "run-x.incomplete"
    assert str(kept) in str(err.value)
    assert sorted(p.name for p in kept.iterdir()) == ["ERROR.txt", "posterior.nc", "run.json"]
    again = xr.open_datatree(kept / "posterior.nc", engine="h5netcdf")
    np.testing.assert_allclose(
        again["posterior"]["sigma"].values, dt["posterior"]["sigma"].values, rtol=1e-6
    )
    assert not (tmp_path / "who5_change" / "run-x").exists()
    assert not _partials(tmp_path)


def test_interrupted_write_leaves_nothing(run, tmp_path, monkeypatch):
    dt, est, meta, gate = run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "plot_ppc", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(tmp_path, "who5_change", "run-y", dt, meta, est, gate, figure_formats=("png",))
    assert list((tmp_path / "who5_change").iterdir()) == []


def test_failed_gate_marked(run, tmp_path):
    dt, _, meta, _ = run
    post = dt["posterior"].to_dataset()
    post["sigma"] = post["sigma"] + xr.DataArray([0.0, 0.0, 0.0, 5.0], dims="chain")
    bad = replace_group(dt, "posterior", post)
    est = compute_estimands(post, care_weights=CARE_WEIGHTS)
    gate = check_convergence(bad, est)
    assert not gate.passed
    out = write_bundle(
        tmp_path, "who5_change", "bad", bad, meta, est, gate, figure_formats=("png",)
    )
    assert (out / "report.md").read_text().splitlines()[0] == FAILED_MARKER
    assert (out / "diagnostics.md").read_text().startswith("# Convergence: FAILED — r_hat")
    assert json.loads((out / "estimands.meta.json").read_text())["convergence"] == "FAILED"
    with pytest.raises(ConvergenceFailedError):
        write_bundle(tmp_path, "who5_change", "bad2", bad, meta, est, gate, save_failed=False)
    assert not (tmp_path / "who5_change" / "bad2").exists()


def test_existing_folder_refused(run, tmp_path):
    dt, est, meta, gate = run
    (tmp_path / "who5_change" / "taken").mkdir(parents=True)  # even an empty one
    with pytest.raises(FileExistsError):
        write_bundle(tmp_path, "who5_change", "taken", dt, meta, est, gate)
    assert list((tmp_path / "who5_change" / "taken").iterdir()) == []
    with pytest.raises(ValueError, match="run_id"):
        write_bundle(tmp_path, "who5_change", "../escape", dt, meta, est, gate)


def test_forbidden_ids_abort(run, tmp_path):
    dt, est, meta, gate = run
    # Raw id in the metadata text → run.json would leak it.
    leaky = {**meta, "spec_toml": meta["spec_toml"] + "# example client RAW-7731\n"}
    with pytest.raises(ForbiddenIdentifierError) as err:
        write_bundle(
            tmp_path, "who5_change", "leak1", dt, leaky, est, gate,
            forbidden_ids={"RAW-7731"}, figure_formats=("png",),
        )  # fmt: skip
    assert "RAW-7731" not in str(err.value) and "run.json" in str(err.value)
    # Raw id as a client coordinate → posterior.nc would leak it.
    with pytest.raises(ForbiddenIdentifierError, match=r"posterior\.nc"):
        write_bundle(tmp_path, "who5_change", "leak2", dt, meta, est, gate,
                     forbidden_ids={"client_003"})  # fmt: skip
    assert not (tmp_path / "who5_change" / "leak1").exists()
    assert not (tmp_path / "who5_change" / "leak2").exists()
    assert not _partials(tmp_path)
    # Ids that occur nowhere (and a mere prefix of a real token) do not block the write.
    out = write_bundle(
        tmp_path, "who5_change", "clean", dt, meta, est, gate,
        forbidden_ids={"RAW-7731", "client_0"}, figure_formats=("png",),
    )  # fmt: skip
    assert out.is_dir()


def test_outcome_units_from_meta():
    assert bundle_mod.outcome_units_from_meta({"outcome": "phq9_followup"}) == "PHQ-9 points"
    assert bundle_mod.outcome_units_from_meta({"outcome": "who5_followup"}) == "WHO-5 points"


def test_report_links_the_trust_checks_when_they_exist(tmp_path):
    from alliance_bayes.report.bundle import _trust_section

    missing = "\n".join(_trust_section(tmp_path, "who5_change"))
    assert "SBC: not run yet" in missing and "scripts/compare.py" in missing
    sbc = tmp_path / "sbc" / "who5_change"
    sbc.mkdir(parents=True)
    (sbc / "summary.md").write_text("# SBC\n- verdict: **calibrated**\n")
    sens = tmp_path / "sensitivity" / "run1"
    sens.mkdir(parents=True)
    (sens / "who5_change.md").write_text("|a|\n| `b_x` | robust |\n| `sd_y` | prior-sensitive |\n")
    found = "\n".join(_trust_section(tmp_path, "who5_change"))
    assert "../../sbc/who5_change/summary.md" in found and "calibrated" in found
    assert "1 of 2 estimands robust" in found
