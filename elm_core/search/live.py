"""A search on the queue: its definition on disk and its state rebuilt from the store and live progress.

A search is a sweep id ("search-<hex8>") whose runs are normal runs; its definition is one JSON file,
$ELMLAB_HOME/searches/<search id>.json (`SearchDef`): the task, the budgets, the arms (d_m values),
the seeds, the policy and the fields every run spec shares. A run's id is a function of the search,
budget, arm and seed (`run_id_for`), so a restarted controller recognises the runs it started, and a
second submission of the same (arm, seed) is refused by the store ("already exists").

`build_state` is the controller's contract with `elm_core.search.policy`: per budget group, every run
of the search with its arm (d_m), seed, status, step and signal curve. A finished run's curve is its
record's; a running run's is the live curve of its progress (the worker publishes it with every
progress write), else the stored one. A running run whose cancel was requested (`stopping` ids) is
rebuilt as "stopping", so it is not stopped twice.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elm_core.analysis.frame import metric_name_for_task
from elm_core.search.policy import GroupState, Policy, RunState, SearchState, Signal, choose_signal

SEARCHES_DIR = "searches"
SEARCH_ID_PREFIX = "search-"


@dataclass(frozen=True)
class SearchDef:
    """What `elmlab sweep search` created. `compute_limit`: CPU-hours per budget (None: no limit).
    `spec`: the fields every run spec shares (preset, steps, ...). `total_steps`, `eval_every` and
    `curve_every` come from the resolved protocol and fix the rungs and the signal."""

    search_id: str
    task: str
    budgets: tuple[float, ...]
    arms: tuple[int, ...]
    seeds: tuple[int, ...]
    total_steps: int
    eval_every: int | None
    curve_every: int
    eta: int = 3
    z: float = 1.96
    min_rung: int | None = None
    max_seeds: int | None = None
    compute_limit: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    finished_at: float | None = None

    @property
    def policy(self) -> Policy:
        return Policy(
            eta=self.eta, z=self.z, max_seeds=self.max_seeds, compute_limit=self.compute_limit, limit_unit="cpu_hours"
        )

    def signal(self) -> tuple[Signal, tuple[int, ...]]:
        return choose_signal(self.total_steps, self.eval_every, self.curve_every, self.eta, self.min_rung)

    def run_spec(self, budget: float, arm: float, seed: int) -> dict[str, Any]:
        """The spec of one run of the search (a normal run with the search's sweep id)."""
        return {
            **self.spec,
            "task": self.task,
            "budget": budget,
            "d_m": int(arm),
            "seed": seed,
            "sweep_id": self.search_id,
            "run_id": run_id_for(self.search_id, budget, arm, seed),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SearchDef:
        raw = json.loads(text)
        for key in ("budgets", "arms", "seeds"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def new_search_id() -> str:
    return f"{SEARCH_ID_PREFIX}{uuid.uuid4().hex[:8]}"


def run_id_for(search_id: str, budget: float, arm: float, seed: int) -> str:
    """The run id of (budget, arm, seed) in a search, e.g. search-1a2b3c4d-b50000-d8-s0."""
    return f"{search_id}-b{budget:g}-d{arm:g}-s{seed}"


def searches_path(home: Path) -> Path:
    return home / SEARCHES_DIR


def save(defn: SearchDef, home: Path) -> Path:
    """Write the definition atomically (write, then rename); returns its path."""
    folder = searches_path(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{defn.search_id}.json"
    tmp = path.with_suffix(f".tmp{uuid.uuid4().hex[:6]}")
    tmp.write_text(defn.to_json())
    tmp.replace(path)
    return path


def load(search_id: str, home: Path) -> SearchDef:
    path = searches_path(home) / f"{search_id}.json"
    if not path.is_file():
        raise ValueError(f"no search {search_id!r} (no {path})")
    return SearchDef.from_json(path.read_text())


def load_all(home: Path) -> list[SearchDef]:
    """Every search under `home`, oldest first; an unreadable file is skipped."""
    out = []
    for path in sorted(searches_path(home).glob(f"{SEARCH_ID_PREFIX}*.json")):
        try:
            out.append(SearchDef.from_json(path.read_text()))
        except (ValueError, TypeError, KeyError):
            continue
    return sorted(out, key=lambda d: d.created_at)


def mark_finished(defn: SearchDef, home: Path) -> SearchDef:
    from dataclasses import replace

    done = replace(defn, finished_at=time.time())
    save(done, home)
    return done


def _signal_points(points: Iterable[Any], signal: Signal) -> tuple[tuple[int, float], ...]:
    """(step, value) from stored curve points (dicts) or live ones ([step, train loss, valid])."""
    out: dict[int, float] = {}
    for p in points:
        if isinstance(p, Mapping):
            step, value = p.get("step"), p.get("valid_metric" if signal == "valid" else "train_loss")
        else:
            step, value = p[0], p[2 if signal == "valid" else 1]
        if step is not None and isinstance(value, (int, float)) and math.isfinite(value):
            out[int(step)] = float(value)
    return tuple(sorted(out.items()))


def _curve(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return json.loads(raw) if raw.strip() else []
    return list(raw)


def build_state(
    defn: SearchDef,
    rows: Iterable[Mapping[str, Any]],
    live: Mapping[str, Mapping[str, Any]],
    stopping: Iterable[str] = (),
) -> SearchState:
    """The search's `SearchState` from its runs' latest records (`rows`: store rows with `curve`),
    their live progress (`live`: run id -> progress with `curve`) and the running runs whose cancel
    was requested (`stopping`)."""
    signal, rungs = defn.signal()
    maximize = signal == "valid" and metric_name_for_task(defn.task) == "accuracy"  # a loss is minimised
    stopping = set(stopping)
    by_budget: dict[float, list[RunState]] = {b: [] for b in defn.budgets}
    for row in rows:
        budget = row.get("budget")
        if budget is None or float(budget) not in by_budget:
            continue
        p = live.get(row["run_id"]) or {}
        status = row["status"]
        curve = _signal_points(_curve(row.get("curve")), signal)
        step = int(row.get("steps") or 0)
        wall = float(row.get("wall_time_s") or 0.0)
        if status in ("queued", "running") and p:
            status = "running"
            merged = dict(curve)
            merged.update(_signal_points(p.get("curve") or [], signal))
            curve = tuple(sorted(merged.items()))
            step = max(step, int(p.get("step") or 0))
            wall = max(wall, float(p.get("elapsed_s") or 0.0))
        if status == "running" and row["run_id"] in stopping:
            status = "stopping"
        by_budget[float(budget)].append(
            RunState(
                run_id=row["run_id"],
                arm=float(row["d_m"]),
                seed=int(row.get("seed") or 0),
                status=status,
                step=step,
                curve=curve,
                wall_time_s=wall,
                reason=row.get("reason"),
            )
        )
    groups = tuple(
        GroupState(
            budget=b,
            arms=tuple(float(a) for a in sorted(defn.arms)),
            seeds=defn.seeds,
            total_steps=defn.total_steps,
            rungs=rungs,
            signal=signal,
            maximize=maximize,
            runs=tuple(by_budget[b]),
        )
        for b in defn.budgets
    )
    return SearchState(groups=groups, policy=defn.policy)
