"""Replay: what the search would have spent, and found, on a grid that was trained in full.

Per budget group of finished runs with learning curves (`iso_budget_groups`, as `elmlab fit iso`):
the arms are the distinct allocations, each arm's seeds its recorded runs. A discrete-event
simulation on `workers` parallel workers replays the search: a started run takes a free worker
(first come, first served) and progresses along its recorded curve in its recorded wall time;
`decide` is called whenever a run reaches a rung or ends, and a stopped run frees its worker there.

    compute_fraction = steps the search trained / steps of the grid
    wall_fraction    = the search's makespan / the grid's makespan (its runs in creation order on
                       the same number of workers, each taking its recorded wall time)

The grid optimum and its interval are `fit_iso` on all the group's runs, exactly as `elmlab fit
iso`; the search optimum is `fit_iso` on the runs the search let finish (plus, with `extrapolate`,
the runs stopped at the top rung or later, step k, at their extrapolated metric: the power law fitted to their
signal on [k / eta, k], predicted at the final step T, plus the median offset metric - final signal
of the group's finished runs; the warm-up part of a curve is no power law, and a curve stopped
earlier is too short to say where it goes). `inside`: the search optimum lies in the grid's
interval. `runs`: every run the search started, in order, with why (first seed, contender, reopened),
its end (done or cancelled), the steps it trained and the reason it was stopped: where the compute went.

The input must be a full grid (`check_full_grid`, a one-line ValueError otherwise): per budget,
every allocation with the same seeds, every run done with its metric and trained the same number
of steps. A search's own runs are not one (its sweep id starts with "search-", the runs it stopped
are cancelled at their rung, the runs it never started are missing): replayed, the runs it let
finish would stand for the grid and the search be compared with itself. To replay on a grid:

    elmlab sweep iso --budget 1e5 --d-m-values 2,4,8,16,32,64 --seeds 0,1 --preset cpu   # names its sweep id
    elmlab status --sweep SWEEP                    # wait until every run is done
    elmlab export --sweep SWEEP [--sweep SWEEP2] --format parquet --out grid.parquet    # with the curves
    elmlab sweep replay --input grid.parquet [--limit 0.4] [--workers N] [--json]

One `sweep iso` per budget (`--sweep` repeats for the export); a run that failed must be retried
(`elmlab retry RUN`) and finish before the export. The shipped smoke grid,
elm_core/demo_data/smoke_grid.parquet, is such a grid (three budgets, six d_m, two seeds each, the
`small` preset); the demo set is a search's own runs and is refused.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from elm_core.analysis.frame import done_runs, resolve_maximize
from elm_core.analysis.iso import IsoFit, fit_iso, iso_budget_groups
from elm_core.search.extrapolate import fit_curve
from elm_core.search.live import SEARCH_ID_PREFIX
from elm_core.search.policy import (
    PRUNED,
    GroupState,
    Policy,
    Progress,
    SearchState,
    Start,
    Stop,
    apply_actions,
    apply_events,
    choose_signal,
    decide,
    rung_value,
)


@dataclass(frozen=True)
class _Recorded:
    run_id: str
    arm: float
    seed: int
    steps: np.ndarray
    wall: np.ndarray
    signal: np.ndarray  # the signal at `steps` (nan where absent)
    total_steps: int
    wall_time_s: float


@dataclass(frozen=True)
class GroupReplay:
    budget: float
    task: str | None
    signal: str
    signal_note: str
    rungs: tuple[int, ...]
    compute_fraction: float
    wall_fraction: float
    search_optimum: float
    search_ci: tuple[float, float]
    search_interior: bool
    grid_optimum: float
    grid_ci: tuple[float, float]
    inside: bool
    n_runs: int
    finished: tuple[str, ...]
    stopped: dict[str, str] = field(default_factory=dict)
    extrapolated: tuple[str, ...] = ()
    note: str = ""
    runs: tuple[dict[str, Any], ...] = ()  # per run the search started: arm, seed, why, status, steps, reason

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        return {
            "budget": num(self.budget),
            "task": self.task,
            "signal": self.signal,
            "signal_note": self.signal_note,
            "rungs": list(self.rungs),
            "compute_fraction": num(self.compute_fraction),
            "wall_fraction": num(self.wall_fraction),
            "search_optimum": num(self.search_optimum),
            "search_ci": [num(v) for v in self.search_ci],
            "search_interior": self.search_interior,
            "grid_optimum": num(self.grid_optimum),
            "grid_ci": [num(v) for v in self.grid_ci],
            "inside": self.inside,
            "n_runs": self.n_runs,
            "finished": list(self.finished),
            "stopped": dict(self.stopped),
            "extrapolated": list(self.extrapolated),
            "note": self.note,
            "runs": [dict(r) for r in self.runs],
        }


def _points(curve: Any) -> list[dict[str, Any]]:
    if curve is None:
        return []
    if isinstance(curve, str):
        curve = json.loads(curve) if curve.strip() else []
    return list(curve)


def _spacing(steps: list[int]) -> int | None:
    """The regular spacing of a set of steps: gcd of the steps (validation at k * eval_every)."""
    steps = [s for s in steps if s > 0]
    return math.gcd(*steps) if steps else None


def _recorded(group: pl.DataFrame, x: str, signal: str) -> list[_Recorded]:
    out = []
    key = "valid_metric" if signal == "valid" else "train_loss"
    for row in group.iter_rows(named=True):
        pts = _points(row["curve"])
        out.append(
            _Recorded(
                run_id=str(row["run_id"]),
                arm=float(row[x]),
                seed=int(row.get("seed") or 0),
                steps=np.array([p["step"] for p in pts], dtype=int),
                wall=np.array([p["wall_time_s"] for p in pts], dtype=float),
                signal=np.array([np.nan if p.get(key) is None else p[key] for p in pts], dtype=float),
                total_steps=int(row["steps"]),
                wall_time_s=float(row["wall_time_s"] or (pts[-1]["wall_time_s"] if pts else 0.0)),
            )
        )
    return out


def _signal_for(group: pl.DataFrame, total: int, eta: int, min_rung: int | None) -> tuple[str, tuple[int, ...], str]:
    valid_steps: set[int] = set()
    diffs: list[int] = []
    for curve in group["curve"].to_list():
        pts = _points(curve)
        valid_steps |= {p["step"] for p in pts if p.get("valid_metric") is not None}
        diffs += list(np.diff([p["step"] for p in pts]).astype(int))
    if not diffs:
        raise ValueError("the runs have no learning curves; export them with curves (elmlab export)")
    curve_every = int(np.median(diffs))
    eval_every = _spacing(sorted(valid_steps))
    signal, rungs = choose_signal(total, eval_every, curve_every, eta, min_rung)
    if signal == "valid":
        note = f"validation metric (every {eval_every} steps)"
    elif eval_every:
        note = f"training loss: validation every {eval_every} steps is too sparse for the rungs"
    else:
        note = "training loss: the curves hold no validation points"
    return signal, rungs, note


def _makespan(durations: list[float], workers: int) -> float:
    """List scheduling: each duration in turn on the worker that frees first."""
    free = [0.0] * workers
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


Outcome = dict[str, tuple[str, int, float, str | None]]  # run_id -> (status, steps, wall seconds, reason)


def _simulate(
    recs: list[_Recorded], g: GroupState, policy: Policy, workers: int
) -> tuple[Outcome, float, dict[str, str]]:
    """The outcome of every run the search started, the time the last one ended and why each was
    started (run id -> `Start.why`), in the order they were started."""
    by_key = {(r.arm, r.seed): r for r in recs}
    by_id = {r.run_id: r for r in recs}
    state = SearchState((g,), policy)
    queue: list[str] = []
    running: dict[str, float] = {}  # run_id -> start time
    result: Outcome = {}
    why: dict[str, str] = {}
    t = 0.0

    def act(events: list[Progress]) -> None:
        nonlocal state
        state = apply_events(state, events)
        actions = decide(state)
        ids = {a: by_key[(a.arm, a.seed)].run_id for a in actions if isinstance(a, Start)}
        state = apply_actions(state, actions, ids)
        for a in actions:
            if isinstance(a, Start):
                queue.append(ids[a])
                why[ids[a]] = a.why
            elif isinstance(a, Stop):
                if a.run_id in running:
                    result[a.run_id] = ("cancelled", a.step, t - running.pop(a.run_id), a.reason)
                elif a.run_id in queue:
                    queue.remove(a.run_id)
                    result[a.run_id] = ("cancelled", 0, 0.0, a.reason)
        state = _settle(state)

    def fill() -> list[Progress]:
        started = []
        while queue and len(running) < workers:
            rid = queue.pop(0)
            running[rid] = t
            started.append(Progress(rid, 0, "running"))
        return started

    def progress(rid: str) -> Progress:
        rec = by_id[rid]
        elapsed = t - running[rid]
        if elapsed >= rec.wall_time_s - 1e-9:
            return Progress(rid, rec.total_steps, "done", _pts(rec, len(rec.steps)), rec.wall_time_s)
        n = int(np.searchsorted(rec.wall, elapsed + 1e-9, side="right"))
        step = int(rec.steps[n - 1]) if n else 0
        return Progress(rid, step, "running", _pts(rec, n), elapsed)

    act([])
    while True:
        act(fill())
        if queue and len(running) < workers:
            continue
        if not running:
            break
        nxt = math.inf
        for rid, t0 in running.items():
            rec = by_id[rid]
            done_at = t0 + rec.wall_time_s
            later = [t0 + float(rec.wall[np.searchsorted(rec.steps, r)]) for r in g.rungs if r <= rec.steps[-1]]
            nxt = min([nxt, done_at, *[v for v in later if v > t + 1e-9]])
        t = nxt
        events = [progress(rid) for rid in running]
        for ev in events:
            if ev.status == "done":
                result[ev.run_id] = ("done", by_id[ev.run_id].total_steps, t - running.pop(ev.run_id), None)
        act(events)
    return result, t, why


def _settle(state: SearchState) -> SearchState:
    """A replayed stop takes effect at once: 'stopping' runs are 'cancelled'."""
    groups = tuple(
        replace(g, runs=tuple(replace(r, status="cancelled") if r.status == "stopping" else r for r in g.runs))
        for g in state.groups
    )
    return replace(state, groups=groups)


def _pts(rec: _Recorded, n: int) -> tuple[tuple[int, float], ...]:
    return tuple((int(s), float(v)) for s, v in zip(rec.steps[:n], rec.signal[:n], strict=True) if np.isfinite(v))


def replay(
    df: pl.DataFrame,
    policy: Policy | None = None,
    *,
    x: str = "d_m",
    metric: str = "test_metric",
    maximize: bool | None = None,
    workers: int = 1,
    limit_fraction: float | None = None,
    extrapolate: bool = False,
    min_rung: int | None = None,
    tol: float = 0.05,
    n_boot: int = 200,
    seed: int = 0,
) -> list[GroupReplay]:
    """Replay the search `policy` on every iso-budget group of `df` (done runs with curves) that
    has at least 3 distinct allocations (module docstring). `limit_fraction` sets the policy's
    compute limit of each group to that fraction of the group's grid (steps, or CPU-hours)."""
    policy = policy or Policy()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if limit_fraction is not None and not limit_fraction > 0:
        raise ValueError(f"the compute limit must be a positive fraction of the grid, not {limit_fraction}")
    if "curve" not in df.columns:
        raise ValueError("the runs have no curve column; export them with their curves (elmlab export)")
    maximize = resolve_maximize(df, metric, maximize)
    for name in (x, "steps"):
        if name not in df.columns:
            raise ValueError(f"column {name!r} not in the runs (columns: {', '.join(df.columns)})")
    every = iso_budget_groups(df.filter(pl.col(x).is_not_null()), tol).filter(pl.col("iso_budget").is_not_null())
    out = []
    keys = ["task", "iso_budget"] if "task" in every.columns else ["iso_budget"]
    for _, whole in every.sort(keys).group_by(keys, maintain_order=True):
        if whole[x].n_unique() < 3:
            continue
        group = done_runs(whole, metric, [x, "steps"])
        check_full_grid(whole, group, x, metric)
        pol = policy
        if limit_fraction is not None:
            grid = group["steps"].sum() if policy.limit_unit == "steps" else group["wall_time_s"].sum() / 3600.0
            pol = replace(policy, compute_limit=limit_fraction * float(grid))
        out.append(_replay_group(group, pol, x, metric, maximize, workers, extrapolate, min_rung, n_boot, seed))
    if not out:
        raise ValueError(f"no budget group with 3 or more distinct values of {x} among the done runs")
    return out


