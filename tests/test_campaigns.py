"""Groups and staged campaigns over a real SQLite database and a fake deployer.

The fake has the ``Deployer`` interface and writes real deployment rows through the store, so
what survives a restart is what the database holds; its outcome per device, its delay and a
gate that holds deployments are set by each test, and it records the peak concurrency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from tinymlaas.api.campaign_routes import register as register_routes
from tinymlaas.cli import campaigns as cli_campaigns
from tinymlaas.cli.client import CliError
from tinymlaas.deploy import groups
from tinymlaas.deploy.campaigns import Campaigns, stage_bounds
from tinymlaas.deploy.service import TERMINAL, DeployOptions
from lwm2m.errors import LwM2MError, NotFound
from tinymlaas.registry import ModelEntry, RegistryError
from tinymlaas.store import Store
from tinymlaas.store.tables import CAMPAIGNS, CAPABILITY_SNAPSHOTS, DEPLOYMENTS, DEVICES, EVENTS

pytestmark = pytest.mark.both_databases

LIMIT = 10.0  # seconds per test body


class FakeRegistry:
    def get(self, name: str, version: str | None = None) -> ModelEntry:
        if version is None and ":" in name:
            name, version = name.split(":", 1)
        if name != "kws":
            raise RegistryError(f"no model {name}; known: kws")
        return ModelEntry("kws", version or "3", "ab" * 32, "onnx", 100, Path("kws.onnx"), None, 0.0)


class FakeDeployer:
    """``Deployer``'s interface; rows are real, the work is a sleep (or a wait on ``gate``)."""

    def __init__(self, store: Store, registrations: dict[str, Any] | None = None, delay: float = 0.0,
                 outcome: Callable[[str, int], str] | None = None, gate: asyncio.Event | None = None) -> None:
        self.server = SimpleNamespace(store=store, registrations=SimpleNamespace(by_endpoint=registrations or {}))
        self.registry = FakeRegistry()
        self.delay, self.gate = delay, gate
        self.outcome = outcome or (lambda ep, n: "succeeded")
        self.active = self.peak = self.finished = 0
        self.created: list[tuple[str, int]] = []   # (endpoint, results finished when it was created)
        self.ran: list[int] = []
        self.cancelled: set[int] = set()
        self.tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}

    async def create(self, endpoint: str, entry: ModelEntry, options: DeployOptions,
                     campaign_id: int | None = None) -> int:
        now = time.time()
        row = {"endpoint": endpoint, "campaign_id": campaign_id, "model": entry.name, "version": entry.version,
               "model_sha256": entry.sha256, "options": options.as_json(), "state": "pending",
               "created_at": now, "updated_at": now}
        dep_id = await self.server.store.write(lambda c: c.execute(insert(DEPLOYMENTS).values(**row))
                                               .inserted_primary_key[0])
        self.created.append((endpoint, self.finished))
        return int(dep_id)

    async def _set(self, dep_id: int, state: str, error: str | None = None) -> dict[str, Any]:
        def write(c: Any) -> dict[str, Any]:
            c.execute(update(DEPLOYMENTS).where(DEPLOYMENTS.c.id == dep_id)
                      .values(state=state, error=error, updated_at=time.time()))
            return dict(c.execute(select(DEPLOYMENTS).where(DEPLOYMENTS.c.id == dep_id)).one()._mapping)
        return await self.server.store.write(write)

    async def _work(self, dep_id: int) -> dict[str, Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            row = await self._set(dep_id, "delivering")
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            state = self.outcome(row["endpoint"], self.finished)
            result = await self._set(dep_id, state, None if state == "succeeded" else "device said no")
            self.finished += 1
            return result
        except asyncio.CancelledError:
            if dep_id in self.cancelled:
                return await self._set(dep_id, "cancelled", "cancelled")
            raise  # the server stops: the row stays as it is
        finally:
            self.active -= 1

    async def run(self, deployment_id: int) -> dict[str, Any]:
        self.ran.append(deployment_id)
        task = self.tasks[deployment_id] = asyncio.create_task(self._work(deployment_id))
        return await task

    def cancel(self, deployment_id: int) -> None:
        self.cancelled.add(deployment_id)
        if deployment_id in self.tasks:
            self.tasks[deployment_id].cancel()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store(db_url)
    s.start()
    yield s
    s.close()


def add_devices(store: Store, n: int, prefix: str = "dev", **extra: Any) -> list[str]:
    names = [f"{prefix}-{i:03d}" for i in range(n)]
    rows = [{"endpoint": ep, "first_seen": 1.0, "last_seen": 1.0, "lwm2m_version": "1.1", "tags": "", **extra}
            for ep in names]
    store.write_sync(lambda c: c.execute(insert(DEVICES), rows))
    return names


async def new_campaign(store: Store, fake: FakeDeployer, n: int, **kw: Any) -> tuple[Campaigns, int]:
    add_devices(store, n)
    await groups.save_group(store, "all", {"query": "endpoint=dev-*"})
    campaigns = Campaigns(fake)  # type: ignore[arg-type]
    cid = await campaigns.start(None, "kws", "all", **kw)
    return campaigns, cid


def rows_of(store: Store, cid: int) -> list[Any]:
    return store.read_sync(lambda c: list(c.execute(select(DEPLOYMENTS).where(DEPLOYMENTS.c.campaign_id == cid)
                                                    .order_by(DEPLOYMENTS.c.id))))


def campaign_row(store: Store, cid: int) -> Any:
    return store.read_sync(lambda c: c.execute(select(CAMPAIGNS).where(CAMPAIGNS.c.id == cid)).one())


async def until(cond: Callable[[], bool], seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), seconds)


