"""The DTLS engine (tinydtls under ``lwm2m.dtls``): handshakes driven datagram by datagram
without sockets, and a ClientHello flood over loopback.

Sans-IO: a server and client ``DtlsEndpoint`` exchange the records they emit through lists,
so each test controls which datagram arrives (or does not). The bytes are tinydtls'; the checks
read them as RFC 6347 records (the cipher suite in the ServerHello, HelloVerifyRequest).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import aiocoap
import pytest

from lwm2m.dtls import coaps
from lwm2m.dtls.engine import (CLIENT_HELLO, HANDSHAKE, HELLO_VERIFY_REQUEST, SERVER_HELLO, DtlsEndpoint, Limits,
                               records)

SERVER = ("::ffff:10.0.0.254", 5684)
KEYS = {b"dev-1": b"0123456789abcdef", b"dev-2": b"fedcba9876543210", b"dev-3": b"aaaaaaaaaaaaaaaa"}
TLS_PSK_WITH_AES_128_CCM_8 = b"\xc0\xa8"


class Net:
    """One server endpoint and any number of clients, wired through lists."""

    def __init__(self, **limits: float) -> None:
        self.to_server: list[tuple[tuple[str, int], bytes]] = []
        self.to_clients: list[tuple[tuple[str, int], bytes]] = []
        self.got: list[tuple[bytes | None, bytes]] = []
        self.server = DtlsEndpoint(lambda data, addr: self.to_clients.append((addr, data)),
                                   on_data=lambda peer, data: self.got.append((peer.identity, data)),
                                   psk=KEYS.get, limits=Limits(**limits), name="test server")
        self.clients: dict[tuple[str, int], DtlsEndpoint] = {}

    def client(self, n: int, identity: bytes, key: bytes) -> tuple[tuple[str, int], DtlsEndpoint]:
        addr = (f"::ffff:10.0.0.{n}", 40000 + n)
        ep = DtlsEndpoint(lambda data, _to, a=addr: self.to_server.append((a, data)), on_data=lambda p, d: None,
                          identity=identity, key=key, name=f"client {n}")
        self.clients[addr] = ep
        return addr, ep

    def pump(self, rounds: int = 10, drop_to: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
        for _ in range(rounds):
            out, self.to_server = self.to_server, []
            for addr, data in out:
                self.server.receive(data, addr)
            back, self.to_clients = self.to_clients, []
            for addr, data in back:
                if addr not in drop_to:
                    self.clients[addr].receive(data, SERVER)
            if not self.to_server and not self.to_clients:
                return


def handshake_types(data: bytes) -> set[int | None]:
    return {first for ctype, _epoch, first in records(data) if ctype == HANDSHAKE}


def test_psk_handshake_negotiates_aes_128_ccm_8_and_carries_data() -> None:
    net = Net()
    addr, client = net.client(1, b"dev-1", KEYS[b"dev-1"])
    peer = client.connect(SERVER)
    first_flight = list(net.to_server)
    assert handshake_types(first_flight[0][1]) == {CLIENT_HELLO}
    # the server's first answer is a HelloVerifyRequest: no peer state yet
    net.server.receive(first_flight[0][1], addr)
    net.to_server.clear()
    assert handshake_types(net.to_clients[0][1]) == {HELLO_VERIFY_REQUEST}
    assert net.server.peers == {}
    net.pump()
    assert peer.established and net.server.sessions == 1
    [server_peer] = net.server.peers.values()
    assert server_peer.identity == b"dev-1"
    assert client.write(peer, b"hello")
    net.pump()
    assert net.got == [(b"dev-1", b"hello")]


def test_the_server_hello_names_tls_psk_with_aes_128_ccm_8() -> None:
    net = Net()
    addr, client = net.client(1, b"dev-1", KEYS[b"dev-1"])
    client.connect(SERVER)
    seen: list[bytes] = []
    for _ in range(3):
        for a, data in net.to_server:
            net.server.receive(data, a)
        net.to_server.clear()
        seen += [d for _a, d in net.to_clients]
        for _a, data in net.to_clients:
            client.receive(data, SERVER)
        net.to_clients.clear()
    hello = next(d for d in seen if SERVER_HELLO in handshake_types(d))
    body = hello[13 + 12:]  # record header, handshake header
    session_id_len = body[2 + 32]
    assert body[:2] == b"\xfe\xfd"  # DTLS 1.2
    assert body[2 + 32 + 1 + session_id_len:][:2] == TLS_PSK_WITH_AES_128_CCM_8


def test_a_stalled_handshake_ends_at_its_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """A client that passed the cookie exchange and then went silent: dropped at the deadline."""
    net = Net(handshake_timeout_s=0.01)
    addr, client = net.client(2, b"dev-2", KEYS[b"dev-2"])
    client.connect(SERVER)
    for _ in range(2):  # ClientHello -> HelloVerifyRequest -> ClientHello with cookie -> ServerHello...
        out, net.to_server = net.to_server, []
        for a, d in out:
            net.server.receive(d, a)
        back, net.to_clients = net.to_clients, []
        for _a, d in back:
            if HELLO_VERIFY_REQUEST in handshake_types(d):
                client.receive(d, SERVER)  # ... whose ServerHello flight never arrives
    assert net.server.handshakes == 1 and len(net.server.peers) == 1
    time.sleep(0.02)
    caplog.set_level(logging.WARNING)
    net.server.sweep()
    assert net.server.peers == {} and net.server.handshakes == 0
    assert "no complete handshake within 0.01 s" in caplog.text


def test_half_open_handshakes_are_capped() -> None:
    net = Net(max_handshakes=2)
    clients = [net.client(n, ident, KEYS[ident]) for n, ident in enumerate(KEYS, 1)]
    for _addr, c in clients:
        c.connect(SERVER)
    # deliver every flight to the server, but nothing back after the HelloVerifyRequests
    for _ in range(2):
        out, net.to_server = net.to_server, []
        for a, d in out:
            net.server.receive(d, a)
        back, net.to_clients = net.to_clients, []
        for a, d in back:
            if HELLO_VERIFY_REQUEST in handshake_types(d):
                net.clients[a].receive(d, SERVER)
    assert net.server.handshakes == 2 and net.server.stats["dropped_capacity"] == 1


def test_sessions_beyond_the_limit_evict_the_least_recently_active() -> None:
    net = Net(max_sessions=2)
    peers = []
    for n, ident in enumerate(KEYS, 1):
        addr, c = net.client(n, ident, KEYS[ident])
        peers.append((addr, c.connect(SERVER)))
        net.pump()
    assert net.server.sessions == 2
    assert sorted(p.identity for p in net.server.peers.values()) == [b"dev-2", b"dev-3"]


def test_wrong_key_is_reported_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    net = Net()
    _, client = net.client(1, b"dev-1", b"not-the-key-0000")
    peer = client.connect(SERVER)
    net.pump()
    assert not peer.established and net.server.peers == {}
    [line] = [r.getMessage() for r in caplog.records
              if r.name == "lwm2m.dtls.engine" and "test server" in r.getMessage()]
    assert "identity 'dev-1'" in line and "did not verify" in line
    assert "not-the-key" not in caplog.text and KEYS[b"dev-1"].decode() not in caplog.text


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def test_a_client_hello_flood_keeps_no_state_per_source() -> None:
    """Each spoofed source gets a HelloVerifyRequest (the stateless cookie exchange) and the
    server keeps nothing for it: no peer, and the process does not grow per source."""
    ctx = aiocoap.Context(loop=asyncio.get_running_loop(), serversite=None)
    server = await coaps.add_server(ctx, ("127.0.0.1", 0), KEYS.get)
    hello: list[bytes] = []
    DtlsEndpoint(lambda d, _a: hello.append(d), on_data=lambda p, d: None, identity=b"x", key=b"0" * 16
                 ).connect(("::ffff:127.0.0.1", server.address[1]))
    target = ("127.0.0.1", server.address[1])
    loop = asyncio.get_running_loop()

    async def burst(n: int) -> int:
        answered = 0
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
        try:
            for s in socks:
                s.setblocking(False)
                s.sendto(hello[0], target)
            for s in socks:
                data = await asyncio.wait_for(loop.sock_recv(s, 2048), 5)
                answered += HELLO_VERIFY_REQUEST in handshake_types(data)
        finally:
            for s in socks:
                s.close()
        return answered

    try:
        assert await burst(200) == 200  # warm up allocator pools
        before = rss_bytes()
        answered = sum([await burst(250) for _ in range(16)])
        grown = rss_bytes() - before
        assert answered == 4000 and server.engine.stats["hello_verify"] == 4200
        assert server.engine.peers == {} and server.engine.handshakes == 0
        assert grown < 1_000_000, f"RSS grew {grown} bytes over 4000 spoofed sources"
    finally:
        await ctx.shutdown()
