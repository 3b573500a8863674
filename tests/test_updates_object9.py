"""Object 9 (Software Management) transition table, every phase x every event.

The expected table below is written out row by row from the object 9 definition (OMA registry
9.xml, object version 1.1: resource 7 Update State and its notes on Install / Uninstall,
resource 9 Update Result, resources 10-12 Activate / Deactivate / Activation State) and the
package installation state machine of OMA-TS-LWM2M_SwMgmt 5.1.2, with the refusals of a real
client where the definition is silent (AVSystem Anjay's sw_mgmt module: 4.05 for an operation
the state does not allow, 4.00 and Update Result 56 for an empty Package URI). It is compared
with ``lwm2m.updates.software.TABLE``, which is built differently (defaults plus
overrides). The enumerations are also checked against the DDF file the server ships.

Columns: phase, event, then ``impossible`` or: next phase, Update State set (``.``: unchanged),
Update Result set (``F``: the failure's own result, see ``FAILURE_RESULTS``), Activation State
set (on / off / ``.``), effects in order (``-``: none; on ``STALE`` the recovery), the answer to
a server operation (2.04 accepted, 4.00 / 4.05 refused; ``-`` for a device event).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import lwm2m.model as ddf_model
from lwm2m.updates import (
    SOFTWARE,
    Event9,
    Impossible,
    Phase9,
    Reason,
    Recovery,
    Result9,
    UpdateState,
)
from lwm2m.updates.software import Res9

W = ["WRITE_PACKAGE", "WRITE_PACKAGE_URI", "WRITE_EMPTY_URI"]
X = ["EXECUTE_INSTALL", "EXECUTE_UNINSTALL", "EXECUTE_UNINSTALL_FOR_UPDATE", "EXECUTE_ACTIVATE", "EXECUTE_DEACTIVATE"]
D = ["DOWNLOAD_FINISHED", "DOWNLOAD_FAILED", "VERIFIED", "VERIFY_FAILED", "INSTALL_OK", "INSTALL_FAILED"]


def refused(phase: str, events: list[str], answer: str = "4.05") -> str:
    return "\n".join(f"{phase} {e} {phase} . . . - {answer}" for e in events)


def impossible(phase: str, events: list[str]) -> str:
    return "\n".join(f"{phase} {e} impossible" for e in events)


EXPECTED = f"""
INITIAL WRITE_PACKAGE DOWNLOAD_STARTED 1 1 . START_DOWNLOAD 2.04
INITIAL WRITE_PACKAGE_URI DOWNLOAD_STARTED 1 1 . START_DOWNLOAD 2.04
INITIAL WRITE_EMPTY_URI INITIAL . 56 . - 4.00
{refused("INITIAL", X)}
{impossible("INITIAL", D)}
INITIAL PREEMPTED INITIAL . . . - -
INITIAL REBOOT INITIAL . . . - -
INITIAL STALE INITIAL . . . RETRY -

{refused("DOWNLOAD_STARTED", W + X)}
DOWNLOAD_STARTED DOWNLOAD_FINISHED DOWNLOADED 2 . . VERIFY -
DOWNLOAD_STARTED DOWNLOAD_FAILED INITIAL 0 F . RELEASE -
{impossible("DOWNLOAD_STARTED", D[2:])}
DOWNLOAD_STARTED PREEMPTED DOWNLOAD_STARTED . . . - -
DOWNLOAD_STARTED REBOOT INITIAL 0 52 . RELEASE -
DOWNLOAD_STARTED STALE DOWNLOAD_STARTED . . . GIVE_UP -

{refused("DOWNLOADED", W + X)}
{impossible("DOWNLOADED", D[:2] + D[4:])}
DOWNLOADED VERIFIED DELIVERED 3 3 . NAME_PACKAGE -
DOWNLOADED VERIFY_FAILED INITIAL 0 F . RELEASE -
DOWNLOADED PREEMPTED DOWNLOADED . . . - -
DOWNLOADED REBOOT DOWNLOADED . . . VERIFY -
DOWNLOADED STALE DOWNLOADED . . . GIVE_UP -

