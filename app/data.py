"""The dashboard's data work: pure functions on run frames and specs (no Streamlit here).

state.py wraps the expensive ones in `st.cache_data` keyed on the store's state token;
benchmarks/dashboard.py and the tests call them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from elm_core.analysis import (
    IsoFit,
    ParetoResult,
    collapse_seeds,
    done_runs,
    fit_iso_budgets,
    iso_budget_groups,
    load_reference_sweep,
    normalize_frame,
    pareto_frontier,
)
from elm_core.budget import breakdown, count_params, flops_per_step, iso_budget
from elm_core.config import ELMConfig
from elm_core.spec import DEFAULT_PRESET, PRESETS, RunSpec

METRICS: dict[str, str] = {
    "test_metric": "test",
    "valid_metric": "validation",
    "best_valid_metric": "best validation",
    "train_metric": "train",
}
COST_AXES: dict[str, str] = {
    "params": "parameters",
    "flops_per_step": "FLOPs per step",
    "wall_time_s": "wall time (s)",
}
ALLOCATION_LABELS: dict[str, str] = {
    "d_m": "d_m (memory units per neuron)",
    "k_e": "k_e (per-neuron complexity)",
    "n_neurons": "N (neurons)",
    "k_e_frac": "k_e / (k_e + k_c)",
}
SCALING_AXES: dict[str, tuple[str, ...]] = {  # axis -> the columns held fixed along it (claim 1)
    "n_neurons": ("k_e", "k_c"),
    "k_e": ("n_neurons", "k_c"),
    "k_c": ("n_neurons", "k_e"),
}
LABELS: dict[str, str] = {
    **ALLOCATION_LABELS,
    **COST_AXES,
    "k_c": "k_c (per-neuron connectivity)",
    "test_metric": "test metric",
    "valid_metric": "validation metric",
    "best_valid_metric": "best validation metric",
    "train_metric": "train metric",
    "d_tree": "d_tree (branches)",
    "d_brch": "d_brch (synapses per branch)",
    "iso_budget": "budget",
    "budget": "budget",
}
# Vocabulary sizes used for design when a task's files are absent (the reference's enwik8 has 204).
FALLBACK_DIMS: dict[str, tuple[int, int]] = {"enwik8": (204, 204), "shd": (700, 20), "shd-adding": (700, 19)}
DEFAULT_FLOPS_PER_S = 2e9  # an assumed CPU training throughput when the store has nothing to go by
STARTUP_S = 5.0  # a worker's start of a run: data, model, first steps (added to every estimate)


def human(n: float | None, digits: int = 3) -> str:
    """1234 -> '1.23k', 3516748 -> '3.52M'."""
    if n is None or not math.isfinite(float(n)):
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}g}{unit}"
    return f"{n:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def metric_label(metric: str, metric_name: str | None) -> str:
    unit = {"bpc": "BPC (lower is better)", "accuracy": "accuracy (higher is better)"}.get(metric_name or "", "")
    return f"{METRICS.get(metric, metric)} {unit}".strip()


# --- the runs frame -------------------------------------------------------------------------------


JSON_COLUMNS = ("config", "spec", "versions", "curve")


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
    counts = dict.fromkeys(("queued", "running", "done", "failed", "cancelled"), 0)
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
    if frame.height == 0:
        return []
    return frame.sort("created_at", descending=True).head(limit)["run_id"].to_list()


# --- Explore / Scaling ----------------------------------------------------------------------------


def fit_frame(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Done runs with `metric`, seeds collapsed (mean, <metric>_std, n_seeds, run_ids), grouped into
    iso-budget groups (`iso_budget`)."""
    runs = done_runs(frame, metric) if metric in frame.columns else frame.clear()
    if runs.height == 0:
        return runs.with_columns(pl.lit(None, dtype=pl.Float64).alias("iso_budget"),
                                 pl.lit(None, dtype=pl.UInt32).alias("n_seeds"))
    if "config_key" in runs.columns:
        # collapse_seeds groups by the `config` column besides the architecture columns; the seedless
        # digest of config and spec stands in for the JSON (so runs of different protocols stay apart).
        runs = runs.drop([c for c in ("config",) if c in runs.columns]).rename({"config_key": "config"})
    return iso_budget_groups(collapse_seeds(runs))


def iso_fits(collapsed: pl.DataFrame, x: str, metric: str, n_boot: int = 200) -> list[IsoFit]:
    if collapsed.height == 0 or x not in collapsed.columns:
        return []
    try:
        return fit_iso_budgets(collapsed, x=x, metric=metric, n_boot=n_boot)
    except ValueError:
        return []


