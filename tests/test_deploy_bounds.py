"""Bounded delivery, over loopback against simulated MCUs: devices that keep failing end as failed
within the policy's bounds, with their own state and result named, and the package bytes the
server put on the wire stay within (retries + 1) x the package size.

Bytes are counted on the wire: each device talks to the server through its relay
(``simulator.faults.FaultyLink``), and every datagram the server sends through it is decoded
(aiocoap) and the payload of each package block counted: Block2 responses (the device pulls)
and Block1 requests (the server pushes). Covered: a device that always fails its install
(object 9 and 5, pull and push), one whose link always drops near the end of the download,
one whose object 5 never leaves Downloading (as Eclipse Wakaama's example client) and one whose
object 9 install never ends (stale-state timer: reset per the table, retried within the bound,
then failed naming the state), and one deployment per device (409-style refusal, or queued).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from aiocoap import Message

from lwm2m.path import Path
from lwm2m.updates import Reason
from simulator.download import DownloadError
from simulator.faults import Faults
from simulator.software import Failure
from tests.deploy_helpers import Env, bounded, check_running
from tests.test_deploy_faults import track_offers
from tinymlaas.deploy.delivery import Policy
from tinymlaas.deploy.service import DeployOptions
from tinymlaas.deploy.turns import DeploymentConflict

INT8 = DeployOptions(backend="tflm", precision="int8")
RELAY = Faults(latency=0.01)  # a relay (to count on) that changes nothing


class Wire:
    """Package bytes the server sent to one device, counted on its relay."""

    def __init__(self, device: Any) -> None:
        self.bytes = self.blocks = 0
        link = device.link
        assert link is not None, "the device needs its relay (Faults that need a link)"
        forward = link.forward

        def counting(data: bytes, addr: Any, from_server: bool) -> None:
            if from_server:
                msg = Message.decode(data)
                if (msg.code.is_response() and msg.opt.block2 is not None) or \
                        (msg.code.is_request() and msg.opt.block1 is not None):
                    self.bytes += len(msg.payload)
                    self.blocks += 1
            forward(data, addr, from_server)
        link.forward = counting


def record_operations(env: Env) -> list[tuple[str, str]]:
    """(operation, path) of every Write / Execute the server sends."""
    srv, seen = env.server, []
    write, execute = srv.write, srv.execute

    async def recording_write(endpoint, path, content, *a, **kw):
        for p, v in content.items():
            seen.append(("write" if v not in ("", b"") else "write empty", str(p)))
        return await write(endpoint, path, content, *a, **kw)

    async def recording_execute(endpoint, path, *a, **kw):
        seen.append(("execute", str(path)))
        return await execute(endpoint, path, *a, **kw)
    srv.write, srv.execute = recording_write, recording_execute
    return seen


@pytest.fixture
async def strict(tmp_path, shared, runner):
    """A server whose delivery policy is small enough to reach its bounds in a test."""
    env = Env(tmp_path / "t.db", shared, runner, Policy(download_attempts=3, install_attempts=3, stale_s=1.5,
                                                        backoff_s=(0.1, 0.5), reregister_s=5.0))
    await env.start()
    yield env
    await env.stop()


# -- a device that always fails its install ---------------------------------------------------------

@pytest.mark.parametrize("method", ["pull", "push"])
@pytest.mark.parametrize("obj,result,install", [(9, 58, "/9/0/4"), (5, 8, "/5/0/2")])
async def test_a_device_that_always_fails_install_ends_failed_within_the_bounds(strict, obj, result, install, method):
    d = await strict.device("bad", objects=(obj,), faults=RELAY)
    wire, ops = Wire(d), record_operations(strict)

    async def refuses(artifact):
        raise Failure(Reason.INSTALL_FAILURE, "test: this board's loader refuses every package")
    d.packages.install = refuses
    row = await bounded(strict.dep.deploy("bad", strict.entry, dataclasses.replace(INT8, method=method)), 60)
    assert row["state"] == "failed"
    assert row["result_code"] == result and f"Update Result {result}" in row["error"], row["error"]
    assert row["error"].endswith("after 3 attempts"), row["error"]
    assert ops.count(("execute", install)) == 3  # install_attempts, not one more
    retries, size = strict.policy.download_attempts - 1, row["package_size"]
    print(f"install fails, object {obj}, {method}: {wire.bytes:,} B sent in {wire.blocks} blocks, "
          f"package {size:,} B, bound {(retries + 1) * size:,} B")
    assert size <= wire.bytes <= (retries + 1) * size, (wire.bytes, size)
    assert d.active is None


# -- a link that always drops near the end of the download -----------------------------------------

@dataclasses.dataclass(frozen=True)
class DropsAt(Faults):
    """The device loses its connection when block ``at`` of a pulled package arrives, every time."""

    at: int = 0

    def mangle_block(self, num: int, payload: bytes) -> bytes:
        if num == self.at:
            raise DownloadError("connection-lost", f"test: the link drops at block {num}")
        return payload


@pytest.mark.parametrize("obj,result", [(9, 52), (5, 4)])
async def test_a_download_that_always_loses_the_connection_is_offered_attempts_times(strict, obj, result):
    d = await strict.device("drops", objects=(obj,), faults=RELAY)
    wire = Wire(d)
    blocks = -(-len(strict.dep.key.seal(await one_build(strict, "drops"), strict.entry)) // 512)
    d.faults = DropsAt(latency=0.01, at=blocks - 2)  # nearly the whole package, each time
    row = await bounded(strict.dep.deploy("drops", strict.entry, INT8), 60)
    assert row["state"] == "failed" and row["result_code"] == result, row["error"]
    assert f"Update Result {result}" in row["error"] and row["error"].endswith("after 3 attempts"), row["error"]
    attempts, size = strict.policy.download_attempts, row["package_size"]
    print(f"connection lost, object {obj}: {wire.bytes:,} B sent in {wire.blocks} blocks, package {size:,} B, "
          f"bound {attempts * size:,} B")
    assert (attempts - 1) * size < wire.bytes <= attempts * size, (wire.bytes, size)  # three downloads, no fourth


async def one_build(env: Env, endpoint: str) -> Any:
    target = await env.dep.target(endpoint)
    _, _, built = await env.dep.decide(target, env.entry, INT8)
    return built


# -- stale state ---------------------------------------------------------------------------------------

async def test_object5_that_never_leaves_downloading_is_reset_then_failed_naming_the_state(strict):
    """As Wakaama's example client: the Package URI is accepted, State stays 1 (Downloading)."""
    d = await strict.device("stuck", objects=(5,), faults=RELAY)
    assert d.firmware is not None
    d.firmware._start_download = lambda: None  # takes the URI, never fetches it
    wire, ops = Wire(d), record_operations(strict)
    started = time.monotonic()
    row = await bounded(strict.dep.deploy("stuck", strict.entry, INT8), 60)
    took = time.monotonic() - started
    assert row["state"] == "failed"
    assert row["error"] == "stuck/5/0 made no progress in State 1 (Downloading), Update Result 0 (initial)"
    assert row["result_code"] == 0
    uris = [p for op, p in ops if op == "write" and p == "/5/0/1"]
    resets = [p for op, p in ops if op == "write empty" and p == "/5/0/1"]
    assert len(uris) == strict.policy.download_attempts and len(resets) == strict.policy.download_attempts - 1
    assert wire.bytes == 0  # it never fetched
    policy = strict.policy  # three stale periods plus compiling, polls and backoffs
    assert took < policy.download_attempts * (policy.stale_s + policy.poll_s + policy.observed_poll_s) + 20
    v = await strict.server.read("stuck", Path(5, 0))
    assert (v[Path(5, 0, 3)], v[Path(5, 0, 5)]) == (1, 0)


