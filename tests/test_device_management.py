"""Device management over the wire: every operation, every content format.

The device is the independent aiocoap peer from conftest: its answers are bytes written
here by hand (the OMA TLV layout, JSON and CBOR built with the json and cbor2 modules), and
the server's requests are checked as bytes or as parsed JSON/CBOR structures.
"""

from __future__ import annotations

import asyncio
import json

import cbor2
import pytest
from aiocoap import Code

from lwm2m.errors import BadRequest, MethodNotAllowed, NotFound
from lwm2m.path import ObjLink, Path
from tinymlaas.server.device_client import DeviceTimeout
from tinymlaas.server.operations import DeviceError
from tests.conftest import Peer

pytestmark = pytest.mark.both_databases

MANUFACTURER = "Open Mobile Alliance"

# Read /3/0/0 in each format, as a device would send it.
READ_RESOURCE = {
    0: MANUFACTURER.encode(),
    11542: bytes([0xC8, 0x00, 0x14]) + MANUFACTURER.encode(),
    110: json.dumps([{"bn": "/3/0/0", "vs": MANUFACTURER}]).encode(),
    112: cbor2.dumps([{-2: "/3/0/0", 3: MANUFACTURER}]),
    11543: json.dumps({"bn": "/3/0/0", "e": [{"n": "", "sv": MANUFACTURER}]}).encode(),
    11544: cbor2.dumps({3: {0: {0: MANUFACTURER}}}),
}

# Read /3/0: manufacturer, battery level 100 (Integer), available power sources [1, 5]
# (multiple), error code 0, reboot (E, absent), supported binding "U".
INSTANCE = {
    Path(3, 0, 0): MANUFACTURER, Path(3, 0, 9): 100,
    Path(3, 0, 6, 0): 1, Path(3, 0, 6, 1): 5, Path(3, 0, 16): "U",
}
READ_INSTANCE = {
    11542: (bytes([0xC8, 0x00, 0x14]) + MANUFACTURER.encode()
            + bytes([0xC1, 0x09, 0x64])
            + bytes([0x86, 0x06, 0x41, 0x00, 0x01, 0x41, 0x01, 0x05])
            + bytes([0xC1, 0x10]) + b"U"),
    110: json.dumps([{"bn": "/3/0/", "n": "0", "vs": MANUFACTURER}, {"n": "9", "v": 100},
                     {"n": "6/0", "v": 1}, {"n": "6/1", "v": 5}, {"n": "16", "vs": "U"}]).encode(),
    112: cbor2.dumps([{-2: "/3/0/", 0: "0", 3: MANUFACTURER}, {0: "9", 2: 100},
                      {0: "6/0", 2: 1}, {0: "6/1", 2: 5}, {0: "16", 3: "U"}]),
    11543: json.dumps({"bn": "/3/0/", "e": [{"n": "0", "sv": MANUFACTURER}, {"n": "9", "v": 100},
                                            {"n": "6/0", "v": 1}, {"n": "6/1", "v": 5},
                                            {"n": "16", "sv": "U"}]}).encode(),
    11544: cbor2.dumps({3: {0: {0: MANUFACTURER, 9: 100, 6: {0: 1, 1: 5}, 16: "U"}}}),
}


async def registered(server, peer: Peer, version: str = "1.1", ct: str | None = None) -> str:
    root = f'</>;rt="oma.lwm2m";ct={ct},' if ct else ""
    query = ("lwm2m=" + version,) if version != "1.0" else ()
    resp = await peer.register("dev", (root + "</1/0>,</3/0>").encode(), query)
    assert resp.code == Code.CREATED
    return "dev"


@pytest.mark.parametrize("fmt", sorted(READ_RESOURCE))
async def test_read_resource_every_format(server, peer: Peer, fmt):
    ep = await registered(server, peer)
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, READ_RESOURCE[fmt], fmt)
    content = await server.read(ep, Path(3, 0, 0), fmt=fmt)
    assert content == {Path(3, 0, 0): MANUFACTURER}
    assert peer.seen[-1].accept == fmt and peer.seen[-1].code == Code.GET


