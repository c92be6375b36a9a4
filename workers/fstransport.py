"""The embedded broker: kombu's `filesystem://` transport with atomic message files.

kombu's filesystem channel creates a message file under its final name and then writes it, while a
consumer takes any file with that name (renames it away and reads it) without waiting for the
writer's lock. A worker polling while a burst of runs is submitted can take a file still empty and
die on the JSON error ("Unrecoverable error: JSONDecodeError"; kombu issue 1551). This channel
writes each message under a name no consumer picks up, then renames it to its final name, so a
consumer sees a whole message or none. Configured as
`workers.fstransport:AtomicFilesystemTransport+filesystem://localhost/`.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class AtomicChannel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: the same file name as kombu's, written whole, then renamed."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
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


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicChannel
