"""The float kernels of the reference interpreter: the table ``KERNELS: Op -> kernel`` and the
float definitions of the fused activations (``FUSED``), i.e. what every IR op *means*.

What it does: one kernel per op, ``kernel(node, io, *arrays) -> array``; ``io`` (``NodeIO``)
holds the node's input and output ``Tensor`` metadata (only QUANTIZE/DEQUANTIZE read it).
Float ops compute in the tensor's own dtype (float32 stays float32) with ONNX's semantics;
integer ADD/SUB/MUL wrap, integer DIV truncates toward zero (as ONNX/C do). QUANTIZE is
``saturate(round_half_even(x / scale) + zero_point)`` and DEQUANTIZE ``(q - zero_point) *
scale``, per tensor or per channel, exactly as ONNX specifies. Convolutions and pools are
vectorised (``sliding_window_view`` + one batched matmul per conv, a loop over kernel taps
only for CONV_TRANSPOSE).

Why a module of its own: ``compilers.int8`` (TFLM's integer kernels) builds on these
(window helpers, the float fallback) and ``compilers.reference`` (the interpreter) dispatches
to both, so the imports run kernels <- int8 <- reference, without a circle.

What it does not do: run graphs (``compilers.reference.run``), integer arithmetic
(``compilers.int8``), performance tuning or in-place buffer reuse.
"""


from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from .ir import Node, Op, Tensor
from .shapes import window_out


@dataclass(frozen=True)
class NodeIO:
    """The metadata of one node's inputs and outputs, for kernels that need it."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


Kernel = Callable[..., np.ndarray]
KERNELS: dict[Op, Kernel] = {}


def kernel(*ops: Op) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for op in ops:
            KERNELS[op] = fn
        return fn
    return register


def _scalar(x: NDArray[np.generic], v: float) -> np.generic:
    """``v`` as a scalar of ``x``'s dtype, so float32 arithmetic stays float32."""
    return x.dtype.type(v)


# ---- elementwise ----------------------------------------------------------------------------
_BINARY = {Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply}


