"""The embedded broker hands out messages in the order they were queued."""

from __future__ import annotations

import pytest
from kombu import Connection

from elm_core.settings import Settings
from workers import celery_app, fstransport


@pytest.fixture
def connection(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    with Connection(f"{fstransport.SCHEME}://", transport_options={
            "data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False}) as conn:
        yield conn, folder


def test_messages_come_out_in_the_order_they_went_in_when_the_clock_gains_a_digit(connection, monkeypatch):
    conn, folder = connection
    # 999.9 s, 1000.1 s, 10000.2 s after some origin: as text, kombu's own names sort 10000 < 1000 < 999.
    clock = iter([999_900_000_000, 1_000_100_000_000, 10_000_200_000_000])
    monkeypatch.setattr(fstransport.time, "time_ns", lambda: next(clock))
    queue = conn.SimpleQueue("train")
    for i in range(3):
        queue.put({"n": i})
    assert len(list(folder.glob("*.train.msg"))) == 3 and not list(folder.glob(".*"))
    got = []
    for _ in range(3):
        message = queue.get(timeout=2)
        got.append(message.payload["n"])
        message.ack()
    assert got == [0, 1, 2]
    queue.close()


def test_many_messages_keep_their_order(connection):
    conn, _ = connection
    queue = conn.SimpleQueue("train")
    for i in range(50):
        queue.put({"n": i})
    got = [queue.get(timeout=2) for _ in range(50)]
    assert [m.payload["n"] for m in got] == list(range(50))
    queue.close()


def test_names_are_fixed_width_so_text_order_is_time_order():
    stamps = [368_442_000_000, 1_470_000_000_000, 1_796_126_397_565_523_900]
    names = [fstransport.message_name("train", s) for s in stamps]
    assert sorted(names) == names and len({len(n.split("_")[0]) for n in names}) == 1
    assert all(n.endswith(".train.msg") for n in names)


def test_the_embedded_app_uses_it(tmp_path):
    settings = Settings(home=tmp_path)
    assert celery_app.celery_config(settings)["broker_url"].startswith(f"{fstransport.SCHEME}://")
    with celery_app.app_for(settings).connection_for_write() as conn:
        assert isinstance(conn.transport, fstransport.Transport)
