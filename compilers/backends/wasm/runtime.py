"""How a device executes a tinyml ABI v1 Wasm module: wasm3 (pywasm3), sandboxed and isolated.

``RUNTIME.load(data, timeout_s) -> Loaded``: the static checks first (``abi.check_static``: no
imports, the ABI exports with their types, one exported memory; a module declaring more than
``MEASURE_CEILING`` is refused without instantiating it), then, in a forked child
(``isolation``), wasm3 loads the module, checks its ABI version and reads its input and output
buffers. The RAM it needs is its declared minimum memory (pages x 64 KiB), the figure
``Backend.measure`` gives; tensors are named and shaped by the ``tinyml`` metadata section
where it matches a buffer's size, else raw bytes. ``details``: ``memory_pages`` (min, max) and
the metadata. ``RUNTIME.invoke``: one inference on a fresh instance, in a child; growing the
memory past ``ram_bytes`` is "out-of-memory", a trap or a non-zero ``invoke()`` a
"runtime-error". The wasm3 stack is ``STACK_BYTES``; no imports are granted.

What it does not do: decide whether a device has the RAM (``Backend.fit``), or run SIMD
modules (wasm3 cannot).
"""

from __future__ import annotations

from typing import cast

from ..base import Loaded, Ran, RuntimeFailure, TensorSpec
from ..isolation import isolated, reason, returned
from . import abi

MEASURE_CEILING = 16 * 1024 * 1024  # no simulated device has more SRAM
STACK_BYTES = 64 * 1024
_Buffers = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (ptr, size) of inputs, outputs


def static(data: bytes) -> abi.WasmInfo:
    """The parsed module, or ``RuntimeFailure`` (unsupported-package / install-failure)."""
    return abi.check_static(data)


class WasmRuntime:
    """The wasm3 runtime of a (simulated) device; module-level ``RUNTIME`` is the one to use."""

    name = "wasm3"

    def __init__(self, stack_bytes: int = STACK_BYTES) -> None:
        self.stack_bytes = stack_bytes

    def load(self, data: bytes, timeout_s: float) -> Loaded:
        info = static(data)
        mem = info.memories[0]
        if mem.min_pages * abi.PAGE_BYTES > MEASURE_CEILING:
            raise RuntimeFailure("out-of-memory", f"Wasm module declares {mem.min_pages} pages of memory; no "
                                                  f"simulated device has more than {abi.size_text(MEASURE_CEILING)}")
        import wasm3  # noqa: F401 - import before forking
        o = isolated(abi.describe, (data, self.stack_bytes), timeout_s)
        if o.status == "error":
            raise RuntimeFailure(*o.value)
        if o.status != "ok":
            raise RuntimeFailure("install-failure", f"Wasm module failed its ABI calls ({o.value}): {reason(o.log)}")
        buffers = cast(_Buffers, o.value)
        meta = abi.metadata(info)
        ins, outs = (tuple(TensorSpec(name, what, shape, dtype) for name, dtype, shape, _ in
                           abi.tensor_layout(bufs, meta, what))
                     for bufs, what in zip(buffers, ("input", "output"), strict=True))
        return Loaded(mem.min_pages * abi.PAGE_BYTES, ins, outs,
                      {"memory_pages": (mem.min_pages, mem.max_pages), "metadata": meta})

    def invoke(self, data: bytes, ram_bytes: int, inputs: list[bytes] | None, timeout_s: float) -> Ran:
        import wasm3  # noqa: F401 - import before forking
        outputs, latency, used = returned(isolated(abi.invoke, (data, self.stack_bytes, inputs, ram_bytes),
                                                   timeout_s), "wasm3")
        return Ran(tuple(outputs), latency, used)


RUNTIME = WasmRuntime()

__all__ = ["MEASURE_CEILING", "RUNTIME", "STACK_BYTES", "WasmRuntime", "static"]
