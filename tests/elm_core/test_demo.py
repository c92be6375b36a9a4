"""The shipped demo result set: multi-fidelity searches that ELM Lab ran itself, which load in one
command, keep the runs the search stopped, and draw iso-budget curves."""

from __future__ import annotations

import json

import polars as pl
import pytest

from elm_core.analysis import fit_iso_budgets, pareto_frontier
from elm_core.demo import DEMO_FILE, load_demo
from elm_core.search.grid_replay import replay
from elm_core.store import Store
from elm_core.sweeps import MAX_UNDER_BUDGET, N_MIN
from elmlab.cli import main

RUNS = pl.read_parquet(DEMO_FILE)
TEXT = RUNS.filter(pl.col("task") == "text")


def test_demo_loads_with_one_command_and_twice_adds_nothing(elmlab_home, capsys):
    assert main(["demo", "load"]) == 0
    assert f"loaded {RUNS.height} demo runs" in capsys.readouterr().out
    store = Store(elmlab_home / "store")
    assert store.runs().height == RUNS.height
    assert load_demo(store) == RUNS.height and store.runs().height == RUNS.height
    pruned = store.runs().filter(pl.col("status") == "cancelled")
    assert pruned.height and all(r.startswith("pruned at step") for r in pruned["reason"])


def test_three_text_budgets_over_8x_with_six_allocations_each():
    per_budget = TEXT.group_by("budget").agg(pl.col("d_m").n_unique().alias("started"),
                                             pl.col("d_m").filter(pl.col("status") == "done").n_unique()
                                             .alias("finished"))
    assert per_budget.height >= 3 and per_budget["budget"].max() / per_budget["budget"].min() >= 8
    assert per_budget["started"].min() >= 6 and per_budget["finished"].min() >= 3
    assert TEXT.group_by("budget", "d_m").agg(pl.col("seed").n_unique()).get_column("seed").max() >= 2
    # Every design is on its iso-budget curve: the sweeps were screened.
    assert (RUNS["n_neurons"] >= N_MIN).all()
    assert (RUNS["params"] >= (1 - MAX_UNDER_BUDGET) * RUNS["budget"]).all()
    assert all(r["spec"] and r["curve"] != "[]" for r in RUNS.iter_rows(named=True))


def test_finished_text_runs_are_converged_cpu_runs_and_the_larger_budgets_beat_the_4gram():
    done = TEXT.filter(pl.col("status") == "done")
    assert {json.loads(s)["preset"] for s in done["spec"]} == {"cpu"}
    assert done["converged"].mean() >= 0.75
    four_gram = {json.loads(b)["4"] for b in done["baselines"]}
    assert len(four_gram) == 1  # one split, one baseline
    best = done.group_by("budget").agg(pl.col("test_metric").min()).sort("budget")
    assert (best["test_metric"].diff().drop_nulls() < 0).all()  # more budget, better text model
    assert (best.filter(pl.col("budget") > 100_000)["test_metric"] < four_gram.pop()).all()


def test_the_spike_sweep_has_five_allocations_and_learns():
    spike = RUNS.filter((pl.col("task") == "synthetic-adding") & (pl.col("status") == "done"))
    assert spike["d_m"].n_unique() >= 5 and spike["test_metric"].min() > 0.3  # chance is about 0.1


def test_demo_draws_an_iso_curve_per_budget_and_a_frontier():
    fits = fit_iso_budgets(TEXT, x="d_m", metric="test_metric")
    assert len(fits) == 3
    for fit in fits:
        assert TEXT["d_m"].min() <= fit.optimum <= TEXT["d_m"].max()
    frontier = pareto_frontier(TEXT, x="params", metric="test_metric").frame
    assert 1 <= frontier["on_frontier"].sum() < frontier.height


def test_the_demo_is_not_a_full_grid_so_the_replay_refuses_it():
    with pytest.raises(ValueError, match="runs of a search"):
        replay(RUNS.filter(pl.col("task") == "text"))


def test_the_demo_spike_search_is_a_full_grid_the_replay_takes(capsys):
    """The spike search and the runs queued after it trained every allocation (d_m 2-24) with both seeds
    to the end: `--task` picks it out of the demo file and the replay finds the grid's optimum inside
    its interval."""
    spike = RUNS.filter(pl.col("task") == "synthetic-adding")
    assert spike.group_by("d_m").agg(pl.col("seed").sort()).get_column("seed").to_list() == [[0, 1]] * 6
    args = ["sweep", "replay", "--input", str(DEMO_FILE), "--n-boot", "20", "--json"]
    assert main([*args, "--task", "synthetic-adding"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert group["inside"] is True and 0 < group["compute_fraction"] < 1
    assert main([*args, "--task", "no-such-task"]) == 2
    assert "no runs of that task" in capsys.readouterr().err
