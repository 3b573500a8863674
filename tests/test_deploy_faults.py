"""Deployment under faults, over loopback against simulated MCUs: lossy radio, a link that drops
mid-transfer, reboots during download and install, a tampered package, a device without room
(honest or lying), a server restart mid-deployment and a campaign restarted half-way.

Each ends in success or a clear failure state; a device that had a runnable model still runs
one; the database neither loses nor duplicates deployment rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from device_profiles import get_profile
from simulator.faults import Faults, is_blockwise
from tests.deploy_helpers import Env, bounded, check_running, sha
from tinymlaas.deploy.campaigns import Campaigns
from tinymlaas.deploy.delivery import Policy
from tinymlaas.deploy.groups import members, save_group
from tinymlaas.deploy.service import TERMINAL, DeployOptions
from lwm2m.path import Path

pytestmark = pytest.mark.both_databases

INT8 = DeployOptions(backend="tflm", precision="int8")
F32 = DeployOptions(backend="tflm", precision="float32")
BLOCK = 512  # the simulated device asks for 512-byte Block2 blocks


def track_offers(env: Env) -> list:
    """Every package offer the server publishes (the Offer objects outlive their revocation)."""
    srv, offers = env.server, []
    real = srv.packages.publish

    def publish(data, *a, **kw):
        path = real(data, *a, **kw)
        offers.append(srv.packages.offer(path))
        return path
    srv.packages.publish = publish
    return offers


async def wait_for(cond, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- the radio ---------------------------------------------------------------------------------

@pytest.fixture
def loopback_radio(monkeypatch):
    """CoAP retransmission timing for a loopback "radio" (RTT well under a millisecond): ACK_TIMEOUT
    0.1 s instead of 2 s, 6 retransmissions, so one exchange ends within ~19 s, inside the
    Deployer's operation timeout (see the report: a timed-out exchange that is still being
    retransmitted holds every later request to the device, aiocoap's NSTART=1)."""
    from aiocoap.numbers.constants import TransportTuning
    monkeypatch.setattr(TransportTuning, "ACK_TIMEOUT", 0.1)
    monkeypatch.setattr(TransportTuning, "MAX_RETRANSMIT", 6)


async def test_thirty_percent_loss_on_pull(tmp_path, shared, runner, loopback_radio):
    env = Env(tmp_path / "t.db", shared, runner, Policy(op_timeout=25))
    await env.start()
    try:
        d = await env.device("lossy", faults=Faults(loss=0.3, seed=5))
        d.packages.attempts, d.packages.attempt_timeout = 30, 0.3
        row = await bounded(env.dep.deploy("lossy", env.entry, INT8), 55)
        assert row["state"] == "succeeded", row["error"]
        assert d.link is not None and d.link.decisions.count("loss") > 0  # the link really dropped datagrams
        assert d.link.decisions.count("loss") / len(d.link.decisions) > 0.15
        assert d.packages.download_stats["9/0"].retries > 0  # ...blocks of the download among them
        await check_running(env, d, row)
        assert await env.count() == 1
    finally:
        await env.stop()


async def test_link_drops_mid_transfer_and_the_download_resumes(env):
    d = await env.device("drop", faults=Faults(drop_after=5, drop_for=2, seed=1))
    offers = track_offers(env)
    served: list[bool] = []  # per datagram server -> device that passed: is it a block of a package?
    forward = d.link.forward

    def counting_forward(data, addr, from_server):
        n = len(d.link.decisions)
        forward(data, addr, from_server)
        if from_server and d.link.decisions[n:] == ["pass"]:
            served.append(is_blockwise(data) and len(data) > BLOCK)
    d.link.forward = counting_forward
    row = await bounded(env.dep.deploy("drop", env.entry, INT8), 40)
    assert row["state"] == "succeeded", row["error"]
    stats = d.packages.download_stats["9/0"]
    assert stats.retries > 0 and all(n > 0 for n in stats.resumed_at)  # resumed, not restarted
    blocks = math.ceil(row["package_size"] / BLOCK)
    assert len(offers) == 1 and offers[0].downloads == 1  # block 0 asked for once: one download
    # the blocks that reached the device, counted on the relay; the server answered each block
    # request itself (Offer.blocks_served), the dropped ones included
    sent = [e for e in served if e]
    assert blocks <= len(sent) < 2 * blocks, (blocks, len(sent))  # fewer blocks than two full downloads
    assert len(sent) <= offers[0].blocks_served < 2 * blocks
    assert stats.blocks == blocks
    await check_running(env, d, row)


