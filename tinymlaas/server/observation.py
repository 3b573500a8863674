"""Observe and Cancel Observation (TS Core 1.1 6.3.5, RFC 7641).

One live observation per (endpoint, path). Each notification is decoded with the object
model, stored as the latest value of that path (``observed_values``) and handed to every
subscriber (the admin API streams them). Cancel Observation is proactive (TS Transport 6.4.5,
RFC 7641 3.6): the server forgets the token and sends a GET with Observe=1 and the
observation's token, so the device stops at once; a notification still in flight is then
answered with a Reset. aiocoap's request API always picks a fresh token, so that one GET goes
through its message layer directly (``_send_deregister``).

Observations end when the device de-registers or its registration expires. When the device
registers again (a new registration of the same endpoint: a client that re-registers on wake,
or a reboot) each live observation is established again on the device with a new Observe, in
its new awake window; subscribers keep receiving, and the old token is forgotten (a late
notification on it gets a Reset). Observations are not re-established after a server restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiocoap import CON, Code, Message
from sqlalchemy import Connection, delete, insert

from lwm2m.errors import LwM2MError, NotFound
from lwm2m.jsonvalues import content_to_json
from lwm2m.path import Path, Value
from tinymlaas.server.device_client import DEFAULT_TIMEOUT_S, preferred_format
from tinymlaas.server.operations import Observe, decode_response
from tinymlaas.store.tables import OBSERVED_VALUES

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256


@dataclass(eq=False)
class LiveObservation:
    endpoint: str
    path: Path
    content_format: int
    request: Any  # the aiocoap request whose .observation yields notifications
    first: Any  # the first response: its token and remote identify the observation
    latest: dict[Path, Value] = field(default_factory=dict)
    notifications: int = 0
    subscribers: set["asyncio.Queue[dict[Path, Value] | None]"] = field(default_factory=set)
    task: "asyncio.Task[None] | None" = None
    generation: int = 0  # +1 each time it is observed again (after a re-registration)

    def summary(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "path": str(self.path), "content_format": self.content_format,
                "notifications": self.notifications, "latest": content_to_json(self.latest)}


def sql_latest(conn: Connection, endpoint: str, path: Path, fmt: int, content: dict[Path, Value]) -> None:
    conn.execute(delete(OBSERVED_VALUES).where(OBSERVED_VALUES.c.endpoint == endpoint,
                                               OBSERVED_VALUES.c.path == str(path)))
    conn.execute(insert(OBSERVED_VALUES).values(endpoint=endpoint, path=str(path), updated_at=time.time(),
                                   content_format=fmt, data=content_to_json(content)))


class Observations:
    def __init__(self, server: "Core") -> None:
        self.server = server
        self.live: dict[tuple[str, Path], LiveObservation] = {}

    def of(self, endpoint: str) -> list[LiveObservation]:
        return [o for (ep, _), o in self.live.items() if ep == endpoint]

    async def observe(self, endpoint: str, path: Path, *, fmt: int | None = None,
                      timeout: float = DEFAULT_TIMEOUT_S) -> LiveObservation:
        """Start observing (or join the live observation); returns once the first value is in."""
        key = (endpoint, path)
        if key in self.live:
            return self.live[key]
        client = self.server.device_client
        reg = client.registration(endpoint)
        await self.server.queue.wait_awake(reg, timeout)
        op = Observe(path)
        chosen = fmt if fmt is not None else int(preferred_format(reg))
        request = client.request(client.message(reg, op, chosen))  # type: ignore[arg-type]
        first = await client.await_response(reg, op, request, timeout)
        content = op.result(first, self.server.objects)
        obs = LiveObservation(endpoint, path, chosen, request, first, content)
        await self.server.store.write(lambda c: sql_latest(c, endpoint, path, chosen, content))
        if first.opt.observe is None:  # the device declined: a plain read, nothing to follow
            return obs
        self.live[key] = obs
        obs.task = asyncio.create_task(self._follow(obs), name=f"observe {endpoint}{path}")
        return obs

    def reestablish(self, endpoint: str) -> None:
        """After a new registration: observe every live observation of ``endpoint`` again."""
        for obs in self.of(endpoint):
            obs.generation += 1  # the running follower ends without ending the observation
            observation = obs.request.observation
            if observation is not None and not observation.cancelled:
                observation.cancel()  # forget the old token locally
            if obs.task is not None:
                obs.task.cancel()
            self._send_deregister(obs)  # and tell the device, should it still hold the old one
            self.server.spawn(self._renew(obs), name=f"observe again {endpoint}{obs.path}")

    async def _renew(self, obs: LiveObservation, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        client = self.server.device_client
        try:
            reg = client.registration(obs.endpoint)
            await self.server.queue.wait_awake(reg, timeout)
            op = Observe(obs.path)
            request = self.server.context.request(client.message(reg, op, obs.content_format))  # type: ignore[arg-type]
            first = await client.await_response(reg, op, request, timeout)
            content = op.result(first, self.server.objects)
        except LwM2MError as exc:
            log.info("observing %s%s again after its re-registration failed: %s", obs.endpoint, obs.path, exc)
            self._forget(obs)
            return
        if self.live.get((obs.endpoint, obs.path)) is not obs:
            return  # cancelled meanwhile
        obs.request, obs.first, obs.latest = request, first, content
        generation = obs.generation
        self._publish(obs, content)
        if first.opt.observe is None:  # the device declined this time: the observation ends
            self._forget(obs)
            return
        if generation == obs.generation:
            obs.task = asyncio.create_task(self._follow(obs), name=f"observe {obs.endpoint}{obs.path}")

    def _publish(self, obs: LiveObservation, content: dict[Path, Value]) -> None:
        for q in list(obs.subscribers):
            if q.full():
                q.get_nowait()  # a slow subscriber loses the oldest value, never blocks us
            q.put_nowait(content)

    async def _follow(self, obs: LiveObservation) -> None:
        generation = obs.generation
        try:
            async for response in obs.request.observation:
                try:
                    content = decode_response(response, obs.path, self.server.objects)
                except LwM2MError as exc:
                    log.warning("bad notification from %s for %s: %s", obs.endpoint, obs.path, exc)
                    continue
                obs.latest = content
                obs.notifications += 1
                await self.server.store.write(functools.partial(
                    sql_latest, endpoint=obs.endpoint, path=obs.path, fmt=obs.content_format, content=content))
                self._publish(obs, content)
        except asyncio.CancelledError:
            if obs.generation == generation:  # cancelled for good, not being observed again
                self._forget(obs)
            raise
        except Exception as exc:  # the device ended it (error code, reset, timeout)
            log.info("observation %s%s ended: %s", obs.endpoint, obs.path, exc)
        if obs.generation == generation:
            self._forget(obs)

    def subscribe(self, obs: LiveObservation) -> "asyncio.Queue[dict[Path, Value] | None]":
        q: asyncio.Queue[dict[Path, Value] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        obs.subscribers.add(q)
        return q

    def unsubscribe(self, obs: LiveObservation, q: "asyncio.Queue[dict[Path, Value] | None]",
                    cancel_if_last: bool = True) -> bool:
        """Stop delivering to ``q``; with nobody left, cancel the observation on the device
        (``observe --count N`` ends this way). Returns whether it was cancelled."""
        obs.subscribers.discard(q)
        if cancel_if_last and not obs.subscribers and self.live.get((obs.endpoint, obs.path)) is obs:
            self._stop(obs)
            return True
        return False

    def cancel(self, endpoint: str, path: Path) -> None:
        obs = self.live.get((endpoint, path))
        if obs is None:
            raise NotFound(f"no observation of {path} on {endpoint}")
        self._stop(obs)

    def cancel_all(self, endpoint: str) -> None:
        for obs in self.of(endpoint):
            self._stop(obs)

    def _stop(self, obs: LiveObservation) -> None:
        observation = obs.request.observation
        if observation is not None and not observation.cancelled:
            observation.cancel()  # aiocoap forgets the token: the next notification gets a Reset
        if obs.task is not None:
            obs.task.cancel()
        self._forget(obs)
        self._send_deregister(obs)

    def _send_deregister(self, obs: LiveObservation) -> None:
        """GET with Observe=1 on the observation's own token (fire and forget, CON)."""
        reg = self.server.registrations.by_endpoint.get(obs.endpoint)
        if reg is None:
            return
        msg = Message(code=Code.GET, observe=1, accept=obs.content_format)
        msg.mtype = CON
        msg.token = obs.first.token
        msg.remote = obs.first.remote
        msg.opt.uri_path = tuple(p for p in reg.root_path.split("/") if p) + obs.path.uri_path
        try:
            token_manager = self.server.context.request_interfaces[0]
            token_manager.token_interface.send_message(msg, lambda: None)
        except Exception:  # the reactive cancel (Reset on the next notification) still applies
            log.exception("could not send the observe deregistration to %s", obs.endpoint)

    def _forget(self, obs: LiveObservation) -> None:
        if self.live.get((obs.endpoint, obs.path)) is obs:
            del self.live[(obs.endpoint, obs.path)]
        for q in obs.subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
        obs.subscribers.clear()
