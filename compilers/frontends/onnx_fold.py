"""Import-time constant evaluation for the ONNX frontend: shape arithmetic and every other node
whose inputs are all constants becomes a constant before it is converted.

What it does:

* ``foldable(proto)``: the nodes whose outputs are known at import once the input shapes
  are static: ``Shape`` and ``Size`` (of any tensor: every shape is static by then), and
  every node all of whose inputs are initializers, ``Constant`` outputs or outputs of
  foldable nodes. QuantizeLinear/DequantizeLinear are never folded (their ``Quant`` is
  what the int8 lowering reads) and neither is a node without outputs we could hold.
  This is what turns exporter shape arithmetic into plain graphs: tf2onnx's
  ``Shape -> Gather/Slice -> Concat -> Reshape`` around Keras' Flatten, torch's
  ``x.view(x.size(0), -1)`` (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``),
  ``ConstantOfShape``/``Range``/``Expand`` on constants, once the batch is fixed.
* ``evaluate(node, values, opset)``: the outputs of one foldable node, computed by
  ``onnx.reference.ReferenceEvaluator`` (onnx's own reference implementation of every
  standard op, so there is no second definition of ops we do not convert) on a one-node
  model, or directly for ``Shape``/``Size`` from the static shape.

Why not onnxsim / onnxslim / onnxoptimizer: they install here, but each would be a runtime
dependency of the server for what is, once input shapes are fixed, a walk over the nodes
(onnxsim and onnxoptimizer are native wheels for a few platforms; onnxslim pulls in sympy
and ml-dtypes and rewrites the graph beyond folding, e.g. fusing Gemm patterns, which would
put a second optimiser in front of our passes), and none of them helps the TFLite frontend,
whose ``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE`` chains need the same folding
(``frontends.tflite_fold``). onnx's reference evaluator is part of the ``onnx`` package we
already depend on.

What it does not do: fold float ops on activations (the passes do the rest:
``passes.constant_folding``), evaluate custom domains, or change the graph's interface.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

NEVER = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
SHAPE_OPS = frozenset({"Shape", "Size"})
DEFAULT_DOMAINS = ("", "ai.onnx")


def foldable(graph: onnx.GraphProto) -> set[int]:
    """Indices of the nodes that fold to constants (see the module docstring)."""
    known = {t.name for t in graph.initializer}
    out: set[int] = set()
    for i, node in enumerate(graph.node):
        if node.domain not in DEFAULT_DOMAINS or node.op_type in NEVER:
            continue
        ins = [n for n in node.input if n]
        if node.op_type == "Constant" or node.op_type in SHAPE_OPS or \
                (ins and all(n in known for n in ins)):
            out.add(i)
            known.update(o for o in node.output if o)
    return out


def _shape(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    rank = len(shape)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    start = max(0, min(rank, start + rank if start < 0 else start))
    stop = rank if end is None else int(end)
    stop = max(0, min(rank, stop + rank if stop < 0 else stop))
    return np.asarray(shape[start:stop], np.int64)


def evaluate(node: onnx.NodeProto, values: Mapping[str, np.ndarray],
             shapes: Mapping[str, tuple[int, ...]], opset: int) -> list[np.ndarray]:
    """The output values of a foldable node. ``values``: constant inputs by name;
    ``shapes``: the static shape of every tensor (for Shape/Size)."""
    if node.op_type == "Shape":
        return [_shape(node, shapes[node.input[0]])]
    if node.op_type == "Size":
        return [np.asarray(int(np.prod(shapes[node.input[0]], dtype=np.int64)), np.int64)]
    names = [n for n in node.input if n]
    inits = [numpy_helper.from_array(np.asarray(values[n]), f"in{k}") for k, n in enumerate(names)]
    renamed = {n: f"in{k}" for k, n in enumerate(names)}
    outs = [o for o in node.output if o]
    one = helper.make_node(node.op_type, [renamed.get(n, "") for n in node.input],
                           [f"out{k}" for k in range(len(outs))], domain=node.domain)
    one.attribute.extend(node.attribute)
    g = helper.make_graph([one], "fold", [], [helper.make_tensor_value_info(f"out{k}", 0, None)
                                              for k in range(len(outs))], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    result = ReferenceEvaluator(model).run(None, {})
    return [np.asarray(r) for r in result]


__all__ = ["NEVER", "SHAPE_OPS", "evaluate", "foldable"]
