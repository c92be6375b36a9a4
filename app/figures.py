"""Plotly figure builders: pure functions, frame (or fit) in, figure out. No Streamlit here; labels and
numbers are written by app.text.

Conventions: every point carries `customdata` whose first entry is its run ids joined by commas (the
Explore page opens them on click); seeds show as error bars (standard deviation over seeds, from the
`<metric>_std` column of a seed-collapsed frame); dominated runs are faded; fitted curves are dashed
with their bootstrap band shaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from app.curves import best_so_far, smooth
from app.fits import NoFit
from app.text import human, label
from elm_core.analysis import CapacityFit, IsoFit, ParetoResult, ScalingFit

PALETTE = qualitative.D3
REFERENCE_STYLE = dict(symbol="diamond-open", size=10, color="#555555", line=dict(width=2))
HOVER_COLUMNS = ("n_neurons", "d_m", "k_e", "k_c", "params", "n_seeds")
MAX_SVG_POINTS = 2000  # above this, WebGL traces


def _layout(fig: go.Figure, title: str, x: str, y: str, log_x: bool, log_y: bool) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left"),
        template="plotly_white",
        margin=dict(l=60, r=20, t=60, b=50),
        legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02),
        hovermode="closest",
        height=480,
    )
    fig.update_xaxes(title_text=x, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=y, type="log" if log_y else "linear")
    if log_x:
        fig.layout.xaxis.update(**log_ticks(_values(fig, "x")))
    if log_y:
        fig.layout.yaxis.update(**log_ticks(_values(fig, "y")))
    return fig


def _values(fig: go.Figure, axis: str, ref: str | None = None) -> list[float]:
    """The finite positive values the figure's traces draw on axis `ref` ("x", "y2", ...; by default
    the primary one) of coordinate `axis` ("x" or "y")."""
    ref = ref or axis
    out: list[float] = []
    for t in fig.data:
        on = getattr(t, f"{axis}axis", None) or axis
        if on != ref or getattr(t, axis, None) is None:
            continue
        out += [float(v) for v in np.ravel(np.asarray(getattr(t, axis), dtype=object))
                if isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > 0]
    return out


def log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick positions and full labels for a log axis: 1, 2, 5 x 10^k inside the values' range
    (20, 50, 100, 200, 500, 1k), only the powers of ten when that would crowd (over 12 ticks); {} for
    no values. Plotly's own log ticks label 2 and 5 as bare digits, which reads as 2 and 5."""
    vals = [v for v in values if v > 0 and np.isfinite(v)]
    if not vals:
        return {}
    lo, hi = min(vals), max(vals)
    e0, e1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    ticks = [m * 10.0**e for e in range(e0, e1 + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    if len(inside) > 12:
        inside = [10.0**e for e in range(e0, e1 + 1)]
    if len(inside) < 2:
        inside = sorted({lo, hi})
    return dict(tickvals=inside, ticktext=[human(t) for t in inside])


def _custom(frame: pl.DataFrame) -> tuple[np.ndarray, str]:
    """customdata per point: its run ids joined by commas, then HOVER_COLUMNS present, then the ids
    shortened for display; and the matching hover lines."""
    if "run_ids" in frame.columns:
        ids = [",".join(map(str, v)) if v is not None else "" for v in frame["run_ids"].to_list()]
    elif "run_id" in frame.columns:
        ids = frame["run_id"].cast(pl.String).fill_null("").to_list()
    else:
        ids = [""] * frame.height
    cols = [c for c in HOVER_COLUMNS if c in frame.columns]
    lines = [f"{c} = %{{customdata[{i + 1}]:,}}" for i, c in enumerate(cols)]
    hover = "<br>".join(lines + [f"runs: %{{customdata[{len(cols) + 1}]}}"]) + f"%{{customdata[{len(cols) + 2}]}}"
    if frame.height == 0:
        return np.empty((0, len(cols) + 3), dtype=object), hover
    short = [s if len(s) <= 60 else s[:57] + "..." for s in ids]
    return np.array([ids, *(frame[c].to_list() for c in cols), short, _notes(frame)], dtype=object).T, hover


def _notes(frame: pl.DataFrame) -> list[str]:
    """The hover note of a point whose runs had not converged (still improving when training ended)."""
    if "unconverged" in frame.columns:
        n_seeds = frame.get_column("n_seeds", default=pl.Series([1] * frame.height)).fill_null(1).to_list()
        return [f"<br><b>not converged</b> ({k} of {n} seed(s) still improving at the end)" if k else ""
                for k, n in zip(frame["unconverged"].fill_null(0).to_list(), n_seeds, strict=True)]
    if "converged" in frame.columns:
        return ["<br><b>not converged</b> (still improving at the end)" if c is False else ""
                for c in frame["converged"].to_list()]
    return [""] * frame.height


def symbols(frame: pl.DataFrame, base: str = "circle") -> list[str]:
    """Per point: hollow (`<base>-open`) where a run had not converged, else `base`."""
    notes = _notes(frame)
    return [f"{base}-open" if n else base for n in notes]


def budget_color(budget: float) -> str:
    """A budget's colour, the same whatever other budgets are drawn: PALETTE[round(3.78 log2 P) mod 10].
    3.78 is chosen so that budget ladders in steps of 1.5 (6 budgets), 2 (8), 3 (5) or 10 (4) get
    distinct colours wherever they start (checked over a grid of starting budgets)."""
    return PALETTE[int(round(3.78 * np.log2(max(float(budget), 1.0)))) % len(PALETTE)]


def _pruned_trace(frame: pl.DataFrame, x: str, y: str, color: str, group: str) -> go.Scatter:
    custom, hover = _custom(frame)
    return go.Scatter(x=frame[x].to_list(), y=frame[y].to_list(), mode="markers", name="pruned by a search",
                      legendgroup=group, marker=dict(color=color, size=7, symbol="x-thin", line=dict(width=1.5,
                      color=color)), opacity=0.35, customdata=custom, showlegend=False,
                      hovertemplate=f"<b>pruned</b> (not a finished run; not fitted)<br>{x} = %{{x}}<br>{y} = "
                      f"%{{y:.4f}}<br>{hover}<extra></extra>")


def baseline_lines(fig: go.Figure, baselines: dict[str, float] | None, y_values: Sequence[float]) -> None:
    """The data set's n-gram baselines (test BPC by order) as horizontal lines named in the legend
    (a label on the chart would sit on the points); orders far outside the runs' range (more than half
    the range beyond it) are named in a note above the chart, not drawn, so the unigram does not
    flatten the curves."""
    ys = [v for v in y_values if v is not None and np.isfinite(v)]
    if not baselines or not ys:
        return
    lo, hi = min(ys), max(ys)
    pad = max(hi - lo, 0.05 * abs(hi)) * 0.5
    off = []
    for order, value in sorted(baselines.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0):
        if lo - pad <= value <= hi + pad:
            fig.add_hline(y=value, line=dict(color="#888888", dash="dashdot", width=1), showlegend=True,
                          name=f"{order}-gram baseline {value:.3f}", legendgroup="baselines")
        else:
            off.append(f"{order}-gram {value:.2f}")
    if off:
        fig.add_annotation(text="n-gram baselines off the chart: " + ", ".join(off), xref="paper", yref="paper",
                           x=1.0, y=1.01, showarrow=False, xanchor="right", yanchor="bottom",
                           font=dict(size=10, color="#666666"))


def _errors(frame: pl.DataFrame, column: str) -> dict[str, Any] | None:
    std = f"{column}_std"
    if std not in frame.columns or frame[std].null_count() == frame.height:
        return None
    return dict(type="data", array=frame[std].fill_null(0.0).to_list(), visible=True, thickness=1.2, width=3)


def _scatter_cls(n: int):
    return go.Scattergl if n > MAX_SVG_POINTS else go.Scatter


def _reference_trace(reference: pl.DataFrame | None, x: str, y: str) -> go.Scatter | None:
    if reference is None or reference.height == 0 or x not in reference.columns or y not in reference.columns:
        return None
    ref = reference.sort(x)
    custom, hover = _custom(ref)
    return go.Scatter(
        x=ref[x].to_list(), y=ref[y].to_list(), mode="markers+lines", name="published enwik8 sweep",
        marker=REFERENCE_STYLE, line=dict(color="#999999", dash="dot", width=1), customdata=custom,
        hovertemplate=f"<b>published sweep</b><br>{x} = %{{x}}<br>{y} = %{{y:.4f}}<br>{hover}<extra></extra>",
    )


# --- Explore ----------------------------------------------------------------------------------------


def iso_figure(
    points: pl.DataFrame,
    fits: Sequence[IsoFit] | NoFit = (),
    *,
    x: str = "d_m",
    metric: str = "test_metric",
    metric_name: str | None = "bpc",
    log_x: bool = True,
    log_y: bool = False,
    budgets: Sequence[float] | None = None,
    reference: pl.DataFrame | None = None,
    show_fit: bool = True,
    pruned: pl.DataFrame | None = None,
    baselines: dict[str, float] | None = None,
) -> go.Figure:
    """U-shaped iso-budget curves: `metric` against the allocation axis `x`, one line per budget
    (column `iso_budget`, coloured by budget_color), seeds as error bars, points whose runs had not
    converged hollow, each fit dashed with its band and its optimum with the bootstrap interval as a
    horizontal bar (no fits drawn for a NoFit); runs a search pruned faded crosses, never fitted; the
    n-gram `baselines` as reference lines."""
    fig = go.Figure()
    fits = () if isinstance(fits, NoFit) else fits
    data = points.filter(pl.col(x).is_not_null() & pl.col(metric).is_not_null()) if points.height else points
    all_budgets = sorted({float(b) for b in data["iso_budget"].drop_nulls().to_list()}) if data.height else []
    if budgets is not None:
        wanted = [float(b) for b in budgets]
        all_budgets = [b for b in all_budgets if any(abs(b - w) <= 1e-6 * w for w in wanted)]
    for budget in all_budgets:
        color = budget_color(budget)
        group = data.filter(pl.col("iso_budget") == budget).sort(x)
        custom, hover = _custom(group)
        fig.add_trace(_scatter_cls(group.height)(
            x=group[x].to_list(), y=group[metric].to_list(), mode="markers+lines", name=f"P ≈ {human(budget)}",
            legendgroup=str(budget), marker=dict(color=color, size=8, symbol=symbols(group),
                                                 line=dict(color=color, width=2)), line=dict(color=color, width=1),
            error_y=_errors(group, metric), customdata=custom,
            hovertemplate=f"<b>P ≈ {human(budget)}</b><br>{x} = %{{x}}<br>{metric} = %{{y:.4f}}<br>{hover}"
            "<extra></extra>",
        ))
        fit = next((f for f in fits if abs(f.budget - budget) <= 1e-6 * budget), None)
        if fit is not None and show_fit:
            _add_fit(fig, fit, color, str(budget), x, metric, (float(group[x].min()), float(group[x].max())))
        stopped = pruned.filter(pl.col("iso_budget") == budget) if pruned is not None and pruned.height else None
        if stopped is not None and stopped.height and x in stopped.columns:
            fig.add_trace(_pruned_trace(stopped, x, metric, color, str(budget)))
    ref = _reference_trace(reference, x, metric)
    if ref is not None:
        fig.add_trace(ref)
    if not fig.data:
        _empty(fig, "No finished runs with this metric yet.")
    baseline_lines(fig, baselines, data[metric].to_list() if data.height else [])
    return _layout(fig, f"Iso-budget curves: {label(metric, metric_name)} against {x}", label(x),
                   label(metric, metric_name), log_x, log_y)


def _add_fit(fig: go.Figure, fit: IsoFit, color: str, group: str, x: str, metric: str,
             span: tuple[float, float] | None = None) -> None:
    """The fit's curve and band, clipped to `span` (the allocations that were run): outside it the
    curve is the fit's guess, and a band that fans out there would dwarf the data."""
    keep = np.ones(fit.curve_x.shape, dtype=bool) if span is None else \
        (fit.curve_x >= span[0] * (1 - 1e-9)) & (fit.curve_x <= span[1] * (1 + 1e-9))
    cx, cy = fit.curve_x[keep].tolist(), fit.curve_y[keep].tolist()
    lo_band, hi_band = fit.curve_lo[keep], fit.curve_hi[keep]
    if cx and np.all(np.isfinite(lo_band)):
        fig.add_trace(go.Scatter(
            x=cx + cx[::-1], y=hi_band.tolist() + lo_band.tolist()[::-1], fill="toself",
            fillcolor=color, opacity=0.12, line=dict(width=0), hoverinfo="skip", showlegend=False,
            legendgroup=group, name="fit band",
        ))
    fig.add_trace(go.Scatter(
        x=cx, y=cy, mode="lines", line=dict(color=color, dash="dash", width=2), legendgroup=group,
        name=f"fit, P ≈ {human(fit.budget)}", hovertemplate=f"fit: {x} = %{{x:.3g}}, {metric} = %{{y:.4f}}"
        "<extra></extra>",
    ))
    lo, hi = fit.ci
    has_ci = np.isfinite(lo) and np.isfinite(hi)
    ci_text = f"[{lo:.3g}, {hi:.3g}] ({fit.ci_level:.0%})" if has_ci else "no interval"
    fig.add_trace(go.Scatter(
        x=[fit.optimum], y=[fit.optimum_metric], mode="markers", legendgroup=group,
        name=f"optimum, P ≈ {human(fit.budget)}", showlegend=False,
        marker=dict(symbol="star", size=16, color=color, line=dict(color="black", width=1)),
        error_x=dict(type="data", symmetric=False, array=[hi - fit.optimum], arrayminus=[fit.optimum - lo],
                     thickness=2, width=6, color=color) if has_ci else None,
        hovertemplate=f"<b>optimum</b> {x} = {fit.optimum:.3g} {ci_text}<br>{metric} = {fit.optimum_metric:.4f}"
        + ("" if fit.bracketed else "<br>no interval: not shown to be bracketed" if fit.bracketed is None
           else f"<br>at the edge: not bracketed; {fit.edge_advice}")
        + "<extra></extra>",
    ))


def pareto_figure(
    result: ParetoResult | NoFit,
    *,
    metric_name: str | None = "bpc",
    log_x: bool = True,
    log_y: bool = False,
    reference: pl.DataFrame | None = None,
) -> go.Figure:
    """The metric against a cost (parameters, FLOPs, time): frontier runs solid and joined by a step
    line, dominated runs faded; for a NoFit, an explanation instead of a blank chart."""
    fig = go.Figure()
    if isinstance(result, NoFit) or result.frame.height == 0:
        _empty(fig, "No finished runs with this metric and cost yet.")
        return _layout(fig, "Pareto frontier", "cost", "metric", log_x, log_y)
    x, metric = result.x, result.metric
    frame = result.frame
    for on, name, style in (
        (False, "dominated", dict(color="#9aa5b1", size=7, opacity=0.3)),
        (True, "on the frontier", dict(color=PALETTE[0], size=10, opacity=1.0, line=dict(color="black", width=1))),
    ):
        part = frame.filter(pl.col("on_frontier") == on)
        if part.height == 0:
            continue
        custom, hover = _custom(part)
        fig.add_trace(_scatter_cls(part.height)(
            x=part[x].to_list(), y=part[metric].to_list(), mode="markers", name=name,
            marker={**style, "symbol": symbols(part)},
            error_y=_errors(part, metric), customdata=custom,
            hovertemplate=f"{x} = %{{x:,}}<br>{metric} = %{{y:.4f}}<br>{hover}<extra>{name}</extra>",
        ))
    front = result.frontier
    fig.add_trace(go.Scatter(
        x=front[x].to_list(), y=front[metric].to_list(), mode="lines", name="frontier",
        line=dict(color=PALETTE[0], shape="hv", width=2), hoverinfo="skip",
    ))
    ref = _reference_trace(reference, x, metric)
    if ref is not None:
        ref.mode = "markers"
        fig.add_trace(ref)
    best = "higher" if result.maximize else "lower"
    return _layout(fig, f"Pareto frontier: {label(metric, metric_name)} ({best} is better) against {label(x)}",
                   label(x), label(metric, metric_name), log_x, log_y)


def axis_figure(
    points: pl.DataFrame,
    *,
    axis: str,
    fixed: Sequence[str],
    metric: str = "test_metric",
    metric_name: str | None = "bpc",
    log_x: bool = True,
    log_y: bool = False,
    max_lines: int = 12,
) -> go.Figure:
    """One-axis scaling (claim 1): the metric along `axis` with the `fixed` columns held constant,
    one line per combination of fixed values that was run at two or more values of `axis`."""
    fig = go.Figure()
    data = points.filter(pl.col(axis).is_not_null() & pl.col(metric).is_not_null()) if points.height else points
    groups: list[tuple[tuple, pl.DataFrame]] = []
    if data.height and all(c in data.columns for c in fixed):
        for key, group in data.group_by(list(fixed), maintain_order=True):
            if group[axis].n_unique() >= 2:
                groups.append((key, group.sort(axis)))
    groups.sort(key=lambda kg: -kg[1].height)
    for i, (key, group) in enumerate(groups[:max_lines]):
        name = ", ".join(f"{c}={human(float(v))}" for c, v in zip(fixed, key, strict=True))
        custom, hover = _custom(group)
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=group[axis].to_list(), y=group[metric].to_list(), mode="markers+lines", name=name,
            marker=dict(color=color, size=8, symbol=symbols(group), line=dict(color=color, width=2)),
            line=dict(color=color), error_y=_errors(group, metric),
            customdata=custom, hovertemplate=f"{axis} = %{{x:,}}<br>{metric} = %{{y:.4f}}<br>{hover}<extra></extra>",
        ))
    if not groups:
        _empty(fig, f"No runs vary {axis} alone with {' and '.join(fixed)} held fixed: queue an axis sweep.")
    return _layout(fig, f"Scaling along {axis} ({', '.join(fixed)} fixed)", label(axis), label(metric, metric_name),
                   log_x, log_y)


