"""The model compiler: IR, frontends (ONNX, TFLite), passes, backends (TFLM, Wasm, C).

Not built yet. It will never import ``tinymlaas``: the server calls the compiler, not the
other way round.
"""
