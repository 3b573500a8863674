"""Post-training full-integer (int8) quantisation: ``quantize(graph, calibration) -> Graph``.

What it produces: the **QDQ form** the ONNX frontend gives for tf2onnx's int8 TFLite
conversions (``mlperf_tiny/onnx_converted/*_int8.onnx``), so the int8 lowering and the
backends see our graphs and imported ones alike. Every float op stays a float op; what is
int8 is said by QUANTIZE/DEQUANTIZE around it and by ``Quant`` on the integer tensors:

* **I/O (default ``io="int8"``, TFLite's full-integer deployment with int8 input and output
  types):** every float graph input keeps its name but becomes an ``int8`` tensor with a
  ``Quant`` (the caller feeds ``quantize_inputs(graph, x)``), read through a DEQUANTIZE;
  every float graph output keeps its name but becomes the ``int8`` output of a QUANTIZE
  (``dequantize_outputs`` turns results back into floats). ``io="float"`` instead keeps
  float I/O with a QUANTIZE after each input and a DEQUANTIZE before each output (the form
  onnxruntime's ``quantize_static`` makes).
* **weights:** the constant weight of CONV / CONV_TRANSPOSE (group 1) / GEMM / MATMUL is an
  ``int8`` constant ``<w>_quantized``, symmetric, zero point 0, values in [-127, 127], per
  channel along the output-channel axis (CONV: 0; CONV_TRANSPOSE: 1; GEMM: 1, or 0 with
  ``trans_b``; MATMUL: the last axis); then a DEQUANTIZE. Which weights are per channel is
  ``per_channel``: ``True`` (default: all), ``False`` (none) or ``"conv"`` (as TFLite's
  converter: CONV/CONV_TRANSPOSE per channel, GEMM/MATMUL per tensor; TFLM releases before
  2024 refuse per-channel FULLY_CONNECTED, and each channel costs 12 flatbuffer bytes).
  A channel of all zeros gets scale 1.
* **biases:** CONV/CONV_TRANSPOSE/GEMM's third input, and the constant operand of an ADD
  that directly follows a MATMUL/GEMM/CONV without bias (tf2onnx's MatMul + Add for a
  TFLite FULLY_CONNECTED; mnist-8's Conv + Add) and broadcasts along its output channels,
  is an ``int32`` constant with zero point 0 and scale ``input_scale * weight_scale[c]``
  (per channel like the weight; GEMM's ``alpha / beta`` folded in), then a DEQUANTIZE.
  The product MATMUL -> ADD is then not quantised in between (one int8 op with bias).
* **other float constants** (ADD/MUL/... operands, PRELU slopes, constant CONCAT inputs):
  int8, per tensor, asymmetric over their own min/max (with 0). BATCH_NORM's parameters
  stay float (with a warning: fold batch norms first).
* **activations:** every float tensor between ops is ``op -> QUANTIZE -> DEQUANTIZE ->
  next op`` with one per-tensor asymmetric int8 ``Quant`` (scale, zero point in [-128,127])
  from the calibrated range, widened to contain 0. Not quantised: the output of a
  fusable op (``ir.FUSABLE``, ``fused == "none"``) whose only reader is a RELU or CLIP, and
  the output of a MATMUL/CONV whose only reader is its bias ADD: these become TFLite's fused
  activation/bias, the QUANTIZE comes after the RELU/CLIP (as in tf2onnx's kws model).
  Ranges are narrowed by activations: ``relu`` [0, ..], ``relu6`` [0, 6],
  ``relu_n1_to_1`` [-1, 1], CLIP [min, max] (TFLite's fused activation = output clamp).
  Fixed output quantisation as TFLite: SOFTMAX and SIGMOID (LOGISTIC) 1/256 zero point
  -128; TANH (and a fused tanh) 1/128, zero point 0.
* **shared quantisation:** MAX_POOL, AVG_POOL, RESHAPE, TRANSPOSE, PAD, IDENTITY give their
  output their input's ``Quant`` (TFLite requires it of these int8 kernels; the output's own
  statistics are not used). A CONCAT's output covers the ranges of its inputs; an input
  takes the CONCAT's ``Quant`` when it has one of its own to give up (an op's result read
  only by the CONCAT: not a graph input, not fixed, not shared with other tensors), any
  other input is requantised in front of it (DEQUANTIZE -> QUANTIZE -> DEQUANTIZE: TFLite's
  int8 -> int8 QUANTIZE). So a CONCAT's inputs and output always share one ``Quant``.

Calibration: ``calibration`` is ``name -> (N, *shape)`` arrays, a path to an ``.npz``
(``calibration.load_calibration``), or None: then ``synthetic_calibration`` (seeded uniform
[-1, 1]) is used and a ``SyntheticCalibrationWarning`` is raised. ``method`` chooses the
ranges (``minmax``, ``percentile``, ``mse``; see ``compilers.calibration``).

What it does not do: no integer kernels (``compilers.int8``), no folding of batch norms or
activations (the passes), no quantisation-aware training, no int16 activations, no
per-channel activations, no bias correction or cross-layer equalisation.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .calibration import (SYNTHETIC_RANGE, SYNTHETIC_SAMPLES,
                          CalibrationError, SyntheticCalibrationWarning, activation_quant,
                          calibrate, check_calibration, collect, dequantize_array,
                          dequantize_outputs, load_calibration, quantize_array,
                          quantize_inputs, ranges_from, symmetric_weights,
                          synthetic_calibration)
from .errors import CompilerError
from .ir import FUSABLE, DType, Graph, Node, Op, Quant, Tensor, fresh_name

__all__ = ["quantize", "calibrate", "load_calibration", "CalibrationError",
           "SyntheticCalibrationWarning", "quantize_array", "dequantize_array",
           "quantize_inputs", "dequantize_outputs", "activation_quant"]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
BIAS_LIMIT = 2 ** 30  # weight scales are raised so that no int32 bias exceeds this
SHARE_OPS = (Op.MAX_POOL, Op.AVG_POOL, Op.RESHAPE, Op.TRANSPOSE, Op.PAD, Op.IDENTITY)
FIXED = {Op.SOFTMAX: Quant((1 / 256,), (-128,)), Op.SIGMOID: Quant((1 / 256,), (-128,)),
         Op.TANH: Quant((1 / 128,), (0,))}
ACT_RANGE = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}


def _bias_axis(shape: tuple[int, ...], channels: int) -> int | None:
    """The axis of a bias constant that runs along ``channels`` output channels (all other
    dims 1), or None when it does not (then it cannot be a per-channel bias)."""
    big = [i for i, d in enumerate(shape) if d != 1]
    if len(big) == 1 and shape[big[0]] == channels:
        return big[0]
    if not big and channels == 1 and shape:
        return len(shape) - 1
    return None


# ---- the plan -------------------------------------------------------------------------------
@dataclass
class _Weight:
    node: Node
    index: int        # which input is the weight
    axis: int | None  # output-channel axis of the weight
    channels: int     # number of output channels
    alpha: float      # GEMM's alpha (bias scale multiplier), 1 otherwise
    beta: float       # GEMM's beta (its C input is scaled by it), 1 otherwise


PER_CHANNEL = (True, False, "conv")


def _channelwise(per_channel: bool | str, op: Op) -> bool:
    """Whether ``op``'s weight is quantised per channel under the ``per_channel`` option."""
    if per_channel == "conv":
        return op in (Op.CONV, Op.CONV_TRANSPOSE)
    return bool(per_channel)


