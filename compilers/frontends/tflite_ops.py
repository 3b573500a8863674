"""TFLite op converters: the table ``BuiltinOperator -> converter`` (``@converts``), and the
state they work on (``Builder``: the graph being built, with the layout of every tensor).

**Layout.** TFLite is NHWC; the IR's CONV and pools are NCHW (as ONNX imports are). Every
TFLite tensor can exist in the IR in two *forms*: ``"tf"`` (TFLite's own shape and memory
order, under the TFLite tensor's name) and, for rank-4 tensors, ``"nchw"`` (the same
values transposed by (0, 3, 1, 2), named ``<name>@nchw``). Converters ask for the form they
need and ``Builder.get`` makes it on demand, once per tensor: a TRANSPOSE node for an
activation (a RESHAPE when only size-1 axes move, as for ``[1, 1, 1, C]``), transposed data
for a constant. So:

* CONV_2D / DEPTHWISE_CONV_2D / pools read and write the ``nchw`` form; weights are
  re-laid-out at import (OHWI -> OIHW; depthwise 1HWC -> (C*M)1HW with ``group = C``); a
  computed (non-constant) weight gets a TRANSPOSE node;
* element-wise ops, activations, QUANTIZE/DEQUANTIZE/CAST, SOFTMAX, MEAN, CONCATENATION
  and PAD work in whichever form their input already has (axes, paddings and broadcast
  constants are permuted to match) and produce that form;
* RESHAPE/SQUEEZE/EXPAND_DIMS, FULLY_CONNECTED and TRANSPOSE depend on TFLite's memory
  order and read the ``tf`` form (or an ``nchw`` form whose memory order is the same);
* graph inputs and outputs are always in the ``tf`` form: the compiled model keeps the
  TFLite model's interface, with TRANSPOSEs at the boundary of the NCHW body.

Per-channel quantisation follows the data: a ``Quant.axis`` is permuted with its tensor.

**Quantised and hybrid models.** int8/uint8 tensors keep their ``Quant``; biases stay int32
(``compilers.int8`` runs such nodes with TFLite's integer arithmetic). A *hybrid* op (float
activations, int8 weights: dynamic-range quantisation, e.g. ``kws_ref_model_float32``) is
imported as a float op whose int8 weight constant goes through a DEQUANTIZE node: the IR
computes it in float with dequantised weights. LiteRT instead quantises the activations on
the fly, so the two differ by about the int8 activation resolution (~1e-2 relative on that
model); TFLM refuses hybrid models outright. float16 weights with TFLite's DEQUANTIZE
become CAST nodes.

What it does not do: (each an ``UnsupportedOp``) control flow, stateful ops and variables
(LSTM/RNN/SVDF cells, READ_VARIABLE...), custom ops, shuffled FC weights, sparse tensors,
SOFTMAX with beta != 1 on quantised tensors, TANH/SIGN_BIT fused activations where the
IR has none, and every builtin op without a converter here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S

from ..errors import ModelFormatError, UnsupportedDType, UnsupportedOp
from ..ir import DType, Node, Op, Quant, Tensor, fresh_name

BUILTIN_NAMES: dict[int, str] = {v: k for k, v in vars(S.BuiltinOperator).items()
                                 if not k.startswith("_")}
TENSOR_TYPES: dict[int, str] = {v: k for k, v in vars(S.TensorType).items()
                                if not k.startswith("_")}
_DTYPES = {
    S.TensorType.FLOAT32: DType.FLOAT32, S.TensorType.FLOAT16: DType.FLOAT16,
    S.TensorType.FLOAT64: DType.FLOAT64, S.TensorType.INT8: DType.INT8,
    S.TensorType.UINT8: DType.UINT8, S.TensorType.INT16: DType.INT16,
    S.TensorType.UINT16: DType.UINT16, S.TensorType.INT32: DType.INT32,
    S.TensorType.UINT32: DType.UINT32, S.TensorType.INT64: DType.INT64,
    S.TensorType.UINT64: DType.UINT64, S.TensorType.BOOL: DType.BOOL,
}
_FUSED = {S.ActivationFunctionType.NONE: "none", S.ActivationFunctionType.RELU: "relu",
          S.ActivationFunctionType.RELU6: "relu6",
          S.ActivationFunctionType.RELU_N1_TO_1: "relu_n1_to_1",
          S.ActivationFunctionType.TANH: "tanh"}

TF_TO_NCHW = (0, 3, 1, 2)   # nchw[i] = tf[TF_TO_NCHW[i]]
NCHW_TO_TF = (0, 2, 3, 1)


def dtype_of(code: int, what: str) -> DType:
    try:
        return _DTYPES[code]
    except KeyError:
        raise UnsupportedDType(f"{what}: element type {TENSOR_TYPES.get(code, code)} is not "
                               f"supported") from None


def _permute_quant(q: Quant | None, perm: Sequence[int]) -> Quant | None:
    if q is None or q.axis is None:
        return q
    return Quant(q.scale, q.zero_point, list(perm).index(q.axis))


@dataclass
class Builder:
    """The graph under construction, and the forms of every TFLite tensor."""

    model: S.ModelT
    sg: S.SubGraphT
    raw: bytes
    names: list[str]                                   # unique IR name per TFLite tensor
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    forms: dict[int, dict[str, str]] = field(default_factory=dict)
    _const: dict[int, np.ndarray | None] = field(default_factory=dict)

    # ---- TFLite tensors -------------------------------------------------------------------
    def tfl(self, i: int) -> S.TensorT:
        return self.sg.tensors[i]

    def shape(self, i: int) -> tuple[int, ...]:
        t = self.tfl(i)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        if any(d < 0 for d in shape):
            raise ModelFormatError(f"tensor {self.names[i]!r} has a dynamic shape {shape}")
        return shape

    def dtype(self, i: int) -> DType:
        return dtype_of(self.tfl(i).type, f"tensor {self.names[i]!r}")

    def quant(self, i: int) -> Quant | None:
        """The tensor's quantisation in TFLite's layout, or None."""
        q = self.tfl(i).quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        if q.details is not None and q.detailsType:
            raise UnsupportedDType(f"tensor {self.names[i]!r}: custom quantisation details")
        scale = [float(s) for s in q.scale]
        zp = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0])]
        if len(zp) == 1 and len(scale) > 1:
            zp = zp * len(scale)
        if len(scale) == 1:
            return Quant(tuple(scale), tuple(zp[:1]))
        axis = int(q.quantizedDimension)
        shape = self.shape(i)
        if not 0 <= axis < len(shape) or shape[axis] != len(scale):
            if len(shape) == 1 and shape[0] == len(scale):
                axis = 0   # old converters wrote the filter's axis (3) on 1-D biases
            else:
                raise ModelFormatError(f"tensor {self.names[i]!r}: {len(scale)} scales on "
                                       f"axis {axis} of shape {shape}")
        return Quant(tuple(scale), tuple(zp), axis)

    def const(self, i: int) -> np.ndarray | None:
        """The constant data of a TFLite tensor in its own layout, or None."""
        if i in self._const:
            return self._const[i]
        t = self.tfl(i)
        data = None
        if t.buffer and t.buffer < len(self.model.buffers):
            buf = self.model.buffers[t.buffer]
            if buf.offset and buf.offset > 1:
                raw = self.raw[buf.offset:buf.offset + buf.size]
                if len(raw) != buf.size:
                    raise ModelFormatError(f"tensor {self.names[i]!r}: buffer past the end "
                                           f"of the file (truncated?)")
            else:
                raw = bytes(buf.data.tobytes()) if buf.data is not None else b""
            if raw:
                dtype = self.dtype(i).numpy.newbyteorder("<")
                shape = self.shape(i)
                need = math.prod(shape) * dtype.itemsize
                if len(raw) != need:
                    raise ModelFormatError(f"tensor {self.names[i]!r}: buffer of {len(raw)} "
                                           f"bytes for shape {shape} {dtype} ({need} bytes)")
                data = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        self._const[i] = data
        return data

    def is_const(self, i: int) -> bool:
        return self.const(i) is not None

    def set_const(self, i: int, value: np.ndarray) -> None:
        """Tensor ``i`` is a constant computed at import (``tflite_fold``)."""
        self._const[i] = value

    # ---- IR tensors and nodes ---------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A new IR tensor name (callers add the tensor at once, which takes the name)."""
        return fresh_name(base, self.tensors, self.names, sep="__", always=True)

    def add(self, t: Tensor) -> str:
        self.tensors[t.name] = t
        return t.name

    def node(self, op: Op, inputs: Sequence[str], outputs: Sequence[str], name: str,
             **attrs: object) -> None:
        self.nodes.append(Node.make(op, inputs, outputs, name=name, **attrs))

    def like(self, name: str, src: str, shape: Sequence[int] | None = None,
             quant: Quant | None | bool = True) -> str:
        """A new activation tensor ``name`` typed like ``src`` (another shape, the same or
        another quantisation)."""
        t = self.tensors[src]
        q = t.quant if quant is True else (None if quant is False else quant)
        return self.add(Tensor(name, tuple(shape) if shape is not None else t.shape, t.dtype, q))

    # ---- forms ----------------------------------------------------------------------------
    def form_name(self, i: int, layout: str) -> str:
        return self.names[i] if layout == "tf" else f"{self.names[i]}@{layout}"

    def define(self, i: int, layout: str = "tf") -> str:
        """Create the IR tensor of TFLite tensor ``i`` in ``layout`` (as a node's output)."""
        shape, q = self.shape(i), self.quant(i)
        if layout == "nchw":
            if len(shape) != 4:
                raise ModelFormatError(f"tensor {self.names[i]!r}: NCHW form of rank {len(shape)}")
            shape = tuple(shape[p] for p in TF_TO_NCHW)
            q = _permute_quant(q, TF_TO_NCHW)
        name = self.form_name(i, layout)
        self.add(Tensor(name, shape, self.dtype(i), q))
        self.forms.setdefault(i, {})[layout] = name
        return name

    def home(self, i: int) -> str:
        """The layout an activation currently has ("nchw" preferred when both exist)."""
        f = self.forms.get(i, {})
        return "nchw" if "nchw" in f else "tf"

    def has(self, i: int, layout: str) -> bool:
        return layout in self.forms.get(i, {})

    def get(self, i: int, layout: str = "tf") -> str:
        """The IR name of TFLite tensor ``i`` in ``layout``, converting on first use."""
        f = self.forms.setdefault(i, {})
        if layout in f:
            return f[layout]
        data = self.const(i)
        name = self.form_name(i, layout)
        if data is not None:
            q = self.quant(i)
            if layout == "nchw":
                if data.ndim != 4:
                    raise ModelFormatError(f"constant {self.names[i]!r} of rank {data.ndim} "
                                           f"asked for in NCHW")
                data, q = data.transpose(TF_TO_NCHW), _permute_quant(q, TF_TO_NCHW)
            self.add(Tensor.const(name, data, q))
            f[layout] = name
            return name
        if not f:
            raise ModelFormatError(f"tensor {self.names[i]!r} is read before it is written "
                                   f"(operators out of order?)")
        src_layout, src = next(iter(f.items()))
        perm = TF_TO_NCHW if layout == "nchw" else NCHW_TO_TF
        self.define(i, layout)
        self._relayout(src, name, perm, f"layout {self.names[i]} {src_layout}->{layout}")
        return name

    def _relayout(self, src: str, dst: str, perm: Sequence[int], label: str) -> None:
        shape = self.tensors[src].shape
        moved = [shape[p] for p in perm if shape[p] != 1]
        kept = [d for d in shape if d != 1]
        if moved == kept:   # only size-1 axes move: the memory order is unchanged
            self.node(Op.RESHAPE, [src], [dst], label, shape=self.tensors[dst].shape)
        else:
            self.node(Op.TRANSPOSE, [src], [dst], label, perm=tuple(perm))

    def flat(self, i: int) -> str:
        """A name whose memory order is TFLite's: the tf form, or an nchw form in which only
        size-1 axes differ (for ops that read memory order: RESHAPE, FULLY_CONNECTED)."""
        f = self.forms.get(i, {})
        if "tf" in f or self.is_const(i):
            return self.get(i, "tf")
        if "nchw" in f:
            n, c, h, w = self.tensors[f["nchw"]].shape
            if c == 1 or h * w == 1:
                return f["nchw"]
        return self.get(i, "tf")

    def const_in(self, i: int, layout: str, rank: int) -> str:
        """A constant for broadcasting against a rank-``rank`` operand in ``layout``:
        left-padded with 1s to ``rank`` and, for nchw, transposed."""
        data = self.const(i)
        assert data is not None
        if layout == "tf" or data.ndim == 0:
            return self.get(i, "tf")
        if data.ndim == 4:
            return self.get(i, "nchw")
        q = self.quant(i)
        lead = rank - data.ndim
        expanded = data.reshape((1,) * lead + data.shape)
        if q is not None and q.axis is not None:
            q = Quant(q.scale, q.zero_point, q.axis + lead)
        name = f"{self.names[i]}@nchw{rank}"
        if name not in self.tensors:
            self.add(Tensor.const(name, expanded.transpose(TF_TO_NCHW),
                                  _permute_quant(q, TF_TO_NCHW)))
        return name


