"""The model compiler: IR, frontends (ONNX, TFLite), passes, quantisation, memory planning,
and (next) backends (TFLM, Wasm, C).

Modules, bottom up (imports only go downward):

* ``errors``: ``CompilerError`` and its subtypes.
* ``ir``: the one IR (``DType``, ``Quant``, ``Tensor``, ``Op``, ``Node``, ``Graph``).
* ``shapes``: the static shape/dtype rule of every op (``Graph.validate`` uses it).
* ``reference``: the NumPy interpreter, the definition of every op's semantics;
  ``int8``: its integer kernels (TFLM's arithmetic, bit-exact).
* ``frontends``: ``import_onnx``, ``import_tflite`` (model file -> validated ``Graph``).
* ``passes``: small graph-to-graph passes and ``standard_pipeline()``.
* ``quantize`` / ``calibration``: post-training int8 quantisation (QDQ form).
* ``planner``: tensor lifetimes -> arena offsets, peak and lower bound; ``stats``: params,
  MACs, flash bytes.

It never imports ``tinymlaas``, ``simulator`` or ``device_profiles``: the server calls the
compiler, not the other way round.
"""
