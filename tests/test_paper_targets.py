"""The SHIPPED synthetic study (data/synthetic) reproduces the paper (study_facts.md targets).

Everything goes through the user path: ``load_study`` (contract validation) and ``build_frame``
(the analysis frame the models consume), with the paper's OLS refitted independently
(statsmodels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from alliance_bayes.data import build_frame, load_study

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "synthetic"

# Table 2 of the paper: term -> (b, CI low, CI high)
TABLE2 = {
    "const": (12.60, 1.15, 24.06),
    "age": (0.03, -0.13, 0.19),
    "male": (0.04, -2.91, 2.99),
    "days_in_care": (-0.01, -0.03, 0.01),
    "who5_baseline": (0.66, 0.45, 0.86),
    "alliance": (2.04, 0.09, 3.99),
}


@pytest.fixture(scope="module")
def clients() -> pd.DataFrame:
    return build_frame(load_study(SHIPPED), elevated_by="who5", who5_cutoff=28).clients


@pytest.fixture(scope="module")
def subgroup(clients: pd.DataFrame) -> pd.DataFrame:
    return clients[clients["elevated"].astype(bool) & clients["who5_followup"].notna()]


@pytest.fixture(scope="module")
def table2(subgroup: pd.DataFrame):
    x = sm.add_constant(subgroup[list(TABLE2)[1:]].astype(float))
    return sm.OLS(subgroup["who5_followup"].astype(float), x).fit()


# ---- 1. design and demographics
def test_n_and_care_mix_exact(clients: pd.DataFrame) -> None:
    assert len(clients) == 3087
    counts = clients["care_type"].value_counts()
    assert (counts["coach"], counts["therapist"], counts["both"]) == (2003, 555, 529)


def test_age_and_sex(clients: pd.DataFrame) -> None:
    assert abs(clients["age"].mean() - 36) <= 1
    assert abs(clients["age"].std() - 9) <= 1
    female = (clients["sex"] == "female").mean() * 100
    assert abs(female - 54) <= 2
    assert set(clients["male"].unique()) == {0.0, 1.0}  # binary sex in the analysis


# ---- 2. alliance
def test_alliance_median_range_and_ceiling(clients: pd.DataFrame) -> None:
    a = clients["alliance"]
    assert abs(a.median() - 4.8) <= 0.1 + 1e-9
    assert a.min() == 1.0
    assert a.max() == 5.0
    assert (a == 5.0).mean() > 0.2  # soft: a large mass exactly at the ceiling


def test_cronbach_alpha(clients: pd.DataFrame) -> None:
    items = clients[["alliance_goal", "alliance_bond"]].to_numpy(float)
    k = items.shape[1]
    alpha = k / (k - 1) * (1 - items.var(axis=0, ddof=1).sum() / items.sum(axis=1).var(ddof=1))
    assert abs(alpha - 0.72) <= 0.05


# ---- 3. the elevated subgroup
def test_elevated_subgroup_size(subgroup: pd.DataFrame) -> None:
    assert abs(len(subgroup) - 675) <= 30


# ---- 4. Table 2
@pytest.mark.parametrize("term", list(TABLE2))
def test_table2_coefficient_inside_paper_ci(table2, term: str) -> None:
    _, lo, hi = TABLE2[term]
    assert lo <= table2.params[term] <= hi


def test_table2_alliance_close_and_significant(table2) -> None:
    assert abs(table2.params["alliance"] - 2.04) <= 1.0
    assert table2.pvalues["alliance"] < 0.10


def test_table2_r_squared(table2) -> None:
    assert 0.03 <= table2.rsquared <= 0.10


# ---- soft targets that are cheap to pin
def test_who5_on_the_percentage_grid(clients: pd.DataFrame) -> None:
    w = pd.concat([clients["who5_baseline"], clients["who5_followup"].dropna()]).to_numpy(float)
    assert np.all(w % 4 == 0) and w.min() >= 0 and w.max() <= 100


def test_mean_gain_in_elevated_group(subgroup: pd.DataFrame) -> None:
    gain = (subgroup["who5_followup"] - subgroup["who5_baseline"]).mean()
    assert 7 <= gain <= 13


def test_missing_followup_share(clients: pd.DataFrame) -> None:
    assert 0.30 <= clients["who5_followup"].isna().mean() <= 0.45


def test_phq9_mostly_where_a_therapist_was_seen(clients: pd.DataFrame) -> None:
    measured = clients["phq9_baseline"].notna().groupby(clients["care_type"], observed=True).mean()
    assert measured["therapist"] > 0.8 and measured["both"] > 0.8 and measured["coach"] < 0.1
    fu = clients["phq9_followup"].dropna()
    assert fu.between(0, 27).all() and (fu % 1 == 0).all()
