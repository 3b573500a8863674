"""Object 9 and object 5 on simulated devices, driven over the wire by the server side.

Every Update Result of the OMA definitions that a model delivery can end in is produced here
by a real cause (a package too big for the flash, an arena too big for the SRAM, a tampered
package, a dead download server, a junk package, a bad URI, a module the sandbox refuses),
and the state machines' good paths run to an installed, activated model whose inference the
server reads back from the ML Inference object.
"""

from __future__ import annotations

import asyncio

import pytest

from device_profiles import get_profile
from lwm2m.path import Path
from simulator.device import SimulatedDevice
from simulator.faults import Faults
from tests.sim_helpers import SHARED_MODELS, add_one_wasm, keypair, package, wait_value

STATE9, RESULT9, ACTIVE9, REASON9 = 7, 9, 12, 16
STATE5, RESULT5 = 3, 5
INFER = 33101


@pytest.fixture
def keys():
    return keypair()


async def device(server, runner, keys, profile="nrf52840", objects=(9,), faults=None, ep="dev", **kw):
    d = SimulatedDevice(get_profile(profile), ep, server.address, runner, update_objects=objects,
                        faults=faults, signing_key=keys[1], **kw)
    d.sample_inputs = [b"\x01\x02\x03\x04"]
    await d.start()
    for _ in range(50):
        if ep in server.registrations.by_endpoint:
            break
        await asyncio.sleep(0.05)
    return d


async def push9(server, ep, blob, instance=0):
    await server.write(ep, Path(9, instance, 2), {Path(9, instance, 2): blob}, timeout=30)


async def test_push_install_activate_run(server, runner, keys):
    d = await device(server, runner, keys)
    try:
        flash_before = (await server.read("dev", Path(33100, 0, 3)))[Path(33100, 0, 3)]
        blob = package(add_one_wasm(), keys[0])
        await push9(server, "dev", blob)
        assert await wait_value(server, "dev", Path(9, 0, STATE9), 3) == 3  # DELIVERED
        assert (await server.read("dev", Path(9, 0, RESULT9)))[Path(9, 0, RESULT9)] == 3
        assert (await server.read("dev", Path(9, 0, 0)))[Path(9, 0, 0)] == "add-one"
        flash_after = (await server.read("dev", Path(33100, 0, 3)))[Path(33100, 0, 3)]
        assert flash_before - flash_after == len(blob)  # the package occupies flash
        await server.execute("dev", Path(9, 0, 4))
        assert await wait_value(server, "dev", Path(9, 0, STATE9), 4) == 4  # INSTALLED
        assert (await server.read("dev", Path(9, 0, RESULT9)))[Path(9, 0, RESULT9)] == 2
        await server.execute("dev", Path(9, 0, 10))
        assert await wait_value(server, "dev", Path(9, 0, ACTIVE9), True)
        inference = await server.read("dev", Path(INFER, 0))
        assert inference[Path(INFER, 0, 4)] == b"\x02\x03\x04\x05"  # the module ran: each byte + 1
        assert inference[Path(INFER, 0, 3)] == 1 and inference[Path(INFER, 0, 0)] == "add-one"
        await server.execute("dev", Path(INFER, 0, 10), "0='3'")
        assert (await server.read("dev", Path(INFER, 0, 3)))[Path(INFER, 0, 3)] == 4
        await server.execute("dev", Path(9, 0, 6))  # Uninstall
        assert await wait_value(server, "dev", Path(9, 0, STATE9), 0) == 0
        assert (await server.read("dev", Path(33100, 0, 3)))[Path(33100, 0, 3)] == flash_before
        assert (await server.read("dev", Path(INFER, 0, 0)))[Path(INFER, 0, 0)] == ""
    finally:
        await d.stop()


async def test_tflm_model_from_shared_models_runs(server, runner, keys):
    model = SHARED_MODELS / "mlperf_tiny" / "kws_ref_model.tflite"
    if not model.exists():
        pytest.skip("shared models not present")
    d = await device(server, runner, keys, profile="stm32l4r5")
    d.sample_inputs = None  # the runner's deterministic sample input
    try:
        blob = package(model.read_bytes(), keys[0], name="kws", version="ref")
        await push9(server, "dev", blob, instance=1)
        await wait_value(server, "dev", Path(9, 1, STATE9), 3)
        await server.execute("dev", Path(9, 1, 4))
        await wait_value(server, "dev", Path(9, 1, STATE9), 4, timeout=60)
        await server.execute("dev", Path(9, 1, 10), timeout=60)
        inference = await server.read("dev", Path(INFER, 0))
        assert inference[Path(INFER, 0, 3)] == 1 and inference[Path(INFER, 0, 8)] == 0
        assert len(inference[Path(INFER, 0, 4)]) == 12  # 12 int8 class scores
        assert inference[Path(INFER, 0, 7)] >= 24_000  # TFLM arena in use (the measured need is 24,272)
        assert inference[Path(INFER, 0, 5)] > 0
    finally:
        await d.stop()


