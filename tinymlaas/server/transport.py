"""The server's CoAP socket: aiocoap's UDP transport with a guard for datagrams that are not CoAP.

aiocoap (0.4.17) decodes a datagram in ``MessageInterfaceUDP6.datagram_msg_received`` and
catches only ``UnparsableMessage``: a string option that is not UTF-8 (a Uri-Query byte
0xff, say) raises ``UnicodeDecodeError`` out of the socket callback, and asyncio logs a
full traceback per datagram. It also logs a warning for every datagram it ignores. That is
upstream-worthy; here ``GuardedUDP6`` is an upstream-style subclass that decodes once
itself and answers what it cannot use as RFC 7252 says, counting each kind (``JunkLog``:
counted always, logged once per source per interval):

=====================================  =========================================
datagram                               answer
=====================================  =========================================
an option value that does not decode   CON request: 4.02 Bad Option (5.4.1, 3.2);
(e.g. a string option not UTF-8)       other CON: Reset; anything else: dropped
message format error (truncated        CON: Reset (4.2); anything else: dropped
options, token length 9-15, bytes
after an Empty message, not version 1)
code and type that do not fit          CON: Reset; anything else: dropped
(a request in an ACK, a 6.xx code...)
=====================================  =========================================

Everything else goes to aiocoap's message layer unchanged; an exception from there is
counted and logged (one line, rate-limited) instead of escaping into the event loop.

``server_context`` builds the context as ``aiocoap.Context.create_server_context`` does for
``udp6``, with this transport and a logger whose lines are rate-limited per template.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

import aiocoap
from aiocoap import Message
from aiocoap.transports.udp6 import MessageInterfaceUDP6, UDP6EndpointAddress

from tinymlaas.server import dedup
from tinymlaas.server.metrics import JunkLog, RateLimitFilter

LOGGER = "tinymlaas.coap"
CON, NON, ACK, RST = 0, 1, 2, 3
BAD_OPTION = 0x82  # 4.02
MAX_TOKEN = 8


def _fits(code: int, mtype: int) -> bool:
    """Whether a code may come in a message of this type (RFC 7252 4.1-4.3, 5.2)."""
    if code == 0:
        return mtype != NON
    if code < 32:  # requests 0.01-0.31
        return mtype in (CON, NON)
    if 64 <= code < 192:  # responses 2.xx-5.xx
        return mtype != RST
    return False  # 1.xx, 6.xx, 7.xx (signalling is for reliable transports)


def _reset(mid: int) -> bytes:
    return bytes((0x40 | RST << 4, 0)) + struct.pack("!H", mid)


def _bad_option(mid: int, token: bytes, why: str) -> bytes:
    """A piggybacked 4.02 with a diagnostic payload."""
    return bytes((0x40 | ACK << 4 | len(token), BAD_OPTION)) + struct.pack("!H", mid) + token + \
        b"\xff" + why.encode("utf-8", "replace")[:128]


class GuardedUDP6(MessageInterfaceUDP6):  # type: ignore[misc]  # aiocoap is untyped
    """``MessageInterfaceUDP6`` that answers or drops undecodable datagrams instead of raising."""

    junk: JunkLog | None = None  # set per server by ``guarded``
    received = 0  # datagrams seen (per instance once one arrived)

    def _refuse(self, data: bytes, address: Any, kind: str, why: str, reply: str) -> None:
        if self.junk is not None:
            self.junk.note(kind, str(address[0]), why)
        if len(data) < 4 or data[0] >> 6 != 1:
            return
        mtype, mid, tkl = (data[0] >> 4) & 3, struct.unpack_from("!H", data, 2)[0], data[0] & 0x0F
        if mtype != CON:
            return
        if reply == "bad option" and data[1] < 32 and tkl <= MAX_TOKEN and len(data) >= 4 + tkl:
            answer = _bad_option(mid, data[4:4 + tkl], why)
        else:
            answer = _reset(mid)
        try:
            self.transport.sendmsg(answer, [], 0, address)
        except OSError:
            pass

    def datagram_msg_received(self, data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        self.received += 1
        pktinfo = None
        for level, kind, value in ancdata:  # as MessageInterfaceUDP6.datagram_msg_received
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                pktinfo = value
        if len(data) < 4 or data[0] >> 6 != 1 or data[0] & 0x0F > MAX_TOKEN:
            self._refuse(data, address, "format", "not a CoAP 1 header (length, version or token length)", "reset")
            return
        code, mtype = data[1], (data[0] >> 4) & 3
        if not _fits(code, mtype):
            self._refuse(data, address, "misfit", f"code {code >> 5}.{code & 31:02d} in a message of type "
                                                  f"{('CON', 'NON', 'ACK', 'RST')[mtype]}", "reset")
            return
        if code == 0 and len(data) > 4:
            self._refuse(data, address, "format", "an Empty message with bytes after the message id", "reset")
            return
        try:
            message = Message.decode(data, UDP6EndpointAddress(address, self, pktinfo=pktinfo))
        except aiocoap.error.UnparsableMessage as exc:
            self._refuse(data, address, "format", str(exc) or "unparsable", "reset")
            return
        except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
            self._refuse(data, address, "option", f"an option value does not decode: {exc}", "bad option")
            return
        try:
            self._ctx.dispatch_message(message)
        except Exception as exc:  # the message layer's bug must not take the socket callback down
            if self.junk is not None:
                self.junk.note("dispatch", str(address[0]), f"{type(exc).__name__}: {exc}")


def guarded(junk: JunkLog) -> type[GuardedUDP6]:
    """A ``GuardedUDP6`` subclass reporting to one server's ``JunkLog``."""
    return type("GuardedUDP6", (GuardedUDP6,), {"junk": junk})


_filters: dict[str, RateLimitFilter] = {}


def quiet_logger(interval_s: float) -> logging.Logger:
    """The server contexts' logger, with aiocoap's per-datagram lines rate-limited (once per process)."""
    logger = logging.getLogger(LOGGER)
    if LOGGER not in _filters:
        _filters[LOGGER] = RateLimitFilter(interval_s)
        logger.addFilter(_filters[LOGGER])
    return logger


async def server_context(site: Any, host: str, port: int, junk: JunkLog, log_interval_s: float) -> aiocoap.Context:
    """An aiocoap server context on ``host:port`` over ``GuardedUDP6`` (what
    ``Context.create_server_context(site, bind=..., transports=["udp6"])`` builds, guarded, on
    ``dedup.ServerContext``: its message manager keeps duplicate responses as bytes)."""
    loop = asyncio.get_running_loop()
    quiet_logger(log_interval_s)
    context = dedup.ServerContext(loop=loop, serversite=site, loggername=LOGGER)  # the lean duplicate cache
    transport = guarded(junk)
    await context._append_tokenmanaged_messagemanaged_transport(  # the hook create_server_context uses
        lambda manager: transport.create_server_transport_endpoint(
            manager, log=context.log, loop=loop, bind=(host, port), multicast=[]))
    return context
