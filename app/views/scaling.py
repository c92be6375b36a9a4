"""Scaling laws: the fitted loss surface, the optimal allocation against budget with intervals, the
capacity model beside the data, a prediction for any budget, and the runs worth doing next."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import streamlit as st

from app import actions, current, figures, fits, frames, state, text, ui
from elm_core.analysis import IsoFit
from elm_core.spec import RunSpec
from elm_core.sweeps import new_sweep_id

st.title("Scaling laws")
ui.show_flash()
runs = state.runs()


def optima_points(iso: list[IsoFit] | fits.NoFit) -> pl.DataFrame:
    """The iso-budget optima from the data as the optimum figure's markers (no rows without a fit)."""
    return fits.optima_table(iso).select("budget", value="optimum", lo="ci_low", hi="ci_high")


def params_table(fit) -> pl.DataFrame:
    ci = fit.param_ci
    return pl.DataFrame({"parameter": list(fit.params), "value": list(fit.params.values()),
                         "ci_low": [ci[k][0] for k in fit.params], "ci_high": [ci[k][1] for k in fit.params]})


ENGINEERING = {c: st.column_config.NumberColumn(c, format="engineering") for c in ("value", "ci_low", "ci_high")}
# The suggested runs as shown: narrow number columns and the reason wrapped in rows tall enough for
# all of it, so that the table fits a 1400 px window (kind, x and score are in the reason or the
# exported table). Streamlit wraps text only in rows taller than 4rem, hence three lines at least.
REASON_CHARS_PER_LINE = 52  # in the reason column's 400 px at least
LINE_PX, ROW_PADDING_PX = 21, 8


def suggestion_columns(metric: str, mname: str) -> dict:
    number = st.column_config.NumberColumn
    return {
        "rank": number("#", width=32),
        "budget": number("budget", format="localized", width=78, help="Parameters of the suggested run."),
        "d_m": number("d_m", width=46),
        "n_neurons": number("N", format="localized", width=58, help="Hidden neurons at this budget and d_m."),
        "k_e": number("k_e", format="%d", width=50),
        "k_c": number("k_c", format="%d", width=50),
        "predicted_metric": number(f"predicted {mname}", format="%.4f", width=96,
                                   help=f"The {text.METRICS[metric]} {mname} the fit predicts for this run."),
        "sd_reduction_pct": number("spread cut", format="%.0f%%", width=80,
                                   help="How much this run is expected to narrow the optimum's spread."),
        "reason": st.column_config.TextColumn("why", width="large"),
    }


def spec_fields(task: str) -> dict:
    """The protocol of the task's latest finished run of ours, for queueing suggestions alike."""
    mine = runs.filter((pl.col("task") == task) & (pl.col("source") != "reference") & (pl.col("status") == "done"))
    record = state.record(mine.sort("created_at")["run_id"][-1]) if mine.height else None
    if record is None:
        return {}
    spec = record.spec
    keep = set(RunSpec.model_fields) - {"run_id", "sweep_id", "seed", "budget", "d_m", "n_neurons", "task"}
    return {k: v for k, v in spec.items() if k in keep and v is not None}


