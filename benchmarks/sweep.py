"""Sweep benchmark: a whole iso-budget sweep end to end through the queue, one run at a time against
one run per core (figures for docs/performance.md, "Sweeps").

    python -m benchmarks.sweep [--rounds 2] [--sides serial,default] [--baseline CHECKOUT]
                               [--budget 50000] [--d-m-values 2,3,4,6,8,12] [--seeds 0,1] [--steps 150]

Each side of each round gets a fresh temporary ELMLAB_HOME and its own `elmlab up --no-browser`
(embedded broker): `default` with no core options (one run per core), `serial` with
`--concurrency 1 --threads-per-run 2` (one run at a time on two threads), and with `--baseline`
a side `baseline` that runs another checkout of ELM Lab (e.g. a worktree of an older release) with
its own defaults, through this interpreter with that checkout first on PYTHONPATH. Once the
worker says it is ready, `elmlab sweep iso` queues the sweep; the store is read every `--poll-s`
seconds (in this process: a poll costs no interpreter start) until every run is done or failed.
Sides run interleaved (A B A B). `wall_s`: the last run's final record minus the first run's queued
record; `run_wall_s`: each run's own training time (its record). `max_metric_diff` compares the
test metric per (d_m, seed) between this checkout's sides (`max_metric_diff_vs_baseline`: against
the baseline's, other code). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIDES = {"default": [], "serial": ["--concurrency", "1", "--threads-per-run", "2"]}
COLUMNS = ("run_id", "status", "d_m", "seed", "test_metric", "wall_time_s", "device", "created_at", "updated_at")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(logs: Path, up: subprocess.Popen, timeout: float) -> None:
    """Until the worker's and the recorder's logs say `ready.` (RuntimeError if `up` exits or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"elmlab up exited with {up.returncode}; see {logs}")
        texts = [(logs / f"{name}.log").read_text(errors="replace") if (logs / f"{name}.log").exists() else ""
                 for name in ("worker", "recorder")]
        if all(" ready." in t for t in texts):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the worker was not ready after {timeout:.0f} s; see {logs}")


def _stop(up: subprocess.Popen) -> None:
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def run_side(side: str, flags: list[str], checkout: Path | None, sweep: list[str], n_runs: int,
             poll_s: float, timeout: float) -> dict[str, Any]:
    from elm_core.settings import Settings
    from elm_core.store import Store

    home = Path(tempfile.mkdtemp(prefix=f"elmlab-sweep-{side}-"))
    env = {**os.environ, "ELMLAB_HOME": str(home)}
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [os.environ.get("PYTHONPATH")])])
    cwd = checkout or Path(__file__).resolve().parent.parent
    cli = [sys.executable, "-m", "elmlab.cli"]
    up = subprocess.Popen([*cli, "up", "--no-browser", "--port", str(_free_port()), *flags], env=env, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_ready(home / "logs", up, timeout=180)
        sweep_id = f"iso-{secrets.token_hex(4)}"
        subprocess.run([*cli, "sweep", "iso", "--sweep-id", sweep_id, *sweep], env=env, cwd=cwd,
                       capture_output=True, text=True, check=True)
        store = Store(Settings(home=home).store_path)
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            rows = [r for r in store.rows(COLUMNS, sweep_id=sweep_id) if r["status"] in ("done", "failed")]
            if len(rows) >= n_runs:
                break
        else:
            raise RuntimeError(f"{len(rows)} of {n_runs} runs finished in {timeout:.0f} s; see {home / 'logs'}")
        return {
            "side": side,
            "wall_s": round(max(r["updated_at"] for r in rows) - min(r["created_at"] for r in rows), 1),
            "run_wall_s": sorted(round(r["wall_time_s"] or 0.0, 2) for r in rows),
            "devices": sorted({r["device"] or "?" for r in rows}),
            "failed": sum(r["status"] == "failed" for r in rows),
            "metrics": {f"{r['d_m']}/{r['seed']}": r["test_metric"] for r in rows},
        }
    finally:
        _stop(up)
        shutil.rmtree(home, ignore_errors=True)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}


def summarise(results: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    walls = {s: [r["wall_s"] for r in results if r["side"] == s] for s in sides}
    summary: dict[str, Any] = {s: _spread(w) for s, w in walls.items() if w}
    for s in sides:
        if s != "default" and walls.get(s) and walls.get("default"):
            ratios = [d / o for d, o in zip(walls["default"], walls[s], strict=True)]
            summary[f"default/{s}"] = {"median_of_medians": round(statistics.median(walls["default"])
                                                                  / statistics.median(walls[s]), 3),
                                       "per_round": [round(x, 3) for x in ratios]}
    def max_diff(a_sides: set[str], b_sides: set[str]) -> float | None:
        a = [r["metrics"] for r in results if r["side"] in a_sides]
        b = [r["metrics"] for r in results if r["side"] in b_sides]
        diffs = [abs(x[k] - y[k]) for x in a for y in b for k in x if x[k] is not None and y.get(k) is not None]
        return max(diffs, default=None)

    ours = set(sides) - {"baseline"}
    summary["max_metric_diff"] = max_diff(ours, ours)  # this checkout's sides: the same runs, other cores
    if "baseline" in sides:
        summary["max_metric_diff_vs_baseline"] = max_diff(ours, {"baseline"})  # other code: may differ
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sides", default="serial,default", help="comma-separated: serial, default")
    p.add_argument("--baseline", type=Path, help="another checkout of ELM Lab, run with its defaults as a side")
    p.add_argument("--budget", default="50000")
    p.add_argument("--d-m-values", default="2,3,4,6,8,12")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", default="150")
    p.add_argument("--poll-s", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a side may take")
    args = p.parse_args(argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.rounds < 1 or not set(sides) <= set(SIDES):
        p.error(f"--rounds must be >= 1 and --sides a comma-separated list of {', '.join(SIDES)}")
    if args.baseline is not None:
        if not (args.baseline / "elmlab" / "cli.py").exists():
            p.error(f"--baseline {args.baseline}: not a checkout of ELM Lab (no elmlab/cli.py)")
        sides.append("baseline")
    sweep = ["--budget", args.budget, "--d-m-values", args.d_m_values, "--seeds", args.seeds, "--steps", args.steps]
    n_runs = len(args.d_m_values.split(",")) * len(args.seeds.split(","))
    results = []
    for _ in range(args.rounds):
        for side in sides:
            checkout = args.baseline.resolve() if side == "baseline" else None
            r = run_side(side, SIDES.get(side, []), checkout, sweep, n_runs, args.poll_s, args.timeout)
            print(json.dumps(r), file=sys.stderr, flush=True)  # each side as it ends
            results.append(r)
    print(json.dumps({"rounds": results, "summary": summarise(results, sides)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