def scatter_figure(
    frame: pl.DataFrame,
    *,
    x: str,
    y: str,
    color: str | None = None,
    metric_name: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
) -> go.Figure:
    """Free axes: any numeric column against any other, coloured by a third."""
    fig = go.Figure()
    data = frame.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null()) if frame.height else frame
    if data.height == 0:
        _empty(fig, "Nothing to show for these axes.")
        return _layout(fig, f"{y} against {x}", label(x), label(y, metric_name), log_x, log_y)
    custom, hover = _custom(data)
    marker: dict[str, Any] = dict(size=8, symbol=symbols(data))
    if color and color in data.columns and data[color].dtype.is_numeric():
        marker.update(color=data[color].to_list(), colorscale="Viridis", showscale=True,
                      colorbar=dict(title=color))
    fig.add_trace(_scatter_cls(data.height)(
        x=data[x].to_list(), y=data[y].to_list(), mode="markers", name="runs", marker=marker,
        error_y=_errors(data, y), customdata=custom,
        hovertemplate=f"{x} = %{{x:,}}<br>{y} = %{{y:.4g}}<br>{hover}<extra></extra>",
    ))
    return _layout(fig, f"{label(y, metric_name)} against {label(x)}", label(x), label(y, metric_name), log_x, log_y)


# --- Design -----------------------------------------------------------------------------------------


