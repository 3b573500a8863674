"""The model module ABI v1 ("tinyml ABI") for WebAssembly, and reading modules against it.

It lives in the compiler because the compiler's Wasm backend (``compilers.backends.wasm``)
produces such modules and checks them here before handing them out; the simulator's devices
(``simulator.runtimes``) and the compiler's tests (``compilers.backends.wasm.host``, the test
suite) use it to admit and run them. It imports nothing from ``simulator`` or ``tinymlaas``.

What it does: parses the section structure of a Wasm 1.0 binary (magic ``\\0asm``, version 1,
then sections of an id byte and a LEB128 size) far enough to list the type, import, function,
memory, export and start sections and every custom section, and checks a module against the
ABI below. Malformed binaries raise ``WasmFormatError`` saying what is wrong and where. It
also holds the host side of the ABI on wasm3 (``describe``, ``invoke``), which does run the
module's code, so an untrusted module must be run in a sandboxed process (the simulator forks
one per call; tests run the compiler's own modules in-process). What it does not do: decode
code bodies, data or element segments (wasm3 does that when it loads the module), or bound a
run's time (the caller does).

Model module ABI v1 ("tinyml ABI")
==================================

A model compiled to WebAssembly for a tinymlaas device is a Wasm 1.0 binary module that:

* **imports nothing**: the sandbox grants no host functions, memories, tables, globals or
  tags, so a module that imports anything (say ``env.abort``) is refused at install;
* has **no start function** (nothing runs when the module is loaded);
* **defines one linear memory and exports it as ``memory``** (32-bit, not shared). Its
  declared minimum is the RAM the model needs: a device admits the module only if
  ``min_pages * 65,536`` bytes plus the RAM its runtime keeps for itself fit in its free
  SRAM. A module that grows its memory past the free SRAM while running fails that run with
  an out-of-memory error;
* **exports these functions**, all over ``i32``:

  ========================================  ================================================
  ``tinyml_abi_version() -> i32``           returns 1
  ``input_count() -> i32``                  number of input tensors
  ``input_ptr(i: i32) -> i32``              byte offset in ``memory`` of input ``i``'s buffer
  ``input_size(i: i32) -> i32``             byte size of input ``i``
  ``output_count() -> i32``                 number of output tensors
  ``output_ptr(i: i32) -> i32``             byte offset in ``memory`` of output ``i``
  ``output_size(i: i32) -> i32``            byte size of output ``i``
  ``invoke() -> i32``                       runs the model once: 0 = ok, else an error code
  ========================================  ================================================

  Every buffer lies wholly inside ``memory``. Tensors are raw little-endian bytes in the
  layout the model was compiled for (for a quantised model, int8 values).
* may carry a **custom section named ``tinyml``** holding a UTF-8 JSON object of metadata,
  for example ``{"name": "kws", "version": "3", "sha256": "<hex of the source model>",
  "tensors": {"inputs": [{"name": "x", "dtype": "int8", "shape": [1, 490]}],
  "outputs": [...]}}``. Every key is optional; the host shows it, and uses ``tensors``
  (when its sizes agree with the module's) to name and shape the buffers.

One inference, as the host does it: load the module into a fresh instance; check that
``tinyml_abi_version()`` is 1; for each input ``i`` write exactly ``input_size(i)`` bytes at
``input_ptr(i)``; call ``invoke()``; if it returned 0, read ``output_size(i)`` bytes at
``output_ptr(i)`` for each output. A trap (an out-of-bounds access, ``unreachable``, a stack
overflow) fails the run; so does running longer than the host allows.

How a device reports a module (``ModelError.result`` in ``simulator.runtimes``): a malformed
binary is ``unsupported-package``; a well-formed module that breaks the ABI (imports, a start
function, a missing or mistyped export, no exported memory, an ABI version other than 1,
buffers outside memory, more than 64 inputs or outputs) is ``install-failure``; a declared
memory larger than the free SRAM is ``out-of-memory``; a trap, a non-zero ``invoke()``, a
run past the time limit or growth past the free SRAM fail that run (``runtime-error``, the
last ``out-of-memory``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import RuntimeFailure

MAGIC = b"\0asm"
VERSION = 1
PAGE_BYTES = 65536
ABI_VERSION = 1
METADATA_SECTION = "tinyml"
MAX_TENSORS = 64

_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref",
             0x6F: "externref"}
# Section ids in the order the spec requires them (0 = custom may appear anywhere).
_ORDER = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11]
_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
          7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "data count", 13: "tag"}


class WasmFormatError(ValueError):
    """The bytes are not a well-formed Wasm 1.0 binary (as far as this parser reads)."""


class AbiError(RuntimeFailure):
    """A module that breaks the ABI; ``result`` is unsupported-package, install-failure,
    runtime-error or out-of-memory."""


def size_text(n: int) -> str:
    """320 KiB, or 20,000 bytes when not a whole number of KiB."""
    return f"{n // 1024} KiB" if n and n % 1024 == 0 else f"{n:,} bytes"


@dataclass(frozen=True)
class FuncType:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        return f"({', '.join(self.params)}) -> {', '.join(self.results) or '()'}"


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str  # func, table, memory, global or tag


@dataclass(frozen=True)
class Export:
    name: str
    kind: str
    index: int


@dataclass(frozen=True)
class Memory:
    min_pages: int
    max_pages: int | None
    shared: bool = False
    memory64: bool = False


@dataclass(frozen=True)
class WasmInfo:
    """What ``parse_wasm`` read: enough to judge a module against the ABI."""

    types: tuple[FuncType, ...]
    imports: tuple[Import, ...]
    functions: tuple[int, ...]  # type index of each function the module defines
    memories: tuple[Memory, ...]  # memories the module defines (imported ones are in imports)
    exports: tuple[Export, ...]
    custom: tuple[tuple[str, bytes], ...]
    start: int | None

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)

    def custom_section(self, name: str) -> bytes | None:
        return next((data for n, data in self.custom if n == name), None)

    def function_type(self, index: int) -> FuncType | None:
        """The type of function ``index`` (imported functions come first), if known."""
        imported = [i for i in self.imports if i.kind == "func"]
        if index < len(imported):
            return None  # the parser does not keep imported functions' types
        local = index - len(imported)
        if local >= len(self.functions) or self.functions[local] >= len(self.types):
            return None
        return self.types[self.functions[local]]


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def fail(self, what: str) -> WasmFormatError:
        return WasmFormatError(f"malformed Wasm module at byte {self.pos}: {what}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        self.pos += 1
        return self.data[self.pos - 1]

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits + 7:
                raise self.fail(f"LEB128 integer longer than {bits} bits")
        if result >= 1 << bits:
            raise self.fail(f"LEB128 integer does not fit in {bits} bits")
        return result

    def raw(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.fail(f"{n} bytes announced, {self.end - self.pos} left")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def name(self) -> str:
        raw = self.raw(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("name is not UTF-8") from None

    def count(self) -> int:
        n = self.uleb()
        if n > self.end - self.pos:
            raise self.fail(f"vector of {n} items in {self.end - self.pos} bytes")
        return n

    def valtype(self) -> str:
        b = self.byte()
        if b not in _VALTYPES:
            raise self.fail(f"unknown value type 0x{b:02x}")
        return _VALTYPES[b]

    def limits(self) -> Memory:
        flags = self.uleb()
        if flags > 7:
            raise self.fail(f"unknown limits flags 0x{flags:x}")
        bits = 64 if flags & 4 else 32
        low = self.uleb(bits)
        high = self.uleb(bits) if flags & 1 else None
        if high is not None and high < low:
            raise self.fail(f"limits maximum {high} is below the minimum {low}")
        return Memory(low, high, bool(flags & 2), bool(flags & 4))


def parse_wasm(blob: bytes) -> WasmInfo:
    """Read the sections of a Wasm binary; raise ``WasmFormatError`` when they are malformed."""
    if blob[:4] != MAGIC:
        raise WasmFormatError("not a Wasm module (no \\0asm magic)")
    if len(blob) < 8:
        raise WasmFormatError("malformed Wasm module: truncated header")
    version = int.from_bytes(blob[4:8], "little")
    if version != VERSION:
        raise WasmFormatError(f"Wasm binary version {version} is not supported (only 1)")
    r = _Reader(blob, 8)
    types: list[FuncType] = []
    imports: list[Import] = []
    functions: list[int] = []
    memories: list[Memory] = []
    exports: list[Export] = []
    custom: list[tuple[str, bytes]] = []
    start: int | None = None
    rank = -1
    while r.pos < r.end:
        at = r.pos
        sid = r.byte()
        size = r.uleb()
        if size > r.end - r.pos:
            raise WasmFormatError(f"malformed Wasm module at byte {at}: {_NAMES.get(sid, sid)} "
                                  f"section of {size} bytes, {r.end - r.pos} left")
        s = _Reader(blob, r.pos, r.pos + size)
        r.pos += size
        if sid == 0:
            custom.append((s.name(), blob[s.pos:s.end]))
            continue
        if sid not in _ORDER:
            raise WasmFormatError(f"malformed Wasm module at byte {at}: unknown section id {sid}")
        if _ORDER.index(sid) <= rank:
            raise WasmFormatError(f"malformed Wasm module at byte {at}: {_NAMES[sid]} section "
                                  "out of order or repeated")
        rank = _ORDER.index(sid)
        if sid == 1:
            for _ in range(s.count()):
                if (form := s.byte()) != 0x60:
                    raise s.fail(f"function type starts with 0x{form:02x}, not 0x60")
                params = tuple(s.valtype() for _ in range(s.count()))
                types.append(FuncType(params, tuple(s.valtype() for _ in range(s.count()))))
        elif sid == 2:
            for _ in range(s.count()):
                module, name, kind = s.name(), s.name(), s.byte()
                if kind == 0:
                    s.uleb()
                elif kind == 1:
                    s.valtype(), s.limits()
                elif kind == 2:
                    s.limits()
                elif kind == 3:
                    s.valtype(), s.byte()
                elif kind == 4:
                    s.byte(), s.uleb()
                else:
                    raise s.fail(f"unknown import kind {kind}")
                imports.append(Import(module, name, _KINDS[kind]))
        elif sid == 3:
            functions.extend(s.uleb() for _ in range(s.count()))
        elif sid == 5:
            memories.extend(s.limits() for _ in range(s.count()))
        elif sid == 7:
            for _ in range(s.count()):
                name, kind = s.name(), s.byte()
                if kind not in _KINDS:
                    raise s.fail(f"unknown export kind {kind}")
                exports.append(Export(name, _KINDS[kind], s.uleb()))
        elif sid == 8:
            start = s.uleb()
        else:
            s.pos = s.end  # table, global, element, code, data...: not needed for the checks
        if s.pos != s.end:
            raise WasmFormatError(f"malformed Wasm module at byte {at}: {_NAMES[sid]} section "
                                  f"has {s.end - s.pos} bytes left over")
    return WasmInfo(tuple(types), tuple(imports), tuple(functions), tuple(memories),
                    tuple(exports), tuple(custom), start)


_I32 = ("i32",)
ABI_FUNCTIONS: dict[str, FuncType] = {
    "tinyml_abi_version": FuncType((), _I32),
    "input_count": FuncType((), _I32),
    "input_ptr": FuncType(_I32, _I32),
    "input_size": FuncType(_I32, _I32),
    "output_count": FuncType((), _I32),
    "output_ptr": FuncType(_I32, _I32),
    "output_size": FuncType(_I32, _I32),
    "invoke": FuncType((), _I32),
}


def metadata(info: WasmInfo) -> dict[str, Any] | None:
    """The JSON object of the ``tinyml`` custom section; None when there is none.

    Raises ``ValueError`` when the section is there but is not a UTF-8 JSON object.
    """
    raw = info.custom_section(METADATA_SECTION)
    if raw is None:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the tinyml custom section is not UTF-8 JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError("the tinyml custom section is not a JSON object")
    return value


def abi_violations(info: WasmInfo) -> list[str]:
    """Every way the module breaks model module ABI v1 that can be seen without running it."""
    problems: list[str] = []
    if info.imports:
        names = ", ".join(f"{i.module}.{i.name}" for i in info.imports[:5])
        more = f" and {len(info.imports) - 5} more" if len(info.imports) > 5 else ""
        problems.append(f"Wasm module imports {names}{more}: the sandbox grants no imports")
    if info.start is not None:
        problems.append(f"Wasm module has a start function (function {info.start}): "
                        "tinyml ABI v1 forbids one")
    mem = info.export("memory")
    if len(info.memories) != 1:
        problems.append(f"Wasm module defines {len(info.memories)} memories: tinyml ABI v1 "
                        "wants exactly one")
    elif info.memories[0].memory64 or info.memories[0].shared:
        problems.append("Wasm module's memory is 64-bit or shared: tinyml ABI v1 wants a plain "
                        "32-bit memory")
    if mem is None or mem.kind != "memory":
        problems.append("Wasm module does not export its memory as \"memory\" (tinyml ABI v1)")
    for name, want in ABI_FUNCTIONS.items():
        exp = info.export(name)
        if exp is None or exp.kind != "func":
            problems.append(f"Wasm module lacks the function export {name} (tinyml ABI v1)")
            continue
        have = info.function_type(exp.index)
        if have != want:
            problems.append(f"Wasm module exports {name} with type {have or 'unknown'}; "
                            f"tinyml ABI v1 wants {want}")
    try:
        metadata(info)
    except ValueError as e:
        problems.append(str(e))
    return problems


def check_static(blob: bytes) -> WasmInfo:
    """The parsed module, or AbiError: unsupported-package when malformed, install-failure
    when it breaks the ABI in a way visible without running it (all the ways, joined)."""
    try:
        info = parse_wasm(blob)
    except WasmFormatError as e:
        raise AbiError("unsupported-package", str(e)) from None
    problems = abi_violations(info)
    if problems:
        raise AbiError("install-failure", "; ".join(problems))
    return info


def tensor_layout(bufs: list[tuple[int, int]], meta: dict[str, Any] | None,
                  what: str) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, dtype, shape, nbytes) of each input or output buffer (``what``): raw uint8
    bytes, unless the metadata's ``tensors`` names and shapes it with a matching size."""
    tensors = (meta or {}).get("tensors")
    listed = tensors.get(what + "s") if isinstance(tensors, dict) else None
    layout = []
    for i, (_, size) in enumerate(bufs):
        entry: tuple[str, str, tuple[int, ...], int] = (f"{what}{i}", "uint8", (size,), size)
        try:
            m = listed[i]  # type: ignore[index]
            shape, dtype = tuple(int(x) for x in m["shape"]), np.dtype(m["dtype"])
            if int(np.prod(shape)) * dtype.itemsize == size:
                entry = (str(m.get("name", entry[0])), dtype.name, shape, size)
        except Exception:  # noqa: BLE001 - metadata is advisory
            pass
        layout.append(entry)
    return layout


