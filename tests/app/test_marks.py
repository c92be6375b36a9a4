"""What the charts mark on the points: runs that had not converged (hollow, with a hover note), runs
a search pruned (faded, never fitted), the data set's n-gram baselines, a colour per budget that does
not depend on the other budgets shown."""

from __future__ import annotations

import json

import polars as pl
import pytest

from app import figures, fits, frames
from elm_core.store import Store
from tests.app.test_pages import open_page

BASELINES = {"0": 8.0, "1": 3.4, "2": 2.35, "3": 2.1, "4": 2.05}


@pytest.fixture
def marked(filled_store: Store) -> Store:
    """The synthetic store with one configuration not converged, baselines on every text run and a
    run pruned by a search (cancelled) whose validation sits far below every finished run."""
    for run_id in ("t60000-32-0", "t60000-32-1"):
        rec = filled_store.run(run_id)
        filled_store.put(rec.model_copy(update={"converged": run_id.endswith("0"), "attempt": rec.attempt + 1}))
    for run_id in ("t120000-32-0", "t120000-32-1"):  # the newest; every real text run carries them
        rec = filled_store.run(run_id)
        filled_store.put(rec.model_copy(update={"baselines": BASELINES, "attempt": rec.attempt + 1}))
    rec = filled_store.run("t60000-4-0")
    filled_store.put(rec.model_copy(update={"run_id": "pruned-1", "status": "cancelled", "test_metric": 0.5,
                                            "valid_metric": 0.5, "reason": "pruned at step 100: rung 1 of 3"}))
    return filled_store


def test_unconverged_points_are_hollow_with_a_note(marked: Store):
    points = fits.fit_frame(frames.select(frames.prepare_runs(marked.runs()), task="text"), "test_metric")
    row = points.filter((pl.col("d_m") == 32) & (pl.col("iso_budget") == 60_000))
    assert row["unconverged"].to_list() == [1] and points["unconverged"].sum() == 1
    fig = figures.iso_figure(points, x="d_m")
    trace = next(t for t in fig.data if t.name == "P ≈ 60k")
    hollow = [i for i, s in enumerate(trace.marker.symbol) if s == "circle-open"]
    assert [trace.x[i] for i in hollow] == [32]
    assert "not converged" in trace.customdata[hollow[0]][-1] and trace.customdata[0][-1] == ""


def test_pruned_runs_are_drawn_faded_and_never_fitted(marked: Store):
    runs = frames.select(frames.prepare_runs(marked.runs()), task="text")
    points = fits.fit_frame(runs, "test_metric")
    assert "pruned-1" not in {i for ids in points["run_ids"].to_list() for i in ids}
    pruned = fits.pruned_runs(runs, "test_metric")
    assert pruned["run_id"].to_list() == ["pruned-1"]
    fig = figures.iso_figure(points, fits.iso_fits(points, "d_m", "test_metric", n_boot=20), pruned=pruned)
    faded = [t for t in fig.data if t.name == "pruned by a search"]
    assert len(faded) == 1 and faded[0].opacity < 0.5 and list(faded[0].y) == [0.5]
    fit = next(f for f in fits.iso_fits(points, "d_m", "test_metric", n_boot=20) if f.budget == 60_000)
    assert fit.optimum_metric > 1.0  # the pruned run's 0.5 did not pull the fit down


def test_text_charts_draw_the_ngram_baselines(marked: Store):
    at = open_page("explore", {"task": "text"})
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    labels = [a.get("text", "") for a in spec["layout"].get("annotations", [])]
    assert any("off the chart" in t and "0-gram 8.00" in t for t in labels)  # the unigram would flatten the U
    lines = {s.get("name"): s["y0"] for s in spec["layout"].get("shapes", [])}
    assert lines["2-gram baseline 2.350"] == 2.35 and 8.0 not in lines.values()
    assert all(s.get("showlegend") for s in spec["layout"]["shapes"])  # named in the legend, not on the points


def test_a_budget_keeps_its_colour(marked: Store):
    points = fits.fit_frame(frames.select(frames.prepare_runs(marked.runs()), task="text"), "test_metric")
    colour = {t.name: t.marker.color for t in figures.iso_figure(points).data}
    alone = {t.name: t.marker.color for t in figures.iso_figure(points, budgets=[60_000]).data}
    assert alone["P ≈ 60k"] == colour["P ≈ 60k"]
    assert len({colour["P ≈ 30k"], colour["P ≈ 60k"], colour["P ≈ 120k"]}) == 3
    for start in (1e4, 3.5e4, 6e4):
        assert len({figures.budget_color(start * 2**k) for k in range(8)}) == 8
        assert len({figures.budget_color(start * 10**k) for k in range(4)}) == 4
