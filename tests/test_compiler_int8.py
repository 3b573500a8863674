"""The integer kernels (``compilers.int8``): the fixed-point helpers against values worked
out by hand from TFLite's / gemmlowp's C code, and single-op int8 models built here with
the TFLite schema's object API, run by our reference interpreter, by the tflite-micro
runtime (bit-exact expected with the default "tflm" target) and by ai-edge-litert's
reference kernels (bit-exact expected with ``use_target("litert")``).

``TinyModel`` (a few lines over ``schema_py_generated``) is also used by
``test_compiler_tflite.py`` for its bad-input cases.
"""

from __future__ import annotations

import math

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from compilers import int8 as I
from compilers.frontends import import_tflite
from compilers.ir import DType, Graph, Node, Op, Quant, Tensor
from compilers.reference import run

try:
    from tflite_micro.python.tflite_micro import runtime as tflm_runtime
except ImportError:  # pragma: no cover - tflite-micro is a project dependency
    tflm_runtime = None

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_TT = {np.dtype(np.float32): S.TensorType.FLOAT32, np.dtype(np.int8): S.TensorType.INT8,
       np.dtype(np.int32): S.TensorType.INT32, np.dtype(np.uint8): S.TensorType.UINT8}


class TinyModel:
    """Builds a one-subgraph .tflite flatbuffer tensor by tensor, op by op."""

    def __init__(self) -> None:
        self.m = S.ModelT()
        self.m.version = 3
        self.m.description = "tiny"
        self.m.buffers = [S.BufferT()]
        self.m.operatorCodes = []
        self.sg = S.SubGraphT()
        self.sg.tensors, self.sg.operators = [], []
        self.m.subgraphs = [self.sg]

    def tensor(self, name: str, shape, dtype, scale=None, zp=None, axis: int = 0,
               data=None) -> int:
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.asarray(shape, np.int32), _TT[np.dtype(dtype)], 0
        if data is not None:
            buf = S.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(np.asarray(data, dtype)).tobytes(), np.uint8)
            self.m.buffers.append(buf)
            t.buffer = len(self.m.buffers) - 1
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scale, np.float32))
            q.zeroPoint = np.broadcast_to(np.asarray(zp if zp is not None else 0, np.int64),
                                          q.scale.shape).copy()
            q.quantizedDimension = axis
            t.quantization = q
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def act(self, name: str, shape, scale: float, zp: int) -> int:
        return self.tensor(name, shape, np.int8, scale, zp)

    def op(self, code: int, inputs, outputs, opt_type: int = 0, opt=None, version: int = 1) -> None:
        k = next((i for i, oc in enumerate(self.m.operatorCodes)
                  if oc.builtinCode == code and oc.version == version), None)
        if k is None:
            oc = S.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            self.m.operatorCodes.append(oc)
            k = len(self.m.operatorCodes) - 1
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = k, np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        o.builtinOptionsType, o.builtinOptions = opt_type, opt
        self.sg.operators.append(o)

    def build(self, inputs, outputs) -> bytes:
        self.sg.inputs, self.sg.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        b = flatbuffers.Builder(1024)
        b.Finish(self.m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# ---- fixed-point helpers, by hand ---------------------------------------------------------
@pytest.mark.parametrize("m, expected", [
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.75, (3 << 29, 0)),
    (0.1, (1717986918, -3)),          # frexp = 0.8 * 2**-3; 0.8 * 2**31 = 1717986918.4
    (1.5, (3 << 29, 1)),
    (0.0, (0, 0)),
    (2.0 ** -40, (0, 0)),             # shift < -31: flushed to zero
    ((2 ** 31 - 0.4) / 2 ** 31, (1 << 30, 1)),   # q rounds up to 2**31: halved, shift + 1
])
def test_quantize_multiplier(m: float, expected: tuple[int, int]) -> None:
    assert I.quantize_multiplier(m) == expected


def test_quantize_multiplier_single_rounding_saturates_large_shifts() -> None:
    assert I.quantize_multiplier(2.0 ** 40) == (1 << 30, 41)
    assert I.quantize_multiplier(2.0 ** 40, single_rounding=True) == ((1 << 31) - 1, 30)


@pytest.mark.parametrize("a, b, expected", [
    (INT32_MIN, INT32_MIN, INT32_MAX),       # the one overflow case saturates
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),   # (2^62 - 2^32 + 1 + 2^30) / 2^31 -> 2^31 - 2
    (1 << 30, 1 << 30, 1 << 29),             # 0.5 * 0.5 = 0.25
    (3, 1 << 30, 2),                         # 1.5 rounds up ...
    (-3, 1 << 30, -1),                       # ... -1.5 rounds to -1 (nudge, then C division)
    (5, 1 << 30, 3),
    (INT32_MIN, INT32_MAX, -INT32_MAX),
    (0, INT32_MIN, 0),
])
def test_saturating_rounding_doubling_high_mul(a: int, b: int, expected: int) -> None:
    assert int(I.saturating_rounding_doubling_high_mul(a, b)) == expected


