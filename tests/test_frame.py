"""The analysis frame on a hand-made study whose every derived value was worked out by hand.

See ``tests/data_builders.py`` for the tables. Sorted ids give the pseudonyms:
clients C00001 = "007", C00002 = a2, C00003 = a3, C00004 = a4, C00005 = a5;
providers P0001 = K1 (coach), P0002 = K2 (coach), P0003 = T1 (therapist), P0004 = T2 (therapist);
T9 has no sessions and is left out.

Client-provider means (goal, bond; composite = their mean; n sessions):
  007-T1 (4.5, 5; 4.75; 2)   a2-K1 (4, 4; 4; 3)   a3-T1 (5, 4; 4.5; 1)   a3-K1 (3, 3; 3; 3)
  a4-K2 (5, 5; 5; 2, one bond missing)   a5-T2 (1, 2; 1.5; 1)   a5-K2 (3, 4; 3.5; 1)
Provider means over their clients (goal, bond, composite):
  K1 (3.5, 3.5, 3.5)   K2 (4, 4.5, 4.25)   T1 (4.75, 4.5, 4.625)   T2 (1, 2, 1.5)
Client means over sessions (goal, bond, composite):
  007 (4.5, 5, 4.75)  a2 (4, 4, 4)  a3 (14/4 = 3.5, 13/4 = 3.25, 3.375)  a4 (5, 5, 5)
  a5 (2, 3, 2.5)
Between = sum_p w_ip m_p, e.g. a3 goal: 0.25 * 4.75 + 0.75 * 3.5 = 3.8125, within 3.5 - 3.8125.

Early alliance, first 2 sessions (a3: T1 (5, 4) then K1 (2, 3); a2: K1 (3, 4), (4, 4); others keep
every session): provider means K1 (2.75, 3.5), K2 (4, 4.5), T1 (4.75, 4.5), T2 (1, 2); a3's part
weights are 1/2 and 1/2 (one window session with each), so its goal between is
0.5 * 4.75 + 0.5 * 2.75 = 3.75, within 3.5 - 3.75. All-session weights (0.25, 0.75) would give
3.25 and a within part of +0.25 instead of -0.25.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.data import AnalysisFrame, build_frame, load_study
from data_builders import add_column, drop_column, tiny_tables, write_csv_study


@pytest.fixture
def study(tmp_path):
    return load_study(write_csv_study(tmp_path / "study", tiny_tables()))


@pytest.fixture
def frame(study) -> AnalysisFrame:
    return build_frame(study)


def col(frame: AnalysisFrame, name: str) -> list:
    return frame.clients[name].tolist()


def test_pseudonyms_and_no_raw_ids(frame):
    assert col(frame, "client") == ["C00001", "C00002", "C00003", "C00004", "C00005"]
    assert frame.clients.index.equals(pd.RangeIndex(5))
    assert frame.providers["provider"].tolist() == ["P0001", "P0002", "P0003", "P0004"]
    assert frame.providers["provider_type"].tolist() == ["coach", "coach", "therapist", "therapist"]
    assert list(frame.providers["provider_type"].cat.categories) == ["therapist", "coach"]
    text = "\n".join(
        df.to_csv() for df in (frame.clients, frame.providers, frame.memberships, frame.sessions)
    )
    for raw_id in ("007", "a2", "a3", "a4", "a5", "T1", "T2", "K1", "K2", "T9"):
        assert raw_id not in text


def test_care_type_counts_and_ages(frame):
    assert col(frame, "care_type") == ["therapist", "coach", "both", "coach", "both"]
    assert list(frame.clients["care_type"].cat.categories) == ["therapist", "coach", "both"]
    assert col(frame, "n_sessions") == [2, 3, 4, 2, 2]
    assert col(frame, "n_providers") == [1, 1, 2, 1, 2]
    assert col(frame, "age") == [30.0, 45.0, 52.0, 18.0, 100.0]
    assert frame.providers["n_clients"].tolist() == [2, 2, 2, 1]
    assert frame.providers["n_sessions"].tolist() == [6, 3, 3, 1]


def test_sex_male_country_missing_kept(frame):
    c = frame.clients
    assert c["sex"].tolist()[:3] == ["female", "male", "other"]
    assert pd.isna(c["sex"][3])
    # "male vs not male": other is not male; an empty sex is unknown
    np.testing.assert_array_equal(c["male"], [0.0, 1.0, 0.0, np.nan, 1.0])
    assert c["country"].tolist()[0] == "DE" and pd.isna(c["country"][1])


def test_days_from_dates(frame):
    # 2021-01-04..18; Feb 2021 (28 days); across new year; same day; leap year 2020.
    assert col(frame, "days_in_care") == [14.0, 28.0, 3.0, 0.0, 2.0]


def test_outcomes_and_missing_followups_stay_nan(frame):
    c = frame.clients
    np.testing.assert_array_equal(c["who5_baseline"], [20, 28, 60, 12, 44])
    np.testing.assert_array_equal(c["who5_followup"], [40, np.nan, 64, 32, np.nan])
    np.testing.assert_array_equal(c["who5_change"], [20, np.nan, 4, 20, np.nan])
    np.testing.assert_array_equal(c["phq9_baseline"], [12, np.nan, 9, np.nan, 15])
    np.testing.assert_array_equal(c["phq9_followup"], [6, np.nan, 5, np.nan, np.nan])
    np.testing.assert_array_equal(c["phq9_change"], [-6, np.nan, -4, np.nan, np.nan])


@pytest.mark.parametrize(
    ("rule", "kwargs", "expected"),
    [
        ("who5", {}, [True, True, False, True, False]),  # <= 28 includes the boundary (a2)
        ("who5", {"who5_cutoff": 20}, [True, False, False, True, False]),
        ("phq9", {}, [True, False, False, False, True]),  # missing PHQ-9 -> False
        ("phq9", {"phq9_cutoff": 9}, [True, False, True, False, True]),
        ("phq9_else_who5", {}, [True, True, False, True, True]),
    ],
)
def test_elevated_rules(study, rule, kwargs, expected):
    frame = build_frame(study, elevated_by=rule, **kwargs)
    assert frame.clients["elevated"].dtype == bool
    assert col(frame, "elevated") == expected


def test_unknown_elevated_rule(study):
    with pytest.raises(ValueError, match="elevated_by"):
        build_frame(study, elevated_by="who-5")


def test_memberships_and_weights(frame):
    m = frame.memberships
    assert m.columns.tolist() == ["client_index", "provider_index", "n_sessions", "weight"]
    assert m["client_index"].tolist() == [0, 1, 2, 2, 3, 4, 4]
    assert m["provider_index"].tolist() == [2, 0, 0, 2, 1, 1, 3]
    assert m["n_sessions"].tolist() == [2, 3, 3, 1, 2, 1, 1]
    assert m["weight"].tolist() == [1.0, 1.0, 0.75, 0.25, 1.0, 0.5, 0.5]
    np.testing.assert_allclose(m.groupby("client_index")["weight"].sum(), 1.0)


def test_client_alliance_means(frame):
    assert frame.subscales == ("goal", "bond")
    assert col(frame, "alliance_goal") == [4.5, 4.0, 3.5, 5.0, 2.0]
    assert col(frame, "alliance_bond") == [5.0, 4.0, 3.25, 5.0, 3.0]  # a4: missing bond ignored
    assert col(frame, "alliance") == [4.75, 4.0, 3.375, 5.0, 2.5]
    assert frame.clients["alliance_task"].isna().all()
    assert "alliance_task_between" not in frame.clients
    assert "alliance_task_mean" not in frame.providers


def test_provider_means(frame):
    p = frame.providers
    assert p["alliance_goal_mean"].tolist() == [3.5, 4.0, 4.75, 1.0]
    assert p["alliance_bond_mean"].tolist() == [3.5, 4.5, 4.5, 2.0]
    assert p["alliance_mean"].tolist() == [3.5, 4.25, 4.625, 1.5]


def test_between_and_within(frame):
    c = frame.clients
    assert c["alliance_goal_between"].tolist() == [4.75, 3.5, 3.8125, 4.0, 2.5]
    assert c["alliance_goal_within"].tolist() == [-0.25, 0.5, -0.3125, 1.0, -0.5]
    assert c["alliance_bond_between"].tolist() == [4.5, 3.5, 3.75, 4.5, 3.25]
    assert c["alliance_bond_within"].tolist() == [0.5, 0.5, -0.5, 0.5, -0.25]
    assert c["alliance_between"].tolist() == [4.625, 3.5, 3.78125, 4.25, 2.875]
    assert c["alliance_within"].tolist() == [0.125, 0.5, -0.40625, 0.75, -0.375]
    for s in ("goal_", "bond_", ""):
        total = c[f"alliance_{s}between"] + c[f"alliance_{s}within"]
        np.testing.assert_allclose(total, c[f"alliance{'_' + s[:-1] if s else ''}"])


def test_sessions_ordered_by_date(frame):
    s = frame.sessions
    assert s.columns.tolist() == [
        "client_index",
        "provider_index",
        "session_index",
        "wai_goal",
        "wai_bond",
        "wai_task",
    ]
    for item in ("wai_goal", "wai_bond", "wai_task"):
        assert s[item].dtype == "Int64"
    a3 = s[s["client_index"] == 2]
    assert a3["session_index"].tolist() == [1, 2, 3, 4]
    assert a3["wai_goal"].tolist() == [5, 2, 3, 4]  # T1 on 30 Dec first, then K1 by date
    assert a3["provider_index"].tolist() == [2, 0, 0, 0]
    a4 = s[s["client_index"] == 3]  # same date twice: file order breaks the tie
    assert a4["wai_bond"].isna().tolist() == [False, True]
    assert s["wai_task"].isna().all()


def test_session_index_orders_when_given(tmp_path):
    tables = tiny_tables()
    drop_column(tables["sessions"], "session_date")
    # a3's rows (file rows 1, 3, 7, 9) get indices 4, 1, 2, 3.
    index = ["4", "2", "1", "1", "1", "2", "2", "3", "3", "1", "2", "2", "1"]
    add_column(tables["sessions"], "session_index", index)
    frame = build_frame(load_study(write_csv_study(tmp_path / "s", tables)))
    a3 = frame.sessions[frame.sessions["client_index"] == 2]
    assert a3["wai_goal"].tolist() == [5, 2, 3, 4]


def test_early_alliance_window_splits_on_the_same_sessions(study):
    frame = build_frame(study, alliance_sessions=2)
    c, p = frame.clients, frame.providers
    assert frame.alliance_sessions == 2
    assert col(frame, "alliance_goal") == [4.5, 3.5, 3.5, 5.0, 2.0]
    assert col(frame, "alliance_bond") == [5.0, 4.0, 3.5, 5.0, 3.0]
    assert p["alliance_goal_mean"].tolist() == [2.75, 4.0, 4.75, 1.0]
    assert p["alliance_bond_mean"].tolist() == [3.5, 4.5, 4.5, 2.0]
    assert c["alliance_goal_between"].tolist() == [4.75, 2.75, 3.75, 4.0, 2.5]
    assert c["alliance_goal_within"].tolist() == [-0.25, 0.75, -0.25, 1.0, -0.5]
    assert c["alliance_bond_between"].tolist() == [4.5, 3.5, 4.0, 4.5, 3.25]
    assert c["alliance_bond_within"].tolist() == [0.5, 0.5, -0.5, 0.5, -0.25]
    assert c["alliance_between"].tolist() == [4.625, 3.125, 3.875, 4.25, 2.875]
    # sessions behind each score: a4's second bond is missing; a2 and a3 are cut by the window
    assert col(frame, "alliance_goal_n_sessions") == [2, 2, 2, 2, 2]
    assert col(frame, "alliance_bond_n_sessions") == [2, 2, 2, 1, 2]
    assert col(frame, "alliance_n_sessions") == [2, 2, 2, 2, 2]
    assert (c["alliance_n_sessions"] < c["n_sessions"]).tolist() == [False, True, True] + [
        False
    ] * 2
    w = frame.alliance_weights("goal")
    assert w[w["client_index"] == 2]["weight"].tolist() == [0.5, 0.5]
    # the exposure weights (provider effects) still count every session
    assert frame.memberships.equals(build_frame(study).memberships)


def test_select_keeps_the_window_split(study):
    frame = build_frame(study, alliance_sessions=2)
    sub = frame.select(frame.clients["care_type"].eq("both").to_numpy())  # a3 and a5
    assert sub.alliance_sessions == 2
    w = sub.alliance_weights("goal")
    m = sub.providers["alliance_goal_mean"].to_numpy()
    rebuilt = (w["weight"] * m[w["provider_index"]]).groupby(w["client_index"]).sum()
    assert rebuilt.tolist() == sub.clients["alliance_goal_between"].tolist() == [3.75, 2.5]


def test_window_drops_providers_seen_later(study):
    # First session only: a3 has T1 in the window, not K1; a5 has K2, not T2, and nobody rated T2.
    frame = build_frame(study, alliance_sessions=1)
    c = frame.clients
    np.testing.assert_array_equal(frame.providers["alliance_goal_mean"], [3.0, 4.0, 4.5, np.nan])
    assert c["alliance_goal_between"].tolist() == [4.5, 3.0, 4.5, 4.0, 4.0]
    assert c["alliance_goal_within"].tolist() == [-0.5, 0.0, 0.5, 1.0, -1.0]
    assert frame.alliance_weights("goal")["provider_index"].tolist() == [2, 0, 2, 1, 1]


def test_a_window_beyond_every_client_changes_nothing(study):
    full, wide = build_frame(study), build_frame(study, alliance_sessions=4)
    pd.testing.assert_frame_equal(full.clients, wide.clients)
    pd.testing.assert_frame_equal(full.providers, wide.providers)


def test_alliance_weights_rejects_unknown_subscale(frame):
    with pytest.raises(ValueError, match="subscale"):
        frame.alliance_weights("composite")


def test_task_subscale_when_present(tmp_path):
    tables = tiny_tables()
    # task ratings: 007 -> 3, 5 (T1); a3 -> T1 4, K1 2, 2, empty; others empty.
    task = ["2", "5", "4", "", "3", "", "", "", "2", "", "", "", ""]
    add_column(tables["sessions"], "wai_task", task)
    frame = build_frame(load_study(write_csv_study(tmp_path / "s", tables)))
    assert frame.subscales == ("goal", "bond", "task")
    c, p = frame.clients, frame.providers
    np.testing.assert_array_equal(c["alliance_task"], [4.0, np.nan, 8 / 3, np.nan, np.nan])
    # providers: K1 has a3 only (2.0); T1 has 007 (4) and a3 (4) -> 4; K2, T2 unrated.
    np.testing.assert_array_equal(p["alliance_task_mean"], [2.0, np.nan, 4.0, np.nan])
    # a3's task score rests on 1 T1 and 2 K1 sessions: weights 1/3, 2/3, between
    # 4/3 + 4/3 = 8/3, within 0 (a3 rated each provider at its mean). The all-session weights
    # (0.25, 0.75) would give 2.5 and a within part of 1/6 that is a difference between providers.
    # a2 rated no task item: no score, no parts.
    np.testing.assert_allclose(c["alliance_task_between"], [4.0, np.nan, 8 / 3, np.nan, np.nan])
    np.testing.assert_allclose(c["alliance_task_within"], [0.0, np.nan, 0.0, np.nan, np.nan])
    assert col(frame, "alliance_task_n_sessions") == [2, 0, 3, 0, 0]
    w = frame.alliance_weights("task")
    np.testing.assert_allclose(w["weight"], [1.0, 2 / 3, 1 / 3])
    assert w["provider_index"].tolist() == [2, 0, 2]
    # the composite ignores the task item
    assert c["alliance"].tolist() == [4.75, 4.0, 3.375, 5.0, 2.5]


def test_membership_arrays_padding(frame):
    index, weight = frame.membership_arrays()
    assert index.dtype == np.int64 and weight.dtype == np.float64
    assert index.shape == weight.shape == (5, 2)
    np.testing.assert_array_equal(index, [[2, 0], [0, 0], [0, 2], [1, 0], [1, 3]])
    np.testing.assert_array_equal(weight, [[1, 0], [1, 0], [0.75, 0.25], [1, 0], [0.5, 0.5]])
    # effect_i = sum_k w[i, k] * u[idx[i, k]] recovers the between part from provider means
    u = frame.providers["alliance_goal_mean"].to_numpy()
    np.testing.assert_allclose(
        (weight * u[index]).sum(axis=1), frame.clients["alliance_goal_between"]
    )


def test_select_keeps_consistency(frame):
    sub = frame.select(frame.clients["care_type"].eq("both").to_numpy())
    assert sub.clients["client"].tolist() == ["C00003", "C00005"]
    assert sub.clients.index.equals(pd.RangeIndex(2))
    # K1, K2, T1, T2 all still have a client (a3: T1 + K1, a5: T2 + K2)
    assert sub.providers["provider"].tolist() == ["P0001", "P0002", "P0003", "P0004"]
    assert sub.providers["n_clients"].tolist() == [1, 1, 1, 1]
    assert sub.providers["n_sessions"].tolist() == [3, 1, 1, 1]
    # between/within and provider means are those computed on all clients
    assert sub.clients["alliance_goal_between"].tolist() == [3.8125, 2.5]
    assert sub.providers["alliance_goal_mean"].tolist() == [3.5, 4.0, 4.75, 1.0]
    assert sub.memberships["client_index"].tolist() == [0, 0, 1, 1]
    assert len(sub.sessions) == 6 and set(sub.sessions["client_index"]) == {0, 1}

    only = frame.select(np.array([False, False, False, True, False]))  # a4 saw K2 only
    assert only.providers["provider"].tolist() == ["P0002"]
    assert only.memberships[["client_index", "provider_index"]].values.tolist() == [[0, 0]]
    assert set(only.sessions["provider_index"]) == {0}
    index, weight = only.membership_arrays()
    assert index.tolist() == [[0]] and weight.tolist() == [[1.0]]
    assert only.data_sha256 == frame.data_sha256
    assert len(frame.clients) == 5  # the original is untouched


def test_select_rejects_bad_masks(frame):
    with pytest.raises(ValueError, match="shape"):
        frame.select(np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        frame.select(np.ones(5))
    with pytest.raises(ValueError, match="index"):
        frame.select(pd.Series(True, index=range(1, 6)))


def test_summary_and_sha(frame, study):
    text = frame.summary()
    assert frame.data_sha256 == study.sha256
    assert "clients:   5 (therapist 1, coach 2, both 2)" in text
    assert "providers: 4 (therapist 2, coach 2)" in text
    assert "sessions:  13" in text
    assert "median 4.00" in text
    assert "WHO-5 follow-up observed: 3 of 5" in text
    assert "elevated at baseline [WHO-5 baseline <= 28]: 3" in text
    assert "elevated with WHO-5 follow-up: 2" in text
