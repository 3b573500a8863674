"""From any imported model to the graph a backend emits at one precision:
``prepare(graph, precision) -> Prepared``.

Precisions (``PRECISIONS``):

float16 first becomes float32 (``passes.float16``; an ``ImportNote`` when the model's
inputs or outputs were float16): no bundled runtime has float16 kernels.

* ``float32``: every activation and weight float32. A float model is optimised as is; a
  quantised one (QDQ, lowered int8, weight-only "hybrid") becomes its float32 twin
  (``passes.dequantize``: same network, the quantised weights' values).
* ``int8``: full-integer, TFLM's arithmetic. A quantised model (QDQ or int8 TFLite) is
  lowered as it is (``passes.lower_int8``); a float model (a hybrid one first becomes its
  float twin) is quantised (``compilers.quantize``: per-channel int8 weights, int8 graph
  inputs and outputs; ``calibration`` samples or, if None, synthetic data with a
  ``SyntheticCalibrationWarning``; ``per_channel`` as ``quantize``) and then lowered. A node
  left computing in float is an error naming it: an "int8" build is integer throughout or it
  is refused.

``input_layout="nhwc"`` then declares the image inputs channels-last
(``passes.input_layout``; calibration samples stay in the model's declared layout).

``Prepared.graph`` is the backends' input *and* the numerical reference: the reference
interpreter (``compilers.reference.run``) on it is what every backend's output is compared
with (int8: TFLM-bit-exact integer kernels).

What it does not do: choose a precision for a device (the deploy decision), emit anything
(the backends), or judge accuracy (``quantize``'s docstring and the tests do).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .errors import CompilerError, ImportNote
from .ir import DType, Graph, Op
from .passes import lower_int8, optimize, unfuse_tanh, unlowered
from .passes.dequantize import dequantize_graph
from .passes.float16 import upcast_float16
from .passes.input_layout import check_layout, with_input_layout
from .quantize import quantize

PRECISIONS = ("float32", "int8")
Calibration = Mapping[str, np.ndarray] | str | os.PathLike[str] | None


@dataclass(frozen=True)
class Prepared:
    graph: Graph  # optimised, at ``precision``: the backend input and the reference
    precision: str
    source: str  # "float", "hybrid" or "quantised": what the imported model was

    @property
    def quantised_here(self) -> bool:
        """int8 made by our quantiser (then calibration matters)."""
        return self.precision == "int8" and self.source != "quantised"


def source_kind(graph: Graph) -> str:
    """``quantised`` (integer activations or QDQ activations), ``hybrid`` (only constant
    weights are DEQUANTIZEd) or ``float``."""
    consts = {n for n, t in graph.tensors.items() if t.is_const}
    for n in graph.nodes:
        if n.op is Op.QUANTIZE or (n.op is Op.DEQUANTIZE and n.inputs[0] not in consts):
            return "quantised"
    if any(t.dtype in (DType.INT8, DType.UINT8) and t.quant is not None and not t.is_const
           for t in graph.tensors.values()):
        return "quantised"
    if any(n.op is Op.DEQUANTIZE for n in graph.nodes):
        return "hybrid"
    return "float"


def prepare(graph: Graph, precision: str, *, calibration: Calibration = None,
            method: str = "minmax", per_channel: bool | str = True, input_layout: str = "nchw",
            warn: Callable[..., object] = warnings.warn) -> Prepared:
    """``graph`` at ``precision`` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise CompilerError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    check_layout(input_layout)
    p = _prepare(graph, precision, calibration, method, per_channel, warn)
    return p if input_layout == "nchw" else Prepared(with_input_layout(p.graph, input_layout), precision, p.source)


def _prepare(graph: Graph, precision: str, calibration: Calibration, method: str, per_channel: bool | str,
             warn: Callable[..., object]) -> Prepared:
    graph, notes = upcast_float16(graph)
    for note in notes:
        warn(note, ImportNote, stacklevel=2)
    g = optimize(graph)
    kind = source_kind(g)
    if precision == "float32":
        if kind != "float":
            g = optimize(dequantize_graph(g))
        return Prepared(g, precision, kind)
    if kind == "hybrid":
        g = optimize(dequantize_graph(g))
    if kind != "quantised":
        g = unfuse_tanh(g)  # an int8 TANH node exists, an int8 fused tanh does not
        g = optimize(quantize(g, calibration, method=method, per_channel=per_channel, warn=warn))
    g = lower_int8(g)
    left = unlowered(g)
    if left:
        shown = ", ".join(repr(n) for n in left[:5]) + (" ..." if len(left) > 5 else "")
        raise CompilerError(f"graph {graph.name!r} cannot run in int8: {len(left)} node(s) have "
                            f"no integer kernel and would compute in float: {shown}")
    return Prepared(g, precision, kind)


__all__ = ["PRECISIONS", "Prepared", "prepare", "source_kind"]
