"""A study under the contract's provider types (no ``provider_types`` declared) whose clients do
not all occur in every care type: the care types and provider types of the analysis are those
present, so that no contrast, slope or SD of an empty group (the prior alone) is reported.

Built from the shipped study: its first 400 clients with every provider relabelled a therapist
(one care type, one provider type), and the shipped study without its coach-only clients (two care
types, still both provider types).
"""

from __future__ import annotations

import warnings

import numpy as np
import pymc as pm
import pytensor
import pytest

from alliance_bayes.data.care import CARE_TYPES, CareTypes
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.model.regression.collapsed import fixed_design, is_collapsed, theta_draws
from alliance_bayes.spec import load_spec

#: Variables that carry a care-type contrast or a provider-type shift, in any family.
CONTRASTED = (
    "b_care",
    "b_care_logit",
    "provider_type_alliance",
    "provider_type_alliance_logit",
)


@pytest.fixture(autouse=True)
def quiet_blas():
    # compiling asks for a BLAS library once per process; where none is installed PyTensor says
    # so, which is about this machine, not about the model; the densities here are evaluated once,
    # so unoptimised compilation is enough
    with (
        warnings.catch_warnings(),
        pytensor.config.change_flags(mode="FAST_COMPILE"),
    ):
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        yield


def _subset(study: RawStudy, client_ids, providers=None) -> RawStudy:
    """``study`` with only the clients ``client_ids``, their sessions and their providers."""
    clients = study.clients[study.clients["client_id"].isin(set(client_ids))]
    sessions = study.sessions[study.sessions["client_id"].isin(set(client_ids))]
    providers = study.providers if providers is None else providers
    providers = providers[providers["provider_id"].isin(set(sessions["provider_id"]))]
    return RawStudy.from_frames(
        providers.reset_index(drop=True),
        clients.reset_index(drop=True),
        sessions.reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def therapists_only(shipped_study) -> RawStudy:
    """400 clients of the shipped study, every provider a therapist, no types declared."""
    ids = sorted(shipped_study.clients["client_id"])[:400]
    providers = shipped_study.providers.assign(provider_type="therapist")
    return _subset(shipped_study, ids, providers)


@pytest.fixture(scope="module")
def without_coach_only(shipped_study) -> RawStudy:
    """The shipped study less its coach-only clients."""
    frame = build_frame(shipped_study)
    # the frame's clients are the study's, in sorted client_id order
    ids = np.array(sorted(shipped_study.clients["client_id"]), dtype=object)
    keep = ids[(frame.clients["care_type"] != "coach").to_numpy()]
    return _subset(shipped_study, keep)


# ---- frame levels --------------------------------------------------------------------------------


def test_the_contract_levels_are_those_present():
    care = CareTypes()
    assert care.levels(["both", "therapist", "coach"]) == CARE_TYPES
    assert care.levels(["both", "therapist"]) == ("therapist", "both")  # the contract's order
    assert care.levels(["therapist"]) == ("therapist",)
    assert care.present(["coach", "therapist", "coach"]) == ("therapist", "coach")
    assert care.present(["therapist"]) == ("therapist",)


def test_a_therapists_only_study_has_one_care_type_and_one_provider_type(therapists_only):
    frame = build_frame(therapists_only)
    assert frame.care_types == ("therapist",) and frame.provider_types == ("therapist",)
    assert frame.care_reference == frame.provider_reference == "therapist"
    assert frame.care_contrasts == () and frame.provider_contrasts == ()
    assert list(frame.clients["care_type"].cat.categories) == ["therapist"]
    assert list(frame.providers["provider_type"].cat.categories) == ["therapist"]
    assert len(frame.clients) == 400 and (frame.clients["care_type"] == "therapist").all()
    summary = frame.summary()
    assert "coach" not in summary and "both" not in summary


def test_without_coach_only_clients_the_levels_follow_the_data(without_coach_only, shipped_study):
    full = build_frame(shipped_study).clients["care_type"].value_counts()
    frame = build_frame(without_coach_only)
    assert frame.care_types == ("therapist", "both")
    assert frame.provider_types == ("therapist", "coach")  # coaches still see the both clients
    counts = frame.clients["care_type"].value_counts()
    assert int(counts["therapist"]) == int(full["therapist"])
    assert int(counts["both"]) == int(full["both"])
    # no coach-only group: the reference is the larger of the two (as counted above)
    larger = "therapist" if full["therapist"] >= full["both"] else "both"
    assert frame.care_reference == larger
    other = "both" if larger == "therapist" else "therapist"
    assert frame.care_contrasts == (f"{other}-{larger}",)


def test_the_shipped_study_keeps_its_three_care_types(shipped_study):
    frame = build_frame(shipped_study)
    assert frame.care_types == CARE_TYPES and frame.provider_types == ("therapist", "coach")
    assert frame.care_reference == "coach"
    assert frame.care_contrasts == ("therapist-coach", "both-coach")


# ---- graphs --------------------------------------------------------------------------------------


def _build(name: str, study: RawStudy):
    spec = load_spec(name)
    design = design_of(spec, study)
    return design, family_of(spec).build(spec, design)


@pytest.mark.parametrize(
    "name", ["who5_change", "alliance_ratings", "alliance_latent_who5", "depression_course"]
)
def test_no_contrast_variables_and_a_finite_density(name, therapists_only):
    _, model = _build(name, therapists_only)
    named = {v.name for v in (*model.free_RVs, *model.deterministics)}
    assert not named & set(CONTRASTED)
    if "care_type" in model.coords:
        assert tuple(model.coords["care_type"]) == ("therapist",)
    if "provider_type" in model.coords:
        assert tuple(model.coords["provider_type"]) == ("therapist",)
    # no label of the analysis names an absent group
    labels = {str(x) for values in model.coords.values() for x in (values or ())}
    assert not {"coach", "both"} & labels and not any("-" in x for x in labels)
    point = model.initial_point()
    assert np.isfinite(float(model.compile_logp()(point)))


@pytest.mark.parametrize("name", ["who5_change", "alliance_ratings"])
def test_the_prior_predictive_runs(name, therapists_only):
    _, model = _build(name, therapists_only)
    with model:
        prior = pm.sample_prior_predictive(draws=5, random_seed=3)
    observed = {v.name for v in model.observed_RVs}
    assert observed and observed <= set(prior.prior_predictive.data_vars)
    for v in observed:
        assert np.isfinite(prior.prior_predictive[v].values).all()
    assert "b_care" not in prior.prior and "care_contrast" not in prior.prior.dims


def test_two_care_types_keep_one_contrast_in_the_regression_graph(without_coach_only):
    design, model = _build("who5_change", without_coach_only)
    assert tuple(model.coords["care_type"]) == design.frame.care_types == ("therapist", "both")
    assert model.initial_point()["b_care"].shape == (1,)
    assert tuple(model.coords["provider_type"]) == ("therapist", "coach")


def test_the_collapsed_graph_has_no_care_contrast_and_its_draws_match_its_design(therapists_only):
    """The collapsed (Gaussian) form: no ``b_care``, a finite density, and θ per prior draw with
    one column per column of the fixed design (no care dummies with one care type)."""
    spec = load_spec("who5_change_normal")
    assert is_collapsed(spec)
    design, model = _build("who5_change_normal", therapists_only)
    assert "b_care" not in model.named_vars
    assert design.care_dummies().shape == (design.n_clients, 0)
    assert np.isfinite(float(model.compile_logp()(model.initial_point())))
    with model, warnings.catch_warnings():
        # the likelihood is a Potential, which prior draws leave out: only the shapes matter here
        warnings.filterwarnings("ignore", "The effect of Potentials", UserWarning)
        prior = pm.sample_prior_predictive(draws=4, random_seed=2).prior
    theta = theta_draws(spec, prior)
    assert theta.shape == (4, fixed_design(spec, design).shape[1])


# ---- a spec's sample that leaves a care type without clients -------------------------------------


@pytest.fixture(scope="module")
def coach_only_never_elevated(shipped_study) -> RawStudy:
    """The shipped study with every coach-only client's WHO-5 baseline at 80 (not elevated), so
    that paper_table2's elevated sample has no coach-only client while the study has many."""
    frame = build_frame(shipped_study)
    ids = np.array(sorted(shipped_study.clients["client_id"]), dtype=object)
    coach = set(ids[(frame.clients["care_type"] == "coach").to_numpy()])
    clients = shipped_study.clients.copy()
    clients.loc[clients["client_id"].isin(coach), "who5_baseline"] = 80.0
    return RawStudy.from_frames(shipped_study.providers, clients, shipped_study.sessions)


def test_a_sample_without_a_care_type_drops_it_and_moves_the_reference(coach_only_never_elevated):
    assert build_frame(coach_only_never_elevated).care_types == CARE_TYPES
    design, model = _build("paper_table2", coach_only_never_elevated)
    frame = design.frame
    care = frame.clients["care_type"].astype(str).value_counts()
    assert "coach" not in care
    assert frame.care_types == ("therapist", "both")
    # the study's reference (coach) has no client in the sample: the largest group takes its place
    assert frame.care_reference == max(("therapist", "both"), key=lambda c: care[c])
    assert frame.levels_without_clients == {"care_types": ["coach"], "care_reference": ["coach"]}
    # coaches still see clients (in both-care), so the provider type stays
    assert frame.provider_types == ("therapist", "coach")
    assert tuple(model.coords["care_type"]) == ("therapist", "both")
    other = next(c for c in ("therapist", "both") if c != frame.care_reference)
    assert tuple(model.coords["care_contrast"]) == (f"{other}-{frame.care_reference}",)
    assert np.isfinite(float(model.compile_logp()(model.initial_point())))


def test_the_report_says_which_levels_had_no_client():
    from alliance_bayes.report.bundle import level_without_clients_sentences

    lines = level_without_clients_sentences(
        {
            "care_types": ["coach"],
            "provider_types": ["peer", "psychiatrist"],
            "care_reference": ["coach"],
        }
    )
    text = " ".join(lines)
    assert "The care type 'coach' had no client in the analysed sample" in text
    assert "provider types 'peer' and 'psychiatrist' had no provider" in text
    assert "the study's reference 'coach' had no client" in text
    assert level_without_clients_sentences({}) == []
