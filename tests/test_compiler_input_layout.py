"""Channels-last image inputs (``input_layout="nhwc"``, ``compilers.passes.input_layout``) on every
backend: the same NHWC bytes in, the model's outputs out.

Checked against onnxruntime on the NCHW source (fed the same data transposed): the TFLM
flatbuffer in tflite-micro (float32 within 1e-5, and the int8 build bit-exact with the reference
interpreter, which itself is TFLM's arithmetic), the C backend's module in wasmtime (1e-5). On
the TFLM build the layout removes the TRANSPOSE an NCHW ONNX model otherwise needs, so the MLPerf
ResNet-8 int8 build meets the nRF52840's operator list. Inputs the network does not read as
images (flattened first, or a TFLite model's, channels-last already) keep their shape.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from compilers.backends.tflm.build import build_tflm
from compilers.backends.tflm.sources import check_operators
from compilers.errors import CompilerError
from compilers.frontends import import_onnx, import_tflite
from compilers.passes import optimize
from compilers.passes.input_layout import image_inputs, with_input_layout
from compilers.reference import run
from device_profiles import get_profile
from tests.compiler_helpers import tflm_outputs
from tests.conftest import SHARED_MODELS

HERE = Path(__file__).resolve().parent / "exporters"
CNN = HERE / "torch_nchw_cnn.onnx"
RESNET = SHARED_MODELS / "mlperf_tiny" / "pretrainedResnet.onnx"


def _xs(shape: tuple[int, ...], n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


def _ort(path: Path, xs: list[np.ndarray]) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.stack([s.run(None, {name: x})[0] for x in xs])


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def test_the_pass_declares_only_image_inputs() -> None:
    g = optimize(import_onnx(CNN))
    (name,) = g.inputs
    assert image_inputs(g) == (name,)
    laid = with_input_layout(g, "nhwc")
    n, c, h, w = g.tensors[name].shape
    assert laid.inputs == (name,) and laid.tensors[name].shape == (n, h, w, c)
    xs = _xs((n, c, h, w))
    got = np.stack([run(laid, {name: _nhwc(x)})[laid.outputs[0]] for x in xs])
    np.testing.assert_allclose(got, _ort(CNN, xs), atol=1e-5)
    assert with_input_layout(g, "nchw") is g
    with pytest.raises(CompilerError, match="input_layout 'nwhc'"):
        with_input_layout(g, "nwhc")
    # a TFLite model's input is channels-last already (behind the frontend's TRANSPOSE): unchanged
    kws = optimize(import_tflite(SHARED_MODELS / "mlperf_tiny" / "kws_ref_model.tflite"))
    assert image_inputs(kws) == () and with_input_layout(kws, "nhwc") is kws
    # a 4-D input that is flattened before any window is no image: unchanged
    w = helper.make_tensor("w", TensorProto.FLOAT, [12, 2], np.ones(24, np.float32))
    flat = helper.make_model(helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w]),
        opset_imports=[helper.make_opsetid("", 13)])
    mlp = optimize(import_onnx(flat))
    assert image_inputs(mlp) == () and with_input_layout(mlp, "nhwc") is mlp


def test_tflm_nhwc_float_and_int8() -> None:
    pytest.importorskip("tflite_micro")
    g = import_onnx(CNN)
    xs = _xs(g.tensors[g.inputs[0]].shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f32 = build_tflm(g, "float32", input_layout="nhwc", offline_plan=False)
        i8 = build_tflm(g, "int8", input_layout="nhwc", offline_plan=False)
    for b in (f32, i8):
        assert "TRANSPOSE" not in b.operators, b.operators
        assert b.graph.tensors[b.graph.inputs[0]].shape == _nhwc(xs[0]).shape
    got = tflm_outputs(f32.flatbuffer, f32.arena.recommended, [_nhwc(x) for x in xs])
    np.testing.assert_allclose(got.reshape(-1), _ort(CNN, xs).reshape(-1), atol=1e-5)
    q = i8.graph.tensors[i8.graph.inputs[0]].quant
    assert q is not None
    xq = [np.clip(np.round(_nhwc(x) / q.scale[0]) + q.zero_point[0], -128, 127).astype(np.int8) for x in xs]
    got8 = tflm_outputs(i8.flatbuffer, i8.arena.recommended, xq)
    want8 = np.stack([run(i8.graph, {i8.graph.inputs[0]: x})[i8.graph.outputs[0]] for x in xq])
    np.testing.assert_array_equal(got8.reshape(-1), want8.reshape(-1))


@pytest.mark.skipif(not RESNET.exists(), reason="shared models not present")
def test_resnet8_nhwc_meets_the_nrf52840_operator_list() -> None:
    pytest.importorskip("tflite_micro")
    ops = get_profile("nrf52840").operators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nchw = build_tflm(import_onnx(RESNET), "int8", measure=False, offline_plan=False)
        nhwc = build_tflm(import_onnx(RESNET), "int8", measure=False, offline_plan=False, input_layout="nhwc")
    assert "TRANSPOSE" in nchw.operators and "TRANSPOSE" not in ops
    with pytest.raises(CompilerError, match="TRANSPOSE"):
        check_operators(nchw.flatbuffer, ops)
    check_operators(nhwc.flatbuffer, ops)
    assert len(nhwc.flatbuffer) < len(nchw.flatbuffer)


def test_wasm_nhwc_equals_onnxruntime() -> None:
    pytest.importorskip("wasmtime")
    pytest.importorskip("ziglang")
    from compilers.backends.wasm.build import build_wasm
    from compilers.backends.wasm.host import run_wasmtime

    g = import_onnx(CNN)
    xs = _xs(g.tensors[g.inputs[0]].shape, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build_wasm(g, "float32", input_layout="nhwc")
    assert b.graph.tensors[b.graph.inputs[0]].shape == _nhwc(xs[0]).shape
    got = np.stack([np.frombuffer(run_wasmtime(b.module, [_nhwc(x).tobytes()])[0], np.float32) for x in xs])
    want = _ort(CNN, xs)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5)