@pytest.mark.parametrize("x, e, expected", [
    (5, 1, 3), (-5, 1, -3), (4, 1, 2), (-4, 1, -2), (7, 2, 2), (-6, 2, -2), (-7, 2, -2),
    (6, 2, 2), (-5, 2, -1), (INT32_MAX, 31, 1), (INT32_MIN, 31, -1), (123, 0, 123),
])
def test_rounding_divide_by_pot(x: int, e: int, expected: int) -> None:
    assert int(I.rounding_divide_by_pot(x, e)) == expected


def test_multiply_by_quantized_multiplier_double_vs_single_rounding() -> None:
    # 5 * 0.5 * 2^-1 = 1.25: double rounding makes 2.5 -> 3, then 1.5 -> 2; single gives 1
    assert int(I.multiply_by_quantized_multiplier(5, 1 << 30, -1)) == 2
    assert int(I.multiply_by_quantized_multiplier(5, 1 << 30, -1, single_rounding=True)) == 1
    with I.use_rounding("single"):
        assert int(I.multiply_by_quantized_multiplier(5, 1 << 30, -1)) == 1
    # a left shift: 100 * 0.75 * 2 = 150
    assert int(I.multiply_by_quantized_multiplier(100, 3 << 29, 1)) == 150
    # vectorised, per channel
    got = I.multiply_by_quantized_multiplier(np.array([[1000], [-1000]]), np.array([1 << 30, 3 << 29]),
                                             np.array([0, -2]))
    assert got.tolist() == [[500, 188], [-500, -188]]


def test_gemmlowp_functions() -> None:
    assert I.exp_on_negative_values(0, 5) == INT32_MAX
    assert I.gemmlowp_logistic(0, 4) == 1 << 30
    assert I.gemmlowp_tanh(0, 4) == 0
    for v in (-0.1, -1.0, -3.3, -10.0):
        assert abs(I.exp_on_negative_values(round(v * 2 ** 26), 5) / 2 ** 31 - math.exp(v)) < 1e-6
    for v in (-5.0, -1.0, 0.3, 2.0, 7.9):
        raw = round(v * 2 ** 27)
        assert abs(I.gemmlowp_logistic(raw, 4) / 2 ** 31 - 1 / (1 + math.exp(-v))) < 1e-7
        assert abs(I.gemmlowp_tanh(raw, 4) / 2 ** 31 - math.tanh(v)) < 1e-7
    recip, bits = I.get_reciprocal(int(3.5 * 2 ** 19), 12)
    assert bits == 1 and abs(recip / 2 ** 31 / 2 ** bits - 1 / 3.5) < 1e-8  # 1/x = r * 2^-bits


def test_quantize_rounding_rule() -> None:
    """Half away from zero for TFLite-born QUANTIZE nodes, half to even (ONNX, the default) otherwise."""
    x = Tensor("x", (4,), DType.FLOAT32)
    y = Tensor("y", (4,), DType.INT8, Quant((1.0,), (0,)))
    data = np.array([0.5, 1.5, 2.5, -2.5], np.float32)
    for rounding, expected in (({}, [0, 2, 2, -2]), ({"rounding": "half_away"}, [1, 2, 3, -3])):
        g = Graph.make("q", ["x"], ["y"], [Node.make(Op.QUANTIZE, ["x"], ["y"], name="q", **rounding)], [x, y])
        assert run(g.validate(), {"x": data})["y"].tolist() == expected


def test_requantising_data_movement() -> None:
    """RESHAPE between different quantisations requantises (value semantics)."""
    x = Tensor("x", (2, 2), DType.INT8, Quant((0.5,), (0,)))
    y = Tensor("y", (4,), DType.INT8, Quant((0.25,), (10,)))
    g = Graph.make("r", ["x"], ["y"], [Node.make(Op.RESHAPE, ["x"], ["y"], shape=(4,))], [x, y])
    got = run(g.validate(), {"x": np.array([[1, -2], [60, -60]], np.int8)})["y"]
    assert got.tolist() == [12, 6, 127, -110]


