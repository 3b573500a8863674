"""A small mutable editor that the passes use to build their new, frozen ``Graph``.

What it does: ``Editor(graph)`` copies a graph's inputs, outputs, nodes and tensors into
plain lists and dicts; a pass edits those (replace a node, point a node's input at another
tensor, rename a tensor, add a constant under a fresh name) and ``Editor.graph()`` freezes
the result, topologically sorted. ``bypass`` removes a node whose output equals its input
(IDENTITY, a RESHAPE to the same shape, ...), keeping graph output names stable.

What it does not do: no validation (``run_passes`` validates after every pass) and no
indexes: producers and consumers are found by scanning, which is fine at the few hundred
nodes a microcontroller model has.
"""

from __future__ import annotations

import numpy as np

from ..ir import FUSABLE, Graph, Node, Quant, Tensor, fresh_name


class Editor:
    """Mutable copy of a graph (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.name = graph.name
        self.inputs = list(graph.inputs)
        self.outputs = list(graph.outputs)
        self.nodes: list[Node] = list(graph.nodes)
        self.tensors: dict[str, Tensor] = dict(graph.tensors)

    # ---- queries ---------------------------------------------------------------------------
    def producer(self, name: str) -> Node | None:
        for n in self.nodes:
            if name in n.outputs:
                return n
        return None

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def sole_consumer(self, name: str) -> Node | None:
        """The one node reading ``name`` if exactly one does and it is no graph output."""
        if name in self.outputs:
            return None
        users = self.consumers(name)
        return users[0] if len(users) == 1 else None

    def is_const(self, name: str) -> bool:
        return self.tensors[name].is_const

    # ---- edits -----------------------------------------------------------------------------
    def replace(self, old: Node, *new: Node) -> None:
        """Put ``new`` (zero or more nodes) where ``old`` was."""
        i = self.nodes.index(old)
        self.nodes[i:i + 1] = list(new)

    def remove(self, node: Node) -> None:
        self.replace(node)

    def substitute(self, old: str, new: str) -> None:
        """Every node that reads ``old`` reads ``new`` instead."""
        self.nodes = [_swap_inputs(n, old, new) for n in self.nodes]

    def rename(self, old: str, new: str) -> None:
        """Tensor ``old`` is called ``new`` everywhere (writers, readers, graph outputs);
        ``old``'s entry is dropped: the caller has put the right ``new`` tensor in place."""
        self.nodes = [n if old not in n.inputs and old not in n.outputs else
                      Node(n.op, tuple(new if i == old else i for i in n.inputs),
                           tuple(new if o == old else o for o in n.outputs), n.attrs, n.name)
                      for n in self.nodes]
        self.outputs = [new if o == old else o for o in self.outputs]
        self.tensors.pop(old, None)

    def fresh(self, base: str) -> str:
        """A tensor name not used yet, derived from ``base``."""
        return fresh_name(base, self.tensors)

    def add_const(self, base: str, data: np.ndarray, quant: Quant | None = None) -> str:
        name = self.fresh(base)
        self.tensors[name] = Tensor.const(name, data, quant)
        return name

    def add_tensor(self, base: str, like: Tensor, shape: tuple[int, ...]) -> str:
        """A new activation tensor with ``like``'s dtype and quantisation (per-tensor only)
        and the given shape."""
        name = self.fresh(base)
        quant = like.quant if like.quant is None or like.quant.axis is None else None
        self.tensors[name] = Tensor(name, shape, like.dtype, quant)
        return name

    def drop_if_unused(self, node: Node) -> None:
        """Remove ``node`` and its output tensors if nothing reads them any more (local
        tidying after a rewrite; ``dead_code`` is the pass for the whole graph)."""
        if node in self.nodes and not any(o in self.outputs or self.consumers(o)
                                          for o in node.outputs):
            self.remove(node)
            for o in node.outputs:
                self.tensors.pop(o, None)

    def graph(self) -> Graph:
        g = Graph(self.name, tuple(self.inputs), tuple(self.outputs), tuple(self.nodes),
                  self.tensors)
        return g.toposorted()


def _swap_inputs(node: Node, old: str, new: str) -> Node:
    if old not in node.inputs:
        return node
    return Node(node.op, tuple(new if i == old else i for i in node.inputs), node.outputs,
                node.attrs, node.name)


def with_attrs(node: Node, **changes: object) -> Node:
    """``node`` with some attributes changed (kept name-sorted, as ``Node.make`` does)."""
    attrs = {**node.attr_dict, **changes}
    return Node.make(node.op, node.inputs, node.outputs, name=node.name, **attrs)


def fused_of(node: Node) -> str:
    return node.attr_str("fused") if node.op.name in FUSABLE else "none"


def bypass(ed: Editor, node: Node) -> bool:
    """Remove ``node`` (one input ``x``, one output ``y`` holding the same values with the
    same shape, dtype and quantisation) by making ``y``'s readers read ``x``. When ``y`` is
    a graph output its name is kept: ``x`` is renamed to ``y`` instead (possible when ``x``
    is written by a node and is neither a graph input nor output). Returns False, changing
    nothing, when the node cannot go."""
    x, y = node.inputs[0], node.outputs[0]
    tx, ty = ed.tensors[x], ed.tensors[y]
    if (tx.shape, tx.dtype, tx.quant) != (ty.shape, ty.dtype, ty.quant):
        return False
    if y not in ed.outputs:
        ed.remove(node)
        ed.substitute(y, x)
        del ed.tensors[y]
        return True
    if x in ed.outputs or x in ed.inputs or tx.is_const:
        return False
    ed.remove(node)
    ed.rename(x, y)
    return True