@pytest.mark.parametrize("fmt", sorted(READ_INSTANCE))
async def test_read_instance_every_format(server, peer: Peer, fmt):
    ep = await registered(server, peer)
    peer.answer(Code.GET, "/3/0", Code.CONTENT, READ_INSTANCE[fmt], fmt)
    assert await server.read(ep, Path(3, 0), fmt=fmt) == INSTANCE


async def test_read_opaque(server, peer: Peer):
    ep = await registered(server, peer)
    peer.answer(Code.GET, "/5/0/0", Code.CONTENT, b"\x00\x01\xfe\xff", 42)
    assert await server.read(ep, Path(5, 0, 0), fmt=42) == {Path(5, 0, 0): b"\x00\x01\xfe\xff"}


@pytest.mark.parametrize("version,ct,expected", [
    ("1.0", None, 11542), ("1.0", "1542", 1542), ("1.1", None, 110), ("1.2", None, 110),
    ("1.1", '"112 11542"', 112), ("1.2", "11544", 11544),
])
async def test_accept_chosen_from_registration(server, peer: Peer, version, ct, expected):
    ep = await registered(server, peer, version, ct)
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, READ_RESOURCE.get(expected, READ_RESOURCE[11542]), expected)
    assert await server.read(ep, Path(3, 0, 0)) == {Path(3, 0, 0): MANUFACTURER}
    assert peer.seen[-1].accept == expected  # never omitted


# Write /1/0/1 (lifetime) = 300 as each format must put it on the wire.
def written(fmt: int, payload: bytes):
    return {
        0: lambda: payload.decode(),
        11542: lambda: payload.hex(),
        110: lambda: [{k: v for k, v in rec.items()} for rec in json.loads(payload)],
        112: lambda: cbor2.loads(payload),
        11543: lambda: json.loads(payload),
        11544: lambda: cbor2.loads(payload),
    }[fmt]()


def absolute_senml(records: list[dict], name_key, base_key) -> dict[str, object]:
    out, base = {}, ""
    for rec in records:
        base = rec.get(base_key, base)
        out[base + rec.get(name_key, "")] = next(v for k, v in rec.items() if k not in (name_key, base_key))
    return out


@pytest.mark.parametrize("fmt", [0, 11542, 110, 112, 11543, 11544])
async def test_write_resource_every_format(server, peer: Peer, fmt):
    ep = await registered(server, peer)
    peer.answer(Code.PUT, "/1/0/1", Code.CHANGED)
    await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): 300}, fmt=fmt)
    seen = peer.seen[-1]
    assert seen.code == Code.PUT and seen.content_format == fmt
    got = written(fmt, seen.payload)
    if fmt == 0:
        assert got == "300"
    elif fmt == 11542:
        assert got == "c201012c"  # resource 1, 2-byte value 0x012C
    elif fmt == 110:
        assert absolute_senml(got, "n", "bn") == {"/1/0/1": 300}
    elif fmt == 112:
        assert absolute_senml(got, 0, -2) == {"/1/0/1": 300}
    elif fmt == 11543:
        base = got.get("bn", "")
        assert {base + e.get("n", ""): e["v"] for e in got["e"]} == {"/1/0/1": 300}
    else:
        flat = {}

        def walk(prefix, node):
            for k, v in node.items():
                keys = k if isinstance(k, (list, tuple)) else [k]
                p = prefix + [str(x) for x in keys]
                walk(p, v) if isinstance(v, dict) else flat.__setitem__("/" + "/".join(p), v)
        walk([], got)
        assert flat == {"/1/0/1": 300}


async def test_partial_update_is_post_on_instance(server, peer: Peer):
    ep = await registered(server, peer, "1.0")
    peer.answer(Code.POST, "/1/0", Code.CHANGED)
    await server.write(ep, Path(1, 0), {Path(1, 0, 1): 60, Path(1, 0, 6): True}, replace=False)
    seen = peer.seen[-1]
    assert seen.code == Code.POST and seen.content_format == 11542
    assert seen.payload == bytes([0xC1, 0x01, 0x3C, 0xC1, 0x06, 0x01])


