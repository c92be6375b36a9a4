"""The reaper: re-queues runs whose worker went silent (docs/design.md decision 4). Runs in the recorder.

Every few seconds, for each run whose latest record is `queued` or `running`:
  - its Celery state (result backend) is read. A worker training attempt n writes PROGRESS with a
    fresh `heartbeat` every ELMLAB_HEARTBEAT_S, even while it evaluates.
  - A `running` run (or a `queued` one whose attempt a worker has picked up) is alive while that
    state keeps changing. The reaper judges by its own clock: a state unchanged for
    ELMLAB_REAP_AFTER_S seconds of observation means the worker is gone (killed, machine lost), so
    clocks of other machines never matter. After a restart the reaper observes for that long
    before it acts.
  - A dead run is re-queued: attempt + 1 marked in the backend (the old attempt, if it was only
    frozen, stops on waking; a redelivered old message is dropped), a new train_run message with the
    same run id, and a `queued` record of attempt + 1 in the store. A run whose cancel was
    requested is recorded `cancelled` instead, and one lost MAX_REQUEUES times `failed`.
  - A run whose worker finished (SUCCESS with the final record) but whose record has not reached
    the store for ELMLAB_REAP_AFTER_S is recorded from that final state (a lost results message).
It also removes stale control messages (pings, replies, events for dead consumers) from the
embedded broker's folder, and folds the store's run files into one when they pile up (`fold`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from elm_core.records import TERMINAL, RunRecord
from elm_core.settings import Settings, get_settings
from workers import signing, spool, state
from workers.celery_app import QUEUES, app_for, broker_folders
from workers.submit import BrokerUnavailable, publish, requeue_record
from workers.tasks import write_record

log = logging.getLogger("elmlab.reaper")

MAX_REQUEUES = 3
STALE_CONTROL_S = 600.0
FOLD_AT_FILES = 500  # run files past which the recorder folds the store (Store.compact), once a minute at most


class Reaper:
    def __init__(self, settings: Settings | None = None, *, clock: Callable[[], float] = time.monotonic):
        from elm_core.store import Store

        self.settings = settings or get_settings()
        self.store = Store(self.settings.store_path)
        self.app = app_for(self.settings)
        self.clock = clock
        self.reap_after = float(self.settings.reap_after_s)
        self._seen: dict[str, tuple[Any, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_janitor = 0.0
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    # --- one pass ---------------------------------------------------------------------------------

    def tick(self) -> dict[str, list[str]]:
        """One pass; returns the run ids it acted on under "requeued", "recovered", "cancelled", "failed"."""
        did: dict[str, list[str]] = {"requeued": [], "recovered": [], "cancelled": [], "failed": []}
        spool.drain(self.store, self.settings)  # records the store could not take earlier, first
        frame = self.store.runs(status=["queued", "running"], source="elmlab")
        active = set(frame["run_id"].to_list()) if frame.height else set()
        for gone in set(self._seen) - active:
            del self._seen[gone]
        if not active:
            return did
        metas = state.task_metas(self.app.backend, sorted(active))
        now = self.clock()
        for row in frame.iter_rows(named=True):
            run_id, status, attempt = row["run_id"], row["status"], int(row["attempt"] or 0)
            meta = metas.get(run_id) or {}
            info = meta.get("result") if isinstance(meta.get("result"), dict) else {}
            mine = int(info.get("attempt", -1)) == attempt if info else False
            celery_state = meta.get("status")
            if celery_state == "SUCCESS" and mine and info.get("status") in TERMINAL:
                if self._unchanged(run_id, ("finished", attempt), now):
                    self._recover(info, did)
                continue
            if celery_state == "FAILURE":  # the task raised before train_run recorded anything of its own
                self._fail(row, meta.get("result"), did)
                continue
            picked_up = celery_state == "PROGRESS" and mine
            if status == "queued" and not picked_up:
                self._seen.pop(run_id, None)  # waiting in the queue: nothing to judge
                continue
            signature = (celery_state, info.get("heartbeat"), info.get("step"), info.get("attempt"))
            if self._unchanged(run_id, signature, now):
                self._requeue(run_id, did)
        return did

    def _unchanged(self, run_id: str, signature: Any, now: float) -> bool:
        """Whether `signature` has stayed the same for reap_after seconds of observation."""
        seen = self._seen.get(run_id)
        if seen is None or seen[0] != signature:
            self._seen[run_id] = (signature, now)
            return False
        return now - seen[1] >= self.reap_after

    def _recover(self, final: dict[str, Any], did: dict[str, list[str]]) -> None:
        final = dict(final)
        signature = final.pop(signing.SIGNATURE_KEY, None)
        if not signing.verify(final, signature, self.settings):
            log.error("run %s: its final state is unsigned or wrongly signed; not recorded", final.get("run_id"))
            self._seen.pop(str(final.get("run_id")), None)
            return
        record = RunRecord.model_validate(final)
        if write_record(self.store, record, self.settings) == "recorded":
            log.warning("run %s: its %s record never arrived; recorded from the worker's final state",
                        record.run_id, record.status)
            did["recovered"].append(record.run_id)
        self._seen.pop(record.run_id, None)

    def _fail(self, row: dict[str, Any], error: Any, did: dict[str, list[str]]) -> None:
        """A run whose task failed in the worker outside training (an import error in a pool process,
        say) has no record of its own and would stay queued or running forever: it is recorded failed
        with the error, not re-queued (it would fail the same way; `elmlab retry` once it is fixed)."""
        rec = self.store.run(row["run_id"])
        self._seen.pop(row["run_id"], None)
        if rec is None or rec.status in TERMINAL:
            return
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        elif isinstance(error, dict):
            error = f"{error.get('exc_type', 'error')}: {error.get('exc_message', '')}"
        reason = f"the worker's task failed before training: {error}"
        self.store.put(rec.model_copy(update={"status": "failed", "reason": reason, "updated_at": time.time()}))
        log.warning("run %s: %s; recorded failed", rec.run_id, reason)
        did["failed"].append(rec.run_id)

    def _requeue(self, run_id: str, did: dict[str, list[str]]) -> None:
        rec = self.store.run(run_id)
        self._seen.pop(run_id, None)
        if rec is None or rec.status in TERMINAL:
            return
        backend = self.app.backend
        cancel = state.cancel_requested(backend, run_id)
        if cancel is not None and cancel >= rec.attempt:
            why = state.cancel_reason(backend, run_id)
            reason = f"{why} (its worker was lost)" if why else "cancelled (its worker was lost)"
            self.store.put(rec.model_copy(update={"status": "cancelled", "reason": reason, "updated_at": time.time()}))
            did["cancelled"].append(run_id)
            return
        history = self.store.history(run_id)
        lost = sum(1 for r in history["reason"].to_list() if r and r.startswith("re-queued"))
        silent = f"re-queued: worker {rec.worker or '?'} went silent (attempt {rec.attempt})"
        if lost >= MAX_REQUEUES:
            self.store.put(rec.model_copy(update={
                "status": "failed", "updated_at": time.time(),
                "reason": f"worker lost {lost + 1} times (last: {rec.worker or '?'}); not re-queued again"}))
            state.set_issued_attempt(backend, run_id, rec.attempt + 1)  # a late message is dropped
            did["failed"].append(run_id)
            return
        if not state.claim(backend, f"{run_id}-{rec.attempt}", self.name):
            log.info("run %s: attempt %d is being re-queued by another recorder", run_id, rec.attempt)
            return
        queued = requeue_record(rec, reason=silent)
        try:  # the old attempt's state goes first, so that only the new attempt's heartbeat counts
            backend.store_result(run_id, {"attempt": queued.attempt, "queued_at": time.time()}, "PENDING")
            publish(self.settings, rec.spec, run_id, queued.attempt, rec.created_at,
                     str(rec.spec.get("device", "auto")))
        except (BrokerUnavailable, OSError, ConnectionError) as exc:
            log.warning("run %s: could not re-queue: %s", run_id, exc)
            state.release(backend, f"{run_id}-{rec.attempt}")
            return
        self.store.put(queued)
        log.warning("run %s: %s; queued as attempt %d", run_id, silent, queued.attempt)
        did["requeued"].append(run_id)

    # --- embedded broker housekeeping ------------------------------------------------------------

    def janitor(self, max_age_s: float = STALE_CONTROL_S) -> int:
        """Delete control messages (pings, replies, events) nobody consumed within max_age_s."""
        if not self.settings.embedded:
            return 0
        folder = broker_folders(self.settings)["queue"]
        cutoff, removed = time.time() - max_age_s, 0
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        for name in names:
            queue = name.partition(".")[2].removesuffix(".msg")
            if queue in QUEUES:
                continue
            path = folder / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def fold(self, at: int = FOLD_AT_FILES) -> dict[str, Any] | None:
        """Fold the store's run files into one (Store.compact) when there are more than `at`: a process
        that opens the store afresh (`elmlab status`, a new dashboard) reads every file once, so a
        queue of 1,000 runs submitted one by one would cost it 1,000 file reads. None if not needed."""
        try:
            n = sum(1 for name in os.listdir(self.store.path / "runs") if name.endswith(".parquet"))
        except FileNotFoundError:
            return None
        if n <= at:
            return None
        stats = self.store.compact()
        log.info("folded %d run files of the store into %s", stats["folded_files"], stats["output"])
        return stats

    # --- the background thread --------------------------------------------------------------------

    def interval(self) -> float:
        return max(0.2, min(2.0, self.reap_after / 4))

    def run_forever(self) -> None:
        while not self._stop.wait(self.interval()):
            try:
                did = self.tick()
                if any(did.values()):
                    log.info("reaper: %s", {k: v for k, v in did.items() if v})
                if time.monotonic() - self._last_janitor > 60:
                    self._last_janitor = time.monotonic()
                    self.janitor()
                    self.fold()
            except Exception:  # a store or broker hiccup: try again next time
                log.exception("reaper pass failed")

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run_forever, name="elmlab-reaper", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
