"""Frontends: read a trained model file into the compiler's IR (``compilers.ir.Graph``).

``import_onnx`` (this package's ``onnx`` module) reads ONNX; ``import_tflite`` (``tflite``)
reads TFLite flatbuffers (NHWC, converted to the IR's NCHW body with TRANSPOSEs at the
graph boundary). A frontend only translates: it validates, makes shapes static and normalises ops
into the IR's op set; it does not optimise.
"""

from .onnx import import_onnx
from .tflite import import_tflite

__all__ = ["import_onnx", "import_tflite"]
