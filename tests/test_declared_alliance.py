"""A study declares its alliance instrument: WAI-SR items, pre-scored 1–7 means, the SRS, by hand."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from tests.data_builders import csv_text, tiny_tables, write_csv_study

from alliance_bayes.data.alliance import SHIPPED, AllianceInstrument, parse_alliance
from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame, session_scores
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.errors import DesignError
from alliance_bayes.model.latent.instrument_check import require_integer_ratings
from alliance_bayes.model.latent.measurement import prepare_latent
from alliance_bayes.model.ratings.design import prepare_ratings
from alliance_bayes.model.regression.describe import prior_rows
from alliance_bayes.model.regression.design import alliance_scale, model_priors, prepare
from alliance_bayes.model.regression.graph import build_model
from alliance_bayes.spec import ALLIANCE_POINT_PRIORS, PriorSpec, load_spec

WAI_SR = SHIPPED["wai_sr"]
SEED = 7


# --------------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------------
def _write(folder, providers, clients, sessions, toml):
    """Three tables as CSV (what a user's export would hold) and a study.toml."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in (("providers", providers), ("clients", clients), ("sessions", sessions)):
        df.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")
    (folder / "study.toml").write_text(toml, encoding="utf-8")
    return folder


def _wai_sr_sessions(sessions: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Each session's goal and bond rating expanded into the WAI-SR's four items per subscale
    (task items from the goal rating), each moved by one point now and then, some left unrated."""
    out = sessions.drop(columns=[c for c in ("wai_goal", "wai_bond", "wai_task") if c in sessions])
    source = {"goal": "wai_goal", "bond": "wai_bond", "task": "wai_goal"}
    for s in ("goal", "bond", "task"):
        base = sessions[source[s]].to_numpy(dtype=float)
        for column in WAI_SR.items(s):
            moved = np.clip(base + rng.choice([-1, 0, 1], len(base), p=[0.15, 0.7, 0.15]), 1, 5)
            moved[rng.random(len(base)) < 0.04] = np.nan  # an item left unrated now and then
            out[column] = pd.array(moved, dtype="Int64")
    return out


@pytest.fixture(scope="module")
def simulated():
    return simulate_study(SimulationConfig.small(), seed=SEED)


@pytest.fixture(scope="module")
def wai_sr_folder(simulated, tmp_path_factory):
    rng = np.random.default_rng(SEED)
    sessions = _wai_sr_sessions(simulated.sessions, rng)
    folder = tmp_path_factory.mktemp("wai_sr")
    return _write(
        folder,
        simulated.providers,
        simulated.clients,
        sessions,
        '[alliance]\ninstrument = "wai_sr"\n',
    )


def _prescored_sessions(sessions: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Goal and bond as WAI-S subscale means on 1–7 (quarter points, as a mean of four items)."""
    out = sessions.copy()
    for column in ("wai_goal", "wai_bond"):
        r = sessions[column].to_numpy(dtype=float)
        mean = 1 + (r - 1) * 1.5 + rng.normal(0, 0.4, len(r))
        out[column] = np.clip(np.round(mean * 4) / 4, 1, 7)
    return out


PRESCORED_TOML = """
[alliance]
instrument = "wai_s"
scored = "subscales"
[alliance.subscales]
goal = ["wai_goal"]
bond = ["wai_bond"]
"""


@pytest.fixture(scope="module")
def prescored_study(simulated, tmp_path_factory):
    sessions = _prescored_sessions(simulated.sessions, np.random.default_rng(SEED))
    folder = tmp_path_factory.mktemp("wai_s_means")
    return load_study(
        _write(folder, simulated.providers, simulated.clients, sessions, PRESCORED_TOML)
    )


def _tiny(tmp_path, toml, sessions=None):
    """The tiny study with its sessions replaced (a DataFrame of text cells) and a study.toml."""
    tables = tiny_tables()
    folder = write_csv_study(tmp_path / "study", tables)
    if sessions is not None:
        sessions.to_csv(folder / "sessions.csv", index=False, lineterminator="\n")
    (folder / "study.toml").write_text('ignore = ["notes"]\n' + toml, encoding="utf-8")
    return folder


def _tiny_sessions() -> pd.DataFrame:
    """The tiny study's sessions as text cells."""
    return pd.read_csv(
        io.StringIO(csv_text(tiny_tables()["sessions"])), dtype=str, keep_default_na=False
    )


SRS_TOML = '[alliance]\ninstrument = "srs"\n'


def _srs_sessions() -> pd.DataFrame:
    sessions = _tiny_sessions()
    goal, bond = sessions.pop("wai_goal"), sessions.pop("wai_bond")
    sessions["srs_goals"] = [f"{2 * float(v):.1f}" for v in goal]
    sessions["srs_relationship"] = [f"{2 * float(v) - 0.3:.1f}" if v else "" for v in bond]
    sessions["srs_approach"] = ["9.7"] * len(sessions)
    return sessions


# --------------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------------
def test_the_shipped_templates_are_the_published_ones():
    assert (WAI_SR.label, WAI_SR.range, WAI_SR.scored, WAI_SR.step) == (
        "WAI-SR",
        (1.0, 5.0),
        "items",
        1.0,
    )
    # Hatcher & Gillaspy 2006: goal 4, 6, 8, 11; bond 3, 5, 7, 9; task 1, 2, 10, 12
    assert WAI_SR.items("goal") == ("wai_sr_4", "wai_sr_6", "wai_sr_8", "wai_sr_11")
    assert WAI_SR.items("bond") == ("wai_sr_3", "wai_sr_5", "wai_sr_7", "wai_sr_9")
    assert WAI_SR.items("task") == ("wai_sr_1", "wai_sr_2", "wai_sr_10", "wai_sr_12")
    assert sorted(WAI_SR.columns, key=lambda c: int(c.rsplit("_", 1)[1])) == [
        f"wai_sr_{k}" for k in range(1, 13)
    ]
    assert "doi:10.1080/10503300500352500" in WAI_SR.source
    wai_s, srs = SHIPPED["wai_s"], SHIPPED["srs"]
    assert (wai_s.range, len(wai_s.columns)) == ((1.0, 7.0), 12)
    assert all(len(wai_s.items(s)) == 4 for s in ("goal", "bond", "task"))
    assert "doi:10.1037/1040-3590.1.3.207" in wai_s.source
    assert (srs.range, srs.step) == ((0.0, 10.0), 0.1)
    assert (srs.items("bond"), srs.items("goal"), srs.items("task")) == (
        ("srs_relationship",),
        ("srs_goals",),
        ("srs_approach",),
    )
    assert "Journal of Brief Therapy 3" in srs.source
    assert [i.prior_factor for i in (WAI_SR, wai_s, srs)] == pytest.approx([1.0, 4 / 6, 0.4])
    assert not any(i.single_ratings_1_to_5 for i in SHIPPED.values())


def test_a_template_by_name_and_keys_that_replace_its_values():
    assert parse_alliance({"instrument": "wai_sr"}) == (WAI_SR, [])
    means, problems = parse_alliance(
        {
            "instrument": "wai_sr",
            "scored": "subscales",
            "subscales": {"goal": ["g"], "bond": ["b"], "task": ["t"]},
        }
    )
    assert problems == []
    assert (means.label, means.range, means.scored, means.columns) == (
        "WAI-SR",
        (1.0, 5.0),
        "subscales",
        ("g", "b", "t"),
    )
    own, problems = parse_alliance(
        {
            "label": "Clinic alliance",
            "range": [0, 6],
            "subscales": {"bond": ["b1", "b2"], "goal": ["g1"]},
            "reverse": ["b2"],
        }
    )
    assert problems == []
    assert own.name == "" and own.scored == "items" and own.measured == ("goal", "bond")
    assert own.scale == "Clinic alliance 0–6" and own.reverse == ("b2",)


def test_a_declaration_with_many_problems_lists_them_all():
    _, problems = parse_alliance(
        {
            "label": "",
            "range": [5, 1],
            "scored": "sums",
            "step": 0,
            "subscales": {
                "goal": ["a", "b"],
                "bond": [],
                "task": ["b", "client_id"],
                "overall": ["o"],
            },
            "reverse": ["zz"],
        },
        reserved=frozenset({"client_id"}),
    )
    text = "\n".join(problems)
    assert "[alliance].label" in text
    assert "[alliance].range: [low, high] with low < high, got [5, 1]" in text
    assert "[alliance].scored: one of ['items', 'subscales'], got 'sums'" in text
    assert "[alliance].step: a number > 0, got 0" in text
    assert "unknown subscale(s) ['overall']" in text
    assert "[alliance.subscales].bond: a subscale with no items" in text
    assert "the item 'b' is in two subscales (goal and task)" in text
    assert "['client_id'] already a contract column" in text
    assert len(problems) == 8  # a reversed column is checked once the subscales are sound


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"instrument": "wai-sr"}, "got 'wai-sr' (did you mean 'wai_sr'?)"),
        ({"instrument": "wai_sr", "colour": 1}, "unknown key(s) ['colour']"),
        ({"label": "X"}, "['range', 'subscales'] required without instrument"),
        ({"instrument": "srs", "subscales": {"goal": ["g"]}}, "['bond'] required"),
        ({"instrument": "wai_s", "scored": "subscales"}, "one pre-scored column per subscale"),
        (
            {
                "instrument": "wai_sr",
                "scored": "subscales",
                "subscales": {"goal": ["a", "b"], "bond": ["c"]},
            },
            "[alliance.subscales].goal: one column (its pre-scored mean)",
        ),
        (
            {
                "instrument": "srs",
                "scored": "subscales",
                "step": 1,
                "subscales": {"goal": ["g"], "bond": ["b"]},
            },
            "only item ratings have a step",
        ),
        ({"instrument": "wai_sr", "step": 0.3}, "a whole number of steps"),
        (
            {"instrument": "wai_sr", "subscales": {"goal": ["a", "a"], "bond": ["b"]}},
            "more than once",
        ),
        ("wai_sr", "[alliance]: a table"),
        ({"instrument": "wai_sr", "reverse": ["zz"]}, "reverse: items of [alliance.subscales]"),
        ({"instrument": "wai_s", "reverse": "wai_s_goal_1"}, "reverse: a list of item columns"),
    ],
)
def test_each_malformed_declaration_is_named(raw, expected):
    instrument, problems = parse_alliance(raw)
    assert instrument is None
    assert any(expected in p for p in problems), problems


