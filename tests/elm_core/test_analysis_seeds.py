"""Seeds collapse to mean, standard deviation and count; fits accept raw or collapsed runs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from elm_core.analysis import (
    collapse_seeds,
    fit_capacity_model,
    fit_iso,
    fit_scaling_law,
    load_reference_sweep,
    pareto_frontier,
    suggest_next_runs,
)


def _seeded(ref: pl.DataFrame, n_seeds: int, noise: float, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_seeds):
        parts.append(
            ref.with_columns(
                pl.lit(s).alias("seed"),
                (pl.col("test_metric") + pl.Series(noise * rng.standard_normal(ref.height))).alias("test_metric"),
                pl.format("{}-s{}", pl.col("run_id"), pl.lit(s)).alias("run_id"),
            )
        )
    return pl.concat(parts)


def test_runs_differing_only_by_seed_collapse():
    df = pl.DataFrame(
        {
            "task": ["t"] * 5,
            "d_m": [1, 1, 1, 2, 2],
            "seed": [0, 1, 2, 0, 1],
            "test_metric": [1.0, 2.0, 3.0, 5.0, 7.0],
            "status": ["done"] * 4 + ["failed"],
        }
    )
    out = collapse_seeds(df).sort("d_m")
    assert out["n_seeds"].to_list() == [3, 1]
    assert out["test_metric"].to_list() == [2.0, 5.0]
    assert out["test_metric_std"][0] == 1.0
    assert out["test_metric_std"][1] is None
    assert out["seeds"][0].to_list() == [0, 1, 2]


def test_training_config_differences_are_not_collapsed():
    cfg = [json.dumps({"lr": lr, "seed": s}) for lr, s in ((1e-3, 0), (1e-3, 1), (5e-4, 0))]
    df = pl.DataFrame({"d_m": [1, 1, 1], "config": cfg, "seed": [0, 1, 0], "test_metric": [1.0, 2.0, 3.0]})
    out = collapse_seeds(df)
    assert sorted(out["n_seeds"].to_list()) == [1, 2]


def test_collapsing_twice_changes_nothing():
    out = collapse_seeds(load_reference_sweep())
    assert collapse_seeds(out) is out


def test_fits_agree_on_raw_and_collapsed_runs():
    raw = _seeded(load_reference_sweep(), 3, 0.003)
    collapsed = collapse_seeds(raw)
    assert collapsed.height == 14 and set(collapsed["n_seeds"]) == {3}
    a, b = fit_iso(raw), fit_iso(collapsed)
    # The same weighted fit, the same noise estimate, the same interval.
    np.testing.assert_allclose(a.curve_y, b.curve_y, rtol=1e-9)
    assert a.sigma_source == b.sigma_source
    np.testing.assert_allclose([a.sigma, a.sigma_dof], [b.sigma, b.sigma_dof], rtol=1e-9)
    np.testing.assert_allclose(a.optimum, b.optimum, rtol=1e-9)
    np.testing.assert_allclose(a.ci, b.ci, rtol=1e-9)
    assert pareto_frontier(collapsed).frame.height == 14


def test_surface_fits_and_suggestions_take_collapsed_runs():
    raw = _seeded(load_reference_sweep(), 2, 0.002)
    collapsed = collapse_seeds(raw)
    a, b = fit_scaling_law(raw, n_boot=20), fit_scaling_law(collapsed, n_boot=20)
    np.testing.assert_allclose(a.optimal_allocation(3.5e6)["k_e"][0], b.optimal_allocation(3.5e6)["k_e"][0], rtol=0.05)
    c, d = fit_capacity_model(raw, n_boot=0), fit_capacity_model(collapsed, n_boot=0)
    assert c.rmse > 0 and d.n_runs == 14
    assert suggest_next_runs(collapsed, n=3, n_boot=50).height == 3
