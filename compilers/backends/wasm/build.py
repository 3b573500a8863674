"""One Wasm build: ``build_wasm(graph, precision) -> WasmBuild``, from an imported model to a
sandboxed module.

Steps: ``precision.prepare`` (int8 keeps per-channel weights everywhere: our kernels have
no TFLM-version constraint) -> ``c.emit.to_c`` (one C99 file, static planned arena) ->
``compile.compile_wasm`` (MVP, or SIMD128 for runtimes that declare it; no imports; the
``tinyml`` metadata section: name, version, sha256, tensor shapes, dtypes, quantisation,
arena).

Fit (``wasm_fit``): a module fits a device when its pages plus the runtime's own RAM fit the
free SRAM and the module plus the runtime's flash fit the free flash; a device with less
than one 64 KiB page free cannot run Wasm at all, and the reason says so.

What it does not do: choose the backend for a device (deploy), sign or send.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ...ir import Graph
from ...precision import Calibration, Prepared, prepare
from ..c.emit import CModel, to_c
from .compile import compile_wasm, pages

PAGE = 65536
__version__ = "1"


@dataclass(frozen=True)
class WasmBuild:
    module: bytes
    pages: int
    simd: bool
    cmodel: CModel
    prepared: Prepared
    sha256: str

    @property
    def graph(self) -> Graph:
        return self.prepared.graph


def build_wasm(graph: Graph, precision: str, *, name: str | None = None, simd: bool = False,
               version: str = "", source_sha256: str = "", calibration: Calibration = None,
               method: str = "minmax", warn: Callable[..., object] = warnings.warn) -> WasmBuild:
    """``graph`` as a tinyml ABI v1 Wasm module (see the module docstring)."""
    prepared = prepare(graph, precision, calibration=calibration, method=method, warn=warn)
    cm = to_c(prepared.graph, name=name or graph.name)
    meta: dict[str, Any] = cm.metadata(version=version, sha256=source_sha256, precision=precision,
                                       simd=simd, producer=f"tinymlaas.compilers wasm {__version__}")
    module = compile_wasm(cm.source, simd=simd, metadata=meta)
    return WasmBuild(module, pages(module), simd, cm, prepared, hashlib.sha256(module).hexdigest())


@dataclass(frozen=True)
class WasmFit:
    fits: bool
    reason: str
    sram_need: int
    sram_free: int
    flash_need: int
    flash_free: int


def wasm_fit(module_bytes: int, module_pages: int, *, sram_free: int, flash_free: int,
             runtime_ram: int, runtime_flash: int, runtime_installed: bool = True) -> WasmFit:
    """Whether a module fits a device (see the module docstring)."""
    flash_need = module_bytes + (0 if runtime_installed else runtime_flash)
    sram_need = module_pages * PAGE + runtime_ram
    if sram_free - runtime_ram < PAGE:
        return WasmFit(False, f"cannot run Wasm at all: {sram_free - runtime_ram:,} B of SRAM left "
                       f"after the runtime, less than one 64 KiB page", sram_need, sram_free,
                       flash_need, flash_free)
    short = []
    if sram_need > sram_free:
        short.append(f"SRAM short by {sram_need - sram_free:,} B ({module_pages} pages + runtime)")
    if flash_need > flash_free:
        short.append(f"flash short by {flash_need - flash_free:,} B")
    return WasmFit(not short, "fits" if not short else "; ".join(short), sram_need, sram_free,
                   flash_need, flash_free)


__all__ = ["PAGE", "WasmBuild", "WasmFit", "build_wasm", "wasm_fit"]
