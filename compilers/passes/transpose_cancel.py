"""Transpose cancellation: adjacent inverse TRANSPOSEs cancel, TRANSPOSEs are pushed
through element-wise ops to meet their inverse, and transposes that move no data become
RESHAPEs.

Layout decision (why there is no ``layout_nhwc`` pass here). The IR defines CONV, the pools
and BATCH_NORM in NCHW (``compilers.ir``), and ``reference.run`` is the oracle for every
pass. A pass that "converts the graph to NHWC" would need either a layout attribute the IR
does not have, or a TRANSPOSE pair around every conv that the next pass cancels again: the
graph would be no more NHWC than before, only noisier. So the IR stays NCHW-defined and
**layout is an emission-time decision of the backends**: a TFLM/CMSIS-NN backend stores
every rank-4 activation as (N, H, W, C) and every CONV weight as OHWI (depthwise, i.e.
``group == C_in`` with one filter per channel, as 1HWC); that is a consistent relabelling
of memory, sizes are unchanged (the memory planner's numbers hold), and the only data
movement left is the TRANSPOSE nodes that remain in the graph, which a backend emits as
real transposes. What this module does is remove the transposes that converters leave
behind: tflite2onnx/tf2onnx graphs (the shared mlperf_tiny ``*.onnx``) carry NHWC<->NCHW
Transposes at their edges and around flattening, e.g. ResNet-8's
``AvgPool [1,64,1,1] -> Transpose(0,2,3,1) -> Reshape [1,64]``, which is no data movement.
What stays is real in the IR: the int8 tf2onnx models take an NHWC input and open with
``Transpose(0,3,1,2)`` into the NCHW-defined convs, and the TFLite frontend writes
``Transpose(0,2,3,1)`` before a flatten (micro_speech). A backend storing the conv/pool
tensors channels-last finds the same bytes on both sides of such a transpose:
``storage_noop_transposes(graph)`` names them, and ``planner.plan(graph, views=...)``
then plans them in place, as TFLM (which has no such transposes) does.

Rules, to a fixed point:

* ``TRANSPOSE(p2) . TRANSPOSE(p1)`` reads the first one's input with ``p1[p2[i]]``; an
  identity permutation is removed (``rewrite.bypass``).
* a TRANSPOSE that only moves size-1 axes (the non-1 axes keep their order) is a RESHAPE.
* push-down: ``E(TRANSPOSE(x, p), c)`` with E element-wise (unary activations, CAST, the
  arithmetic ops with a constant operand, whose constant is transposed by ``p``'s inverse,
  or with both operands transposed by the same ``p``) becomes ``TRANSPOSE(E(x, c'), p)``
  when E is the transpose's only reader. Pushing is kept only if, after cancelling, the
  graph has fewer TRANSPOSE nodes, or as many moving fewer elements; otherwise the pass
  returns the result of the first two rules alone. QUANTIZE/DEQUANTIZE are not pushed
  through (per-channel axes would need relabelling, and moving a transpose from the int8
  to the float side of a DQ makes it 4x the bytes).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node, Op
from .rewrite import Editor, bypass

LAYOUT_OPS = frozenset({Op.CONV, Op.CONV_TRANSPOSE, Op.MAX_POOL, Op.AVG_POOL, Op.BATCH_NORM})
UNARY = frozenset({Op.RELU, Op.CLIP, Op.LEAKY_RELU, Op.SIGMOID, Op.HARD_SIGMOID,
                   Op.HARD_SWISH, Op.TANH, Op.IDENTITY, Op.CAST})
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.PRELU})


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def moves_no_data(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """True if transposing ``shape`` by ``perm`` keeps the row-major order of the values:
    the axes longer than 1 stay in the same relative order."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


def _cancel_once(ed: Editor) -> bool:
    for node in list(ed.nodes):
        if node.op is not Op.TRANSPOSE:
            continue
        perm = node.attr_ints("perm")
        x = ed.tensors[node.inputs[0]]
        if perm == tuple(range(len(perm))) and bypass(ed, node):
            return True
        first = ed.producer(node.inputs[0])
        if first is not None and first.op is Op.TRANSPOSE:
            p1 = first.attr_ints("perm")
            ed.replace(node, Node.make(Op.TRANSPOSE, first.inputs, node.outputs, name=node.name,
                                       perm=tuple(p1[j] for j in perm)))
            ed.drop_if_unused(first)
            return True
        if perm != tuple(range(len(perm))) and moves_no_data(x.shape, perm):
            shape = tuple(x.shape[p] for p in perm)
            ed.replace(node, Node.make(Op.RESHAPE, node.inputs, node.outputs, name=node.name,
                                       shape=shape))
            return True
    return False


