"""Plotly builders for the views a sweep tool has: parallel coordinates, parameter importance and the
best-so-far history (pure: frame in, figure out; no Streamlit here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from app.text import human, label

PARALLEL_COLUMNS = ("n_neurons", "d_m", "k_e", "k_c", "d_tree", "d_brch", "l_mlp", "budget", "lr", "seed")
LOG_COLUMNS = {"n_neurons", "d_m", "k_e", "k_c", "budget", "lr", "params"}
SHORT = {"n_neurons": "N", "budget": "budget", "lr": "learning rate"}


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Ticks at 1, 2, 5 x 10^k inside [lo, hi] (positive), as log10 positions and full labels."""
    ticks = [m * 10.0**e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    if len(ticks) < 2:
        ticks = [lo, hi]
    return [float(np.log10(t)) for t in ticks], [human(t) if t >= 1 else f"{t:g}" for t in ticks]


def parallel_figure(frame: pl.DataFrame, metric: str, metric_name: str | None = "bpc",
                    columns: Sequence[str] = PARALLEL_COLUMNS) -> go.Figure:
    """One line per run across the axes in `columns` that vary, then the metric; coloured by the
    metric. Drag along an axis to brush (keep the lines through a range); several brushes combine.
    Axes spanning a factor of 10 or more are drawn in log10 with ticks labelled in plain values."""
    data = frame.filter(pl.col(metric).is_not_null()) if metric in frame.columns else frame.clear()
    dims = []
    for c in [c for c in columns if c in data.columns] + [metric]:
        values = data[c].cast(pl.Float64)
        if values.null_count() == data.height or (c != metric and values.n_unique() < 2):
            continue
        v = values.fill_null(np.nan).to_numpy()
        lo, hi = np.nanmin(v), np.nanmax(v)
        name = label(metric, metric_name) if c == metric else SHORT.get(c, c)
        if c in LOG_COLUMNS and lo > 0 and hi / lo >= 10:
            tickvals, ticktext = _log_ticks(lo, hi)
            dims.append(dict(label=name, values=np.log10(v), tickvals=tickvals, ticktext=ticktext))
        else:
            dims.append(dict(label=name, values=v))
    fig = go.Figure()
    if data.height and dims:
        y = data[metric].to_numpy()
        fig.add_trace(go.Parcoords(
            dimensions=dims, line=dict(color=y, colorscale="Viridis_r" if metric_name != "accuracy" else "Viridis",
                                       showscale=True, colorbar=dict(title=label(metric, metric_name))),
            labelangle=0, labelside="bottom",
        ))
    else:
        fig.add_annotation(text="No runs with this metric yet.", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False)
    fig.update_layout(template="plotly_white", height=460, margin=dict(l=60, r=40, t=60, b=60),
                      title=dict(text=f"Parallel coordinates of {data.height:,} runs (drag along an axis to brush)",
                                 x=0.0))
    return fig


def importance_figure(table: pl.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of each parameter's variance share (app.importance), largest on top."""
    fig = go.Figure()
    if table.height:
        t = table.sort("importance")
        fig.add_trace(go.Bar(
            x=t["importance"].to_list(), y=[SHORT.get(p, p) for p in t["parameter"].to_list()], orientation="h",
            marker_color="#1f77b4", customdata=np.column_stack([t["eta_sq"], t["groups"], t["runs"]]),
            text=[f"{v:.0%}" for v in t["importance"].to_list()], textposition="auto",
            hovertemplate="%{y}: ω² = %{x:.3f} (η² = %{customdata[0]:.3f}, %{customdata[1]} groups, "
            "%{customdata[2]} runs)<extra></extra>",
        ))
    else:
        fig.add_annotation(text="Too few runs, or no parameter varies.", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False)
    fig.update_layout(template="plotly_white", height=80 + 34 * max(3, table.height),
                      margin=dict(l=110, r=20, t=50, b=40), title=dict(text=title, x=0.0),
                      xaxis=dict(title="share of the metric's variance (ω², main effect)", range=[0, 1],
                                 tickformat=".0%"))
    return fig


def history_figure(history: pl.DataFrame, metric: str, metric_name: str | None = "bpc") -> go.Figure:
    """The best metric so far against runs finished (left) and against the clock (right), each run's
    own value as faint points (columns n, finished, value, best, run_id; see frames.best_history)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against runs finished", "against wall time"),
                        horizontal_spacing=0.08, shared_yaxes=True)
    y_title = label(metric, metric_name)
    if history.height:
        when = history["finished"].to_list()
        for col, x in ((1, history["n"].to_list()), (2, when)):
            fig.add_trace(go.Scatter(x=x, y=history["value"].to_list(), mode="markers", name="each run",
                                     marker=dict(color="#9aa5b1", size=5), opacity=0.5, showlegend=col == 1,
                                     customdata=history["run_id"].to_list(),
                                     hovertemplate="%{customdata}: %{y:.4f}<extra></extra>"), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=history["best"].to_list(), mode="lines", name="best so far",
                                     line=dict(color="#d62728", shape="hv", width=2), showlegend=col == 1,
                                     hovertemplate="best so far: %{y:.4f}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="runs finished", row=1, col=1)
    fig.update_xaxes(title_text="finished at (UTC)", row=1, col=2)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(template="plotly_white", height=400, margin=dict(l=60, r=20, t=60, b=50),
                      title=dict(text=f"Best {y_title} so far", x=0.0), legend=dict(orientation="h", y=-0.22))
    return fig
