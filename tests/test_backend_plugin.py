"""Backends are plug-ins: a third-party backend installed beside tinymlaas runs the whole path, and
removing a built-in one takes its choices away cleanly.

``tests/plugins/`` holds ``toy_backend`` (the IR serialised, run by the reference interpreter on
a ``toyvm`` runtime) with its ``*.dist-info/entry_points.txt``, as ``pip install`` would leave
it. Putting that directory on ``sys.path`` is the installation: no file of tinymlaas is edited.
The end-to-end test checks every step against something outside the plug-in: the registry
lists it, a profile naming its runtime validates, the deploy decision offers and explains it,
the compile cache builds it in its spawned worker, the package is signed and delivered over
loopback, and the simulated device runs it and reports an output that onnxruntime (an
independent implementation of the ONNX model) agrees with.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import entry_points
from pathlib import Path as FsPath
from typing import Any, Iterator

import numpy as np
import pytest

from compilers.backends import registry
from compilers.backends.base import BackendUnavailable
from device_profiles import get_profile, load_profile, load_profiles
from lwm2m.path import Path
from simulator.runtimes import ModelRunner
from tinymlaas import bundled
from tinymlaas.deploy import choice
from tinymlaas.deploy.cache import CompileFailed
from tinymlaas.deploy.service import DeployOptions
from tinymlaas.deploy.target import target_from_snapshot

PLUGINS = FsPath(__file__).resolve().parent / "plugins"
TOY_BOARD = """
name = "toyboard"
title = "A board whose firmware runs the toy IR interpreter"
vendor = "Toy Vendor"
core = "cortex-m4f"
clock_mhz = 120
sram_total = 262144
flash_total = 1048576
fpu = "sp"
extensions = []
accelerator = "none"
max_package = 262144
references = ["the toy backend's own README"]

[firmware]
sram = 65536
flash = 262144

[match]
manufacturer = ["Toy Vendor"]
model = ["TOY-1"]

[[runtimes]]
name = "toyvm"
version = "1.0"
ram = 2048
flash = 8192
"""


@pytest.fixture
def toy_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(PLUGINS))
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()
    sys.modules.pop("toy_backend", None)


@pytest.fixture
def without_tflm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The TFLM entry point removed, as if its distribution were uninstalled."""
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [ep for ep in entry_points(group=group) if ep.name != "tflm"])
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()


def test_the_registry_discovers_the_installed_backends() -> None:
    assert set(registry.names()) >= {"tflm", "wasm", "c"} and not registry.problems()
    assert set(registry.deliverable()) >= {"tflm", "wasm"} and "c" not in registry.deliverable()
    assert registry.for_kind("tflite") is registry.get("tflm")
    assert registry.for_runtime("wamr") == (registry.get("wasm"),)
    with pytest.raises(BackendUnavailable, match=r"backend 'npu': expected one of c, tflm, wasm"):
        registry.get("npu")


def test_a_third_party_backend_is_listed_and_a_profile_may_name_its_runtime(toy_installed: None,
                                                                           tmp_path: FsPath) -> None:
    assert "toy" in registry.names() and registry.for_runtime("toyvm") == (registry.get("toy"),)
    assert registry.recognise(b"TOYIR1\n...") is registry.get("toy")
    (tmp_path / "toyboard.toml").write_text(TOY_BOARD)
    board = load_profile(tmp_path / "toyboard.toml")
    assert board.unused_runtimes() == () and board.target("toyvm").runtime.ram_bytes == 2048


def test_a_broken_plug_in_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        name, value, group = "broken", "no_such_module:BACKEND", registry.GROUP

        def load(self) -> Any:
            raise ModuleNotFoundError("No module named 'no_such_module'")

    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real(group=group), Point()])
    registry.refresh()
    try:
        assert "broken" not in registry.names() and "tflm" in registry.names()
        assert "no_such_module:BACKEND does not load" in registry.problems()["broken"]
    finally:
        monkeypatch.undo()
        registry.refresh()


