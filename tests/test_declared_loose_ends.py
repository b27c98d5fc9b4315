"""A study's own instruments, to the end: the ROPE and the alliance-dependent imputation shift on a
declared alliance scale, write_study writing the declarations, and predictions with declared
categorical covariates."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_bayes import fit_verbs, imputation
from alliance_bayes.data.alliance import SHIPPED as SHIPPED_ALLIANCE
from alliance_bayes.data.alliance import AllianceInstrument
from alliance_bayes.data.care import CARE_TYPES, CareTypes
from alliance_bayes.data.contract import AGE_RANGE, DataContractError
from alliance_bayes.data.covariates import Covariate, parse_covariates
from alliance_bayes.data.instruments import SHIPPED as SHIPPED_OUTCOMES
from alliance_bayes.data.instruments import Instrument
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.simulate import SimulationConfig, simulate_study
from alliance_bayes.data.write import write_study
from alliance_bayes.diagnostics import GateResult
from alliance_bayes.errors import DesignError
from alliance_bayes.fitting import design_of
from alliance_bayes.report.hypotheses import (
    hypotheses_markdown,
    hypothesis_table,
    rope_settings,
)
from alliance_bayes.report.tables import hypotheses_table
from alliance_bayes.result import Fit
from alliance_bayes.spec import load_spec

SRS = SHIPPED_ALLIANCE["srs"]
WAI_S = SHIPPED_ALLIANCE["wai_s"]
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example_wai_sr"


# --------------------------------------------------------------------------------------------------
# A simulated study rated with the SRS, with declared covariates
# --------------------------------------------------------------------------------------------------
COVARIATES = {
    "diagnosis": {
        "type": "categorical",
        "reference": "depression",
        # "adjustment" is declared but no client has it: the fit cannot estimate it
        "levels": ["depression", "anxiety", "ptsd", "adjustment"],
    },
    "employed": {"type": "binary", "reference": "no", "levels": ["no", "yes"]},
    "income": {"type": "numeric"},
}
SPEC_COVARIATES = ["age", "male", "days_in_care", "diagnosis", "employed", "income"]


def _srs_sessions(sessions: pd.DataFrame) -> pd.DataFrame:
    """The 1–5 goal and bond ratings moved onto the SRS's 0–10 lines (2.5 per point)."""
    out = sessions.drop(columns=["wai_goal", "wai_bond"])
    goal = sessions["wai_goal"].to_numpy(float)
    bond = sessions["wai_bond"].to_numpy(float)
    out["srs_goals"] = 2.5 * (goal - 1)
    out["srs_relationship"] = 2.5 * (bond - 1)
    out["srs_approach"] = np.clip(2.5 * (goal - 1) - 0.5, 0, 10)
    return out


@pytest.fixture(scope="module")
def srs_study() -> RawStudy:
    sim = simulate_study(SimulationConfig.small(), seed=11)
    rng = np.random.default_rng(11)
    clients = sim.clients.copy()
    n = len(clients)
    clients["diagnosis"] = rng.choice(["depression", "anxiety", "ptsd"], n, p=[0.5, 0.3, 0.2])
    clients["employed"] = rng.choice(["no", "yes"], n)
    clients["income"] = rng.normal(40, 10, n).round(1)
    declared, problems = parse_covariates(COVARIATES)
    assert problems == []
    return RawStudy.from_frames(
        sim.providers,
        clients,
        _srs_sessions(sim.sessions),
        covariates=declared,
        alliance=SRS,
    )


# --------------------------------------------------------------------------------------------------
# 1. The ROPE of a slope on a declared alliance scale
# --------------------------------------------------------------------------------------------------
OUTCOME_UNITS = "WHO-5 points"
SLOPE_UNITS_SRS = "WHO-5 points per 1 point of the SRS 0–10 scale"
SLOPE_UNITS_CONTRACT = "WHO-5 points per 1 point of alliance (1–5 scale)"
CARE_UNITS = "WHO-5 points at equal alliance and covariates"


