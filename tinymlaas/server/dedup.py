"""A leaner duplicate-response cache for the server's CoAP context, as aiocoap subclasses.

CoAP servers keep each response for EXCHANGE_LIFETIME (247 s) so a retransmitted request
gets the same answer instead of being executed twice (RFC 7252 4.5). aiocoap keeps the
whole response ``Message`` for that, and the response holds its request: about 3 KB per
exchange, which at a registration storm of 20,000 devices is more than the registrations
themselves. For piggybacked responses (ACK) this keeps only what a resend needs: the
encoded bytes and the remote. Separate (CON) responses keep aiocoap's own handling.

aiocoap has no setting for this, so it is done the way aiocoap itself composes a context:
``LeanMessageManager`` subclasses its ``MessageManager`` and overrides the one method that
stores responses (``_store_response_for_duplicates``); ``ServerContext`` subclasses ``Context``
and overrides ``_append_tokenmanaged_messagemanaged_transport`` (aiocoap's own three lines,
with the subclass) so ``ServerContext.create_server_context`` builds its UDP transport on it.
Both are private aiocoap methods: ``tests/test_dedup.py`` pins their source (and that of the
methods that read what is stored) as reviewed for aiocoap 0.4.x and checks the behaviour on
the wire, so an aiocoap change under this module fails the tests instead of the server.
"""

from __future__ import annotations

import logging
from typing import Any

import aiocoap
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers.types import ACK
from aiocoap.tokenmanager import TokenManager

log = logging.getLogger(__name__)


class EncodedResponse:
    """What ``MessageManager._send_initially`` and the UDP transport use of a stored response."""

    __slots__ = ("mtype", "mid", "remote", "_data")

    def __init__(self, message: Any) -> None:
        self.mtype = message.mtype
        self.mid = message.mid
        self.remote = message.remote
        self._data: bytes = message.encode()

    def encode(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"<EncodedResponse mid={self.mid} to {self.remote} ({len(self._data)} bytes)>"


class LeanMessageManager(MessageManager):  # type: ignore[misc]
    """aiocoap's message manager, keeping piggybacked responses for duplicates as bytes only."""

    def _store_response_for_duplicates(self, message: Any) -> None:
        if message.mtype is not ACK:
            super()._store_response_for_duplicates(message)
            return
        key = (message.remote, message.mid)
        if key in self._recent_messages:
            self._recent_messages[key] = message if isinstance(message, EncodedResponse) else EncodedResponse(message)


class ServerContext(aiocoap.Context):  # type: ignore[misc]
    """``aiocoap.Context`` whose message-managed transports use ``LeanMessageManager``."""

    async def _append_tokenmanaged_messagemanaged_transport(self, message_interface_constructor: Any) -> None:
        tman = TokenManager(self)
        mman = LeanMessageManager(tman)
        transport = await message_interface_constructor(mman)

        mman.message_interface = transport
        tman.token_interface = mman

        self.request_interfaces.append(tman)
