"""The store on disk: the Parquet schema, file names, atomic writes, and the checked file listing.

Layout of a store folder:

    runs/<run id>--a<attempt>-<status>.parquet   one record (one row) per file, immutable
    runs/compact-<time>-<tag>.parquet            many records folded together by `Store.compact`
    runs/batch-<time>-<tag>.parquet              many records written at once by `Store.put_many`
    reference/<run id>--a<attempt>-<status>.parquet   published runs (read-only, never folded)
    runs/.<name>.<random>.tmp                    a write in progress (ignored by readers)

A record's file name is a function of (run_id, attempt, status) only, so writing the same record
twice finds the file already there and changes nothing (the first write wins).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic_core import PydanticUndefined

from elm_core.records import COLUMNS, STATUSES, RunRecord

RUNS_DIR = "runs"
REFERENCE_DIR = "reference"
DIGEST = "_digest"  # store-only column: a hash of the record's content (a deterministic tie-break)

# Order of a run's records: the phase (queued < running < terminal) decides within one attempt;
# the rank breaks ties between terminal statuses with equal updated_at (a result beats an error).
PHASE = {"queued": 0, "running": 1, "cancelled": 2, "failed": 2, "done": 2}
RANK = {"queued": 0, "running": 1, "cancelled": 2, "failed": 3, "done": 4}
assert set(PHASE) == set(RANK) == set(STATUSES)


class StoreWarning(UserWarning):
    """A file in the store was skipped (corrupt, truncated or not a run file)."""


# --- schema ------------------------------------------------------------------------------------


def _arrow_type(annotation: Any) -> pa.DataType:
    """int -> int64, float -> float64, bool -> bool, anything else (str, Literal, JSON dict/list) -> string."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    args = tuple(a for a in args if a is not type(None))
    if args == (bool,):
        return pa.bool_()
    if args == (int,):
        return pa.int64()
    if args == (float,):
        return pa.float64()
    return pa.string()


ARROW_TYPES: dict[str, pa.DataType] = {
    name: _arrow_type(field.annotation) for name, field in RunRecord.model_fields.items()
}
SCHEMA = pa.schema([pa.field(name, ARROW_TYPES[name]) for name in COLUMNS] + [pa.field(DIGEST, pa.string())])
SQL_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN"}


def empty_table(schema: pa.Schema) -> pa.Table:
    """`schema.empty_table()` without its cost: pyarrow's constructors from Python values (pa.array,
    pa.scalar, Schema.empty_table) import pandas when it is installed, a quarter of a second that a
    read of the store does not otherwise need."""
    return pa.Table.from_arrays([pa.nulls(0, field.type) for field in schema], schema=schema)


def _default_value(name: str) -> Any:
    """The value a missing column stands for: the field's default, JSON-encoded as `to_row` does."""
    field = RunRecord.model_fields[name]
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        raise KeyError(name)
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


# A file must hold these columns to be read; a column added to RunRecord later (with a default)
# may be missing from older files and then reads as its default.
REQUIRED: frozenset[str] = frozenset(
    {n for n, f in RunRecord.model_fields.items() if f.is_required()}
    | {"status", "attempt", "created_at", "updated_at"}
)
DEFAULTS: dict[str, Any] = {n: _default_value(n) for n in COLUMNS if n not in REQUIRED}


def record_row(record: RunRecord) -> dict[str, Any]:
    """`record.to_row()` plus the content digest."""
    row = record.to_row()
    row[DIGEST] = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:20]
    return row


# --- names -------------------------------------------------------------------------------------

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def safe_id(run_id: str) -> str:
    """`run_id` itself when it is a plain file name, else a cleaned form plus a hash (still 1:1)."""
    if _SAFE_ID.fullmatch(run_id) and "--" not in run_id:
        return run_id
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:80]).lstrip(".")
    return f"{cleaned}~{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"  # never starts with "."


def record_file_name(record: RunRecord) -> str:
    return f"{safe_id(record.run_id)}--a{record.attempt:05d}-{record.status}.parquet"


