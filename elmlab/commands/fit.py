"""`elmlab fit`: the analysis fits (elm_core.analysis) for the store or a CSV of runs.

    elmlab fit [--input FILE]                      every fit below, in short
    elmlab fit iso --x d_m [--json]                iso-budget optima with bootstrap intervals
    elmlab fit iso --extrapolate                   ... with pruned and running runs at their extrapolated metric
    elmlab fit pareto --cost params                the Pareto frontier
    elmlab fit scaling [--budget P ...]            parametric loss surface, optimal allocation, power laws
    elmlab fit capacity [--budget P ...]           the capacity model (ours) and its optima
    elmlab fit suggest [-n 5]                      what to run next, with reasons

Common options (before or after the sub-command): --input FILE (CSV with the columns of
paper_sweeps_enwik8.csv, Parquet or JSON lines; without it the results store), --task, --metric,
--maximize, --json, --n-boot, --seed. With --json only JSON is written to standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and polars are imported where used: building this parser (elmlab --help) needs neither
    import polars as pl

_SUBCOMMANDS = ("iso", "pareto", "scaling", "capacity", "suggest")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit iso-budget optima, Pareto frontiers, scaling laws and the capacity model",
        description="Fits on the done runs of the store, or of --input FILE. Without a sub-command: all fits.",
    )
    _common(parser, suppress=False)
    parser.set_defaults(func=_run, _parser=parser, fit_command=None)
    sub = parser.add_subparsers(dest="fit_command", metavar="FIT")

    iso = sub.add_parser("iso", help="iso-budget optimum per budget with a bootstrap interval")
    _common(iso, suppress=True)
    iso.add_argument("--smoothing", type=float, default=1.0, help="P-spline penalty lambda (default 1)")
    iso.add_argument("--tol", type=float, default=0.05, help="relative width of a budget group (default 0.05)")
    iso.add_argument("--curve", action="store_true", help="with --json, include the fitted curves")
    iso.add_argument("--extrapolate", action="store_true",
                     help="pruned and running runs enter at their extrapolated metric (marked)")

    pareto = sub.add_parser("pareto", help="Pareto frontier of the metric against a cost")
    _common(pareto, suppress=True)
    pareto.add_argument("--cost", default="params", help="cost column: params, flops_per_step, wall_time_s")

    for name, text in (("scaling", "parametric loss surface L(N, k_e, k_c)"), ("capacity", "capacity model")):
        p = sub.add_parser(name, help=text)
        _common(p, suppress=True)
        p.add_argument("--budget", type=float, action="append", help="budget(s) for the optimal allocation")

    suggest = sub.add_parser("suggest", help="next runs that would shrink the optimum's uncertainty most")
    _common(suggest, suppress=True)
    suggest.add_argument("-n", type=int, default=5, help="number of suggestions (default 5)")
    suggest.add_argument("--tol", type=float, default=0.05, help="relative width of a budget group")

    for p in (iso, pareto, sub.choices["scaling"], sub.choices["capacity"], suggest):
        p.set_defaults(_parser=p)


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options every fit takes. On sub-commands their defaults are suppressed, so a value given
    before the sub-command survives."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--input", metavar="FILE", default=d(None), help="runs file (CSV, Parquet, JSONL)")
    parser.add_argument("--task", default=d(None), help="only runs of this task")
    parser.add_argument(
        "--metric",
        default=d(None),
        help="metric the optima are located on (default valid_metric; test_metric where the runs have none)",
    )
    parser.add_argument(
        "--maximize",
        action="store_true",
        default=d(None),
        help="the metric is maximised (default: from metric_name; accuracy up, bpc down)",
    )
    parser.add_argument("--x", default=d("d_m"), help="allocation axis: d_m, k_e, n_neurons, k_e_frac")
    parser.add_argument("--json", action="store_true", default=d(False), help="print JSON only")
    parser.add_argument("--n-boot", type=int, default=d(200), help="bootstrap replicates (default 200)")
    parser.add_argument("--seed", type=int, default=d(0), help="bootstrap seed (default 0)")
    parser.add_argument("--keep-off-curve", action="store_true", default=d(False),
                        help="fit runs with fewer than 8 neurons or under 95%% of their budget too")


# --------------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> pl.DataFrame:
    import polars as pl

    from elm_core.analysis import normalize_frame, read_runs
    from elmlab.cli import UsageError

    if args.input:
        df = read_runs(args.input)
    else:
        try:
            from elm_core.settings import get_settings
            from elm_core.store import Store
        except ImportError as exc:
            raise UsageError("no store available; pass --input FILE") from exc
        df = normalize_frame(Store(get_settings().store_path).runs(with_curve=getattr(args, "extrapolate", False)))
    if args.task:
        if "task" not in df.columns:
            raise UsageError("the runs have no task column; drop --task")
        df = df.filter(pl.col("task") == args.task)
    if getattr(args, "extrapolate", False):
        return _with_extrapolated(args, df)
    if "status" in df.columns:
        df = df.filter(pl.col("status") == "done")
    from elm_core.analysis import fit_metric
    from elm_core.analysis.frame import on_curve, split_diverged

    df, diverged = split_diverged(df)
    if diverged and not args.json:
        shown = "; ".join(f"{run_id}: {why}" for run_id, why in diverged[:5])
        print(f"left out {len(diverged)} done run(s) that look diverged ({shown}"
              f"{f'; and {len(diverged) - 5} more' if len(diverged) > 5 else ''})", file=sys.stderr)

    if not args.keep_off_curve:
        df, dropped = on_curve(df)
        if dropped and not args.json:
            print(f"left out {dropped} run(s) off the iso-budget curve (fewer than 8 neurons or under 95% of "
                  "the budget); --keep-off-curve keeps them", file=sys.stderr)

    args.metric = fit_metric(df, args.metric)
    if args.metric not in df.columns:
        raise UsageError(f"no column {args.metric!r} in the runs")
    if df.filter(pl.col(args.metric).is_not_null()).height == 0:
        raise UsageError(
            "no done runs with a value of " + args.metric + (" in --input" if args.input else " in the store")
        )
    return df


def _with_extrapolated(args: argparse.Namespace, df: pl.DataFrame) -> pl.DataFrame:
    """The done runs plus the pruned and running ones at their extrapolated metric (elm_core.search.partial);
    `args.extrapolated` keeps what happened to each for the report."""
    import polars as pl

    from elm_core.analysis import fit_metric
    from elm_core.search.partial import extrapolate_runs
    from elmlab.cli import UsageError

    if "curve" not in df.columns or "status" not in df.columns:
        raise UsageError("--extrapolate needs runs with status and learning curves (the store, or an export of it)")
    args.metric = fit_metric(df.filter(pl.col("status") == "done"), args.metric)
    if args.metric not in df.columns:
        raise UsageError(f"no column {args.metric!r} in the runs")
    live: dict[str, Any] = {}
    running = df.filter(pl.col("status") == "running")["run_id"].to_list()
    if running and not args.input:
        from workers.health import progress

        live = {k: v.get("curve") for k, v in progress(running, with_curve=True).items() if v}
    out, args.extrapolated = extrapolate_runs(df, args.metric, live=live, seed=args.seed)
    if out.height == 0:
        raise UsageError("no done runs with a value of " + args.metric)
    return out.drop("status")  # every row is a point now (fits keep status done only); `extrapolated` marks them


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, nan/inf to None."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), allow_nan=False))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:,.0f}" if 1e4 <= abs(v) < 1e9 else f"{v:.3g}"
    return f"{v:.4g}"


def _budgets(args: argparse.Namespace, df: pl.DataFrame) -> list[float]:
    if getattr(args, "budget", None):
        return list(args.budget)
    from elm_core.analysis import iso_budget_groups

    groups = iso_budget_groups(df)["iso_budget"].drop_nulls().unique().sort().to_list()
    return [*groups, 10.0 * max(groups)] if groups else []


def _frame_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.iter_rows(named=True)]


# --------------------------------------------------------------------------------------------------
# The sub-commands. Each returns a JSON-ready dict and the lines of its text report.


def _iso(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    from elm_core.analysis import fit_iso_budgets

    fits = fit_iso_budgets(
        df,
        args.x,
        args.metric,
        args.maximize,
        tol=getattr(args, "tol", 0.05),
        smoothing=getattr(args, "smoothing", 1.0),
        n_boot=args.n_boot,
        seed=args.seed,
    )
    obj = {"groups": [f.to_dict(curve=getattr(args, "curve", False)) for f in fits]}
    extra = getattr(args, "extrapolated", None)
    notes = []
    if extra is not None:
        obj["extrapolated"] = [{"run_id": e.run_id, "status": e.status, "step": e.step, "value": e.value,
                                "ci": list(e.ci) if e.ci else None, "note": e.note} for e in extra]
        notes = [f"{'extrapolated' if e.value is not None else 'left out'}: {e.run_id} ({e.status} at step {e.step})"
                 + (f" at {_fmt(e.value)} [{_fmt(e.ci[0])}, {_fmt(e.ci[1])}]" if e.ci else f": {e.note}")
                 for e in extra]
    if not fits:
        from elm_core.analysis.frame import done_runs, fit_metric

        metric = fit_metric(df, args.metric)
        if df.height and metric in df.columns and done_runs(df, metric).height == 0:
            raise ValueError(f"no done run has a finite {metric} (NaN or infinite in all {df.height} rows); "
                             "nothing to fit")
        return obj, [f"no iso-budget group with 3 or more distinct values of {args.x}", *notes]
    directions = {f.maximize for f in fits}
    direction = ("maximised" if fits[0].maximize else "minimised") if len(directions) == 1 else \
        "per task: accuracy maximised, BPC minimised"
    lines = [
        f"iso-budget optimum of {args.metric} ({direction}) against {args.x}; "
        f"{int(100 * fits[0].ci_level)}% bootstrap interval ({args.n_boot} replicates)",
        f"{'task':<10} {'budget':>12} {'runs':>5} {'optimum':>9} {'interval':>20} {'metric there':>13}"
        f" {'test there':>11}  note",
    ]
    for f in fits:
        ci = f"[{_fmt(f.ci[0])}, {_fmt(f.ci[1])}]"
        note = {False: "not bracketed", None: "no interval: not shown to be bracketed"}.get(f.bracketed, f.note)
        lines.append(
            f"{(f.task or '-'):<10} {_fmt(f.budget):>12} {f.n_points:>5} {_fmt(f.optimum):>9} "
            f"{ci:>20} {_fmt(f.optimum_metric):>13} {_fmt(f.test_at_optimum):>11}  {note}"
        )
    for f in fits:
        if f.edge_advice:
            lines.append(
                f"{f.task or '-'} at {_fmt(f.budget)}: the optimum or its interval reaches the edge of the sampled "
                f"{args.x}; {f.edge_advice}"
            )
        elif f.bracketed is None:
            lines.append(
                f"{f.task or '-'} at {_fmt(f.budget)}: {f.n_points} runs at {f.n_distinct} allocations are too few to "
                f"estimate the noise, so the optimum has no interval and is not shown to be bracketed; repeat seeds "
                f"or add allocations to get one"
            )
    return obj, lines + notes


def _pareto(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    from elm_core.analysis import pareto_frontier

    cost = getattr(args, "cost", "params")
    res = pareto_frontier(df, cost, args.metric, args.maximize)
    front = res.frontier
    keep = [c for c in ("run_id", "task", cost, args.metric, "n_neurons", "d_m", "k_e", "k_c") if c in front.columns]
    obj = {
        "cost": cost,
        "metric": args.metric,
        "maximize": res.maximize,
        "n_runs": res.frame.height,
        "frontier": _frame_records(front.select(keep)),
    }
    lines = [f"Pareto frontier of {args.metric} against {cost}: {res.n_frontier} of {res.frame.height} runs"]
    lines += [
        "  " + "  ".join(f"{c}={_fmt(r[c]) if isinstance(r[c], float | int) else r[c]}" for c in keep)
        for r in front.select(keep).iter_rows(named=True)
    ]
    return obj, lines


def _scaling(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    from elm_core.analysis import fit_scaling_law

    fit = fit_scaling_law(df, args.metric, args.maximize, n_boot=args.n_boot, seed=args.seed)
    obj = fit.to_dict()
    lines = [f"scaling law: {obj['form']}  ({fit.n_runs} runs, rmse {_fmt(fit.rmse)})"]
    lines += _param_lines(obj)
    if not fit.ok:
        return {**obj, "optimal_allocation": [], "power_laws": []}, [*lines, _failed_line(fit.reason)]
    alloc = fit.optimal_allocation(_budgets(args, df))
    laws = fit.power_laws()
    obj = {**obj, "optimal_allocation": _frame_records(alloc), "power_laws": _frame_records(laws)}
    lines.append("optimal allocation (95% intervals; metric with a prediction interval for one run):")
    for r in alloc.iter_rows(named=True):
        lines.append(
            f"  P={_fmt(r['budget'])}: N*={_fmt(r['n_neurons'])} [{_fmt(r['n_neurons_lo'])}, {_fmt(r['n_neurons_hi'])}]"
            f"  k_e*={_fmt(r['k_e'])} [{_fmt(r['k_e_lo'])}, {_fmt(r['k_e_hi'])}]"
            f"  {args.metric}={_fmt(r['metric'])} [{_fmt(r['pi_lo'])}, {_fmt(r['pi_hi'])}]"
            + (f"  test_metric={_fmt(r['test_metric'])}" if "test_metric" in r else "")
        )
    for r in laws.iter_rows(named=True):
        lines.append(
            f"  {r['quantity']}* ~ P^{_fmt(r['exponent'])} [{_fmt(r['exponent_lo'])}, "
            f"{_fmt(r['exponent_hi'])}] over P in [{_fmt(r['budget_min'])}, {_fmt(r['budget_max'])}]"
            f" (asymptotic {_fmt(r['asymptotic_exponent'])})"
        )
    return obj, lines


def _param_lines(obj: dict[str, Any]) -> list[str]:
    params = obj["params"].items()
    return [f"  {k:<6} = {_fmt(v['value']):>10}   [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]" for k, v in params]


def _failed_line(reason: str | None) -> str:
    return f"fit FAILED: {reason}; no optimal allocation from it (add runs at other budgets and allocations)"


def _capacity(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    from elm_core.analysis import fit_capacity_model

    fit = fit_capacity_model(df, args.metric, args.maximize, n_boot=args.n_boot, seed=args.seed)
    obj = fit.to_dict()
    lines = [f"capacity model (ours): {obj['form']}  ({fit.n_runs} runs, rmse {_fmt(fit.rmse)})", *_param_lines(obj)]
    if not fit.ok:
        return {**obj, "optimal_allocation": []}, [*lines, _failed_line(fit.reason)]
    alloc = fit.optimal_allocation(_budgets(args, df))
    obj = {**obj, "optimal_allocation": _frame_records(alloc)}
    lines.append(f"optimal allocation at k_c = {_fmt(fit.k_c)}:")
    for r in alloc.iter_rows(named=True):
        lines.append(
            f"  P={_fmt(r['budget'])}: N*={_fmt(r['n_neurons'])} [{_fmt(r['n_neurons_lo'])}, {_fmt(r['n_neurons_hi'])}]"
            f"  k_e*={_fmt(r['k_e'])} [{_fmt(r['k_e_lo'])}, {_fmt(r['k_e_hi'])}]  {args.metric}={_fmt(r['metric'])}"
            + (f"  test_metric={_fmt(r['test_metric'])}" if "test_metric" in r else "")
        )
    return obj, lines


def _suggest(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    from elm_core.analysis import suggest_next_runs

    out = suggest_next_runs(
        df,
        args.x,
        args.metric,
        args.maximize,
        n=getattr(args, "n", 5),
        tol=getattr(args, "tol", 0.05),
        n_boot=args.n_boot,
        seed=args.seed,
    )
    obj = {"suggestions": _frame_records(out)}
    lines = ["next runs, best first (score: expected shrink of the optimum's log-spread):"]
    for r in out.iter_rows(named=True):
        lines.append(
            f"  {r['rank']}. budget {_fmt(r['budget'])}, {r['x_name']}={_fmt(r['x'])}"
            + (f", N={r['n_neurons']}" if r["n_neurons"] is not None else "")
            + f"  (score {_fmt(r['score'])})\n     {r['reason']}"
        )
    if out.height == 0:
        lines.append("  none: no budget group with 3 or more distinct allocations")
    return obj, lines


_HANDLERS = {"iso": _iso, "pareto": _pareto, "scaling": _scaling, "capacity": _capacity, "suggest": _suggest}


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    df = _load(args)
    with np.errstate(all="ignore"), warnings.catch_warnings():  # a fit that fails says so in words
        warnings.simplefilter("ignore", RuntimeWarning)
        obj, lines = _fit_all(args, df)
    if args.json:
        _print_json(obj)
    else:
        print("\n".join(lines).rstrip())
    return 0


def _fit_all(args: argparse.Namespace, df: pl.DataFrame) -> tuple[dict, list[str]]:
    if args.fit_command:
        obj, lines = _HANDLERS[args.fit_command](args, df)
    else:
        obj, lines = {}, []
        for name in ("iso", "pareto", "scaling", "capacity", "suggest"):
            try:
                part, part_lines = _HANDLERS[name](args, df)
            except ValueError as exc:  # one fit impossible on these runs; report and go on
                part, part_lines = {"error": str(exc)}, [f"{name}: not fitted: {exc}"]
            obj[name] = part
            lines += [*part_lines, ""]
    return obj, lines
