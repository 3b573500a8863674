"""ONNX op converters: the table ``op_type -> converter`` (registered with ``@converts``).

What it does: one function per ONNX op type that turns a node into IR nodes, resolving
what ONNX leaves implicit or version-dependent: attribute defaults, auto_pad into explicit
pads, attributes that became inputs (Clip min/max at 11, Pad pads at 11, Squeeze/Unsqueeze
axes at 13, ReduceMean axes at 18, Dropout ratio/training_mode at 12), Softmax's axis
meaning before 13, Reshape's 0/-1/allowzero, Flatten/Squeeze/Unsqueeze into RESHAPE,
QuantizeLinear/DequantizeLinear scale and zero point into ``Quant`` on the integer tensor.
Each converter lists the schema versions (``since_version``) it implements; a model whose
opset selects another version of the op is refused, not guessed at.

What it does not do (deliberate gaps, each raising ``UnsupportedOp``): training mode
(Dropout with training_mode, BatchNormalization with training outputs), MaxPool's Indices
output, blocked quantisation (block_size), QuantizeLinear's ``precision``, operands that
must be constants but are computed (Reshape shape, Pad pads, Clip bounds, axes inputs,
quantisation parameters), BatchNormalization ``spatial=0``, and every op not listed here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from onnx import numpy_helper

from ..ir import DType, Op, Quant, Tensor
from .onnx_context import NodeCtx, converts, dtype_of

LATER = (21, 23, 24, 25)  # schema versions that only added element types to an op
FLOAT6 = (28,)  # Cast, QuantizeLinear, DequantizeLinear: added float6 types only


# ---- elementwise ------------------------------------------------------------------------------
def _simple(op_type: str, op: Op, versions: Sequence[int], **defaults: float) -> None:
    def convert(ctx: NodeCtx) -> None:
        attrs = {k: float(ctx.attr(k, v)) for k, v in defaults.items()}
        ctx.emit(op, ctx.present_inputs(), [ctx.output()], **attrs)
    converts(op_type, versions, defaults)(convert)


for _t, _op in {"Add": Op.ADD, "Sub": Op.SUB, "Mul": Op.MUL, "Div": Op.DIV}.items():
    _simple(_t, _op, (7, 13, 14))
_simple("MatMul", Op.MATMUL, (1, 9, 13))
_simple("Relu", Op.RELU, (6, 13, 14))
_simple("Sigmoid", Op.SIGMOID, (6, 13))
_simple("Tanh", Op.TANH, (6, 13))
_simple("HardSwish", Op.HARD_SWISH, (14, 22))
_simple("LeakyRelu", Op.LEAKY_RELU, (6, 16), alpha=0.01)
_simple("HardSigmoid", Op.HARD_SIGMOID, (6, 22), alpha=0.2, beta=0.5)
_simple("PRelu", Op.PRELU, (7, 9, 16))
_simple("Identity", Op.IDENTITY, (1, 13, 14, 16, 19) + LATER)


@converts("Constant", (1, 9, 11, 12, 13, 19) + LATER,
          ("value", "value_float", "value_floats", "value_int", "value_ints", "value_string",
           "value_strings", "sparse_value"))
def _constant(ctx: NodeCtx) -> None:
    a = ctx.attrs
    if "value" in a:
        dtype_of(a["value"].data_type, f"Constant {ctx.name!r}")
        data = numpy_helper.to_array(a["value"])
    elif "value_float" in a or "value_floats" in a:
        data = np.asarray(a.get("value_float", a.get("value_floats")), np.float32)
    elif "value_int" in a or "value_ints" in a:
        data = np.asarray(a.get("value_int", a.get("value_ints")), np.int64)
    else:
        raise ctx.unsupported(f"constant of kind {sorted(a)}")
    ctx.b.add_const(ctx.output(), data)


@converts("Clip", (6, 11, 12, 13), ("min", "max"))
def _clip(ctx: NodeCtx) -> None:
    x = ctx.tensor(ctx.input(0))
    if ctx.version < 11:
        lo, hi = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
    else:
        lo_a = ctx.need_const(1, "min") if ctx.opt_input(1) else None
        hi_a = ctx.need_const(2, "max") if ctx.opt_input(2) else None
        lo = lo_a.item() if lo_a is not None else -math.inf
        hi = hi_a.item() if hi_a is not None else math.inf
    if x.dtype.is_int:
        info = np.iinfo(x.dtype.numpy)
        lo, hi = int(max(lo, info.min)), int(min(hi, info.max))
    else:
        lo, hi = float(lo), float(hi)
    ctx.emit(Op.CLIP, [x.name], [ctx.output()], min=lo, max=hi)


@converts("Softmax", (1, 11, 13), ("axis",))
def _softmax(ctx: NodeCtx) -> None:
    shape = ctx.shape(0)
    rank = len(shape)
    x, y = ctx.input(0), ctx.output()
    if ctx.version >= 13:
        ctx.emit(Op.SOFTMAX, [x], [y], axis=ctx.axis(ctx.attr("axis", -1), rank))
        return
    # Before opset 13: softmax over the input flattened to 2-D at `axis`.
    axis = ctx.axis(ctx.attr("axis", 1), rank)
    if axis == rank - 1:
        ctx.emit(Op.SOFTMAX, [x], [y], axis=axis)
        return
    flat = ctx.emit(Op.RESHAPE, [x], shape=(math.prod(shape[:axis]), math.prod(shape[axis:])))
    soft = ctx.emit(Op.SOFTMAX, [flat], axis=1)
    ctx.emit(Op.RESHAPE, [soft], [y], shape=shape)


# ---- linear algebra ---------------------------------------------------------------------------
@converts("Gemm", (7, 9, 11, 13), ("alpha", "beta", "transA", "transB"))
def _gemm(ctx: NodeCtx) -> None:
    ins = ctx.present_inputs()
    ctx.emit(Op.GEMM, ins, [ctx.output()], alpha=float(ctx.attr("alpha", 1.0)),
             beta=float(ctx.attr("beta", 1.0)), trans_a=bool(ctx.attr("transA", 0)),
             trans_b=bool(ctx.attr("transB", 0)))


@converts("BatchNormalization", (7, 9, 14, 15),
          ("epsilon", "momentum", "spatial", "training_mode"))
def _batch_norm(ctx: NodeCtx) -> None:
    if ctx.attr("training_mode", 0):
        raise ctx.unsupported("training_mode=1")
    if ctx.attr("spatial", 1) != 1:
        raise ctx.unsupported("spatial=0 (per-activation statistics)")
    if any(ctx.opt_output(i) for i in range(1, len(ctx.proto.output))):
        raise ctx.unsupported("training outputs (running/saved mean and variance)")
    ctx.emit(Op.BATCH_NORM, [ctx.input(i) for i in range(5)], [ctx.output()],
             epsilon=float(ctx.attr("epsilon", 1e-5)))


# ---- windows ----------------------------------------------------------------------------------
def _window(ctx: NodeCtx, kernel: Sequence[int], ceil_mode: bool = False
            ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """strides, dilations and explicit (begin, end) pads, with auto_pad resolved."""
    spatial = ctx.shape(0)[2:]
    n = len(spatial)
    strides = tuple(ctx.attr("strides", (1,) * n))
    dilations = tuple(ctx.attr("dilations", (1,) * n))
    if len(kernel) != n or len(strides) != n or len(dilations) != n:
        raise ctx.unsupported(f"kernel {tuple(kernel)}/strides/dilations do not fit input "
                              f"{ctx.shape(0)}")
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode(errors="replace") if isinstance(auto, bytes) else auto
    if auto == "NOTSET":
        flat = tuple(ctx.attr("pads", (0,) * (2 * n)))
        if len(flat) != 2 * n:
            raise ctx.unsupported(f"pads {flat} do not fit {n} spatial axes")
        return strides, dilations, tuple(zip(flat[:n], flat[n:], strict=True))
    if auto == "VALID":
        return strides, dilations, ((0, 0),) * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.unsupported(f"auto_pad={auto!r}")
    pads = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return strides, dilations, tuple(pads)


def _kernel(ctx: NodeCtx, weight_shape: tuple[int, ...]) -> tuple[int, ...]:
    k = tuple(ctx.attr("kernel_shape", weight_shape[2:]))
    if k != weight_shape[2:]:
        raise ctx.unsupported(f"kernel_shape {k} differs from the weight's {weight_shape[2:]}")
    return k


_WINDOW_ATTRS = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")


@converts("Conv", (1, 11, 22), _WINDOW_ATTRS + ("group",))
def _conv(ctx: NodeCtx) -> None:
    kernel = _kernel(ctx, ctx.shape(1))
    strides, dilations, pads = _window(ctx, kernel)
    ins = ctx.present_inputs()
    ctx.emit(Op.CONV, ins, [ctx.output()], strides=strides, dilations=dilations, pads=pads,
             group=int(ctx.attr("group", 1)))


@converts("ConvTranspose", (1, 11, 22),
          _WINDOW_ATTRS + ("group", "output_padding", "output_shape"))
def _conv_transpose(ctx: NodeCtx) -> None:
    # With output_shape or SAME_*: pads from the total padding, the odd one at the end for
    # SAME_UPPER and at the start otherwise. That is version 11's text; version 1's text
    # had the condition inverted, onnxruntime follows 11's for both, and so do we.
    spatial, w = ctx.shape(0)[2:], ctx.shape(1)
    kernel = _kernel(ctx, w)
    n = len(spatial)
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode(errors="replace") if isinstance(auto, bytes) else auto
    strides = tuple(ctx.attr("strides", (1,) * n))
    dilations = tuple(ctx.attr("dilations", (1,) * n))
    out_pad = tuple(ctx.attr("output_padding", (0,) * n))
    out_shape = ctx.attr("output_shape")
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(spatial, strides, strict=True)]
    if out_shape is not None:
        out_shape = tuple(out_shape)[-n:]
        pads = []
        for i in range(n):
            total = (strides[i] * (spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i]
                     + 1 - out_shape[i])
            half = total // 2
            pads.append((half, total - half) if auto == "SAME_UPPER" else (total - half, half))
        pads_t = tuple(pads)
    elif auto == "VALID":
        pads_t = ((0, 0),) * n
    else:
        flat = tuple(ctx.attr("pads", (0,) * (2 * n)))
        pads_t = tuple(zip(flat[:n], flat[n:], strict=True))
    ins = ctx.present_inputs()
    ctx.emit(Op.CONV_TRANSPOSE, ins, [ctx.output()], strides=strides, dilations=dilations,
             pads=pads_t, output_padding=out_pad, group=int(ctx.attr("group", 1)))


def _pool(ctx: NodeCtx, op: Op, **extra: bool) -> None:
    kernel = tuple(ctx.attr("kernel_shape"))
    ceil = bool(ctx.attr("ceil_mode", 0))
    strides, dilations, pads = _window(ctx, kernel, ceil)
    ctx.emit(op, [ctx.input(0)], [ctx.output()], kernel=kernel, strides=strides,
             dilations=dilations, pads=pads, ceil_mode=ceil, **extra)


@converts("MaxPool", (1, 8, 10, 11, 12, 22), _WINDOW_ATTRS + ("ceil_mode", "storage_order"))
def _max_pool(ctx: NodeCtx) -> None:
    if ctx.opt_output(1):
        raise ctx.unsupported("the Indices output")
    _pool(ctx, Op.MAX_POOL)


@converts("AveragePool", (7, 10, 11, 19, 22), _WINDOW_ATTRS + ("ceil_mode", "count_include_pad"))
def _avg_pool(ctx: NodeCtx) -> None:
    _pool(ctx, Op.AVG_POOL, count_include_pad=bool(ctx.attr("count_include_pad", 0)))


@converts("GlobalAveragePool", (1, 22))
def _global_avg_pool(ctx: NodeCtx) -> None:
    rank = len(ctx.shape(0))
    ctx.emit(Op.REDUCE_MEAN, [ctx.input(0)], [ctx.output()], axes=tuple(range(2, rank)),
             keepdims=True)


# ---- shapes -----------------------------------------------------------------------------------
def _reshape_to(ctx: NodeCtx, shape: Sequence[int]) -> None:
    ctx.emit(Op.RESHAPE, [ctx.input(0)], [ctx.output()], shape=tuple(int(d) for d in shape))


@converts("Reshape", (5, 13, 14, 19) + LATER, ("allowzero",))
def _reshape(ctx: NodeCtx) -> None:
    x = ctx.shape(0)
    spec = ctx.const(1)
    if spec is None:  # a computed shape: fine if ONNX's shape inference made it static
        known = ctx.b.onnx_types.get(ctx.output(), (None, None))[0]
        if known is None:
            raise ctx.unsupported(f"shape (input 1, {ctx.opt_input(1)!r}) is neither a constant "
                                  f"nor statically inferable")
        return _reshape_to(ctx, known)
    dims = [int(d) for d in spec.reshape(-1)]
    if not ctx.attr("allowzero", 0):
        dims = [x[i] if d == 0 else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ctx.unsupported(f"shape {dims} has more than one -1")
    if -1 in dims:
        rest = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(x) // rest if rest else 0
    _reshape_to(ctx, dims)


@converts("Flatten", (1, 9, 11, 13) + LATER, ("axis",))
def _flatten(ctx: NodeCtx) -> None:
    x = ctx.shape(0)
    axis = ctx.attr("axis", 1)
    axis = axis + len(x) if axis < 0 else axis
    _reshape_to(ctx, (math.prod(x[:axis]), math.prod(x[axis:])))


def _axes(ctx: NodeCtx, rank: int, attr_until: int) -> list[int] | None:
    """The axes operand: an attribute before ``attr_until``, else input 1 (a constant)."""
    if ctx.version < attr_until:
        axes = ctx.attr("axes")
    else:
        axes = None if ctx.opt_input(1) is None else ctx.need_const(1, "axes").reshape(-1).tolist()
    return None if axes is None else [ctx.axis(int(a), rank) for a in axes]


@converts("Squeeze", (1, 11, 13) + LATER, ("axes",))
def _squeeze(ctx: NodeCtx) -> None:
    x = ctx.shape(0)
    axes = _axes(ctx, len(x), 13)
    if axes is None:
        axes = [i for i, d in enumerate(x) if d == 1]
    if any(x[a] != 1 for a in axes):
        raise ctx.unsupported(f"squeezing axes {axes} of shape {x}: not all are 1")
    _reshape_to(ctx, [d for i, d in enumerate(x) if i not in axes])


@converts("Unsqueeze", (1, 11, 13) + LATER, ("axes",))
def _unsqueeze(ctx: NodeCtx) -> None:
    x = ctx.shape(0)
    raw = ctx.attr("axes") if ctx.version < 13 else ctx.need_const(1, "axes").reshape(-1).tolist()
    rank = len(x) + len(raw)
    axes = sorted(ctx.axis(int(a), rank) for a in raw)
    shape, rest = [], iter(x)
    for i in range(rank):
        shape.append(1 if i in axes else next(rest))
    _reshape_to(ctx, shape)


@converts("Transpose", (1, 13) + LATER, ("perm",))
def _transpose(ctx: NodeCtx) -> None:
    rank = len(ctx.shape(0))
    perm = tuple(ctx.attr("perm", range(rank - 1, -1, -1)))
    ctx.emit(Op.TRANSPOSE, [ctx.input(0)], [ctx.output()], perm=perm)


@converts("Concat", (4, 11, 13), ("axis",))
def _concat(ctx: NodeCtx) -> None:
    ins = ctx.present_inputs()
    axis = ctx.axis(ctx.attr("axis"), len(ctx.shape(0)))
    ctx.emit(Op.CONCAT, ins, [ctx.output()], axis=axis)


@converts("Pad", (2, 11, 13, 18, 19) + LATER, ("mode", "pads", "value"))
def _pad(ctx: NodeCtx) -> None:
    x = ctx.tensor(ctx.input(0))
    rank = len(x.shape)
    mode = ctx.attr("mode", "constant")
    mode = mode.decode(errors="replace") if isinstance(mode, bytes) else mode
    if ctx.version < 11:
        flat, value, axes = list(ctx.attr("pads")), ctx.attr("value", 0.0), list(range(rank))
    else:
        flat = ctx.need_const(1, "pads").reshape(-1).tolist()
        v = ctx.need_const(2, "constant_value") if ctx.opt_input(2) else None
        value = v.item() if v is not None else 0
        axes = list(range(rank)) if ctx.version < 18 or not ctx.opt_input(3) else \
            [ctx.axis(int(a), rank) for a in ctx.need_const(3, "axes").reshape(-1)]
    if len(flat) != 2 * len(axes):
        raise ctx.unsupported(f"{len(flat)} pads for {len(axes)} axes")
    pairs = [(0, 0)] * rank
    for i, a in enumerate(axes):
        pairs[a] = (int(flat[i]), int(flat[i + len(axes)]))
    value = int(value) if x.dtype.is_int or x.dtype is DType.BOOL else float(value)
    ctx.emit(Op.PAD, [x.name], [ctx.output()], pads=tuple(pairs), mode=mode, value=value)


@converts("ReduceMean", (1, 11, 13, 18), ("axes", "keepdims", "noop_with_empty_axes"))
def _reduce_mean(ctx: NodeCtx) -> None:
    rank = len(ctx.shape(0))
    axes = _axes(ctx, rank, 18)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            ctx.emit(Op.IDENTITY, [ctx.input(0)], [ctx.output()])
            return
        axes = list(range(rank))
    ctx.emit(Op.REDUCE_MEAN, [ctx.input(0)], [ctx.output()], axes=tuple(sorted(set(axes))),
             keepdims=bool(ctx.attr("keepdims", 1)))


@converts("Cast", (6, 9, 13, 19) + LATER + FLOAT6, ("to", "saturate", "round_mode"))
def _cast(ctx: NodeCtx) -> None:
    to = dtype_of(ctx.attr("to"), f"Cast node {ctx.name!r}")
    ctx.emit(Op.CAST, [ctx.input(0)], [ctx.output()], to=to)


@converts("Dropout", (7, 10, 12, 13, 22), ("ratio", "seed"))
def _dropout(ctx: NodeCtx) -> None:
    if ctx.opt_input(2) is not None:
        mode = ctx.const(2)
        if mode is None or bool(mode.reshape(-1)[0]):
            raise ctx.unsupported("training_mode must be a constant false")
    x = ctx.tensor(ctx.input(0))
    ctx.emit(Op.IDENTITY, [x.name], [ctx.output()])
    mask = ctx.opt_output(1)
    if mask:  # all ones in inference
        ctx.b.add_const(mask, np.ones(x.shape, bool))


# ---- quantisation -----------------------------------------------------------------------------
def _quant(ctx: NodeCtx, shape: tuple[int, ...]) -> tuple[Quant, np.ndarray | None, DType]:
    """The Quant described by inputs 1 (scale) and 2 (zero point), the zero point array,
    and the scale's dtype."""
    if ctx.attr("block_size", 0):
        raise ctx.unsupported("blocked quantisation (block_size)")
    scale = ctx.need_const(1, "scale")
    zp = ctx.need_const(2, "zero point") if ctx.opt_input(2) else None
    s, z = scale.reshape(-1), (zp.reshape(-1) if zp is not None else np.zeros(scale.size, np.int64))
    if scale.ndim == 0 or scale.size == 1:
        axis = None
    elif scale.ndim == 1 and ctx.version >= 13:
        axis = ctx.axis(ctx.attr("axis", 1), len(shape))
        if shape[axis] != scale.size:
            raise ctx.unsupported(f"{scale.size} scales for axis {axis} of shape {shape}")
    else:
        raise ctx.unsupported(f"scale of shape {scale.shape}")
    if z.dtype.kind == "f":
        raise ctx.unsupported(f"a {z.dtype} zero point (float8 quantisation)")
    return Quant(tuple(s.tolist()), tuple(z.tolist()), axis), zp, DType.from_numpy(scale.dtype)


