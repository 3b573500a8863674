"""The load generator's CoAP side: hand-encoded CoAP (RFC 7252) over shared UDP sockets.

Used by ``bench/registrations.py`` (and, through ``_dtls_load``, for the same load over DTLS):
``CoapSocket`` is one UDP socket shared by several simulated devices (its own message-id
counter, tokens, RFC 7252 retransmission of the same message id and token, empty ACKs and
separate responses); ``run_phase`` sends one phase's requests with at most ``concurrency`` in
flight and counts what came back; ``drive`` is the NoSec load: N Registers, then an Update of
every registration. Hand-written rather than aiocoap: the load generator must cost far less CPU
per request than the server it measures (aiocoap's per-message work would make it the limit).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from _process import HOST, proc_cpu_s, system_cpu_s

# CoAP (RFC 7252)
CON, NON, ACK, RST = 0, 1, 2, 3
POST = 0x02
CREATED, CHANGED = 0x41, 0x44  # 2.01, 2.04
OPT_LOCATION_PATH, OPT_URI_PATH, OPT_CONTENT_FORMAT, OPT_URI_QUERY = 8, 11, 12, 15
CF_LINK_FORMAT = 40

ACK_TIMEOUT_S = 2.0
MAX_RETRANSMIT = 4
SEPARATE_WAIT_S = 10.0  # after an empty ACK: how long to wait for the separate response
MAX_SOCKETS = 512

LINKS = b'</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</4/0>,</5/0>,</33100/0>,</33101/0>'
LIFETIME_S = 86400


# -- CoAP encoding / decoding -----------------------------------------------------------------

def _ext(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, struct.pack(">H", value - 269)


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Options as (number, value), already in ascending order; delta-encoded."""
    out = bytearray()
    last = 0
    for number, value in options:
        dn, dx = _ext(number - last)
        ln, lx = _ext(len(value))
        out.append((dn << 4) | ln)
        out += dx
        out += lx
        out += value
        last = number
    return bytes(out)


def encode_uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def encode_message(mtype: int, code: int, mid: int, token: bytes, options_blob: bytes, payload: bytes = b"") -> bytes:
    head = struct.pack(">BBH", 0x40 | (mtype << 4) | len(token), code, mid) + token + options_blob
    return head + b"\xff" + payload if payload else head


