"""Every fit says "no fit" the same way: a NoFit with the reason, which the pages show."""

from __future__ import annotations

import polars as pl

from app import fits, frames
from elm_core.store import Store


def test_too_few_runs_give_a_reason_not_a_result(filled_store: Store):
    points = fits.fit_frame(frames.select(frames.prepare_runs(filled_store.runs()), task="text"), "test_metric")
    one_config = points.filter((pl.col("iso_budget") == 60_000) & (pl.col("d_m") == 8))
    for answer in (fits.iso_fits(one_config, "d_m", "test_metric", n_boot=10), fits.scaling(one_config, "test_metric"),
                   fits.capacity(one_config, "test_metric"), fits.suggestions(one_config, "test_metric")):
        assert isinstance(answer, fits.NoFit) and answer.reason, answer
    empty = points.clear()
    assert fits.iso_fits(empty, "d_m", "test_metric") == fits.NoFit(fits.NO_RUNS)
    assert fits.pareto(empty, "params", "test_metric") == fits.NoFit(fits.NO_RUNS)
    assert fits.optima_table(fits.NoFit(fits.NO_RUNS)).height == 0
    assert not isinstance(fits.iso_fits(points, "d_m", "test_metric", n_boot=10), fits.NoFit)
