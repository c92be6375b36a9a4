"""The recorder's spool: finished records the store could not take yet (a full disk, a lost mount).

    spooled = keep(record, settings)        # record_run, when store.put raises OSError
    written = drain(store, settings)        # every reaper pass: oldest first, stops at the first failure

A record that reached the recorder is never given up: it waits here, one JSON file per record in
settings.spool_path (ELMLAB_SPOOL_DIR, best on another disk than the store), until the store takes
it. Only records whose signature the recorder checked are spooled, so the spool is trusted as is.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

from elm_core.records import RunRecord
from elm_core.settings import Settings
from elm_core.store.files import safe_id

log = logging.getLogger("elmlab.recorder")


def keep(record: RunRecord, settings: Settings) -> str:
    """Write `record` into the spool (atomically); returns the file name. OSError if the spool is full too."""
    folder = settings.spool_path
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{safe_id(record.run_id)}-a{record.attempt}-{record.status}.json"
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(record.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return name


def pending(settings: Settings) -> list[str]:
    try:
        return sorted(n for n in os.listdir(settings.spool_path) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def drain(store, settings: Settings) -> int:
    """Write spooled records into `store`, oldest first, removing each once written; stops (keeping the
    rest) at the first OSError. Returns how many were written."""
    from workers.tasks import record_is_stale

    written = 0
    for name in pending(settings):
        path = settings.spool_path / name
        try:
            record = RunRecord.model_validate(json.loads(path.read_text()))
            if not record_is_stale(store, record):
                store.put(record)
        except OSError as exc:
            log.warning("spool: the store still cannot take records (%s); %s waits", exc, name)
            break
        except ValueError as exc:  # not a record (a truncated file): kept aside, never retried
            log.error("spool: %s is not a record (%s); renamed .bad", name, exc)
            path.rename(path.with_suffix(".bad"))
            continue
        path.unlink()
        written += 1
    if written:
        log.info("spool: wrote %d waiting record(s) into the store", written)
    return written
