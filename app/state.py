"""The dashboard's one cached data layer: every page reads the runs, fits, records, task sizes and
broker health through here, and nothing else in app/ caches.

The runs frame is cached (st.cache_resource) on the store path and its state token
(`Store.state_token()`: file names, sizes and mtimes, a few milliseconds to read), so it is reused
until the store changes and never outlives it: a page always shows the store as it is. The fits are
cached (st.cache_data) on the seed-collapsed frame they fit, so they survive store changes that do
not touch finished runs (a queued or running record changes the token, not the fits). Broker health
and the data folder change without the store: they live 3 s and a minute (ttl).
Every fit answers with its result or an `app.fits.NoFit` saying why there is none.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import streamlit as st

from app import actions, data, fits, frames
from elm_core.analysis import CapacityFit, IsoFit, ParetoResult, ScalingFit
from elm_core.records import RunRecord
from elm_core.settings import Settings, get_settings
from elm_core.store import Store


def settings() -> Settings:
    return get_settings()


def store(path: str | None = None) -> Store:
    """The store at `path`, by default the settings' store."""
    return Store(path) if path else Store(get_settings().store_path)


def token(path: str | None = None) -> tuple[str, str]:
    """(store path, state token): the key of everything cached on the store."""
    s = store(path)
    return str(s.path), s.state_token()


# --- the runs ---------------------------------------------------------------------------------------


# The frames are cache_resource: one shared frame handed out as is (pages never change a frame in
# place; polars operations make new ones), not a pickled copy per call as cache_data gives, which at
# 20,000 runs costs about 20 ms on each of the several reads of a rerun.


@st.cache_resource(show_spinner=False, max_entries=4)
def _runs(path: str, state: str) -> pl.DataFrame:
    return frames.prepare_runs(Store(path).runs())


def runs(path: str | None = None) -> pl.DataFrame:
    """Every run, its latest record, with the analysis columns (no learning curves)."""
    return _runs(*token(path))


@st.cache_resource(show_spinner=False, max_entries=32)
def _fit_frame(path: str, state: str, task: str, metric: str) -> pl.DataFrame:
    return fits.fit_frame(frames.select(_runs(path, state), task=task), metric)


def fit_frame(task: str, metric: str, path: str | None = None) -> pl.DataFrame:
    """Done runs of `task`, seeds collapsed, grouped by budget."""
    return _fit_frame(*token(path), task, metric)


@st.cache_resource(show_spinner=False, max_entries=32)
def _pruned(path: str, state: str, task: str, metric: str) -> pl.DataFrame:
    return fits.pruned_runs(frames.select(_runs(path, state), task=task), metric)


def pruned(task: str, metric: str, path: str | None = None) -> pl.DataFrame:
    """Runs of `task` a search pruned, with `metric` (drawn faded, never fitted)."""
    return _pruned(*token(path), task, metric)


def baselines(task: str) -> dict[str, float]:
    """The n-gram test BPC by order of `task`'s data set, from its newest finished run ({} if none says)."""
    done = frames.select(runs(), task=task, status=["done"])
    done = done.filter(pl.col("source") != "reference") if "source" in done.columns else done
    newest = frames.latest_ids(done, 1)
    rec = record(newest[0]) if newest else None
    return dict(rec.baselines) if rec is not None else {}


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
    """Every record of one run (its status changes), oldest first."""
    return _history(*token(), run_id)


# --- the fits, keyed on the frame they fit ----------------------------------------------------------


@st.cache_data(show_spinner="Fitting the iso-budget curves...", max_entries=32)
def _iso_fits(points: pl.DataFrame, metric: str, x: str) -> list[IsoFit] | fits.NoFit:
    return fits.iso_fits(points, x, metric)


def iso_fits(task: str, metric: str, x: str, path: str | None = None) -> list[IsoFit] | fits.NoFit:
    return _iso_fits(fit_frame(task, metric, path), metric, x)


@st.cache_data(show_spinner=False, max_entries=32)
def _pareto(points: pl.DataFrame, metric: str, cost: str) -> ParetoResult | fits.NoFit:
    return fits.pareto(points, cost, metric)


def pareto(task: str, metric: str, cost: str, path: str | None = None) -> ParetoResult | fits.NoFit:
    return _pareto(fit_frame(task, metric, path), metric, cost)


@st.cache_data(show_spinner="Fitting the scaling law...", max_entries=16)
def _scaling(points: pl.DataFrame, metric: str) -> ScalingFit | fits.NoFit:
    return fits.scaling(points, metric)


def scaling(task: str, metric: str, path: str | None = None) -> ScalingFit | fits.NoFit:
    return _scaling(fit_frame(task, metric, path), metric)


@st.cache_data(show_spinner="Fitting the capacity model...", max_entries=16)
def _capacity(points: pl.DataFrame, metric: str) -> CapacityFit | fits.NoFit:
    return fits.capacity(points, metric)


def capacity(task: str, metric: str, path: str | None = None) -> CapacityFit | fits.NoFit:
    return _capacity(fit_frame(task, metric, path), metric)


@st.cache_data(show_spinner="Ranking the next runs...", max_entries=16)
def _suggestions(points: pl.DataFrame, metric: str, n: int) -> pl.DataFrame | fits.NoFit:
    return fits.suggestions(points, metric, n)


def suggestions(task: str, metric: str, n: int = 5, path: str | None = None) -> pl.DataFrame | fits.NoFit:
    return _suggestions(fit_frame(task, metric, path), metric, n)


@st.cache_data(show_spinner=False, max_entries=8)
def _annotations(path: str, mtime: float) -> dict[str, dict]:
    from app import annotations as notes

    return notes.load(path)


def annotations(path: str | None = None) -> dict[str, dict]:
    """Tags and notes per run (app.annotations), read again whenever the file changes."""
    from app import annotations as notes

    root = store(path).path
    try:
        mtime = notes.path(root).stat().st_mtime_ns / 1e9
    except OSError:
        mtime = 0.0
    return _annotations(str(root), mtime)


# --- outside the store ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, ttl=3)
def _health(home: str, broker: str) -> dict[str, Any]:
    return actions.health(timeout=1.0)


def health() -> dict[str, Any]:
    """Broker and worker health, refreshed at most every 3 s."""
    s = get_settings()
    return _health(str(s.home), s.broker_url or "")


@st.cache_data(show_spinner=False, max_entries=32, ttl=60)
def task_info(name: str, data_dir: str, options: str = "{}") -> data.TaskInfo:
    """Sizes of a task (n_in, n_out, kind, metric); fallback sizes when its files are absent. Lives a
    minute (ttl): a data set fetched while the server runs becomes queueable without a restart."""
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
