"""The shared vocabulary of the object 5 and object 9 update state machines, sans-IO.

An update object (Firmware Update, object 5; Software Management, object 9) is described by
an ``UpdateObject``: its phases, its events, and a transition table ``(phase, event) ->
Transition | None`` that is plain data (a dict). A ``Transition`` names the next phase and the
actions that go with it, all data too:

``Set(resource, value)``
    the client sets a resource of the instance (Update State, Update Result, Activation State);
``Failed(resource)``
    the client sets Update Result to the object's value for the failure's ``Reason`` (the
    object's ``failure_results`` table, per event);
``Do(effect)``
    the client does something that is I/O (start a download, verify, install, activate,
    release the storage...);
``Refuse(answer, why)``
    the client refuses the operation with that CoAP response code (the operation is illegal in
    this phase);
``Recover(how, event)``
    only on the server-side ``STALE`` event: what the machine prescribes when a device makes no
    progress (deliver again, send ``event`` to reset the machine first, or give up).

``None`` in a table means the event cannot happen in that phase: a device never produces it,
and a server that sees a report implying it has found a protocol error.

A phase can be finer than the state the object reports (object 9 INSTALLING is reported as
DELIVERED until the install ends, as in AVSystem Anjay's sw_mgmt module); ``reported`` maps
every phase to the (state, activation) pair a device shows, so the tables are checked against
the specification's reported values.

What this module does not do: I/O of any kind, timers, asyncio, CoAP; it imports nothing from
the server, the store or the simulator. The object tables are in ``firmware`` and
``software``; what a server concludes from reports is in ``reconcile``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar


class Reason(enum.Enum):
    """Why a download, a verification or an install failed; each object maps it to its own
    Update Result (``UpdateObject.failure_results``)."""

    NOT_ENOUGH_STORAGE = "not-enough-storage"
    OUT_OF_MEMORY = "out-of-memory"
    CONNECTION_LOST = "connection-lost"
    INTEGRITY = "integrity"
    UNSUPPORTED = "unsupported"  # package type
    INVALID_URI = "invalid-uri"
    UNSUPPORTED_PROTOCOL = "unsupported-protocol"  # URI scheme the client cannot fetch
    INSTALL_FAILURE = "install-failure"
    DEVICE_ERROR = "device-error"  # anything else the device defines


class Effect(enum.Enum):
    """I/O a client performs on a transition (the adapter's business, not the table's)."""

    START_DOWNLOAD = "start download"  # take the written Package in, or fetch the Package URI
    CANCEL_DOWNLOAD = "cancel download"
    VERIFY = "verify"  # integrity (signature, hash) and type of the received package
    NAME_PACKAGE = "name package"  # show the package's own PkgName / PkgVersion
    INSTALL = "install"  # object 9 Install; object 5 Update (install and run it)
    CANCEL_INSTALL = "cancel install"  # an install in progress ends without effect
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    RELEASE = "release"  # drop the package from storage


class Answer(enum.Enum):
    """The CoAP response code of a refused operation."""

    BAD_REQUEST = "4.00"
    METHOD_NOT_ALLOWED = "4.05"


class Recovery(enum.Enum):
    RETRY = "retry"  # the machine is back at its start: deliver again (within the bound)
    RESET = "reset"  # send ``Recover.event`` to bring the machine back to its start, then retry
    GIVE_UP = "give up"  # no operation resets this phase: fail, naming the state
    NONE = "none"  # the goal phase: nothing is stale


@dataclass(frozen=True)
class Set:
    resource: int
    value: int | bool


@dataclass(frozen=True)
class Failed:
    """Set ``resource`` (Update Result) to the object's result for the event's ``Reason``."""

    resource: int


@dataclass(frozen=True)
class Do:
    effect: Effect


@dataclass(frozen=True)
class Refuse:
    answer: Answer
    why: str


@dataclass(frozen=True)
class Recover:
    how: Recovery
    event: enum.Enum | None = None


Action = Set | Failed | Do | Refuse | Recover
P = TypeVar("P", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


@dataclass(frozen=True)
class Transition(Generic[P]):
    to: P
    actions: tuple[Action, ...] = ()

    @property
    def refusal(self) -> Refuse | None:
        return next((a for a in self.actions if isinstance(a, Refuse)), None)

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(a.effect for a in self.actions if isinstance(a, Do))

    @property
    def sets(self) -> dict[int, int | bool]:
        return {a.resource: a.value for a in self.actions if isinstance(a, Set)}

    @property
    def recovery(self) -> Recover | None:
        return next((a for a in self.actions if isinstance(a, Recover)), None)


class Impossible(Exception):
    """The event cannot happen in the phase (the table says ``None``)."""


@dataclass(frozen=True)
class Operation:
    """The LwM2M operation a server event is: Write ``payload`` to, or Execute, ``resource``."""

    resource: int
    execute: bool = False
    payload: str = ""  # "package", "uri" or "empty" for writes
    argument: str = ""  # Execute arguments


@dataclass(frozen=True)
class UpdateObject(Generic[P, E]):
    """One update object as data: its table and the facts about it a server needs."""

    object_id: int
    state_label: str  # what the object calls its state resource ("State", "Update State")
    state_resource: int
    result_resource: int
    activation_resource: int | None
    table: Mapping[tuple[P, E], Transition[P] | None]
    reported: Mapping[P, tuple[int, bool]]  # phase -> (state value, Activation State)
    states: Mapping[int, str]  # state value -> the specification's name
    results: Mapping[int, str]  # every Update Result the specification defines -> its meaning
    legal_results: Mapping[int, frozenset[int]]  # state value -> results the specification allows in it
    failure_results: Mapping[E, Mapping[Reason, int]]  # failure event -> reason -> Update Result
    server_events: tuple[E, ...]  # operations a server performs
    device_events: tuple[E, ...]  # what happens on the device by itself
    stale: E  # the server-side "no progress" event
    initial: P
    order: tuple[P, ...]  # every phase, along the success path
    operations: Mapping[E, Operation]

    def step(self, phase: P, event: E, reason: Reason | None = None) -> Transition[P]:
        """The transition for ``event`` in ``phase``, with ``Failed`` resolved for ``reason``."""
        t = self.table[(phase, event)]
        if t is None:
            raise Impossible(f"object {self.object_id}: {event.name} cannot happen in {phase.name}")
        if not any(isinstance(a, Failed) for a in t.actions):
            return t
        if reason is None:
            raise ValueError(f"object {self.object_id}: {event.name} needs a failure reason")
        code = self.failure_results[event][reason]
        return Transition(t.to, tuple(Set(a.resource, code) if isinstance(a, Failed) else a for a in t.actions))

    def phases_reporting(self, state: int, active: bool) -> frozenset[P]:
        return frozenset(p for p, shown in self.reported.items() if shown == (state, active))

    def moves(self, phase: P, event: E) -> bool:
        """Whether ``event`` is possible in ``phase`` and not refused."""
        t = self.table[(phase, event)]
        return t is not None and t.refusal is None

    def reachable(self, start: Iterable[P], events: Iterable[E]) -> frozenset[P]:
        """Every phase ``events`` (any number, any order) can lead to from ``start``."""
        allowed = tuple(events)
        seen = set(start)
        todo = deque(seen)
        while todo:
            phase = todo.popleft()
            for event in allowed:
                t = self.table[(phase, event)]
                if t is not None and t.refusal is None and t.to not in seen:
                    seen.add(t.to)
                    todo.append(t.to)
        return frozenset(seen)

    def toward(self, phase: P, events: Iterable[E]) -> E | None:
        """Of ``events``, the one that moves ``phase`` furthest along the success path, if any."""
        rank = {p: i for i, p in enumerate(self.order)}
        best: tuple[int, E] | None = None
        for event in events:
            t = self.table[(phase, event)]
            if (t is not None and t.refusal is None and rank[t.to] > rank[phase]
                    and (best is None or rank[t.to] > best[0])):
                best = (rank[t.to], event)
        return None if best is None else best[1]

    def into(self, phase: P, target: P, events: Iterable[E]) -> E | None:
        """Of ``events``, the first that takes ``phase`` to ``target``."""
        for event in events:
            t = self.table[(phase, event)]
            if t is not None and t.refusal is None and t.to == target:
                return event
        return None

    def describe(self, state: int, result: int) -> str:
        return (f"{self.state_label} {state} ({self.states.get(state, 'undefined')}), "
                f"Update Result {result} ({self.results.get(result, 'undefined')})")

    def problem(self, state: int, result: int, active: bool) -> str | None:
        """What makes a report impossible by itself (values the object does not define or allow together)."""
        if state not in self.states:
            return f"{self.state_label} {state} is not defined by object {self.object_id}"
        if result not in self.results:
            return f"Update Result {result} is not defined by object {self.object_id}"
        if not self.phases_reporting(state, active):
            return (f"Activation State {str(active).lower()} cannot go with {self.state_label} {state} "
                    f"({self.states[state]})")
        if result not in self.legal_results[state]:
            return (f"Update Result {result} ({self.results[result]}) cannot go with "
                    f"{self.state_label} {state} ({self.states[state]})")
        return None
