"""A broker delivers at least once: a second delivery of an attempt that finished, or that trains
elsewhere, is dropped before it trains (workers.tasks.dropped)."""

from __future__ import annotations

import time

import pytest

from workers.celery_app import app_for
from workers.tasks import dropped


@pytest.fixture
def backend(lab):
    return app_for(lab.settings).backend


def test_a_second_delivery_of_a_finished_attempt_is_dropped(backend):
    backend.store_result("run-a", {"run_id": "run-a", "attempt": 0, "status": "done"}, "SUCCESS")
    assert dropped(backend, "run-a", 0) == "duplicate"
    assert dropped(backend, "run-a", 1) is None  # a retry of the run is a new attempt: it trains
    assert dropped(backend, "run-a", 0, retries=1) is None  # Celery's own retry re-sends on purpose


def test_a_second_delivery_while_the_attempt_trains_elsewhere_is_dropped(backend, lab):
    backend.store_result("run-b", {"run_id": "run-b", "attempt": 0, "heartbeat": time.time()}, "PROGRESS")
    assert dropped(backend, "run-b", 0) == "duplicate"
    silent = time.time() - 2 * lab.settings.reap_after_s  # its worker died: the message trains again
    backend.store_result("run-c", {"run_id": "run-c", "attempt": 0, "heartbeat": silent}, "PROGRESS")
    assert dropped(backend, "run-c", 0) is None
    assert dropped(backend, "run-new", 0) is None  # never delivered before
