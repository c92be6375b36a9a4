"""`elmlab gpu-check [--json]`: what a GPU machine must pass before it takes runs, in one command.

    elmlab gpu-check           # a line per part, then the JSON summary
    elmlab gpu-check --json    # the JSON summary only

Each part runs in a process of its own under its own time limit (a CUDA error ends that part, not the
check), all in about 8 minutes on one GPU:
1. tests  `pytest -m cuda` over tests/elm_core (the fast path on CUDA in each recurrent mode, bf16 and
          TF32 against the autograd path, determinism, resume, no host sync in a training step);
2. bench  `elmlab bench --device cuda` on small, paper-slice, wide and paper (the paper's enwik8 network:
          N 440, d_m 30, d_tree 50, d_brch 15, B 8);
3. train  a TRAIN_S-second training run per precision (fp32, tf32, bf16) of the paper's network on the
          bundled text corpus, the three at once on the GPU (their throughputs share it);
4. resume a run SIGKILLed after a checkpoint and resumed in a fresh process: attempt 1, done, and
          the same test BPC as the run without interruption.
Summary: {"cuda": true, "device": ..., "ok": every part passed, "parts": {...}, "wall_s": ...}; exit 1
unless ok. Without CUDA: {"cuda": false, "skipped": "<why>"} and exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[2] / "tests"
PRECISIONS = ("fp32", "tf32", "bf16")
TRAIN_S = 120.0
# Time limits (s): at most 465 s in all with the default TRAIN_S (the train part: TRAIN_S + 45 for start-up)
LIMITS_S = {"tests": 120, "bench": 80, "resume": 100}
TRAIN_SLACK_S = 45
BENCH_CONFIGS = "small,paper-slice,wide,paper"
PAPER = dict(n_neurons=440, d_m=30, d_tree=50, d_brch=15, batch_size=8, seq_len=100)
TINY = dict(n_neurons=16, d_m=4, d_tree=4, d_brch=4, batch_size=4, seq_len=20)  # --tiny: a CPU self-test


def register(sub) -> None:
    p = sub.add_parser("gpu-check", help="CUDA tests, benchmarks, a run per precision and a resume, as one JSON")
    p.add_argument("--json", action="store_true", help="print the JSON summary only")
    p.add_argument("--train-s", type=float, default=TRAIN_S, help=f"seconds per precision run (default {TRAIN_S:g})")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tiny models: checks the check
    p.add_argument("--part", help=argparse.SUPPRESS)  # run one part in this process (the check's children)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    if args.part:
        print(json.dumps(_run_part(args)), flush=True)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        why = f"no CUDA device visible to torch {torch.__version__} (built with CUDA {torch.version.cuda or 'none'})"
        print(json.dumps({"cuda": False, "skipped": why}))
        return 0
    if args.train_s <= 0:
        from elmlab.cli import UsageError

        raise UsageError(f"--train-s must be positive, got {args.train_s}")
    t0 = time.monotonic()
    parts = {"tests": _tests(args), "bench": _bench(args), "train": _train_all(args), "resume": _resume(args)}
    for name, part in parts.items():
        if not args.json:
            print(f"{name:<7} {'ok' if part['ok'] else 'FAILED'}  {part.get('summary', '')}", file=sys.stderr)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    ok = all(p["ok"] for p in parts.values())
    print(json.dumps({"cuda": args.device == "cuda", "device": device, "ok": ok, "parts": parts,
                      "wall_s": round(time.monotonic() - t0, 1)}))
    return 0 if ok else 1


# --- the parent: one child process per part --------------------------------------------------------
def _child(args: argparse.Namespace, part: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "elmlab", "gpu-check", "--part", part, "--device", args.device,
            "--train-s", str(args.train_s), *(["--tiny"] if args.tiny else []), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _collect(proc: subprocess.Popen, limit: float) -> dict[str, Any]:
    """The child's JSON (its last line), or why there is none."""
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ok": False, "summary": f"over its {limit:.0f} s limit"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "rc": proc.returncode, "summary": tail[:300]}
    return json.loads(lines[-1])