def optima_table(fits: list[IsoFit]) -> pl.DataFrame:
    """One row per iso-budget fit: the optimum with its interval."""
    rows = [
        {
            "budget": f.budget,
            "optimum": f.optimum,
            "ci_low": f.ci[0],
            "ci_high": f.ci[1],
            "metric_at_optimum": f.optimum_metric,
            "bracketed": f.interior,
            "runs": f.n_points,
            "note": f.note,
        }
        for f in fits
    ]
    schema = {"budget": pl.Float64, "optimum": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "metric_at_optimum": pl.Float64, "bracketed": pl.Boolean, "runs": pl.Int64, "note": pl.String}
    return pl.DataFrame(rows, schema=schema)


def pareto(collapsed: pl.DataFrame, cost: str, metric: str) -> ParetoResult | None:
    if collapsed.height == 0 or cost not in collapsed.columns:
        return None
    try:
        return pareto_frontier(collapsed, x=cost, metric=metric)
    except ValueError:
        return None


def reference_overlay(frame: pl.DataFrame, task: str) -> pl.DataFrame:
    """The published enwik8 sweep for overlay: nothing when it is already in the data shown."""
    if task == "enwik8" and frame.filter((pl.col("source") == "reference") & (pl.col("task") == task)).height:
        return pl.DataFrame()
    return load_reference_sweep()


def numeric_columns(frame: pl.DataFrame) -> list[str]:
    skip = {"created_at", "updated_at", "attempt", "n_in", "readout_d_m"}
    return [c for c, t in frame.schema.items() if t.is_numeric() and c not in skip and not c.endswith("_std")]


# --- Design ---------------------------------------------------------------------------------------


MODES: dict[str, str] = {
    "neurons": "fix d_m and k_c: the budget sets N",
    "memory": "fix N and k_c: the budget sets d_m",
    "connectivity": "fix N and d_m: the budget sets k_c (d_brch)",
}


@dataclass(frozen=True)
class TaskInfo:
    name: str
    n_in: int
    n_out: int
    kind: str
    metric_name: str
    seq_len: int | None = None
    available: bool = True
    why: str | None = None


@dataclass
class Design:
    """One point of the design space, resolved: the spec that queues it and its configuration."""

    spec: RunSpec
    cfg: ELMConfig
    params: int
    parts: dict[str, int]
    flops: int
    train_tokens: int
    eval_tokens: int
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def k_e(self) -> int:
        return self.cfg.k_e

    @property
    def k_c(self) -> int:
        return self.cfg.k_c


def preset_for(kind: str, preset: str | None) -> str:
    if preset in presets_for(kind):
        return preset
    return DEFAULT_PRESET[kind]


def presets_for(kind: str) -> list[str]:
    return [p for p in PRESETS if (PRESETS[p].get("seq_len") is not None) == (kind == "char")]


def minimum_budget(info: TaskInfo, preset: str | None) -> int:
    """Parameters of the smallest network of a task and preset: one hidden neuron with d_m = 1."""
    spec = RunSpec(task=info.name, preset=preset_for(info.kind, preset), n_neurons=1, d_m=1)
    return count_params(spec.resolve_config(n_in=info.n_in, n_out=info.n_out, kind=info.kind))


def solve_d_brch(budget: int, base: dict[str, Any]) -> int:
    """The largest d_brch with count_params <= budget at fixed N, d_m and d_tree (the count is linear
    in d_brch: d_tree d_brch synapses per hidden and per readout neuron)."""
    c1 = count_params(ELMConfig(**{**base, "d_brch": 1}))
    slope = count_params(ELMConfig(**{**base, "d_brch": 2})) - c1
    if c1 > budget:
        raise ValueError(
            f"budget {budget:,} is too small for n_neurons={base['n_neurons']}, d_m={base['d_m']}, "
            f"d_tree={base['d_tree']}: even d_brch=1 needs {c1:,} parameters"
        )
    return 1 + (budget - c1) // slope


