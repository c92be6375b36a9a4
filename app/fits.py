"""The fits the pages show, on seed-collapsed runs: iso-budget curves, the Pareto frontier, the scaling
law, the capacity model and the suggested next runs (no Streamlit here; state.py caches them).

Each fit gives back its result or a `NoFit` carrying the reason there is none (too few runs, too few
allocations, a metric that cannot be fitted), so every page says "no fit" the same way and can show why.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from elm_core.analysis import (
    CapacityFit,
    IsoFit,
    ParetoResult,
    ScalingFit,
    collapse_seeds,
    done_runs,
    fit_capacity_model,
    fit_iso_budgets,
    fit_scaling_law,
    iso_budget_groups,
    load_reference_sweep,
    pareto_frontier,
    suggest_next_runs,
)
from elm_core.analysis.frame import on_curve
from elm_core.sweeps import N_MIN


@dataclass(frozen=True)
class NoFit:
    """No fit, and why (one line, shown to the user)."""

    reason: str


NO_RUNS = "no finished runs with this metric"


PRUNED = "pruned at step"  # the reason a search gives the runs it stops (status cancelled)


def fit_frame(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Done runs with `metric`, seeds collapsed (mean, <metric>_std, n_seeds, run_ids), grouped into
    iso-budget groups (`iso_budget`), with `unconverged`: how many of the seeds' runs ended with
    `converged` False (still improving at the end of training; None counts as converged, unknown).
    Only done runs enter: a run a search pruned is cancelled and never a finished point of a fit."""
    runs = done_runs(frame, metric) if metric in frame.columns else frame.clear()
    if runs.height == 0:
        return runs.with_columns(pl.lit(None, dtype=pl.Float64).alias("iso_budget"),
                                 pl.lit(None, dtype=pl.UInt32).alias("n_seeds"),
                                 pl.lit(0, dtype=pl.UInt32).alias("unconverged"))
    if "config_key" in runs.columns:
        # collapse_seeds groups by the `config` column besides the architecture columns; the seedless
        # digest of config and spec stands in for the JSON (so runs of different protocols stay apart).
        runs = runs.drop([c for c in ("config",) if c in runs.columns]).rename({"config_key": "config"})
    out = iso_budget_groups(collapse_seeds(runs))
    if "converged" not in runs.columns:
        return out.with_columns(pl.lit(0, dtype=pl.UInt32).alias("unconverged"))
    flags = runs.select("run_id", (pl.col("converged") == False).fill_null(False).alias("_nc"))  # noqa: E712
    counts = (out.with_row_index("_row").select("_row", "run_ids").explode("run_ids")
              .join(flags, left_on="run_ids", right_on="run_id", how="left")
              .group_by("_row").agg(pl.col("_nc").sum().cast(pl.UInt32).alias("unconverged")))
    return (out.with_row_index("_row").join(counts, on="_row", how="left").sort("_row").drop("_row")
            .with_columns(pl.col("unconverged").fill_null(0)))


