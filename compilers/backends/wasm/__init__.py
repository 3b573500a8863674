"""The WebAssembly backend: the portable C backend's source compiled to a sandboxed wasm32 module
(``compile``), the tinyml ABI v1 and its checker (``abi``), wasmtime / wasm3 hosts (``host``)
and ``build.build_wasm``."""
