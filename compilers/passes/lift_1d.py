"""1-D windows as 2-D ones of height 1: ``lift_1d(graph) -> Graph``.

What it does: every CONV, CONV_TRANSPOSE, MAX_POOL and AVG_POOL over one spatial axis
(input ``(N, C, W)``: torch ``Conv1d``/``MaxPool1d``, tf2onnx's Keras ``Conv1D`` once its
Unsqueeze/Squeeze are simplified) becomes ``RESHAPE (N, C, 1, W) -> the 2-D op with
kernel ``(1, k)``, stride ``(1, s)``, dilation ``(1, d)``, pads ``((0, 0), (b, e))`` (the
weight reshaped to ``(O, I, 1, k)``, a constant) -> RESHAPE (N, O, W')``. That is the same
arithmetic, value for value: a window of height 1 over a height-1 input. Backends that
only have 2-D kernels (TFLite's CONV_2D, TFLM) then take 1-D models; adjacent lifted ops
meet as ``RESHAPE(N,O,W') -> RESHAPE(N,O,1,W')``, which ``identity_elimination`` removes.

What it does not do: 3-D windows (those stay and the backends refuse them by name), a
weight that is computed rather than constant (the op stays 1-D).
"""

from __future__ import annotations

from ..ir import Graph, Node, Op
from .rewrite import Editor, with_attrs

WINDOW_OPS = frozenset({Op.CONV, Op.CONV_TRANSPOSE, Op.MAX_POOL, Op.AVG_POOL})


def _lift(ed: Editor, node: Node) -> bool:
    x, y = ed.tensors[node.inputs[0]], ed.tensors[node.outputs[0]]
    if len(x.shape) != 3:
        return False
    weighted = node.op in (Op.CONV, Op.CONV_TRANSPOSE)
    if weighted and not ed.is_const(node.inputs[1]):
        return False
    n, c, w = x.shape
    x4 = ed.add_tensor(f"{x.name}__2d", x, (n, c, 1, w))
    y4 = ed.add_tensor(f"{y.name}__2d", y, (y.shape[0], y.shape[1], 1, y.shape[2]))
    attrs: dict[str, object] = {
        "strides": (1,) + node.attr_ints("strides"),
        "dilations": (1,) + node.attr_ints("dilations"),
        "pads": ((0, 0),) + node.attr_pairs("pads"),
    }
    inputs = [x4, *node.inputs[1:]]
    if weighted:
        wt = ed.tensors[node.inputs[1]]
        assert wt.data is not None
        q = wt.quant
        inputs[1] = ed.add_const(f"{wt.name}__2d", wt.data.reshape(wt.shape[:2] + (1,) + wt.shape[2:]), q)
    else:
        attrs["kernel"] = (1,) + node.attr_ints("kernel")
    if node.op is Op.CONV_TRANSPOSE:
        attrs["output_padding"] = (0,) + node.attr_ints("output_padding")
    lifted = with_attrs(Node(node.op, tuple(inputs), (y4,), node.attrs, node.name), **attrs)
    ed.replace(node,
               Node.make(Op.RESHAPE, [x.name], [x4], name=f"{node.name}/lift", shape=(n, c, 1, w)),
               lifted,
               Node.make(Op.RESHAPE, [y4], [y.name], name=f"{node.name}/unlift", shape=y.shape))
    return True


def lift_1d(graph: Graph) -> Graph:
    ed = Editor(graph)
    changed = False
    for node in list(ed.nodes):
        if node.op in WINDOW_OPS:
            changed = _lift(ed, node) or changed
    return ed.graph() if changed else graph


__all__ = ["lift_1d"]