# ---- converters ------------------------------------------------------------------------------
@dataclass
class OpCtx:
    """One TFLite operator under conversion."""

    b: Builder
    index: int
    op: S.OperatorT
    op_name: str
    version: int

    @property
    def label(self) -> str:
        return f"{self.op_name}#{self.index}"

    @property
    def options(self):  # type: ignore[no-untyped-def]
        return self.op.builtinOptions

    def inputs(self) -> list[int]:
        return [int(i) for i in (self.op.inputs if self.op.inputs is not None else [])]

    def outputs(self) -> list[int]:
        return [int(i) for i in (self.op.outputs if self.op.outputs is not None else [])]

    def input(self, k: int) -> int:
        ins = self.inputs()
        if k >= len(ins) or ins[k] < 0:
            raise self.unsupported(f"input {k} is missing")
        return ins[k]

    def opt_input(self, k: int) -> int | None:
        ins = self.inputs()
        return ins[k] if k < len(ins) and ins[k] >= 0 else None

    def output(self, k: int = 0) -> int:
        return self.outputs()[k]

    def unsupported(self, detail: str) -> UnsupportedOp:
        return unsupported(self.op_name, self.version, self.index, detail)

    def need_const(self, k: int, what: str) -> np.ndarray:
        data = self.b.const(self.input(k))
        if data is None:
            raise self.unsupported(f"{what} (input {k}) must be a constant")
        return data

    def fused(self) -> str:
        code = int(getattr(self.options, "fusedActivationFunction", None) or 0)
        if code not in _FUSED:
            raise self.unsupported(f"fused activation {code}")
        return _FUSED[code]

    def emit(self, op: Op, inputs: Sequence[str], outputs: Sequence[str], *, suffix: str = "",
             **attrs: object) -> None:
        self.b.node(op, inputs, outputs, self.label + suffix, **attrs)


