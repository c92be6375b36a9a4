"""Inputs and charts that never mislead: refused address parameters are named, typed budgets show the
value used, big requests ask first, ladders follow the budget, suggestions are valid designs, log axes
carry full labels, fit bands stay over the data, read-only pages say only what they do."""

from __future__ import annotations

import json

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from app import data, figures, fits, frames
from elm_core.records import RunRecord
from elm_core.store import Store
from elmlab.cli import main
from tests.app.conftest import synthetic_runs
from tests.app.test_pages import APP, keys, open_page


def home(query: dict) -> AppTest:
    """The default page (Design) opened at an address with `query`, as a browser first loads it."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def notes(at) -> str:
    return " ".join(w.value for w in at.warning)


def test_refused_address_parameters_are_named(filled_store: Store):
    at = home({"budget": "1e12", "task": "bogus"})
    assert "task=bogus" in notes(at)
    assert "Using **1,000,000,000**: 1e12 is above the largest value accepted (1G)" in notes(at)
    at = open_page("explore", {"view": "garbage"})
    assert "view=garbage" in notes(at)
    at = open_page("explore", {"view": "Pareto frontier"})  # a label is a valid value: no note
    assert "Left out" not in notes(at)
    at = open_page("run", {"runs": "doesnotexist"})
    assert "doesnotexist" in notes(at)


def test_design_mode_takes_short_names(store: Store):
    at = home({"mode": "memory"})
    assert at.button_group(key="mode").value == "memory"
    assert "n" in keys(at, "text_input") and "d_m" not in keys(at, "text_input")
    assert "Left out" not in notes(at)


def charts_spec(at, i: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_scaling_budget_box_says_what_it_uses(filled_store: Store):
    at = open_page("scaling", {"predict": "100"})
    assert "Predicting" in notes(at) and "below the smallest budget" in notes(at)
    at = open_page("scaling", {"predict": "1e6x"})
    assert "is not a number of parameters" in notes(at)
    at = open_page("scaling", {"predict": "5e9"})
    assert "Extrapolation" in notes(at) and "30k to 120k" in notes(at)
    at = open_page("scaling", {"predict": "60k"})
    assert "Extrapolation" not in notes(at) and "Predicting" not in notes(at)


def test_scaling_parameter_tables_are_in_engineering_notation(filled_store: Store):
    at = open_page("scaling")
    tables = [d for d in at.dataframe if "parameter" in d.value.columns]
    assert len(tables) == 2  # the scaling law's and the capacity model's
    for table in tables:
        config = json.loads(table.proto.columns)
        assert {c: config[c]["type_config"]["format"] for c in ("value", "ci_low", "ci_high")} == dict.fromkeys(
            ("value", "ci_low", "ci_high"), "engineering")  # 260.675E-3, not 0.26067485505477755


def test_big_requests_ask_first(filled_store: Store):
    at = home({"budget": "100000000"})  # 833 times the largest finished text run
    label = at.checkbox(key="confirm_big").label
    assert label.startswith("I mean it: queue even though") and "100M is 833 times the largest finished run" in label
    assert at.button(key="queue_run").disabled
    at.checkbox(key="confirm_big").check().run()
    assert not at.button(key="queue_run").disabled
    at = home({"budget": "60000"})
    assert not at.get("checkbox") or "confirm_big" not in keys(at, "checkbox")
    assert data.confirmation_reasons(2 * 3600, 1e5, 1e5) == ["it needs about 2.0 h of compute"]


def test_ladder_follows_the_budget_inside_the_box_range(store: Store):
    assert data.ladder_default(60_000) == [15_000, 30_000, 60_000, 120_000, 240_000]
    assert data.ladder_default(2_000) == [1_000, 2_000, 4_000, 8_000]
    assert data.ladder_default(900_000_000) == [225_000_000, 450_000_000, 900_000_000]
    at = open_page("design")
    at.text_input(key="budget").set_value("2000000").run()
    assert at.text_input(key="ladder").value == "500k, 1M, 2M, 4M, 8M"


def test_suggestions_are_valid_designs(filled_store: Store, monkeypatch: pytest.MonkeyPatch):
    raw = pl.DataFrame({"rank": [1, 2, 3], "budget": [20862.5, 60_000.0, 61_234.0], "d_m": [1, 2, 0],
                        "n_neurons": [1, 100, 50]})
    monkeypatch.setattr(fits, "suggest_next_runs", lambda *a, **k: raw)
    out = fits.suggestions(pl.DataFrame(), "test_metric")
    assert out.select("rank", "budget", "d_m").rows() == [(1, 60_000, 2)]  # N = 1 and d_m = 0 are not designs
    monkeypatch.undo()
    real = fits.suggestions(fits.fit_frame(frames.prepare_runs(filled_store.runs()), "test_metric"), "test_metric")
    assert real.height and real["budget"].dtype == pl.Int64 and real["n_neurons"].min() >= 8


def test_log_axes_have_full_labels_and_fit_bands_stay_over_the_data(filled_store: Store):
    points = fits.fit_frame(frames.select(frames.prepare_runs(filled_store.runs()), task="text"), "test_metric")
    fig = figures.iso_figure(points, fits.iso_fits(points, "d_m", "test_metric", n_boot=20), x="d_m")
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "5", "10", "20"]  # d_m 1 to 32
    fits_x = [x for t in fig.data if t.name and t.name.startswith("fit") for x in t.x]
    assert fits_x and min(fits_x) >= 1 and max(fits_x) <= 32
    assert figures.log_ticks([900, 2.5e8])["ticktext"] == ["100", "1k", "10k", "100k", "1M", "10M", "100M", "1G"]


def test_read_only_pages_say_only_what_they_do(filled_store: Store, store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    monkeypatch.setattr("workers.health.health", lambda **kw: {"broker_ok": False, "error": "not writable"})
    at = open_page("runs")
    assert not at.error  # a read-only dashboard has no broker to miss
    assert any("Select rows to open them." in c.value for c in at.caption)


def test_status_names_the_metric_it_shows(filled_store: Store, capsys):
    rec = filled_store.run("t60000-8-0")
    filled_store.put(RunRecord(**{**rec.model_dump(), "run_id": "stopped", "status": "cancelled", "test_metric": None,
                                  "valid_metric": None, "train_metric": 2.5, "source": "elmlab"}))
    assert main(["status", "--all"]) == 0
    line = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("stopped"))
    assert "train bpc 2.5000" in line


def test_an_optimum_not_bracketed_says_which_way_to_extend(store: Store):
    synthetic_runs(store, budgets=(60_000,), d_m_values=(1, 2, 4))  # the optimum lies beyond d_m = 4
    at = open_page("explore", {"x": "d_m"})
    said = " ".join(m.value for m in at.markdown)
    assert "not bracketed; extend the sweep to larger d_m" in said
    table = next(d.value for d in at.dataframe if "extend_toward" in d.value.columns)
    assert table["extend_toward"].to_list() == ["larger"]
    hover = [t["hovertemplate"] for t in charts_spec(at)["data"] if (t.get("name") or "").startswith("optimum")]
    assert hover and "extend the sweep to larger d_m" in hover[0]


def test_an_optimum_without_an_interval_is_not_said_to_be_bracketed(store: Store):
    synthetic_runs(store, budgets=(60_000,), seeds=(0,))  # one seed per allocation: no noise estimate
    at = open_page("explore", {"x": "d_m"})
    said = " ".join(m.value for m in at.markdown)
    assert "no interval (too few runs)" in said and "not shown to be bracketed without an interval" in said
    table = next(d.value for d in at.dataframe if "bracketed" in d.value.columns)
    assert table["bracketed"].isna().all() and table["extend_toward"].isna().all()
    hover = [t["hovertemplate"] for t in charts_spec(at)["data"] if (t.get("name") or "").startswith("optimum")]
    assert hover and "no interval: not shown to be bracketed" in hover[0]


@pytest.mark.parametrize(("key", "typed", "note"), [
    ("budget", "5e9", "Using **1,000,000,000**: 5e9 is above the largest value accepted (1G)"),
    ("budget", "100", "Using **1,000**: 100 is below the smallest value accepted (1k)"),
    ("budget", "1e6", None),
    ("d_m", "0", "Using **1**: 0 is below the smallest value accepted (1)"),
    ("d_m", "1e6", "Using **10,000**: 1e6 is above the largest value accepted (10k)"),
    ("d_m", "eight", "Using **8**: 'eight' is not a whole number"),
    ("d_m", "2.4", "Using **2**: 2.4 is not a whole number"),
    ("d_tree", "16", None),
])
def test_design_boxes_say_which_value_they_use(store: Store, key: str, typed: str, note: str | None):
    at = open_page("design")
    at.text_input(key=key).set_value(typed).run()
    assert at.text_input(key=key).value == typed  # what was typed stays, and the note beside it says what is used
    assert (note in notes(at)) if note else "Using" not in notes(at), notes(at)
    if key == "budget":  # the slider follows the value used
        slider = {"5e9": 800_000_000, "100": 1_000, "1e6": 1_000_000}[typed]  # the largest step is 800M
        assert at.select_slider(key="budget_slider").value == slider
    if typed == "0":  # the design is the one of the value used
        assert next(m.value for m in at.metric if m.label == "d_m") == note.split("**")[1].replace(",", "")
