"""Division by a constant as multiplication: ``DIV(x, c)`` with a float constant ``c`` (no
zero in it) becomes ``MUL(x, 1 / c)``.

Why: exporters divide by constants for normalisation (Keras ``Rescaling``, ``x / 255``,
torch ``x / 6`` in a hand-written hard-swish); ``MUL`` is on every TFLM board and has an
int8 kernel, ``DIV`` is on few boards and has no int8 lowering here. ``x * (1 / c)`` differs
from ``x / c`` by at most one float32 rounding (an ulp), well inside the float tolerance
the backends are held to.

What it does not do: integer division (truncation semantics differ), division of a
constant by an activation, division by a computed tensor.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from .rewrite import Editor


def div_by_constant(graph: Graph) -> Graph:
    ed = Editor(graph)
    changed = False
    for node in list(ed.nodes):
        if node.op is not Op.DIV:
            continue
        c = ed.tensors[node.inputs[1]]
        if not c.is_const or not c.dtype.is_float or c.quant is not None:
            continue
        data = np.asarray(c.data)
        if np.any(data == 0) or not np.all(np.isfinite(data)):
            continue
        recip = ed.add_const(f"{c.name}__reciprocal", (data.dtype.type(1) / data).astype(data.dtype))
        ed.replace(node, Node(Op.MUL, (node.inputs[0], recip), node.outputs, node.attrs, node.name))
        changed = True
    return ed.graph() if changed else graph


__all__ = ["div_by_constant"]
