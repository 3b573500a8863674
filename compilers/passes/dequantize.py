"""The float32 twin of a quantised graph: ``dequantize_graph(graph) -> Graph``.

What it does: every tensor with a ``Quant`` becomes float32 without one (constants hold
their dequantised values ``(q - zero_point) * scale``, per channel where the ``Quant`` is);
QUANTIZE and DEQUANTIZE nodes become IDENTITY; a PAD on an integer tensor gets its
constant back in real units. It works on every quantised form the compiler has: QDQ graphs
(ours, tf2onnx's, onnxruntime's), lowered integer graphs (``lower_int8``, the TFLite
frontend's int8 models) and weight-only ("hybrid") graphs, whose DEQUANTIZEd int8 weights
become float constants. Graph inputs and outputs keep their names and shapes and become
float32: the twin takes and returns real values. ``optimize`` afterwards removes the
IDENTITYs and folds what became constant.

Why: a float32 build of a model that only exists quantised (an int8 .tflite, a QDQ ONNX)
is the same network computing in float with the quantised weights' values: the model to
compare against, and what a device without integer kernels runs.

What it does not do: undo the information lost to quantisation (weights keep their int8
grid), keep integer semantics (saturation, fixed-point rounding), or touch integer tensors
without a ``Quant`` (shapes, indices; a DEQUANTIZE of one is already refused by
``Graph.validate``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..calibration import dequantize_array
from ..ir import DType, Graph, Node, Op, Tensor
from .lower_int8 import adopt_input_quant

_INT = (DType.INT8, DType.UINT8, DType.INT16, DType.INT32)


def _float(t: Tensor) -> Tensor:
    if t.quant is None or t.dtype not in _INT:
        return t
    if t.is_const:
        return Tensor.const(t.name, dequantize_array(np.asarray(t.data), t.quant))
    return replace(t, dtype=DType.FLOAT32, quant=None)


def dequantize_graph(graph: Graph) -> Graph:
    """The float32 twin of ``graph`` (see the module docstring)."""
    graph = adopt_input_quant(graph.validate())
    tensors = {name: _float(t) for name, t in graph.tensors.items()}
    nodes = []
    for n in graph.nodes:
        if n.op in (Op.QUANTIZE, Op.DEQUANTIZE):
            n = Node(Op.IDENTITY, n.inputs, n.outputs, (), n.name)
        elif n.op is Op.PAD:
            src = graph.tensors[n.inputs[0]]
            if src.quant is not None and src.dtype in _INT:
                raw = float(n.attr_number("value"))
                real = (raw - src.quant.zero_point[0]) * src.quant.scale[0]
                attrs = tuple((k, real if k == "value" else v) for k, v in n.attrs)
                n = replace(n, attrs=attrs)
        nodes.append(n)
    return Graph.make(graph.name, graph.inputs, graph.outputs, nodes,
                      tensors.values()).validate()


__all__ = ["dequantize_graph"]
