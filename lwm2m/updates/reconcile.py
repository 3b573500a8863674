"""A server's view of one update object instance: from what the device reports, the next step.

``Reconciler`` is fed every report of an object 5 or object 9 instance (``Report``: state,
Update Result, Activation State) and answers with a ``Decision``: wait, read again now, send
an operation (a server event of the object's table), back off and deliver again, done, or
failed. It decides by consulting the object's transition table:

* a report is checked first: values the object does not define, or does not allow together,
  and a state the table cannot reach from the last report with the device's own events plus
  the operations the server sent since, are a protocol error naming the device's state and
  result. A notification can be older than the Read before it, so an implausible report that
  was not a fresh Read is answered ``CONFIRM`` (read again) and only a fresh Read fails;
* the next operation is the one of the route's operations that the table says moves the
  reported phase furthest along the success path (``UpdateObject.toward``); a slot holding a
  package this delivery did not send is first brought back to the initial state
  (``UpdateObject.into``: Uninstall for object 9, an empty Package URI for object 5). The
  report right after an operation is the device's turn: the same operation is not sent again
  until the device reported once more (a client that accepts an operation and reports the
  same state, as Anjay installing in the background or Wakaama's object 5, is not answered
  with a busy loop; ``stale`` ends it);
* success is judged by the object: object 9 Update State INSTALLED with Activation State true,
  object 5 Idle with Update Result 1 after the server's Update (and then, ``Route.reregisters``,
  the device's Register or registration Update, which the adapter waits for: it runs the new
  firmware); never by PkgName / PkgVersion. ``hint_ours`` is the caller's own evidence that a
  slot found at the start holds this package (its record of what it delivered where);
* a failure is the device's own Update Result after the server's delivery or install; a result
  the route may retry (connection lost) is retried up to ``attempts`` deliveries, an install
  result it may retry (installation failure, out of memory, device error; object 5 "firmware
  update failed", out of RAM) up to ``installs`` Install / Update executions - in place while the
  device keeps the package (object 9 DELIVERED, object 5 Downloaded), by a new delivery (within
  ``attempts``) when it dropped it (object 5 Idle). The report right after a repeated Install
  still shows the last failure (object 9 resets Update Result only for a download): it is the
  device's turn, judged on the next report;
* ``stale()`` is the table's ``STALE`` row: deliver again, reset then deliver again, or fail
  naming the state; a reset or a new delivery counts against ``attempts``. The clock that calls
  it is the adapter's (``tinymlaas.deploy.delivery``); ``Route.downloading`` names the phase in
  which the device may be making progress that no report shows (a download in progress).

What it does not do: I/O, timers, sleeping, logging; the adapter (``tinymlaas.deploy.delivery``)
performs the operations, waits, and turns ``FAIL`` into an exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Generic, cast

from .firmware import FIRMWARE, Event5, Phase5
from .machine import E, P, Reason, Recovery, UpdateObject
from .software import SOFTWARE, Event9, Phase9


@dataclass(frozen=True)
class Route(Generic[P, E]):
    """How a server takes one update object from its initial state to its goal."""

    obj: UpdateObject[P, E]
    push: E  # the delivery, by Write of the Package
    pull: E  # the delivery, by Write of the Package URI
    steps: tuple[E, ...]  # operations on the way to the goal
    resets: tuple[E, ...]  # operations that bring someone else's package back to the initial state
    install: E  # the step whose failure is reported in ``install_phase``
    install_label: str  # what failed, for the message: "{endpoint}" and "{base}" are filled in
    install_phase: P
    goal: P
    goal_result: int | None  # the Update Result the goal also needs, if any
    goal_needs_install: bool  # the goal counts only after this delivery's ``install``
    failures: frozenset[int]  # Update Results that end a delivery or an install as failed
    download_failed: E  # the device event whose results ``retry`` picks from
    retry: frozenset[Reason]  # failures worth delivering again
    install_failed: E  # the device event whose results ``install_retry`` picks from
    install_retry: frozenset[Reason]  # install failures worth another Install / Update
    downloading: P  # the phase of a download in progress (its progress shows in no resource)
    reregisters: bool  # the goal also needs the device's Register or registration Update after it


INSTALL_RETRY = frozenset({Reason.INSTALL_FAILURE, Reason.OUT_OF_MEMORY, Reason.DEVICE_ERROR})
SOFTWARE_ROUTE: Route[Phase9, Event9] = Route(
    SOFTWARE, push=Event9.WRITE_PACKAGE, pull=Event9.WRITE_PACKAGE_URI,
    steps=(Event9.EXECUTE_INSTALL, Event9.EXECUTE_ACTIVATE), resets=(Event9.EXECUTE_UNINSTALL,),
    install=Event9.EXECUTE_INSTALL, install_label="Install on {endpoint}{base}", install_phase=Phase9.DELIVERED,
    goal=Phase9.ACTIVE, goal_result=None, goal_needs_install=False,
    failures=frozenset(r for r in SOFTWARE.results if r >= 50), download_failed=Event9.DOWNLOAD_FAILED,
    retry=frozenset({Reason.CONNECTION_LOST}), install_failed=Event9.INSTALL_FAILED,
    install_retry=INSTALL_RETRY, downloading=Phase9.DOWNLOAD_STARTED, reregisters=False)
FIRMWARE_ROUTE: Route[Phase5, Event5] = Route(
    FIRMWARE, push=Event5.WRITE_PACKAGE, pull=Event5.WRITE_PACKAGE_URI,
    steps=(Event5.EXECUTE_UPDATE,), resets=(Event5.WRITE_EMPTY_URI,),
    install=Event5.EXECUTE_UPDATE, install_label="Update on {endpoint}", install_phase=Phase5.DOWNLOADED,
    goal=Phase5.IDLE, goal_result=1, goal_needs_install=True,
    failures=frozenset(r for r in FIRMWARE.results if 2 <= r <= 10), download_failed=Event5.DOWNLOAD_FAILED,
    retry=frozenset({Reason.CONNECTION_LOST}), install_failed=Event5.UPDATE_FAILED,
    install_retry=INSTALL_RETRY, downloading=Phase5.DOWNLOADING, reregisters=True)


class Verdict(enum.Enum):
    WAIT = "wait"  # observe again: the next change, or the poll interval
    CONFIRM = "confirm"  # read the instance now, before judging an implausible report
    SEND = "send"  # perform ``Decision.event``
    BACKOFF = "backoff"  # delivery ``attempt`` failed in a way worth retrying: wait, then observe again
    DONE = "done"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision(Generic[E]):
    verdict: Verdict
    event: E | None = None
    attempt: int = 0  # SEND of a delivery: its number; BACKOFF: the one that failed
    message: str = ""  # FAIL: why; BACKOFF: what failed
    result: int | None = None  # FAIL: the device's Update Result, when it reported one


@dataclass(frozen=True)
class Report:
    state: int
    result: int
    active: bool = False


@dataclass
class Reconciler(Generic[P, E]):
    route: Route[P, E]
    endpoint: str
    base: str  # "/9/0", "/5/0"
    push: bool = True
    attempts: int = 3  # deliveries at most, when a delivery fails in a way worth retrying
    attempt: int = 1
    installs: int = 1  # Install / Update executions at most, when an install fails in a way worth retrying
    install_attempt: int = 1
    last: Report | None = None
    phases: frozenset[P] = frozenset()  # the phases the last accepted report can be in
    sent_since: list[E] = field(default_factory=list)  # operations since the last accepted report
    delivered: bool = False  # this delivery wrote the package: what the slot holds now is ours
    pending: bool = False  # a delivery was sent and its outcome not yet seen
    asked: set[E] = field(default_factory=set)  # steps done since the delivery
    acted: tuple[Report, E] | None = None  # the last operation and the report it answered

    @property
    def where(self) -> str:
        return f"{self.endpoint}{self.base}"

    def observe(self, report: Report, fresh: bool, hint_ours: bool = False) -> Decision[E]:
        """The next step after ``report`` (``fresh``: a Read issued after the last operation)."""
        obj = self.route.obj
        problem = obj.problem(report.state, report.result, report.active)
        phases = obj.phases_reporting(report.state, report.active)
        if problem is None and self.last is not None:
            phases &= obj.reachable(self.phases, obj.device_events + tuple(self.sent_since))
            if not phases:
                problem = (f"object {obj.object_id} cannot get there from "
                           f"{obj.describe(self.last.state, self.last.result)}"
                           + (f" by {', '.join(e.value for e in self.sent_since)}" if self.sent_since else "")
                           + " and the device's own events")
        if problem is not None:
            if not fresh and report.state in obj.states and report.result in obj.results:
                return Decision(Verdict.CONFIRM)
            return self._fail(f"{self.where} reported {obj.describe(report.state, report.result)}: "
                              f"{problem} (protocol error)", report.result)
        if report != self.last:
            self.acted = None  # the device moved: every operation may be due again
        self.last, self.phases, self.sent_since = report, phases, []
        return self._decide(min(phases, key=obj.order.index), report.result, self.delivered or hint_ours)

    def _decide(self, phase: P, result: int, ours: bool) -> Decision[E]:
        route, obj = self.route, self.route.obj
        installed = route.install in self.asked
        if (phase == route.goal and ours and route.goal_result in (None, result)
                and (installed or not route.goal_needs_install)):
            return Decision(Verdict.DONE)
        failed = result in route.failures
        if self.pending and phase == obj.initial and failed:
            if installed:  # Idle after a failed Update (object 5): the package is gone
                return self._install_failed(result, redeliver=True)
            if result in self._retryable() and self.attempt < self.attempts:
                self.attempt, self.pending = self.attempt + 1, False
                return Decision(Verdict.BACKOFF, attempt=self.attempt - 1, result=result,
                                message=f"download to {self.base} on {self.endpoint}: {obj.results[result]}")
            after = f" after {self.attempt} attempts" if self.attempt > 1 else ""
            return self._fail(f"download to {self.base} on {self.endpoint} failed: Update Result {result} "
                              f"({obj.results[result]})" + after, result)
        if installed and phase == route.install_phase and failed:
            if self.acted == (self.last, route.install):  # the old failure, right after a repeated Install
                self.acted = None
                return Decision(Verdict.WAIT)
            return self._install_failed(result, redeliver=False)
        if phase == obj.initial:
            if self.pending:
                return Decision(Verdict.WAIT)
            return Decision(Verdict.SEND, route.push if self.push else route.pull, attempt=self.attempt)
        if not ours:
            event = obj.into(phase, obj.initial, route.resets)
        else:
            event = obj.toward(phase, route.steps)
        if event is None:
            return Decision(Verdict.WAIT)
        if self.acted == (self.last, event):  # the report right after the operation: the device's turn
            self.acted = None
            return Decision(Verdict.WAIT)
        return Decision(Verdict.SEND, event)

    def sent(self, event: E) -> None:
        """The device accepted ``event`` (the operation succeeded)."""
        self.sent_since.append(event)
        if self.last is not None:
            self.acted = (self.last, event)
        if event in (self.route.push, self.route.pull):
            self.delivered = self.pending = True
            self.asked = set()
        elif event in self.route.steps:  # sent only for a package taken as ours: it stays ours
            self.asked.add(event)
            self.delivered = True

    def refused(self, event: E, message: str) -> Decision[E]:
        """The device answered ``event`` with an error: fail if it was the route's last step to
        the goal in a phase where the object allows it (object 9 Activate), else look again."""
        obj = self.route.obj
        self.sent_since.append(event)
        for phase in self.phases if event in self.route.steps else ():
            t = obj.table[(phase, event)]
            if t is not None and t.refusal is None and t.to == self.route.goal:
                label = event.value.removeprefix("execute ").capitalize()
                return self._fail(f"{label} on {self.where} refused: {message}", None)
        return Decision(Verdict.WAIT)

    def stale(self) -> Decision[E]:
        """No progress for too long: what the table's ``STALE`` row prescribes for the last report."""
        obj = self.route.obj
        if self.last is None:
            return Decision(Verdict.WAIT)
        phase = min(self.phases, key=obj.order.index)
        recovery = obj.step(phase, obj.stale).recovery
        assert recovery is not None
        name = obj.describe(self.last.state, self.last.result)
        if recovery.how is Recovery.NONE:
            return Decision(Verdict.WAIT)
        if recovery.how is Recovery.GIVE_UP or self.attempt >= self.attempts:
            return self._fail(f"{self.where} made no progress in {name}", self.last.result)
        self.attempt, self.pending = self.attempt + 1, False
        if recovery.how is Recovery.RESET:
            return Decision(Verdict.SEND, cast(E, recovery.event), attempt=self.attempt - 1)
        return Decision(Verdict.BACKOFF, attempt=self.attempt - 1, message=f"{self.where}: no progress in {name}")

    def _retryable(self) -> frozenset[int]:
        table = self.route.obj.failure_results[self.route.download_failed]
        return frozenset(table[r] for r in self.route.retry)

    def _retryable_install(self) -> frozenset[int]:
        table = self.route.obj.failure_results[self.route.install_failed]
        return frozenset(table[r] for r in self.route.install_retry)

    def _install_failed(self, result: int, redeliver: bool) -> Decision[E]:
        """Install / Update ``install_attempt`` failed with ``result``: again (in place, or after a
        new delivery when the device dropped the package) within the bounds, else fail."""
        what = self.route.install_label.format(endpoint=self.endpoint, base=self.base)
        failure = f"{what} failed: Update Result {result} ({self.route.obj.results[result]})"
        again = result in self._retryable_install() and self.install_attempt < self.installs
        if again and (not redeliver or self.attempt < self.attempts):
            self.install_attempt += 1
            self.asked.discard(self.route.install)
            self.acted = None
            if redeliver:
                self.attempt, self.pending = self.attempt + 1, False
            return Decision(Verdict.BACKOFF, attempt=self.install_attempt - 1, result=result, message=failure)
        tries = self.install_attempt
        return self._fail(failure + (f" after {tries} attempts" if tries > 1 else ""), result)

    @staticmethod
    def _fail(message: str, result: int | None) -> Decision[E]:
        return Decision(Verdict.FAIL, message=message, result=result)
