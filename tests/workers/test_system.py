"""The running system: real worker and recorder processes, the embedded broker and Redis.

Faults: a worker SIGKILLed mid-run (both modes), forged records sent through the broker (both
modes), the recorder stopped while runs finish, cancel of a queued and of a running run, retry.
Every test here starts processes: marked slow (`make test-slow`).
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.workers.conftest import Lab, tiny, wait_for
from workers import health as monitor
from workers import state, submit
from workers.celery_app import app_for

pytestmark = pytest.mark.slow


def _one_done(lab: Lab, run_id: str) -> None:
    """Recorded exactly once as done: one `done` row in the run's history, and it is the latest."""
    history = lab.store.history(run_id)
    statuses = history["status"].to_list()
    assert statuses.count("done") == 1, history
    assert statuses[-1] == "done"


def _end_to_end(lab: Lab) -> None:
    lab.recorder()
    lab.worker()
    ids = submit.submit_many([tiny(seed=0), tiny(seed=1, steps=6)])
    for run_id in ids:
        assert lab.status(run_id) in ("queued", "running", "done")
    for run_id, steps in zip(ids, (5, 6), strict=True):
        rec = lab.wait_status(run_id, ("done", "failed"), timeout=90)
        assert rec.status == "done", rec.reason
        assert rec.steps == steps and rec.curve and rec.test_metric is not None
        assert rec.worker and rec.worker.startswith("worker-")
        _one_done(lab, run_id)
    health = monitor.health()
    assert health["broker_ok"] and health["recorder"] and len(health["workers"]) == 2, health
    assert health["queues"] == {"train": 0, "gpu": 0, "results": 0}


def test_embedded_end_to_end(lab: Lab):
    _end_to_end(lab)
    assert monitor.health()["mode"] == "embedded"
    # A message that skipped validation (sent by hand) is recorded failed with the field named, not retried.
    from workers.celery_app import TRAIN_TASK

    app_for(lab.settings).send_task(TRAIN_TASK, kwargs={"spec": tiny(steps=-1)}, task_id="handmade0001",
                                        queue="train", ignore_result=True)
    rec = lab.wait_status("handmade0001", "failed", timeout=30)
    assert "steps" in rec.reason and rec.attempt == 0
    assert lab.store.history("handmade0001")["status"].to_list() == ["failed"]


@pytest.mark.redis
@pytest.mark.redis_db(11)
def test_redis_end_to_end(redis_lab: Lab):
    _end_to_end(redis_lab)
    assert monitor.health()["mode"] == "distributed"


def _sigkill_mid_run(lab: Lab) -> None:
    lab.recorder()
    first = lab.worker()
    run_id = submit.submit(tiny(steps=500))  # about 2 s of training on an idle machine; progress every 0.5 s
    lab.wait_progress(run_id, min_step=1)
    lab.kill(first)  # SIGKILL to the worker and its pool process, mid-run
    lab.worker()
    rec = lab.wait_status(run_id, ("done", "failed"), timeout=120)
    assert rec.status == "done" and rec.attempt == 1 and rec.steps == 500, rec.reason
    _one_done(lab, run_id)
    history = lab.store.history(run_id)
    requeued = history.filter(history["attempt"] == 1).row(0, named=True)
    assert requeued["status"] == "queued" and requeued["reason"].startswith("re-queued: worker")


def test_sigkill_mid_run_embedded(lab: Lab):
    _sigkill_mid_run(lab)


@pytest.mark.redis
@pytest.mark.redis_db(12)
def test_sigkill_mid_run_redis(redis_lab: Lab):
    _sigkill_mid_run(redis_lab)


def _interval(lab: Lab, run_id: str) -> tuple[float, float]:
    """(start, end) of a run's training: its `running` record's time and its `done` record's."""
    history = lab.store.history(run_id)
    times = dict(zip(history["status"].to_list(), history["updated_at"].to_list(), strict=True))
    return times["running"], times["done"]