def pruned_runs(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Runs a search pruned (cancelled, reason "pruned at step ...") that have `metric`, in iso-budget
    groups: shown faded beside the finished runs, never fitted."""
    if metric not in frame.columns or "reason" not in frame.columns:
        return frame.clear().with_columns(pl.lit(None, dtype=pl.Float64).alias("iso_budget"))
    pruned = frame.filter((pl.col("status") == "cancelled") & pl.col("reason").fill_null("").str.starts_with(PRUNED)
                          & pl.col(metric).is_not_null())
    return iso_budget_groups(pruned)


def iso_fits(collapsed: pl.DataFrame, x: str, metric: str, n_boot: int = 200) -> list[IsoFit] | NoFit:
    """One U-curve fit per iso-budget group with three or more distinct values of `x`."""
    if collapsed.height == 0 or x not in collapsed.columns:
        return NoFit(NO_RUNS if collapsed.height == 0 else f"no column {x!r} in the runs")
    try:
        fits = fit_iso_budgets(on_curve(collapsed)[0], x=x, metric=metric, n_boot=n_boot)
    except ValueError as exc:
        return NoFit(str(exc))
    return fits or NoFit(f"an iso-budget fit needs at least three distinct allocations ({x}) at one budget")


def pareto(collapsed: pl.DataFrame, cost: str, metric: str) -> ParetoResult | NoFit:
    """The frontier of `metric` against `cost` (parameters, FLOPs per step or wall time)."""
    if collapsed.height == 0 or cost not in collapsed.columns:
        return NoFit(NO_RUNS if collapsed.height == 0 else f"no column {cost!r} in the runs")
    try:
        return pareto_frontier(collapsed, x=cost, metric=metric)
    except ValueError as exc:
        return NoFit(str(exc))


def _surface(fitter, collapsed: pl.DataFrame, metric: str, what: str):
    """A fit over all budgets of the runs on the iso-budget curve; NoFit when it cannot be made or failed."""
    try:
        fit = fitter(on_curve(collapsed)[0], metric=metric)
    except ValueError as exc:
        return NoFit(str(exc))
    return fit if fit.ok else NoFit(f"the {what} fit failed: {fit.reason}")


def scaling(collapsed: pl.DataFrame, metric: str) -> ScalingFit | NoFit:
    """The surface L(N, k_e, k_c) = E + A N^-alpha + B k_e^-beta (+ C k_c^-gamma) over all budgets."""
    return _surface(fit_scaling_law, collapsed, metric, "scaling-law")


def fitted_budgets(collapsed: pl.DataFrame, fit: ScalingFit) -> tuple[float, float]:
    """The smallest and largest budget a surface fit saw: its iso-budget groups' budgets, else the
    parameter counts of its runs. A prediction outside them is an extrapolation."""
    budgets = collapsed["iso_budget"].drop_nulls() if "iso_budget" in collapsed.columns else pl.Series([])
    return (float(budgets.min()), float(budgets.max())) if budgets.len() else fit.budget_range


def capacity(collapsed: pl.DataFrame, metric: str) -> CapacityFit | NoFit:
    """The closed-form capacity model (per-neuron SNR saturating in k_e and k_c)."""
    return _surface(fit_capacity_model, collapsed, metric, "capacity-model")


def suggestions(collapsed: pl.DataFrame, metric: str, n: int = 5) -> pl.DataFrame | NoFit:
    """The `n` runs (budget, d_m) that would narrow the optimum's interval most, best first; each a
    design the Design page would queue: the budget a whole number of parameters (3 significant digits),
    d_m >= 1 and at least N_MIN hidden neurons (elm_core.sweeps: fewer is another kind of model)."""
    try:
        ranked = suggest_next_runs(on_curve(collapsed)[0], x="d_m", metric=metric, n=3 * n)
    except ValueError as exc:
        return NoFit(str(exc))
    if ranked.height:
        digits = (2 - pl.col("budget").log10().floor()).cast(pl.Int32)
        ranked = (ranked.with_columns(pl.struct(budget="budget", digits=digits).map_elements(
                      lambda r: float(round(r["budget"], r["digits"])), return_dtype=pl.Float64).cast(pl.Int64))
                  .filter((pl.col("d_m") >= 1) & (pl.col("n_neurons") >= N_MIN))
                  .unique(["budget", "d_m"], keep="first", maintain_order=True).head(n)
                  .with_columns(pl.int_range(1, pl.len() + 1).alias("rank")))
    return ranked if ranked.height else NoFit("no valid design among the suggestions (each needs d_m >= 1 and "
                                              f"at least {N_MIN} neurons)")


def optima_table(fits: list[IsoFit] | NoFit) -> pl.DataFrame:
    """One row per iso-budget fit: the optimum with its interval, whether the runs bracket it (null:
    no interval, so not shown), and which way to extend the sweep when it is not (no rows without a fit)."""
    rows = [
        {
            "budget": f.budget,
            "optimum": f.optimum,
            "ci_low": f.ci[0],
            "ci_high": f.ci[1],
            "metric_at_optimum": f.optimum_metric,
            "bracketed": f.bracketed,
            "extend_toward": f.extend_toward or None,
            "edge_advice": f.edge_advice or None,
            "runs": f.n_points,
            "note": f.note,
        }
        for f in ([] if isinstance(fits, NoFit) else fits)
    ]
    schema = {"budget": pl.Float64, "optimum": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "metric_at_optimum": pl.Float64, "bracketed": pl.Boolean, "extend_toward": pl.String,
              "edge_advice": pl.String, "runs": pl.Int64,
              "note": pl.String}
    return pl.DataFrame(rows, schema=schema)


def reference_overlay(frame: pl.DataFrame, task: str) -> pl.DataFrame:
    """The published enwik8 sweep for overlay: nothing when it is already in the data shown."""
    if task == "enwik8" and frame.filter((pl.col("source") == "reference") & (pl.col("task") == task)).height:
        return pl.DataFrame()
    return load_reference_sweep()
