"""Object 5 (Firmware Update) transition table, every phase x every event.

The expected table below is written out row by row from OMA LwM2M Core TS 1.1 Appendix E.6
(the Firmware Update object; E.6.1, its state machine: Idle -> Downloading on a Package or
Package URI write, Downloaded once the package is in and verified, Updating on Update, Idle
with Update Result 1 on success; an empty Package URI or a NULL Package resets to Idle with
Update Result 0; Update only in Downloaded; Update Result reset to 0 when a download or an
update is initiated) and the object 5 definition version 1.1 (registry 5.xml: Update Result
10 cancelled and 11 deferred, Cancel "MUST respond with Method Not Allowed" once updating, a
failed update returns to Downloaded or, for an integrity failure, to Idle). Where both are
silent the refusals are those of a real client, AVSystem Anjay's fw_update module: 4.05 for
Update outside Downloaded and for any write while updating, 4.00 for a new package while a
download or a downloaded package is there. It is compared with
``lwm2m.updates.firmware.TABLE``; the enumerations with the DDF the server ships.

Columns as in ``test_updates_object9``: phase, event, ``impossible`` or next phase, State set,
Update Result set (``F``: the failure's own result), effects (on ``STALE``: the recovery),
answer (2.04, 4.00, 4.05; ``-`` for a device event).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import lwm2m.model as ddf_model
from lwm2m.updates import (
    FIRMWARE,
    Event5,
    Impossible,
    Phase5,
    Reason,
    Recovery,
    Result5,
    State5,
)
from lwm2m.updates.firmware import Res5

D = ["DOWNLOAD_FINISHED", "DOWNLOAD_FAILED", "VERIFIED", "VERIFY_FAILED", "UPDATE_OK", "UPDATE_FAILED"]
NEW = ["WRITE_PACKAGE", "WRITE_PACKAGE_URI"]
EMPTY = ["WRITE_EMPTY_PACKAGE", "WRITE_EMPTY_URI"]


def rows(phase: str, events: list[str], rest: str) -> str:
    return "\n".join(f"{phase} {e} {rest}" for e in events)


EXPECTED = f"""
{rows("IDLE", NEW, "DOWNLOADING 1 0 START_DOWNLOAD 2.04")}
{rows("IDLE", EMPTY, "IDLE 0 0 RELEASE 2.04")}
IDLE EXECUTE_UPDATE IDLE . . - 4.05
IDLE EXECUTE_CANCEL IDLE . . - 4.05
{rows("IDLE", D, "impossible")}
IDLE REBOOT IDLE . . - -
IDLE STALE IDLE . . RETRY -

{rows("DOWNLOADING", NEW, "DOWNLOADING . . - 4.00")}
{rows("DOWNLOADING", EMPTY, "IDLE 0 0 CANCEL_DOWNLOAD,RELEASE 2.04")}
DOWNLOADING EXECUTE_UPDATE DOWNLOADING . . - 4.05
DOWNLOADING EXECUTE_CANCEL IDLE 0 10 CANCEL_DOWNLOAD,RELEASE 2.04
DOWNLOADING DOWNLOAD_FINISHED VERIFYING . . VERIFY -
DOWNLOADING DOWNLOAD_FAILED IDLE 0 F RELEASE -
{rows("DOWNLOADING", D[2:], "impossible")}
DOWNLOADING REBOOT IDLE 0 4 RELEASE -
DOWNLOADING STALE DOWNLOADING . . RESET:WRITE_EMPTY_URI -

{rows("VERIFYING", NEW, "VERIFYING . . - 4.00")}
{rows("VERIFYING", EMPTY, "IDLE 0 0 RELEASE 2.04")}
VERIFYING EXECUTE_UPDATE VERIFYING . . - 4.05
VERIFYING EXECUTE_CANCEL IDLE 0 10 RELEASE 2.04
{rows("VERIFYING", D[:2] + D[4:], "impossible")}
VERIFYING VERIFIED DOWNLOADED 2 0 NAME_PACKAGE -
VERIFYING VERIFY_FAILED IDLE 0 F RELEASE -
VERIFYING REBOOT IDLE 0 4 RELEASE -
VERIFYING STALE VERIFYING . . RESET:WRITE_EMPTY_URI -