@pytest.mark.parametrize("extra", [(), ("--pool", "prefork", "--concurrency", "2", "--threads-per-run", "1")])
def test_two_runs_train_at_once_each_on_its_own_thread(lab: Lab, extra: tuple[str, ...]):
    """The worker's default on a two-core machine (and explicit options anywhere): two runs in two
    pool processes at the same time, each record naming one thread."""
    import os

    if not extra and len(os.sched_getaffinity(0)) != 2:
        pytest.skip("the default is one run per core: this case needs exactly two cores")
    lab.recorder()
    lab.worker(*extra)
    ids = submit.submit_many([tiny(seed=s, steps=400) for s in range(2)])
    records = [lab.wait_status(run_id, "done", timeout=120) for run_id in ids]
    (start_a, end_a), (start_b, end_b) = (_interval(lab, r) for r in ids)
    assert start_a < end_b and start_b < end_a, "the two runs did not train at the same time"
    assert all(rec.device.endswith("x1") for rec in records), [rec.device for rec in records]
    assert records[0].worker == records[1].worker  # one worker, two pool processes


def test_cancel_queued_and_running_then_retry(lab: Lab):
    lab.recorder()
    lab.worker("--concurrency", "2")  # two runs at a time: the third waits in the queue
    running = submit.submit(tiny(steps=2000))
    other = submit.submit(tiny(seed=4, steps=1000))
    queued = submit.submit(tiny(seed=3))
    lab.wait_progress(running, min_step=3)
    lab.wait_progress(other, min_step=1)

    submit.cancel(queued)  # not picked up yet: recorded cancelled at once
    assert lab.status(queued) == "cancelled"
    submit.cancel(running)
    rec = lab.wait_status(running, "cancelled", timeout=30)
    assert rec.reason == "cancelled by user"
    assert 0 < rec.steps < 2000 and rec.curve and rec.curve[-1].step <= rec.steps
    assert lab.wait_status(other, "done", timeout=60).steps == 1000  # the run beside it is untouched

    # The worker then takes the cancelled run's message and drops it: nothing more is recorded.
    wait_for(lambda: monitor.health()["queues"]["train"] == 0, 30, "the queue to drain")
    lab.wait_log(f"run {queued}: cancelled before it started; dropped")
    assert lab.store.history(queued)["status"].to_list() == ["queued", "cancelled"]
    with pytest.raises(ValueError, match="already cancelled"):
        submit.cancel(queued)

    # Retry: same run id, next attempt, the same spec.
    assert submit.retry(queued) == queued
    rec = lab.wait_status(queued, "done", timeout=60)
    assert rec.attempt == 1 and rec.steps == 5
    with pytest.raises(ValueError, match="done"):
        submit.retry(queued)


def test_recorder_stopped_while_runs_finish(lab: Lab):
    recorder = lab.recorder()
    lab.worker()
    lab.wait_ready(2)
    lab.kill(recorder)
    ids = submit.submit_many([tiny(seed=s) for s in range(3)])
    backend = app_for(lab.settings).backend

    def all_finished():
        metas = state.task_metas(backend, ids)
        return all(metas.get(i, {}).get("status") == "SUCCESS" for i in ids)

    wait_for(all_finished, 90, "the workers to finish the runs")
    assert {lab.status(i) for i in ids} == {"queued"}  # nothing recorded while the recorder is down
    assert monitor.health()["queues"]["results"] >= 3
    lab.recorder()
    for run_id in ids:
        assert lab.wait_status(run_id, "done", timeout=60).curve
        _one_done(lab, run_id)


