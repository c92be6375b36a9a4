"""Learning curves as frames, stored or live, and the two transforms the curve charts draw (no
Streamlit here).

A stored run carries its curve in its record (`RunRecord.curve`); a run that trains now has none in
the store yet (its record is written when it starts and when it ends), so its curve comes from the
progress channel: the worker's PROGRESS state holds its recent points (`workers.tasks.thin_curve`).
Both become the same frame: label, step, tokens, wall_time_s, train_loss (nats), valid_metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import polars as pl

from elm_core.records import RunRecord

SCHEMA = {"label": pl.String, "step": pl.Int64, "tokens": pl.Int64, "wall_time_s": pl.Float64,
          "train_loss": pl.Float64, "valid_metric": pl.Float64}
FIELDS = tuple(c for c in SCHEMA if c != "label")


def run_label(record: RunRecord) -> str:
    return f"{record.run_id} (d_m={record.d_m}, N={record.n_neurons})"


def curve_frame(records: Iterable[RunRecord], live: dict[str, dict[str, Any]] | None = None) -> pl.DataFrame:
    """The curves of `records`; a run with live progress in `live` (run id -> progress payload) is
    drawn from its live points instead, when it has more of them than its record."""
    live = live or {}
    rows = []
    for r in records:
        points = [p.model_dump() for p in r.curve]
        recent = [p for p in (live.get(r.run_id) or {}).get("curve") or [] if isinstance(p, dict)]
        for p in recent if len(recent) > len(points) else points:
            rows.append({"label": run_label(r), **{k: p.get(k) for k in FIELDS}})
    return pl.DataFrame(rows, schema=SCHEMA)


def live_frame(live: dict[str, dict[str, Any]], labels: dict[str, str]) -> pl.DataFrame:
    """The live curves of the runs in `labels` (run id -> legend label) from their progress payloads."""
    rows = [{"label": labels[run_id], **{k: p.get(k) for k in FIELDS}}
            for run_id in labels for p in (live.get(run_id) or {}).get("curve") or [] if isinstance(p, dict)]
    return pl.DataFrame(rows, schema=SCHEMA)


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average with bias correction, as TensorBoard smooths:
    s_t = w s_{t-1} + (1 - w) x_t, divided by (1 - w^t) so that the first points are not pulled to 0.
    weight 0 returns the values; missing values (NaN) are skipped and keep the average."""
    x = np.asarray(values, dtype=float)
    if weight <= 0 or x.size == 0:
        return x
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.empty_like(x)
    acc, n = 0.0, 0
    for i, v in enumerate(x):
        if np.isfinite(v):
            acc = weight * acc + (1 - weight) * v
            n += 1
        out[i] = acc / (1 - weight**n) if n else np.nan
    return out


def best_so_far(values: Sequence[float], maximize: bool) -> np.ndarray:
    """The running best (max for accuracy, min for BPC or loss); NaN until the first finite value."""
    x = np.asarray(values, dtype=float)
    filled = np.where(np.isfinite(x), x, -np.inf if maximize else np.inf)
    best = np.maximum.accumulate(filled) if maximize else np.minimum.accumulate(filled)
    return np.where(np.isfinite(best), best, np.nan)
