"""Targeting devices that speak neither our ML Capability object nor a Device object that matches a
profile: the error names the missing figures and how to give them; ``devices set-profile``
(stored, used by the capability reading and the decision); explicit figures on a deployment or
stored; profiles added at run time through the API and the CLI (validated, persisted, matched).
Devices are simulated boards with a real client's identity (``no-ml-objects`` personality, but
keeping the ML Inference object so that verification still has something to read)."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest
from aiocoap import Code
from sqlalchemy import select

from device_profiles import PROFILE_DIR, get_profile
from simulator.device import SimulatedDevice
from simulator.personality import UNKNOWN_IDENTITY
from tinymlaas import runtime
from tinymlaas.deploy.service import DeployOptions
from tinymlaas.deploy.target import Figures, NoCapabilities
from tinymlaas.store.tables import CAPABILITY_SNAPSHOTS, DEVICE_SETTINGS, STORED_PROFILES
from tests.conftest import api_cli as cli

MODEL_NUMBER_BLOCK = 'model = ["nRF52840", "PCA10056"]'


async def stranger(env, ep: str = "stranger") -> SimulatedDevice:
    """An nRF52840 whose firmware has no 33100 and says it is a 'Lightweight M2M Client'."""
    d = SimulatedDevice(get_profile("nrf52840"), ep, env.server.address, env.runner, identity=UNKNOWN_IDENTITY,
                        with_capability_object=False)
    env.devices.append(d)
    await d.start()
    await env.registered(ep)
    return d


async def test_no_figures_names_what_is_missing_then_set_profile_deploys(env):
    d = await stranger(env)
    row = await env.dep.deploy("stranger", env.entry, DeployOptions(backend="tflm", precision="int8"))
    assert row["state"] == "failed"
    err = row["error"]
    for part in ("no ML figures", "no ML Capability object (33100)", "'Open Mobile Alliance'",
                 "missing SRAM free (--sram-free BYTES), flash free (--flash-free BYTES), a runtime (--runtime NAME)",
                 "tinymlaas devices set-profile stranger BOARD", "--sram-free BYTES --flash-free BYTES --runtime NAME",
                 "tflm"):
        assert part in err, (part, err)
    assert d.active is None

    await env.server.device_settings.change("stranger", lambda n: n in env.server.profiles, profile="nrf52840")
    row = await env.dep.deploy("stranger", env.entry, DeployOptions(backend="tflm", precision="int8"))
    assert row["state"] == "succeeded", row["error"]
    assert row["decision"]["target"]["source"] == "assigned-profile"
    assert row["decision"]["target"]["profile"] == "nrf52840"
    assert d.active is not None and d.active[0].sha256.hex() == row["artifact_sha256"]
    stored = env.server.store.read_sync(lambda c: list(c.execute(select(DEVICE_SETTINGS))))
    assert [(r.endpoint, r.profile) for r in stored] == [("stranger", "nrf52840")]
    snap = env.server.store.read_sync(lambda c: c.execute(
        select(CAPABILITY_SNAPSHOTS).order_by(CAPABILITY_SNAPSHOTS.c.id.desc())).first())
    assert snap.source == "assigned-profile" and snap.data["manufacturer"] == "Open Mobile Alliance"


async def test_explicit_figures_replace_or_complete_what_is_known(env):
    await stranger(env)
    with pytest.raises(NoCapabilities, match=r"missing flash free \(--flash-free BYTES\), a runtime"):
        await env.dep.target("stranger", Figures(sram_free=200_000))
    target = await env.dep.target("stranger", Figures(200_000, 500_000, ("tflm",)))
    assert (target.source, target.sram_free, target.flash_free, target.max_package) == \
        ("figures", 200_000, 500_000, 500_000)
    assert [r.name for r in target.runtimes] == ["tflm"] and target.runtimes[0].ram_bytes > 0
    # stored figures are used when the deployment gives none; a deployment's own win
    await env.server.device_settings.change("stranger", lambda n: True, sram_free=150_000, flash_free=400_000,
                                            runtimes=("tflm",))
    assert (await env.dep.target("stranger")).sram_free == 150_000
    assert (await env.dep.target("stranger", Figures(sram_free=99_000))).sram_free == 99_000
    # figures too small for the model: the decision says so with the numbers
    row = await env.dep.deploy("stranger", env.entry, DeployOptions(backend="tflm", precision="int8",
                                                                    sram_free=4_000))
    assert row["state"] == "failed" and "SRAM" in row["error"] and row["decision"]["target"]["sram_free"] == 4_000


async def test_figures_over_a_profile_device(env):
    await env.device("nordic")  # our firmware: 33100 says what is free
    base = await env.dep.target("nordic")
    assert base.source == "ml-capability-object"
    over = await env.dep.target("nordic", Figures(flash_free=100_000))
    assert over.source == "ml-capability-object+figures" and over.flash_free == 100_000
    assert over.sram_free == base.sram_free and over.max_package == min(base.max_package, 100_000)


def custom_profile(name: str, maker: str) -> str:
    text = (PROFILE_DIR / "nrf52840.toml").read_text()
    text = text.replace('name = "nrf52840"', f'name = "{name}"')
    text = text.replace('manufacturer = ["Nordic Semiconductor", "Nordic Semiconductor ASA", "Nordic"]',
                        f'manufacturer = ["{maker}"]')
    return text.replace(MODEL_NUMBER_BLOCK, 'model = ["Lightweight M2M Client"]')


async def test_profiles_added_at_run_time_are_validated_persisted_and_matched(live, tmp_path: FsPath):  # noqa: F811
    running, peer = live
    srv = running.server
    good = tmp_path / "acme-board.toml"
    good.write_text(custom_profile("acme-board", "Open Mobile Alliance"))
    bad = tmp_path / "broken.toml"
    bad.write_text(custom_profile("broken", "X").replace("clock_mhz = 64", "clock_mhz = -1"))

    r = await cli(running, "profiles", "add", str(bad))
    assert r.exit_code == 1 and "clock_mhz" in r.output and "positive integer" in r.output
    assert srv.store.read_sync(lambda c: list(c.execute(select(STORED_PROFILES)))) == []
    r = await cli(running, "profiles", "add", str(good))
    assert r.exit_code == 0 and "acme-board" in r.stdout and "running server" in r.stdout, r.output
    r = await cli(running, "profiles", "list", "--json")
    origins = {p["name"]: p["origin"] for p in json.loads(r.stdout)}
    assert origins["acme-board"] == "database" and origins["nrf52840"] == "shipped"

    # a device whose Device object matches only the new profile
    assert (await peer.register("omadev", b"</3/0>", ("lwm2m=1.1",))).code == Code.CREATED
    peer.answer(Code.GET, "/3/0", Code.CONTENT, json.dumps(
        [{"bn": "/3/0/", "n": "0", "vs": "Open Mobile Alliance"}, {"n": "1", "vs": "Lightweight M2M Client"}]).encode(),
        110)
    snap = await srv.capabilities.refresh("omadev")
    assert snap is not None and (snap["source"], snap["profile"]) == ("device-object+profile", "acme-board")

    # set-profile through the CLI: stored, and an unknown board is refused by name
    r = await cli(running, "devices", "set-profile", "omadev", "nosuchboard")
    assert r.exit_code == 1 and "unknown device profile 'nosuchboard'" in r.output
    r = await cli(running, "devices", "set-profile", "omadev", "stm32l4r5", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["profile"] == "stm32l4r5", r.output
    snap = await srv.capabilities.refresh("omadev")
    assert snap is not None and (snap["source"], snap["profile"]) == ("assigned-profile", "stm32l4r5")
    r = await cli(running, "devices", "set-figures", "omadev", "--runtime", "nosuchruntime")
    assert r.exit_code == 1 and "nosuchruntime" in r.output and "tflm" in r.output

    # only added profiles can be removed
    r = await cli(running, "profiles", "rm", "nrf52840")
    assert r.exit_code == 1 and "shipped" in r.output
    r = await cli(running, "profiles", "rm", "acme-board")
    assert r.exit_code == 0 and "acme-board" not in srv.profiles


async def test_stored_profiles_and_settings_survive_a_restart(tmp_path: FsPath):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    first = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), db, tmp_path / "home", read_capabilities=False)
    try:
        await first.server.profiles.add(custom_profile("acme-board", "ACME"))
        await first.server.device_settings.change("x", lambda n: n in first.server.profiles, profile="acme-board",
                                                  awake_s=5.0)
    finally:
        await first.stop()
    second = await runtime.start(("127.0.0.1", 0), ("127.0.0.1", 0), db, tmp_path / "home", read_capabilities=False)
    try:
        assert "acme-board" in second.server.profiles
        assert second.server.profiles.origin(second.server.profiles.get("acme-board")) == "database"
        s = second.server.device_settings.get("x")
        assert (s.profile, s.awake_s) == ("acme-board", 5.0)
        assert second.server.queue.awake_for("x") == 5.0
        api = json.loads((tmp_path / "home" / "api.json").read_text())
        assert api["db"] == db
    finally:
        await second.stop()

