"""The tables as a Word document (``tables.docx``), for authors who write in Word.

The same tables as ``tables.md`` and ``tables.tex`` (:func:`~alliance_bayes.report.tables.build_tables`
and the hypotheses table), laid out as the APA manual asks (7th ed., section 7.8–7.13): above each
table its number in bold and its title in italics; horizontal rules only, above and below the
header and below the last row; the readable label of each row, with its stable estimand name in a
column of its own so that the table can be traced back to ``estimands.csv``; numbers right-aligned;
and under the table a *Note.* with its caption, the notes shared by every table once, under the
first. Times New Roman 10 pt in the table, as journals set them. Needs python-docx (the ``word``
extra: ``pip install 'alliance-bayes[word]'``); without it the bundle has no ``tables.docx`` and
says so in ``report.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from alliance_bayes.report.tables import Table, all_tables, numeric_columns, shared_note

__all__ = ["docx_available", "write_tables_docx"]

_FONT = "Times New Roman"


def docx_available() -> bool:
    """Whether python-docx is installed (the ``word`` extra)."""
    try:
        import docx  # noqa: F401
    except ImportError:
        return False
    return True


def _rule(cell, *edges: str) -> None:
    """A single 0.75 pt horizontal rule on the given edges (``"top"``, ``"bottom"``) of ``cell``."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    props = cell._tc.get_or_add_tcPr()
    borders = props.find(qn("w:tcBorders"))
    if borders is None:
        borders = OxmlElement("w:tcBorders")
        props.append(borders)
    for edge in edges:
        line = OxmlElement(f"w:{edge}")
        line.set(qn("w:val"), "single")
        line.set(qn("w:sz"), "6")  # eighths of a point
        line.set(qn("w:color"), "000000")
        borders.append(line)


def _text(paragraph, text: str, *, bold: bool = False, italic: bool = False, size: float = 10):
    from docx.shared import Pt

    run = paragraph.add_run(text)
    run.bold, run.italic = bold, italic
    run.font.name = _FONT
    run.font.size = Pt(size)
    return run


def _add_table(document, number: int, table: Table, note: str) -> None:
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH

    _text(document.add_paragraph(), f"Table {number}", bold=True, size=12)
    _text(document.add_paragraph(), table.title, italic=True, size=12)
    names = table.names
    with_names = any(names)
    header = [*table.header, *(["Estimand"] if with_names else [])]
    numeric = [*numeric_columns(table), *([False] if with_names else [])]
    rows = [
        [*row, *([names[i] if i < len(names) else ""] if with_names else [])]
        for i, row in enumerate(table.rows)
    ]
    grid = document.add_table(rows=len(rows) + 1, cols=len(header))
    grid.alignment = WD_TABLE_ALIGNMENT.CENTER
    for i, line in enumerate([header, *rows]):
        for j, value in enumerate(line):
            cell = grid.cell(i, j)
            paragraph = cell.paragraphs[0]
            if numeric[j] and i > 0:
                paragraph.alignment = WD_ALIGN_PARAGRAPH.RIGHT
            elif i == 0 and j > 0:
                paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
            _text(paragraph, str(value))
            if i == 0:
                _rule(cell, "top", "bottom")
            if i == len(rows):
                _rule(cell, "bottom")
    paragraph = document.add_paragraph()
    _text(paragraph, "Note. ", italic=True)
    _text(paragraph, " ".join(part for part in (table.caption, note) if part))


def write_tables_docx(
    path: str | Path,
    estimands: xr.Dataset,
    meta: Mapping[str, Any],
    hypotheses: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
) -> Path:
    """Write every table of ``tables.md`` to ``path`` as a Word document; returns ``path``.

    Raises
    ------
    ImportError
        Without python-docx (see :func:`docx_available`).
    """
    import docx

    document = docx.Document()
    shared = shared_note(estimands, meta)
    for k, table in enumerate(all_tables(estimands, meta, hypotheses, summary), start=1):
        _add_table(document, k, table, shared if k == 1 else "")
    path = Path(path)
    document.save(str(path))
    return path
