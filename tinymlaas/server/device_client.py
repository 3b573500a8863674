"""Sends device-management operations to registered devices.

For each operation: find the registration (not registered -> NotFound), wait for a
queue-mode device to wake, choose the content format (an explicit one, else from what the
device advertised), address the request to where the device registered from (through the
server's own socket, so NATs and firewalls that opened for the device's registration let it
through), apply a timeout, and turn the response into a result or a ``DeviceError``.

Content-format choice (always sent as Accept / Content-Format; some clients answer 5.00
without one): an LwM2M 1.0 device gets TLV (the legacy 1542 if that is what it advertised);
1.1 and later get SenML JSON, or the first of SenML CBOR / LwM2M CBOR / TLV it advertises if
it does not list SenML JSON.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiocoap import Code, Message
from aiocoap import error as coap_error

from lwm2m.errors import LwM2MError, NotFound
from lwm2m.numbers import ContentFormat
from lwm2m.transport import response_within
from tinymlaas.server.operations import Operation
from tinymlaas.server.registrations import Registration

if TYPE_CHECKING:
    from tinymlaas.server.server import LwM2MServer

DEFAULT_TIMEOUT_S = 10.0

# version -> formats in order of preference; the first one the device advertises wins, and
# the first of the list is used when the device advertises nothing.
PREFERENCE: dict[str, tuple[ContentFormat, ...]] = {
    "1.0": (ContentFormat.TLV, ContentFormat.LEGACY_TLV, ContentFormat.LWM2M_JSON, ContentFormat.LEGACY_JSON),
    "1.1": (ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR, ContentFormat.TLV, ContentFormat.LWM2M_JSON),
    "1.2": (ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR, ContentFormat.LWM2M_CBOR, ContentFormat.TLV),
}


class DeviceTimeout(LwM2MError):
    code = Code.GATEWAY_TIMEOUT


def preferred_format(reg: Registration) -> ContentFormat:
    prefs = PREFERENCE.get(reg.lwm2m_version, PREFERENCE["1.1"])
    advertised = set(reg.content_formats)
    for fmt in prefs:
        if fmt in advertised:
            return fmt
    return prefs[0]


class DeviceClient:
    def __init__(self, server: "LwM2MServer") -> None:
        self.server = server

    def registration(self, endpoint: str) -> Registration:
        reg = self.server.registrations.by_endpoint.get(endpoint)
        if reg is None:
            raise NotFound(f"device {endpoint!r} is not registered")
        return reg

    def message(self, reg: Registration, op: Operation, fmt: ContentFormat) -> Message:
        msg = op.request(fmt, self.server.objects)
        self.server.security.route(msg, reg)  # its DTLS session, or its UDP address
        root = tuple(p for p in reg.root_path.split("/") if p)
        msg.opt.uri_path = root + op.path.uri_path
        return msg

    async def send(self, endpoint: str, op: Operation, *, fmt: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S, queue_deadline: float | None = None) -> Any:
        reg = self.registration(endpoint)
        await self.server.queue.wait_awake(reg, queue_deadline if queue_deadline is not None else timeout)
        chosen = ContentFormat(fmt) if fmt is not None else preferred_format(reg)
        request = self.server.context.request(self.message(reg, op, chosen))
        response = await self.await_response(reg, op, request, timeout)
        return op.result(response, self.server.objects)

    async def await_response(self, reg: Registration, op: Operation, request: Any, timeout: float) -> Message:
        try:
            response = await response_within(request, timeout)
        except asyncio.TimeoutError:
            raise DeviceTimeout(f"{op.name} {op.path} on {reg.endpoint}: no response within {timeout:g} s") from None
        except coap_error.Error as exc:
            raise DeviceTimeout(f"{op.name} {op.path} on {reg.endpoint}: {type(exc).__name__} {exc}") from None
        reg.last_seen = time.time()
        op.check(response)
        return response
