"""A live ELM Lab (`elmlab up`: dashboard, worker, recorder) on a temporary home, and a headless Chromium
(Debian's /usr/bin/chromium through Playwright; no browser is downloaded). Screenshots go to
test-artifacts/e2e/."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from benchmarks.pages import CHROMIUM, CHROMIUM_ARGS, ROOT, serve

ARTIFACTS = ROOT / "test-artifacts" / "e2e"


@contextlib.contextmanager
def running_elmlab(home: Path, *extra: str) -> Iterator[str]:
    """`elmlab up --no-browser --port <free> [extra]` on `home`; yields the dashboard's URL."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(serve(home, *extra))
        except RuntimeError as e:
            pytest.fail(str(e))
        yield url


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
