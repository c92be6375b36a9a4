"""The two Celery tasks; thin wrappers around elm_core (docs/design.md decision 1).

train_run (queue `train`, or `gpu` for CUDA specs), on a worker that never opens the store:
    1. drop the message if a newer attempt was issued or the run was cancelled (workers/state.py),
       in the worker's main process as it arrives (drop_stale_strategy), and again before training;
    2. validate the spec and open its task; an invalid one is recorded `failed` with the reason and
       never retried;
    3. send a `running` record to `record_run`, then train with a progress callback (Celery state
       PROGRESS: step, total_steps, loss, tokens_per_s, eta_s, heartbeat, worker, attempt, and
       `curve`: at most CURVE_POINTS learning-curve points, see RecentCurve; `points`: the whole
       learning curve so far as [step, train loss, valid metric] points, for the search controller) and a
       heartbeat thread that refreshes that state every ELMLAB_HEARTBEAT_S even while the run
       evaluates, and that watches for a cancel request or a newer attempt;
    4. send the final record (done, failed or cancelled with its partial curve and the cancel
       request's reason) to `record_run` and
       keep it as the task's SUCCESS result, from which the reaper can recover a lost record.
       A run superseded by a newer attempt stops and records nothing.
    5. after a fatal device error (elm_core.runtime: the CUDA context is broken) the process exits with
       DEVICE_LOST_EXIT once the failed record is sent and the task's SUCCESS state stored (so that the
       message is acknowledged, not redelivered); its supervisor starts a fresh one.
record_run (queue `results`, in the recorder): write a record into the store, unless its attempt
is older than the run's latest recorded attempt (see docs/queue.md, "Exactly once").
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Any

from celery.exceptions import OperationalError as CeleryOperationalError
from kombu.exceptions import OperationalError

from elm_core.records import RunRecord
from elm_core.settings import get_settings
from elm_core.spec import RUN_ID_PATTERN
from workers import cores, signing, spool, state
from workers.celery_app import RECORD_TASK, RESULTS_QUEUE, TRAIN_TASK, app

log = logging.getLogger("elmlab.worker")

TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, CeleryOperationalError, ConnectionError, TimeoutError)
try:  # redis-py's errors are not subclasses of the builtin ones
    import redis.exceptions as _redis_exc

    TRANSIENT += (_redis_exc.ConnectionError, _redis_exc.TimeoutError)
except ImportError:  # pragma: no cover
    pass

# Sending the final record outlasts a broker restart: up to about an hour of retries.
RECORD_RETRY = {"max_retries": 120, "interval_start": 1, "interval_step": 5, "interval_max": 30}


def send_record(record: RunRecord, *, retry_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Queue `record` for the recorder (JSON through the broker, signed: workers/signing.py); returns
    the record as JSON with its signature under SIGNATURE_KEY, the task's final Celery state."""
    data = record.model_dump(mode="json")
    signature = signing.sign(data, get_settings())
    app.send_task(
        RECORD_TASK, args=[data, signature], queue=RESULTS_QUEUE, ignore_result=True,
        retry=True, retry_policy=retry_policy or RECORD_RETRY,
    )
    return {**data, signing.SIGNATURE_KEY: signature}


def _worker_name(task) -> str:
    return getattr(task.request, "hostname", None) or socket.gethostname()


def _failed_record(payload: dict[str, Any], run_id: str, attempt: int, reason: str, **extra: Any) -> RunRecord:
    """A record for a run that could not start (invalid spec, missing data): sizes unknown, zeros."""
    task = payload.get("task") if isinstance(payload.get("task"), str) else "unknown"
    return RunRecord(
        run_id=run_id, sweep_id=payload.get("sweep_id") if isinstance(payload.get("sweep_id"), str) else None,
        task=task, status="failed", reason=reason, n_in=0, n_out=0, n_neurons=0, d_m=0, l_mlp=0, d_mlp=0,
        d_tree=0, d_brch=0, k_e=0, k_c=0, params=0, attempt=attempt, spec=payload, host=socket.gethostname(),
        **extra,
    )


CURVE_POINTS = 48  # learning-curve points kept in the PROGRESS state (about 4 KB of JSON)


