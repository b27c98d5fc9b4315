"""The default model on a study it was not written for (see ``independent_study.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.regression.estimands import care_weights_of, compute_estimands
from alliance_bayes.report.estimands import estimand_table
from alliance_bayes.spec import load_spec
from independent_study import IndependentTruth, write_independent_study

SEED = 11


@pytest.fixture(scope="module")
def independent_fit(tmp_path_factory, fitted):
    folder = tmp_path_factory.mktemp("independent")
    truth = IndependentTruth()
    clients = write_independent_study(folder, truth, seed=SEED)
    spec = load_spec("who5_change")
    frame = build_frame(load_study(folder))
    design, dt = fitted("independent_who5_change", spec, frame)
    estimands = compute_estimands(
        dt["posterior"].to_dataset(),
        outcome_units=spec.outcome_units,
        care_weights=care_weights_of(design.scales()),
    )
    return truth, clients, dt, estimands


@pytest.mark.mcmc
def test_independent_study_has_a_floor_and_numeric_ids(independent_fit):
    _, clients, dt, _ = independent_fit
    y = clients["who5_followup"].dropna().to_numpy(float)
    assert np.mean(y == 0) > 0.02 and np.mean(y == 100) > 0.0
    assert clients["client_id"].dtype.kind == "i"
    labels = dt["observed_data"]["client"].values.astype(str)
    assert all(label.startswith("C") for label in labels)  # pseudonyms, not the raw numbers


@pytest.mark.mcmc
def test_default_model_recovers_an_independent_study(independent_fit):
    """Every planted key estimand within 3 posterior SDs, and the gate passes."""
    truth, _, dt, estimands = independent_fit
    table = estimand_table(estimands).set_index("estimand")
    errors = {
        name: (table.loc[name, "mean"] - value) / table.loc[name, "sd"]
        for name, value in truth.estimands().items()
    }
    far = {k: round(v, 2) for k, v in errors.items() if abs(v) > 3}
    assert not far, far
    gate = check_convergence(dt, estimands)
    assert gate.passed, gate.headline()
