"""Outputs an author pastes: plain estimands.csv, a pdfLaTeX-ready tables.tex, print-quality
figures, and the small conveniences (--version, dir(alliance_bayes)). Fake posteriors, no MCMC."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import alliance_bayes as ab
from alliance_bayes.cli import main
from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report import figures
from alliance_bayes.report.bundle import ReportContent, read_estimands_csv, write_bundle
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.report.hypotheses import hypothesis_table
from alliance_bayes.report.render import latex_escape
from alliance_bayes.report.tables import (
    LATEX_PREAMBLE,
    decimals_for_mcse,
    estimand_label,
    tables_latex,
    tables_markdown,
)
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta

UNITS = "WHO-5 points"
STATEMENTS = ["b_goal_within > b_bond_within", "b_goal_within-between = 0"]


@pytest.fixture(scope="module")
def run():
    dt = make_fake_datatree(draws=200, seed=11)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    prior = compute_estimands(
        dt["prior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    hyp = hypothesis_table(STATEMENTS, est, prior, rope=2.0, outcome_units=UNITS)
    return dt, est, make_fake_meta(dt), check_convergence(dt, est), hyp


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    dt, est, meta, gate, hyp = run
    root = tmp_path_factory.mktemp("results")
    start = time.perf_counter()
    out = write_bundle(
        root, "who5_change", "r1", dt, meta, est, gate, content=ReportContent(hypotheses=hyp)
    )
    print(f"bundle written in {time.perf_counter() - start:.2f} s")  # shown with -s
    return out


# --- estimands.csv -------------------------------------------------------------------------------


def test_estimands_csv_opens_with_default_readers(run, bundle):
    _, est, meta, _, _ = run
    text = (bundle / "estimands.csv").read_text()
    assert text.splitlines()[0].split(",")[:4] == ["estimand", "label", "mean", "sd"]
    df = pd.read_csv(bundle / "estimands.csv")  # no comment= needed
    expected = estimand_table(est)
    assert list(df["estimand"]) == list(expected["estimand"])
    assert list(df["label"]) == [estimand_label(n) for n in expected["estimand"]]
    assert df.set_index("estimand").loc["b_days_in_care", "label"] == "Days in care"
    np.testing.assert_array_equal(df["mean"].to_numpy(), expected["mean"].to_numpy())
    side = json.loads((bundle / "estimands.meta.json").read_text())
    assert side["spec"] == meta["spec"] and side["draws_per_chain"] == 200
    assert list(side["columns"]) == list(df.columns) and all(side["columns"].values())


def test_estimands_reader_skips_the_comment_lines_of_older_bundles(bundle, tmp_path):
    old = tmp_path / "estimands.csv"
    old.write_text("# spec: x\n# units: y\n" + (bundle / "estimands.csv").read_text())
    pd.testing.assert_frame_equal(read_estimands_csv(old), pd.read_csv(bundle / "estimands.csv"))


# --- tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("b_days_in_care", "Days in care"),
        ("sd_provider_slope[goal]", "SD of provider goal slopes"),
        ("sd_provider[coach]", "SD of provider intercepts (coach)"),
        ("b_care[therapist-coach]", "Care type: therapist vs coach"),
        ("b_goal_within", "Goal, within providers"),
        ("b_goal_within[therapist-coach]", "Goal, within providers: therapist vs coach"),
        ("b_goal_within-between", "Goal, within − between providers"),
        ("b_goal-bond_between", "Goal − bond, between providers"),
        ("mu_b_bond_within", "Hyper-mean of care-type slopes: bond, within providers"),
        ("beta_obs_baseline", "β (observed scale): Baseline score"),
        ("phq9:sigma", "phq9: Residual SD"),
        ("something_new", "Something new"),
        ("b_primary_diagnosis[anxiety]", "Primary diagnosis: anxiety"),
        ("beta_diagnosis[ptsd]", "β: Diagnosis: ptsd"),
    ],
)
def test_readable_labels(name, label):
    assert estimand_label(name) == label


def _visible(cell: str) -> str:
    r"""What a LaTeX cell occupies: ``\phantom{x}`` counts as ``x``, ``$-$`` as ``-``."""
    cell = re.sub(r"\\phantom\{([^{}]*)\}", r"\1", cell)
    return re.sub(r"\$(.)\$", r"\1", cell)


def _latex_rows(tex: str, key: str) -> list[list[str]]:
    block = tex.split(f"\\label{{tab:{key}}}")[1].split("\\bottomrule")[0]
    body = block.split("\\midrule")[1].strip().splitlines()
    return [ln.split(" \\\\")[0].split(" & ") for ln in body]


def test_latex_numbers_align_on_the_decimal_point_with_mcse_digits(run):
    _, est, meta, _, _ = run
    tex = tables_latex(est, meta)
    summary = estimand_table(est).set_index("estimand")
    for key in ("fixed", "variance", "contrasts", "care"):
        rows = _latex_rows(tex, key)
        for col in (1, 2, 3, 4):  # Mean, SD, 95% HDI, P(>0)
            widths = {len(_visible(r[col])) for r in rows}
            assert len(widths) == 1, (key, col, [r[col] for r in rows])
            points = {_visible(r[col]).index(".") for r in rows if "." in r[col]}
            assert len(points) <= 1, (key, col)
    # One decimal place per column: the finest any of the table's rows' MCSE supports.
    fixed = {r[0]: r for r in _latex_rows(tex, "fixed")}
    names = [n for n in summary.index if est[n].attrs.get("kind") == "fixed effect"]
    finest = max(decimals_for_mcse(summary.loc[n, "mcse_mean"]) for n in names)
    for name in names:
        row = summary.loc[name]
        label = rf"\parbox[t]{{3.4cm}}{{\raggedright {estimand_label(name)}}}"
        shown = re.sub(r"\\phantom\{[^{}]*\}", "", fixed[label][1]).replace("$-$", "-")
        assert shown == f"{row['mean']:.{finest}f}", name
        assert len(shown.split(".")[1]) >= decimals_for_mcse(row["mcse_mean"])  # none lost


def test_latex_fragment_is_ascii_with_short_captions_and_one_shared_note(run):
    _, est, meta, _, hyp = run
    tex = tables_latex(est, meta, hypotheses=hyp)
    assert tex.isascii()
    assert "P(\\textgreater{}0)" in tex and "P(>0)" not in tex
    assert "% estimand: b_days_in_care" in tex and "Days in care" in tex
    assert "% estimand: sd_provider_slope[goal]" in tex and "SD of provider goal slopes" in tex
    assert tex.count("chains $\\times$ 200 draws") == 1  # said once, before the first table
    assert tex.index("Note to the tables") < tex.index("\\begin{table}")
    captions = re.findall(r"\\caption\{(.*)\}", tex)
    assert len(captions) == 7 and max(len(c.split()) for c in captions) < 90
    assert "\\label{tab:hypotheses}" in tex
    assert "b\\_\\allowbreak{}goal\\_\\allowbreak{}within-\\allowbreak{}between = 0" in tex


def test_standardised_table_typesets_beta_and_r2_in_ascii(run):
    dt, _, meta, _, _ = run
    scales = {
        "outcome_sd": 20.0,
        "baseline_sd": 19.0,
        "covariate_sd": {"age": 9.0, "male": 0.5, "days_in_care": 60.0},
        "alliance_sd": {
            "goal": {"within": 0.8, "between": 0.3},
            "bond": {"within": 0.7, "between": 0.25},
        },
    }
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, scales=scales, care_weights=CARE_WEIGHTS
    )
    assert "beta_age" in est
    tex = tables_latex(est, meta)
    assert tex.isascii() and "Standardised effects ($\\beta$)" in tex
    assert "% estimand: beta_age" in tex and "$\\beta$: Age (years)" in tex


def test_markdown_has_the_hypotheses_and_the_note_once(run):
    _, est, meta, _, hyp = run
    md = tables_markdown(est, meta, hypotheses=hyp)
    assert md.startswith("### About these tables") and md.count("4 chains × 200 draws") == 1
    assert "### Hypotheses" in md and "| `b_goal_within > b_bond_within` |" in md
    assert "| Days in care (`b_days_in_care`) |" in md


def test_latex_escape_maps_what_pdflatex_cannot_typeset():
    assert latex_escape("β < 1 ≥ σ²") == (
        r"$\beta$ \textless{} 1 $\geq$ $\sigma$\textsuperscript{2}"
    )


@pytest.mark.parametrize("engine", ["pdflatex", "lualatex"])
def test_tables_tex_compiles_and_fits_the_text_width(run, bundle, tmp_path, engine):
    """A minimal article with the header's packages compiles the fragment (input twice, as a
    document that cites the tables in two places might), and no table runs into the margin."""
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed (docs/development.md says how to install TeX)")
    (tmp_path / "tables.tex").write_bytes((bundle / "tables.tex").read_bytes())
    assert " ".join(LATEX_PREAMBLE.splitlines()) in (bundle / "tables.tex").read_text()
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n"
        f"{LATEX_PREAMBLE}\n"
        "\\begin{document}\n\\input{tables.tex}\n\\input{tables.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    if engine == "pdflatex":
        # (A LuaLaTeX without Latin Modern's OT1 shapes warns about fonts on an empty document
        # too, so its font warnings say nothing about the fragment.)
        assert "Missing character" not in log and "undefined" not in log.lower()
    assert "Undefined control sequence" not in log
    assert "Overfull \\hbox" not in log, log[log.index("Overfull") :][:400]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


# --- figures -------------------------------------------------------------------------------------


def test_figures_are_print_quality_and_leave_rcparams_alone(run, bundle):
    before = mpl.rcParams["pdf.fonttype"]
    pngs = sorted((bundle / "figures").glob("*.png"))
    pdfs = sorted((bundle / "figures").glob("*.pdf"))
    assert pngs and len(pdfs) == len(pngs)
    for p in pngs:
        with Image.open(p) as image:
            dpi = image.info["dpi"]
        assert dpi == pytest.approx((300, 300), abs=0.5), p.name
    for p in pdfs:
        data = p.read_bytes()
        # Type 42: a TrueType outline font (matplotlib embeds it as a CID-keyed Type 0 font).
        assert b"/Type3" not in data and b"/CIDFontType2" in data, p.name
    assert mpl.rcParams["pdf.fonttype"] == before == 3  # matplotlib's default, untouched


def test_energy_plot_labels_its_axes(run, tmp_path, monkeypatch):
    dt = run[0]
    seen = {}

    def keep(fig, outdir, name, formats):
        seen[name] = [ax.get_xlabel() for ax in fig.axes]
        plt.close(fig)
        return []

    monkeypatch.setattr(figures, "save_figure", keep)
    figures.plot_energy(dt, tmp_path)
    assert seen["energy"] and all(seen["energy"])


def test_report_headings_name_figures_readably(bundle):
    report = (bundle / "report.md").read_text()
    assert re.search(r"^### Figure \d+\. Energy and E-BFMI$", report, flags=re.MULTILINE)
    assert "### energy\n" not in report
    assert figures.FigureResult("ppc_phq9", [], "x").title == "Posterior predictive check (phq9)"


# --- conveniences --------------------------------------------------------------------------------


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"alliance-bayes {ab.__version__}"


def test_the_version_is_the_one_pyproject_declares():
    """One version: the package's ``__version__`` (alliance_bayes.version) is pyproject's."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert ab.__version__ == tomllib.loads(pyproject.read_text())["project"]["version"]


def test_dir_lists_the_public_api():
    names = dir(ab)
    assert {"load_study", "load_spec", "fit", "Fit", "__version__"} <= set(names)
    assert not {"Any", "TYPE_CHECKING", "annotations", "import_module"} & set(names)


def test_a_constant_row_does_not_widen_its_column():
    """One decimal place per column from the rows whose MCSE is defined: a constant row (MCSE 0,
    e.g. a fixed quantity) takes the column's places instead of asking for six."""
    from alliance_bayes.report.tables import column_decimals

    summary = pd.DataFrame(
        {
            "mcse_mean": [0.013, 0.0, np.nan, 0.4],
            "prob_positive": [0.9, 1.0, 0.5, 0.7],
            "ess_bulk": [1000.0, 1000.0, 1000.0, 1000.0],
        },
        index=["a", "constant", "undefined", "b"],
    )
    assert column_decimals(summary, ["a", "b"]) == (2, 2)
    assert column_decimals(summary, ["a", "constant", "undefined", "b"]) == (2, 2)
    assert column_decimals(summary, ["constant"]) == (0, 0)
