"""A study's own provider types: declared, loaded, turned into care types, and modelled.

The shipped study relabelled (every fifth provider a psychiatrist) is a three-type study whose
clients saw every combination but all three types; its care types, reference and the averaged-
score model's coordinates follow from the declaration alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from alliance_bayes.data.care import CareTypes, parse_provider_types
from alliance_bayes.data.contract import DataContractError
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.write import write_study
from alliance_bayes.errors import DesignError
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.collapsed import fixed_design
from alliance_bayes.model.regression.estimands import care_reference, compute_estimands
from alliance_bayes.spec import load_spec

THREE = ["therapist", "coach", "psychiatrist"]


@pytest.fixture(scope="module")
def three_types(shipped_study) -> RawStudy:
    providers = shipped_study.providers.copy()
    providers.loc[providers.index[::5], "provider_type"] = "psychiatrist"
    return RawStudy.from_frames(
        providers, shipped_study.clients, shipped_study.sessions, provider_types=THREE
    )


def _seen(study: RawStudy) -> pd.Series:
    """Each client's set of provider types, counted from the raw tables (not the frame)."""
    kind = dict(zip(study.providers["provider_id"], study.providers["provider_type"], strict=True))
    s = study.sessions.assign(kind=study.sessions["provider_id"].map(kind))
    return s.groupby("client_id")["kind"].agg(lambda k: frozenset(k))


def test_care_types_are_the_combinations_the_clients_saw(three_types):
    frame = build_frame(three_types)
    seen = _seen(three_types)
    expected = {
        "_and_".join(t for t in THREE if t in kinds): n for kinds, n in seen.value_counts().items()
    }
    assert frame.clients["care_type"].astype(str).value_counts().to_dict() == expected
    # single types first in declared order, then pairs, each in declared order
    order = ["therapist", "coach", "psychiatrist", "therapist_and_coach"]
    order += [
        "therapist_and_psychiatrist",
        "coach_and_psychiatrist",
        "therapist_and_coach_and_psychiatrist",
    ]
    assert list(frame.care_types) == [c for c in order if c in expected]
    # no reference declared: the largest group
    assert frame.care_reference == max(expected, key=expected.get)
    assert frame.care_contrasts == tuple(
        f"{c}-{frame.care_reference}" for c in frame.care_types if c != frame.care_reference
    )
    assert frame.provider_types == tuple(THREE)
    assert "psychiatrist" in frame.summary()


def test_without_coach_only_clients_the_largest_group_is_the_reference(shipped_study):
    """Every provider a therapist: no coach-only client, so contrasts against coach would be
    against an empty group (a ridge with the intercept); the largest group, therapist, is the
    reference instead, and a declared reference that no client has is refused. The care types
    and provider types without clients or providers are no levels: their contrasts, slopes and
    SDs would be the prior alone."""
    providers = shipped_study.providers.assign(provider_type="therapist")
    study = RawStudy.from_frames(providers, shipped_study.clients, shipped_study.sessions)
    frame = build_frame(study)
    assert frame.care_types == ("therapist",) == frame.provider_types
    assert frame.care_reference == "therapist"
    assert frame.care_contrasts == () == frame.provider_contrasts
    declared = RawStudy.from_frames(
        providers, shipped_study.clients, shipped_study.sessions, care_reference="coach"
    )
    with pytest.raises(DataContractError, match="some client has \\(therapist\\), got 'coach'"):
        build_frame(declared)


def test_the_contract_default_keeps_therapist_coach_both(shipped_study):
    frame = build_frame(shipped_study)
    assert frame.care_types == ("therapist", "coach", "both")
    assert frame.care_reference == "coach"
    assert frame.care_contrasts == ("therapist-coach", "both-coach")
    assert CareTypes().name({"coach", "therapist"}) == "both"


