"""Convergence diagnostics of one run, computed from its own validation curve.

A run is *converged* when the last `TAIL` (20%) of its training improved the validation metric by
less than a tolerance: 0.02 bits per character for BPC, 0.01 (one point) for accuracy. Improvement
is measured between the validation value at (or just before) the start of the tail and the final
value, so a curve that is still falling when the schedule ends says so:

    improvement = sign * (v(0.8 S) - v(S)),   sign = +1 for BPC (lower is better), -1 for accuracy
    converged   = improvement < tol

`final_slope` is the least-squares slope of the validation metric over the tail's points, per 1,000
steps (negative = BPC still falling). Runs with fewer than two validation points in reach of the tail
get `converged = None`: unknown, never a silent yes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TAIL = 0.2
TOLERANCE = {"bpc": 0.02, "accuracy": 0.01}


@dataclass(frozen=True)
class Convergence:
    converged: bool | None
    tail_improvement: float | None  # in metric units; positive = still improving
    final_slope: float | None  # metric units per 1,000 steps over the tail


def convergence(steps: Sequence[int], values: Sequence[float], total_steps: int, metric: str) -> Convergence:
    """Diagnostics for a validation curve (steps ascending, the last one the run's final evaluation)."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    s, v = s[keep], v[keep]
    if len(s) < 2 or total_steps <= 0:
        return Convergence(None, None, None)
    start = (1.0 - TAIL) * total_steps
    before = np.flatnonzero(s <= start)
    if len(before) == 0:
        return Convergence(None, None, None)  # no validation point before the tail begins
    sign = 1.0 if metric == "bpc" else -1.0
    improvement = float(sign * (v[before[-1]] - v[-1]))
    tail = s >= s[before[-1]]
    slope = float(np.polyfit(s[tail], v[tail], 1)[0] * 1000.0) if tail.sum() >= 2 else None
    return Convergence(improvement < TOLERANCE[metric], improvement, slope)


def budget_used(params: int, budget: int | None) -> float | None:
    """The fraction of the budget the configuration actually spends (N and d_m are whole numbers)."""
    if not budget:
        return None
    return params / budget
