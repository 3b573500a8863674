"""The compiler's one intermediate representation: a static, typed dataflow graph.

What it is:

* ``DType``: the element types the IR knows. Exotic ONNX/TFLite types (bfloat16, float8,
  int4, strings) have no member: frontends raise ``UnsupportedDType`` for them.
* ``Quant``: affine quantisation of one tensor, ``real = scale * (q - zero_point)``;
  per-tensor (``axis is None``, one scale) or per-channel (``axis`` = the channel axis, one
  scale and zero point per channel). It lives on the *integer* tensor: the output of
  QUANTIZE, the input of DEQUANTIZE, an int8 weight or an int8 graph input.
* ``Tensor``: name, static shape (a tuple of ints; no dynamic dims ever), dtype, optional
  quant, and ``data`` for constants (a read-only NumPy array; ``None`` for activations).
* ``Op``: one enum of our ops. Frontends *normalise* into it so that later passes and
  backends see few ops with one meaning each:

  - CONV is N-d convolution with a ``group`` attribute; depthwise is ``group == C_in``
    (ONNX has one op; the TFLite frontend turns DEPTHWISE_CONV_2D weights into this form).
  - padding is always explicit: ``pads`` is one ``(begin, end)`` pair per spatial axis;
    ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID is resolved by the frontend.
  - RESHAPE carries the full static target ``shape`` (no 0 / -1); ONNX Reshape, Flatten,
    Squeeze and Unsqueeze all become RESHAPE.
  - SOFTMAX is over one ``axis`` (opset-13 meaning); the old flatten-at-axis meaning is
    expressed with RESHAPE around it. GlobalAveragePool is REDUCE_MEAN over the spatial
    axes; Dropout (inference) is IDENTITY; Clip/Pad/ReduceMean/Squeeze operands that ONNX
    passes as inputs (opset >= 11/13/18) become attributes, so they must be constants.
  - every axis is non-negative; every attribute in ``OP_ATTRS`` is always present
    (``Node.make`` fills ``OP_DEFAULTS``).
  - a ``fused`` activation (none, relu, relu6, relu_n1_to_1, tanh) on CONV, GEMM, MATMUL,
    the element-wise arithmetic ops, pools and CONCAT: applied to the op's result
    (TFLite's fused activations; the fusion pass folds a following RELU/CLIP into it).
  - QUANTIZE has a ``rounding``: ``half_even`` (ONNX QuantizeLinear, the default) or
    ``half_away`` (TFLite's QUANTIZE).
* ``Node``: op, input names, output names, attributes as a sorted tuple of
  ``(name, value)`` pairs (hashable, typed per ``OP_ATTRS``), and a name for messages.
  Optional inputs (CONV/CONV_TRANSPOSE bias, GEMM's C) are simply left off the end.
* ``Graph``: name, input and output names, nodes, and every tensor by name. ``validate()``
  checks the graph and raises ``GraphError`` naming the node and the problem.

Layout: ops that depend on layout (CONV, pools) are defined in NCHW here: batch, channels,
then spatial axes (CONV weights OIHW). The TFLite frontend converts NHWC models into this
form; layout for the chip (NHWC for TFLM/CMSIS) is chosen by the backends when they emit
code, not by a pass (``passes.transpose_cancel`` removes the TRANSPOSE pairs converters
leave at the edges).

What it does not do: no dynamic shapes, no control flow, no sequences, no training ops,
no mutation (every class is frozen; build a new graph with ``dataclasses.replace``).
Shape rules per op are in ``compilers.shapes``; op semantics in ``compilers.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

from .errors import GraphError
from .ir_base import (  # noqa: F401  (re-exported: the IR's one import point)
    _KIND_CHECK,
    FUSABLE,
    FUSED_ACTIVATIONS,
    OP_ARITY,
    OP_ATTRS,
    OP_DEFAULTS,
    ROUNDINGS,
    AttrValue,
    DType,
    Node,
    Op,
    Quant,
    Tensor,
    fresh_name,
)
from .shapes import infer_node


@dataclass(frozen=True)
class Graph:
    """A static dataflow graph. ``tensors`` maps every name (inputs, constants, node
    outputs) to its ``Tensor``; constants are the tensors with ``data``."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    tensors: Mapping[str, Tensor]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    @classmethod
    def make(cls, name: str, inputs: Iterable[str], outputs: Iterable[str],
             nodes: Iterable[Node], tensors: Iterable[Tensor]) -> "Graph":
        return cls(name, tuple(inputs), tuple(outputs), tuple(nodes), {t.name: t for t in tensors})

    # ---- queries -------------------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r}: no tensor {name!r}") from None

    @property
    def constants(self) -> dict[str, Tensor]:
        return {n: t for n, t in self.tensors.items() if t.is_const}

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that writes it (inputs and constants have none)."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, tuple[Node, ...]]:
        """Tensor name -> the nodes that read it, in node order (each node once)."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                out.setdefault(i, []).append(n)
        return {k: tuple(v) for k, v in out.items()}

    def topological_order(self) -> tuple[Node, ...]:
        """Nodes ordered so that every producer comes before its consumers (stable: keeps
        the given order where it is already valid). Raises ``GraphError`` on a cycle."""
        prod = self.producers()
        index = {id(n): i for i, n in enumerate(self.nodes)}
        state: dict[int, int] = {}  # 1 = on the stack, 2 = done
        order: list[Node] = []
        for root in self.nodes:
            stack: list[tuple[Node, int]] = [(root, 0)]
            while stack:
                node, k = stack.pop()
                if k == 0:
                    if state.get(index[id(node)]) == 2:
                        continue
                    state[index[id(node)]] = 1
                deps = [prod[i] for i in node.inputs if i in prod]
                if k < len(deps):
                    stack.append((node, k + 1))
                    dep = deps[k]
                    s = state.get(index[id(dep)])
                    if s == 1:
                        raise GraphError(f"{dep.label()}: cycle through {node.label()}")
                    if s is None:
                        stack.append((dep, 0))
                    continue
                state[index[id(node)]] = 2
                order.append(node)
        return tuple(order)

    def toposorted(self) -> "Graph":
        return Graph(self.name, self.inputs, self.outputs, self.topological_order(), self.tensors)

    # ---- checks --------------------------------------------------------------------------
    def validate(self) -> "Graph":
        """Check the graph; raise ``GraphError`` naming the node and the problem. Returns
        the graph so calls can be chained."""
        g = self.name
        for k, t in self.tensors.items():
            if k != t.name:
                raise GraphError(f"graph {g!r}: tensor stored under {k!r} is named {t.name!r}")
        if len(set(self.inputs)) != len(self.inputs):
            raise GraphError(f"graph {g!r}: duplicate graph input")
        for i in self.inputs:
            if i not in self.tensors:
                raise GraphError(f"graph {g!r}: graph input {i!r} has no tensor")
            if self.tensors[i].is_const:
                raise GraphError(f"graph {g!r}: graph input {i!r} is a constant")
        written: dict[str, Node] = {}
        defined = set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        for node in self.nodes:
            self._check_node(node, written, defined)
        for o in self.outputs:
            if o not in self.tensors or not (o in written or o in self.inputs or self.tensors[o].is_const):
                raise GraphError(f"graph {g!r}: graph output {o!r} is never defined")
        self.topological_order()
        for node in self.nodes:
            ins = [self.tensors[i] for i in node.inputs]
            outs = [self.tensors[o] for o in node.outputs]
            try:
                expected = infer_node(node, ins, outs)
            except GraphError:
                raise
            except Exception as e:  # a rule tripping over malformed attributes
                raise GraphError(f"{node.label()}: {e}") from e
            for name, (shape, dtype) in zip(node.outputs, expected, strict=True):
                t = self.tensors[name]
                if dtype is not None and t.dtype is not dtype:
                    raise GraphError(f"{node.label()}: output {name!r} is {t.dtype.value}, "
                                     f"op gives {dtype.value}")
                if shape is not None and t.shape != shape:
                    raise GraphError(f"{node.label()}: output {name!r} has shape {t.shape}, "
                                     f"op gives {shape}")
        return self

    def _check_node(self, node: Node, written: dict[str, Node], defined: set[str]) -> None:
        where = node.label()
        lo, hi, n_out = OP_ARITY[node.op]
        if not lo <= len(node.inputs) <= hi:
            raise GraphError(f"{where}: {len(node.inputs)} inputs, {node.op.name} takes {lo}..{hi}")
        if len(node.outputs) != n_out:
            raise GraphError(f"{where}: {len(node.outputs)} outputs, {node.op.name} gives {n_out}")
        schema = OP_ATTRS.get(node.op, {})
        names = [k for k, _ in node.attrs]
        if names != sorted(set(names)):
            raise GraphError(f"{where}: attributes not sorted or duplicated: {names}")
        if set(names) != set(schema):
            raise GraphError(f"{where}: attributes {sorted(names)}, expected {sorted(schema)}")
        for k, v in node.attrs:
            if not _KIND_CHECK[schema[k]](v):
                raise GraphError(f"{where}: attribute {k!r}={v!r} is not of kind {schema[k]}")
            if k == "fused" and v not in FUSED_ACTIVATIONS:
                raise GraphError(f"{where}: fused activation {v!r}, expected one of {FUSED_ACTIVATIONS}")
            if k == "rounding" and v not in ROUNDINGS:
                raise GraphError(f"{where}: rounding {v!r}, expected one of {ROUNDINGS}")
        for i in node.inputs:
            if i not in self.tensors:
                raise GraphError(f"{where}: undefined input {i!r}")
            if not self.tensors[i].is_const and i not in defined:
                raise GraphError(f"{where}: input {i!r} is neither a graph input, a constant "
                                 f"nor any node's output")
        for o in node.outputs:
            if o not in self.tensors:
                raise GraphError(f"{where}: output {o!r} has no tensor")
            if o in written:
                raise GraphError(f"{where}: duplicate output {o!r} (also written by "
                                 f"{written[o].label()})")
            if o in self.inputs or self.tensors[o].is_const:
                raise GraphError(f"{where}: output {o!r} overwrites a graph input or constant")
            written[o] = node


__all__ = ["FUSABLE", "FUSED_ACTIVATIONS", "OP_ARITY", "OP_ATTRS", "OP_DEFAULTS", "ROUNDINGS", "AttrValue", "DType",
           "Graph", "Node", "Op", "Quant", "Tensor", "fresh_name"]