# -- groups ----------------------------------------------------------------------------------

async def test_groups_by_tag_profile_and_query(store: Store) -> None:
    rows: list[dict[str, Any]] = [
        {"endpoint": "a", "profile": "nrf52840", "tags": "lab,door", "lwm2m_version": "1.0"},
        {"endpoint": "b", "profile": "nrf5340", "tags": "field", "lwm2m_version": "1.1"},
        {"endpoint": "c", "profile": None, "tags": "", "lwm2m_version": "1.2"},
        {"endpoint": "d", "profile": "esp32s3", "tags": "field,lab", "lwm2m_version": "1.1"},
    ]
    store.write_sync(lambda c: c.execute(insert(DEVICES), [{"first_seen": 1.0, "last_seen": 1.0, **r} for r in rows]))
    snaps = [  # c reports through the ML capability object, d through the Device object + profile
        {"endpoint": "c", "taken_at": 1.0, "source": "ml-capability-object",
         "data": {"/33100/0/4": "cortex-m33", "/33100/0/13": "stm32u5", "/33100/0/9/0": "tflm 2024-06 [cmsis-nn]",
                  "/33100/0/9/1": "wasm 1.0"}},
        {"endpoint": "d", "taken_at": 0.5, "source": "device-object", "data": {"core": "old"}},
        {"endpoint": "d", "taken_at": 1.0, "source": "device-object+profile",
         "data": {"core": "xtensa-lx7", "runtimes": {"tflm": {}}}},
    ]
    store.write_sync(lambda c: c.execute(insert(CAPABILITY_SNAPSHOTS), snaps))
    live = {"b": SimpleNamespace(lwm2m_version="1.2"), "c": SimpleNamespace(lwm2m_version="1.2")}

    async def pick(**selector: str) -> list[str]:
        return await groups.members(store, live, selector)

    assert await pick(tag="lab") == ["a", "d"]
    assert await pick(profile="nrf5*") == ["a", "b"]
    assert await pick(profile="stm32u5") == ["c"]  # from the capability snapshot
    assert await pick(query="runtime=tflm") == ["c", "d"]
    assert await pick(query="runtime=wasm,core=cortex-m3*") == ["c"]
    assert await pick(query="core=old") == []  # only the latest snapshot counts
    assert await pick(query="registered=yes") == ["b", "c"]
    assert await pick(query="registered=no,tag!=lab") == []
    assert await pick(query="lwm2m=1.2") == ["b", "c"]  # the live registration's version wins
    assert await pick(query="tag=") == ["c"]
    assert await pick(tag="field", query="endpoint!=b") == ["d"]
    assert await pick(query="ENDPOINT=*") == ["a", "b", "c", "d"]

    with pytest.raises(ValueError, match=r"query key 'flavour' is not known; allowed keys: endpoint, profile, tag"):
        await pick(query="profile=x,flavour=vanilla")
    with pytest.raises(ValueError, match="expected key=value"):
        await pick(query="nrf52")
    with pytest.raises(ValueError, match="registered is one of yes, no"):
        await pick(query="registered=maybe")
    with pytest.raises(ValueError, match="needs a tag, a profile or a query"):
        await pick()

    await groups.save_group(store, "lab", {"tag": "lab"})
    await groups.save_group(store, "lab", {"tag": "lab", "query": "registered=no"})  # replaced
    assert [g["name"] for g in await groups.list_groups(store)] == ["lab"]
    assert (await groups.get_group(store, "lab"))["selector"] == {"tag": "lab", "profile": None,
                                                                  "query": "registered=no"}
    with pytest.raises(NotFound, match="no group 'nope'; known: lab"):
        await groups.get_group(store, "nope")
    with pytest.raises(ValueError, match="group name"):
        await groups.save_group(store, "bad name", {"tag": "x"})