{refused("DELIVERED", W)}
DELIVERED EXECUTE_INSTALL INSTALLING . . . INSTALL 2.04
DELIVERED EXECUTE_UNINSTALL INITIAL 0 0 . RELEASE 2.04
{refused("DELIVERED", X[2:])}
{impossible("DELIVERED", D)}
DELIVERED PREEMPTED DELIVERED . . . - -
DELIVERED REBOOT DELIVERED . . . - -
DELIVERED STALE DELIVERED . . . RESET:EXECUTE_UNINSTALL -

{refused("INSTALLING", W + X[:1])}
INSTALLING EXECUTE_UNINSTALL INITIAL 0 0 . CANCEL_INSTALL,RELEASE 2.04
{refused("INSTALLING", X[2:])}
{impossible("INSTALLING", D[:4])}
INSTALLING INSTALL_OK INSTALLED 4 2 . - -
INSTALLING INSTALL_FAILED DELIVERED . F . - -
INSTALLING PREEMPTED INSTALLING . . . - -
INSTALLING REBOOT DELIVERED . . . - -
INSTALLING STALE INSTALLING . . . RESET:EXECUTE_UNINSTALL -

{refused("INSTALLED", W + X[:1])}
INSTALLED EXECUTE_UNINSTALL INITIAL 0 0 . RELEASE 2.04
INSTALLED EXECUTE_UNINSTALL_FOR_UPDATE INITIAL 0 0 . RELEASE 2.04
INSTALLED EXECUTE_ACTIVATE ACTIVE . . on ACTIVATE 2.04
INSTALLED EXECUTE_DEACTIVATE INSTALLED . . . - 2.04
{impossible("INSTALLED", D)}
INSTALLED PREEMPTED INSTALLED . . . - -
INSTALLED REBOOT INSTALLED . . . - -
INSTALLED STALE INSTALLED . . . RESET:EXECUTE_UNINSTALL -