def _weight_of(node: Node, graph: Graph, per_channel: bool | str) -> _Weight | None:
    """The constant weight operand of a CONV/CONV_TRANSPOSE/GEMM/MATMUL, if any."""
    per_channel = _channelwise(per_channel, node.op)
    t, ins = graph.tensors, node.inputs
    axis: int | None
    if node.op in (Op.CONV, Op.CONV_TRANSPOSE):
        w = t[ins[1]]
        if not (w.is_const and w.dtype.is_float):
            return None
        if node.op is Op.CONV:
            axis, ch = 0, w.shape[0]
        else:
            g = node.attr_int("group")
            axis, ch = (1, w.shape[1]) if g == 1 else (None, w.shape[1] * g)
        return _Weight(node, 1, axis if per_channel else None, ch, 1.0, 1.0)
    if node.op not in (Op.GEMM, Op.MATMUL):
        return None
    out = t[node.outputs[0]].shape
    ch = out[-1] if out else 1
    alpha = beta = 1.0
    if node.op is Op.GEMM:
        alpha, beta = node.attr_float("alpha"), node.attr_float("beta")
    a, b = t[ins[0]], t[ins[1]]
    if b.is_const and b.dtype.is_float and b.shape:
        if node.op is Op.GEMM:
            axis = 0 if node.attr_bool("trans_b") else 1
        else:
            axis = len(b.shape) - 1 if len(b.shape) >= 2 else None
        return _Weight(node, 1, axis if per_channel else None, ch, alpha, beta)
    if a.is_const and a.dtype.is_float and not b.is_const:
        return _Weight(node, 0, None, ch, alpha, beta)
    return None


