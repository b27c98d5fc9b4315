"""Every figure of a bundle drawn from a small fake posterior: no two labels overlap (checked on
the rendered figure), the funnel and trace figures mark divergences, the LOO-PIT carries the Pareto
k table, and report.md / report.html number the figures alike. No MCMC."""

from __future__ import annotations

import itertools
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.model.regression.figures import plot_conditional_effects
from alliance_bayes.report import figures
from alliance_bayes.report.bundle import write_bundle
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta, replace_group

UNITS = "WHO-5 points"
SCALES = {
    "outcome_sd": 20.0,
    "baseline_mean": 42.0,
    "between_mean": {"goal": 4.5, "bond": 4.6},
    "alliance_range": {"goal": [1.0, 5.0], "bond": [1.0, 5.0]},
    "care_types": ["therapist", "coach", "both"],
}


def _with_regression_parts(dt: xr.DataTree) -> xr.DataTree:
    """The fake tree with what the regression family's own figure reads (``alpha``)."""
    post = dt["posterior"].to_dataset()
    post["alpha"] = post["intercept"]
    return replace_group(dt, "posterior", post)


@pytest.fixture(scope="module")
def fake():
    dt = _with_regression_parts(make_fake_datatree(draws=200, seed=5, n_providers=8))
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    prior = compute_estimands(
        dt["prior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    meta = {**make_fake_meta(dt), "scales": SCALES}
    return dt, est, prior, meta


def _drawn(fake, monkeypatch, tmp_path, dt=None) -> dict[str, tuple[object, figures.FigureResult]]:
    """Every figure of the bundle, kept open: name → (matplotlib figure, result)."""
    tree, est, prior, meta = fake
    kept = {}

    def keep(fig, outdir, name, formats):
        kept[name] = fig
        return [tmp_path / f"{name}.png"]

    monkeypatch.setattr(figures, "save_figure", keep)
    monkeypatch.setattr("alliance_bayes.model.regression.figures.save_figure", keep)
    results = figures.make_all_figures(
        tree if dt is None else dt,
        est,
        meta,
        tmp_path,
        formats=("png",),
        family_figures=(plot_conditional_effects,),
        prior_estimands=prior,
    )
    return {r.name: (kept[r.name], r) for r in results if r.paths}


def _shown_ticklabels(axis, limits) -> list:
    """Tick labels inside the axis's view (matplotlib lists, but does not draw, those outside)."""
    lo, hi = sorted(limits)
    pad = 1e-9 * max(1.0, abs(hi - lo))
    return [
        label
        for tick in axis.get_major_ticks()
        if lo - pad <= tick.get_loc() <= hi + pad
        for label in (tick.label1, tick.label2)
    ]


def _labels(fig) -> list[tuple[str, object]]:
    """(description, text artist) of every visible, non-empty label: tick labels, axis labels,
    axes titles, figure texts (a suptitle)."""
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        texts = [
            *(("xtick", t) for t in _shown_ticklabels(ax.xaxis, ax.get_xlim())),
            *(("ytick", t) for t in _shown_ticklabels(ax.yaxis, ax.get_ylim())),
            ("xlabel", ax.xaxis.label),
            ("ylabel", ax.yaxis.label),
            ("title", ax.title),
            ("title", ax._left_title),
            ("title", ax._right_title),
        ]
        out += [(f"axes {i} {kind} {t.get_text()!r}", t) for kind, t in texts]
    out += [(f"figure text {t.get_text()!r}", t) for t in fig.texts]
    if fig._suptitle is not None and fig._suptitle not in fig.texts:
        out.append((f"suptitle {fig._suptitle.get_text()!r}", fig._suptitle))
    return [(d, t) for d, t in out if t.get_visible() and t.get_text().strip()]


def overlapping_labels(fig, tolerance: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of labels whose rendered boxes overlap by more than ``tolerance`` pixels each way."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(d, t.get_window_extent(renderer)) for d, t in _labels(fig)]
    clashes = []
    for (da, a), (db, b) in itertools.combinations(boxes, 2):
        dx = min(a.x1, b.x1) - max(a.x0, b.x0)
        dy = min(a.y1, b.y1) - max(a.y0, b.y0)
        if dx > tolerance and dy > tolerance:
            clashes.append((da, db))
    return clashes


def test_the_overlap_check_finds_overlapping_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_title("a long title over the tick labels", fontsize=20)
    ax.set_xticks([0, 0.01], ["first label", "second label"])
    assert overlapping_labels(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xlabel("x")
    ax.set_title("t")
    fig.tight_layout()
    assert overlapping_labels(fig) == []
    plt.close(fig)


@pytest.fixture(scope="module")
def wide():
    """A larger model: three subscales, the composite slope and a Student-t nu (more panels,
    longer labels)."""
    dt = make_fake_datatree(
        draws=200, seed=6, n_providers=12, subscales=("goal", "bond", "task"), include_nu=True,
        paper_table2=True,
    )  # fmt: skip
    dt = _with_regression_parts(dt)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    prior = compute_estimands(
        dt["prior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    scales = {
        **SCALES,
        "between_mean": {"goal": 4.5, "bond": 4.6, "task": 4.4},
        "alliance_range": {s: [1.0, 5.0] for s in ("goal", "bond", "task")},
        "composite_mean": 4.5,
        "composite_range": [1.0, 5.0],
    }
    return dt, est, prior, {**make_fake_meta(dt), "scales": scales}


@pytest.mark.parametrize("which", ["fake", "wide"])
def test_no_figure_has_overlapping_labels(which, request, monkeypatch, tmp_path):
    drawn = _drawn(request.getfixturevalue(which), monkeypatch, tmp_path)
    expected = {
        "rank", "energy", "trace_provider_sd", "funnel_therapist", "funnel_coach",
        "forest_subscales", "ppc", "loo_pit", "prior_predictive", "prior_posterior",
        "provider_effects", "conditional_effects",
    }  # fmt: skip
    assert expected <= set(drawn)
    clashes = {name: overlapping_labels(fig) for name, (fig, _) in drawn.items()}
    plt.close("all")
    assert {n: c for n, c in clashes.items() if c} == {}


def test_every_axes_of_the_diagnostic_figures_names_its_x_axis(fake, monkeypatch, tmp_path):
    drawn = _drawn(fake, monkeypatch, tmp_path)
    for name in ("energy", "loo_pit", "funnel_coach", "trace_provider_sd"):
        fig = drawn[name][0]
        shown = [ax for ax in fig.axes if ax.axison and ax.get_visible()]
        assert shown and all(ax.get_xlabel() for ax in shown), name
    plt.close("all")


def test_funnel_and_trace_mark_the_divergent_transitions(fake, monkeypatch, tmp_path):
    dt = fake[0]
    stats = dt["sample_stats"].to_dataset()
    diverging = np.zeros(stats["diverging"].shape, dtype=bool)
    diverging[1, ::20] = True  # 10 divergences in chain 1
    stats["diverging"] = (("chain", "draw"), diverging)
    with_div = replace_group(dt, "sample_stats", stats)

    def points(fig):
        return sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)

    def artists(fig):
        return sum(len(ax.get_children()) for ax in fig.axes)

    counted = {}
    for label, tree in (("calm", dt), ("marked", with_div)):
        drawn = _drawn(fake, monkeypatch, tmp_path / label, dt=tree)
        counted[label] = {
            "funnel": points(drawn["funnel_coach"][0]),
            "panels": len(drawn["funnel_coach"][0].axes),
            "trace": artists(drawn["trace_provider_sd"][0]),
            "funnel_text": drawn["funnel_coach"][1].interpretation,
            "trace_text": drawn["trace_provider_sd"][1].interpretation,
        }
        plt.close("all")
    calm, marked = counted["calm"], counted["marked"]
    assert "0 divergent transitions" in calm["funnel_text"]
    assert "10 divergent transitions" in marked["funnel_text"]
    assert "10 divergent transitions (marked under the traces)" in marked["trace_text"]
    # Each funnel panel adds the 10 divergent draws as points of their own.
    assert marked["funnel"] == calm["funnel"] + 10 * marked["panels"]
    assert marked["trace"] > calm["trace"]
    plt.close("all")


def test_funnel_shows_the_providers_with_the_fewest_and_most_data_by_role(fake):
    dt = fake[0]
    tree = figures.funnel_draws(dt)
    post = tree["posterior"]
    assert list(post["provider_data"].values) == list(figures.FUNNEL_PROVIDERS)
    # The planted providers: the widest posterior of u_provider among each type's providers.
    u = dt["posterior"]["u_provider"]
    types = np.asarray(dt["constant_data"]["provider_type"].values).astype(str)
    for kind in ("therapist", "coach"):
        idx = np.flatnonzero(types == kind)
        sd = u.std(("chain", "draw")).values[idx]
        fewest, most = idx[np.argmax(sd)], idx[np.argmin(sd)]
        shown = post["u_provider"].sel(provider_type=kind)
        np.testing.assert_array_equal(
            shown.sel(provider_data="fewest data"), u.isel(provider=fewest)
        )
        np.testing.assert_array_equal(shown.sel(provider_data="most data"), u.isel(provider=most))
    # No provider identifier travels with the draws the figures draw.
    assert "provider" not in post.dims


def test_pareto_k_table_counts_the_bands_and_names_the_worst_clients_by_pseudonym():
    class Elpd:
        good_k = 0.7
        pareto_k = xr.DataArray(
            [0.1, 0.75, 1.3, 0.2, 0.95, 0.69],
            dims="client",
            coords={"client": [f"c{i}" for i in range(6)]},
        )

    lines = figures.pareto_k_table(Elpd(), worst=2)
    text = "\n".join(lines)
    assert "| k ≤ 0.70 (good) | 3 | 50.0% |" in text
    assert "| 0.70 < k ≤ 1 (LOO value unreliable) | 2 | 33.3% |" in text
    assert "| k > 1 (importance sampling fails) | 1 | 16.7% |" in text
    assert "`c2` 1.30, `c4` 0.95." in text


def test_a_bundle_without_pointwise_log_likelihood_says_so_in_one_line(fake, tmp_path):
    dt = fake[0]
    groups = {n.name: n.to_dataset() for n in dt.children.values() if n.name != "log_likelihood"}
    result = figures.plot_loo_pit(xr.DataTree.from_dict(groups), None, tmp_path)
    assert result.paths == [] and result.table == []
    assert result.interpretation.count(".") == 1 and "no pointwise log-likelihood" in (
        result.interpretation
    )


@pytest.fixture(scope="module")
def bundle(fake, tmp_path_factory):
    dt, est, _, meta = fake
    root = tmp_path_factory.mktemp("results")
    return write_bundle(
        root,
        "who5_change",
        "r1",
        dt,
        meta,
        est,
        check_convergence(dt, est),
        figure_formats=("png",),
    )


def test_report_numbers_figures_with_captions_alike_in_markdown_and_html(bundle):
    md = (bundle / "report.md").read_text()
    html = (bundle / "report.html").read_text()
    headings = re.findall(r"^### (Figure (\d+)\. .+)$", md, flags=re.MULTILINE)
    assert [int(n) for _, n in headings] == list(range(1, len(headings) + 1))
    assert len(headings) >= 8
    for title, n in headings:
        assert f"**Figure {n}.** " in md  # the caption opens with the number
        assert f"<h3>{title}</h3>" in html.replace("&quot;", '"')
        assert f"<strong>Figure {n}.</strong>" in html
    # Each caption says what the figure shows before what this run's numbers say.
    for name, caption in figures.FIGURE_CAPTIONS.items():
        if f"figures/{name}.png" in md or f"figures/{name}_" in md:
            assert caption in md, name
    # The diagnostics section has the trace and funnel figures; the PPC section the LOO-PIT with
    # its Pareto k table naming clients by pseudonym only.
    computation = md.split("## Computation")[1].split("## Posterior predictive checks")[0]
    assert "figures/trace_provider_sd.png" in computation
    assert (
        "figures/funnel_coach.png" in computation and "figures/funnel_therapist.png" in computation
    )
    ppc = md.split("## Posterior predictive checks")[1].split("\n## Results")[0]
    assert "figures/loo_pit.png" in ppc and "| Pareto k | Clients | Share |" in ppc
    assert re.search(r"Largest k \(pseudonymous client ids\): `client_\d{3}` ", ppc)
    # Figures that existed before keep their file names.
    for name in ("rank", "energy", "ppc", "forest_subscales", "provider_effects"):
        assert (bundle / "figures" / f"{name}.png").is_file()


def test_figures_are_numbered_in_report_order_and_a_figure_not_drawn_gets_no_number(tmp_path):
    made = [
        figures.FigureResult("forest_subscales", [tmp_path / "f.png"], "x.", section="results"),
        figures.FigureResult("rank", [], "Not drawn: one chain.", section="computation"),
        figures.FigureResult("energy", [tmp_path / "e.png"], "x.", section="computation"),
        figures.FigureResult("ppc", [tmp_path / "p.png"], "x.", section="ppc"),
        figures.FigureResult("prior_predictive", [tmp_path / "q.png"], "x.", section="priors"),
    ]
    assert figures.figure_numbers(made) == {
        "prior_predictive": 1,
        "energy": 2,
        "ppc": 3,
        "forest_subscales": 4,
    }
    assert figures.FigureResult("funnel_coach", [], "x").title == "Provider-SD funnel (coach)"
    assert (
        figures.FigureResult("funnel_coach", [], "x").caption == figures.FIGURE_CAPTIONS["funnel"]
    )
