"""The object 5 / object 9 machines as sequences, and the server's ``Reconciler`` on top of them.

Random event sequences (hypothesis) run through the tables the way a device would: the states
stay the specification's (Core TS 1.1 E.6 State 0..3; object 9 Update State 0..4), every
Update Result is one the definitions list and allow in that state, Activation State is true
only in INSTALLED, and a success (object 9 Update Result 2 / Activation State true, object 5
Update Result 1) is only reported at the end of the real path: a delivery, its download, its
verification, the server's Install / Update, the install itself (and Activate).

Then the ``Reconciler`` drives an in-memory device that follows the same table, with the
device's own events (failures with any reason, reboots) drawn at random: it only sends
operations the table accepts in the phase it believes, never reports success the device did
not reach, ends every failure with the device's state and result named, and delivers at most
``attempts`` times. Hand-written cases pin the protocol errors, the retry bound, the refusals
and the stale-state row that the next issue's timer will use.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwm2m.updates import (
    FIRMWARE,
    FIRMWARE_ROUTE,
    SOFTWARE,
    SOFTWARE_ROUTE,
    Decision,
    Effect,
    Event5,
    Event9,
    Impossible,
    Phase5,
    Phase9,
    Reason,
    Reconciler,
    Report,
    Verdict,
)

OBJECTS = {9: (SOFTWARE, SOFTWARE_ROUTE), 5: (FIRMWARE, FIRMWARE_ROUTE)}
SUCCESS_PATH = {
    9: ["DOWNLOAD_FINISHED", "VERIFIED", "EXECUTE_INSTALL", "INSTALL_OK"],
    5: ["DOWNLOAD_FINISHED", "VERIFIED", "EXECUTE_UPDATE", "UPDATE_OK"],
}


class TableDevice:
    """A device that is nothing but the table: phase and the resources the table sets."""

    def __init__(self, oid: int) -> None:
        self.obj = OBJECTS[oid][0]
        self.oid, self.phase = oid, self.obj.initial
        self.values: dict[int, Any] = {self.obj.state_resource: 0, self.obj.result_resource: 0}
        if self.obj.activation_resource is not None:
            self.values[self.obj.activation_resource] = False
        self.trail: list[str] = []  # accepted events since the last delivery write
        self.deliveries = 0

    def report(self) -> Report:
        active = bool(self.values.get(self.obj.activation_resource)) if self.obj.activation_resource else False
        return Report(self.values[self.obj.state_resource], self.values[self.obj.result_resource], active)

    def apply(self, event: Any, reason: Reason | None = None) -> str | None:
        """Apply ``event``; the refusal's answer, or None when accepted."""
        t = self.obj.step(self.phase, event, reason or Reason.DEVICE_ERROR)
        self.values.update(t.sets)
        if t.refusal is not None:
            return t.refusal.answer.value
        if event.name in ("WRITE_PACKAGE", "WRITE_PACKAGE_URI"):
            self.trail, self.deliveries = [], self.deliveries + 1
        if Effect.RELEASE in t.effects:  # the package is gone
            self.trail.append("RESET")
        self.trail.append(event.name)
        self.phase = t.to
        return None

    def possible(self) -> list[Any]:
        return [e for e in self.obj.device_events if self.obj.table[(self.phase, e)] is not None]

    def check(self) -> None:
        r = self.report()
        assert r.state in self.obj.states and r.result in self.obj.results
        assert self.obj.problem(r.state, r.result, r.active) is None, (self.phase, r)
        if self.oid == 9 and (r.result == 2 and r.state == 4 or r.active):
            assert is_subsequence(SUCCESS_PATH[9], self.trail)
        if self.oid == 9 and r.active:
            assert "EXECUTE_ACTIVATE" in self.trail
        if self.oid == 5 and r.result == 1:
            assert is_subsequence(SUCCESS_PATH[5], self.trail)


def is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle) and "RESET" not in hay[hay.index(needle[0]):]


events9 = st.sampled_from(list(Event9))
events5 = st.sampled_from(list(Event5))
reasons = st.sampled_from(list(Reason))


