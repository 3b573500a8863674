"""The TFLite Micro backend: ``to_tflite(graph) -> bytes``, a TFLite flatbuffer that the
tflite-micro runtime (and ai-edge-litert) can run.

Input: a validated graph that is all-float32 or fully lowered int8 (after
``passes.optimize`` and, for QDQ graphs, ``passes.lower_int8``): every CONV/GEMM reads a
constant weight of its activations' kind (float32, or int8 with ``Quant``; hybrid
float-activation/int8-weight graphs are refused: TFLM cannot run them).

Ops: CONV (-> CONV_2D, or DEPTHWISE_CONV_2D when ``group == C_in``, including a
single-channel CONV as depthwise with multiplier C_out, as TFLite's converter does for
micro_speech: TFLM's depthwise kernel runs it 27 % faster there), GEMM (->
FULLY_CONNECTED, ``alpha = beta = 1``, A not transposed), 2-D MATMUL with a constant B (->
FULLY_CONNECTED without bias), ADD/SUB/MUL, AVG_POOL/MAX_POOL
(-> AVERAGE_POOL_2D/MAX_POOL_2D), REDUCE_MEAN (-> MEAN), RESHAPE, SOFTMAX (on the last
emitted axis), RELU, CLIP (0..6, 0..inf, -1..1 -> RELU6/RELU/RELU_N1_TO_1), TRANSPOSE,
QUANTIZE, DEQUANTIZE, PAD, CONCAT, IDENTITY; and from ``emit_ops``: SIGMOID (LOGISTIC),
TANH, HARD_SWISH, LEAKY_RELU, PRELU, DIV (by a constant: MUL), CAST, ARGMAX (ARG_MAX),
CONV_TRANSPOSE (TRANSPOSE_CONV). ``fused`` -> ``FusedActivationFunction`` (a fused tanh
becomes a TANH op first: TFLM's kernels ignore a fused TANH). Before emission,
``passes.lift_1d`` makes 1-D convolutions and pools 2-D of height 1 (torch Conv1d, tf2onnx
Conv1D). int64 activations (ARGMAX indices) are emitted int32: TFLM's ARG_MAX writes int32.

**Padding:** explicit IR pads become VALID (all zero) or SAME (when they equal TFLite's
SAME pads for that input size); otherwise a PAD op (CONV: with the input's zero point /
0.0; MAX_POOL: with the lowest value, or 0 / the zero point when its input is non-negative,
after a RELU) is inserted before a VALID op; AVG_POOL with other pads is refused (TFLite
never counts pads). Padding with 0.0 / the zero point is TFLite's ``PAD`` (which every
board with convolutions registers), any other value ``PADV2``; the IR's PAD likewise.

**Layout:** the IR is NCHW, TFLite NHWC. Every tensor gets one emitted layout: ``"nhwc"``
(a 4-D IR tensor emitted transposed by (0, 2, 3, 1)) or ``"same"`` (the IR shape as is).
4-D tensors read or written by CONV/pools are nhwc, and that preference spreads through
element-wise ops, CONCAT and PAD (fixpoint); graph inputs and outputs keep their declared
shapes (``"same"``). ``input_layout="nhwc"`` declares the inputs the network reads as images
channels-last first (``passes.input_layout``: an NHWC input and a TRANSPOSE to NCHW, which is
emitted as an alias: no TRANSPOSE for an NCHW multi-channel input). When an op needs a tensor
in the other layout, ``Emitter.get`` makes
it once: a RESHAPE when only size-1 axes move, a TRANSPOSE otherwise. IR TRANSPOSE/RESHAPE
nodes are re-expressed on the emitted layouts: a TRANSPOSE that becomes the identity (the
boundary TRANSPOSEs the TFLite frontend inserted), a RESHAPE that keeps the emitted shape
and a 2-D RESHAPE read only as a FULLY_CONNECTED input (which flattens by itself) alias
their input (no op; when the input is stored NHWC and the IR flattens NCHW, the FC's weight
columns are permuted to the NHWC order instead of transposing the activations); otherwise a
real TRANSPOSE/RESHAPE is emitted. Conv
weights go back from OIHW to OHWI (per-channel axis 0 stays 0), depthwise (C*M)1HW to
1HW(C*M) (axis 0 -> 3).

**Buffers:** buffer 0 is empty; each constant has its own buffer, 16-byte aligned
(``writer``). Metadata ``tinymlaas`` holds JSON ``{name, version, producer, sha256}``,
sha256 of the model bytes written without that metadata entry; with ``offline_plan=True``
also TFLM's ``OfflineMemoryAllocation`` (``plan``).

What it does not do: grouped convolution (1 < group < C_in), int8 or grouped
CONV_TRANSPOSE, 3-D windows, batched MATMUL, requantising RESHAPE/TRANSPOSE
(different in/out ``Quant``), half-to-even QUANTIZE (TFLite's rounds half away; such a
node is emitted as TFLite's QUANTIZE and may differ by 1 LSB at exact ties), constant graph
outputs, int16 activations, multiple subgraphs, signatures, buffer deduplication.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S

from ...ir import DType, Graph, Node, Op, Quant
from . import plan as tflm_plan
from ...passes import identity_elimination, run_passes, unfuse_tanh
from ...passes.input_layout import with_input_layout
from ...passes.lift_1d import lift_1d
from .emit_ops import HANDLERS as OP_HANDLERS
from .emitter import (  # noqa: F401  (BackendError re-exported: the backend's error type)
    _FUSED, B, TO_NCHW, TO_NHWC, BackendError, Emitter, Handler, _data, _quant_nhwc, _trivial,
    elementwise_layout, fused, non_negative, pad_op, same_pads, unary,
)
from .writer import ModelWriter

__version__ = "0.1.0"
def to_tflite(graph: Graph, *, metadata: bool = True, offline_plan: bool = False,
              input_layout: str = "nchw") -> bytes:
    """Emit ``graph`` as a TFLite flatbuffer (see the module docstring). ``offline_plan``
    embeds our arena plan as TFLM's ``OfflineMemoryAllocation`` metadata (``plan``).
    ``input_layout="nhwc"``: 4-D graph inputs that the network reads as images (NCHW in the
    IR) are declared channels-last, so the device feeds NHWC data and no TRANSPOSE is
    emitted for them; ``"nchw"`` (default) keeps the model's declared input shapes."""
    # TFLM has 2-D windows only, and its kernels ignore a fused TANH: both are rewritten
    layout = partial(with_input_layout, layout=input_layout)
    graph = run_passes(graph.validate(), [layout, lift_1d, unfuse_tanh, identity_elimination]).toposorted()

    def emit(extra: dict[str, bytes]) -> bytes:
        w = Emitter(graph, HANDLERS).emit()
        ins, outs = body_io(w)
        entries = dict(extra)
        if offline_plan:
            entries[tflm_plan.METADATA_NAME] = tflm_plan.offline_plan(w.model, w.sg, ins, outs).metadata()
        return w.finish(ins, outs, metadata=entries)

    raw = emit({})
    if not metadata:
        return raw
    info = {"name": graph.name, "version": __version__, "producer": "tinymlaas.compilers",
            "sha256": hashlib.sha256(raw).hexdigest()}
    return emit({"tinymlaas": json.dumps(info).encode()})


