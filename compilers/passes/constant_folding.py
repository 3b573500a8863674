"""Constant folding: a node whose inputs are all constants becomes a constant.

What it does: walks the nodes in topological order; a node reading only constants is run
once with the reference interpreter (``compilers.reference.run`` on a one-node graph, so
the value is by definition what the node computed, fused activation included) and its
output tensor gets that value as ``data``; the node is removed. Chains fold in one walk.
The constants it read stay in the graph: ``dead_code`` drops those nobody reads any more.

What it does not fold, on purpose: DEQUANTIZE of a constant. In a QDQ graph the pattern
``int8 weight -> DEQUANTIZE -> CONV`` is how a weight's quantisation (its ``Quant``) reaches
the int8 lowering, which consumes the integer data and its scale; folding it would turn the
weight into float32 (4x the flash) and erase the pattern. QUANTIZE of a constant *is*
folded: it yields exactly that form, an integer constant carrying its ``Quant``
(mnist-8's QDQ model quantises its float FC weight at run time; folded, it is an int8
weight like the others).
"""

from __future__ import annotations

import dataclasses

from .. import reference
from ..ir import Graph, Op

NOT_FOLDED = frozenset({Op.DEQUANTIZE})


def constant_folding(graph: Graph) -> Graph:
    tensors = dict(graph.tensors)
    nodes = []
    for node in graph.topological_order():
        if node.op in NOT_FOLDED or not all(tensors[i].is_const for i in node.inputs):
            nodes.append(node)
            continue
        ins = [tensors[i] for i in dict.fromkeys(node.inputs)]
        one = Graph.make(f"fold {node.name}", (), node.outputs, [node],
                         ins + [tensors[o] for o in node.outputs])
        values = reference.run(one, {})
        for o in node.outputs:
            tensors[o] = dataclasses.replace(tensors[o], data=values[o])
    return Graph(graph.name, graph.inputs, graph.outputs, tuple(nodes), tensors)
