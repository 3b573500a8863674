"""The WebAssembly backend: the portable C backend's source compiled to a sandboxed wasm32 module
(``compile``), the tinyml ABI v1 and its checker (``abi``), wasmtime / wasm3 hosts (``host``),
``build.build_wasm``, how a device executes a module (``runtime``: wasm3, isolated), and
``backend``: ``BACKEND``, the plug-in (entry point ``wasm``)."""
