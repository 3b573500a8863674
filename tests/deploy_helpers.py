"""Helpers for the deployment tests: a real server + ``Deployer`` on loopback, simulated devices.

``Shared`` is one per test module: a data directory (signing key, registry files, compile cache
``artifacts/``) and the compile cache's rows, carried from test to test so each model
candidate is compiled once per module even though every test has its own database.
``Env`` is one test's world: a fresh database, a server, a ``Deployer`` on the shared data
directory, the bundled MNIST model registered, and the simulated devices it started.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from sqlalchemy import func, insert, select

import tinymlaas.bundled
from device_profiles import Profile, get_profile
from simulator.device import SimulatedDevice
from simulator.faults import Faults
from tinymlaas.deploy.delivery import Policy
from tinymlaas.deploy.service import Deployer
from lwm2m.path import Path
from tinymlaas.registry import ModelEntry
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.tables import ARTIFACTS, DEPLOYMENTS

INFER = 33101


@dataclass
class Shared:
    data_dir: FsPath
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> ARTIFACTS row


class Env:
    def __init__(self, db: FsPath | str, shared: Shared, runner: Any, policy: Policy | None = None) -> None:
        """``db``: a SQLAlchemy URL, or the path of a SQLite file."""
        self.db, self.shared, self.runner, self.policy = db, shared, runner, policy
        self.server: LwM2MServer | None = None
        self.dep: Deployer | None = None
        self.devices: list[SimulatedDevice] = []
        self.entry: ModelEntry | None = None

    async def start(self, port: int = 0) -> "Env":
        srv = LwM2MServer(self.db if isinstance(self.db, str) else f"sqlite:///{self.db}", read_capabilities=True)
        await srv.start("127.0.0.1", port)
        self.server = srv
        rows = [r for r in self.shared.artifacts.values()]

        def seed(c: Any) -> None:
            have = {r.key for r in c.execute(select(ARTIFACTS.c.key))}
            for r in rows:
                if r["key"] not in have:
                    c.execute(insert(ARTIFACTS).values(**r))
        await srv.store.write(seed)
        self.dep = Deployer(srv, self.shared.data_dir, **({'policy': self.policy} if self.policy else {}))
        self.entry = self.model("1")
        return self

    def model(self, version: str) -> ModelEntry:
        assert self.dep is not None
        found = self.dep.registry.find("mnist", version)
        return found or self.dep.registry.add(tinymlaas.bundled.MNIST, name="mnist", version=version)

    async def device(self, ep: str, profile: str | Profile = "nrf52840", objects: tuple[int, ...] = (9,),
                     faults: Faults | None = None, register: bool = True,
                     before_start: Callable[[SimulatedDevice], None] | None = None) -> SimulatedDevice:
        assert self.server is not None
        prof = get_profile(profile) if isinstance(profile, str) else profile
        d = SimulatedDevice(prof, ep, self.server.address, self.runner, update_objects=objects, faults=faults)
        self.devices.append(d)
        if before_start is not None:  # a personality the constructor does not take
            before_start(d)
        await d.start()
        if register:
            await self.registered(ep)
        return d

    async def registered(self, ep: str, timeout: float = 10.0) -> None:
        assert self.server is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while ep not in self.server.registrations.by_endpoint:
            if loop.time() > end:
                raise AssertionError(f"{ep} did not register")
            await asyncio.sleep(0.05)

    async def save_artifacts(self) -> None:
        if self.server is None:
            return
        rows = await self.server.store.read(lambda c: [dict(r._mapping) for r in c.execute(select(ARTIFACTS))])
        for r in rows:
            self.shared.artifacts.setdefault(r["key"], r)

    async def stop_devices(self) -> None:
        for d in self.devices:
            try:
                await asyncio.wait_for(d.stop(deregister=False), 5)
            except Exception:
                pass
        self.devices.clear()

    async def stop_server(self) -> None:
        """Stop Deployer and server (the database stays, for a restart)."""
        if self.dep is not None:
            inflight = list(self.dep.tasks.values())
            self.dep.close()
            await asyncio.gather(*inflight, return_exceptions=True)
            self.dep = None
        if self.server is not None:
            await self.save_artifacts()
            await self.server.stop()
            self.server = None

    async def stop(self) -> None:
        await self.stop_devices()
        await self.stop_server()

    async def rows(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        assert self.dep is not None
        return sorted(await self.dep.list(endpoint=endpoint, limit=10_000), key=lambda r: r["id"])

    async def count(self) -> int:
        assert self.server is not None
        return int(await self.server.store.read(
            lambda c: c.execute(select(func.count()).select_from(DEPLOYMENTS)).scalar_one()))


def sha(device: SimulatedDevice) -> str | None:
    """The sha256 (hex) of the artifact the device runs, or None."""
    if device.active is None:
        return None
    return hashlib.sha256(device.active[0].data).hexdigest()


async def check_running(env: Env, device: SimulatedDevice, row: dict[str, Any]) -> None:
    """The device side of a succeeded deployment: it runs exactly the artifact of ``row``."""
    assert env.server is not None and env.dep is not None
    assert row["state"] == "succeeded", row
    assert device.active is not None
    artifact = device.active[0]
    assert sha(device) == row["artifact_sha256"]
    assert artifact.sha256.hex() == row["artifact_sha256"]
    got = (await env.server.read(device.endpoint, Path(INFER, 0, 2), timeout=10))[Path(INFER, 0, 2)]
    assert isinstance(got, bytes) and got.hex() == row["artifact_sha256"]
    count = (await env.server.read(device.endpoint, Path(INFER, 0, 3), timeout=10))[Path(INFER, 0, 3)]
    assert isinstance(count, int) and count >= 1
    assert device.signing_key == env.dep.key.public  # the package was verified with the server's key
    assert row["inference"]["count"] >= 1 and row["inference"]["sha256"] == row["artifact_sha256"]


async def bounded(coro: Any, seconds: float) -> Any:
    return await asyncio.wait_for(coro, seconds)