async def test_pull_with_resume_after_a_dropped_connection(server, runner, keys):
    big = package(add_one_wasm(pad=6000), keys[0])
    assert len(big) > 10 * 512  # a dozen blocks of 512 bytes
    faults = Faults(drop_after=3, drop_for=2.5, seed=1)
    d = await device(server, runner, keys, faults=faults)
    try:
        path = server.packages.publish(big)
        await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): server.package_uri(path)})
        assert await wait_value(server, "dev", Path(9, 0, STATE9), 3, timeout=40) == 3
        offer = server.packages.offer(path)
        assert offer.downloads == 1, "block 0 was fetched once: the transfer resumed, it did not restart"
        stats = d.packages.download_stats["9/0"]
        assert stats.retries >= 1 and all(n > 0 for n in stats.resumed_at)
        assert (await server.read("dev", Path(9, 0, RESULT9)))[Path(9, 0, RESULT9)] == 3
    finally:
        await d.stop()


@pytest.mark.parametrize("case,expected", [
    ("not-enough-storage", 50), ("integrity", 53), ("unsupported", 54), ("invalid-uri", 56),
    ("unknown-token", 56), ("corrupt-block", 53), ("unsigned", 53),
])
async def test_download_failures_object_9(server, runner, keys, case, expected):
    faults = Faults(corrupt_block=1) if case == "corrupt-block" else None
    profile = "samd21" if case == "not-enough-storage" else "nrf52840"
    d = await device(server, runner, keys, profile=profile, faults=faults)
    try:
        good = package(add_one_wasm(), keys[0])
        if case == "not-enough-storage":
            await push9(server, "dev", package(add_one_wasm(pad=100_000), keys[0]))
        elif case == "integrity":
            tampered = bytearray(good)
            tampered[-3] ^= 0x01
            await push9(server, "dev", bytes(tampered))
        elif case == "unsupported":
            await push9(server, "dev", b"\x7fELF" + b"\0" * 100)
        elif case == "unsigned":
            await push9(server, "dev", add_one_wasm())
        elif case == "invalid-uri":
            await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): "http://example.invalid/pkg"})
        elif case == "unknown-token":
            await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): server.package_uri("/p/nothing")})
        else:
            path = server.packages.publish(package(add_one_wasm(pad=3000), keys[0]))
            await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): server.package_uri(path)})
        assert await wait_value(server, "dev", Path(9, 0, RESULT9), expected) == expected
        assert (await server.read("dev", Path(9, 0, STATE9)))[Path(9, 0, STATE9)] == 0  # back to INITIAL
        assert (await server.read("dev", Path(9, 0, REASON9)))[Path(9, 0, REASON9)]  # says why
        assert sum(d.packages.flash_used.values()) == 0  # nothing kept
    finally:
        await d.stop()


async def test_connection_lost(server, runner, keys):
    d = await device(server, runner, keys)
    d.packages.attempts, d.packages.attempt_timeout = 2, 0.3
    try:
        await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): "coap://127.0.0.1:9/p/dead"})
        assert await wait_value(server, "dev", Path(9, 0, RESULT9), 52) == 52
    finally:
        await d.stop()


@pytest.mark.parametrize("case,expected", [("out-of-memory", 51), ("install-failure", 58)])
async def test_install_failures_stay_delivered(server, runner, keys, case, expected):
    d = await device(server, runner, keys)
    try:
        if case == "out-of-memory":  # 3 pages = 192 KiB of linear memory; the nRF52840 has 144 KiB free
            artifact = add_one_wasm(pages=3)
        else:  # a module that imports a host function: the sandbox grants nothing
            import wasmtime
            artifact = bytes(wasmtime.wat2wasm('(module (import "env" "abort" (func)) (memory (export "memory") 1))'))
        await push9(server, "dev", package(artifact, keys[0]))
        await wait_value(server, "dev", Path(9, 0, STATE9), 3)
        await server.execute("dev", Path(9, 0, 4))
        assert await wait_value(server, "dev", Path(9, 0, RESULT9), expected) == expected
        assert (await server.read("dev", Path(9, 0, STATE9)))[Path(9, 0, STATE9)] == 3  # stays DELIVERED
        reason = (await server.read("dev", Path(9, 0, REASON9)))[Path(9, 0, REASON9)]
        assert ("KiB" in reason or "bytes" in reason) if case == "out-of-memory" else "import" in reason
    finally:
        await d.stop()


