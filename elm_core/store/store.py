"""`Store`: the results store (docs/design.md decision 2), a folder of immutable Parquet run files.

Writers add files (one record each, written atomically, named by run id, attempt and status);
readers open their own in-memory DuckDB connection over the current file list; nothing is ever
rewritten in place, so any number of processes may write and read at once. A run's history is its
records (queued -> running -> done / failed / cancelled; a reaper's re-queue is attempt + 1), and
its status is that of its latest record (ordering in elm_core/store/sql.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from elm_core.records import COLUMNS, STATUSES, RunRecord
from elm_core.store import sql
from elm_core.store.cache import FileCache, Snapshot
from elm_core.store.files import (
    REFERENCE_DIR,
    RUNS_DIR,
    SCHEMA,
    StoreFile,
    deep_check,
    empty_table,
    fsync_dir,
    list_files,
    record_file_name,
    record_row,
    safe_id,
    temp_path,
    write_atomic,
)
from elm_core.store.reference import REFERENCE_CSV, read_reference_csv

if TYPE_CHECKING:  # Polars is imported where a frame is made: `rows` answers without it (`elmlab status`)
    import polars as pl

Selection = str | Sequence[str] | None
Builder = Callable[[Snapshot], tuple[str, dict[str, Any]]]
_RETRIES = 5
_STALE_TEMP_S = 3600.0
_RECORD_SUFFIX = re.compile(r"a\d{5,}-[a-z]+\.parquet")  # what follows "<safe id>--" in a record's file name


class ReadOnlyRecordError(ValueError):
    """An attempt to overwrite or alter a reference (published) run."""


def _empty(columns: list[str]) -> pl.DataFrame:
    import polars as pl

    return pl.from_arrow(empty_table(pa.schema([SCHEMA.field(c) for c in columns])))  # type: ignore[return-value]


def _record_from_row(row: dict[str, Any]) -> RunRecord:
    # A None stands for "not set": let the model's default apply (columns of older files).
    return RunRecord.from_row({k: v for k, v in row.items() if v is not None})


def _one_line(exc: Exception) -> str:
    """A pydantic error in one line: `field: message; field: message`."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors())
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _read_export(path: Path) -> pl.DataFrame:
    """An export file as a frame; ValueError (one line, naming the file) for anything unreadable."""
    import polars as pl

    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: not an export file: give a .csv or .parquet written by `elmlab export`")
    try:
        if path.suffix == ".csv":
            schema = {c: pl.from_arrow(empty_table(pa.schema([SCHEMA.field(c)]))).dtypes[0] for c in COLUMNS}
            return pl.read_csv(path, schema_overrides=schema)
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, pa.ArrowException, ValueError) as exc:
        raise ValueError(f"{path}: cannot read it as a {path.suffix[1:]} export ({_one_line(exc)})") from None


def _runs_query(
    task: Selection,
    sweep_id: Selection,
    status: Selection,
    budget: float | None,
    budget_tol: float,
    source: Selection,
    with_curve: bool,
    only: Sequence[str] | None = None,
) -> Builder:
    """The statement of `Store.runs` (and `Store.rows`, with `only` its columns)."""
    if budget is not None and not budget > 0:
        raise ValueError(f"invalid budget={budget!r}: must be a positive number of parameters")

    def build(snap: Snapshot) -> tuple[str, dict[str, Any]]:
        q = sql.Query(snap.large, snap.large_columns, snap.small is not None, with_curve, only=only)
        where = sql.filters(
            q, task=task, sweep_id=sweep_id, status=status, source=source, budget=budget, budget_tol=budget_tol
        )
        return q.run(f"SELECT {q.out()} FROM latest{where} ORDER BY created_at, run_id")

    return build


def _vanished(snap: Snapshot) -> bool:
    """Whether a file the query was to read from disk has gone (folded away by a compaction)."""
    return not all(os.path.exists(p) for p in snap.large)


