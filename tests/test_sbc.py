"""Simulation-based calibration: the runner, its uniformity tests, and a small SBC that can fail.

The MCMC tests run a small SBC (50 replicates on a design of about 85 clients in 15 providers) of a
varying-intercept model twice: once with data drawn from the fitting model's own prior (must pass),
once with data drawn from a prior whose provider-SD and residual-SD scales are 3x wider (a mis-scaled
prior in the fitting model, which must be caught).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.checks.sbc import (
    LOGLIK,
    SBCDesign,
    SBCError,
    SBCSettings,
    all_calibrated,
    ecdf_band,
    load_replicates,
    quantity_labels,
    replicate_seeds,
    run_sbc,
    summarise,
    thinning_stride,
    uniformity,
)

HERE = Path(__file__).resolve().parent
SPEC = str(HERE / "sbc" / "vi_normal.toml")
WIDE = str(HERE / "sbc" / "vi_wide.toml")
DESIGN = SBCDesign(
    n_coach_clients=80,
    n_therapist_clients=25,
    n_both_clients=25,
    n_therapists=5,
    n_coaches=10,
    seed=11,
)
REPLICATES = 50


def _settings(generate_spec: str | None = None, **overrides) -> SBCSettings:
    values = {
        "spec": SPEC,
        "generate_spec": generate_spec,
        "design": DESIGN,
        "replicates": REPLICATES,
        "seed": 20230505,
        "chains": 2,
        "tune": 300,
        "draws": 300,
        "thin_to": 100,
    }
    values.update(overrides)
    return SBCSettings(**values)


# --- fast checks (no sampling) ------------------------------------------------------------------


def _table(pits: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({f"pit:{k}": v for k, v in pits.items()})


def test_uniformity_accepts_uniform_and_rejects_shifted_or_overdispersed_ranks():
    rng = np.random.default_rng(1)
    n = 200
    table = _table(
        {
            "uniform": rng.uniform(size=n),
            "biased": rng.beta(1.6, 1.0, size=n),  # posterior systematically too low
            "too_narrow": rng.beta(0.5, 0.5, size=n),  # U-shaped: posterior too narrow
            "too_wide": rng.beta(3.0, 3.0, size=n),  # hump: posterior too wide
        }
    )
    result = uniformity(table).set_index("quantity")
    assert result.loc["uniform", "calibrated"]
    assert result.loc["uniform", "ecdf_p"] > 0.05 and result.loc["uniform", "chi2_p"] > 0.05
    for q in ("biased", "too_narrow", "too_wide"):
        assert not result.loc[q, "calibrated"], q
    assert not all_calibrated(result)


def test_simultaneous_band_has_its_coverage():
    """About 95% of null ECDFs stay inside the simultaneous 95% band (Säilynoja et al. 2022)."""
    n, sims = 50, 400
    z, lower, upper = ecdf_band(n, 0.95)
    rng = np.random.default_rng(7)
    u = np.sort(rng.uniform(size=(sims, n)), axis=1)
    ecdf = np.stack([np.searchsorted(row, z, side="right") / n for row in u])
    inside = ((ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12)).all(axis=1).mean()
    assert 0.92 <= inside <= 0.98
    # a pointwise 95% band would be much narrower than the simultaneous one
    assert np.all(upper - lower >= 0) and (upper - lower).max() > 0.25


def test_replicate_seeds_do_not_depend_on_the_run_size():
    seeds = [replicate_seeds(5, i) for i in range(100)]
    assert seeds[3] == replicate_seeds(5, 3)
    assert len({s for triple in seeds for s in triple}) == 300
    assert replicate_seeds(6, 3) != replicate_seeds(5, 3)


def test_who5_change_quantities_cover_the_key_estimands():
    from alliance_bayes.checks.sbc import sbc_design
    from alliance_bayes.model.families import family_of
    from alliance_bayes.spec import load_spec

    spec = load_spec("who5_change")
    model = family_of(spec).build(spec, sbc_design(spec, DESIGN))
    labels = [q[0] for q in quantity_labels(model)]
    for label in (
        "mu_b[goal,within]",
        "mu_b[bond,between]",
        "sd_provider[therapist]",
        "sd_provider[coach]",
        "sigma",
        "b_baseline",
        "b[coach,goal,within]",
        "sd_provider_slope[goal]",
    ):
        assert label in labels
    assert len(labels) == len(set(labels))


def _ar1_chains(rng: np.random.Generator, rho: float, chains: int, n: int) -> np.ndarray:
    """Stationary AR(1) chains with standard normal marginals."""
    from scipy.signal import lfilter

    noise = rng.standard_normal((chains, n))
    noise[:, 1:] *= np.sqrt(1 - rho**2)  # the first draw is the stationary N(0, 1)
    return lfilter([1.0], [1.0, -rho], noise, axis=1)


def _pits(rho: float, thinning: str, replicates: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Fractional ranks of a N(0, 1) truth among thinned AR(1) 'posterior' draws of the same
    N(0, 1) (a sampler that is right on average but mixes slowly), and the L of each replicate."""
    rng = np.random.default_rng(20180415)
    pits, sizes = np.empty(replicates), np.empty(replicates, int)
    for k in range(replicates):
        truth = rng.standard_normal()
        chains = _ar1_chains(rng, rho, 4, 500)
        stride, _ = thinning_stride([chains], thin_to=200, thinning=thinning)
        kept = chains[:, stride - 1 :: stride].ravel()
        sizes[k] = kept.size
        pits[k] = (np.sum(kept < truth) + rng.uniform()) / (kept.size + 1)
    return pits, sizes


