"""Delivery of a signed package through LwM2M Software Management (object 9) or, for devices
that only have it, Firmware Update (object 5), driven from the server.

Each delivery is a reconcile loop, not a script: it observes the update instance (its state,
Update Result and, for object 9, Activation State; notifications when they come, a Read
whenever none arrives within the poll interval and after each operation, so lost
notifications or a device that re-registered cost a poll, not the delivery) and hands every
report to the object's ``Reconciler`` (``lwm2m.updates``), which decides by the
object's transition table what the next step is:

object 9 (Update State 7, Update Result 9, Activation State 12)
  INITIAL -> write the Package URI (/9/x/3, pull) or the Package (/9/x/2, Block1 push);
  DOWNLOAD STARTED, DOWNLOADED -> wait; DELIVERED -> Execute Install (/9/x/4);
  INSTALLED -> Execute Activate (/9/x/10); done once Activation State is true.
object 5 (State 3, Update Result 5)
  Idle -> write Package URI (/5/0/1) or Package (/5/0/0); Downloading, Updating -> wait;
  Downloaded -> Execute Update (/5/0/2); done at Idle with Update Result 1 after the Update,
  once the device then registered again or updated its registration (it runs the new
  firmware; ``Policy.reregister_s``).

Success is what the object says, never PkgName / PkgVersion (a real client fills them from
its own package metadata, or leaves them empty): they are returned in ``Delivered`` for the
record. Whether a slot found holding a package holds *this* one is the caller's evidence
(``ours``: what it delivered where), not a comparison of names.

Bounds, all in ``Policy`` (count, bytes, time): ``download_attempts`` deliveries at most (a
download that ended in "connection lost", a stale-state retry or a reset), so at most
``download_attempts`` x the package size is offered or pushed; ``install_attempts`` Install /
Update executions when the device reports an install failure worth retrying; every device
operation ``op_attempts`` tries at most on timeouts, while the device is not registered (it may
be rebooting) or asleep (queue mode); ``max_reports`` reports per delivery; and the whole
delivery ``deadline_s``. Retry waits are exponential with full jitter (``Policy.backoff``, ``lwm2m.retry``).

Stale state: when the device's report has not changed for ``stale_s`` (counted only while the
device answers: time it was unreachable or asleep does not count; during a pulled download
that the device has started fetching, ``download_min_Bps`` adds the time the package takes at
that rate), the table's ``STALE`` row decides: deliver again, reset the machine (object 5: an
empty Package URI; object 9: Uninstall) and deliver again, or fail naming the state, e.g.
"made no progress in State 1 (Downloading), Update Result 0 (initial)".

Any failure result that is not retried, a refused Activate, or a report the table says the
device cannot make (a protocol error) ends the delivery with the device's state and result
named. A slot holding a package this delivery did not send is uninstalled first (object 9; an
empty Package URI resets object 5) so the package that is active stays untouched: a failed
delivery leaves the previous model running.

What it does not do: choose the package or the slot, sign it, check the model runs (the
deployer reads the ML Inference object afterwards, when the device has it), decide anything the
tables decide, or persist anything (``on_step`` tells the caller).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from lwm2m.errors import LwM2MError, NotFound
from lwm2m.retry import Backoff
from lwm2m.path import Path, Value
from lwm2m.updates import (
    FIRMWARE_ROUTE,
    SOFTWARE_ROUTE,
    Event5,
    Event9,
    Reconciler,
    Report,
    Route,
    Verdict,
)
from lwm2m.updates.firmware import Res5
from lwm2m.updates.software import Res9
from tinymlaas.server.device_client import DeviceTimeout
from tinymlaas.server.operations import DeviceError
from tinymlaas.server.queue import QueueDeadlineExpired

log = logging.getLogger(__name__)

Step = Callable[[str, dict[str, Any]], Awaitable[None]]
UNREACHABLE = (DeviceTimeout, NotFound, QueueDeadlineExpired)  # no answer, not registered, asleep


class DeliveryFailed(LwM2MError):
    """The device reported a failure (``result`` is its Update Result) or stopped answering."""

    def __init__(self, message: str, result: int | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Shipment:
    endpoint: str
    name: str
    version: str
    package: bytes
    uri: str | None  # pull (Package URI) when set, else push (Package, Block1)


@dataclass(frozen=True)
class Policy:
    """How long and how often a delivery tries; every figure bounds a loop or a retry."""

    op_timeout: float = 10.0  # one LwM2M operation (CoAP retransmissions happen inside it)
    push_timeout: float = 120.0  # a Block1 write of the whole package
    deadline_s: float = 300.0  # the whole delivery
    download_attempts: int = 3  # deliveries (connection lost, stale-state retries and resets): bytes <= this x size
    poll_s: float = 1.0  # re-read this often when the device does not let us observe
    observed_poll_s: float = 5.0  # and this often while observing (a lost notification costs this much)
    backoff_s: tuple[float, float] = (0.5, 8.0)  # bounds of the first and of any retry delay (full jitter)
    install_attempts: int = 2  # Install / Update executions when the device reports a retryable install failure
    op_attempts: int = 12  # tries of one operation on timeouts, while not registered or asleep
    stale_s: float = 60.0  # no change in the device's report this long (while it answers): the STALE row
    download_min_Bps: float = 256.0  # a pull the device is fetching may take size / this longer
    reregister_s: float = 60.0  # object 5: wait this long after Update Result 1 for Register / Update
    max_reports: int = 5000  # reports handled per delivery
    queue_wait_s: float = 1800.0  # a deployment queued behind the device's running one waits this long

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
                raise ValueError(f"delivery policy {f.name}={value!r}: expected a positive number")
        for name in ("download_attempts", "install_attempts", "op_attempts", "max_reports"):
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"delivery policy {name}={getattr(self, name)!r}: expected a whole number")
        if self.backoff_s[0] > self.backoff_s[1]:
            raise ValueError(f"delivery policy backoff_s={self.backoff_s}: the first delay bound exceeds the longest")

    @property
    def backoff(self) -> Backoff:
        """The retry delays of anything in a delivery: exponential with full jitter (``lwm2m.retry``)."""
        return Backoff(*self.backoff_s)


class Session:
    """Operations on one device with bounded, jittered retries, under one deadline."""

    def __init__(self, server: Any, endpoint: str, policy: Policy) -> None:
        self.server, self.endpoint, self.policy = server, endpoint, policy
        self.deadline = time.monotonic() + policy.deadline_s
        self.retries = 0
        self.unreachable_s = 0.0  # time spent on operations that got no answer, and waiting to retry them

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self, what: str) -> None:
        if self.left() <= 0:
            raise DeliveryFailed(f"{what} did not finish within {self.policy.deadline_s:g} s")

    async def call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float | None = None) -> Any:
        for tried in range(1, self.policy.op_attempts + 1):
            started = time.monotonic()
            try:
                return await fn(self.endpoint, *args, timeout=min(timeout or self.policy.op_timeout,
                                                                  max(self.left(), 1.0)))
            except UNREACHABLE as exc:
                delay = self.policy.backoff.delay_s(tried)
                if self.left() <= delay:
                    raise DeliveryFailed(f"{what} on {self.endpoint}: gave up at the deadline "
                                         f"({self.policy.deadline_s:g} s): {exc.message}") from None
                if tried == self.policy.op_attempts:
                    raise DeliveryFailed(f"{what} on {self.endpoint}: gave up after {tried} tries: "
                                         f"{exc.message}") from None
                self.retries += 1
                log.info("%s on %s: %s; retrying in %.1f s", what, self.endpoint, exc.message, delay)
                await asyncio.sleep(delay)
                self.unreachable_s += time.monotonic() - started
        raise AssertionError("unreachable: the loop returns or raises")

    async def read(self, path: Path) -> dict[Path, Value]:
        return await self.call(f"Read {path}", self.server.read, path)  # type: ignore[no-any-return]

    async def write(self, path: Path, value: Value, timeout: float | None = None) -> None:
        await self.call(f"Write {path}", self.server.write, path, {path: value}, timeout=timeout)

    async def execute(self, path: Path, arguments: str = "") -> None:
        if arguments:
            await self.call(f"Execute {path} {arguments!r}", self.server.execute, path, arguments)
        else:
            await self.call(f"Execute {path}", self.server.execute, path)


class Watch:
    """The latest values of one object instance: notifications when they come, else a Read."""

    def __init__(self, session: Session, path: Path) -> None:
        self.session, self.path = session, path
        self.queue: asyncio.Queue[Any] | None = None
        self.read_last = False  # the last values came from a Read (not a notification)

    async def _subscribe(self) -> None:
        obs = self.session.server.observations
        try:
            live = await obs.observe(self.session.endpoint, self.path, timeout=self.session.policy.op_timeout)
            self.queue = obs.subscribe(live)
        except LwM2MError as exc:  # no observation: polling alone still works
            log.info("observe %s on %s failed: %s", self.path, self.session.endpoint, exc.message)
            self.queue = None

    async def values(self, wait: bool, most_s: float | None = None) -> dict[Path, Value]:
        """The instance's values; with ``wait``, after the next change or the poll interval
        (at most ``most_s``)."""
        policy = self.session.policy
        if self.queue is None:
            await self._subscribe()
        if wait and self.queue is not None:
            try:
                content = await asyncio.wait_for(self.queue.get(), _at_most(policy.observed_poll_s, most_s))
                if content is not None:
                    while not self.queue.empty():  # the newest notification wins
                        newer = self.queue.get_nowait()
                        content = newer if newer is not None else content
                    self.read_last = False
                    return content  # type: ignore[no-any-return]
                self.queue = None  # the observation ended (re-registration): observe again next time
            except TimeoutError:
                pass
        elif wait:
            await asyncio.sleep(_at_most(policy.poll_s, most_s))
        elif self.queue is not None:  # what was notified so far is older than the Read that follows
            while not self.queue.empty():
                if self.queue.get_nowait() is None:
                    self.queue = None  # the observation ended: observe again next time
                    break
        self.read_last = True
        return await self.session.read(self.path)

    def close(self) -> None:
        try:
            self.session.server.observations.cancel(self.session.endpoint, self.path)
        except LwM2MError:
            pass


def _at_most(seconds: float, most_s: float | None) -> float:
    return seconds if most_s is None else max(0.05, min(seconds, most_s))


class StaleClock:
    """Time without progress: what the device reported has not changed, counted only while the
    delivery waited for it with the device answering (not while operations ran, nor while the
    device could not be reached). ``restart`` on a change, a delivery, a retry or a recovery."""

    def __init__(self) -> None:
        self.idle_s = 0.0

    def restart(self) -> None:
        self.idle_s = 0.0

    def waited(self, seconds: float) -> None:
        self.idle_s += max(seconds, 0.0)


class Registrations:
    """The device's Registers and registration Updates from now on (object 5 success evidence)."""

    def __init__(self, server: Any, endpoint: str) -> None:
        self.server, self.endpoint = server, endpoint
        self.seen: list[tuple[float, str]] = []
        self.arrived = asyncio.Event()
        server.listeners.append(self._heard)

    def _heard(self, kind: str, reg: Any) -> None:
        if reg.endpoint == self.endpoint and kind in ("registered", "updated"):
            self.seen.append((time.monotonic(), kind))
            self.arrived.set()

    def since(self, t: float) -> str | None:
        return next((kind for at, kind in reversed(self.seen) if at >= t), None)

    async def wait_since(self, t: float, timeout_s: float) -> str | None:
        end = time.monotonic() + timeout_s
        while self.since(t) is None and (left := end - time.monotonic()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                break
        return self.since(t)

    def close(self) -> None:
        if self._heard in self.server.listeners:
            self.server.listeners.remove(self._heard)


@dataclass(frozen=True)
class Delivered:
    """What the device reported when the delivery reached its goal: the record of what is where."""

    path: str  # "/9/1", "/5/0"
    state: int
    result: int
    active: bool
    pkg_name: str | None  # as the device reports it (its own choice): shown, never compared
    pkg_version: str | None
    registration: str | None = None  # object 5: "registered" / "updated" after the Update

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "state": self.state, "update_result": self.result, "active": self.active,
                "pkg_name": self.pkg_name, "pkg_version": self.pkg_version, "registration": self.registration}