def test_declaration_problems_are_listed_with_the_others_of_study_toml(tmp_path):
    toml = 'age_range = [25, 12]\n[covariates.x]\ntype = "y"\n[alliance]\ninstrument = "wai_x"\n'
    with pytest.raises(DataContractError) as err:
        load_study(_tiny(tmp_path, toml))
    text = str(err.value)
    declared = [e for e in err.value.problems if str(e.file).endswith("study.toml")]
    assert len(declared) == 3
    # the tables are checked too, as far as the wrong declarations let them: the covariate's
    # column is absent (its values wait for its type)
    assert [e.column for e in err.value.problems if e not in declared] == ["x"]
    assert "age_range: [low, high]" in text and "[covariates.x].type" in text
    assert "[alliance].instrument: one of ['wai_sr', 'wai_s', 'srs']" in text
    assert str(tmp_path / "study" / "study.toml") in text


def test_an_age_range_below_the_alliance_heading_is_named_as_misplaced(tmp_path):
    toml = '[alliance]\ninstrument = "srs"\nage_range = [12, 25]\n'
    with pytest.raises(DataContractError) as err:
        load_study(_tiny(tmp_path, toml, _srs_sessions()))
    assert "[alliance]: age_range belongs at the top of the file" in str(err.value)
    assert len(err.value.problems) == 1


