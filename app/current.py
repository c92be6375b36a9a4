"""The current view: what the page on screen registers (title, figures, tables, settings), read by the
sidebar's link and its HTML report. Kept in the session, begun afresh on every rerun."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
import polars as pl
import streamlit as st


def begin(title: str, page: str) -> None:
    """Start the view of `page` (its url path) with nothing registered yet."""
    st.session_state["_view"] = {"title": title, "page": page, "figures": [], "tables": [], "settings": {}}


def get() -> dict[str, Any]:
    """The view so far: title, page, figures and tables as (caption, value) lists, settings."""
    if "_view" not in st.session_state:
        begin("ELM Lab", "")
    return st.session_state["_view"]


def _put(items: list, caption: str, value: object) -> None:
    """Add (caption, value), replacing an entry with the same caption (fragments rerun)."""
    for i, (c, _) in enumerate(items):
        if c == caption:
            items[i] = (caption, value)
            return
    items.append((caption, value))


def add_figure(caption: str, fig: go.Figure) -> None:
    _put(get()["figures"], caption, fig)


def add_table(caption: str, frame: pl.DataFrame) -> None:
    _put(get()["tables"], caption, frame)


def add_settings(**values: Any) -> None:
    get()["settings"].update(values)


def share_url() -> str:
    """The URL of this view: the page's address and its query parameters (the bound widgets)."""
    base = (st.context.url or "").split("?")[0]
    params = st.query_params
    query = urlencode([(k, v) for k in params for v in params.get_all(k)])
    return f"{base}?{query}" if query else base


def public_url() -> str:
    """This view on the public dashboard (ELMLAB_PUBLIC_URL, e.g. https://elmlab.example.org), for
    the report's "Live view" link; "" when that is not set (a report never links to localhost)."""
    from app.report import public_link

    return public_link(share_url(), os.environ.get("ELMLAB_PUBLIC_URL"))
