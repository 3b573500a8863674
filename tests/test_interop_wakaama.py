"""Interop with a real LwM2M client no one here wrote: Eclipse Wakaama's ``lwm2mclient``.

Our server on loopback, the client in its own process (built by ``.ci/build-wakaama``), driven
through its command line and always stopped by its PID. What is checked is what the real client
does and says: its registration as stored, the values it answers in each content format it
has (text, opaque, TLV, SenML JSON, link format), writes it takes and reads back, an Execute it
prints, notifications it sends and stops sending, and queue mode: requests held while it
sleeps (SIGSTOP) and delivered when it updates, or when it registers again as a new process.

Wakaama cannot announce queue mode from its example's command line (the ``Q`` parameter comes
from its Server object's Binding, fixed to "U"), so the operator's per-device queue mode
(``device_settings``) makes the server treat it as sleeping; the delivery on wake is the
server's side of 6.5 either way. A model delivery to its stub Firmware Update object (State 1
from birth, never changing) ends by the stale-state rule within its bound, naming that state.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from typing import AsyncIterator

import pytest
from sqlalchemy import select

from lwm2m.errors import LwM2MError
from lwm2m.model.ddf import parse_ddf
from lwm2m.numbers import ContentFormat as CF
from lwm2m.path import Path, RawString
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import EVENTS, HELD_REQUESTS, REGISTRATIONS
from tests.conftest import eventually
from tests.wakaama import SERVER_ID, Wakaama

pytestmark = pytest.mark.interop

# Wakaama's test object as its source describes it, imported as an operator would (objects import)
TEST_OBJECT_DDF = """<?xml version="1.0" encoding="utf-8"?>
<LWM2M><Object ObjectType="MODefinition"><Name>Wakaama Test</Name><Description1>lwm2mclient test object</Description1>
<ObjectID>31024</ObjectID><ObjectURN>urn:oma:lwm2m:x:31024</ObjectURN><LWM2MVersion>1.1</LWM2MVersion>
<ObjectVersion>1.0</ObjectVersion><MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory>
<Resources>
<Item ID="1"><Name>test</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type>Integer</Type><RangeEnumeration>0..255</RangeEnumeration><Units></Units>
<Description>x</Description></Item>
<Item ID="2"><Name>exec</Name><Operations>E</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type></Type><RangeEnumeration></RangeEnumeration><Units></Units>
<Description>x</Description></Item>
<Item ID="3"><Name>dec</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type>Float</Type><RangeEnumeration></RangeEnumeration><Units></Units>
<Description>x</Description></Item>
<Item ID="5"><Name>str</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Optional</Mandatory><Type>String</Type><RangeEnumeration></RangeEnumeration><Units></Units>
<Description>x</Description></Item>
</Resources><Description2></Description2></Object></LWM2M>
"""


@pytest.fixture
async def wakaama(server: LwM2MServer) -> AsyncIterator[Wakaama]:
    for model in parse_ddf(TEST_OBJECT_DDF, source="Wakaama test object"):
        server.objects.add(model)
    client = Wakaama(server.address[1], f"wakaama-{os.getpid()}-{time.monotonic_ns() % 10**6}").start()
    try:
        assert await eventually(lambda: client.endpoint in server.registrations.by_endpoint, 10), client.output()
        yield client
    finally:
        client.stop()


def stored(server: LwM2MServer, table=REGISTRATIONS):
    return server.store.read_sync(lambda c: list(c.execute(select(table))))


async def test_register_update_deregister(server: LwM2MServer, wakaama: Wakaama):
    reg = server.registrations.by_endpoint[wakaama.endpoint]
    assert (reg.lwm2m_version, reg.binding, reg.lifetime, reg.queue_mode) == ("1.1", "U", 300, False)
    objects = reg.objects()
    assert {1, 3, 5, 31024} <= set(objects) and objects[31024]["instances"] == (10, 11, 12)
    assert reg.content_formats == (int(CF.SENML_JSON),)
    (row,) = stored(server)
    assert (row.endpoint, row.id, row.lwm2m_version) == (wakaama.endpoint, reg.id, "1.1")

    before = reg.updated_at
    wakaama.command(f"update {SERVER_ID}")
    assert await eventually(lambda: server.registrations.by_endpoint[wakaama.endpoint].updated_at > before, 5)
    assert stored(server)[0].updated_at > before

    wakaama.command("quit")  # graceful: it de-registers
    assert await asyncio.to_thread(wakaama.wait, 10) == 0
    assert await eventually(lambda: wakaama.endpoint not in server.registrations.by_endpoint, 5)
    assert stored(server) == []
    kinds = [e.kind for e in stored(server, EVENTS) if e.endpoint == wakaama.endpoint]
    assert kinds[0] == "registered" and kinds[-1] == "deregistered"


async def test_reads_in_every_format_it_has(server: LwM2MServer, wakaama: Wakaama):
    ep = wakaama.endpoint
    assert await server.read(ep, Path(3, 0, 0), fmt=CF.TEXT) == {Path(3, 0, 0): "Open Mobile Alliance"}
    for fmt in (CF.TLV, CF.SENML_JSON, None):
        device = await server.read(ep, Path(3, 0), fmt=fmt)
        assert device[Path(3, 0, 1)] == "Lightweight M2M Client" and device[Path(3, 0, 16)] == "U", fmt
        assert device[Path(3, 0, 7, 0)] == 3800 and device[Path(3, 0, 7, 1)] == 5000  # multiple resource
    velocity = (await server.read(ep, Path(6, 0, 4), fmt=CF.OPAQUE))[Path(6, 0, 4)]
    assert isinstance(velocity, bytes) and len(velocity) == 5
    as_text = (await server.read(ep, Path(6, 0, 4), fmt=CF.TEXT))[Path(6, 0, 4)]  # object 6 is not in our
    assert base64.b64decode(as_text) == velocity  # registry: its text form (base64) comes back as the bytes sent
    links = await server.discover(ep, Path(3, 0))
    assert {str(link.uri) for link in links} >= {"/3/0", "/3/0/0", "/3/0/9", "/3/0/16"}
    test_object = await server.read(ep, Path(31024), fmt=CF.TLV)
    assert {p.instance_id for p in test_object} == {10, 11, 12}
    with pytest.raises(LwM2MError, match="4.06"):  # it has no SenML CBOR: it says so
        await server.read(ep, Path(3, 0), fmt=CF.SENML_CBOR)


async def test_write_execute_and_an_opaque_package(server: LwM2MServer, wakaama: Wakaama):
    ep = wakaama.endpoint
    await server.write(ep, Path(31024, 10, 1), {Path(31024, 10, 1): 42})
    await server.write(ep, Path(31024, 10, 5), {Path(31024, 10, 5): "written by tinymlaas"})
    await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): 120})
    values = await server.read(ep, Path(31024, 10))
    assert values[Path(31024, 10, 1)] == 42
    # Wakaama's test object keeps the string without its terminator, so whatever follows it in the
    # client's heap comes back too (often not UTF-8, or with NULs): that one value may come back
    # as a flagged RawString, the rest of the read is decoded all the same
    echoed = values[Path(31024, 10, 5)]
    echoed_text = echoed.raw.decode("latin-1") if isinstance(echoed, RawString) else echoed
    assert echoed_text.startswith("written by tinymlaas")
    assert (await server.read(ep, Path(1, 0, 1)))[Path(1, 0, 1)] == 120

    await server.execute(ep, Path(31024, 10, 2), "run=1")
    # the client dumps the Execute's argument as it received it (its unbuffered stderr)
    assert await eventually(lambda: "r u n = 1" in wakaama.output(), 5), wakaama.output()[-500:]

    # a Package for its Firmware Update object goes as opaque, block-wise: the client takes it
    await server.write(ep, Path(5, 0, 0), {Path(5, 0, 0): bytes(range(256)) * 16}, timeout=20)
    assert int(CF.OPAQUE) not in server.device_client.refused.get(server.registrations.by_endpoint[ep].id, set())


async def test_observe_and_cancel(server: LwM2MServer, wakaama: Wakaama):
    ep, path = wakaama.endpoint, Path(31024, 10, 1)
    obs = await server.observations.observe(ep, path)
    sub = server.observations.subscribe(obs)
    for value in (7, 8):
        wakaama.command(f"change /31024/10/1 {value}")
        assert await asyncio.wait_for(sub.get(), 10) == {path: value}
    received = wakaama.output().count("bytes received")
    server.observations.cancel(ep, path)  # a GET with Observe=1 on the observation's token
    assert await asyncio.wait_for(sub.get(), 2) is None
    assert await eventually(lambda: wakaama.output().count("bytes received") == received + 1, 5)
    await asyncio.sleep(0.3)  # its answer to the cancel
    sent_before = wakaama.output().count("Sending")
    wakaama.command("change /31024/10/1 9")  # no observation any more: the client sends nothing
    await asyncio.sleep(1.0)
    assert server.observations.of(ep) == []
    assert wakaama.output().count("Sending") == sent_before, wakaama.output()[-800:]
    assert (await server.read(ep, path))[path] == 9


async def test_queue_mode_holds_until_it_updates(server: LwM2MServer, wakaama: Wakaama):
    ep = wakaama.endpoint
    await server.device_settings.change(ep, lambda _n: True, queue_mode=True, awake_s=0.5)
    wakaama.signal(signal.SIGSTOP)  # it sleeps: its radio (process) is off
    await asyncio.sleep(0.6)
    pending = asyncio.create_task(server.send(ep, _read(Path(3, 0, 1)), timeout=5, queue_deadline=30, durable=True))
    assert await eventually(lambda: server.queue.held(ep) == 1, 5)
    received_before = wakaama.output().count("bytes received")
    (row,) = stored(server, HELD_REQUESTS)
    assert row.state == "held" and row.operation == {"op": "Read", "path": "/3/0/1"}
    wakaama.signal(signal.SIGCONT)
    await asyncio.sleep(0.3)
    assert wakaama.output().count("bytes received") == received_before and not pending.done()  # nothing sent
    wakaama.command(f"update {SERVER_ID}")  # it wakes and says so
    assert await asyncio.wait_for(pending, 15) == {Path(3, 0, 1): "Lightweight M2M Client"}
    assert stored(server, HELD_REQUESTS)[0].state == "done"


async def test_queue_mode_new_process_registers_again_and_gets_what_was_held(server: LwM2MServer,
                                                                             wakaama: Wakaama):
    ep = wakaama.endpoint
    first = server.registrations.by_endpoint[ep].id
    await server.device_settings.change(ep, lambda _n: True, queue_mode=True, awake_s=0.5)
    wakaama.stop()  # power off without a De-register
    await asyncio.sleep(0.6)
    pending = asyncio.create_task(server.send(ep, _read(Path(3, 0, 0)), timeout=5, queue_deadline=30, durable=True))
    assert await eventually(lambda: server.queue.held(ep) == 1, 5)
    again = Wakaama(server.address[1], ep).start()  # it wakes up as a new process: a new Register
    try:
        assert await asyncio.wait_for(pending, 20) == {Path(3, 0, 0): "Open Mobile Alliance"}
        assert server.registrations.by_endpoint[ep].id != first
        assert stored(server, HELD_REQUESTS)[0].state == "done"
        assert "bytes received" in again.output()
    finally:
        again.stop()


def _read(path: Path):
    from tinymlaas.server.operations import Read

    return Read(path)


async def test_object_5_delivery_to_a_client_that_never_progresses_ends_within_the_bound(tmp_path, runner):
    """Wakaama's Firmware Update object is a stub: it starts in State 1 (Downloading) and stays
    there whatever it is told (its write handler answers 2.04 and changes nothing). The server
    never finds it Idle, so it never offers the package; the delivery's stale rule (no change in
    what the device reports for ``stale_s`` while it answers) resets it per the object 5 table
    (an empty Package URI) up to ``download_attempts`` times and ends the deployment as failed,
    naming the client's own State and Update Result, well within the deadline."""
    from tests.deploy_helpers import Env, Shared
    from tinymlaas.deploy.delivery import Policy
    from tinymlaas.deploy.service import DeployOptions

    policy = Policy(stale_s=1.5, deadline_s=120.0, download_attempts=2, observed_poll_s=0.5, poll_s=0.5)
    env = await Env(tmp_path / "t.db", Shared(tmp_path / "data"), runner, policy=policy).start()
    client = Wakaama(env.server.address[1], f"wakaama-fw-{os.getpid()}").start()
    try:
        assert await eventually(lambda: client.endpoint in env.server.registrations.by_endpoint, 10), client.output()
        assert (await env.server.read(client.endpoint, Path(5, 0, 3)))[Path(5, 0, 3)] == 1  # the stub, from birth
        started = time.monotonic()
        row = await env.dep.deploy(client.endpoint, env.entry, DeployOptions(
            backend="tflm", precision="int8", object_id=5, sram_free=200_000, flash_free=400_000,
            runtimes=("tflm",)))
        took = time.monotonic() - started
        assert row["state"] == "failed" and row["object_path"] == "/5/0", row
        assert row["error"].endswith("made no progress in State 1 (Downloading), Update Result 0 (initial)"), \
            row["error"]
        assert took < policy.deadline_s / 4, took  # ended by the stale rule, not by the deadline
        states = [e.detail.get("state") for e in stored(env.server, EVENTS) if e.kind == "deployment"]
        assert "delivering" not in states and states[-1] == "failed"  # nothing was ever offered to it
        assert (await env.server.read(client.endpoint, Path(5, 0, 3)))[Path(5, 0, 3)] == 1  # it is still answering
    finally:
        client.stop()
        await env.stop()
