"""Run frames for analysis: the published sweep, normalisation, per-neuron counts, metric direction."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from elm_core.analysis import (
    d_m_for_k_e,
    done_runs,
    load_reference_sweep,
    neuron_counts,
    neurons_for_budget,
    normalize_frame,
    readout_params,
    resolve_maximize,
)


def test_reference_sweep_loads_with_canonical_columns():
    df = load_reference_sweep()
    assert df.height == 14
    for col in ("n_neurons", "d_m", "k_e", "k_c", "k_e_frac", "params", "metric_name", "status", "run_id"):
        assert col in df.columns
    assert set(df["metric_name"]) == {"bpc"}
    assert set(df["k_c"]) == {750}


def test_counts_reproduce_every_published_parameter_count():
    df = load_reference_sweep()
    k_e, k_c = neuron_counts(*(df[c].to_numpy() for c in ("d_m", "l_mlp", "d_mlp", "d_tree", "d_brch")))
    total = df["n_neurons"].to_numpy() * (k_e + k_c) + readout_params(204, 50, 15, 3)
    np.testing.assert_array_equal(total, df["params"].to_numpy())


def test_science_md_example_neuron():
    # docs/science.md: d_m 15, d_tree 50, d_brch 15, N 1024, N_out 204 -> P = 3,516,748
    k_e, k_c = neuron_counts(15, 1, 30, 50, 15)
    assert 1024 * (k_e + k_c) + readout_params(204, 50, 15) == 3_516_748


def test_linear_neuron_count():
    k_e, k_c = neuron_counts(4, 0, 8, 10, 3)
    assert k_c == 30
    assert k_e == 4 * (10 + 4 + 1) + 4 + 1


def test_normalize_fills_missing_and_keeps_given_values():
    raw = pl.DataFrame(
        {
            "N_rec": [10, 20],
            "d_m": [5, 6],
            "l_mlp": [1, 1],
            "d_tree": [4, 4],
            "d_brch": [2, 2],
            "k_e": [None, 999],
            "task": ["shd_adding", "shd_adding"],
        }
    )
    df = normalize_frame(raw)
    assert df["n_neurons"].to_list() == [10, 20]
    assert df["d_mlp"].to_list() == [10, 12]
    assert df["k_e"][1] == 999  # given value kept
    assert df["k_e"][0] == int(neuron_counts(5, 1, 10, 4, 2)[0])
    assert df["metric_name"].to_list() == ["accuracy", "accuracy"]


def test_done_runs_drops_unfinished_and_missing():
    df = pl.DataFrame({"status": ["done", "failed", "done", "done"], "test_metric": [1.0, 2.0, None, float("nan")]})
    assert done_runs(df, "test_metric").height == 1


def test_metric_direction():
    assert resolve_maximize(pl.DataFrame({"metric_name": ["accuracy"]}), "test_metric") is True
    assert resolve_maximize(pl.DataFrame({"metric_name": ["bpc"]}), "test_metric") is False
    assert resolve_maximize(pl.DataFrame({"metric_name": ["bpc"]}), "test_metric", True) is True
    assert resolve_maximize(pl.DataFrame({"a": [1]}), "val_accuracy") is True
    with pytest.raises(ValueError, match="mix"):
        resolve_maximize(pl.DataFrame({"metric_name": ["bpc", "accuracy"]}), "test_metric")


def test_neurons_for_budget_spends_the_budget():
    n, k_e, k_c = neurons_for_budget(3_516_748, np.array([15.0]), n_out=204)
    assert n[0] == 1024 and k_c[0] == 750


def test_d_m_for_k_e_inverts_the_neuron_count():
    for l_mlp in (0, 1, 2):
        d_m = np.array([3.0, 15.0, 70.0])
        k_e, _ = neuron_counts(d_m, l_mlp, 2 * d_m, 50, 15)
        np.testing.assert_allclose(d_m_for_k_e(k_e, l_mlp=l_mlp), d_m)


def test_on_curve_leaves_out_tiny_networks_and_unspent_budgets():
    from elm_core.analysis.frame import on_curve

    df = pl.DataFrame({"n_neurons": [1, 8, 50, 50], "params": [42_000, 49_000, 47_000, 48_000],
                       "budget": [50_000, 50_000, 50_000, None]})
    kept, dropped = on_curve(df)
    assert dropped == 2  # N = 1, and 47k of 50k (94%)
    assert kept["n_neurons"].to_list() == [8, 50] and kept["budget"].to_list() == [50_000, None]