def _draws(mean: float, sd: float, seed: int, units: str) -> xr.DataArray:
    values = np.random.default_rng(seed).normal(mean, sd, (4, 1000))
    return xr.DataArray(values, dims=("chain", "draw"), attrs={"units": units})


def _estimands(slope_units: str) -> xr.Dataset:
    # one slope and one care contrast, both 1.2 ± 0.05 points: inside ±2, outside ±0.8
    return xr.Dataset(
        {
            "b_goal_within": _draws(1.2, 0.05, 1, slope_units),
            "b_care[therapist-coach]": _draws(1.2, 0.05, 2, CARE_UNITS),
        }
    )


def _meta(instrument) -> dict:
    scales = {"alliance_instrument": instrument.to_dict()} if instrument else {}
    units = SLOPE_UNITS_SRS if instrument is SRS else SLOPE_UNITS_CONTRACT
    return {"scales": scales, "effect_units": units, "outcome_label": "WHO-5 follow-up (0–100)"}


STATEMENTS = [
    "b_goal_within = 0",
    "b_care[therapist-coach] = 0",
    "b_goal_within - b_care[therapist-coach] = 0",
]


def test_a_slopes_rope_is_the_specs_times_the_declared_scales_factor():
    spec = load_spec("who5_change")
    assert spec.rope == 2.0
    meta = _meta(SRS)
    table = hypothesis_table(
        STATEMENTS,
        _estimands(SLOPE_UNITS_SRS),
        outcome_units=spec.outcome_units,
        **rope_settings(spec.rope, meta),
    ).set_index("hypothesis")
    slope, care, mixed = (table.loc[s] for s in STATEMENTS)
    # ±2 WHO-5 points per point of the 1–5 scale is ±0.8 per point of the SRS's 0–10
    assert slope["rope"] == pytest.approx(2.0 * 4 / 10)
    assert slope["rope_units"] == SLOPE_UNITS_SRS
    assert slope["decision"] == "different"  # 1.2 ± 0.05 lies wholly outside ±0.8
    assert slope["posterior_prob"] == pytest.approx(0.0, abs=1e-3)
    # a care-type contrast is in outcome points: the spec's ROPE as it is
    assert care["rope"] == 2.0 and care["rope_units"] == OUTCOME_UNITS
    assert care["decision"] == "equivalent"
    # slopes and outcome points mixed: no half-width fits both
    assert np.isnan(mixed["rope"]) and mixed["decision"].startswith("n/a")


def test_on_the_contract_scale_one_rope_serves_slopes_and_outcome_points_as_before():
    meta = _meta(None)
    table = hypothesis_table(
        STATEMENTS,
        _estimands(SLOPE_UNITS_CONTRACT),
        outcome_units=OUTCOME_UNITS,
        **rope_settings(2.0, meta),
    ).set_index("hypothesis")
    assert table["rope"].tolist() == [2.0, 2.0, 2.0]
    assert table.loc["b_goal_within = 0", "decision"] == "equivalent"
    lines = "\n".join(hypotheses_markdown(table.reset_index(), meta))
    assert "±2 points of WHO-5 follow-up (0–100) (per alliance point for slopes)" in lines


def test_the_report_and_the_paper_table_state_the_rescaled_rope():
    meta = _meta(SRS)
    table = hypothesis_table(
        STATEMENTS[:2],
        _estimands(SLOPE_UNITS_SRS),
        outcome_units=OUTCOME_UNITS,
        **rope_settings(2.0, meta),
    )
    note = "\n".join(hypotheses_markdown(table, meta))
    assert f"for a slope ±0.8 {SLOPE_UNITS_SRS}" in note
    assert "the spec's ±2 per point of the 1–5 alliance scale × 0.4" in note
    assert "±2 points of WHO-5 follow-up (0–100)" in note
    caption = hypotheses_table(table, meta).caption
    assert f"for a slope ±0.8 {SLOPE_UNITS_SRS}" in caption


