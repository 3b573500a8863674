"""One Wasm build: ``build_wasm(graph, precision) -> WasmBuild``, from an imported model to a
sandboxed module.

Steps: ``precision.prepare`` (int8 keeps per-channel weights everywhere: our kernels have
no TFLM-version constraint; ``input_layout`` as the model version declares it) ->
``c.emit.to_c`` (one C99 file, static planned arena) ->
``compile.compile_wasm`` (MVP, or SIMD128 for runtimes that declare it; no imports; the
``tinyml`` metadata section: name, version, sha256, tensor shapes, dtypes, quantisation,
arena).

Whether a module fits a device is the backend's ``fit`` (``backend``).

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
from .abi import PAGE_BYTES as PAGE
from .compile import compile_wasm, pages

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
               method: str = "minmax", input_layout: str = "nchw",
               warn: Callable[..., object] = warnings.warn) -> WasmBuild:
    """``graph`` as a tinyml ABI v1 Wasm module (see the module docstring)."""
    prepared = prepare(graph, precision, calibration=calibration, method=method, input_layout=input_layout,
                       warn=warn)
    cm = to_c(prepared.graph, name=name or graph.name)
    meta: dict[str, Any] = cm.metadata(version=version, sha256=source_sha256, precision=precision,
                                       simd=simd, producer=f"tinymlaas.compilers wasm {__version__}")
    module = compile_wasm(cm.source, simd=simd, metadata=meta)
    return WasmBuild(module, pages(module), simd, cm, prepared, hashlib.sha256(module).hexdigest())


__all__ = ["PAGE", "WasmBuild", "build_wasm"]
