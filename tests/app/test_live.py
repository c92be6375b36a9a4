"""Runs that train now: their curves from the progress channel on the Runs page and in Run detail,
smoothing and the best validation so far, and the Runs page's counts and blanks."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from app import curves, figures
from elm_core.settings import get_settings as state_settings
from elm_core.store import Store
from tests.app.test_pages import open_page
from tests.workers.conftest import tiny
from workers import submit
from workers.celery_app import app_for
from workers.tasks import Heartbeat

CURVE = [{"step": s, "tokens": 40 * s, "wall_time_s": s / 10, "train_loss": 3.0 - s / 100,
          "valid_metric": 4.0 - s / 50 if s % 40 == 0 else None} for s in range(10, 130, 10)]
LIVE = {"live-running": {"step": 120, "total_steps": 400, "loss": 1.8, "tokens_per_s": 812.0, "eta_s": 30.0,
                         "worker": "w1", "curve": CURVE}}


@pytest.fixture
def training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.health.progress", lambda ids, **kw: {i: LIVE.get(i, {}) for i in ids})
    monkeypatch.setattr("workers.health.health", lambda **kw: {
        "broker_ok": True, "mode": "distributed", "workers": ["recorder@h", "train@h"], "recorder": True,
        "queues": {"train": 2, "gpu": 0, "results": 5}})


def traces(at, key: str) -> list[dict]:
    chart = next(c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id)
    return json.loads(chart.proto.spec)["data"]


def test_runs_page_draws_running_runs_live(filled_store: Store, training):
    at = open_page("runs")
    data = traces(at, "live_curves")
    train = next(t for t in data if t["name"].endswith(" train"))
    assert train["x"] == [p["step"] for p in CURVE]  # the worker's recent points, not the (empty) record
    assert any(t["name"].endswith("best so far") for t in data)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["training workers"] == "1"  # the recorder is not a training worker
    assert metrics["runs waiting in broker"] == "2"  # train + gpu queues; the results queue is the recorder's
    assert "step 120/400 · loss 1.800 · 812 tokens/s · ETA 30 s · w1" in at.get("progress")[0].proto.text


def test_run_detail_follows_a_running_run(filled_store: Store, training):
    at = open_page("run", {"runs": "live-running"})
    data = traces(at, "run_curves")
    assert [p["step"] for p in CURVE] == next(t for t in data if t["name"].endswith(" train"))["x"]
    assert any("step 120/400" in c.value for c in at.caption)
    at = open_page("run", {"runs": "doesnotexist"})
    assert any("doesnotexist" in w.value for w in at.warning)


def test_smoothing_and_best_so_far():
    x = [3.0, 1.0, float("nan"), 2.0, 0.5]
    assert np.array_equal(curves.smooth(x, 0.0), np.asarray(x), equal_nan=True)
    s = curves.smooth(x, 0.5)
    assert s[0] == 3.0  # bias-corrected: the first point is itself, not pulled towards 0
    assert math.isclose(s[1], (0.25 * 3 + 0.5 * 1) / 0.75) and s[2] == s[1]  # NaN keeps the average
    assert curves.best_so_far([4, 5, 3, 3.5], maximize=False).tolist() == [4, 4, 3, 3]
    assert curves.best_so_far([0.1, 0.3, 0.2], maximize=True).tolist() == [0.1, 0.3, 0.3]
    with pytest.raises(ValueError):
        curves.smooth(x, 1.0)


def test_curves_figure_draws_smoothed_over_raw():
    noisy = [{**p, "train_loss": p["train_loss"] + (0.3 if i % 2 else -0.3)} for i, p in enumerate(CURVE)]
    frame = curves.live_frame({"a": {"curve": noisy}}, {"a": "r"})
    fig = figures.curves_figure(frame, smoothing=0.8, best=True)
    names = [t.name for t in fig.data]
    assert names == ["r train (raw)", "r train", "r valid", "r best so far"]
    raw, smoothed = fig.data[0].y, fig.data[1].y
    assert np.abs(np.diff(smoothed)).max() < np.abs(np.diff(raw)).min() and smoothed[0] == raw[0]


def test_runs_page_counts_agree_after_a_cancel(store: Store):
    """Two runs queued on the embedded broker (no worker), one cancelled: its message stays in the
    broker until a worker drops it, and the page says so apart from the run that still waits."""
    first, _ = submit.submit_many([tiny(), tiny(seed=1)])
    submit.cancel(first)
    at = open_page("runs")
    metrics = {m.label: m for m in at.metric}
    assert metrics["queued"].value == "1" and metrics["cancelled"].value == "1"
    assert metrics["runs waiting in broker"].value == "1"
    assert metrics["runs waiting in broker"].proto.delta == "+1 cancelled, to be dropped"
    assert "train: 2" in metrics["runs waiting in broker"].help  # the broker's own count stays shown


def _train_lines(at, key: str) -> dict[str, tuple[list, list]]:
    """Each run's training loss in the chart `key` (drawn in bits for a BPC task), by run id:
    (steps, losses in nats)."""
    return {t["name"].split(" ")[0]: (t["x"], [round(y * math.log(2), 9) for y in t["y"]])
            for t in traces(at, key) if t["name"].endswith(" train")}


def test_two_running_runs_each_draw_their_own_growing_live_curve(store: Store):
    """Two runs training at once, their progress written to the result backend by the worker's own
    Heartbeat (what the app reads): the live panel and Run detail draw one curve each, each run's
    own points, and both grow as more progress arrives."""
    ids = submit.submit_many([tiny(), tiny(seed=1)])
    for i, run_id in enumerate(ids):  # what a worker records when it starts a run
        store.put(store.run(run_id).model_copy(update={"status": "running", "worker": f"w{i}@test"}), sync=False)
    backend = app_for(state_settings()).backend
    beats = {run_id: Heartbeat(SimpleNamespace(backend=backend, request=SimpleNamespace(hostname=f"w{i}@test")),
                               run_id, 0, interval=60) for i, run_id in enumerate(ids)}
    level = {ids[0]: 3.0, ids[1]: 5.0}  # each run its own losses, so that a swapped curve shows
    done = dict.fromkeys(ids, 0)

    def train(run_id: str, steps: int) -> None:
        for step in range(done[run_id] + 1, done[run_id] + steps + 1):
            beats[run_id].progress({"step": step, "total_steps": 100, "loss": level[run_id] - step / 100,
                                    "elapsed_s": step / 10, "tokens": 40 * step})
        done[run_id] += steps

    def expected(run_id: str) -> tuple[list, list]:
        steps = list(range(1, done[run_id] + 1))
        return steps, [round(level[run_id] - s / 100, 9) for s in steps]

    train(ids[0], 3)
    train(ids[1], 2)
    at = open_page("runs")
    at.slider(key="live_smooth").set_value(0.0).run()  # the raw points (Run detail draws them unsmoothed)
    assert _train_lines(at, "live_curves") == {r: expected(r) for r in ids}
    bars = {b.proto.text.split(":")[0]: b.value for b in at.get("progress")}
    assert bars == {ids[0]: 3, ids[1]: 2}

    train(ids[0], 4)  # progress arrives for both, at their own pace
    train(ids[1], 1)
    at.run()
    assert not at.exception
    assert _train_lines(at, "live_curves") == {r: expected(r) for r in ids}
    assert [len(expected(r)[0]) for r in ids] == [7, 3]

    at = open_page("run", {"runs": ids})
    assert _train_lines(at, "run_curves") == {r: expected(r) for r in ids}
    train(ids[1], 5)
    at.run()
    assert _train_lines(at, "run_curves") == {r: expected(r) for r in ids}