def test_ess_thinning_gives_uniform_ranks_where_fixed_thinning_does_not():
    """4 × 500 AR(1) draws with ρ = 0.99 (ESS about 10) of the right N(0, 1) posterior: thinned to
    200 they are still correlated (lag-10 correlation 0.90), so the truth falls outside all of them
    far more often than 2/(L + 1) and the ranks fail the uniformity tests; thinned to the ESS they
    pass (Talts et al. 2018)."""
    reps = 1000
    fixed, fixed_sizes = _pits(0.99, "fixed", reps)
    ess, ess_sizes = _pits(0.99, "ess", reps)
    result = uniformity(_table({"fixed": fixed, "ess": ess})).set_index("quantity")
    assert (fixed_sizes == 200).all()
    assert 4 <= np.median(ess_sizes) <= 20  # about the ESS, 2000 (1 - ρ) / (1 + ρ) ≈ 10
    assert not result.loc["fixed", "calibrated"], result
    assert result.loc["ess", "calibrated"], result

    def extremes(pit, sizes):  # share of ranks 0 or L, and its expectation 2/(L + 1)
        outside = (pit < 1 / (sizes + 1)) | (pit > sizes / (sizes + 1))
        expected = 2 / (sizes + 1)
        return outside.mean(), expected.mean(), np.sqrt(np.sum(expected * (1 - expected))) / reps

    seen, expected, se = extremes(fixed, fixed_sizes)
    assert seen > expected + 4 * se  # measured: 2.9% against 1.0%
    seen, expected, se = extremes(ess, ess_sizes)
    assert abs(seen - expected) < 3 * se
    # independent draws are not thinned below thin_to
    assert (_pits(0.0, "ess", replicates=20)[1] >= 150).all()


def test_the_thinning_stride_follows_the_smallest_ess():
    rng = np.random.default_rng(3)
    fast, slow = rng.standard_normal((4, 500)), _ar1_chains(rng, 0.95, 4, 500)
    stride, ess = thinning_stride([fast, slow], thin_to=200)
    assert 20 < ess < 80  # 2000 · 0.05 / 1.95 ≈ 51
    assert stride == int(np.ceil(2000 / ess))
    assert thinning_stride([fast], thin_to=200)[0] == 10  # capped by thin_to
    assert thinning_stride([fast, slow], thin_to=200, thinning="fixed") == (
        10,
        pytest.approx(np.nan, nan_ok=True),
    )
    with pytest.raises(SBCError, match="thinning"):
        thinning_stride([fast], thin_to=200, thinning="median")
    # an old run's settings read back with the fixed rule, so it is not mixed with a new one
    old = _settings().to_dict()
    old.pop("thinning")
    assert SBCSettings.from_dict(old).thinning == "fixed"
    assert SBCSettings.from_dict(old).identity() != _settings().identity()


# --- a small SBC that passes for the right model and fails for a mis-scaled prior ----------------


@pytest.fixture(scope="module")
def sbc_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sbc")
    runs = {}
    for name, generate in (("correct", None), ("mis_scaled", WIDE)):
        out = folder / name
        result = run_sbc(_settings(generate), out, workers=1)
        assert result.details["replicates_run"] == REPLICATES
        runs[name] = (out, result)
    return runs


@pytest.mark.mcmc
def test_sbc_of_the_correct_model_is_calibrated(sbc_runs):
    out, result = sbc_runs["correct"]
    table = result.table
    assert result.check == "sbc" and result.path == out
    assert len(result.details["ranks"]) == REPLICATES
    assert set(table["quantity"]) >= {LOGLIK, "sigma", "sd_provider[coach]", "b_baseline"}
    assert (table["n"] == REPLICATES).all()
    assert result.passed, table.to_string()
    assert result.text == (out / "summary.md").read_text(encoding="utf-8")
    # the summary of the same folder, read again, is the same result
    again = summarise(out)
    assert again.passed == result.passed and again.table.equals(result.table)
    for name in ("ranks.csv", "uniformity.csv", "ecdf_difference.png", "summary.md"):
        assert (out / name).is_file(), name
    assert "calibrated" in (out / "summary.md").read_text(encoding="utf-8")


