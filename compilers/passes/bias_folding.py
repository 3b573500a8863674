"""Bias folding: an ADD of a per-output-channel bias after a CONV / CONV_TRANSPOSE, or
after a 2-D MATMUL / bias-less GEMM, becomes that op's bias.

What it does:

* ``ADD(CONV(x, w[, b]), c)`` with ``c`` a constant broadcasting as one value per output
  channel (shape (O,1,1), (1,O,1,1), (1,1,1,1)...) -> ``CONV(x, w, b + c)``. CNTK's mnist-8
  and other exporters write conv biases this way.
* ``ADD(MATMUL(a, b), c)`` with a, b 2-D and ``c`` of shape (N,) / (1, N) / (M, N) ->
  ``GEMM(a, b, c)`` (alpha = beta = 1): TFLite's FULLY_CONNECTED as tf2onnx writes it. Here
  ``c`` may also be a DEQUANTIZE of a constant (the int32 bias of a QDQ graph), which keeps
  the DQ -> GEMM -> Q pattern an int8 lowering expects. Same for a GEMM without C.
* The ADD's fused activation moves onto the new op.

Conditions: float result; the producer's output is read only by the ADD and is not a graph
output; the producer has no fused activation; the ADD does not broadcast the result to a
bigger shape.

Precision: bit-exact when the producer had no bias (the reference adds the bias exactly as
ADD does); with an existing CONV bias ``(y + b) + c`` becomes ``y + (b + c)``, a last-bit
change.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from .rewrite import Editor, fused_of


def _channel_bias(c: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """``c`` as a vector of one bias per output channel (axis 1), or None if it is not one."""
    rank = len(out_shape)
    if c.ndim > rank:
        return None
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if full.shape[0] != 1 or any(d != 1 for d in full.shape[2:]) or full.shape[1] not in (1, out_shape[1]):
        return None
    return np.broadcast_to(full.reshape(-1), (out_shape[1],))


def _is_bias_operand(ed: Editor, name: str) -> bool:
    if ed.is_const(name):
        return True
    prod = ed.producer(name)
    return prod is not None and prod.op is Op.DEQUANTIZE and ed.is_const(prod.inputs[0])


def _fold(ed: Editor, add: Node) -> bool:
    for k in (0, 1):
        y, c = add.inputs[k], add.inputs[1 - k]
        if y == c:
            continue
        prod = ed.producer(y)
        if prod is None or fused_of(prod) != "none" or ed.sole_consumer(y) is not add:
            continue
        ty, out = ed.tensors[y], ed.tensors[add.outputs[0]]
        if not ty.dtype.is_float or ty.shape != out.shape:
            continue
        fused = add.attr_str("fused")
        if prod.op in (Op.CONV, Op.CONV_TRANSPOSE) and ed.is_const(c):
            vec = _channel_bias(np.asarray(ed.tensors[c].data), ty.shape)
            if vec is None:
                continue
            if len(prod.inputs) > 2:
                if not ed.is_const(prod.inputs[2]):
                    continue
                vec = ed.tensors[prod.inputs[2]].data + vec
            bias = ed.add_const(f"{add.outputs[0]}__bias", np.asarray(vec, ty.dtype.numpy))
            attrs = {**prod.attr_dict, "fused": fused}
            new = Node.make(prod.op, [prod.inputs[0], prod.inputs[1], bias], add.outputs,
                            name=prod.name, **attrs)
        elif ((prod.op is Op.MATMUL or (prod.op is Op.GEMM and len(prod.inputs) == 2))
              and len(ty.shape) == 2 and _is_bias_operand(ed, c)
              and all(len(ed.tensors[i].shape) == 2 for i in prod.inputs[:2])
              and np.broadcast_shapes(ed.tensors[c].shape, ty.shape) == ty.shape):
            attrs = (dict(alpha=1.0, beta=1.0, trans_a=False, trans_b=False)
                     if prod.op is Op.MATMUL else
                     {**prod.attr_dict, "beta": 1.0})
            attrs["fused"] = fused
            new = Node.make(Op.GEMM, [prod.inputs[0], prod.inputs[1], c], add.outputs,
                            name=prod.name, **attrs)
        else:
            continue
        ed.replace(prod, new)
        ed.remove(add)
        del ed.tensors[y]
        return True
    return False


def bias_folding(graph: Graph) -> Graph:
    ed = Editor(graph)
    for add in [n for n in ed.nodes if n.op is Op.ADD]:
        _fold(ed, add)
    return ed.graph()
