"""The O(n log n) Pareto frontier agrees with brute force, ties included."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from elm_core.analysis import load_reference_sweep, pareto_frontier, pareto_mask


def brute_force(cost: np.ndarray, loss: np.ndarray) -> np.ndarray:
    n = cost.size
    out = np.ones(n, dtype=bool)
    for b in range(n):
        for a in range(n):
            if cost[a] <= cost[b] and loss[a] <= loss[b] and (cost[a] < cost[b] or loss[a] < loss[b]):
                out[b] = False
                break
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=0, max_size=40),
    st.booleans(),
)
def test_matches_brute_force_with_ties(points, maximize):
    cost = np.array([p[0] for p in points], dtype=float)
    metric = np.array([p[1] for p in points], dtype=float)
    expected = brute_force(cost, -metric if maximize else metric)
    np.testing.assert_array_equal(pareto_mask(cost, metric, maximize), expected)


def test_matches_brute_force_on_random_floats():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost, metric = rng.lognormal(size=300), rng.normal(size=300)
        np.testing.assert_array_equal(pareto_mask(cost, metric), brute_force(cost, metric))


def test_frame_keeps_dominated_runs_and_flags_the_frontier():
    df = load_reference_sweep().with_columns(pl.Series("status", ["done"] * 13 + ["failed"]))
    res = pareto_frontier(df, x="params")
    assert res.frame.height == 13  # the failed run is out, the dominated ones stay
    assert res.frame["on_frontier"].dtype == pl.Boolean
    front = res.frontier
    assert front["params"].is_sorted()
    assert front["test_metric"].is_sorted(descending=True)  # cheaper runs on the frontier are worse
    assert 1.6502442343573405 in front["test_metric"].to_list()  # the best run is always on it


def test_accuracy_is_maximised_from_metric_name():
    df = pl.DataFrame({"params": [1.0, 2.0, 3.0], "test_metric": [0.5, 0.4, 0.9], "metric_name": ["accuracy"] * 3})
    assert pareto_frontier(df).frame["on_frontier"].to_list() == [True, False, True]
