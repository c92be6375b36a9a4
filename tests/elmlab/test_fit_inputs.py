"""What a fit takes: done runs only, and never a done run that looks diverged (stored `done` before
divergence was detected at the end of training), with the reason on the command line."""

from __future__ import annotations

import json

import polars as pl
import pytest

from elm_core.analysis import done_runs
from elm_core.analysis.frame import split_diverged
from elmlab.cli import main


@pytest.fixture
def sweep(reference_data) -> pl.DataFrame:
    """The published enwik8 sweep (n_out 204, test BPC about 1.6), one row per d_m."""
    return pl.read_csv(reference_data / "paper_sweeps_enwik8.csv")


def _planted(sweep: pl.DataFrame, **metrics: float) -> pl.DataFrame:
    """The sweep plus a copy of its best design at another d_m with the given metrics: a diverged run
    that a fit taking it would place the optimum on or far from."""
    row = sweep.sort("test_metric").head(1).with_columns(pl.lit(7).alias("d_m"), pl.lit(2100).alias("N_rec"),
                                                         *(pl.lit(v).alias(k) for k, v in metrics.items()))
    return pl.concat([sweep, row], how="vertical_relaxed")


def _iso(path, capsys) -> tuple[dict, str]:
    assert main(["fit", "iso", "--input", str(path), "--x", "d_m", "--metric", "test_metric", "--json",
                 "--n-boot", "40"]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


@pytest.mark.parametrize("metrics", [{"test_metric": 2e6}, {"test_metric": 3.3e10, "valid_metric": 3.1e10},
                                     {"valid_metric": 12.0}])
def test_a_done_run_worse_than_chance_never_enters_a_fit(sweep, metrics, tmp_path, capsys):
    clean, planted = tmp_path / "clean.csv", tmp_path / "planted.csv"
    sweep.write_csv(clean)
    _planted(sweep, **metrics).write_csv(planted)
    expected, _ = _iso(clean, capsys)
    got, err = _iso(planted, capsys)
    assert got == expected  # the fit is the fit without the diverged run
    capsys.readouterr()
    assert main(["fit", "iso", "--input", str(planted), "--x", "d_m", "--metric", "test_metric",
                 "--n-boot", "40"]) == 0
    err = capsys.readouterr().err
    assert "left out 1 done run(s) that look diverged" in err and "is worse than chance (log2(204) = 7.67)" in err


def test_a_run_just_inside_the_margin_still_counts(sweep):
    # log2(204) + 1 / ln 2 = 9.11 bits: a poor run at 9.0 is kept, one at 9.2 is not
    frame = pl.concat([_planted(sweep, test_metric=9.0), _planted(sweep, test_metric=9.2).tail(1)],
                      how="vertical_relaxed").with_columns(pl.lit("done").alias("status"))
    frame = frame.with_columns(pl.format("r{}", pl.int_range(pl.len())).alias("run_id"))
    kept, left_out = split_diverged(frame)
    assert kept.height == sweep.height + 1 and [r for r, _ in left_out] == [f"r{sweep.height + 1}"]
    assert left_out[0][1] == "test BPC 9.2 is worse than chance (log2(204) = 7.67)"


def test_an_accuracy_below_chance_is_left_out_with_its_reason():
    frame = pl.DataFrame({"run_id": ["ok", "bad"], "status": ["done", "done"], "metric_name": ["accuracy"] * 2,
                          "n_out": [20, 20], "test_metric": [0.61, 0.02], "n_neurons": [64, 64]})
    assert done_runs(frame, "test_metric")["run_id"].to_list() == ["ok"]
    assert split_diverged(frame)[1] == [("bad", "test accuracy 0.02 is worse than chance (1/20)")]


def test_the_dashboard_fit_frame_leaves_diverged_runs_out(sweep):
    from app.fits import fit_frame
    from app.frames import prepare_runs
    from elm_core.analysis.frame import normalize_frame

    frame = normalize_frame(_planted(sweep, test_metric=2e6)).with_columns(
        pl.lit("done").alias("status"), pl.lit(0).alias("seed"),
        pl.format("r{}", pl.int_range(pl.len())).alias("run_id"))
    fitted = fit_frame(prepare_runs(frame), "test_metric")
    assert fitted["test_metric"].max() < 2 and fitted.height == sweep.height