def allocation_figure(
    curve: pl.DataFrame,
    point: dict[str, float],
    *,
    x: str = "d_m",
    fitted: pl.DataFrame | None = None,
    metric_name: str | None = "bpc",
) -> go.Figure:
    """Where a design sits on its iso-budget curve: N against `x` along the budget, the design starred;
    with a fit, its predicted metric along the curve on the right axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if curve.height:
        fig.add_trace(go.Scatter(
            x=curve[x].to_list(), y=curve["n_neurons"].to_list(), mode="lines", name="iso-budget curve (N)",
            line=dict(color=PALETTE[0], width=2), customdata=np.column_stack([curve["k_e"], curve["params"]]),
            hovertemplate=f"{x} = %{{x}}<br>N = %{{y}}<br>k_e = %{{customdata[0]}}<br>params = %{{customdata[1]:,}}"
            "<extra></extra>",
        ), secondary_y=False)
    fig.add_trace(go.Scatter(
        x=[point[x]], y=[point["n_neurons"]], mode="markers", name="this design",
        marker=dict(symbol="star", size=18, color="#d62728", line=dict(color="black", width=1)),
        hovertemplate=f"this design<br>{x} = %{{x}}<br>N = %{{y}}<extra></extra>",
    ), secondary_y=False)
    if fitted is not None and fitted.height:
        fig.add_trace(go.Scatter(
            x=fitted["x"].to_list(), y=fitted["metric"].to_list(), mode="lines", name="fitted test metric",
            line=dict(color=PALETTE[1], dash="dash"), hovertemplate=f"{x} = %{{x:.3g}}<br>fit = %{{y:.4f}}"
            "<extra></extra>",
        ), secondary_y=True)
    _layout(fig, "Where this design sits on its iso-budget curve", label(x), "N (neurons)", True, True)
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.2, x=0.0))
    fig.update_yaxes(type="linear", secondary_y=True, showgrid=False, tickmode="auto",
                     title_text=label("test_metric", metric_name) if fitted is not None else None)
    return fig


def breakdown_figure(parts: dict[str, int]) -> go.Figure:
    """Where the parameters go: one horizontal bar per part."""
    names = {"synapses": "synapses (k_c)", "mlp": "MLP", "neuron_readout": "memory readout", "readout_layer":
             "readout layer"}
    total = max(1, sum(parts.values()))
    keys = list(parts)
    fig = go.Figure(go.Bar(
        x=[parts[k] for k in keys], y=[names.get(k, k) for k in keys], orientation="h",
        marker_color=PALETTE[: len(keys)], text=[f"{parts[k]:,} ({parts[k] / total:.0%})" for k in keys],
        textposition="auto", hovertemplate="%{y}: %{x:,}<extra></extra>",
    ))
    fig.update_layout(template="plotly_white", height=220, margin=dict(l=10, r=10, t=30, b=30),
                      title=dict(text="Parameter breakdown", x=0.0), yaxis=dict(autorange="reversed"))
    return fig


# --- Run detail -------------------------------------------------------------------------------------


def curves_figure(
    curves: pl.DataFrame,
    *,
    x: str = "step",
    metric_name: str | None = "bpc",
    log_x: bool = False,
    log_y: bool = False,
    smoothing: float = 0.0,
    best: bool = False,
    empty_text: str = "No learning curve recorded yet.",
) -> go.Figure:
    """Learning curves of several runs overlaid (columns label, step, tokens, wall_time_s, train_loss,
    valid_metric): training loss as lines, validation as markers. The record's training loss is a
    cross-entropy in nats; for BPC runs it is drawn in bits (/ ln 2) beside the validation BPC, for
    accuracy runs the validation accuracy gets its own axis on the right. `smoothing` > 0 draws the
    training loss as its bias-corrected moving average (app.curves.smooth) over the raw line, faded;
    `best` adds the best validation so far as a step line (the value early stopping would keep)."""
    accuracy = metric_name == "accuracy"
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if curves.height == 0:
        _empty(fig, empty_text)
    scale = 1.0 if accuracy else 1.0 / np.log(2.0)
    for i, (name, group) in enumerate(curves.group_by("label", maintain_order=True)):
        color = PALETTE[i % len(PALETTE)]
        group = group.sort(x)
        name = str(name[0])
        train = (group["train_loss"] * scale).to_numpy()
        line = dict(x=group[x].to_list(), mode="lines", legendgroup=name)
        if smoothing > 0:
            fig.add_trace(go.Scatter(**line, y=train.tolist(), name=f"{name} train (raw)", opacity=0.3,
                                     line=dict(color=color, width=1), showlegend=False, hoverinfo="skip"),
                          secondary_y=False)
        fig.add_trace(go.Scatter(
            **line, y=smooth(train, smoothing).tolist(), name=f"{name} train", line=dict(color=color),
            hovertemplate=f"{name}<br>{x} = %{{x:,}}<br>train{' (smoothed)' if smoothing > 0 else ''} = "
            "%{y:.4f}<extra></extra>",
        ), secondary_y=False)
        valid = group.filter(pl.col("valid_metric").is_not_null())
        if valid.height:
            fig.add_trace(go.Scatter(
                x=valid[x].to_list(), y=valid["valid_metric"].to_list(), mode="markers+lines",
                name=f"{name} valid", line=dict(color=color, dash="dot"), marker=dict(color=color, size=8),
                legendgroup=name, hovertemplate=f"{name}<br>{x} = %{{x:,}}<br>validation = %{{y:.4f}}<extra></extra>",
            ), secondary_y=accuracy)
        if valid.height and best:
            fig.add_trace(go.Scatter(
                x=valid[x].to_list(), y=best_so_far(valid["valid_metric"].to_numpy(), accuracy).tolist(),
                mode="lines", name=f"{name} best so far", line=dict(color=color, shape="hv", width=3),
                opacity=0.6, legendgroup=name,
                hovertemplate=f"{name}<br>{x} = %{{x:,}}<br>best validation so far = %{{y:.4f}}<extra></extra>",
            ), secondary_y=accuracy)
    titles = {"step": "step", "tokens": "tokens seen", "wall_time_s": "wall time (s)"}
    y_title = "train loss (nats)" if accuracy else "bits per character (train, validation)"
    _layout(fig, "Learning curves", titles.get(x, x), y_title, log_x, log_y)
    fig.update_layout(showlegend=True)
    fig.update_yaxes(title_text="validation accuracy" if accuracy else None, type="linear", secondary_y=True,
                     showgrid=False, visible=accuracy)
    return fig


# --- Scaling laws -----------------------------------------------------------------------------------


def surface_figure(fit: ScalingFit, points: pl.DataFrame, *, metric: str, metric_name: str | None = "bpc",
                   budgets: Sequence[float] = ()) -> go.Figure:
    """The fitted loss surface over (k_e, N) at the runs' k_c as a contour, the runs on top, iso-budget
    lines for `budgets` and the fitted optimum path."""
    fig = go.Figure()
    data = points.filter(pl.col(metric).is_not_null()) if points.height else points
    k_c = fit.k_c if fit.k_c is not None else float(np.median(data["k_c"].to_numpy())) if data.height else 100.0
    ke_lo, ke_hi = (float(data["k_e"].min()), float(data["k_e"].max())) if data.height else (10.0, 1e4)
    n_lo, n_hi = (float(data["n_neurons"].min()), float(data["n_neurons"].max())) if data.height else (10.0, 1e4)
    ke = np.geomspace(max(1.0, ke_lo / 3), ke_hi * 3, 80)
    nn = np.geomspace(max(1.0, n_lo / 3), n_hi * 3, 80)
    z = fit.predict(nn[:, None], ke[None, :], k_c)
    fig.add_trace(go.Contour(
        x=ke, y=nn, z=z, colorscale="Viridis_r" if not fit.maximize else "Viridis", ncontours=24,
        colorbar=dict(title=label(metric, metric_name)), name="fitted surface",
        hovertemplate="k_e = %{x:.3g}<br>N = %{y:.3g}<br>fit = %{z:.4f}<extra>surface</extra>",
        contours=dict(showlabels=True, labelfont=dict(size=9, color="white")),
    ))
    for budget in budgets:
        hidden = budget - fit.overhead
        n_line = hidden / (ke + k_c)
        keep = (n_line >= nn[0]) & (n_line <= nn[-1])
        fig.add_trace(go.Scatter(x=ke[keep], y=n_line[keep], mode="lines", line=dict(color="white", dash="dot"),
                                 name=f"P = {human(budget)}", hoverinfo="skip", showlegend=False))
    if budgets:
        opt = fit.optimal_allocation(np.geomspace(max(min(budgets) / 3, 1.2 * fit.overhead), max(budgets) * 3, 24))
        opt = opt.filter(pl.col("k_e").is_between(ke[0], ke[-1]) & pl.col("n_neurons").is_between(nn[0], nn[-1]))
        fig.add_trace(go.Scatter(x=opt["k_e"].to_list(), y=opt["n_neurons"].to_list(), mode="lines",
                                 line=dict(color="#d62728", width=3), name="fitted optimum path",
                                 hovertemplate="optimum: k_e = %{x:.3g}, N = %{y:.3g}<extra></extra>"))
    if data.height:
        custom, hover = _custom(data)
        fig.add_trace(go.Scatter(
            x=data["k_e"].to_list(), y=data["n_neurons"].to_list(), mode="markers", name="runs",
            marker=dict(color="white", size=9, line=dict(color="black", width=1)), customdata=custom,
            text=[f"{v:.4f}" for v in data[metric].to_list()],
            hovertemplate=f"{metric} = %{{text}}<br>{hover}<extra>run</extra>",
        ))
    _layout(fig, f"Fitted surface L(N, k_e) at k_c = {k_c:.0f}", label("k_e"), label("n_neurons"), True, True)
    fig.update_layout(legend=dict(orientation="h", y=-0.18, x=0.0))
    fig.update_xaxes(range=[np.log10(ke[0]), np.log10(ke[-1])])
    fig.update_yaxes(range=[np.log10(nn[0]), np.log10(nn[-1])])
    return fig


def optimum_figure(series: dict[str, pl.DataFrame], points: dict[str, pl.DataFrame] | None = None) -> go.Figure:
    """Optimal N and k_e against the budget: each model in `series` (columns budget, n_neurons, k_e and
    their *_lo / *_hi) as a line with its band; iso-budget optima from the data in `points` (columns
    budget, value, lo, hi, quantity) as markers with intervals."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("optimal N", "optimal k_e"), horizontal_spacing=0.12)
    for i, (name, frame) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        for col, q in ((1, "n_neurons"), (2, "k_e")):
            if q not in frame.columns or frame.height == 0:
                continue
            b = frame["budget"].to_list()
            lo, hi = frame.get_column(f"{q}_lo", default=None), frame.get_column(f"{q}_hi", default=None)
            if lo is not None and hi is not None and lo.drop_nans().drop_nulls().len():
                fig.add_trace(go.Scatter(x=b + b[::-1], y=hi.to_list() + lo.to_list()[::-1], fill="toself",
                                         fillcolor=color, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                         showlegend=False, legendgroup=name), row=1, col=col)
            fig.add_trace(go.Scatter(x=b, y=frame[q].to_list(), mode="lines", name=name, legendgroup=name,
                                     line=dict(color=color, width=2), showlegend=col == 1,
                                     hovertemplate=f"{name}<br>P = %{{x:.3g}}<br>{q} = %{{y:.3g}}<extra></extra>"),
                          row=1, col=col)
    for q, frame in (points or {}).items():
        if frame is None or frame.height == 0:
            continue
        col = 1 if q == "n_neurons" else 2
        fig.add_trace(go.Scatter(
            x=frame["budget"].to_list(), y=frame["value"].to_list(), mode="markers", name="iso-budget fits (data)",
            legendgroup="data", showlegend=col == 1, marker=dict(symbol="star", size=14, color="black"),
            error_y=dict(type="data", symmetric=False, array=(frame["hi"] - frame["value"]).to_list(),
                         arrayminus=(frame["value"] - frame["lo"]).to_list()),
            hovertemplate=f"data: P = %{{x:.3g}}<br>{q}* = %{{y:.3g}}<extra></extra>",
        ), row=1, col=col)
    fig.update_xaxes(type="log", title_text="budget (parameters)")
    fig.update_yaxes(type="log")
    for n in ("", "2"):
        fig.layout[f"xaxis{n}"].update(**log_ticks(_values(fig, "x", f"x{n}")))
        fig.layout[f"yaxis{n}"].update(**log_ticks(_values(fig, "y", f"y{n}")))
    fig.update_layout(template="plotly_white", height=420, margin=dict(l=60, r=20, t=60, b=50),
                      title=dict(text="Optimal allocation against budget (95% intervals)", x=0.0),
                      legend=dict(orientation="h", y=-0.25, x=0.0))
    return fig


