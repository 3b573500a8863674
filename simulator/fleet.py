"""Fleets of simulated devices in one process: one event loop, one model runner.

Each device has its own UDP socket (the server tells devices apart by address, so sockets
cannot be shared between LwM2M clients), all on the same event loop. ``start_fleet`` brings
devices up with bounded concurrency (a registration storm the machine can take) and reports
progress; several processes can run side by side against one server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from device_profiles import Profile
from simulator.device import SimulatedDevice
from simulator.faults import Faults
from simulator.personality import personality
from simulator.runtimes import ModelRunner
from simulator.security import DeviceSecurity


@dataclass(frozen=True)
class FleetSpec:
    profile: Profile
    count: int = 1
    version: str = "1.1"
    update_objects: tuple[int, ...] = (9,)
    queue_mode: bool = False
    lifetime: int = 300
    faults: Faults = Faults()
    prefix: str = ""
    with_capability_object: bool = True
    personality: str = "tinymlaas"  # simulator.personality


def endpoints(spec: FleetSpec) -> list[str]:
    """The endpoint names of a spec's devices (what a production batch's credentials are for)."""
    prefix = spec.prefix or f"sim-{spec.profile.name}"
    return [f"{prefix}-{i:04d}" for i in range(spec.count)]


def build_fleet(specs: list[FleetSpec], server: tuple[str, int], runner: ModelRunner,
                signing_key: bytes | None = None,
                security: Callable[[str], DeviceSecurity] | None = None) -> list[SimulatedDevice]:
    """The devices; ``security`` gives each endpoint its credentials / bootstrap server."""
    devices = []
    for spec in specs:
        kwargs: dict[str, Any] = {"queue_mode": spec.queue_mode, "update_objects": spec.update_objects,
                                  "with_capability_object": spec.with_capability_object}
        kwargs.update(personality(spec.personality).device_kwargs() if spec.personality != "tinymlaas" else {})
        for endpoint in endpoints(spec):
            devices.append(SimulatedDevice(
                spec.profile, endpoint, server, runner, version=spec.version, lifetime=spec.lifetime,
                faults=spec.faults, signing_key=signing_key,
                security=security(endpoint) if security is not None else None, **kwargs))
    return devices


async def start_fleet(devices: list[SimulatedDevice], concurrency: int = 64,
                      progress: Callable[[int], None] | None = None) -> list[BaseException]:
    """Start every device (register), ``concurrency`` at a time; returns the failures."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[BaseException] = []

    async def one(device: SimulatedDevice) -> None:
        async with gate:
            try:
                await device.start()
            except Exception as exc:  # a refused or lost registration: report, keep going
                failures.append(exc)
            if progress is not None:
                progress(1)

    await asyncio.gather(*(one(d) for d in devices))
    return failures


async def stop_fleet(devices: list[SimulatedDevice], deregister: bool = True, concurrency: int = 64) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(device: SimulatedDevice) -> None:
        async with gate:
            try:
                await asyncio.wait_for(device.stop(deregister=deregister), 10)
            except (Exception, asyncio.TimeoutError):
                pass

    await asyncio.gather(*(one(d) for d in devices))
