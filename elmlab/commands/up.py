"""`elmlab up`: the dashboard, one local worker, the recorder and the search controller, as child
processes; Ctrl-C stops them all.

    elmlab up [--port 8501] [--host 127.0.0.1] [--no-browser] [--read-only] [--no-worker]
              [--concurrency N] [--threads-per-run T]     # default: one run per core, one thread each

One `elmlab up` per home: a second one is refused, naming the first (a lock held while it lives).
Each child runs in its own process group with its output in $ELMLAB_HOME/logs/<name>.log, and is
killed by the kernel if `elmlab up` dies without stopping it (kill -9 included). A child
that dies during start-up stops everything with its log's tail and exit status 1; one that dies
later is started again (at most MAX_RESTARTS times). Ctrl-C or SIGTERM: SIGTERM to every child's
group, SIGKILL to what is left after GRACE_S seconds. A run that was training is picked up again by
the reaper at the next start (its heartbeat stops), or straight away by another worker.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path

from elmlab.cli import UsageError
from elmlab.lock import die_with_parent, instance_lock

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
START_TIMEOUT_S = 60.0
SETTLE_S = 3.0
GRACE_S = 8.0
MAX_RESTARTS = 5
UP_LOCK = "up.lock"  # in $ELMLAB_HOME: one `elmlab up` per home (elmlab/lock.py)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} elmlab up: starting {self.name}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent())
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _port_open(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _children(args: argparse.Namespace, settings) -> list[Child]:
    logs = settings.logs_path
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["ELMLAB_HOME"] = str(settings.home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    elmlab = [sys.executable, "-m", "elmlab.cli"]
    dash_env = dict(env)
    if args.read_only:
        dash_env["ELMLAB_READ_ONLY"] = "1"
    flower = []
    if args.flower is not None and not args.read_only:
        flower_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        dash_env["ELMLAB_FLOWER_URL"] = f"http://{flower_host}:{args.flower}"
        flower = [Child("flower", [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "flower",
                                   f"--port={args.flower}", f"--address={args.host}"], env, logs / "flower.log")]
    children = [Child("dashboard", [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port), "--server.address",
        args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ], dash_env, logs / "dashboard.log")]
    if not args.read_only:
        children.append(Child("recorder", [*elmlab, "recorder"], env, logs / "recorder.log"))
        children.append(Child("controller", [*elmlab, "controller"], env, logs / "controller.log"))
        if not args.no_worker:
            cores = [f"--{flag}={value}" for flag, value in (("concurrency", args.concurrency),
                                                              ("threads-per-run", args.threads_per_run))
                     if value is not None]
            children.append(Child("worker", [*elmlab, "worker", "--queues", args.queues, *cores], env,
                                  logs / "worker.log"))
    return children + flower


def startup_lines(args: argparse.Namespace, settings, url: str, children: list[Child]) -> list[str]:
    """What `elmlab up` prints once the dashboard answers. A read-only one names no broker: it queues
    nothing and started none."""
    names = [f"the {c.name}" for c in children]
    started = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    if args.read_only:
        return [f"ELM Lab is up, read-only: {url}  (publishes the runs of {settings.store_path}; queueing, cancel "
                f"and retry are off; logs {settings.logs_path})",
                f"Ctrl-C stops {started}. No broker, worker or recorder was started."]
    mode = "embedded broker" if settings.embedded else f"broker {settings.broker_url and _mask(settings)}"
    return [f"ELM Lab is up: {url}  ({mode}; home {settings.home}; logs {settings.logs_path})",
            f"Ctrl-C stops {started}."]


def stop_all(children: list[Child], grace: float = GRACE_S) -> None:
    for c in children:
        if c.alive():
            c.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        c.signal(signal.SIGKILL)  # the group: pool processes included
        try:
            c.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def run(args: argparse.Namespace) -> int:
    from elm_core.settings import get_settings

    if not APP.is_file():
        raise UsageError(f"the dashboard is missing: {APP} not found")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, not {args.port}")
    if not (args.read_only or args.no_worker):
        from workers.cores import run_slots

        run_slots(args.concurrency, args.threads_per_run)  # a bad value: one line now, not a worker dying later
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    url_host = "localhost" if args.host in ("0.0.0.0", "127.0.0.1", "::") else args.host
    url = f"http://{url_host}:{args.port}"
    with instance_lock(settings.home / UP_LOCK, url, "ELM Lab (elmlab up)"):
        if _port_open(args.host, args.port):
            raise UsageError(f"port {args.port} on {args.host} is already in use; pick another with --port")
        return _supervise(args, settings, url)


def _supervise(args: argparse.Namespace, settings, url: str) -> int:
    children = _children(args, settings)

    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for c in children:
            c.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while stopping["signal"] is None:  # start-up: every child alive, the dashboard answering
            dead = [c for c in children if not c.alive()]
            if dead:
                c = dead[0]
                print(f"elmlab up: error: the {c.name} exited during start-up (status {c.proc.returncode}); "
                      f"log {c.log}:\n{c.tail()}", file=sys.stderr)
                return 1
            if _port_open(args.host, args.port) and all(time.monotonic() - c.started_at > SETTLE_S for c in children):
                break
            if time.monotonic() > deadline:
                print(f"elmlab up: error: the dashboard did not answer on {url} within {START_TIMEOUT_S:.0f} s; "
                      f"log {children[0].log}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if stopping["signal"] is not None:
            return 0
        for line in startup_lines(args, settings, url, children):
            print(line, flush=True)
        if not args.no_browser:
            try:
                webbrowser.open(url)
            except Exception:  # no browser here: the URL is printed above
                pass
        while stopping["signal"] is None:
            for c in children:
                if c.alive():
                    continue
                if c.restarts >= MAX_RESTARTS:
                    print(f"elmlab up: error: the {c.name} keeps exiting (status {c.proc.returncode}); "
                          f"log {c.log}:\n{c.tail()}", file=sys.stderr)
                    return 1
                c.restarts += 1
                print(f"elmlab up: the {c.name} exited (status {c.proc.returncode}); starting it again "
                      f"(log {c.log})", file=sys.stderr, flush=True)
                c.start()
            time.sleep(0.5)
        return 0
    finally:
        stop_all(children)
        for s, handler in old.items():
            signal.signal(s, handler)
        print("elmlab up: stopped", file=sys.stderr)


def _mask(settings) -> str:
    from workers.celery_app import mask_url

    return mask_url(settings.broker_url or "")


def register(sub) -> None:
    from elmlab.commands.queue import add_core_arguments

    p = sub.add_parser("up", help="start the dashboard, a local worker and the recorder (Ctrl-C stops them)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address the dashboard listens on (default 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--read-only", action="store_true",
                   help="publish results only: no queueing, cancel or retry; starts no worker or recorder")
    p.add_argument("--no-worker", action="store_true", help="start no training worker (workers run elsewhere)")
    p.add_argument("--queues", default="train", help="queues of the local worker (default train)")
    add_core_arguments(p)  # the local worker's: one run per core by default
    p.add_argument("--flower", type=int, nargs="?", const=5555, default=None, metavar="PORT",
                   help="also start Flower (default port 5555); the Runs page links to it")
    p.set_defaults(func=run, _parser=p)
