"""``tables.docx``: the bundle's tables as a Word document in APA layout, read back with python-docx."""

from __future__ import annotations

import pytest

from alliance_bayes.diagnostics import check_convergence
from alliance_bayes.model.regression.estimands import compute_estimands
from alliance_bayes.report.bundle import ReportContent, write_bundle
from alliance_bayes.report.hypotheses import hypothesis_table
from alliance_bayes.report.tables import all_tables, shared_note
from fake_posterior import CARE_WEIGHTS, make_fake_datatree, make_fake_meta

docx = pytest.importorskip("docx")

UNITS = "WHO-5 points"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    dt = make_fake_datatree(draws=200, seed=5)
    post, prior = (
        compute_estimands(dt[g].to_dataset(), outcome_units=UNITS, care_weights=CARE_WEIGHTS)
        for g in ("posterior", "prior")
    )
    hyp = hypothesis_table(["b_goal_within > b_bond_within"], post, prior, rope=2.0)
    meta = make_fake_meta(dt)
    out = write_bundle(
        tmp_path_factory.mktemp("results"),
        "who5_change",
        "r1",
        dt,
        meta,
        post,
        check_convergence(dt, post),
        content=ReportContent(hypotheses=hyp),
    )
    return out, all_tables(post, meta, hyp, None), shared_note(post, meta)


def _borders(cell) -> set[str]:
    from docx.oxml.ns import qn

    found = cell._tc.tcPr.find(qn("w:tcBorders")) if cell._tc.tcPr is not None else None
    return set() if found is None else {child.tag.split("}")[1] for child in found}


def test_every_table_of_tables_md_is_in_the_word_file_with_its_rows(written):
    out, tables, _ = written
    document = docx.Document(str(out / "tables.docx"))
    assert len(document.tables) == len(tables) > 1
    texts = [p.text for p in document.paragraphs]
    # the same tables, in the same order, as the bundle's tables.md
    markdown = (out / "tables.md").read_text(encoding="utf-8").splitlines()
    headings = [line.removeprefix("### ") for line in markdown if line.startswith("### ")]
    assert headings[1:] == [t.title for t in tables]  # the first is "About these tables"
    for k, (grid, table) in enumerate(zip(document.tables, tables, strict=True), start=1):
        # "Table k" in bold, then the title in italics
        number = texts.index(f"Table {k}")
        assert texts[number + 1] == table.title
        assert document.paragraphs[number].runs[0].bold
        assert document.paragraphs[number + 1].runs[0].italic
        cells = [[c.text for c in row.cells] for row in grid.rows]
        assert cells[0][: len(table.header)] == table.header
        assert [r[: len(table.header)] for r in cells[1:]] == table.rows
        if any(table.names):
            # the stable name of each row, to trace it to estimands.csv
            assert cells[0][-1] == "Estimand"
            assert [r[-1] for r in cells[1:]] == [
                table.names[i] if i < len(table.names) else "" for i in range(len(table.rows))
            ]


def test_only_horizontal_rules_above_and_below_the_header_and_below_the_last_row(written):
    out, _, _ = written
    grid = docx.Document(str(out / "tables.docx")).tables[0]
    rows = grid.rows
    assert all(_borders(c) == {"top", "bottom"} for c in rows[0].cells)
    assert all(_borders(c) == {"bottom"} for c in rows[-1].cells)
    assert all(not _borders(c) for row in rows[1:-1] for c in row.cells)


def test_each_table_has_a_note_and_the_shared_notes_come_once(written):
    out, tables, shared = written
    notes = [p.text for p in docx.Document(str(out / "tables.docx")).paragraphs]
    notes = [t for t in notes if t.startswith("Note. ")]
    assert len(notes) == len(tables)
    for note, table in zip(notes, tables, strict=True):
        assert table.caption in note
    # the notes every table shares, once, under the first
    assert shared in notes[0] and not any(shared in note for note in notes[1:])
    assert "tables.docx" in (out / "report.md").read_text(encoding="utf-8")
