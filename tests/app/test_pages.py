"""Every page through the app's own navigation (AppTest): no exception, the key widgets and figures
present, the first screen on an empty store, read-only mode without queue controls."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import actions
from elm_core.store import Store

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
PAGES = ("design", "runs", "explore", "sweeps", "scaling", "run", "share")
QUEUE_KEYS = ("queue_run", "queue_sweep", "queue_ladder", "queue_suggested", "cancel", "retry")
FIRST_SCREEN_KEYS = ("import_reference", "first_sweep")


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def keys(at: AppTest, kind: str) -> set[str]:
    return {w.key for w in at.get(kind) if getattr(w, "key", None)}


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_empty_store_shows_a_first_screen_on_every_page(store: Store):
    for page in ("runs", "explore", "scaling", "run", "share"):
        at = open_page(page)
        assert "No runs in the store yet" in " ".join(i.value for i in at.info)
        buttons = keys(at, "button")
        assert {f"{page}_{k}" for k in FIRST_SCREEN_KEYS} <= buttons, buttons
        assert charts(at) == 0  # no blank charts
    at = open_page("design")
    assert {"queue_run", "queue_sweep", "queue_ladder", "design_import_reference"} <= keys(at, "button")
    assert charts(at) == 2  # iso-budget position and parameter breakdown


def test_first_screen_imports_the_published_sweep(store: Store):
    at = open_page("explore")
    at.button(key="explore_import_reference").click().run()
    assert not at.exception
    assert store.runs(source="reference").height == 14
    assert charts(at) == 1


def test_every_page_with_runs(filled_store: Store):
    at = open_page("design")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters (exact)"] == "59,923"
    assert metrics["Predicted test bpc"] != "-"  # the iso-budget fit at 60k exists
    at = open_page("runs")
    assert at.dataframe and {m.label for m in at.metric} >= {"queued", "running", "done", "training workers"}
    at = open_page("explore")
    assert charts(at) == 1 and "Optimum per budget" in [h.value for h in at.subheader]
    assert "95% bootstrap interval" in at.markdown[-1].value or any("95%" in m.value for m in at.markdown)
    at = open_page("scaling")
    assert charts(at) == 3 and "Suggested next runs" in [h.value for h in at.subheader]
    assert "queue_suggested" in keys(at, "button")
    suggested = at.dataframe[-1].value  # the last table on the page
    assert list(suggested) == ["rank", "budget", "d_m", "n_neurons", "k_e", "k_c", "predicted_metric",
                               "sd_reduction_pct", "reason"]  # narrow columns; the kind and x are in the reason
    at = open_page("run", {"runs": ["t60000-8-0", "t60000-4-0"]})
    assert at.multiselect(key="runs_pick").value == ["t60000-8-0", "t60000-4-0"]
    assert charts(at) == 1
    at = open_page("share")
    assert {"download_task_report", "download_data", "download_report"} <= keys(at, "download_button")


def test_explore_views_follow_the_url(filled_store: Store):
    at = open_page("explore", {"view": "Pareto frontier", "cost": "flops_per_step", "logy": "true"})
    assert at.button_group(key="view").value == "pareto"
    assert at.selectbox(key="cost").value == "flops_per_step"
    assert at.toggle(key="logy").value is True
    for view in ("One-axis scaling", "Free axes"):
        at = open_page("explore", {"view": view})
        assert charts(at) == 1


def test_design_explains_an_impossible_budget_inline(store: Store):
    at = open_page("design", {"budget": "1000"})
    assert any("too small" in e.value for e in at.error)
    assert not keys(at, "button") & {"queue_run"}


def test_design_queues_through_the_client(store: Store, monkeypatch: pytest.MonkeyPatch):
    sent = []
    monkeypatch.setattr("workers.submit.submit_many", lambda specs, **kw: sent.extend(specs) or ["r1", "r2"])
    at = open_page("design", {"steps": "5", "seeds": "2"})
    at.button(key="queue_run").click().run()
    assert not at.exception
    assert [s.steps for s in sent] == [5, 5] and [s.seed for s in sent] == [0, 1]
    assert sent[0].budget == 60_000 and sent[0].d_m == 8
    assert any("queued 2 run(s)" in s.value for s in at.success)


def test_broker_down_banner_keeps_runs_browsable(filled_store: Store, monkeypatch: pytest.MonkeyPatch):
    def down(**kw):
        raise ConnectionError("connection refused")

    monkeypatch.setattr("workers.health.health", down)
    at = open_page("runs")
    assert any("broker is unreachable" in e.value for e in at.error)
    assert at.dataframe


def test_read_only_mode_has_no_queue_controls(filled_store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    for page in PAGES:
        at = open_page(page)
        assert not keys(at, "button") & set(QUEUE_KEYS), page
    at = open_page("design")
    assert any("read-only" in i.value for i in at.info)


def test_read_only_empty_store_offers_no_buttons(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    at = open_page("explore")
    assert not keys(at, "button")


def test_read_only_actions_refuse_on_the_server(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    called = []
    monkeypatch.setattr("workers.submit.submit_many", lambda specs, **k: called.append(specs) or ["id"])
    monkeypatch.setattr("workers.submit.cancel_many", lambda *a, **k: called.append(a))
    monkeypatch.setattr("workers.submit.retry", lambda *a, **k: called.append(a))
    spec = {"task": "text", "budget": 60_000, "d_m": 8}
    for action in (lambda: actions.submit([spec]), lambda: actions.cancel(["x"]), lambda: actions.retry(["x"]),
                   actions.queue_first_sweep, lambda: actions.import_reference(store),
                   lambda: actions.load_demo(store)):
        with pytest.raises(actions.ReadOnlyError):
            action()
    assert not called and store.runs().height == 0
    monkeypatch.delenv("ELMLAB_READ_ONLY")
    assert actions.submit([spec]) == ["id"]  # the same call goes through once writable


@pytest.mark.parametrize("task", ["synthetic-adding", "enwik8"])
def test_design_for_other_tasks(store: Store, task: str):
    at = open_page("design", {"task": task})
    assert at.selectbox(key="task").value == task
    assert at.selectbox(key="preset").value == ("adding-small" if task == "synthetic-adding" else "small")
    assert not at.error and charts(at) == 2
    if task == "enwik8":  # no data here: designable, not queueable
        assert any("data for **enwik8** is not here" in w.value for w in at.warning)
        assert "queue_run" not in keys(at, "button")


def test_switching_task_brings_a_budget_that_fits(store: Store):
    at = open_page("design")
    at.selectbox(key="task").set_value("enwik8").run()
    assert not at.exception and not at.error
    assert int(at.text_input(key="budget").value) >= 150_000  # the 204-symbol readout alone needs ~81k
    at.selectbox(key="task").set_value("synthetic-adding").run()
    assert at.selectbox(key="preset").value == "adding-small" and not at.error


def test_design_predicts_from_the_scaling_law_between_budgets(filled_store: Store):
    at = open_page("design", {"budget": "90000"})  # no iso-budget group within 5%
    metric = next(m for m in at.metric if m.label == "Predicted test bpc")
    assert metric.value != "-" and 1.5 < float(metric.value) < 3.0
    assert metric.proto.delta.startswith("scaling-law fit of")
    at = open_page("design", {"budget": "900000"})  # beyond the fitted budgets (30k to 120k)
    metric = next(m for m in at.metric if m.label == "Predicted test bpc")
    assert metric.value != "-" and metric.proto.delta == "extrapolated: the scaling law saw budgets 30k to 120k"


def test_runs_page_shows_live_progress(filled_store: Store, monkeypatch: pytest.MonkeyPatch):
    live = {"live-running": {"step": 5, "total_steps": 20, "loss": None, "tokens_per_s": 812.0, "eta_s": 30.0,
                             "worker": "w1"}}
    monkeypatch.setattr("workers.health.progress", lambda ids, **kw: {i: live.get(i, {}) for i in ids})
    at = open_page("runs")
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].value == 25
    assert "step 5/20 · loss - · 812 tokens/s · ETA 30 s · w1" in bars[0].proto.text


def test_runs_page_links_to_flower_when_it_runs(store: Store, monkeypatch: pytest.MonkeyPatch):
    at = open_page("runs")
    assert not at.get("link_button")
    monkeypatch.setenv("ELMLAB_FLOWER_URL", "http://127.0.0.1:5555")
    at = open_page("runs")
    assert [b.proto.url for b in at.get("link_button")] == ["http://127.0.0.1:5555"]
