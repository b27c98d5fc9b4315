"""Multiple imputation with a δ shift, end to end (slow: a complete-case fit and refits per δ)."""

from __future__ import annotations

import pytest

import alliance_bayes as ab
from alliance_bayes.spec import load_spec

SETTINGS = {"draws": 500, "tune": 500, "progress": False}


@pytest.mark.slow
def test_a_delta_shift_moves_the_average_client_by_delta_times_the_share_imputed(
    small_study_dir, tmp_path
):
    """With a Normal outcome (no clipping), shifting every imputed follow-up by δ moves the expected
    follow-up of an average client (``alpha``) by about δ × the share of clients imputed; δ = 0
    reproduces the complete-case fit within a few Monte Carlo errors."""
    study = ab.load_study(small_study_dir)
    cache = tmp_path / "fits"

    def fit(delta: float):
        spec = load_spec(
            "who5_change_normal",
            name=f"mi_{'minus' if delta else ''}{abs(delta):g}",
            data={"followup_imputations": 3, "followup_delta": delta},
        )
        return ab.fit(spec, study, cache=cache, **SETTINGS)

    mar, shifted = fit(0.0), fit(-10.0)
    complete = ab.fit("who5_change_normal", study, cache=cache, **SETTINGS)
    share = mar.meta["imputation"]["clients_imputed"] / mar.meta["n_clients"]
    assert 0.2 < share < 0.5
    alpha = {
        k: f.datatree["posterior"]["alpha"].values.ravel()
        for k, f in (("mar", mar), ("shifted", shifted))
    }
    move = alpha["shifted"].mean() - alpha["mar"].mean()
    assert move == pytest.approx(-10.0 * share, rel=0.25)
    # MAR by imputation against complete cases: the slopes agree within their posterior SDs.
    for name in ("b_goal_within", "b_bond_within", "b_baseline"):
        a, b = mar.estimands[name].values.ravel(), complete.estimands[name].values.ravel()
        assert abs(a.mean() - b.mean()) < 0.5 * b.std(), name
    assert mar.datatree["posterior"].sizes["chain"] == 3 * 4
    assert "log_likelihood" not in mar.datatree.children and "prior" in mar.datatree.children
