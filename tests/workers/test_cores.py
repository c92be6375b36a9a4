"""How a local worker spreads runs over the cores: defaults, the thread pin, the command-line checks."""

from __future__ import annotations

import argparse

import pytest
import torch

from elmlab.cli import main
from workers import cores


@pytest.mark.parametrize(("n_cores", "asked", "expected"), [
    (2, (None, None), (2, 1)),  # every core busy, one thread each
    (16, (None, None), (16, 1)),
    (1, (None, None), (1, 1)),
    (8, (1, None), (1, 8)),  # one run gets every core
    (8, (4, None), (4, 1)),
    (8, (4, 2), (4, 2)),
    (8, (None, 3), (8, 3)),
])
def test_run_slots_defaults_fill_every_core(monkeypatch, n_cores, asked, expected):
    monkeypatch.setattr(cores, "available_cores", lambda: n_cores)
    assert cores.run_slots(*asked) == expected


def test_available_cores_follows_the_affinity_mask():
    import os

    assert cores.available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("asked", "flag"), [((0, None), "--concurrency"), ((2, 0), "--threads-per-run")])
def test_run_slots_refuses_values_below_one(asked, flag):
    with pytest.raises(ValueError, match=flag):
        cores.run_slots(*asked)


def test_pin_threads_sets_torch_threads_from_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(cores.RUN_THREADS_ENV, "1")
        assert cores.pin_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv(cores.RUN_THREADS_ENV, "junk")  # ignored: the current setting stays
        assert cores.pin_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("argv", "says"), [
    (["worker", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["worker", "--threads-per-run", "0"], "--threads-per-run must be at least 1"),
    (["worker", "--pool", "solo", "--concurrency", "2"], "--pool solo trains one run at a time"),
    (["up", "--no-browser", "--concurrency", "-1"], "--concurrency must be at least 1"),
])
def test_bad_core_options_are_one_line(capsys, elmlab_home, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_no_thread_pool_of_runs(capsys):
    with pytest.raises(SystemExit):
        main(["worker", "--pool", "threads"])
    assert "invalid choice: 'threads'" in capsys.readouterr().err


def test_up_passes_the_core_options_to_its_worker(tmp_path):
    from elm_core.settings import Settings
    from elmlab.commands.up import _children

    settings = Settings(home=tmp_path)

    def worker_argv(**changes):
        fields = dict(read_only=False, no_worker=False, flower=None, host="127.0.0.1", port=8501, queues="train",
                      concurrency=None, threads_per_run=None)
        args = argparse.Namespace(**{**fields, **changes})
        (worker,) = [c for c in _children(args, settings) if c.name == "worker"]
        return worker.argv[worker.argv.index("worker"):]

    assert worker_argv() == ["worker", "--queues", "train"]  # the worker's defaults: one run per core
    assert worker_argv(concurrency=3, threads_per_run=2)[-2:] == ["--concurrency=3", "--threads-per-run=2"]


_WARM = """
import json, multiprocessing as mp, os, sys
import workers.tasks  # what a worker's main process has imported when it starts

def threads():
    return len(os.listdir("/proc/self/task"))

def run(spec, out):
    import torch
    from elm_core.spec import RunSpec
    from elm_core.train import train
    torch.set_num_threads(1)
    r = train(RunSpec.model_validate(spec))
    out.put([r.status, r.test_metric, [c.train_loss for c in r.curve]])

spec = json.loads(sys.argv[1])
if sys.argv[2] == "warm":  # as a worker: warm start, then the run in a forked pool process
    from workers.cores import warm_start
    before = threads()
    loaded = warm_start()
    started = threads() - before
    missing = [m for m in ("torch", "torch._dynamo", "elm_core.train") if m not in sys.modules]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=run, args=(spec, q))
    p.start()
    result = q.get(timeout=300)
    p.join()
else:  # the same run in this fresh process
    import queue
    loaded, started, missing, q = [], 0, [], queue.Queue()
    run(spec, q)
    result = q.get()
print(json.dumps({"loaded": loaded, "threads_started": started, "missing": missing, "result": result}))
"""


def test_warm_start_preloads_for_the_pool_and_changes_no_result(tmp_path):
    """The worker's main process imports torch, the training code, the native loops and the optimizers'
    lazy imports before the pool forks, without starting a thread; a run in a forked pool process then
    gives exactly the result of the same run in a fresh process."""
    import json
    import os
    import subprocess
    import sys

    spec = json.dumps({"task": "text", "n_neurons": 8, "d_m": 3, "d_tree": 3, "d_brch": 3, "steps": 12,
                       "batch_size": 2, "seq_len": 10, "eval_chars": 100, "test_chars": 100, "seed": 3})
    env = {**os.environ, "ELMLAB_HOME": str(tmp_path)}
    out = {}
    for how in ("warm", "fresh"):
        proc = subprocess.run([sys.executable, "-c", _WARM, spec, how], capture_output=True, text=True, env=env,
                              timeout=600, check=True)
        out[how] = json.loads(proc.stdout.strip().splitlines()[-1])
    warm = out["warm"]
    assert warm["missing"] == [] and warm["threads_started"] == 0
    assert {"elm_core.train", "optimizer"} <= set(warm["loaded"])
    assert warm["result"][0] == "done"
    assert warm["result"] == out["fresh"]["result"]