def body_io(w: ModelWriter) -> tuple[list[int], list[int]]:
    return w.graph_inputs, w.graph_outputs  # type: ignore[attr-defined]



# ---- op emitters ------------------------------------------------------------------------------
def _padding(e: Emitter, node: Node, spatial: Sequence[int], kernel: Sequence[int],
             strides: Sequence[int], dil: Sequence[int]) -> int | None:
    pads = node.attr_pairs("pads")
    if all(p == (0, 0) for p in pads):
        return int(S.Padding.VALID)
    if tuple(pads) == tuple(same_pads(n, k, s, d) for n, k, s, d in
                            zip(spatial, kernel, strides, dil, strict=False)):
        return int(S.Padding.SAME)
    return None


def _explicit_pad(e: Emitter, node: Node, x: int, value: float | int) -> int:
    """A PAD (PADV2 when ``value`` is not the zero) of the nhwc input ``x`` by the node's
    pads; returns the padded tensor."""
    pads = node.attr_pairs("pads")
    shape = e.w.shape(x)
    nshape = (shape[0], shape[1] + sum(pads[0]), shape[2] + sum(pads[1]), shape[3])
    xt = e.g.tensors[node.inputs[0]]
    y = e.w.tensor(f"{node.name}@pad", nshape, xt.dtype, xt.quant)
    pad_op(e, x, y, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]], value, xt.dtype, xt.quant,
           node.name)
    return y


