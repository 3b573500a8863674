"""The TensorFlow Lite Micro backend: IR ``Graph`` -> TFLite flatbuffer (+ C array, op resolver,
measured arena) for the TFLM runtime.

* ``emit``: ``to_tflite(graph) -> bytes`` (NHWC, TFLite builtin ops); ``writer``: the
  flatbuffer writer over the TFLite schema's object API; ``plan``: our arena plan as TFLM's
  ``OfflineMemoryAllocation`` metadata;
* ``arena``: ``recommended_arena(model) -> ArenaReport``, measured with tflite-micro in child
  processes; ``sources``: C/C++ emitters (``c_array``, ``op_resolver``, ``check_operators``);
* ``build``: ``build_tflm(graph, precision) -> TflmBuild``.
"""

from .arena import ArenaReport, recommended_arena
from .build import TflmBuild, build_tflm
from .emit import BackendError, to_tflite
from .sources import MissingOperators, c_array, check_operators, model_operators, op_resolver

__all__ = ["ArenaReport", "BackendError", "MissingOperators", "TflmBuild", "build_tflm", "c_array",
           "check_operators", "model_operators", "op_resolver", "recommended_arena", "to_tflite"]