class RecentCurve:
    """The learning curve so far in at most `limit` points, evenly spread over the whole run: half for
    training-only points, half for points with a validation value. Each half keeps every `stride`-th
    point it was given, plus its newest; past its share the stride doubles (every other point goes), so
    the spacing stays even at any run length."""

    def __init__(self, limit: int = CURVE_POINTS):
        self.share = max(2, limit // 2)
        self.halves: dict[bool, dict[str, Any]] = {v: {"stride": 1, "seen": 0, "kept": []} for v in (False, True)}

    def add(self, point: dict[str, Any]) -> list[dict[str, Any]]:
        """Add a point; returns the kept points, oldest first."""
        half = self.halves[point.get("valid_metric") is not None]
        kept = half["kept"]
        if kept and kept[-1][0] % half["stride"]:
            kept.pop()  # the previous newest point was kept only as the newest
        kept.append((half["seen"], point))
        half["seen"] += 1
        while len(kept) > self.share:
            half["stride"] *= 2
            kept[:] = [(k, p) for i, (k, p) in enumerate(kept) if k % half["stride"] == 0 or i == len(kept) - 1]
        return self.points()

    def points(self) -> list[dict[str, Any]]:
        both = [p for half in self.halves.values() for _, p in half["kept"]]
        return sorted(both, key=lambda p: p.get("step") or 0)


class Heartbeat:
    """Writes the run's PROGRESS state (on progress, and every `interval` seconds regardless) and
    watches the result backend for a cancel request or a newer attempt."""

    def __init__(self, task, run_id: str, attempt: int, interval: float):
        self.task, self.run_id, self.attempt = task, run_id, attempt
        self.interval = max(0.05, interval)
        self.worker = _worker_name(task)
        self.meta: dict[str, Any] = {"run_id": run_id, "attempt": attempt, "worker": self.worker, "pid": os.getpid(),
                                     "step": 0, "total_steps": None, "loss": None, "tokens_per_s": None,
                                     "eta_s": None, "elapsed_s": 0.0, "valid_metric": None, "curve": []}
        self.curve = RecentCurve()
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None
        self.points: list[list[Any]] = []  # [step, train loss, valid metric or None] so far, in meta["points"]
        self.superseded = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def write(self) -> None:
        with self._lock:
            self.meta["heartbeat"] = time.time()
            meta = state.clean(dict(self.meta))
            try:
                self.task.backend.store_result(self.run_id, meta, "PROGRESS")
                self._last_write = time.monotonic()
            except Exception as exc:  # a broker hiccup must not end the run
                log.warning("run %s: could not write progress: %s", self.run_id, exc)

    def progress(self, p: dict[str, Any]) -> None:
        self.meta.update({k: p.get(k) for k in ("step", "total_steps", "loss", "tokens_per_s", "steps_per_s", "eta_s",
                                                "elapsed_s", "valid_metric", "tokens")})
        if p.get("step") is not None and p.get("loss") is not None:
            point = {"step": p["step"], "tokens": p.get("tokens") or 0, "wall_time_s": p.get("elapsed_s") or 0.0,
                     "train_loss": p["loss"], "valid_metric": p.get("valid_metric")}
            self.meta["curve"] = self.curve.add(point)
        if p.get("points"):
            self.points.extend([list(pt) for pt in p["points"]])
            self.meta["points"] = self.points
        self.write()

    def should_stop(self) -> bool:
        if self.cancelled.is_set() or self.superseded.is_set():
            return True
        try:
            from celery.worker import state as worker_state

            if self.run_id in worker_state.revoked:  # a revoke from Flower or `celery control`
                self.cancelled.set()
        except Exception:  # pragma: no cover
            pass
        return self.cancelled.is_set()

    def check(self) -> None:
        backend = self.task.backend
        try:
            issued = state.issued_attempt(backend, self.run_id)
            if issued is not None and issued > self.attempt:
                self.superseded.set()
            cancel = state.cancel_requested(backend, self.run_id)
            if cancel is not None and cancel >= self.attempt:
                self.cancel_reason = state.cancel_reason(backend, self.run_id)
                self.cancelled.set()
        except Exception as exc:
            log.warning("run %s: could not read cancel/attempt markers: %s", self.run_id, exc)

    def _loop(self) -> None:
        tick = min(self.interval, 1.0)
        while not self._done.wait(tick):
            self.check()
            if time.monotonic() - self._last_write >= self.interval:
                self.write()


def dropped(backend, run_id: str, attempt: int, retries: int = 0) -> str | None:
    """Why a message of this attempt must not train ("superseded", "cancelled" or "duplicate";
    logged), else None.

    "duplicate": a second delivery of a message whose attempt has already finished or is training
    elsewhere (its heartbeat younger than ELMLAB_REAP_AFTER_S); a broker delivers at least once, and
    one attempt must train once. A delivery after its worker died is dropped while the heartbeat is
    young; the reaper then queues the run as a new attempt. Celery's own retries (`retries` > 0)
    re-send the same attempt on purpose and are let through."""
    issued = state.issued_attempt(backend, run_id)
    why = state.stale_reason(issued, state.cancel_requested(backend, run_id), attempt)
    if why == "superseded":
        log.info("run %s: attempt %d superseded by attempt %d; dropped", run_id, attempt, issued)
        return why
    if why == "cancelled":
        log.info("run %s: cancelled before it started; dropped", run_id)
        return why
    if not retries:
        meta = state.task_metas(backend, [run_id]).get(run_id) or {}
        info = meta.get("result") if isinstance(meta.get("result"), dict) else {}
        if info and int(info.get("attempt", -1)) == attempt:
            young = time.time() - float(info.get("heartbeat") or 0.0) < get_settings().reap_after_s
            if meta.get("status") == "SUCCESS" or (meta.get("status") == "PROGRESS" and young):
                log.warning("run %s: attempt %d already %s; this second delivery is dropped", run_id, attempt,
                            "finished" if meta.get("status") == "SUCCESS" else "training elsewhere")
                return "duplicate"
    return None


def drop_stale_strategy(task, app, consumer, **kwargs):
    """Celery's own strategy for train_run, with a message of a cancelled or superseded attempt
    acknowledged and dropped in the worker's main process, where it arrives: it never goes to a
    pool process, so a queue of cancelled messages drains as fast as the markers can be read
    (handing each to the pool and waiting for its acknowledgement cost a poll interval each:
    4 messages a second on the embedded broker). A marker that cannot be read lets the message
    through; the task checks again before training."""
    from celery.worker.strategy import default

    handle = default(task, app, consumer, **kwargs)

    def on_message(message, body, ack, reject, callbacks, **kw):
        try:
            run_id = message.headers["id"]
            _, task_kwargs, _ = message.payload
            why = dropped(task.backend, run_id, int(task_kwargs.get("attempt", 0)),
                          int(message.headers.get("retries") or 0))
        except Exception:  # noqa: BLE001 - not ours to judge here: the task decides
            why = None
        if why is not None:
            ack(log, consumer.connection_errors)  # what Celery's Request passes to message.ack_log_error
            return None
        return handle(message, body, ack, reject, callbacks, **kw)

    return on_message


@app.task(name=TRAIN_TASK, bind=True, ignore_result=True, acks_late=True, reject_on_worker_lost=True,
          autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=120, retry_jitter=True, max_retries=8,
          Strategy="workers.tasks:drop_stale_strategy")
def train_run(self, spec: dict[str, Any], attempt: int = 0, created_at: float | None = None) -> dict[str, Any]:
    """Train one run (task id = run id) and send its records to the recorder."""
    from elm_core.spec import parse_spec
    from elm_core.train import base_record, prepare, train

    run_id = self.request.id
    if not re.fullmatch(RUN_ID_PATTERN, run_id or ""):  # a message not sent by `submit`: it names no file
        log.error("a train_run message with task id %r (not a run id) was dropped", (run_id or "")[:80])
        return {"run_id": None, "dropped": "not a run id"}
    settings = get_settings()
    backend = self.backend
    why = dropped(backend, run_id, attempt, self.request.retries)
    if why is not None:
        return {"run_id": run_id, "dropped": why}

    extra = {"created_at": created_at} if created_at else {}
    payload = dict(spec) if isinstance(spec, dict) else {}
    try:
        run_spec = parse_spec({**payload, "run_id": run_id})
        task, cfg = prepare(run_spec, settings.data_path)
    except ValueError as exc:  # invalid spec or missing data: recorded failed, never retried
        record = _failed_record(payload, run_id, attempt, str(exc), worker=_worker_name(self), **extra)
        backend.store_result(run_id, send_record(record), "SUCCESS")
        return {"run_id": run_id, "status": "failed", "attempt": attempt}

    running = base_record(run_spec, cfg, task)
    running.status, running.attempt, running.worker = "running", attempt, _worker_name(self)
    if created_at:
        running.created_at = created_at
    cores.pin_threads()  # this pool process's share of the cores, before the run's record names its device
    heartbeat = Heartbeat(self, run_id, attempt, settings.heartbeat_s)
    heartbeat.start()
    try:
        send_record(running, retry_policy=state.FAST_RETRY | {"max_retries": 3})
        try:
            record = train(run_spec, on_progress=heartbeat.progress, should_stop=heartbeat.should_stop,
                           data_dir=settings.data_path, progress_every_s=min(1.0, settings.heartbeat_s))
        except Exception as exc:  # anything train() did not turn into a record
            from elm_core.runtime import note_device_error

            log.exception("run %s failed", run_id)
            note_device_error(exc)
            record = running.model_copy(update={"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                                                "updated_at": time.time()})
    finally:
        heartbeat.stop()
    if heartbeat.superseded.is_set():
        log.info("run %s: attempt %d superseded while running; nothing recorded", run_id, attempt)
        _exit_if_device_lost(run_id)
        return {"run_id": run_id, "dropped": "superseded"}
    record.attempt, record.worker = attempt, running.worker
    if created_at:
        record.created_at = created_at
    if record.status == "cancelled":
        record.reason = heartbeat.cancel_reason or "cancelled by user"
    final = send_record(record)
    try:
        backend.store_result(run_id, final, "SUCCESS")
    except Exception as exc:  # the record is on its way; the stored state is a convenience
        log.warning("run %s: could not store the final state: %s", run_id, exc)
    _exit_if_device_lost(run_id)
    return {"run_id": run_id, "status": record.status, "attempt": attempt}


def _exit_if_device_lost(run_id: str) -> None:
    """Leave the process after a fatal device error: every later run in it would fail on the broken context."""
    from elm_core.runtime import DEVICE_LOST_EXIT, device_lost

    lost = device_lost()
    if lost is not None:
        log.error("run %s: fatal device error (%s); this worker process exits for a fresh one", run_id, lost)
        raise SystemExit(DEVICE_LOST_EXIT)


def record_is_stale(store, record: RunRecord) -> bool:
    """True if the store already holds a newer attempt of this run (this record must be dropped)."""
    history = store.history(record.run_id)
    return history.height > 0 and int(history["attempt"].max()) > record.attempt


@app.task(name=RECORD_TASK, bind=True, ignore_result=True, acks_late=True,
          autoretry_for=(OSError,), retry_backoff=1, retry_backoff_max=60, max_retries=None)
def record_run(self, record: dict[str, Any], signature: str | None = None) -> str:
    """Write one signed record into the store (idempotent; stale attempts are dropped). Unsigned or
    wrongly signed records are refused and logged; a store that cannot take the record (OSError)
    sends it to the spool (workers/spool.py), and only when the spool cannot take it either is the
    message retried, without limit: a finished record is never given up."""
    from elm_core.store import Store

    settings = get_settings()
    if not isinstance(record, dict) or not signing.verify(record, signature, settings):
        what = record if isinstance(record, dict) else {}
        log.error("refused a %s record of run %r: %s", what.get("status", "malformed"), what.get("run_id"),
                  "unsigned" if signature is None else "wrong signature")
        return "refused"
    rec = RunRecord.model_validate(record)
    return write_record(Store(settings.store_path), rec, settings)


def write_record(store, rec: RunRecord, settings) -> str:
    """Put `rec` into `store` unless stale: "recorded", "stale" or "spooled" (the store raised OSError)."""
    try:
        if record_is_stale(store, rec):
            log.info("run %s: dropped a %s record of attempt %d (a newer attempt exists)", rec.run_id, rec.status,
                     rec.attempt)
            return "stale"
        store.put(rec)
    except OSError as exc:
        name = spool.keep(rec, settings)
        log.warning("run %s: the store cannot take its %s record (%s); kept in the spool as %s", rec.run_id,
                    rec.status, exc, name)
        return "spooled"
    return "recorded"