{rows("DOWNLOADED", NEW, "DOWNLOADED . . - 4.00")}
{rows("DOWNLOADED", EMPTY, "IDLE 0 0 RELEASE 2.04")}
DOWNLOADED EXECUTE_UPDATE UPDATING 3 0 INSTALL 2.04
DOWNLOADED EXECUTE_CANCEL IDLE 0 10 RELEASE 2.04
{rows("DOWNLOADED", D, "impossible")}
DOWNLOADED REBOOT DOWNLOADED . . - -
DOWNLOADED STALE DOWNLOADED . . RESET:WRITE_EMPTY_URI -

{rows("UPDATING", NEW + EMPTY + ["EXECUTE_UPDATE", "EXECUTE_CANCEL"], "UPDATING . . - 4.05")}
{rows("UPDATING", D[:3], "impossible")}
UPDATING VERIFY_FAILED IDLE 0 F RELEASE -
UPDATING UPDATE_OK IDLE 0 1 - -
UPDATING UPDATE_FAILED DOWNLOADED 2 F - -
UPDATING REBOOT DOWNLOADED 2 . - -
UPDATING STALE UPDATING . . GIVE_UP -
"""
ROWS = [line.split() for line in EXPECTED.strip().splitlines() if line.strip()]

# E.6 resource 5: 2 not enough flash, 3 out of RAM, 4 connection lost, 5 integrity check failure,
# 6 unsupported package type, 7 invalid URI, 8 firmware update failed, 9 unsupported protocol
DOWNLOAD = {"NOT_ENOUGH_STORAGE": 2, "OUT_OF_MEMORY": 3, "CONNECTION_LOST": 4, "INTEGRITY": 5, "UNSUPPORTED": 6,
            "INVALID_URI": 7, "UNSUPPORTED_PROTOCOL": 9, "INSTALL_FAILURE": 8, "DEVICE_ERROR": 8}
UPDATE = {"NOT_ENOUGH_STORAGE": 2, "OUT_OF_MEMORY": 3, "CONNECTION_LOST": 8, "INTEGRITY": 8, "UNSUPPORTED": 6,
          "INVALID_URI": 8, "UNSUPPORTED_PROTOCOL": 8, "INSTALL_FAILURE": 8, "DEVICE_ERROR": 8}
FAILURE_RESULTS = {"DOWNLOAD_FAILED": DOWNLOAD, "VERIFY_FAILED": DOWNLOAD, "UPDATE_FAILED": UPDATE}
DDF = Path(ddf_model.__file__).parent / "objects" / "5.xml"  # the definition the server ships


def ddf_values(resource: int) -> dict[int, str]:
    item = ET.parse(DDF).getroot().find(f".//Item[@ID='{resource}']")
    assert item is not None
    text = item.findtext("Description") or ""
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^\s*(\d+):\s*(.*)$", text, re.MULTILINE)}


def test_the_expected_table_covers_every_phase_and_event():
    keys = [(r[0], r[1]) for r in ROWS]
    assert len(keys) == len(set(keys)) == len(Phase5) * len(Event5) == len(FIRMWARE.table)
    assert set(keys) == {(p.name, e.name) for p in Phase5 for e in Event5}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r[0]}-{r[1]}")
def test_transition(row):
    phase, event = Phase5[row[0]], Event5[row[1]]
    t = FIRMWARE.table[(phase, event)]
    if row[2] == "impossible":
        assert t is None and event in FIRMWARE.device_events
        with pytest.raises(Impossible):
            FIRMWARE.step(phase, event, Reason.DEVICE_ERROR)
        return
    nxt, state, result, effects, answer = row[2:]
    assert t is not None and t.to is Phase5[nxt]
    assert t.sets.get(Res5.STATE) == (None if state == "." else int(state))
    failed = [a for a in t.actions if type(a).__name__ == "Failed"]
    if result == "F":
        assert failed and Res5.UPDATE_RESULT not in t.sets
    else:
        assert not failed and t.sets.get(Res5.UPDATE_RESULT) == (None if result == "." else int(result))
    assert set(t.sets) <= {Res5.STATE, Res5.UPDATE_RESULT}
    if event is Event5.STALE:
        how, _, reset = effects.partition(":")
        assert t.recovery is not None and t.recovery.how is Recovery[how] and not t.effects
        assert t.recovery.event == (Event5[reset] if reset else None)
    else:
        assert t.recovery is None
        assert [e.name for e in t.effects] == ([] if effects == "-" else effects.split(","))
    if answer == "-":
        assert event not in FIRMWARE.server_events and t.refusal is None
    elif answer == "2.04":
        assert event in FIRMWARE.server_events and t.refusal is None
    else:
        assert event in FIRMWARE.server_events and t.refusal is not None
        assert t.refusal.answer.value == answer and t.refusal.why


@pytest.mark.parametrize("event", sorted(FAILURE_RESULTS))
@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.name)
def test_failure_results(event, reason):
    for row in ROWS:
        if row[1] == event and row[2] != "impossible":
            t = FIRMWARE.step(Phase5[row[0]], Event5[event], reason)
            assert t.sets[Res5.UPDATE_RESULT] == FAILURE_RESULTS[event][reason.name]


def test_states_and_results_are_the_definitions():
    states = ddf_values(Res5.STATE)
    assert {s: n.split()[0] for s, n in states.items()} == {0: "Idle", 1: "Downloading", 2: "Downloaded",
                                                            3: "Updating"}
    assert {int(s) for s in State5} == set(states) == set(FIRMWARE.states)
    assert FIRMWARE.states == {s: n.split()[0] for s, n in states.items()}
    results = ddf_values(Res5.UPDATE_RESULT)
    assert set(results) == set(range(12))  # 0..9 in Core TS 1.1 E.6; 10 cancelled, 11 deferred in 5.xml 1.1
    assert {int(r) for r in Result5} == set(results) == set(FIRMWARE.results)
    for code, text in FIRMWARE.results.items():
        key = {"initial": "Initial", "out of RAM during download": "Out of RAM",
               "connection lost during download": "Connection lost"}.get(text, text)
        assert key.lower() in results[code].lower(), (code, text, results[code])


def test_reported_states_and_legal_results():
    assert {p.name: FIRMWARE.reported[p] for p in Phase5} == {
        "IDLE": (0, False), "DOWNLOADING": (1, False), "VERIFYING": (1, False), "DOWNLOADED": (2, False),
        "UPDATING": (3, False)}
    assert {s: sorted(r) for s, r in FIRMWARE.legal_results.items()} == {
        0: list(range(11)), 1: [0], 2: [0, 2, 3, 5, 6, 8, 11], 3: [0]}
    assert FIRMWARE.problem(1, 0, False) is None and FIRMWARE.problem(2, 11, False) is None
    assert "cannot go with State 1 (Downloading)" in FIRMWARE.problem(1, 4, False)
    assert "not defined" in FIRMWARE.problem(4, 0, False) and "not defined" in FIRMWARE.problem(0, 12, False)
    assert FIRMWARE.problem(3, 0, True) is not None  # object 5 has no Activation State


def test_every_state_change_sets_the_state():
    for (phase, event), t in FIRMWARE.table.items():
        if t is None or t.refusal is not None:
            continue
        before, after = FIRMWARE.reported[phase][0], FIRMWARE.reported[t.to][0]
        assert t.sets.get(Res5.STATE, before) == after, (phase, event)
        assert before == after or Res5.STATE in t.sets, (phase, event)


def test_stale_resets_are_operations_the_table_accepts():
    for phase in Phase5:
        r = FIRMWARE.step(phase, Event5.STALE).recovery
        assert r is not None
        if r.how is Recovery.RESET:
            assert r.event in FIRMWARE.server_events and FIRMWARE.moves(phase, r.event)
            assert FIRMWARE.table[(phase, r.event)].to is FIRMWARE.initial


def test_operations_are_the_resources_of_the_definition():
    ops = {e.name: (o.resource, o.execute, o.payload) for e, o in FIRMWARE.operations.items()}
    assert ops == {"WRITE_PACKAGE": (0, False, "package"), "WRITE_PACKAGE_URI": (1, False, "uri"),
                   "WRITE_EMPTY_PACKAGE": (0, False, "empty"), "WRITE_EMPTY_URI": (1, False, "empty"),
                   "EXECUTE_UPDATE": (2, True, ""), "EXECUTE_CANCEL": (10, True, "")}
    root = ET.parse(DDF).getroot()
    for rid, (name, operation) in {0: ("Package", "W"), 1: ("Package URI", "RW"), 2: ("Update", "E"),
                                   3: ("State", "R"), 5: ("Update Result", "R"), 10: ("Cancel", "E")}.items():
        node = root.find(f".//Item[@ID='{rid}']")
        assert node is not None and node.findtext("Name") == name and node.findtext("Operations") == operation
