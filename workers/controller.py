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
import math
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from elm_core.search import Start, Stop, decide
from elm_core.search.live import SearchDef, build_state, load_all, mark_finished, new_search_id, run_id_for, save
from elm_core.settings import Settings, get_settings
from workers import state
from workers.submit import BrokerUnavailable, cancel, check_writable, submit, validate

log = logging.getLogger("elmlab.controller")

INTERVAL_S = 2.0


def _total_steps(spec: dict[str, Any], settings: Settings) -> tuple[int, int | None]:
    """(steps a run trains, eval_every) from the resolved protocol, counted as elm_core.train counts them."""
    from elm_core.spec import parse_spec
    from elm_core.train import prepare

    parsed = parse_spec(spec)
    task, _ = prepare(parsed, settings.data_path)
    proto = parsed.protocol(task.kind)
    if task.kind == "spike":
        per_epoch = proto["batches_per_epoch"] or math.ceil(task.num_items("train") / proto["batch_size"])
        return int(proto["epochs"] * per_epoch), proto["eval_every"]
    return int(proto["steps"]), proto["eval_every"]


def create_search(task: str, budgets: Sequence[float], arms: Sequence[int], seeds: Sequence[int],
                  spec: dict[str, Any] | None = None, *, eta: int = 3, z: float = 1.96, min_rung: int | None = None,
                  max_seeds: int | None = None, compute_limit: float | None = None,
                  settings: Settings | None = None) -> tuple[SearchDef, list[str]]:
    """Validate, save and start a search: every (budget, d_m) must be a valid run (ValueError naming
    it, nothing saved); then the definition is saved and the first seed of every allocation queued
    through the normal submission. Returns (the definition, the run ids of the first seeds now queued,
    by this call or by a controller already running). ReadOnlyError, BrokerUnavailable (the search
    is saved; the controller queues its runs later)."""
    settings = settings or get_settings()
    check_writable(settings)
    spec = dict(spec or {})
    budgets = tuple(dict.fromkeys(float(b) for b in budgets))
    arms_t = tuple(sorted(set(int(a) for a in arms)))
    seeds_t = tuple(dict.fromkeys(int(s) for s in seeds))
    if eta < 2:
        raise ValueError("eta must be at least 2")
    if len(arms_t) < 3:
        raise ValueError("d_m values: a search needs at least three allocations (an iso fit needs a bracket)")
    if not budgets or not seeds_t:
        raise ValueError("a search needs a budget and a seed")
    for b in budgets:
        for arm in arms_t:
            try:
                validate({**spec, "task": task, "budget": b, "d_m": arm, "seed": seeds_t[0]}, settings=settings)
            except ValueError as exc:
                raise ValueError(f"budget {b:g}, d_m {arm}: {exc}") from None
    total, eval_every = _total_steps({**spec, "task": task, "budget": budgets[0], "d_m": arms_t[0]}, settings)
    defn = SearchDef(search_id=new_search_id(), task=task, budgets=budgets, arms=arms_t, seeds=seeds_t,
                     total_steps=total, eval_every=eval_every, curve_every=max(1, total // 200), eta=eta, z=z,
                     min_rung=min_rung, max_seeds=max_seeds, compute_limit=compute_limit, spec=spec,
                     created_at=time.time())
    if not defn.signal()[1]:
        raise ValueError(f"{total} steps leave no rung at eta {eta}; train longer or lower the minimum rung")
    save(defn, settings.home)
    controller = Controller(settings)
    controller.step(defn)
    # A controller already running may load the saved search and queue some of these first: the
    # second submission of a run id is refused and skipped, so each run is queued once, by either.
    first = [run_id_for(defn.search_id, b, arm, seeds_t[0]) for b in budgets for arm in arms_t]
    return defn, [run_id for run_id in first if controller.store.run(run_id) is not None]


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