def _cancel(ed: Editor) -> None:
    while _cancel_once(ed):
        pass


def _push_once(ed: Editor) -> bool:
    for t in list(ed.nodes):
        if t.op is not Op.TRANSPOSE:
            continue
        e = ed.sole_consumer(t.outputs[0])
        if e is None or (e.op not in UNARY and e.op not in BINARY):
            continue
        perm = t.attr_ints("perm")
        inv = _inverse(perm)
        rank = len(perm)
        new_inputs: list[str] = []
        absorbed: list[Node] = [t]
        replaced: list[str] = []
        ok = True
        for k, name in enumerate(e.inputs):
            if name == t.outputs[0]:
                new_inputs.append(t.inputs[0])
                continue
            if e.op is Op.PRELU and k == 0:  # the transposed operand must be x, not slope
                ok = False
                break
            other = ed.tensors[name]
            prod = ed.producer(name)
            if other.is_const and len(other.shape) <= rank:
                full = np.asarray(other.data).reshape((1,) * (rank - len(other.shape)) + other.shape)
                quant = other.quant if other.quant is None or other.quant.axis is None else None
                new_inputs.append(ed.add_const(f"{name}__t", np.transpose(full, inv), quant))
                replaced.append(name)
            elif (prod is not None and prod.op is Op.TRANSPOSE and prod.attr_ints("perm") == perm
                  and ed.sole_consumer(name) is e):
                new_inputs.append(prod.inputs[0])
                absorbed.append(prod)
            else:
                ok = False
                break
        if not ok:
            continue
        z = ed.tensors[e.outputs[0]]
        inner = ed.add_tensor(f"{z.name}__pre_transpose", z, tuple(z.shape[i] for i in inv))
        ed.replace(e, Node(e.op, tuple(new_inputs), (inner,), e.attrs, e.name),
                   Node.make(Op.TRANSPOSE, [inner], [z.name], name=f"{t.name}__pushed",
                             perm=perm))
        for a in absorbed:
            ed.drop_if_unused(a)
        for name in replaced:  # constants only this node read, now transposed copies
            if name not in ed.outputs and not ed.consumers(name):
                del ed.tensors[name]
        return True
    return False


def _score(ed: Editor) -> tuple[int, int]:
    ts = [n for n in ed.nodes if n.op is Op.TRANSPOSE]
    return len(ts), sum(math.prod(ed.tensors[n.inputs[0]].shape) for n in ts)


def transpose_cancel(graph: Graph) -> Graph:
    base = Editor(graph)
    _cancel(base)
    pushed = Editor(base.graph())
    while True:
        moved = _push_once(pushed)
        _cancel(pushed)
        if not moved:
            break
    return (pushed if _score(pushed) < _score(base) else base).graph()


def storage_noop_transposes(graph: Graph) -> frozenset[str]:
    """Outputs of the rank-4 TRANSPOSEs that move no bytes in a backend storing the tensors
    read or written by CONV, CONV_TRANSPOSE, the pools and BATCH_NORM channels-last (NHWC)
    and every other tensor in its own row-major order: ``(0,2,3,1)`` from such an op's
    output to a tensor no such op reads, and ``(0,3,1,2)`` from a tensor no such op touches
    to one such an op reads. Only direct producers and readers are looked at (not through
    element-wise ops or QUANTIZE/DEQUANTIZE): it is an estimate for the planner, the
    backend's layout assignment is the authority."""
    prod = graph.producers()
    cons = graph.consumers()

    def made_by_layout_op(t: str) -> bool:
        return t in prod and prod[t].op in LAYOUT_OPS

    def read_by_layout_op(t: str) -> bool:
        return any(n.op in LAYOUT_OPS for n in cons.get(t, ()))

    out = set()
    for n in graph.nodes:
        if n.op is not Op.TRANSPOSE or len(n.attr_ints("perm")) != 4:
            continue
        x, y = n.inputs[0], n.outputs[0]
        if graph.tensors[x].is_const:
            continue
        perm = n.attr_ints("perm")
        if perm == (0, 2, 3, 1) and made_by_layout_op(x) and not read_by_layout_op(y):
            out.add(y)
        elif (perm == (0, 3, 1, 2) and not made_by_layout_op(x) and not read_by_layout_op(x)
              and read_by_layout_op(y)):
            out.add(y)
    return frozenset(out)
