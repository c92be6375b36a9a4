"""Submission and run control: what the dashboard and the CLI call to queue, cancel and retry runs.

    run_id = submit({"task": "text", "budget": 60_000, "d_m": 8})   # validated, queued, recorded queued
    ids = submit_many(specs)
    cancel(run_id); cancel_many(run_ids); run_id = retry(run_id)  # retry: same run id, attempt + 1

Every function takes `settings=None` (default: the environment's ELMLAB_* settings, read afresh).
Errors: ValueError (invalid spec, unknown run, a run in the wrong state: the message names the
field or the reason), BrokerUnavailable (the broker cannot be reached: nothing was queued and
nothing recorded), ReadOnlyError (ELMLAB_READ_ONLY is set). The reaper re-queues through
`publish` and `requeue_record`. Importing this module imports no Celery (the dashboard's pages load
without it): the app (workers/celery_app.py) is imported when a message is sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from elm_core.records import TERMINAL, RunRecord
from elm_core.settings import Settings, get_settings
from elm_core.spec import RunSpec, parse_spec
from workers import state

__all__ = [
    "BrokerUnavailable",
    "ReadOnlyError",
    "cancel",
    "cancel_many",
    "check_writable",
    "publish",
    "requeue_record",
    "retry",
    "submit",
    "submit_many",
    "transient_errors",
    "validate",
]


# No retry of a publish that timed out: with the 2 s connect and 3 s socket timeouts
# (workers/celery_app.py) a hung broker fails a submit within about 3 seconds (docs/queue.md). A
# pooled connection that a broker restart closed is reconnected by redis-py itself.
PUBLISH_RETRY = {"max_retries": 0, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


class BrokerUnavailable(RuntimeError):
    """The broker (or the result backend) cannot be reached; nothing was queued or recorded."""


class ReadOnlyError(PermissionError):
    """A mutation (queue, cancel, retry, import) was asked of a read-only ELM Lab (ELMLAB_READ_ONLY=1)."""


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def _celery() -> ModuleType:
    from workers import celery_app

    return celery_app


def _store(settings: Settings):
    from elm_core.store import Store

    return Store(settings.store_path)


def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    celery_app = _celery()
    where = (celery_app.mask_url(celery_app.broker_url(settings)) if settings.broker_url
             else f"the embedded broker at {settings.broker_path}")
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BrokerUnavailable(f"broker unreachable: cannot queue runs via {where} ({detail})")


def transient_errors() -> tuple[type[BaseException], ...]:
    """The errors of a broker or result backend that cannot be reached (kombu's, the OS's, Redis's)."""
    from kombu.exceptions import KombuError

    errors: tuple[type[BaseException], ...] = (KombuError, OSError, ConnectionError, TimeoutError)
    try:
        import redis.exceptions

        errors += (redis.exceptions.RedisError,)
    except ImportError:  # pragma: no cover
        pass
    return errors


def check_writable(settings: Settings) -> None:
    """ReadOnlyError when this ELM Lab is read-only."""
    if settings.read_only:
        raise ReadOnlyError("this ELM Lab is read-only (ELMLAB_READ_ONLY=1): runs cannot be queued, cancelled or "
                            "retried here")


def publish(settings: Settings, spec_json: dict[str, Any], run_id: str, attempt: int, created_at: float,
            device: str) -> None:
    """Send one train_run message (task id = run id); BrokerUnavailable if the broker cannot take it.

    An attempt above 0 is first marked issued in the result backend, so that workers drop older
    messages of the run (a redelivery, a stale retry)."""
    celery_app = _celery()
    try:
        app = celery_app.app_for(settings)
        if attempt > 0:
            state.set_issued_attempt(app.backend, run_id, attempt, fast=True)
        kwargs = {"spec": spec_json, "attempt": attempt, "created_at": created_at}
        queue = celery_app.route_for(device, spec_json.get("queue"))
        app.send_task(
            celery_app.TRAIN_TASK, kwargs=kwargs, task_id=run_id, queue=queue, ignore_result=True, retry=True,
            # what Flower shows, made cheaply (Celery's own repr walks the spec, a millisecond a message)
            retry_policy=PUBLISH_RETRY, argsrepr="()", kwargsrepr=json.dumps(kwargs)[:1024],
        )
    except transient_errors() as exc:
        raise _unavailable(settings, exc) from None


_TASKS: dict[tuple[str, str, str], tuple[tuple, Any]] = {}
_TASKS_MAX = 16
_tasks_lock = threading.Lock()


def _files_signature(task: Any) -> tuple:
    """(path, size, mtime) of every file a task was opened from: a changed or replaced file changes it."""
    paths = {*getattr(task, "files", ()), *([task.path] if getattr(task, "path", None) else [])}
    out = []
    for path in sorted(str(p) for p in paths):
        try:
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, None, None))
    return tuple(out)


