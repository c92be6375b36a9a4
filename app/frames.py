"""The runs frame and what the pages read off it: selection, counts, the Runs table (no Streamlit here).

state.py caches `prepare_runs` on the store's state token; bench.py and the tests call these directly.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from app.text import duration, parse_number
from elm_core.analysis import normalize_frame

JSON_COLUMNS = ("config", "spec", "versions", "curve", "baselines")
STATUSES = ("queued", "running", "done", "failed", "cancelled")
TABLE_COLUMNS = ["run_id", "status", "progress", "loss", "tokens/s", "ETA", "task", "test", "valid", "tags", "note",
                 "params", "n_neurons", "d_m", "k_e", "k_c", "seed", "sweep_id", "steps", "wall_time_s", "worker",
                 "reason", "created"]


def prepare_runs(frame: pl.DataFrame) -> pl.DataFrame:
    """A store frame with the analysis columns (k_e_frac), throughput (tokens_per_s) and `config_key`,
    a digest of the run's configuration and spec without its seed (runs that differ only by seed
    share it). The bulky JSON columns are dropped: pages read one run's JSON through Store.run."""
    if "config" in frame.columns and "spec" in frame.columns:
        seedless = [pl.col(c).fill_null("").str.replace_all(r'"(seed|run_id|sweep_id)": ("[^"]*"|-?\d+|null)', "")
                    for c in ("config", "spec")]
        frame = frame.with_columns(pl.concat_str(seedless, separator="|").hash().cast(pl.String).alias("config_key"))
    if "spec" in frame.columns:  # the learning rate a run asked for (null: its preset's)
        frame = frame.with_columns(pl.col("spec").str.json_path_match("$.lr").cast(pl.Float64, strict=False)
                                   .alias("lr"))
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


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None or value != value else format(value, fmt)


