"""Malformed datagrams get the RFC 7252 answer or are dropped, counted, and logged once per source.

Hand-encoded datagrams over loopback; the bytes that come back are checked (code, message
id, token), and so is the log: no traceback (no record with exception info, nothing reaching
the event loop's exception handler) and one line per source per interval however many junk
datagrams arrive. Retention prunes the device rows nobody manages and keeps the rest.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any, AsyncIterator

import pytest
from sqlalchemy import select, update

from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICES, EVENTS
from tests.conftest import Peer

ACK, RST = 2, 3


class Wire(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


@pytest.fixture
async def wire(server) -> AsyncIterator[tuple[Any, Wire]]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        Wire, remote_addr=("127.0.0.1", server.address[1]))
    yield transport, proto
    transport.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(None)


async def answer(proto: Wire, seconds: float = 1.0) -> bytes | None:
    try:
        return await asyncio.wait_for(proto.got.get(), seconds)
    except asyncio.TimeoutError:
        return None


def opt(delta: int, value: bytes) -> bytes:
    assert delta < 13 and len(value) < 13
    return bytes([(delta << 4) | len(value)]) + value


def con_post_rd(mid: int, token: bytes, query: bytes) -> bytes:
    return bytes([0x40 | len(token), 0x02]) + struct.pack("!H", mid) + token + \
        opt(11, b"rd") + opt(1, bytes([40])) + opt(3, query) + b"\xff</3/0>"


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_invalid_utf8_in_uri_query_is_4_02_with_its_mid_and_token(server, wire, caplog, loop_errors):
    caplog.set_level(logging.INFO)
    transport, proto = wire
    transport.sendto(con_post_rd(0x1234, b"\xab\xcd", b"ep=\xff\xfe"))
    data = await answer(proto)
    assert data is not None
    assert data[0] >> 4 & 3 == ACK and data[1] == 0x82  # 4.02 Bad Option, piggybacked
    assert data[2:4] == b"\x12\x34" and data[4:6] == b"\xab\xcd"
    assert b"does not decode" in data[data.index(b"\xff") + 1:]
    assert server.metrics.counters["junk_option"] == 1
    assert tracebacks(caplog) == [] and loop_errors == []
    assert len(server.registrations) == 0


@pytest.mark.parametrize("datagram,why", [
    (b"\x49\x02\x00\x07" + b"t" * 9, "token length 9"),
    (b"\x40\x00\x00\x07\xff", "an Empty message with bytes"),
    (b"\x40\xe1\x00\x07", "a 7.01 code"),
    (b"\x40\x22\x00\x07", "a 1.02 code"),
    (b"\x40\x02\x00\x07\xbd", "an option running past the end"),
    (b"\x40\x02\x00\x07\xf0", "option delta 15 without the payload marker"),
])
async def test_confirmable_junk_is_reset(server, wire, caplog, loop_errors, datagram, why):
    caplog.set_level(logging.INFO)
    transport, proto = wire
    transport.sendto(datagram)
    data = await answer(proto)
    assert data == b"\x70\x00\x00\x07", why  # RST, code 0.00, the same message id
    assert sum(v for k, v in server.metrics.counters.items() if k.startswith("junk_")) == 1
    assert tracebacks(caplog) == [] and loop_errors == []


@pytest.mark.parametrize("datagram", [
    b"\x50\x02\x00\x08\xbd",  # NON with a truncated option
    b"\x5a\x02\x00\x08" + b"t" * 10,  # NON with token length 10
    b"\x60\x02\x00\x08",  # a request in an ACK
    b"\x70\x45\x00\x08",  # a response in a RST
    b"\x50\x02\x00\x08" + opt(11, b"rd") + opt(4, b"ep=\xc3"),  # NON with a bad UTF-8 query
    b"\x80\x02\x00\x08",  # CoAP version 2
    b"\x40",  # three bytes short of a header
])
async def test_junk_that_is_not_confirmable_is_dropped(server, wire, caplog, loop_errors, datagram):
    caplog.set_level(logging.INFO)
    transport, proto = wire
    transport.sendto(datagram)
    assert await answer(proto, 0.3) is None
    assert tracebacks(caplog) == [] and loop_errors == []


async def test_a_junk_flood_is_logged_once_per_source_and_counted(server, wire, caplog, loop_errors, peer: Peer):
    caplog.set_level(logging.INFO)
    transport, proto = wire
    for i in range(500):
        transport.sendto(con_post_rd(i, b"", b"ep=\xff" + bytes([i % 256])))
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    for _ in range(500):
        if await answer(proto, 2) is None:
            break
    assert server.metrics.counters["junk_option"] == 500
    junk_lines = [r for r in caplog.records if r.name == "tinymlaas.junk"]
    assert len(junk_lines) == 1 and "127.0.0.1" in junk_lines[0].getMessage()
    assert tracebacks(caplog) == [] and loop_errors == []
    assert (await peer.register("still-fine", b"</3/0>")).code.is_successful()


async def test_aiocoap_lines_per_datagram_are_rate_limited(server, wire, caplog):
    """aiocoap logs a warning for some odd datagrams ("New request came in while old request not
    ACKed yet"); the server context's logger lets each line through once per interval."""
    caplog.set_level(logging.INFO)
    transport, _proto = wire
    for i in range(100):  # same token, a new MID each time: aiocoap warns about each
        transport.sendto(con_post_rd(0x2000 + i, b"\x01", b"ep=dup"))
    await asyncio.sleep(1.0)
    coap_lines = [r for r in caplog.records if r.name == "tinymlaas.coap" and r.levelno >= logging.WARNING]
    assert len(coap_lines) <= 3


async def test_retention_prunes_device_rows_nobody_manages(server, peer: Peer):
    for ep in ("junk", "stale", "tagged", "profiled", "alive", "recent"):
        assert (await peer.register(ep, b"</3/0>")).code.is_successful()
        if ep not in ("alive",):
            assert (await peer.deregister()).code.is_successful()
    now = time.time()
    limits = server.limits
    old_junk = now - limits.junk_device_retention_s - 10
    old = now - limits.device_retention_s - 10

    def age(conn: Any) -> None:
        conn.execute(update(DEVICES).where(DEVICES.c.endpoint == "junk").values(last_seen=old_junk))
        conn.execute(update(DEVICES).where(DEVICES.c.endpoint == "stale").values(last_seen=old, capability_source="x"))
        conn.execute(update(DEVICES).where(DEVICES.c.endpoint == "tagged").values(last_seen=old, tags="field"))
        conn.execute(update(DEVICES).where(DEVICES.c.endpoint == "profiled").values(last_seen=old, profile="nrf52840"))
        conn.execute(update(DEVICES).where(DEVICES.c.endpoint == "alive").values(last_seen=old))
        conn.execute(CAPABILITY_SNAPSHOTS.insert().values(endpoint="stale", taken_at=old, source="x", data={}))
    server.store.write_sync(age)
    assert await server.retention.prune() == 2
    kept = server.store.read_sync(lambda c: sorted(r.endpoint for r in c.execute(select(DEVICES))))
    assert kept == ["alive", "profiled", "recent", "tagged"]
    events = server.store.read_sync(lambda c: {r.endpoint for r in c.execute(select(EVENTS))})
    assert "junk" not in events and "stale" not in events and "recent" in events
    assert server.store.read_sync(lambda c: list(c.execute(select(CAPABILITY_SNAPSHOTS)))) == []
    assert server.metrics.counters["devices_pruned"] == 2
    assert await server.retention.prune() == 0
