"""A self-contained HTML report: tables and matplotlib figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import io

__all__ = ["figure_html", "html_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1, h2 { font-weight: 600; } table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.note { color: #666; } figure { display: inline-block; margin: 0 1em 1em 0; }
"""


def figure_html(fig, *, caption: str = "", dpi: int = 110) -> str:
    """A ``<figure>`` holding ``fig`` as an inline base64 PNG.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure_html(Figure()).startswith("<figure>")
    True
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">{cap}</figure>'


def html_page(title: str, blocks) -> str:
    """A complete HTML page: ``title`` and ``blocks`` (``(heading, html)`` pairs, in order).

    Examples
    --------
    >>> "<h2>Data</h2>" in html_page("Report", [("Data", "<p>2 cases</p>")])
    True
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in blocks:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(body)
    parts.append("</body></html>")
    return "\n".join(parts)