def show(task: str, metric: str) -> None:
    mname = frames.metric_name(runs, task)
    points = state.fit_frame(task, metric)
    budgets = sorted({float(b) for b in points["iso_budget"].drop_nulls().to_list()}) if points.height else []
    fit = state.scaling(task, metric)
    cap = state.capacity(task, metric)
    if isinstance(fit, fits.NoFit):
        st.info(f"No scaling-law fit for {task} yet ({fit.reason}). It needs finished runs at several allocations, "
                "best at several budgets: queue a budget ladder on the Design page.")
    else:
        st.subheader("The fitted surface")
        st.latex(r"L(N, k_e, k_c) = E + A\,N^{-\alpha} + B\,k_e^{-\beta}" + (r" + C\,k_c^{-\gamma}" if "C" in
                 fit.params else ""))
        left, right = st.columns([3, 2])
        surface = figures.surface_figure(fit, points, metric=metric, metric_name=mname, budgets=budgets)
        left.plotly_chart(surface, key="scaling_surface")
        table = params_table(fit)
        right.dataframe(table, hide_index=True, key="scaling_params", width="stretch", column_config=ENGINEERING)
        right.caption(f"{fit.n_runs} configurations; RMSE {fit.rmse:.4f}; residual sd of log L {fit.sigma_log:.3f}. "
                      "95% intervals from a pairs bootstrap. Details: docs/analysis.md.")
        current.add_figure("Fitted surface", surface)
        current.add_table("Scaling-law parameters", table)

        lo, hi = fits.fitted_budgets(points, fit)
        grid = np.geomspace(max(lo / 3, 1.5 * fit.overhead), hi * 30, 24)
        series = {"scaling law": fit.optimal_allocation(grid)}
        if not isinstance(cap, fits.NoFit):
            series["capacity model"] = cap.optimal_allocation(grid)
        opt_fig = figures.optimum_figure(series, {"n_neurons": optima_points(state.iso_fits(task, metric, "n_neurons")),
                                                  "k_e": optima_points(state.iso_fits(task, metric, "k_e"))})
        st.plotly_chart(opt_fig, key="scaling_optimum")
        current.add_figure("Optimal allocation against budget", opt_fig)
        laws = fit.power_laws(grid)
        st.caption("Power laws of the optimum: " + "; ".join(
            f"{r['quantity']}* ∝ P^{r['exponent']:.2f} [{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]"
            for r in laws.iter_rows(named=True)))

        st.subheader("Predict a budget")
        box, why = st.columns([1, 3])
        typed = box.text_input("Budget to predict (parameters)", text.human(hi * 2), key="predict",
                               bind="query-params", help="A number of parameters: 240000, 240k, 2.4e5, 1.5M.")
        p, problem = ui.budget_value(typed, default=int(hi * 2), low=max(1_000, int(2 * fit.overhead)),
                                     high=10**11)
        if problem:
            why.warning(f"Predicting **{text.human(p)}** ({p:,} parameters): {problem}.", icon=":material/info:")
        row = fit.predict_budget(float(p)).row(0, named=True)
        c = st.columns(4)
        c[0].metric(f"Predicted {text.METRICS[metric]} {mname}", f"{row['metric']:.4f}",
                    f"95% CI {row['ci_lo']:.4f} to {row['ci_hi']:.4f}", **ui.NOTE)
        c[1].metric("One new run would land in", f"{row['pi_lo']:.3f} to {row['pi_hi']:.3f}", "95% prediction interval",
                    **ui.NOTE)
        c[2].metric("Optimal N", f"{row['n_neurons']:,.0f}",
                    f"{row['n_neurons_lo']:,.0f} to {row['n_neurons_hi']:,.0f}", **ui.NOTE)
        c[3].metric("Optimal k_e", f"{row['k_e']:,.0f}", f"{row['k_e_lo']:,.0f} to {row['k_e_hi']:,.0f}",
                    **ui.NOTE)
        seen = fits.fitted_budgets(points, fit)
        if not seen[0] <= p <= seen[1]:
            st.warning(f"**Extrapolation:** the fit saw budgets {text.human(seen[0])} to {text.human(seen[1])}; "
                       f"{text.human(p)} lies {'above' if p > seen[1] else 'below'} them, so the prediction rests "
                       "on the power law holding beyond the data.", icon=":material/warning:")
        current.add_settings(task=task, metric=metric, predict_budget=int(p))

    st.subheader("Capacity model beside the data")
    if isinstance(cap, fits.NoFit):
        st.info(f"No capacity-model fit yet ({cap.reason}).")
    else:
        st.caption("Our closed-form model (not the paper's): per-neuron SNR saturating in k_e and k_c, effective "
                   "neurons N_0 ln(1 + N / N_0), loss a power law of the capacity.")
        cap_fig = figures.capacity_figure(cap, points, metric=metric, metric_name=mname, baselines=state.baselines(task)
                                          if mname == "bpc" and metric != "train_metric" else None)
        left, right = st.columns([3, 2])  # room for the parameter table's engineering notation at 1400 px
        left.plotly_chart(cap_fig, key="capacity_chart")
        right.dataframe(params_table(cap), hide_index=True, key="capacity_params", width="stretch",
                        column_config=ENGINEERING)
        worst = cap.points.with_columns(pl.col("residual").abs().alias("abs_residual")).sort(
            "abs_residual", descending=True).head(3)
        misses = ", ".join(f"N={r['n_neurons']}, k_e={r['k_e']} ({r['residual']:+.3f})"
                           for r in worst.iter_rows(named=True))
        versus = f" (scaling law: {fit.rmse:.4f})" if not isinstance(fit, fits.NoFit) else ""
        right.caption(f"RMSE {cap.rmse:.4f}{versus}. Largest misses: {misses}.")
        current.add_figure("Capacity model beside the data", cap_fig)

    st.subheader("Suggested next runs")
    sugg = state.suggestions(task, metric)
    if isinstance(sugg, fits.NoFit):
        st.info("No suggestions yet: they need an iso-budget group with at least three allocations.")
        return
    shown = suggestion_columns(metric, mname)
    longest = int(sugg["reason"].str.len_chars().max() or 0)
    row_px = ROW_PADDING_PX + LINE_PX * max(3, math.ceil(longest / REASON_CHARS_PER_LINE))
    st.dataframe(sugg.select(list(shown)), hide_index=True, key="suggestions_table", column_config=shown,
                 row_height=row_px, height=36 + row_px * sugg.height + 3)
    current.add_table("Suggested next runs", sugg)
    if actions.read_only():
        return
    seeds = st.number_input("Seeds per suggestion", 1, 10, 1, key="suggest_seeds")
    if st.button(f"Queue these {sugg.height} runs", key="queue_suggested", type="primary",
                 icon=":material/play_arrow:"):
        fields = spec_fields(task)
        sweep = new_sweep_id("suggested")

        def build() -> list[RunSpec]:
            return [RunSpec(task=task, budget=int(round(r["budget"])), d_m=int(r["d_m"]), seed=s, sweep_id=sweep,
                            **fields) for r in sugg.iter_rows(named=True) for s in range(int(seeds))]

        ids = ui.run_action("Queue suggestions", lambda: actions.submit(build()))
        if ids:
            ui.flash("success", f"Queued {len(ids)} suggested run(s).", ids)
        st.rerun()


if runs.height == 0 or not frames.tasks_by_done(runs):
    ui.first_screen("scaling")
else:
    c = st.columns([1, 1, 2])
    with c[0]:
        chosen_task = ui.task_picker(runs)
    with c[1]:
        chosen_metric = ui.metric_picker()
    show(chosen_task, chosen_metric)
