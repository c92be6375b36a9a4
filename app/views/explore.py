"""Explore: U-shaped iso-budget curves with their fits and optima, the Pareto frontier, one-axis
scaling and free axes; seeds as error bars; select points to open their runs."""

from __future__ import annotations

import streamlit as st

from app import current, figures, fits, frames, state, text, ui

VIEWS = {"iso": "Iso-budget curves", "pareto": "Pareto frontier", "axis": "One-axis scaling", "free": "Free axes"}

st.title("Explore the tradeoff")
ui.show_flash()
runs = state.runs()
if runs.height == 0 or frames.tasks_by_done(runs) == []:
    ui.first_screen("explore")
else:
    c = st.columns([1, 1, 3])
    with c[0]:
        task = ui.task_picker(runs)
    with c[1]:
        metric = ui.metric_picker()
    view = c[2].segmented_control("View", list(VIEWS), key="view", default="iso", required=True,
                                  format_func=VIEWS.get, bind="query-params") or "iso"
    mname = frames.metric_name(runs, task)
    points = state.fit_frame(task, metric)
    o = st.columns(6)
    log_x = o[4].toggle("log x", value=True, key="logx", bind="query-params")
    log_y = o[5].toggle("log y", value=False, key="logy", bind="query-params")
    show_ref = mname == "bpc" and metric in ("test_metric", "valid_metric")
    reference = None
    if show_ref and o[3].toggle("published sweep", value=task == "enwik8", key="ref", bind="query-params",
                                help="Overlay the published enwik8 sweep (3.5M parameters, one seed each)."):
        reference = fits.reference_overlay(runs, task)
    settings = {"task": task, "metric": metric, "view": view, "log_x": log_x, "log_y": log_y}
    iso: list | fits.NoFit = fits.NoFit("not the iso-budget view")
    if view == "iso":
        x = o[0].selectbox("Allocation axis", list(text.ALLOCATION_LABELS), key="x", bind="query-params",
                           help=", ".join(text.ALLOCATION_LABELS.values()))
        budgets_all = sorted({int(round(b)) for b in points["iso_budget"].drop_nulls().to_list()})
        budgets = o[1].multiselect("Budgets (empty = all)", budgets_all, key="budgets", bind="query-params",
                                   format_func=text.human)
        show_fit = o[2].toggle("fit and optimum", value=True, key="fit", bind="query-params")
        iso = state.iso_fits(task, metric, x)
        wanted = [b for b in points["iso_budget"].drop_nulls().unique().to_list()
                  if not budgets or int(round(b)) in budgets]
        fig = figures.iso_figure(points, iso, x=x, metric=metric, metric_name=mname, log_x=log_x, log_y=log_y,
                                 budgets=wanted, reference=reference, show_fit=show_fit,
                                 pruned=state.pruned(task, metric),
                                 baselines=state.baselines(task) if mname == "bpc" and metric != "train_metric"
                                 else None)
        settings.update(x=x, budgets=budgets or "all", fit=show_fit)
    elif view == "pareto":
        cost = o[0].selectbox("Cost", list(text.COST_AXES), key="cost", bind="query-params",
                              help=", ".join(f"{k}: {v}" for k, v in text.COST_AXES.items()))
        result = state.pareto(task, metric, cost)
        fig = figures.pareto_figure(result, metric_name=mname, log_x=log_x, log_y=log_y, reference=reference)
        settings.update(cost=cost)
        if not isinstance(result, fits.NoFit):
            current.add_table("Frontier runs", result.frontier.select(
                [c for c in ("params", "flops_per_step", "wall_time_s", "n_neurons", "d_m", "k_e", "k_c", metric,
                             f"{metric}_std", "n_seeds") if c in result.frontier.columns]))
    elif view == "axis":
        axis = o[0].selectbox("Axis", list(text.SCALING_AXES), key="axis", bind="query-params",
                              help="N, k_e or k_c, with the other two held fixed (claim 1)")
        fig = figures.axis_figure(points, axis=axis, fixed=text.SCALING_AXES[axis], metric=metric, metric_name=mname,
                                  log_x=log_x, log_y=log_y)
        settings.update(axis=axis)
    else:
        numeric = frames.numeric_columns(points) or ["params"]
        fx = o[0].selectbox("x", numeric, key="fx", bind="query-params",
                            index=numeric.index("params") if "params" in numeric else 0)
        fy = o[1].selectbox("y", numeric, key="fy", bind="query-params",
                            index=numeric.index(metric) if metric in numeric else 0)
        color = o[2].selectbox("colour", ["none", *numeric], key="color", bind="query-params")
        fig = figures.scatter_figure(points, x=fx, y=fy, color=None if color == "none" else color, metric_name=mname,
                                     log_x=log_x, log_y=log_y)
        settings.update(x=fx, y=fy, colour=color)

    event = st.plotly_chart(fig, key="explore_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
    current.add_figure(VIEWS[view], fig)
    current.add_settings(**settings)
    picked = ui.selected_run_ids(event)
    if picked:
        ui.open_runs(picked, f"Open the {len(picked)} selected run(s)")
    else:
        st.caption("Click a point to open its runs, or pick the box or lasso tool in the chart's toolbar and "
                   "drag around several (a plain drag pans: a selecting drag would stop a click from opening a "
                   "point; double-click clears the selection and resets the axes). Error bars: standard "
                   "deviation over seeds. Hollow markers: runs still improving when training ended (not "
                   "converged). Faded crosses: runs a search pruned (not fitted). Fitted curves and their bands "
                   "are drawn only across the allocations that were run (clipped to the data's range). Hover for "
                   "the run's details.")

    if view == "iso" and not isinstance(iso, fits.NoFit):
        st.subheader("Optimum per budget")
        table = fits.optima_table(iso)
        lines = []
        for row in table.iter_rows(named=True):
            ci = (f"{row['ci_low']:.3g} to {row['ci_high']:.3g} (95% bootstrap interval)"
                  if row["ci_low"] == row["ci_low"] else "no interval (too few runs)")
            edge = ("" if row["bracketed"] else
                    " (not shown to be bracketed without an interval: repeat seeds or add allocations)"
                    if row["bracketed"] is None else
                    f" **at the edge of the sampled range: not bracketed; {row['edge_advice']}**")
            lines.append(f"- P ≈ **{text.human(row['budget'])}**: optimal {x} ≈ **{row['optimum']:.3g}**, {ci}; "
                         f"{text.METRICS[metric]} {mname} there ≈ {row['metric_at_optimum']:.4f} "
                         f"({row['runs']} configurations){edge}")
        st.markdown("\n".join(lines))
        st.dataframe(table, hide_index=True, key="optima_table")
        current.add_table(f"Optimum of {x} per budget", table)
    elif view == "iso" and points.height:
        st.caption("A fit needs at least three distinct allocations at one budget: queue an iso-budget sweep.")
    if points.height:
        shown = points.drop([c for c in ("run_ids", "seeds", "config") if c in points.columns])
        current.add_table("Configurations (seeds collapsed)", shown.head(2000))
        with st.expander(f"Data: {points.height:,} configurations (seeds collapsed)"):
            st.dataframe(shown.head(2000), hide_index=True)
    else:
        st.info(f"No finished runs with the {text.METRICS[metric]} metric for {task} yet.")
