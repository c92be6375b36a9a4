"""What to run next: ranked (budget, allocation) points with reasons."""

from __future__ import annotations

import numpy as np
import polars as pl

from elm_core.analysis import load_reference_sweep, neurons_for_budget, suggest_next_runs


def test_published_sweep_suggestions_are_ranked_and_explained():
    out = suggest_next_runs(load_reference_sweep(), n=6)
    assert out.columns[:4] == ["rank", "budget", "kind", "x_name"]
    for col in ("d_m", "n_neurons", "score", "reason"):
        assert col in out.columns
    assert out["rank"].to_list() == list(range(1, out.height + 1))
    assert out["score"].is_sorted(descending=True) and (out["score"] > 0).all()
    assert set(out["kind"]) == {"existing budget", "new budget"}
    assert all(len(r) > 40 for r in out["reason"])
    existing = out.filter(pl.col("kind") == "existing budget")
    assert existing.height >= 1 and existing["d_m"].is_between(5, 100).all()
    # the suggested N spends the budget at that d_m
    row = existing.row(0, named=True)
    n, _, _ = neurons_for_budget(row["budget"], np.array([float(row["d_m"])]), n_out=204)
    assert row["n_neurons"] == int(n[0])


def test_a_gap_around_the_optimum_is_filled_first():
    xs = np.array([4.0, 5.0, 6.0, 8.0, 80.0, 100.0, 120.0])
    b = 0.2 / (2 * 25.0**3)
    rng = np.random.default_rng(0)
    y = 1.5 + 0.2 / xs + b * xs**2 + 0.002 * rng.standard_normal(xs.size)
    df = pl.DataFrame({"d_m": xs, "test_metric": y, "params": np.full(xs.size, 1e6)})
    out = suggest_next_runs(df, n=3)
    assert out["kind"].to_list() == ["existing budget"] * out.height  # no architecture columns: no new budgets
    assert 8 < out["x"][0] < 80
    assert out["n_neurons"][0] is None


def test_no_groups_gives_an_empty_frame_with_the_columns():
    df = pl.DataFrame({"d_m": [5, 10], "test_metric": [1.0, 1.1], "params": [1e6, 1e6]})
    out = suggest_next_runs(df)
    assert out.height == 0 and "reason" in out.columns


def test_new_budgets_can_be_turned_off():
    out = suggest_next_runs(load_reference_sweep(), n=4, new_budgets=False)
    assert set(out["kind"]) == {"existing budget"}
