"""A study that measured no WHO-5: its clients table leaves both WHO-5 columns out.

The worked example without its WHO-5 columns (GAD-7 and PHQ-9 remain) loads, its frame says so,
the specs of its own outcomes build, and a WHO-5 spec is refused naming the outcomes it has.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame, elevated_at_baseline
from alliance_bayes.data.instruments import Instrument
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.errors import DesignError
from alliance_bayes.fitting import design_of
from alliance_bayes.spec import load_spec
from conftest import REPO

EXAMPLE = REPO / "data" / "example_wai_sr"


@pytest.fixture(scope="module")
def example() -> RawStudy:
    return load_study(EXAMPLE)


def _without(example: RawStudy, columns: list[str]) -> RawStudy:
    return RawStudy.from_frames(
        example.providers,
        example.clients.drop(columns=columns),
        example.sessions,
        outcomes=example.outcomes,
        covariates=example.covariates,
        alliance=example.alliance,
        provider_types=example.care.provider_types,
        care_reference=example.care.reference,
    )


@pytest.fixture(scope="module")
def no_who5(example) -> RawStudy:
    return _without(example, ["who5_baseline", "who5_followup"])


def test_a_study_without_who5_loads_with_its_other_outcomes(no_who5, example):
    assert no_who5.clients["who5_baseline"].isna().all()
    assert no_who5.clients["who5_followup"].isna().all()
    # nothing else changes
    for column in ("gad7_baseline", "gad7_followup", "phq9_baseline", "age"):
        assert no_who5.clients[column].equals(example.clients[column]), column
    frame = build_frame(no_who5)
    assert "WHO-5: not measured" in frame.summary()
    assert frame.clients["who5_change"].isna().all()


def test_its_own_outcomes_build_and_a_who5_spec_is_refused_naming_them(no_who5, example):
    spec = load_spec(EXAMPLE / "gad7_alliance.toml")
    # the GAD-7 model is the same with or without the WHO-5 columns
    with_who5, without = design_of(spec, example), design_of(spec, no_who5)
    assert without.n_clients == with_who5.n_clients
    assert (without.y == with_who5.y).all()
    with pytest.raises(DesignError) as err:
        design_of(load_spec("who5_change"), no_who5)
    message = str(err.value)
    assert "'who5_followup', absent from the data" in message
    assert "gad7_followup" in message and "phq9_followup" in message


def test_a_who5_follow_up_without_its_baseline_is_still_refused(example):
    with pytest.raises(DataContractError, match="who5_baseline"):
        _without(example, ["who5_baseline"])


def test_it_is_written_and_loads_back_without_who5(no_who5, tmp_path):
    from alliance_bayes.data.write import write_study

    write_study(tmp_path / "study", no_who5)
    again = load_study(tmp_path / "study")
    assert again.clients["who5_baseline"].isna().all()
    assert again.sha256 == no_who5.sha256
    assert again.care == no_who5.care and again.outcomes == no_who5.outcomes


# --- the ratings family's elevated sample ----------------------------------------------------------
GAD7 = Instrument("gad7", "GAD-7", 0.0, 21.0, "lower", cutoff=10.0)


@pytest.fixture(scope="module")
def shipped_without_who5() -> RawStudy:
    """The shipped study (single ratings, which the ratings family takes) without WHO-5, with a
    declared GAD-7 whose scores are the PHQ-9's capped at 21."""
    shipped = load_study(REPO / "data" / "synthetic")
    clients = shipped.clients.drop(columns=["who5_baseline", "who5_followup"])
    for when in ("baseline", "followup"):
        clients[f"gad7_{when}"] = clients[f"phq9_{when}"].clip(upper=21)
    return RawStudy.from_frames(
        shipped.providers, clients, shipped.sessions, outcomes={"gad7": GAD7}
    )


def _ratings(**data):
    return load_spec("alliance_ratings", data={"sample": "elevated", **data})


def test_ratings_elevated_sample_without_who5_is_refused_naming_the_measured_outcomes(
    shipped_without_who5,
):
    with pytest.raises(DesignError) as err:
        design_of(_ratings(), shipped_without_who5)
    message = str(err.value)
    assert "did not measure WHO-5 ('who5') at baseline" in message
    assert "PHQ-9 ('phq9'), GAD-7 ('gad7')" in message
    assert "elevated_by = 'phq9'" in message and "sample = 'all'" in message


def _not_elevated(design) -> int:
    return design.exclusions["not_elevated_at_baseline"]


def test_ratings_elevated_sample_by_phq9_keeps_the_phq9_elevated(shipped_without_who5):
    design = design_of(_ratings(elevated_by="phq9", phq9_cutoff=12.0), shipped_without_who5)
    baseline = shipped_without_who5.clients["phq9_baseline"]
    assert _not_elevated(design) == len(baseline) - int((baseline >= 12).sum())
    kept = design.frame.clients["phq9_baseline"]
    assert (kept >= 12).all() and kept.notna().all()


