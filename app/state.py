"""Cached data access for the pages, the settings, and the current view (for the link and the report).

The runs frame is cached on the store path and its state token (`Store.state_token()`: file names,
sizes and mtimes), so it is reused until the store changes and never outlives it; the fits are
cached on the frame they fit, so they survive store changes that do not touch finished runs.
The current view is what the page on screen registers (title, figures, tables, settings), read by
the sidebar's link and HTML report.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app import actions, data
from elm_core.records import RunRecord
from elm_core.settings import Settings, get_settings
from elm_core.store import Store


def settings() -> Settings:
    return get_settings()


def store() -> Store:
    return Store(get_settings().store_path)


def token(path: str | None = None) -> tuple[str, str]:
    """(store path, state token): the key of the cached runs frame."""
    s = Store(path) if path else store()
    return str(s.path), s.state_token()


# --- cached data ----------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(path: str, state: str) -> pl.DataFrame:
    return data.prepare_runs(Store(path).runs())


# Stale-while-revalidate over `_runs`: when the store has changed since the last frame was read, the
# pages get that last frame at once while a background thread reads the new one (a large store takes
# a second or more), and the next rerun (the Runs page reruns every 2 s) shows it. A session that has
# just changed the store itself (queue, import) waits for the fresh frame instead.
_latest: dict[str, tuple[int, str, pl.DataFrame]] = {}  # path -> (sequence, state token, frame)
_refreshing: dict[tuple[str, str], int] = {}
_sequence = itertools.count()
_lock = threading.Lock()


def _read(path: str, state: str, seq: int) -> tuple[str, pl.DataFrame]:
    try:
        frame = _runs(path, state)
        with _lock:
            if seq >= _latest.get(path, (-1, "", None))[0]:  # never replace a newer read by an older one
                _latest[path] = (seq, state, frame)
        return state, frame
    finally:
        with _lock:
            _refreshing.pop((path, state), None)


def want_fresh() -> None:
    """The next read in this session waits for the store's current state (after this session wrote)."""
    st.session_state["_fresh_runs"] = True


def runs_view(path: str | None = None) -> tuple[str, str, pl.DataFrame]:
    """(store path, the state token the frame was read at, the runs frame); `path` defaults to the
    settings' store."""
    path, state = token(path)
    fresh = bool(get_script_run_ctx(suppress_warning=True) and st.session_state.pop("_fresh_runs", False))
    with _lock:
        have = _latest.get(path)
        if have is not None and have[1] == state:
            return path, state, have[2]
        start = (path, state) not in _refreshing
        seq = next(_sequence)
        if start:
            _refreshing[(path, state)] = seq
    if have is None or fresh:
        return (path, *_read(path, state, seq))
    if start:
        threading.Thread(target=_read, args=(path, state, seq), daemon=True, name="elmlab-runs-refresh").start()
    return path, have[1], have[2]


def runs() -> pl.DataFrame:
    """Every run, its latest record, with the analysis columns (no learning curves)."""
    return runs_view()[2]


@st.cache_data(show_spinner=False, max_entries=32)
def _fit_frame(path: str, state: str, task: str, metric: str) -> pl.DataFrame:
    return data.fit_frame(data.select(_runs(path, state), task=task), metric)


def fit_frame(task: str, metric: str) -> pl.DataFrame:
    """Done runs of `task`, seeds collapsed, grouped by budget (from the frame the pages show)."""
    path, state, _ = runs_view()
    return _fit_frame(path, state, task, metric)


# The fits are keyed on the fitted frame itself (seed-collapsed done runs; small), not on the store
# token: a new queued or running record changes the token but not the fits, which stay cached.


@st.cache_data(show_spinner="Fitting the iso-budget curves...", max_entries=32)
def _iso_fits(points: pl.DataFrame, metric: str, x: str) -> list:
    return data.iso_fits(points, x, metric)


def iso_fits(task: str, metric: str, x: str) -> list:
    return _iso_fits(fit_frame(task, metric), metric, x)


@st.cache_data(show_spinner=False, max_entries=32)
def _pareto(points: pl.DataFrame, metric: str, cost: str):
    return data.pareto(points, cost, metric)


def pareto(task: str, metric: str, cost: str):
    return _pareto(fit_frame(task, metric), metric, cost)