class _Groups:
    """Union-find over tensor names; a group may carry one fixed ``Quant``."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.fixed: dict[str, Quant] = {}
        self.sizes: dict[str, int] = {}

    def size(self, a: str) -> int:
        return self.sizes.get(self.find(a), 1)

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        """Merge the groups of ``a`` and ``b`` unless they have different fixed Quants."""
        ra, rb = self.find(a), self.find(b)
        fa, fb = self.fixed.get(ra), self.fixed.get(rb)
        if ra == rb or (fa is not None and fb is not None and fa != fb):
            return
        self.parent[rb] = ra
        self.sizes[ra] = self.sizes.get(ra, 1) + self.sizes.pop(rb, 1)
        if fb is not None:
            self.fixed[ra] = self.fixed.pop(rb)


def _narrow(lo: float, hi: float, node: Node | None) -> tuple[float, float]:
    """Intersect [lo, hi] with what ``node``'s activation can output."""
    if node is None:
        return lo, hi
    if node.op.name in FUSABLE and node.attr_str("fused") in ACT_RANGE:
        a, b = ACT_RANGE[node.attr_str("fused")]
        lo, hi = max(lo, a), min(hi, b)
    elif node.op is Op.RELU:
        lo = max(lo, 0.0)
    elif node.op is Op.CLIP:
        lo, hi = max(lo, float(node.attr_number("min"))), min(hi, float(node.attr_number("max")))
    return lo, max(lo, hi)


@dataclass
class _Plan:
    inner: set[str]                             # float activations left unquantised
    quants: dict[str, Quant]                    # every other float activation's Quant
    bias_adds: dict[str, tuple[_Weight, int]]   # ADD output -> (weight op, bias input index)


