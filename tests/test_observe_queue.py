"""Observe / Cancel Observation and queue mode, over loopback with independent aiocoap peers."""

from __future__ import annotations

import asyncio
import json

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.resource import ObservableResource, Site
from sqlalchemy import select

from lwm2m.path import Path
from tinymlaas.server.queue import QueueDeadlineExpired
from tinymlaas.store.tables import OBSERVED_VALUES
from tests.conftest import Peer, eventually

pytestmark = pytest.mark.both_databases


class Battery(ObservableResource):
    """/3/0/9 as SenML JSON, observable; counts its observers."""

    def __init__(self) -> None:
        super().__init__()
        self.level = 90
        self.observers = 0

    def update_observation_count(self, count: int) -> None:
        self.observers = count

    async def render_get(self, request: Message) -> Message:
        body = json.dumps([{"bn": "/3/0/9", "v": self.level}]).encode()
        return Message(payload=body, content_format=110)


@pytest.fixture
async def battery_device(server):
    site = Site()
    battery = Battery()
    site.add_resource(["3", "0", "9"], battery)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    msg = Message(code=Code.POST, uri=f"coap://127.0.0.1:{server.address[1]}/rd", payload=b"</3/0>",
                  content_format=40, uri_query=("ep=bat", "lwm2m=1.1"))
    resp = await ctx.request(msg).response
    assert resp.code == Code.CREATED
    yield battery
    await ctx.shutdown()


async def test_observe_notifications_stored_and_published(server, battery_device):
    obs = await server.observations.observe("bat", Path(3, 0, 9))
    assert obs.latest == {Path(3, 0, 9): 90}
    sub = server.observations.subscribe(obs)
    for level in (80, 70):
        battery_device.level = level
        battery_device.updated_state()
        assert await asyncio.wait_for(sub.get(), 5) == {Path(3, 0, 9): level}
    rows = server.store.read_sync(lambda c: list(c.execute(select(OBSERVED_VALUES))))
    assert [(r.endpoint, r.path, r.data) for r in rows] == [("bat", "/3/0/9", {"/3/0/9": 70})]
    assert obs.notifications == 2


async def test_cancel_observation_resets_device(server, battery_device):
    obs = await server.observations.observe("bat", Path(3, 0, 9))
    assert await eventually(lambda: battery_device.observers == 1)
    sub = server.observations.subscribe(obs)
    server.observations.cancel("bat", Path(3, 0, 9))
    assert await asyncio.wait_for(sub.get(), 1) is None  # subscribers learn it ended
    battery_device.level = 10
    battery_device.updated_state()  # the next notification is answered with a Reset
    assert await eventually(lambda: battery_device.observers == 0)
    assert server.observations.of("bat") == []


async def test_deregistration_ends_observations(server, battery_device, peer):
    await server.observations.observe("bat", Path(3, 0, 9))
    reg = server.registrations.by_endpoint["bat"]
    await server.store.write(lambda c: None)
    server.registrations.remove(reg)
    server.on_deregistered(reg, "deregistered")
    assert server.observations.of("bat") == []


async def test_queue_mode_holds_until_update(server, peer: Peer):
    server.queue.awake_s = 0.2
    assert (await peer.register("sleepy", b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, json.dumps([{"bn": "/3/0/0", "vs": "ACME"}]).encode(), 110)
    await asyncio.sleep(0.3)  # the device went to sleep
    pending = asyncio.create_task(server.read("sleepy", Path(3, 0, 0), timeout=5))
    await asyncio.sleep(0.3)
    assert not pending.done() and peer.seen == [] and server.queue.held("sleepy") == 1
    assert (await peer.update()).code == Code.CHANGED  # it wakes up
    assert await asyncio.wait_for(pending, 5) == {Path(3, 0, 0): "ACME"}
    assert len(peer.seen) == 1


async def test_queue_mode_deadline(server, peer: Peer):
    server.queue.awake_s = 0.1
    assert (await peer.register("sleepy", b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    await asyncio.sleep(0.2)
    with pytest.raises(QueueDeadlineExpired, match="sleepy.*queue mode"):
        await server.read("sleepy", Path(3, 0, 0), timeout=0.5)
    assert peer.seen == [] and server.queue.held("sleepy") == 0


async def test_queue_mode_awake_window_sends_at_once(server, peer: Peer):
    assert (await peer.register("awake", b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, json.dumps([{"bn": "/3/0/0", "vs": "X"}]).encode(), 110)
    assert await server.read("awake", Path(3, 0, 0), timeout=2) == {Path(3, 0, 0): "X"}
