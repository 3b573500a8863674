"""``tinymlaas demo``: a server, a mixed simulated fleet and a real model deployment, end to end.

Starts the server (SQLite in a temporary directory) and its admin API, brings up simulated
boards from the device profiles — nRF52840, STM32L4R5, ESP32-S3 and SAMD21 speaking LwM2M 1.1
with Software Management (object 9), an RP2040 with only Firmware Update (object 5), and an
nRF52840 speaking 1.0 without the ML Capability object (matched to its profile through the
Device object) — registers the bundled digits model (ONNX zoo mnist-8, calibrated on its three
test digits), and deploys it to every device: per device the server reads the capabilities,
builds each candidate once (compile cache), picks backend and precision, signs the package,
delivers it (pull, Block2), installs, activates and reads the ML Inference object. Then each
board "sees" a test digit (the simulated sensor input), runs an inference on the server's
Execute, and the demo decodes the output it reads back. The SAMD21 gets "does not fit" with
every candidate's shortfall. Bounded in time; exit code 0 when every board that fits runs the
model and the SAMD21 was refused.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compilers.backends.base import TensorSpec
from device_profiles import load_profiles
from tinymlaas import bundled, runtime
from tinymlaas.deploy.service import DeployOptions
from lwm2m.path import Path
from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
from simulator.runtimes import ModelRunner

# (profile, LwM2M version, update objects, ML Capability object, endpoint prefix)
FLEET = (("nrf52840", "1.1", (9,), True, "demo-nrf52840"), ("stm32l4r5", "1.1", (9,), True, "demo-stm32l4r5"),
         ("esp32s3", "1.1", (9,), True, "demo-esp32s3"), ("rp2040", "1.1", (5,), True, "demo-rp2040"),
         ("samd21", "1.1", (9,), True, "demo-samd21"), ("nrf52840", "1.0", (9,), False, "demo-legacy"))
CAPS = {"ml-capability-object": "caps 33100", "device-object+profile": "caps /3+profile"}
RUN = Path(33101, 0, 10)
OUTPUT = Path(33101, 0, 4)
LATENCY = Path(33101, 0, 5)


def kib(n: Any) -> str:
    return f"{n / 1024:,.1f}" if isinstance(n, (int, float)) else "-"


async def run_demo(console: Console, timeout_s: float = 240.0) -> int:
    profiles = load_profiles()
    with tempfile.TemporaryDirectory(prefix="tinymlaas-demo-") as tmp:
        home = FsPath(tmp)
        running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{home / 'demo.db'}", home)
        server, deployer = running.server, running.deployer
        console.print(f"server: coap://127.0.0.1:{server.address[1]}, admin API {running.api_url}, data in {home}")
        x, _expected, labels = bundled.digits()
        calibration = home / "mnist-calibration.npz"
        np.savez(calibration, Input3=x)
        entry = await asyncio.to_thread(deployer.registry.add, bundled.MNIST, "mnist-8", None, calibration)
        console.print(f"model: {entry.name}:{entry.version} (bundled ONNX zoo mnist-8, MIT, {entry.size:,} B, "
                      f"sha256 {entry.sha256[:16]}…)", highlight=False)
        specs = [FleetSpec(profiles[p], 1, version=v, update_objects=objs, with_capability_object=cap, prefix=prefix)
                 for p, v, objs, cap, prefix in FLEET]
        runner = ModelRunner()
        devices = build_fleet(specs, server.address, runner)
        try:
            failures = await start_fleet(devices)
            if failures:
                raise RuntimeError(f"{len(failures)} simulated devices failed to register: {failures[0]}")
            await _registered(server, [d.endpoint for d in devices])
            with console.status("deploying mnist-8 to the fleet (capabilities, compile, sign, deliver, verify)"):
                rows = await asyncio.wait_for(deploy_all(deployer, entry, devices, x, labels), timeout_s)
        finally:
            await stop_fleet(devices)
            runner.close()
            await running.stop()
    show(console, rows)
    return 0 if all(r["ok"] for r in rows) else 1


async def _registered(server: Any, endpoints: list[str], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while any(ep not in server.registrations.by_endpoint for ep in endpoints) and time.monotonic() < end:
        await asyncio.sleep(0.05)


async def deploy_all(deployer: Any, entry: Any, devices: list[Any], x: np.ndarray,
                     labels: np.ndarray) -> list[dict[str, Any]]:
    async def one(i: int, device: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        row = await deployer.deploy(device.endpoint, entry, DeployOptions())
        result = {"device": device, "row": row, "seconds": time.monotonic() - t0, "digit": None}
        if row["state"] == "succeeded":
            result.update(await see_digit(deployer, device, row, x, int(i % len(x)), int(labels[i % len(x)])))
        fits = device.profile.name != "samd21"
        result["ok"] = (row["state"] == "succeeded" and result.get("correct") is not None) if fits else \
            (row["state"] == "failed" and "does not fit" in (row["error"] or ""))
        return result
    return list(await asyncio.gather(*(one(i, d) for i, d in enumerate(devices))))


async def see_digit(deployer: Any, device: Any, row: dict[str, Any], x: np.ndarray, index: int,
                    label: int) -> dict[str, Any]:
    """Put a test digit on the board's input (its "sensor"), Execute Run Inference over LwM2M,
    read the output back and decode it with the tensor specs of the package's manifest."""
    built = await deployer.cache.lookup(row["decision"]["chosen"]["artifact_key"])
    assert built is not None, "the deployed build is in the compile cache"
    specs = {s.role: s for s in built.artifact.tensors}

    def quant(s: TensorSpec) -> tuple[float, int] | None:
        """A quantised tensor's (scale, zero point); None for a float one."""
        if s.scale is None:
            return None
        assert s.zero_point is not None, f"tensor {s.name} has a scale but no zero point"
        return s.scale, s.zero_point

    device.sample_inputs = [bundled.sample_input(index, specs["input"].dtype, quant(specs["input"]))]
    server = deployer.server
    await server.execute(device.endpoint, RUN, "0='1'")
    content = await server.read(device.endpoint, Path(33101, 0))
    scores = bundled.decode_output(content[OUTPUT], specs["output"].dtype, quant(specs["output"]))
    guess = int(np.argmax(scores))
    return {"digit": label, "guess": guess, "correct": guess == label, "latency_us": content.get(LATENCY)}


