"""How a local worker spreads runs over this machine's cores.

A worker trains `concurrency` runs at once, each in its own pool process (Celery prefork), each on
`threads` intra-op threads. By default every core is busy with its own run: concurrency = the cores
this process may use (its CPU affinity mask, else os.cpu_count()) and one thread per run; a single
run gets every core. One thread per run is the fast choice for a sweep: a parallel kernel waits for
its slowest thread, and with every core busy some thread is always descheduled (docs/performance.md,
"Threads on a shared machine"), while independent runs never wait for each other.

`elmlab worker` puts the thread count in ELMLAB_RUN_THREADS; the pool processes inherit it and
`pin_threads` applies it before each run, so the run's record (device "cpu:<machine>x<threads>")
carries the run's own thread count.
"""

from __future__ import annotations

import os

RUN_THREADS_ENV = "ELMLAB_RUN_THREADS"


def available_cores() -> int:
    """The cores this process may run on: its affinity mask's size where the OS has one, else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def run_slots(concurrency: int | None = None, threads_per_run: int | None = None) -> tuple[int, int]:
    """(runs at a time, threads per run): concurrency defaults to `available_cores()`, threads to 1
    when more than one run trains at a time, else to every core. ValueError for a value below 1."""
    cores = available_cores()
    conc = cores if concurrency is None else concurrency
    if conc < 1:
        raise ValueError(f"--concurrency must be at least 1, got {conc}")
    threads = (1 if conc > 1 else cores) if threads_per_run is None else threads_per_run
    if threads < 1:
        raise ValueError(f"--threads-per-run must be at least 1, got {threads}")
    return conc, threads


def pin_threads() -> int:
    """Set torch's intra-op threads to ELMLAB_RUN_THREADS (when set and valid); the thread count now in force."""
    import torch

    text = os.environ.get(RUN_THREADS_ENV, "").strip()
    if text.isdigit() and int(text) >= 1 and torch.get_num_threads() != int(text):
        torch.set_num_threads(int(text))
    return torch.get_num_threads()


def warm_start() -> list[str]:
    """Import, in the worker's main process before Celery forks its pool, what the first run of every
    pool process would otherwise import for itself: torch, the training code and the native loops
    (built if need be), and, with a CPU build of torch, the compiler front end that torch.optim imports
    lazily when the first optimizer is made (torch._dynamo, about 3 s on a 2-core machine). A pool
    process then starts its first run about 5 s sooner, and the pool processes share those pages.

    Runs no tensor operation beyond a one-element tensor, so no intra-op thread pool exists before the
    fork, and never touches a GPU: with a CUDA or ROCm build the optimizer step is left out (what it
    imports may ask the driver for its devices, and a CUDA driver initialised before a fork is unusable
    after it). Returns what it loaded; a failure is logged and left to the runs, whose records carry it."""
    import logging

    loaded: list[str] = []
    try:
        import torch

        from elm_core import native, train  # noqa: F401 - imported for the pool processes

        loaded.append("elm_core.train")
        if native.load() is not None:
            loaded.append("native")
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
            loaded.append("optimizer")
    except Exception as exc:  # noqa: BLE001 - a worker must start even if this fails
        logging.getLogger("elmlab.worker").warning("warm start incomplete (%s: %s)", type(exc).__name__, exc)
    return loaded
