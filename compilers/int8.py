"""Integer kernels: int8/uint8 nodes executed with TFLite's / TFLM's reference integer
arithmetic, so that the reference interpreter's output can be compared bit-exactly with a
TFLM (or LiteRT reference-kernel) run of the same model.

**Dispatch rule** (``select``, called by ``compilers.reference.run`` for every node): a node
runs an integer kernel of this module when it is *quantised*: its output is an 8-bit
integer tensor (int8/uint8) that carries a ``Quant`` (DEQUANTIZE and CAST excepted). Then

* if ``INT_KERNELS`` has a kernel for the op (CONV incl. depthwise via ``group``, GEMM,
  MATMUL, ADD, SUB, MUL, AVG_POOL, MAX_POOL, REDUCE_MEAN, SOFTMAX, SIGMOID, TANH, RELU,
  CLIP, LEAKY_RELU, HARD_SWISH, PRELU (``compilers.int8_act``), RESHAPE, TRANSPOSE, CONCAT,
  PAD, IDENTITY, QUANTIZE), that kernel runs.
  It computes exactly what TFLite's reference kernel computes for the same tensors
  (int32 accumulation, ``QuantizeMultiplier`` + ``MultiplyByQuantizedMultiplier`` with
  double rounding, zero points, the fused activation as a clamp of the output range);
* otherwise (DIV, CONV_TRANSPOSE, ... on int8) the node runs **by float fallback**:
  inputs dequantised, the float kernel, output quantised with round-half-away. This is
  *not* TFLM's arithmetic; it can differ by about 1 LSB and is reported as such.

Nodes whose tensors are float, or integer without ``Quant`` (shape arithmetic, indices),
keep the float/plain kernels of ``compilers.reference``. DEQUANTIZE and CAST are never
dispatched here: ``reference``'s DEQUANTIZE ``(q - zp) * scale`` in float32 is bit-exact
with TFLite's (the product of a float32 scale and an int of <= 17 bits is exact in double
and rounds once to float32 either way); CAST converts values, ignoring quantisation, as
TFLite's CAST does.

**QUANTIZE rounding.** TFLite's QUANTIZE is ``clamp(round_half_away(x / scale) + zp)``
(``TfLiteRound`` = ``std::round``, with ``x / scale`` in float32); ONNX QuantizeLinear
rounds half to even. The IR's QUANTIZE carries it as ``rounding`` (``half_away`` from the
TFLite frontend, ``half_even`` by default); ``half_even`` keeps ``reference``'s float kernel.
QUANTIZE from an integer tensor with ``Quant`` (TFLite's int8 -> int8 requantise) uses
TFLite's ``Requantize``.

**Where this is bit-exact and where not** (checked against ai-edge-litert's reference
kernels and the tflite-micro runtime by ``tests/test_compiler_int8.py``): CONV (per-tensor
and per-channel, grouped/depthwise), GEMM/FULLY_CONNECTED, ADD, SUB, MUL, AVG_POOL,
MAX_POOL, SOFTMAX (TFLM's gemmlowp fixed-point exp and reciprocal, reproduced step by step,
not approximated), SIGMOID and TANH (gemmlowp ``logistic``/``tanh`` on Q4.27, evaluated for
all 256 inputs into a table), RELU/RELU6/RELU_N1_TO_1 (TFLite's ``ReluX``), LEAKY_RELU,
requantising RESHAPE/TRANSPOSE/CONCAT/PAD/IDENTITY (TFLite's ``Requantize``) and QUANTIZE.
REDUCE_MEAN folds ``1/count`` into the output multiplier as TFLM does (matches both TFLM
and LiteRT on the tests' cases).

**Two targets: TFLM and LiteRT.** TFLM's reference kernels round twice in
``MultiplyByQuantizedMultiplier`` (SaturatingRoundingDoublingHighMul, then
RoundingDivideByPOT): that is the default here (``target() == "tflm"``), bit-exact with the
tflite-micro runtime on every kernel above. ai-edge-litert 2.3's reference kernels agree,
except FULLY_CONNECTED, which its wheel computes with single rounding
(TFLITE_SINGLE_ROUNDING): measured on ad01_int8, double rounding matches TFLM exactly and
differs from LiteRT by 1 LSB on ~20% of the outputs; single rounding for FC matches LiteRT
exactly. ``with use_target("litert"):`` reproduces LiteRT (single rounding in GEMM/MATMUL
only); ``use_rounding("single")`` forces single rounding everywhere (for tests).

What it does not do: no int16 activations (16x8) kernels (they take the float fallback),
no CMSIS-NN variants, no per-op performance work beyond using float64 BLAS matmuls
for exact integer dot products (exact while sums stay below 2**53).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable

import numpy as np

from .errors import ExecutionError, GraphError
from .ir import DType, FUSABLE, Node, Op, Quant, Tensor
from . import kernels as _ref
from .int8_act import KERNELS as _ACTIVATIONS
from .fixedpoint import (  # noqa: F401  (re-exported: tests and the lowering use them)
    TARGETS,
    _rdbp,
    _s32,
    _wrap32,
    calculate_input_radius,
    exp_on_negative_values,
    gemmlowp_logistic,
    gemmlowp_tanh,
    get_reciprocal,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_greater_than_one,
    one_minus_x_over_one_plus_x_for_x_in_0_1,
    one_over_one_plus_x_for_x_in_0_1,
    quantize_multiplier,
    rounding_divide_by_pot,
    rounding_mode,
    saturating_rounding_doubling_high_mul,
    target,
    tflite_round,
    use_rounding,
    use_target,
)

QUANTISED_DTYPES = (DType.INT8, DType.UINT8)

Kernel = Callable[..., np.ndarray]
INT_KERNELS: dict[Op, Kernel] = {}


def int_kernel(*ops: Op) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for op in ops:
            INT_KERNELS[op] = fn
        return fn
    return register


# ---- quantisation parameters -------------------------------------------------------------------
def _is_quantised(t: Tensor) -> bool:
    return t.dtype in QUANTISED_DTYPES and t.quant is not None


def per_tensor(t: Tensor, what: str) -> tuple[float, int]:
    q = t.quant
    if q is None:
        raise ExecutionError(f"tensor {t.name!r} ({what}) has no quantisation")
    if q.axis is not None:
        if len(set(q.scale)) == 1 and len(set(q.zero_point)) == 1:
            return float(np.float32(q.scale[0])), int(q.zero_point[0])
        raise ExecutionError(f"tensor {t.name!r} ({what}) must be quantised per tensor")
    return float(np.float32(q.scale[0])), int(q.zero_point[0])


def _range(t: Tensor) -> tuple[int, int]:
    info = np.iinfo(t.dtype.numpy)
    return int(info.min), int(info.max)


def activation_range(node: Node, out: Tensor) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for the node's fused activation."""
    lo, hi = _range(out)
    fused = node.attr_str("fused") if node.op.name in FUSABLE else "none"
    if fused == "none":
        return lo, hi
    scale, zp = per_tensor(out, "output")

    def q(f: float) -> int:
        return zp + int(tflite_round(np.float32(f) / np.float32(scale)))
    if fused == "relu":
        return max(lo, q(0.0)), hi
    if fused == "relu6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if fused == "relu_n1_to_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ExecutionError(f"{node.label()}: fused activation {fused!r} has no integer form")


