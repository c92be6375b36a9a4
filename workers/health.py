"""What the broker, the workers and the running runs are doing; nothing here raises.

    health() -> {"broker_ok", "error", "broker_url", "mode", "workers", "recorder", "queues", "stale"}
    progress([run_id, ...]) -> {run_id: {step, total_steps, loss, tokens_per_s, eta_s, heartbeat, worker, ...}}
    broker_reachable(settings, timeout) -> (ok, why)

Every function takes `settings=None` (default: the environment's ELMLAB_* settings, read afresh).
Queue depths come from kombu's passive queue declaration (the transport's own count: message files
of the embedded broker, the list lengths of every Redis priority). Telling the messages of cancelled
runs apart needs the messages themselves: `stale_messages` reads them where each transport keeps them
(the embedded broker's message files, the Redis lists of every priority) without taking them.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from elm_core.settings import Settings, get_settings
from workers import state

# workers.celery_app (Celery) is imported by the functions that talk to the broker: `elmlab status`
# over queued runs only needs `broker_reachable` and no Celery at all.

__all__ = ["PROGRESS_KEYS", "broker_reachable", "health", "progress", "queue_lengths", "stale_messages"]

PROGRESS_KEYS = ("step", "total_steps", "loss", "tokens_per_s", "steps_per_s", "eta_s", "elapsed_s", "valid_metric",
                 "tokens", "heartbeat", "worker", "attempt", "curve")
PEEK_MAX = 5000  # messages read per queue to find the stale ones; a longer queue is not split


def _redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def broker_reachable(settings: Settings, timeout: float) -> tuple[bool, str | None]:
    """(True, None) if a Redis broker answers a ping within `timeout` seconds (always, for the
    embedded broker or a broker that is not Redis), else (False, "ErrorType: message")."""
    url = settings.broker_url or ""
    if not _redis(url):
        return True, None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None,
                                      retry_on_timeout=False)
        try:
            client.ping()
        finally:
            client.close()
        return True, None
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def queue_lengths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting per queue (train, gpu, results); None for every queue when the broker cannot say."""
    from kombu.exceptions import ChannelError

    from workers.celery_app import QUEUES, app_for

    if not (settings.embedded or _redis(settings.broker_url or "")):
        return dict.fromkeys(QUEUES, None)
    counts: dict[str, int | None] = {}
    try:
        with app_for(settings).connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            for queue in QUEUES:
                try:
                    counts[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:  # a queue that holds nothing (and was never declared) does not exist
                    counts[queue] = 0
    except Exception:
        return dict.fromkeys(QUEUES, None)
    return counts


def _waiting(channel, queue: str) -> list[bytes] | None:
    """The raw messages waiting in `queue`, read without taking them; None when there are more than
    PEEK_MAX or the transport keeps them where this cannot read."""
    folder = getattr(channel, "data_folder_in", None)
    if folder is not None:  # the embedded broker: one file per message
        names = sorted(n for n in os.listdir(folder) if n.endswith(f".{queue}.msg"))
        if len(names) > PEEK_MAX:
            return None
        out = []
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:  # a worker took it meanwhile
                continue
        return out
    if hasattr(channel, "_q_for_pri"):  # Redis: one list per priority
        keys = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
        if sum(channel.client.llen(k) for k in keys) > PEEK_MAX:
            return None
        return [raw for k in keys for raw in channel.client.lrange(k, 0, -1)]
    return None


def _run_attempt(raw: bytes) -> tuple[str, int] | None:
    """(run id, attempt) of a train_run message (Celery's protocol 2 in kombu's JSON envelope)."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _, kwargs, _ = json.loads(body)
        return str(message["headers"]["id"]), int(kwargs.get("attempt", 0))
    except (ValueError, KeyError, TypeError):
        return None


def stale_messages(settings: Settings) -> dict[str, int | None]:
    """Per run queue (train, gpu), the waiting messages a worker will drop unread: those of cancelled
    runs and of superseded attempts (workers.state.stale_reason). None where it cannot be told (the
    broker cannot say, or more than PEEK_MAX messages wait)."""
    from workers.celery_app import GPU_QUEUE, TRAIN_QUEUE, app_for

    queues = (TRAIN_QUEUE, GPU_QUEUE)
    if not (settings.embedded or _redis(settings.broker_url or "")):
        return dict.fromkeys(queues, None)
    app = app_for(settings)
    counts: dict[str, int | None] = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            for queue in queues:
                raw = _waiting(channel, queue)
                if raw is None:
                    counts[queue] = None
                    continue
                messages = [m for m in map(_run_attempt, raw) if m is not None]
                counts[queue] = sum(why is not None for why in state.stale_reasons(app.backend, messages))
    except Exception:
        return dict.fromkeys(queues, None)
    return counts


def progress(run_ids: Iterable[str], *, settings: Settings | None = None,
             with_curve: bool = False) -> dict[str, dict[str, Any]]:
    """Live progress of running runs, from Celery task state: per run id, {step, total_steps, loss,
    tokens_per_s, steps_per_s, eta_s, elapsed_s, valid_metric, tokens, heartbeat, worker, attempt,
    curve (at most 48 recent points), age_s} ({} for a run that is not training now, or when the broker
    cannot be reached); with `with_curve`, `curve` is instead the run's whole learning curve so far,
    [step, train loss, valid metric] points."""
    settings = settings if settings is not None else get_settings()
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, dict[str, Any]] = {i: {} for i in ids}
    if not ids:
        return out
    from workers.celery_app import app_for

    try:
        if settings.broker_url and not broker_reachable(settings, 0.5)[0]:
            return out
        metas = state.task_metas(app_for(settings).backend, ids)
    except Exception:
        return out
    now = time.time()
    for run_id, meta in metas.items():
        info = meta.get("result")
        if meta.get("status") != "PROGRESS" or not isinstance(info, dict):
            continue
        entry = {k: info.get(k) for k in PROGRESS_KEYS}
        if with_curve:
            entry["curve"] = info.get("points") or []
        if isinstance(entry.get("heartbeat"), (int, float)):
            entry["age_s"] = round(max(0.0, now - entry["heartbeat"]), 2)
        out[run_id] = entry
    return out


def health(timeout: float = 1.0, *, settings: Settings | None = None) -> dict[str, Any]:
    """The broker and the workers, in about `timeout` seconds; never raises.

    {"broker_ok": bool, "error": str | None, "broker_url": str (password masked),
     "mode": "embedded" | "distributed", "workers": [names answering a ping] (train workers and the
     recorder, named recorder@...), "recorder": bool, "queues": {"train": n, "gpu": n, "results": n}
     (None where unknown), "stale": {"train": n, "gpu": n}: of those, the messages of cancelled runs
     or superseded attempts, which a worker drops unread (None where unknown)}"""
    from workers.celery_app import GPU_QUEUE, QUEUES, TRAIN_QUEUE, app_for, broker_folders, broker_url, mask_url

    out: dict[str, Any] = {"broker_ok": False, "error": None, "broker_url": "", "mode": "embedded", "workers": [],
                           "recorder": False, "queues": dict.fromkeys(QUEUES, None),
                           "stale": dict.fromkeys((TRAIN_QUEUE, GPU_QUEUE), None)}
    try:
        settings = settings if settings is not None else get_settings()
        out["mode"] = "embedded" if settings.embedded else "distributed"
        out["broker_url"] = mask_url(broker_url(settings))
        if settings.embedded:
            folder = broker_folders(settings)["queue"]
            ok = folder.is_dir() and os.access(folder, os.W_OK)
            out["broker_ok"], out["error"] = ok, None if ok else f"embedded broker folder {folder} is not writable"
        else:
            out["broker_ok"], out["error"] = broker_reachable(settings, min(timeout, 1.0))
        if not out["broker_ok"]:
            return out
        out["queues"] = queue_lengths(settings)
        empty = all(out["queues"].get(q) == 0 for q in (TRAIN_QUEUE, GPU_QUEUE))
        out["stale"] = dict.fromkeys((TRAIN_QUEUE, GPU_QUEUE), 0) if empty else stale_messages(settings)
        replies = app_for(settings).control.inspect(timeout=timeout).ping() or {}
        out["workers"] = sorted(replies)
        out["recorder"] = any(name.startswith("recorder") for name in replies)
    except Exception as exc:
        out["error"] = out["error"] or f"{type(exc).__name__}: {exc}"
    return out
