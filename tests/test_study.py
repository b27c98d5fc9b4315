"""The whole study (``alliance-bayes study``, ``ab.reanalyse``): Table 1 against hand-computed
values, the report on fake posteriors run through the families' own estimand functions, the
pass/fail logic, atomicity and the command's arguments. The orchestration tests replace
:func:`alliance_bayes.fitting.fit` by fake fits (no MCMC); one slow test fits every spec."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

import alliance_bayes as ab
from alliance_bayes import fitting
from alliance_bayes.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, main
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.model.change.estimands import compute_change_estimands
from alliance_bayes.model.ratings.design import COVARIATES as RATING_COVARIATES
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.model.regression.design import CARE_CONTRASTS
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report import study as study_report
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.report.hypotheses import hypothesis_table
from alliance_bayes.report.study import (
    FAILED_STUDY_MARKER,
    FitOutcome,
    sample_characteristics,
    sample_table_markdown,
    write_study_report,
)
from alliance_bayes.result import SUMMARY_COLUMNS
from alliance_bayes.spec import load_spec
from alliance_bayes.study import QUESTIONS, reanalyse
from data_builders import tiny_tables, write_csv_study
from fake_posterior import CARE_WEIGHTS, make_fake_datatree

CARES = ("therapist", "coach", "both")


# --- Table 1 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clients(tmp_path_factory):
    folder = write_csv_study(tmp_path_factory.mktemp("tiny") / "study", tiny_tables())
    return build_frame(load_study(folder)).clients


def test_table1_numbers_are_the_hand_computed_ones(tiny_clients):
    # Care types: 007 therapist (T1); a2, a4 coach (K1; K2); a3, a5 both (T1+K1; T2+K2).
    t = sample_characteristics(tiny_clients)
    assert list(t.columns) == ["therapist", "coach", "both", "all"]
    assert t.loc["n"].tolist() == [1, 2, 2, 5]
    # Ages 30 | 45, 18 | 52, 100; all: deviations 3, -19, -4, 51, -31 from 49, sum of squares 3948.
    assert t.loc["age_mean"].tolist() == [30.0, 31.5, 76.0, 49.0]
    assert math.isnan(t.loc["age_sd", "therapist"])  # one client: no sample SD
    assert t.loc["age_sd", "coach"] == pytest.approx(13.5 * math.sqrt(2))
    assert t.loc["age_sd", "all"] == pytest.approx(math.sqrt(3948 / 4))
    # Sex: a3 other, 007 female, a2 male, a5 male, a4 empty (not counted).
    assert t.loc["sex_n"].tolist() == [1, 1, 2, 4]
    assert t.loc["male_pct"].tolist() == [0.0, 100.0, 50.0, 50.0]
    # Sessions: 007 2, a2 3, a3 4, a4 2, a5 2.
    assert t.loc["sessions_median"].tolist() == [2.0, 2.5, 3.0, 2.0]
    assert (t.loc["sessions_q1", "coach"], t.loc["sessions_q3", "coach"]) == (2.25, 2.75)
    assert (t.loc["sessions_q1", "all"], t.loc["sessions_q3", "all"]) == (2.0, 3.0)
    # Alliance (goal and bond averaged): 007 (4.5 + 5) / 2, a2 (4 + 4) / 2, a3 (3.5 + 3.25) / 2,
    # a4 (5 + 5) / 2 (one bond missing), a5 (2 + 3) / 2.
    assert t.loc["alliance_median"].tolist() == pytest.approx([4.75, 4.5, (3.375 + 2.5) / 2, 4.0])
    # WHO-5 baseline 20 | 28, 12 | 60, 44; follow-up 40 | —, 32 | 64, —.
    assert t.loc["who5_baseline_mean"].tolist() == [20.0, 20.0, 52.0, 32.8]
    assert t.loc["who5_followup_n"].tolist() == [1, 1, 1, 3]
    assert t.loc["who5_followup_mean", "all"] == pytest.approx((40 + 32 + 64) / 3)
    assert t.loc["who5_followup_missing_n"].tolist() == [0, 1, 1, 2]
    assert t.loc["who5_followup_missing_pct", "all"] == pytest.approx(40.0)
    assert t.loc["who5_elevated_n"].tolist() == [1, 2, 0, 3]  # baseline <= 28
    # PHQ-9 baseline 12 | —, — | 9, 15; follow-up 6 | | 5, —.
    assert t.loc["phq9_baseline_n"].tolist() == [1, 0, 2, 3]
    assert t.loc["phq9_baseline_sd", "both"] == pytest.approx(3 * math.sqrt(2))
    assert t.loc["phq9_followup_missing_n"].tolist() == [0, 0, 1, 1]
    assert t.loc["phq9_followup_missing_pct", "all"] == pytest.approx(100 / 3)
    assert math.isnan(t.loc["phq9_followup_missing_pct", "coach"])  # no PHQ-9 baseline
    assert t.loc["phq9_elevated_n"].tolist() == [1, 0, 1, 2]  # baseline >= 10


def test_table1_cells(tiny_clients):
    md = "\n".join(sample_table_markdown(sample_characteristics(tiny_clients)))
    assert "| Clients, n | 1 | 2 | 2 | 5 |" in md
    assert "| Age, mean (SD) | 30.0 (—) | 31.5 (19.1) | 76.0 (33.9) | 49.0 (31.4) |" in md
    assert "| Sessions, median [IQR] | 2 [2–2] | 2.5 [2.25–2.75] | 3 [2.5–3.5] | 2 [2–3] |" in md
    assert "| WHO-5 follow-up missing, n (%) | 0 (0.0%) | 1 (50.0%) | 1 (50.0%) | 2 (40.0%) |" in md
    assert "| PHQ-9 baseline, mean (SD) | 12.0 (—); n = 1 | — (n = 0) |" in md


# --- fake fits through the families' own estimands -----------------------------------------------


def _ratings_estimands(rng, chains=2, draws=150) -> xr.Dataset:
    shape = (chains, draws)

    def noise(loc, scale, *extra):
        return loc + scale * rng.standard_normal((*shape, *extra))

    thresholds = np.sort(noise(np.array([-2.5, -1.5, -0.5, 0.5]), 0.05, 2, 4), axis=-1)
    post = xr.Dataset(
        {
            "discrimination": (("chain", "draw", "subscale"), noise(2.0, 0.1, 2)),
            "threshold": (("chain", "draw", "subscale", "cut"), thresholds),
            "b_covariate": (("chain", "draw", "covariate"), noise(0.0, 0.05, 3)),
            "b_care": (("chain", "draw", "care_contrast"), noise(0.1, 0.05, 2)),
            "provider_type_alliance": (("chain", "draw"), noise(0.1, 0.05)),
            "sd_provider_latent": (("chain", "draw"), np.abs(noise(0.4, 0.05))),
            "sd_country_latent": (("chain", "draw"), np.abs(noise(0.1, 0.05))),
            "z_country": (("chain", "draw", "country"), noise(0.0, 1.0, 2)),
            "b_session": (("chain", "draw"), noise(0.02, 0.01)),
        },
        coords={
            "subscale": ["goal", "bond"],
            "covariate": list(RATING_COVARIATES),
            "care_contrast": list(CARE_CONTRASTS),
            "country": ["GB", "US"],
        },
    )
    scales = {"care_share": {"therapist": 0.2, "coach": 0.6, "both": 0.2}, "male_mean": 0.45}
    return compute_ratings_estimands(post, scales)


def _change_estimands(rng, *, phq9: bool, chains=2, draws=150) -> xr.Dataset:
    shape = (chains, draws)
    cares = ["therapist", "both"] if phq9 else list(CARES)
    sign, cutoff = (-1.0, 10.0) if phq9 else (1.0, 28.0)
    m1 = np.array([12.0, 11.0]) if phq9 else np.array([40.0, 50.0, 45.0])
    m2 = m1 - 4.0 if phq9 else m1 + 8.0
    k = len(cares)

    def noise(loc, scale, *extra):
        return loc + scale * rng.standard_normal((*shape, *extra))

    rho = np.clip(noise(0.8, 0.02), 0.6, 0.95)
    sd = 5.0 if phq9 else 20.0
    post = xr.Dataset(
        {
            "mu_true_baseline": (("chain", "draw", "care_type"), noise(m1, 0.5, k)),
            "mu_true_followup": (("chain", "draw", "care_type"), noise(m2, 0.5, k)),
            "mean_provider_care": (("chain", "draw", "care_type"), np.zeros((*shape, k))),
            "var_provider_care": (("chain", "draw", "care_type"), np.zeros((*shape, k))),
            "sd_true": (("chain", "draw", "time"), np.abs(noise(sd, 0.3, 2))),
            "corr_true": (("chain", "draw"), noise(0.5, 0.02)),
            "reliability": (("chain", "draw"), rho),
            "sigma_error": (("chain", "draw"), np.sqrt(1 - rho) * sd),
            "sd_provider": (("chain", "draw", "provider_type"), np.abs(noise(1.0, 0.1, 2))),
        },
        coords={
            "care_type": cares,
            "time": ["baseline", "followup"],
            "provider_type": ["therapist", "coach"],
        },
    )
    values = [12.0, 15.0, 20.0] if phq9 else [12.0, 20.0, 28.0]
    baselines = {c: {"values": values, "counts": [5.0, 10.0, 5.0]} for c in cares}
    scales = {"sign": sign, "cutoff": cutoff, "baseline_sd": sd, "elevated_baselines": baselines}
    prefix, units = ("phq9", "PHQ-9 points") if phq9 else ("who5", "WHO-5 points")
    return compute_change_estimands(post, scales, prefix=prefix, units=units)


def _regression_estimands(seed: int, units: str) -> xr.Dataset:
    dt = make_fake_datatree(draws=150, chains=2, seed=seed)
    return compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=units, care_weights=CARE_WEIGHTS
    )


def fake_estimands(spec_name: str, seed: int = 0) -> xr.Dataset:
    """Estimands of ``spec_name``'s family, computed from a random posterior by the family."""
    rng = np.random.default_rng(seed)
    return {
        "alliance_ratings": lambda: _ratings_estimands(rng),
        "wellbeing_change": lambda: _change_estimands(rng, phq9=False),
        "depression_course": lambda: _change_estimands(rng, phq9=True),
        "who5_change": lambda: _regression_estimands(seed, "WHO-5 points"),
        "depression_change": lambda: _regression_estimands(seed, "PHQ-9 points"),
    }[spec_name]()


