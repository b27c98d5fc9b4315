"""Hypotheses: the grammar, and probabilities, ROPE shares and Bayes factors against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from alliance_bayes.model.spec import HypothesisError, SpecError, load_spec, parse_hypothesis
from alliance_bayes.report.hypotheses import evaluate, hypotheses_markdown, hypothesis_table

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
    "text, message",
    [
        ("b_goal_within>0", "between spaces"),
        ("a > b > c", "one of"),
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


@given(
    st.lists(_term, min_size=1, max_size=4),
    st.sampled_from([">", "<", "="]),
    st.lists(_term, min_size=1, max_size=2),
)
def test_a_parsed_hypothesis_evaluates_as_written(left, op, right):
    """The parsed linear form equals the text evaluated term by term, at any values."""
    try:
        h = parse_hypothesis(" ".join([*_words(left), op, *_words(right)]))
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
    assert table.loc[0, "decision"] == "not estimable in this model"
    assert table.loc[1, "posterior_prob"] == pytest.approx(np.mean(post["a"].values > 0))
    text = "\n".join(hypotheses_markdown(table, {"outcome_label": "WHO-5"}))
    assert "`b_nope > 0`" in text and "Kruschke 2018" in text


def test_spec_hypotheses_are_checked_when_the_spec_is_read():
    assert "b_goal_within-between = 0" in load_spec("who5_change").hypotheses.tests
    assert (
        load_spec("who5_change_no_days").hypotheses.tests
        == load_spec("who5_change").hypotheses.tests
    )
    with pytest.raises(SpecError, match=r"\[hypotheses\] tests.*between spaces"):
        load_spec("who5_change", hypotheses={"tests": ["b_goal_within>0"]})
    with pytest.raises(SpecError, match="rope must be >= 0"):
        load_spec("who5_change", hypotheses={"rope": -1.0})
    assert load_spec("depression_change").rope == 0.5
    assert load_spec("who5_change", hypotheses={"rope": 0.0}).rope == 2.0  # the outcome's default