# -- campaigns -------------------------------------------------------------------------------

async def test_stages_start_devices_in_the_right_counts(store: Store) -> None:
    fake = FakeDeployer(store, delay=0.001)
    campaigns, cid = await new_campaign(store, fake, 200, concurrency=50)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    row = campaign_row(store, cid)
    assert (row.state, row.stage) == ("completed", 2)
    assert stage_bounds(row.stages, 200) == [2, 20, 200]
    deps = rows_of(store, cid)
    assert len(deps) == 200 and len({d.endpoint for d in deps}) == 200
    assert [d.endpoint for d in deps[:2]] == row.endpoints[:2]  # stage 1: the first 2 of the order
    assert {d.endpoint for d in deps[:20]} == set(row.endpoints[:20])  # stage 2: the first 20
    # no device of a stage started before every device of the stage before had finished
    assert all(done >= 2 for _, done in fake.created[2:20])
    assert all(done >= 20 for _, done in fake.created[20:])
    status = await campaigns.status(cid)
    assert [(s["devices"], s["succeeded"]) for s in status["stage_progress"]] == [(2, 2), (18, 18), (180, 180)]
    assert status["counts"] == {"succeeded": 200, "not started": 0}
    assert [h["state"] for h in status["history"]] == ["running", "running", "running", "completed"]
    assert (await campaigns.list())[0]["succeeded"] == 200


async def test_concurrency_limit_is_never_exceeded(store: Store) -> None:
    fake = FakeDeployer(store, delay=0.01)
    campaigns, cid = await new_campaign(store, fake, 60, stages=(0.5, 1.0), concurrency=7)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    assert campaign_row(store, cid).state == "completed"
    assert fake.peak == 7


async def test_missed_success_threshold_halts_with_a_note(store: Store) -> None:
    fake = FakeDeployer(store, outcome=lambda ep, n: "failed" if n < 2 else "succeeded")
    campaigns, cid = await new_campaign(store, fake, 20, stages=(0.5, 1.0), success_threshold=0.9,
                                        error_threshold=1.0, concurrency=1)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    row = campaign_row(store, cid)
    assert row.state == "halted" and row.finished_at is not None
    assert row.note == "success threshold missed in stage 1: 8 of 10 devices succeeded (80.0% < 90.0%)"
    assert len(rows_of(store, cid)) == 10  # stage 2 never started
    events = store.read_sync(lambda c: [e.detail for e in c.execute(select(EVENTS).where(EVENTS.c.kind == "campaign"))])
    assert events[-1] == {"id": cid, "state": "halted", "note": row.note}


async def test_error_threshold_halts_early(store: Store) -> None:
    fake = FakeDeployer(store, delay=0.005, outcome=lambda ep, n: "failed")
    campaigns, cid = await new_campaign(store, fake, 200, stages=(1.0,), concurrency=4)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    row = campaign_row(store, cid)
    assert row.state == "halted" and row.note.startswith("error threshold exceeded: ")
    started = len(rows_of(store, cid))
    assert 10 <= started <= 10 + 4  # checked from 10 finished; only the in-flight ones ended after that
    assert all(d.state == "failed" for d in rows_of(store, cid))
    await asyncio.sleep(0.05)
    assert len(rows_of(store, cid)) == started