{refused("ACTIVE", W + X[:1])}
ACTIVE EXECUTE_UNINSTALL INITIAL 0 0 off DEACTIVATE,RELEASE 2.04
ACTIVE EXECUTE_UNINSTALL_FOR_UPDATE INITIAL 0 0 off DEACTIVATE,RELEASE 2.04
ACTIVE EXECUTE_ACTIVATE ACTIVE . . . - 2.04
ACTIVE EXECUTE_DEACTIVATE INSTALLED . . off DEACTIVATE 2.04
{impossible("ACTIVE", D)}
ACTIVE PREEMPTED INSTALLED . . off - -
ACTIVE REBOOT ACTIVE . . . - -
ACTIVE STALE ACTIVE . . . NONE -
"""
ROWS = [line.split() for line in EXPECTED.strip().splitlines() if line.strip()]

# The Update Result of a failure, per event and reason (9.xml resource 9: 50 not enough storage,
# 51 out of memory, 52 connection lost, 53 integrity check failure, 54 unsupported package type,
# 56 invalid URI, 57 device defined update error, 58 software installation failure)
DOWNLOAD = {"NOT_ENOUGH_STORAGE": 50, "OUT_OF_MEMORY": 51, "CONNECTION_LOST": 52, "INTEGRITY": 53,
            "UNSUPPORTED": 54, "INVALID_URI": 56, "UNSUPPORTED_PROTOCOL": 56, "DEVICE_ERROR": 57,
            "INSTALL_FAILURE": 57}
INSTALL = {"NOT_ENOUGH_STORAGE": 58, "OUT_OF_MEMORY": 51, "CONNECTION_LOST": 58, "INTEGRITY": 58,
           "UNSUPPORTED": 58, "INVALID_URI": 58, "UNSUPPORTED_PROTOCOL": 58, "DEVICE_ERROR": 57,
           "INSTALL_FAILURE": 58}
FAILURE_RESULTS = {"DOWNLOAD_FAILED": DOWNLOAD, "VERIFY_FAILED": DOWNLOAD, "INSTALL_FAILED": INSTALL}
DDF = Path(ddf_model.__file__).parent / "objects" / "9.xml"  # the definition the server ships


def ddf_values(resource: int) -> dict[int, str]:
    """``N: text`` lines of a resource description in the shipped DDF."""
    item = ET.parse(DDF).getroot().find(f".//Item[@ID='{resource}']")
    assert item is not None
    text = item.findtext("Description") or ""
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^\s*(\d+):\s*(.*)$", text, re.MULTILINE)}


def test_the_expected_table_covers_every_phase_and_event():
    keys = [(r[0], r[1]) for r in ROWS]
    assert len(keys) == len(set(keys)) == len(Phase9) * len(Event9) == len(SOFTWARE.table)
    assert set(keys) == {(p.name, e.name) for p in Phase9 for e in Event9}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r[0]}-{r[1]}")
def test_transition(row):
    phase, event = Phase9[row[0]], Event9[row[1]]
    t = SOFTWARE.table[(phase, event)]
    if row[2] == "impossible":
        assert t is None and event in SOFTWARE.device_events
        with pytest.raises(Impossible):
            SOFTWARE.step(phase, event, Reason.DEVICE_ERROR)
        return
    nxt, state, result, active, effects, answer = row[2:]
    assert t is not None and t.to is Phase9[nxt]
    assert t.sets.get(Res9.UPDATE_STATE) == (None if state == "." else int(state))
    failed = [a for a in t.actions if type(a).__name__ == "Failed"]
    if result == "F":
        assert failed and Res9.UPDATE_RESULT not in t.sets
    else:
        assert not failed and t.sets.get(Res9.UPDATE_RESULT) == (None if result == "." else int(result))
    assert t.sets.get(Res9.ACTIVATION_STATE) == {".": None, "on": True, "off": False}[active]
    if event is Event9.STALE:
        how, _, reset = effects.partition(":")
        assert t.recovery is not None and t.recovery.how is Recovery[how] and not t.effects
        assert t.recovery.event == (Event9[reset] if reset else None)
    else:
        assert t.recovery is None
        assert [e.name for e in t.effects] == ([] if effects == "-" else effects.split(","))
    if answer == "-":
        assert event not in SOFTWARE.server_events and t.refusal is None
    elif answer == "2.04":
        assert event in SOFTWARE.server_events and t.refusal is None
    else:
        assert event in SOFTWARE.server_events and t.refusal is not None
        assert t.refusal.answer.value == answer and t.refusal.why


@pytest.mark.parametrize("event", sorted(FAILURE_RESULTS))
@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.name)
def test_failure_results(event, reason):
    for row in ROWS:
        if row[1] == event and row[2] != "impossible":
            t = SOFTWARE.step(Phase9[row[0]], Event9[event], reason)
            assert t.sets[Res9.UPDATE_RESULT] == FAILURE_RESULTS[event][reason.name]
    with pytest.raises(ValueError):
        SOFTWARE.step(Phase9.DOWNLOAD_STARTED, Event9.DOWNLOAD_FAILED)  # a failure needs its reason


def test_states_and_results_are_the_definitions():
    states = ddf_values(Res9.UPDATE_STATE)
    assert {s: n.split()[0] for s, n in states.items()} == {0: "INITIAL", 1: "DOWNLOAD", 2: "DOWNLOADED",
                                                            3: "DELIVERED", 4: "INSTALLED"}
    assert {int(s) for s in UpdateState} == set(states) == set(SOFTWARE.states)
    assert SOFTWARE.states[1] == "DOWNLOAD STARTED"
    results = ddf_values(Res9.UPDATE_RESULT)
    assert set(results) == {0, 1, 2, 3, 50, 51, 52, 53, 54, 56, 57, 58, 59}  # 4-49, 55, 60-200: reserved
    assert {int(r) for r in Result9} == set(results) == set(SOFTWARE.results)
    for code, text in SOFTWARE.results.items():  # our wording names the same thing
        words = {"initial": "Initial", "downloading": "Downloading", "installed": "installed",
                 "downloaded and verified": "integrity verified", "out of memory": "Out of memory",
                 "connection lost during download": "Connection lost", "device-defined update error": "Device defined",
                 "software installation failure": "installation failure",
                 "software uninstallation failure": "Uninstallation Failure"}.get(text, text)
        assert words.lower() in results[code].lower(), (code, text, results[code])


def test_reported_states_and_legal_results():
    shown = {p.name: SOFTWARE.reported[p] for p in Phase9}
    assert shown == {"INITIAL": (0, False), "DOWNLOAD_STARTED": (1, False), "DOWNLOADED": (2, False),
                     "DELIVERED": (3, False), "INSTALLING": (3, False), "INSTALLED": (4, False), "ACTIVE": (4, True)}
    legal = {s: sorted(r) for s, r in SOFTWARE.legal_results.items()}
    assert legal == {0: [0, 50, 51, 52, 53, 54, 56, 57, 58, 59], 1: [0, 1], 2: [0, 1, 3], 3: [0, 1, 3, 51, 57, 58],
                     4: [0, 2, 59]}
    assert SOFTWARE.problem(4, 2, True) is None and SOFTWARE.problem(3, 58, False) is None
    assert "not defined" in SOFTWARE.problem(5, 0, False)
    assert "not defined" in SOFTWARE.problem(0, 55, False)
    assert "Activation State true" in SOFTWARE.problem(3, 3, True)
    assert "cannot go with Update State 4 (INSTALLED)" in SOFTWARE.problem(4, 53, False)


def test_every_state_change_sets_update_state_and_activation():
    """A transition that changes what the device reports sets exactly the new values."""
    for (phase, _event), t in SOFTWARE.table.items():
        if t is None or t.refusal is not None:
            continue
        (s0, a0), (s1, a1) = SOFTWARE.reported[phase], SOFTWARE.reported[t.to]
        assert t.sets.get(Res9.UPDATE_STATE, s0) == s1, (phase, _event)
        assert (Res9.UPDATE_STATE in t.sets) == (s0 != s1), (phase, _event)
        assert t.sets.get(Res9.ACTIVATION_STATE, a0) == a1, (phase, _event)


def test_stale_resets_are_operations_the_table_accepts():
    for phase in Phase9:
        r = SOFTWARE.step(phase, Event9.STALE).recovery
        assert r is not None
        if r.how is Recovery.RESET:
            assert r.event in SOFTWARE.server_events and SOFTWARE.moves(phase, r.event)
            assert SOFTWARE.table[(phase, r.event)].to is SOFTWARE.initial
        assert (r.how is Recovery.RETRY) == (phase is SOFTWARE.initial)


def test_operations_are_the_resources_of_the_definition():
    ops = {e.name: (o.resource, o.execute, o.payload, o.argument) for e, o in SOFTWARE.operations.items()}
    assert ops == {"WRITE_PACKAGE": (2, False, "package", ""), "WRITE_PACKAGE_URI": (3, False, "uri", ""),
                   "WRITE_EMPTY_URI": (3, False, "empty", ""), "EXECUTE_INSTALL": (4, True, "", ""),
                   "EXECUTE_UNINSTALL": (6, True, "", ""), "EXECUTE_UNINSTALL_FOR_UPDATE": (6, True, "", "1"),
                   "EXECUTE_ACTIVATE": (10, True, "", ""), "EXECUTE_DEACTIVATE": (11, True, "", "")}
    item = ET.parse(DDF).getroot()
    for rid, (name, operation) in {2: ("Package", "W"), 3: ("Package URI", "W"), 4: ("Install", "E"),
                                   6: ("Uninstall", "E"), 10: ("Activate", "E"), 11: ("Deactivate", "E"),
                                   7: ("Update State", "R"), 9: ("Update Result", "R"),
                                   12: ("Activation State", "R")}.items():
        node = item.find(f".//Item[@ID='{rid}']")
        assert node is not None and node.findtext("Name") == name and node.findtext("Operations") == operation
