"""A worker process that meets a fatal device error records the run failed and exits for a fresh one.

The error is simulated on the CPU: a worker whose model raises the CUDA runtime's "illegal memory
access" for runs with seed 666. The prefork pool is the supervisor here: it replaces the process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from elm_core.runtime import DEVICE_LOST_EXIT
from tests.workers.conftest import ROOT, Lab, tiny, wait_for
from workers import submit as client

WORKER = """
import sys
import elm_core.train as train

forward = train.ELMNetwork.forward


def broken(self, x, state=None):
    if self.cfg.seed == 666:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return forward(self, x, state)


train.ELMNetwork.forward = broken
from elmlab.cli import main

sys.exit(main(["worker", "--loglevel", "INFO", *sys.argv[1:]]))
"""


def _worker(lab: Lab, *args: str) -> subprocess.Popen:
    logs = lab.home / "test-logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"broken-worker-{len(lab.procs)}.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=ROOT, env=lab.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    lab.procs.append(("broken-worker", proc))
    return proc


def test_a_fatal_device_error_fails_the_run_and_the_pool_process_exits(lab: Lab):
    lab.recorder()
    worker = _worker(lab)
    bad = client.submit(tiny(seed=666))
    rec = lab.wait_status(bad, ("done", "failed"), timeout=90)
    assert rec.status == "failed" and "illegal memory access" in rec.reason
    wait_for(lambda: f"exitcode {DEVICE_LOST_EXIT}" in lab.logs(), 30, "the pool process to exit")
    good = client.submit(tiny(seed=0))  # taken by the fresh pool process
    rec = lab.wait_status(good, ("done", "failed"), timeout=90)
    assert rec.status == "done", rec.reason
    assert worker.poll() is None  # the supervisor lives on
    assert lab.store.history(bad)["status"].to_list()[-1] == "failed"  # acknowledged, not run again


@pytest.mark.slow  # the same exit as the pool process's, above; here the worker process itself exits
def test_a_solo_worker_exits_non_zero_after_a_fatal_device_error(lab: Lab):
    lab.recorder()
    worker = _worker(lab, "--pool", "solo")
    bad = client.submit(tiny(seed=666))
    assert lab.wait_status(bad, ("done", "failed"), timeout=90).status == "failed"
    assert worker.wait(timeout=60) == DEVICE_LOST_EXIT
    lab.procs.remove(("broken-worker", worker))  # its exit is what the test expects
