"""Real worker and recorder processes in a temporary ELMLAB_HOME, embedded or on the Redis broker.

Every process a test starts runs in its own process group and is killed at teardown, pass or fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ELMLAB = [sys.executable, "-m", "elmlab.cli"]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

TINY: dict[str, Any] = {"task": "text", "n_neurons": 8, "d_m": 3, "d_tree": 3, "d_brch": 3, "steps": 5,
                        "batch_size": 2, "seq_len": 10, "eval_chars": 100, "test_chars": 100}


def tiny(**changes: Any) -> dict[str, Any]:
    return {**TINY, **changes}


def redis_up() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2,
             renew: Callable[[], bool] | None = None) -> Any:
    """Poll `predicate` every `every` seconds until it is truthy (returned); AssertionError after
    `timeout` seconds, counted afresh whenever `renew()` says the awaited work moved on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if renew is not None and renew():
            deadline = time.monotonic() + timeout
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Lab:
    """One ELM Lab instance: its home, its environment, and the processes a test started."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen]] = []

    @property
    def settings(self):
        from elm_core.settings import Settings

        return Settings(**{k.removeprefix("ELMLAB_").lower(): v for k, v in self.env.items()
                           if k.startswith("ELMLAB_") and k != "ELMLAB_RUN_THREADS"})

    @property
    def store(self):
        from elm_core.store import Store

        return Store(self.settings.store_path)

    def start(self, *args: str, name: str | None = None) -> subprocess.Popen:
        name = name or args[0]
        logs = self.home / "test-logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([*ELMLAB, *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.procs.append((name, proc))
        return proc

    def worker(self, *extra: str) -> subprocess.Popen:
        return self.start("worker", "--loglevel", "INFO", *extra)

    def recorder(self) -> subprocess.Popen:
        return self.start("recorder", "--loglevel", "INFO")

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal the process's whole group (a worker and its pool processes), then reap it."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def wait_ready(self, n_workers: int, timeout: float = 30) -> list[str]:
        """Wait until `n_workers` nodes (workers and recorders) answer a ping."""
        from workers.health import health

        def ready():
            self.check_alive()
            h = health(timeout=0.5, settings=self.settings)
            return h["workers"] if len(h["workers"]) >= n_workers else None

        return wait_for(ready, timeout, f"{n_workers} worker(s) to answer a ping", every=0.3)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None and proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM, 0):
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in sorted((self.home / "test-logs").glob("*.log")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def wait_log(self, text: str, timeout: float = 30) -> None:
        """Wait until a process's log says `text` (an event no store or broker state shows)."""

        def said() -> bool:
            self.check_alive()
            return any(text in p.read_text(errors="replace") for p in (self.home / "test-logs").glob("*.log"))

        try:
            wait_for(said, timeout, f"a log to say {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def status(self, run_id: str) -> str | None:
        rec = self.store.run(run_id)
        return None if rec is None else rec.status

    def wait_status(self, run_id: str, statuses: str | tuple[str, ...], timeout: float = 60):
        """Wait until the run's latest record has one of `statuses`; fail after `timeout` seconds
        without that and without the run's training advancing (each new step it reports waits
        `timeout` again, so a slow machine is not mistaken for a stuck run)."""
        from workers.health import progress

        statuses = (statuses,) if isinstance(statuses, str) else statuses
        last_step: list[Any] = [None]

        def reached():
            self.check_alive()
            rec = self.store.run(run_id)
            return rec if rec is not None and rec.status in statuses else None

        def advanced() -> bool:
            step = progress([run_id], settings=self.settings)[run_id].get("step")
            moved, last_step[0] = step is not None and step != last_step[0], step
            return moved

        try:
            return wait_for(reached, timeout, f"run {run_id} to be {'/'.join(statuses)}", every=0.3, renew=advanced)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; history:\n{self.store.history(run_id)}\n{self.logs()}") from None

    def wait_progress(self, run_id: str, min_step: int = 1, timeout: float = 60) -> dict[str, Any]:
        from workers.health import progress

        def stepping():
            self.check_alive()
            p = progress([run_id], settings=self.settings)[run_id]
            return p if p and (p.get("step") or 0) >= min_step else None

        try:
            return wait_for(stepping, timeout, f"run {run_id} to report step {min_step}", every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; history:\n{self.store.history(run_id)}\n{self.logs()}") from None

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:  # pool processes left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker_url: str | None) -> Lab:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMLAB_")}
    env.update(ELMLAB_HOME=str(home), ELMLAB_HEARTBEAT_S="0.5", ELMLAB_REAP_AFTER_S="4", PYTHONUNBUFFERED="1")
    if broker_url:
        env["ELMLAB_BROKER_URL"] = broker_url
    for k in [k for k in os.environ if k.startswith("ELMLAB_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("ELMLAB_"):
            monkeypatch.setenv(k, v)
    return Lab(home, env)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """An embedded ELM Lab (filesystem broker, file results) in a temporary home."""
    lab = _lab(tmp_path, monkeypatch, None)
    try:
        yield lab
    finally:
        lab.stop_all()


def _flush(db: int) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_lab(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """An ELM Lab on the Redis broker at 127.0.0.1:6379, in the DB number the test's `redis_db`
    marker gives (unique per test), flushed before and after."""
    if not redis_up():
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} (.ci/run starts one)")
    marker = request.node.get_closest_marker("redis_db")
    assert marker is not None, "a redis_lab test needs @pytest.mark.redis_db(N)"
    db = int(marker.args[0])
    _flush(db)
    lab = _lab(tmp_path, monkeypatch, f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
    try:
        yield lab
    finally:
        lab.stop_all()
        _flush(db)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_db(n): the Redis DB number a redis_lab test uses (unique per test)")
