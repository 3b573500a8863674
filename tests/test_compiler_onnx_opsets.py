"""Version-dependent ONNX semantics, one hand-built model per (op, opset), against
onnxruntime.

ONNX's generated node tests (``test_compiler_onnx_nodes``) only exercise the newest
version of each op. Real models are older: mnist-8 is opset 8, the onnx2c models 9, the
tflite2onnx files 11. This file covers what changes across opsets 7..22 (attributes that
became inputs, Softmax's axis meaning before 13, Dropout/BatchNorm variants, ceil_mode,
Q/DQ per-tensor vs per-axis), plus configurations the generated cases lack (grouped and
depthwise dilated convolution, SAME_LOWER, 1-D and 3-D windows, negative pads, int8 pools)
and the opset < 7 upgrade path. Same bar: relative error <= 1e-4, integers exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from onnx import helper, numpy_helper  # noqa: E402

from compilers.frontends import import_onnx  # noqa: E402
from compilers.frontends.onnx_context import CONVERTERS  # noqa: E402
from compilers.reference import run  # noqa: E402

R = np.random.default_rng(7)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


@dataclass
class Case:
    name: str
    opset: int
    op: str
    inputs: list[tuple[str, np.ndarray | None, bool]]  # (name, value, constant?); None = absent
    attrs: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("y",)
    # outputs where onnxruntime departs from the spec: compared with onnx.reference instead
    not_compared: tuple[str, ...] = ()


def _c(name: str, value: Any, dtype: Any = np.int64) -> tuple[str, np.ndarray, bool]:
    return (name, np.asarray(value, dtype), True)


def _x(value: np.ndarray, name: str = "x") -> tuple[str, np.ndarray, bool]:
    return (name, value, False)


CASES = [
    # Softmax: before 13 the input is flattened to 2-D at `axis` (default 1)
    Case("softmax_v1_axis1", 7, "Softmax", [_x(f32(2, 3, 4))], {"axis": 1}),
    Case("softmax_v11_default", 11, "Softmax", [_x(f32(2, 3, 4))]),
    Case("softmax_v11_axis0", 11, "Softmax", [_x(f32(2, 3, 4))], {"axis": 0}),
    Case("softmax_v11_last", 11, "Softmax", [_x(f32(2, 3, 4))], {"axis": -1}),
    Case("softmax_v13_axis1", 13, "Softmax", [_x(f32(2, 3, 4))], {"axis": 1}),
    # Clip: attributes before 11, inputs after
    Case("clip_v6_attrs", 7, "Clip", [_x(f32(3, 4))], {"min": -0.5, "max": 0.25}),
    Case("clip_v6_none", 7, "Clip", [_x(f32(3, 4))]),
    Case("clip_v11_max_only", 11, "Clip", [_x(f32(3, 4)), ("", None, True), _c("hi", 0.3, np.float32)]),
    Case("clip_v12_int8", 12, "Clip", [_x(R.integers(-128, 128, (5,)).astype(np.int8)),
                                       _c("lo", -3, np.int8), _c("hi", 7, np.int8)]),
    Case("relu6_v13", 13, "Clip", [_x(f32(2, 8) * 8), _c("lo", 0, np.float32), _c("hi", 6, np.float32)]),
    # Squeeze / Unsqueeze: axes attribute before 13
    Case("squeeze_v11_axes", 11, "Squeeze", [_x(f32(1, 3, 1, 2))], {"axes": [-2]}),
    Case("squeeze_v11_all", 11, "Squeeze", [_x(f32(1, 3, 1, 2))]),
    Case("squeeze_v13_input", 13, "Squeeze", [_x(f32(1, 3, 1, 2)), _c("axes", [0])]),
    Case("unsqueeze_v11", 11, "Unsqueeze", [_x(f32(3, 2))], {"axes": [0, -1]}),
    Case("unsqueeze_v13", 13, "Unsqueeze", [_x(f32(3, 2)), _c("axes", [1, 3])]),
    # Pad: attributes before 11, inputs after; axes at 18; wrap at 19
    Case("pad_v2_constant", 7, "Pad", [_x(f32(2, 3))], {"pads": [0, 1, 1, 2], "value": 1.5}),
    Case("pad_v2_reflect", 7, "Pad", [_x(f32(1, 1, 4, 5))], {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect"}),
    Case("pad_v2_edge", 7, "Pad", [_x(f32(2, 3))], {"pads": [1, 1, 1, 1], "mode": "edge"}),
    Case("pad_v11_inputs", 11, "Pad", [_x(f32(2, 3)), _c("p", [0, 2, 1, 0]), _c("v", -1.0, np.float32)]),
    Case("pad_v11_negative", 11, "Pad", [_x(f32(3, 5)), _c("p", [-1, 1, 0, -2])]),
    Case("pad_v18_axes", 18, "Pad", [_x(f32(2, 3, 4)), _c("p", [1, 2]), ("", None, True), _c("a", [-1])]),
    Case("pad_v19_wrap", 19, "Pad", [_x(f32(2, 3)), _c("p", [0, 2, 0, 1])], {"mode": "wrap"}),
    # ReduceMean: axes attribute before 18
    Case("reducemean_v13_axes", 13, "ReduceMean", [_x(f32(2, 3, 4))], {"axes": [1, -1], "keepdims": 0}),
    Case("reducemean_v11_all", 11, "ReduceMean", [_x(f32(2, 3, 4))]),
    Case("reducemean_v18_input", 18, "ReduceMean", [_x(f32(2, 3, 4)), _c("axes", [2])]),
    Case("reducemean_v18_noop", 18, "ReduceMean", [_x(f32(2, 3))], {"noop_with_empty_axes": 1}),
    # Reshape / Flatten
    Case("reshape_v5_zero_minus1", 7, "Reshape", [_x(f32(2, 3, 4)), _c("s", [0, -1])]),
    Case("reshape_v14_allowzero", 14, "Reshape", [_x(f32(2, 3, 4)), _c("s", [4, 6])], {"allowzero": 1}),
    Case("flatten_v9_axis0", 9, "Flatten", [_x(f32(2, 3, 4))], {"axis": 0}),
    Case("flatten_v11_negative", 11, "Flatten", [_x(f32(2, 3, 4))], {"axis": -1}),
    # BatchNormalization across 7 / 9 / 15
    *[Case(f"batchnorm_v{v}", v, "BatchNormalization",
           [_x(f32(2, 3, 4, 4)), _c("s", R.uniform(0.5, 2, 3), np.float32), _c("b", f32(3), np.float32),
            _c("m", f32(3), np.float32), _c("v", R.uniform(0.5, 2, 3), np.float32)], {"epsilon": 1e-3})
      for v in (7, 9, 15)],
    # Dropout is the identity in inference, whatever the version
    Case("dropout_v7", 7, "Dropout", [_x(f32(3, 4))], {"ratio": 0.3}),
    # onnxruntime returns an all-false mask for Dropout 7..11 in inference; onnx's own
    # reference evaluator and ours say all true (nothing dropped).
    Case("dropout_v10_mask", 10, "Dropout", [_x(f32(3, 4))], {}, ("y", "mask"), ("mask",)),
    Case("dropout_v12_consts", 12, "Dropout", [_x(f32(3, 4)), _c("r", 0.2, np.float32),
                                               _c("t", False, np.bool_)], {}, ("y", "mask")),
    # Conv configurations
    Case("conv_v7_pads", 7, "Conv", [_x(f32(1, 2, 7, 6)), _c("w", f32(4, 2, 3, 3), np.float32),
                                     _c("b", f32(4), np.float32)], {"pads": [1, 0, 2, 1]}),
    Case("conv_depthwise_dilated_strided", 11, "Conv",
         [_x(f32(2, 4, 11, 9)), _c("w", f32(8, 1, 3, 3), np.float32), _c("b", f32(8), np.float32)],
         {"group": 4, "dilations": [2, 1], "strides": [2, 3], "pads": [1, 2, 0, 1]}),
    Case("conv_group2", 13, "Conv", [_x(f32(1, 4, 6, 6)), _c("w", f32(6, 2, 2, 2), np.float32)], {"group": 2}),
    Case("conv_same_lower", 13, "Conv", [_x(f32(1, 3, 8, 7)), _c("w", f32(2, 3, 4, 4), np.float32)],
         {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    Case("conv_same_upper", 11, "Conv", [_x(f32(1, 3, 8, 7)), _c("w", f32(2, 3, 4, 4), np.float32)],
         {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    Case("conv_valid", 11, "Conv", [_x(f32(1, 3, 8, 7)), _c("w", f32(2, 3, 3, 2), np.float32)],
         {"auto_pad": "VALID", "strides": [2, 2]}),
    Case("conv_1d", 13, "Conv", [_x(f32(2, 3, 10)), _c("w", f32(4, 3, 3), np.float32)], {"pads": [1, 1]}),
    Case("conv_3d", 22, "Conv", [_x(f32(1, 2, 4, 5, 6)), _c("w", f32(3, 2, 2, 3, 2), np.float32)],
         {"strides": [1, 2, 1]}),
    Case("conv_weight_input", 13, "Conv", [_x(f32(1, 2, 5, 5)), _x(f32(3, 2, 3, 3), "w")]),
    Case("convtranspose_v7", 7, "ConvTranspose", [_x(f32(1, 2, 3, 4)), _c("w", f32(2, 3, 3, 3), np.float32)],
         {"strides": [2, 2]}),
    Case("convtranspose_v1_odd_output_shape", 7, "ConvTranspose",
         [_x(f32(1, 1, 3, 3)), _c("w", f32(1, 1, 3, 3), np.float32)], {"strides": [2, 2], "output_shape": [6, 6]}),
    Case("convtranspose_same_upper_odd", 11, "ConvTranspose",
         [_x(f32(1, 1, 3, 3)), _c("w", f32(1, 1, 3, 3), np.float32)], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    Case("convtranspose_same_lower_odd", 11, "ConvTranspose",
         [_x(f32(1, 1, 3, 3)), _c("w", f32(1, 1, 3, 3), np.float32)], {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    Case("convtranspose_output_shape", 11, "ConvTranspose",
         [_x(f32(1, 2, 3, 4)), _c("w", f32(2, 3, 3, 3), np.float32), _c("b", f32(3), np.float32)],
         {"strides": [2, 2], "output_shape": [7, 9]}),
    Case("convtranspose_group_pads", 22, "ConvTranspose",
         [_x(f32(1, 4, 5, 5)), _c("w", f32(4, 1, 3, 3), np.float32)],
         {"group": 2, "pads": [1, 0, 1, 2], "dilations": [1, 2], "output_padding": [0, 1], "strides": [1, 2]}),
    # Gemm across 7 / 9 / 11 / 13
    Case("gemm_v7_broadcast_c", 7, "Gemm",
         [_x(f32(3, 5)), _c("b", f32(5, 4), np.float32), _c("c", f32(1, 4), np.float32)]),
    Case("gemm_v9_all_attrs", 9, "Gemm", [_x(f32(5, 3)), _c("b", f32(4, 5), np.float32), _c("c", f32(4), np.float32)],
         {"transA": 1, "transB": 1, "alpha": 0.5, "beta": -2.0}),
    Case("gemm_v11_no_c", 11, "Gemm", [_x(f32(3, 5)), _c("b", f32(5, 4), np.float32)]),
    Case("gemm_v13_scalar_c", 13, "Gemm", [_x(f32(3, 5)), _x(f32(5, 4), "b"), _c("c", 0.5, np.float32)]),
    # Pools across versions
    Case("maxpool_v1", 7, "MaxPool", [_x(f32(1, 2, 6, 6))], {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}),
    Case("maxpool_v8", 8, "MaxPool", [_x(f32(1, 2, 7, 7))], {"kernel_shape": [3, 3], "strides": [2, 2]}),
    Case("maxpool_v10_ceil", 10, "MaxPool", [_x(f32(1, 2, 8, 8))],
         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    Case("maxpool_v12_int8_dilated", 12, "MaxPool", [_x(R.integers(-128, 128, (1, 2, 9, 9)).astype(np.int8))],
         {"kernel_shape": [2, 3], "dilations": [2, 1], "pads": [1, 1, 0, 1]}),
    Case("maxpool_1d_same", 22, "MaxPool", [_x(f32(2, 3, 9))],
         {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_UPPER"}),
    Case("avgpool_v7_include_pad", 7, "AveragePool", [_x(f32(1, 2, 6, 6))],
         {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    Case("avgpool_v7_exclude_pad", 7, "AveragePool", [_x(f32(1, 2, 6, 6))],
         {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    Case("avgpool_v10_ceil", 10, "AveragePool", [_x(f32(1, 2, 7, 7))],
         {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    Case("avgpool_v19_dilated", 19, "AveragePool", [_x(f32(1, 2, 8, 8))],
         {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 1, 0], "count_include_pad": 1}),
    Case("avgpool_same_lower", 11, "AveragePool", [_x(f32(1, 1, 5, 6))],
         {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    Case("globalavgpool_v7", 7, "GlobalAveragePool", [_x(f32(2, 3, 5, 4))]),
    # Quantisation: per-tensor at 10, per-axis from 13
    Case("quantize_v10_uint8", 10, "QuantizeLinear",
         [_x(f32(3, 4) * 3), _c("s", 0.02, np.float32), _c("z", 128, np.uint8)]),
    Case("quantize_v13_axis0_int8", 13, "QuantizeLinear",
         [_x(f32(3, 4) * 3), _c("s", [0.01, 0.02, 0.05], np.float32), _c("z", [0, -3, 5], np.int8)], {"axis": 0}),
    Case("quantize_v13_no_zp", 13, "QuantizeLinear", [_x(f32(3, 4)), _c("s", 0.01, np.float32)]),
    Case("quantize_v19_halfway", 19, "QuantizeLinear",
         [_x(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300, -300], np.float32)), _c("s", 1.0, np.float32),
          _c("z", 0, np.int8)]),
    Case("dequantize_v10_int32", 10, "DequantizeLinear",
         [_x(R.integers(-1000, 1000, (5,)).astype(np.int32)), _c("s", 0.003, np.float32)]),
    Case("dequantize_v13_axis_last", 13, "DequantizeLinear",
         [_x(R.integers(-128, 128, (2, 3)).astype(np.int8)), _c("s", [0.1, 0.2, 0.3], np.float32),
          _c("z", [1, 0, -1], np.int8)], {"axis": -1}),
    # Activations and elementwise at their older versions
    Case("leakyrelu_v6", 7, "LeakyRelu", [_x(f32(3, 4))]),
    Case("hardsigmoid_v6", 7, "HardSigmoid", [_x(f32(3, 4) * 4)], {"alpha": 0.3}),
    Case("prelu_v7_channel", 7, "PRelu", [_x(f32(2, 3, 4, 4)), _c("slope", f32(3, 1, 1), np.float32)]),
    Case("prelu_v9_scalar", 9, "PRelu", [_x(f32(2, 3)), _c("slope", [0.1], np.float32)]),
    Case("sigmoid_v6_extremes", 7, "Sigmoid", [_x(np.array([-100, -5, 0, 5, 100], np.float32))]),
    Case("hardswish_v14", 14, "HardSwish", [_x(f32(3, 4) * 4)]),
    Case("tanh_v6", 7, "Tanh", [_x(f32(3, 4))]),
    Case("concat_v4", 7, "Concat", [_x(f32(2, 3)), _x(f32(2, 1), "x2")], {"axis": 1}),
    Case("concat_v11_negative", 11, "Concat", [_x(f32(2, 3)), _c("k", f32(2, 2), np.float32)], {"axis": -1}),
    Case("transpose_v1_default", 7, "Transpose", [_x(f32(2, 3, 4))]),
    Case("cast_v6_float_int32", 7, "Cast", [_x(f32(3, 4) * 10)], {"to": onnx.TensorProto.INT32}),
    Case("cast_v13_float_bool", 13, "Cast", [_x(np.array([0, 0.5, -2], np.float32))], {"to": onnx.TensorProto.BOOL}),
    Case("div_v14_int32_trunc", 14, "Div", [_x(np.array([7, -7, 7, -7], np.int32)), _c("d", [2, 2, -2, -2], np.int32)]),
    Case("matmul_v7_batched", 7, "MatMul", [_x(f32(2, 1, 3, 4)), _x(f32(3, 4, 5), "b")]),
    Case("add_v7_broadcast", 7, "Add", [_x(f32(2, 3, 4)), _c("b", f32(4), np.float32)]),
    Case("identity_v7", 7, "Identity", [_x(f32(2))]),
]


def _build(case: Case) -> tuple["onnx.ModelProto", dict[str, np.ndarray]]:
    feeds, graph_inputs, inits, names = {}, [], [], []
    for name, value, const in case.inputs:
        names.append(name)
        if value is None:
            continue
        if const:
            inits.append(numpy_helper.from_array(value, name))
        else:
            feeds[name] = value
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, value.shape))
    node = helper.make_node(case.op, names, list(case.outputs), name=case.name, **case.attrs)
    graph = helper.make_graph([node], case.name, graph_inputs, [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 7 if case.opset < 19 else 9
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(typed[o] for o in case.outputs)  # outputs typed by onnx
    return model, feeds


def _compare(mine: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert mine.shape == ref.shape and mine.dtype == ref.dtype, \
        f"{what}: {mine.dtype}{mine.shape} vs {ref.dtype}{ref.shape}"
    if mine.dtype.kind == "f":
        err = np.abs(mine.astype(np.float64) - ref).max(initial=0) / max(np.abs(ref).max(initial=0), 1e-30)
        assert err <= 1e-4, f"{what}: relative error {err:.3g}"
    else:
        np.testing.assert_array_equal(mine, ref, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_opset_case(case: Case) -> None:
    model, feeds = _build(case)
    graph = import_onnx(model)
    ours = run(graph, feeds)
    theirs = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(list(case.outputs), feeds)
    if case.not_compared:
        from onnx.reference import ReferenceEvaluator
        spec = ReferenceEvaluator(model).run(list(case.not_compared), feeds)
        for name, ref in zip(case.not_compared, spec, strict=True):
            _compare(ours[name], ref, f"{case.name}:{name} (onnx.reference)")
    for name, ref in zip(case.outputs, theirs, strict=True):
        if name in case.not_compared:
            continue
        _compare(ours[name], ref, f"{case.name}:{name}")


def test_opset_below_7_is_upgraded() -> None:
    """Opset 6 (Add with the old broadcast attribute) goes through onnx.version_converter."""
    x, b = f32(2, 3), f32(3)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["s"], broadcast=1), helper.make_node("Relu", ["s"], ["y"])],
        "old", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [3])],  # IR 3 style
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    ours = run(import_onnx(model), {"x": x})["y"]
    np.testing.assert_allclose(ours, np.maximum(x + b, 0), rtol=1e-6)


def test_every_version_we_claim_is_exercised_somewhere() -> None:
    """A reminder, not a proof: the old versions real models use have a case here."""
    claimed = {(c.op, v) for c in CASES for v in [onnx.defs.get_schema(c.op, c.opset).since_version]}
    for needed in [("Softmax", 1), ("Softmax", 11), ("Clip", 6), ("Clip", 11), ("Pad", 2), ("Pad", 11),
                   ("Squeeze", 11), ("Unsqueeze", 11), ("ReduceMean", 13), ("Reshape", 5),
                   ("BatchNormalization", 7), ("BatchNormalization", 9), ("Dropout", 7),
                   ("Dropout", 10), ("MaxPool", 8), ("AveragePool", 7), ("Gemm", 7), ("Gemm", 9),
                   ("QuantizeLinear", 10), ("DequantizeLinear", 10), ("ConvTranspose", 1)]:
        assert needed in claimed, needed


def test_every_converter_covers_every_opset_from_7() -> None:
    """No holes: at each opset 7..newest, the op's schema version is one we implement."""
    for op_type, conv in CONVERTERS.items():
        for opset in range(7, onnx.defs.onnx_opset_version() + 1):
            try:
                version = onnx.defs.get_schema(op_type, opset).since_version
            except onnx.defs.SchemaError:  # not defined yet (HardSwish < 14, Q/DQ < 10)
                continue
            assert version in conv.versions, (op_type, opset, version)
