"""Runs: every run with its status, live progress of running ones (refreshing by itself), cancel and
retry, and the health of the broker and workers."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import actions, annotations, current, curves, figures, frames, state, text, ui

COLUMNS = {
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
    "params": st.column_config.NumberColumn("params", format="localized"),
    "loss": st.column_config.TextColumn("loss now", help="Training loss (nats) of a run that trains now."),
    "tokens/s": st.column_config.TextColumn("tokens/s", help="Now for a running run; the average for a finished one."),
    "wall_time_s": st.column_config.NumberColumn("wall (s)", format="%.1f"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
}
LIVE_CURVES = 6  # running runs drawn in the live panel

st.title("Runs")
ui.show_flash()

if state.runs().height == 0:
    ui.broker_banner(state.health())
    if state.settings().flower_url:
        st.link_button("Open Flower (task monitor)", state.settings().flower_url)
    ui.first_screen("runs")
else:
    f1, f2, f3, f4 = st.columns([2, 1, 2, 1])
    status = f1.multiselect("Status", ["queued", "running", "done", "failed", "cancelled"], key="filter_status",
                            bind="query-params")
    tasks = ["all", *sorted(state.runs()["task"].unique().to_list())]
    task = f2.selectbox("Task", tasks, key="filter_task", bind="query-params")
    sweeps = ["all", *[s for s in state.runs().sort("created_at", descending=True)["sweep_id"].drop_nulls()
                       .unique(maintain_order=True).head(200).to_list()]]
    sweep = f3.selectbox("Sweep", sweeps, key="filter_sweep", bind="query-params")
    live = f4.toggle("Live refresh", value=True, key="live", help="Refresh every 2 s without reloading the page.")
    g1, g2, g3 = st.columns([3, 3, 1.4], vertical_alignment="bottom")  # room for the toggle's whole label
    expression = g1.text_input("Filter", key="filter_expr", bind="query-params",
                               placeholder="d_m >= 8 and test_metric < 2.1 and reason ~ pruned",
                               help="Clauses joined by 'and': column < <= > >= == != value, or column ~ text "
                                    "(contains). Numbers may be written 60k or 1e5.")
    picked_columns = g2.multiselect("Columns", frames.TABLE_COLUMNS, default=frames.TABLE_COLUMNS, key="table_columns")
    grouped = g3.toggle("Group by sweep", key="group_sweep")
    current.add_settings(status=status, task=task, sweep=sweep, filter=expression)

    c1, c2 = st.columns(2)
    smoothing = c1.slider("Smoothing of the live curves", 0.0, 0.95, 0.6, 0.05, key="live_smooth")
    best = c2.toggle("best validation so far", value=True, key="live_best")

    @st.fragment(run_every=2 if live else None)
    def live_runs() -> None:
        health = state.health()
        ui.broker_banner(health)
        frame = frames.select(state.runs(), task=None if task == "all" else task, status=status or None,
                              sweep=None if sweep == "all" else sweep)
        if expression.strip():
            try:
                frame = frames.filter_expression(frame, expression)
            except ValueError as exc:
                st.warning(f"{exc}. Showing the runs without this filter.", icon=":material/filter_alt_off:")
        for col, (name, n) in zip(st.columns(5), frames.status_counts(frame).items(), strict=True):
            col.metric(name, n)
        ui.health_metrics(health)
        if state.settings().flower_url:
            st.link_button("Open Flower (task monitor)", state.settings().flower_url)

        running = frame.filter(pl.col("status") == "running").sort("created_at", descending=True)
        progress = actions.progress(running["run_id"].head(50).to_list())
        for run_id in running["run_id"].head(12).to_list():
            p = progress.get(run_id) or {}
            total, step = p.get("total_steps") or 0, p.get("step") or 0
            st.progress(min(1.0, step / total) if total else 0.0, text=f"{run_id}: {text.live_line('running', p)}")
        if running.height:
            shown = running.head(LIVE_CURVES)
            labels = {r["run_id"]: f"{r['run_id']} (d_m={r['d_m']}, N={r['n_neurons']})"
                      for r in shown.select("run_id", "d_m", "n_neurons").iter_rows(named=True)}
            fig = figures.curves_figure(curves.live_frame(progress, labels), metric_name=frames.metric_name(
                shown, shown["task"][0]), smoothing=smoothing, best=best,
                empty_text="Waiting for the first points of the running runs' curves.")
            fig.update_layout(title_text=f"Live learning curves (the newest {len(labels)} running run(s))", height=380)
            st.plotly_chart(fig, key="live_curves")

        if grouped:
            summary = frames.sweep_summary(frame, "test_metric", frames.metric_name(frame, task) == "accuracy")
            st.dataframe(summary, key="sweep_table", hide_index=True)
            current.add_table("Sweeps", summary)
        table = annotations.join(frames.runs_table(frame, progress), state.annotations())
        act = "open" if actions.read_only() else "open, annotate, cancel or retry"
        st.caption(f"{frame.height:,} run(s) match; the newest {table.height:,} are listed. "
                   f"Select rows to {act} them.")
        visible = table.select(["run_id", *[c for c in frames.TABLE_COLUMNS if c in picked_columns and c != "run_id"]])
        event = st.dataframe(visible, key="runs_table", on_select="rerun", selection_mode="multi-row",
                             hide_index=True, column_config=COLUMNS, height=420)
        current.add_table("Runs", table)
        rows = event.selection.rows if event is not None else []
        chosen = table[rows] if rows else table.clear()
        if chosen.height == 0:
            return
        ids = chosen["run_id"].to_list()
        b1, b2, b3 = st.columns(3)
        with b1:
            ui.open_runs(ids)
        ui.annotation_editor(ids[0], table.filter(pl.col("run_id") == ids[0]).row(0, named=True))
        if actions.read_only():
            return
        active = chosen.filter(pl.col("status").is_in(["queued", "running"]))["run_id"].to_list()
        ended = chosen.filter(pl.col("status").is_in(["failed", "cancelled"]))["run_id"].to_list()
        if b2.button(f"Cancel {len(active)} run(s)", key="cancel", disabled=not active, icon=":material/cancel:"):
            n = ui.run_action("Cancel", lambda: actions.cancel(active))
            if n:
                ui.flash("success", f"Asked {n} run(s) to stop.")
            st.rerun()
        if b3.button(f"Retry {len(ended)} run(s)", key="retry", disabled=not ended, icon=":material/replay:"):
            new = ui.run_action("Retry", lambda: actions.retry(ended))
            if new:
                ui.flash("success", f"Re-queued {len(new)} run(s).", new)
            st.rerun()

    live_runs()
