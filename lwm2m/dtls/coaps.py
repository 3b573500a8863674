"""CoAP over DTLS (``coaps``) for aiocoap: message interfaces around ``engine.DtlsEndpoint``.

``CoapsServer`` listens on one UDP socket (the LwM2M server's and the bootstrap server's
coaps port): every established session is one ``CoapsAddress``, whose
``authenticated_claims`` carry the PSK identity the peer authenticated with, and through which
the server sends its own requests (device management over the session the device opened; a
server never starts a handshake). ``CoapsClient`` is the device side (the simulator, the
benchmark): one session to one server, opened on the first request, answering the server's
requests on it.

Both plug into an ``aiocoap.Context`` the way aiocoap composes its own transports
(``Context._append_tokenmanaged_messagemanaged_transport``, a private aiocoap 0.4 method that
``dedup.ServerContext`` relies on too): message layer (CON retransmission, deduplication),
token layer, block-wise and observation are aiocoap's; only the datagram path differs.
Why not aiocoap's own ``tinydtls`` / ``tinydtls_server`` transports: see ``engine``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass
from typing import Any

import aiocoap
from aiocoap import Message, error, interfaces
from aiocoap.util import hostportsplit

from lwm2m.dtls.engine import Addr, DtlsEndpoint, Limits, Peer, mapped, unmapped

log = logging.getLogger(__name__)
COAPS_PORT = 5684
SWEEP_S = 0.25


@dataclass(frozen=True)
class PskClaim:
    """What a coaps request's ``remote.authenticated_claims`` holds: the PSK identity."""

    identity: bytes


class CoapsAddress(interfaces.EndpointAddress):  # type: ignore[misc]
    """One DTLS session, as aiocoap's remote of the messages exchanged on it."""

    scheme = "coaps"
    is_multicast = False
    is_multicast_locally = False

    def __init__(self, interface: "_CoapsInterface", peer: Peer) -> None:
        self.interface = interface
        self.peer = peer

    def __repr__(self) -> str:
        return f"<CoapsAddress {self.peer!r}>"

    hostinfo = property(lambda self: self.peer.hostinfo)
    hostinfo_local = property(lambda self: self.interface.hostinfo_local)
    uri_base = property(lambda self: "coaps://" + self.hostinfo)
    uri_base_local = property(lambda self: "coaps://" + self.hostinfo_local)

    @property
    def sockaddr(self) -> tuple[str, int]:
        return unmapped(self.peer.address[0]), self.peer.address[1]

    @property
    def identity(self) -> bytes | None:
        return self.peer.identity

    @property
    def authenticated_claims(self) -> tuple[PskClaim, ...]:
        return (PskClaim(self.peer.identity),) if self.peer.identity is not None else ()

    @property
    def blockwise_key(self) -> tuple[Any, ...]:
        return ("coaps", self.peer.address, self.peer.identity, self.peer.serial)

    @property
    def alive(self) -> bool:
        return self.interface.engine.peers.get(self.peer.address) is self.peer and self.peer.established

    def send(self, data: bytes) -> None:
        if not self.interface.engine.write(self.peer, data):
            log.debug("dropped %d bytes for %s: the DTLS session is gone", len(data), self.peer)


def _socket(bind: tuple[str, int]) -> socket.socket:
    host, port = bind
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::" if host in ("", "0.0.0.0", "::") else mapped(host), port))
    sock.setblocking(False)
    return sock


