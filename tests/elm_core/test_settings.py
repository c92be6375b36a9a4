"""elm_core.settings: keyword arguments, then ELMLAB_* variables (any case), then the defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from elm_core.settings import Settings, environment_values, get_settings


@pytest.fixture(autouse=True)
def _no_elmlab_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.upper().startswith("ELMLAB_")]:
        monkeypatch.delenv(k)


def test_defaults_expanded():
    s = Settings()
    assert s.home == Path("~/.elmlab").expanduser() and s.store_path == s.home / "store"
    assert s.broker_url is None and s.embedded and s.read_only is False and s.heartbeat_s == 5.0


def test_environment_read_in_any_case_and_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path))
    monkeypatch.setenv("elmlab_read_only", "1")
    monkeypatch.setenv("ELMLAB_REAP_AFTER_S", "2.5")
    monkeypatch.setenv("ELMLAB_SECRET", "s3cr3t-value")
    monkeypatch.setenv("ELMLAB_SPOOL_DIR", "~/spool")
    monkeypatch.setenv("ELMLAB_NO_SUCH_SETTING", "x")  # ignored
    s = Settings()
    assert s.home == tmp_path and s.read_only is True and s.reap_after_s == 2.5
    assert s.secret is not None and s.secret.get_secret_value() == "s3cr3t-value" and "s3cr3t" not in repr(s)
    assert s.spool_path == Path("~/spool").expanduser()
    assert environment_values({"ELMLAB_HOME": "/h", "HOME": "/x", "Elmlab_Data_Dir": "/d"}) == {
        "home": "/h",
        "data_dir": "/d",
    }


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ELMLAB_BROKER_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("ELMLAB_HEARTBEAT_S", "9")
    assert Settings().broker_url == "redis://127.0.0.1:6379/3"
    s = Settings(home=tmp_path, broker_url=None, colour="blue")
    assert s.home == tmp_path and s.broker_url is None and s.embedded and s.heartbeat_s == 9.0


@pytest.mark.parametrize("name, value", [("ELMLAB_HEARTBEAT_S", "soon"), ("ELMLAB_READ_ONLY", "maybe")])
def test_a_bad_value_names_its_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("ELMLAB_").lower()):
        Settings()


def test_get_settings_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path / "a"))
    first = get_settings()
    assert first.home == tmp_path / "a" and get_settings() is not first  # a copy each call
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path / "b"))
    assert get_settings().home == tmp_path / "b"