def decode_message(data: bytes) -> tuple[int, int, int, bytes, list[tuple[int, bytes]], bytes] | None:
    """(type, code, mid, token, options, payload), or None if malformed."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    mtype, tkl = (data[0] >> 4) & 3, data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        return None
    code = data[1]
    mid = (data[2] << 8) | data[3]
    token = data[4:4 + tkl]
    options: list[tuple[int, bytes]] = []
    i, n, number = 4 + tkl, len(data), 0
    payload = b""
    while i < n:
        b = data[i]
        if b == 0xFF:
            payload = data[i + 1:]
            break
        i += 1
        delta, length = b >> 4, b & 0x0F
        if delta == 13:
            delta = data[i] + 13
            i += 1
        elif delta == 14:
            delta = ((data[i] << 8) | data[i + 1]) + 269
            i += 2
        elif delta == 15:
            return None
        if length == 13:
            length = data[i] + 13
            i += 1
        elif length == 14:
            length = ((data[i] << 8) | data[i + 1]) + 269
            i += 2
        elif length == 15:
            return None
        number += delta
        options.append((number, data[i:i + length]))
        i += length
    return mtype, code, mid, token, options, payload


def code_str(code: int) -> str:
    return f"{code >> 5}.{code & 0x1F:02d}"


# -- the client side ------------------------------------------------------------------------

@dataclass(slots=True)
class Pending:
    token: bytes
    mid: int
    data: bytes
    fut: asyncio.Future
    t0: float
    attempts: int = 0
    acked: bool = False  # an empty ACK came: wait for the separate response
    timer: asyncio.TimerHandle | None = None


@dataclass
class Counters:
    retransmissions: int = 0
    separate: int = 0  # responses that came separately (empty ACK first, or a CON response)
    resets: int = 0
    stray: int = 0  # datagrams matching nothing outstanding (late duplicates)
    unsent: int = 0  # DTLS: messages not sent because the device had no session


class CoapSocket(asyncio.DatagramProtocol):
    """One UDP socket shared by several simulated devices: own message-id counter, tokens."""

    def __init__(self, server: tuple[str, int], counters: Counters, next_token: Any) -> None:
        self.server = server
        self.counters = counters
        self.next_token = next_token
        self.transport: asyncio.DatagramTransport | None = None
        self.mid = random.randrange(0x10000)
        self.by_token: dict[bytes, Pending] = {}
        self.by_mid: dict[int, Pending] = {}
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        pass

    def request(self, code: int, options_blob: bytes, payload: bytes) -> asyncio.Future:
        """Send a CON request; the future gets (code, options, latency_s) or (None, reason, latency_s)."""
        self.mid = (self.mid + 1) & 0xFFFF
        token = self.next_token()
        p = Pending(token, self.mid, encode_message(CON, code, self.mid, token, options_blob, payload),
                    self.loop.create_future(), time.perf_counter())
        self.by_token[token] = p
        self.by_mid[p.mid] = p
        self._send(p)
        return p.fut

    def _out(self, data: bytes) -> None:
        """One CoAP message to the server (over DTLS: ``_dtls_load`` overrides this)."""
        assert self.transport is not None
        self.transport.sendto(data)

    def _send(self, p: Pending) -> None:
        self._out(p.data)
        p.attempts += 1
        p.timer = self.loop.call_later(ACK_TIMEOUT_S, self._timeout, p)

    def _timeout(self, p: Pending) -> None:
        if p.fut.done():
            return
        if p.acked:
            self._finish(p, None, "timeout waiting for the separate response")
        elif p.attempts <= MAX_RETRANSMIT:
            self.counters.retransmissions += 1
            self._send(p)
        else:
            self._finish(p, None, f"timeout after {p.attempts} attempts")

    def _finish(self, p: Pending, code: int | None, detail: Any) -> None:
        if p.timer is not None:
            p.timer.cancel()
        self.by_token.pop(p.token, None)
        if self.by_mid.get(p.mid) is p:
            del self.by_mid[p.mid]
        if not p.fut.done():
            p.fut.set_result((code, detail, time.perf_counter() - p.t0))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.coap_received(data)

    def coap_received(self, data: bytes) -> None:
        """One CoAP message from the server."""
        msg = decode_message(data)
        if msg is None:
            self.counters.stray += 1
            return
        mtype, code, mid, token, options, _payload = msg
        if mtype == CON:  # a separate response (or anything confirmable): acknowledge it
            self._out(encode_message(ACK, 0, mid, b"", b""))
        if mtype == RST:
            p = self.by_mid.get(mid)
            if p is not None:
                self.counters.resets += 1
                self._finish(p, None, "reset")
            return
        if code == 0:  # empty: an ACK meaning "response comes later"
            p = self.by_mid.get(mid)
            if mtype == ACK and p is not None and not p.acked:
                p.acked = True
                if p.timer is not None:
                    p.timer.cancel()
                p.timer = self.loop.call_later(SEPARATE_WAIT_S, self._timeout, p)
            return
        p = self.by_token.get(token)
        if p is None or (mtype == ACK and mid != p.mid):
            self.counters.stray += 1
            return
        if mtype != ACK:
            self.counters.separate += 1
        self._finish(p, code, options)


@dataclass
class PhaseResult:
    name: str
    requests: int = 0
    ok: int = 0
    failures: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failure_kinds: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    system_cpu_s: float = 0.0

    def fail(self, kind: str) -> None:
        self.failures += 1
        self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def register_options(endpoint: str) -> bytes:
    return encode_options([
        (OPT_URI_PATH, b"rd"),
        (OPT_CONTENT_FORMAT, encode_uint(CF_LINK_FORMAT)),
        (OPT_URI_QUERY, f"ep={endpoint}".encode()),
        (OPT_URI_QUERY, f"lt={LIFETIME_S}".encode()),
        (OPT_URI_QUERY, b"lwm2m=1.1"),
        (OPT_URI_QUERY, b"b=U"),
    ])


def update_options(location: list[bytes], lifetime: int | None) -> bytes:
    opts = [(OPT_URI_PATH, seg) for seg in location]
    if lifetime is not None:
        opts.append((OPT_URI_QUERY, f"lt={lifetime}".encode()))
    return encode_options(opts)


async def run_phase(name: str, jobs: list[tuple[CoapSocket, bytes, bytes, int]], concurrency: int,
                    deadline_s: float, on_ok: Any, server_pid: int) -> PhaseResult:
    """jobs: (socket, options, payload, device index); on_ok(index, options) -> accepted? for each success."""
    res = PhaseResult(name, requests=len(jobs))
    expected = CREATED if name == "register" else CHANGED
    it = iter(jobs)
    stop_at = time.monotonic() + deadline_s

    async def worker() -> None:
        for sock, opts, payload, idx in it:
            if time.monotonic() > stop_at:
                res.fail("phase deadline passed, not sent")
                continue
            code, detail, latency = await sock.request(POST, opts, payload)
            res.latencies.append(latency)
            if code == expected:
                if on_ok(idx, detail):
                    res.ok += 1
                else:
                    res.fail(f"{code_str(code)} without Location-Path")
            elif code is None:
                res.fail(str(detail))
            else:
                res.fail(f"answered {code_str(code)}")

    return await measure(res, server_pid, [worker() for _ in range(max(1, min(concurrency, len(jobs))))])


async def measure(res: PhaseResult, server_pid: int, workers: list[Any]) -> PhaseResult:
    """Run a phase's workers; its wall time and the CPU of this process, the server and the machine."""
    cpu0, scpu0, sys0 = time.process_time(), proc_cpu_s(server_pid), system_cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*workers)
    res.wall_s = time.perf_counter() - t0
    res.client_cpu_s = time.process_time() - cpu0
    res.server_cpu_s = proc_cpu_s(server_pid) - scpu0
    res.system_cpu_s = system_cpu_s() - sys0
    return res