def _finish(acc: np.ndarray, lo: int, hi: int, out: Tensor) -> np.ndarray:
    y: np.ndarray = np.clip(acc, lo, hi).astype(out.dtype.numpy)
    return y


def requantize(x: np.ndarray, src: Tensor, dst: Tensor) -> np.ndarray:
    """TFLite's ``Requantize`` (int -> int with other scale/zero point); a copy when both
    quantisations agree."""
    s_in, z_in = per_tensor(src, "input")
    s_out, z_out = per_tensor(dst, "output")
    lo, hi = _range(dst)
    if s_in == s_out and z_in == z_out and src.dtype is dst.dtype:
        return np.array(x, copy=True)
    mult, shift = quantize_multiplier(float(s_in) / float(s_out))
    acc = multiply_by_quantized_multiplier(x.astype(np.int64) - z_in, mult, shift) + z_out
    return _finish(acc, lo, hi, dst)


# ---- dot-product kernels -------------------------------------------------------------------
def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matmul through float64 BLAS: exact while |sums| < 2**53 (int8 x int8 sums
    stay below 2**16 * K); checked."""
    k = a.shape[-1]
    amax = float(np.abs(a).max(initial=0)) if a.size else 0.0
    bmax = float(np.abs(b).max(initial=0)) if b.size else 0.0
    y: np.ndarray
    if amax * bmax * k >= 2.0 ** 53:
        y = np.matmul(a.astype(np.int64), b.astype(np.int64))
    else:
        y = np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)
    return y


def channel_multipliers(x: Tensor, w: Tensor, y: Tensor, channels: int, axis: int,
                         per_tensor_float_product: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (multiplier, shift). TFLite's conv path computes
    ``double(in_scale) * double(w_scale) / double(out_scale)``; its per-tensor fully
    connected path (``GetQuantizedConvolutionMultipler``) multiplies the two scales in
    float32 first."""
    s_in, _ = per_tensor(x, "input")
    s_out, _ = per_tensor(y, "output")
    assert w.quant is not None
    scales = list(w.quant.scale)
    if w.quant.axis is None or len(scales) == 1:
        scales = scales * channels
    elif w.quant.axis != axis:
        raise ExecutionError(f"weight {w.name!r}: per-channel axis {w.quant.axis}, the op "
                             f"needs the output-channel axis {axis}")
    mults, shifts = [], []
    for s in scales:
        s32 = np.float32(s)
        if per_tensor_float_product and len(set(w.quant.scale)) == 1:
            real = float(np.float32(np.float32(s_in) * s32)) / float(s_out)
        else:
            real = float(s_in) * float(s32) / float(s_out)
        m, sh = quantize_multiplier(real)
        mults.append(m)
        shifts.append(sh)
    return np.asarray(mults, np.int64), np.asarray(shifts, np.int64)


