"""Static shape and dtype rules of every IR op: a table ``Op -> rule``.

What it does: given a node and its input tensors (and, for quantisation checks, its
output tensors), returns the ``(shape, dtype)`` each output must have, or raises
``GraphError`` naming the node when the inputs do not fit the op (broadcast failure,
channel mismatch, bad axis, dtype mix). ``Graph.validate`` uses it to check every node;
frontends and passes can use it to type the tensors they create. ``window_out`` is the one
formula for conv/pool output sizes, shared with the reference interpreter.

What it does not do: no dynamic shapes, no ONNX semantics (the frontend has resolved
auto_pad, Reshape's 0/-1 and friends before anything gets here), no layout conversion.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .errors import GraphError
from .ir_base import DType, Node, Op, Tensor

Shape = tuple[int, ...]
Out = tuple[Shape, DType]
Rule = Callable[[Node, Sequence[Tensor], Sequence[Tensor]], list[Out]]


def window_out(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
               pad_end: int, ceil_mode: bool = False) -> int:
    """Output length of a conv/pool window sliding over one axis (ONNX's formula,
    including the ceil-mode rule that drops a last window starting in the end padding)."""
    span = (kernel - 1) * dilation + 1
    room = size + pad_begin + pad_end - span
    if room < 0:
        return 0
    n = (math.ceil(room / stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (n - 1) * stride >= size + pad_begin:
        n -= 1
    return n


def _fail(node: Node, msg: str) -> GraphError:
    return GraphError(f"{node.label()}: {msg}")


def _same_dtype(node: Node, ins: Sequence[Tensor]) -> DType:
    dtypes = {t.dtype for t in ins}
    if len(dtypes) != 1:
        raise _fail(node, f"inputs mix dtypes {sorted(d.value for d in dtypes)}")
    return ins[0].dtype


def _with_bias(node: Node, ins: Sequence[Tensor]) -> DType:
    """CONV/GEMM dtype: data and weights share one dtype; the bias (third input) has it too,
    or is int32 when data and weights are quantised 8-bit integers (TFLite/TFLM convention)."""
    dtype = _same_dtype(node, ins[:2])
    if len(ins) == 3 and ins[2].dtype is not dtype:
        quantised = dtype in (DType.INT8, DType.UINT8) and all(t.quant is not None for t in ins[:2])
        if not (quantised and ins[2].dtype is DType.INT32):
            raise _fail(node, f"bias is {ins[2].dtype.value}; expected {dtype.value}"
                              + (" or int32" if quantised else ""))
    return dtype


def _broadcast(node: Node, *shapes: Shape) -> Shape:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise _fail(node, f"shapes {list(shapes)} do not broadcast") from None


def _unary(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    return [(ins[0].shape, ins[0].dtype)]


def _binary(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    return [(_broadcast(node, ins[0].shape, ins[1].shape), _same_dtype(node, ins))]


def _axis(node: Node, axis: int, rank: int) -> int:
    if not 0 <= axis < max(rank, 1):
        raise _fail(node, f"axis {axis} out of range for rank {rank}")
    return axis


def _softmax(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    _axis(node, node.attr_int("axis"), len(ins[0].shape))
    return _unary(node, ins, outs)


def _prelu(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x, slope = ins
    if _broadcast(node, x.shape, slope.shape) != x.shape:
        raise _fail(node, f"slope {slope.shape} does not broadcast to input {x.shape}")
    return [(x.shape, _same_dtype(node, ins))]


def _matmul(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    a, b = ins[0].shape, ins[1].shape
    if not a or not b:
        raise _fail(node, "MATMUL of a scalar")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise _fail(node, f"inner dimensions differ: {a} @ {b}")
    shape = _broadcast(node, a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return [(shape, _same_dtype(node, ins))]


def _gemm(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    a, b = ins[0].shape, ins[1].shape
    if len(a) != 2 or len(b) != 2:
        raise _fail(node, f"GEMM needs 2-D operands, got {a} and {b}")
    m, k = a[::-1] if node.attr_bool("trans_a") else a
    k2, n = b[::-1] if node.attr_bool("trans_b") else b
    if k != k2:
        raise _fail(node, f"inner dimensions differ: {k} vs {k2}")
    if len(ins) == 3 and _broadcast(node, (m, n), ins[2].shape) != (m, n):
        raise _fail(node, f"C {ins[2].shape} does not broadcast to {(m, n)}")
    return [((m, n), _with_bias(node, ins))]


def _window_attrs(node: Node, spatial: int) -> tuple[tuple[int, ...], tuple[int, ...],
                                                      tuple[tuple[int, int], ...]]:
    s, d, p = node.attr_ints("strides"), node.attr_ints("dilations"), node.attr_pairs("pads")
    if not len(s) == len(d) == len(p) == spatial:
        raise _fail(node, f"strides/dilations/pads do not have {spatial} spatial entries")
    if min(s + d, default=1) < 1:
        raise _fail(node, "strides and dilations must be >= 1")
    return s, d, p


def _conv(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x, w = ins[0].shape, ins[1].shape
    g = node.attr_int("group")
    if len(x) < 3 or len(w) != len(x):
        raise _fail(node, f"input {x} and weight {w} ranks do not fit")
    s, d, p = _window_attrs(node, len(x) - 2)
    if g < 1 or x[1] != w[1] * g or w[0] % g:
        raise _fail(node, f"{x[1]} input channels, weight {w}, group {g} do not fit")
    if len(ins) == 3 and ins[2].shape != (w[0],):
        raise _fail(node, f"bias shape {ins[2].shape}, expected {(w[0],)}")
    sp = tuple(window_out(x[2 + i], w[2 + i], s[i], d[i], *p[i]) for i in range(len(s)))
    return [((x[0], w[0]) + sp, _with_bias(node, ins))]


def _conv_transpose(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x, w = ins[0].shape, ins[1].shape
    g = node.attr_int("group")
    if len(x) < 3 or len(w) != len(x):
        raise _fail(node, f"input {x} and weight {w} ranks do not fit")
    s, d, p = _window_attrs(node, len(x) - 2)
    op = node.attr_ints("output_padding")
    if g < 1 or x[1] != w[0] or w[0] % g or len(op) != len(s):
        raise _fail(node, f"{x[1]} input channels, weight {w}, group {g} do not fit")
    if len(ins) == 3 and ins[2].shape != (w[1] * g,):
        raise _fail(node, f"bias shape {ins[2].shape}, expected {(w[1] * g,)}")
    sp = tuple((x[2 + i] - 1) * s[i] + (w[2 + i] - 1) * d[i] + 1 + op[i] - p[i][0] - p[i][1]
               for i in range(len(s)))
    return [((x[0], w[1] * g) + sp, _same_dtype(node, ins))]


def _pool(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x = ins[0].shape
    k = node.attr_ints("kernel")
    if len(x) < 3 or len(k) != len(x) - 2:
        raise _fail(node, f"kernel {k} does not fit input {x}")
    s, d, p = _window_attrs(node, len(k))
    ceil = node.attr_bool("ceil_mode")
    sp = tuple(window_out(x[2 + i], k[i], s[i], d[i], *p[i], ceil) for i in range(len(k)))
    return [(x[:2] + sp, ins[0].dtype)]


def _reduce_mean(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x = ins[0].shape
    axes = node.attr_ints("axes")
    for a in axes:
        _axis(node, a, len(x))
    if len(set(axes)) != len(axes):
        raise _fail(node, f"repeated axes {axes}")
    keep = node.attr_bool("keepdims")
    shape = tuple(1 if i in axes else n for i, n in enumerate(x) if keep or i not in axes)
    return [(shape, ins[0].dtype)]


def _batch_norm(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x = ins[0].shape
    if len(x) < 2:
        raise _fail(node, f"input {x} has no channel axis")
    for t in ins[1:]:
        if t.shape != (x[1],):
            raise _fail(node, f"parameter {t.name!r} has shape {t.shape}, expected {(x[1],)}")
    return [(x, _same_dtype(node, ins))]


def _reshape(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    shape = node.attr_ints("shape")
    if any(d < 0 for d in shape) or math.prod(shape) != ins[0].size:
        raise _fail(node, f"cannot reshape {ins[0].shape} to {shape}")
    return [(shape, ins[0].dtype)]


def _transpose(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    perm = node.attr_ints("perm")
    if sorted(perm) != list(range(len(ins[0].shape))):
        raise _fail(node, f"perm {perm} is not a permutation of rank {len(ins[0].shape)}")
    return [(tuple(ins[0].shape[i] for i in perm), ins[0].dtype)]


def _concat(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    axis = _axis(node, node.attr_int("axis"), len(ins[0].shape))
    first = ins[0].shape
    for t in ins[1:]:
        if len(t.shape) != len(first) or any(a != b for i, (a, b) in
                                             enumerate(zip(t.shape, first, strict=True)) if i != axis):
            raise _fail(node, f"input {t.name!r} {t.shape} does not fit {first} on axis {axis}")
    shape = first[:axis] + (sum(t.shape[axis] for t in ins),) + first[axis + 1:]
    return [(shape, _same_dtype(node, ins))]


PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x = ins[0].shape
    pads, mode = node.attr_pairs("pads"), node.attr_str("mode")
    if len(pads) != len(x) or mode not in PAD_MODES:
        raise _fail(node, f"pads {pads} / mode {mode!r} do not fit input {x}")
    shape = tuple(n + b + e for n, (b, e) in zip(x, pads, strict=True))
    if min(shape, default=0) < 0:
        raise _fail(node, f"negative pads {pads} remove more than input {x}")
    return [(shape, ins[0].dtype)]


def _cast(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    return [(ins[0].shape, node.attr_dtype("to"))]


def _quantize(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x, y = ins[0], outs[0]
    if not x.dtype.is_float and x.dtype is not DType.INT32:
        raise _fail(node, f"quantises a {x.dtype.value} tensor")
    if y.quant is None or not y.dtype.is_int:
        raise _fail(node, f"output {y.name!r} must be an integer tensor with quant")
    return [(x.shape, y.dtype)]


def _dequantize(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x, y = ins[0], outs[0]
    if x.quant is None or not x.dtype.is_int:
        raise _fail(node, f"input {x.name!r} must be an integer tensor with quant")
    if not y.dtype.is_float:
        raise _fail(node, f"output {y.name!r} must be float")
    return [(x.shape, y.dtype)]


def _argmax(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor]) -> list[Out]:
    x = ins[0].shape
    axis = _axis(node, node.attr_int("axis"), len(x))
    to = node.attr_dtype("to")
    if to not in (DType.INT32, DType.INT64):
        raise _fail(node, f"index output of type {to.value}; expected int32 or int64")
    keep = node.attr_bool("keepdims")
    shape = tuple(1 if i == axis else n for i, n in enumerate(x) if keep or i != axis)
    return [(shape, to)]


RULES: dict[Op, Rule] = {
    Op.CONV: _conv, Op.CONV_TRANSPOSE: _conv_transpose, Op.GEMM: _gemm, Op.MATMUL: _matmul,
    Op.ADD: _binary, Op.SUB: _binary, Op.MUL: _binary, Op.DIV: _binary,
    Op.RELU: _unary, Op.CLIP: _unary, Op.LEAKY_RELU: _unary, Op.PRELU: _prelu,
    Op.SIGMOID: _unary, Op.HARD_SIGMOID: _unary, Op.HARD_SWISH: _unary, Op.TANH: _unary,
    Op.SOFTMAX: _softmax, Op.MAX_POOL: _pool, Op.AVG_POOL: _pool,
    Op.REDUCE_MEAN: _reduce_mean, Op.BATCH_NORM: _batch_norm, Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose, Op.CONCAT: _concat, Op.PAD: _pad, Op.CAST: _cast,
    Op.IDENTITY: _unary, Op.QUANTIZE: _quantize, Op.DEQUANTIZE: _dequantize,
    Op.ARGMAX: _argmax,
}
assert set(RULES) == set(Op), "every op needs a shape rule"


def infer_node(node: Node, ins: Sequence[Tensor], outs: Sequence[Tensor] = ()) -> list[Out]:
    """The (shape, dtype) of each output of ``node`` given its input tensors. ``outs`` (the
    declared outputs) is only read by the quantisation rules."""
    return RULES[node.op](node, ins, outs)