# ---- single-op models vs LiteRT and TFLM ------------------------------------------------------
def _compare(buf: bytes, seeds: int = 6) -> dict[str, int]:
    g = import_tflite(buf)
    li = Interpreter(model_content=buf, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    li.allocate_tensors()
    tm = tflm_runtime.Interpreter.from_bytes(buf) if tflm_runtime is not None else None
    rng = np.random.default_rng(7)
    worst = {"litert": 0, "tflm": 0}
    for _ in range(seeds):
        feeds = {}
        for k, d in enumerate(li.get_input_details()):
            if d["dtype"] == np.float32:
                x = (rng.standard_normal(d["shape"]) * 3).astype(np.float32)
            else:
                x = rng.integers(-128, 128, size=d["shape"]).astype(d["dtype"])
            li.set_tensor(d["index"], x)
            if tm is not None:
                tm.set_input(x, k)
            feeds[g.inputs[k]] = x
        li.invoke()
        with I.use_target("litert"):
            ours_l = run(g, feeds)[g.outputs[0]]
        ref_l = li.get_tensor(li.get_output_details()[0]["index"])
        worst["litert"] = max(worst["litert"], int(np.abs(ours_l.astype(np.int64) - ref_l).max()))
        if tm is not None:
            tm.invoke()
            ours_t = run(g, feeds)[g.outputs[0]]
            worst["tflm"] = max(worst["tflm"], int(np.abs(ours_t.astype(np.int64) - tm.get_output(0)).max()))
    return worst


def _conv_model(depthwise: bool, rng: np.random.Generator) -> bytes:
    m = TinyModel()
    if depthwise:
        x = m.act("x", [1, 7, 6, 3], 0.05, 3)
        ws = rng.uniform(0.005, 0.02, 6)
        w = m.tensor("w", [1, 3, 3, 6], np.int8, ws, 0, axis=3,
                     data=rng.integers(-127, 128, (1, 3, 3, 6)))
        y = m.act("y", [1, 4, 3, 6], 0.03, 7)
        o = S.DepthwiseConv2DOptionsT()
        o.depthMultiplier = 2
        code, opt = S.BuiltinOperator.DEPTHWISE_CONV_2D, S.BuiltinOptions.DepthwiseConv2DOptions
    else:
        x = m.act("x", [1, 9, 8, 4], 0.05, 3)
        ws = rng.uniform(0.005, 0.02, 6)
        w = m.tensor("w", [6, 3, 3, 4], np.int8, ws, 0, axis=0,
                     data=rng.integers(-127, 128, (6, 3, 3, 4)))
        y = m.act("y", [1, 5, 4, 6], 0.04, -20)
        o = S.Conv2DOptionsT()
        o.fusedActivationFunction = S.ActivationFunctionType.RELU6
        code, opt = S.BuiltinOperator.CONV_2D, S.BuiltinOptions.Conv2DOptions
    b = m.tensor("b", [6], np.int32, 0.05 * ws, 0, data=rng.integers(-500, 500, 6))
    o.padding, o.strideH, o.strideW = S.Padding.SAME, 2, 2
    o.dilationHFactor = o.dilationWFactor = 1
    m.op(code, [x, w, b], [y], opt, o, 3)
    return m.build([x], [y])


def _fc_model(rng: np.random.Generator) -> bytes:
    m = TinyModel()
    x = m.act("x", [3, 40], 0.05, 3)
    w = m.tensor("w", [10, 40], np.int8, 0.02, 0, data=rng.integers(-127, 128, (10, 40)))
    b = m.tensor("b", [10], np.int32, 0.05 * 0.02, 0, data=rng.integers(-2000, 2000, 10))
    y = m.act("y", [3, 10], 0.07, -5)
    o = S.FullyConnectedOptionsT()
    o.fusedActivationFunction = S.ActivationFunctionType.RELU
    m.op(S.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y], S.BuiltinOptions.FullyConnectedOptions, o, 4)
    return m.build([x], [y])


def _binary_model(code: int, opt_type: int, opt, out_scale: float) -> bytes:
    m = TinyModel()
    a = m.act("a", [1, 4, 5, 3], 0.07, -3)
    c = m.act("c", [1, 4, 5, 3], 0.013, 11)
    y = m.act("y", [1, 4, 5, 3], out_scale, -10)
    m.op(code, [a, c], [y], opt_type, opt, 2)
    return m.build([a, c], [y])


def _pool_model(code: int) -> bytes:
    m = TinyModel()
    x = m.act("x", [1, 7, 8, 5], 0.05, 3)
    y = m.act("y", [1, 4, 4, 5], 0.05, 3)
    o = S.Pool2DOptionsT()
    o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = S.Padding.SAME, 2, 2, 3, 3
    m.op(code, [x], [y], S.BuiltinOptions.Pool2DOptions, o, 2)
    return m.build([x], [y])


