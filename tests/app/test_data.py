"""The dashboard's data work: designs in each allocation mode, estimates, the runs table."""

from __future__ import annotations

import polars as pl
import pytest

from app import data, fits, frames, text
from elm_core.budget import count_params

TEXT = data.TaskInfo("text", 83, 83, "char", "bpc")


def design(mode: str, **kw):
    args = dict(budget=60_000, mode=mode, d_m=8, n_neurons=40, d_tree=16, d_brch=8)
    return data.make_design(TEXT, **{**args, **kw})


@pytest.mark.parametrize("mode", list(data.MODES))
def test_every_mode_spends_the_budget_without_exceeding_it(mode: str):
    d = design(mode)
    assert d.params == count_params(d.cfg) <= 60_000
    # the solved quantity is the largest that fits: one more would exceed the budget
    bigger = {"neurons": {"n_neurons": d.cfg.n_neurons + 1}, "memory": {"d_m": d.cfg.d_m + 1},
              "connectivity": {"d_brch": d.cfg.d_brch + 1}}[mode]
    assert count_params(d.cfg.replace(**bigger)) > 60_000
    assert d.spec.resolve_config(n_in=83, n_out=83) == d.cfg  # what is queued is what is shown


def test_fixed_choices_are_kept():
    assert design("neurons").cfg.d_m == 8
    assert design("memory").cfg.n_neurons == 40
    d = design("connectivity")
    assert (d.cfg.n_neurons, d.cfg.d_m, d.cfg.d_tree) == (40, 8, 16) and d.k_c == 16 * d.cfg.d_brch


def test_impossible_designs_raise_value_errors_naming_the_problem():
    with pytest.raises(ValueError, match="too small"):
        design("neurons", budget=1_000)
    with pytest.raises(ValueError, match="too small"):
        design("connectivity", budget=20_000, n_neurons=400)
    with pytest.raises(ValueError, match="steps"):
        design("neurons", overrides={"steps": 0})


def test_overrides_reach_the_spec_and_the_estimate():
    short = design("neurons", overrides={"steps": 5, "batch_size": 2, "seq_len": 20})
    assert (short.spec.steps, short.train_tokens) == (5, 5 * 2 * 20)
    empty = pl.DataFrame()
    assert data.estimate_seconds(empty, short)[0] < data.estimate_seconds(empty, design("neurons"))[0]
    seconds, basis = data.estimate_seconds(empty, short)
    assert "assumed" in basis and seconds > 0


def test_estimate_uses_finished_runs_of_similar_flops():
    d = design("neurons")
    runs = pl.DataFrame({"status": ["done"], "wall_time_s": [10.0], "tokens_seen": [100_000],
                         "flops_per_step": [d.flops]})
    seconds, basis = data.estimate_seconds(runs, d)
    work = 3.0 * d.flops * d.train_tokens + d.flops * d.eval_tokens
    assert seconds == pytest.approx(data.STARTUP_S + work / (3.0 * d.flops * 100_000 / 10.0))
    assert "1 finished run" in basis


def test_parse_ints():
    assert text.parse_ints("2, 4 8,4", "d_m") == [2, 4, 8]
    assert text.parse_ints("15k, 1.5M", "budgets") == [15_000, 1_500_000]
    with pytest.raises(ValueError, match="d_m: 'x'"):
        text.parse_ints("2, x", "d_m")
    with pytest.raises(ValueError, match="at least one"):
        text.parse_ints(" ", "d_m")
    with pytest.raises(ValueError, match="budgets: 'inf' is not a finite number"):
        text.parse_ints("60k, inf", "budgets")
    assert text.parse_ints(", ".join(text.human(b) for b in (15_000, 60_000, 1_500_000)), "budgets") == [
        15_000, 60_000, 1_500_000]  # the ladder's default text reads back as the budgets it shows


def test_runs_table_merges_live_progress(filled_store):
    frame = frames.prepare_runs(filled_store.runs())
    table = frames.runs_table(frame, {"live-running": {"step": 5, "total_steps": 20, "loss": 3.1, "tokens_per_s": 900.0,
                                                     "eta_s": 12.0}})
    row = table.filter(pl.col("run_id") == "live-running").row(0, named=True)
    assert (row["progress"], row["loss"], row["tokens/s"], row["ETA"]) == (0.25, "3.1000", "900", "12 s")
    done = table.filter(pl.col("status") == "done").row(0, named=True)
    assert done["progress"] == 1.0 and done["ETA"] == "0 s" and done["loss"] == ""
    assert done["tokens/s"] == "16,000" and float(done["test"]) > 1.5  # 320k tokens in 20 s; its test BPC
    failed = table.filter(pl.col("status") == "failed").row(0, named=True)
    assert (failed["test"], failed["tokens/s"], failed["ETA"]) == ("", "", "")  # blank, never "None"
    assert table.columns[:3] == ["run_id", "status", "progress"]
    assert frames.status_counts(frame) == {"queued": 1, "running": 1, "done": 50, "failed": 1, "cancelled": 0}
    assert frames.tasks_by_done(frame) == ["text", "enwik8"]  # most finished runs first


def test_seeds_collapse_only_within_one_protocol():
    base = {"task": "text", "status": "done", "n_neurons": 10, "d_m": 4, "l_mlp": 1, "d_mlp": 8, "d_tree": 16,
            "d_brch": 8, "params": 50_000, "budget": 50_000, "test_metric": 2.0, "metric_name": "bpc"}
    rows = [{**base, "run_id": f"r{i}", "seed": seed, "test_metric": 2.0 + 0.01 * i,
             "config": f'{{"d_m": 4, "seed": {seed}}}', "spec": f'{{"lr": {lr}, "run_id": "r{i}", "seed": {seed}}}'}
            for i, (seed, lr) in enumerate([(0, 0.003), (1, 0.003), (0, 0.01)])]
    points = fits.fit_frame(frames.prepare_runs(pl.DataFrame(rows)), "test_metric")
    assert sorted(points["n_seeds"].to_list()) == [1, 2]


def test_selected_points_open_their_runs():
    from app.ui import selected_run_ids

    event = {"selection": {"points": [{"customdata": ["a,b", 10, 4]}, {"customdata": ["b,c"]}, {"x": 1}]}}
    assert selected_run_ids(event) == ["a", "b", "c"]
    assert selected_run_ids(None) == []
