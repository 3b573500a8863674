"""Model delivery on a simulated device: object 9 (Software Management) and object 5
(Firmware Update) driven by the shared state machines of ``lwm2m.updates``, over
one package pipeline.

The pipeline (``Packages``) is what a device does with a package, whichever object brought
it: receive it (push: the Package resource was written, Block1 already assembled; pull: the
Package URI was written, see ``download``), check it fits the flash that is free, verify it
(``lwm2m.package``: signature when the device has the server's key, hash), recognise
the artifact by its content, and at Install check that its arena fits the free SRAM. Each
failure is a ``Failure`` with an ``Outcome`` (the machines' ``Reason``); the objects' tables
turn it into their own Update Result.

The slots (``SoftwareSlot``: one object 9 instance; ``FirmwareSlot``: object 5) hold no state
logic of their own: every external event (a Write, an Execute, a download or install that
ended, a reboot, another instance activated) goes through the object's transition table, and
the slot performs the actions the table returns: it sets the resources, spawns the download,
verifies, installs, activates, releases the flash, or refuses the operation with the table's
CoAP code (as Anjay does: 4.05 for an operation the state does not allow). Flash survives a
reboot (DELIVERED / INSTALLED / Downloaded packages, which model is active); RAM does not (a
download in progress, an install or update in progress): the tables say what a reboot does.

PkgName / PkgVersion (``PkgNames``): our firmware shows the verified package's own name and
version (``MANIFEST``); a real client fills them from its own metadata (``DEVICE``: a name of
the slot's and the count of packages it took, never the manifest's) or leaves them empty
(``EMPTY``). A constructor flag of the slots (``real_client_names`` sets it on a built device).
After a successful object 5 Update the device updates its registration (with its object links),
as a device that booted into new firmware registers again.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from compilers.backends import registry
from lwm2m.errors import BadRequest, LwM2MError, MethodNotAllowed
from lwm2m.package import PackageError, is_package, open_package, sequence_problem
from lwm2m.path import Path, Value
from lwm2m.updates import FIRMWARE, SOFTWARE, Answer, Effect, Event5, Event9, Impossible, Reason, UpdateObject
from lwm2m.updates.firmware import Res5
from lwm2m.updates.software import Res9
from simulator.download import DownloadError, DownloadStats, pull
from simulator.runtimes import ModelError

from simulator.host import Host

log = logging.getLogger(__name__)

Outcome = Reason  # what Packages raises: the reasons the update machines know

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
    seq: int | None = None  # the manifest's anti-rollback sequence number (None: a bare artifact)
    rollback_from: int | None = None


class Packages:
    """Receive, verify, install: the steps both update objects share, on one device."""

    def __init__(self, device: Host) -> None:
        self.device = device
        self.flash_used: dict[str, int] = {}
        self.download_stats: dict[str, DownloadStats] = {}
        self.attempts, self.attempt_timeout = 6, 2.0  # per block, for pull downloads
        self.block_exponent = 5  # pull block size 2**(4+n): 5 = 512 B, 6 = 1 KiB (RFC 7959 SZX)
        self.highest: dict[str, int] = {}  # model slot (package name) -> highest sequence installed; in flash

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
        it; the device must have one of them. Anti-rollback: a package must be newer than
        what was installed in its slot, or a rollback manifest from exactly that (``sequence_problem``)."""
        key = self.device.signing_key
        kind: str | None = None
        seq = rollback_from = None
        if is_package(package):
            try:
                manifest, data = open_package(package, key)
            except PackageError as exc:
                raise Failure(REASONS[exc.reason], str(exc)) from None
            problem = sequence_problem(manifest, self.highest.get(manifest.name))
            if problem is not None:
                raise Failure(Outcome.INTEGRITY, problem)
            name, version, sha, kind = manifest.name, manifest.version, manifest.sha256, manifest.kind
            seq, rollback_from = manifest.seq, manifest.rollback_from
        else:
            data, name, version, sha = package, "unnamed", "", hashlib.sha256(package).digest()
        backend = registry.for_kind(kind) if kind is not None else registry.recognise(data)
        if backend is None or backend.kind is None or not backend.kind.recognises(data):
            what = f"package kind {kind!r}" if kind is not None else f"content (starts {data[:8].hex()})"
            known = ", ".join(b.kind.name for b in registry.deliverable().values() if b.kind) or "none"
            raise Failure(Outcome.UNSUPPORTED,
                          f"no installed backend makes this artifact: {what}; known kinds: {known}")
        if not is_package(package) and key is not None:
            raise Failure(Outcome.INTEGRITY, "unsigned package refused: this device verifies packages")
        runtime = next((r for r in backend.runtimes if self.device.profile.runtime(r)), None)
        if runtime is None:
            raise Failure(Outcome.UNSUPPORTED, f"a {backend.kind.name} artifact needs {' or '.join(backend.runtimes)}; "
                          f"{self.device.profile.name} has none")
        return Artifact(name, version, backend.kind.name, data, sha, runtime, len(package), seq=seq,
                        rollback_from=rollback_from)

    async def install(self, artifact: Artifact) -> None:
        """Load the artifact in its runtime and judge it with the backend's fit against what this
        device has free (the package's own flash counts as available: it is stored already)."""
        flash = self.flash_free + artifact.stored_bytes
        target = self.device.profile.target(artifact.runtime, flash_free_bytes=flash, name=self.device.endpoint)
        highest = self.highest.get(artifact.name)
        if artifact.seq is not None and highest is not None and (  # another slot installed something newer meanwhile
                highest > artifact.seq if artifact.rollback_from is None else artifact.rollback_from != highest):
            raise Failure(Outcome.INSTALL_FAILURE, f"downgrade refused at install: {artifact.name} sequence "
                                                   f"{artifact.seq}, this device installed {highest} since")
        try:
            artifact.plan = await self.device.runner.check(artifact.data, target, artifact.stored_bytes)
        except ModelError as exc:
            raise Failure(REASONS.get(exc.result, Outcome.INSTALL_FAILURE), str(exc)) from None
        if artifact.seq is not None and artifact.rollback_from is None:
            self.highest[artifact.name] = max(self.highest.get(artifact.name, artifact.seq), artifact.seq)



