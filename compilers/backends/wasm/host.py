"""Running tinyml ABI v1 modules on the host, in-process: for tests and benchmarks.

What it does: ``run_wasmtime`` / ``run_wasm3`` do one inference (fresh instance, inputs
written at ``input_ptr(i)``, ``invoke()``, outputs read at ``output_ptr(i)``) and return the
output bytes; ``time_wasmtime`` / ``time_wasm3`` instantiate once, write the inputs once and
return the median wall time of one ``invoke()`` in milliseconds over ``runs`` calls (after one
untimed warm-up call, which for wasm3 includes its lazy compilation). wasmtime runs with no
WASI and no imports (a module that imports anything cannot be instantiated); the wasm3 side
is built on ``wasm_abi``'s wasm3 helpers (load, call, buffers), the ones the simulator's
devices use.

Every way a run fails to give a result is a ``WasmTrap`` whose message starts with the
runtime's name: a trap (out-of-bounds access, ``unreachable``, stack exhaustion) with the
runtime's trap message, a non-zero ``invoke()`` with its code, a module the runtime refuses
to load or instantiate, inputs of the wrong number or size.

What it does not do: sandbox the process (modules run in the caller's process: use it for
modules we compiled ourselves; the simulator forks per call for untrusted ones), bound a
run's time, or compare outputs with a reference (tests do).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from ...errors import CompilerError
from . import abi as wasm_abi

__all__ = ["WasmTrap", "run_wasm3", "run_wasmtime", "time_wasm3", "time_wasmtime"]

WASM3_STACK = 64 * 1024  # wasm3's own value stack; the module's C stack is in its memory


class WasmTrap(CompilerError):
    """A module did not run to a result on a host runtime (the message names the runtime)."""


def _check_inputs(runtime: str, bufs: list[tuple[int, int]], inputs: list[bytes]) -> None:
    if len(inputs) != len(bufs):
        raise WasmTrap(f"{runtime}: {len(inputs)} inputs given; the module takes {len(bufs)}")
    for i, ((_, size), data) in enumerate(zip(bufs, inputs, strict=True)):
        if len(data) != size:
            raise WasmTrap(f"{runtime}: input {i} has {len(data):,} bytes; the module takes {size:,}")


# ---------------------------------------------------------------- wasmtime

def _wasmtime_instance(module: bytes) -> tuple[Any, Callable[..., Any], Any]:
    """(store, export getter, memory) of a fresh wasmtime instance with no imports."""
    import wasmtime
    store = wasmtime.Store(wasmtime.Engine())
    try:
        compiled = wasmtime.Module(store.engine, module)
    except wasmtime.WasmtimeError as e:
        raise WasmTrap(f"wasmtime cannot load the module: {_first_line(str(e))}") from None
    imports = [f"{i.module}.{i.name}" for i in compiled.imports]
    if imports:
        raise WasmTrap(f"wasmtime: module imports {', '.join(imports)}: the sandbox grants "
                       "no imports")
    try:
        instance = wasmtime.Instance(store, compiled, [])
    except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
        raise WasmTrap(f"wasmtime cannot instantiate the module: {_first_line(str(e))}") from None
    exports = instance.exports(store)
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise WasmTrap("wasmtime: module does not export its memory as \"memory\"")

    def get(name: str) -> Any:
        fn = exports.get(name)
        if not isinstance(fn, wasmtime.Func):
            raise WasmTrap(f"wasmtime: module lacks the function export {name}")
        return fn

    return store, get, memory


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"


def _wasmtime_call(store: Any, get: Callable[..., Any], name: str, *args: int) -> int:
    import wasmtime
    try:
        return int(get(name)(store, *args))
    except wasmtime.Trap as e:
        call = f"{name}({', '.join(map(str, args))})"
        raise WasmTrap(f"wasmtime: Wasm trap in {call}: {_trap_text(e.message)}") from None


def _trap_text(message: str) -> str:
    """"out of bounds memory access (memory fault at ...)" from wasmtime's multi-line trap text."""
    lines = [ln.strip() for ln in message.splitlines()]
    trap = next((ln.split("wasm trap: ", 1)[1] for ln in lines if "wasm trap: " in ln), None)
    fault = next((ln.split(": ", 1)[1] for ln in lines if "memory fault at" in ln), None)
    if trap is None:
        return _first_line(message)
    return f"{trap} ({fault})" if fault else trap


def _wasmtime_buffers(store: Any, get: Callable[..., Any], memory: Any,
                      what: str) -> list[tuple[int, int]]:
    n = _wasmtime_call(store, get, f"{what}_count")
    if not 0 <= n <= wasm_abi.MAX_TENSORS:
        raise WasmTrap(f"wasmtime: module reports {n} {what}s (tinyml ABI v1 allows "
                       f"0..{wasm_abi.MAX_TENSORS})")
    size = memory.data_len(store)
    bufs = [(_wasmtime_call(store, get, f"{what}_ptr", i), _wasmtime_call(store, get, f"{what}_size", i))
            for i in range(n)]
    for i, (ptr, length) in enumerate(bufs):
        if ptr < 0 or length < 0 or ptr + length > size:
            raise WasmTrap(f"wasmtime: {what} {i} buffer [{ptr}, {ptr + length}) lies outside "
                           f"the module's {size:,}-byte memory")
    return bufs


def _wasmtime_ready(module: bytes, inputs: list[bytes]) -> tuple[Any, Callable[..., Any], Any]:
    store, get, memory = _wasmtime_instance(module)
    version = _wasmtime_call(store, get, "tinyml_abi_version")
    if version != wasm_abi.ABI_VERSION:
        raise WasmTrap(f"wasmtime: module speaks tinyml ABI {version}, not {wasm_abi.ABI_VERSION}")
    bufs = _wasmtime_buffers(store, get, memory, "input")
    _check_inputs("wasmtime", bufs, inputs)
    for (ptr, _), data in zip(bufs, inputs, strict=True):
        memory.write(store, data, ptr)
    return store, get, memory


def _wasmtime_invoke(store: Any, get: Callable[..., Any]) -> None:
    code = _wasmtime_call(store, get, "invoke")
    if code != 0:
        raise WasmTrap(f"wasmtime: invoke() returned error code {code}")


def run_wasmtime(module: bytes, inputs: list[bytes]) -> list[bytes]:
    """One inference in a fresh wasmtime Store and Instance; the output tensors' bytes."""
    store, get, memory = _wasmtime_ready(module, inputs)
    _wasmtime_invoke(store, get)
    return [bytes(memory.read(store, ptr, ptr + size))
            for ptr, size in _wasmtime_buffers(store, get, memory, "output")]


def time_wasmtime(module: bytes, inputs: list[bytes], runs: int) -> float:
    """Median milliseconds of one ``invoke()`` on one wasmtime instance, over ``runs`` calls."""
    store, get, _ = _wasmtime_ready(module, inputs)
    return _median_ms(lambda: _wasmtime_invoke(store, get), runs)


# ---------------------------------------------------------------- wasm3 (wasm_abi's host side)

def run_wasm3(module: bytes, inputs: list[bytes]) -> list[bytes]:
    """One inference on a fresh wasm3 instance; the output tensors' bytes."""
    env, rt, loaded = _wasm3_ready(module, inputs)
    _wasm3_invoke(rt)
    try:
        bufs = wasm_abi.wasm3_buffers(rt, "runtime-error", "output")
    except wasm_abi.AbiError as e:
        raise WasmTrap(f"wasm3: {e.message}") from None
    memory = rt.get_memory(0)
    outputs = [bytes(memory[ptr:ptr + size]) for ptr, size in bufs]
    del env, loaded  # kept alive with rt until here
    return outputs


def _wasm3_ready(module: bytes, inputs: list[bytes]) -> tuple[Any, Any, Any]:
    kind = "runtime-error"
    try:
        env, rt, loaded = wasm_abi.wasm3_load(module, WASM3_STACK, kind)
        version = wasm_abi.wasm3_call(rt, kind, "tinyml_abi_version")
        if version != wasm_abi.ABI_VERSION:
            raise WasmTrap(f"wasm3: module speaks tinyml ABI {version}, not {wasm_abi.ABI_VERSION}")
        bufs = wasm_abi.wasm3_buffers(rt, kind, "input")
    except wasm_abi.AbiError as e:
        raise WasmTrap(f"wasm3: {e.message}") from None
    _check_inputs("wasm3", bufs, inputs)
    memory = rt.get_memory(0)
    for (ptr, size), data in zip(bufs, inputs, strict=True):
        memory[ptr:ptr + size] = data
    return env, rt, loaded


def _wasm3_invoke(rt: Any) -> None:
    try:
        code = wasm_abi.wasm3_call(rt, "runtime-error", "invoke")
    except wasm_abi.AbiError as e:
        raise WasmTrap(f"wasm3: {e.message}") from None
    if code != 0:
        raise WasmTrap(f"wasm3: invoke() returned error code {code}")


def time_wasm3(module: bytes, inputs: list[bytes], runs: int) -> float:
    """Median milliseconds of one ``invoke()`` on one wasm3 instance, over ``runs`` calls."""
    env, rt, loaded = _wasm3_ready(module, inputs)
    ms = _median_ms(lambda: _wasm3_invoke(rt), runs)
    del env, loaded  # kept alive with rt until here
    return ms


def _median_ms(call: Callable[[], None], runs: int) -> float:
    if runs < 1:
        raise ValueError(f"runs is {runs}; time at least one invoke()")
    call()  # warm-up: lazy compilation, first-touch of memory
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6