@pytest.mark.mcmc
def test_sbc_catches_a_mis_scaled_prior(sbc_runs):
    _, result = sbc_runs["mis_scaled"]
    table = result.table.set_index("quantity")
    assert result.passed is False, table.to_string()
    # the quantities whose prior is wrong (or that see all of them: the log-likelihood) fail
    failing = set(table.index[~table["calibrated"]])
    assert failing & {"sigma", "sd_provider[therapist]", "sd_provider[coach]", LOGLIK}, failing
    assert "NOT calibrated" in (sbc_runs["mis_scaled"][0] / "summary.md").read_text("utf-8")


@pytest.mark.mcmc
def test_sbc_resumes_and_refuses_to_mix_runs(sbc_runs):
    out, _ = sbc_runs["correct"]
    before = load_replicates(out)
    # every replicate is already written
    assert run_sbc(_settings(), out, workers=1).details["replicates_run"] == 0
    # a lost replicate is rerun alone, with the same seeds and so the same ranks
    lost = out / "replicates" / "rep-00007.json"
    old = json.loads(lost.read_text(encoding="utf-8"))
    lost.unlink()
    assert run_sbc(_settings(), out, workers=1).details["replicates_run"] == 1
    new = json.loads(lost.read_text(encoding="utf-8"))
    assert new["rank"] == old["rank"] and new["seeds"] == old["seeds"]
    pd.testing.assert_frame_equal(
        before.filter(like="rank:"), load_replicates(out).filter(like="rank:")
    )
    with pytest.raises(SBCError, match="other settings"):
        run_sbc(_settings(seed=1), out, workers=1)


@pytest.mark.slow
def test_sbc_cli_runs_replicates_in_parallel_workers(tmp_path):
    """``scripts/sbc.py`` with two worker processes (each compiles once) writes every output."""
    import subprocess
    import sys

    out = tmp_path / "cli"
    args = [
        sys.executable,
        str(HERE.parent / "scripts" / "sbc.py"),
        *("--spec", SPEC, "--replicates", "6", "--workers", "2", "--out", str(out)),
        *("--chains", "2", "--tune", "300", "--draws", "300", "--thin-to", "100"),
        *("--n-coach-clients", "80", "--n-therapist-clients", "25", "--n-both-clients", "25"),
        *("--n-therapists", "5", "--n-coaches", "10"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    table = load_replicates(out)
    assert sorted(table["replicate"]) == list(range(6))
    assert (out / "summary.md").is_file() and (out / "ecdf_difference.png").is_file()
    # a replicate's seeds do not depend on which worker ran it
    record = json.loads((out / "replicates" / "rep-00003.json").read_text(encoding="utf-8"))
    assert record["seeds"]["prior"] == replicate_seeds(20230505, 3)[0]


@pytest.mark.mcmc
def test_sbc_on_a_dask_cluster_gives_the_local_ranks(sbc_runs, tmp_path):
    """Replicates run as tasks on a 2-worker dask.distributed cluster give the in-process ranks."""
    out, _ = sbc_runs["correct"]
    local = load_replicates(out).set_index("replicate").filter(like="rank:").loc[:3]
    on_dask = tmp_path / "dask"
    ran = run_sbc(_settings(replicates=4), on_dask, workers=2, dask="local")
    assert ran.details["replicates_run"] == 4
    remote = load_replicates(on_dask).set_index("replicate").filter(like="rank:")
    pd.testing.assert_frame_equal(local, remote)


# --- the latent model: ratings and outcome drawn afresh in every replicate -------------------------

LATENT_DESIGN = SBCDesign(
    n_coach_clients=60,
    n_therapist_clients=20,
    n_both_clients=20,
    n_therapists=4,
    n_coaches=8,
    seed=11,
)
LATENT_REPLICATES = 30


@pytest.mark.slow
@pytest.mark.mcmc
def test_sbc_of_the_latent_model_is_calibrated(tmp_path):
    """The WHO-5 latent model refitted to session ratings and outcomes drawn from its prior: every
    measurement and outcome quantity, and the log-likelihood of the ratings and outcomes, ranks
    uniformly."""
    settings = _settings(
        spec="alliance_latent_who5", design=LATENT_DESIGN, replicates=LATENT_REPLICATES
    )
    out = tmp_path / "latent"
    result = run_sbc(settings, out, workers=1)
    assert result.details["replicates_run"] == LATENT_REPLICATES
    table = result.table
    assert set(table["quantity"]) >= {
        LOGLIK,
        "discrimination[goal]",
        "cutpoint_top[bond]",
        "sd_provider_alliance[goal]",
        "provider_type_alliance[bond]",
        "sigma[who5]",
    }, set(table["quantity"])
    assert result.passed, table.to_string()
