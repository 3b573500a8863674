"""Server and simulated client together: every operation in every format the client speaks.

Both sides use tinymlaas' codecs here; the byte-level checks live in test_device_management
(independent peer) and test_codecs (OMA golden vectors). This test shows the two halves
agree on everything the server can ask for, and that the demo runs.
"""

from __future__ import annotations

import asyncio

import pytest
from rich.console import Console

from lwm2m.errors import BadRequest
from lwm2m.model import default_registry
from lwm2m.path import ObjLink, Path
from tinymlaas.server.operations import DeviceError
from simulator.client import ClientConfig, LwM2MClient
from simulator.objects import ObjectTree


def tree() -> ObjectTree:
    t = ObjectTree(default_registry())
    t.add_instance(1, 0, {0: 1, 1: 300, 6: False, 7: "U"})
    t.add_instance(3, 0, {0: "ACME", 1: "Widget", 9: 77, 6: [1, 5], 13: 1_700_000_000, 16: "U"})
    t.add_instance(33101, 0, {0: "kws", 1: "1", 2: bytes(range(32)), 3: 0})
    t.on_execute(Path(3, 0, 4), lambda args: t.set(Path(3, 0, 9), 100))
    return t


@pytest.fixture(params=["1.0", "1.1", "1.2"])
async def client(request, server):
    c = LwM2MClient(ClientConfig(f"sim-{request.param}", server.address, version=request.param), tree())
    await c.start()
    yield c
    await c.stop()


async def test_every_format_round_trips(server, client: LwM2MClient):
    ep = client.config.endpoint
    for fmt in client.formats:
        if fmt in (0, 42):
            continue  # single values only: below
        got = await server.read(ep, Path(3, 0), fmt=int(fmt))
        assert got[Path(3, 0, 0)] == "ACME" and got[Path(3, 0, 6, 1)] == 5, fmt
        inference = await server.read(ep, Path(33101, 0), fmt=int(fmt))
        assert inference[Path(33101, 0, 2)] == bytes(range(32)), fmt
        await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): 1000 + int(fmt)}, fmt=int(fmt))
        assert client.tree.values[Path(1, 0, 1)] == 1000 + int(fmt)
        await server.write(ep, Path(1, 0), {Path(1, 0, 1): 61, Path(1, 0, 6): True}, replace=False, fmt=int(fmt))
        assert client.tree.values[Path(1, 0, 6)] is True
    assert await server.read(ep, Path(3, 0, 0), fmt=0) == {Path(3, 0, 0): "ACME"}
    assert await server.read(ep, Path(33101, 0, 2), fmt=42) == {Path(33101, 0, 2): bytes(range(32))}


async def test_default_format_is_what_the_version_wants(server, client: LwM2MClient):
    got = await server.read(client.config.endpoint, Path(3, 0, 9))
    assert got == {Path(3, 0, 9): 77}


async def test_unsupported_format_is_4_06(server, client: LwM2MClient):
    if client.config.version == "1.2":
        pytest.skip("1.2 speaks them all")
    with pytest.raises(DeviceError, match="4.06"):
        await server.read(client.config.endpoint, Path(3, 0), fmt=11544)


async def test_execute_discover_create_delete_observe(server, client: LwM2MClient):
    ep = client.config.endpoint
    await server.execute(ep, Path(3, 0, 4))
    assert client.tree.values[Path(3, 0, 9)] == 100
    links = await server.discover(ep, Path(3, 0))
    assert {link.uri for link in links} >= {"/3/0", "/3/0/0", "/3/0/6"}
    assert next(link for link in links if link.uri == "/3/0/6").get("dim") == "2"
    await server.write_attributes(ep, Path(3, 0, 9), {"pmin": 1, "pmax": 30})
    assert client.attributes[Path(3, 0, 9)] == {"pmin": "1", "pmax": "30"}
    location = await server.create(ep, Path(1), {Path(1, 5, 0): 5, Path(1, 5, 1): 90, Path(1, 5, 6): False,
                                                 Path(1, 5, 7): "U"})
    assert location == "/1/5" and (1, 5) in client.tree.instances
    await server.delete(ep, Path(1, 5))
    assert (1, 5) not in client.tree.instances
    with pytest.raises(DeviceError, match="4.04"):
        await server.delete(ep, Path(1, 5))
    obs = await server.observations.observe(ep, Path(3, 0, 9))
    q = server.observations.subscribe(obs)
    client.tree.set(Path(3, 0, 9), 12)
    assert await asyncio.wait_for(q.get(), 5) == {Path(3, 0, 9): 12}
    server.observations.cancel(ep, Path(3, 0, 9))
    for _ in range(100):
        if not client.context.serversite.observers.get(Path(3, 0, 9)):
            break
        await asyncio.sleep(0.02)
    assert not client.context.serversite.observers.get(Path(3, 0, 9)), "the device stopped notifying"


async def test_device_side_errors(server, client: LwM2MClient):
    ep = client.config.endpoint
    with pytest.raises(DeviceError, match="4.04"):
        await server.read(ep, Path(3, 7))
    with pytest.raises(DeviceError, match="4.05"):
        await server.execute(ep, Path(3, 0, 0))
    with pytest.raises(BadRequest):  # type-checked on the server before sending
        await server.write(ep, Path(3, 0, 13), {Path(3, 0, 13): ObjLink(1, 0)})


async def test_demo_runs():
    from tinymlaas.demo import run_demo
    console = Console(record=True, width=240)
    assert await run_demo(console) == 0
    text = console.export_text()
    assert "nrf52840" in text and "samd21" in text
    assert "caps /3+profile" in text and "caps 33100" in text
    assert text.count("✓") == 5 and "✗" not in text  # five boards run the model and read the digit right
    samd21 = next(line for line in text.splitlines() if line.startswith("demo-samd21"))
    assert "SRAM short by" in samd21 and "does not fit" in text