def check_full_grid(whole: pl.DataFrame, done: pl.DataFrame, x: str = "d_m", metric: str = "test_metric") -> None:
    """ValueError, one line, unless the budget group `whole` (all its runs) is a full grid: every run
    done with its metric (`done`), all trained the same number of steps, every allocation with the
    same seeds. A search's own runs are one only where it trained every allocation and seed to the end
    (the runs it stopped are cancelled at their rung)."""
    problem = _not_a_full_grid(whole, done, x, metric)
    if problem is None:
        return
    budget = f"budget {float(whole['iso_budget'][0]):,.0f}"
    hint = "the replay needs a full grid, every allocation and seed trained to the end (an iso sweep's runs)"
    sweeps = whole["sweep_id"].drop_nulls().unique().to_list() if "sweep_id" in whole.columns else []
    searches = sorted(s for s in sweeps if s.startswith(SEARCH_ID_PREFIX))
    of_a_search = f"these are the runs of a search ({', '.join(searches)}): " if searches else ""
    raise ValueError(f"{budget}: {of_a_search}{problem}; {hint}")


def _not_a_full_grid(whole: pl.DataFrame, done: pl.DataFrame, x: str, metric: str) -> str | None:
    if done.height < whole.height:
        missing = whole.join(done.select("run_id"), on="run_id", how="anti")
        reasons = missing["reason"].cast(pl.String).fill_null("") if "reason" in missing.columns else pl.Series([""])
        if reasons.str.starts_with(PRUNED).any():
            what = "stopped by a search: pruned"
        else:
            status = missing["status"].fill_null("?").to_list() if "status" in missing.columns else []
            counts = Counter(f"done without {metric}" if st == "done" else st for st in status)
            what = ", ".join(f"{n} {st}" for st, n in sorted(counts.items())) or f"no {metric}"
        return f"{missing.height} of {whole.height} runs did not finish ({what})"
    steps = done["steps"].unique().sort().to_list()
    if len(steps) > 1:
        return f"the runs trained different numbers of steps ({', '.join(map(str, steps))})"
    if "seed" not in done.columns:
        return None
    seeds = {a: tuple(sorted(done.filter(pl.col(x) == a)["seed"].to_list())) for a in done[x].unique().sort()}
    if len(set(seeds.values())) > 1:
        arms = "; ".join(f"{x} {a:g}: seeds {', '.join(map(str, s))}" for a, s in seeds.items())
        return f"the allocations have different seeds ({arms})"
    return None


