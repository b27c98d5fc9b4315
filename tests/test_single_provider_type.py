"""A study of one provider type (``provider_types = ["peer"]``): one care type, no care-type
contrasts and no provider-type shifts, in every family that builds from it.

The shipped study with every provider relabelled ``peer`` (or ``therapist``) and one type declared:
every client is then in the one care type, which is the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pymc as pm
import pytest

from alliance_bayes.data.care import CareTypes, parse_care, parse_provider_types
from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.write import write_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.ratings.design import ratings_scales
from alliance_bayes.model.ratings.estimands import compute_ratings_estimands
from alliance_bayes.spec import load_spec
from conftest import REPO


@pytest.fixture(autouse=True)
def quiet_blas():
    # compiling asks for a BLAS library once per process; where none is installed PyTensor says
    # so, which is about this machine, not about the model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        yield


@pytest.fixture(scope="module")
def shipped() -> RawStudy:
    return load_study(REPO / "data" / "synthetic")


def _one_type(study: RawStudy, name: str) -> RawStudy:
    providers = study.providers.assign(provider_type=name)
    return RawStudy.from_frames(providers, study.clients, study.sessions, provider_types=[name])


@pytest.fixture(scope="module")
def peer(shipped) -> RawStudy:
    return _one_type(shipped, "peer")


@pytest.mark.parametrize("types", [["therapist"], ["peer"]])
def test_one_declared_type_is_accepted(types):
    assert parse_provider_types(types) == (tuple(types), [])
    care, problems = parse_care(types, None)
    assert problems == [] and care == CareTypes(tuple(types))
    assert care.declared and care.possible() == tuple(types)
    # and may be declared the reference, the only care type there is
    assert parse_care(types, types[0]) == (CareTypes(tuple(types), types[0]), [])


def test_no_type_is_still_refused():
    types, problems = parse_provider_types([])
    assert types is None and "a list of one or more names" in problems[0]


def test_a_single_type_study_loads_from_its_folder(tmp_path, peer, shipped):
    folder = tmp_path / "peer"
    write_study(folder, peer)
    assert 'provider_types = ["peer"]' in (folder / "study.toml").read_text().splitlines()
    loaded = load_study(folder)
    assert loaded.care.provider_types == ("peer",)
    frame = build_frame(loaded)
    assert frame.provider_types == frame.care_types == ("peer",)
    assert frame.care_reference == frame.provider_reference == "peer"
    assert frame.care_contrasts == () and frame.provider_contrasts == ()
    assert (frame.clients["care_type"] == "peer").all()
    assert len(frame.clients) == len(shipped.clients)


def test_a_provider_of_another_type_is_refused_naming_the_row(shipped):
    providers = shipped.providers.assign(provider_type="peer")
    providers.loc[providers.index[3], "provider_type"] = "coach"
    with pytest.raises(DataContractError) as err:
        RawStudy.from_frames(providers, shipped.clients, shipped.sessions, provider_types=["peer"])
    message = str(err.value)
    assert (
        "provider_type" in message and "'coach'" in message and "provider_types declared" in message
    )


def _initial_logp(model) -> float:
    return float(model.compile_logp()(model.initial_point()))


def test_the_regression_design_has_no_care_contrast_and_a_finite_density(peer):
    spec = load_spec("who5_change")
    design = design_of(spec, peer)
    assert design.frame.care_types == ("peer",) and design.frame.care_contrasts == ()
    assert set(design.care_index.tolist()) == {0}
    model = family_of(spec).build(spec, design)
    assert tuple(model.coords["care_contrast"]) == ()
    assert tuple(model.coords["provider_type"]) == ("peer",)
    point = model.initial_point()
    assert "b_care" not in point  # no contrast, no variable: the care-type term is 0
    assert point["sd_provider_log__"].shape == (1,)
    assert np.isfinite(_initial_logp(model))


@pytest.fixture(scope="module")
def ratings(peer):
    spec = load_spec("alliance_ratings")
    design = design_of(spec, peer)
    return spec, design, family_of(spec).build(spec, design)


def test_the_ratings_design_has_no_care_contrast_nor_provider_shift(ratings):
    _, design, model = ratings
    assert design.care_contrasts == () and design.provider_contrasts == ()
    assert not design.provider_shift_is_scalar
    assert design.provider_type_design.shape == (len(design.frame.providers), 0)
    assert tuple(model.coords["care_contrast"]) == ()
    assert tuple(model.coords["provider_type_contrast"]) == ()
    point = model.initial_point()
    assert "b_care_logit" not in point and "provider_type_alliance_logit" not in point
    assert np.isfinite(_initial_logp(model))
    scales = ratings_scales(design)
    assert scales["care_share"] == {"peer": 1.0} and scales["provider_share"] == {"peer": 1.0}
    # the Priors table names no care-type or provider-type term; the contract's types keep theirs
    spec = ratings[0]
    slopes = [r.parameter for r in family_of(spec).prior_rows(spec, scales) if "β" in r.parameter]
    assert slopes == ["β (age per decade, male, baseline WHO-5 per 10)"]
    two = {
        **scales,
        "provider_types": ["therapist", "coach"],
        "care_types": ["therapist", "coach"],
    }
    assert (
        "γ (care type), δ_t (provider type)" in family_of(spec).prior_rows(spec, two)[2].parameter
    )


def test_the_ratings_estimands_of_one_type_have_no_contrast(ratings):
    _, design, model = ratings
    with model:
        draws = pm.sample_prior_predictive(
            draws=20,
            random_seed=5,
            var_names=[v.name for v in model.free_RVs + model.deterministics],
        )["prior"]
    prior = draws.to_dataset() if hasattr(draws, "to_dataset") else draws
    estimands = compute_ratings_estimands(prior, ratings_scales(design))
    names = list(estimands.data_vars)
    assert "alliance[peer]" in names
    # the only contrast left is a covariate's, male against not male
    assert [n for n in names if "-" in n] == ["alliance[male-not_male]"]
    assert not [n for n in names if "provider_type" in n]
    for name in ("alliance[peer]", "sd_provider_alliance", "icc_provider_alliance"):
        assert np.isfinite(estimands[name].values).all(), name
