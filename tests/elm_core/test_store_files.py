"""Files the store did not write (or did not finish writing) are skipped with a warning naming them."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from elm_core.store import Store, StoreWarning
from elm_core.store.files import RUNS_DIR, SCHEMA, record_row
from tests.elm_core.test_store import done, make_record


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.put(make_record("good1"))
    s.put(done(make_record("good2"), t=150.0))
    return s


def good_ids(store: Store) -> list[str]:
    return store.runs()["run_id"].to_list()


def test_random_bytes_named_parquet_are_skipped_with_a_warning(store: Store) -> None:
    bad = store.path / RUNS_DIR / "noise--a00000-done.parquet"
    bad.write_bytes(os.urandom(3000))
    with pytest.warns(StoreWarning, match=str(bad)):
        assert good_ids(store) == ["good1", "good2"]


def test_a_truncated_parquet_file_is_skipped_with_a_warning(store: Store) -> None:
    folder = store.path / RUNS_DIR
    whole = (folder / os.listdir(folder)[0]).read_bytes()
    bad = folder / "cut--a00000-queued.parquet"
    bad.write_bytes(whole[: len(whole) // 2])
    with pytest.warns(StoreWarning, match="truncated") as caught:
        assert good_ids(store) == ["good1", "good2"]
    assert any(str(bad) in str(w.message) for w in caught)


def test_a_parquet_file_with_foreign_columns_is_skipped_with_a_warning(store: Store) -> None:
    bad = store.path / RUNS_DIR / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), bad)
    with pytest.warns(StoreWarning, match=r"foreign\.parquet: not a run file: missing columns"):
        assert good_ids(store) == ["good1", "good2"]


def test_a_run_file_with_wrongly_typed_columns_is_skipped(store: Store) -> None:
    row = record_row(make_record("typed"))
    fields = [pa.field(f.name, pa.int64() if f.name == "run_id" else f.type) for f in SCHEMA]
    row["run_id"] = 7
    bad = store.path / RUNS_DIR / "typed--a00000-queued.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=pa.schema(fields)), bad)
    with pytest.warns(StoreWarning, match="wrong types for columns run_id"):
        assert good_ids(store) == ["good1", "good2"]


def test_a_large_file_whose_data_does_not_decode_is_skipped(store: Store) -> None:
    """Footer and magic bytes fine, pages damaged: found when the query fails, then skipped."""
    rows = [record_row(make_record(f"big{i:03d}", host="h" * 200 + str(i))) for i in range(300)]
    bad = store.path / RUNS_DIR / "compact-damaged.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), bad, compression="snappy")
    data = bytearray(bad.read_bytes())
    meta = pq.read_metadata(bad)
    start = meta.row_group(0).column(list(SCHEMA.names).index("host")).data_page_offset
    data[start + 20 : start + 200] = b"\xff" * 180
    bad.write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match="compact-damaged.parquet: unreadable Parquet data"):
        assert good_ids(store) == ["good1", "good2"]
    with pytest.warns(StoreWarning, match="compact-damaged"):  # remembered: skipped at once now
        assert store.run("good2").status == "done"


def test_compaction_leaves_bad_files_alone(store: Store) -> None:
    bad = store.path / RUNS_DIR / "noise.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.warns(StoreWarning, match="noise.parquet"):
        stats = store.compact()
    assert stats["folded_files"] == 2 and bad.exists()
    with pytest.warns(StoreWarning, match="noise.parquet"):
        assert good_ids(store) == ["good1", "good2"]


def test_writes_in_progress_are_ignored_without_a_warning(store: Store) -> None:
    (store.path / RUNS_DIR / ".x--a00000-done.parquet.1a2b3c4d.tmp").write_bytes(b"PAR1 half")
    (store.path / RUNS_DIR / "notes.txt").write_text("not a run file, not a parquet name")
    assert good_ids(store) == ["good1", "good2"]  # warnings are errors in this test suite


def test_a_write_leaves_no_temp_file_behind(store: Store) -> None:
    assert all(not n.startswith(".") for n in os.listdir(store.path / RUNS_DIR))
