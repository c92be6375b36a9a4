"""The embedded broker's transport: kombu's `filesystem` transport, first in, first out.

kombu names a message file `<milliseconds of the monotonic clock>_<uuid>.<queue>.msg` and takes the
first name in sorted order. The sort is by text, so the order breaks when the counter gains a digit
(a message queued 1,000 s after boot sorts before one queued at 368 s) and again at every reboot,
when the clock starts over. Here a message is named by the wall clock in nanoseconds, zero-padded
to a fixed width, so that text order is arrival order; it is written under a temporary name and
renamed into place, so a worker never reads a half-written message. Reading is kombu's own.

`elmfs://` is the URL scheme (registered in kombu's transport aliases on import of this module,
which workers.celery_app does); the folders come from the same transport options as kombu's.
"""

from __future__ import annotations

import os
import time
import uuid

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "elmfs"
NAME_WIDTH = 20  # digits of the nanosecond clock: wide enough until the year 5138


def message_name(queue: str, now_ns: int | None = None) -> str:
    """The file name of a message put on `queue` now: text order is arrival order."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{stamp:0{NAME_WIDTH}d}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = message_name(queue)
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, "." + name + ".part")  # never matches `<queue>.msg`
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
