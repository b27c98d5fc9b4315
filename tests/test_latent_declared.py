"""The latent family adjusts its outcome part for covariates a study declares."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytest
import xarray as xr

from alliance_bayes.data.covariates import parse_covariates
from alliance_bayes.data.frame import build_frame
from alliance_bayes.data.load import RawStudy
from alliance_bayes.errors import DesignError
from alliance_bayes.model.latent.estimands import compute_joint_estimands
from alliance_bayes.model.latent.measurement import (
    build_latent_model,
    latent_scales,
    prepare_latent,
)
from alliance_bayes.model.regression.design import standardise
from alliance_bayes.spec import load_spec

BUILT_IN = ["age", "male", "days_in_care"]

#: ``alliance_latent_who5`` on the shipped study, free variables and shapes, recorded before the
#: latent family took declared covariates.
DEFAULT_FREE = {
    "cutpoint_top": (2,),
    "cutpoint_gap": (2, 3),
    "discrimination": (2,),
    "z_client_alliance": (3087, 2),
    "sd_provider_alliance": (2,),
    "chol_client_alliance": (1,),
    "chol_provider_alliance": (1,),
    "v_alliance_provider": (143, 2),
    "provider_type_alliance": (2,),
    "alpha": (1,),
    "b_baseline": (1,),
    "b_covariate_z": (1, 3),
    "b_care": (1, 2),
    "mu_b": (1, 2, 2),
    "z_b": (1, 3, 2, 2),
    "sd_provider": (1, 2),
    "v_provider": (1, 145),
    "sigma": (1,),
}


@pytest.fixture(autouse=True)
def numba_mode():
    """Compile with numba, as the package does; PyMC's initial-point functions still use the C
    linker, which warns that pip installs no BLAS (noise: no linear algebra there)."""
    with pytensor.config.change_flags(mode="NUMBA"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        yield


def _spec(covariates):
    return load_spec("alliance_latent_who5", predictors={"covariates": covariates})


@pytest.fixture(scope="module")
def declared_frame(shipped_study):
    """The shipped study with a declared diagnosis: three levels in turn, every 7th one missing."""
    clients = shipped_study.clients.copy()
    n = len(clients)
    levels = np.array(["depression", "anxiety", "ptsd"], dtype=object)[np.arange(n) % 3]
    levels[np.arange(n) % 7 == 0] = None
    clients["diagnosis"] = levels
    declared, problems = parse_covariates(
        {"diagnosis": {"type": "categorical", "reference": "depression", "label": "Diagnosis"}}
    )
    assert problems == []
    study = RawStudy.from_frames(
        shipped_study.providers, clients, shipped_study.sessions, covariates=declared
    )
    return build_frame(study)


def _free(model):
    point = model.initial_point()
    return {v.name: point[model.rvs_to_values[v].name].shape for v in model.free_RVs}


def test_declared_categorical_covariate_is_coded_as_in_the_regression_family(declared_frame):
    data = prepare_latent(_spec([*BUILT_IN, "diagnosis"]), declared_frame)
    assert data.covariate_names == (*BUILT_IN, "diagnosis[anxiety]", "diagnosis[ptsd]")
    c = data.frame.clients
    complete = c[[*BUILT_IN, "diagnosis"]].notna().all(axis=1).to_numpy()
    assert 0 < (~complete).sum() == data.exclusions["missing_covariate"]
    for j, level in ((3, "anxiety"), (4, "ptsd")):
        d = (c["diagnosis"] == level).to_numpy(float)[complete]
        # centred at the level's share among the complete cases, not scaled
        assert data.covariate_means[j] == pytest.approx(d.mean())
        assert data.covariate_sds[j] == 1.0
        np.testing.assert_allclose(data.covariates[complete, j], d - d.mean())
    assert not data.covariates[~complete].any()  # never read: not in an outcome's likelihood
    assert all(set(o.client_index) <= set(np.flatnonzero(complete)) for o in data.outcomes)
    x = c.loc[complete, "age"].to_numpy(float)
    np.testing.assert_allclose(data.covariates[complete, 0], (x - x.mean()) / x.std())
    coding = latent_scales(data)["covariate_coding"]
    assert set(coding) == {"diagnosis"}
    assert coding["diagnosis"]["reference"] == "depression"
    assert coding["diagnosis"]["levels"] == ["anxiety", "ptsd"]
    assert coding["diagnosis"]["clients"] == {
        v: int((c.loc[complete, "diagnosis"] == v).sum()) for v in ("depression", "anxiety", "ptsd")
    }


def test_latent_model_with_a_declared_covariate_builds(declared_frame):
    data = prepare_latent(_spec(["age", "diagnosis"]), declared_frame)
    model = build_latent_model(_spec(["age", "diagnosis"]), data)
    assert model.coords["covariate"] == ("age", "diagnosis[anxiety]", "diagnosis[ptsd]")
    assert _free(model)["b_covariate_z"] == (1, 3)
    logp = model.compile_logp()(model.initial_point())
    assert np.isfinite(logp)


def test_an_undeclared_covariate_is_refused(declared_frame, shipped_study):
    with pytest.raises(DesignError, match=r"'diagnoses' \(did you mean 'diagnosis'\?\)"):
        prepare_latent(_spec(["age", "diagnoses"]), declared_frame)
    with pytest.raises(DesignError, match=r"no study\.toml"):
        prepare_latent(_spec(["age", "diagnosis"]), build_frame(shipped_study))


def test_default_latent_design_and_graph_are_unchanged(shipped_study):
    spec = load_spec("alliance_latent_who5")
    data = prepare_latent(spec, build_frame(shipped_study))
    assert data.covariate_names == tuple(BUILT_IN)
    assert "covariate_coding" not in latent_scales(data)
    # the built-in columns standardised as they always were, to the last bit
    x = data.frame.clients[BUILT_IN].to_numpy(float)
    complete = ~np.isnan(x).any(axis=1)
    z, mean, sd = standardise(np.where(complete[:, None], x, np.nan))
    np.testing.assert_array_equal(data.covariates, np.where(np.isnan(z), 0.0, z))
    np.testing.assert_array_equal(data.covariate_sds, sd)
    np.testing.assert_array_equal(data.covariate_means, mean)
    assert _free(build_latent_model(spec, data)) == DEFAULT_FREE


def test_estimands_name_declared_levels_per_outcome():
    draws = np.arange(6.0).reshape(2, 3)
    columns = ["age", "diagnosis[anxiety]"]
    b = xr.DataArray(
        np.stack([np.stack([draws] * len(columns), axis=-1)] * 2, axis=-1),
        dims=("chain", "draw", "covariate", "outcome"),
        coords={"covariate": columns, "outcome": ["who5", "phq9"]},
    )
    post = xr.Dataset({"b_covariate": b.transpose("chain", "draw", "outcome", "covariate")})
    coding = {"diagnosis": {"type": "categorical", "reference": "depression"}}
    units = {"who5": "WHO-5 points", "phq9": "PHQ-9 points"}
    est = compute_joint_estimands(
        post, outcome_units=units, primary="who5", covariate_coding=coding
    )
    assert {"b_diagnosis[anxiety]", "phq9:b_diagnosis[anxiety]", "b_age"} <= set(est.data_vars)
    assert est["b_diagnosis[anxiety]"].attrs["units"] == (
        "WHO-5 points, anxiety vs depression (reference)"
    )
    assert est["phq9:b_diagnosis[anxiety]"].attrs["units"].startswith("PHQ-9 points, anxiety vs")
    assert est["b_diagnosis[anxiety]"].attrs["reference"] == "depression"
    assert est["b_age"].attrs["units"] == "WHO-5 points per year of age"
    plain = compute_joint_estimands(post, outcome_units=units, primary="who5")
    assert plain["b_diagnosis[anxiety]"].attrs["units"].endswith("the reference level")
