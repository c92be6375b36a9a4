"""Sweeps: families of run specs that share a sweep id (pure; no queue, no training).

    iso_sweep("text", 60_000, [2, 4, 8, 16], seeds=[0, 1])          # one budget, several allocations
    ladder_sweep("text", [2e4, 6e4, 2e5], 8)                         # one allocation (or a list), several budgets
    axis_sweep("text", "d_tree", [4, 8, 16], n_neurons=32, d_m=8)    # one axis varied, the rest fixed

Each returns a list of `RunSpec` (one per value and seed, seeds innermost), every one with the same
`sweep_id` ("iso-<hex8>", "ladder-<hex8>", "axis-<hex8>" unless one is given) and, where the
sweep has one, its `budget`. Other RunSpec fields (preset, steps, d_tree, device, ...) pass through
`spec_fields`. Invalid fields raise ValueError naming the field (as `parse_spec` does); whether a
configuration fits its budget is checked when the runs are submitted.

`screen(specs, n_in=..., n_out=...)` drops the configurations a sweep should not contain, with the reason:
fewer than N_MIN hidden neurons, or more than MAX_UNDER_BUDGET of the budget left unspent (whole neurons
of a large d_m cannot spend a small budget: d_m 64 at 50k parameters buys one neuron and leaves 16% of
the budget unused). Both would enter an iso-budget fit as a point at the wrong budget or from a
different regime; `elm_core.analysis` leaves such runs out of fits unless asked (`valid_design`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from elm_core.budget import count_params
from elm_core.spec import RunSpec, parse_spec

Axis = Literal["n_neurons", "d_m", "d_brch", "d_tree"]
AXES: tuple[str, ...] = ("n_neurons", "d_m", "d_brch", "d_tree")


# A hidden layer of fewer than 8 neurons is a different kind of model from the rest of an iso-budget curve:
# each neuron is an eighth or more of the network and the result rests on one connectome draw.
N_MIN = 8
MAX_UNDER_BUDGET = 0.05  # a design must spend at least 95% of its budget


def design_problem(n_neurons: int, params: int, budget: int | float | None) -> str | None:
    """Why a configuration does not belong on an iso-budget curve, or None when it does."""
    if n_neurons < N_MIN:
        return f"N = {n_neurons} hidden neurons is below the floor of {N_MIN}"
    if budget and params < (1.0 - MAX_UNDER_BUDGET) * budget:
        return f"uses {params:,} of {int(budget):,} parameters ({params / budget:.0%}; at least 95% required)"
    return None


def screen(
    specs: Sequence[RunSpec], *, n_in: int, n_out: int, kind: str = "char"
) -> tuple[list[RunSpec], list[tuple[RunSpec, str]]]:
    """(kept, skipped with the reason) for a sweep's specs; a spec that cannot be resolved is skipped too."""
    kept, skipped = [], []
    for spec in specs:
        try:
            cfg = spec.resolve_config(n_in=n_in, n_out=n_out, kind=kind)
        except ValueError as exc:
            skipped.append((spec, str(exc)))
            continue
        problem = design_problem(cfg.n_neurons, count_params(cfg), spec.budget)
        if problem is None:
            kept.append(spec)
        else:
            skipped.append((spec, f"d_m {cfg.d_m}, N {cfg.n_neurons}: {problem}"))
    return kept, skipped


def new_sweep_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    values = [seeds] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not values:
        raise ValueError("seeds: give at least one seed")
    if len(set(values)) != len(values):
        raise ValueError(f"seeds: repeated seed in {values}")
    return values


def _values(name: str, values: Iterable[Any], kind: type = int) -> list[Any]:
    out = [kind(v) for v in values]
    if not out:
        raise ValueError(f"{name}: give at least one value")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated value in {out}")
    return out


def _spec(fields: dict[str, Any]) -> RunSpec:
    return parse_spec({k: v for k, v in fields.items() if v is not None})


def _check_fields(spec_fields: dict[str, Any], *taken: str) -> None:
    clash = sorted(set(spec_fields) & {"task", "sweep_id", "seed", *taken})
    if clash:
        raise ValueError(f"{', '.join(clash)}: set by the sweep itself; not allowed among the fixed fields")


def iso_sweep(
    task: str,
    budget: float,
    d_m_values: Sequence[int],
    seeds: int | Iterable[int] = (0,),
    *,
    sweep_id: str | None = None,
    **spec_fields: Any,
) -> list[RunSpec]:
    """One parameter budget, one run per d_m (the budget decides N) and seed."""
    _check_fields(spec_fields, "budget", "d_m", "n_neurons")
    sid = sweep_id or new_sweep_id("iso")
    return [
        _spec({**spec_fields, "task": task, "budget": budget, "d_m": d_m, "seed": seed, "sweep_id": sid})
        for d_m in _values("d_m_values", d_m_values)
        for seed in _seeds(seeds)
    ]


def ladder_sweep(
    task: str,
    budgets: Sequence[float],
    d_m: int | Sequence[int] | None = None,
    seeds: int | Iterable[int] = (0,),
    *,
    d_m_values: Sequence[int] | None = None,
    sweep_id: str | None = None,
    **spec_fields: Any,
) -> list[RunSpec]:
    """A ladder of budgets at one allocation (d_m), or at each of several (d_m a list, or d_m_values):
    one run per budget, d_m and seed."""
    _check_fields(spec_fields, "budget", "d_m", "n_neurons")
    if d_m is not None and not isinstance(d_m, int):
        d_m, d_m_values = None, list(d_m) if d_m_values is None else d_m_values
    if (d_m is None) == (d_m_values is None):
        raise ValueError("d_m: give either d_m or d_m_values")
    dms = _values("d_m_values", d_m_values) if d_m_values is not None else [int(d_m)]  # type: ignore[arg-type]
    sid = sweep_id or new_sweep_id("ladder")
    return [
        _spec({**spec_fields, "task": task, "budget": b, "d_m": dm, "seed": seed, "sweep_id": sid})
        for b in _values("budgets", budgets, float)
        for dm in dms
        for seed in _seeds(seeds)
    ]


def axis_sweep(
    task: str,
    axis: Axis,
    values: Sequence[int],
    seeds: int | Iterable[int] = (0,),
    *,
    sweep_id: str | None = None,
    **fixed: Any,
) -> list[RunSpec]:
    """One axis (n_neurons, d_m, d_brch or d_tree) takes each value, the other fields stay `fixed`.

    With a `budget` among the fixed fields, the budget decides the free one of d_m and n_neurons."""
    if axis not in AXES:
        raise ValueError(f"axis: must be one of {', '.join(AXES)}, not {axis!r}")
    _check_fields(fixed, axis)
    sid = sweep_id or new_sweep_id("axis")
    return [
        _spec({**fixed, "task": task, axis: v, "seed": seed, "sweep_id": sid})
        for v in _values(axis, values)
        for seed in _seeds(seeds)
    ]
