"""Simulated devices with security: DTLS-PSK, bootstrap, the trust anchor, anti-rollback, and a
secured fleet of 100 devices from one production batch.

The devices are the simulator's genuine LwM2M clients; what they do is checked on the wire
(the server reads their resources over their DTLS sessions), in the database (credentials,
bootstrap events) and in their own state (installed packages, trust anchor).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path as FsPath
from typing import AsyncIterator

import aiocoap
import pytest
from aiocoap import Code, Message
from sqlalchemy import select

from device_profiles import get_profile
from lwm2m.bootstrap import TRUST_ANCHOR
from lwm2m.path import Path
from simulator.device import SimulatedDevice
from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
from simulator.security import DeviceSecurity, Psk, fleet_security, read_credentials_csv
from tests.conftest import eventually
from tests.dtls_helpers import secured_settings
from tests.sim_helpers import add_one_wasm, keypair, package, wait_value
from tinymlaas.bootstrap import configs
from tinymlaas.bootstrap.server import BootstrapServer
from tinymlaas.deploy.groups import save_group
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import DEVICE_CREDENTIALS, EVENTS, REGISTRATIONS

STATE9, RESULT9, ACTIVE9, REASON9 = 7, 9, 12, 16
BS_KEY = b"bootstrap-key-01"


@pytest.fixture
async def srv(tmp_path: FsPath) -> AsyncIterator[LwM2MServer]:
    s = LwM2MServer(f"sqlite:///{tmp_path / 't.db'}", read_capabilities=False,
                    security=secured_settings(tmp_path, bootstrap_coaps_port=0, bootstrap_port=0, nosec="off"))
    await s.start("127.0.0.1", 0)
    yield s
    await s.stop()


@pytest.fixture
async def bss(srv: LwM2MServer) -> AsyncIterator[BootstrapServer]:
    anchor = keypair()[1]
    b = BootstrapServer(srv.store, srv.security.credentials, srv.security.settings, trust_anchor=lambda: anchor,
                        registrations=srv.registrations)
    await b.start()
    yield b
    await b.stop()


def dm_uri(srv: LwM2MServer) -> str:
    return "coaps://127.0.0.1:%d" % srv.security.coaps_address[1]


async def started(d: SimulatedDevice, srv: LwM2MServer) -> SimulatedDevice:
    d.sample_inputs = [b"\x01\x02\x03\x04"]
    await d.start()
    assert await eventually(lambda: d.endpoint in srv.registrations.by_endpoint)
    return d


async def test_a_psk_device_registers_and_is_managed_over_dtls(srv: LwM2MServer, runner) -> None:
    await srv.security.credentials.add("psk-1", "psk-1", b"0123456789abcdef")
    d = SimulatedDevice(get_profile("nrf52840"), "psk-1", srv.security.coaps_address, runner,
                        security=DeviceSecurity(psk=Psk(b"psk-1", b"0123456789abcdef")))
    try:
        await started(d, srv)
        reg = srv.registrations.by_endpoint["psk-1"]
        assert reg.remote.scheme == "coaps" and reg.remote.identity == b"psk-1"
        assert (await srv.read("psk-1", Path(3, 0, 2)))[Path(3, 0, 2)] == "SIM-psk-1"
        assert d.client is not None and d.client.coaps.established
    finally:
        await d.stop()


async def test_bootstrap_end_to_end_with_the_simulator(srv: LwM2MServer, bss: BootstrapServer, runner) -> None:
    await srv.security.credentials.add("boot-1", "boot-1-bs", BS_KEY, purpose="bootstrap")
    await configs.save(srv.store, configs.BootstrapConfig("default", "", dm_uri(srv), lifetime=120))
    d = SimulatedDevice(get_profile("nrf52840"), "boot-1", ("0.0.0.0", 0), runner,
                        security=DeviceSecurity(bootstrap=bss.coaps.address, bootstrap_psk=Psk(b"boot-1-bs", BS_KEY)))
    try:
        await started(d, srv)
        outcome = await bss.wait("boot-1")
        assert outcome["state"] == "finished", outcome
        assert outcome["steps"][:2] == ["Bootstrap-Discover /", "Bootstrap-Read /1"]
        assert "Bootstrap-Write /33100/0/12" in outcome["steps"] and outcome["steps"][-1] == "Bootstrap-Finish"
        # the server generated a DM key, wrote it, and made it the key at Finish
        cred = srv.security.credentials.get("boot-1")
        assert cred is not None and cred.key is not None and cred.pending is None and cred.identity == b"boot-1"
        reg = srv.registrations.by_endpoint["boot-1"]
        assert reg.remote.identity == b"boot-1" and reg.lifetime == 120
        assert d.signing_key == bss.trust_anchor()  # trusted from the start
        assert (await srv.read("boot-1", Path(33100, 0, 12)))[Path(33100, 0, 12)] == bss.trust_anchor()
        rows = srv.store.read_sync(lambda c: list(c.execute(select(EVENTS).where(EVENTS.c.kind == "bootstrap"))))
        assert [r.detail["state"] for r in rows] == ["finished"]
        assert cred.key.hex() not in str(rows[0].detail) and cred.key.hex() not in str(outcome)
        # key rotation: a pending key, delivered by bootstrapping again (Bootstrap-Request Trigger)
        old = cred.key
        await srv.security.credentials.rotate("boot-1")
        assert srv.security.credentials.get("boot-1").key == old  # the old key works until Finish
        old_reg = reg.id
        await srv.execute("boot-1", Path(1, 0, 9))
        assert await eventually(lambda: d.bootstraps == 2 and "boot-1" in srv.registrations.by_endpoint
                                and srv.registrations.by_endpoint["boot-1"].id != old_reg, 15)
        new = srv.security.credentials.get("boot-1")
        assert new.key != old and new.pending is None
        assert d.client.config.psk == (b"boot-1", new.key)
        assert (await srv.read("boot-1", Path(3, 0, 2)))[Path(3, 0, 2)] == "SIM-boot-1"
    finally:
        await d.stop()


async def test_bootstrap_per_group_and_refusals(srv: LwM2MServer, bss: BootstrapServer, runner) -> None:
    await save_group(srv.store, "batch7", {"query": "endpoint=batch7-*"})
    await configs.save(srv.store, configs.BootstrapConfig("group", "batch7", dm_uri(srv), lifetime=77))
    for ep in ("batch7-0001", "other-1"):
        await srv.security.credentials.add(ep, f"{ep}-bs", BS_KEY, purpose="bootstrap")
    d = SimulatedDevice(get_profile("rp2040"), "batch7-0001", ("0.0.0.0", 0), runner,
                        security=DeviceSecurity(bootstrap=bss.coaps.address,
                                                bootstrap_psk=Psk(b"batch7-0001-bs", BS_KEY)))
    other = SimulatedDevice(get_profile("rp2040"), "other-1", ("0.0.0.0", 0), runner,
                            security=DeviceSecurity(bootstrap=bss.coaps.address,
                                                    bootstrap_psk=Psk(b"other-1-bs", BS_KEY)))
    try:
        await started(d, srv)
        assert srv.registrations.by_endpoint["batch7-0001"].lifetime == 77
        with pytest.raises(Exception, match="4.04.*no bootstrap configuration for endpoint 'other-1'"):
            await other.start()
        # another device's bootstrap identity cannot bootstrap this endpoint
        ctx, _ = await __import__("lwm2m.dtls.coaps", fromlist=["client_context"]).client_context(
            None, bss.coaps.address, b"other-1-bs", BS_KEY)
        try:
            msg = Message(code=Code.POST, uri="coaps://127.0.0.1:%d/bs" % bss.coaps.address[1])
            msg.opt.uri_query = ("ep=batch7-0001",)
            resp = await asyncio.wait_for(ctx.request(msg).response, 10)
            assert resp.code == Code.FORBIDDEN and b"bound to endpoint 'other-1'" in resp.payload
        finally:
            await ctx.shutdown()
        # NoSec bootstrap is off on this server
        plain = await aiocoap.Context.create_client_context()
        try:
            msg = Message(code=Code.POST, uri="coap://127.0.0.1:%d/bs?ep=nobody" % bss.address[1])
            resp = await asyncio.wait_for(plain.request(msg).response, 10)
            assert resp.code == Code.FORBIDDEN
        finally:
            await plain.shutdown()
    finally:
        await d.stop()
        await other.stop()


async def test_trust_anchor_write_from_a_non_server_peer_is_refused(server: LwM2MServer, runner) -> None:
    _, key = keypair()
    _, evil = keypair()
    d = SimulatedDevice(get_profile("nrf52840"), "anchor-1", server.address, runner, signing_key=key)
    try:
        await started(d, server)
        port = d.client.context.request_interfaces[0].token_interface.message_interface.transport \
            .get_extra_info("socket").getsockname()[1]
        stranger = await aiocoap.Context.create_client_context()
        try:
            for path in ("/33100/0/12", "/33100/0"):
                msg = Message(code=Code.PUT, uri=f"coap://127.0.0.1:{port}{path}", content_format=11542,
                              payload=_tlv_anchor(evil) if path == "/33100/0" else _tlv_resource(evil))
                resp = await asyncio.wait_for(stranger.request(msg).response, 10)
                assert resp.code == Code.UNAUTHORIZED, (path, resp)
        finally:
            await stranger.shutdown()
        assert d.signing_key == key
        # its own server (from the address it registered with) may
        _, new = keypair()
        await server.write("anchor-1", TRUST_ANCHOR, {TRUST_ANCHOR: new})
        assert d.signing_key == new
    finally:
        await d.stop()


def _tlv_resource(value: bytes) -> bytes:
    from lwm2m import codecs
    from lwm2m.model import default_registry

    return codecs.encode(11542, TRUST_ANCHOR, {TRUST_ANCHOR: value}, default_registry())


def _tlv_anchor(value: bytes) -> bytes:
    from lwm2m import codecs
    from lwm2m.model import default_registry

    return codecs.encode(11542, Path(33100, 0), {TRUST_ANCHOR: value}, default_registry())


async def test_downgrade_is_refused_and_a_rollback_manifest_is_not_replayable(server: LwM2MServer, runner) -> None:
    priv, pub = keypair()
    d = SimulatedDevice(get_profile("nrf52840"), "seq-1", server.address, runner, signing_key=pub)
    art = add_one_wasm()

    async def install(instance: int, blob: bytes) -> int:
        if (await server.read("seq-1", Path(9, instance, STATE9)))[Path(9, instance, STATE9)] != 0:
            await server.execute("seq-1", Path(9, instance, 6))  # Uninstall: the instance is reused
            await wait_value(server, "seq-1", Path(9, instance, STATE9), 0)
        await server.write("seq-1", Path(9, instance, 2), {Path(9, instance, 2): blob}, timeout=30)
        result = await wait_value(server, "seq-1", Path(9, instance, RESULT9), {3, 53})
        if result == 3:
            await server.execute("seq-1", Path(9, instance, 4))
            result = await wait_value(server, "seq-1", Path(9, instance, RESULT9), {2, 58})
        return int(result)

    try:
        await started(d, server)
        assert await install(0, package(art, priv, "m", "5", seq=5)) == 2
        assert d.packages.highest == {"m": 5}
        # an older (or the same) signed package is refused: Update Result 53 with the reason
        for seq in (3, 5):
            assert await install(1, package(art, priv, "m", "3", seq=seq)) == 53
            reason = (await server.read("seq-1", Path(9, 1, REASON9)))[Path(9, 1, REASON9)]
            assert "downgrade refused" in reason and f"sequence {seq}" in reason
        # a signed rollback manifest from 5 goes back to 3, and leaves the number at 5
        rollback = package(art, priv, "m", "3", seq=3, rollback_from=5)
        assert await install(1, rollback) == 2 and d.packages.highest == {"m": 5}
        # something newer, then the old rollback manifest replayed: refused
        assert await install(0, package(art, priv, "m", "6", seq=6)) == 2
        assert await install(1, rollback) == 53
        assert "rollback manifest refused" in (await server.read("seq-1", Path(9, 1, REASON9)))[Path(9, 1, REASON9)]
    finally:
        await d.stop()


async def test_signing_key_overlap_accepts_both_keys(server: LwM2MServer, runner) -> None:
    old_priv, old_pub = keypair()
    new_priv, new_pub = keypair()
    d = SimulatedDevice(get_profile("nrf52840"), "rot-1", server.address, runner, signing_key=old_pub)
    try:
        await started(d, server)
        await server.write("rot-1", TRUST_ANCHOR, {TRUST_ANCHOR: new_pub + old_pub})  # during the overlap
        for n, priv in enumerate((old_priv, new_priv)):
            await server.write("rot-1", Path(9, n, 2), {Path(9, n, 2): package(add_one_wasm(), priv, f"k{n}")},
                               timeout=30)
            assert await wait_value(server, "rot-1", Path(9, n, STATE9), 3) == 3  # verified
        await server.write("rot-1", TRUST_ANCHOR, {TRUST_ANCHOR: new_pub})  # after it
        await server.execute("rot-1", Path(9, 0, 6))
        await server.write("rot-1", Path(9, 0, 2), {Path(9, 0, 2): package(add_one_wasm(), old_priv, "k2")}, timeout=30)
        assert await wait_value(server, "rot-1", Path(9, 0, RESULT9), 53) == 53
    finally:
        await d.stop()


async def test_revoked_bootstrap_credential_cannot_bootstrap(srv: LwM2MServer, bss: BootstrapServer, runner) -> None:
    await srv.security.credentials.add("rv-1", "rv-1-bs", BS_KEY, purpose="bootstrap")
    await configs.save(srv.store, configs.BootstrapConfig("endpoint", "rv-1", dm_uri(srv)))
    await srv.security.credentials.revoke("rv-1", purpose="bootstrap")
    d = SimulatedDevice(get_profile("nrf52840"), "rv-1", ("0.0.0.0", 0), runner,
                        security=DeviceSecurity(bootstrap=bss.coaps.address, bootstrap_psk=Psk(b"rv-1-bs", BS_KEY)))
    try:
        with pytest.raises(Exception, match="Bootstrap-Request to .* failed"):
            await d.start()
        rows = srv.store.read_sync(lambda c: list(c.execute(select(DEVICE_CREDENTIALS))))
        assert [(r.endpoint, r.purpose, r.key) for r in rows] == [("rv-1", "bootstrap", None)]
    finally:
        await d.stop()


FLEET = 100


async def test_a_secured_fleet_registers_over_dtls_and_is_read(srv: LwM2MServer, runner) -> None:
    """100 simulated devices of a production batch: the batch's CSV imported (all rows in one
    transaction), each device registers over its own DTLS-PSK session with the identity from that
    CSV, and the server reads every one of them over its session; no NoSec registration exists."""
    profiles = [get_profile(name) for name in ("nrf52840", "rp2040", "esp32s3", "stm32l4r5")]
    per = FLEET // len(profiles)
    endpoints = [f"sec-{p.name}-{i:04d}" for p in profiles for i in range(per)]
    batch = "endpoint,identity,key\n" + "".join(f"{ep},{ep}-id,{os.urandom(16).hex()}\n" for ep in endpoints)
    assert (await srv.security.credentials.import_csv(batch)) == {"imported": FLEET}
    devices = build_fleet([FleetSpec(p, per, lifetime=600, prefix=f"sec-{p.name}") for p in profiles],
                          srv.security.coaps_address, runner, security=fleet_security(read_credentials_csv(batch)))
    assert sorted(d.endpoint for d in devices) == sorted(endpoints)
    try:
        assert await start_fleet(devices, concurrency=32) == []
        assert await eventually(lambda: len(srv.registrations) == FLEET, 20)
        engine = srv.security.coaps.engine
        assert engine.sessions == FLEET and engine.stats["failed"] == 0
        for reg in srv.registrations:
            assert reg.remote.scheme == "coaps" and reg.remote.identity == f"{reg.endpoint}-id".encode()
        gate = asyncio.Semaphore(16)

        async def serial(d: SimulatedDevice) -> tuple[str, str]:
            async with gate:
                got = await srv.read(d.endpoint, Path(3, 0, 2), timeout=20)
                return d.endpoint, str(got[Path(3, 0, 2)])
        serials = dict(await asyncio.gather(*(serial(d) for d in devices)))
        assert serials == {ep: f"SIM-{ep}" for ep in endpoints}
        rows = srv.store.read_sync(lambda c: list(c.execute(select(REGISTRATIONS))))
        assert sorted(r.endpoint for r in rows) == sorted(endpoints)
        assert all(d.client is not None and d.client.coaps.established for d in devices)
    finally:
        await stop_fleet(devices)


async def test_a_nosec_bootstrap_never_hands_out_a_devices_key(tmp_path: FsPath, runner) -> None:
    """With a NoSec bootstrap port (NoSec "auto", no bootstrap credentials yet), any UDP peer can
    send ``POST /bs?ep=NAME``: for an endpoint that has a DM credential it gets 4.03 and is sent
    nothing (its key, active or pending, stays unknown to it); an endpoint without one gets a key
    made for that session and registers over DTLS with it."""
    victim_key = b"victim-key-01234"
    s = LwM2MServer(f"sqlite:///{tmp_path / 'n.db'}", read_capabilities=False,
                    security=secured_settings(tmp_path, bootstrap_port=0))
    await s.start("127.0.0.1", 0)
    b = BootstrapServer(s.store, s.security.credentials, s.security.settings, registrations=s.registrations)
    await b.start()
    plain = await aiocoap.Context.create_client_context()
    fresh = SimulatedDevice(get_profile("nrf52840"), "fresh-1", ("0.0.0.0", 0), runner,
                            security=DeviceSecurity(bootstrap=b.address))
    thief = SimulatedDevice(get_profile("nrf52840"), "victim", ("0.0.0.0", 0), runner,
                            security=DeviceSecurity(bootstrap=b.address))
    try:
        await s.security.credentials.add("victim", "victim-id", victim_key)
        await configs.save(s.store, configs.BootstrapConfig("default", "", dm_uri(s)))
        for state in ("active", "rotating"):
            assert s.security.credentials.get("victim").public()["state"] == state
            msg = Message(code=Code.POST, uri="coap://127.0.0.1:%d/bs?ep=victim" % b.address[1])
            resp = await asyncio.wait_for(plain.request(msg).response, 10)
            assert resp.code == Code.FORBIDDEN and b"its key is never sent over NoSec" in resp.payload
            with pytest.raises(Exception, match="4.03"):
                await thief.start()
            assert thief.tree.values.get(Path(0, 1, 5)) is None  # no Security instance was written to it
            await s.security.credentials.rotate("victim")  # a pending key is not handed out either
        cred = s.security.credentials.get("victim")
        assert cred is not None and cred.key == victim_key and cred.pending is not None
        assert "victim" not in b.outcomes and "victim" not in s.registrations.by_endpoint
        # an endpoint without a DM credential: a key made now, written over NoSec, then DTLS
        await started(fresh, s)
        made = s.security.credentials.get("fresh-1")
        assert made is not None and made.key is not None and fresh.client.config.psk == (b"fresh-1", made.key)
        assert s.registrations.by_endpoint["fresh-1"].remote.identity == b"fresh-1"
    finally:
        await fresh.stop()
        await thief.stop()
        await plain.shutdown()
        await b.stop()
        await s.stop()