def _num(values: dict[Path, Value], path: Path, default: int = 0) -> int:
    v = values.get(path)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _text(values: dict[Path, Value], path: Path) -> str | None:
    v = values.get(path)
    return None if v is None else str(v)


STEPS: dict[Any, str] = {  # the deployment state an operation starts
    Event9.WRITE_PACKAGE: "delivering", Event9.WRITE_PACKAGE_URI: "delivering", Event9.EXECUTE_INSTALL: "installing",
    Event9.EXECUTE_ACTIVATE: "activating",
    Event5.WRITE_PACKAGE: "delivering", Event5.WRITE_PACKAGE_URI: "delivering", Event5.EXECUTE_UPDATE: "installing",
}
WHAT = {9: "delivery to {ep}{base}", 5: "firmware update of {ep}"}  # for the deadline message
NAMES = {9: (Res9.PKG_NAME, Res9.PKG_VERSION), 5: (Res5.PKG_NAME, Res5.PKG_VERSION)}


async def deliver9(session: Session, instance: int, shipment: Shipment, on_step: Step, ours: bool = False) -> Delivered:
    """Object 9 instance ``instance``: deliver, install and activate ``shipment`` (``ours``: the
    caller's record says the instance holds this package already)."""
    return await _deliver(session, SOFTWARE_ROUTE, instance, shipment, on_step, ours)


