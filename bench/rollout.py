"""Roll-out benchmark: one campaign of a ~50 KB package to 1,000 simulated devices.

It starts the tinymlaas server as a subprocess on 127.0.0.1 (CoAP and admin API on free
ports; its CPU is measured from /proc, apart from the simulators'), registers the MLPerf Tiny
keyword-spotting model (``kws_ref_model.onnx``) and builds it once for TFLM int8 before the
campaign (48,032 B; each device gets it sealed, ~48.4 KB), then runs the fleet - nrf52840
simulated MCUs, genuine LwM2M clients over UDP, one socket each - in ``--processes`` child
processes of this script (``--child``: JSON lines on stdout, commands on stdin). It puts every
device in a group (``POST /groups``) and starts one campaign (``POST /campaigns``, backend tflm,
precision int8, pull delivery through object 9) and waits for it to end, polling
``GET /campaigns``. Each device then reads its capabilities, gets the server's key, pulls the
package block by block (Block2, ``--block-size`` bytes a block), verifies its signature,
installs and activates it and runs it once; the server reads the ML Inference object to
confirm it.

The devices' model runner has ``memo_runs=True`` (fleet-scale option of
``simulator.runtimes``): one real tflite-micro run per distinct (model, arena), the other
devices get that run's result; installing still checks the arena (cached per blob).

Figures (the campaign window runs from just before ``POST /campaigns`` to the campaign's
``finished_at``):

- ``wall_s``, ``devices_per_minute`` (succeeded devices per minute of that window),
- ``server_cpu_s_per_device``: utime+stime of the server process over the window / devices,
- per-device deployment time (``finished_at - created_at`` of the deployment rows), p50/p95,
- retransmissions, as far as they can be counted from here:
  ``device_block_retries`` (a block GET re-sent by the device's pull loop after its 2 s
  timeout: ``download_stats[...].retries``), ``device_coap_retransmissions`` (aiocoap CON
  retransmissions by the devices: their block GETs, notifications, Registers),
  ``server_coap_retransmissions_seen`` (duplicate CON requests received by devices, i.e.
  CON requests the server sent again), ``server_operation_retries`` (deployment ``attempts``
  above one: an LwM2M operation retried by the server after a timeout, or a deployment
  re-run). ``retransmissions`` is the sum of the first three.

Same-run reference: after the campaign, the same simulated fleet (same processes, sockets and
device code: ``simulator.download.pull`` with the same block size, then the device's own
signature and hash check, ``Packages.verify``) fetches the same package bytes - sealed here with
the server's own key, checked equal in size to what the campaign delivered - from a bare aiocoap
Block2 server (``bench/_bare_aiocoap.py --package``, its own process), with the campaign's
concurrency. ``reference_per_min`` is devices per minute there; ``ratio`` is
``devices_per_min / reference_per_min`` (target >= 0.8): what the whole LwM2M deployment
(capability read, key, URI write, observe, install, activate, verification) costs over moving
the bytes alone. ``p50_s``/``p99_s`` are per-device deployment times of the campaign,
``failed`` its failed devices.

Prints a table, then as its LAST line one JSON object.

    python bench/rollout.py --quick          # 100 devices, < 60 s
    python bench/rollout.py                  # 1,000 devices
    python bench/rollout.py --processes 2 --concurrency 200 --block-size 1024
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# bench/simulator.py would shadow the ``simulator`` package: import from the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_HERE, REPO)]

from bench._process import (HOST, ServerProcess, _die_with_parent, kb, run_main, tear_down, proc_cpu_s,  # noqa: E402
                            raise_nofile, repo_env, rss_bytes, system_cpu_s)

MODEL = REPO.parent / "shared" / "models" / "mlperf_tiny" / "onnx_converted" / "kws_ref_model.onnx"
MODEL_NAME = "kws"
PROFILE = "nrf52840"
PREFIX = "roll"
GROUP = "rollout"
ACTIVE = ("running", "paused")
CHILDREN: list[Any] = []
MAX_CHILD_LINES = 10_000
BLOCK_SIZES = {16: 0, 32: 1, 64: 2, 128: 3, 256: 4, 512: 5, 1024: 6}


# -- the simulated fleet (child process) ----------------------------------------------------

class CoapLog(logging.Handler):
    """Counts aiocoap's retransmission and duplicate records (by format string: cheap)."""

    KINDS = {"Retransmission, Message ID: %d.": "retransmissions",
             "Exchange timed out trying to transmit %s": "con_timeouts",
             "Duplicate CON received, sending old response again": "duplicate_con",
             "Duplicate CON received, no response to send yet": "duplicate_con",
             "Duplicate NON, ACK or RST received": "duplicate_other"}

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts = {k: 0 for k in set(self.KINDS.values())}

    def emit(self, record: logging.LogRecord) -> None:
        kind = self.KINDS.get(record.msg) if isinstance(record.msg, str) else None
        if kind is not None:
            self.counts[kind] += 1


