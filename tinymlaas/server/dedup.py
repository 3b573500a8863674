"""A leaner duplicate-response cache for the server's CoAP context.

CoAP servers keep each response for EXCHANGE_LIFETIME (247 s) so a retransmitted request
gets the same answer instead of being executed twice (RFC 7252 4.5). aiocoap keeps the
whole response ``Message`` for that, and the response holds its request: about 3 KB per
exchange, which at a registration storm of 20,000 devices is more than the registrations
themselves. For piggybacked responses (ACK) this keeps only what a resend needs: the
encoded bytes and the remote. Separate (CON) responses keep aiocoap's own handling.

This patches one method on one ``MessageManager`` instance (aiocoap 0.4.x internals:
``_store_response_for_duplicates`` and ``_recent_messages``); ``install`` refuses quietly
if those are not there, leaving aiocoap's behaviour as it was.
"""

from __future__ import annotations

import logging
from typing import Any

from aiocoap.numbers.types import ACK

log = logging.getLogger(__name__)


class EncodedResponse:
    """What ``MessageManager._send_initially`` and the UDP transport use of a stored response."""

    __slots__ = ("mtype", "mid", "remote", "_data")

    def __init__(self, message: Any) -> None:
        self.mtype = message.mtype
        self.mid = message.mid
        self.remote = message.remote
        self._data = message.encode()

    def encode(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"<EncodedResponse mid={self.mid} to {self.remote} ({len(self._data)} bytes)>"


def install(context: Any) -> bool:
    """Make the server context's duplicate cache keep encoded ACK responses only."""
    try:
        manager = context.request_interfaces[0].token_interface
        recent = manager._recent_messages
        original = manager._store_response_for_duplicates
    except (AttributeError, IndexError):
        log.info("aiocoap internals differ: keeping its duplicate cache as it is")
        return False

    def store(message: Any) -> None:
        if message.mtype is not ACK:
            original(message)
            return
        key = (message.remote, message.mid)
        if key in recent:
            recent[key] = message if isinstance(message, EncodedResponse) else EncodedResponse(message)

    manager._store_response_for_duplicates = store
    return True