@converts("QuantizeLinear", (10, 13, 19) + LATER + FLOAT6,
          ("axis", "saturate", "block_size", "output_dtype", "precision"))
def _quantize(ctx: NodeCtx) -> None:
    if ctx.attr("precision", 0):
        raise ctx.unsupported("the precision attribute")
    x = ctx.tensor(ctx.input(0))
    quant, zp, _ = _quant(ctx, x.shape)
    if zp is not None:
        dtype = DType.from_numpy(zp.dtype)
    elif ctx.attr("output_dtype", 0):
        dtype = dtype_of(ctx.attr("output_dtype"), f"QuantizeLinear {ctx.name!r}")
    else:
        dtype = DType.UINT8
    ctx.define(Tensor(ctx.output(), x.shape, dtype, quant))
    ctx.emit(Op.QUANTIZE, [x.name], [ctx.output()])


@converts("DequantizeLinear", (10, 13, 19) + LATER + FLOAT6, ("axis", "block_size", "output_dtype"))
def _dequantize(ctx: NodeCtx) -> None:
    x = ctx.tensor(ctx.input(0))
    quant, _, scale_dtype = _quant(ctx, x.shape)
    if x.quant is not None and x.quant != quant:
        raise ctx.unsupported(f"tensor {x.name!r} already has another quantisation {x.quant}")
    ctx.define(Tensor(x.name, x.shape, x.dtype, quant, x.data))
    out = dtype_of(ctx.attr("output_dtype"), "DequantizeLinear") if ctx.attr("output_dtype") \
        else scale_dtype
    ctx.define(Tensor(ctx.output(), x.shape, out))
    ctx.emit(Op.DEQUANTIZE, [x.name], [ctx.output()])


@converts("ArgMax", (1, 11, 12, 13), ("axis", "keepdims", "select_last_index"))
def _argmax(ctx: NodeCtx) -> None:
    rank = len(ctx.shape(0))
    ctx.emit(Op.ARGMAX, [ctx.input(0)], [ctx.output()],
             axis=ctx.axis(int(ctx.attr("axis", 0)), rank), keepdims=bool(ctx.attr("keepdims", 1)),
             select_last_index=bool(ctx.attr("select_last_index", 0)), to=DType.INT64)