async def test_object9_install_that_never_ends_is_uninstalled_and_retried_then_failed(strict):
    """Install is accepted and the device stays DELIVERED (an install in the background that
    never finishes): per the table, Uninstall and deliver again, within the bound."""
    d = await strict.device("hangs", faults=RELAY)
    wire, ops = Wire(d), record_operations(strict)

    async def never() -> None:
        await asyncio.sleep(0)  # accepted; the install goes on "in the background" forever
    for slot in d.software:
        slot._install = never
    row = await bounded(strict.dep.deploy("hangs", strict.entry, INT8), 60)
    assert row["state"] == "failed"
    assert row["error"] == ("hangs/9/0 made no progress in Update State 3 (DELIVERED), Update Result 3 "
                            "(downloaded and verified)"), row["error"]
    assert ops.count(("execute", "/9/0/6")) == strict.policy.download_attempts - 1  # Uninstall, the table's reset
    assert [p for op, p in ops if op == "write"].count("/9/0/3") == strict.policy.download_attempts
    assert wire.bytes <= strict.policy.download_attempts * row["package_size"]


# -- one deployment per device -------------------------------------------------------------------------

async def test_one_deployment_per_device_refused_or_queued(env):
    d = await env.device("one", faults=Faults(latency=15))
    first = await env.dep.create("one", env.entry, INT8)
    job = asyncio.ensure_future(env.dep.run(first))
    with pytest.raises(DeploymentConflict) as info:
        await env.dep.create("one", env.model("2"), INT8)
    assert info.value.code.dotted == "4.09" and info.value.running_id == first
    assert f"one has deployment {first} (mnist:1, " in info.value.message
    assert "--after-current" in info.value.message and f"deployments cancel {first}" in info.value.message
    assert [r["id"] for r in await env.rows("one")] == [first]  # nothing was written for the refused one
    queued = await env.dep.create("one", env.model("2"), INT8, after_current=True)
    assert (await env.dep.get(queued))["state"] == "queued"
    by_campaign = await env.dep.create("one", env.model("2"), INT8, campaign_id=7)  # a campaign's: queued too
    assert (await env.dep.get(by_campaign))["state"] == "queued"
    await env.dep.cancel_row(by_campaign)  # nothing runs it: the operator's cancel ends the row
    gone = await env.dep.get(by_campaign)
    assert (gone["state"], gone["error"]) == ("cancelled", "cancelled by the operator (it was not running)")
    second = await bounded(env.dep.run(queued), 90)
    done = await bounded(job, 30)
    assert (done["state"], second["state"]) == ("succeeded", "succeeded"), (done["error"], second["error"])
    assert second["object_path"] == "/9/1"
    history = [e for e in await events(env, "one") if e["id"] == queued]
    assert history[0]["state"] == "queued" and history[0]["after"] == first
    deciding = next(e["ts"] for e in history if e.get("state") == "deciding")
    assert deciding >= done["finished_at"]  # it ran after the first one ended
    await check_running(env, d, second)


