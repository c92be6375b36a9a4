"""A live ELM Lab (`elmlab up`: dashboard, worker, recorder) on a temporary home, and a headless Chromium
(Debian's /usr/bin/chromium through Playwright; no browser is downloaded). Screenshots go to
test-artifacts/e2e/."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def elmlab_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMLAB_")}
    env.update(ELMLAB_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


@contextlib.contextmanager
def running_elmlab(home: Path, *extra: str) -> Iterator[str]:
    """`elmlab up --no-browser --port <free> [extra]` on `home`; yields the dashboard's URL."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    port = free_port()
    elmlab = Path(sys.executable).with_name("elmlab")
    log = open(home / "up.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(elmlab), "up", "--no-browser", "--port", str(port), *extra], env=elmlab_env(home),
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"elmlab up did not start:\n{(home / 'up.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # `elmlab up` stops what it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def elmlab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`elmlab up` (dashboard, worker, recorder) on a fresh ELMLAB_HOME; yields the dashboard's URL."""
    with running_elmlab(tmp_path_factory.mktemp("elmlab-home")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture
def page(browser):
    """A fresh browser page; the test fails if the page asked any host but this machine for anything
    (fonts, icons, scripts, telemetry): the dashboard works offline and leaks nothing."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    outside: list[str] = []

    def watch(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            outside.append(request.url)

    context.on("request", watch)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not outside, f"requests left the machine: {sorted(set(outside))[:10]}"
