"""The dashboard's data work over a large store, timed: `python -m benchmarks.dashboard [--runs 100000]` prints JSON.

A temporary store gets `n` synthetic runs (benchmarks.store: three records per run, queued ->
running -> done or failed, most in a few large Parquet files plus `n_small` one-record files as
recent submissions leave them). Then, per page, the work one page view does (what the page calls
through app.state, so with st.cache_data keyed on the store's state token, pickling included):

    token     Store.state_token(), done on every rerun
    runs      the runs frame, the Runs page's counts and its newest-500 table with live progress
    explore   seeds collapsed, iso-budget fits with bootstrap intervals, Pareto frontier, both figures
    scaling   scaling-law fit, capacity model, suggested next runs, the surface figure
    design    the run-time estimate and the fit's predicted metric for a design

`cold`: first view after the caches are emptied (a fresh server); `cached`: the same view again (every
later rerun while the store is unchanged), the median of `repeats`; `after_a_new_record`: the first
view after one run is queued (the runs frame is read again; the fits, keyed on the finished runs
they fit, stay cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.store import write_synthetic
from elm_core.store import Store
from elm_core.store.cache import FileCache

TASK = "enwik8"
METRIC = "test_metric"


def _pages(path: str) -> dict[str, Callable[[], Any]]:
    import polars as pl

    from app import data, figures, fits, frames, state

    store = Store(path)

    def token() -> str:
        return store.state_token()

    def runs() -> Any:
        frame = state.runs(path)
        counts = frames.status_counts(frame)
        running = frame.filter(pl.col("status") == "running")["run_id"].head(50).to_list()
        return counts, frames.runs_table(frame, {r: {"step": 1, "total_steps": 2} for r in running})

    def explore() -> Any:
        points = state.fit_frame(TASK, METRIC, path)
        iso = state.iso_fits(TASK, METRIC, "d_m", path)
        result = state.pareto(TASK, METRIC, "params", path)
        return figures.iso_figure(points, iso, x="d_m", metric=METRIC), figures.pareto_figure(result)

    def scaling() -> Any:
        points = state.fit_frame(TASK, METRIC, path)
        fit = state.scaling(TASK, METRIC, path)
        cap = state.capacity(TASK, METRIC, path)
        sugg = state.suggestions(TASK, METRIC, 5, path)
        budgets = sorted(points["iso_budget"].drop_nulls().unique().to_list())
        fig = None if isinstance(fit, fits.NoFit) else figures.surface_figure(fit, points, metric=METRIC,
                                                                               budgets=budgets)
        return fig, cap, sugg

    def design() -> Any:
        info = data.TaskInfo(TASK, 204, 204, "char", "bpc")
        d = data.make_design(info, budget=1_000_000, mode="neurons", d_m=20, n_neurons=1, d_tree=50, d_brch=15)
        return data.estimate_seconds(state.runs(path), d), data.predicted_metric(
            state.iso_fits(TASK, METRIC, "d_m", path), d)

    return {"token": token, "runs": runs, "explore": explore, "scaling": scaling, "design": design}


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_dashboard_bench(n: int = 100_000, n_small: int = 1_000, repeats: int = 5,
                        tmpdir: str | Path | None = None) -> dict[str, Any]:
    """Fill a temporary store with `n` runs and time each page's data work cold and cached (seconds)."""
    import streamlit as st
    from streamlit.logger import set_log_level

    set_log_level("error")  # bare mode (no server): no "No runtime found" noise

    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "store"
        t0 = time.perf_counter()
        write_synthetic(Store(path), 3 * n, min(n_small, 3 * n))
        write_s = time.perf_counter() - t0
        pages = _pages(str(path))
        st.cache_data.clear()
        st.cache_resource.clear()
        FileCache.reset()
        cold = {name: round(_time(fn)[0], 3) for name, fn in pages.items()}
        cached = {name: round(statistics.median(_time(fn)[0] for _ in range(repeats)), 4)
                  for name, fn in pages.items()}
        # A run is queued: the store changes, so the runs frame is read again; the fits stay cached.
        from elm_core.records import RunRecord

        Store(path).put(RunRecord(run_id="bench-new", task=TASK, n_in=204, n_out=204, n_neurons=500, d_m=10,
                                  l_mlp=1, d_mlp=20, d_tree=50, d_brch=15, k_e=1441, k_c=750, params=1_000_000))
        after_write = {name: round(_time(fn)[0], 3) for name, fn in pages.items()}
        frame = pages["runs"]()[1]
        return {
            "runs": n,
            "records": 3 * n,
            "one_record_files": min(n_small, 3 * n),
            "write_s": round(write_s, 1),
            "cold_s": cold,
            "cached_s": cached,
            "after_a_new_record_s": after_write,
            "table_rows_shown": frame.height,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--small-files", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.small_files < 0 or args.repeats < 1:
        parser.error("--runs and --repeats must be >= 1, --small-files >= 0")
    print(json.dumps(run_dashboard_bench(args.runs, args.small_files, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
