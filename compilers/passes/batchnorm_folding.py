"""Batch-norm folding: a BATCH_NORM right after a CONV, CONV_TRANSPOSE, GEMM or 2-D MATMUL
is folded into that op's weights and bias.

What it does: with ``inv = scale / sqrt(var + eps)`` per output channel, the producer's
weight is multiplied by ``inv`` along its output-channel axis and its bias becomes
``(bias - mean) * inv + beta`` (bias 0 when absent); the producer then writes the
BATCH_NORM's output and the BATCH_NORM goes. Output-channel axes: CONV weight OIHW axis 0
(grouped and depthwise alike: one row per output channel); CONV_TRANSPOSE weight
(C_in, O/group, k...): output channel ``g * O/group + j``; GEMM: the columns of B (rows
when ``trans_b``), the new C is ``beta * C`` folded and ``beta`` becomes 1; a MATMUL of a
2-D activation by a 2-D constant becomes a GEMM with the folded bias as C (PyTorch's
``Linear -> BatchNorm1d`` exports as MatMul -> BatchNormalization, e.g. onnx2c's
mnist_pytorch).

Conditions: float tensors; the producer's output is read only by the BATCH_NORM and is
not a graph output; the producer has no fused activation; weight, bias and the four
BATCH_NORM parameters are constants. A lone BATCH_NORM (after anything else) stays.

Precision: the new parameters are computed in float64 and rounded once to the weight's
dtype, but the float32 arithmetic is regrouped (``conv(x, w*inv)`` instead of
``(conv(x, w) - mean) * inv``), so outputs change in the last bits: on the shared models
the relative error stays below 1e-6 (tests allow 1e-5).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from .rewrite import Editor, fused_of

FOLDS_INTO = frozenset({Op.CONV, Op.CONV_TRANSPOSE, Op.GEMM, Op.MATMUL})


def _fold(ed: Editor, bn: Node) -> bool:
    x = bn.inputs[0]
    prod = ed.producer(x)
    if prod is None or prod.op not in FOLDS_INTO or fused_of(prod) != "none":
        return False
    if ed.sole_consumer(x) is not bn or not ed.tensors[x].dtype.is_float:
        return False
    if not all(ed.is_const(i) for i in bn.inputs[1:]) or not all(ed.is_const(i) for i in prod.inputs[1:]):
        return False
    if prod.op is Op.MATMUL and not (len(ed.tensors[prod.inputs[0]].shape) == 2
                                     and len(ed.tensors[prod.inputs[1]].shape) == 2):
        return False
    scale, beta, mean, var = (np.asarray(ed.tensors[i].data, np.float64) for i in bn.inputs[1:])
    inv = scale / np.sqrt(var + bn.attr_float("epsilon"))
    wt = ed.tensors[prod.inputs[1]]
    w = np.asarray(wt.data, np.float64)
    dtype = wt.dtype.numpy
    old_b = (np.asarray(ed.tensors[prod.inputs[2]].data, np.float64) if len(prod.inputs) > 2
             else None)
    y = bn.outputs[0]
    if prod.op is Op.CONV:
        w2 = w * inv.reshape((-1,) + (1,) * (w.ndim - 1))
        b = old_b if old_b is not None else 0.0
    elif prod.op is Op.CONV_TRANSPOSE:
        g = prod.attr_int("group")
        cin, og = w.shape[:2]
        k = w.shape[2:]
        w2 = (w.reshape((g, cin // g, og) + k) * inv.reshape((g, 1, og) + (1,) * len(k))
              ).reshape(w.shape)
        b = old_b if old_b is not None else 0.0
    else:  # GEMM, or MATMUL made a GEMM: channels are the columns of the [M, N] result
        trans_b = prod.op is Op.GEMM and prod.attr_bool("trans_b")
        alpha = prod.attr_float("alpha") if prod.op is Op.GEMM else 1.0
        beta_c = prod.attr_float("beta") if prod.op is Op.GEMM else 1.0
        w2 = w * (inv[:, None] if trans_b else inv[None, :])
        b = old_b * beta_c if old_b is not None else 0.0
    bias = (b - mean) * inv + beta
    if prod.op in (Op.CONV, Op.CONV_TRANSPOSE):
        bias = np.broadcast_to(bias, inv.shape)
    wname = ed.add_const(f"{wt.name}__bn", w2.astype(dtype))
    bname = ed.add_const(f"{y}__bias", np.asarray(bias).astype(dtype))
    if prod.op in (Op.CONV, Op.CONV_TRANSPOSE):
        new = Node(prod.op, (prod.inputs[0], wname, bname), (y,), prod.attrs, prod.name)
    else:
        new = Node.make(Op.GEMM, [prod.inputs[0], wname, bname], [y], name=prod.name,
                        alpha=float(alpha), beta=1.0, trans_a=(prod.op is Op.GEMM
                                                                and prod.attr_bool("trans_a")),
                        trans_b=trans_b)
    ed.replace(prod, new)
    ed.remove(bn)
    del ed.tensors[x]
    return True


def batchnorm_folding(graph: Graph) -> Graph:
    ed = Editor(graph)
    for bn in [n for n in ed.nodes if n.op is Op.BATCH_NORM]:
        _fold(ed, bn)
    return ed.graph()