@pytest.mark.parametrize("oid", [9, 5])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_event_sequences_keep_the_invariants(oid, data):
    device = TableDevice(oid)
    for _ in range(data.draw(st.integers(1, 60))):
        event = data.draw(events9 if oid == 9 else events5)
        if device.obj.table[(device.phase, event)] is None:
            with pytest.raises(Impossible):
                device.obj.step(device.phase, event, Reason.DEVICE_ERROR)
            continue
        device.apply(event, data.draw(reasons))
        device.check()


def drive(oid: int, data: Any, push: bool, attempts: int = 3, hint: bool = False) -> tuple[Decision[Any], TableDevice]:
    obj, route = OBJECTS[oid]
    device = TableDevice(oid)
    plan: Reconciler[Any, Any] = Reconciler(route, "dev", f"/{oid}/0", push=push, attempts=attempts)
    same, seen = 0, None
    for _ in range(300):
        report = device.report()
        same = same + 1 if report == seen else 0
        seen = report
        if same >= 6:  # the timer of the stale-state handling: no progress for a while
            decision, same = plan.stale(), 0
        else:
            decision = plan.observe(report, fresh=True, hint_ours=hint)
        belief = min(plan.phases, key=obj.order.index)
        if decision.verdict in (Verdict.DONE, Verdict.FAIL):
            return decision, device
        if decision.verdict is Verdict.SEND:
            assert obj.moves(belief, decision.event), (belief, decision.event)  # only what the table accepts
            answer = device.apply(decision.event)
            if answer is None:
                plan.sent(decision.event)
                continue
            refusal = plan.refused(decision.event, f"{answer} refused")
            if refusal.verdict is Verdict.FAIL:
                return refusal, device
        if decision.verdict in (Verdict.WAIT, Verdict.BACKOFF, Verdict.SEND):  # time passes on the device
            options = device.possible()
            event = data.draw(st.sampled_from(options)) if options else None
            if event is not None:
                device.apply(event, data.draw(reasons))
        device.check()
    raise AssertionError("no end in 300 steps")


@pytest.mark.parametrize("oid", [9, 5])
@pytest.mark.parametrize("push", [True, False])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_reconciler_on_a_device_that_follows_the_table(oid, push, data):
    decision, device = drive(oid, data, push)
    assert device.deliveries <= 3
    if decision.verdict is Verdict.DONE:
        if oid == 9:
            assert device.phase is Phase9.ACTIVE
        else:
            assert device.phase is Phase5.IDLE and device.report().result == 1
        device.check()
    else:
        assert decision.verdict is Verdict.FAIL and "protocol error" not in decision.message
        assert decision.result == device.report().result  # the device's own result, named
        assert f"Update Result {decision.result}" in decision.message


@pytest.mark.parametrize("oid", [9, 5])
def test_the_good_path_needs_no_device_failure(oid):
    """A device that only ever makes progress, pulled: the operations are the route's, in order."""
    _, route = OBJECTS[oid]
    device = TableDevice(oid)
    plan: Reconciler[Any, Any] = Reconciler(route, "dev", f"/{oid}/0", push=False)
    progress = {"DOWNLOAD_FINISHED", "VERIFIED", "INSTALL_OK", "UPDATE_OK"}
    sent = []
    for _ in range(20):
        d = plan.observe(device.report(), fresh=True)
        if d.verdict is Verdict.DONE:
            break
        if d.verdict is Verdict.SEND:
            sent.append(d.event.name)
            assert device.apply(d.event) is None
            plan.sent(d.event)
        while any(e.name in progress for e in device.possible()):  # the device works until it waits
            device.apply(next(e for e in device.possible() if e.name in progress))
    assert d.verdict is Verdict.DONE
    assert sent == (["WRITE_PACKAGE_URI", "EXECUTE_INSTALL", "EXECUTE_ACTIVATE"] if oid == 9
                    else ["WRITE_PACKAGE_URI", "EXECUTE_UPDATE"])


def software(push: bool = True, attempts: int = 3) -> Reconciler[Any, Any]:
    return Reconciler(SOFTWARE_ROUTE, "dev", "/9/0", push=push, attempts=attempts)


def firmware(push: bool = True) -> Reconciler[Any, Any]:
    return Reconciler(FIRMWARE_ROUTE, "dev", "/5/0", push=push)


