"""``tinymlaas demo``: a server and a mixed simulated fleet on loopback, end to end.

Starts the server (SQLite in a temporary directory) and its admin API, brings up simulated
boards from the device profiles (nRF52840, STM32L4R5, ESP32-S3, RP2040, SAMD21 speaking LwM2M
1.1, and an nRF52840 speaking 1.0 without the ML Capability object, which the server matches
to its profile through the Device object), lets the server read what each can offer for ML,
manages one device (write, execute, observe), prints it all, and shuts down. Bounded in time.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path as FsPath
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from device_profiles import load_profiles
from tinymlaas import runtime
from tinymlaas.lwm2m.path import Path
from tinymlaas.server.device_client import preferred_format
from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
from simulator.runtimes import ModelRunner

FLEET = ("nrf52840", "stm32l4r5", "esp32s3", "rp2040", "samd21")


def kib(n: Any) -> str:
    return f"{int(n) // 1024:,}" if isinstance(n, int) else "?"


async def run_demo(console: Console, timeout_s: float = 60.0) -> int:
    profiles = load_profiles()
    with tempfile.TemporaryDirectory(prefix="tinymlaas-demo-") as tmp:
        home = FsPath(tmp)
        running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{home / 'demo.db'}", home)
        server = running.server
        console.print(f"server: coap://127.0.0.1:{server.address[1]}, admin API {running.api_url}, database in {home}")
        specs = [FleetSpec(profiles[name], 1, prefix=f"demo-{name}") for name in FLEET]
        specs.append(FleetSpec(profiles["nrf52840"], 1, version="1.0", with_capability_object=False,
                               prefix="demo-legacy"))
        runner = ModelRunner()
        devices = build_fleet(specs, server.address, runner)
        try:
            failures = await start_fleet(devices)
            if failures:
                raise RuntimeError(f"{len(failures)} simulated devices failed to register: {failures[0]}")
            rows = await asyncio.wait_for(exercise(server, devices), timeout_s)
        finally:
            await stop_fleet(devices)
            runner.close()
            await running.stop()
    show(console, rows)
    return 0 if all(r["ok"] for r in rows) else 1


async def exercise(server: Any, devices: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for device in devices:
        ep = device.endpoint
        snap = await server.capabilities.refresh(ep)
        data = snap["data"] if snap else {}
        if snap and snap["source"] == "ml-capability-object":
            sram, flash = data.get("/33100/0/1"), data.get("/33100/0/3")
            runtimes = ", ".join(v for k, v in sorted(data.items()) if k.startswith("/33100/0/9/"))
        else:
            sram, flash = data.get("sram_free"), data.get("flash_free")
            runtimes = ", ".join(data.get("runtimes", {}))
        await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): 120})
        obs = await server.observations.observe(ep, Path(3, 0, 9))
        queue = server.observations.subscribe(obs)
        device.tree.set(Path(3, 0, 9), 42)
        note = await asyncio.wait_for(queue.get(), 5)
        server.observations.cancel(ep, Path(3, 0, 9))
        reg = server.registrations.by_endpoint[ep]
        rows.append({
            "endpoint": ep, "profile": device.profile.name, "lwm2m": f"{reg.lwm2m_version} {preferred_format(reg).name}",
            "source": snap["source"] if snap else "-", "matched": snap.get("profile") if snap else None,
            "sram": sram, "flash": flash, "runtimes": runtimes,
            "ok": bool(snap) and sram == device.profile.sram_free and note == {Path(3, 0, 9): 42}
            and device.tree.values[Path(1, 0, 1)] == 120,
        })
    return rows


def show(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("device", "profile", "LwM2M", "capabilities read from", "SRAM free KiB", "flash free KiB",
                  "runtimes", "managed", title="tinymlaas demo fleet")
    for r in rows:
        source = r["source"] + (f" -> {r['matched']}" if r["matched"] else "")
        table.add_row(r["endpoint"], r["profile"], r["lwm2m"], source, kib(r["sram"]), kib(r["flash"]),
                      escape(str(r["runtimes"])), "ok" if r["ok"] else "FAILED")
    console.print(table)