def _replay_group(
    group: pl.DataFrame,
    policy: Policy,
    x: str,
    metric: str,
    maximize: bool,
    workers: int,
    extrapolate: bool,
    min_rung: int | None,
    n_boot: int,
    seed: int,
) -> GroupReplay:
    budget = float(group["iso_budget"][0])
    total = int(group["steps"].max())
    signal, rungs, note = _signal_for(group, total, policy.eta, min_rung)
    group = group.sort("created_at") if "created_at" in group.columns else group
    recs = _recorded(group, x, signal)
    arms = tuple(sorted({r.arm for r in recs}))
    seeds = tuple(sorted({r.seed for r in recs}))  # a full grid: every arm has them all
    sig_max = maximize and signal == "valid"
    g = GroupState(budget, arms, seeds, total, rungs, signal, sig_max)  # type: ignore[arg-type]
    result, search_wall, why_started = _simulate(recs, g, policy, workers)
    by_id = {r.run_id: r for r in recs}
    runs = tuple(
        {
            "run_id": rid,
            "arm": by_id[rid].arm,
            "seed": by_id[rid].seed,
            "why": w,
            "status": result[rid][0],
            "steps": result[rid][1],
            "reason": result[rid][3],
        }
        for rid, w in why_started.items()
    )

    grid_steps = float(sum(r.total_steps for r in recs))
    grid_wall = _makespan([r.wall_time_s for r in recs], workers)
    fit_kw = dict(x=x, metric=metric, maximize=maximize, budget=budget, n_boot=n_boot, seed=seed)
    grid = fit_iso(group, **fit_kw)  # type: ignore[arg-type]
    finished = tuple(rid for rid, v in result.items() if v[0] == "done")
    stopped = {rid: v[3] or "" for rid, v in result.items() if v[0] == "cancelled"}
    rows = group.filter(pl.col("run_id").is_in(list(finished)))
    extra: tuple[str, ...] = ()
    if extrapolate and stopped:
        rows, extra = _with_extrapolated(
            rows, group, recs, result, total, sig_max, metric, policy.eta, max(rungs, default=total), seed
        )
    search: IsoFit | None = None
    why = ""
    try:
        search = fit_iso(rows, **fit_kw)  # type: ignore[arg-type]
    except ValueError as exc:
        why = f"no search optimum: {exc}"
    lo, hi = grid.ci
    s_opt = search.optimum if search else float("nan")
    return GroupReplay(
        budget=budget,
        task=str(group["task"][0]) if "task" in group.columns else None,
        signal=signal,
        signal_note=note,
        rungs=rungs,
        compute_fraction=sum(v[1] for v in result.values()) / grid_steps,
        wall_fraction=search_wall / grid_wall if grid_wall > 0 else float("nan"),
        search_optimum=s_opt,
        search_ci=search.ci if search else (float("nan"), float("nan")),
        search_interior=bool(search and search.interior),
        grid_optimum=grid.optimum,
        grid_ci=grid.ci,
        inside=bool(np.isfinite(s_opt) and lo <= s_opt <= hi),
        n_runs=len(recs),
        finished=finished,
        stopped=stopped,
        extrapolated=extra,
        note="; ".join(n for n in (why, grid.note) if n),
        runs=runs,
    )