ANSWERS: dict[Answer, type[LwM2MError]] = {Answer.BAD_REQUEST: BadRequest, Answer.METHOD_NOT_ALLOWED: MethodNotAllowed}
VERIFY_REASONS = frozenset({Outcome.INTEGRITY, Outcome.UNSUPPORTED})  # Packages.receive fails these after the transfer


class PkgNames(enum.Enum):
    """What a slot shows as PkgName / PkgVersion once it holds a package."""

    MANIFEST = "manifest"  # our firmware: the verified package's own name and version
    DEVICE = "device"  # a real client: its own ("pkg<instance>", the count of packages the slot took)
    EMPTY = "empty"  # a real client that leaves them empty


class SlotHost(Host, Protocol):
    """The device as its update slots use it: ``Host`` and its packages and active model."""

    packages: Packages

    async def activate(self, artifact: Artifact, owner: Any) -> None:
        """Make ``artifact`` (installed by ``owner``, a slot) the model the device runs."""

    def deactivate(self, owner: Any) -> None:
        """Stop running ``owner``'s model, if it is the active one."""


class HasSlots(Protocol):
    software: list[SoftwareSlot]
    firmware: FirmwareSlot | None


class _Slot:
    """One instance of an update object on the device: the table decides, the slot does the I/O."""

    obj: UpdateObject[Any, Any]
    names: tuple[int, int]  # PkgName, PkgVersion resources
    status_reason: int | None = None  # where the detail of a new Update Result is written
    download_finished: Any  # the object's own members of these device events
    download_failed: Any
    verified: Any
    verify_failed: Any
    rebooted: Any

    def __init__(self, device: SlotHost, instance: int, pkg_names: PkgNames = PkgNames.MANIFEST) -> None:
        self.device, self.instance, self.pkg_names = device, instance, pkg_names
        self.taken = 0  # packages this slot verified and named
        self.owner = f"{self.obj.object_id}/{instance}"
        self.path = Path(self.obj.object_id, instance)
        self.phase: Any = self.obj.initial
        self.artifact: Artifact | None = None  # verified and in flash
        self.received: Artifact | Failure | None = None  # what the last transfer brought, for VERIFY
        self.incoming: tuple[bytes | None, str | None] = (None, None)  # the write that starts a download
        self.task: asyncio.Task[None] | None = None
        self.generation = 0  # bumped when an install in progress is cancelled

    @property
    def state(self) -> int:
        """The state the object reports (object 9 Update State, object 5 State)."""
        return self.obj.reported[self.phase][0]

    # -- the table -------------------------------------------------------------------------

    def feed(self, event: Any, reason: Reason | None = None, detail: str = "") -> list[Effect]:
        """Apply ``event``: raise the table's refusal, or commit the transition and perform its
        synchronous actions; return the effects left to await (install, activate)."""
        t = self.obj.step(self.phase, event, reason)
        tree, sets = self.device.tree, t.sets
        for rid, value in sets.items():
            tree.set(self.path.child(rid), value)
        if self.status_reason is not None and self.obj.result_resource in sets:
            tree.set(self.path.child(self.status_reason), detail)
        if t.refusal is not None:
            raise ANSWERS[t.refusal.answer](f"{t.refusal.why}; {self.path} is {self.phase.value}")
        self.phase = t.to
        later = [e for e in t.effects if e in self.awaited]
        for effect in t.effects:
            if effect not in self.awaited:
                self.performed[effect]()
        return later

    def report(self, event: Any, reason: Reason | None = None, detail: str = "") -> None:
        """A device event from work in the background; dropped when the table says it can no
        longer happen (the work was superseded)."""
        try:
            self._sync(self.feed(event, reason, detail))
        except Impossible:
            log.info("%s: %s dropped in %s", self.owner, event.value, self.phase.value)

    def _sync(self, later: list[Effect]) -> None:
        if later:  # the tables start installs and activations only from an Execute
            raise RuntimeError(f"{self.owner}: {later} cannot run outside an Execute")

    async def operate(self, event: Any) -> None:
        """A server's operation (Write / Execute) on this instance."""
        for effect in self.feed(event):
            await self._do_later(effect)

    @property
    def performed(self) -> dict[Effect, Callable[[], None]]:
        """What the slot does for each synchronous effect of the tables."""
        return {Effect.START_DOWNLOAD: self._start_download, Effect.CANCEL_DOWNLOAD: self._cancel_download,
                Effect.VERIFY: self._verify, Effect.NAME_PACKAGE: self._name_package, Effect.RELEASE: self._release,
                Effect.CANCEL_INSTALL: self._cancel_install, Effect.DEACTIVATE: lambda: self.device.deactivate(self)}

    @property
    def awaited(self) -> dict[Effect, Callable[[], Awaitable[None]]]:
        """The effects that take time: they run inside the Execute that started them."""
        return {Effect.INSTALL: self._install, Effect.ACTIVATE: self._activate}

    async def _do_later(self, effect: Effect) -> None:
        await self.awaited[effect]()

    def _start_download(self) -> None:
        package, uri = self.incoming
        self.received = None
        self.task = self.device.spawn(self._receive(package, uri), f"{self.owner} download")

    def _cancel_download(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _verify(self) -> None:
        """Packages.receive verified the package as it took it in: report what it found."""
        if isinstance(self.received, Artifact):
            self.artifact = self.received
            self.report(self.verified)
        elif isinstance(self.received, Failure):
            self.report(self.verify_failed, self.received.outcome, str(self.received))

    def _name_package(self) -> None:
        if self.artifact is None:
            return
        self.taken += 1
        name, version = {PkgNames.MANIFEST: (self.artifact.name, self.artifact.version),
                         PkgNames.DEVICE: (f"pkg{self.instance}", str(self.taken)),
                         PkgNames.EMPTY: ("", "")}[self.pkg_names]
        self.device.tree.set(self.path.child(self.names[0]), name)
        self.device.tree.set(self.path.child(self.names[1]), version)

    def _release(self) -> None:
        self.artifact = None
        self.device.packages.release(self.owner)

    def _cancel_install(self) -> None:
        self.generation += 1  # the install in progress finds it is no longer current

    async def _activate(self) -> None:
        if self.artifact is not None:
            await self.device.activate(self.artifact, self)

    # -- I/O --------------------------------------------------------------------------------

    async def _receive(self, package: bytes | None, uri: str | None) -> None:
        try:
            self.received = await self.device.packages.receive(self.owner, package, uri)
        except Failure as exc:
            if exc.outcome not in VERIFY_REASONS:
                self.report(self.download_failed, exc.outcome, str(exc))
                return
            self.received = exc  # it arrived, and the verification refused it
        self.report(self.download_finished)

    def _current(self, generation: int, boot: int) -> bool:
        """No reboot and no cancel since ``generation`` / ``boot`` were taken."""
        return self.generation == generation and self.device.reboots == boot

    async def _install(self) -> None:
        raise NotImplementedError

    def reboot(self) -> None:
        """RAM is gone (the device cancelled its tasks); what the table says survives stays."""
        self.report(self.rebooted, detail="device rebooted during the download")


class SoftwareSlot(_Slot):
    """One instance of object 9."""

    obj = SOFTWARE
    names = (Res9.PKG_NAME, Res9.PKG_VERSION)
    status_reason = Res9.STATUS_REASON
    download_finished, download_failed = Event9.DOWNLOAD_FINISHED, Event9.DOWNLOAD_FAILED
    verified, verify_failed, rebooted = Event9.VERIFIED, Event9.VERIFY_FAILED, Event9.REBOOT

    def __init__(self, device: SlotHost, instance: int, pkg_names: PkgNames = PkgNames.MANIFEST) -> None:
        super().__init__(device, instance, pkg_names)
        tree, child = device.tree, self.path.child
        tree.add_instance(9, instance, {0: "", 1: "", 7: 0, 8: False, 9: 0, 12: False, 16: ""})
        tree.on_write(child(Res9.PACKAGE), lambda v: self._write(Event9.WRITE_PACKAGE, package=_bytes(v)))
        tree.on_write(child(Res9.PACKAGE_URI), lambda v: self._write(
            Event9.WRITE_PACKAGE_URI if str(v) else Event9.WRITE_EMPTY_URI, uri=str(v)))
        tree.on_execute(child(Res9.INSTALL), lambda _args: self.operate(Event9.EXECUTE_INSTALL))
        tree.on_execute(child(Res9.UNINSTALL), self._uninstall)
        tree.on_execute(child(Res9.ACTIVATE), lambda _args: self.operate(Event9.EXECUTE_ACTIVATE))
        tree.on_execute(child(Res9.DEACTIVATE), lambda _args: self.operate(Event9.EXECUTE_DEACTIVATE))

    def _write(self, event: Event9, package: bytes | None = None, uri: str | None = None) -> None:
        self.incoming = (package, uri)
        self._sync(self.feed(event))

    async def _uninstall(self, args: str) -> None:
        """Uninstall: no argument or 0 removes the package, 1 is ForUpdate (object 9 resource 6)."""
        events = {"": Event9.EXECUTE_UNINSTALL, "0": Event9.EXECUTE_UNINSTALL, "1": Event9.EXECUTE_UNINSTALL_FOR_UPDATE}
        if args.strip() not in events:
            raise BadRequest(f"Uninstall on {self.path} takes no argument, 0 or 1 (ForUpdate), not {args!r}")
        await self.operate(events[args.strip()])

    def preempted(self) -> None:
        """The device activated another instance: this one's model no longer runs."""
        self.report(Event9.PREEMPTED)

    async def _install(self) -> None:
        generation, boot, artifact = self.generation, self.device.reboots, self.artifact
        assert artifact is not None
        try:
            await self.device.packages.install(artifact)
        except Failure as exc:
            if self._current(generation, boot):
                self.report(Event9.INSTALL_FAILED, exc.outcome, str(exc))
            return
        if self._current(generation, boot):  # rebooted mid-install: it did not happen (REBOOT said so)
            self.report(Event9.INSTALL_OK)


class FirmwareSlot(_Slot):
    """Object 5 instance 0: the same pipeline, for devices that only have Firmware Update."""

    obj = FIRMWARE
    names = (Res5.PKG_NAME, Res5.PKG_VERSION)
    download_finished, download_failed = Event5.DOWNLOAD_FINISHED, Event5.DOWNLOAD_FAILED
    verified, verify_failed, rebooted = Event5.VERIFIED, Event5.VERIFY_FAILED, Event5.REBOOT

    def __init__(self, device: SlotHost, pkg_names: PkgNames = PkgNames.MANIFEST) -> None:
        super().__init__(device, 0, pkg_names)
        tree, child = device.tree, self.path.child
        tree.add_instance(5, 0, {1: "", 3: 0, 5: 0, 6: "", 7: "", 8: [0], 9: 2})
        tree.on_write(child(Res5.PACKAGE), self._write_package)
        tree.on_write(child(Res5.PACKAGE_URI), self._write_uri)
        tree.on_execute(child(Res5.UPDATE), lambda _args: self.operate(Event5.EXECUTE_UPDATE))
        tree.on_execute(child(Res5.CANCEL), lambda _args: self.operate(Event5.EXECUTE_CANCEL))

    def _write_package(self, value: Value) -> None:
        package = _bytes(value)
        self.incoming = (package, None)
        self._sync(self.feed(Event5.WRITE_PACKAGE if package not in (b"", b"\0") else Event5.WRITE_EMPTY_PACKAGE))

    def _write_uri(self, value: Value) -> None:
        uri = str(value)
        self.incoming = (None, uri)
        self._sync(self.feed(Event5.WRITE_PACKAGE_URI if uri else Event5.WRITE_EMPTY_URI))
        self.device.tree.values[self.path.child(Res5.PACKAGE_URI)] = uri  # readable (RW), unlike object 9's

    async def _install(self) -> None:
        """Update: install the package and run it (the firmware this device updates to)."""
        generation, boot, artifact = self.generation, self.device.reboots, self.artifact
        assert artifact is not None
        try:
            await self.device.packages.install(artifact)
            if not self._current(generation, boot):  # rebooted mid-update: REBOOT left it Downloaded
                return
            await self.device.activate(artifact, self)
        except Failure as exc:
            if self._current(generation, boot):
                self.report(Event5.UPDATE_FAILED, exc.outcome, str(exc))
            return
        if self._current(generation, boot):
            self.report(Event5.UPDATE_OK)
            self.device.spawn(self._announce(), "registration update after the firmware update")

    async def _announce(self) -> None:
        """Running the new firmware: tell the server (a registration Update with the links)."""
        client = self.device.client
        if client is None:
            return
        try:
            await client.update(with_links=True)
        except (LwM2MError, TimeoutError) as exc:
            log.info("%s: registration update after the firmware update failed: %s", self.owner, exc)


def real_client_names(device: HasSlots, how: PkgNames = PkgNames.DEVICE) -> None:
    """Make every update slot of a built device show PkgName / PkgVersion as a real client does."""
    for slot in [*device.software, *([device.firmware] if device.firmware is not None else [])]:
        slot.pkg_names = how


def _bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    raise BadRequest(f"Package must be Opaque, got {type(value).__name__}")