# --------------------------------------------------------------------------------------------------
# Loading: the declared columns, checked; every problem at once
# --------------------------------------------------------------------------------------------------
def test_without_a_declaration_the_contract_holds_unchanged(tmp_path):
    study = load_study(_tiny(tmp_path, ""))
    assert study.alliance is None
    assert list(study.sessions.columns)[-3:] == ["wai_goal", "wai_bond", "wai_task"]
    assert str(study.sessions["wai_goal"].dtype) == "Int64"
    frame = build_frame(study)
    assert frame.alliance is None and frame.partially_rated == {}
    assert "alliance (composite, 1–5)" in frame.summary()


def test_srs_items_load_in_tenths_and_the_overall_item_may_be_ignored(tmp_path):
    sessions = _srs_sessions()
    sessions["srs_overall"] = "8.8"
    folder = _tiny(tmp_path, SRS_TOML, sessions)
    (folder / "study.toml").write_text(
        'ignore = ["notes", "srs_overall"]\n' + SRS_TOML, encoding="utf-8"
    )
    study = load_study(folder)
    assert study.alliance == SHIPPED["srs"]
    assert list(study.sessions.columns) == [
        "client_id", "provider_id", "session_date", "session_index",
        "srs_goals", "srs_relationship", "srs_approach",
    ]  # fmt: skip
    assert study.ignored["sessions"] == ("srs_overall",)
    frame = build_frame(study)
    first = frame.sessions.iloc[0]  # client 007's first session: goal 4, bond 5
    assert (first["wai_goal"], first["wai_bond"], first["wai_task"]) == pytest.approx(
        (8.0, 9.7, 9.7)
    )
    assert frame.subscales == ("goal", "bond", "task")
    assert "alliance (composite, SRS 0–10)" in frame.summary()