def _open_task(parsed: RunSpec, data_path: Path) -> Any:
    """The spec's task, opened once per process and kept while its files are unchanged.

    Opening a task reads and hashes its data (milliseconds for the bundled corpus); a submission needs
    only its sizes, metric and hash, so a dashboard or a script that submits run after run opens it once.
    ValueError as elm_core.data.get_task raises it."""
    from elm_core.data import get_task

    options = parsed.resolved_task_options()
    key = (parsed.task, json.dumps(options, sort_keys=True, default=str), str(data_path))
    with _tasks_lock:
        cached = _TASKS.get(key)
    if cached is not None and _files_signature(cached[1]) == cached[0]:
        return cached[1]
    task = get_task(parsed.task, data_path, **options)
    with _tasks_lock:
        if len(_TASKS) >= _TASKS_MAX:
            _TASKS.clear()
        _TASKS[key] = (_files_signature(task), task)
    return task


def validate(spec: RunSpec | dict[str, Any], *, settings: Settings | None = None) -> tuple[RunSpec, RunRecord]:
    """The validated spec (with a run id) and its `queued` record; ValueError naming the field if invalid.

    The configuration is resolved as elm_core.train.prepare does, on the task opened by `_open_task`."""
    from elm_core.train import base_record

    settings = _settings(settings)
    if not isinstance(spec, (RunSpec, dict)):
        raise ValueError(f"invalid run spec: a spec is a RunSpec or a dict of its fields, not {type(spec).__name__}")
    # Python mode: the JSON mode would turn a NaN into None before validation could name it.
    data = spec.model_dump(exclude_unset=False) if isinstance(spec, RunSpec) else dict(spec)
    if not data.get("run_id"):
        data["run_id"] = uuid.uuid4().hex[:12]
    parsed = parse_spec(data)
    try:
        task = _open_task(parsed, settings.data_path)
        cfg = parsed.resolve_config(n_in=task.n_in, n_out=task.n_out, kind=task.kind)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("invalid run spec") else f"invalid run spec: {msg}") from None
    record = base_record(parsed, cfg, task)
    record.status, record.attempt = "queued", 0
    return parsed, record


def submit(spec: RunSpec | dict[str, Any], *, settings: Settings | None = None) -> str:
    """Validate, queue and record one run; returns its run id.

    Order: validate (ValueError, nothing done), record it `queued` in the store (OSError when the
    store cannot take it: nothing queued), then send the message (BrokerUnavailable: the queued
    record is withdrawn, nothing is left behind)."""
    return submit_many([spec], settings=settings)[0]


