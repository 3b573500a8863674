"""Faults, per device, reproducible from a seed: what real radios and real boards do.

``Faults`` is the description (parsed from ``loss=0.3,latency=50,drop-after=5,...``); a
``FaultyLink`` applies the network part. It is a small UDP relay between the device's socket
and the server (the server sees the relay as the device, as it would see a NAT): each
datagram, in either direction, may be dropped (``loss``), delayed (``latency`` ms plus
``jitter``), or swallowed because the link is down (after ``drop-after`` block-wise
datagrams the link goes down for ``drop-for`` seconds, once; a queue-mode device sleeping
is the link being down too). ``corrupt-block`` flips one byte of that block of a pulled
package (the device-side hook ``mangle_block``); ``reboot-after`` reboots the device after
that many block-wise datagrams; ``drift`` makes the device's clock run fast or slow, so it
sends its Updates earlier or later than its lifetime asks.

Every random choice comes from ``random.Random(f"{seed}:{endpoint}")``: the same seed and the
same traffic give the same drops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, fields
from typing import Any, Callable

log = logging.getLogger(__name__)

BLOCK_OPTIONS = frozenset({23, 27})  # Block2, Block1


@dataclass(frozen=True)
class Faults:
    loss: float = 0.0
    latency: float = 0.0  # ms, one way
    jitter: float = 0.0  # ms
    drop_after: int | None = None  # block-wise datagrams before the link drops (once)
    drop_for: float = 3.0  # s
    corrupt_block: int | None = None
    reboot_after: int | None = None  # block-wise datagrams before a reboot (once)
    drift: float = 0.0  # +0.1: the clock runs 10% slow, Updates come 10% late
    seed: int = 0

    @property
    def needs_link(self) -> bool:
        return bool(self.loss or self.latency or self.jitter or self.drop_after is not None
                    or self.reboot_after is not None)

    @classmethod
    def parse(cls, text: str) -> "Faults":
        """``loss=0.3,latency=50,drop-after=5,seed=7``; an unknown or bad key raises ValueError."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = item.partition("=")
            if not sep or key not in known:
                raise ValueError(f"fault {item!r}: expected one of {', '.join(sorted(known))} as key=value")
            convert = int if known[key].name in ("drop_after", "corrupt_block", "reboot_after", "seed") else float
            try:
                values[known[key].name] = convert(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
            except ValueError:
                raise ValueError(f"fault {item!r}: {raw!r} is not a number") from None
        faults = cls(**values)
        if not 0.0 <= faults.loss < 1.0:
            raise ValueError(f"fault loss={faults.loss}: expected 0 <= loss < 1 (or a percentage)")
        return faults

    def rng(self, endpoint: str) -> random.Random:
        return random.Random(f"{self.seed}:{endpoint}")

    def mangle_block(self, num: int, payload: bytes) -> bytes:
        if self.corrupt_block is None or num != self.corrupt_block or not payload:
            return payload
        return payload[:-1] + bytes([payload[-1] ^ 0xFF])


def is_blockwise(datagram: bytes) -> bool:
    """Whether a CoAP datagram carries a Block1 or Block2 option (RFC 7252 option encoding)."""
    if len(datagram) < 4:
        return False
    pos, number = 4 + (datagram[0] & 0x0F), 0
    while pos < len(datagram) and datagram[pos] != 0xFF:
        delta, length = datagram[pos] >> 4, datagram[pos] & 0x0F
        pos += 1
        for nibble, is_delta in ((delta, True), (length, False)):
            if nibble == 13:
                nibble, pos = datagram[pos] + 13 if pos < len(datagram) else 0, pos + 1
            elif nibble == 14:
                nibble, pos = int.from_bytes(datagram[pos:pos + 2], "big") + 269, pos + 2
            elif nibble == 15:
                return False
            if is_delta:
                number += nibble
            else:
                length = nibble
        if number in BLOCK_OPTIONS:
            return True
        pos += length
    return False


class _Side(asyncio.DatagramProtocol):
    def __init__(self, link: "FaultyLink", upstream: bool) -> None:
        self.link, self.upstream = link, upstream
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link.forward(data, addr, from_server=self.upstream)


class FaultyLink:
    """The relay for one device: ``address`` is what the device uses as its server."""

    def __init__(self, endpoint: str, server: tuple[str, int], faults: Faults,
                 on_reboot: Callable[[], None] | None = None) -> None:
        self.endpoint, self.server, self.faults = endpoint, server, faults
        self.rng = faults.rng(endpoint)
        self.on_reboot = on_reboot
        self.device_addr: Any = None
        self.down_until = 0.0
        self.asleep = False
        self.blocks = 0
        self.decisions: list[str] = []  # what happened to each datagram, for tests and stats
        self._device_side: _Side | None = None
        self._server_side: _Side | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        local = ("127.0.0.1", 0)
        _, self._device_side = await loop.create_datagram_endpoint(lambda: _Side(self, False), local_addr=local)
        _, self._server_side = await loop.create_datagram_endpoint(lambda: _Side(self, True), local_addr=local)

    @property
    def address(self) -> tuple[str, int]:
        assert self._device_side is not None
        return self._device_side.transport.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def close(self) -> None:
        for side in (self._device_side, self._server_side):
            if side is not None and side.transport is not None:
                side.transport.close()

    def decide(self, data: bytes, now: float) -> str:
        """``pass``, ``loss`` or ``down`` for one datagram (advances the seeded generator)."""
        if self.asleep or now < self.down_until:
            return "down"
        if is_blockwise(data):
            self.blocks += 1
            if self.faults.drop_after is not None and self.blocks == self.faults.drop_after:
                self.down_until = now + self.faults.drop_for
                return "down"
            if self.faults.reboot_after is not None and self.blocks == self.faults.reboot_after and self.on_reboot:
                self.on_reboot()
                return "down"
        if self.faults.loss and self.rng.random() < self.faults.loss:
            return "loss"
        return "pass"

    def forward(self, data: bytes, addr: Any, from_server: bool) -> None:
        loop = asyncio.get_running_loop()
        if not from_server:
            self.device_addr = addr
        decision = self.decide(data, loop.time())
        self.decisions.append(decision)
        if decision != "pass":
            return
        side = self._device_side if from_server else self._server_side
        target = self.device_addr if from_server else self.server
        if side is None or target is None:
            return
        delay = (self.faults.latency + (self.rng.random() * self.faults.jitter if self.faults.jitter else 0)) / 1000
        if delay > 0:
            loop.call_later(delay, side.transport.sendto, data, target)
        else:
            side.transport.sendto(data, target)