def test_every_item_problem_is_reported_at_once_with_file_column_rows_and_values(tmp_path):
    sessions = _tiny_sessions()
    goal, bond = sessions.pop("wai_goal"), sessions.pop("wai_bond")
    for column in WAI_SR.columns:
        sessions[column] = goal.where(goal != "", "3")
    sessions["wai_sr_4"] = ["4", "6", "2.5", "0", "", "1", "5", "5", "5", "5", "5", "1", "3"]
    sessions["wai_sr_3"] = bond.str.replace("5", "x")
    sessions = sessions.drop(columns=["wai_sr_12"])
    sessions["wai_goal"] = goal  # the contract's column, no longer an alliance column
    sessions["WAI_SR_10"] = "1"  # an item column in capitals
    with pytest.raises(DataContractError) as err:
        load_study(_tiny(tmp_path, '[alliance]\ninstrument = "wai_sr"\n', sessions))
    text = str(err.value)
    where = f"declared [alliance], WAI-SR 1–5, in {tmp_path / 'study' / 'study.toml'}"
    assert (
        "column 'wai_sr_4', rows 2, 3, 4 (lines 3, 4, 5): expected a goal item rating from 1 to 5, "
        f"a whole number ({where}), or empty when not rated (0 is not a rating; leave unrated "
        "items empty); got 6, 2.5, 0"
    ) in text
    assert "column 'wai_sr_3', rows 2, 5, 10 (lines 3, 6, 11): expected a bond item rating" in text
    assert "got 'x', 'x', 'x'" in text
    assert f"every item column of the {where} in the header (line 1); missing: wai_sr_12" in text
    assert "column 'wai_goal': expected only the columns the data contract names" in text
    assert (
        "'wai_goal' is not one of its columns: add it to [alliance.subscales], or ignore it" in text
    )
    assert "column 'WAI_SR_10'" in text and "did you mean 'wai_sr_10'?" in text
    assert len(err.value.problems) == 5


