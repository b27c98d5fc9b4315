"""A study that measured no WHO-5: its clients table leaves both WHO-5 columns out.

The worked example without its WHO-5 columns (GAD-7 and PHQ-9 remain) loads, its frame says so,
the specs of its own outcomes build, and a WHO-5 spec is refused naming the outcomes it has.
"""

from __future__ import annotations

import pytest

from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame
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
