"""Three declared provider types, on a study the package was not written for.

The study comes from ``independent_provider_types.py``, which knows the data contract and nothing
of the package. The fast tests check that the folder loads, that the frame derives the planted
care types and reference, and that the same files without their declaration are refused; the
MCMC test fits the default spec and checks that the planted values are recovered.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.cli import DEFAULT_SPEC
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.errors import DataContractError
from alliance_bayes.model.regression.estimands import care_weights_of, compute_estimands
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.spec import load_spec
from independent_provider_types import (
    PROVIDER_TYPES,
    ProviderTypesTruth,
    write_provider_types_study,
)

SEED = 2718
FILES = ("providers.csv", "clients.csv", "sessions.csv", "study.toml")
# Sixteen planted estimands. For a correctly specified model each posterior's standardised error
# (mean - truth) / sd is roughly standard Normal, so at 3 SD one of sixteen would stray with
# probability about 4% even when nothing is wrong; at 3.5 SD about 0.7%. What this test is for,
# a care type, contrast or provider type misnamed, misassigned or against the wrong reference,
# moves an estimand by several posterior SDs (the planted care gaps are 3 to 11 points apart, a
# posterior SD about 2).
TOLERANCE_SD = 3.5


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("provider_types")
    truth = ProviderTypesTruth()
    planted = write_provider_types_study(folder, truth, seed=SEED)
    return folder, truth, planted


@pytest.fixture(scope="module")
def frame(study):
    folder, _, _ = study
    return build_frame(load_study(folder))


def _in_frame_order(planted: pd.DataFrame) -> pd.DataFrame:
    """The planted clients in the frame's order: pseudonyms follow the sorted text ids."""
    return planted.sort_values("client_id", key=lambda s: s.astype(str)).reset_index(drop=True)


def test_same_seed_writes_identical_files(tmp_path):
    truth = ProviderTypesTruth()
    for name, seed in (("a", SEED), ("b", SEED), ("c", SEED + 1)):
        write_provider_types_study(tmp_path / name, truth, seed=seed)
    for file in FILES:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    # the seed is used: another one draws other sessions and outcomes
    for file in ("clients.csv", "sessions.csv"):
        assert (tmp_path / "a" / file).read_bytes() != (tmp_path / "c" / file).read_bytes(), file


def test_study_toml_declares_the_types_and_no_reference(study):
    folder, _, _ = study
    text = (folder / "study.toml").read_text(encoding="utf-8")
    assert text.strip() == 'provider_types = ["therapist", "coach", "psychiatrist"]'
    assert "care_reference" not in text


def test_frame_has_the_planted_care_types(study, frame):
    _, truth, planted = study
    # Documented order: single types in declared order, then pairs in declared order.
    assert frame.provider_types == PROVIDER_TYPES
    assert frame.care_types == (
        "therapist",
        "coach",
        "psychiatrist",
        "therapist_and_psychiatrist",
        "coach_and_psychiatrist",
    )
    counts = frame.clients["care_type"].value_counts()
    assert {c: int(counts[c]) for c in frame.care_types} == truth.n_clients
    ptypes = frame.providers["provider_type"].value_counts()
    assert {t: int(ptypes[t]) for t in PROVIDER_TYPES} == truth.n_providers
    # client by client, not only in total
    expected = _in_frame_order(planted)["care_type"].to_numpy()
    assert np.array_equal(frame.clients["care_type"].astype(str).to_numpy(), expected)
    paired = frame.clients["care_type"].astype(str).str.contains("_and_")
    assert (frame.clients.loc[paired, "n_providers"] == 2).all()


def test_reference_is_the_largest_care_type(study, frame):
    _, truth, _ = study
    assert truth.reference == "coach"
    assert frame.care_reference == "coach"
    named = {f"b_care[{c}]" for c in frame.care_contrasts}
    assert named == {k for k in truth.estimands() if k.startswith("b_care[")}


def test_planted_predictors_are_the_frames(study, frame):
    """The outcome was generated from the within/between parts the package derives."""
    _, _, planted = study
    ours = _in_frame_order(planted)
    for s in ("goal", "bond"):
        for level in ("within", "between"):
            np.testing.assert_allclose(
                frame.clients[f"alliance_{s}_{level}"].to_numpy(float),
                ours[f"{s}_{level}"].to_numpy(float),
                rtol=0,
                atol=1e-9,
                err_msg=f"{s}_{level}",
            )
    np.testing.assert_array_equal(
        frame.clients["days_in_care"].to_numpy(float), ours["days_in_care"].to_numpy(float)
    )


def test_same_files_without_the_declaration_are_refused(study, tmp_path):
    folder, _, _ = study
    for file in ("providers.csv", "clients.csv", "sessions.csv"):
        shutil.copy(folder / file, tmp_path / file)
    declared = (folder / "study.toml").read_text(encoding="utf-8").splitlines()
    kept = [line for line in declared if not line.startswith("provider_types")]
    (tmp_path / "study.toml").write_text("\n".join(kept) + "\n", encoding="utf-8")

    with pytest.raises(DataContractError) as caught:
        load_study(tmp_path)
    message = str(caught.value)
    providers = pd.read_csv(folder / "providers.csv", dtype=str)
    first_row = int(np.flatnonzero(providers["provider_type"] == "psychiatrist")[0]) + 1
    assert "providers" in message
    assert "provider_type" in message
    assert "psychiatrist" in message
    assert "provider_types" in message  # says how to declare them
    assert re.search(rf"\brows? {first_row}\b", message), message


@pytest.fixture(scope="module")
def provider_types_fit(study, frame, fitted):
    spec = load_spec(DEFAULT_SPEC)
    design, dt = fitted("independent_provider_types_default", spec, frame)
    estimands = compute_estimands(
        dt["posterior"].to_dataset(),
        outcome_units=spec.outcome_units,
        care_weights=care_weights_of(design.scales()),
    )
    return dt, estimands


@pytest.mark.mcmc
@pytest.mark.slow
def test_default_model_recovers_three_provider_types(study, provider_types_fit):
    """Every planted estimand within ``TOLERANCE_SD`` posterior SDs, and the gate passes."""
    _, truth, _ = study
    dt, estimands = provider_types_fit
    table = estimand_table(estimands).set_index("estimand")
    planted = truth.estimands()
    missing = sorted(set(planted) - set(table.index))
    assert not missing, missing
    errors = {
        name: (table.loc[name, "mean"] - value) / table.loc[name, "sd"]
        for name, value in planted.items()
    }
    far = {k: round(float(v), 2) for k, v in errors.items() if abs(v) > TOLERANCE_SD}
    assert not far, far
    gate = check_convergence(dt, estimands)
    assert gate.passed, gate.headline()
