"""Frontends: read a trained model file into the compiler's IR (``compilers.ir.Graph``).

``import_onnx`` (this package's ``onnx`` module) reads ONNX. The TFLite frontend comes
later. A frontend only translates: it validates, makes shapes static and normalises ops
into the IR's op set; it does not optimise.
"""

from .onnx import import_onnx

__all__ = ["import_onnx"]
