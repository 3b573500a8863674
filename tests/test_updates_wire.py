"""The update tables on the wire: what the simulated device answers, what the server concludes.

A simulated device refuses an operation its object's table does not allow in the current
state with the table's CoAP code (4.05 Method Not Allowed as AVSystem Anjay does; 4.00 where
Anjay answers 4.00), checked here on real CoAP exchanges over loopback, including a Cancel
while an object 5 update is in progress (Firmware Update 1.1: "MUST respond with Method Not
Allowed"). A device that reports a transition its table does not have (Update State INSTALLED
right after the download, without an Install) makes the deployment fail as a protocol error
naming the state and the result it reported.
"""

from __future__ import annotations

import asyncio

import pytest
from aiocoap import Code

from device_profiles import get_profile
from simulator.device import SimulatedDevice
from tests.deploy_helpers import bounded
from tests.sim_helpers import add_one_wasm, keypair, package, wait_value
from tinymlaas.deploy.service import DeployOptions
from lwm2m.path import Path
from tinymlaas.server.operations import DeviceError


async def device(server, runner, objects, key):
    d = SimulatedDevice(get_profile("nrf52840"), "dev", server.address, runner, update_objects=objects,
                        signing_key=key)
    await d.start()
    for _ in range(100):
        if "dev" in server.registrations.by_endpoint:
            break
        await asyncio.sleep(0.05)
    return d


async def refused(coro) -> DeviceError:
    with pytest.raises(DeviceError) as info:
        await coro
    return info.value


async def test_the_device_answers_the_tables_refusals(server, runner):
    keys = keypair()  # (private, public)
    d = await device(server, runner, (9, 5), keys[1])
    try:
        e = await refused(server.execute("dev", Path(9, 0, 4)))  # Install in INITIAL
        assert e.code == Code.METHOD_NOT_ALLOWED and "Install needs Update State DELIVERED" in e.message
        assert "/9/0 is INITIAL" in e.message
        e = await refused(server.execute("dev", Path(9, 0, 10)))  # Activate in INITIAL
        assert e.code == Code.METHOD_NOT_ALLOWED
        e = await refused(server.execute("dev", Path(9, 0, 6)))  # Uninstall with nothing delivered
        assert e.code == Code.METHOD_NOT_ALLOWED
        e = await refused(server.execute("dev", Path(9, 0, 6), "7"))
        assert e.code == Code.BAD_REQUEST and "takes no argument, 0 or 1" in e.message
        e = await refused(server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): ""}))
        assert e.code == Code.BAD_REQUEST  # and the result says why, as Anjay does
        assert (await server.read("dev", Path(9, 0, 9)))[Path(9, 0, 9)] == 56

        e = await refused(server.execute("dev", Path(5, 0, 2)))  # Update in Idle
        assert e.code == Code.METHOD_NOT_ALLOWED and "Update needs State Downloaded" in e.message
        e = await refused(server.execute("dev", Path(5, 0, 10)))  # Cancel in Idle: nothing to cancel
        assert e.code == Code.METHOD_NOT_ALLOWED
        blob = package(add_one_wasm(), keys[0], name="m5")
        await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): blob}, timeout=30)
        assert await wait_value(server, "dev", Path(5, 0, 3), 2) == 2
        e = await refused(server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): "coap://127.0.0.1/p/x"}))
        assert e.code == Code.BAD_REQUEST and "Downloaded" in e.message  # reset first

        gate = asyncio.Event()
        real = d.packages.install

        async def slow_install(artifact):
            await gate.wait()
            return await real(artifact)
        d.packages.install = slow_install
        update = asyncio.ensure_future(server.execute("dev", Path(5, 0, 2), timeout=30))
        assert await wait_value(server, "dev", Path(5, 0, 3), 3) == 3  # Updating
        e = await refused(server.execute("dev", Path(5, 0, 10)))
        assert e.code == Code.METHOD_NOT_ALLOWED and "cannot be cancelled" in e.message
        e = await refused(server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): ""}))
        assert e.code == Code.METHOD_NOT_ALLOWED
        gate.set()
        await update
        assert await wait_value(server, "dev", Path(5, 0, 5), 1) == 1
        assert (await server.read("dev", Path(5, 0, 3)))[Path(5, 0, 3)] == 0
    finally:
        await d.stop()


async def test_a_transition_the_table_does_not_have_is_a_protocol_error(env):
    d = await env.device("broken")
    real = d.packages.receive

    async def receive(owner, data, uri):
        await real(owner, data, uri)
        slot = d.software[int(owner.split("/")[1])]
        d.tree.set(slot.path.child(9), 2)  # a client that skips DELIVERED and the Install
        d.tree.set(slot.path.child(7), 4)
        await asyncio.sleep(3600)
    d.packages.receive = receive
    row = await bounded(env.dep.deploy("broken", env.entry, DeployOptions(backend="tflm", precision="int8")), 60)
    assert row["state"] == "failed"
    assert "reported Update State 4 (INSTALLED), Update Result 2 (installed)" in row["error"], row["error"]
    assert "protocol error" in row["error"] and row["result_code"] == 2
    assert d.active is None
