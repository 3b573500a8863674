"""Backends: IR ``Graph`` -> deployable artefacts, one sub-package per backend.

* ``tflm``: TensorFlow Lite Micro flatbuffers (+ C array, op resolver, measured arena);
* ``c``: one dependency-free C99 file (tinyml ABI v1), measured for a board's core;
* ``wasm``: that C compiled to a sandboxed WebAssembly module;
* ``zig``: the C toolchain the last two share.
"""
