"""Pareto frontier of a metric against a cost (parameters, FLOPs per step, wall time, ...).

With cost c (always minimised) and loss l (the metric, negated when it is maximised), run a
dominates run b when  c_a <= c_b and l_a <= l_b, with at least one strict. A run is on the
frontier when nothing dominates it, which after sorting by cost is

    on_frontier(b) = [ l_b == min{l_a : c_a == c_b} ]  and  [ l_b < min{l_a : c_a < c_b} ]

so one sort and one running minimum give the frontier in O(n log n). Identical runs do not dominate
each other: both stay on the frontier. Dominated runs are kept (on_frontier = False) for plotting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from elm_core.analysis.frame import done_runs, resolve_maximize


@dataclass(frozen=True, eq=False)
class ParetoResult:
    """`frame`: every usable run in input order with an `on_frontier` column;
    `frontier`: the frontier runs sorted by cost."""

    x: str
    metric: str
    maximize: bool
    frame: pl.DataFrame

    @property
    def frontier(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("on_frontier")).sort(self.x)

    @property
    def n_frontier(self) -> int:
        return int(self.frame["on_frontier"].sum())


def pareto_mask(cost: np.ndarray, metric: np.ndarray, maximize: bool = False) -> np.ndarray:
    """Boolean mask of non-dominated points (module docstring); O(n log n)."""
    cost = np.asarray(cost, dtype=float)
    loss = -np.asarray(metric, dtype=float) if maximize else np.asarray(metric, dtype=float)
    n = cost.size
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((loss, cost))  # by cost, then loss
    c, l = cost[order], loss[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])  # first index of each equal-cost group
    group_min = l[starts]  # sorted by loss within a group, so the first is the group's minimum
    best_before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
    on_sorted = (l == group_min[group]) & (group_min[group] < best_before[group])
    mask = np.empty(n, dtype=bool)
    mask[order] = on_sorted
    return mask


def pareto_frontier(
    df: pl.DataFrame,
    x: str = "params",
    metric: str = "test_metric",
    maximize: bool | None = None,
) -> ParetoResult:
    """Frontier of `metric` against the cost column `x` over the done runs with both values.

    `maximize` defaults from metric_name ('accuracy' up, 'bpc' down). Works on raw or seed-collapsed
    frames (a collapsed row is one point at its mean).
    """
    maximize = resolve_maximize(df, metric, maximize)
    runs = done_runs(df, metric, [x])
    mask = pareto_mask(runs[x].cast(pl.Float64).to_numpy(), runs[metric].cast(pl.Float64).to_numpy(), maximize)
    return ParetoResult(x=x, metric=metric, maximize=maximize, frame=runs.with_columns(on_frontier=pl.Series(mask)))
