"""Pruned and running runs in the iso fit: never as finished points, unless extrapolation is asked for."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from elm_core.analysis import fit_iso_budgets
from elm_core.search.partial import extrapolate_runs
from elmlab.cli import main

TOTAL = 300


def _loss(level: float, s: np.ndarray) -> np.ndarray:
    return level + 1.5 * s**-0.5


def _row(run_id: str, d_m: int, status: str, upto: int, level: float, reason: str | None = None,
         seed: int = 0) -> dict:
    s = np.arange(3, upto + 1, 3)
    noisy = _loss(level, s) + 0.003 * np.random.default_rng(d_m + 7 * seed).standard_normal(s.size)
    curve = [{"step": int(a), "train_loss": float(v), "valid_metric": None} for a, v in zip(s, noisy, strict=True)]
    done = status == "done"
    return {"run_id": run_id, "task": "text", "status": status, "reason": reason, "budget": 50_000,
            "params": 49_900, "d_m": d_m, "seed": seed, "steps": upto, "metric_name": "bpc",
            "test_metric": float(_loss(level, np.array([TOTAL]))[0] + 0.3) if done else None,
            "curve": json.dumps(curve)}


def _frame() -> pl.DataFrame:
    levels = {2: 2.0, 4: 1.7, 8: 1.6, 16: 1.75, 32: 2.1}
    rows = [_row(f"d{d}", d, "done", TOTAL, lv) for d, lv in levels.items() if d != 32]
    rows.append(_row("d32", 32, "cancelled", 120, levels[32], reason="pruned at step 120: rank 5 of 5"))
    rows.append(_row("d8s1", 8, "running", 150, 1.62, seed=1))
    rows.append(_row("user", 16, "cancelled", 60, 1.0, reason="cancelled by user", seed=1))
    return pl.DataFrame(rows)


def test_fits_take_only_done_runs():
    fits = fit_iso_budgets(_frame(), "d_m", "test_metric", n_boot=50)
    assert len(fits) == 1 and fits[0].n_points == 4  # the pruned, running and cancelled runs are not points


def test_extrapolation_puts_pruned_and_running_runs_near_where_they_would_end():
    out, notes = extrapolate_runs(_frame(), "test_metric")
    by_id = {n.run_id: n for n in notes}
    assert set(by_id) == {"d32", "d8s1"}  # a run cancelled by the user enters nothing
    assert by_id["d32"].status == "pruned" and by_id["d32"].step == 120
    truth = float(_loss(2.1, np.array([TOTAL]))[0] + 0.3)
    assert abs(by_id["d32"].value - truth) < 0.05
    assert by_id["d32"].ci[0] <= by_id["d32"].value <= by_id["d32"].ci[1]
    marked = out.filter(pl.col("extrapolated"))["run_id"].sort().to_list()
    assert marked == ["d32", "d8s1"] and out.height == 6


def test_fit_iso_extrapolate_cli(tmp_path, capsys):
    path = tmp_path / "runs.parquet"
    _frame().write_parquet(path)
    assert main(["fit", "iso", "--input", str(path), "--n-boot", "50", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["groups"][0]["n_points"] == 4 and "extrapolated" not in plain
    assert main(["fit", "iso", "--input", str(path), "--n-boot", "50", "--extrapolate", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["groups"][0]["n_points"] == 6
    assert {e["run_id"] for e in obj["extrapolated"] if e["value"] is not None} == {"d32", "d8s1"}
    assert main(["fit", "iso", "--input", str(path), "--n-boot", "50", "--extrapolate"]) == 0
    assert "extrapolated: d32 (pruned at step 120)" in capsys.readouterr().out
