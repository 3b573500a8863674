"""The WebAssembly backend behind the ``Backend`` interface: ``BACKEND``, registered under the
entry point ``wasm`` of the group ``tinymlaas.backends``.

It delivers tinyml ABI v1 modules (package kind ``wasm``, recognised by ``\\0asm`` version 1)
to devices whose firmware has a Wasm runtime (``wasm3`` or ``wamr``). ``build`` is
``build.build_wasm`` (the portable C backend's source compiled with ziglang; the SIMD128 build
when the options name the ``simd`` feature). The model's RAM is the module's
declared minimum memory, pages x 64 KiB, read from the binary (``measure`` does the same).
The fit is ``BackendBase.fit`` plus one rule of its own: a device with less than one 64 KiB
page of SRAM left after the runtime cannot run Wasm at all, and says so instead of an SRAM
shortfall.

Latency estimate (ranking only): an interpreter (wasm3) ~9x TFLM's reference kernels
(bench/wasm.py on the development host: 20.1 ms vs tflite-micro's 2.22 ms for the MLPerf
keyword model), so int8 ~36 cycles per MAC, float32 twice that.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ..base import Artifact, ArtifactKind, BackendBase, BuildOptions, DeviceRuntime, Needs, Shortfall, Target, \
    tensor_specs

from .abi import PAGE_BYTES

if TYPE_CHECKING:
    from ...ir import Graph


def _is_module(data: bytes) -> bool:
    return data[:4] == b"\0asm" and data[4:8] == b"\x01\0\0\0"


class WasmBackend(BackendBase):
    name = "wasm"
    title = "WebAssembly (tinyml ABI v1)"
    short_title = "Wasm"
    kind = ArtifactKind("wasm", "application/wasm", ".wasm", _is_module)
    runtimes = ("wasm3", "wamr")
    runtime_ram_bytes = {"wasm3": 16384, "wamr": 32768}
    cycles_per_mac = {"int8": 36.0, "float32": 72.0}
    min_runtime = "tinyml-abi 1"

    def build(self, graph: "Graph", options: BuildOptions) -> Artifact:
        from ...passes import optimize
        from ...stats import stats
        from .build import build_wasm

        simd = "simd" in options.features
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = build_wasm(graph, options.precision, name=options.name, version=options.version,
                           source_sha256=options.source_sha256, calibration=options.calibration, simd=simd,
                           input_layout=options.input_layout)
        files = {f"{b.cmodel.name}{self.kind.suffix}": b.module}
        return Artifact(self.name, options.precision, b.module, files, Needs(len(b.module), b.pages * PAGE_BYTES),
                        tensor_specs(b.prepared.graph), stats(optimize(graph)).macs,
                        {"sha256": b.sha256, "pages": b.pages, "arena": b.cmodel.arena_bytes, "abi": 1,
                         "simd": b.simd},
                        tuple(str(w.message) for w in caught), self.min_runtime)

    def measure(self, data: bytes) -> Needs:
        from .runtime import static

        return Needs(len(data), static(data).memories[0].min_pages * PAGE_BYTES)

    def extra_shortfalls(self, needs: Needs, target: Target) -> tuple[Shortfall, ...] | None:
        left = target.sram_free_bytes - target.runtime.ram_bytes
        if left >= PAGE_BYTES:
            return None
        return (Shortfall("sram", needs.ram_bytes + target.runtime.ram_bytes, target.sram_usable_bytes,
                          f"cannot run Wasm at all: {left:,} B of SRAM left after {target.runtime.name}, "
                          f"less than one 64 KiB page"),)

    def device_runtime(self) -> DeviceRuntime:
        from .runtime import RUNTIME

        return RUNTIME

    def summary(self, artifact: Artifact) -> str:
        return (f"{len(artifact.data):,} B module, {artifact.details.get('pages')} pages of 64 KiB, "
                f"arena {artifact.details.get('arena', 0):,} B")


BACKEND = WasmBackend()

__all__ = ["BACKEND", "PAGE_BYTES", "WasmBackend"]