_FAMILY = {
    "alliance_ratings": "ratings",
    "wellbeing_change": "change",
    "depression_course": "change",
    "who5_change": "regression",
    "depression_change": "regression",
}


def _meta(spec) -> dict:
    return {
        "spec": spec.name,
        "family": _FAMILY[spec.name],
        "outcome": spec.outcome,
        "outcome_label": spec.outcome_label,
        "effect_units": spec.effect_units,
        "seed": spec.sampler.seed,
        "sampler": "nutpie",
        "chains": 2,
        "draws": 150,
        "tune": 100,
        "n_clients": 300,
        "data_sha256": "0" * 64,
        "timings_s": {"wall_total": 1.5},
    }


class _Gate:
    def __init__(self, passed: bool):
        self.passed = passed

    def headline(self) -> str:
        return "Convergence: PASSED" if self.passed else "Convergence: FAILED — r_hat 1.2"


class FakeFit:
    """What :func:`alliance_bayes.fitting.fit` returns, as far as the study uses it."""

    def __init__(self, spec, *, passed: bool = True, seed: int = 0):
        self.spec = spec
        self.estimands = fake_estimands(spec.name, seed)
        self.gate = _Gate(passed)
        self.meta = _meta(spec)
        self.path: Path | None = None

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def summary(self):
        return estimand_table(self.estimands).set_index("estimand")[list(SUMMARY_COLUMNS)]

    def hypotheses(self):
        return hypothesis_table(
            self.spec.hypotheses.tests,
            self.estimands,
            None,
            rope=self.spec.rope,
            outcome_units=self.spec.outcome_units,
            strict=False,
        )

    def save(self, results, *, figure_workers=1):
        path = Path(results) / self.spec.name / "20260101T000000Z-fake"
        (path / "figures").mkdir(parents=True)
        (path / "report.md").write_text("FAILED\n" if not self.passed else "ok\n")
        fig = plt.figure(figsize=(1, 1))
        for name in ("forest_subscales", "item_characteristic_curves", "ppc"):
            fig.savefig(path / "figures" / f"{name}.png", dpi=20)
        plt.close(fig)
        self.path = path
        return path


