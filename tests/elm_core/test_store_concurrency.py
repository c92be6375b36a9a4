"""Several processes writing, reading and compacting one store at once."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from elm_core.store import Store
from tests.elm_core.test_store import done, make_record

CTX = mp.get_context("spawn")  # no fork of a process that may hold DuckDB threads


def write_runs(path: str, prefix: str, n: int, with_done: bool) -> None:
    store = Store(path)
    for i in range(n):
        r = make_record(f"{prefix}{i:03d}", created_at=float(i))
        store.put(r)
        if with_done:
            store.put(done(r, t=float(i) + 0.5))


def compact_repeatedly(path: str, seconds: float) -> None:
    store = Store(path)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        store.compact()


def start(target, *args) -> mp.Process:  # noqa: ANN001
    p = CTX.Process(target=target, args=args)
    p.start()
    return p


def join(*procs: mp.Process) -> None:
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def test_two_writer_processes_lose_nothing(path: str) -> None:
    join(start(write_runs, path, "a", 30, False), start(write_runs, path, "b", 30, False))
    frame = Store(path).runs()
    assert frame.height == 60
    assert sorted(frame["run_id"]) == sorted([f"a{i:03d}" for i in range(30)] + [f"b{i:03d}" for i in range(30)])


def test_two_processes_writing_the_same_runs_leave_one_record_each(path: str) -> None:
    join(start(write_runs, path, "same", 20, True), start(write_runs, path, "same", 20, True))
    store = Store(path)
    assert store.runs().height == 20
    assert set(store.runs()["status"]) == {"done"}
    assert store.history("same007").height == 2


def test_readers_while_a_writer_writes_and_a_compactor_compacts(path: str) -> None:
    store = Store(path)
    store.put(make_record("seed"))
    writer = start(write_runs, path, "w", 40, True)
    compactor = start(compact_repeatedly, path, 2.0)
    seen = []
    while writer.is_alive() or compactor.is_alive():
        frame = store.runs()  # must never fail, never show a half-written or doubled record
        assert frame["run_id"].is_unique().all()
        seen.append(frame.height)
        time.sleep(0.02)
    join(writer, compactor)
    assert store.runs().height == 41
    assert store.counts_by_status()["done"] == 40
    assert len(seen) > 3
    assert seen == sorted(seen)  # a consistent view each time: runs never disappear
