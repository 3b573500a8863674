"""Each protocol bound of ``tinymlaas.server.limits`` at work over loopback, and its counter.

Block1: an announced oversize (Size1) is 4.13 at block 0 with nothing buffered; an oversize
that is not announced is 4.13 at the block that would pass the limit, before it is stored; a
block out of order is 4.08 (aiocoap's own spool answers 5.00); the half-open cap evicts the
least recently active transfer per source and in total. Block2: an endless answer from a
device is cut at the byte limit, a slow one at the time limit, and a transfer stops when the
request that wanted it is cancelled. Requests in flight per device, registration rate limits
(4.29 with Max-Age) and registration ids of 80 random bits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.resource import Resource
from sqlalchemy import select

from lwm2m.errors import LwM2MError
from lwm2m.path import Path as LwPath
from tinymlaas.server.blockwise import DeviceAnswerTooLarge, DeviceAnswerTooSlow
from tinymlaas.server.limits import DeviceBusy, Limits, TokenBuckets
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import Registration
from tests.conftest import Peer, eventually

LINKS = b"</1/0>,</3/0>"


async def make_server(tmp_path: Path, **limits: Any) -> LwM2MServer:
    srv = LwM2MServer(f"sqlite:///{tmp_path / 'b.db'}", read_capabilities=False,
                      limits=replace(Limits(), **limits))
    await srv.start("127.0.0.1", 0)
    return srv


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


def block(server: LwM2MServer, num: int, more: bool, payload: bytes, szx: int = 4, size1: int | None = None,
          ep: str = "blk") -> Message:
    msg = Message(code=Code.POST, payload=payload,
                  uri=f"coap://127.0.0.1:{server.address[1]}/rd?ep={ep}")
    msg.opt.content_format = 40
    msg.opt.block1 = (num, more, szx)
    if size1 is not None:
        msg.opt.size1 = size1
    return msg


async def send(ctx: Any, msg: Message) -> Message:
    return await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 10)


def spool(server: LwM2MServer) -> Any:
    return server.context.serversite._block1  # the BoundedBlock1Spool aiocoap assembles with


# -- Block1 -----------------------------------------------------------------------------------

async def test_block1_size1_over_the_limit_is_413_before_anything_is_buffered(tmp_path, client):
    server = await make_server(tmp_path)
    try:
        resp = await send(client, block(server, 0, True, b"<" * 16, szx=0, size1=4_200_000))
        assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE
        assert resp.opt.size1 == server.limits.block1_max_bytes  # RFC 7959 2.9.3: the size we take
        assert b"4200000" in resp.payload and b"16384" in resp.payload
        assert spool(server).buffered_bytes == 0 and len(spool(server)._pending) == 0
        assert server.metrics.counters["block1_too_large"] == 1
    finally:
        await server.stop()


async def test_block1_accumulated_size_is_413_at_the_block_that_passes_the_limit(tmp_path, client):
    server = await make_server(tmp_path, block1_max_bytes=1024)
    try:
        chunk = b"</3/0>,</4/0>,</5" + b"0" * 47  # 64 bytes, szx 2
        seen_max = 0
        for n in range(16):
            resp = await send(client, block(server, n, True, chunk, szx=2))
            assert resp.code == Code.CONTINUE, (n, resp)
            seen_max = max(seen_max, spool(server).buffered_bytes)
        resp = await send(client, block(server, 16, True, chunk, szx=2))  # byte 1024 onwards: over
        assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 1024
        assert seen_max == 1024 and spool(server).buffered_bytes == 0  # never more than the limit held
        assert server.store.read_sync(lambda c: list(c.execute(select(Registration.__table__)))) == []
    finally:
        await server.stop()


async def test_block1_out_of_order_is_408_and_the_transfer_can_go_on(tmp_path, client):
    server = await make_server(tmp_path)
    try:
        links = b",".join(b"</%d/0>" % i for i in range(3000, 3016))  # 159 bytes: 3 blocks of 64
        parts = [links[i:i + 64] for i in range(0, len(links), 64)]
        assert (await send(client, block(server, 0, True, parts[0], szx=2))).code == Code.CONTINUE
        resp = await send(client, block(server, 2, False, parts[2], szx=2))  # block 1 skipped
        assert resp.code == Code.REQUEST_ENTITY_INCOMPLETE and b"expected byte 64" in resp.payload
        assert (await send(client, block(server, 1, True, parts[1], szx=2))).code == Code.CONTINUE
        resp = await send(client, block(server, 2, False, parts[2], szx=2))
        assert resp.code == Code.CREATED
        assert server.registrations.by_endpoint["blk"].links.encode() == links
        resp = await send(client, block(server, 5, True, parts[0], szx=2))  # no block 0 for this one
        assert resp.code == Code.REQUEST_ENTITY_INCOMPLETE
        assert server.metrics.counters["block1_incomplete"] == 2
    finally:
        await server.stop()


async def test_half_open_cap_evicts_the_oldest_per_source_and_in_total(tmp_path, client):
    server = await make_server(tmp_path, block1_per_source=3, block1_total=4)
    links = b",".join(b"</%d/0>" % i for i in range(3000, 3008))  # 71 bytes: blocks of 64 and 7
    first, rest = links[:64], links[64:]
    try:
        for i in range(4):  # four transfers from one source: the first is evicted
            resp = await send(client, block(server, 0, True, first, szx=2, ep=f"h{i}"))
            assert resp.code == Code.CONTINUE
        assert len(spool(server)._pending) == 3
        assert server.metrics.counters["block1_evicted"] == 1
        resp = await send(client, block(server, 1, False, rest, szx=2, ep="h0"))
        assert resp.code == Code.REQUEST_ENTITY_INCOMPLETE  # h0 was evicted
        resp = await send(client, block(server, 1, False, rest, szx=2, ep="h3"))
        assert resp.code == Code.CREATED  # the newest went through
        other = await aiocoap.Context.create_client_context()  # a second source... on loopback the
        try:                                                   # same address: the total cap applies
            for i in range(4, 9):
                resp = await send(other, block(server, 0, True, first, szx=2, ep=f"h{i}"))
                assert resp.code == Code.CONTINUE
            assert len(spool(server)._pending) <= 4
        finally:
            await other.shutdown()
    finally:
        await server.stop()


async def test_half_open_transfers_expire(tmp_path, client):
    server = await make_server(tmp_path, block1_timeout_s=0.2)
    try:
        assert (await send(client, block(server, 0, True, b"x" * 64, szx=2))).code == Code.CONTINUE
        await asyncio.sleep(0.3)
        resp = await send(client, block(server, 1, False, b"y", szx=2))
        assert resp.code == Code.REQUEST_ENTITY_INCOMPLETE
        assert server.metrics.counters["block1_expired"] == 1
    finally:
        await server.stop()


async def test_a_whole_registration_in_blocks_of_16_bytes(tmp_path, client):
    """The smallest blocks: 1,000 of them assembled (a list joined once, not bytes +=)."""
    server = await make_server(tmp_path)
    try:
        links = b",".join(b"</%d/0>" % i for i in range(10000, 12000))[:16000]
        links = links[:links.rindex(b",")]
        parts = [links[i:i + 16] for i in range(0, len(links), 16)]
        for n, part in enumerate(parts):
            resp = await send(client, block(server, n, n < len(parts) - 1, part, szx=0))
        assert resp.code == Code.CREATED
        assert server.registrations.by_endpoint["blk"].links.encode() == links
    finally:
        await server.stop()


# -- Block2 from devices ----------------------------------------------------------------------

class EndlessDevice(Resource):
    """GET /3/0 answers block after block, always with "more" (and a Size2 if asked to)."""

    def __init__(self, size2: int | None = None, delay_s: float = 0.0) -> None:
        super().__init__()
        self.blocks: list[int] = []
        self.size2, self.delay_s = size2, delay_s

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False  # answer every block ourselves

    async def render(self, request: Message) -> Message:
        if tuple(request.opt.uri_path) == ("rd",):
            return Message(code=Code.CREATED)
        num = request.opt.block2.block_number if request.opt.block2 else 0
        self.blocks.append(num)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        msg = Message(code=Code.CONTENT, payload=b"A" * 1024, content_format=0)
        msg.opt.block2 = (num, True, 6)
        if self.size2 is not None and num == 0:
            msg.opt.size2 = self.size2
        return msg


async def device_of(server: LwM2MServer, resource: EndlessDevice) -> tuple[Any, Peer]:
    ctx = await aiocoap.Context.create_server_context(resource, bind=("127.0.0.1", 0), transports=["udp6"])
    peer = Peer(context=ctx, server=server.address)
    assert (await peer.register("endless", LINKS, ("lwm2m=1.1",))).code == Code.CREATED
    return ctx, peer


async def test_endless_block2_is_cut_at_the_byte_limit(tmp_path):
    server = await make_server(tmp_path, block2_max_bytes=32 * 1024)
    dev = EndlessDevice()
    ctx, _ = await device_of(server, dev)
    try:
        with pytest.raises(DeviceAnswerTooLarge, match="32768 bytes"):
            await server.read("endless", LwPath.parse("/3/0"), fmt=0, timeout=30)
        asked = len(dev.blocks)
        assert asked == 33  # blocks 0..32: the 33rd takes it past 32 KiB, nothing more is asked
        await asyncio.sleep(0.3)
        assert len(dev.blocks) == asked
        assert server.metrics.counters["block2_too_large"] == 1
    finally:
        await ctx.shutdown()
        await server.stop()


async def test_block2_size2_over_the_limit_is_refused_at_block_0(tmp_path):
    server = await make_server(tmp_path)
    dev = EndlessDevice(size2=50_000_000)
    ctx, _ = await device_of(server, dev)
    try:
        with pytest.raises(DeviceAnswerTooLarge, match="50000000 bytes"):
            await server.read("endless", LwPath.parse("/3/0"), fmt=0)
        assert dev.blocks == [0]
    finally:
        await ctx.shutdown()
        await server.stop()


async def test_endless_block2_stops_when_the_request_is_cancelled(tmp_path):
    server = await make_server(tmp_path, block2_max_bytes=64 * 1024 * 1024)
    dev = EndlessDevice()
    ctx, _ = await device_of(server, dev)
    try:
        reading = asyncio.create_task(server.read("endless", LwPath.parse("/3/0"), fmt=0, timeout=60))
        assert await eventually(lambda: len(dev.blocks) >= 20)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await asyncio.sleep(0.1)
        stopped_at = len(dev.blocks)
        await asyncio.sleep(0.5)
        assert len(dev.blocks) <= stopped_at + 1  # at most the block already asked for
        assert server.metrics.counters["block2_abandoned"] == 1
        assert server.slots.in_flight("endless") == 0
    finally:
        await ctx.shutdown()
        await server.stop()


async def test_endless_block2_stops_at_the_request_timeout(tmp_path):
    server = await make_server(tmp_path, block2_max_bytes=64 * 1024 * 1024)
    dev = EndlessDevice()
    ctx, _ = await device_of(server, dev)
    try:
        with pytest.raises(LwM2MError, match="no response within 0.5 s"):
            await server.read("endless", LwPath.parse("/3/0"), fmt=0, timeout=0.5)
        stopped_at = len(dev.blocks)
        await asyncio.sleep(0.5)
        assert len(dev.blocks) <= stopped_at + 1
    finally:
        await ctx.shutdown()
        await server.stop()


async def test_slow_block2_is_cut_at_the_time_limit(tmp_path):
    server = await make_server(tmp_path, block2_max_s=0.5)
    dev = EndlessDevice(delay_s=0.1)
    ctx, _ = await device_of(server, dev)
    try:
        with pytest.raises(DeviceAnswerTooSlow, match="more than 0.5 s"):
            await server.read("endless", LwPath.parse("/3/0"), fmt=0, timeout=30)
        assert 3 <= len(dev.blocks) <= 8
        assert server.metrics.counters["block2_too_slow"] == 1
    finally:
        await ctx.shutdown()
        await server.stop()


# -- requests in flight per device ------------------------------------------------------------

async def test_requests_in_flight_per_device_are_limited(tmp_path):
    server = await make_server(tmp_path, device_in_flight=2, device_waiting=2)

    class Slow(EndlessDevice):
        active = 0
        most = 0

        async def render(self, request: Message) -> Message:
            if tuple(request.opt.uri_path) == ("rd",):
                return Message(code=Code.CREATED)
            Slow.active += 1
            Slow.most = max(Slow.most, Slow.active)
            await asyncio.sleep(0.3)
            Slow.active -= 1
            return Message(code=Code.CONTENT, payload=b"ACME", content_format=0)

    dev = Slow()
    ctx, _ = await device_of(server, dev)
    try:
        path = LwPath.parse("/3/0/0")
        reads = [asyncio.create_task(server.read("endless", path, fmt=0, timeout=5)) for _ in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(DeviceBusy, match="2 requests in flight and 2 waiting"):
            await server.read("endless", path, fmt=0, timeout=5)
        results = await asyncio.gather(*reads)
        assert all(r == {path: "ACME"} for r in results)
        assert Slow.most == 2  # never more than the limit at the device
        assert server.metrics.counters["device_requests_waited"] == 2
        assert server.metrics.counters["device_requests_refused"] == 1
    finally:
        await ctx.shutdown()
        await server.stop()


# -- registration ids and rate limits ---------------------------------------------------------

async def test_registration_ids_have_80_random_bits(server, peer: Peer):
    ids = set()
    for i in range(20):
        resp = await peer.register(f"id-{i}", LINKS)
        ids.add(resp.opt.location_path[1])
    assert len(ids) == 20 and all(len(i) == 20 and int(i, 16) >= 0 for i in ids)


async def test_registrations_per_source_are_rate_limited_with_max_age(tmp_path):
    server = await make_server(tmp_path, registrations_burst=3, registrations_per_s=0.5)
    ctx = await aiocoap.Context.create_server_context(Resource(), bind=("127.0.0.1", 0), transports=["udp6"])
    peer = Peer(context=ctx, server=server.address)
    try:
        codes = [(await peer.register(f"r{i}", LINKS)) for i in range(5)]
        assert [r.code for r in codes] == [Code.CREATED] * 3 + [Code.TOO_MANY_REQUESTS] * 2
        assert codes[3].opt.max_age == 2 and b"try again in 2 s" in codes[3].payload
        assert len(server.registrations) == 3
        assert server.metrics.counters["registrations_rate_limited"] == 2
    finally:
        await ctx.shutdown()
        await server.stop()


async def test_updates_to_unknown_ids_are_rate_limited(tmp_path):
    server = await make_server(tmp_path, unknown_id_burst=5, unknown_id_per_s=1.0)
    ctx = await aiocoap.Context.create_server_context(Resource(), bind=("127.0.0.1", 0), transports=["udp6"])
    peer = Peer(context=ctx, server=server.address)
    try:
        assert (await peer.register("known", LINKS)).code == Code.CREATED
        known = peer.location
        guesses = []
        for i in range(8):
            peer.location = ("rd", f"{i:020x}")
            guesses.append((await (peer.update() if i % 2 else peer.deregister())).code)
        assert guesses == [Code.NOT_FOUND] * 5 + [Code.TOO_MANY_REQUESTS] * 3
        peer.location = known
        assert (await peer.update()).code == Code.CHANGED  # the real device is not held back
        assert server.metrics.counters["unknown_registration"] == 5
        assert server.metrics.counters["unknown_registration_rate_limited"] == 3
    finally:
        await ctx.shutdown()
        await server.stop()


def test_token_buckets_refill_and_stay_bounded():
    b = TokenBuckets(burst=2, per_s=1.0, sources=3)
    t = 100.0
    assert [b.take("a", t), b.take("a", t)] == [0.0, 0.0]
    assert b.take("a", t) == pytest.approx(1.0)
    assert b.take("a", t + 1.0) == 0.0  # refilled one token
    for s in "bcdef":
        b.take(s, t)
    assert len(b) == 3  # least recently seen sources forgotten


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="block1_max_bytes"):
        Limits(block1_max_bytes=0)
    with pytest.raises(ValueError, match="block2_max_s"):
        Limits(block2_max_s=float("inf"))
    assert time.monotonic() > 0


async def test_endless_block2_stops_when_the_api_client_goes_away(tmp_path):
    """The admin API's caller gives up (its HTTP connection closes): the device transfer stops."""
    import httpx

    from tinymlaas import runtime

    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'api.db'}",
                                  tmp_path / "home", read_capabilities=False,
                                  limits=replace(Limits(), block2_max_bytes=64 * 1024 * 1024))
    dev = EndlessDevice()
    ctx, _ = await device_of(running.server, dev)
    try:
        async with httpx.AsyncClient(base_url=running.api_url) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/devices/endless/read", json={"path": "/3/0", "format": 0, "timeout": 120},
                                headers={"Authorization": f"Bearer {running.token}"}, timeout=1.0)
        assert len(dev.blocks) > 10
        await asyncio.sleep(1.0)  # the API notices within its poll interval
        stopped_at = len(dev.blocks)
        await asyncio.sleep(0.5)
        assert len(dev.blocks) <= stopped_at + 1
        assert running.server.metrics.counters["block2_abandoned"] == 1
    finally:
        await ctx.shutdown()
        await running.stop()