def outcome_of(name: str, *, passed: bool = True, bundle: Path | None = None) -> FitOutcome:
    fake = FakeFit(load_spec(name), passed=passed)
    if bundle is not None:
        fake.save(bundle)
    return FitOutcome.of(fake)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, {n: outcome_of(n, bundle=root) for q in QUESTIONS.values() for n in q}


def _sections(outcomes):
    return {q: [outcomes[n] for n in names] for q, names in QUESTIONS.items()}


def _write(root, outcomes, tiny_clients, run="20260101T000000Z-study"):
    table1 = sample_characteristics(tiny_clients)
    meta = {"run_id": run, "data_sha256": "f" * 64, "questions": list(QUESTIONS)}
    return write_study_report(root, run, table1=table1, sections=_sections(outcomes), meta=meta)


@pytest.fixture(scope="module")
def report(outcomes, tiny_clients):
    root, fits = outcomes
    path = _write(root, fits, tiny_clients)
    return path, (path / "report.md").read_text(encoding="utf-8")


def test_the_report_has_table1_and_a_section_per_question(report):
    path, md = report
    assert path.name == "20260101T000000Z-study" and path.parent.name == "study"
    assert md.startswith("# The study: `20260101T000000Z-study`")
    assert "**Study: PASSED** — 5 of 5 fits passed" in md
    heads = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert heads == [
        "## Run",
        "## Table 1: the sample",
        "## Question 1: how clients rated the alliance",
        "## Question 2: change among clients who began care elevated",
        "## Question 3: alliance and change",
        "## Files",
    ]
    assert "| Clients, n | 1 | 2 | 2 | 5 |" in md
    assert f"`{'f' * 64}`" in md  # the data hash


