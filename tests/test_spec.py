"""Model specs are data: every shipped TOML loads, and bad specs fail with a message naming the key."""

from pathlib import Path

import pytest

from alliance_bayes.spec import MODELS_DIR, SpecError, load_spec, parse_spec

SHIPPED = sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def test_the_three_required_specs_ship():
    assert {"paper_table2", "who5_change", "depression_change"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_loads(name):
    spec = load_spec(name)
    assert spec.name == name
    assert spec.source.endswith(f"{name}.toml")


def test_paper_spec_is_the_papers_design():
    spec = load_spec("paper_table2")
    assert spec.data.sample == "elevated" and spec.data.who5_cutoff == 28
    assert spec.predictors.alliance == "composite"
    assert spec.predictors.covariates == ("age", "male", "days_in_care")
    assert not spec.hierarchical


def test_a_variant_is_a_new_toml_not_new_code(tmp_path: Path):
    path = tmp_path / "wider_cutoff.toml"
    path.write_text(
        'name = "wider_cutoff"\noutcome = "who5_followup"\nlikelihood = "student_t"\n'
        '[data]\nsample = "elevated"\nwho5_cutoff = 50\n'
        "[hierarchy]\nprovider_slopes = false\n"
    )
    spec = load_spec(path)
    assert spec.likelihood == "student_t"
    assert spec.data.who5_cutoff == 50.0
    assert spec.hierarchy.provider_slopes is False
    assert spec.hierarchy.provider_intercepts is True


BASE = 'name = "m"\noutcome = "who5_followup"\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BASE + "colour = 1\n", "unknown key(s) ['colour']"),
        (BASE + "[priors]\nsigma = 3\n", "[priors]: unknown key(s) ['sigma']"),
        (BASE + "[priors]\nsigma_sd = -1\n", "sigma_sd must be > 0"),
        (BASE + '[priors]\nsigma_sd = "wide"\n', "[priors].sigma_sd: expected float"),
        (BASE + "[sampler]\nchains = 2.5\n", "[sampler].chains: expected int"),
        (BASE + '[sampler]\nname = "stan"\n', "name: one of ['nutpie', 'pymc']"),
        (BASE + "[data]\nwho5_cutoff = 120\n", "who5_cutoff must lie in 0–100"),
        (BASE + '[data]\nelevated_by = "GAD-7"\n', "elevated_by"),
        (BASE + '[predictors]\ncovariates = ["Income"]\n', "unknown covariate(s) ['Income']"),
        (BASE + "[hierarchy]\nprovider_intercepts = false\n", "provider_slopes needs"),
        (BASE + 'likelihood = "cauchy"\n', "likelihood"),
        ('name = "m"\noutcome = "GAD7"\n', "outcome 'GAD7'"),
        ('outcome = "who5_followup"\n', "'name' is required"),
        (BASE + "[data\n", "not valid TOML"),
    ],
)
def test_bad_specs_name_the_problem(text, fragment):
    with pytest.raises(SpecError) as err:
        parse_spec(text, source="bad.toml")
    assert "bad.toml" in str(err.value)
    assert fragment in str(err.value)


def test_unknown_spec_name_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"known specs: .*who5_change"):
        load_spec("no_such_model")


def test_extends_states_only_what_differs(tmp_path: Path):
    base = load_spec("who5_change")
    path = tmp_path / "variant.toml"
    path.write_text(
        'extends = "who5_change"\nname = "variant"\n[priors]\nsigma_sd = 7.0\n'
        "[hierarchy]\nprovider_slopes = false\n"
    )
    spec = load_spec(path)
    assert spec.name == "variant" and spec.priors.sigma_sd == 7.0
    assert spec.priors.mu_b_sd == base.priors.mu_b_sd  # the rest of the table is inherited
    assert spec.likelihood == base.likelihood and spec.sampler == base.sampler
    assert not spec.hierarchy.provider_slopes and spec.hierarchy.provider_intercepts


def test_extends_refuses_a_cycle_and_a_missing_base(tmp_path: Path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\noutcome = "who5_followup"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\noutcome = "who5_followup"\n')
    with pytest.raises(SpecError, match="cycle"):
        load_spec(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "no_such_spec"\nname = "c"\n')
    with pytest.raises(SpecError, match="no_such_spec"):
        load_spec(tmp_path / "c.toml")


def test_model_v2_defaults():
    """Every hierarchical shipped spec has care-type intercepts; the default is censored."""
    spec = load_spec("who5_change")
    assert spec.likelihood == "censored_normal"
    assert load_spec("depression_change").likelihood == "censored_normal"
    assert load_spec("paper_table2").likelihood == "normal"  # it must match OLS
    for name in SHIPPED:
        other = load_spec(name)
        assert other.hierarchy.care_type_intercepts == other.hierarchical, name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[hierarchy]\ncare_slope_sd = "learned"\n', "care_slope_sd"),
        ('[hierarchy]\nsd_prior = "cauchy"\n', "sd_prior"),
    ],
)
def test_new_hierarchy_options_are_checked(text, message):
    with pytest.raises(SpecError, match=message):
        parse_spec('name = "x"\noutcome = "who5_followup"\n' + text)
