"""``LwM2MServer``: one CoAP context, one store, and the features wired together.

Start-up loads the registrations from the database (a device that sends an Update with the
registration id it got before a restart is accepted), the operator's device settings, the
stored device profiles and the held queue-mode requests, then binds the CoAP socket (a guarded
transport, ``transport``) and runs the lifetime-expiry and retention sweepers. Every bound
comes from one ``limits.Limits`` and every refusal is counted in ``metrics``. All
device-management requests leave through the same socket the registrations arrived on. The
admin API and the CLI call the methods at the bottom.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path as FsPath
from typing import Any, Callable, Sequence

import aiocoap
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource

from lwm2m.errors import BadRequest
from lwm2m.model import ObjectRegistry, default_registry
from lwm2m.path import Content, Path
from tinymlaas.server import objects as object_imports, operations as ops
from tinymlaas.server.blockwise import BoundedBlock1Spool, bounded_request_class
from tinymlaas.server.capabilities import Capabilities
from tinymlaas.server.device_client import DEFAULT_TIMEOUT_S, DeviceClient
from tinymlaas.server.device_settings import DeviceSettingsTable
from tinymlaas.server.limits import Admission, DeviceSlots, Limits, source_of
from tinymlaas.server.metrics import JunkLog, Metrics
from tinymlaas.server.observation import Observations
from tinymlaas.server.packages import PREFIX as PACKAGES_PREFIX, PackageOffers
from tinymlaas.server.profiles import ProfileBook
from tinymlaas.server.queue import QueueMode
from tinymlaas.server.registration import DEFAULT_LIFETIME_RANGE, RegistrationInterface
from tinymlaas.server.registrations import Registration, RegistrationTable, sql_load
from tinymlaas.server.retention import Retention
from tinymlaas.server.transport import server_context
from tinymlaas.server.security import Security
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.store import Store

log = logging.getLogger(__name__)


class RootResource(Resource, PathCapable):  # type: ignore[misc]  # aiocoap is untyped
    """Routes ``/rd...`` to the registration interface; everything else is 4.04.

    Requests sent in blocks are assembled by ``BoundedBlock1Spool`` (aiocoap's ``Resource``
    assembles through ``_block1``). A failure of ours is 5.00 with one rate-limited log line,
    never a traceback per datagram."""

    def __init__(self, server: "LwM2MServer") -> None:
        super().__init__()
        self._block1 = BoundedBlock1Spool(server.limits, server.metrics)
        self.rd = RegistrationInterface(server)
        self.packages = server.packages
        self.junk = server.junk

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """Package downloads answer their own blocks (``PackageOffers.handle``); the rest is assembled."""
        path = request.opt.uri_path
        return not (path and path[0] == PACKAGES_PREFIX)

    async def render(self, request: Message) -> Message:
        path = request.opt.uri_path
        try:
            if path and path[0] == "rd":
                return await self.rd.handle(request, tuple(path[1:]))
            if path and path[0] == PACKAGES_PREFIX:
                return self.packages.handle(request, tuple(path[1:]))
        except Exception as exc:
            self.junk.note("render", source_of(request.remote), f"{type(exc).__name__}: {exc}")
            log.debug("rendering %s failed", request, exc_info=True)
            return Message(code=Code.INTERNAL_SERVER_ERROR, payload=b"internal error")
        return Message(code=Code.NOT_FOUND, payload=f"no resource at /{'/'.join(path)}"[:256].encode())

    def get_link_description(self) -> dict[str, str]:
        return {"rt": "core.rd"}


class LwM2MServer:
    """Settings (keyword arguments): ``read_capabilities`` after each new registration;
    ``expiry_interval_s`` of the lifetime sweeper; ``queue_awake_s``: the awake window of
    queue-mode devices (default CoAP MAX_TRANSMIT_WAIT, 93 s; per device in ``device_settings``);
    ``profile_dirs``: directories of device profiles beside the shipped ones and
    ``$TINYMLAAS_PROFILES``; ``lifetime_range_s``: the registration lifetimes accepted (others 4.00)."""

    def __init__(self, db_url: str, *, objects: ObjectRegistry | None = None, read_capabilities: bool = True,
                 expiry_interval_s: float = 1.0, queue_awake_s: float | None = None, pool_size: int = 5,
                 max_overflow: int = 10, profile_dirs: Sequence[str | FsPath] = (),
                 lifetime_range_s: tuple[int, int] = DEFAULT_LIFETIME_RANGE, limits: Limits | None = None,
                 security: SecuritySettings | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self.metrics = Metrics()
        self.junk = JunkLog(self.metrics, self.limits.junk_log_interval_s)
        self.admission = Admission(self.limits, self.metrics)
        self.slots = DeviceSlots(self.limits.device_in_flight, self.limits.device_waiting, self.metrics)
        self.blockwise = bounded_request_class(self.limits, self.metrics)
        self.retention = Retention(self)
        self.store = Store(db_url, pool_size=pool_size, max_overflow=max_overflow)
        self.objects = objects if objects is not None else default_registry()
        self.registrations = RegistrationTable()
        self.packages: PackageOffers = PackageOffers()
        self.device_settings = DeviceSettingsTable(self.store)
        self.profiles = ProfileBook(self.store, profile_dirs)
        self.lifetime_range_s = lifetime_range_s
        self.queue = QueueMode(self) if queue_awake_s is None else QueueMode(self, queue_awake_s)
        self.device_client = DeviceClient(self)
        self.observations = Observations(self)
        self.capabilities = Capabilities(self, enabled=read_capabilities, profiles=self.profiles.all)
        self.expiry_interval_s = expiry_interval_s
        self.context: aiocoap.Context = None  # set by start()
        self.address: tuple[str, int] = ("", 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry_task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[str, Registration], None]] = []
        self.metrics.gauge("registrations", lambda: len(self.registrations))
        self.metrics.gauge("device_requests_in_flight", self.slots.in_flight)
        self.metrics.gauge("rate_limited_sources",
                           lambda: len(self.admission.registrations) + len(self.admission.unknown_ids))
        self.security = Security(self, security or SecuritySettings())

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 5683) -> None:
        self.store.start()
        for reg in await self.store.read(sql_load):
            self.registrations.put(reg)
        await object_imports.load(self.store, self.objects)
        self.device_settings.load(await self.store.read(DeviceSettingsTable.sql_load))
        for problem in self.profiles.load(await self.store.read(ProfileBook.sql_load)):
            log.warning("stored device profile left out: %s", problem)
        held = await self.queue.load()
        self.context = await server_context(RootResource(self), host, port, self.junk, self.limits.junk_log_interval_s)
        await self.security.start(self.context, host)
        iface = self.context.request_interfaces[0].token_interface.message_interface
        self.metrics.gauge("coap_datagrams", lambda: iface.received)
        sockname = iface.transport.get_extra_info("socket").getsockname()
        self.address = (host, sockname[1])
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="lifetime expiry")
        self.spawn(self.retention.forever(), name="retention")
        log.info("LwM2M server on coap://%s:%d with %d registrations and %d held requests loaded",
                 host, self.address[1], len(self.registrations), held)

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        for key in list(self.observations.live):
            self.observations.cancel(*key)
        for task in list(self._tasks):
            task.cancel()
        if self.context is not None:
            await self.context.shutdown()
        await asyncio.to_thread(self.store.close)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self.expiry_interval_s)
            try:
                await self.registration_interface.expire()
            except Exception:
                log.exception("lifetime expiry failed")

    def package_uri(self, path: str, endpoint: str | None = None) -> str:
        """The URI of an offered package, as ``endpoint`` reaches this server (coaps:// over DTLS)."""
        host, port = self.address
        base = self.security.package_base(endpoint) or f"coap://{'[' + host + ']' if ':' in host else host}:{port}"
        return f"{base}{path}"

    @property
    def registration_interface(self) -> RegistrationInterface:
        return self.context.serversite.rd  # type: ignore[no-any-return]

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- hooks from the registration interface --------------------------------------------

    def on_registered(self, reg: Registration, new: bool) -> None:
        self.device_client.refused.pop(reg.id, None) if new else None
        self.queue.woke(reg.endpoint)
        if new:
            self.capabilities.on_registered(reg)
        for listener in self.listeners:
            listener("registered" if new else "updated", reg)

    def on_replaced(self, old: Registration, reg: Registration) -> None:
        """A Register from an endpoint that had a registration (a client that re-registers on
        wake, or rebooted): held requests stay for the new awake window, observations are
        established again on the device (TS Core 1.1 6.5)."""
        self.device_client.refused.pop(old.id, None)
        self.observations.reestablish(reg.endpoint)
        for listener in self.listeners:
            listener("replaced", old)

    def on_deregistered(self, reg: Registration, why: str) -> None:
        self.observations.cancel_all(reg.endpoint)
        self.queue.gone(reg.endpoint, why)
        for listener in self.listeners:
            listener(why, reg)

    # -- device management (what the admin API calls) -------------------------------------

    async def send(self, endpoint: str, op: ops.Operation, fmt: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S, queue_deadline: float | None = None,
                   durable: bool = False) -> Any:
        return await self.device_client.send(endpoint, op, fmt=fmt, timeout=timeout,
                                             queue_deadline=queue_deadline, durable=durable)

    async def read(self, endpoint: str, path: Path, **kw: Any) -> Content:
        return await self.send(endpoint, ops.Read(path), **kw)  # type: ignore[no-any-return]

    def check_write(self, path: Path, content: Content) -> None:
        """Typed by the object model, plus the rules the model cannot say (a Lifetime within the
        lifetimes this server accepts); BadRequest naming the path, before anything is sent."""
        for p, v in content.items():
            self.objects.check_value(p, v)
            if p.object_id == 1 and p.resource_id == 1 and isinstance(v, int):
                low, high = self.lifetime_range_s
                if not low <= v <= high:
                    raise BadRequest(f"{p} Lifetime {v}: expected {low}..{high} seconds (the device would "
                                     "register with it, and this server refuses other lifetimes)")

    async def write(self, endpoint: str, path: Path, content: Content, replace: bool = True, **kw: Any) -> None:
        self.check_write(path, content)
        await self.send(endpoint, ops.Write(path, content, replace), **kw)

    async def execute(self, endpoint: str, path: Path, arguments: str = "", **kw: Any) -> None:
        await self.send(endpoint, ops.Execute(path, arguments), **kw)

    async def discover(self, endpoint: str, path: Path, **kw: Any) -> Any:
        return await self.send(endpoint, ops.Discover(path), **kw)

    async def write_attributes(self, endpoint: str, path: Path, attributes: dict[str, float | None],
                               **kw: Any) -> None:
        await self.send(endpoint, ops.WriteAttributes(path, tuple(attributes.items())), **kw)

    async def create(self, endpoint: str, path: Path, content: Content, **kw: Any) -> str | None:
        for p, v in content.items():
            self.objects.check_value(p, v, for_write=False)
        return await self.send(endpoint, ops.Create(path, content), **kw)  # type: ignore[no-any-return]

    async def delete(self, endpoint: str, path: Path, **kw: Any) -> None:
        await self.send(endpoint, ops.Delete(path), **kw)

