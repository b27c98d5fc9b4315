"""Declared provider types in the change family and the report: per-care-type quantities follow the
study's own care types (therapist, coach, psychiatrist and their combinations), and the contract's
study keeps its names, columns and colours. Small fake posteriors, no MCMC."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pymc as pm
import pytest
import xarray as xr
from matplotlib.colors import to_rgba

from alliance_bayes.data.care import CARE_TYPES, PROVIDER_TYPES
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.change.estimands import compute_change_estimands
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report import figures
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.report.sample import sample_characteristics, sample_table_markdown
from alliance_bayes.report.study import FitOutcome, write_study_report
from alliance_bayes.report.tables import (
    build_tables,
    estimand_label,
    estimate_cell,
    tables_latex,
    tables_markdown,
)
from alliance_bayes.spec import load_spec
from conftest import SHIPPED
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta, replace_group

THREE = ("therapist", "coach", "psychiatrist")
UNITS = "WHO-5 points"


# --- studies -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_study(SHIPPED)


@pytest.fixture(scope="module")
def frame3(shipped):
    """The shipped study with every fifth provider a psychiatrist, three provider types declared."""
    providers = shipped.providers.copy()
    providers.loc[providers.index[::5], "provider_type"] = "psychiatrist"
    study = RawStudy.from_frames(
        providers, shipped.clients, shipped.sessions, provider_types=list(THREE)
    )
    return build_frame(study)


@pytest.fixture(scope="module")
def frame(shipped):
    return build_frame(shipped)


def test_the_three_type_study_has_care_types_beyond_the_contracts(frame3):
    # What the tests below rest on: more care types than three, none of them "both".
    assert frame3.provider_types == THREE
    assert len(frame3.care_types) > 3 and "psychiatrist" in frame3.care_types
    assert "both" not in frame3.care_types
    assert any("_and_" in c for c in frame3.care_types)


# --- (a) the change family -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def change3(frame3):
    spec = load_spec("wellbeing_change")
    design = design_of(spec, frame3)
    return spec, design, family_of(spec).build(spec, design)


def test_the_change_design_codes_care_and_provider_types_as_the_frame_has_them(change3, frame3):
    _, design, _ = change3
    assert design.care_types == frame3.care_types
    assert design.provider_types == frame3.provider_types
    clients = design.frame.clients["care_type"].astype(str).to_numpy()
    np.testing.assert_array_equal(np.asarray(design.care_types)[design.care], clients)
    providers = design.frame.providers["provider_type"].astype(str).to_numpy()
    np.testing.assert_array_equal(
        np.asarray(design.provider_types)[design.provider_type], providers
    )
    scales = design.scales()
    assert list(scales["care_share"]) == list(frame3.care_types)
    assert sum(scales["care_share"].values()) == pytest.approx(1.0)
    for c, share in scales["care_share"].items():
        assert share == pytest.approx(np.mean(clients == c))
    assert list(scales["elevated_baselines"]) == list(frame3.care_types)
    elevated = design.elevated()
    for c, base in scales["elevated_baselines"].items():
        assert sum(base["counts"]) == np.sum(elevated & (clients == c))


def test_the_change_model_builds_over_the_frames_care_types_with_a_finite_logp(change3, frame3):
    model = change3[2]
    assert list(model.coords["care_type"]) == list(frame3.care_types)
    assert list(model.coords["provider_type"]) == list(frame3.provider_types)
    for name in ("mu_true_baseline", "true_change", "mean_provider_care", "var_provider_care"):
        assert model.named_vars_to_dims[name] == ("care_type",)
    assert model.named_vars_to_dims["sd_provider"] == ("provider_type",)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert all(np.isfinite(v) for v in model.point_logps(point).values())
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_the_provider_part_of_each_care_type_averages_its_own_clients(change3):
    # At a point with non-zero provider effects, mean_provider_care[c] must be the mean of the
    # clients of care type c, in the frame's order of care types.
    _, design, model = change3
    rng = np.random.default_rng(3)
    point = model.initial_point()
    point["z_provider"] = rng.standard_normal(point["z_provider"].shape)
    point["sd_provider_log__"] = rng.normal(1.0, 0.3, len(design.provider_types))
    inputs = [model.rvs_to_values[model[n]] for n in ("z_provider", "sd_provider")]
    outputs = model.replace_rvs_by_values([model["u_provider"], model["mean_provider_care"]])
    fn = model.compile_fn(outputs, inputs=inputs)
    u, mean_v = fn({i.name: point[i.name] for i in inputs})
    v = (design.member_weight * u[design.member_index]).sum(axis=1)
    for k, _ in enumerate(design.care_types):
        chosen = design.care == k
        assert chosen.any()
        assert mean_v[k] == pytest.approx(v[chosen].mean())


def _prior(draws: int, seed: int) -> xr.Dataset:
    """Prior draws of the model in context (no MCMC), as the estimands read them."""
    return pm.sample_prior_predictive(draws=draws, random_seed=seed)["prior"].to_dataset()


def test_the_change_estimands_of_prior_draws_are_named_after_the_studys_types(change3, frame3):
    _, design, model = change3
    with model:
        prior = _prior(20, seed=1)
    est = compute_change_estimands(prior, design.scales(), prefix="who5", units=UNITS)
    for c in frame3.care_types:
        assert f"who5_change[{c}]" in est and f"rtm[{c}]" in est
    assert "who5_change[all]" in est and "who5_change[both]" not in est
    assert [n for n in est if str(n).startswith("sd_provider[")] == [
        f"sd_provider[{t}]" for t in THREE
    ]


def test_the_shipped_study_keeps_the_contracts_change_model(frame):
    spec = load_spec("wellbeing_change")
    design = design_of(spec, frame)
    model = family_of(spec).build(spec, design)
    assert list(model.coords["care_type"]) == list(CARE_TYPES)
    assert list(model.coords["provider_type"]) == list(PROVIDER_TYPES)
    assert list(design.scales()["care_share"]) == list(CARE_TYPES)


# --- (b) a fake posterior over the three-type study's care types -----------------------------------


def _three_type_tree(frame3, reference: str = "coach") -> xr.DataTree:
    """The fake regression posterior with ``b``, ``b_care`` and ``sd_provider`` over the frame's
    care and provider types (contrasts against ``reference``)."""
    cares, types = list(frame3.care_types), list(frame3.provider_types)
    contrasts = [f"{c}-{reference}" for c in cares if c != reference]
    n_providers = 3 * len(types)
    dt = make_fake_datatree(chains=2, draws=120, seed=9, n_providers=n_providers)
    rng = np.random.default_rng(9)
    old = ["b", "b_care", "sd_provider", "care_type", "care_contrast", "provider_type"]

    def recoordinated(ds: xr.Dataset, posterior: bool) -> xr.Dataset:
        shape = (ds.sizes["chain"], ds.sizes["draw"])
        mu_b = ds["mu_b"].values
        b = mu_b[:, :, None] + rng.normal(0.0, 0.8, (*shape, len(cares), *mu_b.shape[2:]))
        out = ds.drop_vars([v for v in old if v in ds.variables])
        out["b"] = (("chain", "draw", "care_type", "subscale", "level"), b)
        if posterior:
            out["b_care"] = (
                ("chain", "draw", "care_contrast"),
                rng.normal(-1.0, 1.0, (*shape, len(contrasts))),
            )
            sd = np.exp(rng.normal(np.log(4.0), 0.2, (*shape, len(types))))
            out["sd_provider"] = (("chain", "draw", "provider_type"), sd)
            out = out.assign_coords(care_contrast=contrasts, provider_type=types)
        return out.assign_coords(care_type=cares)

    dt = replace_group(dt, "posterior", recoordinated(dt["posterior"].to_dataset(), True))
    dt = replace_group(dt, "prior", recoordinated(dt["prior"].to_dataset(), False))
    constant = dt["constant_data"].to_dataset()
    constant["provider_type"] = (
        "provider",
        np.array([types[i % len(types)] for i in range(n_providers)]),
    )
    return replace_group(dt, "constant_data", constant)


def _estimands(dt: xr.DataTree) -> xr.Dataset:
    cares = [str(c) for c in dt["posterior"]["care_type"].values]
    weights = {c: 1.0 / len(cares) for c in cares}
    return compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, care_weights=weights
    )


@pytest.fixture(scope="module")
def fake3(frame3):
    dt = _three_type_tree(frame3)
    est = _estimands(dt)
    return dt, est, make_fake_meta(dt)


@pytest.fixture(scope="module")
def fake_default():
    dt = make_fake_datatree(chains=2, draws=120, seed=9, n_providers=6)
    est = compute_estimands(
        dt["posterior"].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS
    )
    return dt, est, make_fake_meta(dt)


def test_estimand_labels_read_combined_care_types_in_words():
    assert estimand_label("b_care[therapist-coach]") == "Care type: therapist vs coach"
    assert (
        estimand_label("b_care[therapist_and_psychiatrist-coach]")
        == "Care type: therapist and psychiatrist vs coach"
    )
    assert (
        estimand_label("b_goal_within[coach_and_psychiatrist-coach]")
        == "Goal, within providers: coach and psychiatrist vs coach"
    )
    assert estimand_label("sd_provider[psychiatrist]") == "SD of provider intercepts (psychiatrist)"


def test_the_subscale_table_has_a_column_per_care_type_of_the_posterior(fake3, frame3):
    _, est, meta = fake3
    tables = {t.key: t for t in build_tables(est, meta)}
    sub = tables["subscale"]
    titles = ["Therapist", "Coach", "Psychiatrist"]
    titles += [c.replace("_and_", " and ").capitalize() for c in frame3.care_types[3:]]
    assert sub.header == ["Subscale", "Level", *titles, "Pooled"]
    summary = estimand_table(est).set_index("estimand")
    goal_within = next(r for r in sub.rows if r[:2] == ["Goal", "within"])
    for j, c in enumerate(frame3.care_types):
        assert goal_within[2 + j] == estimate_cell(summary.loc[f"b_goal_within[{c}]"])
    assert goal_within[-1] == estimate_cell(summary.loc["b_goal_within"])


def test_the_care_intercepts_and_contrasts_name_the_studys_care_types(fake3, frame3):
    _, est, meta = fake3
    tables = {t.key: t for t in build_tables(est, meta)}
    care = tables["care"]
    assert care.title == "Care-type intercepts (against coach-only care)"
    assert care.names == [f"b_care[{c}]" for c in frame3.care_contrasts]
    assert [r[0] for r in care.rows][-1] == "Care type: coach and psychiatrist vs coach"
    title = tables["contrasts"].title
    assert "therapist − coach" in title and "both" not in title
    md = tables_markdown(est, meta)
    tex = tables_latex(est, meta)
    assert "`b_care[therapist_and_psychiatrist-coach]`" in md
    assert "% estimand: b_care[therapist_and_psychiatrist-coach]" in tex
    assert "Therapist and psychiatrist" in md and "Therapist and psychiatrist" in tex


def test_the_care_intercepts_name_a_declared_reference(frame3):
    dt = _three_type_tree(frame3, reference="therapist_and_coach")
    tables = {t.key: t for t in build_tables(_estimands(dt), make_fake_meta(dt))}
    assert tables["care"].title == "Care-type intercepts (against therapist and coach care)"
    dt = _three_type_tree(frame3, reference="psychiatrist")
    tables = {t.key: t for t in build_tables(_estimands(dt), make_fake_meta(dt))}
    assert tables["care"].title == "Care-type intercepts (against psychiatrist-only care)"


def test_the_contracts_tables_keep_their_titles(fake_default):
    _, est, meta = fake_default
    tables = {t.key: t for t in build_tables(est, meta)}
    assert tables["care"].title == "Care-type intercepts (against coach-only care)"
    assert tables["contrasts"].title == (
        "Contrasts: care types (therapist − coach, both − coach), subscales (goal − bond)"
    )
    assert tables["subscale"].header == [
        "Subscale",
        "Level",
        "Therapist",
        "Coach",
        "Both",
        "Pooled",
    ]


def _drawn(monkeypatch, plot, *args, **kwargs):
    kept = {}

    def keep(fig, outdir, name, formats):
        kept[name] = fig
        return []

    monkeypatch.setattr(figures, "save_figure", keep)
    result = plot(*args, **kwargs)
    return result, kept[result.name]


def _forest_rows(monkeypatch, est, tmp_path):
    """(estimand, colour) of each row of the forest plot, top to bottom."""
    _, fig = _drawn(monkeypatch, figures.plot_forest_subscales, est, tmp_path)
    ax = fig.axes[0]
    labels = {
        float(y): t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    }
    # Each row's interval is a horizontal line at the row's height (the zero line is vertical).
    colours = {
        float(line.get_ydata()[0]): to_rgba(line.get_color())
        for line in ax.get_lines()
        if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]
    }
    plt.close(fig)
    assert sorted(colours) == sorted(labels)
    return [(labels[y], colours[y]) for y in sorted(labels, reverse=True)]


def test_the_forest_plot_colours_each_care_type_of_the_posterior(
    monkeypatch, fake3, frame3, tmp_path
):
    _, est, _ = fake3
    rows = _forest_rows(monkeypatch, est, tmp_path)
    cares = list(frame3.care_types)
    goal_within = [(n, c) for n, c in rows if n.startswith("b_goal_within")]
    assert [n for n, _ in goal_within] == [*(f"b_goal_within[{c}]" for c in cares), "b_goal_within"]
    assert [c for _, c in goal_within] == [
        *(to_rgba(f"C{i}") for i in range(len(cares))),
        to_rgba("black"),
    ]
    assert len(set(c for _, c in goal_within)) == len(cares) + 1


def test_the_contracts_forest_plot_keeps_its_colours(monkeypatch, fake_default, tmp_path):
    rows = _forest_rows(monkeypatch, fake_default[1], tmp_path)
    colours = dict(rows)
    for care, colour in (("therapist", "C0"), ("coach", "C1"), ("both", "C2")):
        assert colours[f"b_goal_within[{care}]"] == to_rgba(colour)
    assert colours["b_goal_within"] == to_rgba("black")


def test_provider_effects_have_a_panel_and_colour_per_provider_type(monkeypatch, fake3, tmp_path):
    dt = fake3[0]
    result, fig = _drawn(monkeypatch, figures.plot_provider_effects, dt, tmp_path)
    assert [ax.get_title() for ax in fig.axes] == [f"{t} (n = 3)" for t in THREE]
    for i, ax in enumerate(fig.axes):
        assert to_rgba(ax.get_lines()[0].get_color()) == to_rgba(f"C{i}")
    assert "psychiatrist:" in result.interpretation
    plt.close(fig)
    tree = figures.funnel_draws(dt)
    assert list(tree["posterior"]["provider_type"].values) == list(THREE)


def test_a_provider_type_coordinate_on_the_provider_effects_names_declared_types(fake3):
    dt = fake3[0]
    post = dt["posterior"].to_dataset()
    types = np.array([THREE[(i + 1) % 3] for i in range(post.sizes["provider"])])
    post = post.assign_coords(kind_of_provider=("provider", types))
    constant = dt["constant_data"].to_dataset().drop_vars("provider_type")
    tree = replace_group(replace_group(dt, "posterior", post), "constant_data", constant)
    np.testing.assert_array_equal(figures._provider_types(tree, types.size), types)


# --- (b) Table 1 and the study's report ------------------------------------------------------------


def test_table1_has_a_column_per_care_type_of_the_frame(frame3):
    t = sample_characteristics(frame3.clients)
    assert list(t.columns) == [*frame3.care_types, "all"]
    counts = frame3.clients["care_type"].astype(str).value_counts()
    assert t.loc["n", list(frame3.care_types)].tolist() == [counts[c] for c in frame3.care_types]
    assert t.loc["n", "all"] == len(frame3.clients)
    md = "\n".join(sample_table_markdown(t))
    header = next(line for line in md.splitlines() if line.startswith("|  | "))
    assert "| Therapist and psychiatrist |" in header and header.endswith("| All |")
    assert "(therapist only, coach only, psychiatrist only, therapist and coach," in md


def test_table1_of_the_shipped_study_keeps_the_contracts_columns(frame):
    t = sample_characteristics(frame.clients)
    assert list(t.columns) == [*CARE_TYPES, "all"]
    md = "\n".join(sample_table_markdown(t))
    assert "|  | Therapist | Coach | Both | All |" in md
    assert "(therapist only, coach only, both)" in md


def _summary(names_units: dict[str, str], seed: int = 0):
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {
            n: xr.DataArray(
                rng.normal(4.0, 0.1, (2, 100)), dims=("chain", "draw"), attrs={"units": u}
            )
            for n, u in names_units.items()
        }
    )
    return estimand_table(ds).set_index("estimand")


def _outcome(spec: str, family: str, summary, outcome: str = "who5_followup") -> FitOutcome:
    meta = {"outcome": outcome, "effect_units": "WHO-5 points per alliance point"}
    return FitOutcome(spec, family, spec, True, "Convergence: PASSED", summary, None, meta)


@pytest.fixture(scope="module")
def study_md(frame3, fake3, change3, tmp_path_factory):
    cares = list(frame3.care_types)
    ratings = _summary(
        {
            **{f"alliance[{c}]": "rating" for c in cares},
            **{f"alliance[{c}]": "rating difference" for c in frame3.care_contrasts},
            "alliance_per_decade_age": "rating per decade",
            "alliance[male-not_male]": "rating difference",
        }
    )
    _, design, model = change3
    with model:
        prior = _prior(60, seed=2)
    change = estimand_table(
        compute_change_estimands(prior, design.scales(), prefix="who5", units=UNITS)
    ).set_index("estimand")
    regression = estimand_table(fake3[1]).set_index("estimand")
    sections = {
        "ratings": [_outcome("alliance_ratings", "ratings", ratings)],
        "change": [_outcome("wellbeing_change", "change", change)],
        "association": [_outcome("who5_change", "regression", regression)],
    }
    root = tmp_path_factory.mktemp("results")
    table1 = sample_characteristics(frame3.clients)
    path = write_study_report(root, "run", table1=table1, sections=sections, meta={})
    assert (path / "figures" / "alliance_by_care.png").is_file()
    assert (path / "figures" / "change_by_care.png").is_file()
    return (path / "report.md").read_text(encoding="utf-8")


def test_the_studys_ratings_section_lists_its_care_types(study_md):
    assert "| Psychiatrist only (`alliance[psychiatrist]`) |" in study_md
    assert "| Therapist and psychiatrist (`alliance[therapist_and_psychiatrist]`) |" in study_md
    assert "| Psychiatrist vs coach (`alliance[psychiatrist-coach]`) |" in study_md
    assert "| Male vs not male (`alliance[male-not_male]`) |" in study_md
    assert "model (expected session rating): therapist " in study_md
    assert ", coach and psychiatrist " in study_md
    assert "alliance[both]" not in study_md


def test_the_studys_change_and_association_sections_have_a_column_per_care_type(study_md, frame3):
    titles = " | ".join(c.replace("_and_", " and ").capitalize() for c in frame3.care_types)
    assert f"| Estimand | {titles} | All |" in study_md
    assert f"| Slope | {titles} | Pooled |" in study_md
