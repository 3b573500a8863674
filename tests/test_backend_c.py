"""The portable C / Wasm backend against the reference interpreter.

Every shared model the compiler imports, at int8 and float32: the generated C, compiled to
an MVP Wasm module, runs in wasmtime and in wasm3 (pywasm3) and equals the reference (int8
bit-exact; float <= 1e-5 relative; observed <= 1.2e-6); the SIMD128 build equals the MVP
build. The ONNX backend node cases our frontend supports run through the same path (floats
<= 1e-5, integers exact). Then sizes: pages are the minimum, the Cortex-M4F object holds
the arena in .bss and the weights in .rodata, and Wasm fit refuses a device below one page.
"""

from __future__ import annotations

from dataclasses import replace

import re
import warnings

import numpy as np
import pytest

pytest.importorskip("wasmtime")
pytest.importorskip("wasm3")
pytest.importorskip("ziglang")

from compilers.backends.c.emit import to_c  # noqa: E402
from compilers.backends.wasm.abi import METADATA_SECTION, parse_wasm  # noqa: E402
from compilers.backends.c.build import build_c
from compilers.backends.wasm.build import PAGE, build_wasm  # noqa: E402
from compilers.backends.wasm.host import run_wasm3, run_wasmtime  # noqa: E402
from compilers.errors import CompilerError  # noqa: E402
from compilers.frontends import import_onnx  # noqa: E402
from compilers.passes import optimize  # noqa: E402
from compilers.reference import run  # noqa: E402
from device_profiles import get_profile  # noqa: E402
from tests.compiler_helpers import random_feeds  # noqa: E402
from tests.test_backend_tflm_build import BUILDABLE, load  # noqa: E402
from tests.test_compiler_onnx_nodes import CASES, _array, _expected_skip, _freeze  # noqa: E402

WASM3_SKIP = {"mlperf_tiny/pretrainedResnet_large_float.tflite",  # 76 M MACs: minutes in an
              "mlperf_tiny/pretrainedResnet_large_int8.tflite"}   # interpreter; wasmtime runs them
_BUILDS: dict[tuple[str, str, bool], object] = {}


def wasm(rel: str, precision: str, simd: bool = False):
    key = (rel, precision, simd)
    if key not in _BUILDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # synthetic calibration
            _BUILDS[key] = build_wasm(load(rel), precision, simd=simd)
    return _BUILDS[key]


def outputs(raw: list[bytes], g) -> list[np.ndarray]:
    return [np.frombuffer(b, g.tensors[n].dtype.numpy).reshape(g.tensors[n].shape)
            for b, n in zip(raw, g.outputs, strict=True)]


def compare(got: np.ndarray, want: np.ndarray, what: str) -> float:
    want = np.asarray(want).reshape(got.shape)
    assert got.dtype == want.dtype, what
    if got.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return 0.0
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.atleast_1d(np.abs(got.astype(np.float64) - want.astype(np.float64)))
    got, want = np.atleast_1d(got), np.atleast_1d(want)
    diff[np.isnan(got) & np.isnan(want)] = 0
    diff[np.isinf(want) & (got == want)] = 0
    finite = np.abs(want[np.isfinite(want)])
    err = float(diff.max() / max(float(finite.max()) if finite.size else 0.0, 1e-30)) if diff.size else 0.0
    assert err <= 1e-5, f"{what}: relative error {err:.3g}"
    return err


@pytest.mark.parametrize("precision", ["int8", "float32"])
@pytest.mark.parametrize("rel", BUILDABLE)
def test_model_in_wasmtime_and_wasm3(rel: str, precision: str) -> None:
    b = wasm(rel, precision)
    g = b.graph
    feeds = random_feeds(g, 7)
    want = run(g, feeds)
    blobs = [np.ascontiguousarray(feeds[n]).tobytes() for n in g.inputs]
    runtimes = [("wasmtime", run_wasmtime)] + ([] if rel in WASM3_SKIP else [("wasm3", run_wasm3)])
    for runtime, fn in runtimes:
        for got, name in zip(outputs(fn(b.module, blobs), g), g.outputs, strict=True):
            compare(got, want[name], f"{rel} {precision} {runtime}")
    # the metadata section describes the tensors; memory is the minimum number of pages
    info = parse_wasm(b.module)
    assert not info.imports
    meta = info.custom_section(METADATA_SECTION)
    assert meta is not None
    meta_d = __import__("json").loads(meta)
    assert meta_d["tensors"]["inputs"][0]["shape"] == list(g.tensors[g.inputs[0]].shape)
    assert meta_d["precision"] == precision
    # stack first (16 KiB), then data: the weights, the arena, small tables
    need = 16384 + b.cmodel.arena_bytes + b.cmodel.const_bytes
    assert b.pages * PAGE >= need and (b.pages - 1) * PAGE < need + 8192


