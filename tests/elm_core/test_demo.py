"""The shipped demo result set: real iso-budget sweeps that load in one command and draw U-curves."""

from __future__ import annotations

import polars as pl

from elm_core.analysis import fit_iso_budgets, pareto_frontier
from elm_core.demo import DEMO_FILE, load_demo
from elm_core.store import Store
from elmlab.cli import main


def test_demo_loads_with_one_command_and_twice_adds_nothing(elmlab_home, capsys):
    assert main(["demo", "load"]) == 0
    assert "loaded 36 demo runs" in capsys.readouterr().out
    store = Store(elmlab_home / "store")
    assert store.runs().height == 36
    assert load_demo(store) == 36 and store.runs().height == 36


def test_demo_holds_three_budgets_several_allocations_two_seeds(tmp_path):
    store = Store(tmp_path / "store")
    load_demo(store)
    runs = store.runs()
    assert set(runs["status"]) == {"done"} and set(runs["task"]) == {"text"}
    per_budget = runs.group_by("budget").agg(pl.col("d_m").n_unique().alias("allocs"),
                                             pl.col("seed").n_unique().alias("seeds"))
    assert per_budget.height >= 3
    assert per_budget["allocs"].min() >= 5 and per_budget["seeds"].min() >= 2
    assert all(r["spec"] and r["curve"] != "[]" for r in store.runs(with_curve=True).iter_rows(named=True))


def test_demo_draws_interior_optima_and_a_frontier():
    runs = pl.read_parquet(DEMO_FILE)
    fits = fit_iso_budgets(runs, x="d_m", metric="test_metric")
    assert len(fits) == 3
    for fit in fits:  # a U: the best allocation lies strictly inside the sampled range
        assert runs["d_m"].min() < fit.optimum < runs["d_m"].max()
    frontier = pareto_frontier(runs, x="params", metric="test_metric").frame
    assert 1 <= frontier["on_frontier"].sum() < frontier.height
