"""Every action that changes something: queue, cancel, retry, import. One guard refuses them all.

The guard runs on the server, inside each action, so a read-only dashboard (ELMLAB_READ_ONLY=1 or
`elmlab up --read-only`) refuses a mutation even if a crafted request reached it; the pages also
leave the controls out. The queue API (`workers.submit`, `workers.health`) is imported inside the
functions that use it, so every page loads when Celery is not importable; any exception from `health()` reads as
"broker unreachable".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from elm_core.settings import get_settings
from elm_core.spec import RunSpec
from elm_core.store import Store
from workers.submit import ReadOnlyError

F = TypeVar("F", bound=Callable[..., Any])


def read_only() -> bool:
    return get_settings().read_only


def guard(action: str) -> None:
    """Raise ReadOnlyError when the dashboard is read-only (checked afresh on every call)."""
    if read_only():
        raise ReadOnlyError(f"{action}: refused, this dashboard is read-only (ELMLAB_READ_ONLY=1)")


def mutating(fn: F) -> F:
    """Decorator: the action runs only when the dashboard is not read-only."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard(fn.__name__.replace("_", " "))
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- the queue ------------------------------------------------------------------------------------


def _client():
    from workers import submit

    return submit


def _health():
    from workers import health

    return health


@mutating
def submit(specs: Sequence[RunSpec | dict[str, Any]]) -> list[str]:
    """Queue runs; returns their run ids. Raises ValueError (invalid spec) or the client's
    BrokerUnavailable (a RuntimeError) when the broker is down."""
    specs = list(specs)
    if not specs:
        raise ValueError("nothing to queue: the selection gives no runs")
    return list(_client().submit_many(specs))


@mutating
def cancel(run_ids: Iterable[str]) -> int:
    return len(_client().cancel_many(run_ids))


@mutating
def retry(run_ids: Iterable[str]) -> list[str]:
    client = _client()
    return [client.retry(run_id) for run_id in run_ids]


def health(timeout: float = 1.0) -> dict[str, Any]:
    """Broker and worker health; never raises (an error reads as broker unreachable)."""
    settings = get_settings()
    down: dict[str, Any] = {"broker_ok": False, "error": "", "broker_url": settings.broker_url or "embedded",
                            "workers": [], "queues": {}, "mode": "embedded" if settings.embedded else "distributed"}
    try:
        out = dict(_health().health(timeout=timeout))
    except Exception as exc:  # noqa: BLE001 - anything at all means: unreachable
        return {**down, "error": f"{type(exc).__name__}: {exc}"}
    return {**down, **out}


def progress(run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Live progress of running runs (step, total_steps, loss, tokens_per_s, eta_s, ...); {} on any error."""
    if not run_ids:
        return {}
    try:
        return dict(_health().progress(list(run_ids)))
    except Exception:  # noqa: BLE001 - progress is a nicety; the stored status stays shown
        return {}


@mutating
def annotate(run_id: str, tags: str, note: str, store: Store | None = None) -> None:
    """Set a run's tags (comma-separated) and note, kept beside the run files (app.annotations)."""
    from app import annotations

    annotations.save((store or Store()).path, run_id, annotations.parse_tags(tags), note)


# --- the first sweep ------------------------------------------------------------------------------


FIRST_SWEEP = {"task": "text", "preset": "small", "budget": 60_000, "d_m": (2, 4, 8, 16, 32), "seeds": (0,)}


@mutating
def queue_first_sweep() -> list[str]:
    """The first screen's button: an iso-budget sweep on the bundled corpus with the small preset."""
    from elm_core.sweeps import iso_sweep

    f = FIRST_SWEEP
    return submit(iso_sweep(f["task"], f["budget"], f["d_m"], f["seeds"], preset=f["preset"]))


# --- the store ------------------------------------------------------------------------------------


@mutating
def import_reference(store: Store | None = None) -> int:
    """Import the published enwik8 sweep (read-only reference records); returns the row count."""
    return (store or Store()).import_reference_csv()


def demo_available() -> bool:
    try:
        from elm_core.demo import demo_available as available
    except ImportError:
        return False
    return bool(available())


@mutating
def load_demo(store: Store | None = None) -> int:
    from elm_core.demo import load_demo as load

    return int(load(store or Store()))
