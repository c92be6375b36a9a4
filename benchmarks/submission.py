"""Submission benchmark: time to queue N runs, embedded and on Redis (figures for docs/queue.md).

    python -m benchmarks.submission --n 1000 [--modes embedded,redis] [--redis-url redis://127.0.0.1:6379/15]

Each mode gets a fresh temporary ELMLAB_HOME (and, for Redis, the given DB, which must be empty:
the keys the run added are deleted after it, so no other DB is touched); no worker runs, so every
message stays queued. First N runs submitted one by one through the client (`submit(spec)`,
settings from the environment, as the CLI and the dashboard call it): `submit_total_s`; then N more
by the same path with each part timed: validation (parse_spec, the task's sizes, the queued record),
the `queued` record written to the store (fsynced, as the client writes it), the broker message;
then N more in one `submit_many` (a sweep). Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPEC = {"task": "text", "n_neurons": 8, "d_m": 3, "d_tree": 3, "d_brch": 3, "steps": 20, "batch_size": 2,
        "seq_len": 10, "eval_chars": 100, "test_chars": 100}


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "mean": round(statistics.fmean(values) * 1e3, 3),
        "p50": round(values[len(values) // 2] * 1e3, 3),
        "p95": round(values[min(len(values) - 1, int(len(values) * 0.95))] * 1e3, 3),
        "max": round(values[-1] * 1e3, 3),
    }


@contextlib.contextmanager
def _environment(settings: Any) -> Iterator[None]:
    """ELMLAB_HOME and ELMLAB_BROKER_URL of `settings` in the environment inside (the others unset)."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("ELMLAB_")}
    for k in saved:
        del os.environ[k]
    os.environ["ELMLAB_HOME"] = str(settings.home)
    if settings.broker_url:
        os.environ["ELMLAB_BROKER_URL"] = settings.broker_url
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.upper().startswith("ELMLAB_")]:
            del os.environ[k]
        os.environ.update(saved)


def bench(mode: str, n: int, redis_url: str) -> dict[str, Any]:
    from elm_core.settings import Settings
    from elm_core.store import Store
    from workers import health, submit

    home = Path(tempfile.mkdtemp(prefix=f"elmlab-bench-{mode}-"))
    settings = Settings(home=home, broker_url=redis_url if mode == "redis" else None)
    client = keys_before = None
    if mode == "redis":
        import redis

        client = redis.Redis.from_url(redis_url)
        keys_before = set(client.scan_iter(count=1000))
        if keys_before:
            raise ValueError(f"{redis_url} holds {len(keys_before)} keys: give the benchmark a Redis DB of its own "
                             "(--redis-url redis://HOST:PORT/DB)")
    try:
        store = Store(settings.store_path)
        submit.submit({**SPEC, "seed": 10_000}, settings=settings)  # warm-up: connections, imports
        with _environment(settings):
            t0, cpu0 = time.perf_counter(), time.process_time()
            for i in range(n):
                submit.submit({**SPEC, "seed": 30_000 + i})
            one_by_one_s, one_by_one_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        validate, publish, record, total = [], [], [], []
        for i in range(n):
            t0 = time.perf_counter()
            spec, rec = submit.validate({**SPEC, "seed": i}, settings=settings)
            t1 = time.perf_counter()
            store.put(rec)  # as the client writes it: fsynced with its folder
            t2 = time.perf_counter()
            submit.publish(settings, spec.model_dump(mode="json"), rec.run_id, 0, rec.created_at, spec.device)
            t3 = time.perf_counter()
            validate.append(t1 - t0)
            record.append(t2 - t1)
            publish.append(t3 - t2)
            total.append(t3 - t0)
        t0 = time.perf_counter()
        many = submit.submit_many([{**SPEC, "seed": 20_000 + i} for i in range(n)], settings=settings)
        many_s = time.perf_counter() - t0
        queued = health.health(timeout=0.3, settings=settings)["queues"]
        return {
            "mode": mode, "n": n, "broker": health.health(timeout=0.1, settings=settings)["broker_url"],
            "submit_total_s": round(one_by_one_s, 2), "submit_cpu_s": round(one_by_one_cpu_s, 2),
            "per_submission_ms": _ms(total), "validate_ms": _ms(validate), "publish_ms": _ms(publish),
            "store_put_ms": _ms(record), "total_s": round(sum(total), 2),
            "submissions_per_s": round(n / sum(total), 1),
            "submit_many_ms_per_run": round(many_s / len(many) * 1e3, 3), "submit_many_total_s": round(many_s, 2),
            "queued_after": queued, "runs_in_store": store.runs().height,
        }
    finally:
        if client is not None:
            added = set(client.scan_iter(count=1000)) - keys_before
            if added:
                client.delete(*added)
            client.close()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.submission", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--modes", default="embedded,redis")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.n < 1 or not modes or not set(modes) <= {"embedded", "redis"}:
        p.error("--n must be >= 1 and --modes a comma-separated list of embedded, redis")
    out = []
    for mode in modes:
        try:
            out.append(bench(mode, args.n, args.redis_url))
        except Exception as exc:  # e.g. no Redis here: report it and go on
            out.append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(out, indent=2))
    return 0 if all("error" not in r for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