@st.cache_data(show_spinner="Fitting the scaling law...", max_entries=16)
def _scaling(points: pl.DataFrame, metric: str):
    from elm_core.analysis import fit_scaling_law

    try:
        return fit_scaling_law(points, metric=metric)
    except ValueError as exc:
        return str(exc)


def scaling(task: str, metric: str):
    """A ScalingFit, or the reason there is none (a string)."""
    return _scaling(fit_frame(task, metric), metric)


@st.cache_data(show_spinner="Fitting the capacity model...", max_entries=16)
def _capacity(points: pl.DataFrame, metric: str):
    from elm_core.analysis import fit_capacity_model

    try:
        return fit_capacity_model(points, metric=metric)
    except ValueError as exc:
        return str(exc)


def capacity(task: str, metric: str):
    """A CapacityFit, or the reason there is none (a string)."""
    return _capacity(fit_frame(task, metric), metric)


@st.cache_data(show_spinner="Ranking the next runs...", max_entries=16)
def _suggestions(points: pl.DataFrame, metric: str, n: int) -> pl.DataFrame | str:
    from elm_core.analysis import suggest_next_runs

    try:
        return suggest_next_runs(points, x="d_m", metric=metric, n=n)
    except ValueError as exc:
        return str(exc)


def suggestions(task: str, metric: str, n: int = 5) -> pl.DataFrame | str:
    return _suggestions(fit_frame(task, metric), metric, n)


@st.cache_data(show_spinner=False, max_entries=64)
def _record(path: str, state: str, run_id: str) -> RunRecord | None:
    return Store(path).run(run_id)


def record(run_id: str) -> RunRecord | None:
    """One run with its learning curve."""
    return _record(*token(), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _history(path: str, state: str, run_id: str) -> pl.DataFrame:
    return Store(path).history(run_id)


def history(run_id: str) -> pl.DataFrame:
    return _history(*token(), run_id)


@st.cache_data(show_spinner=False, ttl=3)
def _health(home: str, broker: str) -> dict[str, Any]:
    return actions.health(timeout=1.0)


def health() -> dict[str, Any]:
    """Broker and worker health, refreshed at most every 3 s."""
    s = get_settings()
    return _health(str(s.home), s.broker_url or "")


@st.cache_data(show_spinner=False, max_entries=32)
def task_info(name: str, data_dir: str, options: str = "{}") -> data.TaskInfo:
    """Sizes of a task (n_in, n_out, kind, metric); fallback sizes when its files are absent."""
    from elm_core.data import get_task, task_availability

    why = task_availability(data_dir).get(name)
    if why is None:
        try:
            t = get_task(name, data_dir, **json.loads(options))
            return data.TaskInfo(name, t.n_in, t.n_out, t.kind, t.metric_name, getattr(t, "seq_len", None))
        except ValueError as exc:
            why = str(exc)
    n_in, n_out = data.FALLBACK_DIMS.get(name, (204, 204))
    kind = "spike" if "shd" in name or "adding" in name else "char"
    return data.TaskInfo(name, n_in, n_out, kind, "accuracy" if kind == "spike" else "bpc",
                         1000 if "adding" in name else (500 if kind == "spike" else None), False, why)


# --- the current view: what the sidebar's link and report show ------------------------------------


def begin_view(title: str, page: str) -> None:
    st.session_state["_view"] = {"title": title, "page": page, "figures": [], "tables": [], "settings": {}}


def view() -> dict[str, Any]:
    if "_view" not in st.session_state:
        begin_view("ELM Lab", "")
    return st.session_state["_view"]


def _put(items: list, caption: str, value: object) -> None:
    """Add (caption, value), replacing an entry with the same caption (fragments rerun)."""
    for i, (c, _) in enumerate(items):
        if c == caption:
            items[i] = (caption, value)
            return
    items.append((caption, value))


def add_figure(caption: str, fig: go.Figure) -> None:
    _put(view()["figures"], caption, fig)


def add_table(caption: str, frame: pl.DataFrame) -> None:
    _put(view()["tables"], caption, frame)


def add_settings(**values: Any) -> None:
    view()["settings"].update(values)


def share_url() -> str:
    """The URL of this view: the page's address and its query parameters (the bound widgets)."""
    base = (st.context.url or "").split("?")[0]
    params = st.query_params
    query = urlencode([(k, v) for k in params for v in params.get_all(k)])
    return f"{base}?{query}" if query else base
