"""TFLM op emitters for activations, division, casts, ARG_MAX and TRANSPOSE_CONV: the table
``HANDLERS`` that ``emit`` merges into its own.

* SIGMOID -> ``LOGISTIC``, TANH -> ``TANH``, HARD_SWISH -> ``HARD_SWISH``, LEAKY_RELU ->
  ``LEAKY_RELU`` (alpha), PRELU -> ``PRELU`` (the slope re-laid-out like the input: a
  per-channel ``(C, 1, 1)`` slope of an NCHW tensor becomes ``(1, 1, 1, C)``); float and,
  where the graph is lowered int8, int8 (TFLM has int8 kernels for all five).
* DIV by a float constant -> ``MUL`` by its reciprocal (one more rounding than ``x / c``,
  within 1 ulp; ``MUL`` is on every board, ``DIV`` on few); any other DIV -> ``DIV``.
* CAST -> ``CAST``.
* ARGMAX -> ``ARG_MAX`` (axis as an int32 constant, int32 output: TFLM's ARG_MAX writes
  int32 only; every int64 activation is emitted int32, see ``emitter.Emitter.define``),
  with a RESHAPE after it for ``keepdims``.
* CONV_TRANSPOSE (2-D, group 1, no dilation) -> ``TRANSPOSE_CONV`` (inputs: output shape,
  OHWI weights, input, bias), padding VALID or SAME when the IR pads are TFLite's for that
  output size (the begin pad ``total // 2``, as TFLite's ``ComputePaddingWithOffset``);
  other pads are refused naming them.

What it does not do: int8 TRANSPOSE_CONV (the int8 lowering keeps it float: refused as a
hybrid/unlowered node before emission), grouped or dilated transposed convolutions.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as S

from ...ir import DType, Node, Op
from .emitter import (TO_NHWC, B, Emitter, Handler, _data, _quant_nhwc, elementwise_layout,
                      fused, same_pads, unary)


def _leaky_relu(e: Emitter, node: Node) -> None:
    layout = elementwise_layout(e, node)
    o = S.LeakyReluOptionsT()
    o.alpha = node.attr_float("alpha")
    e.w.op(B.LEAKY_RELU, [e.get(node.inputs[0], layout)], [e.out(node, layout)],
           S.BuiltinOptions.LeakyReluOptions, o)


def _prelu(e: Emitter, node: Node) -> None:
    layout = elementwise_layout(e, node)
    rank = len(e.g.tensors[node.outputs[0]].shape)
    ins = [e.get(i, layout, rank) for i in node.inputs]
    e.w.op(B.PRELU, ins, [e.out(node, layout)])


def _div(e: Emitter, node: Node) -> None:
    layout = elementwise_layout(e, node)
    rank = len(e.g.tensors[node.outputs[0]].shape)
    x, c = node.inputs
    ct = e.g.tensors[c]
    if ct.is_const and ct.dtype is DType.FLOAT32 and np.all(_data(ct) != 0):
        recip = (np.float32(1) / _data(ct)).astype(np.float32)
        o = S.MulOptionsT()
        o.fusedActivationFunction = fused(e, node)
        k = e.const_in_layout(f"{c}@reciprocal", recip, DType.FLOAT32, None, layout, rank)
        e.w.op(B.MUL, [e.get(x, layout, rank), k],
               [e.out(node, layout)], S.BuiltinOptions.MulOptions, o)
        return
    d = S.DivOptionsT()
    d.fusedActivationFunction = fused(e, node)
    e.w.op(B.DIV, [e.get(i, layout, rank) for i in node.inputs], [e.out(node, layout)],
           S.BuiltinOptions.DivOptions, d)


def _cast(e: Emitter, node: Node) -> None:
    layout = elementwise_layout(e, node)
    x = e.get(node.inputs[0], layout)
    y = e.out(node, layout)
    o = S.CastOptionsT()
    o.inDataType = e.w.sg.tensors[x].type
    o.outDataType = e.w.sg.tensors[y].type
    e.w.op(B.CAST, [x], [y], S.BuiltinOptions.CastOptions, o)


def _argmax(e: Emitter, node: Node) -> None:
    x = node.inputs[0]
    xt = e.g.tensors[x]
    rank = len(xt.shape)
    axis = node.attr_int("axis")
    layout = e.layout.get(x, "same") if rank == 4 and not xt.is_const else "same"
    emitted_axis = TO_NHWC.index(axis) if layout == "nhwc" else axis
    src = e.get(x, layout)
    shape = list(e.w.shape(src))
    del shape[emitted_axis]
    o = S.ArgMaxOptionsT()
    o.outputType = S.TensorType.INT32
    axis_t = e.int32(f"{node.name}@axis", [emitted_axis])
    if not node.attr_bool("keepdims"):
        e.w.op(B.ARG_MAX, [src, axis_t], [e.out(node, "same")], S.BuiltinOptions.ArgMaxOptions, o)
        return
    flat = e.w.tensor(f"{node.name}@argmax", tuple(shape), DType.INT32, None)
    e.w.op(B.ARG_MAX, [src, axis_t], [flat], S.BuiltinOptions.ArgMaxOptions, o)
    e._reshape(flat, e.out(node, layout))


def _conv_transpose(e: Emitter, node: Node) -> None:
    g = e.g
    xt, wt, yt = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]], g.tensors[node.outputs[0]]
    if len(xt.shape) != 4:
        raise e.unsupported(node, f"{len(xt.shape) - 2}-D transposed convolution (only 2-D)")
    if not wt.is_const:
        raise e.unsupported(node, "the weight must be a constant")
    if node.attr_int("group") != 1 or any(d != 1 for d in node.attr_ints("dilations")):
        raise e.unsupported(node, "grouped or dilated transposed convolution")
    if xt.dtype.is_int:
        raise e.unsupported(node, "int8 transposed convolution is not lowered (float only)")
    strides, k = node.attr_ints("strides"), wt.shape[2:]
    pads = node.attr_pairs("pads")
    out_hw = yt.shape[2:]
    if all(p == (0, 0) for p in pads) and not any(node.attr_ints("output_padding")):
        padding = S.Padding.VALID
    elif all(o == i * s for o, i, s in zip(out_hw, xt.shape[2:], strides, strict=True)) and all(
            p[0] == same_pads(o, kk, s, 1)[0] for p, o, kk, s in zip(pads, out_hw, k, strides, strict=True)):
        padding = S.Padding.SAME
    else:
        raise e.unsupported(node, f"pads {pads} with output size {out_hw} are neither VALID "
                                  f"nor TFLite's SAME for a transposed convolution")
    q = wt.quant
    w = e.const(node.inputs[1], _data(wt).transpose(1, 2, 3, 0), wt.dtype,
                _quant_nhwc(q) if q is not None and q.axis is not None else q)
    out_shape = e.int32(f"{node.name}@output_shape", [yt.shape[0], *out_hw, yt.shape[1]])
    ins = [out_shape, w, e.get(node.inputs[0], "nhwc")]
    if len(node.inputs) > 2:
        ins.append(e.get(node.inputs[2], "same"))
    o = S.TransposeConvOptionsT()
    o.padding, o.strideH, o.strideW = padding, strides[0], strides[1]
    o.fusedActivationFunction = fused(e, node)
    e.w.op(B.TRANSPOSE_CONV, ins, [e.out(node, "nhwc")], S.BuiltinOptions.TransposeConvOptions, o)


HANDLERS: dict[Op, Handler] = {
    Op.SIGMOID: unary(B.LOGISTIC), Op.TANH: unary(B.TANH), Op.HARD_SWISH: unary(B.HARD_SWISH),
    Op.LEAKY_RELU: _leaky_relu, Op.PRELU: _prelu, Op.DIV: _div, Op.CAST: _cast,
    Op.ARGMAX: _argmax, Op.CONV_TRANSPOSE: _conv_transpose,
}

__all__ = ["HANDLERS"]
