"""The TensorFlow Lite Micro backend: IR ``Graph`` -> TFLite flatbuffer (+ C array, op resolver,
measured arena) for the TFLM runtime.

* ``backend``: ``BACKEND``, the plug-in (entry point ``tflm``);
* ``emit``: ``to_tflite(graph) -> bytes`` (NHWC, TFLite builtin ops); ``writer``: the
  flatbuffer writer over the TFLite schema's object API; ``plan``: our arena plan as TFLM's
  ``OfflineMemoryAllocation`` metadata;
* ``arena``: ``recommended_arena(model) -> ArenaReport``, measured with tflite-micro in child
  processes; ``sources``: C/C++ emitters (``c_array``, ``op_resolver``, ``check_operators``);
* ``build``: ``build_tflm(graph, precision) -> TflmBuild``;
* ``runtime``: how a device executes a flatbuffer (tflite-micro, isolated).

Nothing is imported here, so loading the plug-in stays cheap.
"""