def test_a_declared_reference_is_used_and_one_no_client_has_is_refused(shipped_study, three_types):
    ref = RawStudy.from_frames(
        three_types.providers,
        shipped_study.clients,
        shipped_study.sessions,
        provider_types=THREE,
        care_reference="therapist",
    )
    frame = build_frame(ref)
    assert frame.care_reference == "therapist"
    assert frame.care_contrasts[0] == "coach-therapist"
    bad = RawStudy.from_frames(
        three_types.providers,
        shipped_study.clients,
        shipped_study.sessions,
        provider_types=THREE,
        care_reference="therapist_and_coach_and_psychiatrist",
    )
    # no client saw all three types in this study
    assert "therapist_and_coach_and_psychiatrist" not in build_frame(three_types).care_types
    with pytest.raises(DataContractError, match="a reference care type that some client has"):
        build_frame(bad)
    with pytest.raises(DataContractError, match="care_reference: expected one of the care types"):
        RawStudy.from_frames(
            three_types.providers,
            shipped_study.clients,
            shipped_study.sessions,
            provider_types=THREE,
            care_reference="both",
        )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ([], "a list of one or more names"),
        (["therapist", "Coach"], "'Coach' is not a lower-case name"),
        (["therapist", "both"], "'both' is reserved"),
        (["peer_and_coach", "coach"], "contains '_and_'"),
        (["coach", "coach", "peer"], "'coach' is listed twice"),
        ("therapist", "a list of one or more names"),
    ],
)
def test_malformed_provider_types_are_refused_with_the_reason(raw, words):
    types, problems = parse_provider_types(raw)
    assert types is None
    assert len(problems) == 1 and words in problems[0], problems


def test_study_toml_declares_the_types_and_every_problem_is_reported(tmp_path, three_types):
    folder = tmp_path / "study"
    st = three_types
    write_study(folder, st.providers, st.clients, st.sessions, provider_types=THREE)
    (folder / "study.toml").write_text('provider_types = ["therapist", "coach", "psychiatrist"]\n')
    loaded = load_study(folder)
    assert loaded.care.provider_types == tuple(THREE)
    assert build_frame(loaded).provider_types == tuple(THREE)
    # the same files without the declaration: the rows of the third type are named
    (folder / "study.toml").unlink()
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    message = str(err.value)
    assert "providers.csv" in message and "provider_type" in message
    assert "got 'psychiatrist'" in message and "provider_types = [" in message
    # a malformed declaration and a bad reference are reported together
    (folder / "study.toml").write_text(
        'provider_types = ["therapist", "Coach"]\ncare_reference = "nobody"\nage_range = [5]\n'
    )
    with pytest.raises(DataContractError) as err:
        load_study(folder)
    message = str(err.value)
    assert "'Coach' is not a lower-case name" in message and "age_range" in message


@pytest.fixture(scope="module")
def three_type_design(three_types):
    return design_of(load_spec("who5_change"), three_types)


def test_the_default_model_builds_over_the_declared_types(three_type_design):
    spec = load_spec("who5_change")
    design = three_type_design
    frame = design.frame
    model = family_of(spec).build(spec, design)
    assert model.coords["care_type"] == frame.care_types
    assert model.coords["care_contrast"] == frame.care_contrasts
    assert model.coords["provider_type"] == tuple(THREE)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        point = model.initial_point()
        logps = model.point_logps(point)
    assert all(math.isfinite(v) for v in logps.values()), logps
    assert point["b_care"].shape == (len(frame.care_contrasts),)
    assert design.scales()["care_reference"] == frame.care_reference


def test_the_reference_care_type_has_no_intercept_of_its_own(three_type_design):
    """The collapsed form's fixed design: one dummy per care type but the reference, whose
    clients' rows are zero in every dummy."""
    design = three_type_design
    spec = load_spec("who5_change")
    x = fixed_design(spec, design)
    n_care = len(design.care_types)
    n_fixed = 2 + design.covariates.shape[1]
    dummies = x[:, n_fixed : n_fixed + n_care - 1]
    at_reference = design.care_index == design.reference_index
    assert np.all(dummies[at_reference] == 0)
    others = [c for c in range(n_care) if c != design.reference_index]
    for j, c in enumerate(others):
        np.testing.assert_array_equal(dummies[:, j], (design.care_index == c).astype(float))