def weight_zero_point(w: Tensor, channels: int) -> np.ndarray:
    assert w.quant is not None
    z = np.asarray(w.quant.zero_point, np.int64)
    return np.broadcast_to(z, (channels,)) if z.size == 1 else z


@int_kernel(Op.CONV)
def _conv(node: Node, io: _ref.NodeIO, x: np.ndarray, w: np.ndarray,
          b: np.ndarray | None = None) -> np.ndarray:
    xt, wt, yt = io.inputs[0], io.inputs[1], io.outputs[0]
    if not _is_quantised(wt):
        raise ExecutionError(f"{node.label()}: int8 input with a weight that is not quantised")
    strides, dilations, pads = _ref._window_attrs(node)
    g = node.attr_int("group")
    _, z_in = per_tensor(xt, "input")
    _, z_out = per_tensor(yt, "output")
    o = w.shape[0]
    xs = x.astype(np.int64) - z_in                   # padding with 0 == padding with zp
    ws = w.astype(np.int64) - weight_zero_point(wt, o).reshape((o,) + (1,) * (w.ndim - 1))
    n, c = x.shape[:2]
    k = w.shape[2:]
    nsp = len(k)
    win = _ref._windows(xs, k, strides, dilations, pads, False, 0)
    out = win.shape[2:2 + nsp]
    kk, pp = int(np.prod(k)), int(np.prod(out))
    cols = win.reshape((n, g, c // g) + out + k)
    order = (1, 2) + tuple(range(3 + nsp, 3 + 2 * nsp)) + (0,) + tuple(range(3, 3 + nsp))
    cols = np.ascontiguousarray(cols.transpose(order)).reshape(g, (c // g) * kk, n * pp)
    acc = _exact_matmul(ws.reshape(g, o // g, (c // g) * kk), cols)   # (G, O/G, N*P)
    acc = acc.reshape(o, n, *out).swapaxes(0, 1)                      # (N, O, *out)
    bshape = (1, o) + (1,) * nsp
    if b is not None:
        acc = acc + b.astype(np.int64).reshape(bshape)
    mult, shift = channel_multipliers(xt, wt, yt, o, 0, False)
    acc = multiply_by_quantized_multiplier(acc, mult.reshape(bshape), shift.reshape(bshape))
    lo, hi = activation_range(node, yt)
    return np.ascontiguousarray(_finish(acc + z_out, lo, hi, yt))


def _fully_connected(node: Node, io: _ref.NodeIO, a: np.ndarray, wmat: np.ndarray,
                     wt: Tensor, w_axis: int, c: np.ndarray | None) -> np.ndarray:
    """a (M, K) int8, wmat (K, N) int8 whose output channel is ``w_axis`` of ``wt``."""
    xt, yt = io.inputs[0], io.outputs[0]
    _, z_in = per_tensor(xt, "input")
    _, z_out = per_tensor(yt, "output")
    n = wmat.shape[1]
    acc = _exact_matmul(a.astype(np.int64) - z_in,
                        wmat.astype(np.int64) - weight_zero_point(wt, n)[None, :])
    if c is not None:
        acc = acc + np.broadcast_to(c.astype(np.int64), acc.shape)
    mult, shift = channel_multipliers(xt, wt, yt, n, w_axis, True)
    acc = multiply_by_quantized_multiplier(acc, mult[None, :], shift[None, :])
    lo, hi = activation_range(node, yt)
    return _finish(acc + z_out, lo, hi, yt)


def _fc_rounding() -> contextlib.AbstractContextManager[None]:
    return use_rounding("single") if target() == "litert" else contextlib.nullcontext()


@int_kernel(Op.GEMM)
def _gemm(node: Node, io: _ref.NodeIO, a: np.ndarray, b: np.ndarray,
          c: np.ndarray | None = None) -> np.ndarray:
    if node.attr_float("alpha") != 1.0 or (c is not None and node.attr_float("beta") != 1.0):
        raise ExecutionError(f"{node.label()}: integer GEMM needs alpha = beta = 1")
    if node.attr_bool("trans_a"):
        a = a.T
    wt = io.inputs[1]
    trans_b = node.attr_bool("trans_b")
    with _fc_rounding():
        return _fully_connected(node, io, a, b.T if trans_b else b, wt, 0 if trans_b else 1, c)


@int_kernel(Op.MATMUL)
def _matmul(node: Node, io: _ref.NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.ndim != 2 or b.ndim != 2:
        return _fallback(node, io, a, b)
    with _fc_rounding():
        return _fully_connected(node, io, a, b, io.inputs[1], 1, None)


# ---- element-wise arithmetic ---------------------------------------------------------------
ADD_LEFT_SHIFT = 20


def add_multipliers(s1: float, s2: float, s_out: float) -> tuple[tuple[int, int], ...]:
    """TFLite's int8 ADD/SUB: (multiplier, shift) for input 1, input 2 (each shifted left by
    ``ADD_LEFT_SHIFT`` first) and the output."""
    twice_max = 2 * float(max(np.float32(s1), np.float32(s2)))
    return (quantize_multiplier(float(s1) / twice_max), quantize_multiplier(float(s2) / twice_max),
            quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(s_out))))


@int_kernel(Op.ADD, Op.SUB)
def _add_sub(node: Node, io: _ref.NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb, yt = io.inputs[0], io.inputs[1], io.outputs[0]
    s1, z1 = per_tensor(ta, "input 1")
    s2, z2 = per_tensor(tb, "input 2")
    s_out, z_out = per_tensor(yt, "output")
    (m1, sh1), (m2, sh2), (mo, sho) = add_multipliers(s1, s2, s_out)
    v1 = multiply_by_quantized_multiplier((a.astype(np.int64) - z1) << ADD_LEFT_SHIFT, m1, sh1)
    v2 = multiply_by_quantized_multiplier((b.astype(np.int64) - z2) << ADD_LEFT_SHIFT, m2, sh2)
    raw = v1 + v2 if node.op is Op.ADD else v1 - v2
    acc = multiply_by_quantized_multiplier(raw, mo, sho) + z_out
    lo, hi = activation_range(node, yt)
    return _finish(acc, lo, hi, yt)


@int_kernel(Op.MUL)
def _mul(node: Node, io: _ref.NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb, yt = io.inputs[0], io.inputs[1], io.outputs[0]
    s1, z1 = per_tensor(ta, "input 1")
    s2, z2 = per_tensor(tb, "input 2")
    s_out, z_out = per_tensor(yt, "output")
    mult, shift = quantize_multiplier(float(s1) * float(s2) / float(s_out))
    prod = (a.astype(np.int64) - z1) * (b.astype(np.int64) - z2)
    acc = multiply_by_quantized_multiplier(prod, mult, shift) + z_out
    lo, hi = activation_range(node, yt)
    return _finish(acc, lo, hi, yt)


def _relu_x(node: Node, io: _ref.NodeIO, x: np.ndarray, fmin: float | None,
            fmax: float | None) -> np.ndarray:
    """TFLite's ``ReluX`` for int8: requantise, clamp to the quantised bounds."""
    xt, yt = io.inputs[0], io.outputs[0]
    s_in, z_in = per_tensor(xt, "input")
    s_out, z_out = per_tensor(yt, "output")
    lo, hi = _range(yt)
    if fmin is not None:
        lo = max(lo, z_out + int(tflite_round(np.float32(fmin) / np.float32(s_out))))
    if fmax is not None:
        hi = min(hi, z_out + int(tflite_round(np.float32(fmax) / np.float32(s_out))))
    mult, shift = quantize_multiplier(float(s_in) / float(s_out))
    acc = z_out + multiply_by_quantized_multiplier(x.astype(np.int64) - z_in, mult, shift)
    return _finish(acc, lo, hi, yt)


@int_kernel(Op.RELU)
def _relu(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    return _relu_x(node, io, x, 0.0, None)


@int_kernel(Op.CLIP)
def _clip(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    return _relu_x(node, io, x, float(node.attr_number("min")), float(node.attr_number("max")))


@int_kernel(Op.LEAKY_RELU)
def _leaky_relu(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    xt, yt = io.inputs[0], io.outputs[0]
    s_in, z_in = per_tensor(xt, "input")
    s_out, z_out = per_tensor(yt, "output")
    alpha = np.float32(node.attr_float("alpha"))
    m_a, sh_a = quantize_multiplier(float(np.float32(np.float32(s_in) * alpha) / np.float32(s_out)))
    m_i, sh_i = quantize_multiplier(float(s_in) / float(s_out))
    v = x.astype(np.int64) - z_in
    acc = z_out + np.where(v >= 0, multiply_by_quantized_multiplier(v, m_i, sh_i),
                           multiply_by_quantized_multiplier(v, m_a, sh_a))
    lo, hi = _range(yt)
    return _finish(acc, lo, hi, yt)


# ---- pools and reductions ------------------------------------------------------------------------
@int_kernel(Op.AVG_POOL)
def _avg_pool(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    """TFLite's integer AveragePool: the sum of the cells inside the input, divided by
    their count with rounding half away from zero; padding never counts."""
    xt, yt = io.inputs[0], io.outputs[0]
    if node.attr_bool("count_include_pad") and any(map(any, node.attr_pairs("pads"))):
        return _fallback(node, io, x)
    strides, dilations, pads = _ref._window_attrs(node)
    kernel_ = node.attr_ints("kernel")
    axes = tuple(range(x.ndim, 2 * x.ndim - 2))
    total = _ref._pool_windows(node, x.astype(np.int64), 0).sum(axis=axes)
    out, spans, widths = _ref._plan(x.shape[2:], kernel_, strides, dilations, pads,
                                    node.attr_bool("ceil_mode"))
    mask = np.pad(np.ones(x.shape[2:], np.int64), widths)[None, None]
    count = _ref._slide(mask, out, spans, strides, dilations).sum(axis=axes)
    count = np.maximum(count, 1)
    half = count // 2
    acc = np.where(total > 0, (total + half) // count, -((-total + half) // count))
    if not _same_quant(xt, yt):
        acc = requantize(np.clip(acc, *_range(xt)).astype(xt.dtype.numpy), xt, yt).astype(np.int64)
    lo, hi = activation_range(node, yt)
    return _finish(acc, lo, hi, yt)


@int_kernel(Op.MAX_POOL)
def _max_pool(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    xt, yt = io.inputs[0], io.outputs[0]
    y = _ref._max_pool(node, io, x)
    if not _same_quant(xt, yt):
        y = requantize(y, xt, yt)
    lo, hi = activation_range(node, yt)
    return _finish(y.astype(np.int64), lo, hi, yt)


def mean_multiplier(s_in: float, s_out: float, count: int) -> tuple[int, int]:
    """TFLM's int8 MEAN: the multiplier of ``s_in / s_out`` with ``1/count`` folded in."""
    mult, shift = quantize_multiplier(float(s_in) / float(s_out))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (mult << k) // count, shift - k


@int_kernel(Op.REDUCE_MEAN)
def _reduce_mean(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    """TFLM's integer MEAN: ``sum(q - z_in)`` times the multiplier of ``s_in / s_out`` with
    ``1/count`` folded in (``mult' = (mult << k) // count``, ``shift' = shift - k`` with
    ``k = min(floor(log2(count)), 32, 31 + shift)``), plus ``z_out``."""
    xt, yt = io.inputs[0], io.outputs[0]
    axes = node.attr_ints("axes")
    keep = node.attr_bool("keepdims")
    s_in, z_in = per_tensor(xt, "input")
    s_out, z_out = per_tensor(yt, "output")
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    total = np.sum(x.astype(np.int64) - z_in, axis=axes, keepdims=keep)
    mult, shift = mean_multiplier(s_in, s_out, count)
    acc = multiply_by_quantized_multiplier(_wrap32(total), mult, shift) + z_out
    lo, hi = _range(yt)
    return _finish(acc, lo, hi, yt)


# ---- softmax and the table-driven activations ---------------------------------------------------
_SCALED_DIFF_INTEGER_BITS = 5
_ACCUMULATION_INTEGER_BITS = 12


def softmax_exp_table(s_in: float, beta: float = 1.0) -> tuple[np.ndarray, int]:
    """int8 softmax: ``exp`` (Q0.31) of every difference ``-d`` (d = 0..255) from the row
    maximum, and ``diff_min`` (differences below it contribute 0)."""
    cap = (1 << 30) - 1.0 if rounding_mode() == "single" else (1 << 31) - 1.0
    real = min(beta * float(s_in) * (1 << (31 - _SCALED_DIFF_INTEGER_BITS)), cap)
    mult, left_shift = quantize_multiplier(real)
    diff_min = -calculate_input_radius(_SCALED_DIFF_INTEGER_BITS, left_shift)
    table = np.zeros(256, np.int64)
    for d in range(256):
        if -d >= diff_min:
            rescaled = int(multiply_by_quantized_multiplier_greater_than_one(-d, mult, left_shift))
            table[d] = exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS)
    return table, diff_min


@int_kernel(Op.SOFTMAX)
def _softmax(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    """TFLite/TFLM's reference int8 softmax (``reference_ops::Softmax``): gemmlowp
    ``exp_on_negative_values`` on Q5.26 differences, a Q12.19 sum, ``GetReciprocal``, and a
    rounding shift to the output's 1/256 units. The exponentials of the (at most 256)
    distinct differences are tabulated; the rest is vectorised over rows."""
    xt, yt = io.inputs[0], io.outputs[0]
    s_in, _ = per_tensor(xt, "input")
    s_out, z_out = per_tensor(yt, "output")
    if yt.dtype is not DType.INT8 or xt.dtype is not DType.INT8 or \
            abs(s_out - 1 / 256) > 1e-9 or z_out != -128:
        return _fallback(node, io, x)
    table, diff_min = softmax_exp_table(s_in)
    axis = node.attr_int("axis")
    xm = np.moveaxis(x.astype(np.int64), axis, -1)
    rows = xm.reshape(-1, xm.shape[-1])
    diffs = rows - rows.max(axis=1, keepdims=True)            # in [-255, 0]
    valid = diffs >= diff_min
    exps = np.where(valid, table[np.minimum(-diffs, 255)], 0)
    acc_shift = _ACCUMULATION_INTEGER_BITS  # Rescale<12> from Q0: a rounding right shift
    sums = np.array([_s32(int(s)) for s in
                     rounding_divide_by_pot(exps, acc_shift).sum(axis=1)], np.int64)
    out = np.empty_like(rows)
    for i, s in enumerate(sums):
        recip, bits_over = get_reciprocal(int(s), _ACCUMULATION_INTEGER_BITS)
        exponent = bits_over + 31 - 8
        v = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(recip, exps[i]), exponent)
        out[i] = np.where(valid[i], np.clip(v - 128, -128, 127), -128)
    y = out.reshape(xm.shape)
    return np.ascontiguousarray(np.moveaxis(y, -1, axis)).astype(np.int8)


_INPUT_INTEGER_BITS = 4


def _lut_kernel(node: Node, io: _ref.NodeIO, x: np.ndarray, fn: Callable[[int, int], int],
                out_shift: int, out_zp: int, out_scale: float) -> np.ndarray:
    """TFLM's int8 Logistic/Tanh: input (q - zp) to Q4.27 by a multiplier from
    ``frexp(scale * 2**27)``, saturated outside ``input_range_radius``, gemmlowp's
    function, a rounding shift to the output units. Evaluated for all 256 inputs."""
    xt, yt = io.inputs[0], io.outputs[0]
    s_in, z_in = per_tensor(xt, "input")
    s_out, z_y = per_tensor(yt, "output")
    if xt.dtype is not DType.INT8 or yt.dtype is not DType.INT8 or z_y != out_zp or \
            abs(s_out - out_scale) > 1e-9:
        return _fallback(node, io, x)
    real = float(s_in) * float(1 << (31 - _INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    mult = int(tflite_round(q * (1 << 31)))
    radius = calculate_input_radius(_INPUT_INTEGER_BITS, left_shift)
    table = np.empty(256, np.int64)
    for raw in range(-128, 128):
        v = raw - z_in
        if v <= -radius:
            r = -128
        elif v >= radius:
            r = 127
        else:
            q4 = int(multiply_by_quantized_multiplier(v, mult, left_shift))
            r = _rdbp(fn(q4, _INPUT_INTEGER_BITS), 31 - out_shift) + out_zp
            r = min(max(r, -128), 127)
        table[raw + 128] = r
    return table[x.astype(np.int64) + 128].astype(np.int8)


@int_kernel(Op.SIGMOID)
def _sigmoid(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    return _lut_kernel(node, io, x, gemmlowp_logistic, 8, -128, 1 / 256)


@int_kernel(Op.TANH)
def _tanh(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    return _lut_kernel(node, io, x, gemmlowp_tanh, 7, 0, 1 / 128)


# ---- data movement: requantise only when the quantisation changes ---------------------------------
def _same_quant(a: Tensor, b: Tensor) -> bool:
    return a.dtype is b.dtype and a.quant == b.quant


@int_kernel(Op.RESHAPE, Op.TRANSPOSE, Op.IDENTITY)
def _move(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    y = _ref.KERNELS[node.op](node, io, x)
    xt, yt = io.inputs[0], io.outputs[0]
    if not _is_quantised(xt) or _same_quant(xt, yt):
        return y  # raw values move (an unquantised integer input has nothing to rescale)
    return requantize(y, xt, yt)


@int_kernel(Op.CONCAT)
def _concat(node: Node, io: _ref.NodeIO, *xs: np.ndarray) -> np.ndarray:
    yt = io.outputs[0]
    parts = [x if not _is_quantised(t) or _same_quant(t, yt) else requantize(x, t, yt)
             for x, t in zip(xs, io.inputs, strict=True)]
    y = np.concatenate(parts, axis=node.attr_int("axis"))
    lo, hi = activation_range(node, yt)
    return _finish(y.astype(np.int64), lo, hi, yt)


@int_kernel(Op.PAD)
def _pad(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    """The pad value attribute is a raw value of the input's integer domain (TFLite pads
    quantised tensors with the zero point)."""
    y = _ref.KERNELS[Op.PAD](node, io, x)
    xt, yt = io.inputs[0], io.outputs[0]
    return y if not _is_quantised(xt) or _same_quant(xt, yt) else requantize(y, xt, yt)


# ---- quantize -------------------------------------------------------------------------------------
def quantize_rounding(node: Node) -> str:
    """``"half_away"`` (TFLite) or ``"half_even"`` (ONNX) for a QUANTIZE node; see the
    module docstring."""
    return node.attr_str("rounding")


@int_kernel(Op.QUANTIZE)
def _quantize(node: Node, io: _ref.NodeIO, x: np.ndarray) -> np.ndarray:
    xt, yt = io.inputs[0], io.outputs[0]
    if xt.dtype.is_int and xt.quant is not None:
        return requantize(x, xt, yt)
    if quantize_rounding(node) != "half_away" or not xt.dtype.is_float:
        return _ref.KERNELS[Op.QUANTIZE](node, io, x)
    assert yt.quant is not None
    scale, zp = yt.quant.arrays(x.ndim)
    q = tflite_round(x.astype(np.float32) / scale).astype(np.float64) + zp
    lo, hi = _range(yt)
    y: np.ndarray = np.clip(q, lo, hi).astype(yt.dtype.numpy)
    return y


# ---- float fallback -----------------------------------------------------------------------------
def _dequant(x: np.ndarray, t: Tensor) -> np.ndarray:
    if not _is_quantised(t):
        return x
    assert t.quant is not None
    scale, zp = t.quant.arrays(x.ndim)
    y: np.ndarray = ((x.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)
    return y


def _fallback(node: Node, io: _ref.NodeIO, *xs: np.ndarray) -> np.ndarray:
    """Dequantise, run the float kernel (and the fused activation), quantise with
    round-half-away. Not TFLM's integer arithmetic: about 1 LSB off at worst."""
    fx = [_dequant(x, t) for x, t in zip(xs, io.inputs, strict=True)]
    ftensors = tuple(dataclasses.replace(t, dtype=DType.FLOAT32, quant=None, data=None)
                     if _is_quantised(t) else t for t in io.inputs)
    yt = io.outputs[0]
    fio = _ref.NodeIO(ftensors, (dataclasses.replace(yt, dtype=DType.FLOAT32, quant=None),))
    y = np.asarray(_ref.KERNELS[node.op](node, fio, *fx), np.float32)
    fused = node.attr_str("fused") if node.op.name in FUSABLE else "none"
    if fused != "none":
        y = _ref.FUSED[fused](y).astype(np.float32)
    if not _is_quantised(yt):
        return y.astype(yt.dtype.numpy)
    assert yt.quant is not None
    scale, zp = yt.quant.arrays(y.ndim)
    q = tflite_round(y / scale).astype(np.float64) + zp
    lo, hi = _range(yt)
    out: np.ndarray = np.clip(q, lo, hi).astype(yt.dtype.numpy)
    return out


# ---- dispatch -------------------------------------------------------------------------------------
INT_KERNELS.update(_ACTIVATIONS)  # HARD_SWISH, PRELU (compilers.int8_act)
_NEVER = frozenset({Op.DEQUANTIZE, Op.CAST})


def is_quantised_node(node: Node, io: _ref.NodeIO) -> bool:
    """The dispatch rule: the node's output is an int8/uint8 tensor with a Quant (and the
    op is not DEQUANTIZE or CAST, whose output is never quantised anyway)."""
    return node.op not in _NEVER and _is_quantised(io.outputs[0])


def select(node: Node, io: _ref.NodeIO) -> Kernel | None:
    """The kernel ``reference.run`` must use for ``node`` instead of the float one, or
    None to keep the float kernel."""
    if not is_quantised_node(node, io):
        return None
    chosen: Kernel = INT_KERNELS.get(node.op, _fallback)
    return chosen


__all__ = [
    "INT_KERNELS", "select", "is_quantised_node", "quantize_multiplier",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "requantize", "activation_range", "tflite_round",
    "exp_on_negative_values", "gemmlowp_logistic", "gemmlowp_tanh", "get_reciprocal",
    "one_over_one_plus_x_for_x_in_0_1", "calculate_input_radius", "GraphError", "Quant", "TARGETS",
    "one_minus_x_over_one_plus_x_for_x_in_0_1", "use_target", "per_tensor",
    "channel_multipliers", "weight_zero_point", "add_multipliers", "ADD_LEFT_SHIFT",
    "mean_multiplier", "softmax_exp_table",
]
