"""The results store: round trips, idempotent writes, latest-status rule, filters, compaction."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from elm_core.records import COLUMNS, STATUSES, CurvePoint, RunRecord
from elm_core.store import Store
from elm_core.store.files import RUNS_DIR, SCHEMA


def make_record(run_id: str = "r1", **kw: Any) -> RunRecord:
    base: dict[str, Any] = dict(
        run_id=run_id,
        sweep_id="s1",
        task="enwik8",
        n_in=204,
        n_out=204,
        n_neurons=100,
        d_m=10,
        l_mlp=1,
        d_mlp=20,
        d_tree=50,
        d_brch=15,
        k_e=1441,
        k_c=750,
        params=1_000_000,
        budget=1_000_000,
        created_at=100.0,
        updated_at=100.0,
    )
    return RunRecord(**{**base, **kw})


def done(record: RunRecord, t: float, **kw: Any) -> RunRecord:
    curve = [CurvePoint(step=s, tokens=256 * s, wall_time_s=0.1 * s, train_loss=3.0 - 0.01 * s) for s in (1, 2)]
    return record.model_copy(
        update={"status": "done", "updated_at": t, "valid_metric": 1.7, "test_metric": 1.71, "curve": curve, **kw}
    )


def run_files(store: Store) -> list[str]:
    return sorted(os.listdir(store.path / RUNS_DIR))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# --- writing and reading one run -------------------------------------------------------------


def test_empty_store_answers_empty_frames_with_canonical_columns(store: Store) -> None:
    frame = store.runs()
    assert frame.height == 0
    assert frame.columns == [c for c in COLUMNS if c != "curve"]
    assert store.run("nope") is None
    assert store.counts_by_status() == dict.fromkeys(STATUSES, 0)
    assert store.history("nope").height == 0


def test_put_then_run_round_trips_the_record_with_its_curve(store: Store) -> None:
    record = done(
        make_record(config={"d_m": 10, "nested": {"a": [1, 2]}}, versions={"torch": "2.13.0"}, spec={"k": 1}),
        t=105.5,
        reason=None,
        worker="w1",
    )
    store.put(record)
    assert store.run("r1") == record
    frame = store.runs(with_curve=True)
    assert frame.columns == list(COLUMNS)
    assert RunRecord.from_row(frame.row(0, named=True)) == record


def test_runs_leaves_the_curve_out_unless_asked(store: Store) -> None:
    store.put(done(make_record(), t=101.0))
    assert "curve" not in store.runs().columns
    assert "curve" in store.runs(with_curve=True).columns


def test_submission_record_is_visible_at_once_as_queued(store: Store) -> None:
    store.put(make_record("fresh"))
    assert store.runs()["status"].to_list() == ["queued"]


def test_writing_the_same_record_twice_leaves_one_record(store: Store) -> None:
    record = make_record()
    store.put(record)
    token = store.state_token()
    store.put(record)
    assert len(run_files(store)) == 1
    assert store.state_token() == token
    assert store.history("r1").height == 1


def test_a_done_recorded_twice_is_one_row_and_the_first_wins(store: Store) -> None:
    first = done(make_record(), t=110.0, test_metric=1.5)
    store.put(first)
    store.put(done(make_record(), t=120.0, test_metric=9.9))  # e.g. a redelivered result message
    assert store.history("r1").height == 1
    assert store.run("r1") == first


def test_run_ids_that_are_not_file_names_still_work(store: Store) -> None:
    ids = ["a/b c", "../../etc", ".hidden", "x--y", "é", "a" * 300]
    for run_id in ids:
        store.put(make_record(run_id))
    assert sorted(store.runs()["run_id"].to_list()) == sorted(ids)
    assert all(store.run(i).run_id == i for i in ids)
    assert all(".." not in name.split("--")[0] or "~" in name for name in run_files(store))


# --- the latest-status rule ------------------------------------------------------------------


def test_latest_status_follows_queued_running_done(store: Store) -> None:
    r = make_record()
    store.put(r)
    assert store.run("r1").status == "queued"
    store.put(r.model_copy(update={"status": "running", "updated_at": 101.0, "worker": "w1"}))
    assert store.run("r1").status == "running"
    store.put(done(r, t=102.0))
    assert store.run("r1").status == "done"
    assert store.history("r1")["status"].to_list() == ["queued", "running", "done"]


def test_terminal_status_wins_over_a_later_running_record(store: Store) -> None:
    r = make_record()
    store.put(done(r, t=102.0))
    store.put(r.model_copy(update={"status": "running", "updated_at": 200.0}))  # late heartbeat, skewed clock
    assert store.run("r1").status == "done"
    assert store.history("r1")["status"].to_list() == ["running", "done"]


def test_running_wins_over_queued_whatever_the_clocks(store: Store) -> None:
    r = make_record(updated_at=150.0)
    store.put(r.model_copy(update={"status": "running", "updated_at": 120.0}))
    store.put(r)
    assert store.run("r1").status == "running"


def test_a_requeued_attempt_starts_a_new_life(store: Store) -> None:
    r = make_record()
    store.put(r)
    store.put(r.model_copy(update={"status": "running", "updated_at": 101.0}))
    store.put(r.model_copy(update={"status": "queued", "attempt": 1, "updated_at": 160.0}))  # the reaper
    assert (store.run("r1").status, store.run("r1").attempt) == ("queued", 1)
    store.put(r.model_copy(update={"status": "running", "attempt": 1, "updated_at": 161.0}))
    store.put(done(r, t=170.0, attempt=1))
    latest = store.run("r1")
    assert (latest.status, latest.attempt) == ("done", 1)
    assert store.history("r1").select("attempt", "status").rows() == [
        (0, "queued"),
        (0, "running"),
        (1, "queued"),
        (1, "running"),
        (1, "done"),
    ]


def test_a_retried_failed_run_shows_its_new_attempt(store: Store) -> None:
    r = make_record()
    store.put(r.model_copy(update={"status": "failed", "reason": "diverged", "updated_at": 110.0}))
    store.put(r.model_copy(update={"status": "queued", "attempt": 1, "updated_at": 105.0}))
    assert (store.run("r1").status, store.run("r1").attempt) == ("queued", 1)


def test_between_terminal_records_the_later_wins_and_done_breaks_a_tie(store: Store) -> None:
    r = make_record()
    store.put(r.model_copy(update={"status": "cancelled", "updated_at": 130.0}))
    store.put(done(r, t=120.0))
    assert store.run("r1").status == "cancelled"
    r2 = make_record("r2")
    store.put(r2.model_copy(update={"status": "failed", "updated_at": 130.0}))
    store.put(done(r2, t=130.0))
    assert store.run("r2").status == "done"


# --- filters ---------------------------------------------------------------------------------


@pytest.fixture
def filled(store: Store) -> Store:
    specs = [
        ("a", "enwik8", "s1", "done", 1_000_000, 1_000_000),
        ("b", "enwik8", "s1", "failed", 1_000_000, 960_000),
        ("c", "shd", "s2", "queued", 1_000_000, 1_050_000),
        ("d", "shd", "s2", "done", 3_000_000, 2_990_000),
        ("e", "enwik8", "s3", "running", None, 1_040_000),
        ("f", "enwik8", "s3", "done", None, 1_060_000),
    ]
    for i, (run_id, task, sweep, status, budget, params) in enumerate(specs):
        r = make_record(run_id, task=task, sweep_id=sweep, budget=budget, params=params, created_at=100.0 + i)
        store.put(r)
        if status != "queued":
            store.put(r.model_copy(update={"status": status, "updated_at": 200.0 + i}))
    return store


def ids(frame: pl.DataFrame) -> list[str]:
    return frame["run_id"].to_list()


def test_filters_select_by_task_sweep_status_and_source(filled: Store) -> None:
    assert ids(filled.runs()) == ["a", "b", "c", "d", "e", "f"]
    assert ids(filled.runs(task="shd")) == ["c", "d"]
    assert ids(filled.runs(sweep_id=["s1", "s3"])) == ["a", "b", "e", "f"]
    assert ids(filled.runs(status="done")) == ["a", "d", "f"]
    assert ids(filled.runs(status=["queued", "running"], task="enwik8")) == ["e"]
    assert ids(filled.runs(source="reference")) == []
    assert filled.counts_by_status() == {"queued": 1, "running": 1, "done": 3, "failed": 1, "cancelled": 0}


def test_the_status_filter_applies_to_the_latest_record(filled: Store) -> None:
    assert "a" not in ids(filled.runs(status="queued"))  # a was queued once, is done now


def test_budget_slice_uses_the_budget_or_else_the_parameter_count(filled: Store) -> None:
    # a, b, c have budget 1e6; e (no budget) has params 1.04e6 (inside 5%), f 1.06e6 (outside).
    assert ids(filled.runs(budget=1e6)) == ["a", "b", "c", "e"]
    assert ids(filled.runs(budget=1e6, budget_tol=0.07)) == ["a", "b", "c", "e", "f"]
    assert ids(filled.runs(budget=3e6, budget_tol=0.0)) == ["d"]
    with pytest.raises(ValueError, match="budget"):
        filled.runs(budget=0)


def test_filter_values_are_bound_parameters_not_sql(filled: Store) -> None:
    assert filled.runs(task="enwik8' OR '1'='1").height == 0
    assert filled.runs(sweep_id=['s1") OR true --']).height == 0


STATUS_COLUMNS = ["run_id", "status", "reason", "task", "params", "d_m", "valid_metric", "created_at", "updated_at"]


def test_rows_answer_as_runs_does_with_only_the_columns_asked(filled: Store) -> None:
    filled.import_reference_csv()
    for selection in ({}, {"source": "elmlab"}, {"status": ["queued", "running"]}, {"sweep_id": "s2"},
                      {"task": "enwik8", "budget": 1e6}, {"status": "cancelled"}):
        expected = filled.runs(**selection).select(STATUS_COLUMNS).to_dicts()
        assert filled.rows(STATUS_COLUMNS, **selection) == expected, selection
    assert [r["run_id"] for r in filled.rows(["run_id"], status="done", source="elmlab")] == ["a", "d", "f"]
    assert set(filled.rows(["metric_name"])[0]) == {"metric_name"}  # the columns asked, no others
    filled.compact()  # the same from one large file
    expected = filled.runs(source="elmlab").select(STATUS_COLUMNS).to_dicts()
    assert filled.rows(STATUS_COLUMNS, source="elmlab") == expected


def test_rows_of_an_empty_store_and_of_unknown_columns(store: Store, filled: Store) -> None:
    assert Store(store.path.parent / "empty").rows(["run_id", "status"]) == []
    with pytest.raises(ValueError, match="no_such"):
        filled.rows(["run_id", "no_such"])


def test_a_reader_forgets_the_rows_of_a_withdrawn_file_and_sees_new_ones(store: Store) -> None:
    records = [make_record(i, created_at=100.0 + n) for n, i in enumerate(("a", "b", "c"))]
    for r in records:
        store.put(r)
    assert ids(store.runs()) == ["a", "b", "c"]  # the reader now holds their rows in memory
    store.withdraw(records[1])
    assert ids(store.runs()) == ["a", "c"]
    store.put(make_record("d", created_at=110.0))
    store.put(done(records[0], t=200.0))
    assert ids(store.runs()) == ["a", "c", "d"] and store.run("a").status == "done"
    store.withdraw(records[0])  # a's queued record: its done one remains
    store.withdraw(records[2])
    assert ids(store.runs()) == ["a", "d"] and store.history("a")["status"].to_list() == ["done"]


def test_state_token_changes_when_the_store_changes(filled: Store) -> None:
    token = filled.state_token()
    assert filled.state_token() == token
    filled.put(make_record("new"))
    assert filled.state_token() != token


# --- compaction ------------------------------------------------------------------------------


def answers(store: Store) -> dict[str, Any]:
    """Every kind of query the store answers, on a store with a bit of everything."""
    return {
        "runs": store.runs(),
        "runs_curve": store.runs(with_curve=True),
        "done_enwik8": store.runs(task="enwik8", status="done"),
        "slice": store.runs(budget=1e6),
        "history_a": store.history("a", with_curve=True),
        "history_r": store.history("r"),
        "run_a": store.run("a"),
        "run_r": store.run("r"),
        "counts": store.counts_by_status(),
    }


def assert_same_answers(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key, value in before.items():
        if isinstance(value, pl.DataFrame):
            assert_frame_equal(value, after[key])
        else:
            assert value == after[key], key


def test_every_query_answers_the_same_after_compaction(filled: Store) -> None:
    filled.import_reference_csv()
    r = make_record("r")
    filled.put(r)
    filled.put(r.model_copy(update={"status": "running", "updated_at": 101.0}))
    filled.put(r.model_copy(update={"status": "queued", "attempt": 1, "updated_at": 150.0}))
    filled.put(done(r, t=170.0, attempt=1))
    filled.put(done(make_record("a"), t=300.0))
    before = answers(filled)
    n_files = len(run_files(filled))

    stats = filled.compact()
    assert stats["folded_files"] == n_files
    assert [n for n in run_files(filled) if not n.startswith(".")] == [stats["output"]]
    assert_same_answers(before, answers(filled))

    # A record written again after its file was folded, and more runs: still one answer.
    filled.put(done(make_record("a"), t=300.0))
    filled.put(make_record("late"))
    before = answers(filled)
    assert filled.history("a").height == 2  # queued, done: the second done is the same record
    filled.compact()
    assert_same_answers(before, answers(filled))
    assert filled.compact()["folded_files"] == 0  # one file left: nothing to do


def test_compaction_keeps_files_written_while_it_runs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        store.put(make_record(f"r{i}"))
    original = Store._write_compact

    def write_and_race(self: Store, *args: Any) -> int:
        store.put(make_record("during"))  # a writer adds a file after the compaction listed the store
        return original(self, *args)

    monkeypatch.setattr(Store, "_write_compact", write_and_race)
    stats = store.compact()
    assert stats["folded_files"] == 3
    assert ids(store.runs()) == ["during", "r0", "r1", "r2"]
    assert any(n.startswith("during--") for n in run_files(store))


def test_readers_see_the_same_answer_while_compaction_is_half_done(filled: Store) -> None:
    """Between writing the compact file and deleting the folded files, both are visible."""
    before = filled.runs(with_curve=True)
    history = filled.history("a")
    folder = filled.path / RUNS_DIR
    table = pq.read_table(folder / os.listdir(folder)[0])  # an extra copy of one record
    pq.write_table(table, folder / "compact-copy.parquet")
    assert_frame_equal(filled.runs(with_curve=True), before)
    assert_frame_equal(filled.history("a"), history)


# --- files from other writers ----------------------------------------------------------------


def test_older_files_without_newer_optional_columns_read_as_defaults(store: Store) -> None:
    store.put(make_record("new"))
    row = make_record("old").to_row()
    keep = [f for f in SCHEMA if f.name not in ("host", "curve", "versions", "sweep_id", "_digest")]
    old = pa.Table.from_pylist([{f.name: row[f.name] for f in keep}], schema=pa.schema(keep))
    pq.write_table(old, store.path / RUNS_DIR / "old--a00000-queued.parquet")
    record = store.run("old")
    assert (record.host, record.curve, record.versions, record.sweep_id) == ("", [], {}, None)
    assert store.runs().filter(pl.col("run_id") == "old")["host"].to_list() == [""]