def _tests(args: argparse.Namespace) -> dict[str, Any]:
    if not (TESTS / "elm_core").is_dir():
        return {"ok": False, "summary": f"{TESTS} not found: gpu-check runs from a checkout with its tests"}
    argv = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(TESTS / "elm_core")]
    t0 = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=LIMITS_S["tests"],
                              cwd=TESTS.parent)
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"over its {LIMITS_S['tests']} s limit"}
    lines = done.stdout.strip().splitlines()
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                                lines[-1] if lines else "")}
    failed = [line.split(" ", 1)[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return {"ok": done.returncode == 0, "rc": done.returncode, "counts": counts, "failed": failed[:20],
            "wall_s": round(time.monotonic() - t0, 1), "summary": lines[-1] if lines else done.stderr[-300:]}


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    configs = "small" if args.tiny else BENCH_CONFIGS
    argv = [sys.executable, "-m", "elmlab", "bench", "--json", "--device", args.device, "--configs", configs,
            "--steps", "1" if args.tiny else "5", "--warmup", "0" if args.tiny else "2"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=LIMITS_S["bench"])
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"over its {LIMITS_S['bench']} s limit"}
    if done.returncode != 0:
        return {"ok": False, "rc": done.returncode, "summary": (done.stderr.strip().splitlines() or [""])[-1]}
    result = json.loads(done.stdout)
    keep = ("train_chars_per_s", "fwd_chars_per_s", "train_step_ms", "peak_mem_mb", "sgemm_fraction")
    configs_out = {name: {k: round(r[k], 3) for k in keep} for name, r in result["configs"].items()}
    summary = ", ".join(f"{n} {r['train_chars_per_s']:.0f} ch/s" for n, r in configs_out.items())
    return {"ok": True, "configs": configs_out, "summary": f"train {summary}"}


def _train_all(args: argparse.Namespace) -> dict[str, Any]:
    limit = args.train_s + TRAIN_SLACK_S
    procs = {p: _child(args, "train", "--precision", p) for p in PRECISIONS}  # at once: one GPU, 3 runs
    runs = {p: _collect(proc, limit) for p, proc in procs.items()}
    summary = ", ".join(f"{p} {r.get('steps', 0)} steps {r.get('tokens_per_s', 0):.0f} ch/s" for p, r in runs.items())
    return {"ok": all(r["ok"] for r in runs.values()), "runs": runs, "summary": summary}


def _resume(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    limit = LIMITS_S["resume"]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="elmlab-gpu-check-") as work:

        def step(name: str) -> tuple[int | None, dict[str, Any]]:
            proc = _child(args, name, "--workdir", work)
            left = max(1.0, limit - (time.monotonic() - t0))
            result = _collect(proc, left)
            return proc.returncode, result

        rc_killed, _ = step("resume-kill")
        _, resumed = step("resume-run")
        _, whole = step("resume-whole")
    killed = rc_killed == -signal.SIGKILL
    same = resumed.get("test_metric") is not None and resumed.get("test_metric") == whole.get("test_metric")
    ok = killed and resumed.get("status") == "done" and resumed.get("attempt") == 1 and same
    return {"ok": bool(ok), "killed": killed, "resumed": resumed, "whole": whole,
            "summary": f"resumed test BPC {resumed.get('test_metric')} vs whole {whole.get('test_metric')}"}


# --- the children ----------------------------------------------------------------------------------
def _spec(args: argparse.Namespace, **changes: Any):
    from elm_core.spec import RunSpec

    size = TINY if args.tiny else PAPER
    base = dict(task="text", device=args.device, eval_chars=2000 if args.tiny else 8000, test_chars=4000 if args.tiny
                else 20000, **size)
    return RunSpec(**{**base, **changes})


def _summary(record) -> dict[str, Any]:
    last = record.curve[-1].train_loss if record.curve else None
    return {"status": record.status, "reason": record.reason, "steps": record.steps, "attempt": record.attempt,
            "train_loss": last, "valid_metric": record.valid_metric, "test_metric": record.test_metric,
            "wall_s": record.wall_time_s, "tokens_per_s": round(record.tokens_seen / max(record.wall_time_s, 1e-9), 1)}


def _run_part(args: argparse.Namespace) -> dict[str, Any]:
    import math

    import torch

    from elm_core.train import train

    if args.part == "train":
        started: list[float] = []  # TRAIN_S of training, counted from the first step (after the set-up)

        def stop() -> bool:
            if not started:
                started.append(time.monotonic())
            return time.monotonic() - started[0] > args.train_s

        record = train(_spec(args, steps=10**7, precision=args.precision), should_stop=stop)
        out = _summary(record)
        if args.device == "cuda":
            out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        loss = out["train_loss"]
        out["ok"] = record.status == "cancelled" and record.steps > 0 and loss is not None and math.isfinite(loss)
        return out
    steps, kill_after = (12, 6) if args.tiny else (60, 30)
    dropout = {"recurrent_dropout": 0.2, "input_dropout": 0.1}
    if args.part == "resume-whole":
        return _summary(train(_spec(args, steps=steps, run_id="whole", model=dropout, eval_every=steps)))
    spec = _spec(args, steps=steps, run_id="resume", model=dropout, eval_every=steps, checkpoint_dir="resume",
                 checkpoint_every_s=1e-6)
    root = Path(args.workdir)  # the checkpoint folder a worker's settings would name
    if args.part == "resume-kill":  # killed as a lost worker is: no clean-up, the checkpoint of the step before
        calls: list[int] = []

        def kill() -> bool:
            calls.append(1)
            if len(calls) > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return False

        train(spec, should_stop=kill, checkpoint_root=root)
        return {"ok": False, "summary": "the run was not killed"}
    if args.part == "resume-run":
        return _summary(train(spec, checkpoint_root=root))
    raise ValueError(f"unknown gpu-check part {args.part!r}")
