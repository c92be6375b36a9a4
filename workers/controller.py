"""The search controller: carries out `elm_core.search.policy.decide` for every active search.

    elmlab controller [--interval 2]          # its own process; `elmlab up` starts it

Every `interval` seconds, per search under $ELMLAB_HOME/searches that is not finished: its runs'
latest records from the store (with curves), the live progress of its queued and running runs
(step, elapsed time and the learning curve so far, from the result backend), and the cancel
requests already made (such a run is "stopping"); `decide` on that state; then
  Stop  -> the cooperative cancel with the reason "pruned at step k: ..." (the worker records the run
           `cancelled` with that reason and its partial curve; a queued run is recorded at once);
  Start -> a normal submission of the next seed, under the run id `run_id_for(search, budget, arm, seed)`.
A search with no action left and no active run is marked finished.

Its own process, not a thread of the recorder: nothing it holds in memory matters (every tick
rebuilds the state from the store and the result backend), so it can be killed and started again
at any moment without touching the recording of results, and a test can do exactly that. Restart
safety: a run whose cancel was requested is rebuilt "stopping" and not stopped again; an (arm,
seed) that has a record is not started again, and a start whose run id the store already holds is
refused by `submit` and skipped.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from elm_core.search import Start, Stop, decide
from elm_core.search.live import SearchDef, build_state, load_all, mark_finished
from elm_core.settings import Settings, get_settings
from workers import state
from workers.submit import BrokerUnavailable, cancel, submit

log = logging.getLogger("elmlab.controller")

INTERVAL_S = 2.0


def _cancel_covers(requested: int | None, attempt: int) -> bool:
    return requested is not None and requested >= attempt


class Controller:
    def __init__(self, settings: Settings | None = None, interval: float = INTERVAL_S):
        from elm_core.store import Store

        self.settings = settings or get_settings()
        self.store = Store(self.settings.store_path)
        self.interval = interval
        self._stop = threading.Event()

    def _state(self, defn: SearchDef):
        from workers.celery_app import app_for
        from workers.health import progress

        frame = self.store.runs(sweep_id=defn.search_id, with_curve=True)
        rows = frame.to_dicts()
        active = [r["run_id"] for r in rows if r["status"] in ("queued", "running")]
        live = progress(active, settings=self.settings, with_curve=True) if active else {}
        backend = app_for(self.settings).backend
        stopping = [r["run_id"] for r in rows if r["status"] in ("queued", "running")
                    and _cancel_covers(state.cancel_requested(backend, r["run_id"]), int(r["attempt"] or 0))]
        return build_state(defn, rows, live, stopping), active

    def step(self, defn: SearchDef) -> dict[str, list[str]]:
        """One decision for one search; returns the run ids it stopped and started."""
        did: dict[str, list[str]] = {"stopped": [], "started": []}
        search_state, active = self._state(defn)
        actions = decide(search_state)
        for action in actions:
            if isinstance(action, Stop):
                try:
                    cancel(action.run_id, reason=action.reason, settings=self.settings)
                except ValueError as exc:  # it finished meanwhile
                    log.info("search %s: not stopping %s: %s", defn.search_id, action.run_id, exc)
                    continue
                log.info("search %s: stopped %s: %s", defn.search_id, action.run_id, action.reason)
                did["stopped"].append(action.run_id)
            elif isinstance(action, Start):
                spec = defn.run_spec(action.budget, action.arm, action.seed)
                try:
                    submit(spec, settings=self.settings)
                except ValueError as exc:  # its run id exists: a start made before a restart
                    log.info("search %s: not starting %s: %s", defn.search_id, spec["run_id"], exc)
                    continue
                log.info("search %s: started %s", defn.search_id, spec["run_id"])
                did["started"].append(spec["run_id"])
        if not actions and not active:
            mark_finished(defn, self.settings.home)
            log.info("search %s: finished", defn.search_id)
        return did

    def tick(self) -> dict[str, dict[str, list[str]]]:
        """One pass over the active searches; a search whose step fails is retried next tick."""
        out: dict[str, dict[str, list[str]]] = {}
        for defn in load_all(self.settings.home):
            if defn.finished_at is not None:
                continue
            try:
                out[defn.search_id] = self.step(defn)
            except BrokerUnavailable as exc:
                log.warning("search %s: %s; trying again", defn.search_id, exc)
            except Exception:  # one bad search must not stop the others
                log.exception("search %s: step failed", defn.search_id)
        return out

    def run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def stop(self, *_: Any) -> None:
        self._stop.set()


def main(interval: float = INTERVAL_S) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = Controller(interval=interval)
    signal.signal(signal.SIGTERM, controller.stop)
    signal.signal(signal.SIGINT, controller.stop)
    log.info("controller: watching %s every %.1f s", controller.settings.home / "searches", interval)
    controller.run()
    return 0