def capacity_figure(fit: CapacityFit, points: pl.DataFrame, *, metric: str, metric_name: str | None = "bpc",
                    max_budgets: int = 6, baselines: dict[str, float] | None = None) -> go.Figure:
    """The capacity model beside the data: per iso-budget group, the runs against k_e and the model's
    predicted U (dashed); the n-gram `baselines` as reference lines."""
    fig = go.Figure()
    data = points.filter(pl.col(metric).is_not_null() & pl.col("iso_budget").is_not_null()) if points.height \
        else points
    budgets = sorted({float(b) for b in data["iso_budget"].to_list()})[-max_budgets:] if data.height else []
    for i, budget in enumerate(budgets):
        color = budget_color(budget)
        group = data.filter(pl.col("iso_budget") == budget).sort("k_e")
        custom, hover = _custom(group)
        fig.add_trace(go.Scatter(
            x=group["k_e"].to_list(), y=group[metric].to_list(), mode="markers", name=f"runs, P ≈ {human(budget)}",
            marker=dict(color=color, size=9, symbol=symbols(group), line=dict(color=color, width=2)),
            error_y=_errors(group, metric), customdata=custom, legendgroup=str(i),
            hovertemplate=f"k_e = %{{x:,}}<br>{metric} = %{{y:.4f}}<br>{hover}<extra></extra>",
        ))
        k_c = float(group["k_c"].median())
        curve = fit.iso_curve(budget, k_c=k_c)
        lo, hi = float(group["k_e"].min()) / 3, float(group["k_e"].max()) * 3
        curve = curve.filter(pl.col("k_e").is_between(lo, hi))
        fig.add_trace(go.Scatter(
            x=curve["k_e"].to_list(), y=curve["metric"].to_list(), mode="lines", name=f"model, P ≈ {human(budget)}",
            line=dict(color=color, dash="dash"), legendgroup=str(i),
            hovertemplate="model: k_e = %{x:.3g}<br>%{y:.4f}<extra></extra>",
        ))
    if not budgets:
        _empty(fig, "No iso-budget groups to compare with.")
    baseline_lines(fig, baselines, data[metric].to_list() if data.height else [])
    return _layout(fig, "Capacity model (dashed) beside the data", label("k_e"), label(metric, metric_name),
                   True, False)


def _empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14))
