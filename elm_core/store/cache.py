"""What a reading process remembers about the store's files. Files never change once written, so:

- each file is checked once per (path, size, mtime): magic bytes, footer, required columns;
- small files (one record each, the common case between compactions) are read once and their rows
  kept in memory, so a query reads from disk only the large (compacted) files. Opening a file
  costs DuckDB about a millisecond and a half, so a store of a few thousand unfolded records
  would otherwise take seconds per query.

One `FileCache` per store folder per process, shared by all `Store` objects on it (thread-safe).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from elm_core.store.files import Checked, StoreFile, StoreWarning, check_file


@dataclass(frozen=True)
class Snapshot:
    """The readable part of one listing of the store."""

    listing: list[StoreFile]  # the listing it was made from (readable or not)
    files: list[StoreFile]  # every readable file covered (large and small)
    large: list[str]  # paths that queries read from disk
    large_columns: set[str]  # columns present in at least one large file
    small: pa.Table | None  # rows of the small files (SCHEMA), None if there are none


class FileCache:
    _instances: dict[str, FileCache] = {}
    _instances_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Checked] = {}
        self._tables: dict[str, pa.Table] = {}  # the rows of each small file, by path
        self._small: pa.Table | None = None  # all of them in one table; None if there are none

    @classmethod
    def for_root(cls, root: Path) -> FileCache:
        key = str(root.resolve())
        with cls._instances_lock:
            return cls._instances.setdefault(key, cls())

    @classmethod
    def reset(cls) -> None:
        """Forget everything (benchmarks use it to measure a fresh process)."""
        with cls._instances_lock:
            cls._instances.clear()

    def snapshot(self, files: list[StoreFile]) -> Snapshot | None:
        """The readable files of a listing; warns (StoreWarning) naming each unreadable one.
        None if a file vanished while being read (a compaction folded it): list again."""
        vanished = False
        with self._lock:
            seen: dict[str, Checked] = {}
            tables: dict[str, pa.Table] = {}
            added: list[pa.Table] = []
            for f in files:
                c = self._seen.get(f.path)
                if c is None or (c.size, c.mtime_ns) != (f.size, f.mtime_ns):
                    try:
                        c, table = check_file(f)
                    except FileNotFoundError:
                        vanished = True
                        continue
                    if table is not None:
                        tables[f.path] = table
                        added.append(table)
                elif f.path in self._tables:
                    tables[f.path] = self._tables[f.path]
                seen[f.path] = c
            self._seen = seen
            small = self._small
            if len(tables) - len(added) < len(self._tables):  # some small files went (or changed): rebuild
                small = pa.concat_tables(list(tables.values())).combine_chunks() if tables else None
            elif added:
                small = pa.concat_tables(([] if small is None else [small]) + added).combine_chunks()
            self._small, self._tables = small, tables
        if vanished:
            return None
        good, large, columns = [], [], set()
        for f in files:
            c = seen[f.path]
            if c.columns is None:
                warnings.warn(f"skipping {f.path}: {c.why}", StoreWarning, stacklevel=4)
                continue
            good.append(f)
            if not c.small:
                large.append(f.path)
                columns |= c.columns
        return Snapshot(files, good, large, columns, small if small is not None and small.num_rows else None)

    def mark_bad(self, f: StoreFile, why: str) -> None:
        """A large file whose footer looked fine but whose data does not decode."""
        with self._lock:
            self._seen[f.path] = Checked(f.size, f.mtime_ns, None, why)
