"""The sweep views: parallel coordinates, parameter importance, best so far; the Runs table's filter,
grouping, tags and notes; differing fields between compared runs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from app import actions, annotations, frames, importance, sweep_figures
from elm_core.store import Store
from tests.app.test_pages import open_page


def test_importance_finds_the_parameter_that_matters():
    rng = np.random.default_rng(1)
    n = 240
    frame = pl.DataFrame({"d_m": rng.choice([1, 2, 4, 8, 16], n), "seed": rng.integers(0, 3, n),
                          "k_c": rng.uniform(10, 1000, n)})
    metric = 2.0 + 0.3 * np.log2(frame["d_m"].to_numpy()) + rng.normal(0, 0.05, n)
    frame = frame.with_columns(pl.Series("test_metric", metric))
    table = importance.parameter_importance(frame, ["d_m", "seed", "k_c", "missing"], "test_metric")
    share = dict(zip(table["parameter"], table["importance"], strict=True))
    assert table["parameter"][0] == "d_m" and share["d_m"] > 0.9
    assert share["seed"] < 0.02 and share["k_c"] < 0.05  # chance groupings are corrected away, not ~k/n
    assert "missing" not in share


def test_sweeps_page(filled_store: Store):
    at = open_page("sweeps", {"task": "text"})
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 3
    par = specs[0]["data"][0]
    assert par["type"] == "parcoords"
    labels = [d["label"] for d in par["dimensions"]]
    assert labels == ["N", "d_m", "k_e", "budget", "seed", "test BPC"]  # k_c, d_tree... are constant here
    n_axis = par["dimensions"][0]
    assert n_axis["ticktext"][0][0].isdigit() and "e" not in "".join(n_axis["ticktext"])  # log axis, plain labels
    history = specs[2]["data"]
    best = next(t for t in history if t["name"] == "best so far")["y"]
    assert best == sorted(best, reverse=True) and len(best) == 36


def test_runs_filter_expression_and_a_bad_one(filled_store: Store):
    frame = frames.prepare_runs(filled_store.runs())
    assert frames.filter_expression(frame, "task == text and d_m >= 16 and status == done").height == 12
    assert frames.filter_expression(frame, "budget = 60k and reason ~ nan").height == 1
    for bad, why in (("d_m >> 3", "is a number"), ("colour == red", "no column"), ("d_m", "no comparison")):
        with pytest.raises(ValueError, match=why):
            frames.filter_expression(frame, bad)
    at = open_page("runs", {"filter_expr": "task == text and d_m >= 16"})
    assert any("12 run(s) match" in c.value for c in at.caption)
    at = open_page("runs", {"filter_expr": "colour == red"})
    assert any("no column 'colour'" in w.value for w in at.warning)


def test_the_runs_table_shows_the_columns_chosen(filled_store: Store):
    at = open_page("runs")
    assert list(at.dataframe[-1].value.columns) == frames.TABLE_COLUMNS
    at.multiselect(key="table_columns").set_value(["test", "status"]).run()
    assert list(at.dataframe[-1].value.columns) == ["run_id", "status", "test"]  # run_id always, in table order


def test_tags_and_notes_live_beside_the_runs(filled_store: Store, monkeypatch: pytest.MonkeyPatch):
    actions.annotate("t60000-8-0", "best, check lr, best", "lr looks high", filled_store)
    assert json.loads((filled_store.path / "annotations.json").read_text())["t60000-8-0"] == {
        "tags": ["best", "check lr"], "note": "lr looks high"}
    assert filled_store.runs().height == 53  # the store reads its run files only
    at = open_page("runs", {"group_sweep": "true"})
    table = at.dataframe[-1].value
    assert table.loc[table["run_id"] == "t60000-8-0", "tags"].item() == "best, check lr"
    actions.annotate("t60000-8-0", "", "", filled_store)
    assert annotations.load(filled_store.path) == {}
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    with pytest.raises(actions.ReadOnlyError):
        actions.annotate("t60000-8-0", "x", "", filled_store)
    with pytest.raises(ValueError, match="longer than"):
        annotations.parse_tags("x" * 41)


def test_compared_runs_highlight_what_differs():
    table = pl.DataFrame({"field": ["d_m", "seed", "task"], "a": ["8", "0", "text"], "b": ["8", "1", "text"]})
    assert frames.differs(table) == [False, True, False]
    assert frames.differs(table.select("field", "a")) == [False, False, False]


def test_sweep_summary_groups_runs(filled_store: Store):
    summary = frames.sweep_summary(frames.prepare_runs(filled_store.runs()), "test_metric", maximize=False)
    row = summary.filter(pl.col("sweep_id") == "iso-60000").row(0, named=True)
    assert (row["runs"], row["done"], row["budgets"]) == (12, 12, "60000")
    assert row["best run"].startswith("t60000-")


def test_log_ticks_are_plain_numbers():
    vals, labels = sweep_figures._log_ticks(20, 1500)
    assert labels == ["20", "50", "100", "200", "500", "1k"] and len(vals) == 6