def test_an_impossible_transition_is_confirmed_then_a_protocol_error():
    plan = software()
    assert plan.observe(Report(0, 0), fresh=True).event is Event9.WRITE_PACKAGE
    plan.sent(Event9.WRITE_PACKAGE)
    assert plan.observe(Report(4, 2), fresh=False).verdict is Verdict.CONFIRM  # perhaps a stale notification
    d = plan.observe(Report(4, 2), fresh=True)
    assert d.verdict is Verdict.FAIL and d.result == 2
    assert "dev/9/0 reported Update State 4 (INSTALLED), Update Result 2 (installed)" in d.message
    assert "protocol error" in d.message and "from Update State 0 (INITIAL)" in d.message


def test_values_the_objects_do_not_define_fail_at_once():
    d = software().observe(Report(0, 55), fresh=False)
    assert d.verdict is Verdict.FAIL and "Update Result 55 is not defined by object 9" in d.message
    d = firmware().observe(Report(7, 0), fresh=False)
    assert d.verdict is Verdict.FAIL and "State 7 is not defined by object 5" in d.message
    d = software().observe(Report(1, 53), fresh=True)  # defined, but not while downloading
    assert d.verdict is Verdict.FAIL and "cannot go with Update State 1 (DOWNLOAD STARTED)" in d.message


def test_a_reboot_explains_going_back():
    plan = software()
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event9.WRITE_PACKAGE)
    assert plan.observe(Report(1, 1), fresh=True).verdict is Verdict.WAIT
    d = plan.observe(Report(0, 52), fresh=False)  # REBOOT (or a lost connection): a retry
    assert d.verdict is Verdict.BACKOFF and d.attempt == 1
    assert plan.observe(Report(0, 52), fresh=True).event is Event9.WRITE_PACKAGE


def test_connection_lost_is_retried_within_the_bound():
    plan = software(push=False, attempts=3)
    verdicts = []
    for _ in range(3):
        d = plan.observe(Report(0, 0 if not verdicts else 52), fresh=True)
        assert d.verdict is Verdict.SEND and d.event is Event9.WRITE_PACKAGE_URI and d.attempt == len(verdicts) + 1
        plan.sent(d.event)
        plan.observe(Report(1, 1), fresh=True)
        verdicts.append(plan.observe(Report(0, 52), fresh=False))
    assert [v.verdict for v in verdicts] == [Verdict.BACKOFF, Verdict.BACKOFF, Verdict.FAIL]
    assert verdicts[-1].message == ("download to /9/0 on dev failed: Update Result 52 "
                                    "(connection lost during download) after 3 attempts")


def test_other_download_failures_end_the_delivery():
    plan = firmware()
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    d = plan.observe(Report(0, 5), fresh=True)
    assert (d.verdict, d.result) == (Verdict.FAIL, 5)
    assert d.message == "download to /5/0 on dev failed: Update Result 5 (integrity check failure)"


def test_install_and_update_failures():
    plan = software()
    plan.observe(Report(3, 3), fresh=True, hint_ours=True)
    plan.sent(Event9.EXECUTE_INSTALL)
    d = plan.observe(Report(3, 58), fresh=True)
    assert d.message == "Install on dev/9/0 failed: Update Result 58 (software installation failure)"
    plan = firmware()
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    assert plan.observe(Report(2, 0), fresh=True).event is Event5.EXECUTE_UPDATE
    plan.sent(Event5.EXECUTE_UPDATE)
    assert plan.observe(Report(3, 0), fresh=True).verdict is Verdict.WAIT
    d = plan.observe(Report(2, 8), fresh=False)
    assert d.message == "Update on dev failed: Update Result 8 (firmware update failed)" and d.result == 8
    assert plan.observe(Report(0, 5), fresh=True).verdict is Verdict.FAIL  # integrity failure at update: Idle


def test_success_is_judged_by_the_object_not_by_names():
    plan = software()  # names never matched (a real client reports its own): the causal chain decides
    plan.observe(Report(0, 0), fresh=True, hint_ours=False)
    plan.sent(Event9.WRITE_PACKAGE)
    assert plan.observe(Report(3, 3), fresh=True, hint_ours=False).event is Event9.EXECUTE_INSTALL
    plan.sent(Event9.EXECUTE_INSTALL)
    assert plan.observe(Report(4, 2), fresh=True).event is Event9.EXECUTE_ACTIVATE
    plan.sent(Event9.EXECUTE_ACTIVATE)
    assert plan.observe(Report(4, 2, True), fresh=True).verdict is Verdict.DONE
    plan = firmware()
    assert plan.observe(Report(0, 1), fresh=True).verdict is Verdict.SEND  # an earlier success is not this one


