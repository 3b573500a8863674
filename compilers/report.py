"""What a model needs, per precision: the figures ``tinymlaas models inspect`` and the deploy
decision start from.

``report(graph)`` runs the standard passes, then gives ops, parameters and MACs, and for
float32 and int8: the flash bytes of the weights and the planned activation arena with its
lower bound (``planner``; TRANSPOSEs that a channels-last backend stores as the same bytes
are planned in place). For a float model the int8 column is what the model takes once
quantised: weights one byte each, CONV/GEMM biases int32, activations one byte each (the
sizes do not depend on calibration, so none is needed here). A model that is already
quantised (QDQ or TFLite int8) has only the int8 column.

What it does not include: the runtime's own RAM and code, TFLM's persistent "tail" (tensor
structs, op data) and kernel scratch buffers; backends measure those for their chip.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .ir import Graph, Op
from .passes import optimize
from .passes.transpose_cancel import storage_noop_transposes
from .planner import int8_size, plan
from .stats import stats


@dataclass(frozen=True)
class Footprint:
    precision: str
    flash_bytes: int
    arena: int
    lower_bound: int


@dataclass(frozen=True)
class Report:
    name: str
    ops: Counter[str]
    params: int
    macs: int
    footprints: tuple[Footprint, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ops": dict(self.ops), "params": self.params, "macs": self.macs,
                "footprints": {f.precision: {"flash_bytes": f.flash_bytes, "arena": f.arena,
                                             "lower_bound": f.lower_bound} for f in self.footprints}}


def is_quantised(graph: Graph) -> bool:
    return any(n.op in (Op.QUANTIZE, Op.DEQUANTIZE) for n in graph.nodes) or \
        any(t.quant is not None for t in graph.tensors.values())


def _bias_names(graph: Graph) -> set[str]:
    return {n.inputs[2] for n in graph.nodes if n.op in (Op.CONV, Op.CONV_TRANSPOSE, Op.GEMM) and len(n.inputs) == 3}


def int8_flash(graph: Graph) -> int:
    """Weight bytes once quantised: 1 per weight, 4 per bias (int32)."""
    biases = _bias_names(graph)
    return sum(t.size * (4 if name in biases else 1) for name, t in graph.constants.items())


def report(graph: Graph) -> Report:
    g = optimize(graph)
    s = stats(g)
    views = storage_noop_transposes(g)  # TRANSPOSEs a channels-last backend stores as the same bytes
    footprints = []
    if not is_quantised(g):
        p32 = plan(g, views=views)
        footprints.append(Footprint("float32", s.flash_bytes, p32.peak, p32.lower_bound))
        p8 = plan(g, size_of=int8_size, views=views)
        footprints.append(Footprint("int8", int8_flash(g), p8.peak, p8.lower_bound))
    else:
        p8 = plan(g, size_of=int8_size, views=views)
        footprints.append(Footprint("int8", s.flash_bytes, p8.peak, p8.lower_bound))
    return Report(graph.name, s.ops, s.params, s.macs, tuple(footprints))
