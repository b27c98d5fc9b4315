"""Property-based tests of the data contract and the analysis frame (hypothesis).

Random valid studies must be accepted and keep the frame's invariants; a random single-cell
corruption of a valid study must be refused naming the corrupted cell's column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_bayes.data import DataContractError, build_frame
from alliance_bayes.data.load import RawStudy

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # fixed examples: the same cases on every run and machine
    database=None,
)


@st.composite
def studies(draw) -> dict[str, pd.DataFrame]:
    """A valid study of text cells: 1–5 providers, 1–8 clients, 1–5 sessions each."""
    n_providers = draw(st.integers(1, 5))
    types = draw(st.lists(st.sampled_from(["therapist", "coach"]), min_size=n_providers,
                          max_size=n_providers))  # fmt: skip
    # Numeric ids that clients and providers share, as real exports have them.
    providers = pd.DataFrame({"provider_id": [str(i + 1) for i in range(n_providers)],
                              "provider_type": types})  # fmt: skip
    n_clients = draw(st.integers(1, 8))
    score = st.integers(0, 25).map(lambda v: str(4 * v))
    clients = pd.DataFrame(
        {
            "client_id": [str(i + 1) for i in range(n_clients)],
            "age": [str(draw(st.integers(18, 100))) for _ in range(n_clients)],
            "sex": [
                draw(st.sampled_from(["female", "male", "other", ""])) for _ in range(n_clients)
            ],
            "who5_baseline": [draw(score) for _ in range(n_clients)],
            "who5_followup": [draw(st.one_of(score, st.just(""))) for _ in range(n_clients)],
            "days_in_care": [str(draw(st.integers(0, 400))) for _ in range(n_clients)],
        }
    )
    rows = []
    for c in clients["client_id"]:
        for k in range(draw(st.integers(1, 5))):
            rows.append(
                {
                    "client_id": c,
                    "provider_id": str(draw(st.integers(1, n_providers))),
                    "session_index": str(k + 1),
                    "wai_goal": str(draw(st.integers(1, 5))),
                    "wai_bond": str(draw(st.integers(1, 5))),
                }
            )
    return {"providers": providers, "clients": clients, "sessions": pd.DataFrame(rows)}


def _study(tables) -> RawStudy:
    return RawStudy.from_frames(tables["providers"], tables["clients"], tables["sessions"])


@SETTINGS
@given(studies())
def test_valid_studies_are_accepted_and_keep_the_frame_invariants(tables):
    frame = build_frame(_study(tables))
    c, m = frame.clients, frame.memberships
    assert len(c) == len(tables["clients"])
    np.testing.assert_allclose(m.groupby("client_index")["weight"].sum(), 1.0)
    for s in ("goal", "bond"):
        np.testing.assert_allclose(
            c[f"alliance_{s}_within"] + c[f"alliance_{s}_between"], c[f"alliance_{s}"]
        )
    # Care type from the raw tables, independently of the frame's code.
    ptype = tables["providers"].set_index("provider_id")["provider_type"]
    seen = tables["sessions"].assign(t=tables["sessions"]["provider_id"].map(ptype))
    kinds = seen.groupby("client_id")["t"].agg(lambda t: frozenset(t))
    expected = kinds.map(
        lambda k: "both" if len(k) == 2 else ("therapist" if "therapist" in k else "coach")
    ).value_counts()
    got = c["care_type"].astype(str).value_counts()
    assert got.sort_index().to_dict() == expected.sort_index().to_dict()
    assert (m.groupby("client_index").size() == c["n_providers"]).all()


#: (table, column, bad value): each breaks one rule of the contract.
CORRUPTIONS = [
    ("providers", "provider_type", "nurse"),
    ("clients", "age", "forty"),
    ("clients", "age", "150"),
    ("clients", "sex", "M"),
    ("clients", "who5_baseline", "101"),
    ("clients", "who5_followup", "-4"),
    ("clients", "days_in_care", "1.5"),
    ("sessions", "wai_goal", "0"),
    ("sessions", "wai_bond", "6"),
    ("sessions", "wai_goal", "2.5"),
    ("sessions", "provider_id", "999"),
    ("sessions", "client_id", "999"),
]


@SETTINGS
@given(studies(), st.sampled_from(CORRUPTIONS), st.data())
def test_a_single_corrupted_cell_is_refused_naming_its_column(tables, corruption, data):
    table, column, bad = corruption
    df = tables[table].copy()
    row = data.draw(st.integers(0, len(df) - 1), label="row")
    df.loc[row, column] = bad
    with pytest.raises(DataContractError) as err:
        _study({**tables, table: df})
    assert err.value.column == column
    assert row + 1 in err.value.rows
