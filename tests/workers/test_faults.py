"""Nothing lost, nothing forged, nothing orphaned: the faults and hostile inputs submission, the
recorder and the reaper must survive, on the embedded transport and on the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from elm_core.store import Store
from elmlab.cli import main
from tests.workers.conftest import Lab, tiny, wait_for
from workers import signing, spool, state, submit
from workers.celery_app import TRAIN_TASK, app_for, broker_folders
from workers.reaper import Reaper
from workers.tasks import record_run


def _messages(lab: Lab, queue: str = "train") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(broker_folders(lab.settings)["queue"].glob(f"*.{queue}.msg"))]


def _waiting(lab: Lab) -> int:
    """train messages waiting on the lab's broker (embedded folder or Redis list)."""
    from workers.health import queue_lengths

    return queue_lengths(lab.settings)["train"]


def BOTH(db: int):  # noqa: N802 - a decorator: the embedded lab and the Redis one in DB `db`
    return pytest.mark.parametrize("broker", ["lab", pytest.param("redis_lab", marks=[pytest.mark.redis,
                                                                                     pytest.mark.redis_db(db)])])


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _done(lab: Lab, run_id: str, **changes) -> dict:
    return lab.store.run(run_id).model_copy(update={"status": "done", "steps": 5, **changes}).model_dump(mode="json")


# --- nothing forged ------------------------------------------------------------------------------


def test_forged_or_unsigned_records_are_refused_and_signed_ones_stored(lab: Lab, caplog):
    run_id = submit.submit(tiny())
    forged = _done(lab, run_id, test_metric=1e-4)
    with caplog.at_level("ERROR", logger="elmlab.worker"):
        assert record_run(forged) == "refused"
        assert record_run(forged, "0" * 64) == "refused"
        other = signing.sign(forged, lab.settings.model_copy(update={"secret": SecretStr("another lab's")}))
        assert record_run(forged, other) == "refused"
    assert lab.status(run_id) == "queued" and caplog.text.count(f"run {run_id!r}") == 3
    assert record_run(forged, signing.sign(forged, lab.settings)) == "recorded"
    assert lab.status(run_id) == "done"


def test_the_generated_secret_is_private_to_its_owner(lab: Lab):
    signing.sign({"x": 1}, lab.settings)
    path = signing.secret_path(lab.settings)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    assert signing.load_secret(lab.settings) == path.read_bytes()  # stable across uses


@BOTH(1)
def test_the_reaper_does_not_record_a_forged_final_state(broker: str, request: pytest.FixtureRequest):
    lab = request.getfixturevalue(broker)
    run_id = submit.submit(tiny())
    backend = app_for(lab.settings).backend
    backend.store_result(run_id, _done(lab, run_id, test_metric=1e-4), "SUCCESS")  # no signature
    clock = FakeClock()
    reaper = Reaper(lab.settings, clock=clock)
    reaper.tick()
    clock.t += 5
    assert reaper.tick()["recovered"] == [] and lab.status(run_id) == "queued"


def test_a_task_that_failed_before_training_is_recorded_failed_not_left_queued(lab: Lab):
    run_id = submit.submit(tiny())
    backend = app_for(lab.settings).backend
    backend.mark_as_failure(run_id, ImportError("cannot import name 'X' from 'elm_core.records'"))
    did = Reaper(lab.settings, clock=FakeClock()).tick()
    assert did["failed"] == [run_id] and did["requeued"] == []
    rec = lab.store.run(run_id)
    assert rec.status == "failed" and "ImportError" in rec.reason and "cannot import name" in rec.reason


# --- nothing lost ---------------------------------------------------------------------------------


@pytest.fixture
def full_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on a full file system: a real 64 KiB tmpfs filled up where mounting works (root),
    else a store whose writes raise ENOSPC. Yields (folder, free) where free() gives the space back."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if mounted:
        filler = folder / "filler"
        with open(filler, "wb") as fh:
            try:
                fh.write(b"\0" * (1 << 20))
            except OSError:
                pass
        try:
            yield folder, filler.unlink
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    real_put = Store.put
    full = {"on": True}

    def put(self, record):
        if full["on"] and str(self.path).startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(self, record)

    monkeypatch.setattr(Store, "put", put)
    yield folder, lambda: full.update(on=False)


