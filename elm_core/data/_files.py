"""File helpers shared by the loaders: content hashes, the cache folder, atomic extraction."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

_MB = 1 << 20


def content_hash(paths: Iterable[Path]) -> str:
    """A fast content hash: sha256 over, per file, its size, first MiB and last MiB (16 hex digits).

    Files of up to 2 MiB are hashed whole. The same bytes give the same hash wherever they live
    (enwik8 read directly or extracted from enwik8.zip hash alike).
    """
    h = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        h.update(f"{size}:".encode())
        with open(path, "rb") as f:
            if size <= 2 * _MB:
                h.update(f.read())
            else:
                h.update(f.read(_MB))
                f.seek(size - _MB)
                h.update(f.read(_MB))
    return h.hexdigest()[:16]


def cache_dir(data_dir: Path) -> Path:
    """`<data_dir>/.cache`, or a per-user folder in the temp directory when that is not writable."""
    for candidate in (data_dir / ".cache", Path(tempfile.gettempdir()) / f"elmlab-cache-{os.getuid()}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise OSError(f"no writable cache folder (tried {data_dir / '.cache'} and the temp directory)")


def materialise(dest: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Create `dest` once by calling `write` on a temp file that is renamed into place when complete.

    An existing `dest` is complete by construction, so concurrent workers and interrupted runs never
    see a half-written file.
    """
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
