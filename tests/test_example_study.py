"""The worked example of a study of one's own: data/example_wai_sr/, a WAI-SR study saved as SPSS.

The folder loads with every declaration of its study.toml honoured and the SPSS codes converted and
counted, its spec builds a model with a finite log density, the generator rewrites the same tables,
and (slow) the spec fits and saves a complete bundle.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.data.alliance import SHIPPED as ALLIANCE_TEMPLATES
from alliance_bayes.data.covariates import Covariate
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.instruments import SHIPPED as OUTCOME_TEMPLATES
from alliance_bayes.data.load import Conversion, load_study
from alliance_bayes.fitting import design_of
from alliance_bayes.model.families import family_of
from alliance_bayes.spec import load_spec

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyreadstat") is None, reason="SPSS files need pyreadstat"
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "example_wai_sr"
SPEC = EXAMPLE / "gad7_alliance.toml"
GENERATOR = REPO / "scripts" / "make_example_study.py"
TABLES = ("providers", "clients", "sessions")
DIAGNOSES = ("depression", "anxiety", "adjustment")
PROVIDER_TYPES = ("therapist", "coach", "psychiatrist")
#: The care types the declared provider types give the example's clients: single types in
#: declared order, then the pairs present (nobody sees a therapist and a coach).
CARE_TYPES = (
    "therapist",
    "coach",
    "psychiatrist",
    "therapist_and_psychiatrist",
    "coach_and_psychiatrist",
)
#: What the reader converts in the example's SPSS files, file by file and column by column.
CONVERSIONS = (
    Conversion(
        "providers.sav",
        "provider_type",
        "value labels",
        40,
        "1 → therapist, 2 → coach, 3 → psychiatrist",
    ),
    Conversion("clients.sav", "who5_followup", "declared missing", 225, "-99"),
    Conversion("clients.sav", "phq9_followup", "declared missing", 195, "-99"),
    Conversion("clients.sav", "gad7_followup", "declared missing", 225, "-99"),
    Conversion("clients.sav", "sex", "value labels", 600, "1 → female, 2 → male"),
    Conversion(
        "clients.sav",
        "diagnosis",
        "value labels",
        600,
        "1 → depression, 2 → anxiety, 3 → adjustment",
    ),
)


@pytest.fixture(scope="module")
def study() -> ab.RawStudy:
    return load_study(EXAMPLE)


def _truth() -> dict:
    return json.loads((EXAMPLE / "truth.json").read_text(encoding="utf-8"))


def test_the_folder_loads_with_every_declaration_honoured(study):
    assert study.files == {t: EXAMPLE / f"{t}.sav" for t in TABLES}
    assert study.settings == EXAMPLE / "study.toml"
    # [alliance] instrument = "wai_sr": the twelve items are the sessions' alliance columns
    wai_sr = ALLIANCE_TEMPLATES["wai_sr"]
    assert study.alliance == wai_sr
    assert set(wai_sr.columns) <= set(study.sessions.columns)
    assert not {"wai_goal", "wai_bond", "wai_task"} & set(study.sessions.columns)
    # [outcomes.gad7] by the shipped template's name alone
    assert study.outcomes == {"gad7": OUTCOME_TEMPLATES["gad7"]}
    assert study.clients["gad7_baseline"].between(0, 21).all()
    # [covariates.diagnosis], its SPSS codes read as its levels
    assert study.covariates == {
        "diagnosis": Covariate(
            "diagnosis", "categorical", "Primary diagnosis", "depression", DIAGNOSES
        )
    }
    assert set(study.clients["diagnosis"]) == set(DIAGNOSES)
    # provider_types and care_reference, at the top of study.toml
    assert study.care.provider_types == PROVIDER_TYPES
    assert study.care.reference == "therapist"
    # the design: 600 clients of 20 therapists, 12 coaches and 8 psychiatrists, the SPSS codes
    # read as the declared types; SPSS's numeric ids read as text
    assert len(study.clients) == 600
    assert study.providers["provider_type"].value_counts().to_dict() == {
        "therapist": 20,
        "coach": 12,
        "psychiatrist": 8,
    }
    assert study.clients["client_id"].iloc[0] == "10001"


def test_the_spss_codes_are_converted_and_counted(study):
    assert study.conversions == CONVERSIONS
    assert str(study.conversions[3]) == (
        "clients.sav, column 'gad7_followup': 225 cells with a declared missing code (-99) read "
        "as missing"
    )
    # a follow-up coded -99 is missing, never a score; a PHQ-9 never asked is system-missing
    clients = study.clients
    assert clients["gad7_followup"].isna().sum() == 225
    assert clients["gad7_followup"].dropna().between(0, 21).all()
    assert clients["phq9_followup"].isna().sum() == 195 + clients["phq9_baseline"].isna().sum()
    assert set(clients["sex"]) == {"female", "male"}


def test_the_frame_scores_the_wai_sr_and_counts_partly_rated_sessions(study):
    frame = build_frame(study)
    assert frame.subscales == ("goal", "bond", "task")
    assert frame.partially_rated == {"goal": 306, "bond": 271, "task": 263}
    assert frame.clients["alliance"].between(1, 5).all()
    design = _truth()["design"]
    assert frame.clients["care_type"].value_counts().to_dict() == design["clients_by_care_type"]


def test_the_frame_has_the_declared_provider_types_care_types_and_reference(study):
    truth = _truth()
    frame = build_frame(study)
    assert frame.provider_types == PROVIDER_TYPES == tuple(truth["provider_types"])
    assert frame.care_types == CARE_TYPES
    assert set(CARE_TYPES) == set(truth["design"]["clients_by_care_type"])
    assert frame.care_reference == "therapist" == truth["care_reference"]
    assert frame.care_contrasts == tuple(f"{c}-therapist" for c in CARE_TYPES[1:])
    assert (
        frame.providers["provider_type"].value_counts().to_dict() == (truth["design"]["providers"])
    )
    # every planted care gap and provider SD is one the model reports, by the package's names
    planted = truth["estimands"]
    assert {k for k in planted if k.startswith("b_care[")} == {
        f"b_care[{c}]" for c in frame.care_contrasts
    }
    assert {k for k in planted if k.startswith("sd_provider[")} == {
        f"sd_provider[{t}]" for t in PROVIDER_TYPES
    }


def test_the_example_spec_builds_and_its_initial_log_density_is_finite(study):
    spec = load_spec(SPEC)
    design = design_of(spec, study)
    assert design.n_clients == 375
    assert design.exclusions["missing_gad7_followup"] == 225
    assert spec.outcome_range == (0.0, 21.0) and spec.outcome_units == "GAD-7 points"
    assert design.scales()["alliance_instrument"]["scale"] == "WAI-SR 1–5"
    # the conversions travel with the frame into run.json, whichever entry point fits
    assert design.frame.conversions == study.conversions and len(study.conversions) == 6
    model = family_of(spec).build(spec, design)
    assert model.coords["covariate"] == (
        "age",
        "male",
        "diagnosis[anxiety]",
        "diagnosis[adjustment]",
    )
    assert model.coords["subscale"] == ("goal", "bond", "task")
    assert model.coords["care_type"] == CARE_TYPES
    assert model.coords["care_contrast"] == tuple(f"{c}-therapist" for c in CARE_TYPES[1:])
    assert model.coords["provider_type"] == PROVIDER_TYPES
    with warnings.catch_warnings():
        # compiling the graph asks for a BLAS library once per process; where none is installed
        # PyTensor says so, which is about this machine, not about the model
        warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS", UserWarning)
        logps = model.point_logps()
    assert all(math.isfinite(v) for v in logps.values()), logps


def test_the_generator_rewrites_the_same_tables(tmp_path):
    import pyreadstat

    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for table in TABLES:
        shipped, shipped_meta = pyreadstat.read_sav(
            str(EXAMPLE / f"{table}.sav"), user_missing=True
        )
        again, again_meta = pyreadstat.read_sav(str(tmp_path / f"{table}.sav"), user_missing=True)
        pd.testing.assert_frame_equal(shipped, again)
        for part in ("variable_value_labels", "missing_ranges", "column_names_to_labels"):
            assert getattr(shipped_meta, part) == getattr(again_meta, part), (table, part)
    for name in ("study.toml", "truth.json"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


@pytest.mark.mcmc
@pytest.mark.slow
def test_the_example_spec_fits_and_saves_a_complete_bundle(study, tmp_path):
    fit = ab.fit(SPEC, study, chains=2, draws=300, tune=300, seed=1, progress=False)
    bundle = Path(fit.save(tmp_path))
    for name in (
        "report.md",
        "report.html",
        "tables.md",
        "tables.tex",
        "estimands.csv",
        "estimands.meta.json",
        "hypotheses.csv",
        "diagnostics.json",
        "diagnostics.md",
        "posterior.nc",
        "run.json",
    ):
        assert (bundle / name).is_file(), name
    assert any((bundle / "figures").glob("*.png"))
    run = json.loads((bundle / "run.json").read_text(encoding="utf-8"))
    assert [Conversion(**c) for c in run["conversions"]] == list(CONVERSIONS)
    report = (bundle / "report.md").read_text(encoding="utf-8")
    assert str(CONVERSIONS[3]) in report  # the Clients section lists the conversions
    assert "WAI-SR" in report
    # every planted quantity is a reported estimand; the diagnosis contrasts have their signs
    summary = fit.summary()
    assert set(_truth()["estimands"]) <= set(summary.index)
    assert summary.loc["b_diagnosis[anxiety]", "mean"] > 0
    assert summary.loc["b_diagnosis[adjustment]", "mean"] < 0
