"""Where the layer scans (elm_core.fast) run: a pool for their sequence buffers and a cap on their threads.

Fresh memory is expensive on CPU (a page fault per 4 KiB on first touch); a training step writes its
sequence buffers anew each time, so reusing last step's buffers saves that cost. A buffer is handed out
again only when its storage is referenced by the pool alone, which is read from PyTorch's storage use
count (`torch._C._storage_Use_Count`, private: tests/elm_core/test_workspace.py fails if the pool stops
reusing buffers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

# Threads. The time loops follow torch's intra-op setting unless SCAN_THREADS caps it. Two threads
# speed the loops up on an idle two-core machine (about 1.5x for B = 32); on a machine whose other
# core is busy, every parallel kernel may wait for a descheduled thread, and one thread is several
# times faster (torch.set_num_threads(1), `elmlab bench --threads 1`).
SCAN_THREADS: int | None = None


class Workspace:
    """Up to `per_shape` pooled CPU buffers per (shape, dtype), at most `max_bytes` in all."""

    def __init__(self, max_bytes: int = 2**31, per_shape: int = 8) -> None:
        self.max_bytes, self.per_shape = max_bytes, per_shape
        self.lock = threading.Lock()
        self.pool: dict[tuple, list] = {}
        self.bytes = 0
        self.enabled = hasattr(torch._C, "_storage_Use_Count")

    def empty(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of `shape` with the dtype and device of `like`: a free pooled one if any."""
        if not self.enabled or like.device.type != "cpu":
            return like.new_empty(shape)
        key = (shape, like.dtype)
        with self.lock:
            entries = self.pool.setdefault(key, [])
            for storage in entries:
                if torch._C._storage_Use_Count(storage._cdata) == 1:  # only the pool holds it
                    return like.new_empty(0).set_(storage, 0, shape)
            out = like.new_empty(shape)
            nbytes = out.untyped_storage().nbytes()
            if len(entries) < self.per_shape and self.bytes + nbytes <= self.max_bytes:
                entries.append(out.untyped_storage())
                self.bytes += nbytes
            return out

    def clear(self) -> None:
        with self.lock:
            self.pool.clear()
            self.bytes = 0


WORKSPACE = Workspace()


def clear_workspace() -> None:
    """Release the pooled sequence buffers (a process that outlives its runs calls this after each)."""
    WORKSPACE.clear()


@contextmanager
def scan_threads() -> Iterator[None]:
    """At most SCAN_THREADS intra-op threads inside."""
    before = torch.get_num_threads()
    cap = SCAN_THREADS is not None and before > SCAN_THREADS
    if cap:
        torch.set_num_threads(SCAN_THREADS)
    try:
        yield
    finally:
        if cap:
            torch.set_num_threads(before)
