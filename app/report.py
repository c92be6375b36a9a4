"""A self-contained interactive HTML report of one view: its figures (Plotly, with plotly.js inline
and the data inside each figure), its tables, its settings and the provenance. Opens offline in any
browser; nothing is fetched from the network.
"""

from __future__ import annotations

import html
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import plotly.graph_objects as go
import polars as pl

from app.text import plain

MAX_TABLE_ROWS = 1000
_CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2933; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.table { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f3f4f6; } td.text { text-align: left; max-width: 22rem; overflow: hidden; text-overflow: ellipsis; }
.meta { color: #52606d; font-size: 0.9rem; } .note { color: #52606d; font-size: 0.85rem; }
"""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("elmlab", "streamlit", "plotly", "polars", "duckdb", "torch", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cell(value: Any) -> str:
    """A cell on one line: long text is cut with an ellipsis (all of it in the tooltip), so that a long
    reason or configuration neither wraps the report into a column thousands of pixels tall nor widens it."""
    text = plain(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td>{html.escape(text)}</td>"
    title = f' title="{html.escape(text)}"' if len(text) > 40 else ""
    return f'<td class="text"{title}>{html.escape(text)}</td>'


def public_link(url: str, public: str | None) -> str:
    """The view's address on the public dashboard: `public` (ELMLAB_PUBLIC_URL) with the view's path
    and query; "" without one (a local address means nothing to a report's reader)."""
    if not public or not url:
        return ""
    parts = urlsplit(url)
    base = urlsplit(public.rstrip("/"))
    return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))


def table_html(frame: pl.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.head(max_rows).iter_rows())
    more = (f'<p class="note">First {max_rows:,} of {frame.height:,} rows; download the data for all.</p>'
            if frame.height > max_rows else "")
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}'


def mapping_html(values: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th class="text">{html.escape(str(k))}</th>{_cell(v)}</tr>' for k, v in values.items())
    return f'<div class="table"><table><tbody>{rows}</tbody></table></div>'


def build_report(
    title: str,
    figures: Sequence[tuple[str, go.Figure]] = (),
    tables: Sequence[tuple[str, pl.DataFrame]] = (),
    settings: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    url: str = "",
) -> str:
    """The report as one HTML string (plotly.js inline once, so it works offline). `url` is the view's
    public address (public_link), left out when empty."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)} - ELM Lab</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">ELM Lab report, generated {time.strftime("%Y-%m-%d %H:%M:%S %Z")}.',
    ]
    if url:
        parts.append(f' Live view: <a href="{html.escape(url)}">{html.escape(url)}</a>')
    parts.append("</p>")
    first = True
    for caption, fig in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
        first = False
    for caption, frame in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(table_html(frame))
    if settings:
        parts.append("<h2>Settings of this view</h2>" + mapping_html(settings))
    prov = {**(provenance or {}), **{f"version: {k}": v for k, v in versions().items()}}
    parts.append("<h2>Provenance</h2>" + mapping_html(prov))
    parts.append("</body></html>")
    return "\n".join(parts)