def test_fit_hypotheses_rescales_a_stated_rope_and_a_callers_alike():
    spec = load_spec("who5_change", hypotheses={"rope": 4.0, "tests": ["b_goal_within = 0"]})
    est = _estimands(SLOPE_UNITS_SRS)
    fit = Fit(
        spec=spec,
        datatree=xr.DataTree(),
        estimands=est,
        gate=GateResult(True, [], 4, 1000),
        meta=_meta(SRS) | {"outcome": spec.outcome},
    )
    row = fit.hypotheses().iloc[0]
    assert row["rope"] == pytest.approx(4.0 * 0.4) and row["decision"] == "equivalent"
    given_rope = fit.hypotheses("b_goal_within = 0", rope=2.5).iloc[0]
    assert given_rope["rope"] == pytest.approx(2.5 * 0.4) and given_rope["decision"] == "different"
    contrast = fit.hypotheses("b_care[therapist-coach] = 0").iloc[0]
    assert contrast["rope"] == 4.0


def test_the_srs_designs_record_gives_the_factor_the_rope_uses(srs_study):
    spec = load_spec("who5_change")
    design = design_of(spec, srs_study)
    scales = design.scales()
    meta = {"scales": scales, "effect_units": spec.effect_units_on(SRS.scale)}
    ropes = rope_settings(spec.rope, meta)
    assert ropes["slope_rope"] == pytest.approx(spec.rope * 4 / (SRS.high - SRS.low))
    assert ropes["slope_units"] == SLOPE_UNITS_SRS and ropes["rope"] == spec.rope


# --------------------------------------------------------------------------------------------------
# 1b. The alliance-dependent shift of imputed follow-ups
# --------------------------------------------------------------------------------------------------
def test_the_alliance_shift_is_stated_on_the_1_to_5_scale_and_applied_on_the_declared_one(
    srs_study,
):
    spec = load_spec("who5_change_delta_alliance")
    stated = spec.data.followup_delta_alliance
    assert stated == 5.0
    design = design_of(spec, srs_study)
    applied, scale = imputation.alliance_shift(spec, design)
    assert scale == "SRS 0–10"
    assert applied == pytest.approx(stated * 4 / 10)
    # the shift between clients at the two ends of either scale is the same outcome change
    assert applied * (SRS.high - SRS.low) == pytest.approx(stated * 4)
    contract = SimpleNamespace(frame=SimpleNamespace(alliance=None))
    assert imputation.alliance_shift(spec, contract) == (stated, "1–5")


@dataclass(frozen=True)
class _Settings:
    seed: int = 3


def _fake_fit(spec, design, settings, *, forbidden_ids=(), cache=None, draws_only=False):
    post = xr.Dataset(
        {"b": (("chain", "draw"), np.random.default_rng(settings.seed).normal(size=(1, 50)))}
    )
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": post.rename(b="lp")})
    return SimpleNamespace(
        datatree=tree,
        gate=GateResult(True, [], 1, 50),
        meta={"scales": {}},
        timings={"wall_total": 0.0},
        estimands=post,
    )


def test_fit_imputed_hands_the_applied_shift_to_the_imputation_and_records_both(monkeypatch):
    seen = {}

    def impute(spec, design, posterior, *, n, delta, delta_alliance, seed):
        seen.update(delta=delta, delta_alliance=delta_alliance)
        return [design] * n

    family = SimpleNamespace(
        name="regression",
        impute=impute,
        complete_cases=lambda design: SimpleNamespace(n_clients=design.n_clients - 4),
    )
    monkeypatch.setattr(imputation, "family_of", lambda spec: family)
    spec = load_spec("who5_change_delta_alliance", data={"followup_imputations": 2})
    design = SimpleNamespace(frame=SimpleNamespace(alliance=WAI_S), n_clients=20, exclusions={})
    meta = imputation.fit_imputed(
        spec,
        design,
        _Settings(),
        fit_design=_fake_fit,
        assemble=lambda spec, dt, meta, **_: meta,
    )
    factor = 4 / (WAI_S.high - WAI_S.low)
    assert seen == {"delta": -5.0, "delta_alliance": pytest.approx(5.0 * factor)}
    record = meta["imputation"]
    assert record["delta_alliance"] == 5.0  # as the spec states it, per point of 1–5
    assert record["delta_alliance_applied"] == pytest.approx(5.0 * factor)
    assert record["delta_alliance_scale"] == "WAI-S 1–7"
    assert record["clients_imputed"] == 4


