"""``report.html``: the bundle's ``report.md`` as one self-contained page that opens offline.

Markdown is rendered by markdown-it-py (CommonMark with tables); every figure the report shows is
embedded as a base64 ``data:`` URI; TeX between ``$$ … $$`` (display) or ``$ … $`` (inline) is drawn
by matplotlib's mathtext into inline SVG, so no script, font or network request is needed. Math that
mathtext cannot draw is shown as its TeX source in ``<code>``.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["markdown_to_html"]

_DISPLAY = re.compile(r"^\$\$(.+?)\$\$\s*$", re.MULTILINE)
_INLINE = re.compile(r"(?<![\\$])\$([^$\n]+?)\$")
_IMG = re.compile(r'<img src="(figures/[^"]+\.(?:png|svg))"')
_MIME = {".png": "image/png", ".svg": "image/svg+xml"}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 75rem;
       margin: 2rem auto; padding: 0 1.5rem; line-height: 1.45; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.88rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
img.math-display { display: block; margin: 0.6rem 0; max-width: none; }
img.math-inline { vertical-align: middle; max-width: none; }
code { background: #f5f5f5; padding: 0 0.2rem; }
h1.failed, p.failed { color: #a00000; }
"""


def _math_svg(tex: str, fontsize: float) -> str | None:
    """TeX as an SVG ``data:`` URI, or None when mathtext cannot parse it."""
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        mathtext.math_to_image(f"${tex}$", buf, prop=FontProperties(size=fontsize), format="svg")
    except (ValueError, RuntimeError):
        return None
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _math_html(tex: str, display: bool) -> str:
    uri = _math_svg(tex.strip(), 14 if display else 12)
    if uri is None:
        return f"<code>{html.escape(tex)}</code>"
    cls = "math-display" if display else "math-inline"
    return f'<img class="{cls}" alt="{html.escape(tex, quote=True)}" src="{uri}">'


def markdown_to_html(markdown: str, folder: Path, title: str) -> str:
    """Render ``markdown`` (a bundle's report) to a self-contained HTML page.

    Parameters
    ----------
    markdown : str
        The report text; figures referenced as ``figures/<name>.png``.
    folder : path
        The bundle folder, where those figures are read from.
    title : str
        The page title.
    """
    pieces: dict[str, str] = {}

    def hold(rendered: str) -> str:
        key = f"MATHPIECE{len(pieces)}X"
        pieces[key] = rendered
        return key

    text = _DISPLAY.sub(lambda m: hold(_math_html(m.group(1), True)), markdown)
    text = _INLINE.sub(lambda m: hold(_math_html(m.group(1), False)), text)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    for key, rendered in pieces.items():
        body = body.replace(key, rendered)

    def embed(m: re.Match[str]) -> str:
        path = Path(folder) / m.group(1)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:{_MIME[path.suffix]};base64,{data}"'

    body = _IMG.sub(embed, body)
    body = body.replace("<h1>FAILED", '<h1 class="failed">FAILED', 1)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )
