"""Run detail and compare: configuration, provenance and learning curves of one or several runs."""

from __future__ import annotations

import json

import polars as pl
import streamlit as st

from app import actions, current, curves, figures, frames, state, text, ui
from elm_core.records import RunRecord
from elm_core.spec import DEFAULT_PRESET, RunSpec

CONFIG_FIELDS = ("task", "status", "reason", "sweep_id", "source", "params", "budget", "n_neurons", "d_m", "l_mlp",
                 "d_mlp", "d_tree", "d_brch", "k_e", "k_c", "flops_per_step", "seed", "metric_name", "test_metric",
                 "valid_metric", "best_valid_metric", "train_metric", "steps", "tokens_seen", "wall_time_s")
PROTOCOL_FIELDS = ("preset", "steps", "batch_size", "seq_len", "lr", "optimizer", "eval_chars", "test_chars",
                   "epochs", "batches_per_epoch", "device", "precision")
DIFFERS = "background-color: rgba(255, 193, 7, 0.25)"
PROVENANCE_FIELDS = ("dataset", "dataset_hash", "device", "host", "worker", "attempt", "code_version", "created_at",
                     "updated_at")


def protocol(record: RunRecord) -> dict:
    """The run's training protocol with the preset's values filled in (as the worker resolved them)."""
    try:
        spec = RunSpec.model_validate(record.spec)
    except ValueError:
        return dict(record.spec)
    kind = "spike" if record.metric_name == "accuracy" else "char"
    return {**spec.model_dump(), **spec.protocol(kind), "preset": spec.preset or DEFAULT_PRESET[kind]}


def side_by_side(records: list[RunRecord], fields: tuple[str, ...], source: str = "record") -> pl.DataFrame:
    cols: dict[str, list[str]] = {"field": list(fields)}
    for r in records:
        values = protocol(r) if source == "spec" else r.model_dump()
        out = []
        for f in fields:
            v = values.get(f)
            if f in ("created_at", "updated_at") and isinstance(v, (int, float)) and v > 1e8:
                v = text.timestamp(v)
            out.append(text.plain(v))
        cols[r.run_id] = out
    return pl.DataFrame(cols)


def show_fields(where, table: pl.DataFrame, key: str, only_differing: bool) -> None:
    """A side-by-side table, the rows that differ highlighted (or the only ones shown)."""
    flags = frames.differs(table)
    if only_differing:
        table, flags = table.filter(pl.Series(flags, dtype=pl.Boolean)), [True] * sum(flags)
    styled = table.to_pandas().style.apply(lambda row: [DIFFERS if flags[row.name] else "" for _ in row], axis=1)
    where.dataframe(styled, hide_index=True, key=key, height=36 * (table.height + 1) + 3)


st.title("Run detail and compare")
runs = state.runs()
if runs.height == 0:
    ui.first_screen("run")
else:
    known = set(runs["run_id"].to_list())
    asked = st.query_params.get_all("runs")
    wanted = [r for r in asked if r in known]
    if unknown := [r for r in asked if r not in known]:
        st.warning(f"Not in the store, left out: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}.")
    options = list(dict.fromkeys(wanted + frames.latest_ids(runs, 300)))
    info = {r["run_id"]: r for r in runs.filter(pl.col("run_id").is_in(options)).select(
        "run_id", "task", "status", "d_m", "n_neurons", "test_metric").iter_rows(named=True)}

    def describe(run_id: str) -> str:
        r = info.get(run_id, {})
        metric = f", test {r['test_metric']:.4f}" if r.get("test_metric") is not None else ""
        return f"{run_id} · {r.get('task')} · d_m={r.get('d_m')} N={r.get('n_neurons')} · {r.get('status')}{metric}"

    # The URL holds plain run ids (?runs=a&runs=b) so that other pages can link here; the picker shows
    # descriptions, so it is kept in step with the URL by hand rather than bound to it.
    if "runs_pick" not in st.session_state:
        st.session_state["runs_pick"] = wanted[:12]
    picked = st.multiselect("Runs (up to 12)", options, key="runs_pick", max_selections=12, format_func=describe,
                            placeholder="Pick runs; the newest 300 are listed")
    if picked:
        st.query_params["runs"] = picked
    elif "runs" in st.query_params:
        del st.query_params["runs"]
    if not picked:
        st.info("Pick one or more runs above, or open them from the Runs or Explore page.")
    else:
        c = st.columns([2, 1, 1, 2, 1])
        cx = c[0].segmented_control("Curve against", ["step", "tokens", "wall_time_s"], key="cx", default="step",
                                    required=True, bind="query-params") or "step"
        log_x = c[1].toggle("log x", value=False, key="curve_logx", bind="query-params")
        log_y = c[2].toggle("log y", value=False, key="curve_logy", bind="query-params")
        smoothing = c[3].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="curve_smooth",
                                help="Moving average of the training loss (0 = raw).")
        best = c[4].toggle("best so far", value=True, key="curve_best", help="The best validation so far.")
        statuses = runs.filter(pl.col("run_id").is_in(picked))["status"].to_list()
        training = any(s in ("queued", "running") for s in statuses)

        # While a picked run is queued or training, the curve redraws itself every 2 s from the
        # progress channel, and the record is read again (a run that ends shows its final record).
        @st.fragment(run_every=2 if training else None)
        def learning_curves() -> None:
            records = [r for r in (state.record(i) for i in picked) if r is not None]
            if not records:
                st.info("None of these runs has a record in the store.")
                return
            active = [r.run_id for r in records if r.status in ("queued", "running")]
            live = actions.progress(active)
            before = st.session_state.get("_run_watch")
            st.session_state["_run_watch"] = (picked, active)
            if before is not None and before[0] == picked and set(before[1]) - set(active):
                st.rerun()  # a run ended: the whole page shows its final record
            for r in records:
                if r.run_id in active:
                    st.caption(f"{r.run_id}: {text.live_line(r.status, live.get(r.run_id) or {})}")
            fig = figures.curves_figure(curves.curve_frame(records, live), x=cx, metric_name=records[0].metric_name,
                                        log_x=log_x, log_y=log_y, smoothing=smoothing, best=best,
                                        empty_text="Waiting for the first points of the learning curve."
                                        if active else "No learning curve recorded.")
            st.plotly_chart(fig, key="run_curves")
            current.add_figure("Learning curves", fig)

        learning_curves()
        records = [r for r in (state.record(i) for i in picked) if r is not None]
        config = side_by_side(records, CONFIG_FIELDS)
        proto = side_by_side(records, PROTOCOL_FIELDS, source="spec")
        provenance = side_by_side(records, PROVENANCE_FIELDS)
        only = len(records) > 1 and st.toggle("only the fields that differ", key="only_diff")
        if len(records) > 1:
            st.caption("Fields whose values differ between the runs are highlighted.")
        left, right = st.columns(2)
        left.markdown("**Configuration and results**")
        show_fields(left, config, "run_config", only)
        right.markdown("**Training protocol (the run spec, preset values filled in)**")
        show_fields(right, proto, "run_protocol", only)
        right.markdown("**Provenance**")
        show_fields(right, provenance, "run_provenance", only)
        for caption, table in (("Configuration and results", config), ("Training protocol", proto),
                               ("Provenance", provenance)):
            current.add_table(caption, table)
        current.add_settings(runs=", ".join(picked), curve_x=cx)
        for r in records:
            with st.expander(f"{r.run_id}: full configuration, spec, versions and history"):
                st.json({"config": r.config, "spec": r.spec, "versions": r.versions}, expanded=False)
                st.dataframe(state.history(r.run_id).select("status", "attempt", "reason", "worker", "updated_at"),
                             hide_index=True)
        st.download_button("Download these runs (JSON, with curves)", key="download_runs_json", mime="application/json",
                           data=json.dumps([r.model_dump() for r in records], indent=1),
                           file_name="elmlab-runs.json")
