"""The model compiler: IR, frontends (ONNX, TFLite), passes, quantisation, memory planning,
and (next) backends (TFLM, Wasm, C).

Modules, bottom up (imports only go downward):

* ``errors``: ``CompilerError`` and its subtypes.
* ``ir_base``: the IR's building blocks (``DType``, ``Quant``, ``Tensor``, ``Op``, ``Node``);
  ``shapes``: the static shape/dtype rule of every op; ``ir``: ``Graph`` (its ``validate``
  uses the shape rules) and every ``ir_base`` name: the IR's one import point.
* ``kernels``: the float kernel of every op (its semantics); ``int8`` (with ``int8_act``):
  the integer kernels (TFLM's arithmetic, bit-exact); ``reference``: the interpreter.
* ``frontends``: ``import_onnx``, ``import_tflite`` (model file -> validated ``Graph``).
* ``passes``: small graph-to-graph passes and ``standard_pipeline()``.
* ``quantize`` / ``calibration``: post-training int8 quantisation (QDQ form).
* ``planner``: tensor lifetimes -> arena offsets, peak and lower bound; ``stats``: params,
  MACs, flash bytes.

It never imports ``tinymlaas``, ``simulator`` or ``device_profiles``: the server calls the
compiler, not the other way round.
"""
