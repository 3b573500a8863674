"""Object 9 (LwM2M Software Management, OMA object 9 version 1.1) as a transition table.

Sources: the object 9 definition (registry DDF 9.xml, version 1.1: Update State 0..4 INITIAL,
DOWNLOAD STARTED, DOWNLOADED, DELIVERED, INSTALLED; Update Result 0..3, 50..54, 56..59;
Install "only executable when the value of the State Resource is DELIVERED", "If executing the
Install Resource failed, the state remains at DELIVERED", "After executing the UnInstall
Resource, the state changes to INITIAL" and resets Update Result to 0; Activate / Deactivate on
an INSTALLED package, Activation State true only in the ACTIVE state of the activation machine)
and the package installation state machine of OMA-TS-LWM2M_SwMgmt 5.1.2 it refers to.

Where the definition is silent, the table follows a real client, AVSystem Anjay's sw_mgmt
module: an operation illegal in the current state is refused with 4.05 Method Not Allowed
(Write Package / Package URI outside INITIAL, Install outside DELIVERED, Uninstall before
DELIVERED, Activate / Deactivate outside INSTALLED); an empty Package URI sets Update Result 56
and is answered 4.00; an install in progress is a phase of its own (INSTALLING) that still
reports DELIVERED; Uninstall with argument 1 (ForUpdate) needs INSTALLED. Choices of this
device model beyond both: DELIVERED reports Update Result 3 ("successfully downloaded and
package integrity verified"); a reboot loses a download in progress (Update Result 52) and an
install in progress (back to DELIVERED), and keeps DOWNLOADED (verified again), DELIVERED,
INSTALLED and the activation; ``PREEMPTED`` is the device activating another instance in this
one's place (it runs one model at a time).

This module is data. It does no I/O; ``machine`` says what the actions mean.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .machine import (
    Action,
    Answer,
    Do,
    Effect,
    Failed,
    Operation,
    Reason,
    Recover,
    Recovery,
    Refuse,
    Set,
    Transition,
    UpdateObject,
)


class Phase9(enum.Enum):
    INITIAL = "INITIAL"
    DOWNLOAD_STARTED = "DOWNLOAD STARTED"
    DOWNLOADED = "DOWNLOADED"
    DELIVERED = "DELIVERED"
    INSTALLING = "INSTALLING"  # reported as DELIVERED
    INSTALLED = "INSTALLED"  # Activation State false
    ACTIVE = "ACTIVE"  # INSTALLED, Activation State true


class UpdateState(enum.IntEnum):
    INITIAL = 0
    DOWNLOAD_STARTED = 1
    DOWNLOADED = 2
    DELIVERED = 3
    INSTALLED = 4


class Result9(enum.IntEnum):
    INITIAL = 0
    DOWNLOADING = 1
    INSTALLED = 2
    DOWNLOADED_VERIFIED = 3
    NOT_ENOUGH_STORAGE = 50
    OUT_OF_MEMORY = 51
    CONNECTION_LOST = 52
    INTEGRITY_FAILURE = 53
    UNSUPPORTED_PACKAGE_TYPE = 54
    INVALID_URI = 56
    DEVICE_ERROR = 57
    INSTALL_FAILURE = 58
    UNINSTALL_FAILURE = 59


class Res9(enum.IntEnum):
    PKG_NAME = 0
    PKG_VERSION = 1
    PACKAGE = 2
    PACKAGE_URI = 3
    INSTALL = 4
    UNINSTALL = 6
    UPDATE_STATE = 7
    UPDATE_RESULT = 9
    ACTIVATE = 10
    DEACTIVATE = 11
    ACTIVATION_STATE = 12
    STATUS_REASON = 16


class Event9(enum.Enum):
    # a server's operations
    WRITE_PACKAGE = "write Package"  # /9/x/2 (Block1 push, complete)
    WRITE_PACKAGE_URI = "write Package URI"  # /9/x/3
    WRITE_EMPTY_URI = "write an empty Package URI"
    EXECUTE_INSTALL = "execute Install"  # /9/x/4
    EXECUTE_UNINSTALL = "execute Uninstall"  # /9/x/6, no argument or 0
    EXECUTE_UNINSTALL_FOR_UPDATE = "execute Uninstall ForUpdate"  # /9/x/6 argument 1
    EXECUTE_ACTIVATE = "execute Activate"  # /9/x/10
    EXECUTE_DEACTIVATE = "execute Deactivate"  # /9/x/11
    # what happens on the device
    DOWNLOAD_FINISHED = "download finished"
    DOWNLOAD_FAILED = "download failed"
    VERIFIED = "verified"
    VERIFY_FAILED = "verification failed"
    INSTALL_OK = "install finished"
    INSTALL_FAILED = "install failed"
    PREEMPTED = "another instance activated"
    REBOOT = "reboot"
    # the server's clock
    STALE = "no progress"


P, E, S, R = Phase9, Event9, UpdateState, Res9
SERVER = (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI, E.WRITE_EMPTY_URI, E.EXECUTE_INSTALL, E.EXECUTE_UNINSTALL,
          E.EXECUTE_UNINSTALL_FOR_UPDATE, E.EXECUTE_ACTIVATE, E.EXECUTE_DEACTIVATE)
DEVICE = (E.DOWNLOAD_FINISHED, E.DOWNLOAD_FAILED, E.VERIFIED, E.VERIFY_FAILED, E.INSTALL_OK, E.INSTALL_FAILED,
          E.PREEMPTED, E.REBOOT)
NEEDS = {  # why an operation is refused where the table does not allow it
    E.WRITE_PACKAGE: "the Package is written in Update State INITIAL only",
    E.WRITE_PACKAGE_URI: "the Package URI is written in Update State INITIAL only",
    E.WRITE_EMPTY_URI: "the Package URI is written in Update State INITIAL only",
    E.EXECUTE_INSTALL: "Install needs Update State DELIVERED",
    E.EXECUTE_UNINSTALL: "Uninstall needs a DELIVERED or INSTALLED package",
    E.EXECUTE_UNINSTALL_FOR_UPDATE: "Uninstall ForUpdate needs an INSTALLED package",
    E.EXECUTE_ACTIVATE: "Activate needs Update State INSTALLED",
    E.EXECUTE_DEACTIVATE: "Deactivate needs Update State INSTALLED",
}


def _to(phase: Phase9, *actions: Action) -> Transition[Phase9]:
    return Transition(phase, actions)


def _state(s: UpdateState) -> Set:
    return Set(R.UPDATE_STATE, int(s))


def _result(r: Result9) -> Set:
    return Set(R.UPDATE_RESULT, int(r))


FAILED = Failed(R.UPDATE_RESULT)
ACTIVE, INACTIVE = Set(R.ACTIVATION_STATE, True), Set(R.ACTIVATION_STATE, False)
RELEASE = Do(Effect.RELEASE)
UNINSTALLED = (RELEASE, _result(Result9.INITIAL), _state(S.INITIAL))
DOWNLOAD = (_result(Result9.DOWNLOADING), _state(S.DOWNLOAD_STARTED), Do(Effect.START_DOWNLOAD))

TABLE: dict[tuple[Phase9, Event9], Transition[Phase9] | None] = {
    # defaults, overridden below: a server operation is refused with 4.05 (as Anjay's sw_mgmt);
    # a device event cannot happen; a reboot and another instance's activation change nothing
    **{(p, e): _to(p, Refuse(Answer.METHOD_NOT_ALLOWED, NEEDS[e])) for p in Phase9 for e in SERVER},
    **{(p, e): None for p in Phase9 for e in DEVICE},
    **{(p, e): _to(p) for p in Phase9 for e in (E.PREEMPTED, E.REBOOT)},

    (P.INITIAL, E.WRITE_PACKAGE): _to(P.DOWNLOAD_STARTED, *DOWNLOAD),
    (P.INITIAL, E.WRITE_PACKAGE_URI): _to(P.DOWNLOAD_STARTED, *DOWNLOAD),
    (P.INITIAL, E.WRITE_EMPTY_URI): _to(P.INITIAL, _result(Result9.INVALID_URI),
                                        Refuse(Answer.BAD_REQUEST, "an empty Package URI names nothing to download")),
    (P.INITIAL, E.STALE): _to(P.INITIAL, Recover(Recovery.RETRY)),

    (P.DOWNLOAD_STARTED, E.DOWNLOAD_FINISHED): _to(P.DOWNLOADED, _state(S.DOWNLOADED), Do(Effect.VERIFY)),
    (P.DOWNLOAD_STARTED, E.DOWNLOAD_FAILED): _to(P.INITIAL, RELEASE, FAILED, _state(S.INITIAL)),
    (P.DOWNLOAD_STARTED, E.REBOOT): _to(P.INITIAL, RELEASE, _result(Result9.CONNECTION_LOST), _state(S.INITIAL)),
    (P.DOWNLOAD_STARTED, E.STALE): _to(P.DOWNLOAD_STARTED, Recover(Recovery.GIVE_UP)),

    (P.DOWNLOADED, E.VERIFIED): _to(P.DELIVERED, Do(Effect.NAME_PACKAGE), _result(Result9.DOWNLOADED_VERIFIED),
                                    _state(S.DELIVERED)),
    (P.DOWNLOADED, E.VERIFY_FAILED): _to(P.INITIAL, RELEASE, FAILED, _state(S.INITIAL)),
    (P.DOWNLOADED, E.REBOOT): _to(P.DOWNLOADED, Do(Effect.VERIFY)),
    (P.DOWNLOADED, E.STALE): _to(P.DOWNLOADED, Recover(Recovery.GIVE_UP)),

    (P.DELIVERED, E.EXECUTE_INSTALL): _to(P.INSTALLING, Do(Effect.INSTALL)),
    (P.DELIVERED, E.EXECUTE_UNINSTALL): _to(P.INITIAL, *UNINSTALLED),
    (P.DELIVERED, E.STALE): _to(P.DELIVERED, Recover(Recovery.RESET, E.EXECUTE_UNINSTALL)),

    (P.INSTALLING, E.EXECUTE_UNINSTALL): _to(P.INITIAL, Do(Effect.CANCEL_INSTALL), *UNINSTALLED),
    (P.INSTALLING, E.INSTALL_OK): _to(P.INSTALLED, _result(Result9.INSTALLED), _state(S.INSTALLED)),
    (P.INSTALLING, E.INSTALL_FAILED): _to(P.DELIVERED, FAILED),
    (P.INSTALLING, E.REBOOT): _to(P.DELIVERED),
    (P.INSTALLING, E.STALE): _to(P.INSTALLING, Recover(Recovery.RESET, E.EXECUTE_UNINSTALL)),

    (P.INSTALLED, E.EXECUTE_UNINSTALL): _to(P.INITIAL, *UNINSTALLED),
    (P.INSTALLED, E.EXECUTE_UNINSTALL_FOR_UPDATE): _to(P.INITIAL, *UNINSTALLED),
    (P.INSTALLED, E.EXECUTE_ACTIVATE): _to(P.ACTIVE, ACTIVE, Do(Effect.ACTIVATE)),
    (P.INSTALLED, E.EXECUTE_DEACTIVATE): _to(P.INSTALLED),
    (P.INSTALLED, E.STALE): _to(P.INSTALLED, Recover(Recovery.RESET, E.EXECUTE_UNINSTALL)),

    (P.ACTIVE, E.EXECUTE_UNINSTALL): _to(P.INITIAL, Do(Effect.DEACTIVATE), INACTIVE, *UNINSTALLED),
    (P.ACTIVE, E.EXECUTE_UNINSTALL_FOR_UPDATE): _to(P.INITIAL, Do(Effect.DEACTIVATE), INACTIVE, *UNINSTALLED),
    (P.ACTIVE, E.EXECUTE_ACTIVATE): _to(P.ACTIVE),
    (P.ACTIVE, E.EXECUTE_DEACTIVATE): _to(P.INSTALLED, INACTIVE, Do(Effect.DEACTIVATE)),
    (P.ACTIVE, E.PREEMPTED): _to(P.INSTALLED, INACTIVE),
    (P.ACTIVE, E.STALE): _to(P.ACTIVE, Recover(Recovery.NONE)),
}

REPORTED: dict[Phase9, tuple[int, bool]] = {
    P.INITIAL: (S.INITIAL, False), P.DOWNLOAD_STARTED: (S.DOWNLOAD_STARTED, False),
    P.DOWNLOADED: (S.DOWNLOADED, False), P.DELIVERED: (S.DELIVERED, False), P.INSTALLING: (S.DELIVERED, False),
    P.INSTALLED: (S.INSTALLED, False), P.ACTIVE: (S.INSTALLED, True),
}
STATES: dict[int, str] = {S.INITIAL: "INITIAL", S.DOWNLOAD_STARTED: "DOWNLOAD STARTED", S.DOWNLOADED: "DOWNLOADED",
          S.DELIVERED: "DELIVERED", S.INSTALLED: "INSTALLED"}
RESULTS = {0: "initial", 1: "downloading", 2: "installed", 3: "downloaded and verified",
           50: "not enough storage", 51: "out of memory", 52: "connection lost during download",
           53: "package integrity check failure", 54: "unsupported package type", 56: "invalid URI",
           57: "device-defined update error", 58: "software installation failure",
           59: "software uninstallation failure"}
_FAILURES = frozenset({50, 51, 52, 53, 54, 56, 57, 58, 59})
LEGAL_RESULTS: dict[int, frozenset[int]] = {
    # INITIAL: before any download, after a failed one, after Uninstall (Anjay keeps the result there)
    S.INITIAL: frozenset({0}) | _FAILURES,
    S.DOWNLOAD_STARTED: frozenset({0, 1}),  # 0: reset "prior to download", 1: downloading
    S.DOWNLOADED: frozenset({0, 1, 3}),
    S.DELIVERED: frozenset({0, 1, 3, 51, 57, 58}),  # after a failed Install the state remains DELIVERED
    S.INSTALLED: frozenset({0, 2, 59}),
}
DOWNLOAD_RESULTS: Mapping[Reason, int] = {
    Reason.NOT_ENOUGH_STORAGE: 50, Reason.OUT_OF_MEMORY: 51, Reason.CONNECTION_LOST: 52, Reason.INTEGRITY: 53,
    Reason.UNSUPPORTED: 54, Reason.INVALID_URI: 56, Reason.UNSUPPORTED_PROTOCOL: 56, Reason.DEVICE_ERROR: 57,
    Reason.INSTALL_FAILURE: 57,
}
INSTALL_RESULTS: Mapping[Reason, int] = {**{r: 58 for r in Reason}, Reason.OUT_OF_MEMORY: 51, Reason.DEVICE_ERROR: 57}
OPERATIONS = {
    E.WRITE_PACKAGE: Operation(R.PACKAGE, payload="package"),
    E.WRITE_PACKAGE_URI: Operation(R.PACKAGE_URI, payload="uri"),
    E.WRITE_EMPTY_URI: Operation(R.PACKAGE_URI, payload="empty"),
    E.EXECUTE_INSTALL: Operation(R.INSTALL, execute=True),
    E.EXECUTE_UNINSTALL: Operation(R.UNINSTALL, execute=True),
    E.EXECUTE_UNINSTALL_FOR_UPDATE: Operation(R.UNINSTALL, execute=True, argument="1"),
    E.EXECUTE_ACTIVATE: Operation(R.ACTIVATE, execute=True),
    E.EXECUTE_DEACTIVATE: Operation(R.DEACTIVATE, execute=True),
}

SOFTWARE: UpdateObject[Phase9, Event9] = UpdateObject(
    object_id=9, state_label="Update State", state_resource=R.UPDATE_STATE, result_resource=R.UPDATE_RESULT,
    activation_resource=R.ACTIVATION_STATE, table=TABLE, reported=REPORTED, states=STATES, results=RESULTS,
    legal_results=LEGAL_RESULTS,
    failure_results={E.DOWNLOAD_FAILED: DOWNLOAD_RESULTS, E.VERIFY_FAILED: DOWNLOAD_RESULTS,
                     E.INSTALL_FAILED: INSTALL_RESULTS},
    server_events=SERVER, device_events=DEVICE, stale=E.STALE, initial=P.INITIAL,
    order=(P.INITIAL, P.DOWNLOAD_STARTED, P.DOWNLOADED, P.DELIVERED, P.INSTALLING, P.INSTALLED, P.ACTIVE),
    operations=OPERATIONS,
)
