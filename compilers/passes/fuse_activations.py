"""Activation fusion: a RELU, CLIP(0, 6), CLIP(-1, 1) or TANH right after a fusable op
(``ir.FUSABLE``: CONV, CONV_TRANSPOSE, GEMM, MATMUL, ADD, SUB, MUL, DIV, the pools,
CONCAT) becomes that op's ``fused`` activation (relu, relu6, relu_n1_to_1, tanh; a
CLIP(0, +inf) is a relu).

Conditions: the op's ``fused`` is "none", its output is read only by the activation and is
not a graph output, and that output is a **float** tensor.

Quantised graphs. In float the fused activation is exactly the activation node
(``reference.FUSED`` and the RELU/CLIP/TANH kernels compute the same float32 values), so
the rewrite is bit-exact. In a QDQ graph the ops between DEQUANTIZE and QUANTIZE are float
(``DQ -> CONV -> RELU -> Q``), so they are fused there too, giving ``DQ -> CONV[relu] -> Q``,
the shape of a TFLite int8 CONV_2D with a fused activation. An activation on an *integer*
tensor is never fused: there ``fused`` means a clamp to the quantised output range that
the int8 kernels apply (the reference interpreter skips ``fused`` on integer outputs), so
fusing would change the reference result. An activation after a Q/DQ boundary
(``CONV -> Q -> DQ -> RELU``) is not fused either: its input comes from DEQUANTIZE, which is
not fusable, and hopping over the Q/DQ pair would move the clamp across a rounding step.
"""

from __future__ import annotations

import math

from ..ir import FUSABLE, Graph, Node, Op
from .rewrite import Editor, fused_of


def activation_of(node: Node) -> str | None:
    """The ``fused`` name equivalent to ``node``, or None if it is no fusable activation."""
    if node.op is Op.RELU:
        return "relu"
    if node.op is Op.TANH:
        return "tanh"
    if node.op is Op.CLIP:
        lo, hi = node.attr_number("min"), node.attr_number("max")
        if lo == 0 and hi == 6:
            return "relu6"
        if lo == -1 and hi == 1:
            return "relu_n1_to_1"
        if lo == 0 and math.isinf(hi) and hi > 0:
            return "relu"
    return None


def fuse_activations(graph: Graph) -> Graph:
    ed = Editor(graph)
    for act in list(ed.nodes):
        kind = activation_of(act)
        x = act.inputs[0]
        prod = ed.producer(x)
        if kind is None or prod is None or prod.op.name not in FUSABLE:
            continue
        if fused_of(prod) != "none" or ed.sole_consumer(x) is not act:
            continue
        if not (ed.tensors[x].dtype.is_float and ed.tensors[act.outputs[0]].dtype.is_float):
            continue
        attrs = {**prod.attr_dict, "fused": kind}
        ed.replace(prod, Node.make(prod.op, prod.inputs, act.outputs, name=prod.name, **attrs))
        ed.remove(act)
        del ed.tensors[x]
    return ed.graph()


def unfuse_tanh(graph: Graph) -> Graph:
    """The inverse for ``fused == "tanh"``: the op writes a new tensor and a TANH node
    follows. Run before int8 quantisation: integer kernels clamp, they cannot apply a tanh,
    but an int8 TANH node (fixed 1/128 output scale) can."""
    ed = Editor(graph)
    for node in list(ed.nodes):
        if fused_of(node) != "tanh":
            continue
        y = ed.tensors[node.outputs[0]]
        pre = ed.add_tensor(f"{y.name}__pre_tanh", y, y.shape)
        ed.replace(node, Node.make(node.op, node.inputs, [pre], name=node.name,
                                   **{**node.attr_dict, "fused": "none"}),
                   Node.make(Op.TANH, [pre], [y.name], name=f"{node.name}/tanh"))
    return ed.graph()
