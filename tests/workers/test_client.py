"""workers.submit, workers.health, the reaper and record_run without worker processes: validation, routing, broker down,
cancel/retry rules, the exactly-once rule, re-queueing a silent run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import polars as pl
import pytest

from elm_core.records import RunRecord
from elm_core.settings import get_settings
from elm_core.store import Store
from elmlab.cli import main
from tests.workers.conftest import REDIS_HOST, REDIS_PORT, Lab, tiny
from workers import health as monitor
from workers import state, submit
from workers.celery_app import app_for, broker_folders, celery_config
from workers.signing import SIGNATURE_KEY, sign


def _messages(lab: Lab, queue: str = "train") -> list[dict]:
    folder = broker_folders(lab.settings)["queue"]
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"*.{queue}.msg"))]


def test_json_only_late_acks_prefetch_one(lab: Lab):
    conf = celery_config(lab.settings)
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] >= 24 * 3600
    assert conf["broker_transport_options"]["data_folder_in"].startswith(str(lab.home))


def test_submit_records_queued_and_sends_one_json_message(lab: Lab):
    run_id = submit.submit(tiny(sweep_id="s1"))
    rec = lab.store.run(run_id)
    assert rec.status == "queued" and rec.attempt == 0 and rec.sweep_id == "s1" and rec.params > 0
    assert rec.spec["steps"] == 5 and rec.spec["run_id"] == run_id
    (msg,) = _messages(lab)
    assert msg["content-type"] == "application/json"
    assert msg["headers"]["id"] == run_id and msg["headers"]["task"] == "workers.tasks.train_run"
    gpu = submit.submit(tiny(device="cuda"))  # routed to the gpu queue, even from a machine without one
    assert [m["headers"]["id"] for m in _messages(lab, "gpu")] == [gpu]


@pytest.mark.parametrize("bad, field", [
    ({"budget": -4, "d_m": 3, "n_neurons": None}, "budget"),
    ({"steps": 0}, "steps"),
    ({"colour": "blue"}, "colour"),
    ({"n_neurons": None, "budget": 100}, "budget"),
    ({"task": "nope"}, "task"),
    ({"optimizer": "rmsprop"}, "optimizer"),
])
def test_invalid_specs_are_rejected_naming_the_field(lab: Lab, bad, field):
    spec = {k: v for k, v in tiny(**bad).items() if v is not None}
    with pytest.raises(ValueError, match=field):
        submit.submit(spec)
    with pytest.raises(ValueError, match=f"spec 1: .*{field}"):
        submit.submit_many([tiny(), spec])  # all or nothing
    assert _messages(lab) == [] and lab.store.runs().height == 0


@pytest.mark.redis
@pytest.mark.redis_db(13)
def test_invalid_spec_never_reaches_the_redis_queue(redis_lab: Lab):
    import redis

    with pytest.raises(ValueError, match="budget"):
        submit.submit(tiny(n_neurons=None, budget=-1))
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=13)
    assert r.llen("train") == 0
    submit.submit(tiny())
    assert r.llen("train") == 1 and monitor.health()["queues"]["train"] == 1
    r.close()


@pytest.mark.parametrize("broker", ["lab", pytest.param("redis_lab", marks=[pytest.mark.redis,
                                                                             pytest.mark.redis_db(8)])])
def test_health_tells_the_messages_of_cancelled_runs_apart(broker: str, request: pytest.FixtureRequest):
    lab = request.getfixturevalue(broker)
    kept, cancelled, retried = submit.submit_many([tiny(), tiny(seed=1), tiny(seed=2)])
    gpu = submit.submit(tiny(device="cuda"))
    h = monitor.health(timeout=0.3)
    assert h["queues"] == {"train": 3, "gpu": 1, "results": 0} and h["stale"] == {"train": 0, "gpu": 0}
    submit.cancel_many([cancelled, retried, gpu])
    submit.retry(retried)  # attempt 1 waits; the message of attempt 0 is dropped when a worker takes it
    h = monitor.health(timeout=0.3)
    assert h["queues"] == {"train": 4, "gpu": 1, "results": 0} and h["stale"] == {"train": 2, "gpu": 1}
    queued = lab.store.runs().filter(pl.col("status") == "queued")["run_id"].sort().to_list()
    assert queued == sorted([kept, retried])  # = 4 train + 1 gpu messages - 3 stale


def test_broker_unreachable(lab: Lab, monkeypatch, capsys):
    stored = submit.submit(tiny())  # a run recorded while the broker worked
    monkeypatch.setenv("ELMLAB_BROKER_URL", "redis://:secret@127.0.0.1:1/0")
    with pytest.raises(submit.BrokerUnavailable, match="127.0.0.1:1") as err:
        submit.submit(tiny(seed=1))
    assert "secret" not in str(err.value)
    assert lab.store.runs()["run_id"].to_list() == [stored]  # nothing half-done

    health = monitor.health()
    assert health["broker_ok"] is False and health["error"] and health["workers"] == []
    assert health["broker_url"] == "redis://:***@127.0.0.1:1/0" and health["mode"] == "distributed"
    assert monitor.progress([stored]) == {stored: {}}

    assert main(["submit", *_tiny_flags()]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "broker unreachable" in err_lines[0]
    assert main(["status", "--json"]) == 0  # the CLI keeps working on stored data
    out = capsys.readouterr()
    assert [r["run_id"] for r in json.loads(out.out)] == [stored] and "broker unreachable" in out.err


def _tiny_flags() -> list[str]:
    return ["--n-neurons", "8", "--d-m", "3", "--d-tree", "3", "--d-brch", "3", "--steps", "5", "--batch-size", "2",
            "--seq-len", "10", "--eval-chars", "100", "--test-chars", "100"]


# What `elmlab status` over queued runs must not import: packages, and modules of packages it does use.
STATUS_NEVER_PACKAGES = {"torch", "celery", "kombu", "pandas", "polars", "pydantic_settings"}
STATUS_NEVER_MODULES = {"pyarrow.compute", "elm_core.budget", "elm_core.config", "elmlab.commands.fit",
                        "elmlab.commands.store", "elmlab.commands.gpu", "elmlab.commands.up", "elmlab.commands.bench",
                        "elmlab.commands.model", "elmlab.commands.demo"}


def test_status_over_queued_runs_imports_neither_torch_nor_celery(lab: Lab):
    """`elmlab status` reads the store; with no run running it needs no live progress, so no Celery, no
    model code, no other command's module, and none of what the settings or the store's other paths use
    (checked in a fresh process, whose modules are its own)."""
    ids = submit.submit_many([tiny(seed=s) for s in (1, 2)])
    code = ("import io, json, sys\nfrom elmlab.cli import main\nout, sys.stdout = sys.stdout, io.StringIO()\n"
            "rc = main(['status', '--json'])\nprint(json.dumps({'rc': rc, 'runs': json.loads(sys.stdout.getvalue()), "
            "'modules': sorted(sys.modules)}), file=out)")
    done = subprocess.run([sys.executable, "-c", code], env=lab.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["rc"] == 0 and sorted((r["run_id"], r["status"]) for r in answer["runs"]) == sorted(
        (i, "queued") for i in ids)
    assert not STATUS_NEVER_PACKAGES & {m.split(".")[0] for m in answer["modules"]}
    assert not STATUS_NEVER_MODULES & set(answer["modules"])
    assert {"elmlab.commands.queue", "pyarrow", "duckdb"} <= set(answer["modules"])  # the check sees imports


def test_cli_submit_sweep_status_cancel_retry(lab: Lab, capsys):
    assert main(["submit", *_tiny_flags()]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert lab.status(run_id) == "queued"

    assert main(["sweep", "iso", "--budget", "12000", "--d-m-values", "2,3", "--seeds", "0,1", "--d-tree", "3",
                 "--d-brch", "3", "--steps", "5", "--dry-run"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert main(["sweep", "ladder", "--budgets", "1.2e4,2e4", "--d-m", "3", "--d-tree", "3", "--d-brch", "3",
                 "--steps", "5"]) == 0
    ladder = capsys.readouterr().out.split()
    assert len(ladder) == 2 and {lab.status(i) for i in ladder} == {"queued"}
    assert main(["sweep", "axis", "--axis", "d_tree", "--values", "2,3", "--n-neurons", "8", "--d-m", "3",
                 "--steps", "5"]) == 0
    assert len(capsys.readouterr().out.split()) == 2

    assert main(["status", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 5 and all({"run_id", "status"} <= set(r) for r in runs)
    assert main(["status", "--sweep", lab.store.run(ladder[0]).sweep_id]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["run_id", "status", "task", "params", "d_m", "n_neurons", "metric",
                                             "progress"]
    assert len(table.splitlines()) == 3

    assert main(["cancel", run_id]) == 0
    assert lab.status(run_id) == "cancelled"
    assert main(["cancel", run_id]) == 2 and "already cancelled" in capsys.readouterr().err
    assert main(["retry", run_id]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == run_id
    rec = lab.store.run(run_id)
    assert rec.status == "queued" and rec.attempt == 1
    assert main(["retry", run_id]) == 2 and "only failed or cancelled" in capsys.readouterr().err
    assert main(["cancel", "nosuchrun"]) == 2 and "no run" in capsys.readouterr().err


def test_reference_runs_are_neither_cancelled_nor_retried(lab: Lab):
    store = lab.store
    store.import_reference_csv()
    ref = store.runs(source="reference")["run_id"][0]
    with pytest.raises(ValueError, match="reference"):
        submit.retry(ref)
    with pytest.raises(ValueError, match="already|reference"):
        submit.cancel(ref)


def test_read_only_refuses_to_queue(lab: Lab, monkeypatch):
    monkeypatch.setenv("ELMLAB_READ_ONLY", "1")
    with pytest.raises(submit.ReadOnlyError):
        submit.submit(tiny())


def test_record_run_drops_older_attempts_and_writes_once(lab: Lab):
    from workers.tasks import record_run

    run_id = submit.submit(tiny())
    queued = lab.store.run(run_id)
    done0 = queued.model_copy(update={"status": "done", "steps": 5}).model_dump(mode="json")
    lab.store.put(submit.requeue_record(queued, reason="re-queued: test"))  # attempt 1 now exists
    settings = get_settings()
    assert record_run(done0, sign(done0, settings)) == "stale"
    done1 = {**done0, "attempt": 1}
    assert record_run(done1, sign(done1, settings)) == "recorded"
    again = {**done1, "updated_at": time.time() + 5}
    assert record_run(again, sign(again, settings)) == "recorded"  # same (run, attempt, status): no-op
    history = lab.store.history(run_id)
    assert history["status"].to_list() == ["queued", "queued", "done"] and history["attempt"].to_list() == [0, 1, 1]


def test_train_run_drops_superseded_and_cancelled_messages(lab: Lab, monkeypatch):
    from workers.tasks import train_run

    backend = app_for(lab.settings).backend  # this test's home, not the one of the import-time app
    monkeypatch.setattr(train_run._get_current_object(), "_backend", backend)
    state.set_issued_attempt(backend, "dropme000001", 2)
    res = train_run.apply(kwargs={"spec": tiny(), "attempt": 1}, task_id="dropme000001").get()
    assert res == {"run_id": "dropme000001", "dropped": "superseded"}
    state.request_cancel(backend, "dropme000002", 0)
    res = train_run.apply(kwargs={"spec": tiny(), "attempt": 0}, task_id="dropme000002").get()
    assert res == {"run_id": "dropme000002", "dropped": "cancelled"}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _picked_up(lab: Lab, run_id: str) -> RunRecord:
    """What a worker does when it takes a run: its message leaves the queue, PROGRESS, a running record."""
    for p in broker_folders(lab.settings)["queue"].glob("*.train.msg"):
        p.unlink()
    backend = app_for(lab.settings).backend
    backend.store_result(run_id, {"attempt": 0, "step": 3, "heartbeat": time.time(), "worker": "w@x"}, "PROGRESS")
    running = lab.store.run(run_id).model_copy(update={"status": "running", "worker": "w@x"})
    lab.store.put(running)
    return running


def test_reaper_requeues_a_silent_run_once(lab: Lab):
    from workers.reaper import Reaper

    run_id = submit.submit(tiny())
    _picked_up(lab, run_id)
    clock = FakeClock()
    reaper = Reaper(get_settings(), clock=clock)
    assert reaper.tick()["requeued"] == []  # first sight: observe
    clock.t += 3.9
    assert reaper.tick()["requeued"] == []  # silent, but not yet for reap_after_s (4 s)
    clock.t += 0.2
    assert reaper.tick()["requeued"] == [run_id]
    rec = lab.store.run(run_id)
    assert rec.status == "queued" and rec.attempt == 1 and rec.reason.startswith("re-queued: worker w@x")
    (msg,) = _messages(lab)
    assert msg["headers"]["id"] == run_id
    backend = app_for(lab.settings).backend
    assert state.issued_attempt(backend, run_id) == 1
    clock.t += 100
    assert reaper.tick()["requeued"] == []  # queued and not picked up: left alone
    assert len(_messages(lab)) == 1


def test_reaper_records_cancelled_and_recovers_lost_records(lab: Lab):
    from workers.reaper import Reaper

    clock = FakeClock()
    reaper = Reaper(get_settings(), clock=clock)
    backend = app_for(lab.settings).backend

    cancelled = submit.submit(tiny())
    _picked_up(lab, cancelled)
    state.request_cancel(backend, cancelled, 0)  # asked to cancel, then the worker died
    finished = submit.submit(tiny(seed=1))
    final = lab.store.run(finished).model_copy(update={"status": "done", "steps": 5, "worker": "w@x"})
    data = final.model_dump(mode="json")
    backend.store_result(finished, {**data, SIGNATURE_KEY: sign(data, lab.settings)}, "SUCCESS")  # record lost
    reaper.tick()
    clock.t += 5
    did = reaper.tick()
    assert did["cancelled"] == [cancelled] and did["recovered"] == [finished]
    assert lab.status(cancelled) == "cancelled" and lab.status(finished) == "done"
    assert [m["headers"]["id"] for m in _messages(lab)] == [finished]  # its own message only: nothing re-queued


def test_health_embedded_without_workers(lab: Lab):
    submit.submit(tiny())
    h = monitor.health(timeout=0.5)
    assert h["broker_ok"] and h["mode"] == "embedded" and h["workers"] == [] and not h["recorder"]
    assert h["queues"] == {"train": 1, "gpu": 0, "results": 0}
    assert Store().path == lab.settings.store_path
