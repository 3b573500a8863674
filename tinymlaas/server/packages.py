"""Packages the server offers for pull delivery: ``coap://<server>/p/<token>``, served with Block2.

``publish`` stores a package under a fresh random token and returns the path; the URI a device
gets stays short (under 128 bytes: some clients overflow on longer Package URIs). A device
may ask for any block in any order, at any time, so a dropped transfer resumes from its last
good block: ``handle`` answers each Block2 request with that block, sliced from the one stored
copy (``RootResource`` leaves package requests out of aiocoap's block-wise assembly, whose
Block2 cache would keep a copy per downloading device and answer a late block 4.08 once that
copy expired). Tokens expire after ``ttl`` seconds or when revoked; an unknown or expired token
is 4.04. Responses carry Size2 so a device can refuse a package its flash cannot hold before
downloading it; a block past the end is 4.00, BERT (SZX 7, reserved over UDP and DTLS) 4.02.

The package is served as application/octet-stream (content format 42, the bytes as they are);
a request whose Accept names another format gets 4.06 naming the one offered. Packages live
in memory; the registry of published packages is not persisted.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

PREFIX = "p"
DEFAULT_TTL_S = 3600.0
OFFERED = 42  # application/octet-stream


@dataclass
class Offer:
    data: bytes
    expires: float
    downloads: int = 0  # requests for block 0 (starts of a download)
    blocks_served: int = 0


class PackageOffers:
    def __init__(self) -> None:
        self.offers: dict[str, Offer] = {}

    def publish(self, data: bytes, ttl: float = DEFAULT_TTL_S) -> str:
        """Offer ``data``; returns the URI path (``/p/<token>``)."""
        self._expire()
        token = secrets.token_urlsafe(9)
        self.offers[token] = Offer(data, time.time() + ttl)
        return f"/{PREFIX}/{token}"

    def revoke(self, path: str) -> None:
        self.offers.pop(path.rsplit("/", 1)[-1], None)

    def offer(self, path: str) -> Offer | None:
        return self.offers.get(path.rsplit("/", 1)[-1])

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, o in self.offers.items() if o.expires < now]:
            del self.offers[token]

    def handle(self, request: Message, subpath: tuple[str, ...]) -> Message:
        if request.code != Code.GET:
            return Message(code=Code.METHOD_NOT_ALLOWED, payload=b"packages are read with GET")
        offer = self.offers.get(subpath[0]) if len(subpath) == 1 else None
        if offer is None or offer.expires < time.time():
            return Message(code=Code.NOT_FOUND, payload=b"no such package (unknown or expired token)")
        accept = request.opt.accept
        if accept is not None and int(accept) != OFFERED:
            why = f"package offered as application/octet-stream ({OFFERED}), not {int(accept)}"
            return Message(code=Code.NOT_ACCEPTABLE, payload=why.encode())
        data, block = offer.data, request.opt.block2
        if block is None:
            if len(data) <= request.remote.maximum_payload_size:
                offer.downloads += 1
                offer.blocks_served += 1
                response = Message(code=Code.CONTENT, payload=data, content_format=OFFERED)
                response.opt.size2 = len(data)
                return response
            block = BlockOption.BlockwiseTuple(0, False, min(request.remote.maximum_block_size_exp, 6))
        if block.size_exponent == 7:
            return Message(code=Code.BAD_OPTION, payload=b"Block2 SZX 7 (BERT) is for reliable transports only")
        start = block.block_number * block.size
        if start >= len(data) and block.block_number > 0:
            return Message(code=Code.BAD_REQUEST, payload=f"Block2 {block.block_number} of {block.size} bytes is "
                                                           f"past the package's {len(data)} bytes".encode())
        end = min(start + block.size, len(data))
        if block.block_number == 0:
            offer.downloads += 1
        offer.blocks_served += 1
        response = Message(code=Code.CONTENT, payload=data[start:end], content_format=OFFERED)
        response.opt.block2 = (block.block_number, end < len(data), block.size_exponent)
        response.opt.size2 = len(data)
        return response
