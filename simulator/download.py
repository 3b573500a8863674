"""Pull download of a package (object 9 Package URI / object 5 Package URI) with Block2 resume.

The device fetches the URI block by block itself (aiocoap's automatic blockwise would restart
a failed transfer from block 0). After a lost block it asks for the same block again, with
exponential backoff and full jitter (``lwm2m.retry``), up to ``attempts`` times; what it
already has is kept, so a dropped connection resumes from the last good block instead of
restarting. Size2 (when the server sends it)
and the running total are checked against the storage limit as the data arrives.

Failures are ``DownloadError`` with ``reason`` "invalid-uri" (not a coap:// URI, or the
server says the resource does not exist), "connection-lost" or "not-enough-storage".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import aiocoap
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

from lwm2m.retry import Backoff
from lwm2m.transport import response_within

log = logging.getLogger(__name__)

BlockHook = Callable[[int, bytes], bytes]
BLOCK_BACKOFF = Backoff(0.2, 5.0)


class DownloadError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DownloadStats:
    blocks: int = 0
    retries: int = 0
    resumed_at: list[int] | None = None


def check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme != "coap" or not parts.hostname:
        raise DownloadError("invalid-uri", f"cannot download {uri!r}: expected coap://host[:port]/path")


async def pull(context: Any, uri: str, *, limit: int, size_exponent: int = 5, attempts: int = 6,
               attempt_timeout: float = 2.0, on_block: BlockHook | None = None,
               stats: DownloadStats | None = None) -> bytes:
    """Fetch ``uri`` into memory (at most ``limit`` bytes) and return its bytes."""
    check_uri(uri)
    stats = stats if stats is not None else DownloadStats()
    data = bytearray()
    num, szx = 0, size_exponent
    while True:
        response = await _fetch_block(context, uri, num, szx, attempts, attempt_timeout, stats)
        if response.code == Code.NOT_FOUND:
            raise DownloadError("invalid-uri", f"{uri}: the server has no such package (4.04)")
        if not response.code.is_successful():
            raise DownloadError("connection-lost", f"{uri}: block {num} answered {response.code.dotted}")
        size2 = response.opt.size2
        if size2 is not None and size2 > limit:
            raise DownloadError("not-enough-storage", f"package of {size2} bytes; {limit} bytes free")
        block = response.opt.block2
        payload = on_block(num, response.payload) if on_block else response.payload
        stats.blocks += 1
        if block is None:  # small enough for one message
            data = bytearray(payload)
            break
        offset = block.block_number * (1 << (block.size_exponent + 4))
        del data[offset:]
        data += payload
        if len(data) > limit:
            raise DownloadError("not-enough-storage", f"package exceeds the {limit} bytes free")
        if not block.more:
            break
        szx = block.size_exponent  # the server may pick smaller blocks than asked
        num = len(data) >> (szx + 4)
    return bytes(data)


async def _fetch_block(context: Any, uri: str, num: int, szx: int, attempts: int, timeout: float,
                       stats: DownloadStats) -> Message:
    for attempt in range(attempts):
        msg = Message(code=Code.GET, uri=uri)
        msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, szx)
        request = context.request(msg, handle_blockwise=False)
        try:
            return await response_within(request, timeout)
        except (asyncio.TimeoutError, aiocoap.error.Error) as exc:
            stats.retries += 1
            if stats.resumed_at is None:
                stats.resumed_at = []
            stats.resumed_at.append(num)
            log.info("block %d of %s lost (%s); retry %d", num, uri, type(exc).__name__, attempt + 1)
            if attempt + 1 < attempts:
                await BLOCK_BACKOFF.sleep(attempt + 1)
    raise DownloadError("connection-lost", f"{uri}: no answer for block {num} after {attempts} attempts")
