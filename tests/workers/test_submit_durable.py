"""A submitted run is on disk when `submit` returns: its queued record fsynced, then its folder after the
record got its name."""

from __future__ import annotations

import os

from tests.workers.conftest import Lab, tiny
from workers import submit


def test_the_queued_record_and_its_folder_are_fsynced_before_submit_returns(lab: Lab, monkeypatch):
    runs = lab.settings.store_path / "runs"
    synced: list[tuple[str, bool]] = []  # (what was fsynced, whether the record had its name by then)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), any(runs.glob("*-queued.parquet"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run_id = submit.submit(tiny())
    name = f"{run_id}--a00000-queued.parquet"
    assert (runs / name).is_file() and lab.store.run(run_id).status == "queued"
    in_store = [(path, named) for path, named in synced if path.startswith(str(runs))]
    # the record's data under its temporary name, not yet visible; then the folder, holding its name
    assert [os.path.basename(p).startswith(f".{name}.") for p, _ in in_store] == [True, False]
    assert in_store[0][1] is False and in_store[1] == (str(runs), True)
    assert not [p for p in os.listdir(runs) if p.startswith(".")]  # no temporary file left behind
