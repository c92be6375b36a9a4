"""The demo result set: iso-budget sweeps on the bundled corpus, produced by ELM Lab itself.

`elm_core/demo_data/demo_runs.parquet` is a store export (`elmlab export --format parquet`) of the
sweeps listed in the README ("Demo result set": the exact `elmlab sweep` commands and their wall
time). `load_demo(store)` imports it, so that a new dashboard shows real U-curves and a Pareto
frontier at once. Loading twice adds nothing (records are named by run id, attempt and status).
"""

from __future__ import annotations

from pathlib import Path

DEMO_FILE = Path(__file__).resolve().parent / "demo_data" / "demo_runs.parquet"


def demo_available() -> bool:
    return DEMO_FILE.is_file()


def load_demo(store) -> int:
    """Import the demo runs into `store` (an elm_core.store.Store); returns how many records were read."""
    if not demo_available():
        raise FileNotFoundError(f"the demo result set is missing from this install: {DEMO_FILE}")
    return store.import_records(DEMO_FILE)
