"""A study declares its own outcome instrument (GAD-7) in study.toml, and a spec models it."""

from __future__ import annotations

import numpy as np
import pytest
from tests.data_builders import add_column, tiny_tables, write_csv_study

from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.instruments import SHIPPED
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.errors import DesignError
from alliance_bayes.model.regression.design import prepare
from alliance_bayes.spec import PriorSpec, parse_spec

GAD7_TOML = """
ignore = ["notes"]

[outcomes.gad7]
label = "GAD-7"
range = [0, 21]
better = "lower"
step = 1
cutoff = 10
"""

SPEC = """
name = "anxiety_change"
outcome = "gad7_followup"
likelihood = "censored_normal"

[predictors]
covariates = ["age"]
alliance = "composite"

[hierarchy]
care_type_pooling = false
care_type_intercepts = false
provider_intercepts = false
provider_slopes = false

[priors]
b_baseline_sd = 1.0
sigma_sd = 5.0

[sampler]
chains = 2
draws = 300
tune = 300
"""


def _gad7_study(tmp_path, baseline, followup):
    tables = tiny_tables()
    add_column(tables["clients"], "gad7_baseline", baseline)
    add_column(tables["clients"], "gad7_followup", followup)
    folder = write_csv_study(tmp_path, tables)
    (folder / "study.toml").write_text(GAD7_TOML, encoding="utf-8")
    return folder


def test_declared_columns_load_and_reach_the_frame(tmp_path):
    folder = _gad7_study(tmp_path, ["12", "15", "3", "21", ""], ["8", "", "0", "20", "4"])
    study = load_study(folder)
    assert study.outcomes["gad7"].range == (0.0, 21.0)
    assert study.clients["gad7_baseline"].tolist()[:4] == [12.0, 15.0, 3.0, 21.0]
    frame = build_frame(study)
    assert "gad7_change" in frame.clients
    assert frame.outcomes_declared_in.endswith("study.toml")


def test_range_violations_named_with_file_column_and_row(tmp_path):
    folder = _gad7_study(tmp_path, ["12", "22", "3", "-1", ""], ["8", "", "2.5", "20", "4"])
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert "clients.csv" in text
    assert "gad7_baseline" in text and "a GAD-7 score" in text and "between 0 and 21" in text
    assert "gad7_followup" in text and "in steps of 1" in text  # 2.5 is off the grid
    # every problem at once: both columns, rows 2 and 4 of the baseline (data rows from 1)
    assert len(err.value.problems) == 2


def test_undeclared_column_still_refused(tmp_path):
    tables = tiny_tables()
    add_column(tables["clients"], "gad7_baseline", ["1", "2", "3", "4", "5"])
    folder = write_csv_study(tmp_path, tables)
    (folder / "study.toml").write_text('ignore = ["notes"]\n', encoding="utf-8")
    with pytest.raises(DataContractError, match="gad7_baseline"):
        load_study(folder)


