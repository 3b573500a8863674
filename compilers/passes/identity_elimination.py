"""Identity elimination: nodes that do not change their input go; reshape chains shorten.

What it does, until nothing changes:

* IDENTITY (ONNX Identity, inference Dropout), RESHAPE to the input's own shape, TRANSPOSE
  with the identity permutation and CAST to the input's own dtype are removed: their
  readers read the input instead (``rewrite.bypass``; a graph output keeps its name).
* RESHAPE of a RESHAPE reads the first one's input (a reshape only relabels the same
  row-major values); the first one goes if nobody else reads it.

What it does not do: a node between tensors whose quantisation differs is kept (it is a
requantisation point, not an identity); nothing is removed between a graph input and a
graph output (both names are the model's interface).
"""

from __future__ import annotations

from ..ir import Graph, Node, Op
from .rewrite import Editor, bypass


def _is_identity(ed: Editor, node: Node) -> bool:
    x = ed.tensors[node.inputs[0]]
    if node.op is Op.IDENTITY:
        return True
    if node.op is Op.RESHAPE:
        return node.attr_ints("shape") == x.shape
    if node.op is Op.TRANSPOSE:
        return node.attr_ints("perm") == tuple(range(len(x.shape)))
    if node.op is Op.CAST:
        return node.attr_dtype("to") is x.dtype
    return False


def identity_elimination(graph: Graph) -> Graph:
    ed = Editor(graph)
    changed = True
    while changed:
        changed = False
        for node in list(ed.nodes):
            if _is_identity(ed, node) and bypass(ed, node):
                changed = True
                break
            if node.op is Op.RESHAPE:
                first = ed.producer(node.inputs[0])
                if first is not None and first.op is Op.RESHAPE:
                    ed.replace(node, Node(node.op, first.inputs, node.outputs, node.attrs,
                                          node.name))
                    ed.drop_if_unused(first)
                    changed = True
                    break
    return ed.graph()
