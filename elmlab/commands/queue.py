"""Queue commands: submit, sweep, status, cancel, retry, worker, recorder (docs/queue.md).

    elmlab submit --task text --budget 6e4 --d-m 8 --steps 200       # prints the run id last
    elmlab sweep iso --budget 6e4 --d-m-values 2,4,8,16 --seeds 0,1   # prints the run ids
    elmlab status [--json] [--sweep S]
    elmlab cancel RUN [RUN ...] | --sweep S | --all-queued ; elmlab retry RUN
    elmlab worker [--queues train,gpu] [--concurrency N] [--threads-per-run T]  # trains runs (any machine)
    elmlab recorder                                                  # writes records; re-queues lost runs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from elmlab.cli import UsageError
from elmlab.commands.train import SPEC_FLAGS, add_spec_arguments, count, spec_from_args

# Flags a sweep passes through to every spec (the sweep sets task, budget/d_m/n_neurons, seed, sweep_id).
SWEEP_PASS = ("preset", "d_tree", "d_brch", "l_mlp", "d_mlp", "steps", "epochs", "batch_size", "seq_len", "lr",
              "device", "precision", "checkpoint_dir", "eval_chars", "test_chars")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text}") from None


def _count_list(text: str) -> list[int]:
    return [count(v) for v in text.replace(" ", "").split(",") if v]


def _broker_error(exc: Exception, command: str) -> int:
    print(f"elmlab {command}: error: {exc}", file=sys.stderr)
    return 2


# --- submit ----------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from workers.submit import BrokerUnavailable, ReadOnlyError, submit

    spec = spec_from_args(args)
    try:
        run_id = submit(spec)
    except (BrokerUnavailable, ReadOnlyError) as exc:
        return _broker_error(exc, "submit")
    print(f"queued run {run_id} ({spec.task}, queue {'gpu' if spec.device == 'cuda' else 'train'})",
          file=sys.stderr)
    print(run_id)
    return 0


# --- sweep -----------------------------------------------------------------------------------------


def _sweep_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SWEEP_PASS if getattr(args, name, None) is not None}


def _screen(specs: list) -> list:
    """Drop the designs an iso-budget curve should not contain (elm_core.sweeps.screen), saying why."""
    from elm_core import sweeps
    from elm_core.data import get_task
    from elm_core.settings import get_settings

    task = get_task(specs[0].task, get_settings().data_path, **specs[0].resolved_task_options())
    kept, skipped = sweeps.screen(specs, n_in=task.n_in, n_out=task.n_out, kind=task.kind)
    for spec, why in skipped:
        print(f"skipped (budget {spec.budget:,}, seed {spec.seed}): {why}", file=sys.stderr)
    if not kept:
        raise UsageError("every design of this sweep was skipped; widen the budget or narrow --d-m-values "
                         "(or pass --keep-off-curve)")
    return kept


def cmd_sweep(args: argparse.Namespace) -> int:
    from elm_core import sweeps
    from workers.submit import BrokerUnavailable, ReadOnlyError, submit_many

    fields = _sweep_fields(args)
    seeds = args.seeds or [0]
    if args.kind == "iso":
        specs = sweeps.iso_sweep(args.task, args.budget, args.d_m_values, seeds, sweep_id=args.sweep_id, **fields)
    elif args.kind == "ladder":
        if (args.d_m is None) == (args.d_m_values is None):
            raise UsageError("give --d-m or --d-m-values")
        specs = sweeps.ladder_sweep(args.task, args.budgets, args.d_m, seeds, d_m_values=args.d_m_values,
                                    sweep_id=args.sweep_id, **fields)
    else:
        fixed = {**fields, **{k: getattr(args, k) for k in ("budget", "d_m", "n_neurons")
                              if getattr(args, k) is not None and k != args.axis}}
        specs = sweeps.axis_sweep(args.task, args.axis, args.values, seeds, sweep_id=args.sweep_id, **fixed)
    if args.kind in ("iso", "ladder") and not args.keep_off_curve:
        specs = _screen(specs)
    if args.dry_run:
        print(json.dumps([s.model_dump(mode="json", exclude_none=True) for s in specs], indent=2))
        return 0
    try:
        ids = submit_many(specs)
    except (BrokerUnavailable, ReadOnlyError) as exc:
        return _broker_error(exc, "sweep")
    print(f"sweep {specs[0].sweep_id}: queued {len(ids)} runs", file=sys.stderr)
    for run_id in ids:
        print(run_id)
    return 0


# --- status, cancel, retry -------------------------------------------------------------------------

STATUS_COLUMNS = ("run_id", "status", "task", "params", "d_m", "n_neurons", "metric", "progress")


METRIC_SPLITS = {"test_metric": "test", "valid_metric": "valid", "train_metric": "train"}
# The record columns `elmlab status` shows (its JSON) or reads: only these are read from the store.
STATUS_READS = ("run_id", "status", "reason", "sweep_id", "task", "params", "budget", "d_m", "n_neurons", "d_tree",
                "d_brch", "seed", "metric_name", *METRIC_SPLITS, "steps", "attempt", "worker", "created_at",
                "updated_at")


def _metric(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """The run's best-known metric and which split it is (test, then validation, then train)."""
    for key, split in METRIC_SPLITS.items():
        if row.get(key) is not None:
            return row[key], split
    return None, None


