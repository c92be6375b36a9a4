"""The embedded result backend: Celery's `file://` backend with atomic writes.

Celery's FilesystemBackend writes a result file in place, so a reader (the dashboard's progress
view, the reaper) can catch a half-written file while a worker's heartbeat rewrites it. This
subclass writes a temporary file and renames it over the old one; readers see the old or the new
content, never a mix. Configured as `workers.fsbackend:AtomicFilesystemBackend+file:///path`.
"""

from __future__ import annotations

import os

from celery.backends.filesystem import FilesystemBackend
from kombu.utils.encoding import ensure_bytes


class AtomicFilesystemBackend(FilesystemBackend):
    def __init__(self, url=None, *args, **kwargs):
        if url and url.startswith("file://"):  # the folder may not exist yet in a fresh ELMLAB_HOME
            os.makedirs(self._find_path(url), exist_ok=True)
        super().__init__(url, *args, **kwargs)

    def set(self, key, value):
        name = self._filename(key)
        tmp = name + b".tmp" + str(os.getpid()).encode() + b"." + os.urandom(4).hex().encode()
        try:
            with self.open(tmp, "wb") as out:
                out.write(ensure_bytes(value))
            os.replace(tmp, name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, key):
        try:
            self.unlink(self._filename(key))
        except FileNotFoundError:
            pass

    def add(self, key, value) -> bool:
        """Set `key` only if it does not exist (an exclusive create); True if this call created it."""
        try:
            fd = os.open(self._filename(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(ensure_bytes(value))
        return True
