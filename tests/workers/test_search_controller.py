"""The search controller against the real embedded broker and store (no training processes: the
workers' side, progress and records, is written here the way a worker writes it).

An arm whose live curve is far worse is pruned through the cooperative cancel with a "pruned at
step k" reason; once three arms are past the top rung, the best contender gets its next seed; a
restarted controller stops nothing twice and starts nothing twice; a finished search is marked
finished.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from elm_core.search.live import load, run_id_for
from elmlab.cli import main
from workers import state
from workers.celery_app import app_for
from workers.controller import Controller

SEARCH = ["--budget", "20000", "--d-m-values", "2,3,4,5", "--seeds", "0,1", "--steps", "60", "--batch-size", "2",
          "--seq-len", "10", "--d-tree", "3", "--d-brch", "3", "--eval-chars", "100", "--test-chars", "100"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("ELMLAB_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _create(capsys) -> str:
    assert main(["sweep", "search", *SEARCH]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _curve(level: float, upto: int, rng) -> list[list[float]]:
    """A decaying training loss with noise, one point per step (curve_every is 1 at 60 steps)."""
    return [[s, level + 2.0 / math.sqrt(s) + 0.01 * rng.standard_normal(), None] for s in range(1, upto + 1)]


def _running(lab_store, backend, run_id: str, level: float, upto: int, rng) -> None:
    """What a worker does: a `running` record, and PROGRESS with its step and curve."""
    rec = lab_store.run(run_id)
    lab_store.put(rec.model_copy(update={"status": "running"}))
    backend.store_result(run_id, {"attempt": 0, "step": upto, "total_steps": 60, "elapsed_s": upto * 0.1,
                                  "points": _curve(level, upto, rng)}, "PROGRESS")


def _finish(lab_store, run_id: str, status: str, reason: str | None = None) -> None:
    rec = lab_store.run(run_id)
    done = status == "done"
    lab_store.put(rec.model_copy(update={"status": status, "reason": reason, "steps": 60 if done else 24,
                                         "wall_time_s": 6.0, "test_metric": 2.0 if done else None}))


def test_controller_prunes_restarts_and_seeds(home, capsys):
    from elm_core.settings import get_settings
    from elm_core.store import Store

    sid = _create(capsys)
    settings = get_settings()
    store, backend = Store(settings.store_path), app_for(settings).backend
    defn = load(sid, home)
    assert defn.arms == (2, 3, 4, 5) and defn.total_steps == 60 and defn.signal() == ("train", (20,))
    ids = {arm: run_id_for(sid, 20000.0, arm, 0) for arm in defn.arms}
    frame = store.runs(sweep_id=sid)
    assert sorted(frame["run_id"].to_list()) == sorted(ids.values())  # first seed of every allocation queued
    assert set(frame["status"].to_list()) == {"queued"}

    rng = np.random.default_rng(0)
    levels = {2: 1.0, 3: 1.02, 4: 1.05, 5: 3.0}  # d_m 5 is far out of the race at the rung (step 20)
    for arm in (2, 3):
        _running(store, backend, ids[arm], levels[arm], 24, rng)
    for arm in (4, 5):
        _running(store, backend, ids[arm], levels[arm], 10, rng)
    # Two arms past the top rung rank nothing: no seed yet, nobody stopped.
    assert Controller(settings).tick()[sid] == {"stopped": [], "started": []}
    for arm in (4, 5):
        _running(store, backend, ids[arm], levels[arm], 24, rng)
    did = Controller(settings).tick()[sid]
    seed1 = [run_id_for(sid, 20000.0, 2, 1)]
    # d_m 5 is stopped; of the three contenders left, the best ceil(3 / 3) = 1 gets its next seed.
    assert did == {"stopped": [ids[5]], "started": seed1}
    reason = state.cancel_reason(backend, ids[5])
    assert reason.startswith("pruned at step 24: rank 4 of 4 at rung 20")

    # A restarted controller sees the cancel request (the run is stopping) and the started runs.
    assert Controller(settings).tick()[sid] == {"stopped": [], "started": []}

    # The worker records the pruned run with that reason; the others finish: nothing is left to do.
    _finish(store, ids[5], "cancelled", reason)
    for arm in (2, 3, 4):
        _finish(store, ids[arm], "done")
    assert Controller(settings).tick()[sid] == {"stopped": [], "started": []}
    assert load(sid, home).finished_at is None  # seed 1 of d_m 2 still queued

    for run_id in seed1:
        _finish(store, run_id, "done")
    Controller(settings).tick()
    assert load(sid, home).finished_at is not None
    assert sid not in Controller(settings).tick()  # a finished search is left alone
    capsys.readouterr()
    assert main(["status", "--sweep", sid]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(ids[5]))
    assert line.split()[1] == "pruned" and line.rstrip().endswith("at step 24")
    assert sorted(store.runs(sweep_id=sid, status="done")["run_id"].to_list()) == sorted([*seed1, ids[2], ids[3],
                                                                                          ids[4]])
    assert store.run(ids[5]).reason.startswith("pruned at step 24")


def test_search_rejects_bad_input(home, capsys):
    assert main(["sweep", "search", "--budget", "20000", "--d-m-values", "2,3"]) == 2
    assert "at least three allocations" in capsys.readouterr().err
    assert main(["sweep", "search", *SEARCH, "--eta", "1"]) == 2
    assert main(["sweep", "search", *SEARCH[:4], "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err
    assert not (home / "searches").exists() or not list((home / "searches").glob("*.json"))


def _count_publishes(monkeypatch) -> dict[str, int]:
    """Every broker message sent from here on, per run id (the real publish still runs)."""
    import workers.submit as submit_module

    sent: dict[str, int] = {}
    real = submit_module.publish

    def counting(settings, spec_json, run_id, *args):
        sent[run_id] = sent.get(run_id, 0) + 1
        return real(settings, spec_json, run_id, *args)

    monkeypatch.setattr(submit_module, "publish", counting)
    return sent


THREE = ["--budget", "20000", "--budget", "30000", "--budget", "40000", *SEARCH[2:]]


def test_a_search_created_while_the_controller_runs_queues_every_run_once(home, capsys, monkeypatch, caplog):
    import workers.controller as controller_module
    from elm_core.settings import get_settings

    sent = _count_publishes(monkeypatch)
    real_decide, raced = controller_module.decide, []

    def decide_then_the_running_controller_ticks(state):
        actions = real_decide(state)
        if not raced:  # `sweep search` decided on the empty search; the running controller ticks now
            raced.append(True)
            (did,) = Controller(get_settings()).tick().values()
            assert len(did["started"]) == 12  # it queues every first seed
        return actions

    monkeypatch.setattr(controller_module, "decide", decide_then_the_running_controller_ticks)
    caplog.set_level("INFO", logger="elmlab.controller")
    assert main(["sweep", "search", *THREE]) == 0
    captured = capsys.readouterr()
    sid = captured.out.strip().splitlines()[-1]
    assert "error" not in captured.err and "Traceback" not in captured.err
    assert "queued 12 runs" in captured.err  # 3 budgets x 4 allocations, whoever queued them
    expected = {run_id_for(sid, b, arm, 0) for b in (20000.0, 30000.0, 40000.0) for arm in (2, 3, 4, 5)}
    assert sent == dict.fromkeys(expected, 1)  # one message per run
    assert caplog.text.count("not starting") == 12  # the CLI's own starts, refused and skipped
    from elm_core.store import Store

    frame = Store(get_settings().store_path).runs(sweep_id=sid)
    assert sorted(frame["run_id"].to_list()) == sorted(expected) and set(frame["status"]) == {"queued"}


def test_a_submission_that_loses_the_race_for_its_run_id_sends_nothing(home, monkeypatch):
    from elm_core.store import Store
    from workers.submit import submit

    spec = {"task": "text", "budget": 20000, "d_m": 3, "d_tree": 3, "d_brch": 3, "steps": 5, "run_id": "race-1"}
    sent = _count_publishes(monkeypatch)
    assert submit(spec) == "race-1"
    # Another submitter checked for the run id before this one's record was written: its check passes.
    monkeypatch.setattr(Store, "run", lambda self, run_id: None)
    with pytest.raises(ValueError, match="queued by another submitter at the same moment; nothing was sent"):
        submit(spec)
    assert sent == {"race-1": 1}
