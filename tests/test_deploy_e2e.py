"""Deployment end to end over loopback: the real server and ``Deployer`` against simulated MCUs.

Each test checks both sides: the ``deployments`` row (state, backend, precision, object path,
artifact sha256) and the device (the artifact it runs, what it reports over the wire in the
ML Inference object, the key it verified the package with). Covered: every backend and
precision (TFLM float32 / int8, Wasm int8, Wasm float32 on a board where it fits), pull and
push, object 9 and object 5; the automatic choice and a board nothing fits; a second model
version beside the first and a rollback to it; the pull URI (short, single use); and one
compilation serving several identical devices deployed at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import urlsplit

import aiocoap
import pytest
from aiocoap import Code, Message

from tests.deploy_helpers import Env, Shared, bounded, check_running, sha
from tinymlaas.deploy.service import DeployOptions
from lwm2m.path import Path

pytestmark = pytest.mark.both_databases

LIMIT = 30.0  # seconds per deployment


def artifact_file_sha(env: Env, row: dict) -> str:
    """sha256 of the compile cache's artifact file the decision chose."""
    key = row["decision"]["chosen"]["artifact_key"]
    return hashlib.sha256((env.shared.data_dir / "artifacts" / f"{key}.bin").read_bytes()).hexdigest()


CASES = [("tflm", "float32", "nrf52840"), ("tflm", "int8", "nrf52840"), ("wasm", "int8", "nrf52840"),
         ("wasm", "float32", "esp32s3")]


@pytest.mark.parametrize("obj", [9, 5])
@pytest.mark.parametrize("method", ["pull", "push"])
@pytest.mark.parametrize("backend,precision,profile", CASES)
async def test_every_backend_precision_method_and_object(env, backend, precision, profile, method, obj):
    d = await env.device("dev", profile=profile, objects=(obj,))
    row = await bounded(env.dep.deploy("dev", env.entry, DeployOptions(backend=backend, precision=precision,
                                                                        method=method)), LIMIT)
    assert row["state"] == "succeeded", row["error"]
    assert (row["backend"], row["precision"], row["method"]) == (backend, precision, method)
    assert row["object_path"] == ("/5/0" if obj == 5 else "/9/0")
    assert row["artifact_sha256"] == artifact_file_sha(env, row)  # the artifact the cache built...
    await check_running(env, d, row)  # ...is the one the device runs, verified with the server's key
    assert d.active is not None and d.active[0].kind == ("tflite" if backend == "tflm" else "wasm")
    assert d.active[0].runtime == ("tflm" if backend == "tflm" else "wasm3")
    if obj == 9:
        state = (await env.server.read("dev", Path(9, 0, 7)))[Path(9, 0, 7)]
        active = (await env.server.read("dev", Path(9, 0, 12)))[Path(9, 0, 12)]
        assert (state, active) == (4, True)  # INSTALLED and active
    else:
        v = await env.server.read("dev", Path(5, 0))
        assert (v[Path(5, 0, 3)], v[Path(5, 0, 5)]) == (0, 1)  # Idle, "updated successfully"
    flash = (await env.server.read("dev", Path(33100, 0, 3)))[Path(33100, 0, 3)]
    assert flash == d.profile.flash_free - row["package_size"]  # the package occupies flash


async def test_automatic_choice_on_nrf52840(env):
    d = await env.device("dev")
    row = await bounded(env.dep.deploy("dev", env.entry, DeployOptions()), LIMIT)
    assert (row["state"], row["backend"], row["precision"]) == ("succeeded", "tflm", "float32"), row["error"]
    cands = {(c["backend"], c["precision"]): c for c in row["decision"]["candidates"]}
    assert set(cands) == {("tflm", "float32"), ("tflm", "int8"), ("wasm", "float32"), ("wasm", "int8")}
    assert not cands[("wasm", "float32")]["fits"]
    assert any("SRAM short by" in p for p in cands[("wasm", "float32")]["problems"])
    assert all(cands[k]["fits"] for k in cands if k != ("wasm", "float32"))
    assert row["decision"]["chosen"]["backend"] == "tflm" and row["decision"]["chosen"]["precision"] == "float32"
    await check_running(env, d, row)


async def test_nothing_fits_samd21(env):
    d = await env.device("dev", profile="samd21")
    row = await bounded(env.dep.deploy("dev", env.entry, DeployOptions()), LIMIT)
    assert row["state"] == "failed"
    assert "does not fit" in row["error"]
    assert "no candidate fits" in row["error"]
    for label in ("tflm float32", "tflm int8"):  # the SAMD21 has TFLM only: both candidates, with shortfalls
        assert f"{label}: SRAM short by " in row["error"], row["error"]
    cands = row["decision"].get("candidates") or []
    assert all(any("short by" in p for p in c["problems"]) for c in cands)
    # nothing was sent: both object 9 instances are INITIAL, no download, no key, no flash used
    for i in (0, 1):
        v = await env.server.read("dev", Path(9, i))
        assert (v[Path(9, i, 7)], v[Path(9, i, 9)]) == (0, 0)
    assert d.packages.download_stats == {} and d.packages.flash_used == {}
    assert d.signing_key is None and d.active is None


