"""Delivery judged by what the objects mean, against simulated devices that behave like real
LwM2M clients rather than like our firmware:

* PkgName / PkgVersion of the device's own choosing (``PkgNames.DEVICE``: "pkg0" / "1"), or
  left empty: a delivery succeeds once, with one download, one Install, one Activate and no
  Uninstall (the loop of issue 15: the server used to compare the names with its manifest,
  Uninstall and start again); a second version goes beside the first, and rollback activates
  the first by the server's record of what it delivered where;
* no ML objects (33100 / 33101 not registered): the server never sends a request under /33101;
  object 9 is verified by Update State INSTALLED and Activation State true, object 5 (the
  "object-5-only" device) by Update Result 1 and then the device's registration Update - and an
  object 5 device that never registers again after its Update does not count as a success.

The device's side is checked too: the artifact it runs is the one the row names.
"""

from __future__ import annotations

import pytest

from lwm2m.path import Path
from simulator.software import PkgNames, real_client_names
from tests.deploy_helpers import Env, bounded, check_running, sha
from tests.test_deploy_faults import track_offers
from tinymlaas.deploy.delivery import Policy
from tinymlaas.deploy.service import DeployOptions

INT8 = DeployOptions(backend="tflm", precision="int8")
ML_OBJECTS = (33100, 33101)


def operations(env: Env) -> list[tuple[str, str]]:
    """(operation, path) of every request the server sends to a device."""
    srv, seen = env.server, []
    send = srv.send

    async def recording(endpoint, op, *a, **kw):
        seen.append((type(op).__name__, str(op.path)))
        return await send(endpoint, op, *a, **kw)
    srv.send = recording
    return seen


def without_ml_objects(device) -> None:
    """Before start: the device has neither 33100 nor 33101 (it registers neither), as a client
    no one here wrote; its Device object still names its board (a profile matches it)."""
    for oid in ML_OBJECTS:
        device.tree.delete(Path(oid, 0))


@pytest.mark.parametrize("names", [PkgNames.DEVICE, PkgNames.EMPTY])
async def test_device_chosen_names_deliver_once_then_beside_then_rollback(env, names):
    offers, ops = track_offers(env), operations(env)
    d = await env.device("real", before_start=lambda dev: real_client_names(dev, names))
    row = await bounded(env.dep.deploy("real", env.entry, INT8), 30)
    assert row["state"] == "succeeded", row["error"]
    await check_running(env, d, row)
    assert row["object_path"] == "/9/0"
    assert len(offers) == 1 and offers[0].downloads == 1  # one download
    execs = [p for op, p in ops if op == "Execute"]
    assert execs == ["/9/0/4", "/9/0/10"], execs  # one Install, one Activate, no Uninstall
    assert [p for op, p in ops if op == "Write" and p.startswith("/9/")] == ["/9/0/3"]
    shown = ("pkg0", "1") if names is PkgNames.DEVICE else ("", "")
    slot = row["inference"]["slot"]
    assert (slot["pkg_name"], slot["pkg_version"], slot["state"], slot["active"]) == (*shown, 4, True)
    assert shown != ("mnist", d.active[0].version)  # not the manifest's

    second = await bounded(env.dep.deploy("real", env.model("2"), INT8), 30)
    assert second["state"] == "succeeded" and second["object_path"] == "/9/1", second["error"]
    assert (d.active[0].name, d.active[0].version.split("+")[0]) == ("mnist", "2")
    back = await bounded(env.dep.rollback("real"), 30)
    assert (back["state"], back["method"], back["object_path"]) == ("succeeded", "activate", "/9/0"), back["error"]
    assert sha(d) == row["artifact_sha256"] == back["artifact_sha256"]
    assert len(offers) == 2  # the rollback downloaded nothing
    slots = await env.server.read("real", Path(9))
    assert (slots[Path(9, 0, 12)], slots[Path(9, 1, 12)]) == (True, False)


async def test_redeploying_what_a_slot_holds_needs_no_download(env):
    """The record says /9/0 holds this build (and the device still reports its names as then):
    deploying it again activates it there, without a download; a slot whose names changed since
    (another package went in) is not taken for it."""
    offers = track_offers(env)
    d = await env.device("again", before_start=real_client_names)
    first = await bounded(env.dep.deploy("again", env.entry, INT8), 30)
    second = await bounded(env.dep.deploy("again", env.model("2"), INT8), 30)
    assert (first["object_path"], second["object_path"]) == ("/9/0", "/9/1")
    third = await bounded(env.dep.deploy("again", env.entry, INT8), 30)
    assert third["state"] == "succeeded" and third["object_path"] == "/9/0", third["error"]
    assert [o.downloads for o in offers] == [1, 1, 0]  # offered, not fetched: /9/0 held it
    await check_running(env, d, third)
    d.tree.set(Path(9, 0, 1), "99")  # the device now says something else about /9/0
    fourth = await bounded(env.dep.deploy("again", env.model("2"), INT8), 30)
    assert fourth["state"] == "succeeded" and fourth["object_path"] == "/9/1"
    # back to version 1, which the device holds an older sequence number of: only a signed rollback
    # manifest may install it (anti-rollback), so the operator's way is rollback
    fifth = await bounded(env.dep.rollback("again"), 30)
    assert fifth["state"] == "succeeded" and fifth["object_path"] == "/9/0", fifth["error"]
    assert (fifth["kind"], fifth["version"]) == ("rollback", "1")
    assert offers[-1].downloads == 1  # no record stands for /9/0: delivered again (Uninstall first)


@pytest.mark.parametrize("obj", [9, 5])
async def test_without_ml_objects_the_update_object_is_the_evidence(env, obj):
    ops = operations(env)
    d = await env.device("plain", objects=(obj,), before_start=without_ml_objects)
    reg = env.server.registrations.by_endpoint["plain"]
    assert not set(ML_OBJECTS) & set(reg.objects())
    updates_before = d.client.updates
    row = await bounded(env.dep.deploy("plain", env.entry, INT8), 30)
    assert row["state"] == "succeeded", row["error"]
    assert not [p for _, p in ops if p.startswith(("/33100", "/33101"))], ops  # never asked
    assert sha(d) == row["artifact_sha256"] and d.active[0].sha256.hex() == row["artifact_sha256"]
    slot = row["inference"]["slot"]
    assert "count" not in row["inference"] and row["previous"] in ({}, {"object_path": None})
    if obj == 9:
        assert (slot["path"], slot["state"], slot["active"]) == ("/9/0", 4, True)
    else:  # Update Result 1, then the registration Update the device sent
        assert (slot["path"], slot["state"], slot["update_result"], slot["registration"]) == ("/5/0", 0, 1, "updated")
        assert d.client.updates > updates_before


async def test_object5_success_needs_the_device_to_come_back(tmp_path, shared, runner):
    """Update Result 1 alone is not a success: the device must register again or update its
    registration (running the new firmware); one that does not ends failed, naming it."""
    env = Env(tmp_path / "t.db", shared, runner, Policy(reregister_s=1.5))
    await env.start()
    try:
        d = await env.device("mute", objects=(5,))

        async def silent() -> None:
            return None
        d.firmware._announce = silent
        row = await bounded(env.dep.deploy("mute", env.entry, INT8), 30)
        assert row["state"] == "failed" and row["result_code"] == 1
        assert row["error"] == ("mute reported State 0 (Idle), Update Result 1 (firmware updated successfully) but "
                                "neither registered again nor updated its registration within 1.5 s of the Update: "
                                "the new firmware did not come up"), row["error"]
    finally:
        await env.stop()