def test_bad_declaration_lists_every_problem(tmp_path):
    folder = _gad7_study(tmp_path, ["1"] * 5, ["1"] * 5)
    (folder / "study.toml").write_text(
        '[outcomes.gad7]\nrange = [21, 0]\nbetter = "down"\n'
        '[outcomes.anx]\nlabel = "X"\nreliability = 0.8\n',
        encoding="utf-8",
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    text = str(err.value)
    assert "[outcomes.gad7].range" in text and "[outcomes.gad7].better" in text
    assert "[outcomes.anx]: ['range', 'better'] required" in text


def test_a_reliability_of_ones_own_for_a_shipped_instrument_needs_its_source(tmp_path):
    folder = _gad7_study(tmp_path, ["1"] * 5, ["1"] * 5)
    (folder / "study.toml").write_text(
        'ignore = ["notes"]\n[outcomes.gad7]\nreliability = 0.83\n', encoding="utf-8"
    )
    with pytest.raises(DataContractError, match=r"reliability of your own needs its source"):
        load_study(folder)
    (folder / "study.toml").write_text(
        'ignore = ["notes"]\n[outcomes.gad7]\nreliability = 0.83\nsource = "Our pilot, n = 80"\n',
        encoding="utf-8",
    )
    gad7 = load_study(folder).outcomes["gad7"]
    assert (gad7.reliability, gad7.source) == (0.83, "Our pilot, n = 80")


def _simulated_gad7(seed: int = 5, slope: float = -2.5) -> RawStudy:
    """The small simulated study with GAD-7 scores whose follow-up falls with the alliance."""
    sim = simulate_study(SimulationConfig.small(), seed=seed)
    rng = np.random.default_rng(seed)
    ratings = sim.sessions.assign(
        a=sim.sessions[["wai_goal", "wai_bond"]].astype(float).mean(axis=1)
    )
    alliance = ratings.groupby("client_id")["a"].mean()
    clients = sim.clients.copy()
    a = alliance.reindex(clients["client_id"]).to_numpy()
    base = np.clip(np.round(rng.normal(12, 4, len(clients))), 0, 21)
    follow = 4 + 0.5 * base + slope * (a - np.nanmean(a)) + rng.normal(0, 2.5, len(clients))
    clients["gad7_baseline"] = base
    clients["gad7_followup"] = np.clip(np.round(follow), 0, 21)
    return RawStudy.from_frames(
        sim.providers, clients, sim.sessions, outcomes={"gad7": SHIPPED["gad7"]}
    )


def test_design_follows_the_declared_range():
    study = _simulated_gad7()
    spec = parse_spec(SPEC, "anxiety.toml")
    data = prepare(spec, build_frame(study))
    assert spec.baseline == "gad7_baseline"
    assert spec.outcome_range == (0.0, 21.0)
    assert spec.outcome_units == "GAD-7 points"
    assert spec.effect_units.startswith("GAD-7 points per 1 point of alliance")
    assert spec.rope == pytest.approx(0.42)  # 2% of the range, as 2 of WHO-5's 100
    default = PriorSpec()
    # unstated outcome-point scales: the WHO-5 defaults times 21/100; stated ones as written
    assert spec.priors.intercept_sd == pytest.approx(default.intercept_sd * 0.21)
    assert spec.priors.b_alliance_sd == pytest.approx(10.0 * 0.21)
    assert spec.priors.sd_provider_sd == pytest.approx(5.0 * 0.21)
    assert spec.priors.sigma_sd == 5.0
    assert spec.priors.b_baseline_sd == 1.0 and spec.priors.lkj_eta == default.lkj_eta
    assert spec.to_dict()["priors"]["intercept_sd"] == pytest.approx(3.15)
    assert data.y.min() >= 0 and data.y.max() <= 21
    assert np.array_equal(data.y, data.frame.clients["gad7_followup"].to_numpy())


def test_builtin_outcomes_unchanged():
    who5 = parse_spec('name = "m"\noutcome = "who5_followup"\n')
    assert who5.priors == PriorSpec() and who5.rope == 2.0
    assert who5.outcome_range == (0.0, 100.0) and who5.outcome_units == "WHO-5 points"
    assert who5.outcome_label == "WHO-5 follow-up (0–100)"


def test_undeclared_outcome_refused_at_design_time(small_study_dir):
    spec = parse_spec(SPEC.replace("gad7", "bai"), "anxiety.toml")
    with pytest.raises(DesignError) as err:
        prepare(spec, build_frame(load_study(small_study_dir)))
    text = str(err.value)
    assert "'bai_followup' is not declared" in text
    assert "no study.toml" in text and "[outcomes.bai]" in text
    assert "who5_followup" in text and "phq9_followup" in text


def test_the_step_probability_measure_reads_a_declared_outcomes_step_and_range(monkeypatch):
    """The comparison measure of a declared outcome: half its declared step (GAD-7 sums move in
    ones), its range's ends as the censoring points, and its label in the table's words."""
    from alliance_bayes.checks.compare import STEP, measure_text
    from alliance_bayes.data import instruments
    from alliance_bayes.model.regression.predict import step_half_width

    assert step_half_width("who5_followup") == 2.0 and step_half_width("phq9_followup") == 0.5
    monkeypatch.setitem(instruments._DECLARED, "gad7", SHIPPED["gad7"])
    assert step_half_width("gad7_followup") == SHIPPED["gad7"].step / 2 == 0.5
    spec = parse_spec('name = "g"\noutcome = "gad7_followup"\n')
    text = measure_text(STEP, [spec])
    assert "GAD-7 follow-up (0–21)" in text and "(y − 0.5, y + 0.5]" in text
    assert "at 0 the mass up to 0.5, at 21 the mass above 20.5" in text
    monkeypatch.delitem(instruments._DECLARED, "mood", raising=False)
    with pytest.raises(DesignError, match="'mood_followup' is declared by no study loaded"):
        step_half_width("mood_followup")


def test_a_rope_inherited_from_a_spec_of_another_outcome_is_not_kept(monkeypatch):
    """``extends = "who5_change"`` with a GAD-7 outcome: who5_change's ROPE of 2 WHO-5 points
    would be a tenth of GAD-7's range; the variant takes its own outcome's default (2% of the
    range), unless it states one."""
    from alliance_bayes.data import instruments
    from alliance_bayes.spec import ROPE_SHARE_OF_RANGE

    monkeypatch.setitem(instruments._DECLARED, "gad7", SHIPPED["gad7"])
    variant = parse_spec('extends = "who5_change"\noutcome = "gad7_followup"\n', source="v.toml")
    assert variant.rope == pytest.approx(ROPE_SHARE_OF_RANGE * 21) != 2.0
    assert variant.hypotheses.tests  # the statements are kept: they name estimands, not points
    stated = parse_spec(
        'extends = "who5_change"\noutcome = "gad7_followup"\n[hypotheses]\nrope = 0.5\n',
        source="v.toml",
    )
    assert stated.rope == 0.5
    assert parse_spec('extends = "who5_change"\nname = "w"\n', source="w.toml").rope == 2.0
