"""Object 5 (Firmware Update) as a transition table.

Sources: OMA LwM2M Core TS 1.1 Appendix E.6 (the Firmware Update object and its state machine,
E.6.1: State 0..3 Idle, Downloading, Downloaded, Updating; Update Result 0..9) and the object 5
definition version 1.1 (registry DDF 5.xml), which adds Update Result 10 (cancelled) and 11
(deferred) and the Cancel resource. The transitions: writing the Package or the Package URI
starts the download, Update Result "MUST be reset to Initial value" once a download or an
update is initiated; a completed, verified download is Downloaded; "Writing an empty string to
Package URI Resource or setting the Package Resource to NULL ('\\0'), resets the Firmware Update
State Machine: the State Resource value is set to Idle and the Update Result Resource value is
set to 0", and the device removes the image; Update "is only executable when the value of the
State Resource is Downloaded" and moves to Updating; success is Idle with Update Result 1; a
failed update "may return to either Downloaded or Idle depending on the underlying reason of
update failure, e.g. Integrity Check Failure results in the client moving to the Idle state";
Cancel sets Update Result 10 and State 0 and MUST be refused with Method Not Allowed while
updating.

Where the specification is silent, the table follows a real client, AVSystem Anjay's
fw_update module: Update outside Downloaded, and every write while Updating, is refused with
4.05; a non-empty Package or Package URI write while Downloading or Downloaded is refused with
4.00. (Eclipse Wakaama's example client answers 4.00 to an Update it cannot do; its object 5 is
a stub that never leaves Downloading, which a server sees as a ``STALE`` phase.) Choices of this
device model beyond both: Cancel in Idle is refused with 4.05 (nothing to cancel; the definition
only says Cancel works before the Update process starts); verification is a phase of its own
(VERIFYING, reported as Downloading); a failed update keeps the package (Downloaded); a reboot
loses a download in progress (Idle, Update Result 4) and an update in progress (back to
Downloaded, the package is still in flash). Deferred updates (Update Result 11) are not modelled:
this device has no user to defer them.

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


class Phase5(enum.Enum):
    IDLE = "Idle"
    DOWNLOADING = "Downloading"
    VERIFYING = "Verifying"  # reported as Downloading
    DOWNLOADED = "Downloaded"
    UPDATING = "Updating"


class State5(enum.IntEnum):
    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2
    UPDATING = 3


class Result5(enum.IntEnum):
    INITIAL = 0
    SUCCESS = 1
    NOT_ENOUGH_FLASH = 2
    OUT_OF_RAM = 3
    CONNECTION_LOST = 4
    INTEGRITY_FAILURE = 5
    UNSUPPORTED_PACKAGE_TYPE = 6
    INVALID_URI = 7
    UPDATE_FAILED = 8
    UNSUPPORTED_PROTOCOL = 9
    CANCELLED = 10  # object 5 version 1.1
    DEFERRED = 11  # object 5 version 1.1


class Res5(enum.IntEnum):
    PACKAGE = 0
    PACKAGE_URI = 1
    UPDATE = 2
    STATE = 3
    UPDATE_RESULT = 5
    PKG_NAME = 6
    PKG_VERSION = 7
    CANCEL = 10


class Event5(enum.Enum):
    # a server's operations
    WRITE_PACKAGE = "write Package"  # /5/0/0 (Block1 push, complete)
    WRITE_PACKAGE_URI = "write Package URI"  # /5/0/1
    WRITE_EMPTY_PACKAGE = "write Package NULL"  # a single '\0' (or nothing)
    WRITE_EMPTY_URI = "write an empty Package URI"
    EXECUTE_UPDATE = "execute Update"  # /5/0/2
    EXECUTE_CANCEL = "execute Cancel"  # /5/0/10
    # what happens on the device
    DOWNLOAD_FINISHED = "download finished"
    DOWNLOAD_FAILED = "download failed"
    VERIFIED = "verified"
    VERIFY_FAILED = "verification failed"
    UPDATE_OK = "update finished"
    UPDATE_FAILED = "update failed"
    REBOOT = "reboot"
    # the server's clock
    STALE = "no progress"


P, E, S, R = Phase5, Event5, State5, Res5
SERVER = (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI, E.WRITE_EMPTY_PACKAGE, E.WRITE_EMPTY_URI, E.EXECUTE_UPDATE,
          E.EXECUTE_CANCEL)
DEVICE = (E.DOWNLOAD_FINISHED, E.DOWNLOAD_FAILED, E.VERIFIED, E.VERIFY_FAILED, E.UPDATE_OK, E.UPDATE_FAILED,
          E.REBOOT)
WRITES = (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI, E.WRITE_EMPTY_PACKAGE, E.WRITE_EMPTY_URI)
RESETS = (E.WRITE_EMPTY_PACKAGE, E.WRITE_EMPTY_URI)
BUSY = "a new package is written in State Idle only (write an empty Package URI to reset first)"


def _to(phase: Phase5, *actions: Action) -> Transition[Phase5]:
    return Transition(phase, actions)


def _state(s: State5) -> Set:
    return Set(R.STATE, int(s))


def _result(r: Result5) -> Set:
    return Set(R.UPDATE_RESULT, int(r))


def _refuse(phase: Phase5, answer: Answer, why: str) -> Transition[Phase5]:
    return _to(phase, Refuse(answer, why))


FAILED = Failed(R.UPDATE_RESULT)
RELEASE = Do(Effect.RELEASE)
TO_IDLE = (RELEASE, _result(Result5.INITIAL), _state(S.IDLE))
CANCELLED = (RELEASE, _result(Result5.CANCELLED), _state(S.IDLE))
DOWNLOAD = (_result(Result5.INITIAL), _state(S.DOWNLOADING), Do(Effect.START_DOWNLOAD))
RESET = Recover(Recovery.RESET, E.WRITE_EMPTY_URI)
NOT_DOWNLOADED = "Update needs State Downloaded"

TABLE: dict[tuple[Phase5, Event5], Transition[Phase5] | None] = {
    # defaults, overridden below: an Update or Cancel the state does not allow is refused with
    # 4.05; a device event cannot happen; a reboot changes nothing
    **{(p, E.EXECUTE_UPDATE): _refuse(p, Answer.METHOD_NOT_ALLOWED, NOT_DOWNLOADED) for p in Phase5},
    **{(p, e): None for p in Phase5 for e in DEVICE},
    **{(p, E.REBOOT): _to(p) for p in Phase5},

    (P.IDLE, E.WRITE_PACKAGE): _to(P.DOWNLOADING, *DOWNLOAD),
    (P.IDLE, E.WRITE_PACKAGE_URI): _to(P.DOWNLOADING, *DOWNLOAD),
    **{(P.IDLE, e): _to(P.IDLE, *TO_IDLE) for e in RESETS},
    (P.IDLE, E.EXECUTE_CANCEL): _refuse(P.IDLE, Answer.METHOD_NOT_ALLOWED, "nothing to cancel in State Idle"),
    (P.IDLE, E.STALE): _to(P.IDLE, Recover(Recovery.RETRY)),

    **{(P.DOWNLOADING, e): _refuse(P.DOWNLOADING, Answer.BAD_REQUEST, BUSY)
       for e in (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI)},
    **{(P.DOWNLOADING, e): _to(P.IDLE, Do(Effect.CANCEL_DOWNLOAD), *TO_IDLE) for e in RESETS},
    (P.DOWNLOADING, E.EXECUTE_CANCEL): _to(P.IDLE, Do(Effect.CANCEL_DOWNLOAD), *CANCELLED),
    (P.DOWNLOADING, E.DOWNLOAD_FINISHED): _to(P.VERIFYING, Do(Effect.VERIFY)),
    (P.DOWNLOADING, E.DOWNLOAD_FAILED): _to(P.IDLE, RELEASE, FAILED, _state(S.IDLE)),
    (P.DOWNLOADING, E.REBOOT): _to(P.IDLE, RELEASE, _result(Result5.CONNECTION_LOST), _state(S.IDLE)),
    (P.DOWNLOADING, E.STALE): _to(P.DOWNLOADING, RESET),

    **{(P.VERIFYING, e): _refuse(P.VERIFYING, Answer.BAD_REQUEST, BUSY)
       for e in (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI)},
    **{(P.VERIFYING, e): _to(P.IDLE, *TO_IDLE) for e in RESETS},
    (P.VERIFYING, E.EXECUTE_CANCEL): _to(P.IDLE, *CANCELLED),
    (P.VERIFYING, E.VERIFIED): _to(P.DOWNLOADED, Do(Effect.NAME_PACKAGE), _result(Result5.INITIAL),
                                   _state(S.DOWNLOADED)),
    (P.VERIFYING, E.VERIFY_FAILED): _to(P.IDLE, RELEASE, FAILED, _state(S.IDLE)),
    (P.VERIFYING, E.REBOOT): _to(P.IDLE, RELEASE, _result(Result5.CONNECTION_LOST), _state(S.IDLE)),
    (P.VERIFYING, E.STALE): _to(P.VERIFYING, RESET),

    **{(P.DOWNLOADED, e): _refuse(P.DOWNLOADED, Answer.BAD_REQUEST, BUSY)
       for e in (E.WRITE_PACKAGE, E.WRITE_PACKAGE_URI)},
    **{(P.DOWNLOADED, e): _to(P.IDLE, *TO_IDLE) for e in RESETS},
    (P.DOWNLOADED, E.EXECUTE_UPDATE): _to(P.UPDATING, _result(Result5.INITIAL), _state(S.UPDATING),
                                          Do(Effect.INSTALL)),
    (P.DOWNLOADED, E.EXECUTE_CANCEL): _to(P.IDLE, *CANCELLED),
    (P.DOWNLOADED, E.STALE): _to(P.DOWNLOADED, RESET),

    **{(P.UPDATING, e): _refuse(P.UPDATING, Answer.METHOD_NOT_ALLOWED, "no write while the firmware is updating")
       for e in WRITES},
    (P.UPDATING, E.EXECUTE_CANCEL): _refuse(P.UPDATING, Answer.METHOD_NOT_ALLOWED,
                                            "the update has started: it cannot be cancelled"),
    (P.UPDATING, E.UPDATE_OK): _to(P.IDLE, _result(Result5.SUCCESS), _state(S.IDLE)),
    (P.UPDATING, E.UPDATE_FAILED): _to(P.DOWNLOADED, FAILED, _state(S.DOWNLOADED)),
    (P.UPDATING, E.VERIFY_FAILED): _to(P.IDLE, RELEASE, FAILED, _state(S.IDLE)),  # an integrity check at update time
    (P.UPDATING, E.REBOOT): _to(P.DOWNLOADED, _state(S.DOWNLOADED)),
    (P.UPDATING, E.STALE): _to(P.UPDATING, Recover(Recovery.GIVE_UP)),
}

REPORTED: dict[Phase5, tuple[int, bool]] = {
    P.IDLE: (S.IDLE, False), P.DOWNLOADING: (S.DOWNLOADING, False), P.VERIFYING: (S.DOWNLOADING, False),
    P.DOWNLOADED: (S.DOWNLOADED, False), P.UPDATING: (S.UPDATING, False),
}
STATES: dict[int, str] = {S.IDLE: "Idle", S.DOWNLOADING: "Downloading", S.DOWNLOADED: "Downloaded",
                          S.UPDATING: "Updating"}
RESULTS = {0: "initial", 1: "firmware updated successfully", 2: "not enough flash memory",
           3: "out of RAM during download", 4: "connection lost during download", 5: "integrity check failure",
           6: "unsupported package type", 7: "invalid URI", 8: "firmware update failed", 9: "unsupported protocol",
           10: "firmware update cancelled", 11: "firmware update deferred"}
LEGAL_RESULTS: dict[int, frozenset[int]] = {
    S.IDLE: frozenset(range(11)),  # initial, success, every failure that ends in Idle, cancelled
    S.DOWNLOADING: frozenset({0}),  # reset when the download is initiated
    S.DOWNLOADED: frozenset({0, 2, 3, 5, 6, 8, 11}),  # a failed update may return to Downloaded; deferred
    S.UPDATING: frozenset({0}),  # reset when the update is initiated
}
DOWNLOAD_RESULTS: Mapping[Reason, int] = {
    Reason.NOT_ENOUGH_STORAGE: 2, Reason.OUT_OF_MEMORY: 3, Reason.CONNECTION_LOST: 4, Reason.INTEGRITY: 5,
    Reason.UNSUPPORTED: 6, Reason.INVALID_URI: 7, Reason.UNSUPPORTED_PROTOCOL: 9, Reason.INSTALL_FAILURE: 8,
    Reason.DEVICE_ERROR: 8,
}
UPDATE_RESULTS: Mapping[Reason, int] = {**{r: 8 for r in Reason}, Reason.NOT_ENOUGH_STORAGE: 2,
                                        Reason.OUT_OF_MEMORY: 3, Reason.UNSUPPORTED: 6}
OPERATIONS = {
    E.WRITE_PACKAGE: Operation(R.PACKAGE, payload="package"),
    E.WRITE_PACKAGE_URI: Operation(R.PACKAGE_URI, payload="uri"),
    E.WRITE_EMPTY_PACKAGE: Operation(R.PACKAGE, payload="empty"),
    E.WRITE_EMPTY_URI: Operation(R.PACKAGE_URI, payload="empty"),
    E.EXECUTE_UPDATE: Operation(R.UPDATE, execute=True),
    E.EXECUTE_CANCEL: Operation(R.CANCEL, execute=True),
}

FIRMWARE: UpdateObject[Phase5, Event5] = UpdateObject(
    object_id=5, state_label="State", state_resource=R.STATE, result_resource=R.UPDATE_RESULT,
    activation_resource=None, table=TABLE, reported=REPORTED, states=STATES, results=RESULTS,
    legal_results=LEGAL_RESULTS,
    failure_results={E.DOWNLOAD_FAILED: DOWNLOAD_RESULTS, E.VERIFY_FAILED: DOWNLOAD_RESULTS,
                     E.UPDATE_FAILED: UPDATE_RESULTS},
    server_events=SERVER, device_events=DEVICE, stale=E.STALE, initial=P.IDLE,
    order=(P.IDLE, P.DOWNLOADING, P.VERIFYING, P.DOWNLOADED, P.UPDATING),
    operations=OPERATIONS,
)