async def events(env: Env, endpoint: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from tinymlaas.store.tables import EVENTS
    q = select(EVENTS).where(EVENTS.c.endpoint == endpoint, EVENTS.c.kind == "deployment").order_by(EVENTS.c.id)
    return [{"ts": e.ts, **e.detail} for e in await env.server.store.read(lambda c: list(c.execute(q)))]



async def test_time_the_device_cannot_be_reached_is_not_stale(tmp_path, shared, runner):
    """The stale clock counts only time in which the device answers: an install that takes 5 s
    in the background (Update State DELIVERED all along), during the first 4 s of which the
    server gets no answer at all, is not stale with a 3 s allowance; it succeeds, one download."""
    from tinymlaas.server.device_client import DeviceTimeout

    # op_attempts: enough tries to outlast the 4 s outage whatever the jitter draws (the bound is not under test)
    env = Env(tmp_path / "t.db", shared, runner, Policy(stale_s=3.0, backoff_s=(0.1, 0.4), op_attempts=60))
    await env.start()
    try:
        d = await env.device("naps")
        offers = track_offers(env)
        for slot in d.software:
            real = slot._install

            async def background(real=real) -> None:
                async def later() -> None:
                    await asyncio.sleep(5)
                    await real()
                d.spawn(later(), "install in the background")
            slot._install = background
        srv, outage = env.server, []
        read, execute = srv.read, srv.execute

        async def no_answer_read(endpoint, path, **kw):
            if outage and time.monotonic() < outage[0]:
                await asyncio.sleep(0.2)
                raise DeviceTimeout(f"test: {endpoint} does not answer")
            return await read(endpoint, path, **kw)

        async def recording_execute(endpoint, path, *a, **kw):
            await execute(endpoint, path, *a, **kw)
            if str(path) == "/9/0/4" and not outage:
                outage.append(time.monotonic() + 4.0)
        srv.read, srv.execute = no_answer_read, recording_execute
        row = await bounded(env.dep.deploy("naps", env.entry, INT8), 60)
        assert row["state"] == "succeeded", row["error"]
        assert outage and [o.downloads for o in offers] == [1]
        await check_running(env, d, row)
    finally:
        await env.stop()
