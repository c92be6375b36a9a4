"""The embedded broker's message files: a consumer polling while a message is being written never
takes it half-written (workers/fstransport.py)."""

from __future__ import annotations

import pytest
from kombu import Connection
from kombu.transport.virtual import Empty

import workers.fstransport as fstransport
from elm_core.settings import Settings
from workers.celery_app import app_for, celery_config


def _channel(folder):
    options = dict(data_folder_in=str(folder), data_folder_out=str(folder), store_processed=False)
    return Connection(transport=fstransport.AtomicFilesystemTransport, transport_options=options).channel()


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
        assert isinstance(conn.default_channel, fstransport.AtomicChannel)
    redis = Settings(home=tmp_path / "h2", broker_url="redis://127.0.0.1:6379/7")
    assert celery_config(redis)["broker_transport"] is None