def test_someone_elses_package_is_removed_first():
    assert software().observe(Report(3, 3), fresh=True).event is Event9.EXECUTE_UNINSTALL
    assert software().observe(Report(4, 2, True), fresh=True).event is Event9.EXECUTE_UNINSTALL
    assert software().observe(Report(1, 1), fresh=True).verdict is Verdict.WAIT  # nothing resets a download
    assert software().observe(Report(3, 3), fresh=True, hint_ours=True).event is Event9.EXECUTE_INSTALL
    assert software().observe(Report(4, 2, True), fresh=True, hint_ours=True).verdict is Verdict.DONE
    assert firmware().observe(Report(2, 0), fresh=True).event is Event5.WRITE_EMPTY_URI
    assert firmware().observe(Report(1, 0), fresh=True).event is Event5.WRITE_EMPTY_URI
    assert firmware().observe(Report(3, 0), fresh=True).verdict is Verdict.WAIT  # an update cannot be stopped


def test_an_operation_is_sent_once_per_report():
    """A client that accepts an operation and reports the same state again (Anjay installs in
    the background; Wakaama's object 5 stays Downloading) gets its turn: the operation is not
    repeated on the Read right after it, only on a later report."""
    plan = software()
    assert plan.observe(Report(3, 0), fresh=True, hint_ours=True).event is Event9.EXECUTE_INSTALL
    plan.sent(Event9.EXECUTE_INSTALL)
    assert plan.observe(Report(3, 0), fresh=True).verdict is Verdict.WAIT
    assert plan.observe(Report(3, 0), fresh=False).event is Event9.EXECUTE_INSTALL  # a poll later: again
    plan.refused(Event9.EXECUTE_INSTALL, "4.05 Method Not Allowed")  # ours since it asked: no uninstall
    assert plan.observe(Report(4, 2), fresh=False).event is Event9.EXECUTE_ACTIVATE
    plan = firmware()  # but once the device moved, the operation is due again (reboot during the update)
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    assert plan.observe(Report(2, 0), fresh=True).event is Event5.EXECUTE_UPDATE
    plan.sent(Event5.EXECUTE_UPDATE)
    assert plan.observe(Report(3, 0), fresh=True).verdict is Verdict.WAIT
    assert plan.observe(Report(2, 0), fresh=False).event is Event5.EXECUTE_UPDATE
    plan = firmware()
    assert plan.observe(Report(1, 0), fresh=True).event is Event5.WRITE_EMPTY_URI
    plan.sent(Event5.WRITE_EMPTY_URI)
    assert plan.observe(Report(1, 0), fresh=True).verdict is Verdict.WAIT
    assert plan.stale().event is Event5.WRITE_EMPTY_URI  # the table's reset, within the bound


def test_refusals():
    plan = software()
    plan.observe(Report(4, 2), fresh=True, hint_ours=True)
    d = plan.refused(Event9.EXECUTE_ACTIVATE, "4.05 Method Not Allowed")
    assert d.verdict is Verdict.FAIL and d.message == "Activate on dev/9/0 refused: 4.05 Method Not Allowed"
    plan = software()
    plan.observe(Report(3, 3), fresh=True, hint_ours=True)
    assert plan.refused(Event9.EXECUTE_INSTALL, "busy").verdict is Verdict.WAIT  # look again
    plan = software()
    plan.observe(Report(0, 0), fresh=True)
    assert plan.refused(Event9.WRITE_PACKAGE, "4.05").verdict is Verdict.WAIT
    assert plan.observe(Report(0, 0), fresh=True).event is Event9.WRITE_PACKAGE  # not taken as delivered
    plan = firmware()
    assert plan.observe(Report(2, 0), fresh=True).event is Event5.WRITE_EMPTY_URI
    assert plan.refused(Event5.WRITE_EMPTY_URI, "4.05").verdict is Verdict.WAIT  # a reset is not the goal