# ---------------------------------------------------------------- the host side, via wasm3

def wasm3_load(blob: bytes, stack: int, kind: str) -> tuple[Any, Any, Any]:
    """(environment, runtime, module) of ``blob`` loaded in wasm3 with a ``stack``-byte stack;
    keep all three alive together. AbiError(``kind``) when wasm3 refuses the module."""
    import wasm3
    env = wasm3.Environment()
    rt = env.new_runtime(stack)
    try:
        module = env.parse_module(blob)
        rt.load(module)
    except RuntimeError as e:
        raise AbiError(kind, f"wasm3 cannot load the module: {e}") from None
    return env, rt, module  # keep all three alive together


def wasm3_call(rt: Any, kind: str, name: str, *args: int) -> int:
    """Call export ``name``; a trap or failure is AbiError(``kind``) naming the call."""
    try:
        return int(rt.find_function(name)(*args))
    except RuntimeError as e:
        call, msg = f"{name}({', '.join(map(str, args))})", str(e)
        if msg.startswith("[trap] "):
            raise AbiError(kind, f"Wasm trap in {call}: {msg.removeprefix('[trap] ')}") from None
        raise AbiError(kind, f"Wasm {call} failed: {msg}") from None


def wasm3_buffers(rt: Any, kind: str, what: str) -> list[tuple[int, int]]:
    """(ptr, size) of each ``what`` ("input" or "output") buffer, checked to lie in memory."""
    n = wasm3_call(rt, kind, f"{what}_count")
    if not 0 <= n <= MAX_TENSORS:
        raise AbiError(kind, f"Wasm module reports {n} {what}s (tinyml ABI v1 allows 0..{MAX_TENSORS})")
    size = len(rt.get_memory(0))
    bufs = [(wasm3_call(rt, kind, f"{what}_ptr", i), wasm3_call(rt, kind, f"{what}_size", i)) for i in range(n)]
    for i, (ptr, length) in enumerate(bufs):
        if ptr < 0 or length < 0 or ptr + length > size:
            raise AbiError(kind, f"Wasm {what} {i} buffer [{ptr}, {ptr + length}) lies outside the "
                                 f"module's {size:,}-byte memory")
    return bufs


