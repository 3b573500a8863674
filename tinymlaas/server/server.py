"""``LwM2MServer``: one CoAP context, one store, and the features wired together.

Start-up loads the registrations from the database (a device that sends an Update with the
registration id it got before a restart is accepted), then binds the CoAP socket and runs
the lifetime-expiry sweeper. All device-management requests leave through the same socket
the registrations arrived on. The admin API and the CLI call the methods at the bottom.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import aiocoap
from aiocoap import Code, Message
from aiocoap.resource import PathCapable, Resource
from sqlalchemy import select

from device_profiles import load_profiles
from lwm2m.model import ObjectRegistry, default_registry
from lwm2m.model.ddf import parse_ddf
from lwm2m.path import Content, Path
from tinymlaas.server import dedup, operations as ops
from tinymlaas.server.capabilities import Capabilities
from tinymlaas.server.device_client import DEFAULT_TIMEOUT_S, DeviceClient
from tinymlaas.server.observation import Observations
from tinymlaas.server.packages import PREFIX as PACKAGES_PREFIX, PackageOffers
from tinymlaas.server.queue import QueueMode
from tinymlaas.server.registration import RegistrationInterface
from tinymlaas.server.registrations import Registration, RegistrationTable, sql_load
from tinymlaas.security.service import Security
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.store import Store
from tinymlaas.store.tables import OBJECT_DEFINITIONS

log = logging.getLogger(__name__)


class RootResource(Resource, PathCapable):
    """Routes ``/rd...`` to the registration interface; everything else is 4.04."""

    def __init__(self, server: "LwM2MServer") -> None:
        super().__init__()
        self.rd = RegistrationInterface(server)
        self.packages = server.packages

    async def render(self, request: Message) -> Message:
        path = request.opt.uri_path
        if path and path[0] == "rd":
            return await self.rd.handle(request, tuple(path[1:]))
        if path and path[0] == PACKAGES_PREFIX:
            return self.packages.handle(request, tuple(path[1:]))
        return Message(code=Code.NOT_FOUND, payload=f"no resource at /{'/'.join(path)}".encode())

    def get_link_description(self) -> dict[str, str]:
        return {"rt": "core.rd"}


class LwM2MServer:
    def __init__(self, db_url: str, *, objects: ObjectRegistry | None = None, read_capabilities: bool = True,
                 expiry_interval_s: float = 1.0, queue_awake_s: float | None = None,
                 security: SecuritySettings | None = None) -> None:
        self.store = Store(db_url)
        self.objects = objects if objects is not None else default_registry()
        self.registrations = RegistrationTable()
        self.packages = PackageOffers()
        self.queue = QueueMode() if queue_awake_s is None else QueueMode(queue_awake_s)
        self.device_client = DeviceClient(self)
        self.observations = Observations(self)
        self.capabilities = Capabilities(self, enabled=read_capabilities,
                                         profiles=load_profiles() if read_capabilities else None)
        self.expiry_interval_s = expiry_interval_s
        self.context: aiocoap.Context = None  # type: ignore[assignment]
        self.address: tuple[str, int] = ("", 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry_task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[str, Registration], None]] = []
        self.security = Security(self, security or SecuritySettings())

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 5683) -> None:
        self.store.start()
        for reg in await self.store.read(sql_load):
            self.registrations.put(reg)
        for row in await self.store.read(lambda c: list(c.execute(select(OBJECT_DEFINITIONS)))):
            for model in parse_ddf(row.xml, source=f"imported object {row.object_id}"):
                self.objects.add(model)
        self.context = await aiocoap.Context.create_server_context(
            RootResource(self), bind=(host, port), transports=["udp6"])
        dedup.install(self.context)
        await self.security.start(self.context, host)
        iface = self.context.request_interfaces[0].token_interface.message_interface  # type: ignore[attr-defined]
        sockname = iface.transport.get_extra_info("socket").getsockname()
        self.address = (host, sockname[1])
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="lifetime expiry")
        log.info("LwM2M server on coap://%s:%d with %d registrations loaded",
                 host, self.address[1], len(self.registrations))

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
        return self.context.serversite.rd  # type: ignore[attr-defined,no-any-return]

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- hooks from the registration interface --------------------------------------------

    def on_registered(self, reg: Registration, new: bool) -> None:
        self.queue.woke(reg.endpoint)
        if new:
            self.capabilities.on_registered(reg)
        for listener in self.listeners:
            listener("registered" if new else "updated", reg)

    def on_deregistered(self, reg: Registration, why: str) -> None:
        self.observations.cancel_all(reg.endpoint)
        self.queue.gone(reg.endpoint, why)
        for listener in self.listeners:
            listener(why, reg)

    # -- device management (what the admin API calls) -------------------------------------

    async def send(self, endpoint: str, op: ops.Operation, fmt: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        return await self.device_client.send(endpoint, op, fmt=fmt, timeout=timeout)

    async def read(self, endpoint: str, path: Path, **kw: Any) -> Content:
        return await self.send(endpoint, ops.Read(path), **kw)  # type: ignore[no-any-return]

    async def write(self, endpoint: str, path: Path, content: Content, replace: bool = True, **kw: Any) -> None:
        for p, v in content.items():
            self.objects.check_value(p, v)
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

