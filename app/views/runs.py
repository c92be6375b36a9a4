"""Runs: every run with its status, live progress of running ones (refreshing by itself), cancel and
retry, and the health of the broker and workers."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import actions, current, frames, state, text, ui

COLUMNS = {
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
    "params": st.column_config.NumberColumn("params", format="localized"),
    "test_metric": st.column_config.NumberColumn("test", format="%.4f"),
    "valid_metric": st.column_config.NumberColumn("valid", format="%.4f"),
    "loss": st.column_config.NumberColumn("loss now", format="%.4f"),
    "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
    "live_tokens_per_s": st.column_config.NumberColumn("tokens/s now", format="%.0f"),
    "eta_s": st.column_config.NumberColumn("ETA (s)", format="%.0f"),
    "wall_time_s": st.column_config.NumberColumn("wall (s)", format="%.1f"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
}

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
    current.add_settings(status=status, task=task, sweep=sweep)

    @st.fragment(run_every=2 if live else None)
    def live_runs() -> None:
        health = state.health()
        ui.broker_banner(health)
        frame = frames.select(state.runs(), task=None if task == "all" else task, status=status or None,
                            sweep=None if sweep == "all" else sweep)
        counts = frames.status_counts(frame)
        cols = st.columns(8)
        for col, (name, n) in zip(cols, counts.items(), strict=False):
            col.metric(name, n)
        cols[5].metric("workers online", len(health.get("workers") or []),
                       help=", ".join(health.get("workers") or []) or "none")
        queues = health.get("queues") or {}
        waiting = sum(v for v in queues.values() if isinstance(v, int))
        cols[6].metric("waiting in queues", waiting if queues else "-",
                       help=", ".join(f"{k}: {'?' if v is None else v}" for k, v in queues.items()) or None)
        cols[7].metric("broker", "up" if health.get("broker_ok") else "down", health.get("mode"), **ui.NOTE)
        if state.settings().flower_url:
            st.link_button("Open Flower (task monitor)", state.settings().flower_url)

        running = frame.filter(pl.col("status") == "running")["run_id"].to_list()
        progress = actions.progress(running[:50])
        for run_id in running[:12]:
            p = progress.get(run_id) or {}
            total, step = p.get("total_steps") or 0, p.get("step") or 0
            loss = "-" if p.get("loss") is None else f"{p['loss']:.3f}"
            line = (f"{run_id}: step {step:,}/{total:,} · loss {loss} · {p.get('tokens_per_s') or 0:,.0f} tokens/s · "
                    f"ETA {text.duration(p.get('eta_s'))}" + (f" · {p['worker']}" if p.get("worker") else "")
                    ) if total else f"{run_id}: starting"
            st.progress(min(1.0, step / total) if total else 0.0, text=line)

        table = frames.runs_table(frame, progress)
        st.caption(f"{frame.height:,} run(s) match; the newest {table.height:,} are listed. "
                   "Select rows to act on them.")
        event = st.dataframe(table, key="runs_table", on_select="rerun", selection_mode="multi-row",
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
