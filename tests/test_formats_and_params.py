"""Bytes on the wire for: opaque (CF 42) writes of one Opaque resource, content-format
negotiation when a device refuses a format, the Block2 package pull's content format,
registration parameters that are refused (and nothing stored), a Lifetime write checked before
anything is sent, lenient string decoding per value, and ``observe --count`` cancelling the
observation on the device. Devices are independent aiocoap peers answering hand-written bytes."""

from __future__ import annotations

import asyncio
import json

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption
from aiocoap.resource import ObservableResource, Site
from sqlalchemy import select

from lwm2m.errors import BadRequest
from lwm2m.path import Path, RawString
from tinymlaas.server.operations import DeviceError
from tinymlaas.store.tables import EVENTS, REGISTRATIONS
from tests.conftest import Peer, api_cli as cli, eventually
from tests.test_wire import COAP_CLIENT, needs_libcoap

PACKAGE = bytes(range(256)) * 12  # 3 KiB: Block1 at 1 KiB blocks


async def registered(peer: Peer, ep: str = "dev", links: bytes = b"</3/0>,</5/0>,</9/0>") -> None:
    assert (await peer.register(ep, links, ("lwm2m=1.1",))).code == Code.CREATED


async def test_package_push_is_opaque_raw_bytes(server, peer: Peer):
    await registered(peer)
    peer.answer(Code.PUT, "/5/0/0", Code.CHANGED)
    peer.answer(Code.PUT, "/9/0/2", Code.CHANGED)
    await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): PACKAGE})
    await server.write("dev", Path(9, 0, 2), {Path(9, 0, 2): PACKAGE[:100]})
    put = [s for s in peer.seen if s.code == Code.PUT]
    assert [(s.path, s.content_format) for s in put] == [("/5/0/0", 42), ("/9/0/2", 42)]
    assert put[0].payload == PACKAGE and put[1].payload == PACKAGE[:100]  # no SenML, no base64


async def test_refused_content_format_is_negotiated(server, peer: Peer):
    await registered(peer)
    tried: list[int | None] = []

    def picky(request: Message) -> Message:  # like a client that only takes SenML JSON for Package
        cf = request.opt.content_format
        tried.append(None if cf is None else int(cf))
        if cf == 42:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        return Message(code=Code.CHANGED)
    peer.responses[(Code.PUT, "/5/0/0")] = picky
    await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): b"\x01\x02"})
    assert tried == [42, 110]
    record = json.loads(peer.seen[-1].payload)
    assert record[0]["bn"] == "/5/0/0" and record[0]["vd"] in ("AQI", "AQI=")
    # the refusal is remembered for this registration: the next write goes straight to SenML
    await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): b"\x03"})
    assert tried == [42, 110, 110]

    accepts: list[int | None] = []

    def reader(request: Message) -> Message:  # a 1.1 client without SenML: TLV only
        accepts.append(int(request.opt.accept) if request.opt.accept is not None else None)
        if request.opt.accept != 11542:
            return Message(code=Code.NOT_ACCEPTABLE)
        return Message(code=Code.CONTENT, payload=bytes([0xC4, 0]) + b"ACME", content_format=11542)
    peer.responses[(Code.GET, "/3/0")] = reader
    assert await server.read("dev", Path(3, 0)) == {Path(3, 0, 0): "ACME"}
    assert accepts == [110, 112, 11542]
    # an explicit format is not negotiated: the device's refusal is the answer
    with pytest.raises(DeviceError, match="4.06"):
        await server.read("dev", Path(3, 0), fmt=110)


async def test_package_pull_is_octet_stream(server):
    path = server.packages.publish(PACKAGE)
    ctx = await aiocoap.Context.create_client_context()
    try:
        uri = server.package_uri(path)
        for num in (0, 1):
            msg = Message(code=Code.GET, uri=uri, accept=42)
            msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, 6)
            resp = await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 5)
            assert resp.code == Code.CONTENT and int(resp.opt.content_format) == 42
            assert resp.payload == PACKAGE[num * 1024:(num + 1) * 1024] and resp.opt.size2 == len(PACKAGE)
        resp = await asyncio.wait_for(ctx.request(Message(code=Code.GET, uri=uri, accept=110)).response, 5)
        assert resp.code == Code.NOT_ACCEPTABLE and b"octet-stream (42)" in resp.payload
    finally:
        await ctx.shutdown()


async def test_package_blocks_in_any_order_past_the_end_and_bert(server):
    """Any block, first or not, is answered from the one stored copy (no per-download cache that
    could expire and answer 4.08); a block past the end is 4.00 and BERT (SZX 7) 4.02."""
    path = server.packages.publish(PACKAGE)
    offer = server.packages.offer(path)
    ctx = await aiocoap.Context.create_client_context()

    async def block(num: int, szx: int) -> Message:
        msg = Message(code=Code.GET, uri=server.package_uri(path))
        msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, szx)
        return await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 5)

    try:
        for num, szx in ((2, 6), (47, 2), (0, 4), (5, 4)):
            resp = await block(num, szx)
            size = 2 ** (szx + 4)
            assert resp.code == Code.CONTENT and resp.payload == PACKAGE[num * size:(num + 1) * size]
            more = (num + 1) * size < len(PACKAGE)
            assert tuple(resp.opt.block2) == (num, more, szx) and resp.opt.size2 == len(PACKAGE)
        assert offer is not None and offer.downloads == 1 and offer.blocks_served == 4  # one block 0
        resp = await block(3, 6)
        assert resp.code == Code.BAD_REQUEST and b"past the package's 3072 bytes" in resp.payload
        resp = await block(0, 7)
        assert resp.code == Code.BAD_OPTION and b"BERT" in resp.payload
    finally:
        await ctx.shutdown()


