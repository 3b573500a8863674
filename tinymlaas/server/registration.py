"""The registration interface (``/rd``): Register, Update, De-register, lifetime expiry.

TS Core 1.1/1.2 section 6.2 and TS Transport 6.2. What this module checks, with the code a
client gets back:

- query parameters: ``ep`` required (a name by ``tinymlaas.names``' endpoint rule), ``lt`` an
  integer within the server's lifetime range (default 1 s .. 10 years; a negative, zero or
  absurd lifetime is 4.00 naming it; absent means 86400), ``lwm2m``
  among the supported versions (absent means 1.0; unsupported -> 4.12, which clients use
  to fall back), ``b`` a binding of U/S/T/N (absent means U; a 1.0 ``UQ`` means queue
  mode), ``Q`` (queue mode), ``sms``; a malformed or repeated parameter -> 4.00;
- payload: CoRE link format (content format 40 or none; another format -> 4.15), parsed
  before anything is stored (malformed -> 4.00 with the parser's diagnostic); larger than
  ``MAX_LINKS_BYTES`` -> 4.13. Block1 transfers are assembled (and bounded: 4.13 before the
  buffer grows past the limit) by ``blockwise.BoundedBlock1Spool`` before we see them;
- rate limits and who may change a registration: ``limits.Admission`` (4.29 with Max-Age).

Nothing is half-written: the database commit happens before the in-memory table changes and
before the 2.01/2.04/2.02 goes out; a failed commit answers 5.00 and changes nothing.
A Register from an endpoint that already has a registration replaces it (new id); the
server's ``on_replaced`` keeps what was held for the device and establishes its observations
again. This module does not talk to devices (see ``device_client``) nor decide what to do after
a registration (the server's ``on_registered`` hook does).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from aiocoap import Code, Message

from lwm2m.errors import BadRequest, LwM2MError, NotFound, PreconditionFailed, \
    RequestEntityTooLarge, UnsupportedContentFormat
from lwm2m.link_format import parse_links, registration_objects
from lwm2m.numbers import ContentFormat
from lwm2m.numbers.versions import DEFAULT_BINDING, DEFAULT_LIFETIME, SUPPORTED_VERSIONS
from tinymlaas import names
from tinymlaas.server.registrations import Registration, event_row, registration_rows, removal_rows

if TYPE_CHECKING:
    from tinymlaas.server.core import Core

log = logging.getLogger(__name__)

MAX_LINKS_BYTES = 16 * 1024
MAX_LIFETIME = 2**31 - 1
DEFAULT_LIFETIME_RANGE = (1, 10 * 365 * 86400)  # seconds; outside it a lifetime is refused (4.00)
BINDING_LETTERS = frozenset("USTNQ")
SMS_NUMBER = re.compile(r"\+?[0-9]{1,15}")


class RegisterParams(NamedTuple):
    """The query parameters of a Register or Update (None: not given). A NamedTuple, not a
    frozen dataclass: it is built once per registration and that is measurably cheaper."""

    endpoint: str | None = None
    lifetime: int | None = None
    version: str | None = None
    binding: str | None = None
    queue: bool = False
    sms: str | None = None


def _int_param(name: str, text: str | None, bounds: tuple[int, int] = (1, MAX_LIFETIME)) -> int:
    body = text[1:] if text and text[0] in "+-" else text
    if text is None or not body or not body.isdigit() or not body.isascii():
        raise BadRequest(f"invalid query parameter {name}={text!r}: expected a positive integer (seconds)")
    value = int(text)
    if not bounds[0] <= value <= bounds[1]:
        why = "not positive" if value <= 0 else "too small" if value < bounds[0] else "too long"
        raise BadRequest(f"invalid query parameter {name}={text}: {why}; this server accepts "
                         f"{bounds[0]}..{bounds[1]} seconds")
    return value


def _binding(text: str | None) -> str:
    if not text or not set(text) <= BINDING_LETTERS or len(set(text)) != len(text):
        raise BadRequest(f"invalid query parameter b={text!r}: expected letters from U, S, T, N, Q")
    return text


def parse_query(query: tuple[str, ...], lifetime_range: tuple[int, int] = DEFAULT_LIFETIME_RANGE) -> RegisterParams:
    """Parse Uri-Query options; raise BadRequest naming the parameter that is wrong."""
    seen: dict[str, str | None] = {}
    for item in query:
        key, sep, value = item.partition("=")
        if key in seen:
            raise BadRequest(f"query parameter {key!r} given twice")
        seen[key] = value if sep else None
    ep = seen.get("ep")
    if "ep" in seen:
        names.check("endpoint", ep)
    version = seen.get("lwm2m")
    if "lwm2m" in seen and version not in SUPPORTED_VERSIONS:
        raise PreconditionFailed(
            f"unsupported LwM2M version lwm2m={version!r}: this server speaks {', '.join(sorted(SUPPORTED_VERSIONS))}")
    if "Q" in seen and seen["Q"] is not None:
        raise BadRequest(f"invalid query parameter Q={seen['Q']!r}: Q takes no value")
    sms = seen.get("sms")
    if "sms" in seen and (sms is None or not SMS_NUMBER.fullmatch(sms)):
        raise BadRequest(f"invalid query parameter sms={sms!r}: expected an MSISDN (up to 15 digits, optional +)")
    binding = _binding(seen["b"]) if "b" in seen else None
    return RegisterParams(
        endpoint=ep,
        lifetime=_int_param("lt", seen["lt"], lifetime_range) if "lt" in seen else None,
        version=version,
        binding=binding,
        queue="Q" in seen or (binding is not None and "Q" in binding),
        sms=seen.get("sms"),
    )


def parse_payload(request: Message) -> tuple[str, str, tuple[int, ...]] | None:
    """Check and parse the link payload: (text, root path, content formats), or None if empty."""
    cf = request.opt.content_format
    if cf is not None and int(cf) != ContentFormat.LINK:
        raise UnsupportedContentFormat(f"registration payload has content format {int(cf)}: expected 40 (link format)")
    if len(request.payload) > MAX_LINKS_BYTES:
        raise RequestEntityTooLarge(f"registration payload of {len(request.payload)} bytes: limit is {MAX_LINKS_BYTES}")
    if not request.payload:
        return None
    try:
        text = request.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"registration payload is not UTF-8 at byte {exc.start}") from None
    root, formats = link_summary(text)
    return text, root, formats


@functools.lru_cache(maxsize=4096)
def link_summary(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse and check a link payload once: a fleet sends the same few payloads again and again."""
    root, formats, _objects = registration_objects(parse_links(text))
    return root, formats


