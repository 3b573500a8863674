"""float16 -> float32: ``upcast_float16(graph) -> (graph, notes)``, run by both frontends at
import.

Why: no bundled runtime computes in float16. TFLM's kernels are float32 or integer (a
float16 tensor in a flatbuffer makes the build fail later with a misleading arena error),
and the portable C backend has no half type. A float16 model is what
onnxconverter-common's ``convert_float_to_float16`` (with ``keep_io_types`` True or False),
``torch.Tensor.half()`` exports and TFLite's float16 quantisation make: the values are
float16, the arithmetic any float. Every float16 value is exactly representable in
float32, so the upcast model computes what the float16 model means in float32 (no worse
than float16 arithmetic; onnxruntime's float16 kernels differ from it by float16 rounding).

What it does: every float16 tensor becomes float32 (constant data converted exactly),
``CAST(to=float16)`` becomes ``CAST(to=float32)`` (a no-op for ``identity_elimination`` when
its input is float32: the Casts converters put at float32 graph edges vanish), DEQUANTIZE
with a float16 output gives float32. A float16 graph input or output keeps its name and
becomes float32: the interface changes, so a note (``ImportNote`` text) says so; the caller
passes float32 values (float16 data converts exactly).

What it does not do: bfloat16 or float8 (no IR DType: refused at import), keep float16 for
a runtime that had it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import DType, Graph, Node, Op


def upcast_float16(graph: Graph) -> tuple[Graph, list[str]]:
    """``graph`` with float32 wherever it had float16, and the notes on its interface."""
    f16 = {n for n, t in graph.tensors.items() if t.dtype is DType.FLOAT16}
    casts = [n for n in graph.nodes if n.op is Op.CAST and n.attr_dtype("to") is DType.FLOAT16]
    if not f16 and not casts:
        return graph, []
    tensors = {}
    for name, t in graph.tensors.items():
        if name not in f16:
            tensors[name] = t
        elif t.data is not None:
            tensors[name] = dataclasses.replace(t, dtype=DType.FLOAT32,
                                                data=np.asarray(t.data, np.float32))
        else:
            tensors[name] = dataclasses.replace(t, dtype=DType.FLOAT32)
    nodes = [Node.make(n.op, n.inputs, n.outputs, name=n.name, **{**n.attr_dict, "to": DType.FLOAT32})
             if n in casts else n for n in graph.nodes]
    notes = [f"{kind} {name!r} was float16 and is float32 in the compiled model (no bundled "
             f"runtime has float16 kernels)"
             for kind, names in (("input", graph.inputs), ("output", graph.outputs))
             for name in names if name in f16]
    out = Graph(graph.name, graph.inputs, graph.outputs, tuple(nodes), tensors)
    return out.validate(), notes


__all__ = ["upcast_float16"]
