"""The TensorFlow Lite Micro backend behind the ``Backend`` interface: ``BACKEND``, registered
under the entry point ``tflm`` of the group ``tinymlaas.backends``.

It delivers TFLite flatbuffers (package kind ``tflite``, recognised by the ``TFL3`` file
identifier) to devices whose firmware has the ``tflm`` runtime. ``build`` is
``build.build_tflm`` (precision, flatbuffer, TFLM's operator check against the target's
operator list when one is given, the arena measured in tflite-micro, our offline memory plan
where it is smaller) plus the C files a firmware team compiles in; the model's RAM is the
measured arena. ``measure`` measures an existing flatbuffer the same way, so the server's
figures and a device's are one measurement. The fit is ``BackendBase.fit``: the arena plus
TFLM's own RAM against the free SRAM, the package against the free flash, the flatbuffer's
operators against those the device's TFLM build registers.

Latency estimate (ranking only): int8 ~4 cycles per MAC with the reference kernels, ~4x less
with CMSIS-NN or ESP-NN (Arm's CMSIS-NN paper reports 0.5-2 cycles/MAC); float32 ~2x int8 on
a single-precision FPU.

Heavy imports (the TFLite schema, tflite-micro, numpy) happen inside the methods: discovering
backends stays cheap.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ..base import (Artifact, ArtifactKind, BackendBase, BuildOptions, DeviceRuntime, Needs, tensor_specs)

if TYPE_CHECKING:
    from ...ir import Graph


def _is_flatbuffer(data: bytes) -> bool:
    return data[4:8] == b"TFL3"


class TflmBackend(BackendBase):
    name = "tflm"
    title = "TensorFlow Lite Micro"
    short_title = "TFLM"
    kind = ArtifactKind("tflite", "application/vnd.tflite", ".tflite", _is_flatbuffer)
    runtimes = ("tflm",)
    runtime_ram_bytes = {"tflm": 4096}  # the shipped profiles' figure, when a device names no profile
    cycles_per_mac = {"int8": 4.0, "float32": 8.0}
    feature_speedup = {"cmsis-nn": 4.0, "esp-nn": 4.0}
    min_runtime = "tflm 2024-06"
    operator_list = True  # a TFLM build registers the operators its op resolver adds, and no others

    def build(self, graph: "Graph", options: BuildOptions) -> Artifact:
        from ...passes import optimize
        from ...stats import stats
        from .build import build_tflm

        operators = options.target.runtime.operators if options.target is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = build_tflm(graph, options.precision, name=options.name, operators=operators or None,
                           calibration=options.calibration, input_layout=options.input_layout)
        assert b.arena is not None
        files = {f"{b.name}{self.kind.suffix}": b.flatbuffer, **{k: v.encode() for k, v in b.c_sources().items()}}
        return Artifact(self.name, options.precision, b.flatbuffer, files,
                        Needs(len(b.flatbuffer), b.arena.recommended, b.operators), tensor_specs(b.prepared.graph),
                        stats(optimize(graph)).macs,
                        {"sha256": b.sha256, "arena": b.arena.recommended, "arena_head": b.arena.head,
                         "arena_tail": b.arena.tail,
                         "offline_plan": b.offline_plan, "planned_head": b.planned_head,
                         "operators": list(b.operators)},
                        tuple(str(w.message) for w in caught), self.min_runtime)

    def measure(self, data: bytes) -> Needs:
        from .arena import recommended_arena
        from .sources import model_operators

        return Needs(len(data), recommended_arena(data).recommended, tuple(model_operators(data)))

    def device_runtime(self) -> DeviceRuntime:
        from .runtime import RUNTIME

        return RUNTIME

    def summary(self, artifact: Artifact) -> str:
        plan = "our offline plan" if artifact.details.get("offline_plan") else "TFLM planner"
        return (f"{len(artifact.data):,} B, arena {artifact.needs.ram_bytes:,} B ({plan}), "
                f"ops {', '.join(artifact.needs.operators)}")


BACKEND = TflmBackend()

__all__ = ["BACKEND", "TflmBackend"]