# -- reboots -------------------------------------------------------------------------------------

async def test_reboot_during_download(env):
    d = await env.device("rb", faults=Faults(reboot_after=8, seed=2))
    row = await bounded(env.dep.deploy("rb", env.entry, INT8), 45)
    assert d.reboots == 1
    assert row["state"] in TERMINAL
    if row["state"] == "succeeded":  # resumed: the device reported it, and it runs the new artifact
        await check_running(env, d, row)
        assert d.packages.download_stats["9/0"].blocks > math.ceil(row["package_size"] / BLOCK)
    else:
        assert row["error"] and ("Update Result" in row["error"] or "gave up" in row["error"]), row["error"]
        assert d.active is None
    assert row["state"] == "succeeded", row["error"]  # and in practice: resumed by a second download


def reboot_during_install(d) -> None:
    """The first Install (object 9) or Update (object 5) on ``d`` is cut by a power cycle."""
    real, fired = d.packages.install, []

    async def install(artifact):
        if not fired:
            fired.append(True)
            d.spawn(d.reboot(), "power cut")
            await asyncio.sleep(0.3)
        return await real(artifact)
    d.packages.install = install


@pytest.mark.parametrize("obj", [9, 5])
async def test_reboot_during_install(env, obj):
    d = await env.device("rbi", objects=(obj,))
    reboot_during_install(d)
    row = await bounded(env.dep.deploy("rbi", env.entry, INT8), 45)
    assert d.reboots == 1
    assert row["state"] == "succeeded", row["error"]  # the server executed Install / Update again
    await check_running(env, d, row)
    assert row["object_path"] == ("/9/0" if obj == 9 else "/5/0")


# -- bad packages, no room -------------------------------------------------------------------------

@pytest.mark.parametrize("obj,result", [(9, 53), (5, 5)])
async def test_tampered_package_is_refused_and_the_old_model_keeps_running(env, obj, result):
    d = await env.device("tamper", objects=(obj,))
    first = await bounded(env.dep.deploy("tamper", env.entry, INT8), 30)
    await check_running(env, d, first)
    real_seal = env.dep.key.seal

    def tampered_seal(built, entry, *sequence):
        package = bytearray(real_seal(built, entry, *sequence))
        package[-3] ^= 0x01  # a byte of the artifact, after signing
        return bytes(package)
    env.dep.key.seal = tampered_seal
    row = await bounded(env.dep.deploy("tamper", env.model("2"), INT8), 30)
    assert row["state"] == "failed"
    assert row["result_code"] == result and f"Update Result {result}" in row["error"], row["error"]
    assert "integrity" in row["error"]
    # nothing installed; the previous model is still active and running
    assert (d.active[0].name, d.active[0].version.split("+")[0]) == ("mnist", "1")
    assert sha(d) == first["artifact_sha256"]
    if obj == 9:
        v = await env.server.read("tamper", Path(9, 1))
        assert (v[Path(9, 1, 7)], v[Path(9, 1, 9)]) == (0, 53)
        assert set(d.packages.flash_used) == {"9/0"}
        assert (await env.server.read("tamper", Path(9, 0, 12)))[Path(9, 0, 12)] is True
    else:
        v = await env.server.read("tamper", Path(5, 0))
        assert (v[Path(5, 0, 3)], v[Path(5, 0, 5)]) == (0, 5)
    await env.server.execute("tamper", Path(33101, 0, 10))  # run an inference: the old model still works
    inf = await env.server.read("tamper", Path(33101, 0))
    assert inf[Path(33101, 0, 2)].hex() == first["artifact_sha256"] and inf[Path(33101, 0, 3)] >= 2
    assert inf[Path(33101, 0, 8)] == 0
    assert [r["state"] for r in await env.rows()] == ["succeeded", "failed"]