@needs_libcoap
async def test_libcoap_downloads_the_package_blockwise(server, tmp_path):
    """An independent client (libcoap's coap-client, 64-byte blocks) gets the package byte for byte."""
    path = server.packages.publish(PACKAGE)
    out = tmp_path / "package.bin"
    proc = await asyncio.create_subprocess_exec(COAP_CLIENT, "-B", "20", "-b", "64", "-o", str(out),
                                                server.package_uri(path), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    text, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, text.decode()
    assert out.read_bytes() == PACKAGE
    offer = server.packages.offer(path)
    assert offer is not None and offer.downloads == 1 and offer.blocks_served == len(PACKAGE) // 64


@pytest.mark.parametrize("lt, why", [("-5", "not positive"), ("0", "not positive"),
                                     ("999999999999", "too long"), ("abc", "positive integer")])
async def test_absurd_lifetime_is_refused_and_nothing_stored(server, peer: Peer, lt: str, why: str):
    resp = await peer.register("bad-lt", b"</3/0>", (f"lt={lt}", "lwm2m=1.1"))
    assert resp.code == Code.BAD_REQUEST
    assert "lt=" in resp.payload.decode() and lt in resp.payload.decode() and why in resp.payload.decode()
    rows = server.store.read_sync(lambda c: list(c.execute(select(REGISTRATIONS))) +
                                  list(c.execute(select(EVENTS))))
    assert rows == [] and "bad-lt" not in server.registrations.by_endpoint


async def test_update_with_a_negative_lifetime_is_refused(server, peer: Peer):
    await registered(peer)
    resp = await peer.update(("lt=-1",))
    assert resp.code == Code.BAD_REQUEST and b"lt=-1" in resp.payload
    assert server.registrations.by_endpoint["dev"].lifetime == 86400


async def test_bad_sms_number_is_refused(server, peer: Peer):
    resp = await peer.register("sms", b"</3/0>", ("sms=call-me",))
    assert resp.code == Code.BAD_REQUEST and b"sms=" in resp.payload


async def test_negative_lifetime_write_never_reaches_the_device(server, peer: Peer):
    await registered(peer)
    with pytest.raises(BadRequest, match=r"/1/0/1 Lifetime -5"):
        await server.write("dev", Path(1, 0, 1), {Path(1, 0, 1): -5})
    assert peer.seen == []


async def test_a_string_that_is_not_clean_text_fails_only_itself(server, peer: Peer):
    await registered(peer)
    tlv = bytes([0xC8, 0, 8]) + b"Wakaama\0" + bytes([0xC2, 1]) + b"\xffA" + bytes([0xC1, 9, 77])
    peer.answer(Code.GET, "/3/0", Code.CONTENT, tlv, 11542)
    content = await server.read("dev", Path(3, 0), fmt=11542)
    assert content[Path(3, 0, 9)] == 77
    assert content[Path(3, 0, 0)] == RawString(b"Wakaama\0", "contains a NUL byte at byte 7")
    assert content[Path(3, 0, 1)].problem == "not UTF-8 at byte 0" and content[Path(3, 0, 1)].raw == b"\xffA"


class Battery(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.level, self.observers = 50, 0

    def update_observation_count(self, count: int) -> None:
        self.observers = count

    async def render_get(self, request: Message) -> Message:
        return Message(payload=json.dumps([{"bn": "/3/0/9", "v": self.level}]).encode(), content_format=110)


async def test_observe_count_cancels_on_the_device(live):  # noqa: F811
    running, _ = live
    site, battery = Site(), Battery()
    site.add_resource(["3", "0", "9"], battery)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    try:
        msg = Message(code=Code.POST, uri=f"coap://127.0.0.1:{running.server.address[1]}/rd", payload=b"</3/0>",
                      content_format=40, uri_query=("ep=bat", "lwm2m=1.1"))
        assert (await ctx.request(msg).response).code == Code.CREATED

        async def tick() -> None:
            for level in range(49, 30, -1):
                await asyncio.sleep(0.2)
                battery.level = level
                battery.updated_state()
        ticking = asyncio.create_task(tick())
        r = await cli(running, "observe", "bat", "/3/0/9", "--count", "2", "--json")
        assert r.exit_code == 0, r.output
        notes = [json.loads(line) for line in r.stdout.splitlines()]
        assert len([n for n in notes if "content" in n]) == 3 and notes[-1].get("cancelled") is True
        assert await eventually(lambda: battery.observers == 0)  # the device stopped observing
        assert running.server.observations.of("bat") == []
        ticking.cancel()
    finally:
        await ctx.shutdown()
