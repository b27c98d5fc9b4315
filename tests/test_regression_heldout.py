"""K-fold's compiled-once refits of the averaged-score models: the weighted model is the training model.

A fold keeps every client in the model and weights its log density 0/1
(:mod:`alliance_bayes.model.regression.heldout`). Checked here without sampling: with every weight
1 the log density is the ordinary model's; with a fold's weights it drops exactly the excluded
clients' pointwise log densities (computed by the ordinary model's own observed variable); and
what a fold swaps in is the training clients' alone.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from pytensor.graph.traversal import ancestors

from alliance_bayes.data.simulate import SimulationConfig, simulate_study, write_simulated_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.regression.design import INTERCEPT_PRIOR_MEAN, OUTCOME_WEIGHT
from alliance_bayes.model.regression.graph import build_model
from alliance_bayes.model.regression.heldout import providers_seen, training_data
from alliance_bayes.spec import load_spec

SEED = 20261204
# The log densities are compiled by PyTensor's C linker, which a pip install leaves without BLAS:
# slower, not different.
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    config = SimulationConfig.small(
        n_coach_clients=40, n_therapist_clients=14, n_both_clients=12, n_therapists=3, n_coaches=6
    )
    folder = tmp_path_factory.mktemp("heldout")
    write_simulated_study(simulate_study(config, seed=SEED), folder)
    spec = load_spec("who5_change")  # censored Normal: the per-client form
    return spec, design_of(spec, folder)


def _fold(data, seed=SEED):
    rng = np.random.default_rng(seed)
    train = rng.uniform(size=data.n_clients) < 0.7
    out = (data.membership_index == data.membership_index[0, 0]) & (data.membership_weight > 0)
    train[out.any(axis=1)] = False  # one provider left out of the fold
    return train


def test_weighted_log_density_drops_exactly_the_excluded_clients(design):
    spec, data = design
    plain, weighted = build_model(spec, data), build_model(spec, data, heldout=True)
    assert not weighted.observed_RVs and OUTCOME_WEIGHT in weighted.named_vars
    point = plain.initial_point(random_seed=1)
    rng = np.random.default_rng(2)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in point.items()}
    pointwise = plain.compile_fn(plain.logp(vars=plain.observed_RVs, sum=False)[0])(point)
    # Some follow-ups at the floor, so that the censored branch is among the checked terms.
    assert (data.y <= spec.outcome_range[0]).any()
    total = plain.compile_logp()(point)
    logp = weighted.compile_logp()
    assert logp(point) == pytest.approx(total, rel=1e-10)
    train = _fold(data)
    with weighted:
        pm.set_data({OUTCOME_WEIGHT: train.astype(float)})
    assert logp(point) == pytest.approx(total - pointwise[~train].sum(), rel=1e-10)


def test_a_fold_swaps_in_its_training_clients_alone(design):
    spec, data = design
    train = _fold(data)
    swapped = training_data(spec, data, train)
    assert float(swapped[INTERCEPT_PRIOR_MEAN]) == pytest.approx(data.y[train].mean())
    np.testing.assert_array_equal(swapped[OUTCOME_WEIGHT], train.astype(float))
    seen = providers_seen(data, train)
    assert not seen.all()
    weights = swapped["provider_noncentring"]
    assert (weights[~seen] == 1).all() and ((weights[seen] > 0) & (weights[seen] <= 1)).all()
    # Every container a fold swaps is read by the log density the fold's sampler was compiled from.
    read = {v.name for v in ancestors([build_model(spec, data, heldout=True).logp()])}
    assert set(swapped) <= read
