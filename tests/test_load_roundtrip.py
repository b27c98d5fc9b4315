"""CSV and Parquet round trips, byte-identical writes and the data hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from alliance_bayes.data import DataContractError, RawStudy, build_frame, load_study, write_study
from alliance_bayes.data.contract import CLIENT_COLUMNS, PROVIDER_COLUMNS, SESSION_COLUMNS
from data_builders import add_column, set_cell, tiny_tables, write_csv_study


def tables_with_task():
    tables = tiny_tables()
    add_column(tables["sessions"], "wai_task", ["2", "5", "4", "", "3", "", "", "", "2"] + [""] * 4)
    return tables


@pytest.fixture
def study(tmp_path):
    return load_study(write_csv_study(tmp_path / "hand", tables_with_task()))


def assert_same_study(a: RawStudy, b: RawStudy) -> None:
    for name in ("providers", "clients", "sessions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def assert_same_frame(a, b) -> None:
    for name in ("clients", "providers", "memberships", "sessions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.subscales == b.subscales


def test_canonical_columns_and_dtypes(study):
    assert tuple(study.providers.columns) == PROVIDER_COLUMNS
    assert tuple(study.clients.columns) == CLIENT_COLUMNS
    assert tuple(study.sessions.columns) == SESSION_COLUMNS
    assert study.clients["age"].dtype == np.float64
    assert study.clients["days_in_care"].dtype == "Int64"
    assert study.sessions["wai_goal"].dtype == "Int64"
    assert study.sessions["session_date"].dtype == "datetime64[ns]"
    # derived from dates: a3's four sessions are 2020-12-30 (row 3), 12-31, 01-01, 01-02 (row 1)
    assert study.sessions["session_index"].tolist()[:3] == [4, 2, 1]
    tables = ("providers", "clients", "sessions")
    assert study.files == {t: study.folder / f"{t}.csv" for t in tables}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip_gives_equal_frames(tmp_path, study, fmt):
    write_study(tmp_path / fmt, study.providers, study.clients, study.sessions, fmt=fmt)
    again = load_study(tmp_path / fmt)
    assert_same_study(study, again)
    assert_same_frame(build_frame(study), build_frame(again))
    assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == sorted(
        f"{t}.{fmt}" for t in ("clients", "providers", "sessions")
    )


def test_csv_and_parquet_load_to_the_same_frames(tmp_path, study):
    write_study(tmp_path / "c", study.providers, study.clients, study.sessions, fmt="csv")
    write_study(tmp_path / "p", study.providers, study.clients, study.sessions, fmt="parquet")
    from_csv, from_parquet = load_study(tmp_path / "c"), load_study(tmp_path / "p")
    assert_same_study(from_csv, from_parquet)
    assert_same_frame(build_frame(from_csv), build_frame(from_parquet))
    assert from_csv.sha256 != from_parquet.sha256  # different bytes, same data


def test_csv_writes_are_byte_identical(tmp_path, study):
    write_study(tmp_path / "a", study.providers, study.clients, study.sessions)
    write_study(tmp_path / "b", study.providers, study.clients, study.sessions)
    again = load_study(tmp_path / "a")
    write_study(tmp_path / "c", again.providers, again.clients, again.sessions)
    for table in ("providers", "clients", "sessions"):
        a = (tmp_path / "a" / f"{table}.csv").read_bytes()
        assert a == (tmp_path / "b" / f"{table}.csv").read_bytes()
        assert a == (tmp_path / "c" / f"{table}.csv").read_bytes()
        assert b"\r" not in a and a.endswith(b"\n")
    text = (tmp_path / "a" / "clients.csv").read_text()
    assert text.splitlines()[0] == ",".join(CLIENT_COLUMNS)
    assert "\n007," in text  # ids stay text
    assert "2021-01-04,2021-01-18,14" in text  # dates as dates
    assert load_study(tmp_path / "a").sha256 == load_study(tmp_path / "b").sha256


def test_sha256_is_over_the_three_files_in_order(study):
    digest = hashlib.sha256()
    for table in ("providers", "clients", "sessions"):
        digest.update(study.files[table].read_bytes())
    assert study.sha256 == digest.hexdigest()
    assert load_study(study.folder).sha256 == study.sha256  # stable


def test_sha256_changes_when_a_value_changes(tmp_path, study):
    tables = tables_with_task()
    set_cell(tables["sessions"], 4, "wai_goal", "4")
    changed = load_study(write_csv_study(tmp_path / "changed", tables))
    assert changed.sha256 != study.sha256
    assert build_frame(changed).data_sha256 == changed.sha256


def test_from_frames_hash_matches_written_csv(tmp_path, study):
    memory = RawStudy.from_frames(study.providers, study.clients, study.sessions)
    assert memory.folder is None and memory.files == {}
    assert_same_study(study, memory)
    write_study(tmp_path / "w", study.providers, study.clients, study.sessions)
    assert load_study(tmp_path / "w").sha256 == memory.sha256


def test_write_refuses_to_make_an_ambiguous_folder(tmp_path, study):
    folder = tmp_path / "s"
    write_study(folder, study.providers, study.clients, study.sessions, fmt="parquet")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(FileExistsError, match="ambiguous"):
        write_study(folder, study.providers, study.clients, study.sessions, fmt="csv")
    assert sorted(p.name for p in folder.iterdir()) == before
    with pytest.raises(ValueError, match="fmt"):
        write_study(folder, study.providers, study.clients, study.sessions, fmt="xlsx")


def test_write_accepts_raw_text_tables(tmp_path):
    tables = tiny_tables()
    raw = {
        name: pd.DataFrame(t["rows"], columns=t["columns"], dtype="str")
        for name, t in tables.items()
    }
    with pytest.raises(DataContractError, match=r"column 'notes'.*declared ignored"):
        write_study(tmp_path / "w", raw["providers"], raw["clients"], raw["sessions"])
    assert not (tmp_path / "w").exists()
    write_study(
        tmp_path / "w", raw["providers"], raw["clients"], raw["sessions"], ignore_columns=["notes"]
    )
    hand = load_study(write_csv_study(tmp_path / "hand", tables))
    assert_same_study(hand, load_study(tmp_path / "w"))