async def test_pause_stops_new_starts_and_resume_continues(store: Store) -> None:
    fake = FakeDeployer(store, delay=0.02)
    campaigns, cid = await new_campaign(store, fake, 30, stages=(1.0,), concurrency=2)
    await until(lambda: fake.finished >= 4)
    assert (await campaigns.pause(cid))["state"] == "paused"
    await until(lambda: fake.active == 0)
    paused_at = len(rows_of(store, cid))
    await asyncio.sleep(0.1)
    assert len(rows_of(store, cid)) == paused_at < 30
    assert all(d.state in TERMINAL for d in rows_of(store, cid))  # in-flight ones finished
    assert campaign_row(store, cid).state == "paused"
    with pytest.raises(LwM2MError, match="campaign .* is paused; only a running campaign can be paused"):
        await campaigns.pause(cid)
    await campaigns.resume(cid)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    assert campaign_row(store, cid).state == "completed"
    assert len(rows_of(store, cid)) == 30


async def test_cancel_cancels_in_flight(store: Store) -> None:
    fake = FakeDeployer(store, gate=asyncio.Event())
    campaigns, cid = await new_campaign(store, fake, 20, stages=(1.0,), concurrency=3)
    await until(lambda: fake.active == 3)
    await campaigns.cancel(cid)
    await asyncio.wait_for(campaigns.wait(cid), LIMIT)
    deps = rows_of(store, cid)
    assert [d.state for d in deps] == ["cancelled"] * 3
    assert fake.cancelled == {d.id for d in deps}
    row = campaign_row(store, cid)
    assert row.state == "cancelled"
    with pytest.raises(LwM2MError, match="is cancelled"):
        await campaigns.resume(cid)


async def test_restart_mid_campaign_resumes_without_duplicates(db_url: str) -> None:
    url = db_url
    first = Store(url)
    first.start()
    fake = FakeDeployer(first, delay=0.03)
    campaigns, cid = await new_campaign(first, fake, 40, stages=(0.1, 1.0), concurrency=5)
    await until(lambda: fake.finished >= 12)
    await asyncio.wait_for(campaigns.stop(), LIMIT)  # the server stops
    before = rows_of(first, cid)
    assert campaign_row(first, cid).state == "running" and campaign_row(first, cid).stage == 1
    open_ids = {d.id for d in before if d.state not in TERMINAL}
    assert open_ids and len(before) < 40
    first.close()

    second = Store(url)  # the server starts again over the same database
    second.start()
    try:
        fake2 = FakeDeployer(second, delay=0.001)
        again = Campaigns(fake2)  # type: ignore[arg-type]
        assert await again.resume_all() == [cid]
        await asyncio.wait_for(again.wait(cid), LIMIT)
        assert campaign_row(second, cid).state == "completed"
        deps = rows_of(second, cid)
        assert sorted(d.endpoint for d in deps) == sorted(campaign_row(second, cid).endpoints)  # one each
        assert all(d.state == "succeeded" for d in deps)
        assert open_ids <= set(fake2.ran)  # the unfinished ones were run again, not re-created
        assert len(fake2.created) == 40 - len(before)
    finally:
        second.close()


# -- API -------------------------------------------------------------------------------------

