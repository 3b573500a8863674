"""``tinymlaas demo``: a server and a small simulated fleet on loopback, end to end.

Starts the server (SQLite in a temporary directory) and the admin API, brings up three
simulated devices (LwM2M 1.0, spoken to in TLV; 1.1 and 1.2, in SenML JSON), lets the
server read their capabilities, then reads, writes, executes and observes through the same
calls the CLI uses, prints what happened, and shuts everything down. Bounded in time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

from rich.console import Console
from rich.table import Table

from tinymlaas import runtime
from tinymlaas.lwm2m.model import default_registry
from tinymlaas.lwm2m.path import Path
from tinymlaas.server.device_client import preferred_format
from simulator.client import ClientConfig, LwM2MClient
from simulator.objects import ObjectTree

# name, LwM2M version, vendor, model, SRAM / flash free for ML (bytes), core, clock
FLEET = [
    ("demo-nrf52840", "1.0", "Nordic Semiconductor", "nRF52840", 180_000, 700_000, "cortex-m4f", 64),
    ("demo-stm32l4r5", "1.1", "STMicroelectronics", "STM32L4R5ZI", 560_000, 1_600_000, "cortex-m4f", 120),
    ("demo-esp32s3", "1.2", "Espressif", "ESP32-S3", 300_000, 6_000_000, "xtensa-lx7", 240),
]


def device_tree(name: str, vendor: str, model: str, sram: int, flash: int, core: str, mhz: int,
                with_ml: bool) -> ObjectTree:
    tree = ObjectTree(default_registry())
    tree.add_instance(1, 0, {0: 1, 1: 300, 6: False, 7: "U"})
    tree.add_instance(3, 0, {0: vendor, 1: model, 2: f"SN-{name}", 3: "1.0.0", 9: 87, 10: sram // 1024,
                             11: [0], 13: int(time.time()), 16: "U", 21: (sram * 2) // 1024})
    tree.on_execute(Path(3, 0, 4), lambda _args: None)  # Reboot: accepted, nothing to do here
    if with_ml:
        tree.add_instance(33100, 0, {0: sram * 2, 1: sram, 2: flash * 2, 3: flash, 4: core, 5: mhz,
                                     6: "sp", 7: ["dsp"], 8: "none", 9: ["tflm 1.2", "wasm3 0.5"],
                                     11: flash})
    return tree


async def run_demo(console: Console, timeout_s: float = 30.0) -> int:
    with tempfile.TemporaryDirectory(prefix="tinymlaas-demo-") as tmp:
        home = FsPath(tmp)
        running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{home / 'demo.db'}", home)
        server = running.server
        console.print(f"server: coap://127.0.0.1:{server.address[1]}, admin API {running.api_url}, database in {home}")
        clients: list[LwM2MClient] = []
        try:
            for name, version, vendor, model, sram, flash, core, mhz in FLEET:
                tree = device_tree(name, vendor, model, sram, flash, core, mhz, with_ml=version != "1.0")
                client = LwM2MClient(ClientConfig(name, server.address, lifetime=60, version=version), tree)
                await client.start()
                clients.append(client)
            results = await asyncio.wait_for(exercise(server, clients), timeout_s)
        finally:
            for client in clients:
                await client.stop()
            await running.stop()
    show(console, results)
    return 0 if all(r["ok"] for r in results) else 1


async def exercise(server: Any, clients: list[LwM2MClient]) -> list[dict[str, Any]]:
    results = []
    for client in clients:
        ep = client.config.endpoint
        snap = await server.capabilities.refresh(ep)
        dev = await server.read(ep, Path(3, 0))
        await server.write(ep, Path(1, 0, 1), {Path(1, 0, 1): 120})
        await server.execute(ep, Path(3, 0, 4))
        obs = await server.observations.observe(ep, Path(3, 0, 9))
        queue = server.observations.subscribe(obs)
        client.tree.set(Path(3, 0, 9), 42)
        note = await asyncio.wait_for(queue.get(), 5)
        data = snap["data"] if snap else {}
        results.append({
            "endpoint": ep, "lwm2m": client.config.version,
            "format": preferred_format(server.registrations.by_endpoint[ep]).name,
            "device": f"{dev.get(Path(3, 0, 0))} {dev.get(Path(3, 0, 1))}",
            "source": snap["source"] if snap else "-",
            "sram": data.get("/33100/0/1") or (data.get("memory_free_kb") or 0) * 1024,
            "flash": data.get("/33100/0/3", "-"),
            "lifetime": client.tree.values[Path(1, 0, 1)],
            "battery": note.get(Path(3, 0, 9)) if note else None,
            "ok": client.tree.values[Path(1, 0, 1)] == 120 and note == {Path(3, 0, 9): 42},
        })
    return results


def show(console: Console, results: list[dict[str, Any]]) -> None:
    table = Table("endpoint", "LwM2M", "device (object 3)", "capabilities", "SRAM/flash free KB",
                  "write/exec/observe", title="tinymlaas demo fleet")
    for r in results:
        flash = f"{r['flash'] // 1024}" if isinstance(r["flash"], int) else "?"
        table.add_row(r["endpoint"], f"{r['lwm2m']} {r['format']}", r["device"], r["source"],
                      f"{r['sram'] // 1024}/{flash}",
                      f"lt={r['lifetime']} battery={r['battery']} " + ("ok" if r["ok"] else "FAILED"))
    console.print(table)