def test_question_tables_show_the_families_estimands(report, outcomes):
    _, md = report
    _, fits = outcomes
    ratings = fits["alliance_ratings"].summary
    for name in ("alliance[therapist]", "alliance_per_decade_age", "sd_country_alliance",
                 "share_at_ceiling", "icc_provider_alliance", "alliance[both-coach]"):  # fmt: skip
        assert f"(`{name}`) | {_want(ratings, name)} |" in md
    # Question 2: one row per measure, one column per care type and all; PHQ-9 without coach.
    change = fits["wellbeing_change"].summary
    cells = " | ".join(_want(change, f"rtm[{g}]") for g in (*CARES, "all"))
    assert f"| Regression to the mean (`rtm[·]`) | {cells} |" in md
    assert "| Observed change (`phq9_change[·]`) |" in md
    assert "| Estimand | Therapist | Both | All |" in md
    # Question 3: the slopes by care type and pooled.
    reg = fits["who5_change"].summary
    row = [_want(reg, f"b_goal_within[{c}]") for c in CARES]
    row.append(_want(reg, "b_goal_within"))
    assert f"| goal, within providers (`b_goal_within`) | {' | '.join(row)} |" in md


def _want(summary, name: str) -> str:
    """The expected cell, by hand: mean [low, high] to the decimal of 2 x MCSE."""
    s = summary.loc[name]
    d = max(0, -math.floor(math.log10(2 * s["mcse_mean"])))
    return f"{s['mean']:.{d}f} [{s['hdi95_low']:.{d}f}, {s['hdi95_high']:.{d}f}]"


def test_a_cell_is_the_mean_and_hdi_rounded_by_the_mcse(outcomes):
    summary = outcomes[1]["wellbeing_change"].summary
    assert study_report._cell(summary, "rtm[all]") == _want(summary, "rtm[all]")
    assert study_report._cell(summary, "no_such_estimand") == "—"


