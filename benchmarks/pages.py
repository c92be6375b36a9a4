"""First content of every dashboard page in a real browser: `python -m benchmarks.pages` prints JSON.

A temporary home is filled with the demo set (`--store demo`) or with `--runs` synthetic runs of
benchmarks.store (`--store bench`, three records each), a read-only `elmlab up` serves it, and Debian's
Chromium (through Playwright; no browser is downloaded) opens each page `--repeats` times, pages taken
in turn (A B C ... A B C ...) so that a drift of the machine's speed spreads over all of them. A page's
first content is the time from navigation to its title on screen. The first view of the server fills
its caches and is reported apart (`warm_up_s`): it is not what a visitor waits for.

`--queued N` adds N runs queued on the embedded broker (`submit_many`, one sweep, real messages), and the
dashboard is then served as `elmlab up --no-worker` (the recorder runs, nothing trains), not read-only: the
Runs page then reads the live progress of N queued runs and counts their messages.

Targets, on an idle machine: 1.5 s a page over the demo set, 2.5 s over 100,000 runs. The 1-minute load
average per core is printed beside the figures; on a loaded machine they mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("", "runs", "explore", "sweeps", "scaling", "run", "share")
TARGET_S = {"demo": 1.5, "bench": 2.5}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
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
def serve(home: Path, *extra: str, start_timeout_s: float = 90) -> Iterator[str]:
    """`elmlab up --no-browser --port <free> [extra]` on `home`; yields the dashboard's URL and stops it
    (and all it started) on exit. RuntimeError, with the end of its log, if it does not come up."""
    port = free_port()
    elmlab = Path(sys.executable).with_name("elmlab")
    log = open(home / "up.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(elmlab), "up", "--no-browser", "--port", str(port), *extra], env=elmlab_env(home),
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"elmlab up did not start:\n{(home / 'up.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `elmlab up` stops what it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def fill(home: Path, store: str, runs: int) -> None:
    """Fill `home`'s store in a child process (with `home`'s settings, as `elmlab up` will read them)."""
    code = {
        "demo": "from elm_core.demo import load_demo; from elm_core.store import Store; load_demo(Store())",
        "bench": "from elm_core.settings import get_settings; from elm_core.store import Store; "
                 "from benchmarks.store import write_synthetic; "
                 f"write_synthetic(Store(get_settings().store_path), {3 * runs}, {min(1_000, runs)})",
    }[store]
    subprocess.run([sys.executable, "-c", code], env=elmlab_env(home), cwd=ROOT, check=True, timeout=900)


def queue(home: Path, n: int) -> None:
    """Queue `n` small runs of one sweep in `home` (a child process with `home`'s settings); no worker takes them."""
    code = ("from workers.submit import submit_many; "
            "submit_many([{'task': 'text', 'n_neurons': 8, 'd_m': 3, 'steps': 5, 'seed': i, 'sweep_id': 'queued'} "
            f"for i in range({n})])")
    subprocess.run([sys.executable, "-c", code], env=elmlab_env(home), cwd=ROOT, check=True, timeout=900)


def first_content(page: Any, url: str, timeout_s: float = 120) -> float:
    """Seconds from navigation to the page's title on screen (its first content)."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.locator("[data-testid='stMain'] h1").first.wait_for(state="visible", timeout=timeout_s * 1000)
    return time.perf_counter() - t0


def time_pages(page: Any, url: str, repeats: int) -> dict[str, Any]:
    """Every page `repeats` times, in turn, after one warm-up view; per page the median, min and max."""
    warm_up = first_content(page, url)
    seen: dict[str, list[float]] = {p or "design": [] for p in PAGES}
    for _ in range(repeats):
        for p in PAGES:
            seen[p or "design"].append(first_content(page, f"{url}/{p}"))
    return {
        "warm_up_s": round(warm_up, 3),
        "pages": {name: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                         "max_s": round(max(t), 3)} for name, t in seen.items()},
    }


def run_pages_bench(store: str = "demo", runs: int = 100_000, repeats: int = 3,
                    tmpdir: str | Path | None = None, queued: int = 0) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        fill(home, store, runs)
        if queued:
            queue(home, queued)
        fill_s = time.perf_counter() - t0
        with serve(home, "--no-worker" if queued else "--read-only") as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
                timed = time_pages(page, url, repeats)
            finally:
                browser.close()
    target = TARGET_S[store]
    return {
        "store": store, "runs": runs if store == "bench" else None, "queued": queued, "repeats": repeats,
        "fill_s": round(fill_s, 1), "load_per_core": round(os.getloadavg()[0] / (os.cpu_count() or 1), 2),
        "target_s": target, **timed,
        "over_target": sorted(n for n, t in timed["pages"].items() if t["median_s"] > target),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pages", description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=tuple(TARGET_S), default="demo")
    ap.add_argument("--runs", type=int, default=100_000, help="synthetic runs of --store bench (default 100000)")
    ap.add_argument("--repeats", type=int, default=3, help="views of each page (default 3)")
    ap.add_argument("--queued", type=int, default=0, help="runs queued on the embedded broker besides (default 0)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.repeats < 1:
        ap.error("--runs and --repeats must be at least 1")
    if args.queued < 0:
        ap.error("--queued must be 0 or more")
    try:
        out = run_pages_bench(args.store, args.runs, args.repeats, queued=args.queued)
    except RuntimeError as e:
        print(f"benchmarks.pages: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
