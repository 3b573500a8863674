"""Queue mode per TS Core 1.1 6.5 over loopback: held requests, re-registration on wake, the
awake window per server and per device, requests returned to the queue, and held requests that
survive a server restart. Devices are independent aiocoap peers (bytes on the wire) and a
simulated client with the ``reregisters`` personality (a new Register on every wake)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path as FsPath

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.resource import ObservableResource, Site
from sqlalchemy import select

from device_profiles import get_profile
from lwm2m.path import Path
from simulator.device import SimulatedDevice
from simulator.personality import personality
from tinymlaas.server.queue import QueueDeadlineExpired
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import EVENTS, HELD_REQUESTS
from tests.conftest import CatchAll, Peer, eventually

MANUFACTURER = json.dumps([{"bn": "/3/0/0", "vs": "ACME"}]).encode()


def rows(server: LwM2MServer, table=HELD_REQUESTS):
    return server.store.read_sync(lambda c: list(c.execute(select(table).order_by(table.c.id))))


async def sleepy(server: LwM2MServer, peer: Peer, ep: str = "sleepy") -> None:
    assert (await peer.register(ep, b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, MANUFACTURER, 110)


async def test_reregistration_keeps_held_requests_and_delivers_them(server: LwM2MServer, peer: Peer):
    server.queue.awake_s = 0.2
    await sleepy(server, peer)
    first = server.registrations.by_endpoint["sleepy"].id
    await asyncio.sleep(0.3)  # asleep
    pending = asyncio.create_task(server.send("sleepy", _read(), timeout=3, queue_deadline=20, durable=True))
    assert await eventually(lambda: server.queue.held("sleepy") == 1)
    assert peer.seen == []
    # it wakes with a new Register (new registration id), as Anjay does: no 5.04, delivered now
    assert (await peer.register("sleepy", b"</3/0>", ("lwm2m=1.1", "Q"))).code == Code.CREATED
    assert server.registrations.by_endpoint["sleepy"].id != first
    assert await asyncio.wait_for(pending, 5) == {Path(3, 0, 0): "ACME"}
    assert [(s.code, s.path, s.accept) for s in peer.seen] == [(Code.GET, "/3/0/0", 110)]
    (row,) = rows(server)
    assert (row.state, row.result) == ("done", {"content": {"/3/0/0": "ACME"}})
    kinds = [e.kind for e in rows(server, EVENTS)]
    assert kinds.count("registered") == 2 and "replaced" in kinds and "deregistered" not in kinds


async def test_held_requests_go_out_in_order_one_at_a_time(server: LwM2MServer, peer: Peer):
    server.queue.awake_s = 0.2
    await sleepy(server, peer)
    in_flight, most = 0, 0

    async def slow(request: Message) -> Message:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return Message(code=Code.CONTENT, payload=MANUFACTURER.replace(b"3/0/0", request.opt.uri_path[-1].encode()
                                                                       .join([b"3/0/", b""])), content_format=110)
    for rid in (0, 1, 2):
        peer.responses[(Code.GET, f"/3/0/{rid}")] = slow
    await asyncio.sleep(0.3)
    tasks = [asyncio.create_task(server.read("sleepy", Path(3, 0, rid), timeout=3, queue_deadline=10))
             for rid in (2, 0, 1)]
    assert await eventually(lambda: server.queue.held("sleepy") == 3)
    assert (await peer.update()).code == Code.CHANGED
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [s.path for s in peer.seen] == ["/3/0/2", "/3/0/0", "/3/0/1"] and most == 1


async def test_a_request_the_device_slept_through_is_returned_to_the_queue(server: LwM2MServer, peer: Peer):
    server.queue.awake_s = 5.0
    await sleepy(server, peer)
    answers = iter([None, MANUFACTURER])

    async def maybe(request: Message) -> Message:
        payload = next(answers)
        if payload is None:
            await asyncio.sleep(3)  # it went to sleep: no answer within the server's timeout
        return Message(code=Code.CONTENT, payload=payload or b"", content_format=110)
    peer.responses[(Code.GET, "/3/0/0")] = maybe
    task = asyncio.create_task(server.read("sleepy", Path(3, 0, 0), timeout=1, queue_deadline=15))
    assert await eventually(lambda: server.queue.held("sleepy") == 1, 5)  # back in the queue, not 5.04
    assert not task.done()
    assert (await peer.update()).code == Code.CHANGED  # next awake window
    assert await asyncio.wait_for(task, 10) == {Path(3, 0, 0): "ACME"}
    assert [s.path for s in peer.seen] == ["/3/0/0", "/3/0/0"]


async def test_awake_window_per_device_and_forced_queue_mode(server: LwM2MServer, peer: Peer):
    server.queue.awake_s = 30.0
    # registered without Q, but the operator says it sleeps, with a 0.2 s window
    assert (await peer.register("psm", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0/0", Code.CONTENT, MANUFACTURER, 110)
    await server.device_settings.change("psm", lambda _n: True, queue_mode=True, awake_s=0.2)
    await asyncio.sleep(0.3)
    with pytest.raises(QueueDeadlineExpired, match="psm.*did not wake up within 0.5 s"):
        await server.read("psm", Path(3, 0, 0), timeout=0.5)
    assert peer.seen == []
    await server.device_settings.change("psm", lambda _n: True, awake_s=60.0)  # a long window: sent at once
    assert await server.read("psm", Path(3, 0, 0), timeout=2) == {Path(3, 0, 0): "ACME"}
    await server.device_settings.change("psm", lambda _n: True, queue_mode=None, awake_s=None)
    assert server.device_settings.get("psm").empty and rows(server) == []


async def test_held_requests_survive_a_server_restart(tmp_path: FsPath):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    srv = LwM2MServer(db, read_capabilities=False, queue_awake_s=0.2)
    await srv.start("127.0.0.1", 0)
    port = srv.address[1]
    peer = Peer(server=srv.address)
    peer.context = await aiocoap.Context.create_server_context(CatchAll(peer), bind=("127.0.0.1", 0),
                                                               transports=["udp6"])
    try:
        await sleepy(srv, peer)
        await asyncio.sleep(0.3)
        caller = asyncio.create_task(srv.send("sleepy", _read(), timeout=2, queue_deadline=60, durable=True))
        assert await eventually(lambda: len(rows(srv)) == 1)
        caller.cancel()  # the operator's CLI went away; the request stays held
        await srv.stop()
        assert [r.state for r in rows(srv)] == ["held"] and peer.seen == []

        srv2 = LwM2MServer(db, read_capabilities=False, queue_awake_s=0.2)
        await srv2.start("127.0.0.1", port)
        try:
            assert srv2.queue.held("sleepy") == 1
            assert (await peer.update()).code == Code.CHANGED  # its old registration id is still known
            assert await eventually(lambda: rows(srv2)[0].state == "done", 5)
            assert rows(srv2)[0].result == {"content": {"/3/0/0": "ACME"}}
            assert [s.path for s in peer.seen] == ["/3/0/0"]
        finally:
            await srv2.stop()
    finally:
        await peer.context.shutdown()


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value, self.observers = 1, 0

    def update_observation_count(self, count: int) -> None:
        self.observers = count

    async def render_get(self, request: Message) -> Message:
        return Message(payload=json.dumps([{"bn": "/3/0/9", "v": self.value}]).encode(), content_format=110)


async def test_observations_are_established_again_after_a_new_registration(server: LwM2MServer):
    site, battery = Site(), Counter()
    site.add_resource(["3", "0", "9"], battery)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])

    async def register() -> None:
        msg = Message(code=Code.POST, uri=f"coap://127.0.0.1:{server.address[1]}/rd", payload=b"</3/0>",
                      content_format=40, uri_query=("ep=bat", "lwm2m=1.1"))
        assert (await ctx.request(msg).response).code == Code.CREATED
    try:
        await register()
        obs = await server.observations.observe("bat", Path(3, 0, 9))
        sub = server.observations.subscribe(obs)
        first_token = obs.first.token
        await register()  # a new registration of the same endpoint
        assert await asyncio.wait_for(sub.get(), 5) == {Path(3, 0, 9): 1}  # observed again, same subscriber
        assert obs.first.token != first_token and server.observations.of("bat") == [obs]
        battery.value = 7
        battery.updated_state()
        assert await asyncio.wait_for(sub.get(), 5) == {Path(3, 0, 9): 7}
        assert await eventually(lambda: battery.observers == 1)  # the old token was dropped (Reset)
    finally:
        await ctx.shutdown()


async def test_simulated_client_that_reregisters_on_wake(server: LwM2MServer, runner):
    server.queue.awake_s = 0.3
    dev = SimulatedDevice(get_profile("nrf52840"), "anjay-like", server.address, runner, lifetime=2,
                          awake_s=0.3, **personality("reregisters").device_kwargs())
    await dev.start()
    try:
        assert await eventually(lambda: "anjay-like" in server.registrations.by_endpoint)
        reg = server.registrations.by_endpoint["anjay-like"]
        assert reg.queue_mode and 33100 not in reg.objects() and 33101 not in reg.objects()
        await asyncio.sleep(0.5)  # asleep: its link is down
        value = await server.read("anjay-like", Path(3, 0, 2), timeout=2, queue_deadline=10)
        assert value == {Path(3, 0, 2): "SIM-anjay-like"}
        assert dev.client is not None and dev.client.registrations >= 2 and dev.client.updates == 0
        assert server.registrations.by_endpoint["anjay-like"].id != reg.id
    finally:
        await dev.stop()


def _read():
    from tinymlaas.server.operations import Read

    return Read(Path(3, 0, 0))