OPS = {"read": 0, "write": 0, "execute": 0}  # LwM2M operations the devices served (this process)


def count_operations() -> None:
    """Instrumentation only: count ObjectTree.read/write/execute calls (a Read, an Observe registration
    or a notification each read the tree once)."""
    from simulator.objects import ObjectTree

    def wrap(name: str) -> None:
        inner = getattr(ObjectTree, name)

        def counted(self: Any, *a: Any, **kw: Any) -> Any:
            OPS[name] += 1
            return inner(self, *a, **kw)
        setattr(ObjectTree, name, counted)
    for name in OPS:
        wrap(name)


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.devices: list[Any] = []
        self.runner: Any = None
        self.coap = CoapLog()
        for name in ("coap", "coap-server"):
            lg = logging.getLogger(name)
            lg.setLevel(logging.INFO)
            lg.addHandler(self.coap)
            lg.propagate = False
        self.warnings: dict[str, int] = {}
        self.profiler: Any = None

    async def start(self) -> dict[str, Any]:
        from device_profiles import get_profile
        from simulator.fleet import FleetSpec, build_fleet, start_fleet
        from simulator.runtimes import ModelRunner
        from lwm2m.model import default_registry

        default_registry()
        count_operations()
        self.runner = ModelRunner(memo_runs=True)
        spec = FleetSpec(get_profile(PROFILE), self.args.devices, lifetime=self.args.lifetime, prefix=self.args.prefix)
        self.devices = build_fleet([spec], (HOST, self.args.server_port), self.runner)
        for device in self.devices:
            device.packages.block_exponent = BLOCK_SIZES[self.args.block_size]
        t0 = time.perf_counter()
        failures = await asyncio.wait_for(start_fleet(self.devices, concurrency=64), self.args.deadline)
        registered = sum(1 for d in self.devices if d.client is not None and d.client.location)
        kinds: dict[str, int] = {}
        for exc in failures:
            k = f"{type(exc).__name__}: {str(exc)[:100]}"
            kinds[k] = kinds.get(k, 0) + 1
        return {"event": "registered", "pid": os.getpid(), "devices": len(self.devices), "registered": registered,
                "register_s": round(time.perf_counter() - t0, 3), "failure_kinds": kinds}

    def stats(self) -> dict[str, Any]:
        blocks = retries = downloads = resumed = installed = active = 0
        for d in self.devices:
            for st in d.packages.download_stats.values():
                downloads += 1
                blocks += st.blocks
                retries += st.retries
                resumed += len(st.resumed_at or ())
            installed += sum(1 for s in d.software if int(s.state) == 4)
            active += d.active is not None
        return {"event": "stats", "t": time.time(), "cpu_s": time.process_time(), "downloads": downloads,
                "blocks": blocks, "block_retries": retries, "installed": installed, "active": active,
                "reboots": sum(d.reboots for d in self.devices), "coap": dict(self.coap.counts), "ops": dict(OPS),
                "rss": rss_bytes(), "tasks": len(asyncio.all_tasks())}

    def profile(self, on: bool) -> None:
        if not self.args.profile_child:
            return
        import cProfile
        if on and self.profiler is None:
            self.profiler = cProfile.Profile()
            self.profiler.enable()
        elif not on and self.profiler is not None:
            self.profiler.disable()
            path = f"{self.args.profile_child}.{os.getpid()}"
            self.profiler.dump_stats(path)
            self.profiler = None
            print(f"simulator profile written to {path}", file=sys.stderr, flush=True)

    async def reference(self, uri: str, concurrency: int) -> dict[str, Any]:
        """Every device pulls ``uri`` (the bare server's copy of the package) and verifies it as
        it would a delivery, ``concurrency`` at a time; per-device seconds and failures."""
        from simulator.download import pull

        gate = asyncio.Semaphore(max(1, concurrency))
        durations: list[float] = []
        failures: dict[str, int] = {}
        cpu0, t0 = time.process_time(), time.perf_counter()

        async def one(device: Any) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    package = await pull(device.context, uri, limit=device.profile.max_package,
                                         size_exponent=BLOCK_SIZES[self.args.block_size],
                                         attempts=device.packages.attempts,
                                         attempt_timeout=device.packages.attempt_timeout)
                    device.packages.verify(package)
                except Exception as exc:  # a failed pull or check: counted, the run goes on
                    key = f"{type(exc).__name__}: {str(exc)[:80]}"
                    failures[key] = failures.get(key, 0) + 1
                    return
                durations.append(time.perf_counter() - start)

        await asyncio.gather(*(one(d) for d in self.devices if d.context is not None))
        return {"event": "reference", "ok": len(durations), "failures": failures, "durations": durations,
                "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}

    async def stop(self) -> None:
        from simulator.fleet import stop_fleet
        try:
            await asyncio.wait_for(stop_fleet(self.devices, deregister=True, concurrency=256), 60)
        except asyncio.TimeoutError:
            pass
        if self.runner is not None:
            self.runner.close()


async def child_main(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    fleet = Fleet(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        say(await fleet.start())
        end = time.monotonic() + args.deadline
        for _ in range(MAX_CHILD_LINES):
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                line = (await asyncio.wait_for(reader.readline(), left)).decode().strip()
            except asyncio.TimeoutError:
                break
            if line == "stats":
                say(fleet.stats())
            elif line == "profile-on":
                fleet.profile(True)
                say({"event": "ok"})
            elif line == "profile-off":
                fleet.profile(False)
                say({"event": "ok"})
            elif line.startswith("reference "):
                _, uri, concurrency = line.split()
                say(await fleet.reference(uri, int(concurrency)))
            elif line == "stop" or not line:
                break
        fleet.profile(False)
        final = fleet.stats()
        await fleet.stop()
        final["event"] = "stopped"
        say(final)
    finally:
        if fleet.runner is not None:
            fleet.runner.close()
    return 0


class Child:
    """A simulator child process seen from the parent."""

    def __init__(self, args: argparse.Namespace, index: int, devices: int, port: int) -> None:
        self.args, self.index, self.n, self.port = args, index, devices, port
        self.prefix = f"{PREFIX}{index}"
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        a = self.args
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--server-port", str(self.port),
               "--prefix", self.prefix, "--devices", str(self.n), "--block-size", str(a.block_size),
               "--lifetime", str(a.lifetime), "--deadline", str(a.deadline)]
        if a.profile_child:
            cmd += ["--profile-child", a.profile_child]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None, cwd=REPO,
            env=repo_env(), preexec_fn=_die_with_parent, limit=1 << 20)
        CHILDREN.append(self.proc)

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + timeout
        for _ in range(MAX_CHILD_LINES):
            left = end - time.monotonic()
            if left <= 0:
                break
            raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not raw:
                raise RuntimeError(f"simulator process {self.index} closed its stdout")
            text = raw.decode(errors="replace").strip()
            if text.startswith("{"):
                return json.loads(text)  # type: ignore[no-any-return]
            print(f"[sim {self.index}] {text}", file=sys.stderr)
        raise asyncio.TimeoutError(f"simulator process {self.index}: no answer within {timeout:.0f} s")

    async def ask(self, command: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line(timeout)

    async def stop(self) -> dict[str, Any]:
        final = await self.ask("stop", 120)
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except asyncio.TimeoutError:
            pass
        return final


# -- preparation: the model, built once ---------------------------------------------------------

async def prepare_model(workdir: Path, home: Path) -> dict[str, Any]:
    """Register the model and build it for TFLM int8 into the server's compile cache (before it
    starts); seal the package with the key the server will use (the reference serves it)."""
    from tinymlaas.deploy.cache import CompileCache
    from tinymlaas.deploy.signing import ServerKey
    from tinymlaas.registry import ModelRegistry
    from tinymlaas.store.store import Store

    home.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    store.start()
    cache = CompileCache(home / "artifacts", store)
    try:
        entry = ModelRegistry(home, store).add(MODEL, name=MODEL_NAME)
        t0 = time.perf_counter()
        built = await cache.get(entry, "tflm", "int8")
        compile_s = round(time.perf_counter() - t0, 2)
        # The campaign's package is the slot's first (anti-rollback sequence 1). The reference runs
        # after it on the same devices, which refuse an older-or-equal sequence: its copy is sealed
        # as sequence 2 (the same bytes but that one, the same length) so they verify it as newer.
        package = ServerKey.load_or_create(home).seal(built, entry, seq=2)
        (workdir / "package.bin").write_bytes(package)
        return {"model": f"{entry.name}:{entry.version}", "model_bytes": entry.size,
                "artifact_bytes": len(built.data), "compile_s": compile_s,
                "package_file": str(workdir / "package.bin"), "sealed_bytes": len(package)}
    finally:
        cache.close()
        store.close()


# -- the benchmark ------------------------------------------------------------------------------

def pctl(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def run(args: argparse.Namespace, server: ServerProcess, prep: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url, token = server.api()
    spid = server.pid
    shares = [args.devices // args.processes + (1 if i < args.devices % args.processes else 0)
              for i in range(args.processes)]
    children = [Child(args, i, n, server.port) for i, n in enumerate(shares)]
    end = time.monotonic() + args.deadline
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async def call(method: str, path: str, **kw: Any) -> Any:
            r = await http.request(method, path, **kw)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
            return r.json()

        for c in children:
            await c.spawn()
        print(f"registering {args.devices:,} {PROFILE} devices from {args.processes} process(es) ...",
              file=sys.stderr, flush=True)
        t_reg = time.perf_counter()
        regs = await asyncio.gather(*(c.line(max(1.0, end - time.monotonic())) for c in children))
        register_s = time.perf_counter() - t_reg
        registered = sum(r["registered"] for r in regs)
        for r in regs:
            if r["failure_kinds"]:
                print(f"registration failures: {r['failure_kinds']}", file=sys.stderr)
        group = await call("POST", "/groups", json={"name": GROUP, "query": f"endpoint={PREFIX}*,registered=yes"})
        members = len(group["members"])
        print(f"{registered:,} registered in {register_s:.1f} s; group {GROUP!r} has {members:,} members",
              file=sys.stderr, flush=True)
        if members == 0:
            raise RuntimeError("no device in the group: nothing to roll out")

        body = {"model": prep["model"], "group": GROUP, "stages": args.stage_list,
                "success_threshold": args.success_threshold, "error_threshold": args.error_threshold,
                "concurrency": args.concurrency, "backend": "tflm", "precision": "int8", "method": "pull",
                "object_id": 9}
        if args.profile_child:
            await asyncio.gather(*(c.ask("profile-on") for c in children))
        s0 = await asyncio.gather(*(c.ask("stats") for c in children))
        scpu0, sys0, me0 = proc_cpu_s(spid), system_cpu_s(), time.process_time()
        t0_wall, t0 = time.time(), time.perf_counter()
        camp = await call("POST", "/campaigns", json=body)
        cid = camp["id"]
        print(f"campaign {cid}: {members:,} devices, stages {args.stage_list}, concurrency {args.concurrency}, "
              f"{args.block_size}-byte blocks ...", file=sys.stderr, flush=True)
        state, timed_out, polls, last_note = camp["state"], False, 0, 0.0
        row: dict[str, Any] = camp
        for _ in range(1, 100_000):  # bounded by the deadline too
            polls += 1
            if state not in ACTIVE:
                break
            if time.monotonic() > end - 20:  # leave time to stop everything
                timed_out = True
                break
            if not server.alive():
                raise RuntimeError("the server died during the campaign:\n" + server.tail())
            await asyncio.sleep(args.poll)
            row = next(r for r in await call("GET", "/campaigns") if r["id"] == cid)
            state = row["state"]
            if time.perf_counter() - last_note >= 10:
                last_note = time.perf_counter()
                print(f"  {time.perf_counter() - t0:6.1f} s: {state}, stage {row['stage'] + 1}, "
                      f"{row['started']:,} started, {row['succeeded']:,} succeeded, {row['failed']:,} failed",
                      file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        scpu1, sys1, me1 = proc_cpu_s(spid), system_cpu_s(), time.process_time()
        s1 = await asyncio.gather(*(c.ask("stats") for c in children))
        if args.profile_child:
            await asyncio.gather(*(c.ask("profile-off") for c in children))
        if timed_out:
            print(f"deadline: cancelling campaign {cid} ({state})", file=sys.stderr, flush=True)
            try:
                await call("POST", f"/campaigns/{cid}/cancel")
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
        detail = await call("GET", f"/campaigns/{cid}")
        rows = await call("GET", "/deployments", params={"campaign": cid, "limit": 10000})
        health = await call("GET", "/health")
        reference = await run_reference(args, children, prep, end)
        finals = await asyncio.gather(*(c.stop() for c in children))

    finished_at = detail.get("finished_at")
    wall = (finished_at - t0_wall) if (finished_at and not timed_out) else (t1 - t0)
    ok = [r for r in rows if r["state"] == "succeeded"]
    failed = [r for r in rows if r["state"] == "failed"]
    errors: dict[str, int] = {}
    for r in failed:
        k = (r.get("error") or "?")
        for c in children:
            k = k.replace(c.prefix, PREFIX)
        k = k[:120]
        errors[k] = errors.get(k, 0) + 1
    durations = [r["finished_at"] - r["created_at"] for r in ok if r.get("finished_at")]
    sizes = {r.get("package_size") for r in ok}
    server_cpu = scpu1 - scpu0
    n_done = len(ok)

    def delta(key: str) -> int:
        return sum(b[key] - a[key] for a, b in zip(s0, s1, strict=True))

    def coap(key: str) -> int:
        return sum(b["coap"][key] - a["coap"][key] for a, b in zip(s0, s1, strict=True))

    block_retries, dev_retx, srv_dup = delta("block_retries"), coap("retransmissions"), coap("duplicate_con")
    sim_cpu = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(s0, s1, strict=True))
    blocks = delta("blocks")
    ops = {k: sum(b["ops"][k] - a["ops"][k] for a, b in zip(s0, s1, strict=True)) for k in OPS}
    out: dict[str, Any] = {
        "devices": members, "succeeded": n_done, "failed": len(failed),
        "not_finished": members - n_done - len(failed), "state": detail.get("state"), "note": detail.get("note"),
        "timed_out": timed_out,
        "wall_s": round(wall, 2),
        "devices_per_minute": round(60 * n_done / wall, 1) if wall > 0 else 0.0,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_s_per_device": round(server_cpu / members, 4),
        "server_cpu_pct": round(100 * server_cpu / wall, 1) if wall > 0 else None,
        "simulator_cpu_s": round(sim_cpu, 2),
        "simulator_cpu_s_per_device": round(sim_cpu / members, 4),
        "machine_busy_pct": round(100 * (sys1 - sys0) / (t1 - t0) / (os.cpu_count() or 1), 1),
        # busy CPU of the machine not spent by the server, the simulators or this process: other
        # work on the machine (it competes for the same cores), plus the runners' worker processes
        "other_cpu_pct": round(100 * ((sys1 - sys0) - server_cpu - sim_cpu - (me1 - me0)) / (t1 - t0), 1),
        "deployment_s_p50": round(statistics.median(durations), 2) if durations else None,
        "deployment_s_p95": round(pctl(durations, 0.95) or 0, 2) if durations else None,
        "deployment_s_max": round(max(durations), 2) if durations else None,
        "package_bytes": max((s for s in sizes if s), default=None),
        "artifact_bytes": prep["artifact_bytes"], "block_size": args.block_size,
        "blocks_fetched": blocks, "blocks_per_s": round(blocks / wall, 1) if wall > 0 else None,
        "mb_per_s": round(blocks * args.block_size / 1e6 / wall, 2) if wall > 0 else None,
        "retransmissions": block_retries + dev_retx + srv_dup,
        "device_block_retries": block_retries,
        "device_coap_retransmissions": dev_retx,
        "server_coap_retransmissions_seen": srv_dup,
        "con_timeouts": coap("con_timeouts"),
        "server_operation_retries": sum(max(0, int(r.get("attempts") or 0) - 1) for r in rows),
        "reboots": delta("reboots"),
        # LwM2M requests the devices served, per device: reads count the server's Reads (the
        # deployer's and its Watch polls), Observe registrations and notifications
        "device_reads_per_device": round(ops["read"] / members, 1),
        "device_writes_per_device": round(ops["write"] / members, 1),
        "device_executes_per_device": round(ops["execute"] / members, 1),
        "installed_on_devices": sum(b["installed"] for b in s1), "active_on_devices": sum(b["active"] for b in s1),
        "errors": errors,
        "concurrency": args.concurrency, "stages": args.stage_list, "processes": args.processes,
        "registered": registered, "register_s": round(register_s, 2),
        "compile_s": prep["compile_s"], "model": prep["model"], "model_bytes": prep["model_bytes"],
        "memo_runs": True, "polls": polls,
        "server_rss_kb": round(kb(rss_bytes(spid))) if server.alive() else None,
        "simulator_rss_kb": sum(round(kb(f["rss"])) for f in finals),
        "registrations_on_server": health.get("registrations"),
        "cpus": os.cpu_count(),
        "sealed_package_bytes": prep["sealed_bytes"],
    }
    out.update(reference)
    out["reference_same_package"] = out["package_bytes"] in (None, prep["sealed_bytes"])
    per_min = out["devices_per_minute"]
    out.update({"devices_per_min": per_min,
                "ratio": round(per_min / out["reference_per_min"], 3) if out["reference_per_min"] else None,
                "p50_s": out["deployment_s_p50"],
                "p99_s": round(pctl(durations, 0.99) or 0, 2) if durations else None})
    return out


async def run_reference(args: argparse.Namespace, children: list["Child"], prep: dict[str, Any],
                        end: float) -> dict[str, Any]:
    """The same fleet pulls the same bytes from a bare aiocoap Block2 server (its own process)."""
    workdir = Path(prep["package_file"]).parent
    ref = ServerProcess([sys.executable, str(_HERE / "_bare_aiocoap.py"), "--host", HOST, "--port", "0",
                         "--package", prep["package_file"]], workdir, name="reference",
                        label="the reference Block2 server")
    port = ref.start()
    try:
        uri = f"coap://{HOST}:{port}/p/pkg"
        share = [max(1, -(-args.concurrency * c.n // max(1, args.devices))) for c in children]
        print(f"reference: the same fleet pulls the same {prep['sealed_bytes']:,} B from a bare aiocoap server ...",
              file=sys.stderr, flush=True)
        cpu0, t0 = proc_cpu_s(ref.pid), time.perf_counter()
        answers = await asyncio.gather(*(c.ask(f"reference {uri} {n}", max(10.0, end - time.monotonic() - 10))
                                         for c, n in zip(children, share, strict=True)))
        wall, cpu = time.perf_counter() - t0, proc_cpu_s(ref.pid) - cpu0
    finally:
        ref.stop()
    ok = sum(a["ok"] for a in answers)
    failures: dict[str, int] = {}
    for a in answers:
        for k, v in a["failures"].items():
            failures[k] = failures.get(k, 0) + v
    durations = [d for a in answers for d in a["durations"]]
    return {"reference_ok": ok, "reference_failed": sum(failures.values()), "reference_failures": failures,
            "reference_wall_s": round(wall, 2), "reference_per_min": round(60 * ok / wall, 1) if wall > 0 else 0.0,
            "reference_server_cpu_s_per_device": round(cpu / max(1, ok), 4),
            "reference_p50_s": round(statistics.median(durations), 3) if durations else None}


# -- report -------------------------------------------------------------------------------------

ROWS = [
    ("devices (nrf52840, in the group)", "devices", "{:,}"),
    ("succeeded", "succeeded", "{:,}"),
    ("failed", "failed", "{:,}"),
    ("not finished", "not_finished", "{:,}"),
    ("campaign state", "state", "{}"),
    ("stages / concurrency", None, None),
    ("package (signed) bytes", "package_bytes", "{:,}"),
    ("block size bytes", "block_size", "{:,}"),
    ("wall s (campaign)", "wall_s", "{:.2f}"),
    ("devices per minute", "devices_per_minute", "{:,.0f}"),
    ("reference: same fleet, bare Block2, per min", "reference_per_min", "{:,.0f}"),
    ("ratio (target >= 0.8)", "ratio", "{:.2f}"),
    ("per-device p99 s", "p99_s", "{:.2f}"),
    ("deployment s p50 / p95 / max", None, None),
    ("server CPU s", "server_cpu_s", "{:.2f}"),
    ("server CPU s per device", "server_cpu_s_per_device", "{:.4f}"),
    ("server CPU % of one core", "server_cpu_pct", "{:.0f}"),
    ("simulator CPU s per device", "simulator_cpu_s_per_device", "{:.4f}"),
    ("machine busy % (all cores)", "machine_busy_pct", "{:.0f}"),
    ("other processes' CPU % of one core", "other_cpu_pct", "{:.0f}"),
    ("blocks fetched", "blocks_fetched", "{:,}"),
    ("blocks per s", "blocks_per_s", "{:,.0f}"),
    ("MB per s", "mb_per_s", "{:.2f}"),
    ("retransmissions (sum of next 3)", "retransmissions", "{:,}"),
    ("  device block re-requests", "device_block_retries", "{:,}"),
    ("  device CoAP CON retransmissions", "device_coap_retransmissions", "{:,}"),
    ("  server CON retransmissions seen", "server_coap_retransmissions_seen", "{:,}"),
    ("server operation retries", "server_operation_retries", "{:,}"),
    ("CON exchanges timed out (devices)", "con_timeouts", "{:,}"),
    ("model active on devices", "active_on_devices", "{:,}"),
    ("Reads* / Writes / Executes per device", None, None),
    ("registration s (before)", "register_s", "{:.1f}"),
    ("compile s (once, before)", "compile_s", "{:.2f}"),
]


def fmt(template: str | None, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return template.format(value) if template else str(value)
    except (ValueError, TypeError):
        return str(value)


def report(s: dict[str, Any]) -> None:
    title = (f"Roll-out: {s['model']} (TFLM int8) to simulated {PROFILE} devices over LwM2M/UDP on 127.0.0.1, "
             f"{s['processes']} simulator process(es); device model runs memoised (memo_runs=True)")
    print(title)
    for label, key, template in ROWS:
        if label.startswith("stages"):
            value = f"{','.join(f'{x:g}' for x in s['stages'])} / {s['concurrency']}"
        elif label.startswith("Reads* /"):
            value = " / ".join(fmt("{:.1f}", s[k]) for k in ("device_reads_per_device", "device_writes_per_device",
                                                               "device_executes_per_device"))
        elif label.startswith("deployment s"):
            value = " / ".join(fmt("{:.2f}", s[k]) for k in ("deployment_s_p50", "deployment_s_p95",
                                                               "deployment_s_max"))
        else:
            value = fmt(template, s.get(key))
        print(f"  {label:38}{value:>22}")
    if s["errors"]:
        print(f"  failures: {s['errors']}")
    if s["note"]:
        print(f"  campaign note: {s['note']}")
    print("  * Reads served by the devices, including Observe registrations and notifications")
    target = "met" if s["devices_per_minute"] >= 1000 else "NOT met"
    print(f"  target >= 1,000 devices per minute: {target}")
    if s.get("ratio") is not None:
        print(f"  target ratio >= 0.8 of the bare Block2 reference: {'met' if s['ratio'] >= 0.8 else 'NOT met'}"
              + ("" if s.get("reference_same_package") else " (the reference package differs in size!)"))


def main() -> int:
    parser = argparse.ArgumentParser(description="Campaign roll-out benchmark (~50 KB package, simulated devices)")
    parser.add_argument("--devices", type=int, default=None, help="devices (default 1000; quick 100)")
    parser.add_argument("--quick", action="store_true", help="a short run (< 60 s): 100 devices")
    parser.add_argument("--processes", type=int, default=1, help="simulator processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=None, help="campaign concurrency (default 100)")
    parser.add_argument("--stages", default="1.0", help="cumulative stage fractions (default 1.0: one stage)")
    parser.add_argument("--success-threshold", type=float, default=0.95)
    parser.add_argument("--error-threshold", type=float, default=0.05)
    parser.add_argument("--block-size", type=int, default=1024, choices=sorted(BLOCK_SIZES),
                        help="Block2 size the devices ask for (default 1024; the simulator's own default is 512)")
    parser.add_argument("--lifetime", type=int, default=900, help="registration lifetime s (default 900)")
    parser.add_argument("--poll", type=float, default=0.5, help="campaign poll interval s (default 0.5)")
    parser.add_argument("--deadline", type=float, default=None, help="whole run s (default 600; quick 58)")
    parser.add_argument("--profile-child", default=None, metavar="PATH",
                        help="cProfile the simulator process(es) over the campaign, to PATH.<pid>")
    parser.add_argument("--profile-server", default=None, metavar="PATH",
                        help="run the server under cProfile, stats to PATH (written when it stops)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=PREFIX, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.devices = 100 if args.devices is None else args.devices
        args.deadline = 58.0 if args.deadline is None else args.deadline
    args.devices = 1000 if args.devices is None else args.devices
    args.deadline = 600.0 if args.deadline is None else args.deadline
    args.concurrency = 100 if args.concurrency is None else args.concurrency
    try:
        args.stage_list = [float(x) for x in args.stages.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--stages {args.stages!r}: comma-separated fractions")
    if args.devices < 1 or args.processes < 1 or args.processes > args.devices or args.concurrency < 1:
        parser.error("--devices, --processes (<= devices) and --concurrency must be positive")
    raise_nofile()

    if args.child:
        signal.alarm(int(args.deadline) + 60)  # the child dies by itself if the parent forgets it
        return asyncio.run(child_main(args))

    if not MODEL.exists():
        print(f"model not found: {MODEL}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.deadline) + 30)
    logging.basicConfig(level=logging.WARNING)

    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    server = ServerProcess.tinymlaas(workdir)
    if args.profile_server:
        i = server.cmd.index("-m")
        server.cmd[i:i] = ["-m", "cProfile", "-o", str(Path(args.profile_server).resolve())]
    try:
        prep = asyncio.run(prepare_model(workdir, server.home))
        print(f"{prep['model']} built for TFLM int8: {prep['artifact_bytes']:,} B in {prep['compile_s']:.1f} s",
              file=sys.stderr, flush=True)
        port = server.start()
        print(f"server pid {server.pid} on coap://{HOST}:{port}", file=sys.stderr, flush=True)
        summary = asyncio.run(run(args, server, prep))
        summary["server_stop_rc"] = server.stop()
    finally:
        tear_down(CHILDREN, server, workdir, args.keep)
    summary["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    report(summary)
    print(f"  total time {summary['elapsed_s']:.1f} s")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