async def test_api_routes(store: Store) -> None:
    add_devices(store, 5, tags="lab")
    fake = FakeDeployer(store)
    campaigns = Campaigns(fake)  # type: ignore[arg-type]
    app = FastAPI()

    @app.exception_handler(LwM2MError)
    async def lwm2m_error(_request: Request, exc: LwM2MError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=400 + (int(exc.code) & 0x1F))

    register_routes(app, campaigns, [])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        async def go() -> None:
            r = await http.post("/groups", json={"name": "lab", "tag": "lab"})
            assert r.status_code == 200 and len(r.json()["members"]) == 5
            r = await http.post("/groups", json={"name": "bad", "query": "colour=red"})
            assert r.status_code == 400 and "query key 'colour' is not known" in r.json()["error"]
            assert (await http.get("/groups")).json()[0]["count"] == 5
            assert (await http.get("/groups/lab")).json()["members"][0] == "dev-000"
            assert (await http.get("/groups/nope")).status_code == 404
            r = await http.post("/campaigns", json={"model": "nope", "group": "lab"})
            assert r.status_code == 400 and r.json()["error"] == "no model nope; known: kws"
            r = await http.post("/campaigns", json={"model": "kws", "group": "lab", "stages": [0.5, 0.2]})
            assert r.status_code == 400 and "stages must increase" in r.json()["error"]
            r = await http.post("/campaigns", json={"model": "kws:3", "group": "lab", "stages": [0.2, 1.0],
                                                    "method": "push", "object_id": 5})
            assert r.status_code == 200, r.text
            cid = r.json()["id"]
            assert r.json()["options"]["method"] == "push" and r.json()["options"]["object_id"] == 5
            await campaigns.wait(cid)
            body = (await http.get(f"/campaigns/{cid}")).json()
            assert body["state"] == "completed" and body["overall"]["succeeded"] == 5
            assert (await http.get("/campaigns")).json()[0]["id"] == cid
            assert (await http.get("/campaigns/999")).status_code == 404
            r = await http.post(f"/campaigns/{cid}/pause")
            assert r.status_code == 400 and "is completed" in r.json()["error"]
        await asyncio.wait_for(go(), LIMIT)


# -- CLI helpers -----------------------------------------------------------------------------

def test_cli_stage_and_percent_parsing() -> None:
    assert cli_campaigns.parse_stages("1,10,100") == [0.01, 0.1, 1.0]
    assert cli_campaigns.parse_stages("100") == [1.0]
    for bad, msg in (("1,x,100", "expected percentages"), ("10,5,100", "must increase"),
                     ("1,10", "last stage must be 100"), ("0,100", r"in \(0, 100\]"), ("", "no stages")):
        with pytest.raises(CliError, match=msg):
            cli_campaigns.parse_stages(bad)
    with pytest.raises(CliError, match="--success 120: expected a percentage"):
        cli_campaigns.percent(120, "--success")
    body = cli_campaigns.campaign_body("kws", "lab", None, "5,100", 90, 2.5, 8, None, "int8", True, 5)
    assert body == {"name": None, "model": "kws", "group": "lab", "stages": [0.05, 1.0], "success_threshold": 0.9,
                    "error_threshold": 0.025, "concurrency": 8, "backend": None, "precision": "int8",
                    "method": "push", "object_id": 5}


def test_cli_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinymlaas.cli.main import one_line_errors

    sent: list[tuple[str, str, Any]] = []
    status = {"id": 4, "name": "c", "model": "kws", "version": "3", "endpoints": ["a"], "state": "completed",
              "stage": 0, "stages": [1.0], "note": None, "overall": {"devices": 1, "finished": 1, "succeeded": 1,
                                                                     "failed": 0, "started": 1},
              "stage_progress": [{"index": 0, "fraction": 1.0, "devices": 1, "finished": 1, "failed": 0}]}

    def fake_call(method: str, route: str, json_body: Any = None, **_: Any) -> Any:
        sent.append((method, route, json_body))
        return status

    monkeypatch.setattr("tinymlaas.cli.client.call", fake_call)
    app = typer.Typer()
    cli_campaigns.register(app, one_line_errors)
    runner = CliRunner()
    result = runner.invoke(app, ["campaigns", "start", "kws", "--group", "lab", "--stages", "1,x"])
    assert result.exit_code == 1 and "expected percentages" in result.output and not sent
    result = runner.invoke(app, ["campaigns", "start", "kws", "--group", "lab", "--stages", "10,100", "--watch",
                                 "--timeout", "5"])
    assert result.exit_code == 0, result.output
    assert sent[0][:2] == ("POST", "/campaigns") and sent[0][2]["stages"] == [0.1, 1.0]
    assert sent[1][:2] == ("GET", "/campaigns/4") and "completed" in result.output
    result = runner.invoke(app, ["campaigns", "pause", "4"])
    assert result.exit_code == 0 and sent[-1][:2] == ("POST", "/campaigns/4/pause")