async def test_the_whole_path_through_a_third_party_backend(toy_installed: None, tmp_path: FsPath) -> None:
    from tests.deploy_helpers import Shared, Env

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "toyboard.toml").write_text(TOY_BOARD)
    board = load_profile(tmp_path / "profiles" / "toyboard.toml")
    runner = ModelRunner()  # its spawned worker inherits sys.path: it finds the plug-in too
    env = await Env(tmp_path / "t.db", Shared(tmp_path / "data"), runner).start()
    try:
        assert env.dep is not None and env.server is not None and env.entry is not None
        device = await env.device("toy-1", board)
        # the decision: the only backend whose runtime the device reports, and why
        target = await env.dep.target("toy-1")
        assert [r.name for r in target.runtimes] == ["toyvm"]
        chosen, candidates, built = await env.dep.decide(target, env.entry, DeployOptions())
        assert chosen.label == "toy float32" and [c.label for c in candidates] == ["toy float32"]
        assert chosen.fit.ram_bytes == built.artifact.needs.ram_bytes + 2048 and chosen.fit.fits
        assert "toy float32: fits (flash" in chosen.summary()
        assert env.dep.cache.compiles == 1 and built.data.startswith(b"TOYIR1\n")
        # deploy: signed package, pulled over loopback, installed, activated, verified
        row = await env.dep.deploy("toy-1", env.entry, DeployOptions())
        assert row["state"] == "succeeded", row["error"]
        assert (row["backend"], row["precision"], row["object_path"]) == ("toy", "float32", "/9/0")
        assert row["inference"]["count"] >= 1 and row["inference"]["sha256"] == built.sha256
        # the board "sees" a digit; its output equals onnxruntime's on the ONNX model
        x, _, labels = bundled.digits()
        device.sample_inputs = [np.ascontiguousarray(x[1:2], np.float32).tobytes()]
        await env.server.execute("toy-1", Path(33101, 0, 10), "0='1'")
        got = np.frombuffer((await env.server.read("toy-1", Path(33101, 0, 4)))[Path(33101, 0, 4)], np.float32)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(bundled.MNIST), providers=["CPUExecutionProvider"])
        want = sess.run(None, {sess.get_inputs()[0].name: x[1:2].astype(np.float32)})[0].reshape(-1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert int(np.argmax(got)) == int(labels[1])
    finally:
        await env.stop()
        runner.close()


async def test_without_the_tflm_entry_point_its_choices_disappear(without_tflm: None, tmp_path: FsPath) -> None:
    assert "tflm" not in registry.names() and registry.for_kind("tflite") is None
    profiles = load_profiles()  # the bundled boards still load: their tflm runtime is just unused
    assert profiles["nrf52840"].unused_runtimes() == ("tflm",)
    snap = {"profile": "samd21", **profiles["samd21"].figures()}
    samd = target_from_snapshot("samd", "device-object+profile", snap, profiles)  # TFLM only
    with pytest.raises(choice.NoFit, match=r"samd does not fit: it has no runtime for any backend \(needs a "
                                           r"runtime an installed backend targets: wasm3, wamr; the device reports: "
                                           r"tflm 2024-06\)"):
        choice.plan(samd)
    nrf = target_from_snapshot("nrf", "device-object+profile", {"profile": "nrf52840",
                                                                **profiles["nrf52840"].figures()}, profiles)
    assert {b for b, _, _ in choice.plan(nrf)} == {"wasm"}
    with pytest.raises(choice.BadRequest, match=r"backend 'tflm': expected one of wasm$"):
        choice.plan(nrf, backend="tflm")
    from tests.deploy_helpers import Env, Shared

    env = await Env(tmp_path / "t.db", Shared(tmp_path / "data"), ModelRunner()).start()
    try:
        assert env.dep is not None and env.entry is not None
        with pytest.raises(CompileFailed, match=r"backend 'tflm' makes no deliverable artifact \(deliverable: wasm\)"):
            await env.dep.cache.get(env.entry, "tflm", "int8")
        await env.device("samd", get_profile("samd21"))
        row = await env.dep.deploy("samd", env.entry, DeployOptions())
        assert row["state"] == "failed" and "has no runtime for any backend" in row["error"]
    finally:
        await env.stop()
        env.runner.close()
    await asyncio.sleep(0)
