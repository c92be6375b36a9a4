"""Sweeps: parallel coordinates of the runs, which parameter matters for the metric (per task and
budget), and the best result so far against runs finished and wall time (a sweep or the store)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import current, frames, importance, state, sweep_figures, text, ui

st.title("Sweeps")
runs = state.runs()
if runs.height == 0 or not frames.tasks_by_done(runs):
    ui.first_screen("sweeps")
else:
    c = st.columns([1, 1, 2, 1])
    with c[0]:
        task = ui.task_picker(runs)
    with c[1]:
        metric = ui.metric_picker()
    mname = frames.metric_name(runs, task)
    maximize = mname == "accuracy"
    done = frames.select(runs, task=task, status=["done"])
    sweeps = ["all", *done.sort("updated_at", descending=True)["sweep_id"].drop_nulls().unique(maintain_order=True)
              .head(200).to_list()]
    sweep = c[2].selectbox("Sweep", sweeps, key="sweep", bind="query-params",
                           format_func=lambda s: "the whole store (this task)" if s == "all" else s)
    budgets = sorted({int(b) for b in done["budget"].drop_nulls().to_list()})
    budget = c[3].selectbox("Budget", ["all", *budgets], key="budget_pick", format_func=lambda b: b if b == "all"
                            else text.human(b))
    chosen = frames.select(done, sweep=None if sweep == "all" else sweep)
    if budget != "all":
        chosen = chosen.filter(pl.col("budget") == budget)
    current.add_settings(task=task, metric=metric, sweep=sweep, budget=budget)

    par = sweep_figures.parallel_figure(chosen, metric, mname)
    st.plotly_chart(par, key="parallel")
    current.add_figure("Parallel coordinates", par)

    st.subheader("Which parameter matters")
    table = importance.parameter_importance(chosen, sweep_figures.PARALLEL_COLUMNS, metric)
    where = f"{task}, budget {text.human(budget) if budget != 'all' else 'all'}"
    imp = sweep_figures.importance_figure(table, f"Parameter importance for {text.label(metric, mname)} ({where})")
    left, right = st.columns([2, 1])
    left.plotly_chart(imp, key="importance")
    right.caption("Main-effects functional ANOVA: each parameter's share of the metric's variance (ω², a one-way "
                  "ANOVA corrected for chance). Interactions are not split out; tied parameters (at one budget N "
                  "falls as d_m grows) share variance. Pick one budget to see what matters within it.")
    right.dataframe(table, hide_index=True, key="importance_table")
    current.add_figure("Parameter importance", imp)
    current.add_table("Parameter importance", table)

    st.subheader("Best so far")
    history = frames.best_history(chosen, metric, maximize)
    hist = sweep_figures.history_figure(history, metric, mname)
    st.plotly_chart(hist, key="best_history")
    current.add_figure("Best so far", hist)
