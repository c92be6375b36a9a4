"""Unfinished runs at their extrapolated metric: pruned and running runs of an iso-budget group.

A fit (`elmlab fit iso`) takes only finished runs (status done, `done_runs`). With extrapolation, a
run that was pruned ("pruned at step k: ...") or is still running enters at

    metric_hat = L_fit(T) + offset,

L_fit the power law L(s) = L_inf + A s^-alpha (`fit_curve`) on its training-loss curve over
[k / eta, k] (the warm-up is no power law), read at the group's final step T (the most steps a
finished run of the group trained), and offset = median over the group's finished runs of
(metric - training loss at T): the fitted curve is a training loss, the metric a held-out one. The
interval is the bootstrap interval of L_fit(T) shifted by the offset. Without a finished run in the
group, or with too few points (`MIN_POINTS`), a run is left out and the reason is said.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from elm_core.analysis.iso import iso_budget_groups
from elm_core.search.extrapolate import fit_curve
from elm_core.search.policy import PRUNED, rung_value


@dataclass(frozen=True)
class Extrapolated:
    run_id: str
    status: str  # "pruned" or "running"
    step: int
    value: float | None
    ci: tuple[float, float] | None
    note: str = ""


def _train_points(curve: Any) -> list[tuple[int, float]]:
    if curve is None:
        return []
    if isinstance(curve, str):
        curve = json.loads(curve) if curve.strip() else []
    out = []
    for p in curve:
        step, loss = (p.get("step"), p.get("train_loss")) if isinstance(p, Mapping) else (p[0], p[1])
        if step is not None and loss is not None and np.isfinite(loss):
            out.append((int(step), float(loss)))
    return sorted(dict(out).items())


def unfinished_kind(status: str, reason: str | None) -> str | None:
    """'pruned', 'running' (queued or running) or None (a run that enters no fit)."""
    if status == "cancelled" and (reason or "").startswith(PRUNED):
        return "pruned"
    return "running" if status == "running" else None


def extrapolate_runs(
    df: pl.DataFrame,
    metric: str,
    *,
    live: Mapping[str, Sequence[Any]] | None = None,
    eta: int = 3,
    seed: int = 0,
) -> tuple[pl.DataFrame, list[Extrapolated]]:
    """(the done runs plus the pruned and running ones at their extrapolated `metric`, with a
    boolean `extrapolated` column; what happened to each unfinished run). `df` needs `curve`;
    `live`: run id -> its live curve ([step, train loss, valid] points) for running runs."""
    df = iso_budget_groups(df)
    done = df.filter((pl.col("status") == "done") & pl.col(metric).is_not_null())
    rows, notes = [done.with_columns(pl.lit(False).alias("extrapolated"))], []
    for row in df.iter_rows(named=True):
        kind = unfinished_kind(row["status"], row.get("reason"))
        if kind is None:
            continue
        points = _train_points(row.get("curve"))
        if kind == "running" and live and live.get(row["run_id"]):
            points = sorted({**dict(points), **dict(_train_points(live[row["run_id"]]))}.items())
        step = points[-1][0] if points else int(row.get("steps") or 0)
        group = done.filter(pl.col("iso_budget") == row["iso_budget"]) if row["iso_budget"] is not None else done[:0]
        if group.height == 0:
            notes.append(Extrapolated(row["run_id"], kind, step, None, None, "no finished run at its budget"))
            continue
        total = int(group["steps"].max())
        offsets = []
        for g in group.iter_rows(named=True):
            end = rung_value(_train_points(g.get("curve")), total, eta)
            if end is not None:
                offsets.append(float(g[metric]) - end[0])
        window = [p for p in points if p[0] >= step / eta]
        fit = fit_curve([p[0] for p in window], [p[1] for p in window], total, seed=seed)
        if not offsets or not fit.ok:
            notes.append(Extrapolated(row["run_id"], kind, step, None, None, fit.note or "no curve to offset by"))
            continue
        offset = float(np.median(offsets))
        value = fit.final + offset
        ci = (fit.final_ci[0] + offset, fit.final_ci[1] + offset)
        notes.append(Extrapolated(row["run_id"], kind, step, value, ci))
        one = pl.DataFrame([row], schema=df.schema, strict=False)
        rows.append(
            one.with_columns(pl.lit(value).cast(df.schema[metric]).alias(metric), pl.lit(True).alias("extrapolated"))
        )
    return pl.concat(rows, how="vertical_relaxed").drop("iso_budget"), notes