def _unary_model(code: int, in_scale: float, out_scale: float, out_zp: int, opt_type: int = 0,
                 opt=None, in_dtype=np.int8) -> bytes:
    m = TinyModel()
    x = m.act("x", [3, 50], in_scale, 5) if in_dtype == np.int8 else m.tensor("x", [3, 50], in_dtype)
    y = m.act("y", [3, 50], out_scale, out_zp)
    m.op(code, [x], [y], opt_type, opt, 2 if in_dtype == np.int8 else 1)
    return m.build([x], [y])


def _mean_model(keep: bool, out_scale: float) -> bytes:
    m = TinyModel()
    x = m.act("x", [1, 5, 6, 4], 0.05, 3)
    ax = m.tensor("ax", [2], np.int32, data=np.array([1, 2]))
    y = m.act("y", [1, 1, 1, 4] if keep else [1, 4], out_scale, 3)
    o = S.ReducerOptionsT()
    o.keepDims = keep
    m.op(S.BuiltinOperator.MEAN, [x, ax], [y], S.BuiltinOptions.ReducerOptions, o, 2)
    return m.build([x], [y])


def _softmax_opts() -> S.SoftmaxOptionsT:
    o = S.SoftmaxOptionsT()
    o.beta = 1.0
    return o


def _add_relu() -> S.AddOptionsT:
    o = S.AddOptionsT()
    o.fusedActivationFunction = S.ActivationFunctionType.RELU
    return o


def _leaky() -> S.LeakyReluOptionsT:
    o = S.LeakyReluOptionsT()
    o.alpha = 0.2
    return o


B, Opt = S.BuiltinOperator, S.BuiltinOptions
CASES = {
    "fully_connected": lambda rng: _fc_model(rng),
    "conv3x3_per_channel": lambda rng: _conv_model(False, rng),
    "depthwise3x3_multiplier2": lambda rng: _conv_model(True, rng),
    "add_different_scales": lambda rng: _binary_model(B.ADD, Opt.AddOptions, _add_relu(), 0.09),
    "sub": lambda rng: _binary_model(B.SUB, Opt.SubOptions, S.SubOptionsT(), 0.09),
    "mul": lambda rng: _binary_model(B.MUL, Opt.MulOptions, S.MulOptionsT(), 0.02),
    "avg_pool_same": lambda rng: _pool_model(B.AVERAGE_POOL_2D),
    "max_pool_same": lambda rng: _pool_model(B.MAX_POOL_2D),
    "softmax_scale_0.05": lambda rng: _unary_model(B.SOFTMAX, 0.05, 1 / 256, -128, Opt.SoftmaxOptions, _softmax_opts()),
    "softmax_scale_1": lambda rng: _unary_model(B.SOFTMAX, 1.0, 1 / 256, -128, Opt.SoftmaxOptions, _softmax_opts()),
    "logistic": lambda rng: _unary_model(B.LOGISTIC, 0.06, 1 / 256, -128),
    "tanh": lambda rng: _unary_model(B.TANH, 0.06, 1 / 128, 0),
    "relu_requantising": lambda rng: _unary_model(B.RELU, 0.06, 0.03, -128),
    "leaky_relu": lambda rng: _unary_model(B.LEAKY_RELU, 0.06, 0.05, -7, Opt.LeakyReluOptions, _leaky()),
    "quantize_float": lambda rng: _unary_model(B.QUANTIZE, 0.0, 0.05, -7, in_dtype=np.float32),
    "mean_hw_same_quant": lambda rng: _mean_model(True, 0.05),
    "mean_hw_requantising": lambda rng: _mean_model(False, 0.07),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_op_bit_exact(case: str) -> None:
    buf = CASES[case](np.random.default_rng(3))
    worst = _compare(buf)
    assert worst == {"litert": 0, "tflm": 0}, f"{case}: max LSB difference {worst}"


def test_litert_fully_connected_rounds_once() -> None:
    """The measured reason for ``use_target``: on a real FC stack (ad01_int8 from the shared
    models, when present) the TFLM target matches TFLM, the LiteRT target matches LiteRT."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf_tiny" / "ad01_int8.tflite"
    if not path.is_file():
        pytest.skip("shared models not found")
    worst = _compare(path.read_bytes(), seeds=3)
    assert worst == {"litert": 0, "tflm": 0}
    g = import_tflite(path)
    x = np.random.default_rng(0).integers(-128, 128, (1, 640)).astype(np.int8)
    with I.use_target("tflm"):
        a = run(g, {g.inputs[0]: x})[g.outputs[0]]
    with I.use_target("litert"):
        b = run(g, {g.inputs[0]: x})[g.outputs[0]]
    assert (a != b).any(), "the two targets should differ somewhere on ad01_int8"
