"""Hypotheses: the grammar, and probabilities, ROPE shares and Bayes factors against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from alliance_bayes.report.hypotheses import evaluate, hypotheses_markdown, hypothesis_table
from alliance_bayes.spec import HypothesisError, SpecError, load_spec, parse_hypothesis

UNITS = "WHO-5 points"


def _estimands(seed: int, n: int, **normals: tuple[float, float]) -> xr.Dataset:
    """iid Normal draws per estimand, shaped (chain, draw) like the sampler's."""
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            name: (("chain", "draw"), rng.normal(m, s, size=(4, n // 4)), {"units": UNITS})
            for name, (m, s) in normals.items()
        }
    )


def test_grammar_moves_everything_to_the_left():
    h = parse_hypothesis("2 * b_care[both-coach] - 1.5 < b_goal_within-between + 3")
    assert h.operator == "<" and h.constant == -4.5
    assert dict((n, c) for c, n in h.terms) == {
        "b_care[both-coach]": 2.0,
        "b_goal_within-between": -1.0,
    }
    assert parse_hypothesis("b_x  >   b_y").text == "b_x > b_y"


@pytest.mark.parametrize(
    "text, terms, constant, operator, normal",
    [
        ("b_goal_within>0", {"b_goal_within": 1.0}, 0.0, ">", "b_goal_within > 0"),
        (
            "b_goal_within>=b_bond_within",
            {"b_goal_within": 1.0, "b_bond_within": -1.0},
            0.0,
            ">",
            "b_goal_within >= b_bond_within",
        ),
        ("b_x<=2", {"b_x": 1.0}, -2.0, "<", "b_x <= 2"),
        ("b_care[both-coach]==0", {"b_care[both-coach]": 1.0}, 0.0, "=", "b_care[both-coach] == 0"),
        # A "-" inside a name is part of it; a difference has a space before its minus.
        ("b_goal_within-between=0", {"b_goal_within-between": 1.0}, 0.0, "=", None),
        (
            "b_goal_within - b_bond_within>0",
            {"b_goal_within": 1.0, "b_bond_within": -1.0},
            0.0,
            ">",
            "b_goal_within - b_bond_within > 0",
        ),
        (
            "b_goal_within -b_bond_within>0",
            {"b_goal_within": 1.0, "b_bond_within": -1.0},
            0,
            ">",
            None,
        ),
        ("2*b_x+b_y[t-c]<3", {"b_x": 2.0, "b_y[t-c]": 1.0}, -3.0, "<", "2 * b_x + b_y[t-c] < 3"),
        ("-b_x > -2", {"b_x": -1.0}, 2.0, ">", "- b_x > - 2"),
        ("phq9:b_goal_within>1e-1", {"phq9:b_goal_within": 1.0}, -0.1, ">", None),
    ],
)
def test_grammar_reads_operators_without_spaces(text, terms, constant, operator, normal):
    h = parse_hypothesis(text)
    assert dict((n, c) for c, n in h.terms) == terms
    assert h.constant == pytest.approx(constant) and h.operator == operator
    if normal is not None:
        assert h.text == normal


@pytest.mark.parametrize(
    "text, message",
    [
        ("b_goal_within- b_bond_within > 0", "ends in '-'"),
        ("b_x != 0", "cannot read"),
        ("b_x > 0 # note", "cannot read"),
        ("b_x => 0", "one comparison"),
        ("b_x", "one comparison"),
        ("a > b > c", "one comparison"),
        ("> 3", "empty"),
        ("b_x + > 1", "empty"),
        ("b_x b_y > 0", "expected \\+ or -"),
        ("b_x - b_x > 0", "no estimand"),
        ("2 * > 0", "name"),
    ],
)
def test_grammar_refuses_unreadable_text(text, message):
    with pytest.raises(HypothesisError, match=message):
        parse_hypothesis(text)


_VALUES = {"a": 1.25, "b_x": -0.5, "b_y[t-c]": 3.0}
_term = st.tuples(
    st.sampled_from(["+", "-"]), st.integers(1, 5), st.sampled_from([*_VALUES, "7.5"])
)


def _words(terms) -> list[str]:
    """Terms as the user writes them (the first term's sign is always +)."""
    words: list[str] = []
    for i, (sign, coef, name) in enumerate(terms):
        if i:
            words.append(sign)
        if name in _VALUES and coef != 1:
            words += [str(coef), "*"]
        words.append(name)
    return words


def _value(terms) -> float:
    total = 0.0
    for i, (sign, coef, name) in enumerate(terms):
        signed = -1.0 if i and sign == "-" else 1.0
        total += signed * (coef * _VALUES[name] if name in _VALUES else float(name))
    return total


def _compact(words: list[str]) -> str:
    """The words with no spaces, except the one a binary minus needs before it."""
    return "".join(f" {w}" if w == "-" else w for w in words)


@given(
    st.lists(_term, min_size=1, max_size=4),
    st.sampled_from([">", "<", "=", ">=", "<=", "=="]),
    st.lists(_term, min_size=1, max_size=2),
    st.booleans(),
)
def test_a_parsed_hypothesis_evaluates_as_written(left, op, right, compact):
    """The parsed linear form equals the text evaluated term by term, at any values, whether
    written with spaces or without them (a binary minus keeps the space before it)."""
    words = [*_words(left), op, *_words(right)]
    try:
        h = parse_hypothesis(_compact(words) if compact else " ".join(words))
    except HypothesisError as err:
        assert "no estimand" in str(err)  # every name cancelled, or only numbers were given
        return
    parsed = sum(c * _VALUES[n] for c, n in h.terms) + h.constant
    assert parsed == pytest.approx(_value(left) - _value(right))


def test_probabilities_rope_and_savage_dickey_match_closed_forms():
    m, s, t, rope, n = 1.0, 0.5, 3.0, 0.5, 40_000
    post = _estimands(1, n, a=(m, s), b=(0.0, 1e-9))
    prior = _estimands(2, n, a=(0.0, t), b=(0.0, 1e-9))
    row = evaluate("a > b", post, prior, rope=rope, outcome_units=UNITS)
    se = np.sqrt(0.25 / n) * 4  # a generous binomial MC error
    assert row["posterior_prob"] == pytest.approx(stats.norm.cdf(m / s), abs=se)
    assert row["prior_prob"] == pytest.approx(0.5, abs=se)
    in_rope = stats.norm.cdf(rope, m, s) - stats.norm.cdf(-rope, m, s)
    assert row["in_rope"] == pytest.approx(in_rope, abs=se)
    assert row["decision"] == "undecided"  # the 95% HDI straddles the ROPE's edge
    odds = stats.norm.cdf(m / s) / stats.norm.sf(m / s)
    assert row["bayes_factor"] == pytest.approx(odds, rel=0.1)

    point = evaluate("a = 0", post, prior, rope=rope, outcome_units=UNITS)
    bf01 = stats.norm.pdf(0, m, s) / stats.norm.pdf(0, 0, t)
    # Kernel density estimates at 0 of 40,000 draws: a few per cent either way.
    assert point["bayes_factor"] == pytest.approx(bf01, rel=0.05)
    assert point["posterior_prob"] == pytest.approx(in_rope, abs=se)


def test_decisions_follow_the_hdi_and_the_rope():
    far = _estimands(3, 4000, a=(10.0, 0.5))
    near = _estimands(4, 4000, a=(0.0, 0.1))
    assert evaluate("a > 0", far, rope=2.0, outcome_units=UNITS)["decision"] == "different"
    assert evaluate("a = 0", near, rope=2.0, outcome_units=UNITS)["decision"] == "equivalent"
    # A ROPE is in outcome points: an estimand in other units gets none.
    other = far.assign(a=far["a"].assign_attrs(units="correlation"))
    row = evaluate("a > 0", other, rope=2.0, outcome_units=UNITS)
    assert np.isnan(row["in_rope"]) and row["decision"].startswith("n/a")


def test_bayes_factor_undefined_where_the_prior_has_no_density_at_zero():
    post = _estimands(5, 4000, sd=(3.0, 0.5))
    prior = xr.Dataset({"sd": (("chain", "draw"), np.abs(post["sd"].values) + 1.0)})
    row = evaluate("sd = 0", post, prior, rope=1.0, outcome_units=UNITS)
    assert np.isnan(row["bayes_factor"]) and "undefined" in row["bayes_factor_kind"]


def test_unknown_estimands_are_named_or_noted():
    post = _estimands(6, 400, a=(0.0, 1.0))
    with pytest.raises(HypothesisError, match=r"unknown estimand.*b_nope.*known: a"):
        hypothesis_table(["b_nope > 0"], post)
    table = hypothesis_table(
        ["b_nope > 0", "a > 0"], post, strict=False, rope=1.0, outcome_units=UNITS
    )
    assert table.loc[0, "decision"] == "not estimable in this model: this fit has no b_nope"
    assert table.loc[1, "posterior_prob"] == pytest.approx(np.mean(post["a"].values > 0))
    text = "\n".join(hypotheses_markdown(table, {"outcome_label": "WHO-5"}))
    assert "`b_nope > 0`" in text and "Kruschke 2018" in text


def test_spec_hypotheses_are_checked_when_the_spec_is_read():
    assert "b_goal_within-between = 0" in load_spec("who5_change").hypotheses.tests
    assert (
        load_spec("who5_change_no_days").hypotheses.tests
        == load_spec("who5_change").hypotheses.tests
    )
    with pytest.raises(SpecError, match=r"\[hypotheses\] tests.*one comparison"):
        load_spec("who5_change", hypotheses={"tests": ["b_goal_within >> 0"]})
    with pytest.raises(SpecError, match="rope must be >= 0"):
        load_spec("who5_change", hypotheses={"rope": -1.0})
    assert load_spec("depression_change").rope == 0.5
    assert load_spec("who5_change", hypotheses={"rope": 0.0}).rope == 2.0  # the outcome's default


# --- Bayes factors: Monte Carlo error and bounds ----------------------------------------------


def _ar1(rng: np.random.Generator, rho: float, chains: int, n: int) -> np.ndarray:
    """Stationary AR(1) chains with unit marginal variance (rho = 0: iid standard normal)."""
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    noise = rng.standard_normal((chains, n)) * np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_savage_dickey_matches_the_closed_form_within_its_monte_carlo_error(rho):
    """Normal posterior N(1, 0.5²), normal prior N(0, 3²): BF01 = N(0 | 1, 0.5²) / N(0 | 0, 3²).

    Over 200 replications of the sampler's sizes (4 × 1000 posterior draws, iid or AR(1) with
    ρ = 0.8, and 500 prior draws) the estimates centre on the closed form and their spread is the
    reported MCSE; an MCSE that ignored the autocorrelation would be about 2.5 times too small.
    """
    m, s, t, reps = 1.0, 0.5, 3.0, 200
    exact = stats.norm.pdf(0, m, s) / stats.norm.pdf(0, 0, t)
    bf, mcse = np.empty(reps), np.empty(reps)
    for k in range(reps):
        rng = np.random.default_rng(1000 + k)
        post = xr.Dataset({"a": (("chain", "draw"), m + s * _ar1(rng, rho, 4, 1000))})
        prior = xr.Dataset({"a": (("chain", "draw"), rng.normal(0, t, (1, 500)))})
        row = evaluate("a = 0", post, prior)
        assert row["bayes_factor_bound"] == "none"
        bf[k], mcse[k] = row["bayes_factor"], row["bayes_factor_mcse"]
    # centred: the mean over replications within 3 of its own standard errors (plus 2% for the
    # kernel's O(h⁴) and the ratio's O(1/n) bias)
    assert abs(bf.mean() - exact) < 3 * bf.std() / np.sqrt(reps) + 0.02 * exact
    # calibrated: the reported MCSE is the spread of the estimates
    assert 0.8 < bf.std() / mcse.mean() < 1.25
    # a single run lands within 3 MCSE of the closed form nearly always
    assert np.mean(np.abs(bf - exact) < 3 * mcse) > 0.95


def test_a_posterior_far_from_the_null_gives_an_upper_bound_not_zero():
    """All 4000 posterior draws of N(3, 0.5²) lie above 0: the density there is not resolved, and
    BF01 is reported as a bound from the rule of three, above the closed form."""
    post = _estimands(11, 4000, a=(3.0, 0.5))
    prior = _estimands(12, 2000, a=(0.0, 3.0))
    row = evaluate("a = 0", post, prior, rope=0.5, outcome_units=UNITS)
    assert row["bayes_factor_bound"] == "upper" and np.isnan(row["bayes_factor_mcse"])
    exact = stats.norm.pdf(0, 3.0, 0.5) / stats.norm.pdf(0, 0, 3.0)  # about 1e-7
    d = post["a"].values.ravel()
    h = d.std(ddof=1) * d.size**-0.2
    resolution = 3.0 / (2 * h * d.size) / stats.norm.pdf(0, 0, 3.0)  # iid draws: ESS ≈ n
    # conservative (the prior density enters less two of its MCSEs), but not by much
    assert exact < resolution < row["bayes_factor"] < 1.5 * resolution
    text = "\n".join(hypotheses_markdown(hypothesis_table(["a = 0"], post, prior), {}))
    assert f"< {row['bayes_factor']:.3g} (BF01)" in text


def test_directional_bayes_factor_has_an_mcse_or_a_bound():
    post = _estimands(13, 4000, a=(1.0, 0.5), far=(3.0, 0.5))
    prior = _estimands(14, 4000, a=(0.0, 3.0), far=(0.0, 3.0))
    row = evaluate("a > 0", post, prior)
    exact = stats.norm.cdf(2.0) / stats.norm.sf(2.0)  # prior odds 1
    assert row["bayes_factor_bound"] == "none"
    assert abs(row["bayes_factor"] - exact) < 3 * row["bayes_factor_mcse"]
    assert 0.05 < row["bayes_factor_mcse"] / row["bayes_factor"] < 0.25
    high = evaluate("far > 0", post, prior)
    low = evaluate("far < 0", post, prior)
    assert high["bayes_factor_bound"] == "lower" and low["bayes_factor_bound"] == "upper"
    # the rule of three: P(δ < 0 | y) < 3/4000, so BF10 > about 4000/3 (prior odds near 1)
    assert high["bayes_factor"] == pytest.approx(4000 / 3, rel=0.15)
    assert low["bayes_factor"] == pytest.approx(3 / 4000, rel=0.15)
    text = "\n".join(hypotheses_markdown(hypothesis_table(["far > 0", "a > 0"], post, prior), {}))
    assert "> 1." in text and "(BF10)" in text and " ± " in text


def test_a_contrast_against_another_reference_is_derived_draw_by_draw():
    """A study whose reference care type is therapy has b_care[coach-therapist] and
    b_care[both-therapist]; the shipped specs' b_care[therapist-coach] = 0 and
    b_care[both-coach] = 0 are decided on their differences, draw by draw, prior too."""
    post = _estimands(
        8, 4000, **{"b_care[coach-therapist]": (1.0, 1.0), "b_care[both-therapist]": (3.0, 1.0)}
    )
    prior = _estimands(
        9, 4000, **{"b_care[coach-therapist]": (0.0, 10.0), "b_care[both-therapist]": (0.0, 10.0)}
    )
    table = hypothesis_table(
        ["b_care[therapist-coach] = 0", "b_care[both-coach] > 0", "b_care[x-coach] = 0"],
        post,
        prior,
        strict=False,
        rope=1.0,
        outcome_units=UNITS,
    ).set_index("hypothesis")
    coach, both = (post[f"b_care[{c}-therapist]"].values for c in ("coach", "both"))
    assert table.loc["b_care[therapist-coach] = 0", "mean"] == pytest.approx(-coach.mean())
    assert table.loc["b_care[both-coach] > 0", "posterior_prob"] == pytest.approx(
        np.mean(both - coach > 0)
    )
    p = prior[["b_care[coach-therapist]", "b_care[both-therapist]"]].to_array().values
    assert table.loc["b_care[both-coach] > 0", "prior_prob"] == pytest.approx(
        np.mean(p[1] - p[0] > 0)
    )
    assert table.loc["b_care[x-coach] = 0", "decision"].startswith("not estimable")