async def test_not_enough_flash_for_any_candidate(env):
    real = get_profile("nrf52840")
    small = dataclasses.replace(real, firmware_flash=real.flash_total - sum(r.flash for r in real.runtimes) - 6000)
    assert small.flash_free == 6000
    d = await env.device("tiny", profile=small)
    row = await bounded(env.dep.deploy("tiny", env.entry), 30)
    assert row["state"] == "failed"
    assert "does not fit" in row["error"] and "flash short by" in row["error"], row["error"]
    for label in ("tflm float32", "tflm int8", "wasm float32", "wasm int8"):
        assert f"{label}: " in row["error"]
    assert d.packages.download_stats == {} and d.active is None
    v = await env.server.read("tiny", Path(9, 0))
    assert v[Path(9, 0, 7)] == 0 and v[Path(9, 0, 9)] == 0


async def test_device_that_lies_about_its_flash(env):
    d = await env.device("liar")
    d.packages.flash_used["firmware log"] = d.profile.flash_free - 2000  # taken, but never reported
    row = await bounded(env.dep.deploy("liar", env.entry, INT8), 30)
    assert row["state"] == "failed"
    assert row["result_code"] == 50 and "Update Result 50" in row["error"], row["error"]
    assert "not enough storage" in row["error"]
    assert d.active is None and set(d.packages.flash_used) == {"firmware log"}


# -- restarts ------------------------------------------------------------------------------------

async def test_server_restart_mid_deployment(db_url, shared, runner):
    db = db_url
    first = Env(db, shared, runner)
    await first.start()
    second: Env | None = None
    try:
        d = await first.device("slow", faults=Faults(latency=25, seed=3))
        port = first.server.address[1]
        dep = first.dep
        job = asyncio.ensure_future(dep.deploy("slow", first.entry, F32))
        await bounded(wait_for(lambda: "9/0" in d.packages.download_stats
                               and d.packages.download_stats["9/0"].blocks >= 5, 30, "the download"), 35)
        before = await first.rows()
        assert len(before) == 1 and before[0]["state"] == "delivering"
        inflight = list(dep.tasks.values())
        dep.close()  # stop without ending the deployment
        await asyncio.gather(*inflight, return_exceptions=True)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        first.devices.remove(d)
        await first.stop_server()

        second = Env(db, shared, runner)
        await second.start(port=port)  # same address: the device's registration carries on
        second.devices.append(d)
        rows = await second.rows()
        assert len(rows) == 1 and rows[0]["state"] not in TERMINAL  # the row was left in flight
        ids = await second.dep.resume()
        assert ids == [rows[0]["id"]]
        row = await bounded(second.dep.run(ids[0]), 60)
        assert row["state"] == "succeeded", row["error"]
        assert row["attempts"] >= 2
        await check_running(second, d, row)
        assert await second.count() == 1  # nothing duplicated, nothing lost
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_campaign_restart_with_the_real_deployer(db_url, shared, runner):
    db = db_url
    first = Env(db, shared, runner)
    await first.start()
    second: Env | None = None
    eps = [f"fleet-{i}" for i in range(6)]
    try:
        for ep in eps:
            await first.device(ep, faults=Faults(latency=15, seed=4))
        store = first.server.store
        await save_group(store, "nrfs", {"profile": "nrf52840"})

        async def all_members() -> None:
            while await members(store, first.server.registrations, {"profile": "nrf52840"}) != sorted(eps):
                await asyncio.sleep(0.05)
        await bounded(all_members(), 20)
        campaigns = Campaigns(first.dep)
        cid = await campaigns.start("fleet", "mnist:1", "nrfs", stages=(0.34, 1.0), concurrency=2,
                                    options=INT8)

        async def some_done() -> None:
            while not any(r["state"] == "succeeded" for r in await first.dep.list(campaign_id=cid)):
                await asyncio.sleep(0.05)
        await bounded(some_done(), 40)
        await campaigns.stop()
        first.dep.close()
        await first.stop()  # devices and server
        # the new server is elsewhere: the devices are re-flashed with its address and register there

        second = Env(db, shared, runner)
        await second.start()
        rows = await second.rows()
        done_before = {r["endpoint"] for r in rows if r["state"] == "succeeded"}
        assert 1 <= len(done_before) < len(eps)  # stopped half-way
        assert len({r["endpoint"] for r in rows}) == len(rows)
        for ep in eps:
            await second.device(ep)
        campaigns = Campaigns(second.dep)
        assert await campaigns.resume_all() == [cid]
        await bounded(campaigns.wait(cid), 90)
        status = await campaigns.status(cid)
        assert status["state"] == "completed", status
        rows = await second.rows()
        assert sorted(r["endpoint"] for r in rows) == sorted(eps)  # exactly one row per device
        assert all(r["state"] == "succeeded" and r["campaign_id"] == cid for r in rows), \
            [(r["endpoint"], r["state"], r["error"]) for r in rows]
        for d in second.devices:
            if d.endpoint not in done_before:  # those were deployed after the restart, to these devices
                row = next(r for r in rows if r["endpoint"] == d.endpoint)
                await check_running(second, d, row)
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_capability_read_survives_a_link_outage(env):
    d = await env.device("outage", faults=Faults(latency=1, seed=1))
    await asyncio.sleep(0.3)  # let the capability read at registration finish
    d.link.asleep = True  # the radio is out for 11 s, then back
    job = asyncio.ensure_future(env.dep.deploy("outage", env.entry, INT8))
    await asyncio.sleep(11)
    d.link.asleep = False
    row = await bounded(job, 60)
    assert row["state"] == "succeeded", row["error"]
    await check_running(env, d, row)


