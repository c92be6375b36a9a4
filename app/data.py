"""Design arithmetic: a task, a budget and an allocation resolved into the exact configuration that
queues, its cost and its estimated run time (no Streamlit here; the Design page and the tests call it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from app.fits import NoFit
from app.text import human
from elm_core.analysis import IsoFit
from elm_core.budget import breakdown, count_params, d_brch_for_budget, flops_per_step, iso_budget
from elm_core.config import ELMConfig
from elm_core.spec import DEFAULT_PRESET, PRESETS, RunSpec

# Vocabulary sizes used for design when a task's files are absent (the reference's enwik8 has 204).
FALLBACK_DIMS: dict[str, tuple[int, int]] = {"enwik8": (204, 204), "shd": (700, 20), "shd-adding": (700, 19)}
DEFAULT_FLOPS_PER_S = 2e9  # an assumed CPU training throughput when the store has nothing to go by
STARTUP_S = 5.0  # a worker's start of a run: data, model, first steps (added to every estimate)


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
        solved = d_brch_for_budget(int(budget), cfg)
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


def predicted_metric(fits: Sequence[IsoFit] | NoFit, design: Design, x: str = "d_m") -> tuple[float, IsoFit] | None:
    """The current iso-budget fit's metric at the design's allocation, when a fit lies within 5% of
    its parameter count and the allocation lies inside the fitted range (None otherwise)."""
    value = getattr(design.cfg, x, None) if x != "n_neurons" else design.cfg.n_neurons
    for fit in [] if isinstance(fits, NoFit) else fits:
        if abs(fit.budget - design.params) <= 0.05 * design.params and value is not None:
            if fit.curve_x.min() <= value <= fit.curve_x.max():
                return float(np.interp(value, fit.curve_x, fit.curve_y)), fit
    return None


CONFIRM_SECONDS = 3600.0  # queueing more compute than this asks first
CONFIRM_BUDGET_FACTOR = 10.0  # and so does a budget this many times the largest finished one


def ladder_default(budget: int, low: int = 1_000, high: int = 1_000_000_000) -> list[int]:
    """The budget ladder offered for `budget`: 1/4, 1/2, 1, 2 and 4 times it, kept inside the budget
    box's range [low, high] (rounded to 3 significant digits, duplicates dropped)."""
    out = []
    for f in (0.25, 0.5, 1, 2, 4):
        b = budget * f
        if low <= b <= high:
            out.append(int(float(f"{b:.3g}")))
    return list(dict.fromkeys(out)) or [int(min(max(budget, low), high))]


def confirmation_reasons(seconds: float, budget: float, largest_done: float | None) -> list[str]:
    """Why queueing this needs a second click: more than CONFIRM_SECONDS of estimated compute, or a
    budget over CONFIRM_BUDGET_FACTOR times the largest finished run of the task ([] when neither)."""
    from app.text import duration, human

    reasons = []
    if seconds > CONFIRM_SECONDS:
        reasons.append(f"it needs about {duration(seconds)} of compute")
    if largest_done and budget > CONFIRM_BUDGET_FACTOR * largest_done:
        reasons.append(f"a budget of {human(budget)} is {budget / largest_done:.0f} times the largest finished run "
                       f"({human(largest_done)})")
    return reasons