def describe(blob: bytes, stack: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Load the module, check its ABI version and read its (ptr, size) input and output buffers.

    Runs the module's code: call it in a sandboxed child process (``runtime`` does).
    """
    _, rt, _ = wasm3_load(blob, stack, "install-failure")
    version = wasm3_call(rt, "install-failure", "tinyml_abi_version")
    if version != ABI_VERSION:
        raise AbiError("install-failure", f"Wasm module speaks tinyml ABI {version}; "
                                          f"this device speaks {ABI_VERSION}")
    return wasm3_buffers(rt, "install-failure", "input"), wasm3_buffers(rt, "install-failure", "output")


def invoke(blob: bytes, stack: int, inputs: list[bytes] | None, limit: int) -> tuple[list[bytes], int, int]:
    """One inference on a fresh instance: inputs written (zero bytes when None), invoke(),
    outputs read. Returns (outputs, invoke wall time in µs, memory bytes after invoke).
    ``limit`` is the memory the device has free; growing past it is out-of-memory.
    Runs the module's code: call it in a sandboxed child process.
    """
    _, rt, _ = wasm3_load(blob, stack, "runtime-error")
    for i, (ptr, size) in enumerate(wasm3_buffers(rt, "runtime-error", "input")):
        data = bytes(size) if inputs is None else inputs[i]
        if len(data) != size:
            raise AbiError("runtime-error", f"input {i} has {len(data):,} bytes; the module takes {size:,}")
        rt.get_memory(0)[ptr:ptr + size] = data
    t0 = time.perf_counter_ns()
    code = wasm3_call(rt, "runtime-error", "invoke")
    latency = (time.perf_counter_ns() - t0) // 1000
    if code != 0:
        raise AbiError("runtime-error", f"Wasm invoke() returned error code {code}")
    used = len(rt.get_memory(0))
    if used > limit:
        raise AbiError("out-of-memory", f"Wasm module grew its memory to {used // PAGE_BYTES} pages "
                                        f"({size_text(used)}); {size_text(limit)} are free")
    mem = rt.get_memory(0)
    return [bytes(mem[p:p + n]) for p, n in wasm3_buffers(rt, "runtime-error", "output")], latency, used