def test_published_values_sit_beside_the_posterior(report, outcomes):
    _, md = report
    _, fits = outcomes
    assert (
        "| Median client alliance score | 4.8 | observed in these data: 4.00 (Table 1, all)" in md
    )
    h = fits["alliance_ratings"].hypotheses.set_index("hypothesis")
    decision = h.loc["alliance_per_decade_age = 0", "decision"]
    assert "| Alliance did not differ by age | no difference (abstract) |" in md
    assert f"{decision} (`alliance_per_decade_age = 0`) |" in md
    assert "| Alliance did not differ by country |" in md
    assert "| Alliance did not differ by baseline well-being |" in md
    # the ratings rows' intervals are said to be in-sample (a restricted regression)
    assert "The care-type contrasts' and covariates' intervals are in-sample" in md
    # Table 2: the published b beside the who5_change posterior (no intercept: not comparable).
    reg = fits["who5_change"].summary
    assert (
        f"| baseline WHO-5 | 0.66 [0.45, 0.86] | `b_baseline` {study_report._cell(reg, 'b_baseline')} |"
        in md
    )
    assert "| alliance score (goal+bond mean) | 2.04 [0.09, 3.99] | `b_goal_within`" in md
    assert "| intercept |" not in md
    assert "+10.1 (95% CI 9.3–10.9)" in md  # the companion paper, labelled as context


def test_hypotheses_and_bundle_links(report, outcomes):
    path, md = report
    _, fits = outcomes
    for name, o in fits.items():
        rel = f"../../{name}/20260101T000000Z-fake"
        assert f"[{rel}/report.md]({rel}/report.md)" in md
        assert (path / rel / "report.md").is_file()  # the relative link resolves
        for statement in o.hypotheses["hypothesis"]:
            assert f"`{statement}`" in md
    assert "Hypotheses of `who5_change`:" in md and "*decision* (Kruschke 2018)" in md


def test_figures_are_embedded_and_the_files_written(report, outcomes):
    path, md = report
    for name in ("alliance_by_care.png", "change_by_care.png"):
        assert f"(figures/{name})" in md and (path / "figures" / name).is_file()
    assert "(figures/who5_change/forest_subscales.png)" in md
    assert "(figures/alliance_ratings/item_characteristic_curves.png)" in md
    html = (path / "report.html").read_text(encoding="utf-8")
    assert '<img src="figures/' not in html and html.count('src="data:image/png;base64,') >= 7
    run = json.loads((path / "run.json").read_text())
    assert run["passed"] is True and set(run["fits"]) == set(outcomes[1])
    assert run["fits"]["who5_change"]["bundle"] == "../../who5_change/20260101T000000Z-fake"
    for name in ("table1.csv", "estimands.csv", "hypotheses.csv"):
        assert (path / name).is_file()
    first = (path / "estimands.csv").read_text().splitlines()[0]
    assert first.startswith("spec,estimand,mean,sd,hdi95_low")


def test_one_failed_fit_marks_the_study_failed(outcomes, tiny_clients, tmp_path):
    _, fits = outcomes
    fits = {**fits, "depression_course": outcome_of("depression_course", passed=False)}
    path = _write(tmp_path, fits, tiny_clients)
    md = (path / "report.md").read_text()
    assert md.startswith(FAILED_STUDY_MARKER) and "Failed: `depression_course`." in md
    assert "**Study: FAILED** — 4 of 5 fits passed" in md
    assert "**FAILED convergence gate — do not use these estimates.**" in md
    assert '<h1 class="failed">FAILED' in (path / "report.html").read_text()
    assert json.loads((path / "run.json").read_text())["passed"] is False


def test_an_error_while_writing_leaves_no_folder(outcomes, tiny_clients, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_report, "markdown_to_html", broken)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, outcomes[1], tiny_clients)
    assert list((tmp_path / "study").iterdir()) == []


# --- orchestration with fake fits ----------------------------------------------------------------


@pytest.fixture
def fake_fits(monkeypatch):
    """Replace the pipeline's fit by fake fits; ``failing`` names specs whose gate fails,
    ``raising`` a spec whose fit raises."""
    calls: list[str] = []
    control = {"failing": set(), "raising": None}

    def fit(spec, study, **kwargs):
        calls.append(spec.name)
        if spec.name == control["raising"]:
            raise control["error"]
        return FakeFit(spec, passed=spec.name not in control["failing"], seed=len(calls))

    monkeypatch.setattr(fitting, "fit", fit)
    return calls, control