@BOTH(2)
def test_a_full_store_at_submit_queues_nothing_and_says_so_in_one_line(broker: str, request: pytest.FixtureRequest,
                                                                     full_dir, monkeypatch, capsys):
    lab = request.getfixturevalue(broker)
    folder, _ = full_dir
    monkeypatch.setenv("ELMLAB_STORE_DIR", str(folder / "store"))
    with pytest.raises(OSError, match="nothing was queued"):
        submit.submit(tiny())
    assert _waiting(lab) == 0
    assert main(["submit", "--n-neurons", "8", "--d-m", "3", "--steps", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left" in err[0] and _waiting(lab) == 0


def test_a_finished_record_waits_in_the_spool_until_the_store_has_room(lab: Lab, full_dir, monkeypatch):
    run_id = submit.submit(tiny())
    done = _done(lab, run_id)
    folder, free = full_dir
    # the store fills up after the run was queued
    monkeypatch.setenv("ELMLAB_STORE_DIR", str(folder / "store"))
    full_store = Store(folder / "store")
    monkeypatch.setenv("ELMLAB_SPOOL_DIR", str(lab.home / "spool"))
    assert record_run(done, signing.sign(done, lab.settings)) == "spooled"
    assert spool.pending(lab.settings) and full_store.run(run_id) is None
    assert spool.drain(full_store, lab.settings) == 0  # still full: kept
    free()
    assert spool.drain(full_store, lab.settings) == 1 and spool.pending(lab.settings) == []
    assert full_store.run(run_id).status == "done"


# --- nothing orphaned ----------------------------------------------------------------------------


def _lost(lab: Lab, run_id: str) -> None:
    """A worker took the run, wrote PROGRESS and a running record, then died."""
    for p in broker_folders(lab.settings)["queue"].glob("*.train.msg"):
        p.unlink()
    backend = app_for(lab.settings).backend
    backend.store_result(run_id, {"attempt": 0, "step": 3, "heartbeat": 1.0, "worker": "w@x"}, "PROGRESS")
    lab.store.put(lab.store.run(run_id).model_copy(update={"status": "running", "worker": "w@x"}))


def _two_reapers_requeue_once(lab: Lab) -> None:
    run_id = submit.submit(tiny())
    _lost(lab, run_id)
    clock = FakeClock()
    reapers = [Reaper(lab.settings, clock=clock), Reaper(lab.settings, clock=clock)]
    for r in reapers:
        r.name += f"-{id(r)}"
        r.tick()
    clock.t += 5
    did = [r.tick()["requeued"] for r in reapers]
    assert sorted(did) == [[], [run_id]]
    history = lab.store.history(run_id)
    assert history["attempt"].to_list().count(1) == 1


def test_two_recorders_requeue_a_lost_run_once_embedded(lab: Lab):
    _two_reapers_requeue_once(lab)
    assert len(_messages(lab)) == 1


@pytest.mark.redis
@pytest.mark.redis_db(7)
def test_two_recorders_requeue_a_lost_run_once_redis(redis_lab: Lab):
    import redis

    run_id = submit.submit(tiny())
    r = redis.from_url(redis_lab.settings.broker_url)
    r.delete("train")  # the worker took it
    backend = app_for(redis_lab.settings).backend
    backend.store_result(run_id, {"attempt": 0, "step": 3, "heartbeat": 1.0, "worker": "w@x"}, "PROGRESS")
    redis_lab.store.put(redis_lab.store.run(run_id).model_copy(update={"status": "running", "worker": "w@x"}))
    clock = FakeClock()
    reapers = [Reaper(redis_lab.settings, clock=clock) for _ in range(2)]
    for i, rp in enumerate(reapers):
        rp.name += f"-{i}"
        rp.tick()
    clock.t += 5
    assert sorted(rp.tick()["requeued"] for rp in reapers) == [[], [run_id]]
    assert r.llen("train") == 1
    r.close()


def test_a_file_where_the_broker_folder_belongs_is_one_line(lab: Lab, capsys):
    (lab.home / "broker").mkdir()
    (lab.home / "broker" / "queue").touch()
    with pytest.raises(submit.BrokerUnavailable, match="not a folder"):
        submit.submit(tiny())
    assert lab.store.runs().height == 0  # the queued record was withdrawn
    assert main(["submit", "--n-neurons", "8", "--d-m", "3", "--steps", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]


@pytest.mark.parametrize("bad", [[1, 2, 3], "text", 7, None])
@BOTH(3)
def test_a_spec_that_is_not_a_mapping_is_a_value_error(broker: str, request: pytest.FixtureRequest, bad):
    lab = request.getfixturevalue(broker)
    with pytest.raises(ValueError, match="a spec is a RunSpec or a dict"):
        submit.submit(bad)
    assert _waiting(lab) == 0


@pytest.mark.parametrize(("field", "value"), [("run_id", "../escape"), ("run_id", "r" * 300),
                                               ("checkpoint_dir", "/tmp/outside"), ("checkpoint_dir", "../../up")])
@BOTH(4)
def test_paths_in_a_spec_cannot_leave_their_folders(broker: str, request: pytest.FixtureRequest, field, value):
    lab = request.getfixturevalue(broker)
    with pytest.raises(ValueError, match=field):
        submit.submit(tiny(**{field: value}))
    assert _waiting(lab) == 0 and lab.store.runs().height == 0


@pytest.mark.parametrize("task_id", ["../escape", "x/../../escape", "r" * 300])
@BOTH(4)  # the DB of the spec-side check of the same paths
def test_a_worker_drops_a_message_whose_task_id_is_not_a_run_id(broker: str, request: pytest.FixtureRequest,
                                                                monkeypatch, caplog, task_id):
    """A train_run message published by hand, past `submit`: the worker writes no file (checkpoint,
    result, record) anywhere, and says so."""
    from workers.tasks import train_run

    lab = request.getfixturevalue(broker)
    backend = app_for(lab.settings).backend
    monkeypatch.setattr(train_run._get_current_object(), "_backend", backend)
    before = {p for p in lab.home.parent.rglob("*")}
    spec = tiny(checkpoint_dir=str(lab.home.parent / "outside"), checkpoint_every_s=0.5)
    with caplog.at_level("ERROR", logger="elmlab.worker"):
        res = train_run.apply(kwargs={"spec": spec}, task_id=task_id).get()
    assert res == {"run_id": None, "dropped": "not a run id"} and "not a run id" in caplog.text
    assert {p for p in lab.home.parent.rglob("*")} == before and lab.store.runs().height == 0


def test_an_edited_export_cannot_turn_local_runs_into_reference_runs(lab: Lab, tmp_path: Path):
    run_id = submit.submit(tiny())
    out = tmp_path / "runs.csv"
    lab.store.export(str(out), "csv")
    out.write_text(out.read_text().replace(",elmlab,", ",reference,"))
    with pytest.raises(ValueError, match=f"row 1: run '{run_id}' is a elmlab run here"):
        lab.store.import_records(out)
    assert not lab.store.is_reference(run_id)
    submit.cancel(run_id)  # still an ordinary run: cancellable
    assert lab.status(run_id) == "cancelled"


@BOTH(5)
def test_a_cancel_that_fails_leaves_no_marker(broker: str, request: pytest.FixtureRequest):
    lab = request.getfixturevalue(broker)
    lab.store.import_reference_csv()
    ref = lab.store.runs(source="reference")["run_id"][0]
    with pytest.raises(ValueError, match="reference"):
        submit.cancel(ref)
    assert state.cancel_requested(app_for(lab.settings).backend, ref) is None
    assert lab.store.run(ref).source == "reference" and lab.store.runs(source="elmlab").height == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server to start a throwaway broker")
def test_a_hung_broker_fails_a_submit_within_seconds_leaving_nothing(lab: Lab, tmp_path: Path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("ELMLAB_BROKER_URL", f"redis://127.0.0.1:{port}/0")
        wait_for(lambda: _answers(port), 10, "the throwaway redis-server")
        first = submit.submit(tiny())
        server.send_signal(signal.SIGSTOP)  # hung: connections are accepted, nothing is answered
        with pytest.raises(submit.BrokerUnavailable, match="Timeout"):  # the 3 s socket timeout, not a hang
            submit.submit(tiny(seed=1))
        assert lab.store.runs()["run_id"].to_list() == [first]  # the refused run left no record
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- under load -----------------------------------------------------------------------------------


def _queue_sweep(lab: Lab, n: int, sweep_id: str = "load") -> list[str]:
    return submit.submit_many([tiny(seed=i, sweep_id=sweep_id) for i in range(n)])


def _store_files(lab: Lab) -> set[str]:
    return {p.name for p in (lab.store.path / "runs").glob("*.parquet")}


@BOTH(6)
def test_cancelling_a_whole_sweep_is_one_call_and_one_store_file(broker: str, request: pytest.FixtureRequest,
                                                                 capsys):
    lab = request.getfixturevalue(broker)
    ids = _queue_sweep(lab, 120)
    other = submit.submit(tiny(seed=999))  # another sweep's run: untouched
    before = _store_files(lab)
    assert main(["cancel", "--sweep", "load"]) == 0
    assert capsys.readouterr().out.strip() == "cancel requested for 120 runs"
    assert len(_store_files(lab) - before) == 1  # the 120 cancelled records: one batched write
    runs = {r["run_id"]: r for r in lab.store.runs().to_dicts()}
    assert {runs[i]["status"] for i in ids} == {"cancelled"} and runs[other]["status"] == "queued"
    assert {runs[i]["reason"] for i in ids} == {"cancelled before it started"}
    backend = app_for(lab.settings).backend
    assert all(state.cancel_requested(backend, i) == 0 for i in ids) and state.cancel_requested(backend, other) is None
    assert main(["cancel", "--sweep", "load"]) == 0  # again: nothing left to cancel, said so
    assert "nothing to cancel" in capsys.readouterr().err


def test_all_queued_cancels_every_queued_run_and_leaves_running_ones(lab: Lab, capsys):
    queued = _queue_sweep(lab, 5, "a") + _queue_sweep(lab, 5, "b")
    running = submit.submit(tiny(seed=50))
    lab.store.put(lab.store.run(running).model_copy(update={"status": "running", "worker": "w@x"}))
    assert main(["cancel", "--all-queued"]) == 0
    assert capsys.readouterr().out.strip() == "cancel requested for 10 runs"
    assert [lab.status(i) for i in queued] == ["cancelled"] * 10 and lab.status(running) == "running"
    assert state.cancel_requested(app_for(lab.settings).backend, running) is None


@pytest.mark.parametrize("bad", ["unknown", "reference", "done"])
@BOTH(15)
def test_a_cancel_of_many_runs_with_one_bad_run_does_nothing_and_names_it(broker: str, request: pytest.FixtureRequest,
                                                                          bad):
    lab = request.getfixturevalue(broker)
    ids = _queue_sweep(lab, 4)
    if bad == "reference":
        lab.store.import_reference_csv()
        culprit = lab.store.runs(source="reference")["run_id"][0]
    elif bad == "done":
        culprit = ids[1]
        lab.store.put(lab.store.run(culprit).model_copy(update={"status": "done", "steps": 5}))
    else:
        culprit = "no-such-run"
    with pytest.raises(ValueError, match=rf"{culprit!r}.*(in the store|reference|already done)"):
        submit.cancel_many([*ids, culprit])
    backend = app_for(lab.settings).backend
    assert all(state.cancel_requested(backend, i) is None for i in ids)
    assert {lab.status(i) for i in ids if i != culprit} == {"queued"}


@pytest.mark.parametrize("args", [[], ["a", "--all-queued"], ["--sweep", "s", "--all-queued"]])
def test_cancel_needs_exactly_one_selection(lab: Lab, args, capsys):
    assert main(["cancel", *args]) == 2
    assert "give run ids, --sweep ID or --all-queued" in capsys.readouterr().err


def _drains_cancelled_messages_fast(lab: Lab, n: int) -> None:
    """n cancelled messages: the worker takes them all off the queue in its main process, none handed to
    a pool process (each one handed there and waited for cost 0.25 s; benchmarks.cancel times the drain)."""
    from workers.health import queue_lengths

    ids = _queue_sweep(lab, n)
    submit.cancel_many(ids)
    lab.worker("--concurrency", "1")
    lab.wait_log("cancelled before it started; dropped", timeout=60)  # the worker is up and dropping
    wait_for(lambda: queue_lengths(lab.settings)["train"] == 0, 120, "the cancelled messages to drain", every=0.05)
    assert {lab.status(i) for i in ids} == {"cancelled"}
    assert lab.store.runs(status="running").height == 0
    log = "".join(p.read_text(errors="replace") for p in (lab.home / "test-logs").glob("worker-*.log"))
    assert log.count("cancelled before it started; dropped") == n
    assert f"{TRAIN_TASK}[" not in log  # none reached the pool (Celery logs each task it hands there)


@pytest.mark.slow
def test_a_worker_drops_cancelled_messages_without_a_delay_each_embedded(lab: Lab):
    _drains_cancelled_messages_fast(lab, 120)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.redis_db(10)
def test_a_worker_drops_cancelled_messages_without_a_delay_each_redis(redis_lab: Lab):
    _drains_cancelled_messages_fast(redis_lab, 120)


def test_the_recorder_folds_a_pile_of_run_files_into_one(lab: Lab):
    ids = [submit.submit(tiny(seed=i)) for i in range(12)]  # one by one: a file each
    before = lab.store.runs()
    reaper = Reaper(lab.settings)
    assert reaper.fold(at=20) is None and len(_store_files(lab)) == 12  # few files: left alone
    assert reaper.fold(at=10)["folded_files"] == 12
    assert len(_store_files(lab)) == 1 and lab.store.runs().equals(before)
    assert sorted(lab.store.runs()["run_id"]) == sorted(ids)
