"""The Celery app, configured from `elm_core.settings` (docs/design.md decisions 3, 4 and 7).

    celery -A workers.celery_app:app worker -Q train      # what `elmlab worker` runs
    celery -A workers.celery_app:app flower               # monitoring

Embedded mode (no ELMLAB_BROKER_URL): kombu's `filesystem://` transport (first in first out, whole
message files: workers/fstransport.py) under $ELMLAB_HOME/broker (messages in `queue/`, exchange
tables in `control/`) and a file result backend under $ELMLAB_HOME/results; nothing to install or
start. Distributed mode:
ELMLAB_BROKER_URL (e.g. redis://host:6379/0), results in ELMLAB_RESULT_BACKEND or the same Redis.

JSON only (never pickle); late acknowledgement, reject on worker loss, prefetch 1; a visibility
timeout of two days (longer than any run: Redis hands a message that long unacknowledged to another
worker); the reaper (workers/reaper.py) re-queues runs whose worker died long before that.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from elm_core.settings import Settings, get_settings

TRAIN_QUEUE, GPU_QUEUE, RESULTS_QUEUE = "train", "gpu", "results"
QUEUES = (TRAIN_QUEUE, GPU_QUEUE, RESULTS_QUEUE)
TASKS_MODULE = "workers.tasks"  # imported by a worker when it starts (Celery's `include`)
TRAIN_TASK = "workers.tasks.train_run"
RECORD_TASK = "workers.tasks.record_run"
VISIBILITY_TIMEOUT_S = 2 * 24 * 3600
RESULT_EXPIRES_S = 7 * 24 * 3600  # longer than the visibility timeout: attempt markers outlive stale messages
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 3.0  # a healthy Redis answers in milliseconds; a hung one fails a submit within seconds
EMBEDDED_POLL_S = 0.25
EMBEDDED_TRANSPORT = "workers.fstransport:Transport"  # kombu's, first in first out, whole message files


def broker_folders(settings: Settings) -> dict[str, Path]:
    root = settings.broker_path
    return {"queue": root / "queue", "control": root / "control", "processed": root / "processed"}


def results_path(settings: Settings) -> Path:
    return settings.home / "results"


def broker_url(settings: Settings) -> str:
    return settings.broker_url or "filesystem://localhost/"


def backend_url(settings: Settings) -> str:
    if settings.result_backend:
        return settings.result_backend
    if settings.broker_url:
        if settings.broker_url.startswith(("redis://", "rediss://")):
            return settings.broker_url
        raise ValueError(
            f"ELMLAB_RESULT_BACKEND is required with broker {mask_url(settings.broker_url)} "
            "(only a Redis broker doubles as the result backend)"
        )
    return "workers.fsbackend:AtomicFilesystemBackend+file://" + str(results_path(settings).resolve())


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (pure; creates nothing)."""
    transport: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if settings.embedded:
        folders = broker_folders(settings)
        transport.update(
            data_folder_in=str(folders["queue"]), data_folder_out=str(folders["queue"]),
            control_folder=str(folders["control"]), processed_folder=str(folders["processed"]),
            store_processed=False, polling_interval=EMBEDDED_POLL_S,
        )
    else:
        transport.update(socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S)
    exchange = Exchange("elmlab", type="direct")
    return dict(
        broker_url=broker_url(settings),
        broker_transport=EMBEDDED_TRANSPORT if settings.embedded else None,
        result_backend=backend_url(settings),
        broker_transport_options=transport,
        result_backend_transport_options={"socket_connect_timeout": CONNECT_TIMEOUT_S},
        redis_socket_connect_timeout=CONNECT_TIMEOUT_S,
        redis_socket_timeout=SOCKET_TIMEOUT_S,
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_expires=RESULT_EXPIRES_S,
        result_extended=False,
        task_default_queue=TRAIN_QUEUE,
        task_default_exchange="elmlab",
        task_default_routing_key=TRAIN_QUEUE,
        task_queues=[Queue(q, exchange, routing_key=q) for q in QUEUES],
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}, RECORD_TASK: {"queue": RESULTS_QUEUE}},
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                   "interval_max": 0.5},
        worker_hijack_root_logger=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
        include=[TASKS_MODULE],
    )


def ensure_dirs(settings: Settings) -> None:
    """Create the embedded broker's and results' folders (no-op in distributed mode)."""
    if settings.embedded:
        for folder in (*broker_folders(settings).values(), results_path(settings)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise NotADirectoryError(f"{folder} exists but is not a folder; move it away") from None


def make_app(settings: Settings | None = None, *, create_dirs: bool = False) -> Celery:
    """A Celery app for `settings` (default: the environment's); with `create_dirs`, the embedded
    folders too (importing this module creates nothing on disk)."""
    settings = settings or get_settings()
    if create_dirs:
        ensure_dirs(settings)
    app = Celery("elmlab", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def route_for(spec_device: str, queue: str | None = None) -> str:
    """The queue a run goes to: the spec's own `queue` when set, else `gpu` when it asks for CUDA, else `train`."""
    if queue:
        return queue
    return GPU_QUEUE if spec_device == "cuda" else TRAIN_QUEUE


_apps: dict[tuple[str | None, str | None, str], Celery] = {}
_apps_lock = threading.Lock()


def app_for(settings: Settings) -> Celery:
    """The app of one broker and home, made once per process and shared: submitters, the health
    checks and the reaper open a connection pool once, not per call. Submitting apps create the
    embedded folders (a read-only ELM Lab creates nothing)."""
    key = (settings.broker_url, settings.result_backend, str(settings.home))
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = make_app(settings, create_dirs=not settings.read_only)
        return app


# The app of `celery -A workers.celery_app:app` and of the tasks (workers/tasks.py registers on it;
# a worker imports that module at start-up through the `include` setting, so this one imports no task).
app = make_app()
app.set_current()
