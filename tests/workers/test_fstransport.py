"""The embedded broker's message files: handed out in the order they were queued, and never taken
half-written (workers/fstransport.py)."""

from __future__ import annotations

import pytest
from kombu import Connection
from kombu.transport.virtual import Empty

import workers.fstransport as fstransport
from elm_core.settings import Settings
from workers.celery_app import app_for, celery_config


def _options(folder):
    return dict(data_folder_in=str(folder), data_folder_out=str(folder), store_processed=False,
                control_folder=str(folder.parent / "control"))  # kombu's default is ./control


def _channel(folder):
    return Connection(transport=fstransport.Transport, transport_options=_options(folder)).channel()


def test_messages_come_out_in_the_order_they_went_in_when_the_clock_gains_a_digit(tmp_path, monkeypatch):
    # 999.9 s, 1000.1 s, 10000.2 s after some origin: as text, kombu's own names sort 10000 < 1000 < 999.
    clock = iter([999_900_000_000, 1_000_100_000_000, 10_000_200_000_000])
    monkeypatch.setattr(fstransport.time, "time_ns", lambda: next(clock))
    channel = _channel(tmp_path)
    for i in range(3):
        channel._put("train", {"n": i})
    assert [channel._get("train")["n"] for _ in range(3)] == [0, 1, 2]


def test_many_messages_through_a_queue_keep_their_order(tmp_path):
    with Connection(transport=fstransport.Transport, transport_options=_options(tmp_path)) as conn:
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


def test_a_consumer_polling_mid_write_takes_a_whole_message_or_none(tmp_path, monkeypatch):
    channel = _channel(tmp_path)
    seen = []
    real_dumps = fstransport.dumps

    def dumps_while_a_worker_polls(payload):  # the message file is open; its bytes are not written yet
        with pytest.raises(Empty):
            channel._get("train")
        seen.append("polled")
        return real_dumps(payload)

    monkeypatch.setattr(fstransport, "dumps", dumps_while_a_worker_polls)
    channel._put("train", {"body": "run-1"})
    assert seen == ["polled"]
    assert channel._get("train") == {"body": "run-1"}
    assert not list(tmp_path.iterdir())  # no temporary file left behind
    with pytest.raises(Empty):
        channel._get("train")


def test_the_embedded_app_uses_it_and_a_broker_url_does_not(tmp_path):
    embedded = Settings(home=tmp_path / "home")
    with app_for(embedded).connection_for_write() as conn:
        assert isinstance(conn.default_channel, fstransport.Channel)
    redis = Settings(home=tmp_path / "h2", broker_url="redis://127.0.0.1:6379/7")
    assert celery_config(redis)["broker_transport"] is None