async def test_second_version_beside_the_first_then_rollback(env):
    d = await env.device("dev")
    first = await bounded(env.dep.deploy("dev", env.entry, DeployOptions(backend="tflm", precision="int8")), LIMIT)
    assert first["state"] == "succeeded" and first["object_path"] == "/9/0", first["error"]
    v2 = env.model("2")
    second = await bounded(env.dep.deploy("dev", v2, DeployOptions(backend="tflm", precision="int8")), LIMIT)
    assert second["state"] == "succeeded", second["error"]
    assert second["object_path"] == "/9/1"  # the other instance
    assert second["previous"]["object_path"] == "/9/0" and second["previous"]["version"] == "1"
    await check_running(env, d, second)
    assert (d.active[0].name, d.active[0].version.split("+")[0]) == ("mnist", "2")
    slots = await env.server.read("dev", Path(9))
    assert slots[Path(9, 0, 7)] == 4 and slots[Path(9, 0, 1)] == "1+" + first["artifact_sha256"][:8]  # kept
    assert slots[Path(9, 0, 12)] is False
    assert slots[Path(9, 1, 7)] == 4 and slots[Path(9, 1, 1)] == "2+" + second["artifact_sha256"][:8]
    assert slots[Path(9, 1, 12)] is True

    back = await bounded(env.dep.rollback("dev"), LIMIT)
    assert (back["kind"], back["state"]) == ("rollback", "succeeded"), back["error"]
    assert (back["model"], back["version"], back["object_path"]) == ("mnist", "1", "/9/0")
    assert (d.active[0].name, d.active[0].version.split("+")[0]) == ("mnist", "1")
    assert sha(d) == first["artifact_sha256"] == back["artifact_sha256"]
    slots = await env.server.read("dev", Path(9))
    assert slots[Path(9, 0, 12)] is True and slots[Path(9, 1, 12)] is False and slots[Path(9, 1, 7)] == 4
    count = (await env.server.read("dev", Path(33101, 0, 3)))[Path(33101, 0, 3)]
    assert count >= 1
    assert [r["kind"] for r in await env.rows("dev")] == ["install", "install", "rollback"]


async def test_pull_uri_is_short_and_single_use(env):
    await env.device("dev")
    srv, writes = env.server, []
    real_write = srv.write

    async def recording_write(endpoint, path, content, *a, **kw):
        for p, value in content.items():
            offered = srv.packages.offer(urlsplit(value).path) if isinstance(value, str) else None
            writes.append((endpoint, p, value, offered is not None))
        return await real_write(endpoint, path, content, *a, **kw)

    srv.write = recording_write
    row = await bounded(env.dep.deploy("dev", env.entry, DeployOptions(backend="wasm", precision="int8")), LIMIT)
    assert row["state"] == "succeeded", row["error"]
    uris = [(v, live) for _, p, v, live in writes if p == Path(9, 0, 3)]
    assert len(uris) == 1
    uri, was_live = uris[0]
    assert uri.startswith("coap://127.0.0.1:") and len(uri.encode()) < 128 and was_live
    ctx = await aiocoap.Context.create_client_context()
    try:
        resp = await asyncio.wait_for(ctx.request(Message(code=Code.GET, uri=uri)).response, 10)
        assert resp.code == Code.NOT_FOUND  # revoked once the delivery ended
        assert srv.packages.offer(urlsplit(uri).path) is None
    finally:
        await ctx.shutdown()


async def test_one_compilation_for_identical_devices(tmp_path, runner, db_url):
    env = Env(db_url, Shared(tmp_path / "fresh-data"), runner)  # an empty compile cache
    await env.start()
    try:
        eps = [f"twin-{i}" for i in range(4)]
        devices = [await env.device(ep) for ep in eps]
        rows = await bounded(asyncio.gather(*(env.dep.deploy(ep, env.entry) for ep in eps)), 90)
        assert [r["state"] for r in rows] == ["succeeded"] * 4, [r["error"] for r in rows]
        assert env.dep.cache.compiles == 4  # one build per candidate, not per device
        assert env.dep.cache.hits >= 3 * 4
        assert len({r["artifact_sha256"] for r in rows}) == 1
        for d, r in zip(devices, rows, strict=True):
            await check_running(env, d, r)
    finally:
        await env.stop()


async def test_same_version_other_precision_is_delivered(env):
    d = await env.device("dev")
    first = await bounded(env.dep.deploy("dev", env.entry, DeployOptions(backend="tflm", precision="float32")), LIMIT)
    assert first["state"] == "succeeded"
    again = await bounded(env.dep.deploy("dev", env.entry, DeployOptions(backend="tflm", precision="int8")), LIMIT)
    assert again["state"] == "succeeded", again["error"]
    await check_running(env, d, again)
