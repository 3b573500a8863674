"""Lowering of QDQ graphs to integer ops: ``lower_int8(graph) -> Graph``.

What it does: run after ``optimize`` (fusions done) on a QDQ graph (our quantiser's form,
``compilers.quantize``, or tf2onnx's int8 conversions). Every pattern

    DEQUANTIZE(x_int) ... -> op [-> bias ADD] [-> RELU/CLIP] -> QUANTIZE -> y_int

becomes ``op`` reading the integer tensors directly and writing ``y_int``, so that
``compilers.reference.run`` dispatches it to ``compilers.int8``'s TFLM-exact kernel:

* activations: ``DEQUANTIZE(x)`` of an int8/uint8 tensor with a per-tensor ``Quant`` is
  replaced by ``x``;
* weights (CONV, GEMM, MATMUL): ``DEQUANTIZE(int8 const)`` becomes the int8 constant with
  its ``Quant`` (per channel only along the op's output-channel axis);
* biases: ``DEQUANTIZE(int32 const)`` becomes the int32 constant (its scale must be
  ``input_scale * weight_scale``); a float constant bias is quantised to int32 at that scale;
  a bias ADD between the op and its QUANTIZE (``CONV -> ADD(b)``, ``MATMUL -> ADD(b)``)
  becomes the CONV bias / a GEMM's C;
* activations between the op and its QUANTIZE (RELU, CLIP(0,6), CLIP(-1,1), CLIP(0,inf))
  become the op's ``fused`` activation, the output clamp of the integer kernels;
* a PAD's constant value becomes the raw value of the integer domain;
* ``DEQUANTIZE -> QUANTIZE`` (a requantisation) becomes an int -> int QUANTIZE.

Lowered are the ops ``compilers.int8`` has integer kernels for, under the conditions those
kernels need (otherwise they would take its float fallback, which is not TFLM's
arithmetic): CONV (incl. grouped/depthwise), GEMM (alpha = beta = 1), 2-D MATMUL, ADD, SUB,
MUL, AVG_POOL (padding not counted), MAX_POOL, REDUCE_MEAN, SOFTMAX / SIGMOID (int8 output
1/256, zero point -128), TANH (1/128, 0), RELU, CLIP, LEAKY_RELU, HARD_SWISH, PRELU,
RESHAPE, TRANSPOSE, CONCAT, PAD (constant mode), IDENTITY. ARGMAX of a DEQUANTIZE reads
the integer tensor (the index of the maximum does not change).

What it does not do: anything else (CONV_TRANSPOSE, DIV, a fused tanh (``precision``
unfuses it before quantising),
float constant operands of ADD/MUL, per-channel activations, an op whose result is read by
more than its QUANTIZE, ...) stays in QDQ float form; ``unlowered(graph)`` names those
nodes. No layout change, no removal of requantising QUANTIZEs. (One fix-up: an integer
graph input without ``Quant`` read only by RESHAPE/TRANSPOSE takes its readers' ``Quant``,
as TFLite states it on the input.)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir import FUSABLE, DType, Graph, Node, Op, Quant, Tensor
from .dead_code import dead_code
from .rewrite import Editor

INT_ACT = (DType.INT8, DType.UINT8)

LOWERABLE = frozenset({Op.CONV, Op.GEMM, Op.MATMUL, Op.ADD, Op.SUB, Op.MUL, Op.AVG_POOL,
                       Op.MAX_POOL, Op.REDUCE_MEAN, Op.SOFTMAX, Op.SIGMOID, Op.TANH, Op.RELU,
                       Op.CLIP, Op.LEAKY_RELU, Op.HARD_SWISH, Op.PRELU, Op.RESHAPE,
                       Op.TRANSPOSE, Op.CONCAT, Op.PAD, Op.IDENTITY})
# Ops whose result depends only on the order of their input values (an index): they read
# the integer tensor directly when its scale is positive.
ORDER_ONLY = frozenset({Op.ARGMAX})
_DOT = (Op.CONV, Op.GEMM, Op.MATMUL)
# Fixed output quantisation the integer kernels need: (scale, zero point).
_FIXED = {Op.SOFTMAX: (1 / 256, -128), Op.SIGMOID: (1 / 256, -128), Op.TANH: (1 / 128, 0)}
_INT_FUSED = ("none", "relu", "relu6", "relu_n1_to_1")


class _Skip(Exception):
    """This node cannot be lowered (the message says why); it stays in QDQ form."""


def _per_tensor(q: Quant | None) -> bool:
    return q is not None and (q.axis is None or (len(set(q.scale)) == 1
                                                 and len(set(q.zero_point)) == 1))


def _clip_fused(node: Node) -> str | None:
    """The fused activation a standalone RELU/CLIP is, or None."""
    if node.op is Op.RELU:
        return "relu"
    if node.op is Op.CLIP:
        lo, hi = float(node.attr_number("min")), float(node.attr_number("max"))
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        if lo == -1.0 and hi == 1.0:
            return "relu_n1_to_1"
        if lo == 0.0 and hi == float("inf"):
            return "relu"
    return None


class _Lowering:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.ed = Editor(graph)
        self.prod = graph.producers()
        self.cons = graph.consumers()

    # ---- helpers ---------------------------------------------------------------------------
    def readers(self, name: str) -> tuple[Node, ...]:
        return self.cons.get(name, ())

    def sole_reader(self, name: str) -> Node | None:
        if name in self.g.outputs:
            return None
        r = self.readers(name)
        return r[0] if len(r) == 1 else None

    def dq_source(self, name: str) -> str | None:
        p = self.prod.get(name)
        return p.inputs[0] if p is not None and p.op is Op.DEQUANTIZE else None

    def int_activation(self, name: str) -> str:
        """The integer tensor behind a float activation input (``DEQUANTIZE(x)``), or
        raise ``_Skip``. Constants (int8 via DEQUANTIZE) are allowed too."""
        src = self.dq_source(name)
        if src is None:
            raise _Skip(f"input {name!r} is not a DEQUANTIZE output")
        t = self.g.tensors[src]
        if t.dtype not in INT_ACT or not _per_tensor(t.quant):
            raise _Skip(f"input {src!r} is not a per-tensor int8/uint8 tensor")
        return src

    def weight(self, name: str, out_axis: int, channels: int) -> str:
        src = self.dq_source(name)
        if src is None:
            raise _Skip(f"weight {name!r} is not a DEQUANTIZE output")
        t = self.g.tensors[src]
        if t.dtype not in INT_ACT or t.quant is None:
            raise _Skip(f"weight {src!r} is not int8 with a Quant")
        q = t.quant
        if q.axis is not None and len(q.scale) > 1 and (q.axis != out_axis or len(q.scale) != channels):
            raise _Skip(f"weight {src!r}: per-channel axis {q.axis}, output channels on {out_axis}")
        return src

    def bias(self, name: str, x: Tensor, w: Tensor, channels: int, shape: tuple[int, ...]) -> str:
        """An int32 bias at scale ``input_scale * weight_scale`` with ``shape``."""
        assert x.quant is not None and w.quant is not None
        want = np.float64(np.float32(x.quant.scale[0])) * np.broadcast_to(
            np.asarray(w.quant.scale, np.float64), (channels,))
        src = self.dq_source(name)
        if src is not None:
            t = self.g.tensors[src]
            if not t.is_const or t.dtype is not DType.INT32 or t.quant is None:
                raise _Skip(f"bias {src!r} is not an int32 constant")
            if any(z != 0 for z in t.quant.zero_point):
                raise _Skip(f"bias {src!r} has a non-zero zero point")
            have = np.broadcast_to(np.asarray(t.quant.scale, np.float64), (channels,))
            if not np.allclose(have, want, rtol=1e-4, atol=0):
                raise _Skip(f"bias {src!r}: scale is not input scale * weight scale")
            data = np.asarray(t.data)
        else:
            t = self.g.tensors[name]
            if not t.is_const or not t.dtype.is_float:
                raise _Skip(f"bias {name!r} is neither DEQUANTIZE(int32) nor a float constant")
            data = np.asarray(t.data, np.float64).reshape(-1)
            if data.size not in (1, channels):
                raise _Skip(f"bias {name!r} does not broadcast along the output channels")
            data = np.rint(np.broadcast_to(data, (channels,)) / want)
            if np.abs(data).max(initial=0) >= 2 ** 31:
                raise _Skip(f"bias {name!r} does not fit int32")
        data = np.asarray(data).reshape(-1)
        if data.size not in (1, channels):
            raise _Skip(f"bias {name!r} does not broadcast along the output channels")
        data = np.broadcast_to(data, (channels,)).astype(np.int32).reshape(shape)
        if src is not None and self.g.tensors[src].shape == shape:
            return src
        if channels > 1 and len(set(want)) > 1:
            quant = Quant(tuple(float(s) for s in want), (0,) * channels, 0)
        else:
            quant = Quant((float(want[0]),), (0,))
        return self.ed.add_const(f"{src or name}_int32", data, quant)

    # ---- one node --------------------------------------------------------------------------
    def lower(self, n: Node) -> None:
        t = self.g.tensors
        if n.op not in LOWERABLE:
            raise _Skip(f"{n.op.name} has no integer kernel")
        # walk the float result to its QUANTIZE: [bias ADD] [RELU/CLIP]
        out, fused = n.outputs[0], (n.attr_str("fused") if n.op.name in FUSABLE else "none")
        absorbed: list[Node] = []
        bias_name: str | None = None
        reader = self.sole_reader(out)
        if reader is not None and reader.op is Op.ADD and n.op in _DOT and len(n.inputs) == 2 \
                and fused == "none" and not (n.op is Op.MATMUL and len(t[n.inputs[0]].shape) != 2):
            other = [i for i in reader.inputs if i != out]
            if len(other) == 1 and (self.dq_source(other[0]) is not None or t[other[0]].is_const) \
                    and (t[self.dq_source(other[0]) or other[0]].is_const):
                bias_name = other[0]
                fused = reader.attr_str("fused")
                absorbed.append(reader)
                out = reader.outputs[0]
                reader = self.sole_reader(out)
        if reader is not None and fused == "none" and n.op.name in FUSABLE:
            act = _clip_fused(reader)
            if act is not None:
                fused = act
                absorbed.append(reader)
                out = reader.outputs[0]
                reader = self.sole_reader(out)
        if reader is None or reader.op is not Op.QUANTIZE:
            raise _Skip("its result is not read by exactly one QUANTIZE")
        y = t[reader.outputs[0]]
        if y.dtype not in INT_ACT or not _per_tensor(y.quant):
            raise _Skip(f"output {y.name!r} is not a per-tensor int8/uint8 tensor")
        if fused not in _INT_FUSED:
            raise _Skip(f"fused activation {fused!r} has no integer form")
        if n.op in _FIXED:
            s, z = _FIXED[n.op]
            assert y.quant is not None
            if y.dtype is not DType.INT8 or abs(y.quant.scale[0] - s) > 1e-9 or y.quant.zero_point[0] != z:
                raise _Skip(f"output quantisation {y.quant} is not the fixed ({s}, {z})")
        attrs = dict(n.attrs)
        if n.op.name in FUSABLE:
            attrs["fused"] = fused
        op = n.op
        if n.op in _DOT:
            x = self.int_activation(n.inputs[0])
            xt = t[x]
            if n.op is Op.CONV:
                wshape = t[n.inputs[1]].shape
                ch = wshape[0]
                w = self.weight(n.inputs[1], 0, ch)
                if t[w].quant is None or not t[w].is_const:
                    raise _Skip("the weight is not a constant")
                b = n.inputs[2] if len(n.inputs) > 2 else bias_name
                ins = [x, w] + ([self.bias(b, xt, t[w], ch, (ch,))] if b is not None else [])
            else:
                if n.op is Op.GEMM:
                    if n.attr_float("alpha") != 1.0 or (len(n.inputs) > 2 and n.attr_float("beta") != 1.0):
                        raise _Skip("integer GEMM needs alpha = beta = 1")
                    trans_b = n.attr_bool("trans_b")
                else:
                    if len(t[n.inputs[0]].shape) != 2 or len(t[n.inputs[1]].shape) != 2:
                        raise _Skip("integer MATMUL is 2-D only")
                    trans_b = False
                wshape = t[n.inputs[1]].shape
                axis = 0 if trans_b else 1
                ch = wshape[axis]
                w = self.weight(n.inputs[1], axis, ch)
                wq = t[w].quant
                assert wq is not None
                if not t[w].is_const and not _per_tensor(wq):
                    raise _Skip("per-channel activation operand")
                b = n.inputs[2] if len(n.inputs) > 2 else bias_name
                ins = [x, w]
                if b is not None:
                    ins.append(self.bias(b, xt, t[w], ch, (ch,)))
                    if n.op is Op.MATMUL:
                        op = Op.GEMM
                        attrs = {"alpha": 1.0, "beta": 1.0, "trans_a": False, "trans_b": False,
                                 "fused": fused}
        else:
            ins = [self.int_activation(i) for i in n.inputs]
            if n.op is Op.PAD:
                src = t[ins[0]]
                assert src.quant is not None
                v = float(n.attr_number("value"))
                raw = src.quant.zero_point[0] + int(np.rint(v / src.quant.scale[0]))
                lo, hi = np.iinfo(src.dtype.numpy).min, np.iinfo(src.dtype.numpy).max
                if not lo <= raw <= hi:
                    raise _Skip(f"pad value {v} is outside the integer range")
                attrs["value"] = int(raw)
            if n.op is Op.AVG_POOL and n.attr_bool("count_include_pad") and \
                    any(map(any, n.attr_pairs("pads"))):
                raise _Skip("integer AVG_POOL does not count padding")
        new = Node.make(op, ins, (y.name,), name=n.name, **attrs)
        self.ed.replace(n, new)
        for a in absorbed:
            self.ed.remove(a)
        self.ed.remove(reader)

    def requantize(self, q: Node) -> None:
        """DEQUANTIZE(x_int) -> QUANTIZE: an int -> int QUANTIZE reading x."""
        src = self.dq_source(q.inputs[0])
        if src is None:
            return
        s = self.g.tensors[src]
        if s.dtype in INT_ACT and _per_tensor(s.quant) and _per_tensor(self.g.tensors[q.outputs[0]].quant):
            self.ed.replace(q, Node(q.op, (src,), q.outputs, q.attrs, q.name))

    def read_integers(self, n: Node) -> None:
        """ARGMAX of ``DEQUANTIZE(x)``: ARGMAX of ``x`` (same order, positive scale)."""
        src = self.dq_source(n.inputs[0])
        if src is None:
            return
        t = self.g.tensors[src]
        if t.dtype in INT_ACT and _per_tensor(t.quant) and t.quant is not None \
                and t.quant.scale[0] > 0:
            self.ed.replace(n, Node(n.op, (src,) + n.inputs[1:], n.outputs, n.attrs, n.name))

    def run(self) -> Graph:
        for n in self.g.nodes:
            if n.op in ORDER_ONLY:
                self.read_integers(n)
                continue
            if n.op in (Op.QUANTIZE, Op.DEQUANTIZE) or not self.g.tensors[n.outputs[0]].dtype.is_float:
                continue
            if n.op in (Op.RELU, Op.CLIP, Op.ADD) and self._absorbed_by_producer(n):
                continue
            try:
                self.lower(n)
            except _Skip:
                pass
        for n in self.g.nodes:
            if n.op is Op.QUANTIZE and n in self.ed.nodes:
                self.requantize(n)
        out = self.ed.graph()
        return adopt_input_quant(dead_code(out)).toposorted()

    def _absorbed_by_producer(self, n: Node) -> bool:
        """``n`` (RELU/CLIP/ADD) reads an unquantised float result (an inner node of a
        fused chain): it is handled, or left, together with that result's producer."""
        for i in n.inputs:
            p = self.prod.get(i)
            if p is not None and p.op not in (Op.QUANTIZE, Op.DEQUANTIZE) \
                    and self.g.tensors[i].dtype.is_float:
                return True
        return False


