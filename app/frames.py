"""The runs frame and what the pages read off it: selection, counts, the Runs table (no Streamlit here).

state.py caches `prepare_runs` on the store's state token; bench.py and the tests call these directly.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from elm_core.analysis import normalize_frame

JSON_COLUMNS = ("config", "spec", "versions", "curve", "baselines")
STATUSES = ("queued", "running", "done", "failed", "cancelled")


def prepare_runs(frame: pl.DataFrame) -> pl.DataFrame:
    """A store frame with the analysis columns (k_e_frac), throughput (tokens_per_s) and `config_key`,
    a digest of the run's configuration and spec without its seed (runs that differ only by seed
    share it). The bulky JSON columns are dropped: pages read one run's JSON through Store.run."""
    if "config" in frame.columns and "spec" in frame.columns:
        seedless = [pl.col(c).fill_null("").str.replace_all(r'"(seed|run_id|sweep_id)": ("[^"]*"|-?\d+|null)', "")
                    for c in ("config", "spec")]
        frame = frame.with_columns(pl.concat_str(seedless, separator="|").hash().cast(pl.String).alias("config_key"))
    frame = normalize_frame(frame.drop([c for c in JSON_COLUMNS if c in frame.columns]))
    if "tokens_seen" in frame.columns and "wall_time_s" in frame.columns:
        frame = frame.with_columns(
            pl.when(pl.col("wall_time_s") > 0)
            .then(pl.col("tokens_seen") / pl.col("wall_time_s"))
            .otherwise(None)
            .alias("tokens_per_s")
        )
    return frame


def select(
    frame: pl.DataFrame,
    *,
    task: str | None = None,
    status: list[str] | None = None,
    sweep: str | None = None,
    source: str | None = None,
) -> pl.DataFrame:
    """The runs matching every filter given (None or empty: no filter)."""
    if task:
        frame = frame.filter(pl.col("task") == task)
    if status:
        frame = frame.filter(pl.col("status").is_in(status))
    if sweep:
        frame = frame.filter(pl.col("sweep_id") == sweep)
    if source:
        frame = frame.filter(pl.col("source") == source)
    return frame


def tasks_by_done(frame: pl.DataFrame) -> list[str]:
    """Tasks present in the store, the one with most done runs first."""
    if frame.height == 0:
        return []
    counts = frame.group_by("task").agg((pl.col("status") == "done").sum().alias("done"), pl.len().alias("n"))
    return counts.sort(["done", "n", "task"], descending=[True, True, False])["task"].to_list()


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Runs per status, every status present (0 when none)."""
    counts = dict.fromkeys(STATUSES, 0)
    if frame.height:
        for status, n in frame.group_by("status").len().iter_rows():
            counts[status] = int(n)
    return counts


def runs_table(frame: pl.DataFrame, progress: dict[str, dict[str, Any]], limit: int = 500) -> pl.DataFrame:
    """The Runs page's table: newest first, live progress merged in for running runs."""
    cols = ["run_id", "status", "task", "sweep_id", "params", "n_neurons", "d_m", "k_e", "k_c", "seed",
            "test_metric", "valid_metric", "steps", "tokens_per_s", "wall_time_s", "worker", "reason", "created_at"]
    order = ["run_id", "status", "progress", "loss", "live_tokens_per_s", "eta_s", "task", "test_metric",
             "valid_metric", "params", "n_neurons", "d_m", "k_e", "k_c", "seed", "sweep_id", "steps", "tokens_per_s",
             "wall_time_s", "worker", "reason", "created"]
    view = frame.sort("created_at", descending=True).head(limit).select([c for c in cols if c in frame.columns])
    ids = view["run_id"].to_list()
    status = view["status"].to_list()
    prog = [progress.get(i, {}) if s == "running" else {} for i, s in zip(ids, status, strict=True)]

    def frac(p: dict[str, Any], s: str) -> float | None:
        if s == "done":
            return 1.0
        if p.get("total_steps"):
            return min(1.0, float(p.get("step") or 0) / float(p["total_steps"]))
        return None

    return view.with_columns(
        pl.Series("progress", [frac(p, s) for p, s in zip(prog, status, strict=True)], dtype=pl.Float64),
        pl.Series("loss", [p.get("loss") for p in prog], dtype=pl.Float64),
        pl.Series("live_tokens_per_s", [p.get("tokens_per_s") for p in prog], dtype=pl.Float64),
        pl.Series("eta_s", [p.get("eta_s") for p in prog], dtype=pl.Float64),
        pl.from_epoch(pl.col("created_at").cast(pl.Float64).mul(1e6).cast(pl.Int64), time_unit="us").alias("created"),
    ).drop("created_at").select(order)


def latest_ids(frame: pl.DataFrame, limit: int = 300) -> list[str]:
    """The newest `limit` run ids."""
    if frame.height == 0:
        return []
    return frame.sort("created_at", descending=True).head(limit)["run_id"].to_list()


def metric_name(frame: pl.DataFrame, task: str | None) -> str:
    """The metric a task's runs report ('bpc' or 'accuracy'); 'bpc' when none says."""
    names = frame.filter(pl.col("task") == task)["metric_name"].drop_nulls().unique().to_list() if task else []
    return names[0] if names else "bpc"


def numeric_columns(frame: pl.DataFrame) -> list[str]:
    """Columns worth plotting on free axes (numeric, not bookkeeping, not a seed spread)."""
    skip = {"created_at", "updated_at", "attempt", "n_in", "readout_d_m"}
    return [c for c, t in frame.schema.items() if t.is_numeric() and c not in skip and not c.endswith("_std")]
