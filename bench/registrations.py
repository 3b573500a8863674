"""Registration benchmark: how fast and how lean is tinymlaas' LwM2M /rd compared to bare aiocoap,
and what does DTLS-PSK cost?

For each target (tinymlaas, and ``bench/_bare_aiocoap.py`` as the baseline) this script
starts the server as a subprocess on 127.0.0.1, waits for the ``coap://127.0.0.1:PORT``
line, reads its RSS, and then - from this process, the load generator (``_coap_load``) -
drives it with hand-encoded CoAP over a pool of UDP sockets:

- phase 1: N devices Register (CON POST /rd?ep=..&lt=..&lwm2m=1.1&b=U, link payload),
- phase 2: every registered device Updates once (CON POST /rd/<id>),

with at most ``--concurrency`` requests in flight, a 2 s per-attempt timeout and up to 4
retransmissions (RFC 7252 retransmission of the same message id and token). Separate
responses (empty ACK, then a CON response) are acknowledged and handled.

``--dtls`` adds the target ``dtls``: ``tinymlaas serve --coaps`` (NoSec left at its default,
refused once credentials exist), the batch's credentials imported with ``tinymlaas credentials
import`` as an operator would, then the same load over DTLS-PSK (``_dtls_load``: one socket
and one session per device) after a phase 0 of one full handshake per device (tinydtls has no
session resumption, so there is nothing else to measure). Its ``registrations_per_s`` counts
a device's handshake with its Register (N / (handshake + Register phase)); the Register phase
alone is ``registrations_in_session_per_s``; ``ratio`` compares with the NoSec tinymlaas run
of this same process; ``rss_per_device_kb`` is from before the import (credential + session +
registration). CPU per handshake is given for the server and the load generator: on a
2-core machine the two share the cores, so the rate is bounded by both.

It prints a table and, as the LAST line of stdout, one JSON object (tinymlaas' figures
plus the bare-aiocoap baseline; with ``--dtls``, the DTLS figures with that object under
``nosec``). Targets (reported, never enforced): ratio tinymlaas/bare >= 0.7, RSS per device
<= 5 KB at 20,000 devices. All devices come from 127.0.0.1, so the per-source registration
burst (``limits.registrations_burst``) is raised to twice the device count.

    python bench/registrations.py --quick
    python bench/registrations.py --devices 20000 --target tinymlaas
    python bench/registrations.py --dtls --quick
    python bench/registrations.py --dtls --target tinymlaas --devices 10000 --profile DIR --profile-targets dtls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _coap_load import Counters, PhaseResult, drive, percentile
from _dtls_load import RESUMPTION, drive_dtls, provision
from _process import HOST, ServerProcess, kb, raise_nofile, rss_bytes

BARE = Path(__file__).resolve().parent / "_bare_aiocoap.py"


FD_MARGIN = 256  # open files besides the DTLS devices' sockets
TARGET_RATIO = 0.7
TARGET_RSS_KB = 5.0
TARGET_RSS_AT = 20000


# -- one target -----------------------------------------------------------------------------

def start_server(target: str, workdir: Path, devices: int) -> ServerProcess:
    if target == "bare":
        return ServerProcess([sys.executable, str(BARE), "--host", HOST, "--port", "0"], workdir,
                             name=target, label=target)
    server = ServerProcess.tinymlaas(workdir, name=target, label=target)
    # every simulated device comes from 127.0.0.1: one source for the per-source registration rate
    # limit (tinymlaas.server.limits), whose burst would otherwise answer 4.29 beyond 10,000 devices
    server.cmd += ["--set", f"limits.registrations_burst={max(10_000, 2 * devices)}"]
    if target == "dtls":
        server.cmd += ["--coaps", f"{HOST}:0"]  # NoSec stays "auto": refused once the batch is imported
    return server


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    server = start_server(target, workdir, args.devices)
    prefix = f"bench-{target}-"
    n = args.devices
    try:
        t_start = time.perf_counter()
        port = server.start()
        startup_s = time.perf_counter() - t_start
        pid = server.pid
        extra: dict[str, Any] = {}
        if target == "dtls":
            port = server.coaps_port()
            time.sleep(args.idle)
            rss_empty = rss_bytes(pid)
            creds, import_s = provision(server, prefix, n)
            extra.update(import_s=round(import_s, 2), resumption=RESUMPTION)
        time.sleep(args.idle)
        rss_before = rss_bytes(pid)
        rss_base = rss_empty if target == "dtls" else rss_before  # a secured device's cost includes its credential
        if target == "dtls":
            extra["credentials_rss_per_device_kb"] = round(kb(rss_before - rss_empty) / n, 3)
        hooks = [start_profiler(args, target, pid, workdir, "-handshakes" if target == "dtls" else "")]

        def after_handshakes() -> None:  # over DTLS: one profile of the handshakes, one of the rest
            stop_profiler(hooks[-1])
            hooks.append(start_profiler(args, target, pid, workdir, "-register-update"))
        try:
            if target == "dtls":
                shake, reg, upd, counters, stats = asyncio.run(drive_dtls(
                    port, creds, args.concurrency, args.phase_timeout, pid, args.update_lifetime, prefix,
                    after_handshakes))
                extra.update(stats)
            else:
                shake = None
                reg, upd, counters = asyncio.run(drive(port, n, args.concurrency, args.phase_timeout, pid,
                                                       args.update_lifetime, prefix))
        finally:
            stop_profiler(hooks[-1])
        time.sleep(args.settle)
        if not server.alive():
            raise RuntimeError(f"{target} died during the run:\n" + server.tail())
        rss_after = rss_bytes(pid)
        t_stop = time.perf_counter()
        stop_rc = server.stop()
        stop_s = time.perf_counter() - t_stop
        phases = [p for p in (shake, reg, upd) if p is not None]
        result = figures(target, n, shake, reg, upd, counters, phases)
        result.update(extra, port=port, startup_s=round(startup_s, 2),
                      rss_before_kb=round(kb(rss_before)), rss_after_kb=round(kb(rss_after)),
                      rss_per_device_kb=round(kb(rss_after - rss_base) / n, 3),
                      server_stop_rc=stop_rc, server_stop_s=round(stop_s, 2))
        return result
    finally:
        server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2)


def pct_of(phases: list[PhaseResult], cpu: Any) -> float:
    wall = sum(p.wall_s for p in phases)
    return round(100 * sum(cpu(p) for p in phases) / wall, 1) if wall else float("nan")


def figures(target: str, n: int, shake: PhaseResult | None, reg: PhaseResult, upd: PhaseResult, counters: Counters,
            phases: list[PhaseResult]) -> dict[str, Any]:
    """A target's figures. Over DTLS a device's registration includes its handshake:
    ``registrations_per_s`` is N / (handshake phase + Register phase), and the Register phase
    alone (over established sessions) is ``registrations_in_session_per_s``."""
    both = reg.latencies + upd.latencies
    arrival_s = reg.wall_s + (shake.wall_s if shake is not None else 0.0)
    out: dict[str, Any] = {
        "target": target, "devices": n,
        "registrations_per_s": round(n / arrival_s, 1) if arrival_s else 0.0,
        "updates_per_s": round(upd.requests / upd.wall_s, 1) if upd.wall_s else 0.0,
        "register_wall_s": round(reg.wall_s, 3), "update_wall_s": round(upd.wall_s, 3),
        "p50_ms": ms(reg.latencies, 50), "p99_ms": ms(reg.latencies, 99),
        "update_p50_ms": ms(upd.latencies, 50), "update_p99_ms": ms(upd.latencies, 99),
        "all_p50_ms": ms(both, 50), "all_p99_ms": ms(both, 99),
        "max_ms": round(max(both, default=float("nan")) * 1000, 2),
        "registered": reg.ok, "updated": upd.ok,
        "failures": sum(p.failures for p in phases),
        "failure_kinds": merge(*(p.failure_kinds for p in phases)),
        "skipped_updates": n - upd.requests,
        "retransmissions": counters.retransmissions,
        "separate_responses": counters.separate, "resets": counters.resets, "stray": counters.stray,
        "server_cpu_pct": pct_of(phases, lambda p: p.server_cpu_s),
        "client_cpu_pct": pct_of(phases, lambda p: p.client_cpu_s),
        "other_cpu_pct": pct_of(phases, lambda p: p.system_cpu_s - p.server_cpu_s - p.client_cpu_s),
    }
    if shake is not None:
        out.update({
            "handshakes_per_s": round(shake.ok / shake.wall_s, 1) if shake.wall_s else 0.0,
            "handshake_wall_s": round(shake.wall_s, 3), "handshakes": shake.ok,
            "handshake_p50_ms": ms(shake.latencies, 50), "handshake_p99_ms": ms(shake.latencies, 99),
            "handshake_server_cpu_pct": pct_of([shake], lambda p: p.server_cpu_s),
            "handshake_client_cpu_pct": pct_of([shake], lambda p: p.client_cpu_s),
            # CPU per handshake: what a handshake costs whichever side limits the rate
            "server_cpu_ms_per_handshake": round(1000 * shake.server_cpu_s / shake.ok, 3) if shake.ok else None,
            "client_cpu_ms_per_handshake": round(1000 * shake.client_cpu_s / shake.ok, 3) if shake.ok else None,
            "registrations_in_session_per_s": round(reg.requests / reg.wall_s, 1) if reg.wall_s else 0.0,
            "unsent": counters.unsent,
        })
    return out


def merge(*kinds: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in kinds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


# -- optional py-spy ------------------------------------------------------------------------

def start_profiler(args: argparse.Namespace, target: str, pid: int, workdir: Path,
                   part: str = "") -> subprocess.Popen | None:
    if not args.profile or target not in args.profile_targets:
        return None
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.profile_format]
    flags = ("-gil" if args.profile_gil else "") + ("-native" if args.profile_native else "")
    out = Path(args.profile) / f"{target}-{args.devices}{part}{flags}.{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(args.profile_rate), "--format", args.profile_format,
           "-o", str(out), "--duration", str(int(args.phase_timeout * 2 + 30))]
    if args.profile_threads:
        cmd.append("--threads")
    if args.profile_gil:
        cmd.append("--gil")
    if args.profile_native:
        cmd.append("--native")  # needs to pause the process: slows it down
    else:
        cmd.append("--nonblocking")
    print(f"profiling {target} (pid {pid}) into {out}", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / f"py-spy{part}.log", "wb"))
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
    ("DTLS handshakes/s", "handshakes_per_s", "{:,.0f}"),
    ("DTLS registrations/s in session", "registrations_in_session_per_s", "{:,.0f}"),
    ("handshake p50 ms", "handshake_p50_ms", "{:.2f}"),
    ("handshake p99 ms", "handshake_p99_ms", "{:.2f}"),
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
    ("  of which credentials import (KB)", "credentials_rss_per_device_kb", "{:.2f}"),
    ("credentials import s (CLI)", "import_s", "{:.2f}"),
    ("server CPU % (all phases)", "server_cpu_pct", "{:.0f}"),
    ("load generator CPU %", "client_cpu_pct", "{:.0f}"),
    ("server CPU % (handshakes)", "handshake_server_cpu_pct", "{:.0f}"),
    ("load generator CPU % (handshakes)", "handshake_client_cpu_pct", "{:.0f}"),
    ("server CPU ms per handshake", "server_cpu_ms_per_handshake", "{:.3f}"),
    ("load generator CPU ms per handshake", "client_cpu_ms_per_handshake", "{:.3f}"),
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


def report(results: dict[str, dict[str, Any]], ratio: float | None, dtls_ratio: float | None) -> None:
    targets = list(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        print(f"{'':34}" + "".join(f"{t:>14}" for t in targets))
        for label, key, template in ROWS:
            print(f"{label:34}" + "".join(f"{fmt(template, results[t].get(key)):>14}" for t in targets))
    else:
        title = "LwM2M registration benchmark (127.0.0.1, UDP" + (", dtls = DTLS-PSK)" if "dtls" in results else ")")
        table = Table(title=title)
        table.add_column("")
        for t in targets:
            table.add_column(t, justify="right")
        for label, key, template in ROWS:
            table.add_row(label, *(fmt(template, results[t].get(key)) for t in targets))
        Console(width=110).print(table)
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
    dtls = results.get("dtls")
    if dtls is not None and dtls_ratio is not None:
        print(f"ratio DTLS/NoSec registrations/s (a full handshake each): {dtls_ratio:.2f}; "
              f"{dtls['handshakes_per_s']:,.0f} handshakes/s; session resumption: {dtls['resumption']}")


def main() -> int:
    parser = argparse.ArgumentParser(description="LwM2M registration benchmark: tinymlaas vs bare aiocoap")
    parser.add_argument("--devices", type=int, default=None, help="simulated devices (default 2000; --quick: 1000)")
    parser.add_argument("--quick", action="store_true", help="a small run (< 60 s for both targets)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--target", choices=("both", "tinymlaas", "bare"), default="both",
                        help="both: tinymlaas and bare aiocoap; with --dtls, tinymlaas means NoSec and DTLS only")
    parser.add_argument("--dtls", action="store_true",
                        help="also the same load over DTLS-PSK (coaps, the batch's credentials imported first)")
    parser.add_argument("--idle", type=float, default=None, help="seconds idle after start before the first RSS")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after the load before the second RSS")
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="stop sending in a phase after this")
    parser.add_argument("--update-lifetime", type=int, default=None, help="send lt=VALUE with each Update")
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the server(s) into DIR")
    parser.add_argument("--profile-targets", default="tinymlaas", help="comma-separated (default tinymlaas)")
    parser.add_argument("--profile-format", choices=("flamegraph", "raw", "speedscope"), default="raw")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)")
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
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.dtls and nofile != resource.RLIM_INFINITY and args.devices + FD_MARGIN > nofile:
        parser.error(f"--dtls needs one UDP socket per device: {args.devices:,} devices and the open-files "
                     f"limit is {nofile:,} (at most {nofile - FD_MARGIN:,} devices)")

    targets = ["tinymlaas", "bare"] if args.target == "both" else [args.target]
    if args.dtls:
        if args.target == "bare":
            parser.error("--dtls compares with tinymlaas over NoSec: --target both or tinymlaas")
        targets.insert(1, "dtls")
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for t in targets:
        print(f"[{t}] {args.devices:,} devices, concurrency {args.concurrency} ...", file=sys.stderr, flush=True)
        results[t] = run_target(t, args)
    elapsed = time.perf_counter() - t0

    tm, bare = results.get("tinymlaas"), results.get("bare")
    ratio = (tm["registrations_per_s"] / bare["registrations_per_s"]
             if tm and bare and bare["registrations_per_s"] else None)
    dtls = results.get("dtls")
    dtls_ratio = (dtls["registrations_per_s"] / tm["registrations_per_s"]
                  if dtls and tm and tm["registrations_per_s"] else None)
    report(results, ratio, dtls_ratio)
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
    if dtls is not None:
        summary = dtls_summary(dtls, tm, dtls_ratio, summary)
    print(json.dumps(summary), flush=True)
    return 0


def dtls_summary(dtls: dict[str, Any], tm: dict[str, Any] | None, ratio: float | None,
                 nosec: dict[str, Any]) -> dict[str, Any]:
    """The --dtls JSON line: the DTLS figures, their ratio to the NoSec run of this process, and
    that run's own summary (what the benchmark prints without --dtls) under ``nosec``."""
    in_session = (dtls["registrations_in_session_per_s"] / tm["registrations_per_s"]
                  if tm and tm["registrations_per_s"] else None)
    keys = ("registrations_per_s", "handshakes_per_s", "rss_per_device_kb", "registrations_in_session_per_s",
            "updates_per_s", "handshake_p50_ms", "handshake_p99_ms", "p50_ms", "p99_ms", "all_p50_ms", "all_p99_ms",
            "failures", "retransmissions", "credentials_rss_per_device_kb", "import_s", "server_cpu_pct",
            "handshake_server_cpu_pct", "handshake_client_cpu_pct", "server_cpu_ms_per_handshake",
            "client_cpu_ms_per_handshake", "rss_before_kb", "rss_after_kb", "resumption")
    out: dict[str, Any] = {"mode": "dtls-psk", "devices": dtls["devices"], "concurrency": nosec["concurrency"]}
    out.update({k: dtls[k] for k in keys})
    out["ratio"] = round(ratio, 3) if ratio is not None else None
    out["ratio_in_session"] = round(in_session, 3) if in_session is not None else None
    out["client_datagrams_per_handshake"] = (round(dtls["client_datagrams_in"] / dtls["handshakes"], 2)
                                             if dtls["handshakes"] else None)
    out.update(cpus=nosec["cpus"], elapsed_s=nosec["elapsed_s"], nosec=nosec)
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
