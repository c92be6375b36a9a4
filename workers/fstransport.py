"""The embedded broker's transport: kombu's `filesystem` transport, first in first out, whole messages.

kombu's filesystem channel names a message `<milliseconds of the monotonic clock>_<uuid>.<queue>.msg`,
creates the file under that name and then writes it; a consumer takes the first name in sorted order
(renames it away and reads it) without waiting for the writer. Two faults follow:
- Order: the sort is by text, so it breaks when the counter gains a digit (a message queued 1,000 s
  after boot sorts before one queued at 368 s) and at every reboot, when the clock starts over.
  Here a message is named by the wall clock in nanoseconds, zero-padded to a fixed width, so that
  text order is arrival order.
- Torn reads: a worker polling during a burst of submissions could take a file still empty and die
  on the JSON error (kombu issue 1551). Here each message is written under a name no consumer picks
  up, then renamed to its final name, so a consumer sees a whole message or none.
Reading is kombu's own. Configured by workers.celery_app as the embedded app's `broker_transport`.
"""

from __future__ import annotations

import os
import time
import uuid

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

NAME_WIDTH = 20  # digits of the nanosecond clock: wide enough until the year 5138


def message_name(queue: str, now_ns: int | None = None) -> str:
    """The file name of a message put on `queue` now: text order is arrival order."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{stamp:0{NAME_WIDTH}d}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: written whole under a temporary name, then renamed into place."""
        name = message_name(queue)
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")  # not "<id>.<queue>.msg": never consumed
        try:
            with open(tmp, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class Transport(filesystem.Transport):
    Channel = Channel
