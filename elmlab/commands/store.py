"""`elmlab store ...`, `elmlab export` and `elmlab import-reference`: the results store.

    elmlab store info                      runs per status, files, bytes
    elmlab store compact                   fold the run files into one (answers unchanged)
    elmlab store import FILE               records exported by `elmlab export` (Parquet or CSV), with their
                                           tags and notes
    elmlab store bench [--n 100000]        query times before and after compaction, as JSON
    elmlab export --format csv --out runs.csv [--task T] [--sweep S] [--status S] [--source SRC]
                                           (with the runs' tags and notes)
    elmlab import-reference [FILE]         a published sweep (default: the packaged enwik8 sweep)

The store is settings.store_path ($ELMLAB_STORE_DIR, else $ELMLAB_HOME/store) unless --store DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from elm_core.records import STATUSES


def _store(args: argparse.Namespace) -> Any:
    from elm_core.store import Store

    return Store(args.store) if args.store else Store()


def _add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", help="store folder (default: from ELMLAB_STORE_DIR / ELMLAB_HOME)")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def cmd_info(args: argparse.Namespace) -> int:
    info = _store(args).info()
    if args.json:
        _print_json(info)
        return 0
    print(f"store      {info['path']}")
    print(f"runs       {info['runs']}  (reference: {info['reference_runs']})")
    print("by status  " + ", ".join(f"{k} {v}" for k, v in info["by_status"].items()))
    print(f"files      {info['files']}  (compacted: {info['compact_files']}, skipped: {info['skipped_files']})")
    print(f"size       {info['bytes'] / 1e6:.2f} MB")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    stats = _store(args).compact()
    if args.json:
        _print_json(stats)
    elif stats["folded_files"]:
        print(
            f"folded {stats['folded_files']} files ({stats['bytes_before'] / 1e6:.2f} MB) into "
            f"{stats['output']} ({stats['rows']} records, {stats['bytes_after'] / 1e6:.2f} MB) "
            f"in {stats['seconds']:.2f}s"
        )
    else:
        print("nothing to compact")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import polars as pl

    from app import annotations

    store = _store(args)
    try:  # a tag or note over its limit stops the import before anything is written
        notes = annotations.from_export(args.file)
    except (pl.exceptions.PolarsError, OSError):
        notes = {}  # not a readable export: import_records says why
    n = store.import_records(args.file)
    annotations.merge(store.path, notes)
    print(f"imported {n} records from {args.file}" + (f", with the tags and notes of {len(notes)}" if notes else ""))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.store import run_store_bench
    from elmlab.cli import UsageError

    if args.n < 1 or args.small < 0 or args.repeats < 1:
        raise UsageError("--n and --repeats must be >= 1, --small >= 0")
    _print_json(run_store_bench(args.n, args.dir, n_small=args.small, repeats=args.repeats))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import polars as pl

    from app import annotations
    from elmlab.cli import UsageError

    out = args.out or f"elmlab-runs.{args.format}"
    if out == "-" and args.format != "csv":
        raise UsageError("--out - (standard output) works with --format csv only")
    selection = {
        "task": args.task,
        "sweep_id": args.sweep,
        "status": args.status,
        "source": args.source,
        "budget": args.budget,
        "budget_tol": args.budget_tol,
    }
    store = _store(args)

    def with_notes(frame: pl.DataFrame) -> pl.DataFrame:
        return annotations.join(frame, annotations.load(store.path))

    if out == "-":
        with_notes(store.runs(with_curve=not args.no_curve, **selection)).write_csv(sys.stdout)
        return 0
    if not Path(out).parent.is_dir():
        raise UsageError(f"cannot write {out}: folder {Path(out).parent} does not exist")
    n = store.export(out, args.format, with_curve=not args.no_curve, extra=with_notes, **selection)
    print(f"wrote {n} runs to {out}")
    return 0


def cmd_import_reference(args: argparse.Namespace) -> int:
    from elm_core.store import REFERENCE_CSV

    path = args.file or REFERENCE_CSV
    n = _store(args).import_reference_csv(path)
    print(f"{n} reference runs from {path} (read-only; already present ones unchanged)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    store = subparsers.add_parser("store", help="the results store: info, compact, import, bench")
    store_sub = store.add_subparsers(dest="store_command", metavar="ACTION")
    store.set_defaults(func=lambda a: (store.print_help(), 0)[1], _parser=store)

    p = store_sub.add_parser("info", help="runs per status, files and size")
    _add_store_option(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_info, _parser=p)

    p = store_sub.add_parser("compact", help="fold the run files into one (every query answers the same)")
    _add_store_option(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_compact, _parser=p)

    p = store_sub.add_parser("import", help="load records exported by `elmlab export` (Parquet or CSV)")
    _add_store_option(p)
    p.add_argument("file", help="an export file (.parquet or .csv)")
    p.set_defaults(func=cmd_import, _parser=p)

    p = store_sub.add_parser("bench", help="time store queries before and after compaction (JSON)")
    p.add_argument("--n", type=int, default=100_000, help="synthetic records (default 100000)")
    p.add_argument("--small", type=int, default=2_000, help="of which one-record files (default 2000)")
    p.add_argument("--repeats", type=int, default=3, help="timings per query; the median is reported")
    p.add_argument("--dir", help="folder for the temporary store (default: the system temp folder)")
    p.set_defaults(func=cmd_bench, _parser=p)

    p = subparsers.add_parser("export", help="write a selection of runs to Parquet or CSV")
    _add_store_option(p)
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("--out", metavar="FILE", help="output file (default elmlab-runs.<format>; - = stdout, csv)")
    p.add_argument("--task", action="append", help="only this task (repeatable)")
    p.add_argument("--sweep", action="append", help="only this sweep id (repeatable)")
    p.add_argument("--status", action="append", choices=STATUSES, help="only this latest status (repeatable)")
    p.add_argument("--source", action="append", choices=("elmlab", "reference"), help="only this source")
    p.add_argument("--budget", type=float, help="only runs within --budget-tol of this parameter budget")
    p.add_argument("--budget-tol", type=float, default=0.05, help="relative tolerance (default 0.05)")
    p.add_argument("--no-curve", action="store_true", help="leave out the learning curves")
    p.set_defaults(func=cmd_export, _parser=p)

    p = subparsers.add_parser("import-reference", help="load a published sweep as read-only reference runs")
    _add_store_option(p)
    p.add_argument("file", nargs="?", help="CSV of the paper_sweeps_enwik8.csv shape (default: that file)")
    p.set_defaults(func=cmd_import_reference, _parser=p)