def _plan(graph: Graph, ranges: Mapping[str, tuple[float, float]], per_channel: bool | str
          ) -> _Plan:
    t = graph.tensors
    consumers = graph.consumers()
    order = graph.topological_order()
    inner: set[str] = set()
    bias_adds: dict[str, tuple[_Weight, int]] = {}

    for node in order:
        out = node.outputs[0]
        users = consumers.get(out, ())
        if not t[out].dtype.is_float or out in graph.outputs or len(users) != 1:
            continue
        reader = users[0]
        fused = node.attr_str("fused") if node.op.name in FUSABLE else None
        if fused == "none" and reader.op in (Op.RELU, Op.CLIP) and reader.inputs[0] == out:
            inner.add(out)  # becomes the op's fused activation
            continue
        w = _weight_of(node, graph, per_channel)
        if w is None or fused != "none" or len(node.inputs) > 2 or reader.op is not Op.ADD \
                or node.op is Op.CONV_TRANSPOSE or reader.inputs[0] == reader.inputs[1]:
            continue
        other = 1 if reader.inputs[0] == out else 0
        c = t[reader.inputs[other]]
        if not (c.is_const and c.dtype.is_float) or len(c.shape) > len(t[out].shape):
            continue
        b_axis = _bias_axis(c.shape, w.channels)
        ch_axis = 1 if node.op is Op.CONV else len(t[out].shape) - 1
        # the constant must broadcast along the op's output channels and nothing else
        if b_axis is not None and b_axis - len(c.shape) == ch_axis - len(t[out].shape):
            inner.add(out)  # becomes the op's bias
            bias_adds[reader.outputs[0]] = (w, other)

    acts = [i for i in graph.inputs if t[i].dtype.is_float]
    acts += [n.outputs[0] for n in order if t[n.outputs[0]].dtype.is_float
             and not t[n.outputs[0]].is_const and n.outputs[0] not in inner]
    producer = {n.outputs[0]: n for n in order}
    groups = _Groups()
    for a in acts:
        groups.find(a)
        p = producer.get(a)
        if p is not None and (p.op in FIXED or (
                p.op.name in FUSABLE and p.attr_str("fused") == "tanh")):
            groups.fixed[groups.find(a)] = FIXED.get(p.op, FIXED[Op.TANH])
    for node in order:
        out = node.outputs[0]
        if out not in groups.parent:
            continue
        ins = [i for i in node.inputs if i in groups.parent]  # quantised float activations
        if node.op in SHARE_OPS and ins and ins[0] == node.inputs[0]:
            groups.union(ins[0], out)
        elif node.op is Op.CONCAT and groups.fixed.get(groups.find(out)) is None:
            for m in ins:  # an input joins when it has a Quant of its own to give up
                if consumers.get(m) == (node,) and m not in graph.outputs and \
                        m not in graph.inputs and groups.size(m) == 1 and m not in groups.fixed:
                    groups.union(out, m)

    # a group's range: the union over its members that are not a share op's output (those
    # only repeat their input); the rewriter requantises CONCAT inputs that kept their own
    span: dict[str, tuple[float, float]] = {}
    for a in acts:
        p = producer.get(a)
        if p is not None and p.op in SHARE_OPS:
            continue
        lo, hi = ranges.get(a, (0.0, 0.0))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = 0.0, 0.0
        lo, hi = _narrow(lo, hi, p)
        r = groups.find(a)
        plo, phi = span.get(r, (np.inf, -np.inf))
        span[r] = (min(plo, lo), max(phi, hi))
    quants = {a: groups.fixed.get(groups.find(a)) or activation_quant(
        *span.get(groups.find(a), ranges.get(a, (0.0, 0.0)))) for a in acts}
    return _Plan(inner, quants, bias_adds)