class Store:
    """The results store at `path` (default: settings.store_path). Cheap to create; holds no handles."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            from elm_core.settings import get_settings

            path = get_settings().store_path
        self.path = Path(path).expanduser()

    @property
    def _cache(self) -> FileCache:
        return FileCache.for_root(self.path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- writing -------------------------------------------------------------------------------

    def put(self, record: RunRecord, *, sync: bool = True) -> bool:
        """Record one state of a run; True if this call wrote it. Writing a record whose (run_id,
        attempt, status) is already recorded changes nothing (the first write wins). Reference runs
        are read-only. `sync=False` skips the fsyncs (the file is still whole or absent; a power cut may
        lose it): for a record that is no more durable than what it describes, such as a queued run's message."""
        existing = self._reference_files(record.run_id)
        name = record_file_name(record)
        if existing and record.source != "reference":
            raise ReadOnlyRecordError(
                f"run {record.run_id!r} is a reference (published) run and is read-only; "
                f"a {record.source!r} record cannot replace it"
            )
        if existing and name not in {os.path.basename(p) for p in existing}:
            raise ReadOnlyRecordError(
                f"reference run {record.run_id!r} is read-only: it cannot change to "
                f"status={record.status!r}, attempt={record.attempt}"
            )
        folder = self.path / (REFERENCE_DIR if record.source == "reference" else RUNS_DIR)
        table = pa.Table.from_pylist([record_row(record)], schema=SCHEMA)
        return write_atomic(folder, name, table, sync=sync)

    def put_many(self, records: Sequence[RunRecord], *, sync: bool = True) -> str | None:
        """Record many local states at once, as one file (`batch-<time>-<tag>.parquet`): one write and
        one fsync, not one per record, and readers see all of them or none. Returns the file's name
        (None when `records` is empty), for `withdraw_file`. Duplicates of records already stored count
        once, as for `put`. A reference record, or a record of a run the store holds as a reference run,
        is a ReadOnlyRecordError before anything is written."""
        if not records:
            return None
        held = sorted(
            {r.run_id for r in records if r.source == "reference"} | set(self.reference_runs(r.run_id for r in records))
        )
        if held:
            raise ReadOnlyRecordError(
                f"reference (published) runs are read-only: {', '.join(map(repr, held[:5]))}"
                f"{f' and {len(held) - 5} more' if len(held) > 5 else ''}"
            )
        name = f"batch-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}.parquet"
        table = pa.Table.from_pylist([record_row(r) for r in records], schema=SCHEMA)
        write_atomic(self.path / RUNS_DIR, name, table, sync=sync)
        return name

    def withdraw_file(self, name: str) -> None:
        """Remove a file `put_many` wrote (its runs' messages could not all be sent)."""
        if not name.startswith("batch-") or os.sep in name:
            raise ValueError(f"not a batch file of this store: {name!r}")
        try:
            os.unlink(self.path / RUNS_DIR / name)
        except FileNotFoundError:
            pass

    def withdraw(self, record: RunRecord) -> None:
        """Remove the one file `put(record)` wrote (a `queued` record whose message could not be sent:
        the store must not show a run that no queue holds). Reference records are never withdrawn."""
        if record.source == "reference":
            raise ReadOnlyRecordError(f"reference run {record.run_id!r} is read-only")
        try:
            os.unlink(self.path / RUNS_DIR / record_file_name(record))
        except FileNotFoundError:
            pass

    def _reference_files(self, run_id: str) -> list[str]:
        """The reference folder's record files of `run_id`, `<safe id>--a<attempt>-<status>.parquet`: one
        listing matched by name, no glob compiled per run id (and "abc---a00000-done.parquet", a record
        of run "abc-", is not one of run "abc")."""
        folder = self.path / REFERENCE_DIR
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        prefix = safe_id(run_id) + "--"
        return [
            os.path.join(folder, n) for n in names if n.startswith(prefix) and _RECORD_SUFFIX.fullmatch(n, len(prefix))
        ]

    def import_reference_csv(self, path: str | Path = REFERENCE_CSV) -> int:
        """Load a published sweep (CSV of the reference shape) as read-only reference records.

        Returns the number of rows in the file; importing the same file again adds nothing."""
        records = read_reference_csv(path)
        for record in records:
            self.put(record)
        return len(records)

    def import_records(self, path: str | Path) -> int:
        """Load records exported by `export` (Parquet or CSV, with the curve) into this store.

        Every row is checked before any is written; a file that is not an export, or a row that is
        not a valid record, is a ValueError naming the file (and the row, counted from 1). A row may
        not change the provenance of a run this store already holds: a `reference` row over a local
        run (or the reverse) is refused, so an edited export cannot turn local runs read-only."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        frame = _read_export(path)
        missing = [c for c in ("run_id", "task", "status") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: not an export of run records; missing columns: {', '.join(missing)}")
        rows = frame.select([c for c in frame.columns if c in COLUMNS]).to_dicts()
        records = []
        for i, row in enumerate(rows, start=1):
            try:
                records.append(_record_from_row(row))
            except (ValidationError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}: row {i}: {_one_line(exc)}") from None
        for i, record in enumerate(records, start=1):
            held = self.run(record.run_id)
            if held is not None and held.source != record.source:
                raise ValueError(
                    f"{path}: row {i}: run {record.run_id!r} is a {held.source} run here; an import "
                    f"cannot make it a {record.source} run"
                )
        for record in records:
            self.put(record)
        return len(records)

    def reference_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Those of `run_ids` the store holds a reference (read-only) record of, in one directory listing."""
        held = {n.split("--", 1)[0] for n in self._names((REFERENCE_DIR,))}
        return [r for r in dict.fromkeys(run_ids) if safe_id(r) in held]

    def latest(self, run_ids: Iterable[str]) -> dict[str, RunRecord]:
        """The latest record (without its learning curve) of each of `run_ids` the store holds, in one read."""
        import polars as pl

        ids = list(dict.fromkeys(run_ids))
        frame = self.runs().filter(pl.col("run_id").is_in(ids))
        return {row["run_id"]: _record_from_row(row) for row in frame.iter_rows(named=True)}

    def is_reference(self, run_id: str) -> bool:
        """Whether the store holds a reference (published, read-only) record of this run id."""
        return bool(self._reference_files(run_id))

    # --- reading -------------------------------------------------------------------------------

    def _files(self, subdirs: tuple[str, ...] = (RUNS_DIR, REFERENCE_DIR)) -> list[StoreFile]:
        return list_files(self.path, subdirs)

    def _snapshot(self, subdirs: tuple[str, ...] = (RUNS_DIR, REFERENCE_DIR)) -> Snapshot:
        """The readable files now. A directory listing is not atomic: one taken while a compaction
        renames its output into place and deletes what it folded may miss both the new file and
        some old ones. So list again; a compact file that has appeared meanwhile means list anew."""
        for _ in range(_RETRIES):
            snap = self._cache.snapshot(self._files(subdirs))
            if snap is None:  # a file vanished while being read
                continue
            listed = {os.path.basename(f.path) for f in snap.listing}
            if any(n.startswith("compact-") and n not in listed for n in self._names(subdirs)):
                continue
            return snap
        raise RuntimeError(f"{self.path}: the store kept changing while being read; try again")

    def _names(self, subdirs: tuple[str, ...]) -> list[str]:
        names: list[str] = []
        for sub in subdirs:
            try:
                names += os.listdir(self.path / sub)
            except FileNotFoundError:
                pass
        return names

    @staticmethod
    def _connect(snap: Snapshot) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        if snap.small is not None:
            con.register(sql.Query.SMALL, snap.small)
        return con

    def _frame(self, build: Builder, with_curve: bool) -> pl.DataFrame:
        """The answer of the statement `build(snapshot)` as a Polars frame."""
        return self._answer(build, lambda rel: rel.pl(), lambda: _empty(sql.columns(with_curve)))

    def _answer(self, build: Builder, fetch: Callable[[duckdb.DuckDBPyRelation], Any], empty: Callable[[], Any]) -> Any:
        """Run the statement `build(snapshot)` over the store's current readable files; `fetch` turns its
        relation into the answer, `empty()` is the answer when the store holds no file.

        If the query fails because a compaction folded files away meanwhile, list again; if it
        fails on a file whose footer looked fine but whose data does not decode, skip that file."""
        error: Exception | None = None
        for _ in range(_RETRIES):
            snap = self._snapshot()
            if not snap.files:
                return empty()
            statement, params = build(snap)
            con = self._connect(snap)
            try:
                return fetch(con.sql(statement, params=params))
            except duckdb.Error as exc:
                error = exc
                if _vanished(snap):
                    continue
                bad = [(f, why) for f in snap.files if f.path in snap.large and (why := deep_check(f.path))]
                if not bad:
                    raise
                for f, why in bad:
                    self._cache.mark_bad(f, why)
            finally:
                con.close()
        assert error is not None
        raise error

    def runs(
        self,
        task: Selection = None,
        sweep_id: Selection = None,
        status: Selection = None,
        budget: float | None = None,
        budget_tol: float = 0.05,
        source: Selection = None,
        *,
        with_curve: bool = False,
    ) -> pl.DataFrame:
        """One row per run, its latest record, in canonical columns (records.COLUMNS; `curve` only
        with `with_curve`), ordered by (created_at, run_id). Filters apply to the latest record;
        each takes one value or a list. `budget`: the iso-budget slice
        |coalesce(budget, params) - budget| <= budget_tol * budget."""
        build = _runs_query(task, sweep_id, status, budget, budget_tol, source, with_curve)
        return self._frame(build, with_curve)

    def rows(
        self,
        columns: Sequence[str],
        task: Selection = None,
        sweep_id: Selection = None,
        status: Selection = None,
        budget: float | None = None,
        budget_tol: float = 0.05,
        source: Selection = None,
    ) -> list[dict[str, Any]]:
        """The runs of `runs(...)`, in its order, as plain dicts of the given columns only: a quick read
        (fewer columns decoded, no Polars) for `elmlab status`. ValueError for a column not in records.COLUMNS."""
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}: see elm_core.records.COLUMNS")
        build = _runs_query(task, sweep_id, status, budget, budget_tol, source, "curve" in columns, columns)

        def fetch(rel: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
            names = rel.columns
            return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]

        return self._answer(build, fetch, list)

    def run(self, run_id: str) -> RunRecord | None:
        """The latest record of one run, with its learning curve; None if the run is unknown."""

        def build(snap: Snapshot) -> tuple[str, dict[str, Any]]:
            q = sql.Query(snap.large, snap.large_columns, snap.small is not None, True, run_id=run_id)
            return q.run(f"SELECT {q.out()} FROM latest")

        frame = self._frame(build, with_curve=True)
        return _record_from_row(frame.row(0, named=True)) if frame.height else None

    def history(self, run_id: str, *, with_curve: bool = False) -> pl.DataFrame:
        """Every record of one run, oldest first (the last row is the run's current state)."""

        def build(snap: Snapshot) -> tuple[str, dict[str, Any]]:
            q = sql.Query(snap.large, snap.large_columns, snap.small is not None, with_curve, run_id=run_id)
            return q.run(f"SELECT {q.out()} FROM rec ORDER BY {sql.HISTORY_ORDER}")

        return self._frame(build, with_curve)

    def counts_by_status(self) -> dict[str, int]:
        """Number of runs per latest status (every status present, zeros included)."""
        frame = self.runs()
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in frame.group_by("status").len().iter_rows():
            counts[status] = n
        return counts

    def state_token(self) -> str:
        """A cheap fingerprint of the store's contents (file names, sizes, mtimes): equal tokens,
        equal answers. Changes on every write and on compaction."""
        h = hashlib.sha256()
        for f in self._files():
            h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def info(self) -> dict[str, Any]:
        """Counts, files and bytes, for `elmlab store info`."""
        files = self._files()
        good = self._snapshot().files
        counts = self.counts_by_status()
        compact = [f for f in good if os.path.basename(f.path).startswith("compact-")]
        return {
            "path": str(self.path),
            "runs": sum(counts.values()),
            "by_status": counts,
            "reference_runs": int(self.runs(source="reference").height),
            "files": len(files),
            "compact_files": len(compact),
            "skipped_files": len(files) - len(good),
            "bytes": sum(f.size for f in files),
        }

    # --- export and compaction -----------------------------------------------------------------

    def export(
        self,
        path: str | Path,
        fmt: Literal["parquet", "csv"] = "parquet",
        *,
        with_curve: bool = True,
        extra: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
        **selection: Any,
    ) -> int:
        """Write the runs of a selection (the filters of `runs`) to `path`, with the columns `extra`
        adds to the frame (the CLI adds the runs' tags and notes); returns the row count."""
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"unknown export format {fmt!r}: use parquet or csv")
        frame = self.runs(with_curve=with_curve, **selection)
        if extra is not None:
            frame = extra(frame)
        path = Path(path)
        tmp = temp_path(path.parent, path.name)
        if fmt == "parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)
        os.replace(tmp, path)
        return frame.height

    def compact(self) -> dict[str, Any]:
        """Fold every file in runs/ into one `compact-<time>.parquet` (all history kept, duplicates
        dropped), written atomically; then delete exactly the folded files. Files written meanwhile
        are untouched, and a reader that sees both the new file and the old ones gets the same
        answer (duplicates count once). Unreadable files are left in place (and warned about)."""
        t0 = time.perf_counter()
        nothing = {"folded_files": 0, "rows": 0, "bytes_before": 0, "bytes_after": 0, "output": None}
        runs_dir = self.path / RUNS_DIR
        if not runs_dir.is_dir():
            return nothing
        with open(self.path / ".compact.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one compaction at a time per store
            self._remove_stale_temps(runs_dir)
            for _ in range(_RETRIES):
                snap = self._snapshot((RUNS_DIR,))
                if len(snap.files) < 2:
                    return nothing
                name = f"compact-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}.parquet"
                try:
                    rows = self._write_compact(snap, runs_dir, name)
                    break
                except duckdb.Error:
                    bad = [(f, why) for f in snap.files if f.path in snap.large and (why := deep_check(f.path))]
                    if not bad and not _vanished(snap):
                        raise
                    for f, why in bad:
                        self._cache.mark_bad(f, why)
            else:
                raise RuntimeError(f"{self.path}: compaction kept failing")
            for f in snap.files:
                try:
                    os.unlink(f.path)
                except FileNotFoundError:
                    pass
            fsync_dir(runs_dir)
        return {
            "folded_files": len(snap.files),
            "rows": rows,
            "bytes_before": sum(f.size for f in snap.files),
            "bytes_after": (runs_dir / name).stat().st_size,
            "output": name,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _write_compact(self, snap: Snapshot, folder: Path, name: str) -> int:
        """Every record of `snap`, deduplicated and sorted by run, as `folder/name`; returns the rows."""
        q = sql.Query(snap.large, snap.large_columns, snap.small is not None, with_curve=True)
        statement, params = q.run(f"SELECT * FROM rec ORDER BY run_id, {sql.HISTORY_ORDER}")
        tmp = temp_path(folder, name)
        rows = 0
        con = self._connect(snap)
        try:
            reader = con.sql(statement, params=params).to_arrow_reader(65_536)
            with pq.ParquetWriter(tmp, SCHEMA) as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(SCHEMA))
                    rows += batch.num_rows
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            fsync_dir(folder)
        finally:
            con.close()
            if tmp.exists():
                tmp.unlink()
        return rows

    @staticmethod
    def _remove_stale_temps(folder: Path) -> None:
        """Temp files of writers that died mid-write (older than an hour)."""
        now = time.time()
        for p in folder.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > _STALE_TEMP_S:
                    p.unlink()
            except FileNotFoundError:
                pass