def cmd_status(args: argparse.Namespace) -> int:
    from elm_core.records import PRUNED
    from elm_core.settings import get_settings
    from elm_core.store import Store
    from workers.health import broker_reachable, progress

    settings = get_settings()
    rows = Store(settings.store_path).rows(STATUS_READS, sweep_id=args.sweep, status=args.status,
                                           source=None if args.all else "elmlab")
    active = [r["run_id"] for r in rows if r["status"] in ("queued", "running")]
    running = [r["run_id"] for r in rows if r["status"] == "running"]  # the ones with live progress
    live: dict[str, dict[str, Any]] = {}
    if active:
        ok, why = broker_reachable(settings, 1.0)
        if ok:
            live = progress(running, settings=settings)
        else:
            print(f"elmlab status: warning: broker unreachable ({why}); showing stored data only", file=sys.stderr)
    out = []
    for r in rows:
        p = live.get(r["run_id"]) or {}
        out.append({
            "run_id": r["run_id"], "status": r["status"], "reason": r["reason"], "sweep_id": r["sweep_id"],
            "task": r["task"], "params": r["params"], "budget": r["budget"], "d_m": r["d_m"],
            "n_neurons": r["n_neurons"], "d_tree": r["d_tree"], "d_brch": r["d_brch"], "seed": r["seed"],
            "metric_name": r["metric_name"], "metric": _metric(r)[0], "metric_split": _metric(r)[1],
            "steps": r["steps"], "attempt": r["attempt"],
            "worker": r["worker"], "created_at": r["created_at"], "updated_at": r["updated_at"], "progress": p or None,
            "pruned": r["status"] == "cancelled" and (r["reason"] or "").startswith(PRUNED),
        })
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if not out:
        print("no runs", file=sys.stderr)
        return 0
    table = []
    for r in out:
        p = r["progress"]
        prog = ""
        pruned = r["status"] == "cancelled" and (r["reason"] or "").startswith(PRUNED)
        if pruned:
            prog = f"at step {r['steps']}"
        elif p and p.get("total_steps"):
            prog = f"{p['step']}/{p['total_steps']}"
            if p.get("eta_s") is not None:
                prog += f" eta {p['eta_s']:.0f}s"
        elif r["status"] == "failed" and r["reason"]:
            prog = r["reason"][:40]
        metric = "" if r["metric"] is None else f"{r['metric_split']} {r['metric_name']} {r['metric']:.4f}"
        status = "pruned" if pruned else r["status"]
        table.append([r["run_id"], status, r["task"], f"{r['params']:,}", str(r["d_m"]), str(r["n_neurons"]),
                      metric, prog])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(STATUS_COLUMNS)]
    print("  ".join(h.ljust(w) for h, w in zip(STATUS_COLUMNS, widths, strict=True)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0


def _cancel_selection(args: argparse.Namespace) -> list[str]:
    """The run ids a cancel names: RUN..., or the active runs of --sweep, or every queued run."""
    chosen = [bool(args.run_ids), args.sweep is not None, args.all_queued]
    if sum(chosen) != 1:
        raise UsageError("give run ids, --sweep ID or --all-queued (one of them)")
    if args.run_ids:
        return args.run_ids
    from elm_core.settings import get_settings
    from elm_core.store import Store

    status = "queued" if args.all_queued else ["queued", "running"]
    return Store(get_settings().store_path).runs(sweep_id=args.sweep, status=status, source="elmlab")[
        "run_id"].to_list()


def cmd_cancel(args: argparse.Namespace) -> int:
    from workers.submit import BrokerUnavailable, ReadOnlyError, cancel_many

    ids = _cancel_selection(args)
    if not ids:
        print("elmlab cancel: nothing to cancel: " + (f"sweep {args.sweep} has no queued or running run"
                                                      if args.sweep else "no run is queued"), file=sys.stderr)
        return 0
    try:
        cancel_many(ids)
    except (BrokerUnavailable, ReadOnlyError) as exc:
        return _broker_error(exc, "cancel")
    if len(ids) == 1:
        print(f"cancel requested for run {ids[0]}")
    else:
        print(f"cancel requested for {len(ids)} runs")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from workers.submit import BrokerUnavailable, ReadOnlyError, retry

    try:
        run_id = retry(args.run_id)
    except (BrokerUnavailable, ReadOnlyError) as exc:
        return _broker_error(exc, "retry")
    print(f"queued run {run_id} again", file=sys.stderr)
    print(run_id)
    return 0


# --- processes -------------------------------------------------------------------------------------


def _celery_argv(queues: str, concurrency: int, pool: str, hostname: str, loglevel: str,
                 logfile: str | None) -> list[str]:
    argv = ["worker", "-Q", queues, "-c", str(concurrency), "-P", pool, "-n", hostname, "-l", loglevel,
            "--without-gossip", "--without-mingle", "-E"]
    if logfile:
        argv += ["-f", logfile]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    queues = ",".join(q.strip() for q in args.queues.split(",") if q.strip())
    bad = sorted(q for q in queues.split(",") if q == "results" or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", q))
    if bad or not queues:
        raise UsageError(f"invalid queue name(s) {', '.join(bad) or '(none)'}: use train, gpu or names of "
                         "lower-case letters, digits, - and _ (results is the recorder's)")
    from workers.cores import RUN_THREADS_ENV, run_slots

    if args.gpus is not None:
        return _gpu_workers(args, queues)
    if args.pool == "solo" and (args.concurrency or 1) > 1:
        raise UsageError("--pool solo trains one run at a time: leave --concurrency out or use the prefork pool")
    concurrency, threads = run_slots(1 if args.pool == "solo" else args.concurrency, args.threads_per_run)
    os.environ[RUN_THREADS_ENV] = str(threads)  # inherited by the pool processes (workers/cores.py)
    from elm_core.settings import get_settings
    from workers.celery_app import app, ensure_dirs
    from workers.cores import warm_start

    ensure_dirs(get_settings())
    warm_start()  # before the pool forks: its processes inherit torch and the training code

    from elm_core.runtime import DEVICE_LOST_EXIT, device_lost

    print(f"elmlab worker: {concurrency} run(s) at a time, {threads} thread(s) each", file=sys.stderr, flush=True)
    hostname = args.hostname or f"worker-{os.getpid()}@%h"
    code = 0
    try:
        app.worker_main(_celery_argv(queues, concurrency, args.pool, hostname, args.loglevel, args.logfile))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
    # a solo worker ran the runs itself: after a fatal device error it must exit non-zero to be restarted
    return DEVICE_LOST_EXIT if device_lost() else code


def gpu_masks(n_gpus: int, inherited: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each of n_gpus worker processes: the i-th GPU this process may see.

    Without an inherited mask that is GPU i; with one (e.g. "2,3", or GPU UUIDs) it is the i-th entry
    of that mask, so that the workers stay on the GPUs this process was given. ValueError when fewer are visible.
    """
    if inherited is None:
        return [str(i) for i in range(n_gpus)]
    visible = [d.strip() for d in inherited.split(",") if d.strip()]
    if n_gpus > len(visible):
        raise ValueError(f"--gpus {n_gpus}: CUDA_VISIBLE_DEVICES={inherited!r} leaves {len(visible)} GPU(s) visible")
    return visible[:n_gpus]


def gpu_worker_commands(n_gpus: int, queues: str, pid: int,
                        inherited: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """One worker process per GPU: (argv, extra environment) with CUDA_VISIBLE_DEVICES pinning each to one GPU."""
    queues = queues if "gpu" in queues.split(",") else f"gpu,{queues}"
    return [
        ([sys.executable, "-m", "elmlab", "worker", "--queues", queues, "--concurrency", "1",
          "--hostname", f"gpu{i}-{pid}@%h"], {"CUDA_VISIBLE_DEVICES": mask})
        for i, mask in enumerate(gpu_masks(n_gpus, inherited))
    ]


def _gpu_workers(args: argparse.Namespace, queues: str) -> int:
    import signal
    import subprocess

    if args.gpus == "all":
        import torch

        n = torch.cuda.device_count()
    elif args.gpus.isdigit():
        n = int(args.gpus)
    else:
        raise UsageError(f"--gpus takes a number or 'all', not {args.gpus!r}")
    if n < 1:
        raise UsageError("--gpus: no CUDA device is visible on this machine")
    from elm_core.runtime import DEVICE_LOST_EXIT

    commands = gpu_worker_commands(n, queues, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    procs = [subprocess.Popen(argv, env={**os.environ, **env}) for argv, env in commands]
    print(f"started {n} GPU worker(s): one process per GPU", file=sys.stderr)
    try:
        codes: list[int] = []
        while any(p is not None for p in procs):
            time.sleep(1.0)
            for i, p in enumerate(procs):
                if p is None or p.poll() is None:
                    continue
                if p.returncode == DEVICE_LOST_EXIT:  # a broken CUDA context: a fresh process for that GPU
                    print(f"GPU worker {i} exited after a device error; starting it again", file=sys.stderr)
                    procs[i] = subprocess.Popen(commands[i][0], env={**os.environ, **commands[i][1]})
                else:
                    codes.append(p.returncode)
                    procs[i] = None
        return max(codes)
    except KeyboardInterrupt:
        for p in procs:
            if p is not None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            if p is not None:
                p.wait()
        return 130


def cmd_recorder(args: argparse.Namespace) -> int:
    from elm_core.settings import get_settings
    from elmlab.lock import instance_lock
    from workers.celery_app import app, ensure_dirs
    from workers.reaper import Reaper

    settings = get_settings()
    ensure_dirs(settings)
    hostname = args.hostname or f"recorder-{os.getpid()}@%h"
    # One recorder per home; recorders of one broker on other machines are safe too (records are
    # idempotent, reaping is claimed per lost attempt: workers/state.py).
    with instance_lock(settings.home / "recorder.lock", hostname, "a recorder"):
        reaper = None if args.no_reaper else Reaper()
        if reaper is not None:
            reaper.start()
        try:
            app.worker_main(_celery_argv("results", 1, "solo", hostname, args.loglevel, args.logfile))
        finally:
            if reaper is not None:
                reaper.stop()
    return 0


N_MIN = 8  # elm_core.sweeps.N_MIN, spelled here so that building the parser imports no torch


def add_core_arguments(p: argparse.ArgumentParser) -> None:
    """--concurrency and --threads-per-run (`elmlab worker`, `elmlab up`; workers/cores.py)."""
    p.add_argument("--concurrency", type=int, default=None,
                   help="runs trained at a time, each in its own process (default: one per core)")
    p.add_argument("--threads-per-run", type=int, default=None,
                   help="torch threads of each run (default 1 when several runs train at a time, else every core)")


def register(sub) -> None:
    p = sub.add_parser("submit", help="queue one run (prints its run id)")
    add_spec_arguments(p)
    p.set_defaults(func=cmd_submit, _parser=p)

    p = sub.add_parser("sweep", help="queue a sweep: iso-budget, a budget ladder, or one axis (prints the run ids)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, text in (("iso", "one budget, one run per d_m (the budget decides N)"),
                       ("ladder", "several budgets at one allocation (d_m) or several"),
                       ("axis", "one of n_neurons, d_m, d_brch, d_tree varied, the rest fixed")):
        k = kinds.add_parser(kind, help=text)
        k.add_argument("--task", default="text")
        k.add_argument("--seeds", type=_int_list, help="comma-separated seeds (default 0)")
        k.add_argument("--sweep-id", help="default: <kind>-<random hex>")
        k.add_argument("--dry-run", action="store_true", help="print the specs as JSON; queue nothing")
        if kind != "axis":
            k.add_argument("--keep-off-curve", action="store_true",
                           help=f"queue designs with fewer than {N_MIN} neurons or under 95%% of their budget too")
        types = dict(SPEC_FLAGS)
        for name in SWEEP_PASS:
            k.add_argument("--" + name.replace("_", "-"), dest=name, type=types[name], default=None)
        if kind == "iso":
            k.add_argument("--budget", type=count, required=True)
            k.add_argument("--d-m-values", type=_int_list, required=True, help="e.g. 2,4,8,16")
        elif kind == "ladder":
            k.add_argument("--budgets", type=_count_list, required=True, help="e.g. 2e4,6e4,2e5")
            k.add_argument("--d-m", type=int)
            k.add_argument("--d-m-values", type=_int_list)
        else:
            k.add_argument("--axis", choices=("n_neurons", "d_m", "d_brch", "d_tree"), required=True)
            k.add_argument("--values", type=_int_list, required=True)
            k.add_argument("--budget", type=count)
            k.add_argument("--d-m", type=int)
            k.add_argument("--n-neurons", type=int)
        k.set_defaults(func=cmd_sweep, _parser=k)
    from elmlab.commands.search import add_replay, add_search

    add_replay(kinds)  # `sweep replay` and `sweep search`: elmlab/commands/search.py
    add_search(kinds, SWEEP_PASS, dict(SPEC_FLAGS), _int_list, count)

    p = sub.add_parser("status", help="runs in the store, with live progress when the broker answers")
    p.add_argument("--json", action="store_true", help="a JSON list of runs")
    p.add_argument("--sweep", help="only this sweep id")
    p.add_argument("--status", help="only runs with this status")
    p.add_argument("--all", action="store_true", help="include reference (published) runs")
    p.set_defaults(func=cmd_status, _parser=p)

    p = sub.add_parser("cancel", help="cancel queued or running runs: by id, a whole sweep, or every queued run")
    p.add_argument("run_ids", metavar="RUN", nargs="*")
    p.add_argument("--sweep", metavar="ID", help="every queued or running run of this sweep")
    p.add_argument("--all-queued", action="store_true", help="every queued run (running ones go on)")
    p.set_defaults(func=cmd_cancel, _parser=p)

    p = sub.add_parser("retry", help="queue a failed or cancelled run again (same run id, next attempt)")
    p.add_argument("run_id", metavar="RUN")
    p.set_defaults(func=cmd_retry, _parser=p)

    p = sub.add_parser("worker", help="a training worker (for this or another machine)")
    p.add_argument("--queues", default="train", help="comma-separated: train, gpu (default train)")
    add_core_arguments(p)
    p.add_argument("--pool", choices=("prefork", "solo"), default="prefork",
                   help="prefork (default): each run in its own child process, the worker answers pings meanwhile; "
                   "solo: one run at a time in the worker itself")
    p.add_argument("--hostname", help="Celery node name (default worker-<pid>@<host>)")
    p.add_argument("--gpus", help="N or 'all': start one worker process per GPU (queues gpu and train)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--logfile")
    p.set_defaults(func=cmd_worker, _parser=p)

    p = sub.add_parser("recorder", help="write finished runs into the store and re-queue runs whose worker died")
    p.add_argument("--hostname", help="Celery node name (default recorder-<pid>@<host>)")
    p.add_argument("--no-reaper", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--logfile")
    p.set_defaults(func=cmd_recorder, _parser=p)
