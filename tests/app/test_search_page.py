"""The search in the dashboard: the Design page queues one; the Search page shows its rungs, what was
stopped and why, and its iso-budget curve with finished points solid and extrapolated ones hollow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from elm_core.records import CurvePoint
from elm_core.search.live import load_all
from elm_core.store import Store
from tests.app.test_pages import open_page


def test_design_page_finds_the_optimum_at_its_budget(store: Store, elmlab_home):
    at = open_page("design", {"steps": "30", "sweep_dm": "2, 4, 8"})
    assert "queue_search" in {b.key for b in at.button}
    at.button(key="queue_search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (defn,) = load_all(elmlab_home)
    assert defn.arms == (2, 4, 8) and defn.budgets == (60_000.0,) and defn.total_steps == 30
    runs = store.runs(sweep_id=defn.search_id)
    assert sorted(runs["d_m"].to_list()) == [2, 4, 8] and set(runs["status"].to_list()) == {"queued"}
    assert any(defn.search_id in s.value for s in at.success)


def test_search_page_empty(store: Store):
    at = open_page("search")
    assert any("No search yet" in i.value for i in at.info)


def _curve(level: float, upto: int, seed: int) -> list[CurvePoint]:
    rng = np.random.default_rng(seed)
    return [CurvePoint(step=s, tokens=s, wall_time_s=s * 0.1,
                       train_loss=level + 1.5 / np.sqrt(s) + 0.003 * rng.standard_normal())
            for s in range(1, upto + 1)]


@pytest.fixture
def search_store(store: Store, elmlab_home):
    from workers.controller import create_search

    defn, ids = create_search("text", [60_000], [2, 4, 8, 16], [0], {"steps": 60})
    levels = {2: 1.9, 4: 1.6, 8: 1.65, 16: 2.4}
    for run_id in ids:
        rec = store.run(run_id)
        level = levels[rec.d_m]
        if rec.d_m == 16:
            update = {"status": "cancelled", "reason": "pruned at step 30: rank 4 of 4 at rung 20",
                      "steps": 30, "curve": _curve(level, 30, rec.d_m), "wall_time_s": 3.0}
        else:
            update = {"status": "done", "steps": 60, "curve": _curve(level, 60, rec.d_m), "wall_time_s": 6.0,
                      "test_metric": level + 1.5 / np.sqrt(60) + 0.2}
        store.put(rec.model_copy(update=update))
    return defn


def test_search_page_shows_rungs_stops_and_the_forming_curve(search_store):
    at = open_page("search")
    assert not at.exception
    rungs, table = (d.value for d in at.dataframe)
    assert set(rungs["rung (step)"]) == {20} and set(rungs["d_m"]) == {2, 4, 8, 16}
    pruned = table[table["status"] == "pruned"]
    assert list(pruned["d_m"]) == [16] and "rank 4 of 4" in pruned["reason"].iloc[0]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {t.get("name") for c in charts for t in c["data"]}
    assert {"finished", "pruned (extrapolated)"} <= names
    hollow = next(t for c in charts for t in c["data"] if t.get("name") == "pruned (extrapolated)")
    assert hollow["marker"]["symbol"] == "x-open" and hollow["error_y"]["array"]
    assert any("refreshes every 5 s" in m.value for m in at.markdown)  # the search is not finished
