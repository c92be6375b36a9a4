"""Signed records: the recorder stores only what a worker holding the shared secret sent.

    sig = sign(record_json, settings)            # a worker, before sending a record
    verify(record_json, sig, settings)           # the recorder and the reaper; False = refuse it

signature = HMAC-SHA256(secret, canonical JSON of the record), hex; canonical = keys sorted, no
spaces (the record travels as JSON, so both sides hash the same bytes). The secret is ELMLAB_SECRET
when set (every machine of a distributed lab sets the same one); otherwise 32 random bytes written
on first use to $ELMLAB_HOME/secret with mode 0600, which every process of one machine shares.

Trust model (docs/queue.md, "Who can do what"): who can publish to the broker can queue training
runs, which is what the broker is for; only who holds the secret can put a result into the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from elm_core.settings import Settings

SECRET_FILE = "secret"
SIGNATURE_KEY = "_signature"  # where the worker's final Celery state carries the record's signature


def secret_path(settings: Settings) -> Path:
    return settings.home / SECRET_FILE


def load_secret(settings: Settings) -> bytes:
    """ELMLAB_SECRET, else the home's secret file (created on first use, mode 0600; the first of two
    racing creators wins and both read its secret)."""
    if settings.secret:
        return settings.secret.get_secret_value().encode()
    path = secret_path(settings)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(record: dict[str, Any], settings: Settings) -> str:
    """The record's signature (hex HMAC-SHA256 of its canonical JSON)."""
    return hmac.new(load_secret(settings), _canonical(record), hashlib.sha256).hexdigest()


def verify(record: dict[str, Any], signature: Any, settings: Settings) -> bool:
    """Whether `signature` is this record's, under this lab's secret (constant-time comparison)."""
    return isinstance(signature, str) and hmac.compare_digest(sign(record, settings), signature)
