"""Queue mode (TS Core 1.1 6.5, TS Transport 6.4.3): requests for sleeping devices wait.

A device registered in queue mode listens only for a while after it sent something (the
awake window, CoAP MAX_TRANSMIT_WAIT by default). A request for it outside that window is
held until the device next registers or updates, up to a deadline; past the deadline it
fails with ``QueueDeadlineExpired`` (5.04) naming the device and how long it waited.
Held requests live in memory: a server restart drops them (their callers are gone too).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from aiocoap import Code

from lwm2m.errors import LwM2MError
from lwm2m.numbers.versions import QUEUE_AWAKE_S
from tinymlaas.server.registrations import Registration


class QueueDeadlineExpired(LwM2MError):
    code = Code.GATEWAY_TIMEOUT


class QueueMode:
    def __init__(self, awake_s: float = QUEUE_AWAKE_S) -> None:
        self.awake_s = awake_s
        self._waiting: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def is_awake(self, reg: Registration) -> bool:
        return not reg.queue_mode or time.time() - reg.last_seen < self.awake_s

    def held(self, endpoint: str) -> int:
        return sum(not f.done() for f in self._waiting.get(endpoint, ()))

    async def wait_awake(self, reg: Registration, deadline_s: float) -> None:
        """Return when ``reg`` can be reached; raise QueueDeadlineExpired after ``deadline_s``."""
        if self.is_awake(reg):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[reg.endpoint].append(fut)
        try:
            await asyncio.wait_for(fut, deadline_s)
        except asyncio.TimeoutError:
            raise QueueDeadlineExpired(
                f"device {reg.endpoint} is in queue mode and did not wake up within {deadline_s:g} s; request dropped") from None
        finally:
            waiting = self._waiting.get(reg.endpoint)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._waiting[reg.endpoint]

    def woke(self, endpoint: str) -> int:
        """The device registered or updated: release everything held for it."""
        waiting = self._waiting.pop(endpoint, [])
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)
        return len(waiting)

    def gone(self, endpoint: str, why: str) -> None:
        """The registration ended: fail everything held for it."""
        for fut in self._waiting.pop(endpoint, []):
            if not fut.done():
                fut.set_exception(QueueDeadlineExpired(f"device {endpoint} {why} while a request was held for it"))