def unsupported(op_name: str, version: int, index: int, detail: str) -> UnsupportedOp:
    e = UnsupportedOp(op_name, None, f"operator {index}", f"version {version}: {detail}")
    e.version = version  # type: ignore[attr-defined]
    e.index = index      # type: ignore[attr-defined]
    return e


Converter = Callable[[OpCtx], None]
CONVERTERS: dict[int, Converter] = {}


def converts(*codes: int) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for c in codes:
            CONVERTERS[c] = fn
        return fn
    return register


B = S.BuiltinOperator


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TFLite SAME: output ceil(size / s), the odd pad at the end."""
    out = (size + s - 1) // s
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    return total // 2, total - total // 2


def _window(ctx: OpCtx, spatial: Sequence[int], kernel: Sequence[int]
            ) -> tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], ...]]:
    o = ctx.options
    strides = (int(o.strideH), int(o.strideW))
    dil = (int(getattr(o, "dilationHFactor", None) or 1),
           int(getattr(o, "dilationWFactor", None) or 1))
    if min(strides) < 1 or min(dil) < 1:
        raise ModelFormatError(f"{ctx.label}: strides {strides} and dilations {dil} must be 1 or more")
    if o.padding == S.Padding.VALID:
        pads: tuple[tuple[int, int], ...] = ((0, 0), (0, 0))
    elif o.padding == S.Padding.SAME:
        pads = tuple(_same_pads(n, k, s, d) for n, k, s, d in zip(spatial, kernel, strides, dil, strict=True))
    else:
        raise ctx.unsupported(f"padding {o.padding}")
    return strides, dil, pads


def _weight(ctx: OpCtx, i: int, perm: Sequence[int], suffix: str, dequantize: bool) -> str:
    """A conv weight re-laid-out by ``perm``: transposed data for a constant (a DEQUANTIZE
    node after it for hybrid ops), a TRANSPOSE node otherwise."""
    b = ctx.b
    data = b.const(i)
    if data is not None:
        name = f"{b.names[i]}@{suffix}"
        if name not in b.tensors:
            b.add(Tensor.const(name, data.transpose(perm), _permute_quant(b.quant(i), perm)))
        if not dequantize:
            return name
        fname = f"{name}@float"
        if fname not in b.tensors:
            b.add(Tensor(fname, b.tensors[name].shape, DType.FLOAT32))
            ctx.emit(Op.DEQUANTIZE, [name], [fname], suffix="/dequantize_weight")
        return fname
    src = b.get(i, "tf")
    t = b.tensors[src]
    name = b.fresh(f"{b.names[i]}@{suffix}")
    b.add(Tensor(name, tuple(t.shape[p] for p in perm), t.dtype, _permute_quant(t.quant, perm)))
    ctx.emit(Op.TRANSPOSE, [src], [name], suffix="/weight_layout", perm=tuple(perm))
    return name


def _hybrid(ctx: OpCtx, x: int, w: int) -> bool:
    """Float activations with integer weights (dynamic-range quantisation)."""
    b = ctx.b
    if b.dtype(x).is_float and b.dtype(w) in (DType.INT8, DType.UINT8):
        if b.quant(w) is None:
            raise ctx.unsupported("integer weights without quantisation parameters")
        return True
    return False


def _bias(ctx: OpCtx, k: int) -> list[str]:
    i = ctx.opt_input(k)
    return [] if i is None else [ctx.b.get(i, "tf")]


@converts(B.CONV_2D)
def _conv2d(ctx: OpCtx) -> None:
    b = ctx.b
    x, w = ctx.input(0), ctx.input(1)
    xs, ws = b.shape(x), b.shape(w)
    if len(xs) != 4 or len(ws) != 4:
        raise ctx.unsupported(f"input {xs} / filter {ws} are not 4-D")
    if xs[3] % ws[3]:
        raise ctx.unsupported(f"{xs[3]} input channels, filter {ws}")
    strides, dil, pads = _window(ctx, xs[1:3], ws[1:3])
    weight = _weight(ctx, w, TF_TO_NCHW, "oihw", _hybrid(ctx, x, w))
    y = b.define(ctx.output(), "nchw")
    ctx.emit(Op.CONV, [b.get(x, "nchw"), weight] + _bias(ctx, 2), [y], strides=strides,
             dilations=dil, pads=pads, group=xs[3] // ws[3], fused=ctx.fused())


@converts(B.DEPTHWISE_CONV_2D)
def _depthwise(ctx: OpCtx) -> None:
    b = ctx.b
    x, w = ctx.input(0), ctx.input(1)
    xs, ws = b.shape(x), b.shape(w)
    if len(xs) != 4 or len(ws) != 4 or ws[0] != 1 or ws[3] % xs[3]:
        raise ctx.unsupported(f"input {xs} / depthwise filter {ws} do not fit")
    strides, dil, pads = _window(ctx, xs[1:3], ws[1:3])
    # (1, KH, KW, C*M) -> (C*M, 1, KH, KW): output channel c*M + m reads input channel c,
    # which is CONV's grouping with group = C.
    weight = _weight(ctx, w, (3, 0, 1, 2), "c1hw", _hybrid(ctx, x, w))
    y = b.define(ctx.output(), "nchw")
    ctx.emit(Op.CONV, [b.get(x, "nchw"), weight] + _bias(ctx, 2), [y], strides=strides,
             dilations=dil, pads=pads, group=xs[3], fused=ctx.fused())


@converts(B.FULLY_CONNECTED)
def _fully_connected(ctx: OpCtx) -> None:
    b = ctx.b
    o = ctx.options
    if o is not None and getattr(o, "weightsFormat", None):
        raise ctx.unsupported("shuffled weights format")
    x, w = ctx.input(0), ctx.input(1)
    xs, ws = b.shape(x), b.shape(w)
    if len(ws) != 2 or not xs or ws[1] < 1 or math.prod(xs) % ws[1]:
        raise ctx.unsupported(f"input {xs} does not fit weights {ws}")
    m, k = math.prod(xs) // ws[1], ws[1]
    a = b.flat(x)
    if b.tensors[a].shape != (m, k):
        flat = b.like(b.fresh(f"{b.names[x]}@2d"), a, (m, k))
        ctx.emit(Op.RESHAPE, [a], [flat], suffix="/flatten", shape=(m, k))
        a = flat
    if b.is_const(w):
        weight = b.get(w, "tf")
        if _hybrid(ctx, x, w):
            fw = f"{weight}@float"
            if fw not in b.tensors:
                b.add(Tensor(fw, ws, DType.FLOAT32))
                ctx.emit(Op.DEQUANTIZE, [weight], [fw], suffix="/dequantize_weight")
            weight = fw
    else:
        weight = b.get(w, "tf")
    out = ctx.output()
    target = b.shape(out)
    if target == (m, ws[0]):
        y = b.define(out, "tf")
    else:
        y = b.fresh(f"{b.names[out]}@2d")
        b.add(Tensor(y, (m, ws[0]), b.dtype(out), b.quant(out)))
    ctx.emit(Op.GEMM, [a, weight] + _bias(ctx, 2), [y], alpha=1.0, beta=1.0, trans_a=False,
             trans_b=True, fused=ctx.fused())
    if y != b.names[out]:
        ctx.emit(Op.RESHAPE, [y], [b.define(out, "tf")], suffix="/reshape", shape=target)


def _layout_for(ctx: OpCtx, ins: Sequence[int], rank: int) -> str:
    """nchw when the output is 4-D, some activation input already is nchw, and every
    activation input is 4-D (constants are re-laid-out to match); else tf."""
    b = ctx.b
    acts = [i for i in ins if not b.is_const(i)]
    if rank != 4 or not acts or any(len(b.shape(i)) != 4 for i in acts):
        return "tf"
    return "nchw" if any(b.home(i) == "nchw" for i in acts) else "tf"


def _operands(ctx: OpCtx, ins: Sequence[int], layout: str, rank: int) -> list[str]:
    b = ctx.b
    return [b.const_in(i, layout, rank) if b.is_const(i) else b.get(i, layout) for i in ins]


_BINARY = {B.ADD: Op.ADD, B.SUB: Op.SUB, B.MUL: Op.MUL, B.DIV: Op.DIV}


@converts(*_BINARY)
def _binary(ctx: OpCtx) -> None:
    code = ctx.b.model.operatorCodes[ctx.op.opcodeIndex]
    op = _BINARY[max(code.builtinCode, code.deprecatedBuiltinCode)]
    ins = [ctx.input(0), ctx.input(1)]
    out = ctx.output()
    layout = _layout_for(ctx, ins, len(ctx.b.shape(out)))
    fused = ctx.fused() if ctx.options is not None else "none"
    ctx.emit(op, _operands(ctx, ins, layout, 4), [ctx.b.define(out, layout)], fused=fused)


@converts(B.PRELU)
def _prelu(ctx: OpCtx) -> None:
    ins = [ctx.input(0), ctx.input(1)]
    out = ctx.output()
    layout = _layout_for(ctx, ins, len(ctx.b.shape(out)))
    ctx.emit(Op.PRELU, _operands(ctx, ins, layout, 4), [ctx.b.define(out, layout)])


def _unary(ctx: OpCtx, op: Op, suffix: str = "", **attrs: object) -> None:
    b = ctx.b
    x = ctx.input(0)
    layout = b.home(x) if not b.is_const(x) else "tf"
    src = b.get(x, layout)
    ctx.b.node(op, [src], [b.define(ctx.output(), layout)], ctx.label + suffix, **attrs)


@converts(B.RELU)
def _relu(ctx: OpCtx) -> None:
    _unary(ctx, Op.RELU)


@converts(B.RELU6)
def _relu6(ctx: OpCtx) -> None:
    _unary(ctx, Op.CLIP, min=0.0, max=6.0)


@converts(B.RELU_N1_TO_1)
def _relu_n1_to_1(ctx: OpCtx) -> None:
    _unary(ctx, Op.CLIP, min=-1.0, max=1.0)


@converts(B.LEAKY_RELU)
def _leaky_relu(ctx: OpCtx) -> None:
    _unary(ctx, Op.LEAKY_RELU, alpha=float(np.float32(ctx.options.alpha)))


@converts(B.LOGISTIC)
def _logistic(ctx: OpCtx) -> None:
    _unary(ctx, Op.SIGMOID)


@converts(B.TANH)
def _tanh(ctx: OpCtx) -> None:
    _unary(ctx, Op.TANH)


@converts(B.HARD_SWISH)
def _hard_swish(ctx: OpCtx) -> None:
    _unary(ctx, Op.HARD_SWISH)


@converts(B.CAST)
def _cast(ctx: OpCtx) -> None:
    _unary(ctx, Op.CAST, to=ctx.b.dtype(ctx.output()))


@converts(B.QUANTIZE)
def _quantize(ctx: OpCtx) -> None:
    b = ctx.b
    x, y = ctx.input(0), ctx.output()
    if b.quant(y) is None:
        raise ctx.unsupported("output without quantisation parameters")
    if b.dtype(x).is_float:
        _unary(ctx, Op.QUANTIZE, rounding="half_away")  # TFLite rounds half away from zero
    elif b.quant(x) is not None:
        _unary(ctx, Op.IDENTITY, "/requantize")  # integer kernel: TFLite's Requantize
    else:
        raise ctx.unsupported(f"quantising a {b.dtype(x).value} tensor without quantisation")


@converts(B.DEQUANTIZE)
def _dequantize(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    if b.dtype(x).is_float:      # float16 weights: TFLite's DEQUANTIZE is a cast
        _unary(ctx, Op.CAST, to=b.dtype(ctx.output()))
    elif b.quant(x) is None:
        raise ctx.unsupported("input without quantisation parameters")
    else:
        _unary(ctx, Op.DEQUANTIZE)


@converts(B.SOFTMAX)
def _softmax(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    beta = float(ctx.options.beta) if ctx.options is not None else 1.0
    layout = b.home(x)
    src = b.get(x, layout)
    rank = len(b.shape(x))
    axis = 1 if layout == "nchw" else rank - 1
    if beta != 1.0:
        if b.quant(x) is not None:
            raise ctx.unsupported(f"beta={beta} on a quantised tensor")
        scaled = b.like(b.fresh(f"{b.names[x]}@beta"), src)
        k = b.add(Tensor.const(b.fresh("beta"), np.asarray(beta, b.tensors[src].dtype.numpy)))
        ctx.emit(Op.MUL, [src, k], [scaled], suffix="/beta")
        src = scaled
    ctx.emit(Op.SOFTMAX, [src], [b.define(ctx.output(), layout)], axis=axis)


def _pool(ctx: OpCtx, op: Op) -> None:
    b = ctx.b
    x = ctx.input(0)
    xs = b.shape(x)
    if len(xs) != 4:
        raise ctx.unsupported(f"input {xs} is not 4-D")
    o = ctx.options
    kernel = (int(o.filterHeight), int(o.filterWidth))
    strides, dil, pads = _window(ctx, xs[1:3], kernel)
    extra = {"count_include_pad": False} if op is Op.AVG_POOL else {}  # TFLite never counts pads
    b.node(op, [b.get(x, "nchw")], [b.define(ctx.output(), "nchw")], ctx.label, kernel=kernel,
           strides=strides, dilations=dil, pads=pads, ceil_mode=False, fused=ctx.fused(),
           **extra)


@converts(B.AVERAGE_POOL_2D)
def _avg_pool(ctx: OpCtx) -> None:
    _pool(ctx, Op.AVG_POOL)


@converts(B.MAX_POOL_2D)
def _max_pool(ctx: OpCtx) -> None:
    _pool(ctx, Op.MAX_POOL)


@converts(B.MEAN)
def _mean(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    rank = len(b.shape(x))
    axes = sorted({int(a) % rank for a in ctx.need_const(1, "axes").reshape(-1)})
    keep = bool(ctx.options.keepDims) if ctx.options is not None else False
    layout = b.home(x) if rank == 4 and not b.is_const(x) else "tf"
    if layout == "nchw":
        new_axes = sorted(TF_TO_NCHW.index(a) for a in axes)
        remaining = [TF_TO_NCHW[i] for i in range(4) if i not in new_axes]
        if not keep and remaining != sorted(remaining):
            layout = "tf"   # the kept axes would come out in another order
        else:
            axes = new_axes
    out_layout = layout if keep else "tf"
    y = b.define(ctx.output(), out_layout)
    ctx.emit(Op.REDUCE_MEAN, [b.get(x, layout)], [y], axes=tuple(axes), keepdims=keep)


def _reshape_like_output(ctx: OpCtx) -> None:
    b = ctx.b
    x, out = ctx.input(0), ctx.output()
    ctx.emit(Op.RESHAPE, [b.flat(x)], [b.define(out, "tf")], shape=b.shape(out))


@converts(B.RESHAPE, B.SQUEEZE, B.EXPAND_DIMS)
def _reshape(ctx: OpCtx) -> None:
    _reshape_like_output(ctx)


@converts(B.TRANSPOSE)
def _transpose(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    rank = len(b.shape(x))
    perm = tuple(int(p) % rank for p in ctx.need_const(1, "perm").reshape(-1))
    ctx.emit(Op.TRANSPOSE, [b.get(x, "tf")], [b.define(ctx.output(), "tf")], perm=perm)


@converts(B.CONCATENATION)
def _concat(ctx: OpCtx) -> None:
    b = ctx.b
    ins = ctx.inputs()
    out = ctx.output()
    rank = len(b.shape(out))
    axis = int(ctx.options.axis) % rank
    layout = _layout_for(ctx, ins, rank)
    if layout == "nchw" and any(b.is_const(i) and len(b.shape(i)) != 4 for i in ins):
        layout = "tf"
    if layout == "nchw":
        axis = TF_TO_NCHW.index(axis)
    ctx.emit(Op.CONCAT, _operands(ctx, ins, layout, rank), [b.define(out, layout)], axis=axis,
             fused=ctx.fused())


@converts(B.PAD, B.PADV2)
def _pad(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    rank = len(b.shape(x))
    pads = ctx.need_const(1, "paddings").reshape(rank, 2)
    q = b.quant(x)
    dtype = b.dtype(x)
    if ctx.opt_input(2) is not None:
        v = ctx.need_const(2, "constant value").reshape(-1)[0]
        value: int | float = int(v) if dtype.is_int else float(v)
    else:
        value = (q.zero_point[0] if q is not None else 0) if dtype.is_int else 0.0
    layout = b.home(x) if rank == 4 and not b.is_const(x) else "tf"
    pairs = [(int(p[0]), int(p[1])) for p in pads]
    if layout == "nchw":
        pairs = [pairs[p] for p in TF_TO_NCHW]
    ctx.emit(Op.PAD, [b.get(x, layout)], [b.define(ctx.output(), layout)], pads=tuple(pairs),
             mode="constant", value=value)


@converts(B.ARG_MAX)
def _arg_max(ctx: OpCtx) -> None:
    b = ctx.b
    x = ctx.input(0)
    rank = len(b.shape(x))
    axis = int(ctx.need_const(1, "axis").reshape(-1)[0]) % rank
    ctx.emit(Op.ARGMAX, [b.get(x, "tf")], [b.define(ctx.output(), "tf")], axis=axis,
             keepdims=False, select_last_index=False, to=b.dtype(ctx.output()))
