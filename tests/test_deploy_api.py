"""Deployments through the admin API and the CLI, against a live server and simulated boards.

One server (CoAP + admin API in this event loop, SQLite in tmp_path), an nRF52840 and a SAMD21
simulated on loopback, and the bundled mnist-8 in the server's registry: the deployer really
reads the boards, compiles (worker process), signs, delivers over object 9 and reads the
inference back. The CLI runs in a worker thread (typer's CliRunner) over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path as FsPath

import httpx
import pytest

from device_profiles import get_profile
from tinymlaas import runtime
from tinymlaas.bundled import MNIST
from lwm2m.path import Path
from simulator.device import SimulatedDevice
from tests.conftest import api_cli as cli
from tests.deploy_helpers import bounded

STEPS = ["pending", "deciding", "compiling", "delivering", "installing", "activating", "verifying", "succeeded"]


@pytest.fixture
async def live(tmp_path: FsPath, runner):
    running = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), f"sqlite:///{tmp_path / 'db'}",
                                  tmp_path / "home")
    boards = [SimulatedDevice(get_profile("nrf52840"), "nrf", running.server.address, runner),
              SimulatedDevice(get_profile("samd21"), "samd", running.server.address, runner)]
    for b in boards:
        await b.start()
    for _ in range(100):
        if {"nrf", "samd"} <= set(running.server.registrations.by_endpoint):
            break
        await asyncio.sleep(0.05)
    entry = await asyncio.to_thread(running.deployer.registry.add, MNIST, "mnist")
    http = httpx.AsyncClient(base_url=running.api_url, headers={"Authorization": f"Bearer {running.token}"},
                             timeout=60)
    yield running, http, boards, entry
    await http.aclose()
    for b in boards:
        await b.stop()
    await running.stop()


async def test_plan_deploy_show_list_and_errors(live):
    running, http, boards, entry = live
    r = await http.post("/deployments/plan", json={"endpoint": "nrf", "model": "mnist"})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["model"] == "mnist:1" and plan["margin"] == 0.10 and plan["macs"] == 786_560
    assert [(c["backend"], c["precision"]) for c in plan["candidates"]] == [
        ("tflm", "float32"), ("tflm", "int8"), ("wasm", "float32"), ("wasm", "int8")]
    assert (plan["chosen"]["backend"], plan["chosen"]["precision"]) == ("tflm", "float32")
    assert plan["chosen"]["ram_bytes"] == 33_440 + 4096 and plan["target"]["profile"] == "nrf52840"
    assert running.deployer.cache.compiles == 4

    r = await http.post("/deployments", json={"endpoint": "nrf", "model": "mnist", "wait": True})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["state"] == "succeeded", d["error"]
    assert (d["backend"], d["precision"], d["object_path"], d["method"]) == ("tflm", "float32", "/9/0", "pull")
    assert d["inference"]["sha256"] == d["artifact_sha256"] and d["inference"]["count"] >= 1
    assert running.deployer.cache.compiles == 4  # the plan's builds were reused
    nrf = boards[0]
    assert nrf.active is not None
    assert (await running.server.read("nrf", Path(33101, 0, 0)))[Path(33101, 0, 0)] == "mnist"

    r = await http.get(f"/deployments/{d['id']}")
    assert r.status_code == 200
    shown = r.json()
    assert [h["state"] for h in shown["history"] if "state" in h] == STEPS
    assert all(a["ts"] <= b["ts"] for a, b in zip(shown["history"], shown["history"][1:], strict=False))
    assert len(shown["decision"]["candidates"]) == 4 and shown["decision"]["chosen"]["fits"]

    listed = (await http.get("/deployments", params={"endpoint": "nrf"})).json()
    assert [x["id"] for x in listed] == [d["id"]] and listed[0]["state"] == "succeeded"
    assert (await http.get("/deployments", params={"endpoint": "samd"})).json() == []

    r = await http.post("/deployments", json={"endpoint": "nrf", "model": "resnet50"})
    assert r.status_code == 400 and "no model resnet50" in r.json()["error"] and "mnist" in r.json()["error"]
    r = await http.post("/deployments/plan", json={"endpoint": "nrf", "model": "resnet50"})
    assert r.status_code == 400 and "resnet50" in r.json()["error"]
    r = await http.post("/deployments", json={"endpoint": "ghost", "model": "mnist"})
    assert r.status_code == 404 and "ghost" in r.json()["error"]
    assert (await http.get("/deployments", params={"endpoint": "ghost"})).json() == []  # no row was made
    r = await http.get("/deployments/9999")
    assert r.status_code == 404 and "no deployment 9999" in r.json()["error"]
    r = await http.post("/deployments", json={"endpoint": "nrf", "model": "mnist", "method": "carrier-pigeon"})
    assert r.status_code == 400 and "carrier-pigeon" in r.json()["error"]

    r = await http.post("/deployments/plan", json={"endpoint": "samd", "model": "mnist"})
    assert r.status_code == 412, r.text
    msg = r.json()["error"]
    assert "samd (samd21) does not fit" in msg and r.json()["coap_code"] == "4.12"
    assert "tflm float32: SRAM short by" in msg and "tflm int8: SRAM short by" in msg  # SAMD21 has no Wasm runtime
    r = await http.post("/deployments/plan", json={"endpoint": "nrf", "model": "mnist", "backend": "c"})
    assert r.status_code == 400 and "backend 'c'" in r.json()["error"]


async def test_plan_for_an_unknown_device_is_404(live):
    running, http, _, _ = live
    r = await http.post("/deployments/plan", json={"endpoint": "ghost", "model": "mnist"})
    assert r.status_code == 404


async def test_cli_deploy_show_rollback(live):
    running, http, boards, entry = live
    r = await cli(running, "deploy", "nrf", "mnist", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["state"] == "succeeded" and first["version"] == "1" and first["object_path"] == "/9/0"

    r = await cli(running, "deploy", "samd", "mnist")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    if r.stderr.strip().startswith("error:"):  # refused as a plan
        assert r.stderr.strip().count("\n") == 0 and "does not fit" in r.stderr
    else:  # or a failed deployment, summarised
        assert "failed" in r.stdout and "does not fit" in r.stdout.replace("\n", " ")
    samd_rows = (await http.get("/deployments", params={"endpoint": "samd"})).json()
    assert [x["state"] for x in samd_rows] == ["failed"] and "does not fit" in samd_rows[0]["error"]

    r = await cli(running, "deployments", "show", str(first["id"]))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "candidates (safety margin 10%)" in out and "succeeded" in out
    for cell in ("26,312 B", "9,737 B", "37,536 B", "14,080 B", "98.3 ms", "SRAM short by 14,746 B", "fits", "→"):
        assert cell in out, out
    assert [[c.strip() for c in ln.split("│")[2:4]] for ln in out.splitlines() if "│ →" in ln] == [["tflm", "float32"]]
    r = await cli(running, "deployments", "list", "--endpoint", "nrf", "--json")
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)] == [first["id"]]

    # a second version, then back to the first
    await asyncio.to_thread(running.deployer.registry.add, MNIST, "mnist", "2")
    r = await cli(running, "deploy", "nrf", "mnist:2", "--json")
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["state"] == "succeeded" and second["object_path"] == "/9/1"
    version = (await running.server.read("nrf", Path(33101, 0, 1)))[Path(33101, 0, 1)]
    assert version == "2+" + second["artifact_sha256"][:8]

    r = await cli(running, "rollback", "nrf", "--json")
    assert r.exit_code == 0, r.output
    back = json.loads(r.stdout)
    assert back["state"] == "succeeded" and back["kind"] == "rollback" and back["version"] == "1"
    assert back["object_path"] == "/9/0" and back["method"] == "activate"
    assert (await running.server.read("nrf", Path(33101, 0, 1)))[Path(33101, 0, 1)].startswith("1+")
    assert (await running.server.read("nrf", Path(9, 0, 12)))[Path(9, 0, 12)] is True
    assert (await running.server.read("nrf", Path(9, 1, 12)))[Path(9, 1, 12)] is False

    r = await cli(running, "rollback", "samd")
    assert r.exit_code == 1 and r.stderr.strip().startswith("error:") and r.stderr.strip().count("\n") == 0
    assert "no successful deployment" in r.stderr


async def test_one_deployment_per_device_409_or_after_current(live):
    """A second deployment to a device with one in progress: 409 (CoAP 4.09) naming the running
    one, nothing written; with after_current (API) / --after-current (CLI) it is queued and runs
    after it."""
    running, http, boards, entry = live
    gate, install = asyncio.Event(), boards[0].packages.install

    async def held_install(artifact):  # the first deployment stays in progress until the gate opens
        await gate.wait()
        return await install(artifact)
    boards[0].packages.install = held_install
    r = await http.post("/deployments", json={"endpoint": "nrf", "model": "mnist", "wait": False})
    assert r.status_code == 200, r.text
    first = r.json()["id"]
    r = await http.post("/deployments", json={"endpoint": "nrf", "model": "mnist", "precision": "int8"})
    assert r.status_code == 409, r.text
    assert r.json()["coap_code"] == "4.09"
    assert f"nrf has deployment {first} (mnist:1, " in r.json()["error"] and "after_current" in r.json()["error"]
    assert [x["id"] for x in (await http.get("/deployments", params={"endpoint": "nrf"})).json()] == [first]

    r = await cli(running, "deploy", "nrf", "mnist", "--precision", "int8")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip().startswith("error:") and r.stderr.strip().count("\n") == 0, r.output
    assert f"deployment {first}" in r.stderr and "--after-current" in r.stderr

    queued = asyncio.ensure_future(cli(running, "deploy", "nrf", "mnist", "--precision", "int8", "--after-current",
                                       "--json"))
    for _ in range(200):
        rows = (await http.get("/deployments", params={"endpoint": "nrf"})).json()
        if len(rows) == 2:
            break
        await asyncio.sleep(0.05)
    assert [x["state"] for x in rows][0] == "queued"
    gate.set()
    r = await bounded(queued, 60)
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["state"] == "succeeded" and second["precision"] == "int8" and second["object_path"] == "/9/1"
    shown = (await http.get(f"/deployments/{second['id']}")).json()
    states = [h["state"] for h in shown["history"] if "state" in h]
    assert states[:3] == ["queued", "deciding", "compiling"] and states[-1] == "succeeded"
    done = (await http.get(f"/deployments/{first}")).json()
    assert done["state"] == "succeeded" and done["finished_at"] <= shown["history"][1]["ts"]