def test_ratings_elevated_sample_by_a_declared_outcome_takes_its_cutoff(shipped_without_who5):
    # a rule naming a declared outcome: baseline at or above the cut-off, since lower is better
    spec = _ratings(elevated_by="gad7")
    design = design_of(spec, shipped_without_who5)
    baseline = shipped_without_who5.clients["gad7_baseline"]
    assert _not_elevated(design) == len(baseline) - int((baseline >= 10).sum())
    assert (design.frame.clients["gad7_baseline"] >= 10).all()
    uncut = replace(GAD7, cutoff=None)
    frame = replace(build_frame(shipped_without_who5), outcomes={"gad7": uncut})
    with pytest.raises(DesignError, match=r"\[outcomes.gad7\] \(GAD-7\) declares no cutoff"):
        design_of(spec, frame)


def test_every_family_selects_the_elevated_by_a_declared_outcomes_cutoff(shipped_without_who5):
    """The regression family on a declared outcome, its sample chosen by that outcome's declared
    cut-off; the frame states the rule; a rule naming an outcome nobody declared is refused."""
    spec = load_spec(
        "who5_change", outcome="gad7_followup", data={"sample": "elevated", "elevated_by": "gad7"}
    )
    design = design_of(spec, shipped_without_who5)
    clients = shipped_without_who5.clients
    elevated = clients["gad7_baseline"] >= 10
    assert design.exclusions["not_elevated_at_baseline"] == int((~elevated).sum())
    assert design.n_clients == int((elevated & clients["gad7_followup"].notna()).sum())
    frame = build_frame(shipped_without_who5, elevated_by="gad7")
    assert frame.elevated_rule == "GAD-7 baseline >= 10"
    assert frame.clients["elevated"].sum() == elevated.sum()
    with pytest.raises(DesignError, match=r"elevated_by = 'core10'.*declares \('gad7'\)"):
        build_frame(shipped_without_who5, elevated_by="core10")
    higher = Instrument("vitality", "Vitality", 0.0, 10.0, "higher", cutoff=3.0)
    flag, text = elevated_at_baseline(
        pd.DataFrame({"vitality_baseline": [2.0, 3.0, 4.0, None]}),
        "vitality",
        outcomes={"vitality": higher},
    )
    assert flag.tolist() == [True, True, False, False] and text == "Vitality baseline <= 3"


def test_ratings_elevated_sample_with_who5_is_the_who5_screen():
    shipped = load_study(REPO / "data" / "synthetic")
    design = design_of(_ratings(who5_cutoff=32.0), shipped)
    baseline = shipped.clients["who5_baseline"]
    assert _not_elevated(design) == len(baseline) - int((baseline <= 32).sum())
    assert (design.frame.clients["who5_baseline"] <= 32).all()


def test_a_rule_the_study_cannot_apply_is_refused_only_where_the_sample_uses_it(
    shipped_without_who5,
):
    """elevated_by naming an outcome the study does not declare: a spec taking every client
    builds; one selecting the elevated is refused naming the spec and the outcomes measured."""
    spec = load_spec(
        "who5_change", outcome="gad7_followup", data={"sample": "all", "elevated_by": "core10"}
    )
    assert design_of(spec, shipped_without_who5).n_clients > 0
    elevated = replace(spec, data=replace(spec.data, sample="elevated"))
    with pytest.raises(DesignError) as err:
        design_of(elevated, shipped_without_who5)
    message = str(err.value)
    assert f"spec {spec.name!r}" in message and "'core10' (no such outcome)" in message
    assert "GAD-7 ('gad7')" in message and "elevated_by = 'phq9'" in message


def test_the_run_records_the_elevated_rule_and_the_report_shows_it(shipped_without_who5):
    """A declared outcome's cut-off lives in study.toml, which the data hash does not cover: the
    rule that selected the sample goes into run.json and the report's Clients table."""
    from alliance_bayes.fitting import _run_metadata
    from alliance_bayes.inference import SamplerSettings
    from alliance_bayes.report.bundle import _clients_section

    spec = load_spec(
        "who5_change", outcome="gad7_followup", data={"sample": "elevated", "elevated_by": "gad7"}
    )
    design = design_of(spec, shipped_without_who5)
    meta = _run_metadata(spec, design, SamplerSettings(), {})
    assert meta["elevated_rule"] == "GAD-7 baseline >= 10"
    lines = _clients_section(meta)
    assert any("left out: not elevated at baseline [GAD-7 baseline >= 10]" in x for x in lines)
    every = load_spec("who5_change", outcome="gad7_followup")
    assert "elevated_rule" not in _run_metadata(
        every, design_of(every, shipped_without_who5), SamplerSettings(), {}
    )
