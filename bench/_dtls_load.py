"""The load generator's DTLS side: the registration load of ``_coap_load`` over DTLS-PSK sessions.

Each simulated device is one ``DtlsSocket``: its own UDP socket (the server tells DTLS sessions
apart by source address) and its own client ``lwm2m.dtls.engine.DtlsEndpoint`` (tinydtls, the
engine the simulator and the server use: no second DTLS implementation here), carrying the same
hand-encoded CoAP requests as the NoSec load as application data on its session.

``provision`` is what an operator does for a production batch: a CSV ``endpoint,identity,key``
(``_process.psk_batch``: one random 16-byte PSK per device, the endpoint name as identity)
imported into the running server with ``tinymlaas credentials import`` (one API request, all
rows or none). ``drive_dtls``
runs three phases: a full handshake per device (ClientHello, cookie exchange, PSK key exchange,
Finished: RFC 6347, TLS_PSK_WITH_AES_128_CCM_8), then the Register of every device that has a
session, then one Update per registration, each with at most ``concurrency`` in flight.

Session resumption is not measured because tinydtls cannot do it: its ClientHello always
carries an empty session id and its ServerHello answers with "no session id" (tinydtls
``dtls.c``), and it has no session tickets (RFC 5077) nor connection ids (RFC 9146); a device
that lost its session always makes a full handshake.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any, Callable

from _coap_load import CoapSocket, Counters, PhaseResult, close_sockets, endpoint_name, load, measure, token_source
from _process import HOST, REPO, ServerProcess, psk_batch

if str(REPO) not in sys.path:  # the project's own lwm2m package, from this checkout
    sys.path.insert(1, str(REPO))
from lwm2m.dtls.engine import DtlsEndpoint, Limits, Peer, mapped  # noqa: E402

HANDSHAKE_TIMEOUT_S = 10.0  # tinydtls retransmits the flights meanwhile (engine.sweep)
SWEEP_S = 0.25
CLIENT_LIMITS = Limits(handshake_timeout_s=HANDSHAKE_TIMEOUT_S, max_handshakes=1, max_sessions=1)
RESUMPTION = "not supported by tinydtls (empty session id, no tickets): every handshake is a full one"


class DtlsSocket(CoapSocket):
    """One simulated device over DTLS-PSK: its UDP socket, its DTLS session, its CoAP requests."""

    def __init__(self, server: tuple[str, int], counters: Counters, next_token: Any, identity: bytes,
                 key: bytes) -> None:
        super().__init__(server, counters, next_token)
        self.server_addr = (mapped(server[0]), server[1])
        self.engine = DtlsEndpoint(self._datagram_out, on_data=self._application_data,
                                   on_established=self._established, on_closed=self._closed,
                                   identity=identity, key=key, limits=CLIENT_LIMITS, name="bench device")
        self.peer: Peer | None = None
        self.shaken: asyncio.Future | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.t0 = 0.0

    # UDP <-> tinydtls
    def _datagram_out(self, data: bytes, _addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.engine.receive(data, self.server_addr)

    # tinydtls <-> CoAP
    def _application_data(self, _peer: Peer, data: bytes) -> None:
        self.coap_received(data)

    def _out(self, data: bytes) -> None:
        if self.peer is None or not self.engine.write(self.peer, data):
            self.counters.unsent += 1  # no session: the request times out and is counted as such

    # the handshake
    def handshake(self) -> asyncio.Future:
        """A future for (established?, reason, latency_s); the ClientHello goes out now. The engine
        ends a handshake at its deadline; the timer here bounds it even so (a timer, not
        ``wait_for``: no task per handshake in the load generator)."""
        self.shaken = self.loop.create_future()
        self.t0 = time.perf_counter()
        self.deadline = self.loop.call_later(HANDSHAKE_TIMEOUT_S + 5, self._settle, False,
                                             "no outcome within the handshake deadline")
        try:
            self.peer = self.engine.connect(self.server_addr)
        except ConnectionError as exc:
            self._settle(False, str(exc))
        return self.shaken

    def _settle(self, ok: bool, reason: str) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        if self.shaken is not None and not self.shaken.done():
            self.shaken.set_result((ok, reason, time.perf_counter() - self.t0))

    def _established(self, _peer: Peer) -> None:
        self._settle(True, "")

    def _closed(self, peer: Peer, reason: str) -> None:
        if peer is self.peer:
            self.peer = None
        self._settle(False, reason)


def provision(server: ServerProcess, prefix: str, devices: int) -> tuple[dict[int, tuple[bytes, bytes]], float]:
    """The batch's CSV, imported with the CLI into ``server``; (device index -> (identity, key),
    seconds the import took)."""
    names = [endpoint_name(prefix, i) for i in range(devices)]
    creds = psk_batch(server.workdir / "batch.csv", names)
    import_s = server.import_credentials(server.workdir / "batch.csv", devices)
    return {i: creds[name] for i, name in enumerate(names)}, import_s


async def _sweep_forever(sockets: list[DtlsSocket]) -> None:
    """tinydtls' handshake retransmissions and deadlines, for the devices still shaking hands."""
    while True:
        await asyncio.sleep(SWEEP_S * random.uniform(0.8, 1.2))
        for s in sockets:
            if s.engine.handshakes:
                s.engine.sweep()


