"""The registration interface over loopback, against an independent aiocoap peer.

Checks codes and options on the wire and the state in the database after each step.
"""

from __future__ import annotations

import asyncio

import pytest
from aiocoap import Code
from sqlalchemy import select

from tinymlaas.store.tables import Device, Event, Registration
from tests.conftest import Peer

pytestmark = pytest.mark.both_databases


def db_rows(server, table):
    return server.store.read_sync(lambda c: list(c.execute(select(table.__table__))))


def events(server, kind=None):
    return [e for e in db_rows(server, Event) if kind is None or e.kind == kind]


async def test_register_update_deregister(server, peer: Peer):
    resp = await peer.register("node-1", b'</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</33100/0>',
                               ("lt=300", "lwm2m=1.1", "b=U"))
    assert resp.code == Code.CREATED
    assert resp.opt.location_path[0] == "rd" and len(resp.opt.location_path) == 2
    reg_id = resp.opt.location_path[1]
    [row] = db_rows(server, Registration)
    assert (row.id, row.endpoint, row.lifetime, row.binding, row.lwm2m_version) == (reg_id, "node-1", 300, "U", "1.1")
    assert row.address.endswith(str(peer.context.request_interfaces[0].token_interface.message_interface._local_port()))
    assert "</33100/0>" in row.links
    assert server.registrations.by_endpoint["node-1"].content_formats == (110,)

    resp = await peer.update(("lt=600",), b"</1/0>,</3/0>,</5/0>")
    assert resp.code == Code.CHANGED
    [row] = db_rows(server, Registration)
    assert row.lifetime == 600 and "</5/0>" in row.links and row.updated_at >= row.registered_at
    assert events(server, "updated")[0].detail["lifetime"] == 600

    resp = await peer.deregister()
    assert resp.code == Code.DELETED
    assert db_rows(server, Registration) == []
    assert [d.endpoint for d in db_rows(server, Device)] == ["node-1"]  # the device is remembered
    assert [e.kind for e in events(server)] == ["registered", "updated", "deregistered"]
    resp = await peer.update()
    assert resp.code == Code.NOT_FOUND


async def test_defaults_and_queue_mode(server, peer: Peer):
    assert (await peer.register("d", b"</3/0>")).code == Code.CREATED
    reg = server.registrations.by_endpoint["d"]
    assert (reg.lifetime, reg.binding, reg.lwm2m_version, reg.queue_mode) == (86400, "U", "1.0", False)
    assert (await peer.register("q11", b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    assert server.registrations.by_endpoint["q11"].queue_mode
    assert (await peer.register("q10", b"</3/0>", ("b=UQ",))).code == Code.CREATED
    assert server.registrations.by_endpoint["q10"].queue_mode
    assert (await peer.register("s", b"</3/0>", ("lwm2m=1.1", "b=US", "sms=+15550001"))).code == Code.CREATED
    assert server.registrations.by_endpoint["s"].sms == "+15550001"


async def test_reregistration_replaces(server, peer: Peer):
    first = (await peer.register("dup", b"</3/0>")).opt.location_path[1]
    second = (await peer.register("dup", b"</3/0>,</5/0>")).opt.location_path[1]
    assert first != second
    rows = db_rows(server, Registration)
    assert [r.id for r in rows] == [second]
    assert first not in server.registrations.by_id
    assert [e.kind for e in events(server)] == ["registered", "replaced", "registered"]


async def test_unsupported_version_is_4_12(server, peer: Peer):
    resp = await peer.register("old", b"</3/0>", ("lwm2m=2.0",))
    assert resp.code == Code.PRECONDITION_FAILED
    assert b"lwm2m" in resp.payload
    assert db_rows(server, Registration) == [] and events(server) == []


@pytest.mark.parametrize("query,links,code", [
    ((), b"</3/0>", Code.BAD_REQUEST),                       # no ep (the helper adds ep; see below)
    (("lt=abc",), b"</3/0>", Code.BAD_REQUEST),
    (("lt=-5",), b"</3/0>", Code.BAD_REQUEST),
    (("lt=0",), b"</3/0>", Code.BAD_REQUEST),
    (("b=X",), b"</3/0>", Code.BAD_REQUEST),
    (("lt=1", "lt=2"), b"</3/0>", Code.BAD_REQUEST),
    (("Q=1",), b"</3/0>", Code.BAD_REQUEST),
    ((), b"</3/0", Code.BAD_REQUEST),                          # unterminated link
    ((), b'</3/0>;title="x', Code.BAD_REQUEST),               # unterminated quote
    ((), b"\xff\xfe\x00", Code.BAD_REQUEST),                   # not UTF-8
    ((), b"", Code.BAD_REQUEST),                               # no payload
])
async def test_malformed_register_is_4_00(server, peer: Peer, query, links, code):
    if query == () and links == b"</3/0>":
        resp = await peer.request(Code.POST, "/rd", (), links)  # no ep at all
    else:
        resp = await peer.register("bad", links, query)
    assert resp.code == code, resp.payload
    assert resp.payload  # a diagnostic says what was wrong
    assert db_rows(server, Registration) == [] and db_rows(server, Device) == []


async def test_wrong_content_format_and_oversize(server, peer: Peer):
    resp = await peer.request(Code.POST, "/rd", ("ep=x",), b"</3/0>", cf=0)
    assert resp.code == Code.UNSUPPORTED_CONTENT_FORMAT
    big = b",".join(b"</%d/0>" % i for i in range(4000))  # > 16 KiB, sent with Block1
    resp = await peer.register("huge", big)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert db_rows(server, Registration) == []


async def test_register_with_block1(server, peer: Peer):
    links = b",".join(b"</%d/0>" % i for i in range(3300, 3500))  # ~2 KB: more than one block
    assert len(links) > 1024
    resp = await peer.register("blocky", links)
    assert resp.code == Code.CREATED
    [row] = db_rows(server, Registration)
    assert row.links.encode() == links


async def test_lifetime_expiry(server, peer: Peer):
    assert (await peer.register("short", b"</3/0>", ("lt=1",))).code == Code.CREATED
    for _ in range(50):
        await asyncio.sleep(0.1)
        if "short" not in server.registrations.by_endpoint:
            break
    assert "short" not in server.registrations.by_endpoint
    assert db_rows(server, Registration) == []
    assert [e.kind for e in events(server)] == ["registered", "expired"]
    assert (await peer.update()).code == Code.NOT_FOUND


async def test_update_keeps_registration_alive(server, peer: Peer):
    assert (await peer.register("alive", b"</3/0>", ("lt=1",))).code == Code.CREATED
    for _ in range(6):
        await asyncio.sleep(0.4)
        assert (await peer.update()).code == Code.CHANGED
    assert "alive" in server.registrations.by_endpoint


async def test_wrong_method_and_path(server, peer: Peer):
    assert (await peer.request(Code.GET, "/rd")).code == Code.METHOD_NOT_ALLOWED
    assert (await peer.request(Code.POST, "/rd/a/b")).code == Code.NOT_FOUND
    assert (await peer.request(Code.GET, "/nothing")).code == Code.NOT_FOUND
    assert (await peer.request(Code.POST, "/rd/unknown-id")).code == Code.NOT_FOUND