def _posterior(cares: tuple[str, ...], reference: str, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    contrasts = [f"{c}-{reference}" for c in cares if c != reference]
    shape = (2, 50)
    return xr.Dataset(
        {
            "b": (
                ("chain", "draw", "care_type", "subscale", "level"),
                rng.normal(size=(*shape, len(cares), 2, 2)),
            ),
            "b_care": (
                ("chain", "draw", "care_contrast"),
                rng.normal(size=(*shape, len(contrasts))),
            ),
        },
        coords={
            "care_type": list(cares),
            "subscale": ["goal", "bond"],
            "level": ["within", "between"],
            "care_contrast": contrasts,
        },
    )


def test_estimands_contrast_every_care_type_with_the_reference():
    cares = ("therapist", "coach", "psychiatrist", "coach_and_psychiatrist")
    post = _posterior(cares, "coach")
    assert care_reference(post) == "coach"
    est = compute_estimands(post, outcome_units="WHO-5 points")
    for c in ("therapist", "psychiatrist", "coach_and_psychiatrist"):
        name = f"b_goal_within[{c}-coach]"
        expected = post["b"].sel(care_type=c, subscale="goal", level="within") - post["b"].sel(
            care_type="coach", subscale="goal", level="within"
        )
        np.testing.assert_allclose(est[name].values, expected.values)
        assert f"b_care[{c}-coach]" in est
    assert "b_goal_within[coach-coach]" not in est
    # another reference (declared, or the largest group) names the contrasts; the design's
    # record of it comes first
    other = _posterior(cares, "psychiatrist")
    assert care_reference(other) == "psychiatrist"
    assert care_reference(other, {"care_reference": "therapist"}) == "therapist"
    assert care_reference(other.drop_vars("b_care")) == "coach"  # the contract's
    est = compute_estimands(other, outcome_units="WHO-5 points")
    assert "b_bond_between[coach-psychiatrist]" in est
    assert not any(n.endswith("-coach]") for n in est)


def test_predict_takes_a_new_provider_of_a_declared_type(three_type_design):
    from alliance_bayes.fit_verbs import new_client_data

    spec = load_spec("who5_change")
    design = three_type_design
    new = pd.DataFrame(
        {
            "provider": ["new"],
            "provider_type": ["psychiatrist"],
            "who5_baseline": [32.0],
            **{c: [float(design.frame.clients[c].median())] for c in design.covariate_names},
            **{f"alliance_{s}": [4.0] for s in design.subscales},
        }
    )
    data = new_client_data(spec, design, new)
    assert data.care_types[int(data.care_index[0])] == "psychiatrist"
    assert data.frame.provider_types[int(data.provider_type_index[0])] == "psychiatrist"
    with pytest.raises(DesignError, match="therapist or coach or psychiatrist"):
        new_client_data(spec, design, new.assign(provider_type="peer"))


def test_the_numpy_predictor_puts_each_care_intercept_on_its_own_care_type(three_type_design):
    """The NumPy twin of the linear predictor (predictions, K-fold, LOO comparison, imputation):
    with every other term 0, each client's mean is its care type's intercept, 0 at the
    reference; a declared reference in another position moves the zero with it."""
    from alliance_bayes.model.regression.predict import linear_predictor

    spec = load_spec("who5_change")
    design = three_type_design
    n_care = len(design.care_types)
    contrasts = 10.0 * np.arange(1, n_care)  # distinct values, one per contrast

    def posterior(b_care):
        zeros = lambda *shape: np.zeros((1, 2, *shape))  # noqa: E731
        return xr.Dataset(
            {
                "alpha": (("chain", "draw"), zeros()),
                "b_baseline": (("chain", "draw"), zeros()),
                "b_covariate_z": (
                    ("chain", "draw", "covariate"),
                    zeros(design.covariates.shape[1]),
                ),
                "b_care": (
                    ("chain", "draw", "care_contrast"),
                    np.broadcast_to(b_care, (1, 2, n_care - 1)),
                ),
                "b": (
                    ("chain", "draw", "care_type", "subscale", "level"),
                    zeros(n_care, len(design.subscales), 2),
                ),
            }
        )

    mu = linear_predictor(spec, design, posterior(contrasts))
    expected = np.insert(contrasts, design.reference_index, 0.0)[design.care_index]
    np.testing.assert_allclose(mu[0], expected)
    assert (mu[0][design.care_index == design.reference_index] == 0).all()