def submit_many(specs: Iterable[RunSpec | dict[str, Any]], *, settings: Settings | None = None) -> list[str]:
    """Submit several runs. All are validated before any is queued (one invalid spec: ValueError
    naming its index and field, nothing queued); their queued records are written as one store file
    (Store.put_many), then their messages sent. If the broker fails part-way, the runs queued so far
    stay queued and recorded, the others are withdrawn, and BrokerUnavailable says how many."""
    settings = _settings(settings)
    check_writable(settings)
    prepared: list[tuple[RunSpec, RunRecord]] = []
    specs = list(specs)
    for i, spec in enumerate(specs):
        try:
            prepared.append(validate(spec, settings=settings))
        except ValueError as exc:
            raise ValueError(f"spec {i}: {exc}" if len(specs) > 1 else str(exc)) from None
    ids = [p.run_id for p, _ in prepared]
    if len(set(ids)) != len(ids):
        raise ValueError("run_id: the same run id appears twice in this submission")
    store = _store(settings)
    explicit = [p.run_id for (p, _), s in zip(prepared, specs, strict=True)
                if (s.run_id if isinstance(s, RunSpec) else s.get("run_id"))]
    for run_id in explicit:  # a run id given by the caller must be new
        if store.run(run_id) is not None:
            raise ValueError(f"run_id: run {run_id!r} already exists; use retry to run it again")
    if len(prepared) == 1:
        parsed, record = prepared[0]
        _put_then_publish(settings, store, record, parsed.model_dump(mode="json"), parsed.device)
        return ids
    # Many runs: their queued records in one store file (one write, and a reader of the store opens
    # one file, not one per run), then the messages; runs whose message could not be sent are withdrawn.
    records = [record for _, record in prepared]
    try:
        batch = store.put_many(records)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot record {len(records)} runs in the store at {store.path}: "
                                 f"{exc.strerror or exc}; nothing was queued") from None
    for i, (parsed, record) in enumerate(prepared):
        try:
            publish(settings, parsed.model_dump(mode="json"), record.run_id, record.attempt, record.created_at,
                    parsed.device)
        except BrokerUnavailable as exc:
            if i:
                store.put_many(records[:i])
            store.withdraw_file(batch)
            if i:
                raise BrokerUnavailable(f"{exc}; {i} of {len(prepared)} runs were queued before it failed") from None
            raise
    return ids


def _put_then_publish(settings: Settings, store, queued: RunRecord, spec_json: dict[str, Any], device: str) -> None:
    """Record `queued`, then send its message; if the message cannot be sent, the record is withdrawn.

    In this order a store that cannot take the record (a full disk: OSError, with a one-line
    message) stops the run before any worker trains it, and no run trains without a record for the
    reaper to watch. The record is the run id's claim: when another submitter wrote the same queued
    record first (two processes starting one run id at once), this one sends nothing (ValueError)."""
    try:
        wrote = store.put(queued)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot record run {queued.run_id} in the store at {store.path}: "
                                 f"{exc.strerror or exc}; nothing was queued") from None
    if not wrote:
        raise ValueError(f"run {queued.run_id!r} (attempt {queued.attempt}) was queued by another submitter at the "
                         "same moment; nothing was sent")
    try:
        publish(settings, spec_json, queued.run_id, queued.attempt, queued.created_at, device)
    except BrokerUnavailable:
        if wrote:
            store.withdraw(queued)
        raise


def _started(meta: dict[str, Any] | None, attempt: int) -> bool:
    if not meta:
        return False
    info = meta.get("result")
    return meta.get("status") in ("PROGRESS", "STARTED", "SUCCESS") and isinstance(info, dict) and \
        int(info.get("attempt", -1)) == attempt


def _own_run(run_id: str, settings: Settings | None, verb: str):
    """(settings, store, latest record) of a run this ELM Lab may act on; ValueError otherwise."""
    settings = _settings(settings)
    check_writable(settings)
    store = _store(settings)
    rec = store.run(run_id)
    if rec is None:
        raise ValueError(f"run_id: no run {run_id!r} in the store")
    if rec.source == "reference" or store.is_reference(run_id):
        raise ValueError(f"run {run_id!r} is a reference (published) run; it cannot be {verb}")
    return settings, store, rec