def test_stale_follows_the_table():
    """The STALE row, for the next issue's timer: a Wakaama-like object 5 that stays Downloading
    is reset by an empty Package URI and delivered again within the bound, then given up."""
    plan = firmware()
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    plan.observe(Report(1, 0), fresh=True)
    d = plan.stale()
    assert (d.verdict, d.event) == (Verdict.SEND, Event5.WRITE_EMPTY_URI)
    plan.sent(Event5.WRITE_EMPTY_URI)
    assert plan.observe(Report(0, 0), fresh=True).event is Event5.WRITE_PACKAGE
    plan.sent(Event5.WRITE_PACKAGE)
    plan.observe(Report(1, 0), fresh=True)
    assert plan.stale().event is Event5.WRITE_EMPTY_URI
    plan.sent(Event5.WRITE_EMPTY_URI)
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    plan.observe(Report(1, 0), fresh=True)
    d = plan.stale()
    assert d.verdict is Verdict.FAIL
    assert d.message == "dev/5/0 made no progress in State 1 (Downloading), Update Result 0 (initial)"
    plan = firmware()
    plan.observe(Report(3, 0), fresh=True)
    assert "no progress in State 3 (Updating)" in plan.stale().message  # nothing resets an update
    plan = software()
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event9.WRITE_PACKAGE)
    plan.observe(Report(0, 0), fresh=True)  # accepted, never started
    assert plan.stale().verdict is Verdict.BACKOFF
    plan = software()
    plan.observe(Report(4, 2, True), fresh=True)
    assert plan.stale().verdict is Verdict.WAIT


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0, 1, 2, 3, 50, 52, 53, 55, 58, 59, 60]),
                                  st.booleans(), st.booleans()), min_size=1, max_size=12),
       oid=st.sampled_from([9, 5]))
def test_arbitrary_reports_never_make_a_success(reports, oid):
    """Whatever a device reports, the Reconciler sends only what the table accepts in the phase
    it believes, and DONE only on the object's goal after its own steps."""
    obj, route = OBJECTS[oid]
    plan: Reconciler[Any, Any] = Reconciler(route, "dev", f"/{oid}/0")
    steps: set[str] = set()
    for state, result, active, fresh in reports:
        d = plan.observe(Report(state, result, active and oid == 9), fresh=fresh)
        if d.verdict is Verdict.SEND:
            assert obj.moves(min(plan.phases, key=obj.order.index), d.event)
            plan.sent(d.event)
            steps.add(d.event.name)
        if d.verdict is Verdict.DONE:
            if oid == 9:
                assert (state, active) == (4, True)
            else:
                assert (state, result) == (0, 1) and {"EXECUTE_UPDATE", "WRITE_PACKAGE"} <= steps
            return
        if d.verdict is Verdict.FAIL:
            return



def test_install_failures_are_retried_in_place_within_the_bound():
    """Object 9: a failed Install leaves the package DELIVERED (the definition: "the state remains
    at DELIVERED"), so it is executed again, no new download; the report right after the second
    Install still shows the old result (Update Result is reset only for a download) and is the
    device's turn; after ``installs`` executions the failure is the device's, with the count."""
    plan = Reconciler(SOFTWARE_ROUTE, "dev", "/9/0", push=False, installs=3)
    assert plan.observe(Report(0, 0), fresh=True).event is Event9.WRITE_PACKAGE_URI
    plan.sent(Event9.WRITE_PACKAGE_URI)
    installs = 0
    d = plan.observe(Report(3, 3), fresh=True)
    for _ in range(3):
        assert (d.verdict, d.event) == (Verdict.SEND, Event9.EXECUTE_INSTALL)
        plan.sent(d.event)
        installs += 1
        d = plan.observe(Report(3, 58), fresh=True)
        if installs > 1:  # the old failure right after the Install: wait for the next report
            assert d.verdict is Verdict.WAIT
            d = plan.observe(Report(3, 58), fresh=False)
        if d.verdict is Verdict.BACKOFF:
            assert d.attempt == installs and d.result == 58
            d = plan.observe(Report(3, 58), fresh=True)
    assert installs == 3 and d.verdict is Verdict.FAIL and d.result == 58
    assert d.message == "Install on dev/9/0 failed: Update Result 58 (software installation failure) after 3 attempts"
    assert plan.attempt == 1  # one delivery: the package was never sent again