def runs_table(frame: pl.DataFrame, progress: dict[str, dict[str, Any]], limit: int = 500) -> pl.DataFrame:
    """The Runs page's table, newest first. `loss`, `tokens/s` and `ETA` are live for running runs;
    finished runs show their final throughput (tokens seen / wall time) and ETA 0, and a cell with no
    value is blank (text columns: the table would print "None" in a number column)."""
    cols = ["run_id", "status", "task", "sweep_id", "params", "n_neurons", "d_m", "k_e", "k_c", "seed",
            "test_metric", "valid_metric", "steps", "tokens_per_s", "wall_time_s", "worker", "reason", "created_at"]
    order = ["run_id", "status", "progress", "loss", "tokens/s", "ETA", "task", "test", "valid", "params",
             "n_neurons", "d_m", "k_e", "k_c", "seed", "sweep_id", "steps", "wall_time_s", "worker", "reason",
             "created"]
    view = frame.sort("created_at", descending=True).head(limit).select([c for c in cols if c in frame.columns])
    rows = view.select("run_id", "status", "tokens_per_s", "test_metric", "valid_metric").iter_rows()
    out: dict[str, list] = {"progress": [], "loss": [], "tokens/s": [], "ETA": [], "test": [], "valid": []}
    for run_id, status, tps, test, valid in rows:
        p = progress.get(run_id, {}) if status == "running" else {}
        total = p.get("total_steps")
        out["progress"].append(1.0 if status == "done" else
                               min(1.0, float(p.get("step") or 0) / float(total)) if total else None)
        out["loss"].append(_cell(p.get("loss"), ".4f"))
        out["tokens/s"].append(_cell(p.get("tokens_per_s") if status == "running" else tps, ",.0f"))
        out["ETA"].append(duration(p.get("eta_s")) if p.get("eta_s") is not None else
                          "0 s" if status == "done" else "")
        out["test"].append(_cell(test, ".4f"))
        out["valid"].append(_cell(p.get("valid_metric") if status == "running" and p.get("valid_metric") is not None
                                  else valid, ".4f"))
    return view.with_columns(
        pl.Series("progress", out["progress"], dtype=pl.Float64),
        *(pl.Series(k, v, dtype=pl.String) for k, v in out.items() if k != "progress"),
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


def best_history(frame: pl.DataFrame, metric: str, maximize: bool) -> pl.DataFrame:
    """Done runs with `metric` in the order they finished (updated_at): n (1, 2, ...), finished (a
    UTC datetime), value, best (the best value so far: max for accuracy, min otherwise), run_id."""
    data = frame.filter((pl.col("status") == "done") & pl.col(metric).is_not_null()).sort("updated_at")
    best = pl.col(metric).cum_max() if maximize else pl.col(metric).cum_min()
    return data.select(
        pl.int_range(1, pl.len() + 1).alias("n"),
        pl.from_epoch(pl.col("updated_at").cast(pl.Float64).mul(1e6).cast(pl.Int64), time_unit="us").alias("finished"),
        pl.col(metric).alias("value"), best.alias("best"), "run_id",
    )


OPERATORS = {"<=": "le", ">=": "ge", "!=": "ne", "==": "eq", "<": "lt", ">": "gt", "=": "eq"}


def filter_expression(frame: pl.DataFrame, expression: str) -> pl.DataFrame:
    """Rows matching every clause of `expression`, clauses joined by 'and': `column op value` with op
    one of < <= > >= == != (= reads as ==), value a number (60k, 1e5) or a word (status == done,
    reason ~ pruned: '~' is 'contains'). ValueError naming the clause that is wrong."""
    out = frame
    for clause in [c.strip() for c in expression.replace(" AND ", " and ").split(" and ") if c.strip()]:
        if "~" in clause:
            column, _, value = (part.strip() for part in clause.partition("~"))
            op = "contains"
        else:
            op = next((o for o in OPERATORS if o in clause), None)
            if op is None:
                raise ValueError(f"filter: {clause!r} has no comparison (use < <= > >= == != or ~)")
            column, _, value = (part.strip() for part in clause.partition(op))
        if column not in frame.columns:
            raise ValueError(f"filter: no column {column!r} (columns include {', '.join(frame.columns[:12])}, ...)")
        value = value.strip("'\"")
        col = pl.col(column)
        if op == "contains":
            out = out.filter(col.cast(pl.String).str.contains(value, literal=True))
            continue
        if frame.schema[column].is_numeric():
            try:
                number: float | str = parse_number(value)
            except ValueError:
                raise ValueError(f"filter: {column} is a number, {value!r} is not") from None
        else:
            number = value
        out = out.filter(getattr(col, OPERATORS[op])(number))
    return out


def sweep_summary(frame: pl.DataFrame, metric: str, maximize: bool) -> pl.DataFrame:
    """One row per sweep (runs without one together as "(none)"): task, runs, done, running, budgets,
    the best `metric` and its run, the last update."""
    best = pl.col(metric).max() if maximize else pl.col(metric).min()
    order = pl.col(metric).arg_max() if maximize else pl.col(metric).arg_min()
    return (frame.with_columns(pl.col("sweep_id").fill_null("(none)"))
            .group_by("sweep_id").agg(
                pl.col("task").first(), pl.len().alias("runs"), (pl.col("status") == "done").sum().alias("done"),
                (pl.col("status") == "running").sum().alias("running"),
                pl.col("budget").drop_nulls().unique().sort().alias("budgets"),
                best.alias(f"best {metric}"), pl.col("run_id").gather(order).first().alias("best run"),
                pl.col("updated_at").max().alias("updated"))
            .with_columns(pl.col("budgets").list.eval(pl.element().cast(pl.Int64).cast(pl.String)).list.join(", "),
                          pl.from_epoch(pl.col("updated").cast(pl.Float64).mul(1e6).cast(pl.Int64), time_unit="us"))
            .sort("updated", descending=True))


def differs(table: pl.DataFrame) -> list[bool]:
    """Per row of a side-by-side table (a `field` column, then one column per run): whether the runs
    disagree on that field."""
    runs = table.columns[1:]
    return [len(set(row)) > 1 for row in table.select(runs).iter_rows()] if len(runs) > 1 else [False] * table.height
