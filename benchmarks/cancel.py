"""Load benchmark: `elmlab status` with N queued runs, cancelling them all, and a worker draining their
cancelled messages; embedded or on Redis (figures for docs/queue.md).

    python -m benchmarks.cancel --n 1000 [--mode embedded|redis] [--redis-url redis://127.0.0.1:6379/15] [--no-drain]

A fresh temporary ELMLAB_HOME (and, for Redis, the given DB, flushed before and after). N runs are
queued as one sweep (`submit_many`), no worker running; then `elmlab status` runs `--status-repeats`
times as a fresh process (`status_s`: each wall time, `status_cpu_s`: its CPU time, the figure to
compare on a loaded machine; `status_median_s`, `status_cpu_median_s`), and once more to list which
of the heavy packages it imported (`status_heavy_imports`, of HEAVY: none over queued runs); then
every run is cancelled in one call (`cancel_s`, `cancel_cpu_s`); then (unless `--no-drain`) one
worker (`--concurrency 1`) starts and `drain_per_s` is the number of cancelled messages it took off
the train queue per second, from its first to its last (or until `--drain-timeout` seconds).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPEC = {"task": "text", "n_neurons": 8, "d_m": 3, "d_tree": 3, "d_brch": 3, "steps": 20, "batch_size": 2,
        "seq_len": 10, "eval_chars": 100, "test_chars": 100}


# Packages `elmlab status` needs only for running runs' live progress (Celery, kombu) or not at all.
HEAVY = ("torch", "celery", "kombu", "pandas", "polars", "scipy")
# `elmlab status` in this process, then the top-level packages of argv[1:] that it imported, as JSON.
_IMPORTS = """
import io, json, sys
from elmlab.cli import main
sys.stdout = io.StringIO()
main(["status"])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))), file=sys.__stdout__)
"""


def time_status(env: dict[str, str], repeats: int) -> dict[str, Any]:
    """`elmlab status` over the home of `env`, `repeats` times as a fresh process: wall and CPU seconds of
    each and their medians; then once more, the packages of HEAVY that it imported."""
    status_s, status_cpu_s = [], []
    for _ in range(repeats):
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-m", "elmlab.cli", "status"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        status_s.append(round(time.perf_counter() - t0, 3))
        status_cpu_s.append(round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3))
    done = subprocess.run([sys.executable, "-c", _IMPORTS, *HEAVY], env=env, check=True, capture_output=True,
                          text=True)
    return {"status_s": status_s, "status_cpu_s": status_cpu_s,
            "status_median_s": round(statistics.median(status_s), 3) if status_s else None,
            "status_cpu_median_s": round(statistics.median(status_cpu_s), 3) if status_cpu_s else None,
            "status_heavy_imports": json.loads(done.stdout)}


def _cancel_all(submit: Any, ids: list[str], settings: Any) -> None:
    many = getattr(submit, "cancel_many", None)
    if many is not None:
        many(ids, settings=settings)
    else:  # a version without the batched call: one by one
        for run_id in ids:
            submit.cancel(run_id, settings=settings)


def _drain(env: dict[str, str], settings: Any, n: int, timeout: float) -> dict[str, Any]:
    from workers.health import queue_lengths

    worker = subprocess.Popen([sys.executable, "-m", "elmlab.cli", "worker", "--concurrency", "1",
                               "--loglevel", "WARNING"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first = last = None
        left = n
        deadline = time.monotonic() + timeout + 60  # start-up included
        while time.monotonic() < deadline:
            left = queue_lengths(settings)["train"]
            now = time.monotonic()
            if left is not None and left < n and first is None:
                first, deadline = (now, n - left), now + timeout
            if left == 0:
                last = now
                break
            time.sleep(0.05)
        if first is None:
            return {"drained": 0, "drain_per_s": 0.0}
        end = last if last is not None else time.monotonic()
        drained = n - (left or 0) - first[1]
        return {"drained": n - (left or 0), "drain_s": round(end - first[0], 2),
                "drain_per_s": round(drained / max(end - first[0], 1e-6), 1)}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def bench(mode: str, n: int, redis_url: str, status_repeats: int, drain_timeout: float,
          drain: bool = True) -> dict[str, Any]:
    from elm_core.settings import Settings
    from workers import submit

    home = Path(tempfile.mkdtemp(prefix=f"elmlab-bench-cancel-{mode}-"))
    settings = Settings(home=home, broker_url=redis_url if mode == "redis" else None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMLAB_")}
    env["ELMLAB_HOME"] = str(home)
    flush = None
    if mode == "redis":
        import redis

        env["ELMLAB_BROKER_URL"] = redis_url
        flush = redis.Redis.from_url(redis_url)
        flush.flushdb()
    try:
        ids = submit.submit_many([{**SPEC, "seed": i, "sweep_id": "load"} for i in range(n)], settings=settings)
        status = time_status(env, status_repeats)
        t0, c0 = time.perf_counter(), time.process_time()
        _cancel_all(submit, ids, settings)
        cancel_s, cancel_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        from elm_core.store import Store

        cancelled = Store(settings.store_path).counts_by_status()["cancelled"]
        return {"mode": mode, "n": n, **status,
                "cancel_s": round(cancel_s, 2), "cancel_cpu_s": round(cancel_cpu_s, 2),
                "cancel_ms_per_run": round(cancel_s / n * 1e3, 2), "recorded_cancelled": cancelled,
                **(_drain(env, settings, n, drain_timeout) if drain else {})}
    finally:
        if flush is not None:
            flush.flushdb()
            flush.close()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cancel", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--mode", choices=("embedded", "redis"), default="embedded")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    p.add_argument("--status-repeats", type=int, default=3)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--no-drain", action="store_true", help="no worker: stop after the cancel")
    args = p.parse_args(argv)
    if args.n < 1 or args.status_repeats < 0:
        p.error("--n must be >= 1 and --status-repeats >= 0")
    out = bench(args.mode, args.n, args.redis_url, args.status_repeats, args.drain_timeout, drain=not args.no_drain)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
