"""One writer for Markdown and LaTeX tables (booktabs), used by every table the package writes.

Cells arrive as display strings; the writers only escape and lay them out, so that rounding stays
with the code that knows the quantity (MCSE-aware rounding in :mod:`~alliance_bayes.report.tables`).
"""

from __future__ import annotations

from collections.abc import Sequence

_LATEX_MAP = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "—": "---",
    "−": "$-$",
    "×": r"$\times$",
    "²": r"\textsuperscript{2}",
    "✓": "ok",
    "`": "",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the few Unicode symbols we use to plain LaTeX."""
    return "".join(_LATEX_MAP.get(ch, ch) for ch in str(text))


def md_escape(text: str) -> str:
    """Escape the one character that breaks a Markdown table cell."""
    return str(text).replace("|", "\\|")


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool] | None = None
) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table; ``numeric`` columns are right-aligned."""
    numeric = numeric or [False] * len(header)
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return lines


def latex_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str,
    caption: str = "",
    label: str = "",
    size: str = "",
    escaped: bool = False,
) -> list[str]:
    """Lines of a LaTeX ``table`` float with booktabs rules (``\\usepackage{booktabs}``).

    Cells and header are escaped with :func:`latex_escape` unless ``escaped`` (already LaTeX).
    """
    esc = (lambda s: str(s)) if escaped else latex_escape
    lines = [r"\begin{table}[ht]", r"\centering"]
    if size:
        lines.append(size)
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(esc(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return lines
