"""Share and export: a report of a whole task's results, the runs as CSV or Parquet, and how to
publish a read-only dashboard."""

from __future__ import annotations

import io

import polars as pl
import streamlit as st

from app import annotations, current, figures, fits, frames, report, state, text, ui

st.title("Share and export")
st.markdown(
    "**Links.** Every page keeps its settings in its address: the *Share this view* box in the sidebar holds the "
    "link to what you see, and a colleague who opens it sees the same view. The sidebar also downloads the current "
    "view as a self-contained HTML report (interactive figures with their data, settings, provenance)."
)
runs = state.runs()
if runs.height == 0:
    ui.first_screen("share")
else:
    st.subheader("A report of one task")
    tasks = frames.tasks_by_done(runs)
    c = st.columns(3)
    task = c[0].selectbox("Task", tasks, key="task", bind="query-params")
    metric = c[1].selectbox("Metric", list(text.METRICS), key="metric", format_func=text.METRICS.get,
                            bind="query-params")
    x = c[2].selectbox("Allocation axis", list(text.ALLOCATION_LABELS), key="x", bind="query-params")
    mname = frames.metric_name(runs, task)
    url = current.share_url()

    points = state.fit_frame(task, metric)
    iso = state.iso_fits(task, metric, x)
    ngram = state.baselines(task) if mname == "bpc" and metric != "train_metric" else None
    figs = [("Iso-budget curves", figures.iso_figure(points, iso, x=x, metric=metric, metric_name=mname,
                                                     pruned=state.pruned(task, metric), baselines=ngram)),
            ("Pareto frontier", figures.pareto_figure(state.pareto(task, metric, "params"), metric_name=mname))]
    fit = state.scaling(task, metric)
    if not isinstance(fit, fits.NoFit):
        budgets = sorted({float(b) for b in points["iso_budget"].drop_nulls().to_list()})
        figs.append(("Fitted scaling-law surface", figures.surface_figure(fit, points, metric=metric,
                                                                          metric_name=mname, budgets=budgets)))
    task_runs = frames.select(runs, task=task)
    cols = [c for c in ("run_id", "status", "sweep_id", "params", "n_neurons", "d_m", "k_e", "k_c", "d_tree",
                        "d_brch", "seed", "test_metric", "valid_metric", "steps", "wall_time_s", "device", "host",
                        "code_version") if c in task_runs.columns]
    tables = [("Optimum per budget", fits.optima_table(iso)),
              ("Runs: configuration and provenance", task_runs.select(cols))]
    provenance = {"runs of this task": task_runs.height, "store state": state.token()[1]}

    def task_report() -> str:
        return report.build_report(f"ELM Lab: {task}", figs, tables, {"task": task, "metric": metric, "axis": x},
                                   provenance, current.public_url())

    st.download_button("Download the task report (HTML)", data=task_report, file_name=f"elmlab-{task}-report.html",
                       mime="text/html", key="download_task_report", icon=":material/download:")
    st.caption("Iso-budget curves with their fits and optima, the Pareto frontier, the scaling-law surface, the "
               "optima table and every run's configuration and provenance, in one file that opens offline.")

    st.subheader("The runs as data")
    d = st.columns(4)
    dtask = d[0].selectbox("Task", ["all", *tasks], key="data_task", bind="query-params")
    sweeps = ["all", *runs["sweep_id"].drop_nulls().unique().sort().to_list()]
    sweep = d[1].selectbox("Sweep", sweeps, key="data_sweep", bind="query-params")
    status = d[2].multiselect("Status", ["queued", "running", "done", "failed", "cancelled"], default=["done"],
                              key="data_status", bind="query-params")
    fmt = d[3].segmented_control("Format", ["csv", "parquet"], default="csv", required=True, key="fmt",
                                 bind="query-params") or "csv"
    chosen = frames.select(runs, task=None if dtask == "all" else dtask, sweep=None if sweep == "all" else sweep,
                         status=status or None)
    with_curve = st.toggle("Include learning curves (JSON column)", value=False, key="with_curve")

    def export() -> bytes:
        """Full records (configuration, spec and versions as JSON, curves if asked) of the chosen runs,
        with their tags and notes."""
        frame = state.store().runs(with_curve=with_curve).filter(pl.col("run_id").is_in(chosen["run_id"].implode()))
        frame = annotations.join(frame, state.annotations())
        buf = io.BytesIO()
        if fmt == "parquet":
            frame.write_parquet(buf)
        else:
            frame.write_csv(buf)
        return buf.getvalue()

    st.download_button(f"Download {chosen.height:,} run(s) as {fmt.upper()}", data=export, key="download_data",
                       file_name=f"elmlab-runs.{fmt}", icon=":material/table:",
                       mime="text/csv" if fmt == "csv" else "application/vnd.apache.parquet")
    st.dataframe(chosen.head(200), hide_index=True, height=260)
    current.add_table("Selected runs", chosen.head(1000))

st.subheader("Publish a read-only dashboard")
st.markdown(
    "`elmlab up --read-only` (or `ELMLAB_READ_ONLY=1`) serves the store's results with no queue, cancel or retry "
    "anywhere; the server refuses those actions even if asked directly. `elmlab up` listens on 127.0.0.1 only; "
    "publish on a network with `--host 0.0.0.0` behind your usual proxy. Data sets are picked from the data "
    "folder by task name; no page reads a file path typed by a visitor."
)