async def test_write_type_checked_before_sending(server, peer: Peer):
    ep = await registered(server, peer)
    with pytest.raises(BadRequest, match="/1/0/1"):
        await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): "soon"})
    with pytest.raises(MethodNotAllowed, match="/3/0/0"):
        await server.write(ep, Path(3, 0, 0), {Path(3, 0, 0): "ACME"})
    with pytest.raises(NotFound):
        await server.write(ep, Path(3, 0, 999), {Path(3, 0, 999): 1})
    assert peer.seen == []  # nothing went out


async def test_execute_with_arguments(server, peer: Peer):
    ep = await registered(server, peer)
    peer.answer(Code.POST, "/3/0/4", Code.CHANGED)
    await server.execute(ep, Path(3, 0, 4), "0='now',1")
    assert peer.seen[-1].payload == b"0='now',1" and peer.seen[-1].code == Code.POST


async def test_discover(server, peer: Peer):
    ep = await registered(server, peer)
    peer.answer(Code.GET, "/3/0", Code.CONTENT, b"</3/0>;pmin=10,</3/0/0>,</3/0/6>;dim=2,</3/0/9>", 40)
    links = await server.discover(ep, Path(3, 0))
    assert peer.seen[-1].accept == 40
    assert [link.uri for link in links] == ["/3/0", "/3/0/0", "/3/0/6", "/3/0/9"]
    assert links[2].get("dim") == "2"


async def test_write_attributes(server, peer: Peer):
    ep = await registered(server, peer)
    peer.answer(Code.PUT, "/3/0/9", Code.CHANGED)
    await server.write_attributes(ep, Path(3, 0, 9), {"pmin": 10, "pmax": 60, "gt": 50.5, "st": None})
    seen = peer.seen[-1]
    assert seen.code == Code.PUT and seen.payload == b""
    assert seen.query == ("pmin=10", "pmax=60", "gt=50.5", "st")
    with pytest.raises(BadRequest, match="unknown attribute"):
        await server.write_attributes(ep, Path(3, 0, 9), {"bogus": 1})


async def test_create_and_delete(server, peer: Peer):
    ep = await registered(server, peer, "1.0")

    def created(request):
        from aiocoap import Message
        return Message(code=Code.CREATED, location_path=("1", "2"))
    peer.responses[(Code.POST, "/1")] = created
    location = await server.create(ep, Path(1), {Path(1, 2, 0): 102, Path(1, 2, 1): 600})
    assert location == "/1/2"
    seen = peer.seen[-1]
    # an object-instance TLV (id 2) wrapping short server id 102 and lifetime 600
    assert seen.payload == bytes([0x07, 0x02, 0xC1, 0x00, 0x66, 0xC2, 0x01, 0x02, 0x58])
    peer.answer(Code.DELETE, "/1/2", Code.DELETED)
    await server.delete(ep, Path(1, 2))
    assert peer.seen[-1].code == Code.DELETE and peer.seen[-1].path == "/1/2"


async def test_device_errors_and_timeouts(server, peer: Peer):
    ep = await registered(server, peer)
    with pytest.raises(DeviceError, match="4.04") as info:
        await server.read(ep, Path(3, 0, 0))  # no canned answer: the device says 4.04
    assert info.value.code == Code.NOT_FOUND
    peer.answer(Code.GET, "/3/0/1", Code.INTERNAL_SERVER_ERROR, b"boom")
    with pytest.raises(DeviceError, match="boom"):
        await server.read(ep, Path(3, 0, 1))
    with pytest.raises(NotFound, match="not registered"):
        await server.read("nobody", Path(3, 0))

    async def silent(request):
        await asyncio.sleep(30)
    peer.responses[(Code.GET, "/3/0/0")] = silent  # the device goes silent
    with pytest.raises(DeviceTimeout):
        await server.read(ep, Path(3, 0, 0), timeout=1.0)


async def test_objlink_and_bad_payload(server, peer: Peer):
    ep = await registered(server, peer)
    peer.answer(Code.GET, "/1/0/99", Code.CONTENT, json.dumps([{"bn": "/1/0/99", "vlo": "3:0"}]).encode(), 110)
    assert await server.read(ep, Path(1, 0, 99)) == {Path(1, 0, 99): ObjLink(3, 0)}
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, b"[{not json", 110)
    with pytest.raises(BadRequest, match="110|SenML"):
        await server.read(ep, Path(3, 0, 0))
