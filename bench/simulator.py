"""Simulator benchmark: how many real-sized simulated MCUs can one process keep registered?

It starts the tinymlaas server as a subprocess on 127.0.0.1 (so its CPU is not the
simulator's), then in THIS process - the simulator - builds a mixed fleet of genuine LwM2M
clients (``simulator.fleet``: one aiocoap context, i.e. one UDP socket, per device; profiles
round-robin; one shared ``ModelRunner``, created as the fleet would but never asked to run
a model) and measures:

- the registration storm: ``start_fleet(..., concurrency=C)`` from the first Register to the
  last device registered (wall time, registrations/s, failures, CPU of both processes),
- memory: this process's VmRSS before building the fleet, after building it (object trees
  only) and after the storm (plus one aiocoap context and socket per device),
- steady state: a window of ``--steady`` seconds with the fleet idle except for its Updates
  (each device sends one when 80% of ``--lifetime`` has passed, so every 48 s by default).
  Registrations come in a burst, so Updates come in waves; unless ``--warmup`` is given the
  window is placed on the first wave (centred on it when the wave is shorter than the
  window) so that it sees Updates. It reports this process's CPU %, the server's CPU %, the
  Updates sent (sum of ``device.client.updates``) and - from the admin API's ``/health`` -
  how many registrations the server holds,
- the stop: ``stop_fleet`` (Deregister every device), timed, then the server's count again.

``--processes P`` runs P simulator processes side by side against the one server: this
script re-runs itself with ``--child`` (a distinct endpoint prefix each); a child speaks JSON
lines on stdout (``registered``, then ``mark`` snapshots on request, then its final figures)
and this process aggregates them. CPU % is of one core (100 = one core busy).

After the storm it counts loopback UDP ports held by more than one socket: aiocoap's udp6
transport sets SO_REUSEPORT before binding port 0, and Linux then hands some ephemeral ports
to two sockets at once (about n^2 / 56,000 pairs for n sockets); the kernel delivers all of
a shared port's datagrams to one of them, so the other device never gets its responses
(Register or Update times out after 30 s). ``--no-reuseport`` sets AIOCOAP_REUSE_PORT=0 in
the simulator process(es) only, to compare.

``--dtls`` runs the same fleet secured: the server gets a coaps port (NoSec left at its default,
refused once credentials exist), one CSV of the whole batch (``endpoint,identity,key``) is
imported with ``tinymlaas credentials import`` as an operator would, and every device reads
its PSK from that CSV (``simulator.security.fleet_security``, what ``tinymlaas simulate
--credentials`` does) and registers, updates and de-registers over its own DTLS session.

It prints a table and, as the LAST line of stdout, one JSON object.

    python bench/simulator.py --quick
    python bench/simulator.py --devices 2000 --lifetime 60 --steady 20
    python bench/simulator.py --processes 2 --devices 600
    python bench/simulator.py --devices 5000 --no-reuseport
    python bench/simulator.py --dtls --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from itertools import zip_longest
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# This file is called simulator.py: its own directory (sys.path[0] when run as a script) would
# shadow the ``simulator`` package, so import from the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_HERE, REPO)]

# (bench/ is then a namespace package under the root: the shared helpers come as bench._process.)
from bench._process import (HOST, ServerProcess, _die_with_parent, kb, run_main, tear_down, open_fds, proc_cpu_s,  # noqa: E402
                            psk_batch, raise_nofile, repo_env, rss_bytes)

DEFAULT_PROFILES = "nrf52840,stm32l4r5,esp32s3,rp2040,samd21"
UPDATE_MARGIN = 0.8  # simulator.device: an Update when 80% of the lifetime has passed (no drift)
CHILDREN: list[Any] = []  # simulator child processes (asyncio Process), killed in main's finally
MAX_CHILD_LINES = 10_000  # a child's stdout lines read per request, at most
ENDPOINT = re.compile(r"\b[\w-]+-\d{4,}\b")  # endpoint names in messages, for grouping


# -- /proc ----------------------------------------------------------------------------------

def udp_port_sharing(server_port: int) -> dict[str, int]:
    """Local UDP ports on loopback held by more than one socket (this host, all processes).

    aiocoap's udp6 transport sets SO_REUSEPORT before it binds port 0, and Linux may then
    hand the same ephemeral port to several such sockets of one user; datagrams to that port
    all go to one of them (picked by a hash of the addresses), the others never hear back.
    """
    ports: dict[int, int] = {}
    for table, loopback in (("/proc/net/udp", ("0100007F",)),
                            ("/proc/net/udp6", ("0000000000000000FFFF00000100007F",
                                                "00000000000000000000000001000000", "0" * 32))):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    local = line.split()[1]
                    addr, _, port = local.rpartition(":")
                    if addr in loopback or addr == "00000000":
                        ports[int(port, 16)] = ports.get(int(port, 16), 0) + 1
        except OSError:
            pass
    shared = {p: n for p, n in ports.items() if n > 1}
    return {"shared_ports": len(shared), "sockets_on_shared_ports": sum(shared.values()),
            "sockets_sharing_server_port": ports.get(server_port, 1) - 1}


def pct(cpu_s: float, wall_s: float) -> float:
    return round(100 * cpu_s / wall_s, 1) if wall_s > 0 else float("nan")


# -- the server's admin API -----------------------------------------------------------------

async def registered_on_server(api_url: str) -> int | None:
    import httpx
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{api_url}/health")
            r.raise_for_status()
            return int(r.json()["registrations"])
    except Exception as exc:  # reported, not fatal
        print(f"GET {api_url}/health failed: {exc!r}", file=sys.stderr)
        return None


# -- log records from the simulator (update failures, failed tasks) ------------------------

class LogCounter(logging.Handler):
    """Counts records by kind; prints the first few warnings (with their traceback) to stderr."""

    def __init__(self, echo: int = 5) -> None:
        super().__init__(logging.INFO)
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}
        self.echo = echo
        self.fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        if record.name == "simulator.client" and "update failed" in msg:
            kind = "update failed: " + msg.split("update failed:", 1)[-1].strip()[:80]
        elif record.levelno >= logging.WARNING:
            kind = f"{record.levelname.lower()} {record.name}: {ENDPOINT.sub('EP', msg)[:100]}"
        else:
            return
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind not in self.first:
            self.first[kind] = msg
        if record.levelno >= logging.WARNING and self.echo > 0:
            self.echo -= 1
            print(self.fmt.format(record), file=sys.stderr)

    def updates_failed(self) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith("update failed"))


def setup_logging() -> LogCounter:
    counter = LogCounter()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    root.addHandler(counter)
    logging.getLogger("simulator.client").setLevel(logging.INFO)  # "update failed" is INFO
    return counter


# -- a fleet in this process ----------------------------------------------------------------

def fleet_specs(profiles: list[Any], n: int, prefix: str, lifetime: int) -> list[Any]:
    """N devices, profiles round-robin, endpoints ``<prefix>-<profile>-NNNN``."""
    from simulator.fleet import FleetSpec

    k = len(profiles)
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [FleetSpec(p, c, lifetime=lifetime, prefix=f"{prefix}-{p.name}")
            for p, c in zip(profiles, counts, strict=True) if c]


def provision_batch(args: argparse.Namespace, server: ServerProcess, fleets: list[tuple[str, int]]) -> float:
    """--dtls: one CSV for every device of every fleet (prefix, devices), imported with the CLI as an
    operator imports a production batch; the devices read their PSKs from the same file. Seconds."""
    from device_profiles import get_profile
    from simulator.fleet import endpoints

    profiles = [get_profile(name) for name in args.profile_names]
    names = [ep for prefix, n in fleets for spec in fleet_specs(profiles, n, prefix, args.lifetime)
             for ep in endpoints(spec)]
    path = server.workdir / "batch.csv"
    psk_batch(path, names)
    args.credentials = str(path)
    return server.import_credentials(path, len(names))


def failure_kind(exc: BaseException) -> str:
    text = ENDPOINT.sub("EP", str(exc))
    return f"{type(exc).__name__}: {text[:120]}"


class LocalFleet:
    """N devices in this process; profiles round-robin, endpoints ``<prefix>-<profile>-NNNN``."""

    def __init__(self, args: argparse.Namespace, devices: int, prefix: str, port: int, log: LogCounter) -> None:
        self.args, self.n, self.prefix, self.port, self.log = args, devices, prefix, port, log
        self.devices: list[Any] = []
        self.profiles: list[Any] = []
        self.runner: Any = None
        self.label = "this process"

    def prepare(self) -> None:
        """Imports, profiles, the runner and lazily built caches: not counted as the fleet's memory."""
        import importlib
        for module in ("aiocoap.transports.udp6",  # aiocoap imports it on the first context
                       "simulator.device", "simulator.fleet"):
            importlib.import_module(module)
        from device_profiles import get_profile
        from simulator.runtimes import ModelRunner
        from lwm2m.model import default_registry

        default_registry()  # parses and caches the built-in object models (shared by all devices)
        self.profiles = [get_profile(name) for name in self.args.profile_names]
        self.runner = ModelRunner()  # as the fleet CLI does: one per process, its pool starts on first use

    def build(self) -> None:
        from simulator.fleet import build_fleet

        specs = fleet_specs(self.profiles, self.n, self.prefix, self.args.lifetime)
        flat = build_fleet(specs, (HOST, self.port), self.runner, security=self.security())
        groups, i = [], 0
        for spec in specs:
            groups.append(flat[i:i + spec.count])
            i += spec.count
        self.devices = [d for row in zip_longest(*groups) for d in row if d is not None]  # round-robin order

    def security(self) -> Any:
        """--dtls: each device's PSK from the batch's CSV, as ``tinymlaas simulate --credentials`` reads it."""
        if not self.args.credentials:
            return None
        from simulator.security import fleet_security, read_credentials_csv
        return fleet_security(read_credentials_csv(Path(self.args.credentials).read_text(encoding="utf-8")))

    async def start(self) -> dict[str, Any]:
        import gc
        self.prepare()
        gc.collect()
        rss0, fds0 = rss_bytes(), open_fds()
        t_build = time.perf_counter()
        self.build()
        build_s = time.perf_counter() - t_build
        gc.collect()
        rss_built = rss_bytes()
        from simulator.fleet import start_fleet
        failures: list[BaseException] = []
        timed_out = False
        done_at: list[float] = []  # wall time each device's start finished (registered or failed)
        cpu0, wall0 = time.process_time(), time.time()
        t0 = time.perf_counter()
        try:
            failures = await asyncio.wait_for(start_fleet(self.devices, concurrency=self.args.concurrency,
                                                          progress=lambda _n: done_at.append(time.time())),
                                              self.args.storm_timeout)
        except asyncio.TimeoutError:
            timed_out = True
        storm_s = time.perf_counter() - t0
        wall1, cpu1 = time.time(), time.process_time()
        registered = sum(1 for d in self.devices if d.client is not None and d.client.location)
        kinds: dict[str, int] = {}
        for exc in failures:
            kinds[failure_kind(exc)] = kinds.get(failure_kind(exc), 0) + 1
        if timed_out:
            kinds[f"storm not finished within {self.args.storm_timeout:.0f} s"] = self.n - registered - len(failures)
        first_tb = None
        if failures:
            import traceback
            first_tb = "".join(traceback.format_exception(failures[0]))
        rss_after = rss_bytes()
        done_at.sort()
        p95 = done_at[min(len(done_at) - 1, int(0.95 * len(done_at)))] if done_at else wall1
        return {"event": "registered", "devices": self.n, "prefix": self.prefix, "pid": os.getpid(),
                "storm_start": wall0, "storm_end": wall1, "storm_s": round(storm_s, 3),
                "first_done": done_at[0] if done_at else wall1, "p95_done": p95,
                "storm_cpu_s": round(cpu1 - cpu0, 3), "build_s": round(build_s, 3),
                "registered": registered, "failures": self.n - registered, "failure_kinds": kinds,
                "first_failure": first_tb,
                "rss_before": rss0, "rss_built": rss_built, "rss_after": rss_after,
                "fds_before": fds0, "fds_after": open_fds()}

    async def mark(self) -> dict[str, Any]:
        clients = [d.client for d in self.devices if d.client is not None]
        return {"event": "mark", "t": time.time(), "cpu_s": time.process_time(),
                "updates": sum(c.updates for c in clients), "registrations": sum(c.registrations for c in clients),
                "updates_failed": self.log.updates_failed(), "rss": rss_bytes(),
                "tasks": len(asyncio.all_tasks())}

    async def stop(self) -> dict[str, Any]:
        from simulator.fleet import stop_fleet
        t0 = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(stop_fleet(self.devices, deregister=True, concurrency=self.args.concurrency),
                                   self.args.stop_timeout)
        except asyncio.TimeoutError:
            timed_out = True
        stop_s = time.perf_counter() - t0
        if self.runner is not None:
            self.runner.close()
        final = await self.mark()
        final.update({"event": "stopped", "stop_s": round(stop_s, 3), "stop_timed_out": timed_out,
                      "fds_after_stop": open_fds(), "rss_after_stop": rss_bytes(), "log_counts": self.log.counts,
                      "log_first": {k: v[:2000] for k, v in list(self.log.first.items())[:10]}})
        return final

    async def abort(self) -> None:
        pass


