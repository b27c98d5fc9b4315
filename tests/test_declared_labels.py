"""Row labels of a study's declared covariates in the paper tables (tables.md, .tex, .docx).

A declared covariate's rows read by its declared ``label`` with the level against its reference in
words ("Primary diagnosis: anxiety vs depression"), taken from the fit's ``covariate_coding``
(``run.json``'s scales); the built-in rows keep their labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from alliance_bayes.report.tables import (
    all_tables,
    declared_covariate_labels,
    estimand_label,
    tables_latex,
    tables_markdown,
)

#: A coding as the regression and ratings designs write it (covariate_columns).
CODING = {
    "diagnosis": {
        "type": "categorical",
        "label": "Primary diagnosis",
        "reference": "depression",
        "clients": {"depression": 50, "anxiety": 30, "adjustment": 20},
        "levels": ["anxiety", "adjustment"],
        "absent_levels": [],
        "columns": ["diagnosis[anxiety]", "diagnosis[adjustment]"],
    },
    "employed": {
        "type": "binary",
        "label": "Employed",
        "level": "1",
        "reference": "0",
        "columns": ["employed"],
    },
    "housing": {
        "type": "binary",
        "label": "Housing",
        "reference": "owned",
        "level": "rented",
        "clients": {"owned": 60, "rented": 40},
        "columns": ["housing"],
    },
    "income": {"type": "numeric", "label": "Household income", "columns": ["income"], "sd": 9.5},
    "stress": {"type": "numeric", "label": "", "columns": ["stress"]},
}


def test_the_labels_of_each_declared_type():
    labels = declared_covariate_labels(CODING)
    assert labels["b_diagnosis[anxiety]"] == "Primary diagnosis: anxiety vs depression"
    assert labels["b_diagnosis[adjustment]"] == "Primary diagnosis: adjustment vs depression"
    assert labels["alliance_diagnosis[anxiety-depression]"] == (
        "Primary diagnosis: anxiety vs depression"
    )
    assert labels["beta_diagnosis[anxiety]"] == "β: Primary diagnosis: anxiety vs depression"
    assert labels["beta_obs_diagnosis[adjustment]"] == (
        "β (observed scale): Primary diagnosis: adjustment vs depression"
    )
    assert labels["b_employed"] == labels["alliance_employed[1-0]"] == "Employed: 1 vs 0"
    assert labels["b_housing"] == "Housing: rented vs owned"
    assert labels["alliance_housing[rented-owned]"] == "Housing: rented vs owned"
    assert labels["b_income"] == "Household income (per unit)"
    assert labels["alliance_per_sd_income"] == "Household income (per SD)"
    assert labels["beta_income"] == "β: Household income"
    # without a label, the covariate's name
    assert labels["alliance_per_sd_stress"] == "stress (per SD)"
    # nothing else is named: b, alliance, beta and beta_obs for each of 2 levels and 4 covariates
    assert len(labels) == 4 * (2 + 4)


def test_estimand_label_takes_them_first_and_keeps_an_outcome_prefix():
    labels = declared_covariate_labels(CODING)
    assert estimand_label("b_diagnosis[anxiety]", labels) == (
        "Primary diagnosis: anxiety vs depression"
    )
    assert estimand_label("phq9:b_diagnosis[anxiety]", labels) == (
        "phq9: Primary diagnosis: anxiety vs depression"
    )
    # without the coding: the generic label, as before
    assert estimand_label("b_diagnosis[anxiety]") == "Diagnosis: anxiety"
    # built-in names are not touched by a coding
    for name in ("b_age", "beta_age", "b_care[therapist-coach]", "alliance_per_decade_age"):
        assert estimand_label(name, labels) == estimand_label(name)


BUILT_IN = ("b_age", "b_male", "alliance_per_decade_age")
DECLARED = (
    "b_diagnosis[anxiety]",
    "b_income",
    "alliance_diagnosis[anxiety-depression]",
    "alliance_per_sd_income",
)


def _estimands() -> xr.Dataset:
    rng = np.random.default_rng(2)
    names = (*BUILT_IN, *DECLARED)
    return xr.Dataset(
        {
            n: xr.DataArray(
                rng.normal(0.3, 1.0, (2, 200)),
                dims=("chain", "draw"),
                attrs={"kind": "fixed effect", "units": "points"},
            )
            for n in names
        }
    )


def _meta(coding: dict | None) -> dict:
    meta = {"spec": "s", "outcome": "who5_followup", "effect_units": "points"}
    return meta | ({"scales": {"covariate_coding": coding}} if coding is not None else {})


@pytest.fixture(scope="module")
def estimands() -> xr.Dataset:
    return _estimands()


def test_tables_md_tex_and_docx_rows_read_by_the_declared_labels(estimands):
    md = tables_markdown(estimands, _meta(CODING))
    assert "| Primary diagnosis: anxiety vs depression (`b_diagnosis[anxiety]`) |" in md
    assert "| Household income (per unit) (`b_income`) |" in md
    assert (
        "| Primary diagnosis: anxiety vs depression (`alliance_diagnosis[anxiety-depression]`) |"
        in md
    )
    assert "| Household income (per SD) (`alliance_per_sd_income`) |" in md
    tex = tables_latex(estimands, _meta(CODING))
    assert r"\raggedright Primary diagnosis: anxiety vs depression}" in tex
    assert r"\raggedright Household income (per SD)}" in tex
    # tables.docx lays out the rows of all_tables
    (fixed,) = all_tables(estimands, _meta(CODING), None, None)
    rows = dict(zip(fixed.names, (r[0] for r in fixed.rows), strict=True))
    assert rows["b_diagnosis[anxiety]"] == "Primary diagnosis: anxiety vs depression"
    assert rows["alliance_per_sd_income"] == "Household income (per SD)"


def test_built_in_rows_are_the_same_with_or_without_a_coding(estimands):
    (with_coding,) = all_tables(estimands, _meta(CODING), None, None)
    (without,) = all_tables(estimands, _meta(None), None, None)
    for k, name in enumerate(with_coding.names):
        same = with_coding.rows[k] == without.rows[k]
        assert same == (name in BUILT_IN), name
    assert [r[0] for r in without.rows[len(BUILT_IN) :]] == [
        "Diagnosis: anxiety",
        "Income",
        "Expected alliance rating, diagnosis: anxiety vs depression",
        "Expected alliance rating per SD of income",
    ]