def _zero_bias(e: Emitter, node: Node) -> int:
    """An explicit zero bias: LiteRT's DEPTHWISE_CONV_2D (and TFLM's kernels) require one."""
    xt, wt = e.g.tensors[node.inputs[0]], e.g.tensors[node.inputs[1]]
    n = wt.shape[0]
    if xt.dtype.is_float:
        return e.const(f"{node.name}@bias", np.zeros(n, np.float32), DType.FLOAT32, None)
    if xt.quant is None or wt.quant is None:
        raise e.unsupported(node, "integer convolution without quantisation parameters")
    ws = wt.quant.scale if len(wt.quant.scale) == n else wt.quant.scale * n
    scales = tuple(xt.quant.scale[0] * s for s in ws)
    q = Quant(scales, (0,) * n, 0) if n > 1 else Quant(scales, (0,))
    return e.const(f"{node.name}@bias", np.zeros(n, np.int32), DType.INT32, q)


def _conv(e: Emitter, node: Node) -> None:
    g = e.g
    xt, wt = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
    if len(xt.shape) != 4:
        raise e.unsupported(node, f"{len(xt.shape) - 2}-D convolution (TFLM has 2-D ones; 1-D "
                                  f"ones are lifted to 2-D)")
    if not wt.is_const:
        raise e.unsupported(node, "the weight must be a constant")
    if xt.dtype.is_float != wt.dtype.is_float:
        raise e.unsupported(node, f"{xt.dtype.value} activations with {wt.dtype.value} "
                                  f"weights (hybrid models do not run on TFLM)")
    cin, group = xt.shape[1], node.attr_int("group")
    kernel = wt.shape[2:]
    strides, dil = node.attr_ints("strides"), node.attr_ints("dilations")
    x = e.get(node.inputs[0], "nhwc")
    padding = _padding(e, node, xt.shape[2:], kernel, strides, dil)
    if padding is None:
        zp = xt.quant.zero_point[0] if xt.quant is not None else 0
        x = _explicit_pad(e, node, x, zp if xt.dtype.is_int else 0.0)
        padding = S.Padding.VALID
    bias = e.get(node.inputs[2], "same") if len(node.inputs) > 2 else _zero_bias(e, node)
    if group == 1 and cin > 1:
        w = e.const(node.inputs[1], _data(wt).transpose(TO_NHWC), wt.dtype, _quant_nhwc(wt.quant))
        o = S.Conv2DOptionsT(padding=padding, strideH=strides[0], strideW=strides[1],
                             dilationHFactor=dil[0], dilationWFactor=dil[1],
                             fusedActivationFunction=fused(e, node))
        y = e.out(node, "nhwc")
        e.w.op(B.CONV_2D, [x, w, bias], [y], S.BuiltinOptions.Conv2DOptions, o)
    elif group == cin and wt.shape[1] == 1:
        q = wt.quant
        if q is not None and q.axis is not None:
            q = Quant(q.scale, q.zero_point, 3)
        w = e.const(node.inputs[1], _data(wt).transpose(1, 2, 3, 0), wt.dtype, q)
        o = S.DepthwiseConv2DOptionsT(padding=padding, strideH=strides[0], strideW=strides[1],
                                      depthMultiplier=wt.shape[0] // cin,
                                      dilationHFactor=dil[0], dilationWFactor=dil[1],
                                      fusedActivationFunction=fused(e, node))
        y = e.out(node, "nhwc")
        e.w.op(B.DEPTHWISE_CONV_2D, [x, w, bias], [y],
               S.BuiltinOptions.DepthwiseConv2DOptions, o)
    else:
        raise e.unsupported(node, f"grouped convolution (group {group} of {cin} channels)")


