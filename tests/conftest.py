"""Session-wide fixtures: data built once, and each MCMC fit compiled and sampled once per session.

Compiling a model (not sampling it) dominates small fits, so every test that needs a posterior asks
``fitted`` for it and shares the result; designs are kept small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study, write_simulated_study

# Bundles written by the command line draw their figures in worker processes, one per CPU. The
# suite already runs a process per CPU, and each figure worker would spend about 3 s importing, so
# figures are drawn in the test's own process; tests that ask for workers get them.
os.environ.setdefault("ALLIANCE_BAYES_FIGURE_WORKERS", "1")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "synthetic"
MEDIUM_SEED = 11


@pytest.fixture(scope="session")
def shipped_study():
    return load_study(SHIPPED)


@pytest.fixture(scope="session")
def small_study_dir(tmp_path_factory) -> Path:
    """300 clients, 30 providers, the shipped truth: for CLI runs that must be quick."""
    folder = tmp_path_factory.mktemp("small_study")
    write_simulated_study(simulate_study(SimulationConfig.small(), seed=MEDIUM_SEED), folder)
    return folder


@pytest.fixture(scope="session")
def medium_study(tmp_path_factory):
    """About 1,000 clients in 60 providers: large enough for recovery to be informative."""
    config = SimulationConfig.small(
        n_coach_clients=650,
        n_therapist_clients=180,
        n_both_clients=170,
        n_therapists=20,
        n_coaches=40,
    )
    study = simulate_study(config, seed=MEDIUM_SEED)
    folder = tmp_path_factory.mktemp("medium_study")
    write_simulated_study(study, folder)
    return study, build_frame(load_study(folder))


@pytest.fixture(scope="session")
def fitted():
    """``fitted(key, spec, frame, draws_only=False, **settings)`` → (design, DataTree), cached per
    ``key``.

    Goes through the package's one pipeline (:func:`alliance_bayes.fitting.fit_design`);
    ``draws_only`` skips the predictive draws and log densities, for tests that read the
    posterior alone.
    """
    from alliance_bayes.fitting import design_of, fit_design, settings_for

    cache: dict[str, tuple] = {}

    def fit(key: str, spec, frame, draws_only: bool = False, **settings):
        if key not in cache:
            data = design_of(spec, frame)
            result = fit_design(
                spec, data, settings_for(spec, progress=False, **settings), draws_only=draws_only
            )
            cache[key] = (data, result.datatree)
        return cache[key]

    return fit
