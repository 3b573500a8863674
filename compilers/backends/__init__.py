"""Backends: IR ``Graph`` -> deployable artefacts.

* ``tflm``: ``to_tflite(graph) -> bytes``, a TFLite flatbuffer for the TFLite Micro runtime
  (NHWC, TFLite builtin ops; see that module for what is covered).
"""

from .tflm import BackendError, to_tflite

__all__ = ["BackendError", "to_tflite"]
