"""The portable C backend behind the ``Backend`` interface: ``BACKEND``, registered under the
entry point ``c`` of the group ``tinymlaas.backends``.

Export-only: it writes ``model.c`` and ``model.h`` (one dependency-free C99 library, tinyml
ABI v1) for a firmware team to compile in, so it has no artifact kind and no device runtime,
and the deploy choice never offers it. It is board-specific: ``build`` needs
``options.target`` and measures the library's flash (.text + .rodata + .data) and RAM (.data +
.bss, the arena included, plus a stack estimate) by compiling it for the target's core
(``cross``). The fit compares those with the board's free flash and SRAM: the library is
linked into the firmware, so the largest package the board takes does not apply, and no
runtime keeps RAM of its own.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING

from ...errors import CompilerError
from ..base import (Artifact, BackendBase, BackendUnavailable, BuildOptions, DeviceRuntime, Fit, Needs, RuntimeSpec,
                    Target, tensor_specs)

if TYPE_CHECKING:
    from ...ir import Graph

FIRMWARE = RuntimeSpec("firmware", "linked")  # what runs a C library: the firmware itself


class CBackend(BackendBase):
    name = "c"
    title = "portable C (tinyml ABI v1)"
    short_title = "C"
    kind = None
    runtimes = ()
    board_specific = True

    def build(self, graph: "Graph", options: BuildOptions) -> Artifact:
        from ...passes import optimize
        from ...stats import stats
        from .build import STACK_ESTIMATE, build_c

        if options.target is None:
            raise CompilerError("the C backend needs a board (--profile): its flash and RAM are measured by "
                                "compiling for the board's core")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = build_c(graph, options.precision, options.target.core, name=options.name,
                        calibration=options.calibration, input_layout=options.input_layout)
        s = b.sizes
        files = {"model.c": b.cmodel.source.encode(), "model.h": b.cmodel.header().encode()}
        return Artifact(self.name, options.precision, b"", files, Needs(b.flash, b.ram), tensor_specs(b.prepared.graph),
                        stats(optimize(graph)).macs,
                        {"core": options.target.core, "arena": b.cmodel.arena_bytes, "stack_estimate": STACK_ESTIMATE,
                         "sections": {"text": s.text, "rodata": s.rodata, "data": s.data, "bss": s.bss}},
                        tuple(str(w.message) for w in caught))

    def measure(self, data: bytes) -> Needs:
        raise BackendUnavailable("the c backend makes sources, not an artifact a device measures; "
                                 "build it for a board to measure it")

    def fit(self, needs: Needs, target: Target, precision: str, macs: int = 0) -> Fit:
        linked = dataclasses.replace(target, max_package_bytes=target.flash_free_bytes, runtime=FIRMWARE)
        return super().fit(needs, linked, precision, macs)

    def device_runtime(self) -> DeviceRuntime:
        raise BackendUnavailable("no device runs the c backend's sources over the air: they are compiled "
                                 "into the firmware")

    def summary(self, artifact: Artifact) -> str:
        d = artifact.details
        sec = d["sections"]
        return (f"{d['core']}: flash {artifact.needs.flash_bytes:,} B (.text {sec['text']:,}, .rodata "
                f"{sec['rodata']:,}), RAM {artifact.needs.ram_bytes:,} B (.bss {sec['bss']:,} + stack estimate "
                f"{d['stack_estimate']:,})")


BACKEND = CBackend()

__all__ = ["BACKEND", "CBackend"]