def _pool(e: Emitter, node: Node) -> None:
    xt = e.g.tensors[node.inputs[0]]
    if len(xt.shape) != 4:
        raise e.unsupported(node, f"{len(xt.shape) - 2}-D pooling (TFLM has 2-D pools; 1-D "
                                  f"ones are lifted to 2-D)")
    kernel, strides = node.attr_ints("kernel"), node.attr_ints("strides")
    if any(d != 1 for d in node.attr_ints("dilations")):
        raise e.unsupported(node, "dilated pooling")
    x = e.get(node.inputs[0], "nhwc")
    padding = _padding(e, node, xt.shape[2:], kernel, strides, (1, 1))
    if node.op is Op.AVG_POOL and padding == S.Padding.SAME and node.attr_bool("count_include_pad"):
        raise e.unsupported(node, "average pooling that counts pads")
    if padding is None:
        if node.op is Op.AVG_POOL:
            raise e.unsupported(node, f"average pooling with pads {node.attr_pairs('pads')}")
        low: float | int = (float(np.finfo(np.float32).min) if xt.dtype.is_float
                            else int(np.iinfo(xt.dtype.numpy).min))
        if non_negative(e, node.inputs[0]):  # 0 is as low as -inf for these values
            low = xt.quant.zero_point[0] if (xt.quant is not None and xt.dtype.is_int) else 0.0
        x = _explicit_pad(e, node, x, low)
        padding = S.Padding.VALID
    # TFLite computes its own output size; it must be the IR's.
    yt = e.g.tensors[node.outputs[0]]
    sizes = e.w.shape(x)[1:3]
    for n, k, s, got in zip(sizes, kernel, strides, yt.shape[2:], strict=False):
        want = (n + s - 1) // s if padding == S.Padding.SAME else (n - k) // s + 1
        if want != got:
            raise e.unsupported(node, f"output size {yt.shape} is not TFLite's (ceil_mode?)")
    o = S.Pool2DOptionsT(padding=padding, strideH=strides[0], strideW=strides[1],
                         filterHeight=kernel[0], filterWidth=kernel[1],
                         fusedActivationFunction=fused(e, node))
    code = B.AVERAGE_POOL_2D if node.op is Op.AVG_POOL else B.MAX_POOL_2D
    e.w.op(code, [x], [e.out(node, "nhwc")], S.BuiltinOptions.Pool2DOptions, o)


def _gemm(e: Emitter, node: Node) -> None:
    if node.attr_float("alpha") != 1.0 or node.attr_float("beta") != 1.0:
        raise e.unsupported(node, "alpha/beta != 1")
    if node.attr_bool("trans_a"):
        raise e.unsupported(node, "A must be a 2-D, untransposed activation")
    _fully_connected(e, node, node.attr_bool("trans_b"))


def _matmul(e: Emitter, node: Node) -> None:
    """A 2-D MATMUL with a constant (K, N) B: a FULLY_CONNECTED without bias."""
    _fully_connected(e, node, trans_b=False)


def _fully_connected(e: Emitter, node: Node, trans_b: bool) -> None:
    g = e.g
    at, bt = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
    if len(at.shape) != 2 or len(bt.shape) != 2:
        raise e.unsupported(node, "A must be a 2-D, untransposed activation and B 2-D")
    if not bt.is_const:
        raise e.unsupported(node, "the weight must be a constant")
    if at.dtype.is_float != bt.dtype.is_float:
        raise e.unsupported(node, "hybrid float/int8 GEMM does not run on TFLM")
    data, q = _data(bt), bt.quant
    if not trans_b:
        data = data.T
        if q is not None and q.axis is not None:
            q = Quant(q.scale, q.zero_point, 1 - q.axis)
    if q is not None and q.axis not in (None, 0):
        raise e.unsupported(node, "per-channel weight quantisation not along the outputs")
    chw = e.fc_columns.get(node.inputs[0])
    if chw is not None:  # the input arrives NHWC-flattened: reorder the columns to match
        data = data.reshape(data.shape[0], *chw).transpose(0, 2, 3, 1).reshape(data.shape)
    w = e.const(node.inputs[1], data, bt.dtype, q)
    bias = -1
    if len(node.inputs) > 2:
        ct = g.tensors[node.inputs[2]]
        if not ct.is_const or ct.size != data.shape[0]:
            raise e.unsupported(node, "C must be a constant bias of one value per output")
        bias = e.const(node.inputs[2], _data(ct).reshape(-1), ct.dtype, ct.quant)
    o = S.FullyConnectedOptionsT(fusedActivationFunction=fused(e, node), keepNumDims=False)
    e.w.op(B.FULLY_CONNECTED, [e.get(node.inputs[0], "same"), w, bias], [e.out(node, "same")],
           S.BuiltinOptions.FullyConnectedOptions, o)


_BINARY = {Op.ADD: (B.ADD, S.BuiltinOptions.AddOptions, S.AddOptionsT),
           Op.SUB: (B.SUB, S.BuiltinOptions.SubOptions, S.SubOptionsT),
           Op.MUL: (B.MUL, S.BuiltinOptions.MulOptions, S.MulOptionsT)}


