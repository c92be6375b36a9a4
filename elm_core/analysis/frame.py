"""Run frames for analysis: normalising columns, the published sweep, metric direction, per-neuron counts.

Every function in `elm_core.analysis` takes a Polars frame with (a subset of) the canonical run-record
columns of `elm_core.records` (n_neurons, d_m, l_mlp, d_mlp, d_tree, d_brch, k_e, k_c, params, budget,
metric_name, test_metric, status, seed, ...). `normalize_frame` brings other shapes (the published
sweep's CSV, with `N_rec`) to that form and adds the derived allocation columns.

k_e and k_c come from the closed forms of `elm_core.budget` (docs/science.md section 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from elm_core.budget import neuron_counts

REFERENCE_SWEEP_CSV = Path(__file__).resolve().parent.parent / "reference_data" / "paper_sweeps_enwik8.csv"

# Columns that define a configuration (what is held fixed when only the seed changes).
CONFIG_COLUMNS: tuple[str, ...] = (
    "task",
    "dataset",
    "metric_name",
    "n_in",
    "n_out",
    "n_neurons",
    "d_m",
    "l_mlp",
    "d_mlp",
    "d_tree",
    "d_brch",
    "readout_d_m",
    "k_e",
    "k_c",
    "params",
    "budget",
    "flops_per_step",
    "steps",
)
# Per-run outcomes that are averaged over seeds.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "train_metric",
    "valid_metric",
    "test_metric",
    "best_valid_metric",
    "wall_time_s",
)
# The allocation axes an iso-budget curve can be drawn against.
ALLOCATION_AXES: tuple[str, ...] = ("d_m", "k_e", "n_neurons", "k_e_frac")

_INT_COLUMNS = ("n_neurons", "d_m", "l_mlp", "d_mlp", "d_tree", "d_brch", "readout_d_m", "n_out", "k_e", "k_c")
_FLOAT_COLUMNS = ("params", "budget", "flops_per_step", "wall_time_s", *OUTCOME_COLUMNS[:4])


def metric_name_for_task(task: str | None) -> str:
    """'accuracy' for the SHD tasks, 'bpc' for text (enwik8, the bundled corpus) and anything else."""
    return "accuracy" if task is not None and "shd" in task.lower() else "bpc"


def normalize_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The canonical analysis columns from a run frame or a published-sweep CSV.

    Renames N_rec -> n_neurons; fills d_mlp = 2 d_m where missing (the reference default); adds
    k_e, k_c (filling nulls) from the architecture columns, k_e_frac = k_e / (k_e + k_c), and
    metric_name from the task where missing. Existing non-null values are never overwritten.
    """
    if "N_rec" in df.columns and "n_neurons" not in df.columns:
        df = df.rename({"N_rec": "n_neurons"})
    present = set(df.columns)
    casts = [pl.col(c).cast(pl.Int64, strict=False) for c in _INT_COLUMNS if c in present]
    casts += [pl.col(c).cast(pl.Float64, strict=False) for c in _FLOAT_COLUMNS if c in present]
    if casts:
        df = df.with_columns(casts)
    if "d_m" in present and "l_mlp" in present:
        d_mlp = (pl.col("d_m") * 2).cast(pl.Int64)
        df = df.with_columns((pl.coalesce("d_mlp", d_mlp) if "d_mlp" in present else d_mlp).alias("d_mlp"))
    arch = ("d_m", "l_mlp", "d_mlp", "d_tree", "d_brch")
    if all(c in df.columns for c in arch):
        k_e, k_c = neuron_counts(*(df[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in arch))
        computed = {
            "k_e": pl.Series("k_e", np.where(np.isfinite(k_e), k_e, np.nan)).fill_nan(None).cast(pl.Int64),
            "k_c": pl.Series("k_c", np.where(np.isfinite(k_c), k_c, np.nan)).fill_nan(None).cast(pl.Int64),
        }
        for name, series in computed.items():
            df = df.with_columns(pl.coalesce(pl.col(name), series) if name in df.columns else series.alias(name))
    if "k_e" in df.columns and "k_c" in df.columns:
        df = df.with_columns((pl.col("k_e") / (pl.col("k_e") + pl.col("k_c"))).cast(pl.Float64).alias("k_e_frac"))
    if "metric_name" not in df.columns:
        if "task" in df.columns:
            df = df.with_columns(
                pl.col("task")
                .map_elements(metric_name_for_task, return_dtype=pl.String)
                .fill_null("bpc")
                .alias("metric_name")
            )
        else:
            df = df.with_columns(pl.lit("bpc").alias("metric_name"))
    return df


def load_reference_sweep(path: str | Path | None = None) -> pl.DataFrame:
    """The published enwik8 sweep (~3.5M parameters, 14 runs, one seed each), normalised.

    Adds source='reference', status='done', seed=0 and run_id='ref-enwik8-dm{d_m}'.
    """
    df = normalize_frame(pl.read_csv(path or REFERENCE_SWEEP_CSV))
    return df.with_columns(
        pl.lit("reference").alias("source"),
        pl.lit("done").alias("status"),
        pl.lit(0, dtype=pl.Int64).alias("seed"),
        pl.format("ref-{}-dm{}", pl.col("task"), pl.col("d_m")).alias("run_id"),
    )


def read_runs(path: str | Path) -> pl.DataFrame:
    """A run frame from CSV, Parquet or JSON lines (by extension), normalised."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pl.read_ndjson(path)
        else:
            df = pl.read_csv(path, infer_schema_length=10000)
    except (pl.exceptions.PolarsError, OSError) as exc:  # empty, truncated, not a table
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot read runs from it ({detail})") from None
    return normalize_frame(df)


METRIC_COLUMNS = ("test_metric", "valid_metric", "best_valid_metric", "train_metric")


def split_diverged(df: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """(the rows that do not look diverged, [(run_id, reason)] for those that do).

    A run looks diverged when one of its metrics is worse than chance: a BPC above log2(n_out) by
    more than DIVERGE_MARGIN / ln 2 bits (what elm_core.train marks `failed, diverged` since it checks;
    a run stored `done` before then, e.g. with a test BPC of 2e6, is caught here), or an accuracy
    below 1 / n_out. Rows without n_out or a metric are kept."""
    from elm_core.records import DIVERGE_MARGIN

    present = [c for c in METRIC_COLUMNS if c in df.columns]
    if df.height == 0 or "n_out" not in df.columns or not present:
        return df, []
    n_out = pl.col("n_out").cast(pl.Float64)
    accuracy = pl.col("metric_name") == "accuracy" if "metric_name" in df.columns else pl.lit(False)
    bpc_limit = n_out.log(2) + DIVERGE_MARGIN / math.log(2)
    worse = [
        pl.when(n_out > 1)
        .then(pl.when(accuracy).then(pl.col(c) < 1 / n_out).otherwise(pl.col(c) > bpc_limit))
        .fill_null(False)
        .alias(c)
        for c in present
    ]
    flags = df.select(worse)
    bad = flags.select(pl.any_horizontal(pl.all())).to_series()
    if not bad.any():
        return df, []
    reasons = []
    names = df["metric_name"] if "metric_name" in df.columns else pl.Series([None] * df.height)
    for i in bad.arg_true().to_list():
        col = next(c for c in present if flags[c][i])
        n, value = int(df["n_out"][i]), float(df[col][i])
        chance = f"1/{n}" if names[i] == "accuracy" else f"log2({n}) = {math.log2(n):.3g}"
        what = "accuracy" if names[i] == "accuracy" else "BPC"
        run_id = str(df["run_id"][i]) if "run_id" in df.columns else f"row {i + 1}"
        reasons.append((run_id, f"{col.removesuffix('_metric')} {what} {value:.4g} is worse than chance ({chance})"))
    return df.filter(~bad), reasons


def done_runs(df: pl.DataFrame, metric: str | None = None, columns: Sequence[str] = ()) -> pl.DataFrame:
    """Rows that may enter a fit: status == 'done' (when there is a status column), not looking
    diverged (`split_diverged`), with `metric` and every column in `columns` non-null and finite."""
    if "status" in df.columns:
        df = df.filter(pl.col("status") == "done")
    df = split_diverged(df)[0]
    for name in [*([metric] if metric else []), *columns]:
        if name not in df.columns:
            raise ValueError(f"column {name!r} not in the run frame (columns: {', '.join(df.columns)})")
        df = df.filter(pl.col(name).is_not_null())
        if df.schema[name].is_float():
            df = df.filter(pl.col(name).is_finite())
    return df


def on_curve(df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """(rows that belong on an iso-budget curve, how many were left out): at least N_MIN hidden neurons
    and, where a budget is recorded, at least 95% of it spent (elm_core.sweeps.design_problem). Fits
    leave the others out unless the user asks for them (`elmlab fit --keep-off-curve`)."""
    from elm_core.sweeps import MAX_UNDER_BUDGET, N_MIN

    keep = pl.lit(True)
    if "n_neurons" in df.columns:
        keep = keep & (pl.col("n_neurons").is_null() | (pl.col("n_neurons") >= N_MIN))
    if "budget" in df.columns and "params" in df.columns:
        keep = keep & (pl.col("budget").is_null() | (pl.col("params") >= (1 - MAX_UNDER_BUDGET) * pl.col("budget")))
    kept = df.filter(keep)
    return kept, df.height - kept.height


def fit_metric(df: pl.DataFrame, metric: str | None = None) -> str:
    """The metric a fit locates its optimum on: `metric` when given; else valid_metric when every done
    run with a test_metric also has one (choosing an allocation on the test set would make the test
    number reported there optimistic), else test_metric (a source without validation numbers)."""
    if metric is not None:
        return metric
    if "valid_metric" not in df.columns:
        return "test_metric"
    runs = done_runs(df)
    tested = runs.filter(pl.col("test_metric").is_not_null()) if "test_metric" in runs.columns else runs
    valid = tested["valid_metric"].cast(pl.Float64)
    if tested.height and valid.is_not_null().all() and valid.is_finite().all():
        return "valid_metric"
    return "test_metric"


def loss_target(df: pl.DataFrame, metric: str, maximize: bool) -> tuple[pl.DataFrame, np.ndarray]:
    """The done runs with (n_neurons, k_e, k_c) and the positive loss a log-space fit targets: the metric
    itself when minimised, the error 1 - metric when maximised (an accuracy in (0, 1))."""
    runs = done_runs(df, metric, ["n_neurons", "k_e", "k_c"])
    y = runs[metric].cast(pl.Float64).to_numpy()
    if maximize:
        if np.any((y <= 0) | (y >= 1)):
            raise ValueError(f"a maximised metric must lie in (0, 1) to be fitted as an error; {metric} does not")
        y = 1.0 - y
    if np.any(y <= 0):
        raise ValueError(f"{metric} must be positive to be fitted in log space")
    return runs, y


def resolve_maximize(df: pl.DataFrame, metric: str, maximize: bool | None = None) -> bool:
    """Metric direction: `maximize` when given; else from metric_name ('accuracy' is maximised, 'bpc'
    minimised); else True only when the metric's name contains 'acc'."""
    if maximize is not None:
        return bool(maximize)
    if "metric_name" in df.columns:
        names = [n for n in df["metric_name"].unique().to_list() if n is not None]
        if len(names) > 1:
            raise ValueError(f"runs mix metrics {sorted(names)}; filter to one task or pass maximize")
        if names:
            return names[0] == "accuracy"
    return "acc" in metric.lower()


def seed_weights(df: pl.DataFrame) -> np.ndarray:
    """Weight of each row in a fit: its number of seeds for a collapsed frame, else 1."""
    if "n_seeds" in df.columns:
        return df["n_seeds"].cast(pl.Float64).fill_null(1.0).to_numpy()
    return np.ones(df.height)


def hidden_overhead(df: pl.DataFrame) -> float:
    """Median parameters outside the hidden layer, params - N (k_e + k_c); 0 when unknown."""
    cols = ("params", "n_neurons", "k_e", "k_c")
    if df.height == 0 or not all(c in df.columns for c in cols):
        return 0.0
    rest = df.select(pl.col("params") - pl.col("n_neurons") * (pl.col("k_e") + pl.col("k_c"))).to_series()
    rest = rest.drop_nulls()
    return float(rest.median()) if rest.len() else 0.0
