"""A simulated MCU: a real-sized board (a device profile) behind a genuine LwM2M client.

It has objects 0, 1, 3, 4, the update objects (9 with two instances, and/or 5), the ML
Capability object 33100 (figures from the profile; flash free shrinks as packages land) and
the ML Inference object 33101 — or, as a real client would (``simulator.personality``), not
our ML objects, another Device-object identity, and a new Register on each wake. Installed
packages occupy its flash until uninstalled; a model
runs only if its arena (plus the runtime's own RAM) fits the SRAM free for ML. Faults come
from ``faults``; a reboot loses RAM (downloads in progress, inference counters) and keeps
flash (delivered and installed packages, which model is active), then registers again.

Security (``simulator.security``): with a PSK the device talks DTLS to its server; with a
bootstrap server it bootstraps first (``simulator.bootstrap``; again when the server executes
Bootstrap-Request Trigger ``/1/x/9``) and then uses the account it was given. Its trust anchor
(``/33100/0/12``) changes only through bootstrap or its own server (``anchor_write_allowed``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit, urlunsplit
from typing import Any, Coroutine

from device_profiles import Profile
from lwm2m.bootstrap import SecurityMode, server_account
from lwm2m.errors import Unauthorized
from lwm2m.model import default_registry
from lwm2m.path import Path
from simulator.client import ClientConfig, LwM2MClient
from simulator.faults import Faults, FaultyLink
from simulator.inference import Inference
from simulator.objects import ObjectTree
from simulator.runtimes import ModelRunner
from simulator.security import DeviceSecurity, anchor_write_allowed, security_instance, touches_anchor
from simulator.software import Artifact, FirmwareSlot, Packages, SoftwareSlot

log = logging.getLogger(__name__)
ML_CAPABILITY = 33100


class SimulatedDevice:
    def __init__(self, profile: Profile, endpoint: str, server: tuple[str, int], runner: ModelRunner, *,
                 version: str = "1.1", lifetime: int = 300, queue_mode: bool = False, awake_s: float = 10.0,
                 update_objects: tuple[int, ...] = (9,), faults: Faults | None = None,
                 signing_key: bytes | None = None, with_capability_object: bool = True,
                 with_inference_object: bool = True, identity: tuple[str, str] | None = None,
                 register_on_wake: bool = False, security: DeviceSecurity | None = None) -> None:
        self.profile, self.endpoint, self.server, self.runner = profile, endpoint, server, runner
        self.version, self.lifetime, self.queue_mode, self.awake_s = version, lifetime, queue_mode, awake_s
        self.faults = faults or Faults()
        self.identity, self.register_on_wake = identity, register_on_wake
        self.signing_key = signing_key
        self.security = security or DeviceSecurity()
        self.bootstraps = 0
        self._bootstrap_wanted = False
        self.sample_inputs: list[bytes] | None = None
        self.tree = ObjectTree(default_registry())
        self.packages = Packages(self)
        self.link: FaultyLink | None = None
        self.client: LwM2MClient | None = None
        self.active: tuple[Artifact, Any] | None = None
        self.reboots = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._build(update_objects, with_capability_object)
        self.inference = Inference(self, published=with_inference_object)
        self.software = [SoftwareSlot(self, i) for i in range(2)] if 9 in update_objects else []
        self.firmware = FirmwareSlot(self) if 5 in update_objects else None

    # -- objects -----------------------------------------------------------------------

    def _build(self, update_objects: tuple[int, ...], with_capability: bool) -> None:
        p, t = self.profile, self.tree
        t.add_instance(0, 0, security_instance(self.security, self.server))
        if self.security.bootstrap is None:  # else the bootstrap server writes the Server instance
            t.add_instance(1, 0, {0: 1, 1: self.lifetime, 6: False, 7: "UQ" if self.queue_mode else "U"})
        t.on_execute(Path(1, 0, 9), self._bootstrap_requested)
        maker, model = self.identity or (p.match_manufacturer[0] if p.match_manufacturer else p.vendor,
                                         p.match_model[0] if p.match_model else p.title)
        t.add_instance(3, 0, {
            0: maker, 1: model, 2: f"SIM-{self.endpoint}", 3: "tinymlaas-sim 1.0",
            9: 100, 10: p.sram_free // 1024, 11: [0], 13: int(time.time()), 16: "U", 21: p.sram_total // 1024})
        t.on_execute(Path(3, 0, 4), self._reboot_requested)
        t.add_instance(4, 0, {0: 41, 1: [41], 2: -60, 4: ["127.0.0.1"]})
        if with_capability:
            values: dict[int, Any] = {
                0: p.sram_total, 1: p.sram_free, 2: p.flash_total, 3: p.flash_free, 4: p.core, 5: p.clock_mhz,
                6: p.fpu, 7: list(p.extensions) or ["none"], 8: p.accelerator,
                9: [r.spec().text() for r in p.runtimes] or ["none"], 10: list(p.operators) or ["none"],
                11: p.max_package, 12: self.signing_key or b"", 13: p.name}
            t.add_instance(ML_CAPABILITY, 0, values)
            t.on_write(Path(ML_CAPABILITY, 0, 12), self._set_key)

    def _reboot_requested(self, _args: str) -> None:
        """Execute on Reboot: answer first, reboot right after (the task is not awaited)."""
        self.spawn(self.reboot(delay=0.2), "reboot")

    def _bootstrap_requested(self, _args: str) -> None:
        """Execute on Bootstrap-Request Trigger: answer, then bootstrap again and re-register."""
        if self.security.bootstrap is None:
            return
        self._bootstrap_wanted = True
        self.spawn(self.reconnect(delay=0.2), "bootstrap again")

    def _guard(self, request: Any, path: Path, content: Any) -> None:
        if touches_anchor(path, content) and self.client is not None and not anchor_write_allowed(
                request, self.client.config.server, self.client.coaps):
            raise Unauthorized(f"{Path(ML_CAPABILITY, 0, 12)} (package-signing trust anchor) is written only at "
                               "bootstrap or by this device's LwM2M server over its secured session")

    def trust_anchor_from_bootstrap(self, value: bytes) -> None:
        self._set_key(value)
        if not value:
            self.tree.set(Path(ML_CAPABILITY, 0, 12), b"")

    def _set_key(self, value: Any) -> None:
        self.signing_key = bytes(value) if value else None
        if self.signing_key is not None:
            self.tree.set(Path(ML_CAPABILITY, 0, 12), self.signing_key)

    def capabilities_changed(self) -> None:
        if (ML_CAPABILITY, 0) in self.tree.instances:
            self.tree.set(Path(ML_CAPABILITY, 0, 3), self.packages.flash_free)

    def route(self, uri: str) -> str:
        """Traffic to the LwM2M server goes through the device's (faulty) link, downloads too."""
        if self.link is None:
            return uri
        parts = urlsplit(uri)
        if (parts.hostname, parts.port or 5683) != (self.server[0], self.server[1]):
            return uri
        host, port = self.link.address
        return urlunsplit(parts._replace(netloc=f"{host}:{port}"))

    # -- life cycle ----------------------------------------------------------------------

    @property
    def context(self) -> Any:
        return self.client.context if self.client else None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> "asyncio.Task[Any]":
        task = asyncio.create_task(coro, name=f"{self.endpoint}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def start(self) -> None:
        if self.security.bootstrap is not None and (self._bootstrap_wanted or server_account(self.tree.values) is None):
            from simulator.bootstrap import bootstrap

            await bootstrap(self)
            self._bootstrap_wanted = False
        account = server_account(self.tree.values)
        target = account.address if account is not None else self.server
        psk = (account.identity, account.secret) if account is not None and account.mode == SecurityMode.PSK else None
        lifetime = account.lifetime if account is not None and self.security.bootstrap is not None else self.lifetime
        server = target
        if self.faults.needs_link or self.queue_mode:
            self.link = FaultyLink(self.endpoint, target, self.faults,
                                   on_reboot=lambda: self._reboot_requested(""))
            await self.link.start()
            server = self.link.address
        config = ClientConfig(self.endpoint, server, lifetime=lifetime, version=self.version,
                              queue_mode=self.queue_mode, update_margin=0.8 * (1 + self.faults.drift),
                              awake_s=self.awake_s, register_on_wake=self.register_on_wake, psk=psk)
        self.client = self._client(config)
        await self.client.start()

    async def reconnect(self, delay: float = 0.0) -> None:
        """De-register, (bootstrap again if asked,) and register again with a new session."""
        await asyncio.sleep(delay)
        if self.client is not None:
            await self.client.stop(deregister=True)
            self.tree.listeners.clear()
        if self.link is not None:
            self.link.close()
            self.link = None
        await self.start()

    def _client(self, config: ClientConfig) -> LwM2MClient:
        client = LwM2MClient(config, self.tree)
        client.guard = self._guard
        if self.link is not None:
            client.sleep = self._radio
        return client

    def _radio(self, asleep: bool) -> None:
        if self.link is not None:
            self.link.asleep = asleep

    async def stop(self, deregister: bool = True) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.client is not None:
            await self.client.stop(deregister=deregister)
            self.tree.listeners.clear()
        if self.link is not None:
            self.link.close()

    async def reboot(self, delay: float = 0.0) -> None:
        """Power cycle: RAM state is lost, flash stays; then register again. ``delay`` lets the
        answer to a Reboot Execute go out first, as firmware does."""
        await asyncio.sleep(delay)
        self.reboots += 1
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for slot in self.software:
            slot.reboot()
        if self.firmware is not None:
            self.firmware.reboot()
        if self.client is not None:
            await self.client.stop(deregister=False)
            self.tree.listeners.clear()
        self.inference.reset()
        config = self.client.config if self.client else None
        assert config is not None
        self.client = self._client(config)
        await self.client.start()
        if self.active is not None:  # the active model is in flash: it starts again
            await self.inference.start(self.active[0])

    # -- models ------------------------------------------------------------------------------

    async def activate(self, artifact: Artifact, owner: Any) -> None:
        if artifact.plan is None:
            await self.packages.install(artifact)
        for slot in self.software:
            if slot is not owner:
                slot.preempted()  # through the object 9 table: an active instance becomes inactive
        self.active = (artifact, owner)
        await self.inference.start(artifact)

    def deactivate(self, owner: Any) -> None:
        if self.active is not None and self.active[1] is owner:
            self.active = None
            self.inference.stop()


def _log_failure(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed: %s", task.get_name(), task.exception(), exc_info=task.exception())