def test_reanalyse_fits_every_question_and_reports(small_study_dir, tmp_path, fake_fits):
    calls, _ = fake_fits
    lines: list[str] = []
    run = ab.reanalyse(small_study_dir, tmp_path, draws=50, log=lines.append)
    assert calls == [n for q in QUESTIONS.values() for n in q]
    assert (
        run.passed and run.path.parent == tmp_path / "study" and (run.path / "report.md").is_file()
    )
    assert set(run.bundles) == set(calls) and all(p.is_dir() for p in run.bundles.values())
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["overrides"] == {"draws": 50} and meta["questions"] == list(QUESTIONS)
    assert meta["n_clients"] == 300 and "packages" in meta and "created_utc" in meta
    assert any("who5_change: passed; bundle" in ln for ln in lines)


def test_only_restricts_the_questions(small_study_dir, tmp_path, fake_fits):
    calls, _ = fake_fits
    run = reanalyse(small_study_dir, tmp_path, questions=["change"])
    assert calls == ["wellbeing_change", "depression_course"]
    md = (run.path / "report.md").read_text()
    assert "## Question 2" in md and "## Question 1" not in md and "Not run this time" in md
    with pytest.raises(ValueError, match="questions must be some of"):
        reanalyse(small_study_dir, tmp_path, questions=["q9"])


def test_cli_exit_codes_follow_the_gates(small_study_dir, tmp_path, fake_fits, capsys):
    _, control = fake_fits
    argv = ["study", "--data", str(small_study_dir), "--quiet", "--only", "change"]
    assert main([*argv, "--out", str(tmp_path / "ok")]) == EXIT_OK
    control["failing"] = {"depression_course"}
    assert main([*argv, "--out", str(tmp_path / "bad")]) == EXIT_CHECK_FAILED
    err = capsys.readouterr().err
    assert "CONVERGENCE CHECKS FAILED for depression_course" in err
    (report,) = (tmp_path / "bad" / "study").glob("*/report.md")
    assert report.read_text().startswith(FAILED_STUDY_MARKER)
    assert (tmp_path / "bad" / "depression_course").is_dir()  # the failed bundle is written


@pytest.mark.parametrize(
    ("error", "code"), [(KeyboardInterrupt(), EXIT_INTERRUPTED), (RuntimeError("boom"), None)]
)
def test_a_run_stopped_midway_leaves_no_study_folder(
    small_study_dir, tmp_path, fake_fits, capsys, error, code
):
    calls, control = fake_fits
    control.update(raising="who5_change", error=error)
    argv = ["study", "--data", str(small_study_dir), "--out", str(tmp_path), "--quiet"]
    if code is None:
        with pytest.raises(RuntimeError):
            main(argv)
    else:
        assert main(argv) == code
        out, err = capsys.readouterr()
        assert "the study's report was not written" in err
        assert "depression_course: passed; bundle" in out
    assert calls[-1] == "who5_change"
    assert not (tmp_path / "study").exists()
    assert (tmp_path / "wellbeing_change").is_dir()  # what finished before is kept


def test_bad_input_stops_before_any_fit(tmp_path, fake_fits, capsys):
    calls, _ = fake_fits
    folder = write_csv_study(tmp_path / "tiny", tiny_tables())  # too small for every design
    assert main(["study", "--data", str(folder), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    assert calls == [] and "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["study", "--data", str(tmp_path / "missing")]) == EXIT_BAD_INPUT


def test_cli_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        main(["study", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--data", "--out", "--draws", "--tune", "--chains", "--cache", "--only"):
        assert option in out
    assert "exit codes: 0 every fit passed" in out and "130 interrupted" in out
    for bad in (["--only", "q9"], ["--draws", "many"], ["--only"]):
        with pytest.raises(SystemExit) as done:
            main(["study", *bad])
        assert done.value.code == 2
    assert "reanalyse" in ab.__all__ and ab.reanalyse is reanalyse


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_spec_fits_a_small_study_end_to_end(small_study_dir, tmp_path):
    run = reanalyse(
        small_study_dir, tmp_path, draws=150, tune=150, chains=2, seed=5, progress=False
    )
    assert set(run.fits) == {n for q in QUESTIONS.values() for n in q}
    md = (run.path / "report.md").read_text()
    for o in run.fits.values():
        assert (o.bundle / "report.md").is_file() and (o.bundle / "posterior.nc").is_file()
    assert "`alliance[therapist]`" in md and "`who5_change_beyond_rtm[·]`" in md
    assert "`b_goal_within`" in md
    assert md.startswith(FAILED_STUDY_MARKER) != run.passed
