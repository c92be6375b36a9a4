"""What submitters and workers tell each other through the result backend (never the store).

Per run id (the Celery task id), the result backend holds:

    celery-task-meta-<run_id>   Celery's task state. While a run trains: PROGRESS with the progress
                                meta (step, total_steps, loss, tokens_per_s, eta_s, heartbeat,
                                worker, attempt); when it ends: SUCCESS with the final record.
    elmlab-attempt-<run_id>     {"attempt": n}: the attempt the latest (re-)queue issued. A worker
                                drops a message of an older attempt, and a worker running an older
                                attempt stops without recording anything.
    elmlab-cancel-<run_id>      {"attempt": n, "reason": text or null}: a cancel request for attempt n
                                (and older). A worker drops such a message, or stops its run and
                                records it `cancelled` with that reason (default "cancelled by user").
    elmlab-reap-<run_id>-<n>    the claim of the reaper that acts on lost attempt n: created only if
                                absent (Redis SET NX, an exclusive file create), so however many
                                recorders watch one broker, a lost attempt is re-queued once.

Cancelling goes through this key, not through Celery's revoke: a revoked task id stays revoked in
every worker's memory for hours, and a retried run keeps its run id (= task id), so a revoke would
silently discard the retry. The key also reaches workers started after the cancel, and pool
processes (prefork) that never see revoke broadcasts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

ATTEMPT_PREFIX = "elmlab-attempt-"
CANCEL_PREFIX = "elmlab-cancel-"
REAP_PREFIX = "elmlab-reap-"
CLAIM_TTL_S = 7 * 24 * 3600
FAST_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


def _key(prefix: str, run_id: str) -> bytes:
    return (prefix + run_id).encode()


def kv_set(backend, key: bytes, value: dict[str, Any], *, fast: bool = False) -> None:
    data = json.dumps(value).encode()
    if fast and hasattr(backend, "ensure"):  # Redis: fail fast instead of the backend's ~20 s of retries
        backend.set(key, data, **FAST_RETRY)
    else:
        backend.set(key, data)


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    """A marker's value: the JSON object stored, or None (absent, unreadable, not an object)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _attempt(value: dict[str, Any] | None) -> int | None:
    return None if value is None else int(value.get("attempt", 0))


def kv_get(backend, key: bytes) -> dict[str, Any] | None:
    return _decode(backend.get(key))


def issued_attempt(backend, run_id: str) -> int | None:
    return _attempt(kv_get(backend, _key(ATTEMPT_PREFIX, run_id)))


def set_issued_attempt(backend, run_id: str, attempt: int, *, fast: bool = False) -> None:
    kv_set(backend, _key(ATTEMPT_PREFIX, run_id), {"attempt": attempt}, fast=fast)


def cancel_requested(backend, run_id: str) -> int | None:
    """The attempt a cancel was requested for (that attempt and older ones are cancelled), or None."""
    return _attempt(kv_get(backend, _key(CANCEL_PREFIX, run_id)))


def cancel_reason(backend, run_id: str) -> str | None:
    """The reason a cancel request gave (e.g. "pruned at step 132: ..."), or None."""
    value = kv_get(backend, _key(CANCEL_PREFIX, run_id))
    reason = None if value is None else value.get("reason")
    return reason if isinstance(reason, str) and reason else None


def stale_reason(issued: int | None, cancel: int | None, attempt: int) -> str | None:
    """Why a message of `attempt` must not train: "superseded" (a newer attempt was issued),
    "cancelled" (a cancel was requested for this attempt or a later one), else None."""
    if issued is not None and issued > attempt:
        return "superseded"
    if cancel is not None and cancel >= attempt:
        return "cancelled"
    return None


def stale_reasons(backend, messages: list[tuple[str, int]]) -> list[str | None]:
    """`stale_reason` for each (run_id, attempt) of waiting messages, from one read of the
    markers of their runs (an MGET on Redis)."""
    ids = list(dict.fromkeys(run_id for run_id, _ in messages))
    if not ids:
        return []
    keys = [_key(p, i) for i in ids for p in (ATTEMPT_PREFIX, CANCEL_PREFIX)]
    values = [_attempt(_decode(raw)) for raw in backend.mget(keys)]
    markers = {i: (values[2 * n], values[2 * n + 1]) for n, i in enumerate(ids)}
    return [stale_reason(*markers[run_id], attempt) for run_id, attempt in messages]


def request_cancel(backend, run_id: str, attempt: int, *, reason: str | None = None, fast: bool = False) -> None:
    kv_set(backend, _key(CANCEL_PREFIX, run_id), {"attempt": attempt, "reason": reason}, fast=fast)


def request_cancel_many(backend, attempts: dict[str, int], *, reason: str | None = None, fast: bool = False) -> None:
    """`request_cancel` for many runs ({run_id: attempt}): on Redis in one round trip (a pipeline),
    with the expiry the backend gives its own keys; in the file backend one small file each."""
    items = {_key(CANCEL_PREFIX, run_id): json.dumps({"attempt": a, "reason": reason}).encode()
             for run_id, a in attempts.items()}
    if not (hasattr(backend, "ensure") and hasattr(backend, "client")):
        for key, data in items.items():
            backend.set(key, data)
        return

    def write() -> None:
        with backend.client.pipeline(transaction=False) as pipe:
            for key, data in items.items():
                pipe.set(key, data, ex=backend.expires or None)
            pipe.execute()

    backend.ensure(write, (), **(FAST_RETRY if fast else {}))


def task_metas(backend, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Celery's stored state per run id: {"status": ..., "result": ...}; absent ids are left out."""
    ids = list(run_ids)
    if not ids:
        return {}
    keys = [backend.get_key_for_task(i) for i in ids]
    out: dict[str, dict[str, Any]] = {}
    for run_id, raw in zip(ids, backend.mget(keys), strict=True):
        if not raw:
            continue
        try:
            meta = backend.decode_result(raw)
        except Exception:  # a result we cannot read is treated as no result
            continue
        if isinstance(meta, dict):
            out[run_id] = meta
    return out


def clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def claim(backend, name: str, owner: str) -> bool:
    """Create the key elmlab-reap-<name> unless it exists; True for the one caller that created it."""
    key = _key(REAP_PREFIX, name)
    value = json.dumps({"owner": owner}).encode()
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "set"):  # Redis
        return bool(client.set(key, value, nx=True, ex=CLAIM_TTL_S))
    return bool(backend.add(key, value))


def release(backend, name: str) -> None:
    """Drop a claim (its holder could not finish: another pass, or another recorder, may try again)."""
    backend.delete(_key(REAP_PREFIX, name))
