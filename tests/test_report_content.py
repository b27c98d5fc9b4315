"""The reviewer's report: model equations, priors, standardised effects, HTML (no MCMC)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from alliance_bayes.data.published import PUBLISHED
from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report.bundle import ReportContent, write_bundle
from alliance_bayes.report.html import _math_svg, markdown_to_html
from alliance_bayes.report.hypotheses import hypothesis_table
from alliance_bayes.report.tables import tables_markdown
from alliance_bayes.spec import load_spec, spec_names
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta

SCALES = {
    "outcome_mean": 45.0,
    "outcome_sd": 20.0,
    "baseline_mean": 42.0,
    "baseline_sd": 19.0,
    "covariate_sd": {"age": 9.0, "male": 0.5, "days_in_care": 60.0},
    "alliance_sd": {
        "goal": {"within": 0.8, "between": 0.3},
        "bond": {"within": 0.7, "between": 0.25},
    },
    "between_mean": {"goal": 4.5, "bond": 4.6},
    "alliance_range": {"goal": [1.0, 5.0], "bond": [1.0, 5.0]},
    "composite_mean": 4.5,
    "composite_sd": 0.7,
    "composite_range": [1.0, 5.0],
    "care_types": ["therapist", "coach", "both"],
}


@pytest.mark.parametrize("name", spec_names())
def test_every_shipped_spec_has_equations_that_render(name):
    spec = load_spec(name)
    family = family_of(spec)
    lines = family.equations(spec)
    assert lines and lines[0].startswith(("y_i", "P(r"))
    for tex in lines:
        assert _math_svg(tex, 12) is not None, tex
    assert family.data_variables(spec)
    rows = family.prior_rows(spec, SCALES)
    assert all(r.distribution and r.justification for r in rows)


def test_equations_follow_the_spec_switches():
    full = " ".join(family_of(load_spec("who5_change")).equations(load_spec("who5_change")))
    assert r"\max(0" in full and r"\min(100" in full  # censored at both bounds
    assert r"\gamma_{c[i]}" in full and "LKJ" in full and r"u_{ps} W_{is}" in full
    slim = " ".join(family_of(load_spec("who5_intercepts")).equations(load_spec("who5_intercepts")))
    assert "LKJ" not in slim and r"u_{ps}" not in slim and r"u_{p0} \sim" in slim
    paper = " ".join(family_of(load_spec("paper_table2")).equations(load_spec("paper_table2")))
    assert r"b_a\," in paper and r"\gamma" not in paper and r"\mathcal{N}(\mu_i" in paper
    t = " ".join(
        family_of(load_spec("who5_change_student_t")).equations(load_spec("who5_change_student_t"))
    )
    assert r"t_\nu" in t


def test_prior_rows_state_every_prior_and_flag_deliberately_weak_ones():
    spec = load_spec("who5_change")
    rows = family_of(spec).prior_rows(spec, SCALES)
    params = " ".join(r.parameter for r in rows)
    for part in ("α", "β₀", "β_j", "γ_c", "μ^b", "τ (", "σ^u_t", "τ^u_s", "Ω", "σ (residual"):
        assert part in params, part
    assert any("Gamma(2, 2/5)" in r.distribution for r in rows)
    assert any("ȳ = 45.0" in r.on_data_scale for r in rows)
    weak = family_of(load_spec("paper_table2")).prior_rows(load_spec("paper_table2"), SCALES)
    assert sum("Deliberately weak" in r.justification for r in weak) == 3  # α, β₀, β_j
    t = load_spec("who5_change_student_t")
    assert any(r.parameter.startswith("ν") for r in family_of(t).prior_rows(t, SCALES))


def test_standardised_effects_and_the_baldwin_contrast_are_computed_draw_by_draw():
    post = make_fake_datatree(draws=100, seed=3)["posterior"].to_dataset()
    post["r2_bayes"] = post["sigma"] * 0 + 0.3
    est = compute_estimands(
        post, outcome_units="WHO-5 points", scales=SCALES, care_weights=CARE_WEIGHTS
    )
    pooled = sum(w * post["b"].sel(care_type=c) for c, w in CARE_WEIGHTS.items())
    np.testing.assert_allclose(
        est["b_goal_within-between"].values,
        (
            pooled.sel(subscale="goal", level="within")
            - pooled.sel(subscale="goal", level="between")
        ).values,
    )
    np.testing.assert_allclose(
        est["beta_bond_between"].values,
        pooled.sel(subscale="bond", level="between").values * 0.25 / 20.0,
    )
    b_age = post["b_covariate"].sel(covariate="age").values
    np.testing.assert_allclose(est["beta_age"].values, b_age * 9.0 / 20.0)
    assert est["beta_goal_within"].attrs["kind"] == "standardised effect"
    assert est["r2_bayes"].attrs["kind"] == "model fit"
    assert "beta_goal_within" not in compute_estimands(post)  # no scales, no β


def test_paper_table2_sets_the_published_table_beside_the_posterior():
    dt = make_fake_datatree(draws=100, seed=4, hierarchical=False, paper_table2=True)
    post = dt["posterior"].to_dataset()
    est = compute_estimands(
        post, outcome_units="WHO-5 points", scales=SCALES, care_weights=CARE_WEIGHTS
    )
    meta = {
        **make_fake_meta(dt, spec="paper_table2"),
        "spec_as_run": load_spec("paper_table2").to_dict(),
    }
    md = tables_markdown(est, meta)
    assert "### Published table and this posterior, side by side" in md
    published = dict((r[0], r) for r in PUBLISHED["sagui_henson_2022_table2"]["rows"])
    assert "| alliance score (goal+bond mean) (`b_alliance`) | 2.04 [0.09, 3.99] |" in md
    assert (
        published["b_baseline"][3] == 0.23
        and "| baseline WHO-5 (`b_baseline`) | 0.66 [0.45, 0.86] |" in md
    )
    assert "| R² (`r2_bayes`) | 0.06 |" in md


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    dt = make_fake_datatree(draws=200, seed=11)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS
    )
    prior = compute_estimands(
        dt["prior"].to_dataset(), outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS
    )
    spec = load_spec("who5_change")
    family = family_of(spec)
    content = ReportContent(
        equations=family.equations(spec),
        data_variables=family.data_variables(spec),
        prior_rows=family.prior_rows(spec, SCALES),
        prior_estimands=prior,
        hypotheses=hypothesis_table(
            ["b_goal_within > 0", "b_goal_within = b_bond_within", "b_nope > 0"],
            est,
            prior,
            rope=2.0,
            outcome_units="WHO-5 points",
            strict=False,
        ),
        description=spec.description,
    )
    root = tmp_path_factory.mktemp("results")
    meta = make_fake_meta(dt)
    path = write_bundle(
        root, "who5_change", "r1", dt, meta, est, check_convergence(dt, est),
        figure_formats=("png",), content=content,
    )  # fmt: skip
    return path


SECTIONS = (
    "## Model", "## Clients", "## Priors", "## Computation", "## Posterior predictive checks",
    "## Results", "### Hypotheses", "## Sensitivity", "## BARG checklist", "## Files",
)  # fmt: skip


def test_report_follows_the_barg_layout(bundle):
    text = (bundle / "report.md").read_text()
    heads = [ln for ln in text.splitlines() if ln.startswith("## ") or ln == "### Hypotheses"]
    assert [h for h in heads if h in SECTIONS] == [s for s in SECTIONS if s != "## Clients"]
    model = text.split("## Model")[1].split("## Priors")[0]
    assert model.count("$$") == 2 * 5  # each of the 5 equations as display maths
    priors = text.split("## Priors")[1].split("## Computation")[0]
    assert "| Parameter | Prior | On the data's scale | Justification |" in priors
    assert "figures/prior_posterior.png" in priors and "figures/prior_predictive.png" in priors
    assert "figures/rank.png" in text.split("## Computation")[1].split("## Posterior")[0]
    ppc = text.split("\n## Posterior predictive checks")[1].split("\n## Results")[0]
    assert "figures/ppc.png" in ppc
    assert re.search(r"^### Figure \d+\. Posterior predictive check$", ppc, flags=re.MULTILINE)
    assert "| `b_nope > 0` |" in text and "not estimable in this model" in text
    barg = text.split("## BARG checklist")[1]
    for item in ("1.A", "1.E", "2.B", "3.A", "4 Decisions", "5.A", "6.C"):
        assert item in barg
    assert (bundle / "hypotheses.csv").is_file()


def test_report_html_is_self_contained(bundle):
    page = (bundle / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Priors</h2>" in page
    assert 'src="figures/' not in page and page.count("data:image/png;base64,") >= 5
    assert page.count('class="math-display"') == 5 and "<code>\\mu" not in page
    # Nothing to fetch: no script, stylesheet link or remote source.
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="https?://', page)


def test_unknown_math_falls_back_to_its_source(tmp_path):
    page = markdown_to_html("# T\n\n$$\\notacommand{x}$$\n\ntext $a_1$ here\n", tmp_path, "T")
    assert "<code>\\notacommand{x}</code>" in page and 'class="math-inline"' in page


CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt install chromium)")
def test_report_html_renders_in_a_headless_browser(bundle, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1280,3000", f"--screenshot={shot}", (bundle / "report.html").as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1280)
    # A rendered page: dark text on white, and the figures further down are drawn too.
    assert (pixels < 100).mean() > 0.005 and (pixels > 240).mean() > 0.5
    assert (pixels[1500:] < 200).mean() > 0.01


def test_the_identifier_guard_reads_the_html_text_not_its_embedded_images(tmp_path):
    """Short ids occur by chance inside base64 images; the guard must not refuse the bundle then."""
    dt = make_fake_datatree(draws=100, seed=12)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units="WHO-5 points", care_weights=CARE_WEIGHTS
    )
    ids = [f"{chr(65 + i)}{n:02d}" for i in range(26) for n in range(100)]
    path = write_bundle(
        tmp_path, "who5_change", "r1", dt, make_fake_meta(dt), est, check_convergence(dt, est),
        forbidden_ids=ids, figure_formats=("png",),
    )  # fmt: skip
    page = (path / "report.html").read_text()
    chance = sum(bool(re.search(rf"[+/]{i}[+/]", page)) for i in ids)
    assert chance > 0  # the images do hold such tokens, so this checks something
