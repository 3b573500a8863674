"""A genuine LwM2M client over UDP (aiocoap), serving an ``ObjectTree``.

It registers with ``/rd`` (query ``ep``, ``lt``, ``lwm2m``, ``b``, ``Q``; link payload with
``</>;rt="oma.lwm2m";ct=...`` for 1.1+), sends Updates before the lifetime runs out, and
answers the server's Read, Discover, Write (replace / partial update), Write-Attributes,
Execute, Create, Delete and Observe, in every content format its LwM2M version has:
1.0 -> text, opaque, TLV, LwM2M JSON; 1.1 adds SenML JSON and CBOR; 1.2 adds LwM2M CBOR.
An Accept it does not have gets 4.06; a Content-Format it does not have gets 4.15.

Requests arrive on the socket the client registered from (one aiocoap context per client);
with a PSK (``ClientConfig.psk``) that socket carries one DTLS session to the server
(``lwm2m.dtls.coaps``) and nothing else. ``guard``, when set, sees every write before the tree
does (the device's trust-anchor rule).
A registration that gets no answer, or a 5.xx (a server that is down, restarting or overloaded),
is retried with exponential backoff and full jitter (``lwm2m.retry``; ``register_backoff`` and
``register_attempts``), so a fleet that lost its server does not come back in lock-step; a 4.xx
refusal is final. With ``register_on_wake`` it sends a new Register (new registration id) instead
of an Update each time it wakes, as some real clients do. Bootstrap is ``simulator.bootstrap``;
Send, composite operations and notification attributes beyond storing them are not implemented.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap import Code, Message
from aiocoap.interfaces import ObservableResource
from aiocoap.resource import PathCapable, Resource

from lwm2m import codecs
from lwm2m.dtls import coaps
from lwm2m.errors import LwM2MError, MethodNotAllowed, NotAcceptable, UnsupportedContentFormat
from lwm2m.link_format import Link, format_links
from lwm2m.numbers import ContentFormat
from lwm2m.numbers.content_formats import canonical
from lwm2m.path import Path
from lwm2m.retry import Backoff, retrying
from lwm2m.transport import response_within
from simulator.objects import ObjectTree

log = logging.getLogger(__name__)
CF = ContentFormat

FORMATS: dict[str, tuple[ContentFormat, ...]] = {
    "1.0": (CF.TEXT, CF.OPAQUE, CF.TLV, CF.LWM2M_JSON),
    "1.1": (CF.TEXT, CF.OPAQUE, CF.TLV, CF.LWM2M_JSON, CF.SENML_JSON, CF.SENML_CBOR),
    "1.2": (CF.TEXT, CF.OPAQUE, CF.TLV, CF.LWM2M_JSON, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_CBOR),
}
DEFAULT_FORMAT = {"1.0": CF.TLV, "1.1": CF.SENML_JSON, "1.2": CF.SENML_JSON}


@dataclass
class ClientConfig:
    endpoint: str
    server: tuple[str, int]
    lifetime: int = 300
    version: str = "1.1"
    queue_mode: bool = False
    bind: tuple[str, int] = ("127.0.0.1", 0)
    update_margin: float = 0.8  # send an Update when this share of the lifetime has passed
    awake_s: float = 10.0  # queue mode: how long the device listens after it spoke to the server
    register_backoff: Backoff = Backoff(1.0, 30.0)  # retries of a Register that failed for the server's reasons
    register_attempts: int = 6
    request_timeout_s: float = 30.0  # one request to the server (CoAP retransmissions happen inside it)
    register_on_wake: bool = False  # queue mode as Anjay does it: a new Register on each wake, not an Update
    psk: tuple[bytes, bytes] | None = field(default=None, repr=False)  # (identity, key): DTLS to the server


class ServerUnavailable(LwM2MError):
    """The server did not answer, or answered 5.xx: worth another try later."""


class ClientRoot(Resource, PathCapable, ObservableResource):  # type: ignore[misc]  # aiocoap ships no type information
    """Every request under ``/``: dispatch by method and path to the object tree."""

    def __init__(self, client: "LwM2MClient") -> None:
        super().__init__()
        self.client = client
        self.observers: dict[Path, list[Any]] = {}

    async def add_observation(self, request: Message, serverobservation: Any) -> None:
        try:
            path = Path.parse("/".join(request.opt.uri_path))
        except LwM2MError:
            return
        watchers = self.observers.setdefault(path, [])
        watchers.append(serverobservation)
        serverobservation.accept(lambda: watchers.remove(serverobservation))

    def changed(self, path: Path) -> None:
        for observed, watchers in self.observers.items():
            if path.startswith(observed) or observed.startswith(path):
                for obs in list(watchers):
                    obs.trigger()

    async def render(self, request: Message) -> Message:
        try:
            path = Path.parse("/".join(request.opt.uri_path))
            return await self.client.handle(request, path)
        except LwM2MError as exc:
            return Message(code=exc.code, payload=exc.message.encode()[:256])


@dataclass
class LwM2MClient:
    config: ClientConfig
    tree: ObjectTree
    context: Any = None
    location: tuple[str, ...] = ()
    attributes: dict[Path, dict[str, str | None]] = field(default_factory=dict)
    registrations: int = 0
    updates: int = 0
    sleep: Any = None  # queue mode: called with True (radio off) / False (radio on)
    guard: Any = None  # called with (request, path, content) before a write; raises to refuse it
    coaps: Any = None  # the DTLS session's interface when the client has a PSK
    _task: "asyncio.Task[None] | None" = None
    _nap: Any = None

    @property
    def formats(self) -> tuple[ContentFormat, ...]:
        return FORMATS[self.config.version]

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        root = ClientRoot(self)
        self.tree.listeners.append(root.changed)
        if self.config.psk is not None:
            self.context, self.coaps = await coaps.client_context(root, self.config.server, *self.config.psk,
                                                                  bind=self.config.bind, name=self.config.endpoint)
        else:
            self.context = await aiocoap.Context.create_server_context(root, bind=self.config.bind,
                                                                       transports=["udp6"])
        await self.register_retrying()
        self._task = asyncio.create_task(self._update_loop(), name=f"{self.config.endpoint} updates")

    async def stop(self, deregister: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
        self._wake()
        if deregister and self.location:
            try:
                await self._request(Code.DELETE, self.location, ())
            except (LwM2MError, asyncio.TimeoutError, aiocoap.error.Error):
                pass
        if self.context is not None:
            await self.context.shutdown()

    def registration_links(self) -> str:
        links = []
        if self.config.version != "1.0":
            cts = " ".join(str(int(f)) for f in self.formats)
            links.append(str(Link("/", (("rt", "oma.lwm2m"), ("ct", cts)))))
        return ",".join(links + self.tree.links())

    async def _request(self, code: Code, path: tuple[str, ...], query: tuple[str, ...],
                       payload: bytes = b"") -> Message:
        host, port = self.config.server
        msg = Message(code=code, uri=f"{'coaps' if self.config.psk else 'coap'}://{host}:{port}", payload=payload)
        msg.opt.uri_path = path
        msg.opt.uri_query = query
        if payload:
            msg.opt.content_format = int(CF.LINK)
        try:
            return await response_within(self.context.request(msg), self.config.request_timeout_s)
        except (asyncio.TimeoutError, aiocoap.error.Error) as exc:
            raise ServerUnavailable(f"{self.config.endpoint}: no answer from {host}:{port} "
                                    f"({type(exc).__name__})") from None

    async def register_retrying(self) -> None:
        """Register; after a ``ServerUnavailable``, again after a jittered backoff (bounded attempts)."""
        def note(state: Any) -> None:
            log.info("%s: %s; registering again in %.2f s", self.config.endpoint,
                     state.outcome.exception(), state.upcoming_sleep)

        await retrying(self.config.register_backoff, on=ServerUnavailable, attempts=self.config.register_attempts,
                       before_sleep=note)(self.register)

    async def register(self) -> None:
        query = [f"ep={self.config.endpoint}", f"lt={self.config.lifetime}"]
        if self.config.version != "1.0":
            query.append(f"lwm2m={self.config.version}")
        query.append("b=UQ" if self.config.queue_mode and self.config.version == "1.0" else "b=U")
        if self.config.queue_mode and self.config.version != "1.0":
            query.append("Q")
        resp = await self._request(Code.POST, ("rd",), tuple(query), self.registration_links().encode())
        if resp.code.class_ == 5:
            raise ServerUnavailable(f"{self.config.endpoint}: Register answered {resp.code.dotted}")
        if resp.code != Code.CREATED:
            raise LwM2MError(f"{self.config.endpoint}: Register refused with {resp.code.dotted}: "
                             f"{resp.payload.decode(errors='replace')}")
        self.location = tuple(resp.opt.location_path)
        self.registrations += 1

    async def update(self, with_links: bool = False) -> None:
        payload = self.registration_links().encode() if with_links else b""
        resp = await self._request(Code.POST, self.location, (), payload)
        if resp.code == Code.NOT_FOUND:  # the server forgot us: register again
            await self.register()
        elif resp.code != Code.CHANGED:
            raise LwM2MError(f"{self.config.endpoint}: Update refused with {resp.code.dotted}")
        else:
            self.updates += 1

    async def _update_loop(self) -> None:
        self._doze()
        while True:
            await asyncio.sleep(self.config.lifetime * self.config.update_margin)
            self._wake()
            try:
                await (self.register() if self.config.register_on_wake else self.update())
            except (LwM2MError, asyncio.TimeoutError, aiocoap.error.Error) as exc:
                log.info("%s: update failed: %s", self.config.endpoint, exc)
                if self.coaps is not None:
                    self.coaps.reset()  # the server may have lost the session (restart): shake hands again
            self._doze()

    def _wake(self) -> None:
        if self.config.queue_mode and self.sleep is not None:
            if self._nap is not None:
                self._nap.cancel()
            self.sleep(False)

    def _doze(self) -> None:
        """Queue mode: listen for ``awake_s`` after speaking to the server, then sleep."""
        if self.config.queue_mode and self.sleep is not None:
            self._nap = asyncio.get_running_loop().call_later(self.config.awake_s, self.sleep, True)

    # -- the device-management interface --------------------------------------------------

    def _accept(self, request: Message, path: Path) -> ContentFormat:
        if request.opt.accept is None:  # one value: plain text (or opaque bytes); more: the default
            value = self.tree.values.get(path)
            if value is None:
                return DEFAULT_FORMAT[self.config.version]
            return CF.OPAQUE if isinstance(value, bytes) else CF.TEXT
        try:
            fmt = ContentFormat(int(request.opt.accept))
        except ValueError:
            raise NotAcceptable(f"content format {int(request.opt.accept)} is not supported") from None
        if fmt != CF.LINK and canonical(fmt) not in self.formats:
            raise NotAcceptable(f"content format {int(fmt)} is not supported by this LwM2M "
                                f"{self.config.version} client")
        return fmt

    def _payload_format(self, request: Message) -> ContentFormat:
        cf = request.opt.content_format
        if cf is None:
            raise UnsupportedContentFormat("request without Content-Format")
        try:
            fmt = ContentFormat(int(cf))
        except ValueError:
            raise UnsupportedContentFormat(f"content format {int(cf)} is not supported") from None
        if canonical(fmt) not in self.formats:
            raise UnsupportedContentFormat(f"content format {int(fmt)} is not supported")
        return fmt

    async def handle(self, request: Message, path: Path) -> Message:
        code = request.code
        if code == Code.GET:
            fmt = self._accept(request, path)
            if fmt == CF.LINK:
                return Message(code=Code.CONTENT, content_format=int(CF.LINK), payload=self.discover(path).encode())
            content = self.tree.read(path)
            payload = codecs.encode(int(fmt), path, content, self.tree.registry)
            return Message(code=Code.CONTENT, content_format=int(fmt), payload=payload)
        if code == Code.PUT and request.opt.uri_query and not request.payload:
            self.write_attributes(path, request.opt.uri_query)
            return Message(code=Code.CHANGED)
        if code in (Code.PUT, Code.POST) and path.depth >= 2 and not (code == Code.POST and path.depth >= 3):
            fmt = self._payload_format(request)
            content = codecs.decode(int(fmt), path, request.payload, self.tree.registry)
            if self.guard is not None:
                self.guard(request, path, content)
            self.tree.write(path, content, replace=code == Code.PUT)
            return Message(code=Code.CHANGED)
        if code == Code.POST and path.depth == 3:
            await self.tree.execute(path, request.payload.decode("utf-8", "replace"))
            return Message(code=Code.CHANGED)
        if code == Code.POST and path.depth == 1:
            fmt = self._payload_format(request)
            content = codecs.decode(int(fmt), path, request.payload, self.tree.registry)
            created = self.tree.create(path, content)
            return Message(code=Code.CREATED, location_path=created.uri_path)
        if code == Code.DELETE and path.depth == 2:
            self.tree.delete(path)
            return Message(code=Code.DELETED)
        raise MethodNotAllowed(f"{code} not allowed on {path}")

    def write_attributes(self, path: Path, query: tuple[str, ...]) -> None:
        attrs = self.attributes.setdefault(path, {})
        for item in query:
            key, sep, value = item.partition("=")
            attrs[key] = value if sep else None

    def discover(self, path: Path) -> str:
        content = self.tree.read(path)
        resources = sorted({Path.of(*p.ids[:3]) for p in content})
        links = [Link(str(path), tuple(self.attributes.get(path, {}).items()))]
        for rp in resources:
            if rp == path:
                continue
            dim = sum(1 for p in content if p.depth == 4 and p.parent == rp)
            attrs = (("dim", str(dim)),) if dim else ()
            links.append(Link(str(rp), attrs + tuple(self.attributes.get(rp, {}).items())))
        return format_links(links)