@pytest.mark.parametrize("rel", ["mlperf_tiny/onnx_converted/kws_ref_model.onnx",
                                 "mlperf_tiny/vww_96_float.onnx", "onnx/mnist-8/mnist-8.onnx",
                                 "mlperf_tiny/onnx_converted/ad01_fp32.onnx"])
@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_simd_build_equals_mvp(rel: str, precision: str) -> None:
    mvp, simd = wasm(rel, precision), wasm(rel, precision, simd=True)
    assert simd.module != mvp.module
    g = mvp.graph
    blobs = [np.ascontiguousarray(random_feeds(g, 3)[n]).tobytes() for n in g.inputs]
    a, b_ = outputs(run_wasmtime(mvp.module, blobs), g), outputs(run_wasmtime(simd.module, blobs), g)
    for x, y in zip(a, b_, strict=True):
        if x.dtype.kind == "f":
            np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6 * float(np.abs(x).max() or 1))
        else:
            np.testing.assert_array_equal(x, y)


# ---- the ONNX backend node cases ---------------------------------------------------------------

# Node cases the C backend refuses on purpose, and the error that must name why.
C_GAPS = {
    r"^test_cast(like)?_.*FLOAT16": "float16 has no C type",
    r"^test_constant$|^test_dropout_default_mask": "is a constant or a graph input",
    r"^test_quantizelinear_axis$": "per tensor",
}
NODE_CASES = [c for c in CASES if not _expected_skip(c.name)]


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_node_case_in_wasm(case) -> None:
    inputs, _ = case.data_sets[0]
    names = [v.name for v in case.model.graph.input]
    feeds = {n: _array(a) for n, a in zip(names, inputs, strict=True)}
    model = _freeze(case.model, feeds)
    g = optimize(import_onnx(model))
    gap = next((why for pat, why in C_GAPS.items() if re.search(pat, case.name)), None)
    try:
        want = run(g, {n: a for n, a in feeds.items() if n in g.inputs})
        cm = to_c(g)
    except CompilerError as e:
        assert gap is not None, f"unexpected refusal: {type(e).__name__}: {e}"
        assert gap in str(e), f"refused for another reason: {e}"
        return
    assert gap is None, f"{case.name} is listed as a gap but builds now: update C_GAPS"
    from compilers.backends.wasm.compile import compile_wasm
    module = compile_wasm(cm.source)
    blobs = [np.ascontiguousarray(feeds[n]).astype(g.tensors[n].dtype.numpy).tobytes() for n in g.inputs]
    for runtime, fn in (("wasmtime", run_wasmtime), ("wasm3", run_wasm3)):
        for got, name in zip(outputs(fn(module, blobs), g), g.outputs, strict=True):
            compare(got, want[name], f"{case.name} {runtime}")


# ---- sizes and fit -------------------------------------------------------------------------------
def test_cortex_m4f_sections_hold_arena_and_weights() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = build_c(load("mlperf_tiny/onnx_converted/kws_ref_model.onnx"), "int8", "cortex-m4f")
    weights = sum(t.nbytes for t in c.prepared.graph.tensors.values() if t.is_const)
    print(f"kws int8 cortex-m4f: {c.sizes}, arena {c.cmodel.arena_bytes}, weights {weights}")
    assert c.sizes.bss >= c.cmodel.arena_bytes
    assert c.sizes.rodata >= 0.9 * weights
    assert 0 < c.sizes.text < 64 * 1024
    assert c.ram == c.sizes.data + c.sizes.bss + 1024


def test_wasm_fit() -> None:
    """The Wasm backend's fit on real builds: pages plus the runtime's RAM against the free SRAM,
    and a board without one 64 KiB page left after its runtime cannot run Wasm at all."""
    from compilers.backends.base import RuntimeSpec
    from compilers.backends.wasm.backend import BACKEND

    samd21, nrf = get_profile("samd21"), get_profile("nrf52840")
    small = wasm("tflm_examples/hello_world_int8.tflite", "int8")
    assert small.pages == 1
    needs = BACKEND.measure(small.module)
    assert needs.ram_bytes == small.pages * PAGE and needs.flash_bytes == len(small.module)
    samd_wasm = replace(samd21.target("tflm"), runtime=RuntimeSpec("wasm3", "0.5.0", (), 10240))
    f = BACKEND.fit(needs, samd_wasm, "int8")
    assert not f.fits and "cannot run Wasm at all" in f.problems[0]
    f = BACKEND.fit(needs, nrf.target("wasm3"), "int8")
    assert f.fits and f.ram_bytes == PAGE + 16384
    big = wasm("mlperf_tiny/vww_96_float.onnx", "float32")
    f = BACKEND.fit(BACKEND.measure(big.module), nrf.target("wasm3"), "float32")
    assert not f.fits and "SRAM short by" in f.problems[0]