class RunsOnly:
    """A device's model runner that installs anything but runs only the artifact ``sha``."""

    def __init__(self, runner, sha256: str) -> None:
        self.runner, self.sha256 = runner, sha256

    async def check(self, *args, **kw):
        return await self.runner.check(*args, **kw)

    async def run(self, blob, plan, inputs=None):
        import hashlib

        from simulator.runtimes import ModelError
        if hashlib.sha256(blob).hexdigest() != self.sha256:
            raise ModelError("runtime-error", "invoke failed (test: this board cannot run the new build)")
        return await self.runner.run(blob, plan, inputs)


async def test_new_model_that_does_not_run_gives_way_to_the_previous(env):
    d = await env.device("norun")
    first = await bounded(env.dep.deploy("norun", env.entry, INT8), 30)
    await check_running(env, d, first)
    d.runner = RunsOnly(d.runner, first["artifact_sha256"])
    row = await bounded(env.dep.deploy("norun", env.model("2"), F32), 30)
    assert row["state"] == "failed" and "produced no inference" in row["error"], row["error"]
    assert "is active again" in row["error"] and row["inference"]["errors"] == 1
    assert sha(d) == first["artifact_sha256"]  # the previous model runs again, in its instance
    assert (await env.server.read("norun", Path(9, 0, 12)))[Path(9, 0, 12)] is True
    assert (await env.server.read("norun", Path(9, 1, 12)))[Path(9, 1, 12)] is False


async def test_operator_cancel_ends_cancelled_and_the_old_model_stays(env):
    d = await env.device("slow", faults=Faults(latency=40))
    first = await bounded(env.dep.deploy("slow", env.entry, INT8), 60)
    assert first["state"] == "succeeded", first["error"]
    dep_id = await env.dep.create("slow", env.model("2"), F32)
    task = asyncio.ensure_future(env.dep.run(dep_id))
    for _ in range(300):  # until the package is on its way
        if (await env.dep.get(dep_id))["state"] == "delivering":
            break
        await asyncio.sleep(0.05)
    env.dep.cancel(dep_id)
    row = await bounded(task, 10)
    assert row["state"] == "cancelled" and row["error"] == "cancelled by the operator"
    assert row["finished_at"] is not None
    assert sha(d) == first["artifact_sha256"]
    assert [r["state"] for r in await env.rows("slow")] == ["succeeded", "cancelled"]
