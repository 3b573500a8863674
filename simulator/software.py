"""Model delivery on a simulated device: object 9 (Software Management) and object 5
(Firmware Update) state machines over one package pipeline.

The pipeline (``Packages``) is what a device does with a package, whichever object brought
it: receive it (push: the Package resource was written, Block1 already assembled; pull: the
Package URI was written, see ``download``), check it fits the flash that is free, verify it
(``lwm2m.package``: signature when the device has the server's key, hash), recognise
the artifact by its content, and at Install check that its arena fits the free SRAM. Each
failure is an ``Outcome``; the two objects report outcomes with their own numbers (the tables
``OBJ9_RESULT`` and ``OBJ5_RESULT``, from the OMA object definitions).

Object 9 per instance (TS Core / OMA object 9 1.1): Update State INITIAL -> DOWNLOAD STARTED
-> DOWNLOADED -> DELIVERED -> INSTALLED; a failed download returns to INITIAL with the
result; a failed Install stays DELIVERED (result 51 when the arena does not fit the free
SRAM, 58 otherwise); Uninstall returns to INITIAL, result 0, and frees the flash; Activate /
Deactivate switch Activation State on an installed package. Object 5: State Idle ->
Downloading -> Downloaded -> Updating -> Idle with Update Result 1 on success; writing an
empty Package or Package URI cancels. A package in DELIVERED/INSTALLED/Downloaded is in flash
and survives a reboot; a download in progress does not (it ends with "connection lost"), nor
does an Install or Update in progress (object 9 stays DELIVERED, object 5 goes back to
Downloaded: the server executes it again).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compilers.backends import registry
from lwm2m.errors import BadRequest
from lwm2m.package import PackageError, is_package, open_package
from lwm2m.path import Path, Value
from simulator.download import DownloadError, DownloadStats, check_uri, pull
from simulator.runtimes import ModelError

if TYPE_CHECKING:
    from simulator.device import SimulatedDevice

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    DOWNLOADING = "downloading"
    DELIVERED = "delivered"
    INSTALLED = "installed"
    NOT_ENOUGH_STORAGE = "not-enough-storage"
    OUT_OF_MEMORY = "out-of-memory"
    CONNECTION_LOST = "connection-lost"
    INTEGRITY = "integrity"
    UNSUPPORTED = "unsupported"
    INVALID_URI = "invalid-uri"
    INSTALL_FAILURE = "install-failure"
    CANCELLED = "cancelled"


OBJ9_RESULT = {Outcome.DOWNLOADING: 1, Outcome.INSTALLED: 2, Outcome.DELIVERED: 3,
               Outcome.NOT_ENOUGH_STORAGE: 50, Outcome.OUT_OF_MEMORY: 51, Outcome.CONNECTION_LOST: 52,
               Outcome.INTEGRITY: 53, Outcome.UNSUPPORTED: 54, Outcome.INVALID_URI: 56,
               Outcome.INSTALL_FAILURE: 58, Outcome.CANCELLED: 0}
OBJ5_RESULT = {Outcome.DOWNLOADING: 0, Outcome.DELIVERED: 0, Outcome.INSTALLED: 1,
               Outcome.NOT_ENOUGH_STORAGE: 2, Outcome.OUT_OF_MEMORY: 3, Outcome.CONNECTION_LOST: 4,
               Outcome.INTEGRITY: 5, Outcome.UNSUPPORTED: 6, Outcome.INVALID_URI: 7,
               Outcome.INSTALL_FAILURE: 8, Outcome.CANCELLED: 10}
# Failure reasons of the layers below -> outcome.
REASONS = {"not-enough-storage": Outcome.NOT_ENOUGH_STORAGE, "connection-lost": Outcome.CONNECTION_LOST,
           "invalid-uri": Outcome.INVALID_URI, "integrity": Outcome.INTEGRITY, "unsupported": Outcome.UNSUPPORTED,
           "unsupported-package": Outcome.UNSUPPORTED, "out-of-memory": Outcome.OUT_OF_MEMORY,
           "install-failure": Outcome.INSTALL_FAILURE, "runtime-error": Outcome.INSTALL_FAILURE}


class Failure(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class Artifact:
    """A verified package held in flash."""

    name: str
    version: str
    kind: str
    data: bytes
    sha256: bytes
    runtime: str
    stored_bytes: int = 0  # flash the package takes
    plan: Any = None  # the runner's plan once installed


class Packages:
    """Receive, verify, install: the steps both update objects share, on one device."""

    def __init__(self, device: "SimulatedDevice") -> None:
        self.device = device
        self.flash_used: dict[str, int] = {}
        self.download_stats: dict[str, DownloadStats] = {}
        self.attempts, self.attempt_timeout = 6, 2.0  # per block, for pull downloads
        self.block_exponent = 5  # pull block size 2**(4+n): 5 = 512 B, 6 = 1 KiB (RFC 7959 SZX)

    @property
    def flash_free(self) -> int:
        return self.device.profile.flash_free - sum(self.flash_used.values())

    def release(self, owner: str) -> None:
        self.flash_used.pop(owner, None)
        self.device.capabilities_changed()

    async def receive(self, owner: str, package: bytes | None, uri: str | None) -> Artifact:
        limit = self.flash_free + self.flash_used.get(owner, 0)
        limit = min(limit, self.device.profile.max_package)
        if uri is not None:
            stats = self.download_stats.setdefault(owner, DownloadStats())
            try:
                package = await pull(self.device.context, self.device.route(uri), limit=limit, stats=stats,
                                     size_exponent=self.block_exponent,
                                     on_block=self.device.faults.mangle_block, attempts=self.attempts,
                                     attempt_timeout=self.attempt_timeout)
            except DownloadError as exc:
                raise Failure(REASONS[exc.reason], str(exc)) from None
        assert package is not None
        if len(package) > limit:
            raise Failure(Outcome.NOT_ENOUGH_STORAGE, f"package of {len(package)} bytes; {limit} bytes free")
        artifact = self.verify(package)
        self.flash_used[owner] = len(package)
        self.device.capabilities_changed()
        return artifact

    def verify(self, package: bytes) -> Artifact:
        """Envelope (signature when the device has a key, hash), then the artifact's kind.

        A bare artifact (no envelope) is taken only by a device without a signing key; junk
        is "unsupported package type" whether or not the device has a key. The backend that
        made the artifact (the manifest's kind, else the content) names the runtimes that run
        it; the device must have one of them."""
        key = self.device.signing_key
        kind: str | None = None
        if is_package(package):
            try:
                manifest, data = open_package(package, key)
            except PackageError as exc:
                raise Failure(REASONS[exc.reason], str(exc)) from None
            name, version, sha, kind = manifest.name, manifest.version, manifest.sha256, manifest.kind
        else:
            data, name, version, sha = package, "unnamed", "", hashlib.sha256(package).digest()
        backend = registry.for_kind(kind) if kind is not None else registry.recognise(data)
        if backend is None or backend.kind is None or not backend.kind.recognises(data):
            what = f"package kind {kind!r}" if kind is not None else f"content (starts {data[:8].hex()})"
            known = ", ".join(b.kind.name for b in registry.deliverable().values() if b.kind) or "none"
            raise Failure(Outcome.UNSUPPORTED, f"no installed backend makes this artifact: {what}; known kinds: {known}")
        if not is_package(package) and key is not None:
            raise Failure(Outcome.INTEGRITY, "unsigned package refused: this device verifies packages")
        runtime = next((r for r in backend.runtimes if self.device.profile.runtime(r)), None)
        if runtime is None:
            raise Failure(Outcome.UNSUPPORTED, f"a {backend.kind.name} artifact needs {' or '.join(backend.runtimes)}; "
                          f"{self.device.profile.name} has none")
        return Artifact(name, version, backend.kind.name, data, sha, runtime, len(package))

    async def install(self, artifact: Artifact) -> None:
        """Load the artifact in its runtime and judge it with the backend's fit against what this
        device has free (the package's own flash counts as available: it is stored already)."""
        flash = self.flash_free + artifact.stored_bytes
        target = self.device.profile.target(artifact.runtime, flash_free_bytes=flash, name=self.device.endpoint)
        try:
            artifact.plan = await self.device.runner.check(artifact.data, target, artifact.stored_bytes)
        except ModelError as exc:
            raise Failure(REASONS.get(exc.result, Outcome.INSTALL_FAILURE), str(exc)) from None


class State9(enum.IntEnum):
    INITIAL = 0
    DOWNLOAD_STARTED = 1
    DOWNLOADED = 2
    DELIVERED = 3
    INSTALLED = 4


class SoftwareSlot:
    """One instance of object 9."""

    def __init__(self, device: "SimulatedDevice", instance: int) -> None:
        self.device, self.instance = device, instance
        self.owner = f"9/{instance}"
        self.path = Path(9, instance)
        self.state = State9.INITIAL
        self.artifact: Artifact | None = None
        self.task: asyncio.Task[None] | None = None
        tree = device.tree
        tree.add_instance(9, instance, {0: "", 1: "", 7: 0, 8: False, 9: 0, 12: False, 16: ""})
        tree.on_write(self.path.child(2), lambda v: self._start(package=_bytes(v)))
        tree.on_write(self.path.child(3), lambda v: self._start(uri=str(v)))
        for rid, fn in ((4, self.install), (6, self.uninstall), (10, self.activate), (11, self.deactivate)):
            tree.on_execute(self.path.child(rid), fn)

    def _set(self, state: State9 | None = None, outcome: Outcome | None = None, reason: str | None = None) -> None:
        tree = self.device.tree
        if state is not None:
            self.state = state
            tree.set(self.path.child(7), int(state))
        if reason is not None:
            tree.set(self.path.child(16), reason)
        if outcome is not None:
            tree.set(self.path.child(9), OBJ9_RESULT[outcome])

    def _start(self, package: bytes | None = None, uri: str | None = None) -> None:
        if self.state != State9.INITIAL:
            raise BadRequest(f"{self.path} is {self.state.name}: uninstall it or use another instance")
        if uri is not None:
            try:
                check_uri(uri)
            except DownloadError as exc:
                self._set(outcome=Outcome.INVALID_URI, reason=str(exc))
                return
        self._set(State9.DOWNLOAD_STARTED, Outcome.DOWNLOADING, "")
        self.task = self.device.spawn(self._receive(package, uri), f"{self.owner} download")

    async def _receive(self, package: bytes | None, uri: str | None) -> None:
        try:
            artifact = await self.device.packages.receive(self.owner, package, uri)
        except Failure as exc:
            self.device.packages.release(self.owner)
            self._set(State9.INITIAL, exc.outcome, str(exc))
            return
        self.artifact = artifact
        tree = self.device.tree
        tree.set(self.path.child(0), artifact.name)
        tree.set(self.path.child(1), artifact.version)
        self._set(State9.DOWNLOADED)
        self._set(State9.DELIVERED, Outcome.DELIVERED, "")

    def reboot(self) -> None:
        """RAM is gone: an unfinished download ends as lost; what is in flash stays."""
        if self.state == State9.DOWNLOAD_STARTED:
            self.device.packages.release(self.owner)
            self._set(State9.INITIAL, Outcome.CONNECTION_LOST, "device rebooted during the download")

    async def install(self, _args: str) -> None:
        if self.state != State9.DELIVERED or self.artifact is None:
            raise BadRequest(f"Install on {self.path} needs state DELIVERED, not {self.state.name}")
        boot = self.device.reboots
        try:
            await self.device.packages.install(self.artifact)
        except Failure as exc:
            self._set(outcome=exc.outcome, reason=str(exc))  # stays DELIVERED
            return
        if self.device.reboots != boot:  # rebooted mid-install: it did not happen, the package stays DELIVERED
            return
        self._set(State9.INSTALLED, Outcome.INSTALLED, "")

    async def uninstall(self, _args: str) -> None:
        if self.state == State9.DOWNLOAD_STARTED and self.task is not None:
            self.task.cancel()
        if self.device.tree.values.get(self.path.child(12)):
            await self.deactivate("")
        self.artifact = None
        self.device.packages.release(self.owner)
        self._set(State9.INITIAL, Outcome.CANCELLED, "")

    async def activate(self, _args: str) -> None:
        if self.state != State9.INSTALLED or self.artifact is None:
            raise BadRequest(f"Activate on {self.path} needs state INSTALLED, not {self.state.name}")
        await self.device.activate(self.artifact, self)
        self.device.tree.set(self.path.child(12), True)

    async def deactivate(self, _args: str) -> None:
        if self.device.tree.values.get(self.path.child(12)):
            self.device.tree.set(self.path.child(12), False)
            self.device.deactivate(self)


class State5(enum.IntEnum):
    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2
    UPDATING = 3


class FirmwareSlot:
    """Object 5 instance 0: the same pipeline, for devices that only have Firmware Update."""

    def __init__(self, device: "SimulatedDevice") -> None:
        self.device = device
        self.owner, self.path = "5/0", Path(5, 0)
        self.state = State5.IDLE
        self.artifact: Artifact | None = None
        self.task: asyncio.Task[None] | None = None
        tree = device.tree
        tree.add_instance(5, 0, {1: "", 3: 0, 5: 0, 6: "", 7: "", 8: [0], 9: 2})
        tree.on_write(self.path.child(0), lambda v: self._start(package=_bytes(v)))
        tree.on_write(self.path.child(1), lambda v: self._start(uri=str(v)))
        tree.on_execute(self.path.child(2), self.update)

    def _set(self, state: State5 | None = None, outcome: Outcome | None = None) -> None:
        if state is not None:
            self.state = state
            self.device.tree.set(self.path.child(3), int(state))
        if outcome is not None:
            self.device.tree.set(self.path.child(5), OBJ5_RESULT[outcome])

    def _start(self, package: bytes | None = None, uri: str | None = None) -> None:
        if not package and not uri:  # an empty write cancels and resets
            if self.task is not None:
                self.task.cancel()
            self.device.packages.release(self.owner)
            self.artifact = None
            self._set(State5.IDLE, Outcome.CANCELLED)
            return
        if self.state not in (State5.IDLE, State5.DOWNLOADED):
            raise BadRequest(f"{self.path} is {self.state.name}")
        if uri is not None:
            self.device.tree.values[self.path.child(1)] = uri
            try:
                check_uri(uri)
            except DownloadError:
                self._set(State5.IDLE, Outcome.INVALID_URI)
                return
        self._set(State5.DOWNLOADING, Outcome.DOWNLOADING)
        self.task = self.device.spawn(self._receive(package, uri), "5/0 download")

    async def _receive(self, package: bytes | None, uri: str | None) -> None:
        try:
            self.artifact = await self.device.packages.receive(self.owner, package, uri)
        except Failure as exc:
            self.device.packages.release(self.owner)
            self._set(State5.IDLE, exc.outcome)
            return
        self.device.tree.set(self.path.child(6), self.artifact.name)
        self.device.tree.set(self.path.child(7), self.artifact.version)
        self._set(State5.DOWNLOADED, Outcome.DELIVERED)

    def reboot(self) -> None:
        if self.state == State5.DOWNLOADING:
            self.device.packages.release(self.owner)
            self._set(State5.IDLE, Outcome.CONNECTION_LOST)
        elif self.state == State5.UPDATING:  # the update did not finish; the package is still in flash
            self._set(State5.DOWNLOADED)

    async def update(self, _args: str) -> None:
        if self.state != State5.DOWNLOADED or self.artifact is None:
            raise BadRequest(f"Update on {self.path} needs state DOWNLOADED, not {self.state.name}")
        self._set(State5.UPDATING)
        boot = self.device.reboots
        try:
            await self.device.packages.install(self.artifact)
            if self.device.reboots != boot:  # rebooted mid-update: ``reboot`` left it Downloaded
                return
            await self.device.activate(self.artifact, self)
        except Failure as exc:
            if self.device.reboots == boot:
                self._set(State5.DOWNLOADED, exc.outcome)
            return
        if self.device.reboots == boot:
            self._set(State5.IDLE, Outcome.INSTALLED)


def _bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    raise BadRequest(f"Package must be Opaque, got {type(value).__name__}")
