"""``deploy.target`` and ``deploy.choice``: what a device offers, and which build to send it.

The snapshots come from a real read (a server and simulated boards on loopback, through
``Capabilities.refresh``); the decisions are judged by each backend's ``fit`` on hand-made
``Needs``, the numbers the compile cache reports for the bundled mnist-8 (TFLM float32 arena
33,440 B, int8 9,984 B; Wasm 2 and 1 pages).
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath
from dataclasses import replace
from typing import Any, AsyncIterator

import pytest

from device_profiles import get_profile, load_profiles
from tinymlaas.api.app import http_status
from compilers.backends.base import Needs
from compilers.backends.base import RuntimeSpec as RuntimeInfo
from compilers.backends.wasm.abi import PAGE_BYTES as PAGE
from tinymlaas.deploy import choice
from tinymlaas.deploy.choice import NoFit
from lwm2m.errors import BadRequest
from tinymlaas.deploy.target import DeviceTarget, NoCapabilities, default_runtime_ram, target_from_snapshot
from lwm2m.path import Path
from tinymlaas.server.server import LwM2MServer
from simulator.device import SimulatedDevice

PROFILES = load_profiles()
MACS = 786_560  # mnist-8
OPS = ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE")
ARENA = {"float32": 33_440, "int8": 9_984}  # TFLM's measured arena
PAGES = {"float32": 2, "int8": 1}  # the Wasm module's memory
PACKAGE = {"float32": 26_305, "int8": 9_746}
ALL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX")
TFLM = RuntimeInfo("tflm", "2024-06", ("cmsis-nn",), 4096, ALL_OPS)
WASM3 = RuntimeInfo("wasm3", "0.5.0", (), 16384)


def target(sram_free: int = 147_456, flash_free: int = 423_936, max_package: int = 262_144,
           runtimes: tuple[RuntimeInfo, ...] = (TFLM, WASM3), operators: tuple[str, ...] | None = None,
           fpu: str = "sp", clock_mhz: int = 64) -> DeviceTarget:
    if operators is not None:  # the TFLM build's operator list (33100/0/10)
        runtimes = tuple(replace(r, operators=operators) if r.name == "tflm" else r for r in runtimes)
    return DeviceTarget("board-1", "ml-capability-object", "testboard", "cortex-m4f", clock_mhz, fpu, sram_free,
                        flash_free, max_package, runtimes)


def needs(backend: str, precision: str, package: int | None = None) -> Needs:
    """What the build of mnist-8 needs, stored as its sealed package."""
    stored = PACKAGE[precision] if package is None else package
    if backend == "tflm":
        return Needs(stored, ARENA[precision], OPS)
    return Needs(stored, PAGES[precision] * PAGE)


def evaluate_all(t: DeviceTarget, margin: float = 0.10, **overrides: Any) -> list[choice.Candidate]:
    return [choice.evaluate(t, b, p, rt, needs(b, p), MACS, margin, key=f"{b}-{p}")
            for b, p, rt in choice.plan(t, **overrides)]


# -- target_from_snapshot, from what simulated boards report -----------------------------------

@pytest.fixture
async def live(tmp_path: FsPath, runner) -> AsyncIterator[tuple[LwM2MServer, Any]]:
    """A server that matches Device objects to profiles, and a factory of simulated boards."""
    srv = LwM2MServer(f"sqlite:///{tmp_path / 'db'}", read_capabilities=True)
    await srv.start("127.0.0.1", 0)
    devices: list[SimulatedDevice] = []

    async def board(profile: str, ep: str, manufacturer: str | None = None, **kw: Any) -> SimulatedDevice:
        d = SimulatedDevice(get_profile(profile), ep, srv.address, runner, **kw)
        if manufacturer is not None:
            d.tree.set(Path(3, 0, 0), manufacturer)
        devices.append(d)
        await d.start()
        for _ in range(100):
            if ep in srv.registrations.by_endpoint:
                break
            await asyncio.sleep(0.05)
        return d

    yield srv, board
    for d in devices:
        await d.stop()
    await srv.stop()


async def test_capability_object_snapshot_from_a_real_read(live):
    srv, board = live
    await board("nrf52840", "nrf")
    snap = await srv.capabilities.refresh("nrf")
    assert snap is not None and snap["source"] == "ml-capability-object"
    data = snap["data"]
    assert data["/33100/0/9/0"] == "tflm 2024-06 [cmsis-nn]" and data["/33100/0/13"] == "nrf52840"
    t = target_from_snapshot("nrf", snap["source"], data, PROFILES)
    p = get_profile("nrf52840")
    assert (t.source, t.profile, t.core, t.clock_mhz, t.fpu) == ("ml-capability-object", "nrf52840", "cortex-m4f",
                                                                  64, "sp")
    assert (t.sram_free, t.flash_free, t.max_package) == (p.sram_free, p.flash_free, p.max_package)
    assert t.runtimes == (RuntimeInfo("tflm", "2024-06", ("cmsis-nn",), 4096, t.operators),
                          RuntimeInfo("wasm3", "0.5.0", (), 16384))
    assert "CONV_2D" in t.operators and "MAX_POOL_2D" in t.operators and len(t.operators) == 17


async def test_runtime_ram_comes_from_the_named_profile_else_the_default(live):
    srv, board = live
    await board("samd21", "samd")
    snap = await srv.capabilities.refresh("samd")
    assert snap is not None
    t = target_from_snapshot("samd", snap["source"], snap["data"], PROFILES)
    assert t.runtime("tflm").ram_bytes == 2048 == get_profile("samd21").runtime("tflm").ram  # the profile's figure
    assert t.runtime("tflm").ram_bytes != default_runtime_ram("tflm")
    assert t.operators == get_profile("samd21").operators
    # the same report naming a board no profile describes: the default estimate
    unknown = {**snap["data"], "/33100/0/13": "homemade-board"}
    t2 = target_from_snapshot("samd", snap["source"], unknown, PROFILES)
    assert t2.profile == "homemade-board" and t2.runtime("tflm").ram_bytes == default_runtime_ram("tflm") == 4096
    # and naming none
    t3 = target_from_snapshot("samd", snap["source"], {k: v for k, v in snap["data"].items() if k != "/33100/0/13"},
                              PROFILES)
    assert t3.profile is None and t3.runtime("tflm").ram_bytes == 4096
    # a missing mandatory resource is named
    with pytest.raises(NoCapabilities, match="/33100/0/1 was not reported"):
        target_from_snapshot("samd", snap["source"], {k: v for k, v in snap["data"].items() if k != "/33100/0/1"},
                             PROFILES)


async def test_device_object_with_profile_snapshot(live):
    srv, board = live
    await board("nrf52840", "legacy", version="1.0", with_capability_object=False)
    snap = await srv.capabilities.refresh("legacy")
    assert snap is not None and snap["source"] == "device-object+profile" and snap["profile"] == "nrf52840"
    t = target_from_snapshot("legacy", snap["source"], snap["data"], PROFILES)
    p = get_profile("nrf52840")
    assert snap["data"]["sram_free"] == p.figures()["sram_free"]
    assert (t.source, t.profile, t.core, t.sram_free, t.flash_free, t.max_package) == (
        "device-object+profile", "nrf52840", "cortex-m4f", p.sram_free, p.flash_free, p.max_package)
    assert {r.name: r.ram_bytes for r in t.runtimes} == {"tflm": 4096, "wasm3": 16384}
    assert t.runtime("tflm").features == ("cmsis-nn",) and t.operators == p.operators
    # the same figures straight from Profile.figures() give the same Target
    direct = target_from_snapshot("legacy", "device-object+profile", {"profile": "nrf52840", **p.figures()}, PROFILES)
    assert direct == t


async def test_device_object_without_profile_is_no_capabilities(live):
    srv, board = live
    await board("nrf52840", "mystery", manufacturer="ACME Widgets", version="1.0", with_capability_object=False)
    snap = await srv.capabilities.refresh("mystery")
    assert snap is not None and snap["source"] == "device-object" and snap["data"]["manufacturer"] == "ACME Widgets"
    with pytest.raises(NoCapabilities, match="matches no device profile; missing SRAM free") as err:
        target_from_snapshot("mystery", snap["source"], snap["data"], PROFILES)
    assert str(err.value).startswith("mystery: ") and "SRAM" in str(err.value)
    with pytest.raises(NoCapabilities, match="'bluetooth' is not understood"):
        target_from_snapshot("mystery", "bluetooth", {}, PROFILES)


# -- choice ---------------------------------------------------------------------------------

def test_plan_lists_backend_times_precision_for_the_runtimes_present():
    assert [(b, p, rt.name) for b, p, rt in choice.plan(target())] == [
        ("tflm", "float32", "tflm"), ("tflm", "int8", "tflm"), ("wasm", "float32", "wasm3"), ("wasm", "int8", "wasm3")]
    wamr = RuntimeInfo("wamr", "2.1", (), 32768)
    assert [rt.name for _, _, rt in choice.plan(target(runtimes=(wamr,)))] == ["wamr", "wamr"]


def test_overrides_narrow_the_candidates():
    t = target()
    assert [(b, p) for b, p, _ in choice.plan(t, backend="wasm")] == [("wasm", "float32"), ("wasm", "int8")]
    assert [(b, p) for b, p, _ in choice.plan(t, precision="int8")] == [("tflm", "int8"), ("wasm", "int8")]
    assert [(b, p) for b, p, _ in choice.plan(t, backend="tflm", precision="float32")] == [("tflm", "float32")]
    # an override is held to the same limits: wasm only, on a board where Wasm does not fit
    small = target(sram_free=70_000)
    cands = evaluate_all(small, margin=0.0, backend="wasm")
    with pytest.raises(NoFit) as err:
        choice.decide(small, cands, 0.0)
    assert [c.label for c in err.value.candidates] == ["wasm float32", "wasm int8"]
    assert "tflm" not in str(err.value)


def test_unknown_backend_or_precision_is_a_clear_error():
    with pytest.raises(BadRequest, match=r"backend 'c': expected one of tflm, wasm \(c makes no artifact a device"):
        choice.plan(target(), backend="c")
    with pytest.raises(BadRequest, match=r"backend 'onnxc': expected one of tflm, wasm$"):
        choice.plan(target(), backend="onnxc")
    with pytest.raises(BadRequest, match=r"precision 'fp16': expected one of float32, int8"):
        choice.plan(target(), precision="fp16")


def test_float32_ranks_before_int8_when_both_fit():
    t = target(runtimes=(TFLM,))
    cands = evaluate_all(t)
    assert all(c.fits for c in cands)
    f32, i8 = cands
    assert i8.fit.latency_ms < f32.fit.latency_ms and i8.fit.flash_bytes < f32.fit.flash_bytes  # smaller, faster ...
    assert choice.decide(t, list(reversed(cands)), 0.10).label == "tflm float32"  # ... float32 is the model as trained


def test_latency_breaks_ties_between_backends():
    t = target()
    cands = evaluate_all(t, margin=0.0)
    by = {c.label: c for c in cands}
    # estimates: tflm float32 8 cycles/MAC, wasm 9x that; int8 with CMSIS-NN 4x faster
    assert by["tflm float32"].fit.latency_ms == round(MACS * 8 / 64_000, 3) == 98.32
    assert by["wasm float32"].fit.latency_ms == round(MACS * 72 / 64_000, 3)
    assert by["tflm int8"].fit.latency_ms == round(MACS * 1 / 64_000, 3)
    assert by["wasm int8"].fit.latency_ms == round(MACS * 36 / 64_000, 3)
    # both float32 builds fit: a smaller Wasm package does not beat TFLM's lower latency
    wasm_smaller = [c if c.backend == "tflm" else choice.evaluate(t, c.backend, c.precision, WASM3,
                                                                  needs(c.backend, c.precision, 1_000), MACS, 0.0)
                    for c in cands]
    assert by["wasm float32"].fits
    assert choice.decide(t, wasm_smaller, 0.0).label == "tflm float32"
    # without an FPU float32 is soft float: ten times slower
    soft = choice.evaluate(target(fpu="none"), "tflm", "float32", TFLM, needs("tflm", "float32"), MACS, 0.0)
    assert soft.fit.latency_ms == pytest.approx(by["tflm float32"].fit.latency_ms * 10)
    assert choice.evaluate(target(clock_mhz=0), "tflm", "int8", TFLM, needs("tflm", "int8", 1), MACS,
                           0.0).fit.latency_ms is None


def test_int8_is_chosen_when_float32_misses_sram():
    t = target(sram_free=30_000, runtimes=(TFLM,))
    cands = evaluate_all(t, margin=0.0)
    f32 = cands[0]
    assert not f32.fits and f32.problems == (f"SRAM short by {33_440 + 4096 - 30_000:,} B",)
    chosen = choice.decide(t, cands, 0.0)
    assert chosen.label == "tflm int8" and chosen.fit.ram_bytes == 9_984 + 4096 and chosen.artifact_key == "tflm-int8"


def test_margin_is_applied_and_the_shortfall_is_exact():
    need = 33_440 + 4096  # 37,536 B
    t = target(sram_free=40_000, runtimes=(TFLM,))
    ok = choice.evaluate(t, "tflm", "float32", TFLM, needs("tflm", "float32"), MACS, 0.0)
    assert ok.fits and ok.fit.ram_usable_bytes == 40_000 and ok.fit.ram_bytes == need
    short = choice.evaluate(t, "tflm", "float32", TFLM, needs("tflm", "float32"), MACS, 0.10)
    assert not short.fits and short.fit.ram_usable_bytes == 36_000
    assert short.problems == (f"SRAM short by {need - 36_000:,} B",) == ("SRAM short by 1,536 B",)
    # flash: the package against min(flash free, max package) less the margin
    tf = target(flash_free=500_000, max_package=27_000, runtimes=(TFLM,))
    assert choice.evaluate(tf, "tflm", "float32", TFLM, needs("tflm", "float32", 26_305), MACS, 0.0).fits
    c = choice.evaluate(tf, "tflm", "float32", TFLM, needs("tflm", "float32", 26_305), MACS, 0.10)
    assert c.fit.flash_usable_bytes == 24_300 and c.problems == (f"flash short by {26_305 - 24_300:,} B",)


def test_tflm_operator_check_names_the_missing_operators():
    t = target(operators=("FULLY_CONNECTED", "RESHAPE", "SOFTMAX"), runtimes=(TFLM,))
    c = choice.evaluate(t, "tflm", "int8", t.runtime("tflm"), needs("tflm", "int8"), MACS, 0.10)
    assert c.problems == ("TFLM build lacks operators CONV_2D, MAX_POOL_2D",)
    # a device that reports no operator list is not held to one
    bare = target(operators=())
    assert choice.evaluate(bare, "tflm", "int8", bare.runtime("tflm"), needs("tflm", "int8"), MACS, 0.10).fits


def test_wasm_below_one_page_cannot_run_at_all():
    t = target(sram_free=WASM3.ram_bytes + PAGE - 1, runtimes=(WASM3,))
    c = choice.evaluate(t, "wasm", "int8", WASM3, needs("wasm", "int8"), MACS, 0.0)
    assert len(c.problems) == 1
    assert c.problems[0].startswith("cannot run Wasm at all: 65,535 B of SRAM left after wasm3")
    one_page = target(sram_free=WASM3.ram_bytes + PAGE, runtimes=(WASM3,))
    assert choice.evaluate(one_page, "wasm", "int8", WASM3, needs("wasm", "int8"), MACS, 0.0).fits
    two = choice.evaluate(one_page, "wasm", "float32", WASM3, needs("wasm", "float32"), MACS, 0.0)
    assert two.problems == (f"SRAM short by {PAGE:,} B",)  # two pages where one fits


def test_no_runtime_is_no_fit_naming_the_devices_runtimes():
    with pytest.raises(NoFit, match=r"board-1 does not fit: it has no runtime for any backend .*reports: none"):
        choice.plan(target(runtimes=()))
    with pytest.raises(NoFit) as err:
        choice.plan(target(runtimes=(TFLM,)), backend="wasm")
    msg = str(err.value)
    assert "needs wasm3 or wamr" in msg and "the device reports: tflm 2024-06" in msg
    assert err.value.candidates == [] and http_status(NoFit.code) == 412


def test_no_fit_lists_every_candidate_and_its_shortfall():
    t = target(sram_free=20_000, operators=("FULLY_CONNECTED",))
    cands = evaluate_all(t)  # 10% margin: 18,000 B usable
    broken = choice.evaluate(t, "wasm", "int8", WASM3, None, 0, 0.10, error="unsupported op HARD_SWISH")
    cands[-1] = broken
    assert not any(c.fits for c in cands)
    with pytest.raises(NoFit) as err:
        choice.decide(t, cands, 0.10)
    msg = str(err.value)
    assert msg.startswith("board-1 (testboard) does not fit: no candidate fits with a 10% safety margin: ")
    for c in cands:
        assert c.summary() in msg
    assert f"tflm float32: SRAM short by {33_440 + 4096 - 18_000:,} B; TFLM build lacks operators " \
           f"CONV_2D, MAX_POOL_2D, RESHAPE" in msg
    assert "tflm int8: TFLM build lacks operators" in msg  # int8 fits SRAM (14,080 B) but not the operators
    assert "wasm float32: cannot run Wasm at all" in msg
    assert "wasm int8: does not build: unsupported op HARD_SWISH" in msg
    assert err.value.candidates == cands
    assert http_status(NoFit.code) == 412 and http_status(err.value.code) == 412