def _binary(e: Emitter, node: Node) -> None:
    code, otype, ocls = _BINARY[node.op]
    layout = elementwise_layout(e, node)
    rank = len(e.g.tensors[node.outputs[0]].shape)
    ins = [e.get(i, layout, rank) for i in node.inputs]
    o = ocls()
    o.fusedActivationFunction = fused(e, node)
    e.w.op(code, ins, [e.out(node, layout)], otype, o)


def _clip(e: Emitter, node: Node) -> None:
    lo, hi = float(node.attr_number("min")), float(node.attr_number("max"))
    code = {(0.0, 6.0): B.RELU6, (0.0, float("inf")): B.RELU,
            (-1.0, 1.0): B.RELU_N1_TO_1}.get((lo, hi))
    if code is None:
        raise e.unsupported(node, f"clip to [{lo}, {hi}]")
    unary(code)(e, node)


def _identity(e: Emitter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if e.g.tensors[x].quant != e.g.tensors[y].quant:
        raise e.unsupported(node, "requantising IDENTITY")
    layout = elementwise_layout(e, node)
    if y in e.g.outputs:
        e._reshape(e.get(x, layout), e.out(node, layout))
    else:
        e.alias(y, layout, e.get(x, layout))


def _softmax(e: Emitter, node: Node) -> None:
    rank = len(e.g.tensors[node.inputs[0]].shape)
    axis = node.attr_int("axis")
    if rank == 4 and axis == 1:
        layout = "nhwc"
    elif axis == rank - 1:
        layout = "same"
    else:
        raise e.unsupported(node, f"softmax over axis {axis} of a {rank}-D tensor")
    e.w.op(B.SOFTMAX, [e.get(node.inputs[0], layout)], [e.out(node, layout)],
           S.BuiltinOptions.SoftmaxOptions, S.SoftmaxOptionsT(beta=1.0))


def _reduce_mean(e: Emitter, node: Node) -> None:
    x = node.inputs[0]
    rank = len(e.g.tensors[x].shape)
    axes, keep = list(node.attr_ints("axes")), node.attr_bool("keepdims")
    layout = e.layout.get(x, "same") if rank == 4 else "same"
    if layout == "nhwc":
        new_axes = sorted(TO_NHWC.index(a) for a in axes)
        remaining = [TO_NHWC[i] for i in range(4) if i not in new_axes]
        if not keep and remaining != sorted(remaining):
            layout = "same"
        else:
            axes = new_axes
    o = S.ReducerOptionsT(keepDims=keep)
    e.w.op(B.MEAN, [e.get(x, layout), e.int32(f"{node.name}@axes", axes)],
           [e.out(node, layout if keep else "same")], S.BuiltinOptions.ReducerOptions, o)


def _check_same_quant(e: Emitter, node: Node) -> None:
    if e.g.tensors[node.inputs[0]].quant != e.g.tensors[node.outputs[0]].quant:
        raise e.unsupported(node, "requantising data movement (different in/out Quant)")


def _transpose(e: Emitter, node: Node) -> None:
    _check_same_quant(e, node)
    x, y = node.inputs[0], node.outputs[0]
    perm = node.attr_ints("perm")
    lx = e.layout.get(x, "same") if not e.g.tensors[x].is_const else "same"
    ly = e.prefer[y] if len(e.g.tensors[y].shape) == 4 and y not in e.g.outputs else "same"
    px = TO_NHWC if lx == "nhwc" else tuple(range(len(perm)))
    py = TO_NHWC if ly == "nhwc" else tuple(range(len(perm)))
    # emitted y axis i = ir y axis py[i] = ir x axis perm[py[i]] = emitted x axis px^-1(...)
    q = tuple(px.index(perm[py[i]]) for i in range(len(perm)))
    src = e.get(x, lx)
    if q == tuple(range(len(q))) and y not in e.g.outputs:
        e.alias(y, ly, src)
        return
    dst = e.out(node, ly)
    if _trivial(e.w.shape(src), q):
        e._reshape(src, dst)
    else:
        e.w.op(B.TRANSPOSE, [src, e.int32(f"{node.name}@perm", q)], [dst],
               S.BuiltinOptions.TransposeOptions, S.TransposeOptionsT())


def _memory_layout(e: Emitter, name: str) -> str:
    """A layout in which the emitted tensor has the IR's memory order, preferring the
    tensor's own (nhwc counts when only size-1 axes move)."""
    t = e.g.tensors[name]
    own = e.layout.get(name, "same") if not t.is_const else "same"
    if own == "nhwc" and not _trivial(t.shape, TO_NHWC):
        return "same"
    return own


def _reshape(e: Emitter, node: Node) -> None:
    _check_same_quant(e, node)
    x, y = node.inputs[0], node.outputs[0]
    xt, yt = e.g.tensors[x], e.g.tensors[y]
    if e.layout.get(x) == "nhwc" and not _trivial(xt.shape, TO_NHWC) and y not in e.g.outputs \
            and yt.shape == (xt.shape[0], int(np.prod(xt.shape[1:]))) and _flattens_into_fc(e, y):
        # NCHW flatten of an NHWC tensor: the FC reads the NHWC bytes, its weight columns are
        # permuted instead (no TRANSPOSE op).
        e.alias(y, "same", e.get(x, "nhwc"))
        e.fc_columns[y] = tuple(xt.shape[1:])
        return
    src = e.get(x, _memory_layout(e, x))
    ly = "nhwc" if (len(yt.shape) == 4 and e.prefer[y] == "nhwc"
                    and _trivial(yt.shape, TO_NHWC)) else "same"
    if y in e.g.outputs:
        ly = "same"
    if (e._emitted_shape(y, ly) == e.w.shape(src) or _flattens_into_fc(e, y)) \
            and y not in e.g.outputs:
        e.alias(y, ly, src)
        return
    e._reshape(src, e.out(node, ly))


def _flattens_into_fc(e: Emitter, y: str) -> bool:
    """``y`` (a RESHAPE output in the IR's memory order) is read only as the activation of
    fully-connected layers: TFLite's FULLY_CONNECTED flattens its input itself (batches =
    size / depth), so the RESHAPE needs no op (one op, one tensor and a shape constant less
    than TFLite's converter, which keeps Keras' Flatten)."""
    readers = e.readers.get(y, ())
    return len(e.g.tensors[y].shape) == 2 and bool(readers) and all(
        r.op in (Op.GEMM, Op.MATMUL) and r.inputs[0] == y and y not in r.inputs[1:]
        for r in readers)


def _pad(e: Emitter, node: Node) -> None:
    if node.attr_str("mode") != "constant":
        raise e.unsupported(node, f"{node.attr_str('mode')} padding")
    xt = e.g.tensors[node.inputs[0]]
    layout = elementwise_layout(e, node)
    pads = list(node.attr_pairs("pads"))
    if layout == "nhwc":
        pads = [pads[p] for p in TO_NHWC]
    x = e.get(node.inputs[0], layout)
    pad_op(e, x, e.out(node, layout), pads, node.attr_number("value"), xt.dtype, xt.quant,
           node.name)


def _concat(e: Emitter, node: Node) -> None:
    layout = elementwise_layout(e, node)
    rank = len(e.g.tensors[node.outputs[0]].shape)
    axis = node.attr_int("axis")
    if layout == "nhwc":
        axis = TO_NHWC.index(axis)
    o = S.ConcatenationOptionsT(axis=axis, fusedActivationFunction=fused(e, node))
    e.w.op(B.CONCATENATION, [e.get(i, layout, rank) for i in node.inputs],
           [e.out(node, layout)], S.BuiltinOptions.ConcatenationOptions, o)


HANDLERS: dict[Op, Handler] = {**OP_HANDLERS,
    Op.CONV: _conv, Op.AVG_POOL: _pool, Op.MAX_POOL: _pool, Op.GEMM: _gemm, Op.MATMUL: _matmul,
    Op.ADD: _binary, Op.SUB: _binary, Op.MUL: _binary, Op.RELU: unary(B.RELU),
    Op.CLIP: _clip, Op.QUANTIZE: unary(B.QUANTIZE), Op.DEQUANTIZE: unary(B.DEQUANTIZE),
    Op.IDENTITY: _identity, Op.SOFTMAX: _softmax, Op.REDUCE_MEAN: _reduce_mean,
    Op.TRANSPOSE: _transpose, Op.RESHAPE: _reshape, Op.PAD: _pad, Op.CONCAT: _concat,
}
