r"""Table 1 of a study: the sample by care type (therapist, coach, both) and over all clients.

The columns are the study's care types (:attr:`~alliance_bayes.data.frame.AnalysisFrame.
care_types`, the categories of the clients' ``care_type``: under declared provider types such as
therapist, coach, psychiatrist, the combinations its clients saw), then ``all``.

Descriptive statistics of the analysis frame, no model: n; age mean (SD); % male among clients
whose sex is recorded; sessions median [IQR]; the client alliance score (goal and bond averaged
over sessions, the paper's score) median [IQR]; WHO-5 and PHQ-9 at baseline and follow-up, mean
(SD) and n; missing follow-up n (%) (WHO-5: of the clients in the column; PHQ-9: of those with a
PHQ-9 baseline); elevated at baseline n (%). SDs are sample SDs (:math:`n - 1`); quartiles
interpolate linearly between order statistics (pandas' default).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from alliance_bayes.data.care import CARE_TYPES, JOIN, care_words
from alliance_bayes.report.render import markdown_table

__all__ = [
    "CARE_COLUMNS",
    "care_columns",
    "care_phrase",
    "care_title",
    "sample_characteristics",
    "sample_table_markdown",
]

#: Columns of Table 1 under the contract's care types: the care types, then every client.
CARE_COLUMNS = (*CARE_TYPES, "all")


def care_columns(clients: pd.DataFrame) -> tuple[str, ...]:
    """Table 1's columns for these clients: their care types, then ``all``.

    The categories of a categorical ``care_type`` (the frame's care types, in their order, a
    group without clients included); for plain text, the contract's care types followed by any
    other care type of the clients in order of appearance.
    """
    care = clients["care_type"]
    if isinstance(care.dtype, pd.CategoricalDtype):
        return (*(str(c) for c in care.cat.categories), "all")
    seen = dict.fromkeys(care.dropna().astype(str))
    return (*CARE_TYPES, *(c for c in seen if c not in CARE_TYPES), "all")


def care_title(care: str) -> str:
    """A care type as a column heading: ``therapist_and_coach`` → ``Therapist and coach``."""
    text = care_words(care)
    return text[:1].upper() + text[1:]


def care_phrase(care: str) -> str:
    """A care type in a sentence: ``therapist only``, ``both``, ``therapist and psychiatrist``."""
    if care == "both" or JOIN in care:
        return care_words(care)
    return f"{care} only"


def _by_care(clients: pd.DataFrame) -> dict[str, pd.DataFrame]:
    care = clients["care_type"].astype(str)
    cares = care_columns(clients)[:-1]
    return {**{c: clients[care == c] for c in cares}, "all": clients}


def _mean_sd_n(x: pd.Series) -> tuple[float, float, float]:
    x = x.dropna().astype(float)
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return (float(x.mean()) if len(x) else math.nan), sd, float(len(x))


def _quartiles(x: pd.Series) -> tuple[float, float, float]:
    x = x.dropna().astype(float)
    if not len(x):
        return math.nan, math.nan, math.nan
    q = x.quantile([0.5, 0.25, 0.75]).to_numpy()
    return float(q[0]), float(q[1]), float(q[2])


def sample_characteristics(
    clients: pd.DataFrame, *, who5_cutoff: float = 28, phq9_cutoff: float = 10
) -> pd.DataFrame:
    """Table 1's numbers: one row per quantity, one column per care type and ``all``.

    Parameters
    ----------
    clients : pandas.DataFrame
        :attr:`~alliance_bayes.data.frame.AnalysisFrame.clients` (``care_type``, ``age``,
        ``male``, ``n_sessions``, ``alliance``, ``who5_*``, ``phq9_*``).
    who5_cutoff, phq9_cutoff : float
        Elevated at baseline: WHO-5 at or below ``who5_cutoff``; PHQ-9 at or above
        ``phq9_cutoff`` (the paper's rule and the usual PHQ-9 one).

    Returns
    -------
    pandas.DataFrame
        Index: ``n``; ``age_mean``, ``age_sd``; ``male_pct`` (of ``sex_n`` clients with sex
        recorded); ``sessions_median``, ``sessions_q1``, ``sessions_q3``; ``alliance_median``,
        ``alliance_q1``, ``alliance_q3``; for each of ``who5_baseline``, ``who5_followup``,
        ``phq9_baseline``, ``phq9_followup`` its ``_mean``, ``_sd`` and ``_n``;
        ``who5_followup_missing_n``/``_pct`` (of the clients), ``phq9_followup_missing_n``/``_pct``
        (of those with a PHQ-9 baseline); ``who5_elevated_n``/``_pct`` and
        ``phq9_elevated_n``/``_pct`` (of those with that baseline). Columns
        :func:`care_columns` (:data:`CARE_COLUMNS` under the contract's care types).
        Percentages are 0–100.
    """
    out: dict[str, dict[str, float]] = {}
    for col, c in _by_care(clients).items():
        row: dict[str, float] = {"n": float(len(c))}
        row["age_mean"], row["age_sd"], _ = _mean_sd_n(c["age"])
        male = c["male"].dropna().astype(float)
        row["sex_n"] = float(len(male))
        row["male_pct"] = 100.0 * float(male.mean()) if len(male) else math.nan
        for name, column in (("sessions", "n_sessions"), ("alliance", "alliance")):
            q = _quartiles(c[column])
            row[f"{name}_median"], row[f"{name}_q1"], row[f"{name}_q3"] = q
        for score in ("who5_baseline", "who5_followup", "phq9_baseline", "phq9_followup"):
            m, s, n = _mean_sd_n(c[score])
            row[f"{score}_mean"], row[f"{score}_sd"], row[f"{score}_n"] = m, s, n
        missing = c["who5_followup"].isna()
        row["who5_followup_missing_n"] = float(missing.sum())
        row["who5_followup_missing_pct"] = 100.0 * float(missing.mean()) if len(c) else math.nan
        with_phq9 = c[c["phq9_baseline"].notna()]
        missing = with_phq9["phq9_followup"].isna()
        row["phq9_followup_missing_n"] = float(missing.sum())
        row["phq9_followup_missing_pct"] = (
            100.0 * float(missing.mean()) if len(with_phq9) else math.nan
        )
        for score, elevated in (
            ("who5", c["who5_baseline"].dropna() <= who5_cutoff),
            ("phq9", c["phq9_baseline"].dropna() >= phq9_cutoff),
        ):
            row[f"{score}_elevated_n"] = float(elevated.sum())
            row[f"{score}_elevated_pct"] = (
                100.0 * float(elevated.mean()) if len(elevated) else math.nan
            )
        out[col] = row
    table = pd.DataFrame(out)[list(care_columns(clients))]
    table.attrs.update(who5_cutoff=who5_cutoff, phq9_cutoff=phq9_cutoff)
    return table


def _num(x: float, digits: int = 1) -> str:
    return "—" if not np.isfinite(x) else f"{x:,.{digits}f}"


def _count(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{int(x):,}"


def _median(col: pd.Series, name: str, digits: int) -> str:
    """``median [q1–q3]``; ``digits=0`` for counts, whose quartiles show only the decimals they
    have (2.25 sessions, not 2.2)."""
    m, lo, hi = col[f"{name}_median"], col[f"{name}_q1"], col[f"{name}_q3"]
    if not np.isfinite(m):
        return "—"

    def fmt(x: float) -> str:
        return f"{x:.2f}".rstrip("0").rstrip(".") if digits == 0 else f"{x:.{digits}f}"

    return f"{fmt(m)} [{fmt(lo)}–{fmt(hi)}]"


def _score(col: pd.Series, name: str) -> str:
    if col[f"{name}_n"] == 0:
        return "— (n = 0)"
    return (
        f"{_num(col[f'{name}_mean'])} ({_num(col[f'{name}_sd'])}); n = {_count(col[f'{name}_n'])}"
    )


def _share(col: pd.Series, name: str) -> str:
    n, pct = col[f"{name}_n"], col[f"{name}_pct"]
    return f"{_count(n)} ({_num(pct)}%)" if np.isfinite(pct) else f"{_count(n)} (—)"


def sample_table_markdown(table: pd.DataFrame) -> list[str]:
    """Table 1 (:func:`sample_characteristics`) as Markdown lines, with its notes."""
    w5, p9 = table.attrs.get("who5_cutoff", 28), table.attrs.get("phq9_cutoff", 10)
    rows = [
        ("Clients, n", lambda c: _count(c["n"])),
        ("Age, mean (SD)", lambda c: f"{_num(c['age_mean'])} ({_num(c['age_sd'])})"),
        ("Male, % of sex recorded", lambda c: f"{_num(c['male_pct'])}% of {_count(c['sex_n'])}"),
        ("Sessions, median [IQR]", lambda c: _median(c, "sessions", 0)),
        ("Client alliance (goal+bond), median [IQR]", lambda c: _median(c, "alliance", 2)),
        ("WHO-5 baseline, mean (SD)", lambda c: _score(c, "who5_baseline")),
        ("WHO-5 follow-up, mean (SD)", lambda c: _score(c, "who5_followup")),
        ("WHO-5 follow-up missing, n (%)", lambda c: _share(c, "who5_followup_missing")),
        (f"Elevated (WHO-5 ≤ {w5:g}), n (%)", lambda c: _share(c, "who5_elevated")),
        ("PHQ-9 baseline, mean (SD)", lambda c: _score(c, "phq9_baseline")),
        ("PHQ-9 follow-up, mean (SD)", lambda c: _score(c, "phq9_followup")),
        (
            "PHQ-9 follow-up missing, n (% of PHQ-9 baseline)",
            lambda c: _share(c, "phq9_followup_missing"),
        ),
        (
            f"Elevated (PHQ-9 ≥ {p9:g}), n (% of PHQ-9 baseline)",
            lambda c: _share(c, "phq9_elevated"),
        ),
    ]
    columns = [str(c) for c in table.columns]
    header = ["", *(care_title(c) for c in columns)]
    body = [[label, *(cell(table[c]) for c in columns)] for label, cell in rows]
    cares = ", ".join(care_phrase(c) for c in columns if c != "all")
    return [
        *markdown_table(header, body, numeric=[False, *(True for _ in columns)]),
        "",
        "From the analysis frame (the data, no model). Care type: the providers a client saw "
        f"({cares}). Client alliance: the mean of a client's goal and "
        "bond ratings over sessions, the paper's score (published median 4.8). SD: sample SD; "
        "IQR: quartiles interpolated linearly. Follow-up missing: WHO-5 of the clients in the "
        "column, PHQ-9 of those with a PHQ-9 baseline.",
        "",
    ]
