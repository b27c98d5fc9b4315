"""Real users' exports: each either loads into a model's design or is refused naming file and column.

Each case edits a small simulated study the way a spreadsheet or a database export would.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import alliance_bayes as ab
from alliance_bayes.cli import EXIT_BAD_INPUT, main
from alliance_bayes.fitting import design_of, frame_of


@pytest.fixture
def study(small_study_dir, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(small_study_dir, folder)
    return folder


def _edit(folder, table, change):
    df = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
    change(df).to_csv(folder / f"{table}.csv", index=False)


def test_semicolon_separated_file_is_refused(study):
    path = study / "providers.csv"
    path.write_text(path.read_text().replace(",", ";"))
    with pytest.raises(ab.DataContractError, match=r"providers.csv.*comma-separated.*semicolon"):
        ab.load_study(study)


def test_non_utf8_file_is_refused_with_its_line(study):
    path = study / "clients.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", "é,".encode("latin-1"), 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ab.DataContractError, match=r"clients.csv.*UTF-8.*\(line 4\)"):
        ab.load_study(study)


def test_bom_and_windows_line_endings_read_as_the_clean_file(study, small_study_dir):
    for table in ("providers", "clients", "sessions"):
        path = study / f"{table}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    clean, messy = ab.load_study(small_study_dir), ab.load_study(study)
    for table in ("providers", "clients", "sessions"):
        pd.testing.assert_frame_equal(getattr(clean, table), getattr(messy, table))


def test_leading_zeros_keep_ids_apart(study):
    def rename(df):
        df.loc[0, "client_id"], df.loc[1, "client_id"] = "007", "7"
        return df

    first_two = pd.read_csv(study / "clients.csv", dtype=str)["client_id"][:2].tolist()
    _edit(study, "clients", rename)
    _edit(
        study,
        "sessions",
        lambda df: df.assign(
            client_id=df["client_id"].replace({first_two[0]: "007", first_two[1]: "7"})
        ),
    )
    loaded = ab.load_study(study)
    assert {"007", "7"} <= set(loaded.clients["client_id"])
    sessions = loaded.sessions["client_id"]
    assert sessions.eq("007").sum() > 0 and sessions.eq("7").sum() > 0


def _raw_who5(df):
    for column in ("who5_baseline", "who5_followup"):
        values = pd.to_numeric(df[column].replace("", np.nan))
        df[column] = (values // 4).map(lambda v: "" if pd.isna(v) else str(int(v)))
    return df


def test_raw_who5_is_refused_unless_declared(study, tmp_path, capsys):
    before = ab.load_study(study).clients["who5_baseline"]
    _edit(study, "clients", _raw_who5)
    with pytest.raises(ab.DataContractError, match=r"who5_baseline.*at most 25.*who5-metric raw"):
        ab.load_study(study)
    out = tmp_path / "results"
    assert main(["fit", "paper_table2", "--data", str(study), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "clients.csv" in capsys.readouterr().err and not out.exists()

    declared = ab.load_study(study, who5_metric="raw")
    np.testing.assert_array_equal(declared.clients["who5_baseline"], (before // 4) * 4)


def test_raw_metric_refuses_values_above_25(study):
    with pytest.raises(ab.DataContractError, match=r"who5_baseline.*raw WHO-5 sum score"):
        ab.load_study(study, who5_metric="raw")


def test_sex_other_is_not_male_and_empty_sex_is_a_stated_exclusion(study):
    def sexes(df):
        df.loc[0, "sex"], df.loc[1, "sex"] = "other", ""
        return df

    _edit(study, "clients", sexes)
    spec = ab.load_spec("who5_change")
    clients = frame_of(spec, ab.load_study(study)).clients
    male = clients.groupby("sex", dropna=False)["male"].unique()
    assert male["other"].tolist() == [0.0] and male["male"].tolist() == [1.0]
    assert clients["male"].isna().sum() == 1  # the empty one: unknown, not "not male"
    design = design_of(spec, ab.load_study(study))
    assert design.exclusions["missing_male"] in (0, 1)  # 0 when that client lacks follow-up


def test_task_rated_at_some_sessions_enters_through_those_sessions(study):
    def task(df):
        rated = np.arange(len(df)) % 3 == 0
        df["wai_task"] = np.where(rated, df["wai_goal"], "")
        return df

    _edit(study, "sessions", task)
    loaded = ab.load_study(study)
    subscales = design_of(ab.load_spec("who5_change"), loaded)
    assert subscales.subscales == ("goal", "bond", "task")
    assert subscales.exclusions["missing_alliance_task"] > 0
    assert not np.isnan(subscales.alliance).any()
    composite = design_of(ab.load_spec("paper_table2"), loaded)
    assert "missing_alliance_task" not in composite.exclusions
