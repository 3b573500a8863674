"""Model statistics: parameters, multiply-accumulates, flash bytes and op counts.

What it does: ``stats(graph) -> ModelStats``:

* ``params``: elements of all constant tensors (weights, biases, folded constants);
* ``flash_bytes``: their bytes at their stored dtype (an int8 weight is 1 byte an element,
  its int32 bias 4). Tensors computed from constants only (a QDQ graph's
  ``DEQUANTIZE(int8 weight)``) are neither params nor flash: the int8 kernels read the
  integer constant, a float backend folds them (run ``constant_folding`` first);
* ``macs``: multiply-accumulates of CONV (grouped and depthwise: each output element
  costs ``C_in / group * prod(kernel)``), CONV_TRANSPOSE (each *input* element is
  scattered into ``C_out / group * prod(kernel)`` outputs), GEMM (``M * N * K``) and MATMUL
  (output elements times the inner dimension). Nothing else is counted: this is the
  "conv and FC MACs" figure the MLPerf Tiny tables (and ``models.json``'s
  ``macs_conv_fc``) quote; bias adds, activations, pools and softmax are not MACs;
* ``ops``: how many nodes of each op (``Counter`` keyed by op name), ``macs_by_op`` the
  MACs per op name.

What it does not do: no cycle or latency estimate (that needs a device profile), no RAM
figure (``compilers.planner``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .ir import Graph, Node, Op


@dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int
    flash_bytes: int
    ops: Counter[str]
    macs_by_op: Counter[str]


def _elems(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of one node (0 for ops that are not CONV/GEMM/MATMUL)."""
    def shape(name: str) -> tuple[int, ...]:
        return graph.tensors[name].shape

    if node.op is Op.CONV:
        w = shape(node.inputs[1])
        return _elems(shape(node.outputs[0])) * _elems(w[1:])
    if node.op is Op.CONV_TRANSPOSE:
        w = shape(node.inputs[1])
        return _elems(shape(node.inputs[0])) * _elems(w[1:])
    if node.op is Op.GEMM:
        a = shape(node.inputs[0])
        k = a[0] if node.attr_bool("trans_a") else a[1]
        return _elems(shape(node.outputs[0])) * k
    if node.op is Op.MATMUL:
        return _elems(shape(node.outputs[0])) * shape(node.inputs[0])[-1]
    return 0


def stats(graph: Graph) -> ModelStats:
    consts = graph.constants.values()
    macs: Counter[str] = Counter()
    for n in graph.nodes:
        macs[n.op.name] += node_macs(graph, n)
    return ModelStats(params=sum(t.size for t in consts),
                      macs=sum(macs.values()),
                      flash_bytes=sum(t.nbytes for t in consts),
                      ops=Counter(n.op.name for n in graph.nodes),
                      macs_by_op=+macs)
