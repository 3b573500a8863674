"""Registration benchmark: how fast and how lean is tinymlaas' LwM2M /rd compared to bare aiocoap?

For each target (tinymlaas, and ``bench/_bare_aiocoap.py`` as the baseline) this script
starts the server as a subprocess on 127.0.0.1, waits for the ``coap://127.0.0.1:PORT``
line, reads its RSS, and then - from this process, the load generator - drives it with
hand-encoded CoAP over a pool of UDP sockets:

- phase 1: N devices Register (CON POST /rd?ep=..&lt=..&lwm2m=1.1&b=U, link payload),
- phase 2: every registered device Updates once (CON POST /rd/<id>),

with at most ``--concurrency`` requests in flight, a 2 s per-attempt timeout and up to 4
retransmissions (RFC 7252 retransmission of the same message id and token). Separate
responses (empty ACK, then a CON response) are acknowledged and handled.

It prints a table and, as the LAST line of stdout, one JSON object (tinymlaas' figures
plus the bare-aiocoap baseline). Targets (reported, never enforced): ratio tinymlaas/bare
>= 0.7, RSS per device <= 5 KB at 20,000 devices.

    python bench/registrations.py --quick
    python bench/registrations.py --devices 20000 --target tinymlaas
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _process import HOST, ServerProcess, kb, proc_cpu_s, raise_nofile, rss_bytes, system_cpu_s

BARE = Path(__file__).resolve().parent / "_bare_aiocoap.py"

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

TARGET_RATIO = 0.7
TARGET_RSS_KB = 5.0
TARGET_RSS_AT = 20000


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

    def _send(self, p: Pending) -> None:
        assert self.transport is not None
        self.transport.sendto(p.data)
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
        msg = decode_message(data)
        if msg is None:
            self.counters.stray += 1
            return
        mtype, code, mid, token, options, _payload = msg
        if mtype == CON:  # a separate response (or anything confirmable): acknowledge it
            self.transport.sendto(encode_message(ACK, 0, mid, b"", b""))  # type: ignore[union-attr]
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

    cpu0, scpu0, sys0 = time.process_time(), proc_cpu_s(server_pid), system_cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
    res.wall_s = time.perf_counter() - t0
    res.client_cpu_s = time.process_time() - cpu0
    res.server_cpu_s = proc_cpu_s(server_pid) - scpu0
    res.system_cpu_s = system_cpu_s() - sys0
    return res


async def drive(port: int, devices: int, concurrency: int, deadline_s: float, server_pid: int,
                update_lifetime: int | None, prefix: str) -> tuple[PhaseResult, PhaseResult, Counters]:
    loop = asyncio.get_running_loop()
    counters = Counters()
    token_counter = random.randrange(1 << 32)

    def next_token() -> bytes:
        nonlocal token_counter
        token_counter = (token_counter + 1) & 0xFFFFFFFF
        return token_counter.to_bytes(4, "big")

    sockets: list[CoapSocket] = []
    try:
        for _ in range(min(devices, MAX_SOCKETS)):
            _t, proto = await loop.create_datagram_endpoint(
                lambda: CoapSocket((HOST, port), counters, next_token), remote_addr=(HOST, port))
            sockets.append(proto)
        locations: dict[int, list[bytes]] = {}

        def registered(idx: int, options: list[tuple[int, bytes]]) -> bool:
            loc = [v for n, v in options if n == OPT_LOCATION_PATH]
            if loc:
                locations[idx] = loc
            return bool(loc)

        reg_jobs = [(sockets[i % len(sockets)], register_options(f"{prefix}{i:06d}"), LINKS, i)
                    for i in range(devices)]
        reg = await run_phase("register", reg_jobs, concurrency, deadline_s, registered, server_pid)
        upd_jobs = [(sockets[i % len(sockets)], update_options(loc, update_lifetime), b"", i)
                    for i, loc in sorted(locations.items())]
        upd = await run_phase("update", upd_jobs, concurrency, deadline_s, lambda *_: True, server_pid)
        return reg, upd, counters
    finally:
        for s in sockets:
            if s.transport is not None:
                s.transport.close()
        for s in sockets:  # nothing outstanding may keep a timer alive
            for p in list(s.by_token.values()):
                if p.timer is not None:
                    p.timer.cancel()


# -- one target -----------------------------------------------------------------------------

def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    if target == "bare":
        server = ServerProcess([sys.executable, str(BARE), "--host", HOST, "--port", "0"], workdir,
                               name=target, label=target)
    else:
        server = ServerProcess.tinymlaas(workdir, name=target, label=target)
    try:
        t_start = time.perf_counter()
        port = server.start()
        startup_s = time.perf_counter() - t_start
        assert server.proc is not None
        pid = server.proc.pid
        time.sleep(args.idle)
        rss_before = rss_bytes(pid)
        hook = start_profiler(args, target, pid, workdir)
        try:
            reg, upd, counters = asyncio.run(drive(port, args.devices, args.concurrency, args.phase_timeout, pid,
                                                   args.update_lifetime, f"bench-{target}-"))
        finally:
            stop_profiler(hook)
        time.sleep(args.settle)
        if server.proc.poll() is not None:
            raise RuntimeError(f"{target} died during the run:\n" + server.tail())
        rss_after = rss_bytes(pid)
        t_stop = time.perf_counter()
        stop_rc = server.stop()
        stop_s = time.perf_counter() - t_stop
        n = args.devices
        both = reg.latencies + upd.latencies
        result = {
            "target": target, "devices": n, "port": port, "startup_s": round(startup_s, 2),
            "registrations_per_s": round(n / reg.wall_s, 1) if reg.wall_s else 0.0,
            "updates_per_s": round(upd.requests / upd.wall_s, 1) if upd.wall_s else 0.0,
            "register_wall_s": round(reg.wall_s, 3), "update_wall_s": round(upd.wall_s, 3),
            "p50_ms": round(percentile(reg.latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(reg.latencies, 99) * 1000, 2),
            "update_p50_ms": round(percentile(upd.latencies, 50) * 1000, 2),
            "update_p99_ms": round(percentile(upd.latencies, 99) * 1000, 2),
            "all_p50_ms": round(percentile(both, 50) * 1000, 2),
            "all_p99_ms": round(percentile(both, 99) * 1000, 2),
            "max_ms": round(max(both, default=float("nan")) * 1000, 2),
            "registered": reg.ok, "updated": upd.ok,
            "failures": reg.failures + upd.failures,
            "failure_kinds": merge(reg.failure_kinds, upd.failure_kinds),
            "skipped_updates": n - upd.requests,
            "retransmissions": counters.retransmissions,
            "separate_responses": counters.separate, "resets": counters.resets, "stray": counters.stray,
            "rss_before_kb": round(kb(rss_before)), "rss_after_kb": round(kb(rss_after)),
            "rss_per_device_kb": round(kb(rss_after - rss_before) / n, 3),
            "server_cpu_pct": round(100 * (reg.server_cpu_s + upd.server_cpu_s) / (reg.wall_s + upd.wall_s), 1),
            "client_cpu_pct": round(100 * (reg.client_cpu_s + upd.client_cpu_s) / (reg.wall_s + upd.wall_s), 1),
            "other_cpu_pct": round(100 * (reg.system_cpu_s + upd.system_cpu_s - reg.server_cpu_s - upd.server_cpu_s
                                          - reg.client_cpu_s - upd.client_cpu_s) / (reg.wall_s + upd.wall_s), 1),
            "server_stop_rc": stop_rc, "server_stop_s": round(stop_s, 2),
        }
        return result
    finally:
        server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


# -- optional py-spy ------------------------------------------------------------------------

def start_profiler(args: argparse.Namespace, target: str, pid: int, workdir: Path) -> subprocess.Popen | None:
    if not args.profile or target not in args.profile_targets:
        return None
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.profile_format]
    out = Path(args.profile) / f"{target}-{args.devices}{'-gil' if args.profile_gil else ''}{'-native' if args.profile_native else ''}.{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--format", args.profile_format, "-o", str(out),
           "--duration", str(int(args.phase_timeout * 2 + 30))]
    if args.profile_threads:
        cmd.append("--threads")
    if args.profile_gil:
        cmd.append("--gil")
    if args.profile_native:
        cmd.append("--native")  # needs to pause the process: slows it down
    else:
        cmd.append("--nonblocking")
    print(f"profiling {target} (pid {pid}) into {out}", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / "py-spy.log", "wb"))
    time.sleep(1.0)  # let it attach
    return proc


def stop_profiler(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# -- report ---------------------------------------------------------------------------------

ROWS = [
    ("devices", "devices", "{:,}"),
    ("registrations/s", "registrations_per_s", "{:,.0f}"),
    ("updates/s", "updates_per_s", "{:,.0f}"),
    ("register p50 ms", "p50_ms", "{:.2f}"),
    ("register p99 ms", "p99_ms", "{:.2f}"),
    ("update p50 ms", "update_p50_ms", "{:.2f}"),
    ("update p99 ms", "update_p99_ms", "{:.2f}"),
    ("both phases p50 ms", "all_p50_ms", "{:.2f}"),
    ("both phases p99 ms", "all_p99_ms", "{:.2f}"),
    ("max latency ms", "max_ms", "{:.1f}"),
    ("retransmissions", "retransmissions", "{:,}"),
    ("separate responses", "separate_responses", "{:,}"),
    ("failures", "failures", "{:,}"),
    ("RSS before (KB)", "rss_before_kb", "{:,}"),
    ("RSS after (KB)", "rss_after_kb", "{:,}"),
    ("RSS per device (KB)", "rss_per_device_kb", "{:.2f}"),
    ("server CPU % (both phases)", "server_cpu_pct", "{:.0f}"),
    ("load generator CPU %", "client_cpu_pct", "{:.0f}"),
    ("other processes CPU %", "other_cpu_pct", "{:.0f}"),
    ("server start-up s", "startup_s", "{:.2f}"),
    ("server stop s (SIGTERM)", "server_stop_s", "{:.2f}"),
    ("server exit status", "server_stop_rc", "{}"),
]


def fmt(template: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return template.format(value)
    except (ValueError, TypeError):
        return str(value)


def report(results: dict[str, dict[str, Any]], ratio: float | None) -> None:
    targets = list(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        print(f"{'':28}" + "".join(f"{t:>16}" for t in targets))
        for label, key, template in ROWS:
            print(f"{label:28}" + "".join(f"{fmt(template, results[t].get(key)):>16}" for t in targets))
    else:
        table = Table(title="LwM2M registration benchmark (127.0.0.1, UDP)")
        table.add_column("")
        for t in targets:
            table.add_column(t, justify="right")
        for label, key, template in ROWS:
            table.add_row(label, *(fmt(template, results[t].get(key)) for t in targets))
        Console(width=100).print(table)
    for t, r in results.items():
        if r["failure_kinds"]:
            print(f"{t} failures: {r['failure_kinds']}")
    tm = results.get("tinymlaas")
    if ratio is not None:
        verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
        print(f"ratio tinymlaas/bare registrations/s: {ratio:.2f}  (target >= {TARGET_RATIO}: {verdict})")
    if tm is not None:
        per = tm["rss_per_device_kb"]
        verdict = "meets" if per <= TARGET_RSS_KB else "ABOVE"
        note = "" if tm["devices"] >= TARGET_RSS_AT else f" (target is defined at {TARGET_RSS_AT:,} devices)"
        print(f"tinymlaas RSS per device: {per:.2f} KB  (target <= {TARGET_RSS_KB} KB: {verdict}){note}")
        if "bare" in results:
            print(f"tinymlaas RSS per device above bare aiocoap: {per - results['bare']['rss_per_device_kb']:.2f} KB")


def main() -> int:
    parser = argparse.ArgumentParser(description="LwM2M registration benchmark: tinymlaas vs bare aiocoap")
    parser.add_argument("--devices", type=int, default=None, help="simulated devices (default 2000; --quick: 1000)")
    parser.add_argument("--quick", action="store_true", help="a small run (< 60 s for both targets)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--target", choices=("both", "tinymlaas", "bare"), default="both")
    parser.add_argument("--idle", type=float, default=None, help="seconds idle after start before the first RSS")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after the load before the second RSS")
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="stop sending in a phase after this")
    parser.add_argument("--update-lifetime", type=int, default=None, help="send lt=VALUE with each Update")
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the server(s) into DIR")
    parser.add_argument("--profile-targets", default="tinymlaas", help="comma-separated (default tinymlaas)")
    parser.add_argument("--profile-format", choices=("flamegraph", "raw", "speedscope"), default="raw")
    parser.add_argument("--profile-threads", action="store_true", help="py-spy --threads")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (shows e.g. GC)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' temporary directories")
    args = parser.parse_args()
    if args.devices is None:
        args.devices = 1000 if args.quick else 2000
    if args.idle is None:
        args.idle = 0.5 if args.quick else 1.0
    if args.devices < 1 or args.concurrency < 1:
        parser.error("--devices and --concurrency must be positive")
    args.profile_targets = args.profile_targets.split(",")

    def on_sigterm(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # so that the finally blocks stop the servers
    signal.signal(signal.SIGTERM, on_sigterm)

    raise_nofile()

    targets = ["tinymlaas", "bare"] if args.target == "both" else [args.target]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for t in targets:
        print(f"[{t}] {args.devices:,} devices, concurrency {args.concurrency} ...", file=sys.stderr, flush=True)
        results[t] = run_target(t, args)
    elapsed = time.perf_counter() - t0

    tm, bare = results.get("tinymlaas"), results.get("bare")
    ratio = (tm["registrations_per_s"] / bare["registrations_per_s"]
             if tm and bare and bare["registrations_per_s"] else None)
    report(results, ratio)
    print(f"total time {elapsed:.1f} s")

    main_r = tm or bare
    assert main_r is not None
    summary: dict[str, Any] = {
        "devices": args.devices,
        "concurrency": args.concurrency,
        "registrations_per_s": tm["registrations_per_s"] if tm else None,
        "bare_aiocoap_per_s": bare["registrations_per_s"] if bare else None,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "p50_ms": tm["p50_ms"] if tm else None,
        "p99_ms": tm["p99_ms"] if tm else None,
        "all_p50_ms": tm["all_p50_ms"] if tm else None,
        "all_p99_ms": tm["all_p99_ms"] if tm else None,
        "rss_per_device_kb": tm["rss_per_device_kb"] if tm else None,
        "updates_per_s": tm["updates_per_s"] if tm else None,
        "failures": tm["failures"] if tm else None,
        "retransmissions": tm["retransmissions"] if tm else None,
        "rss_before_kb": tm["rss_before_kb"] if tm else None,
        "rss_after_kb": tm["rss_after_kb"] if tm else None,
        "bare_updates_per_s": bare["updates_per_s"] if bare else None,
        "bare_p50_ms": bare["p50_ms"] if bare else None,
        "bare_p99_ms": bare["p99_ms"] if bare else None,
        "bare_rss_per_device_kb": bare["rss_per_device_kb"] if bare else None,
        "bare_failures": bare["failures"] if bare else None,
        "bare_retransmissions": bare["retransmissions"] if bare else None,
        "server_cpu_pct": tm["server_cpu_pct"] if tm else None,
        "bare_server_cpu_pct": bare["server_cpu_pct"] if bare else None,
        "other_cpu_pct": max(r["other_cpu_pct"] for r in results.values()),
        "cpus": os.cpu_count(),
        "elapsed_s": round(elapsed, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