def test_update_failures_object5():
    """Object 5: "firmware update failed" in Downloaded is retried in place; in Idle (the device
    dropped the image) by a new delivery, within both bounds; an integrity failure is not retried."""
    plan = Reconciler(FIRMWARE_ROUTE, "dev", "/5/0", push=True, installs=2)
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    assert plan.observe(Report(2, 0), fresh=True).event is Event5.EXECUTE_UPDATE
    plan.sent(Event5.EXECUTE_UPDATE)
    d = plan.observe(Report(2, 8), fresh=True)
    assert (d.verdict, d.attempt) == (Verdict.BACKOFF, 1)
    assert plan.observe(Report(2, 8), fresh=True).event is Event5.EXECUTE_UPDATE
    plan.sent(Event5.EXECUTE_UPDATE)
    assert plan.observe(Report(3, 0), fresh=True).verdict is Verdict.WAIT
    d = plan.observe(Report(2, 8), fresh=False)
    assert d.verdict is Verdict.FAIL and d.message.endswith("(firmware update failed) after 2 attempts")

    plan = Reconciler(FIRMWARE_ROUTE, "dev", "/5/0", push=False, installs=2, attempts=2)
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE_URI)
    plan.observe(Report(2, 0), fresh=True)
    plan.sent(Event5.EXECUTE_UPDATE)
    d = plan.observe(Report(0, 8), fresh=True)  # failed, and the image is gone: deliver again
    assert d.verdict is Verdict.BACKOFF and plan.attempt == 2
    assert plan.observe(Report(0, 8), fresh=True).event is Event5.WRITE_PACKAGE_URI
    plan.sent(Event5.WRITE_PACKAGE_URI)
    plan.observe(Report(2, 0), fresh=True)
    plan.sent(Event5.EXECUTE_UPDATE)
    d = plan.observe(Report(0, 8), fresh=True)
    assert d.verdict is Verdict.FAIL and d.result == 8 and "after 2 attempts" in d.message

    plan = Reconciler(FIRMWARE_ROUTE, "dev", "/5/0", installs=5)
    plan.observe(Report(0, 0), fresh=True)
    plan.sent(Event5.WRITE_PACKAGE)
    plan.observe(Report(2, 0), fresh=True)
    plan.sent(Event5.EXECUTE_UPDATE)
    d = plan.observe(Report(0, 5), fresh=True)
    assert d.verdict is Verdict.FAIL and d.message == "Update on dev failed: Update Result 5 (integrity check failure)"


@pytest.mark.parametrize("oid", [9, 5])
@pytest.mark.parametrize("push", [True, False])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_reconciler_with_install_retries_stays_within_both_bounds(oid, push, data):
    """The random device of the test above, with installs retried: deliveries and Install /
    Update executions both stay within their bounds, failures name the device's result."""
    obj, route = OBJECTS[oid]
    device = TableDevice(oid)
    plan: Reconciler[Any, Any] = Reconciler(route, "dev", f"/{oid}/0", push=push, attempts=3, installs=3)
    executed, same, seen = 0, 0, None
    for _ in range(400):
        report = device.report()
        same = same + 1 if report == seen else 0
        seen = report
        decision = plan.stale() if same >= 6 else plan.observe(report, fresh=True)
        same = 0 if same >= 6 else same
        if decision.verdict in (Verdict.DONE, Verdict.FAIL):
            break
        if decision.verdict is Verdict.SEND:
            if device.apply(decision.event) is None:
                plan.sent(decision.event)
                executed += decision.event is route.install
            elif plan.refused(decision.event, "refused").verdict is Verdict.FAIL:
                break
        options = device.possible()
        if options:
            device.apply(data.draw(st.sampled_from(options)), data.draw(reasons))
    else:
        raise AssertionError("no end in 400 steps")
    assert device.deliveries <= 3 and executed <= 3 * 3
    if decision.verdict is Verdict.FAIL and "protocol error" not in decision.message and decision.result is not None:
        assert f"Update Result {decision.result}" in decision.message