# ---- the rewrite --------------------------------------------------------------------------
class _Rewriter:
    """Builds the QDQ graph from the float graph and the plan."""

    def __init__(self, graph: Graph, plan: _Plan, per_channel: bool | str, io: str,
                 note: Callable[[str], None]) -> None:
        self.g, self.plan, self.per_channel, self.io, self.note = graph, plan, per_channel, io, note
        self.names = set(graph.tensors) | {n.name for n in graph.nodes}
        self.producer = {n.outputs[0]: n for n in graph.nodes}
        self.tensors: dict[str, Tensor] = dict(graph.tensors)
        self.nodes: list[Node] = []
        self.dq_of: dict[str, str] = {}                # quantised activation -> float to read
        self.consts: dict[tuple[str, object], str] = {}  # (constant, role) -> DQ output
        self.weight_q: dict[str, tuple[np.ndarray | None, Quant | None]] = {}  # by op output
        self.bias_add_of = {w.node.outputs[0]: (self.producer[out], index)
                            for out, (w, index) in plan.bias_adds.items()}
        self.warned: set[str] = set()
        self.requant: dict[tuple[str, Quant], str] = {}

    def fresh(self, base: str) -> str:
        name = fresh_name(base, self.names)
        self.names.add(name)
        return name

    def _pair(self, src: str, quant: Quant, *, q_name: str | None = None,
              dq_name: str | None = None, dequantize: bool = True) -> str:
        """QUANTIZE float ``src`` into an int8 tensor (``q_name``), then DEQUANTIZE it into
        a float (``dq_name``) unless not wanted; returns the name to read (``src`` then)."""
        t = self.tensors[src]
        q = q_name or self.fresh(f"{src}_quantized")
        self.tensors[q] = Tensor(q, t.shape, DType.INT8, quant)
        self.nodes.append(Node.make(Op.QUANTIZE, [src], [q], name=self.fresh(f"quantize:{src}")))
        if not dequantize:
            return src
        dq = dq_name or self.fresh(f"{src}_dequantized")
        self.tensors[dq] = Tensor(dq, t.shape, t.dtype)
        self._dequantize(q, dq)
        return dq

    def _dequantize(self, q: str, dq: str) -> None:
        self.nodes.append(Node.make(Op.DEQUANTIZE, [q], [dq], name=self.fresh(f"dequantize:{q}")))

    def _const(self, name: str, role: object, data: np.ndarray, quant: Quant) -> str:
        """An integer constant with ``quant`` read through a DEQUANTIZE; returns the float."""
        key = (name, role)
        if key not in self.consts:
            src = self.tensors[name]
            q = self.fresh(f"{name}_quantized")
            self.tensors[q] = Tensor(q, data.shape, DType.from_numpy(data.dtype), quant, data)
            dq = self.fresh(f"{name}_dequantized")
            self.tensors[dq] = Tensor(dq, data.shape, src.dtype)
            self._dequantize(q, dq)
            self.consts[key] = dq
        return self.consts[key]

    def _bias_of(self, w: _Weight) -> tuple[str, float] | None:
        """The float bias constant of weight op ``w`` and its scale factor (GEMM's C is
        scaled by beta; the accumulator by alpha), if it has one."""
        node, t = w.node, self.g.tensors
        if node.op in (Op.CONV, Op.CONV_TRANSPOSE, Op.GEMM) and len(node.inputs) > 2:
            c = t[node.inputs[2]]
            if c.is_const and c.dtype.is_float:
                return node.inputs[2], (w.alpha / w.beta if w.beta else 1.0)
            return None
        add = self.bias_add_of.get(node.outputs[0])
        if add is not None:
            reader, index = add
            return reader.inputs[index], w.alpha
        return None

    def _act_scale(self, w: _Weight) -> float | None:
        """The scale of the activation operand of weight op ``w``."""
        act = w.node.inputs[1 - w.index]
        q = self.plan.quants.get(act)
        return q.scale[0] if q is not None else None

    def _weight_quant(self, w: _Weight) -> tuple[np.ndarray | None, Quant | None]:
        """The int8 weight data (None if the weight is an activation) and its Quant. Scales
        are raised where a bias would not fit in int32 at ``input * weight`` scale (as
        TFLite's quantiser does), keeping ``|bias_q| <= BIAS_LIMIT``."""
        key = w.node.outputs[0]
        if key not in self.weight_q:
            name = w.node.inputs[w.index]
            if not self.g.tensors[name].is_const:
                self.weight_q[key] = (None, self.plan.quants.get(name))
                return self.weight_q[key]
            data = np.asarray(self.g.tensors[name].data)
            min_scale = None
            bias, in_scale = self._bias_of(w), self._act_scale(w)
            if bias is not None and in_scale is not None:
                b = np.abs(np.asarray(self.g.tensors[bias[0]].data, np.float64))
                if w.axis is not None:
                    b_axis = _bias_axis(b.shape, w.channels)
                    b = (np.moveaxis(b, b_axis, 0).reshape(w.channels, -1).max(axis=1)
                         if b_axis is not None else np.full(w.channels, b.max(initial=0.0)))
                else:
                    b = np.array([b.max(initial=0.0)])
                min_scale = b / (in_scale * abs(bias[1]) * BIAS_LIMIT) if bias[1] else None
            self.weight_q[key] = symmetric_weights(data, w.axis, min_scale)
        return self.weight_q[key]

    def _bias(self, name: str, w: _Weight, factor: float) -> str | None:
        """Bias constant ``name`` of weight op ``w`` as int32 at scale ``input_scale *
        weight_scale[c] * factor``; None if those scales are unknown."""
        in_scale, (_, wq) = self._act_scale(w), self._weight_quant(w)
        if in_scale is None or wq is None:
            return None
        b = np.asarray(self.g.tensors[name].data, np.float64)
        axis = None
        if wq.axis is not None:
            axis = _bias_axis(b.shape, w.channels)
            if axis is None:  # e.g. a scalar GEMM C: spell it out per channel
                b = np.broadcast_to(b, (b.shape[:-1] if b.ndim else ()) + (w.channels,)).copy()
                axis = b.ndim - 1
        scale = in_scale * np.asarray(wq.scale, np.float64) * factor
        quant = Quant(tuple(scale.astype(np.float32).tolist()), (0,) * scale.size, axis)
        s, _ = quant.arrays(b.ndim)
        q = np.rint(b / s.astype(np.float64))
        if np.any(np.abs(q) > INT32_MAX):
            self.note(f"bias {name!r}: {int(np.sum(np.abs(q) > INT32_MAX))} values saturate "
                      f"int32 at scale input*weight")
        q = np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)
        return self._const(name, ("bias", axis, quant.scale), q, quant)

    def _input(self, node: Node, index: int, name: str) -> str:
        if name in self.dq_of:
            want = self.plan.quants.get(node.outputs[0])
            if node.op in SHARE_OPS + (Op.CONCAT,) and want is not None and \
                    self.plan.quants[name] != want:  # requantise: DQ -> Q(output's) -> DQ
                if (name, want) not in self.requant:
                    self.requant[(name, want)] = self._pair(self.dq_of[name], want)
                return self.requant[(name, want)]
            return self.dq_of[name]
        t = self.tensors[name]
        if not (t.is_const and t.dtype.is_float):
            return name  # an inner (fused) activation or a non-float tensor
        w = _weight_of(node, self.g, self.per_channel)
        if w is not None and index == w.index:
            data, quant = self._weight_quant(w)
            assert data is not None and quant is not None
            return self._const(name, ("weight", quant), data, quant)
        bias = self._bias_of(w) if w is not None else None
        if bias is not None and bias[0] == name and index == 2:
            dq = self._bias(name, w, bias[1])  # type: ignore[arg-type]
            if dq is not None:
                return dq
        add = self.plan.bias_adds.get(node.outputs[0])
        if add is not None and index == add[1]:
            dq = self._bias(name, add[0], add[0].alpha)
            if dq is not None:
                return dq
        if node.op is Op.BATCH_NORM:
            if node.name not in self.warned:
                self.warned.add(node.name)
                self.note(f"{node.label()}: its parameters stay float (no int8 batch norm); "
                          f"fold batch norms into the preceding CONV/GEMM before quantising")
            return name
        data = np.asarray(t.data)
        quant = activation_quant(float(data.min(initial=0.0)), float(data.max(initial=0.0)))
        return self._const(name, ("int8", quant), quantize_array(data, quant), quant)

    def run(self) -> Graph:
        g, int8_io = self.g, self.io == "int8"
        read = g.consumers()
        for i in g.inputs:
            quant = self.plan.quants.get(i)
            if quant is not None and int8_io:  # the input itself becomes int8
                t = g.tensors[i]
                self.tensors[i] = Tensor(i, t.shape, DType.INT8, quant)
                self.dq_of[i] = self.fresh(f"{i}_dequantized")
                self.tensors[self.dq_of[i]] = Tensor(self.dq_of[i], t.shape, t.dtype)
                self._dequantize(i, self.dq_of[i])
            elif quant is not None:
                self.dq_of[i] = self._pair(i, quant)
        for node in g.topological_order():
            ins = tuple(self._input(node, k, name) for k, name in enumerate(node.inputs))
            out = node.outputs[0]
            quant = self.plan.quants.get(out)
            if quant is None or out not in g.outputs:
                self.nodes.append(Node(node.op, ins, node.outputs, node.attrs, node.name))
                if quant is not None:
                    self.dq_of[out] = self._pair(out, quant)
                continue
            # a graph output keeps its name: the op writes a renamed float
            flt = self.fresh(f"{out}_float")
            self.tensors[flt] = Tensor(flt, g.tensors[out].shape, g.tensors[out].dtype)
            self.nodes.append(Node(node.op, ins, (flt,), node.attrs, node.name))
            if int8_io:
                dq = self._pair(flt, quant, q_name=out, dequantize=out in read)
                self.dq_of[out] = dq if out in read else out
            else:
                self.dq_of[out] = self._pair(flt, quant, dq_name=out)
        used = set(g.inputs) | set(g.outputs) | {x for n in self.nodes
                                                 for x in (*n.inputs, *n.outputs)}
        tensors = [t for n, t in self.tensors.items() if n in used]
        return Graph.make(g.name, g.inputs, g.outputs, self.nodes, tensors).toposorted().validate()


