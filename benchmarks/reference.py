"""The reference implementation's throughput, measured beside `elmlab bench` (`--vs-reference PATH`).

PATH is a folder holding the reference's harness, `ref_bench.py`, which runs in the reference's own
environment (`--reference-python`, the Python that has its libraries). It is called as

    <python> PATH/ref_bench.py --json --configs small,wide --steps S --warmup W [--threads 1]

with `--threads 1` (one core) under `taskset -c CPU`: XLA's one-thread flag alone still let it use
1.2-1.8 cores. CPU is `--reference-cpu`, by default the last CPU this process may run on. It
prints, as its last line, one JSON object `{"configs": {name: {"train_chars_per_s": ...,
"fwd_chars_per_s": ..., ...}}, ...}`. The harness knows the configurations in HARNESS_CONFIGS;
others are measured on this side only. Nothing of the reference is part of ELM Lab.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HARNESS = "ref_bench.py"
HARNESS_CONFIGS = ("small", "paper-slice", "wide")
THROUGHPUT_KEYS = ("train_chars_per_s", "fwd_chars_per_s")
TIMEOUT_S = 3600.0  # the reference compiles each configuration first


class ReferenceError(ValueError):
    """The harness is missing, cannot start, fails, or prints something else than its JSON."""


def harness_path(folder: str | Path) -> Path:
    """`folder/ref_bench.py`; ReferenceError when it is not there."""
    path = Path(folder).expanduser() / HARNESS
    if not path.is_file():
        raise ReferenceError(f"--vs-reference: no {HARNESS} in {Path(folder).expanduser()}")
    return path


def check_python(python: str) -> str:
    """The reference's Python as a path; ReferenceError when it is not found."""
    found = shutil.which(python)
    if found is None:
        raise ReferenceError(f"--reference-python: {python} not found (the Python of the reference's environment)")
    return found


def default_cpu() -> int:
    """The last CPU this process may run on: where the reference runs on one core by default."""
    return max(os.sched_getaffinity(0))


def check_cpu(cpu: int) -> int:
    """`cpu` when this machine has it; ReferenceError otherwise."""
    count = os.cpu_count() or 1
    if not 0 <= cpu < count:
        raise ReferenceError(f"--reference-cpu must be a CPU of this machine (0-{count - 1}), got {cpu}")
    return cpu


def harness_argv(harness: Path, python: str, names: Sequence[str], *, steps: int, warmup: int,
                 threads: int | None = None, cpu: int | None = None) -> list[str]:
    """The harness's command line; with threads == 1 it runs on one core, `taskset -c cpu`
    (default_cpu() when cpu is None). ReferenceError when taskset is not installed."""
    argv = [python, str(harness), "--json", "--configs", ",".join(names), "--steps", str(steps),
            "--warmup", str(warmup)]
    if threads != 1:
        return argv
    taskset = shutil.which("taskset")
    if taskset is None:
        raise ReferenceError("--threads 1 runs the reference on one core with taskset, which is not installed")
    return [taskset, "-c", str(default_cpu() if cpu is None else cpu), *argv, "--threads=1"]


def run_harness(harness: Path, python: str, names: Sequence[str], *, steps: int, warmup: int,
                threads: int | None = None, cpu: int | None = None,
                timeout: float = TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """One run of the harness on `names` (those it knows): {name: its figures}. ReferenceError on failure."""
    names = [n for n in names if n in HARNESS_CONFIGS]
    if not names:
        return {}
    argv = harness_argv(harness, python, names, steps=steps, warmup=warmup, threads=threads, cpu=cpu)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=harness.parent, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReferenceError(f"the reference harness {harness} did not run: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReferenceError(f"the reference harness {harness} exited with status {done.returncode}: {tail}")
    lines = done.stdout.strip().splitlines()
    try:
        configs = json.loads(lines[-1])["configs"]
        return {n: configs[n] for n in names}
    except (IndexError, ValueError, KeyError, TypeError):
        raise ReferenceError(f"the reference harness {harness} printed no JSON with every configuration "
                             f"({', '.join(names)})") from None


def spread(values: Iterable[float]) -> dict[str, float]:
    """min / median / max of `values`."""
    values = list(values)
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def throughput_spread(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{config: {key: spread}} of the throughput keys over rounds of {config: figures}."""
    names = [n for n in rounds[0] if all(n in r for r in rounds)] if rounds else []
    return {n: {k: spread(r[n][k] for r in rounds) for k in THROUGHPUT_KEYS if k in rounds[0][n]} for n in names}


def ratios(ours: Sequence[dict[str, dict[str, Any]]],
           reference: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{config: {key: spread}} of ours / reference, round by round (rounds ran interleaved, so a
    ratio compares two measurements taken a moment apart on a machine whose speed drifts)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in reference[0] if reference else ():
        out[name] = {k: spread(o[name][k] / r[name][k] for o, r in zip(ours, reference, strict=True))
                     for k in THROUGHPUT_KEYS if k in reference[0][name] and k in ours[0][name]}
    return out
