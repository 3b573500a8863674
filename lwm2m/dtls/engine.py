"""DTLS 1.2 sessions on one UDP socket, over tinydtls (the DTLSSocket binding): the sans-IO core.

``DtlsEndpoint`` owns one tinydtls context for one socket and every peer on it: datagrams go in
through ``receive``, application data comes out through ``on_data``, records to send go out
through the ``send`` callable it was given; ``sweep`` runs tinydtls' handshake retransmissions
and ends handshakes that stall. It does no I/O of its own (``coaps`` drives it from asyncio).

tinydtls does the record layer and the handshake: cipher suite TLS_PSK_WITH_AES_128_CCM_8 (the
LwM2M / RFC 7925 mandatory PSK suite; the binding installs no ECDSA callbacks, so the RPK suite
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 is not offered and a client offering only that fails), and
the stateless cookie exchange of RFC 6347 4.2.1: a ClientHello without a valid cookie gets a
HelloVerifyRequest and tinydtls keeps nothing. This module adds what the binding lacks:

- one context for all peers (aiocoap's ``tinydtls_server`` makes a tinydtls context, an
  address object and a task per source address before any cookie is checked, and never
  purges them, so each spoofed source costs memory). Here a peer exists in Python only once
  tinydtls answered its ClientHello with a ServerHello, which needs the cookie, which needs the
  source address to be real; the count of such half-open handshakes is capped, and each one
  has a deadline;
- which PSK identity a session authenticated with (the binding reports neither the session of
  a key lookup nor of an event; both happen synchronously inside ``handleMessage``, so they are
  attributed to the datagram being handled);
- failures as one log line without key material: an unknown identity (tinydtls answers with a
  fatal alert), a wrong key (tinydtls silently drops a Finished it cannot decrypt: a handshake
  record of epoch 1 that does not complete the handshake is reported at once), a stall;
- no writes to an address without an established session (tinydtls' ``dtls_write`` would
  start a client handshake towards it);
- a cap on established sessions (least recently active evicted);
- (server role) clients that send no RFC 5746 renegotiation indication are accepted
  (``user_parameters``: older tinydtls clients such as Wakaama's send none).

Memory safety with the binding: its ``Connection`` objects reset their peer in ``__dealloc__``
through a reference to the context that the garbage collector may already have cleared (a
segfault when a session is collected in a reference cycle), and a context freed while it
still has peers calls back into Python from its own deallocation. So no ``Connection`` is ever
made (a client handshake starts with an empty ``write`` to the server's plain ``Session``,
which tinydtls turns into a ClientHello), the context's callbacks hold only a weak reference
to the endpoint (no cycle through the context), and the endpoint's finalizer resets every
peer before the context goes.

tinydtls' clock: ``dtls_init`` (run by every new context) resets tinydtls' global clock
offset, which delays retransmissions of handshakes in flight in other contexts of the same
process; handshake deadlines here use Python's monotonic clock and are not affected.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from lwm2m.dtls.user_parameters import relax_renegotiation_info

log = logging.getLogger(__name__)

Addr = tuple[str, int]  # IPv6 text (IPv4 as ::ffff:a.b.c.d), port

# tinydtls events (dtls.h) and alert levels (RFC 5246 7.2)
EVENT_CONNECT, EVENT_CONNECTED, EVENT_RENEGOTIATE = 0x01DC, 0x01DE, 0x01DF
LEVEL_WARNING, LEVEL_FATAL = 1, 2
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
          42: "bad_certificate", 47: "illegal_parameter", 50: "decode_error", 51: "decrypt_error",
          70: "protocol_version", 71: "insufficient_security", 80: "internal_error", 115: "unknown_psk_identity"}

# record layer (RFC 6347 4.1): content type, version, epoch, sequence number, length
HEADER_BYTES = 13
HANDSHAKE, CHANGE_CIPHER_SPEC = 22, 20
CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3


def records(data: bytes) -> Iterator[tuple[int, int, int | None]]:
    """(content type, epoch, handshake type of an epoch-0 handshake record or None) per record."""
    at = 0
    while at + HEADER_BYTES <= len(data):
        ctype, epoch = data[at], int.from_bytes(data[at + 3:at + 5], "big")
        length = int.from_bytes(data[at + 11:at + 13], "big")
        first = data[at + HEADER_BYTES] if ctype == HANDSHAKE and epoch == 0 and length else None
        yield ctype, epoch, first
        at += HEADER_BYTES + length


def describe_identity(identity: bytes) -> str:
    """How an identity appears in logs and errors: text if printable, else hex (never a key)."""
    try:
        text = identity.decode("ascii")
        if text.isprintable():
            return repr(text[:64])
    except UnicodeDecodeError:
        pass
    return identity[:32].hex()


def mapped(host: str) -> str:
    """tinydtls sessions are IPv6: IPv4 addresses travel v4-mapped."""
    return f"::ffff:{host}" if "." in host and ":" not in host else host


def unmapped(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


@dataclass(frozen=True)
class Limits:
    handshake_timeout_s: float = 10.0   # a handshake (after the cookie exchange) must finish within this
    max_handshakes: int = 2048          # half-open handshakes at once; more are dropped
    max_sessions: int = 250_000         # established sessions; the least recently active is evicted beyond
    idle_timeout_s: float = 0.0         # 0: sessions stay until closed or evicted


class Peer:
    """One DTLS peer (a session, or a handshake that passed the cookie exchange)."""

    __slots__ = ("address", "identity", "established", "started_at", "last_seen", "problem", "session", "app",
                 "serial")

    def __init__(self, address: Addr, session: Any, serial: int) -> None:
        self.address = address
        self.identity: bytes | None = None
        self.established = False
        self.started_at = self.last_seen = time.monotonic()
        self.problem: str | None = None
        self.session = session
        self.app: Any = None  # the transport's address object
        self.serial = serial

    @property
    def hostinfo(self) -> str:
        host, port = unmapped(self.address[0]), self.address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def __repr__(self) -> str:
        who = describe_identity(self.identity) if self.identity is not None else "no identity yet"
        return f"<DTLS peer {self.hostinfo} {who} {'established' if self.established else 'handshake'}>"


class _KeyLookup:
    """The dict-like object the binding asks for PSKs (``in`` then ``[]``), reporting each lookup."""

    def __init__(self, endpoint: "DtlsEndpoint") -> None:
        self._endpoint = weakref.ref(endpoint)
        self._last: tuple[bytes, bytes | None] | None = None

    def keys(self) -> "_KeyLookup":
        return self

    def __contains__(self, identity: object) -> bool:
        endpoint = self._endpoint()
        if not isinstance(identity, bytes) or endpoint is None:
            return False
        key = endpoint._lookup(identity)
        self._last = (identity, key)
        return key is not None

    def __getitem__(self, identity: bytes) -> bytes:
        if self._last is None or self._last[0] != identity or self._last[1] is None:
            raise KeyError("PSK identity not looked up")
        return self._last[1]


class DtlsEndpoint:
    """All DTLS peers of one UDP socket. Server role: ``psk`` maps an identity to its key (None:
    unknown). Client role: ``identity`` and ``key`` are this side's credentials; ``connect``."""

    def __init__(self, send: Callable[[bytes, Addr], Any], *, on_data: Callable[[Peer, bytes], None],
                 on_established: Callable[[Peer], None] | None = None,
                 on_closed: Callable[[Peer, str], None] | None = None,
                 psk: Callable[[bytes], bytes | None] | None = None,
                 identity: bytes | None = None, key: bytes | None = None,
                 limits: Limits = Limits(), name: str = "DTLS") -> None:
        from DTLSSocket import dtls  # the compiled tinydtls binding (aiocoap[tinydtls])

        self._dtls = dtls
        self._send, self.on_data = send, on_data
        self.on_established, self.on_closed = on_established, on_closed
        self.limits, self.name = limits, name
        self._psk = psk
        self.client = psk is None
        if self.client:
            if identity is None or key is None:
                raise ValueError("a DTLS client needs a PSK identity and key")
            store: Any = {identity: key}
        else:
            store = _KeyLookup(self)
        me = weakref.ref(self)
        self._ctx = dtls.DTLS(read=_trampoline(me, "_read"), write=_trampoline(me, "_write"),
                              event=_trampoline(me, "_event"), pskId=identity or b"", pskStore=store)
        self.renegotiation_info_optional = not self.client and relax_renegotiation_info(self._ctx)
        self._identity = identity
        self.peers: OrderedDict[Addr, Peer] = OrderedDict()  # established ones in activity order
        self.handshakes = 0
        self._current: Addr | None = None
        self._connected_now = self._created_now = False
        self._serial = 0
        self._capacity_logged = 0.0
        self.stats = {"datagrams": 0, "hello_verify": 0, "handshakes": 0, "established": 0, "failed": 0,
                      "dropped_capacity": 0}

    # -- tinydtls callbacks (synchronous, inside receive / write / connect / sweep) -----------

    def _write(self, addr: Addr, data: bytes) -> int:
        if not self.client and addr == self._current and addr not in self.peers and len(data) > HEADER_BYTES:
            kinds = {first for ctype, _epoch, first in records(data) if ctype == HANDSHAKE}
            if SERVER_HELLO in kinds:
                self._new_peer(addr, self._dtls.Session(addr[0], addr[1]))
                self._created_now = True
            elif HELLO_VERIFY_REQUEST in kinds:
                self.stats["hello_verify"] += 1
        self._send(data, addr)
        return len(data)

    def _read(self, addr: Addr, data: bytes) -> int:
        peer = self.peers.get(addr)
        if peer is not None and peer.established:
            peer.last_seen = time.monotonic()
            self.peers.move_to_end(addr)
            self.on_data(peer, data)
        return len(data)

    def _event(self, level: int, code: int) -> int:
        peer = self.peers.get(self._current) if self._current is not None else None
        if peer is None:
            return 0
        if level == 0 and code == EVENT_CONNECTED:
            self._connected_now = True
        elif level == LEVEL_FATAL or (level == LEVEL_WARNING and code == 0):
            peer.problem = peer.problem or f"alert {ALERTS.get(code, code)}"
        return 0

    def _lookup(self, identity: bytes) -> bytes | None:
        assert self._psk is not None
        key = self._psk(identity)
        peer = self.peers.get(self._current) if self._current is not None else None
        if peer is not None:
            peer.identity = identity
            if key is None:
                peer.problem = f"unknown PSK identity {describe_identity(identity)}"
        return key

    # -- peers ------------------------------------------------------------------------------

    def _new_peer(self, addr: Addr, session: Any) -> Peer:
        self._serial += 1
        peer = Peer(addr, session, self._serial)
        if self.client:
            peer.identity = self._identity
        self.peers[addr] = peer
        self.peers.move_to_end(addr, last=False)  # handshakes first; established ones move to the end
        self.handshakes += 1
        self.stats["handshakes"] += 1
        return peer

    def _forget(self, peer: Peer, reason: str, *, failed: bool = False, notify: bool = True) -> None:
        if self.peers.get(peer.address) is not peer:
            return
        del self.peers[peer.address]
        if not peer.established:
            self.handshakes -= 1
        try:
            self._ctx.resetPeer(peer.session)
        except Exception:  # the binding raises on a session tinydtls no longer knows
            pass
        if failed:
            self.stats["failed"] += 1
            who = f" (identity {describe_identity(peer.identity)})" if peer.identity is not None else ""
            log.warning("%s handshake with %s failed%s: %s", self.name, peer.hostinfo, who, reason)
        if notify and self.on_closed is not None:
            self.on_closed(peer, reason)

    def _settle(self, addr: Addr, rc: int, data: bytes) -> None:
        """After tinydtls handled a datagram from ``addr``: established, failed, or still going."""
        peer = self.peers.get(addr)
        if peer is None:
            return
        if self._connected_now and not peer.established:
            peer.established, peer.problem = True, None
            self.handshakes -= 1
            self.stats["established"] += 1
            self.peers.move_to_end(addr)
            self._evict()
            if self.on_established is not None:
                self.on_established(peer)
            return
        if peer.established:
            if peer.problem is not None:  # close_notify or a fatal alert on a live session
                self._forget(peer, peer.problem)
            return
        if peer.problem is not None or rc < 0:
            self._forget(peer, peer.problem or "tinydtls refused the handshake", failed=True)
        elif peer.identity is not None and any(ct == HANDSHAKE and ep >= 1 for ct, ep, _ in records(data)):
            self._forget(peer, "its Finished message did not verify (wrong PSK for this identity?)", failed=True)
        elif self._created_now and self.handshakes > self.limits.max_handshakes:
            self.stats["dropped_capacity"] += 1
            now = time.monotonic()
            if now - self._capacity_logged > 10:
                self._capacity_logged = now
                log.warning("%s: %d handshakes in progress (limit %d): dropping new ones", self.name,
                            self.handshakes, self.limits.max_handshakes)
            self._forget(peer, "too many handshakes in progress", notify=False)

    def _evict(self) -> None:
        while len(self.peers) - self.handshakes > self.limits.max_sessions:
            oldest = next(p for p in self.peers.values() if p.established)
            self.close(oldest, "evicted: session limit reached")

    # -- the interface ----------------------------------------------------------------------

    def receive(self, data: bytes, addr: Addr) -> None:
        """A datagram arrived from ``addr`` (IPv6 text, port)."""
        self.stats["datagrams"] += 1
        self._current, self._connected_now, self._created_now = addr, False, False
        try:
            rc = self._ctx.handleMessageAddr(addr[0], addr[1], data)
        finally:
            self._current = None
        self._settle(addr, rc, data)

    def write(self, peer: Peer, data: bytes) -> bool:
        """Send application data on an established session; False if it is gone."""
        if not peer.established or self.peers.get(peer.address) is not peer:
            return False
        self._current = peer.address
        try:
            rc = self._ctx.write(peer.session, data)
        finally:
            self._current = None
        return bool(rc >= 0)

    def connect(self, addr: Addr) -> Peer:
        """Client role: start a handshake with ``addr`` (the ClientHello goes out now)."""
        if not self.client:
            raise RuntimeError("a DTLS server does not start handshakes")
        old = self.peers.get(addr)
        if old is not None:
            return old
        self._current = addr
        try:
            session = self._dtls.Session(addr[0], addr[1])
            peer = self._new_peer(addr, session)
            if self._ctx.write(session, b"") < 0:  # no peer yet: tinydtls starts the handshake
                self._forget(peer, "tinydtls refused to start a handshake", notify=False)
                raise ConnectionError(f"tinydtls refused to start a handshake with {addr}")
        finally:
            self._current = None
        return peer

    def close(self, peer: Peer, reason: str = "closed") -> None:
        """Send close_notify (established sessions) and forget the peer."""
        if peer.established and self.peers.get(peer.address) is peer:
            self._current = peer.address
            try:
                self._ctx.close(peer.session)
            except Exception:
                pass
            finally:
                self._current = None
        self._forget(peer, reason)

    def sweep(self, now: float | None = None) -> None:
        """Retransmit handshake flights that are due; end stalled handshakes and idle sessions."""
        now = time.monotonic() if now is None else now
        if self.handshakes:
            self._ctx.checkRetransmit()
        stalled = []
        for peer in self.peers.values():  # handshakes first
            if peer.established:
                break
            if now - peer.started_at > self.limits.handshake_timeout_s:
                stalled.append(peer)
        for peer in stalled:
            self._forget(peer, peer.problem or f"no complete handshake within {self.limits.handshake_timeout_s:g} s",
                         failed=True)
        if self.limits.idle_timeout_s > 0:
            idle = [p for p in self.peers.values()
                    if p.established and now - p.last_seen > self.limits.idle_timeout_s]
            for peer in idle:
                self.close(peer, "idle")

    def shutdown(self) -> None:
        for peer in list(self.peers.values()):
            self.close(peer, "shut down")

    @property
    def sessions(self) -> int:
        return len(self.peers) - self.handshakes

    def __del__(self) -> None:
        """Reset every peer while the context is intact (see the module docstring)."""
        ctx = getattr(self, "_ctx", None)
        for peer in list(getattr(self, "peers", {}).values()):
            try:
                ctx.resetPeer(peer.session)  # type: ignore[union-attr]
            except Exception:
                pass


def _trampoline(endpoint: "weakref.ref[DtlsEndpoint]", method: str) -> Callable[[Any, Any], int]:
    """A tinydtls callback that reaches the endpoint through a weak reference."""
    def call(a: Any, b: Any) -> int:
        target = endpoint()
        if target is None:
            return len(b) if isinstance(b, bytes) else 0
        return int(getattr(target, method)(a, b))
    return call
