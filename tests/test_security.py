"""Registrations over DTLS-PSK and who may register, update or de-register what.

Independent peer: libcoap's coap-client built on OpenSSL and on GnuTLS, with ``-u/-k`` PSK.
Checks are on the wire (response codes, the cipher suite OpenSSL reports), in the database
(the registration row before and after a refused request) and in the log (one line per failed
handshake, without key material).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import AsyncIterator

import aiocoap
import pytest
from aiocoap import Code
from sqlalchemy import select

from tests.conftest import CatchAll, Peer, eventually
from tests.dtls_helpers import (coap_client_psk, dtls_peer, location, needs_libcoap_dtls,
                                secured_settings)
from lwm2m.path import Path as LPath
from tinymlaas.server.security import NoSession
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import DEVICE_CREDENTIALS, EVENTS, REGISTRATIONS

KEYS = {"dev-a": ("dev-a-id", "key-of-dev-a-123"), "dev-b": ("dev-b-id", "key-of-dev-b-456")}
LINKS = "</1/0>,</3/0>"


async def secured(tmp_path: Path, **kw: object) -> LwM2MServer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    srv = LwM2MServer(f"sqlite:///{tmp_path / 't.db'}", read_capabilities=False, expiry_interval_s=0.1,
                      security=secured_settings(tmp_path, **kw))
    await srv.start("127.0.0.1", 0)
    for ep, (identity, key) in KEYS.items():
        await srv.security.credentials.add(ep, identity, key.encode())
    return srv


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[LwM2MServer]:
    s = await secured(tmp_path)
    yield s
    await s.stop()


def reg_rows(server: LwM2MServer) -> list[tuple]:
    return [tuple(r) for r in server.store.read_sync(lambda c: list(c.execute(select(REGISTRATIONS))))]


def coaps_uri(server: LwM2MServer, path: str) -> str:
    return f"coaps://127.0.0.1:{server.security.coaps_address[1]}{path}"


@needs_libcoap_dtls
@pytest.mark.parametrize("tool", ["openssl", "gnutls"])
async def test_register_over_dtls_psk_with_libcoap(srv: LwM2MServer, tool: str) -> None:
    identity, key = KEYS["dev-a"]
    code, opts, text = await coap_client_psk(tool, identity, key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                             "-t", "40", "-e", LINKS, verbosity=9)
    assert code == "2.01", text[-2000:]
    assert location(opts)[0] == "rd"
    [row] = reg_rows(srv)
    assert row[1] == "dev-a" and row[0] == location(opts)[1]
    if tool == "openssl":
        assert "Using cipher: PSK-AES128-CCM8" in text  # TLS_PSK_WITH_AES_128_CCM_8, as RFC 7925 wants
    reg = srv.registrations.by_endpoint["dev-a"]
    assert reg.remote.scheme == "coaps" and reg.remote.identity == b"dev-a-id"


@needs_libcoap_dtls
@pytest.mark.parametrize("identity,key,why", [
    ("dev-a-id", "not-the-right-key", "did not verify"),
    ("nobody-id", "key-of-dev-a-123", "unknown PSK identity 'nobody-id'"),
])
async def test_wrong_key_or_unknown_identity_fails_the_handshake(srv: LwM2MServer, caplog: pytest.LogCaptureFixture,
                                                                 identity: str, key: str, why: str) -> None:
    caplog.set_level(logging.INFO)
    code, _, text = await coap_client_psk("openssl", identity, key, "post", coaps_uri(srv, "/rd?ep=dev-a"),
                                          "-t", "40", "-e", LINKS)
    assert code is None, text[-1000:]
    assert reg_rows(srv) == [] and len(srv.registrations) == 0
    lines = [r.getMessage() for r in caplog.records if "handshake" in r.getMessage()]
    assert len(lines) == 1 and why in lines[0], lines
    everything = caplog.text
    for _, secret in KEYS.values():
        assert secret not in everything and secret.encode().hex() not in everything
    assert key not in everything


@needs_libcoap_dtls
async def test_takeover_with_another_devices_identity_is_forbidden(srv: LwM2MServer) -> None:
    a_id, a_key = KEYS["dev-a"]
    b_id, b_key = KEYS["dev-b"]
    code, opts, _ = await coap_client_psk("openssl", a_id, a_key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                          "-t", "40", "-e", LINKS)
    assert code == "2.01"
    reg_id = location(opts)[1]
    before = reg_rows(srv)
    # dev-b's identity: Register as dev-a, Update and De-register dev-a's registration
    code, _, text = await coap_client_psk("openssl", b_id, b_key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                          "-t", "40", "-e", "</3/0>")
    assert code == "4.03", text[-800:]
    assert "bound to endpoint 'dev-b', not 'dev-a'" in text
    for method, path in (("post", f"/rd/{reg_id}?lt=1"), ("post", f"/rd/{reg_id}"), ("delete", f"/rd/{reg_id}")):
        code, _, _ = await coap_client_psk("gnutls", b_id, b_key, method, coaps_uri(srv, path))
        assert code == "4.03", (method, path)
    assert reg_rows(srv) == before
    assert srv.registrations.by_endpoint["dev-a"].remote.identity == b"dev-a-id"


@needs_libcoap_dtls
async def test_takeover_over_nosec_of_an_endpoint_with_credentials_is_forbidden(srv: LwM2MServer, peer: Peer) -> None:
    a_id, a_key = KEYS["dev-a"]
    code, opts, _ = await coap_client_psk("openssl", a_id, a_key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                          "-t", "40", "-e", LINKS)
    assert code == "2.01"
    reg_id = location(opts)[1]
    before = reg_rows(srv)
    peer.server = srv.address
    resp = await peer.register("dev-a")
    assert resp.code == Code.FORBIDDEN and b"has DTLS credentials" in resp.payload
    peer.location = ("rd", reg_id)
    for resp in (await peer.update(), await peer.update(("lt=1",)), await peer.deregister()):
        assert resp.code == Code.FORBIDDEN, resp.payload
    assert reg_rows(srv) == before


async def test_nosec_is_refused_once_credentials_exist_unless_enabled(tmp_path: Path) -> None:
    for mode, expected in (("auto", Code.FORBIDDEN), ("off", Code.FORBIDDEN), ("on", Code.CREATED)):
        srv = await secured(tmp_path / mode, nosec=mode)
        p = Peer(server=srv.address)
        p.context = await aiocoap.Context.create_server_context(CatchAll(p), bind=("127.0.0.1", 0), transports=["udp6"])
        try:
            resp = await p.register("no-credentials-here")
            assert resp.code == expected, (mode, resp.payload)
        finally:
            await p.context.shutdown()
            await srv.stop()


@pytest.fixture
async def nosec_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[LwM2MServer]:
    policy = getattr(request, "param", "refuse")
    srv = LwM2MServer(f"sqlite:///{tmp_path / 'n.db'}", read_capabilities=False,
                      security=secured_settings(tmp_path, coaps_port=None, nosec_other_address=policy))
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


def udp_port(p: Peer) -> int:
    iface = p.context.request_interfaces[0].token_interface.message_interface
    return int(iface.transport.get_extra_info("socket").getsockname()[1])


async def udp_peer(server: LwM2MServer) -> Peer:
    p = Peer(server=server.address)
    p.context = await aiocoap.Context.create_server_context(CatchAll(p), bind=("127.0.0.1", 0), transports=["udp6"])
    return p


async def test_nosec_update_or_deregister_from_another_address_is_refused(nosec_server: LwM2MServer) -> None:
    device, attacker = await udp_peer(nosec_server), await udp_peer(nosec_server)
    try:
        assert (await device.register("plain-1", query=("lt=300",))).code == Code.CREATED
        before = reg_rows(nosec_server)
        attacker.location = device.location  # it learned (or guessed) the registration id
        for resp in (await attacker.update(), await attacker.update(("lt=1",)), await attacker.deregister()):
            assert resp.code == Code.FORBIDDEN
            assert b"belongs to 127.0.0.1:" in resp.payload
        assert reg_rows(nosec_server) == before
        assert nosec_server.registrations.by_endpoint["plain-1"].address == f"127.0.0.1:{udp_port(device)}"
        assert (await device.update(("lt=600",))).code == Code.CHANGED  # the device itself still can
        assert (await device.deregister()).code == Code.DELETED
    finally:
        await device.context.shutdown()
        await attacker.context.shutdown()


@pytest.mark.parametrize("nosec_server", ["allow"], indirect=True)
async def test_nosec_other_address_allow_is_leshans_behaviour(nosec_server: LwM2MServer) -> None:
    device, moved = await udp_peer(nosec_server), await udp_peer(nosec_server)
    try:
        assert (await device.register("natted", query=("lt=300",))).code == Code.CREATED
        moved.location = device.location  # the same device behind a NAT that rebound its port
        assert (await moved.update()).code == Code.CHANGED
        assert nosec_server.registrations.by_endpoint["natted"].address == f"127.0.0.1:{udp_port(moved)}"
        assert reg_rows(nosec_server)[0][2] == f"127.0.0.1:{udp_port(moved)}"
        assert (await moved.deregister()).code == Code.DELETED
    finally:
        await device.context.shutdown()
        await moved.context.shutdown()


async def test_device_management_goes_over_the_session_and_never_in_clear(srv: LwM2MServer) -> None:
    identity, key = KEYS["dev-a"]
    dev = await dtls_peer(("127.0.0.1", srv.security.coaps_address[1]), identity.encode(), key.encode())
    try:
        dev.answer(Code.GET, "/3/0/0", Code.CONTENT, b"ACME", cf=0)
        assert (await dev.register("dev-a", links=LINKS.encode(), query=("lt=300",))).code == Code.CREATED
        assert (await srv.read("dev-a", LPath(3, 0, 0))) == {LPath(3, 0, 0): "ACME"}
        assert dev.seen[-1].path == "/3/0/0"
        # the server's package URI for this device is coaps (downloads stay in the session)
        assert srv.package_uri("/p/x", "dev-a").startswith("coaps://127.0.0.1:")
        # the device's session ends: nothing is sent in clear, the operation fails naming why
        dev.interface.reset()
        await eventually(lambda: srv.security.coaps.engine.sessions == 0)
        with pytest.raises(NoSession, match="no DTLS session with dev-a"):
            await srv.read("dev-a", LPath(3, 0, 0), timeout=2)
        # it connects again and updates: the registration follows the new session
        assert (await dev.update()).code == Code.CHANGED
        assert (await srv.read("dev-a", LPath(3, 0, 0))) == {LPath(3, 0, 0): "ACME"}
    finally:
        await dev.context.shutdown()


async def test_revoked_credential_fails_the_next_handshake(srv: LwM2MServer, caplog: pytest.LogCaptureFixture) -> None:
    identity, key = KEYS["dev-b"]
    addr = ("127.0.0.1", srv.security.coaps_address[1])
    dev = await dtls_peer(addr, identity.encode(), key.encode())
    try:
        assert (await dev.register("dev-b", links=LINKS.encode())).code == Code.CREATED
        await srv.security.credentials.revoke("dev-b")
        await eventually(lambda: "dev-b" not in srv.registrations.by_endpoint)
        assert "dev-b" not in srv.registrations.by_endpoint and reg_rows(srv) == []
        assert srv.security.coaps.engine.sessions == 0  # its live session was closed
    finally:
        await dev.context.shutdown()
    again = await dtls_peer(addr, identity.encode(), key.encode())
    try:
        with pytest.raises(aiocoap.error.NetworkError):
            await again.register("dev-b", links=LINKS.encode())
        assert reg_rows(srv) == []
        assert "unknown PSK identity 'dev-b-id'" in caplog.text
    finally:
        await again.context.shutdown()
    # the revoked endpoint does not fall back to NoSec either
    plain = await udp_peer(srv)
    try:
        assert (await plain.register("dev-b")).code == Code.FORBIDDEN
    finally:
        await plain.context.shutdown()
    [row] = srv.store.read_sync(lambda c: list(c.execute(
        select(DEVICE_CREDENTIALS).where(DEVICE_CREDENTIALS.c.endpoint == "dev-b"))))
    assert row.revoked_at is not None and row.key is None
    kinds = srv.store.read_sync(lambda c: [r.kind for r in c.execute(
        select(EVENTS).where(EVENTS.c.endpoint == "dev-b"))])
    assert "revoked" in kinds and "credentials" in kinds


@needs_libcoap_dtls
@pytest.mark.parametrize("tool", ["openssl", "gnutls"])
async def test_revoked_credential_fails_libcoaps_next_handshake(srv: LwM2MServer, caplog: pytest.LogCaptureFixture,
                                                                tool: str) -> None:
    """The same as an independent peer sees it: libcoap registers with its PSK; once the
    credential is revoked its next handshake with that PSK fails and nothing is registered."""
    identity, key = KEYS["dev-a"]
    code, opts, text = await coap_client_psk(tool, identity, key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                             "-t", "40", "-e", LINKS)
    assert code == "2.01", text[-1000:]
    await srv.security.credentials.revoke("dev-a")
    await eventually(lambda: reg_rows(srv) == [] and "dev-a" not in srv.registrations.by_endpoint)
    code, _, text = await coap_client_psk(tool, identity, key, "post", coaps_uri(srv, "/rd?ep=dev-a&lt=300"),
                                          "-t", "40", "-e", LINKS)
    assert code is None, text[-1000:]
    assert reg_rows(srv) == [] and len(srv.registrations) == 0
    assert "unknown PSK identity 'dev-a-id'" in caplog.text
    # the other device's credential is untouched
    code, _, _ = await coap_client_psk(tool, *KEYS["dev-b"], "post", coaps_uri(srv, "/rd?ep=dev-b&lt=300"),
                                       "-t", "40", "-e", LINKS)
    assert code == "2.01"