def show(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("device", "LwM2M", "decision", "flash KiB", "SRAM KiB", "delivery", "inference",
                  title="tinymlaas demo: mnist-8 on a mixed fleet (KiB: need / usable after the margin)")
    for r in rows:
        d, row = r["device"], r["row"]
        chosen = row["decision"].get("chosen") or {}
        source = (row["decision"].get("target") or {}).get("source", "")
        via = f"{d.version} /{9 if d.software else 5} " + CAPS.get(source, "?")
        if row["state"] == "succeeded":
            decision = f"{chosen['backend']} {chosen['precision']}"
            flash = f"{kib(chosen['flash_bytes'])} / {kib(chosen['flash_usable_bytes'])}"
            sram = f"{kib(chosen['ram_bytes'])} / {kib(chosen['ram_usable_bytes'])}"
            delivery = f"ok {row['method']} {row['object_path']} {r['seconds']:.1f} s"
            mark = "✓" if r.get("correct") else "✗"
            inference = f"{r['digit']} -> {r['guess']} {mark}"
        else:
            decision, flash, sram, inference = "-", "-", "-", "-"
            error = row["error"] or row["state"]
            delivery = "[red]" + ("does not fit (below)" if "does not fit" in error else escape(error[:60])) + "[/red]"
        table.add_row(d.endpoint.removeprefix("demo-").removesuffix("-0000"), via, decision, flash, sram, delivery,
                      inference)
    console.print(table)
    console.print("inference: a test digit on the board's input -> the class the model read back over LwM2M "
                  "(33101/0/4) predicts")
    for r in rows:
        cands = r["row"]["decision"].get("candidates", [])
        if cands:
            console.print(f"{r['device'].endpoint}: " + "; ".join(
                f"{c['backend']} {c['precision']} " + ("fits" if c["fits"] else escape(", ".join(c["problems"])))
                for c in cands), highlight=False)
