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
  Downloaded -> Execute Update (/5/0/2); done at Idle with Update Result 1 after the Update.

A failed download (the device back in its initial state with a failure result) is delivered
again when the result says the connection was lost (52 / 4), up to ``download_attempts``;
any other failure result, a failed Install / Update, a refused Activate, or a report the
table says the device cannot make (a protocol error) ends the delivery with the device's state
and result named. A slot holding a package this delivery did not send is uninstalled first
(object 9; an empty Package URI resets object 5) so the package that is active stays untouched:
a failed delivery leaves the previous model running. Every device operation is retried with
exponential backoff on timeouts and while the device is not registered (it may be rebooting);
a reboot mid-way therefore ends in a resumed delivery or in a ``DeliveryFailed`` when the
deadline passes, never in a success the device did not report.

What it does not do: choose the package, sign it, check the model runs (the deployer reads the
ML Inference object afterwards), decide anything the tables decide, or persist anything
(``on_step`` tells the caller).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lwm2m.errors import LwM2MError, NotFound
from lwm2m.path import Path, Value
from lwm2m.updates import FIRMWARE_ROUTE, SOFTWARE_ROUTE, Event5, Event9, Reconciler, Report, Route, Verdict
from lwm2m.updates.software import Res9
from tinymlaas.server.device_client import DeviceTimeout
from tinymlaas.server.operations import DeviceError

log = logging.getLogger(__name__)

Step = Callable[[str, dict[str, Any]], Awaitable[None]]


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
    op_timeout: float = 10.0  # one LwM2M operation (CoAP retransmissions happen inside it)
    push_timeout: float = 120.0  # a Block1 write of the whole package
    deadline_s: float = 300.0  # the whole delivery
    download_attempts: int = 3  # downloads that ended in "connection lost"
    poll_s: float = 1.0  # re-read this often when the device does not let us observe
    observed_poll_s: float = 5.0  # and this often while observing (a lost notification costs this much)
    backoff_s: tuple[float, float] = (0.5, 8.0)  # first and longest retry delay


class Session:
    """Operations on one device with retries, under one deadline."""

    def __init__(self, server: Any, endpoint: str, policy: Policy) -> None:
        self.server, self.endpoint, self.policy = server, endpoint, policy
        self.deadline = time.monotonic() + policy.deadline_s
        self.retries = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self, what: str) -> None:
        if self.left() <= 0:
            raise DeliveryFailed(f"{what} did not finish within {self.policy.deadline_s:g} s")

    async def call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float | None = None) -> Any:
        delay, longest = self.policy.backoff_s
        while True:
            try:
                return await fn(self.endpoint, *args, timeout=min(timeout or self.policy.op_timeout,
                                                                  max(self.left(), 1.0)))
            except (DeviceTimeout, NotFound) as exc:
                if self.left() <= delay:
                    raise DeliveryFailed(f"{what} on {self.endpoint}: gave up at the deadline "
                                         f"({self.policy.deadline_s:g} s): {exc.message}") from None
                self.retries += 1
                log.info("%s on %s: %s; retrying in %.1f s", what, self.endpoint, exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

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

    async def values(self, wait: bool) -> dict[Path, Value]:
        """The instance's values; with ``wait``, after the next change or the poll interval."""
        if self.queue is None:
            await self._subscribe()
        if wait and self.queue is not None:
            try:
                content = await asyncio.wait_for(self.queue.get(), self.session.policy.observed_poll_s)
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
            await asyncio.sleep(self.session.policy.poll_s)
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


def _num(values: dict[Path, Value], path: Path, default: int = 0) -> int:
    v = values.get(path)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


STEPS: dict[Any, str] = {  # the deployment state an operation starts
    Event9.WRITE_PACKAGE: "delivering", Event9.WRITE_PACKAGE_URI: "delivering", Event9.EXECUTE_INSTALL: "installing",
    Event9.EXECUTE_ACTIVATE: "activating",
    Event5.WRITE_PACKAGE: "delivering", Event5.WRITE_PACKAGE_URI: "delivering", Event5.EXECUTE_UPDATE: "installing",
}
WHAT = {9: "delivery to {ep}{base}", 5: "firmware update of {ep}"}  # for the deadline message


async def deliver9(session: Session, instance: int, shipment: Shipment, on_step: Step) -> None:
    """Object 9 instance ``instance``: deliver, install and activate ``shipment``."""
    await _deliver(session, SOFTWARE_ROUTE, instance, shipment, on_step)


async def deliver5(session: Session, shipment: Shipment, on_step: Step) -> None:
    """Object 5 (single instance): deliver and update; the device activates the model itself."""
    await _deliver(session, FIRMWARE_ROUTE, 0, shipment, on_step)


async def _deliver(session: Session, route: Route[Any, Any], instance: int, shipment: Shipment,
                   on_step: Step) -> None:
    """The thin adapter: report -> ``Reconciler`` -> the operation, the wait or the failure it decides."""
    obj, base = route.obj, Path(route.obj.object_id, instance)
    plan: Reconciler[Any, Any] = Reconciler(route, session.endpoint, str(base), push=shipment.uri is None,
                                            attempts=session.policy.download_attempts)
    watch = Watch(session, base)
    what = WHAT[obj.object_id].format(ep=session.endpoint, base=base)
    fresh = True
    try:
        while True:
            session.check_deadline(what)
            v = await watch.values(wait=not fresh)
            active = obj.activation_resource is not None and bool(v.get(base.child(obj.activation_resource)))
            report = Report(_num(v, base.child(obj.state_resource)), _num(v, base.child(obj.result_resource)), active)
            # PkgName / PkgVersion only hint that a slot found holding a package holds this one
            hint = (obj.object_id == 9 and v.get(base.child(Res9.PKG_NAME)) == shipment.name
                    and v.get(base.child(Res9.PKG_VERSION)) == shipment.version)
            decision = plan.observe(report, watch.read_last, hint_ours=hint)
            fresh = False
            if decision.verdict is Verdict.DONE:
                return
            if decision.verdict is Verdict.FAIL:
                raise DeliveryFailed(decision.message, decision.result)
            if decision.verdict is Verdict.CONFIRM:
                fresh = True
            elif decision.verdict is Verdict.BACKOFF:
                delay = min(session.policy.backoff_s[0] * 2 ** decision.attempt, session.policy.backoff_s[1])
                log.info("%s; delivering again in %.1f s", decision.message, delay)
                await asyncio.sleep(delay)
                fresh = True
            elif decision.verdict is Verdict.SEND:
                event = decision.event
                assert event is not None
                op = obj.operations[event]
                step = STEPS.get(event)
                if step is not None:
                    await on_step(step, {"object_path": str(base), "attempt": decision.attempt}
                                  if step == "delivering" else {})
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
                fresh = True
    finally:
        watch.close()


async def _write(session: Session, path: Path, payload: str, shipment: Shipment) -> None:
    if payload == "package":
        await session.write(path, shipment.package, timeout=session.policy.push_timeout)
    else:
        await session.write(path, (shipment.uri or "") if payload == "uri" else "")
