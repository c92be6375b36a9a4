"""The results store: immutable Parquet run files, queried with DuckDB, answered as Polars frames.

    store = Store()                       # settings.store_path, or Store("/some/dir")
    store.put(record)                     # one state of a run (queued, running, done, ...)
    store.runs(task="enwik8", budget=1e6) # latest record per run, filtered; a Polars frame
    store.run(run_id)                     # RunRecord with its learning curve
    store.history(run_id)                 # all of a run's records, oldest first
    store.compact()                       # fold many files into one; answers unchanged
    store.export("runs.csv", "csv", sweep_id="s1")
    store.import_reference_csv()          # the published enwik8 sweep, read-only

Layout and file names: elm_core/store/files.py. Latest-status rule: elm_core/store/sql.py.
"""

from elm_core.store.files import StoreWarning
from elm_core.store.reference import REFERENCE_CSV, read_reference_csv
from elm_core.store.store import ReadOnlyRecordError, Store

__all__ = [
    "REFERENCE_CSV",
    "ReadOnlyRecordError",
    "Store",
    "StoreWarning",
    "read_reference_csv",
]
