"""One instance per home: a lock file held (fcntl.flock) for as long as its process lives.

    with instance_lock(settings.home / "up.lock", f"http://localhost:{port}"):   # UsageError if held
        ...

The kernel drops a flock when its holder dies however it dies (kill -9 included), so a lock file
left behind is stale by construction and simply taken over; the file names the holder (pid and
what it serves) so that the refusal can say which instance runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from elmlab.cli import UsageError

PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def instance_lock(path: Path, what: str, describe: str) -> Iterator[None]:
    """Hold `path` for the block; UsageError naming the running holder if another process holds it.
    `describe` is the thing locked ("ELM Lab (elmlab up)", "a recorder") for the message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise UsageError(f"{describe} is already running on home {path.parent} (pid {holder.get('pid', '?')}"
                             f"{', ' + holder['what'] if holder.get('what') else ''}); stop it first, or use another "
                             "ELMLAB_HOME") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> dict:
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A Popen `preexec_fn`: the child gets `sig` when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so `kill -9` of a supervisor leaves no orphans. If the parent died before the
    call took effect, the child ends at once. A no-op where prctl does not exist."""
    parent = os.getpid()

    def preexec() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux
            return
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