async def load(sockets: list[Any], devices: list[int], concurrency: int, deadline_s: float, server_pid: int,
               update_lifetime: int | None, prefix: str) -> tuple[PhaseResult, PhaseResult]:
    """Each device i of ``devices`` (on ``sockets[i % len(sockets)]``) Registers as ``<prefix>NNNNNN``;
    then every registered device Updates once."""
    locations: dict[int, list[bytes]] = {}

    def registered(idx: int, options: list[tuple[int, bytes]]) -> bool:
        loc = [v for n, v in options if n == OPT_LOCATION_PATH]
        if loc:
            locations[idx] = loc
        return bool(loc)

    reg_jobs = [(sockets[i % len(sockets)], register_options(endpoint_name(prefix, i)), LINKS, i)
                for i in devices]
    reg = await run_phase("register", reg_jobs, concurrency, deadline_s, registered, server_pid)
    upd_jobs = [(sockets[i % len(sockets)], update_options(loc, update_lifetime), b"", i)
                for i, loc in sorted(locations.items())]
    upd = await run_phase("update", upd_jobs, concurrency, deadline_s, lambda *_: True, server_pid)
    return reg, upd


def endpoint_name(prefix: str, i: int) -> str:
    return f"{prefix}{i:06d}"


def token_source() -> Any:
    """A callable giving 4-byte tokens, unique within the run."""
    counter = random.randrange(1 << 32)

    def next_token() -> bytes:
        nonlocal counter
        counter = (counter + 1) & 0xFFFFFFFF
        return counter.to_bytes(4, "big")
    return next_token


def close_sockets(sockets: list[Any]) -> None:
    for s in sockets:
        if s.transport is not None:
            s.transport.close()
    for s in sockets:  # nothing outstanding may keep a timer alive
        for p in list(s.by_token.values()):
            if p.timer is not None:
                p.timer.cancel()


async def drive(port: int, devices: int, concurrency: int, deadline_s: float, server_pid: int,
                update_lifetime: int | None, prefix: str) -> tuple[PhaseResult, PhaseResult, Counters]:
    """The NoSec load: devices share up to ``MAX_SOCKETS`` sockets (told apart by token)."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    next_token = token_source()
    sockets: list[CoapSocket] = []
    try:
        for _ in range(min(devices, MAX_SOCKETS)):
            _t, proto = await loop.create_datagram_endpoint(
                lambda: CoapSocket((HOST, port), counters, next_token), remote_addr=(HOST, port))
            sockets.append(proto)
        reg, upd = await load(sockets, list(range(devices)), concurrency, deadline_s, server_pid, update_lifetime,
                              prefix)
        return reg, upd, counters
    finally:
        close_sockets(sockets)
