"""`elmlab sweep replay`, `elmlab sweep search` and `elmlab controller`: the multi-fidelity search.

    elmlab sweep search --budget 5e4 --d-m-values 2,4,8,16,32 [--seeds 0,1] [--compute 0.5] [--preset small]
    elmlab controller                     # carries searches on (elmlab up starts it)

`sweep search` saves the search under $ELMLAB_HOME/searches, queues the first seed of every
allocation and prints the search id (its sweep id); the controller (workers/controller.py) stops
and seeds runs from then on.

`sweep replay`: what the multi-fidelity search would have cost, and found, on a full grid.

    elmlab sweep replay --input RUNS_WITH_CURVES [--task T] [--eta 3] [--limit 0.4] [--workers 1] [--json]

RUNS_WITH_CURVES: an export of the store with learning curves (`elmlab export`, Parquet or CSV),
e.g. elm_core/demo_data/smoke_grid.parquet. Per budget: the fraction of the grid's training steps and
wall time the search spends, its optimum and the full grid's (the iso-budget fit of `elmlab fit
iso`), and whether the search's optimum lies in the grid's 95% interval (elm_core.search.grid_replay).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def add_replay(kinds: argparse._SubParsersAction) -> None:
    """The `replay` sub-command of `elmlab sweep`."""
    p = kinds.add_parser("replay", help="replay the multi-fidelity search on a fully trained grid (no queueing)")
    p.add_argument("--input", metavar="FILE", required=True, help="runs with learning curves (Parquet, CSV)")
    p.add_argument("--task", help="only the runs of this task")
    p.add_argument("--eta", type=int, default=3, help="keep the best 1/eta at a rung (default 3)")
    p.add_argument("--min-rung", type=int, help="lowest rung in steps (default total / eta)")
    p.add_argument("--z", type=float, default=1.96, help="interval half-width in standard errors (default 1.96)")
    p.add_argument("--limit", type=float, help="compute limit per budget, as a fraction of its grid's steps")
    p.add_argument("--max-seeds", type=int, help="seeds per allocation (default: all recorded)")
    p.add_argument("--workers", type=int, help="parallel workers (default: the distinct workers in the input)")
    p.add_argument("--extrapolate", action="store_true", help="stopped runs enter the fit at their extrapolated metric")
    p.add_argument("--x", default="d_m", help="allocation axis (default d_m)")
    p.add_argument("--metric", default="test_metric", help="metric of the iso fit (default test_metric)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates of the iso fit (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object with a `groups` list")
    p.set_defaults(func=cmd_replay, _parser=p)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def cmd_replay(args: argparse.Namespace) -> int:
    from elm_core.analysis import read_runs
    from elm_core.search import Policy, replay
    from elmlab.cli import UsageError

    if args.eta < 2:
        raise UsageError("--eta must be at least 2")
    if args.max_seeds is not None and args.max_seeds < 1:
        raise UsageError("--max-seeds must be at least 1")
    import polars as pl

    try:
        df = read_runs(args.input)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"cannot read {args.input}: {str(exc).splitlines()[0]}") from None
    if args.task is not None:
        if "task" not in df.columns or df.filter(pl.col("task") == args.task).is_empty():
            raise UsageError(f"--task {args.task}: no runs of that task in {args.input}")
        df = df.filter(pl.col("task") == args.task)
    workers = args.workers
    if workers is None:
        workers = max(1, df["worker"].drop_nulls().n_unique()) if "worker" in df.columns else 1
    policy = Policy(eta=args.eta, z=args.z, max_seeds=args.max_seeds)
    groups = replay(
        df,
        policy,
        x=args.x,
        metric=args.metric,
        workers=workers,
        limit_fraction=args.limit,
        extrapolate=args.extrapolate,
        min_rung=args.min_rung,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    obj = {
        "eta": args.eta,
        "workers": workers,
        "limit": args.limit,
        "extrapolate": args.extrapolate,
        "groups": [g.to_dict() for g in groups],
    }
    if args.json:
        print(json.dumps(obj, allow_nan=False))
        return 0
    limit = f"compute limit {args.limit:g} of the grid's steps" if args.limit else "no compute limit"
    print(f"search replay (eta {args.eta}, {workers} worker(s), {limit})")
    head = f"{'budget':>10} {'compute':>8} {'wall':>6} {'search opt':>11} {'grid opt':>9} {'grid 95% ci':>16}"
    print(head + "  inside  runs")
    for g in obj["groups"]:
        ci = f"[{_fmt(g['grid_ci'][0])}, {_fmt(g['grid_ci'][1])}]"
        print(
            f"{g['budget']:>10,.0f} {_fmt(g['compute_fraction']):>8} {_fmt(g['wall_fraction']):>6} "
            f"{_fmt(g['search_optimum']):>11} {_fmt(g['grid_optimum']):>9} {ci:>16}  {str(g['inside']):<6}  "
            f"{len(g['finished'])} of {g['n_runs']} finished"
        )
    signals = sorted({g["signal_note"] for g in obj["groups"]})
    print("rungs on the " + "; ".join(signals) + f": steps {obj['groups'][0]['rungs']}")
    return 0


# --- sweep search: a multi-fidelity search on the queue ---------------------------------------------


def add_search(kinds: argparse._SubParsersAction, pass_fields: tuple[str, ...], types: dict[str, Any],
               int_list: Any, count: Any) -> None:
    """The `search` sub-command of `elmlab sweep` (the spec flags of `sweep iso` pass through)."""
    p = kinds.add_parser("search", help="queue a multi-fidelity search over d_m at one or more budgets "
                         "(the controller stops the arms out of the race and seeds the best)")
    p.add_argument("--task", default="text")
    p.add_argument("--budget", type=count, action="append", required=True, help="parameters; repeat for more")
    p.add_argument("--d-m-values", type=int_list, required=True, help="the allocations, e.g. 2,4,8,16,32")
    p.add_argument("--seeds", type=int_list, help="seeds an allocation may get, in order (default 0,1,2)")
    p.add_argument("--compute", type=float, metavar="CPU-HOURS", help="compute limit per budget (default none)")
    p.add_argument("--eta", type=int, default=3, help="keep the best 1/eta at a rung (default 3)")
    p.add_argument("--z", type=float, default=1.96, help="interval half-width in standard errors (default 1.96)")
    p.add_argument("--min-rung", type=int, help="lowest rung in steps (default total / eta)")
    p.add_argument("--max-seeds", type=int, help="seeds per allocation (default: all of --seeds)")
    for name in pass_fields:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=types[name], default=None)
    p.set_defaults(func=cmd_search, _parser=p, _pass=pass_fields)


def cmd_search(args: argparse.Namespace) -> int:
    import sys

    from elmlab.cli import UsageError
    from workers.controller import create_search
    from workers.submit import BrokerUnavailable, ReadOnlyError

    if args.max_seeds is not None and args.max_seeds < 1:
        raise UsageError("--max-seeds must be at least 1")
    if args.compute is not None and not args.compute > 0:
        raise UsageError("--compute must be a positive number of CPU-hours")
    shared = {name: getattr(args, name) for name in args._pass if getattr(args, name, None) is not None}
    try:
        defn, started = create_search(args.task, args.budget, args.d_m_values, args.seeds or [0, 1, 2], shared,
                                      eta=args.eta, z=args.z, min_rung=args.min_rung, max_seeds=args.max_seeds,
                                      compute_limit=args.compute)
    except ReadOnlyError as exc:
        raise UsageError(str(exc)) from None
    except BrokerUnavailable as exc:
        print(f"elmlab sweep: error: {exc}; the search is saved and the controller queues its runs when the "
              "broker answers", file=sys.stderr)
        return 2
    signal, rungs = defn.signal()
    what = ("first seed of every allocation" if args.compute is None else
            "first seeds; under the compute limit the others start once a run has a cost")
    print(f"search {defn.search_id}: queued {len(started)} run{'s' * (len(started) != 1)} ({what}); rungs at steps "
          f"{list(rungs)} on the {'validation metric' if signal == 'valid' else 'training loss'}; the controller "
          "(elmlab up, or elmlab controller) carries it on", file=sys.stderr)
    print(defn.search_id)
    return 0


def cmd_controller(args: argparse.Namespace) -> int:
    from elmlab.cli import UsageError
    from workers.controller import main

    if not args.interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    return main(args.interval)


def register(sub) -> None:
    p = sub.add_parser("controller", help="carry out the multi-fidelity searches: stop and start their runs")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between decisions (default 2)")
    p.set_defaults(func=cmd_controller, _parser=p)