def test_up_starts_and_stops_everything(lab: Lab):
    import os
    import signal
    import socket
    import subprocess

    from tests.workers.conftest import ELMLAB, ROOT

    if not (ROOT / "app" / "streamlit_app.py").is_file():
        pytest.skip("no dashboard yet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = subprocess.Popen([*ELMLAB, "up", "--no-browser", "--port", str(port)], cwd=ROOT, env=lab.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    lab.procs.append(("up", up))
    try:
        assert "is up" in up.stdout.readline()
        workers = lab.wait_ready(2)
        pids = [int(w.split("@")[0].split("-")[1]) for w in workers]
        run_id = submit.submit(tiny())
        assert lab.wait_status(run_id, "done", timeout=60).curve
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    finally:
        up.stdout.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.redis
@pytest.mark.redis_db(9)
def test_dashboard_submit_spreads_runs_over_two_workers_on_different_queues(redis_lab: Lab):
    """The dashboard's submit path on the real Redis broker, two worker processes on two queues."""
    from app import actions

    redis_lab.recorder()
    redis_lab.worker("--queues", "train", "--hostname", "w-train@%h")
    redis_lab.worker("--queues", "cpu-big", "--hostname", "w-big@%h")
    redis_lab.wait_ready(3)
    specs = [tiny(seed=s) for s in range(2)] + [tiny(seed=s, queue="cpu-big") for s in range(2, 4)]
    run_ids = actions.submit(specs)
    records = [redis_lab.wait_status(r, "done", timeout=120) for r in run_ids]
    workers = [rec.worker or "" for rec in records]
    assert all(w.startswith("w-train@") for w in workers[:2]), workers
    assert all(w.startswith("w-big@") for w in workers[2:]), workers
    for run_id in run_ids:
        _one_done(redis_lab, run_id)
    assert redis_lab.store.runs()["run_id"].n_unique() == 4


def _forged_records_refused(lab: Lab) -> None:
    """Anyone who can publish to the broker can send `record_run`: unsigned and wrongly signed records
    go through the real broker to the real recorder process, which refuses and logs them; the same
    record signed with the lab's secret is then stored."""
    from workers import signing
    from workers.celery_app import RECORD_TASK, RESULTS_QUEUE

    lab.recorder()
    lab.wait_ready(1)
    run_id = submit.submit(tiny())
    forged = lab.store.run(run_id).model_copy(update={"status": "done", "steps": 5, "test_metric": 1e-4})
    data = forged.model_dump(mode="json")
    app = app_for(lab.settings)
    app.send_task(RECORD_TASK, args=[data], queue=RESULTS_QUEUE)
    app.send_task(RECORD_TASK, args=[data, "0" * 64], queue=RESULTS_QUEUE)
    lab.wait_log(f"refused a done record of run {run_id!r}: wrong signature", timeout=60)
    assert f"refused a done record of run {run_id!r}: unsigned" in lab.logs()
    assert lab.status(run_id) == "queued"
    app.send_task(RECORD_TASK, args=[data, signing.sign(data, lab.settings)], queue=RESULTS_QUEUE)
    assert lab.wait_status(run_id, "done", timeout=60).test_metric == 1e-4


def test_forged_records_through_the_broker_are_refused_embedded(lab: Lab):
    _forged_records_refused(lab)


@pytest.mark.redis
@pytest.mark.redis_db(15)
def test_forged_records_through_the_broker_are_refused_redis(redis_lab: Lab):
    _forged_records_refused(redis_lab)


def _search_killing_controller(lab: Lab) -> None:
    """A search on real processes: 2 workers, the recorder, the controller SIGKILLed mid-search and
    started again. The search ends, no run is started or recorded twice, stopped runs say why."""
    from elm_core.search.live import load
    from elmlab.cli import main

    lab.recorder()
    lab.worker()
    lab.worker()
    lab.wait_ready(3)
    args = ["sweep", "search", "--budget", "20000", "--d-m-values", "2,3,4,5", "--seeds", "0,1", "--max-seeds", "1",
            "--steps", "45",
            "--batch-size", "2", "--seq-len", "10", "--d-tree", "3", "--d-brch", "3", "--eval-chars", "100",
            "--test-chars", "100"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    sid = out.getvalue().strip().splitlines()[-1]
    controller = lab.start("controller", "--interval", "0.5")
    wait_for(lambda: any((p.get("step") or 0) >= 20 for p in monitor.progress(
        lab.store.runs(sweep_id=sid)["run_id"].to_list(), settings=lab.settings).values()), 90, "a run at step 20")
    lab.kill(controller)
    lab.start("controller", "--interval", "0.5")
    wait_for(lambda: load(sid, lab.home).finished_at is not None, 600, f"search {sid} to finish", every=0.5)
    runs = lab.store.runs(sweep_id=sid)
    assert set(runs["status"].to_list()) <= {"done", "cancelled"}, runs
    assert {int(d) for d in runs.filter(pl.col("seed") == 0)["d_m"].to_list()} == {2, 3, 4, 5}
    assert runs.height == runs.select("d_m", "seed").unique().height  # no (arm, seed) twice
    for row in runs.iter_rows(named=True):
        history = lab.store.history(row["run_id"])
        terminal = [s for s in history["status"].to_list() if s in ("done", "cancelled")]
        assert len(terminal) == 1 and history["attempt"].max() == 0, history
        if row["status"] == "cancelled":
            assert row["reason"].startswith("pruned at step"), row
            assert lab.store.run(row["run_id"]).curve  # the partial curve is kept
    assert runs.filter(pl.col("status") == "done").height >= 3 and runs.height == 4  # one seed each


@pytest.mark.timeout(900)
def test_a_three_budget_search_created_while_the_controller_runs_embedded(lab: Lab):
    """`sweep search` at three budgets while a controller already ticks: both decide on the new
    search, so both start the first seeds; each run is sent, received and recorded once, and the
    user sees no error."""
    import contextlib
    import io
    import re
    from collections import Counter

    from elm_core.search.live import load
    from elmlab.cli import main

    lab.recorder()
    lab.worker()
    lab.worker()
    lab.wait_ready(3, timeout=120)
    lab.start("controller", "--interval", "0.2")
    lab.wait_log("controller: watching")
    args = ["sweep", "search", "--budget", "20000", "--budget", "30000", "--budget", "40000", "--d-m-values", "2,3,4",
            "--seeds", "0,1", "--steps", "45", "--batch-size", "2", "--seq-len", "10", "--d-tree", "3", "--d-brch", "3",
            "--eval-chars", "100", "--test-chars", "100"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(args) == 0
    assert "queued 9 runs" in err.getvalue() and "error" not in err.getvalue(), err.getvalue()
    sid = out.getvalue().strip().splitlines()[-1]
    try:
        wait_for(lambda: load(sid, lab.home).finished_at is not None, 600, f"search {sid} to finish", every=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{lab.store.runs(sweep_id=sid).select('run_id', 'status', 'attempt')}\n"
                             f"{lab.logs()}") from None
    runs = lab.store.runs(sweep_id=sid)
    assert set(runs["status"].to_list()) == {"done"}, runs
    assert runs.height == runs.select("budget", "d_m", "seed").unique().height  # no (budget, arm, seed) twice
    for budget in (20000, 30000, 40000):
        mine = runs.filter(pl.col("budget") == budget)
        assert sorted(mine.filter(pl.col("seed") == 0)["d_m"].to_list()) == [2, 3, 4]
        assert mine.filter(pl.col("seed") == 1).height == 1  # the best of three contenders: one more seed
    logs = "".join(p.read_text(errors="replace") for p in (lab.home / "test-logs").glob("*.log"))
    # On a loaded machine a heartbeat can lag past the reap limit: the reaper then queues the run
    # again as the next attempt, one more message, and the older attempt records nothing.
    requeued = Counter(re.findall(r"run (\S+): re-queued", logs))
    for run_id in runs["run_id"].to_list():
        history = lab.store.history(run_id)
        assert history["status"].to_list().count("done") == 1, history
        assert history["attempt"].max() == requeued[run_id], history
    received = Counter(re.findall(r"Task workers\.tasks\.train_run\[([^\]]+)\] received", logs))
    assert received == {run_id: 1 + requeued[run_id] for run_id in runs["run_id"].to_list()}  # one per attempt
    assert "step failed" not in logs and "Traceback" not in logs


@pytest.mark.timeout(900)
def test_search_survives_controller_sigkill_embedded(lab: Lab):
    _search_killing_controller(lab)


@pytest.mark.redis
@pytest.mark.redis_db(14)
@pytest.mark.timeout(900)
def test_search_survives_controller_sigkill_redis(redis_lab: Lab):
    _search_killing_controller(redis_lab)