class _CoapsInterface(interfaces.MessageInterface, asyncio.DatagramProtocol):  # type: ignore[misc]
    engine: DtlsEndpoint

    def __init__(self, mman: Any, loop: asyncio.AbstractEventLoop, bind: tuple[str, int]) -> None:
        self._mman = mman
        self._loop = loop
        self._bind = bind
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        self._sock = _socket(self._bind)
        self._transport, _ = await self._loop.create_datagram_endpoint(lambda: self, sock=self._sock)
        self._sweeper = self._loop.create_task(self._sweep_forever(), name=f"{self.engine.name} sweeper")

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return unmapped(host), port

    @property
    def hostinfo_local(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _datagram(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S * random.uniform(0.8, 1.2))
            try:
                self.engine.sweep()
            except Exception:
                log.exception("%s: sweep failed", self.engine.name)

    # asyncio protocol
    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.engine.receive(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: %s", self.engine.name, exc)

    # engine callbacks
    def _on_data(self, peer: Peer, data: bytes) -> None:
        if self._mman is None or peer.app is None:
            return
        try:
            message = Message.decode(data, remote=peer.app)
        except error.UnparsableMessage:
            log.warning("%s: unparsable CoAP message from %s", self.engine.name, peer.hostinfo)
            return
        self._mman.dispatch_message(message)

    def _on_closed(self, peer: Peer, reason: str) -> None:
        if self._mman is not None and peer.app is not None:
            self._mman.dispatch_error(ConnectionResetError(f"DTLS session with {peer.hostinfo} ended: {reason}"),
                                      peer.app)

    # aiocoap message interface
    def send(self, message: Message) -> None:
        if self._mman is not None:
            message.remote.send(message.encode())

    async def recognize_remote(self, remote: Any) -> bool:
        return isinstance(remote, CoapsAddress) and remote.interface is self and remote.alive

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._mman = None  # the message manager is shutting down: no errors dispatched into it
        self.engine.shutdown()
        if self._transport is not None:
            self._transport.close()


class CoapsServer(_CoapsInterface):
    """The coaps side of a server: sessions opened by clients, keys from ``psk(identity)``."""

    def __init__(self, mman: Any, loop: asyncio.AbstractEventLoop, bind: tuple[str, int], psk: Any,
                 limits: Limits, name: str) -> None:
        super().__init__(mman, loop, bind)
        self.engine = DtlsEndpoint(self._datagram, on_data=self._on_data, on_established=self._on_established,
                                   on_closed=self._on_closed, psk=psk, limits=limits, name=name)

    def _on_established(self, peer: Peer) -> None:
        peer.app = CoapsAddress(self, peer)

    def session_at(self, hostinfo: str, identity: bytes | None = None) -> CoapsAddress | None:
        """The live session from ``host:port`` (with ``identity``, when given)."""
        host, port = hostportsplit(hostinfo)
        peer = self.engine.peers.get((mapped(host), int(port or COAPS_PORT)))
        if peer is None or not peer.established or (identity is not None and peer.identity != identity):
            return None
        return peer.app  # type: ignore[no-any-return]

    async def determine_remote(self, request: Message) -> CoapsAddress | None:
        if request.requested_scheme != "coaps":
            return None
        remote = request.remote
        identity = remote.identity if isinstance(remote, CoapsAddress) else None
        found = self.session_at(remote.hostinfo, identity) if remote.hostinfo else None
        if found is None:
            raise error.NetworkError(f"no DTLS session with {remote.hostinfo}: the device must connect "
                                     "(a server does not start DTLS handshakes)")
        return found


class CoapsClient(_CoapsInterface):
    """The device side: one DTLS session to ``server``, opened (or opened again) on demand."""

    def __init__(self, mman: Any, loop: asyncio.AbstractEventLoop, bind: tuple[str, int], server: tuple[str, int],
                 identity: bytes, key: bytes, limits: Limits, name: str) -> None:
        super().__init__(mman, loop, bind)
        self.server = (mapped(server[0]), server[1])
        self.engine = DtlsEndpoint(self._datagram, on_data=self._on_data, on_established=self._on_established,
                                   on_closed=self._closed, identity=identity, key=key, limits=limits, name=name)
        self._waiter: asyncio.Future[CoapsAddress] | None = None

    def _on_established(self, peer: Peer) -> None:
        peer.app = CoapsAddress(self, peer)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(peer.app)

    def _closed(self, peer: Peer, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error.NetworkError(f"DTLS handshake with {peer.hostinfo} failed: {reason}"))
        self._on_closed(peer, reason)

    async def session(self) -> CoapsAddress:
        """The established session with the server, after a handshake if there is none."""
        peer = self.engine.peers.get(self.server)
        if peer is not None and peer.established:
            return peer.app  # type: ignore[no-any-return]
        if self._waiter is None or self._waiter.done():
            self._waiter = self._loop.create_future()
            self._waiter.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            self.engine.connect(self.server)
        return await asyncio.shield(self._waiter)

    def reset(self) -> None:
        """Forget the session (the next request shakes hands again), e.g. after the server restarted."""
        peer = self.engine.peers.get(self.server)
        if peer is not None:
            self.engine.close(peer, "reset by the client")

    @property
    def established(self) -> bool:
        peer = self.engine.peers.get(self.server)
        return peer is not None and peer.established

    async def determine_remote(self, request: Message) -> CoapsAddress | None:
        if request.requested_scheme != "coaps":
            return None
        host, port = hostportsplit(request.remote.hostinfo)
        if (mapped(host), int(port or COAPS_PORT)) != self.server:
            raise error.NetworkError(f"this client holds DTLS credentials for {unmapped(self.server[0])}:"
                                     f"{self.server[1]} only, not {request.remote.hostinfo}")
        return await self.session()


async def _append(context: aiocoap.Context, build: Any) -> Any:
    made: list[Any] = []

    async def constructor(mman: Any) -> Any:
        interface = build(mman)
        await interface._open()
        made.append(interface)
        return interface

    await context._append_tokenmanaged_messagemanaged_transport(constructor)
    return made[0]


async def add_server(context: aiocoap.Context, bind: tuple[str, int], psk: Any, *, limits: Limits = Limits(),
                     name: str = "coaps") -> CoapsServer:
    """Add a coaps listener on ``bind`` to ``context`` (its serversite answers requests on it)."""
    loop = asyncio.get_running_loop()

    return await _append(context, lambda mman: CoapsServer(mman, loop, bind, psk, limits, name))  # type: ignore[no-any-return]


async def client_context(site: Any, server: tuple[str, int], identity: bytes, key: bytes, *,
                         bind: tuple[str, int] = ("127.0.0.1", 0), limits: Limits = Limits(),
                         name: str = "coaps client") -> tuple[aiocoap.Context, CoapsClient]:
    """A context whose only transport is a DTLS-PSK session to ``server``; ``site`` answers the
    server's requests on it."""
    loop = asyncio.get_running_loop()
    context = aiocoap.Context(loop=loop, serversite=site)

    return context, await _append(context, lambda mman: CoapsClient(mman, loop, bind, server, identity, key,
                                                                    limits, name))
