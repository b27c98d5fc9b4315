"""Property-based tests of the data contract and the analysis frame (hypothesis).

Random valid studies must be accepted and keep the frame's invariants; a random single-cell
corruption of a valid study must be refused naming the corrupted cell's column. The within/between
split is checked against an oracle written with plain loops over the raw session rows, for every
early-alliance window and every subscale, a task item rated at some sessions only included.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
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
    """A valid study of text cells: 1–5 providers, 1–8 clients, 1–5 sessions each.

    In some studies a task item is rated at some sessions only (empty cells elsewhere).
    """
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
    has_task = draw(st.booleans())
    task = st.one_of(st.just(""), st.integers(1, 5).map(str))
    rows = []
    for c in clients["client_id"]:
        for k in range(draw(st.integers(1, 5))):
            row = {
                "client_id": c,
                "provider_id": str(draw(st.integers(1, n_providers))),
                "session_index": str(k + 1),
                "wai_goal": str(draw(st.integers(1, 5))),
                "wai_bond": str(draw(st.integers(1, 5))),
            }
            if has_task:
                row["wai_task"] = draw(task)
            rows.append(row)
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


def _multiple_membership_study() -> dict[str, pd.DataFrame]:
    """Client 1 sees coach 1, therapist 2, coach 1, therapist 2, therapist 2 (task rated at the
    first, second and last); client 2 sees therapist 2 only; client 3 coach 1 then therapist 3."""
    providers = pd.DataFrame({"provider_id": ["1", "2", "3"],
                              "provider_type": ["coach", "therapist", "therapist"]})  # fmt: skip
    clients = pd.DataFrame(
        {
            "client_id": ["1", "2", "3"],
            "age": ["30", "40", "50"],
            "sex": ["female", "male", ""],
            "who5_baseline": ["20", "40", "60"],
            "who5_followup": ["40", "", "64"],
            "days_in_care": ["10", "20", "30"],
        }
    )
    cells = [  # client, provider, goal, bond, task
        ("1", "1", "5", "4", "5"), ("1", "2", "2", "3", "1"), ("1", "1", "4", "4", ""),
        ("1", "2", "1", "2", ""), ("1", "2", "3", "3", "2"), ("2", "2", "4", "5", "3"),
        ("2", "2", "5", "5", ""), ("3", "1", "1", "1", ""), ("3", "3", "5", "4", "4"),
    ]  # fmt: skip
    sessions = pd.DataFrame(cells, columns=["client_id", "provider_id", "wai_goal", "wai_bond",
                                            "wai_task"])  # fmt: skip
    sessions.insert(2, "session_index", sessions.groupby("client_id").cumcount().add(1).astype(str))
    return {"providers": providers, "clients": clients, "sessions": sessions}


def _oracle(sessions: pd.DataFrame, subscale: str, window: int):
    """Scores, part weights, client–provider and caseload means by loops over the raw rows.

    Only the sessions behind a score count: the item rated, within the first ``window``.
    """
    ratings = defaultdict(list)  # (client, provider) -> ratings
    for row in sessions.to_dict("records"):
        value = row.get(f"wai_{subscale}", "")
        if value != "" and (not window or int(row["session_index"]) <= window):
            ratings[row["client_id"], row["provider_id"]].append(float(value))
    per_client = defaultdict(list)
    caseload = defaultdict(list)
    for (c, p), values in ratings.items():
        per_client[c] += values
        caseload[p].append(fmean(values))
    score = {c: fmean(v) for c, v in per_client.items()}
    n_used = {c: len(v) for c, v in per_client.items()}
    weight = {(c, p): len(v) / len(per_client[c]) for (c, p), v in ratings.items()}
    pair_mean = {key: fmean(v) for key, v in ratings.items()}
    provider_mean = {p: fmean(v) for p, v in caseload.items()}
    return score, n_used, weight, pair_mean, provider_mean


#: Early-alliance windows: every session, then the first 1, 2, 3 and 6 (beyond every client).
WINDOWS = (0, 1, 2, 3, 6)


@settings(SETTINGS, max_examples=30)  # five frames per example
@given(studies())
@example(_multiple_membership_study())
def test_within_between_split_is_consistent_for_every_window_and_subscale(tables):
    study = _study(tables)
    client_ids = sorted(tables["clients"]["client_id"])
    n_sessions = tables["sessions"]["client_id"].value_counts()
    frames = {window: build_frame(study, alliance_sessions=window) for window in WINDOWS}
    everything = frames[0]
    for window, frame in frames.items():
        c = frame.clients.set_axis(client_ids)  # pseudonyms follow the sorted raw ids
        for s in frame.subscales:
            score, n_used, weight, pair_mean, m = _oracle(tables["sessions"], s, window)
            # grand mean: the centre of the between part (any constant works, weights sum to 1)
            grand = fmean(m.values()) if m else 0.0
            for cid in client_ids:
                if cid not in score:  # no rated session in the window: no score, no parts
                    assert c.loc[cid, [f"alliance_{s}", f"alliance_{s}_between"]].isna().all()
                    assert np.isnan(c.loc[cid, f"alliance_{s}_within"])
                    continue
                mine = {p: w for (i, p), w in weight.items() if i == cid}
                between = grand + sum(w * (m[p] - grand) for p, w in mine.items())
                within = sum(w * (pair_mean[cid, p] - m[p]) for p, w in mine.items())
                assert c.loc[cid, f"alliance_{s}"] == pytest.approx(score[cid], abs=1e-12)
                assert c.loc[cid, f"alliance_{s}_between"] == pytest.approx(between, abs=1e-12)
                assert c.loc[cid, f"alliance_{s}_within"] == pytest.approx(within, abs=1e-12)
                assert c.loc[cid, f"alliance_{s}_n_sessions"] == n_used[cid]
            np.testing.assert_allclose(
                c[f"alliance_{s}_within"] + c[f"alliance_{s}_between"], c[f"alliance_{s}"]
            )
            # the frame's own part weights reproduce its between part from its provider means
            w = frame.alliance_weights(s)
            mp = frame.providers[f"alliance_{s}_mean"].to_numpy()
            rebuilt = (w["weight"] * mp[w["provider_index"]]).groupby(w["client_index"]).sum()
            np.testing.assert_allclose(
                rebuilt, frame.clients[f"alliance_{s}_between"].dropna(), atol=1e-12
            )
        # composite: goal and bond are rated at the same sessions here, so one set of weights
        w = frame.alliance_weights("goal")
        mp = frame.providers["alliance_mean"].to_numpy()
        rebuilt = (w["weight"] * mp[w["provider_index"]]).groupby(w["client_index"]).sum()
        np.testing.assert_allclose(rebuilt, frame.clients["alliance_between"], atol=1e-12)
        np.testing.assert_allclose(
            frame.clients["alliance_within"] + frame.clients["alliance_between"],
            frame.clients["alliance"],
        )
        # the window only changes the clients with more sessions than it holds
        short = (n_sessions.reindex(client_ids) <= window).to_numpy() | (window == 0)
        np.testing.assert_allclose(
            frame.clients["alliance"][short], everything.clients["alliance"][short]
        )
        assert frame.memberships.equals(everything.memberships)


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
