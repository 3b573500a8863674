"""C source implementing tinyml ABI v1 -> a sandboxable WebAssembly module.

What it does: ``compile_wasm(c_source)`` compiles ONE freestanding C99 file (no libc, no
malloc; it defines the ABI v1 functions documented in ``compilers.backends.wasm.abi``) with
the clang and wasm-ld that the ``ziglang`` PyPI package ships, in a temporary directory:

* target ``wasm32-freestanding``, ``-O2``, ``-nostdlib``, ``--no-entry``; exactly the eight
  ABI functions are exported, plus ``memory`` (wasm-ld exports it by default);
* the linker strips names and debug info (``--strip-all``) and puts the shadow stack first
  (zig passes ``--stack-first``), ``-z stack-size=<stack_bytes>``; no ``--initial-memory``,
  so wasm-ld declares the smallest memory that holds stack + data + bss, rounded up to
  64 KiB pages (a 200 KiB static arena with a 16 KiB stack: 4 pages; a tiny model: 1 page).
  No maximum is declared;
* the portable build (``simd=False``) is the MVP instruction set plus three Wasm 2.0
  features that wasm3 (pywasm3 0.5) runs and that every runtime we target has: bulk memory
  (``memcpy``/``memset`` become ``memory.copy``/``memory.fill`` instead of imports of
  functions nobody provides), sign extension and non-trapping float-to-int (shorter int8
  requantisation code). ``simd=True`` adds ``-msimd128`` (clang's loop vectoriser then emits
  v128 code); wasm3 cannot load such a module ("unknown value_type"), wasmtime can;
* appends a custom section ``tinyml`` holding ``json.dumps(metadata)`` when given;
* checks the result with ``abi.abi_violations``: no imports, no start function, one
  exported 32-bit memory, every ABI export with its type.

Errors are ``WasmBuildError`` with a one-line message: the first clang diagnostics (paths
replaced by ``model.c``), an undefined function as "module imports env.<name>: the sandbox
grants no imports", or the ABI violations.

What it does not do: emit the C (the C backend does), run the module (``host``), check
the stack at run time (it need not: the stack sits first in memory and grows down, so an
overflow runs below address 0 and traps as an out-of-bounds access instead of overwriting
the model's buffers), or optimise for size (``-O2``: speed first).

Why we wrap ziglang ourselves: it is the one C-to-Wasm toolchain installable from PyPI
with no system packages (clang, wasm-ld and the ARM/RISC-V targets ``cross`` uses in one
wheel), so a server or CI machine gets it with pip; wasi-sdk or emscripten would need
downloads outside the package manager and bring a libc we do not want.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ...errors import CompilerError
from ..zig import zig_cc
from . import abi as wasm_abi

__all__ = ["ABI_EXPORTS", "MVP_FEATURES", "SIMD_FEATURES", "WasmBuildError", "compile_wasm",
           "custom_section", "pages"]

ABI_EXPORTS: tuple[str, ...] = tuple(wasm_abi.ABI_FUNCTIONS)
# Checked on wasm3 (pywasm3 0.5) and wasmtime: each of these loads and computes correctly.
MVP_FEATURES: tuple[str, ...] = ("-mcpu=mvp", "-mbulk-memory", "-msign-ext", "-mnontrapping-fptoint")
SIMD_FEATURES: tuple[str, ...] = MVP_FEATURES + ("-msimd128",)
SOURCE_NAME = "model.c"


class WasmBuildError(CompilerError):
    """The C source does not compile or link to a module that keeps tinyml ABI v1."""


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def custom_section(name: str, payload: bytes) -> bytes:
    """A Wasm custom section: id 0, LEB128 size, LEB128 name length, name, payload."""
    raw = name.encode("utf-8")
    body = _uleb(len(raw)) + raw + payload
    return b"\0" + _uleb(len(body)) + body


def _link_flags(stack_bytes: int) -> list[str]:
    exports = [f"-Wl,--export={name}" for name in ABI_EXPORTS]
    return ["-nostdlib", "-Wl,--no-entry", *exports, "-Wl,--strip-all",
            f"-Wl,-z,stack-size={stack_bytes}"]


def compile_wasm(c_source: str, *, simd: bool = False, metadata: dict[str, Any] | None = None,
                 stack_bytes: int = 16384) -> bytes:
    """The Wasm module of ``c_source`` (see the module docstring); ``WasmBuildError`` if none."""
    if stack_bytes <= 0 or stack_bytes % 16:
        raise WasmBuildError(f"stack_bytes {stack_bytes} is not a positive multiple of 16")
    if metadata is not None and not isinstance(metadata, dict):
        raise WasmBuildError(f"metadata is a {type(metadata).__name__}; the tinyml section "
                             "holds a JSON object")
    features = SIMD_FEATURES if simd else MVP_FEATURES
    with tempfile.TemporaryDirectory(prefix="tinyml-wasm-") as tmp:
        work = Path(tmp)
        (work / SOURCE_NAME).write_text(c_source, encoding="utf-8")
        args = ["--target=wasm32-freestanding", "-O2", *features,
                *_link_flags(stack_bytes), SOURCE_NAME, "-o", "model.wasm"]
        zig_cc(args, work, "C source does not build for Wasm", WasmBuildError)
        module = (work / "model.wasm").read_bytes()
    if metadata is not None:
        try:
            payload = json.dumps(metadata).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise WasmBuildError(f"metadata is not JSON-serialisable: {e}") from None
        module += custom_section(wasm_abi.METADATA_SECTION, payload)
    try:
        problems = wasm_abi.abi_violations(wasm_abi.parse_wasm(module))
    except wasm_abi.WasmFormatError as e:
        raise WasmBuildError(f"the linker wrote a malformed module: {e}") from None
    if problems:
        raise WasmBuildError("; ".join(problems))
    return module


def pages(module: bytes) -> int:
    """The declared minimum of the module's (one) memory, in 64 KiB pages."""
    try:
        info = wasm_abi.parse_wasm(module)
    except wasm_abi.WasmFormatError as e:
        raise WasmBuildError(str(e)) from None
    if len(info.memories) != 1:
        raise WasmBuildError(f"module defines {len(info.memories)} memories, not one")
    return info.memories[0].min_pages