# --------------------------------------------------------------------------------------------------
# 2. write_study writes the declarations
# --------------------------------------------------------------------------------------------------
def _assert_same_study(a: RawStudy, b: RawStudy) -> None:
    for name in ("providers", "clients", "sessions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.outcomes == b.outcomes
    assert a.covariates == b.covariates
    assert a.alliance == b.alliance
    assert a.care == b.care
    assert a.age_range == b.age_range


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_worked_example_writes_and_loads_back_with_its_declarations(tmp_path, fmt):
    example = load_study(EXAMPLE)
    written = write_study(tmp_path / "out", example, fmt=fmt)
    assert set(written) == {"providers", "clients", "sessions", "settings"}
    text = written["settings"].read_text(encoding="utf-8")
    # shipped templates are declared by name alone, as a user writes them
    assert 'instrument = "wai_sr"' in text and "[outcomes.gad7]\n" in text
    assert 'care_reference = "therapist"' in text
    again = load_study(tmp_path / "out")
    _assert_same_study(example, again)
    assert again.settings == written["settings"]


def test_the_three_table_form_takes_the_declarations_as_keywords(tmp_path, srs_study):
    s = srs_study
    written = write_study(
        tmp_path / "w",
        s.providers,
        s.clients,
        s.sessions,
        covariates=s.covariates,
        alliance=s.alliance,
        age_range=(16, 90),
        provider_types=["coach", "therapist"],
        care_reference="coach",
    )
    back = load_study(tmp_path / "w")
    assert back.age_range == (16.0, 90.0) and back.care == CareTypes(
        ("coach", "therapist"), "coach"
    )
    assert back.alliance == SRS and back.covariates == s.covariates
    assert written["settings"].read_text(encoding="utf-8").count("[covariates.") == 3


def test_a_study_that_declares_nothing_writes_no_study_toml(tmp_path):
    example = load_study(EXAMPLE)
    plain = simulate_study(SimulationConfig.small(), seed=2)
    written = write_study(tmp_path / "p", plain.providers, plain.clients, plain.sessions)
    assert "settings" not in written and not (tmp_path / "p" / "study.toml").exists()
    with pytest.raises(TypeError, match="beside it"):
        write_study(tmp_path / "q", example, example.clients)
    with pytest.raises(TypeError, match="beside it"):
        write_study(tmp_path / "q", example, age_range=(12, 25))
    with pytest.raises(TypeError, match="three tables"):
        write_study(tmp_path / "q", plain.providers, plain.clients)
    assert not (tmp_path / "q").exists()


def test_an_existing_study_toml_is_kept_when_it_agrees_and_never_overwritten_when_not(tmp_path):
    example = load_study(EXAMPLE)
    folder = tmp_path / "s"
    write_study(folder, example)
    own = "# the clinic's own notes\n" + (folder / "study.toml").read_text(encoding="utf-8")
    (folder / "study.toml").write_text(own, encoding="utf-8")
    written = write_study(folder, example, fmt="csv")
    assert "settings" not in written
    assert (folder / "study.toml").read_text(encoding="utf-8") == own  # kept, comments and all
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = replace(example, care=CareTypes(example.care.provider_types, "coach"))
    with pytest.raises(FileExistsError, match=r"care_reference: the file 'therapist'"):
        write_study(folder, other)
    gad7 = replace(example.outcomes["gad7"], cutoff=8.0)
    with pytest.raises(FileExistsError, match=r"\(outcomes gad7\)"):
        write_study(folder, replace(example, outcomes={"gad7": gad7}))
    with pytest.raises(FileExistsError, match=r"age_range: the file \(18.0, 100.0\)"):
        write_study(folder, replace(example, age_range=(16.0, 100.0)))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_a_declaration_no_study_toml_can_state_is_refused_before_writing(tmp_path):
    example = load_study(EXAMPLE)
    # the shipped GAD-7 declared without its cut-off: by name alone it reads back with it
    no_cutoff = {"gad7": replace(SHIPPED_OUTCOMES["gad7"], cutoff=None)}
    with pytest.raises(ValueError, match=r"reads back the same \(outcomes gad7\)"):
        write_study(tmp_path / "x", replace(example, outcomes=no_cutoff))
    assert not (tmp_path / "x").exists()


# A text of every kind a label or a source may hold: quotes, backslashes, newlines, controls,
# non-Latin letters (no lone surrogates, which no file can hold).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
LABEL = TEXT.map(str.strip).filter(bool)


@st.composite
def declared_studies(draw) -> tuple[dict[str, pd.DataFrame], dict]:
    """A small valid study of text cells with random declarations of every kind."""
    # provider types and the reference care type
    types = draw(st.sampled_from([None, ("therapist", "coach", "psychiatrist"), ("peer", "nurse")]))
    all_types = types or ("therapist", "coach")
    possible = CareTypes(types).possible() if types else CARE_TYPES
    # ages
    ages = draw(
        st.one_of(
            st.none(),
            st.tuples(st.integers(0, 30), st.integers(1, 60)).map(lambda t: (t[0], t[0] + t[1])),
        )
    )
    low_age, high_age = ages or AGE_RANGE
    n_providers = draw(st.integers(1, 4))
    providers = pd.DataFrame(
        {
            "provider_id": [f"p{i}" for i in range(n_providers)],
            "provider_type": [draw(st.sampled_from(all_types)) for _ in range(n_providers)],
        }
    )
    # a reference care type some provider can give (one that none can is refused on loading)
    staffed = set(providers["provider_type"])
    givable = [
        c
        for c in possible
        if set(("therapist", "coach") if c == "both" else c.split("_and_")) <= staffed
    ]
    reference = draw(st.one_of(st.none(), st.sampled_from(givable)))
    n = draw(st.integers(1, 6))
    score = st.integers(0, 25).map(lambda v: str(4 * v))
    clients = pd.DataFrame(
        {
            "client_id": [f"c{i}" for i in range(n)],
            "age": [str(draw(st.integers(int(low_age), int(high_age)))) for _ in range(n)],
            "sex": [draw(st.sampled_from(["female", "male", "other", ""])) for _ in range(n)],
            "who5_baseline": ["60"] + [draw(score) for _ in range(n - 1)],
            "who5_followup": [draw(st.one_of(score, st.just(""))) for _ in range(n)],
            "days_in_care": [str(draw(st.integers(0, 400))) for _ in range(n)],
        }
    )
    # outcome instruments
    outcomes: dict[str, Instrument] = {}
    if draw(st.booleans()):
        gad7 = SHIPPED_OUTCOMES["gad7"]
        if draw(st.booleans()):  # the shipped one changed: every key is written
            gad7 = replace(gad7, label=draw(LABEL), cutoff=float(draw(st.integers(0, 21))))
        outcomes["gad7"] = gad7
    if draw(st.booleans()):
        low = draw(st.integers(-10, 10))
        step = draw(st.sampled_from([1.0, 0.5, 0.1]))
        k = draw(st.integers(1, 60))
        high = low + k * step
        reliability = draw(st.one_of(st.none(), st.floats(0.05, 0.95)))
        source = draw(LABEL) if reliability is not None else draw(TEXT)
        outcomes["mood"] = Instrument(
            "mood",
            draw(LABEL),
            float(low),
            float(high),
            draw(st.sampled_from(["lower", "higher"])),
            step=step,
            cutoff=draw(st.one_of(st.none(), st.just(float(low)), st.just(float(high)))),
            reliability=reliability,
            source=source,
        )
    for name, inst in outcomes.items():
        steps = round((inst.high - inst.low) / inst.step)
        grid = st.integers(0, steps).map(lambda j, i=inst: f"{i.low + j * i.step:.1f}")
        for part in ("baseline", "followup"):
            clients[f"{name}_{part}"] = [draw(st.one_of(grid, st.just(""))) for _ in range(n)]
    # client covariates
    covariates: dict[str, Covariate] = {}
    if draw(st.booleans()):
        covariates["income"] = Covariate("income", "numeric", draw(st.one_of(st.just(""), TEXT)))
        clients["income"] = [str(draw(st.integers(0, 99))) for _ in range(n)]
    if draw(st.booleans()):
        covariates["employed"] = Covariate("employed", "binary")
        # a declared column holds at least one value
        clients["employed"] = ["1"] + [draw(st.sampled_from(["0", "1", ""])) for _ in range(n - 1)]
    if draw(st.booleans()):
        levels = draw(st.sampled_from([(), ("no", "yes")]))
        covariates["status"] = Covariate("status", "binary", "", "no", levels)
        clients["status"] = ["no"] + [draw(st.sampled_from(["no", "yes"])) for _ in range(n - 1)]
    if draw(st.booleans()):
        levels = draw(st.sampled_from([(), ("dep", "anx", "ptsd"), ("anx", "dep")]))
        label = draw(st.one_of(st.just(""), LABEL))
        covariates["diagnosis"] = Covariate("diagnosis", "categorical", label, "dep", levels)
        seen = list(levels) or ["dep", "anx", "x.1"]
        clients["diagnosis"] = ["dep"] + [draw(st.sampled_from(seen)) for _ in range(n - 1)]
    # the alliance instrument
    kind = draw(st.sampled_from(["contract", "shipped", "relabelled", "items", "subscales"]))
    alliance = None
    if kind in ("shipped", "relabelled"):
        alliance = SHIPPED_ALLIANCE[draw(st.sampled_from(sorted(SHIPPED_ALLIANCE)))]
        if kind == "relabelled":
            alliance = replace(alliance, label=draw(LABEL), source=draw(TEXT))
    elif kind in ("items", "subscales"):
        low = draw(st.integers(0, 3))
        width = draw(st.integers(1, 9))
        items = kind == "items"
        subscales = (("goal", ("g1", "g2") if items else ("g1",)), ("bond", ("b1",)))
        if draw(st.booleans()):
            subscales += (("task", ("t1",)),)
        alliance = AllianceInstrument(
            name="",
            label=draw(LABEL),
            low=float(low),
            high=float(low + width),
            scored=kind,
            subscales=subscales,
            step=draw(st.sampled_from([1.0, 0.5])) if items else 1.0,
            reverse=("g2",) if items and draw(st.booleans()) else (),
            source=draw(TEXT),
        )
    rows = []
    for c in clients["client_id"]:
        for j in range(draw(st.integers(1, 3))):
            row = {
                "client_id": c,
                "provider_id": f"p{draw(st.integers(0, n_providers - 1))}",
                "session_index": str(j + 1),
            }
            if alliance is None:
                row |= {"wai_goal": str(draw(st.integers(1, 5))), "wai_bond": "3"}
            else:
                steps = round((alliance.high - alliance.low) / alliance.step)
                for column in alliance.columns:
                    at = alliance.low + draw(st.integers(0, steps)) * alliance.step
                    row[column] = f"{at:.2f}"
            rows.append(row)
    declarations = {
        "outcomes": outcomes,
        "covariates": covariates,
        "age_range": ages,
        "alliance": alliance,
        "provider_types": types,
        "care_reference": reference,
    }
    tables = {"providers": providers, "clients": clients, "sessions": pd.DataFrame(rows)}
    return tables, declarations


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run and machine
    database=None,
)
@given(declared_studies(), st.sampled_from(["csv", "parquet"]))
def test_a_written_study_loads_back_to_equal_tables_and_declarations(case, fmt):
    tables, declarations = case
    study = RawStudy.from_frames(
        tables["providers"], tables["clients"], tables["sessions"], **declarations
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "study"
        written = write_study(folder, study, fmt=fmt)
        again = load_study(folder)
        _assert_same_study(study, again)
        if fmt == "csv":
            assert again.sha256 == study.sha256  # study.toml is no table: the hash is unchanged
        declares = any(
            (
                declarations["outcomes"],
                declarations["covariates"],
                declarations["alliance"],
                declarations["provider_types"],
                declarations["care_reference"],
                declarations["age_range"] not in (None, AGE_RANGE),
            )
        )
        assert ("settings" in written) == declares
        # written again into the same folder: the same declarations, so the file stays
        assert "settings" not in write_study(folder, again, fmt=fmt)
        assert load_study(folder).alliance == study.alliance


AWKWARD = 'WAI "short" \\ form\n\tü \x7f\x00 é'


def test_awkward_texts_are_quoted_so_that_they_read_back(tmp_path, srs_study):
    s = srs_study
    alliance = replace(SRS, label=AWKWARD.strip(), source=AWKWARD + "]]\n[alliance]")
    covariates = dict(s.covariates)
    covariates["diagnosis"] = replace(covariates["diagnosis"], label=AWKWARD)
    mood = Instrument("mood", AWKWARD, 0.0, 10.0, "higher", source="a = 1\n[outcomes.x]")
    clients = s.clients.assign(mood_baseline=1.0, mood_followup=np.nan)
    written = write_study(
        tmp_path / "w",
        s.providers,
        clients,
        s.sessions,
        covariates=covariates,
        alliance=alliance,
        outcomes={"mood": mood},
    )
    back = load_study(tmp_path / "w")
    assert back.alliance == alliance and back.outcomes == {"mood": mood}
    assert back.covariates == covariates
    text = written["settings"].read_text(encoding="utf-8")
    assert "\\u0000" in text and "\\u007F" in text  # control characters escaped


def test_malformed_tables_write_nothing_even_with_declarations(tmp_path, srs_study):
    clients = srs_study.clients.copy()
    clients.loc[0, "diagnosis"] = "schizo phrenia"
    with pytest.raises(DataContractError, match="diagnosis"):
        write_study(
            tmp_path / "bad",
            srs_study.providers,
            clients,
            srs_study.sessions,
            covariates=srs_study.covariates,
            alliance=SRS,
        )
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------------------------------
# 3. Predictions with declared categorical covariates
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def covariate_design(srs_study):
    spec = load_spec("who5_change", predictors={"covariates": SPEC_COVARIATES})
    return spec, design_of(spec, srs_study)


def _fitted_clients(design) -> pd.DataFrame:
    """The fitted clients as new clients: their own rows of the frame, with a provider each."""
    clients = design.frame.clients.copy()
    main = fit_verbs.main_provider_of(design)
    return clients.assign(provider=clients["client"].astype(str).map(main))


def test_clients_copied_from_the_fit_reproduce_the_designs_covariate_rows(covariate_design):
    spec, design = covariate_design
    coding = design.covariate_coding
    assert coding["diagnosis"]["columns"] == ["diagnosis[anxiety]", "diagnosis[ptsd]"]
    assert coding["diagnosis"]["absent_levels"] == ["adjustment"]
    assert coding["employed"]["level"] == "yes"
    new = _fitted_clients(design)
    assert new["diagnosis"].isin(["depression", "anxiety", "ptsd"]).all()  # text levels
    assert new["employed"].isin(["no", "yes"]).all()
    data = fit_verbs.new_client_data(spec, design, new)
    assert data.covariates.shape == design.covariates.shape
    np.testing.assert_allclose(data.covariates, design.covariates, rtol=0, atol=1e-12)
    # the indicator columns themselves, as before, give the same rows
    raw = design.covariates * design.covariate_sds + design.covariate_means
    by_column = pd.DataFrame(raw, columns=list(design.covariate_names))
    indicators = [c for c in design.covariate_names if c.startswith("diagnosis[")]
    old_style = new.drop(columns="diagnosis").assign(**{c: by_column[c] for c in indicators})
    again = fit_verbs.new_client_data(spec, design, old_style)
    np.testing.assert_allclose(again.covariates, design.covariates, rtol=0, atol=1e-12)


def test_an_unknown_or_unestimated_level_is_refused_naming_the_known_ones(covariate_design):
    spec, design = covariate_design
    new = _fitted_clients(design).head(3).reset_index(drop=True)
    with pytest.raises(DesignError) as err:
        fit_verbs.new_client_data(
            spec, design, new.assign(diagnosis=["anxiety", "bipolar", "ptsd"])
        )
    text = str(err.value)
    assert "row 1" in text and "'bipolar'" in text and "'diagnosis'" in text
    assert "['depression', 'anxiety', 'ptsd']" in text
    with pytest.raises(DesignError, match=r"'adjustment'.*no client in the fitted model"):
        fit_verbs.new_client_data(spec, design, new.assign(diagnosis="adjustment"))
    with pytest.raises(DesignError, match=r"'maybe'.*\['no', 'yes'\]"):
        fit_verbs.new_client_data(spec, design, new.assign(employed="maybe"))
    with pytest.raises(DesignError, match=r"a missing value of covariate 'diagnosis'"):
        fit_verbs.new_client_data(spec, design, new.assign(diagnosis=[None, "anxiety", "ptsd"]))
    with pytest.raises(DesignError, match=r"covariate 'income' is missing"):
        fit_verbs.new_client_data(spec, design, new.assign(income=[1.0, np.nan, 2.0]))
    with pytest.raises(DesignError, match=r"lacks column\(s\) \['diagnosis'\]"):
        fit_verbs.new_client_data(spec, design, new.drop(columns="diagnosis"))


def test_a_new_clients_level_indicator_is_centred_as_the_fitted_ones(covariate_design):
    """A client at the reference and one at ``ptsd``: the ``ptsd`` indicator is 0 and 1 less
    the fitted clients' share of the level, and not scaled (its slope is the level's contrast)."""
    spec, design = covariate_design
    new = _fitted_clients(design).head(2).reset_index(drop=True)
    new = new.assign(diagnosis=["depression", "ptsd"])
    data = fit_verbs.new_client_data(spec, design, new)
    j = list(design.covariate_names).index("diagnosis[ptsd]")
    # the indicator is centred at the fitted clients' share of the level, as the design's is
    share = float(design.covariate_means[j])
    assert data.covariates[:, j] == pytest.approx([-share, 1 - share])
    assert design.covariate_sds[j] == 1.0


def test_a_ratings_rope_is_the_same_share_of_a_declared_scale():
    """The ratings family's ROPE is in rating points: 0.1 on the 1–5 items is 0.15 on 1–7
    (the width over 4), with no slope half-width; the contract's scale keeps it as it is."""
    from alliance_bayes.report.hypotheses import rope_settings, rope_text

    declared = {"family": "ratings", "outcome_label": "alliance rating"}
    declared["scales"] = {
        "alliance_instrument": {"prior_factor": 4 / 6, "scale": "WAI-S 1–7", "range": [1, 7]}
    }
    settings = rope_settings(0.1, declared)
    assert settings["rope"] == pytest.approx(0.15) and settings["slope_rope"] is None
    table = pd.DataFrame({"rope": [settings["rope"]]})
    text = rope_text(table, declared)
    assert "±0.15 rating points on the WAI-S 1–7 scale" in text and "±0.1 per 1–5" in text
    contract = {"family": "ratings", "outcome_label": "alliance rating", "scales": {}}
    assert rope_settings(0.1, contract)["rope"] == pytest.approx(0.1)