def cancel(run_id: str, *, reason: str | None = None, settings: Settings | None = None) -> None:
    """Cancel a queued or running run. A queued run not yet picked up is recorded `cancelled` at once
    (and a worker that picks its message up later drops it); a running one stops at its next step
    and records `cancelled` with its partial curve. `reason` (default "cancelled by user", or
    "cancelled before it started") is the reason recorded, e.g. "pruned at step 132: ..." for a run
    the search stopped. ValueError for unknown, reference or finished runs."""
    cancel_many([run_id], reason=reason, settings=settings)


def _ids_text(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def cancel_many(run_ids: Iterable[str], *, reason: str | None = None, settings: Settings | None = None) -> list[str]:
    """Cancel several queued or running runs (as `cancel` does each) in one pass: one store read,
    the cancel markers written together (one round trip on Redis), one read of their Celery states,
    and the `cancelled` records of the runs not yet started in one store file (Store.put_many).
    Every run is checked first: unknown, reference or finished runs are a ValueError naming them,
    and nothing is written. Returns the run ids cancelled."""
    settings = _settings(settings)
    check_writable(settings)
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return []
    store = _store(settings)
    latest = store.latest(ids)
    unknown = [i for i in ids if i not in latest]
    if unknown:
        raise ValueError(f"run_id: no run {_ids_text(unknown)} in the store")
    reference = sorted({i for i in ids if latest[i].source == "reference"} | set(store.reference_runs(ids)))
    if reference:
        what = "run" if len(reference) == 1 else "runs"
        raise ValueError(f"{what} {_ids_text(reference)} {'is a' if len(reference) == 1 else 'are'} reference "
                         f"(published) {what}; {'it' if len(reference) == 1 else 'they'} cannot be cancelled")
    ended = [i for i in ids if latest[i].status in TERMINAL]
    if ended:
        states = sorted({latest[i].status for i in ended})
        raise ValueError(f"run {_ids_text(ended)} {'is' if len(ended) == 1 else 'are'} already "
                         f"{' or '.join(states)}; nothing to cancel")
    app = _celery().app_for(settings)
    try:
        state.request_cancel_many(app.backend, {i: latest[i].attempt for i in ids}, reason=reason, fast=True)
        metas = state.task_metas(app.backend, ids)
    except transient_errors() as exc:
        raise _unavailable(settings, exc) from None
    now = time.time()
    store.put_many([
        latest[i].model_copy(update={"status": "cancelled", "reason": reason or "cancelled before it started",
                                     "updated_at": now})
        for i in ids if latest[i].status == "queued" and not _started(metas.get(i), latest[i].attempt)
    ])
    return ids


def retry(run_id: str, *, settings: Settings | None = None) -> str:
    """Queue a failed or cancelled run again: same spec and run id, attempt + 1. Returns the run id.
    ValueError for unknown, reference, queued, running or done runs."""
    settings, store, rec = _own_run(run_id, settings, "retried")
    if rec.status in ("queued", "running"):
        raise ValueError(f"run {run_id!r} is {rec.status}; only failed or cancelled runs can be retried")
    if rec.status == "done":
        raise ValueError(f"run {run_id!r} is done; submit a new run (e.g. another seed) instead")
    if not rec.spec:
        raise ValueError(f"run {run_id!r} has no stored spec; it cannot be retried")
    spec = parse_spec({**rec.spec, "run_id": run_id})
    queued = requeue_record(rec, reason=None)
    _put_then_publish(settings, store, queued, spec.model_dump(mode="json"), spec.device)
    return run_id


def requeue_record(rec: RunRecord, reason: str | None) -> RunRecord:
    """The `queued` record of the next attempt of `rec` (results cleared, configuration kept)."""
    return rec.model_copy(update={
        "status": "queued", "reason": reason, "attempt": rec.attempt + 1, "train_metric": None,
        "valid_metric": None, "test_metric": None, "best_valid_metric": None, "steps": 0, "tokens_seen": 0,
        "wall_time_s": 0.0, "curve": [], "worker": None, "updated_at": time.time(),
    })
