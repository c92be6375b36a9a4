"""Figure builders on small frames: the traces each view promises (fits, optima, frontier, error bars)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from app import data, figures, fits, frames
from elm_core.analysis import fit_capacity_model, fit_scaling_law, load_reference_sweep
from elm_core.store import Store


@pytest.fixture
def runs(filled_store: Store) -> pl.DataFrame:
    return frames.select(frames.prepare_runs(filled_store.runs()), task="text")


@pytest.fixture
def points(runs: pl.DataFrame) -> pl.DataFrame:
    return fits.fit_frame(runs, "test_metric")


def names(fig: go.Figure) -> list[str]:
    return [t.name or "" for t in fig.data]


def test_seeds_collapse_into_error_bars(points: pl.DataFrame):
    assert points.height == 18 and set(points["n_seeds"].to_list()) == {2}
    fig = figures.iso_figure(points, [], x="d_m", metric="test_metric")
    runs = [t for t in fig.data if (t.name or "").startswith("P ≈")]
    assert len(runs) == 3  # one line per budget
    assert all(t.error_y.array is not None and len(t.error_y.array) == 6 for t in runs)
    assert runs[0].customdata[0][0].count(",") == 1  # both seeds' run ids travel with the point


def test_iso_figure_draws_fits_and_optima_with_intervals(points: pl.DataFrame):
    iso = fits.iso_fits(points, "d_m", "test_metric", n_boot=50)
    assert len(iso) == 3
    fig = figures.iso_figure(points, iso, x="d_m", metric="test_metric", budgets=[60_000.0])
    fit_lines = [t for t in fig.data if (t.name or "").startswith("fit,")]
    assert len(fit_lines) == 1 and fit_lines[0].line.dash == "dash"
    optimum = [t for t in fig.data if (t.name or "").startswith("optimum")]
    assert len(optimum) == 1 and optimum[0].marker.symbol == "star"
    assert optimum[0].error_x.array[0] >= 0 and optimum[0].error_x.arrayminus[0] >= 0
    table = fits.optima_table(iso)
    assert table.height == 3 and (table["ci_low"] <= table["optimum"]).all()
    assert table["optimum"].is_sorted()  # the planted surface moves the optimum to larger d_m with budget
    no_fit = figures.iso_figure(points, iso, x="d_m", metric="test_metric", show_fit=False)
    assert not [n for n in names(no_fit) if n.startswith("fit")]


def test_reference_overlay(points: pl.DataFrame):
    fig = figures.iso_figure(points, [], x="d_m", metric="test_metric", reference=load_reference_sweep())
    ref = [t for t in fig.data if t.name == "published enwik8 sweep"]
    assert len(ref) == 1 and len(ref[0].x) == 14


def test_pareto_figure_has_frontier_line_and_faded_dominated_runs(points: pl.DataFrame):
    result = fits.pareto(points, "params", "test_metric")
    fig = figures.pareto_figure(result)
    by_name = {t.name: t for t in fig.data}
    assert by_name["frontier"].line.shape == "hv"
    assert by_name["dominated"].marker.opacity < by_name["on the frontier"].marker.opacity
    assert len(by_name["on the frontier"].x) == result.n_frontier
    assert figures.pareto_figure(fits.NoFit("no runs")).layout.annotations  # an explanation, not a blank chart


def test_axis_figure_groups_by_the_fixed_axes(points: pl.DataFrame):
    # A one-axis sweep: N varies at fixed (k_e, k_c).
    sweep = pl.DataFrame({"n_neurons": [10, 20, 40, 10, 20], "k_e": [50, 50, 50, 90, 90], "k_c": [128] * 5,
                          "test_metric": [2.5, 2.3, 2.2, 2.4, 2.25], "run_id": list("abcde")})
    fig = figures.axis_figure(sweep, axis="n_neurons", fixed=("k_e", "k_c"))
    assert len(fig.data) == 2 and list(fig.data[0].x) == [10, 20, 40]
    # Across a budget ladder, N varies at each fixed d_m (so fixed k_e, k_c): one line per d_m.
    fig = figures.axis_figure(points, axis="n_neurons", fixed=("k_e", "k_c"))
    assert len(fig.data) == 6 and all(len(t.x) == 3 for t in fig.data)
    # One iso-budget sweep varies no axis alone: the figure says so.
    one_budget = points.filter(pl.col("iso_budget") == 60_000)
    fig = figures.axis_figure(one_budget, axis="n_neurons", fixed=("k_e", "k_c"))
    assert not fig.data and "axis sweep" in fig.layout.annotations[0].text


def test_scatter_and_curves(points: pl.DataFrame, filled_store: Store):
    fig = figures.scatter_figure(points, x="params", y="test_metric", color="d_m", log_x=True)
    assert fig.layout.xaxis.type == "log" and fig.data[0].marker.showscale
    rec = filled_store.run("t60000-8-0")
    curve = pl.DataFrame([{"label": rec.run_id, **p.model_dump()} for p in rec.curve])
    fig = figures.curves_figure(curve, x="tokens")
    assert [t.name for t in fig.data] == ["t60000-8-0 train", "t60000-8-0 valid"]


def test_design_figures():
    info = data.TaskInfo("text", 83, 83, "char", "bpc")
    design = data.make_design(info, budget=60_000, mode="neurons", d_m=8, n_neurons=1, d_tree=16, d_brch=8)
    curve = data.allocation_curve(design, 60_000)
    assert (curve["params"] <= 60_000).all() and curve["n_neurons"].is_sorted(descending=True)
    fig = figures.allocation_figure(curve, {"d_m": 8, "n_neurons": design.cfg.n_neurons})
    assert names(fig) == ["iso-budget curve (N)", "this design"]
    fig = figures.breakdown_figure(design.parts)
    assert sum(fig.data[0].x) == design.params


def test_scaling_figures(points: pl.DataFrame):
    fit = fit_scaling_law(points, n_boot=20)
    budgets = sorted(points["iso_budget"].unique().to_list())
    fig = figures.surface_figure(fit, points, metric="test_metric", budgets=budgets)
    assert isinstance(fig.data[0], go.Contour) and "runs" in names(fig) and "fitted optimum path" in names(fig)
    grid = np.geomspace(40_000, 1e6, 8)
    cap = fit_capacity_model(points, n_boot=20)
    fig = figures.optimum_figure({"scaling law": fit.optimal_allocation(grid), "capacity model":
                                  cap.optimal_allocation(grid)})
    assert {"scaling law", "capacity model"} <= set(names(fig))
    fig = figures.capacity_figure(cap, points, metric="test_metric")
    assert len([n for n in names(fig) if n.startswith("model")]) == 3
