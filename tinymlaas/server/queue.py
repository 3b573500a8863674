"""Queue mode (TS Core 1.1 6.5, TS Transport 6.4.3): requests for sleeping devices are held.

A device in queue mode (its registration said ``Q`` / ``b=UQ``, or the operator set it:
``device_settings.queue_mode``) listens only for a while after it sent something: the awake
window, CoAP MAX_TRANSMIT_WAIT (93 s) by default, configurable per server (``awake_s``) and
per device (``device_settings.awake_s``). A request for it outside that window is held, in
order, until the device next registers or updates; then the held requests go out one at a
time (serially, as 6.5 says), each waiting for its answer before the next. A request that gets
no answer because the device went back to sleep is returned to the head of the queue for the
next awake window. Each request has a deadline (the caller's hold time); past it the request
is dropped with ``QueueDeadlineExpired`` (5.04) naming the device and how long it waited.

A new registration of the same endpoint (a client that re-registers on wake, as Anjay does)
keeps what is held and delivers it in the new awake window; only a De-register or the
registration's expiry fails the held requests. Durable requests (those an operator sent
through the admin API) are also rows of ``held_requests``: after a server restart they are
loaded again and delivered when the device wakes, their outcome written to the row (their
original caller is gone; ``GET /devices/EP/queue`` shows it). Requests the server makes for
itself (capability reads, a deployment's steps) are not persisted: their callers redo them
after a restart. Every loop here is bounded by the number of held requests and their deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiocoap import Code
from sqlalchemy import Connection, insert, select, update

from lwm2m.errors import LwM2MError
from lwm2m.jsonvalues import content_to_json
from lwm2m.numbers.versions import QUEUE_AWAKE_S
from tinymlaas.server.operations import Operation, from_json, to_json
from tinymlaas.server.registrations import Registration
from tinymlaas.store.tables import HELD_REQUESTS

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)

MAX_HELD_PER_DEVICE = 256
MAX_HOLD_S = 7 * 86400.0


class QueueDeadlineExpired(LwM2MError):
    code = Code.GATEWAY_TIMEOUT


class QueueFull(LwM2MError):
    code = Code.SERVICE_UNAVAILABLE


@dataclass(eq=False)
class Held:
    """One held request; ``op`` None is a wake-up waiter (an Observe sends its own request)."""

    endpoint: str
    op: Operation | None
    fmt: int | None
    timeout: float
    deadline: float  # epoch seconds
    future: "asyncio.Future[Any] | None" = None  # None: loaded from the database, nobody waits
    row_id: int | None = None
    created_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        return {"id": self.row_id, "operation": to_json(self.op) if self.op else None,
                "deadline": self.deadline, "created_at": self.created_at}


def result_json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"content": content_to_json(value)}
    return {"value": value if isinstance(value, (str, int, float, bool)) or value is None else str(value)}


class QueueMode:
    def __init__(self, server: "Core", awake_s: float = QUEUE_AWAKE_S) -> None:
        self.server = server
        self.awake_s = awake_s
        self._held: dict[str, list[Held]] = {}
        self._draining: dict[str, "asyncio.Task[None]"] = {}

    # -- who is asleep ---------------------------------------------------------------------

    def awake_for(self, endpoint: str) -> float:
        own = self.server.device_settings.get(endpoint).awake_s
        return self.awake_s if own is None else own

    def is_queue(self, reg: Registration) -> bool:
        forced = self.server.device_settings.get(reg.endpoint).queue_mode
        return reg.queue_mode if forced is None else forced

    def is_awake(self, reg: Registration) -> bool:
        return not self.is_queue(reg) or time.time() - reg.last_seen < self.awake_for(reg.endpoint)

    def held(self, endpoint: str) -> int:
        return sum(1 for h in self._held.get(endpoint, ()) if h.future is None or not h.future.done())

    def pending(self, endpoint: str) -> list[Held]:
        return list(self._held.get(endpoint, ()))

    # -- holding -----------------------------------------------------------------------------

    async def hold(self, reg: Registration, op: Operation | None, fmt: int | None, hold_s: float,
                   timeout: float, durable: bool = False, wait: bool = True) -> Any:
        """Hold ``op`` until ``reg``'s device is awake and return its result (or, with ``wait``
        False, the held request's id at once); QueueDeadlineExpired after ``hold_s``."""
        queue = self._held.setdefault(reg.endpoint, [])
        if len(queue) >= MAX_HELD_PER_DEVICE:
            raise QueueFull(f"{reg.endpoint}: {len(queue)} requests are already held for it (limit "
                            f"{MAX_HELD_PER_DEVICE}); request refused")
        hold_s = min(max(hold_s, 0.0), MAX_HOLD_S)
        loop = asyncio.get_running_loop()
        item = Held(reg.endpoint, op, fmt, timeout, time.time() + hold_s, loop.create_future() if wait else None)
        if durable and op is not None:
            item.row_id = await self.server.store.write(lambda c: _sql_insert(c, item))
        queue.append(item)
        if self.is_awake(reg):  # it woke while we were writing: deliver now
            self.woke(reg.endpoint)
        if item.future is None:
            return item.row_id
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), hold_s)
        except asyncio.TimeoutError:
            self._drop(item)
            await self._finish(item, "expired", error=f"held {hold_s:g} s; the device did not wake up")
            raise QueueDeadlineExpired(
                f"device {reg.endpoint} is in queue mode and did not wake up within {hold_s:g} s; "
                f"{_name(op)} dropped") from None
        except asyncio.CancelledError:
            self._drop(item)
            raise

    async def wait_awake(self, reg: Registration, deadline_s: float) -> None:
        """Return when ``reg``'s device can be reached (a waiter in the queue's order)."""
        if not self.is_awake(reg):
            await self.hold(reg, None, None, deadline_s, deadline_s)

    def _drop(self, item: Held) -> None:
        queue = self._held.get(item.endpoint)
        if queue is not None and item in queue:
            queue.remove(item)
            if not queue:
                del self._held[item.endpoint]

    # -- delivering --------------------------------------------------------------------------

    def woke(self, endpoint: str) -> int:
        """The device registered, updated or answered: deliver what is held for it, in order."""
        if not self._held.get(endpoint):
            return 0
        task = self._draining.get(endpoint)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._drain(endpoint), name=f"queue {endpoint}")
            self._draining[endpoint] = task
            task.add_done_callback(lambda t: self._draining.pop(endpoint, None) if self._draining.get(endpoint)
                                   is t else None)
        return len(self._held[endpoint])

    async def _drain(self, endpoint: str) -> None:
        from tinymlaas.server.device_client import DeviceTimeout

        for _ in range(MAX_HELD_PER_DEVICE * 2):  # bounded: each turn removes or parks one request
            queue = self._held.get(endpoint)
            reg = self.server.registrations.by_endpoint.get(endpoint)
            if not queue or reg is None or not self.is_awake(reg):
                return
            item = queue[0]
            if item.future is not None and item.future.done():  # its caller gave up
                self._drop(item)
                continue
            if item.deadline <= time.time():
                self._drop(item)
                await self._finish(item, "expired", error="the device did not wake up before the deadline")
                continue
            if item.op is None:  # a waiter: the device is awake now
                self._drop(item)
                item.future.set_result(None)  # type: ignore[union-attr]
                continue
            try:
                timeout_s = min(item.timeout, max(item.deadline - time.time(), 1.0))
                result = await self.server.device_client.transmit(reg, item.op, item.fmt, timeout_s)
            except DeviceTimeout as exc:
                if self.is_queue(reg) and item.deadline > time.time():
                    log.info("%s went back to sleep during %s; kept for its next awake window",
                             endpoint, _name(item.op))
                    reg.last_seen = 0.0  # asleep until it speaks again
                    return  # returned to the queue (it is still at its head)
                self._drop(item)
                await self._finish(item, "failed", exc=exc)
                continue
            except LwM2MError as exc:
                self._drop(item)
                await self._finish(item, "failed", exc=exc)
                continue
            self._drop(item)
            await self._finish(item, "done", result=result)

    async def _finish(self, item: Held, state: str, *, result: Any = None, exc: LwM2MError | None = None,
                      error: str | None = None) -> None:
        """Write the outcome to the held request's row (durable ones), then tell the caller."""
        if item.row_id is not None:
            values = {"state": state, "finished_at": time.time(),
                      "result": result_json(result) if state == "done" else {},
                      "error": error or (f"{exc.code.dotted} {exc.message}" if exc is not None else None)}
            row_id = item.row_id
            await self.server.store.write(
                lambda c: c.execute(update(HELD_REQUESTS).where(HELD_REQUESTS.c.id == row_id).values(**values)))
        if item.future is not None and not item.future.done():
            if exc is not None:
                item.future.set_exception(exc)
            elif state == "done":
                item.future.set_result(result)
            else:
                item.future.set_exception(QueueDeadlineExpired(f"device {item.endpoint}: {error}"))

    def gone(self, endpoint: str, why: str) -> None:
        """The registration ended (De-register, expiry): fail everything held for it."""
        for item in self._held.pop(endpoint, []):
            self.server.spawn(self._finish(item, "failed", error=f"device {endpoint} {why} while the request was held"),
                              name=f"queue {endpoint} {why}")

    # -- persistence -------------------------------------------------------------------------

    async def load(self) -> int:
        """At start: hold again every durable request a stop left held (expired ones end)."""
        rows = await self.server.store.read(
            lambda c: list(c.execute(select(HELD_REQUESTS).where(HELD_REQUESTS.c.state == "held")
                                     .order_by(HELD_REQUESTS.c.id))))
        now, loaded = time.time(), 0
        for r in rows:
            op: Operation | None = None
            problem: str | None = None
            try:
                op = from_json(r.operation)
            except LwM2MError as exc:
                problem = exc.message
            item = Held(r.endpoint, op, r.content_format, 10.0, r.deadline, None, r.id, r.created_at)
            if problem is not None or r.deadline <= now:
                await self._finish(item, "expired" if problem is None else "failed",
                                   error=problem or "the deadline passed while the server was stopped")
                continue
            self._held.setdefault(r.endpoint, []).append(item)
            loaded += 1
        return loaded

    async def history(self, endpoint: str, limit: int = 100) -> list[dict[str, Any]]:
        q = (select(HELD_REQUESTS).where(HELD_REQUESTS.c.endpoint == endpoint)
             .order_by(HELD_REQUESTS.c.id.desc()).limit(limit))
        rows = await self.server.store.read(lambda c: list(c.execute(q)))
        return [{"id": r.id, "operation": r.operation, "state": r.state, "created_at": r.created_at,
                 "deadline": r.deadline, "finished_at": r.finished_at, "result": r.result, "error": r.error}
                for r in rows]


def _name(op: Operation | None) -> str:
    return f"{op.name} {op.path}" if op is not None else "the request"


def _sql_insert(c: Connection, item: Held) -> int:
    assert item.op is not None
    key = c.execute(insert(HELD_REQUESTS).values(
        endpoint=item.endpoint, operation=to_json(item.op), content_format=item.fmt, state="held",
        created_at=item.created_at, deadline=item.deadline)).inserted_primary_key
    assert key is not None
    return int(key[0])
