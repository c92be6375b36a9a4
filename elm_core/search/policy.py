"""Multi-fidelity search over the allocations of an iso-budget grid: the decision logic, pure.

A full grid trains every allocation (arm, e.g. d_m) of a budget to the end. The search starts every
arm too, but stops the ones that are visibly out of the race at rungs, ASHA-style (Li et al. 2020,
arXiv 1810.05934), and spends what it saves on more seeds of the arms near the optimum.

Rungs (`rung_schedule`): r_k = T / eta^k for k = 1, 2, ... down to the minimum rung, each rounded
down to a step where the signal exists (a multiple of `every`). The default minimum rung is T / eta
(one rung): early rungs rank arms by how fast they start, not where they end. On the smoke grid
(elm_core/demo_data/smoke_grid.parquet, 400 steps) the training loss at T / 9 = 44 steps ranks
d_m = 16 first at 50k and 200k parameters, where it ends 4th; by T / 3 the order is the final one;
a 4-worker replay with a rung at 44 stopped d_m = 4, the optimum's arm at 200k. Longer presets can
afford lower rungs (`min_rung`). The signal is the validation metric when its steps carry every
rung and it has at least three points at or before the lowest rung (a rung value's error needs a
line through three points; with fewer an arm's interval is unknown and nothing can be stopped),
else the training loss (`choose_signal`).

The value of a run at rung r: a straight line fitted to its signal points in the window
r (1 - 1/eta) < s <= r (and at least its last 3 points at or before r), read at r, with the
standard error of that prediction,
    se_run^2 = s_res^2 (1/n + (r - s_mean)^2 / S_ss);
with fewer than 3 points the last point at or before r, measurement error unknown.
The value of an arm at r: the mean over its runs that reached r, with
    se_arm^2 = mean(se_run^2) / n_a + s_seed^2 / n_a,
s_seed^2 the seed-to-seed variance pooled over the arms that have two or more runs at r. Without any
noise estimate an arm's interval is unknown and it is never stopped (nothing says it is worse).

The stopping rule, asynchronous as in ASHA: an arm with a running run is judged at the highest rung
any of its runs has reached, against the arms that have reached that rung so far (nobody waits for
the slower ones). It is stopped when (a) it ranks outside the best ceil(n / eta) of the n arms
there, (b) its interval v +- z se lies wholly on the worse side of the best arm's, (c) it is not one
of the three allocations around the best there (the best and its neighbours on the allocation axis:
the iso fit needs a bracket), and (d) at least three arms have reached the rung and at least three
arms stay unstopped. A stopped arm's runs are cancelled with the reason "pruned at step k: ..." and
it gets no further seeds.

Seeds: every arm starts with its first seed (the grid's cover) unless the compute limit leaves no
room for it (below). Further seeds
go to the contenders near the optimum (`promoted`), judged at the top rung:
  - none before at least three arms have reached the top rung (or finished): a ranking of one or
    two arms says nothing, and with one worker the first arm to finish would always be "the best";
  - the contenders are the arms there that are not stopped; floor(m / eta) of the m contenders (at
    least one) get seeds, ASHA's promotion quota: a grid padded with hopeless arms earns its best
    ones no extra seeds, and each place costs a full run;
  - an arm that already has a later seed keeps its place (the places do not churn as the ranking
    moves: each arm that gets a seed costs a full run), the free places go to the best others;
  - an arm whose interval at the top rung does not overlap the best arm's gets no seed: it is
    not a contender for the optimum.
An arm so chosen gets its next seed when all its runs are done or past the top rung, best first, up
to `max_seeds`. Without a limit every chosen arm gets all its seeds.

Order: the first seeds are submitted from the middle of the allocation axis outwards, alternating
sides (`submission_order`): the first runs reach the rung before anything can be judged and train
to the end, so they had better be the likely contenders, and two workers should not both sit on
the extremes (small d_m is the slowest arm).

The compute limit (per budget group; groups are independent) holds for every new run, first seeds
included: a run is admitted only when the steps (or CPU-hours) spent, plus what every active run
still needs counted as running to the end, plus the new run's full length fit under the limit.
Nothing admitted can then push the total past it; a stop only frees room, which later runs may
take. Order of admission: the first seeds (in submission order), then reopened arms, then
promoted seeds. Under a tight limit some arms therefore never start (the extremes, last in the
order); what was spent never exceeds the limit. In CPU-hours the cost of a run is the median
seconds per step so far times its steps: before any run has progressed it is unknown, so one run
starts alone and the others are priced from its first steps (one decision later: the other
workers wait a few seconds; admitting every first seed blind let a 40% limit spend 69%).

Reopening (`reopened`): a rung ranks arms by how fast they start, and a slow starter can end better
than the arm that led at the rung. When the race is over (every arm still in it that has an active
run has finished one) and the best finished arm has a neighbour on the allocation axis that was
stopped and has no finished run, that neighbour gets its next seed, trained to the end and never
judged again: the iso fit needs finished runs on both sides of its optimum. Reopening comes before
seed promotion and counts against the compute limit like any new run.

Contract for a controller. Rebuild a `SearchState` from the store at any time: per run its arm,
seed, status, step and signal curve; a cancelled run whose reason starts with "pruned at step"
counts as stopped. Call `decide(state, events)`: it folds the progress events into the state
(`apply_events`) and returns the actions for the result, in a fixed order; it never mutates its
input. Carry out the actions (cooperative cancel for `Stop`, a queued run for `Start`) and record
them with `apply_actions`. `decide` on the updated state, or on one rebuilt from the store after a
restart, repeats none of them: a stopped run (status "stopping" or pruned) is not stopped again and
an (arm, seed) that has a run is not started again. A run whose cancel is requested but not yet
recorded (the store still says running) should be rebuilt as "stopping"; rebuilt as "running" it is
asked to stop once more, which a cooperative cancel absorbs. The store's recorded reason must keep
the "pruned at step k: ..." prefix for a restarted controller to know the arm was stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from elm_core.records import PRUNED

Signal = Literal["valid", "train"]
ACTIVE = frozenset({"queued", "running"})
TERMINAL = frozenset({"done", "failed", "cancelled"})
MIN_ARMS = 3  # an iso fit needs three allocations; a rung with fewer arms stops nobody
MIN_POINTS = 3  # a rung value's error needs a line through three signal points


def rung_schedule(total_steps: int, every: int, eta: int = 3, min_rung: int | None = None) -> tuple[int, ...]:
    """Rungs r_k = total / eta^k (k >= 1) down to `min_rung` (default total / eta), rounded down to
    multiples of `every`; distinct, ascending, 0 < r < total."""
    if eta < 2:
        raise ValueError(f"eta must be at least 2, not {eta}")
    if total_steps < 1 or every < 1:
        raise ValueError(f"total steps and the signal's spacing must be positive ({total_steps}, {every})")
    floor = max(1.0, total_steps / eta if min_rung is None else float(min_rung))
    rungs: set[int] = set()
    k = 1
    while total_steps / eta**k >= floor:
        r = int(total_steps / eta**k // every) * every
        if 0 < r < total_steps:
            rungs.add(r)
        k += 1
    return tuple(sorted(rungs))


def choose_signal(
    total_steps: int, eval_every: int | None, curve_every: int, eta: int = 3, min_rung: int | None = None
) -> tuple[Signal, tuple[int, ...]]:
    """('valid', rungs) when validation every `eval_every` steps carries as many rungs as the training
    curve (every `curve_every` steps) does, else ('train', the training curve's rungs)."""
    train = rung_schedule(total_steps, curve_every, eta, min_rung)
    if eval_every:
        valid = rung_schedule(total_steps, eval_every, eta, min_rung)
        if valid and len(valid) == len(train) and valid[0] >= MIN_POINTS * eval_every:
            return "valid", valid
    return "train", train


# --------------------------------------------------------------------------------------------------
# State, events, actions


@dataclass(frozen=True)
class RunState:
    """One run of a search. `curve`: (step, signal value) points, ascending in step."""

    run_id: str
    arm: float
    seed: int
    status: str = "queued"  # queued, running, stopping, done, failed, cancelled
    step: int = 0
    curve: tuple[tuple[int, float], ...] = ()
    wall_time_s: float = 0.0
    reason: str | None = None

    @property
    def pruned(self) -> bool:
        return self.status == "stopping" or (self.status == "cancelled" and (self.reason or "").startswith(PRUNED))


@dataclass(frozen=True)
class GroupState:
    """One budget: its arms (every allocation of the grid, ascending), the seeds an arm may get (in
    order), the preset's length, the rungs, the signal and the runs so far."""

    budget: float
    arms: tuple[float, ...]
    seeds: tuple[int, ...]
    total_steps: int
    rungs: tuple[int, ...]
    signal: Signal = "train"
    maximize: bool = False
    runs: tuple[RunState, ...] = ()


@dataclass(frozen=True)
class Policy:
    """eta: keep the best 1/eta at a rung; z: interval half-width in standard errors; max_seeds:
    seeds per arm (None: all of the group's); compute_limit: per budget group, in `limit_unit`."""

    eta: int = 3
    z: float = 1.96
    max_seeds: int | None = None
    compute_limit: float | None = None
    limit_unit: Literal["steps", "cpu_hours"] = "steps"
    protect_bracket: bool = True


@dataclass(frozen=True)
class SearchState:
    groups: tuple[GroupState, ...]
    policy: Policy = Policy()


@dataclass(frozen=True)
class Progress:
    """What a controller learned about a run: its step, status, new curve points (merged by step)."""

    run_id: str
    step: int
    status: str = "running"
    curve: tuple[tuple[int, float], ...] = ()
    wall_time_s: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Stop:
    budget: float
    run_id: str
    step: int
    reason: str


@dataclass(frozen=True)
class Start:
    """`why`: what the run is for (the first seed, a contender's seed, a reopened arm); not part of
    its identity."""

    budget: float
    arm: float
    seed: int
    why: str = field(default="", compare=False)


Action = Stop | Start


def _merge(run: RunState, ev: Progress) -> RunState:
    if run.status in TERMINAL:
        return run
    status = ev.status if ev.status in TERMINAL or run.status != "stopping" else run.status
    points = dict(run.curve)
    points.update(ev.curve)
    return replace(
        run,
        status=status,
        step=max(run.step, ev.step),
        curve=tuple(sorted(points.items())),
        wall_time_s=max(run.wall_time_s, ev.wall_time_s or 0.0),
        reason=ev.reason if ev.reason is not None else run.reason,
    )


def apply_events(state: SearchState, events: Iterable[Progress]) -> SearchState:
    """The state with the progress folded in; terminal runs stay as they are; unknown ids are ignored."""
    by_id: dict[str, list[Progress]] = {}
    for ev in events:
        by_id.setdefault(ev.run_id, []).append(ev)
    if not by_id:
        return state
    groups = []
    for g in state.groups:
        runs = []
        for run in g.runs:
            for ev in by_id.get(run.run_id, ()):
                run = _merge(run, ev)
            runs.append(run)
        groups.append(replace(g, runs=tuple(runs)))
    return replace(state, groups=tuple(groups))


def start_id(action: Start) -> str:
    """The run id `apply_actions` gives a started run unless told another."""
    return f"b{action.budget:g}-a{action.arm:g}-s{action.seed}"


def apply_actions(state: SearchState, actions: Sequence[Action], ids: Mapping[Start, str] | None = None) -> SearchState:
    """The state after the actions were carried out: a stopped running run is 'stopping' (a queued
    one 'cancelled'), a started one is queued under `ids[action]` (default `start_id`)."""
    groups = []
    for g in state.groups:
        stops = {a.run_id: a for a in actions if isinstance(a, Stop) and a.budget == g.budget}
        runs = [
            replace(r, status="stopping" if r.status == "running" else "cancelled", reason=stops[r.run_id].reason)
            if r.run_id in stops and r.status in ACTIVE
            else r
            for r in g.runs
        ]
        have = {(r.arm, r.seed) for r in runs}
        for a in actions:
            if isinstance(a, Start) and a.budget == g.budget and (a.arm, a.seed) not in have:
                runs.append(RunState(run_id=(ids or {}).get(a, start_id(a)), arm=a.arm, seed=a.seed))
                have.add((a.arm, a.seed))
        groups.append(replace(g, runs=tuple(runs)))
    return replace(state, groups=tuple(groups))


# --------------------------------------------------------------------------------------------------
# Rung values and the decision


def rung_value(curve: Sequence[tuple[int, float]], rung: int, eta: int = 3) -> tuple[float, float] | None:
    """(value, standard error) of a curve at `rung` (module docstring); None when it has no point at
    or before the rung; the error is nan with fewer than 3 points in the window."""
    steps = np.array([p[0] for p in curve if p[0] <= rung], dtype=float)
    if steps.size == 0:
        return None
    vals = np.array([p[1] for p in curve if p[0] <= rung], dtype=float)
    window = (steps > rung * (1.0 - 1.0 / eta)) | (np.arange(steps.size) >= steps.size - 3)
    s, y = steps[window], vals[window]
    if s.size < 3 or np.ptp(s) == 0:
        return float(vals[-1]), float("nan")
    slope, icpt = np.polyfit(s, y, 1)
    resid = y - (icpt + slope * s)
    s_res2 = float(resid @ resid) / (s.size - 2)
    sxx = float(np.sum((s - s.mean()) ** 2))
    se = math.sqrt(s_res2 * (1.0 / s.size + (rung - s.mean()) ** 2 / sxx))
    return float(icpt + slope * rung), se


def arm_values(group: GroupState, rung: int, eta: int = 3) -> dict[float, tuple[float, float]]:
    """arm -> (value, se) at `rung` in loss orientation (negated when the signal is maximised), over
    the runs that reached the rung, whatever their status now."""
    per_arm: dict[float, list[tuple[float, float]]] = {}
    for run in group.runs:
        if run.step >= rung:
            rv = rung_value(run.curve, rung, eta)
            if rv is not None:
                per_arm.setdefault(run.arm, []).append(rv)
    sign = -1.0 if group.maximize else 1.0
    ss, dof = 0.0, 0
    for vs in per_arm.values():
        if len(vs) >= 2:
            v = np.array([x[0] for x in vs])
            ss, dof = ss + float(np.sum((v - v.mean()) ** 2)), dof + v.size - 1
    seed_var = ss / dof if dof else float("nan")
    out = {}
    for arm, vs in per_arm.items():
        n = len(vs)
        meas = [x[1] ** 2 for x in vs if np.isfinite(x[1])]
        parts = ([sum(meas) / len(meas) / n] if meas else []) + ([seed_var / n] if dof else [])
        out[arm] = (sign * float(np.mean([x[0] for x in vs])), math.sqrt(sum(parts)) if parts else float("nan"))
    return out


def submission_order(arms: Sequence[float]) -> list[float]:
    """The arms from the middle of the allocation axis outwards, alternating sides: (2, 4, 8, 16, 32,
    64) -> 8, 16, 4, 32, 2, 64. A grid is laid out to bracket the optimum, so its middle is the
    likeliest place for it: the first runs, which reach the rung before anything can be judged and so
    train to the end, are the likely contenders, and two workers do not both sit on the extremes (the
    slowest or the weakest arms) while nobody can be stopped."""
    arms = list(arms)
    mid = (len(arms) - 1) // 2
    order = [mid]
    for k in range(1, len(arms)):
        for i in (mid + k, mid - k):
            if 0 <= i < len(arms):
                order.append(i)
    return [arms[i] for i in order]


def _bracket(arms: Sequence[float], best: float) -> set[float]:
    i = list(arms).index(best)
    lo = min(max(i - 1, 0), max(len(arms) - 3, 0))
    return set(arms[lo : lo + 3])


def _overlaps(value: tuple[float, float], best: tuple[float, float], z: float) -> bool:
    """Whether the interval v +- z se reaches the best arm's (loss orientation); an unknown one does."""
    (v, se), (vb, seb) = value, best
    return not (np.isfinite(se) and np.isfinite(seb)) or v - z * se <= vb + z * seb


def judge(
    group: GroupState, arm: float, rung: int, values: Mapping[float, tuple[float, float]], policy: Policy
) -> str | None:
    """Why `arm` should stop at `rung` (module docstring), or None when it stays."""
    order = sorted(values, key=lambda a: values[a][0])
    if len(order) < MIN_ARMS:
        return None
    keep = math.ceil(len(order) / policy.eta)
    rank = order.index(arm)
    best = order[0]
    if rank < keep or (policy.protect_bracket and arm in _bracket(group.arms, best)):
        return None
    if _overlaps(values[arm], values[best], policy.z):
        return None
    (v, se), (vb, seb) = values[arm], values[best]
    sign = -1.0 if group.maximize else 1.0
    return (
        f"rank {rank + 1} of {len(order)} at rung {rung} ({group.signal} {sign * v:.4g} +- {policy.z * se:.2g}, "
        f"best {best:g} at {sign * vb:.4g} +- {policy.z * seb:.2g})"
    )


def _rung_of(group: GroupState, step: int) -> int | None:
    reached = [r for r in group.rungs if r <= step]
    return reached[-1] if reached else None


def _cost(run: RunState, total: int, unit: str, rate: float) -> float:
    """Spent plus still needed if the run goes to the end (steps, or CPU-hours at `rate` s/step)."""
    if unit == "steps":
        return float(total if run.status in ACTIVE or run.status == "stopping" else run.step)
    if run.status in TERMINAL:
        return run.wall_time_s / 3600.0
    return (run.wall_time_s + (total - run.step) * rate) / 3600.0


RungValues = dict[int, dict[float, tuple[float, float]]]  # rung -> arm -> (value, se)


def _stops(g: GroupState, policy: Policy, values: RungValues) -> list[Stop]:
    """Stop every active run of an arm that `judge` stops now or that was stopped before."""
    again = _reopened_arms(g)
    pruned = {r.arm for r in g.runs if r.pruned} - again
    why: dict[float, str] = {}
    alive = len(set(g.arms) - pruned)
    for arm in sorted({r.arm for r in g.runs if r.status == "running"} - pruned - again):
        rung = _rung_of(g, max(r.step for r in g.runs if r.arm == arm))
        reason = judge(g, arm, rung, values[rung], policy) if rung is not None else None
        if reason and alive - len(why) > MIN_ARMS:
            why[arm] = reason
    return [
        Stop(g.budget, r.run_id, r.step, f"{PRUNED} {r.step}: {why.get(r.arm, 'its allocation was stopped')}")
        for r in g.runs
        if r.status in ACTIVE and (r.arm in pruned or r.arm in why)
    ]


def _reopened_arms(g: GroupState) -> set[float]:
    """Arms stopped once and started again (a run with a later seed than a pruned one): never judged again."""
    first_pruned = {}
    for r in g.runs:
        if r.pruned:
            first_pruned[r.arm] = min(first_pruned.get(r.arm, r.seed), r.seed)
    return {r.arm for r in g.runs if r.arm in first_pruned and not r.pruned and r.seed > first_pruned[r.arm]}


def reopened(group: GroupState, out: set[float]) -> list[float]:
    """The stopped arms to train once more to the end (module docstring): the neighbours of the best
    finished arm that are in `out` and have no finished or active run, once every arm outside `out`
    that has an active run has also finished one (the race is over; later seeds do not hold it up);
    none before MIN_ARMS arms have finished."""
    finals: dict[float, list[float]] = {}
    for r in group.runs:
        if r.status == "done" and r.curve:
            finals.setdefault(r.arm, []).append(r.curve[-1][1])
    racing = {r.arm for r in group.runs if r.status in ACTIVE and r.arm not in out and r.arm not in finals}
    if racing or len(finals) < MIN_ARMS:
        return []
    sign = -1.0 if group.maximize else 1.0
    best = min(finals, key=lambda a: sign * float(np.mean(finals[a])))
    i = group.arms.index(best)
    sides = group.arms[max(i - 1, 0) : i] + group.arms[i + 1 : i + 2]
    busy = {r.arm for r in group.runs if r.status in ACTIVE}
    return [a for a in sides if a in out and a not in finals and a not in busy]


def promoted(
    group: GroupState, top_values: Mapping[float, tuple[float, float]], out: set[float], policy: Policy
) -> list[float]:
    """The arms that may get their next seed, best first (module docstring): none before MIN_ARMS
    arms have reached the top rung; then ceil(m / eta) places among the m contenders there (the
    arms not in `out`, the stopped ones), taken first by the arms already seeded, then by the best
    of the others; an arm whose interval does not overlap the best arm's gets no seed."""
    if len(top_values) < MIN_ARMS:
        return []
    order = sorted(top_values, key=lambda a: top_values[a][0])
    contenders = [a for a in order if a not in out]
    seeded = {r.arm for r in group.runs if r.seed != group.seeds[0]}
    near = [a for a in contenders if _overlaps(top_values[a], top_values[order[0]], policy.z)]
    places = max(1, len(contenders) // policy.eta)
    fresh = [a for a in near if a not in seeded][: max(0, places - len(seeded & set(contenders)))]
    return [a for a in near if a in seeded or a in fresh]


def _starts(g: GroupState, policy: Policy, values: RungValues, stops: list[Stop]) -> list[Start]:
    """The first seed of every arm without a run, in `submission_order`; then the next seed of the
    reopened arms, then of the promoted ones, best first; each only while the compute limit allows."""
    stopping = {s.run_id for s in stops}
    out = {r.arm for r in g.runs if r.pruned or r.run_id in stopping}
    rates = [r.wall_time_s / r.step for r in g.runs if r.step > 0 and r.wall_time_s > 0]
    rate = float(np.median(rates)) if rates else 0.0
    unit = policy.limit_unit
    committed = sum(
        _cost(replace(r, status="cancelled") if r.run_id in stopping else r, g.total_steps, unit, rate) for r in g.runs
    )
    per_run = float(g.total_steps) if unit == "steps" else g.total_steps * rate / 3600.0
    started = {r.arm for r in g.runs}
    wanted = [Start(g.budget, arm, g.seeds[0], "first seed") for arm in submission_order(g.arms) if arm not in started]
    max_seeds = min(policy.max_seeds or len(g.seeds), len(g.seeds))
    top = g.rungs[-1] if g.rungs else g.total_steps
    again = reopened(g, out)
    chosen = [(a, "reopened") for a in again]
    chosen += [(a, "contender") for a in promoted(g, values.get(top) or arm_values(g, top, policy.eta), out, policy)]
    for arm, why in chosen:
        runs = [r for r in g.runs if r.arm == arm]
        if (
            len(runs) >= max_seeds
            or any(r.status in ACTIVE and r.step < top for r in runs)
            or all(r.status == "failed" for r in runs)
        ):
            continue
        used = {r.seed for r in runs}
        wanted.append(Start(g.budget, arm, next(s for s in g.seeds if s not in used), why))
    if policy.compute_limit is not None and unit != "steps" and not rates:
        # No run has a cost in CPU-hours yet: start one, and price the rest from its first steps.
        return wanted[:1] if not any(r.status in ACTIVE for r in g.runs) else []
    actions = []
    for a in wanted:
        if policy.compute_limit is not None and committed + per_run > policy.compute_limit + 1e-9:
            break
        actions.append(a)
        committed += per_run
    return actions


def _decide_group(g: GroupState, policy: Policy) -> list[Action]:
    values = {r: arm_values(g, r, policy.eta) for r in g.rungs}
    stops = _stops(g, policy, values)
    return [*stops, *_starts(g, policy, values, stops)]


def decide(state: SearchState, events: Iterable[Progress] = ()) -> list[Action]:
    """The actions for `state` with `events` folded in: stops first, then starts, per budget group
    in order (module docstring). Pure: the same input gives the same actions."""
    state = apply_events(state, events)
    return [a for g in state.groups for a in _decide_group(g, state.policy)]
