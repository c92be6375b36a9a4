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

import plotly.graph_objects as go
import polars as pl

from app.text import plain

MAX_TABLE_ROWS = 1000
_CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2933; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f4f6; } td.text { text-align: left; }
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
    cls = "" if isinstance(value, (int, float)) and not isinstance(value, bool) else ' class="text"'
    return f"<td{cls}>{html.escape(plain(value))}</td>"


def table_html(frame: pl.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.head(max_rows).iter_rows())
    more = (f'<p class="note">First {max_rows:,} of {frame.height:,} rows; download the data for all.</p>'
            if frame.height > max_rows else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}"


def mapping_html(values: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th class="text">{html.escape(str(k))}</th>{_cell(v)}</tr>' for k, v in values.items())
    return f"<table><tbody>{rows}</tbody></table>"


def build_report(
    title: str,
    figures: Sequence[tuple[str, go.Figure]] = (),
    tables: Sequence[tuple[str, pl.DataFrame]] = (),
    settings: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    url: str = "",
) -> str:
    """The report as one HTML string (plotly.js inline once, so it works offline)."""
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