def make_design(
    info: TaskInfo,
    *,
    budget: int,
    mode: str,
    d_m: int,
    n_neurons: int,
    d_tree: int,
    d_brch: int,
    preset: str | None = None,
    l_mlp: int = 1,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Design:
    """Resolve a design into a RunSpec and its configuration; ValueError naming what is wrong."""
    if mode not in MODES:
        raise ValueError(f"unknown allocation mode {mode!r}; choose one of {', '.join(MODES)}")
    preset = preset_for(info.kind, preset)
    fields: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
    common = dict(task=info.name, preset=preset, l_mlp=int(l_mlp), d_tree=int(d_tree), seed=seed, **fields)
    if mode == "neurons":
        spec = RunSpec(**common, budget=int(budget), d_m=int(d_m), d_brch=int(d_brch))
    elif mode == "memory":
        spec = RunSpec(**common, budget=int(budget), n_neurons=int(n_neurons), d_brch=int(d_brch))
    else:
        base = RunSpec(**common, n_neurons=int(n_neurons), d_m=int(d_m), d_brch=1)
        cfg = base.resolve_config(n_in=info.n_in, n_out=info.n_out, kind=info.kind)
        solved = solve_d_brch(int(budget), cfg.to_dict())
        spec = RunSpec(**common, n_neurons=int(n_neurons), d_m=int(d_m), d_brch=int(solved))
    cfg = spec.resolve_config(n_in=info.n_in, n_out=info.n_out, kind=info.kind)
    proto = spec.protocol(info.kind)
    if info.kind == "char":
        per_step = proto["batch_size"] * proto["seq_len"]
        train_tokens = proto["steps"] * per_step
        n_evals = proto["steps"] // proto["eval_every"] if proto["eval_every"] else 0
        eval_tokens = (proto["eval_chars"] or 5_000_000) * (n_evals + 1) + (proto["test_chars"] or 5_000_000)
    else:
        seq = info.seq_len or 1000
        per_epoch = proto["batches_per_epoch"] or 1
        train_tokens = proto["epochs"] * per_epoch * proto["batch_size"] * seq
        eval_tokens = ((proto["eval_samples"] or 2000) * 2 + (proto["test_samples"] or 2000)) * seq
    return Design(spec=spec, cfg=cfg, params=count_params(cfg), parts=breakdown(cfg), flops=flops_per_step(cfg),
                  train_tokens=int(train_tokens), eval_tokens=int(eval_tokens), protocol=proto)


def allocation_curve(design: Design, budget: int, points: int = 40) -> pl.DataFrame:
    """The iso-budget curve through a design: for d_m on a log grid, the largest N within `budget`
    at the design's k_c (columns d_m, n_neurons, k_e, k_c, params)."""
    base = {k: v for k, v in design.cfg.to_dict().items() if k not in ("d_m", "n_neurons", "d_mlp")}
    grid = sorted({int(round(v)) for v in np.geomspace(1, 400, points)})
    try:
        cfgs = iso_budget(budget, grid, **base)
    except ValueError:
        cfgs = []
    return pl.DataFrame(
        {
            "d_m": [c.d_m for c in cfgs],
            "n_neurons": [c.n_neurons for c in cfgs],
            "k_e": [c.k_e for c in cfgs],
            "k_c": [c.k_c for c in cfgs],
            "params": [count_params(c) for c in cfgs],
        },
        schema={"d_m": pl.Int64, "n_neurons": pl.Int64, "k_e": pl.Int64, "k_c": pl.Int64, "params": pl.Int64},
    )


def estimate_seconds(frame: pl.DataFrame, design: Design) -> tuple[float, str]:
    """Estimated wall time of a design: a start-up allowance plus training FLOPs (3 x forward) and
    evaluation FLOPs at the throughput of finished runs of similar FLOPs per step in the store, else at
    an assumed 2e9 FLOP/s."""
    work = 3.0 * design.flops * design.train_tokens + design.flops * design.eval_tokens
    rates = pl.DataFrame()
    if frame.height and {"flops_per_step", "tokens_seen", "wall_time_s"} <= set(frame.columns):
        done = frame.filter(
            (pl.col("status") == "done") & (pl.col("wall_time_s") > 0) & (pl.col("tokens_seen") > 0)
            & pl.col("flops_per_step").is_not_null()
        ).with_columns((3.0 * pl.col("flops_per_step") * pl.col("tokens_seen") / pl.col("wall_time_s")).alias("rate"))
        similar = done.filter(pl.col("flops_per_step").is_between(design.flops / 4, design.flops * 4))
        rates = similar if similar.height else done
    if rates.height:
        rate = float(rates["rate"].median())
        return STARTUP_S + work / rate, f"from {rates.height} finished run(s) in the store ({human(rate)} FLOP/s)"
    return STARTUP_S + work / DEFAULT_FLOPS_PER_S, "rough: an assumed 2 GFLOP/s CPU; no finished runs to go by"


def predicted_metric(fits: list[IsoFit], design: Design, x: str = "d_m") -> tuple[float, IsoFit] | None:
    """The current iso-budget fit's metric at the design's allocation, when a fit lies within 5% of
    its parameter count and the allocation lies inside the fitted range."""
    value = getattr(design.cfg, x, None) if x != "n_neurons" else design.cfg.n_neurons
    for fit in fits:
        if abs(fit.budget - design.params) <= 0.05 * design.params and value is not None:
            if fit.curve_x.min() <= value <= fit.curve_x.max():
                return float(np.interp(value, fit.curve_x, fit.curve_y)), fit
    return None


def parse_ints(text: str, what: str) -> list[int]:
    """'2, 4, 8' -> [2, 4, 8] (also accepts 1e5, 60k, 1.5M); ValueError naming `what`."""
    out = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(part[-1], 1.0)
        try:
            value = float(part[:-1] if scale != 1.0 else part) * scale
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number") from None
        if value <= 0 or value != value:
            raise ValueError(f"{what}: {part!r} must be positive")
        out.append(int(round(value)))
    if not out:
        raise ValueError(f"{what}: give at least one value")
    return sorted(set(out))