# -- a fleet in a child process ---------------------------------------------------------------

class ChildFleet:
    """This script with ``--child``: JSON lines on its stdout, commands on its stdin."""

    def __init__(self, args: argparse.Namespace, devices: int, prefix: str, port: int, index: int) -> None:
        self.args, self.n, self.prefix, self.port, self.index = args, devices, prefix, port, index
        self.proc: asyncio.subprocess.Process | None = None
        self.label = f"process {index}"
        self.final: dict[str, Any] | None = None

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + timeout
        for _ in range(MAX_CHILD_LINES):
            left = end - time.monotonic()
            if left <= 0:
                break
            raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not raw:
                raise RuntimeError(f"simulator {self.label} (pid {self.proc.pid}) closed its stdout "
                                   f"(exit status {await self._rc()})")
            text = raw.decode(errors="replace").strip()
            if text.startswith("{"):
                return json.loads(text)
            print(f"[{self.label}] {text}", file=sys.stderr)
        raise asyncio.TimeoutError(f"simulator {self.label}: no answer within {timeout:.0f} s")

    async def _rc(self) -> int | None:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            return None

    async def _ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(timeout)

    async def spawn(self) -> None:
        a = self.args
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--server-port", str(self.port),
               "--prefix", self.prefix, "--devices", str(self.n), "--profiles", ",".join(a.profile_names),
               "--lifetime", str(a.lifetime), "--concurrency", str(a.concurrency),
               "--storm-timeout", str(a.storm_timeout), "--stop-timeout", str(a.stop_timeout),
               "--deadline", str(a.deadline)] + (["--credentials", a.credentials] if a.credentials else [])
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None, cwd=REPO,
            env=repo_env(),
            preexec_fn=_die_with_parent, limit=1 << 20)
        CHILDREN.append(self.proc)

    async def start(self) -> dict[str, Any]:
        return await self._line(self.args.storm_timeout + 120)

    async def mark(self) -> dict[str, Any]:
        return await self._ask("mark", 60)

    async def stop(self) -> dict[str, Any]:
        self.final = await self._ask("stop", self.args.stop_timeout + 60)
        await self._rc()
        return self.final

    async def abort(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self._rc()


async def child_main(args: argparse.Namespace) -> int:
    """``--child``: one fleet; ``registered`` line, then ``mark``/``stop`` commands from stdin."""
    log = setup_logging()
    fleet = LocalFleet(args, args.devices, args.prefix, args.server_port, log)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    stopped = False
    try:
        say(await fleet.start())
        end = time.monotonic() + args.deadline
        for _ in range(1000):  # commands: a handful of marks, then stop
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                line = (await asyncio.wait_for(reader.readline(), left)).decode().strip()
            except asyncio.TimeoutError:
                break
            if line == "mark":
                say(await fleet.mark())
            elif line == "stop" or not line:  # stop, or the parent went away (EOF)
                break
        final = await fleet.stop()
        stopped = True
        say(final)
    finally:
        if not stopped and fleet.devices:
            from simulator.fleet import stop_fleet
            try:
                await asyncio.wait_for(stop_fleet(fleet.devices, concurrency=args.concurrency), 30)
            except (Exception, asyncio.TimeoutError):
                pass
    return 0


# -- the benchmark --------------------------------------------------------------------------

def process_shares(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(endpoint prefix, devices) of each simulator process."""
    n, p = args.devices, args.processes
    if p == 1:
        return [(args.prefix, n)]
    return [(f"{args.prefix}-p{i}", n // p + (1 if i < n % p else 0)) for i in range(p)]


async def run(args: argparse.Namespace, server: ServerProcess, api_url: str, log: LogCounter,
              port: int) -> dict[str, Any]:
    """``port``: the server's CoAP port, or its coaps port with --dtls."""
    spid = server.pid
    n_total = args.devices
    if args.processes == 1:
        fleets: list[Any] = [LocalFleet(args, n_total, args.prefix, port, log)]
    else:
        fleets = [ChildFleet(args, n, prefix, port, i) for i, (prefix, n) in enumerate(process_shares(args))]
    try:
        for f in fleets:
            if isinstance(f, ChildFleet):
                await f.spawn()
        print(f"registering {n_total:,} devices ({', '.join(args.profile_names)}) from {args.processes} "
              f"process(es) over {'DTLS-PSK' if args.dtls else 'NoSec UDP'}, concurrency {args.concurrency}, "
              f"lifetime {args.lifetime} s ...", file=sys.stderr,
              flush=True)
        scpu0, t0 = proc_cpu_s(spid), time.perf_counter()
        regs = await asyncio.gather(*(f.start() for f in fleets))
        storm_wall = time.perf_counter() - t0
        server_storm_cpu = proc_cpu_s(spid) - scpu0
        storm_start = min(r["storm_start"] for r in regs)
        storm_end = max(r["storm_end"] for r in regs)
        storm_s = storm_end - storm_start
        failures = sum(r["failures"] for r in regs)
        p95_s = max(r["p95_done"] for r in regs) - storm_start
        print(f"registered in {storm_s:.2f} s, {failures} failures", file=sys.stderr, flush=True)
        for r in regs:
            if r.get("first_failure"):
                print(f"first registration failure ({r['prefix']}):\n{r['first_failure']}", file=sys.stderr)
        if not server.alive():
            raise RuntimeError("the server died during the storm:\n" + server.tail())
        sharing = udp_port_sharing(port)
        if sharing["shared_ports"]:
            print(f"UDP ports shared by several sockets after the storm: {sharing}", file=sys.stderr, flush=True)

        # place the window: on the first wave of Updates (see the module docstring) or after --warmup
        period = args.lifetime * UPDATE_MARGIN
        now = time.time()
        if args.warmup is not None:
            window_start = storm_end + args.warmup
        else:  # centre the window on the first wave: Updates come `period` s after each Register
            wave_start = min(r["first_done"] for r in regs) + period
            wave_end = max(r["p95_done"] for r in regs) + period
            window_start = max(storm_end, (wave_start + wave_end) / 2 - args.steady / 2)
        warmup = max(0.0, window_start - now)
        if warmup > 0:
            print(f"waiting {warmup:.1f} s for the first Update wave (every {period:.0f} s) ...", file=sys.stderr,
                  flush=True)
            await asyncio.sleep(warmup)
        print(f"steady state: {args.steady:.0f} s window ...", file=sys.stderr, flush=True)
        on_server_before = await registered_on_server(api_url)
        m0 = await asyncio.gather(*(f.mark() for f in fleets))
        s0, w0 = proc_cpu_s(spid), time.perf_counter()
        await asyncio.sleep(args.steady)
        m1 = await asyncio.gather(*(f.mark() for f in fleets))
        s1, w1 = proc_cpu_s(spid), time.perf_counter()
        on_server = await registered_on_server(api_url)
        if not server.alive():
            raise RuntimeError("the server died during the steady window:\n" + server.tail())

        print("stopping (Deregister) ...", file=sys.stderr, flush=True)
        t_stop = time.perf_counter()
        finals = await asyncio.gather(*(f.stop() for f in fleets))
        stop_wall = time.perf_counter() - t_stop
        await asyncio.sleep(0.5)
        on_server_after_stop = await registered_on_server(api_url)
    except BaseException:
        await asyncio.gather(*(f.abort() for f in fleets), return_exceptions=True)
        raise
    finally:
        for f in fleets:
            if isinstance(f, LocalFleet) and f.runner is not None:
                f.runner.close()

    window = w1 - w0
    per: list[dict[str, Any]] = []
    for f, r, a, b, fin in zip(fleets, regs, m0, m1, finals, strict=True):
        n = r["devices"]
        per.append({
            "label": f.label, "pid": r["pid"], "devices": n, "storm_s": r["storm_s"],
            "registrations_per_s": round(r["registered"] / r["storm_s"], 1) if r["storm_s"] else 0.0,
            "storm_cpu_pct": pct(r["storm_cpu_s"], r["storm_s"]), "build_s": r["build_s"],
            "failures": r["failures"], "failure_kinds": r["failure_kinds"],
            "rss_before_kb": round(kb(r["rss_before"])), "rss_built_kb": round(kb(r["rss_built"])),
            "rss_after_kb": round(kb(r["rss_after"])),
            "rss_per_device_kb": round(kb(r["rss_after"] - r["rss_before"]) / n, 2),
            "rss_build_per_device_kb": round(kb(r["rss_built"] - r["rss_before"]) / n, 2),
            "rss_start_per_device_kb": round(kb(r["rss_after"] - r["rss_built"]) / n, 2),
            "rss_steady_end_kb": round(kb(b["rss"])), "rss_after_stop_kb": round(kb(fin["rss_after_stop"])),
            "fds_per_device": round((r["fds_after"] - r["fds_before"]) / n, 2),
            "steady_cpu_pct": pct(b["cpu_s"] - a["cpu_s"], b["t"] - a["t"]),
            "updates": b["updates"] - a["updates"], "re_registrations": b["registrations"] - a["registrations"],
            "updates_failed": b["updates_failed"] - a["updates_failed"],
            "updates_total": fin["updates"], "tasks": b["tasks"],
            "stop_s": fin["stop_s"], "stop_timed_out": fin["stop_timed_out"],
            "fds_after_stop": fin["fds_after_stop"], "log_counts": fin["log_counts"],
        })
    rss_delta = sum(r["rss_after"] - r["rss_before"] for r in regs)
    registered = sum(r["registered"] for r in regs)
    summary: dict[str, Any] = {
        "devices": n_total, "transport": "dtls-psk" if args.dtls else "udp", "processes": args.processes,
        "profiles": args.profile_names,
        "concurrency": args.concurrency, "lifetime_s": args.lifetime, "update_period_s": round(period, 1),
        "storm_s": round(storm_s, 3), "storm_p95_s": round(p95_s, 3),
        "registrations_per_s": round(registered / storm_s, 1) if storm_s else 0.0,
        "registrations_per_s_p95": round(0.95 * n_total / p95_s, 1) if p95_s > 0 else 0.0,
        "failures": failures,
        "rss_before_kb": sum(p["rss_before_kb"] for p in per), "rss_built_kb": sum(p["rss_built_kb"] for p in per),
        "rss_after_kb": sum(p["rss_after_kb"] for p in per),
        "rss_per_device_kb": round(kb(rss_delta) / n_total, 2),
        "rss_build_per_device_kb": round(kb(sum(r["rss_built"] - r["rss_before"] for r in regs)) / n_total, 2),
        "rss_start_per_device_kb": round(kb(sum(r["rss_after"] - r["rss_built"] for r in regs)) / n_total, 2),
        "storm_cpu_pct": round(sum(p["storm_cpu_pct"] for p in per), 1),
        "server_storm_cpu_pct": pct(server_storm_cpu, storm_wall),
        "warmup_s": round(warmup, 1), "steady_s": round(window, 2),
        "steady_cpu_pct": round(sum(p["steady_cpu_pct"] for p in per), 1),
        "server_cpu_pct": pct(s1 - s0, window),
        "updates": sum(p["updates"] for p in per),
        "updates_failed": sum(p["updates_failed"] for p in per),
        "re_registrations": sum(p["re_registrations"] for p in per),
        "registered_on_server": on_server,
        "registered_on_server_at_window_start": on_server_before,
        "registered_after_stop": on_server_after_stop,
        "stop_s": round(stop_wall, 3),
        **sharing, "reuseport": os.environ.get("AIOCOAP_REUSE_PORT", "aiocoap default"),
        "server_rss_kb": round(kb(rss_bytes(spid))) if server.alive() else None,
        "cpus": os.cpu_count(),
    }
    summary["per_process"] = per if args.processes > 1 else None
    summary["_detail"] = per
    return summary


# -- report ---------------------------------------------------------------------------------

ROWS = [
    ("devices", "devices", "{:,}"),
    ("profiles (round-robin)", "profiles", None),
    ("transport", "transport", None),
    ("credentials import s (CLI)", "credentials_import_s", "{:.2f}"),
    ("registration storm s", "storm_s", "{:.2f}"),
    ("95% of devices started by s", "storm_p95_s", "{:.2f}"),
    ("registrations/s (storm)", "registrations_per_s", "{:,.0f}"),
    ("registrations/s (first 95%)", "registrations_per_s_p95", "{:,.0f}"),
    ("failures", "failures", "{:,}"),
    ("simulator CPU % (storm)", "storm_cpu_pct", "{:.0f}"),
    ("server CPU % (storm)", "server_storm_cpu_pct", "{:.0f}"),
    ("RSS before (KB)", "rss_before_kb", "{:,}"),
    ("RSS fleet built (KB)", "rss_built_kb", "{:,}"),
    ("RSS after storm (KB)", "rss_after_kb", "{:,}"),
    ("RSS per device (KB)", "rss_per_device_kb", "{:.2f}"),
    ("  of which objects (KB)", "rss_build_per_device_kb", "{:.2f}"),
    ("  of which client+socket (KB)", "rss_start_per_device_kb", "{:.2f}"),
    ("wait for Update wave s", "warmup_s", "{:.1f}"),
    ("steady window s", "steady_s", "{:.1f}"),
    ("simulator CPU % (steady)", "steady_cpu_pct", "{:.1f}"),
    ("server CPU % (steady)", "server_cpu_pct", "{:.1f}"),
    ("Updates in window", "updates", "{:,}"),
    ("Updates failed in window", "updates_failed", "{:,}"),
    ("registered on server", "registered_on_server", "{:,}"),
    ("stop (Deregister) s", "stop_s", "{:.2f}"),
    ("registered after stop", "registered_after_stop", "{:,}"),
    ("UDP ports shared (SO_REUSEPORT)", "shared_ports", "{:,}"),
    ("sockets on shared ports", "sockets_on_shared_ports", "{:,}"),
]
PER_ROWS = [("pid", "pid", "{}"), ("devices", "devices", "{:,}"), ("storm s", "storm_s", "{:.2f}"),
            ("failures", "failures", "{:,}"), ("RSS per device (KB)", "rss_per_device_kb", "{:.2f}"),
            ("fds per device", "fds_per_device", "{:.2f}"), ("CPU % (steady)", "steady_cpu_pct", "{:.1f}"),
            ("Updates in window", "updates", "{:,}"), ("stop s", "stop_s", "{:.2f}")]


def fmt(template: str | None, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    try:
        return template.format(value) if template else str(value)
    except (ValueError, TypeError):
        return str(value)


def report(s: dict[str, Any]) -> None:
    per = s["per_process"] or []
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for label, key, template in ROWS:
            print(f"{label:32}{fmt(template, s.get(key)):>24}")
        for i, p in enumerate(per):
            print(f"-- process {i}: " + ", ".join(f"{label} {fmt(t, p.get(k))}" for label, k, t in PER_ROWS))
    else:
        console = Console(width=110)
        over = "DTLS-PSK" if s.get("transport") == "dtls-psk" else "UDP"
        table = Table(title=f"Simulated MCU fleet (genuine LwM2M clients over {over}, 127.0.0.1)")
        table.add_column("")
        table.add_column(f"{s['processes']} process(es)", justify="right")
        for label, key, template in ROWS:
            table.add_row(label, fmt(template, s.get(key)))
        console.print(table)
        if per:
            t2 = Table(title="per simulator process")
            t2.add_column("")
            for p in per:
                t2.add_column(p["label"], justify="right")
            for label, key, template in PER_ROWS:
                t2.add_row(label, *(fmt(template, p.get(key)) for p in per))
            console.print(t2)
    for p in s["_detail"]:
        if p["failure_kinds"]:
            print(f"{p['label']} registration failures: {p['failure_kinds']}")
        if p["log_counts"]:
            print(f"{p['label']} log records: {p['log_counts']}")
        if p["stop_timed_out"]:
            print(f"{p['label']}: stop_fleet did not finish in time")
    if s["registered_on_server"] is not None and s["registered_on_server"] != s["devices"] - s["failures"]:
        print(f"server holds {s['registered_on_server']:,} registrations at the end of the window, "
              f"expected {s['devices'] - s['failures']:,}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Simulated MCU fleet benchmark: memory, storm, steady state")
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices in all (default 1000)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (< 60 s): lifetime 10 s, 10 s window, 1 process")
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help=f"round-robin (default {DEFAULT_PROFILES})")
    parser.add_argument("--lifetime", type=int, default=None, help="registration lifetime s (default 60; quick 10)")
    parser.add_argument("--steady", type=float, default=None, help="steady-state window s (default 20; quick 10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="start the window this many s after the storm (default: on the first Update wave)")
    parser.add_argument("--concurrency", type=int, default=64, help="start_fleet concurrency (default 64)")
    parser.add_argument("--processes", type=int, default=1, help="simulator processes side by side (default 1)")
    parser.add_argument("--prefix", default="sim", help="endpoint prefix (default sim)")
    parser.add_argument("--storm-timeout", type=float, default=600.0, help="give up on the storm after this")
    parser.add_argument("--stop-timeout", type=float, default=300.0, help="give up on stop_fleet after this")
    parser.add_argument("--deadline", type=float, default=None, help="whole run, s (default 900; quick 120)")
    parser.add_argument("--no-reuseport", action="store_true",
                        help="AIOCOAP_REUSE_PORT=0 in the simulator process(es): no port sharing (diagnosis)")
    parser.add_argument("--dtls", action="store_true",
                        help="a secured fleet: the server gets a coaps port, the batch's credentials are imported "
                             "(tinymlaas credentials import), every device registers over DTLS-PSK")
    parser.add_argument("--keep", action="store_true", help="keep the server's temporary directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--credentials", default=None, help=argparse.SUPPRESS)  # a child's batch CSV
    parser.add_argument("--server-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.lifetime = 10 if args.lifetime is None else args.lifetime
        args.steady = 10.0 if args.steady is None else args.steady
        args.deadline = 120.0 if args.deadline is None else args.deadline
        if args.processes != 1:
            parser.error("--quick runs one process")
    args.lifetime = 60 if args.lifetime is None else args.lifetime
    args.steady = 20.0 if args.steady is None else args.steady
    args.deadline = 900.0 if args.deadline is None else args.deadline
    args.profile_names = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if args.devices < 1 or args.concurrency < 1 or args.processes < 1 or args.lifetime < 1 or args.steady <= 0:
        parser.error("--devices, --concurrency, --processes, --lifetime and --steady must be positive")
    if not args.profile_names:
        parser.error("--profiles: at least one")
    if args.processes > args.devices:
        parser.error("--processes cannot exceed --devices")
    raise_nofile()

    if args.child:
        if not args.server_port:
            parser.error("--child needs --server-port")
        signal.alarm(int(args.deadline) + 60)  # default action: the child dies; the parent notices
        return asyncio.run(child_main(args))

    from device_profiles import get_profile
    for name in args.profile_names:
        get_profile(name)  # an unknown name fails here, naming the known ones

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so that the finally blocks stop everything
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.deadline))

    log = setup_logging()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    server = ServerProcess.tinymlaas(workdir)
    if args.dtls:
        server.cmd += ["--coaps", f"{HOST}:0"]  # NoSec stays "auto": refused once the batch is imported
    t0 = time.perf_counter()
    try:
        port = server.start()
        api_url, _token = server.api()
        import_s = None
        if args.dtls:
            port = server.coaps_port()
            import_s = provision_batch(args, server, process_shares(args))
        scheme = "coaps" if args.dtls else "coap"
        print(f"server pid {server.pid} on {scheme}://{HOST}:{port}, admin API {api_url}"
              + (f"; {args.devices:,} credentials imported in {import_s:.2f} s" if import_s is not None else ""),
              file=sys.stderr, flush=True)
        if args.no_reuseport:  # after the server started: only the simulator's sockets (children inherit it)
            os.environ["AIOCOAP_REUSE_PORT"] = "0"
        summary = asyncio.run(run(args, server, api_url, log, port))
        summary["credentials_import_s"] = round(import_s, 2) if import_s is not None else None
        t_stop = time.perf_counter()
        summary["server_stop_rc"] = server.stop()
        summary["server_stop_s"] = round(time.perf_counter() - t_stop, 2)
    finally:
        tear_down(CHILDREN, server, workdir, args.keep)
    summary["elapsed_s"] = round(time.perf_counter() - t0, 1)
    report(summary)
    print(f"total time {summary['elapsed_s']:.1f} s")
    summary.pop("_detail")
    if summary["per_process"] is not None:
        for p in summary["per_process"]:
            p.pop("log_counts", None)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
