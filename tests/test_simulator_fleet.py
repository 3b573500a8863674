"""Simulated fleets: profiles become LwM2M devices; faults are real and reproducible.

Covers: every profile registers and the server reads its capabilities (from 33100, or from
object 3 matched to the profile); seeded faults make the same decisions twice; 30% packet
loss still lets a device register and be managed; queue-mode devices sleep and the server's
queue mode reaches them when they wake; clock drift moves the Updates; the ``simulate`` CLI.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from device_profiles import get_profile, load_profiles
from lwm2m.path import Path
from tinymlaas.server.server import LwM2MServer
from simulator.device import SimulatedDevice
from simulator.faults import Faults, FaultyLink, is_blockwise
from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
from tests.conftest import eventually


@pytest.fixture
async def capserver(tmp_path):
    srv = LwM2MServer(f"sqlite:///{tmp_path / 'cap.db'}", read_capabilities=True, expiry_interval_s=0.1)
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


async def test_every_profile_registers_and_is_read(capserver, runner):
    profiles = load_profiles()
    specs = [FleetSpec(p, 1) for p in profiles.values()]
    specs.append(FleetSpec(profiles["nrf52840"], 1, version="1.0", with_capability_object=False, prefix="plain"))
    devices = build_fleet(specs, capserver.address, runner)
    assert await start_fleet(devices) == []
    try:
        snaps = {}
        for d in devices:
            snaps[d.endpoint] = await capserver.capabilities.refresh(d.endpoint)
        for d in devices[:-1]:
            data = snaps[d.endpoint]["data"]
            assert snaps[d.endpoint]["source"] == "ml-capability-object"
            assert data["/33100/0/1"] == d.profile.sram_free and data["/33100/0/0"] == d.profile.sram_total
            assert data["/33100/0/13"] == d.profile.name
        plain = snaps["plain-0000"]
        assert plain["source"] == "device-object+profile" and plain["profile"] == "nrf52840"
        assert plain["data"]["sram_free"] == profiles["nrf52840"].sram_free
    finally:
        await stop_fleet(devices)


def test_faults_parse_and_reject():
    f = Faults.parse("loss=30%,latency=20,drop-after=5,corrupt-block=2,drift=0.1,seed=9")
    assert (f.loss, f.latency, f.drop_after, f.corrupt_block, f.drift, f.seed) == (0.3, 20.0, 5, 2, 0.1, 9)
    with pytest.raises(ValueError, match="lose"):
        Faults.parse("lose=0.1")
    with pytest.raises(ValueError, match="loss=1.5"):
        Faults.parse("loss=1.5")


def test_faults_are_reproducible_from_a_seed():
    traffic = [bytes([0x40, 0x01, 0, i % 256]) + (b"\xd1\x0a\x05" if i % 3 == 0 else b"") for i in range(400)]

    def decisions(seed: int) -> list[str]:
        link = FaultyLink("dev-1", ("127.0.0.1", 5683), Faults(loss=0.3, drop_after=10, drop_for=0.5, seed=seed))
        return [link.decide(d, now=i * 0.01) for i, d in enumerate(traffic)]
    first, again, other = decisions(7), decisions(7), decisions(8)
    assert first == again
    assert first != other
    assert 0.2 < first.count("loss") / len(first) < 0.4 and "down" in first


def test_blockwise_detection():
    assert is_blockwise(bytes([0x40, 0x01, 0, 1]) + b"\xd1\x0a\x05")  # Block2 (23 = 13 + 10)
    assert not is_blockwise(bytes([0x40, 0x01, 0, 1]) + b"\xb2rd")  # Uri-Path only
    assert not is_blockwise(b"\x40")


async def test_thirty_percent_loss_still_manageable(server, runner):
    d = SimulatedDevice(get_profile("esp32c3"), "lossy", server.address, runner, faults=Faults(loss=0.3, seed=4))
    await asyncio.wait_for(d.start(), 60)
    try:
        assert "lossy" in server.registrations.by_endpoint
        got = None
        for _ in range(10):  # the server's CoAP retransmissions carry most reads through
            try:
                got = await server.read("lossy", Path(3, 0, 1), timeout=15)
                break
            except Exception:
                continue
        assert got == {Path(3, 0, 1): d.tree.values[Path(3, 0, 1)]}
        assert d.link.decisions.count("loss") > 0
    finally:
        await d.stop(deregister=False)


async def test_queue_mode_device_sleeps_and_is_reached_when_it_wakes(server, runner):
    server.queue.awake_s = 0.5
    d = SimulatedDevice(get_profile("rp2040"), "sleeper", server.address, runner, queue_mode=True,
                        lifetime=3, awake_s=0.5)
    await d.start()
    try:
        assert server.registrations.by_endpoint["sleeper"].queue_mode
        assert await eventually(lambda: d.link.asleep, 3)
        pending = asyncio.create_task(server.read("sleeper", Path(3, 0, 0), timeout=10))
        await asyncio.sleep(0.3)
        assert not pending.done() and server.queue.held("sleeper") == 1  # held, not sent into the void
        got = await asyncio.wait_for(pending, 10)  # the device's next Update (at 0.8 x 3 s) wakes it
        assert got == {Path(3, 0, 0): d.tree.values[Path(3, 0, 0)]}
        assert d.client.updates >= 1
    finally:
        await d.stop()


async def test_clock_drift_moves_updates(server, runner):
    nrf = get_profile("nrf52840")
    fast = SimulatedDevice(nrf, "fast", server.address, runner, lifetime=2, faults=Faults(drift=-0.5))
    slow = SimulatedDevice(nrf, "slow", server.address, runner, lifetime=2, faults=Faults(drift=0.2))
    await fast.start()
    await slow.start()
    try:
        await asyncio.sleep(2.5)
        assert fast.client.updates > slow.client.updates  # 0.8 s vs 1.92 s between Updates
        assert "slow" in server.registrations.by_endpoint  # 0.96 x lifetime: still in time
    finally:
        await fast.stop()
        await slow.stop()


def test_simulate_cli_against_a_server(tmp_path):
    env_home = tmp_path / "home"
    serve = subprocess.Popen([sys.executable, "-m", "tinymlaas", "serve", "--coap", "127.0.0.1:0",
                              "--api", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path / 'db'}", "--no-capabilities"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**__import__("os").environ, "TINYMLAAS_HOME": str(env_home)})
    try:
        line = serve.stdout.readline()
        port = int(line.split("coap://127.0.0.1:")[1].split(",")[0])
        sim = subprocess.run([sys.executable, "-m", "tinymlaas", "simulate", "--server", f"coap://127.0.0.1:{port}",
                              "--profile", "samd21", "--profile", "esp32s3", "--count", "3", "--duration", "1"],
                             capture_output=True, text=True, timeout=120)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert "6 of 6 simulated devices registered" in sim.stdout
        bad = subprocess.run([sys.executable, "-m", "tinymlaas", "simulate", "--profile", "nope", "--duration", "1"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "unknown device profile 'nope'" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        serve.terminate()
        serve.wait(10)
