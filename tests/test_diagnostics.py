"""The convergence gate on hand-made posteriors with injected pathologies (no MCMC)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alliance_bayes.diagnostics import (
    UNIFORMITY_ALPHA,
    GateResult,
    check_convergence,
    element_names,
    format_p,
    holm_adjust,
)
from alliance_bayes.model.regression.estimands import compute_estimands
from fake_posterior import make_fake_datatree, replace_group

CHECKS = ["r_hat", "ess_bulk", "ess_tail", "divergences", "e_bfmi", "treedepth"]


@pytest.fixture(scope="module")
def good():
    return make_fake_datatree(draws=300, seed=3)


def _gate(dt):
    return check_convergence(dt, compute_estimands(dt["posterior"].to_dataset()))


def _check(gate, name):
    return next(c for c in gate.checks if c.name == name)


def test_well_mixed_passes(good):
    gate = _gate(good)
    assert [c.name for c in gate.checks] == CHECKS
    assert gate.passed, gate.headline()
    md = gate.to_markdown()
    assert md.splitlines()[0] == "# Convergence: PASSED"
    doc = gate.to_json()
    json.dumps(doc, allow_nan=False)  # strict JSON
    assert doc["passed"] is True and len(doc["checks"]) == 6
    # The constant elements of the Cholesky factor are skipped, not failed.
    assert "constant element" in _check(gate, "r_hat").note


def test_shifted_chain_fails_rhat_and_names_element(good):
    post = good["posterior"].to_dataset()
    b = post["b"].copy()
    b.loc[{"chain": 0, "care_type": "therapist", "subscale": "goal", "level": "within"}] += 3.0
    gate = _gate(replace_group(good, "posterior", post.assign(b=b)))
    assert not gate.passed
    rhat = _check(gate, "r_hat")
    assert not rhat.passed and rhat.value > 1.01
    failing = [w["name"] for w in rhat.worst if w["failed"]]
    assert "b[therapist, goal, within]" in failing
    # The derived estimands built on that element fail too, under their stable names.
    assert "estimand:b_goal_within[therapist]" in failing
    assert "estimand:b_goal_within[therapist-coach]" in failing
    assert gate.to_markdown().startswith("# Convergence: FAILED — r_hat")
    assert "b[therapist, goal, within]" in gate.to_markdown()


def test_autocorrelated_chain_fails_ess(good):
    post = good["posterior"].to_dataset()
    rng = np.random.default_rng(0)
    ar = np.zeros(post["sigma"].shape)
    eps = rng.normal(size=ar.shape)
    for t in range(1, ar.shape[1]):  # AR(1), rho = 0.98: ESS ≈ n (1-rho)/(1+rho) ≈ 12
        ar[:, t] = 0.98 * ar[:, t - 1] + eps[:, t]
    post["b_baseline"] = post["b_baseline"].copy(data=ar)
    gate = _gate(replace_group(good, "posterior", post))
    bulk = _check(gate, "ess_bulk")
    assert not bulk.passed
    assert bulk.worst[0]["name"] in {"b_baseline", "estimand:b_baseline"}
    assert not _check(gate, "ess_tail").passed


def test_short_chains_fail_ess():
    gate = _gate(make_fake_datatree(chains=2, draws=100, seed=5))  # 200 draws < 400
    assert not _check(gate, "ess_bulk").passed and not gate.passed


def test_divergences_fail(good):
    ss = good["sample_stats"].to_dataset()
    div = ss["diverging"].values.copy()
    div[1, 10:13] = True
    gate = _gate(replace_group(good, "sample_stats", ss.assign(diverging=(("chain", "draw"), div))))
    check = _check(gate, "divergences")
    assert not check.passed and check.value == 3
    assert check.worst[0] == {"name": "chain 1", "value": 3, "failed": True}
    assert [c.name for c in gate.checks if not c.passed] == ["divergences"]


def test_low_ebfmi_fails_in_its_chain(good):
    ss = good["sample_stats"].to_dataset()
    energy = ss["energy"].values.copy()
    rng = np.random.default_rng(2)
    energy[2] = 100 + np.cumsum(rng.normal(size=energy.shape[1]))  # random walk: E-BFMI ≈ 0
    gate = _gate(replace_group(good, "sample_stats", ss.assign(energy=(("chain", "draw"), energy))))
    check = _check(gate, "e_bfmi")
    assert not check.passed and check.n_failed == 1
    assert check.worst[0]["name"] == "chain 2" and check.worst[0]["value"] < 0.3
    assert all(not w["failed"] for w in check.worst[1:])


def test_maxdepth_reached_fails(good):
    ss = good["sample_stats"].to_dataset()
    hit = ss["maxdepth_reached"].values.copy()
    hit[3, :5] = True
    gate = _gate(
        replace_group(good, "sample_stats", ss.assign(maxdepth_reached=(("chain", "draw"), hit)))
    )
    check = _check(gate, "treedepth")
    assert not check.passed and check.value == pytest.approx(5 / 300)
    # A tolerant threshold, set deliberately, passes the same draws.
    est = compute_estimands(good["posterior"].to_dataset())
    dt = replace_group(good, "sample_stats", ss.assign(maxdepth_reached=(("chain", "draw"), hit)))
    assert check_convergence(dt, est, max_treedepth_share=0.05).passed


def test_missing_divergence_stat_fails(good):
    ss = good["sample_stats"].to_dataset().drop_vars("diverging")
    gate = _gate(replace_group(good, "sample_stats", ss))
    assert not _check(gate, "divergences").passed


def test_element_names(good):
    names = element_names(good["posterior"]["b"])
    assert names[0] == "b[therapist, goal, within]"
    assert len(names) == 3 * 2 * 2
    assert element_names(good["posterior"]["sigma"]) == ["sigma"]


def _warning(gate):
    return next(w for w in gate.warnings if w.name == "rank_uniformity")


def test_rank_uniformity_warning_quiet_on_mixing_chains(good):
    # 80 quantities of iid chains. Holm keeps the chance of any flag at most 0.01 for calibrated
    # p-values (0.25% of thinned iid elements fell below 0.01 when measured), so P(flag) <= 0.01.
    gate = _gate(good)
    warning = _warning(gate)
    assert warning.passed and warning.n_failed == 0 and warning.n_checked == 80
    assert warning.threshold == UNIFORMITY_ALPHA and 0 < warning.value <= 1
    doc = json.loads(json.dumps(gate.to_json(), allow_nan=False))
    assert doc["warnings"][0]["name"] == "rank_uniformity"
    assert GateResult.from_json(doc).warnings[0].worst == warning.worst
    assert "Warning (not part of the verdict)" not in gate.to_markdown()


def test_rank_uniformity_warning_flags_a_shifted_chain_without_failing_the_gate(good):
    post = good["posterior"].to_dataset()
    sd = post["sd_provider"].copy()
    sd.loc[{"chain": 0, "provider_type": "coach"}] *= 1.3  # +1.3 posterior SDs on the log scale
    gate = _gate(replace_group(good, "posterior", post.assign(sd_provider=sd)))
    warning = _warning(gate)
    flagged = {w["name"] for w in warning.worst if w["failed"]}
    assert {"sd_provider[coach]", "estimand:sd_provider[coach]"} <= flagged
    assert all(w["p_holm"] >= w["value"] for w in warning.worst)
    md = gate.to_markdown()
    assert "**Warning (not part of the verdict):** rank_uniformity" in md
    assert "| `sd_provider[coach]` | < 0.001 |" in md
    # The verdict is the six checks' alone: the warning is not among them.
    assert [c.name for c in gate.checks] == CHECKS
    assert gate.passed == all(c.passed for c in gate.checks)


def test_holm_adjust_closed_form():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max.
    got = holm_adjust(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(got[4])
    assert holm_adjust(np.array([0.6, 0.9])).tolist() == [1.0, 1.0]


def test_format_p():
    assert format_p(0.0001) == "p < 0.001"
    assert format_p(0.0035) == "p = 0.0035"
    assert format_p(0.43) == "p = 0.43"
    assert format_p(float("nan")) == "n/a"
