"""Tags and a free-text note per run, kept beside the run files: `<store>/annotations.json`, one
object {run_id: {"tags": [...], "note": "..."}} (no Streamlit here; actions.annotate writes it).

The store reads only its runs/ and reference/ folders, so this file never enters a record; it is
written whole to a temporary file and renamed, so a reader sees the old or the new file, never half
of one. Exports of runs join it as the `tags` (comma-separated) and `note` columns, and importing
such an export brings them back (`merge_export`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import polars as pl

FILE = "annotations.json"
MAX_NOTE = 2000
MAX_TAG = 40


def path(store_path: str | Path) -> Path:
    return Path(store_path) / FILE


def load(store_path: str | Path) -> dict[str, dict]:
    """Every run's tags and note ({} when there are none or the file cannot be read as JSON)."""
    try:
        data = json.loads(path(store_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def parse_tags(text: str) -> list[str]:
    """'best, check lr ,best' -> ['best', 'check lr']: comma-separated, trimmed, deduplicated in order;
    ValueError for a tag longer than MAX_TAG characters."""
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if long := [t for t in tags if len(t) > MAX_TAG]:
        raise ValueError(f"tags: {long[0][:20]!r}... is longer than {MAX_TAG} characters")
    return list(dict.fromkeys(tags))


def save(store_path: str | Path, run_id: str, tags: list[str], note: str) -> None:
    """Set one run's tags and note (both empty: the run's entry goes)."""
    if len(note) > MAX_NOTE:
        raise ValueError(f"note: {len(note)} characters, at most {MAX_NOTE}")
    data = load(store_path)
    if tags or note.strip():
        data[run_id] = {"tags": list(tags), "note": note.strip()}
    else:
        data.pop(run_id, None)
    _write(store_path, data)


def _write(store_path: str | Path, data: dict[str, dict]) -> None:
    target = path(store_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}.", suffix=".tmp", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, target)


def join(frame: pl.DataFrame, notes: dict[str, dict]) -> pl.DataFrame:
    """`frame` (with run_id) with the `tags` and `note` columns ("" where a run has none)."""
    ids = frame["run_id"].to_list()
    return frame.with_columns(
        pl.Series("tags", [", ".join((notes.get(i) or {}).get("tags") or []) for i in ids], dtype=pl.String),
        pl.Series("note", [(notes.get(i) or {}).get("note") or "" for i in ids], dtype=pl.String),
    )


def from_export(export: str | Path) -> dict[str, dict]:
    """The tags and notes of an export's rows (its `tags` and `note` columns, as `join` writes them),
    by run id; rows with neither are left out, and an export without the columns gives {}.
    ValueError (naming the file and run) for a tag or note over its limit."""
    export = Path(export)
    scan = pl.scan_csv(export, infer_schema=False) if export.suffix == ".csv" else pl.scan_parquet(export)
    present = [c for c in ("tags", "note") if c in scan.collect_schema().names()]
    if not present:
        return {}
    found = {}
    for row in scan.select("run_id", *present).collect().iter_rows(named=True):
        note = (row.get("note") or "").strip()
        try:
            tags = parse_tags(row.get("tags") or "")
            if len(note) > MAX_NOTE:
                raise ValueError(f"note: {len(note)} characters, at most {MAX_NOTE}")
        except ValueError as exc:
            raise ValueError(f"{export}: run {row['run_id']}: {exc}") from None
        if tags or note:
            found[str(row["run_id"])] = {"tags": tags, "note": note}
    return found


def merge(store_path: str | Path, notes: dict[str, dict]) -> None:
    """Set the tags and notes of the runs in `notes` (as `from_export` reads them); the others keep theirs."""
    if notes:
        _write(store_path, {**load(store_path), **notes})
