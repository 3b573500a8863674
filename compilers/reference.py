"""The NumPy reference interpreter: the living definition of every IR op.

What it does: ``run(graph, inputs)`` executes a validated ``Graph`` node by node in
topological order with one kernel per op, taken from the table ``KERNELS: Op -> kernel``.
A kernel is ``kernel(node, io, *arrays) -> array``: ``io`` holds the node's input and output
``Tensor`` metadata (only QUANTIZE/DEQUANTIZE read it, for ``Tensor.quant``). Float ops
compute in the tensor's own dtype (float32 stays float32) with ONNX's semantics;
integer ADD/SUB/MUL wrap, integer DIV truncates toward zero (as ONNX/C do).
QUANTIZE is ``saturate(round_half_even(x / scale) + zero_point)`` and DEQUANTIZE is
``(q - zero_point) * scale``, per tensor or per channel, exactly as ONNX specifies; QDQ
models therefore run "in float" here, like onnxruntime's reference path. Every kernel's
result is checked against the output tensor's declared shape and dtype.

Convolutions and pools are vectorised (``sliding_window_view`` + one batched matmul per
conv, a loop over kernel taps only for CONV_TRANSPOSE), so MobileNet-sized models run in
well under a second.

Integer nodes: ``compilers.int8`` registers TFLite/TFLM reference integer kernels.
``run`` asks ``int8.select(node, io)`` first: a node whose output is an int8/uint8 tensor
with a ``Quant`` (DEQUANTIZE and CAST excepted) runs its integer kernel there (int32
accumulation, fixed-point requantisation, fused activation as an output clamp), or a
dequantise-float-quantise fallback for ops without one; every other node runs the kernel
of ``KERNELS`` below. See ``compilers.int8`` for the rule and what is bit-exact.

Modules: the float kernels (``KERNELS``, ``NodeIO``, ``FUSED``) live in
``compilers.kernels`` and are re-exported here; the integer ones in ``compilers.int8``.
Imports run kernels <- int8 <- reference (no circle).

What it does not do: no performance tuning, no in-place reuse of buffers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import int8 as _int8
from .errors import ExecutionError
from .ir import FUSABLE, Graph
from .kernels import FUSED, KERNELS, NodeIO, kernel  # noqa: F401  (re-exported)


def run(graph: Graph, inputs: Mapping[str, np.ndarray], *,
        return_all: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``inputs`` (graph input name -> array of exactly the declared shape
    and dtype). Returns the graph outputs by name, or every tensor if ``return_all``."""
    missing = [i for i in graph.inputs if i not in inputs]
    extra = [i for i in inputs if i not in graph.inputs]
    if missing or extra:
        raise ExecutionError(f"graph {graph.name!r}: missing inputs {missing}, unknown {extra}")
    env: dict[str, np.ndarray] = {n: t.data for n, t in graph.constants.items()}  # type: ignore[misc]
    for name in graph.inputs:
        t, x = graph.tensors[name], np.asarray(inputs[name])
        if x.shape != t.shape or x.dtype != t.dtype.numpy:
            raise ExecutionError(f"input {name!r}: got {x.dtype}{list(x.shape)}, graph wants "
                                 f"{t.dtype.value}{list(t.shape)}")
        env[name] = x
    for node in graph.topological_order():
        io = NodeIO(tuple(graph.tensors[i] for i in node.inputs),
                    tuple(graph.tensors[o] for o in node.outputs))
        fn = _int8.select(node, io) or KERNELS[node.op]
        y = np.asarray(fn(node, io, *(env[i] for i in node.inputs)))
        fused = node.attr_str("fused") if node.op.name in FUSABLE else "none"
        if fused != "none" and io.outputs[0].dtype.is_float:
            y = FUSED[fused](y).astype(y.dtype)  # integer kernels clamp inside (output range)
        want = io.outputs[0]
        if y.shape != want.shape or y.dtype != want.dtype.numpy:
            raise ExecutionError(f"{node.label()}: kernel gave {y.dtype}{list(y.shape)}, "
                                 f"tensor {want.name!r} is {want.dtype.value}{list(want.shape)}")
        env[want.name] = y
    if return_all:
        return env
    return {o: env[o] for o in graph.outputs}
