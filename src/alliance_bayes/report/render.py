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
    # Under the default OT1 font encoding "<" and ">" typeset as "¡" and "¿" in text.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "→": r"$\rightarrow$",
    "√": r"$\surd$",
    "…": r"\ldots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "³": r"\textsuperscript{3}",
    "½": r"$\frac12$",
}
# pdfLaTeX's UTF-8 input knows no Greek letter: each becomes its math symbol.
_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "η": "eta",
    "θ": "theta", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu", "π": "pi", "ρ": "rho",
    "σ": "sigma", "τ": "tau", "φ": "phi", "χ": "chi", "ψ": "psi", "ω": "omega",
    "Δ": "Delta", "Σ": "Sigma", "Φ": "Phi", "Ω": "Omega",
}  # fmt: skip
_LATEX_MAP.update({ch: rf"$\{name}$" for ch, name in _GREEK.items()})


def latex_escape(text: str) -> str:
    r"""Escape LaTeX specials and map the Unicode symbols we use to plain LaTeX.

    The result typesets under pdfLaTeX with the default font encoding: ``<``, ``>`` and ``|``
    become ``\textless{}``, ``\textgreater{}`` and ``\textbar{}`` (in OT1 the characters
    themselves print as other glyphs), Greek letters and mathematical signs become their math
    symbols. Other non-ASCII letters (accented names) pass through for LaTeX's UTF-8 input.
    """
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
    row_comments: Sequence[str] = (),
    fit_width: str = "",
) -> list[str]:
    """Lines of a LaTeX ``table`` float with booktabs rules (``\\usepackage{booktabs}``).

    Cells and header are escaped with :func:`latex_escape` unless ``escaped`` (already LaTeX).
    ``row_comments`` (one per row, ``""`` for none) end their rows as ``% comment``: they name
    what a row shows without printing it. ``fit_width``, the name of a save box the document
    has (:data:`FIT_WIDTH_BOX`), sets the tabular in it and scales it down to the line width
    only where it is wider (``\\resizebox``, ``\\usepackage{graphicx}``): a table never runs
    into the margin, and one that fits keeps its type size.
    """
    esc = (lambda s: str(s)) if escaped else latex_escape
    lines = [r"\begin{table}[ht]", r"\centering"]
    if size:
        lines.append(size)
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    if fit_width:
        lines.append(rf"\sbox{{{fit_width}}}{{%")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(esc(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    comments = [*row_comments, *([""] * (len(rows) - len(row_comments)))]
    lines += [
        " & ".join(esc(c) for c in r) + r" \\" + (f" % {note}" if note else "")
        for r, note in zip(rows, comments, strict=True)
    ]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if fit_width:
        box = rf"\usebox{{{fit_width}}}"
        lines += [
            "}%",
            rf"\ifdim\wd{fit_width}>\linewidth\resizebox{{\linewidth}}{{!}}{{{box}}}"
            rf"\else{box}\fi",
        ]
    lines += [r"\end{table}", ""]
    return lines


#: The save box :func:`latex_table` measures a table in (``fit_width``); a fragment declares it
#: once with :data:`FIT_WIDTH_DECLARATION`, which is harmless when the fragment is input twice.
FIT_WIDTH_BOX = r"\abtablebox"
FIT_WIDTH_DECLARATION = rf"\ifdefined{FIT_WIDTH_BOX}\else\newsavebox{{{FIT_WIDTH_BOX}}}\fi"
