"""What a run changes in its process, and how a worker tells a broken device from a failed run.

A run sets process globals: the global RNG (its seed), the TF32 matmul flags (`precision: tf32`),
deterministic algorithms on CUDA, and the scans use the buffer pool and change the thread count while
they run. `run_globals` sets them for one run and puts every one back afterwards, so that a run after a
tf32 run in the same worker process computes in full float32 and starts from the same RNG state as in a
fresh process. Because they are process globals, two runs must never share a process at the same time:
`elmlab worker` refuses a thread pool with more than one run at a time.

Flush-to-zero of denormals (torch.set_flush_denormal, which has no getter) is set by every run and left on.

After a fatal device error (an illegal memory access, a device-side assert, a launch failure) the CUDA
context of the process is unusable: every later run in it would fail. `note_device_error` records such an
error, `device_lost()` tells the worker, which then exits with DEVICE_LOST_EXIT for its supervisor (the
prefork pool, `elmlab worker --gpus`, or the service manager) to start a fresh process. An out-of-memory
error is not fatal: the run fails, and as after every CUDA run the allocator's cache is emptied once the
run's tensors are gone (`run_globals`), so the next run starts with the whole device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICE_LOST_EXIT = 75  # EX_TEMPFAIL: the process is broken, the machine may be fine; start a fresh one
# CUBLAS_WORKSPACE_CONFIG makes cuBLAS deterministic; it must be set before the first matmul of the process
CUBLAS_DETERMINISTIC = ":4096:8"

# Messages of CUDA errors after which the context is corrupt (the CUDA runtime's own wording)
FATAL_MARKERS = (
    "illegal memory access",
    "illegal instruction",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "uncorrectable ecc error",
    "cudaerrorillegaladdress",
    "cudaerrorlaunchfailure",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "device not ready",
    "gpu is lost",
)

_lost: list[str] = []


@contextmanager
def run_globals(seed: int, precision: str, device: torch.device) -> Iterator[None]:
    """Seed the RNG and set the precision flags for one run; restore all of them when it ends."""
    cuda = device.type == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    saved_rng = torch.get_rng_state()
    saved_cuda_rng = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    tf32 = precision == "tf32"
    try:
        torch.manual_seed(seed)  # also seeds every CUDA device
        torch.set_flush_denormal(True)  # fast-decaying memories produce denormals that slow the CPU 30x
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        if cuda:  # index_add (the synapse fold) is nondeterministic on CUDA without this
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        matmul_tf32, cudnn_tf32, matmul_precision, threads, det, det_warn = saved
        torch.set_float32_matmul_precision(matmul_precision)  # first: it also sets the matmul flag
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.set_rng_state(saved_rng)
        if cuda and not _lost:  # the run's tensors are gone by now: give their cached blocks back (after OOM too)
            torch.cuda.empty_cache()
        if saved_cuda_rng is not None and not _lost:
            torch.cuda.set_rng_state_all(saved_cuda_rng)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def is_fatal_device_error(exc: BaseException) -> bool:
    """True for an error after which this process's CUDA context cannot be trusted (not out-of-memory)."""
    if is_out_of_memory(exc):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in FATAL_MARKERS)


def note_device_error(exc: BaseException) -> None:
    """After a run failed with `exc`: remember it if it was a fatal device error."""
    if is_fatal_device_error(exc):
        _lost.append(f"{type(exc).__name__}: {exc}")


def device_lost() -> str | None:
    """The fatal device error this process met, if any (the process must then exit)."""
    return _lost[0] if _lost else None