@kernel(Op.ADD, Op.SUB, Op.MUL)
def _binary(node: Node, io: NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    y: np.ndarray = _BINARY[node.op](a, b)
    return y


@kernel(Op.DIV)
def _div(node: Node, io: NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        y: np.ndarray = np.divide(a, b)
        return y
    with np.errstate(divide="ignore"):
        q: np.ndarray = np.floor_divide(a, b)
        if a.dtype.kind == "i":  # truncate toward zero, like C
            q = q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(a.dtype)
    return q


@kernel(Op.RELU)
def _relu(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    y: np.ndarray = np.maximum(x, _scalar(x, 0))
    return y


def _bound(x: np.ndarray, v: float) -> np.generic:
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        return _scalar(x, min(max(v, info.min), info.max))
    return _scalar(x, v)


@kernel(Op.CLIP)
def _clip(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    lo, hi = node.attr_number("min"), node.attr_number("max")
    y: np.ndarray = np.minimum(np.maximum(x, _bound(x, lo)), _bound(x, hi))
    return y


@kernel(Op.LEAKY_RELU)
def _leaky_relu(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * _scalar(x, node.attr_float("alpha")), x)


@kernel(Op.PRELU)
def _prelu(node: Node, io: NodeIO, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * slope, x).astype(x.dtype)


@kernel(Op.SIGMOID)
def _sigmoid(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        y: np.ndarray = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)
        return y


@kernel(Op.HARD_SIGMOID)
def _hard_sigmoid(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    a, b = _scalar(x, node.attr_float("alpha")), _scalar(x, node.attr_float("beta"))
    y: np.ndarray = np.clip(a * x + b, _scalar(x, 0), _scalar(x, 1))
    return y


@kernel(Op.HARD_SWISH)
def _hard_swish(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    y: np.ndarray = x * np.clip(x * _scalar(x, 1 / 6) + _scalar(x, 0.5), _scalar(x, 0), _scalar(x, 1))
    return y


@kernel(Op.TANH)
def _tanh(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    y: np.ndarray = np.tanh(x)
    return y


@kernel(Op.SOFTMAX)
def _softmax(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    axis = node.attr_int("axis")
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    y: np.ndarray = e / np.sum(e, axis=axis, keepdims=True)
    return y


@kernel(Op.IDENTITY)
def _identity(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    return x


@kernel(Op.CAST)
def _cast(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(node.attr_dtype("to").numpy)


# ---- linear algebra ---------------------------------------------------------------------------
@kernel(Op.MATMUL)
def _matmul(node: Node, io: NodeIO, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    y: np.ndarray = np.matmul(a, b)
    return y


@kernel(Op.GEMM)
def _gemm(node: Node, io: NodeIO, a: np.ndarray, b: np.ndarray,
          c: np.ndarray | None = None) -> np.ndarray:
    a = a.T if node.attr_bool("trans_a") else a
    b = b.T if node.attr_bool("trans_b") else b
    y: np.ndarray = a @ b
    alpha, beta = node.attr_float("alpha"), node.attr_float("beta")
    if alpha != 1.0:
        y = y * _scalar(y, alpha)
    if c is not None:
        y = y + (c if beta == 1.0 else c * _scalar(c, beta))
    return y


@kernel(Op.BATCH_NORM)
def _batch_norm(node: Node, io: NodeIO, x: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = _scalar(var, node.attr_float("epsilon"))
    inv = scale / np.sqrt(var + eps)
    y: np.ndarray = (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)
    return y


# ---- windows: conv, conv transpose, pools -----------------------------------------------------
def _plan(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
          dilations: tuple[int, ...], pads: tuple[tuple[int, int], ...], ceil_mode: bool
          ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Output sizes, window spans, and the (begin, end) padding per spatial axis: the
    explicit pads plus whatever a ceil_mode window hangs past the end."""
    out = [window_out(n, k, s, d, b, e, ceil_mode)
           for n, k, s, d, (b, e) in zip(spatial, kernel, strides, dilations, pads, strict=True)]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    widths = [(b, e + max(0, (o - 1) * s + sp - (n + b + e)))
              for n, o, s, sp, (b, e) in zip(spatial, out, strides, spans, pads, strict=True)]
    return out, spans, widths


def _slide(xp: np.ndarray, out: list[int], spans: list[int], strides: tuple[int, ...],
           dilations: tuple[int, ...]) -> np.ndarray:
    """A view (N, C, *out, *kernel) of every window of the padded ``xp`` (N, C, *spatial)."""
    win = sliding_window_view(xp, spans, axis=tuple(range(2, xp.ndim)))
    index = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in
                                               zip(out, strides, strict=True))
    return win[index + tuple(slice(None, None, d) for d in dilations)]


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...],
             dilations: tuple[int, ...], pads: tuple[tuple[int, int], ...], ceil_mode: bool,
             fill: float) -> np.ndarray:
    """A view (N, C, *out, *kernel) of every window of ``x`` (N, C, *spatial) padded with
    ``fill``."""
    out, spans, widths = _plan(x.shape[2:], kernel, strides, dilations, pads, ceil_mode)
    full = [(0, 0), (0, 0)] + widths
    xp = np.pad(x, full, constant_values=fill) if any(map(any, full)) else x
    return _slide(xp, out, spans, strides, dilations)


def _window_attrs(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    return node.attr_ints("strides"), node.attr_ints("dilations"), node.attr_pairs("pads")


@kernel(Op.CONV)
def _conv(node: Node, io: NodeIO, x: np.ndarray, w: np.ndarray,
          b: np.ndarray | None = None) -> np.ndarray:
    strides, dilations, pads = _window_attrs(node)
    g = node.attr_int("group")
    n, c = x.shape[:2]
    o, k = w.shape[0], w.shape[2:]
    win = _windows(x, k, strides, dilations, pads, False, 0)
    out = win.shape[2:2 + len(k)]
    kk, pp = int(np.prod(k)), int(np.prod(out))
    nsp = len(k)
    # (N, G, Cg, *out, *k) -> (G, Cg, *k, N, *out) -> (G, Cg*K, N*P): the im2col matrix
    cols = win.reshape((n, g, c // g) + out + k)
    order = (1, 2) + tuple(range(3 + nsp, 3 + 2 * nsp)) + (0,) + tuple(range(3, 3 + nsp))
    cols = np.ascontiguousarray(cols.transpose(order)).reshape(g, (c // g) * kk, n * pp)
    y = np.matmul(w.reshape(g, o // g, (c // g) * kk), cols)  # (G, O/G, N*P)
    y = y.reshape(o, n, *out).swapaxes(0, 1)
    if b is not None:
        y = y + b.reshape((1, o) + (1,) * nsp)
    return np.ascontiguousarray(y)


@kernel(Op.CONV_TRANSPOSE)
def _conv_transpose(node: Node, io: NodeIO, x: np.ndarray, w: np.ndarray,
                    b: np.ndarray | None = None) -> np.ndarray:
    strides, dilations, pads = _window_attrs(node)
    out_pad = node.attr_ints("output_padding")
    g = node.attr_int("group")
    n, c, *spatial = x.shape
    og, k = w.shape[1], w.shape[2:]
    full = [(i - 1) * s + (kk - 1) * d + 1 + p
            for i, s, kk, d, p in zip(spatial, strides, k, dilations, out_pad, strict=True)]
    y = np.zeros((n, g, og, *full), dtype=x.dtype)
    xg = x.reshape(n, g, c // g, -1)                       # (N, G, Cg, P)
    wg = w.reshape(g, c // g, og, -1)                      # (G, Cg, Og, K)
    for t, tap in enumerate(itertools.product(*(range(kk) for kk in k))):
        contrib = np.einsum("ngcp,gco->ngop", xg, wg[..., t]).reshape(n, g, og, *spatial)
        index = tuple(slice(j * d, j * d + (i - 1) * s + 1, s)
                      for j, d, i, s in zip(tap, dilations, spatial, strides, strict=True))
        y[(slice(None),) * 3 + index] += contrib
    y = y.reshape(n, g * og, *full)
    grow = [(0, 0), (0, 0)] + [(max(0, -pb), max(0, -pe)) for pb, pe in pads]
    y = np.pad(y, grow) if any(map(any, grow)) else y
    crop = tuple(slice(max(0, pb), y.shape[2 + i] - max(0, pe)) for i, (pb, pe) in enumerate(pads))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * len(k))
    return np.ascontiguousarray(y)


def _pool_windows(node: Node, x: np.ndarray, fill: float) -> np.ndarray:
    strides, dilations, pads = _window_attrs(node)
    return _windows(x, node.attr_ints("kernel"), strides, dilations, pads,
                    node.attr_bool("ceil_mode"), fill)


@kernel(Op.MAX_POOL)
def _max_pool(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _pool_windows(node, x, fill)
    y: np.ndarray = win.max(axis=tuple(range(x.ndim, win.ndim)))
    return y


@kernel(Op.AVG_POOL)
def _avg_pool(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    strides, dilations, pads = _window_attrs(node)
    kernel_ = node.attr_ints("kernel")
    axes = tuple(range(x.ndim, 2 * x.ndim - 2))
    total = _pool_windows(node, x, 0).sum(axis=axes)
    # The divisor counts the window cells inside the input, plus the explicit pads if
    # count_include_pad, never the cells a ceil_mode window hangs past the end.
    out, spans, widths = _plan(x.shape[2:], kernel_, strides, dilations, pads,
                               node.attr_bool("ceil_mode"))
    mask = np.pad(np.ones(x.shape[2:], dtype=x.dtype), pads,
                  constant_values=1 if node.attr_bool("count_include_pad") else 0)
    extra = [(0, w[1] - p[1]) for w, p in zip(widths, pads, strict=True)]
    mask = np.pad(mask, extra)[None, None]
    count = _slide(mask, out, spans, strides, dilations).sum(axis=axes)
    y: np.ndarray = (total / count).astype(x.dtype)
    return y


# ---- shape and data movement ------------------------------------------------------------------
@kernel(Op.REDUCE_MEAN)
def _reduce_mean(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    axes = node.attr_ints("axes")
    keep = node.attr_bool("keepdims")
    if x.dtype.kind == "f":
        y: np.ndarray = np.mean(x, axis=axes, keepdims=keep)
        return y
    count = int(np.prod([x.shape[a] for a in axes]))
    return (np.sum(x, axis=axes, keepdims=keep, dtype=np.int64) // count).astype(x.dtype)


@kernel(Op.RESHAPE)
def _reshape(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    return x.reshape(node.attr_ints("shape"))


@kernel(Op.TRANSPOSE)
def _transpose(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, node.attr_ints("perm")))


@kernel(Op.CONCAT)
def _concat(node: Node, io: NodeIO, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=node.attr_int("axis"))


# ONNX's Pad modes besides constant; numpy's meanings are ONNX's.
_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@kernel(Op.PAD)
def _pad(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    pads = node.attr_pairs("pads")
    crop = tuple(slice(max(0, -b), n - max(0, -e)) for n, (b, e) in zip(x.shape, pads, strict=True))
    x = x[crop]  # negative pads remove
    widths = [(max(0, b), max(0, e)) for b, e in pads]
    mode = node.attr_str("mode")
    if mode == "constant":
        return np.pad(x, widths, mode="constant",
                      constant_values=_bound(x, node.attr_number("value")))
    if mode not in _PAD_MODES:
        raise ValueError(f"mode {mode!r} is not supported")  # what np.pad says; shapes refuses it first
    y: np.ndarray = np.pad(x, widths, mode=_PAD_MODES[mode])
    return y


@kernel(Op.ARGMAX)
def _argmax(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    """ONNX ArgMax: the first index of the maximum (the last with ``select_last_index``)."""
    axis = node.attr_int("axis")
    if node.attr_bool("select_last_index"):
        n = x.shape[axis]
        y = n - 1 - np.argmax(np.flip(x, axis=axis), axis=axis)
    else:
        y = np.argmax(x, axis=axis)
    if node.attr_bool("keepdims"):
        y = np.expand_dims(y, axis)
    return np.asarray(y).astype(node.attr_dtype("to").numpy)


# ---- quantisation -----------------------------------------------------------------------------
@kernel(Op.QUANTIZE)
def _quantize(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    y = io.outputs[0]
    assert y.quant is not None
    scale, zp = y.quant.arrays(x.ndim)
    q = np.rint(x.astype(np.float32) / scale).astype(np.float64) + zp
    info = np.iinfo(y.dtype.numpy)
    out: np.ndarray = np.clip(q, info.min, info.max).astype(y.dtype.numpy)
    return out


@kernel(Op.DEQUANTIZE)
def _dequantize(node: Node, io: NodeIO, x: np.ndarray) -> np.ndarray:
    t = io.inputs[0]
    assert t.quant is not None
    scale, zp = t.quant.arrays(x.ndim)
    dtype = io.outputs[0].dtype.numpy
    y: np.ndarray = ((x.astype(np.int64) - zp).astype(np.float32) * scale).astype(dtype)
    return y


assert set(KERNELS) == set(Op), f"ops without a kernel: {set(Op) - set(KERNELS)}"


# Fused activations in float (the definitions; integer kernels clamp their output range).
FUSED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda y: np.maximum(y, 0),
    "relu6": lambda y: np.clip(y, 0, 6),
    "relu_n1_to_1": lambda y: np.clip(y, -1, 1),
    "tanh": np.tanh,
}
