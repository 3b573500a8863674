"""Sends device-management operations to registered devices.

For each operation: find the registration (not registered -> NotFound), hold it while a
queue-mode device sleeps (``queue``), choose the content format (an explicit one, else from what
the device advertised, negotiated when it refuses one), address the request to where the device
registered from (through the server's own socket, so NATs and firewalls that opened for the
device's registration let it through), apply a timeout, and turn the response into a result or a
``DeviceError``. Each request holds one of the device's in-flight slots (``limits.DeviceSlots``)
and is a ``blockwise.BoundedBlockwiseRequest``: an answer in blocks is cut at the byte and time
limits and stopped when the caller times out or is cancelled.

Content-format choice (always sent as Accept / Content-Format; some clients answer 5.00
without one): an LwM2M 1.0 device gets TLV (the legacy 1542 if that is what it advertised);
1.1 and later get SenML JSON, or the first of SenML CBOR / LwM2M CBOR / TLV it advertises if
it does not list SenML JSON. One Opaque value written to its own resource (a Package, /5/0/0,
/9/x/2) goes as application/octet-stream (42): raw bytes, not base64 in SenML. Negotiation:
when the caller named no format and the device refuses the chosen one (4.15 Unsupported
Content-Format, or 4.06 Not Acceptable), the next format that can carry the path is tried, at
most ``MAX_FORMATS`` in all; a refused format is remembered for that registration.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiocoap import Code, Message
from aiocoap import error as coap_error

from lwm2m import codecs
from lwm2m.errors import LwM2MError, NotFound
from lwm2m.numbers import ContentFormat
from lwm2m.transport import response_within
from tinymlaas.server.operations import DeviceError, Operation, Write
from tinymlaas.server.registrations import Registration

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

DEFAULT_TIMEOUT_S = 10.0
MAX_FORMATS = 4

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


def candidate_formats(reg: Registration, op: Operation, registry: Any,
                      refused: frozenset[int] | set[int] = frozenset()) -> list[ContentFormat]:
    """The content formats to try for ``op`` on ``reg``'s device, best first (at most MAX_FORMATS)."""
    first = preferred_format(reg)
    order: list[ContentFormat] = []
    if isinstance(op, Write) and op.single_opaque(registry):
        order.append(ContentFormat.OPAQUE)
    order.append(first)
    order += [f for f in PREFERENCE.get(reg.lwm2m_version, PREFERENCE["1.1"]) if f not in order]
    if op.path.depth >= 3:
        order.append(ContentFormat.TEXT)
    usable = [f for f in dict.fromkeys(order) if codecs.supports(int(f), op.path, registry)] or [first]
    fresh = [f for f in usable if int(f) not in refused]
    return (fresh or usable)[:MAX_FORMATS]


class DeviceClient:
    def __init__(self, server: "Core") -> None:
        self.server = server
        self.refused: dict[str, set[int]] = {}  # registration id -> formats its device refused

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

    def request(self, message: Message) -> Any:
        """Send ``message`` as a block-wise request bounded by the server's Block2 limits."""
        return self.server.blockwise(self.server.context, message)

    async def send(self, endpoint: str, op: Operation, *, fmt: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S, queue_deadline: float | None = None,
                   durable: bool = False) -> Any:
        """Send ``op`` and return its result. A sleeping queue-mode device gets it when it wakes,
        within ``queue_deadline`` (default ``timeout``); ``durable``: the held request survives a
        server restart (operator requests)."""
        reg = self.registration(endpoint)
        hold_s = queue_deadline if queue_deadline is not None else timeout
        queue = self.server.queue
        if not queue.is_awake(reg):
            return await queue.hold(reg, op, fmt, hold_s, timeout, durable=durable)
        started = time.monotonic()
        try:
            return await self.transmit(reg, op, fmt, timeout)
        except DeviceTimeout:
            left = hold_s - (time.monotonic() - started)
            if not queue.is_queue(reg) or left <= 0.5:
                raise
            reg.last_seen = 0.0  # it fell asleep before answering: back into the queue
            return await queue.hold(reg, op, fmt, left, timeout, durable=durable)

    async def submit(self, endpoint: str, op: Operation, *, fmt: int | None = None,
                     timeout: float = DEFAULT_TIMEOUT_S, hold_s: float = 3600.0) -> tuple[str, Any]:
        """Without waiting for a sleeping device: ("done", result) when it is awake, else
        ("held", id of the durable held request)."""
        reg = self.registration(endpoint)
        if self.server.queue.is_awake(reg):
            return "done", await self.transmit(reg, op, fmt, timeout)
        return "held", await self.server.queue.hold(reg, op, fmt, hold_s, timeout, durable=True, wait=False)

    async def transmit(self, reg: Registration, op: Operation, fmt: int | None, timeout: float) -> Any:
        """One operation on the wire now, with content-format negotiation when ``fmt`` is None."""
        registry = self.server.objects
        refused = self.refused.setdefault(reg.id, set())
        formats = [ContentFormat(fmt)] if fmt is not None else candidate_formats(reg, op, registry, refused)
        began = time.monotonic()
        for i, chosen in enumerate(formats):
            try:
                async with self.server.slots.slot(reg.endpoint, timeout):
                    request = self.request(self.message(reg, op, chosen))
                    left = max(timeout - (time.monotonic() - began), 0.001)
                    response = await self.await_response(reg, op, request, left)
            except DeviceError as exc:
                if fmt is None and exc.code in op.refusals and i + 1 < len(formats):
                    refused.add(int(chosen))
                    continue
                raise
            return op.result(response, registry)
        raise AssertionError("unreachable: the last format's answer is returned or raised")

    async def await_response(self, reg: Registration, op: Operation, request: Any, timeout: float) -> Message:
        try:
            response = await response_within(request, timeout)
        except asyncio.TimeoutError:
            _abandon(request)
            raise DeviceTimeout(f"{op.name} {op.path} on {reg.endpoint}: no response within {timeout:.3g} s") from None
        except coap_error.Error as exc:
            raise DeviceTimeout(f"{op.name} {op.path} on {reg.endpoint}: {type(exc).__name__} {exc}") from None
        except BaseException:  # cancelled: whoever wanted the answer is gone
            _abandon(request)
            raise
        reg.last_seen = time.time()
        op.check(response)
        return response


def _abandon(request: Any) -> None:
    abandon = getattr(request, "abandon", None)
    if abandon is not None:
        abandon()
