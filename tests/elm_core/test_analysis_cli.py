"""`elmlab fit`: the fits from the command line, on a CSV of runs or the store."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from elmlab.cli import main


@pytest.fixture
def sweep_csv(reference_data):
    return str(reference_data / "paper_sweeps_enwik8.csv")


def test_iso_json_prints_only_json_with_the_optimum(sweep_csv, capsys):
    rc = main(["fit", "iso", "--input", sweep_csv, "--x", "d_m", "--metric", "test_metric", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["groups"] and len(out["groups"]) == 1
    group = out["groups"][0]
    assert 20 <= group["optimum"] <= 35
    low, high = group["ci"]
    assert low < group["optimum"] < high
    assert group["budget"] == pytest.approx(3.51e6, rel=0.01)


def test_iso_says_when_an_optimum_has_no_interval(reference_data, tmp_path, capsys):
    """The demo's text runs have a seed replicate at the optimum of every budget; without the one at 320k,
    that budget has one run per allocation and four of them, too few to estimate the noise."""
    import polars as pl

    demo = pl.read_parquet(reference_data.parent / "demo_data" / "demo_runs.parquet")
    replicate = (pl.col("budget") == 320_000) & (pl.col("seed") == 1)
    assert demo.filter(replicate & (pl.col("status") == "done")).height == 1
    one_seed = tmp_path / "one-seed-at-320k.parquet"
    demo.filter(~replicate).write_parquet(one_seed)
    args = ["fit", "iso", "--input", str(one_seed), "--task", "text", "--metric", "test_metric", "--n-boot", "50"]
    assert main([*args, "--json"]) == 0
    groups = {g["budget"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    for budget in (40_000, 113_000):
        assert groups[budget]["bracketed"] is True and None not in groups[budget]["ci"]
    g = groups[320_000]
    assert g["bracketed"] is None and g["ci"] == [None, None] and g["interior"] is True
    assert "no interval, so the optimum is not shown to be bracketed" in g["note"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("no interval: not shown to be bracketed") == 1
    assert "text at 320,000: 4 runs at 4 allocations are too few to estimate the noise" in out


def test_the_demo_brackets_the_optimum_at_every_text_budget(reference_data, capsys):
    """With the seed replicates, every text budget of the demo has an interval inside the sampled range."""
    demo = str(reference_data.parent / "demo_data" / "demo_runs.parquet")
    assert main(["fit", "iso", "--input", demo, "--task", "text", "--metric", "test_metric", "--n-boot", "50",
                 "--json"]) == 0
    groups = {g["budget"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert set(groups) == {40_000, 113_000, 320_000}
    for g in groups.values():
        low, high = g["ci"]
        assert g["bracketed"] is True and low < g["optimum"] < high


def test_common_options_before_the_subcommand(sweep_csv, capsys):
    assert main(["fit", "--input", sweep_csv, "--json", "iso", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["groups"][0]["n_boot"] == 50


def test_iso_text_report(sweep_csv, capsys):
    assert main(["fit", "iso", "--input", sweep_csv, "--x", "k_e_frac", "--metric", "test_metric"]) == 0
    out = capsys.readouterr().out
    assert "iso-budget optimum of test_metric (minimised) against k_e_frac" in out
    assert "enwik8" in out


def test_all_fits_in_one_json_document(sweep_csv, capsys):
    assert main(["fit", "--input", sweep_csv, "--json", "--n-boot", "40"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"iso", "pareto", "scaling", "capacity", "suggest"}
    assert out["scaling"]["optimal_allocation"][0]["n_neurons"] > 0
    assert out["capacity"]["params"]["N_0"]["value"] > 0
    assert len(out["suggest"]["suggestions"]) == 5


@pytest.mark.parametrize("sub", ["pareto", "scaling", "capacity", "suggest"])
def test_each_subcommand_reports(sweep_csv, sub, capsys):
    assert main(["fit", sub, "--input", sweep_csv, "--n-boot", "30"]) == 0
    assert capsys.readouterr().out.strip()


def test_scaling_budget_option(sweep_csv, capsys):
    assert main(["fit", "scaling", "--input", sweep_csv, "--budget", "7e6", "--json", "--n-boot", "20"]) == 0
    alloc = json.loads(capsys.readouterr().out)["optimal_allocation"]
    assert [a["budget"] for a in alloc] == [7e6]


def test_user_errors_are_one_line(sweep_csv, capsys, tmp_path):
    assert main(["fit", "iso", "--input", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["fit", "iso", "--input", sweep_csv, "--metric", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["fit", "iso", "--input", sweep_csv, "--x", "nope"]) == 2


def test_without_a_store_module_asks_for_input(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "elm_core.store", None)  # import fails
    assert main(["fit", "iso"]) == 2
    assert "no store available; pass --input FILE" in capsys.readouterr().err


def test_empty_store_is_a_user_error(elmlab_home, capsys):
    assert main(["fit", "iso"]) == 2
    assert "no done runs with a value of test_metric in the store" in capsys.readouterr().err


def test_reads_the_store_without_input(elmlab_home, capsys):
    from elm_core.store import Store

    Store().import_reference_csv()
    assert main(["fit", "iso", "--json", "--n-boot", "50", "--metric", "test_metric"]) == 0
    group = json.loads(capsys.readouterr().out)["groups"][0]
    assert 20 <= group["optimum"] <= 35 and group["n_points"] == 14


def test_fits_default_to_the_validation_metric_and_report_test_there(sweep_csv, capsys):
    assert main(["fit", "iso", "--input", sweep_csv]) == 0
    out = capsys.readouterr().out
    assert "iso-budget optimum of valid_metric" in out and "test there" in out
    assert main(["fit", "scaling", "--input", sweep_csv, "--json", "--n-boot", "20"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["metric"] == "valid_metric"
    assert all(1.5 < r["test_metric"] < 1.8 for r in fit["optimal_allocation"])


def test_fit_leaves_off_curve_runs_out_unless_asked(tmp_path, capsys):
    import polars as pl

    from elmlab.cli import main

    # An iso-budget sweep at 50k (a U in d_m, two seeds) plus two designs that do not belong on it:
    # d_m 64 buys one neuron, and d_m 32 spends only 84% of the budget.
    rows = [dict(task="text", status="done", budget=50_000.0, params=49_800, d_m=d_m, n_neurons=n, seed=seed,
                 test_metric=2.3 + 0.05 * (np.log2(d_m) - 2.0) ** 2 + 0.002 * seed)
            for d_m, n in ((1, 90), (2, 70), (4, 45), (8, 25), (16, 12)) for seed in (0, 1)]
    rows += [dict(rows[0], d_m=64, n_neurons=1, params=42_000, test_metric=3.4),
             dict(rows[0], d_m=32, n_neurons=8, params=42_100, test_metric=2.9)]
    path = tmp_path / "runs.csv"
    pl.DataFrame(rows).write_csv(path)
    assert main(["fit", "iso", "--input", str(path), "--metric", "test_metric", "--json"]) == 0
    kept = json.loads(capsys.readouterr().out)["groups"][0]
    assert main(["fit", "iso", "--input", str(path), "--metric", "test_metric", "--json", "--keep-off-curve"]) == 0
    everything = json.loads(capsys.readouterr().out)["groups"][0]
    assert (kept["n_points"], everything["n_points"]) == (10, 12)
    assert 2.5 < kept["optimum"] < 6.5  # the planted U's bottom is at d_m 4


def test_runs_of_a_bpc_task_and_an_accuracy_task_are_fitted_each_in_its_direction(tmp_path, capsys):
    import polars as pl

    rows = [dict(task="text", metric_name="bpc", status="done", budget=50_000.0, params=49_800, d_m=d_m, n_neurons=n,
                 seed=seed, test_metric=2.3 + 0.05 * (np.log2(d_m) - 2.0) ** 2 + 0.002 * seed)
            for d_m, n in ((1, 90), (2, 70), (4, 45), (8, 25), (16, 12)) for seed in (0, 1)]
    rows += [dict(task="synthetic-adding", metric_name="accuracy", status="done", budget=30_000.0, params=29_800,
                  d_m=d_m, n_neurons=n, seed=seed, test_metric=0.9 - 0.04 * (np.log2(d_m) - 3.0) ** 2 + 0.003 * seed)
             for d_m, n in ((2, 220), (4, 124), (8, 54), (16, 18), (24, 10)) for seed in (0, 1)]
    path = tmp_path / "runs.csv"
    pl.DataFrame(rows).write_csv(path)
    assert main(["fit", "iso", "--input", str(path), "--metric", "test_metric", "--json"]) == 0
    groups = {g["task"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert not groups["text"]["maximize"] and groups["synthetic-adding"]["maximize"]
    assert 2.5 < groups["text"]["optimum"] < 6.5 and 5.0 < groups["synthetic-adding"]["optimum"] < 12.0
    assert main(["fit", "iso", "--input", str(path), "--metric", "test_metric"]) == 0
    assert "per task: accuracy maximised, BPC minimised" in capsys.readouterr().out