def test_a_declared_item_cannot_be_ignored_but_the_old_wai_columns_can(tmp_path):
    sessions = _srs_sessions()
    sessions["wai_task"] = "3"
    folder = _tiny(tmp_path, SRS_TOML, sessions)
    (folder / "study.toml").write_text(
        'ignore = ["notes", "wai_task", "srs_goals"]\n' + SRS_TOML, encoding="utf-8"
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    assert len(err.value.problems) == 1
    assert "a contract column is read and checked, never ignored" in str(err.value)
    assert "'srs_goals'" in str(err.value) and "'wai_task'" not in str(err.value)


def test_a_long_export_carries_the_declared_items(tmp_path):
    tables = tiny_tables()
    frames = {
        name: pd.read_csv(io.StringIO(csv_text(t)), dtype=str, keep_default_na=False)
        for name, t in tables.items()
    }
    sessions = _srs_sessions()
    long = sessions.merge(frames["clients"].drop(columns=["notes"]), on="client_id").merge(
        frames["providers"], on="provider_id"
    )
    folder = tmp_path / "long"
    folder.mkdir()
    long.to_csv(folder / "sessions_long.csv", index=False, lineterminator="\n")
    (folder / "study.toml").write_text(SRS_TOML, encoding="utf-8")
    study = load_study(folder)
    assert study.alliance == SHIPPED["srs"]
    assert study.sessions["srs_approach"].tolist() == [9.7] * len(sessions)


def test_from_frames_takes_a_declared_instrument():
    providers, clients, _ = (
        pd.read_csv(io.StringIO(csv_text(t)), dtype=str, keep_default_na=False)
        for t in tiny_tables().values()
    )
    study = RawStudy.from_frames(
        providers, clients, _srs_sessions(), ignore_columns=["notes"], alliance=SHIPPED["srs"]
    )
    assert study.alliance == SHIPPED["srs"]
    with pytest.raises(DataContractError, match="srs_goals"):
        RawStudy.from_frames(providers, clients, _srs_sessions(), ignore_columns=["notes"])


# --------------------------------------------------------------------------------------------------
# The frame: a session's subscale score is the mean of its rated items
# --------------------------------------------------------------------------------------------------
def test_wai_sr_items_load_and_the_scores_are_the_item_means(wai_sr_folder):
    study = load_study(wai_sr_folder)
    assert study.alliance == WAI_SR
    raw = pd.read_csv(wai_sr_folder / "sessions.csv", dtype={"client_id": str})
    frame = build_frame(study)
    assert frame.subscales == ("goal", "bond", "task")
    # session by session: the mean of the rated items
    scores, partial = session_scores(study.sessions, WAI_SR)
    for s in ("goal", "bond", "task"):
        expected = raw[list(WAI_SR.items(s))].mean(axis=1, skipna=True)
        np.testing.assert_allclose(scores[s].to_numpy(float), expected.to_numpy(float))
        some = raw[list(WAI_SR.items(s))].notna().sum(axis=1)
        assert partial[s] == int(((some > 0) & (some < 4)).sum()) > 0
    assert frame.partially_rated == partial
    # client by client: the mean of the session scores (clients are pseudonymised in id order)
    per_client = (
        raw.assign(g=raw[list(WAI_SR.items("goal"))].mean(axis=1, skipna=True))
        .groupby("client_id")["g"]
        .mean()
        .sort_index()
    )
    np.testing.assert_allclose(frame.clients["alliance_goal"].to_numpy(), per_client.to_numpy())
    assert frame.clients["alliance"].between(1, 5).all()
    assert str(frame.sessions["wai_goal"].dtype) == "float64"


def test_prescored_1_to_7_means_load_as_they_are(prescored_study):
    study = prescored_study
    assert study.alliance.scale == "WAI-S 1–7" and study.alliance.scored == "subscales"
    assert study.alliance.columns == ("wai_goal", "wai_bond")
    assert (study.sessions["wai_goal"] % 0.25 == 0).all()
    assert study.sessions["wai_goal"].max() > 5  # beyond the contract's 1–5
    frame = build_frame(study)
    assert frame.subscales == ("goal", "bond")
    assert frame.clients["alliance"].between(1, 7).all()
    assert frame.partially_rated == {}


def test_a_prescored_mean_outside_the_range_is_refused(tmp_path):
    sessions = _tiny_sessions()
    sessions.loc[1, "wai_goal"] = "7.5"
    sessions.loc[2, "wai_bond"] = "0.5"
    with pytest.raises(DataContractError) as err:
        load_study(_tiny(tmp_path, PRESCORED_TOML, sessions))
    text = str(err.value)
    assert "column 'wai_goal', row 2 (line 3): expected a pre-scored goal subscale score" in text
    assert "between 1 and 7" in text and "got 7.5" in text and "got 0.5" in text
    assert len(err.value.problems) == 2


# --------------------------------------------------------------------------------------------------
# The averaged-score models take any declared range
# --------------------------------------------------------------------------------------------------
def test_who5_change_builds_on_a_1_to_7_study_with_slopes_and_priors_on_its_scale(
    prescored_study,
):
    spec = load_spec("who5_change")
    frame = build_frame(prescored_study)
    data = prepare(spec, frame)
    scales = data.scales()
    record = scales["alliance_instrument"]
    assert record["scale"] == "WAI-S 1–7" and record["prior_factor"] == pytest.approx(2 / 3)
    assert record["subscales"] == {"goal": ["wai_goal"], "bond": ["wai_bond"]}
    # slopes per point of the declared scale
    units = spec.effect_units_on(alliance_scale(scales))
    assert units == "WHO-5 points per 1 point of the WAI-S 1–7 scale"
    # priors per alliance point: the spec's (stated on 1–5) times 4/6; the others unchanged
    priors = model_priors(spec, data)
    for name in ALLIANCE_POINT_PRIORS:
        assert getattr(priors, name) == pytest.approx(getattr(spec.priors, name) * 4 / 6)
    assert priors.sigma_sd == spec.priors.sigma_sd and priors.b_care_sd == spec.priors.b_care_sd
    model = build_model(spec, data)
    with warnings.catch_warnings():
        # compiling the graph asks for a BLAS library once per process; where none is installed
        # PyTensor says so, which is about this machine, not about the model
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        logps = model.point_logps()
        # the model's prior on the pooled slopes is the scaled one
        shape = tuple(len(model.coords[d]) for d in ("subscale", "level"))
        got = float(pm.logp(model["mu_b"], np.zeros(shape)).eval().sum())
    assert all(math.isfinite(v) for v in logps.values()), logps
    assert got == pytest.approx(shape[0] * shape[1] * stats.norm.logpdf(0, 0, priors.mu_b_sd))
    rows = {r.parameter: r for r in prior_rows(spec, scales)}
    pooled = rows["μ^b (pooled subscale slopes)"]
    assert pooled.distribution == f"Normal(0, {priors.mu_b_sd:g})"
    assert "WHO-5 points per WAI-S 1–7 point" in pooled.on_data_scale


def test_without_a_declaration_the_regression_design_is_unchanged(small_study_dir):
    spec = load_spec("who5_change")
    data = prepare(spec, build_frame(load_study(small_study_dir)))
    assert "alliance_instrument" not in data.scales()
    assert model_priors(spec, data) == spec.priors
    assert spec.effect_units_on(alliance_scale(data.scales())) == spec.effect_units
    assert spec.effect_units == "WHO-5 points per 1 point of alliance (1–5 scale)"


def test_a_latent_mean_model_puts_its_alliance_priors_on_the_declared_scale():
    from alliance_bayes.model.regression.graph import latent_mean_priors

    assert latent_mean_priors() == (3.0, 1.0, 1.0, 0.25)
    assert latent_mean_priors((1.0, 7.0)) == pytest.approx((4.0, 1.5, 1.5, 0.375))
    assert latent_mean_priors((0.0, 10.0)) == pytest.approx((5.0, 2.5, 2.5, 0.625))


# --------------------------------------------------------------------------------------------------
# The graded-response families refuse any other instrument
# --------------------------------------------------------------------------------------------------
def test_the_ratings_family_refuses_a_declared_instrument(prescored_study):
    spec = load_spec("alliance_ratings")
    with pytest.raises(DesignError) as err:
        prepare_ratings(spec, build_frame(prescored_study))
    text = str(err.value)
    assert "spec 'alliance_ratings' (ratings family)" in text
    assert "one integer alliance rating 1–5 per subscale" in text
    assert "the alliance instrument WAI-S 1–7 (its sessions hold pre-scored subscale means" in text
    assert "averaged-score model" in text and "who5_change" in text


def test_the_latent_design_takes_the_wai_sr_item_by_item(wai_sr_folder):
    spec = load_spec("alliance_latent")
    frame = build_frame(load_study(wai_sr_folder))
    data = prepare_latent(spec, frame)
    assert data.subscales == ("goal", "bond", "task")
    assert data.items == tuple(c for s in data.subscales for c in WAI_SR.items(s))
    assert data.item_subscale.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # every rated item of every session is counted once, a reversed one turned
    rated = frame.sessions[list(data.items)].notna().sum().to_numpy()
    np.testing.assert_array_equal(data.counts.sum(axis=(1, 2)), rated)


def test_the_latent_design_step_refuses_a_declared_instrument(prescored_study):
    spec = load_spec("alliance_latent")
    with pytest.raises(DesignError, match=r"spec 'alliance_latent' \(latent family\)"):
        prepare_latent(spec, build_frame(prescored_study))


def test_one_integer_1_to_5_item_per_subscale_passes_the_graded_check(tmp_path):
    sessions = _tiny_sessions().rename(columns={"wai_goal": "goal_item", "wai_bond": "bond_item"})
    toml = (
        '[alliance]\nlabel = "Session alliance"\nrange = [1, 5]\n'
        '[alliance.subscales]\ngoal = ["goal_item"]\nbond = ["bond_item"]\n'
    )
    study = load_study(_tiny(tmp_path, toml, sessions))
    assert study.alliance.single_ratings_1_to_5
    frame = build_frame(study)
    require_integer_ratings(load_spec("alliance_latent"), frame)  # passes
    assert str(frame.sessions["wai_goal"].dtype) == "Int64"
    default = build_frame(load_study(_tiny(tmp_path / "default", "")))
    pd.testing.assert_frame_equal(frame.clients, default.clients)
    pd.testing.assert_frame_equal(frame.sessions, default.sessions)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------
@st.composite
def _instrument_and_ratings(draw):
    low = draw(st.sampled_from([0, 1]))
    high = low + draw(st.sampled_from([4, 6, 10]))
    sizes = [draw(st.integers(1, 4)) for _ in range(3)]
    names = {
        s: tuple(f"{s}_{k}" for k in range(n))
        for s, n in zip(("goal", "bond", "task"), sizes, strict=True)
    }
    columns = [c for items in names.values() for c in items]
    reverse = tuple(c for c in columns if draw(st.booleans()) and c.endswith("_0"))
    instrument = AllianceInstrument(
        "", "X", float(low), float(high), "items", tuple(names.items()), reverse=reverse
    )
    n = draw(st.integers(1, 12))
    cells = st.one_of(st.none(), st.integers(low, high))
    rows = draw(
        st.lists(
            st.lists(cells, min_size=len(columns), max_size=len(columns)), min_size=n, max_size=n
        )
    )
    table = pd.DataFrame(rows, columns=columns, dtype="float64")
    return instrument, table


@settings(max_examples=60, deadline=None)
@given(_instrument_and_ratings())
def test_a_session_score_is_the_mean_of_its_rated_items_on_the_declared_scale(case):
    instrument, table = case
    scores, partial = session_scores(table, instrument)
    for s in instrument.measured:
        items = list(instrument.items(s))
        values = table[items].copy()
        for c in instrument.reverse:
            if c in values:
                values[c] = instrument.low + instrument.high - values[c]
        rated = values.notna().sum(axis=1).to_numpy()
        got = scores[s].to_numpy(float)
        assert np.array_equal(np.isnan(got), rated == 0)
        with np.errstate(invalid="ignore"):
            expected = np.nansum(values.to_numpy(), axis=1) / np.where(rated, rated, 1)
        np.testing.assert_allclose(got[rated > 0], expected[rated > 0])
        assert ((got[rated > 0] >= instrument.low) & (got[rated > 0] <= instrument.high)).all()
        if len(items) > 1:
            assert partial[s] == int(((rated > 0) & (rated < len(items))).sum())
        else:
            assert s not in partial


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-50, 50, allow_nan=False),
    st.floats(0.5, 100, allow_nan=False),
    st.floats(0.1, 50, allow_nan=False),
)
def test_alliance_priors_keep_the_prior_of_a_change_across_the_whole_scale(low, width, mu_b_sd):
    instrument = AllianceInstrument("", "X", low, low + width, "subscales", (("goal", ("g",)),))
    from alliance_bayes.spec import scale_alliance_priors

    priors = scale_alliance_priors(PriorSpec(mu_b_sd=mu_b_sd), instrument.prior_factor)
    # slope × width: the outcome change from one end of the scale to the other
    assert priors.mu_b_sd * width == pytest.approx(mu_b_sd * 4)
    assert priors.intercept_sd == PriorSpec().intercept_sd