async def run_handshakes(sockets: list[DtlsSocket], concurrency: int, deadline_s: float,
                         server_pid: int) -> PhaseResult:
    res = PhaseResult("handshake", requests=len(sockets))
    it = iter(sockets)
    stop_at = time.monotonic() + deadline_s

    async def worker() -> None:
        for sock in it:
            if time.monotonic() > stop_at:
                res.fail("phase deadline passed, no handshake started")
                continue
            ok, reason, latency = await sock.handshake()
            res.latencies.append(latency)
            if ok:
                res.ok += 1
            else:
                res.fail(f"handshake failed: {reason}")

    return await measure(res, server_pid, [worker() for _ in range(max(1, min(concurrency, len(sockets))))])


async def drive_dtls(port: int, creds: dict[int, tuple[bytes, bytes]], concurrency: int, deadline_s: float,
                     server_pid: int, update_lifetime: int | None, prefix: str,
                     after_handshakes: Callable[[], None] = lambda: None,
                     ) -> tuple[PhaseResult, PhaseResult, PhaseResult, Counters, dict[str, int]]:
    """Handshake, Register, Update (``after_handshakes`` runs between the first two: the profiler's
    cut); also the client side's DTLS datagram counts."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    next_token = token_source()
    sockets: list[DtlsSocket] = []
    sweeper: asyncio.Task[None] | None = None
    try:
        # every tinydtls context first: a new one resets tinydtls' clock (see lwm2m.dtls.engine)
        for i in range(len(creds)):
            identity, key = creds[i]
            _t, proto = await loop.create_datagram_endpoint(
                lambda identity=identity, key=key: DtlsSocket((HOST, port), counters, next_token, identity, key),
                remote_addr=(HOST, port))
            sockets.append(proto)
        sweeper = loop.create_task(_sweep_forever(sockets), name="bench DTLS sweeper")
        shake = await run_handshakes(sockets, concurrency, deadline_s, server_pid)
        stats = {"client_datagrams_in": sum(s.engine.stats["datagrams"] for s in sockets),  # handshakes only
                 "client_handshakes_failed": sum(s.engine.stats["failed"] for s in sockets)}
        after_handshakes()
        # a device whose handshake failed (counted in that phase) sends nothing more
        shaken = [i for i, s in enumerate(sockets) if s.peer is not None and s.peer.established]
        reg, upd = await load(sockets, shaken, concurrency, deadline_s, server_pid, update_lifetime, prefix)
        return shake, reg, upd, counters, stats
    finally:
        if sweeper is not None:
            sweeper.cancel()
        close_sockets(sockets)