_MOVES = (Op.RESHAPE, Op.TRANSPOSE, Op.IDENTITY)


def adopt_input_quant(graph: Graph) -> Graph:
    """An integer graph input without ``Quant`` (ONNX: the DEQUANTIZE after it carries the
    parameters) read only by data movement whose outputs share one per-tensor ``Quant``
    takes that ``Quant``: data movement may not requantise, and the input's real-valued
    meaning is then stated on the input itself (backends need it)."""
    cons = graph.consumers()
    tensors = dict(graph.tensors)
    changed = False
    for name in graph.inputs:
        t = tensors[name]
        readers = cons.get(name, ())
        if t.dtype not in INT_ACT or t.quant is not None or not readers \
                or any(r.op not in _MOVES for r in readers):
            continue
        quants = {tensors[r.outputs[0]].quant for r in readers}
        if len(quants) == 1 and _per_tensor(q := quants.pop()) \
                and all(tensors[r.outputs[0]].dtype is t.dtype for r in readers):
            tensors[name] = replace(t, quant=q)
            changed = True
    if not changed:
        return graph
    return Graph.make(graph.name, graph.inputs, graph.outputs, graph.nodes, tensors.values())


def lower_int8(graph: Graph) -> Graph:
    """Lower every ``DEQUANTIZE -> op -> QUANTIZE`` pattern that has an integer kernel to
    the op on the integer tensors (see the module docstring)."""
    graph.validate()
    return _Lowering(graph).run().validate()


def unlowered(graph: Graph) -> list[str]:
    """The names of the nodes that still compute in float (QDQ form) after ``lower_int8``:
    every node other than QUANTIZE/DEQUANTIZE with a float output."""
    return [n.name or n.outputs[0] for n in graph.nodes
            if n.op not in (Op.QUANTIZE, Op.DEQUANTIZE)
            and any(graph.tensors[o].dtype.is_float for o in n.outputs)]


__all__ = ["adopt_input_quant", "lower_int8", "unlowered", "LOWERABLE"]
