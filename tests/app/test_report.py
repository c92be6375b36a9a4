"""The HTML report: self-contained (plotly.js inline once, no network), figures with their data,
tables escaped, settings and provenance."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import polars as pl

from app import report


def test_report_is_self_contained_and_complete():
    figs = [("Iso-budget curves", go.Figure(go.Scatter(x=[1, 2, 3], y=[2.5, 2.1, 2.4], name="P ≈ 60k"))),
            ("Pareto frontier", go.Figure(go.Scatter(x=[10, 20], y=[3.0, 2.0], name="frontier")))]
    table = pl.DataFrame({"run_id": ["a<script>alert(1)</script>", "b"], "test_metric": [2.1, 2.4]})
    html = report.build_report("Explore", figs, [("Runs", table)], {"task": "text", "x": "d_m"},
                               {"page": "explore"}, "http://127.0.0.1:8501/explore?view=Pareto+frontier")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert len(re.findall(r"plotly\.js v\d", html)) == 1  # the library inline, once
    assert "<script src=" not in html and "<link " not in html  # nothing fetched
    assert html.count('class="plotly-graph-div"') == 2
    assert '"P ≈ 60k"' in html or "P \\u2248 60k" in html  # the figure's data travels with it
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    for text in ("Settings of this view", "Provenance", "version: plotly", "view=Pareto+frontier", "d_m"):
        assert text in html


def test_long_tables_are_cut_with_a_note():
    html = report.table_html(pl.DataFrame({"i": list(range(1500))}), max_rows=100)
    assert html.count("<tr>") == 101 and "First 100 of 1,500 rows" in html


def test_long_text_stays_on_one_line_and_wide_tables_scroll():
    reason = "diverged: " + "loss is nan at step 3; " * 40
    html = report.table_html(pl.DataFrame({"run_id": ["a"], "reason": [reason]}))
    assert html.startswith('<div class="table">')  # scrolls inside the page instead of widening it
    cell = re.search(r'<td class="text" title="([^"]*)">', html)
    assert cell and cell.group(1) == reason  # the whole text in the tooltip; the cell is cut by CSS
    assert "white-space: nowrap" in report._CSS and "text-overflow: ellipsis" in report._CSS


def test_live_view_link_is_public_or_absent():
    local = "http://127.0.0.1:8501/explore?view=pareto"
    assert report.public_link(local, None) == ""
    assert report.public_link(local, "https://elmlab.example.org/") == "https://elmlab.example.org/explore?view=pareto"
    assert "Live view" not in report.build_report("Explore", url=report.public_link(local, None))