def error_response(exc: LwM2MError) -> Message:
    msg = Message(code=exc.code, payload=exc.message.encode("utf-8")[:1024])
    if getattr(exc, "retry_after_s", None):
        msg.opt.max_age = exc.retry_after_s  # type: ignore[attr-defined]  # 4.29: when to come back (RFC 8516)
    return msg


def address_of(remote: Any) -> str:
    """``host:port`` of a UDP remote, as a CoAP URI authority (IPv4-mapped shown as IPv4).

    Formatted from the socket address: aiocoap's ``hostinfo`` parses it with ``ipaddress``
    on every call, which shows in a registration storm.
    """
    host, port = remote.sockaddr[0], remote.sockaddr[1]
    if host.startswith("::ffff:") and "." in host:
        return f"{host[7:]}:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def new_registration_id() -> str:
    """20 hex digits: 80 bits from the OS's CSPRNG (an id is what a NoSec Update or De-register
    proves, so it must not be guessable or predictable from other ids)."""
    return secrets.token_hex(10)


class RegistrationInterface:
    """Handles requests under ``/rd`` for one server."""

    def __init__(self, server: "Core") -> None:
        self.server = server

    async def handle(self, request: Message, subpath: tuple[str, ...]) -> Message:
        try:
            if request.code == Code.POST and not subpath:
                return await self.register(request)
            if request.code == Code.POST and len(subpath) == 1:
                return await self.update(request, subpath[0])
            if request.code == Code.DELETE and len(subpath) == 1:
                return await self.deregister(request, subpath[0])
            if len(subpath) > 1:
                raise NotFound(f"no resource at /rd/{'/'.join(subpath)}")
            return Message(code=Code.METHOD_NOT_ALLOWED, payload=f"{request.code} not allowed on /rd".encode())
        except LwM2MError as exc:
            return error_response(exc)

    async def register(self, request: Message) -> Message:
        self.server.admission.register(request)
        params = parse_query(request.opt.uri_query, self.server.lifetime_range_s)
        if params.endpoint is None:
            raise BadRequest("Register without the mandatory query parameter ep")
        self.server.security.authorize("register", request, params.endpoint)
        parsed = parse_payload(request)
        if parsed is None:
            raise BadRequest("Register without a link payload")
        links, root, formats = parsed
        now = time.time()
        binding = params.binding or DEFAULT_BINDING
        reg = Registration(
            id=new_registration_id(), endpoint=params.endpoint, address=address_of(request.remote),
            lifetime=params.lifetime or DEFAULT_LIFETIME, binding=binding,
            lwm2m_version=params.version or "1.0", queue_mode=params.queue, sms=params.sms,
            links=links, registered_at=now, updated_at=now, root_path=root,
            content_formats=formats, remote=request.remote, last_seen=now,
        )
        old = self.server.registrations.by_endpoint.get(reg.endpoint)
        rows = registration_rows(reg, now)
        if old is not None:
            rows.append(event_row(reg.endpoint, "replaced", registration=old.id))
        rows.append(event_row(reg.endpoint, "registered", registration=reg.id, address=reg.address,
                              lifetime=reg.lifetime, binding=binding, lwm2m=reg.lwm2m_version))
        await self.server.store.put(*rows)
        replaced = self.server.registrations.put(reg)
        if replaced is not None:
            self.server.on_replaced(replaced, reg)
        self.server.on_registered(reg, new=True)
        return Message(code=Code.CREATED, location_path=("rd", reg.id))

    async def update(self, request: Message, reg_id: str) -> Message:
        reg = self.server.registrations.by_id.get(reg_id)
        if reg is None:
            raise self.server.admission.unknown(request, reg_id)
        self.server.security.authorize("update", request, reg.endpoint, reg)
        params = parse_query(request.opt.uri_query, self.server.lifetime_range_s)
        if params.endpoint is not None or params.version is not None:
            raise BadRequest("Update may not carry ep or lwm2m")
        parsed = parse_payload(request)
        now = time.time()
        changes: dict[str, Any] = {"updated_at": now}
        if params.lifetime is not None:
            changes["lifetime"] = params.lifetime
        if params.binding is not None:
            changes["binding"] = params.binding
            changes["queue_mode"] = params.queue
        elif params.queue:
            changes["queue_mode"] = True
        if params.sms is not None:
            changes["sms"] = params.sms
        address = address_of(request.remote)
        if address != reg.address:
            changes["address"] = address
        if parsed is not None:
            changes["links"] = parsed[0]

        notable = {k: v for k, v in changes.items() if k != "updated_at" and getattr(reg, k) != v}
        rows = registration_rows(replace(reg, **changes), now)
        if notable:
            rows.append(event_row(reg.endpoint, "updated", registration=reg.id, **notable))
        await self.server.store.put(*rows)
        if self.server.registrations.by_id.get(reg_id) is not reg:
            raise NotFound(f"no registration rd/{reg_id}")  # de-registered meanwhile
        for key, value in changes.items():
            setattr(reg, key, value)
        if parsed is not None:
            reg.root_path, reg.content_formats = parsed[1], parsed[2]
        reg.remote = request.remote
        reg.last_seen = now
        self.server.registrations.touch(reg)
        self.server.on_registered(reg, new=False)
        return Message(code=Code.CHANGED)

    async def deregister(self, request: Message, reg_id: str) -> Message:
        reg = self.server.registrations.by_id.get(reg_id)
        if reg is None:
            raise self.server.admission.unknown(request, reg_id)
        self.server.security.authorize("deregister", request, reg.endpoint, reg)
        await self.server.store.put(*removal_rows(reg, "deregistered"))
        self.server.registrations.remove(reg)
        self.server.on_deregistered(reg, "deregistered")
        return Message(code=Code.DELETED)

    async def expire(self) -> int:
        """Remove every registration whose lifetime ran out; record an ``expired`` event each."""
        regs = self.server.registrations.expired()
        await asyncio.gather(*(self.server.store.put(*removal_rows(reg, "expired")) for reg in regs))
        for reg in regs:
            if self.server.registrations.by_id.get(reg.id) is reg and reg.expires_at <= time.time():
                self.server.registrations.remove(reg)
                self.server.on_deregistered(reg, "expired")
        return len(regs)