def write_atomic(folder: Path, name: str, table: pa.Table, *, sync: bool = True) -> bool:
    """Write `table` as `folder/name` unless that file exists; True if this call created it.

    The file is encoded in memory (one write, no statistics or dictionaries: a record file holds one
    row), written to a temp file in the same folder, fsynced (unless `sync` is False), then hard-linked
    to its name (fails if the name exists, so the first of two racing writers wins) or, where links
    are not supported, os.replace'd; with `sync` the folder is fsynced too, so the record is on disk
    when this returns. Without `sync` the file is still whole or absent, but a power cut may lose it.
    """
    final = folder / name
    if final.exists():
        return False
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=False, write_statistics=False)
    data = memoryview(sink.getvalue())
    tmp = temp_path(folder, name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            while data:
                data = data[os.write(fd, data) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            if final.exists():
                return False
            os.replace(tmp, final)
        if sync:
            fsync_dir(folder)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(folder: Path, stem: str) -> Path:
    """A hidden temp name in `folder` (readers skip names starting with '.')."""
    return folder / f".{stem}.{uuid.uuid4().hex[:8]}.tmp"


# --- listing and checking ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFile:
    path: str
    size: int
    mtime_ns: int


def list_files(root: Path, subdirs: tuple[str, ...] = (RUNS_DIR, REFERENCE_DIR)) -> list[StoreFile]:
    """Every `*.parquet` file under the given subfolders, sorted by path; temp files are left out."""
    out: list[StoreFile] = []
    for sub in subdirs:
        try:
            entries = list(os.scandir(root / sub))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.name.endswith(".parquet"):
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except FileNotFoundError:  # folded away by a compaction meanwhile
                continue
            out.append(StoreFile(e.path, st.st_size, st.st_mtime_ns))
    out.sort(key=lambda f: f.path)
    return out


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_null(actual):
        return True
    if expected == pa.string():
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_string_view(actual)
    if expected == pa.int64():
        return pa.types.is_integer(actual)
    if expected == pa.bool_():
        return pa.types.is_boolean(actual)
    return pa.types.is_floating(actual) or pa.types.is_integer(actual)


SMALL_ROWS = 64  # a file of at most this many rows (and SMALL_BYTES) is read whole and kept in memory
SMALL_BYTES = 1 << 20


@dataclass(frozen=True)
class Checked:
    """What one look at a file found: its columns and whether it is small, or why it is unreadable."""

    size: int
    mtime_ns: int
    columns: frozenset[str] | None  # None: unreadable or not a run file
    why: str = ""
    small: bool = False


def check_file(f: StoreFile) -> tuple[Checked, pa.Table | None]:
    """Look at one file: magic bytes at head and tail, then the footer (schema, row count). A small
    file is read whole and returned normalised to SCHEMA. FileNotFoundError if gone."""

    def bad(why: str) -> tuple[Checked, None]:
        return Checked(f.size, f.mtime_ns, None, why), None

    if f.size < 12:
        return bad("too small to be a Parquet file")
    with open(f.path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-4, os.SEEK_END)
        tail = fh.read(4)
        if head != b"PAR1" or tail != b"PAR1":
            return bad("not a Parquet file, or truncated (no PAR1 magic bytes at both ends)")
        try:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad footer
            return bad(f"unreadable Parquet footer ({exc})")
        names = set(schema.names)
        missing = sorted(REQUIRED - names)
        if missing:
            return bad(f"not a run file: missing columns {', '.join(missing)}")
        wrong = [n for n in names & set(ARROW_TYPES) if not _compatible(schema.field(n).type, ARROW_TYPES[n])]
        if wrong:
            return bad(f"not a run file: wrong types for columns {', '.join(sorted(wrong))}")
        columns = frozenset(names & (set(COLUMNS) | {DIGEST}))
        if pf.metadata.num_rows > SMALL_ROWS or f.size > SMALL_BYTES:
            return Checked(f.size, f.mtime_ns, columns), None
        try:
            table = pf.read(use_threads=False)
        except Exception as exc:  # noqa: BLE001
            return bad(f"unreadable Parquet data ({type(exc).__name__}: {exc})")
    return Checked(f.size, f.mtime_ns, columns, small=True), normalise(table)


def normalise(table: pa.Table) -> pa.Table:
    """`table` with exactly SCHEMA's columns (cast; a missing one all null). A column already of its
    type is taken as it is: a cast, even to the same type, imports pyarrow.compute (40 ms)."""
    present = set(table.column_names)  # a list built anew on every access: once, not once per field
    arrays = [
        _column_as(table.column(field.name), field.type) if field.name in present else pa.nulls(len(table), field.type)
        for field in SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _column_as(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == type_ else column.cast(type_)


def deep_check(path: str) -> str:
    """Empty if every page of the file decodes, else why not (used only after a query failed)."""
    try:
        pq.ParquetFile(path).read(use_threads=False)
    except FileNotFoundError:
        return ""
    except Exception as exc:  # noqa: BLE001
        return f"unreadable Parquet data ({type(exc).__name__}: {exc})"
    return ""
