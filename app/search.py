"""The multi-fidelity search in the dashboard: queue one (Design page), and what a search is doing
(Search page): its rungs, where each allocation is, what was stopped and why, compute used and
left, and its iso-budget curve as it forms (finished runs solid; running and pruned ones hollow at
their extrapolated value with its interval; the optimum with its interval)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import polars as pl

from app.actions import mutating
from elm_core.search.live import SearchDef, build_state, load_all
from elm_core.search.policy import ACTIVE, PRUNED, arm_values
from elm_core.settings import get_settings
from elm_core.store import Store

SEARCH_PAGE = "views/search.py"


@mutating
def start_search(task: str, budget: int, d_m_values: Sequence[int], seeds: Sequence[int],
                 fields: dict[str, Any], compute_limit: float | None = None) -> tuple[str, list[str]]:
    """Queue a search at one budget (workers.controller.create_search); (search id, queued run ids)."""
    from workers.controller import create_search

    defn, started = create_search(task, [budget], d_m_values, seeds, fields, compute_limit=compute_limit)
    return defn.search_id, started


def searches() -> list[SearchDef]:
    """Every search of this ELM Lab, newest first."""
    return list(reversed(load_all(get_settings().home)))


def search_runs(defn: SearchDef) -> pl.DataFrame:
    return Store(get_settings().store_path).runs(sweep_id=defn.search_id, with_curve=True)


def _live(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    active = [r["run_id"] for r in rows if r["status"] in ACTIVE]
    if not active:
        return {}
    try:
        from workers.health import progress

        return progress(active, with_curve=True)
    except Exception:  # no queue here: the stored records alone
        return {}


def summary(defn: SearchDef, runs: pl.DataFrame) -> dict[str, Any]:
    """Per budget: the rungs, per allocation its runs (seed, status, step, reason) and its value at
    the highest rung reached, and the compute used (CPU-hours recorded or elapsed) against the limit."""
    rows = runs.to_dicts()
    live = _live(rows)
    state = build_state(defn, rows, live)
    groups = []
    for g in state.groups:
        table = []
        for r in sorted(g.runs, key=lambda r: (r.arm, r.seed)):
            where = "pruned" if r.pruned else r.status
            table.append({"d_m": int(r.arm), "seed": r.seed, "status": where, "step": r.step,
                          "of": g.total_steps, "reason": r.reason if r.pruned else None, "run_id": r.run_id})
        rungs = {}
        for rung in g.rungs:
            values = arm_values(g, rung, defn.eta)
            rungs[rung] = {int(a): v for a, v in sorted(values.items())}
        used = sum(r.wall_time_s for r in g.runs) / 3600.0
        groups.append({"budget": g.budget, "rungs": rungs, "runs": table, "signal": g.signal, "used_h": used,
                       "limit_h": defn.compute_limit,
                       "stopped": [t for t in table if t["status"] == "pruned"]})
    return {"groups": groups, "finished": defn.finished_at is not None,
            "live": {k: v.get("curve") for k, v in live.items() if v}}


def iso_points(runs: pl.DataFrame, live: dict[str, Any], metric: str = "test_metric") -> tuple[pl.DataFrame, Any]:
    """(the points: d_m, value, lo, hi, kind = done | running | pruned; the iso fit on them or None)."""
    from elm_core.analysis import fit_iso, normalize_frame
    from elm_core.search.partial import extrapolate_runs

    if runs.height == 0:
        return pl.DataFrame(schema={"d_m": pl.Int64, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64,
                                    "kind": pl.String}), None
    frame = normalize_frame(runs)
    done = frame.filter(pl.col("status") == "done")
    points = [{"d_m": int(r["d_m"]), "value": r[metric], "lo": None, "hi": None, "kind": "done"}
              for r in done.iter_rows(named=True) if r[metric] is not None]
    fit = None
    if done.height:
        out, notes = extrapolate_runs(frame, metric, live=live)
        d_m = {r["run_id"]: int(r["d_m"]) for r in frame.iter_rows(named=True)}
        points += [{"d_m": d_m[n.run_id], "value": n.value, "lo": n.ci[0], "hi": n.ci[1], "kind": n.status}
                   for n in notes if n.value is not None]
        if out["d_m"].n_unique() >= 3:
            try:
                fit = fit_iso(out.drop("status"), "d_m", metric, n_boot=100)
            except ValueError:
                fit = None
    return pl.DataFrame(points, schema={"d_m": pl.Int64, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64,
                                        "kind": pl.String}), fit


def iso_figure(points: pl.DataFrame, fit: Any, metric_name: str = "bpc") -> go.Figure:
    """Finished points solid; running and pruned ones hollow with their intervals; the optimum and its interval."""
    fig = go.Figure()
    style = {"done": ("circle", "finished"), "running": ("circle-open", "running (extrapolated)"),
             "pruned": ("x-open", "pruned (extrapolated)")}
    for kind, (symbol, name) in style.items():
        part = points.filter(pl.col("kind") == kind)
        if part.height == 0:
            continue
        err = None
        if kind != "done":
            err = dict(type="data", symmetric=False, array=(part["hi"] - part["value"]).to_list(),
                       arrayminus=(part["value"] - part["lo"]).to_list())
        fig.add_trace(go.Scatter(x=part["d_m"].to_list(), y=part["value"].to_list(), mode="markers", name=name,
                                 marker=dict(symbol=symbol, size=11), error_y=err))
    if fit is not None and getattr(fit, "optimum", None) is not None and math.isfinite(fit.optimum):
        if getattr(fit, "curve_x", None) is not None and len(fit.curve_x):
            fig.add_trace(go.Scatter(x=list(fit.curve_x), y=list(fit.curve_y), mode="lines", name="iso fit"))
        lo, hi = fit.ci
        fig.add_vline(x=fit.optimum, line_dash="dash", annotation_text=f"optimum d_m {fit.optimum:.3g}")
        if math.isfinite(lo) and math.isfinite(hi):
            fig.add_vrect(x0=lo, x1=hi, opacity=0.12, line_width=0, fillcolor="green")
    fig.update_layout(xaxis_title="d_m (memory units per neuron)", yaxis_title=f"test {metric_name}",
                      xaxis_type="log", height=420, margin=dict(t=30))
    return fig


def pruned_reason(reason: str | None) -> str:
    return (reason or "")[len(PRUNED) + 1:] if (reason or "").startswith(PRUNED) else (reason or "")
