"""`elmlab up` and `elmlab recorder`: one per home, and their children never outlive them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elmlab.cli import UsageError, main
from elmlab.lock import instance_lock


def test_a_second_instance_on_one_home_is_refused_naming_the_first(tmp_path: Path):
    lock = tmp_path / "up.lock"
    with instance_lock(lock, "http://localhost:8501", "ELM Lab (elmlab up)"):
        with pytest.raises(UsageError, match=rf"already running .*pid {os.getpid()}, http://localhost:8501"):
            with instance_lock(lock, "http://localhost:8600", "ELM Lab (elmlab up)"):
                pass
    with instance_lock(lock, "again", "ELM Lab (elmlab up)"):  # released with its holder
        pass


def test_a_stale_lock_of_a_killed_instance_is_taken_over(tmp_path: Path):
    lock = tmp_path / "up.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from elmlab.lock import instance_lock\n"
        f"with instance_lock(Path({str(lock)!r}), 'x', 'y'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=f"pid {holder.pid}"):
        with instance_lock(lock, "z", "y"):
            pass
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with instance_lock(lock, "z", "y"):  # the file is still there, the lock is not
        assert lock.exists()


def test_elmlab_up_refuses_a_second_instance_in_one_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path))
    with instance_lock(tmp_path / "up.lock", "http://localhost:8501", "ELM Lab (elmlab up)"):
        assert main(["up", "--no-browser", "--port", "8999"]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert "already running" in err and f"pid {os.getpid()}" in err


def test_a_second_recorder_on_one_home_is_refused_in_one_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path))
    with instance_lock(tmp_path / "recorder.lock", "recorder-1@here", "a recorder"):
        assert main(["recorder"]) == 2  # refused before it consumes anything or starts a reaper
    err = capsys.readouterr().err.splitlines()[0]
    assert "a recorder is already running" in err and f"pid {os.getpid()}, recorder-1@here" in err


def test_children_die_with_a_supervisor_killed_with_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; from elmlab.lock import die_with_parent\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True,"
        " preexec_fn=die_with_parent())\n"
        "print(c.pid, flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived its killed parent")


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children of children too), from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += sorted(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its reaping is left


@pytest.mark.slow
def test_kill_9_of_elmlab_up_leaves_no_child_running(tmp_path: Path):
    """The real `elmlab up` (dashboard, recorder, controller, worker and its pool) killed with SIGKILL:
    every process it started exits within seconds instead of living on under init."""
    from benchmarks.pages import free_port

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMLAB_")}
    env.update(ELMLAB_HOME=str(home), PYTHONUNBUFFERED="1")
    up = subprocess.Popen([sys.executable, "-m", "elmlab.cli", "up", "--no-browser", "--port", str(free_port()),
                           "--concurrency", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
    children: set[int] = set()
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("ELM Lab is up"):
                break
        else:
            raise AssertionError("elmlab up did not come up:\n" + "".join(lines))
        deadline = time.monotonic() + 30  # the worker's pool processes come a moment after the worker
        while time.monotonic() < deadline and len(children := _descendants(up.pid)) < 5:
            time.sleep(0.2)
        assert len(children) >= 5, f"expected dashboard, recorder, controller, worker and a pool process: {children}"
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.1)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for p in children if _alive(p)}
        assert not left, f"children of the killed elmlab up still run: {left}"
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if up.poll() is None:
            up.kill()
            up.wait()
        up.stdout.close()


def test_the_startup_line_of_a_read_only_dashboard_names_no_broker(tmp_path: Path):
    import argparse

    from elm_core.settings import Settings
    from elmlab.commands.up import _children, startup_lines

    settings = Settings(home=tmp_path)
    fields = dict(no_worker=False, flower=None, host="127.0.0.1", port=8501, queues="train", concurrency=None,
                  threads_per_run=None)
    args = argparse.Namespace(read_only=True, **fields)
    first, second = startup_lines(args, settings, "http://localhost:8501", _children(args, settings))
    assert first.startswith("ELM Lab is up, read-only: http://localhost:8501") and "broker" not in first
    assert "queueing, cancel and retry are off" in first and str(settings.store_path) in first
    assert second == "Ctrl-C stops the dashboard. No broker, worker or recorder was started."
    args = argparse.Namespace(read_only=False, **fields)
    first, second = startup_lines(args, settings, "http://localhost:8501", _children(args, settings))
    assert first.startswith("ELM Lab is up: http://localhost:8501") and "broker" in first
    assert second == "Ctrl-C stops the dashboard, the recorder, the controller and the worker."
