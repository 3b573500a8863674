"""Backends: IR ``Graph`` -> deployable artefacts.

* ``tflm``: ``to_tflite(graph) -> bytes``, a TFLite flatbuffer for the TFLite Micro runtime
  (NHWC, TFLite builtin ops; see that module for what is covered).
* ``tflm_c``: C/C++ emitters for TFLM: ``c_array`` (model data .h/.cc), ``op_resolver`` /
  ``model_operators`` (MicroMutableOpResolver registration), ``check_operators``.
* ``tflm_arena``: ``recommended_arena(model) -> ArenaReport``, measured with tflite-micro in
  child processes.
* ``tflm_plan``: our arena plan as TFLM's ``OfflineMemoryAllocation`` metadata.
* ``tflm_build``: ``build_tflm(graph, precision) -> TflmBuild``: prepare, emit, check the
  device's operators, measure the arena (keeping the offline plan when it is smaller), C files.
* ``c_emit`` (+ ``c_ops``, ``c_ops_nn``): ``to_c(graph) -> CModel``, one dependency-free C99
  file implementing the tinyml ABI v1 (``wasm_abi``); ``wasm``: C -> Wasm with ziglang;
  ``cross``: C -> object for a board's core, section sizes; ``wasm_host``: wasmtime / wasm3
  hosts; ``wasm_build``: ``build_wasm``, ``build_c``, ``wasm_fit``.
"""

from .tflm import BackendError, to_tflite
from .tflm_arena import ArenaReport, recommended_arena
from .tflm_build import TflmBuild, build_tflm
from .tflm_c import MissingOperators, c_array, check_operators, model_operators, op_resolver

__all__ = ["ArenaReport", "BackendError", "TflmBuild", "build_tflm", "MissingOperators", "c_array", "check_operators",
           "model_operators", "op_resolver", "recommended_arena", "to_tflite"]