# ---- entry point --------------------------------------------------------------------------
def quantize(graph: Graph,
             calibration: Mapping[str, np.ndarray] | str | os.PathLike[str] | None,
             *, method: str = "minmax", percentile: float = 99.99,
             per_channel: bool | str = True,
             io: str = "int8", warn: Callable[..., object] = warnings.warn) -> Graph:
    """Full-integer post-training quantisation of a float ``graph`` into QDQ form (see the
    module docstring). ``calibration``: sample inputs (``name -> (N, *shape)``), an
    ``.npz`` path, or None for synthetic data (with a ``SyntheticCalibrationWarning``).
    ``warn(message, category)`` receives every warning (default ``warnings.warn``)."""

    def emit(message: str, category: type[Warning] = UserWarning) -> None:
        if warn is warnings.warn:
            warnings.warn(message, category, stacklevel=3)
        else:
            warn(message, category)

    graph = graph.validate()
    if per_channel not in PER_CHANNEL:
        raise CompilerError(f"per_channel={per_channel!r}: expected True, False or 'conv'")
    if io not in ("int8", "float"):
        raise CompilerError(f"io={io!r}: expected 'int8' (int8 graph inputs/outputs) or 'float'")
    if any(n.op in (Op.QUANTIZE, Op.DEQUANTIZE) for n in graph.nodes):
        raise CompilerError(f"graph {graph.name!r} is already quantised (it has QUANTIZE/"
                            f"DEQUANTIZE nodes); quantize() takes a float graph")
    if not any(t.dtype.is_float and not t.is_const for t in graph.tensors.values()):
        raise CompilerError(f"graph {graph.name!r} has no float activations to quantise")
    if calibration is None:
        emit(f"quantising graph {graph.name!r} without calibration data: using "
             f"{SYNTHETIC_SAMPLES} synthetic random samples uniform in {SYNTHETIC_RANGE}. "
             f"The activation ranges will not match real inputs and int8 accuracy may be "
             f"poor; pass a calibration .npz of representative inputs",
             SyntheticCalibrationWarning)
        samples = synthetic_calibration(graph)
    elif isinstance(calibration, (str, os.PathLike)):
        samples = load_calibration(calibration, graph)
    else:
        samples = check_calibration(graph, calibration)
    ranges = ranges_from(collect(graph, samples), method, percentile)
    plan = _plan(graph, ranges, per_channel)
    return _Rewriter(graph, plan, per_channel, io, emit).run()
