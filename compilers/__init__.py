"""The model compiler: IR, frontends (ONNX now, TFLite next), then passes, quantisation,
memory planning and backends (TFLM, Wasm, C).

Modules, bottom up (imports only go downward):

* ``errors``: ``CompilerError`` and its subtypes.
* ``ir``: the one IR (``DType``, ``Quant``, ``Tensor``, ``Op``, ``Node``, ``Graph``).
* ``shapes``: the static shape/dtype rule of every op (``Graph.validate`` uses it).
* ``reference``: the NumPy interpreter, the definition of every op's semantics.
* ``frontends``: ``import_onnx`` (model file -> validated ``Graph``).

It never imports ``tinymlaas``, ``simulator`` or ``device_profiles``: the server calls the
compiler, not the other way round.
"""