async def test_object_5_push_update_and_failures(server, runner, keys):
    d = await device(server, runner, keys, objects=(5,))
    try:
        assert 9 not in {o for o, _ in d.tree.instances}
        await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): package(add_one_wasm(), keys[0], name="m5")},
                           timeout=30)
        assert await wait_value(server, "dev", Path(5, 0, STATE5), 2) == 2  # Downloaded
        await server.execute("dev", Path(5, 0, 2))
        assert await wait_value(server, "dev", Path(5, 0, RESULT5), 1) == 1  # success
        assert (await server.read("dev", Path(5, 0, STATE5)))[Path(5, 0, STATE5)] == 0
        assert (await server.read("dev", Path(INFER, 0, 4)))[Path(INFER, 0, 4)] == b"\x02\x03\x04\x05"
        await server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): "ftp://nowhere/x"})
        assert await wait_value(server, "dev", Path(5, 0, RESULT5), 7) == 7  # invalid URI
        await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): b"junk" * 10})
        assert await wait_value(server, "dev", Path(5, 0, RESULT5), 6) == 6  # unsupported package type
        await server.write("dev", Path(5, 0, 0), {Path(5, 0, 0): add_one_wasm()})
        assert await wait_value(server, "dev", Path(5, 0, RESULT5), 5) == 5  # integrity: unsigned, key set
        path = server.packages.publish(package(add_one_wasm(), keys[0], name="m5", version="2"))
        await server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): server.package_uri(path)})
        assert await wait_value(server, "dev", Path(5, 0, STATE5), 2) == 2
        await server.execute("dev", Path(5, 0, 10))  # Cancel (object 5 1.1): Update Result 10, State Idle
        assert await wait_value(server, "dev", Path(5, 0, RESULT5), 10) == 10
        assert (await server.read("dev", Path(5, 0, STATE5)))[Path(5, 0, STATE5)] == 0
        await server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): server.package_uri(path)})
        assert await wait_value(server, "dev", Path(5, 0, STATE5), 2) == 2
        await server.write("dev", Path(5, 0, 1), {Path(5, 0, 1): ""})  # an empty URI resets (Core E.6): Idle, 0
        assert await wait_value(server, "dev", Path(5, 0, STATE5), 0) == 0
        assert (await server.read("dev", Path(5, 0, RESULT5)))[Path(5, 0, RESULT5)] == 0
        assert "5/0" not in d.packages.flash_used  # the image is removed
    finally:
        await d.stop()


async def test_reboot_keeps_flash_and_loses_ram(server, runner, keys):
    d = await device(server, runner, keys)
    try:
        await push9(server, "dev", package(add_one_wasm(), keys[0]))
        await wait_value(server, "dev", Path(9, 0, STATE9), 3)
        await server.execute("dev", Path(9, 0, 4))
        await wait_value(server, "dev", Path(9, 0, STATE9), 4)
        await server.execute("dev", Path(9, 0, 10))
        await server.execute("dev", Path(INFER, 0, 10), "0='4'")
        old_id = server.registrations.by_endpoint["dev"].id
        await server.execute("dev", Path(3, 0, 4))  # Reboot
        for _ in range(100):
            reg = server.registrations.by_endpoint.get("dev")
            if reg is not None and reg.id != old_id:
                break
            await asyncio.sleep(0.05)
        assert server.registrations.by_endpoint["dev"].id != old_id  # registered again
        assert await wait_value(server, "dev", Path(9, 0, STATE9), 4) == 4  # still installed (flash)
        assert (await server.read("dev", Path(9, 0, ACTIVE9)))[Path(9, 0, ACTIVE9)] is True
        assert await wait_value(server, "dev", Path(INFER, 0, 3), 1) == 1  # counters restarted, ran once
        assert d.reboots == 1
    finally:
        await d.stop()


async def test_reboot_during_download_is_connection_lost(server, runner, keys):
    faults = Faults(reboot_after=4, seed=3)
    d = await device(server, runner, keys, faults=faults)
    try:
        path = server.packages.publish(package(add_one_wasm(pad=4000), keys[0]))
        await server.write("dev", Path(9, 0, 3), {Path(9, 0, 3): server.package_uri(path)})
        for _ in range(100):
            if d.reboots:
                break
            await asyncio.sleep(0.05)
        assert d.reboots == 1
        assert await wait_value(server, "dev", Path(9, 0, RESULT9), 52) == 52
        assert (await server.read("dev", Path(9, 0, STATE9)))[Path(9, 0, STATE9)] == 0
    finally:
        await d.stop()