def test_the_report_says_which_instrument_and_how_its_priors_were_scaled():
    from alliance_bayes.report.bundle import _clients_section

    record = SHIPPED["srs"].to_dict() | {"partially_rated_sessions": {"goal": 0, "bond": 3}}
    meta = {"exclusions": {"clients_in_data": 10}, "scales": {"alliance_instrument": record}}
    text = "\n".join(_clients_section(meta))
    assert "Alliance instrument declared by the study: SRS 0–10 (goal: srs_goals;" in text
    assert "in the study: bond 3." in text
    assert "times 0.4 (4 over the width of the SRS 0–10 scale)" in text
    assert "Alliance instrument" not in "\n".join(_clients_section({"exclusions": {"a": 1}}))


def test_a_study_with_a_declared_instrument_is_never_told_to_use_the_contract_items():
    """A near miss of a contract item column is suggested only when the study takes those
    columns: with a declared instrument the suggestions come from its own columns."""
    from alliance_bayes.data.contract import session_columns, suggest_column

    assert "'wai_goal'" in suggest_column("wai_gaol", "sessions")
    assert "wai_goal" not in suggest_column("wai_gaol", "sessions", session_columns(WAI_SR))
    assert "'wai_sr_4'" in suggest_column("WAI-SR_4", "sessions", session_columns(WAI_SR))