def _with_extrapolated(
    rows: pl.DataFrame,
    group: pl.DataFrame,
    recs: list[_Recorded],
    result: Outcome,
    total: int,
    sig_max: bool,
    metric: str,
    eta: int,
    top: int,
    seed: int,
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    by_id = {r.run_id: r for r in recs}
    offsets = []
    for rid in rows["run_id"].to_list():
        rec = by_id[rid]
        end = rung_value(_pts(rec, len(rec.steps)), total)
        m = rows.filter(pl.col("run_id") == rid)[metric][0]
        if end is not None and m is not None:
            offsets.append(float(m) - end[0])
    if not offsets:
        return rows, ()
    offset = float(np.median(offsets))
    extra_rows, names = [], []
    for rid, (status, step, _, _) in result.items():
        if status != "cancelled" or step < top:
            continue
        rec = by_id[rid]
        pts = [p for p in _pts(rec, int(np.searchsorted(rec.steps, step, side="right"))) if p[0] >= step / eta]
        fit = fit_curve([p[0] for p in pts], [p[1] for p in pts], total, maximize=sig_max, seed=seed)
        if fit.ok:
            row = group.filter(pl.col("run_id") == rid)
            extra_rows.append(row.with_columns(pl.lit(fit.final + offset).alias(metric)))
            names.append(rid)
    if not extra_rows:
        return rows, ()
    return pl.concat([rows, *extra_rows], how="vertical_relaxed"), tuple(names)
