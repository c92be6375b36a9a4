"""One typed settings object, read from ELMLAB_* environment variables (docs/design.md decision 7).

ELMLAB_HOME            folder for the store, the embedded broker and logs (default ~/.elmlab)
ELMLAB_STORE_DIR       results store (default $ELMLAB_HOME/store)
ELMLAB_DATA_DIR        data sets: enwik8, shd_train.h5, shd_test.h5 (default $ELMLAB_HOME/data)
ELMLAB_BROKER_URL      Celery broker; unset = embedded on-disk broker under $ELMLAB_HOME/broker
ELMLAB_RESULT_BACKEND  Celery result backend; unset = file:// under $ELMLAB_HOME/results (embedded)
                       or the Redis broker itself (redis://)
ELMLAB_CHECKPOINT_DIR  the worker's checkpoint folder; a spec's checkpoint_dir is a subfolder of it
                       (default $ELMLAB_HOME/checkpoints)
ELMLAB_READ_ONLY       1 = dashboard publishes results only: no queue, cancel or retry
ELMLAB_HEARTBEAT_S     seconds between running-run heartbeats (default 5)
ELMLAB_REAP_AFTER_S    a running run silent this long is re-queued (default 60)
ELMLAB_SECRET          the key that signs records (workers/signing.py); unset = $ELMLAB_HOME/secret,
                       generated on first use (one machine); every machine of a lab sets the same one
ELMLAB_SPOOL_DIR       where the recorder keeps records the store cannot take yet (default $ELMLAB_HOME/spool;
                       best on another disk than the store)
ELMLAB_FLOWER_URL      link to Flower shown on the Runs page, when Flower runs
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

ENV_PREFIX = "ELMLAB_"


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ELMLAB_* variables of `environ` (default os.environ) by field name: the name after the prefix,
    lower-cased (the variables' names are read in any case)."""
    environ = os.environ if environ is None else environ
    n = len(ENV_PREFIX)
    return {k[n:].lower(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}


class Settings(BaseModel):
    """The settings: keyword arguments first, then ELMLAB_<FIELD> variables, then the defaults. Unknown
    names are ignored. Plain pydantic, not pydantic-settings: its import would slow every command's start."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    home: Path = Path("~/.elmlab")
    store_dir: Path | None = None
    data_dir: Path | None = None
    checkpoint_dir: Path | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    read_only: bool = False
    heartbeat_s: float = 5.0
    reap_after_s: float = 60.0
    flower_url: str | None = None
    secret: SecretStr | None = None
    spool_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        env = {k: v for k, v in environment_values().items() if k in cls.model_fields}
        return {**env, **data}

    @field_validator("home", "store_dir", "data_dir", "checkpoint_dir", "spool_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()

    @property
    def store_path(self) -> Path:
        return self.store_dir or self.home / "store"

    @property
    def data_path(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def checkpoints_path(self) -> Path:
        return self.checkpoint_dir or self.home / "checkpoints"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.home / "spool"

    @property
    def broker_path(self) -> Path:
        return self.home / "broker"

    @property
    def embedded(self) -> bool:
        """True when no broker URL is set: broker and results live on local disk."""
        return not self.broker_url

    @property
    def logs_path(self) -> Path:
        return self.home / "logs"


_CACHE: dict[tuple[tuple[str, str], ...], Settings] = {}
_CACHE_MAX = 32


def _environment_key() -> tuple[tuple[str, str], ...]:
    """What the settings depend on: every ELMLAB_* variable (any case, as pydantic reads them) and HOME."""
    env = os.environ.items()
    return tuple(sorted((k.upper(), v) for k, v in env if k.upper().startswith("ELMLAB_") or k == "HOME"))


def get_settings() -> Settings:
    """The settings of the current environment: parsed once per distinct set of ELMLAB_* variables
    (parsing costs milliseconds, and a submission asks for them every call), and parsed afresh as soon
    as a variable changes (tests and the dashboard may set them). Each call returns its own copy."""
    key = _environment_key()
    settings = _CACHE.get(key)
    if settings is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        settings = _CACHE[key] = Settings()
    return settings.model_copy()