async def deliver5(session: Session, shipment: Shipment, on_step: Step, ours: bool = False) -> Delivered:
    """Object 5 (single instance): deliver and update; the device activates the model itself."""
    return await _deliver(session, FIRMWARE_ROUTE, 0, shipment, on_step, ours)


async def _deliver(session: Session, route: Route[Any, Any], instance: int, shipment: Shipment,
                   on_step: Step, ours: bool) -> Delivered:
    """The thin adapter: report -> ``Reconciler`` -> the operation, the wait or the failure it decides."""
    obj, base, policy = route.obj, Path(route.obj.object_id, instance), session.policy
    plan: Reconciler[Any, Any] = Reconciler(route, session.endpoint, str(base), push=shipment.uri is None,
                                            attempts=policy.download_attempts, installs=policy.install_attempts)
    watch, clock = Watch(session, base), StaleClock()
    registrations = Registrations(session.server, session.endpoint) if route.reregisters else None
    offer = session.server.packages.offer(urlsplit(shipment.uri).path) if shipment.uri else None
    fetches_at_delivery, updated_at = 0, 0.0
    what = WHAT[obj.object_id].format(ep=session.endpoint, base=base)

    def allowance_s() -> float:
        """How long no change counts as no progress: longer while the device fetches a pull."""
        downloading = bool(plan.phases) and min(plan.phases, key=obj.order.index) == route.downloading
        if downloading and offer is not None and offer.downloads > fetches_at_delivery:
            return policy.stale_s + len(shipment.package) / policy.download_min_Bps
        return policy.stale_s

    fresh = True
    try:
        for _ in range(policy.max_reports):
            session.check_deadline(what)
            started, unreachable = time.monotonic(), session.unreachable_s
            v = await watch.values(wait=not fresh, most_s=allowance_s() - clock.idle_s)
            clock.waited(time.monotonic() - started - (session.unreachable_s - unreachable))
            active = obj.activation_resource is not None and bool(v.get(base.child(obj.activation_resource)))
            report = Report(_num(v, base.child(obj.state_resource)), _num(v, base.child(obj.result_resource)), active)
            before = plan.last
            decision = plan.observe(report, watch.read_last, hint_ours=ours)
            fresh = False
            if plan.last != before:
                clock.restart()
            # the device stayed put for the whole allowance, whatever was sent: the STALE row decides
            if decision.verdict in (Verdict.WAIT, Verdict.SEND) and clock.idle_s >= allowance_s():
                decision = plan.stale()
                log.info("%s: no progress for %.0f s in %s: %s", what, clock.idle_s,
                         obj.describe(report.state, report.result), decision.verdict.value)
                clock.restart()
            if decision.verdict is Verdict.DONE:
                name, version = NAMES[obj.object_id]
                announced = None
                if registrations is not None:
                    wait_s = min(policy.reregister_s, max(session.left(), 0))
                    announced = await registrations.wait_since(updated_at, wait_s)
                    if announced is None:
                        raise DeliveryFailed(
                            f"{session.endpoint} reported {obj.describe(report.state, report.result)} but neither "
                            f"registered again nor updated its registration within {policy.reregister_s:g} s of "
                            "the Update: the new firmware did not come up", report.result)
                return Delivered(str(base), report.state, report.result, report.active,
                                 _text(v, base.child(name)), _text(v, base.child(version)), announced)
            if decision.verdict is Verdict.FAIL:
                raise DeliveryFailed(decision.message, decision.result)
            if decision.verdict is Verdict.CONFIRM:
                fresh = True
            elif decision.verdict is Verdict.BACKOFF:
                delay = policy.backoff.delay_s(decision.attempt)
                log.info("%s; trying again in %.1f s", decision.message, delay)
                await asyncio.sleep(delay)
                clock.restart()
                fresh = True
            elif decision.verdict is Verdict.SEND:
                event = decision.event
                assert event is not None
                op = obj.operations[event]
                step = STEPS.get(event)
                if step is not None:
                    await on_step(step, {"object_path": str(base), "attempt": decision.attempt}
                                  if step == "delivering" else {})
                if event is route.install:  # a Register / Update from here on may be the new firmware's
                    updated_at = time.monotonic()
                try:
                    if op.execute:
                        await session.execute(base.child(op.resource), op.argument)
                    else:
                        await _write(session, base.child(op.resource), op.payload, shipment)
                except DeviceError as exc:  # refused in the state it is in now: look again, or fail
                    log.info("%s: %s", session.endpoint, exc.message)
                    refusal = plan.refused(event, exc.message)
                    if refusal.verdict is Verdict.FAIL:
                        raise DeliveryFailed(refusal.message) from None
                    continue
                plan.sent(event)
                if event in (route.push, route.pull):  # a new attempt: the device's time starts now
                    fetches_at_delivery = offer.downloads if offer is not None else 0
                    clock.restart()
                fresh = True
        raise DeliveryFailed(f"{what}: no end after {policy.max_reports} reports (last: "
                             f"{obj.describe(plan.last.state, plan.last.result) if plan.last else 'none'})",
                             plan.last.result if plan.last else None)
    finally:
        watch.close()
        if registrations is not None:
            registrations.close()


async def _write(session: Session, path: Path, payload: str, shipment: Shipment) -> None:
    if payload == "package":
        await session.write(path, shipment.package, timeout=session.policy.push_timeout)
    else:
        await session.write(path, (shipment.uri or "") if payload == "uri" else "")
