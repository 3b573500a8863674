"""Dead-code elimination: drop every node and tensor that does not reach a graph output.

What it does: marks, from the graph outputs backwards, the nodes whose results are needed;
keeps those (in their order) and the tensors they mention, the graph inputs and outputs.
Constants nobody reads any more (weights replaced by folding, BN parameters) disappear,
which is what shrinks the flash image.

What it does not do: graph inputs are never removed, even unused: they are the model's
interface (the device writes them).
"""

from __future__ import annotations

from ..ir import Graph


def dead_code(graph: Graph) -> Graph:
    needed = set(graph.outputs)
    live = []
    for node in reversed(graph.topological_order()):
        if any(o in needed for o in node.outputs):
            live.append(node)
            needed.update(node.inputs)
    keep = set(id(n) for n in live)
    nodes = tuple(n for n in graph.nodes if id(n) in keep)
    used = set(graph.inputs) | set(graph.outputs) | {t for n in nodes
                                                      for t in (*n.inputs, *n.outputs)}
    tensors = {k: v for k, v in graph.tensors.items() if k in used}
    return Graph(graph.name, graph.inputs, graph.outputs, nodes, tensors)
