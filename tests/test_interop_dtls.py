"""Interop with an independent LwM2M client over DTLS: Eclipse Wakaama's lwm2mclient_tinydtls.

It registers with our coaps port with its PSK, is read over its session, fails its handshake
with a wrong key, is refused (4.03) when it presents another device's identity for an endpoint,
and bootstraps from our bootstrap server over DTLS with its bootstrap credential, then
registers with the PSK the bootstrap server wrote and is read — the server's and the client's
view compared (registration row, the client's own log, the bootstrap event).
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath
from typing import AsyncIterator

import pytest
from sqlalchemy import select

from lwm2m.path import Path
from tests.conftest import eventually
from tests.dtls_helpers import secured_settings
from tests.wakaama_dtls import WakaamaDtls, binary
from tinymlaas.bootstrap import configs
from tinymlaas.bootstrap.server import BootstrapServer
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import REGISTRATIONS

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(binary() is None, reason="lwm2mclient_tinydtls not built (.ci/build-wakaama-dtls)")]
KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
OTHER = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
async def srv(tmp_path: FsPath) -> AsyncIterator[LwM2MServer]:
    s = LwM2MServer(f"sqlite:///{tmp_path / 't.db'}", read_capabilities=False,
                    security=secured_settings(tmp_path, bootstrap_coaps_port=0))
    await s.start("127.0.0.1", 0)
    await s.security.credentials.add("wk-1", "wk-1-id", bytes.fromhex(KEY))
    await s.security.credentials.add("wk-2", "wk-2-id", bytes.fromhex(OTHER))
    yield s
    await s.stop()


def rows(server: LwM2MServer) -> list[tuple]:
    return [tuple(r) for r in server.store.read_sync(lambda c: list(c.execute(select(REGISTRATIONS))))]


async def test_wakaama_registers_over_dtls_psk_and_is_read(srv: LwM2MServer) -> None:
    with WakaamaDtls(srv.security.coaps_address[1], "wk-1", identity="wk-1-id", key_hex=KEY) as wk:
        assert await eventually(lambda: "wk-1" in srv.registrations.by_endpoint, 15), wk.output()[-2000:]
        reg = srv.registrations.by_endpoint["wk-1"]
        assert reg.remote.scheme == "coaps" and reg.remote.identity == b"wk-1-id"
        assert rows(srv)[0][1] == "wk-1"
        manufacturer = await srv.read("wk-1", Path(3, 0, 0))
        assert manufacturer == {Path(3, 0, 0): "Open Mobile Alliance"}
        # the client's side: it updates, then de-registers, over its session
        wk.command("update 123")
        assert await eventually(lambda: srv.registrations.by_endpoint["wk-1"].updated_at > reg.registered_at, 10)
        wk.command("quit")  # a graceful quit de-registers
        assert await eventually(lambda: "wk-1" not in srv.registrations.by_endpoint, 10), wk.output()[-1500:]
        assert rows(srv) == []


async def test_wakaama_with_a_wrong_key_is_not_registered(srv: LwM2MServer, caplog: pytest.LogCaptureFixture) -> None:
    with WakaamaDtls(srv.security.coaps_address[1], "wk-1", identity="wk-1-id", key_hex=OTHER):
        assert await eventually(lambda: "handshake with" in caplog.text, 15)
        await asyncio.sleep(0.5)
    assert rows(srv) == [] and len(srv.registrations) == 0
    assert "did not verify" in caplog.text and OTHER not in caplog.text and KEY not in caplog.text


async def test_wakaama_with_another_devices_identity_is_forbidden(srv: LwM2MServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="tinymlaas.server.security")
    with WakaamaDtls(srv.security.coaps_address[1], "wk-2", identity="wk-2-id", key_hex=OTHER):
        assert await eventually(lambda: "wk-2" in srv.registrations.by_endpoint, 15)
    before = rows(srv)
    with WakaamaDtls(srv.security.coaps_address[1], "wk-2", identity="wk-1-id", key_hex=KEY) as wk:
        assert await eventually(lambda: "bound to endpoint 'wk-1', not 'wk-2'" in caplog.text, 15), wk.output()[-1500:]
        await asyncio.sleep(0.5)
    assert rows(srv) == before
    assert srv.registrations.by_endpoint["wk-2"].id == before[0][0]


async def test_wakaama_bootstraps_over_dtls_then_registers_and_is_read(srv: LwM2MServer) -> None:
    await srv.security.credentials.add("wk-bs", "wk-bs-boot", bytes.fromhex(KEY), purpose="bootstrap")
    dm = "coaps://127.0.0.1:%d" % srv.security.coaps_address[1]
    await configs.save(srv.store, configs.BootstrapConfig("endpoint", "wk-bs", dm, lifetime=120))
    bss = BootstrapServer(srv.store, srv.security.credentials, srv.security.settings, trust_anchor=lambda: b"\x01" * 32)
    await bss.start()
    try:
        with WakaamaDtls(bss.coaps.address[1], "wk-bs", identity="wk-bs-boot", key_hex=KEY, bootstrap=True) as wk:
            assert await eventually(lambda: "wk-bs" in srv.registrations.by_endpoint, 30), wk.output()[-3000:]
            outcome = await bss.wait("wk-bs")
            assert outcome["state"] == "finished", outcome
            assert outcome["steps"][0] == "Bootstrap-Discover /"
            assert "Bootstrap-Write /0/1" in outcome["steps"] and "Bootstrap-Write /1/0" in outcome["steps"]
            assert not any("33100" in s for s in outcome["steps"])  # Wakaama has no ML Capability object
            cred = srv.security.credentials.get("wk-bs")
            reg = srv.registrations.by_endpoint["wk-bs"]
            assert reg.remote.identity == cred.identity == b"wk-bs" and reg.lifetime == 120
            assert (await srv.read("wk-bs", Path(3, 0, 0))) == {Path(3, 0, 0): "Open Mobile Alliance"}
    finally:
        await bss.stop()
