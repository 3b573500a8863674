"""What the server's features use of the server and of each other: the ``Core`` protocol.

``LwM2MServer`` (``tinymlaas.server.server``) builds its features — registration, the device
client, queue mode, observations, capabilities, retention, security — and hands each of them
itself. The features see it through this protocol, not through ``server.py``, so imports go
one way: ``server.py`` imports the features, the features import this module (and the plain
tables and bounds below them). Where one feature calls another (the device client asks queue
mode whether a device is awake, queue mode has the device client transmit), it is through the
small protocols here, each naming only the calls made.

What it does not do: anything at run time; these are types, checked by mypy against
``LwM2MServer`` and the feature classes.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from aiocoap import Message

from lwm2m.model import ObjectRegistry
from lwm2m.numbers import ContentFormat
from lwm2m.path import Content, Path
from tinymlaas.server.blockwise import BoundedBlockwiseRequest
from tinymlaas.server.device_settings import DeviceSettingsTable
from tinymlaas.server.limits import Admission, DeviceSlots, Limits
from tinymlaas.server.metrics import Metrics
from tinymlaas.server.operations import Operation
from tinymlaas.server.registrations import Registration, RegistrationTable
from tinymlaas.store import Store


class DeviceClientCalls(Protocol):
    """``DeviceClient`` as the other features call it."""

    def registration(self, endpoint: str) -> Registration: ...

    def message(self, reg: Registration, op: Operation, fmt: ContentFormat) -> Message: ...

    def request(self, message: Message) -> Any: ...

    async def await_response(self, reg: Registration, op: Operation, request: Any, timeout: float) -> Message: ...

    async def transmit(self, reg: Registration, op: Operation, fmt: int | None, timeout: float) -> Any: ...


class QueueCalls(Protocol):
    """``QueueMode`` as the other features call it."""

    def is_queue(self, reg: Registration) -> bool: ...

    def is_awake(self, reg: Registration) -> bool: ...

    async def hold(self, reg: Registration, op: Operation | None, fmt: int | None, hold_s: float,
                   timeout: float, durable: bool = False, wait: bool = True) -> Any: ...

    async def wait_awake(self, reg: Registration, deadline_s: float) -> None: ...


class SecurityCalls(Protocol):
    """``Security`` as the other features call it."""

    def authorize(self, op: str, request: Message, endpoint: str, reg: Registration | None = None) -> None: ...

    def route(self, msg: Message, reg: Registration) -> None: ...


class Core(Protocol):
    """One LwM2M server, as its features use it."""

    store: Store
    objects: ObjectRegistry
    limits: Limits
    metrics: Metrics
    admission: Admission
    slots: DeviceSlots
    registrations: RegistrationTable
    device_settings: DeviceSettingsTable
    blockwise: type[BoundedBlockwiseRequest]
    lifetime_range_s: tuple[int, int]
    context: Any  # aiocoap.Context, once started

    @property
    def device_client(self) -> DeviceClientCalls: ...

    @property
    def queue(self) -> QueueCalls: ...

    @property
    def security(self) -> SecurityCalls: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...

    async def read(self, endpoint: str, path: Path, **kw: Any) -> Content: ...

    def on_registered(self, reg: Registration, new: bool) -> None: ...

    def on_replaced(self, old: Registration, reg: Registration) -> None: ...

    def on_deregistered(self, reg: Registration, why: str) -> None: ...
