"""One fit: the server's verdict and a simulated device's are one function on one measurement.

The server judges a build by ``Backend.fit(Backend.measure(artifact), target)`` (the deploy
choice and ``models inspect``); a simulated device, holding only the artifact, loads it in the
backend's device runtime (in its worker process) and calls the same ``fit`` on what it has
free. For real artifacts of both deliverable backends, on every bundled board that has their
runtime and on boards cut to exactly the need and one byte under it, the two must agree on
the verdict and on every shortfall: a disagreement between server and device is a failure
here, not a delivery that dies on the device.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from compilers.backends import registry
from compilers.backends.base import Target
from compilers.frontends import import_tflite
from device_profiles import load_profiles
from simulator.runtimes import ModelError, ModelRunner

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "models.json").exists(), reason="shared/models is absent")
TFLITE = ["tflm_examples/hello_world_int8.tflite", "mlperf_tiny/kws_ref_model.tflite"]


def artifacts() -> list[tuple[str, bytes]]:
    out = [(p, (MODELS / p).read_bytes()) for p in TFLITE]
    from compilers.backends.wasm.build import build_wasm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.append(("hello_world as wasm", build_wasm(import_tflite(MODELS / TFLITE[0]), "int8").module))
    return out


def edges(t: Target, ram_bytes: int) -> list[Target]:
    """The board as it is, and cut to exactly the model's need and one byte under it."""
    exact = ram_bytes + t.runtime.ram_bytes
    return [t, dataclasses.replace(t, sram_free_bytes=exact), dataclasses.replace(t, sram_free_bytes=exact - 1)]


@pytest.fixture(scope="module")
def runner():
    r = ModelRunner(timeout_s=20)
    yield r
    r.close()


async def test_server_and_device_agree_on_every_board(runner: ModelRunner) -> None:
    profiles = load_profiles()
    judged = 0
    for label, blob in artifacts():
        backend = registry.recognise(blob)
        assert backend is not None, label
        needs = backend.measure(blob)  # the server's measurement, in this process
        for p in profiles.values():
            runtime = next((r for r in backend.runtimes if p.runtime(r)), None)
            if runtime is None:
                continue
            for t in edges(p.target(runtime), needs.ram_bytes):
                server = backend.fit(needs, t, "")
                try:
                    plan = await runner.check(blob, t)  # the device: its runtime's load, the same fit
                except ModelError as exc:
                    assert not server.fits, f"{label} on {p.name} ({t.sram_free_bytes} B): server says fits, " \
                                            f"device says {exc}"
                    assert str(exc).startswith("; ".join(server.problems)), (label, p.name, str(exc))
                else:
                    assert server.fits, f"{label} on {p.name}: device takes it, server says {server.problems}"
                    assert plan.fit == server and plan.need == needs.ram_bytes
                judged += 1
    assert judged >= 30
