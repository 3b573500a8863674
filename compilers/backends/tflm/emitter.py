"""The TFLite Micro emitter's machinery: ``Emitter`` (one IR graph being written as a TFLite
subgraph: the emitted layout of every tensor, on-demand relayout, constants) and the small
helpers op emitters share.

What it does: ``Emitter(graph, handlers).emit()`` defines the graph inputs, calls the handler
of each node in order (``handlers``: op -> function, the tables of ``emit`` and ``emit_ops``)
and returns the ``ModelWriter`` with the graph outputs. Layout rules: see ``emit``'s
docstring (``"nhwc"`` or ``"same"`` per tensor; graph inputs and outputs keep their shapes:
channels-last image inputs are ``passes.input_layout``'s, before emission).

What it does not do: emit any op itself (``emit``, ``emit_ops``), serialise (``writer``).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S

from ...errors import CompilerError, UnsupportedOp
from ...ir import FUSABLE, DType, Graph, Node, Op, Quant, Tensor
from .writer import ModelWriter

B = S.BuiltinOperator
TO_NHWC = (0, 2, 3, 1)      # emitted[i] = ir[TO_NHWC[i]]
TO_NCHW = (0, 3, 1, 2)
_SPATIAL = (Op.CONV, Op.CONV_TRANSPOSE, Op.AVG_POOL, Op.MAX_POOL)
_ELEMENTWISE = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.RELU, Op.CLIP, Op.QUANTIZE, Op.DEQUANTIZE,
                Op.IDENTITY, Op.CONCAT, Op.PAD, Op.SIGMOID, Op.TANH, Op.HARD_SWISH,
                Op.LEAKY_RELU, Op.PRELU, Op.CAST)
_FUSED = {"none": S.ActivationFunctionType.NONE, "relu": S.ActivationFunctionType.RELU,
          "relu6": S.ActivationFunctionType.RELU6,
          "relu_n1_to_1": S.ActivationFunctionType.RELU_N1_TO_1,
          "tanh": S.ActivationFunctionType.TANH}


class BackendError(CompilerError):
    """The graph cannot be emitted as a TFLite flatbuffer (the message says why)."""




def _data(t: Tensor) -> np.ndarray:
    if t.data is None:
        raise BackendError(f"tensor {t.name!r} is not a constant")
    return t.data


def _perm(shape: Sequence[int], perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[p] for p in perm)


def _quant_nhwc(q: Quant | None) -> Quant | None:
    if q is None or q.axis is None:
        return q
    return Quant(q.scale, q.zero_point, TO_NHWC.index(q.axis))


def _trivial(shape: Sequence[int], perm: Sequence[int]) -> bool:
    """The permutation moves only size-1 axes (same memory order)."""
    return [a for a in perm if shape[a] != 1] == [a for a in range(len(shape)) if shape[a] != 1]


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    out = (size + s - 1) // s
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    return total // 2, total - total // 2


Handler = Callable[["Emitter", Node], None]


class Emitter:
    def __init__(self, graph: Graph, handlers: Mapping[Op, Handler]) -> None:
        self.g = graph
        self.handlers = handlers
        self.w = ModelWriter()
        self.readers = graph.consumers()
        self.fc_columns: dict[str, tuple[int, ...]] = {}  # NHWC-flattened FC inputs: (C, H, W)
        self.forms: dict[str, dict[str, int]] = {}
        self.layout: dict[str, str] = {}
        self.prefer = self._preferences()

    # ---- layout choice -----------------------------------------------------------------
    def _preferences(self) -> dict[str, str]:
        g = self.g
        pref = {n: "same" for n in g.tensors}
        four = {n for n, t in g.tensors.items() if len(t.shape) == 4 and not t.is_const}
        for node in g.nodes:
            if node.op in _SPATIAL:
                for n in (node.inputs[0], node.outputs[0]):
                    if n in four:
                        pref[n] = "nhwc"
            if node.op is Op.SOFTMAX and node.attr_int("axis") == 1 and node.outputs[0] in four:
                pref[node.inputs[0]] = pref[node.outputs[0]] = "nhwc"
        changed = True
        while changed:
            changed = False
            for node in g.nodes:
                if node.op not in _ELEMENTWISE:
                    continue
                group = [n for n in (*node.inputs, *node.outputs) if n in four]
                if node.outputs[0] not in four:
                    continue
                if any(pref[n] == "nhwc" for n in group):
                    for n in group:
                        if pref[n] != "nhwc":
                            pref[n], changed = "nhwc", True
        for n in g.inputs:   # the interface keeps its declared shapes
            if pref[n] == "nhwc":
                pref[n] = "same"
        return pref

    # ---- tensors -----------------------------------------------------------------------
    def _emitted_shape(self, name: str, layout: str) -> tuple[int, ...]:
        shape = self.g.tensors[name].shape
        return _perm(shape, TO_NHWC) if layout == "nhwc" else shape

    def define(self, name: str, layout: str, tname: str | None = None) -> int:
        t = self.g.tensors[name]
        q = _quant_nhwc(t.quant) if layout == "nhwc" else t.quant
        # int64 activations (ARGMAX indices and their reshapes) are int32 in TFLM
        dtype = DType.INT32 if t.dtype is DType.INT64 else t.dtype
        idx = self.w.tensor(tname or name, self._emitted_shape(name, layout), dtype, q)
        self.forms.setdefault(name, {})[layout] = idx
        self.layout.setdefault(name, layout)
        return idx

    def alias(self, name: str, layout: str, idx: int) -> None:
        self.forms.setdefault(name, {})[layout] = idx
        self.layout.setdefault(name, layout)

    def const(self, name: str, data: np.ndarray, dtype: DType, quant: Quant | None) -> int:
        return self.w.tensor(name, data.shape, dtype, quant, data)

    def int32(self, name: str, values: object) -> int:
        arr = np.asarray(values, np.int32)
        return self.w.tensor(name, arr.shape, DType.INT32, None, arr)

    def const_in_layout(self, name: str, data: np.ndarray, dtype: DType, q: Quant | None,
                        layout: str, rank: int | None) -> int:
        """A constant written in ``layout`` (``nhwc``: left-padded with 1s to rank 4 and
        transposed; per-channel axes follow)."""
        if layout == "nhwc" and (data.ndim == 4 or rank == 4):
            lift = 4 - data.ndim
            data = data.reshape((1,) * lift + data.shape)
            if q is not None and q.axis is not None:
                q = Quant(q.scale, q.zero_point, q.axis + lift)
            data = data.transpose(TO_NHWC)
            q = _quant_nhwc(q)
        return self.const(name, data, dtype, q)

    def get(self, name: str, layout: str, rank: int | None = None) -> int:
        """The tensor in the requested layout; constants are re-laid-out (broadcast
        constants of lower rank are expanded to ``rank`` first)."""
        t = self.g.tensors[name]
        if len(t.shape) != 4 and not (t.is_const and rank == 4 and layout == "nhwc"):
            layout = "same"
        forms = self.forms.setdefault(name, {})
        if layout in forms:
            return forms[layout]
        if t.is_const:
            forms[layout] = self.const_in_layout(name, _data(t), t.dtype, t.quant, layout, 4)
            return forms[layout]
        if not forms:
            raise BackendError(f"tensor {name!r} is used before it is defined")
        src_layout, src = next(iter(forms.items()))
        perm = TO_NCHW if src_layout == "nhwc" else TO_NHWC
        src_shape = self.w.shape(src)
        dst = self.define(name, layout, f"{name}@{layout}")
        if _trivial(src_shape, perm):
            self._reshape(src, dst)
        else:
            self.w.op(B.TRANSPOSE, [src, self.int32(f"{name}@perm", perm)], [dst],
                      S.BuiltinOptions.TransposeOptions, S.TransposeOptionsT())
        return dst

    def _reshape(self, src: int, dst: int) -> None:
        shape = self.w.shape(dst)
        opts = S.ReshapeOptionsT()
        opts.newShape = np.asarray(shape, np.int32)
        name = self.w.sg.tensors[dst].name
        self.w.op(B.RESHAPE, [src, self.int32(f"{name}@shape", shape)], [dst],
                  S.BuiltinOptions.ReshapeOptions, opts)

    # ---- driver ------------------------------------------------------------------------
    def emit(self) -> ModelWriter:
        g = self.g
        ins = []
        for i in g.inputs:
            ins.append(self.define(i, self.prefer[i]))
        for node in g.nodes:
            handler = self.handlers.get(node.op)
            if handler is None:
                raise UnsupportedOp(node.op.name, None, node.name, "no TFLM emitter for this op")
            try:
                handler(self, node)
            except CompilerError:
                raise
            except (KeyError, ValueError, IndexError) as e:
                raise BackendError(f"{node.label()}: {type(e).__name__}: {e}") from e
        outs = []
        for o in g.outputs:
            if g.tensors[o].is_const:
                raise BackendError(f"graph output {o!r} is a constant")
            if o in g.inputs:
                raise BackendError(f"graph output {o!r} is a graph input")
            outs.append(self.get(o, "same"))
        self.w.graph_inputs, self.w.graph_outputs = ins, outs  # type: ignore[attr-defined]
        return self.w

    def out(self, node: Node, layout: str) -> int:
        y = node.outputs[0]
        if len(self.g.tensors[y].shape) != 4:
            layout = "same"
        return self.define(y, layout)

    def unsupported(self, node: Node, detail: str) -> UnsupportedOp:
        return UnsupportedOp(node.op.name, None, node.name, detail)



# ---- helpers shared by op emitters ------------------------------------------------------
def fused(e: Emitter, node: Node) -> int:
    return int(_FUSED[node.attr_str("fused")])



def elementwise_layout(e: Emitter, node: Node) -> str:
    return e.prefer[node.outputs[0]] if len(e.g.tensors[node.outputs[0]].shape) == 4 else "same"


def unary(code: int) -> Handler:
    def emit(e: Emitter, node: Node) -> None:
        layout = elementwise_layout(e, node)
        e.w.op(code, [e.get(node.inputs[0], layout)], [e.out(node, layout)])
    return emit


def pad_op(e: Emitter, x: int, y: int, pads: Sequence[Sequence[int]], value: float | int,
           dtype: DType, quant: Quant | None, name: str) -> None:
    """Pad ``x`` (emitted shape) into ``y`` by ``pads`` (one (begin, end) pair per emitted
    axis) with ``value``: TFLite's ``PAD`` when the value is what PAD fills with (0.0 for
    float, the zero point for integer tensors: TFLM's PAD kernel pads with the output's zero
    point), ``PADV2`` with a constant value otherwise (fewer boards register PADV2)."""
    paddings = e.int32(f"{name}@paddings", [list(p) for p in pads])
    zero = quant.zero_point[0] if (quant is not None and dtype.is_int) else 0
    if float(value) == float(zero):
        e.w.op(B.PAD, [x, paddings], [y], S.BuiltinOptions.PadOptions, S.PadOptionsT())
        return
    v = e.const(f"{name}@pad_value", np.asarray([value], dtype.numpy), dtype, quant)
    e.w.op(B.PADV2, [x, paddings, v], [y], S.BuiltinOptions.PadV2Options, S.PadV2OptionsT())


_NONNEG_FUSED = ("relu", "relu6")


def non_negative(e: Emitter, name: str) -> bool:
    """The tensor's values are >= 0 (real values; for int8 >= the zero point): written by a
    RELU, a CLIP with a non-negative minimum or an op with a fused relu/relu6. Padding such a
    tensor with 0 (the zero point) before a max pool is the same as padding with -inf."""
    prod = next((n for n in e.g.nodes if name in n.outputs), None)
    if prod is None:
        return False
    if prod.op is Op.RELU:
        return True
    if prod.op is Op.CLIP:
        return float(prod.attr_number("min")) >= 0.0
    return prod.op.name in FUSABLE and prod.attr_str("fused") in _NONNEG_FUSED
