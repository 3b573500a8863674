"""Delivery of a signed package through LwM2M Software Management (object 9) or, for devices
that only have it, Firmware Update (object 5), driven from the server.

Each delivery is a reconcile loop, not a script: it observes the update instance (Update
State and Update Result, with a Read whenever no notification arrives within the poll
interval, so lost notifications or a device that re-registered cost a poll, not the
delivery), and from what the device reports takes the next step:

object 9 (OMA object 9 1.1, Update State 7, Update Result 9, Activation State 12)
  INITIAL         -> write the Package URI (/9/x/3, pull) or the Package (/9/x/2, Block1 push)
  DOWNLOAD STARTED, DOWNLOADED -> wait
  DELIVERED       -> Execute Install (/9/x/4)
  INSTALLED       -> Execute Activate (/9/x/10), then done once Activation State is true
  INITIAL after our write, Update Result >= 50 -> failed download: 52 (connection lost) is
                     retried with backoff (the device pulls again, the server keeps the offer),
                     anything else ends the delivery with that result
  DELIVERED after Install with result 51/58 -> installation failed (nothing activated)
object 5 (State 3, Update Result 5)
  Idle            -> write Package URI (/5/0/1) or Package (/5/0/0)
  Downloading, Updating -> wait;  Downloaded -> Execute Update (/5/0/2)
  Idle after Update with result 1 -> done; other results as above (4 is retried).

A slot that holds someone else's package is uninstalled first (object 9) so the package that
is active stays untouched: a failed delivery leaves the previous model running. Every device
operation is retried with exponential backoff on timeouts and while the device is not
registered (it may be rebooting); a reboot mid-way therefore ends in a resumed delivery (the
device kept a delivered package in flash, or reports "connection lost" and pulls again) or in
a ``DeliveryFailed`` when the deadline passes, never in a success the device did not report.

What it does not do: choose the package, sign it, check the model runs (the deployer reads the
ML Inference object afterwards) or persist anything (``on_step`` tells the caller).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from lwm2m.errors import LwM2MError, NotFound
from lwm2m.path import Path, Value
from tinymlaas.server.device_client import DeviceTimeout
from tinymlaas.server.operations import DeviceError

log = logging.getLogger(__name__)

RESULT9 = {0: "initial", 1: "downloading", 2: "installed", 3: "downloaded and verified",
           50: "not enough storage", 51: "out of memory", 52: "connection lost during download",
           53: "package integrity check failure", 54: "unsupported package type", 56: "invalid URI",
           57: "device-defined update error", 58: "software installation failure",
           59: "software uninstallation failure"}
RESULT5 = {0: "initial", 1: "firmware updated successfully", 2: "not enough flash memory",
           3: "out of RAM during download", 4: "connection lost during download", 5: "integrity check failure",
           6: "unsupported package type", 7: "invalid URI", 8: "firmware update failed", 9: "unsupported protocol",
           10: "firmware update cancelled"}
RETRYABLE = {9: frozenset({52}), 5: frozenset({4})}
INITIAL, DOWNLOAD_STARTED, DOWNLOADED, DELIVERED, INSTALLED = range(5)  # object 9 Update State
IDLE, DOWNLOADING, FW_DOWNLOADED, UPDATING = range(4)  # object 5 State

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

    async def execute(self, path: Path) -> None:
        await self.call(f"Execute {path}", self.server.execute, path)


class Watch:
    """The latest values of one object instance: notifications when they come, else a Read."""

    def __init__(self, session: Session, path: Path) -> None:
        self.session, self.path = session, path
        self.queue: "asyncio.Queue[Any] | None" = None

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
                    return content  # type: ignore[no-any-return]
                self.queue = None  # the observation ended (re-registration): observe again next time
            except asyncio.TimeoutError:
                pass
        elif wait:
            await asyncio.sleep(self.session.policy.poll_s)
        return await self.session.read(self.path)

    def close(self) -> None:
        try:
            self.session.server.observations.cancel(self.session.endpoint, self.path)
        except LwM2MError:
            pass


def _num(values: dict[Path, Value], path: Path, default: int = 0) -> int:
    v = values.get(path)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


async def _download_failed(session: Session, obj: int, result: int, attempts: int, what: str) -> int:
    """After a failed download: back off and return attempts+1 if it may be retried, else raise."""
    names = RESULT9 if obj == 9 else RESULT5
    if result in RETRYABLE[obj] and attempts < session.policy.download_attempts:
        delay = min(session.policy.backoff_s[0] * 2 ** attempts, session.policy.backoff_s[1])
        log.info("%s on %s: %s; delivering again in %.1f s", what, session.endpoint, names[result], delay)
        await asyncio.sleep(delay)
        return attempts + 1
    raise DeliveryFailed(f"{what} on {session.endpoint} failed: Update Result {result} "
                         f"({names.get(result, 'unknown')})" + (f" after {attempts} attempts" if attempts > 1 else ""),
                         result)


async def _send(session: Session, shipment: Shipment, package_path: Path, uri_path: Path) -> None:
    if shipment.uri is not None:
        await session.write(uri_path, shipment.uri)
    else:
        await session.write(package_path, shipment.package, timeout=session.policy.push_timeout)


async def deliver9(session: Session, instance: int, shipment: Shipment, on_step: Step) -> None:
    """Object 9 instance ``instance``: deliver, install and activate ``shipment``."""
    base = Path(9, instance)
    r = {rid: base.child(rid) for rid in (0, 1, 2, 3, 4, 6, 7, 9, 10, 12)}
    watch = Watch(session, base)
    sent = install_asked = activate_asked = False
    attempts, wait = 1, False
    try:
        while True:
            session.check_deadline(f"delivery to {session.endpoint}{base}")
            v = await watch.values(wait)
            wait = True
            state, result = _num(v, r[7]), _num(v, r[9])
            ours = v.get(r[0]) == shipment.name and v.get(r[1]) == shipment.version
            try:
                if state == INITIAL:
                    if sent and result >= 50:
                        attempts = await _download_failed(session, 9, result, attempts, f"download to {base}")
                        sent = False
                    if not sent:
                        await on_step("delivering", {"object_path": str(base), "attempt": attempts})
                        await _send(session, shipment, r[2], r[3])
                        sent, install_asked = True, False
                elif state in (DOWNLOAD_STARTED, DOWNLOADED):
                    continue
                elif not ours:  # DELIVERED or INSTALLED with another package: make room
                    await session.execute(r[6])
                    sent = False
                elif state == DELIVERED:
                    if install_asked and result in (51, 58):
                        raise DeliveryFailed(f"Install on {session.endpoint}{base} failed: Update Result {result} "
                                             f"({RESULT9[result]})", result)
                    await on_step("installing", {})
                    install_asked = True
                    await session.execute(r[4])
                elif state == INSTALLED and not v.get(r[12]):
                    await on_step("activating", {})
                    activate_asked = True
                    await session.execute(r[10])
                    wait = False
                elif state == INSTALLED:
                    return
            except DeviceError as exc:  # the device refused this step in the state it is in now: look again
                log.info("%s: %s", session.endpoint, exc.message)
                if activate_asked and state == INSTALLED:
                    raise DeliveryFailed(f"Activate on {session.endpoint}{base} refused: {exc.message}") from None
    finally:
        watch.close()


async def deliver5(session: Session, shipment: Shipment, on_step: Step) -> None:
    """Object 5 (single instance): deliver and update; the device activates the model itself."""
    base = Path(5, 0)
    r = {rid: base.child(rid) for rid in (0, 1, 2, 3, 5, 6, 7)}
    watch = Watch(session, base)
    sent = update_asked = False
    attempts, wait = 1, False
    try:
        while True:
            session.check_deadline(f"firmware update of {session.endpoint}")
            v = await watch.values(wait)
            wait = True
            state, result = _num(v, r[3]), _num(v, r[5])
            try:
                if state == IDLE:
                    if sent and update_asked and result == 1:
                        return
                    if sent and result >= 2:
                        if update_asked:
                            raise DeliveryFailed(f"Update on {session.endpoint} failed: Update Result {result} "
                                                 f"({RESULT5.get(result, 'unknown')})", result)
                        attempts = await _download_failed(session, 5, result, attempts, "download to /5/0")
                        sent = False
                    if not sent:
                        await on_step("delivering", {"object_path": str(base), "attempt": attempts})
                        await _send(session, shipment, r[0], r[1])
                        sent, update_asked = True, False
                elif state == FW_DOWNLOADED:
                    if update_asked and result in (3, 8):
                        raise DeliveryFailed(f"Update on {session.endpoint} failed: Update Result {result} "
                                             f"({RESULT5[result]})", result)
                    if not sent:  # someone else's download sits there: cancel it
                        await session.write(r[1], "")
                        continue
                    await on_step("installing", {})
                    update_asked = True
                    await session.execute(r[2])
            except DeviceError as exc:
                log.info("%s: %s", session.endpoint, exc.message)
    finally:
        watch.close()
